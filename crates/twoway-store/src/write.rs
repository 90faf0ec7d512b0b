//! Every write, once for every engine. Each function runs inside a transaction the engine
//! opened with its write lock held ([`crate::db::Engine::write`]), so the audit chain has
//! a single writer: reading its head and appending the next entry cannot interleave with
//! another writer, in this process or another.

use crate::audit::{next_entry, AuditEntry, Head, NewAudit};
use crate::db::{Arg, Db, Dialect};
use crate::model::{CertRecord, CertStatus};
use crate::query::find;
use crate::records::{
    audit_args, cert_args, first, from_ts, placeholders, rfc3339, token_args, ts, CERT_ARGS,
    CERT_COLS, TOKEN_COLS,
};
use crate::schema::REVOCATION_COUNTER;
use crate::token::{Issuance, IssueExtras, TokenRecord};
use crate::{Error, Result};
use std::sync::atomic::AtomicU64;
use time::OffsetDateTime;

const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (seq, time, actor, action, target, details, prev_hash, hash) VALUES ";

/// Appends `a` after `head` (read from the log when not yet known in this transaction)
/// and advances `head`.
pub(crate) fn append_audit(db: &mut dyn Db, a: &NewAudit, head: &mut Head) -> Result<AuditEntry> {
    load_head(db, head)?;
    let entry = next_entry(head, a)?;
    db.exec(
        &format!("{INSERT_AUDIT}{}", placeholders(1, 8)),
        &audit_args(&entry),
    )
    .map_err(audit_raced)?;
    *head = Some((entry.seq, entry.hash.clone()));
    Ok(entry)
}

/// Reads the chain's head unless this transaction knows it already.
fn load_head(db: &mut dyn Db, head: &mut Head) -> Result<()> {
    if head.is_none() {
        *head = first(
            db,
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
            |r| {
                let seq = r
                    .int(0)?
                    .ok_or_else(|| Error::Corrupt("seq is NULL".into()))?;
                let hash = r
                    .text(1)?
                    .ok_or_else(|| Error::Corrupt("hash is NULL".into()))?;
                Ok((seq, hash))
            },
        )?;
    }
    Ok(())
}

/// A duplicate sequence number means another writer appended without the write lock.
fn audit_raced(e: Error) -> Error {
    match e {
        Error::Duplicate(m) => Error::database(format!("audit log append raced: {m}")),
        other => other,
    }
}

fn insert_cert(db: &mut dyn Db, rec: &CertRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO certificates ({CERT_COLS}, pem) VALUES {}",
        placeholders(1, CERT_ARGS)
    );
    match db.exec(&sql, &cert_args(rec)?) {
        Err(Error::Duplicate(_)) => Err(Error::Duplicate(format!(
            "{} (serial {})",
            rec.fingerprint, rec.serial
        ))),
        other => other.map(|_| ()),
    }
}

fn bump_revocations(db: &mut dyn Db) -> Result<()> {
    db.exec(
        "INSERT INTO counters (name, value) VALUES (?, 1)
         ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
        &[Arg::text(REVOCATION_COUNTER)],
    )?;
    Ok(())
}

/// Consumes a token for the certificate `fingerprint` at `now`. One conditional UPDATE
/// decides (unused and unexpired, or no row changes), so two racing consumers cannot both
/// win, on any engine; only when it changed nothing is the token read, to say why.
fn consume_token(
    db: &mut dyn Db,
    hash: &str,
    fingerprint: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let now_ts = ts(now);
    let won = db.exec(
        "UPDATE tokens SET used_at = ?, used_by = ?
         WHERE hash = ? AND used_at IS NULL AND expires_at > ?",
        &[
            Arg::int(now_ts),
            Arg::text(fingerprint),
            Arg::text(hash),
            Arg::int(now_ts),
        ],
    )?;
    if won == 1 {
        return Ok(());
    }
    let state = first(
        db,
        "SELECT expires_at, used_at FROM tokens WHERE hash = ?",
        &[Arg::text(hash)],
        |r| Ok((r.int(0)?.unwrap_or(0), r.int(1)?)),
    )?;
    match state {
        None => Err(Error::TokenUnknown),
        Some((_, Some(used))) => Err(Error::TokenUsed(rfc3339(from_ts(used)?))),
        Some((expires, None)) if expires <= now_ts => {
            Err(Error::TokenExpired(rfc3339(from_ts(expires)?)))
        }
        Some(_) => Err(Error::TokenUsed(rfc3339(now))),
    }
}

/// Marks an active certificate revoked; false when it was not active (no row changed).
fn mark_revoked(
    db: &mut dyn Db,
    fingerprint: &str,
    at: OffsetDateTime,
    reason: &str,
) -> Result<bool> {
    let n = db.exec(
        "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
         WHERE fingerprint = ? AND status = 'active'",
        &[Arg::int(ts(at)), Arg::text(reason), Arg::text(fingerprint)],
    )?;
    Ok(n == 1)
}

/// One issuance: the token, the supersession, the row and its audit entries.
fn issuance(db: &mut dyn Db, job: &Issuance, head: &mut Head) -> Result<AuditEntry> {
    let (rec, extras) = (&job.rec, &job.extras);
    if let Some(hash) = &extras.consume_token {
        consume_token(db, hash, &rec.fingerprint, extras.now)?;
    }
    if let Some(old) = &extras.supersede {
        if !mark_revoked(db, old, extras.now, "superseded")? {
            return Err(Error::AlreadyRevoked(old.clone()));
        }
        bump_revocations(db)?;
        crate::counts::revoked(db, old)?;
    }
    insert_cert(db, rec)?;
    crate::counts::inserted(db, [rec])?;
    let entry = append_audit(db, &job.audit, head)?;
    if let Some(a) = &extras.supersede_audit {
        append_audit(db, a, head)?;
    }
    Ok(entry)
}

/// An issuance that commits nothing but its row and audit entry.
fn is_plain(x: &IssueExtras) -> bool {
    x.consume_token.is_none() && x.supersede.is_none() && x.supersede_audit.is_none()
}

/// Records a batch of issuances in the caller's transaction: one result per issuance, in
/// order. Each runs under its own savepoint, so a failing one (a duplicate serial, a spent
/// token, a certificate already superseded) is rolled back alone. Where the dialect asks
/// for it, a batch of plain issuances first goes in as one multi-row INSERT per table,
/// and is redone one savepoint per issuance only if that fails.
pub(crate) fn record_batch(
    db: &mut dyn Db,
    dialect: &Dialect,
    batch: &[Issuance],
) -> Result<Vec<Result<AuditEntry>>> {
    // The chain's head as committed jobs left it; a failed job's entries roll back with
    // its savepoint, so it does not advance.
    let mut head: Head = None;
    if dialect.multi_row_batches && batch.len() > 1 && batch.iter().all(|j| is_plain(&j.extras)) {
        db.batch(&["SAVEPOINT batch"])?;
        let mut h = head.clone();
        match insert_plain(db, batch, &mut h) {
            Ok(entries) => {
                db.batch(&["RELEASE SAVEPOINT batch"])?;
                return Ok(entries.into_iter().map(Ok).collect());
            }
            Err(_) => db.batch(&["ROLLBACK TO SAVEPOINT batch", "RELEASE SAVEPOINT batch"])?,
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for (i, job) in batch.iter().enumerate() {
        if i == 0 {
            db.batch(&["SAVEPOINT job"])?;
        } else {
            db.batch(&["RELEASE SAVEPOINT job", "SAVEPOINT job"])?;
        }
        let mut h = head.clone();
        match issuance(db, job, &mut h) {
            Ok(entry) => {
                head = h;
                out.push(Ok(entry));
            }
            Err(e) => {
                // If the error already ended the transaction, this fails and so does the
                // batch: nothing of it is committed.
                db.batch(&["ROLLBACK TO SAVEPOINT job"])?;
                out.push(Err(e));
            }
        }
    }
    if !batch.is_empty() {
        db.batch(&["RELEASE SAVEPOINT job"])?;
    }
    Ok(out)
}

/// Plain issuances with one statement per table; `head` is read if unknown and advanced.
fn insert_plain(db: &mut dyn Db, batch: &[Issuance], head: &mut Head) -> Result<Vec<AuditEntry>> {
    let mut args = Vec::with_capacity(batch.len() * CERT_ARGS);
    for j in batch {
        args.extend(cert_args(&j.rec)?);
    }
    db.exec(
        &format!(
            "INSERT INTO certificates ({CERT_COLS}, pem) VALUES {}",
            placeholders(batch.len(), CERT_ARGS)
        ),
        &args,
    )?;
    crate::counts::inserted(db, batch.iter().map(|j| &j.rec))?;
    load_head(db, head)?;
    audit_rows(db, batch, head)
}

/// The entries of `batch` after `head`, inserted with one statement; advances `head`.
fn audit_rows(db: &mut dyn Db, batch: &[Issuance], head: &mut Head) -> Result<Vec<AuditEntry>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut entries = Vec::with_capacity(batch.len());
    let mut h = head.clone();
    for j in batch {
        let e = next_entry(&h, &j.audit)?;
        h = Some((e.seq, e.hash.clone()));
        entries.push(e);
    }
    let args: Vec<Arg<'_>> = entries.iter().flat_map(audit_args).collect();
    db.exec(
        &format!("{INSERT_AUDIT}{}", placeholders(entries.len(), 8)),
        &args,
    )
    .map_err(audit_raced)?;
    *head = h;
    Ok(entries)
}

/// Revokes the certificate `key` names (a fingerprint, or a serial or a prefix of either)
/// at `at`, with its audit entry.
pub(crate) fn revoke(
    db: &mut dyn Db,
    rows: &AtomicU64,
    key: &str,
    at: OffsetDateTime,
    reason: &str,
    audit: &NewAudit,
) -> Result<CertRecord> {
    let mut rec = find(db, rows, key)?;
    if !mark_revoked(db, &rec.fingerprint, at, reason)? {
        return Err(Error::AlreadyRevoked(rec.serial));
    }
    bump_revocations(db)?;
    crate::counts::revoked(db, &rec.fingerprint)?;
    append_audit(db, audit, &mut None)?;
    rec.status = CertStatus::Revoked;
    rec.revoked_at = Some(at);
    rec.revocation_reason = Some(reason.to_string());
    Ok(rec)
}

/// Takes the next CRL number; its audit entry names it.
pub(crate) fn next_crl_number(db: &mut dyn Db, audit: &NewAudit) -> Result<u64> {
    let n = first(
        db,
        "INSERT INTO counters (name, value) VALUES ('crl_number', 1)
         ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        &[],
        |r| r.int(0),
    )?
    .flatten()
    .ok_or_else(|| Error::Corrupt("the CRL number counter returned nothing".into()))?;
    let mut a = audit.clone();
    a.target = n.to_string();
    append_audit(db, &a, &mut None)?;
    u64::try_from(n).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Stores a new, unused token with its audit entry.
pub(crate) fn insert_token(db: &mut dyn Db, t: &TokenRecord, audit: &NewAudit) -> Result<()> {
    let unused = TokenRecord {
        used_at: None,
        used_by: None,
        ..t.clone()
    };
    db.exec(
        &format!(
            "INSERT INTO tokens ({TOKEN_COLS}) VALUES {}",
            placeholders(1, 10)
        ),
        &token_args(&unused)?,
    )?;
    append_audit(db, audit, &mut None)?;
    Ok(())
}
