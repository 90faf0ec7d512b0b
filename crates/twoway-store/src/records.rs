//! Rows to records and back: the one place that knows how a [`CertRecord`], a
//! [`TokenRecord`] and an [`AuditEntry`] are laid out in the schema.

use crate::audit::AuditEntry;
use crate::db::{Arg, Db, Row};
use crate::model::{CertRecord, CertSource, CertStatus};
use crate::token::TokenRecord;
use crate::{Error, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The certificate columns every listing reads, in [`decode_cert`]'s order; `pem` follows
/// when the whole record is wanted.
pub(crate) const CERT_COLS: &str = "fingerprint, serial, subject, issuer, common_name, sans, \
    profile, key_type, not_before, not_after, owner, labels, location, status, revoked_at, \
    revocation_reason, source, recorded_at";

/// How many columns an inserted certificate row has (`CERT_COLS` and `pem`).
pub(crate) const CERT_ARGS: usize = 19;

/// Timestamps are stored as BIGINT seconds since the epoch.
pub(crate) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(crate) fn from_ts(v: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(v).map_err(|e| Error::Corrupt(e.to_string()))
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::database_source("encoding a row", e))
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("{column}: {e}")))
}

/// A column that must not be NULL.
fn req<T>(v: Option<T>, column: &str) -> Result<T> {
    v.ok_or_else(|| Error::Corrupt(format!("{column} is NULL")))
}

fn text(r: &dyn Row, i: usize, column: &str) -> Result<String> {
    req(r.text(i)?, column)
}

fn time_col(r: &dyn Row, i: usize, column: &str) -> Result<OffsetDateTime> {
    from_ts(req(r.int(i)?, column)?)
}

/// A certificate from a row of `CERT_COLS` (and `pem` after them when `with_pem`).
pub(crate) fn decode_cert(r: &dyn Row, with_pem: bool) -> Result<CertRecord> {
    let status = text(r, 13, "status")?;
    let source = text(r, 16, "source")?;
    Ok(CertRecord {
        fingerprint: text(r, 0, "fingerprint")?,
        serial: text(r, 1, "serial")?,
        subject: text(r, 2, "subject")?,
        issuer: text(r, 3, "issuer")?,
        common_name: r.text(4)?,
        sans: from_json("sans", &text(r, 5, "sans")?)?,
        profile: text(r, 6, "profile")?,
        key_type: text(r, 7, "key_type")?,
        not_before: time_col(r, 8, "not_before")?,
        not_after: time_col(r, 9, "not_after")?,
        owner: r.text(10)?,
        labels: from_json("labels", &text(r, 11, "labels")?)?,
        location: r.text(12)?,
        status: CertStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("status {status:?}")))?,
        revoked_at: r.int(14)?.map(from_ts).transpose()?,
        revocation_reason: r.text(15)?,
        source: CertSource::parse(&source)
            .ok_or_else(|| Error::Corrupt(format!("source {source:?}")))?,
        recorded_at: time_col(r, 17, "recorded_at")?,
        pem: if with_pem {
            text(r, 18, "pem")?
        } else {
            String::new()
        },
    })
}

/// The SANs of a row whose column `i` is `sans`.
pub(crate) fn decode_sans(r: &dyn Row, i: usize) -> Result<Vec<String>> {
    from_json("sans", &text(r, i, "sans")?)
}

/// The values of an inserted certificate row, in `CERT_COLS` order and then `pem`.
pub(crate) fn cert_args(rec: &CertRecord) -> Result<[Arg<'_>; CERT_ARGS]> {
    Ok([
        Arg::text(&rec.fingerprint),
        Arg::text(&rec.serial),
        Arg::text(&rec.subject),
        Arg::text(&rec.issuer),
        Arg::opt_text(rec.common_name.as_deref()),
        Arg::owned(to_json(&rec.sans)?),
        Arg::text(&rec.profile),
        Arg::text(&rec.key_type),
        Arg::int(ts(rec.not_before)),
        Arg::int(ts(rec.not_after)),
        Arg::opt_text(rec.owner.as_deref()),
        Arg::owned(to_json(&rec.labels)?),
        Arg::opt_text(rec.location.as_deref()),
        Arg::text(rec.status.as_str()),
        Arg::Int(rec.revoked_at.map(ts)),
        Arg::opt_text(rec.revocation_reason.as_deref()),
        Arg::text(rec.source.as_str()),
        Arg::int(ts(rec.recorded_at)),
        Arg::text(&rec.pem),
    ])
}

/// The audit columns, in [`decode_audit`]'s order.
pub(crate) const AUDIT_COLS: &str = "seq, time, actor, action, target, details, prev_hash, hash";

pub(crate) fn decode_audit(r: &dyn Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: req(r.int(0)?, "seq")?,
        time: text(r, 1, "time")?,
        actor: text(r, 2, "actor")?,
        action: text(r, 3, "action")?,
        target: text(r, 4, "target")?,
        details: text(r, 5, "details")?,
        prev_hash: text(r, 6, "prev_hash")?,
        hash: text(r, 7, "hash")?,
    })
}

pub(crate) fn audit_args(e: &AuditEntry) -> [Arg<'_>; 8] {
    [
        Arg::int(e.seq),
        Arg::text(&e.time),
        Arg::text(&e.actor),
        Arg::text(&e.action),
        Arg::text(&e.target),
        Arg::text(&e.details),
        Arg::text(&e.prev_hash),
        Arg::text(&e.hash),
    ]
}

/// The token columns, in [`decode_token`]'s order.
pub(crate) const TOKEN_COLS: &str =
    "hash, sans, profile, owner, cert_ttl, created_by, created_at, expires_at, used_at, used_by";

pub(crate) fn decode_token(r: &dyn Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        hash: text(r, 0, "hash")?,
        sans: from_json("sans", &text(r, 1, "sans")?)?,
        profile: text(r, 2, "profile")?,
        owner: r.text(3)?,
        cert_ttl: r.int(4)?,
        created_by: text(r, 5, "created_by")?,
        created_at: time_col(r, 6, "created_at")?,
        expires_at: time_col(r, 7, "expires_at")?,
        used_at: r.int(8)?.map(from_ts).transpose()?,
        used_by: r.text(9)?,
    })
}

pub(crate) fn token_args(t: &TokenRecord) -> Result<[Arg<'_>; 10]> {
    Ok([
        Arg::text(&t.hash),
        Arg::owned(to_json(&t.sans)?),
        Arg::text(&t.profile),
        Arg::opt_text(t.owner.as_deref()),
        Arg::Int(t.cert_ttl),
        Arg::text(&t.created_by),
        Arg::int(ts(t.created_at)),
        Arg::int(ts(t.expires_at)),
        Arg::Int(t.used_at.map(ts)),
        Arg::opt_text(t.used_by.as_deref()),
    ])
}

/// Every row of a query, decoded.
pub(crate) fn all<T>(
    db: &mut dyn Db,
    sql: &str,
    args: &[Arg<'_>],
    decode: impl Fn(&dyn Row) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    db.each(sql, args, &mut |r| {
        out.push(decode(r)?);
        Ok(())
    })?;
    Ok(out)
}

/// The first row of a query, decoded, if there is one.
pub(crate) fn first<T>(
    db: &mut dyn Db,
    sql: &str,
    args: &[Arg<'_>],
    decode: impl Fn(&dyn Row) -> Result<T>,
) -> Result<Option<T>> {
    let mut out = None;
    db.each(sql, args, &mut |r| {
        if out.is_none() {
            out = Some(decode(r)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// `(?, ?, …), (?, …)`: `rows` tuples of `cols` placeholders.
pub(crate) fn placeholders(rows: usize, cols: usize) -> String {
    let tuple = format!("({})", vec!["?"; cols].join(", "));
    vec![tuple; rows].join(", ")
}
