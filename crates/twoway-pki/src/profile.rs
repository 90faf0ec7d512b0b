//! Certificate profiles: what a server, client or peer certificate contains.

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
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [Profile::Server, Profile::Client, Profile::Peer];

    /// The profile's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Server => "server",
            Profile::Client => "client",
            Profile::Peer => "peer",
        }
    }

    pub(crate) fn ekus(self) -> Vec<rcgen::ExtendedKeyUsagePurpose> {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        match self {
            Profile::Server => vec![ServerAuth],
            Profile::Client => vec![ClientAuth],
            Profile::Peer => vec![ServerAuth, ClientAuth],
        }
    }
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
