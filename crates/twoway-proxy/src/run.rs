//! Start-up (validate, load, bind), the reload loop, and graceful drain.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use twoway_tls::Reloadable;

use crate::client::ClientListener;
use crate::config::{ClientSpec, CrlSource, ProxyConfig, ServerSpec, ValidConfig};
use crate::http::HttpCtx;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::ocsp::OcspChecker;
use crate::server::ServerListener;
use crate::state::{self, ClientState, CrlCache, ServerState};
use crate::tracker::{Spawner, Tracker};
use crate::ProxyError;

struct LoadedServer {
    spec: ServerSpec,
    state: Arc<Reloadable<ServerState>>,
    fingerprint: [u8; 32],
    metrics: Arc<ListenerMetrics>,
    ocsp: Option<Arc<OcspChecker>>,
}

struct LoadedClient {
    spec: ClientSpec,
    state: Arc<Reloadable<ClientState>>,
    fingerprint: [u8; 32],
    metrics: Arc<ListenerMetrics>,
    ocsp: Option<Arc<OcspChecker>>,
}

/// A proxy whose configuration is validated and whose TLS material is loaded, ready to
/// bind and serve.
pub struct Proxy {
    cfg: ValidConfig,
    notes: Vec<String>,
    config_path: Option<PathBuf>,
    servers: Vec<LoadedServer>,
    clients: Vec<LoadedClient>,
    crl_cache: Arc<CrlCache>,
    metrics: Arc<Metrics>,
    workers: Spawner,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("servers", &self.servers.len())
            .field("clients", &self.clients.len())
            .finish()
    }
}

fn crl_urls<'a>(
    sources: impl Iterator<Item = (&'a CrlSource, Duration)>,
) -> BTreeMap<String, Duration> {
    let mut out: BTreeMap<String, Duration> = BTreeMap::new();
    for (src, every) in sources {
        if let CrlSource::Url(u) = src {
            let e = out.entry(u.clone()).or_insert(every);
            *e = (*e).min(every);
        }
    }
    out
}

impl Proxy {
    /// Validates `config`, fetches CRL URLs once, enrolls the listeners that get their
    /// certificate from a CA (starting their in-process agents, which keep renewing) and
    /// loads every listener's certificate, key, CA bundle, CRLs and rules. Nothing listens
    /// yet. `config_path` (the TOML file, if any) is watched for rule changes.
    pub async fn prepare(
        config: &ProxyConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Self, ProxyError> {
        Self::prepare_inner(config, config_path, true).await
    }

    /// What `--check-config` runs: [`Proxy::prepare`] without contacting any CA (an
    /// enrollment token is single use), so enrolling listeners are validated but not loaded.
    pub async fn check(config: &ProxyConfig) -> Result<Self, ProxyError> {
        Self::prepare_inner(config, None, false).await
    }

    async fn prepare_inner(
        config: &ProxyConfig,
        config_path: Option<PathBuf>,
        enroll: bool,
    ) -> Result<Self, ProxyError> {
        let cfg = config.validate()?;
        let mut notes = Vec::new();
        let crl_cache = Arc::new(CrlCache::default());
        let urls = crl_urls(
            cfg.servers
                .iter()
                .flat_map(|s| s.crls.iter().map(|c| (c, s.crl_refresh)))
                .chain(
                    cfg.clients
                        .iter()
                        .flat_map(|s| s.crls.iter().map(|c| (c, s.crl_refresh))),
                ),
        );
        for url in urls.keys() {
            let bytes = state::fetch_crl(url).await?;
            crl_cache.put(url, bytes);
        }
        let metrics = Arc::new(Metrics::default());
        let mut servers = Vec::new();
        for spec in &cfg.servers {
            if let Some(e) = &spec.enroll {
                if !enroll {
                    notes.push(format!(
                        "server {:?}: listen {} -> {:?}, certificate from the CA at {} (not contacted by a check)",
                        spec.name, spec.listen, spec.backend, e.ca
                    ));
                    continue;
                }
                let status = crate::enroll::start(&spec.name, e).await?;
                metrics.agent(&spec.name, status);
            }
            let m = metrics.listener(&spec.name, if spec.http { "http" } else { "tcp" });
            let ocsp = spec
                .ocsp
                .clone()
                .map(|o| OcspChecker::new(o, &spec.name, "client", m.clone()));
            let (st, fingerprint) = state::load_server(spec, &crl_cache, &ocsp)?;
            m.set_cert_not_after(st.not_after);
            m.set_crl_next_update(st.crl_next_update.clone());
            servers.push(LoadedServer {
                spec: spec.clone(),
                state: Arc::new(Reloadable::new(st)),
                fingerprint,
                metrics: m,
                ocsp,
            });
        }
        let mut clients = Vec::new();
        for spec in &cfg.clients {
            if let Some(e) = &spec.enroll {
                if !enroll {
                    notes.push(format!(
                        "client {:?}: listen {} -> {}, certificate from the CA at {} (not contacted by a check)",
                        spec.name, spec.listen, spec.target, e.ca
                    ));
                    continue;
                }
                let status = crate::enroll::start(&spec.name, e).await?;
                metrics.agent(&spec.name, status);
            }
            let m = metrics.listener(&spec.name, "client");
            let ocsp = spec
                .ocsp
                .clone()
                .map(|o| OcspChecker::new(o, &spec.name, "server", m.clone()));
            let (st, fingerprint) = state::load_client(spec, &crl_cache, &ocsp)?;
            m.set_cert_not_after(st.not_after);
            m.set_crl_next_update(st.crl_next_update.clone());
            clients.push(LoadedClient {
                spec: spec.clone(),
                state: Arc::new(Reloadable::new(st)),
                fingerprint,
                metrics: m,
                ocsp,
            });
        }
        Ok(Self {
            cfg,
            notes,
            config_path,
            servers,
            clients,
            crl_cache,
            metrics,
            workers: Spawner::default(),
        })
    }

    /// Serves accepted connections on these runtimes (round robin) instead of the one
    /// [`Proxy::run`] runs on. The binary passes one current-thread runtime per worker
    /// thread: a connection then lives on one thread, and its tasks (client side, backend
    /// side, pooled backend connections it opened) wake each other without crossing
    /// threads. Accepting, reloading and the admin listener stay on the calling runtime.
    pub fn with_workers(mut self, workers: Vec<tokio::runtime::Handle>) -> Self {
        self.workers = Spawner::new(workers);
        self
    }

    /// A one-line summary per listener, for `--check-config`.
    pub fn summary(&self) -> Vec<String> {
        let mut out = self.notes.clone();
        for s in &self.servers {
            out.push(format!(
                "server {:?}: listen {} -> {:?}, {} mode, {} rule(s), {} route(s), {} CRL source(s)",
                s.spec.name,
                s.spec.listen,
                s.spec.backend,
                if s.spec.http { "HTTP" } else { "TCP" },
                s.spec.policy.rules().len(),
                s.spec.routes.routes.len(),
                s.spec.crls.len()
            ));
        }
        for c in &self.clients {
            out.push(format!(
                "client {:?}: listen {} -> {} (server name {:?}), {} expected identity rule(s)",
                c.spec.name,
                c.spec.listen,
                c.spec.target,
                c.spec.server_name.to_str(),
                c.spec.policy.rules().len()
            ));
        }
        out
    }

    /// Binds every listener (all or none), serves until `shutdown` resolves, then stops
    /// accepting and lets open connections finish for up to the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tracker = Tracker::default();
        let ready = Arc::new(AtomicBool::new(false));

        // Bind everything first so a port in use fails before anything serves.
        let mut bound_servers = Vec::new();
        for s in &self.servers {
            bound_servers.push(bind(s.spec.listen, &format!("server {:?}", s.spec.name))?);
        }
        let mut bound_clients = Vec::new();
        for c in &self.clients {
            bound_clients.push(bind(c.spec.listen, &format!("client {:?}", c.spec.name))?);
        }
        let admin = match self.cfg.admin {
            Some(a) => Some(bind(a, "admin")?),
            None => None,
        };

        let mut tasks = Vec::new();
        for (s, listener) in self.servers.iter().zip(bound_servers) {
            let http = if s.spec.http {
                Some(Arc::new(HttpCtx::new(
                    &s.spec.name,
                    &s.spec.backend,
                    &s.spec.backend_protocol,
                    s.metrics.clone(),
                    s.state.clone(),
                )?))
            } else {
                None
            };
            tracing::info!(
                listener = %s.spec.name,
                listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                backend = ?s.spec.backend,
                mode = if s.spec.http { "http" } else { "tcp" },
                "server listener ready"
            );
            let l = ServerListener {
                spec: Arc::new(s.spec.clone()),
                listener,
                state: s.state.clone(),
                metrics: s.metrics.clone(),
                http,
                tracker: tracker.clone(),
                shutdown: stop_rx.clone(),
                workers: self.workers.clone(),
            };
            tasks.push(tokio::spawn(l.run()));
        }
        for (c, listener) in self.clients.iter().zip(bound_clients) {
            tracing::info!(
                listener = %c.spec.name,
                listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                target = %c.spec.target,
                "client listener ready"
            );
            let l = ClientListener {
                spec: Arc::new(c.spec.clone()),
                listener,
                state: c.state.clone(),
                metrics: c.metrics.clone(),
                tracker: tracker.clone(),
                shutdown: stop_rx.clone(),
                workers: self.workers.clone(),
            };
            tasks.push(tokio::spawn(l.run()));
        }
        if let Some(listener) = admin {
            tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin listener ready");
            tokio::spawn(crate::admin::serve(
                listener,
                self.metrics.clone(),
                ready.clone(),
                stop_rx.clone(),
            ));
        }
        // CRL URL refreshers.
        let urls = crl_urls(
            self.servers
                .iter()
                .flat_map(|s| s.spec.crls.iter().map(|c| (c, s.spec.crl_refresh)))
                .chain(
                    self.clients
                        .iter()
                        .flat_map(|s| s.spec.crls.iter().map(|c| (c, s.spec.crl_refresh))),
                ),
        );
        for (url, every) in urls {
            let cache = self.crl_cache.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => return,
                    }
                    match state::fetch_crl(&url).await {
                        Ok(b) => cache.put(&url, b),
                        Err(e) => {
                            tracing::warn!(error = %e, "CRL refresh failed; keeping the last one")
                        }
                    }
                }
            });
        }
        let reload_interval = self.cfg.reload_interval;
        let drain_timeout = self.cfg.drain_timeout;
        let reloader = Reloader {
            servers: self.servers,
            clients: self.clients,
            crl_cache: self.crl_cache,
            config_path: self.config_path,
            config_text: None,
        };
        tokio::spawn(reloader.run(reload_interval, stop_rx.clone()));

        ready.store(true, Ordering::Release);
        tracing::info!("proxy running");
        shutdown.await;
        ready.store(false, Ordering::Release);
        tracing::info!(
            open = tracker.open(),
            deadline_secs = drain_timeout.as_secs_f64(),
            "shutting down: no new connections, draining open ones"
        );
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        let left = tracker.drain(drain_timeout).await;
        if left > 0 {
            tracing::warn!(left, "drain deadline passed; closing remaining connections");
        } else {
            tracing::info!("drained");
        }
        Ok(())
    }
}

fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, ProxyError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ProxyError::bind(addr, what, e))?;
    socket
        .set_reuseaddr(true)
        .map_err(|e| ProxyError::bind(addr, what, e))?;
    socket
        .bind(addr)
        .map_err(|e| ProxyError::bind(addr, what, e))?;
    socket
        .listen(4096)
        .map_err(|e| ProxyError::bind(addr, what, e))
}

/// Watches inputs and rebuilds listener state when they change or on SIGHUP.
struct Reloader {
    servers: Vec<LoadedServer>,
    clients: Vec<LoadedClient>,
    crl_cache: Arc<CrlCache>,
    config_path: Option<PathBuf>,
    config_text: Option<String>,
}

impl Reloader {
    async fn run(mut self, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; file polling still reloads");
                None
            }
        };
        if let Some(p) = &self.config_path {
            self.config_text = std::fs::read_to_string(p).ok();
        }
        let mut last_errors: BTreeMap<String, String> = BTreeMap::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => true,
                _ = stop.changed() => return,
            };
            if force {
                tracing::info!("SIGHUP: reloading certificates, CA bundles, CRLs and rules");
            }
            self.reload_config_file(force);
            for s in &mut self.servers {
                let fp = match state::server_fingerprint(&s.spec, &self.crl_cache) {
                    Ok(fp) => fp,
                    Err(e) => {
                        note_error(&mut last_errors, &s.spec.name, &e);
                        continue;
                    }
                };
                if fp == s.fingerprint && !force {
                    continue;
                }
                s.fingerprint = fp;
                match state::load_server(&s.spec, &self.crl_cache, &s.ocsp) {
                    Ok((st, fp)) => {
                        s.fingerprint = fp;
                        s.metrics.set_cert_not_after(st.not_after);
                        s.metrics.set_crl_next_update(st.crl_next_update.clone());
                        s.state.store(st);
                        s.metrics.reload(true);
                        last_errors.remove(&s.spec.name);
                        tracing::info!(listener = %s.spec.name, "reloaded TLS material and rules");
                    }
                    Err(e) => {
                        s.metrics.reload(false);
                        last_errors.remove(&s.spec.name);
                        note_error(&mut last_errors, &s.spec.name, &e);
                    }
                }
            }
            for c in &mut self.clients {
                let fp = match state::client_fingerprint(&c.spec, &self.crl_cache) {
                    Ok(fp) => fp,
                    Err(e) => {
                        note_error(&mut last_errors, &c.spec.name, &e);
                        continue;
                    }
                };
                if fp == c.fingerprint && !force {
                    continue;
                }
                c.fingerprint = fp;
                match state::load_client(&c.spec, &self.crl_cache, &c.ocsp) {
                    Ok((st, fp)) => {
                        c.fingerprint = fp;
                        c.metrics.set_cert_not_after(st.not_after);
                        c.metrics.set_crl_next_update(st.crl_next_update.clone());
                        c.state.store(st);
                        c.metrics.reload(true);
                        last_errors.remove(&c.spec.name);
                        tracing::info!(listener = %c.spec.name, "reloaded TLS material and rules");
                    }
                    Err(e) => {
                        c.metrics.reload(false);
                        last_errors.remove(&c.spec.name);
                        note_error(&mut last_errors, &c.spec.name, &e);
                    }
                }
            }
        }
    }

    /// Re-reads the TOML file; on change, takes the new rules, routes and file paths of
    /// listeners with the same name (addresses, backends and modes need a restart).
    fn reload_config_file(&mut self, force: bool) {
        let Some(path) = &self.config_path else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        if !force && self.config_text.as_deref() == Some(text.as_str()) {
            return;
        }
        self.config_text = Some(text.clone());
        let mut parsed = match ProxyConfig::from_toml(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "config changed but does not parse; keeping the running one");
                return;
            }
        };
        if let Some(dir) = path.parent() {
            parsed.resolve_paths(dir);
        }
        let valid = match parsed.validate() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "config changed but is invalid; keeping the running one");
                return;
            }
        };
        for s in &mut self.servers {
            if let Some(new) = valid.servers.iter().find(|n| n.name == s.spec.name) {
                if new.listen != s.spec.listen
                    || new.backend != s.spec.backend
                    || new.http != s.spec.http
                    || new.proxy_protocol != s.spec.proxy_protocol
                {
                    tracing::warn!(listener = %s.spec.name, "listen address, backend or mode changed: restart to apply those; rules and TLS files apply now");
                }
                if new.ocsp != s.spec.ocsp {
                    tracing::warn!(listener = %s.spec.name, "OCSP settings changed: restart to apply them");
                }
                let old = std::mem::replace(&mut s.spec, new.clone());
                s.spec.listen = old.listen;
                s.spec.backend = old.backend;
                s.spec.http = old.http;
                s.spec.proxy_protocol = old.proxy_protocol;
                s.spec.tls.alpn = old.tls.alpn;
                if old.enroll.is_some() || new.enroll.is_some() {
                    // The running agent owns this listener's certificate; starting or
                    // stopping an enrollment needs a restart.
                    if old.enroll.is_some() != new.enroll.is_some() {
                        tracing::warn!(listener = %s.spec.name, "enrollment added or removed: restart to apply that");
                        s.spec.client_ca = old.client_ca;
                    }
                    s.spec.enroll = old.enroll;
                    s.spec.cert = old.cert;
                    s.spec.key = old.key;
                }
            }
        }
        for c in &mut self.clients {
            if let Some(new) = valid.clients.iter().find(|n| n.name == c.spec.name) {
                if new.ocsp != c.spec.ocsp {
                    tracing::warn!(listener = %c.spec.name, "OCSP settings changed: restart to apply them");
                }
                let old = std::mem::replace(&mut c.spec, new.clone());
                c.spec.listen = old.listen;
                c.spec.target = old.target;
                if old.enroll.is_some() || new.enroll.is_some() {
                    if old.enroll.is_some() != new.enroll.is_some() {
                        tracing::warn!(listener = %c.spec.name, "enrollment added or removed: restart to apply that");
                        c.spec.server_ca = old.server_ca;
                    }
                    c.spec.enroll = old.enroll;
                    c.spec.cert = old.cert;
                    c.spec.key = old.key;
                }
            }
        }
        tracing::info!(file = %path.display(), "configuration file re-read");
    }
}

fn note_error(last: &mut BTreeMap<String, String>, listener: &str, e: &ProxyError) {
    let text = e.to_string();
    if last.get(listener) != Some(&text) {
        tracing::warn!(listener, error = %text, "reload failed; keeping the running configuration");
        last.insert(listener.to_owned(), text);
    }
}
