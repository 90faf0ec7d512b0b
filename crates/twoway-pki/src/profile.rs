//! Certificate profiles: what a server, client, peer, device or user certificate contains.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The leaf profiles twoway issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// TLS server: EKU serverAuth.
    Server,
    /// TLS client: EKU clientAuth.
    Client,
    /// Both ends of mutual TLS: EKU serverAuth and clientAuth.
    Peer,
    /// A device (router, printer, phone, IoT node): EKU clientAuth, plus serverAuth when the
    /// certificate names a host (a DNS or IP SAN); the subject may carry the device's serial
    /// number (the CSR's `serialNumber` attribute, X.520 2.5.4.5).
    Device,
    /// A person: EKU clientAuth and emailProtection; at least one `EMAIL:` SAN.
    User,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 5] = [
        Profile::Server,
        Profile::Client,
        Profile::Peer,
        Profile::Device,
        Profile::User,
    ];

    /// The profile's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Server => "server",
            Profile::Client => "client",
            Profile::Peer => "peer",
            Profile::Device => "device",
            Profile::User => "user",
        }
    }

    /// The EKUs of a certificate of this profile naming `sans`.
    pub(crate) fn ekus(self, sans: &[crate::San]) -> Vec<rcgen::ExtendedKeyUsagePurpose> {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, EmailProtection, ServerAuth};
        match self {
            Profile::Server => vec![ServerAuth],
            Profile::Client => vec![ClientAuth],
            Profile::Peer => vec![ServerAuth, ClientAuth],
            Profile::Device if names_a_host(sans) => vec![ClientAuth, ServerAuth],
            Profile::Device => vec![ClientAuth],
            Profile::User => vec![ClientAuth, EmailProtection],
        }
    }

    /// Checks that `sans` suit the profile: a `user` certificate needs an e-mail address.
    pub fn check_names(self, sans: &[crate::San]) -> Result<(), Error> {
        if self == Profile::User && !sans.iter().any(|s| matches!(s, crate::San::Email(_))) {
            return Err(Error::ProfileNeeds(
                "the user profile needs an e-mail address: add a SAN EMAIL:person@example.org",
            ));
        }
        Ok(())
    }
}

fn names_a_host(sans: &[crate::San]) -> bool {
    sans.iter()
        .any(|s| matches!(s, crate::San::Dns(_) | crate::San::Ip(_)))
}

/// The longest subject serial number X.520 allows (`ub-serial-number`).
pub const MAX_SUBJECT_SERIAL: usize = 64;

/// Checks a device serial number for the subject's `serialNumber` attribute: 1 to 64
/// characters of the PrintableString alphabet (letters, digits, space and `'()+,-./:=?`).
pub fn check_subject_serial(s: &str) -> Result<(), Error> {
    let printable = |c: char| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c);
    if s.is_empty() || s.len() > MAX_SUBJECT_SERIAL || !s.chars().all(printable) {
        return Err(Error::ProfileNeeds(
            "the subject serialNumber must be 1 to 64 letters, digits, spaces or '()+,-./:=?",
        ));
    }
    Ok(())
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnknownProfile(s.to_string()))
    }
}
