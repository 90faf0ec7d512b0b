//! X.509 name constraints (RFC 5280 4.2.1.10) of a CA certificate, read from the certificate
//! itself. A CA that signs a name outside its own certificate's constraints makes a
//! certificate every verifier rejects ("permitted subtree violation"), so the CA checks
//! every name against them before signing, and checks that its name policy stays inside
//! them when its configuration is read.
//!
//! The matching follows RFC 5280 and OpenSSL: a DNS constraint `example.internal` permits
//! that name and any name made by adding labels on its left, `.example.internal` only the
//! names below it; an IP constraint is an address range; a URI constraint names the host of
//! the URI (`.example.org` for hosts below it); an e-mail constraint is a mailbox, a host, or
//! `.domain` for hosts below it. A name type without a permitted subtree is not restricted
//! by the permitted subtrees; excluded subtrees always apply. A common name that looks like
//! a DNS name is checked as one, as OpenSSL does when a certificate has no DNS SAN.

use crate::{Error, NamePolicy, Result, San};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// Subtrees of one kind (permitted or excluded), by name type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Subtrees {
    dns: Vec<String>,
    ip: Vec<IpNet>,
    uri: Vec<String>,
    email: Vec<String>,
}

impl Subtrees {
    fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ip.is_empty() && self.uri.is_empty() && self.email.is_empty()
    }
}

impl fmt::Display for Subtrees {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.dns.iter().map(|d| format!("DNS {d}")));
        parts.extend(self.ip.iter().map(|n| format!("IP {n}")));
        parts.extend(self.uri.iter().map(|u| format!("URI host {u}")));
        parts.extend(self.email.iter().map(|e| format!("EMAIL {e}")));
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The name constraints of a CA certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameConstraints {
    permitted: Subtrees,
    excluded: Subtrees,
}

impl NameConstraints {
    /// Reads the name constraints of a DER certificate: `None` when it has none. A
    /// constraint twoway cannot check (a directory name, an other name, a malformed entry)
    /// is an error, so a CA never signs under constraints it does not understand.
    pub fn from_cert_der(der: &[u8]) -> Result<Option<NameConstraints>> {
        use x509_parser::extensions::ParsedExtension;
        let (_, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        let mut found = None;
        for ext in x.extensions() {
            if let ParsedExtension::NameConstraints(nc) = ext.parsed_extension() {
                let mut c = NameConstraints::default();
                for (list, into) in [
                    (&nc.permitted_subtrees, &mut c.permitted),
                    (&nc.excluded_subtrees, &mut c.excluded),
                ] {
                    for sub in list.iter().flatten() {
                        add_subtree(into, &sub.base)?;
                    }
                }
                found = Some(c);
            }
        }
        Ok(found)
    }

    /// The permitted subtrees, for people: `DNS example.internal, IP 10.0.0.0/8`.
    pub fn permitted(&self) -> String {
        self.permitted.to_string()
    }

    /// The permitted DNS subtrees and IP ranges, to build another intermediate under the
    /// same constraints; `None` when there is anything else (URI or e-mail subtrees,
    /// excluded subtrees), which [`crate::build_intermediate`] cannot carry over.
    pub fn permits(&self) -> Option<crate::Permits> {
        (self.excluded.is_empty()
            && self.permitted.uri.is_empty()
            && self.permitted.email.is_empty())
        .then(|| crate::Permits {
            dns: self.permitted.dns.clone(),
            ip: self.permitted.ip.clone(),
        })
    }

    /// The excluded subtrees, for people (`none` when there are none).
    pub fn excluded(&self) -> String {
        self.excluded.to_string()
    }

    /// Checks one name: inside a permitted subtree of its type (when there is any), and in
    /// no excluded subtree.
    pub fn check(&self, san: &San) -> Result<()> {
        let violation = || Error::NameConstraintViolation {
            name: san.to_string(),
            permitted: self.permitted(),
        };
        let within = |t: &Subtrees| match san {
            San::Dns(name) => t.dns.iter().any(|c| dns_within(name, c)),
            San::Ip(ip) => t.ip.iter().any(|n| n.contains(ip)),
            San::Uri(uri) => match uri_host(uri) {
                Some(h) => t.uri.iter().any(|c| host_within(&h, c)),
                None => false,
            },
            San::Email(mail) => t.email.iter().any(|c| email_within(mail, c)),
        };
        let permitted_of_kind = match san {
            San::Dns(_) => !self.permitted.dns.is_empty(),
            San::Ip(_) => !self.permitted.ip.is_empty(),
            San::Uri(_) => !self.permitted.uri.is_empty(),
            San::Email(_) => !self.permitted.email.is_empty(),
        };
        if permitted_of_kind && !within(&self.permitted) {
            return Err(violation());
        }
        // A URI without a host cannot be shown to be outside an excluded host either.
        let excluded_uri_unknown =
            matches!(san, San::Uri(u) if uri_host(u).is_none()) && !self.excluded.uri.is_empty();
        if within(&self.excluded) || excluded_uri_unknown {
            return Err(violation());
        }
        Ok(())
    }

    /// Checks every name of a certificate, and its common name when it looks like a DNS
    /// name (OpenSSL checks such a CN against the DNS constraints).
    pub fn check_all(&self, sans: &[San], common_name: Option<&str>) -> Result<()> {
        sans.iter().try_for_each(|s| self.check(s))?;
        if let Some(cn) = common_name.filter(|cn| looks_like_dns_name(cn)) {
            let as_dns = San::Dns(cn.to_ascii_lowercase());
            self.check(&as_dns)
                .map_err(|_| Error::NameConstraintViolation {
                    name: format!("the common name {cn:?}"),
                    permitted: self.permitted(),
                })?;
        }
        Ok(())
    }

    /// Checks that everything `policy` allows is inside the permitted subtrees, so a CA
    /// configuration cannot promise names its certificate forbids. Excluded subtrees are
    /// enforced name by name at issuance. The error names the first policy entry that
    /// reaches outside.
    pub fn check_policy(&self, policy: &NamePolicy) -> std::result::Result<(), String> {
        let p = &self.permitted;
        if !p.dns.is_empty() {
            let Some(rules) = &policy.dns else {
                return Err("dns is absent, which allows every DNS name".into());
            };
            for r in rules {
                if !dns_rule_within(r, &p.dns) {
                    return Err(format!("dns allows {r:?}"));
                }
            }
        }
        if !p.ip.is_empty() {
            let Some(rules) = &policy.ip else {
                return Err("ip is absent, which allows every IP address".into());
            };
            for r in rules {
                let net = r
                    .parse::<IpNet>()
                    .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("ip entry {r:?} is not an IP range"))?;
                if !p.ip.iter().any(|c| c.contains(&net)) {
                    return Err(format!("ip allows {r:?}"));
                }
            }
        }
        if !p.uri.is_empty() {
            let Some(rules) = &policy.uri else {
                return Err("uri is absent, which allows every URI".into());
            };
            for r in rules {
                let ok = uri_host(r)
                    .filter(|h| !has_glob(h))
                    .is_some_and(|h| p.uri.iter().any(|c| host_within(&h, c)));
                if !ok {
                    return Err(format!("uri allows {r:?}"));
                }
            }
        }
        if !p.email.is_empty() {
            let Some(rules) = &policy.email else {
                return Err("email is absent, which allows every e-mail address".into());
            };
            for r in rules {
                let ok = match r.rsplit_once('@') {
                    // A mailbox pattern: its domain must be fixed and inside, and a
                    // mailbox constraint can only hold a fixed mailbox.
                    Some((local, domain)) => {
                        !has_glob(domain)
                            && p.email.iter().any(|c| {
                                if c.contains('@') {
                                    !has_glob(local) && email_within(r, c)
                                } else {
                                    email_domain_within(domain, c)
                                }
                            })
                    }
                    // A domain: every mailbox at it.
                    None => {
                        !has_glob(r)
                            && p.email
                                .iter()
                                .any(|c| !c.contains('@') && email_domain_within(r, c))
                    }
                };
                if !ok {
                    return Err(format!("email allows {r:?}"));
                }
            }
        }
        Ok(())
    }

    /// True when there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.permitted.is_empty() && self.excluded.is_empty()
    }
}

fn add_subtree(into: &mut Subtrees, base: &x509_parser::extensions::GeneralName) -> Result<()> {
    use x509_parser::extensions::GeneralName as G;
    let unsupported = |what: &str| {
        Err(Error::BadCertificate(format!(
            "the CA certificate has a {what} name constraint, which twoway cannot check: it signs nothing under it"
        )))
    };
    match base {
        G::DNSName(d) => into.dns.push(d.to_ascii_lowercase()),
        G::RFC822Name(e) => into.email.push(e.to_string()),
        G::URI(u) => into.uri.push(u.to_ascii_lowercase()),
        G::IPAddress(b) => into.ip.push(constraint_net(b)?),
        G::DirectoryName(_) => return unsupported("directory name"),
        G::OtherName(..) => return unsupported("other-name"),
        G::X400Address(_) => return unsupported("X.400 address"),
        G::EDIPartyName(_) => return unsupported("EDI party name"),
        G::RegisteredID(_) => return unsupported("registered-ID"),
        G::Invalid(..) => return unsupported("malformed"),
    }
    Ok(())
}

/// An IP constraint: the address followed by its mask (8 or 32 bytes).
fn constraint_net(b: &[u8]) -> Result<IpNet> {
    let bad = || {
        Error::BadCertificate(format!(
            "the CA certificate has a malformed IP name constraint ({} bytes)",
            b.len()
        ))
    };
    let (addr, mask): (IpAddr, &[u8]) = match b.len() {
        8 => (
            IpAddr::from(<[u8; 4]>::try_from(&b[..4]).map_err(|_| bad())?),
            &b[4..],
        ),
        32 => (
            IpAddr::from(<[u8; 16]>::try_from(&b[..16]).map_err(|_| bad())?),
            &b[16..],
        ),
        _ => return Err(bad()),
    };
    // The mask must be contiguous ones then zeros.
    let ones: u32 = mask.iter().map(|m| m.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|m| (0..8).rev().map(move |i| (m >> i) & 1))
        .skip_while(|bit| *bit == 1)
        .all(|bit| bit == 0);
    if !contiguous {
        return Err(bad());
    }
    let prefix = u8::try_from(ones).map_err(|_| bad())?;
    IpNet::new(addr, prefix)
        .map(|n| n.trunc())
        .map_err(|_| bad())
}

/// RFC 5280: a name satisfies `c` when it is `c` with zero or more labels added on the
/// left; a constraint with a leading dot needs at least one (OpenSSL's reading). An empty
/// constraint matches every name.
fn dns_within(name: &str, c: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let c = c.trim_end_matches('.').to_ascii_lowercase();
    if c.is_empty() {
        return true;
    }
    if c.starts_with('.') {
        return name.ends_with(&c);
    }
    name == c || name.ends_with(&format!(".{c}"))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', ']', '{', '}'])
}

/// Whether every name a DNS policy rule allows is inside one of `permitted`. A plain rule
/// allows itself and every name below it; a glob allows names ending in the labels after
/// its last label with a glob character (and no name at all ends otherwise).
fn dns_rule_within(rule: &str, permitted: &[String]) -> bool {
    let rule = rule.to_ascii_lowercase();
    if !has_glob(&rule) {
        let rule = rule.trim_start_matches('.');
        return permitted.iter().any(|c| dns_within(rule, c));
    }
    let labels: Vec<&str> = rule.split('.').collect();
    let Some(last_glob) = labels.iter().rposition(|l| has_glob(l)) else {
        return false;
    };
    let suffix = labels[last_glob + 1..].join(".");
    if suffix.is_empty() {
        return false;
    }
    // Every allowed name is some label(s) followed by the fixed suffix; "*" stands for
    // them, and no constraint can end in it.
    let representative = format!("*.{suffix}");
    permitted.iter().any(|c| dns_within(&representative, c))
}

/// The host of a URI (`scheme://[userinfo@]host[:port]/…`), lower-cased; `None` when it has
/// no authority.
fn uri_host(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// A URI constraint: the host itself, or `.domain` for hosts below it.
fn host_within(host: &str, c: &str) -> bool {
    let c = c.to_ascii_lowercase();
    if c.starts_with('.') {
        host.ends_with(&c)
    } else {
        host == c
    }
}

/// An e-mail constraint: a mailbox (`user@host`), a host, or `.domain` for hosts below it.
fn email_within(mail: &str, c: &str) -> bool {
    let Some((local, domain)) = mail.rsplit_once('@') else {
        return false;
    };
    match c.rsplit_once('@') {
        Some((cl, cd)) => local == cl && domain.eq_ignore_ascii_case(cd),
        None => email_domain_within(domain, c),
    }
}

fn email_domain_within(domain: &str, c: &str) -> bool {
    let (domain, c) = (domain.to_ascii_lowercase(), c.to_ascii_lowercase());
    if c.starts_with('.') {
        domain.ends_with(&c)
    } else {
        domain == c
    }
}

/// A common name that a verifier may take for a DNS name: letters, digits, `-`, `_` and
/// at least one dot. Broader than OpenSSL's test, so the CA refuses rather than lets pass.
fn looks_like_dns_name(cn: &str) -> bool {
    cn.contains('.')
        && cn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nc(dns: &[&str], ip: &[&str]) -> NameConstraints {
        NameConstraints {
            permitted: Subtrees {
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ip: ip.iter().map(|s| s.parse().unwrap()).collect(),
                ..Default::default()
            },
            excluded: Subtrees::default(),
        }
    }

    fn san(s: &str) -> San {
        s.parse().unwrap()
    }

    #[test]
    fn dns_and_ip_follow_rfc_5280() {
        let c = nc(&["example.internal"], &["10.0.0.0/8"]);
        for ok in [
            "DNS:example.internal",
            "DNS:a.example.internal",
            "DNS:*.b.example.internal",
            "DNS:A.EXAMPLE.INTERNAL",
            "IP:10.1.2.3",
            "URI:spiffe://anything/x",
            "EMAIL:a@b.c",
        ] {
            c.check(&san(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "DNS:localhost",
            "DNS:badexample.internal",
            "DNS:example.internal.evil.com",
            "IP:11.0.0.1",
            "IP:::1",
        ] {
            let e = c.check(&san(bad)).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("new intermediate"), "{e}");
        }
        let dot = nc(&[".example.internal"], &[]);
        dot.check(&san("DNS:a.example.internal")).unwrap();
        assert!(dot.check(&san("DNS:example.internal")).is_err());
    }

    #[test]
    fn excluded_subtrees_always_apply() {
        let c = NameConstraints {
            permitted: Subtrees::default(),
            excluded: Subtrees {
                dns: vec!["secret.example.internal".into()],
                ip: vec!["192.168.0.0/16".parse().unwrap()],
                uri: vec![".evil.org".into()],
                ..Default::default()
            },
        };
        c.check(&san("DNS:a.example.internal")).unwrap();
        assert!(c.check(&san("DNS:x.secret.example.internal")).is_err());
        assert!(c.check(&san("IP:192.168.1.1")).is_err());
        assert!(c.check(&san("URI:spiffe://a.evil.org/x")).is_err());
        c.check(&san("URI:spiffe://good.org/x")).unwrap();
    }

    #[test]
    fn a_common_name_that_looks_like_a_dns_name_is_checked() {
        let c = nc(&["example.internal"], &["10.0.0.0/8"]);
        let sans = [san("IP:10.0.0.5")];
        c.check_all(&sans, Some("api.example.internal")).unwrap();
        c.check_all(&sans, Some("billing service")).unwrap();
        c.check_all(&sans, Some("evil")).unwrap();
        let e = c
            .check_all(&sans, Some("www.evil.com"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("www.evil.com"), "{e}");
    }

    #[test]
    fn a_policy_must_stay_inside_the_constraints() {
        let c = nc(&["example.internal"], &["10.0.0.0/8"]);
        let policy = |dns: Option<&[&str]>, ip: Option<&[&str]>| NamePolicy {
            dns: dns.map(|d| d.iter().map(|s| s.to_string()).collect()),
            ip: ip.map(|d| d.iter().map(|s| s.to_string()).collect()),
            uri: Some(vec!["spiffe://example.org/*".into()]),
            email: None,
        };
        let all = ["10.0.0.0/8"];
        for ok in [
            &["example.internal"][..],
            &[
                "a.example.internal",
                "*.svc.example.internal",
                "api-?.example.internal",
            ],
            &[],
        ] {
            c.check_policy(&policy(Some(ok), Some(&all)))
                .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        c.check_policy(&policy(Some(&["example.internal"]), Some(&["10.1.0.0/16"])))
            .unwrap();
        for bad in [
            &["example.internal", "localhost"][..],
            &["*.internal"],
            &["example.*"],
            &["internal"],
        ] {
            let e = c.check_policy(&policy(Some(bad), Some(&all))).unwrap_err();
            assert!(e.starts_with("dns allows"), "{bad:?}: {e}");
        }
        assert!(c
            .check_policy(&policy(None, Some(&all)))
            .unwrap_err()
            .contains("dns is absent"));
        assert!(c
            .check_policy(&policy(Some(&[]), Some(&["0.0.0.0/0"])))
            .unwrap_err()
            .contains("ip allows"));
        assert!(c
            .check_policy(&policy(Some(&[]), None))
            .unwrap_err()
            .contains("ip is absent"));
    }

    #[test]
    fn ip_constraints_decode_address_and_mask() {
        assert_eq!(
            constraint_net(&[10, 0, 0, 0, 255, 0, 0, 0]).unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert!(constraint_net(&[10, 0, 0, 0, 255, 0, 255, 0]).is_err());
        assert!(constraint_net(&[10, 0, 0]).is_err());
    }
}
