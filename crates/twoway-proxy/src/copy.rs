//! Bidirectional relay with half-close, an idle timeout, and copy buffers that exist only
//! while data flows: an idle connection holds no relay buffer at all.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, Sleep};

/// Size of a relay buffer while data flows (two TLS records).
const BUF_SIZE: usize = 32 * 1024;

/// A stream that can say "bytes may be readable" without being handed a buffer.
pub trait ReadReady {
    /// Ready when the underlying socket has data or reached end of file.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl<T: ReadReady + ?Sized> ReadReady for Box<T> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_read_ready(cx)
    }
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ReadReady for UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
}

impl<IO: ReadReady> ReadReady for tokio_rustls::server::TlsStream<IO> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

impl<IO: ReadReady> ReadReady for tokio_rustls::client::TlsStream<IO> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// One direction of the relay.
#[derive(Debug, Default)]
struct Half {
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
    /// True until a read returned Pending: TLS may hold decrypted bytes that the socket's
    /// readiness does not show (data that arrived with the handshake).
    primed: bool,
    read_done: bool,
    need_flush: bool,
    finished: bool,
    amt: u64,
}

impl Half {
    fn new() -> Self {
        Self {
            primed: true,
            ..Default::default()
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        activity: &mut bool,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ReadReady + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.finished {
                return Poll::Ready(Ok(self.amt));
            }
            // Drain what we hold.
            if self.pos < self.cap {
                let Some(buf) = self.buf.as_deref() else {
                    return Poll::Ready(Err(io::Error::other("relay buffer lost")));
                };
                let n = ready!(w.as_mut().poll_write(cx, &buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.amt += n as u64;
                *activity = true;
                continue;
            }
            if self.read_done {
                ready!(w.as_mut().poll_flush(cx))?;
                // Half-close: pass the end of stream on (FIN, or close_notify then FIN).
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.finished = true;
                self.buf = None;
                return Poll::Ready(Ok(self.amt));
            }
            if self.buf.is_none() {
                if !self.primed && r.as_ref().get_ref().poll_read_ready(cx)?.is_pending() {
                    return self.flush_pending(cx, w);
                }
                self.buf = Some(vec![0u8; BUF_SIZE].into_boxed_slice());
            }
            let Some(buf) = self.buf.as_deref_mut() else {
                return Poll::Ready(Err(io::Error::other("relay buffer lost")));
            };
            let mut rb = ReadBuf::new(buf);
            match r.as_mut().poll_read(cx, &mut rb) {
                Poll::Pending => {
                    self.primed = false;
                    self.buf = None;
                    return self.flush_pending(cx, w);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // A TLS peer that closed without close_notify: treat as end of stream.
                    self.read_done = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.read_done = true;
                    } else {
                        self.pos = 0;
                        self.cap = n;
                        self.need_flush = true;
                        *activity = true;
                    }
                }
            }
        }
    }

    fn flush_pending<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        w: Pin<&mut W>,
    ) -> Poll<io::Result<u64>> {
        if self.need_flush {
            ready!(w.poll_flush(cx))?;
            self.need_flush = false;
        }
        Poll::Pending
    }
}

/// How a relay ended.
#[derive(Debug)]
pub struct Relayed {
    /// Bytes copied from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes copied from `b` to `a`.
    pub b_to_a: u64,
    /// The relay stopped because nothing moved for the idle timeout.
    pub idle_timeout: bool,
}

struct Relay<'a, A: ?Sized, B: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    ab: Half,
    ba: Half,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<A, B> Future for Relay<'_, A, B>
where
    A: AsyncRead + AsyncWrite + ReadReady + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + ReadReady + Unpin + ?Sized,
{
    type Output = io::Result<Relayed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut activity = false;
        let ab = this.ab.poll_copy(
            cx,
            Pin::new(&mut *this.a),
            Pin::new(&mut *this.b),
            &mut activity,
        )?;
        let ba = this.ba.poll_copy(
            cx,
            Pin::new(&mut *this.b),
            Pin::new(&mut *this.a),
            &mut activity,
        )?;
        if let (Poll::Ready(a_to_b), Poll::Ready(b_to_a)) = (ab, ba) {
            return Poll::Ready(Ok(Relayed {
                a_to_b,
                b_to_a,
                idle_timeout: false,
            }));
        }
        if activity {
            this.last = Instant::now();
        }
        // The timer is only re-armed when it fires, not on every read.
        while this.timer.as_mut().poll(cx).is_ready() {
            let deadline = this.last + this.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(Ok(Relayed {
                    a_to_b: this.ab.amt,
                    b_to_a: this.ba.amt,
                    idle_timeout: true,
                }));
            }
            this.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

/// Relays between `a` and `b` until both directions reached end of stream (each end is
/// passed on as a half-close), an error, or `idle` without any byte moving.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<Relayed>
where
    A: AsyncRead + AsyncWrite + ReadReady + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + ReadReady + Unpin + ?Sized,
{
    let now = Instant::now();
    Relay {
        a,
        b,
        ab: Half::new(),
        ba: Half::new(),
        idle,
        last: now,
        timer: Box::pin(tokio::time::sleep_until(now + idle)),
    }
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a1 = l1.local_addr().unwrap();
        let a2 = l2.local_addr().unwrap();
        let relay_task = tokio::spawn(async move {
            let (mut x, _) = l1.accept().await.unwrap();
            let mut y = TcpStream::connect(a2).await.unwrap();
            relay(&mut x, &mut y, Duration::from_secs(5)).await.unwrap()
        });
        let mut client = TcpStream::connect(a1).await.unwrap();
        let (mut server, _) = l2.accept().await.unwrap();
        let big = vec![7u8; 300_000];
        client.write_all(&big).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), big.len());
        // the other direction still works after the client's half-close
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply");
        let r = relay_task.await.unwrap();
        assert_eq!(r.a_to_b, 300_000);
        assert_eq!(r.b_to_a, 5);
    }

    #[tokio::test]
    async fn idle_timeout_fires() {
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a1 = l1.local_addr().unwrap();
        let a2 = l2.local_addr().unwrap();
        let t = tokio::spawn(async move {
            let (mut x, _) = l1.accept().await.unwrap();
            let mut y = TcpStream::connect(a2).await.unwrap();
            relay(&mut x, &mut y, Duration::from_millis(200))
                .await
                .unwrap()
        });
        let _c = TcpStream::connect(a1).await.unwrap();
        let _s = l2.accept().await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert!(r.idle_timeout);
    }
}
