//! The enrollment and renewal loop.

use crate::client::{CaClient, ClientError, ClientIdentity};
use base64::Engine;
use rand::Rng;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use twoway_pki::{create_csr, CertInfo, KeyType, PrivateKey, San};

/// How the agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    /// The CA, `https://host:port`.
    pub ca_url: String,
    /// SHA-256 fingerprint of the CA's root: how trust is bootstrapped.
    pub ca_fingerprint: String,
    /// The one-time enrollment token (needed when there is no valid certificate yet).
    pub token: Option<String>,
    /// Names to ask for.
    pub sans: Vec<San>,
    /// Where the key and certificates are kept: files in a directory, or only in memory.
    pub storage: Storage,
    /// Key type of the keys made here.
    pub key_type: KeyType,
    /// A shell command run after new files are in place.
    pub reload_cmd: Option<String>,
    /// A file holding the pid of a process to send SIGHUP after new files are in place.
    pub signal_pid_file: Option<PathBuf>,
    /// Obtain or renew once if due, then return (for cron).
    pub once: bool,
    /// First retry delay while the CA is unreachable.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Fraction of the lifetime after which to renew.
    pub renew_fraction: f64,
    /// Random spread around the renewal point, as a fraction of the lifetime.
    pub jitter_fraction: f64,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("ca_url", &self.ca_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("sans", &self.sans)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// A config with the usual timings: renew at 2/3 with ±5% jitter, back off 1 s … 5 min.
    pub fn new(
        ca_url: String,
        ca_fingerprint: String,
        sans: Vec<San>,
        storage: impl Into<Storage>,
    ) -> Self {
        AgentConfig {
            ca_url,
            ca_fingerprint,
            token: None,
            sans,
            storage: storage.into(),
            key_type: KeyType::P256,
            reload_cmd: None,
            signal_pid_file: None,
            once: false,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            renew_fraction: 2.0 / 3.0,
            jitter_fraction: 0.05,
        }
    }
}

/// Where the agent keeps its key and certificates.
#[derive(Clone, Debug)]
pub enum Storage {
    /// `cert.pem`, `chain.pem`, `key.pem` (0600) and `ca.pem` in this directory, written
    /// atomically; a restarted agent renews what it finds there.
    Dir(PathBuf),
    /// Only in memory, handed to the process the agent runs in (the proxy's in-process
    /// agent): no key on disk, but a restarted process needs a new token.
    Memory(Arc<MemoryCredentials>),
}

impl From<PathBuf> for Storage {
    fn from(p: PathBuf) -> Self {
        Storage::Dir(p)
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Dir(p) => write!(f, "{}", p.display()),
            Storage::Memory(_) => f.write_str("memory"),
        }
    }
}

/// A certificate chain, its key and the CA root, as PEM.
#[derive(Clone)]
pub struct Material {
    /// Leaf first, then the intermediates.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: zeroize::Zeroizing<String>,
    /// The CA's root certificate.
    pub root_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Credentials the agent keeps in memory for its host process, with a change signal.
#[derive(Debug)]
pub struct MemoryCredentials {
    current: std::sync::Mutex<Option<Material>>,
    version: tokio::sync::watch::Sender<u64>,
}

impl Default for MemoryCredentials {
    fn default() -> Self {
        MemoryCredentials {
            current: std::sync::Mutex::new(None),
            version: tokio::sync::watch::channel(0).0,
        }
    }
}

impl MemoryCredentials {
    /// The current material, if the agent has enrolled.
    pub fn get(&self) -> Option<Material> {
        self.current.lock().ok().and_then(|m| m.clone())
    }

    /// Replaces the material and signals watchers.
    pub fn set(&self, m: Material) {
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(m);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Forgets the material (after a revocation, before enrolling again).
    fn clear(&self) {
        if let Ok(mut cur) = self.current.lock() {
            *cur = None;
        }
    }

    /// A receiver that sees every [`MemoryCredentials::set`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Talking to the CA failed for good.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A key, CSR or certificate problem.
    #[error(transparent)]
    Pki(#[from] twoway_pki::Error),
    /// Writing the files failed.
    #[error(transparent)]
    Files(#[from] twoway_files::Error),
    /// No certificate to renew and no token to enroll with.
    #[error("{0}")]
    NeedToken(String),
}

/// What the agent has done, for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// Enrollments that succeeded.
    pub enrollments: AtomicU64,
    /// Renewals that succeeded.
    pub renewals: AtomicU64,
    /// Attempts that failed.
    pub failures: AtomicU64,
    /// notAfter of the current certificate (Unix seconds).
    pub not_after: AtomicI64,
    /// The planned renewal (Unix seconds).
    pub next_renewal: AtomicI64,
    /// The last success (Unix seconds).
    pub last_success: AtomicI64,
    /// Why the last attempt failed (cleared on success).
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl AgentStatus {
    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, v) in self.samples() {
            out.push_str(&format!(
                "# TYPE twoway_agent_{name} {kind}\ntwoway_agent_{name} {v}\n"
            ));
        }
        out
    }

    /// Every metric as (name after `twoway_agent_`, Prometheus type, value), for a host
    /// process that renders them with its own labels.
    pub fn samples(&self) -> [(&'static str, &'static str, i64); 6] {
        let l = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        [
            ("enrollments_total", "counter", l(&self.enrollments)),
            ("renewals_total", "counter", l(&self.renewals)),
            ("failures_total", "counter", l(&self.failures)),
            ("certificate_not_after_seconds", "gauge", g(&self.not_after)),
            ("next_renewal_seconds", "gauge", g(&self.next_renewal)),
            ("last_success_seconds", "gauge", g(&self.last_success)),
        ]
    }

    /// Why the last attempt failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut cur) = self.last_error.lock() {
            *cur = e;
        }
    }
}

/// The current certificate.
struct Current {
    info: CertInfo,
    chain_pem: String,
    key_pem: zeroize::Zeroizing<String>,
}

fn read_current(storage: &Storage) -> Option<Current> {
    let (chain_pem, key_pem) = match storage {
        Storage::Dir(out) => (
            std::fs::read_to_string(out.join(twoway_files::CHAIN)).ok()?,
            zeroize::Zeroizing::new(std::fs::read_to_string(out.join(twoway_files::KEY)).ok()?),
        ),
        Storage::Memory(m) => {
            let cur = m.get()?;
            (cur.chain_pem, cur.key_pem)
        }
    };
    let der = twoway_pki::parse_certificates(chain_pem.as_bytes())
        .ok()?
        .into_iter()
        .next()?;
    let info = CertInfo::from_der(&der).ok()?;
    let key = PrivateKey::from_pem(&key_pem, None).ok()?;
    if !twoway_pki::key_matches_cert(&key.public_key_der(), &der).unwrap_or(false) {
        return None;
    }
    Some(Current {
        info,
        chain_pem,
        key_pem,
    })
}

/// The instant to renew a certificate valid from `nb` to `na`: `fraction` of the way, moved
/// by `jitter` (a fraction of the lifetime, positive or negative).
pub fn renewal_point(
    nb: OffsetDateTime,
    na: OffsetDateTime,
    fraction: f64,
    jitter: f64,
) -> OffsetDateTime {
    let life = (na - nb).as_seconds_f64().max(0.0);
    let at = (fraction + jitter).clamp(0.1, 0.95) * life;
    nb + time::Duration::seconds_f64(at)
}

/// The delay before attempt `n` (from 0): doubling from `min`, capped at `max`, with up to
/// 20% random spread so a fleet does not retry in step.
pub fn backoff(n: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(2u32.saturating_pow(n.min(20))).min(max);
    let spread = rand::thread_rng().gen_range(0.8..=1.0);
    base.mul_f64(spread)
}

enum Outcome {
    Issued(twoway_api::CertificateResponse, PrivateKey, &'static str),
}

/// Runs the agent: bootstrap trust, enroll if needed, then renew forever (or once).
pub async fn run(cfg: AgentConfig, status: Arc<AgentStatus>) -> Result<(), AgentError> {
    let mut root_pem = if let Some(kept) = kept_roots(&cfg) {
        kept
    } else {
        let mut n = 0;
        loop {
            match CaClient::bootstrap_root(&cfg.ca_url, &cfg.ca_fingerprint).await {
                Ok(r) => break r,
                Err(e) if e.is_retryable() && !(cfg.once && n >= 2) => {
                    status.failures.fetch_add(1, Ordering::Relaxed);
                    status.set_error(Some(e.to_string()));
                    let d = backoff(n, cfg.backoff_min, cfg.backoff_max);
                    tracing::warn!(error = %e, retry_in = ?d, "the CA is unreachable");
                    tokio::time::sleep(d).await;
                    n += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    tracing::info!(ca = %cfg.ca_url, "trusting the CA root (fingerprint checked)");
    let mut attempt: u32 = 0;
    let mut token = cfg.token.clone();
    // The key and CSR of a renewal that has not succeeded yet, reused on retries: if the CA
    // committed the renewal but its answer was lost, it recognises the key and answers with
    // the certificate it already issued.
    let mut pending: Option<Pending> = None;
    let mut jitter: Option<(String, f64)> = None;
    // A certificate the CA issued that could not be written (a full or read-only output
    // directory): kept here and written again after a pause, never asked for again (the CA
    // has already superseded the old certificate by it).
    let mut unsaved: Option<Outcome> = None;
    loop {
        let mut enrolling = false;
        let result = if let Some(u) = unsaved.take() {
            Ok(u)
        } else {
            let current = read_current(&cfg.storage);
            let now = OffsetDateTime::now_utc();
            if let Some(c) = &current {
                status
                    .not_after
                    .store(c.info.not_after.unix_timestamp(), Ordering::Relaxed);
                let j = match &jitter {
                    Some((fp, j)) if *fp == c.info.fingerprint => *j,
                    _ => {
                        let j = if cfg.jitter_fraction > 0.0 {
                            rand::thread_rng().gen_range(-cfg.jitter_fraction..=cfg.jitter_fraction)
                        } else {
                            0.0
                        };
                        jitter = Some((c.info.fingerprint.clone(), j));
                        j
                    }
                };
                let at = renewal_point(c.info.not_before, c.info.not_after, cfg.renew_fraction, j);
                status
                    .next_renewal
                    .store(at.unix_timestamp(), Ordering::Relaxed);
                if now < at {
                    if cfg.once {
                        let renew_at = at
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default();
                        tracing::info!(serial = %c.info.serial, %renew_at, "certificate is current; nothing to do");
                        return Ok(());
                    }
                    // Sleep in short steps against the wall clock, so a machine that was
                    // suspended past the renewal point renews as soon as it wakes.
                    let left = (at - now).whole_milliseconds().max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(left.min(30_000))).await;
                    continue;
                }
            }
            enrolling = !matches!(&current, Some(c) if c.info.not_after > now);
            let result = match &current {
                Some(c) if c.info.not_after > now => {
                    renew_once(&cfg, &root_pem, c, &mut pending).await
                }
                _ => match token.as_deref() {
                    Some(t) => enroll_once(&cfg, &root_pem, t).await,
                    None => {
                        let why = if current.is_some() {
                            "the certificate has expired and cannot be renewed: enroll again with a new --token"
                        } else {
                            "no certificate yet: give an enrollment token (--token)"
                        };
                        return Err(AgentError::NeedToken(why.into()));
                    }
                },
            };
            let result = result.and_then(|Outcome::Issued(resp, key, how)| {
                let leaf = twoway_pki::parse_certificates(resp.certificate.as_bytes())
                    .ok()
                    .and_then(|c| c.into_iter().next());
                match leaf {
                    Some(der)
                        if twoway_pki::key_matches_cert(&key.public_key_der(), &der)
                            .unwrap_or(false) =>
                    {
                        Ok(Outcome::Issued(resp, key, how))
                    }
                    _ => Err(ClientError::Decode(
                        "the certificate returned does not certify the key this agent made".into(),
                    )),
                }
            });
            result
        };
        match result {
            Ok(Outcome::Issued(resp, key, how)) => {
                if let Err(e) = save(&cfg.storage, &resp, &key) {
                    status.failures.fetch_add(1, Ordering::Relaxed);
                    status.set_error(Some(format!("could not write the new certificate: {e}")));
                    if cfg.once && attempt >= 2 {
                        return Err(e);
                    }
                    let d = backoff(attempt, cfg.backoff_min, cfg.backoff_max);
                    tracing::warn!(error = %e, retry_in = ?d, storage = %cfg.storage, serial = %resp.serial,
                        "could not write the new certificate (the old files are untouched); writing it again later");
                    tokio::time::sleep(d).await;
                    attempt = attempt.saturating_add(1);
                    unsaved = Some(Outcome::Issued(resp, key, how));
                    continue;
                }
                let now = OffsetDateTime::now_utc().unix_timestamp();
                status.last_success.store(now, Ordering::Relaxed);
                status.set_error(None);
                if how == "enroll" {
                    status.enrollments.fetch_add(1, Ordering::Relaxed);
                    token = None;
                } else {
                    status.renewals.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(how, serial = %resp.serial, not_after = %resp.not_after, storage = %cfg.storage, "new certificate in place");
                // The roots came over a connection verified against the roots trusted so
                // far: after a root rotation they name the new root too, which the agent
                // trusts from now on, so it keeps reaching the CA once the old one retires.
                if let Some(roots) = adopted_roots(&root_pem, &resp.root) {
                    tracing::info!("the CA's roots changed: trusting the roots it sent");
                    root_pem = roots;
                }
                reload(&cfg).await;
                attempt = 0;
                if cfg.once {
                    return Ok(());
                }
            }
            Err(e) => {
                status.failures.fetch_add(1, Ordering::Relaxed);
                status.set_error(Some(e.to_string()));
                let retryable = e.is_retryable();
                if cfg.once && (!retryable || attempt >= 2) {
                    return Err(e.into());
                }
                if !retryable {
                    if let ClientError::Api { code, .. } = &e {
                        if code == twoway_api::codes::CERT_REVOKED && token.is_some() {
                            tracing::warn!(
                                "the certificate was revoked; enrolling again with the token"
                            );
                            match &cfg.storage {
                                Storage::Dir(out) => {
                                    let _ = std::fs::remove_file(out.join(twoway_files::CHAIN));
                                }
                                Storage::Memory(m) => m.clear(),
                            }
                            continue;
                        }
                    }
                    if enrolling {
                        // A used, expired or unknown token, or names it does not allow:
                        // asking again cannot help.
                        return Err(e.into());
                    }
                }
                let d = backoff(attempt, cfg.backoff_min, cfg.backoff_max);
                tracing::warn!(error = %e, retry_in = ?d, "could not obtain a certificate");
                tokio::time::sleep(d).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

async fn enroll_once(
    cfg: &AgentConfig,
    root_pem: &str,
    token: &str,
) -> Result<Outcome, ClientError> {
    let key = PrivateKey::generate(cfg.key_type).map_err(|e| ClientError::Config(e.to_string()))?;
    let csr = create_csr(&key, &cfg.sans, None).map_err(|e| ClientError::Config(e.to_string()))?;
    let client = CaClient::new(&cfg.ca_url, root_pem, None)?;
    let resp = client
        .enroll(&twoway_api::EnrollRequest {
            token: token.to_string(),
            csr,
        })
        .await?;
    Ok(Outcome::Issued(resp, key, "enroll"))
}

/// A renewal in progress: for which certificate, with which new key and CSR.
struct Pending {
    for_fingerprint: String,
    key: PrivateKey,
    csr: String,
}

async fn renew_once(
    cfg: &AgentConfig,
    root_pem: &str,
    c: &Current,
    pending: &mut Option<Pending>,
) -> Result<Outcome, ClientError> {
    let reuse = matches!(pending, Some(p) if p.for_fingerprint == c.info.fingerprint);
    if !reuse {
        let key =
            PrivateKey::generate(cfg.key_type).map_err(|e| ClientError::Config(e.to_string()))?;
        let sans = if c.info.sans.is_empty() {
            cfg.sans.clone()
        } else {
            c.info.sans.clone()
        };
        let csr = create_csr(&key, &sans, None).map_err(|e| ClientError::Config(e.to_string()))?;
        *pending = Some(Pending {
            for_fingerprint: c.info.fingerprint.clone(),
            key,
            csr,
        });
    }
    let Some(p) = pending.as_ref() else {
        return Err(ClientError::Config("no pending renewal".into()));
    };
    let csr = p.csr.clone();
    let id = ClientIdentity {
        chain_pem: c.chain_pem.clone(),
        key_pem: c.key_pem.clone(),
    };
    let client = CaClient::new(&cfg.ca_url, root_pem, Some(&id))?;
    let resp = client
        .renew(&twoway_api::RenewRequest { csr, proof: None })
        .await?;
    let Some(p) = pending.take() else {
        return Err(ClientError::Config("no pending renewal".into()));
    };
    Ok(Outcome::Issued(resp, p.key, "renew"))
}

/// Builds a renewal request that proves possession of the current key without mutual TLS
/// (for a CA behind a TLS-terminating load balancer).
pub fn proof_request(
    current_key: &PrivateKey,
    current_chain_pem: &str,
    new_csr_pem: &str,
    now: OffsetDateTime,
) -> Result<twoway_api::RenewRequest, twoway_pki::Error> {
    let der = twoway_pki::csr_der(new_csr_pem.as_bytes())?;
    let ts = now.unix_timestamp();
    let sig = twoway_pki::Signer::sign(current_key, &twoway_api::pop_message(&der, ts))?;
    Ok(twoway_api::RenewRequest {
        csr: new_csr_pem.to_string(),
        proof: Some(twoway_api::ProofOfPossession {
            chain: current_chain_pem.to_string(),
            timestamp: ts,
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
        }),
    })
}

/// The roots this agent kept from the CA's last answer (`ca.pem` of its output
/// directory), when they include the pinned root: trusted as they are, without fetching
/// `/roots.pem`. They came over a connection verified with the roots trusted then, and
/// after a root rotation they are what reaches the CA once the pinned root has retired
/// and left `/roots.pem`.
fn kept_roots(cfg: &AgentConfig) -> Option<String> {
    let Storage::Dir(out) = &cfg.storage else {
        return None;
    };
    let pem = std::fs::read_to_string(out.join(twoway_files::CA)).ok()?;
    let want = cfg
        .ca_fingerprint
        .trim()
        .to_ascii_lowercase()
        .replace(':', "");
    let want = want
        .strip_prefix("sha256")
        .unwrap_or(&want)
        .trim_start_matches('=');
    twoway_pki::parse_certificates(pem.as_bytes())
        .ok()?
        .iter()
        .any(|c| twoway_pki::sha256_hex(c) == want)
        .then_some(pem)
}

/// The roots a CA answer carries, when they differ from the ones trusted now and hold at
/// least one certificate; None to keep trusting what is trusted now.
fn adopted_roots(current: &str, sent: &str) -> Option<String> {
    let sent_certs = twoway_pki::parse_certificates(sent.as_bytes()).ok()?;
    let now_certs = twoway_pki::parse_certificates(current.as_bytes()).unwrap_or_default();
    (!sent_certs.is_empty() && sent_certs != now_certs).then(|| sent.to_string())
}

fn save(
    storage: &Storage,
    resp: &twoway_api::CertificateResponse,
    key: &PrivateKey,
) -> Result<(), AgentError> {
    let out = match storage {
        Storage::Dir(out) => out,
        Storage::Memory(m) => {
            m.set(Material {
                chain_pem: resp.chain.clone(),
                key_pem: key.to_pem(None)?,
                root_pem: resp.root.clone(),
            });
            return Ok(());
        }
    };
    let mut files = twoway_files::Credentials::new(out)?;
    files.key(&key.to_pem(None)?)?;
    files.certificate(&resp.certificate, &resp.chain)?;
    files.ca(&resp.root)?;
    files.commit()?;
    Ok(())
}

async fn reload(cfg: &AgentConfig) {
    if let Some(cmd) = &cfg.reload_cmd {
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(Duration::from_secs(60), run).await {
            Ok(Ok(s)) if s.success() => tracing::info!(cmd, "reload command succeeded"),
            Ok(Ok(s)) => tracing::warn!(cmd, status = %s, "reload command failed"),
            Ok(Err(e)) => tracing::warn!(cmd, error = %e, "reload command could not run"),
            Err(_) => tracing::warn!(cmd, "reload command timed out after 60s"),
        }
    }
    if let Some(f) = &cfg.signal_pid_file {
        let pid = std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        match pid {
            Some(pid) => {
                let r = tokio::process::Command::new("kill")
                    .arg("-HUP")
                    .arg(pid.to_string())
                    .status()
                    .await;
                if !matches!(r, Ok(s) if s.success()) {
                    tracing::warn!(pid, "could not send SIGHUP");
                }
            }
            None => tracing::warn!(file = %f.display(), "no pid in the pid file"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_point_and_backoff() {
        let nb = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let na = nb + time::Duration::hours(24);
        assert_eq!(
            renewal_point(nb, na, 2.0 / 3.0, 0.0),
            nb + time::Duration::hours(16)
        );
        let j = renewal_point(nb, na, 2.0 / 3.0, 0.05);
        assert!(j > nb + time::Duration::hours(16) && j < na);
        let max = Duration::from_secs(300);
        assert!(backoff(0, Duration::from_secs(1), max) <= Duration::from_secs(1));
        assert!(backoff(30, Duration::from_secs(1), max) <= max);
        assert!(backoff(30, Duration::from_secs(1), max) >= max.mul_f64(0.8));
    }
}
