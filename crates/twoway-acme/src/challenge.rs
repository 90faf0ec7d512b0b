//! What a challenge response must contain (RFC 8555 §8, RFC 8737): the key authorization,
//! the `dns-01` TXT value, and the check of a `tls-alpn-01` certificate. The fetching itself
//! (HTTP, TLS, DNS) is the server's; these functions judge what came back.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;

use crate::Jwk;

/// The ALPN protocol of `tls-alpn-01` (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The `id-pe-acmeIdentifier` extension (RFC 8737 §6.1): 1.3.6.1.5.5.7.1.31.
pub const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// The kinds of challenge twoway offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `http-01`: `http://<domain>/.well-known/acme-challenge/<token>` answers the key
    /// authorization.
    Http01,
    /// `tls-alpn-01`: a TLS server on port 443 answers ALPN `acme-tls/1` with a self-signed
    /// certificate for the domain carrying the key authorization's digest.
    TlsAlpn01,
    /// `dns-01`: `_acme-challenge.<domain>` has a TXT record with the key authorization's
    /// digest.
    Dns01,
}

impl Kind {
    /// The challenge `type`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Http01 => "http-01",
            Kind::TlsAlpn01 => "tls-alpn-01",
            Kind::Dns01 => "dns-01",
        }
    }

    /// From a challenge `type`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "http-01" => Some(Kind::Http01),
            "tls-alpn-01" => Some(Kind::TlsAlpn01),
            "dns-01" => Some(Kind::Dns01),
            _ => None,
        }
    }
}

/// A challenge token: 128 bits from the CSPRNG, base64url (RFC 8555 §8.3 asks for at least
/// 128 bits of entropy).
pub fn new_token() -> String {
    let mut b = [0u8; 16];
    // aws-lc's DRBG; a failure here means the process has no entropy: no token at all
    // is better than a guessable one, so the caller sees an empty string only if it fails
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return String::new();
    }
    B64.encode(b)
}

/// `token || '.' || base64url(JWK thumbprint)` (RFC 8555 §8.1).
pub fn key_authorization(token: &str, account: &Jwk) -> String {
    format!("{token}.{}", account.thumbprint())
}

/// SHA-256 of the key authorization.
fn digest(key_auth: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_auth.as_bytes())
        .as_ref()
        .to_vec()
}

/// The `dns-01` TXT record value: base64url(SHA-256(key authorization)).
pub fn dns01_txt(key_auth: &str) -> String {
    B64.encode(digest(key_auth))
}

/// Judges an `http-01` response body: the key authorization, optionally followed by
/// whitespace (RFC 8555 §8.3 lets the client's server add a trailing newline).
pub fn http01_matches(body: &[u8], key_auth: &str) -> bool {
    let trimmed = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(&body[..0], |end| &body[..=end]);
    trimmed == key_auth.as_bytes()
}

/// The DER SubjectPublicKeyInfo of a certificate (to check a `tls-alpn-01` handshake's
/// signature against the self-signed certificate that a strict verifier would refuse for
/// its critical `acmeIdentifier` extension).
pub fn spki_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// Judges a `tls-alpn-01` certificate (RFC 8737 §3): exactly one SAN, the dNSName
/// `domain`, and a critical `acmeIdentifier` extension holding the SHA-256 of the key
/// authorization as an OCTET STRING. Returns what was wrong, for the challenge's error.
pub fn check_tls_alpn01(cert_der: &[u8], domain: &str, key_auth: &str) -> Result<(), String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let mut names = Vec::new();
    let mut ident: Option<(bool, Vec<u8>)> = None;
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == ACME_IDENTIFIER_OID {
            ident = Some((ext.critical, ext.value.to_vec()));
        } else if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                names.push(match n {
                    GeneralName::DNSName(d) => d.to_ascii_lowercase(),
                    other => format!("{other:?}"),
                });
            }
        }
    }
    let want = domain.trim_end_matches('.').to_ascii_lowercase();
    if names != [want.clone()] {
        return Err(format!(
            "the certificate must name exactly DNS:{want}, it names {names:?}"
        ));
    }
    let Some((critical, value)) = ident else {
        return Err("the certificate has no acmeIdentifier extension".into());
    };
    if !critical {
        return Err("the acmeIdentifier extension is not critical".into());
    }
    // DER OCTET STRING of 32 bytes: 04 20 <digest>
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(&digest(key_auth));
    if value != expected {
        return Err("the acmeIdentifier value is not the key authorization's digest".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Jwk {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}"#,
        )
        .unwrap();
        Jwk::from_json(&v).unwrap()
    }

    #[test]
    fn key_authorization_and_dns_value() {
        let ka = key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", &account());
        assert_eq!(
            ka,
            "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(dns01_txt(&ka).len(), 43);
        assert!(http01_matches(format!("{ka}\n").as_bytes(), &ka));
        assert!(!http01_matches(format!("{ka}x").as_bytes(), &ka));
        assert!(!http01_matches(b"", &ka));
        assert_eq!(new_token().len(), 22);
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn tls_alpn01_certificates_are_judged() {
        let ka = "tok.thumb";
        let make = |domain: &str, value: &[u8], critical: bool, extra_san: bool| {
            let mut p = rcgen::CertificateParams::new(vec![domain.to_owned()]).unwrap();
            if extra_san {
                p.subject_alt_names
                    .push(rcgen::SanType::DnsName("other.test".try_into().unwrap()));
            }
            let mut der = vec![0x04, 0x20];
            der.extend_from_slice(value);
            let mut ext =
                rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 31], der);
            ext.set_criticality(critical);
            p.custom_extensions.push(ext);
            let key = rcgen::KeyPair::generate().unwrap();
            p.self_signed(&key).unwrap().der().to_vec()
        };
        let good = digest(ka);
        assert_eq!(
            check_tls_alpn01(&make("a.test", &good, true, false), "a.test", ka),
            Ok(())
        );
        assert_eq!(
            check_tls_alpn01(&make("a.test", &good, true, false), "A.TEST.", ka),
            Ok(())
        );
        for (cert, want) in [
            (make("b.test", &good, true, false), "exactly"),
            (make("a.test", &good, true, true), "exactly"),
            (make("a.test", &good, false, false), "critical"),
            (make("a.test", &[0u8; 32], true, false), "digest"),
        ] {
            let e = check_tls_alpn01(&cert, "a.test", ka).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
