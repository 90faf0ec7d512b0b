//! Exit codes (sysexits.h where one fits), the usage error, and the mapping from an
//! error to its code: the one place a failure becomes a number.

/// Something went wrong that has no better code.
pub const FAILURE: u8 = 1;
/// `cert check` found certificates expiring within the window.
pub const EXPIRING: u8 = 1;
/// Command line or configuration error.
pub const USAGE: u8 = 64;
/// Bad input data: a CSR, a certificate file, a name outside policy.
pub const DATAERR: u8 = 65;
/// Something asked for does not exist: a serial, a CA directory, a file.
pub const NOINPUT: u8 = 66;
/// Internal error.
pub const SOFTWARE: u8 = 70;
/// Cannot create an output: it exists, or the state forbids it.
pub const CANTCREAT: u8 = 73;
/// File system error.
pub const IOERR: u8 = 74;
/// Temporary failure: the inventory's database cannot be reached or written; retry.
pub const TEMPFAIL: u8 = 75;
/// Permission denied: the CA key could not be unlocked (wrong or missing passphrase),
/// or a remote CA refused the client certificate (HTTP 401 or 403).
pub const NOPERM: u8 = 77;

/// Maps an error to its exit code by the kind of its root.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use twoway_ca::ErrorKind as K;
    for cause in e.chain() {
        if let Some(ca) = cause.downcast_ref::<twoway_ca::Error>() {
            return match ca.kind() {
                K::BadInput => DATAERR,
                K::Config => USAGE,
                K::NotFound => NOINPUT,
                K::Conflict => CANTCREAT,
                K::Permission => NOPERM,
                K::Io => IOERR,
                K::Unauthenticated | K::Forbidden => NOPERM,
                K::Unavailable => TEMPFAIL,
                _ => SOFTWARE,
            };
        }
        if let Some(f) = cause.downcast_ref::<twoway_files::Error>() {
            return match f {
                twoway_files::Error::Io { .. } => IOERR,
                _ => CANTCREAT,
            };
        }
        if let Some(s) = cause.downcast_ref::<twoway_store::Error>() {
            return match s {
                twoway_store::Error::NotFound(_) | twoway_store::Error::Ambiguous(_) => NOINPUT,
                twoway_store::Error::Duplicate(_) | twoway_store::Error::AlreadyRevoked(_) => {
                    CANTCREAT
                }
                _ => SOFTWARE,
            };
        }
        if let Some(p) = cause.downcast_ref::<twoway_pki::Error>() {
            return match p {
                twoway_pki::Error::WrongPassphrase | twoway_pki::Error::PassphraseRequired => {
                    NOPERM
                }
                _ => DATAERR,
            };
        }
        if let Some(c) = cause.downcast_ref::<twoway_agent::ClientError>() {
            return client_exit_code(c);
        }
        if let Some(twoway_proxy::ProxyError::Enroll {
            status: Some(status),
            ..
        }) = cause.downcast_ref::<twoway_proxy::ProxyError>()
        {
            return match status {
                401 | 403 => NOPERM,
                400..=499 => DATAERR,
                _ => FAILURE,
            };
        }
        if let Some(p) = cause.downcast_ref::<twoway_proxy::ProxyError>() {
            if p.origin() == twoway_proxy::Origin::Config {
                return USAGE;
            }
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return IOERR;
        }
    }
    FAILURE
}

fn client_exit_code(c: &twoway_agent::ClientError) -> u8 {
    match c {
        twoway_agent::ClientError::Api {
            status: 401 | 403, ..
        } => NOPERM,
        twoway_agent::ClientError::Api { status: 404, .. } => NOINPUT,
        twoway_agent::ClientError::Api {
            status: 400..=499, ..
        } => DATAERR,
        twoway_agent::ClientError::Config(_) => USAGE,
        _ => FAILURE,
    }
}

/// A command-line mistake found after parsing (exit 64).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}
