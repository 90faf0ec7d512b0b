//! Server mode: accept mTLS, verify, then forward bytes (TCP mode) or requests (HTTP mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use twoway_tls::{PeerIdentity, Reason, Reloadable};

use crate::backend::{BackendStream, BACKEND_CONNECT_TIMEOUT};
use crate::config::ServerSpec;
use crate::http::{HttpCtx, Peer, Proto};
use crate::metrics::ListenerMetrics;
use crate::state::ServerState;
use crate::tracker::{Spawner, Tracker};
use crate::{copy, proxy_protocol};

/// One bound server-mode listener.
pub struct ServerListener {
    pub(crate) spec: Arc<ServerSpec>,
    pub(crate) listener: TcpListener,
    pub(crate) state: Arc<Reloadable<ServerState>>,
    pub(crate) metrics: Arc<ListenerMetrics>,
    pub(crate) http: Option<Arc<HttpCtx>>,
    pub(crate) tracker: Tracker,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) workers: Spawner,
}

impl ServerListener {
    /// Accepts until shutdown.
    pub async fn run(mut self) {
        let limit = Arc::new(Semaphore::new(self.spec.max_connections));
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                _ = self.shutdown.changed() => break,
            };
            let (tcp, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // e.g. EMFILE: back off briefly instead of spinning
                    tracing::warn!(listener = %self.spec.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                self.metrics.refused_limit();
                tracing::warn!(listener = %self.spec.name, peer = %addr, "connection limit reached; closing");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let conn = Conn {
                spec: self.spec.clone(),
                state: self.state.load(),
                metrics: self.metrics.clone(),
                http: self.http.clone(),
                shutdown: self.shutdown.clone(),
                addr,
            };
            let guard = self.tracker.guard();
            self.workers.spawn(tcp, move |tcp| async move {
                conn.run(tcp, permit).await;
                drop(guard);
            });
        }
        tracing::info!(listener = %self.spec.name, "stopped accepting");
    }
}

/// Closes a connection whose handshake failed so that the client reads the alert: after the
/// alert, send FIN, then read and drop what the client still sends (bounded: 256 KiB or 1 s).
/// Closing with unread bytes in the socket (a TLS 1.3 client sends its first request right
/// after its Finished, curl's HTTP/2 preface included) would reset the connection, and the
/// reset can overtake the alert: the client would see "connection reset" instead of
/// "certificate required".
async fn linger_close(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    if tcp.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 8 * 1024];
        let mut left: usize = 256 * 1024;
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

struct Conn {
    spec: Arc<ServerSpec>,
    state: Arc<ServerState>,
    metrics: Arc<ListenerMetrics>,
    http: Option<Arc<HttpCtx>>,
    shutdown: watch::Receiver<bool>,
    addr: SocketAddr,
}

impl Conn {
    fn reject(&self, reason: Reason, detail: &dyn std::fmt::Display) {
        self.metrics.handshake_rejected(reason);
        tracing::info!(
            target: "twoway::access",
            listener = %self.spec.name,
            peer = %self.addr,
            reason = reason.as_str(),
            error = %detail,
            origin = "downstream",
            "handshake rejected"
        );
    }

    async fn run(self, tcp: TcpStream, _permit: OwnedSemaphorePermit) {
        let _active = self.metrics.connection();
        let acceptor = TlsAcceptor::from(self.state.tls.clone());
        // The handshake future and the TLS session are boxed so that this task (and every
        // state of it) stays small: an idle connection holds the session once, not a
        // task sized for the largest state of every mode.
        let accept = Box::pin(acceptor.accept(tcp).into_fallible());
        let tls = match tokio::time::timeout(self.spec.handshake_timeout, accept).await {
            Err(_) => return self.reject(Reason::Timeout, &"handshake timed out"),
            Ok(Err((e, tcp))) => {
                self.reject(Reason::from_io(&e), &e);
                // rustls has written its alert: make sure the client reads it. Boxed: its
                // buffer must not size every connection's task.
                return Box::pin(linger_close(tcp)).await;
            }
            Ok(Ok(s)) => Box::new(s),
        };
        let (_, session) = tls.get_ref();
        let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) else {
            return self.reject(Reason::NoClientCert, &"no client certificate");
        };
        let id = match PeerIdentity::from_leaf(leaf) {
            Ok(id) => id,
            Err(e) => return self.reject(Reason::BadCertificate, &e),
        };
        self.metrics.handshake_ok();
        tracing::info!(
            target: "twoway::access",
            listener = %self.spec.name,
            peer = %self.addr,
            identity = id.primary(),
            subject = %id.subject,
            decision = "allow",
            "handshake ok"
        );
        match &self.http {
            Some(ctx) => {
                let proto = Proto::from_alpn(tls.get_ref().1.alpn_protocol());
                let peer = Peer::new(id, self.addr);
                crate::http::serve(
                    tls,
                    proto,
                    peer,
                    ctx.clone(),
                    self.spec.idle_timeout,
                    self.shutdown.clone(),
                )
                .await;
            }
            None => Box::pin(self.forward(tls, id)).await,
        }
    }

    async fn forward(
        &self,
        mut tls: Box<tokio_rustls::server::TlsStream<TcpStream>>,
        id: PeerIdentity,
    ) {
        let mut backend = match tokio::time::timeout(
            BACKEND_CONNECT_TIMEOUT,
            BackendStream::connect(&self.spec.backend),
        )
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return self.upstream_failed(&e),
            Err(_) => return self.upstream_failed(&"connect timed out"),
        };
        if self.spec.proxy_protocol {
            let (tcp, session) = tls.get_ref();
            let local = tcp.local_addr().unwrap_or(self.spec.listen);
            let version = match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLSv1.3",
            };
            let sha = id.leaf_sha256_hex();
            let header = proxy_protocol::encode(
                self.addr,
                local,
                &proxy_protocol::TlsInfo {
                    alpn: session.alpn_protocol(),
                    sni: session.server_name(),
                    version,
                    cn: id.common_names.first().map(String::as_str),
                    identity: id.primary(),
                    cert_sha256: &sha,
                },
            );
            if let Err(e) = backend.write_all(&header).await {
                return self.upstream_failed(&e);
            }
        }
        match copy::relay(&mut *tls, &mut backend, self.spec.idle_timeout).await {
            Ok(r) => {
                self.metrics.add_bytes(r.a_to_b, r.b_to_a);
                tracing::debug!(
                    listener = %self.spec.name,
                    peer = %self.addr,
                    from_client = r.a_to_b,
                    to_client = r.b_to_a,
                    idle_timeout = r.idle_timeout,
                    "connection closed"
                );
            }
            Err(e) => {
                tracing::debug!(listener = %self.spec.name, peer = %self.addr, error = %e, "relay ended with an error");
            }
        }
    }

    fn upstream_failed(&self, e: &dyn std::fmt::Display) {
        self.metrics.upstream_error();
        tracing::warn!(
            listener = %self.spec.name,
            peer = %self.addr,
            backend = ?self.spec.backend,
            error = %e,
            origin = "upstream",
            retryable = true,
            "backend connection failed"
        );
    }
}
