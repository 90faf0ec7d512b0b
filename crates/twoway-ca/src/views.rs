//! What the dashboard reads and does beyond issuing and revoking: inventory statistics,
//! owners, tokens (list, withdraw an unused one), the audit log filtered, a certificate's
//! audit entries and its renewal lineage. Every write is audited with the caller's actor.

use crate::{Ca, Result};
use serde_json::json;
use time::OffsetDateTime;
use twoway_store::{
    AuditEntry, AuditQuery, CertRecord, InventoryStats, NewAudit, OwnerSummary, TokenRecord,
};

/// A certificate's place in its renewal chain: what it replaced and what replaced it.
#[derive(Clone, Debug, Default)]
pub struct Lineage {
    /// The certificate this one superseded, when it was a renewal.
    pub replaced: Option<CertRecord>,
    /// The certificate that superseded this one, when it was renewed.
    pub replaced_by: Option<CertRecord>,
}

fn details_field(e: &AuditEntry, field: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&e.details)
        .ok()?
        .get(field)?
        .as_str()
        .map(str::to_string)
}

impl Ca {
    /// The overview's statistics of the inventory at `now`.
    pub fn inventory_stats(&self, now: OffsetDateTime) -> Result<InventoryStats> {
        Ok(self.store().inventory_stats(now)?)
    }

    /// Certificates per owner, at most `limit` owners.
    pub fn owners(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<OwnerSummary>> {
        Ok(self.store().owner_summary(now, limit)?)
    }

    /// The newest `limit` enrollment tokens.
    pub fn list_tokens(&self, limit: usize) -> Result<Vec<TokenRecord>> {
        Ok(self.store().list_tokens(limit)?)
    }

    /// Withdraws an unused token by its id (the first 16 hex digits of its hash, as
    /// `token create` and the audit log show it): it expires now, audited as
    /// `token.withdraw` by `actor`.
    pub fn withdraw_token(&self, id: &str, actor: &str) -> Result<TokenRecord> {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let id = id.trim().to_ascii_lowercase();
        let target = id.chars().take(16).collect::<String>();
        Ok(self.store().withdraw_token(
            &id,
            now,
            &NewAudit {
                actor: actor.into(),
                action: "token.withdraw".into(),
                target,
                details: json!({}),
                time: now,
            },
        )?)
    }

    /// Audit entries matching `q`, newest first.
    pub fn audit_search(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        Ok(self.store().audit_search(q)?)
    }

    /// The renewal lineage of `rec`, from the audit entries of its issuance (which name the
    /// certificate it superseded) and of its supersession (recorded in the same transaction
    /// as the renewal's issuance, next to it in the log).
    pub fn lineage(&self, rec: &CertRecord, entries: &[AuditEntry]) -> Result<Lineage> {
        let mut out = Lineage::default();
        let issued = entries
            .iter()
            .find(|e| e.action.starts_with("cert.") && e.action != "cert.revoke");
        if let Some(old) = issued.and_then(|e| details_field(e, "supersedes")) {
            out.replaced = self.store().find_certificate(&old).ok();
        }
        let superseded = entries.iter().find(|e| {
            e.action == "cert.revoke" && details_field(e, "reason").as_deref() == Some("superseded")
        });
        if let Some(rev) = superseded {
            for e in self.store().audit_entries((rev.seq - 2).max(1), 5)? {
                if details_field(&e, "supersedes").as_deref() == Some(rec.fingerprint.as_str()) {
                    if let Some(fp) = details_field(&e, "fingerprint") {
                        out.replaced_by = self.store().find_certificate(&fp).ok();
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What [`Ca::prune`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Pruned {
    /// Certificates removed from the inventory.
    pub removed: u64,
    /// Where they were archived first (None when there was nothing to prune).
    pub archive: Option<std::path::PathBuf>,
    /// SHA-256 of the archive, hex (recorded in the audit entry).
    pub archive_sha256: Option<String>,
    /// True when more expired certificates are left than one run takes (`limit`).
    pub more: bool,
}

impl Ca {
    /// Archives, then removes, the certificates that expired at or before `before` (at most
    /// `limit` a run): their whole records, PEM included, are written as JSON lines to
    /// `archive` (crash-safe, 0600) before anything is deleted; then one transaction
    /// deletes them and appends the `cert.prune` audit entry, which names the archive and
    /// its SHA-256. Their earlier audit entries stay. Nothing is deleted when the archive
    /// cannot be written.
    pub fn prune(
        &self,
        before: OffsetDateTime,
        limit: usize,
        archive: &std::path::Path,
        actor: &str,
    ) -> Result<Pruned> {
        let recs = self
            .store()
            .expired_certificates(before, limit.saturating_add(1))?;
        let more = recs.len() > limit;
        let recs = &recs[..recs.len().min(limit)];
        if recs.is_empty() {
            return Ok(Pruned {
                removed: 0,
                archive: None,
                archive_sha256: None,
                more: false,
            });
        }
        let mut out = Vec::with_capacity(recs.len() * 2048);
        for r in recs {
            serde_json::to_writer(&mut out, r)
                .map_err(|e| crate::Error::Refused(format!("cannot encode the archive: {e}")))?;
            out.push(b'\n');
        }
        twoway_files::write_atomic(archive, &out, 0o600)?;
        let digest = twoway_pki::sha256_hex(&out);
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let fps: Vec<String> = recs.iter().map(|r| r.fingerprint.clone()).collect();
        let removed = self.store().prune_certificates(
            &fps,
            before,
            &NewAudit {
                actor: actor.into(),
                action: "cert.prune".into(),
                target: String::new(),
                details: json!({
                    "removed": fps.len(),
                    "expired_before": before.unix_timestamp(),
                    "archive": archive.display().to_string(),
                    "archive_sha256": digest,
                }),
                time: now,
            },
        )?;
        Ok(Pruned {
            removed,
            archive: Some(archive.to_path_buf()),
            archive_sha256: Some(digest),
            more,
        })
    }
}
