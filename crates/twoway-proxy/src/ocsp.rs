//! OCSP checking of peer certificates, per connection, after the handshake verified the
//! chain and CRLs and before anything is relayed (so resumed sessions are checked too).
//!
//! One [`OcspChecker`] per listener keeps a verdict per certificate (keyed by the leaf's
//! SHA-256): a good answer is used until its `nextUpdate` and refreshed in the background
//! from 80 % of its interval; `revoked` and `unknown` refuse until their `nextUpdate`; a
//! failed query (unreachable, slow, invalid answer) is remembered for `error_cache` and,
//! with no current good answer, refuses (or passes, counted, with `ocsp_fail_open`). At
//! most one query per certificate is in flight; connections arriving meanwhile wait for
//! it. Refusals and soft passes are logged once per certificate and reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use twoway_pki::ocsp::client::{responder_url, Status, Target};
use twoway_tls::Reason;

use crate::config::OcspSpec;
use crate::metrics::ListenerMetrics;

/// Clock difference allowed on `thisUpdate` and `nextUpdate`.
const SKEW_SECS: i64 = 300;
/// How long an answer without `nextUpdate` is used.
const NO_NEXT_UPDATE_SECS: i64 = 3600;
/// Largest answer read from a responder.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most certificates remembered per listener.
const MAX_ENTRIES: usize = 100_000;
/// Longest GET request path (RFC 5019 §5); longer requests are POSTed.
const MAX_GET: usize = 255;

/// What the gate says about one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// Close the connection; counted under this reason.
    Refuse(Reason),
}

#[derive(Debug, Default)]
struct Entry {
    /// `nextUpdate` (Unix seconds) of the last good answer, and when to refresh it.
    good: Option<(i64, i64)>,
    /// A revoked/unknown verdict and until when it holds (Unix seconds).
    refused: Option<(Reason, i64)>,
    /// The last failure and until when it is remembered.
    error: Option<(Reason, Instant)>,
    /// The certificate names no responder.
    no_url: bool,
    /// Waiters of the query in flight (the sender is dropped when it ends).
    inflight: Option<watch::Receiver<()>>,
    /// The last reason logged for this certificate (refusal or soft pass).
    logged: Option<Reason>,
}

enum Cached {
    Decided(Verdict, bool),
    Failed(Reason),
    NoUrl,
    Miss,
}

impl Entry {
    fn cached(&self, now: i64, instant: Instant) -> Cached {
        if let Some((reason, until)) = self.refused {
            if now <= until {
                return Cached::Decided(Verdict::Refuse(reason), false);
            }
        }
        if let Some((next, refresh_at)) = self.good {
            if now <= next.saturating_add(SKEW_SECS) {
                return Cached::Decided(Verdict::Allow, now >= refresh_at);
            }
        }
        if self.no_url {
            return Cached::NoUrl;
        }
        if let Some((reason, until)) = self.error {
            if instant < until {
                return Cached::Failed(reason);
            }
        }
        Cached::Miss
    }
}

/// The OCSP gate of one listener.
pub struct OcspChecker {
    spec: OcspSpec,
    listener: String,
    side: &'static str,
    metrics: Arc<ListenerMetrics>,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for OcspChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspChecker")
            .field("listener", &self.listener)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl OcspChecker {
    /// A gate for `listener` checking `side` (`client` or `server`) certificates.
    pub fn new(
        spec: OcspSpec,
        listener: &str,
        side: &'static str,
        metrics: Arc<ListenerMetrics>,
    ) -> Arc<Self> {
        Arc::new(OcspChecker {
            spec,
            listener: listener.to_owned(),
            side,
            metrics,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Decides about the verified peer chain `chain` (leaf first); `anchors` are the
    /// trusted CA certificates, where the leaf's issuer is looked for when the peer did not
    /// send it.
    pub async fn check(
        self: &Arc<Self>,
        chain: &[CertificateDer<'_>],
        anchors: &[CertificateDer<'static>],
    ) -> Verdict {
        let Some(leaf) = chain.first() else {
            return Verdict::Refuse(Reason::NoClientCert);
        };
        let key: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        // At most two rounds: the cache, then (after a query we waited for) the cache again.
        for round in 0..2 {
            let wait = {
                let Ok(mut map) = self.entries.lock() else {
                    return Verdict::Refuse(Reason::Other);
                };
                if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
                    map.retain(|_, e| e.inflight.is_some());
                }
                let entry = map.entry(key).or_default();
                match entry.cached(unix_now(), Instant::now()) {
                    Cached::Decided(v, refresh) => {
                        // a refresh that just failed waits out the error cache too
                        let resting = entry.error.is_some_and(|(_, until)| Instant::now() < until);
                        if refresh && entry.inflight.is_none() && !resting {
                            self.start_query(&key, entry, leaf, &chain[1..], anchors);
                        }
                        return self.decided(&key, entry, v);
                    }
                    Cached::NoUrl => return self.no_url(&key, entry),
                    Cached::Failed(reason) => return self.failed(&key, entry, reason),
                    Cached::Miss if round == 1 => {
                        // the query we waited for left nothing (it could not start)
                        return self.failed(&key, entry, Reason::OcspUnavailable);
                    }
                    Cached::Miss => match &entry.inflight {
                        Some(rx) => rx.clone(),
                        None => match self.start_query(&key, entry, leaf, &chain[1..], anchors) {
                            Some(rx) => rx,
                            None => {
                                let v = entry.cached(unix_now(), Instant::now());
                                return match v {
                                    Cached::NoUrl => self.no_url(&key, entry),
                                    Cached::Failed(r) => self.failed(&key, entry, r),
                                    _ => self.failed(&key, entry, Reason::OcspUnavailable),
                                };
                            }
                        },
                    },
                }
            };
            let mut wait = wait;
            // The query has its own timeout; this one only bounds the wait if it is lost.
            let limit = self.spec.timeout + Duration::from_secs(1);
            let _ = tokio::time::timeout(limit, wait.changed()).await;
        }
        Verdict::Refuse(Reason::OcspUnavailable)
    }

    fn decided(&self, key: &[u8; 32], entry: &mut Entry, v: Verdict) -> Verdict {
        match v {
            Verdict::Allow => entry.logged = None,
            Verdict::Refuse(reason) => {
                if entry.logged != Some(reason) {
                    entry.logged = Some(reason);
                    tracing::warn!(
                        listener = %self.listener,
                        side = self.side,
                        cert_sha256 = %hex::encode(key),
                        reason = reason.as_str(),
                        "OCSP: certificate refused (logged once per certificate and reason)"
                    );
                }
            }
        }
        v
    }

    fn no_url(&self, key: &[u8; 32], entry: &mut Entry) -> Verdict {
        self.metrics.ocsp_no_url();
        if self.spec.refuse_no_url {
            self.decided(key, entry, Verdict::Refuse(Reason::OcspNoUrl))
        } else {
            Verdict::Allow
        }
    }

    fn failed(&self, key: &[u8; 32], entry: &mut Entry, reason: Reason) -> Verdict {
        if !self.spec.fail_open {
            return self.decided(key, entry, Verdict::Refuse(reason));
        }
        self.metrics.ocsp_soft_pass(reason);
        if entry.logged != Some(reason) {
            entry.logged = Some(reason);
            tracing::warn!(
                listener = %self.listener,
                side = self.side,
                cert_sha256 = %hex::encode(key),
                reason = reason.as_str(),
                "OCSP: no usable answer; accepted because ocsp_fail_open = true (soft pass, counted; logged once per certificate and reason)"
            );
        }
        Verdict::Allow
    }

    /// Starts the query for `leaf` unless it cannot be made (no URL: recorded in `entry`;
    /// no issuer: a failure recorded in `entry`). Returns the receiver to wait on.
    fn start_query(
        self: &Arc<Self>,
        key: &[u8; 32],
        entry: &mut Entry,
        leaf: &CertificateDer<'_>,
        sent: &[CertificateDer<'_>],
        anchors: &[CertificateDer<'static>],
    ) -> Option<watch::Receiver<()>> {
        let url = match self.spec.url.clone().or_else(|| responder_url(leaf)) {
            Some(u) => u,
            None => {
                entry.no_url = true;
                return None;
            }
        };
        let target = sent
            .iter()
            .map(|c| c.as_ref())
            .chain(anchors.iter().map(|c| c.as_ref()))
            .find_map(|issuer| Target::new(leaf, issuer).ok());
        let Some(target) = target else {
            tracing::warn!(listener = %self.listener, "OCSP: the certificate's issuer is not among the CA certificates; cannot ask about it");
            entry.error = Some((
                Reason::OcspUnavailable,
                Instant::now() + self.spec.error_cache,
            ));
            return None;
        };
        let (tx, rx) = watch::channel(());
        entry.inflight = Some(rx.clone());
        let this = self.clone();
        let key = *key;
        tokio::spawn(async move {
            let result = tokio::time::timeout(this.spec.timeout, query(&url, &target)).await;
            let now = unix_now();
            let outcome = match result {
                Err(_) => Err((
                    Reason::OcspUnavailable,
                    format!("no answer within {:?}", this.spec.timeout),
                )),
                Ok(Err(e)) => Err((Reason::OcspUnavailable, e)),
                Ok(Ok(body)) => target
                    .verify(&body, now, SKEW_SECS)
                    .map_err(|p| (Reason::from_ocsp_problem(p.label()), p.to_string())),
            };
            this.record(key, &url, now, outcome);
            drop(tx);
        });
        Some(rx)
    }

    fn record(
        &self,
        key: [u8; 32],
        url: &str,
        now: i64,
        outcome: Result<twoway_pki::ocsp::client::Answer, (Reason, String)>,
    ) {
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() > MAX_ENTRIES {
            let instant = Instant::now();
            map.retain(|_, e| {
                e.inflight.is_some() || !matches!(e.cached(now, instant), Cached::Miss)
            });
            if map.len() > MAX_ENTRIES {
                map.retain(|_, e| e.inflight.is_some());
            }
        }
        let entry = map.entry(key).or_default();
        entry.inflight = None;
        match outcome {
            Ok(a) => {
                let next = a
                    .next_update
                    .unwrap_or(a.this_update.saturating_add(NO_NEXT_UPDATE_SECS));
                let start = a.this_update.min(now);
                let refresh_at = start + (next - start).max(0) * 4 / 5;
                entry.error = None;
                match a.status {
                    Status::Good => {
                        self.metrics.ocsp_answer("good");
                        entry.good = Some((next, refresh_at));
                        entry.refused = None;
                    }
                    Status::Revoked { .. } => {
                        self.metrics.ocsp_answer("revoked");
                        entry.good = None;
                        entry.refused = Some((Reason::Revoked, next.max(now + 1)));
                    }
                    Status::Unknown => {
                        self.metrics.ocsp_answer("unknown");
                        entry.good = None;
                        entry.refused = Some((Reason::OcspUnknown, next.max(now + 1)));
                    }
                }
            }
            Err((reason, detail)) => {
                self.metrics.ocsp_answer("failed");
                entry.error = Some((reason, Instant::now() + self.spec.error_cache));
                if entry.logged != Some(reason) {
                    tracing::warn!(
                        listener = %self.listener,
                        side = self.side,
                        cert_sha256 = %hex::encode(key),
                        responder = url,
                        reason = reason.as_str(),
                        error = %detail,
                        cached_good = entry.good.is_some(),
                        "OCSP: query failed"
                    );
                }
            }
        }
    }
}

/// Asks `url` about `target`: RFC 5019 GET (base64 of the request, URL-escaped, appended
/// to the URL), or POST when that path would be long. Returns the body of a 200 answer.
async fn query(url: &str, target: &Target) -> Result<Vec<u8>, String> {
    let request = target.request();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&request);
    let escaped = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build::<_, Full<Bytes>>(connector);
    let req = if escaped.len() <= MAX_GET {
        let sep = if url.ends_with('/') { "" } else { "/" };
        http::Request::get(format!("{url}{sep}{escaped}")).body(Full::new(Bytes::new()))
    } else {
        http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/ocsp-request")
            .body(Full::new(Bytes::from(request)))
    }
    .map_err(|e| format!("bad responder URL {url:?}: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("cannot reach the responder {url}: {e:#}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!(
            "the responder {url} answered HTTP {}",
            resp.status()
        ));
    }
    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer of {url}: {e}"))?;
    Ok(body.to_bytes().to_vec())
}
