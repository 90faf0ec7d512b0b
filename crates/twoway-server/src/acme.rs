//! The ACME server (RFC 8555) under `/acme/<directory>/…` of the HTTPS listener: what
//! certbot, lego and other ACME clients speak. `twoway-acme` judges requests (JWS, JWK,
//! key authorizations, challenge answers); the state (accounts, orders, authorizations,
//! challenges, nonces) lives in the store, so replicas on one database serve one
//! directory; a finalized order is issued through [`twoway_ca::Ca::prepare_acme`] and the
//! committer, like every other issuance, and lands in the inventory with source `acme`.
//!
//! Objects are JSON documents in the store (`acme_objects`), updated by compare-and-set;
//! an order's status is derived from its authorizations when it is read.

use crate::routes::Resp;
use crate::{blocking, store_call, State};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use load::{ids_in, Load, Loaded};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use twoway_acme::challenge::{self, Kind};
use twoway_acme::{Jwk, Jws, Signer};
use twoway_ca::acme::{AcmeDirectory, AcmeIssue};
use twoway_store::{AcmeObject, AcmeTx, Store};

mod ari;
mod cert;
mod keychange;
mod load;
mod preauth;
pub(crate) mod state;
mod validate;

/// How long a nonce stays usable.
const NONCE_TTL: Duration = Duration::hours(1);
/// How long an order and its authorizations stay pending.
const ORDER_TTL: Duration = Duration::days(7);
/// How long finished objects are kept before the purge forgets them.
const KEEP: Duration = Duration::days(30);
/// Identifiers one order may carry.
const MAX_IDENTIFIERS: usize = 100;
/// What clients are told to wait while a challenge is processed.
const RETRY_AFTER_SECS: &str = "1";
/// How long a challenge POST waits for its validation before answering `processing`
/// (the validation goes on in the background).
const INLINE_VALIDATION: StdDuration = StdDuration::from_millis(500);

/// A refusal: an RFC 7807 problem document with an ACME error type.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    /// A `Location` to send along (a key change's 409 names the account holding the key).
    location: Option<String>,
}

fn problem(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
    Problem {
        status,
        kind,
        detail: detail.into(),
        location: None,
    }
}

fn malformed(detail: impl Into<String>) -> Problem {
    problem(StatusCode::BAD_REQUEST, "malformed", detail)
}

fn unauthorized(detail: impl Into<String>) -> Problem {
    problem(StatusCode::FORBIDDEN, "unauthorized", detail)
}

fn not_found(what: &str) -> Problem {
    problem(
        StatusCode::NOT_FOUND,
        "malformed",
        format!("no such {what} in this directory"),
    )
}

/// The inventory did not answer in time (its database is paused or unreachable): 503 with
/// `Retry-After`, which ACME clients honour.
fn unavailable() -> Problem {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "serverInternal",
        format!(
            "the inventory cannot be reached right now: retry in {} s",
            crate::RETRY_AFTER_SECS
        ),
    )
}

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "ACME internal error");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "serverInternal",
        "internal error: see the CA's log",
    )
}

impl From<twoway_acme::Error> for Problem {
    fn from(e: twoway_acme::Error) -> Self {
        let kind = e
            .problem_type()
            .trim_start_matches("urn:ietf:params:acme:error:");
        let kind: &'static str = match kind {
            "badNonce" => "badNonce",
            "badSignatureAlgorithm" => "badSignatureAlgorithm",
            "badPublicKey" => "badPublicKey",
            "unauthorized" => "unauthorized",
            _ => "malformed",
        };
        let status = if kind == "unauthorized" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        problem(status, kind, e.to_string())
    }
}

fn problem_json(kind: &str, detail: &str, status: u16) -> Value {
    json!({"type": format!("urn:ietf:params:acme:error:{kind}"), "detail": detail, "status": status})
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// 128 random bits, base64url: a challenge token.
fn new_token() -> Result<String, Problem> {
    let t = challenge::new_token();
    if t.is_empty() {
        return Err(internal("the random generator failed"));
    }
    Ok(t)
}

/// A new object id or nonce: the time in microseconds (13 hex digits, so ids sort by
/// creation) and then 128 random bits ([`new_token`]). The random part makes it
/// unguessable; the time part puts new rows and their index entries next to the other
/// recent ones, so a batch of requests writes a few pages of the store rather than one
/// page per id (random keys land all over the index).
fn new_id() -> Result<String, Problem> {
    let micros = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    Ok(format!("{:013x}{}", micros.max(0), new_token()?))
}

/// A store call's outcome as a request sees it: an unreachable or paused database is a
/// 503 the client retries, anything else a 500.
fn store_answer<T>(r: Result<twoway_store::Result<T>, crate::Error>) -> Result<T, Problem> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ twoway_store::Error::Database { .. })) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "inventory unavailable"
            );
            Err(unavailable())
        }
        Ok(Err(e)) => Err(internal(e)),
        Err(crate::Error::StoreTimeout) => Err(unavailable()),
        Err(e) => Err(internal(e)),
    }
}

/// One request's context: the directory and the URLs of its objects.
struct Ctx {
    state: Arc<State>,
    dir: AcmeDirectory,
    /// `<base>/acme/<name>`.
    base: String,
    /// The answer's Replay-Nonce when it was stored with the request's own nonce.
    nonce: std::sync::Mutex<Option<String>>,
}

impl Ctx {
    fn url(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }

    /// Runs a store call off the async threads.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> twoway_store::Result<T> + Send + 'static,
    ) -> Result<T, Problem> {
        let ca = self.state.ca.clone();
        store_answer(store_call(move || f(ca.store())).await)
    }

    /// Runs store work on the ACME state thread, in a transaction shared with the
    /// requests queued beside it (see [`state`]).
    async fn tx<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut AcmeTx<'_>) -> twoway_store::Result<T> + Send + 'static,
    ) -> Result<T, Problem> {
        store_answer(self.state.acme_state.run(f).await)
    }

    /// An object and the `of` objects its document names in `field` (one id or a list):
    /// what the request's authentication read already (`pre`), else in one store call.
    async fn get_with(
        &self,
        pre: Option<Loaded>,
        kind: &'static str,
        id: &str,
        field: &'static str,
        of: &'static str,
    ) -> Result<(AcmeObject, Vec<AcmeObject>), Problem> {
        let (o, list) = match pre {
            Some(Loaded::With(o, list)) => (o, list),
            _ => {
                let load = Load::With {
                    kind,
                    id: id.to_string(),
                    field,
                    of,
                };
                match self.tx(move |s| load.read(s)).await? {
                    Loaded::With(o, list) => (o, list),
                    Loaded::Cert(_) => return Err(internal("a certificate read for an object")),
                }
            }
        };
        let o = o
            .filter(|o| o.kind == kind && o.id == id)
            .ok_or_else(|| not_found(kind))?;
        let list = list
            .into_iter()
            .map(|x| x.ok_or_else(|| not_found(of)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((o, list))
    }

    async fn fresh_nonce(&self) -> Result<String, Problem> {
        if let Some(n) = self.nonce.lock().ok().and_then(|mut n| n.take()) {
            return Ok(n);
        }
        let n = new_id()?;
        let n2 = n.clone();
        self.tx(move |s| s.new_nonce(&n2, OffsetDateTime::now_utc() + NONCE_TTL))
            .await?;
        Ok(n)
    }
}

/// Changes an object by compare-and-set, re-reading when another writer won (a few
/// times); `f` returns false to leave it unchanged. The object as it is afterwards.
async fn modify(
    ctx: &Ctx,
    kind: &'static str,
    id: &str,
    f: impl Fn(&mut AcmeObject) -> bool + Send + Sync + 'static,
) -> Result<AcmeObject, Problem> {
    Ok(change(ctx, kind, id, f).await?.0)
}

/// [`modify`], also saying whether this call made the change (false: `f` declined on the
/// object as it was read, e.g. another request claimed it first). One store transaction;
/// orders, authorizations and challenges are ephemeral state (a crash may lose their last
/// change), accounts and EAB keys are flushed.
async fn change(
    ctx: &Ctx,
    kind: &'static str,
    id: &str,
    f: impl Fn(&mut AcmeObject) -> bool + Send + Sync + 'static,
) -> Result<(AcmeObject, bool), Problem> {
    let i = id.to_string();
    let changed = if matches!(kind, "order" | "authz" | "challenge") {
        ctx.tx(move |s| s.modify(kind, &i, &mut |o| f(o))).await?
    } else {
        ctx.db(move |s| s.acme_modify(kind, &i, true, &mut |o| f(o)))
            .await?
    };
    changed.ok_or_else(|| not_found(kind))
}

/// Handles a request whose path starts with `/acme/`.
pub(crate) async fn handle(state: &Arc<State>, req: hyper::Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let mut parts = path
        .trim_start_matches("/acme/")
        .splitn(2, '/')
        .map(str::to_string);
    let name = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let Some(dir) = state.ca.config().acme.get(&name).cloned() else {
        let p = problem(
            StatusCode::NOT_FOUND,
            "malformed",
            format!("no ACME directory {name:?}: see [[acme.directory]] in ca.toml"),
        );
        return render(state, None, Err(p), &[]).await;
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let root = match &state.ca.config().ca.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("https://{host}"),
    };
    let ctx = Ctx {
        state: state.clone(),
        base: format!("{root}/acme/{name}"),
        dir,
        nonce: std::sync::Mutex::new(None),
    };
    let method = req.method().clone();
    let answer = route(&ctx, &method, &rest, req).await;
    let index = ctx.url("directory");
    render(
        state,
        Some(&ctx),
        answer,
        &[("link", format!("<{index}>;rel=\"index\""))],
    )
    .await
}

/// What a handler answers: status, JSON (or PEM) body, extra headers.
struct Answer {
    status: StatusCode,
    body: Bytes,
    ctype: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: StatusCode, v: &Value) -> Answer {
        Answer {
            status,
            body: Bytes::from(v.to_string()),
            ctype: "application/json",
            headers: Vec::new(),
        }
    }

    fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            body: Bytes::new(),
            ctype: "",
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, v: String) -> Answer {
        self.headers.push((name, v));
        self
    }
}

async fn render(
    state: &Arc<State>,
    ctx: Option<&Ctx>,
    answer: Result<Answer, Problem>,
    common: &[(&'static str, String)],
) -> Resp {
    let mut a = match answer {
        Ok(a) => a,
        Err(p) => {
            state.metrics.error(&format!("acme:{}", p.kind));
            tracing::info!(
                kind = p.kind,
                status = p.status.as_u16(),
                "ACME refused: {}",
                p.detail
            );
            let mut headers: Vec<(&'static str, String)> =
                p.location.map(|l| ("location", l)).into_iter().collect();
            if p.status == StatusCode::SERVICE_UNAVAILABLE {
                headers.push(("retry-after", crate::RETRY_AFTER_SECS.to_string()));
            }
            Answer {
                status: p.status,
                body: Bytes::from(problem_json(p.kind, &p.detail, p.status.as_u16()).to_string()),
                ctype: "application/problem+json",
                headers,
            }
        }
    };
    // every answer carries a fresh nonce (RFC 8555 §6.5), a badNonce most of all
    if let Some(ctx) = ctx {
        match ctx.fresh_nonce().await {
            Ok(n) => a.headers.push(("replay-nonce", n)),
            Err(_) => tracing::warn!("could not store a fresh ACME nonce"),
        }
    }
    let mut b = Response::builder().status(a.status);
    if !a.ctype.is_empty() {
        b = b.header(header::CONTENT_TYPE, a.ctype);
    }
    for (k, v) in common.iter().chain(a.headers.iter()) {
        if let Ok(v) = HeaderValue::from_str(v) {
            b = b.header(*k, v);
        }
    }
    b.body(Full::new(a.body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn route(
    ctx: &Ctx,
    method: &Method,
    rest: &str,
    req: hyper::Request<Incoming>,
) -> Result<Answer, Problem> {
    let (what, id) = match rest.split_once('/') {
        Some((w, i)) => (w, i.to_string()),
        None => (rest, String::new()),
    };
    match (method.as_str(), what) {
        ("GET", "directory") => Ok(directory(ctx)),
        ("HEAD", "new-nonce") => {
            Ok(Answer::empty(StatusCode::OK).header("cache-control", "no-store".into()))
        }
        ("GET", "new-nonce") => {
            Ok(Answer::empty(StatusCode::NO_CONTENT).header("cache-control", "no-store".into()))
        }
        ("GET", "renewal-info") => ari::renewal_info(ctx, &id).await,
        // `issuer`: the active intermediate (with the cross certificate during a root
        // rotation); `issuer/<g<n>>`: an earlier one, the issuer of what it signed
        ("GET", "issuer") => {
            let pem = if id.is_empty() || id == ctx.state.ca.active_issuer_id() {
                Some(ctx.state.intermediate_pem.clone())
            } else {
                ctx.state.ca.issuer_pem_by_id(&id)
            };
            Ok(Answer {
                status: StatusCode::OK,
                body: Bytes::from(pem.ok_or_else(|| not_found("intermediate"))?),
                ctype: "application/pem-certificate-chain",
                headers: Vec::new(),
            })
        }
        ("POST", _) => {
            let jose = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/jose+json"));
            let body = crate::routes::read_body(req).await.map_err(|_| {
                problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "malformed",
                    format!(
                        "the request body is larger than {} bytes",
                        twoway_acme::jws::MAX_JWS
                    ),
                )
            })?;
            // refused only once the body is read: an answer that overtakes the upload
            // resets an HTTP/2 stream, and the client sees that instead of the problem
            if !jose {
                return Err(problem(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "malformed",
                    "ACME requests are sent as Content-Type: application/jose+json",
                ));
            }
            let req = authenticate(ctx, rest, &body).await?;
            match what {
                "new-account" => new_account(ctx, req).await,
                "acct" => account(ctx, req, &id).await,
                "new-order" => new_order(ctx, req).await,
                "orders" => orders(ctx, req, &id).await,
                "order" => order(ctx, req, &id).await,
                "authz" => authz(ctx, req, &id).await,
                "chall" => chall(ctx, req, &id).await,
                "finalize" => finalize(ctx, req, &id).await,
                "cert" => cert::cert(ctx, req, &id).await,
                "revoke-cert" => cert::revoke(ctx, req).await,
                "key-change" => keychange::key_change(ctx, req).await,
                _ => Err(not_found("resource")),
            }
        }
        _ => Err(problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "malformed",
            format!("{method} /{rest} is not an ACME request: requests are POSTs of a JWS"),
        )),
    }
}

fn directory(ctx: &Ctx) -> Answer {
    Answer::json(
        StatusCode::OK,
        &json!({
            "newNonce": ctx.url("new-nonce"),
            "newAccount": ctx.url("new-account"),
            "newOrder": ctx.url("new-order"),
            "revokeCert": ctx.url("revoke-cert"),
            "keyChange": ctx.url("key-change"),
            "renewalInfo": ctx.url("renewal-info"),
            "meta": {
                "externalAccountRequired": ctx.dir.eab_required,
            },
        }),
    )
}

/// An authenticated request: the JWS, and the account when signed by `kid`.
struct Req {
    jws: Jws,
    /// The signing key (the account's for `kid`).
    key: Jwk,
    account: Option<AcmeObject>,
    /// What the route reads, read with the nonce ([`Load::of`]).
    pre: Option<Loaded>,
}

impl Req {
    fn account(&self) -> Result<&AcmeObject, Problem> {
        self.account.as_ref().ok_or_else(|| {
            malformed("this request must be signed by an account (kid), not a bare key (jwk)")
        })
    }
}

/// Parses and verifies a JWS by RFC 8555 §6: the URL it names is this request's, its
/// nonce is fresh (taken once, on any replica), the key is the account's (kid) or sent
/// along (jwk, only for newAccount and revokeCert), the signature verifies.
async fn authenticate(ctx: &Ctx, rest: &str, body: &[u8]) -> Result<Req, Problem> {
    let jws = Jws::parse(body)?;
    let url = ctx.url(rest);
    if jws.url != url {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "the JWS url {:?} is not this request's URL {url:?}",
                jws.url
            ),
        ));
    }
    // one transaction: the nonce taken, the answer's nonce stored, the account read
    let kid_id = match &jws.signer {
        Signer::Kid(kid) => kid.strip_prefix(&ctx.url("acct/")).map(str::to_string),
        Signer::Jwk(_) => None,
    };
    let (used, next) = (jws.nonce.clone(), new_id()?);
    let (n2, k2) = (next.clone(), kid_id.clone());
    // what the route reads comes along; it is looked at only once the JWS verified
    let load = match rest.split_once('/') {
        Some((what, id)) if kid_id.is_some() => Load::of(what, id),
        _ => None,
    };
    let (fresh, found, pre) = ctx
        .tx(move |s| {
            let now = OffsetDateTime::now_utc();
            let fresh = s.use_nonce(&used, now)?;
            s.new_nonce(&n2, now + NONCE_TTL)?;
            let found = match &k2 {
                Some(id) => s.get("account", id)?,
                None => None,
            };
            let pre = match &load {
                Some(l) if fresh && found.is_some() => Some(l.read(s)?),
                _ => None,
            };
            Ok((fresh, found, pre))
        })
        .await?;
    if let Ok(mut n) = ctx.nonce.lock() {
        *n = Some(next);
    }
    if !fresh {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "badNonce",
            "the nonce is unknown, used or expired: retry with the Replay-Nonce of this answer",
        ));
    }
    let jwk_allowed = rest == "new-account" || rest == "revoke-cert";
    let (key, account) = match &jws.signer {
        Signer::Jwk(k) if jwk_allowed => (k.clone(), None),
        Signer::Jwk(_) => {
            return Err(malformed(
                "this request must be signed with kid (the account URL), not jwk",
            ))
        }
        Signer::Kid(_) if rest == "new-account" => {
            return Err(malformed("newAccount must be signed with jwk, not kid"))
        }
        Signer::Kid(kid) => {
            if kid_id.is_none() {
                return Err(unauthorized(format!(
                    "kid {kid:?} is not an account of this directory"
                )));
            }
            let acct = found.ok_or_else(|| {
                problem(
                    StatusCode::BAD_REQUEST,
                    "accountDoesNotExist",
                    format!("no account {kid}"),
                )
            })?;
            if acct.doc["status"] != "valid" {
                return Err(unauthorized(format!(
                    "the account is {}: it can no longer be used",
                    acct.doc["status"]
                )));
            }
            let key = Jwk::from_json(&acct.doc["key"]).map_err(internal)?;
            (key, Some(acct))
        }
    };
    jws.verify(&key)?;
    Ok(Req {
        jws,
        key,
        account,
        pre,
    })
}

fn account_json(ctx: &Ctx, a: &AcmeObject) -> Value {
    json!({
        "status": a.doc["status"],
        "contact": a.doc["contact"],
        "orders": ctx.url(&format!("orders/{}", a.id)),
    })
}

fn contacts(payload: &Value) -> Result<Option<Value>, Problem> {
    let Some(c) = payload.get("contact") else {
        return Ok(None);
    };
    let list = c
        .as_array()
        .ok_or_else(|| malformed("contact must be an array of URLs"))?;
    for u in list {
        let s = u.as_str().unwrap_or_default();
        if !s.starts_with("mailto:") || s.len() > 256 || s.contains(',') {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "unsupportedContact",
                format!("contact {u} is not a single mailto: URL"),
            ));
        }
    }
    Ok(Some(c.clone()))
}

async fn new_account(ctx: &Ctx, req: Req) -> Result<Answer, Problem> {
    let payload = req.jws.json()?;
    let thumb = req.key.thumbprint();
    let t2 = thumb.clone();
    if let Some(a) = ctx.db(move |s| s.acme_find("account", &t2)).await? {
        return Ok(Answer::json(StatusCode::OK, &account_json(ctx, &a))
            .header("location", ctx.url(&format!("acct/{}", a.id))));
    }
    if payload["onlyReturnExisting"] == true {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "accountDoesNotExist",
            "no account has this key",
        ));
    }
    let binding = payload.get("externalAccountBinding").cloned();
    if ctx.dir.eab_required && binding.is_none() {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "externalAccountRequired",
            "this directory needs an external account binding (EAB): ask the CA's operators for a key id and HMAC key (`twoway acme eab create`)",
        ));
    }
    let mut owner = ctx.dir.owner.clone();
    let mut eab_kid = None;
    let mut preauthorize = Value::Null;
    let account_id = new_id()?;
    if let Some(b) = binding {
        let b = twoway_acme::eab::Binding::parse(&b)?;
        let ca = ctx.state.ca.clone();
        let kid = b.kid.clone();
        let found = blocking(move || ca.eab_key(&kid))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let Some((mac_key, rec)) =
            found.filter(|(_, r)| r.doc["directory"] == ctx.dir.name.as_str())
        else {
            return Err(unauthorized(format!(
                "externalAccountBinding: no EAB key {:?} for this directory",
                b.kid
            )));
        };
        b.verify(&mac_key, &ctx.url("new-account"), &req.key)?;
        if rec.doc["status"] == "revoked" {
            return Err(unauthorized(format!(
                "externalAccountBinding: EAB key {:?} was revoked: ask for a new one",
                b.kid
            )));
        }
        // single use: the first account bound with the key uses it up
        let acct_id = account_id.clone();
        let (_, used) = change(ctx, twoway_ca::acme::EAB_KIND, &rec.id, move |o| {
            if o.doc["status"] != "unused" {
                return false;
            }
            o.doc["status"] = "used".into();
            o.doc["account"] = acct_id.clone().into();
            true
        })
        .await?;
        if !used {
            return Err(unauthorized(format!(
                "externalAccountBinding: EAB key {:?} was used already: make a new one",
                b.kid
            )));
        }
        if let Some(o) = rec.doc["owner"].as_str() {
            owner = Some(o.to_string());
        }
        eab_kid = Some(b.kid.clone());
        preauthorize = rec.doc["preauthorize"].clone();
    }
    let contact = contacts(&payload)?.unwrap_or_else(|| json!([]));
    let obj = AcmeObject {
        kind: "account".into(),
        id: account_id,
        parent: None,
        lookup: Some(thumb),
        doc: json!({"status": "valid", "contact": contact, "key": req.key.to_json(),
            "created": rfc(OffsetDateTime::now_utc()), "owner": owner, "eab_kid": eab_kid,
            "preauthorize": preauthorize}),
        version: 1,
        expires_at: None,
    };
    let o2 = obj.clone();
    match ctx.db(move |s| s.acme_insert(&o2)).await {
        Ok(()) => Ok(Answer::json(StatusCode::CREATED, &account_json(ctx, &obj))
            .header("location", ctx.url(&format!("acct/{}", obj.id)))),
        // the same key raced in on another request: answer with that account
        Err(_) => {
            let t = req.key.thumbprint();
            let a = ctx
                .db(move |s| s.acme_find("account", &t))
                .await?
                .ok_or_else(|| internal("an account insert failed"))?;
            Ok(Answer::json(StatusCode::OK, &account_json(ctx, &a))
                .header("location", ctx.url(&format!("acct/{}", a.id))))
        }
    }
}

async fn account(ctx: &Ctx, req: Req, id: &str) -> Result<Answer, Problem> {
    let acct = req.account()?;
    if acct.id != id {
        return Err(unauthorized("an account may only read or change itself"));
    }
    let mut a = acct.clone();
    if !req.jws.is_post_as_get() {
        let payload = req.jws.json()?;
        let contact = contacts(&payload)?;
        let deactivate = match payload.get("status") {
            None => false,
            Some(s) if s == "deactivated" => true,
            Some(s) => {
                return Err(malformed(format!(
                    "an account's status cannot be set to {s}"
                )))
            }
        };
        a = modify(ctx, "account", id, move |o| {
            if let Some(c) = &contact {
                o.doc["contact"] = c.clone();
            }
            if deactivate {
                o.doc["status"] = "deactivated".into();
            }
            true
        })
        .await?;
    }
    Ok(Answer::json(StatusCode::OK, &account_json(ctx, &a)))
}

fn account_url(ctx: &Ctx, a: &AcmeObject) -> String {
    ctx.url(&format!("acct/{}", a.id))
}

async fn new_order(ctx: &Ctx, req: Req) -> Result<Answer, Problem> {
    let acct = req.account()?.clone();
    let payload = req.jws.json()?;
    let ids = payload["identifiers"]
        .as_array()
        .filter(|l| !l.is_empty() && l.len() <= MAX_IDENTIFIERS)
        .ok_or_else(|| {
            malformed(format!(
                "identifiers must be a list of 1 to {MAX_IDENTIFIERS} identifiers"
            ))
        })?;
    let mut names: Vec<String> = Vec::new();
    for i in ids {
        if i["type"] != "dns" {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "unsupportedIdentifier",
                format!("identifier {i} is not of type dns: only DNS names are certified here"),
            ));
        }
        let name = i["value"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let refuse = |why: String| problem(StatusCode::BAD_REQUEST, "rejectedIdentifier", why);
        if name.is_empty() || name.starts_with("*.") || name.contains('*') {
            return Err(refuse(format!(
                "{name:?}: wildcard and empty names are not issued by this directory"
            )));
        }
        if !ctx.dir.allows(&name) {
            return Err(refuse(format!(
                "{name} is not allowed in ACME directory {:?} (allow = {:?})",
                ctx.dir.name, ctx.dir.allow
            )));
        }
        // the name policy and constraints: in memory, no thread hand-off needed
        if let Err(e) = ctx.state.ca.check_dns_name(&name) {
            return Err(refuse(format!("{name}: {e}")));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let replaces = match payload.get("replaces") {
        Some(v) => ari::check_replaces(ctx, &acct, v, &names).await?,
        None => Value::Null,
    };
    let now = OffsetDateTime::now_utc();
    let expires = now + ORDER_TTL;
    let order_id = new_id()?;
    let thumb = req.key.thumbprint();
    let mut objs = Vec::new();
    let mut authz_ids = Vec::new();
    let mut preauthorized = Vec::new();
    for name in &names {
        let authz_id = new_id()?;
        if let Some(glob) = preauth::glob_for(&acct, name) {
            objs.push(AcmeObject {
                kind: "authz".into(),
                id: authz_id.clone(),
                parent: Some(acct.id.clone()),
                lookup: None,
                doc: json!({"status": "valid", "name": name, "expires": rfc(expires),
                    "challenges": [], "order": order_id, "preauthorized": glob}),
                version: 1,
                expires_at: Some(expires + KEEP),
            });
            preauthorized.push((authz_id.clone(), name.clone(), glob));
            authz_ids.push(authz_id);
            continue;
        }
        let mut chall_ids = Vec::new();
        let mut kinds = vec![Kind::Http01, Kind::TlsAlpn01];
        if ctx.dir.dns_resolver.is_some() {
            kinds.push(Kind::Dns01);
        }
        for kind in kinds {
            let cid = new_id()?;
            objs.push(AcmeObject {
                kind: "challenge".into(),
                id: cid.clone(),
                parent: Some(authz_id.clone()),
                lookup: None,
                doc: json!({"type": kind.name(), "status": "pending", "token": new_token()?,
                    "thumbprint": thumb, "name": name, "authz": authz_id, "account": acct.id}),
                version: 1,
                expires_at: Some(expires + KEEP),
            });
            chall_ids.push(cid);
        }
        objs.push(AcmeObject {
            kind: "authz".into(),
            id: authz_id.clone(),
            parent: Some(acct.id.clone()),
            lookup: None,
            doc: json!({"status": "pending", "name": name, "expires": rfc(expires),
                "challenges": chall_ids, "order": order_id}),
            version: 1,
            expires_at: Some(expires + KEEP),
        });
        authz_ids.push(authz_id);
    }
    let order = AcmeObject {
        kind: "order".into(),
        id: order_id.clone(),
        parent: Some(acct.id.clone()),
        lookup: None,
        doc: json!({"status": "pending", "expires": rfc(expires), "names": names,
            "authorizations": authz_ids, "replaces": replaces}),
        version: 1,
        expires_at: Some(expires + KEEP),
    };
    objs.push(order.clone());
    ctx.tx(move |s| objs.iter().try_for_each(|o| s.insert(o)))
        .await?;
    preauth::audit(ctx, &acct, &order_id, preauthorized).await?;
    Ok(Answer::json(StatusCode::CREATED, &order_json(ctx, &order))
        .header("location", ctx.url(&format!("order/{order_id}"))))
}

fn order_json(ctx: &Ctx, o: &AcmeObject) -> Value {
    let ids: Vec<Value> = o.doc["names"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|n| json!({"type": "dns", "value": n}))
                .collect()
        })
        .unwrap_or_default();
    let authz: Vec<String> = o.doc["authorizations"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(|a| ctx.url(&format!("authz/{a}")))
                .collect()
        })
        .unwrap_or_default();
    let mut v = json!({
        "status": o.doc["status"],
        "expires": o.doc["expires"],
        "identifiers": ids,
        "authorizations": authz,
        "finalize": ctx.url(&format!("finalize/{}", o.id)),
    });
    if let Some(c) = o.doc["certificate"].as_str() {
        v["certificate"] = ctx.url(&format!("cert/{c}")).into();
    }
    if !o.doc["error"].is_null() {
        v["error"] = o.doc["error"].clone();
    }
    if let Some(r) = o.doc["replaces"]["id"].as_str() {
        v["replaces"] = r.into();
    }
    v
}

/// Where a pending order goes from its authorizations: `invalid` (with the failed
/// authorization's error) when one is invalid or the order expired, `ready` when all are
/// valid; None while it waits (or is no longer pending).
fn order_moves_on(o: &AcmeObject, authzs: &[AcmeObject]) -> Option<(&'static str, Value)> {
    if o.doc["status"] != "pending" {
        return None;
    }
    let mut all_valid = true;
    let mut failed = None;
    for az in authzs {
        match az.doc["status"].as_str() {
            Some("valid") => {}
            Some("invalid") => {
                failed = Some(az.doc["error"].clone());
                all_valid = false;
            }
            _ => all_valid = false,
        }
    }
    let expired = OffsetDateTime::parse(o.doc["expires"].as_str().unwrap_or_default(), &Rfc3339)
        .map(|t| t <= OffsetDateTime::now_utc())
        .unwrap_or(false);
    if failed.is_some() || expired {
        Some(("invalid", failed.unwrap_or(Value::Null)))
    } else if all_valid {
        Some(("ready", Value::Null))
    } else {
        None
    }
}

/// `f` for [`modify`]: a pending order moves to `next` (with `err` when there is one).
fn move_order(next: &'static str, err: Value) -> impl Fn(&mut AcmeObject) -> bool {
    move |o| {
        if o.doc["status"] != "pending" {
            return false;
        }
        o.doc["status"] = next.into();
        if !err.is_null() {
            o.doc["error"] = err.clone();
        }
        true
    }
}

/// Moves an order on from its authorizations, in the caller's transaction: what a
/// validation does once it decided the order's last authorization.
fn advance_order(s: &mut AcmeTx<'_>, id: &str) -> twoway_store::Result<()> {
    let Some(o) = s.get("order", id)? else {
        return Ok(());
    };
    if o.doc["status"] != "pending" {
        return Ok(());
    }
    let mut authzs = Vec::new();
    for a in ids_in(&o.doc["authorizations"]) {
        match s.get("authz", &a)? {
            Some(az) => authzs.push(az),
            None => return Ok(()),
        }
    }
    if let Some((next, err)) = order_moves_on(&o, &authzs) {
        let f = move_order(next, err);
        s.modify("order", id, &mut |o| f(o))?;
    }
    Ok(())
}

/// Reads an order (or takes what the request's authentication read, `pre`) and moves it
/// on from its authorizations: `pending` becomes `ready` when all are valid, `invalid`
/// when one is invalid (or it expired).
async fn load_order(
    ctx: &Ctx,
    pre: Option<Loaded>,
    id: &str,
    acct: &AcmeObject,
) -> Result<AcmeObject, Problem> {
    let (o, authzs) = ctx
        .get_with(pre, "order", id, "authorizations", "authz")
        .await?;
    if o.parent.as_deref() != Some(acct.id.as_str()) {
        return Err(unauthorized("this order belongs to another account"));
    }
    match order_moves_on(&o, &authzs) {
        None => Ok(o),
        Some((next, err)) => modify(ctx, "order", id, move_order(next, err)).await,
    }
}

async fn order(ctx: &Ctx, mut req: Req, id: &str) -> Result<Answer, Problem> {
    let pre = req.pre.take();
    let acct = req.account()?;
    let o = load_order(ctx, pre, id, acct).await?;
    let mut a = Answer::json(StatusCode::OK, &order_json(ctx, &o));
    if o.doc["status"] == "processing" {
        a = a.header("retry-after", RETRY_AFTER_SECS.into());
    }
    Ok(a)
}

async fn orders(ctx: &Ctx, req: Req, id: &str) -> Result<Answer, Problem> {
    let acct = req.account()?;
    if acct.id != id {
        return Err(unauthorized("an account may only list its own orders"));
    }
    let i = id.to_string();
    let list = ctx.tx(move |s| s.children("order", &i)).await?;
    let urls: Vec<String> = list
        .iter()
        .filter(|o| o.doc["status"] != "invalid")
        .map(|o| ctx.url(&format!("order/{}", o.id)))
        .collect();
    Ok(Answer::json(StatusCode::OK, &json!({"orders": urls})))
}

fn challenge_json(ctx: &Ctx, c: &AcmeObject) -> Value {
    let mut v = json!({
        "type": c.doc["type"],
        "url": ctx.url(&format!("chall/{}", c.id)),
        "status": c.doc["status"],
        "token": c.doc["token"],
    });
    for k in ["validated", "error", "validationRecord"] {
        if !c.doc[k].is_null() {
            v[k] = c.doc[k].clone();
        }
    }
    v
}

async fn authz(ctx: &Ctx, mut req: Req, id: &str) -> Result<Answer, Problem> {
    let pre = req.pre.take();
    let acct = req.account()?;
    let (mut az, challenges) = ctx
        .get_with(pre, "authz", id, "challenges", "challenge")
        .await?;
    if az.parent.as_deref() != Some(acct.id.as_str()) {
        return Err(unauthorized(
            "this authorization belongs to another account",
        ));
    }
    if !req.jws.is_post_as_get() {
        let p = req.jws.json()?;
        if p["status"] != "deactivated" {
            return Err(malformed("an authorization can only be deactivated"));
        }
        az = modify(ctx, "authz", id, |o| {
            o.doc["status"] = "deactivated".into();
            true
        })
        .await?;
    }
    let mut challs = Vec::new();
    for c in challenges {
        // once valid, only the challenge that validated it is listed
        if az.doc["status"] == "valid" && c.doc["status"] != "valid" {
            continue;
        }
        challs.push(challenge_json(ctx, &c));
    }
    Ok(Answer::json(
        StatusCode::OK,
        &json!({
            "identifier": {"type": "dns", "value": az.doc["name"]},
            "status": az.doc["status"],
            "expires": az.doc["expires"],
            "challenges": challs,
        }),
    ))
}

async fn chall(ctx: &Ctx, mut req: Req, id: &str) -> Result<Answer, Problem> {
    let pre = req.pre.take();
    let acct = req.account()?;
    let (c, mut up_authz) = ctx.get_with(pre, "challenge", id, "authz", "authz").await?;
    if c.doc["account"] != acct.id.as_str() {
        return Err(unauthorized("this challenge belongs to another account"));
    }
    let authz_id = c.doc["authz"].as_str().unwrap_or_default().to_string();
    let up = format!("<{}>;rel=\"up\"", ctx.url(&format!("authz/{authz_id}")));
    let c = if req.jws.is_post_as_get() {
        c
    } else {
        // `{}`: the client is ready; start the validation once, while the authorization
        // is still pending (a deactivated or decided one is answered as it is)
        let az = up_authz.pop().ok_or_else(|| not_found("authz"))?;
        if az.doc["status"] != "pending" {
            c
        } else {
            let thumb = req.key.thumbprint();
            let (started, mine) = change(ctx, "challenge", id, move |o| {
                if o.doc["status"] != "pending" {
                    return false;
                }
                o.doc["status"] = "processing".into();
                // the account's key now: it may have changed since the order (keyChange)
                o.doc["thumbprint"] = thumb.clone().into();
                true
            })
            .await?;
            if mine {
                // answer with the outcome when the validation is quick, else `processing`
                let job = spawn_validation(ctx, started.clone());
                match tokio::time::timeout(INLINE_VALIDATION, job).await {
                    Ok(Ok(Some(done))) => done,
                    _ => started,
                }
            } else {
                started
            }
        }
    };
    let mut a = Answer::json(StatusCode::OK, &challenge_json(ctx, &c)).header("link", up);
    if c.doc["status"] == "processing" {
        a = a.header("retry-after", RETRY_AFTER_SECS.into());
    }
    Ok(a)
}

/// Validates a challenge in the background and records the outcome in the challenge and
/// its authorization; the task answers the challenge as recorded (None when recording
/// failed).
fn spawn_validation(ctx: &Ctx, c: AcmeObject) -> tokio::task::JoinHandle<Option<AcmeObject>> {
    let ctx2 = Ctx {
        state: ctx.state.clone(),
        dir: ctx.dir.clone(),
        base: ctx.base.clone(),
        nonce: std::sync::Mutex::new(None),
    };
    tokio::spawn(async move {
        let ctx = ctx2;
        let kind = Kind::parse(c.doc["type"].as_str().unwrap_or_default());
        let name = c.doc["name"].as_str().unwrap_or_default().to_string();
        let key_auth = format!(
            "{}.{}",
            c.doc["token"].as_str().unwrap_or_default(),
            c.doc["thumbprint"].as_str().unwrap_or_default()
        );
        let outcome = match kind {
            Some(Kind::Http01) => {
                validate::http01(&ctx.dir, &name, &c.doc["token"], &key_auth).await
            }
            Some(Kind::TlsAlpn01) => validate::tls_alpn01(&ctx.dir, &name, &key_auth).await,
            Some(Kind::Dns01) => validate::dns01(&ctx.dir, &name, &key_auth).await,
            _ => Err((
                "malformed",
                "this challenge type is not validated here".to_string(),
                json!({}),
            )),
        };
        let now = rfc(OffsetDateTime::now_utc());
        let (status, err, record) = match outcome {
            Ok(record) => ("valid", Value::Null, record),
            Err((kind, detail, record)) => {
                ctx.state.metrics.error(&format!("acme:{kind}"));
                (
                    "invalid",
                    problem_json(kind, &format!("{name}: {detail}"), 403),
                    record,
                )
            }
        };
        let id = c.id.clone();
        let authz = c.doc["authz"].as_str().unwrap_or_default().to_string();
        // the challenge, its authorization and (with its last authorization) the order,
        // in one transaction
        let res = ctx
            .tx(move |s| {
                let Some((recorded, _)) = s.modify("challenge", &id, &mut |o| {
                    o.doc["status"] = status.into();
                    o.doc["validationRecord"] = json!([record]);
                    if status == "valid" {
                        o.doc["validated"] = now.clone().into();
                    } else {
                        o.doc["error"] = err.clone();
                    }
                    true
                })?
                else {
                    return Ok(None);
                };
                let decided = s.modify("authz", &authz, &mut |o| {
                    if o.doc["status"] != "pending" {
                        return false;
                    }
                    o.doc["status"] = status.into();
                    if !err.is_null() {
                        o.doc["error"] = err.clone();
                    }
                    true
                })?;
                if let Some((az, true)) = decided {
                    if let Some(order) = az.doc["order"].as_str() {
                        advance_order(s, order)?;
                    }
                }
                Ok(Some(recorded))
            })
            .await;
        res.ok().flatten()
    })
}

async fn finalize(ctx: &Ctx, mut req: Req, id: &str) -> Result<Answer, Problem> {
    let pre = req.pre.take();
    let acct = req.account()?.clone();
    let o = load_order(ctx, pre, id, &acct).await?;
    if o.doc["status"] != "ready" {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "orderNotReady",
            format!(
                "the order is {}, not ready: every authorization must be valid before finalize",
                o.doc["status"]
            ),
        ));
    }
    let payload = req.jws.json()?;
    let csr = payload["csr"]
        .as_str()
        .and_then(|c| B64.decode(c).ok())
        .ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                "badCSR",
                "csr must be base64url DER",
            )
        })?;
    let replaces = ari::replaced(ctx, &o).await?;
    // claim the order (ready → processing) so it is issued once
    let (_, claimed) = change(ctx, "order", id, |o| {
        if o.doc["status"] != "ready" {
            return false;
        }
        o.doc["status"] = "processing".into();
        true
    })
    .await?;
    if !claimed {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "orderNotReady",
            "the order is being finalized by another request",
        ));
    }
    let names: Vec<String> = o.doc["names"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let account = account_url(ctx, &acct);
    let order_url = ctx.url(&format!("order/{id}"));
    let dir = ctx.dir.clone();
    let owner = acct.doc["owner"]
        .as_str()
        .map(str::to_string)
        .or_else(|| dir.owner.clone());
    let actor = format!("acme:{}:{}", dir.name, acct.id);
    let ca = ctx.state.ca.clone();
    let (a2, o2) = (account.clone(), order_url.clone());
    let sign = move || {
        ca.prepare_acme(
            &csr,
            &AcmeIssue {
                directory: &dir,
                names: &names,
                owner,
                account: &a2,
                order: &o2,
                actor,
                replaces: replaces.as_ref(),
            },
        )
    };
    // A key in memory signs in well under a millisecond (a CSR check and one signature):
    // here, rather than pay two thread hand-offs. A key in a token may take as long as the
    // token does, so that goes to the blocking pool.
    let prepared = if ctx.state.ca.signs_in_memory() {
        sign()
    } else {
        blocking(sign).await.map_err(internal)?
    };
    let fail = |p: Problem| async {
        let err = problem_json(p.kind, &p.detail, p.status.as_u16());
        // a refused CSR leaves the order ready for a better one; anything else fails it
        let back = if p.kind == "badCSR" {
            "ready"
        } else {
            "invalid"
        };
        let _ = modify(ctx, "order", id, move |o| {
            o.doc["status"] = back.into();
            if back == "invalid" {
                o.doc["error"] = err.clone();
            }
            true
        })
        .await;
        Err(p)
    };
    let outcome = match prepared {
        Ok(Ok(out)) => out,
        Ok(Err(bad)) => return fail(problem(StatusCode::BAD_REQUEST, "badCSR", bad.0)).await,
        Err(e) => {
            let p = match e.kind() {
                twoway_ca::ErrorKind::BadInput => {
                    problem(StatusCode::BAD_REQUEST, "badCSR", e.to_string())
                }
                _ => internal(e),
            };
            return fail(p).await;
        }
    };
    let issued = match ctx.state.committer.record(outcome).await {
        Ok(i) => i,
        Err(twoway_ca::Error::Store(twoway_store::Error::AlreadyRevoked(_))) => {
            let p = problem(
                StatusCode::CONFLICT,
                "alreadyReplaced",
                "the certificate this order replaces was replaced by another order meanwhile",
            );
            return fail(p).await;
        }
        Err(e) => return fail(internal(e)).await,
    };
    ctx.state.metrics.issued("acme");
    let fp = issued.info.fingerprint.clone();
    let done = modify(ctx, "order", id, move |o| {
        o.doc["status"] = "valid".into();
        o.doc["certificate"] = fp.clone().into();
        true
    })
    .await?;
    Ok(Answer::json(StatusCode::OK, &order_json(ctx, &done)).header("location", order_url))
}

/// Forgets expired nonces and ACME objects (the server's maintenance calls it).
pub(crate) fn purge(store: &dyn Store) {
    if let Err(e) = store.acme_purge(OffsetDateTime::now_utc()) {
        tracing::warn!(error = %e, "purging expired ACME state failed");
    }
}

/// How long a validation may take in all.
pub(crate) const VALIDATION_TIMEOUT: StdDuration = StdDuration::from_secs(10);
