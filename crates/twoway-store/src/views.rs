//! The reads and the few writes behind the dashboard's pages: inventory statistics (counts
//! by status and profile, expiry windows, expiries and issuances per day), certificates
//! per owner, the token list and the withdrawal of an unused token, and the audit log
//! filtered by actor, action and target, newest first and paged by sequence number.
//!
//! Every statement here reads an index range or the counts of `counts.rs`: nothing groups
//! or scans the whole inventory.

use crate::db::{Arg, Db};
use crate::query::{like_literal, sql_int};
use crate::records::{all, decode_audit, decode_token, from_ts, ts, AUDIT_COLS, TOKEN_COLS};
use crate::token::TokenRecord;
use crate::write::append_audit;
use crate::{AuditEntry, Error, NewAudit, Result};
use serde::Serialize;
use time::OffsetDateTime;

/// Seconds in a day: the unit of the per-day series.
const DAY: i64 = 86_400;

/// What the overview shows of the inventory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InventoryStats {
    /// Certificates per status (`active`, `expired`, `revoked`), none left out.
    pub by_status: Vec<(String, u64)>,
    /// Certificates per profile, most first.
    pub by_profile: Vec<(String, u64)>,
    /// Active certificates expiring within 24 hours, 7 days and 30 days of `now`.
    pub expiring: [u64; 3],
    /// Active certificates expiring on each of the next 30 days (index 0: today).
    pub expiring_per_day: Vec<u64>,
    /// Certificates recorded on each of the last 30 days (index 29: today).
    pub issued_per_day: Vec<u64>,
}

/// One owner's certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OwnerSummary {
    /// The owner (None: certificates without one).
    pub owner: Option<String>,
    /// Every certificate of the owner.
    pub total: u64,
    /// Active and expiring within 30 days.
    pub expiring_30d: u64,
    /// Revoked.
    pub revoked: u64,
}

/// Filters for the audit log. All given filters must hold.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Actor containing this text.
    pub actor: Option<String>,
    /// Action exactly (`cert.revoke`) or, ending in `.*`, by prefix (`cert.*`).
    pub action: Option<String>,
    /// Target exactly (a serial, a token id).
    pub target: Option<String>,
    /// Only entries older than this sequence number (the next page's key).
    pub before: Option<i64>,
    /// Most entries to return.
    pub limit: usize,
}

fn n(v: Option<i64>) -> u64 {
    u64::try_from(v.unwrap_or(0)).unwrap_or(0)
}

pub(crate) fn inventory_stats(db: &mut dyn Db, now: OffsetDateTime) -> Result<InventoryStats> {
    let t = ts(now);
    let by_status = crate::query::count_by_status(db, now)?;
    let by_profile = crate::counts::read(db, "profile", 100)?
        .into_iter()
        .map(|(p, total, _)| (p, total))
        .collect();
    let mut expiring = [0u64; 3];
    for (i, secs) in [DAY, 7 * DAY, 30 * DAY].into_iter().enumerate() {
        expiring[i] = crate::counts::active_expiring(db, t, t + secs)?;
    }
    // today's rest from the index, the next 29 days from the expiry counts
    let today = t.div_euclid(DAY);
    let mut expiring_per_day = vec![crate::counts::active_expiring(
        db,
        t,
        (today + 1) * DAY - 1,
    )?];
    expiring_per_day.extend(crate::counts::per_day_of(db, "expiry", today + 1, 29)?);
    // from the per-day counts the writes keep
    let issued_per_day = crate::counts::per_day(db, today - 29, 30)?;
    Ok(InventoryStats {
        by_status,
        by_profile,
        expiring,
        expiring_per_day,
        issued_per_day,
    })
}

pub(crate) fn owner_summary(
    db: &mut dyn Db,
    now: OffsetDateTime,
    limit: usize,
) -> Result<Vec<OwnerSummary>> {
    let t = ts(now);
    let mut rows: Vec<OwnerSummary> = crate::counts::read(db, "owner", limit)?
        .into_iter()
        .map(|(owner, total, revoked)| OwnerSummary {
            owner: Some(owner).filter(|o| !o.is_empty()),
            total,
            revoked,
            expiring_30d: 0,
        })
        .collect();
    // The certificates expiring within 30 days, from the (status, not_after) index's range.
    for (owner, count) in all(
        db,
        "SELECT owner, COUNT(*) FROM certificates
         WHERE status = 'active' AND not_after > ? AND not_after <= ? GROUP BY owner",
        &[Arg::int(t), Arg::int(t + 30 * DAY)],
        |r| Ok((r.text(0)?, n(r.int(1)?))),
    )? {
        if let Some(row) = rows.iter_mut().find(|o| o.owner == owner) {
            row.expiring_30d = count;
        }
    }
    Ok(rows)
}

pub(crate) fn list_tokens(db: &mut dyn Db, limit: usize) -> Result<Vec<TokenRecord>> {
    all(
        db,
        &format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_at DESC, hash LIMIT ?"),
        &[Arg::int(sql_int(limit))],
        decode_token,
    )
}

/// Withdraws the unused, unexpired token whose hash starts with `id` (at least 16 hex
/// digits): its expiry becomes `now`, with the audit entry, in the caller's transaction.
pub(crate) fn withdraw_token(
    db: &mut dyn Db,
    id: &str,
    now: OffsetDateTime,
    audit: &NewAudit,
) -> Result<TokenRecord> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() < 16 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::TokenUnknown);
    }
    let found = all(
        db,
        &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash LIKE ? ESCAPE '!' LIMIT 2"),
        &[Arg::owned(format!("{}%", like_literal(&id)))],
        decode_token,
    )?;
    let mut tok = match found.len() {
        1 => found.into_iter().next().ok_or(Error::TokenUnknown)?,
        0 => return Err(Error::TokenUnknown),
        _ => return Err(Error::Ambiguous(id)),
    };
    if let Some(at) = tok.used_at {
        return Err(Error::TokenUsed(crate::records::rfc3339(at)));
    }
    if tok.expires_at <= now {
        return Err(Error::TokenExpired(crate::records::rfc3339(tok.expires_at)));
    }
    let changed = db.exec(
        "UPDATE tokens SET expires_at = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ?",
        &[Arg::int(ts(now)), Arg::text(&tok.hash), Arg::int(ts(now))],
    )?;
    if changed != 1 {
        return Err(Error::TokenUnknown);
    }
    append_audit(db, audit, &mut None)?;
    tok.expires_at = from_ts(ts(now))?;
    Ok(tok)
}

pub(crate) fn audit_search(db: &mut dyn Db, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
    let mut f = crate::query::Filter::default();
    if let Some(a) = q.actor.as_deref().filter(|s| !s.is_empty()) {
        f.and(
            "actor LIKE ? ESCAPE '!'",
            [Arg::owned(format!("%{}%", like_literal(a)))],
        );
    }
    match q.action.as_deref().filter(|s| !s.is_empty()) {
        Some(a) if a.ends_with(".*") => f.and(
            "action LIKE ? ESCAPE '!'",
            [Arg::owned(format!(
                "{}.%",
                like_literal(a.trim_end_matches(".*"))
            ))],
        ),
        Some(a) => f.and("action = ?", [Arg::text(a)]),
        None => {}
    }
    if let Some(t) = q.target.as_deref().filter(|s| !s.is_empty()) {
        f.and("target = ?", [Arg::text(t)]);
    }
    if let Some(b) = q.before {
        f.and("seq < ?", [Arg::int(b)]);
    }
    let mut args = f.args.clone();
    args.push(Arg::int(sql_int(q.limit.max(1))));
    all(
        db,
        &format!(
            "SELECT {AUDIT_COLS} FROM audit_log{} ORDER BY seq DESC LIMIT ?",
            f.sql
        ),
        &args,
        decode_audit,
    )
}

/// Certificates (whole, PEM included) that expired at or before `before`, revoked or not,
/// oldest expiry first, at most `limit`: what a prune would remove.
pub(crate) fn expired_records(
    db: &mut dyn Db,
    before: OffsetDateTime,
    limit: usize,
) -> Result<Vec<crate::CertRecord>> {
    all(
        db,
        &format!(
            "SELECT {}, pem FROM certificates
             WHERE status IN ('active', 'revoked') AND not_after <= ?
             ORDER BY not_after, fingerprint LIMIT ?",
            crate::records::CERT_COLS
        ),
        &[Arg::int(ts(before)), Arg::int(sql_int(limit))],
        |r| crate::records::decode_cert(r, true),
    )
}

/// Deletes the certificates `fingerprints` names that expired at or before `before`
/// (a row that does not is left alone), their counts with them, and appends `audit`; how
/// many rows went.
pub(crate) fn prune(
    db: &mut dyn Db,
    fingerprints: &[String],
    before: OffsetDateTime,
    audit: &NewAudit,
) -> Result<u64> {
    let mut gone = 0;
    for chunk in fingerprints.chunks(500) {
        let list = vec!["?"; chunk.len()].join(", ");
        let mut args: Vec<Arg<'_>> = chunk.iter().map(|f| Arg::text(f)).collect();
        args.push(Arg::int(ts(before)));
        let rows = all(
            db,
            &format!(
                "SELECT profile, owner, status, recorded_at, not_after FROM certificates
                 WHERE fingerprint IN ({list}) AND not_after <= ?"
            ),
            &args,
            |r| {
                Ok(crate::counts::Deleted {
                    profile: r.text(0)?.unwrap_or_default(),
                    owner: r.text(1)?.unwrap_or_default(),
                    revoked: r.text(2)?.as_deref() == Some("revoked"),
                    recorded_at: r.int(3)?.unwrap_or_default(),
                    not_after: r.int(4)?.unwrap_or_default(),
                })
            },
        )?;
        gone += db.exec(
            &format!("DELETE FROM certificates WHERE fingerprint IN ({list}) AND not_after <= ?"),
            &args,
        )?;
        crate::counts::deleted(db, &rows)?;
    }
    append_audit(db, audit, &mut None)?;
    Ok(gone)
}
