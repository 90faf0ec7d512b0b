//! Root rotation: `ca rotate root` makes a new root and two cross certificates (the new
//! root certified by the old one, and the old by the new), so verifiers that trust either
//! root accept chains of both while they overlap. The next `ca rotate intermediate` is
//! signed by the new root, and `ca rotate activate` makes both active at once: the active
//! root is always `root.pem` / `root.key` / `root.crl` at the top of the CA directory, the
//! old one moves to `roots/<id>/` (retiring: still trusted, `roots.pem` carries both, and
//! the new intermediate's chain carries the cross certificate up to the old root) until
//! `ca rotate retire <id>` once no intermediate of it is left.
//!
//! Ids are generations: `r1` is the root `ca init` made. The active root's id is in
//! `roots/active` (absent: `r1`).

use crate::ca::{build_root_crl, ensure_private_dir, rfc3339, ROOT_CRL_FIX};
use crate::rotate::{IssuerState, ACTIVE_FILE, STATE_FILE};
use crate::{layout, Ca, Error, Result};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use twoway_pki::{
    der_to_pem, parse_certificates, CaSigner, CertInfo, PrivateKey, Reason, RevokedEntry, Signer,
};
use twoway_store::NewAudit;
use zeroize::Zeroizing;

/// Where the non-active roots live, inside the CA directory.
pub const ROOTS_DIR: &str = "roots";

/// A root that is not the active one.
pub(crate) struct OtherRoot {
    pub(crate) id: String,
    pub(crate) state: IssuerState,
    pub(crate) der: Vec<u8>,
    pub(crate) info: CertInfo,
}

/// One root of the CA, for people and tools (`ca show`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RootView {
    /// `r1`, `r2`, …
    pub id: String,
    /// Where it is in its life.
    pub state: IssuerState,
    /// What its certificate says.
    pub certificate: CertInfo,
}

pub(crate) fn generation(id: &str) -> Option<u32> {
    id.strip_prefix('r')?.parse().ok().filter(|n| *n >= 1)
}

pub(crate) fn root_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(ROOTS_DIR).join(id)
}

/// The cross certificate of root `subject` certified by root `issuer`, in `subject`'s
/// directory when `subject` is the newer, else in `issuer`'s.
fn cross_path(dir: &Path, newer: &str, subject: &str, issuer: &str) -> PathBuf {
    root_dir(dir, newer).join(format!("{subject}-by-{issuer}.pem"))
}

/// The active root's id and the other roots, as the CA directory holds them.
pub(crate) fn load(dir: &Path) -> Result<(String, Vec<OtherRoot>)> {
    let (active, others) = crate::rotate::load_generations(dir, ROOTS_DIR, 'r', layout::ROOT_CERT)?;
    Ok((
        active,
        others
            .into_iter()
            .map(|g| OtherRoot {
                id: g.id,
                state: g.state,
                der: g.der,
                info: g.info,
            })
            .collect(),
    ))
}

/// The trust bundle (`roots.pem`): the active root first, then the retiring ones (which
/// `root.pem` already holds after an activation: not twice).
pub(crate) fn bundle(active_pem: &str, others: &[OtherRoot]) -> String {
    let mut pem = active_pem.to_string();
    let present = parse_certificates(active_pem.as_bytes()).unwrap_or_default();
    for o in others
        .iter()
        .filter(|o| o.state == IssuerState::Retiring && !present.contains(&o.der))
    {
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&der_to_pem("CERTIFICATE", &o.der));
    }
    pem
}

/// The cross certificates a chain under the active root carries up to each retiring root.
pub(crate) fn chain_crosses(dir: &Path, active: &str, others: &[OtherRoot]) -> Vec<Vec<u8>> {
    others
        .iter()
        .filter(|o| o.state == IssuerState::Retiring)
        .filter_map(|o| crate::rotate::read_cert(&cross_path(dir, active, active, &o.id)).ok())
        .collect()
}

fn now_s() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

impl Ca {
    /// The active root's id (`r1` until a root rotation).
    pub fn active_root_id(&self) -> &str {
        &self.root_id
    }

    /// The active root, DER.
    pub(crate) fn active_root_der(&self) -> Result<Vec<u8>> {
        parse_certificates(self.root_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| twoway_pki::Error::NoPemBlock("CERTIFICATE").into())
    }

    /// Every root of the CA, the active one first.
    pub fn roots(&self) -> Result<Vec<RootView>> {
        let mut out = vec![RootView {
            id: self.root_id.clone(),
            state: IssuerState::Active,
            certificate: CertInfo::from_der(&self.active_root_der()?)?,
        }];
        out.extend(self.old_roots.iter().map(|o| RootView {
            id: o.id.clone(),
            state: o.state,
            certificate: o.info.clone(),
        }));
        Ok(out)
    }

    /// The prepared root, if any: (id, certificate DER, its key).
    pub(crate) fn prepared_root(
        &self,
        passphrase: Option<&[u8]>,
    ) -> Result<Option<(String, CaSigner)>> {
        let Some(o) = self
            .old_roots
            .iter()
            .find(|o| o.state == IssuerState::Prepared)
        else {
            return Ok(None);
        };
        let key = self.read_key(
            &root_dir(&self.dir, &o.id).join(layout::ROOT_KEY),
            passphrase,
        )?;
        Ok(Some((o.id.clone(), CaSigner::new(o.der.clone(), key)?)))
    }

    /// `ca rotate root`: a new root (the next id), its first (empty) CRL, and the two cross
    /// certificates, in `roots/<id>/`; recorded in the inventory and the audit log. The
    /// next `ca rotate intermediate` is signed by it, and `ca rotate activate` makes both
    /// active. Needs the active root's key here (`root.key`).
    pub fn rotate_root_prepare(
        &self,
        passphrase: Option<&[u8]>,
        validity: Option<Duration>,
        actor: &str,
    ) -> Result<RootView> {
        if let Some(uri) = &self.settings.raw.ca.root_key {
            return Err(Error::Refused(format!(
                "the root key is in a PKCS#11 token ({uri}): rotating a token-held root is \
                 not supported yet"
            )));
        }
        if let Some(p) = self
            .old_roots
            .iter()
            .find(|o| o.state == IssuerState::Prepared)
        {
            return Err(Error::Refused(format!(
                "root {} is already prepared: prepare its intermediate (`twoway ca rotate \
                 intermediate`) and activate both (`twoway ca rotate activate`)",
                p.id
            )));
        }
        if let Some(p) = self
            .others
            .iter()
            .find(|o| o.state == IssuerState::Prepared)
        {
            return Err(Error::Refused(format!(
                "intermediate {} is prepared under the current root: activate it (`twoway ca \
                 rotate activate`) before preparing a new root",
                p.id
            )));
        }
        let old_der = self.active_root_der()?;
        let old_info = CertInfo::from_der(&old_der)?;
        let old = CaSigner::new(old_der.clone(), self.root_signer(passphrase)?)?;
        let old_gen = generation(&self.root_id).unwrap_or(1);
        let gen = std::iter::once(self.root_id.as_str())
            .chain(self.old_roots.iter().map(|o| o.id.as_str()))
            .filter_map(generation)
            .max()
            .unwrap_or(1)
            + 1;
        let id = format!("r{gen}");
        let org = self.settings.raw.ca.name.clone();
        let now = now_s();
        let life = validity.unwrap_or(old_info.not_after - old_info.not_before);
        if life <= Duration::days(1) {
            return Err(twoway_pki::Error::BadTtl(
                "--ttl of the new root must be longer than a day".into(),
            )
            .into());
        }
        let key = PrivateKey::generate(self.settings.raw.ca.key_type)?;
        let pass = passphrase.filter(|_| self.settings.raw.ca.encrypted_keys);
        let key_pem = key.to_pem(pass)?;
        let key: Arc<dyn twoway_pki::Signer> = Arc::new(key);
        let nb = now - Duration::minutes(5);
        let new_der = twoway_pki::build_root(key.clone(), &org, gen, nb, now + life)?;
        let new = CaSigner::new(new_der.clone(), key)?;
        // new certified by old: chains under the new root reach the old one.
        let up = twoway_pki::build_cross(&old, &new_der, &org, gen, nb, now + life)?;
        // old certified by new: chains under the old root reach the new one.
        let down = twoway_pki::build_cross(&new, &old_der, &org, old_gen, nb, old_info.not_after)?;
        let new_info = CertInfo::from_der(&new_der)?;
        let (_, _, arl) = crate::ca::build_root_crl(&new, &new_info, now, None, None, &[])?;
        let target = root_dir(&self.dir, &id);
        ensure_private_dir(&self.dir.join(ROOTS_DIR))?;
        let mut staged = twoway_files::StagedFiles::new(&target)?;
        staged.stage(layout::ROOT_KEY, key_pem.as_bytes(), 0o600)?;
        staged.stage(
            layout::ROOT_CERT,
            der_to_pem("CERTIFICATE", &new_der).as_bytes(),
            0o644,
        )?;
        staged.stage(
            layout::ROOT_CRL,
            der_to_pem("X509 CRL", &arl).as_bytes(),
            0o644,
        )?;
        let up_name = format!("{id}-by-{}.pem", self.root_id);
        let down_name = format!("{}-by-{id}.pem", self.root_id);
        staged.stage(&up_name, der_to_pem("CERTIFICATE", &up).as_bytes(), 0o644)?;
        staged.stage(
            &down_name,
            der_to_pem("CERTIFICATE", &down).as_bytes(),
            0o644,
        )?;
        staged.stage(STATE_FILE, b"prepared\n", 0o644)?;
        for (der, action) in [
            (&new_der, "ca.rotate.root"),
            (&up, "ca.rotate.cross"),
            (&down, "ca.rotate.cross"),
        ] {
            let info = CertInfo::from_der(der)?;
            self.record_ca_certificate(
                &info,
                der,
                action,
                json!({
                    "id": id, "subject": info.subject, "issuer": info.issuer,
                    "fingerprint": info.fingerprint, "not_after": rfc3339(info.not_after),
                }),
                actor,
                now,
            )?;
        }
        staged.commit()?;
        Ok(RootView {
            id,
            state: IssuerState::Prepared,
            certificate: new_info,
        })
    }

    /// Moves the prepared root `id` to the top (during [`Ca::rotate_activate`] of an
    /// intermediate it signed); the active one goes to `roots/<old>/`, retiring.
    pub(crate) fn activate_root(&self, id: &str, actor: &str) -> Result<()> {
        let old = self.root_id.clone();
        let old_dir = root_dir(&self.dir, &old);
        let new_dir = root_dir(&self.dir, id);
        let copy = |from: &Path, to: &Path, mode: u32| -> Result<()> {
            let data = Zeroizing::new(fs::read(from).map_err(Error::io("cannot read", from))?);
            twoway_files::write_atomic(to, &data, mode)?;
            Ok(())
        };
        let top = |name: &str| self.dir.join(name);
        let active_der = self.active_root_der()?;
        let new_der = crate::rotate::read_cert(&new_dir.join(layout::ROOT_CERT))?;
        // An activation that stopped after root.pem was rewritten: the old root's copies
        // are made already, and root.pem is right.
        if active_der != new_der {
            ensure_private_dir(&old_dir)?;
            if top(layout::ROOT_KEY).exists() {
                copy(
                    &top(layout::ROOT_KEY),
                    &old_dir.join(layout::ROOT_KEY),
                    0o600,
                )?;
            }
            twoway_files::write_atomic(
                &old_dir.join(layout::ROOT_CERT),
                der_to_pem("CERTIFICATE", &active_der).as_bytes(),
                0o644,
            )?;
            if top(layout::ROOT_CRL).exists() {
                copy(
                    &top(layout::ROOT_CRL),
                    &old_dir.join(layout::ROOT_CRL),
                    0o644,
                )?;
            }
            twoway_files::write_atomic(&old_dir.join(STATE_FILE), b"retiring\n", 0o644)?;
            // root.pem is what people hand to verifiers: during the overlap it holds both
            // roots, the new one first (the active root, for everything that reads one).
            twoway_files::write_atomic(
                &top(layout::ROOT_CERT),
                format!(
                    "{}{}",
                    der_to_pem("CERTIFICATE", &new_der),
                    der_to_pem("CERTIFICATE", &active_der)
                )
                .as_bytes(),
                0o644,
            )?;
        }
        copy(
            &new_dir.join(layout::ROOT_KEY),
            &top(layout::ROOT_KEY),
            0o600,
        )?;
        copy(
            &new_dir.join(layout::ROOT_CRL),
            &top(layout::ROOT_CRL),
            0o644,
        )?;
        twoway_files::write_atomic(
            &self.dir.join(ROOTS_DIR).join(ACTIVE_FILE),
            format!("{id}\n").as_bytes(),
            0o644,
        )?;
        twoway_files::write_atomic(&new_dir.join(STATE_FILE), b"active\n", 0o644)?;
        let _ = fs::remove_file(new_dir.join(layout::ROOT_KEY));
        self.store.append_audit(&NewAudit {
            actor: actor.into(),
            action: "ca.rotate.activate_root".into(),
            target: id.into(),
            details: json!({"id": id, "retiring": old}),
            time: now_s(),
        })?;
        Ok(())
    }

    /// Signs the CRL of the root named `subject` (the active one, or a retiring one with
    /// its key in `roots/<id>/`) listing its revoked intermediates; `until` its
    /// nextUpdate (default a year). False when that root's key is not here.
    pub(crate) fn sign_arl_of(
        &self,
        subject: &str,
        until: Option<OffsetDateTime>,
        passphrase: Option<&[u8]>,
        actor: &str,
    ) -> Result<bool> {
        let active = CertInfo::from_der(&self.active_root_der()?)?;
        if subject == active.subject {
            if !self.has_root_key() {
                return Ok(false);
            }
            let validity = until.map(|u| u - now_s());
            self.sign_root_crl(passphrase, validity, actor)?;
            return Ok(true);
        }
        let Some(o) = self.old_roots.iter().find(|o| o.info.subject == subject) else {
            return Ok(false);
        };
        let dir = root_dir(&self.dir, &o.id);
        let key_path = dir.join(layout::ROOT_KEY);
        if !key_path.exists() {
            return Ok(false);
        }
        let signer = CaSigner::new(o.der.clone(), self.read_key(&key_path, passphrase)?)?;
        let now = now_s();
        let revoked = self.revoked_entries_of(&o.info.subject, now)?;
        let validity = until.map(|u| u - now);
        let (number, next, der) =
            crate::ca::build_root_crl(&signer, &o.info, now, validity, None, &revoked)?;
        self.store.append_audit(&NewAudit {
            actor: actor.into(),
            action: "crl.sign".into(),
            target: number.to_string(),
            details: json!({
                "issuer": o.info.subject, "revoked": revoked.len(), "next_update": rfc3339(next),
            }),
            time: now,
        })?;
        twoway_files::write_atomic(
            &dir.join(layout::ROOT_CRL),
            der_to_pem("X509 CRL", &der).as_bytes(),
            0o644,
        )?;
        Ok(true)
    }

    /// The CRL of root `id` as last signed, DER: the active root's as [`Ca::root_crl`]
    /// checks it, a retiring or retired one's from `roots/<id>/root.crl` (`/crl/root/<id>`).
    pub fn root_crl_of(&self, id: &str) -> Result<Vec<u8>> {
        if id == self.root_id {
            return self.root_crl();
        }
        let o = self
            .old_roots
            .iter()
            .find(|o| o.id == id && o.state != IssuerState::Prepared)
            .ok_or_else(|| {
                Error::Store(twoway_store::Error::NotFound(format!(
                    "root {id}: this CA has {}",
                    std::iter::once(self.root_id.as_str())
                        .chain(
                            self.old_roots
                                .iter()
                                .filter(|o| o.state != IssuerState::Prepared)
                                .map(|o| o.id.as_str())
                        )
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            })?;
        let p = root_dir(&self.dir, &o.id).join(layout::ROOT_CRL);
        let text = fs::read(&p).map_err(Error::io("cannot read", &p))?;
        x509_parser::pem::Pem::iter_from_buffer(&text)
            .filter_map(|b| b.ok())
            .find(|b| b.label == "X509 CRL")
            .map(|b| b.contents)
            .ok_or_else(|| Error::Refused(format!("{} holds no X509 CRL block", p.display())))
    }

    /// The CRLs of the roots that are not active (retiring and retired), DER, as last
    /// signed: for `crl --all`.
    pub fn other_root_crls(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for o in self
            .old_roots
            .iter()
            .filter(|o| o.state != IssuerState::Prepared)
        {
            let p = root_dir(&self.dir, &o.id).join(layout::ROOT_CRL);
            if let Ok(text) = fs::read(&p) {
                out.extend(
                    x509_parser::pem::Pem::iter_from_buffer(&text)
                        .filter_map(|b| b.ok())
                        .filter(|b| b.label == "X509 CRL")
                        .map(|b| b.contents),
                );
            }
        }
        Ok(out)
    }

    /// `ca rotate retire rN`: a retiring root with no intermediate left under it signs a
    /// final CRL valid until its own expiry, its key is destroyed, and it leaves
    /// `roots.pem` and the chains.
    pub(crate) fn retire_root(
        &self,
        id: &str,
        passphrase: Option<&[u8]>,
        actor: &str,
    ) -> Result<crate::Retired> {
        if id == self.root_id {
            return Err(Error::Refused(format!(
                "{id} is the active root: retiring it would leave the CA without one. Prepare \
                 and activate a new one first (`twoway ca rotate root`, `twoway ca rotate \
                 intermediate`, `twoway ca rotate activate`)"
            )));
        }
        let o = self.old_roots.iter().find(|o| o.id == id).ok_or_else(|| {
            Error::Store(twoway_store::Error::NotFound(format!(
                "root {id}: `twoway ca show` lists this CA's roots"
            )))
        })?;
        match o.state {
            IssuerState::Retiring => {}
            IssuerState::Prepared => {
                return Err(Error::Refused(format!(
                    "{id} was never activated: activate it with its intermediate (`twoway ca \
                     rotate activate`) before it can be retired"
                )))
            }
            _ => return Err(Error::Refused(format!("{id} is already retired"))),
        }
        let under: Vec<&str> = std::iter::once((
            self.active_id.as_str(),
            &self.intermediate_info,
            IssuerState::Active,
        ))
        .chain(
            self.others
                .iter()
                .map(|i| (i.id.as_str(), &i.info, i.state)),
        )
        .filter(|(_, info, state)| info.issuer == o.info.subject && *state != IssuerState::Retired)
        .map(|(id, _, _)| id)
        .collect();
        if !under.is_empty() {
            return Err(Error::Refused(format!(
                "{id} still has intermediate(s) {} under it: retire them first (`twoway ca \
                 rotate retire {}`)",
                under.join(", "),
                under[0]
            )));
        }
        let until = o.info.not_after.max(now_s() + Duration::days(1));
        if !self.sign_arl_of(&o.info.subject, Some(until), passphrase, actor)? {
            return Err(Error::Refused(format!(
                "the key of root {id} is not in {}: retire it where that key is",
                root_dir(&self.dir, id).display()
            )));
        }
        let dir = root_dir(&self.dir, id);
        twoway_files::write_atomic(&dir.join(STATE_FILE), b"retired\n", 0o644)?;
        // root.pem goes back to the active root alone.
        twoway_files::write_atomic(
            &self.dir.join(layout::ROOT_CERT),
            der_to_pem("CERTIFICATE", &self.active_root_der()?).as_bytes(),
            0o644,
        )?;
        let key = dir.join(layout::ROOT_KEY);
        if key.exists() {
            fs::remove_file(&key).map_err(Error::io("cannot remove", &key))?;
        }
        self.store.append_audit(&NewAudit {
            actor: actor.into(),
            action: "ca.rotate.retire".into(),
            target: o.info.serial.clone(),
            details: json!({
                "id": id, "subject": o.info.subject, "fingerprint": o.info.fingerprint,
                "reason": Reason::CessationOfOperation.as_str(),
            }),
            time: now_s(),
        })?;
        Ok(crate::Retired {
            id: id.to_string(),
            live_certificates: 0,
            root_crl_signed: true,
        })
    }
}

/// The root key and the root CRLs (the active root's `root.crl`).
impl Ca {
    /// Whether the root key is at hand here: in the token (`[ca] root_key`) or `root.key`.
    pub fn has_root_key(&self) -> bool {
        self.settings.raw.ca.root_key.is_some() || self.dir.join(layout::ROOT_KEY).exists()
    }

    /// The root key: opened in the token when `[ca] root_key` names one, else read from
    /// `root.key` (refused, saying where to run instead, when it is not here).
    pub(crate) fn root_signer(&self, passphrase: Option<&[u8]>) -> Result<Arc<dyn Signer>> {
        if let Some(uri) = &self.settings.raw.ca.root_key {
            let hsm = self.settings.raw.hsm.clone().ok_or_else(|| Error::Config {
                path: self.dir.join(layout::CONFIG),
                message: format!(
                    "[ca] root_key is {uri} but there is no [hsm] section naming the PKCS#11 \
                     module and the PIN source"
                ),
            })?;
            return crate::hsm::open(uri, &hsm);
        }
        let p = self.dir.join(layout::ROOT_KEY);
        if !p.exists() {
            return Err(Error::Refused(format!(
                "the root key {} is not here (kept offline?): run this where the root key is \
                 (for the root's CRL, `twoway crl --root`, then copy the {} it writes into \
                 this CA directory)",
                p.display(),
                layout::ROOT_CRL
            )));
        }
        self.read_key(&p, passphrase)
    }

    /// A CA key file (PEM, PKCS#8, encrypted when the CA's keys are).
    pub(crate) fn read_key(&self, p: &Path, passphrase: Option<&[u8]>) -> Result<Arc<dyn Signer>> {
        let pem = Zeroizing::new(fs::read_to_string(p).map_err(Error::io("cannot read", p))?);
        if self.settings.raw.ca.encrypted_keys && passphrase.is_none() {
            return Err(twoway_pki::Error::PassphraseRequired.into());
        }
        Ok(Arc::new(PrivateKey::from_pem(&pem, passphrase)?))
    }

    /// Signs a new root CRL with the root key (`root.key` in the CA directory; `passphrase`
    /// when the keys are encrypted), writes it to `root.crl` and returns it, DER. Refused,
    /// naming the fix, when the root key is not here.
    pub fn sign_root_crl(
        &self,
        passphrase: Option<&[u8]>,
        validity: Option<Duration>,
        actor: &str,
    ) -> Result<Vec<u8>> {
        if validity.is_some_and(|v| v <= Duration::ZERO) {
            return Err(twoway_pki::Error::BadTtl("--next-update must be positive".into()).into());
        }
        let key = self.root_signer(passphrase)?;
        let root_der = parse_certificates(self.root_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
        let root_info = CertInfo::from_der(&root_der)?;
        let root = CaSigner::new(root_der, key)?;
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        let revoked = self.revoked_entries_of(&root_info.subject, now)?;
        let previous = self.root_crl_any().ok().and_then(|der| {
            x509_parser::parse_x509_crl(&der)
                .ok()
                .and_then(|(_, c)| c.crl_number().and_then(|n| u64::try_from(n).ok()))
        });
        let (number, next, der) =
            build_root_crl(&root, &root_info, now, validity, previous, &revoked)?;
        self.store.append_audit(&NewAudit {
            actor: actor.into(),
            action: "crl.sign".into(),
            target: number.to_string(),
            details: json!({
                "issuer": root_info.subject, "revoked": revoked.len(),
                "next_update": rfc3339(next),
            }),
            time: now,
        })?;
        twoway_files::write_atomic(
            &self.dir.join(layout::ROOT_CRL),
            der_to_pem("X509 CRL", &der).as_bytes(),
            0o644,
        )?;
        Ok(der)
    }

    /// The root CRL as last signed (`root.crl`), DER. An error naming the fix when it is
    /// missing or past its nextUpdate (verifiers would refuse every chain).
    pub fn root_crl(&self) -> Result<Vec<u8>> {
        let der = self.root_crl_any()?;
        let p = self.dir.join(layout::ROOT_CRL);
        let next = x509_parser::parse_x509_crl(&der)
            .map_err(|e| {
                Error::Refused(format!(
                    "{} is not a CRL ({e}): {ROOT_CRL_FIX}",
                    p.display()
                ))
            })?
            .1
            .next_update()
            .map(|t| t.timestamp());
        if next.is_some_and(|n| n <= OffsetDateTime::now_utc().unix_timestamp()) {
            return Err(Error::Refused(format!(
                "the root CRL {} is past its nextUpdate: {ROOT_CRL_FIX}",
                p.display()
            )));
        }
        Ok(der)
    }

    /// When `root.crl` stops being valid (its nextUpdate); `None` when the directory holds no
    /// root CRL (a CA made before it had one) or the CRL names no nextUpdate.
    pub fn root_crl_next_update(&self) -> Result<Option<OffsetDateTime>> {
        if !self.dir.join(layout::ROOT_CRL).exists() {
            return Ok(None);
        }
        let der = self.root_crl_any()?;
        let next = x509_parser::parse_x509_crl(&der)
            .map_err(|e| {
                Error::Refused(format!(
                    "{} is not a CRL ({e}): {ROOT_CRL_FIX}",
                    self.dir.join(layout::ROOT_CRL).display()
                ))
            })?
            .1
            .next_update()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t.timestamp()).ok());
        Ok(next)
    }

    /// The revoked, unexpired certificates `issuer` (a root) signed, as CRL entries.
    pub(crate) fn revoked_entries_of(
        &self,
        issuer: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedEntry>> {
        Ok(self
            .store
            .revoked_by_issuer(issuer, now)?
            .iter()
            .map(|r| RevokedEntry {
                serial_hex: r.serial.clone(),
                revoked_at: r.revoked_at.unwrap_or(now),
                reason: r
                    .revocation_reason
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(Reason::Unspecified),
            })
            .collect())
    }

    /// `root.crl`'s CRL, DER, whatever its dates.
    fn root_crl_any(&self) -> Result<Vec<u8>> {
        let p = self.dir.join(layout::ROOT_CRL);
        let text = fs::read(&p).map_err(|e| {
            Error::Refused(format!(
                "cannot read the root CRL {}: {e}: {ROOT_CRL_FIX}",
                p.display()
            ))
        })?;
        x509_parser::pem::Pem::iter_from_buffer(&text)
            .filter_map(|b| b.ok())
            .find(|b| b.label == "X509 CRL")
            .map(|b| b.contents)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "{} holds no X509 CRL block: {ROOT_CRL_FIX}",
                    p.display()
                ))
            })
    }
}
