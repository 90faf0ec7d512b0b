//! `twoway agent`: enroll with a token, then renew forever (or once, for cron).

use crate::usage;
use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  twoway agent --ca https://ca.example.internal:9000 --ca-fingerprint 3f2a…(root SHA-256) \\
      --token twt_… --san DNS:api.example.internal --out /etc/twoway/api \\
      --reload-cmd 'systemctl reload nginx'
  twoway agent --ca https://ca.example.internal:9000 --ca-fingerprint 3f2a… \\
      --san DNS:api.example.internal --out /etc/twoway/api --once     # from cron

Writes cert.pem, chain.pem, key.pem (0600) and ca.pem atomically; renews at about 2/3 of
the lifetime with a fresh key; retries with capped exponential backoff while the CA is down.")]
pub struct AgentArgs {
    /// The CA's URL, https://host:port.
    #[arg(long, env = "TWOWAY_CA_URL")]
    ca: String,
    /// SHA-256 fingerprint of the CA's root certificate (hex; colons allowed).
    #[arg(long, env = "TWOWAY_CA_FINGERPRINT")]
    ca_fingerprint: String,
    /// One-time enrollment token (needed until a certificate exists in --out).
    #[arg(long, env = "TWOWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Name to ask for; repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    sans: Vec<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Key type of the keys made here.
    #[arg(long, default_value = "p256")]
    key_type: twoway_pki::KeyType,
    /// Shell command to run after new files are in place.
    #[arg(long)]
    reload_cmd: Option<String>,
    /// Send SIGHUP to the pid in this file after new files are in place.
    #[arg(long)]
    signal_pid_file: Option<PathBuf>,
    /// Obtain or renew if due, then exit.
    #[arg(long)]
    once: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9101).
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

pub fn run(a: AgentArgs) -> Result<ExitCode> {
    let sans = a
        .sans
        .iter()
        .map(|s| s.parse::<twoway_pki::San>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(format!("--san: {e}")))?;
    if sans.is_empty() && a.token.is_some() {
        return Err(usage(
            "no --san given: name what the certificate is for, e.g. --san DNS:api.example.internal",
        ));
    }
    let mut cfg =
        twoway_agent::AgentConfig::new(a.ca.clone(), a.ca_fingerprint.clone(), sans, a.out.clone());
    cfg.token = a.token.clone();
    cfg.key_type = a.key_type;
    cfg.reload_cmd = a.reload_cmd.clone();
    cfg.signal_pid_file = a.signal_pid_file.clone();
    cfg.once = a.once;
    crate::output::init_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let status = Arc::new(twoway_agent::AgentStatus::default());
    rt.block_on(async {
        if let Some(addr) = a.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            tokio::spawn(twoway_agent::serve_metrics(l, status.clone()));
        }
        tokio::select! {
            r = twoway_agent::run(cfg, status.clone()) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
