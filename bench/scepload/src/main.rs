//! SCEP load generator for bench/scep: PKCSReq per second against one SCEP server
//! (twoway's `/scep` or micromdm's `scepserver`), over plain HTTP on 127.0.0.1.
//!
//! Everything a client computes is done before the clock starts: RSA 2048 client keys
//! (`--keys`, reused round-robin), one CSR per request (its own CN and challenge
//! password), each pkiMessage encrypted to the server's RA (AES-128-CBC) and signed
//! (SHA-256 with RSA). With `--ca-dir` the challenge passwords are one-time twoway tokens,
//! made through the CA directory before the run; with `--challenge` every request
//! carries that static password (scepserver's `-challenge`). Then `-c` threads send the
//! messages (one connection each, `Connection: close`, as most SCEP clients do) and count
//! CertRep SUCCESS answers. Prints one JSON line.
//!
//! Usage: scepload --url http://127.0.0.1:PORT/scep (--ca-dir DIR | --challenge SECRET)
//!        [-n 1000] [-c 8] [--keys 32] [--label NAME]

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    n: usize,
    concurrency: usize,
    keys: usize,
    challenge: Option<String>,
    ca_dir: Option<std::path::PathBuf>,
    label: String,
}

fn args() -> Result<Args> {
    let mut a = Args {
        url: String::new(),
        n: 1000,
        concurrency: 8,
        keys: 32,
        challenge: None,
        ca_dir: None,
        label: "server".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--url" => a.url = v()?,
            "-n" => a.n = v()?.parse()?,
            "-c" => a.concurrency = v()?.parse()?,
            "--keys" => a.keys = v()?.parse()?,
            "--challenge" => a.challenge = Some(v()?),
            "--ca-dir" => a.ca_dir = Some(v()?.into()),
            "--label" => a.label = v()?,
            other => bail!("unknown argument {other}: see the usage at the top of main.rs"),
        }
    }
    if a.url.is_empty() || (a.challenge.is_none() == a.ca_dir.is_none()) {
        bail!("usage: scepload --url http://127.0.0.1:PORT/scep (--ca-dir DIR | --challenge SECRET) [-n N] [-c C] [--keys K]");
    }
    if a.n == 0 || a.concurrency == 0 || a.keys == 0 {
        bail!("-n, -c and --keys must be at least 1");
    }
    Ok(a)
}

/// `http://HOST:PORT/PATH` split into the address and the path.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("the URL must be http://127.0.0.1:PORT/…")?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !addr.starts_with("127.0.0.1:") && !addr.starts_with("[::1]:") {
        bail!("only 127.0.0.1 or [::1]: {addr}");
    }
    Ok((addr.to_string(), format!("/{path}")))
}

/// One HTTP/1.1 exchange on a new connection: status and body (chunked bodies decoded).
fn exchange(addr: &str, head: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let mut req = head.as_bytes().to_vec();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut buf = Vec::with_capacity(8192);
    s.read_to_end(&mut buf)?;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP head in the answer")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let mut body = buf[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("bad chunk")?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).context("short chunk")?);
            rest = rest.get(size + 2..).context("short chunk")?;
        }
        body = out;
    }
    Ok((status, body))
}

fn rsa_pair() -> Result<rcgen::KeyPair> {
    Ok(rcgen::KeyPair::generate_rsa_for(
        &rcgen::PKCS_RSA_SHA256,
        rcgen::RsaKeySize::_2048,
    )?)
}

fn main() -> Result<()> {
    let a = args()?;
    let (addr, path) = split_url(&a.url)?;
    let get = format!(
        "GET {path}?operation=GetCACert HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = exchange(&addr, &get, &[])?;
    if status != 200 {
        bail!("GetCACert answered {status}");
    }
    let certs = twoway_scep::certs_of(&body).unwrap_or_else(|_| vec![body.clone()]);
    let recipient = certs
        .iter()
        .find(|c| {
            use x509_parser::prelude::FromDer;
            x509_parser::certificate::X509Certificate::from_der(c).is_ok_and(|(_, x)| {
                x.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1"
            })
        })
        .context("GetCACert holds no RSA certificate to encrypt to")?
        .clone();

    let challenges: Vec<String> = match (&a.ca_dir, &a.challenge) {
        (Some(dir), _) => {
            let ca = twoway_ca::Ca::open(dir)?;
            (0..a.n)
                .map(|i| {
                    let t = twoway_ca::NewToken {
                        sans: vec![twoway_pki::San::Dns(format!("dev-{i}.bench.test"))],
                        profile: twoway_pki::Profile::Client,
                        ttl: time::Duration::hours(2),
                        cert_ttl: None,
                        owner: Some("bench".into()),
                        actor: "bench:scep".into(),
                    };
                    Ok(ca.create_token(&t)?.0)
                })
                .collect::<Result<_>>()?
        }
        (None, Some(c)) if c.len() < 100 => vec![c.clone(); a.n],
        (None, Some(_)) => bail!("--challenge: at most 99 characters"),
        (None, None) => unreachable!("checked in args"),
    };

    let mut signers = Vec::with_capacity(a.keys);
    for _ in 0..a.keys {
        let key = rsa_pair()?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "SCEP bench signer");
        let cert = p.self_signed(&key)?;
        let ra = twoway_scep::Ra::new(&key.serialize_der(), cert.der())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        signers.push((key, ra));
    }
    let mut messages = Vec::with_capacity(a.n);
    for (i, challenge) in challenges.iter().enumerate() {
        let (key, signer) = &signers[i % a.keys];
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("dev-{i}.bench.test"));
        let mut values = vec![0x0c, challenge.len() as u8];
        values.extend_from_slice(challenge.as_bytes());
        let mut set = vec![0x31, values.len() as u8];
        set.extend(values);
        let attr = rcgen::Attribute {
            oid: &[1, 2, 840, 113_549, 1, 9, 7],
            values: set,
        };
        let csr = p.serialize_request_with_attributes(key, vec![attr])?;
        let tid = format!("bench-{i}-{}", std::process::id());
        let msg = twoway_scep::client_request(
            signer,
            &recipient,
            19,
            &tid,
            csr.der(),
            twoway_scep::Cipher::Aes128,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        messages.push(msg);
    }

    let next = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let failures: Mutex<std::collections::BTreeMap<String, usize>> = Mutex::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..a.concurrency {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(msg) = messages.get(i) else { break };
                let head = format!(
                    "POST {path}?operation=PKIOperation HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-pki-message\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    msg.len()
                );
                let why = match exchange(&addr, &head, msg) {
                    Ok((200, body)) => match twoway_scep::read(&body) {
                        Ok(u) if u.header().pki_status.as_deref() == Some("0") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Ok(u) => format!("failInfo {:?}", u.header().fail_info),
                        Err(e) => format!("unreadable CertRep: {e}"),
                    },
                    Ok((status, _)) => format!("HTTP {status}"),
                    Err(e) => format!("{e:#}"),
                };
                if let Ok(mut f) = failures.lock() {
                    *f.entry(why).or_default() += 1;
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let ok = ok.into_inner();
    let failures = failures.into_inner().unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "server": a.label,
            "requests": a.n,
            "success": ok,
            "failures": failures,
            "concurrency": a.concurrency,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "pkcsreq_per_second": ((ok as f64 / secs) * 10.0).round() / 10.0,
        })
    );
    if ok != a.n {
        std::process::exit(1);
    }
    Ok(())
}
