//! The online CA end to end: the real `twoway` binary as server, agent and remote CLI, with
//! openssl and curl as independent peers. Only 127.0.0.1; every wait is bounded.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, port_open};

const BIN: &str = env!("CARGO_BIN_EXE_twoway");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TWOWAY_CA_URL")
        .env_remove("TWOWAY_CA_DIR")
        .output()
        .expect("run twoway")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "twoway {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is needed for this test (apt-get install {name}): {e}"))
}

/// A CA directory with an admin client certificate, served by `twoway ca serve`.
struct Ca {
    dir: tempfile::TempDir,
    child: Child,
    https: String,
    http: String,
    fingerprint: String,
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ca {
    fn start(extra_toml: &[(&str, &str)]) -> Ca {
        Self::start_env(extra_toml, &[])
    }

    /// [`Ca::start`], the server running with extra environment variables.
    fn start_env(extra_toml: &[(&str, &str)], envs: &[(&str, String)]) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let cas = ca.to_str().unwrap();
        ok(&["ca", "init", "--ca-dir", cas, "--name", "Online Test"]);
        ok(&[
            "cert",
            "issue",
            "--ca-dir",
            cas,
            "--profile",
            "client",
            "--san",
            "URI:spiffe://online.test/admin",
            "--out",
            dir.path().join("admin").to_str().unwrap(),
        ]);
        let cfg_path = ca.join("ca.toml");
        let mut cfg = std::fs::read_to_string(&cfg_path).unwrap();
        cfg = cfg.replace(
            "admins = []",
            "admins = [\"URI:spiffe://online.test/admin\"]",
        );
        for (k, v) in extra_toml {
            let line = cfg
                .lines()
                .find(|l| l.starts_with(&format!("{k} =")))
                .unwrap()
                .to_string();
            cfg = cfg.replace(&line, &format!("{k} = {v}"));
        }
        std::fs::write(&cfg_path, cfg).unwrap();
        let (child, https, http, fingerprint) =
            spawn_server_env(&dir.path().join("ca"), "127.0.0.1:0", "127.0.0.1:0", envs);
        Ca {
            dir,
            child,
            https,
            http,
            fingerprint,
        }
    }

    /// Kills the server (SIGKILL: no chance to finish anything), waits `down_for`, and
    /// starts it again on the same addresses with the same CA directory and inventory.
    fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        let (child, https, http, fingerprint) = spawn_server(
            &self.p("ca"),
            self.https.trim_start_matches("https://"),
            self.http.trim_start_matches("http://"),
        );
        assert_eq!(
            (&https, &http, &fingerprint),
            (&self.https, &self.http, &self.fingerprint)
        );
        self.child = child;
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_string()
    }

    /// `twoway --ca URL --cert … token create …` as the admin.
    fn token(&self, san: &str, extra: &[&str]) -> String {
        let (c, k, r) = (
            self.s("admin/chain.pem"),
            self.s("admin/key.pem"),
            self.s("ca/root.pem"),
        );
        let mut args = vec![
            "--ca",
            &self.https,
            "--cert",
            &c,
            "--key",
            &k,
            "--ca-cert",
            &r,
            "token",
            "create",
            "--san",
            san,
        ];
        args.extend_from_slice(extra);
        ok(&args).trim().to_string()
    }

    fn remote(&self, args: &[&str]) -> Output {
        let (c, k, r) = (
            self.s("admin/chain.pem"),
            self.s("admin/key.pem"),
            self.s("ca/root.pem"),
        );
        let mut a = vec![
            "--ca",
            self.https.as_str(),
            "--cert",
            &c,
            "--key",
            &k,
            "--ca-cert",
            &r,
        ];
        a.extend_from_slice(args);
        run(&a)
    }

    fn agent_once(&self, token: Option<&str>, san: &str, out: &str) -> Output {
        let out = self.s(out);
        let mut a = vec![
            "agent",
            "--ca",
            self.https.as_str(),
            "--ca-fingerprint",
            self.fingerprint.as_str(),
            "--san",
            san,
            "--out",
            &out,
            "--once",
        ];
        if let Some(t) = token {
            a.extend_from_slice(&["--token", t]);
        }
        run(&a)
    }

    /// POSTs `body` to the API with curl (optionally with a client certificate); returns
    /// the status and the JSON answer.
    fn post(&self, path: &str, body: &[u8], client: Option<&str>) -> (u16, Value) {
        let f = self.dir.path().join(format!("body-{}", rand_suffix()));
        std::fs::write(&f, body).unwrap();
        let url = format!("{}{path}", self.https);
        let root = self.s("ca/root.pem");
        let data = format!("@{}", f.display());
        let mut args = vec![
            "-sS",
            "--cacert",
            &root,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &data,
            "-w",
            "\n%{http_code}",
        ];
        let (c, k);
        if let Some(dir) = client {
            c = self.s(&format!("{dir}/chain.pem"));
            k = self.s(&format!("{dir}/key.pem"));
            args.extend_from_slice(&["--cert", &c, "--key", &k]);
        }
        args.push(&url);
        let o = tool("curl", &args);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (json, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(json).unwrap_or(Value::Null),
        )
    }

    fn ocsp(&self, cert: &str) -> String {
        let o = tool(
            "openssl",
            &[
                "ocsp",
                "-issuer",
                &self.s("ca/intermediate.pem"),
                "-cert",
                &self.s(cert),
                "-url",
                &format!("{}/ocsp", self.http),
                "-CAfile",
                &self.s("ca/root.pem"),
            ],
        );
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("Response verify OK"), "openssl ocsp: {out}");
        out
    }

    fn count(&self) -> u64 {
        let o = self.remote(&["cert", "list", "--json", "--limit", "1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["total"].as_u64().unwrap()
    }
}

/// Starts `twoway ca serve` and reads its start-up lines: (child, https URL, http URL, root
/// fingerprint).
fn spawn_server(ca_dir: &Path, listen: &str, http_listen: &str) -> (Child, String, String, String) {
    spawn_server_env(ca_dir, listen, http_listen, &[])
}

/// [`spawn_server`] with extra environment variables.
fn spawn_server_env(
    ca_dir: &Path,
    listen: &str,
    http_listen: &str,
    envs: &[(&str, String)],
) -> (Child, String, String, String) {
    let mut child = Command::new(BIN)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .args([
            "ca",
            "serve",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--listen",
            listen,
            "--http-listen",
            http_listen,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ca serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut https, mut http, mut fingerprint) = (String::new(), String::new(), String::new());
    for _ in 0..3 {
        let l = lines.next().expect("server output").unwrap();
        if let Some(a) = l.strip_prefix("twoway CA serving ") {
            https = a.to_string();
        } else if let Some(a) = l.strip_prefix("OCSP, CRL and roots also on ") {
            http = a.to_string();
        } else if let Some(a) = l.strip_prefix("root fingerprint (SHA-256) ") {
            fingerprint = a.to_string();
        }
    }
    assert!(!https.is_empty() && !http.is_empty() && !fingerprint.is_empty());
    (child, https, http, fingerprint)
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn serial_of(cert: &Path) -> String {
    let o = tool(
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"],
    );
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

fn csr(ca: &Ca, name: &str, sans: &str) -> String {
    let key = ca.s(&format!("{name}.key"));
    let out = ca.s(&format!("{name}.csr"));
    let o = tool(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &out,
            "-subj",
            "/",
            "-addext",
            &format!("subjectAltName={sans}"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out).unwrap()
}

fn enroll_body(token: &str, csr: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"token": token, "csr": csr})).unwrap()
}

#[test]
fn agent_enrolls_and_ocsp_and_crl_follow_a_remote_revocation() {
    let ca = Ca::start(&[]);
    let token = ca.token(
        "DNS:api.example.internal",
        &["--profile", "server", "--owner", "team-api"],
    );
    assert!(token.starts_with("twt_"), "{token}");
    let o = ca.agent_once(Some(&token), "DNS:api.example.internal", "api");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["cert.pem", "chain.pem", "key.pem", "ca.pem"] {
        assert!(ca.p("api").join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca.p("api/key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // 24h workload certificates by default
    let info = twoway_pki::CertInfo::from_der(
        &twoway_pki::parse_certificates(&std::fs::read(ca.p("api/cert.pem")).unwrap()).unwrap()[0],
    )
    .unwrap();
    assert_eq!((info.not_after - info.not_before).whole_hours(), 24);
    // the certificate verifies with openssl against the root
    let v = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &ca.s("ca/root.pem"),
            "-untrusted",
            &ca.s("ca/intermediate.pem"),
            &ca.s("api/cert.pem"),
        ],
    );
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // a second --once run has nothing to do
    assert!(ca
        .agent_once(None, "DNS:api.example.internal", "api")
        .status
        .success());

    assert!(ca.ocsp("api/cert.pem").contains("api/cert.pem: good"));
    let serial = serial_of(&ca.p("api/cert.pem"));
    let o = ca.remote(&["cert", "revoke", &serial, "--reason", "key-compromise"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = ca.ocsp("api/cert.pem");
    assert!(out.contains("api/cert.pem: revoked"), "{out}");
    assert!(out.contains("keyCompromise"), "{out}");
    // the CRL, DER over plain HTTP, lists the serial
    let crl = ca.p("crl.der");
    let c = tool(
        "curl",
        &[
            "-sS",
            "-o",
            crl.to_str().unwrap(),
            &format!("{}/crl", ca.http),
        ],
    );
    assert!(c.status.success());
    let t = tool(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            crl.to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    let text = String::from_utf8_lossy(&t.stdout).to_ascii_lowercase();
    assert!(t.status.success() && text.contains(&serial), "{text}");
    // an unknown serial is "unknown" to OCSP: a cert from another CA's intermediate name
    let m = tool("curl", &["-sS", &format!("{}/metrics", ca.http)]);
    let metrics = String::from_utf8_lossy(&m.stdout);
    assert!(
        metrics.contains("twoway_ca_ocsp_responses_total{status=\"revoked\"}"),
        "{metrics}"
    );
    // the enrollment went through the committer: one commit carried it
    assert!(
        metric(&metrics, "twoway_ca_issuance_committed_total").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "twoway_ca_issuance_commits_total").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
}

/// Sends `raw` on one connection and reads until the server closes it (true) or `timeout`
/// passes (false).
fn raw_http(addr: &str, raw: &[u8], timeout: Duration) -> (String, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    let mut closed = false;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[test]
fn plain_listener_speaks_http1_to_curl_openssl_and_raw_clients() {
    let ca = Ca::start(&[]);
    ok(&[
        "cert",
        "issue",
        "--ca-dir",
        &ca.s("ca"),
        "--profile",
        "server",
        "--san",
        "DNS:web.example.internal",
        "--out",
        &ca.s("web"),
    ]);
    // openssl ocsp verifies the answer (the responder's certificate rides in it; openssl
    // checks the delegation against -issuer)
    assert!(ca.ocsp("web/cert.pem").contains("web/cert.pem: good"));
    let req = ca.p("req.der");
    let o = tool(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            &ca.s("ca/intermediate.pem"),
            "-cert",
            &ca.s("web/cert.pem"),
            "-no_nonce",
            "-reqout",
            req.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    let url = format!("{}/ocsp", ca.http);
    // curl: POST with Expect: 100-continue, then HTTP/1.0, then HEAD, on the plain listener
    for extra in [&["-H", "Expect: 100-continue"][..], &["-0"][..]] {
        let resp = ca.p("resp.der");
        let body = format!("@{}", req.display());
        let mut args = vec![
            "-sS",
            "-f",
            "--data-binary",
            &body,
            "-H",
            "Content-Type: application/ocsp-request",
            "-o",
            resp.to_str().unwrap(),
            &url,
        ];
        args.extend_from_slice(extra);
        let c = tool("curl", &args);
        assert!(
            c.status.success(),
            "curl {extra:?}: {}",
            String::from_utf8_lossy(&c.stderr)
        );
        let v = tool(
            "openssl",
            &[
                "ocsp",
                "-respin",
                resp.to_str().unwrap(),
                "-issuer",
                &ca.s("ca/intermediate.pem"),
                "-cert",
                &ca.s("web/cert.pem"),
                "-CAfile",
                &ca.s("ca/root.pem"),
            ],
        );
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        assert!(
            out.contains("Response verify OK") && out.contains(": good"),
            "{extra:?}: {out}"
        );
    }
    let head = tool("curl", &["-sS", "-I", &format!("{}/roots.pem", ca.http)]);
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let root_len = std::fs::metadata(ca.p("ca/root.pem")).unwrap().len();
    assert!(
        head.contains(&format!("content-length: {root_len}")),
        "{head}"
    );
    // two pipelined requests on one connection: two answers, in order; the second asks
    // to close
    let (both, closed) = raw_http(
        &ca.http,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /roots.pem HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    let first = both.find("HTTP/1.1 200 OK").unwrap();
    let second = both.rfind("HTTP/1.1 200 OK").unwrap();
    assert!(first < second, "{both}");
    assert!(
        both.contains("ok\n") && both.contains("BEGIN CERTIFICATE"),
        "{both}"
    );
    assert!(
        both.to_ascii_lowercase().contains("connection: close"),
        "{both}"
    );
    assert!(
        closed,
        "the server closes after a Connection: close request"
    );
    // refusals: a status, a JSON error naming the fix, and the connection closed
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        (
            "chunked",
            b"POST /ocsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 411",
            "length_required",
        ),
        (
            "too large",
            // the body is sent too, as by a client that does not wait for an early answer
            [
                &b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n"[..],
                &vec![b'x'; 300_000],
            ]
            .concat(),
            "HTTP/1.1 413",
            "body_too_large",
        ),
        (
            "huge head",
            format!("GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            "HTTP/1.1 431",
            "head_too_large",
        ),
        (
            "garbage",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "bad_request",
        ),
        (
            "API route",
            b"GET /v1/certificates HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 404",
            "use HTTPS",
        ),
    ];
    for (what, raw, status, needle) in cases {
        let (got, closed) = raw_http(&ca.http, &raw, Duration::from_secs(5));
        assert!(got.starts_with(status), "{what}: {got}");
        assert!(closed, "{what}: the connection stayed open");
        assert!(got.contains(needle), "{what}: {got}");
    }
    // the listener still answers, and the refusals were counted
    let m = tool("curl", &["-sS", &format!("{}/metrics", ca.http)]);
    let m = String::from_utf8_lossy(&m.stdout);
    assert_eq!(
        metric(&m, "twoway_ca_errors_total{code=\"length_required\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(&m, "twoway_ca_ocsp_cache_hits_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[test]
fn enrollment_refuses_bad_input_and_records_nothing() {
    let ca = Ca::start(&[("enroll_rate", "1"), ("enroll_burst", "40")]);
    let good_csr = csr(&ca, "a", "DNS:a.example.internal");
    let before = ca.count();

    // unknown token
    let (s, v) = ca.post("/v1/enroll", &enroll_body("twt_nope", &good_csr), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("token_unknown")),
        "{v}"
    );
    // names outside the token
    let tok = ca.token("DNS:b.example.internal", &["--profile", "server"]);
    let (s, v) = ca.post("/v1/enroll", &enroll_body(&tok, &good_csr), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("name_not_allowed")),
        "{v}"
    );
    // a CSR whose signature does not verify
    let der = tool(
        "openssl",
        &["req", "-in", &ca.s("a.csr"), "-outform", "DER"],
    )
    .stdout;
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x01;
    let bad_pem = twoway_pki::der_to_pem("CERTIFICATE REQUEST", &bad);
    let tok_a = ca.token("DNS:a.example.internal", &["--profile", "server"]);
    let (s, v) = ca.post("/v1/enroll", &enroll_body(&tok_a, &bad_pem), None);
    assert_eq!(s, 400, "{v}");
    let code = v["error"]["code"].as_str().unwrap_or_default();
    assert!(code == "bad_csr_signature" || code == "bad_csr", "{v}");
    // a garbage CSR
    let (s, v) = ca.post("/v1/enroll", &enroll_body(&tok_a, "not a csr"), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_csr")),
        "{v}"
    );
    // malformed JSON
    let (s, v) = ca.post("/v1/enroll", b"{\"token\": ", None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    // oversized body
    let big = vec![b'a'; 70 * 1024];
    let (s, v) = ca.post("/v1/enroll", &big, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    // an expired token
    let tok_exp = ca.token(
        "DNS:a.example.internal",
        &["--profile", "server", "--ttl", "1s"],
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (s, v) = ca.post("/v1/enroll", &enroll_body(&tok_exp, &good_csr), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("token_expired")),
        "{v}"
    );
    assert_eq!(
        ca.count(),
        before,
        "nothing recorded by refused enrollments"
    );

    // the happy path, then the token reused
    let (s, v) = ca.post("/v1/enroll", &enroll_body(&tok_a, &good_csr), None);
    assert_eq!(s, 201, "{v}");
    assert!(
        v["chain"]
            .as_str()
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    );
    assert_eq!(ca.count(), before + 1);
    let (s, v) = ca.post("/v1/enroll", &enroll_body(&tok_a, &good_csr), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("token_used")),
        "{v}"
    );
    assert_eq!(ca.count(), before + 1);

    // wrong method, unknown route
    let o = tool(
        "curl",
        &[
            "-sS",
            "--cacert",
            &ca.s("ca/root.pem"),
            "-w",
            "\n%{http_code}",
            &format!("{}/v1/enroll", ca.https),
        ],
    );
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("405"));

    // flooding: one curl, many requests; the bucket (burst 40, 1/s) runs dry
    let f = ca.p("flood.json");
    std::fs::write(&f, enroll_body("twt_nope", &good_csr)).unwrap();
    let url = format!("{}/v1/enroll", ca.https);
    let data = format!("@{}", f.display());
    let root = ca.s("ca/root.pem");
    // 100 requests, 20 at a time: far more than the burst plus what refills meanwhile,
    // even on a slow machine.
    let mut args = vec![
        "-sS",
        "-Z",
        "--parallel-max",
        "20",
        "--cacert",
        &root,
        "--data-binary",
        &data,
    ];
    for _ in 0..100 {
        args.push(&url);
    }
    let o = tool("curl", &args);
    let codes = String::from_utf8_lossy(&o.stdout);
    let limited = codes.matches("\"rate_limited\"").count();
    assert!(limited >= 5, "{codes}");
    let m = tool("curl", &["-sS", &format!("{}/metrics", ca.http)]);
    let metrics = String::from_utf8_lossy(&m.stdout);
    for code in [
        "token_unknown",
        "token_used",
        "token_expired",
        "name_not_allowed",
        "bad_csr",
        "malformed_json",
        "body_too_large",
        "rate_limited",
    ] {
        assert!(
            metrics.contains(&format!("twoway_ca_errors_total{{code=\"{code}\"}}")),
            "{code}\n{metrics}"
        );
    }
    assert_eq!(ca.count(), before + 1);
}

#[test]
fn renewal_over_mtls_and_by_proof_and_refusals() {
    let ca = Ca::start(&[]);
    let tok = ca.token(
        "DNS:r.example.internal",
        &["--profile", "peer", "--cert-ttl", "1h"],
    );
    assert!(ca
        .agent_once(Some(&tok), "DNS:r.example.internal", "r")
        .status
        .success());
    let first = serial_of(&ca.p("r/cert.pem"));

    // renew over mutual TLS with curl presenting the current certificate
    let new_csr = csr(&ca, "r2", "DNS:ignored.example.internal");
    let body = serde_json::to_vec(&serde_json::json!({"csr": new_csr})).unwrap();
    let (s, v) = ca.post("/v1/renew", &body, Some("r"));
    assert_eq!(s, 201, "{v}");
    let renewed = v["certificate"].as_str().unwrap().to_string();
    let info = twoway_pki::CertInfo::from_der(
        &twoway_pki::parse_certificates(renewed.as_bytes()).unwrap()[0],
    )
    .unwrap();
    assert_eq!(
        info.sans,
        vec!["DNS:r.example.internal".parse().unwrap()],
        "same names"
    );
    assert_eq!((info.not_after - info.not_before).whole_minutes(), 61);
    // the old one is superseded (revoked), visible through OCSP
    let out = ca.ocsp("r/cert.pem");
    assert!(
        out.contains("revoked") && out.contains("superseded"),
        "{out}"
    );
    // a retry of that renewal (same CSR, answer lost) gets the same certificate again,
    // and nothing new is recorded
    let before = ca.count();
    let (s, v) = ca.post("/v1/renew", &body, Some("r"));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["certificate"].as_str(), Some(renewed.as_str()));
    assert_eq!(ca.count(), before);
    // renewing the superseded certificate with any other key is refused
    let other = csr(&ca, "r4", "DNS:r.example.internal");
    let other_body = serde_json::to_vec(&serde_json::json!({"csr": other})).unwrap();
    let (s, v) = ca.post("/v1/renew", &other_body, Some("r"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("certificate_revoked")),
        "{v}"
    );
    // without any credential
    let (s, v) = ca.post("/v1/renew", &body, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    assert!(!first.is_empty());

    // proof of possession (behind a TLS-terminating load balancer): no client cert
    std::fs::create_dir_all(ca.p("r3")).unwrap();
    std::fs::write(
        ca.p("r3/chain.pem"),
        format!(
            "{renewed}{}",
            std::fs::read_to_string(ca.p("ca/intermediate.pem")).unwrap()
        ),
    )
    .unwrap();
    std::fs::copy(ca.p("r2.key"), ca.p("r3/key.pem")).unwrap();
    let key =
        twoway_pki::PrivateKey::from_pem(&std::fs::read_to_string(ca.p("r2.key")).unwrap(), None)
            .unwrap();
    let next_key = twoway_pki::PrivateKey::generate(twoway_pki::KeyType::P256).unwrap();
    let next_csr = twoway_pki::create_csr(
        &next_key,
        &["DNS:r.example.internal".parse().unwrap()],
        None,
    )
    .unwrap();
    let chain = std::fs::read_to_string(ca.p("r3/chain.pem")).unwrap();
    let now = time::OffsetDateTime::now_utc();
    // a stale proof is refused
    let stale =
        twoway_agent::proof_request(&key, &chain, &next_csr, now - time::Duration::minutes(10))
            .unwrap();
    let (s, v) = ca.post("/v1/renew", &serde_json::to_vec(&stale).unwrap(), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("bad_proof")),
        "{v}"
    );
    // a proof signed by another key is refused
    let forged = twoway_agent::proof_request(&next_key, &chain, &next_csr, now).unwrap();
    let (s, v) = ca.post("/v1/renew", &serde_json::to_vec(&forged).unwrap(), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("bad_proof")),
        "{v}"
    );
    let good = twoway_agent::proof_request(&key, &chain, &next_csr, now).unwrap();
    let (s, v) = ca.post("/v1/renew", &serde_json::to_vec(&good).unwrap(), None);
    assert_eq!(s, 201, "{v}");

    // an expired certificate cannot renew
    let tok = ca.token(
        "DNS:e.example.internal",
        &["--profile", "client", "--cert-ttl", "2s"],
    );
    assert!(ca
        .agent_once(Some(&tok), "DNS:e.example.internal", "e")
        .status
        .success());
    std::thread::sleep(Duration::from_millis(2500));
    let (s, v) = ca.post("/v1/renew", &body, Some("e"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("certificate_expired")),
        "{v}"
    );
}

#[test]
fn agent_renews_when_due() {
    let ca = Ca::start(&[]);
    let tok = ca.token(
        "DNS:due.example.internal",
        &["--profile", "server", "--cert-ttl", "6s"],
    );
    assert!(ca
        .agent_once(Some(&tok), "DNS:due.example.internal", "d")
        .status
        .success());
    let first = serial_of(&ca.p("d/cert.pem"));
    let deadline = Instant::now() + Duration::from_secs(20);
    // past 2/3 (±5%) of 6 s the agent renews over mTLS with a fresh key
    std::thread::sleep(Duration::from_millis(4700));
    let o = ca.agent_once(None, "DNS:due.example.internal", "d");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Instant::now() < deadline);
    let second = serial_of(&ca.p("d/cert.pem"));
    assert_ne!(first, second);
    assert!(ca.ocsp("d/cert.pem").contains("d/cert.pem: good"));
}

/// libfaketime, which moves a process's wall clock by what a file says.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The environment that runs a process on a wall clock offset by the contents of `file`
/// (`+0`, `+50m`), re-read every second, with the monotonic clock left alone: what a
/// process sees when the machine wakes from a suspend.
fn faked_clock(file: &Path) -> Vec<(&'static str, String)> {
    assert!(
        Path::new(FAKETIME).exists(),
        "libfaketime is missing: apt-get install faketime"
    );
    vec![
        ("LD_PRELOAD", FAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ("FAKETIME_CACHE_DURATION", "1".into()),
    ]
}

/// A machine suspended past its certificate's renewal point renews as soon as it wakes,
/// not when a monotonic timer set before the suspend would fire: the agent and the CA run
/// on a wall clock that jumps 50 minutes ahead while the monotonic clock does not (as after
/// a suspend); the agent holds a 1-hour certificate due at ~40 minutes, and renews within
/// its 30-second wake-up step, once.
#[test]
fn agent_renews_at_once_after_waking_past_the_renewal_point() {
    let clock = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(clock.path(), "+0\n").unwrap();
    let env = faked_clock(clock.path());
    let ca = Ca::start_env(&[], &env);
    let tok = ca.token(
        "DNS:sleepy.example.internal",
        &["--profile", "server", "--cert-ttl", "1h"],
    );
    assert!(ca
        .agent_once(Some(&tok), "DNS:sleepy.example.internal", "s")
        .status
        .success());
    let first = serial_of(&ca.p("s/cert.pem"));
    let agent = ChildGuard(
        Command::new(BIN)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "agent",
                "--ca",
                &ca.https,
                "--ca-fingerprint",
                &ca.fingerprint,
                "--san",
                "DNS:sleepy.example.internal",
                "--out",
                &ca.s("s"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The agent has read its certificate and gone to sleep until its next check.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(serial_of(&ca.p("s/cert.pem")), first, "renewed too early");
    let jumped = Instant::now();
    std::fs::write(clock.path(), "+50m\n").unwrap();
    let deadline = jumped + Duration::from_secs(45);
    let mut second = first.clone();
    while Instant::now() < deadline && second == first {
        std::thread::sleep(Duration::from_millis(500));
        second = serial_of(&ca.p("s/cert.pem"));
    }
    assert_ne!(
        second, first,
        "not renewed within 45 s of waking past the renewal point"
    );
    // Issued on the CA's (jumped) clock: valid from about 50 minutes from now.
    let info = twoway_pki::CertInfo::from_der(
        &twoway_pki::parse_certificates(&std::fs::read(ca.p("s/cert.pem")).unwrap()).unwrap()[0],
    )
    .unwrap();
    let ahead = info.not_before - time::OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::minutes(45),
        "not_before {} is not on the jumped clock",
        info.not_before
    );
    // Once: the new certificate is not due for another ~40 minutes of the jumped clock.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        serial_of(&ca.p("s/cert.pem")),
        second,
        "renewed more than once"
    );
    drop(agent);
}

#[test]
fn revocation_and_listing_are_authorized() {
    let ca = Ca::start(&[]);
    let t1 = ca.token("DNS:h1.example.internal", &["--profile", "client"]);
    let t2 = ca.token("DNS:h2.example.internal", &["--profile", "client"]);
    assert!(ca
        .agent_once(Some(&t1), "DNS:h1.example.internal", "h1")
        .status
        .success());
    assert!(ca
        .agent_once(Some(&t2), "DNS:h2.example.internal", "h2")
        .status
        .success());
    let (s1, s2) = (
        serial_of(&ca.p("h1/cert.pem")),
        serial_of(&ca.p("h2/cert.pem")),
    );
    let body = |s: &str| serde_json::to_vec(&serde_json::json!({"serial": s})).unwrap();
    // no certificate, another holder's certificate
    let (s, v) = ca.post("/v1/revoke", &body(&s2), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    let (s, v) = ca.post("/v1/revoke", &body(&s2), Some("h1"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // the holder revokes its own
    let (s, v) = ca.post("/v1/revoke", &body(&s1), Some("h1"));
    assert_eq!(s, 200, "{v}");
    // a non-admin may not list
    let o = tool(
        "curl",
        &[
            "-sS",
            "--cacert",
            &ca.s("ca/root.pem"),
            "--cert",
            &ca.s("h2/chain.pem"),
            "--key",
            &ca.s("h2/key.pem"),
            &format!("{}/v1/certificates", ca.https),
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "forbidden");
    // the admin lists, filtered and paginated
    let o = ca.remote(&["cert", "list", "--status", "revoked", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["serial"].as_str(), Some(s1.as_str()));
    let o = ca.remote(&["cert", "list", "--limit", "2", "--page", "2", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["offset"], 2);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    // the remote CLI with a non-admin certificate is refused with exit 77
    let o = run(&[
        "--ca",
        &ca.https,
        "--cert",
        &ca.s("h2/chain.pem"),
        "--key",
        &ca.s("h2/key.pem"),
        "--ca-cert",
        &ca.s("ca/root.pem"),
        "cert",
        "revoke",
        &s1,
    ]);
    assert_eq!(
        o.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // the holder revokes its own again: conflict
    let (s, v) = ca.post("/v1/revoke", &body(&s2), Some("h2"));
    assert_eq!(s, 200, "{v}");
    // roots.pem and healthz
    let o = tool("curl", &["-sS", &format!("{}/healthz", ca.http)]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
    let o = tool("curl", &["-sS", &format!("{}/roots.pem", ca.http)]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        std::fs::read_to_string(ca.p("ca/root.pem")).unwrap()
    );
    // a wrong fingerprint makes the agent refuse to trust the CA
    let o = run(&[
        "agent",
        "--ca",
        &ca.https,
        "--ca-fingerprint",
        &"00".repeat(32),
        "--token",
        "x",
        "--san",
        "DNS:x.example.internal",
        "--out",
        &ca.s("x"),
        "--once",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("fingerprint"));
    assert!(!ca.p("x/key.pem").exists());
}

/// Reads one sample (`name{…} value`, the first whose name matches) from Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn http_get(addr: &str, path: &str) -> String {
    let o = tool(
        "curl",
        &["-sS", "--max-time", "5", &format!("http://{addr}{path}")],
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The serial of the certificate a TLS server presents now, as openssl sees it.
fn served_serial(port: u16, name: &str, client: &Path) -> Option<String> {
    let o = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            name,
            "-cert",
            client.join("chain.pem").to_str().unwrap(),
            "-key",
            client.join("key.pem").to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let pem = String::from_utf8_lossy(&o.stdout).into_owned();
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write as _;
    x.stdin
        .take()?
        .write_all(&pem.as_bytes()[start..end])
        .ok()?;
    let out = x.wait_with_output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The whole lifecycle with real parts: `ca serve` issues 2-minute certificates to a twoway
/// proxy whose in-process agent enrolled with a token (no key file anywhere); curl keeps
/// calling an app through the proxy while the agent renews three times, once across the CA
/// being killed and restarted. Not one request may fail.
#[test]
fn proxy_enrolled_in_process_renews_through_a_ca_restart_without_failed_requests() {
    let mut ca = Ca::start(&[]);
    let name = "api.e2e.test";
    // The app: a plain HTTP server.
    let (mut app, app_port) = app(&ca.p("site"), "hello from the app\n");
    // A client certificate for curl, issued offline from the same CA (the server runs).
    ok(&[
        "cert",
        "issue",
        "--ca-dir",
        &ca.s("ca"),
        "--profile",
        "client",
        "--san",
        "URI:spiffe://online.test/curl",
        "--out",
        &ca.s("curl"),
    ]);
    let token = ca.token(
        &format!("DNS:{name}"),
        &[
            "--profile",
            "server",
            "--cert-ttl",
            "2m",
            "--owner",
            "team-api",
        ],
    );
    let (port, admin) = (free_port(), free_port());
    let proxy_log = ca.p("proxy.log");
    let mut proxy = ChildGuard(
        Command::new(BIN)
            .args([
                "proxy",
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--backend",
                &format!("127.0.0.1:{app_port}"),
                "--http",
                "--enroll-token",
                &token,
                "--ca",
                &ca.https,
                "--ca-fingerprint",
                &ca.fingerprint,
                "--san",
                &format!("DNS:{name}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
                "--workers",
                "1",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&proxy_log).unwrap())
            .spawn()
            .expect("start the proxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(port_open(port) && port_open(app_port)) {
        assert!(
            proxy.0.try_wait().unwrap().is_none() && app.0.try_wait().unwrap().is_none(),
            "proxy or app exited:\n{}",
            std::fs::read_to_string(&proxy_log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "proxy did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // No key file was written anywhere by the proxy: its key lives in memory.
    let logs = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(logs.contains("certificate obtained from the CA"), "{logs}");

    // The curl loop: a new process and a full mTLS handshake per request.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (root, curl_dir) = (ca.p("ca/root.pem"), ca.p("curl"));
    let looper = {
        let stop = stop.clone();
        let (root, curl_dir) = (root.clone(), curl_dir.clone());
        std::thread::spawn(move || {
            let (mut oks, mut failures) = (0u32, Vec::new());
            let end = Instant::now() + Duration::from_secs(420);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                let o = tool(
                    "curl",
                    &[
                        "-sS",
                        "--max-time",
                        "10",
                        "--cacert",
                        root.to_str().unwrap(),
                        "--cert",
                        curl_dir.join("chain.pem").to_str().unwrap(),
                        "--key",
                        curl_dir.join("key.pem").to_str().unwrap(),
                        "--resolve",
                        &format!("{name}:{port}:127.0.0.1"),
                        &format!("https://{name}:{port}/hello.txt"),
                    ],
                );
                let body = String::from_utf8_lossy(&o.stdout);
                if o.status.success() && body == "hello from the app\n" {
                    oks += 1;
                } else {
                    failures.push(format!("{}{}", body, String::from_utf8_lossy(&o.stderr)));
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            (oks, failures)
        })
    };

    let admin_addr = format!("127.0.0.1:{admin}");
    let gauge = |n: &str| metric(&http_get(&admin_addr, "/metrics"), n).unwrap_or(-1.0);
    let mut serials = vec![served_serial(port, name, &curl_dir).expect("served certificate")];
    let note_serial = |serials: &mut Vec<String>| {
        if let Some(s) = served_serial(port, name, &curl_dir) {
            if serials.last() != Some(&s) {
                serials.push(s);
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(400);
    // First renewal with the CA up.
    while gauge("twoway_agent_renewals_total") < 1.0 {
        assert!(Instant::now() < deadline, "no first renewal");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(1500)); // the reloader polls every second
    note_serial(&mut serials);
    // Kill the CA shortly before the next renewal point and keep it down past it.
    let next = gauge("twoway_agent_next_renewal_seconds");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    std::thread::sleep(Duration::from_secs_f64((next - now - 5.0).max(0.0)));
    let failures_before = gauge("twoway_agent_failures_total");
    ca.restart(Duration::from_secs(20));
    let failures_during = gauge("twoway_agent_failures_total");
    assert!(
        failures_during > failures_before,
        "the agent should have found the CA down ({failures_before} → {failures_during})"
    );
    while gauge("twoway_agent_renewals_total") < 3.0 {
        assert!(
            Instant::now() < deadline,
            "fewer than three renewals: {}",
            http_get(&admin_addr, "/metrics")
        );
        std::thread::sleep(Duration::from_millis(500));
        note_serial(&mut serials);
    }
    std::thread::sleep(Duration::from_millis(1500));
    note_serial(&mut serials);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (oks, failures) = looper.join().unwrap();
    eprintln!(
        "through the proxy: {oks} requests ok, {} failed; served serials {serials:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(oks >= 100, "only {oks} requests made");
    // The proxy served four different certificates: the enrollment and three renewals.
    assert!(serials.len() >= 4, "served serials: {serials:?}");
    // The inventory: one active certificate for the proxy, the earlier ones superseded.
    let o = ca.remote(&[
        "cert", "list", "--json", "--owner", "team-api", "--limit", "100",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    let active: Vec<&Value> = items.iter().filter(|c| c["status"] == "active").collect();
    assert_eq!(active.len(), 1, "{v:#}");
    assert!(items.len() >= 4, "{v:#}");
    let last = serials
        .last()
        .unwrap()
        .trim_start_matches("serial=")
        .to_lowercase();
    assert_eq!(
        active[0]["serial"]
            .as_str()
            .unwrap()
            .replace(':', "")
            .to_lowercase(),
        last,
        "the active certificate is the one the proxy serves"
    );
}

/// The app behind the proxies: python's http.server on a free port, serving `hello.txt`
/// with `text` from `dir`.
fn app(dir: &Path, text: &str) -> (ChildGuard, u16) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("hello.txt"), text).unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed for this test");
    (ChildGuard(child), port)
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An enrolling proxy refuses bad input before it listens, with the CA's reason and a
/// non-zero exit; `--check-config` does not spend the single-use token.
#[test]
fn proxy_enrollment_refuses_bad_input_before_listening() {
    let ca = Ca::start(&[]);
    let token = ca.token("DNS:bad.e2e.test", &["--profile", "server"]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let proxy = |tok: &str, fp: &str, extra: &[&str]| {
        let mut a = vec![
            "proxy",
            "server",
            "--listen",
            &listen,
            "--backend",
            "127.0.0.1:9",
            "--enroll-token",
            tok,
            "--ca",
            &ca.https,
            "--ca-fingerprint",
            fp,
        ];
        a.extend_from_slice(extra);
        let o = run(&a);
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    // --check-config validates without contacting the CA.
    let (code, out) = proxy(
        &token,
        &ca.fingerprint,
        &["--san", "DNS:bad.e2e.test", "--check-config"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not contacted"), "{out}");
    // A root that does not match the fingerprint is not trusted.
    let wrong = "00".repeat(32);
    let (code, out) = proxy(&token, &wrong, &["--san", "DNS:bad.e2e.test"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("fingerprint"), "{out}");
    // A name the token does not allow.
    let (code, out) = proxy(&token, &ca.fingerprint, &["--san", "DNS:other.e2e.test"]);
    assert_eq!(code, Some(65), "{out}");
    assert!(out.contains("other.e2e.test"), "{out}");
    // An unknown token.
    let (code, out) = proxy("twt_00", &ca.fingerprint, &["--san", "DNS:bad.e2e.test"]);
    assert_eq!(code, Some(77), "{out}");
    assert!(out.to_lowercase().contains("token"), "{out}");
    // Files and a token at once.
    let (code, out) = proxy(
        &token,
        &ca.fingerprint,
        &["--cert", "c.pem", "--key", "k.pem"],
    );
    assert_eq!(code, Some(64), "{out}");
    assert!(!port_open(port));
    // The token is still good: a proxy enrolls with it and serves.
    let mut child = ChildGuard(
        Command::new(BIN)
            .args([
                "proxy",
                "server",
                "--listen",
                &listen,
                "--backend",
                "127.0.0.1:9",
                "--enroll-token",
                &token,
                "--ca",
                &ca.https,
                "--ca-fingerprint",
                &ca.fingerprint,
                "--san",
                "DNS:bad.e2e.test",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !port_open(port) {
        assert!(child.0.try_wait().unwrap().is_none(), "the proxy exited");
        assert!(Instant::now() < deadline, "the proxy did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child);
    // Now it is spent: a second proxy with it is refused.
    let (code, out) = proxy(&token, &ca.fingerprint, &["--san", "DNS:bad.e2e.test"]);
    assert!(matches!(code, Some(65 | 77)), "{out}");
    assert!(out.contains("used"), "{out}");
}

/// Both sides without key files: a client-mode proxy and a server-mode proxy each enroll
/// with their own token, and a plaintext request crosses the mTLS hop between them, the
/// server allowing only the client's SPIFFE ID.
#[test]
fn client_and_server_proxies_both_enroll() {
    let ca = Ca::start(&[]);
    let (_app, app_port) = app(&ca.p("site2"), "hello over enrolled mTLS\n");
    let server_token = ca.token("DNS:svc.e2e.test", &["--profile", "server"]);
    let caller = "spiffe://online.test/caller";
    let client_token = ca.token(&format!("URI:{caller}"), &["--profile", "client"]);
    let (sport, cport) = (free_port(), free_port());
    let spawn = |args: Vec<String>| {
        ChildGuard(
            Command::new(BIN)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let common = |token: &str, san: &str| -> Vec<String> {
        [
            "--enroll-token",
            token,
            "--ca",
            &ca.https,
            "--ca-fingerprint",
            &ca.fingerprint,
            "--san",
            san,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut server_args: Vec<String> = [
        "proxy",
        "server",
        "--listen",
        &format!("127.0.0.1:{sport}"),
        "--backend",
        &format!("127.0.0.1:{app_port}"),
        "--http",
        "--allow",
        caller,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    server_args.extend(common(&server_token, "DNS:svc.e2e.test"));
    let mut server = spawn(server_args);
    let mut client_args: Vec<String> = [
        "proxy",
        "client",
        "--listen",
        &format!("127.0.0.1:{cport}"),
        "--target",
        &format!("127.0.0.1:{sport}"),
        "--server-name",
        "svc.e2e.test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    client_args.extend(common(&client_token, &format!("URI:{caller}")));
    let mut client = spawn(client_args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(port_open(sport) && port_open(cport) && port_open(app_port)) {
        assert!(
            server.0.try_wait().unwrap().is_none() && client.0.try_wait().unwrap().is_none(),
            "a proxy exited"
        );
        assert!(Instant::now() < deadline, "the proxies did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = tool(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{cport}/hello.txt"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello over enrolled mTLS\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Both certificates are in the inventory, one client and one server.
    let o = ca.remote(&["cert", "list", "--json", "--san", "*e2e.test*"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let o2 = ca.remote(&["cert", "list", "--json", "--san", "*caller*"]);
    let v2: Value = serde_json::from_slice(&o2.stdout).unwrap_or(Value::Null);
    assert_eq!(v["total"], 1, "{v:#}");
    assert_eq!(v2["total"], 1, "{v2:#}");
}

#[test]
fn admins_sign_csrs_and_refusals_record_nothing() {
    let ca = Ca::start(&[]);
    // a non-admin client certificate
    let t = ca.token("DNS:plain.example.internal", &["--profile", "client"]);
    assert!(ca
        .agent_once(Some(&t), "DNS:plain.example.internal", "plain")
        .status
        .success());
    let pem = csr(&ca, "svc", "DNS:svc.example.internal,IP:10.1.2.3");
    let body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let before = ca.count();

    // the admin signs: the CSR's names, the asked validity, recorded
    let (s, v) = ca.post(
        "/v1/sign",
        &body(
            serde_json::json!({"csr": pem, "profile": "server", "ttl": "2h", "owner": "team-svc"}),
        ),
        Some("admin"),
    );
    assert_eq!(s, 201, "{v}");
    let cert = ca.p("svc.pem");
    std::fs::write(&cert, v["certificate"].as_str().unwrap()).unwrap();
    let o = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &ca.s("ca/root.pem"),
            "-untrusted",
            &ca.s("ca/intermediate.pem"),
            "-purpose",
            "sslserver",
            cert.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = tool(
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("DNS:svc.example.internal"), "{text}");
    assert!(text.contains("IP Address:10.1.2.3"), "{text}");
    assert_eq!(serial_of(&cert), v["serial"].as_str().unwrap());
    assert_eq!(ca.count(), before + 1);
    // `sans` replaces the CSR's names
    let (s, v) = ca.post(
        "/v1/sign",
        &body(serde_json::json!({"csr": pem, "profile": "client",
            "sans": ["URI:spiffe://online.test/svc"]})),
        Some("admin"),
    );
    assert_eq!(s, 201, "{v}");
    std::fs::write(&cert, v["certificate"].as_str().unwrap()).unwrap();
    let o = tool(
        "openssl",
        &[
            "x509",
            "-in",
            cert.to_str().unwrap(),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("URI:spiffe://online.test/svc") && !text.contains("DNS:"),
        "{text}"
    );
    assert_eq!(ca.count(), before + 2);

    // refusals: each a 4xx JSON error, and nothing recorded
    let ok_body = body(serde_json::json!({"csr": pem, "profile": "server"}));
    let cases: Vec<(Vec<u8>, Option<&str>, u16, &str)> = vec![
        (ok_body.clone(), None, 401, "unauthenticated"),
        (ok_body.clone(), Some("plain"), 403, "forbidden"),
        (
            body(serde_json::json!({"csr": "not a csr", "profile": "server"})),
            Some("admin"),
            400,
            "bad_csr",
        ),
        (
            body(serde_json::json!({"csr": pem, "profile": "server", "ttl": "100000h"})),
            Some("admin"),
            400,
            "policy_violation",
        ),
        (
            body(serde_json::json!({"csr": pem, "profile": "root"})),
            Some("admin"),
            400,
            "bad_request",
        ),
        (
            body(serde_json::json!({"csr": pem, "profile": "server", "ttl": "soon"})),
            Some("admin"),
            400,
            "bad_request",
        ),
        (
            body(serde_json::json!({"csr": pem, "profile": "server", "sans": ["IP:999.1.1.1"]})),
            Some("admin"),
            400,
            "bad_request",
        ),
        (
            body(serde_json::json!({"csr": pem, "profile": "server", "extra": 1})),
            Some("admin"),
            400,
            "malformed_json",
        ),
    ];
    for (b, who, status, code) in &cases {
        let (s, v) = ca.post("/v1/sign", b, *who);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{who:?} {}: {v}",
            String::from_utf8_lossy(b)
        );
    }
    // a CSR whose signature does not match its content (the last signature byte changed)
    let mut lines: Vec<String> = pem.lines().map(str::to_string).collect();
    let last = lines.len() - 2;
    let l = &mut lines[last];
    let c = if l.starts_with('A') { "B" } else { "A" };
    l.replace_range(0..1, c);
    let tampered = lines.join("\n") + "\n";
    let (s, v) = ca.post(
        "/v1/sign",
        &body(serde_json::json!({"csr": tampered, "profile": "server"})),
        Some("admin"),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        ["bad_csr", "bad_csr_signature"].contains(&v["error"]["code"].as_str().unwrap_or("")),
        "{v}"
    );
    assert_eq!(ca.count(), before + 2, "refused requests record nothing");
    // counted in the metrics
    let o = tool("curl", &["-sS", &format!("{}/metrics", ca.http)]);
    let m = String::from_utf8_lossy(&o.stdout);
    assert!(m.contains("twoway_ca_issued_total{how=\"sign\"} 2"), "{m}");
    assert!(m.contains("route=\"sign\",status=\"403\"} 1"), "{m}");
    assert!(
        m.contains("twoway_ca_errors_total{code=\"policy_violation\"} 1"),
        "{m}"
    );
    // and the audit log names the admin
    let o = ca.remote(&["cert", "list", "--owner", "team-svc", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 1, "{v}");
}

/// `twoway --ca URL cert sign` drives `POST /v1/sign` as the admin and writes the files.
#[test]
fn remote_cert_sign_writes_a_verifiable_certificate() {
    let ca = Ca::start(&[]);
    csr(&ca, "rs", "DNS:remote.example.internal");
    let out = ca.s("rs-out");
    let csr_path = ca.s("rs.csr");
    let args = [
        "cert",
        "sign",
        &csr_path,
        "--profile",
        "server",
        "--owner",
        "team-remote",
        "--ttl",
        "2h",
        "--out",
        &out,
    ];
    let o = ca.remote(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &ca.s("ca/root.pem"),
            "-untrusted",
            &ca.s("ca/intermediate.pem"),
            &format!("{out}/cert.pem"),
        ],
    );
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let chain = std::fs::read_to_string(format!("{out}/chain.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let l = ca.remote(&["cert", "list", "--owner", "team-remote", "--json"]);
    let v: Value = serde_json::from_slice(&l.stdout).unwrap();
    assert_eq!(v["total"], 1, "{v}");
    // Existing files are kept without --force, and nothing more is recorded.
    let o = ca.remote(&args);
    assert_eq!(
        o.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Inventory-only options that the API does not carry are refused up front.
    let o = ca.remote(&[
        "cert",
        "sign",
        &csr_path,
        "--profile",
        "server",
        "--label",
        "env=prod",
    ]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--label"));
    let l = ca.remote(&["cert", "list", "--owner", "team-remote", "--json"]);
    let v: Value = serde_json::from_slice(&l.stdout).unwrap();
    assert_eq!(v["total"], 1, "{v}");
}
