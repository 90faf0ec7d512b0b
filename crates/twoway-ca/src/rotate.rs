//! Intermediate rotation: a new intermediate is prepared (new key, signed by the root),
//! activated (it issues every new certificate; the old one goes on signing its CRL and
//! OCSP answers for the certificates it issued) and, once the old one's last certificate
//! has expired, the old one is retired (a final CRL valid to its own expiry, its key
//! destroyed, the intermediate revoked by the root).
//!
//! The active intermediate is always `intermediate.pem` / `intermediate.key` at the top
//! of the CA directory, so every reader of the layout keeps working. The others live in
//! `issuers/<id>/`: `intermediate.pem`, the key while it still signs (`intermediate.key`),
//! `state` (`prepared`, `retiring`, `retired`) and, once retired, `final.crl`. Ids are
//! generations: `g1` is the intermediate `ca init` made, `g2` the first rotation's. The
//! active one's id is in `issuers/active` (absent: `g1`).

use crate::ca::{ensure_private_dir, record_for, rfc3339};
use crate::{layout, Ca, Error, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use twoway_pki::{
    der_to_pem, parse_certificates, CaSigner, CertInfo, PrivateKey, Reason, RevokedEntry,
};
use twoway_store::{CertQuery, CertSource, NewAudit};
use zeroize::Zeroizing;

/// Where the non-active intermediates live, inside the CA directory.
pub const ISSUERS_DIR: &str = "issuers";
pub(crate) const ACTIVE_FILE: &str = "active";
pub(crate) const STATE_FILE: &str = "state";
const FINAL_CRL: &str = "final.crl";
/// In `issuers/<id>/`: the PKCS#11 URI of the intermediate's key, when it is in a token.
const KEY_URI_FILE: &str = "key-uri";

/// Where an intermediate is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerState {
    /// Made by `ca rotate intermediate`, not issuing yet.
    Prepared,
    /// Issues every new certificate.
    Active,
    /// Replaced; still signs the CRL and OCSP answers of the certificates it issued.
    Retiring,
    /// Done: a final CRL, its key destroyed.
    Retired,
}

impl IssuerState {
    /// As written in `state` and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerState::Prepared => "prepared",
            IssuerState::Active => "active",
            IssuerState::Retiring => "retiring",
            IssuerState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "prepared" => Some(IssuerState::Prepared),
            "active" => Some(IssuerState::Active),
            "retiring" => Some(IssuerState::Retiring),
            "retired" => Some(IssuerState::Retired),
            _ => None,
        }
    }
}

/// An intermediate that is not the active one.
pub(crate) struct OtherIssuer {
    pub(crate) id: String,
    pub(crate) state: IssuerState,
    pub(crate) der: Vec<u8>,
    pub(crate) info: CertInfo,
    /// Loaded by [`Ca::unlock`] for a retiring intermediate.
    pub(crate) signer: Option<CaSigner>,
}

/// One intermediate of the CA, for people and tools (`ca show`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct IssuerView {
    /// `g1`, `g2`, …
    pub id: String,
    /// Where it is in its life.
    pub state: IssuerState,
    /// What its certificate says.
    pub certificate: CertInfo,
    /// Unexpired, unrevoked certificates it issued: what still depends on it.
    pub live_certificates: usize,
}

/// What [`Ca::rotate_retire`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Retired {
    /// The retired intermediate.
    pub id: String,
    /// Live certificates it still had (non-zero only with `--force`).
    pub live_certificates: usize,
    /// Whether the root's CRL was re-signed here (the root key is here); else it must be
    /// signed where the root key is.
    pub root_crl_signed: bool,
}

fn generation(id: &str) -> Option<u32> {
    id.strip_prefix('g')?.parse().ok().filter(|n| *n >= 1)
}

fn issuer_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(ISSUERS_DIR).join(id)
}

pub(crate) fn read_cert(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(Error::io("cannot read", path))?;
    parse_certificates(&bytes)?
        .into_iter()
        .next()
        .ok_or_else(|| twoway_pki::Error::NoPemBlock("CERTIFICATE").into())
}

/// A CA certificate of a generation directory (`issuers/g2/`, `roots/r1/`) that is not the
/// active one.
pub(crate) struct Generation {
    pub(crate) id: String,
    pub(crate) state: IssuerState,
    pub(crate) der: Vec<u8>,
    pub(crate) info: CertInfo,
}

/// Reads `<dir>/<sub>/`: the active id (its `active` file; absent: `<prefix>1`) and every
/// other `<prefix><n>/` directory's `state` and `cert_file`, oldest first.
pub(crate) fn load_generations(
    dir: &Path,
    sub: &str,
    prefix: char,
    cert_file: &str,
) -> Result<(String, Vec<Generation>)> {
    let gen =
        |id: &str| -> Option<u32> { id.strip_prefix(prefix)?.parse().ok().filter(|n| *n >= 1) };
    let base = dir.join(sub);
    let active = match fs::read_to_string(base.join(ACTIVE_FILE)) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("{prefix}1"),
        Err(e) => return Err(Error::io("cannot read", base.join(ACTIVE_FILE))(e)),
    };
    if gen(&active).is_none() {
        return Err(Error::Refused(format!(
            "{} names {active:?}, not an id such as {prefix}2",
            base.join(ACTIVE_FILE).display()
        )));
    }
    let mut others = Vec::new();
    let entries = match fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((active, others)),
        Err(e) => return Err(Error::io("cannot read", &base)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("cannot read", &base))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if id == active || gen(&id).is_none() || !entry.path().is_dir() {
            continue;
        }
        let state_path = entry.path().join(STATE_FILE);
        let text =
            fs::read_to_string(&state_path).map_err(Error::io("cannot read", &state_path))?;
        let state = IssuerState::parse(&text).ok_or_else(|| {
            Error::Refused(format!(
                "{} holds {:?}, not prepared, retiring or retired",
                state_path.display(),
                text.trim()
            ))
        })?;
        if state == IssuerState::Active {
            // An activation stopped before it finished: the `active` file names another.
            continue;
        }
        let der = read_cert(&entry.path().join(cert_file))?;
        let info = CertInfo::from_der(&der)?;
        others.push(Generation {
            id,
            state,
            der,
            info,
        });
    }
    others.sort_by_key(|o| gen(&o.id));
    Ok((active, others))
}

/// The active intermediate's id and the others, as the CA directory holds them.
pub(crate) fn load(dir: &Path) -> Result<(String, Vec<OtherIssuer>)> {
    let (active, others) = load_generations(dir, ISSUERS_DIR, 'g', layout::INTERMEDIATE_CERT)?;
    Ok((
        active,
        others
            .into_iter()
            .map(|g| OtherIssuer {
                id: g.id,
                state: g.state,
                der: g.der,
                info: g.info,
                signer: None,
            })
            .collect(),
    ))
}

fn now_s() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

impl Ca {
    /// Loads the keys of the retiring intermediates (they sign their CRLs and OCSP
    /// answers), with the passphrase of the CA's keys.
    pub(crate) fn unlock_others(&mut self, passphrase: Option<&[u8]>) -> Result<()> {
        let mut signers = Vec::new();
        for (i, o) in self.others.iter().enumerate() {
            if o.state != IssuerState::Retiring {
                continue;
            }
            let dir = issuer_dir(&self.dir, &o.id);
            let uri_path = dir.join(KEY_URI_FILE);
            let key: Arc<dyn twoway_pki::Signer> = if uri_path.exists() {
                let uri =
                    fs::read_to_string(&uri_path).map_err(Error::io("cannot read", &uri_path))?;
                let hsm = self.settings.raw.hsm.clone().ok_or_else(|| {
                    Error::Refused(format!(
                        "{} names a key in a token but ca.toml has no [hsm] section",
                        uri_path.display()
                    ))
                })?;
                crate::hsm::open(uri.trim(), &hsm)?
            } else {
                self.read_key(&dir.join(layout::INTERMEDIATE_KEY), passphrase)?
            };
            signers.push((i, CaSigner::new(o.der.clone(), key)?));
        }
        for (i, s) in signers {
            self.others[i].signer = Some(s);
        }
        Ok(())
    }

    /// The id of the intermediate that issues new certificates (`g1` until a rotation).
    pub fn active_issuer_id(&self) -> &str {
        &self.active_id
    }

    /// Every intermediate of the CA, the active one first, with what still depends on each.
    pub fn issuers(&self) -> Result<Vec<IssuerView>> {
        let mut out = vec![IssuerView {
            id: self.active_id.clone(),
            state: IssuerState::Active,
            certificate: self.intermediate_info.clone(),
            live_certificates: self.live_leaves(&self.intermediate_info.subject)?,
        }];
        for o in &self.others {
            out.push(IssuerView {
                id: o.id.clone(),
                state: o.state,
                certificate: o.info.clone(),
                live_certificates: self.live_leaves(&o.info.subject)?,
            });
        }
        Ok(out)
    }

    fn live_leaves(&self, subject: &str) -> Result<usize> {
        let q = CertQuery {
            issuer: Some(subject.to_string()),
            status: Some("active".into()),
            now: Some(OffsetDateTime::now_utc()),
            limit: 1,
            ..CertQuery::default()
        };
        Ok(self.store.list_certificates(&q)?.total)
    }

    /// Whether `subject` names an intermediate of this CA that still vouches for what it
    /// issued (the active one or a retiring one): its certificates may be revoked, renewed
    /// and answered for by OCSP.
    pub fn vouches_for(&self, subject: &str) -> bool {
        subject == self.intermediate_info.subject
            || self
                .others
                .iter()
                .any(|o| o.state == IssuerState::Retiring && o.info.subject == subject)
    }

    /// The id (`g<n>`) of this CA's intermediate named `subject`, whatever its state.
    pub fn issuer_id(&self, subject: &str) -> Option<&str> {
        if subject == self.intermediate_info.subject {
            return Some(&self.active_id);
        }
        self.others
            .iter()
            .find(|o| o.info.subject == subject)
            .map(|o| o.id.as_str())
    }

    /// The certificate (PEM) of this CA's intermediate `id` (`g<n>`), whatever its state.
    pub fn issuer_pem_by_id(&self, id: &str) -> Option<String> {
        if id == self.active_id {
            return Some(der_to_pem("CERTIFICATE", &self.intermediate_der));
        }
        self.others
            .iter()
            .find(|o| o.id == id)
            .map(|o| der_to_pem("CERTIFICATE", &o.der))
    }

    /// The certificate (PEM) of this CA's intermediate named `subject`, whatever its state.
    pub fn issuer_pem(&self, subject: &str) -> Option<String> {
        self.issuer_pem_by_id(self.issuer_id(subject)?)
    }

    /// The retiring intermediates with their keys (after [`Ca::unlock`]): `(id, signer)`,
    /// the signer holding the certificate. They sign their own OCSP answers.
    pub fn retiring_signers(&self) -> Vec<(&str, &CaSigner)> {
        self.others
            .iter()
            .filter_map(|o| o.signer.as_ref().map(|s| (o.id.as_str(), s)))
            .collect()
    }

    /// The ids whose CRL `ca serve` publishes at `/crl/<id>`: every intermediate but the
    /// prepared one.
    pub fn crl_issuer_ids(&self) -> Vec<String> {
        let mut ids = vec![self.active_id.clone()];
        ids.extend(
            self.others
                .iter()
                .filter(|o| o.state != IssuerState::Prepared)
                .map(|o| o.id.clone()),
        );
        ids
    }

    /// The CRL of intermediate `id`: the active one's as [`Ca::crl`] signs it, a retiring
    /// one's signed with its own key, a retired one's final CRL. (number, DER).
    pub fn crl_of(
        &self,
        id: &str,
        next_update: Option<Duration>,
        actor: &str,
    ) -> Result<(u64, Vec<u8>)> {
        if id == self.active_id {
            return self.crl(next_update, actor);
        }
        let o = self
            .others
            .iter()
            .find(|o| o.id == id && o.state != IssuerState::Prepared)
            .ok_or_else(|| {
                Error::Store(twoway_store::Error::NotFound(format!(
                    "intermediate {id}: this CA has {}",
                    self.crl_issuer_ids().join(", ")
                )))
            })?;
        if o.state == IssuerState::Retired {
            let p = issuer_dir(&self.dir, id).join(FINAL_CRL);
            let text = fs::read(&p).map_err(Error::io("cannot read", &p))?;
            let der = x509_parser::pem::Pem::iter_from_buffer(&text)
                .filter_map(|b| b.ok())
                .find(|b| b.label == "X509 CRL")
                .map(|b| b.contents)
                .ok_or_else(|| {
                    Error::Refused(format!("{} holds no X509 CRL block", p.display()))
                })?;
            return Ok((0, der));
        }
        let signer = o
            .signer
            .as_ref()
            .ok_or(Error::Pki(twoway_pki::Error::PassphraseRequired))?;
        let validity = next_update.unwrap_or(self.settings.crl_next_update);
        let now = now_s();
        let next = (now + validity).min(o.info.not_after);
        self.sign_crl_of(signer, &o.info, now, next, "crl.sign", actor)
    }

    /// Signs a complete CRL of `issuer`'s revoked, unexpired certificates with `signer`,
    /// numbered from the inventory's CRL counter (audited as `action`).
    fn sign_crl_of(
        &self,
        signer: &CaSigner,
        issuer: &CertInfo,
        now: OffsetDateTime,
        next: OffsetDateTime,
        action: &str,
        actor: &str,
    ) -> Result<(u64, Vec<u8>)> {
        let entries: Vec<RevokedEntry> = self.crl_entries_of(&issuer.subject, now, None)?;
        let number = self.store.next_crl_number(&NewAudit {
            actor: actor.into(),
            action: action.into(),
            target: String::new(),
            details: json!({
                "issuer": issuer.subject, "revoked": entries.len(),
                "next_update": rfc3339(next),
            }),
            time: now,
        })?;
        let der = twoway_pki::build_crl_as(
            signer,
            number,
            now,
            next,
            &entries,
            &twoway_pki::CrlKind::Complete,
        )?;
        Ok((number, der))
    }

    /// `ca rotate intermediate`: a new intermediate, signed by the root (its key here, or
    /// in the token), with the same name constraints, key type and lifetime as the active
    /// one (`validity` to choose another), kept in `issuers/<id>/` until
    /// [`Ca::rotate_activate`]. Recorded in the inventory and the audit log.
    pub fn rotate_prepare(
        &self,
        passphrase: Option<&[u8]>,
        validity: Option<Duration>,
        actor: &str,
    ) -> Result<IssuerView> {
        if let Some(p) = self
            .others
            .iter()
            .find(|o| o.state == IssuerState::Prepared)
        {
            return Err(Error::Refused(format!(
                "intermediate {} is already prepared ({}): activate it with `twoway ca rotate \
                 activate` before preparing another",
                p.id, p.info.subject
            )));
        }
        let permits = match &self.constraints {
            None => twoway_pki::Permits::default(),
            Some(nc) => nc.permits().ok_or_else(|| {
                Error::Refused(format!(
                    "the active intermediate's name constraints ({}; excluded: {}) hold more \
                     than DNS and IP subtrees, which a new intermediate cannot carry over",
                    nc.permitted(),
                    nc.excluded()
                ))
            })?,
        };
        let next_gen = std::iter::once(self.active_id.as_str())
            .chain(self.others.iter().map(|o| o.id.as_str()))
            .filter_map(generation)
            .max()
            .unwrap_or(1)
            + 1;
        let id = format!("g{next_gen}");
        // Under the prepared root when a root rotation is under way, else the active root.
        let root = match self.prepared_root(passphrase)? {
            Some((_, r)) => r,
            None => CaSigner::new(self.active_root_der()?, self.root_signer(passphrase)?)?,
        };
        let now = now_s();
        let life = validity
            .unwrap_or(self.intermediate_info.not_after - self.intermediate_info.not_before);
        if life <= Duration::hours(1) {
            return Err(twoway_pki::Error::BadTtl(
                "--ttl of the new intermediate must be longer than an hour".into(),
            )
            .into());
        }
        let not_after = (now + life).min(root.info().not_after);
        // The new key: in the token beside the active one (`<object>-g<n>`) when that is
        // where the active key is, else a file like it.
        let (public_key, key_file): (Vec<u8>, KeyFile) = match self.token_uri_for(&id)? {
            Some((uri, hsm)) => {
                let signer = crate::hsm::generate(&uri, &hsm, self.settings.raw.ca.key_type)?;
                (signer.public_key_der(), KeyFile::Uri(uri))
            }
            None => {
                let key = PrivateKey::generate(self.settings.raw.ca.key_type)?;
                let pass = passphrase.filter(|_| self.settings.raw.ca.encrypted_keys);
                (key.public_key_der(), KeyFile::Pem(key.to_pem(pass)?))
            }
        };
        let der = twoway_pki::build_intermediate(
            &root,
            &public_key,
            &self.settings.raw.ca.name,
            next_gen,
            now - Duration::minutes(5),
            not_after,
            &permits,
        )?;
        let info = CertInfo::from_der(&der)?;
        let target = issuer_dir(&self.dir, &id);
        ensure_private_dir(&self.dir.join(ISSUERS_DIR))?;
        let mut staged = twoway_files::StagedFiles::new(&target)?;
        match &key_file {
            KeyFile::Pem(pem) => staged.stage(layout::INTERMEDIATE_KEY, pem.as_bytes(), 0o600)?,
            KeyFile::Uri(uri) => {
                staged.stage(KEY_URI_FILE, format!("{uri}\n").as_bytes(), 0o644)?
            }
        }
        staged.stage(
            layout::INTERMEDIATE_CERT,
            der_to_pem("CERTIFICATE", &der).as_bytes(),
            0o644,
        )?;
        staged.stage(STATE_FILE, b"prepared\n", 0o644)?;
        self.record_ca_certificate(
            &info,
            &der,
            "ca.rotate.prepare",
            json!({
                "id": id, "subject": info.subject, "fingerprint": info.fingerprint,
                "replaces": self.intermediate_info.fingerprint,
                "not_after": rfc3339(info.not_after),
            }),
            actor,
            now,
        )?;
        staged.commit()?;
        Ok(IssuerView {
            id,
            state: IssuerState::Prepared,
            certificate: info,
            live_certificates: 0,
        })
    }

    /// `ca rotate activate`: the prepared intermediate becomes the active one (the top-level
    /// `intermediate.pem`/`.key`); the one it replaces moves to `issuers/<id>/`, retiring.
    /// Each step is a whole-file write, ordered so that running it again after a crash
    /// finishes the job. Returns (old id, new id). `ca serve` takes it at its next start.
    pub fn rotate_activate(&self, actor: &str) -> Result<(String, String)> {
        let new = self
            .others
            .iter()
            .find(|o| o.state == IssuerState::Prepared)
            .ok_or_else(|| {
                Error::Refused(
                    "no intermediate is prepared: run `twoway ca rotate intermediate` first".into(),
                )
            })?;
        // A prepared root goes active with the intermediate it signed.
        if let Some(root) = self
            .old_roots
            .iter()
            .find(|r| r.state == IssuerState::Prepared)
        {
            if new.info.issuer != root.info.subject {
                return Err(Error::Refused(format!(
                    "root {} is prepared but intermediate {} is not under it: prepare the \
                     intermediate again after the root",
                    root.id, new.id
                )));
            }
            self.activate_root(&root.id, actor)?;
        }
        let old_id = self.active_id.clone();
        let old_dir = issuer_dir(&self.dir, &old_id);
        let new_dir = issuer_dir(&self.dir, &new.id);
        let top_key = self.dir.join(layout::INTERMEDIATE_KEY);
        let read = |p: &Path| -> Result<Zeroizing<Vec<u8>>> {
            Ok(Zeroizing::new(
                fs::read(p).map_err(Error::io("cannot read", p))?,
            ))
        };
        let token_uri = self.settings.raw.ca.intermediate_key.clone();
        // An activation that stopped after the new intermediate reached the top: the old
        // one was moved already, and the top is the new one.
        let resumed = self.intermediate_der == new.der;
        // 1. The old intermediate, with its key (or its key's URI), to issuers/<old>/ as
        //    retiring.
        if !resumed {
            ensure_private_dir(&old_dir)?;
            match &token_uri {
                Some(uri) => twoway_files::write_atomic(
                    &old_dir.join(KEY_URI_FILE),
                    format!("{uri}\n").as_bytes(),
                    0o644,
                )?,
                None => twoway_files::write_atomic(
                    &old_dir.join(layout::INTERMEDIATE_KEY),
                    &read(&top_key)?,
                    0o600,
                )?,
            }
            twoway_files::write_atomic(
                &old_dir.join(layout::INTERMEDIATE_CERT),
                der_to_pem("CERTIFICATE", &self.intermediate_der).as_bytes(),
                0o644,
            )?;
            twoway_files::write_atomic(&old_dir.join(STATE_FILE), b"retiring\n", 0o644)?;
        }
        // 2. The new one at the top: its certificate first (from then on a run again sees
        //    the activation under way and leaves the old one's copies alone), then its key
        //    file, or its URI as ca.toml's [ca] intermediate_key (that one line changed; the
        //    rest of the file kept).
        twoway_files::write_atomic(
            &self.dir.join(layout::INTERMEDIATE_CERT),
            der_to_pem("CERTIFICATE", &new.der).as_bytes(),
            0o644,
        )?;
        match &token_uri {
            Some(old_uri) => {
                let new_uri = fs::read_to_string(new_dir.join(KEY_URI_FILE))
                    .map_err(Error::io("cannot read", new_dir.join(KEY_URI_FILE)))?;
                self.set_intermediate_key_uri(old_uri, new_uri.trim())?;
            }
            None => twoway_files::write_atomic(
                &top_key,
                &read(&new_dir.join(layout::INTERMEDIATE_KEY))?,
                0o600,
            )?,
        }
        // 3. Named active; its copy of the key goes (the top-level one is the key now).
        twoway_files::write_atomic(
            &self.dir.join(ISSUERS_DIR).join(ACTIVE_FILE),
            format!("{}\n", new.id).as_bytes(),
            0o644,
        )?;
        twoway_files::write_atomic(&new_dir.join(STATE_FILE), b"active\n", 0o644)?;
        let _ = fs::remove_file(new_dir.join(layout::INTERMEDIATE_KEY));
        self.store.append_audit(&NewAudit {
            actor: actor.into(),
            action: "ca.rotate.activate".into(),
            target: new.info.serial.clone(),
            details: json!({
                "id": new.id, "subject": new.info.subject, "fingerprint": new.info.fingerprint,
                "retiring": old_id, "retiring_fingerprint": self.intermediate_info.fingerprint,
            }),
            time: now_s(),
        })?;
        Ok((old_id, new.id.clone()))
    }

    /// `ca rotate retire ID`: the retiring intermediate `id` signs a final CRL valid until
    /// its own expiry (served at `/crl/<id>` from then on), is revoked by the root
    /// (cessationOfOperation; the root's CRL re-signed when the root key is here), and its
    /// key is destroyed. Refused while it has live certificates unless `force`.
    pub fn rotate_retire(
        &self,
        id: &str,
        force: bool,
        passphrase: Option<&[u8]>,
        actor: &str,
    ) -> Result<Retired> {
        if crate::roots::generation(id).is_some() {
            return self.retire_root(id, passphrase, actor);
        }
        if id == self.active_id {
            return Err(Error::Refused(format!(
                "{id} is the active intermediate: retiring it would leave the CA nothing to \
                 issue with. Prepare and activate a new one first (`twoway ca rotate \
                 intermediate`, then `twoway ca rotate activate`)"
            )));
        }
        let o = self.others.iter().find(|o| o.id == id).ok_or_else(|| {
            Error::Store(twoway_store::Error::NotFound(format!(
                "intermediate {id}: `twoway ca show` lists this CA's intermediates"
            )))
        })?;
        match o.state {
            IssuerState::Retiring => {}
            IssuerState::Prepared => {
                return Err(Error::Refused(format!(
                    "{id} was never activated: activate it (`twoway ca rotate activate`) \
                     before it can be retired"
                )))
            }
            _ => return Err(Error::Refused(format!("{id} is already retired"))),
        }
        let live = self.live_leaves(&o.info.subject)?;
        if live > 0 && !force {
            return Err(Error::Refused(format!(
                "{id} still has {live} live certificate(s): they would lose their CRL and OCSP \
                 answers. Wait until they expire or are renewed (`twoway cert list --issuer \
                 {id} --status active` shows them), or retire with --force"
            )));
        }
        let signer = o
            .signer
            .as_ref()
            .ok_or(Error::Pki(twoway_pki::Error::PassphraseRequired))?;
        let now = now_s();
        let (_, crl) = self.sign_crl_of(
            signer,
            &o.info,
            now,
            o.info.not_after.max(now + Duration::days(1)),
            "crl.sign",
            actor,
        )?;
        let dir = issuer_dir(&self.dir, id);
        twoway_files::write_atomic(
            &dir.join(FINAL_CRL),
            der_to_pem("X509 CRL", &crl).as_bytes(),
            0o644,
        )?;
        let rec = self.store.find_certificate(&o.info.fingerprint)?;
        let reason = Reason::CessationOfOperation;
        if rec.status == twoway_store::CertStatus::Active {
            self.store.revoke(
                &rec.fingerprint,
                now,
                reason.as_str(),
                &NewAudit {
                    actor: actor.into(),
                    action: "ca.rotate.retire".into(),
                    target: rec.serial.clone(),
                    details: json!({
                        "id": id, "subject": o.info.subject, "fingerprint": o.info.fingerprint,
                        "live_certificates": live, "forced": force && live > 0,
                        "reason": reason.as_str(),
                    }),
                    time: now,
                },
            )?;
        }
        // The key goes first (in the token too): a retire that fails here is run again.
        let uri_path = dir.join(KEY_URI_FILE);
        if let (Ok(uri), Some(hsm)) = (fs::read_to_string(&uri_path), &self.settings.raw.hsm) {
            crate::hsm::destroy(uri.trim(), hsm)?;
            fs::remove_file(&uri_path).map_err(Error::io("cannot remove", &uri_path))?;
        }
        let key = dir.join(layout::INTERMEDIATE_KEY);
        if key.exists() {
            fs::remove_file(&key).map_err(Error::io("cannot remove", &key))?;
        }
        twoway_files::write_atomic(&dir.join(STATE_FILE), b"retired\n", 0o644)?;
        let root_crl_signed = self.sign_arl_of(&o.info.issuer, None, passphrase, actor)?;
        Ok(Retired {
            id: id.to_string(),
            live_certificates: live,
            root_crl_signed,
        })
    }

    /// Records a CA certificate this CA made (an intermediate, a root, a cross certificate)
    /// in the inventory, profile `ca`, with its audit entry `action`.
    pub(crate) fn record_ca_certificate(
        &self,
        info: &CertInfo,
        der: &[u8],
        action: &str,
        details: serde_json::Value,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
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
        self.store.insert_certificate(
            &rec,
            &NewAudit {
                actor: actor.into(),
                action: action.into(),
                target: info.serial.clone(),
                details,
                time: now,
            },
        )?;
        Ok(())
    }

    /// The URI of the next intermediate's key in the token (`object=<object>-<id>`) and the
    /// token's settings, when the active intermediate's key is in one.
    fn token_uri_for(&self, id: &str) -> Result<Option<(String, crate::HsmSection)>> {
        let Some(uri) = &self.settings.raw.ca.intermediate_key else {
            return Ok(None);
        };
        let hsm = self.settings.raw.hsm.clone().ok_or_else(|| Error::Config {
            path: self.dir.join(layout::CONFIG),
            message: format!("[ca] intermediate_key is {uri} but there is no [hsm] section"),
        })?;
        let mut parsed: twoway_hsm::KeyUri =
            uri.parse().map_err(|e: twoway_hsm::Error| Error::Hsm {
                message: e.to_string(),
                unavailable: false,
            })?;
        let base = match parsed.object.rsplit_once("-g") {
            Some((b, n)) if n.parse::<u32>().is_ok() => b.to_string(),
            _ => parsed.object.clone(),
        };
        parsed.object = format!("{base}-{id}");
        Ok(Some((parsed.to_string(), hsm)))
    }

    /// Rewrites `[ca] intermediate_key = "<old>"` in ca.toml to `new` (that line only).
    fn set_intermediate_key_uri(&self, old: &str, new: &str) -> Result<()> {
        let path = self.dir.join(layout::CONFIG);
        let text = fs::read_to_string(&path).map_err(Error::io("cannot read", &path))?;
        let quoted = |u: &str| toml::Value::String(u.to_string()).to_string();
        let (from, to) = (
            format!("intermediate_key = {}", quoted(old)),
            format!("intermediate_key = {}", quoted(new)),
        );
        if text.contains(&to) {
            return Ok(());
        }
        if text.matches(&from).count() != 1 {
            return Err(Error::Config {
                path,
                message: format!(
                    "cannot find the line `{from}` to point it at the new key: set [ca] \
                     intermediate_key = {} by hand and run `twoway ca rotate activate` again",
                    quoted(new)
                ),
            });
        }
        twoway_files::write_atomic(&path, text.replace(&from, &to).as_bytes(), 0o600)?;
        Ok(())
    }
}

/// Where a prepared intermediate's key is kept.
enum KeyFile {
    /// A key file (PEM, encrypted like the CA's).
    Pem(Zeroizing<String>),
    /// A key in the token, by its PKCS#11 URI.
    Uri(String),
}
