//! The CA's error type.

use std::path::PathBuf;

/// What can go wrong running the CA. The CLI maps the kind to an exit code and
/// `twoway-server` maps it to an HTTP status; the CA itself knows neither.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Certificate, key, CSR or policy problem.
    #[error(transparent)]
    Pki(#[from] twoway_pki::Error),
    /// Inventory problem.
    #[error(transparent)]
    Store(#[from] twoway_store::Error),
    /// The inventory could not be opened.
    #[error("cannot open the {engine} inventory {target}")]
    Inventory {
        /// `SQLite` or `PostgreSQL`.
        engine: &'static str,
        /// The file, or the URL without its password.
        target: String,
        /// Why.
        source: twoway_store::Error,
    },
    /// No CA at the directory.
    #[error("no CA in {0}: create one with `twoway ca init --ca-dir {0} --name \"Example Corp\"`, or point --ca-dir / TWOWAY_CA_DIR at an existing one")]
    NoCa(PathBuf),
    /// A CA already exists at the directory.
    #[error("{0} already holds a CA (ca.toml exists): refusing to overwrite it. Choose another --ca-dir, or remove the directory if you really mean to start over")]
    CaExists(PathBuf),
    /// The CA configuration is invalid.
    #[error("invalid CA configuration {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing an output file failed, or it exists already.
    #[error(transparent)]
    Files(#[from] twoway_files::Error),
    /// A request that the CA refuses for a reason of its own.
    #[error("{0}")]
    Refused(String),
    /// A CSR asks for a name its enrollment token does not allow.
    #[error("the CSR asks for {0}, which the enrollment token does not allow (it allows: {1})")]
    NameNotAllowed(String, String),
    /// No acceptable credential was presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The presented certificate has expired.
    #[error("certificate {0} has expired: renewal needs a valid certificate; enroll again with a new token")]
    CertExpired(String),
    /// The presented certificate is revoked.
    #[error("certificate {0} is revoked (reason {1}): enroll again with a new token")]
    CertRevoked(String, String),
    /// A proof of possession that is stale or does not verify.
    #[error("{0}")]
    BadProof(String),
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// A CA key in a PKCS#11 token could not be used.
    #[error("{message}")]
    Hsm {
        /// What went wrong, and the fix.
        message: String,
        /// The token is absent or went away (try again later), rather than misconfigured.
        unavailable: bool,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// The broad kind of the error, for exit codes and status codes.
    pub fn kind(&self) -> ErrorKind {
        use twoway_pki::Error as P;
        use twoway_store::Error as S;
        match self {
            Error::Pki(P::WrongPassphrase | P::PassphraseRequired) => ErrorKind::Permission,
            Error::Pki(P::Signer(_)) => ErrorKind::Unavailable,
            Error::Pki(_) => ErrorKind::BadInput,
            Error::Store(S::NotFound(_) | S::Ambiguous(_)) => ErrorKind::NotFound,
            Error::Store(S::Duplicate(_) | S::AlreadyRevoked(_)) => ErrorKind::Conflict,
            Error::NoCa(_) => ErrorKind::NotFound,
            Error::CaExists(_) => ErrorKind::Conflict,
            Error::Files(twoway_files::Error::Io { .. }) => ErrorKind::Io,
            Error::Files(_) => ErrorKind::Conflict,
            Error::Config { .. } => ErrorKind::Config,
            Error::Io { .. } => ErrorKind::Io,
            Error::Store(S::TokenUnknown) => ErrorKind::Unauthenticated,
            Error::Store(S::TokenExpired(_) | S::TokenUsed(_)) => ErrorKind::Forbidden,
            Error::Refused(_) | Error::NameNotAllowed(..) => ErrorKind::BadInput,
            Error::Unauthenticated(_)
            | Error::CertExpired(_)
            | Error::CertRevoked(..)
            | Error::BadProof(_) => ErrorKind::Unauthenticated,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::Hsm {
                unavailable: true, ..
            } => ErrorKind::Unavailable,
            Error::Hsm { .. } => ErrorKind::Config,
            Error::Store(S::SchemaTooNew { .. })
            | Error::Inventory {
                source: S::SchemaTooNew { .. },
                ..
            } => ErrorKind::Config,
            Error::Store(S::Database { .. }) | Error::Inventory { .. } => ErrorKind::Unavailable,
            Error::Store(_) => ErrorKind::Internal,
        }
    }
}

/// Broad error kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request or an input file is wrong.
    BadInput,
    /// A configuration is wrong.
    Config,
    /// Something asked for does not exist.
    NotFound,
    /// It exists already, or the state forbids it.
    Conflict,
    /// A key could not be unlocked.
    Permission,
    /// A file system error.
    Io,
    /// A bug or a broken database.
    Internal,
    /// No acceptable credential (token, certificate, proof) was presented.
    Unauthenticated,
    /// The credential is fine but does not allow this.
    Forbidden,
    /// The inventory cannot be reached, read or written right now (the database is down,
    /// paused or its disk full): trying again later may work.
    Unavailable,
}

/// Result with the CA error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
