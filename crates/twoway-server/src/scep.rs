//! SCEP (RFC 8894) at `/scep` (and `/scep/pkiclient.exe`) on both listeners.
//!
//! `GetCACaps` lists what is taken, one capability per line as Windows and iOS expect;
//! `GetCACert` answers the RA certificate with the intermediate and root as a degenerate
//! PKCS#7 (`application/x-x509-ca-ra-cert`); `PKIOperation` (GET with a base64 `message`,
//! or POST of the DER) carries a pkiMessage that `twoway-scep` reads, verifies and
//! decrypts with the RA key. A PKCSReq's challenge password is a one-time enrollment
//! token; a RenewalReq is signed by the certificate being renewed (found in the
//! inventory); GetCertInitial finds what a transaction was issued. Issuances are recorded
//! through the committer before the CertRep leaves; a refusal is a CertRep FAILURE with
//! its failInfo (and failInfoText saying why), counted in `/metrics`, recording nothing.
//! A body that is no pkiMessage at all has nothing to address a CertRep to: it gets 400.

use crate::routes::{percent_decode, ApiError, Resp};
use crate::{blocking, ConnInfo, State};
use arc_swap::ArcSwap;
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use twoway_api::codes;
use twoway_ca::{Error as CaError, ErrorKind};
use twoway_scep::{FailInfo, Header, MessageType, Ra, Refusal, Reply};

/// The RA keys a request may be encrypted to: the current one and, after a renewal, the
/// one before it (clients that fetched GetCACert earlier still use it).
struct RaSet {
    current: Arc<Ra>,
    previous: Option<Arc<Ra>>,
    /// GetCACert's answer.
    ca_ra_certs: Bytes,
}

/// SCEP's state in the server.
pub struct Scep {
    ras: ArcSwap<RaSet>,
    renew_at: Mutex<OffsetDateTime>,
    allow_legacy: bool,
    ca_certs_in_reply: bool,
    /// Intermediate and root, DER.
    chain: Vec<Vec<u8>>,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for Scep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scep")
            .field("allow_legacy", &self.allow_legacy)
            .finish_non_exhaustive()
    }
}

fn ra_from(m: &twoway_ca::scep::RaMaterial) -> Result<Ra, crate::Error> {
    Ra::new(&m.key_pkcs8, &m.cert_der).map_err(|e| crate::Error::Task(e.to_string()))
}

impl Scep {
    /// Loads (or makes) the RA and prepares SCEP; None when `[scep] enabled` is off.
    pub(crate) fn start(ca: &twoway_ca::Ca, actor: &str) -> Result<Option<Scep>, crate::Error> {
        let cfg = &ca.config().scep;
        if !cfg.enabled {
            return Ok(None);
        }
        let m = ca.scep_ra(actor)?;
        if let Some(old) = &m.replaced {
            let _ = ca.retire_service_cert(old, twoway_pki::Reason::Superseded, actor);
        }
        let mut chain = twoway_pki::parse_certificates(ca.intermediate_pem().as_bytes())?;
        chain.extend(twoway_pki::parse_certificates(ca.root_pem().as_bytes())?);
        let current = Arc::new(ra_from(&m)?);
        let scep = Scep {
            ras: ArcSwap::from_pointee(RaSet {
                ca_ra_certs: ca_ra_certs(&current, &chain),
                current,
                previous: None,
            }),
            renew_at: Mutex::new(m.renew_at()),
            allow_legacy: cfg.allow_legacy,
            ca_certs_in_reply: cfg.ca_certs_in_reply,
            chain,
            counts: Mutex::new(BTreeMap::new()),
        };
        tracing::info!(
            ra_sha256 = %twoway_pki::sha256_hex(&m.cert_der),
            allow_legacy = cfg.allow_legacy,
            "SCEP at /scep"
        );
        Ok(Some(scep))
    }

    fn count(&self, series: String) {
        if let Ok(mut g) = self.counts.lock() {
            *g.entry(series).or_default() += 1;
        }
    }

    /// The Prometheus lines of SCEP.
    pub(crate) fn render(&self, o: &mut String) {
        let _ = writeln!(o, "# HELP twoway_scep_total SCEP requests by operation and outcome, refusals by failInfo, legacy algorithms accepted.");
        let _ = writeln!(o, "# TYPE twoway_scep_total counter");
        if let Ok(g) = self.counts.lock() {
            for (s, n) in g.iter() {
                let _ = writeln!(o, "twoway_scep_total{{{s}}} {n}");
            }
        }
    }

    fn caps(&self) -> &'static str {
        if self.allow_legacy {
            "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nRenewal\nSHA-1\nDES3\n"
        } else {
            "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nRenewal\n"
        }
    }
}

fn ca_ra_certs(ra: &Ra, chain: &[Vec<u8>]) -> Bytes {
    let mut certs: Vec<&[u8]> = vec![ra.cert_der()];
    certs.extend(chain.iter().map(Vec::as_slice));
    Bytes::from(twoway_scep::certs_only(&certs))
}

/// Replaces the RA certificate at two thirds of its life (the key and certificate files
/// too); the previous RA still decrypts requests made with its certificate.
pub(crate) async fn maintain(state: &Arc<State>) {
    let Some(scep) = &state.scep else { return };
    let due = scep
        .renew_at
        .lock()
        .map(|t| *t <= OffsetDateTime::now_utc())
        .unwrap_or(false);
    if !due {
        return;
    }
    let st = state.clone();
    let made = blocking(move || st.ca.scep_ra(&st.actor)).await;
    let m = match made {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return tracing::warn!(error = %e, "renewing the SCEP RA certificate failed"),
        Err(e) => return tracing::warn!(error = %e, "renewing the SCEP RA certificate failed"),
    };
    let ra = match ra_from(&m) {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "the new SCEP RA cannot be used"),
    };
    let previous = Some(scep.ras.load().current.clone());
    scep.ras.store(Arc::new(RaSet {
        ca_ra_certs: ca_ra_certs(&ra, &scep.chain),
        current: Arc::new(ra),
        previous,
    }));
    if let Ok(mut t) = scep.renew_at.lock() {
        *t = m.renew_at();
    }
    if let Some(fp) = m.replaced {
        let st = state.clone();
        let _ = blocking(move || {
            st.ca
                .retire_service_cert(&fp, twoway_pki::Reason::Superseded, &st.actor)
        })
        .await;
    }
    tracing::info!("renewed the SCEP RA certificate");
}

fn answer(ctype: &'static str, body: Bytes) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        codes::INTERNAL,
        "internal error: see the CA's log",
    )
}

/// The query parameter `name`, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then(|| percent_decode(v)).flatten()
    })
}

/// One SCEP request; `query` is what follows `?`.
pub(crate) async fn handle(
    state: &Arc<State>,
    conn: &ConnInfo,
    method: &Method,
    query: &str,
    body: Bytes,
) -> Result<Resp, ApiError> {
    let Some(scep) = &state.scep else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "SCEP is off on this CA: set [scep] enabled = true in ca.toml and restart ca serve",
        ));
    };
    let op = param(query, "operation").unwrap_or_default();
    let operation = match op.as_str() {
        "GetCACaps" | "GetCACert" | "PKIOperation" | "GetNextCACert" => op.as_str(),
        _ => "other",
    };
    scep.count(format!("operation=\"{operation}\",outcome=\"request\""));
    match (operation, method) {
        ("GetCACaps", &Method::GET) => Ok(answer(
            "text/plain",
            Bytes::from_static(scep.caps().as_bytes()),
        )),
        ("GetCACert", &Method::GET) => Ok(answer(
            "application/x-x509-ca-ra-cert",
            scep.ras.load().ca_ra_certs.clone(),
        )),
        ("GetNextCACert", _) => Err(bad(
            "GetNextCACert is not offered (GetCACaps does not list it): fetch GetCACert",
        )),
        ("PKIOperation", &Method::GET) => {
            let msg = param(query, "message")
                .ok_or_else(|| bad("PKIOperation by GET needs message=<base64 pkiMessage>"))?;
            // '+' left unescaped in a query reads as a space
            let msg = msg.replace(' ', "+");
            let der = base64::engine::general_purpose::STANDARD
                .decode(msg.trim())
                .map_err(|_| bad("the message parameter is not base64"))?;
            pki_operation(state, scep, conn, Bytes::from(der)).await
        }
        ("PKIOperation", &Method::POST) => {
            let der = if body.first() == Some(&0x30) {
                body
            } else {
                let text: String = String::from_utf8_lossy(&body)
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                match base64::engine::general_purpose::STANDARD.decode(text) {
                    Ok(d) => Bytes::from(d),
                    Err(_) => body,
                }
            };
            pki_operation(state, scep, conn, der).await
        }
        ("GetCACaps" | "GetCACert" | "PKIOperation", _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed for {operation}: GET, or POST for PKIOperation"),
        )),
        _ => Err(bad(format!(
            "unknown SCEP operation {:?}: use GetCACaps, GetCACert or PKIOperation",
            op.chars().take(40).collect::<String>()
        ))),
    }
}

/// What the blocking half decided.
enum Step {
    /// A CertRep ready to send (a refusal, or a transaction answered again).
    Done(Vec<u8>, &'static str),
    /// An issuance to record, then answer.
    Record {
        outcome: twoway_ca::Outcome,
        header: Header,
        cipher: twoway_scep::Cipher,
        kind: &'static str,
    },
}

fn fail_info_of(e: &CaError) -> Option<FailInfo> {
    match e.kind() {
        ErrorKind::BadInput | ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Forbidden => {
            match e {
                CaError::CertRevoked(..) | CaError::CertExpired(_) => Some(FailInfo::BadCertId),
                _ => Some(FailInfo::BadRequest),
            }
        }
        ErrorKind::Unauthenticated => Some(match e {
            CaError::CertRevoked(..) | CaError::CertExpired(_) | CaError::Unauthenticated(_) => {
                FailInfo::BadCertId
            }
            _ => FailInfo::BadRequest,
        }),
        _ => None,
    }
}

async fn pki_operation(
    state: &Arc<State>,
    scep: &Scep,
    conn: &ConnInfo,
    der: Bytes,
) -> Result<Resp, ApiError> {
    let ras = scep.ras.load_full();
    let st = state.clone();
    let (allow_legacy, with_chain) = (scep.allow_legacy, scep.ca_certs_in_reply);
    let peer = conn.peer.ip();
    let step = blocking(move || decide(&st, &ras, &der, allow_legacy, with_chain, peer))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "blocking task failed");
            internal()
        })?;
    let (cert_rep, outcome) = match step {
        Err(e) => {
            scep.count("operation=\"PKIOperation\",outcome=\"malformed\"".into());
            return Err(e);
        }
        Ok((Step::Done(bytes, outcome), legacy)) => {
            count_legacy(scep, &legacy);
            (bytes, outcome)
        }
        Ok((
            Step::Record {
                outcome,
                header,
                cipher,
                kind,
            },
            legacy,
        )) => {
            count_legacy(scep, &legacy);
            let ras = scep.ras.load_full();
            match state.committer.record(outcome).await {
                Ok(issued) => {
                    state.metrics.issued("scep");
                    let mut certs: Vec<&[u8]> = vec![&issued.der];
                    if with_chain {
                        certs.extend(scep.chain.iter().map(Vec::as_slice));
                    }
                    let reply = Reply::Success {
                        certs: &certs,
                        cipher,
                    };
                    let bytes =
                        twoway_scep::cert_rep(&ras.current, &header, reply).map_err(|e| {
                            tracing::error!(error = %e, "building a CertRep failed");
                            internal()
                        })?;
                    tracing::info!(%peer, scep_message = kind, transaction = %header.transaction_id, serial = %issued.info.serial, "SCEP issued");
                    (bytes, kind)
                }
                Err(e) => match fail_info_of(&e) {
                    Some(fi) => (
                        refuse(
                            scep,
                            &ras.current,
                            &header,
                            Refusal::new(fi, e.to_string()),
                            peer,
                        )?,
                        "refused",
                    ),
                    None => {
                        tracing::error!(
                            error = &e as &dyn std::error::Error,
                            "recording a SCEP issuance failed"
                        );
                        return Err(internal());
                    }
                },
            }
        }
    };
    scep.count(format!("operation=\"PKIOperation\",outcome=\"{outcome}\""));
    Ok(answer("application/x-pki-message", Bytes::from(cert_rep)))
}

fn count_legacy(scep: &Scep, legacy: &[&'static str]) {
    for alg in legacy {
        scep.count(format!("legacy=\"{alg}\""));
    }
}

/// A CertRep FAILURE, logged and counted by failInfo.
fn refuse(
    scep: &Scep,
    ra: &Ra,
    header: &Header,
    r: Refusal,
    peer: std::net::IpAddr,
) -> Result<Vec<u8>, ApiError> {
    tracing::info!(%peer, scep_message = header.message_type.name(), transaction = %header.transaction_id, fail_info = r.fail_info.name(), "SCEP refused: {}", r.reason);
    scep.count(format!("fail_info=\"{}\"", r.fail_info.name()));
    twoway_scep::cert_rep(
        ra,
        header,
        Reply::Failure {
            fail_info: r.fail_info,
            text: &r.reason,
        },
    )
    .map_err(|e| {
        tracing::error!(error = %e, "building a CertRep failed");
        internal()
    })
}

type Decided = Result<(Step, Vec<&'static str>), ApiError>;

/// The blocking half: read, verify, decrypt, and judge the request against the CA.
fn decide(
    state: &State,
    ras: &RaSet,
    der: &[u8],
    allow_legacy: bool,
    with_chain: bool,
    peer: std::net::IpAddr,
) -> Decided {
    let Some(scep) = &state.scep else {
        return Err(internal());
    };
    let msg = twoway_scep::read(der).map_err(|e| {
        tracing::info!(%peer, "SCEP message refused: {e}");
        bad(format!(
            "{e}: send a DER pkiMessage (RFC 8894) by POST, or base64 in message= by GET"
        ))
    })?;
    let header = msg.header().clone();
    let mut keys: Vec<&Ra> = vec![ras.current.as_ref()];
    keys.extend(ras.previous.as_deref());
    let policy = twoway_scep::Policy {
        allow_legacy,
        now: OffsetDateTime::now_utc().unix_timestamp(),
    };
    let fail = |r: Refusal| -> Decided {
        Ok((
            Step::Done(refuse(scep, &ras.current, &header, r, peer)?, "refused"),
            Vec::new(),
        ))
    };
    let req = match msg.open(&keys, policy) {
        Ok(r) => r,
        Err(r) => return fail(r),
    };
    let legacy = req.legacy();
    let ca = &state.ca;
    let kind = req.header.message_type.name();
    let actor = format!("scep:{kind}@{peer}");
    let tid = req.header.transaction_id.clone();
    let done = |r: Result<(Step, Vec<&'static str>), ApiError>| r;
    let judged = match req.header.message_type {
        MessageType::PkcsReq => {
            let info = match twoway_scep::csr_info(&req.content) {
                Ok(i) => i,
                Err(e) => return fail(Refusal::new(FailInfo::BadRequest, e.to_string())),
            };
            let Some(secret) = info.challenge.as_deref() else {
                return fail(Refusal::new(
                    FailInfo::BadRequest,
                    "the CSR has no challenge password: put a one-time enrollment token (twoway token create) in it",
                ));
            };
            ca.prepare_scep_enroll(secret, &req.content, &info.subject, &tid, &actor)
        }
        MessageType::RenewalReq | MessageType::UpdateReq => {
            match ca.authenticate_scep_signer(&req.header.signer_cert) {
                Ok(current) => ca.prepare_scep_renew(&current, &req.content, &tid, &actor),
                Err(e) => Err(e),
            }
        }
        MessageType::CertPoll => {
            let found = ca.scep_transaction(&tid);
            let found = match found {
                Ok(f) => f,
                Err(e) => Err(e).map_err(|e: CaError| {
                    tracing::error!(
                        error = &e as &dyn std::error::Error,
                        "reading a SCEP transaction failed"
                    );
                    internal()
                })?,
            };
            let issued = found.and_then(|rec| {
                let der = twoway_pki::parse_certificates(rec.pem.as_bytes())
                    .ok()?
                    .into_iter()
                    .next()?;
                let spki = twoway_pki::spki_of_cert(&req.header.signer_cert).ok()?;
                twoway_pki::key_matches_cert(&spki, &der)
                    .unwrap_or(false)
                    .then_some(der)
            });
            let Some(cert) = issued else {
                return fail(Refusal::new(
                    FailInfo::BadCertId,
                    "no certificate was issued for this transactionID to this key: this CA answers PKCSReq at once and leaves nothing pending, so send the PKCSReq again",
                ));
            };
            let mut certs: Vec<&[u8]> = vec![&cert];
            if with_chain {
                certs.extend(scep.chain.iter().map(Vec::as_slice));
            }
            let rep = twoway_scep::cert_rep(
                &ras.current,
                &req.header,
                Reply::Success {
                    certs: &certs,
                    cipher: req.cipher,
                },
            )
            .map_err(|_| internal())?;
            return done(Ok((Step::Done(rep, "GetCertInitial"), legacy)));
        }
        _ => {
            return fail(Refusal::new(
                FailInfo::BadRequest,
                "messageType not served here",
            ));
        }
    };
    match judged {
        Ok(outcome) => Ok((
            Step::Record {
                outcome,
                header: req.header,
                cipher: req.cipher,
                kind,
            },
            legacy,
        )),
        Err(e) => match fail_info_of(&e) {
            Some(fi) => {
                let text = match &e {
                    CaError::Store(twoway_store::Error::TokenUnknown) => "the challenge password is not a known enrollment token: make one with twoway token create".to_string(),
                    other => other.to_string(),
                };
                fail(Refusal::new(fi, text))
            }
            None => {
                tracing::error!(error = &e as &dyn std::error::Error, "SCEP issuance failed");
                Err(internal())
            }
        },
    }
}
