//! Where a leaf certificate's subject comes from.
//!
//! The CA validates the SANs of a request (against a token, the name policy, the name
//! constraints of its intermediate, an administrator's request); nothing validates a
//! requester's common name. A free CN would be an unvalidated name in a validated
//! certificate: a proxy rule on `cn:`, an application that logs or authorizes by CN, or a
//! verifier that falls back to the CN would take it at face value. So a leaf carries a CN
//! only when it repeats one of its own SANs, and [`subject_common_name`] is the one place
//! every issuance path asks; the certificate builder asks again.

use crate::{Error, Result, San};

/// The longest CN X.509 allows (`ub-common-name`, RFC 5280).
pub const MAX_COMMON_NAME: usize = 64;

/// The subject CN a leaf certificate with `sans` may carry when `requested` is asked for:
/// none when none (or an empty one) is asked for; the SAN it names, spelled as in the SAN,
/// when it names one (a DNS name compared without regard to ASCII case, an IP address as
/// an address, a URI or an e-mail address exactly); otherwise an error saying so
/// ([`Error::CommonNameNotASan`]). A CN longer than [`MAX_COMMON_NAME`] is refused too.
pub fn subject_common_name(requested: Option<&str>, sans: &[San]) -> Result<Option<String>> {
    let Some(cn) = requested.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let named = sans.iter().find(|san| match san {
        San::Dns(d) => d.eq_ignore_ascii_case(cn),
        San::Ip(ip) => cn.parse::<std::net::IpAddr>().is_ok_and(|c| c == *ip),
        San::Uri(v) | San::Email(v) => v == cn,
    });
    let Some(san) = named else {
        return Err(Error::CommonNameNotASan {
            cn: cn.to_string(),
            sans: sans
                .iter()
                .map(San::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let value = san.value();
    if value.len() > MAX_COMMON_NAME {
        return Err(Error::CommonNameTooLong(value));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(v: &[&str]) -> Vec<San> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_cn_must_repeat_a_san() {
        let s = sans(&[
            "DNS:api.example.internal",
            "IP:10.0.0.7",
            "IP:2001:db8::1",
            "URI:spiffe://example.org/api",
            "EMAIL:ops@example.org",
        ]);
        for (asked, kept) in [
            ("api.example.internal", "api.example.internal"),
            ("API.Example.Internal", "api.example.internal"),
            ("10.0.0.7", "10.0.0.7"),
            ("2001:0db8:0:0::1", "2001:db8::1"),
            ("spiffe://example.org/api", "spiffe://example.org/api"),
            ("ops@example.org", "ops@example.org"),
        ] {
            assert_eq!(
                subject_common_name(Some(asked), &s).unwrap().as_deref(),
                Some(kept),
                "{asked}"
            );
        }
        assert_eq!(subject_common_name(None, &s).unwrap(), None);
        assert_eq!(subject_common_name(Some(""), &s).unwrap(), None);
        for forged in [
            "migrations",
            "spiffe://example.org/admin",
            "SPIFFE://example.org/api",
            "api.example.internal.",
            "www.evil.com",
            "10.0.0.8",
            "010.0.0.7",
            "Ops@example.org",
            "api",
        ] {
            let e = subject_common_name(Some(forged), &s).unwrap_err();
            assert!(matches!(e, Error::CommonNameNotASan { .. }), "{forged}");
            let msg = e.to_string();
            assert!(msg.contains(forged) && msg.contains("SAN"), "{msg}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(60));
        let e = subject_common_name(Some(&long), &sans(&[&format!("URI:{long}")])).unwrap_err();
        assert!(matches!(e, Error::CommonNameTooLong(_)), "{e}");
    }
}
