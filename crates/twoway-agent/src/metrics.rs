//! The agent's Prometheus listener (`twoway agent --metrics ADDR`).
//!
//! It answers every request with [`AgentStatus::render`] and closes. It holds at most
//! [`METRICS_LIMITS`] connections through a `twoway_net` table (a full table closes the
//! connection idle longest), and a connection that has not sent a whole request head
//! within [`REQUEST_TIMEOUT`], or does not take the answer within the same time, is closed:
//! a scraper's connections cannot pile up, and neither can an attacker's.

use crate::AgentStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections the metrics listener holds: 64, 16 per address.
pub const METRICS_LIMITS: twoway_net::Limits = twoway_net::Limits {
    max_connections: 64,
    max_per_address: 16,
};

/// Time to send a request head, and to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `status` on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, status: Arc<AgentStatus>) {
    let table = twoway_net::ConnTable::new(METRICS_LIMITS);
    loop {
        let a = twoway_net::accept(&listener, &table).await;
        let status = status.clone();
        tokio::spawn(async move {
            let twoway_net::Accepted {
                mut stream, conn, ..
            } = a;
            let mut buf = [0u8; 2048];
            let mut n = 0;
            let head = async {
                while n < buf.len() {
                    match stream.read(&mut buf[n..]).await {
                        Ok(k) if k > 0 => n += k,
                        _ => return false,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        return true;
                    }
                }
                // A head larger than the buffer: answered all the same.
                true
            };
            let complete = tokio::select! {
                done = head => done,
                _ = conn.shed() => false,
                _ = conn.idle_timeout(REQUEST_TIMEOUT, REQUEST_TIMEOUT) => false,
            };
            if !complete {
                return;
            }
            let _busy = conn.busy();
            let body = status.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
                stream.write_all(resp.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    async fn closed(s: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 256];
        let read = async {
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, read).await.is_ok()
    }

    #[tokio::test]
    async fn silent_connections_are_shed_and_timed_out_and_scrapes_still_answered() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let status = Arc::new(AgentStatus::default());
        let server = tokio::spawn(serve_metrics(l, status));
        // One more silent connection than an address may hold: the oldest is closed.
        let mut silent = Vec::new();
        for _ in 0..=METRICS_LIMITS.max_per_address {
            silent.push(TcpStream::connect(addr).await.unwrap());
            tokio::task::yield_now().await;
        }
        assert!(closed(&mut silent[0], Duration::from_secs(2)).await);
        // A scrape is answered meanwhile.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("twoway_agent_"), "{answer}");
        // The others are closed by the request deadline.
        let last = silent.last_mut().unwrap();
        assert!(closed(last, REQUEST_TIMEOUT + Duration::from_secs(3)).await);
        server.abort();
    }
}
