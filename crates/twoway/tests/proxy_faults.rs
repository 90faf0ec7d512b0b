//! Faults around a running proxy: its CRL file caught half-written (the last good CRL is
//! kept, the failed reload counted, and the next good file is taken), and its backend
//! gone and back (clients get 502 at once meanwhile, and are served again without a
//! restart). The real `twoway proxy`, curl and a Python backend; only 127.0.0.1.

mod common;

use common::http::metric_sum;
use common::pki::Pki;
use common::proxy::*;
use common::Server;
use std::process::Command;
use std::time::{Duration, Instant};

/// `curl` through the proxy as `who`: the status code (000 when refused in the handshake).
fn status(pki: &Pki, who: &str, port: u16) -> String {
    let url = format!("https://localhost:{port}/x");
    let o = curl_mtls(
        pki,
        Some(who),
        &url,
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    o.stdout.trim().to_string()
}

/// Polls (at most `limit`) until `who` gets `want`; false if never.
fn eventually(pki: &Pki, who: &str, port: u16, want: &str, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if status(pki, who, port) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn a_crl_file_caught_half_written_keeps_the_last_good_crl() {
    let pki = Pki::new();
    let (_backend, backend_port) = backend_py(pki.dir.path());
    pki.write("live-crl.pem", &pki.ca.crl(&[]));
    let crl = pki.p("live-crl.pem");
    let p = ProxyServer::start(
        &pki,
        &format!("127.0.0.1:{backend_port}"),
        &["--http", "--crl", &crl],
    );
    assert_eq!(status(&pki, "alice", p.port), "200", "{}", p.log());

    // a CRL revoking alice, caught half-written (as by a copy in progress)
    let revoking = pki.ca.crl(&[pki.serial("alice")]);
    pki.write("live-crl.pem", &revoking[..revoking.len() / 2]);
    let failures = || {
        metric_sum(
            &p.metrics(),
            "twoway_proxy_reload_failures_total{",
            &[&format!("listener=\"{}\"", p.listener())],
        )
    };
    let t = Instant::now();
    while failures() < 1.0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        failures() >= 1.0,
        "the torn CRL was not seen:\n{}",
        p.metrics()
    );
    // the last good CRL stays in force: alice (not revoked by it) is served
    for _ in 0..3 {
        assert_eq!(status(&pki, "alice", p.port), "200", "{}", p.log());
    }
    let log = p.log();
    assert!(
        log.to_lowercase().contains("crl"),
        "the failed reload is not logged:\n{log}"
    );

    // the file completed: alice is refused from the next reload on
    pki.write("live-crl.pem", &revoking);
    assert!(
        eventually(&pki, "alice", p.port, "000", Duration::from_secs(5)),
        "the complete CRL was not taken:\n{}",
        p.log()
    );
    assert_eq!(
        status(&pki, "carol", p.port),
        "000",
        "carol is not of this CA"
    );
}

#[test]
fn a_backend_gone_and_back_answers_502_meanwhile_and_serves_again() {
    let pki = Pki::new();
    let (backend, backend_port) = backend_py(pki.dir.path());
    let p = ProxyServer::start(&pki, &format!("127.0.0.1:{backend_port}"), &["--http"]);
    assert_eq!(status(&pki, "alice", p.port), "200", "{}", p.log());

    drop(backend); // killed: nothing listens on its port
    for _ in 0..3 {
        let t = Instant::now();
        let s = status(&pki, "alice", p.port);
        assert_eq!(s, "502", "with the backend gone:\n{}", p.log());
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the 502 took {:?}",
            t.elapsed()
        );
    }

    // back on the same port: served again without touching the proxy
    let log = pki.dir.path().join("backend-again.log");
    let mut cmd = Command::new(python_h2());
    cmd.arg(support("backend.py")).arg(backend_port.to_string());
    let mut again = Server::spawn("backend.py", &mut cmd, &log);
    again.wait_for_port_within(backend_port, Duration::from_secs(15));
    assert!(
        eventually(&pki, "alice", p.port, "200", Duration::from_secs(5)),
        "not served after the backend came back:\n{}",
        p.log()
    );
}
