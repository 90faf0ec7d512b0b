//! `twoway`: the one binary. It parses argv and env, builds runtimes, prints, and chooses
//! exit codes; everything else lives in the library crates.
#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod cmd_acme;
mod cmd_agent;
mod cmd_ca;
mod cmd_cert;
mod cmd_serve;
mod cmd_token;
mod inspect;
mod proxy_cmd;
mod remote;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes (sysexits.h where one fits).
pub mod exit {
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
    /// Permission denied: the CA key could not be unlocked (wrong or missing passphrase),
    /// or a remote CA refused the client certificate (HTTP 401 or 403).
    pub const NOPERM: u8 = 77;
}

const AFTER_HELP: &str = "\
Examples:
  twoway quickstart ./demo                      a CA, a server and a client certificate, and
                                                the commands that show mTLS working
  twoway ca init --name \"Example Corp\" --permit-dns example.internal
  twoway cert issue --profile server --san DNS:api.example.internal --owner team-api --out ./api
  twoway cert list --expiring 30d
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\
      --cert chain.pem --key key.pem --client-ca ca.pem

Exit codes: 0 ok; 1 failure (or `cert check` found certificates that need a person, or
`audit verify` found a broken chain); 64 usage or configuration error; 65 bad input data;
66 not found; 73 output exists; 74 I/O error; 77 permission denied: the CA key could not
be unlocked, or a remote CA refused the client certificate (HTTP 401: not one it knows,
revoked or expired; HTTP 403: not in its [server] admins).";

/// Mutual TLS made easy: a private CA, certificate lifecycle and inventory, and an mTLS proxy.
#[derive(Parser, Debug)]
#[command(name = "twoway", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    remote: remote::RemoteOpts,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that uses a local CA.
#[derive(clap::Args, Debug, Clone)]
pub struct CaOpts {
    /// The CA directory.
    #[arg(
        long,
        env = "TWOWAY_CA_DIR",
        default_value = "./twoway-ca",
        global = true
    )]
    pub ca_dir: PathBuf,
    /// File holding the passphrase of encrypted CA keys (first line).
    #[arg(long, env = "TWOWAY_PASSPHRASE_FILE", global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Who is acting, for the audit log (default: cli:$USER@host).
    #[arg(long, env = "TWOWAY_ACTOR", global = true)]
    pub actor: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or inspect the certificate authority.
    #[command(subcommand)]
    Ca(cmd_ca::CaCommand),
    /// Issue, sign, list, inspect, import and revoke certificates.
    #[command(subcommand)]
    Cert(cmd_cert::CertCommand),
    /// Sign a certificate revocation list.
    Crl(cmd_ca::CrlArgs),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(cmd_ca::AuditCommand),
    /// Zero to a working mTLS pair in one command.
    Quickstart(cmd_ca::QuickstartArgs),
    /// Put mutual TLS in front of an app (server) or behind a client (client).
    Proxy(Box<proxy_cmd::ProxyArgs>),
    /// One-time enrollment tokens for `twoway agent`.
    #[command(subcommand)]
    Token(cmd_token::TokenCommand),
    /// Enroll with a token, write the files, renew forever (or --once).
    Agent(cmd_agent::AgentArgs),
    /// The ACME directories of `ca serve`: external account binding keys.
    #[command(subcommand)]
    Acme(cmd_acme::AcmeCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help into a closed pipe is not worth a word either.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    raise_open_files_limit();
    let remote = cli.remote.url.is_some();
    let result = match cli.command {
        Command::Cert(c) if remote => remote::run_cert(c, &cli.remote),
        Command::Token(c) if remote => remote::run_token(c, &cli.remote),
        _ if remote => Err(usage(
            "with --ca URL only `cert sign`, `cert list`, `cert revoke` and `token create` work remotely",
        )),
        Command::Token(c) => cmd_token::run(c),
        Command::Agent(c) => cmd_agent::run(c),
        Command::Acme(c) => cmd_acme::run(c),
        Command::Ca(c) => cmd_ca::run_ca(c),
        Command::Cert(c) => cmd_cert::run(c),
        Command::Crl(c) => cmd_ca::run_crl(c),
        Command::Audit(c) => cmd_ca::run_audit(c),
        Command::Quickstart(c) => cmd_ca::run_quickstart(c),
        Command::Proxy(c) => proxy_cmd::run(*c).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`| head -1`): nothing to report.
        Err(e) if output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", output::error_text(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Raises the soft limit on open files to the hard limit. The soft limit is often 1024,
/// which a server holding thousands of connections (`ca serve`, `proxy`) would reach long
/// before its own connection limits; the hard limit is what the administrator allows.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let below_hard = match (cur.current, cur.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        // macOS refuses RLIM_INFINITY here; its kernel cap then stays in force.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        );
    }
}

/// Maps an error to its exit code by the kind of its root.
fn exit_code(e: &anyhow::Error) -> u8 {
    use twoway_ca::ErrorKind as K;
    for cause in e.chain() {
        if let Some(ca) = cause.downcast_ref::<twoway_ca::Error>() {
            return match ca.kind() {
                K::BadInput => exit::DATAERR,
                K::Config => exit::USAGE,
                K::NotFound => exit::NOINPUT,
                K::Conflict => exit::CANTCREAT,
                K::Permission => exit::NOPERM,
                K::Io => exit::IOERR,
                K::Unauthenticated | K::Forbidden => exit::NOPERM,
                _ => exit::SOFTWARE,
            };
        }
        if let Some(s) = cause.downcast_ref::<twoway_store::Error>() {
            return match s {
                twoway_store::Error::NotFound(_) | twoway_store::Error::Ambiguous(_) => {
                    exit::NOINPUT
                }
                twoway_store::Error::Duplicate(_) | twoway_store::Error::AlreadyRevoked(_) => {
                    exit::CANTCREAT
                }
                _ => exit::SOFTWARE,
            };
        }
        if let Some(p) = cause.downcast_ref::<twoway_pki::Error>() {
            return match p {
                twoway_pki::Error::WrongPassphrase | twoway_pki::Error::PassphraseRequired => {
                    exit::NOPERM
                }
                _ => exit::DATAERR,
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
                401 | 403 => exit::NOPERM,
                400..=499 => exit::DATAERR,
                _ => exit::FAILURE,
            };
        }
        if let Some(p) = cause.downcast_ref::<twoway_proxy::ProxyError>() {
            if p.origin() == twoway_proxy::Origin::Config {
                return exit::USAGE;
            }
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return exit::USAGE;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return exit::IOERR;
        }
    }
    exit::FAILURE
}

fn client_exit_code(c: &twoway_agent::ClientError) -> u8 {
    match c {
        twoway_agent::ClientError::Api {
            status: 401 | 403, ..
        } => exit::NOPERM,
        twoway_agent::ClientError::Api { status: 404, .. } => exit::NOINPUT,
        twoway_agent::ClientError::Api {
            status: 400..=499, ..
        } => exit::DATAERR,
        twoway_agent::ClientError::Config(_) => exit::USAGE,
        _ => exit::FAILURE,
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
