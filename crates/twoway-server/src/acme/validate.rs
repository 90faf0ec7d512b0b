//! The challenge fetches: `http-01` (a plain HTTP/1.1 GET, no redirect followed, body
//! bounded) and `tls-alpn-01` (RFC 8737: a TLS handshake offering only `acme-tls/1`, the
//! certificate judged by `twoway_acme::challenge::check_tls_alpn01`). Each answers the
//! validation record (where it connected, what it received) or why it failed, as an ACME
//! problem type, a detail and the record.

use super::VALIDATION_TIMEOUT;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use twoway_acme::challenge;
use twoway_ca::acme::AcmeDirectory;

/// Why a validation failed: problem type, detail, the validation record.
pub(crate) type Failure = (&'static str, String, Value);

/// The most of an http-01 answer that is read.
const MAX_ANSWER: usize = 8 * 1024;

async fn addresses(dir: &AcmeDirectory, name: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    if let Some(ip) = dir.validation_address {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match tokio::time::timeout(VALIDATION_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(a)) => {
            let v: Vec<SocketAddr> = a.collect();
            if v.is_empty() {
                Err((
                    "dns",
                    format!("{name} has no address"),
                    json!({"hostname": name}),
                ))
            } else {
                Ok(v)
            }
        }
        _ => Err((
            "dns",
            format!("{name} could not be resolved"),
            json!({"hostname": name}),
        )),
    }
}

async fn connect(addrs: &[SocketAddr], record: &Value) -> Result<(TcpStream, SocketAddr), Failure> {
    let mut last = String::new();
    for a in addrs {
        match tokio::time::timeout(VALIDATION_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok((s, *a)),
            Ok(Err(e)) => last = format!("connecting to {a}: {e}"),
            Err(_) => last = format!("connecting to {a} timed out"),
        }
    }
    Err(("connection", last, record.clone()))
}

/// `http-01`: GET `http://<name>:<port>/.well-known/acme-challenge/<token>` must answer
/// 200 with the key authorization.
pub(crate) async fn http01(
    dir: &AcmeDirectory,
    name: &str,
    token: &Value,
    key_auth: &str,
) -> Result<Value, Failure> {
    let token = token.as_str().unwrap_or_default();
    let port = dir.http01_port;
    let url = format!("http://{name}:{port}/.well-known/acme-challenge/{token}");
    let addrs = addresses(dir, name, port).await?;
    let mut record = json!({"url": url, "hostname": name, "port": port.to_string(),
        "addressesResolved": addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>()});
    let work = async {
        let (mut s, used) = connect(&addrs, &record).await?;
        record["addressUsed"] = used.ip().to_string().into();
        let req = format!(
            "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: twoway-acme\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| {
            (
                "connection",
                format!("sending the request: {e}"),
                record.clone(),
            )
        })?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        loop {
            let n = s.read(&mut chunk).await.map_err(|e| {
                (
                    "connection",
                    format!("reading the answer: {e}"),
                    record.clone(),
                )
            })?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_ANSWER {
                return Err((
                    "unauthorized",
                    format!("the answer is larger than {MAX_ANSWER} bytes"),
                    record.clone(),
                ));
            }
        }
        Ok::<_, Failure>(buf)
    };
    let buf = match tokio::time::timeout(VALIDATION_TIMEOUT, work).await {
        Ok(r) => r?,
        Err(_) => {
            return Err((
                "connection",
                format!("{url} did not answer within {VALIDATION_TIMEOUT:?}"),
                record,
            ))
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(("connection", format!("{url} did not answer HTTP"), record)),
    };
    let code = resp.code.unwrap_or(0);
    if (300..400).contains(&code) {
        let to = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("location"))
            .map(|h| String::from_utf8_lossy(h.value).to_string())
            .unwrap_or_default();
        return Err((
            "unauthorized",
            format!("{url} redirects ({code}) to {to:?}: redirects are not followed"),
            record,
        ));
    }
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let body = &buf[head_len..];
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    if code != 200 {
        return Err((
            "unauthorized",
            format!("{url} answered {code}, not 200"),
            record,
        ));
    }
    if !challenge::http01_matches(&body, key_auth) {
        let got: String = String::from_utf8_lossy(&body).chars().take(128).collect();
        return Err((
            "unauthorized",
            format!("{url} answered {got:?}, not the key authorization {key_auth:?}"),
            record,
        ));
    }
    Ok(record)
}

/// A chunked body's data (best effort; an http-01 answer is one short chunk).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || size > b.len() {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// Accepts any certificate: tls-alpn-01 judges the certificate itself (a self-signed one
/// made for the challenge), not its chain.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls_pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // only TLS 1.3 is offered (see `tls_alpn01`)
        Err(rustls::Error::General(
            "tls-alpn-01 is validated over TLS 1.3".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // the certificate's key signed the handshake; its critical acmeIdentifier
        // extension would make a certificate parser refuse it, so the key is read alone
        let spki = challenge::spki_of(cert.as_ref())
            .ok_or_else(|| rustls::Error::General("the certificate does not parse".into()))?;
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &rustls_pki_types::SubjectPublicKeyInfoDer::from(spki),
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `tls-alpn-01`: a TLS 1.3 handshake to `<name>:<port>` with SNI `name` and ALPN
/// `acme-tls/1` only must present a certificate for `name` carrying the key
/// authorization's digest.
pub(crate) async fn tls_alpn01(
    dir: &AcmeDirectory,
    name: &str,
    key_auth: &str,
) -> Result<Value, Failure> {
    let port = dir.tlsalpn01_port;
    let addrs = addresses(dir, name, port).await?;
    let mut record = json!({"hostname": name, "port": port.to_string(),
        "addressesResolved": addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>()});
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = match rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
        Err(e) => return Err(("serverInternal", e.to_string(), record)),
    };
    cfg.alpn_protocols = vec![challenge::ACME_TLS_ALPN.to_vec()];
    let server_name = match rustls_pki_types::ServerName::try_from(name.to_string()) {
        Ok(n) => n,
        Err(_) => return Err(("malformed", format!("{name} is not a DNS name"), record)),
    };
    let work = async {
        let (tcp, used) = connect(&addrs, &record).await?;
        record["addressUsed"] = used.ip().to_string().into();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(server_name, tcp)
            .await
            .map_err(|e| {
                (
                    "tls",
                    format!("the TLS handshake failed: {e}"),
                    record.clone(),
                )
            })?;
        let conn = tls.get_ref().1;
        if conn.alpn_protocol() != Some(challenge::ACME_TLS_ALPN) {
            return Err((
                "tls",
                "the server did not negotiate ALPN acme-tls/1".to_string(),
                record.clone(),
            ));
        }
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| {
                (
                    "tls",
                    "no certificate was presented".to_string(),
                    record.clone(),
                )
            })?;
        challenge::check_tls_alpn01(&cert, name, key_auth)
            .map_err(|e| ("unauthorized", e, record.clone()))?;
        Ok::<_, Failure>(())
    };
    match tokio::time::timeout(VALIDATION_TIMEOUT, work).await {
        Ok(r) => r?,
        Err(_) => {
            return Err((
                "connection",
                format!(
                    "{name}:{port} did not complete the handshake within {VALIDATION_TIMEOUT:?}"
                ),
                record,
            ))
        }
    }
    Ok(record)
}
