//! One-time enrollment tokens, and what a single issuance transaction does besides recording
//! the certificate.

use serde::Serialize;
use time::OffsetDateTime;

/// A stored enrollment token. Only the SHA-256 of the secret is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// SHA-256 of the secret, lower-case hex; the primary key.
    pub hash: String,
    /// SANs a CSR may ask for, `TYPE:value`.
    pub sans: Vec<String>,
    /// The profile of the certificate it yields.
    pub profile: String,
    /// The owner recorded on the certificate.
    pub owner: Option<String>,
    /// Validity of the certificate, seconds (None: the server's default).
    pub cert_ttl: Option<i64>,
    /// Who made it.
    pub created_by: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being usable.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was used, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
    /// The fingerprint of the certificate it yielded.
    pub used_by: Option<String>,
}

/// What else commits in the transaction that records a new certificate.
#[derive(Clone, Debug)]
pub struct IssueExtras {
    /// Consume this token (by hash): it must exist, be unused and unexpired at `now`,
    /// or nothing is recorded ([`crate::Error::TokenUsed`], …).
    pub consume_token: Option<String>,
    /// Mark this certificate (by fingerprint) revoked with reason `superseded`: it must be
    /// active, or nothing is recorded ([`crate::Error::AlreadyRevoked`]).
    pub supersede: Option<String>,
    /// The audit entry of the supersession.
    pub supersede_audit: Option<crate::NewAudit>,
    /// The instant of the transaction.
    pub now: OffsetDateTime,
}

impl IssueExtras {
    /// Nothing besides the certificate.
    pub fn none(now: OffsetDateTime) -> Self {
        IssueExtras {
            consume_token: None,
            supersede: None,
            supersede_audit: None,
            now,
        }
    }
}

/// One issuance to record: the certificate's row, its audit entry, and what else commits
/// with it. [`crate::Store::record_issuances`] takes a batch of them.
#[derive(Clone, Debug)]
pub struct Issuance {
    /// The certificate's inventory row.
    pub rec: crate::CertRecord,
    /// Its audit entry.
    pub audit: crate::NewAudit,
    /// The token it consumes and/or the certificate it supersedes.
    pub extras: IssueExtras,
}
