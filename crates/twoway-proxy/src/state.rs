//! Loading a listener's TLS material from its files (and CRL URLs) into a rustls
//! configuration, and fingerprinting those inputs so the reloader knows when to rebuild.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use sha2::{Digest, Sha256};
use twoway_tls::{Credentials, PeerAuth, TrustBundle};

use crate::config::{ClientSpec, CrlSource, EnrollSpec, Routes, ServerSpec};
use crate::ocsp::{OcspChecker, Verdict};
use crate::ProxyError;

/// Largest CRL accepted from a URL.
const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;

/// What a server listener needs per accepted connection; swapped whole on reload.
#[derive(Debug)]
pub struct ServerState {
    /// The rustls configuration (credentials, client verifier with CRLs and rules).
    pub tls: Arc<rustls::ServerConfig>,
    /// HTTP route rules.
    pub routes: Routes,
    /// notAfter of our certificate.
    pub not_after: i64,
    /// Each CRL's source and `nextUpdate` (Unix time).
    pub crl_next_update: Vec<(String, i64)>,
    /// The OCSP gate, when on.
    pub ocsp: Option<OcspGate>,
}

/// The OCSP gate of a listener and the CA certificates its peers' issuers are found in.
#[derive(Debug, Clone)]
pub struct OcspGate {
    /// The listener's checker (its cache outlives reloads).
    pub checker: Arc<OcspChecker>,
    /// The trusted CA certificates.
    pub anchors: Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl OcspGate {
    fn new(checker: &Option<Arc<OcspChecker>>, auth: &PeerAuth) -> Option<Self> {
        checker.as_ref().map(|c| OcspGate {
            checker: c.clone(),
            anchors: Arc::new(auth.trust.certificates().to_vec()),
        })
    }

    /// Asks the checker about a verified peer chain (leaf first).
    pub async fn check(&self, chain: &[rustls::pki_types::CertificateDer<'_>]) -> Verdict {
        self.checker.check(chain, &self.anchors).await
    }
}

/// What a client listener needs per connection; swapped whole on reload.
#[derive(Debug)]
pub struct ClientState {
    /// The rustls configuration.
    pub tls: Arc<rustls::ClientConfig>,
    /// notAfter of our certificate.
    pub not_after: i64,
    /// Each CRL's source and `nextUpdate` (Unix time).
    pub crl_next_update: Vec<(String, i64)>,
    /// The OCSP gate for the server's certificate, when on.
    pub ocsp: Option<OcspGate>,
}

/// The last bytes fetched from each CRL URL.
#[derive(Debug, Default)]
pub struct CrlCache {
    map: Mutex<HashMap<String, Vec<u8>>>,
}

impl CrlCache {
    pub(crate) fn get(&self, url: &str) -> Option<Vec<u8>> {
        self.map.lock().ok().and_then(|m| m.get(url).cloned())
    }

    pub(crate) fn put(&self, url: &str, bytes: Vec<u8>) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(url.to_owned(), bytes);
        }
    }
}

/// Fetches a CRL over plain HTTP (with a 10 s deadline and a size cap).
pub async fn fetch_crl(url: &str) -> Result<Vec<u8>, ProxyError> {
    let err = |detail: String| ProxyError::FetchCrl {
        url: url.to_owned(),
        detail,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| err(e.to_string()))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let fut = async {
        let resp = client.get(uri).await.map_err(|e| err(format!("{e:#}")))?;
        if resp.status() != http::StatusCode::OK {
            return Err(err(format!("HTTP status {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_CRL_BYTES)
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| err("timed out after 10 s".into()))?
}

/// Reads one input file.
fn read(kind: &'static str, path: &Path) -> Result<Vec<u8>, ProxyError> {
    std::fs::read(path).map_err(|source| ProxyError::ReadFile {
        kind,
        path: path.to_owned(),
        source,
    })
}

/// The raw bytes of a listener's inputs, read once.
struct Inputs {
    cert: Vec<u8>,
    key: zeroize::Zeroizing<Vec<u8>>,
    ca: Vec<u8>,
    crls: Vec<(String, Vec<u8>)>,
}

impl Inputs {
    fn read(
        cert: &Path,
        key: &Path,
        ca: &Path,
        ca_kind: &'static str,
        crls: &[CrlSource],
        cache: &CrlCache,
        memory: Option<&twoway_agent::MemoryCredentials>,
    ) -> Result<Self, ProxyError> {
        let mut crl_bytes = Vec::new();
        for c in crls {
            match c {
                CrlSource::File(p) => crl_bytes.push((p.display().to_string(), read("CRL", p)?)),
                CrlSource::Url(u) => match cache.get(u) {
                    Some(b) => crl_bytes.push((u.clone(), b)),
                    None => {
                        return Err(ProxyError::FetchCrl {
                            url: u.clone(),
                            detail: "not fetched yet".into(),
                        })
                    }
                },
            }
        }
        if let Some(m) = memory {
            let Some(mat) = m.get() else {
                return Err(ProxyError::Config(
                    "no certificate yet: the enrollment has not succeeded".into(),
                ));
            };
            let ca = if ca.as_os_str().is_empty() {
                mat.root_pem.into_bytes()
            } else {
                read(ca_kind, ca)?
            };
            return Ok(Self {
                cert: mat.chain_pem.into_bytes(),
                key: zeroize::Zeroizing::new(mat.key_pem.as_bytes().to_vec()),
                ca,
                crls: crl_bytes,
            });
        }
        Ok(Self {
            cert: read("certificate", cert)?,
            key: zeroize::Zeroizing::new(read("key", key)?),
            ca: read(ca_kind, ca)?,
            crls: crl_bytes,
        })
    }

    /// Each CRL's source and `nextUpdate`, for the metrics.
    fn crl_next_update(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for (name, bytes) in &self.crls {
            for der in twoway_tls::parse_crls(name, bytes).unwrap_or_default() {
                if let Some(t) = twoway_tls::crl_next_update(&der) {
                    out.push((name.clone(), t));
                }
            }
        }
        out
    }

    fn fingerprint(&self, extra: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&self.cert, &*self.key, &self.ca] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        for (name, b) in &self.crls {
            h.update(name.as_bytes());
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
        h.update(extra.as_bytes());
        h.finalize().into()
    }

    fn peer_auth(
        &self,
        listener: &str,
        ca_path: &Path,
        policy: &twoway_tls::Policy,
        stale_crl: twoway_tls::StaleCrl,
    ) -> Result<(Credentials, PeerAuth), ProxyError> {
        let tls = |source| ProxyError::Tls {
            listener: listener.to_owned(),
            source,
        };
        let creds = Credentials::from_pem(
            "certificate/key",
            &self.cert,
            &self.key,
            &twoway_tls::provider(),
        )
        .map_err(tls)?;
        let trust = TrustBundle::from_pem(&ca_path.display().to_string(), &self.ca).map_err(tls)?;
        let mut crls = Vec::new();
        for (name, bytes) in &self.crls {
            crls.extend(twoway_tls::parse_crls(name, bytes).map_err(tls)?);
        }
        Ok((
            creds,
            PeerAuth {
                trust,
                crls,
                policy: policy.clone(),
                stale_crl,
            },
        ))
    }
}

fn name_files(err: ProxyError, cert: &Path, key: &Path) -> ProxyError {
    match err {
        ProxyError::Tls {
            listener,
            source: twoway_tls::Error::KeyMismatch { .. },
        } => ProxyError::Tls {
            listener,
            source: twoway_tls::Error::KeyMismatch {
                what: format!("{} and {}", cert.display(), key.display()),
            },
        },
        ProxyError::Tls {
            listener,
            source: twoway_tls::Error::NoPrivateKey { .. },
        } => ProxyError::Tls {
            listener,
            source: twoway_tls::Error::NoPrivateKey {
                what: key.display().to_string(),
            },
        },
        ProxyError::Tls {
            listener,
            source: twoway_tls::Error::NoCertificate { what },
        } if what == "certificate/key" => ProxyError::Tls {
            listener,
            source: twoway_tls::Error::NoCertificate {
                what: cert.display().to_string(),
            },
        },
        other => other,
    }
}

/// The in-memory credentials of an enrolling listener.
fn memory(enroll: Option<&EnrollSpec>) -> Option<&twoway_agent::MemoryCredentials> {
    match enroll.map(|e| &e.storage) {
        Some(twoway_agent::Storage::Memory(m)) => Some(m),
        _ => None,
    }
}

/// A fingerprint of everything a server listener's state is built from.
pub fn server_fingerprint(spec: &ServerSpec, cache: &CrlCache) -> Result<[u8; 32], ProxyError> {
    Ok(server_inputs(spec, cache)?.1)
}

/// What a server listener's state is built from, and its fingerprint.
fn server_inputs(spec: &ServerSpec, cache: &CrlCache) -> Result<(Inputs, [u8; 32]), ProxyError> {
    let inputs = Inputs::read(
        &spec.cert,
        &spec.key,
        &spec.client_ca,
        "client CA",
        &spec.crls,
        cache,
        memory(spec.enroll.as_ref()),
    )?;
    let fp = inputs.fingerprint(&format!(
        "{:?}{:?}{:?}",
        spec.policy, spec.routes, spec.stale_crl
    ));
    Ok((inputs, fp))
}

/// Builds a server listener's state from its files; also returns the inputs' fingerprint.
pub fn load_server(
    spec: &ServerSpec,
    cache: &CrlCache,
    ocsp: &Option<Arc<OcspChecker>>,
) -> Result<(ServerState, [u8; 32]), ProxyError> {
    let (inputs, fp) = server_inputs(spec, cache)?;
    let (creds, auth) = inputs
        .peer_auth(&spec.name, &spec.client_ca, &spec.policy, spec.stale_crl)
        .map_err(|e| name_files(e, &spec.cert, &spec.key))?;
    let tls =
        twoway_tls::server_config(&creds, &auth, &spec.tls).map_err(|source| ProxyError::Tls {
            listener: spec.name.clone(),
            source,
        })?;
    Ok((
        ServerState {
            tls,
            routes: spec.routes.clone(),
            not_after: creds.not_after_unix(),
            crl_next_update: inputs.crl_next_update(),
            ocsp: OcspGate::new(ocsp, &auth),
        },
        fp,
    ))
}

/// A fingerprint of everything a client listener's state is built from.
pub fn client_fingerprint(spec: &ClientSpec, cache: &CrlCache) -> Result<[u8; 32], ProxyError> {
    Ok(client_inputs(spec, cache)?.1)
}

/// What a client listener's state is built from, and its fingerprint.
fn client_inputs(spec: &ClientSpec, cache: &CrlCache) -> Result<(Inputs, [u8; 32]), ProxyError> {
    let inputs = Inputs::read(
        &spec.cert,
        &spec.key,
        &spec.server_ca,
        "server CA",
        &spec.crls,
        cache,
        memory(spec.enroll.as_ref()),
    )?;
    let fp = inputs.fingerprint(&format!("{:?}{:?}", spec.policy, spec.stale_crl));
    Ok((inputs, fp))
}

/// Builds a client listener's state from its files; also returns the inputs' fingerprint.
pub fn load_client(
    spec: &ClientSpec,
    cache: &CrlCache,
    ocsp: &Option<Arc<OcspChecker>>,
) -> Result<(ClientState, [u8; 32]), ProxyError> {
    let (inputs, fp) = client_inputs(spec, cache)?;
    let (creds, auth) = inputs
        .peer_auth(&spec.name, &spec.server_ca, &spec.policy, spec.stale_crl)
        .map_err(|e| name_files(e, &spec.cert, &spec.key))?;
    let tls =
        twoway_tls::client_config(&creds, &auth, &spec.tls).map_err(|source| ProxyError::Tls {
            listener: spec.name.clone(),
            source,
        })?;
    Ok((
        ClientState {
            tls,
            not_after: creds.not_after_unix(),
            crl_next_update: inputs.crl_next_update(),
            ocsp: OcspGate::new(ocsp, &auth),
        },
        fp,
    ))
}
