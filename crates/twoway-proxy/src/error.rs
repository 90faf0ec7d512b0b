//! The proxy's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a proxy error came from; metrics and logs key on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configuration or a file it names.
    Config,
    /// The downstream peer (the client talking to us).
    Downstream,
    /// The upstream peer (backend or target).
    Upstream,
    /// Our own process (sockets, runtime).
    Internal,
}

/// Everything that stops the proxy from starting or reloading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The configuration is invalid; the message says which key and why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A TOML configuration file did not parse.
    #[error("cannot parse configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// A file named by the configuration could not be read.
    #[error("cannot read {kind} file {path}: {source}; check the path and its permissions")]
    ReadFile {
        /// What the file is for (`certificate`, `key`, `client CA`, `CRL`…).
        kind: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS material was rejected.
    #[error("listener {listener:?}: {source}")]
    Tls {
        /// The listener whose material failed.
        listener: String,
        /// What twoway-tls said.
        source: twoway_tls::Error,
    },
    /// A CRL URL could not be fetched.
    #[error("cannot fetch CRL {url}: {detail}; check that the URL is reachable (http:// only)")]
    FetchCrl {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// An enrolling listener got no certificate from its CA.
    #[error("listener {listener:?}: cannot get a certificate from the CA at {ca}: {detail}")]
    Enroll {
        /// The listener.
        listener: String,
        /// The CA's URL.
        ca: String,
        /// What went wrong, with the fix.
        detail: String,
        /// The HTTP status of the CA's refusal (4xx: a bad token or names), if it refused.
        status: Option<u16>,
        /// Whether our own settings are at fault (wrong fingerprint, no token).
        config: bool,
    },
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr} ({what}): {source}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: String,
        /// The OS error.
        source: std::io::Error,
        /// A hint for the common cases.
        hint: &'static str,
    },
    /// Another I/O failure of our own.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ProxyError {
    /// Where the error came from.
    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::Config(_)
            | ProxyError::Toml(_)
            | ProxyError::ReadFile { .. }
            | ProxyError::Tls { .. } => Origin::Config,
            ProxyError::Enroll { config: true, .. } => Origin::Config,
            ProxyError::FetchCrl { .. } | ProxyError::Enroll { .. } => Origin::Upstream,
            ProxyError::Bind { .. } | ProxyError::Io { .. } => Origin::Internal,
        }
    }

    /// Whether trying again later may succeed (a reload, a refetch).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::FetchCrl { .. } | ProxyError::ReadFile { .. } | ProxyError::Io { .. }
        )
    }

    pub(crate) fn bind(addr: SocketAddr, what: &str, source: std::io::Error) -> Self {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process already listens there: stop it or pick another port"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need privileges: use a higher port or grant CAP_NET_BIND_SERVICE"
            }
            std::io::ErrorKind::AddrNotAvailable => "; this address is not assigned to this host",
            _ => "",
        };
        ProxyError::Bind {
            addr,
            what: what.to_owned(),
            source,
            hint,
        }
    }
}
