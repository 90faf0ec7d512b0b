//! What the integration tests of the `twoway` binary share, one module per concern:
//!
//! - [`process`]: temporary directories, running the real binary and other programs with
//!   a time limit, servers killed when the test ends, free ports, signals, libfaketime;
//! - [`lab`]: a test's private directory with the CLI run in it, and the offline CA's
//!   helpers (init, issue, what is recorded, refusals);
//! - [`pki`]: the rcgen test PKI, keys, CSRs and certificates made by openssl, PEM;
//! - [`http`]: rustls clients, raw HTTP/1 exchanges, Prometheus samples;
//! - [`online`]: `twoway ca serve` on a CA directory, and what talks to it;
//! - [`acme`]: its ACME directories and the real ACME clients;
//! - [`pg`]: a fresh PostgreSQL database per test;
//! - [`proxy`]: `twoway proxy`, its backends and clients.
//!
//! Each test file is its own crate and uses a part of this; the rest is dead code there.
#![allow(dead_code)]

pub mod acme;
pub mod http;
pub mod lab;
pub mod online;
pub mod pg;
pub mod pki;
pub mod process;
pub mod proxy;

pub use process::*;
