//! EST (RFC 7030, with the RFC 8951 clarifications) under `/.well-known/est/` of the HTTPS
//! listener: `cacerts`, `simpleenroll`, `simplereenroll`, `csrattrs` and `serverkeygen`,
//! each also under `/.well-known/est/<label>/` when `[est.labels]` maps the label to a
//! profile.
//!
//! Authentication: a first enrollment (`simpleenroll`, `serverkeygen`) carries a one-time
//! token as the HTTP Basic password (401 with `WWW-Authenticate: Basic` without one), or a
//! client certificate that chains to `[est] bootstrap_ca` (the listener's verifier takes any
//! certificate and checks only possession; the chain is verified here, for EST only).
//! `simplereenroll` takes the current certificate over mutual TLS and supersedes it.
//!
//! Bodies: a PKCS#10 CSR in base64 with or without line breaks, PEM, or DER, whatever the
//! `Content-Transfer-Encoding` says. Answers: `application/pkcs7-mime;
//! smime-type=certs-only` in base64 (`Content-Transfer-Encoding: base64`); `serverkeygen`
//! answers `multipart/mixed` with the PKCS#8 key (made here, never stored) and the
//! certificate, over the TLS channel only. Refusals are `text/plain` reasons naming the fix,
//! counted in `/metrics` by code, with nothing recorded.

use crate::routes::Resp;
use crate::{blocking, ConnInfo, State};
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;
use std::time::Instant;
use twoway_ca::est::{BootstrapDevice, EstIssue};
use twoway_ca::{Error as CaError, ErrorKind};
use twoway_pki::{PrivateKey, Profile};

/// The EST path prefix.
pub(crate) const PREFIX: &str = "/.well-known/est/";

/// The largest request body taken (a CSR is a few hundred bytes to a few KiB).
const MAX_BODY: usize = 64 * 1024;

/// What EST needs besides the CA: the bootstrap CA's verifier, when one is configured.
pub struct Est {
    bootstrap: Option<Arc<dyn ClientCertVerifier>>,
    bootstrap_subjects: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Est {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Est")
            .field("bootstrap", &self.bootstrap.is_some())
            .finish()
    }
}

impl Est {
    /// Reads `[est] bootstrap_ca` (relative to the CA directory) and builds its verifier;
    /// an unreadable or empty file is an error naming the key.
    pub fn from_ca(
        ca: &twoway_ca::Ca,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Est, String> {
        let Some(file) = &ca.config().est.bootstrap_ca else {
            return Ok(Est {
                bootstrap: None,
                bootstrap_subjects: Vec::new(),
            });
        };
        let path = ca.dir().join(file);
        let text = std::fs::read(&path).map_err(|e| {
            format!(
                "[est] bootstrap_ca: cannot read {}: {e} (put the manufacturer CA's PEM there, or remove the key)",
                path.display()
            )
        })?;
        let certs = twoway_pki::parse_certificates(&text).map_err(|e| {
            format!(
                "[est] bootstrap_ca: {} holds no PEM certificate: {e}",
                path.display()
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let mut subjects = Vec::new();
        for c in &certs {
            roots.add(CertificateDer::from(c.clone())).map_err(|e| {
                format!(
                    "[est] bootstrap_ca: a certificate of {} is not usable as a trust anchor: {e}",
                    path.display()
                )
            })?;
            subjects.push(twoway_pki::subject_der_of_cert(c).map_err(|e| e.to_string())?);
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("[est] bootstrap_ca: {e}"))?;
        Ok(Est {
            bootstrap: Some(verifier),
            bootstrap_subjects: subjects,
        })
    }

    /// The subjects of the bootstrap CA certificates, hinted to clients in the handshake.
    pub fn hint_subjects(&self) -> &[Vec<u8>] {
        &self.bootstrap_subjects
    }

    /// The device certificate of the connection, when it chains to the bootstrap CA.
    fn bootstrap_device(&self, conn: &ConnInfo) -> Option<Result<BootstrapDevice, EstError>> {
        let (verifier, leaf) = (self.bootstrap.as_ref()?, conn.client_cert.as_ref()?);
        let intermediates: Vec<CertificateDer<'_>> = conn
            .client_intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let verified = verifier.verify_client_cert(
            &CertificateDer::from(leaf.as_slice()),
            &intermediates,
            UnixTime::now(),
        );
        Some(match verified {
            Ok(_) => BootstrapDevice::from_der(leaf).map_err(|e| {
                EstError::new(StatusCode::BAD_REQUEST, "est_bad_certificate", e.to_string())
            }),
            Err(e) => Err(EstError::new(
                StatusCode::FORBIDDEN,
                "est_bootstrap_refused",
                format!("the client certificate does not verify against [est] bootstrap_ca ({e}): present the device certificate its manufacturer CA issued, or enroll with a token (HTTP Basic)"),
            )),
        })
    }
}

/// A refusal: status, a code for the metrics, the reason sent as text.
#[derive(Debug)]
struct EstError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: bool,
}

impl EstError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        EstError {
            status,
            code,
            message: message.into(),
            challenge: false,
        }
    }

    fn unauthenticated(message: impl Into<String>) -> Self {
        EstError {
            challenge: true,
            ..EstError::new(StatusCode::UNAUTHORIZED, "est_unauthenticated", message)
        }
    }

    fn from_ca(e: &CaError) -> Self {
        use twoway_store::Error as S;
        let (status, code) = match e {
            CaError::Store(S::TokenUnknown) => (StatusCode::FORBIDDEN, "est_token_unknown"),
            CaError::Store(S::TokenUsed(_)) => (StatusCode::FORBIDDEN, "est_token_used"),
            CaError::Store(S::TokenExpired(_)) => (StatusCode::FORBIDDEN, "est_token_expired"),
            CaError::NameNotAllowed(..) => (StatusCode::FORBIDDEN, "est_name_not_allowed"),
            CaError::CertRevoked(..) => (StatusCode::FORBIDDEN, "est_cert_revoked"),
            CaError::CertExpired(_) => (StatusCode::FORBIDDEN, "est_cert_expired"),
            CaError::Forbidden(_) => (StatusCode::FORBIDDEN, "est_forbidden"),
            CaError::Pki(twoway_pki::Error::CsrSignature) => {
                (StatusCode::BAD_REQUEST, "est_bad_csr_signature")
            }
            CaError::Pki(
                twoway_pki::Error::MalformedCsr(_)
                | twoway_pki::Error::NoPemBlock(_)
                | twoway_pki::Error::UnsupportedKey(_),
            ) => (StatusCode::BAD_REQUEST, "est_bad_csr"),
            _ => match e.kind() {
                ErrorKind::BadInput => (StatusCode::FORBIDDEN, "est_refused"),
                ErrorKind::NotFound => (StatusCode::NOT_FOUND, "est_not_found"),
                ErrorKind::Unauthenticated => {
                    return EstError::unauthenticated(e.to_string());
                }
                ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "est_forbidden"),
                _ => {
                    tracing::error!(error = e as &dyn std::error::Error, "EST: internal error");
                    return EstError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "est_internal",
                        "internal error: see the CA's log",
                    );
                }
            },
        };
        EstError::new(status, code, e.to_string())
    }
}

/// Handles one request under [`PREFIX`] on the HTTPS listener.
pub(crate) async fn handle(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Resp {
    let path = req.uri().path().to_string();
    let answer = route(state, conn, req, &path).await;
    match answer {
        Ok(r) => r,
        Err(e) => {
            state.metrics.error(e.code);
            tracing::info!(peer = %conn.peer, path, code = e.code, status = e.status.as_u16(), "EST refused: {}", e.message);
            let mut b = Response::builder()
                .status(e.status)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
            if e.challenge {
                b = b.header(header::WWW_AUTHENTICATE, "Basic realm=\"twoway EST\"");
            }
            b.body(Full::new(Bytes::from(format!("{}\n", e.message))))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
        }
    }
}

async fn route(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
    path: &str,
) -> Result<Resp, EstError> {
    // The body is read (bounded) before anything is refused, so an HTTP/2 client still
    // uploading reads the answer instead of a reset stream.
    let (parts, incoming) = req.into_parts();
    let body = if parts.method == Method::POST {
        read_body(incoming).await?
    } else {
        Bytes::new()
    };
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let (label, op) = match rest.split_once('/') {
        Some((l, op)) => (Some(l), op),
        None => (None, rest),
    };
    let not_found = || {
        EstError::new(
            StatusCode::NOT_FOUND,
            "est_not_found",
            "no such EST operation: use cacerts, simpleenroll, simplereenroll, csrattrs or serverkeygen under /.well-known/est/[<label>/]",
        )
    };
    let label = match label {
        Some(l) => {
            let p = state.ca.config().est.label_profile(l).map_err(|e| {
                EstError::new(StatusCode::NOT_FOUND, "est_unknown_label", e.to_string())
            })?;
            Some((l.to_string(), p))
        }
        None => None,
    };
    let method = parts.method.clone();
    let wrong_method = |allowed: &str| {
        EstError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "est_method_not_allowed",
            format!("{method} is not allowed here: {op} takes {allowed}"),
        )
    };
    match op {
        "cacerts" if method == Method::GET => Ok(pkcs7_resp(&cacerts(state)?)),
        "csrattrs" if method == Method::GET => Ok(csrattrs(label.as_ref().map(|l| l.1))),
        "simpleenroll" | "serverkeygen" if method == Method::POST => {
            enroll(state, conn, &parts, body, label, op == "serverkeygen").await
        }
        "simplereenroll" if method == Method::POST => reenroll(state, conn, body).await,
        "cacerts" | "csrattrs" => Err(wrong_method("GET")),
        "simpleenroll" | "serverkeygen" | "simplereenroll" => Err(wrong_method("POST")),
        _ => Err(not_found()),
    }
}

/// The intermediate and the root, certs-only.
fn cacerts(state: &State) -> Result<Vec<u8>, EstError> {
    let pem = format!("{}{}", state.intermediate_pem, state.root_pem);
    let certs = twoway_pki::parse_certificates(pem.as_bytes()).map_err(|e| {
        EstError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "est_internal",
            e.to_string(),
        )
    })?;
    Ok(twoway_pki::pkcs7::certs_only(&certs))
}

/// CSR attributes (RFC 7030 §4.5.2): sign with ECDSA-SHA256 on a P-256 key; a device
/// profile also asks for the subject's serialNumber.
fn csrattrs(profile: Option<Profile>) -> Resp {
    const ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const EC_P256: &[u8] = &[
        0x30, 0x15, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x31, 0x0a, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    const SERIAL_NUMBER: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x05];
    let mut body = [ECDSA_SHA256, EC_P256].concat();
    if profile == Some(Profile::Device) {
        body.extend_from_slice(SERIAL_NUMBER);
    }
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    base64_resp("application/csrattrs", &der)
}

async fn read_body(body: Incoming) -> Result<Bytes, EstError> {
    use crate::routes::{read_limited, BodyError};
    read_limited(body, MAX_BODY).await.map_err(|e| match e {
        BodyError::Unreadable => EstError::new(
            StatusCode::BAD_REQUEST,
            "est_bad_body",
            "the request body could not be read",
        ),
        BodyError::TooLarge => EstError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "est_body_too_large",
            format!("the request body is larger than {MAX_BODY} bytes: send one PKCS#10 CSR"),
        ),
        BodyError::TooSlow => EstError::new(
            StatusCode::REQUEST_TIMEOUT,
            "est_body_timeout",
            "the request body took too long to arrive",
        ),
    })
}

/// The CSR of a request body: base64 (with or without line breaks, RFC 8951), PEM, or DER,
/// whatever `Content-Transfer-Encoding` says.
fn csr_of(body: &[u8]) -> Result<Vec<u8>, EstError> {
    let bad = || {
        EstError::new(
            StatusCode::BAD_REQUEST,
            "est_bad_body",
            "the body is not a PKCS#10 CSR in base64 (RFC 7030 §4.2.1): send the DER CSR base64-encoded, e.g. `openssl req -new … -outform DER | base64`",
        )
    };
    twoway_pki::csr_body_der(body).ok_or_else(bad)
}

/// The token of an `Authorization: Basic` header: the password, or the user name when the
/// password is empty (`curl -u TOKEN:`).
fn basic_token(req: &http::request::Parts) -> Option<Result<String, EstError>> {
    let v = req.headers.get(header::AUTHORIZATION)?;
    let bad = || {
        EstError::unauthenticated(
            "the Authorization header is not HTTP Basic with the enrollment token as the password: use `curl -u device:twt_…`",
        )
    };
    let parsed = (|| {
        let v = v.to_str().ok()?;
        let (scheme, cred) = v.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(cred.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':').unwrap_or((&text, ""));
        let token = if pass.is_empty() { user } else { pass };
        (!token.is_empty()).then(|| token.to_string())
    })();
    Some(parsed.ok_or_else(bad))
}

async fn enroll(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: &http::request::Parts,
    body: Bytes,
    label: Option<(String, Profile)>,
    server_key: bool,
) -> Result<Resp, EstError> {
    if !conn.tls {
        return Err(EstError::new(
            StatusCode::NOT_FOUND,
            "est_not_found",
            "EST is served on the HTTPS listener only",
        ));
    }
    if !state.limiter.allow(conn.peer.ip(), Instant::now()) {
        state
            .metrics
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(EstError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "est_rate_limited",
            format!(
                "too many enrollment requests from {}: slow down and retry in a second",
                conn.peer.ip()
            ),
        ));
    }
    let token = basic_token(req).transpose()?;
    let device = match &token {
        Some(_) => None,
        None => match state.est.bootstrap_device(conn) {
            Some(d) => Some(d?),
            None => {
                let hint = if conn.client_cert.is_some() {
                    " (a certificate this CA issued re-enrolls at simplereenroll)"
                } else {
                    ""
                };
                return Err(EstError::unauthenticated(format!(
                    "enrollment needs credentials: send the one-time token as the HTTP Basic password (curl -u device:twt_…), or a device certificate from [est] bootstrap_ca over mutual TLS{hint}"
                )));
            }
        },
    };
    let csr = csr_of(&body)?;
    let peer = conn.peer.ip();
    let actor = match &device {
        Some(d) => format!("est:bootstrap:{}@{peer}", d.serial),
        None => format!("est:token@{peer}"),
    };
    let ca = state.ca.clone();
    // On a blocking thread: the store is read, and serverkeygen makes a key (RSA takes
    // a while) of the CSR's key type.
    let (outcome, key) = blocking(move || -> Result<_, CaError> {
        let key = if server_key {
            let kt = twoway_pki::verify_csr(&csr)?.key_type;
            Some(PrivateKey::generate(kt)?)
        } else {
            None
        };
        let est = EstIssue {
            label,
            key_spki: key.as_ref().map(|k| k.public_key_der()),
            actor,
        };
        let outcome = match (&token, &device) {
            (Some(t), _) => ca.prepare_est_token(t, &csr, &est)?,
            (None, Some(d)) => ca.prepare_est_bootstrap(d, &csr, &est)?,
            (None, None) => return Err(CaError::Unauthenticated("no credentials".into())),
        };
        Ok((outcome, key))
    })
    .await
    .map_err(internal)?
    .map_err(|e| EstError::from_ca(&e))?;
    let issued = state
        .committer
        .record(outcome)
        .await
        .map_err(|e| EstError::from_ca(&e))?;
    state.metrics.issued(if server_key {
        "est-serverkeygen"
    } else {
        "est"
    });
    tracing::info!(serial = %issued.info.serial, peer = %conn.peer, "EST enrolled");
    let p7 = twoway_pki::pkcs7::certs_only(&[issued.der]);
    match key {
        None => Ok(pkcs7_resp(&p7)),
        Some(key) => {
            let pkcs8 = zeroize::Zeroizing::new(key.key_pair().serialize_der());
            Ok(multipart_resp(&pkcs8, &p7))
        }
    }
}

async fn reenroll(state: &Arc<State>, conn: &Arc<ConnInfo>, body: Bytes) -> Result<Resp, EstError> {
    let Some(der) = conn.client_cert.clone() else {
        return Err(EstError::new(
            StatusCode::UNAUTHORIZED,
            "est_unauthenticated",
            "re-enrollment needs the current certificate: present it and its key over mutual TLS (curl --cert cert.pem --key key.pem)",
        ));
    };
    let csr = csr_of(&body)?;
    let peer = conn.peer.ip();
    let ca = state.ca.clone();
    let outcome = blocking(move || {
        let current = ca.authenticate_renewal(&der)?;
        let actor = format!("est:reenroll:{}@{peer}", current.serial);
        ca.prepare_est_reenroll(&current, &csr, &actor)
    })
    .await
    .map_err(internal)?
    .map_err(|e| EstError::from_ca(&e))?;
    let issued = state
        .committer
        .record(outcome)
        .await
        .map_err(|e| EstError::from_ca(&e))?;
    crate::routes::invalidate(state);
    state.metrics.issued("est-reenroll");
    Ok(pkcs7_resp(&twoway_pki::pkcs7::certs_only(&[issued.der])))
}

fn internal(e: crate::Error) -> EstError {
    tracing::error!(error = %e, "EST: blocking task failed");
    EstError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "est_internal",
        "internal error: see the CA's log",
    )
}

/// Base64 with a line break every 64 characters (what `openssl base64 -d` reads; RFC 8951
/// readers take either form).
fn base64_lines(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 1);
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn base64_resp(ctype: &str, der: &[u8]) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .header("content-transfer-encoding", "base64")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(base64_lines(der))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn pkcs7_resp(der: &[u8]) -> Resp {
    base64_resp("application/pkcs7-mime; smime-type=certs-only", der)
}

/// `serverkeygen`'s answer (RFC 7030 §4.4.2): the PKCS#8 key, then the certificate.
fn multipart_resp(pkcs8: &[u8], p7: &[u8]) -> Resp {
    let mut rnd = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
    let boundary = format!("est-{}", hex_lower(&rnd));
    let key_b64 = zeroize::Zeroizing::new(base64_lines(pkcs8));
    let body = zeroize::Zeroizing::new(format!(
        "--{boundary}\r\nContent-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--{boundary}--\r\n",
        key_b64.as_str(),
        base64_lines(p7)
    ));
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body.as_bytes().to_vec())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_bodies_in_every_accepted_form() {
        let key = PrivateKey::generate(twoway_pki::KeyType::P256).unwrap();
        let sans = vec!["DNS:a.example".parse().unwrap()];
        let pem = twoway_pki::create_csr(&key, &sans, None).unwrap();
        let der = twoway_pki::csr_der(pem.as_bytes()).unwrap();
        let one_line = base64::engine::general_purpose::STANDARD.encode(&der);
        let broken = base64_lines(&der).replace('\n', "\r\n");
        let unpadded = one_line.trim_end_matches('=').to_string();
        for body in [
            one_line.as_bytes(),
            broken.as_bytes(),
            unpadded.as_bytes(),
            pem.as_bytes(),
            &der,
        ] {
            assert_eq!(csr_of(body).unwrap(), der);
        }
        for garbage in [&b"hello world"[..], b"", b"-----BEGIN nothing", b"AAAA"] {
            let e = csr_of(garbage).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("base64"), "{}", e.message);
        }
    }
}
