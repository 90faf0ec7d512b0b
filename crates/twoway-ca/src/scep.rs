//! What SCEP (RFC 8894, `/scep` of `twoway ca serve`) needs of the CA, without HTTP: the
//! `[scep]` settings of `ca.toml`, the registration authority's key and certificate in the
//! CA directory ([`Ca::scep_ra`]), and issuance with source `scep` through the same
//! checks, signing and recording as every other path: a PKCSReq with a one-time
//! enrollment token as its challenge password ([`Ca::prepare_scep_enroll`]), a
//! RenewalReq signed by a certificate the inventory holds ([`Ca::authenticate_scep_signer`],
//! [`Ca::prepare_scep_renew`]), and the answer to a transaction already issued
//! ([`Ca::scep_transaction`]).

use crate::ca::rfc3339;
use crate::online::{now_s, token_hash, RENEWAL_LABEL};
use crate::{Ca, Error, Outcome, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};
use twoway_pki::{parse_duration, verify_csr, Issued, KeyType, PrivateKey};
use twoway_store::{CertQuery, CertRecord, CertSource, CertStatus};
use zeroize::Zeroizing;

/// The RA's private key in the CA directory (PKCS#8 PEM, 0600, not encrypted: the server
/// needs it unattended).
pub const RA_KEY_FILE: &str = "scep-ra.key";
/// The RA's certificate in the CA directory.
pub const RA_CERT_FILE: &str = "scep-ra.pem";
/// The label holding a SCEP certificate's transactionID.
pub const TRANSACTION_LABEL: &str = "scep_transaction";
/// The label holding the subject a SCEP device asked for (its identity).
pub const DEVICE_LABEL: &str = "device";
/// The value of [`RENEWAL_LABEL`] on SCEP certificates: the device renews (RenewalReq).
pub const RENEWED_BY_DEVICE: &str = "auto";

/// The `[scep]` section: SCEP at `/scep` of `twoway ca serve` (both listeners).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScepSection {
    /// Serve SCEP (the RA key and certificate are made on the first start with it on).
    pub enabled: bool,
    /// Accept DES, 3DES and SHA-1 from clients that send nothing better (counted in
    /// `/metrics`); otherwise they get FAILURE badAlg.
    pub allow_legacy: bool,
    /// Put the intermediate and root certificates in a CertRep beside the issued one.
    pub ca_certs_in_reply: bool,
    /// Validity of the RA certificate; it is replaced at two thirds of it.
    pub ra_ttl: String,
}

impl Default for ScepSection {
    fn default() -> Self {
        ScepSection {
            enabled: false,
            allow_legacy: false,
            ca_certs_in_reply: true,
            ra_ttl: "365d".into(),
        }
    }
}

impl ScepSection {
    /// True when nothing differs from the defaults.
    pub fn is_default(&self) -> bool {
        *self == ScepSection::default()
    }

    /// The RA certificate's validity.
    pub fn ra_ttl(&self) -> std::result::Result<Duration, String> {
        let d = parse_duration(&self.ra_ttl).map_err(|e| format!("[scep] ra_ttl: {e}"))?;
        if d < Duration::hours(1) {
            return Err("[scep] ra_ttl: at least 1h".into());
        }
        Ok(d)
    }

    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        self.ra_ttl().map(|_| ())
    }

    /// The section as commented TOML (for `ca.toml`).
    pub fn documented_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        format!(
            "\n# SCEP (RFC 8894) at /scep of `twoway ca serve`, on the HTTPS and the plain-HTTP listener.\n\
             # PKCSReq takes a one-time enrollment token (`twoway token create`) as challenge password.\n\
             [scep]\n\
             # Serve SCEP; the RA key and certificate (scep-ra.key, scep-ra.pem) are made on first start.\n\
             enabled = {}\n\
             # Accept DES, 3DES and SHA-1 from old clients (counted in /metrics); else FAILURE badAlg.\n\
             allow_legacy = {}\n\
             # Put the intermediate and root certificates in CertRep beside the issued one.\n\
             ca_certs_in_reply = {}\n\
             # Validity of the RA certificate; it is replaced at two thirds of it.\n\
             ra_ttl = {}\n",
            self.enabled,
            self.allow_legacy,
            self.ca_certs_in_reply,
            q(&self.ra_ttl)
        )
    }
}

/// The RA's key (PKCS#8 DER) and certificate.
pub struct RaMaterial {
    /// The RSA key, PKCS#8 DER.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its notBefore.
    pub not_before: OffsetDateTime,
    /// Its notAfter.
    pub not_after: OffsetDateTime,
    /// The certificate it replaced (SHA-256 fingerprint), when it was just made to replace
    /// one.
    pub replaced: Option<String>,
}

impl std::fmt::Debug for RaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaMaterial")
            .field("key_pkcs8", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl RaMaterial {
    /// When it should be replaced: two thirds into its life.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

impl Ca {
    fn read_ra(&self) -> Result<Option<RaMaterial>> {
        let (kp, cp) = (self.dir().join(RA_KEY_FILE), self.dir().join(RA_CERT_FILE));
        let (key, cert) = match (std::fs::read_to_string(&kp), std::fs::read(&cp)) {
            (Ok(k), Ok(c)) => (Zeroizing::new(k), c),
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            (Err(e), _) => return Err(Error::io("cannot read", &kp)(e)),
            (_, Err(e)) => return Err(Error::io("cannot read", &cp)(e)),
        };
        let key = PrivateKey::from_pem(&key, None)?;
        let der = twoway_pki::parse_certificates(&cert)?
            .into_iter()
            .next()
            .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
        if !twoway_pki::key_matches_cert(&key.public_key_der(), &der).unwrap_or(false) {
            return Err(Error::Refused(format!(
                "{} does not match {}: remove both and restart, a new RA is made",
                kp.display(),
                cp.display()
            )));
        }
        let info = twoway_pki::CertInfo::from_der(&der)?;
        Ok(Some(RaMaterial {
            key_pkcs8: Zeroizing::new(key.key_pair().serialize_der()),
            cert_der: der,
            not_before: info.not_before,
            not_after: info.not_after,
            replaced: None,
        }))
    }

    /// The SCEP RA: [`RA_KEY_FILE`] and [`RA_CERT_FILE`] of the CA directory, made when
    /// missing (an RSA 2048 key, a certificate from the intermediate for `[scep] ra_ttl`,
    /// recorded in the inventory as the server's own) and replaced the same way once two
    /// thirds of its life have passed. The files are written crash-safely (temporary files
    /// renamed after the certificate is recorded).
    pub fn scep_ra(&self, actor: &str) -> Result<RaMaterial> {
        let current = self.read_ra()?;
        let now = OffsetDateTime::now_utc();
        if let Some(ra) = &current {
            let issued_here = ra.not_after <= self.intermediate_info().not_after
                && twoway_pki::CertInfo::from_der(&ra.cert_der)
                    .is_ok_and(|i| i.issuer == self.intermediate_info().subject);
            if now < ra.renew_at() && issued_here {
                return self.read_ra()?.ok_or_else(|| {
                    Error::Refused("the SCEP RA files disappeared while being read".into())
                });
            }
        }
        let ttl = self.config().scep.ra_ttl().map_err(Error::Refused)?;
        let key = PrivateKey::generate(KeyType::Rsa2048)?;
        let start = now_s();
        let not_after = (start + ttl).min(self.intermediate_info().not_after);
        let issued = twoway_pki::build_scep_ra(
            self.signer()?,
            &key.public_key_der(),
            &self.config().ca.name,
            start - Duration::minutes(1),
            not_after,
        )?;
        let mut staged = twoway_files::StagedFiles::new(self.dir())?;
        staged.stage(RA_KEY_FILE, key.to_pem(None)?.as_bytes(), 0o600)?;
        staged.stage(RA_CERT_FILE, issued.pem().as_bytes(), 0o644)?;
        self.record_service_cert(&issued, "scep-ra", "scep.ra", actor)?;
        staged.commit()?;
        Ok(RaMaterial {
            key_pkcs8: Zeroizing::new(key.key_pair().serialize_der()),
            cert_der: issued.der,
            not_before: issued.info.not_before,
            not_after: issued.info.not_after,
            replaced: current.map(|c| twoway_pki::sha256_hex(&c.cert_der)),
        })
    }

    /// The certificate issued for SCEP transaction `transaction_id`, if any.
    pub fn scep_transaction(&self, transaction_id: &str) -> Result<Option<CertRecord>> {
        let page = self.store().list_certificates(&CertQuery {
            labels: vec![(TRANSACTION_LABEL.into(), transaction_id.into())],
            limit: 5,
            ..Default::default()
        })?;
        Ok(page
            .items
            .into_iter()
            .filter(|r| r.source == CertSource::Scep)
            .max_by_key(|r| r.recorded_at))
    }

    /// The certificate of a SCEP transaction already issued, answered again to a retried
    /// request for the same key; another key gets a refusal naming the reuse.
    fn scep_replay(&self, rec: &CertRecord, spki: &[u8], transaction_id: &str) -> Result<Issued> {
        let der = twoway_pki::parse_certificates(rec.pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
        if !twoway_pki::key_matches_cert(spki, &der).unwrap_or(false) {
            return Err(Error::Refused(format!(
                "transactionID {transaction_id:?} was already used with another key: each request needs its own transactionID"
            )));
        }
        let info = twoway_pki::CertInfo::from_der(&der)?;
        Ok(Issued { der, info })
    }

    /// A PKCSReq: `secret` (the challenge password) is a one-time enrollment token, which
    /// must be known, unused and unexpired; every name of the CSR must be one the token
    /// binds (a CSR without names gets the token's), its CN one of them. The certificate
    /// has the token's profile and owner, source `scep`, the labels [`DEVICE_LABEL`] (the
    /// CSR's subject, `device`) and [`TRANSACTION_LABEL`]; the token is consumed in the
    /// transaction that records it. A request repeated after its token was spent, with
    /// the same transactionID and key, gets the certificate already issued; with another
    /// key it is refused, naming the reuse.
    pub fn prepare_scep_enroll(
        &self,
        secret: &str,
        csr: &[u8],
        device: &str,
        transaction_id: &str,
        actor: &str,
    ) -> Result<Outcome> {
        let hash = token_hash(secret);
        let tok = self.store().find_token(&hash)?;
        let now = now_s();
        let csr = verify_csr(csr)?;
        if let Some(u) = tok.used_at {
            // The same request again (its answer was lost): the certificate it got. SCEP
            // clients derive the transactionID from the key (RFC 8894 §3.2.1.1), so one
            // seen before must come with the same key. (Looked up only here: a fresh
            // token reads no label.)
            if let Some(rec) = self.scep_transaction(transaction_id)? {
                let issued = self.scep_replay(&rec, &csr.public_key_der, transaction_id)?;
                if issued.info.not_before >= u - Duration::minutes(2) {
                    return Ok(Outcome::Recorded(Box::new(issued)));
                }
            }
            return Err(twoway_store::Error::TokenUsed(rfc3339(u)).into());
        }
        if tok.expires_at <= now {
            return Err(twoway_store::Error::TokenExpired(rfc3339(tok.expires_at)).into());
        }
        // the token's names, profile, owner and lifetime, as for /v1/enroll and EST
        let (mut req, extras) = self.token_request(&tok, hash, &csr, actor)?;
        req.labels = scep_labels(device, transaction_id);
        let mut signed = self.prepare_from(
            &req,
            &csr.public_key_der,
            "cert.scep",
            extras,
            CertSource::Scep,
        )?;
        if let Some(d) = signed.record.audit.details.as_object_mut() {
            d.insert("device".into(), device.into());
            d.insert("scep_transaction".into(), transaction_id.into());
        }
        Ok(Outcome::Unrecorded(Box::new(signed)))
    }

    /// Authenticates the certificate that signed a RenewalReq: one this CA signed and the
    /// inventory holds (by its exact DER), whichever intermediate signed it (a certificate
    /// issued before the intermediate was replaced still renews), not revoked (a
    /// superseded one passes, so a retried renewal gets its answer again), not expired.
    pub fn authenticate_scep_signer(&self, cert_der: &[u8]) -> Result<CertRecord> {
        let fp = twoway_pki::sha256_hex(cert_der);
        let rec = match self.store().find_certificate(&fp) {
            Ok(r) if r.fingerprint == fp => r,
            Ok(_) | Err(twoway_store::Error::NotFound(_)) => {
                return Err(Error::Unauthenticated(
                    "the certificate that signed the RenewalReq was not issued by this CA: enroll with PKCSReq and a token".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if !rec.source.signed_here() || rec.profile == "scep-ra" || rec.profile == "ocsp" {
            return Err(Error::Unauthenticated(
                "the certificate that signed the RenewalReq is not one this CA issued to a client"
                    .into(),
            ));
        }
        let superseded = rec.revocation_reason.as_deref() == Some("superseded");
        if rec.status == CertStatus::Revoked && !superseded {
            return Err(Error::CertRevoked(
                rec.serial.clone(),
                rec.revocation_reason.clone().unwrap_or_default(),
            ));
        }
        if rec.not_after <= OffsetDateTime::now_utc() {
            return Err(Error::CertExpired(rec.serial.clone()));
        }
        Ok(rec)
    }

    /// A RenewalReq from `current` (see [`Ca::authenticate_scep_signer`]): renewed as
    /// `/v1/renew` renews (same names, profile, owner and lifetime; `current` superseded in
    /// the issuing transaction; a retry answered with the certificate already issued),
    /// with source `scep` and the transactionID recorded.
    pub fn prepare_scep_renew(
        &self,
        current: &CertRecord,
        csr: &[u8],
        transaction_id: &str,
        actor: &str,
    ) -> Result<Outcome> {
        let outcome = self.prepare_renew(current, csr, actor)?;
        let Outcome::Unrecorded(mut signed) = outcome else {
            return Ok(outcome);
        };
        let device = current
            .labels
            .get(DEVICE_LABEL)
            .cloned()
            .unwrap_or_else(|| current.subject.clone());
        let rec = &mut signed.record.rec;
        rec.source = CertSource::Scep;
        rec.labels.extend(scep_labels(&device, transaction_id));
        signed.record.audit.action = "cert.scep.renew".into();
        if let Some(d) = signed.record.audit.details.as_object_mut() {
            d.insert("device".into(), device.into());
            d.insert("scep_transaction".into(), transaction_id.into());
        }
        Ok(Outcome::Unrecorded(signed))
    }
}

fn scep_labels(device: &str, transaction_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RENEWAL_LABEL.to_string(), RENEWED_BY_DEVICE.to_string()),
        (DEVICE_LABEL.to_string(), device.to_string()),
        (TRANSACTION_LABEL.to_string(), transaction_id.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssueRequest;
    use twoway_pki::Profile;

    #[test]
    fn the_section_documents_itself_and_checks_ra_ttl() {
        let s = ScepSection {
            enabled: true,
            allow_legacy: true,
            ca_certs_in_reply: false,
            ra_ttl: "90d".into(),
        };
        let text = s.documented_toml().replace("[scep]", "");
        let back: ScepSection = toml::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert!(back.validate().is_ok());
        let bad = ScepSection {
            ra_ttl: "10m".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("ra_ttl"));
        assert!(ScepSection::default().is_default() && !s.is_default());
    }

    fn init_ca(dir: &std::path::Path, name: &str) -> Ca {
        let opts = crate::InitOptions {
            name: name.into(),
            key_type: KeyType::P256,
            root_ttl: Duration::days(3650),
            intermediate_ttl: Duration::days(365),
            permit_dns: Vec::new(),
            permit_ip: Vec::new(),
            trust_domain: None,
            url: None,
            passphrase: None,
            actor: "test".into(),
            intermediate_in_hsm: None,
            root_in_hsm: None,
        };
        crate::init(dir, &opts).unwrap()
    }

    /// A certificate the inventory holds from an intermediate that is no longer the one in
    /// use (as after the intermediate was replaced) still authenticates a RenewalReq, and
    /// its renewal comes from the current intermediate; `/v1/renew`'s check refuses it.
    #[test]
    fn a_renewal_signer_from_an_earlier_intermediate_authenticates() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ca = init_ca(a.path(), "Now Corp");
        let before = init_ca(b.path(), "Before Corp");
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let req = IssueRequest {
            profile: Profile::Client,
            sans: vec!["DNS:dev.example.internal".parse().unwrap()],
            common_name: None,
            ttl: Some(Duration::days(30)),
            owner: Some("iot".into()),
            labels: BTreeMap::new(),
            location: None,
            actor: "test".into(),
        };
        let old = before
            .issue(&req, &key.public_key_der(), "cert.issue")
            .unwrap();
        let row = before
            .store()
            .find_certificate(&old.info.fingerprint)
            .unwrap();
        let audit = twoway_store::NewAudit {
            actor: "test".into(),
            action: "cert.issue".into(),
            target: row.serial.clone(),
            details: serde_json::json!({}),
            time: OffsetDateTime::now_utc(),
        };
        ca.store().insert_certificate(&row, &audit).unwrap();
        assert!(matches!(
            ca.authenticate(&old.der),
            Err(Error::Unauthenticated(_))
        ));
        let current = ca.authenticate_scep_signer(&old.der).unwrap();
        let csr = twoway_pki::create_csr(&key, &req.sans, None).unwrap();
        let outcome = ca
            .prepare_scep_renew(&current, csr.as_bytes(), "tid-1", "test")
            .unwrap();
        let new = ca.record(outcome).unwrap();
        assert_eq!(new.info.issuer, ca.intermediate_info().subject);
        let rec = ca.store().find_certificate(&new.info.fingerprint).unwrap();
        assert_eq!(rec.source, CertSource::Scep);
        assert_eq!(rec.owner.as_deref(), Some("iot"));
        assert_eq!(
            rec.labels.get(TRANSACTION_LABEL).map(String::as_str),
            Some("tid-1")
        );
        // an unknown certificate does not
        let stranger = before
            .issue(&req, &key.public_key_der(), "cert.issue")
            .unwrap();
        assert!(matches!(
            ca.authenticate_scep_signer(&stranger.der),
            Err(Error::Unauthenticated(_))
        ));
    }
}
