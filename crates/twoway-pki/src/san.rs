//! Subject alternative names as users write them: `DNS:api.example.internal`, `IP:10.0.0.5`,
//! `URI:spiffe://example.org/ns/prod/sa/api`, `EMAIL:ops@example.org`.

use crate::{Error, Result};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One subject alternative name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum San {
    /// A DNS name (lower-cased; may start with `*.` for a wildcard).
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A URI, such as a SPIFFE ID.
    Uri(String),
    /// An RFC 822 e-mail address.
    Email(String),
}

impl San {
    /// The SPIFFE trust domain when this is a `spiffe://` URI.
    pub fn spiffe_trust_domain(&self) -> Option<&str> {
        match self {
            San::Uri(u) => u
                .strip_prefix("spiffe://")
                .map(|rest| rest.split('/').next().unwrap_or(rest)),
            _ => None,
        }
    }

    /// The type prefix as used on the command line.
    pub fn kind(&self) -> &'static str {
        match self {
            San::Dns(_) => "DNS",
            San::Ip(_) => "IP",
            San::Uri(_) => "URI",
            San::Email(_) => "EMAIL",
        }
    }

    /// The value without its type prefix.
    pub fn value(&self) -> String {
        match self {
            San::Dns(v) | San::Uri(v) | San::Email(v) => v.clone(),
            San::Ip(ip) => ip.to_string(),
        }
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType> {
        let ia5 = |v: &str| {
            rcgen::string::Ia5String::try_from(v)
                .map_err(|e| Error::BadSan(self.to_string(), e.to_string()))
        };
        Ok(match self {
            San::Dns(v) => rcgen::SanType::DnsName(ia5(v)?),
            San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            San::Uri(v) => rcgen::SanType::URI(ia5(v)?),
            San::Email(v) => rcgen::SanType::Rfc822Name(ia5(v)?),
        })
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.value())
    }
}

impl FromStr for San {
    type Err = Error;

    /// Parses `TYPE:value`; a bare value is taken as an IP address if it parses as one,
    /// as a URI if it contains `://`, else as a DNS name.
    fn from_str(input: &str) -> Result<Self> {
        let s = input.trim();
        let bad = |why: &str| Error::BadSan(input.to_string(), why.to_string());
        let (kind, value) = match s.split_once(':') {
            Some((k, v))
                if ["dns", "ip", "uri", "email"].contains(&k.to_ascii_lowercase().as_str()) =>
            {
                (k.to_ascii_lowercase(), v.to_string())
            }
            _ if s.parse::<IpAddr>().is_ok() => ("ip".to_string(), s.to_string()),
            _ if s.contains("://") => ("uri".to_string(), s.to_string()),
            _ => ("dns".to_string(), s.to_string()),
        };
        if value.is_empty() {
            return Err(bad(
                "the value is empty; write e.g. DNS:api.example.internal",
            ));
        }
        match kind.as_str() {
            "dns" => {
                let v = value.to_ascii_lowercase();
                validate_dns(&v).map_err(|why| bad(&why))?;
                Ok(San::Dns(v))
            }
            "ip" => value
                .parse::<IpAddr>()
                .map(San::Ip)
                .map_err(|_| bad("not an IPv4 or IPv6 address")),
            "uri" => {
                let Some((scheme, rest)) = value.split_once(':') else {
                    return Err(bad(
                        "a URI needs a scheme, e.g. spiffe://example.org/workload",
                    ));
                };
                if scheme.is_empty()
                    || !scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    || rest.is_empty()
                    || !value.is_ascii()
                    || value
                        .chars()
                        .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
                {
                    return Err(bad("not a valid URI (ASCII, no spaces, scheme:rest)"));
                }
                if scheme.eq_ignore_ascii_case("spiffe") {
                    validate_spiffe(&value).map_err(|why| bad(&why))?;
                }
                Ok(San::Uri(value))
            }
            "email" => {
                let ok = value.is_ascii()
                    && value.split_once('@').is_some_and(|(l, d)| {
                        !l.is_empty() && !d.is_empty() && validate_dns(d).is_ok()
                    });
                if !ok {
                    return Err(bad("not an e-mail address (local@domain)"));
                }
                Ok(San::Email(value))
            }
            _ => Err(bad("unknown type; use DNS:, IP:, URI: or EMAIL:")),
        }
    }
}

fn validate_dns(v: &str) -> std::result::Result<(), String> {
    if v.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    let body = v.strip_prefix("*.").unwrap_or(v);
    for label in body.split('.') {
        if label.is_empty() {
            return Err("has an empty label (two dots, or a leading/trailing dot)".into());
        }
        if label.len() > 63 {
            return Err("has a label longer than 63 characters".into());
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "label {label:?} has characters other than letters, digits, '-' and '_'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Checks the SPIFFE ID rules: `spiffe://trust-domain/path`, lower-case trust domain,
/// no query or fragment, no empty, `.` or `..` path segments.
pub fn validate_spiffe(id: &str) -> std::result::Result<(), String> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or("a SPIFFE ID starts with spiffe://")?;
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if td.is_empty()
        || !td
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c))
    {
        return Err(
            "the SPIFFE trust domain must be non-empty lower-case letters, digits, '-', '.', '_'"
                .into(),
        );
    }
    if id.contains('?') || id.contains('#') {
        return Err("a SPIFFE ID has no query or fragment".into());
    }
    if !path.is_empty() {
        for seg in path[1..].split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(
                    "a SPIFFE ID path has no empty, '.' or '..' segments and no trailing '/'"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

impl serde::Serialize for San {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for San {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            "DNS:Api.Example.Internal".parse::<San>().unwrap(),
            San::Dns("api.example.internal".into())
        );
        assert_eq!(
            "IP:10.0.0.5".parse::<San>().unwrap().to_string(),
            "IP:10.0.0.5"
        );
        assert_eq!("::1".parse::<San>().unwrap().kind(), "IP");
        let s: San = "URI:spiffe://example.org/ns/prod/sa/api".parse().unwrap();
        assert_eq!(s.spiffe_trust_domain(), Some("example.org"));
        assert!("DNS:bad..name".parse::<San>().is_err());
        assert!("IP:10.0.0.300".parse::<San>().is_err());
        assert!("URI:spiffe://Example.org/x".parse::<San>().is_err());
        assert!("URI:spiffe://example.org/a//b".parse::<San>().is_err());
        assert!("EMAIL:nobody".parse::<San>().is_err());
        assert!("DNS:".parse::<San>().is_err());
    }
}
