//! HTTP/2 to the backend (`backend_protocol = "h2c"` or `"h2"`), for HTTP/1.x and HTTP/2
//! clients alike.
//!
//! Each worker thread keeps one multiplexed connection per listener (every runtime is
//! current-thread, so a connection's task and the streams it carries stay on one thread);
//! a connection that closed (GOAWAY, reset, error) is replaced on the next request. Bodies
//! and trailers stream through hyper in both directions under HTTP/2 flow control; dropping
//! a response (the client reset its stream) resets the backend's stream.
//!
//! A backend that speaks HTTP/1 where HTTP/2 was configured is recognized by its first
//! bytes (`HTTP/`: its answer to our connection preface) or, over TLS, by an ALPN other
//! than `h2`; the request then fails with [`Mismatch`], which the caller counts and logs.
//! The reverse case (an HTTP/2 backend behind `http1`) is recognized by [`looks_like_h2`].

use std::cell::RefCell;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;

use crate::backend::{BackendStream, BACKEND_CONNECT_TIMEOUT};
use crate::config::{Backend, BackendProtocol};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The backend speaks another protocol than `backend_protocol` says.
#[derive(Debug, Clone)]
pub(crate) struct Mismatch {
    /// The configured value (`http1`, `h2c`, `h2`).
    pub configured: &'static str,
    /// What the backend did instead.
    pub seen: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fix = match self.configured {
            "http1" => "set backend_protocol = \"h2c\" (or \"h2\" for TLS) for an HTTP/2 backend",
            _ => "set backend_protocol = \"http1\" for an HTTP/1 backend",
        };
        write!(
            f,
            "protocol mismatch: backend_protocol = \"{}\" but the backend {}; {fix}",
            self.configured, self.seen
        )
    }
}

impl StdError for Mismatch {}

/// The [`Mismatch`] somewhere in `err`'s chain (also inside an `io::Error`).
pub(crate) fn find_mismatch<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Mismatch> {
    let mut cur = Some(err);
    // Bounded: error chains are finite and short.
    for _ in 0..16 {
        let e = cur?;
        if let Some(m) = e.downcast_ref::<Mismatch>() {
            return Some(m);
        }
        if let Some(m) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Mismatch>())
        {
            return Some(m);
        }
        cur = e.source();
    }
    None
}

/// The first bytes of an answer to an HTTP/1 request look like HTTP/2 frames: a SETTINGS
/// or GOAWAY frame on stream 0 (what an HTTP/2-only server sends before or instead of
/// anything else).
pub(crate) fn looks_like_h2(b: &[u8]) -> bool {
    b.len() >= 9 && !b.starts_with(b"HTTP/") && matches!(b[3], 0x04 | 0x07) && b[5..9] == [0; 4]
}

/// Reads of a fresh backend connection, checking its first bytes: an HTTP/1 status line
/// where HTTP/2 was expected (an HTTP/1 server's answer to our connection preface), or an
/// HTTP/2 frame where HTTP/1 was expected. Either fails the read with [`Mismatch`].
pub struct Sniff<T> {
    inner: T,
    checked: bool,
    seen_other: Arc<AtomicBool>,
    configured: &'static str,
}

impl<T> Sniff<T> {
    /// Checks the first bytes read from `inner` against `configured` (`http1`, `h2c`, `h2`).
    pub(crate) fn new(inner: T, configured: &'static str) -> Self {
        Self {
            inner,
            checked: false,
            seen_other: Arc::new(AtomicBool::new(false)),
            configured,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniff<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.checked && buf.filled().len() > before {
            self.checked = true;
            let got = &buf.filled()[before..];
            let seen = if self.configured == "http1" {
                looks_like_h2(got).then_some(
                    "answered in HTTP/2 (its first bytes were an HTTP/2 frame, not an HTTP/1 status line)",
                )
            } else {
                let n = got.len().min(5);
                (got[..n] == b"HTTP/"[..n]).then_some(
                    "answered in HTTP/1 (its reply to the HTTP/2 connection preface began with \"HTTP/\")",
                )
            };
            if let Some(seen) = seen {
                self.seen_other.store(true, Relaxed);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Mismatch {
                        configured: self.configured,
                        seen: seen.into(),
                    },
                )));
            }
        }
        r
    }
}

impl<T: hyper_util::client::legacy::connect::Connection>
    hyper_util::client::legacy::connect::Connection for Sniff<T>
{
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected()
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniff<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One backend connection: its request sender and whether it turned out to speak HTTP/1.
#[derive(Clone)]
struct Conn {
    send: SendRequest<Incoming>,
    http1: Arc<AtomicBool>,
}

thread_local! {
    /// This thread's HTTP/2 backend connection of each listener (by listener id).
    static CONNS: RefCell<Vec<(u64, Conn)>> = const { RefCell::new(Vec::new()) };
}

/// HTTP/2 to one backend.
pub(crate) struct H2Upstream {
    id: u64,
    backend: Backend,
    configured: &'static str,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    scheme: Scheme,
    builder: hyper::client::conn::http2::Builder<TokioExecutor>,
}

impl fmt::Debug for H2Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Upstream")
            .field("backend", &self.backend)
            .field("protocol", &self.configured)
            .finish()
    }
}

impl H2Upstream {
    /// HTTP/2 to `backend` as `proto` says (`h2c` or `h2`; the CA bundle is read here).
    pub(crate) fn new(
        listener: &str,
        id: u64,
        backend: &Backend,
        proto: &BackendProtocol,
    ) -> Result<Self, crate::ProxyError> {
        let tls = match proto {
            BackendProtocol::H2 { ca, server_name } => {
                let pem = std::fs::read(ca).map_err(|source| crate::ProxyError::ReadFile {
                    kind: "backend CA",
                    path: ca.clone(),
                    source,
                })?;
                let tls_err = |source| crate::ProxyError::Tls {
                    listener: listener.to_owned(),
                    source,
                };
                let certs = twoway_tls::parse_certificates("backend_ca", &pem).map_err(tls_err)?;
                let mut roots = rustls::RootCertStore::empty();
                for c in certs {
                    roots.add(c).map_err(|e| {
                        crate::ProxyError::Config(format!(
                            "listener {listener:?}: backend_ca {}: {e}",
                            ca.display()
                        ))
                    })?;
                }
                let mut cfg =
                    rustls::ClientConfig::builder_with_provider(Arc::new(twoway_tls::provider()))
                        .with_safe_default_protocol_versions()
                        .map_err(|e| {
                            crate::ProxyError::Config(format!("listener {listener:?}: {e}"))
                        })?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                cfg.alpn_protocols = vec![b"h2".to_vec()];
                Some((TlsConnector::from(Arc::new(cfg)), server_name.clone()))
            }
            _ => None,
        };
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            // fixed windows (no BDP pings): 1 MiB per stream, 16 MiB per connection
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(20));
        Ok(Self {
            id,
            backend: backend.clone(),
            configured: proto.as_str(),
            scheme: if tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            tls,
            builder,
        })
    }

    /// The scheme of request URIs sent to the backend.
    pub(crate) fn scheme(&self) -> Scheme {
        self.scheme.clone()
    }

    async fn connect(&self) -> Result<Conn, BoxError> {
        let stream = tokio::time::timeout(
            BACKEND_CONNECT_TIMEOUT,
            BackendStream::connect(&self.backend),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "backend connect timed out"))??;
        let (send, conn, http1) = match &self.tls {
            None => {
                let io = Sniff::new(stream, self.configured);
                let http1 = io.seen_other.clone();
                let (send, conn) = self.builder.handshake(TokioIo::new(io)).await?;
                (send, Box::pin(conn) as ConnFuture, http1)
            }
            Some((tls, name)) => {
                let s = tokio::time::timeout(
                    BACKEND_CONNECT_TIMEOUT,
                    tls.connect(name.clone(), stream),
                )
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "backend TLS handshake timed out")
                })??;
                let alpn = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                if alpn.as_deref() != Some(b"h2") {
                    let seen = match alpn {
                        Some(p) => format!(
                            "chose ALPN {:?} instead of h2 in its TLS handshake",
                            String::from_utf8_lossy(&p)
                        ),
                        None => "offered no ALPN (so HTTP/1) in its TLS handshake".to_owned(),
                    };
                    return Err(Box::new(Mismatch {
                        configured: self.configured,
                        seen,
                    }));
                }
                let (send, conn) = self.builder.handshake(TokioIo::new(s)).await?;
                (
                    send,
                    Box::pin(conn) as ConnFuture,
                    Arc::new(AtomicBool::new(false)),
                )
            }
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/2 backend connection ended with an error");
            }
        });
        Ok(Conn { send, http1 })
    }

    /// This thread's open connection, or a new one.
    async fn conn(&self) -> Result<Conn, BoxError> {
        let id = self.id;
        let open = CONNS.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|(_, conn)| !conn.send.is_closed());
            c.iter()
                .find(|(i, _)| *i == id)
                .map(|(_, conn)| conn.clone())
        });
        if let Some(c) = open {
            return Ok(c);
        }
        let conn = self.connect().await?;
        CONNS.with(|c| {
            let mut c = c.borrow_mut();
            if !c.iter().any(|(i, _)| *i == id) {
                c.push((id, conn.clone()));
            }
        });
        Ok(conn)
    }

    /// Sends `req` (an absolute URI) to the backend.
    pub(crate) async fn request(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, BoxError> {
        let mut conn = self.conn().await?;
        match conn.send.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) if conn.http1.load(Relaxed) => Err(Box::new(Mismatch {
                configured: self.configured,
                seen: format!("answered in HTTP/1 ({e})"),
            })),
            Err(e) => Err(Box::new(e)),
        }
    }
}

/// A backend connection's task.
type ConnFuture = Pin<Box<dyn std::future::Future<Output = Result<(), hyper::Error>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_frames_are_told_from_http1_heads() {
        // SETTINGS, empty, stream 0
        assert!(looks_like_h2(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
        // GOAWAY
        assert!(looks_like_h2(&[
            0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
        ]));
        assert!(!looks_like_h2(b"HTTP/1.1 200 OK\r\n"));
        assert!(!looks_like_h2(&[0, 0, 0, 4]));
        // a frame on a stream other than 0
        assert!(!looks_like_h2(&[0, 0, 0, 4, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn mismatch_is_found_inside_io_errors() {
        let m = Mismatch {
            configured: "h2c",
            seen: "answered in HTTP/1".into(),
        };
        let e = io::Error::new(io::ErrorKind::InvalidData, m);
        assert_eq!(find_mismatch(&e).map(|m| m.configured), Some("h2c"));
        let plain = io::Error::other("x");
        assert!(find_mismatch(&plain).is_none());
        assert!(e.to_string().contains("backend_protocol = \"h2c\""));
    }
}
