//! `twoway proxy`: mutual TLS in front of an app (server) or behind a client (client).
//!
//! This module only maps flags (or a TOML file) to [`twoway_proxy::ProxyConfig`], builds
//! the runtime and waits for SIGTERM/SIGINT; the proxy itself lives in `twoway-proxy`.

use std::path::PathBuf;

use anyhow::Context as _;
use twoway_proxy::{ClientListenerConfig, Proxy, ProxyConfig, ServerListenerConfig};

const AFTER_HELP: &str = "\
Examples:
  # mTLS in front of a local app; only prod workloads may connect
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\
      --cert chain.pem --key key.pem --client-ca ca.pem \\
      --allow 'spiffe://example.org/ns/prod/*' --http --admin 127.0.0.1:9901

  # no key files at all: enroll with a twoway CA and renew in-process
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 --http \\
      --enroll-token twt_… --ca https://ca.example.internal:9000 \\
      --ca-fingerprint 3f2a…(root SHA-256) --san DNS:api.example.internal

  # a gRPC server (HTTP/2 without TLS: h2c) behind mTLS, for HTTP/1.1 and HTTP/2 clients
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:50051 --http \\
      --backend-protocol h2c --cert chain.pem --key key.pem --client-ca ca.pem

  # a local plaintext port that reaches the server above over mTLS
  twoway proxy client --listen 127.0.0.1:15001 --target api.example.internal:8443 \\
      --cert client.pem --key client.key --server-ca ca.pem \\
      --expect-server 'spiffe://example.org/ns/prod/sa/api'

  # several listeners from one file (see docs/proxy.example.toml); validate first
  twoway proxy --config proxy.toml --check-config
  twoway proxy --config proxy.toml

Rules (--allow, --expect-server): spiffe://… or uri:GLOB, dns:GLOB, ip:GLOB, cn:GLOB,
ou:GLOB, issuer:SHA256HEX; '*' matches any run of characters ('*' in dns: stays inside
one label). With no rule every client holding a valid certificate is accepted; once a
rule exists, a client must match one.

Certificates, keys, CA bundles, CRL files and the config file are re-read when their
content changes (checked every second) and on SIGHUP; a broken file keeps the running
configuration. SIGTERM/SIGINT stop accepting and let connections finish (--drain-timeout).
Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=twoway::access=info,warn).";

/// Put mutual TLS in front of an app or behind a client.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP, subcommand_negates_reqs = true)]
pub struct ProxyArgs {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Run the listeners of a TOML file (see docs/proxy.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Load and check the configuration and every file it names, then exit.
    #[arg(long, global = true)]
    check_config: bool,
    /// Worker threads, each with its own single-threaded runtime (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    workers: Option<usize>,
    /// Admin listener for /metrics, /healthz and /ready (plain HTTP; keep it on loopback).
    #[arg(long, global = true, value_name = "ADDR")]
    admin: Option<String>,
    /// Seconds open connections get to finish after SIGTERM/SIGINT.
    #[arg(long, global = true, value_name = "SECS")]
    drain_timeout: Option<f64>,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Terminate mTLS and forward to a plaintext backend.
    #[command(after_help = SERVER_HELP)]
    Server(ServerArgs),
    /// Accept plaintext locally and originate mTLS to a target.
    #[command(after_help = CLIENT_HELP)]
    Client(ClientArgs),
}

const SERVER_HELP: &str = "\
Examples:
  # HTTP mode: only prod workloads may call the app on 127.0.0.1:8080; it receives
  # X-Forwarded-Client-Cert and X-Client-Identity
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\
      --cert chain.pem --key key.pem --client-ca ca.pem \\
      --allow 'spiffe://example.org/ns/prod/*' --http

  # TCP mode (any protocol), the client's identity in a PROXY protocol v2 header
  twoway proxy server --listen 0.0.0.0:5433 --backend 127.0.0.1:5432 \\
      --cert chain.pem --key key.pem --client-ca ca.pem --allow 'dns:*.db.example.internal' \\
      --proxy-protocol

  # no key files: enroll with a twoway CA and renew in-process
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 --http \\
      --enroll-token twt_… --ca https://ca.example.internal:9000 \\
      --ca-fingerprint 3f2a…(root SHA-256) --san DNS:api.example.internal

  # also ask each client certificate's OCSP responder (twoway ca serve's /ocsp)
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 --http \\
      --cert chain.pem --key key.pem --client-ca ca.pem \\
      --ocsp --ocsp-url http://ca.example.internal:9080/ocsp

Rules (--allow): spiffe://… or uri:GLOB, dns:GLOB, ip:GLOB, cn:GLOB, ou:GLOB,
issuer:SHA256HEX. See `twoway proxy --help` for reloading and signals.";

const CLIENT_HELP: &str = "\
Examples:
  # a local plaintext port that reaches an mTLS server as this workload
  twoway proxy client --listen 127.0.0.1:15001 --target api.example.internal:8443 \\
      --cert client.pem --key client.key --server-ca ca.pem \\
      --expect-server 'spiffe://example.org/ns/prod/sa/api'
  curl http://127.0.0.1:15001/        # reaches https://api.example.internal:8443/ over mTLS

  # the server name differs from the address dialled
  twoway proxy client --listen 127.0.0.1:15002 --target 10.0.0.5:8443 \\
      --server-name api.example.internal --cert client.pem --key client.key --server-ca ca.pem";

/// Flags of `twoway proxy server`; each has the same-named key in a `[[server]]` table.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Address to accept mTLS on.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Backend: HOST:PORT, or unix:/path/to.sock.
    #[arg(long, value_name = "ADDR")]
    backend: String,
    /// PEM certificate chain presented to clients (leaf first).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["enroll_token", "enroll_token_file", "state_dir"])]
    cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["enroll_token", "enroll_token_file", "state_dir"])]
    key: Option<PathBuf>,
    /// PEM bundle of the CAs client certificates must chain to (with --enroll-token: the
    /// CA's root unless given).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["enroll_token", "enroll_token_file", "state_dir"])]
    client_ca: Option<PathBuf>,
    /// CRL file (PEM or DER) or http:// URL; repeatable.
    #[arg(long, value_name = "FILE|URL")]
    crl: Vec<String>,
    /// Seconds between fetches of CRL URLs.
    #[arg(long, value_name = "SECS")]
    crl_refresh: Option<f64>,
    /// A CRL past its nextUpdate: refuse its issuer's certificates after the grace
    /// (default) or only warn.
    #[arg(long, value_name = "POLICY", value_parser = ["refuse", "warn"])]
    crl_stale: Option<String>,
    /// Seconds after a CRL's nextUpdate before --crl-stale refuse refuses (default 3600).
    #[arg(long, value_name = "SECS")]
    crl_stale_grace: Option<f64>,
    #[command(flatten)]
    ocsp: OcspArgs,
    #[command(flatten)]
    enroll: EnrollArgs,
    /// Identity rule a client must match; repeatable.
    #[arg(long, value_name = "RULE")]
    allow: Vec<String>,
    /// HTTP mode (HTTP/1.1 and HTTP/2, identity headers); TCP mode otherwise.
    #[arg(long)]
    http: bool,
    /// HTTP mode: compare route prefixes with paths ignoring ASCII case (backends that fold
    /// case).
    #[arg(long, requires = "http")]
    case_insensitive_paths: bool,
    /// HTTP mode: a peer (address or CIDR) whose X-Forwarded-For/Forwarded headers are passed
    /// on; repeatable. From other clients they are replaced by the client's address.
    #[arg(long, value_name = "CIDR", requires = "http")]
    trusted_proxy: Vec<String>,
    /// TCP mode: send a PROXY protocol v2 header with the client address and identity.
    #[arg(long)]
    proxy_protocol: bool,
    /// Also accept TLS 1.2.
    #[arg(long)]
    tls12: bool,
    /// Allow TLS session resumption (off: every connection is a full handshake).
    #[arg(long)]
    resumption: bool,
    /// Seconds allowed for the TLS handshake.
    #[arg(long, value_name = "SECS")]
    handshake_timeout: Option<f64>,
    /// Seconds without traffic before a connection is closed.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,
    /// Most concurrent connections; when full, the connection idle longest is closed to
    /// make room (default 10000).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most concurrent connections from one client address (IPv4 address or IPv6 /64;
    /// default 1024), shedding that address's idle ones first.
    #[arg(long, value_name = "N")]
    max_connections_per_address: Option<usize>,
    #[command(flatten)]
    backend_proto: BackendProtoArgs,
}

/// HTTP mode: the protocol spoken to the backend; each has the same-named key of the
/// listener.
#[derive(clap::Args, Debug)]
struct BackendProtoArgs {
    /// HTTP mode: the protocol spoken to the backend: http1 (default), h2c (HTTP/2 with prior
    /// knowledge, e.g. a gRPC server) or h2 (HTTP/2 over TLS, ALPN h2).
    #[arg(long, value_name = "PROTO", requires = "http", value_parser = ["http1", "h2c", "h2"])]
    backend_protocol: Option<String>,
    /// --backend-protocol h2: PEM bundle the backend's certificate chains to.
    #[arg(long, value_name = "FILE")]
    backend_ca: Option<PathBuf>,
    /// --backend-protocol h2: the name the backend's certificate must carry (default: the
    /// backend's host).
    #[arg(long, value_name = "NAME")]
    backend_server_name: Option<String>,
}

/// OCSP flags shared by `server` and `client`; each has the same-named key (`ocsp`,
/// `ocsp_url`, …) in the listener's table.
#[derive(clap::Args, Debug)]
struct OcspArgs {
    /// Ask the peer certificate's OCSP responder (its AIA URL, or --ocsp-url) before
    /// relaying; revoked and unknown certificates are refused, answers cached until
    /// nextUpdate.
    #[arg(long)]
    ocsp: bool,
    /// OCSP responder URL (http://…) used instead of the certificate's.
    #[arg(long, value_name = "URL", requires = "ocsp")]
    ocsp_url: Option<String>,
    /// Accept (counted, logged) when no usable OCSP answer can be had and none is cached,
    /// instead of refusing.
    #[arg(long, requires = "ocsp")]
    ocsp_fail_open: bool,
    /// A certificate naming no OCSP responder: allow (default, counted) or refuse.
    #[arg(long, value_name = "POLICY", value_parser = ["allow", "refuse"], requires = "ocsp")]
    ocsp_no_url: Option<String>,
    /// Seconds to wait for the OCSP responder (default 2).
    #[arg(long, value_name = "SECS", requires = "ocsp")]
    ocsp_timeout: Option<f64>,
    /// Seconds a failed OCSP query is remembered before asking again (default 5).
    #[arg(long, value_name = "SECS", requires = "ocsp")]
    ocsp_error_cache: Option<f64>,
}

/// Enrollment flags shared by `server` and `client`: the listener's certificate comes
/// from a twoway CA; each has the same-named key in the listener's `enroll` table.
#[derive(clap::Args, Debug)]
struct EnrollArgs {
    /// Get the certificate from a twoway CA with this one-time token (`twoway token
    /// create`) instead of --cert/--key: the key stays in memory and is renewed in-process.
    #[arg(long, value_name = "TOKEN", env = "TWOWAY_ENROLL_TOKEN", hide_env_values = true, requires_all = ["ca", "ca_fingerprint"], conflicts_with_all = ["cert", "key", "enroll_token_file"])]
    enroll_token: Option<String>,
    /// Like --enroll-token, with the token in a file (first line).
    #[arg(long, value_name = "FILE", requires_all = ["ca", "ca_fingerprint"], conflicts_with_all = ["cert", "key"])]
    enroll_token_file: Option<PathBuf>,
    /// With --enroll-token: the CA's URL, https://host:port.
    #[arg(long, value_name = "URL")]
    ca: Option<String>,
    /// With --enroll-token: SHA-256 fingerprint of the CA's root certificate.
    #[arg(long, value_name = "SHA256")]
    ca_fingerprint: Option<String>,
    /// With --enroll-token: a name to ask for (the token must allow it); repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    sans: Vec<String>,
    /// With --enroll-token: keep key (0600) and certificates in this directory so a restart
    /// renews instead of needing a new token (default: memory only).
    #[arg(long, value_name = "DIR", requires_all = ["ca", "ca_fingerprint"], conflicts_with_all = ["cert", "key"])]
    state_dir: Option<PathBuf>,
}

impl EnrollArgs {
    fn config(&self) -> Option<twoway_proxy::EnrollConfig> {
        match (&self.ca, &self.ca_fingerprint) {
            (Some(ca), Some(fp)) => Some(twoway_proxy::EnrollConfig {
                ca: ca.clone(),
                ca_fingerprint: fp.clone(),
                token: self.enroll_token.clone(),
                token_file: self.enroll_token_file.clone(),
                san: self.sans.clone(),
                state_dir: self.state_dir.clone(),
                ..Default::default()
            }),
            _ => None,
        }
    }
}

/// Flags of `twoway proxy client`; each has the same-named key in a `[[client]]` table.
#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// Local plaintext address to accept on.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// mTLS server to connect to, HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    target: String,
    /// PEM client certificate chain.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["enroll_token", "enroll_token_file", "state_dir"])]
    cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["enroll_token", "enroll_token_file", "state_dir"])]
    key: Option<PathBuf>,
    /// PEM bundle of the CAs the server certificate must chain to (with --enroll-token: the
    /// CA's root unless given).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["enroll_token", "enroll_token_file", "state_dir"])]
    server_ca: Option<PathBuf>,
    #[command(flatten)]
    enroll: EnrollArgs,
    /// Name to verify in the server certificate and send as SNI (default: target host).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Identity rule the server certificate must match; repeatable.
    #[arg(long, value_name = "RULE")]
    expect_server: Vec<String>,
    /// CRL file or http:// URL checked against the server certificate; repeatable.
    #[arg(long, value_name = "FILE|URL")]
    crl: Vec<String>,
    #[command(flatten)]
    ocsp: OcspArgs,
    /// Also allow TLS 1.2.
    #[arg(long)]
    tls12: bool,
    /// Seconds for connect plus handshake to the target.
    #[arg(long, value_name = "SECS")]
    handshake_timeout: Option<f64>,
    /// Seconds without traffic before a connection is closed.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,
    /// Most concurrent connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
}

fn build_config(args: &ProxyArgs) -> anyhow::Result<(ProxyConfig, Option<PathBuf>)> {
    let mut cfg = match (&args.config, &args.mode) {
        (Some(_), Some(_)) => anyhow::bail!(
            "use either --config FILE or `twoway proxy server|client` flags, not both"
        ),
        (None, None) => anyhow::bail!(
            "nothing to run: use `twoway proxy server …`, `twoway proxy client …` or `twoway proxy --config FILE` (see --help)"
        ),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let mut cfg = ProxyConfig::from_toml(&text)
                .with_context(|| format!("config file {}", path.display()))?;
            if let Some(dir) = path.parent() {
                cfg.resolve_paths(dir);
            }
            cfg
        }
        (None, Some(Mode::Server(s))) => ProxyConfig {
            server: vec![ServerListenerConfig {
                name: None,
                listen: s.listen.clone(),
                backend: s.backend.clone(),
                cert: s.cert.clone().unwrap_or_default(),
                key: s.key.clone().unwrap_or_default(),
                client_ca: s.client_ca.clone().unwrap_or_default(),
                crl: s.crl.clone(),
                crl_refresh_secs: s.crl_refresh,
                crl_stale: s.crl_stale.clone(),
                crl_stale_grace_secs: s.crl_stale_grace,
                ocsp: s.ocsp.ocsp,
                ocsp_url: s.ocsp.ocsp_url.clone(),
                ocsp_fail_open: s.ocsp.ocsp_fail_open,
                ocsp_no_url: s.ocsp.ocsp_no_url.clone(),
                ocsp_timeout_secs: s.ocsp.ocsp_timeout,
                ocsp_error_cache_secs: s.ocsp.ocsp_error_cache,
                enroll: s.enroll.config(),
                allow: s.allow.clone(),
                http: s.http,
                route: Vec::new(),
                case_insensitive_paths: s.case_insensitive_paths,
                trusted_proxies: s.trusted_proxy.clone(),
                proxy_protocol: s.proxy_protocol,
                tls12: s.tls12,
                resumption: s.resumption,
                handshake_timeout_secs: s.handshake_timeout,
                idle_timeout_secs: s.idle_timeout,
                max_connections: s.max_connections,
                max_connections_per_address: s.max_connections_per_address,
                backend_protocol: s.backend_proto.backend_protocol.clone(),
                backend_ca: s.backend_proto.backend_ca.clone().unwrap_or_default(),
                backend_server_name: s.backend_proto.backend_server_name.clone(),
            }],
            ..ProxyConfig::default()
        },
        (None, Some(Mode::Client(c))) => ProxyConfig {
            client: vec![ClientListenerConfig {
                name: None,
                listen: c.listen.clone(),
                target: c.target.clone(),
                cert: c.cert.clone().unwrap_or_default(),
                key: c.key.clone().unwrap_or_default(),
                server_ca: c.server_ca.clone().unwrap_or_default(),
                enroll: c.enroll.config(),
                crl: c.crl.clone(),
                crl_refresh_secs: None,
                crl_stale: None,
                crl_stale_grace_secs: None,
                ocsp: c.ocsp.ocsp,
                ocsp_url: c.ocsp.ocsp_url.clone(),
                ocsp_fail_open: c.ocsp.ocsp_fail_open,
                ocsp_no_url: c.ocsp.ocsp_no_url.clone(),
                ocsp_timeout_secs: c.ocsp.ocsp_timeout,
                ocsp_error_cache_secs: c.ocsp.ocsp_error_cache,
                server_name: c.server_name.clone(),
                expect_server: c.expect_server.clone(),
                tls12: c.tls12,
                handshake_timeout_secs: c.handshake_timeout,
                idle_timeout_secs: c.idle_timeout,
                max_connections: c.max_connections,
            }],
            ..ProxyConfig::default()
        },
    };
    // Flags override the file.
    if args.workers.is_some() {
        cfg.workers = args.workers;
    }
    if args.admin.is_some() {
        cfg.admin = args.admin.clone();
    }
    if args.drain_timeout.is_some() {
        cfg.drain_timeout_secs = args.drain_timeout;
    }
    Ok((cfg, args.config.clone()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `twoway proxy` until SIGTERM/SIGINT (or validates with `--check-config`).
pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    crate::context::init_logging();
    // Harmless when the binary already installed aws-lc-rs: configs name their provider.
    let _ = twoway_tls::provider().install_default();

    let (cfg, path) = build_config(&args)?;
    let valid = cfg.validate().context("proxy configuration")?;
    // Every runtime is current-thread: a connection lives on one thread, and its tasks
    // (client side, backend side) wake each other without crossing threads. With one worker
    // everything runs on the main thread; with N, the main thread accepts, reloads and
    // serves the admin listener, and hands each connection to one of N worker threads.
    let workers = cfg.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("twoway-proxy")
        .build()
        .context("cannot start the async runtime")?;
    let (stop_workers, worker_stop) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    let mut handles = Vec::new();
    if workers > 1 {
        for i in 0..workers {
            let (tx, rx) = std::sync::mpsc::channel();
            let mut stop = worker_stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("twoway-worker-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async move {
                        let _ = stop.changed().await;
                    });
                    rt.shutdown_timeout(std::time::Duration::from_millis(200));
                })
                .context("cannot start a worker thread")?;
            threads.push(thread);
            let handle = rx
                .recv()
                .context("worker thread exited at start")?
                .context("cannot start a worker runtime")?;
            handles.push(handle);
        }
    }
    let served = rt.block_on(async move {
        if args.check_config {
            let proxy = Proxy::check(&cfg).await.context("proxy configuration")?;
            for line in proxy.summary() {
                outln!("{}", crate::output::printable(&line))?;
            }
            outln!(
                "configuration OK: {} listener(s){}",
                valid.servers.len() + valid.clients.len(),
                valid
                    .admin
                    .map(|a| format!(", admin on {a}"))
                    .unwrap_or_default()
            )?;
            return Ok(());
        }
        let proxy = Proxy::prepare(&cfg, path)
            .await
            .context("proxy configuration")?
            .with_workers(handles);
        proxy.run(shutdown_signal()).await.context("proxy")
    });
    let _ = stop_workers.send(true);
    for t in threads {
        let _ = t.join();
    }
    served?;
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}
