//! The HTTP/1.x path: client connections that speak HTTP/1.0 or HTTP/1.1 are served here,
//! without hyper, on a backend connection of their own.
//!
//! Why not hyper here: a proxy that only edits a few headers pays hyper's full codec twice
//! per request (a server for the client, a client for the backend): header maps, URI
//! parsing, body channels and re-encoding. This path parses the request head in place with
//! `httparse`, writes the backend's head from the client's bytes (hop-by-hop and identity
//! headers removed, ours added) into one reused buffer, and relays bodies by count (or
//! through a chunked-coding tracker) without decoding them. HTTP/2 stays on hyper.
//!
//! One request at a time per connection: pipelined requests wait in the read buffer until
//! the response before them is complete. The request body is forwarded before the response
//! is read. `CONNECT` gets 405.
//!
//! `Upgrade` (WebSocket, RFC 6455): a `GET` without a body that lists `upgrade` in
//! `Connection` is authorized like any request on its route, sent to the backend with its
//! `Upgrade` field, and when the backend answers `101 Switching Protocols` the two
//! connections are relayed as bytes (half-close passed on, the listener's idle timeout)
//! until both sides close. `h2c` is never passed on (RFC 9113 §3.1: not over TLS). Any other
//! request's `Upgrade` is removed as hop-by-hop, and a 101 the client did not ask for is a
//! bad response (502).
//!
//! Backend connections: each client connection keeps the backend connection its last
//! request used, and hands it back to a small per-thread pool when it closes or parks; a
//! request that finds neither opens a new one. A request without a body that fails on a
//! reused backend connection before any response byte (the backend closed it while idle)
//! is sent once more on a fresh connection.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use twoway_tls::Decision;

use super::{millis, now_millis, target, ConnState, Io, PARK_AFTER};
use crate::backend::{BackendStream, BACKEND_CONNECT_TIMEOUT};
use crate::copy::ReadReady;
use twoway_net::h1::{self, consume, Chunk, Fields, Framing};

/// Client read buffer while the connection is busy (request heads); it grows for a longer
/// head, up to [`MAX_HEAD`].
const HEAD_BUF: usize = 4 * 1024;
/// Client read buffer while a request body is relayed.
const CLIENT_BUF: usize = 16 * 1024;
/// Backend read buffer while a request is in flight (response heads and bodies), taken from
/// a per-thread stock for the exchange only: connections waiting for their next request do
/// not hold one.
const BACKEND_BUF: usize = 32 * 1024;
/// Backend read buffers kept per thread between exchanges.
const BUF_STOCK: usize = 32;
/// Largest request or response head; a longer request head gets 431.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head; more gets 431.
const MAX_HEADERS: usize = 100;
/// Time allowed for a whole request head once its first byte arrived.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle backend connections kept per thread and listener.
const POOL_MAX: usize = 64;
/// How long an idle backend connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Backend connection pool (per thread: every runtime is current-thread, and a socket stays
// with the reactor that registered it)
// ---------------------------------------------------------------------------------------

struct Pooled {
    ctx: u64,
    since: Instant,
    stream: BackendStream,
}

thread_local! {
    static POOL: RefCell<Vec<Pooled>> = const { RefCell::new(Vec::new()) };
    static BUFS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A backend read buffer from the thread's stock, or a new one.
fn buf_take() -> Vec<u8> {
    BUFS.with_borrow_mut(|v| v.pop())
        .unwrap_or_else(|| vec![0; BACKEND_BUF])
}

/// Returns a backend read buffer to the thread's stock (if it has room and the buffer did
/// not grow for a long head).
fn buf_put(b: Vec<u8>) {
    if b.len() == BACKEND_BUF {
        BUFS.with_borrow_mut(|v| {
            if v.len() < BUF_STOCK {
                v.push(b);
            }
        });
    }
}

/// An idle backend connection of listener `ctx` that still looks open.
fn pool_take(ctx: u64) -> Option<BackendStream> {
    // Bounded: every turn removes one entry.
    loop {
        let p = POOL.with_borrow_mut(|v| {
            let i = v.iter().rposition(|p| p.ctx == ctx)?;
            Some(v.swap_remove(i))
        })?;
        if p.since.elapsed() < POOL_IDLE && p.stream.is_clean() {
            return Some(p.stream);
        }
    }
}

/// Keeps `stream` for the next request of listener `ctx`, if it is clean and there is room.
fn pool_put(ctx: u64, stream: BackendStream) {
    if !stream.is_clean() {
        return;
    }
    POOL.with_borrow_mut(|v| {
        v.retain(|p| p.since.elapsed() < POOL_IDLE);
        if v.iter().filter(|p| p.ctx == ctx).count() < POOL_MAX {
            v.push(Pooled {
                ctx,
                since: Instant::now(),
                stream,
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Heads
// ---------------------------------------------------------------------------------------

/// Why a request head is refused before it reaches the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    /// Malformed or ambiguous (400), with what was wrong.
    Bad(&'static str),
    /// Head too large or too many fields (431).
    TooLarge,
    /// CONNECT (405).
    Connect,
}

impl Reject {
    fn response(self) -> Vec<u8> {
        let (status, text) = match self {
            Reject::Bad(why) => ("400 Bad Request", why),
            Reject::TooLarge => (
                "431 Request Header Fields Too Large",
                "request head too large",
            ),
            Reject::Connect => ("405 Method Not Allowed", "CONNECT is not supported"),
        };
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}\n",
            text.len() + 1
        )
        .into_bytes()
    }
}

/// A parsed request head (the backend's head is in the output buffer).
#[derive(Debug)]
struct ReqHead {
    /// Bytes of the head.
    len: usize,
    method: Method,
    /// HTTP/1.0 client.
    http10: bool,
    /// The client wants the connection kept open.
    keep_alive: bool,
    body: Framing,
    /// `Expect: 100-continue` (answered by the proxy, not forwarded).
    expect_continue: bool,
    /// Refused by the route rules.
    denied: bool,
    /// The client asks to switch protocols (the `Upgrade` field went to the backend).
    upgrade: bool,
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Hop-by-hop by name, or listed in `Connection`.
fn skip(f: &Fields<'_>, name: &str) -> bool {
    is_hop_by_hop(name)
        || f.listed
            .iter()
            .any(|l| l.eq_ignore_ascii_case(name.as_bytes()))
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A request target's bytes are visible ASCII (what `http::Uri` accepts in a path).
fn visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Parses the request head at the start of `buf`. `Ok(None)`: incomplete. When the request
/// is allowed, writes the backend's head into `out`; the path goes into `path` for the log.
fn parse_request(
    buf: &[u8],
    st: &ConnState,
    out: &mut Vec<u8>,
    path: &mut String,
) -> Result<Option<ReqHead>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Reject::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooLarge),
        Err(_) => return Err(Reject::Bad("malformed request head")),
    };
    let (Some(m), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Reject::Bad("malformed request head"));
    };
    if !target::method_ok(m) {
        return Err(Reject::Bad("the method must be an upper-case token"));
    }
    let method = Method::from_bytes(m.as_bytes()).map_err(|_| Reject::Bad("bad method"))?;
    if method == Method::CONNECT {
        return Err(Reject::Connect);
    }
    if !visible_ascii(target) {
        return Err(Reject::Bad("the request target must be visible ASCII"));
    }
    // origin-form for the backend: the path and query, without a fragment
    let absolute;
    let (pq, authority) = if target.starts_with('/') || target == "*" {
        (target.split('#').next().unwrap_or(target), None)
    } else {
        absolute = http::Uri::try_from(target).map_err(|_| Reject::Bad("bad request target"))?;
        (
            absolute.path_and_query().map_or("/", |p| p.as_str()),
            absolute.authority().map(|a| a.as_str()),
        )
    };
    let (raw_path, query) = match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    };
    let p = if raw_path == "*" {
        std::borrow::Cow::Borrowed(raw_path)
    } else {
        target::normalize_path(raw_path).map_err(|e| Reject::Bad(e.as_str()))?
    };
    let headers = req.headers;
    let f = Fields::scan(headers);
    if f.hosts > 1 {
        return Err(Reject::Bad("more than one Host header"));
    }
    if let (Some(a), Some(h)) = (authority, f.host) {
        if !a.as_bytes().eq_ignore_ascii_case(h) {
            return Err(Reject::Bad(
                "the Host header differs from the request target's authority",
            ));
        }
    }
    let body = h1::request_body(minor == 0, &f).map_err(Reject::Bad)?;
    let keep_alive = h1::keep_alive(minor == 0, &f);
    let upgrade = upgrade_to(headers, &f).filter(|_| method == Method::GET && body.done());
    let expect_continue = f.expect_continue && minor == 1;

    let ctx = &st.ctx;
    let peer = &st.peer;
    let state = ctx.state.load();
    let denied = matches!(state.routes.decide(&method, &p, &peer.id), Decision::Denied);
    let trusted = state.routes.trusts(peer.addr.ip());
    drop(state);
    path.clear();
    path.push_str(&p);
    let head = ReqHead {
        len,
        method,
        http10: minor == 0,
        keep_alive,
        body,
        expect_continue,
        denied,
        upgrade: upgrade.is_some(),
    };
    if denied {
        return Ok(Some(head));
    }

    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(p.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in headers.iter() {
        let n = h.name;
        if skip(&f, n) || (expect_continue && n.eq_ignore_ascii_case("expect")) {
            continue;
        }
        match target::classify(n.as_bytes()) {
            target::Special::Other => {}
            target::Special::Forwarded if trusted => {}
            target::Special::Forwarded | target::Special::Identity => continue,
        }
        header(out, n.as_bytes(), h.value);
    }
    if f.host.is_none() {
        let host = authority.map_or(ctx.host.as_bytes(), str::as_bytes);
        header(out, b"host", host);
    }
    header(out, b"x-forwarded-client-cert", peer.xfcc.as_bytes());
    header(out, b"x-client-identity", peer.identity.as_bytes());
    header(out, b"x-forwarded-for", peer.addr_value.as_bytes());
    header(out, b"x-forwarded-proto", b"https");
    if let Framing::Chunked(_) = body {
        header(out, b"transfer-encoding", b"chunked");
    }
    if let Some(protocols) = upgrade {
        header(out, b"connection", b"upgrade");
        header(out, b"upgrade", protocols);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(head))
}

/// The `Upgrade` value of a request that lists `upgrade` in `Connection`, unless it names
/// `h2c` (not allowed over TLS) or there is more than one.
fn upgrade_to<'h>(headers: &[httparse::Header<'h>], f: &Fields<'_>) -> Option<&'h [u8]> {
    if !f.listed.iter().any(|l| l.eq_ignore_ascii_case(b"upgrade")) {
        return None;
    }
    let mut values = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value);
    let value = values.next()?;
    let h2c = value
        .split(|&b| b == b',')
        .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    (values.next().is_none() && !h2c && !value.trim_ascii().is_empty()).then_some(value)
}

/// A response head from the backend.
#[derive(Debug)]
enum RespHead {
    /// An informational response (1xx other than 101) of this many bytes: skipped.
    Info(usize),
    /// The final response; the client's head is in the output buffer.
    Final(FinalHead),
}

#[derive(Debug)]
struct FinalHead {
    len: usize,
    status: u16,
    body: Framing,
    /// Chunked from the backend, plain (close-delimited) to an HTTP/1.0 client.
    dechunk: bool,
    /// The backend connection can carry another request after this body.
    backend_keep: bool,
    /// The client connection stays open after this response.
    client_keep: bool,
    /// `101 Switching Protocols` to an upgrade request: relay bytes from here on.
    switched: bool,
}

/// A response the proxy cannot pass on.
#[derive(Debug)]
struct BadResponse;

/// Parses the response head at the start of `buf`; `keep` says whether the client
/// connection may stay open. Writes the client's head into `out`.
fn parse_response(
    buf: &[u8],
    req: &ReqHead,
    keep: bool,
    out: &mut Vec<u8>,
) -> Result<Option<RespHead>, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        _ => return Err(BadResponse),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(BadResponse);
    };
    let switched = status == 101;
    if switched && !req.upgrade {
        return Err(BadResponse);
    }
    if (100..200).contains(&status) && !switched {
        return Ok(Some(RespHead::Info(len)));
    }
    let headers = resp.headers;
    let f = Fields::scan(headers);
    if switched {
        // The protocol the backend switched to: its Upgrade and Connection go to the client.
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 101 ");
        out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in headers.iter() {
            let n = h.name;
            if n.eq_ignore_ascii_case("connection")
                || (skip(&f, n) && !n.eq_ignore_ascii_case("upgrade"))
            {
                continue;
            }
            header(out, n.as_bytes(), h.value);
        }
        header(out, b"connection", b"upgrade");
        out.extend_from_slice(b"\r\n");
        return Ok(Some(RespHead::Final(FinalHead {
            len,
            status,
            body: Framing::Length(0),
            dechunk: false,
            backend_keep: false,
            client_keep: false,
            switched,
        })));
    }
    let no_body = req.method == Method::HEAD || status == 204 || status == 304;
    let body = if no_body {
        Framing::Length(0)
    } else if f.te {
        if f.chunked {
            Framing::Chunked(Chunk::START)
        } else {
            Framing::Close
        }
    } else if f.bad_length {
        return Err(BadResponse);
    } else {
        f.length.map_or(Framing::Close, Framing::Length)
    };
    let dechunk = req.http10 && matches!(body, Framing::Chunked(_));
    let backend_keep = !f.close && (minor == 1 || f.keep_alive) && body != Framing::Close;
    let client_keep = keep && body != Framing::Close && !dechunk;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(out, "{status:03}");
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        let n = h.name;
        if skip(&f, n) || (f.te && n.eq_ignore_ascii_case("content-length")) {
            continue;
        }
        header(out, n.as_bytes(), h.value);
    }
    if matches!(body, Framing::Chunked(_)) && !dechunk {
        header(out, b"transfer-encoding", b"chunked");
    }
    if !client_keep {
        header(out, b"connection", b"close");
    } else if req.http10 {
        header(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(RespHead::Final(FinalHead {
        len,
        status,
        body,
        dechunk,
        backend_keep,
        client_keep,
        switched: false,
    })))
}

// ---------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------

/// Why an operation stopped before completing.
#[derive(Debug)]
enum Stop {
    /// Nothing moved for the idle timeout.
    Idle,
    /// Waiting for a request and silent for [`PARK_AFTER`]: park.
    Park,
    /// Waiting for a request and the proxy drains.
    Drain,
    Io(io::Error),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Idle => f.write_str("idle timeout"),
            Stop::Park => f.write_str("parked"),
            Stop::Drain => f.write_str("draining"),
            Stop::Io(e) => e.fmt(f),
        }
    }
}

/// The connection's one timer: fires at least every [`PARK_AFTER`] and checks the time of
/// the last byte moved, so that a busy connection never re-arms it per operation.
struct Clock {
    sleep: Pin<Box<Sleep>>,
    idle_ms: u64,
    park_ms: u64,
}

impl Clock {
    fn new(idle: Duration) -> Self {
        let idle_ms = millis(idle);
        let park_ms = idle_ms.min(millis(PARK_AFTER)).max(1);
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::from_millis(park_ms))),
            idle_ms,
            park_ms,
        }
    }

    /// Runs `f` under the idle timeout. `waiting` (between requests, nothing buffered) also
    /// parks and notices the drain signal.
    async fn run<T, F>(
        &mut self,
        st: &ConnState,
        waiting: Option<&watch::Receiver<bool>>,
        f: F,
    ) -> Result<T, Stop>
    where
        F: Future<Output = io::Result<T>>,
    {
        tokio::pin!(f);
        // Bounded: each turn either ends or re-arms the timer for a later instant.
        loop {
            tokio::select! {
                biased;
                r = &mut f => return r.map_err(Stop::Io),
                () = self.sleep.as_mut() => {
                    let since = now_millis().saturating_sub(st.last.load(Relaxed));
                    if since >= self.idle_ms {
                        return Err(Stop::Idle);
                    }
                    let mut next = (self.idle_ms - since).min(self.park_ms);
                    if let Some(shutdown) = waiting {
                        if *shutdown.borrow() {
                            return Err(Stop::Drain);
                        }
                        if since >= self.park_ms {
                            return Err(Stop::Park);
                        }
                        next = next.min(self.park_ms - since);
                    }
                    self.sleep.as_mut().reset(Instant::now() + Duration::from_millis(next.max(1)));
                }
            }
        }
    }
}

/// A relay failure, by side.
#[derive(Debug)]
enum Fail {
    Src(Stop),
    Dst(Stop),
}

/// Moves one body from `src` to `dst`: first `buf[*pos..*end]`, then what `src` sends.
/// With `scratch`, only the payload of a chunked body is written (for HTTP/1.0 clients).
#[allow(clippy::too_many_arguments)]
async fn relay<R, W>(
    clock: &mut Clock,
    st: &ConnState,
    body: &mut Framing,
    src: &mut R,
    buf: &mut [u8],
    pos: &mut usize,
    end: &mut usize,
    dst: &mut W,
    mut scratch: Option<&mut Vec<u8>>,
) -> Result<(), Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Bounded by the body: every turn consumes buffered bytes or reads (end of stream ends
    // it), under the idle timeout.
    loop {
        if body.done() {
            return Ok(());
        }
        if *pos >= *end {
            *pos = 0;
            *end = 0;
            let n = clock
                .run(st, None, src.read(&mut *buf))
                .await
                .map_err(Fail::Src)?;
            if n == 0 {
                if *body == Framing::Close {
                    *body = Framing::Length(0);
                    return Ok(());
                }
                return Err(Fail::Src(Stop::Io(io::ErrorKind::UnexpectedEof.into())));
            }
            st.last.store(now_millis(), Relaxed);
            *end = n;
        }
        let avail = &buf[*pos..*end];
        let wrote = match scratch.as_deref_mut() {
            None => {
                let k = consume(body, avail, None).map_err(|_| Fail::Src(bad_body()))?;
                clock
                    .run(st, None, dst.write_all(&avail[..k]))
                    .await
                    .map_err(Fail::Dst)?;
                k
            }
            Some(out) => {
                out.clear();
                let k = consume(body, avail, Some(out)).map_err(|_| Fail::Src(bad_body()))?;
                clock
                    .run(st, None, dst.write_all(out))
                    .await
                    .map_err(Fail::Dst)?;
                k
            }
        };
        *pos += wrote;
        clock.run(st, None, dst.flush()).await.map_err(Fail::Dst)?;
    }
}

fn bad_body() -> Stop {
    Stop::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        "malformed chunked body",
    ))
}

/// What to do after one exchange.
enum Next {
    /// Read the next request.
    Continue,
    /// Finish writing and close the TLS session.
    Close,
    /// Drop the connection (error, or the client is gone).
    Abort,
    /// Park until the client sends again.
    Park,
}

/// One client connection's HTTP/1.x state. Buffers exist while the connection is busy.
struct H1 {
    st: std::sync::Arc<ConnState>,
    clock: Clock,
    /// Client bytes: `cbuf[cpos..cend]` not consumed yet (a head, body, or the next request).
    cbuf: Vec<u8>,
    cpos: usize,
    cend: usize,
    /// Backend bytes: `bbuf[bpos..bend]` not relayed yet.
    bbuf: Vec<u8>,
    bpos: usize,
    bend: usize,
    /// The head being written (to the backend, then to the client).
    wbuf: Vec<u8>,
    /// The request path, for the access log.
    path: String,
    /// The idle backend connection this client connection used last.
    backend: Option<BackendStream>,
}

impl H1 {
    /// Frees every buffer and hands the backend connection to the pool.
    fn park(&mut self) {
        self.cbuf = Vec::new();
        buf_put(std::mem::take(&mut self.bbuf));
        self.wbuf = Vec::new();
        self.path = String::new();
        self.cpos = 0;
        self.cend = 0;
        if let Some(b) = self.backend.take() {
            pool_put(self.st.ctx.id, b);
        }
    }

    async fn write_client<IO>(&mut self, io: &mut Io<IO>, bytes: &[u8]) -> Result<(), Stop>
    where
        IO: AsyncWrite + Unpin,
    {
        self.clock.run(&self.st, None, io.write_all(bytes)).await?;
        self.clock.run(&self.st, None, io.flush()).await
    }

    /// Reads until a whole request head is buffered and parsed.
    async fn read_head<IO>(
        &mut self,
        io: &mut Io<IO>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<ReqHead, Next>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut started: Option<Instant> = None;
        // Bounded: every turn reads at least one byte (end of stream and timeouts end it), and
        // the head is limited to MAX_HEAD bytes and HEAD_TIMEOUT.
        loop {
            if self.cpos < self.cend {
                match parse_request(
                    &self.cbuf[self.cpos..self.cend],
                    &self.st,
                    &mut self.wbuf,
                    &mut self.path,
                ) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(reject) => {
                        tracing::debug!(listener = %self.st.ctx.name, peer = %self.st.peer.addr, reason = ?reject, origin = "downstream", "bad request head");
                        let _ = self.write_client(io, &reject.response()).await;
                        return Err(Next::Close);
                    }
                }
                if started.get_or_insert_with(Instant::now).elapsed() > HEAD_TIMEOUT {
                    return Err(Next::Abort);
                }
            }
            if self.cbuf.is_empty() {
                self.cbuf = vec![0; HEAD_BUF];
            }
            if self.cpos >= self.cend {
                self.cpos = 0;
                self.cend = 0;
            } else if self.cend == self.cbuf.len() {
                self.cbuf.copy_within(self.cpos..self.cend, 0);
                self.cend -= self.cpos;
                self.cpos = 0;
                if self.cend == self.cbuf.len() {
                    let grown = (self.cbuf.len() * 2).min(MAX_HEAD);
                    self.cbuf.resize(grown, 0);
                }
            }
            let waiting = (self.cpos == self.cend).then_some(shutdown);
            let read = self
                .clock
                .run(&self.st, waiting, io.read(&mut self.cbuf[self.cend..]))
                .await;
            match read {
                Ok(0) => return Err(Next::Abort),
                Ok(n) => self.cend += n,
                Err(Stop::Park) => return Err(Next::Park),
                Err(Stop::Drain) => return Err(Next::Close),
                Err(Stop::Idle) => {
                    tracing::debug!(listener = %self.st.ctx.name, "closing idle HTTP connection");
                    return Err(Next::Close);
                }
                Err(Stop::Io(e)) => {
                    tracing::debug!(listener = %self.st.ctx.name, error = %e, "HTTP connection ended with an error");
                    return Err(Next::Abort);
                }
            }
        }
    }

    /// Serves one request: head, authorization, backend exchange, response.
    async fn one<IO>(&mut self, io: &mut Io<IO>, shutdown: &watch::Receiver<bool>) -> Next
    where
        IO: AsyncRead + AsyncWrite + ReadReady + Unpin,
    {
        let req = match self.read_head(io, shutdown).await {
            Ok(r) => r,
            Err(next) => return next,
        };
        // Busy (never shed) until this exchange is over.
        let _busy = self.st.net.busy();
        let start = Instant::now();
        self.cpos += req.len;
        let keep = req.keep_alive && !*shutdown.borrow();
        if req.denied {
            return self.deny(io, &req, start, keep).await;
        }
        if req.expect_continue
            && !req.body.done()
            && self
                .write_client(io, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return Next::Abort;
        }
        // The head and the body bytes already here go out in one write.
        let mut body = req.body;
        let avail = &self.cbuf[self.cpos..self.cend];
        let Ok(k) = consume(&mut body, avail, None) else {
            let _ = self
                .write_client(io, &Reject::Bad("malformed request").response())
                .await;
            return Next::Close;
        };
        self.wbuf.extend_from_slice(&avail[..k]);
        self.cpos += k;
        let retryable = k == 0 && body.done();

        let mut fresh_only = false;
        // At most two attempts: a reused connection, then a fresh one.
        let (mut be, head) = loop {
            let reused = self.backend.take().or_else(|| {
                if fresh_only {
                    None
                } else {
                    pool_take(self.st.ctx.id)
                }
            });
            let was_reused = reused.is_some();
            let mut be = match reused {
                Some(b) => b,
                None => match tokio::time::timeout(
                    BACKEND_CONNECT_TIMEOUT,
                    BackendStream::connect(&self.st.ctx.backend),
                )
                .await
                {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return self.bad_gateway(io, &req, start, keep, &body, &e).await,
                    Err(_) => {
                        return self
                            .bad_gateway(io, &req, start, keep, &body, &"backend connect timed out")
                            .await
                    }
                },
            };
            match self.exchange(&mut be, io, &mut body, &req, keep).await {
                Ok(h) => break (be, h),
                Err(Fail::Src(e)) => {
                    tracing::debug!(listener = %self.st.ctx.name, error = %e, "client failed while sending the request body");
                    return Next::Abort;
                }
                Err(Fail::Dst(e)) => {
                    if was_reused && retryable && self.bend == 0 && !fresh_only {
                        tracing::debug!(listener = %self.st.ctx.name, error = %e, "reused backend connection failed; retrying on a new one");
                        fresh_only = true;
                        continue;
                    }
                    return self.bad_gateway(io, &req, start, keep, &body, &e).await;
                }
            }
        };

        self.st
            .access(&req.method, &self.path, "allow", "", head.status, start);
        if head.switched {
            return self.switch(io, be, head.len).await;
        }
        // The client's head and the body bytes already here go out in one write.
        self.bpos += head.len;
        let mut rbody = head.body;
        let avail = &self.bbuf[self.bpos..self.bend];
        let k = if head.dechunk {
            consume(&mut rbody, avail, Some(&mut self.wbuf))
        } else {
            consume(&mut rbody, avail, None).inspect(|&k| {
                self.wbuf.extend_from_slice(&avail[..k]);
            })
        };
        let Ok(k) = k else {
            return Next::Abort;
        };
        self.bpos += k;
        let out = std::mem::take(&mut self.wbuf);
        let wrote = self.write_client(io, &out).await;
        self.wbuf = out;
        if wrote.is_err() {
            return Next::Abort;
        }
        if !rbody.done() {
            let scratch = head.dechunk.then_some(&mut self.wbuf);
            let r = relay(
                &mut self.clock,
                &self.st,
                &mut rbody,
                &mut be,
                &mut self.bbuf,
                &mut self.bpos,
                &mut self.bend,
                io,
                scratch,
            )
            .await;
            if let Err(e) = r {
                tracing::debug!(listener = %self.st.ctx.name, error = ?e, "response body relay failed");
                return Next::Abort;
            }
        }
        if head.backend_keep && self.bpos >= self.bend {
            self.backend = Some(be);
        }
        self.bpos = 0;
        self.bend = 0;
        buf_put(std::mem::take(&mut self.bbuf));
        if head.client_keep {
            Next::Continue
        } else {
            Next::Close
        }
    }

    /// Sends the backend's head and the request body, then reads the response head.
    async fn exchange<IO>(
        &mut self,
        be: &mut BackendStream,
        io: &mut Io<IO>,
        body: &mut Framing,
        req: &ReqHead,
        keep: bool,
    ) -> Result<FinalHead, Fail>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.bpos = 0;
        self.bend = 0;
        self.clock
            .run(&self.st, None, be.write_all(&self.wbuf))
            .await
            .map_err(Fail::Dst)?;
        if !body.done() {
            if self.cbuf.len() < CLIENT_BUF {
                self.cbuf.resize(CLIENT_BUF, 0);
            }
            relay(
                &mut self.clock,
                &self.st,
                body,
                io,
                &mut self.cbuf,
                &mut self.cpos,
                &mut self.cend,
                be,
                None,
            )
            .await?;
        }
        if self.bbuf.is_empty() {
            self.bbuf = buf_take();
        }
        // Bounded: every turn reads at least one byte; the head is limited to MAX_HEAD.
        loop {
            if self.bend == self.bbuf.len() {
                if self.bpos > 0 {
                    self.bbuf.copy_within(self.bpos..self.bend, 0);
                    self.bend -= self.bpos;
                    self.bpos = 0;
                } else {
                    let grown = (self.bbuf.len() * 2).min(MAX_HEAD);
                    if grown <= self.bbuf.len() {
                        return Err(Fail::Dst(Stop::Io(io::Error::other(
                            "response head too large",
                        ))));
                    }
                    self.bbuf.resize(grown, 0);
                }
            }
            let n = self
                .clock
                .run(&self.st, None, be.read(&mut self.bbuf[self.bend..]))
                .await
                .map_err(Fail::Dst)?;
            if n == 0 {
                return Err(Fail::Dst(
                    self.mismatch_or(io::ErrorKind::UnexpectedEof.into()),
                ));
            }
            self.st.last.store(now_millis(), Relaxed);
            self.bend += n;
            // Bounded: every informational head skipped consumes bytes.
            loop {
                match parse_response(&self.bbuf[self.bpos..self.bend], req, keep, &mut self.wbuf) {
                    Ok(None) => break,
                    Ok(Some(RespHead::Info(len))) => self.bpos += len,
                    Ok(Some(RespHead::Final(h))) => return Ok(h),
                    Err(BadResponse) => {
                        return Err(Fail::Dst(self.mismatch_or(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "malformed response head",
                        ))))
                    }
                }
            }
        }
    }

    /// `err`, unless what the backend sent is HTTP/2 (a server that speaks only HTTP/2
    /// behind `backend_protocol = "http1"`): then that mismatch, counted.
    fn mismatch_or(&self, err: io::Error) -> Stop {
        if !super::upstream::looks_like_h2(&self.bbuf[self.bpos..self.bend]) {
            return Stop::Io(err);
        }
        self.st.ctx.metrics.upstream_mismatch();
        Stop::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            super::upstream::Mismatch {
                configured: "http1",
                seen: "answered in HTTP/2 (its first bytes were an HTTP/2 frame, not an HTTP/1 status line)".into(),
            },
        ))
    }

    /// After `101 Switching Protocols`: the client gets the head and whatever the backend sent
    /// after it, the backend gets what the client sent after its request, then bytes are
    /// relayed both ways until both sides closed or nothing moved for the idle timeout.
    async fn switch<IO>(&mut self, io: &mut Io<IO>, mut be: BackendStream, head_len: usize) -> Next
    where
        IO: AsyncRead + AsyncWrite + ReadReady + Unpin,
    {
        self.wbuf
            .extend_from_slice(&self.bbuf[self.bpos + head_len..self.bend]);
        let out = std::mem::take(&mut self.wbuf);
        if self.write_client(io, &out).await.is_err() {
            return Next::Abort;
        }
        let early = &self.cbuf[self.cpos..self.cend];
        if !early.is_empty() {
            let sent = self.clock.run(&self.st, None, be.write_all(early)).await;
            if sent.is_err() {
                return Next::Abort;
            }
        }
        // Only the TLS session and the backend socket are held while relaying.
        self.park();
        self.bpos = 0;
        self.bend = 0;
        let idle = Duration::from_millis(self.clock.idle_ms);
        match crate::copy::relay(io, &mut be, idle).await {
            Ok(r) if r.idle_timeout => {
                tracing::debug!(listener = %self.st.ctx.name, "closing idle upgraded connection");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(listener = %self.st.ctx.name, error = %e, "upgraded connection ended with an error");
            }
        }
        Next::Abort
    }

    async fn deny<IO>(&mut self, io: &mut Io<IO>, req: &ReqHead, start: Instant, keep: bool) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.st.ctx.metrics.http_denied();
        self.st
            .access(&req.method, &self.path, "deny", "", 403, start);
        let keep = keep && req.body.done();
        self.small(io, req, keep, "403 Forbidden", "forbidden\n")
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn bad_gateway<IO>(
        &mut self,
        io: &mut Io<IO>,
        req: &ReqHead,
        start: Instant,
        keep: bool,
        body: &Framing,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let ctx = &self.st.ctx;
        ctx.metrics.upstream_error();
        ctx.metrics.http_request(502, start.elapsed());
        tracing::warn!(
            listener = %ctx.name,
            peer = %self.st.peer.addr,
            identity = self.st.peer.id.primary(),
            error = %error,
            origin = "upstream",
            retryable = true,
            "backend request failed"
        );
        let keep = keep && body.done();
        self.small(io, req, keep, "502 Bad Gateway", "bad gateway\n")
            .await
    }

    /// One of our short plain-text answers; `keep`: the connection stays open (the caller
    /// checked that the request body has been read).
    async fn small<IO>(
        &mut self,
        io: &mut Io<IO>,
        req: &ReqHead,
        keep: bool,
        status: &str,
        text: &str,
    ) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut out = std::mem::take(&mut self.wbuf);
        out.clear();
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            text.len()
        );
        if !keep {
            out.extend_from_slice(b"connection: close\r\n");
        } else if req.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(text.as_bytes());
        let wrote = self.write_client(io, &out).await;
        self.wbuf = out;
        match (wrote, keep) {
            (Err(_), _) => Next::Abort,
            (Ok(()), true) => Next::Continue,
            (Ok(()), false) => Next::Close,
        }
    }
}

/// Serves HTTP/1.x on one client connection until it closes, stays idle for `idle`, or the
/// proxy drains (the current response finishes, then the connection closes).
pub(super) async fn serve<IO>(
    mut io: Io<IO>,
    st: std::sync::Arc<ConnState>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let idle_ms = millis(idle);
    let mut c = H1 {
        st: st.clone(),
        clock: Clock::new(idle),
        cbuf: Vec::new(),
        cpos: 0,
        cend: 0,
        bbuf: Vec::new(),
        bpos: 0,
        bend: 0,
        wbuf: Vec::new(),
        path: String::new(),
        backend: None,
    };
    // Bounded by the client: every turn serves a request that needed its bytes, or waits
    // under the idle timeout.
    loop {
        let next = tokio::select! {
            n = c.one(&mut io, &shutdown) => n,
            // only an idle connection is shed: no request is in progress
            () = st.net.shed() => {
                st.ctx.metrics.shed();
                Next::Close
            }
        };
        match next {
            Next::Continue => {}
            Next::Abort => break,
            Next::Close => {
                let _ = tokio::time::timeout(Duration::from_secs(5), io.shutdown()).await;
                break;
            }
            Next::Park => {
                c.park();
                tracing::trace!(listener = %st.ctx.name, "parking idle HTTP/1.1 connection");
                // Parked: only the TLS session is held until the client sends again.
                let since = now_millis().saturating_sub(st.last.load(Relaxed));
                let left = Duration::from_millis(idle_ms.saturating_sub(since));
                tokio::select! {
                    r = poll_fn(|cx| io.inner.poll_read_ready(cx)) => {
                        if let Err(e) = r {
                            tracing::debug!(listener = %st.ctx.name, error = %e, "HTTP connection ended with an error");
                            break;
                        }
                        tracing::trace!(listener = %st.ctx.name, "unparking HTTP/1.1 connection");
                    }
                    () = tokio::time::sleep(left) => {
                        tracing::debug!(listener = %st.ctx.name, "closing idle HTTP connection");
                        break;
                    }
                    _ = shutdown.changed() => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), io.shutdown()).await;
                        break;
                    }
                    () = st.net.shed() => {
                        st.ctx.metrics.shed();
                        break;
                    }
                }
            }
        }
    }
    if let Some(b) = c.backend.take() {
        pool_put(st.ctx.id, b);
    }
}

#[cfg(test)]
mod tests;
