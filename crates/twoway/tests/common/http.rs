//! HTTP and metrics: rustls client configurations and blocking TLS connections, raw
//! HTTP/1 requests and responses (for what curl will not send, or to see a connection
//! close), and samples read out of Prometheus text.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The value of the first sample whose line starts with `series` (a name, or a name and
/// the start of its labels); a bare name matches only that name. `None` when absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let bare = !series.contains('{');
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| !bare || rest.starts_with(['{', ' ']))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// [`sample`], failing the test with the whole text when the series is absent.
#[track_caller]
pub fn metric(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no series {series} in metrics:\n{text}"))
}

/// The sum of every sample whose line starts with `prefix` and contains each of `labels`.
pub fn metric_sum(text: &str, prefix: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`; returns (status, body), status 0 when nothing
/// answered.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status_of(&text), body)
}

/// `GET /metrics` on 127.0.0.1:`port`, which must answer 200.
#[track_caller]
pub fn metrics_on(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200, "metrics endpoint: {body}");
    body
}

/// The status code of an HTTP/1 response (its first line); 0 when there is none.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A rustls client configuration (aws-lc-rs) trusting the certificates in `roots`,
/// presenting the chain and key of `identity` when given.
pub fn client_config(roots: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(roots).unwrap() {
        store.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let cfg = match identity {
        Some((chain, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// A blocking TLS connection.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr` and completes the handshake, checking the server's name against
/// `addr`'s IP address; reads time out after 10 s.
#[track_caller]
pub fn tls_connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Tls {
    tls_connect_to(addr, ServerName::IpAddress(addr.ip().into()), cfg)
}

/// [`tls_connect`], checking the name `name` (and sending it as SNI when a DNS name).
#[track_caller]
pub fn tls_connect_to(
    addr: SocketAddr,
    name: ServerName<'static>,
    cfg: Arc<rustls::ClientConfig>,
) -> Tls {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
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
    let status = status_of(&head);
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

/// Sends `raw` on one plain TCP connection and reads until the server closes it (true) or
/// `timeout` passes (false).
pub fn exchange_until_closed(addr: SocketAddr, raw: &[u8], timeout: Duration) -> (String, bool) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
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

/// Something a test reads from whose read timeout it can set: a TCP or TLS stream.
pub trait Timed: Read {
    fn set_timeout(&self, d: Duration);
}

impl Timed for TcpStream {
    fn set_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

impl Timed for Tls {
    fn set_timeout(&self, d: Duration) {
        self.sock.set_read_timeout(Some(d)).unwrap();
    }
}

/// True when the peer closes `r` (end of stream, reset, or a TLS close) within `within`;
/// false when it stays open that long. Anything the peer sends before is read and dropped.
pub fn closed_within(r: &mut impl Timed, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        r.set_timeout(left.max(Duration::from_millis(10)));
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

/// One HTTP/1.1 POST on a fresh TLS connection that never panics: the status, the head and
/// the body, or `None` when the connection could not be made or the answer did not arrive
/// whole within `timeout` (the server was killed, down or stuck).
pub fn try_post(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String, String)> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(cfg, name).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).ok()?;
    tls.write_all(body.as_bytes()).ok()?;
    tls.flush().ok()?;
    let (status, head, answer) = read_response(&mut tls);
    (status != 0).then_some((status, head, answer))
}
