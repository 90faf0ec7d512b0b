//! `twoway ca serve`: the online CA.

use crate::cli::ServeArgs;
use crate::context::{actor, duration_arg, init_logging, multi_thread_runtime, open_ca_with};
use crate::exit::usage;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::process::ExitCode;
use twoway_ca::{Admins, BadAdmin};

/// `[server] admins` of `settings` and the `--admin` flags, each once.
fn admins_of(settings: &twoway_ca::CaSettings, flags: &Admins) -> Admins {
    let mut all = settings.server.admins.clone();
    all.extend(flags);
    all
}

/// The entries, for people.
fn admins_list(admins: &Admins) -> String {
    admins.iter().collect::<Vec<_>>().join(", ")
}

/// The start-up line about administrators.
fn admins_line(admins: &Admins) -> String {
    if admins.is_empty() {
        "admins: none, so the admin API (tokens, listings, revoking any certificate, /v1/sign) \
         refuses every certificate; list one in [server] admins in ca.toml and send SIGHUP"
            .to_string()
    } else {
        format!(
            "admins: {} (SIGHUP re-reads [server] admins in ca.toml)",
            admins_list(admins)
        )
    }
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let flag_admins = Admins::parse(&a.admins).map_err(|e| match e {
        BadAdmin::Fingerprint(adm) => usage(format!(
            "--admin {adm:?}: a fingerprint is sha256:<64 hex digits>"
        )),
        BadAdmin::San(e) => usage(format!("--admin: {e}")),
        _ => usage("--admin: not sha256:<hex> nor a SAN"),
    })?;
    let mut ca = open_ca_with(&a.ca, true, a.database.as_deref())?;
    let cfg = ca.config().server.clone();
    // SQLite (the default) is read in microseconds: revocations are checked per request.
    let local_store = ca.database().is_none_or(|d| d.is_local());
    let listen: SocketAddr = match a.listen {
        Some(l) => l,
        None => cfg.listen.parse().map_err(|_| {
            usage(format!(
                "[server] listen {:?} is not an address",
                cfg.listen
            ))
        })?,
    };
    let (raw_sans, sans_from) = if a.sans.is_empty() {
        (cfg.sans.clone(), "[server] sans in ca.toml")
    } else {
        (a.sans.clone(), "--san")
    };
    let sans = raw_sans
        .iter()
        .map(|s| s.parse::<twoway_pki::San>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(format!("--san: {e}")))?;
    let ttl = duration_arg("--server-cert-ttl", &a.server_cert_ttl)?;
    let admins = admins_of(ca.settings(), &flag_admins);
    let opts = twoway_server::ServeOptions {
        listen,
        http_listen: a.http_listen,
        sans: sans.clone(),
        server_cert_ttl: ttl,
        ocsp_cert_ttl: time::Duration::days(7),
        actor: format!("server:{}", actor(&a.ca).trim_start_matches("cli:")),
        admins: admins.clone(),
        check_revocations_per_request: local_store,
    };
    init_logging();
    let rt = multi_thread_runtime()?;
    // The store and key stay where they are; `ca` moves into the server.
    let root_fp = twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
        .first()
        .map(|d| twoway_pki::sha256_hex(d))
        .unwrap_or_default();
    let _ = &mut ca;
    let names = raw_sans.join(", ");
    let config_path = a.ca.ca_dir.join(twoway_ca::layout::CONFIG);
    rt.block_on(async move {
        let running = twoway_server::start(ca, opts).await.map_err(|e| match e {
            twoway_server::Error::Ca(ca_err)
                if ca_err.kind() == twoway_ca::ErrorKind::BadInput =>
            {
                anyhow::Error::from(ca_err).context(format!(
                    "cannot issue the server's own certificate for {names} ({sans_from}): \
                     give --san names this CA may certify"
                ))
            }
            other => anyhow::Error::from(other).context("cannot start the CA server"),
        })?;
        // The start-up lines go to stdout for people and scripts; a reader that went away
        // does not stop the server.
        let mut banner = format!("twoway CA serving https://{}\n", running.https_addr);
        if let Some(h) = running.http_addr {
            banner.push_str(&format!("OCSP, CRL and roots also on http://{h}\n"));
        }
        banner.push_str(&format!("root fingerprint (SHA-256) {root_fp}\n"));
        banner.push_str(&format!(
            "serving as {names} (the server's own certificate, renewed by itself)\n"
        ));
        banner.push_str(&admins_line(&admins));
        banner.push('\n');
        let _ = crate::output::write_out(&banner);
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => reload_admins(&running, &config_path, &flag_admins),
            }
        }
        tracing::info!("shutting down: retiring the server's own certificates");
        match tokio::time::timeout(std::time::Duration::from_secs(10), running.retire()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not retire the server's own certificates; they expire on their own"),
            Err(_) => tracing::warn!("retiring the server's own certificates took over 10 s; they expire on their own"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: re-reads `[server] admins` (and the dashboard's `auditors`) from ca.toml. A file that does not load keeps the
/// running list, and the log says why.
fn reload_admins(running: &twoway_server::Running, path: &std::path::Path, flags: &Admins) {
    match twoway_ca::CaSettings::load(path) {
        Ok(settings) => {
            let admins = admins_of(&settings, flags);
            tracing::info!(
                admins = %if admins.is_empty() { "none".to_string() } else { admins_list(&admins) },
                "SIGHUP: reloaded [server] admins from {}",
                path.display()
            );
            running.state.set_admins(admins);
            running.state.set_auditors(settings.server.auditors.clone());
        }
        Err(e) => tracing::warn!(
            error = %e,
            "SIGHUP: {} does not load; the admins stay as they were",
            path.display()
        ),
    }
}
