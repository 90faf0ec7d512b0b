//! The server's own certificates (its TLS certificate and its OCSP-signing certificate)
//! kept across restarts, so a restart does not add two rows to the inventory.
//!
//! Each is one file, `serve/tls.pem` and `serve/ocsp.pem` in the CA directory (0600, the
//! directory 0700): the certificate and its key, written together atomically, the key
//! protected as the CA's own key is ([`Ca::seal_service_key`]). At start a kept one is used
//! again when everything still holds: it parses and its key matches, it was issued by the
//! CA's current intermediate, the inventory has it active, it is not yet at two thirds of
//! its life, its lifetime is not longer than the one configured now, and (TLS) it names
//! exactly the configured names. Otherwise a new one is issued, kept, and the one it
//! replaces is marked superseded. When the CA's key is in a PKCS#11 token nothing is kept
//! (see [`Ca::seal_service_key`]): each start issues new ones and a stop retires them.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use time::{Duration, OffsetDateTime};
use twoway_ca::Ca;
use twoway_pki::{CertInfo, PrivateKey};
use twoway_store::CertStatus;

/// Which of the server's certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Tls,
    Ocsp,
}

impl Role {
    fn file(self) -> &'static str {
        match self {
            Role::Tls => "tls.pem",
            Role::Ocsp => "ocsp.pem",
        }
    }
}

/// A certificate of the server's own with its key.
pub(crate) struct Kept {
    pub key: PrivateKey,
    pub der: Vec<u8>,
    pub info: CertInfo,
}

fn path(ca: &Ca, role: Role) -> PathBuf {
    ca.dir().join("serve").join(role.file())
}

/// Why a kept certificate cannot serve, with its fingerprint when the certificate itself
/// could be read (so it can be marked superseded).
pub(crate) struct Unusable {
    pub why: String,
    pub fingerprint: Option<String>,
}

/// The kept certificate of `role`, if there is one; why it cannot be used, if it cannot.
pub(crate) fn load(ca: &Ca, role: Role) -> Option<Result<Kept, Unusable>> {
    let p = path(ca, role);
    let meta = std::fs::metadata(&p).ok()?;
    Some(read(ca, &p, &meta))
}

fn read(ca: &Ca, p: &std::path::Path, meta: &std::fs::Metadata) -> Result<Kept, Unusable> {
    let at = |why: String| format!("{}: {why}", p.display());
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(p).map_err(|e| Unusable {
        why: at(format!("cannot read it: {e}")),
        fingerprint: None,
    })?);
    let der = twoway_pki::parse_certificates(text.as_bytes())
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| Unusable {
            why: at("it holds no certificate".into()),
            fingerprint: None,
        })?;
    let fingerprint = twoway_pki::sha256_hex(&der);
    let unusable = |why: String| Unusable {
        why: at(why),
        fingerprint: Some(fingerprint.clone()),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unusable(format!(
            "it is readable by others (mode {mode:o}), so its key is not trusted"
        )));
    }
    let info = CertInfo::from_der(&der).map_err(|e| unusable(e.to_string()))?;
    let key = ca
        .unseal_service_key(&text)
        .map_err(|e| unusable(e.to_string()))?;
    if twoway_pki::spki_of_cert(&der).ok().as_deref() != Some(&key.public_key_der()[..]) {
        return Err(unusable("its key does not match its certificate".into()));
    }
    Ok(Kept { key, der, info })
}

/// Whether `kept` may serve again now as the certificate of `role`; why not otherwise.
pub(crate) fn reusable(
    ca: &Ca,
    kept: &Kept,
    ttl: Duration,
    sans: Option<&[twoway_pki::San]>,
    now: OffsetDateTime,
) -> Result<(), String> {
    let info = &kept.info;
    if info.issuer != ca.intermediate_info().subject {
        return Err("it was issued by another intermediate".into());
    }
    if crate::two_thirds(info.not_before, info.not_after) <= now {
        return Err("it is due for renewal".into());
    }
    if info.not_after - info.not_before > ttl + Duration::minutes(2) {
        return Err("its lifetime is longer than the one configured now".into());
    }
    if let Some(want) = sans {
        let mut a: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let mut b: Vec<String> = info.sans.iter().map(|s| s.to_string()).collect();
        a.sort();
        b.sort();
        if a != b {
            return Err("it names other names than the ones configured now".into());
        }
    }
    match ca.store().find_certificate(&info.fingerprint) {
        Ok(rec) if rec.fingerprint == info.fingerprint && rec.status == CertStatus::Active => {
            Ok(())
        }
        Ok(rec) if rec.fingerprint == info.fingerprint => {
            Err(format!("the inventory has it {}", rec.status.as_str()))
        }
        _ => Err("the inventory does not have it".into()),
    }
}

/// Keeps a newly issued certificate of `role` with its key. Returns false when nothing is
/// kept (the CA's key is in a token); an error when writing failed (the server still
/// serves with it, and issues a new one at its next start).
pub(crate) fn save(ca: &Ca, role: Role, key: &PrivateKey, der: &[u8]) -> Result<bool, String> {
    let sealed = match ca.seal_service_key(key) {
        Ok(Some(pem)) => pem,
        Ok(None) => return Ok(false),
        Err(e) => return Err(e.to_string()),
    };
    let p = path(ca, role);
    let dir = p.parent().unwrap_or(ca.dir());
    twoway_files::create_private_dir_all(dir).map_err(|e| e.to_string())?;
    let mut text = zeroize::Zeroizing::new(twoway_pki::der_to_pem("CERTIFICATE", der));
    text.push_str(&sealed);
    twoway_files::write_atomic(&p, text.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    Ok(true)
}
