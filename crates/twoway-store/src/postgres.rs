//! The PostgreSQL store: one database shared by several replicas of the online CA.
//!
//! Same schema as SQLite ([`crate::schema::SCHEMA`]); timestamps are BIGINT seconds. Every
//! writing method runs in one transaction that first takes a transaction-scoped advisory
//! lock ([`WRITE_LOCK`]): writers from every process are serialized, so the audit chain
//! stays linear (each append reads the head and inserts the next entry under that lock),
//! while readers (OCSP, listing, the revocation counter) never wait. Serial and fingerprint
//! uniqueness is also enforced by constraints; token consumption and supersession are
//! conditional updates (`… WHERE used_at IS NULL`) whose row counts decide. Issuances from
//! one process are grouped (`crate::group`): one leader at a time takes the advisory lock
//! for a whole batch, so the batch pays for one lock and one commit.

use crate::audit::{chain_hash, AuditEntry, NewAudit, GENESIS_HASH};
use crate::group::Queue;
use crate::model::{CertQuery, CertRecord, CertSource, CertStatus, Page};
use crate::schema::{REVOCATION_COUNTER, SCHEMA};
use crate::token::{Issuance, IssueExtras, TokenRecord};
use crate::{Error, Result, Store};
use ::postgres::error::SqlState;
use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, GenericClient, NoTls, Row, Transaction};
use std::str::FromStr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The advisory lock key every writing transaction takes (ASCII "twoway").
pub const WRITE_LOCK: i64 = 0x7477_6f77_6179;

/// Connections kept per store unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// How long a caller waits for a free connection before giving up.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// The inventory in a PostgreSQL database, through a small pool of connections.
pub struct PostgresStore {
    config: ::postgres::Config,
    max: usize,
    pool: Mutex<PoolState>,
    freed: Condvar,
    queue: Queue,
}

struct PoolState {
    idle: Vec<Client>,
    open: usize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("dbname", &self.config.get_dbname())
            .field("pool_size", &self.max)
            .finish_non_exhaustive()
    }
}

fn pg(e: ::postgres::Error) -> Error {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        return Error::Duplicate(msg);
    }
    Error::Database(e.to_string())
}

impl From<::postgres::Error> for Error {
    fn from(e: ::postgres::Error) -> Self {
        pg(e)
    }
}

/// A pooled connection, returned to the pool on drop (or discarded if it broke).
struct Conn<'a> {
    store: &'a PostgresStore,
    client: Option<Client>,
}

impl Conn<'_> {
    fn client(&mut self) -> Result<&mut Client> {
        self.client
            .as_mut()
            .ok_or_else(|| Error::Database("connection already returned".into()))
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Ok(mut st) = self.store.pool.lock() else {
            return;
        };
        match self.client.take() {
            Some(c) if !c.is_closed() => st.idle.push(c),
            _ => st.open = st.open.saturating_sub(1),
        }
        drop(st);
        self.store.freed.notify_one();
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing a synchronous client blocks on its own runtime, which panics (and aborts
        // the process during shutdown) on a thread that drives a tokio runtime: the online
        // CA drops its store on one when it stops. Close the idle connections on a plain
        // thread instead.
        let idle = match self.pool.get_mut() {
            Ok(st) => std::mem::take(&mut st.idle),
            Err(_) => return,
        };
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user[:password]@host:port/db`, no TLS: meant for a
    /// database on the same host or a trusted network) with [`DEFAULT_POOL_SIZE`]
    /// connections, and applies the schema.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`PostgresStore::connect`] with at most `pool_size` connections (at least 1).
    pub fn connect_with(url: &str, pool_size: usize) -> Result<Self> {
        let mut config = ::postgres::Config::from_str(url)
            .map_err(|e| Error::Database(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("twoway");
        }
        if config.get_options().is_none() {
            // A writer never waits forever for the write lock, and a replica that stalls
            // inside a transaction releases it.
            config.options("-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s");
        }
        let store = PostgresStore {
            config,
            max: pool_size.max(1),
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            queue: Queue::default(),
        };
        {
            let mut conn = store.conn()?;
            let mut tx = conn.client()?.transaction()?;
            tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
            tx.batch_execute(SCHEMA)?;
            tx.commit()?;
        }
        Ok(store)
    }

    fn conn(&self) -> Result<Conn<'_>> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut st = self
            .pool
            .lock()
            .map_err(|_| Error::Database("pool lock poisoned".into()))?;
        loop {
            while let Some(c) = st.idle.pop() {
                if c.is_closed() {
                    st.open = st.open.saturating_sub(1);
                    continue;
                }
                return Ok(Conn {
                    store: self,
                    client: Some(c),
                });
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match self.config.connect(NoTls) {
                    Ok(c) => Ok(Conn {
                        store: self,
                        client: Some(c),
                    }),
                    Err(e) => {
                        if let Ok(mut st) = self.pool.lock() {
                            st.open = st.open.saturating_sub(1);
                        }
                        self.freed.notify_one();
                        Err(Error::Database(format!(
                            "cannot connect to PostgreSQL: {e}"
                        )))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Database(format!(
                    "no free database connection after {}s",
                    CHECKOUT_TIMEOUT.as_secs()
                )));
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .map_err(|_| Error::Database("pool lock poisoned".into()))?
                .0;
        }
    }

    /// Runs `f` in a transaction holding the write lock; commits if it returns Ok.
    fn with_tx<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.client()?.transaction()?;
        tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs a batch of issuances in one transaction (under the write lock), a savepoint
    /// per job, so the batch pays for one commit.
    fn commit_batch(&self, batch: &[Issuance]) -> Result<Vec<Result<AuditEntry>>> {
        self.with_tx(|tx| {
            // The chain's head as committed jobs left it; a failed job's entries roll back
            // with its savepoint, so it does not advance.
            let mut head: Head = None;
            // Plain issuances (no token, no supersession: `POST /v1/sign`, `cert issue`)
            // go in one multi-row INSERT per table: a handful of round trips for the
            // batch instead of three per issuance. If that fails (a duplicate, say), it is
            // rolled back and the batch is redone one savepoint per issuance, so each
            // failure is still its own issuance's alone.
            if batch.len() > 1 && batch.iter().all(|j| is_plain(&j.extras)) {
                tx.batch_execute("SAVEPOINT batch")?;
                let mut h = head.clone();
                match insert_plain_batch(tx, batch, &mut h) {
                    Ok(entries) => {
                        tx.batch_execute("RELEASE SAVEPOINT batch")?;
                        return Ok(entries.into_iter().map(Ok).collect());
                    }
                    Err(_) => {
                        tx.batch_execute("ROLLBACK TO SAVEPOINT batch; RELEASE SAVEPOINT batch")?
                    }
                }
            }
            let mut out = Vec::with_capacity(batch.len());
            for (i, job) in batch.iter().enumerate() {
                // one round trip: release the previous job's savepoint and open this one's
                tx.batch_execute(if i == 0 {
                    "SAVEPOINT job"
                } else {
                    "RELEASE SAVEPOINT job; SAVEPOINT job"
                })?;
                let mut h = head.clone();
                match issuance_tx(tx, &job.rec, &job.audit, &job.extras, &mut h) {
                    Ok(entry) => {
                        head = h;
                        out.push(Ok(entry));
                    }
                    Err(e) => {
                        tx.batch_execute("ROLLBACK TO SAVEPOINT job")?;
                        out.push(Err(e));
                    }
                }
            }
            if !batch.is_empty() {
                tx.batch_execute("RELEASE SAVEPOINT job")?;
            }
            Ok(out)
        })
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        f(conn.client()?)
    }
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(v: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(v).map_err(|e| Error::Corrupt(e.to_string()))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn append_audit_tx(tx: &mut Transaction<'_>, a: &NewAudit) -> Result<AuditEntry> {
    // Already held by `with_tx`; taken again (it stacks) so this never appends unlocked.
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
    append_audit_locked(tx, a, &mut None)
}

/// The head of the audit chain as this transaction left it: `(seq, hash)`, read once.
type Head = Option<(i64, String)>;

/// Appends under the write lock the caller holds. `head` is the chain's head if already
/// known in this transaction (it is read otherwise) and is advanced; each statement is one
/// round trip (typed, unprepared).
fn append_audit_locked(
    tx: &mut Transaction<'_>,
    a: &NewAudit,
    head: &mut Head,
) -> Result<AuditEntry> {
    let (seq, prev_hash) = match head.take() {
        Some((s, h)) => (s + 1, h),
        None => match tx.query_typed_opt(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )? {
            Some(r) => (r.try_get::<_, i64>(0)? + 1, r.try_get::<_, String>(1)?),
            None => (1, GENESIS_HASH.to_string()),
        },
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
    tx.query_typed(
        "INSERT INTO audit_log (seq, time, actor, action, target, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            (&seq, Type::INT8),
            (&time, Type::TEXT),
            (&a.actor, Type::TEXT),
            (&a.action, Type::TEXT),
            (&a.target, Type::TEXT),
            (&details, Type::TEXT),
            (&prev_hash, Type::TEXT),
            (&hash, Type::TEXT),
        ],
    )
    .map_err(|e| match pg(e) {
        Error::Duplicate(m) => Error::Database(format!("audit log append raced: {m}")),
        other => other,
    })?;
    *head = Some((seq, hash.clone()));
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

/// An issuance that commits nothing but its row and audit entry.
fn is_plain(x: &IssueExtras) -> bool {
    x.consume_token.is_none() && x.supersede.is_none() && x.supersede_audit.is_none()
}

/// A certificate row's values, owned, in `CERT_COLS` order (plus `pem`).
struct CertValues<'a> {
    rec: &'a CertRecord,
    sans: String,
    labels: String,
    nb: i64,
    na: i64,
    revoked_at: Option<i64>,
    rec_at: i64,
    status: &'static str,
    source: &'static str,
}

/// `($1, …, $n), ($n+1, …)`: `rows` tuples of `cols` placeholders.
fn placeholders(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * cols + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// Inserts a batch of plain issuances with one statement per table, under the write lock
/// the caller holds; `head` is the audit chain's head (read if unknown) and is advanced.
fn insert_plain_batch(
    tx: &mut Transaction<'_>,
    batch: &[Issuance],
    head: &mut Head,
) -> Result<Vec<AuditEntry>> {
    let mut certs = Vec::with_capacity(batch.len());
    for j in batch {
        let rec = &j.rec;
        certs.push(CertValues {
            rec,
            sans: serde_json::to_string(&rec.sans).map_err(|e| Error::Database(e.to_string()))?,
            labels: serde_json::to_string(&rec.labels)
                .map_err(|e| Error::Database(e.to_string()))?,
            nb: ts(rec.not_before),
            na: ts(rec.not_after),
            revoked_at: rec.revoked_at.map(ts),
            rec_at: ts(rec.recorded_at),
            status: rec.status.as_str(),
            source: rec.source.as_str(),
        });
    }
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::with_capacity(certs.len() * 19);
    for c in &certs {
        let r = c.rec;
        params.extend_from_slice(&[
            (&r.fingerprint as &(dyn ToSql + Sync), Type::TEXT),
            (&r.serial, Type::TEXT),
            (&r.subject, Type::TEXT),
            (&r.issuer, Type::TEXT),
            (&r.common_name, Type::TEXT),
            (&c.sans, Type::TEXT),
            (&r.profile, Type::TEXT),
            (&r.key_type, Type::TEXT),
            (&c.nb, Type::INT8),
            (&c.na, Type::INT8),
            (&r.owner, Type::TEXT),
            (&c.labels, Type::TEXT),
            (&r.location, Type::TEXT),
            (&c.status, Type::TEXT),
            (&c.revoked_at, Type::INT8),
            (&r.revocation_reason, Type::TEXT),
            (&c.source, Type::TEXT),
            (&c.rec_at, Type::INT8),
            (&r.pem, Type::TEXT),
        ]);
    }
    tx.query_typed(
        &format!(
            "INSERT INTO certificates ({CERT_COLS}, pem) VALUES {}",
            placeholders(certs.len(), 19)
        ),
        &params,
    )
    .map_err(pg)?;
    let (mut seq, mut prev_hash) = match head.take() {
        Some((s, h)) => (s, h),
        None => match tx.query_typed_opt(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )? {
            Some(r) => (r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?),
            None => (0, GENESIS_HASH.to_string()),
        },
    };
    let mut audits = Vec::with_capacity(batch.len());
    for j in batch {
        let a = &j.audit;
        seq += 1;
        let time = a
            .time
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|e| Error::Database(e.to_string()))?;
        let details = a.details.to_string();
        let hash = chain_hash(
            seq, &time, &a.actor, &a.action, &a.target, &details, &prev_hash,
        );
        audits.push(AuditEntry {
            seq,
            time,
            actor: a.actor.clone(),
            action: a.action.clone(),
            target: a.target.clone(),
            details,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::with_capacity(audits.len() * 8);
    for e in &audits {
        params.extend_from_slice(&[
            (&e.seq as &(dyn ToSql + Sync), Type::INT8),
            (&e.time, Type::TEXT),
            (&e.actor, Type::TEXT),
            (&e.action, Type::TEXT),
            (&e.target, Type::TEXT),
            (&e.details, Type::TEXT),
            (&e.prev_hash, Type::TEXT),
            (&e.hash, Type::TEXT),
        ]);
    }
    tx.query_typed(
        &format!(
            "INSERT INTO audit_log (seq, time, actor, action, target, details, prev_hash, hash) VALUES {}",
            placeholders(audits.len(), 8)
        ),
        &params,
    )
    .map_err(pg)?;
    *head = Some((seq, prev_hash));
    Ok(audits)
}

const CERT_COLS: &str = "fingerprint, serial, subject, issuer, common_name, sans, profile, \
    key_type, not_before, not_after, owner, labels, location, status, revoked_at, \
    revocation_reason, source, recorded_at";

fn row_to_record(r: &Row, with_pem: bool) -> Result<CertRecord> {
    let sans: String = r.try_get(5)?;
    let labels: String = r.try_get(11)?;
    let status: String = r.try_get(13)?;
    let source: String = r.try_get(16)?;
    let revoked_at: Option<i64> = r.try_get(14)?;
    Ok(CertRecord {
        fingerprint: r.try_get(0)?,
        serial: r.try_get(1)?,
        subject: r.try_get(2)?,
        issuer: r.try_get(3)?,
        common_name: r.try_get(4)?,
        sans: serde_json::from_str(&sans).map_err(|e| Error::Corrupt(e.to_string()))?,
        profile: r.try_get(6)?,
        key_type: r.try_get(7)?,
        not_before: from_ts(r.try_get(8)?)?,
        not_after: from_ts(r.try_get(9)?)?,
        owner: r.try_get(10)?,
        labels: serde_json::from_str(&labels).map_err(|e| Error::Corrupt(e.to_string()))?,
        location: r.try_get(12)?,
        status: CertStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("status {status:?}")))?,
        revoked_at: revoked_at.map(from_ts).transpose()?,
        revocation_reason: r.try_get(15)?,
        source: CertSource::parse(&source)
            .ok_or_else(|| Error::Corrupt(format!("source {source:?}")))?,
        recorded_at: from_ts(r.try_get(17)?)?,
        pem: if with_pem {
            r.try_get(18)?
        } else {
            String::new()
        },
    })
}

fn find_in<C: GenericClient>(c: &mut C, key: &str) -> Result<CertRecord> {
    let k = key.trim().to_ascii_lowercase().replace(':', "");
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::NotFound(key.to_string()));
    }
    // Serials are kept without leading zero bytes (an encoder may print them); fingerprints
    // are compared whole: one in 256 of them starts with "00".
    let serial = k.trim_start_matches("00").to_string();
    let exact =
        format!("SELECT {CERT_COLS}, pem FROM certificates WHERE serial = $2 OR fingerprint = $1");
    let mut rows = c
        .query(&exact, &[&k, &serial])?
        .iter()
        .map(|r| row_to_record(r, true))
        .collect::<Result<Vec<_>>>()?;
    if rows.is_empty() && k.len() >= 8 {
        // hex digits only (checked above), so no LIKE metacharacters
        let like = format!("{k}%");
        let serial_like = format!("{serial}%");
        let sql = format!(
            "SELECT {CERT_COLS}, pem FROM certificates
             WHERE serial LIKE $2 OR fingerprint LIKE $1 LIMIT 2"
        );
        rows = c
            .query(&sql, &[&like, &serial_like])?
            .iter()
            .map(|r| row_to_record(r, true))
            .collect::<Result<Vec<_>>>()?;
    }
    match rows.len() {
        0 => Err(Error::NotFound(key.to_string())),
        1 => Ok(rows.remove(0)),
        _ => Err(Error::Ambiguous(key.to_string())),
    }
}

fn insert_cert_tx(tx: &mut Transaction<'_>, rec: &CertRecord) -> Result<()> {
    let sans = serde_json::to_string(&rec.sans).map_err(|e| Error::Database(e.to_string()))?;
    let labels = serde_json::to_string(&rec.labels).map_err(|e| Error::Database(e.to_string()))?;
    let (nb, na, rec_at, revoked_at) = (
        ts(rec.not_before),
        ts(rec.not_after),
        ts(rec.recorded_at),
        rec.revoked_at.map(ts),
    );
    let (status, source) = (rec.status.as_str(), rec.source.as_str());
    let res = tx.query_typed(
        &format!(
            "INSERT INTO certificates ({CERT_COLS}, pem) VALUES
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ),
        &[
            (&rec.fingerprint, Type::TEXT),
            (&rec.serial, Type::TEXT),
            (&rec.subject, Type::TEXT),
            (&rec.issuer, Type::TEXT),
            (&rec.common_name, Type::TEXT),
            (&sans, Type::TEXT),
            (&rec.profile, Type::TEXT),
            (&rec.key_type, Type::TEXT),
            (&nb, Type::INT8),
            (&na, Type::INT8),
            (&rec.owner, Type::TEXT),
            (&labels, Type::TEXT),
            (&rec.location, Type::TEXT),
            (&status, Type::TEXT),
            (&revoked_at, Type::INT8),
            (&rec.revocation_reason, Type::TEXT),
            (&source, Type::TEXT),
            (&rec_at, Type::INT8),
            (&rec.pem, Type::TEXT),
        ],
    );
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(Error::Duplicate(format!(
            "{} (serial {})",
            rec.fingerprint, rec.serial
        ))),
        Err(e) => Err(pg(e)),
    }
}

fn bump_revocations_tx(tx: &mut Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ($1, 1)
         ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
        &[&REVOCATION_COUNTER],
    )?;
    Ok(())
}

/// Marks the token used by `fingerprint` if it is unused and unexpired at `now`; otherwise
/// says why not. The conditional UPDATE decides, so two racing consumers cannot both win.
fn consume_token_tx(
    tx: &mut Transaction<'_>,
    hash: &str,
    fingerprint: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let now_ts = ts(now);
    let won = tx.query_opt(
        "UPDATE tokens SET used_at = $1, used_by = $2
         WHERE hash = $3 AND used_at IS NULL AND expires_at > $1 RETURNING hash",
        &[&now_ts, &fingerprint, &hash],
    )?;
    if won.is_some() {
        return Ok(());
    }
    let row = tx.query_opt(
        "SELECT expires_at, used_at FROM tokens WHERE hash = $1",
        &[&hash],
    )?;
    let Some(row) = row else {
        return Err(Error::TokenUnknown);
    };
    let expires_at: i64 = row.try_get(0)?;
    let used_at: Option<i64> = row.try_get(1)?;
    if let Some(u) = used_at {
        return Err(Error::TokenUsed(rfc3339(from_ts(u)?)));
    }
    if expires_at <= now_ts {
        return Err(Error::TokenExpired(rfc3339(from_ts(expires_at)?)));
    }
    Err(Error::TokenUsed(rfc3339(now)))
}

/// One issuance inside an open transaction: token, supersession, row, audit entries.
fn issuance_tx(
    tx: &mut Transaction<'_>,
    rec: &CertRecord,
    audit: &NewAudit,
    extras: &IssueExtras,
    head: &mut Head,
) -> Result<AuditEntry> {
    if let Some(hash) = &extras.consume_token {
        consume_token_tx(tx, hash, &rec.fingerprint, extras.now)?;
    }
    if let Some(old) = &extras.supersede {
        let n = tx.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = $1,
             revocation_reason = 'superseded' WHERE fingerprint = $2 AND status = 'active'",
            &[&ts(extras.now), old],
        )?;
        if n != 1 {
            return Err(Error::AlreadyRevoked(old.clone()));
        }
        bump_revocations_tx(tx)?;
    }
    insert_cert_tx(tx, rec)?;
    let entry = append_audit_locked(tx, audit, head)?;
    if let Some(a) = &extras.supersede_audit {
        append_audit_locked(tx, a, head)?;
    }
    Ok(entry)
}

fn glob_match(pattern: &str, value: &str) -> bool {
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

impl Store for PostgresStore {
    fn insert_certificate(&self, rec: &CertRecord, audit: &NewAudit) -> Result<AuditEntry> {
        self.record_issuance(rec, audit, &IssueExtras::none(rec.recorded_at))
    }

    fn find_certificate(&self, key: &str) -> Result<CertRecord> {
        self.with_conn(|c| find_in(c, key))
    }

    fn list_certificates(&self, q: &CertQuery) -> Result<Page<CertRecord>> {
        let now = ts(q.now.unwrap_or_else(OffsetDateTime::now_utc));
        let mut sql = format!("SELECT {CERT_COLS} FROM certificates WHERE 1=1");
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(before) = q.expiring_before {
            push(&mut sql, " AND not_after <= ?", Box::new(ts(before)));
            push(&mut sql, " AND not_after > ?", Box::new(now));
            sql.push_str(" AND status = 'active'");
        }
        if q.expired {
            push(&mut sql, " AND not_after <= ?", Box::new(now));
        }
        match q.status.as_deref() {
            Some("revoked") => sql.push_str(" AND status = 'revoked'"),
            Some("active") => push(
                &mut sql,
                " AND status = 'active' AND not_after > ?",
                Box::new(now),
            ),
            Some("expired") => push(
                &mut sql,
                " AND status = 'active' AND not_after <= ?",
                Box::new(now),
            ),
            _ => {}
        }
        if let Some(o) = &q.owner {
            push(&mut sql, " AND owner = ?", Box::new(o.clone()));
        }
        if let Some(p) = &q.profile {
            push(&mut sql, " AND profile = ?", Box::new(p.clone()));
        }
        sql.push_str(" ORDER BY recorded_at DESC, fingerprint");
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|b| b.as_ref()).collect();
        let rows = self.with_conn(|c| Ok(c.query(&sql, &refs)?))?;
        let mut items = Vec::new();
        for r in &rows {
            let r = row_to_record(r, false)?;
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
    }

    fn revoke(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        reason: &str,
        audit: &NewAudit,
    ) -> Result<CertRecord> {
        self.with_tx(|tx| {
            let mut rec = find_in(tx, fingerprint)?;
            let n = tx.execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2
                 WHERE fingerprint = $3 AND status = 'active'",
                &[&ts(at), &reason, &rec.fingerprint],
            )?;
            if n != 1 {
                return Err(Error::AlreadyRevoked(rec.serial));
            }
            bump_revocations_tx(tx)?;
            append_audit_tx(tx, audit)?;
            rec.status = CertStatus::Revoked;
            rec.revoked_at = Some(at);
            rec.revocation_reason = Some(reason.to_string());
            Ok(rec)
        })
    }

    fn revoked_by_issuer(&self, issuer: &str, since: OffsetDateTime) -> Result<Vec<CertRecord>> {
        let sql = format!(
            "SELECT {CERT_COLS} FROM certificates
             WHERE status = 'revoked' AND issuer = $1 AND not_after > $2 ORDER BY revoked_at"
        );
        self.with_conn(|c| {
            c.query(&sql, &[&issuer, &ts(since)])?
                .iter()
                .map(|r| row_to_record(r, false))
                .collect()
        })
    }

    fn next_crl_number(&self, audit: &NewAudit) -> Result<u64> {
        self.with_tx(|tx| {
            let row = tx.query_one(
                "INSERT INTO counters (name, value) VALUES ('crl_number', 1)
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
                &[],
            )?;
            let n: i64 = row.try_get(0)?;
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
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(|c| {
            c.query(
                "SELECT seq, time, actor, action, target, details, prev_hash, hash
                 FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&from, &lim],
            )?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    seq: r.try_get(0)?,
                    time: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    details: r.try_get(5)?,
                    prev_hash: r.try_get(6)?,
                    hash: r.try_get(7)?,
                })
            })
            .collect()
        })
    }

    fn count_by_status(&self) -> Result<Vec<(String, u64)>> {
        let now = ts(OffsetDateTime::now_utc());
        self.with_conn(|c| {
            c.query(
                "SELECT CASE WHEN status = 'revoked' THEN 'revoked'
                             WHEN not_after <= $1 THEN 'expired' ELSE 'active' END AS s,
                        COUNT(*) FROM certificates GROUP BY s ORDER BY s",
                &[&now],
            )?
            .iter()
            .map(|r| {
                let s: String = r.try_get(0)?;
                let n: i64 = r.try_get(1)?;
                Ok((s, n.max(0) as u64))
            })
            .collect()
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
            || Ok(()),
            |_, batch| self.commit_batch(batch),
        )
    }

    fn record_issuances(&self, batch: &[Issuance]) -> Result<Vec<Result<AuditEntry>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.commit_batch(batch)
    }

    fn insert_token(&self, t: &TokenRecord, audit: &NewAudit) -> Result<()> {
        let sans = serde_json::to_string(&t.sans).map_err(|e| Error::Database(e.to_string()))?;
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO tokens (hash, sans, profile, owner, cert_ttl, created_by, created_at,
                 expires_at, used_at, used_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)",
                &[
                    &t.hash,
                    &sans,
                    &t.profile,
                    &t.owner,
                    &t.cert_ttl,
                    &t.created_by,
                    &ts(t.created_at),
                    &ts(t.expires_at),
                ],
            )?;
            append_audit_tx(tx, audit)?;
            Ok(())
        })
    }

    fn find_token(&self, hash: &str) -> Result<TokenRecord> {
        self.with_conn(|c| {
            let row = c.query_opt(
                "SELECT hash, sans, profile, owner, cert_ttl, created_by, created_at,
                 expires_at, used_at, used_by FROM tokens WHERE hash = $1",
                &[&hash],
            )?;
            let Some(r) = row else {
                return Err(Error::TokenUnknown);
            };
            let sans: String = r.try_get(1)?;
            let used_at: Option<i64> = r.try_get(8)?;
            Ok(TokenRecord {
                hash: r.try_get(0)?,
                sans: serde_json::from_str(&sans).map_err(|e| Error::Corrupt(e.to_string()))?,
                profile: r.try_get(2)?,
                owner: r.try_get(3)?,
                cert_ttl: r.try_get(4)?,
                created_by: r.try_get(5)?,
                created_at: from_ts(r.try_get(6)?)?,
                expires_at: from_ts(r.try_get(7)?)?,
                used_at: used_at.map(from_ts).transpose()?,
                used_by: r.try_get(9)?,
            })
        })
    }

    fn revocation_seq(&self) -> Result<u64> {
        self.with_conn(|c| {
            let row = c.query_opt(
                "SELECT value FROM counters WHERE name = $1",
                &[&REVOCATION_COUNTER],
            )?;
            let v: i64 = match row {
                Some(r) => r.try_get(0)?,
                None => 0,
            };
            Ok(v.max(0) as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    //! Against a real PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication):
    //! each test makes its own database and drops it at the end, even when it fails.
    use super::*;
    use crate::conformance;

    const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
    const START_HINT: &str = "PostgreSQL must be running on 127.0.0.1:5432 with trust \
        authentication for user postgres: start it with \
        `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
        (scripts/test-all does)";

    /// A fresh database `twoway_test_<random>`, dropped on drop.
    struct TestDb {
        name: String,
    }

    impl TestDb {
        fn new() -> TestDb {
            let mut admin = Client::connect(ADMIN_URL, NoTls)
                .unwrap_or_else(|e| panic!("cannot reach PostgreSQL ({e}). {START_HINT}"));
            let name = format!("twoway_test_{:016x}", rand::random::<u64>());
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
            TestDb { name }
        }

        fn url(&self) -> String {
            format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            if let Ok(mut admin) = Client::connect(ADMIN_URL, NoTls) {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    #[test]
    fn insert_find_revoke_list_and_chain() {
        let db = TestDb::new();
        let s = PostgresStore::connect(&db.url()).unwrap();
        conformance::insert_find_revoke_list_and_chain(&s);
    }

    #[test]
    fn tokens_and_supersession() {
        let db = TestDb::new();
        let s = PostgresStore::connect(&db.url()).unwrap();
        conformance::tokens_and_supersession(&s);
    }

    #[test]
    fn leading_zero_fingerprints() {
        let db = TestDb::new();
        let s = PostgresStore::connect(&db.url()).unwrap();
        conformance::leading_zero_fingerprints(&s);
    }

    #[test]
    fn plain_batches() {
        let db = TestDb::new();
        let s = PostgresStore::connect(&db.url()).unwrap();
        conformance::plain_batches(&s);
    }

    #[test]
    fn a_failing_issuance_in_the_middle_of_a_batch_fails_alone() {
        let db = TestDb::new();
        let s = PostgresStore::connect(&db.url()).unwrap();
        conformance::batch_with_failures(&s);
    }

    #[test]
    fn group_commit() {
        let db = TestDb::new();
        let s = PostgresStore::connect(&db.url()).unwrap();
        conformance::group_commit(&s);
    }

    #[test]
    fn concurrent_writers_from_two_pools() {
        let db = TestDb::new();
        // two stores, two pools: as two server processes would have
        let a = PostgresStore::connect_with(&db.url(), 2).unwrap();
        let b = PostgresStore::connect_with(&db.url(), 2).unwrap();
        conformance::concurrent_writers(&a, &b);
    }

    #[test]
    fn reopening_applies_the_schema_idempotently_and_bad_urls_are_errors() {
        let db = TestDb::new();
        let s = PostgresStore::connect(&db.url()).unwrap();
        s.append_audit(&conformance::audit("x")).unwrap();
        drop(s);
        let s = PostgresStore::connect(&db.url()).unwrap();
        assert_eq!(s.audit_entries(1, 10).unwrap().len(), 1);
        assert!(matches!(
            PostgresStore::connect("postgres://postgres@127.0.0.1:5432/twoway_test_absent"),
            Err(Error::Database(_))
        ));
        assert!(matches!(
            PostgresStore::connect("postgres://[bad"),
            Err(Error::Database(_))
        ));
    }
}
