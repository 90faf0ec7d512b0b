//! The online CA under attack: idle connections by the thousand, connections that never
//! send a request, request heads with ambiguous framing, and a revocation made by the CLI
//! while an administrator's connection is kept alive. What is asserted is what the
//! attacker and a normal client see: answers, closed connections, status codes.
//!
//! The real `twoway ca serve`, curl and rustls clients; only 127.0.0.1; every wait bounded.

mod common;

use common::http::{closed_within, plain_request, read_response, sample, tls_connect, Timed};
use common::online::OnlineCa;
use common::pki::openssl_csr;
use common::raise_fd_limit;
use rustls::pki_types::ServerName;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The value of the first sample of `series`; 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// Fails the test with `what` unless the server closes `r` within `limit`.
#[track_caller]
fn closes(r: &mut impl Timed, limit: Duration, what: &str) {
    assert!(closed_within(r, limit), "{what}");
}

/// More idle connections than the server's default table holds.
const FLOOD: usize = 4100;

/// Opens `n` TLS connections to `addr` (no client certificate), completes each handshake
/// and keeps every one that succeeded open and silent. The runtime is returned with them:
/// dropping it closes them.
fn flood_tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    n: usize,
) -> (
    tokio::runtime::Runtime,
    Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let streams = rt.block_on(async move {
        let connector = tokio_rustls::TlsConnector::from(cfg);
        let parallel = Arc::new(tokio::sync::Semaphore::new(128));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let permit = parallel.clone().acquire_owned().await.unwrap();
            let c = connector.clone();
            set.spawn(async move {
                let _permit = permit;
                let wait = Duration::from_secs(5);
                let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect(addr))
                    .await
                    .ok()?
                    .ok()?;
                let name = ServerName::IpAddress(addr.ip().into());
                tokio::time::timeout(wait, c.connect(name, tcp))
                    .await
                    .ok()?
                    .ok()
            });
        }
        let mut streams = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            if let Ok(Some(s)) = r {
                streams.push(s);
            }
        }
        streams
    });
    (rt, streams)
}

/// Opens `n` plain TCP connections to `addr` and sends nothing on them.
fn flood_tcp(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

#[test]
fn idle_tls_connections_from_one_address_do_not_lock_out_the_api() {
    raise_fd_limit(FLOOD as u64 + 1024);
    let mut ca = OnlineCa::init();
    ca.serve();
    // The attacker: thousands of completed handshakes, no certificate, no request.
    let (_rt, streams) = flood_tls(ca.https, ca.client_config(None), FLOOD);
    assert!(
        streams.len() > FLOOD / 2,
        "the flood itself failed ({} of {FLOOD} handshakes):\n{}",
        streams.len(),
        ca.log()
    );
    // A normal client from the same address is served at once, over HTTP/1.1 and HTTP/2.
    for version in ["--http1.1", "--http2"] {
        let (o, took) = ca.curl_https("/healthz", &[version]);
        assert!(
            o.stdout.ends_with("\n200"),
            "curl {version} /healthz during the flood:\n{o}"
        );
        assert!(
            took < Duration::from_secs(1),
            "curl {version} /healthz took {took:?} during the flood"
        );
    }
    // The operator sees why: idle connections were shed, and the table stayed bounded.
    let m = ca.metrics();
    let shed = metric(&m, "twoway_ca_connections_shed_total{listener=\"https\"}");
    assert!(shed >= 1000.0, "shed connections: {shed}\n{m}");
    let open = metric(&m, "twoway_ca_connections{listener=\"https\"}");
    assert!(open <= 300.0, "open connections: {open}\n{m}");
}

#[test]
fn idle_plain_connections_from_one_address_do_not_lock_out_ocsp_and_crl() {
    raise_fd_limit(2 * FLOOD as u64 + 1024);
    let mut ca = OnlineCa::init();
    ca.serve();
    // Silent TCP connections to both listeners (on the HTTPS one they never start TLS).
    let plain = flood_tcp(ca.http, FLOOD);
    let https = flood_tcp(ca.https, FLOOD);
    assert!(plain.len() > FLOOD / 2 && https.len() > FLOOD / 2);
    for path in ["/crl", "/healthz", "/roots.pem"] {
        let (o, took) = ca.curl_http(path);
        assert_eq!(o.stdout, "200", "curl {path} during the flood:\n{o}");
        assert!(
            took < Duration::from_secs(1),
            "curl {path} took {took:?} during the flood"
        );
    }
    let (o, took) = ca.curl_https("/healthz", &[]);
    assert!(o.stdout.ends_with("\n200"), "{o}");
    assert!(
        took < Duration::from_secs(1),
        "HTTPS /healthz took {took:?}"
    );
    let m = ca.metrics();
    for listener in ["http", "https"] {
        let shed = metric(
            &m,
            &format!("twoway_ca_connections_shed_total{{listener=\"{listener}\"}}"),
        );
        assert!(shed >= 1000.0, "{listener}: shed {shed}\n{m}");
    }
}

#[test]
fn connections_that_send_nothing_are_closed_by_their_deadlines() {
    let mut ca = OnlineCa::init();
    ca.set("handshake_timeout", "\"1s\"");
    ca.set("first_request_timeout", "\"1s\"");
    ca.set("idle_timeout", "\"2s\"");
    ca.serve();
    let limit = Duration::from_secs(5);
    let cfg = ca.client_config(None);

    // TCP without a TLS handshake.
    let mut tcp = TcpStream::connect(ca.https).unwrap();
    closes(
        &mut tcp,
        limit,
        "a connection that never starts TLS stays open",
    );

    // A handshake, then no request.
    let mut tls = tls_connect(ca.https, cfg.clone());
    closes(
        &mut tls,
        limit,
        "a TLS connection without a request stays open",
    );

    // Half a request head, then nothing.
    let mut tls = tls_connect(ca.https, cfg.clone());
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    tls.flush().unwrap();
    closes(
        &mut tls,
        limit,
        "a TLS connection with half a request head stays open",
    );

    // One request, then idle past the idle timeout.
    let mut tls = tls_connect(ca.https, cfg.clone());
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (status, _, _) = read_response(&mut tls);
    assert_eq!(status, 200);
    closes(
        &mut tls,
        limit,
        "an idle kept-alive TLS connection stays open",
    );

    // HTTP/2: the preface and SETTINGS, then no stream.
    let mut h2cfg = (*cfg).clone();
    h2cfg.alpn_protocols = vec![b"h2".to_vec()];
    let mut tls = tls_connect(ca.https, Arc::new(h2cfg));
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    closes(
        &mut tls,
        limit,
        "an HTTP/2 connection that opens no stream stays open",
    );

    // The plain listener: nothing, half a head, and idle after a request.
    let mut tcp = TcpStream::connect(ca.http).unwrap();
    closes(&mut tcp, limit, "a silent plain connection stays open");
    let mut tcp = TcpStream::connect(ca.http).unwrap();
    tcp.write_all(b"GET /crl HTTP/1.1\r\n").unwrap();
    closes(
        &mut tcp,
        limit,
        "a plain connection with half a request head stays open",
    );
    let mut tcp = TcpStream::connect(ca.http).unwrap();
    tcp.set_read_timeout(Some(limit)).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut tcp).0, 200);
    closes(
        &mut tcp,
        limit,
        "an idle kept-alive plain connection stays open",
    );

    // A normal client is still served, and the closings are counted.
    let (o, _) = ca.curl_https("/healthz", &[]);
    assert!(o.stdout.ends_with("\n200"), "{o}");
    let m = ca.metrics();
    assert!(
        metric(
            &m,
            "twoway_ca_connections_timed_out_total{listener=\"https\"}"
        ) >= 4.0,
        "{m}"
    );
}

#[test]
fn ambiguous_request_framing_is_refused_on_both_listeners() {
    let mut ca = OnlineCa::init();
    ca.serve();
    // A signed length is not a length (RFC 9110 §8.6: 1*DIGIT).
    for len in ["+5", "-5", "5, 5", "0x5", ""] {
        let raw = format!("POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\nhello");
        let (status, text) = plain_request(ca.http, raw.as_bytes());
        assert_eq!(status, 400, "plain, Content-Length {len:?}:\n{text}");
    }
    let cfg = ca.client_config(None);
    for len in ["+5", "-5"] {
        let mut tls = tls_connect(ca.https, cfg.clone());
        let raw = format!("POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\nhello");
        tls.write_all(raw.as_bytes()).unwrap();
        let (status, head, body) = read_response(&mut tls);
        assert_eq!(status, 400, "HTTPS, Content-Length {len:?}:\n{head}{body}");
    }
    // Content-Length beside Transfer-Encoding: the two framings a smuggler plays off
    // against each other (RFC 9112 §6.3). Refused, and the connection closed.
    for te in ["chunked", "gzip, chunked"] {
        let mut tls = tls_connect(ca.https, cfg.clone());
        let raw = format!(
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n"
        );
        tls.write_all(raw.as_bytes()).unwrap();
        let (status, head, body) = read_response(&mut tls);
        assert_eq!(status, 400, "HTTPS, TE {te:?} with CL:\n{head}{body}");
        assert!(body.contains("Content-Length"), "{body}");
        assert!(
            closed_within(&mut tls, Duration::from_secs(5)),
            "the connection stays open after a smuggling attempt"
        );
    }
    let raw = "POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(plain_request(ca.http, raw.as_bytes()).0, 400);
}

#[test]
fn a_revocation_by_the_cli_is_seen_at_once_by_a_kept_alive_admin_connection() {
    let mut ca = OnlineCa::init();
    ca.serve();
    let csr = openssl_csr(ca.dir.path(), "svc", "", "DNS:svc.example.internal");
    let body = serde_json::json!({"csr": csr, "profile": "server"}).to_string();
    let request = format!(
        "POST /v1/sign HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tls = tls_connect(ca.https, ca.client_config(Some("admin")));
    for _ in 0..2 {
        tls.write_all(request.as_bytes()).unwrap();
        let (status, head, body) = read_response(&mut tls);
        assert_eq!(status, 201, "{head}{body}");
    }
    // The administrator's certificate is revoked on the CA's host, through the same
    // inventory; the next request on the kept-alive connection (the CLI took far longer than
    // the server's 2 ms between reads of the revocation counter) is refused.
    let o = ca.tw("cert list --ca-dir ca --san URI:*admin --json");
    let v = o.ok().json();
    let serial = v["items"][0]["serial"].as_str().unwrap().to_string();
    ca.tw(&format!("cert revoke {serial} --ca-dir ca")).ok();
    tls.write_all(request.as_bytes()).unwrap();
    let (status, head, body) = read_response(&mut tls);
    assert_eq!(
        status, 401,
        "a signing right after the revocation:\n{head}{body}"
    );
    assert!(body.contains("certificate_revoked"), "{body}");
}
