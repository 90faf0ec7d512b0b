//! Certificate counts per profile, per owner and per day of recording (all, and revoked),
//! kept in `inventory_counts` by the transactions that change them, so the dashboard's
//! overview and owners page, and `ca show`, read a few rows instead of grouping or
//! counting the inventory. The sum over the profiles is the inventory's total and its
//! revoked count; the days (`value` the day number since 1970, UTC) are the overview's
//! issuances per day. The `expiry` dimension counts the active (not revoked) certificates
//! by the day they expire: a count of active certificates expiring in a window is then
//! the counts of its whole days plus two index ranges of less than a day at its ends
//! (`active_expiring`), however many certificates the window holds.
//!
//! Every insert of a certificate row (`write::issuance`, `write::insert_plain`) adds to
//! its profile's, owner's and day's totals, every revocation (`write::mark_revoked`'s
//! callers) to their revoked counts, and a prune subtracts what it deleted — each in the
//! same transaction, under the same savepoint, so a rolled-back issuance leaves the counts
//! as they were. An inventory made before the table existed is counted once, at the first
//! open by a binary that has it (the row `('meta', 'built')` says it was done, and
//! `('meta', 'days')` for the days and `('meta', 'expiry')` for the expiry days, which
//! came later; on PostgreSQL under the write lock,
//! so replicas opening together count it once). A binary without the table, or without
//! the days, writing to the same database afterwards would leave the counts behind.

use crate::db::{Arg, Db};
use crate::model::CertRecord;
use crate::records::{all, first, ts};
use crate::Result;
use std::collections::BTreeMap;

/// Seconds in a day: the unit of the `day` dimension.
const DAY: i64 = 86_400;

/// A dimension and its value: `("profile", "server")`, `("owner", "team-a")` (`""` for
/// certificates without an owner), `("day", "20419")`.
type Key = (&'static str, String);

/// The `day` dimension's value for a recording time (unix seconds).
fn day(recorded_at: i64) -> String {
    recorded_at.div_euclid(DAY).to_string()
}

fn keys(profile: &str, owner: &str, recorded_at: i64) -> [Key; 3] {
    [
        ("profile", profile.to_string()),
        ("owner", owner.to_string()),
        ("day", day(recorded_at)),
    ]
}

fn rec_keys(rec: &CertRecord) -> [Key; 3] {
    keys(
        &rec.profile,
        rec.owner.as_deref().unwrap_or_default(),
        ts(rec.recorded_at),
    )
}

/// Adds `total` and `revoked` to each key's counts.
fn add(db: &mut dyn Db, changes: &BTreeMap<Key, (i64, i64)>) -> Result<()> {
    for ((dim, value), (total, revoked)) in changes {
        db.exec(
            "INSERT INTO inventory_counts (dim, value, total, revoked) VALUES (?, ?, ?, ?)
             ON CONFLICT (dim, value) DO UPDATE SET
               total = inventory_counts.total + excluded.total,
               revoked = inventory_counts.revoked + excluded.revoked",
            &[
                Arg::text(dim),
                Arg::text(value),
                Arg::int(*total),
                Arg::int(*revoked),
            ],
        )?;
    }
    Ok(())
}

/// Counts new certificate rows.
pub(crate) fn inserted<'a>(
    db: &mut dyn Db,
    recs: impl IntoIterator<Item = &'a CertRecord>,
) -> Result<()> {
    let mut changes: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    for r in recs {
        let revoked = i64::from(r.status == crate::CertStatus::Revoked);
        for k in rec_keys(r) {
            let c = changes.entry(k).or_default();
            c.0 += 1;
            c.1 += revoked;
        }
        if revoked == 0 {
            changes
                .entry(("expiry", day(ts(r.not_after))))
                .or_default()
                .0 += 1;
        }
    }
    add(db, &changes)
}

/// Counts a certificate that became revoked (by fingerprint: its row is read for its
/// profile, owner and recording time).
pub(crate) fn revoked(db: &mut dyn Db, fingerprint: &str) -> Result<()> {
    let found = all(
        db,
        "SELECT profile, owner, recorded_at, not_after FROM certificates WHERE fingerprint = ?",
        &[Arg::text(fingerprint)],
        |r| {
            Ok((
                r.text(0)?.unwrap_or_default(),
                r.text(1)?.unwrap_or_default(),
                r.int(2)?.unwrap_or_default(),
                r.int(3)?.unwrap_or_default(),
            ))
        },
    )?;
    let mut changes = BTreeMap::new();
    for (profile, owner, recorded_at, not_after) in found {
        for k in keys(&profile, &owner, recorded_at) {
            changes.insert(k, (0, 1));
        }
        // no longer active
        changes.insert(("expiry", day(not_after)), (-1, 0));
    }
    add(db, &changes)
}

/// A deleted row, as `deleted` subtracts it.
pub(crate) struct Deleted {
    /// Its profile.
    pub(crate) profile: String,
    /// Its owner (`""`: none).
    pub(crate) owner: String,
    /// Its recording time, unix seconds.
    pub(crate) recorded_at: i64,
    /// Its expiry, unix seconds.
    pub(crate) not_after: i64,
    /// Whether it was revoked.
    pub(crate) revoked: bool,
}

/// Subtracts deleted rows.
pub(crate) fn deleted(db: &mut dyn Db, rows: &[Deleted]) -> Result<()> {
    let mut changes: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    for Deleted {
        profile,
        owner,
        recorded_at,
        not_after,
        revoked,
    } in rows
    {
        if !revoked {
            changes.entry(("expiry", day(*not_after))).or_default().0 -= 1;
        }
        for k in keys(profile, owner, *recorded_at) {
            let c = changes.entry(k).or_default();
            c.0 -= 1;
            c.1 -= i64::from(*revoked);
        }
    }
    add(db, &changes)
}

/// Counts an inventory that has no counts yet, or no counts per day (once each; see the
/// module docs).
pub(crate) fn ensure(db: &mut dyn Db) -> Result<()> {
    let by_day = [("day", "CAST(recorded_at / 86400 AS TEXT)")];
    for (marker, dims) in [
        (
            "built",
            &[("profile", "profile"), ("owner", "COALESCE(owner, '')")][..],
        ),
        ("days", &by_day[..]),
        ("expiry", &[][..]),
    ] {
        let claimed = db.exec(
            "INSERT INTO inventory_counts (dim, value, total, revoked) VALUES ('meta', ?, 0, 0)
             ON CONFLICT (dim, value) DO NOTHING",
            &[Arg::text(marker)],
        )?;
        if claimed > 0 {
            count_all(db, dims)?;
            if marker == "expiry" {
                db.exec(
                    "INSERT INTO inventory_counts (dim, value, total, revoked)
                     SELECT 'expiry', CAST(not_after / 86400 AS TEXT), COUNT(*), 0
                     FROM certificates WHERE status = 'active'
                     GROUP BY CAST(not_after / 86400 AS TEXT)",
                    &[],
                )?;
            }
        }
    }
    Ok(())
}

/// Counts the inventory into `dims`: (dimension, the SQL of its value).
fn count_all(db: &mut dyn Db, dims: &[(&str, &str)]) -> Result<()> {
    for (dim, column) in dims {
        db.exec(
            &format!(
                "INSERT INTO inventory_counts (dim, value, total, revoked)
                 SELECT '{dim}', {column}, COUNT(*),
                        SUM(CASE WHEN status = 'revoked' THEN 1 ELSE 0 END)
                 FROM certificates GROUP BY {column}"
            ),
            &[],
        )?;
    }
    Ok(())
}

/// The inventory's size and how many of it are revoked: the sums over the profiles.
pub(crate) fn totals(db: &mut dyn Db) -> Result<(u64, u64)> {
    let n = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
    Ok(first(
        db,
        "SELECT CAST(COALESCE(SUM(total), 0) AS BIGINT), CAST(COALESCE(SUM(revoked), 0) AS BIGINT)
         FROM inventory_counts WHERE dim = 'profile'",
        &[],
        |r| Ok((n(r.int(0)?), n(r.int(1)?))),
    )?
    .unwrap_or((0, 0)))
}

/// Active certificates with `from < not_after <= to` (unix seconds): the whole days
/// between from the `expiry` counts, the parts of a day at either end from the
/// `(status, not_after)` index.
pub(crate) fn active_expiring(db: &mut dyn Db, from: i64, to: i64) -> Result<u64> {
    // as a half-open range of seconds [a, b)
    let (a, b) = (from.saturating_add(1), to.saturating_add(1));
    if b <= a {
        return Ok(0);
    }
    let (first_day, last_day) = ((a + DAY - 1).div_euclid(DAY), b.div_euclid(DAY) - 1);
    if first_day > last_day {
        return active_in(db, a, b);
    }
    let whole = first(
        db,
        "SELECT CAST(COALESCE(SUM(total), 0) AS BIGINT) FROM inventory_counts
         WHERE dim = 'expiry' AND CAST(value AS BIGINT) >= ? AND CAST(value AS BIGINT) <= ?",
        &[Arg::int(first_day), Arg::int(last_day)],
        |r| Ok(u64::try_from(r.int(0)?.unwrap_or(0)).unwrap_or(0)),
    )?
    .unwrap_or(0);
    Ok(active_in(db, a, first_day * DAY)? + whole + active_in(db, (last_day + 1) * DAY, b)?)
}

/// Active certificates with `a <= not_after < b`, from the index.
fn active_in(db: &mut dyn Db, a: i64, b: i64) -> Result<u64> {
    if b <= a {
        return Ok(0);
    }
    Ok(first(
        db,
        "SELECT COUNT(*) FROM certificates
         WHERE status = 'active' AND not_after >= ? AND not_after < ?",
        &[Arg::int(a), Arg::int(b)],
        |r| Ok(u64::try_from(r.int(0)?.unwrap_or(0)).unwrap_or(0)),
    )?
    .unwrap_or(0))
}

/// Certificates recorded on each of `days` days from day `from` (days since 1970, UTC).
pub(crate) fn per_day(db: &mut dyn Db, from: i64, days: usize) -> Result<Vec<u64>> {
    per_day_of(db, "day", from, days)
}

/// The counts of `dim` (`day` or `expiry`) on each of `days` days from day `from`.
pub(crate) fn per_day_of(db: &mut dyn Db, dim: &str, from: i64, days: usize) -> Result<Vec<u64>> {
    let mut out = vec![0u64; days];
    let values: Vec<String> = (0..days).map(|i| day((from + i as i64) * DAY)).collect();
    let list = vec!["?"; days].join(", ");
    let mut args: Vec<Arg<'_>> = vec![Arg::text(dim)];
    args.extend(values.iter().map(|v| Arg::text(v)));
    for (value, total) in all(
        db,
        &format!("SELECT value, total FROM inventory_counts WHERE dim = ? AND value IN ({list})"),
        &args,
        |r| Ok((r.text(0)?.unwrap_or_default(), r.int(1)?.unwrap_or(0))),
    )? {
        if let Some(i) = values.iter().position(|v| *v == value) {
            out[i] = u64::try_from(total).unwrap_or(0);
        }
    }
    Ok(out)
}

/// The counts of one dimension: (value, total, revoked), largest first.
pub(crate) fn read(db: &mut dyn Db, dim: &str, limit: usize) -> Result<Vec<(String, u64, u64)>> {
    let n = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
    all(
        db,
        "SELECT value, total, revoked FROM inventory_counts
         WHERE dim = ? AND total > 0 ORDER BY total DESC, value LIMIT ?",
        &[Arg::text(dim), Arg::int(crate::query::sql_int(limit))],
        |r| Ok((r.text(0)?.unwrap_or_default(), n(r.int(1)?), n(r.int(2)?))),
    )
}
