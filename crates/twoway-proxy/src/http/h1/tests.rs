//! The HTTP/1.x path against an in-process backend, over plain TCP on the client side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use twoway_tls::{PeerIdentity, Policy, Reloadable};

use super::*;
use crate::config::{Backend, Route, Routes};
use crate::http::{HttpCtx, Peer, Proto};
use crate::state::ServerState;

// ---- harness ----------------------------------------------------------------------------

fn tls_config() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    Arc::new(cfg)
}

/// What the backend saw: each request's head and body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A backend that answers by path: `/chunked`, `/close` (close-delimited), `/204`, `/304`,
/// `/info` (a 100 first), `/last` (`Connection: close`), `/drop` (closes after the
/// response without saying so), else 200 with a length and the body it received echoed.
async fn backend() -> (SocketAddr, Seen) {
    let (addr, seen, _) = backend_counted().await;
    (addr, seen)
}

/// [`backend`], with the number of connections it accepted.
async fn backend_counted() -> (SocketAddr, Seen, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let accepts = Arc::new(AtomicUsize::new(0));
    let (s, a) = (seen.clone(), accepts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((c, _)) = l.accept().await else { return };
            a.fetch_add(1, Relaxed);
            tokio::spawn(backend_conn(c, s.clone()));
        }
    });
    (addr, seen, accepts)
}

async fn read_until(c: &mut TcpStream, buf: &mut Vec<u8>, pat: &[u8]) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i + pat.len());
        }
        let mut b = [0u8; 4096];
        let n = c.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
}

async fn backend_conn(mut c: TcpStream, seen: Seen) {
    let mut buf = Vec::new();
    loop {
        let Some(h) = read_until(&mut c, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..h]).into_owned();
        buf.drain(..h);
        let lower = head.to_ascii_lowercase();
        let body = if let Some(n) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let n: usize = n.trim().parse().unwrap();
            while buf.len() < n {
                let mut b = [0u8; 4096];
                let k = c.read(&mut b).await.unwrap();
                assert!(k > 0);
                buf.extend_from_slice(&b[..k]);
            }
            buf.drain(..n).collect()
        } else if lower.contains("transfer-encoding: chunked") {
            let e = read_until(&mut c, &mut buf, b"0\r\n\r\n").await.unwrap();
            buf.drain(..e).collect()
        } else {
            Vec::new()
        };
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let upgrade = lower.contains("upgrade: websocket");
        seen.lock().unwrap().push((head, body.clone()));
        if path == "/ws" && upgrade {
            // switch, greet, then echo until the client closes its side
            let hi = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nx-ws: 1\r\n\r\nhello";
            if c.write_all(hi).await.is_err() || c.write_all(&buf).await.is_err() {
                return;
            }
            let mut b = [0u8; 4096];
            while let Ok(n) = c.read(&mut b).await {
                if n == 0 || c.write_all(&b[..n]).await.is_err() {
                    break;
                }
            }
            let _ = c.shutdown().await;
            return;
        }
        let resp: Vec<u8> = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n".to_vec(),
            "/close" => b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(),
            "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n".to_vec(),
            "/info" => b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            "/last" => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlast".to_vec(),
            "/rogue101" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec(),
            _ => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nkeep-alive: timeout=5\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\n\r\n",
                    body.len() + 3
                )
                .into_bytes();
                r.extend_from_slice(b"ok:");
                r.extend_from_slice(&body);
                r
            }
        };
        if c.write_all(&resp).await.is_err() {
            return;
        }
        if path == "/close" || path == "/last" || path == "/drop" {
            return;
        }
    }
}

struct Proxy {
    addr: SocketAddr,
    metrics: crate::Metrics,
    shutdown: watch::Sender<bool>,
}

async fn proxy(backend: SocketAddr, routes: Routes) -> Proxy {
    let all = crate::Metrics::default();
    let metrics = all.listener("t", "http");
    let state = Arc::new(Reloadable::new(ServerState {
        tls: tls_config(),
        routes,
        not_after: 0,
        crl_next_update: Vec::new(),
        ocsp: None,
    }));
    let ctx = Arc::new(
        HttpCtx::new(
            "t",
            &Backend::Tcp(backend.to_string()),
            &crate::config::BackendProtocol::Http1,
            metrics.clone(),
            state,
        )
        .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    let table = twoway_net::ConnTable::new(twoway_net::Limits::default());
    tokio::spawn(async move {
        loop {
            let Ok((c, peer)) = l.accept().await else {
                return;
            };
            let Ok(net) = table.admit(peer.ip()) else {
                continue;
            };
            let id = PeerIdentity {
                uris: vec!["spiffe://example.org/alice".to_owned()],
                subject: "CN=alice".to_owned(),
                ..Default::default()
            };
            tokio::spawn(super::super::serve(
                c,
                Proto::Http1,
                Peer::new(id, peer),
                ctx.clone(),
                Duration::from_secs(5),
                rx.clone(),
                net,
            ));
        }
    });
    Proxy {
        addr,
        metrics: all,
        shutdown: tx,
    }
}

/// One response from `c`: (status, head, body). `head_only` for a HEAD request.
async fn response(c: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> (u16, String, Vec<u8>) {
    let h = read_until(c, buf, b"\r\n\r\n")
        .await
        .expect("response head");
    let head = String::from_utf8_lossy(&buf[..h]).into_owned();
    buf.drain(..h);
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let lower = head.to_ascii_lowercase();
    if head_only || status == 204 || status == 304 || status == 100 {
        return (status, head, Vec::new());
    }
    if let Some(n) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let n: usize = n.trim().parse().unwrap();
        while buf.len() < n {
            let mut b = [0u8; 4096];
            let k = c.read(&mut b).await.unwrap();
            assert!(k > 0, "short body");
            buf.extend_from_slice(&b[..k]);
        }
        let body = buf.drain(..n).collect();
        return (status, head, body);
    }
    if lower.contains("transfer-encoding: chunked") {
        let e = read_until(c, buf, b"0\r\n\r\n").await.unwrap();
        return (status, head, buf.drain(..e).collect());
    }
    c.read_to_end(buf).await.unwrap();
    (status, head, std::mem::take(buf))
}

/// Sends one request and reads its response (not to a HEAD).
async fn ask(c: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> (u16, String, Vec<u8>) {
    c.write_all(request).await.unwrap();
    response(c, buf, false).await
}

async fn connect(p: &Proxy) -> TcpStream {
    TcpStream::connect(p.addr).await.unwrap()
}

/// The connection was closed by the proxy.
async fn closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// `/admin` for bob only, then `/` (with `methods`) for every example.org workload.
fn bob_admin_routes(methods: Vec<Method>) -> Routes {
    Routes {
        routes: vec![
            Route {
                prefix: "/admin".to_owned(),
                methods: Vec::new(),
                policy: Policy::parse(&["spiffe://example.org/bob"]).unwrap(),
                deny_other_methods: true,
            },
            Route {
                prefix: "/".to_owned(),
                methods,
                policy: Policy::parse(&["spiffe://example.org/*"]).unwrap(),
                deny_other_methods: true,
            },
        ],
        ..Routes::default()
    }
}

// ---- end to end -------------------------------------------------------------------------

#[tokio::test]
async fn identity_headers_replace_spoofed_ones_and_hop_by_hop_goes() {
    let (b, seen) = backend().await;
    let p = proxy(b, Routes::default()).await;
    let mut c = connect(&p).await;
    c.write_all(b"GET /x?q=1 HTTP/1.1\r\nHost: app\r\nX-Client-Identity: spoofed\r\nx-forwarded-client-cert: spoofed\r\nX-Forwarded-Proto: http\r\nConnection: x-secret\r\nX-Secret: 1\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nX_Client_Identity: spoofed\r\nX-Forwarded_Client_Cert: spoofed\r\nx_forwarded_for: 10.0.0.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let (status, head, body) = response(&mut c, &mut buf, false).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"ok:");
    let lower = head.to_ascii_lowercase();
    assert!(
        !lower.contains("x-hop") && !lower.contains("keep-alive"),
        "{head}"
    );
    let seen = seen.lock().unwrap();
    let h = &seen[0].0;
    assert!(h.starts_with("GET /x?q=1 HTTP/1.1\r\n"), "{h}");
    assert!(
        !h.contains("spoofed") && !h.to_ascii_lowercase().contains("x-secret"),
        "{h}"
    );
    assert!(!h.contains("trailers") && !h.contains("websocket"), "{h}");
    assert!(
        h.contains("x-client-identity: spiffe://example.org/alice\r\n"),
        "{h}"
    );
    assert!(h.contains("x-forwarded-client-cert: Hash="), "{h}");
    // an untrusted client's forwarding headers are replaced by its address
    assert!(
        !h.contains("10.0.0.1") && h.contains("x-forwarded-for: 127.0.0.1\r\n"),
        "{h}"
    );
    assert!(
        h.contains("x-forwarded-proto: https\r\n") && !h.contains("http\r\n"),
        "{h}"
    );
    assert!(h.contains("Host: app\r\n"), "{h}");
}

#[tokio::test]
async fn keep_alive_pipelining_and_framings() {
    let (b, seen) = backend().await;
    let p = proxy(b, Routes::default()).await;
    let mut c = connect(&p).await;
    // five pipelined requests in one write, with bodies in both framings
    c.write_all(
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
          GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n\
          POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          HEAD /d HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /204 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /304 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /info HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let (s, _, body) = response(&mut c, &mut buf, false).await;
    assert_eq!((s, body.as_slice()), (200, &b"ok:hello"[..]));
    let (s, head, body) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 200);
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    let (s, _, body) = response(&mut c, &mut buf, false).await;
    assert_eq!(
        (s, body.as_slice()),
        (200, &b"ok:3\r\nabc\r\n0\r\n\r\n"[..])
    );
    let (s, head, _) = response(&mut c, &mut buf, true).await;
    assert_eq!(s, 200, "{head}");
    let (s, _, _) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 204);
    let (s, head, _) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 304);
    assert!(head.contains("content-length: 99"), "{head}");
    let (s, _, body) = response(&mut c, &mut buf, false).await;
    assert_eq!((s, body.as_slice()), (200, &b"ok"[..]));
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    // all on one backend connection: the HEAD response's length was not read as a body
    let n = seen.lock().unwrap().len();
    assert_eq!(n, 7);
    let (s, _, _) = ask(&mut c, &mut buf, b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn connection_close_from_either_side_and_close_delimited_bodies() {
    let (b, _) = backend().await;
    let p = proxy(b, Routes::default()).await;
    // client asks to close
    let mut c = connect(&p).await;
    c.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (s, head, _) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 200);
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed(&mut c).await);
    // backend closes: the client connection stays, the next request gets a new backend
    let mut c = connect(&p).await;
    let (s, _, body) = ask(&mut c, &mut buf, b"GET /last HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!((s, body.as_slice()), (200, &b"last"[..]));
    let (s, _, _) = ask(&mut c, &mut buf, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 200);
    // close-delimited response: passed on, then the client connection closes
    let (s, head, body) = ask(&mut c, &mut buf, b"GET /close HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 200);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"until close");
}

#[tokio::test]
async fn http10_clients() {
    let (b, seen) = backend().await;
    let p = proxy(b, Routes::default()).await;
    // no keep-alive: closes after the response; the backend still gets HTTP/1.1 and a Host
    let mut c = connect(&p).await;
    c.write_all(b"GET /a HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let (s, head, _) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 200);
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed(&mut c).await);
    let h = seen.lock().unwrap()[0].0.clone();
    assert!(
        h.starts_with("GET /a HTTP/1.1\r\n") && h.contains("host: 127.0.0.1:"),
        "{h}"
    );
    // keep-alive; a chunked response is de-chunked and close-delimited
    let mut c = connect(&p).await;
    let (s, head, _) = ask(
        &mut c,
        &mut buf,
        b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert_eq!(s, 200);
    assert!(head.contains("connection: keep-alive"), "{head}");
    let (s, head, body) = ask(
        &mut c,
        &mut buf,
        b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        !head.contains("chunked") && head.contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, b"abcdefg");
    // Transfer-Encoding from an HTTP/1.0 client is refused
    let mut c = connect(&p).await;
    let (s, _, _) = ask(
        &mut c,
        &mut buf,
        b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn bad_heads_are_refused() {
    let (b, seen) = backend().await;
    let p = proxy(b, Routes::default()).await;
    let cases: [(&[u8], u16); 6] = [
        (b"GARBAGE\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", 400),
        (
            b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n",
            405,
        ),
    ];
    let mut buf = Vec::new();
    for (req, want) in cases {
        let mut c = connect(&p).await;
        c.write_all(req).await.unwrap();
        let (s, _, _) = response(&mut c, &mut buf, false).await;
        assert_eq!(s, want, "{}", String::from_utf8_lossy(req));
        assert!(closed(&mut c).await);
        buf.clear();
    }
    // an oversized head
    let mut c = connect(&p).await;
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    while big.len() < MAX_HEAD + 10 {
        big.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
    }
    let _ = c.write_all(&big).await;
    let (s, _, _) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 431);
    // too many fields
    let mut c = connect(&p).await;
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..(MAX_HEADERS + 1) {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    c.write_all(&many).await.unwrap();
    buf.clear();
    let (s, _, _) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 431);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn routes_deny_with_403_and_expect_continue() {
    let (b, seen) = backend().await;
    let routes = bob_admin_routes(vec![Method::GET, Method::POST]);
    let p = proxy(b, routes).await;
    let mut c = connect(&p).await;
    let mut buf = Vec::new();
    let (s, head, body) = ask(
        &mut c,
        &mut buf,
        b"GET /admin/x HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert_eq!((s, body.as_slice()), (403, &b"forbidden\n"[..]), "{head}");
    let (s, _, _) = ask(&mut c, &mut buf, b"DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 403);
    // absolute-form is authorized on its path
    let (s, _, _) = ask(
        &mut c,
        &mut buf,
        b"GET http://h/admin HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert_eq!(s, 403);
    c.write_all(
        b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let (s, _, _) = response(&mut c, &mut buf, false).await;
    assert_eq!(s, 100);
    let (s, _, body) = ask(&mut c, &mut buf, b"data").await;
    assert_eq!((s, body.as_slice()), (200, &b"ok:data"[..]));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            !seen[0].0.to_ascii_lowercase().contains("expect"),
            "{}",
            seen[0].0
        );
    }
    // a denied request with a body closes the connection
    let (s, head, _) = ask(
        &mut c,
        &mut buf,
        b"POST /admin HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n",
    )
    .await;
    assert_eq!(s, 403);
    assert!(head.contains("connection: close"), "{head}");
    let m = p.metrics.render();
    assert!(
        m.contains("twoway_proxy_http_denied_total{listener=\"t\",mode=\"http\"} 4\n"),
        "{m}"
    );
    assert!(
        m.contains("twoway_proxy_http_responses_total{listener=\"t\",code=\"2xx\"} 1\n"),
        "{m}"
    );
}

#[tokio::test]
async fn backend_down_is_502_and_drain_closes_after_the_response() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let p = proxy(addr, Routes::default()).await;
    let mut c = connect(&p).await;
    let mut buf = Vec::new();
    let (s, _, body) = ask(&mut c, &mut buf, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!((s, body.as_slice()), (502, &b"bad gateway\n"[..]));
    // still open after a 502 without a request body
    let (s, _, _) = ask(&mut c, &mut buf, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 502);
    let m = p.metrics.render();
    assert!(
        m.contains("twoway_proxy_upstream_errors_total{listener=\"t\",mode=\"http\"} 2\n"),
        "{m}"
    );
    assert!(
        m.contains("twoway_proxy_http_responses_total{listener=\"t\",code=\"5xx\"} 2\n"),
        "{m}"
    );

    let (b, _) = backend().await;
    let p = proxy(b, Routes::default()).await;
    let mut c = connect(&p).await;
    let (s, _, _) = ask(&mut c, &mut buf, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 200);
    p.shutdown.send_replace(true);
    let (s, head, _) = ask(&mut c, &mut buf, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 200);
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed(&mut c).await);
    // an idle connection closes within a park interval
    let mut c = connect(&p).await;
    assert!(closed(&mut c).await);
}

#[tokio::test]
async fn a_backend_connection_closed_while_idle_is_replaced_and_idle_ones_are_pooled() {
    let (b, _, accepts) = backend_counted().await;
    let p = proxy(b, Routes::default()).await;
    let mut c = connect(&p).await;
    let mut buf = Vec::new();
    let (s, _, _) = ask(&mut c, &mut buf, b"GET /drop HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // the kept backend connection is dead: the request goes again on a new one
    let (s, _, body) = ask(&mut c, &mut buf, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!((s, body.as_slice()), (200, &b"ok:"[..]));
    assert_eq!(accepts.load(Relaxed), 2);
    // a client connection that closes hands its backend connection to the next one
    drop(c);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = connect(&p).await;
    let (s, _, _) = ask(&mut c, &mut buf, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(s, 200);
    assert_eq!(accepts.load(Relaxed), 2);
}

#[tokio::test]
async fn a_parked_connection_wakes_up_and_reuses_its_backend_connection() {
    let (b, _, accepts) = backend_counted().await;
    let p = proxy(b, Routes::default()).await;
    let mut c = connect(&p).await;
    let mut buf = Vec::new();
    for pause in [0, 2 * PARK_AFTER.as_millis() as u64, 0] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        c.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let (s, _, _) = response(&mut c, &mut buf, false).await;
        assert_eq!(s, 200);
    }
    assert_eq!(accepts.load(Relaxed), 1);
}

#[tokio::test]
async fn websocket_upgrade_is_authorized_then_relayed_both_ways() {
    let (b, seen) = backend().await;
    let routes = bob_admin_routes(Vec::new());
    let p = proxy(b, routes).await;
    // the upgrade request and the first frame bytes in one write
    let mut c = connect(&p).await;
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\nearly")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let h = read_until(&mut c, &mut buf, b"\r\n\r\n").await.unwrap();
    let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
    buf.drain(..h);
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(
        head.contains("upgrade: websocket") && head.contains("connection: upgrade"),
        "{head}"
    );
    assert!(head.contains("x-ws: 1"), "{head}");
    // the backend's greeting, then the echo of what was sent with the request
    read_until(&mut c, &mut buf, b"helloearly").await.unwrap();
    buf.clear();
    c.write_all(b"ping").await.unwrap();
    read_until(&mut c, &mut buf, b"ping").await.unwrap();
    let sent = seen.lock().unwrap()[0].0.to_ascii_lowercase();
    assert!(
        sent.contains("upgrade: websocket") && sent.contains("connection: upgrade"),
        "{sent}"
    );
    assert!(sent.contains("sec-websocket-version: 13"), "{sent}");
    assert!(
        sent.contains("x-client-identity: spiffe://example.org/alice"),
        "{sent}"
    );
    // the client's half-close reaches the backend, which closes: the client sees the end
    c.shutdown().await.unwrap();
    assert!(closed(&mut c).await);

    // an upgrade on a denied route is refused like any request
    let mut c = connect(&p).await;
    let (s, _, _) = ask(
        &mut c,
        &mut buf,
        b"GET /admin/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert_eq!(s, 403);
    // h2c is never passed on: the request goes as a plain GET
    let before = seen.lock().unwrap().len();
    let mut c = connect(&p).await;
    let (s, _, _) = ask(&mut c, &mut buf, b"GET /plain HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n").await;
    assert_eq!(s, 200);
    let sent = seen.lock().unwrap()[before].0.to_ascii_lowercase();
    assert!(
        !sent.contains("upgrade") && !sent.contains("http2-settings"),
        "{sent}"
    );
    // a 101 nobody asked for is a bad response
    let (s, _, _) = ask(
        &mut c,
        &mut buf,
        b"GET /rogue101 HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert_eq!(s, 502);
}
