//! A small mTLS load generator for `bench/proxy/run.sh`.
//!
//! Every connection presents a client certificate and does a full handshake (resumption
//! off). Modes:
//! - `handshake`: connect, handshake, one `Connection: close` request, read to EOF; a
//!   handshake counts only once the server answered (so it really checked the certificate).
//! - `keepalive`: N connections each sending requests back to back; req/s, p50, p99.
//! - `bulk`: one connection downloading a path repeatedly; MB/s.
//! - `idle`: open N connections, one request each, then hold them for a while.
//! - `h2`: N HTTP/2 connections (ALPN `h2`), each with `--streams S` streams sending GETs
//!   back to back (N × S requests in flight); req/s, p50, p99.
//! - `grpc`: as `h2`, but each request is a gRPC unary call: a POST to `--path` with
//!   `content-type: application/grpc`, `te: trailers` and one length-prefixed message of
//!   `--payload` bytes; a call counts once its response body and trailers were read and
//!   the trailers said `grpc-status: 0`.
//! - `h2idle`: N HTTP/2 connections, one request each, then held open (memory per idle
//!   HTTP/2 connection).
//! - `post`: N keep-alive connections each POSTing bodies back to back, taken round-robin
//!   from the files of `--bodies DIR` (one body per file), to `--path`, over TLS with the
//!   client certificate or, with `--plain`, over plain HTTP (the way OCSP clients talk).
//!   Any status other than 2xx counts as an error (the first one is printed); a server
//!   that closes the connection is reconnected to and counted. req/s, p50, p99. With
//!   `--raw`, each file is a whole HTTP/1.1 request (head and body) sent as it is: for
//!   requests that differ in their headers (EST's HTTP Basic tokens).
//! - `ws`: N WebSocket connections (HTTP/1.1 upgrade of `--path`), each sending `--streams`
//!   binary messages of `--size` bytes back to back and reading their echoes; messages/s
//!   and MB/s. `wsecho ADDR` is the plaintext WebSocket echo backend for it ([`ws`]).
//!
//! The client offers X25519 only (the key exchange the reference peer figures used) unless
//! `--kx all` (rustls' default list, X25519MLKEM768 first, as a current browser or rustls
//! client offers) and, to keep the load generator's own CPU off the critical path, does not
//! verify the server's certificate unless `--verify-server` is given: it measures servers,
//! it does not protect secrets. `--real-client` is both, and offers ALPN `http/1.1` in the
//! HTTP/1.1 modes: the full work of a real client. It
//! always presents and signs with its client certificate.
//!
//! Usage: `twoway-loadgen MODE ADDR --ca CA --cert CERT --key KEY [--conns N]
//! [--streams S] [--secs S] [--path P] [--verify-server] [--kx x25519|all] [--real-client]
//! [--bodies DIR --content-type T [--plain] [--raw]] [--payload BYTES] [--size BYTES]`;
//! `twoway-loadgen wsecho ADDR`.
//! Prints one `key=value` line.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod ws;

struct Args {
    mode: String,
    addr: String,
    ca: String,
    cert: String,
    key: String,
    conns: usize,
    streams: usize,
    secs: f64,
    path: String,
    verify_server: bool,
    all_kx: bool,
    real_client: bool,
    bodies: String,
    content_type: String,
    plain: bool,
    raw: bool,
    /// `ws`: bytes per message.
    size: usize,
    /// `grpc`: bytes per message.
    payload: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().context("missing MODE")?;
    let addr = it.next().context("missing ADDR")?;
    let mut a = Args {
        mode,
        addr,
        ca: String::new(),
        cert: String::new(),
        key: String::new(),
        conns: 32,
        streams: 8,
        secs: 5.0,
        path: "/".into(),
        verify_server: false,
        all_kx: false,
        real_client: false,
        bodies: String::new(),
        content_type: "application/octet-stream".into(),
        plain: false,
        raw: false,
        size: 64,
        payload: 100,
    };
    while let Some(flag) = it.next() {
        if flag == "--verify-server" {
            a.verify_server = true;
            continue;
        }
        if flag == "--real-client" {
            a.verify_server = true;
            a.all_kx = true;
            a.real_client = true;
            continue;
        }
        if flag == "--plain" {
            a.plain = true;
            continue;
        }
        if flag == "--raw" {
            a.raw = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ca" => a.ca = v,
            "--cert" => a.cert = v,
            "--key" => a.key = v,
            "--conns" => a.conns = v.parse()?,
            "--streams" => a.streams = v.parse()?,
            "--kx" => {
                a.all_kx = match v.as_str() {
                    "all" => true,
                    "x25519" => false,
                    _ => bail!("--kx takes x25519 or all"),
                }
            }
            "--secs" => a.secs = v.parse()?,
            "--path" => a.path = v,
            "--bodies" => a.bodies = v,
            "--content-type" => a.content_type = v,
            "--size" => a.size = v.parse()?,
            "--payload" => a.payload = v.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

/// Accepts any server certificate and skips checking the server's TLS 1.3 CertificateVerify
/// signature: the load generator's CPU goes to its own half of the handshake only.
#[derive(Debug)]
struct NoServerCheck(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoServerCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn config(a: &Args) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(if a.all_kx {
        rustls::crypto::aws_lc_rs::default_provider()
    } else {
        rustls::crypto::CryptoProvider {
            kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
            ..rustls::crypto::aws_lc_rs::default_provider()
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&a.ca)? {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_file_iter(&a.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&a.key)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = if a.verify_server {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerCheck(provider)))
    };
    let mut cfg = builder.with_client_auth_cert(chain, key)?;
    cfg.resumption = rustls::client::Resumption::disabled();
    if a.real_client {
        // what curl or a browser offers for HTTP/1.1 (the h2 mode sets its own)
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(cfg: &Arc<rustls::ClientConfig>, addr: &str) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    Ok(tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await?)
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns the body length.
async fn read_response(s: &mut Tls, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?.to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
                bail!("unexpected response: {}", head.lines().next().unwrap_or(""));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .context("no content-length")?
                .trim()
                .parse()?;
            let have = buf.len() - (end + 4);
            if have >= len {
                buf.drain(..end + 4 + len);
                return Ok(len);
            }
            buf.clear();
            // Discard the rest of the body as it arrives; never hold it whole.
            let mut remaining = len - have;
            let mut chunk = vec![0u8; 64 * 1024];
            while remaining > 0 {
                let want = remaining.min(chunk.len());
                let n = s.read(&mut chunk[..want]).await?;
                if n == 0 {
                    bail!("eof in body");
                }
                remaining -= n;
            }
            return Ok(len);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("eof in headers");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn request(path: &str, close: bool) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

async fn handshakes(a: &Args, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.conns {
        let (cfg, addr, path) = (cfg.clone(), a.addr.clone(), a.path.clone());
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = async {
                    let mut s = connect(&cfg, &addr).await?;
                    s.write_all(&request(&path, true)).await?;
                    let mut resp = Vec::new();
                    // to EOF: the server answered and closed
                    let _ = s.read_to_end(&mut resp).await;
                    if !resp.starts_with(b"HTTP/1.1 200") {
                        bail!("bad response");
                    }
                    anyhow::Ok(())
                }
                .await;
                match r {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "handshakes_per_sec={:.0} handshakes={n} errors={}",
        n as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn keepalive(a: &Args, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..a.conns {
        conns.push(connect(&cfg, &a.addr).await?);
    }
    let start = Instant::now();
    for mut s in conns {
        let stop = stop.clone();
        let req = request(&a.path, false);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut buf = Vec::with_capacity(4096);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if s.write_all(&req).await.is_err()
                    || read_response(&mut s, &mut buf).await.is_err()
                {
                    errors += 1;
                    break;
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "requests_per_sec={:.0} p50_us={} p99_us={} requests={} errors={errors}",
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all.len()
    );
    Ok(())
}

/// Latency percentiles of sorted microseconds.
fn percentile(all: &[u64], p: f64) -> u64 {
    all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

async fn h2_streams(a: &Args, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let cfg = Arc::new(cfg);
    let uri: http::Uri = format!("https://localhost{}", a.path).parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    let grpc = a.mode == "grpc";
    // one gRPC message: uncompressed, its length, then the payload
    let mut message = vec![0u8];
    message.extend_from_slice(&u32::try_from(a.payload)?.to_be_bytes());
    message.extend(std::iter::repeat_n(b'x', a.payload));
    let message = bytes::Bytes::from(message);
    let mut senders = Vec::new();
    for _ in 0..a.conns {
        let tls = connect(&cfg, &a.addr).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("the server did not agree to h2");
        }
        let (send, conn) = h2::client::handshake(tls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        senders.push(send);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for send in &senders {
        for _ in 0..a.streams {
            let (mut send, stop, uri) = (send.clone(), stop.clone(), uri.clone());
            let message = message.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    send = match send.ready().await {
                        Ok(s) => s,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    };
                    let r = async {
                        let resp = if grpc {
                            let req = http::Request::post(uri.clone())
                                .header("content-type", "application/grpc")
                                .header("te", "trailers")
                                .body(())?;
                            let (resp, mut body) = send.send_request(req, false)?;
                            body.send_data(message.clone(), true)?;
                            resp
                        } else {
                            let req = http::Request::get(uri.clone()).body(())?;
                            send.send_request(req, true)?.0
                        };
                        let resp = resp.await?;
                        if resp.status() != http::StatusCode::OK {
                            bail!("status {}", resp.status());
                        }
                        let mut body = resp.into_body();
                        while let Some(chunk) = body.data().await {
                            let chunk = chunk?;
                            body.flow_control().release_capacity(chunk.len())?;
                        }
                        if grpc {
                            let trailers = body.trailers().await?;
                            let status = trailers.as_ref().and_then(|t| t.get("grpc-status"));
                            if status.map(|v| v.as_bytes()) != Some(b"0") {
                                bail!("grpc-status {status:?}");
                            }
                        }
                        anyhow::Ok(())
                    }
                    .await;
                    if r.is_err() {
                        errors += 1;
                        break;
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                }
                (lat, errors)
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    println!(
        "requests_per_sec={:.0} p50_us={} p99_us={} requests={} errors={errors}",
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.len()
    );
    Ok(())
}

/// `h2idle`: N HTTP/2 connections, one request each, then held open.
async fn h2_idle(a: &Args, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let cfg = Arc::new(cfg);
    let uri: http::Uri = format!("https://localhost{}", a.path).parse()?;
    let mut held = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        let tls = connect(&cfg, &a.addr).await?;
        let (send, conn) = h2::client::handshake(tls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await?;
        let (resp, _) = send.send_request(http::Request::get(uri.clone()).body(())?, true)?;
        let mut body = resp.await?.into_body();
        while let Some(chunk) = body.data().await {
            body.flow_control().release_capacity(chunk?.len())?;
        }
        held.push(send);
    }
    println!("idle_conns={}", held.len());
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    drop(held);
    Ok(())
}

async fn bulk(a: &Args, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let mut s = connect(&cfg, &a.addr).await?;
    let start = Instant::now();
    let mut bytes = 0usize;
    let mut buf = Vec::new();
    while start.elapsed().as_secs_f64() < a.secs {
        s.write_all(&request(&a.path, false)).await?;
        bytes += read_response(&mut s, &mut buf).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("mb_per_sec={:.0} bytes={bytes}", bytes as f64 / secs / 1e6);
    Ok(())
}

async fn idle(a: &Args, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(a.conns);
    let mut buf = Vec::new();
    for _ in 0..a.conns {
        let mut s = connect(&cfg, &a.addr).await?;
        s.write_all(&request(&a.path, false)).await?;
        read_response(&mut s, &mut buf).await?;
        held.push(s);
    }
    println!("idle_conns={}", held.len());
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    drop(held);
    Ok(())
}

/// How long one request of `post` mode may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn connect_any(
    cfg: &Option<Arc<rustls::ClientConfig>>,
    addr: &str,
) -> anyhow::Result<Box<dyn Io>> {
    Ok(match cfg {
        Some(cfg) => Box::new(connect(cfg, addr).await?),
        None => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Box::new(tcp)
        }
    })
}

/// One parsed response: status, and whether the server will close the connection.
struct Answer {
    status: u16,
    close: bool,
}

/// Reads one HTTP/1.x response (Content-Length body, or to EOF when there is none).
async fn read_answer(s: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> anyhow::Result<Answer> {
    // bounded: a response head larger than 64 KiB is an error
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?.to_ascii_lowercase();
            let mut lines = head.lines();
            let status_line = lines.next().unwrap_or("");
            let http10 = status_line.starts_with("http/1.0");
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .context("no status")?
                .parse()?;
            let mut len = None;
            let mut close = http10;
            for l in lines {
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = Some(v.trim().parse::<usize>()?);
                } else if let Some(v) = l.strip_prefix("connection:") {
                    close = v.trim() == "close" || (http10 && v.trim() != "keep-alive");
                }
            }
            let Some(len) = len else {
                // no length: the body runs to EOF
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await?;
                buf.clear();
                return Ok(Answer {
                    status,
                    close: true,
                });
            };
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 16 * 1024];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("eof in body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return Ok(Answer { status, close });
        }
        if buf.len() > 64 * 1024 {
            bail!("response head too large");
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("eof in headers");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn load_bodies(dir: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("--bodies {dir}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let bodies = names
        .iter()
        .map(std::fs::read)
        .collect::<Result<Vec<_>, _>>()?;
    if bodies.is_empty() {
        bail!("--bodies {dir}: no files");
    }
    Ok(bodies)
}

async fn post(a: &Args, cfg: Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<()> {
    let bodies = Arc::new(load_bodies(&a.bodies)?);
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        bodies
            .iter()
            .map(|b| {
                if a.raw {
                    return b.clone();
                }
                let mut r = format!(
                    "POST {} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
                    a.path,
                    a.content_type,
                    b.len()
                )
                .into_bytes();
                r.extend_from_slice(b);
                r
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut conns = Vec::new();
    for _ in 0..a.conns {
        conns.push(connect_any(&cfg, &a.addr).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut s) in conns.into_iter().enumerate() {
        let (stop, requests, cfg, addr) =
            (stop.clone(), requests.clone(), cfg.clone(), a.addr.clone());
        let (raw, conns) = (a.raw, a.conns.max(1));
        let first_error = first_error.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut buf = Vec::with_capacity(4096);
            let (mut errors, mut reconnects) = (0u64, 0u64);
            // each connection starts at its own offset in the bodies; with --raw (single-use
            // requests) each takes its own equal share, so no two send the same one
            let mut next = if raw {
                i * requests.len() / conns
            } else {
                i * 7919
            };
            while !stop.load(Ordering::Relaxed) {
                let req = &requests[next % requests.len()];
                next += 1;
                let t = Instant::now();
                // A server that never answers (openssl ocsp's single worker stuck on another
                // idle connection) must not hang the run: each request has 10 s.
                let r = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    s.write_all(req).await?;
                    read_answer(&mut s, &mut buf).await
                })
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 10 s")));
                let reconnect = match r {
                    Ok(ans) => {
                        if (200..300).contains(&ans.status) {
                            lat.push(t.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert_with(|| format!("status {}", ans.status));
                            }
                        }
                        ans.close
                    }
                    Err(e) => {
                        errors += 1;
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert_with(|| e.to_string());
                        }
                        true
                    }
                };
                if reconnect && !stop.load(Ordering::Relaxed) {
                    buf.clear();
                    reconnects += 1;
                    match connect_any(&cfg, &addr).await {
                        Ok(n) => s = n,
                        Err(_) => break,
                    }
                }
            }
            (lat, errors, reconnects)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (mut all, mut errors, mut reconnects) = (Vec::new(), 0, 0);
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok((l, e, r))) => {
                all.extend(l);
                errors += e;
                reconnects += r;
            }
            // still waiting on its last answer: its finished requests are lost, count one
            _ => {
                abort.abort();
                errors += 1;
            }
        }
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let first = first_error
        .lock()
        .ok()
        .and_then(|f| f.clone())
        .unwrap_or_default();
    println!(
        "requests_per_sec={:.0} p50_us={} p99_us={} requests={} errors={errors} reconnects={reconnects} first_error={:?}",
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all.len(),
        first
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let a = parse_args()?;
    if a.mode == "wsecho" || a.mode == "ws" {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async {
            if a.mode == "ws" {
                ws::client(&a).await
            } else {
                ws::echo_server(&a.addr).await
            }
        });
    }
    if a.mode == "post" {
        let cfg = if a.plain { None } else { Some(config(&a)?) };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(post(&a, cfg));
    }
    let cfg = config(&a)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match a.mode.as_str() {
            "handshake" => handshakes(&a, cfg).await,
            "keepalive" => keepalive(&a, cfg).await,
            "bulk" => bulk(&a, cfg).await,
            "idle" => idle(&a, cfg).await,
            "h2" | "grpc" => h2_streams(&a, cfg).await,
            "h2idle" => h2_idle(&a, cfg).await,
            m => bail!("unknown mode {m}"),
        }
    })
}
