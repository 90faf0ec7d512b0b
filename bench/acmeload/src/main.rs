//! twoway-acmeload: the ACME load generator of `bench/acme/run.sh`.
//!
//! Many concurrent ACME clients (RFC 8555), each on one kept-alive TLS connection with
//! its own ES256 account key: newAccount once, then, until the time is up, whole orders
//! for one unique DNS name each — newOrder, the authorization, the http-01 challenge
//! (answered by this program's own HTTP server), polling while the server says pending or
//! processing, finalize with a CSR (keys from a pre-generated pool), the certificate
//! download. An order counts only when it completed within the measured window and its
//! chain parses (each PEM block an X.509 certificate, the first naming the ordered name
//! and issued by the second). It prints one `key=value` line: orders, orders/s, p50/p99
//! latency, requests per order, errors, its own CPU seconds and those of the server
//! processes named by `--server-pid`.
//!
//! ```text
//! twoway-acmeload --directory https://127.0.0.1:14443/acme/bench/directory \
//!     --ca-file root.crt --http01 127.0.0.1:15002 --suffix bench.test \
//!     --clients 64 --seconds 10 --server-pid 1234
//! ```

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Polls of one authorization or order before the order is given up.
const MAX_POLLS: usize = 400;
/// The longest pause between two polls.
const MAX_POLL_WAIT: Duration = Duration::from_millis(50);
/// Error messages printed at most.
const MAX_ERRORS_SHOWN: u64 = 5;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    directory: String,
    ca_file: String,
    http01: SocketAddr,
    suffix: String,
    clients: usize,
    seconds: f64,
    keys: usize,
    server_pids: Vec<u32>,
}

fn usage() -> &'static str {
    "usage: twoway-acmeload --directory URL --ca-file PEM --http01 IP:PORT [--suffix DOMAIN] \
     [--clients N] [--seconds S] [--keys N] [--server-pid PID[,PID…]]"
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        directory: String::new(),
        ca_file: String::new(),
        http01: "127.0.0.1:15002".parse()?,
        suffix: "bench.test".into(),
        clients: 32,
        seconds: 10.0,
        keys: 64,
        server_pids: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let v = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{}", usage()))?;
        match flag.as_str() {
            "--directory" => a.directory = v,
            "--ca-file" => a.ca_file = v,
            "--http01" => a.http01 = v.parse().context("--http01 takes IP:PORT")?,
            "--suffix" => a.suffix = v,
            "--clients" => a.clients = v.parse().context("--clients takes a number")?,
            "--seconds" => a.seconds = v.parse().context("--seconds takes a number")?,
            "--keys" => a.keys = v.parse().context("--keys takes a number")?,
            "--server-pid" => {
                for p in v.split(',').filter(|p| !p.is_empty()) {
                    a.server_pids
                        .push(p.parse().context("--server-pid takes process ids")?);
                }
            }
            _ => bail!("unknown flag {flag}\n{}", usage()),
        }
    }
    if a.directory.is_empty() || a.ca_file.is_empty() {
        bail!("--directory and --ca-file are required\n{}", usage());
    }
    if a.clients == 0 || a.keys == 0 || a.seconds <= 0.0 {
        bail!("--clients, --keys and --seconds must be positive");
    }
    Ok(a)
}

/// CPU seconds (user + system) of a process, from /proc (clock ticks of 1/100 s).
fn cpu_secs(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // the command name may hold spaces: fields are counted after its closing parenthesis
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; field 3 is the first after the name
    (t(11) + t(12)) / 100.0
}

fn servers_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_secs(&p.to_string())).sum()
}

/// The tokens the http-01 server answers: token → key authorization.
type Tokens = Arc<Mutex<HashMap<String, String>>>;

async fn serve_http01(listener: tokio::net::TcpListener, tokens: Tokens) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = req
                    .uri()
                    .path()
                    .strip_prefix("/.well-known/acme-challenge/")
                    .and_then(|t| tokens.lock().ok().and_then(|m| m.get(t).cloned()));
                async move {
                    let resp = match answer {
                        Some(k) => http::Response::new(Full::new(Bytes::from(k))),
                        None => {
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::NOT_FOUND;
                            r
                        }
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "answer {} is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn expect(self, status: u16, what: &str) -> Result<Resp> {
        if self.status != status {
            bail!(
                "{what}: status {} (expected {status}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            );
        }
        Ok(self)
    }
}

/// One kept-alive HTTPS connection to the server, reopened when it closes.
struct Conn {
    tls: tokio_rustls::TlsConnector,
    addr: String,
    host: String,
    /// `host:port` as the URLs carry it: the Host header.
    authority: String,
    origin: String,
    send: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(tls: tokio_rustls::TlsConnector, origin: &str) -> Result<Conn> {
        let hostport = origin
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("{origin} is not an https:// URL"))?;
        let host = match hostport.rsplit_once(':') {
            Some((h, _)) => h.to_string(),
            None => hostport.to_string(),
        };
        let addr = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:443")
        };
        Ok(Conn {
            tls,
            addr,
            host,
            authority: hostport.to_string(),
            origin: origin.to_string(),
            send: None,
        })
    }

    async fn connect(&mut self) -> Result<()> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())?;
        let tls = self.tls.connect(name, tcp).await.context("TLS handshake")?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.send = Some(send);
        Ok(())
    }

    async fn request(&mut self, method: Method, url: &str, body: Option<String>) -> Result<Resp> {
        let path = url
            .strip_prefix(&self.origin)
            .ok_or_else(|| anyhow!("{url} is not on {}", self.origin))?;
        let usable = match &mut self.send {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.connect().await?;
        }
        let send = self.send.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.authority.as_str());
        if body.is_some() {
            b = b.header(http::header::CONTENT_TYPE, "application/jose+json");
        }
        let req = b.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = send.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        })
        .await;
        match resp {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.send = None;
                Err(e)
            }
            Err(_) => {
                self.send = None;
                bail!("{url} did not answer within {REQUEST_TIMEOUT:?}")
            }
        }
    }
}

struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
}

/// One ACME client: its connection, account key, account URL and the next nonce.
struct Client {
    conn: Conn,
    key: EcdsaKeyPair,
    jwk: Value,
    thumbprint: String,
    kid: Option<String>,
    nonce: Option<String>,
    dir: Directory,
    rng: SystemRandom,
    requests: u64,
}

impl Client {
    async fn new(tls: tokio_rustls::TlsConnector, directory: &str) -> Result<Client> {
        let origin = directory
            .strip_prefix("https://")
            .and_then(|r| r.split_once('/'))
            .map(|(h, _)| format!("https://{h}"))
            .ok_or_else(|| anyhow!("--directory {directory} is not an https:// URL"))?;
        let mut conn = Conn::new(tls, &origin)?;
        let d = conn
            .request(Method::GET, directory, None)
            .await?
            .expect(200, "directory")?
            .json()?;
        let url = |k: &str| -> Result<String> {
            d[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("the directory has no {k}"))
        };
        let dir = Directory {
            new_nonce: url("newNonce")?,
            new_account: url("newAccount")?,
            new_order: url("newOrder")?,
        };
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow!("generating an account key failed"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow!("loading the account key failed"))?;
        let point = key.public_key().as_ref();
        if point.len() != 65 {
            bail!("unexpected P-256 public key length {}", point.len());
        }
        let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..65]));
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = B64.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ));
        Ok(Client {
            conn,
            key,
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
            thumbprint,
            kid: None,
            nonce: None,
            dir,
            rng,
            requests: 0,
        })
    }

    async fn fresh_nonce(&mut self) -> Result<String> {
        let url = self.dir.new_nonce.clone();
        let r = self.conn.request(Method::HEAD, &url, None).await?;
        self.requests += 1;
        r.header("replay-nonce")
            .ok_or_else(|| anyhow!("newNonce answered no Replay-Nonce"))
    }

    /// POSTs a JWS (POST-as-GET without a payload); retries a badNonce twice.
    async fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Resp> {
        for _ in 0..3 {
            let nonce = match self.nonce.take() {
                Some(n) => n,
                None => self.fresh_nonce().await?,
            };
            let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
            match &self.kid {
                Some(k) => protected["kid"] = k.clone().into(),
                None => protected["jwk"] = self.jwk.clone(),
            }
            let p64 = B64.encode(protected.to_string());
            let b64 = payload
                .map(|p| B64.encode(p.to_string()))
                .unwrap_or_default();
            let sig = self
                .key
                .sign(&self.rng, format!("{p64}.{b64}").as_bytes())
                .map_err(|_| anyhow!("signing failed"))?;
            let body = json!({"protected": p64, "payload": b64, "signature": B64.encode(sig)});
            let r = self
                .conn
                .request(Method::POST, url, Some(body.to_string()))
                .await?;
            self.requests += 1;
            self.nonce = r.header("replay-nonce");
            if r.status == 400 && r.body.windows(8).any(|w| w == b"badNonce") {
                continue;
            }
            return Ok(r);
        }
        bail!("{url}: badNonce three times")
    }

    async fn register(&mut self) -> Result<()> {
        let url = self.dir.new_account.clone();
        let r = self
            .post(&url, Some(&json!({"termsOfServiceAgreed": true})))
            .await?;
        if r.status != 201 && r.status != 200 {
            bail!(
                "newAccount: status {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        self.kid = Some(
            r.header("location")
                .ok_or_else(|| anyhow!("newAccount answered no Location"))?,
        );
        Ok(())
    }

    /// POST-as-GET `url` until its status is one of `done` (bounded); "invalid" fails.
    async fn poll(&mut self, url: &str, done: &[&str], first: Value) -> Result<Value> {
        let mut v = first;
        let mut wait = Duration::from_millis(1);
        for _ in 0..MAX_POLLS {
            let s = v["status"].as_str().unwrap_or_default();
            if done.contains(&s) {
                return Ok(v);
            }
            if s == "invalid" {
                bail!("{url} became invalid: {}", v["error"]);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL_WAIT);
            v = self.post(url, None).await?.expect(200, "poll")?.json()?;
        }
        bail!("{url} stayed {} after {MAX_POLLS} polls", v["status"])
    }

    /// One whole order for `name`; the certificate chain when it parses.
    async fn order(&mut self, name: &str, key: &rcgen::KeyPair, tokens: &Tokens) -> Result<()> {
        let new_order = self.dir.new_order.clone();
        let r = self
            .post(
                &new_order,
                Some(&json!({"identifiers": [{"type": "dns", "value": name}]})),
            )
            .await?
            .expect(201, "newOrder")?;
        let order_url = r
            .header("location")
            .ok_or_else(|| anyhow!("newOrder answered no Location"))?;
        let order = r.json()?;
        let authz_url = order["authorizations"][0]
            .as_str()
            .ok_or_else(|| anyhow!("the order has no authorization"))?
            .to_string();
        let finalize = order["finalize"]
            .as_str()
            .ok_or_else(|| anyhow!("the order has no finalize URL"))?
            .to_string();
        let authz = self
            .post(&authz_url, None)
            .await?
            .expect(200, "authorization")?
            .json()?;
        let chall = authz["challenges"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["type"] == "http-01"))
            .ok_or_else(|| anyhow!("the authorization offers no http-01"))?;
        let token = chall["token"].as_str().unwrap_or_default().to_string();
        let chall_url = chall["url"].as_str().unwrap_or_default().to_string();
        let key_auth = format!("{token}.{}", self.thumbprint);
        if let Ok(mut m) = tokens.lock() {
            m.insert(token.clone(), key_auth);
        }
        let outcome = async {
            let c = self
                .post(&chall_url, Some(&json!({})))
                .await?
                .expect(200, "challenge")?
                .json()?;
            if c["status"] != "valid" {
                let first = self
                    .post(&authz_url, None)
                    .await?
                    .expect(200, "authorization")?
                    .json()?;
                self.poll(&authz_url, &["valid"], first).await?;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Ok(mut m) = tokens.lock() {
            m.remove(&token);
        }
        outcome?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(key)?.der().to_vec();
        let r = self
            .post(&finalize, Some(&json!({"csr": B64.encode(csr)})))
            .await?
            .expect(200, "finalize")?;
        let done = self
            .poll(&order_url, &["valid"], r.json()?)
            .await
            .context("waiting for the order")?;
        let cert_url = done["certificate"]
            .as_str()
            .ok_or_else(|| anyhow!("the valid order has no certificate URL"))?
            .to_string();
        let chain = self
            .post(&cert_url, None)
            .await?
            .expect(200, "certificate")?;
        check_chain(&chain.body, name)
    }
}

/// The chain parses: PEM blocks of X.509 certificates, the first for `name`, each issued
/// by the next.
fn check_chain(pem_text: &[u8], name: &str) -> Result<()> {
    let blocks = pem::parse_many(pem_text).context("the chain is not PEM")?;
    if blocks.is_empty() {
        bail!("the chain holds no certificate");
    }
    let mut certs = Vec::new();
    for b in &blocks {
        if b.tag() != "CERTIFICATE" {
            bail!("the chain holds a {} block", b.tag());
        }
        let (rest, c) = x509_parser::parse_x509_certificate(b.contents())
            .map_err(|e| anyhow!("a certificate of the chain does not parse: {e}"))?;
        if !rest.is_empty() {
            bail!("a certificate of the chain has trailing bytes");
        }
        certs.push(c);
    }
    let leaf = &certs[0];
    let named = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(
                |g| matches!(g, x509_parser::extensions::GeneralName::DNSName(d) if *d == name),
            )
        });
    if !named {
        bail!("the certificate does not name {name}");
    }
    for w in certs.windows(2) {
        if w[0].issuer() != w[1].subject() {
            bail!("the chain is out of order");
        }
    }
    Ok(())
}

#[derive(Default)]
struct Totals {
    orders: AtomicU64,
    errors: AtomicU64,
    requests: AtomicU64,
}

fn tls_connector(ca_file: &str) -> Result<tokio_rustls::TlsConnector> {
    let text = std::fs::read(ca_file).with_context(|| format!("reading {ca_file}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for b in pem::parse_many(&text).context("--ca-file is not PEM")? {
        roots.add(rustls_pki_types::CertificateDer::from(
            b.contents().to_vec(),
        ))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(args: Args) -> Result<()> {
    let tls = tls_connector(&args.ca_file)?;
    let tokens: Tokens = Arc::default();
    let listener = tokio::net::TcpListener::bind(args.http01)
        .await
        .with_context(|| format!("listening on {} for http-01", args.http01))?;
    tokio::spawn(serve_http01(listener, tokens.clone()));
    let keys: Arc<Vec<rcgen::KeyPair>> = Arc::new(
        (0..args.keys)
            .map(|_| rcgen::KeyPair::generate())
            .collect::<Result<_, _>>()?,
    );
    // every client registers before the clock starts
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let mut c = Client::new(tls.clone(), &args.directory).await?;
        c.register().await?;
        clients.push(c);
    }
    let totals = Arc::new(Totals::default());
    let window = Duration::from_secs_f64(args.seconds);
    let cpu0 = (cpu_secs("self"), servers_cpu(&args.server_pids));
    let start = Instant::now();
    let end = start + window;
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let (keys, tokens, totals, suffix) = (
            keys.clone(),
            tokens.clone(),
            totals.clone(),
            args.suffix.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0usize;
            while Instant::now() < end {
                n += 1;
                let name = format!("c{i}-o{n}.{suffix}");
                let key = &keys[(i * 31 + n) % keys.len()];
                let t0 = Instant::now();
                let before = c.requests;
                match c.order(&name, key, &tokens).await {
                    Ok(()) => {
                        let t = Instant::now();
                        if t <= end {
                            lat.push((t - t0).as_secs_f64() * 1000.0);
                            totals.orders.fetch_add(1, Ordering::Relaxed);
                            totals
                                .requests
                                .fetch_add(c.requests - before, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        if totals.errors.fetch_add(1, Ordering::Relaxed) < MAX_ERRORS_SHOWN {
                            eprintln!("order {name} failed: {e:#}");
                        }
                    }
                }
            }
            lat
        }));
    }
    // CPU is read when the window ends, not when the last straggler is done
    let pids = args.server_pids.clone();
    let cpu1 = tokio::spawn(async move {
        tokio::time::sleep_until(end.into()).await;
        (cpu_secs("self"), servers_cpu(&pids))
    });
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = window.as_secs_f64();
    let (c1, s1) = cpu1.await?;
    lat.sort_by(f64::total_cmp);
    let orders = totals.orders.load(Ordering::Relaxed);
    let reqs = totals.requests.load(Ordering::Relaxed);
    println!(
        "orders={orders} secs={elapsed:.1} rate={:.0} p50_ms={:.1} p99_ms={:.1} reqs_per_order={:.2} errors={} loadgen_cpu_s={:.2} server_cpu_s={:.2}",
        orders as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        if orders > 0 { reqs as f64 / orders as f64 } else { 0.0 },
        totals.errors.load(Ordering::Relaxed),
        c1 - cpu0.0,
        s1 - cpu0.1,
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}
