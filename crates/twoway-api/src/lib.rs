//! twoway-api: the wire types of the twoway CA's HTTP API (`/v1`).
//!
//! Shared by the server (`twoway-server`) and every client (the agent, the remote CLI) so the
//! two sides cannot drift apart. Plain serde structs, no HTTP and no crypto: certificates and
//! CSRs travel as PEM text, signatures as base64. Entry types: [`EnrollRequest`],
//! [`RenewRequest`], [`RevokeRequest`], [`SignRequest`], [`CertificateResponse`], [`TokenRequest`],
//! [`TokenResponse`], [`CertificateList`] and the error body [`ErrorBody`] with its
//! machine-readable [`codes`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::fmt;

/// The API version prefix of every JSON route.
pub const PREFIX: &str = "/v1";

/// The largest request body the server accepts, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// `POST /v1/enroll`: a one-time token and a CSR for the requester's own key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token from `twoway token create`.
    pub token: String,
    /// The CSR, PEM (`CERTIFICATE REQUEST`). Its SANs must all be allowed by the token.
    pub csr: String,
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &"<redacted>")
            .field("csr_len", &self.csr.len())
            .finish()
    }
}

/// `POST /v1/renew`: a CSR for a new key, authenticated by the current certificate — over
/// mutual TLS, or (behind a TLS-terminating load balancer) by [`ProofOfPossession`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The CSR for the new key, PEM. Its names are ignored: the new certificate carries the
    /// current certificate's names.
    pub csr: String,
    /// Proof of possession of the current key, when the TLS connection carries no client
    /// certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<ProofOfPossession>,
}

/// Proves possession of the current key without mutual TLS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofOfPossession {
    /// The current certificate chain, PEM, leaf first.
    pub chain: String,
    /// Seconds since the Unix epoch when the proof was made; must be within the server's
    /// freshness window (5 minutes).
    pub timestamp: i64,
    /// Base64 (standard, padded) signature by the current key over
    /// [`pop_message`]`(csr_der, timestamp)`, with the key's usual algorithm (ECDSA with
    /// SHA-256/384 in ASN.1 form, Ed25519, or RSA PKCS#1 v1.5 SHA-256).
    pub signature: String,
}

/// The bytes a [`ProofOfPossession`] signs: the CSR's DER followed by the timestamp as eight
/// big-endian bytes.
pub fn pop_message(csr_der: &[u8], timestamp: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(csr_der.len() + 8);
    m.extend_from_slice(csr_der);
    m.extend_from_slice(&timestamp.to_be_bytes());
    m
}

/// `POST /v1/revoke`: by an admin, or by the holder over mutual TLS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Serial or SHA-256 fingerprint, hex (a unique prefix of 8+ digits works for admins).
    pub serial: String,
    /// RFC 5280 reason name: `unspecified`, `key-compromise`, `superseded`, … (default
    /// `unspecified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/sign` (admin): sign a CSR under a profile, as `twoway cert sign` does on the
/// CA's host. The certificate carries the CSR's public key and names (or `sans`, when
/// given); the CSR's other requested extensions are ignored: the profile decides.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The CSR, PEM (`CERTIFICATE REQUEST`).
    pub csr: String,
    /// Profile of the certificate: `server`, `client` or `peer`.
    pub profile: String,
    /// Validity, e.g. `24h` (default: the profile's `default_ttl`; at most its `max_ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Owner recorded on the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// SANs (`DNS:…`, `IP:…`, `URI:…`) to put in the certificate instead of the CSR's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sans: Option<Vec<String>>,
}

impl fmt::Debug for SignRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignRequest")
            .field("csr_len", &self.csr.len())
            .field("profile", &self.profile)
            .field("ttl", &self.ttl)
            .field("owner", &self.owner)
            .field("sans", &self.sans)
            .finish()
    }
}

/// A certificate the CA issued, with what a server needs to use it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The leaf, PEM.
    pub certificate: String,
    /// Leaf followed by the intermediate, PEM: what a TLS server or client presents.
    pub chain: String,
    /// The root, PEM: the trust anchor.
    pub root: String,
    /// Serial, lower-case hex.
    pub serial: String,
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub fingerprint: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
}

/// `POST /v1/tokens` (admin): make a one-time enrollment token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The SANs a CSR enrolled with this token may ask for (`DNS:…`, `IP:…`, `URI:…`).
    pub sans: Vec<String>,
    /// Profile of the certificate: `server`, `client` or `peer`.
    pub profile: String,
    /// How long the token is valid, e.g. `15m`.
    pub ttl: String,
    /// Validity of the certificate it yields (default: the server's workload TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_ttl: Option<String>,
    /// Owner recorded on the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A freshly made token. The secret is shown once; only its SHA-256 is stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The secret token.
    pub token: String,
    /// Token id (the first hex digits of its hash), for the audit log.
    pub id: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// The SANs it allows.
    pub sans: Vec<String>,
    /// The profile.
    pub profile: String,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"<redacted>")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One certificate in a listing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateSummary {
    /// Serial, hex.
    pub serial: String,
    /// SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// SANs as `TYPE:value`.
    pub sans: Vec<String>,
    /// Profile.
    pub profile: String,
    /// Owner.
    pub owner: Option<String>,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// When revoked, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Why revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

/// `GET /v1/certificates`: one page of the inventory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateList {
    /// The rows, newest first.
    pub items: Vec<CertificateSummary>,
    /// How many rows matched in all.
    pub total: usize,
    /// Offset of the first row.
    pub offset: usize,
    /// Page size.
    pub limit: usize,
}

/// The answer to a revocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// Serial, hex.
    pub serial: String,
    /// When, RFC 3339.
    pub revoked_at: String,
    /// Why.
    pub reason: String,
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable machine-readable code, one of [`codes`].
    pub code: String,
    /// What was wrong and how to fix it, for people.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }
}

/// The error codes of [`ErrorDetail::code`].
pub mod codes {
    /// The body is not valid JSON for this route.
    pub const MALFORMED_JSON: &str = "malformed_json";
    /// The body exceeds [`crate::MAX_BODY`].
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// The request head is too large (plain-HTTP listener: over 16 KiB or 64 fields).
    pub const HEAD_TOO_LARGE: &str = "head_too_large";
    /// A chunked request body on the plain-HTTP listener, which takes `Content-Length`.
    pub const LENGTH_REQUIRED: &str = "length_required";
    /// The CSR cannot be parsed.
    pub const BAD_CSR: &str = "bad_csr";
    /// The CSR's signature does not verify.
    pub const BAD_CSR_SIGNATURE: &str = "bad_csr_signature";
    /// The token is unknown.
    pub const TOKEN_UNKNOWN: &str = "token_unknown";
    /// The token has expired.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// The token was used already.
    pub const TOKEN_USED: &str = "token_used";
    /// The CSR asks for a name the token does not allow.
    pub const NAME_NOT_ALLOWED: &str = "name_not_allowed";
    /// The CSR's subject CN is none of the certificate's SANs (or longer than 64
    /// characters): the CA writes a CN only when it repeats a SAN. Leave the CN out.
    pub const CN_NOT_A_SAN: &str = "cn_not_a_san";
    /// The request breaks the CA's name policy or profile limits.
    pub const POLICY: &str = "policy_violation";
    /// Other bad input.
    pub const BAD_REQUEST: &str = "bad_request";
    /// No (valid) client certificate or proof of possession.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// The presented certificate has expired.
    pub const CERT_EXPIRED: &str = "certificate_expired";
    /// The presented certificate is revoked.
    pub const CERT_REVOKED: &str = "certificate_revoked";
    /// The proof of possession is stale or its signature does not verify.
    pub const BAD_PROOF: &str = "bad_proof";
    /// Authenticated, but not allowed.
    pub const FORBIDDEN: &str = "forbidden";
    /// Nothing matches.
    pub const NOT_FOUND: &str = "not_found";
    /// The state forbids it (already revoked, duplicate).
    pub const CONFLICT: &str = "conflict";
    /// Too many requests from this address.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The method is not allowed on this route.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// A server-side failure.
    pub const INTERNAL: &str = "internal";
    /// The inventory cannot be reached or written right now (database down, paused or
    /// full): retry after the `Retry-After` seconds.
    pub const UNAVAILABLE: &str = "unavailable";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_shape() {
        let v = serde_json::to_value(ErrorBody::new(codes::TOKEN_USED, "used")).unwrap();
        assert_eq!(v["error"]["code"], "token_used");
        assert_eq!(v["error"]["message"], "used");
    }

    #[test]
    fn debug_redacts_token() {
        let r = EnrollRequest {
            token: "secret".into(),
            csr: "x".into(),
        };
        assert!(!format!("{r:?}").contains("secret"));
    }

    #[test]
    fn unknown_fields_refused() {
        assert!(serde_json::from_str::<EnrollRequest>(r#"{"token":"a","csr":"b","x":1}"#).is_err());
    }
}
