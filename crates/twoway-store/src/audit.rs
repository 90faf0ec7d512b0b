//! The audit log: append-only, each entry chained to the previous by SHA-256.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append.
#[derive(Clone, Debug)]
pub struct NewAudit {
    /// Who did it (`cli:alice@host`, `api:<client fingerprint>`).
    pub actor: String,
    /// What was done: `ca.init`, `cert.issue`, `cert.sign`, `cert.import`, `cert.revoke`, `crl.sign`.
    pub action: String,
    /// What it was done to (a serial, a fingerprint, a CRL number).
    pub target: String,
    /// Details as JSON.
    pub details: serde_json::Value,
    /// When.
    pub time: OffsetDateTime,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: i64,
    /// When, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: String,
    /// Details, JSON text as stored.
    pub details: String,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The hash of an entry: SHA-256 over its fields and the previous hash.
pub fn chain_hash(
    seq: i64,
    time: &str,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        &seq.to_string() as &str,
        time,
        actor,
        action,
        target,
        details,
        prev_hash,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The head of the chain: the newest entry's `(seq, hash)`, or `None` for an empty log.
pub(crate) type Head = Option<(i64, String)>;

/// The entry that follows `head` for `a`: its sequence number, its time in RFC 3339 UTC
/// and its hash chained to the head's. The one place an entry is made, whatever the
/// engine or the batch it is written in.
pub(crate) fn next_entry(head: &Head, a: &NewAudit) -> crate::Result<AuditEntry> {
    let (seq, prev_hash) = match head {
        Some((s, h)) => (s + 1, h.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };
    let time = a
        .time
        .to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| crate::Error::database_source("formatting an audit entry's time", e))?;
    let details = a.details.to_string();
    let hash = chain_hash(
        seq, &time, &a.actor, &a.action, &a.target, &details, &prev_hash,
    );
    Ok(AuditEntry {
        seq,
        time,
        actor: a.actor.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        details,
        prev_hash,
        hash,
    })
}

/// What `audit verify` found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// The sequence number where the chain breaks.
    pub seq: i64,
    /// What is wrong there.
    pub problem: String,
}

impl AuditEntry {
    /// Recomputes this entry's hash.
    pub fn computed_hash(&self) -> String {
        chain_hash(
            self.seq,
            &self.time,
            &self.actor,
            &self.action,
            &self.target,
            &self.details,
            &self.prev_hash,
        )
    }
}

/// Walks entries in order and reports every break: an altered entry (hash mismatch), a
/// removed entry (sequence gap, or `prev_hash` not the previous entry's hash).
pub fn verify_chain(entries: &[AuditEntry]) -> Vec<AuditProblem> {
    let mut problems = Vec::new();
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut expect_seq = 1;
    for e in entries {
        if e.seq != expect_seq {
            problems.push(AuditProblem {
                seq: e.seq,
                problem: format!("entries {expect_seq}..{} are missing", e.seq - 1),
            });
        }
        if e.prev_hash != prev_hash {
            problems.push(AuditProblem {
                seq: e.seq,
                problem: "does not chain to the entry before it (an entry was removed or altered)"
                    .into(),
            });
        }
        if e.computed_hash() != e.hash {
            problems.push(AuditProblem {
                seq: e.seq,
                problem: "its content does not match its hash (the entry was altered)".into(),
            });
        }
        prev_hash = e.hash.clone();
        expect_seq = e.seq + 1;
    }
    problems
}
