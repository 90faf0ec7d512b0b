//! The offline CA: a directory with `ca.toml`, the root and intermediate certificates and
//! keys, and the inventory database.

use crate::config::{CaConfig, CaSection};
use crate::settings::{CaSettings, Database};
use crate::{Error, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use twoway_files::StagedFiles;
use twoway_pki::{
    build_crl, build_intermediate, build_leaf, build_root, der_to_pem, parse_certificates,
    CaSigner, CertInfo, Issued, KeyType, LeafSpec, NameConstraints, NamePolicy, Permits,
    PrivateKey, Profile, Reason, RevocationUrls, RevokedEntry, San, Signer,
};
use twoway_store::{
    verify_chain, AuditEntry, AuditProblem, CertQuery, CertRecord, CertSource, CertStatus,
    Issuance, IssueExtras, NewAudit, Page, Store,
};
use zeroize::Zeroizing;

/// File names inside a CA directory.
pub mod layout {
    /// The configuration.
    pub const CONFIG: &str = "ca.toml";
    /// The root certificate.
    pub const ROOT_CERT: &str = "root.pem";
    /// The root key (can be moved offline after init).
    pub const ROOT_KEY: &str = "root.key";
    /// The intermediate certificate.
    pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
    /// The intermediate key, which signs everything after init.
    pub const INTERMEDIATE_KEY: &str = "intermediate.key";
    /// The inventory and audit log.
    pub const DATABASE: &str = "inventory.db";
    /// The root's CRL (an ARL: the intermediates it revoked), PEM, signed at init and by
    /// `twoway crl --root` wherever the root key is.
    pub const ROOT_CRL: &str = "root.crl";
}

/// How long a root CRL is valid by default. The root key is meant to live offline, so its
/// CRL is signed rarely (at init, then by `twoway crl --root` where the key is kept).
pub const ROOT_CRL_VALIDITY: Duration = Duration::days(365);

/// What to do about a missing or stale root CRL.
pub(crate) const ROOT_CRL_FIX: &str =
    "sign one with `twoway crl --root` where the root key is, and copy root.crl here";

/// Options of `ca init`.
pub struct InitOptions {
    /// Organisation name.
    pub name: String,
    /// Key type for both CA keys.
    pub key_type: KeyType,
    /// Root validity.
    pub root_ttl: Duration,
    /// Intermediate validity.
    pub intermediate_ttl: Duration,
    /// Permitted DNS subtrees (name constraints and policy).
    pub permit_dns: Vec<String>,
    /// Permitted IP ranges (name constraints and policy).
    pub permit_ip: Vec<String>,
    /// SPIFFE trust domain (policy: URIs limited to `spiffe://<td>/*`).
    pub trust_domain: Option<String>,
    /// Public URL of the CA.
    pub url: Option<String>,
    /// Passphrase to encrypt the CA keys with.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// Who runs the init (audit).
    pub actor: String,
    /// Generate the intermediate key in this PKCS#11 token instead of `intermediate.key`:
    /// the key's URI and the token's library and PIN source.
    pub intermediate_in_hsm: Option<(String, crate::config::HsmSection)>,
    /// Generate the root key in the same token too (its URI) instead of `root.key`.
    pub root_in_hsm: Option<String>,
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("name", &self.name)
            .field("key_type", &self.key_type)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// A certificate signed but not recorded yet (see [`Ca::prepare_with`]).
#[derive(Debug)]
pub struct Unrecorded {
    issued: Issued,
    pub(crate) record: Issuance,
}

impl Unrecorded {
    /// The certificate, and the issuance that records it. The certificate must not leave
    /// (be answered, written, logged as issued) before the issuance is committed.
    pub fn into_parts(self) -> (Issued, Issuance) {
        (self.issued, self.record)
    }
}

/// What an issuing call produced: a certificate already recorded (a retried renewal is
/// answered with the one recorded before), or one still to record.
#[derive(Debug)]
pub enum Outcome {
    /// Recorded already: it may leave.
    Recorded(Box<Issued>),
    /// Signed, not recorded: commit it first.
    Unrecorded(Box<Unrecorded>),
}

/// What a certificate request asks for, beside the key.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// Profile.
    pub profile: Profile,
    /// Names; at least one.
    pub sans: Vec<San>,
    /// Optional CN.
    pub common_name: Option<String>,
    /// Validity; the profile default when absent.
    pub ttl: Option<Duration>,
    /// Owner, for the inventory.
    pub owner: Option<String>,
    /// Labels, for the inventory.
    pub labels: BTreeMap<String, String>,
    /// Where the certificate will be deployed.
    pub location: Option<String>,
    /// Who asks (audit).
    pub actor: String,
}

/// Result of importing one certificate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportOutcome {
    /// What the certificate says.
    pub info: CertInfo,
    /// `imported` or `already-recorded`.
    pub outcome: &'static str,
}

/// An opened CA directory.
pub struct Ca {
    pub(crate) dir: PathBuf,
    pub(crate) settings: CaSettings,
    /// The inventory's location, when opened by one (not [`Ca::open_with_store`]).
    database: Option<Database>,
    pub(crate) root_pem: String,
    pub(crate) intermediate_der: Vec<u8>,
    pub(crate) intermediate_info: CertInfo,
    pub(crate) constraints: Option<NameConstraints>,
    signer: Option<CaSigner>,
    /// The passphrase the CA's keys were unlocked with, kept to encrypt the server's own
    /// keys the same way ([`Ca::seal_service_key`]); None when the keys are not encrypted.
    sealing: Option<zeroize::Zeroizing<Vec<u8>>>,
    pub(crate) store: Box<dyn Store>,
    /// The active intermediate's id (`g1` until a rotation; see [`crate::rotate`]).
    pub(crate) active_id: String,
    /// The other intermediates: prepared, retiring, retired.
    pub(crate) others: Vec<crate::rotate::OtherIssuer>,
    /// The active root's id (`r1` until a root rotation; see [`crate::roots`]).
    pub(crate) root_id: String,
    /// The other roots: prepared, retiring, retired.
    pub(crate) old_roots: Vec<crate::roots::OtherRoot>,
    /// Cross certificates the active intermediate's chain carries up to retiring roots.
    crosses: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    twoway_files::create_private_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(Error::io("cannot set permissions on", dir))
}

/// Creates a CA in `dir`: root, intermediate, keys (0600), `ca.toml`, an empty inventory.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<Ca> {
    for f in [
        layout::CONFIG,
        layout::ROOT_KEY,
        layout::INTERMEDIATE_KEY,
        layout::DATABASE,
    ] {
        if dir.join(f).exists() {
            return Err(Error::CaExists(dir.to_path_buf()));
        }
    }
    if opts.name.trim().is_empty() {
        return Err(Error::Refused(
            "--name is empty: give the organisation name, e.g. --name \"Example Corp\"".into(),
        ));
    }
    if opts.intermediate_ttl > opts.root_ttl {
        return Err(Error::Refused(
            "--intermediate-ttl is longer than --root-ttl: the intermediate cannot outlive the root".into(),
        ));
    }
    let mut permits = Permits::default();
    for d in &opts.permit_dns {
        let san: San = format!("DNS:{}", d.trim_start_matches('.')).parse()?;
        permits.dns.push(san.value());
    }
    for ip in &opts.permit_ip {
        let net = ip
            .parse::<ipnet::IpNet>()
            .or_else(|_| ip.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                Error::Refused(format!(
                    "--permit-ip {ip:?} is not an IP range such as 10.0.0.0/8"
                ))
            })?;
        permits.ip.push(net);
    }
    if let Some(td) = &opts.trust_domain {
        twoway_pki::validate_spiffe(&format!("spiffe://{td}"))
            .map_err(|e| Error::Refused(format!("--trust-domain {td:?}: {e}")))?;
    }
    let policy = NamePolicy {
        dns: (!permits.dns.is_empty()).then(|| permits.dns.clone()),
        ip: (!permits.ip.is_empty()).then(|| permits.ip.iter().map(|n| n.to_string()).collect()),
        uri: opts
            .trust_domain
            .as_ref()
            .map(|td| vec![format!("spiffe://{td}/*")]),
        email: None,
    };
    let config = CaConfig::new(
        CaSection {
            name: opts.name.trim().to_string(),
            key_type: opts.key_type,
            encrypted_keys: opts.passphrase.is_some(),
            url: opts
                .url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            trust_domain: opts.trust_domain.clone(),
            intermediate_key: opts.intermediate_in_hsm.as_ref().map(|(u, _)| u.clone()),
            root_key: opts.root_in_hsm.clone(),
        },
        policy,
    );
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc());
    let not_before = now - Duration::minutes(5);
    let pass = opts.passphrase.as_deref().map(|p| p.as_slice());
    // the root key: generated in the token, or here (then written to root.key)
    let (root_key, root_pem): (Arc<dyn Signer>, Option<Zeroizing<String>>) =
        match (&opts.root_in_hsm, &opts.intermediate_in_hsm) {
            (Some(uri), Some((_, hsm))) => (crate::hsm::generate(uri, hsm, opts.key_type)?, None),
            (Some(_), None) => {
                return Err(Error::Refused(
                    "the root key goes in a token only with the intermediate's: give --key-uri too"
                        .into(),
                ))
            }
            (None, _) => {
                let k = PrivateKey::generate(opts.key_type)?;
                let pem = k.to_pem(pass)?;
                (Arc::new(k), Some(pem))
            }
        };
    let root_der = build_root(
        root_key.clone(),
        &config.ca.name,
        1,
        not_before,
        now + opts.root_ttl,
    )?;
    let root = CaSigner::new(root_der.clone(), root_key.clone())?;
    let mut config = config;
    config.hsm = opts.intermediate_in_hsm.as_ref().map(|(_, h)| h.clone());
    // the intermediate key: generated in the token, or here (then written to intermediate.key)
    let (int_key, int_pem): (Arc<dyn Signer>, Option<Zeroizing<String>>) =
        match &opts.intermediate_in_hsm {
            Some((uri, hsm)) => {
                let signer = crate::hsm::generate(uri, hsm, opts.key_type)?;
                (signer, None)
            }
            None => {
                let k = PrivateKey::generate(opts.key_type)?;
                let pem = k.to_pem(opts.passphrase.as_deref().map(|p| p.as_slice()))?;
                (Arc::new(k), Some(pem))
            }
        };
    let int_der = build_intermediate(
        &root,
        &int_key.public_key_der(),
        &config.ca.name,
        1,
        not_before,
        now + opts.intermediate_ttl,
        &permits,
    )?;
    ensure_private_dir(dir)?;
    let mut staged = StagedFiles::new(dir)?;
    if let Some(pem) = &root_pem {
        staged.stage(layout::ROOT_KEY, pem.as_bytes(), 0o600)?;
    }
    if let Some(pem) = &int_pem {
        staged.stage(layout::INTERMEDIATE_KEY, pem.as_bytes(), 0o600)?;
    }
    staged.stage(
        layout::ROOT_CERT,
        der_to_pem("CERTIFICATE", &root_der).as_bytes(),
        0o644,
    )?;
    staged.stage(
        layout::INTERMEDIATE_CERT,
        der_to_pem("CERTIFICATE", &int_der).as_bytes(),
        0o644,
    )?;
    staged.stage(
        layout::CONFIG,
        config.to_documented_toml().as_bytes(),
        0o600,
    )?;

    // The root's first CRL, while its key is surely here: verifiers that check CRLs for the
    // whole chain (nginx's ssl_crl, openssl -crl_check_all) need one. Nothing is revoked yet.
    let (arl_number, arl_next, arl) =
        build_root_crl(&root, &CertInfo::from_der(&root_der)?, now, None, None, &[])?;
    let record = || -> Result<()> {
        let store = Database::for_ca(dir, None).open()?;
        let root_info = CertInfo::from_der(&root_der)?;
        let int_info = CertInfo::from_der(&int_der)?;
        for (info, der) in [(&root_info, &root_der), (&int_info, &int_der)] {
            let rec = record_for(
                info,
                der,
                "ca",
                CertSource::Issued,
                None,
                BTreeMap::new(),
                None,
                now,
            );
            let mut details = json!({
                "subject": info.subject, "fingerprint": info.fingerprint,
                "key_type": opts.key_type.as_str(),
                "not_after": rfc3339(info.not_after),
            });
            if std::ptr::eq(info, &root_info) {
                details["root_crl"] =
                    json!({"number": arl_number, "next_update": rfc3339(arl_next)});
            }
            store.insert_certificate(
                &rec,
                &NewAudit {
                    actor: opts.actor.clone(),
                    action: "ca.init".into(),
                    target: info.serial.clone(),
                    details,
                    time: OffsetDateTime::now_utc(),
                },
            )?;
        }
        Ok(())
    };
    let done = record().and_then(|_| {
        staged.stage(
            layout::ROOT_CRL,
            der_to_pem("X509 CRL", &arl).as_bytes(),
            0o644,
        )?;
        staged.commit().map_err(Error::from)
    });
    if let Err(e) = done {
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(dir.join(format!("{}{suffix}", layout::DATABASE)));
        }
        for f in [
            layout::ROOT_KEY,
            layout::INTERMEDIATE_KEY,
            layout::ROOT_CERT,
            layout::INTERMEDIATE_CERT,
            layout::CONFIG,
            layout::ROOT_CRL,
        ] {
            let _ = fs::remove_file(dir.join(f));
        }
        return Err(e);
    }
    let mut ca = Ca::open(dir)?;
    ca.signer = Some(CaSigner::new(int_der, int_key)?);
    Ok(ca)
}

/// Signs the root's CRL listing `revoked` (the root's revoked intermediates), valid for
/// `validity` (default [`ROOT_CRL_VALIDITY`], never past the root's own expiry). Its number
/// is the signing time in Unix seconds, above `previous`: the root signs rarely and offline,
/// away from the inventory's CRL counter (which numbers the intermediate's CRLs).
/// (number, nextUpdate, DER).
pub(crate) fn build_root_crl(
    root: &CaSigner,
    root_info: &CertInfo,
    now: OffsetDateTime,
    validity: Option<Duration>,
    previous: Option<u64>,
    revoked: &[RevokedEntry],
) -> Result<(u64, OffsetDateTime, Vec<u8>)> {
    let next = (now + validity.unwrap_or(ROOT_CRL_VALIDITY)).min(root_info.not_after);
    let number = (now.unix_timestamp().max(0) as u64).max(previous.map_or(0, |p| p + 1));
    let der = build_crl(root, number, now, next, revoked)?;
    Ok((number, next, der))
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn record_for(
    info: &CertInfo,
    der: &[u8],
    profile: &str,
    source: CertSource,
    owner: Option<String>,
    labels: BTreeMap<String, String>,
    location: Option<String>,
    now: OffsetDateTime,
) -> CertRecord {
    CertRecord {
        serial: info.serial.clone(),
        fingerprint: info.fingerprint.clone(),
        subject: info.subject.clone(),
        issuer: info.issuer.clone(),
        common_name: info.common_name.clone(),
        sans: info.sans.iter().map(|s| s.to_string()).collect(),
        profile: profile.to_string(),
        key_type: info
            .key_type
            .map(|k| k.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()),
        not_before: info.not_before,
        not_after: info.not_after,
        owner,
        labels,
        location,
        status: CertStatus::Active,
        revoked_at: None,
        revocation_reason: None,
        source,
        recorded_at: now,
        pem: der_to_pem("CERTIFICATE", der),
    }
}

impl Ca {
    /// Opens the CA in `dir` without unlocking its key: enough for the inventory and audit
    /// log. The inventory is `[server] database` of ca.toml, else the directory's
    /// `inventory.db`.
    pub fn open(dir: &Path) -> Result<Ca> {
        Self::open_with_database(dir, None)
    }

    /// Opens the CA in `dir` with the inventory at `database` when given (`--database`),
    /// else as [`Ca::open`] does ([`Database::for_ca`] decides, for every caller).
    pub fn open_with_database(dir: &Path, database: Option<&Database>) -> Result<Ca> {
        let settings = Self::settings_of(dir)?;
        let db = Database::for_ca(dir, database.or(settings.server.database.as_ref()));
        let store = db.open()?;
        Self::open_inner(dir, settings, store, Some(db))
    }

    /// Opens the CA in `dir` with an inventory opened by the caller (tests, benchmarks).
    pub fn open_with_store(dir: &Path, store: Box<dyn Store>) -> Result<Ca> {
        Self::open_inner(dir, Self::settings_of(dir)?, store, None)
    }

    fn settings_of(dir: &Path) -> Result<CaSettings> {
        let cfg_path = dir.join(layout::CONFIG);
        if !cfg_path.exists() {
            return Err(Error::NoCa(dir.to_path_buf()));
        }
        CaSettings::load(&cfg_path)
    }

    fn open_inner(
        dir: &Path,
        settings: CaSettings,
        store: Box<dyn Store>,
        database: Option<Database>,
    ) -> Result<Ca> {
        let cfg_path = dir.join(layout::CONFIG);
        let config = &settings.raw;
        let read = |name: &str| -> Result<Vec<u8>> {
            let p = dir.join(name);
            fs::read(&p).map_err(Error::io("cannot read", p))
        };
        let root_pem = String::from_utf8_lossy(&read(layout::ROOT_CERT)?).into_owned();
        let intermediate_der = parse_certificates(&read(layout::INTERMEDIATE_CERT)?)?
            .into_iter()
            .next()
            .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
        let intermediate_info = CertInfo::from_der(&intermediate_der)?;
        let constraints = NameConstraints::from_cert_der(&intermediate_der)?;
        if let Some(nc) = &constraints {
            nc.check_policy(&config.policy)
                .map_err(|reach| Error::Config {
                    path: cfg_path.clone(),
                    message: format!(
                        "[policy] {reach}, outside the name constraints of {} (permitted: {}): \
                         certificates for such names would be rejected by every verifier. \
                         Narrow [policy] to names inside the constraints; other names need a new \
                         intermediate certificate with wider constraints, and twoway cannot \
                         re-issue the intermediate yet, so that means a new CA \
                         (`twoway ca init --permit-dns …`)",
                        layout::INTERMEDIATE_CERT,
                        nc.permitted()
                    ),
                })?;
        }
        let (active_id, others) = crate::rotate::load(dir)?;
        let (root_id, old_roots) = crate::roots::load(dir)?;
        let crosses = crate::roots::chain_crosses(dir, &root_id, &old_roots);
        let root_pem = crate::roots::bundle(&root_pem, &old_roots);
        Ok(Ca {
            dir: dir.to_path_buf(),
            settings,
            database,
            root_pem,
            intermediate_der,
            intermediate_info,
            constraints,
            signer: None,
            sealing: None,
            store,
            active_id,
            others,
            root_id,
            old_roots,
            crosses,
        })
    }

    /// Loads the intermediate key so the CA can sign; `passphrase` when the keys are encrypted.
    pub fn unlock(&mut self, passphrase: Option<&[u8]>) -> Result<()> {
        if let Some(uri) = self.settings.raw.ca.intermediate_key.clone() {
            let hsm = self.settings.raw.hsm.clone().ok_or_else(|| Error::Config {
                path: self.dir.join(layout::CONFIG),
                message: format!(
                    "[ca] intermediate_key is {uri} but there is no [hsm] section naming the \
                     PKCS#11 module and the PIN source: add [hsm] module = \"/usr/lib/softhsm/libsofthsm2.so\" \
                     and pin_file or pin_env"
                ),
            })?;
            let signer = crate::hsm::open(&uri, &hsm)?;
            self.signer = Some(CaSigner::new(self.intermediate_der.clone(), signer)?);
            self.unlock_others(passphrase)?;
            return Ok(());
        }
        let p = self.dir.join(layout::INTERMEDIATE_KEY);
        let pem = Zeroizing::new(fs::read_to_string(&p).map_err(Error::io("cannot read", &p))?);
        if self.settings.raw.ca.encrypted_keys && passphrase.is_none() {
            return Err(twoway_pki::Error::PassphraseRequired.into());
        }
        let key = PrivateKey::from_pem(&pem, passphrase)?;
        self.signer = Some(CaSigner::new(self.intermediate_der.clone(), Arc::new(key))?);
        self.unlock_others(passphrase)?;
        self.sealing = passphrase
            .filter(|_| self.settings.raw.ca.encrypted_keys)
            .map(|p| zeroize::Zeroizing::new(p.to_vec()));
        Ok(())
    }

    /// A key of the server's own (its TLS or OCSP-signing key) as PEM to keep on disk,
    /// protected as the CA's own key is: encrypted with the CA's passphrase when its keys
    /// are, plain (for a 0600 file) when they are not. None when the intermediate key
    /// lives in a PKCS#11 token: a software key on disk would then be the weakest key of
    /// the CA, so the server keeps its keys in memory only and issues new ones per start.
    pub fn seal_service_key(&self, key: &PrivateKey) -> Result<Option<Zeroizing<String>>> {
        if !self.keeps_service_keys() {
            return Ok(None);
        }
        Ok(Some(key.to_pem(self.sealing.as_deref().map(|p| &p[..]))?))
    }

    /// Whether the server's own keys are kept on disk across restarts: when the
    /// intermediate key is a file too (see [`Ca::seal_service_key`]).
    pub fn keeps_service_keys(&self) -> bool {
        self.signs_in_memory()
    }

    /// Whether the intermediate key is in this process's memory (a file), not in a
    /// PKCS#11 token: then a signature costs microseconds and never waits on a device.
    pub fn signs_in_memory(&self) -> bool {
        self.settings.raw.ca.intermediate_key.is_none()
    }

    /// Reads a key written by [`Ca::seal_service_key`].
    pub fn unseal_service_key(&self, pem: &str) -> Result<PrivateKey> {
        Ok(PrivateKey::from_pem(
            pem,
            self.sealing.as_deref().map(|p| &p[..]),
        )?)
    }

    pub(crate) fn signer(&self) -> Result<&CaSigner> {
        self.signer
            .as_ref()
            .ok_or(Error::Pki(twoway_pki::Error::PassphraseRequired))
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.settings.raw
    }

    /// The configuration, parsed: durations, administrators, the database.
    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// Where the inventory is, when [`Ca::open`] or [`Ca::open_with_database`] chose it.
    pub fn database(&self) -> Option<&Database> {
        self.database.as_ref()
    }

    /// The roots to trust, PEM: the active root first, then (during a root rotation) the
    /// retiring one, until it is retired.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The chain above a leaf, PEM: the active intermediate, then (during a root rotation)
    /// the cross certificate of its root by the retiring root, so verifiers that trust
    /// only the old root accept it.
    pub fn intermediate_pem(&self) -> String {
        let mut pem = der_to_pem("CERTIFICATE", &self.intermediate_der);
        for c in &self.crosses {
            pem.push_str(&der_to_pem("CERTIFICATE", c));
        }
        pem
    }

    /// The other chains above a leaf, PEM, besides [`Ca::intermediate_pem`]: during a root
    /// rotation, the active intermediate alone, which ends at the new root (for verifiers
    /// that trust the new root already: one certificate less). Empty otherwise.
    pub fn alternate_chains(&self) -> Vec<String> {
        if self.crosses.is_empty() {
            return Vec::new();
        }
        vec![der_to_pem("CERTIFICATE", &self.intermediate_der)]
    }

    /// The intermediate certificate's details.
    pub fn intermediate_info(&self) -> &CertInfo {
        &self.intermediate_info
    }

    /// The intermediate certificate's name constraints, if it has any.
    pub fn name_constraints(&self) -> Option<&NameConstraints> {
        self.constraints.as_ref()
    }

    /// Checks names (and a common name) against the intermediate's name constraints, then
    /// the name policy: the constraints first, so a name no verifier would accept is
    /// refused as such rather than as a policy matter.
    pub(crate) fn check_names(&self, sans: &[San], common_name: Option<&str>) -> Result<()> {
        if let Some(nc) = &self.constraints {
            nc.check_all(sans, common_name)?;
        }
        self.settings.raw.policy.check_all(sans)?;
        Ok(())
    }

    /// The inventory.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The CRL distribution point and OCSP URL of new certificates. The first
    /// intermediate's CRL is at `/crl`, a rotated one's at `/crl/<id>`: a distribution
    /// point must name its issuer's CRL for as long as the certificate lives.
    pub(crate) fn urls(&self) -> RevocationUrls {
        match &self.settings.raw.ca.url {
            Some(u) => RevocationUrls {
                crl: Some(match self.active_id.as_str() {
                    "g1" => format!("{u}/crl"),
                    id => format!("{u}/crl/{id}"),
                }),
                ocsp: Some(format!("{u}/ocsp")),
            },
            None => RevocationUrls::default(),
        }
    }

    /// Validates a request against policy, the subject rule (a CN only when it repeats one
    /// of the SANs: [`twoway_pki::subject_common_name`]), profile limits and the issuer's
    /// lifetime, and returns the validity window. Every issuance path (`cert issue`,
    /// `cert sign`, enrollment, renewal, `/v1/sign`, and any protocol added later) comes
    /// through here, by [`Ca::prepare_with`].
    pub fn check_request(&self, req: &IssueRequest) -> Result<(OffsetDateTime, OffsetDateTime)> {
        if req.sans.is_empty() {
            return Err(twoway_pki::Error::NoSan.into());
        }
        // The subject holds only what was validated: a CN repeating one of the SANs.
        twoway_pki::subject_common_name(req.common_name.as_deref(), &req.sans)?;
        req.profile.check_names(&req.sans)?;
        self.check_names(&req.sans, req.common_name.as_deref())?;
        let prof = self.settings.profile(req.profile)?;
        let max = prof.max_ttl;
        let ttl = req.ttl.unwrap_or(prof.default_ttl);
        if ttl <= Duration::ZERO {
            return Err(twoway_pki::Error::BadTtl("the TTL must be positive".into()).into());
        }
        if ttl > max {
            return Err(twoway_pki::Error::BadTtl(format!(
                "{} exceeds the {} profile's max_ttl of {} in ca.toml: use a shorter --ttl",
                twoway_pki::format_duration(ttl),
                req.profile,
                prof.max_ttl_text
            ))
            .into());
        }
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        let not_before = now - Duration::minutes(1);
        let not_after = now + ttl;
        if not_after > self.intermediate_info.not_after {
            return Err(twoway_pki::Error::TtlBeyondIssuer {
                requested: rfc3339(not_after),
                issuer_not_after: rfc3339(self.intermediate_info.not_after),
            }
            .into());
        }
        Ok((not_before, not_after))
    }

    /// Signs a certificate for `public_key_der` and records it (with its audit entry) before
    /// returning it. `action` is `cert.issue` (key made here) or `cert.sign` (from a CSR).
    pub fn issue(&self, req: &IssueRequest, public_key_der: &[u8], action: &str) -> Result<Issued> {
        self.issue_with(
            req,
            public_key_der,
            action,
            IssueExtras::none(OffsetDateTime::now_utc()),
        )
    }

    /// Like [`Ca::issue`] for the key of a verified CSR; a `device` certificate also takes
    /// the CSR's subject `serialNumber`.
    pub fn issue_for_csr(
        &self,
        req: &IssueRequest,
        csr: &twoway_pki::VerifiedCsr,
        action: &str,
    ) -> Result<Issued> {
        let signed = self.prepare_subject(
            req,
            &csr.public_key_der,
            action,
            IssueExtras::none(OffsetDateTime::now_utc()),
            CertSource::Issued,
            csr.serial_number.clone(),
        )?;
        self.record(Outcome::Unrecorded(Box::new(signed)))
    }

    /// Like [`Ca::issue`], and in the same transaction consumes a token and/or supersedes
    /// the certificate being replaced: if either fails, nothing is recorded and the
    /// certificate never leaves.
    pub fn issue_with(
        &self,
        req: &IssueRequest,
        public_key_der: &[u8],
        action: &str,
        extras: IssueExtras,
    ) -> Result<Issued> {
        let signed = self.prepare_with(req, public_key_der, action, extras)?;
        self.record(Outcome::Unrecorded(Box::new(signed)))
    }

    /// The CPU half of [`Ca::issue_with`]: checks the request and signs the certificate,
    /// but records nothing. The certificate must not leave before its issuance is
    /// committed ([`Ca::record`], or a batch of [`Store::record_issuances`]).
    pub fn prepare_with(
        &self,
        req: &IssueRequest,
        public_key_der: &[u8],
        action: &str,
        extras: IssueExtras,
    ) -> Result<Unrecorded> {
        self.prepare_from(req, public_key_der, action, extras, CertSource::Issued)
    }

    /// [`Ca::prepare_with`], recording `source` as where the certificate came from.
    pub(crate) fn prepare_from(
        &self,
        req: &IssueRequest,
        public_key_der: &[u8],
        action: &str,
        extras: IssueExtras,
        source: CertSource,
    ) -> Result<Unrecorded> {
        self.prepare_subject(req, public_key_der, action, extras, source, None)
    }

    /// [`Ca::prepare_from`] with a device serial number for the subject (`device` profile
    /// only; any other profile ignores it).
    pub(crate) fn prepare_subject(
        &self,
        req: &IssueRequest,
        public_key_der: &[u8],
        action: &str,
        extras: IssueExtras,
        source: CertSource,
        subject_serial: Option<String>,
    ) -> Result<Unrecorded> {
        let (not_before, not_after) = self.check_request(req)?;
        let subject_serial = subject_serial.filter(|_| req.profile == Profile::Device);
        if let Some(s) = &subject_serial {
            twoway_pki::check_subject_serial(s)?;
        }
        let spec = LeafSpec {
            profile: req.profile,
            sans: req.sans.clone(),
            common_name: req.common_name.clone(),
            subject_serial,
            not_before,
            not_after,
            urls: self.urls(),
        };
        let issued = build_leaf(self.signer()?, public_key_der, &spec)?;
        let rec = record_for(
            &issued.info,
            &issued.der,
            req.profile.as_str(),
            source,
            req.owner.clone(),
            req.labels.clone(),
            req.location.clone(),
            OffsetDateTime::now_utc(),
        );
        let audit = NewAudit {
            actor: req.actor.clone(),
            action: action.into(),
            target: issued.info.serial.clone(),
            details: json!({
                "fingerprint": issued.info.fingerprint,
                "profile": req.profile.as_str(),
                "sans": rec.sans,
                "owner": req.owner,
                "not_after": rfc3339(not_after),
                "supersedes": extras.supersede,
                "token": extras.consume_token.as_deref().map(|h| &h[..h.len().min(16)]),
            }),
            time: OffsetDateTime::now_utc(),
        };
        Ok(Unrecorded {
            issued,
            record: Issuance { rec, audit, extras },
        })
    }

    /// Records what an issuing call prepared (one issuance, through the store's group
    /// commit) and returns the certificate once it is durable.
    pub fn record(&self, outcome: Outcome) -> Result<Issued> {
        match outcome {
            Outcome::Recorded(issued) => Ok(*issued),
            Outcome::Unrecorded(u) => {
                let (issued, r) = u.into_parts();
                self.store.record_issuance(&r.rec, &r.audit, &r.extras)?;
                Ok(issued)
            }
        }
    }

    /// Records certificates issued elsewhere (or anywhere) in the inventory.
    pub fn import(
        &self,
        pem_or_der: &[u8],
        owner: Option<String>,
        labels: BTreeMap<String, String>,
        location: Option<String>,
        actor: &str,
    ) -> Result<Vec<ImportOutcome>> {
        let mut out = Vec::new();
        for der in parse_certificates(pem_or_der)? {
            let info = CertInfo::from_der(&der)?;
            if self.store.find_certificate(&info.fingerprint).is_ok() {
                out.push(ImportOutcome {
                    info,
                    outcome: "already-recorded",
                });
                continue;
            }
            let profile = match (info.is_ca, info.profile) {
                (true, _) => "ca".to_string(),
                (false, Some(p)) => p.as_str().to_string(),
                (false, None) => "unknown".to_string(),
            };
            let rec = record_for(
                &info,
                &der,
                &profile,
                CertSource::Imported,
                owner.clone(),
                labels.clone(),
                location.clone(),
                OffsetDateTime::now_utc(),
            );
            self.store.insert_certificate(
                &rec,
                &NewAudit {
                    actor: actor.into(),
                    action: "cert.import".into(),
                    target: info.serial.clone(),
                    details: json!({"fingerprint": info.fingerprint, "subject": info.subject, "issuer": info.issuer}),
                    time: OffsetDateTime::now_utc(),
                },
            )?;
            out.push(ImportOutcome {
                info,
                outcome: "imported",
            });
        }
        Ok(out)
    }

    /// Revokes a certificate this CA issued.
    pub fn revoke(&self, serial_or_fp: &str, reason: Reason, actor: &str) -> Result<CertRecord> {
        let rec = self.store.find_certificate(serial_or_fp)?;
        if !rec.source.signed_here() || !self.vouches_for(&rec.issuer) {
            return Err(Error::Refused(format!(
                "certificate {} was not issued by an intermediate of this CA that still signs \
                 revocations ({}): only its issuer can revoke it",
                rec.serial, rec.issuer
            )));
        }
        Ok(self.revoke_record(&rec, reason, actor)?)
    }

    /// Marks `rec` revoked now, with its `cert.revoke` audit entry, in one transaction.
    pub(crate) fn revoke_record(
        &self,
        rec: &CertRecord,
        reason: Reason,
        actor: &str,
    ) -> std::result::Result<CertRecord, twoway_store::Error> {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        self.store.revoke(
            &rec.fingerprint,
            now,
            reason.as_str(),
            &NewAudit {
                actor: actor.into(),
                action: "cert.revoke".into(),
                target: rec.serial.clone(),
                details: json!({"fingerprint": rec.fingerprint, "reason": reason.as_str()}),
                time: now,
            },
        )
    }

    /// Signs a CRL of this CA's revoked, unexpired certificates; returns it as DER.
    pub fn crl(&self, next_update: Option<Duration>, actor: &str) -> Result<(u64, Vec<u8>)> {
        let signer = self.signer()?;
        let validity = match next_update {
            Some(d) => d,
            None => self.settings.crl_next_update,
        };
        if validity <= Duration::ZERO {
            return Err(twoway_pki::Error::BadTtl("--next-update must be positive".into()).into());
        }
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        let entries = self.crl_entries_of(&self.intermediate_info.subject, now, None)?;
        let number = self.store.next_crl_number(&NewAudit {
            actor: actor.into(),
            action: "crl.sign".into(),
            target: String::new(),
            details: json!({"revoked": entries.len(), "next_update": rfc3339(now + validity)}),
            time: now,
        })?;
        let kind = match (&self.settings.raw.ca.url, self.settings.raw.crl.delta) {
            (Some(url), true) => {
                twoway_pki::CrlKind::CompleteWithDeltas(format!("{url}/crl/delta"))
            }
            _ => twoway_pki::CrlKind::Complete,
        };
        let der = twoway_pki::build_crl_as(signer, number, now, now + validity, &entries, &kind)?;
        Ok((number, der))
    }

    /// `issuer`'s revoked, unexpired certificates at `now` as CRL entries; only those
    /// revoked at or after `since` when given (a delta CRL's).
    pub(crate) fn crl_entries_of(
        &self,
        issuer: &str,
        now: OffsetDateTime,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<RevokedEntry>> {
        let rows = match since {
            None => self.store.crl_entries(issuer, now)?,
            Some(t) => self.store.crl_entries_revoked_since(issuer, now, t)?,
        };
        Ok(rows
            .into_iter()
            .map(|r| RevokedEntry {
                reason: r
                    .reason
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(Reason::Unspecified),
                serial_hex: r.serial,
                revoked_at: r.revoked_at,
            })
            .collect())
    }

    /// Signs a delta CRL (RFC 5280 §5.2.4) against the complete CRL numbered `base_number`
    /// and signed at `base_this_update`: the certificates revoked since then (from ten
    /// minutes before it, so a revocation committed while the base was read is never
    /// missed; one listed in both is harmless), valid for `next_update` (default `[crl]
    /// delta_next_update`). It takes the next number of the CRL sequence the complete CRLs
    /// use, as RFC 5280 asks. Returns its number and DER.
    pub fn delta_crl(
        &self,
        base_number: u64,
        base_this_update: OffsetDateTime,
        next_update: Option<Duration>,
        actor: &str,
    ) -> Result<(u64, Vec<u8>)> {
        let signer = self.signer()?;
        let validity = next_update.unwrap_or(self.settings.crl_delta_next_update);
        if validity <= Duration::ZERO {
            return Err(twoway_pki::Error::BadTtl("--next-update must be positive".into()).into());
        }
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        if base_this_update > now + Duration::minutes(5) {
            return Err(Error::Refused(
                "the base CRL was signed in the future: give the complete CRL this CA signed"
                    .into(),
            ));
        }
        let entries = self.crl_entries_of(
            &self.intermediate_info.subject,
            now,
            Some(base_this_update - Duration::minutes(10)),
        )?;
        let number = self.store.next_crl_number(&NewAudit {
            actor: actor.into(),
            action: "crl.sign_delta".into(),
            target: String::new(),
            details: json!({
                "base": base_number,
                "revoked": entries.len(),
                "next_update": rfc3339(now + validity),
            }),
            time: now,
        })?;
        let kind = twoway_pki::CrlKind::Delta(base_number);
        let der = twoway_pki::build_crl_as(signer, number, now, now + validity, &entries, &kind)?;
        Ok((number, der))
    }

    /// Lists the inventory.
    pub fn list(&self, q: &CertQuery) -> Result<Page<CertRecord>> {
        Ok(self.store.list_certificates(q)?)
    }

    /// Audit entries from `from`, at most `limit`.
    pub fn audit(&self, from: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        Ok(self.store.audit_entries(from, limit)?)
    }

    /// Verifies the whole audit chain; returns the number of entries and the problems.
    pub fn verify_audit(&self) -> Result<(usize, Vec<AuditProblem>)> {
        let (n, problems, _) = self.audit_all()?;
        Ok((n, problems))
    }

    /// Every audit entry, and the hash chain's problems.
    pub(crate) fn audit_all(&self) -> Result<(usize, Vec<AuditProblem>, Vec<AuditEntry>)> {
        let mut all = Vec::new();
        let mut from = 1;
        loop {
            let batch = self.store.audit_entries(from, 10_000)?;
            let Some(last) = batch.last() else { break };
            from = last.seq + 1;
            all.extend(batch);
        }
        let problems = verify_chain(&all);
        Ok((all.len(), problems, all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pass: Option<&[u8]>) -> InitOptions {
        InitOptions {
            name: "Test Corp".into(),
            key_type: KeyType::P256,
            root_ttl: Duration::days(3650),
            intermediate_ttl: Duration::days(365),
            permit_dns: vec!["example.internal".into()],
            permit_ip: vec!["10.0.0.0/8".into()],
            trust_domain: Some("example.org".into()),
            url: Some("https://ca.example.internal:9000".into()),
            passphrase: pass.map(|p| Zeroizing::new(p.to_vec())),
            actor: "test".into(),
            intermediate_in_hsm: None,
            root_in_hsm: None,
        }
    }

    fn req(sans: &[&str], ttl_days: i64) -> IssueRequest {
        IssueRequest {
            profile: Profile::Server,
            sans: sans.iter().map(|s| s.parse().unwrap()).collect(),
            common_name: None,
            ttl: Some(Duration::days(ttl_days)),
            owner: Some("team".into()),
            labels: BTreeMap::new(),
            location: None,
            actor: "test".into(),
        }
    }

    /// `cert list --limit N` and `GET /v1/certificates?limit=N` both come here: without a
    /// SAN glob, a page reads its own rows from the inventory and no others.
    #[test]
    fn a_listing_page_reads_only_its_rows() {
        let d = tempfile::tempdir().unwrap();
        let ca = init(d.path(), &opts(None)).unwrap();
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        for i in 0..60 {
            let san = format!("DNS:svc-{i}.example.internal");
            ca.issue(
                &req(&[san.as_str()], 30),
                &key.public_key_der(),
                "cert.issue",
            )
            .unwrap();
        }
        let now = OffsetDateTime::now_utc();
        for q in [
            CertQuery {
                now: Some(now),
                limit: 25,
                ..Default::default()
            },
            CertQuery {
                now: Some(now),
                owner: Some("team".into()),
                status: Some("active".into()),
                offset: 25,
                limit: 25,
                ..Default::default()
            },
        ] {
            let before = ca.store().certificate_rows_read();
            let page = ca.list(&q).unwrap();
            assert_eq!(page.items.len(), 25);
            assert!(page.total >= 60, "{}", page.total);
            assert_eq!(ca.store().certificate_rows_read() - before, 25);
        }
    }

    #[test]
    fn issue_revoke_crl_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let ca = init(d.path(), &opts(None)).unwrap();
        assert!(matches!(
            init(d.path(), &opts(None)),
            Err(Error::CaExists(_))
        ));
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let issued = ca
            .issue(
                &req(&["DNS:api.example.internal", "IP:10.0.0.5"], 30),
                &key.public_key_der(),
                "cert.issue",
            )
            .unwrap();
        assert_eq!(issued.info.profile, Some(Profile::Server));
        let rec = ca.store().find_certificate(&issued.info.serial).unwrap();
        assert_eq!(rec.owner.as_deref(), Some("team"));
        let before = ca.audit(1, 100).unwrap().len();
        // outside policy, beyond the issuer, beyond max_ttl: refused, nothing recorded
        let e = ca
            .issue(
                &req(&["DNS:evil.com"], 30),
                &key.public_key_der(),
                "cert.issue",
            )
            .unwrap_err();
        assert!(e.to_string().contains("DNS:evil.com"), "{e}");
        let e = ca
            .issue(
                &req(&["DNS:a.example.internal"], 390),
                &key.public_key_der(),
                "cert.issue",
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("after the issuing CA certificate expires"),
            "{e}"
        );
        let e = ca
            .issue(
                &req(&["URI:spiffe://other.org/x"], 30),
                &key.public_key_der(),
                "cert.issue",
            )
            .unwrap_err();
        assert!(e.to_string().contains("spiffe://other.org/x"), "{e}");
        assert_eq!(ca.audit(1, 100).unwrap().len(), before);
        assert_eq!(ca.list(&CertQuery::default()).unwrap().total, 3);

        ca.revoke(&issued.info.serial, Reason::KeyCompromise, "test")
            .unwrap();
        let (n, der) = ca.crl(None, "test").unwrap();
        assert_eq!(n, 1);
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| twoway_pki::serial_hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![issued.info.serial.clone()]);
        let (_, problems) = ca.verify_audit().unwrap();
        assert!(problems.is_empty());
    }

    #[test]
    fn names_stay_inside_the_intermediate_constraints() {
        let d = tempfile::tempdir().unwrap();
        let ca = init(d.path(), &opts(None)).unwrap();
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        // A name outside the constraints.
        let r = req(&["DNS:www.evil.com"], 30);
        let e = ca
            .issue(&r, &key.public_key_der(), "cert.issue")
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Pki(twoway_pki::Error::NameConstraintViolation { .. })
            ),
            "{e}"
        );
        // A policy widened past the constraints: the CA does not open.
        let cfg = d.path().join(layout::CONFIG);
        let text = fs::read_to_string(&cfg).unwrap();
        fs::write(
            &cfg,
            text.replace(
                "dns = [\"example.internal\"]",
                "dns = [\"example.internal\", \"localhost\"]",
            ),
        )
        .unwrap();
        let e = Ca::open(d.path()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(e.to_string().contains("new intermediate"), "{e}");
    }

    #[test]
    fn the_subject_holds_a_cn_only_when_it_repeats_a_san_on_issue_and_renewal() {
        let d = tempfile::tempdir().unwrap();
        let ca = init(d.path(), &opts(None)).unwrap();
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let before = ca.list(&CertQuery::default()).unwrap().total;
        for forged in ["migrations", "www.evil.com", "spiffe://example.org/admin"] {
            let mut r = req(&["DNS:api.example.internal"], 30);
            r.common_name = Some(forged.into());
            let e = ca
                .issue(&r, &key.public_key_der(), "cert.issue")
                .unwrap_err();
            assert!(
                matches!(e, Error::Pki(twoway_pki::Error::CommonNameNotASan { .. })),
                "{forged}: {e}"
            );
            assert_eq!(e.kind(), crate::ErrorKind::BadInput);
        }
        assert_eq!(ca.list(&CertQuery::default()).unwrap().total, before);
        let mut r = req(&["DNS:api.example.internal"], 30);
        r.common_name = Some("API.example.internal".into());
        let issued = ca.issue(&r, &key.public_key_der(), "cert.issue").unwrap();
        assert_eq!(
            issued.info.common_name.as_deref(),
            Some("api.example.internal")
        );

        // Renewal takes the CN from the record, not the CSR: a record from before the rule
        // with a free CN renews without it; a CN that repeats a SAN is kept.
        let mut rec = ca.store().find_certificate(&issued.info.serial).unwrap();
        let next = PrivateKey::generate(KeyType::P256).unwrap();
        let csr = twoway_pki::create_csr(&next, &req(&["DNS:api.example.internal"], 1).sans, None)
            .unwrap();
        for (stored, renewed) in [
            (Some("migrations"), None),
            (Some("api.example.internal"), Some("api.example.internal")),
            (None, None),
        ] {
            rec.common_name = stored.map(str::to_string);
            let Outcome::Unrecorded(u) = ca.prepare_renew(&rec, csr.as_bytes(), "test").unwrap()
            else {
                panic!("a renewal of an active certificate is signed anew");
            };
            let (issued, _) = u.into_parts();
            assert_eq!(issued.info.common_name.as_deref(), renewed, "{stored:?}");
        }
    }

    #[test]
    fn encrypted_keys_need_the_passphrase() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), &opts(Some(b"correct horse"))).unwrap();
        let mut ca = Ca::open(d.path()).unwrap();
        assert!(matches!(
            ca.unlock(None),
            Err(Error::Pki(twoway_pki::Error::PassphraseRequired))
        ));
        assert!(matches!(
            ca.unlock(Some(b"wrong")),
            Err(Error::Pki(twoway_pki::Error::WrongPassphrase))
        ));
        ca.unlock(Some(b"correct horse")).unwrap();
        let mode = fs::metadata(d.path().join(layout::INTERMEDIATE_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
