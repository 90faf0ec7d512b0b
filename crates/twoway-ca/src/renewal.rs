//! Who renews a certificate, so that `twoway cert check` reports only what needs a person.

use crate::online::{RENEWAL_LABEL, RENEWED_BY_AGENT, RENEWED_BY_SERVER, SERVER_OWNER};
use crate::CaConfig;
use time::OffsetDateTime;
use twoway_store::CertRecord;

/// Who renews a certificate, as far as the CA can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewedBy {
    /// Nobody that the CA knows of: a person must act before it expires.
    Nobody,
    /// Automation: an agent (enrolled certificates and their renewals), or what ca.toml's
    /// `[renewal]` or the label `renewal=auto` declares.
    Automation,
    /// The online CA itself: its TLS and OCSP-signing certificates, renewed while it runs
    /// and retired when it stops.
    Server,
}

/// The share of its life after which an automatically renewed certificate that was not
/// renewed counts as forgotten: agents renew at two thirds (±5%), so three quarters leaves
/// room for retries and still warns with a quarter of the life left.
pub const OVERDUE_FRACTION: f64 = 0.75;

impl CaConfig {
    /// Who renews `rec`.
    pub fn renewed_by(&self, rec: &CertRecord) -> RenewedBy {
        let label = rec.labels.get(RENEWAL_LABEL).map(String::as_str);
        let service_profile = rec.profile == "server" || rec.profile == "ocsp";
        if label == Some(RENEWED_BY_SERVER)
            || (rec.owner.as_deref() == Some(SERVER_OWNER) && service_profile)
        {
            return RenewedBy::Server;
        }
        let declared = rec
            .owner
            .as_ref()
            .is_some_and(|o| self.renewal.auto_owners.contains(o))
            || self.renewal.auto_profiles.contains(&rec.profile);
        if matches!(label, Some(RENEWED_BY_AGENT) | Some("auto")) || declared {
            return RenewedBy::Automation;
        }
        RenewedBy::Nobody
    }

    /// True when `rec` needs a person before it expires: nobody renews it, or automation
    /// should have renewed it by now (past [`OVERDUE_FRACTION`] of its life). The server's
    /// own certificates never do: they live and die with the server.
    pub fn needs_attention(&self, rec: &CertRecord, now: OffsetDateTime) -> bool {
        match self.renewed_by(rec) {
            RenewedBy::Nobody => true,
            RenewedBy::Server => false,
            RenewedBy::Automation => {
                let life = rec.not_after - rec.not_before;
                now >= rec.not_before + life * OVERDUE_FRACTION
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use time::Duration;
    use twoway_pki::{KeyType, NamePolicy};
    use twoway_store::{CertSource, CertStatus};

    fn rec(owner: &str, profile: &str, label: Option<&str>, nb: OffsetDateTime) -> CertRecord {
        CertRecord {
            serial: "01".into(),
            fingerprint: "ab".into(),
            subject: String::new(),
            issuer: String::new(),
            common_name: None,
            sans: vec![],
            profile: profile.into(),
            key_type: "p256".into(),
            not_before: nb,
            not_after: nb + Duration::hours(24),
            owner: Some(owner.into()),
            labels: label
                .map(|l| BTreeMap::from([(RENEWAL_LABEL.to_string(), l.to_string())]))
                .unwrap_or_default(),
            location: None,
            status: CertStatus::Active,
            revoked_at: None,
            revocation_reason: None,
            source: CertSource::Issued,
            recorded_at: nb,
            pem: String::new(),
        }
    }

    #[test]
    fn who_renews_and_when_it_is_overdue() {
        let mut cfg = CaConfig::new(
            crate::CaSection {
                name: "x".into(),
                key_type: KeyType::P256,
                encrypted_keys: false,
                url: None,
                trust_domain: None,
                intermediate_key: None,
                root_key: None,
            },
            NamePolicy::default(),
        );
        cfg.renewal.auto_owners = vec!["team-batch".into()];
        let now = OffsetDateTime::now_utc();
        let fresh = now - Duration::hours(1);
        let late = now - Duration::hours(20);
        assert!(cfg.needs_attention(&rec("team-a", "server", None, fresh), now));
        assert!(!cfg.needs_attention(&rec("team-a", "server", Some("agent"), fresh), now));
        assert!(cfg.needs_attention(&rec("team-a", "server", Some("agent"), late), now));
        assert!(!cfg.needs_attention(&rec("team-batch", "client", None, fresh), now));
        assert!(!cfg.needs_attention(&rec("x", "client", Some("auto"), fresh), now));
        assert!(!cfg.needs_attention(&rec(SERVER_OWNER, "ocsp", None, late), now));
        assert!(!cfg.needs_attention(&rec(SERVER_OWNER, "server", Some("server"), late), now));
        assert!(cfg.needs_attention(&rec("team-a", "server", Some("manual"), fresh), now));
    }
}
