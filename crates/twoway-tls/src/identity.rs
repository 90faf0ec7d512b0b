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
    /// The IP SANs in text form, in the same order (filled with `ips` by
    /// [`PeerIdentity::from_leaf`]; what [`PeerIdentity::primary`] shows).
    pub ip_texts: Vec<String>,
    /// E-mail (RFC 822) SANs.
    pub emails: Vec<String>,
    /// SANs of the other kinds (otherName, directoryName, …), counted only.
    pub other_sans: usize,
    /// Subject common names, all of them (see [`PeerIdentity::identity_common_names`] for
    /// those that may stand for the peer).
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
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                            _ => None,
                        };
                        match ip {
                            Some(ip) => {
                                id.ips.push(ip);
                                id.ip_texts.push(ip.to_string());
                            }
                            None => id.other_sans += 1,
                        }
                    }
                    GeneralName::RFC822Name(e) => id.emails.push((*e).to_owned()),
                    _ => id.other_sans += 1,
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

    /// Whether the certificate carries any SAN, of any kind.
    pub fn has_sans(&self) -> bool {
        !(self.uris.is_empty()
            && self.dns.is_empty()
            && self.ips.is_empty()
            && self.emails.is_empty())
            || self.other_sans > 0
    }

    /// The subject CNs that may stand for the peer: every CN of a certificate without SANs
    /// (a legacy certificate whose CN is its only name); on a certificate with SANs, only a
    /// CN that repeats one of them (a DNS SAN in any ASCII case, an IP SAN as an address, a
    /// URI or e-mail SAN exactly). A CN beside SANs that repeats none of them is free text
    /// that nothing validated (CAs check SANs; some copy the requested CN unchecked), so it
    /// never stands for anyone: not for `cn:` rules, not for [`PeerIdentity::primary`].
    pub fn identity_common_names(&self) -> impl Iterator<Item = &str> {
        let legacy = !self.has_sans();
        self.common_names
            .iter()
            .map(String::as_str)
            .filter(move |cn| legacy || self.repeats_a_san(cn))
    }

    fn repeats_a_san(&self, cn: &str) -> bool {
        self.dns.iter().any(|d| d.eq_ignore_ascii_case(cn))
            || self.uris.iter().any(|u| u == cn)
            || self.emails.iter().any(|e| e == cn)
            || cn.parse::<IpAddr>().is_ok_and(|ip| self.ips.contains(&ip))
    }

    /// The one name to show for this peer: the first URI SAN (SPIFFE ID), else the first DNS
    /// SAN, else the first IP SAN, else the first e-mail SAN, else the CN of a certificate
    /// without SANs, else the empty string. Identity comes from the SANs; a CN beside them
    /// is never taken (see [`PeerIdentity::identity_common_names`]).
    pub fn primary(&self) -> &str {
        self.uris
            .first()
            .or(self.dns.first())
            .or(self.ip_texts.first())
            .or(self.emails.first())
            .map(String::as_str)
            .or_else(|| self.identity_common_names().next())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(uris: &[&str], dns: &[&str], ips: &[&str], cns: &[&str]) -> PeerIdentity {
        let ips: Vec<IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
        PeerIdentity {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ip_texts: ips.iter().map(IpAddr::to_string).collect(),
            ips,
            common_names: cns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn identity_comes_from_the_sans_and_a_free_cn_never_counts() {
        let forged = id(&["spiffe://t/user2"], &[], &[], &["migrations"]);
        assert_eq!(forged.primary(), "spiffe://t/user2");
        assert_eq!(forged.identity_common_names().count(), 0);
        let ip_only = id(&[], &[], &["10.9.9.9"], &["spiffe://t/admin"]);
        assert_eq!(ip_only.primary(), "10.9.9.9");
        assert_eq!(ip_only.identity_common_names().count(), 0);
        let legacy = id(&[], &[], &[], &["migrations"]);
        assert_eq!(legacy.primary(), "migrations");
        assert_eq!(
            legacy.identity_common_names().collect::<Vec<_>>(),
            ["migrations"]
        );
        let repeats = id(
            &[],
            &["api.example.internal"],
            &["10.0.0.7"],
            &["API.example.internal", "10.0.0.7", "other"],
        );
        assert_eq!(
            repeats.identity_common_names().collect::<Vec<_>>(),
            ["API.example.internal", "10.0.0.7"]
        );
        let mut email_only = id(&[], &[], &[], &["Alice"]);
        email_only.emails.push("alice@example.org".into());
        assert_eq!(email_only.primary(), "alice@example.org");
        assert_eq!(email_only.identity_common_names().count(), 0);
        let mut other = id(&[], &[], &[], &["Alice"]);
        other.other_sans = 1;
        assert_eq!(other.identity_common_names().count(), 0);
        assert_eq!(other.primary(), "");
    }
}
