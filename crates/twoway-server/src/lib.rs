//! twoway-server: the online twoway CA.
//!
//! It wraps an unlocked [`twoway_ca::Ca`] in an HTTPS server (rustls with aws-lc-rs, hyper):
//! the JSON API under `/v1` (enroll with a one-time token, renew over mutual TLS or with a
//! proof of possession, revoke, tokens and the inventory for admins, see `docs/api.md`),
//! `/roots.pem`, `/crl`, the OCSP responder at `/ocsp`, `/healthz` and `/metrics`. At start
//! it issues its own TLS certificate and a delegated OCSP signing certificate from the
//! intermediate, and renews both at two thirds of their life. Optionally a plain-HTTP
//! listener serves only the public, self-authenticating endpoints (OCSP, CRL, roots).
//!
//! It sits above `twoway-ca` and is the only place where domain errors become HTTP
//! statuses ([`routes`], from [`twoway_ca::Error::kind`]). Entry points: [`ServeOptions`],
//! [`start`] and [`Running`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod committer;
pub mod metrics;
mod plain;
pub mod ratelimit;
pub mod responder;
pub mod routes;
pub mod tls;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};
use tokio::net::TcpListener;
use twoway_ca::Ca;
use twoway_pki::{KeyType, PrivateKey, San};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CA refused or failed (issuing the server's own certificates, reading the store).
    #[error(transparent)]
    Ca(#[from] twoway_ca::Error),
    /// A certificate or key problem.
    #[error(transparent)]
    Pki(#[from] twoway_pki::Error),
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// A blocking task failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// HTTPS address (port 0: any free port).
    pub listen: SocketAddr,
    /// Optional plain-HTTP address for `/ocsp`, `/crl`, `/roots.pem`, `/healthz`.
    pub http_listen: Option<SocketAddr>,
    /// SANs of the server's own certificate.
    pub sans: Vec<San>,
    /// Validity of the server's own certificate.
    pub server_cert_ttl: Duration,
    /// Validity of the OCSP signing certificate.
    pub ocsp_cert_ttl: Duration,
    /// Who the server is, in the audit log (`server:<host>`).
    pub actor: String,
    /// Who may administer the CA over the API (`[server] admins`); replaced at run time
    /// with [`State::set_admins`].
    pub admins: Vec<String>,
}

/// Everything the handlers share.
pub struct State {
    /// The CA, unlocked.
    pub ca: Arc<Ca>,
    /// Counters.
    pub metrics: metrics::Metrics,
    /// Enrollment rate limit.
    pub limiter: ratelimit::RateLimiter,
    /// OCSP.
    pub ocsp: responder::Responder,
    /// CRL.
    pub crl: responder::CrlCache,
    /// Records the issuances the handlers prepared, in batches.
    pub committer: committer::Committer,
    /// The server's TLS identity.
    pub identity: Arc<tls::Identity>,
    /// Audit actor of the server itself.
    pub actor: String,
    /// The root certificate, PEM.
    pub root_pem: String,
    /// The intermediate certificate, PEM.
    pub intermediate_pem: String,
    /// Bumped whenever a revocation is seen (here or, through the store's counter, on
    /// another replica): authentications cached on connections older than this are redone.
    pub auth_generation: std::sync::atomic::AtomicU64,
    /// When the server's own certificate should be renewed.
    server_cert_renew_at: std::sync::Mutex<OffsetDateTime>,
    /// The administrators now (`[server] admins`, reloadable).
    admins: std::sync::RwLock<Arc<Vec<String>>>,
    opts: ServeOptions,
}

impl State {
    /// Who may administer the CA now.
    pub fn admins(&self) -> Arc<Vec<String>> {
        match self.admins.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the administrators (a reloaded `[server] admins`); requests from then on
    /// are authorized against the new list.
    pub fn set_admins(&self, admins: Vec<String>) {
        let new = Arc::new(admins);
        match self.admins.write() {
            Ok(mut a) => *a = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    /// The HTTPS address actually bound.
    pub https_addr: SocketAddr,
    /// The plain-HTTP address actually bound.
    pub http_addr: Option<SocketAddr>,
    /// Shared state (metrics, caches).
    pub state: Arc<State>,
}

fn two_thirds(nb: OffsetDateTime, na: OffsetDateTime) -> OffsetDateTime {
    nb + (na - nb) * 2 / 3
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Issues the server's TLS certificate (a fresh P-256 key) and returns the rustls key and
/// its renewal time.
fn issue_tls_identity(
    ca: &Ca,
    opts: &ServeOptions,
) -> Result<(Arc<rustls::sign::CertifiedKey>, OffsetDateTime), Error> {
    let key = PrivateKey::generate(KeyType::P256)?;
    let issued = ca.issue_server_cert(
        &key.public_key_der(),
        opts.sans.clone(),
        opts.server_cert_ttl,
        &opts.actor,
    )?;
    let int = twoway_pki::parse_certificates(ca.intermediate_pem().as_bytes())?;
    let mut chain = vec![issued.der.clone()];
    chain.extend(int);
    let ck = tls::certified_key(&provider(), chain, key.key_pair().serialize_der())?;
    Ok((
        ck,
        two_thirds(issued.info.not_before, issued.info.not_after),
    ))
}

fn issue_ocsp_signer(ca: &Ca, opts: &ServeOptions) -> Result<responder::OcspSigner, Error> {
    let key = PrivateKey::generate(KeyType::P256)?;
    let issued = ca.issue_ocsp_signer(&key.public_key_der(), opts.ocsp_cert_ttl, &opts.actor)?;
    Ok(responder::OcspSigner {
        key,
        cert_der: issued.der,
        not_after: issued.info.not_after,
        not_before: issued.info.not_before,
    })
}

/// Issues the server's own certificates, binds the listeners and starts serving in the
/// background of the current tokio runtime.
pub async fn start(ca: Ca, opts: ServeOptions) -> Result<Running, Error> {
    let ca = Arc::new(ca);
    let (ca2, o2) = (ca.clone(), opts.clone());
    let (tls_key, renew_at, ocsp_signer) = blocking(move || -> Result<_, Error> {
        let (k, r) = issue_tls_identity(&ca2, &o2)?;
        let s = issue_ocsp_signer(&ca2, &o2)?;
        Ok((k, r, s))
    })
    .await??;
    let validity = twoway_pki::parse_duration(&ca.config().server.ocsp_validity)?;
    let identity = Arc::new(tls::Identity::new(tls_key));
    let root_der = twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
        .into_iter()
        .next()
        .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
    let root_subject = root_subject_der(&root_der)?;
    let server_cfg = Arc::new(tls::server_config(
        provider(),
        identity.clone(),
        root_subject,
    )?);
    let sv = &ca.config().server;
    let state = Arc::new(State {
        metrics: metrics::Metrics::default(),
        limiter: ratelimit::RateLimiter::new(sv.enroll_rate, sv.enroll_burst),
        ocsp: responder::Responder::new(&ca, ocsp_signer, validity)?,
        crl: responder::CrlCache::default(),
        committer: committer::Committer::start(ca.clone())
            .map_err(|e| Error::Task(format!("cannot start the committer thread: {e}")))?,
        identity,
        actor: opts.actor.clone(),
        root_pem: ca.root_pem().to_string(),
        intermediate_pem: ca.intermediate_pem(),
        server_cert_renew_at: std::sync::Mutex::new(renew_at),
        auth_generation: std::sync::atomic::AtomicU64::new(0),
        admins: std::sync::RwLock::new(Arc::new(opts.admins.clone())),
        ca,
        opts: opts.clone(),
    });
    let https = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Bind(opts.listen, e))?;
    let https_addr = https
        .local_addr()
        .map_err(|e| Error::Bind(opts.listen, e))?;
    let http = match opts.http_listen {
        Some(a) => Some(TcpListener::bind(a).await.map_err(|e| Error::Bind(a, e))?),
        None => None,
    };
    let http_addr = match &http {
        Some(l) => Some(l.local_addr().map_err(|e| Error::Bind(https_addr, e))?),
        None => None,
    };
    tokio::spawn(accept_tls(https, server_cfg, state.clone()));
    if let Some(l) = http {
        tokio::spawn(accept_plain(l, state.clone()));
    }
    tokio::spawn(maintenance(state.clone()));
    Ok(Running {
        https_addr,
        http_addr,
        state,
    })
}

impl Running {
    /// Retires the server's own TLS and OCSP-signing certificates (revoked,
    /// `cessation-of-operation`): their keys live only in this process, so once it stops
    /// nobody can use them. Call it when shutting down; a restart issues new ones, so
    /// restarts do not pile up active certificates in the inventory.
    pub async fn retire(&self) -> Result<(), Error> {
        let state = self.state.clone();
        let tls = state.identity.leaf_fingerprint();
        let ocsp = Some(twoway_pki::sha256_hex(&state.ocsp.signer().cert_der));
        blocking(move || -> Result<(), Error> {
            for fp in [tls, ocsp].into_iter().flatten() {
                state.ca.retire_service_cert(
                    &fp,
                    twoway_pki::Reason::CessationOfOperation,
                    &state.actor,
                )?;
            }
            Ok(())
        })
        .await?
    }
}

/// Marks a replaced certificate of the server's own superseded, logging (not failing) when
/// that cannot be done: the new certificate is in use either way.
async fn supersede_own(state: &Arc<State>, fingerprint: Option<String>, what: &'static str) {
    let Some(fp) = fingerprint else { return };
    let st = state.clone();
    let res = blocking(move || {
        st.ca
            .retire_service_cert(&fp, twoway_pki::Reason::Superseded, &st.actor)
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, what, "could not mark the replaced certificate superseded")
        }
        Err(e) => {
            tracing::warn!(error = %e, what, "could not mark the replaced certificate superseded")
        }
    }
}

fn root_subject_der(root_der: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(twoway_pki::subject_der_of_cert(root_der)?)
}

/// Information about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The client certificate (DER), if one was presented.
    pub client_cert: Option<Vec<u8>>,
    /// True on the HTTPS listener.
    pub tls: bool,
    /// The client certificate's inventory record as last authenticated on this connection,
    /// with the [`State::auth_generation`] it was read in: reused by later requests until
    /// any revocation is seen or the certificate expires.
    pub(crate) authenticated: std::sync::Mutex<Option<(u64, twoway_store::CertRecord)>>,
}

impl ConnInfo {
    fn new(peer: SocketAddr, client_cert: Option<Vec<u8>>, tls: bool) -> Self {
        ConnInfo {
            peer,
            client_cert,
            tls,
            authenticated: std::sync::Mutex::new(None),
        }
    }
}

const MAX_CONNECTIONS: usize = 4096;

async fn accept_tls(listener: TcpListener, cfg: Arc<rustls::ServerConfig>, state: Arc<State>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(StdDuration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(StdDuration::from_secs(10), acceptor.accept(tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    state.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    state.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            let conn = Arc::new(ConnInfo::new(peer, client_cert, true));
            serve_conn(TokioIo::new(tls), conn, state).await;
        });
    }
}

async fn accept_plain(listener: TcpListener, state: Arc<State>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(StdDuration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = Arc::new(ConnInfo::new(peer, None, false));
            plain::serve(tcp, conn, state).await;
        });
    }
}

async fn serve_conn<I>(io: I, conn: Arc<ConnInfo>, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (state, conn) = (state.clone(), conn.clone());
        async move {
            Ok::<hyper::Response<Full<Bytes>>, std::convert::Infallible>(
                routes::handle(state, conn, req).await,
            )
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(io, svc).await;
}

/// Background duties: watch the revocation counter (drop cached OCSP answers, mark the CRL
/// stale: this is how a revocation on another replica reaches this one), and renew the
/// server's own certificates at two thirds of their life.
async fn maintenance(state: Arc<State>) {
    let mut last_seq: Option<u64> = None;
    let mut tick = tokio::time::interval(StdDuration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let ca = state.ca.clone();
        if let Ok(Ok(seq)) = blocking(move || ca.store().revocation_seq()).await {
            if last_seq.is_some_and(|l| l != seq) {
                state.auth_generation.fetch_add(1, Ordering::SeqCst);
                state.ocsp.clear();
                state.crl.mark_dirty();
            }
            last_seq = Some(seq);
        }
        if !n.is_multiple_of(40) {
            continue;
        }
        let now = OffsetDateTime::now_utc();
        let due = state
            .server_cert_renew_at
            .lock()
            .map(|t| *t <= now)
            .unwrap_or(false);
        if due {
            let (ca, opts) = (state.ca.clone(), state.opts.clone());
            match blocking(move || issue_tls_identity(&ca, &opts)).await {
                Ok(Ok((k, at))) => {
                    let old = state.identity.leaf_fingerprint();
                    state.identity.swap(k);
                    supersede_own(&state, old, "tls").await;
                    if let Ok(mut t) = state.server_cert_renew_at.lock() {
                        *t = at;
                    }
                    state.metrics.self_renewals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("renewed the server's TLS certificate");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the server certificate failed"),
                Err(e) => tracing::warn!(error = %e, "renewing the server certificate failed"),
            }
        }
        let signer = state.ocsp.signer();
        if two_thirds(signer.not_before, signer.not_after) <= now {
            let (ca, opts) = (state.ca.clone(), state.opts.clone());
            if let Ok(Ok(s)) = blocking(move || issue_ocsp_signer(&ca, &opts)).await {
                let old = twoway_pki::sha256_hex(&signer.cert_der);
                state.ocsp.swap_signer(s);
                supersede_own(&state, Some(old), "ocsp").await;
                state.metrics.self_renewals.fetch_add(1, Ordering::Relaxed);
                tracing::info!("renewed the OCSP signing certificate");
            }
        }
    }
}
