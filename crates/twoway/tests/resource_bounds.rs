//! Resource bounds under hostile clients: 5,000 connections that are silent (TCP only),
//! that complete a TLS handshake and send nothing, or that send a request head one line a
//! second (slowloris), against `twoway ca serve` and against `twoway proxy`. Meanwhile a
//! valid client is served with its 99th-percentile latency under ten times its value
//! without the flood, and the server's memory (RSS) and open descriptors stay under the
//! bounds docs/security.md states. Hostile bodies too: a deep JSON document, a huge CSR
//! and an oversized head are refused with 4xx and the server stays up.
//!
//! The real binaries; rustls clients; only 127.0.0.1; every wait is bounded.

mod common;

use common::http::{client_config, read_response};
use common::online::OnlineCa;
use common::proxy::{mtls_config, HttpProxy};
use common::raise_fd_limit;
use rustls::pki_types::ServerName;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hostile connections per flood.
const HOSTILE: usize = 5_000;
/// Valid requests measured with and without the flood.
const SAMPLES: usize = 100;
/// The floods of the two tests do not overlap: each measures its server alone.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The documented bound on a server's resident memory during the flood (docs/security.md).
const RSS_BOUND_MIB: u64 = 256;

/// What a flood did: connections opened, and how many the server closed.
struct Flood {
    rt: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Flood {
    /// Opens `n` hostile connections to `addr`, a third of each kind, 256 at a time; returns
    /// once they are all attempted (they stay open, or are closed by the server).
    fn start(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, name: &str, n: usize) -> Flood {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let name = ServerName::try_from(name.to_string()).unwrap();
        rt.block_on(async {
            let connector = tokio_rustls::TlsConnector::from(tls);
            let parallel = Arc::new(tokio::sync::Semaphore::new(256));
            for i in 0..n {
                let permit = parallel.clone().acquire_owned().await.unwrap();
                let (c, name) = (connector.clone(), name.clone());
                let (stop, opened, closed) = (stop.clone(), opened.clone(), closed.clone());
                tokio::spawn(async move {
                    let hostile = hostile(i % 3, addr, c, name, &stop, &opened, permit);
                    if tokio::time::timeout(Duration::from_secs(120), hostile)
                        .await
                        .is_ok_and(|closed_by_server| closed_by_server)
                    {
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            // every connection attempted (the last permits taken back)
            let _all = parallel.acquire_many(256).await.unwrap();
        });
        Flood {
            rt,
            stop,
            opened,
            closed,
        }
    }

    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let r = (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        );
        self.rt.shutdown_timeout(Duration::from_secs(2));
        r
    }
}

/// One hostile connection of `kind` (0: silent TCP, 1: TLS and silence, 2: slowloris);
/// true when the server closed it.
async fn hostile(
    kind: usize,
    addr: SocketAddr,
    c: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    stop: &AtomicBool,
    opened: &AtomicUsize,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let wait = Duration::from_secs(5);
    let Ok(Ok(tcp)) = tokio::time::timeout(wait, tokio::net::TcpStream::connect(addr)).await else {
        return false;
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 256];
    if kind == 0 {
        drop(permit);
        let mut tcp = tcp;
        while !stop.load(Ordering::Relaxed) {
            let read = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                return true;
            }
        }
        return false;
    }
    let Ok(Ok(mut tls)) = tokio::time::timeout(wait, c.connect(name, tcp)).await else {
        return true;
    };
    drop(permit);
    if kind == 2
        && tls
            .write_all(b"POST /v1/sign HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
    {
        return true;
    }
    let mut line = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) if kind == 2 => {
                line += 1;
                let h = format!("X-Slow-{line}: {line}\r\n");
                if tls.write_all(h.as_bytes()).await.is_err() {
                    return true;
                }
            }
            Err(_) => {}
        }
    }
    false
}

/// The 99th percentile of `samples`.
fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// Resident memory (KiB) and open descriptors of process `pid`.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// One request on a fresh mTLS connection (a full handshake each time): its status and
/// how long it took.
fn timed(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    name: &str,
    raw: &[u8],
) -> (u16, Duration) {
    let t = Instant::now();
    let Ok(tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, t.elapsed());
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    if tls.write_all(raw).is_err() {
        return (0, t.elapsed());
    }
    let (status, _, _) = read_response(&mut tls);
    (status, t.elapsed())
}

/// `SAMPLES` requests, each of which must answer `want`: their 99th-percentile latency.
fn measure(
    what: &str,
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    name: &str,
    raw: &dyn Fn() -> Vec<u8>,
    want: u16,
) -> Duration {
    let mut took = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let (status, t) = timed(addr, cfg, name, &raw());
        assert_eq!(
            status, want,
            "{what}: request {i} answered {status} after {t:?}"
        );
        took.push(t);
    }
    let mut sorted = took.clone();
    sorted.sort();
    eprintln!("{what}: median {:?}", sorted[sorted.len() / 2]);
    p99(took)
}

/// The flood against `addr` while a valid client measures; asserts the latency, memory and
/// descriptor bounds. Returns (unloaded p99, loaded p99, RSS KiB, fds).
#[allow(clippy::too_many_arguments)]
fn under_flood(
    what: &str,
    pid: u32,
    addr: SocketAddr,
    hostile_tls: Arc<rustls::ClientConfig>,
    valid: &Arc<rustls::ClientConfig>,
    name: &str,
    raw: &dyn Fn() -> Vec<u8>,
    want: u16,
    fd_bound: usize,
) {
    // warm up, then the value without the flood
    measure(what, addr, valid, name, raw, want);
    let quiet = measure(what, addr, valid, name, raw, want);
    let (rss0, _) = rss_and_fds(pid);
    let flood = Flood::start(addr, hostile_tls, name, HOSTILE);
    let loaded = measure(what, addr, valid, name, raw, want);
    let (rss, fds) = rss_and_fds(pid);
    let (opened, closed) = flood.stop();
    eprintln!(
        "{what}: p99 {quiet:?} alone, {loaded:?} beside {opened} hostile connections \
         ({closed} closed by the server); RSS {} MiB before, {} MiB during; {fds} open fds",
        rss0 / 1024,
        rss / 1024
    );
    assert!(
        opened >= HOSTILE * 9 / 10,
        "{what}: only {opened} hostile connections opened"
    );
    let floor = Duration::from_millis(20);
    assert!(
        loaded <= (quiet * 10).max(floor),
        "{what}: p99 {loaded:?} beside the flood, over ten times {quiet:?}"
    );
    assert!(
        rss / 1024 <= RSS_BOUND_MIB,
        "{what}: RSS {} MiB during the flood (bound {RSS_BOUND_MIB} MiB)",
        rss / 1024
    );
    assert!(
        fds <= fd_bound,
        "{what}: {fds} open descriptors (bound {fd_bound})"
    );
}

#[test]
fn ca_serve_keeps_serving_beside_5000_hostile_connections_in_bounded_memory() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit(2 * HOSTILE as u64 + 4096);
    let mut ca = OnlineCa::init();
    ca.serve();
    let csr = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["bounds.example.internal".into()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.serialize_request(&key).unwrap().pem().unwrap()
    };
    let body = serde_json::json!({"csr": csr, "profile": "server", "ttl": "1h"}).to_string();
    let raw = move || {
        format!(
            "POST /v1/sign HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let admin = ca.client_config(Some("admin"));
    let addr = ca.https;
    // the server's certificate names 127.0.0.1
    under_flood(
        "ca serve POST /v1/sign",
        ca.pid(),
        addr,
        ca.client_config(None),
        &admin,
        "127.0.0.1",
        &raw,
        201,
        // two listeners of at most max_connections (4096) each, plus files and the store
        2 * 4096 + 128,
    );

    // hostile bodies: refused with 4xx, and the server is still there
    let deep = format!("{{\"csr\": {}1{}}}", "[".repeat(50_000), "]".repeat(50_000));
    let huge = format!(
        "{{\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----\\n{}\", \"profile\": \"server\"}}",
        "A".repeat(2 * 1024 * 1024)
    );
    for (what, body) in [("deep JSON", deep), ("huge CSR", huge)] {
        let raw = format!(
            "POST /v1/sign HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, _) = timed(addr, &admin, "127.0.0.1", raw.as_bytes());
        assert!(
            (400..500).contains(&status) || status == 0,
            "{what}: answered {status}"
        );
    }
    let big_head = format!(
        "GET /healthz HTTP/1.1\r\nHost: ca\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(256 * 1024)
    );
    let (status, _) = timed(addr, &admin, "127.0.0.1", big_head.as_bytes());
    // 431, or the connection reset while the client is still writing the rest of it
    assert!(
        status == 431 || status == 0,
        "an oversized head answered {status}"
    );
    let (o, _) = ca.curl_https("/healthz", &[]);
    assert!(
        o.stdout.ends_with("\n200"),
        "the CA is down after hostile bodies: {o}"
    );
}

#[test]
fn the_proxy_keeps_serving_beside_5000_hostile_connections_in_bounded_memory() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit(2 * HOSTILE as u64 + 4096);
    let t = HttpProxy::start(&[]);
    let alice = mtls_config(&t.pki, "alice");
    let anonymous = client_config(&t.pki.path("ca.pem"), None);
    let addr: SocketAddr = ([127, 0, 0, 1], t.port).into();
    let raw = || b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec();
    under_flood(
        "proxy GET through to the backend",
        t.proxy.pid(),
        addr,
        anonymous,
        &alice,
        "localhost",
        &raw,
        200,
        // one listener's table (4096 by default), a backend connection per busy client
        // connection, files
        2 * 4096 + 128,
    );
}
