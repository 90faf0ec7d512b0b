//! `twoway agent`: enroll with a token, then renew forever (or once, for cron).

use crate::cli::AgentArgs;
use crate::context::{init_logging, runtime};
use crate::exit::usage;
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::sync::Arc;

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
    init_logging();
    let rt = runtime()?;
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
