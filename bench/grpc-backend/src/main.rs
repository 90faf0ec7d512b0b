//! An h2c (HTTP/2 with prior knowledge) responder shaped like a gRPC server, the backend of
//! `bench/proxy/grpc.sh`: every request's body is read whole, then answered with HTTP 200,
//! `content-type: application/grpc`, the request's bytes echoed as the response message
//! and the trailers `grpc-status: 0`. Written on hyper, one current-thread runtime per
//! worker thread, so that the backend is not the benchmark's bottleneck.
//!
//! Usage: `twoway-grpc-backend ADDR [WORKERS]` (e.g. `127.0.0.1:50051 1`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A body of fixed frames: the message, then the trailers.
struct Frames(VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Frames>, Infallible> {
    let message = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut frames = VecDeque::with_capacity(2);
    frames.push_back(Frame::data(message));
    frames.push_back(Frame::trailers(trailers));
    let mut resp = Response::new(Frames(frames));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

async fn serve(listener: std::net::TcpListener) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.max_concurrent_streams(1024);
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        let conn = h2.serve_connection(TokioIo::new(sock), hyper::service::service_fn(answer));
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:50051".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(1).max(1);
    let listener = std::net::TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    let mut threads = Vec::new();
    for _ in 0..workers {
        let l = listener.try_clone()?;
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(l))
        }));
    }
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => return Err(std::io::Error::other("a worker panicked")),
        }
    }
    Ok(())
}
