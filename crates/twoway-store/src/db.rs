//! The seam between the engine-neutral core and an engine: what a driver must do (run a
//! statement, stream a query's rows, run a few fixed statements) and the few pieces of SQL
//! that differ between engines ([`Dialect`]). Everything else — the statements themselves,
//! decoding, audit hashing, the token rule, filtering and paging — is written once, in
//! `records.rs`, `write.rs` and `query.rs`, and the [`crate::Store`] trait is implemented
//! once for every [`Engine`].
//!
//! SQL in the core uses `?` for each parameter, in order, and never a literal `?`
//! otherwise: SQLite takes that as it is, the PostgreSQL driver numbers them `$1`, `$2`…

use crate::group::Queue;
use crate::{Error, Result};
use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

/// One statement parameter: every column of the schema is BIGINT or TEXT.
#[derive(Clone, Debug)]
pub(crate) enum Arg<'a> {
    /// A BIGINT (NULL when `None`).
    Int(Option<i64>),
    /// A TEXT (NULL when `None`).
    Text(Option<Cow<'a, str>>),
}

impl<'a> Arg<'a> {
    pub(crate) fn int(v: i64) -> Self {
        Arg::Int(Some(v))
    }
    pub(crate) fn text(v: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
    pub(crate) fn owned(v: String) -> Self {
        Arg::Text(Some(Cow::Owned(v)))
    }
    pub(crate) fn opt_text(v: Option<&'a str>) -> Self {
        Arg::Text(v.map(Cow::Borrowed))
    }
}

/// One column's value as the driver returned it.
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// One row of a result, read by column index.
pub(crate) trait Row {
    /// Column `i` (an error when the row has no such column or a type outside the schema).
    fn value(&self, i: usize) -> Result<Value>;

    /// A BIGINT column (None for NULL).
    fn int(&self, i: usize) -> Result<Option<i64>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            Value::Text(_) => Err(Error::Corrupt(format!(
                "column {i} holds text, not a number"
            ))),
        }
    }

    /// A TEXT column (None for NULL).
    fn text(&self, i: usize) -> Result<Option<String>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v)),
            Value::Int(_) => Err(Error::Corrupt(format!(
                "column {i} holds a number, not text"
            ))),
        }
    }
}

/// What a query does with each row it returns, in order.
pub(crate) type OnRow<'f> = dyn FnMut(&dyn Row) -> Result<()> + 'f;

/// A connection, or a transaction on one: the driver calls an engine provides.
pub(crate) trait Db {
    /// Runs one statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;
    /// Runs one query and hands its rows to `f`, in order, as they arrive.
    fn each(&mut self, sql: &str, args: &[Arg<'_>], f: &mut OnRow<'_>) -> Result<()>;
    /// Runs parameterless statements in order (savepoints): one round trip where the
    /// engine has round trips.
    fn batch(&mut self, stmts: &[&str]) -> Result<()>;
}

/// The SQL that differs between engines. `{}` in a template stands for a column
/// expression; each template takes one `?`.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// True when the text parameter occurs in `{}` (case-sensitive, no wildcards).
    pub(crate) contains: &'static str,
    /// `{}` matches the LIKE pattern parameter with ASCII letters folded, `!` escaping
    /// `%`, `_` and `!`.
    pub(crate) like_ignore_ascii_case: &'static str,
    /// Record a batch of plain issuances with one multi-row INSERT per table (worth it
    /// where every statement is a round trip).
    pub(crate) multi_row_batches: bool,
}

/// What every engine keeps the same way: its dialect, the group-commit queue and the row
/// counter.
pub(crate) struct Shared {
    /// The engine's SQL differences.
    pub(crate) dialect: &'static Dialect,
    /// The queue through which concurrent issuances share a transaction.
    pub(crate) queue: Queue,
    /// Certificate rows fetched by this handle (see
    /// [`crate::Store::certificate_rows_read`]).
    pub(crate) rows_read: AtomicU64,
}

impl Shared {
    pub(crate) fn new(dialect: &'static Dialect) -> Self {
        Shared {
            dialect,
            queue: Queue::default(),
            rows_read: AtomicU64::new(0),
        }
    }
}

/// What an engine provides to get the whole [`crate::Store`]: connections and
/// transactions.
pub(crate) trait Engine: Send + Sync {
    /// The dialect and the state every engine keeps alike.
    fn shared(&self) -> &Shared;
    /// Runs `f` on a connection that sees committed state (no transaction).
    fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T>;
    /// Runs `f` in a read-only transaction, so that its queries see one snapshot.
    fn read_snapshot<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T>;
    /// Runs `f` in a transaction holding the engine's write lock (every writer of the
    /// database, in every process, is serialized); commits if `f` returns Ok.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T>;
    /// Runs `f` in a transaction that does not take the inventory's write lock (for
    /// writes to tables of their own that are safe by their statements alone, like the
    /// ACME state); commits if `f` returns Ok. Where the engine has one writer connection
    /// (SQLite) this is [`Engine::write`].
    fn write_unlocked<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.write(f)
    }
    /// [`Engine::write_unlocked`] for state a crash may lose (ACME nonces and pending
    /// objects): its commit does not wait for the flush to disk (SQLite: the writer at
    /// `synchronous=NORMAL` for this transaction; PostgreSQL: `synchronous_commit = off`).
    /// It is atomic and visible to every reader and replica once it returns, like any
    /// commit; a later durable commit flushes it too.
    fn write_ephemeral<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.write_unlocked(f)
    }
}
