//! Connections to the backend (TCP or Unix socket), for both modes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::config::Backend;
use crate::copy::ReadReady;

/// Time allowed to reach the backend.
pub(crate) const BACKEND_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connected backend stream.
#[derive(Debug)]
pub enum BackendStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
}

impl BackendStream {
    /// Connects to `backend`.
    pub async fn connect(backend: &Backend) -> io::Result<Self> {
        match backend {
            Backend::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await?;
                s.set_nodelay(true)?;
                Ok(BackendStream::Tcp(s))
            }
            Backend::Unix(path) => Ok(BackendStream::Unix(UnixStream::connect(path).await?)),
        }
    }

    /// Still open with nothing unread: fit to carry another request. Costs no system call
    /// while the socket is known not to be readable.
    pub(crate) fn is_clean(&self) -> bool {
        let mut b = [0u8; 1];
        let r = match self {
            BackendStream::Tcp(s) => s.try_read(&mut b),
            BackendStream::Unix(s) => s.try_read(&mut b),
        };
        matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

impl ReadReady for BackendStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            BackendStream::Tcp(s) => s.poll_read_ready(cx),
            BackendStream::Unix(s) => s.poll_read_ready(cx),
        }
    }
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// The hyper connector for HTTP mode (HTTP/1.1 backends): every pooled connection goes to
/// the one backend, whatever the request URI says; an HTTP/2 answer fails the request as a
/// protocol mismatch.
#[derive(Clone, Debug)]
pub struct BackendConnector {
    backend: Arc<Backend>,
}

impl BackendConnector {
    /// A connector to `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }
}

impl tower_service::Service<http::Uri> for BackendConnector {
    type Response = TokioIo<crate::http::upstream::Sniff<BackendStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let backend = self.backend.clone();
        Box::pin(async move {
            let s = BackendStream::connect(&backend).await?;
            Ok(TokioIo::new(crate::http::upstream::Sniff::new(s, "http1")))
        })
    }
}
