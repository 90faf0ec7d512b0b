//! Counts open connections so shutdown can wait for them to drain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Shared counter of open connections.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    open: AtomicUsize,
    idle: Notify,
}

/// Held by each connection task.
#[derive(Debug)]
pub struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tracker {
    /// Registers a connection.
    pub fn guard(&self) -> Guard {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        Guard(self.inner.clone())
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Waits until no connection is open or `deadline` passed; returns how many are left.
    pub async fn drain(&self, deadline: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.open() == 0 {
                    return;
                }
                // re-check periodically in case a wake-up raced the counter
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.open()
    }
}

/// Where accepted connections run: the current runtime, or one of the worker runtimes in
/// turn.
#[derive(Clone, Debug, Default)]
pub(crate) struct Spawner {
    workers: Arc<[tokio::runtime::Handle]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl Spawner {
    pub(crate) fn new(workers: Vec<tokio::runtime::Handle>) -> Self {
        Self {
            workers: workers.into(),
            next: Arc::default(),
        }
    }

    /// Runs `serve(tcp)` on the next worker (moving the socket to that worker's reactor), or
    /// on the current runtime when there are no workers.
    pub(crate) fn spawn<F, Fut>(&self, tcp: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.workers.is_empty() {
            tokio::spawn(serve(tcp));
            return;
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.workers.len();
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        self.workers[i].spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!(error = %e, "cannot hand a connection to a worker"),
            }
        });
    }
}
