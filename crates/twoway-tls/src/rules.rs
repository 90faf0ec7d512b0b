//! Identity authorization rules.
//!
//! Syntax, one rule per string:
//!
//! | rule | matches |
//! |---|---|
//! | `spiffe://example.org/ns/*` | a URI SAN (a bare value starting with `spiffe://` means `uri:`) |
//! | `uri:GLOB` | a URI SAN |
//! | `dns:GLOB` | a DNS SAN (case-insensitive; `*` stays inside one label) |
//! | `ip:GLOB` | an IP SAN in its text form |
//! | `cn:GLOB` | a subject common name that may stand for the peer: any CN of a certificate without SANs, or a CN that repeats one of the certificate's SANs ([`PeerIdentity::identity_common_names`]) |
//! | `ou:GLOB` | a subject organizational unit |
//! | `issuer:SHA256HEX` | the SHA-256 of the DER of any certificate above the leaf |
//!
//! In globs `*` matches any run of characters and `?` one character (the `twoway-glob`
//! matcher: linear, no classes, no escapes). A [`Policy`] with no
//! rule allows every verified peer; once it holds a rule, a peer must match one.
//!
//! Identity comes from the SANs. A CN beside SANs that repeats none of them is free text
//! a CA may have copied from the request without checking it: `cn:` never matches it, so
//! a certificate for `spiffe://t/user2` with `CN=migrations` does not pass `cn:migrations`.

use std::fmt;
use std::str::FromStr;
use twoway_glob::Options;

use crate::identity::PeerIdentity;
use crate::Error;

/// How rule globs read (`twoway-glob`): `*` crosses everything, case matters.
const GLOB: Options = Options::new();
/// `dns:` globs: `*` and `?` stay within one label (the rule and the names are lower-case).
const DNS_GLOB: Options = Options::new().separator('.');

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    text: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Uri(String),
    Dns(String),
    Ip(String),
    Cn(String),
    Ou(String),
    Issuer([u8; 32]),
}

impl Rule {
    /// The rule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this rule needs issuer fingerprints in the identity.
    pub fn needs_issuers(&self) -> bool {
        matches!(self.kind, Kind::Issuer(_))
    }

    /// Whether `id` matches this rule.
    pub fn matches(&self, id: &PeerIdentity) -> bool {
        match &self.kind {
            Kind::Uri(p) => id.uris.iter().any(|u| twoway_glob::is_match(p, u, GLOB)),
            Kind::Dns(p) => id.dns.iter().any(|d| twoway_glob::is_match(p, d, DNS_GLOB)),
            Kind::Ip(p) => id
                .ips
                .iter()
                .any(|ip| twoway_glob::is_match(p, &ip.to_string(), GLOB)),
            Kind::Cn(p) => id
                .identity_common_names()
                .any(|c| twoway_glob::is_match(p, c, GLOB)),
            Kind::Ou(p) => id
                .org_units
                .iter()
                .any(|o| twoway_glob::is_match(p, o, GLOB)),
            Kind::Issuer(fp) => id.issuer_sha256.contains(fp),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Rule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |detail: &str| Error::BadRule {
            rule: s.to_owned(),
            detail: detail.to_owned(),
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(bad("empty rule"));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("control characters are not allowed"));
        }
        let kind = if text.starts_with("spiffe://") {
            Kind::Uri(text.to_owned())
        } else {
            let Some((prefix, value)) = text.split_once(':') else {
                return Err(bad("missing a kind prefix"));
            };
            if value.is_empty() {
                return Err(bad("empty value after the prefix"));
            }
            match prefix.to_ascii_lowercase().as_str() {
                "uri" => Kind::Uri(value.to_owned()),
                "dns" => Kind::Dns(value.to_ascii_lowercase()),
                "ip" => Kind::Ip(value.to_owned()),
                "cn" => Kind::Cn(value.to_owned()),
                "ou" => Kind::Ou(value.to_owned()),
                "issuer" => {
                    let hexed: String = value.chars().filter(|c| *c != ':').collect();
                    let bytes = hex::decode(&hexed)
                        .map_err(|_| bad("issuer: takes a SHA-256 fingerprint in hex"))?;
                    let fp = <[u8; 32]>::try_from(bytes.as_slice())
                        .map_err(|_| bad("issuer: takes a SHA-256 fingerprint (64 hex digits)"))?;
                    Kind::Issuer(fp)
                }
                _ => return Err(bad("unknown kind prefix")),
            }
        };
        Ok(Rule {
            text: text.to_owned(),
            kind,
        })
    }
}

/// An ordered list of rules; see the module docs for the semantics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// The outcome of [`Policy::evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The policy has no rule: every verified peer is allowed.
    AllowedWithoutRules,
    /// The peer matched this rule.
    Allowed(String),
    /// Rules exist and none matched.
    Denied,
}

impl Decision {
    /// Whether the peer may proceed.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Decision::Denied)
    }
}

impl Policy {
    /// Parses each rule; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, Error> {
        let rules = rules
            .iter()
            .map(|r| r.as_ref().parse())
            .collect::<Result<Vec<Rule>, Error>>()?;
        Ok(Self { rules })
    }

    /// A policy with no rule (allow every verified peer).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Whether the policy holds no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether evaluating needs [`PeerIdentity::issuer_sha256`].
    pub fn needs_issuers(&self) -> bool {
        self.rules.iter().any(Rule::needs_issuers)
    }

    /// Decides for `id`.
    pub fn evaluate(&self, id: &PeerIdentity) -> Decision {
        if self.rules.is_empty() {
            return Decision::AllowedWithoutRules;
        }
        match self.rules.iter().find(|r| r.matches(id)) {
            Some(rule) => Decision::Allowed(rule.text.clone()),
            None => Decision::Denied,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id() -> PeerIdentity {
        PeerIdentity {
            uris: vec!["spiffe://example.org/ns/prod/sa/api".into()],
            dns: vec!["api.example.internal".into()],
            common_names: vec!["api".into()],
            org_units: vec!["payments".into()],
            issuer_sha256: vec![[7u8; 32]],
            ..Default::default()
        }
    }

    #[test]
    fn kinds_match() {
        for (rule, want) in [
            ("spiffe://example.org/ns/prod/*", true),
            ("spiffe://example.org/ns/dev/*", false),
            ("uri:spiffe://example.org/*", true),
            ("dns:*.example.internal", true),
            ("DNS:*.EXAMPLE.internal", true),
            ("dns:*.internal", false),
            // The CN "api" is free text beside SANs: it does not count.
            ("cn:api", false),
            ("cn:ap", false),
            ("ou:pay*", true),
            (&format!("issuer:{}", hex::encode([7u8; 32])), true),
            (&format!("issuer:{}", hex::encode([8u8; 32])), false),
        ] {
            let p = Policy::parse(&[rule]).unwrap();
            assert_eq!(p.evaluate(&id()).is_allowed(), want, "{rule}");
        }
    }

    #[test]
    fn cn_rules_match_only_a_cn_that_may_stand_for_the_peer() {
        let legacy = PeerIdentity {
            common_names: vec!["migrations".into()],
            ..Default::default()
        };
        let forged = PeerIdentity {
            uris: vec!["spiffe://t/user2".into()],
            ..legacy.clone()
        };
        let repeats = PeerIdentity {
            dns: vec!["migrations.example.internal".into()],
            common_names: vec!["migrations.example.internal".into()],
            ..Default::default()
        };
        let p = Policy::parse(&["cn:migrations*"]).unwrap();
        assert!(p.evaluate(&legacy).is_allowed());
        assert!(!p.evaluate(&forged).is_allowed());
        assert!(p.evaluate(&repeats).is_allowed());
    }

    #[test]
    fn bad_rules() {
        for r in ["", "foo", "xx:bar", "issuer:abc", "dns:", "spiffe:x"] {
            assert!(r.parse::<Rule>().is_err(), "{r}");
        }
    }

    #[test]
    fn empty_policy_allows_and_rules_deny_by_default() {
        assert_eq!(
            Policy::allow_all().evaluate(&id()),
            Decision::AllowedWithoutRules
        );
        let p = Policy::parse(&["cn:other"]).unwrap();
        assert_eq!(p.evaluate(&id()), Decision::Denied);
    }
}
