//! HTTP mode: HTTP/1.x and HTTP/2 from clients, per-route authorization, identity headers,
//! HTTP/1.1 keep-alive or HTTP/2 (`backend_protocol`) to the backend.
//!
//! HTTP/1.x client connections to an HTTP/1.1 backend are served by [`h1`] (no hyper); this
//! module sniffs the protocol, counts bytes and serves HTTP/2 clients with hyper, and
//! HTTP/1.x clients too when the backend speaks HTTP/2 ([`upstream`]).
//!
//! gRPC is HTTP/2 with trailers: requests and responses stream through hyper both ways,
//! trailers included, `te: trailers` and `grpc-timeout` pass on, and a client's reset
//! resets the backend's stream. A gRPC call the routes deny is answered in gRPC's own
//! terms: HTTP 200 with `grpc-status: 7` (PERMISSION_DENIED) and no body.
//!
//! HTTP/2 backend connections: every request of an HTTP/2 client connection goes through
//! one shared HTTP/1.1 keep-alive pool whose connections are driven by tasks of their own.
//! hyper runs each HTTP/2 stream on a task of its own, so nothing of a request may depend on
//! the client connection's task being polled: that task wakes only for client bytes.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use twoway_tls::{Decision, PeerIdentity, Reloadable};

use crate::backend::BackendConnector;
use crate::config::{Backend, BackendProtocol};
use crate::copy::ReadReady;
use crate::metrics::ListenerMetrics;
use crate::state::ServerState;

mod h1;
pub(crate) mod target;
pub(crate) mod upstream;

/// How long an HTTP/1.x connection must be silent, with no request in flight, before it is
/// parked (its buffers released, its backend connection handed to the pool).
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Response body: the backend's, or one of our short answers.
pub type Answer = Either<Incoming, Full<Bytes>>;

/// An HTTP/2 response body that keeps its connection busy in the listener's table until it
/// has been sent (or the stream is reset): a connection with a download in progress is
/// never shed.
pub struct Body {
    inner: Answer,
    _busy: twoway_net::Busy,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = <Answer as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static X_CLIENT_IDENTITY: HeaderName = HeaderName::from_static("x-client-identity");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Per-listener HTTP machinery.
pub struct HttpCtx {
    name: String,
    /// The shared keep-alive pool of HTTP/1.1 backend connections (HTTP/2 clients).
    pool: Client<BackendConnector, Incoming>,
    backend: Backend,
    authority: http::uri::Authority,
    host: HeaderValue,
    metrics: Arc<ListenerMetrics>,
    state: Arc<Reloadable<ServerState>>,
    /// Distinguishes listeners in the per-thread pool of the HTTP/1.x path.
    id: u64,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// HTTP/2 to the backend (`backend_protocol = "h2c"` or `"h2"`); `None`: HTTP/1.1.
    h2_backend: Option<upstream::H2Upstream>,
    /// HTTP/1.x clients when the backend speaks HTTP/2.
    h1: hyper::server::conn::http1::Builder,
}

impl std::fmt::Debug for HttpCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCtx").field("name", &self.name).finish()
    }
}

impl HttpCtx {
    /// Builds the backend pool and the server connection builder.
    pub fn new(
        name: &str,
        backend: &Backend,
        protocol: &BackendProtocol,
        metrics: Arc<ListenerMetrics>,
        state: Arc<Reloadable<ServerState>>,
    ) -> Result<Self, crate::ProxyError> {
        let authority = backend.authority().parse().map_err(|_| {
            crate::ProxyError::Config(format!(
                "listener {name:?}: backend {:?} is not a valid HTTP authority",
                backend.authority()
            ))
        })?;
        let host = HeaderValue::from_str(backend.authority()).map_err(|_| {
            crate::ProxyError::Config(format!(
                "listener {name:?}: backend {:?} is not a valid Host header",
                backend.authority()
            ))
        })?;
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .pool_timer(TokioTimer::new())
            .build(BackendConnector::new(backend.clone()));
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new()).max_concurrent_streams(256);
        if !protocol.is_h2() {
            // RFC 8441: WebSockets from HTTP/2 clients, relayed to an HTTP/1.1 backend
            h2.enable_connect_protocol();
        }
        let id = NEXT_ID.fetch_add(1, Relaxed);
        let h2_backend = if protocol.is_h2() {
            Some(upstream::H2Upstream::new(name, id, backend, protocol)?)
        } else {
            None
        };
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        Ok(Self {
            name: name.to_owned(),
            pool,
            backend: backend.clone(),
            authority,
            host,
            metrics,
            state,
            id,
            h2,
            h2_backend,
            h1,
        })
    }
}

/// The verified peer of one connection, with its headers rendered once.
#[derive(Debug)]
pub struct Peer {
    /// Identity from the client certificate.
    pub id: PeerIdentity,
    /// Client address.
    pub addr: SocketAddr,
    xfcc: HeaderValue,
    identity: HeaderValue,
    addr_value: HeaderValue,
}

impl Peer {
    /// Renders the headers for `id`.
    pub fn new(id: PeerIdentity, addr: SocketAddr) -> Self {
        let value =
            |s: &str| HeaderValue::from_bytes(s.as_bytes()).unwrap_or(HeaderValue::from_static(""));
        Self {
            xfcc: value(&id.xfcc()),
            identity: value(id.primary()),
            addr_value: value(&addr.ip().to_string()),
            id,
            addr,
        }
    }
}

fn small(status: StatusCode, text: &'static str) -> Response<Answer> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A gRPC request (`content-type: application/grpc`, `application/grpc+proto`, …).
fn is_grpc(h: &http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The most of a refused request's body read before the answer.
const DRAIN_LIMIT: usize = 64 * 1024;
/// The longest a refused request's body is waited for.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads and drops what is left of a refused request's body, up to [`DRAIN_LIMIT`] bytes
/// and [`DRAIN_TIME`]: an HTTP/2 client still sending its body when the answer ends the
/// stream sees the stream reset instead of the answer (curl: "Stream error in the HTTP/2
/// framing layer"). Past either bound the answer goes anyway.
async fn drain(mut body: Incoming) {
    use http_body_util::BodyExt as _;
    let work = async {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > DRAIN_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, work).await;
}

/// gRPC's answer to a denied call: trailers-only (HTTP 200, `grpc-status: 7`
/// PERMISSION_DENIED, a `grpc-message`, no body), which every gRPC client reports as that
/// status instead of a transport failure.
fn grpc_denied() -> Response<Answer> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from_static("7"),
    );
    h.insert(
        HeaderName::from_static("grpc-message"),
        HeaderValue::from_static("denied by the proxy's route rules for this client identity"),
    );
    r
}

fn bad_request(why: &'static str) -> Response<Answer> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{why}\n")))));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The origin-form target for the backend of an HTTP/2 request (the normalized path and the
/// query), after the checks the HTTP/1.x path makes too: an upper-case method, one `Host`
/// that agrees with `:authority`.
fn request_target(parts: &http::request::Parts) -> Result<PathAndQuery, &'static str> {
    if !target::method_ok(parts.method.as_str()) {
        return Err("the method must be an upper-case token");
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if let (Some(a), Some(h)) = (parts.uri.authority(), host) {
        if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) {
            return Err("the Host header differs from the request target's authority");
        }
    }
    let path = target::normalize_path(parts.uri.path()).map_err(|e| e.as_str())?;
    let pq = match (path, parts.uri.query(), parts.uri.path_and_query()) {
        (std::borrow::Cow::Borrowed(_), _, Some(pq)) => return Ok(pq.clone()),
        (path, None, _) => path.into_owned(),
        (path, Some(q), _) => format!("{path}?{q}"),
    };
    PathAndQuery::from_maybe_shared(Bytes::from(pq)).map_err(|_| "bad request target")
}

fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(n);
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// State shared by one client connection's serving loop and its requests.
struct ConnState {
    ctx: Arc<HttpCtx>,
    peer: Peer,
    /// The connection's place in the listener's table: busy while a request is served.
    net: twoway_net::Conn,
    /// `now_millis()` of the last byte moved on the client connection.
    last: AtomicU64,
    /// Bytes read from and written to the client (TLS plaintext), for the metrics.
    from_client: AtomicU64,
    to_client: AtomicU64,
}

impl ConnState {
    /// Records an answered request: the status in the metrics and the access log line
    /// (`decision`: allow, deny or bad request; `reason` says what was wrong, if anything).
    fn access(
        &self,
        method: &http::Method,
        path: &str,
        decision: &'static str,
        reason: &str,
        status: u16,
        start: Instant,
    ) {
        self.ctx.metrics.http_request(status, start.elapsed());
        tracing::info!(
            target: "twoway::access",
            listener = %self.ctx.name,
            peer = %self.peer.addr,
            identity = self.peer.id.primary(),
            method = %method,
            path,
            decision,
            reason,
            status,
        );
    }
}

/// `err` and its sources, joined with ": ".
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// Sends `req` to the backend: over HTTP/2 when it speaks it (the URI is absolute already),
/// else through the shared HTTP/1.1 pool, which wants an absolute URI.
async fn forward(st: &ConnState, req: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
    if let Some(up) = &st.ctx.h2_backend {
        return up.request(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let mut up = parts.uri.into_parts();
    up.scheme = Some(Scheme::HTTP);
    up.authority = Some(st.ctx.authority.clone());
    parts.uri = http::Uri::from_parts(up)?;
    Ok(st
        .ctx
        .pool
        .request(Request::from_parts(parts, body))
        .await?)
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<ConnState>,
) -> Result<Response<Answer>, Infallible> {
    let start = Instant::now();
    let ctx = &st.ctx;
    let peer = &st.peer;
    let (mut parts, body) = req.into_parts();
    let websocket = match connect_kind(&parts) {
        Connect::No => false,
        Connect::WebSocket => true,
        Connect::Other(why) => {
            st.access(
                &parts.method,
                parts.uri.path(),
                "bad request",
                why.trim_end(),
                501,
                start,
            );
            return Ok(small(StatusCode::NOT_IMPLEMENTED, why));
        }
    };
    let pq = match request_target(&parts) {
        Ok(x) => x,
        Err(why) => {
            st.access(
                &parts.method,
                parts.uri.path(),
                "bad request",
                why,
                400,
                start,
            );
            return Ok(bad_request(why));
        }
    };
    let state = ctx.state.load();
    let path = pq.path();
    let decision = state.routes.decide(&parts.method, path, &peer.id);
    let trusted = state.routes.trusts(peer.addr.ip());
    drop(state);
    if let Decision::Denied = decision {
        ctx.metrics.http_denied();
        drain(body).await;
        if is_grpc(&parts.headers) {
            st.access(
                &parts.method,
                path,
                "deny",
                "grpc PERMISSION_DENIED",
                200,
                start,
            );
            return Ok(grpc_denied());
        }
        st.access(&parts.method, path, "deny", "", 403, start);
        return Ok(small(StatusCode::FORBIDDEN, "forbidden\n"));
    }
    let h = &mut parts.headers;
    // `te: trailers` is the one TE an HTTP/2 request may carry (gRPC servers want it)
    let te_trailers = h.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    strip_hop_by_hop(h);
    let spoofable: Vec<HeaderName> = h
        .keys()
        .filter(|n| match target::classify(n.as_str().as_bytes()) {
            target::Special::Other => false,
            target::Special::Forwarded => !trusted,
            target::Special::Identity => true,
        })
        .cloned()
        .collect();
    for n in spoofable {
        h.remove(n);
    }
    h.insert(XFCC.clone(), peer.xfcc.clone());
    h.insert(X_CLIENT_IDENTITY.clone(), peer.identity.clone());
    h.append(X_FORWARDED_FOR.clone(), peer.addr_value.clone());
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    if !h.contains_key(header::HOST) {
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| ctx.host.clone());
        h.insert(header::HOST, host);
    }
    // the normalized path and the query (a cheap clone: the access log names the path that
    // was authorized)
    let logged = pq.clone();
    let client_version = parts.version;
    if let Some(up) = &ctx.h2_backend {
        // HTTP/2: an absolute URI (`:scheme`, `:authority` from the Host), no Host field
        let host = h.remove(header::HOST);
        let authority = host
            .and_then(|v| http::uri::Authority::try_from(v.as_bytes()).ok())
            .unwrap_or_else(|| ctx.authority.clone());
        if te_trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let mut up_parts = http::uri::Parts::default();
        up_parts.scheme = Some(up.scheme());
        up_parts.authority = Some(authority);
        up_parts.path_and_query = Some(pq);
        parts.uri = match http::Uri::from_parts(up_parts) {
            Ok(u) => u,
            Err(_) => {
                st.access(
                    &parts.method,
                    logged.path(),
                    "bad request",
                    "bad authority",
                    400,
                    start,
                );
                return Ok(bad_request("bad request target"));
            }
        };
        parts.version = http::Version::HTTP_2;
    } else {
        // origin-form for the HTTP/1.1 backend
        parts.uri = http::Uri::from(pq);
        parts.version = http::Version::HTTP_11;
    }
    if websocket {
        return Ok(websocket_over_h2(st.clone(), parts, body, logged, start).await);
    }
    let method = parts.method.clone();
    match forward(&st, Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            rparts.version = client_version;
            let status = rparts.status.as_u16();
            st.access(&method, logged.path(), "allow", "", status, start);
            Ok(Response::from_parts(rparts, Either::Left(rbody)))
        }
        Err(e) => Ok(upstream_failed(&st, e.as_ref(), start)),
    }
}

/// The 502 for a request the backend did not answer, counted and logged.
fn upstream_failed(
    st: &ConnState,
    e: &(dyn StdError + Send + Sync + 'static),
    start: Instant,
) -> Response<Answer> {
    let (ctx, peer) = (&st.ctx, &st.peer);
    ctx.metrics.upstream_error();
    let reason = if upstream::find_mismatch(e).is_some() {
        ctx.metrics.upstream_mismatch();
        "protocol_mismatch"
    } else {
        "other"
    };
    ctx.metrics.http_request(502, start.elapsed());
    tracing::warn!(
        listener = %ctx.name,
        peer = %peer.addr,
        identity = peer.id.primary(),
        error = %chain(e),
        reason,
        origin = "upstream",
        retryable = true,
        "backend request failed"
    );
    small(StatusCode::BAD_GATEWAY, "bad gateway\n")
}

/// What a `CONNECT` request asks for.
enum Connect {
    /// Not a `CONNECT`.
    No,
    /// RFC 8441's extended `CONNECT` with `:protocol = websocket`.
    WebSocket,
    /// Anything else: refused with 501 and this reason.
    Other(&'static str),
}

fn connect_kind(parts: &http::request::Parts) -> Connect {
    if parts.method != http::Method::CONNECT {
        return Connect::No;
    }
    match parts.extensions.get::<hyper::ext::Protocol>() {
        Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => Connect::WebSocket,
        Some(_) => Connect::Other("only the websocket protocol may be used with an extended CONNECT\n"),
        None => Connect::Other("CONNECT tunnels are not offered; WebSockets over HTTP/2 use an extended CONNECT (RFC 8441)\n"),
    }
}

/// The GUID RFC 6455 §1.3 appends to the key to form `Sec-WebSocket-Accept`.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key ‖ GUID)).
fn ws_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// RFC 8441: an HTTP/2 client's extended `CONNECT` (`:protocol = websocket`), already
/// authorized and with its identity headers set, becomes an RFC 6455 upgrade to the
/// HTTP/1.1 backend (`GET`, `Upgrade: websocket`, a fresh `Sec-WebSocket-Key`). When the
/// backend switches protocols (and its `Sec-WebSocket-Accept` matches the key), the client
/// gets `200` and the HTTP/2 stream and the backend connection are relayed as bytes,
/// half-closes included; any other answer of the backend goes to the client as it is.
async fn websocket_over_h2(
    st: Arc<ConnState>,
    mut parts: http::request::Parts,
    body: Incoming,
    logged: PathAndQuery,
    start: Instant,
) -> Response<Answer> {
    use base64::Engine as _;
    let method = parts.method.clone();
    let mut nonce = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut nonce).is_err() {
        st.access(&method, logged.path(), "allow", "no randomness", 500, start);
        return small(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
    }
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let client_up = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    parts.extensions.remove::<hyper::ext::Protocol>();
    parts.method = http::Method::GET;
    let h = &mut parts.headers;
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(SEC_WEBSOCKET_KEY.clone(), v);
    }
    if !h.contains_key(&SEC_WEBSOCKET_VERSION) {
        h.insert(
            SEC_WEBSOCKET_VERSION.clone(),
            HeaderValue::from_static("13"),
        );
    }
    if st.ctx.h2_backend.is_some() {
        // not offered then (the SETTINGS say so); a client that tries anyway is told
        st.access(
            &method,
            logged.path(),
            "bad request",
            "websocket to an HTTP/2 backend",
            501,
            start,
        );
        return small(
            StatusCode::NOT_IMPLEMENTED,
            "WebSockets over HTTP/2 reach HTTP/1.1 backends only\n",
        );
    }
    let Some(client_up) = client_up else {
        st.access(
            &method,
            logged.path(),
            "bad request",
            "no stream to upgrade",
            400,
            start,
        );
        return bad_request("the CONNECT request has no stream to relay");
    };
    let mut resp = match forward(&st, Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return upstream_failed(&st, e.as_ref(), start),
    };
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // the backend's refusal (403, 426, …) reaches the client as it is; a success that
        // is not a switch would open a tunnel to nothing
        if status.is_success() {
            st.access(
                &method,
                logged.path(),
                "allow",
                "backend did not switch protocols",
                502,
                start,
            );
            return small(
                StatusCode::BAD_GATEWAY,
                "the backend did not accept the WebSocket\n",
            );
        }
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        rparts.version = http::Version::HTTP_2;
        st.access(&method, logged.path(), "allow", "", status.as_u16(), start);
        return Response::from_parts(rparts, Either::Left(rbody));
    }
    let accepted = resp
        .headers()
        .get(&SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == ws_accept(key.as_bytes()).as_bytes());
    if !accepted {
        st.ctx.metrics.upstream_error();
        tracing::warn!(
            listener = %st.ctx.name,
            peer = %st.peer.addr,
            "the backend switched to WebSocket with a wrong or missing Sec-WebSocket-Accept"
        );
        st.access(
            &method,
            logged.path(),
            "allow",
            "bad Sec-WebSocket-Accept",
            502,
            start,
        );
        return small(StatusCode::BAD_GATEWAY, "bad gateway\n");
    }
    let backend_up = hyper::upgrade::on(&mut resp);
    let mut ok = Response::new(Either::Right(Full::new(Bytes::new())));
    for n in ["sec-websocket-protocol", "sec-websocket-extensions"] {
        for v in resp.headers().get_all(n) {
            ok.headers_mut()
                .append(HeaderName::from_static(n), v.clone());
        }
    }
    let relay = st.clone();
    tokio::spawn(async move {
        // busy while the WebSocket lives: the connection is never shed under it
        let _busy = relay.net.busy();
        let (c, b) = tokio::join!(client_up, backend_up);
        let (c, b) = match (c, b) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(listener = %relay.ctx.name, error = %e, "WebSocket over HTTP/2 ended before it began");
                return;
            }
        };
        let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
            tracing::debug!(listener = %relay.ctx.name, error = %e, "WebSocket over HTTP/2 ended with an error");
        }
    });
    st.access(&method, logged.path(), "allow", "", 200, start);
    ok
}

fn now_millis() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The client stream: replays the bytes the protocol sniff read, stamps the time of the last
/// byte moved, and counts bytes both ways.
struct Io<T> {
    inner: T,
    prefix: Bytes,
    st: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.st.last.store(now_millis(), Relaxed);
            self.st.from_client.fetch_add(n as u64, Relaxed);
        }
        r
    }
}

impl<T: ReadReady> ReadReady for Io<T> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            self.inner.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.st.last.store(now_millis(), Relaxed);
                self.st.to_client.fetch_add(n as u64, Relaxed);
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.st.last.store(now_millis(), Relaxed);
                self.st.to_client.fetch_add(n as u64, Relaxed);
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The negotiated or sniffed HTTP version of a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// ALPN said `http/1.1` or `http/1.0`.
    Http1,
    /// ALPN said `h2`.
    Http2,
    /// No ALPN: look for the HTTP/2 preface.
    Sniff,
}

impl Proto {
    /// From the ALPN protocol the TLS handshake settled on.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Proto::Http2,
            Some(_) => Proto::Http1,
            None => Proto::Sniff,
        }
    }
}

/// Reads until the bytes match or rule out the HTTP/2 preface; returns them for replay.
async fn sniff<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(bool, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut have = 0;
    while have < buf.len() {
        let n = io.read(&mut buf[have..]).await?;
        if n == 0 {
            break;
        }
        have += n;
        if !H2_PREFACE.starts_with(&buf[..have]) {
            return Ok((false, Bytes::copy_from_slice(&buf[..have])));
        }
    }
    Ok((have == buf.len(), Bytes::copy_from_slice(&buf[..have])))
}

/// The per-connection hyper service; its future is boxed so that a parked connection can
/// be taken apart (`poll_without_shutdown` wants an `Unpin` future).
#[derive(Clone)]
struct Svc(Arc<ConnState>);

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // Busy (never shed) from the request head until the response body has been sent.
        let busy = self.0.net.busy();
        let st = self.0.clone();
        Box::pin(async move {
            let resp = handle(req, st).await?;
            Ok(resp.map(|b| Body {
                inner: b,
                _busy: busy,
            }))
        })
    }
}

fn service(st: &Arc<ConnState>) -> Svc {
    Svc(st.clone())
}

/// Serves HTTP on one verified TLS connection until it closes, stays idle for `idle`, or the
/// proxy drains (in-flight requests finish; HTTP/2 gets GOAWAY, HTTP/1.1 closes after the
/// current response).
pub async fn serve<IO>(
    io: IO,
    proto: Proto,
    peer: Peer,
    ctx: Arc<HttpCtx>,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
    net: twoway_net::Conn,
) where
    IO: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let st = Arc::new(ConnState {
        ctx,
        peer,
        net,
        last: AtomicU64::new(now_millis()),
        from_client: AtomicU64::new(0),
        to_client: AtomicU64::new(0),
    });
    let mut io = Io {
        inner: io,
        prefix: Bytes::new(),
        st: st.clone(),
    };
    let h2 = match proto {
        Proto::Http1 => false,
        Proto::Http2 => true,
        Proto::Sniff => match tokio::time::timeout(idle, sniff(&mut io)).await {
            Ok(Ok((h2, prefix))) => {
                io.prefix = prefix;
                h2
            }
            Ok(Err(e)) => {
                tracing::debug!(listener = %st.ctx.name, error = %e, "HTTP connection ended before a request");
                return;
            }
            Err(_) => {
                tracing::debug!(listener = %st.ctx.name, "closing idle HTTP connection");
                return;
            }
        },
    };
    if h2 {
        let conn = st.ctx.h2.serve_connection(TokioIo::new(io), service(&st));
        serve_hyper(conn, st.clone(), idle, shutdown).await
    } else if st.ctx.h2_backend.is_some() {
        let conn = st.ctx.h1.serve_connection(TokioIo::new(io), service(&st));
        serve_hyper(conn, st.clone(), idle, shutdown).await
    } else {
        h1::serve(io, st.clone(), idle, shutdown).await
    }
    st.ctx
        .metrics
        .add_bytes(st.from_client.load(Relaxed), st.to_client.load(Relaxed));
}

fn millis(idle: Duration) -> u64 {
    u64::try_from(idle.as_millis()).unwrap_or(u64::MAX)
}

/// Serves a hyper connection (HTTP/2, or HTTP/1.x in front of an HTTP/2 backend) until it
/// ends, idles out or drains.
async fn serve_hyper<C>(
    conn: C,
    st: Arc<ConnState>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = Box::pin(conn);
    let idle_ms = millis(idle);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = %st.ctx.name, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = st.net.shed(), if !draining => {
                // idle (no stream in progress): GOAWAY and close, to make room
                st.ctx.metrics.shed();
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut timer => {
                let since = now_millis().saturating_sub(st.last.load(Relaxed));
                if since >= idle_ms {
                    tracing::debug!(listener = %st.ctx.name, "closing idle HTTP connection");
                    return;
                }
                timer.as_mut().reset(Instant::now() + Duration::from_millis(idle_ms - since));
            }
        }
    }
}
