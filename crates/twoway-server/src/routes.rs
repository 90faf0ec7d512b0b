//! Routing, request parsing and the one place where domain errors become HTTP statuses.

use crate::{blocking, store_call, ConnInfo, State};
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use twoway_api::{codes, ErrorBody, MAX_BODY};
use twoway_ca::{Error as CaError, ErrorKind};
use twoway_store::{CertQuery, CertRecord};

pub(crate) type Resp = Response<Full<Bytes>>;

/// An API error: status, code and public message (the cause is logged, not sent).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
    /// The public message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

/// Maps a CA error to a status (by kind) and a code (by variant).
pub fn from_ca(e: &CaError) -> ApiError {
    use twoway_pki::Error as P;
    use twoway_store::Error as S;
    let status = match e.kind() {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = match e {
        CaError::Pki(P::CsrSignature) => codes::BAD_CSR_SIGNATURE,
        CaError::Pki(P::MalformedCsr(_) | P::NoPemBlock(_) | P::UnsupportedKey(_)) => {
            codes::BAD_CSR
        }
        CaError::Pki(P::PolicyViolation { .. } | P::BadTtl(_) | P::TtlBeyondIssuer { .. }) => {
            codes::POLICY
        }
        CaError::Pki(P::CommonNameNotASan { .. } | P::CommonNameTooLong(_)) => codes::CN_NOT_A_SAN,
        CaError::Store(S::TokenUnknown) => codes::TOKEN_UNKNOWN,
        CaError::Store(S::TokenExpired(_)) => codes::TOKEN_EXPIRED,
        CaError::Store(S::TokenUsed(_)) => codes::TOKEN_USED,
        CaError::NameNotAllowed(..) => codes::NAME_NOT_ALLOWED,
        CaError::CertExpired(_) => codes::CERT_EXPIRED,
        CaError::CertRevoked(..) => codes::CERT_REVOKED,
        CaError::BadProof(_) => codes::BAD_PROOF,
        CaError::Unauthenticated(_) => codes::UNAUTHENTICATED,
        CaError::Forbidden(_) => codes::FORBIDDEN,
        CaError::Store(S::AlreadyRevoked(_) | S::Duplicate(_)) => codes::CONFLICT,
        CaError::Store(S::NotFound(_) | S::Ambiguous(_)) => codes::NOT_FOUND,
        _ => match e.kind() {
            ErrorKind::BadInput => codes::BAD_REQUEST,
            ErrorKind::Unavailable => codes::UNAVAILABLE,
            _ => codes::INTERNAL,
        },
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = e as &dyn std::error::Error, "internal error");
        "internal error: see the CA's log".to_string()
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(error = e as &dyn std::error::Error, "unavailable");
        match e {
            CaError::Pki(P::Signer(_)) | CaError::Hsm { .. } => format!(
                "the CA key's token (PKCS#11) is not answering right now: retry in {} s; the \
                 CA's log says why",
                crate::RETRY_AFTER_SECS
            ),
            _ => unavailable_message(),
        }
    } else {
        e.to_string()
    };
    ApiError::new(status, code, message)
}

fn json_resp<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn bytes_resp(ctype: &str, body: Bytes) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn route_name(method: &Method, path: &str) -> &'static str {
    match (method.as_str(), path) {
        (_, "/healthz") => "healthz",
        (_, "/metrics") => "metrics",
        (_, "/roots.pem") => "roots",
        (_, "/crl") => "crl",
        (_, "/crl/root") => "crl-root",
        (_, p) if p.starts_with("/crl/root/") => "crl-root",
        (_, "/crl/delta") => "crl-delta",
        (_, p) if p.starts_with("/crl/g") => "crl",
        (_, p) if p == "/ocsp" || p.starts_with("/ocsp/") => "ocsp",
        (_, "/v1/enroll") => "enroll",
        (_, "/v1/renew") => "renew",
        (_, "/v1/sign") => "sign",
        (_, "/v1/revoke") => "revoke",
        (_, "/v1/tokens") => "tokens",
        (_, "/v1/certificates") => "certificates",
        (_, p) if p.starts_with("/acme/") => "acme",
        (_, p) if is_scep_path(p) => "scep",
        (_, p) if p == "/ui" || p.starts_with("/ui/") => "ui",
        (_, p) if p.starts_with(crate::est::PREFIX) => "est",
        _ => "other",
    }
}

/// `/scep` and `/scep/pkiclient.exe` (which many clients append), with or without a query.
fn is_scep_path(p: &str) -> bool {
    matches!(
        p.split('?').next(),
        Some("/scep" | "/scep/" | "/scep/pkiclient.exe")
    )
}

/// Handles one request.
pub async fn handle(state: Arc<State>, conn: Arc<ConnInfo>, req: hyper::Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = route_name(&method, &path);
    if let Some(refused) = ambiguous_framing(&req) {
        let mut resp = finish(&state, &conn, route, Err(refused));
        // The request's end is unknown: nothing more is read from this connection.
        resp.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        return resp;
    }
    if route == "acme" && conn.tls {
        // ACME answers problem documents of its own (RFC 8555 §6.7)
        let resp = crate::acme::handle(&state, req).await;
        state.metrics.request(route, resp.status().as_u16());
        return resp;
    }
    if route == "scep" {
        let method = req.method().clone();
        let query = req.uri().query().unwrap_or("").to_string();
        let answer = match read_body(req).await {
            Ok(body) => crate::scep::handle(&state, &conn, &method, &query, body).await,
            Err(e) => Err(e),
        };
        return finish(&state, &conn, route, answer);
    }
    if route == "ui" && conn.tls {
        // The dashboard answers HTML pages of its own
        let resp = crate::ui::handle(&state, &conn, req).await;
        state.metrics.request(route, resp.status().as_u16());
        return resp;
    }
    if route == "est" && conn.tls {
        // EST answers text/plain reasons and base64 PKCS#7 (RFC 7030)
        let resp = crate::est::handle(&state, &conn, req).await;
        state.metrics.request(route, resp.status().as_u16());
        return resp;
    }
    let answer = dispatch(&state, &conn, req, route).await;
    finish(&state, &conn, route, answer)
}

/// A request whose body is framed by `Transfer-Encoding`. With a `Content-Length` beside
/// it, it is the framing a smuggler plays off against a proxy in front (RFC 9112 §6.3 lets
/// a server refuse it); hyper follows the `Transfer-Encoding` and drops the
/// `Content-Length` before the request gets here, so the two cannot be told apart. Every
/// API body is a small JSON or DER document its client knows the length of: any
/// `Transfer-Encoding` is refused (HTTP/2 has none).
fn ambiguous_framing(req: &hyper::Request<Incoming>) -> Option<ApiError> {
    req.headers()
        .contains_key(header::TRANSFER_ENCODING)
        .then(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "Transfer-Encoding is not taken here (with or without a Content-Length beside it): send the body with a Content-Length alone",
            )
        })
}

/// The answer, or the refusal as JSON (counted by code and logged); counted by route and
/// status either way.
fn finish(
    state: &State,
    conn: &ConnInfo,
    route: &'static str,
    answer: Result<Resp, ApiError>,
) -> Resp {
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            state.metrics.error(e.code);
            tracing::info!(peer = %conn.peer, route, code = e.code, status = e.status.as_u16(), "refused: {}", e.message);
            let mut r = json_resp(e.status, &ErrorBody::new(e.code, e.message));
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    http::HeaderValue::from(crate::RETRY_AFTER_SECS),
                );
            }
            r
        }
    };
    state.metrics.request(route, resp.status().as_u16());
    resp
}

/// Handles one request of the plain-HTTP listener (read by `plain`): the public routes
/// only; `body` is the whole request body.
pub(crate) async fn handle_plain(
    state: &Arc<State>,
    conn: &ConnInfo,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Resp {
    let route = route_name(method, path);
    let answer = if route == "scep" {
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
        crate::scep::handle(state, conn, method, query, body).await
    } else if is_public(route) {
        public(state, route, method, path, body).await
    } else {
        Err(plain_only())
    };
    finish(state, conn, route, answer)
}

/// The answer to a request refused before it reached a route (a malformed head, a body
/// too large), counted like any other refusal.
pub(crate) fn refusal(state: &State, status: u16, code: &'static str, message: String) -> Resp {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    state.metrics.error(code);
    state.metrics.request("other", status.as_u16());
    json_resp(status, &ErrorBody::new(code, message))
}

/// Counts an OCSP answer served from the cache by the plain listener's fast path, as
/// [`handle_plain`] would have.
pub(crate) fn count_ocsp_hit(state: &State) {
    state
        .metrics
        .ocsp_cache_hits
        .fetch_add(1, Ordering::Relaxed);
    state.metrics.ocsp("cached");
    state.metrics.request("ocsp", 200);
}

fn is_public(route: &str) -> bool {
    matches!(
        route,
        "healthz" | "metrics" | "roots" | "crl" | "crl-root" | "crl-delta" | "ocsp"
    )
}

fn plain_only() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::NOT_FOUND,
        "the plain-HTTP listener serves only /ocsp, /crl, /crl/<id>, /crl/root, /crl/root/<id>, /crl/delta, /roots.pem, /scep, /healthz and /metrics: use HTTPS",
    )
}

/// The public, self-authenticating routes, on either listener.
async fn public(
    state: &Arc<State>,
    route: &'static str,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Result<Resp, ApiError> {
    match route {
        "healthz" => Ok(bytes_resp("text/plain", Bytes::from_static(b"ok\n"))),
        "metrics" => {
            let ca = state.ca.clone();
            let counts = store_call(move || ca.store().count_by_status())
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            let conns = [
                ("https", state.connections.https.stats()),
                ("http", state.connections.http.stats()),
            ];
            let mut text = state
                .metrics
                .render(&counts, &state.committer.stats, &conns);
            if let Some(s) = &state.scep {
                s.render(&mut text);
            }
            state.acme_state.render(&mut text);
            Ok(bytes_resp("text/plain; version=0.0.4", Bytes::from(text)))
        }
        "roots" => Ok(bytes_resp(
            "application/x-pem-file",
            Bytes::from(state.root_pem.clone()),
        )),
        "crl" => crl(state, path).await,
        "crl-root" => root_crl(state, path).await,
        "crl-delta" => crl_delta(state).await,
        _ => ocsp(state, method, path, body).await,
    }
}

async fn dispatch(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
    route: &'static str,
) -> Result<Resp, ApiError> {
    let method = req.method().clone();
    if is_public(route) {
        let path = req.uri().path().to_string();
        let body = if route == "ocsp" && method == Method::POST {
            read_body(req).await?
        } else {
            Bytes::new()
        };
        return public(state, route, &method, &path, body).await;
    }
    if !conn.tls {
        return Err(plain_only());
    }
    let not_allowed = || {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on this route"),
        )
    };
    match route {
        "enroll" if method == Method::POST => enroll(state, conn, req).await,
        "renew" if method == Method::POST => renew(state, conn, req).await,
        "sign" if method == Method::POST => sign(state, conn, req).await,
        "revoke" if method == Method::POST => revoke(state, conn, req).await,
        "tokens" if method == Method::POST => tokens(state, conn, req).await,
        "certificates" if method == Method::GET => certificates(state, conn, req).await,
        "enroll" | "renew" | "sign" | "revoke" | "tokens" | "certificates" => Err(not_allowed()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "no such route: see docs/api.md",
        )),
    }
}

/// How reading a request body failed ([`read_limited`]).
pub(crate) enum BodyError {
    /// The connection failed mid-body.
    Unreadable,
    /// Longer than the limit.
    TooLarge,
    /// Not all there within the deadline.
    TooSlow,
}

/// Reads a request body of at most `max` bytes within 30 s. Past the limit it keeps
/// draining (bounded: 16 × `max`, and the deadline) so the client reads the 413 instead of
/// a reset connection. The API's and EST's bodies both come through here.
pub(crate) async fn read_limited(mut body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut drained = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(BodyError::Unreadable);
            };
            if let Ok(data) = frame.into_data() {
                if drained == 0 && buf.len() + data.len() <= max {
                    buf.extend_from_slice(&data);
                } else {
                    drained += data.len();
                    if drained > 16 * max {
                        break;
                    }
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(30), read).await {
        Ok(Ok(())) if drained == 0 => Ok(buf.freeze()),
        Ok(Ok(())) => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::TooSlow),
    }
}

pub(crate) async fn read_body(req: hyper::Request<Incoming>) -> Result<Bytes, ApiError> {
    read_limited(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| match e {
            BodyError::Unreadable => ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "the request body could not be read",
            ),
            BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::BODY_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY} bytes"),
            ),
            BodyError::TooSlow => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                codes::BAD_REQUEST,
                "the request body took too long to arrive",
            ),
        })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: hyper::Request<Incoming>,
) -> Result<T, ApiError> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::MALFORMED_JSON,
            format!("the body is not valid JSON for this route: {e}"),
        )
    })
}

/// What a 503 says: the inventory is away, retry.
fn unavailable_message() -> String {
    format!(
        "the inventory cannot be reached or written right now (its database is down, paused \
         or full): retry in {} s; the CA's log says why",
        crate::RETRY_AFTER_SECS
    )
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        codes::UNAVAILABLE,
        unavailable_message(),
    )
}

async fn run_ca<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&twoway_ca::Ca) -> Result<T, CaError> + Send + 'static,
) -> Result<T, ApiError> {
    let ca = state.ca.clone();
    match store_call(move || f(&ca)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(from_ca(&e)),
        Err(crate::Error::StoreTimeout) => {
            tracing::warn!("the inventory did not answer in time: 503");
            Err(unavailable())
        }
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                "internal error: see the CA's log",
            ))
        }
    }
}

/// Records what an issuing call prepared (through the committer) and returns the
/// certificate once it is durable.
async fn record(
    state: &State,
    outcome: twoway_ca::Outcome,
) -> Result<twoway_pki::Issued, ApiError> {
    state
        .committer
        .record(outcome)
        .await
        .map_err(|e| from_ca(&e))
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn cert_response(state: &State, issued: &twoway_pki::Issued) -> twoway_api::CertificateResponse {
    let pem = issued.pem();
    twoway_api::CertificateResponse {
        chain: format!("{pem}{}", state.intermediate_pem),
        certificate: pem,
        root: state.root_pem.clone(),
        serial: issued.info.serial.clone(),
        fingerprint: issued.info.fingerprint.clone(),
        not_before: rfc(issued.info.not_before),
        not_after: rfc(issued.info.not_after),
    }
}

async fn enroll(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Result<Resp, ApiError> {
    if !state.limiter.allow(conn.peer.ip(), Instant::now()) {
        state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            format!(
                "too many enrollment requests from {}: slow down and retry in a second",
                conn.peer.ip()
            ),
        ));
    }
    let body: twoway_api::EnrollRequest = read_json(req).await?;
    let actor = format!("api:enroll@{}", conn.peer.ip());
    let outcome = run_ca(state, move |ca| {
        ca.prepare_enroll(&body.token, body.csr.as_bytes(), &actor)
    })
    .await?;
    let issued = record(state, outcome).await?;
    state.metrics.issued("enroll");
    tracing::info!(serial = %issued.info.serial, peer = %conn.peer, "enrolled");
    Ok(json_resp(
        StatusCode::CREATED,
        &cert_response(state, &issued),
    ))
}

/// The authenticated client certificate's record, or an error saying why not.
async fn client(state: &Arc<State>, conn: &ConnInfo) -> Result<CertRecord, ApiError> {
    let Some(der) = conn.client_cert.clone() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHENTICATED,
            "no client certificate: present a certificate issued by this CA (mutual TLS)",
        ));
    };
    run_ca(state, move |ca| ca.authenticate(&der)).await
}

async fn admin(state: &Arc<State>, conn: &ConnInfo) -> Result<CertRecord, ApiError> {
    let rec = client(state, conn).await?;
    if !twoway_ca::is_admin(&state.admins(), &rec) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            not_admin(&rec),
        ));
    }
    Ok(rec)
}

/// The message refusing a certificate that is not an administrator.
fn not_admin(rec: &CertRecord) -> String {
    format!(
        "certificate {} ({}) is not an administrator: list one of its SANs (or sha256:<fingerprint>) in [server] admins in ca.toml, then send the server SIGHUP",
        rec.serial,
        rec.sans.join(", ")
    )
}

/// `POST /v1/sign` (admin): sign a CSR under a profile. The body is read and checked first;
/// the administrator's authentication and the signing then run in one blocking task.
async fn sign(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Result<Resp, ApiError> {
    // The body is read (bounded) before anything is refused, so the client reads the answer
    // instead of a reset connection.
    let body: twoway_api::SignRequest = read_json(req).await?;
    let Some(der) = conn.client_cert.clone() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHENTICATED,
            "no client certificate: present an administrator's certificate issued by this CA (mutual TLS)",
        ));
    };
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, m);
    let profile: twoway_pki::Profile = body
        .profile
        .parse()
        .map_err(|e: twoway_pki::Error| bad(format!("profile: {e}")))?;
    let ttl = body
        .ttl
        .as_deref()
        .map(twoway_pki::parse_duration)
        .transpose()
        .map_err(|e| bad(format!("ttl: {e}")))?;
    let sans = body
        .sans
        .as_ref()
        .map(|v| {
            v.iter()
                .map(|s| s.parse::<twoway_pki::San>())
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| bad(format!("sans: {e}")))?;
    let peer = conn.peer.ip();
    // With a local store, the revocation counter is read first (microseconds; at most
    // every REVOCATION_RECHECK across connections), so that a revocation by another process
    // on the same database is seen by the signings that follow it; if it cannot be read,
    // the authentication is redone.
    let mut counter_read = true;
    if state.opts.check_revocations_per_request
        && conn.authenticated.lock().is_ok_and(|g| g.is_some())
        && crate::revocation_check_due(state)
    {
        let ca = state.ca.clone();
        match store_call(move || ca.store().revocation_seq()).await {
            Ok(Ok(seq)) => crate::saw_revocation_seq(state, seq),
            _ => counter_read = false,
        }
    }
    // The connection's earlier authentication stands while no revocation has been seen
    // since and the certificate has not expired; otherwise it is redone in the task below.
    let generation = state.auth_generation.load(Ordering::SeqCst);
    let cached = conn
        .authenticated
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .filter(|(g, rec)| {
            counter_read && *g == generation && rec.not_after > OffsetDateTime::now_utc()
        })
        .map(|(_, rec)| rec);
    let actor = move |who: &CertRecord| format!("api:admin:{}@{peer}", who.serial);
    let outcome = match cached {
        // The usual case on a kept-alive connection: nothing to read from the inventory,
        // so the CSR is checked and signed right here (CPU only, well under a millisecond)
        // instead of on a blocking thread.
        Some(who) => {
            if !twoway_ca::is_admin(&state.admins(), &who) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    codes::FORBIDDEN,
                    not_admin(&who),
                ));
            }
            let req = twoway_ca::SignCsr {
                profile,
                ttl,
                owner: body.owner,
                sans,
                actor: actor(&who),
            };
            state
                .ca
                .prepare_sign_csr(body.csr.as_bytes(), req)
                .map_err(|e| from_ca(&e))?
        }
        None => {
            let conn2 = conn.clone();
            let admins = state.admins();
            run_ca(state, move |ca| {
                let who = ca.authenticate(&der)?;
                if let Ok(mut g) = conn2.authenticated.lock() {
                    *g = Some((generation, who.clone()));
                }
                if !twoway_ca::is_admin(&admins, &who) {
                    return Err(CaError::Forbidden(not_admin(&who)));
                }
                let req = twoway_ca::SignCsr {
                    profile,
                    ttl,
                    owner: body.owner,
                    sans,
                    actor: actor(&who),
                };
                ca.prepare_sign_csr(body.csr.as_bytes(), req)
            })
            .await?
        }
    };
    let issued = record(state, outcome).await?;
    state.metrics.issued("sign");
    Ok(json_resp(
        StatusCode::CREATED,
        &cert_response(state, &issued),
    ))
}

pub(crate) fn invalidate(state: &State) {
    state.auth_generation.fetch_add(1, Ordering::SeqCst);
    state.ocsp.clear();
    state.mark_crls_dirty();
}

async fn renew(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: twoway_api::RenewRequest = read_json(req).await?;
    let client_cert = conn.client_cert.clone();
    let actor_peer = conn.peer.ip();
    let outcome = run_ca(state, move |ca| {
        let current = match (&client_cert, &body.proof) {
            (Some(der), _) => ca.authenticate_renewal(der)?,
            (None, Some(p)) => {
                let csr_der = twoway_pki::csr_der(body.csr.as_bytes())?;
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(p.signature.trim())
                    .map_err(|_| CaError::BadProof("the proof's signature is not base64".into()))?;
                let msg = twoway_api::pop_message(&csr_der, p.timestamp);
                ca.authenticate_proof(p.chain.as_bytes(), p.timestamp, &msg, &sig)?
            }
            (None, None) => {
                return Err(CaError::Unauthenticated(
                    "renewal needs the current certificate: present it over mutual TLS, or send a proof of possession".into(),
                ))
            }
        };
        let actor = format!("api:renew:{}@{actor_peer}", current.serial);
        ca.prepare_renew(&current, body.csr.as_bytes(), &actor)
    })
    .await?;
    let issued = record(state, outcome).await?;
    invalidate(state);
    state.metrics.issued("renew");
    Ok(json_resp(
        StatusCode::CREATED,
        &cert_response(state, &issued),
    ))
}

async fn revoke(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: twoway_api::RevokeRequest = read_json(req).await?;
    let who = client(state, conn).await?;
    let is_admin = twoway_ca::is_admin(&state.admins(), &who);
    let reason: twoway_pki::Reason = match body.reason.as_deref() {
        None => twoway_pki::Reason::Unspecified,
        Some(r) => r.parse().map_err(|e: twoway_pki::Error| {
            ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, e.to_string())
        })?,
    };
    let target = body.serial.trim().to_ascii_lowercase().replace(':', "");
    if !is_admin {
        let own = target == who.serial
            || target == who.fingerprint
            || target.trim_start_matches("00") == who.serial;
        if !own {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN,
                "only an administrator may revoke another certificate: a holder may revoke only the certificate it presents",
            ));
        }
    }
    let actor = format!(
        "api:{}:{}",
        if is_admin { "admin" } else { "holder" },
        who.serial
    );
    let rec = run_ca(state, move |ca| ca.revoke(&target, reason, &actor)).await?;
    invalidate(state);
    Ok(json_resp(
        StatusCode::OK,
        &twoway_api::RevokeResponse {
            serial: rec.serial,
            revoked_at: rec.revoked_at.map(rfc).unwrap_or_default(),
            reason: reason.as_str().into(),
        },
    ))
}

async fn tokens(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Result<Resp, ApiError> {
    let who = admin(state, conn).await?;
    let body: twoway_api::TokenRequest = read_json(req).await?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, m);
    let sans = body
        .sans
        .iter()
        .map(|s| s.parse::<twoway_pki::San>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let profile: twoway_pki::Profile = body
        .profile
        .parse()
        .map_err(|e: twoway_pki::Error| bad(e.to_string()))?;
    let ttl = twoway_pki::parse_duration(&body.ttl).map_err(|e| bad(format!("ttl: {e}")))?;
    let cert_ttl = body
        .cert_ttl
        .as_deref()
        .map(twoway_pki::parse_duration)
        .transpose()
        .map_err(|e| bad(format!("cert_ttl: {e}")))?;
    let t = twoway_ca::NewToken {
        sans,
        profile,
        ttl,
        cert_ttl,
        owner: body.owner.clone(),
        actor: format!("api:admin:{}", who.serial),
    };
    let (secret, rec) = run_ca(state, move |ca| ca.create_token(&t)).await?;
    Ok(json_resp(
        StatusCode::CREATED,
        &twoway_api::TokenResponse {
            token: secret,
            id: rec.hash[..16].to_string(),
            expires_at: rfc(rec.expires_at),
            sans: rec.sans,
            profile: rec.profile,
        },
    ))
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn certificates(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Result<Resp, ApiError> {
    admin(state, conn).await?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, m);
    let now = OffsetDateTime::now_utc();
    let mut q = CertQuery {
        now: Some(now),
        limit: 50,
        ..Default::default()
    };
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| bad(format!("bad encoding in {k}")))?;
        match k {
            "expiring" => {
                let d =
                    twoway_pki::parse_duration(&v).map_err(|e| bad(format!("expiring: {e}")))?;
                q.expiring_before = Some(now + d);
            }
            "expired" => q.expired = v == "true" || v == "1",
            "status" => {
                if !["active", "revoked", "expired"].contains(&v.as_str()) {
                    return Err(bad(format!("status {v:?}: use active, revoked or expired")));
                }
                q.status = Some(v);
            }
            "owner" => q.owner = Some(v),
            "san" => q.san_glob = Some(v),
            "profile" => q.profile = Some(v),
            "label" => {
                let (lk, lv) = v
                    .split_once('=')
                    .ok_or_else(|| bad(format!("label {v:?}: write key=value")))?;
                q.labels.push((lk.to_string(), lv.to_string()));
            }
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad("limit: a number from 1 to 1000".into()))?
            }
            "offset" => q.offset = v.parse().map_err(|_| bad("offset: a number".into()))?,
            other => return Err(bad(format!("unknown query parameter {other:?}"))),
        }
    }
    let page = run_ca(state, move |ca| ca.list(&q)).await?;
    let items = page
        .items
        .iter()
        .map(|r| twoway_api::CertificateSummary {
            serial: r.serial.clone(),
            fingerprint: r.fingerprint.clone(),
            subject: r.subject.clone(),
            issuer: r.issuer.clone(),
            sans: r.sans.clone(),
            profile: r.profile.clone(),
            owner: r.owner.clone(),
            status: r.effective_status(now).to_string(),
            not_before: rfc(r.not_before),
            not_after: rfc(r.not_after),
            revoked_at: r.revoked_at.map(rfc),
            revocation_reason: r.revocation_reason.clone(),
        })
        .collect();
    Ok(json_resp(
        StatusCode::OK,
        &twoway_api::CertificateList {
            items,
            total: page.total,
            offset: page.offset,
            limit: page.limit,
        },
    ))
}

/// `/crl`: the CRL of the first intermediate (`g1`, the one `ca init` made), whose
/// certificates name it; `/crl/<id>`: intermediate `id`'s (see `twoway ca rotate`).
async fn crl(state: &Arc<State>, path: &str) -> Result<Resp, ApiError> {
    let id = path.strip_prefix("/crl/").unwrap_or("g1").to_string();
    let Some(cache) = state.crl_cache(&id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!(
                "no CRL for intermediate {id:?}: this CA publishes {}",
                state
                    .ca
                    .crl_issuer_ids()
                    .iter()
                    .map(|i| format!("/crl/{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    if let Some(der) = cache.fresh() {
        return Ok(bytes_resp("application/pkix-crl", der));
    }
    let _g = cache.regen.lock().await;
    if let Some(der) = cache.fresh() {
        return Ok(bytes_resp("application/pkix-crl", der));
    }
    let st = state.clone();
    let der = run_ca(state, move |ca| match st.crl_cache(&id) {
        Some(c) => c.regenerate(ca, &st.actor),
        None => Err(twoway_ca::Error::Refused(format!("no CRL for {id}"))),
    })
    .await?;
    state.metrics.crl_signed.fetch_add(1, Ordering::Relaxed);
    Ok(bytes_resp("application/pkix-crl", der))
}

/// The delta CRL against the complete CRL `/crl` serves (RFC 5280 §5.2.4): the
/// certificates revoked since it was signed. Re-signed after a revocation; with `[crl]
/// delta` on, that is all a revocation re-signs.
async fn crl_delta(state: &Arc<State>) -> Result<Resp, ApiError> {
    if let Some(der) = state.crl.fresh_delta() {
        return Ok(bytes_resp("application/pkix-crl", der));
    }
    let _g = state.crl.regen.lock().await;
    if let Some(der) = state.crl.fresh_delta() {
        return Ok(bytes_resp("application/pkix-crl", der));
    }
    let st = state.clone();
    let der = run_ca(state, move |ca| st.crl.regenerate_delta(ca, &st.actor)).await?;
    state.metrics.crl_signed.fetch_add(1, Ordering::Relaxed);
    Ok(bytes_resp("application/pkix-crl", der))
}

/// The root's CRL as last signed (`root.crl` of the CA directory: the root key is offline,
/// so the server never signs it); 503 naming the fix when it is missing or stale.
async fn root_crl(state: &Arc<State>, path: &str) -> Result<Resp, ApiError> {
    let ca = state.ca.clone();
    let id = path.strip_prefix("/crl/root/").map(str::to_string);
    match blocking(move || match id {
        None => ca.root_crl(),
        Some(id) => ca.root_crl_of(&id),
    })
    .await
    {
        Ok(Ok(der)) => Ok(bytes_resp("application/pkix-crl", Bytes::from(der))),
        Ok(Err(e)) if e.kind() == twoway_ca::ErrorKind::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            e.to_string(),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot serve the root CRL");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::INTERNAL,
                e.to_string(),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                "internal error: see the CA's log",
            ))
        }
    }
}

async fn ocsp(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Result<Resp, ApiError> {
    let der = if method == Method::GET {
        let enc = path.strip_prefix("/ocsp/").unwrap_or("");
        let b64 = percent_decode(enc).unwrap_or_default();
        Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .unwrap_or_default(),
        )
    } else if method == Method::POST {
        body
    } else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            "OCSP takes GET /ocsp/<base64> or POST /ocsp",
        ));
    };
    if let Some(hit) = state.ocsp.cached(&der) {
        state
            .metrics
            .ocsp_cache_hits
            .fetch_add(1, Ordering::Relaxed);
        state.metrics.ocsp("cached");
        return Ok(bytes_resp("application/ocsp-response", hit));
    }
    let st = state.clone();
    let ca = state.ca.clone();
    let resp = match store_call(move || st.ocsp.answer(&ca, &der, &st.metrics)).await {
        Ok(resp) => resp,
        // the inventory did not answer in time: RFC 6960's tryLater, which clients retry
        Err(crate::Error::StoreTimeout) => Bytes::from(crate::responder::try_later()),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                "internal error",
            ))
        }
    };
    Ok(bytes_resp("application/ocsp-response", resp))
}
