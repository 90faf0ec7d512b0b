//! The dashboard at `/ui/` on the HTTPS listener: server-rendered HTML (askama templates
//! under `templates/ui/`, escaped by default), one vendored stylesheet, no script.
//!
//! Who may see it is decided by the client certificate alone: it is authenticated against
//! the inventory like every API caller's (issuer, revocation, expiry), then must be one of
//! `[server] admins` (read and act) or `[server] auditors` (read only). Because a browser
//! presents that certificate on every request by itself, a state-changing request is a
//! POST that must carry an `Origin` equal to the server's own and a CSRF token: an HMAC of
//! the certificate's fingerprint under a key drawn at start (so a token is good for one
//! certificate on one server run). Every answer carries a strict Content-Security-Policy
//! (no inline script or style, nothing from elsewhere, no framing), `nosniff`, and
//! `no-store`. Every action calls the same `Ca` methods as the API and the CLI and is
//! audited as `ui:admin:<serial>`.

mod chart;
mod filter;
mod pages;

use crate::routes::{read_body, Resp};
use crate::{blocking, ConnInfo, State};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::{Arc, RwLock};
use twoway_ca::Admins;
use twoway_store::CertRecord;

/// The Content-Security-Policy of every dashboard answer.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The stylesheet, served as `/ui/static/style.css`.
const STYLE: &str = include_str!("style.css");

/// The dashboard's state inside the server's: its auditors and CSRF key.
pub(crate) struct Ui {
    auditors: RwLock<Arc<Admins>>,
    csrf_key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui").finish_non_exhaustive()
    }
}

impl Ui {
    pub(crate) fn new(auditors: Admins) -> Self {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        Ui {
            auditors: RwLock::new(Arc::new(auditors)),
            csrf_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        }
    }

    pub(crate) fn set_auditors(&self, a: Admins) {
        let new = Arc::new(a);
        match self.auditors.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    fn auditors(&self) -> Arc<Admins> {
        match self.auditors.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The CSRF token of a certificate (by fingerprint).
    fn csrf(&self, fingerprint: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(
            &self.csrf_key,
            format!("twoway-ui-csrf:{fingerprint}").as_bytes(),
        );
        hex::encode(tag.as_ref())
    }

    fn csrf_ok(&self, fingerprint: &str, token: &str) -> bool {
        let Ok(raw) = hex::decode(token.trim()) else {
            return false;
        };
        aws_lc_rs::hmac::verify(
            &self.csrf_key,
            format!("twoway-ui-csrf:{fingerprint}").as_bytes(),
            &raw,
        )
        .is_ok()
    }
}

/// What the viewer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Read and act (`[server] admins`).
    Admin,
    /// Read only (`[server] auditors`).
    Auditor,
}

/// The authenticated viewer of a page.
#[derive(Clone, Debug)]
pub(crate) struct Viewer {
    pub(crate) rec: CertRecord,
    pub(crate) role: Role,
    pub(crate) csrf: String,
}

impl Viewer {
    pub(crate) fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
    /// The audit log's actor for what this viewer does.
    pub(crate) fn actor(&self) -> String {
        format!("ui:admin:{}", self.rec.serial)
    }
    pub(crate) fn label(&self) -> String {
        let name = self
            .rec
            .sans
            .first()
            .cloned()
            .or_else(|| self.rec.common_name.clone())
            .unwrap_or_else(|| self.rec.subject.clone());
        format!(
            "{name} ({}, serial {})",
            match self.role {
                Role::Admin => "administrator",
                Role::Auditor => "auditor, read-only",
            },
            short(&self.rec.serial)
        )
    }
}

pub(crate) fn short(hex: &str) -> String {
    hex.chars().take(16).collect()
}

/// A refusal or failure, rendered as an HTML page with its status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) title: &'static str,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            title,
            message: message.into(),
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, "Bad request", message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::NOT_FOUND, "Not found", message)
    }
    pub(crate) fn internal() -> Self {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "internal error: see the CA's log",
        )
    }
    /// A CA error, mapped to a status as the API maps it.
    pub(crate) fn from_ca(e: &twoway_ca::Error) -> Self {
        let api = crate::routes::from_ca(e);
        let title = match api.status() {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::UNAUTHORIZED => "Not authenticated",
            StatusCode::INTERNAL_SERVER_ERROR => "Internal error",
            _ => "Refused",
        };
        Failure::new(api.status(), title, api.message())
    }
}

/// Runs `f` with the CA on a blocking thread; a CA error becomes its page.
pub(crate) async fn run_ca<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&twoway_ca::Ca) -> Result<T, twoway_ca::Error> + Send + 'static,
) -> Result<T, Failure> {
    let ca = state.ca.clone();
    match blocking(move || f(&ca)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::from_ca(&e)),
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            Err(Failure::internal())
        }
    }
}

/// Sets the headers every dashboard answer carries.
pub(crate) fn secure(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn respond(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Resp {
    let r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    secure(r)
}

pub(crate) fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", body)
}

/// A 303 to `location` (a path of this server).
pub(crate) fn see_other(location: &str) -> Resp {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A file to download.
pub(crate) fn download(ctype: &'static str, name: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = respond(StatusCode::OK, ctype, body);
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Handles one request under `/ui`.
pub(crate) async fn handle(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: hyper::Request<Incoming>,
) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/ui" {
        return see_other("/ui/");
    }
    if path == "/ui/static/style.css" && method == Method::GET {
        let mut r = respond(StatusCode::OK, "text/css; charset=utf-8", STYLE);
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        );
        return r;
    }
    let viewer = match authenticate(state, conn).await {
        Ok(v) => v,
        Err(f) => return pages::failure(None, f),
    };
    let answer = if method == Method::GET || method == Method::HEAD {
        let query = req.uri().query().unwrap_or("").to_string();
        pages::get(state, &viewer, &path, &query).await
    } else if method == Method::POST {
        match check_post(state, &viewer, req).await {
            Ok(form) => pages::post(state, &viewer, &path, &form).await,
            Err(f) => Err(f),
        }
    } else {
        Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            format!("{method} is not used by the dashboard: pages are GET, actions POST"),
        ))
    };
    match answer {
        Ok(r) => r,
        Err(f) => {
            if f.status.is_server_error() {
                tracing::error!(peer = %conn.peer, path, "dashboard: {}", f.message);
            } else {
                tracing::info!(peer = %conn.peer, path, status = f.status.as_u16(), "dashboard refused: {}", f.message);
            }
            pages::failure(Some(&viewer), f)
        }
    }
}

/// The viewer, or the page that says why not: no certificate (401), one this CA does not
/// know or that is revoked or expired (401), one that is neither an administrator nor an
/// auditor (403, naming the certificate seen and the setting that admits it).
async fn authenticate(state: &Arc<State>, conn: &ConnInfo) -> Result<Viewer, Failure> {
    let Some(der) = conn.client_cert.clone() else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "Client certificate needed",
            "The dashboard signs you in with a client certificate issued by this CA, and your browser presented none. Import an administrator's or auditor's certificate (PKCS#12) into the browser, then reload.",
        ));
    };
    let rec = run_ca(state, move |ca| ca.authenticate(&der)).await?;
    let role = if twoway_ca::is_admin(&state.admins(), &rec) {
        Role::Admin
    } else if state.ui.auditors().contains(&rec) {
        Role::Auditor
    } else {
        return Err(Failure::forbidden(format!(
            "The certificate your browser presented (serial {}, {}, profile {}) is neither an administrator nor an auditor of this CA. Add one of its SANs (a client certificate's) or sha256:{} to [server] admins (read and act) or [server] auditors (read only) in ca.toml, then send the server SIGHUP.",
            rec.serial,
            if rec.sans.is_empty() { "no SANs".to_string() } else { format!("SANs {}", rec.sans.join(", ")) },
            rec.profile,
            rec.fingerprint
        )));
    };
    let csrf = state.ui.csrf(&rec.fingerprint);
    Ok(Viewer { rec, role, csrf })
}

/// The origins this server answers as: `[ca] url`'s, and `https://` + the request's
/// authority.
fn own_origins(state: &State, req: &hyper::Request<Incoming>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(url) = state.ca.config().ca.url.as_deref() {
        let rest = url.strip_prefix("https://").unwrap_or("");
        let authority = rest.split('/').next().unwrap_or("");
        if !authority.is_empty() {
            out.push(format!("https://{}", authority.to_ascii_lowercase()));
        }
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    if let Some(a) = authority {
        out.push(format!("https://{}", a.to_ascii_lowercase()));
    }
    out
}

/// Checks a POST (Origin, then the viewer's role, then the body's CSRF token) and returns
/// its form fields.
async fn check_post(
    state: &Arc<State>,
    viewer: &Viewer,
    req: hyper::Request<Incoming>,
) -> Result<Vec<(String, String)>, Failure> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    let own = own_origins(state, &req);
    match origin {
        None => {
            return Err(Failure::forbidden(
                "This action came without an Origin header, so it cannot be told from a request forged by another site: send it from the dashboard's own form in a current browser.",
            ))
        }
        Some(o) if !own.contains(&o) => {
            return Err(Failure::forbidden(format!(
                "This action came from another site ({o}); the dashboard takes actions only from its own pages ({}).",
                own.join(" or ")
            )))
        }
        Some(_) => {}
    }
    if !viewer.is_admin() {
        return Err(Failure::forbidden(format!(
            "Your certificate (serial {}) is an auditor's: auditors read the dashboard but change nothing. Administrators are listed in [server] admins in ca.toml.",
            viewer.rec.serial
        )));
    }
    let body = read_body(req)
        .await
        .map_err(|e| Failure::new(e.status(), "Bad request", e.message()))?;
    let form = parse_form(&body)?;
    let token = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if token.is_empty() {
        return Err(Failure::forbidden(
            "This action carried no CSRF token: send it from the dashboard's own form (reload the page first).",
        ));
    }
    if !state.ui.csrf_ok(&viewer.rec.fingerprint, token) {
        return Err(Failure::forbidden(
            "This action's CSRF token is not valid for your certificate on this server (the server restarted, or the form came from elsewhere): reload the page and try again.",
        ));
    }
    Ok(form)
}

/// `application/x-www-form-urlencoded` (or a query string) as pairs.
pub(crate) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, Failure> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Failure::bad("the form is not UTF-8: send it from the dashboard's page"))?;
    parse_query(text)
}

pub(crate) fn parse_query(text: &str) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = crate::routes::percent_decode(k)
            .ok_or_else(|| Failure::bad(format!("the field {k:?} is not percent-encoded UTF-8")))?;
        let v = crate::routes::percent_decode(v).ok_or_else(|| {
            Failure::bad(format!("the value of {k:?} is not percent-encoded UTF-8"))
        })?;
        out.push((k, v));
    }
    if out.len() > 64 {
        return Err(Failure::bad("too many fields (64 at most)"));
    }
    Ok(out)
}

/// Percent-encodes a query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
