//! Every read, once for every engine: lookups, and the inventory listing with its filters
//! and paging.
//!
//! ## How a listing is answered
//!
//! Every filter of [`CertQuery`] but the SAN glob is SQL: status and expiry (indexed by
//! `(status, not_after)`), owner (indexed), profile, and labels. Labels are stored as the
//! JSON of a sorted map (`{"app":"x","env":"prod"}`, always written by the same
//! serializer), so a label `k=v` holds exactly when the text between the braces, with a
//! comma added at each end, contains `,"k":"v",` (key and value JSON-encoded): a `"`
//! inside a JSON string is always escaped, so `,"` only ever starts an entry. Rows come in
//! the order of `(recorded_at DESC, fingerprint)`, which an index on `recorded_at` serves
//! (ties within a second are sorted as they come), and paging is
//! SQL's `LIMIT`/`OFFSET`; `total` is a `COUNT(*)` over the same filters in the same
//! read transaction. Such a page reads `limit` certificate rows, whatever the inventory's
//! size. A status or an expiry window (`--expiring`) is counted on the `(status,
//! not_after)` index, but its page in listing order walks `(status, recorded_at)` and
//! checks the expiry on each row, unless the window matches few rows, which are then read
//! by expiry and sorted.
//!
//! The SAN glob (`*`, `?`, ASCII case ignored, matching a SAN whole or its value after
//! `TYPE:`) is matched in memory by `twoway-glob`, linear in the SAN. SQL first narrows the
//! rows to those whose SAN column contains the glob's longest literal run (a `LIKE
//! '%run%'` with ASCII case folded: a necessary condition, so nothing is lost). The
//! candidates are then read in listing order, two columns each (fingerprint and SANs), and
//! counted; only the page's fingerprints are kept, and the page's rows are read by
//! fingerprint at the end. Memory holds one page whatever the inventory's size; the rows
//! examined are the candidates, each once.

use crate::db::{Arg, Db, Dialect};
use crate::model::{CertQuery, CertRecord, CertSort, Page};
use crate::records::{
    all, decode_audit, decode_cert, decode_sans, decode_token, first, to_json, ts, AUDIT_COLS,
    CERT_COLS, TOKEN_COLS,
};
use crate::schema::REVOCATION_COUNTER;
use crate::token::TokenRecord;
use crate::{AuditEntry, Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use time::OffsetDateTime;
use twoway_glob::{Glob, Options};

/// How the SAN filter reads its glob: `*` crosses everything, ASCII case is ignored.
pub(crate) const SAN_GLOB: Options = Options::new().ignore_ascii_case();

/// Fingerprints asked for in one `IN (…)` list when reading a page by fingerprint.
const IN_CHUNK: usize = 500;

/// Counts `n` certificate rows read.
fn count(rows: &AtomicU64, n: usize) {
    rows.fetch_add(n as u64, Ordering::Relaxed);
}

/// `s` with the LIKE metacharacters `%` and `_`, and the escape `!`, escaped by `!`.
pub(crate) fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

/// Finds one certificate by fingerprint or serial, whole or by a prefix of at least eight
/// hex digits (colons allowed). Prefixes are literal: a serial is stored without leading
/// zero bytes, so those are stripped from the key before it is compared as a serial (an
/// all-zero key then names no serial at all), and fingerprints are compared as given.
pub(crate) fn find(db: &mut dyn Db, rows: &AtomicU64, key: &str) -> Result<CertRecord> {
    let k = key.trim().to_ascii_lowercase().replace(':', "");
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::NotFound(key.to_string()));
    }
    let serial = k.trim_start_matches("00");
    let decode = |r: &dyn crate::db::Row| decode_cert(r, true);
    let mut found = all(
        db,
        &format!("SELECT {CERT_COLS}, pem FROM certificates WHERE fingerprint = ? OR serial = ?"),
        &[Arg::text(&k), Arg::text(serial)],
        decode,
    )?;
    if found.is_empty() && k.len() >= 8 {
        let fp_prefix = format!("{}%", like_literal(&k));
        found = if serial.is_empty() {
            all(
                db,
                &format!(
                    "SELECT {CERT_COLS}, pem FROM certificates
                     WHERE fingerprint LIKE ? ESCAPE '!' LIMIT 2"
                ),
                &[Arg::text(&fp_prefix)],
                decode,
            )?
        } else {
            all(
                db,
                &format!(
                    "SELECT {CERT_COLS}, pem FROM certificates
                     WHERE fingerprint LIKE ? ESCAPE '!' OR serial LIKE ? ESCAPE '!' LIMIT 2"
                ),
                &[
                    Arg::text(&fp_prefix),
                    Arg::owned(format!("{}%", like_literal(serial))),
                ],
                decode,
            )?
        };
    }
    count(rows, found.len());
    match found.len() {
        0 => Err(Error::NotFound(key.to_string())),
        1 => Ok(found.remove(0)),
        _ => Err(Error::Ambiguous(key.to_string())),
    }
}

/// A `WHERE` clause under construction.
#[derive(Default)]
pub(crate) struct Filter<'a> {
    pub(crate) sql: String,
    pub(crate) args: Vec<Arg<'a>>,
    /// The same conditions for reading a page in listing order, where they differ from
    /// `sql` (for counting) only in which index they let the planner use.
    pub(crate) page_sql: String,
    /// `page_sql` with the conditions added by [`Filter::and_walked`] written as for
    /// counting: the page is then the matches found by their index, sorted.
    pub(crate) sorted_page_sql: String,
    /// Whether a condition was added by [`Filter::and_walked`].
    pub(crate) walks: bool,
}

/// Most matches of an expiry window that a page sorts into listing order; with more, the
/// page walks the listing order and checks the window on each row (see `filter`).
const SORT_AT_MOST: usize = if cfg!(test) { 5 } else { 10_000 };

impl<'a> Filter<'a> {
    pub(crate) fn and(&mut self, clause: &str, args: impl IntoIterator<Item = Arg<'a>>) {
        self.and_paged(clause, clause, args);
    }

    /// A condition written one way for counting and another for paging (same parameters).
    pub(crate) fn and_paged(
        &mut self,
        count: &str,
        page: &str,
        args: impl IntoIterator<Item = Arg<'a>>,
    ) {
        let join = if self.sql.is_empty() {
            " WHERE "
        } else {
            " AND "
        };
        self.sql.push_str(join);
        self.sql.push_str(count);
        self.page_sql.push_str(join);
        self.page_sql.push_str(page);
        self.sorted_page_sql.push_str(join);
        self.sorted_page_sql.push_str(page);
        self.args.extend(args);
    }

    /// Like [`Filter::and_paged`], but a page of few matches (at most [`SORT_AT_MOST`])
    /// reads them by the counting form's index and sorts them instead.
    pub(crate) fn and_walked(
        &mut self,
        count: &str,
        walk: &str,
        args: impl IntoIterator<Item = Arg<'a>>,
    ) {
        self.and_paged(count, walk, args);
        let len = self.sorted_page_sql.len() - walk.len();
        self.sorted_page_sql.truncate(len);
        self.sorted_page_sql.push_str(count);
        self.walks = true;
    }

    /// The page's conditions for a filter that matches `total` rows.
    fn page_for(&self, total: usize) -> &str {
        if self.walks && total <= SORT_AT_MOST {
            &self.sorted_page_sql
        } else {
            &self.page_sql
        }
    }
}

/// The SQL part of a listing's filters (everything but the exact SAN glob).
fn filter<'a>(d: &Dialect, q: &'a CertQuery, now: i64) -> Result<Filter<'a>> {
    let mut f = Filter::default();
    // In listing order by recording time, a page of active (or expired) certificates is
    // read from `(status, recorded_at)`, the expiry checked on each row (`+not_after`
    // keeps SQLite from choosing the expiry index and sorting every match); the count
    // takes the expiry index's range. An expiry window does the same when it matches
    // many rows (`and_walked`): sorting 100,000 matches of a 30-day window costs far more
    // than walking the newest rows until a page is found; a window of few matches is
    // read from the expiry index and sorted.
    let by_recorded = matches!(q.sort, CertSort::Newest | CertSort::Oldest);
    if let Some(before) = q.expiring_before {
        let range = "status = 'active' AND not_after > ? AND not_after <= ?";
        let args = [Arg::int(now), Arg::int(ts(before))];
        if by_recorded {
            f.and_walked(
                range,
                "status = 'active' AND +not_after > ? AND +not_after <= ?",
                args,
            );
        } else {
            f.and(range, args);
        }
    }
    if q.expired {
        f.and("not_after <= ?", [Arg::int(now)]);
    }
    let (active, expired) = if by_recorded {
        (
            "status = 'active' AND +not_after > ?",
            "status = 'active' AND +not_after <= ?",
        )
    } else {
        (
            "status = 'active' AND not_after > ?",
            "status = 'active' AND not_after <= ?",
        )
    };
    match q.status.as_deref() {
        Some("revoked") => f.and("status = 'revoked'", []),
        Some("active") => f.and_paged(
            "status = 'active' AND not_after > ?",
            active,
            [Arg::int(now)],
        ),
        Some("expired") => f.and_paged(
            "status = 'active' AND not_after <= ?",
            expired,
            [Arg::int(now)],
        ),
        _ => {}
    }
    if let Some(o) = &q.owner {
        f.and("owner = ?", [Arg::text(o)]);
    }
    if let Some(p) = &q.profile {
        f.and("profile = ?", [Arg::text(p)]);
    }
    if let Some(s) = &q.source {
        f.and("source = ?", [Arg::text(s)]);
    }
    if let Some(i) = &q.issuer {
        f.and("issuer = ?", [Arg::text(i)]);
    }
    let entries = "(',' || substr(labels, 2, length(labels) - 2) || ',')";
    for (k, v) in &q.labels {
        let needle = format!(",{}:{},", to_json(k)?, to_json(v)?);
        f.and(&d.contains.replace("{}", entries), [Arg::owned(needle)]);
    }
    if let Some(run) = q.san_glob.as_deref().and_then(longest_literal_run) {
        let pattern = format!("%{}%", like_literal(run));
        f.and(
            &d.like_ignore_ascii_case.replace("{}", "sans"),
            [Arg::owned(pattern)],
        );
    }
    Ok(f)
}

/// The longest run of a SAN glob that the stored SAN column must contain as it is: no
/// wildcard, and no character that JSON escapes (`"`, `\`, controls). None when no run is
/// left (a glob of wildcards only).
fn longest_literal_run(glob: &str) -> Option<&str> {
    glob.split(|c: char| matches!(c, '*' | '?' | '"' | '\\') || c.is_control())
        .max_by_key(|run| run.chars().count())
        .filter(|run| !run.is_empty())
}

/// Whether a certificate's SANs match the SAN filter: a SAN whole (`DNS:a.example`) or
/// its value (`a.example`).
pub(crate) fn sans_match(glob: &Glob, sans: &[String]) -> bool {
    sans.iter()
        .any(|s| glob.is_match(s) || s.split_once(':').is_some_and(|(_, v)| glob.is_match(v)))
}

/// One page of the inventory; see the module docs for how it is read. Runs its queries in
/// the caller's read transaction, so `total` and the page agree.
pub(crate) fn list(
    db: &mut dyn Db,
    d: &Dialect,
    rows: &AtomicU64,
    q: &CertQuery,
) -> Result<Page<CertRecord>> {
    let now = ts(q.now.unwrap_or_else(OffsetDateTime::now_utc));
    let f = filter(d, q, now)?;
    let limit = if q.limit == 0 { usize::MAX } else { q.limit };
    let (total, items) = match &q.san_glob {
        None => {
            let total = match status_only_total(db, q, now)? {
                Some(n) => n,
                None => count_matches(db, &f)?,
            };
            match &q.after {
                Some(c) => page_after(db, rows, &f, total, q.sort, c, limit)?,
                None => page_in_sql(db, rows, &f, total, q.sort.order_by(), q.offset, limit)?,
            }
        }
        Some(g) => {
            let glob = Glob::new(g, SAN_GLOB)
                .map_err(|e| Error::database(format!("SAN glob {g:?}: {e}")))?;
            page_by_glob(db, rows, &f, q.sort.order_by(), &glob, q.offset, limit)?
        }
    };
    Ok(Page {
        items,
        total,
        offset: q.offset,
        limit: q.limit,
    })
}

pub(crate) fn sql_int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `total` of a listing filtered by status alone (or not at all), from the counts the
/// writes keep (`count_by_status`) instead of counting rows; None for other filters.
fn status_only_total(db: &mut dyn Db, q: &CertQuery, now: i64) -> Result<Option<usize>> {
    let status_only = q.expiring_before.is_none()
        && !q.expired
        && q.owner.is_none()
        && q.profile.is_none()
        && q.source.is_none()
        && q.issuer.is_none()
        && q.labels.is_empty()
        && q.san_glob.is_none();
    let wanted = match q.status.as_deref() {
        _ if !status_only => return Ok(None),
        None => None,
        Some(s @ ("active" | "expired" | "revoked")) => Some(s),
        Some(_) => return Ok(None),
    };
    let at = crate::records::from_ts(now)?;
    let counts = count_by_status(db, at)?;
    let n = counts
        .iter()
        .filter(|(s, _)| wanted.is_none_or(|w| w == s))
        .map(|(_, n)| *n)
        .sum::<u64>();
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

/// `COUNT(*)` over the filters.
fn count_matches(db: &mut dyn Db, f: &Filter<'_>) -> Result<usize> {
    let total = first(
        db,
        &format!("SELECT COUNT(*) FROM certificates{}", f.sql),
        &f.args,
        |r| r.int(0),
    )?
    .flatten()
    .unwrap_or(0);
    Ok(usize::try_from(total).unwrap_or(0))
}

/// `LIMIT … OFFSET …` of `total` matches: every filter is SQL.
fn page_in_sql(
    db: &mut dyn Db,
    rows: &AtomicU64,
    f: &Filter<'_>,
    total: usize,
    order: &str,
    offset: usize,
    limit: usize,
) -> Result<(usize, Vec<CertRecord>)> {
    if offset >= total {
        return Ok((total, Vec::new()));
    }
    let mut args = f.args.clone();
    args.extend([Arg::int(sql_int(limit)), Arg::int(sql_int(offset))]);
    let items = all(
        db,
        &format!(
            "SELECT {CERT_COLS} FROM certificates{}{order} LIMIT ? OFFSET ?",
            f.page_for(total)
        ),
        &args,
        |r| decode_cert(r, false),
    )?;
    count(rows, items.len());
    Ok((total, items))
}

/// The page that follows the cursor, of `total` matches (keyset paging: the page costs its
/// own rows however deep it is).
fn page_after(
    db: &mut dyn Db,
    rows: &AtomicU64,
    f: &Filter<'_>,
    total: usize,
    sort: crate::CertSort,
    after: &crate::Cursor,
    limit: usize,
) -> Result<(usize, Vec<CertRecord>)> {
    let page_sql = f.page_for(total).to_string();
    let mut page = Filter {
        sql: page_sql.clone(),
        args: f.args.clone(),
        page_sql: page_sql.clone(),
        sorted_page_sql: page_sql,
        walks: false,
    };
    page.and(
        sort.after_clause(),
        [
            Arg::int(after.key),
            Arg::int(after.key),
            Arg::text(&after.fingerprint),
        ],
    );
    page.args.push(Arg::int(sql_int(limit)));
    let items = all(
        db,
        &format!(
            "SELECT {CERT_COLS} FROM certificates{}{} LIMIT ?",
            page.sql,
            sort.order_by()
        ),
        &page.args,
        |r| decode_cert(r, false),
    )?;
    count(rows, items.len());
    Ok((total, items))
}

/// The SAN glob in memory over the SQL candidates, then the page by fingerprint.
fn page_by_glob(
    db: &mut dyn Db,
    rows: &AtomicU64,
    f: &Filter<'_>,
    order: &str,
    glob: &Glob,
    offset: usize,
    limit: usize,
) -> Result<(usize, Vec<CertRecord>)> {
    let mut total = 0usize;
    let mut examined = 0usize;
    let mut page: Vec<String> = Vec::new();
    db.each(
        &format!("SELECT fingerprint, sans FROM certificates{}{order}", f.sql),
        &f.args,
        &mut |r| {
            examined += 1;
            if sans_match(glob, &decode_sans(r, 1)?) {
                if total >= offset && total - offset < limit {
                    page.push(
                        r.text(0)?
                            .ok_or_else(|| Error::Corrupt("fingerprint is NULL".into()))?,
                    );
                }
                total += 1;
            }
            Ok(())
        },
    )?;
    count(rows, examined);
    let mut by_fp: HashMap<String, CertRecord> = HashMap::with_capacity(page.len());
    for chunk in page.chunks(IN_CHUNK) {
        let args: Vec<Arg<'_>> = chunk.iter().map(|fp| Arg::text(fp)).collect();
        let list = vec!["?"; chunk.len()].join(", ");
        let found = all(
            db,
            &format!("SELECT {CERT_COLS} FROM certificates WHERE fingerprint IN ({list})"),
            &args,
            |r| decode_cert(r, false),
        )?;
        count(rows, found.len());
        by_fp.extend(found.into_iter().map(|r| (r.fingerprint.clone(), r)));
    }
    let items = page.iter().filter_map(|fp| by_fp.remove(fp)).collect();
    Ok((total, items))
}

/// Revoked certificates of `issuer` still unexpired at `since`, by revocation time.
pub(crate) fn revoked_by_issuer(
    db: &mut dyn Db,
    rows: &AtomicU64,
    issuer: &str,
    since: OffsetDateTime,
) -> Result<Vec<CertRecord>> {
    let found = all(
        db,
        &format!(
            "SELECT {CERT_COLS} FROM certificates
             WHERE status = 'revoked' AND not_after > ? AND issuer = ? ORDER BY revoked_at"
        ),
        &[Arg::int(ts(since)), Arg::text(issuer)],
        |r| decode_cert(r, false),
    )?;
    count(rows, found.len());
    Ok(found)
}

/// A complete CRL's entries (issuer, unexpired at): read from the partial covering index
/// `certificates_revoked (issuer, not_after, …)` alone.
pub(crate) const CRL_ENTRIES_SQL: &str = "SELECT serial, revoked_at, revocation_reason \
     FROM certificates WHERE status = 'revoked' AND issuer = ? AND not_after > ?";

/// A delta CRL's entries: those of [`CRL_ENTRIES_SQL`] revoked at or after a time, read
/// from the partial covering index `certificates_revoked_since (issuer, revoked_at, …)`
/// alone (schema version 3).
pub(crate) const CRL_DELTA_ENTRIES_SQL: &str = "SELECT serial, revoked_at, revocation_reason \
     FROM certificates WHERE status = 'revoked' AND issuer = ? AND revoked_at >= ? \
     AND not_after > ?";

/// The CRL's entries of `issuer`: its revoked certificates still unexpired at `since`
/// ([`CRL_ENTRIES_SQL`]), or only those revoked at or after `revoked_since`
/// ([`CRL_DELTA_ENTRIES_SQL`]), each read from an index of revoked certificates alone.
pub(crate) fn crl_entries(
    db: &mut dyn Db,
    issuer: &str,
    since: OffsetDateTime,
    revoked_since: Option<OffsetDateTime>,
) -> Result<Vec<crate::CrlEntry>> {
    let (sql, args) = match revoked_since {
        None => (
            CRL_ENTRIES_SQL,
            vec![Arg::text(issuer), Arg::int(ts(since))],
        ),
        Some(r) => (
            CRL_DELTA_ENTRIES_SQL,
            vec![Arg::text(issuer), Arg::int(ts(r)), Arg::int(ts(since))],
        ),
    };
    all(db, sql, &args, |r| {
        Ok(crate::CrlEntry {
            serial: r
                .text(0)?
                .ok_or_else(|| Error::Corrupt("serial is NULL".into()))?,
            revoked_at: crate::records::from_ts(r.int(1)?.unwrap_or(0))?,
            reason: r.text(2)?,
        })
    })
}

/// How many certificates are active, expired and revoked at `now` (statuses with none
/// left out, by name), from the counts the writes keep (`counts.rs`): all rows, the
/// revoked ones, and the unexpired active ones by expiry day (the rest of today from the
/// index); the expired are the rest. Nothing counts the whole inventory.
pub(crate) fn count_by_status(db: &mut dyn Db, now: OffsetDateTime) -> Result<Vec<(String, u64)>> {
    let (all, revoked) = crate::counts::totals(db)?;
    let active = crate::counts::active_expiring(db, ts(now), i64::MAX)?;
    let expired = all.saturating_sub(revoked).saturating_sub(active);
    Ok([
        ("active", active),
        ("expired", expired),
        ("revoked", revoked),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(s, n)| (s.to_string(), n))
    .collect())
}

/// Audit entries from `from` on, oldest first, at most `limit`.
pub(crate) fn audit_entries(db: &mut dyn Db, from: i64, limit: usize) -> Result<Vec<AuditEntry>> {
    all(
        db,
        &format!("SELECT {AUDIT_COLS} FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?"),
        &[Arg::int(from), Arg::int(sql_int(limit))],
        decode_audit,
    )
}

/// A token by the SHA-256 of its secret.
pub(crate) fn find_token(db: &mut dyn Db, hash: &str) -> Result<TokenRecord> {
    first(
        db,
        &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = ?"),
        &[Arg::text(hash)],
        decode_token,
    )?
    .ok_or(Error::TokenUnknown)
}

/// The revocation counter (0 before the first revocation).
pub(crate) fn revocation_seq(db: &mut dyn Db) -> Result<u64> {
    let v = first(
        db,
        "SELECT value FROM counters WHERE name = ?",
        &[Arg::text(REVOCATION_COUNTER)],
        |r| r.int(0),
    )?
    .flatten()
    .unwrap_or(0);
    Ok(u64::try_from(v).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_runs_and_like_escapes() {
        assert_eq!(
            longest_literal_run("*.ns-7.example.internal"),
            Some(".ns-7.example.internal")
        );
        assert_eq!(longest_literal_run("api-?.x"), Some("api-"));
        assert_eq!(longest_literal_run("a\"bcd*e"), Some("bcd"));
        assert_eq!(longest_literal_run("*?*"), None);
        assert_eq!(like_literal("a%b_c!d"), "a!%b!_c!!d");
    }
}
