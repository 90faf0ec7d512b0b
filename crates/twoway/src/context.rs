//! What the commands share: the local CA options (`--ca-dir`, `--passphrase-file`,
//! `--actor`) and opening the CA with them, the actor of audit entries, duration flags,
//! runtimes and logging. One place each, so that every command behaves alike.

use crate::exit::usage;
use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use twoway_ca::Ca;
use zeroize::Zeroizing;

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

/// Who is acting, for the audit log.
pub fn actor(opts: &CaOpts) -> String {
    if let Some(a) = &opts.actor {
        return a.clone();
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("cli:{user}@{host}")
}

/// The passphrase of encrypted CA keys, from `--passphrase-file` (its first line), if given.
pub fn passphrase(opts: &CaOpts) -> Result<Option<Zeroizing<Vec<u8>>>> {
    opts.passphrase_file
        .as_deref()
        .map(read_passphrase)
        .transpose()
}

fn read_passphrase(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        return Err(usage(format!(
            "the passphrase file {} is empty: put the passphrase on its first line",
            path.display()
        )));
    }
    Ok(Zeroizing::new(first.to_vec()))
}

/// Opens the CA; with `unlock`, also loads the signing key.
pub fn open_ca(opts: &CaOpts, unlock: bool) -> Result<Ca> {
    open_ca_with(opts, unlock, None)
}

/// Opens the CA with the inventory at `database` (`sqlite://PATH`, `postgres://…`; default
/// `[server] database`, else the directory's inventory.db: [`twoway_ca::Database::for_ca`]).
pub fn open_ca_with(opts: &CaOpts, unlock: bool, database: Option<&str>) -> Result<Ca> {
    let database = database
        .map(|d| d.parse::<twoway_ca::Database>())
        .transpose()
        .map_err(|e| usage(format!("--database {e}")))?;
    let mut ca = Ca::open_with_database(&opts.ca_dir, database.as_ref())?;
    if unlock {
        let pass = passphrase(opts)?;
        ca.unlock(pass.as_ref().map(|p| p.as_slice()))?;
    }
    Ok(ca)
}

/// Parses the duration given to `flag` (a usage error names the flag).
pub fn duration_arg(flag: &str, v: &str) -> Result<time::Duration> {
    twoway_pki::parse_duration(v).map_err(|e| usage(format!("{flag}: {e}")))
}

/// A single-threaded runtime for a command's async work.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A multi-threaded runtime (the online CA).
pub fn multi_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs (tracing) to stderr at `RUST_LOG` (default info), in colour only on a terminal
/// (and not with `NO_COLOR` set).
pub fn init_logging() {
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
