//! Why a handshake failed, as a short stable label for metrics and logs.

use rustls::{CertificateError, Error};

/// A handshake rejection reason. [`Reason::as_str`] is the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The client sent no certificate.
    NoClientCert,
    /// The chain does not lead to a trusted CA (includes a look-alike issuer).
    UnknownCa,
    /// A signature in the chain does not verify.
    BadSignature,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate is revoked (by a CRL, or by its OCSP responder).
    Revoked,
    /// The CRL of the certificate's issuer is past its `nextUpdate` (and grace).
    StaleCrl,
    /// The certificate's OCSP responder says it is unknown to it.
    OcspUnknown,
    /// The OCSP responder could not be reached, answered an HTTP error or not in time.
    OcspUnavailable,
    /// The OCSP answer is not a valid response (garbage, or an error status).
    OcspBadResponse,
    /// The OCSP answer is about another certificate.
    OcspWrongCertificate,
    /// The OCSP answer is past its `nextUpdate` or dated in the future.
    OcspStale,
    /// The OCSP answer is signed by neither the issuer nor a responder it delegated.
    OcspBadSignature,
    /// The certificate names no OCSP responder and the listener refuses such certificates.
    OcspNoUrl,
    /// The extended key usage does not allow this use (e.g. serverAuth-only as a client).
    BadEku,
    /// A CA certificate was presented as an end entity.
    CaAsLeaf,
    /// The identity matched no rule.
    Denied,
    /// The certificate name does not match (client side).
    BadName,
    /// Any other certificate problem (encoding, critical extension…).
    BadCertificate,
    /// Not TLS, or a malformed/unexpected message.
    Protocol,
    /// No common version, cipher suite, group or signature scheme.
    Incompatible,
    /// The peer aborted with an alert.
    PeerAlert,
    /// The handshake did not finish in time.
    Timeout,
    /// A socket error.
    Io,
    /// Anything else.
    Other,
}

impl Reason {
    /// The reason for an OCSP answer that was not accepted (see
    /// `twoway_pki::ocsp::client::Problem::label`): `malformed`/`refused` →
    /// [`Reason::OcspBadResponse`], `wrong_certificate`, `expired`/`not_yet_valid` →
    /// [`Reason::OcspStale`], `bad_signature`; anything else is [`Reason::OcspUnavailable`].
    pub fn from_ocsp_problem(label: &str) -> Reason {
        match label {
            "malformed" | "refused" => Reason::OcspBadResponse,
            "wrong_certificate" => Reason::OcspWrongCertificate,
            "expired" | "not_yet_valid" => Reason::OcspStale,
            "bad_signature" => Reason::OcspBadSignature,
            _ => Reason::OcspUnavailable,
        }
    }
}

impl Reason {
    /// The label used in metrics, e.g. `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoClientCert => "no_client_cert",
            Reason::UnknownCa => "unknown_ca",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Revoked => "revoked",
            Reason::StaleCrl => "stale_crl",
            Reason::OcspUnknown => "ocsp_unknown",
            Reason::OcspUnavailable => "ocsp_unavailable",
            Reason::OcspBadResponse => "ocsp_bad_response",
            Reason::OcspWrongCertificate => "ocsp_wrong_certificate",
            Reason::OcspStale => "ocsp_stale",
            Reason::OcspBadSignature => "ocsp_bad_signature",
            Reason::OcspNoUrl => "ocsp_no_url",
            Reason::BadEku => "bad_eku",
            Reason::CaAsLeaf => "ca_as_leaf",
            Reason::Denied => "denied",
            Reason::BadName => "bad_name",
            Reason::BadCertificate => "bad_certificate",
            Reason::Protocol => "protocol",
            Reason::Incompatible => "incompatible",
            Reason::PeerAlert => "peer_alert",
            Reason::Timeout => "handshake_timeout",
            Reason::Io => "io",
            Reason::Other => "other",
        }
    }

    /// Every reason, for pre-declaring metric series.
    pub const ALL: [Reason; 25] = [
        Reason::NoClientCert,
        Reason::UnknownCa,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Revoked,
        Reason::StaleCrl,
        Reason::OcspUnknown,
        Reason::OcspUnavailable,
        Reason::OcspBadResponse,
        Reason::OcspWrongCertificate,
        Reason::OcspStale,
        Reason::OcspBadSignature,
        Reason::OcspNoUrl,
        Reason::BadEku,
        Reason::CaAsLeaf,
        Reason::Denied,
        Reason::BadName,
        Reason::BadCertificate,
        Reason::Protocol,
        Reason::Incompatible,
        Reason::PeerAlert,
        Reason::Timeout,
        Reason::Io,
        Reason::Other,
    ];

    /// Classifies a rustls error.
    pub fn from_rustls(err: &Error) -> Reason {
        match err {
            Error::NoCertificatesPresented => Reason::NoClientCert,
            Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => Reason::UnknownCa,
                CertificateError::BadSignature => Reason::BadSignature,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Reason::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Reason::NotYetValid
                }
                CertificateError::Revoked => Reason::Revoked,
                CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. } => Reason::StaleCrl,
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => Reason::BadEku,
                CertificateError::ApplicationVerificationFailure => Reason::Denied,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Reason::BadName,
                CertificateError::Other(o) => {
                    let text = format!("{o:?}");
                    if text.contains("CaUsedAsEndEntity") {
                        Reason::CaAsLeaf
                    } else {
                        Reason::BadCertificate
                    }
                }
                _ => Reason::BadCertificate,
            },
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. }
            | Error::PeerMisbehaved(_)
            | Error::DecryptError => Reason::Protocol,
            Error::PeerIncompatible(_) => Reason::Incompatible,
            Error::AlertReceived(_) => Reason::PeerAlert,
            _ => Reason::Other,
        }
    }

    /// Classifies an I/O error returned by a tokio-rustls handshake.
    pub fn from_io(err: &std::io::Error) -> Reason {
        if let Some(inner) = err.get_ref() {
            if let Some(tls) = inner.downcast_ref::<Error>() {
                return Reason::from_rustls(tls);
            }
        }
        match err.kind() {
            std::io::ErrorKind::TimedOut => Reason::Timeout,
            std::io::ErrorKind::InvalidData => Reason::Protocol,
            std::io::ErrorKind::UnexpectedEof => Reason::Protocol,
            _ => Reason::Io,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
