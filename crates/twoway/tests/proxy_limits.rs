//! The proxy's connection table against a client that opens connections and sends nothing:
//! a full listener sheds its idle connections (oldest first) instead of refusing new ones,
//! so a real client is still served at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::proxy::*;

fn shed_total(admin: u16) -> f64 {
    metrics(admin)
        .lines()
        .filter(|l| l.starts_with("twoway_proxy_connections_shed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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
            stdout(&out).ends_with("\n200"),
            "round {round}: {} {}\n{}",
            stdout(&out),
            stderr(&out),
            t.logs()
        );
        assert!(
            took < Duration::from_secs(1),
            "round {round}: served after {took:?}"
        );
    }
    assert!(shed_total(t.admin) >= 50.0, "{}", metrics(t.admin));
    let m = metrics(t.admin);
    let refused: f64 = m
        .lines()
        .filter(|l| l.starts_with("twoway_proxy_connections_refused_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        refused, 0.0,
        "idle connections are shed, never a new one refused:\n{m}"
    );
    drop(idle);
}
