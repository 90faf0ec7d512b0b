//! The plain-HTTP listener's HTTP/1.x server: OCSP, CRL, roots, health and metrics.
//!
//! OCSP clients (OpenSSL, browsers, Go, Java) POST a small DER request with a
//! `Content-Length` or GET `/ocsp/<base64>`, and the answer is pre-signed: the work per
//! request is parsing a head, a cache lookup and one write. This server does only that —
//! `httparse` for the head, a `Content-Length` body, the response written in one
//! `write` (pipelined requests answered in one) — where a general HTTP stack (hyper, which
//! the HTTPS listener keeps) spends as much again in its codec and body machinery.
//! What it does not take is refused with a clear answer and the connection closed:
//! chunked request bodies (411), bodies over [`crate::routes::MAX_BODY`] (413), heads over
//! [`MAX_HEAD`] (431), malformed heads (400). Keep-alive follows HTTP/1.1 and HTTP/1.0
//! rules; `Expect: 100-continue` is honoured; HEAD gets the head alone. A connection is
//! closed when it idles past the listener's deadlines (`[server] first_request_timeout`,
//! `idle_timeout`: waiting for a request, or for the rest of one, is idle), when one
//! request takes longer than [`REQUEST_TIMEOUT`] to arrive whole, or when the connection
//! table sheds it to make room for another.

use crate::routes::{self, Resp};
use crate::{ConnInfo, State};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::Method;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use twoway_api::{codes, MAX_BODY};
use twoway_net::h1;

/// The largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a started request may take to arrive whole.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADERS: usize = 64;
/// Answers are flushed once this much is waiting, even if pipelined requests remain.
const FLUSH_AT: usize = 64 * 1024;

/// One parsed request head.
#[derive(Debug)]
struct Head {
    len: usize,
    method: Method,
    path: String,
    content_length: usize,
    keep_alive: bool,
    http10: bool,
    expect_continue: bool,
}

/// What the buffer holds.
#[derive(Debug)]
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A whole head.
    Head(Head),
    /// Refused: status and message; the connection is closed after the answer.
    Refuse(u16, &'static str, String),
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(
                431,
                codes::HEAD_TOO_LARGE,
                format!("more than {MAX_HEADERS} header fields"),
            )
        }
        Err(e) => {
            return Parsed::Refuse(
                400,
                codes::BAD_REQUEST,
                format!("malformed HTTP request: {e}"),
            )
        }
    };
    if len > MAX_HEAD {
        return Parsed::Refuse(
            431,
            codes::HEAD_TOO_LARGE,
            format!("the request head is larger than {MAX_HEAD} bytes"),
        );
    }
    let (Some(m), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Refuse(400, codes::BAD_REQUEST, "malformed HTTP request".into());
    };
    let Ok(method) = Method::from_bytes(m.as_bytes()) else {
        return Parsed::Refuse(400, codes::BAD_REQUEST, "malformed HTTP method".into());
    };
    let http10 = version == 0;
    let f = h1::Fields::scan(req.headers);
    if f.expect_other {
        return Parsed::Refuse(
            417,
            codes::BAD_REQUEST,
            "only Expect: 100-continue is understood".into(),
        );
    }
    let content_length =
        match h1::request_body(http10, &f) {
            Ok(h1::Framing::Length(n)) => usize::try_from(n).unwrap_or(usize::MAX),
            Ok(_) => return Parsed::Refuse(
                411,
                codes::LENGTH_REQUIRED,
                "chunked request bodies are not taken here: send the body with a Content-Length"
                    .into(),
            ),
            Err(why) => {
                return Parsed::Refuse(
                    400,
                    codes::BAD_REQUEST,
                    format!("{why}: send the body with a Content-Length alone"),
                )
            }
        };
    let keep_alive = h1::keep_alive(http10, &f);
    let expect_continue = f.expect_continue && !http10;
    if content_length > MAX_BODY {
        return Parsed::Refuse(
            413,
            codes::BODY_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        );
    }
    Parsed::Head(Head {
        len,
        method,
        path: path.to_string(),
        content_length,
        keep_alive,
        http10,
        expect_continue,
    })
}

thread_local! {
    static DATE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// The `Date` header's value (IMF-fixdate), formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    let now = time::OffsetDateTime::now_utc();
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != now.unix_timestamp() {
            let fmt = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            d.1 = now.format(&fmt).unwrap_or_default();
            d.0 = now.unix_timestamp();
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

/// Appends the answer to `out`: status line, the route's headers, Date, Content-Length
/// and the keep-alive decision, then the body (not for HEAD).
async fn encode(resp: Resp, keep_alive: bool, http10: bool, head_only: bool, out: &mut Vec<u8>) {
    let (parts, body) = resp.into_parts();
    let body: Bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| *n != hyper::header::CONTENT_LENGTH && *n != hyper::header::CONNECTION)
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let status = (
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or(""),
    );
    let len = body.len();
    let body: &[u8] = if head_only { &[] } else { &body };
    write_answer(out, http10, status, headers, len, body, keep_alive);
}

/// Writes one answer; `len` is the Content-Length (the body's, also for HEAD).
fn write_answer<'a>(
    out: &mut Vec<u8>,
    http10: bool,
    (code, reason): (u16, &str),
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    len: usize,
    body: &[u8],
    keep_alive: bool,
) {
    let mut line = String::with_capacity(64);
    let _ = write!(
        line,
        "{} {code} {reason}\r\n",
        if http10 { "HTTP/1.0" } else { "HTTP/1.1" },
    );
    out.extend_from_slice(line.as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    http_date(out);
    line.clear();
    let _ = write!(line, "\r\ncontent-length: {len}\r\n");
    out.extend_from_slice(line.as_bytes());
    match (keep_alive, http10) {
        (false, false) => out.extend_from_slice(b"connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The answer to a request refused before it reached a route; the connection closes.
async fn refuse(
    state: &State,
    status: u16,
    code: &'static str,
    message: String,
    out: &mut Vec<u8>,
) {
    let resp = routes::refusal(state, status, code, message);
    encode(resp, false, false, false, out).await;
}

/// Sends what is left of `out` and closes after a refusal. The client may still be
/// sending (a body too large, say): what it sends is read and dropped, up to 1 MiB or 2 s
/// (a lingering close, RFC 9112 §9.6), so that closing with unread data does not reset the
/// connection before the refusal has reached the client over a slow network.
async fn close_after_refusal(tcp: &mut TcpStream, out: &[u8]) {
    if tcp.write_all(out).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 16 * 1024];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Reads more of a request into `buf`: false when the peer closed or failed, the request
/// passed `request_deadline`, or `stop` (the connection shed, or idle past its
/// deadlines) resolved; the caller then closes the connection and never polls `stop` again.
async fn read_more<F: std::future::Future<Output = ()>>(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    request_deadline: Option<Instant>,
    stop: std::pin::Pin<&mut F>,
) -> bool {
    let read = async {
        match request_deadline {
            Some(at) => tokio::time::timeout_at(at, tcp.read_buf(buf)).await.ok(),
            None => Some(tcp.read_buf(buf).await),
        }
    };
    tokio::select! {
        r = read => matches!(r, Some(Ok(n)) if n > 0),
        _ = stop => false,
    }
}

/// Serves one connection of the plain-HTTP listener until it closes.
pub(crate) async fn serve(
    mut tcp: TcpStream,
    conn: Arc<ConnInfo>,
    table: twoway_net::Conn,
    state: Arc<State>,
) {
    let d = state.connections.deadlines;
    // One wait for the whole connection (not one per read): the table shedding it, or its
    // idle deadlines, which follow its requests by themselves.
    let stop = async {
        tokio::select! {
            _ = table.shed() => {}
            _ = table.idle_timeout(d.first_request, d.idle) => {}
        }
    };
    tokio::pin!(stop);
    let mut buf = BytesMut::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    // When the request being read began (its first bytes arrived).
    let mut started: Option<Instant> = None;
    loop {
        let head = match parse(&buf) {
            Parsed::Partial => {
                if buf.len() > MAX_HEAD {
                    let msg = format!("the request head is larger than {MAX_HEAD} bytes");
                    refuse(&state, 431, codes::HEAD_TOO_LARGE, msg, &mut out).await;
                    close_after_refusal(&mut tcp, &out).await;
                    return;
                }
                if !out.is_empty() {
                    if tcp.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                // Between requests only the connection's idle deadlines; once a request has
                // begun, also what is left of its own limit (so a byte every few seconds
                // does not keep it open).
                let deadline = if buf.is_empty() {
                    started = None;
                    None
                } else {
                    Some(*started.get_or_insert_with(Instant::now) + REQUEST_TIMEOUT)
                };
                if !read_more(&mut tcp, &mut buf, deadline, stop.as_mut()).await {
                    return;
                }
                started.get_or_insert_with(Instant::now);
                continue;
            }
            Parsed::Refuse(status, code, message) => {
                refuse(&state, status, code, message, &mut out).await;
                close_after_refusal(&mut tcp, &out).await;
                return;
            }
            Parsed::Head(h) => h,
        };
        let end = head.len + head.content_length;
        if buf.len() < end {
            if head.expect_continue {
                if !out.is_empty() {
                    if tcp.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                if tcp
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            buf.reserve(end - buf.len());
            let deadline = *started.get_or_insert_with(Instant::now) + REQUEST_TIMEOUT;
            while buf.len() < end {
                if !read_more(&mut tcp, &mut buf, Some(deadline), stop.as_mut()).await {
                    return;
                }
            }
        }
        started = None;
        // The whole request is here: busy (never shed) until its answer is made.
        let busy = table.busy();
        let _ = buf.split_to(head.len);
        let body = buf.split_to(head.content_length).freeze();
        // The hot path: a POST /ocsp answered from the cache, written without building a
        // response object (counted as the route would).
        let hit = if head.method == Method::POST && head.path == "/ocsp" {
            state.ocsp.cached(&body)
        } else {
            None
        };
        if let Some(der) = hit {
            routes::count_ocsp_hit(&state);
            let headers = [
                ("content-type", &b"application/ocsp-response"[..]),
                ("cache-control", &b"no-cache"[..]),
            ];
            write_answer(
                &mut out,
                head.http10,
                (200, "OK"),
                headers.into_iter(),
                der.len(),
                &der,
                head.keep_alive,
            );
        } else {
            let head_only = head.method == Method::HEAD;
            let method = if head_only { Method::GET } else { head.method };
            let resp = routes::handle_plain(&state, &conn, &method, &head.path, body).await;
            encode(resp, head.keep_alive, head.http10, head_only, &mut out).await;
        }
        drop(busy);
        if !head.keep_alive {
            let _ = tcp.write_all(&out).await;
            let _ = tcp.shutdown().await;
            return;
        }
        if out.len() >= FLUSH_AT {
            if tcp.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse(raw.as_bytes()) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    fn refused(raw: &str) -> u16 {
        match parse(raw.as_bytes()) {
            Parsed::Refuse(s, _, _) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads() {
        let h = head("POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 83\r\n\r\n");
        assert_eq!(
            (h.method, h.path.as_str(), h.content_length, h.keep_alive),
            (Method::POST, "/ocsp", 83, true)
        );
        let h = head("GET /crl HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive && h.http10);
        let h = head("GET /crl HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("GET /crl HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("POST /ocsp HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        assert!(h.expect_continue);
        assert!(matches!(
            parse(b"POST /ocsp HTTP/1.1\r\nHost"),
            Parsed::Partial
        ));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            refused("POST /ocsp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        for raw in [
            "POST /ocsp HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST /ocsp HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(refused(raw), 400, "{raw}");
        }
        assert_eq!(
            refused("POST /ocsp HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(
            refused("POST /ocsp HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            400
        );
        for bad in ["x", "+5", "-5", "5, 5", "0x5", "", "5 5"] {
            assert_eq!(
                refused(&format!(
                    "POST /ocsp HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n"
                )),
                400,
                "{bad:?}"
            );
        }
        assert_eq!(refused("GET /\u{1}x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            refused("POST /ocsp HTTP/1.1\r\nExpect: something\r\n\r\n"),
            417
        );
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        let pad = "a".repeat(MAX_HEAD);
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nX-Pad: {pad}\r\n\r\n")),
            431
        );
    }
}
