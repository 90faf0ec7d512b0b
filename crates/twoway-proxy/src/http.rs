//! HTTP mode: HTTP/1.1 and HTTP/2 from clients, pooled HTTP/1.1 keep-alive to the backend,
//! per-route authorization, identity headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use twoway_tls::{Decision, PeerIdentity, Reloadable};

use crate::backend::BackendConnector;
use crate::config::Backend;
use crate::metrics::ListenerMetrics;
use crate::state::ServerState;

/// Response body: the backend's, or one of our short answers.
pub type Body = Either<Incoming, Full<Bytes>>;

static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static X_CLIENT_IDENTITY: HeaderName = HeaderName::from_static("x-client-identity");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Per-listener HTTP machinery.
pub struct HttpCtx {
    name: String,
    client: Client<BackendConnector, Incoming>,
    authority: http::uri::Authority,
    metrics: Arc<ListenerMetrics>,
    state: Arc<Reloadable<ServerState>>,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
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
        metrics: Arc<ListenerMetrics>,
        state: Arc<Reloadable<ServerState>>,
    ) -> Result<Self, crate::ProxyError> {
        let authority = backend.authority().parse().map_err(|_| {
            crate::ProxyError::Config(format!(
                "listener {name:?}: backend {:?} is not a valid HTTP authority",
                backend.authority()
            ))
        })?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(BackendConnector::new(backend.clone()));
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256);
        Ok(Self {
            name: name.to_owned(),
            client,
            authority,
            metrics,
            state,
            builder,
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

fn small(status: StatusCode, text: &'static str) -> Response<Body> {
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

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<HttpCtx>,
    peer: Arc<Peer>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let state = ctx.state.load();
    let decision = if state.routes.routes.is_empty() {
        Decision::AllowedWithoutRules
    } else {
        match state.routes.find(&parts.method, parts.uri.path()) {
            Some(route) => route.policy.evaluate(&peer.id),
            None => Decision::Denied,
        }
    };
    if let Decision::Denied = decision {
        ctx.metrics.http_denied();
        ctx.metrics.http_request(403, start.elapsed());
        tracing::info!(
            target: "twoway::access",
            listener = %ctx.name,
            peer = %peer.addr,
            identity = peer.id.primary(),
            method = %parts.method,
            path = parts.uri.path(),
            decision = "deny",
            status = 403,
        );
        return Ok(small(StatusCode::FORBIDDEN, "forbidden\n"));
    }
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    h.remove(&XFCC);
    h.remove(&X_CLIENT_IDENTITY);
    h.insert(XFCC.clone(), peer.xfcc.clone());
    h.insert(X_CLIENT_IDENTITY.clone(), peer.identity.clone());
    h.append(X_FORWARDED_FOR.clone(), peer.addr_value.clone());
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    parts.uri = match http::Uri::builder()
        .scheme("http")
        .authority(ctx.authority.clone())
        .path_and_query(pq)
        .build()
    {
        Ok(u) => u,
        Err(_) => return Ok(small(StatusCode::BAD_REQUEST, "bad request\n")),
    };
    parts.version = http::Version::HTTP_11;
    let method = parts.method.clone();
    let req = Request::from_parts(parts, body);
    let path_for_log = req.uri().path().to_owned();
    match ctx.client.request(req).await {
        Ok(resp) => {
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            let status = rparts.status.as_u16();
            ctx.metrics.http_request(status, start.elapsed());
            tracing::info!(
                target: "twoway::access",
                listener = %ctx.name,
                peer = %peer.addr,
                identity = peer.id.primary(),
                method = %method,
                path = path_for_log,
                decision = "allow",
                status,
            );
            Ok(Response::from_parts(rparts, Either::Left(rbody)))
        }
        Err(e) => {
            ctx.metrics.upstream_error();
            ctx.metrics.http_request(502, start.elapsed());
            tracing::warn!(
                listener = %ctx.name,
                peer = %peer.addr,
                identity = peer.id.primary(),
                error = %format!("{e:#}"),
                origin = "upstream",
                "backend request failed"
            );
            Ok(small(StatusCode::BAD_GATEWAY, "bad gateway\n"))
        }
    }
}

fn now_millis() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An I/O wrapper that stamps the time of the last byte moved.
struct Tracked<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(now_millis(), Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.last.store(now_millis(), Relaxed);
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.last.store(now_millis(), Relaxed);
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves HTTP on one verified TLS connection until it closes, goes idle, or the proxy
/// drains (in-flight requests finish; HTTP/2 gets GOAWAY, HTTP/1.1 closes after the
/// current response).
pub async fn serve<IO>(
    io: IO,
    peer: Arc<Peer>,
    ctx: Arc<HttpCtx>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(AtomicU64::new(now_millis()));
    let io = Tracked {
        inner: io,
        last: last.clone(),
    };
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req| handle(req, svc_ctx.clone(), peer.clone()));
    let conn = ctx.builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = %ctx.name, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut timer => {
                let since = now_millis().saturating_sub(last.load(Relaxed));
                if since >= idle_ms {
                    tracing::debug!(listener = %ctx.name, "closing idle HTTP connection");
                    return;
                }
                timer.as_mut().reset(Instant::now() + Duration::from_millis(idle_ms - since));
            }
        }
    }
}
