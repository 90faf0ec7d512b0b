//! OCSP checking of client certificates by `twoway proxy server`, against real responders:
//! `twoway ca serve` (the certificates' AIA URL; a revocation seen after the cache
//! refresh; the responder killed: cached answers still used, uncached certificates refused
//! or, with `ocsp_fail_open`, passed and counted) and `openssl ocsp -port` (a delegated
//! responder and the issuer itself as signers; answers that are garbage, about another
//! certificate, expired, future-dated or signed by another CA's responder, each refused
//! and counted under its reason while other listeners keep serving); and nginx with
//! `ssl_ocsp on` against the same responder, which must agree on good, revoked and unknown.
//! `twoway proxy client --ocsp` checks the server's certificate the same way, and a resumed
//! TLS session is checked as a full handshake is.
//! Only 127.0.0.1; every wait is bounded.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{metric_sum, metrics_on};
use common::online::{OnlineCa, ONLINE_ADMIN};
use common::pki::{serial_of, LeafSpec, Pki};
use common::proxy::{backend_py, curl, curl_mtls, proxy, rejected, support, ProxyServer};
use common::{free_port, require_faketime, require_tool, strings, Server, FAKETIME};
use rcgen::ExtendedKeyUsagePurpose as Eku;

/// Waits (at most `limit`) until `f` holds; fails with `what` and `log` otherwise.
#[track_caller]
fn wait_until(what: &str, limit: Duration, log: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A `[[server]]` listener in HTTP mode with OCSP on and `extra` keys.
fn listener(name: &str, port: u16, backend: u16, files: [&str; 3], extra: &str) -> String {
    format!(
        "[[server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n\
         backend = \"127.0.0.1:{backend}\"\nhttp = true\ncert = {:?}\nkey = {:?}\n\
         client_ca = {:?}\nocsp = true\n{extra}\n",
        files[0], files[1], files[2]
    )
}

fn soft_passes(m: &str, listener: &str, reason: &str) -> f64 {
    metric_sum(
        m,
        "twoway_proxy_ocsp_soft_passes_total{",
        &[
            &format!("listener=\"{listener}\""),
            &format!("reason=\"{reason}\""),
        ],
    )
}

#[test]
fn ca_serve_responder_good_then_revoked_after_refresh_then_down_fails_closed_or_open() {
    let mut ca = OnlineCa::create(
        "OCSP Test",
        ONLINE_ADMIN,
        "",
        &[("ocsp_validity", "\"10s\"")],
    );
    // leaves name http://127.0.0.1:PORT/ocsp as their responder (AIA)
    let http_port = free_port();
    let toml = ca.path("ca/ca.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let mut done = false;
    let text: String = text
        .lines()
        .map(|l| {
            if !done && l.starts_with("# url = ") {
                done = true;
                format!("url = \"http://127.0.0.1:{http_port}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(done, "no commented url in ca.toml:\n{text}");
    std::fs::write(&toml, text).unwrap();
    for who in ["alice", "bob", "carol"] {
        ca.tw(&format!(
            "cert issue --ca-dir ca --profile client --san URI:spiffe://ocsp.test/{who} --out {who}"
        ))
        .ok();
    }
    ca.tw("cert issue --ca-dir ca --profile server --san DNS:localhost --out srv")
        .ok();
    let aia = ca.openssl("x509 -in alice/cert.pem -noout -ocsp_uri").ok();
    assert_eq!(aia.line(), format!("http://127.0.0.1:{http_port}/ocsp"));
    ca.serve_http_on(&format!("127.0.0.1:{http_port}"));

    let (_backend, backend) = backend_py(&ca.path("."));
    let (strict, open, admin) = (free_port(), free_port(), free_port());
    let files = [
        ca.p("srv/chain.pem"),
        ca.p("srv/key.pem"),
        ca.p("ca/root.pem"),
    ];
    let files = [files[0].as_str(), files[1].as_str(), files[2].as_str()];
    let config = format!(
        "{}\n{}",
        listener("strict", strict, backend, files, ""),
        listener("open", open, backend, files, "ocsp_fail_open = true"),
    );
    std::fs::write(ca.path("proxy.toml"), config).unwrap();
    let args = strings(&[
        "--config",
        &ca.p("proxy.toml"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let p = proxy(&ca.path("."), &args, admin);
    let base = ca.path(".");
    let served = |port: u16, who: &str| {
        let p = |f: &str| base.join(f).display().to_string();
        curl(&[
            "--cacert",
            &p("ca/root.pem"),
            "--cert",
            &p(&format!("{who}/chain.pem")),
            "--key",
            &p(&format!("{who}/key.pem")),
            &format!("https://localhost:{port}/"),
        ])
        .success()
    };
    let logs = || format!("--- proxy ---\n{}\n--- ca ---\n{}", p.log(), ca.log());

    // good: allowed, and the answer came from the responder
    assert!(served(strict, "alice"), "{}", logs());
    assert!(served(strict, "bob"), "{}", logs());
    let m = metrics_on(admin);
    let good = metric_sum(
        &m,
        "twoway_proxy_ocsp_answers_total{",
        &["listener=\"strict\"", "result=\"good\""],
    );
    assert!(good >= 2.0, "{m}");

    // revoked at the CA: refused once the cached answer is refreshed (80 % of 10 s)
    let serial = serial_of(&ca.path("bob/cert.pem"));
    ca.remote(&["cert", "revoke", &serial, "--reason", "key-compromise"])
        .ok();
    wait_until(
        "the revocation was never seen",
        Duration::from_secs(40),
        &logs,
        || !served(strict, "bob"),
    );
    for _ in 0..3 {
        assert!(!served(strict, "bob"));
    }
    assert!(served(strict, "alice"), "{}", logs());
    let m = metrics_on(admin);
    assert!(rejected(&m, "strict", "revoked") >= 4.0, "{m}");
    let log = p.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("OCSP: certificate refused") && l.contains("revoked"))
        .count();
    assert_eq!(lines, 1, "one log line per certificate and reason:\n{log}");

    // the responder is gone: alice's cached good answer still serves; carol, never asked
    // about, is refused (fail closed), or passed and counted where fail-open was chosen
    ca.stop();
    let logs = || p.log();
    assert!(served(strict, "alice"), "{}", logs());
    assert!(!served(strict, "carol"), "{}", logs());
    assert!(!served(strict, "bob"), "{}", logs());
    assert!(served(open, "carol"), "{}", logs());
    let m = metrics_on(admin);
    assert!(rejected(&m, "strict", "ocsp_unavailable") >= 1.0, "{m}");
    assert!(soft_passes(&m, "open", "ocsp_unavailable") >= 1.0, "{m}");
    assert!(soft_passes(&m, "strict", "ocsp_unavailable") == 0.0, "{m}");
}

/// Uppercase hex, as openssl's index.txt has serials.
fn upper_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// `openssl ocsp -port` answering from `index.txt` about the PKI's CA, signing with
/// `signer` (certificate and key files), its clock shifted by `faketime` (e.g. `-2d`)
/// when given; `nextUpdate` one day after `thisUpdate`.
fn openssl_responder(pki: &Pki, signer: [&str; 2], faketime: Option<&str>) -> (Server, u16) {
    let openssl = require_tool("openssl", "openssl");
    let port = free_port();
    let mut cmd = Command::new(openssl);
    cmd.current_dir(pki.dir.path()).args([
        "ocsp",
        "-index",
        "index.txt",
        "-port",
        &port.to_string(),
        "-CA",
        "ca.pem",
        "-rsigner",
        signer[0],
        "-rkey",
        signer[1],
        "-ndays",
        "1",
    ]);
    if let Some(shift) = faketime {
        require_faketime();
        cmd.env("LD_PRELOAD", FAKETIME)
            .env("FAKETIME", shift)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let log = pki.path(&format!("ocsp-{port}.log"));
    let mut s = Server::spawn("openssl ocsp", &mut cmd, &log);
    // Not a probe connection: OpenSSL 3.0's responder hangs on a connection closed without
    // a request. It says when it listens.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.log().contains("waiting for OCSP client connections") {
        s.assert_running("before listening");
        assert!(
            Instant::now() < deadline,
            "openssl ocsp did not start:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (s, port)
}

/// The test PKI plus what the openssl responders need: `index.txt` (alice good, mallory
/// — `revoked` — revoked, bob absent: unknown; the server certificate good and a second one,
/// `server-revoked`, revoked), a delegated responder certificate
/// (`responder`, id-kp-OCSPSigning from the CA), the CA's key (`ca.key`), and a responder
/// certificate of another CA (`foreign-responder`).
fn ocsp_pki() -> Pki {
    let mut pki = Pki::new();
    let delegated = LeafSpec {
        eku: vec![Eku::OcspSigning],
        ..LeafSpec::client("responder", "spiffe://example.org/ocsp")
    }
    .sign(&pki.ca);
    pki.add("responder", &delegated);
    let foreign = LeafSpec {
        eku: vec![Eku::OcspSigning],
        ..LeafSpec::client("responder", "spiffe://example.org/ocsp")
    }
    .sign(&pki.other_ca);
    pki.add("foreign-responder", &foreign);
    pki.write("ca.key", &pki.ca.key.serialize_pem());
    let revoked_server = LeafSpec::server().sign(&pki.ca);
    pki.add("server-revoked", &revoked_server);
    let (good, bad) = (
        "V\t491231235959Z\t",
        "R\t491231235959Z\t240101000000Z,keyCompromise",
    );
    let index = format!(
        "{good}\t{}\tunknown\t/CN=alice\n{bad}\t{}\tunknown\t/CN=mallory\n\
         {good}\t{}\tunknown\t/CN=localhost\n{bad}\t{}\tunknown\t/CN=localhost\n",
        upper_hex(pki.serial("alice")),
        upper_hex(pki.serial("revoked")),
        upper_hex(pki.serial("server")),
        upper_hex(pki.serial("server-revoked")),
    );
    pki.write("index.txt", &index);
    pki
}

/// An HTTP server answering every request with the file `file`.
fn replay(pki: &Pki, file: &str) -> (Server, u16) {
    let py = require_tool("python3", "python3");
    let port = free_port();
    let mut cmd = Command::new(py);
    cmd.arg(support("ocsp_replay.py"))
        .arg(port.to_string())
        .arg(pki.path(file));
    let mut s = Server::spawn(
        "ocsp_replay.py",
        &mut cmd,
        &pki.path(&format!("replay-{port}.log")),
    );
    s.wait_for_port_within(port, Duration::from_secs(15));
    (s, port)
}

#[test]
fn openssl_responders_good_revoked_unknown_and_every_bad_answer_refused_by_reason() {
    let pki = ocsp_pki();
    let (_d, delegated) = openssl_responder(&pki, ["responder.pem", "responder.key"], None);
    let (_i, issuer) = openssl_responder(&pki, ["ca.pem", "ca.key"], None);
    let (_e, expired) = openssl_responder(&pki, ["ca.pem", "ca.key"], Some("-2d"));
    let (_f, future) = openssl_responder(&pki, ["ca.pem", "ca.key"], Some("+1d"));
    let (_g, forged) = openssl_responder(
        &pki,
        ["foreign-responder.pem", "foreign-responder.key"],
        None,
    );
    // an answer about bob, replayed for everyone; and garbage
    let url = format!("http://127.0.0.1:{delegated}");
    let o = common::pki::openssl_in(
        pki.dir.path(),
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "bob.pem",
            "-url",
            &url,
            "-respout",
            "bob.der",
            "-noverify",
        ],
    );
    assert!(o.stdout.contains("bob.pem: unknown"), "{o}");
    let (_o, other) = replay(&pki, "bob.der");
    pki.write("garbage.der", "this is not DER at all\n");
    let (_r, garbage) = replay(&pki, "garbage.der");
    let dead = free_port();

    let (_backend, backend) = backend_py(pki.dir.path());
    let files = [pki.p("server.pem"), pki.p("server.key"), pki.p("ca.pem")];
    let files = [files[0].as_str(), files[1].as_str(), files[2].as_str()];
    let at = |port: u16| format!("ocsp_url = \"http://127.0.0.1:{port}\"");
    let cases: Vec<(&str, String)> = vec![
        ("delegated", at(delegated)),
        ("issuer", at(issuer)),
        ("expired", at(expired)),
        ("future", at(future)),
        ("forged", at(forged)),
        ("other", at(other)),
        ("garbage", at(garbage)),
        ("dead", at(dead)),
        ("open", format!("{}\nocsp_fail_open = true", at(dead))),
        ("nourl", String::new()),
        ("nourl_refuse", "ocsp_no_url = \"refuse\"".into()),
    ];
    let ports: Vec<u16> = cases.iter().map(|_| free_port()).collect();
    let mut config = String::new();
    for ((name, extra), port) in cases.iter().zip(&ports) {
        config.push_str(&listener(name, *port, backend, files, extra));
    }
    pki.write("proxy.toml", &config);
    let admin = free_port();
    let args = strings(&[
        "--config",
        &pki.p("proxy.toml"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let p = proxy(pki.dir.path(), &args, admin);
    let port = |name: &str| ports[cases.iter().position(|c| c.0 == name).unwrap()];
    let served = |name: &str, who: &str| {
        curl_mtls(
            &pki,
            Some(who),
            &format!("https://localhost:{}/", port(name)),
            &[],
        )
        .success()
    };

    for (listener, who, allowed) in [
        ("delegated", "alice", true),
        ("delegated", "revoked", false),
        ("delegated", "bob", false),
        ("issuer", "alice", true),
        ("issuer", "revoked", false),
        ("expired", "alice", false),
        ("future", "alice", false),
        ("forged", "alice", false),
        ("other", "alice", false),
        ("garbage", "alice", false),
        ("dead", "alice", false),
        ("open", "alice", true),
        ("nourl", "alice", true),
        ("nourl_refuse", "alice", false),
        // the refusals elsewhere changed nothing here
        ("delegated", "alice", true),
        ("issuer", "alice", true),
    ] {
        assert_eq!(
            served(listener, who),
            allowed,
            "{listener} as {who}:\n{}",
            p.log()
        );
    }
    let m = metrics_on(admin);
    for (listener, reason) in [
        ("delegated", "revoked"),
        ("delegated", "ocsp_unknown"),
        ("issuer", "revoked"),
        ("expired", "ocsp_stale"),
        ("future", "ocsp_stale"),
        ("forged", "ocsp_bad_signature"),
        ("other", "ocsp_wrong_certificate"),
        ("garbage", "ocsp_bad_response"),
        ("dead", "ocsp_unavailable"),
        ("nourl_refuse", "ocsp_no_url"),
    ] {
        assert_eq!(
            rejected(&m, listener, reason),
            1.0,
            "{listener} {reason}:\n{m}"
        );
    }
    assert_eq!(soft_passes(&m, "open", "ocsp_unavailable"), 1.0, "{m}");
    let no_url = metric_sum(
        &m,
        "twoway_proxy_ocsp_no_url_total{",
        &["listener=\"nourl\""],
    );
    assert_eq!(no_url, 1.0, "{m}");
    // a second connection of alice on the delegated listener came from the cache
    let answers = metric_sum(
        &m,
        "twoway_proxy_ocsp_answers_total{",
        &["listener=\"delegated\"", "result=\"good\""],
    );
    assert_eq!(answers, 1.0, "{m}");
}

#[test]
fn proxy_client_checks_the_servers_certificate_by_ocsp() {
    let pki = ocsp_pki();
    let (_d, responder) = openssl_responder(&pki, ["responder.pem", "responder.key"], None);
    let (_backend, backend) = backend_py(pki.dir.path());
    let backend = format!("127.0.0.1:{backend}");
    let good = ProxyServer::start(&pki, &backend, &["--http"]);
    let files = ["server-revoked.pem", "server-revoked.key", "ca.pem"];
    let bad = ProxyServer::start_with(&pki, files, &backend, &["--http"]);
    for (target, expected) in [(good.port, true), (bad.port, false)] {
        let (port, admin) = (free_port(), free_port());
        let p = proxy(
            pki.dir.path(),
            &strings(&[
                "client",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--target",
                &format!("127.0.0.1:{target}"),
                "--server-name",
                "localhost",
                "--cert",
                &pki.p("alice.pem"),
                "--key",
                &pki.p("alice.key"),
                "--server-ca",
                &pki.p("ca.pem"),
                "--ocsp",
                "--ocsp-url",
                &format!("http://127.0.0.1:{responder}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ]),
            admin,
        );
        let o = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/"),
        ]);
        let relayed = o.success() && o.stdout.trim() == "200";
        assert_eq!(relayed, expected, "target {target}: {o}\n{}", p.log());
        let m = metrics_on(admin);
        let listener = format!("127.0.0.1:{port}");
        let refused = rejected(&m, &listener, "revoked");
        assert_eq!(refused, if expected { 0.0 } else { 1.0 }, "{m}");
    }
}

/// `openssl s_client` (TLS 1.2) as `who` sending one HTTP/1.0 request, saving its session
/// to `who.sess` or resuming from it: (resumed, answered 200).
fn s_client(pki: &Pki, port: u16, who: &str, resume: bool) -> (bool, bool) {
    let openssl = require_tool("openssl", "openssl");
    let mut cmd = Command::new(openssl);
    cmd.current_dir(pki.dir.path()).args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-tls1_2",
        "-servername",
        "localhost",
        "-CAfile",
        "ca.pem",
        "-cert",
        &format!("{who}.pem"),
        "-key",
        &format!("{who}.key"),
        "-ign_eof",
    ]);
    let sess = format!("{who}.sess");
    cmd.args([if resume { "-sess_in" } else { "-sess_out" }, &sess]);
    let o = common::run_with_timeout(
        &mut cmd,
        Some(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"),
        Duration::from_secs(20),
    );
    (
        o.stdout.contains("Reused, TLSv1.2"),
        o.stdout.contains("HTTP/1.1 200"),
    )
}

#[test]
fn resumed_tls_sessions_are_checked_too() {
    let pki = ocsp_pki();
    let (_d, responder) = openssl_responder(&pki, ["responder.pem", "responder.key"], None);
    let (_backend, backend) = backend_py(pki.dir.path());
    let url = format!("http://127.0.0.1:{responder}");
    let extra = [
        "--http",
        "--tls12",
        "--resumption",
        "--ocsp",
        "--ocsp-url",
        &url,
    ];
    let p = ProxyServer::start(&pki, &format!("127.0.0.1:{backend}"), &extra);
    // alice: served on a full handshake and on the resumed session
    assert_eq!(
        s_client(&pki, p.port, "alice", false),
        (false, true),
        "{}",
        p.log()
    );
    assert_eq!(
        s_client(&pki, p.port, "alice", true),
        (true, true),
        "{}",
        p.log()
    );
    // mallory (revoked): the resumed session skips certificate verification, not OCSP
    assert_eq!(
        s_client(&pki, p.port, "revoked", false),
        (false, false),
        "{}",
        p.log()
    );
    assert_eq!(
        s_client(&pki, p.port, "revoked", true),
        (true, false),
        "{}",
        p.log()
    );
    assert_eq!(rejected(&p.metrics(), &p.listener(), "revoked"), 2.0);
}

/// nginx terminating mTLS with `ssl_ocsp on` against `responder`, answering 200 "ok".
fn nginx_ocsp(pki: &Pki, responder: u16) -> (Server, u16) {
    let bin = require_tool("nginx", "nginx");
    let port = free_port();
    let prefix = pki.path(&format!("nginx-{port}"));
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let p = prefix.display();
    let conf = format!(
        r#"
daemon off;
master_process off;
user root;
worker_processes 1;
error_log {p}/logs/error.log info;
pid {p}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_ocsp on;
        ssl_ocsp_responder http://127.0.0.1:{responder};
        location / {{ default_type text/plain; return 200 "ok\n"; }}
    }}
}}
"#,
        cert = pki.p("server.pem"),
        key = pki.p("server.key"),
        ca = pki.p("ca.pem"),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf_path);
    cmd.arg("-e").arg(prefix.join("logs/error.log"));
    let mut server = Server::spawn("nginx", &mut cmd, &prefix.join("stderr.log"));
    server.wait_for_port_within(port, Duration::from_secs(15));
    (server, port)
}

/// What a client sees from a server: allowed (HTTP 200) or not.
fn verdict(pki: &Pki, who: &str, port: u16) -> bool {
    let o = curl_mtls(
        pki,
        Some(who),
        &format!("https://localhost:{port}/"),
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    o.success() && o.stdout.trim() == "200"
}

#[test]
fn nginx_ssl_ocsp_and_twoway_agree_on_good_revoked_and_unknown() {
    let pki = ocsp_pki();
    let (_d, responder) = openssl_responder(&pki, ["responder.pem", "responder.key"], None);
    let (_nginx, nginx) = nginx_ocsp(&pki, responder);
    let (_backend, backend) = backend_py(pki.dir.path());
    let port = free_port();
    let admin = free_port();
    let p = proxy(
        pki.dir.path(),
        &strings(&[
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--backend",
            &format!("127.0.0.1:{backend}"),
            "--http",
            "--cert",
            &pki.p("server.pem"),
            "--key",
            &pki.p("server.key"),
            "--client-ca",
            &pki.p("ca.pem"),
            "--ocsp",
            "--ocsp-url",
            &format!("http://127.0.0.1:{responder}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ]),
        admin,
    );
    // compared: good (alice), revoked (mallory), unknown (bob: not in index.txt)
    for (who, expected) in [("alice", true), ("revoked", false), ("bob", false)] {
        let ours = verdict(&pki, who, port);
        let theirs = verdict(&pki, who, nginx);
        assert_eq!(
            (ours, theirs),
            (expected, expected),
            "{who}: twoway {ours}, nginx {theirs}\n--- twoway ---\n{}\n--- nginx ---\n{}",
            p.log(),
            common::read(pki.path(&format!("nginx-{nginx}/logs/error.log")))
        );
    }
}
