//! Test PKI, processes and clients for the proxy's end-to-end tests: an rcgen CA with leaves
//! for every client the tests play (valid, revoked, expired, look-alike…), nginx as a
//! plaintext backend, the proxy itself started and waited for, curl with client
//! certificates, and the admin listener's metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

pub const BIN: &str = env!("CARGO_BIN_EXE_twoway");
pub const ALICE: &str = "spiffe://example.org/ns/prod/sa/alice";
pub const BOB: &str = "spiffe://example.org/ns/dev/sa/bob";

// ---------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------

/// A CA that can sign leaves and CRLs.
pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "twoway tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    pub fn crl(&self, revoked: &[&[u8]]) -> String {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from_slice(&random_serial()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).unwrap().pem().unwrap()
    }
}

pub fn random_serial() -> Vec<u8> {
    // 16 bytes from the time and a counter are enough to be unique within a test run.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let mut v = vec![0x01];
    v.extend_from_slice(&t.to_be_bytes());
    v.extend_from_slice(&n.to_be_bytes()[1..]);
    v
}

/// A leaf certificate and its key, as PEM, plus its serial.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub serial: Vec<u8>,
    pub der: Vec<u8>,
}

pub struct LeafSpec<'a> {
    pub cn: &'a str,
    pub sans: Vec<SanType>,
    pub eku: Vec<Eku>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub ca_flag: bool,
}

impl<'a> LeafSpec<'a> {
    pub fn client(cn: &'a str, uri: &str) -> Self {
        LeafSpec {
            cn,
            sans: vec![SanType::URI(uri.try_into().unwrap())],
            eku: vec![Eku::ClientAuth],
            not_before: OffsetDateTime::now_utc() - time::Duration::hours(1),
            not_after: OffsetDateTime::now_utc() + time::Duration::days(1),
            ca_flag: false,
        }
    }

    pub fn server() -> Self {
        LeafSpec {
            cn: "localhost",
            sans: vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ],
            eku: vec![Eku::ServerAuth],
            not_before: OffsetDateTime::now_utc() - time::Duration::hours(1),
            not_after: OffsetDateTime::now_utc() + time::Duration::days(1),
            ca_flag: false,
        }
    }

    pub fn sign(self, ca: &Ca) -> Leaf {
        self.sign_key(ca, KeyPair::generate().unwrap())
    }

    pub fn sign_key(self, ca: &Ca, key: KeyPair) -> Leaf {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.cn);
        dn.push(DnType::OrganizationalUnitName, "tests");
        params.distinguished_name = dn;
        params.subject_alt_names = self.sans;
        params.extended_key_usages = self.eku;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        if self.ca_flag {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        let cert = params.signed_by(&key, &ca.issuer()).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial,
            der: cert.der().to_vec(),
        }
    }
}

/// Every certificate the tests use, written to a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub other_ca: Ca,
    pub revoked_serial: Vec<u8>,
    pub alice_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("twoway test CA");
        // Same subject as `ca`, different key: a look-alike issuer.
        let lookalike = Ca::new("twoway test CA");
        let other_ca = Ca::new("twoway second CA");
        let now = OffsetDateTime::now_utc();
        let server = LeafSpec::server().sign(&ca);
        let alice = LeafSpec::client("alice", ALICE).sign(&ca);
        let bob = LeafSpec::client("bob", BOB).sign(&ca);
        let revoked =
            LeafSpec::client("mallory", "spiffe://example.org/ns/prod/sa/mallory").sign(&ca);
        let expired = LeafSpec {
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
            ..LeafSpec::client("old", "spiffe://example.org/ns/prod/sa/old")
        }
        .sign(&ca);
        let future = LeafSpec {
            not_before: now + time::Duration::days(1),
            not_after: now + time::Duration::days(10),
            ..LeafSpec::client("new", "spiffe://example.org/ns/prod/sa/new")
        }
        .sign(&ca);
        let server_only = LeafSpec {
            eku: vec![Eku::ServerAuth],
            ..LeafSpec::client("srv", "spiffe://example.org/ns/prod/sa/srv")
        }
        .sign(&ca);
        let ca_leaf = LeafSpec {
            ca_flag: true,
            ..LeafSpec::client("subca", "spiffe://example.org/ns/prod/sa/subca")
        }
        .sign(&ca);
        let evil = LeafSpec::client("alice", ALICE).sign(&lookalike);
        let carol =
            LeafSpec::client("carol", "spiffe://example.org/ns/prod/sa/carol").sign(&other_ca);

        let p = Pki {
            dir,
            revoked_serial: revoked.serial.clone(),
            alice_der: alice.der.clone(),
            ca,
            other_ca,
        };
        p.write("ca.pem", &p.ca.pem);
        p.write("other-ca.pem", &p.other_ca.pem);
        p.write("empty.pem", "# no certificate here\n");
        p.write("crl.pem", &p.ca.crl(&[&p.revoked_serial]));
        p.write("crl-empty.pem", &p.ca.crl(&[]));
        for (name, leaf) in [
            ("server", &server),
            ("alice", &alice),
            ("bob", &bob),
            ("revoked", &revoked),
            ("expired", &expired),
            ("future", &future),
            ("serveronly", &server_only),
            ("caleaf", &ca_leaf),
            ("evil", &evil),
            ("carol", &carol),
        ] {
            p.write(&format!("{name}.pem"), &leaf.cert);
            p.write(&format!("{name}.key"), &leaf.key);
        }
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

pub fn require(bin: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/sbin",
        "/bin",
    ] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` is required by this test but was not found: install it (apt-get install {package})");
}

pub use super::free_port;

pub fn wait_port(port: u16, what: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!(
        "{what} did not listen on {port}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as a plaintext backend on a TCP port and a Unix socket. `/` answers with the
/// identity headers it received; `/big` serves 1 MiB; `/gz` the same gzipped (so chunked)
/// to a client that accepts gzip.
pub fn nginx(dir: &Path) -> (Proc, u16, PathBuf) {
    let bin = require("nginx", "nginx");
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
    let log = prefix.join("stderr.log");
    let mut child = Command::new(bin)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_port(port, "nginx", &mut child, &log);
    (Proc { child, log }, port, sock)
}

/// Starts `twoway proxy ARGS…` and waits for its admin `/ready`.
pub fn proxy(dir: &Path, args: &[String], admin: u16) -> Proc {
    let log = dir.join(format!("proxy-{admin}.log"));
    let mut child = Command::new(BIN)
        .arg("proxy")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_port(admin, "twoway proxy", &mut child, &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(admin, "/ready").0 != 200 {
        assert!(Instant::now() < deadline, "proxy never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    Proc { child, log }
}

/// A plain HTTP/1.0 GET on loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn metrics(admin: u16) -> String {
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "metrics endpoint");
    body
}

/// The value of the series whose line starts with `series` (name plus labels).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in metrics:\n{text}"))
}

pub fn rejected(text: &str, listener: &str, reason: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("twoway_proxy_handshakes_total{")
                && l.contains(&format!("listener=\"{listener}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn curl(args: &[&str]) -> Output {
    let bin = require("curl", "curl");
    Command::new(bin)
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap()
}

pub fn curl_mtls(pki: &Pki, who: Option<&str>, url: &str, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["--cacert".into(), pki.p("ca.pem")];
    if let Some(w) = who {
        args.extend([
            "--cert".into(),
            pki.p(&format!("{w}.pem")),
            "--key".into(),
            pki.p(&format!("{w}.key")),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A rustls client presenting `who`.pem, trusting ca.pem, without resumption.
pub fn client_config(pki: &Pki, who: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(pki.path(&format!("{who}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{who}.key"))).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.resumption = rustls::client::Resumption::disabled();
    std::sync::Arc::new(cfg)
}

/// One HTTP/1.x exchange over mTLS as `who`: writes `request` as given, reads until the
/// proxy closes (send `Connection: close`) or 5 s pass; returns the status and the whole
/// response.
pub fn raw_https(pki: &Pki, who: &str, port: u16, request: &[u8]) -> (u16, String) {
    let cfg = client_config(pki, who);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub fn sha256_hex(der: &[u8]) -> String {
    let out = Command::new(require("openssl", "openssl"))
        .args(["dgst", "-sha256", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(der)?;
            c.wait_with_output()
        })
        .unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// HTTP mode in front of tests/support/backend.py, and the Python HTTP/2 client
// ---------------------------------------------------------------------------------------

pub fn support(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// python3 with the `h2` package, or a failure that says how to get it.
pub fn python_h2() -> PathBuf {
    let py = super::require_tool("python3", "python3");
    let ok = Command::new(&py)
        .args(["-c", "import h2"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the Python package `h2` is required by this test: `python3 -m pip install h2` \
         (scripts/test-all installs it)"
    );
    py
}

/// The raw-socket HTTP/1.1 backend on a free port.
pub fn backend_py(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let log = dir.join(format!("backend-{port}.log"));
    let mut child = Command::new(python_h2())
        .arg(support("backend.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_port(port, "backend.py", &mut child, &log);
    (Proc { child, log }, port)
}

/// A proxy in HTTP mode in front of backend.py.
pub struct HttpProxy {
    pub pki: Pki,
    pub backend: Proc,
    pub proxy: Proc,
    pub port: u16,
    pub admin: u16,
}

impl HttpProxy {
    pub fn start(extra: &[&str]) -> HttpProxy {
        let pki = Pki::new();
        let (backend, backend_port) = backend_py(pki.dir.path());
        let port = super::free_port();
        let admin = super::free_port();
        let mut args = s(&[
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--backend",
            &format!("127.0.0.1:{backend_port}"),
            "--cert",
            &pki.p("server.pem"),
            "--key",
            &pki.p("server.key"),
            "--client-ca",
            &pki.p("ca.pem"),
            "--http",
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ]);
        args.extend(s(extra));
        let proxy = proxy(pki.dir.path(), &args, admin);
        HttpProxy {
            pki,
            backend,
            proxy,
            port,
            admin,
        }
    }

    /// One HTTP-mode `[[server]]` listener from a config file, with `extra` (TOML: keys,
    /// then any `[[server.route]]` tables) appended to it.
    pub fn with_config(extra: &str) -> HttpProxy {
        let pki = Pki::new();
        let (backend, backend_port) = backend_py(pki.dir.path());
        let port = super::free_port();
        let admin = super::free_port();
        let toml = format!(
            "[[server]]\nlisten = \"127.0.0.1:{port}\"\nbackend = \"127.0.0.1:{backend_port}\"\n\
             cert = {:?}\nkey = {:?}\nclient_ca = {:?}\nhttp = true\n{extra}\n",
            pki.p("server.pem"),
            pki.p("server.key"),
            pki.p("ca.pem"),
        );
        let file = pki.path("proxy.toml");
        std::fs::write(&file, toml).unwrap();
        let args = s(&[
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
    pub fn curl(&self, args: &[String]) -> std::process::Output {
        let mut all = s(&["--cacert", &self.pki.p("ca.pem")]);
        all.extend(s(&[
            "--cert",
            &self.pki.p("alice.pem"),
            "--key",
            &self.pki.p("alice.key"),
        ]));
        all.extend_from_slice(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        curl(&refs)
    }

    /// Runs h2client.py MODE ARGS… against the proxy as alice; returns its JSON line.
    pub fn h2client(&self, mode: &[&str], limit: Duration) -> serde_json::Value {
        let mut cmd = Command::new(python_h2());
        cmd.arg(support("h2client.py"))
            .args(mode)
            .args(["--port", &self.port.to_string()])
            .args(["--ca", &self.pki.p("ca.pem")])
            .args(["--cert", &self.pki.p("alice.pem")])
            .args(["--key", &self.pki.p("alice.key")]);
        run_json(&mut cmd, limit, &self.logs())
    }
}

/// Runs a client that prints one JSON line; fails with its output and `logs` otherwise.
pub fn run_json(cmd: &mut Command, limit: Duration, logs: &str) -> serde_json::Value {
    let out = super::run_with_timeout(cmd, None, limit);
    assert!(out.success(), "{out}\n{logs}");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{logs}"))
}
