//! The inventory's records and queries.

use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Where a certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// Signed by this CA.
    Issued,
    /// Recorded from elsewhere with `cert import`.
    Imported,
    /// Signed by this CA for an ACME client (`ca serve`'s ACME directories).
    Acme,
    /// Signed by this CA for a SCEP client (`ca serve`'s `/scep`).
    Scep,
    /// Signed by this CA for an EST client (`ca serve`'s `/.well-known/est/`).
    Est,
}

impl CertSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Issued => "issued",
            CertSource::Imported => "imported",
            CertSource::Acme => "acme",
            CertSource::Scep => "scep",
            CertSource::Est => "est",
        }
    }
    /// True for certificates this CA signed (by any path), false for imported ones.
    pub fn signed_here(self) -> bool {
        matches!(
            self,
            CertSource::Issued | CertSource::Acme | CertSource::Scep | CertSource::Est
        )
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "issued" => Some(CertSource::Issued),
            "imported" => Some(CertSource::Imported),
            "acme" => Some(CertSource::Acme),
            "scep" => Some(CertSource::Scep),
            "est" => Some(CertSource::Est),
            _ => None,
        }
    }
}

/// A certificate's stored revocation state. Expiry is derived from `not_after` when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    /// Not revoked.
    Active,
    /// Revoked.
    Revoked,
}

impl CertStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Active => "active",
            CertStatus::Revoked => "revoked",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(CertStatus::Active),
            "revoked" => Some(CertStatus::Revoked),
            _ => None,
        }
    }
}

/// One certificate in the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertRecord {
    /// Serial, lower-case hex.
    pub serial: String,
    /// SHA-256 fingerprint of the DER, lower-case hex; the primary key.
    pub fingerprint: String,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Subject CN, if any.
    pub common_name: Option<String>,
    /// SANs as `TYPE:value`.
    pub sans: Vec<String>,
    /// Profile (`server`, `client`, `peer`, or `ca`/`unknown` for imports).
    pub profile: String,
    /// Key type (`p256`, …), or `unknown`.
    pub key_type: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The team or person responsible.
    pub owner: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Where it is deployed.
    pub location: Option<String>,
    /// Revocation state.
    pub status: CertStatus,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
    /// Issued here or imported.
    pub source: CertSource,
    /// When it was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// The certificate, PEM (empty in listings).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pem: String,
}

impl CertRecord {
    /// `active`, `revoked` or `expired` at `now`, as people see it.
    pub fn effective_status(&self, now: OffsetDateTime) -> &'static str {
        match self.status {
            CertStatus::Revoked => "revoked",
            CertStatus::Active if self.not_after <= now => "expired",
            CertStatus::Active => "active",
        }
    }
}

/// Filters for listing the inventory. All given filters must hold.
#[derive(Clone, Debug, Default)]
pub struct CertQuery {
    /// Only certificates valid now that expire before this instant.
    pub expiring_before: Option<OffsetDateTime>,
    /// Only certificates already expired.
    pub expired: bool,
    /// Only these statuses (`active`, `revoked`, `expired`).
    pub status: Option<String>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only certificates carrying all these labels.
    pub labels: Vec<(String, String)>,
    /// Only certificates with a SAN matching this glob (`*.example.internal`, `spiffe://x/*`).
    pub san_glob: Option<String>,
    /// Only this profile.
    pub profile: Option<String>,
    /// Only this source (`issued`, `imported`, `acme`).
    pub source: Option<String>,
    /// Only this issuer (its subject DN, exactly).
    pub issuer: Option<String>,
    /// The order of the rows.
    pub sort: CertSort,
    /// Keyset paging: start after this row of the order (its key, then fingerprint) instead
    /// of skipping `offset` rows. Ignored with a SAN glob.
    pub after: Option<Cursor>,
    /// The instant "now" for expiry decisions.
    pub now: Option<OffsetDateTime>,
    /// Rows to skip.
    pub offset: usize,
    /// Most rows to return (0 = no limit).
    pub limit: usize,
}

/// A row's place in a listing's order: the sort column's value (seconds) and the
/// fingerprint. Written `KEY.FINGERPRINT` in URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// `recorded_at` or `not_after` of the row, in seconds since the epoch.
    pub key: i64,
    /// The row's fingerprint.
    pub fingerprint: String,
}

impl Cursor {
    /// The cursor just past `rec` in the order `sort`.
    pub fn of(rec: &CertRecord, sort: CertSort) -> Self {
        let t = match sort {
            CertSort::Newest | CertSort::Oldest => rec.recorded_at,
            CertSort::ExpirySoonest | CertSort::ExpiryLatest => rec.not_after,
        };
        Cursor {
            key: t.unix_timestamp(),
            fingerprint: rec.fingerprint.clone(),
        }
    }

    /// `KEY.FINGERPRINT`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.key, self.fingerprint)
    }

    /// Parses [`Cursor::encode`]'s form.
    pub fn parse(s: &str) -> Option<Self> {
        let (k, fp) = s.split_once('.')?;
        let ok = !fp.is_empty() && fp.len() <= 64 && fp.chars().all(|c| c.is_ascii_hexdigit());
        let key = k.parse().ok()?;
        ok.then(|| Cursor {
            key,
            fingerprint: fp.to_ascii_lowercase(),
        })
    }
}

/// The order of a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertSort {
    /// Newest recorded first (the default).
    #[default]
    Newest,
    /// Oldest recorded first.
    Oldest,
    /// Soonest `notAfter` first.
    ExpirySoonest,
    /// Latest `notAfter` first.
    ExpiryLatest,
}

impl CertSort {
    /// The name in URLs and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            CertSort::Newest => "newest",
            CertSort::Oldest => "oldest",
            CertSort::ExpirySoonest => "expiry",
            CertSort::ExpiryLatest => "-expiry",
        }
    }

    /// Parses [`CertSort::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "newest" | "" => Some(CertSort::Newest),
            "oldest" => Some(CertSort::Oldest),
            "expiry" => Some(CertSort::ExpirySoonest),
            "-expiry" => Some(CertSort::ExpiryLatest),
            _ => None,
        }
    }

    /// The keyset condition "after the cursor" in this order (three parameters: key, key,
    /// fingerprint), written with a plain range on the key first so that an index on it
    /// bounds the scan.
    pub(crate) fn after_clause(self) -> &'static str {
        match self {
            CertSort::Newest => "recorded_at <= ? AND (recorded_at < ? OR fingerprint > ?)",
            CertSort::Oldest => "recorded_at >= ? AND (recorded_at > ? OR fingerprint > ?)",
            CertSort::ExpirySoonest => "not_after >= ? AND (not_after > ? OR fingerprint > ?)",
            CertSort::ExpiryLatest => "not_after <= ? AND (not_after < ? OR fingerprint > ?)",
        }
    }

    pub(crate) fn order_by(self) -> &'static str {
        match self {
            CertSort::Newest => " ORDER BY recorded_at DESC, fingerprint",
            CertSort::Oldest => " ORDER BY recorded_at, fingerprint",
            CertSort::ExpirySoonest => " ORDER BY not_after, fingerprint",
            CertSort::ExpiryLatest => " ORDER BY not_after DESC, fingerprint",
        }
    }
}

/// One page of results.
#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// How many rows matched in all.
    pub total: usize,
    /// The offset of the first row.
    pub offset: usize,
    /// The page size asked for.
    pub limit: usize,
}
