//! What operators do to the ACME directories from the command line: list and revoke EAB
//! keys, and ask ACME clients to renew early through ACME Renewal Information (RFC 9773):
//! the suggested renewal window of each chosen certificate is moved to the present and
//! kept in the store (kind [`ARI_KIND`]), so every replica answers the same.

use super::{EAB_KIND, REPLACES_LABEL};
use crate::{Ca, Error, Result};
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use twoway_store::{AcmeObject, CertQuery, CertRecord, CertSource, NewAudit};

/// The kind of the store's ACME objects that move a certificate's renewal window (id: the
/// certificate's fingerprint; document: `start`, `end`, who set it and when).
pub const ARI_KIND: &str = "ari";

/// How long a moved window is kept after its certificate expires.
const ARI_KEEP: Duration = Duration::days(30);

/// Certificates one `renew-early` may move (the listing is paged up to this).
const MAX_RENEW_EARLY: usize = 100_000;

/// Updates by compare-and-set tried before giving up.
const CAS_TRIES: usize = 8;

/// One EAB key as `twoway acme eab list` shows it (never the key itself).
#[derive(Clone, Debug, Serialize)]
pub struct EabInfo {
    /// The key id.
    pub kid: String,
    /// The directory it binds accounts of.
    pub directory: String,
    /// The owner accounts bound with it take.
    pub owner: Option<String>,
    /// When it was made (None for keys made before this was recorded).
    pub created: Option<String>,
    /// Who made it.
    pub created_by: Option<String>,
    /// `unused`, `used` or `revoked`.
    pub status: String,
    /// The id of the account bound with it, if one was.
    pub account: Option<String>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// DNS name globs pre-authorized for accounts bound with it.
    pub preauthorize: Vec<String>,
}

impl EabInfo {
    fn of(o: &AcmeObject) -> EabInfo {
        let s = |k: &str| o.doc[k].as_str().map(str::to_string);
        let status = s("status").unwrap_or_default();
        EabInfo {
            kid: o.id.clone(),
            directory: s("directory").unwrap_or_default(),
            owner: s("owner"),
            created: s("created"),
            created_by: s("created_by"),
            revoked: status == "revoked",
            status,
            account: s("account"),
            preauthorize: o.doc["preauthorize"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Which certificates `twoway acme renew-early` moves.
#[derive(Clone, Debug, Default)]
pub struct RenewEarly {
    /// These serials (or fingerprints), whatever their source.
    pub serials: Vec<String>,
    /// Active ACME certificates issued before this instant.
    pub issued_before: Option<OffsetDateTime>,
    /// Every active ACME certificate.
    pub all: bool,
    /// Only certificates ordered through this directory.
    pub directory: Option<String>,
}

/// What `renew-early` did.
#[derive(Clone, Debug, Serialize)]
pub struct RenewedEarly {
    /// How many certificates' windows moved.
    pub affected: usize,
    /// Their serials.
    pub serials: Vec<String>,
    /// The window now suggested to their clients (RFC 3339).
    pub window_start: String,
    /// Its end: clients asking after it renew at once.
    pub window_end: String,
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Whether `rec` was ordered through ACME directory `dir` (its account URL says so).
fn in_directory(rec: &CertRecord, dir: &str) -> bool {
    rec.labels
        .get("acme_account")
        .is_some_and(|a| a.contains(&format!("/acme/{dir}/acct/")))
}

impl Ca {
    fn acme_directory_exists(&self, name: &str) -> Result<()> {
        if self.config().acme.get(name).is_none() {
            return Err(Error::Refused(format!(
                "no ACME directory {name:?} in ca.toml: see [[acme.directory]]"
            )));
        }
        Ok(())
    }

    /// The EAB keys of `directory` (or of every configured directory), oldest id first.
    pub fn list_eab(&self, directory: Option<&str>) -> Result<Vec<EabInfo>> {
        let dirs: Vec<String> = match directory {
            Some(d) => {
                self.acme_directory_exists(d)?;
                vec![d.to_string()]
            }
            None => self
                .config()
                .acme
                .directory
                .iter()
                .map(|d| d.name.clone())
                .collect(),
        };
        let mut out = Vec::new();
        for d in dirs {
            for o in self.store().acme_children(EAB_KIND, &d)? {
                out.push(EabInfo::of(&o));
            }
        }
        Ok(out)
    }

    /// Changes ACME object `kind`/`id` by compare-and-set; `f` returns false to leave it.
    fn acme_cas(
        &self,
        kind: &str,
        id: &str,
        f: impl Fn(&mut AcmeObject) -> Result<bool>,
    ) -> Result<Option<AcmeObject>> {
        for _ in 0..CAS_TRIES {
            let Some(mut o) = self.store().acme_get(kind, id)? else {
                return Ok(None);
            };
            if !f(&mut o)? {
                return Ok(Some(o));
            }
            if self.store().acme_update(&o)? {
                return Ok(Some(o));
            }
        }
        Err(Error::Refused(format!(
            "ACME {kind} {id} kept changing under the update: try again"
        )))
    }

    /// Revokes EAB key `kid`: an unused key can no longer bind an account, and the
    /// account bound with a used key is revoked too (its requests are refused from then
    /// on). Audited as `acme.eab.revoke`.
    pub fn revoke_eab(&self, kid: &str, actor: &str) -> Result<EabInfo> {
        let rec = self
            .acme_cas(EAB_KIND, kid, |o| {
                if o.doc["status"] == "revoked" {
                    return Err(Error::Refused(format!("EAB key {kid} is already revoked")));
                }
                o.doc["status"] = "revoked".into();
                o.doc["revoked"] = rfc(OffsetDateTime::now_utc()).into();
                Ok(true)
            })?
            .ok_or_else(|| {
                Error::Refused(format!(
                    "no EAB key {kid:?}: see `twoway acme eab list` for the key ids"
                ))
            })?;
        let account = rec.doc["account"].as_str().map(str::to_string);
        if let Some(a) = &account {
            self.acme_cas("account", a, |o| {
                if o.doc["status"] != "valid" {
                    return Ok(false);
                }
                o.doc["status"] = "revoked".into();
                Ok(true)
            })?;
        }
        self.store().append_audit(&NewAudit {
            actor: actor.into(),
            action: "acme.eab.revoke".into(),
            target: kid.to_string(),
            details: json!({"directory": rec.doc["directory"], "account": account}),
            time: OffsetDateTime::now_utc(),
        })?;
        Ok(EabInfo::of(&rec))
    }

    /// The renewal window ACME clients are told for `rec` (RFC 9773): from 2/3 to 5/6
    /// of its lifetime, unless `renew-early` moved it, or at once when it was revoked
    /// for another reason than being superseded.
    pub fn ari_window(&self, rec: &CertRecord) -> Result<(OffsetDateTime, OffsetDateTime)> {
        if let Some(o) = self.store().acme_get(ARI_KIND, &rec.fingerprint)? {
            let t = |k: &str| {
                o.doc[k]
                    .as_str()
                    .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            };
            if let (Some(s), Some(e)) = (t("start"), t("end")) {
                return Ok((s, e));
            }
        }
        let revoked = rec.status == twoway_store::CertStatus::Revoked
            && rec.revocation_reason.as_deref() != Some("superseded");
        if revoked {
            let now = OffsetDateTime::now_utc();
            return Ok((now - Duration::hours(1), now));
        }
        let life = rec.not_after - rec.not_before;
        Ok((rec.not_before + life * 2 / 3, rec.not_before + life * 5 / 6))
    }

    /// Moves the renewal window of the chosen certificates to the present, so their ACME
    /// clients renew at their next renewal-information check. Audited once as
    /// `acme.renew-early` with the serials.
    pub fn renew_early(&self, sel: &RenewEarly, actor: &str) -> Result<RenewedEarly> {
        if let Some(d) = &sel.directory {
            self.acme_directory_exists(d)?;
        }
        let now = OffsetDateTime::now_utc();
        let mut chosen: Vec<CertRecord> = Vec::new();
        for s in &sel.serials {
            let rec = self.store().find_certificate(s).map_err(|e| {
                Error::Refused(format!(
                    "--serial {s}: {e} (see `twoway cert list` for serials)"
                ))
            })?;
            if sel
                .directory
                .as_deref()
                .is_some_and(|d| !in_directory(&rec, d))
            {
                continue;
            }
            if !chosen.iter().any(|c| c.fingerprint == rec.fingerprint) {
                chosen.push(rec);
            }
        }
        if sel.all || sel.issued_before.is_some() {
            let mut offset = 0;
            while offset < MAX_RENEW_EARLY {
                let page = self.store().list_certificates(&CertQuery {
                    status: Some("active".into()),
                    now: Some(now),
                    offset,
                    limit: 1000,
                    ..Default::default()
                })?;
                let n = page.items.len();
                for rec in page.items {
                    let fits = rec.source == CertSource::Acme
                        && rec.not_after > now
                        && sel.issued_before.is_none_or(|t| rec.not_before < t)
                        && sel
                            .directory
                            .as_deref()
                            .is_none_or(|d| in_directory(&rec, d));
                    if fits && !chosen.iter().any(|c| c.fingerprint == rec.fingerprint) {
                        chosen.push(rec);
                    }
                }
                if n < 1000 {
                    break;
                }
                offset += n;
            }
        }
        let (start, end) = (now - Duration::minutes(1), now);
        for rec in &chosen {
            let doc =
                json!({"start": rfc(start), "end": rfc(end), "set_by": actor, "set_at": rfc(now)});
            let d2 = doc.clone();
            let moved = self.acme_cas(ARI_KIND, &rec.fingerprint, move |o| {
                o.doc = d2.clone();
                Ok(true)
            })?;
            if moved.is_none() {
                let ins = self.store().acme_insert(&AcmeObject {
                    kind: ARI_KIND.into(),
                    id: rec.fingerprint.clone(),
                    parent: None,
                    lookup: None,
                    doc: doc.clone(),
                    version: 1,
                    expires_at: Some(rec.not_after + ARI_KEEP),
                });
                match ins {
                    Ok(()) => {}
                    // made by a concurrent call: set it again over that one
                    Err(twoway_store::Error::Duplicate(_)) => {
                        self.acme_cas(ARI_KIND, &rec.fingerprint, |o| {
                            o.doc = doc.clone();
                            Ok(true)
                        })?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let serials: Vec<String> = chosen.iter().map(|r| r.serial.clone()).collect();
        self.store().append_audit(&NewAudit {
            actor: actor.into(),
            action: "acme.renew-early".into(),
            target: match (&sel.directory, sel.all) {
                (Some(d), _) => format!("acme:{d}"),
                (None, true) => "all".into(),
                (None, false) => "selected".into(),
            },
            details: json!({
                "count": serials.len(),
                "serials": serials,
                "issued_before": sel.issued_before.map(rfc),
                "window_end": rfc(end),
            }),
            time: now,
        })?;
        Ok(RenewedEarly {
            affected: serials.len(),
            serials,
            window_start: rfc(start),
            window_end: rfc(end),
        })
    }
}

/// The serial of the certificate `rec` replaced, if it was ordered with `replaces`.
pub fn replaced_serial(rec: &CertRecord) -> Option<&str> {
    rec.labels.get(REPLACES_LABEL).map(String::as_str)
}

/// The first of `globs` (an EAB key's `--preauthorize` list) that matches the DNS name
/// `name` (`*` never crosses a dot, case ignored).
pub fn preauthorizing_glob<'a>(globs: &[&'a str], name: &str) -> Option<&'a str> {
    let opts = twoway_glob::Options::new()
        .separator('.')
        .ignore_ascii_case();
    globs
        .iter()
        .copied()
        .find(|g| twoway_glob::is_match(g, name, opts))
}
