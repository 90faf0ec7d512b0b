//! twoway-proxy: the mTLS proxy behind `twoway proxy`.
//!
//! It puts mutual TLS in front of an application (server mode) or behind a client (client
//! mode), built on [`twoway_tls`] for the TLS side:
//!
//! - [`ProxyConfig`]: the configuration tree (one TOML file or the CLI flags), validated
//!   into [`ValidConfig`] before anything starts.
//! - [`Proxy`]: [`Proxy::prepare`] loads and checks every certificate, key, CA bundle, CRL
//!   and rule (this is `--check-config`); [`Proxy::run`] binds every listener, serves, hot
//!   reloads changed files (content hash polling and SIGHUP) and drains on shutdown.
//! - Server listeners forward verified connections byte for byte (TCP mode, optional PROXY
//!   protocol v2 header, backend over TCP or a Unix socket) or as HTTP requests to an
//!   HTTP/1.1 backend, with per-route rules and identity headers (`X-Forwarded-Client-Cert`,
//!   `X-Client-Identity`): HTTP/1.x clients through the crate's own lean HTTP/1 path (one
//!   backend connection per busy client connection, a per-thread pool), HTTP/2 clients
//!   through hyper. Idle HTTP/1.x connections are parked without buffers.
//! - A server listener may enroll with a twoway CA instead of reading certificate files: an
//!   in-process agent (`twoway-agent`) obtains the certificate with a one-time token, keeps
//!   the key in memory and renews it; the reloader picks up each new certificate.
//! - [`Metrics`]: Prometheus counters served by the admin listener with `/healthz` and
//!   `/ready`.
//!
//! The crate installs nothing process-wide and builds no runtime: the binary does, and may
//! hand [`Proxy::with_workers`] one single-threaded runtime per worker thread.
#![forbid(unsafe_code)]

mod admin;
mod backend;
mod client;
pub mod config;
pub mod copy;
mod enroll;
mod error;
mod http;
mod metrics;
mod ocsp;
pub mod proxy_protocol;
mod run;
mod server;
mod state;
mod tracker;

pub use config::{
    ClientListenerConfig, EnrollConfig, ProxyConfig, RouteConfig, ServerListenerConfig, ValidConfig,
};
pub use error::{Origin, ProxyError};
pub use metrics::Metrics;
pub use run::Proxy;
