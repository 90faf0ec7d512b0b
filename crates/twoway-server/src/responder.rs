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

/// A retiring intermediate (see `twoway ca rotate`): it answers for the certificates it
/// issued, signing with its own key (RFC 6960 §2.2: the CA itself as the responder).
struct RetiringIssuer {
    hashes: IssuerHashes,
    subject: String,
    key: Arc<dyn twoway_pki::Signer>,
    cert_der: Vec<u8>,
    not_after: OffsetDateTime,
}

/// Answers OCSP requests from a cache of pre-signed responses.
pub struct Responder {
    signer: ArcSwap<OcspSigner>,
    intermediate_subject: String,
    issuer: IssuerHashes,
    /// The retiring intermediates; their answers are signed per request, not cached.
    retiring: Vec<RetiringIssuer>,
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
        let mut retiring = Vec::new();
        for (_, s) in ca.retiring_signers() {
            retiring.push(RetiringIssuer {
                hashes: IssuerHashes::new(s.cert_der())?,
                subject: s.info().subject.clone(),
                key: s.key().clone(),
                cert_der: s.cert_der().to_vec(),
                not_after: s.info().not_after,
            });
        }
        Ok(Responder {
            issuer: IssuerHashes::new(&intermediate_der)?,
            intermediate_subject: ca.intermediate_info().subject.clone(),
            retiring,
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
        // The first certificate's issuer answers: the active intermediate through its
        // delegated responder, a retiring one with its own key. Certificates of another
        // issuer in the same request are `unknown` to it.
        let by_retiring = req.cert_ids.first().and_then(|id| {
            (!self.issuer.matches(id))
                .then(|| self.retiring.iter().find(|r| r.hashes.matches(id)))
                .flatten()
        });
        let (hashes, subject, not_after) = match by_retiring {
            Some(r) => (&r.hashes, &r.subject, r.not_after),
            None => (&self.issuer, &self.intermediate_subject, signer.not_after),
        };
        let next_update = (now + self.validity).min(not_after);
        let mut singles = Vec::with_capacity(req.cert_ids.len());
        let mut first = "unknown";
        for (i, id) in req.cert_ids.iter().enumerate() {
            let status = if hashes.matches(id) {
                match ca.store().find_certificate(&id.serial_hex) {
                    Ok(rec) if rec.serial == id.serial_hex && &rec.issuer == subject => {
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
        let signed = match by_retiring {
            Some(r) => build_response(r.key.as_ref(), &[&r.cert_der], now, &singles, None),
            None => build_response(&signer.key, &[&signer.cert_der], now, &singles, None),
        };
        let der = match signed {
            Ok(d) => Bytes::from(d),
            Err(e) => {
                tracing::error!(error = %e, "OCSP: signing failed");
                metrics.ocsp("error");
                return Bytes::from(error_response(OcspErrorStatus::InternalError));
            }
        };
        metrics.ocsp(first);
        if singles.len() == 1 && first != "unknown" && by_retiring.is_none() {
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

/// A signed CRL kept for serving.
#[derive(Clone)]
struct SignedCrl {
    der: Bytes,
    number: u64,
    this: OffsetDateTime,
    next: OffsetDateTime,
}

impl SignedCrl {
    /// Before half its validity: served as it is.
    fn young(&self, now: OffsetDateTime) -> bool {
        now < self.this + (self.next - self.this) / 2
    }
}

/// The intermediate's complete CRL and its delta CRL as last signed. A revocation makes the
/// delta stale, and the complete CRL too unless `[crl] delta` is on: then the complete CRL
/// is re-signed only at half its validity, and each revocation costs a delta (the
/// certificates revoked since the complete CRL) instead of the whole list.
#[derive(Default)]
pub struct CrlCache {
    current: RwLock<Option<SignedCrl>>,
    dirty: AtomicBool,
    delta: RwLock<Option<(SignedCrl, u64)>>,
    delta_dirty: AtomicBool,
    /// `[crl] delta`.
    deltas: bool,
    /// A non-active intermediate's CRL (`/crl/<id>`; see `twoway ca rotate`); None: the
    /// active intermediate's.
    issuer: Option<String>,
    /// Serializes regeneration.
    pub regen: tokio::sync::Mutex<()>,
}

impl CrlCache {
    /// An empty cache; `deltas`: `[crl] delta`.
    pub fn new(deltas: bool) -> Self {
        CrlCache {
            deltas,
            ..CrlCache::default()
        }
    }

    /// The cache of the CRL of intermediate `id` when it is not the active one: complete
    /// CRLs only, signed with its own key (or its final CRL, once retired).
    pub fn for_issuer(id: &str) -> Self {
        CrlCache {
            issuer: Some(id.to_string()),
            ..CrlCache::default()
        }
    }

    /// A revocation happened: the delta is stale, and the complete CRL unless deltas are on.
    pub fn mark_dirty(&self) {
        self.delta_dirty.store(true, Ordering::SeqCst);
        if !self.deltas {
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// The complete CRL if it is current.
    pub fn fresh(&self) -> Option<Bytes> {
        if self.dirty.load(Ordering::SeqCst) {
            return None;
        }
        let g = self.current.read().ok()?;
        let c = g.as_ref()?;
        c.young(OffsetDateTime::now_utc()).then(|| c.der.clone())
    }

    /// The delta CRL if it is current: against the complete CRL served now, no revocation
    /// since, before half its validity.
    pub fn fresh_delta(&self) -> Option<Bytes> {
        if self.delta_dirty.load(Ordering::SeqCst) {
            return None;
        }
        let base = self.current.read().ok()?.as_ref()?.number;
        let g = self.delta.read().ok()?;
        let (d, against) = g.as_ref()?;
        (*against == base && d.young(OffsetDateTime::now_utc())).then(|| d.der.clone())
    }

    /// The current CRL's thisUpdate, nextUpdate and size, and whether a revocation made it
    /// stale; None before the first CRL was signed.
    pub fn status(&self) -> Option<(OffsetDateTime, OffsetDateTime, usize, bool)> {
        let g = self.current.read().ok()?;
        let c = g.as_ref()?;
        Some((
            c.this,
            c.next,
            c.der.len(),
            self.dirty.load(Ordering::SeqCst),
        ))
    }

    /// Signs a new complete CRL (blocking).
    pub fn regenerate(&self, ca: &Ca, actor: &str) -> Result<Bytes, twoway_ca::Error> {
        self.dirty.store(false, Ordering::SeqCst);
        let this = OffsetDateTime::now_utc();
        let (number, der) = match &self.issuer {
            Some(id) => ca.crl_of(id, None, actor)?,
            None => ca.crl(None, actor)?,
        };
        let next = this + ca.settings().crl_next_update;
        let der = Bytes::from(der);
        if let Ok(mut g) = self.current.write() {
            *g = Some(SignedCrl {
                der: der.clone(),
                number,
                this,
                next,
            });
        }
        Ok(der)
    }

    /// Signs a new delta CRL against the complete CRL served now, signing that first when
    /// there is none or it is stale (blocking).
    pub fn regenerate_delta(&self, ca: &Ca, actor: &str) -> Result<Bytes, twoway_ca::Error> {
        if self.fresh().is_none() {
            self.regenerate(ca, actor)?;
        }
        let base = self
            .current
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|c| (c.number, c.this)));
        let Some((number, this)) = base else {
            return Err(twoway_ca::Error::Refused(
                "no complete CRL to be relative to".into(),
            ));
        };
        self.delta_dirty.store(false, Ordering::SeqCst);
        let signed_at = OffsetDateTime::now_utc();
        let (n, der) = ca.delta_crl(number, this, None, actor)?;
        let (this, next) = (signed_at, signed_at + ca.settings().crl_delta_next_update);
        let der = Bytes::from(der);
        if let Ok(mut g) = self.delta.write() {
            let signed = SignedCrl {
                der: der.clone(),
                number: n,
                this,
                next,
            };
            *g = Some((signed, number));
        }
        Ok(der)
    }
}

/// The `tryLater` answer (RFC 6960 §2.3): the inventory did not answer in time.
pub(crate) fn try_later() -> Vec<u8> {
    error_response(OcspErrorStatus::TryLater)
}
