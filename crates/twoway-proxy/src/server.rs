//! Server mode: accept mTLS, verify, then forward bytes (TCP mode) or requests (HTTP mode).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
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
    /// Accepts until shutdown. The connection table admits or refuses each connection at
    /// once: when the listener (or the client's address) is full, the connection idle
    /// longest (a handshake not finished, or an HTTP connection between requests) is shed
    /// to make room; only when every one is busy is the new one refused.
    pub async fn run(mut self) {
        let table = twoway_net::ConnTable::new(self.spec.limits);
        loop {
            let (metrics, name) = (&self.metrics, &self.spec.name);
            let a = tokio::select! {
                a = twoway_net::accept_with(&self.listener, &table, |peer, why| {
                    metrics.refused_limit();
                    tracing::debug!(listener = %name, %peer, "connection refused: {why}");
                }) => a,
                _ = self.shutdown.changed() => break,
            };
            let _ = a.stream.set_nodelay(true);
            let conn = Conn {
                spec: self.spec.clone(),
                state: self.state.load(),
                metrics: self.metrics.clone(),
                http: self.http.clone(),
                shutdown: self.shutdown.clone(),
                addr: a.peer,
            };
            let guard = self.tracker.guard();
            let net = a.conn;
            self.workers.spawn(a.stream, move |tcp| async move {
                conn.run(tcp, net).await;
                drop(guard);
            });
        }
        tracing::info!(listener = %self.spec.name, "stopped accepting");
    }
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

    async fn run(self, tcp: TcpStream, net: twoway_net::Conn) {
        let _active = self.metrics.connection();
        let acceptor = TlsAcceptor::from(self.state.tls.clone());
        // The handshake future and the TLS session are boxed so that this task (and every
        // state of it) stays small: an idle connection holds the session once, not a
        // task sized for the largest state of every mode.
        let accept = Box::pin(acceptor.accept(tcp).into_fallible());
        let handshake = tokio::time::timeout(self.spec.handshake_timeout, accept);
        let tls = tokio::select! {
            r = handshake => match r {
                Err(_) => return self.reject(Reason::Timeout, &"handshake timed out"),
                Ok(Err((e, tcp))) => {
                    self.reject(Reason::from_io(&e), &e);
                    // rustls has written its alert: make sure the client reads it. Boxed: its
                    // buffer must not size every connection's task.
                    return Box::pin(twoway_net::linger_close(tcp)).await;
                }
                Ok(Ok(s)) => Box::new(s),
            },
            _ = net.shed() => {
                self.metrics.shed();
                tracing::debug!(listener = %self.spec.name, peer = %self.addr, "unfinished handshake closed to make room");
                return;
            }
        };
        let (_, session) = tls.get_ref();
        let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) else {
            return self.reject(Reason::NoClientCert, &"no client certificate");
        };
        let id = match PeerIdentity::from_leaf(leaf) {
            Ok(id) => id,
            Err(e) => return self.reject(Reason::BadCertificate, &e),
        };
        // OCSP after the chain, CRLs and rules, before the backend: per connection, so a
        // resumed session is checked as a full handshake is.
        if let Some(gate) = &self.state.ocsp {
            let chain = session.peer_certificates().unwrap_or_default();
            if let crate::ocsp::Verdict::Refuse(reason) = gate.check(chain).await {
                // Counted here, logged once per certificate by the gate.
                self.metrics.handshake_rejected(reason);
                tracing::debug!(
                    target: "twoway::access",
                    listener = %self.spec.name,
                    peer = %self.addr,
                    identity = id.primary(),
                    reason = reason.as_str(),
                    "refused after OCSP"
                );
                let mut tls = tls;
                tls.get_mut().1.send_close_notify();
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), tls.shutdown()).await;
                return;
            }
        }
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
                    net,
                )
                .await;
            }
            None => {
                // A relay of an authenticated client is never shed.
                let _busy = net.busy();
                Box::pin(self.forward(tls, id)).await
            }
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
