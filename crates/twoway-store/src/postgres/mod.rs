//! The PostgreSQL store: one database shared by several replicas of the online CA. This
//! module holds the connections, the dialect and the driver calls; the statements and what
//! they mean are the shared core's (`query.rs`, `write.rs`).
//!
//! Same schema as SQLite ([`crate::schema::SCHEMA`]); timestamps are BIGINT seconds. Every
//! writing transaction first takes a transaction-scoped advisory lock ([`WRITE_LOCK`]):
//! writers from every process are serialized, so the audit chain stays linear (each append
//! reads the head and inserts the next entry under that lock), while readers (OCSP,
//! listing, the revocation counter) never wait. Serial and fingerprint uniqueness is also
//! enforced by constraints; token consumption and supersession are conditional updates
//! (`… WHERE used_at IS NULL`) whose row counts decide. Issuances from one process are
//! grouped (`crate::group`): one leader at a time takes the advisory lock for a whole
//! batch, so the batch pays for one lock and one commit. Statements go unprepared with
//! typed parameters (`query_typed`): one round trip each.

mod pool;

use crate::db::{Arg, Db, Dialect, Engine, OnRow, Row, Shared, Value};
use crate::schema::migrate;
use crate::{Error, Result};
use ::postgres::error::SqlState;
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::{ToSql, Type};
use ::postgres::{GenericClient, IsolationLevel};
use pool::Pool;
use std::str::FromStr;
use std::time::Duration;

/// The advisory lock key every writing transaction takes (ASCII "twoway").
pub const WRITE_LOCK: i64 = 0x7477_6f77_6179;

/// Connections kept per store unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// PostgreSQL's SQL where engines differ. `ILIKE` under the "C" collation folds ASCII
/// letters only, as SQLite's `LIKE` does, whatever the database's locale.
static DIALECT: Dialect = Dialect {
    contains: "strpos({}, ?) > 0",
    like_ignore_ascii_case: "{} COLLATE \"C\" ILIKE ? ESCAPE '!'",
    // each statement is a round trip: a batch of plain issuances in one INSERT per table
    // took issuance from 2.2k to 6.6k certificates/s
    multi_row_batches: true,
};

/// The inventory in a PostgreSQL database, through a small pool of connections.
pub struct PostgresStore {
    pool: Pool,
    shared: Shared,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("dbname", &self.pool.config.get_dbname())
            .field("pool_size", &self.pool.max)
            .finish_non_exhaustive()
    }
}

impl From<::postgres::Error> for Error {
    fn from(e: ::postgres::Error) -> Self {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            return Error::Duplicate(msg);
        }
        Error::database_source("", e)
    }
}

fn lock_sql() -> String {
    format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})")
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
            .map_err(|e| Error::database_source("bad PostgreSQL URL", e))?;
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
            pool: Pool::new(config, pool_size),
            shared: Shared::new(&DIALECT),
        };
        {
            let mut conn = store.pool.get()?;
            let mut tx = conn.client()?.transaction()?;
            tx.batch_execute(&lock_sql())?;
            migrate(&mut Pg(&mut tx))?;
            tx.commit()?;
        }
        store.write(crate::counts::ensure)?;
        Ok(store)
    }
}

impl Engine for PostgresStore {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut conn = self.pool.get()?;
        f(&mut Pg(conn.client()?))
    }

    fn read_snapshot<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut conn = self.pool.get()?;
        let mut tx = conn
            .client()?
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let out = f(&mut Pg(&mut tx))?;
        tx.commit()?;
        Ok(out)
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.client()?.transaction()?;
        tx.batch_execute(&lock_sql())?;
        let out = f(&mut Pg(&mut tx))?;
        tx.commit()?;
        Ok(out)
    }

    fn write_unlocked<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.client()?.transaction()?;
        let out = f(&mut Pg(&mut tx))?;
        tx.commit()?;
        Ok(out)
    }

    fn write_ephemeral<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.client()?.transaction()?;
        // visible to every replica at once; only the wait for the WAL flush is skipped
        tx.batch_execute("SET LOCAL synchronous_commit = off")?;
        let out = f(&mut Pg(&mut tx))?;
        tx.commit()?;
        Ok(out)
    }
}

/// The driver calls, on a client or a transaction.
struct Pg<'c, C: GenericClient>(&'c mut C);

/// `?` placeholders numbered as PostgreSQL wants them: `$1`, `$2`, …
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A parameter as the driver takes it, borrowing from an [`Arg`].
enum Param<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

fn params<'a>(args: &'a [Arg<'_>]) -> Vec<Param<'a>> {
    args.iter()
        .map(|a| match a {
            Arg::Int(v) => Param::Int(*v),
            Arg::Text(t) => Param::Text(t.as_deref()),
        })
        .collect()
}

fn typed<'p>(params: &'p [Param<'_>]) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(v) => (v as &(dyn ToSql + Sync), Type::INT8),
            Param::Text(v) => (v as &(dyn ToSql + Sync), Type::TEXT),
        })
        .collect()
}

impl<C: GenericClient> Db for Pg<'_, C> {
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let params = params(args);
        Ok(self.0.execute_typed(&numbered(sql), &typed(&params))?)
    }

    fn each(&mut self, sql: &str, args: &[Arg<'_>], f: &mut OnRow<'_>) -> Result<()> {
        let params = params(args);
        let mut rows = self.0.query_typed_raw(&numbered(sql), typed(&params))?;
        while let Some(row) = rows.next()? {
            f(&row)?;
        }
        Ok(())
    }

    fn batch(&mut self, stmts: &[&str]) -> Result<()> {
        Ok(self.0.batch_execute(&stmts.join("; "))?)
    }
}

impl Row for ::postgres::Row {
    fn value(&self, i: usize) -> Result<Value> {
        let column = self
            .columns()
            .get(i)
            .ok_or_else(|| Error::Corrupt(format!("no column {i}")))?;
        let value = match *column.type_() {
            Type::INT8 => self.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => self
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::TEXT | Type::VARCHAR => self.try_get::<_, Option<String>>(i)?.map(Value::Text),
            ref other => {
                return Err(Error::Corrupt(format!(
                    "column {i} has type {other}, outside the schema"
                )))
            }
        };
        Ok(value.unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    //! Against a real PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication):
    //! each test makes its own database and drops it at the end, even when it fails.
    use super::*;
    use crate::{conformance, Store};
    use ::postgres::{Client, NoTls};

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

    /// A store on a fresh database, dropped (store first, then database) at the end.
    struct Fresh {
        store: PostgresStore,
        _db: TestDb,
    }

    impl Fresh {
        fn new() -> Fresh {
            let db = TestDb::new();
            Fresh {
                store: PostgresStore::connect(&db.url()).unwrap(),
                _db: db,
            }
        }
    }

    impl std::ops::Deref for Fresh {
        type Target = PostgresStore;
        fn deref(&self) -> &PostgresStore {
            &self.store
        }
    }

    crate::conformance::conformance_tests!(Fresh::new());

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
            Err(Error::Database { .. })
        ));
        assert!(matches!(
            PostgresStore::connect("postgres://[bad"),
            Err(Error::Database { .. })
        ));
    }
}
