//! Signed checkpoints of the audit log's head.
//!
//! The hash chain shows that no entry was altered or removed from the middle of the log, but
//! removing the newest entries leaves a shorter chain that is still valid. A checkpoint is the
//! head (sequence number and hash) signed with the intermediate key at a point in time and
//! kept elsewhere (a file, a ticket, a webhook's receiver): [`Ca::verify_checkpoint`] then
//! proves that the log still holds that head, so nothing up to it was removed or changed.

use crate::ca::rfc3339;
use crate::{Ca, Error, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use twoway_store::{AuditEntry, AuditProblem, NewAudit};

/// The `format` of a checkpoint this version writes and reads.
pub const CHECKPOINT_FORMAT: &str = "twoway-audit-checkpoint/1";

/// A signed statement "the audit log's entry `seq` had hash `hash` at `time`".
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// SHA-256 fingerprint of the intermediate certificate whose key signed it.
    pub ca: String,
    /// The checkpointed entry's sequence number.
    pub seq: i64,
    /// The checkpointed entry's hash.
    pub hash: String,
    /// When it was signed, RFC 3339 UTC.
    pub time: String,
    /// The intermediate key's signature over [`Checkpoint::message`], base64.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{}\nca={}\nseq={}\nhash={}\ntime={}\n",
            self.format, self.ca, self.seq, self.hash, self.time
        )
        .into_bytes()
    }
}

impl Ca {
    /// The newest audit entry, found with a logarithmic number of reads.
    fn audit_head(&self) -> Result<Option<AuditEntry>> {
        let at = |seq: i64| -> Result<Option<AuditEntry>> {
            Ok(self.store.audit_entries(seq, 1)?.into_iter().next())
        };
        let Some(mut best) = at(1)? else {
            return Ok(None);
        };
        // gallop: the first probe past the end, then halve back to the last entry
        let mut step = 1i64;
        while let Some(e) = at(best.seq + step)? {
            best = e;
            step = step.saturating_mul(2);
        }
        while step > 1 {
            step /= 2;
            if let Some(e) = at(best.seq + step)? {
                best = e;
            }
        }
        // entries past a gap (a tampered log) are still the head
        while let Some(e) = self
            .store
            .audit_entries(best.seq + 1, 1)?
            .into_iter()
            .next()
        {
            best = e;
        }
        Ok(Some(best))
    }

    /// Signs a checkpoint of the log's current head with the intermediate key, then records
    /// that it did (the `audit.checkpoint` entry follows the checkpointed one).
    pub fn audit_checkpoint(&self, actor: &str) -> Result<Checkpoint> {
        let head = self.audit_head()?.ok_or_else(|| {
            Error::Refused("the audit log is empty: nothing to checkpoint".into())
        })?;
        self.checkpoint_of(head, actor)
    }

    /// [`Ca::audit_checkpoint`] unless nothing was logged since the checkpoint of entry
    /// `last` (the head is then that checkpoint's own `audit.checkpoint` entry) or the log
    /// is empty: `ca serve`'s periodic checkpoints, which an idle CA does not repeat.
    pub fn audit_checkpoint_if_grown(
        &self,
        last: Option<i64>,
        actor: &str,
    ) -> Result<Option<Checkpoint>> {
        let Some(head) = self.audit_head()? else {
            return Ok(None);
        };
        if last.is_some_and(|l| head.seq == l + 1) && head.action == "audit.checkpoint" {
            return Ok(None);
        }
        self.checkpoint_of(head, actor).map(Some)
    }

    fn checkpoint_of(&self, head: AuditEntry, actor: &str) -> Result<Checkpoint> {
        let signer = self.signer()?;
        let mut cp = Checkpoint {
            format: CHECKPOINT_FORMAT.into(),
            ca: self.intermediate_info.fingerprint.clone(),
            seq: head.seq,
            hash: head.hash.clone(),
            time: rfc3339(OffsetDateTime::now_utc()),
            signature: String::new(),
        };
        let sig = signer.sign(&cp.message())?;
        cp.signature = base64::engine::general_purpose::STANDARD.encode(sig);
        self.store.append_audit(&NewAudit {
            actor: actor.into(),
            action: "audit.checkpoint".into(),
            target: head.seq.to_string(),
            details: json!({"seq": head.seq, "hash": head.hash}),
            time: OffsetDateTime::now_utc(),
        })?;
        Ok(cp)
    }

    /// Checks the log against a checkpoint: the checkpoint is this CA's and its signature
    /// verifies (else an error), and the log still holds the checkpointed entry with the same
    /// hash (else a problem naming what is gone). Returns the number of entries and every
    /// problem, the hash chain's included.
    pub fn verify_checkpoint(&self, cp: &Checkpoint) -> Result<(usize, Vec<AuditProblem>)> {
        if cp.format != CHECKPOINT_FORMAT {
            return Err(Error::Refused(format!(
                "the checkpoint's format is {:?}, not {CHECKPOINT_FORMAT:?}",
                cp.format
            )));
        }
        if cp.ca != self.intermediate_info.fingerprint {
            return Err(Error::Refused(format!(
                "the checkpoint was signed by another CA (intermediate {}), not this one ({}): \
                 check it against the CA directory it came from",
                cp.ca, self.intermediate_info.fingerprint
            )));
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(cp.signature.trim())
            .map_err(|_| Error::Refused("the checkpoint's signature is not base64".into()))?;
        let spki = twoway_pki::spki_of_cert(&self.intermediate_der)?;
        twoway_pki::verify_signature(&spki, &cp.message(), &sig).map_err(|_| {
            Error::Refused(
                "the checkpoint's signature does not verify with this CA's intermediate key: \
                 the checkpoint was altered"
                    .into(),
            )
        })?;
        let (n, mut problems, entries) = self.audit_all()?;
        let last = entries.last().map_or(0, |e| e.seq);
        match entries.iter().find(|e| e.seq == cp.seq) {
            None => problems.push(AuditProblem {
                seq: cp.seq,
                problem: format!(
                    "the checkpoint of {} holds entry {} but the log ends at entry {last}: \
                     entries {}..{} were removed",
                    cp.time,
                    cp.seq,
                    last + 1,
                    cp.seq
                ),
            }),
            Some(e) if e.hash != cp.hash => problems.push(AuditProblem {
                seq: cp.seq,
                problem: format!(
                    "differs from the checkpoint of {}: the log up to it was rewritten",
                    cp.time
                ),
            }),
            Some(_) => {}
        }
        problems.sort_by_key(|p| p.seq);
        Ok((n, problems))
    }
}
