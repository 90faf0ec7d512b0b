//! Client mode: accept plaintext locally, originate mTLS to the target, relay bytes.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;
use twoway_tls::{PeerIdentity, Reason, Reloadable};

use crate::config::ClientSpec;
use crate::copy;
use crate::metrics::ListenerMetrics;
use crate::state::ClientState;
use crate::tracker::{Spawner, Tracker};

/// One bound client-mode listener.
pub struct ClientListener {
    pub(crate) spec: Arc<ClientSpec>,
    pub(crate) listener: TcpListener,
    pub(crate) state: Arc<Reloadable<ClientState>>,
    pub(crate) metrics: Arc<ListenerMetrics>,
    pub(crate) tracker: Tracker,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) workers: Spawner,
}

impl ClientListener {
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
                    tracing::warn!(listener = %self.spec.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                self.metrics.refused_limit();
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let spec = self.spec.clone();
            let state = self.state.load();
            let metrics = self.metrics.clone();
            let guard = self.tracker.guard();
            self.workers.spawn(tcp, move |tcp| async move {
                one(spec, state, metrics, tcp, addr, permit).await;
                drop(guard);
            });
        }
        tracing::info!(listener = %self.spec.name, "stopped accepting");
    }
}

async fn one(
    spec: Arc<ClientSpec>,
    state: Arc<ClientState>,
    metrics: Arc<ListenerMetrics>,
    mut local: TcpStream,
    addr: std::net::SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _active = metrics.connection();
    let connector = TlsConnector::from(state.tls.clone());
    let attempt = async {
        let tcp = TcpStream::connect(spec.target.as_str())
            .await
            .map_err(|e| (false, e))?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(spec.server_name.clone(), tcp)
            .await
            .map_err(|e| (true, e))
    };
    let mut tls = match tokio::time::timeout(spec.handshake_timeout, attempt).await {
        Err(_) => {
            metrics.handshake_rejected(Reason::Timeout);
            tracing::warn!(listener = %spec.name, target = %spec.target, "connect/handshake timed out");
            return;
        }
        Ok(Err((false, e))) => {
            metrics.upstream_error();
            tracing::warn!(listener = %spec.name, target = %spec.target, error = %e, origin = "upstream", "cannot connect to target");
            return;
        }
        Ok(Err((true, e))) => {
            let reason = Reason::from_io(&e);
            metrics.handshake_rejected(reason);
            tracing::warn!(
                target: "twoway::access",
                listener = %spec.name,
                target_addr = %spec.target,
                reason = reason.as_str(),
                error = %e,
                origin = "upstream",
                "server handshake rejected"
            );
            return;
        }
        Ok(Ok(s)) => s,
    };
    if let Some(gate) = &state.ocsp {
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        if let crate::ocsp::Verdict::Refuse(reason) = gate.check(chain).await {
            // Counted here, logged once per certificate by the gate.
            metrics.handshake_rejected(reason);
            tracing::debug!(
                target: "twoway::access",
                listener = %spec.name,
                target_addr = %spec.target,
                reason = reason.as_str(),
                "server refused after OCSP"
            );
            return;
        }
    }
    metrics.handshake_ok();
    let server_id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| PeerIdentity::from_leaf(leaf).ok())
        .map(|id| id.primary().to_owned())
        .unwrap_or_default();
    tracing::info!(
        target: "twoway::access",
        listener = %spec.name,
        peer = %addr,
        server = server_id,
        "connected to target"
    );
    match copy::relay(&mut local, &mut tls, spec.idle_timeout).await {
        Ok(r) => metrics.add_bytes(r.a_to_b, r.b_to_a),
        Err(e) => tracing::debug!(listener = %spec.name, error = %e, "relay ended with an error"),
    }
}
