//! twoway-store: the inventory of certificates, the hash-chained audit log and the CRL
//! counter, behind the [`Store`] trait.
//!
//! The CA crate talks only to the trait; [`SqliteStore`] is the embedded default (WAL,
//! `synchronous=FULL`, so a committed row survives a crash); [`PostgresStore`] is one
//! database shared by several replicas of the online CA. Every write that the CA makes
//! commits its certificate row and its audit entry in one transaction: there is never a
//! certificate without an audit entry or the other way round. Issuances that arrive together
//! share one transaction and one flush (group commit, see `group.rs`), each answered only
//! after that commit returned. Entry types: [`Store`],
//! [`CertRecord`], [`CertQuery`], [`NewAudit`], [`AuditEntry`].
//!
//! Layout: one engine-neutral core implements [`Store`] for every engine. `db.rs` is the
//! seam (what a driver does, the SQL that differs between engines); `records.rs` maps
//! rows to records; `write.rs` holds every write (the issuance transaction, the token rule,
//! audit chaining through `audit::next_entry`); `query.rs` every read (lookups, filtering
//! and paging in SQL, the SAN glob through `twoway-glob`); `group.rs` the group commit.
//! `acme.rs` keeps the ACME server's accounts, orders and nonces.
//! `sqlite/` and `postgres/` (with its pool in `postgres/pool.rs`) keep their connections,
//! their dialect and their driver calls only. `conformance.rs` is the one test suite both
//! engines run.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
mod audit;
#[cfg(test)]
mod conformance;
mod counts;
mod db;
mod group;
mod model;
mod postgres;
mod query;
mod records;
pub mod schema;
mod sqlite;
mod token;
mod views;
mod write;

pub use acme::{AcmeJob, AcmeObject, AcmeTx};
pub use audit::{chain_hash, verify_chain, AuditEntry, AuditProblem, NewAudit, GENESIS_HASH};
pub use group::answers as batch_answers;
pub use model::{CertQuery, CertRecord, CertSort, CertSource, CertStatus, Cursor, Page};
pub use postgres::{PostgresStore, DEFAULT_POOL_SIZE, WRITE_LOCK};
pub use sqlite::SqliteStore;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use time::OffsetDateTime;
pub use token::{Issuance, IssueExtras, TokenRecord};
pub use views::{AuditQuery, InventoryStats, OwnerSummary};

/// One entry of a CRL, as the inventory holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    /// Serial, lower-case hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why (`key-compromise`, …), if recorded.
    pub reason: Option<String>,
}

/// The error a database driver returned, kept whole as the source of
/// [`Error::Database`] (shared, so one failed transaction can fail every issuance of its
/// batch with the same error).
pub type DriverError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the inventory.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened, read or written. The driver's error, when there
    /// is one, is the source: print the chain (`{:#}` with anyhow) to see it.
    #[error("inventory database error{}{}", if context.is_empty() { "" } else { ": " }, context)]
    Database {
        /// What was being done, or what went wrong when no driver error is behind it.
        context: String,
        /// The driver's error.
        #[source]
        source: Option<DriverError>,
    },
    /// A certificate with this serial (from this issuer) or fingerprint is already recorded.
    #[error("certificate {0} is already in the inventory")]
    Duplicate(String),
    /// No certificate matches the serial or fingerprint.
    #[error("no certificate with serial or fingerprint {0:?} in the inventory: list them with `twoway cert list`")]
    NotFound(String),
    /// More than one certificate matches a short prefix.
    #[error(
        "{0:?} matches more than one certificate: give more digits of the serial or fingerprint"
    )]
    Ambiguous(String),
    /// The certificate is already revoked.
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(String),
    /// No token with this secret exists.
    #[error("unknown enrollment token: check it was copied whole, or make a new one with `twoway token create`")]
    TokenUnknown,
    /// The token expired before it was used.
    #[error("the enrollment token expired at {0}: make a new one with `twoway token create`")]
    TokenExpired(String),
    /// The token was used already (tokens are single-use).
    #[error("the enrollment token was already used (at {0}): tokens are single-use; make a new one with `twoway token create`")]
    TokenUsed(String),
    /// A stored row could not be decoded.
    #[error("corrupt inventory row: {0}")]
    Corrupt(String),
    /// The database was upgraded by a newer twoway: its schema is newer than this binary
    /// knows, and nothing was written to it.
    #[error(
        "the inventory's schema is version {found}, newer than this twoway knows (version \
         {known}): a newer twoway has upgraded it. Run that version or a later one, or restore \
         the copy made before the upgrade; nothing was changed"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
}

impl Error {
    /// A database error with no driver error behind it.
    pub fn database(context: impl Into<String>) -> Self {
        Error::Database {
            context: context.into(),
            source: None,
        }
    }

    /// A database error caused by `source`; `context` says what was being done (it may be
    /// empty when the source says it all).
    pub fn database_source(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Database {
            context: context.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, msg)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Error::Duplicate(msg.clone().unwrap_or_default())
            }
            _ => Error::database_source("", e),
        }
    }
}

/// Result with the store error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The persistence the CA needs. Implementations commit each method atomically.
pub trait Store: Send + Sync {
    /// Records a certificate and its audit entry in one transaction.
    fn insert_certificate(&self, rec: &CertRecord, audit: &NewAudit) -> Result<AuditEntry>;
    /// Finds one certificate by full or prefix (≥ 8 hex digits) serial or fingerprint.
    fn find_certificate(&self, key: &str) -> Result<CertRecord>;
    /// Lists certificates matching the query (newest first).
    fn list_certificates(&self, q: &CertQuery) -> Result<Page<CertRecord>>;
    /// Marks a certificate revoked and records the audit entry, atomically.
    fn revoke(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        reason: &str,
        audit: &NewAudit,
    ) -> Result<CertRecord>;
    /// Every revoked certificate issued by `issuer` (its subject) that has not yet expired
    /// before `since`.
    fn revoked_by_issuer(&self, issuer: &str, since: OffsetDateTime) -> Result<Vec<CertRecord>>;
    /// The CRL's entries of `issuer`: serial, revocation time and reason of every revoked
    /// certificate not yet expired at `since`, from an index of revoked certificates only.
    fn crl_entries(&self, issuer: &str, since: OffsetDateTime) -> Result<Vec<CrlEntry>>;
    /// A delta CRL's entries of `issuer`: those of [`Store::crl_entries`] revoked at or after
    /// `revoked_since`, found by revocation time (`certificates_revoked_since`), not by
    /// reading every revoked certificate.
    fn crl_entries_revoked_since(
        &self,
        issuer: &str,
        now: OffsetDateTime,
        revoked_since: OffsetDateTime,
    ) -> Result<Vec<CrlEntry>>;
    /// Takes the next CRL number and records the audit entry, atomically.
    fn next_crl_number(&self, audit: &NewAudit) -> Result<u64>;
    /// Appends one audit entry on its own.
    fn append_audit(&self, audit: &NewAudit) -> Result<AuditEntry>;
    /// Audit entries, oldest first, from sequence `from` on, at most `limit`.
    fn audit_entries(&self, from: i64, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Counts certificates per status (for summaries and metrics).
    fn count_by_status(&self) -> Result<Vec<(String, u64)>>;
    /// Records a certificate and its audit entry and, in the same transaction, consumes a
    /// token and/or supersedes the certificate it replaces (see [`IssueExtras`]).
    fn record_issuance(
        &self,
        rec: &CertRecord,
        audit: &NewAudit,
        extras: &IssueExtras,
    ) -> Result<AuditEntry>;
    /// Records several issuances in one transaction and one flush, each under its own
    /// savepoint: one result per issuance, in order, and an issuance that fails (a duplicate
    /// serial, a used token, a certificate already superseded) is rolled back alone. The
    /// outer error means the transaction failed and nothing was recorded. For callers that
    /// gather concurrent issuances themselves (the online CA's committer);
    /// [`Store::record_issuance`] does the gathering for callers that block.
    fn record_issuances(&self, batch: &[Issuance]) -> Result<Vec<Result<AuditEntry>>>;
    /// Stores a new token with its audit entry.
    fn insert_token(&self, token: &TokenRecord, audit: &NewAudit) -> Result<()>;
    /// Finds a token by the SHA-256 of its secret.
    fn find_token(&self, hash: &str) -> Result<TokenRecord>;
    /// A number that changes whenever any certificate is revoked (cache invalidation).
    fn revocation_seq(&self) -> Result<u64>;
    /// How many certificate rows this handle has read from the database since it was
    /// opened (listings, lookups, CRL building): what queries cost, for tests and
    /// metrics. A page of a listing without a SAN glob reads its `limit` rows, whatever
    /// the inventory's size.
    fn certificate_rows_read(&self) -> u64;

    /// What the dashboard's overview shows: counts by status and profile, the active
    /// certificates expiring within 24 h, 7 d and 30 d, and per day over the next 30 days,
    /// and the certificates recorded per day over the last 30 days.
    fn inventory_stats(&self, now: OffsetDateTime) -> Result<InventoryStats>;
    /// Certificates per owner (at most `limit` owners, most certificates first).
    fn owner_summary(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<OwnerSummary>>;
    /// The newest `limit` tokens (hashes only: secrets are never stored).
    fn list_tokens(&self, limit: usize) -> Result<Vec<TokenRecord>>;
    /// Withdraws an unused, unexpired token by its id (the first 16 or more hex digits of
    /// its hash): it expires now, with its audit entry, atomically. A used or expired
    /// token is refused ([`Error::TokenUsed`], [`Error::TokenExpired`]).
    fn withdraw_token(
        &self,
        id: &str,
        now: OffsetDateTime,
        audit: &NewAudit,
    ) -> Result<TokenRecord>;
    /// Certificates (PEM included) that expired at or before `before`, oldest expiry
    /// first, at most `limit`: what [`Store::prune_certificates`] would remove.
    fn expired_certificates(&self, before: OffsetDateTime, limit: usize)
        -> Result<Vec<CertRecord>>;
    /// Deletes the named certificates that expired at or before `before` (others are left
    /// alone), with `audit`, in one transaction; how many went. Their audit entries stay.
    fn prune_certificates(
        &self,
        fingerprints: &[String],
        before: OffsetDateTime,
        audit: &NewAudit,
    ) -> Result<u64>;
    /// Audit entries matching `q`, newest first.
    fn audit_search(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>>;

    /// Stores a new ACME nonce valid until `expires_at`. Nonces are state a crash may lose
    /// (a lost nonce is a `badNonce` the client retries): the commit does not wait for
    /// the flush to disk, as every `acme_*` call that says "ephemeral".
    fn acme_new_nonce(&self, nonce: &str, expires_at: OffsetDateTime) -> Result<()>;
    /// Takes an ACME nonce (single use): true when it was known and not expired at `now`.
    /// Of concurrent takers of one nonce (on any replica), exactly one gets true.
    /// Ephemeral.
    fn acme_use_nonce(&self, nonce: &str, now: OffsetDateTime) -> Result<bool>;
    /// What an authenticated ACME request needs of the store, in one ephemeral
    /// transaction: takes `used` (as [`Store::acme_use_nonce`]: true when it was fresh),
    /// stores `next` (valid until `next_expires`) for the answer, and reads the object
    /// `read` names (kind, id), the signing account.
    fn acme_exchange_nonce(
        &self,
        used: &str,
        next: &str,
        now: OffsetDateTime,
        next_expires: OffsetDateTime,
        read: Option<(&str, &str)>,
    ) -> Result<(bool, Option<AcmeObject>)>;
    /// Stores new ACME objects in one ephemeral transaction (pending orders, their
    /// authorizations and challenges); [`Error::Duplicate`] as [`Store::acme_insert`].
    fn acme_insert_ephemeral(&self, objs: &[AcmeObject]) -> Result<()>;
    /// Reads an ACME object, lets `f` change it (false: leave it) and stores the change by
    /// compare-and-set, re-reading when another writer won (a few times), all in one
    /// transaction; ephemeral unless `durable`. None when there is no such object, else
    /// the object as it is afterwards and whether `f` changed it.
    fn acme_modify(
        &self,
        kind: &str,
        id: &str,
        durable: bool,
        f: &mut dyn FnMut(&mut AcmeObject) -> bool,
    ) -> Result<Option<(AcmeObject, bool)>>;
    /// Runs ACME jobs in one ephemeral transaction (one commit, no flush), each as if
    /// under a savepoint of its own: a job that fails is rolled back alone and gets its
    /// error (the batch is then redone with savepoints, so a job may run twice: it must
    /// act on the transaction only).
    /// One result per job, in order; the outer error fails them all (nothing of the
    /// batch is committed). What the server's ACME state thread calls, so that concurrent
    /// requests share a transaction.
    fn acme_batch(&self, jobs: &mut [&mut acme::AcmeJob<'_>]) -> Result<Vec<Result<()>>>;
    /// Forgets expired nonces and ACME objects; how many rows went.
    fn acme_purge(&self, now: OffsetDateTime) -> Result<u64>;
    /// Stores a new ACME object; [`Error::Duplicate`] when its id or lookup key is taken.
    fn acme_insert(&self, obj: &AcmeObject) -> Result<()>;
    /// Replaces an ACME object's document, lookup key and expiry if its stored version is
    /// still `obj.version` (compare-and-set); false when it changed or is gone.
    fn acme_update(&self, obj: &AcmeObject) -> Result<bool>;
    /// An ACME object by kind and id.
    fn acme_get(&self, kind: &str, id: &str) -> Result<Option<AcmeObject>>;
    /// An ACME object by kind and lookup key (an account by its key's thumbprint).
    fn acme_find(&self, kind: &str, lookup: &str) -> Result<Option<AcmeObject>>;
    /// The ACME objects of a kind that belong to `parent` (an account's orders).
    fn acme_children(&self, kind: &str, parent: &str) -> Result<Vec<AcmeObject>>;
}

/// The one implementation of [`Store`]: every engine provides connections, transactions
/// and its dialect ([`db::Engine`]); the statements, decoding, audit chaining, the token
/// rule, filtering and paging are the shared core's (`query.rs`, `write.rs`).
impl<E: db::Engine> Store for E {
    fn insert_certificate(&self, rec: &CertRecord, audit: &NewAudit) -> Result<AuditEntry> {
        self.record_issuance(rec, audit, &IssueExtras::none(rec.recorded_at))
    }

    fn find_certificate(&self, key: &str) -> Result<CertRecord> {
        self.read(|db| query::find(db, &self.shared().rows_read, key))
    }

    fn list_certificates(&self, q: &CertQuery) -> Result<Page<CertRecord>> {
        self.read_snapshot(|db| query::list(db, self.shared().dialect, &self.shared().rows_read, q))
    }

    fn revoke(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        reason: &str,
        audit: &NewAudit,
    ) -> Result<CertRecord> {
        self.write(|db| write::revoke(db, &self.shared().rows_read, fingerprint, at, reason, audit))
    }

    fn revoked_by_issuer(&self, issuer: &str, since: OffsetDateTime) -> Result<Vec<CertRecord>> {
        self.read(|db| query::revoked_by_issuer(db, &self.shared().rows_read, issuer, since))
    }

    fn crl_entries(&self, issuer: &str, since: OffsetDateTime) -> Result<Vec<CrlEntry>> {
        self.read(|db| query::crl_entries(db, issuer, since, None))
    }

    fn crl_entries_revoked_since(
        &self,
        issuer: &str,
        now: OffsetDateTime,
        revoked_since: OffsetDateTime,
    ) -> Result<Vec<CrlEntry>> {
        self.read(|db| query::crl_entries(db, issuer, now, Some(revoked_since)))
    }

    fn next_crl_number(&self, audit: &NewAudit) -> Result<u64> {
        self.write(|db| write::next_crl_number(db, audit))
    }

    fn append_audit(&self, audit: &NewAudit) -> Result<AuditEntry> {
        self.write(|db| write::append_audit(db, audit, &mut None))
    }

    fn audit_entries(&self, from: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|db| query::audit_entries(db, from, limit))
    }

    fn count_by_status(&self) -> Result<Vec<(String, u64)>> {
        self.read(|db| query::count_by_status(db, OffsetDateTime::now_utc()))
    }

    fn record_issuance(
        &self,
        rec: &CertRecord,
        audit: &NewAudit,
        extras: &IssueExtras,
    ) -> Result<AuditEntry> {
        self.shared()
            .queue
            .submit(rec, audit, extras, |batch| self.record_issuances(batch))
    }

    fn record_issuances(&self, batch: &[Issuance]) -> Result<Vec<Result<AuditEntry>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|db| write::record_batch(db, self.shared().dialect, batch))
    }

    fn insert_token(&self, token: &TokenRecord, audit: &NewAudit) -> Result<()> {
        self.write(|db| write::insert_token(db, token, audit))
    }

    fn find_token(&self, hash: &str) -> Result<TokenRecord> {
        self.read(|db| query::find_token(db, hash))
    }

    fn revocation_seq(&self) -> Result<u64> {
        self.read(query::revocation_seq)
    }

    fn certificate_rows_read(&self) -> u64 {
        self.shared().rows_read.load(Ordering::Relaxed)
    }

    fn inventory_stats(&self, now: OffsetDateTime) -> Result<InventoryStats> {
        self.read_snapshot(|db| views::inventory_stats(db, now))
    }

    fn owner_summary(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<OwnerSummary>> {
        self.read(|db| views::owner_summary(db, now, limit))
    }

    fn list_tokens(&self, limit: usize) -> Result<Vec<TokenRecord>> {
        self.read(|db| views::list_tokens(db, limit))
    }

    fn withdraw_token(
        &self,
        id: &str,
        now: OffsetDateTime,
        audit: &NewAudit,
    ) -> Result<TokenRecord> {
        self.write(|db| views::withdraw_token(db, id, now, audit))
    }

    fn expired_certificates(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<CertRecord>> {
        self.read(|db| views::expired_records(db, before, limit))
    }

    fn prune_certificates(
        &self,
        fingerprints: &[String],
        before: OffsetDateTime,
        audit: &NewAudit,
    ) -> Result<u64> {
        self.write(|db| views::prune(db, fingerprints, before, audit))
    }

    fn audit_search(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.read(|db| views::audit_search(db, q))
    }

    fn acme_new_nonce(&self, nonce: &str, expires_at: OffsetDateTime) -> Result<()> {
        self.write_ephemeral(|db| acme::new_nonce(db, nonce, expires_at))
    }

    fn acme_use_nonce(&self, nonce: &str, now: OffsetDateTime) -> Result<bool> {
        self.write_ephemeral(|db| acme::use_nonce(db, nonce, now))
    }

    fn acme_exchange_nonce(
        &self,
        used: &str,
        next: &str,
        now: OffsetDateTime,
        next_expires: OffsetDateTime,
        read: Option<(&str, &str)>,
    ) -> Result<(bool, Option<AcmeObject>)> {
        self.write_ephemeral(|db| {
            let fresh = acme::use_nonce(db, used, now)?;
            acme::new_nonce(db, next, next_expires)?;
            let obj = match read {
                Some((kind, id)) => acme::get(db, kind, id)?,
                None => None,
            };
            Ok((fresh, obj))
        })
    }

    fn acme_insert_ephemeral(&self, objs: &[AcmeObject]) -> Result<()> {
        self.write_ephemeral(|db| objs.iter().try_for_each(|o| acme::insert(db, o)))
    }

    fn acme_modify(
        &self,
        kind: &str,
        id: &str,
        durable: bool,
        f: &mut dyn FnMut(&mut AcmeObject) -> bool,
    ) -> Result<Option<(AcmeObject, bool)>> {
        if durable {
            self.write_unlocked(|db| acme::modify(db, kind, id, f))
        } else {
            self.write_ephemeral(|db| acme::modify(db, kind, id, f))
        }
    }

    fn acme_batch(&self, jobs: &mut [&mut acme::AcmeJob<'_>]) -> Result<Vec<Result<()>>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = &self.shared().rows_read;
        // First without savepoints (a savepoint copies every page its job first changes,
        // and on PostgreSQL costs a round trip): when every job succeeds, as nearly all
        // do, that is the whole batch. A job that fails rolls the attempt back, and the
        // batch is redone with a savepoint per job, so that it fails alone. A lone job
        // needs no redo: the rollback was its own.
        let mut failed = None;
        let first = self.write_ephemeral(|db| {
            for (i, job) in jobs.iter_mut().enumerate() {
                if let Err(e) = job(&mut acme::AcmeTx::new(db, rows)) {
                    failed = Some(i);
                    return Err(e);
                }
            }
            Ok(())
        });
        match (first, failed) {
            (Ok(()), _) => Ok(jobs.iter().map(|_| Ok(())).collect()),
            (Err(e), Some(_)) if jobs.len() == 1 => Ok(vec![Err(e)]),
            (Err(_), Some(_)) => self.write_ephemeral(|db| acme::batch(db, rows, jobs)),
            (Err(e), None) => Err(e),
        }
    }

    fn acme_purge(&self, now: OffsetDateTime) -> Result<u64> {
        self.write_unlocked(|db| acme::purge(db, now))
    }

    fn acme_insert(&self, obj: &AcmeObject) -> Result<()> {
        self.write_unlocked(|db| acme::insert(db, obj))
    }

    fn acme_update(&self, obj: &AcmeObject) -> Result<bool> {
        self.write_unlocked(|db| acme::update(db, obj))
    }

    fn acme_get(&self, kind: &str, id: &str) -> Result<Option<AcmeObject>> {
        self.read(|db| acme::get(db, kind, id))
    }

    fn acme_find(&self, kind: &str, lookup: &str) -> Result<Option<AcmeObject>> {
        self.read(|db| acme::find(db, kind, lookup))
    }

    fn acme_children(&self, kind: &str, parent: &str) -> Result<Vec<AcmeObject>> {
        self.read(|db| acme::children(db, kind, parent))
    }
}
