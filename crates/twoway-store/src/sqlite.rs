//! The embedded SQLite store.

use crate::audit::{chain_hash, AuditEntry, NewAudit, GENESIS_HASH};
use crate::group::Queue;
use crate::model::{CertQuery, CertRecord, CertSource, CertStatus, Page};
use crate::schema::{REVOCATION_COUNTER, SCHEMA};
use crate::token::{Issuance, IssueExtras, TokenRecord};
use crate::{Error, Result, Store};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Read connections a file-backed store keeps besides its writer.
const READERS: usize = 4;

/// Page cache per connection, as SQLite's negative KiB count (16 MiB).
const CACHE_KIB: i64 = -16 * 1024;

/// The embedded inventory: one SQLite file in WAL mode with `synchronous=FULL`.
///
/// One writer connection commits; concurrent issuances share its transactions (group
/// commit, see [`crate::group`]). Reads go through a few separate connections, which WAL
/// lets run while the writer commits, so a lookup never waits for a flush.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    /// Empty for an in-memory store (its data lives in the writer's connection only).
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    queue: Queue,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Database("lock poisoned".into())
}

impl SqliteStore {
    /// Opens (creating if needed) the inventory at `path` and applies the schema.
    pub fn open(path: &Path) -> Result<Self> {
        private_files(path, false);
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        private_files(path, true);
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // A page cache that holds the indexes of a large inventory, and checkpoints every
        // ~16 MiB of WAL instead of every 4 MiB: fewer pages copied twice.
        conn.pragma_update(None, "cache_size", CACHE_KIB)?;
        conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
        // Savepoint journals (one per job of a group commit) in memory, not in a temp file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.execute_batch(SCHEMA)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(10))?;
            r.pragma_update(None, "cache_size", CACHE_KIB)?;
            readers.push(Mutex::new(r));
        }
        Ok(SqliteStore {
            writer: Mutex::new(conn),
            readers,
            next_reader: AtomicUsize::new(0),
            queue: Queue::default(),
        })
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            writer: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            queue: Queue::default(),
        })
    }

    fn with_tx<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().map_err(poisoned)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs a read on a free read connection (the writer's, in memory).
    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.readers.is_empty() {
            let conn = self.writer.lock().map_err(poisoned)?;
            return f(&conn);
        }
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(conn) = self.readers[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        let conn = self.readers[start].lock().map_err(poisoned)?;
        f(&conn)
    }
}

/// Keeps the inventory's files 0600 whatever the umask. SQLite creates a new database
/// with the umask's mode (0644 at best) and its `-wal` and `-shm` files with the
/// database's mode: before opening (`opened` false) a missing database is created empty
/// and 0600; after (`opened` true) a `-wal` or `-shm` left wider than the database by an
/// older version is narrowed to 0600. Best effort: SQLite reports real failures itself.
fn private_files(path: &Path, opened: bool) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !opened {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        return;
    }
    let Ok(db) = std::fs::metadata(path) else {
        return;
    };
    if db.permissions().mode() & 0o077 != 0 {
        return;
    }
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

/// Runs a batch of issuances in one IMMEDIATE transaction, a savepoint per job.
fn commit_batch(conn: &mut Connection, batch: &[Issuance]) -> Result<Vec<Result<AuditEntry>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(batch.len());
    for job in batch {
        tx.prepare_cached("SAVEPOINT job")?.execute([])?;
        match issuance_tx(&tx, &job.rec, &job.audit, &job.extras) {
            Ok(entry) => {
                tx.prepare_cached("RELEASE job")?.execute([])?;
                out.push(Ok(entry));
            }
            Err(e) => {
                // If the error already ended the transaction, this fails and so does
                // the batch: nothing of it is committed.
                tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                out.push(Err(e));
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// One issuance inside an open transaction: token, supersession, row, audit entries.
fn issuance_tx(
    tx: &Connection,
    rec: &CertRecord,
    audit: &NewAudit,
    extras: &IssueExtras,
) -> Result<AuditEntry> {
    if let Some(hash) = &extras.consume_token {
        consume_token_tx(tx, hash, &rec.fingerprint, extras.now)?;
    }
    if let Some(old) = &extras.supersede {
        let n = tx.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?1,
             revocation_reason = 'superseded' WHERE fingerprint = ?2 AND status = 'active'",
            params![ts(extras.now), old],
        )?;
        if n != 1 {
            return Err(Error::AlreadyRevoked(old.clone()));
        }
        bump_revocations_tx(tx)?;
    }
    insert_cert_tx(tx, rec)?;
    let entry = append_audit_tx(tx, audit)?;
    if let Some(a) = &extras.supersede_audit {
        append_audit_tx(tx, a)?;
    }
    Ok(entry)
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(v: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(v).map_err(|e| Error::Corrupt(e.to_string()))
}

fn append_audit_tx(tx: &Connection, a: &NewAudit) -> Result<AuditEntry> {
    let last: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev_hash) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS_HASH.to_string()),
    };
    let time = a
        .time
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| Error::Database(e.to_string()))?;
    let details = a.details.to_string();
    let hash = chain_hash(
        seq, &time, &a.actor, &a.action, &a.target, &details, &prev_hash,
    );
    tx.prepare_cached(
        "INSERT INTO audit_log (seq, time, actor, action, target, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        seq, time, a.actor, a.action, a.target, details, prev_hash, hash
    ])?;
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

const CERT_COLS: &str = "fingerprint, serial, subject, issuer, common_name, sans, profile, \
    key_type, not_before, not_after, owner, labels, location, status, revoked_at, \
    revocation_reason, source, recorded_at";

fn row_to_record(r: &Row<'_>, with_pem: bool) -> rusqlite::Result<Result<CertRecord>> {
    let sans: String = r.get(5)?;
    let labels: String = r.get(11)?;
    let status: String = r.get(13)?;
    let source: String = r.get(16)?;
    let revoked_at: Option<i64> = r.get(14)?;
    let pem: String = if with_pem { r.get(18)? } else { String::new() };
    let (nb, na, rec_at): (i64, i64, i64) = (r.get(8)?, r.get(9)?, r.get(17)?);
    let fingerprint: String = r.get(0)?;
    let serial: String = r.get(1)?;
    let subject: String = r.get(2)?;
    let issuer: String = r.get(3)?;
    let common_name: Option<String> = r.get(4)?;
    let profile: String = r.get(6)?;
    let key_type: String = r.get(7)?;
    let owner: Option<String> = r.get(10)?;
    let location: Option<String> = r.get(12)?;
    let revocation_reason: Option<String> = r.get(15)?;
    Ok((|| {
        Ok(CertRecord {
            serial,
            fingerprint,
            subject,
            issuer,
            common_name,
            sans: serde_json::from_str(&sans).map_err(|e| Error::Corrupt(e.to_string()))?,
            profile,
            key_type,
            not_before: from_ts(nb)?,
            not_after: from_ts(na)?,
            owner,
            labels: serde_json::from_str(&labels).map_err(|e| Error::Corrupt(e.to_string()))?,
            location,
            status: CertStatus::parse(&status)
                .ok_or_else(|| Error::Corrupt(format!("status {status:?}")))?,
            revoked_at: revoked_at.map(from_ts).transpose()?,
            revocation_reason,
            source: CertSource::parse(&source)
                .ok_or_else(|| Error::Corrupt(format!("source {source:?}")))?,
            recorded_at: from_ts(rec_at)?,
            pem,
        })
    })())
}

fn glob_match(pattern: &str, value: &str) -> bool {
    // `*` matches any run of characters, `?` one character; case-insensitive.
    fn inner(p: &[u8], v: &[u8]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some(b'*'), _) => inner(&p[1..], v) || (!v.is_empty() && inner(p, &v[1..])),
            (Some(b'?'), Some(_)) => inner(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => inner(&p[1..], &v[1..]),
            _ => false,
        }
    }
    inner(pattern.as_bytes(), value.as_bytes())
}

fn find_tx(conn: &Connection, key: &str) -> Result<CertRecord> {
    let k = key.trim().to_ascii_lowercase().replace(':', "");
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::NotFound(key.to_string()));
    }
    // Serials are kept without leading zero bytes (an encoder may print them); fingerprints
    // are compared whole: one in 256 of them starts with "00".
    let serial = k.trim_start_matches("00").to_string();
    let exact_sql =
        format!("SELECT {CERT_COLS}, pem FROM certificates WHERE serial = ?2 OR fingerprint = ?1");
    let mut stmt = conn.prepare_cached(&exact_sql)?;
    let mut rows: Vec<CertRecord> = stmt
        .query_map([&k, &serial], |r| row_to_record(r, true))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .collect::<Result<_>>()?;
    if rows.is_empty() && k.len() >= 8 {
        let like = format!("{k}%");
        let serial_like = format!("{serial}%");
        let sql = format!(
            "SELECT {CERT_COLS}, pem FROM certificates WHERE serial LIKE ?2 OR fingerprint LIKE ?1 LIMIT 2"
        );
        let mut stmt = conn.prepare(&sql)?;
        rows = stmt
            .query_map([&like, &serial_like], |r| row_to_record(r, true))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .collect::<Result<_>>()?;
    }
    match rows.len() {
        0 => Err(Error::NotFound(key.to_string())),
        1 => Ok(rows.remove(0)),
        _ => Err(Error::Ambiguous(key.to_string())),
    }
}

fn insert_cert_tx(tx: &Connection, rec: &CertRecord) -> Result<()> {
    let sans = serde_json::to_string(&rec.sans).map_err(|e| Error::Database(e.to_string()))?;
    let labels = serde_json::to_string(&rec.labels).map_err(|e| Error::Database(e.to_string()))?;
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO certificates ({CERT_COLS}, pem) VALUES
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
    ))?;
    let res = stmt.execute(params![
        rec.fingerprint,
        rec.serial,
        rec.subject,
        rec.issuer,
        rec.common_name,
        sans,
        rec.profile,
        rec.key_type,
        ts(rec.not_before),
        ts(rec.not_after),
        rec.owner,
        labels,
        rec.location,
        rec.status.as_str(),
        rec.revoked_at.map(ts),
        rec.revocation_reason,
        rec.source.as_str(),
        ts(rec.recorded_at),
        rec.pem,
    ]);
    match res {
        Err(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Error::Duplicate(format!(
                "{} (serial {})",
                rec.fingerprint, rec.serial
            )))
        }
        other => other.map(|_| ()).map_err(Error::from),
    }
}

fn bump_revocations_tx(tx: &Connection) -> Result<()> {
    tx.execute(
        "INSERT INTO counters (name, value) VALUES (?1, 1)
         ON CONFLICT (name) DO UPDATE SET value = value + 1",
        [REVOCATION_COUNTER],
    )?;
    Ok(())
}

/// Checks a token can be used at `now` and marks it used by `fingerprint`.
fn consume_token_tx(
    tx: &Connection,
    hash: &str,
    fingerprint: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let row: Option<(i64, Option<i64>)> = tx
        .query_row(
            "SELECT expires_at, used_at FROM tokens WHERE hash = ?1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((expires_at, used_at)) = row else {
        return Err(Error::TokenUnknown);
    };
    if let Some(u) = used_at {
        return Err(Error::TokenUsed(rfc3339(from_ts(u)?)));
    }
    if expires_at <= ts(now) {
        return Err(Error::TokenExpired(rfc3339(from_ts(expires_at)?)));
    }
    let n = tx.execute(
        "UPDATE tokens SET used_at = ?1, used_by = ?2 WHERE hash = ?3 AND used_at IS NULL",
        params![ts(now), fingerprint, hash],
    )?;
    if n != 1 {
        return Err(Error::TokenUsed(rfc3339(now)));
    }
    Ok(())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Store for SqliteStore {
    fn insert_certificate(&self, rec: &CertRecord, audit: &NewAudit) -> Result<AuditEntry> {
        self.record_issuance(rec, audit, &IssueExtras::none(rec.recorded_at))
    }

    fn find_certificate(&self, key: &str) -> Result<CertRecord> {
        self.with_conn(|c| find_tx(c, key))
    }

    fn list_certificates(&self, q: &CertQuery) -> Result<Page<CertRecord>> {
        let now = q.now.unwrap_or_else(OffsetDateTime::now_utc);
        let mut sql = format!("SELECT {CERT_COLS} FROM certificates WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(before) = q.expiring_before {
            push(&mut sql, " AND not_after <= ?", ts(before).into());
            push(&mut sql, " AND not_after > ?", ts(now).into());
            sql.push_str(" AND status = 'active'");
        }
        if q.expired {
            push(&mut sql, " AND not_after <= ?", ts(now).into());
        }
        match q.status.as_deref() {
            Some("revoked") => sql.push_str(" AND status = 'revoked'"),
            Some("active") => push(
                &mut sql,
                " AND status = 'active' AND not_after > ?",
                ts(now).into(),
            ),
            Some("expired") => push(
                &mut sql,
                " AND status = 'active' AND not_after <= ?",
                ts(now).into(),
            ),
            _ => {}
        }
        if let Some(o) = &q.owner {
            push(&mut sql, " AND owner = ?", o.clone().into());
        }
        if let Some(p) = &q.profile {
            push(&mut sql, " AND profile = ?", p.clone().into());
        }
        sql.push_str(" ORDER BY recorded_at DESC, fingerprint");
        self.with_conn(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    row_to_record(r, false)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut items = Vec::new();
            for r in rows {
                let r = r?;
                if !q.labels.iter().all(|(k, v)| r.labels.get(k) == Some(v)) {
                    continue;
                }
                if let Some(g) = &q.san_glob {
                    let matched = r.sans.iter().any(|s| {
                        glob_match(g, s) || s.split_once(':').is_some_and(|(_, v)| glob_match(g, v))
                    });
                    if !matched {
                        continue;
                    }
                }
                items.push(r);
            }
            let total = items.len();
            let items: Vec<_> = items
                .into_iter()
                .skip(q.offset)
                .take(if q.limit == 0 { usize::MAX } else { q.limit })
                .collect();
            Ok(Page {
                items,
                total,
                offset: q.offset,
                limit: q.limit,
            })
        })
    }

    fn revoke(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        reason: &str,
        audit: &NewAudit,
    ) -> Result<CertRecord> {
        self.with_tx(|tx| {
            let mut rec = find_tx(tx, fingerprint)?;
            if rec.status == CertStatus::Revoked {
                return Err(Error::AlreadyRevoked(rec.serial));
            }
            tx.execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?1, revocation_reason = ?2
                 WHERE fingerprint = ?3",
                params![ts(at), reason, rec.fingerprint],
            )?;
            bump_revocations_tx(tx)?;
            append_audit_tx(tx, audit)?;
            rec.status = CertStatus::Revoked;
            rec.revoked_at = Some(at);
            rec.revocation_reason = Some(reason.to_string());
            Ok(rec)
        })
    }

    fn revoked_by_issuer(&self, issuer: &str, since: OffsetDateTime) -> Result<Vec<CertRecord>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {CERT_COLS} FROM certificates
                 WHERE status = 'revoked' AND issuer = ?1 AND not_after > ?2 ORDER BY revoked_at"
            ))?;
            let rows = stmt
                .query_map(params![issuer, ts(since)], |r| row_to_record(r, false))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().collect()
        })
    }

    fn next_crl_number(&self, audit: &NewAudit) -> Result<u64> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO counters (name, value) VALUES ('crl_number', 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1",
                [],
            )?;
            let n: i64 = tx.query_row(
                "SELECT value FROM counters WHERE name = 'crl_number'",
                [],
                |r| r.get(0),
            )?;
            let mut a = audit.clone();
            a.target = n.to_string();
            append_audit_tx(tx, &a)?;
            u64::try_from(n).map_err(|e| Error::Corrupt(e.to_string()))
        })
    }

    fn append_audit(&self, audit: &NewAudit) -> Result<AuditEntry> {
        self.with_tx(|tx| append_audit_tx(tx, audit))
    }

    fn audit_entries(&self, from: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, time, actor, action, target, details, prev_hash, hash
                 FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let lim = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![from, lim], |r| {
                    Ok(AuditEntry {
                        seq: r.get(0)?,
                        time: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        details: r.get(5)?,
                        prev_hash: r.get(6)?,
                        hash: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn record_issuance(
        &self,
        rec: &CertRecord,
        audit: &NewAudit,
        extras: &IssueExtras,
    ) -> Result<AuditEntry> {
        self.queue.submit(
            rec,
            audit,
            extras,
            || self.writer.lock().map_err(poisoned),
            |conn, batch| commit_batch(conn, batch),
        )
    }

    fn record_issuances(&self, batch: &[Issuance]) -> Result<Vec<Result<AuditEntry>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer.lock().map_err(poisoned)?;
        commit_batch(&mut conn, batch)
    }

    fn insert_token(&self, t: &TokenRecord, audit: &NewAudit) -> Result<()> {
        let sans = serde_json::to_string(&t.sans).map_err(|e| Error::Database(e.to_string()))?;
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO tokens (hash, sans, profile, owner, cert_ttl, created_by, created_at,
                 expires_at, used_at, used_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL)",
                params![
                    t.hash,
                    sans,
                    t.profile,
                    t.owner,
                    t.cert_ttl,
                    t.created_by,
                    ts(t.created_at),
                    ts(t.expires_at)
                ],
            )?;
            append_audit_tx(tx, audit)?;
            Ok(())
        })
    }

    fn find_token(&self, hash: &str) -> Result<TokenRecord> {
        self.with_conn(|c| {
            let row = c
                .query_row(
                    "SELECT hash, sans, profile, owner, cert_ttl, created_by, created_at,
                     expires_at, used_at, used_by FROM tokens WHERE hash = ?1",
                    [hash],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, i64>(7)?,
                            r.get::<_, Option<i64>>(8)?,
                            r.get::<_, Option<String>>(9)?,
                        ))
                    },
                )
                .optional()?;
            let Some((hash, sans, profile, owner, cert_ttl, created_by, ca, ea, ua, used_by)) = row
            else {
                return Err(Error::TokenUnknown);
            };
            Ok(TokenRecord {
                hash,
                sans: serde_json::from_str(&sans).map_err(|e| Error::Corrupt(e.to_string()))?,
                profile,
                owner,
                cert_ttl,
                created_by,
                created_at: from_ts(ca)?,
                expires_at: from_ts(ea)?,
                used_at: ua.map(from_ts).transpose()?,
                used_by,
            })
        })
    }

    fn revocation_seq(&self) -> Result<u64> {
        self.with_conn(|c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT value FROM counters WHERE name = ?1",
                    [REVOCATION_COUNTER],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.unwrap_or(0).max(0) as u64)
        })
    }

    fn count_by_status(&self) -> Result<Vec<(String, u64)>> {
        let now = ts(OffsetDateTime::now_utc());
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT CASE WHEN status = 'revoked' THEN 'revoked'
                             WHEN not_after <= ?1 THEN 'expired' ELSE 'active' END AS s,
                        COUNT(*) FROM certificates GROUP BY s ORDER BY s",
            )?;
            let rows = stmt
                .query_map([now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .map(|(s, n)| (s, n.max(0) as u64))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[test]
    fn insert_find_revoke_list_and_chain() {
        conformance::insert_find_revoke_list_and_chain(&SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn tokens_and_supersession() {
        conformance::tokens_and_supersession(&SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn leading_zero_fingerprints() {
        conformance::leading_zero_fingerprints(&SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn group_commit_in_memory_and_on_a_file() {
        conformance::group_commit(&SqliteStore::in_memory().unwrap());
        let dir = tempfile::tempdir().unwrap();
        conformance::group_commit(&SqliteStore::open(&dir.path().join("inventory.db")).unwrap());
    }

    #[test]
    fn plain_batches() {
        conformance::plain_batches(&SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn a_failing_issuance_in_the_middle_of_a_batch_fails_alone() {
        conformance::batch_with_failures(&SqliteStore::in_memory().unwrap());
        let dir = tempfile::tempdir().unwrap();
        conformance::batch_with_failures(
            &SqliteStore::open(&dir.path().join("inventory.db")).unwrap(),
        );
    }

    #[test]
    fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("inventory.db")).unwrap();
        store
            .insert_certificate(&conformance::rec("aa00", "01"), &conformance::audit("a"))
            .unwrap();
        // a writer in the middle of a transaction (as a leader during its flush)
        let conn = store.writer.lock().unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(store.find_certificate("aa00").unwrap().serial, "01");
        assert_eq!(store.revocation_seq().unwrap(), 0);
        conn.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn concurrent_writers_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        conformance::concurrent_writers(&a, &b);
    }
}
