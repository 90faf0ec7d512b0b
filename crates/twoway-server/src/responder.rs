//! The OCSP responder and the CRL endpoint's cache.
//!
//! OCSP answers are signed once per certificate and kept until they are half-way to their
//! nextUpdate or until any revocation is seen — locally, or on another replica through the
//! store's revocation counter, which the server polls every 250 ms. Requests with a nonce
//! get the cached answer without the nonce (the RFC 5019 practice that makes caching
//! possible).

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration as StdDuration, Instant};
use time::{Duration, OffsetDateTime};
use twoway_ca::Ca;
use twoway_pki::ocsp::{
    build_response, error_response, parse_request, IssuerHashes, OcspErrorStatus, OcspStatus,
    SingleResponse,
};
use twoway_pki::{PrivateKey, Reason};
use twoway_store::CertStatus;

/// The delegated signing key and its certificate chain.
pub struct OcspSigner {
    /// The key, in memory only.
    pub key: PrivateKey,
    /// The responder certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its end of validity.
    pub not_after: OffsetDateTime,
    /// Its start of validity.
    pub not_before: OffsetDateTime,
}

impl std::fmt::Debug for OcspSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspSigner")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

struct Cached {
    der: Bytes,
    fresh_until: Instant,
}

/// Answers OCSP requests from a cache of pre-signed responses.
pub struct Responder {
    signer: ArcSwap<OcspSigner>,
    intermediate_subject: String,
    issuer: IssuerHashes,
    validity: Duration,
    cache: RwLock<HashMap<String, Cached>>,
    /// Bumped by every [`Responder::clear`]: an answer computed from a read made before a
    /// clear is not cached after it (it may predate the revocation that caused the clear).
    generation: AtomicU64,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

const MAX_CACHED: usize = 200_000;

impl Responder {
    /// A responder for the CA's intermediate, signing with `signer`.
    pub fn new(ca: &Ca, signer: OcspSigner, validity: Duration) -> Result<Self, twoway_pki::Error> {
        let pem = ca.intermediate_pem();
        let intermediate_der = twoway_pki::parse_certificates(pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
        Ok(Responder {
            issuer: IssuerHashes::new(&intermediate_der)?,
            intermediate_subject: ca.intermediate_info().subject.clone(),
            signer: ArcSwap::from_pointee(signer),
            validity,
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        })
    }

    /// The current signer.
    pub fn signer(&self) -> Arc<OcspSigner> {
        self.signer.load_full()
    }

    /// Replaces the signer (after the server renewed it) and drops cached answers.
    pub fn swap_signer(&self, s: OcspSigner) {
        self.signer.store(Arc::new(s));
        self.clear();
    }

    /// Drops every cached answer.
    pub fn clear(&self) {
        if let Ok(mut c) = self.cache.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            c.clear();
        }
    }

    /// The cached answer for a request asking about one certificate, if fresh.
    pub fn cached(&self, request: &[u8]) -> Option<Bytes> {
        let req = parse_request(request).ok()?;
        if req.cert_ids.len() != 1 || !self.issuer.matches(&req.cert_ids[0]) {
            return None;
        }
        let c = self.cache.read().ok()?;
        let hit = c.get(&req.cert_ids[0].serial_hex)?;
        (hit.fresh_until > Instant::now()).then(|| hit.der.clone())
    }

    /// Answers a request (blocking: reads the inventory and signs). Returns the DER
    /// response and the status of the first certificate, for metrics.
    pub fn answer(&self, ca: &Ca, request: &[u8], metrics: &Metrics) -> Bytes {
        let req = match parse_request(request) {
            Ok(r) => r,
            Err(_) => {
                metrics.ocsp("malformed");
                return Bytes::from(error_response(OcspErrorStatus::MalformedRequest));
            }
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let signer = self.signer();
        let next_update = (now + self.validity).min(signer.not_after);
        let mut singles = Vec::with_capacity(req.cert_ids.len());
        let mut first = "unknown";
        for (i, id) in req.cert_ids.iter().enumerate() {
            let status = if self.issuer.matches(id) {
                match ca.store().find_certificate(&id.serial_hex) {
                    Ok(rec)
                        if rec.serial == id.serial_hex
                            && rec.issuer == self.intermediate_subject =>
                    {
                        match rec.status {
                            CertStatus::Active => OcspStatus::Good,
                            CertStatus::Revoked => OcspStatus::Revoked {
                                at: rec.revoked_at.unwrap_or(now),
                                reason: rec
                                    .revocation_reason
                                    .as_deref()
                                    .and_then(|r| r.parse().ok())
                                    .unwrap_or(Reason::Unspecified),
                            },
                        }
                    }
                    Ok(_) | Err(twoway_store::Error::NotFound(_)) => OcspStatus::Unknown,
                    Err(twoway_store::Error::Ambiguous(_)) => OcspStatus::Unknown,
                    Err(e) => {
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "OCSP: inventory lookup failed"
                        );
                        metrics.ocsp("error");
                        return Bytes::from(error_response(OcspErrorStatus::TryLater));
                    }
                }
            } else {
                OcspStatus::Unknown
            };
            let label = match status {
                OcspStatus::Good => "good",
                OcspStatus::Revoked { .. } => "revoked",
                OcspStatus::Unknown => "unknown",
            };
            if i == 0 {
                first = label;
            }
            singles.push(SingleResponse {
                cert_id_raw: id.raw.clone(),
                status,
                this_update: now,
                next_update: Some(next_update),
            });
        }
        // The delegated responder's certificate only: every client already holds the
        // issuer it asks about (it named it in the CertID), and that issuer is all a
        // client needs to check the delegation (RFC 6960 §4.2.2.2). Leaving the
        // intermediate out makes every answer ~40 % smaller.
        let chain: [&[u8]; 1] = [&signer.cert_der];
        let der = match build_response(&signer.key, &chain, now, &singles, None) {
            Ok(d) => Bytes::from(d),
            Err(e) => {
                tracing::error!(error = %e, "OCSP: signing failed");
                metrics.ocsp("error");
                return Bytes::from(error_response(OcspErrorStatus::InternalError));
            }
        };
        metrics.ocsp(first);
        if singles.len() == 1 && first != "unknown" {
            let half: Duration = (next_update - now) / 2;
            let fresh = StdDuration::from_secs(half.whole_seconds().max(0) as u64);
            if let Ok(mut c) = self.cache.write() {
                if self.generation.load(Ordering::SeqCst) != generation {
                    return der;
                }
                if c.len() >= MAX_CACHED {
                    c.clear();
                }
                c.insert(
                    req.cert_ids[0].serial_hex.clone(),
                    Cached {
                        der: der.clone(),
                        fresh_until: Instant::now() + fresh,
                    },
                );
            }
        }
        der
    }
}

/// The current CRL, re-signed after a revocation and before it is half-way to nextUpdate.
#[derive(Debug, Default)]
pub struct CrlCache {
    current: RwLock<Option<(Bytes, OffsetDateTime, OffsetDateTime)>>,
    dirty: AtomicBool,
    /// Serializes regeneration.
    pub regen: tokio::sync::Mutex<()>,
}

impl CrlCache {
    /// Marks the CRL stale (a revocation happened).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// The CRL if it is current.
    pub fn fresh(&self) -> Option<Bytes> {
        if self.dirty.load(Ordering::SeqCst) {
            return None;
        }
        let g = self.current.read().ok()?;
        let (der, this, next) = g.as_ref()?;
        let now = OffsetDateTime::now_utc();
        (now < *this + (*next - *this) / 2).then(|| der.clone())
    }

    /// The current CRL's thisUpdate, nextUpdate and size, and whether a revocation made it
    /// stale; None before the first CRL was signed.
    pub fn status(&self) -> Option<(OffsetDateTime, OffsetDateTime, usize, bool)> {
        let g = self.current.read().ok()?;
        let (der, this, next) = g.as_ref()?;
        Some((*this, *next, der.len(), self.dirty.load(Ordering::SeqCst)))
    }

    /// Signs a new CRL (blocking).
    pub fn regenerate(&self, ca: &Ca, actor: &str) -> Result<Bytes, twoway_ca::Error> {
        self.dirty.store(false, Ordering::SeqCst);
        let (_, der) = ca.crl(None, actor)?;
        let now = OffsetDateTime::now_utc();
        let next = now
            + twoway_pki::parse_duration(&ca.config().crl.next_update)
                .unwrap_or(Duration::hours(24));
        let der = Bytes::from(der);
        if let Ok(mut g) = self.current.write() {
            *g = Some((der.clone(), now, next));
        }
        Ok(der)
    }
}

/// The `tryLater` answer (RFC 6960 §2.3): the inventory did not answer in time.
pub(crate) fn try_later() -> Vec<u8> {
    error_response(OcspErrorStatus::TryLater)
}
