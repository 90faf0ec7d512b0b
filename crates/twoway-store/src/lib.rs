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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
#[cfg(test)]
mod conformance;
mod group;
mod model;
mod postgres;
pub mod schema;
mod sqlite;
mod token;

pub use audit::{chain_hash, verify_chain, AuditEntry, AuditProblem, NewAudit, GENESIS_HASH};
pub use group::answers as batch_answers;
pub use model::{CertQuery, CertRecord, CertSource, CertStatus, Page};
pub use postgres::{PostgresStore, DEFAULT_POOL_SIZE, WRITE_LOCK};
pub use sqlite::SqliteStore;
use time::OffsetDateTime;
pub use token::{Issuance, IssueExtras, TokenRecord};

/// Errors of the inventory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened, read or written.
    #[error("inventory database error: {0}")]
    Database(String),
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
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, msg)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Error::Duplicate(msg.clone().unwrap_or_default())
            }
            _ => Error::Database(e.to_string()),
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
}
