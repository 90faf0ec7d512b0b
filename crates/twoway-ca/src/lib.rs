//! twoway-ca: the certificate authority.
//!
//! A CA is a directory (see [`layout`]): `ca.toml` ([`CaConfig`], parsed once into [`CaSettings`]), the root and intermediate
//! certificates and keys, and the inventory ([`twoway_store::Store`]). [`init`] creates one;
//! [`Ca::open`] opens it for reading the inventory and audit log, and [`Ca::unlock`] loads the
//! intermediate key so that [`Ca::issue`], [`Ca::revoke`] and [`Ca::crl`] can sign. Every
//! issuance is recorded, with its audit entry, before the certificate is returned.
//! Outputs are written crash-safely by `twoway-files`. The crate knows nothing of HTTP or
//! the CLI.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
mod ca;
mod checkpoint;
mod config;
mod error;
pub mod est;
mod hsm;
mod online;
mod renewal;
mod roots;
mod rotate;
pub mod scep;
mod settings;
mod views;

pub use ca::{init, layout, Ca, ImportOutcome, InitOptions, IssueRequest, Outcome, Unrecorded};
pub use checkpoint::{Checkpoint, CHECKPOINT_FORMAT};
pub use config::{
    CaConfig, CaSection, CrlConfig, HsmSection, ProfileConfig, RenewalSection, ServerSection,
};
pub use error::{Error, ErrorKind, Result};
pub use online::{
    is_admin, token_hash, NewToken, SignCsr, PROOF_WINDOW, RENEWAL_LABEL, RENEWED_BY_AGENT,
    RENEWED_BY_SERVER, SERVER_OWNER, TOKEN_PREFIX,
};
pub use renewal::{RenewedBy, OVERDUE_FRACTION};
pub use roots::{RootView, ROOTS_DIR};
pub use rotate::{IssuerState, IssuerView, Retired, ISSUERS_DIR};
pub use settings::{Admins, BadAdmin, CaSettings, Database, ProfileSettings, ServerSettings};
pub use views::{Lineage, Pruned};
