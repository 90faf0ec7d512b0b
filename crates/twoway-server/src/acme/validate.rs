//! The challenge fetches: `http-01` (a plain HTTP/1.1 GET, no redirect followed, body
//! bounded) and `tls-alpn-01` (RFC 8737: a TLS handshake offering only `acme-tls/1`, the
//! certificate judged by `twoway_acme::challenge::check_tls_alpn01`) and `dns-01` (one UDP
//! TXT query to the directory's resolver). Each answers the
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

/// `dns-01`: a TXT record of `_acme-challenge.<name>`, asked of the directory's resolver
/// (one UDP query, recursion desired; CNAMEs are followed by the resolver and the TXT
/// records of the answer's chain are read), must hold base64url(SHA-256(key
/// authorization)).
pub(crate) async fn dns01(
    dir: &AcmeDirectory,
    name: &str,
    key_auth: &str,
) -> Result<Value, Failure> {
    let qname = format!("_acme-challenge.{name}");
    let mut record = json!({"hostname": qname});
    let Some(resolver) = dir
        .dns_resolver
        .as_deref()
        .and_then(|r| r.parse::<SocketAddr>().ok())
    else {
        return Err(("dns", "no dns_resolver is configured".into(), record));
    };
    record["resolver"] = resolver.to_string().into();
    let want = challenge::dns01_txt(key_auth);
    let work = async {
        let bind: SocketAddr = if resolver.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        sock.connect(resolver)
            .await
            .map_err(|e| format!("cannot reach {resolver}: {e}"))?;
        let id = rand::random::<u16>().to_be_bytes();
        let query = dns::query(u16::from_be_bytes(id), &qname)?;
        sock.send(&query)
            .await
            .map_err(|e| format!("sending to {resolver}: {e}"))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .await
                .map_err(|e| format!("reading from {resolver}: {e}"))?;
            match dns::txt_answers(&buf[..n], u16::from_be_bytes(id)) {
                Ok(Some(txt)) => return Ok(txt),
                Ok(None) => continue, // not our answer
                Err(e) => return Err(e),
            }
        }
    };
    let txt = match tokio::time::timeout(VALIDATION_TIMEOUT, work).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(("dns", e, record)),
        Err(_) => {
            return Err((
                "dns",
                format!("{resolver} did not answer within {VALIDATION_TIMEOUT:?}"),
                record,
            ))
        }
    };
    if txt.iter().any(|t| t == &want) {
        Ok(record)
    } else {
        Err((
            "unauthorized",
            format!("TXT {qname} holds {txt:?}, not {want:?}"),
            record,
        ))
    }
}

/// The few bytes of DNS (RFC 1035) that a TXT lookup needs.
mod dns {
    /// A query for the TXT records of `name`, recursion desired.
    pub(super) fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
        let mut q = Vec::with_capacity(32 + name.len());
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.trim_end_matches('.').split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("{name} is not a DNS name"));
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&[0, 16, 0, 1]);
        Ok(q)
    }

    fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
        for _ in 0..128 {
            let len = *b.get(i)? as usize;
            if len == 0 {
                return Some(i + 1);
            }
            if len & 0xC0 == 0xC0 {
                return Some(i + 2);
            }
            i += 1 + len;
        }
        None
    }

    fn u16_at(b: &[u8], i: usize) -> Option<u16> {
        Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
    }

    /// The TXT strings of an answer to query `id` (each record's strings joined); None
    /// when the packet answers another query; an error for a failed lookup.
    pub(super) fn txt_answers(b: &[u8], id: u16) -> Result<Option<Vec<String>>, String> {
        let bad = || "the resolver's answer is malformed".to_string();
        if u16_at(b, 0) != Some(id) || b.get(2).is_none_or(|f| f & 0x80 == 0) {
            return Ok(None);
        }
        let rcode = b.get(3).ok_or_else(bad)? & 0x0F;
        if rcode == 3 {
            return Err("the name does not exist (NXDOMAIN)".into());
        }
        if rcode != 0 {
            return Err(format!("the resolver answered rcode {rcode}"));
        }
        let qd = u16_at(b, 4).ok_or_else(bad)?;
        let an = u16_at(b, 6).ok_or_else(bad)?;
        let mut i = 12;
        for _ in 0..qd {
            i = skip_name(b, i).ok_or_else(bad)? + 4;
        }
        let mut out = Vec::new();
        for _ in 0..an {
            i = skip_name(b, i).ok_or_else(bad)?;
            let typ = u16_at(b, i).ok_or_else(bad)?;
            let len = u16_at(b, i + 8).ok_or_else(bad)? as usize;
            let start = i + 10;
            let data = b.get(start..start + len).ok_or_else(bad)?;
            if typ == 16 {
                let mut s = Vec::new();
                let mut j = 0;
                while j < data.len() {
                    let l = data[j] as usize;
                    s.extend_from_slice(data.get(j + 1..j + 1 + l).ok_or_else(bad)?);
                    j += 1 + l;
                }
                out.push(String::from_utf8_lossy(&s).into_owned());
            }
            i = start + len;
        }
        Ok(Some(out))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_txt_answer_is_read_and_garbage_is_not_a_panic() {
            let q = query(7, "_acme-challenge.a.test").unwrap();
            let mut r = q.clone();
            r[2] |= 0x80;
            r[7] = 1; // one answer
            r.extend_from_slice(&[
                0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 6, 2, b'a', b'b', 2, b'c', b'd',
            ]);
            assert_eq!(txt_answers(&r, 7).unwrap().unwrap(), ["abcd"]);
            assert_eq!(txt_answers(&r, 8).unwrap(), None);
            for n in 0..r.len() {
                let _ = txt_answers(&r[..n], 7);
            }
            let mut nx = q.clone();
            nx[2] |= 0x80;
            nx[3] = 3;
            assert!(txt_answers(&nx, 7).unwrap_err().contains("NXDOMAIN"));
        }
    }
}
