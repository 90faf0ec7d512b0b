//! twoway-agent: enrollment and renewal for workloads, and the HTTPS client of the CA.
//!
//! [`CaClient`] speaks the CA's API (`twoway-api` types) over rustls; the remote CLI uses it
//! too. [`run`] is the agent: it bootstraps trust from the root's SHA-256 fingerprint,
//! makes its key locally, enrolls with a one-time token, writes `cert.pem`, `chain.pem`,
//! `key.pem` (0600) and `ca.pem` atomically (or, for an agent inside another process such as
//! the proxy, keeps them only in memory: [`Storage::Memory`]), runs a reload hook, and renews at about two
//! thirds of the lifetime (with jitter) over mutual TLS with a fresh key, backing off while
//! the CA is down. It links none of the CA's crates: files are written by `twoway-files`
//! (the same layout the CLI writes). Timers are `tokio::time`. [`serve_metrics`] is its Prometheus listener.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod client;
mod metrics;

pub use agent::{
    backoff, proof_request, renewal_point, run, AgentConfig, AgentError, AgentStatus, Material,
    MemoryCredentials, Storage,
};
pub use client::{CaClient, ClientError, ClientIdentity};
pub use metrics::{serve_metrics, METRICS_LIMITS, REQUEST_TIMEOUT as METRICS_REQUEST_TIMEOUT};
