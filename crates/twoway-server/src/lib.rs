//! twoway-server: the online twoway CA.
//!
//! It wraps an unlocked [`twoway_ca::Ca`] in an HTTPS server (rustls with aws-lc-rs, hyper):
//! the JSON API under `/v1` (enroll with a one-time token, renew over mutual TLS or with a
//! proof of possession, revoke, tokens and the inventory for admins, see `docs/api.md`),
//! `/roots.pem`, `/crl`, the OCSP responder at `/ocsp`, the ACME directories of `ca.toml`
//! under `/acme/<name>/` (RFC 8555, for certbot, lego and other ACME clients), `/healthz` and `/metrics`. At start
//! it issues its own TLS certificate and a delegated OCSP signing certificate from the
//! intermediate, and renews both at two thirds of their life. Optionally a plain-HTTP
//! listener serves only the public, self-authenticating endpoints (OCSP, CRL, roots).
//!
//! It sits above `twoway-ca` and is the only place where domain errors become HTTP
//! statuses ([`routes`], from [`twoway_ca::Error::kind`]). Entry points: [`ServeOptions`],
//! [`start`] and [`Running`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod acme;
pub mod committer;
pub mod est;
pub mod metrics;
mod own;
mod plain;
pub mod ratelimit;
pub mod responder;
pub mod routes;
mod scep;
pub mod tls;
mod ui;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    /// A store call did not finish within [`STORE_DEADLINE`] (the database is paused or
    /// unreachable); it goes on in the background and its result is dropped.
    #[error("the inventory did not answer within {} s", STORE_DEADLINE.as_secs())]
    StoreTimeout,
    /// A setting of ca.toml cannot be used (the message names the key).
    #[error("{0}")]
    Config(String),
}

/// The longest a request waits for the inventory (a read, or the commit of its
/// certificate) before it is answered 503 with `Retry-After`: a database that is paused
/// or unreachable must not hold requests (and their connections) for ever.
pub const STORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest request head (HTTP/1.1) or header list (HTTP/2) the HTTPS listener reads.
pub const MAX_HTTPS_HEAD: usize = 32 * 1024;

/// What a 503 tells the client to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;

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
    pub admins: twoway_ca::Admins,
    /// Read the store's revocation counter (at most every 2 ms) before reusing a
    /// connection's cached authentication of an administrator (`POST /v1/sign`), so that a
    /// revocation made by any process on the same database (the CLI on the CA's host) is
    /// seen by the next signing. A local read of microseconds on SQLite; on PostgreSQL it
    /// would be a round trip, so it is off there and the window is the counter's poll
    /// (250 ms).
    pub check_revocations_per_request: bool,
}

/// The deadlines of both listeners (`[server]` in ca.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// For the TLS handshake.
    pub handshake: StdDuration,
    /// For the first request of a connection, from accept.
    pub first_request: StdDuration,
    /// Between requests of a kept-alive connection.
    pub idle: StdDuration,
}

impl Deadlines {
    fn from_config(sv: &twoway_ca::ServerSection) -> Result<Self, Error> {
        let d = |v: &str| -> Result<StdDuration, Error> {
            let t = twoway_pki::parse_duration(v)?;
            Ok(StdDuration::try_from(t).unwrap_or(StdDuration::from_secs(1)))
        };
        Ok(Deadlines {
            handshake: d(&sv.handshake_timeout)?,
            first_request: d(&sv.first_request_timeout)?,
            idle: d(&sv.idle_timeout)?,
        })
    }
}

/// The connection tables of the two listeners.
#[derive(Debug)]
pub struct Connections {
    /// The HTTPS listener's.
    pub https: twoway_net::ConnTable,
    /// The plain-HTTP listener's.
    pub http: twoway_net::ConnTable,
    /// Their deadlines.
    pub deadlines: Deadlines,
}

impl State {
    /// A revocation happened: every CRL this server signs is stale.
    pub(crate) fn mark_crls_dirty(&self) {
        self.crl.mark_dirty();
        for (_, c) in &self.issuer_crls {
            c.mark_dirty();
        }
    }

    /// The CRL cache of intermediate `id` (`g1` for `/crl`).
    pub(crate) fn crl_cache(&self, id: &str) -> Option<&responder::CrlCache> {
        if id == self.ca.active_issuer_id() {
            return Some(&self.crl);
        }
        self.issuer_crls
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, c)| c)
    }
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
    /// The active intermediate's CRL (and delta CRL).
    pub crl: responder::CrlCache,
    /// The other intermediates' CRLs (`/crl/<id>`), after a rotation.
    pub issuer_crls: Vec<(String, responder::CrlCache)>,
    /// Records the issuances the handlers prepared, in batches.
    pub committer: committer::Committer,
    /// Runs the ACME requests' store work, in batches.
    pub(crate) acme_state: acme::state::AcmeState,
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
    /// The store's revocation counter as last read (first at start).
    revocation_seq: std::sync::atomic::AtomicU64,
    /// When the signing path last read the counter, in nanoseconds since `started`.
    revocation_read_at: std::sync::atomic::AtomicU64,
    /// When the server started.
    started: std::time::Instant,
    /// The listeners' connection tables and deadlines.
    pub connections: Connections,
    /// SCEP at `/scep`, when `[scep] enabled`.
    pub(crate) scep: Option<scep::Scep>,
    /// EST: the bootstrap CA's verifier, if configured.
    pub est: est::Est,
    /// When the server's own certificate should be renewed.
    server_cert_renew_at: std::sync::Mutex<OffsetDateTime>,
    /// The administrators now (`[server] admins`, reloadable).
    admins: std::sync::RwLock<Arc<twoway_ca::Admins>>,
    /// The dashboard's auditors and CSRF key.
    ui: ui::Ui,
    opts: ServeOptions,
}

impl State {
    /// Who may administer the CA now.
    pub fn admins(&self) -> Arc<twoway_ca::Admins> {
        match self.admins.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the administrators (a reloaded `[server] admins`); requests from then on
    /// are authorized against the new list.
    pub fn set_admins(&self, admins: twoway_ca::Admins) {
        let new = Arc::new(admins);
        match self.admins.write() {
            Ok(mut a) => *a = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

impl State {
    /// Replaces the dashboard's read-only auditors (a reloaded `[server] auditors`).
    pub fn set_auditors(&self, auditors: twoway_ca::Admins) {
        self.ui.set_auditors(auditors);
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

/// [`blocking`] for a call that reads or writes the inventory while a request waits:
/// [`Error::StoreTimeout`] after [`STORE_DEADLINE`].
async fn store_call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::time::timeout(STORE_DEADLINE, blocking(f))
        .await
        .unwrap_or(Err(Error::StoreTimeout))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server's TLS certificate: the kept one when it may serve again ([`own`]), else a
/// new one (a fresh P-256 key), kept for the next start. Returns the rustls key, its
/// renewal time and the fingerprint of the kept certificate it replaced, if any.
fn tls_identity(
    ca: &Ca,
    opts: &ServeOptions,
    reuse: bool,
) -> Result<
    (
        Arc<rustls::sign::CertifiedKey>,
        OffsetDateTime,
        Option<String>,
    ),
    Error,
> {
    let int = twoway_pki::parse_certificates(ca.intermediate_pem().as_bytes())?;
    let certified = |key: &PrivateKey, der: Vec<u8>| {
        let mut chain = vec![der];
        chain.extend(int.iter().cloned());
        tls::certified_key(&provider(), chain, key.key_pair().serialize_der())
    };
    let mut replaced = None;
    if reuse {
        let sans = Some(&opts.sans[..]);
        match kept(ca, own::Role::Tls, opts.server_cert_ttl, sans) {
            Kept::Use(k) => {
                let at = two_thirds(k.info.not_before, k.info.not_after);
                return Ok((certified(&k.key, k.der)?, at, None));
            }
            Kept::Replace(fp) => replaced = Some(fp),
            Kept::None => {}
        }
    }
    let key = PrivateKey::generate(KeyType::P256)?;
    let issued = ca.issue_server_cert(
        &key.public_key_der(),
        opts.sans.clone(),
        opts.server_cert_ttl,
        &opts.actor,
    )?;
    keep(ca, own::Role::Tls, &key, &issued.der);
    let at = two_thirds(issued.info.not_before, issued.info.not_after);
    Ok((certified(&key, issued.der)?, at, replaced))
}

/// The OCSP-signing certificate, kept or new as [`tls_identity`] decides; with the
/// fingerprint of the kept one it replaced, if any.
fn ocsp_signer(
    ca: &Ca,
    opts: &ServeOptions,
    reuse: bool,
) -> Result<(responder::OcspSigner, Option<String>), Error> {
    let signer =
        |key: PrivateKey, der: Vec<u8>, info: &twoway_pki::CertInfo| responder::OcspSigner {
            key,
            cert_der: der,
            not_after: info.not_after,
            not_before: info.not_before,
        };
    let mut replaced = None;
    if reuse {
        match kept(ca, own::Role::Ocsp, opts.ocsp_cert_ttl, None) {
            Kept::Use(k) => {
                let k = *k;
                return Ok((signer(k.key, k.der, &k.info), None));
            }
            Kept::Replace(fp) => replaced = Some(fp),
            Kept::None => {}
        }
    }
    let key = PrivateKey::generate(KeyType::P256)?;
    let issued = ca.issue_ocsp_signer(&key.public_key_der(), opts.ocsp_cert_ttl, &opts.actor)?;
    keep(ca, own::Role::Ocsp, &key, &issued.der);
    Ok((signer(key, issued.der, &issued.info), replaced))
}

/// What to do with a kept certificate of the server's own.
enum Kept {
    /// Serve with it again.
    Use(Box<own::Kept>),
    /// Issue a new one and mark this one (its fingerprint) superseded.
    Replace(String),
    /// There is none (or none readable): issue a new one.
    None,
}

fn kept(ca: &Ca, role: own::Role, ttl: Duration, sans: Option<&[San]>) -> Kept {
    if !ca.keeps_service_keys() {
        return Kept::None;
    }
    match own::load(ca, role) {
        None => Kept::None,
        Some(Err(u)) => {
            tracing::warn!(
                ?role,
                why = u.why,
                "the kept certificate cannot be used; issuing a new one"
            );
            u.fingerprint.map_or(Kept::None, Kept::Replace)
        }
        Some(Ok(k)) => match own::reusable(ca, &k, ttl, sans, OffsetDateTime::now_utc()) {
            Ok(()) => {
                tracing::info!(?role, serial = %k.info.serial, "using the kept certificate again");
                Kept::Use(Box::new(k))
            }
            Err(why) => {
                tracing::info!(
                    ?role,
                    why,
                    "not using the kept certificate; issuing a new one"
                );
                Kept::Replace(k.info.fingerprint)
            }
        },
    }
}

fn keep(ca: &Ca, role: own::Role, key: &PrivateKey, der: &[u8]) {
    if let Err(e) = own::save(ca, role, key, der) {
        tracing::warn!(?role, error = %e, "could not keep the new certificate; the next start issues another");
    }
}

/// Issues the server's own certificates, binds the listeners and starts serving in the
/// background of the current tokio runtime.
pub async fn start(ca: Ca, opts: ServeOptions) -> Result<Running, Error> {
    let ca = Arc::new(ca);
    let (ca2, o2) = (ca.clone(), opts.clone());
    let (tls_key, renew_at, ocsp_signer) = blocking(move || -> Result<_, Error> {
        let (k, r, old_tls) = tls_identity(&ca2, &o2, true)?;
        let (s, old_ocsp) = ocsp_signer(&ca2, &o2, true)?;
        for fp in [old_tls, old_ocsp].into_iter().flatten() {
            if let Err(e) = ca2.retire_service_cert(&fp, twoway_pki::Reason::Superseded, &o2.actor)
            {
                tracing::warn!(error = %e, "could not mark the replaced certificate superseded");
            }
        }
        Ok((k, r, s))
    })
    .await??;
    let (ca2, actor) = (ca.clone(), opts.actor.clone());
    let scep = blocking(move || scep::Scep::start(&ca2, &actor)).await??;
    let validity = twoway_pki::parse_duration(&ca.config().server.ocsp_validity)?;
    let ca2 = ca.clone();
    let first_seq = blocking(move || ca2.store().revocation_seq())
        .await?
        .map_err(twoway_ca::Error::from)?;
    let identity = Arc::new(tls::Identity::new(tls_key));
    let root_der = twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
        .into_iter()
        .next()
        .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
    let root_subject = root_subject_der(&root_der)?;
    let est = est::Est::from_ca(&ca, provider()).map_err(Error::Config)?;
    let mut hints = vec![root_subject];
    hints.extend(est.hint_subjects().iter().cloned());
    let server_cfg = Arc::new(tls::server_config(provider(), identity.clone(), hints)?);
    let sv = &ca.config().server;
    let limits = twoway_net::Limits {
        max_connections: sv.max_connections,
        max_per_address: sv.max_connections_per_address,
    };
    let connections = Connections {
        https: twoway_net::ConnTable::new(limits),
        http: twoway_net::ConnTable::new(limits),
        deadlines: Deadlines::from_config(sv)?,
    };
    let state = Arc::new(State {
        metrics: metrics::Metrics::default(),
        limiter: ratelimit::RateLimiter::new(sv.enroll_rate, sv.enroll_burst),
        ocsp: responder::Responder::new(&ca, ocsp_signer, validity)?,
        crl: responder::CrlCache::new(ca.config().crl.delta),
        issuer_crls: ca
            .crl_issuer_ids()
            .into_iter()
            .filter(|id| id != ca.active_issuer_id())
            .map(|id| {
                let cache = responder::CrlCache::for_issuer(&id);
                (id, cache)
            })
            .collect(),
        committer: committer::Committer::start(ca.clone())
            .map_err(|e| Error::Task(format!("cannot start the committer thread: {e}")))?,
        acme_state: acme::state::AcmeState::start(ca.clone())
            .map_err(|e| Error::Task(format!("cannot start the ACME state thread: {e}")))?,
        identity,
        actor: opts.actor.clone(),
        root_pem: ca.root_pem().to_string(),
        intermediate_pem: ca.intermediate_pem(),
        server_cert_renew_at: std::sync::Mutex::new(renew_at),
        auth_generation: std::sync::atomic::AtomicU64::new(0),
        admins: std::sync::RwLock::new(Arc::new(opts.admins.clone())),
        ui: ui::Ui::new(ca.settings().server.auditors.clone()),
        revocation_seq: std::sync::atomic::AtomicU64::new(first_seq),
        revocation_read_at: std::sync::atomic::AtomicU64::new(0),
        started: std::time::Instant::now(),
        connections,
        scep,
        est,
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
    /// `cessation-of-operation`) when their keys live only in this process (the CA's key
    /// is in a token, see [`own`]): once it stops nobody can use them. Kept ones are left
    /// active for the next start. Call it when shutting down.
    pub async fn retire(&self) -> Result<(), Error> {
        let state = self.state.clone();
        if state.ca.keeps_service_keys() {
            return Ok(());
        }
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
    /// The certificates the client sent after its own (DER), for chains verified per
    /// request (EST's bootstrap certificates).
    pub client_intermediates: Vec<Vec<u8>>,
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
            client_intermediates: Vec::new(),
            tls,
            authenticated: std::sync::Mutex::new(None),
        }
    }
}

/// How long a connection being closed (shed, or past a deadline) gets to finish what it
/// is doing: an idle one closes at once; an HTTP/2 connection finishes its open streams.
const CLOSE_GRACE: StdDuration = StdDuration::from_secs(10);

async fn accept_tls(listener: TcpListener, cfg: Arc<rustls::ServerConfig>, state: Arc<State>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let a = twoway_net::accept(&listener, &state.connections.https).await;
        tokio::spawn(serve_tls(a, acceptor.clone(), state.clone()));
    }
}

/// One HTTPS connection: the handshake (within its deadline, given up when shed), then
/// HTTP until the client closes, the connection is shed, or it idles past a deadline.
async fn serve_tls(
    a: twoway_net::Accepted,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    let twoway_net::Accepted { stream, peer, conn } = a;
    let _ = stream.set_nodelay(true);
    let d = state.connections.deadlines;
    let handshake = tokio::time::timeout(d.handshake, acceptor.accept(stream).into_fallible());
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err((e, tcp))) => {
                state.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                // the client reads the alert rather than a reset
                Box::pin(twoway_net::linger_close(tcp)).await;
                return;
            }
            Err(_) => {
                state.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                conn.timed_out();
                tracing::debug!(%peer, "TLS handshake took too long");
                return;
            }
        },
        _ = conn.shed() => return,
        _ = conn.idle_timeout(d.first_request, d.idle) => return,
    };
    let presented = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let client_cert = presented.first().map(|c| c.as_ref().to_vec());
    let mut info = ConnInfo::new(peer, client_cert, true);
    info.client_intermediates = presented
        .iter()
        .skip(1)
        .take(8)
        .map(|c| c.as_ref().to_vec())
        .collect();
    let info = Arc::new(info);
    serve_conn(TokioIo::new(tls), info, conn, state).await;
}

async fn accept_plain(listener: TcpListener, state: Arc<State>) {
    loop {
        let a = twoway_net::accept(&listener, &state.connections.http).await;
        let _ = a.stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let info = Arc::new(ConnInfo::new(a.peer, None, false));
            plain::serve(a.stream, info, a.conn, state).await;
        });
    }
}

async fn serve_conn<I>(io: I, info: Arc<ConnInfo>, conn: twoway_net::Conn, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let d = state.connections.deadlines;
    let conn = Arc::new(conn);
    let c = conn.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // Busy from a complete request head until the answer is made: never shed then.
        let busy = c.busy();
        let (state, info) = (state.clone(), info.clone());
        async move {
            let resp = routes::handle(state, info, req).await;
            drop(busy);
            Ok::<hyper::Response<Full<Bytes>>, std::convert::Infallible>(resp)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper's own deadline for a request head (it starts when hyper waits for one, so it
    // also bounds the wait between requests); the connection table's deadlines below are
    // the tighter ones and cover HTTP/2 too.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(d.idle.max(d.first_request))
        // a request head larger than this is answered 431 (hyper's default, ~400 KiB a
        // connection, let idle connections hold much more memory than any client needs)
        .max_buf_size(MAX_HTTPS_HEAD);
    // HTTP/2: pings find a peer that vanished with streams open.
    builder
        .http2()
        .max_header_list_size(MAX_HTTPS_HEAD as u32)
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(d.idle))
        .keep_alive_timeout(d.handshake);
    let served = builder.serve_connection(io, svc);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        _ = conn.shed() => {}
        _ = conn.idle_timeout(d.first_request, d.idle) => {}
    }
    served.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
}

/// How often, at most, the signing path reads the revocation counter (all connections
/// together): a revocation by another process is seen by the signings that start this
/// long after it, and a busy server reads the store a few hundred times a second instead
/// of once per certificate (which cost about a tenth of `/v1/sign`'s throughput).
pub(crate) const REVOCATION_RECHECK: StdDuration = StdDuration::from_millis(2);

/// Whether the signing path should read the revocation counter now (the first caller
/// after [`REVOCATION_RECHECK`] does; the others go on with what was last read).
pub(crate) fn revocation_check_due(state: &State) -> bool {
    let now = u64::try_from(state.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let last = state.revocation_read_at.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= REVOCATION_RECHECK.as_nanos() as u64;
    due && state
        .revocation_read_at
        .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Takes note of the store's revocation counter: when it moved since it was last seen (a
/// revocation by another replica, or by the CLI on this database), cached OCSP answers are
/// dropped, the CRL marked stale and cached authentications redone.
pub(crate) fn saw_revocation_seq(state: &State, seq: u64) {
    if state.revocation_seq.swap(seq, Ordering::SeqCst) != seq {
        state.auth_generation.fetch_add(1, Ordering::SeqCst);
        state.ocsp.clear();
        state.mark_crls_dirty();
    }
}

/// `ca serve`'s periodic audit checkpoints (`[server] audit_checkpoint_interval`,
/// `audit_checkpoint_dir`): one when the interval has passed and the log has grown since
/// the last, written as `audit-checkpoint-<seq>.json` (atomically) for `twoway audit verify
/// --checkpoint`.
struct Checkpoints {
    /// The entry the last checkpoint vouched for.
    last_seq: Option<i64>,
    /// When the next one is due.
    due: OffsetDateTime,
}

impl Checkpoints {
    async fn maybe_write(&mut self, state: &Arc<State>) {
        let Some(every) = state.ca.settings().server.audit_checkpoint_interval else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        if now < self.due {
            return;
        }
        self.due = now + every;
        let (ca, actor, last) = (state.ca.clone(), state.actor.clone(), self.last_seq);
        let dir = state
            .ca
            .dir()
            .join(&state.ca.config().server.audit_checkpoint_dir);
        let res = blocking(
            move || -> Result<Option<(i64, std::path::PathBuf)>, String> {
                let Some(cp) = ca
                    .audit_checkpoint_if_grown(last, &actor)
                    .map_err(|e| e.to_string())?
                else {
                    return Ok(None);
                };
                let json = serde_json::to_vec_pretty(&cp).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let path = dir.join(format!("audit-checkpoint-{}.json", cp.seq));
                twoway_files::write_atomic(&path, &json, 0o644).map_err(|e| e.to_string())?;
                Ok(Some((cp.seq, path)))
            },
        )
        .await;
        match res {
            Ok(Ok(Some((seq, path)))) => {
                self.last_seq = Some(seq);
                tracing::info!(seq, path = %path.display(), "wrote an audit checkpoint");
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not write the audit checkpoint"),
            Err(e) => tracing::warn!(error = %e, "could not write the audit checkpoint"),
        }
    }
}

/// Background duties: watch the revocation counter (drop cached OCSP answers, mark the CRL
/// stale: this is how a revocation on another replica reaches this one), and renew the
/// server's own certificates at two thirds of their life.
async fn maintenance(state: Arc<State>) {
    let mut tick = tokio::time::interval(StdDuration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let mut checkpoints = Checkpoints {
        last_seq: None,
        due: OffsetDateTime::now_utc(),
    };
    loop {
        tick.tick().await;
        n += 1;
        let ca = state.ca.clone();
        if let Ok(Ok(seq)) = blocking(move || ca.store().revocation_seq()).await {
            saw_revocation_seq(&state, seq);
        }
        checkpoints.maybe_write(&state).await;
        if !n.is_multiple_of(40) {
            continue;
        }
        let ca = state.ca.clone();
        let _ = blocking(move || acme::purge(ca.store())).await;
        scep::maintain(&state).await;
        let now = OffsetDateTime::now_utc();
        let due = state
            .server_cert_renew_at
            .lock()
            .map(|t| *t <= now)
            .unwrap_or(false);
        if due {
            let (ca, opts) = (state.ca.clone(), state.opts.clone());
            match blocking(move || tls_identity(&ca, &opts, false)).await {
                Ok(Ok((k, at, _))) => {
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
            if let Ok(Ok((s, _))) = blocking(move || ocsp_signer(&ca, &opts, false)).await {
                let old = twoway_pki::sha256_hex(&signer.cert_der);
                state.ocsp.swap_signer(s);
                supersede_own(&state, Some(old), "ocsp").await;
                state.metrics.self_renewals.fetch_add(1, Ordering::Relaxed);
                tracing::info!("renewed the OCSP signing certificate");
            }
        }
    }
}
