//! What a peer certificate says about who the peer is.

use std::fmt::Write as _;
use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::Error;

/// The names carried by a verified peer certificate, plus the fingerprints that rules and
/// the `X-Forwarded-Client-Cert` header need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// URI SANs (SPIFFE IDs among them), in certificate order.
    pub uris: Vec<String>,
    /// DNS SANs, lower-cased.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Subject common names.
    pub common_names: Vec<String>,
    /// Subject organizational units.
    pub org_units: Vec<String>,
    /// The subject as an RFC 4514 string (`CN=api,O=Example`).
    pub subject: String,
    /// SHA-256 of the leaf certificate's DER.
    pub leaf_sha256: [u8; 32],
    /// SHA-256 of each issuing certificate's DER found above the leaf (direct issuer first).
    /// Only filled when asked for (see [`IssuerIndex`]).
    pub issuer_sha256: Vec<[u8; 32]>,
}

impl PeerIdentity {
    /// Extracts the identity of a leaf certificate.
    pub fn from_leaf(leaf: &CertificateDer<'_>) -> Result<Self, Error> {
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| Error::BadCertificate {
            what: "peer certificate".into(),
            detail: e.to_string(),
        })?;
        let mut id = PeerIdentity {
            leaf_sha256: Sha256::digest(leaf.as_ref()).into(),
            subject: rfc4514(cert.subject()),
            ..Default::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => id.uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => id.dns.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            id.ips.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            id.ips.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                id.common_names.push(s.to_owned());
            }
        }
        for ou in cert.subject().iter_organizational_unit() {
            if let Ok(s) = ou.as_str() {
                id.org_units.push(s.to_owned());
            }
        }
        Ok(id)
    }

    /// The one name to show for this peer: the first URI SAN (SPIFFE ID), else the first DNS
    /// SAN, else the first CN, else the empty string.
    pub fn primary(&self) -> &str {
        self.uris
            .first()
            .or(self.dns.first())
            .or(self.common_names.first())
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The leaf fingerprint as lower-case hex.
    pub fn leaf_sha256_hex(&self) -> String {
        hex::encode(self.leaf_sha256)
    }

    /// The value of an `X-Forwarded-Client-Cert` element in Envoy's format:
    /// `Hash=<hex>;Subject="…";URI=…;DNS=…` (one `URI`/`DNS` pair per SAN).
    pub fn xfcc(&self) -> String {
        let mut s = String::with_capacity(128);
        let _ = write!(s, "Hash={}", self.leaf_sha256_hex());
        let _ = write!(s, ";Subject=\"{}\"", xfcc_escape(&self.subject));
        for u in &self.uris {
            let _ = write!(s, ";URI={}", xfcc_value(u));
        }
        for d in &self.dns {
            let _ = write!(s, ";DNS={}", xfcc_value(d));
        }
        s
    }
}

/// Escapes `"` and `\` inside a quoted XFCC value.
fn xfcc_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        // header values cannot carry control characters
        if !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// An unquoted XFCC value; quoted when it holds a separator.
fn xfcc_value(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", xfcc_escape(v))
    } else {
        v.chars().filter(|c| !c.is_control()).collect()
    }
}

/// Formats a distinguished name as RFC 4514 (most specific RDN first).
fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in name.iter_rdn() {
        let mut attrs = Vec::new();
        for atv in rdn.iter() {
            let key = x509_parser::objects::oid2abbrev(atv.attr_type(), registry)
                .map(str::to_owned)
                .unwrap_or_else(|_| atv.attr_type().to_id_string());
            let value = match atv.as_str() {
                Ok(s) => escape_dn_value(s),
                Err(_) => format!("#{}", hex::encode(atv.attr_value().data)),
            };
            attrs.push(format!("{key}={value}"));
        }
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The trust anchors in a form that finds a certificate's issuer quickly, to fill
/// [`PeerIdentity::issuer_sha256`].
#[derive(Clone, Debug, Default)]
pub struct IssuerIndex {
    entries: Vec<IssuerEntry>,
}

#[derive(Clone, Debug)]
struct IssuerEntry {
    subject: Vec<u8>,
    spki: Vec<u8>,
    issuer: Vec<u8>,
    sha256: [u8; 32],
}

impl IssuerEntry {
    fn parse(der: &[u8]) -> Option<Self> {
        let (_, c) = X509Certificate::from_der(der).ok()?;
        Some(Self {
            subject: c.subject().as_raw().to_vec(),
            spki: c.public_key().raw.to_vec(),
            issuer: c.issuer().as_raw().to_vec(),
            sha256: Sha256::digest(der).into(),
        })
    }
}

impl IssuerIndex {
    /// Indexes trust anchors (a CA bundle).
    pub fn new(anchors: &[CertificateDer<'_>]) -> Self {
        Self {
            entries: anchors
                .iter()
                .filter_map(|a| IssuerEntry::parse(a))
                .collect(),
        }
    }

    /// Walks from `leaf` up through `intermediates` and the anchors, returning the SHA-256
    /// of each issuer found (direct issuer first). Candidates are matched by subject name;
    /// when several share a name the one whose key verifies the signature wins.
    pub fn issuer_chain(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Vec<[u8; 32]> {
        let mut pool: Vec<IssuerEntry> = intermediates
            .iter()
            .filter_map(|c| IssuerEntry::parse(c))
            .collect();
        pool.extend(self.entries.iter().cloned());
        let mut out = Vec::new();
        let Ok((_, leaf)) = X509Certificate::from_der(leaf) else {
            return out;
        };
        let mut want_issuer = leaf.issuer().as_raw().to_vec();
        let mut current_der: Vec<u8> = leaf.as_raw().to_vec();
        for _ in 0..8 {
            let candidates: Vec<&IssuerEntry> =
                pool.iter().filter(|e| e.subject == want_issuer).collect();
            let chosen = match candidates.as_slice() {
                [] => None,
                [one] => Some(*one),
                many => many
                    .iter()
                    .copied()
                    .find(|e| signed_by(&current_der, &e.spki)),
            };
            let Some(entry) = chosen else { break };
            if out.contains(&entry.sha256) {
                break;
            }
            out.push(entry.sha256);
            if entry.issuer == entry.subject {
                break;
            }
            want_issuer = entry.issuer.clone();
            // find the DER for the next signature check by fingerprint
            current_der = intermediates
                .iter()
                .find(|c| <[u8; 32]>::from(Sha256::digest(c.as_ref())) == entry.sha256)
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default();
        }
        out
    }
}

fn signed_by(cert_der: &[u8], spki_der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(spki_der) else {
        return false;
    };
    cert.verify_signature(Some(&spki)).is_ok()
}
