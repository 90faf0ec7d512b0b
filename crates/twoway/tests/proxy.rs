//! End-to-end tests of `twoway proxy` with real peers: the `twoway` binary itself, curl,
//! `openssl s_client`, and nginx as the backend. Certificates come from rcgen.
//!
//! A missing peer binary fails the test with a message saying what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{http_get, metric, metric_sum, metrics_on, read_response, tls_connect_to, Tls};
use common::pki::*;
use common::proxy::*;
use common::{
    free_port, read_in_background, require_tool, run, run_with_timeout, strings as s, wait_child,
    words, TWOWAY,
};
use rcgen::KeyPair;
use rustls::pki_types::ServerName;
use std::path::Path;
use std::process::Stdio;

/// TCP mode: forwarding, every handshake rejection seen by the client and in /metrics,
/// garbage, a slow handshake, and the proxy still serving afterwards.
#[test]
fn tcp_mode_forwards_and_rejects_bad_clients() {
    let pki = Pki::new();
    let (_nginx, nginx_port, _) = nginx(pki.dir.path());
    let crl = pki.p("crl.pem");
    let mut extra = vec!["--crl", &crl, "--allow", "spiffe://example.org/ns/prod/*"];
    extra.extend(["--handshake-timeout", "1"]);
    let p = ProxyServer::start(&pki, &format!("127.0.0.1:{nginx_port}"), &extra);
    let (port, admin, name) = (p.port, p.admin, p.listener());
    let url = format!("https://localhost:{port}/hello");

    let ok = curl_mtls(&pki, Some("alice"), &url, &[]);
    assert!(ok.success(), "alice: {}\n{}", ok.stderr, p.log());
    assert!(ok.stdout.starts_with("hello"), "{}", ok.stdout);

    // bulk bytes through TCP mode arrive intact
    let big = curl_mtls(
        &pki,
        Some("alice"),
        &format!("https://localhost:{port}/big"),
        &[],
    );
    assert!(big.success());
    assert_eq!(big.stdout_bytes.len(), 1 << 20);

    for (who, reason) in [
        (None, "no_client_cert"),
        (Some("bob"), "denied"),
        (Some("expired"), "expired"),
        (Some("future"), "not_yet_valid"),
        (Some("revoked"), "revoked"),
        (Some("serveronly"), "bad_eku"),
        (Some("caleaf"), "ca_as_leaf"),
        (Some("carol"), "unknown_ca"),
    ] {
        let out = curl_mtls(&pki, who, &url, &[]);
        assert!(!out.success(), "{who:?} must be refused: {}", out.stdout);
        let err = out.stderr;
        assert!(
            err.contains("alert"),
            "{who:?}: client should see a TLS alert, got: {err}"
        );
        let m = p.metrics();
        assert!(
            rejected(&m, &name, reason) >= 1.0,
            "{who:?}: no {reason} in\n{m}\n{}",
            p.log()
        );
    }
    // look-alike issuer (same subject, other key)
    let out = curl_mtls(&pki, Some("evil"), &url, &[]);
    assert!(!out.success());
    let m = p.metrics();
    assert!(
        rejected(&m, &name, "unknown_ca") + rejected(&m, &name, "bad_signature") >= 2.0,
        "look-alike issuer not counted:\n{m}"
    );

    // openssl s_client sees the alert for a revoked certificate, and completes for alice
    let openssl = require_tool("openssl", "openssl");
    let run_s_client = |who: &str| {
        let mut c = Command::new(&openssl)
            .args(["s_client", "-connect", &name, "-servername", "localhost"])
            .args(["-CAfile", &pki.p("ca.pem"), "-verify_return_error"])
            .args(["-cert", &pki.p(&format!("{who}.pem"))])
            .args(["-key", &pki.p(&format!("{who}.key"))])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = read_in_background(c.stdout.take().unwrap());
        let err = read_in_background(c.stderr.take().unwrap());
        let mut stdin = c.stdin.take().unwrap();
        let _ = stdin.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
        std::thread::sleep(Duration::from_millis(500));
        drop(stdin);
        wait_child(&mut c, Duration::from_secs(20)).expect("s_client did not end");
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    };
    let good = run_s_client("alice");
    assert!(good.contains("Verify return code: 0"), "{good}");
    assert!(good.contains("hello"), "{good}");
    let bad = run_s_client("revoked");
    assert!(
        bad.contains("certificate revoked"),
        "s_client should report the alert: {bad}"
    );

    // garbage instead of a ClientHello
    let mut g = TcpStream::connect(("127.0.0.1", port)).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let _ = g.read(&mut buf);
    // a slow client that never finishes the handshake is cut off after 1 s
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "slow client should be closed");
    assert!(started.elapsed() < Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(200));
    let m = p.metrics();
    assert!(
        rejected(&m, &name, "protocol") >= 1.0,
        "garbage not counted:\n{m}"
    );
    assert!(
        rejected(&m, &name, "handshake_timeout") >= 1.0,
        "timeout not counted:\n{m}"
    );

    // still serving, and the metrics show the good handshakes, bytes and cert expiry
    let ok = curl_mtls(&pki, Some("alice"), &url, &[]);
    assert!(ok.success(), "{}", p.log());
    let m = p.metrics();
    assert!(
        metric(
            &m,
            &format!(
                "twoway_proxy_handshakes_total{{listener=\"{name}\",mode=\"tcp\",result=\"ok\""
            )
        ) >= 3.0
    );
    assert!(metric(&m, &format!("twoway_proxy_bytes_total{{listener=\"{name}\",mode=\"tcp\",direction=\"to_client\"}}")) >= 1_048_576.0);
    let expiry = metric(
        &m,
        &format!("twoway_proxy_certificate_expiry_seconds{{listener=\"{name}\""),
    );
    assert!(expiry > 3600.0 && expiry < 2.0 * 86400.0, "expiry {expiry}");
    assert_eq!(http_get(admin, "/healthz").0, 200);
    // the access log has the decisions and identities
    let log = p.log();
    assert!(log.contains(ALICE), "access log lacks the identity:\n{log}");
    assert!(log.contains("handshake rejected"), "{log}");
}

/// HTTP mode from a config file: identity headers (spoofs stripped), HTTP/2, per-route
/// rules with 403, a Unix-socket backend, and --check-config.
#[test]
fn http_mode_sets_identity_headers_and_enforces_routes() {
    let pki = Pki::new();
    let (_nginx, _, sock) = nginx(pki.dir.path());
    let port = free_port();
    let admin = free_port();
    let config = format!(
        r#"
admin = "127.0.0.1:{admin}"
drain_timeout_secs = 2

[[server]]
name = "web"
listen = "127.0.0.1:{port}"
backend = "unix:{sock}"
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
crl = ["crl.pem"]
http = true

[[server.route]]
prefix = "/admin"
allow = ["{ALICE}"]

[[server.route]]
prefix = "/"
methods = ["GET", "HEAD"]
allow = ["spiffe://example.org/*"]
"#,
        sock = sock.display()
    );
    pki.write("proxy.toml", &config);
    let check = run(Command::new(TWOWAY).args([
        "proxy",
        "--config",
        &pki.p("proxy.toml"),
        "--check-config",
    ]));
    assert!(check.success(), "{}", check.stderr);
    assert!(
        check.stdout.contains("configuration OK"),
        "{}",
        check.stdout
    );

    let p = proxy(
        pki.dir.path(),
        &s(&["--config", &pki.p("proxy.toml")]),
        admin,
    );
    let base = format!("https://localhost:{port}");

    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("{base}/x"),
        &[
            "-H",
            "X-Client-Identity: spiffe://example.org/ns/prod/sa/admin",
            "-H",
            "X-Forwarded-Client-Cert: Hash=00;URI=spoofed",
        ],
    );
    let body = &out.stdout;
    assert!(out.success(), "{}\n{}", out.stderr, p.log());
    assert!(body.contains(&format!("id=[{ALICE}]")), "{body}");
    let hash = sha256_hex(&pki.alice_der);
    assert!(
        body.contains(&format!(
            "xfcc=[Hash={hash};Subject=\"OU=tests,CN=alice\";URI={ALICE}]"
        )),
        "{body}"
    );
    assert!(
        !body.contains("spoofed") && !body.contains("sa/admin"),
        "{body}"
    );

    // HTTP/2 over ALPN
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("{base}/h2"),
        &["--http2", "-w", "|%{http_version}"],
    );
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.ends_with("|2"), "{}", out.stdout);

    // routes: bob may GET / but not /admin, and may not POST
    let out = curl_mtls(
        &pki,
        Some("bob"),
        &format!("{base}/ok"),
        &["-w", "|%{http_code}"],
    );
    assert!(out.stdout.ends_with("|200"), "{}", out.stdout);
    let out = curl_mtls(
        &pki,
        Some("bob"),
        &format!("{base}/admin/x"),
        &["-w", "|%{http_code}"],
    );
    assert_eq!(out.stdout, "forbidden\n|403");
    let out = curl_mtls(
        &pki,
        Some("bob"),
        &format!("{base}/ok"),
        &["-X", "POST", "-w", "|%{http_code}"],
    );
    assert_eq!(out.stdout, "forbidden\n|403");
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("{base}/admin/x"),
        &["-w", "|%{http_code}"],
    );
    assert!(out.stdout.ends_with("|200"), "{}", out.stdout);

    // a revoked certificate never reaches HTTP
    let out = curl_mtls(&pki, Some("revoked"), &format!("{base}/x"), &[]);
    assert!(!out.success());

    let m = metrics_on(admin);
    assert_eq!(
        metric(&m, "twoway_proxy_http_denied_total{listener=\"web\""),
        2.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "twoway_proxy_http_responses_total{listener=\"web\",code=\"2xx\"}"
        ) >= 4.0
    );
    assert!(
        metric(
            &m,
            "twoway_proxy_http_request_duration_seconds_count{listener=\"web\"}"
        ) >= 6.0
    );
    assert!(rejected(&m, "web", "revoked") >= 1.0);
}

/// Client mode: a plaintext port that reaches the server proxy over mTLS, with the server
/// identity checked; a wrong expected identity is refused and counted.
#[test]
fn client_mode_originates_mtls() {
    let pki = Pki::new();
    let (_nginx, nginx_port, _) = nginx(pki.dir.path());
    let server = ProxyServer::start(&pki, &format!("127.0.0.1:{nginx_port}"), &[]);
    let sport = server.port;
    let good = free_port();
    let wrong = free_port();
    let cadmin = free_port();
    pki.write(
        "client.toml",
        &format!(
            r#"
admin = "127.0.0.1:{cadmin}"
[[client]]
name = "good"
listen = "127.0.0.1:{good}"
target = "127.0.0.1:{sport}"
server_name = "localhost"
cert = "alice.pem"
key = "alice.key"
server_ca = "ca.pem"
expect_server = ["dns:localhost"]

[[client]]
name = "wrong"
listen = "127.0.0.1:{wrong}"
target = "127.0.0.1:{sport}"
server_name = "localhost"
cert = "alice.pem"
key = "alice.key"
server_ca = "ca.pem"
expect_server = ["spiffe://example.org/ns/prod/sa/someone-else"]
"#
        ),
    );
    let c = proxy(
        pki.dir.path(),
        &s(&["--config", &pki.p("client.toml")]),
        cadmin,
    );
    let out = curl(&[&format!("http://127.0.0.1:{good}/via-client")]);
    assert!(out.success(), "{}\n{}", out.stderr, c.log());
    assert!(out.stdout.starts_with("hello"), "{}", out.stdout);
    let out = curl(&[&format!("http://127.0.0.1:{wrong}/")]);
    assert!(!out.success(), "must not reach the server: {}", out.stdout);
    let m = metrics_on(cadmin);
    assert!(rejected(&m, "wrong", "denied") >= 1.0, "{m}");
    assert!(
        metric(
            &m,
            "twoway_proxy_handshakes_total{listener=\"good\",mode=\"client\",result=\"ok\""
        ) >= 1.0
    );
}

/// PROXY protocol v2 reaches a TCP backend with the client address and identity TLV.
#[test]
fn tcp_mode_sends_proxy_protocol_v2() {
    let pki = Pki::new();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let bport = backend.local_addr().unwrap().port();
    let p = ProxyServer::start(&pki, &format!("127.0.0.1:{bport}"), &["--proxy-protocol"]);
    let port = p.port;
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = backend.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = [0u8; 16];
        conn.read_exact(&mut head).unwrap();
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).unwrap();
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\npp-ok").unwrap();
        (head, body)
    });
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("https://localhost:{port}/"),
        &[],
    );
    assert_eq!(out.stdout, "pp-ok", "{}", out.stderr);
    let (head, body) = reader.join().unwrap();
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(head[12], 0x21);
    assert_eq!(head[13], 0x11);
    assert_eq!(&body[..4], &[127, 0, 0, 1]);
    assert!(body.windows(ALICE.len()).any(|w| w == ALICE.as_bytes()));
    let mut i = 12;
    let mut found = false;
    while i + 3 <= body.len() {
        let (t, l) = (
            body[i],
            u16::from_be_bytes([body[i + 1], body[i + 2]]) as usize,
        );
        if t == 0xE0 {
            assert_eq!(&body[i + 3..i + 3 + l], ALICE.as_bytes());
            found = true;
        }
        i += 3 + l;
    }
    assert!(found, "identity TLV 0xE0 missing");
}

/// Bad input at start: a clear message naming the problem, a non-zero exit, nothing served.
#[test]
fn bad_input_fails_before_listening() {
    let pki = Pki::new();
    pki.write(
        "garbage-crl.pem",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let base = |listen: u16, cert: &str, key: &str, ca: &str| -> Vec<String> {
        let (cert, key, ca) = (pki.p(cert), pki.p(key), pki.p(ca));
        words(&format!(
            "proxy server --listen 127.0.0.1:{listen} --backend 127.0.0.1:9 --cert {cert} \
             --key {key} --client-ca {ca}"
        ))
    };
    let port = free_port();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            base(port, "server.pem", "missing.key", "ca.pem"),
            "cannot read key file",
        ),
        (
            base(port, "server.pem", "alice.key", "ca.pem"),
            "does not match the certificate",
        ),
        (
            base(port, "server.pem", "server.key", "empty.pem"),
            "no certificate found",
        ),
        (
            [
                base(port, "server.pem", "server.key", "ca.pem"),
                s(&["--crl", &pki.p("garbage-crl.pem")]),
            ]
            .concat(),
            "not a valid CRL",
        ),
        (
            [
                base(port, "server.pem", "server.key", "ca.pem"),
                s(&["--allow", "team:payments"]),
            ]
            .concat(),
            "unknown kind prefix",
        ),
        (
            base(busy_port, "server.pem", "server.key", "ca.pem"),
            "already listens there",
        ),
        (s(&["proxy"]), "nothing to run"),
    ];
    for (args, want) in cases {
        // a proxy that keeps running with bad input fails the test after 10 s
        let out = run_with_timeout(
            Command::new(TWOWAY).args(&args),
            None,
            Duration::from_secs(10),
        );
        assert!(!out.success(), "{args:?} should fail");
        let err = out.stderr;
        assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
        if !want.contains("already listens") {
            assert!(
                TcpStream::connect(("127.0.0.1", port)).is_err(),
                "listened despite bad input"
            );
        }
    }
    drop(busy);
}

// ---------------------------------------------------------------------------------------
// Reload under load
// ---------------------------------------------------------------------------------------

/// One full handshake plus one request; returns the server leaf on a 200.
async fn one_request(cfg: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"GET /r HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        tls.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        if resp.starts_with(b"HTTP/1.1 200") {
            leaf.ok_or_else(|| "no server certificate".to_owned())
        } else {
            Err(format!("response: {}", String::from_utf8_lossy(&resp)))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Under steady load the server certificate and the client CA bundle are replaced and a
/// client certificate is revoked by rewriting the CRL in place: valid clients see no
/// failure, the new CA's client gets in, and the revoked client is refused after a reload.
#[test]
fn reload_under_load_keeps_valid_clients_working() {
    let pki = Pki::new();
    let (_nginx, nginx_port, _) = nginx(pki.dir.path());
    pki.write("live-ca.pem", &pki.ca.pem);
    pki.write("live-crl.pem", &pki.ca.crl(&[]));
    std::fs::copy(pki.path("server.pem"), pki.path("live-server.pem")).unwrap();
    std::fs::copy(pki.path("server.key"), pki.path("live-server.key")).unwrap();
    // bob is valid at first and revoked during the run
    let files = ["live-server.pem", "live-server.key", "live-ca.pem"];
    let crl = pki.p("live-crl.pem");
    let backend = format!("127.0.0.1:{nginx_port}");
    let p = ProxyServer::start_with(&pki, files, &backend, &["--crl", &crl, "--http"]);
    let port = p.port;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let alice = mtls_config(&pki, "alice");
    let bob = mtls_config(&pki, "bob");
    let carol = mtls_config(&pki, "carol");
    let new_server = LeafSpec::server().sign(&pki.ca);
    let bob_serial = pki.serial("bob").to_vec();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(
            one_request(bob.clone(), addr).await.is_ok(),
            "bob works before revocation"
        );
        assert!(
            one_request(carol.clone(), addr).await.is_err(),
            "carol's CA is not trusted yet"
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut loaders = Vec::new();
        for _ in 0..2 {
            let cfg = alice.clone();
            let stop = stop.clone();
            loaders.push(tokio::spawn(async move {
                let (mut ok, mut failed, mut leaves) =
                    (0u32, Vec::new(), std::collections::BTreeSet::new());
                let deadline = Instant::now() + Duration::from_secs(12);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    match one_request(cfg.clone(), addr).await {
                        Ok(leaf) => {
                            ok += 1;
                            leaves.insert(leaf);
                        }
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed, leaves)
            }));
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        // 1. new server certificate and key, written in place
        std::fs::write(pki.path("live-server.key"), &new_server.key).unwrap();
        std::fs::write(pki.path("live-server.pem"), &new_server.cert).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // 2. client CA bundle gains the second CA
        std::fs::write(
            pki.path("live-ca.pem"),
            format!("{}{}", pki.ca.pem, pki.other_ca.pem),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // 3. bob is revoked: the CRL file is rewritten in place
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(pki.path("live-crl.pem"))
            .unwrap();
        f.write_all(pki.ca.crl(&[&bob_serial]).as_bytes()).unwrap();
        drop(f);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let bob_after = one_request(bob.clone(), addr).await;
        let carol_after = one_request(carol.clone(), addr).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        let mut leaves = std::collections::BTreeSet::new();
        for l in loaders {
            let (ok, failed, seen) = l.await.unwrap();
            assert!(
                failed.is_empty(),
                "valid client saw failures: {failed:?}\n{}",
                p.log()
            );
            total += ok;
            leaves.extend(seen);
        }
        assert!(total > 50, "too few requests under load: {total}");
        assert!(
            leaves.contains(&new_server.der),
            "new server certificate never served"
        );
        assert_eq!(
            leaves.len(),
            2,
            "expected the old then the new server certificate"
        );
        assert!(bob_after.is_err(), "revoked client still accepted");
        assert!(
            carol_after.is_ok(),
            "client of the added CA refused: {carol_after:?}\n{}",
            p.log()
        );
    });
    let m = p.metrics();
    assert!(
        metric(
            &m,
            &format!("twoway_proxy_reloads_total{{listener=\"127.0.0.1:{port}\"")
        ) >= 3.0,
        "{m}"
    );
    assert!(
        rejected(&m, &format!("127.0.0.1:{port}"), "revoked") >= 1.0,
        "{m}"
    );
}

/// SIGTERM: no new connections, an open connection still completes its request, and the
/// process exits by itself within the drain deadline.
#[test]
fn sigterm_drains_open_connections() {
    let pki = Pki::new();
    let (_nginx, nginx_port, _) = nginx(pki.dir.path());
    let backend = format!("127.0.0.1:{nginx_port}");
    let mut p = ProxyServer::start(&pki, &backend, &["--drain-timeout", "5"]);
    let addr: SocketAddr = format!("127.0.0.1:{}", p.port).parse().unwrap();
    let mut tls = alice_connects(&pki, addr);
    tls.write_all(b"GET /draining HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    tls.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        TcpStream::connect(addr).is_err(),
        "new connections must be refused while draining"
    );
    tls.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tls.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("path=[/draining]"), "{text}");
    drop(tls);
    let status = p.proc.wait_for_exit(Duration::from_secs(8));
    assert!(status.success(), "exit status {status}:\n{}", p.log());
    assert!(p.log().contains("drained"), "{}", p.log());
}

/// A blocking mTLS connection to the proxy at `addr` as alice (name checked: localhost).
fn alice_connects(pki: &Pki, addr: SocketAddr) -> Tls {
    let name = ServerName::try_from("localhost").unwrap();
    tls_connect_to(addr, name, mtls_config(pki, "alice"))
}

// ---------------------------------------------------------------------------------------
// Keep-alive across parking, worker threads
// ---------------------------------------------------------------------------------------

/// One HTTP/1.1 connection keeps working across an idle pause long enough for the proxy to
/// park it (release its buffers and hand its backend connection to the pool), with worker
/// threads serving the connections; identity headers stay right on every request.
#[test]
fn http_keep_alive_survives_parking_on_workers() {
    let pki = Pki::new();
    let (_nginx, nginx_port, _) = nginx(pki.dir.path());
    let backend = format!("127.0.0.1:{nginx_port}");
    let p = ProxyServer::start(&pki, &backend, &["--http", "--workers", "2"]);
    let addr: SocketAddr = format!("127.0.0.1:{}", p.port).parse().unwrap();
    let mut tls = alice_connects(&pki, addr);
    // two back to back (pool, then the dedicated backend connection), a pause that
    // parks the connection, one more, then a pipelined pair ending with close
    for (i, pause_ms) in [(0, 0u64), (1, 0), (2, 800), (3, 0)] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        let req = format!("GET /k{i} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tls.write_all(req.as_bytes()).unwrap();
        let (_, head, body) = read_response(&mut tls);
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "request {i}: {head}\n{}",
            p.log()
        );
        assert!(body.contains(&format!("id=[{ALICE}]")), "{body}");
        assert!(body.contains(&format!("path=[/k{i}]")), "{body}");
    }
    std::thread::sleep(Duration::from_millis(800));
    tls.write_all(
        b"GET /p1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /p2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    for path in ["/p1", "/p2"] {
        let (_, head, body) = read_response(&mut tls);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(body.contains(&format!("path=[{path}]")), "{body}");
    }
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let m = p.metrics();
    let ok = metric_sum(&m, "twoway_proxy_http_responses_total{", &["code=\"2xx\""]);
    assert!(ok >= 6.0, "{m}");
}

/// The HTTP/1.x path against nginx with curl: chunked request and response bodies, a large
/// body by length, HEAD, HTTP/1.0, several requests on one connection, and a malformed head.
#[test]
fn http1_bodies_head_and_http10_through_nginx() {
    let pki = Pki::new();
    let (_nginx, nginx_port, _) = nginx(pki.dir.path());
    let p = ProxyServer::start(&pki, &format!("127.0.0.1:{nginx_port}"), &["--http"]);
    let port = p.port;
    let base = format!("https://localhost:{port}");
    // chunked response (gzip), decoded by curl: the whole 1 MiB
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("{base}/gz"),
        &[
            "--http1.1",
            "--compressed",
            "-D",
            "-",
            "-o",
            &pki.p("gz.out"),
        ],
    );
    assert!(out.success(), "{}\n{}", out.stderr, p.log());
    let head = out.stdout.to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(std::fs::read(pki.p("gz.out")).unwrap().len(), 1 << 20);
    // chunked request body (from stdin), then a length-delimited 1 MiB body and HEAD, all
    // on one connection
    pki.write("upload.txt", &"y".repeat(200_000));
    let tls = [
        "--cacert".to_owned(),
        pki.p("ca.pem"),
        "--cert".to_owned(),
        pki.p("alice.pem"),
        "--key".to_owned(),
        pki.p("alice.key"),
        "--http1.1".to_owned(),
    ];
    let mut args: Vec<String> = tls.to_vec();
    args.extend(s(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", pki.p("upload.txt")),
        "-w",
        "|%{http_code}|%{num_connects}\n",
        &format!("{base}/up"),
        "--next",
    ]));
    args.extend(tls.iter().cloned());
    args.extend(s(&[
        "-o",
        &pki.p("big.out"),
        "-w",
        "|%{http_code}|%{num_connects}|%{size_download}\n",
        &format!("{base}/big"),
        "--next",
    ]));
    args.extend(tls.iter().cloned());
    args.extend(s(&[
        "-I",
        "-w",
        "|%{http_code}|%{num_connects}\n",
        &format!("{base}/big"),
    ]));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&refs);
    let text = &out.stdout;
    assert!(out.success(), "{}\n{}", out.stderr, p.log());
    assert!(text.contains("path=[/up]"), "{text}");
    assert!(text.contains("|200|1\n"), "{text}");
    assert!(text.contains("|200|0|1048576\n"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-length: 1048576"),
        "{text}"
    );
    assert!(text.ends_with("|200|0\n"), "{text}");
    // HTTP/1.0
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("{base}/ten"),
        &["--http1.0", "-w", "|%{http_code}"],
    );
    assert!(out.stdout.contains("path=[/ten]"), "{}", out.stdout);
    assert!(out.stdout.ends_with("|200"), "{}", out.stdout);
    // a malformed head gets 400 and the connection closes
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("{base}/x"),
        &[
            "--http1.1",
            "-H",
            "Content-Length: nope",
            "-w",
            "|%{http_code}",
        ],
    );
    assert!(out.stdout.ends_with("|400"), "{}", out.stdout);
    let m = p.metrics();
    let series =
        format!("twoway_proxy_http_responses_total{{listener=\"127.0.0.1:{port}\",code=\"2xx\"}}");
    assert!(metric(&m, &series) >= 5.0, "{m}");
}

/// A key made by `openssl genpkey` (PKCS#8 as every peer reads it).
fn openssl_key(dir: &Path, args: &[&str]) -> KeyPair {
    let o = openssl_in(dir, &[&["genpkey"][..], args].concat()).ok();
    KeyPair::from_pem(&o.stdout).unwrap()
}

/// The TLS options and operations not covered above: Ed25519 and RSA certificates on both
/// sides, TLS 1.2 only with --tls12, a CRL fetched from an http:// URL and re-fetched, a
/// forced reload on SIGHUP (with file polling effectively off), and the connection limit.
#[test]
fn key_types_tls12_crl_url_sighup_and_connection_limit() {
    let mut pki = Pki::new();
    let (_nginx, nginx_port, _) = nginx(pki.dir.path());
    let files = pki.dir.path().join(format!("nginx-{nginx_port}/files"));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("crl.pem"), pki.ca.crl(&[])).unwrap();
    let ed_key = || openssl_key(pki.dir.path(), &["-algorithm", "ed25519"]);
    let rsa_args = ["-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048"];
    let rsa_key = || openssl_key(pki.dir.path(), &rsa_args);
    let ed = LeafSpec::server().sign_key(&pki.ca, ed_key());
    let rsa = LeafSpec::server().sign_key(&pki.ca, rsa_key());
    let ed_client = LeafSpec::client("edith", "spiffe://example.org/ns/prod/sa/edith")
        .sign_key(&pki.ca, ed_key());
    let rsa_client = LeafSpec::client("rosa", "spiffe://example.org/ns/prod/sa/rosa")
        .sign_key(&pki.ca, rsa_key());
    pki.add("ed", &ed);
    pki.add("rsa", &rsa);
    pki.add("edith", &ed_client);
    pki.add("rosa", &rsa_client);
    // The live server certificate starts as Ed25519; SIGHUP switches it to RSA.
    std::fs::copy(pki.path("ed.pem"), pki.path("live.pem")).unwrap();
    std::fs::copy(pki.path("ed.key"), pki.path("live.key")).unwrap();
    let (port, port12, admin) = (free_port(), free_port(), free_port());
    let crl_url = format!("http://127.0.0.1:{nginx_port}/files/crl.pem");
    let config = format!(
        r#"
admin = "127.0.0.1:{admin}"
reload_interval_secs = 3600

[[server]]
name = "main"
listen = "127.0.0.1:{port}"
backend = "127.0.0.1:{nginx_port}"
http = true
cert = "{live}"
key = "{live_key}"
client_ca = "{ca}"
crl = ["{crl_url}"]
crl_refresh_secs = 1
max_connections = 2

[[server]]
name = "legacy"
listen = "127.0.0.1:{port12}"
backend = "127.0.0.1:{nginx_port}"
http = true
cert = "{rsa}"
key = "{rsa_key}"
client_ca = "{ca}"
tls12 = true
"#,
        live = pki.p("live.pem"),
        live_key = pki.p("live.key"),
        ca = pki.p("ca.pem"),
        rsa = pki.p("rsa.pem"),
        rsa_key = pki.p("rsa.key"),
    );
    pki.write("proxy.toml", &config);
    let mut p = proxy(
        pki.dir.path(),
        &s(&["--config", &pki.p("proxy.toml")]),
        admin,
    );
    let url = format!("https://localhost:{port}/x");
    let url12 = format!("https://localhost:{port12}/x");
    // openssl s_client as alice, with no input: what it printed
    let s_client = |port: u16, extra: &[&str]| {
        let connect = format!("127.0.0.1:{port}");
        let (cert, key) = (pki.p("alice.pem"), pki.p("alice.key"));
        let mut args = vec![
            "s_client", "-connect", &connect, "-cert", &cert, "-key", &key,
        ];
        args.extend_from_slice(extra);
        openssl_in(pki.dir.path(), &args).stdout
    };
    let served_key = |port: u16| {
        s_client(port, &["-servername", "localhost"])
            .lines()
            .find(|l| l.starts_with("Peer signature type"))
            .unwrap_or_default()
            .to_lowercase()
    };

    // Ed25519 server certificate; P-256, Ed25519 and RSA client certificates.
    for who in ["alice", "edith", "rosa"] {
        let o = curl_mtls(&pki, Some(who), &url, &[]);
        assert!(
            o.stdout.contains("hello id=[spiffe://example.org/ns/"),
            "{who}: {}",
            o.stderr
        );
    }
    assert!(served_key(port).contains("ed25519"), "{}", served_key(port));
    // TLS 1.3 only by default; the legacy listener also speaks 1.2 (with an RSA certificate).
    let o = curl_mtls(&pki, Some("alice"), &url, &["--tls-max", "1.2"]);
    assert!(!o.success(), "TLS 1.2 must be refused without --tls12");
    let o = curl_mtls(
        &pki,
        Some("alice"),
        &url12,
        &["--tls-max", "1.2", "-w", "%{ssl_verify_result}"],
    );
    assert!(
        o.stdout
            .starts_with("hello id=[spiffe://example.org/ns/prod/sa/alice]"),
        "{}",
        o.stderr
    );
    let o = s_client(port12, &["-tls1_2"]);
    assert!(o.contains("New, TLSv1.2, Cipher is"), "{o}");

    // The CRL URL is re-fetched: revoke bob there and he is refused within a few seconds.
    assert!(curl_mtls(&pki, Some("bob"), &url, &[]).success());
    std::fs::write(files.join("crl.pem"), pki.ca.crl(&[pki.serial("bob")])).unwrap();
    // File polling is off (1 h), so the new CRL applies on SIGHUP.
    std::thread::sleep(Duration::from_millis(2500));
    p.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if !curl_mtls(&pki, Some("bob"), &url, &[]).success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob still accepted after the CRL URL revoked him:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rejected(&metrics_on(admin), "main", "revoked") >= 1.0);
    // SIGHUP also took the new server certificate: swap it in and signal again.
    std::fs::copy(pki.path("rsa.pem"), pki.path("live.pem")).unwrap();
    std::fs::copy(pki.path("rsa.key"), pki.path("live.key")).unwrap();
    assert!(
        served_key(port).contains("ed25519"),
        "no reload without SIGHUP or polling"
    );
    p.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served_key(port).contains("rsa") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // HTTP mode counts the bytes of finished connections too.
    let m = metrics_on(admin);
    for dir in ["from_client", "to_client"] {
        let series = format!(
            "twoway_proxy_bytes_total{{listener=\"main\",mode=\"http\",direction=\"{dir}\"}}"
        );
        assert!(metric(&m, &series) > 100.0, "{series}: {m}");
    }

    // The connection limit: two held connections that never start a handshake are idle,
    // so a third connection takes the place of the oldest (shed and counted), and the
    // client is served.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let o = curl_mtls(&pki, Some("alice"), &url, &[]);
    assert!(
        o.success(),
        "a held connection that never started a handshake must make room:\n{}",
        p.log()
    );
    let m = metrics_on(admin);
    assert!(
        metric(&m, "twoway_proxy_connections_shed_total{listener=\"main\"") >= 1.0,
        "{m}"
    );
    drop(held);
    p.kill();
}

/// A full listener sheds its idle connections (oldest first) instead of refusing new ones:
/// connections that never start a TLS handshake cannot lock a real client out.
#[test]
fn idle_connections_cannot_lock_out_a_real_client() {
    let t = HttpProxy::start(&["--max-connections", "100"]);
    // 150 connections from one address that never start a TLS handshake
    let idle: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(("127.0.0.1", t.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        let start = Instant::now();
        let out = curl_mtls(
            &t.pki,
            Some("alice"),
            &t.url("/x"),
            &["--max-time", "5", "-w", "\n%{http_code}"],
        );
        let took = start.elapsed();
        assert!(
            out.stdout.ends_with("\n200"),
            "round {round}: {out}\n{}",
            t.logs()
        );
        assert!(
            took < Duration::from_secs(1),
            "round {round}: served after {took:?}"
        );
    }
    let m = metrics_on(t.admin);
    let sum = |series: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(sum("twoway_proxy_connections_shed_total{") >= 50.0, "{m}");
    assert_eq!(
        sum("twoway_proxy_connections_refused_total{"),
        0.0,
        "idle connections are shed, never a new one refused:\n{m}"
    );
    drop(idle);
}

/// A CRL whose nextUpdate passes while the proxy runs: with `crl_stale = "refuse"` (the
/// default) clients of its issuer are refused once the grace period is over, with
/// `"warn"` they keep being served; a fresh CRL written to the file is taken by the next
/// reload and clients are served again. `/metrics` shows the seconds left until nextUpdate.
#[test]
fn a_stale_crl_is_refused_after_its_grace_period_and_a_fresh_one_restores_service() {
    let pki = Pki::new();
    let (_backend, backend_port) = backend_py(pki.dir.path());
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    pki.write("crl.pem", &pki.ca.crl_until(&[], soon));
    let (strict, lenient, admin) = (free_port(), free_port(), free_port());
    let listener = |name: &str, port: u16, stale: &str| {
        format!(
            "[[server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n\
             backend = \"127.0.0.1:{backend_port}\"\nhttp = true\ncert = {:?}\nkey = {:?}\n\
             client_ca = {:?}\ncrl = [{:?}]\n{stale}\n",
            pki.p("server.pem"),
            pki.p("server.key"),
            pki.p("ca.pem"),
            pki.p("crl.pem"),
        )
    };
    let config = format!(
        "reload_interval_secs = 1\n\n{}\n{}",
        listener("strict", strict, "crl_stale_grace_secs = 1"),
        listener("lenient", lenient, "crl_stale = \"warn\""),
    );
    pki.write("proxy.toml", &config);
    let args = s(&[
        "--config",
        &pki.p("proxy.toml"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let p = proxy(pki.dir.path(), &args, admin);
    let url = |port: u16| format!("https://localhost:{port}/");
    let served = |port: u16| curl_mtls(&pki, Some("alice"), &url(port), &[]).success();
    assert!(served(strict), "{}", p.log());
    let m = metrics_on(admin);
    let left = metric_sum(
        &m,
        "twoway_proxy_crl_next_update_seconds{",
        &["listener=\"strict\""],
    );
    assert!((0.0..=3.0).contains(&left), "{m}");

    // nextUpdate + 1 s of grace passes: the strict listener refuses, the lenient one serves
    let deadline = Instant::now() + Duration::from_secs(15);
    while served(strict) {
        assert!(
            Instant::now() < deadline,
            "a stale CRL was never refused:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let o = curl_mtls(&pki, Some("alice"), &url(strict), &[]);
    assert!(!o.success(), "{o}");
    assert!(served(lenient), "{}", p.log());
    let m = metrics_on(admin);
    assert!(rejected(&m, "strict", "stale_crl") >= 1.0, "{m}");
    assert!(
        metric_sum(
            &m,
            "twoway_proxy_crl_next_update_seconds{",
            &["listener=\"lenient\""]
        ) < 0.0,
        "{m}"
    );
    assert!(p.log().contains("past its nextUpdate"), "{}", p.log());

    // a fresh CRL: the reload takes it and the strict listener serves again
    pki.write("crl.pem", &pki.ca.crl(&[]));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !served(strict) {
        assert!(
            Instant::now() < deadline,
            "a fresh CRL did not restore service:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
