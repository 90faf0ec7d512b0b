//! The one schema of the inventory, shared by every engine (SQLite and PostgreSQL): portable
//! SQL only (TEXT, BIGINT, no engine-specific types), applied idempotently at open.

/// The schema, as `;`-separated statements.
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
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
CREATE INDEX IF NOT EXISTS certificates_serial ON certificates (serial);
CREATE INDEX IF NOT EXISTS certificates_owner ON certificates (owner);
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
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
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
"#;

/// The counter bumped by every revocation (replicas watch it to drop cached OCSP answers).
pub const REVOCATION_COUNTER: &str = "revocations";
