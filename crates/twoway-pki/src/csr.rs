//! Certificate signing requests: made by the key's owner, verified and read by the CA.

use crate::{Error, KeyType, PrivateKey, Result, San};
use rcgen::{CertificateParams, DistinguishedName, DnType};
use std::fmt;

/// Creates a PEM CSR for `key` asking for `sans` (and an optional CN, which must repeat
/// one of them: [`crate::subject_common_name`], the rule the CA applies).
pub fn create_csr(key: &PrivateKey, sans: &[San], common_name: Option<&str>) -> Result<String> {
    if sans.is_empty() {
        return Err(Error::NoSan);
    }
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    if let Some(cn) = crate::subject_common_name(common_name, sans)? {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_>>()?;
    let csr = p.serialize_request(key.key_pair())?;
    Ok(csr.pem()?)
}

/// A CSR whose signature has been verified: only its public key and names are used.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    /// The requester's public key, DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// The key's type.
    pub key_type: KeyType,
    /// The SANs requested in the extensionRequest attribute.
    pub sans: Vec<San>,
    /// The subject CN, if any.
    pub common_name: Option<String>,
    /// The subject's `serialNumber` attribute (2.5.4.5), if any: a device's serial number.
    pub serial_number: Option<String>,
}

impl fmt::Debug for VerifiedCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCsr")
            .field("key_type", &self.key_type)
            .field("sans", &self.sans.len())
            .finish_non_exhaustive()
    }
}

/// Parses a PEM (`CERTIFICATE REQUEST`) or DER CSR, verifies its self-signature and
/// returns the key and the names it asks for. Other requested extensions are ignored:
/// the profile decides them.
pub fn verify_csr(input: &[u8]) -> Result<VerifiedCsr> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let der = csr_der(input)?;
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::MalformedCsr(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::MalformedCsr("trailing data after the CSR".into()));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let key_type = crate::key::key_type_of_parsed_spki(spki, spki.raw)?;
    csr.verify_signature().map_err(|_| Error::CsrSignature)?;
    let mut sans = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(s) = ext {
                for gn in &s.general_names {
                    let san = match gn {
                        GeneralName::DNSName(d) => format!("DNS:{d}").parse()?,
                        GeneralName::URI(u) => format!("URI:{u}").parse()?,
                        GeneralName::RFC822Name(e) => format!("EMAIL:{e}").parse()?,
                        GeneralName::IPAddress(b) => match b.len() {
                            4 | 16 => {
                                let ip = if b.len() == 4 {
                                    <[u8; 4]>::try_from(*b).map(std::net::IpAddr::from).ok()
                                } else {
                                    <[u8; 16]>::try_from(*b).map(std::net::IpAddr::from).ok()
                                };
                                San::Ip(ip.ok_or_else(|| Error::MalformedCsr("bad IP SAN".into()))?)
                            }
                            _ => {
                                return Err(Error::MalformedCsr("an IP SAN of a bad length".into()))
                            }
                        },
                        other => {
                            return Err(Error::MalformedCsr(format!(
                                "unsupported SAN type {other}: use DNS, IP, URI or EMAIL"
                            )))
                        }
                    };
                    sans.push(san);
                }
            }
        }
    }
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .map(|cn| {
            cn.as_str()
                .map(str::to_string)
                .map_err(|_| Error::MalformedCsr("the CN is not a string".into()))
        })
        .transpose()?;
    let serial_number = info
        .subject
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()
        .map(|a| {
            a.as_str()
                .map(str::to_string)
                .map_err(|_| Error::MalformedCsr("the subject serialNumber is not a string".into()))
        })
        .transpose()?;
    Ok(VerifiedCsr {
        public_key_der: spki.raw.to_vec(),
        key_type,
        sans,
        common_name,
        serial_number,
    })
}

/// The DER of a PEM (`CERTIFICATE REQUEST`) or DER CSR, unverified.
pub fn csr_der(input: &[u8]) -> Result<Vec<u8>> {
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    let text = std::str::from_utf8(input)
        .map_err(|_| Error::MalformedCsr("neither PEM text nor DER".into()))?;
    Ok(pem::parse_many(text)
        .map_err(|e| Error::MalformedCsr(e.to_string()))?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE REQUEST" || b.tag() == "NEW CERTIFICATE REQUEST")
        .ok_or(Error::NoPemBlock("CERTIFICATE REQUEST"))?
        .into_contents())
}

/// Verifies `sig` over `msg` with the key of a DER SubjectPublicKeyInfo, using the
/// algorithm twoway's keys sign with: ECDSA P-256/SHA-256 or P-384/SHA-384 (ASN.1), Ed25519,
/// RSA PKCS#1 v1.5 SHA-256.
pub fn verify_signature(spki_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<()> {
    use aws_lc_rs::signature as s;
    let kt = crate::key_type_of_spki(spki_der)?;
    let raw = crate::signer::raw_public_key(spki_der)?;
    let alg: &dyn s::VerificationAlgorithm = match kt {
        KeyType::P256 => &s::ECDSA_P256_SHA256_ASN1,
        KeyType::P384 => &s::ECDSA_P384_SHA384_ASN1,
        KeyType::Ed25519 => &s::ED25519,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &s::RSA_PKCS1_2048_8192_SHA256,
    };
    s::UnparsedPublicKey::new(alg, raw)
        .verify(msg, sig)
        .map_err(|_| Error::BadSignature)
}

/// The DER CSR of an EST request body (RFC 7030 §4.2.1 with RFC 8951's leniency): DER as
/// is, PEM, or base64 with or without line breaks and padding, whatever the headers say.
/// `None` when it is none of these; the CSR itself is checked by [`verify_csr`].
pub fn csr_body_der(body: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    if body.first() == Some(&0x30) {
        return Some(body.to_vec());
    }
    if body.windows(10).any(|w| w == b"-----BEGIN") {
        return csr_der(body).ok().filter(|der| der.first() == Some(&0x30));
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    match engine.decode(&compact) {
        Ok(der) if der.first() == Some(&0x30) => Some(der),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let sans: Vec<San> = vec![
            "DNS:a.example".parse().unwrap(),
            "IP:10.0.0.1".parse().unwrap(),
        ];
        let pem_text = create_csr(&key, &sans, Some("a.example")).unwrap();
        let v = verify_csr(pem_text.as_bytes()).unwrap();
        assert_eq!(v.sans, sans);
        assert_eq!(v.common_name.as_deref(), Some("a.example"));
        assert!(matches!(
            create_csr(&key, &sans, Some("a")),
            Err(Error::CommonNameNotASan { .. })
        ));
        assert_eq!(v.public_key_der, key.public_key_der());
        // flip a byte inside the signed part (the DNS name) and re-encode
        let mut der = pem::parse(&pem_text).unwrap().into_contents();
        let pos = der.windows(9).position(|w| w == b"a.example").unwrap();
        der[pos] = b'b';
        assert!(matches!(verify_csr(&der), Err(Error::CsrSignature)));
        let sig = crate::Signer::sign(&key, b"msg").unwrap();
        verify_signature(&key.public_key_der(), b"msg", &sig).unwrap();
        assert!(verify_signature(&key.public_key_der(), b"other", &sig).is_err());
        assert!(matches!(
            verify_csr(b"garbage"),
            Err(Error::NoPemBlock(_)) | Err(Error::MalformedCsr(_))
        ));
    }
}
