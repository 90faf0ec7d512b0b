//! Certificate revocation lists.

use crate::{CaSigner, Error, Result};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// Why a certificate was revoked (RFC 5280 CRLReason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No reason given.
    Unspecified,
    /// The private key was compromised.
    KeyCompromise,
    /// The CA key was compromised.
    CaCompromise,
    /// The subject's affiliation changed.
    AffiliationChanged,
    /// Replaced by a newer certificate.
    Superseded,
    /// No longer needed.
    CessationOfOperation,
    /// Temporarily on hold.
    CertificateHold,
    /// The privileges were withdrawn.
    PrivilegeWithdrawn,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 8] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::CertificateHold,
        Reason::PrivilegeWithdrawn,
    ];

    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::CertificateHold => "certificate-hold",
            Reason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    /// The RFC 5280 code.
    pub fn code(self) -> u8 {
        self.to_rcgen() as u8
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            Reason::Unspecified => R::Unspecified,
            Reason::KeyCompromise => R::KeyCompromise,
            Reason::CaCompromise => R::CaCompromise,
            Reason::AffiliationChanged => R::AffiliationChanged,
            Reason::Superseded => R::Superseded,
            Reason::CessationOfOperation => R::CessationOfOperation,
            Reason::CertificateHold => R::CertificateHold,
            Reason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == norm || r.as_str().replace('-', "") == norm)
            .ok_or_else(|| Error::UnknownReason(s.to_string()))
    }
}

/// One revoked certificate as it appears in a CRL.
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    /// Serial, hex.
    pub serial_hex: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: Reason,
}

/// Signs a CRL (v2, with CRL number and AKI) listing `entries`.
pub fn build_crl(
    ca: &CaSigner,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
) -> Result<Vec<u8>> {
    let mut revoked = Vec::with_capacity(entries.len());
    for e in entries {
        let serial = hex::decode(&e.serial_hex)
            .map_err(|_| Error::BadCrl(format!("serial {:?} is not hex", e.serial_hex)))?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: e.revoked_at,
            // RFC 5280 5.3.1: reasonCode unspecified SHOULD be absent.
            reason_code: (e.reason != Reason::Unspecified).then(|| e.reason.to_rcgen()),
            invalidity_date: None,
        });
    }
    let ski = ca
        .info()
        .subject_key_id
        .as_ref()
        .and_then(|h| hex::decode(h).ok())
        .map(KeyIdMethod::PreSpecified)
        .unwrap_or(KeyIdMethod::Sha256);
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(
            &number.to_be_bytes()[number.leading_zeros() as usize / 8..],
        ),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: ski,
    };
    Ok(params.signed_by(ca.issuer())?.der().to_vec())
}
