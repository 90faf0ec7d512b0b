//! twoway-tls: the rustls layer of twoway, usable on its own by any Rust program that
//! wants mutual TLS done right.
//!
//! It sits between the proxy (and any app) and rustls with the aws-lc-rs provider:
//!
//! - [`Credentials`], [`TrustBundle`], [`parse_crls`]: load a chain and key (checked to
//!   match), a CA bundle and CRLs from PEM bytes, with errors that name the fix.
//! - [`server_config`] / [`client_config`]: build rustls configurations with client
//!   certificates required, TLS 1.3 by default, X25519MLKEM768/X25519/P-256, and no session
//!   resumption unless asked ([`TlsOptions`]).
//! - [`ClientVerifier`] / [`ServerVerifier`]: webpki chain checks plus CRLs (end entity only,
//!   unknown status allowed) plus identity [`Policy`] rules; a denied peer gets an
//!   `access_denied` alert.
//! - [`PeerIdentity`]: the names in a peer certificate (SPIFFE/URI, DNS, IP, CN, OU) and its
//!   `X-Forwarded-Client-Cert` rendering.
//! - [`Reloadable`]: a lock-free cell holding the current `Arc<ServerConfig>` (or anything),
//!   swapped on reload and read once per accepted connection.
//! - [`Reason`]: a stable label for why a handshake failed.
//!
//! The library never reads files or the environment; callers pass bytes. See
//! `examples/mtls_echo.rs` for a complete server and client.
#![forbid(unsafe_code)]

mod builder;
mod error;
mod identity;
mod material;
mod reason;
mod rules;
mod signatures;
mod verifier;

use std::sync::Arc;

pub use builder::{client_config, provider, server_config, TlsOptions};
pub use error::Error;
pub use identity::{IssuerIndex, PeerIdentity};
pub use material::{parse_certificates, parse_crls, parse_private_key, Credentials, TrustBundle};
pub use reason::Reason;
pub use rules::{Decision, Policy, Rule};
pub use signatures::ProviderSignatures;
pub use verifier::{
    crl_next_update, ClientVerifier, PeerAuth, ServerVerifier, StaleCrl, UnauthenticatedServer,
};

/// A value that readers load (cheaply, without locks) and a reloader replaces as a whole.
///
/// Readers that loaded the old value keep it alive until they drop it, so a reload never
/// disturbs connections that already started.
#[derive(Debug)]
pub struct Reloadable<T> {
    cell: arc_swap::ArcSwap<T>,
}

impl<T> Reloadable<T> {
    /// A cell holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            cell: arc_swap::ArcSwap::from_pointee(value),
        }
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.cell.load_full()
    }

    /// Replaces the value; later `load`s see the new one.
    pub fn store(&self, value: T) {
        self.cell.store(Arc::new(value));
    }
}
