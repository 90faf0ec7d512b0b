//! Name policy: which subject alternative names this CA may certify.

use crate::{Error, Result, San};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use twoway_glob::{Glob, Options};

/// URI and e-mail globs (`twoway-glob`): `*` crosses `/`, case matters, `[a-z]` classes.
const GLOB: Options = Options::new().classes();
/// DNS globs: the same, but `*`, `?` and classes stay within one label.
const DNS_GLOB: Options = GLOB.separator('.');

/// The allowed names per SAN type. A type whose list is absent is not restricted; a type
/// whose list is present (even empty) allows only what matches one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamePolicy {
    /// DNS names: `example.internal` allows that name and every name below it;
    /// a glob such as `*.svc.example.internal`, `api-?.example.internal` or
    /// `api-[0-9].example.internal` matches one name pattern (`*` does not cross a dot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
    /// IP ranges in CIDR form: `10.0.0.0/8`, `fd00::/8`, or a single address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Vec<String>>,
    /// URIs: a glob such as `spiffe://example.org/*` (here `*` crosses `/`). Globs have
    /// `*`, `?` and `[…]` classes; no `{a,b}` alternatives and no `\` escapes (one entry per
    /// alternative instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<Vec<String>>,
    /// E-mail addresses: `example.org` (any mailbox at that domain) or a glob `*@example.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Vec<String>>,
}

impl NamePolicy {
    /// Checks that every entry is well-formed, so a typo is found when the config is read.
    pub fn validate(&self) -> Result<()> {
        for net in self.ip.iter().flatten() {
            parse_net(net)?;
        }
        for pat in self
            .dns
            .iter()
            .flatten()
            .chain(self.uri.iter().flatten())
            .chain(self.email.iter().flatten())
        {
            check_glob(pat)?;
        }
        Ok(())
    }

    /// Checks one name against the policy.
    pub fn check(&self, san: &San) -> Result<()> {
        let violation = |rules: &[String], reason: &str| Error::PolicyViolation {
            san: san.to_string(),
            reason: reason.to_string(),
            allowed: if rules.is_empty() {
                format!("no {} names", san.kind())
            } else {
                rules.join(", ")
            },
        };
        match san {
            San::Dns(name) => {
                let Some(rules) = &self.dns else {
                    return Ok(());
                };
                if rules.iter().any(|r| dns_matches(r, name)) {
                    Ok(())
                } else {
                    Err(violation(rules, "matches no allowed DNS name"))
                }
            }
            San::Ip(ip) => {
                let Some(rules) = &self.ip else { return Ok(()) };
                for r in rules {
                    if parse_net(r)?.contains(ip) {
                        return Ok(());
                    }
                }
                Err(violation(rules, "is in no allowed IP range"))
            }
            San::Uri(uri) => {
                let Some(rules) = &self.uri else {
                    return Ok(());
                };
                if rules.iter().any(|r| glob_matches(r, uri)) {
                    Ok(())
                } else {
                    Err(violation(rules, "matches no allowed URI pattern"))
                }
            }
            San::Email(mail) => {
                let Some(rules) = &self.email else {
                    return Ok(());
                };
                let domain = mail.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
                let ok = rules.iter().any(|r| {
                    if r.contains('@') || r.contains('*') {
                        glob_matches(r, mail)
                    } else {
                        domain.eq_ignore_ascii_case(r)
                    }
                });
                if ok {
                    Ok(())
                } else {
                    Err(violation(rules, "matches no allowed e-mail domain"))
                }
            }
        }
    }

    /// Checks every name; the first violation is returned.
    pub fn check_all(&self, sans: &[San]) -> Result<()> {
        sans.iter().try_for_each(|s| self.check(s))
    }
}

fn parse_net(s: &str) -> Result<IpNet> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| Error::BadPolicy(s.to_string(), "not an IP range such as 10.0.0.0/8".into()))
}

/// A policy glob must compile, and may not use the alternatives and escapes that no
/// matcher here gives a meaning to: refused when the configuration is read rather than
/// silently matching nothing.
fn check_glob(pat: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::BadPolicy(pat.to_string(), why.to_string()));
    if pat.contains(['{', '}']) {
        return refuse("`{a,b}` alternatives are not supported in policy globs: write one entry per alternative");
    }
    if pat.contains('\\') {
        return refuse("`\\` escapes are not supported in policy globs (only `*`, `?` and `[...]` are special)");
    }
    Glob::new(pat, GLOB).map_err(|e| Error::BadPolicy(pat.to_string(), e.to_string()))?;
    Ok(())
}

fn dns_matches(rule: &str, name: &str) -> bool {
    let rule = rule.to_ascii_lowercase();
    if rule.contains(['*', '?', '[']) {
        return twoway_glob::is_match(&rule, name, DNS_GLOB);
    }
    let rule = rule.trim_start_matches('.');
    let name = name.strip_prefix("*.").unwrap_or(name);
    name == rule || name.ends_with(&format!(".{rule}"))
}

fn glob_matches(pattern: &str, value: &str) -> bool {
    twoway_glob::is_match(pattern, value, GLOB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn san(s: &str) -> San {
        s.parse().unwrap()
    }

    #[test]
    fn dns_suffix_and_glob() {
        let p = NamePolicy {
            dns: Some(vec!["example.internal".into(), "*.svc.local".into()]),
            ..Default::default()
        };
        p.check(&san("DNS:example.internal")).unwrap();
        p.check(&san("DNS:api.example.internal")).unwrap();
        p.check(&san("DNS:a.svc.local")).unwrap();
        assert!(p.check(&san("DNS:a.b.svc.local")).is_err());
        let e = p.check(&san("DNS:evil.com")).unwrap_err().to_string();
        assert!(e.contains("DNS:evil.com"), "{e}");
        assert!(p.check(&san("DNS:notexample.internal")).is_err());
        // types without rules are unrestricted
        p.check(&san("IP:1.2.3.4")).unwrap();
    }

    #[test]
    fn glob_classes_and_refused_alternatives() {
        let p = NamePolicy {
            dns: Some(vec!["api-[0-9].svc.local".into()]),
            uri: Some(vec!["spiffe://example.org/ns/[!x]*".into()]),
            ..Default::default()
        };
        p.validate().unwrap();
        p.check(&san("DNS:api-7.svc.local")).unwrap();
        assert!(p.check(&san("DNS:api-x.svc.local")).is_err());
        p.check(&san("URI:spiffe://example.org/ns/prod/sa/api"))
            .unwrap();
        assert!(p
            .check(&san("URI:spiffe://example.org/ns/x/sa/api"))
            .is_err());
        for bad in [
            "{api,web}.example.internal",
            "a\\*.example",
            "api-[0-9.example",
        ] {
            let e = NamePolicy {
                dns: Some(vec![bad.into()]),
                ..Default::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn ip_uri_email() {
        let p = NamePolicy {
            ip: Some(vec!["10.0.0.0/8".into(), "::1".into()]),
            uri: Some(vec!["spiffe://example.org/*".into()]),
            email: Some(vec!["example.org".into()]),
            dns: Some(vec![]),
        };
        p.validate().unwrap();
        p.check(&san("IP:10.1.2.3")).unwrap();
        p.check(&san("IP:::1")).unwrap();
        assert!(p.check(&san("IP:11.0.0.1")).is_err());
        p.check(&san("URI:spiffe://example.org/ns/prod/sa/api"))
            .unwrap();
        assert!(p.check(&san("URI:spiffe://other.org/x")).is_err());
        p.check(&san("EMAIL:ops@example.org")).unwrap();
        assert!(p.check(&san("EMAIL:ops@example.com")).is_err());
        assert!(p.check(&san("DNS:anything")).is_err());
        assert!(NamePolicy {
            ip: Some(vec!["nope".into()]),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
