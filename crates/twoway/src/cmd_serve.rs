//! `twoway ca serve`: the online CA.

use crate::cmd_ca::{actor, open_ca_with};
use crate::{usage, CaOpts};
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  twoway ca serve --ca-dir /srv/ca --listen 0.0.0.0:9000 --san DNS:ca.example.internal
  twoway ca serve --listen 127.0.0.1:9000 --http-listen 127.0.0.1:9080   # OCSP/CRL over HTTP too
  twoway ca serve --database postgres://postgres@127.0.0.1:5432/twoway  # one of several replicas

Routes: POST /v1/enroll, /v1/renew, /v1/sign, /v1/revoke, /v1/tokens; GET /v1/certificates,
/roots.pem, /crl, /ocsp, /healthz, /metrics (docs/api.md).")]
pub struct ServeArgs {
    #[command(flatten)]
    ca: CaOpts,
    /// HTTPS address (default: [server] listen in ca.toml, else 127.0.0.1:9000).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Also serve /ocsp, /crl, /roots.pem, /healthz and /metrics over plain HTTP here.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Inventory database: sqlite://PATH or postgres://user@host:port/db
    /// (default: [server] database, else the CA directory's inventory.db).
    #[arg(long, env = "TWOWAY_DATABASE")]
    database: Option<String>,
    /// SAN of the server's own certificate; repeatable (default: [server] sans).
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    sans: Vec<String>,
    /// Validity of the server's own certificate (renewed at 2/3).
    #[arg(long, default_value = "24h")]
    server_cert_ttl: String,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let database = a.database.clone();
    let mut ca = open_ca_with(&a.ca, true, database.as_deref())?;
    let cfg = ca.config().server.clone();
    // SQLite (the default) is read in microseconds: revocations are checked per request.
    let local_store = database
        .as_deref()
        .or(cfg.database.as_deref())
        .is_none_or(|u| u.starts_with("sqlite://"));
    let listen: SocketAddr = match a.listen {
        Some(l) => l,
        None => cfg.listen.parse().map_err(|_| {
            usage(format!(
                "[server] listen {:?} is not an address",
                cfg.listen
            ))
        })?,
    };
    let raw_sans = if a.sans.is_empty() {
        cfg.sans.clone()
    } else {
        a.sans.clone()
    };
    let sans = raw_sans
        .iter()
        .map(|s| s.parse::<twoway_pki::San>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(format!("--san: {e}")))?;
    let ttl = twoway_pki::parse_duration(&a.server_cert_ttl)
        .map_err(|e| usage(format!("--server-cert-ttl: {e}")))?;
    let opts = twoway_server::ServeOptions {
        listen,
        http_listen: a.http_listen,
        sans,
        server_cert_ttl: ttl,
        ocsp_cert_ttl: time::Duration::days(7),
        actor: format!("server:{}", actor(&a.ca).trim_start_matches("cli:")),
        check_revocations_per_request: local_store,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The store and key stay where they are; `ca` moves into the server.
    let root_fp = twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
        .first()
        .map(|d| twoway_pki::sha256_hex(d))
        .unwrap_or_default();
    let _ = &mut ca;
    rt.block_on(async move {
        let running = twoway_server::start(ca, opts)
            .await
            .context("cannot start the CA server")?;
        let mut out = std::io::stdout();
        writeln!(out, "twoway CA serving https://{}", running.https_addr)?;
        if let Some(h) = running.http_addr {
            writeln!(out, "OCSP, CRL and roots also on http://{h}")?;
        }
        writeln!(out, "root fingerprint (SHA-256) {root_fp}")?;
        out.flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("shutting down");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the inventory named by a database URL.
pub fn open_store(url: &str) -> Result<Box<dyn twoway_store::Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let s = twoway_store::SqliteStore::open(std::path::Path::new(path))
            .with_context(|| format!("cannot open the SQLite inventory {path}"))?;
        return Ok(Box::new(s));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let s = twoway_store::PostgresStore::connect(url)
            .with_context(|| format!("cannot open the PostgreSQL inventory {}", redact(url)))?;
        return Ok(Box::new(s));
    }
    Err(usage(format!(
        "--database {:?}: use sqlite://PATH or postgres://user@host:port/db",
        redact(url)
    )))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparsable URL)".into();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let host = host.split_once('?').map_or(host, |(h, _)| h);
    match auth {
        Some(a) => {
            let user = a.split_once(':').map_or(a, |(u, _)| u);
            format!("{scheme}://{user}@{host}")
        }
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_drops_the_password_and_parameters() {
        assert_eq!(
            super::redact("postgres://u:secret@db:5432/x?password=p"),
            "postgres://u@db:5432/x"
        );
        assert_eq!(super::redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(super::redact("nonsense"), "(unparsable URL)");
    }
}
