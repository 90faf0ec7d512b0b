//! The proxy harness: nginx as a plaintext backend, the raw-socket Python backend and the
//! Python HTTP/2 client (`tests/support/`), `twoway proxy` itself started and waited for,
//! curl and rustls clients presenting the test PKI's certificates, and the handshake
//! counters of the admin listener's metrics.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::http::{client_config, http_get, metric_sum, status_of, tls_connect_to};
use super::pki::Pki;
use super::process::{
    free_port, require_tool, run, run_with_timeout, strings, Output, Server, TWOWAY,
};

/// nginx as a plaintext backend on a TCP port and a Unix socket. `/` answers with the
/// identity headers it received; `/big` serves 1 MiB; `/gz` the same gzipped (so chunked)
/// to a client that accepts gzip.
pub fn nginx(dir: &Path) -> (Server, u16, PathBuf) {
    let bin = require_tool("nginx", "nginx");
    let port = free_port();
    let prefix = dir.join(format!("nginx-{port}"));
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let sock = prefix.join("nginx.sock");
    std::fs::write(prefix.join("big.bin"), vec![b'x'; 1 << 20]).unwrap();
    let conf = format!(
        r#"
daemon off;
master_process off;
user root;
worker_processes 1;
error_log {p}/logs/error.log warn;
pid {p}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen unix:{sock};
        root {p};
        location = /big {{ try_files /big.bin =404; }}
        location = /gz {{
            gzip on; gzip_types text/plain; gzip_min_length 1; default_type text/plain;
            try_files /big.bin =404;
        }}
        location /files/ {{ default_type application/octet-stream; }}
        location / {{
            default_type text/plain;
            return 200 "hello id=[$http_x_client_identity] xfcc=[$http_x_forwarded_client_cert] path=[$uri]\n";
        }}
    }}
}}
"#,
        p = prefix.display(),
        sock = sock.display()
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf_path);
    cmd.arg("-e").arg(prefix.join("logs/error.log"));
    let mut server = Server::spawn("nginx", &mut cmd, &prefix.join("stderr.log"));
    server.wait_for_port_within(port, Duration::from_secs(15));
    (server, port, sock)
}

/// Starts `twoway proxy ARGS…` and waits for its admin `/ready`.
#[track_caller]
pub fn proxy(dir: &Path, args: &[String], admin: u16) -> Server {
    let log = dir.join(format!("proxy-{admin}.log"));
    let mut cmd = Command::new(TWOWAY);
    cmd.arg("proxy").args(args).env("RUST_LOG", "info");
    let mut p = Server::spawn("twoway proxy", &mut cmd, &log);
    p.wait_for_port_within(admin, Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(admin, "/ready").0 != 200 {
        assert!(Instant::now() < deadline, "proxy never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    p
}

/// A `twoway proxy server` on a free port with its admin listener on another.
pub struct ProxyServer {
    pub proc: Server,
    pub port: u16,
    pub admin: u16,
}

impl ProxyServer {
    /// `proxy server` in front of `backend` with the PKI's server certificate and client
    /// CA, and `extra` options.
    #[track_caller]
    pub fn start(pki: &Pki, backend: &str, extra: &[&str]) -> ProxyServer {
        Self::start_with(pki, ["server.pem", "server.key", "ca.pem"], backend, extra)
    }

    /// [`ProxyServer::start`] with the PKI's files `[cert, key, client_ca]`.
    #[track_caller]
    pub fn start_with(pki: &Pki, files: [&str; 3], backend: &str, extra: &[&str]) -> ProxyServer {
        let (port, admin) = (free_port(), free_port());
        let [cert, key, client_ca] = files.map(|f| pki.p(f));
        let mut args = strings(&["server", "--listen", &format!("127.0.0.1:{port}")]);
        args.extend(strings(&[
            "--backend",
            backend,
            "--cert",
            &cert,
            "--key",
            &key,
        ]));
        args.extend(strings(&["--client-ca", &client_ca]));
        args.extend(strings(&["--admin", &format!("127.0.0.1:{admin}")]));
        args.extend(strings(extra));
        let proc = proxy(pki.dir.path(), &args, admin);
        ProxyServer { proc, port, admin }
    }

    /// The name the proxy's metrics give a listener without a name.
    pub fn listener(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The admin listener's metrics.
    #[track_caller]
    pub fn metrics(&self) -> String {
        super::http::metrics_on(self.admin)
    }
}

/// The sum of the handshake rejections of `listener` for `reason` in `text`.
pub fn rejected(text: &str, listener: &str, reason: &str) -> f64 {
    let labels = [
        format!("listener=\"{listener}\""),
        format!("reason=\"{reason}\""),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    metric_sum(text, "twoway_proxy_handshakes_total{", &labels)
}

/// `curl --silent --show-error --max-time 10 ARGS`.
#[track_caller]
pub fn curl<S: AsRef<str>>(args: &[S]) -> Output {
    let bin = require_tool("curl", "curl");
    let mut cmd = Command::new(bin);
    cmd.args(["--silent", "--show-error", "--max-time", "10"])
        .args(args.iter().map(|a| a.as_ref()));
    run(&mut cmd)
}

/// curl trusting the PKI's CA, presenting `who`.pem (none when `who` is `None`), with
/// `extra` options, fetching `url`.
#[track_caller]
pub fn curl_mtls(pki: &Pki, who: Option<&str>, url: &str, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["--cacert".into(), pki.p("ca.pem")];
    if let Some(w) = who {
        args.extend(strings(&["--cert", &pki.p(&format!("{w}.pem"))]));
        args.extend(strings(&["--key", &pki.p(&format!("{w}.key"))]));
    }
    args.extend(strings(extra));
    args.push(url.into());
    curl(&args)
}

/// A rustls client presenting `who`.pem, trusting ca.pem, without resumption.
pub fn mtls_config(pki: &Pki, who: &str) -> Arc<rustls::ClientConfig> {
    let (cert, key) = (
        pki.path(&format!("{who}.pem")),
        pki.path(&format!("{who}.key")),
    );
    let cfg = client_config(&pki.path("ca.pem"), Some((&cert, &key)));
    let mut cfg = (*cfg).clone();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// One HTTP/1.x exchange over mTLS as `who`: writes `request` as given, reads until the
/// proxy closes (send `Connection: close`) or 5 s pass; returns the status and the whole
/// response.
pub fn raw_https(pki: &Pki, who: &str, port: u16, request: &[u8]) -> (u16, String) {
    let addr = ([127, 0, 0, 1], port).into();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tls_connect_to(addr, name, mtls_config(pki, who));
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tls.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    (status_of(&text), text)
}

/// A file of `tests/support/`.
pub fn support(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// python3 with the `h2` package, or a failure that says how to get it.
pub fn python_h2() -> PathBuf {
    python_with("h2")
}

/// python3 with the package `module` (from PyPI), or a failure that says how to get it.
pub fn python_with(module: &str) -> PathBuf {
    let py = require_tool("python3", "python3");
    let ok = run(Command::new(&py).args(["-c", &format!("import {module}")])).success();
    assert!(
        ok,
        "the Python package `{module}` is required by this test: `python3 -m pip install \
         {module}` (scripts/test-all installs it)"
    );
    py
}

/// The raw-socket HTTP/1.1 backend on a free port.
pub fn backend_py(dir: &Path) -> (Server, u16) {
    let port = free_port();
    let log = dir.join(format!("backend-{port}.log"));
    let mut cmd = Command::new(python_h2());
    cmd.arg(support("backend.py")).arg(port.to_string());
    let mut server = Server::spawn("backend.py", &mut cmd, &log);
    server.wait_for_port_within(port, Duration::from_secs(15));
    (server, port)
}

/// A proxy in HTTP mode in front of backend.py.
pub struct HttpProxy {
    pub pki: Pki,
    pub backend: Server,
    pub proxy: Server,
    pub port: u16,
    pub admin: u16,
}

impl HttpProxy {
    pub fn start(extra: &[&str]) -> HttpProxy {
        let pki = Pki::new();
        let (backend, backend_port) = backend_py(pki.dir.path());
        let mut args = vec!["--http"];
        args.extend_from_slice(extra);
        let p = ProxyServer::start(&pki, &format!("127.0.0.1:{backend_port}"), &args);
        HttpProxy {
            pki,
            backend,
            proxy: p.proc,
            port: p.port,
            admin: p.admin,
        }
    }

    /// One HTTP-mode `[[server]]` listener from a config file, with `extra` (TOML: keys,
    /// then any `[[server.route]]` tables) appended to it.
    pub fn with_config(extra: &str) -> HttpProxy {
        let pki = Pki::new();
        let (backend, backend_port) = backend_py(pki.dir.path());
        let port = free_port();
        let admin = free_port();
        let toml = format!(
            "[[server]]\nlisten = \"127.0.0.1:{port}\"\nbackend = \"127.0.0.1:{backend_port}\"\n\
             cert = {:?}\nkey = {:?}\nclient_ca = {:?}\nhttp = true\n{extra}\n",
            pki.p("server.pem"),
            pki.p("server.key"),
            pki.p("ca.pem"),
        );
        let file = pki.path("proxy.toml");
        std::fs::write(&file, toml).unwrap();
        let args = strings(&[
            "--config",
            &file.display().to_string(),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ]);
        let proxy = proxy(pki.dir.path(), &args, admin);
        HttpProxy {
            pki,
            backend,
            proxy,
            port,
            admin,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn logs(&self) -> String {
        format!(
            "--- proxy log ---\n{}\n--- backend log ---\n{}",
            self.proxy.log(),
            self.backend.log()
        )
    }

    /// curl as alice with `args` (URLs included).
    pub fn curl(&self, args: &[String]) -> Output {
        let mut all = strings(&["--cacert", &self.pki.p("ca.pem")]);
        all.extend(strings(&["--cert", &self.pki.p("alice.pem")]));
        all.extend(strings(&["--key", &self.pki.p("alice.key")]));
        all.extend_from_slice(args);
        curl(&all)
    }

    /// Runs h2client.py MODE ARGS… against the proxy as `who`; returns its JSON line.
    pub fn h2client_as(&self, who: &str, mode: &[&str], limit: Duration) -> serde_json::Value {
        let mut cmd = Command::new(python_h2());
        cmd.arg(support("h2client.py"))
            .args(mode)
            .args(["--port", &self.port.to_string()])
            .args(["--ca", &self.pki.p("ca.pem")])
            .args(["--cert", &self.pki.p(&format!("{who}.pem"))])
            .args(["--key", &self.pki.p(&format!("{who}.key"))]);
        run_json(&mut cmd, limit, &self.logs())
    }

    /// Runs h2client.py MODE ARGS… against the proxy as alice; returns its JSON line.
    pub fn h2client(&self, mode: &[&str], limit: Duration) -> serde_json::Value {
        self.h2client_as("alice", mode, limit)
    }
}

/// Runs a client that prints one JSON line; fails with its output and `logs` otherwise.
pub fn run_json(cmd: &mut Command, limit: Duration, logs: &str) -> serde_json::Value {
    let out = run_with_timeout(cmd, None, limit);
    assert!(out.success(), "{out}\n{logs}");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{logs}"))
}
