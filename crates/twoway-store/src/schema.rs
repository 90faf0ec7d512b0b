//! The one schema of the inventory, shared by every engine (SQLite and PostgreSQL): portable
//! SQL only (TEXT, BIGINT, no engine-specific types), brought up to date at open by
//! versioned, forward-only migrations ([`MIGRATIONS`], applied by [`migrate`]).
//!
//! `schema_migrations` records each version applied (with when, and by which twoway).
//! At open, in one write transaction (the engine's write lock: on PostgreSQL the advisory
//! lock every writer takes, so replicas upgrading at once apply each migration once), the
//! migrations above the recorded version run in order; a database whose version is above
//! what this binary knows is refused ([`crate::Error::SchemaTooNew`]) before anything is
//! written. Version 1 is the schema as it stood before versions were recorded: every
//! statement `IF NOT EXISTS`, so a database made before (no `schema_migrations`, version
//! 0) gains what it lacks and keeps everything it has (`tests/upgrade.rs` opens such a
//! database, checked in as SQL). Later versions are appended, never edited; a migration
//! that must rebuild data does it in SQL both engines run.
//!
//! Within version 1, statements are `IF NOT EXISTS`, so indexes added to it before
//! versioning arrived in existing inventories at their first open by a newer binary (a few
//! seconds per million certificates). Version 1 drops nothing, so a binary from before
//! versioning opening the same database finds what it expects. Version 3 drops version 2's
//! index, which only a version-2 binary read, and that binary refuses a version-3 database.
//!
//! Indexes and the queries they serve:
//! - `certificates_recorded (recorded_at)`: the listing order (newest first; the rows of
//!   one second are then sorted by fingerprint, a few at a time); a page is read from its
//!   front (`LIMIT`/`OFFSET`) instead of sorting the inventory. Recording times only grow,
//!   so an insert appends at the index's right edge; with the fingerprint in the key the
//!   index was five times larger and issuance wrote more pages.
//! - `certificates_status_not_after (status, not_after)`: `--expiring`, `--status`,
//!   `--expired`, the counts of `ca show` (read from the index alone) and the CRL's revoked
//!   certificates.
//! - `certificates_owner`, `certificates_serial`, `UNIQUE (issuer, serial)` and the primary
//!   key: owner filters and lookups by serial or fingerprint.
//! - `certificates_not_after (not_after)` is no longer created: the status index serves its
//!   queries. Inventories made before keep it (it costs a little per insert; it may be
//!   dropped by hand once no older binary opens the database, or it comes back).
//! - `certificates_status_recorded (status, recorded_at)`: a page of one status in
//!   listing order (the dashboard's "active" view) read from its front instead of
//!   sorting every match; counts keep using the expiry index.
//! - `certificates_profile (profile, recorded_at)`: the profile filter (the overview links
//!   each profile to it), its count and its pages in listing order.
//! - `inventory_counts`: certificates per profile and per owner (all, revoked), kept by
//!   the writing transactions (`counts.rs`): the overview's and the owners page's counts
//!   without grouping the inventory.
//! - `certificates_revoked`, partial (`WHERE status = 'revoked'`) and covering: the CRL's
//!   entries (serial, time, reason) of one issuer still unexpired, read from the index
//!   alone, whatever the number of active certificates.
//! - `certificates_revoked_since (issuer, revoked_at, not_after, serial,
//!   revocation_reason)`, partial (`WHERE status = 'revoked'`) and covering (version 3): a
//!   delta CRL's entries, those revoked since its base, found by time and read from the
//!   index alone, not from every revoked certificate. Built at the first open by a binary
//!   that has it (one scan of the table; version 2's index took 14 s on the
//!   ten-million-certificate file of BENCHMARKS.md). It replaces version 2's
//!   `certificates_revoked_at (issuer, revoked_at)`, which the SQLite bundled with rusqlite
//!   (3.50) passed over for `certificates_revoked` (covering, searched by issuer and
//!   `not_after`): every unexpired revoked certificate of the issuer read for ten new ones.
//!   Without statistics (nothing runs ANALYZE) the planner costs `certificates_revoked` and
//!   `certificates_revoked_since` the same for that query (covering, one equality and one
//!   range each) and takes the one created last, which every migration path makes
//!   `certificates_revoked_since`; the SQLite store's tests
//!   `the_delta_crl_query_reads_its_covering_index` and
//!   `a_version_2_inventory_gets_the_covering_delta_crl_index` check the plan.
//! - `audit_log_target (target)`: a certificate's audit entries (the dashboard's
//!   certificate page, and its renewal lineage) and the audit page's target filter.
//! - `acme_nonces` and `acme_objects` (added for the ACME server, created at the first
//!   open by a binary that has it): the primary keys serve every lookup by nonce and by
//!   kind and id; `acme_objects_lookup` makes an account's key thumbprint unique;
//!   `acme_objects_parent` lists an account's orders; the expiry indexes serve the purge.

use crate::db::{Arg, Db};
use crate::{Error, Result};

/// Version 1 of the schema, as `;`-separated statements.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS certificates (
    fingerprint TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    common_name TEXT,
    sans TEXT NOT NULL,
    profile TEXT NOT NULL,
    key_type TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    owner TEXT,
    labels TEXT NOT NULL,
    location TEXT,
    status TEXT NOT NULL,
    revoked_at BIGINT,
    revocation_reason TEXT,
    source TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    pem TEXT NOT NULL,
    UNIQUE (issuer, serial)
);
CREATE INDEX IF NOT EXISTS certificates_serial ON certificates (serial);
CREATE INDEX IF NOT EXISTS certificates_owner ON certificates (owner);
CREATE INDEX IF NOT EXISTS certificates_recorded ON certificates (recorded_at);
CREATE INDEX IF NOT EXISTS certificates_status_not_after ON certificates (status, not_after);
CREATE INDEX IF NOT EXISTS certificates_profile ON certificates (profile, recorded_at);
CREATE INDEX IF NOT EXISTS certificates_status_recorded ON certificates (status, recorded_at);
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS inventory_counts (
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    total BIGINT NOT NULL,
    revoked BIGINT NOT NULL,
    PRIMARY KEY (dim, value)
);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (issuer, not_after, serial, revoked_at, revocation_reason) WHERE status = 'revoked';
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    sans TEXT NOT NULL,
    profile TEXT NOT NULL,
    owner TEXT,
    cert_ttl BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS acme_nonces (
    nonce TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS acme_nonces_expires ON acme_nonces (expires_at);
CREATE TABLE IF NOT EXISTS acme_objects (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    parent TEXT,
    lookup TEXT,
    doc TEXT NOT NULL,
    version BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS acme_objects_lookup ON acme_objects (kind, lookup);
CREATE INDEX IF NOT EXISTS acme_objects_parent ON acme_objects (kind, parent);
CREATE INDEX IF NOT EXISTS acme_objects_expires ON acme_objects (expires_at);
"#;

/// Version 2: revoked certificates by issuer and revocation time, for delta CRLs.
pub const V2_DELTA_CRL: &str = r#"
CREATE INDEX IF NOT EXISTS certificates_revoked_at ON certificates (issuer, revoked_at) WHERE status = 'revoked';
"#;

/// Version 3: version 2's index replaced by a covering one, which SQLite's planner chooses
/// for the delta CRL's query (for version 2's `(issuer, revoked_at)` it preferred
/// `certificates_revoked`, covering, and read every revoked certificate of the issuer). Its
/// columns are those the query filters on and returns (`query::CRL_DELTA_ENTRIES_SQL`).
pub const V3_DELTA_CRL_COVERING: &str = r#"
DROP INDEX IF EXISTS certificates_revoked_at;
CREATE INDEX IF NOT EXISTS certificates_revoked_since ON certificates (issuer, revoked_at, not_after, serial, revocation_reason) WHERE status = 'revoked';
"#;

/// The migrations, in order: (version, `;`-separated statements). Append only.
pub const MIGRATIONS: &[(i64, &str)] =
    &[(1, SCHEMA), (2, V2_DELTA_CRL), (3, V3_DELTA_CRL_COVERING)];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the schema to [`SCHEMA_VERSION`], inside the caller's write transaction: creates
/// `schema_migrations` if needed, refuses a newer database, applies each missing migration
/// and records it. The version the database had is returned.
pub(crate) fn migrate(db: &mut dyn Db) -> Result<i64> {
    db.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL,
            applied_by TEXT NOT NULL
        )",
        &[],
    )?;
    let found = schema_version(db)?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let by = concat!("twoway ", env!("CARGO_PKG_VERSION"));
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.exec(stmt, &[])?;
        }
        db.exec(
            "INSERT INTO schema_migrations (version, applied_at, applied_by) VALUES (?, ?, ?)",
            &[Arg::int(*version), Arg::int(now), Arg::text(by)],
        )?;
    }
    Ok(found)
}

/// The highest version recorded in `schema_migrations` (0: none, a database made before
/// versions were recorded, or a new one).
pub(crate) fn schema_version(db: &mut dyn Db) -> Result<i64> {
    let mut v = 0;
    db.each(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        &[],
        &mut |r| {
            v = r.int(0)?.unwrap_or(0);
            Ok(())
        },
    )?;
    Ok(v)
}

/// The counter bumped by every revocation (replicas watch it to drop cached OCSP answers).
pub const REVOCATION_COUNTER: &str = "revocations";
