//! The embedded SQLite store: its connections, its dialect and its driver calls. The
//! statements and everything they mean are the shared core's (`query.rs`, `write.rs`).

use crate::db::{Arg, Db, Dialect, Engine, OnRow, Row, Shared, Value};
use crate::schema::migrate;
use crate::{Error, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Read connections a file-backed store keeps besides its writer.
const READERS: usize = 4;

/// Page cache per read connection, as SQLite's negative KiB count (16 MiB).
const CACHE_KIB: i64 = -16 * 1024;

/// The writer's page cache (256 MiB, allocated as it fills): every insert touches one
/// page of the fingerprint index at a random place, and at ten million certificates that
/// index is about 800 MB; the more of it stays here, the fewer reads an issuance waits for.
const WRITER_CACHE_KIB: i64 = -256 * 1024;

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// WAL frames (pages, 4 KiB) above which the writer restarts the WAL itself (about 128
/// MiB): under a steady load every passive checkpoint ends with new commits after it, so
/// the WAL is never found fully copied and would otherwise only grow.
const WAL_CAP_FRAMES: i64 = 32_768;

/// Prepared statements kept per connection: the write path's dozen plus listing shapes.
const STATEMENTS: usize = 64;

/// SQLite's SQL where engines differ. `LIKE` folds ASCII case only (SQLite's default).
static DIALECT: Dialect = Dialect {
    contains: "instr({}, ?) > 0",
    like_ignore_ascii_case: "{} LIKE ? ESCAPE '!'",
    // in-process, a statement costs no round trip: one savepoint per issuance measured
    // the same as multi-row INSERTs
    multi_row_batches: false,
};

/// The embedded inventory: one SQLite file in WAL mode with `synchronous=FULL`.
///
/// One writer connection commits; concurrent issuances share its transactions (group
/// commit, see [`crate::group`]). Reads go through a few separate connections, which WAL
/// lets run while the writer commits, so a lookup never waits for a flush.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    /// Copies the WAL into the database off the commit path (none in memory).
    checkpointer: Option<Checkpointer>,
    /// Empty for an in-memory store (its data lives in the writer's connection only).
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    shared: Shared,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// The writer connection and whether its commits flush (`synchronous=FULL`, the
/// inventory's) or not (`NORMAL`, for [`Engine::write_ephemeral`]): the setting is switched
/// only when the kind of transaction changes, and a durable transaction never starts
/// before FULL is back in force.
struct Writer {
    conn: Connection,
    flushes: bool,
}

fn poisoned<T>(_: T) -> Error {
    Error::database("lock poisoned")
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
        // A page cache that holds much of the indexes of a large inventory. Checkpoints
        // run on their own connection and thread ([`Checkpointer`]), not in the commit
        // that crossed the WAL threshold: at ten million certificates copying a few
        // thousand pages to random places of a 20 GB file and flushing it stalled that
        // commit, and every issuance queued behind it, for tens of milliseconds.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // a WAL that grew under load is cut back to 64 MiB when it starts over
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        // Savepoint journals (one per job of a group commit) in memory, not in a temp file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(10))?;
            r.pragma_update(None, "cache_size", CACHE_KIB)?;
            r.set_prepared_statement_cache_capacity(STATEMENTS);
            readers.push(Mutex::new(r));
        }
        let checkpointer = Checkpointer::start(path)?;
        let store = SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                flushes: true,
            }),
            checkpointer: Some(checkpointer),
            readers,
            next_reader: AtomicUsize::new(0),
            shared: Shared::new(&DIALECT),
        };
        store.write(migrate)?;
        store.write(crate::counts::ensure)?;
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        let store = SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                flushes: true,
            }),
            checkpointer: None,
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            shared: Shared::new(&DIALECT),
        };
        store.write(migrate)?;
        store.write(crate::counts::ensure)?;
        Ok(store)
    }

    /// Runs a read on a free read connection (the writer's, in memory).
    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.readers.is_empty() {
            let w = self.writer.lock().map_err(poisoned)?;
            return f(&w.conn);
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

impl Engine for SqliteStore {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.with_conn(|c| f(&mut Lite(c)))
    }

    fn read_snapshot<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.with_conn(|c| {
            // a deferred transaction: its reads share the snapshot of the first one
            let tx = c.unchecked_transaction()?;
            let out = f(&mut Lite(&tx))?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.write_with(true, f)
    }

    fn write_ephemeral<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.write_with(false, f)
    }
}

impl SqliteStore {
    /// A write transaction on the writer connection; `flush`: its commit waits until the
    /// WAL is on disk (FULL), which also flushes every earlier NORMAL commit.
    fn write_with<T>(&self, flush: bool, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut w = self.writer.lock().map_err(poisoned)?;
        if w.flushes != flush {
            let mode = if flush { "FULL" } else { "NORMAL" };
            w.conn.pragma_update(None, "synchronous", mode)?;
            w.flushes = flush;
        }
        if let Some(c) = &self.checkpointer {
            if c.overgrown.swap(false, Ordering::Relaxed) {
                // copies what the passive checkpoints have not, then starts the WAL over
                let _: rusqlite::Result<(i64, i64, i64)> =
                    w.conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
            }
        }
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&mut Lite(&tx))?;
        tx.commit()?;
        if let Some(c) = &self.checkpointer {
            c.dirty.store(true, Ordering::Relaxed);
        }
        Ok(out)
    }
}

/// A thread with its own connection that runs passive checkpoints (`PRAGMA
/// wal_checkpoint(PASSIVE)`: copy the committed WAL frames into the database file and
/// flush it, without blocking the writer or the readers) every [`CHECKPOINT_EVERY`] after
/// a commit. The writer's automatic checkpoint is off. When a checkpoint finds the WAL
/// longer than [`WAL_CAP_FRAMES`], the writer's next transaction first restarts it (what is
/// left to copy is then only what came after the last passive checkpoint). Stops, and
/// closes its connection, when the store is dropped; the last connection to close
/// checkpoints whatever remains.
struct Checkpointer {
    dirty: Arc<AtomicBool>,
    overgrown: Arc<AtomicBool>,
    /// Dropping it stops the thread.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let dirty = Arc::new(AtomicBool::new(false));
        let overgrown = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (d, o) = (dirty.clone(), overgrown.clone());
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                if !d.swap(false, Ordering::Relaxed) {
                    continue;
                }
                let res: rusqlite::Result<(i64, i64, i64)> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
                match res {
                    Ok((_, frames, _)) => o.store(frames > WAL_CAP_FRAMES, Ordering::Relaxed),
                    // the next round tries again; the WAL keeps every commit meanwhile
                    Err(e) => tracing::warn!(error = %e, "inventory checkpoint failed"),
                }
            })
            .map_err(|e| Error::database(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            dirty,
            overgrown,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The driver calls, on a connection or a transaction (which derefs to one). Every
/// statement is prepared once per connection and cached.
struct Lite<'c>(&'c Connection);

impl Db for Lite<'_> {
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let n = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }

    fn each(&mut self, sql: &str, args: &[Arg<'_>], f: &mut OnRow<'_>) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            f(row)?;
        }
        Ok(())
    }

    fn batch(&mut self, stmts: &[&str]) -> Result<()> {
        for sql in stmts {
            self.0.prepare_cached(sql)?.execute([])?;
        }
        Ok(())
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Int(Some(v)) => ToSqlOutput::from(*v),
            Arg::Text(Some(t)) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Arg::Int(None) | Arg::Text(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl Row for rusqlite::Row<'_> {
    fn value(&self, i: usize) -> Result<Value> {
        match self.get_ref(i)? {
            ValueRef::Null => Ok(Value::Null),
            ValueRef::Integer(v) => Ok(Value::Int(v)),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|t| Value::Text(t.to_owned()))
                .map_err(|e| Error::Corrupt(format!("column {i}: {e}"))),
            other => Err(Error::Corrupt(format!(
                "column {i} holds {}, outside the schema",
                other.data_type()
            ))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{conformance, Store};

    crate::conformance::conformance_tests!(Box::new(SqliteStore::in_memory().unwrap()));

    /// Commits reach the database file itself without any commit running a checkpoint:
    /// the checkpoint thread copies them from the WAL shortly after, and a copy of the
    /// main file alone (no `-wal`) holds every row.
    #[test]
    fn the_checkpoint_thread_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        let store = SqliteStore::open(&path).unwrap();
        for i in 0..300 {
            let r = conformance::rec(&format!("ck{i:04}"), &format!("{i:04x}"));
            store
                .insert_certificate(&r, &conformance::audit("cert.issue"))
                .unwrap();
        }
        let copied = dir.path().join("copy.db");
        let mut rows = 0;
        for _ in 0..40 {
            std::thread::sleep(CHECKPOINT_EVERY);
            std::fs::copy(&path, &copied).unwrap();
            let raw = Connection::open(&copied).unwrap();
            // before any checkpoint the file does not even hold the schema
            rows = raw
                .query_row("SELECT COUNT(*) FROM certificates", [], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap_or(0);
            if rows == 300 {
                break;
            }
        }
        assert_eq!(rows, 300, "the database file alone lacks committed rows");
        drop(store);
        let again = SqliteStore::open(&path).unwrap();
        let total: u64 = again
            .count_by_status()
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(total, 300);
    }

    #[test]
    fn group_commit_and_a_failing_batch_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        conformance::group_commit(&SqliteStore::open(&dir.path().join("a.db")).unwrap());
        conformance::batch_with_failures(&SqliteStore::open(&dir.path().join("b.db")).unwrap());
    }

    /// The counts the overview and `ca show` read (status totals, issuances per day) are
    /// what counting the rows gives, and an inventory counted before the per-day counts
    /// existed gets them at its next open.
    #[test]
    fn counts_match_the_rows_and_days_are_counted_at_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        for i in 0..40i64 {
            let mut r = conformance::rec(&format!("cc{i:02}"), &format!("c{i:02}"));
            r.recorded_at = now - time::Duration::hours(23 * i);
            r.not_before = r.recorded_at;
            r.not_after = r.recorded_at + time::Duration::days(i % 5 * 3);
            store
                .insert_certificate(&r, &conformance::audit("cert.issue"))
                .unwrap();
            if i % 7 == 0 {
                store
                    .revoke(&r.fingerprint, now, "superseded", &conformance::audit("r"))
                    .unwrap();
            }
        }
        let stats = store.inventory_stats(now).unwrap();
        let t = now.unix_timestamp();
        let today = t.div_euclid(86_400);
        let raw = Connection::open(&path).unwrap();
        let count = |sql: &str| -> u64 { raw.query_row(sql, [t], |r| r.get(0)).unwrap() };
        let all = count("SELECT COUNT(*) FROM certificates WHERE ?1 = ?1");
        let revoked =
            count("SELECT COUNT(*) FROM certificates WHERE status = 'revoked' AND ?1 = ?1");
        let active =
            count("SELECT COUNT(*) FROM certificates WHERE status = 'active' AND not_after > ?1");
        assert!(active > 0 && revoked > 0 && all > active + revoked);
        let expected: Vec<(String, u64)> = vec![
            ("active".into(), active),
            ("expired".into(), all - active - revoked),
            ("revoked".into(), revoked),
        ];
        assert_eq!(stats.by_status, expected);
        assert_eq!(store.count_by_status().unwrap(), expected);
        let mut days = vec![0u64; 30];
        let mut stmt = raw
            .prepare("SELECT recorded_at / 86400, COUNT(*) FROM certificates GROUP BY 1")
            .unwrap();
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u64>(1)?)))
            .unwrap()
        {
            let (day, n) = row.unwrap();
            if let Some(slot) = usize::try_from(day - (today - 29))
                .ok()
                .and_then(|i| days.get_mut(i))
            {
                *slot = n;
            }
        }
        assert_eq!(stats.issued_per_day, days);
        let in_window = days.iter().sum::<u64>();
        assert!(
            in_window > 25 && in_window < 40,
            "23 h apart: 38 days in all"
        );
        drop(stmt);
        drop(store);

        // an inventory counted by a binary without the per-day counts
        raw.execute_batch(
            "DELETE FROM inventory_counts WHERE dim = 'day' OR (dim = 'meta' AND value = 'days')",
        )
        .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        let again = store.inventory_stats(now).unwrap();
        assert_eq!(again.issued_per_day, days);
        assert_eq!(again.by_status, expected);
        assert_eq!(again.by_profile, stats.by_profile);
    }

    #[test]
    fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("inventory.db")).unwrap();
        store
            .insert_certificate(&conformance::rec("aa00", "01"), &conformance::audit("a"))
            .unwrap();
        // a writer in the middle of a transaction (as a leader during its flush)
        let w = store.writer.lock().unwrap();
        w.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(store.find_certificate("aa00").unwrap().serial, "01");
        assert_eq!(store.revocation_seq().unwrap(), 0);
        w.conn.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn durable_writes_flush_after_ephemeral_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("inventory.db")).unwrap();
        let sync = |s: &SqliteStore| -> i64 {
            let w = s.writer.lock().unwrap();
            w.conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
        store.acme_new_nonce("n1", later).unwrap();
        assert_eq!(sync(&store), 1, "an ephemeral commit is NORMAL");
        store
            .insert_certificate(&conformance::rec("aa00", "01"), &conformance::audit("a"))
            .unwrap();
        assert_eq!(sync(&store), 2, "the inventory's commits are FULL again");
    }

    #[test]
    fn concurrent_writers_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        conformance::concurrent_writers(&a, &b);
    }

    /// What SQLite's planner does with `sql`: the detail of each step of its query plan.
    fn query_plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let unbound = vec![rusqlite::types::Null; st.parameter_count()];
        st.query_map(rusqlite::params_from_iter(unbound), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    /// Certificates `from..from + n` by SQL, one in four revoked (a minute after issuance,
    /// each valid a day), those revoked of issuers `CN=I0` (multiples of 8) and `CN=I1`
    /// (the others).
    fn fill(conn: &Connection, from: i64, n: i64) {
        conn.execute(
            "WITH RECURSIVE i(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?1 + ?2)
             INSERT INTO certificates (fingerprint, serial, subject, issuer, sans, profile,
                 key_type, not_before, not_after, labels, status, revoked_at,
                 revocation_reason, source, recorded_at, pem)
             SELECT printf('%064x', n), printf('%032x', n), 'CN=c' || n, 'CN=I' || (n / 4 % 2),
                 '[]', 'server', 'p256', n, n + 86400, '{}',
                 CASE WHEN n % 4 = 0 THEN 'revoked' ELSE 'active' END,
                 CASE WHEN n % 4 = 0 THEN n + 60 END,
                 CASE WHEN n % 4 = 0 THEN 'superseded' END, 'issued', n, '' FROM i",
            [from, n],
        )
        .unwrap();
    }

    const DELTA_PLAN: &str = "SEARCH certificates USING COVERING INDEX \
        certificates_revoked_since (issuer=? AND revoked_at>?)";
    const COMPLETE_PLAN: &str =
        "SEARCH certificates USING COVERING INDEX certificates_revoked (issuer=? AND not_after>?)";

    /// The delta CRL's query (the SQL the store runs) is answered from its covering index
    /// alone, searched by issuer and revocation time, without statistics (the store never
    /// runs ANALYZE): on a new inventory, empty and with a few thousand rows, and through a
    /// file's read connections. The complete CRL keeps its own index.
    #[test]
    fn the_delta_crl_query_reads_its_covering_index() {
        let store = SqliteStore::in_memory().unwrap();
        let plans = |store: &SqliteStore| {
            store
                .with_conn(|c| {
                    Ok((
                        query_plan(c, crate::query::CRL_DELTA_ENTRIES_SQL),
                        query_plan(c, crate::query::CRL_ENTRIES_SQL),
                    ))
                })
                .unwrap()
        };
        let want = (
            vec![DELTA_PLAN.to_string()],
            vec![COMPLETE_PLAN.to_string()],
        );
        assert_eq!(plans(&store), want, "empty");
        store
            .with_conn(|c| {
                fill(c, 0, 4000);
                Ok(())
            })
            .unwrap();
        assert_eq!(plans(&store), want, "4,000 certificates");
        let delta = store
            .crl_entries_revoked_since("CN=I0", at(3000), at(3000))
            .unwrap();
        // revoked at 3000 or later: certificates 2940 on, multiples of 8 for CN=I0
        let want_n = (2940..4000).filter(|n| n % 8 == 0).count();
        assert_eq!(delta.len(), want_n);
        assert!(delta.iter().all(|e| e.revoked_at >= at(3000)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(plans(&store), want, "a file, empty");
        fill(&Connection::open(&path).unwrap(), 0, 4000);
        assert_eq!(plans(&store), want, "a file of 4,000 certificates");
    }

    fn at(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// An inventory at version 2 (its index `certificates_revoked_at (issuer, revoked_at)`,
    /// which the planner passed over for `certificates_revoked`) gets version 3 at its next
    /// open: that index dropped, the covering one built from the rows already there (after
    /// `certificates_revoked`, which the planner's choice between the two depends on), and
    /// the delta CRL's query answered from it with the entries version 2 found.
    #[test]
    fn a_version_2_inventory_gets_the_covering_delta_crl_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY,
                 applied_at BIGINT NOT NULL, applied_by TEXT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 0, 'twoway'), (2, 0, 'twoway');",
        )
        .unwrap();
        for (_, sql) in crate::schema::MIGRATIONS.iter().filter(|(v, _)| *v <= 2) {
            raw.execute_batch(sql).unwrap();
        }
        fill(&raw, 0, 4000);
        let delta = crate::query::CRL_DELTA_ENTRIES_SQL;
        let mut st = raw.prepare(delta).unwrap();
        let mut v2_rows: Vec<String> = st
            .query_map(rusqlite::params!["CN=I1", 3000, 3000], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        v2_rows.sort();
        drop(st);
        drop(raw);

        let store = SqliteStore::open(&path).unwrap();
        let raw = Connection::open(&path).unwrap();
        let names: Vec<String> = raw
            .prepare(
                "SELECT name FROM sqlite_master WHERE name IN ('certificates_revoked',
                     'certificates_revoked_at', 'certificates_revoked_since') ORDER BY 1",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            names,
            ["certificates_revoked", "certificates_revoked_since"]
        );
        let versions: Vec<i64> = raw
            .prepare("SELECT version FROM schema_migrations ORDER BY 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(query_plan(&raw, delta), [DELTA_PLAN]);
        let mut entries: Vec<String> = store
            .crl_entries_revoked_since("CN=I1", at(3000), at(3000))
            .unwrap()
            .into_iter()
            .map(|e| e.serial)
            .collect();
        entries.sort();
        assert_eq!(entries.len(), (2940..4000).filter(|n| n % 8 == 4).count());
        assert_eq!(entries, v2_rows);
    }
}
