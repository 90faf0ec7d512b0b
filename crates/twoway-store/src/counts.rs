//! Certificate counts per profile and per owner (all, and revoked), kept in
//! `inventory_counts` by the transactions that change them, so the dashboard's overview
//! and owners page read a few rows instead of grouping the inventory.
//!
//! Every insert of a certificate row (`write::issuance`, `write::insert_plain`) adds to
//! its profile's and owner's totals, every revocation (`write::mark_revoked`'s callers) to
//! their revoked counts, and a prune subtracts what it deleted — each in the same
//! transaction, under the same savepoint, so a rolled-back issuance leaves the counts as
//! they were. An inventory made before the table existed is counted once, at the first
//! open by a binary that has it (the row `('meta', 'built')` says it was done; on
//! PostgreSQL under the write lock, so replicas opening together count it once). A binary
//! without the table writing to the same database afterwards would leave the counts behind.

use crate::db::{Arg, Db};
use crate::model::CertRecord;
use crate::records::all;
use crate::Result;
use std::collections::BTreeMap;

/// A dimension and its value: `("profile", "server")`, `("owner", "team-a")` (`""` for
/// certificates without an owner).
type Key = (&'static str, String);

fn keys(rec: &CertRecord) -> [Key; 2] {
    [
        ("profile", rec.profile.clone()),
        ("owner", rec.owner.clone().unwrap_or_default()),
    ]
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
        for k in keys(r) {
            let c = changes.entry(k).or_default();
            c.0 += 1;
            c.1 += revoked;
        }
    }
    add(db, &changes)
}

/// Counts a certificate that became revoked (by fingerprint: its row is read for its
/// profile and owner).
pub(crate) fn revoked(db: &mut dyn Db, fingerprint: &str) -> Result<()> {
    let found = all(
        db,
        "SELECT profile, owner FROM certificates WHERE fingerprint = ?",
        &[Arg::text(fingerprint)],
        |r| {
            Ok((
                r.text(0)?.unwrap_or_default(),
                r.text(1)?.unwrap_or_default(),
            ))
        },
    )?;
    let mut changes = BTreeMap::new();
    for (profile, owner) in found {
        changes.insert(("profile", profile), (0, 1));
        changes.insert(("owner", owner), (0, 1));
    }
    add(db, &changes)
}

/// Subtracts deleted rows: (profile, owner, was revoked) each.
pub(crate) fn deleted(db: &mut dyn Db, rows: &[(String, String, bool)]) -> Result<()> {
    let mut changes: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    for (profile, owner, revoked) in rows {
        for k in [("profile", profile.clone()), ("owner", owner.clone())] {
            let c = changes.entry(k).or_default();
            c.0 -= 1;
            c.1 -= i64::from(*revoked);
        }
    }
    add(db, &changes)
}

/// Counts an inventory that has no counts yet (once; see the module docs).
pub(crate) fn ensure(db: &mut dyn Db) -> Result<()> {
    let claimed = db.exec(
        "INSERT INTO inventory_counts (dim, value, total, revoked) VALUES ('meta', 'built', 0, 0)
         ON CONFLICT (dim, value) DO NOTHING",
        &[],
    )?;
    if claimed == 0 {
        return Ok(());
    }
    for (dim, column) in [("profile", "profile"), ("owner", "COALESCE(owner, '')")] {
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
