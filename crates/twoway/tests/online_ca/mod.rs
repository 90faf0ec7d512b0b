//! A CA served by the real `twoway ca serve`, for the tests that probe it as an attacker
//! would: a CA directory with an administrator's certificate, the server's addresses read
//! from its start-up lines, and rustls clients for what curl cannot do (raw request heads,
//! thousands of idle connections, one kept-alive connection across a revocation).
//!
//! Only 127.0.0.1; every wait is bounded.
#![allow(dead_code)]

use crate::common::{run, Output, Server, TWOWAY};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The administrator's SAN, listed in `[server] admins`.
pub const ADMIN: &str = "URI:spiffe://limits.test/admin";

/// Runs `twoway ARGS` in `dir`, with no TWOWAY_* variables from the outside world.
#[track_caller]
pub fn twoway<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Output {
    let mut cmd = Command::new(TWOWAY);
    cmd.current_dir(dir)
        .env_remove("TWOWAY_CA_DIR")
        .env_remove("TWOWAY_CA_URL")
        .env_remove("TWOWAY_PASSPHRASE_FILE")
        .env_remove("TWOWAY_DATABASE")
        .env("TWOWAY_ACTOR", "test:security")
        .args(args);
    run(&mut cmd)
}

/// Runs a shell command line in `dir` (for `umask`), with the time limit of [`run`].
#[track_caller]
pub fn sh(dir: &Path, line: &str) -> Output {
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir)
        .env_remove("TWOWAY_CA_DIR")
        .env_remove("TWOWAY_PASSPHRASE_FILE")
        .env_remove("TWOWAY_DATABASE")
        .env("TWOWAY", TWOWAY)
        .args(["-c", line]);
    run(&mut cmd)
}

/// A CA directory (`ca/`) with an administrator's client certificate (`admin/`), and the
/// server once started.
pub struct OnlineCa {
    pub dir: tempfile::TempDir,
    server: Option<Server>,
    /// The HTTPS listener.
    pub https: SocketAddr,
    /// The plain-HTTP listener.
    pub http: SocketAddr,
}

impl OnlineCa {
    /// `ca init` and an administrator's certificate; nothing listens yet.
    #[track_caller]
    pub fn init() -> OnlineCa {
        Self::init_with("")
    }

    /// [`OnlineCa::init`] with `ca init` run after a shell prefix (e.g. `umask 000;`).
    #[track_caller]
    pub fn init_with(shell_prefix: &str) -> OnlineCa {
        let dir = crate::common::tempdir();
        let d = dir.path();
        sh(
            d,
            &format!("{shell_prefix} \"$TWOWAY\" ca init --ca-dir ca --name 'Limits Test'"),
        )
        .ok();
        twoway(
            d,
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--profile",
                "client",
                "--san",
                ADMIN,
                "--out",
                "admin",
            ],
        )
        .ok();
        let ca = OnlineCa {
            dir,
            server: None,
            https: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        ca.set("admins", &format!("[\"{ADMIN}\"]"));
        ca
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn s(&self, rel: &str) -> String {
        self.p(rel).to_string_lossy().into_owned()
    }

    /// Runs `twoway ARGS` in the CA's temporary directory.
    #[track_caller]
    pub fn tw(&self, args: &[&str]) -> Output {
        twoway(self.dir.path(), args)
    }

    /// Sets `key = value` (TOML) in the `[server]` section of ca.toml.
    pub fn set(&self, key: &str, value: &str) {
        let path = self.p("ca/ca.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        let mut in_server = false;
        let mut done = false;
        for line in text.lines() {
            if line.starts_with('[') {
                if in_server && !done {
                    out.push_str(&format!("{key} = {value}\n"));
                    done = true;
                }
                in_server = line.trim() == "[server]";
            }
            if in_server && line.starts_with(&format!("{key} =")) {
                out.push_str(&format!("{key} = {value}\n"));
                done = true;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        if !done {
            if !in_server {
                out.push_str("[server]\n");
            }
            out.push_str(&format!("{key} = {value}\n"));
        }
        std::fs::write(&path, out).unwrap();
    }

    /// Starts `twoway ca serve` on free ports (HTTPS and plain HTTP) and waits for its
    /// start-up lines.
    #[track_caller]
    pub fn serve(&mut self) {
        self.serve_with("", &[]);
    }

    /// [`OnlineCa::serve`] with a shell prefix (e.g. `umask 000;`) and extra arguments.
    #[track_caller]
    pub fn serve_with(&mut self, shell_prefix: &str, extra: &[&str]) {
        let log = self.p("serve.log");
        let mut line = format!(
            "{shell_prefix} exec \"$TWOWAY\" ca serve --ca-dir ca --listen 127.0.0.1:0 --http-listen 127.0.0.1:0"
        );
        for e in extra {
            line.push_str(&format!(" '{e}'"));
        }
        let mut cmd = Command::new("sh");
        cmd.current_dir(self.dir.path())
            .env_remove("TWOWAY_DATABASE")
            .env("TWOWAY", TWOWAY)
            .env("RUST_LOG", "info")
            .args(["-c", &line]);
        let server = Server::spawn("twoway ca serve", &mut cmd, &log);
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut https, mut http) = (None, None);
        while https.is_none() || http.is_none() {
            let text = server.log();
            for l in text.lines() {
                if let Some(a) = l.strip_prefix("twoway CA serving https://") {
                    https = a.trim().parse().ok();
                }
                if let Some(a) = l.strip_prefix("OCSP, CRL and roots also on http://") {
                    http = a.trim().parse().ok();
                }
            }
            assert!(
                Instant::now() < deadline,
                "ca serve did not start within 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        self.https = https.unwrap();
        self.http = http.unwrap();
        self.server = Some(server);
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.server.as_ref().map(|s| s.log()).unwrap_or_default()
    }

    /// A client configuration trusting the CA's root, with the certificate in `client`
    /// (a directory holding chain.pem and key.pem) if given.
    pub fn client_config(&self, client: Option<&str>) -> Arc<rustls::ClientConfig> {
        client_config(&self.p("ca/root.pem"), client.map(|c| self.p(c)).as_deref())
    }

    /// The server's metrics (over the plain listener).
    pub fn metrics(&self) -> String {
        let (status, body) = plain_request(
            self.http,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `curl URL` against the HTTPS listener (trusting the root); returns the output and
    /// how long curl took.
    pub fn curl_https(&self, path: &str, extra: &[&str]) -> (Output, Duration) {
        let root = self.s("ca/root.pem");
        let url = format!("https://{}{path}", self.https);
        let mut args = vec!["-sS", "-m", "5", "--cacert", &root, "-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        timed_curl(&args)
    }

    /// `curl URL` against the plain listener.
    pub fn curl_http(&self, path: &str) -> (Output, Duration) {
        let url = format!("http://{}{path}", self.http);
        timed_curl(&[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
    }
}

fn timed_curl(args: &[&str]) -> (Output, Duration) {
    crate::common::require_tool("curl", "curl");
    let start = Instant::now();
    let o = run(Command::new("curl").args(args));
    (o, start.elapsed())
}

/// The value of the first series whose line starts with `series`; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A rustls client configuration (aws-lc-rs) trusting `root`, presenting
/// `client_dir/chain.pem` with `client_dir/key.pem` when given.
pub fn client_config(root: &Path, client_dir: Option<&Path>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client_dir {
        Some(d) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(d.join("chain.pem"))
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
            let key = PrivateKeyDer::from_pem_file(d.join("key.pem")).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// A blocking TLS connection to `addr` (name checked: 127.0.0.1).
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes the handshake.
#[track_caller]
pub fn tls_connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Reads one HTTP/1.1 response (a head and a Content-Length body) from `r`: its status,
/// head and body. Status 0 when the connection closed (or timed out) first.
pub fn read_response(r: &mut impl Read) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match r.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return (0, String::from_utf8_lossy(&buf).into_owned(), String::new()),
        }
        if buf.len() > 64 * 1024 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return (status, head, String::new());
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `raw` on a fresh plain TCP connection and reads one response.
pub fn plain_request(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let (status, head, body) = read_response(&mut s);
    (status, format!("{head}{body}"))
}

/// True when the peer closes `r` (end of stream, reset, or a TLS close) within `within`;
/// false when it stays open that long. Anything the peer sends before is read and dropped.
pub fn closed_within(r: &mut impl Read, set_timeout: impl Fn(Duration), within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        set_timeout(left.max(Duration::from_millis(10)));
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

/// Raises this process's soft limit on open files to at least `n` (up to the hard limit),
/// so that a test can hold thousands of connections.
pub fn raise_fd_limit(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let want = match cur.maximum {
        Some(max) => n.min(max),
        None => n,
    };
    if cur.current.is_none_or(|c| c < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: cur.maximum,
            },
        );
    }
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|c| c >= n),
        "this test needs {n} open files; the hard limit allows {now:?}: raise it (ulimit -Hn)"
    );
}

/// A certificate request made by openssl (P-256) with the subject `CN=cn` (an empty
/// subject when `cn` is empty) and the `subjectAltName` extension value `sans` (none when
/// empty). Returns the CSR's PEM; the key goes to `dir/name.key`, the CSR to `dir/name.csr`.
#[track_caller]
pub fn openssl_csr(dir: &Path, name: &str, cn: &str, sans: &str) -> String {
    crate::common::require_tool("openssl", "openssl");
    let subj = if cn.is_empty() {
        "/".to_string()
    } else {
        format!("/CN={}", cn.replace('/', "\\/"))
    };
    let subj = subj.as_str();
    let key = dir.join(format!("{name}.key"));
    let out = dir.join(format!("{name}.csr"));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        subj,
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&out);
    if !sans.is_empty() {
        cmd.args(["-addext", &format!("subjectAltName={sans}")]);
    }
    run(&mut cmd).ok();
    std::fs::read_to_string(out).unwrap()
}

/// The subject of a PEM certificate as openssl prints it (`subject=CN=…`, or `subject=`).
pub fn subject_of(cert_pem: &str, dir: &Path) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let f = dir.join(format!("subject-{n}.pem"));
    std::fs::write(&f, cert_pem).unwrap();
    let o = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&f))
    .ok();
    o.stdout.trim().to_string()
}
