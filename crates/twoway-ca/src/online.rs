//! What the online CA adds to the offline one, without any HTTP: enrollment tokens,
//! enrollment, renewal, authentication of a presented certificate, and the certificates
//! the server issues itself (its TLS certificate and the delegated OCSP signer).
//! `twoway-server` maps these to routes and `Error::kind()` to status codes.

use crate::ca::{record_for, rfc3339};
use crate::{Admins, Ca, Error, IssueRequest, Outcome, Result};
use rand::RngCore;
use serde_json::json;
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};
use twoway_pki::{build_ocsp_signer, sha256_hex, verify_csr, Issued, Profile, San};
use twoway_store::{CertRecord, CertSource, CertStatus, IssueExtras, NewAudit, TokenRecord};

/// How long a proof of possession stays acceptable, either side of the server's clock.
pub const PROOF_WINDOW: Duration = Duration::minutes(5);

/// What a new enrollment token allows.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// The names a CSR may ask for.
    pub sans: Vec<San>,
    /// The profile of the certificate.
    pub profile: Profile,
    /// How long the token is usable.
    pub ttl: Duration,
    /// Validity of the certificate (None: `[server] workload_ttl`).
    pub cert_ttl: Option<Duration>,
    /// Owner recorded on the certificate.
    pub owner: Option<String>,
    /// Who makes it (audit).
    pub actor: String,
}

/// What an administrator asks of [`Ca::sign_csr`] besides the CSR.
#[derive(Clone, Debug)]
pub struct SignCsr {
    /// The profile of the certificate.
    pub profile: Profile,
    /// Validity (None: the profile's `default_ttl`).
    pub ttl: Option<Duration>,
    /// Owner recorded on the certificate.
    pub owner: Option<String>,
    /// Names to certify instead of the CSR's (None or empty: the CSR's).
    pub sans: Option<Vec<San>>,
    /// Who asks (audit).
    pub actor: String,
}

/// The label that says who renews a certificate, so `cert check` reports only what needs a
/// person: [`RENEWED_BY_AGENT`] on enrolled certificates (and their renewals),
/// [`RENEWED_BY_SERVER`] on the online CA's own, or `auto`, set by people on certificates
/// their automation renews.
pub const RENEWAL_LABEL: &str = "renewal";
/// [`RENEWAL_LABEL`] value of certificates obtained with an enrollment token and renewed by
/// an agent (`twoway agent`, the proxy's enrollment).
pub const RENEWED_BY_AGENT: &str = "agent";
/// [`RENEWAL_LABEL`] value of the online CA's own TLS and OCSP-signing certificates.
pub const RENEWED_BY_SERVER: &str = "server";
/// The owner recorded on the online CA's own certificates.
pub const SERVER_OWNER: &str = "twoway-server";

fn renewal_labels(by: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(RENEWAL_LABEL.to_string(), by.to_string())])
}

/// The token prefix, so a leaked secret is recognisable in logs and scanners.
pub const TOKEN_PREFIX: &str = "twt_";

/// SHA-256 (hex) of a token secret: what the store keys tokens by.
pub fn token_hash(secret: &str) -> String {
    sha256_hex(secret.trim().as_bytes())
}

impl Ca {
    /// Makes a one-time enrollment token: 256 random bits, only its SHA-256 stored. The names
    /// must pass the CA's policy now, so a token never promises what the CA will refuse.
    pub fn create_token(&self, t: &NewToken) -> Result<(String, TokenRecord)> {
        if t.sans.is_empty() {
            return Err(twoway_pki::Error::NoSan.into());
        }
        if t.ttl <= Duration::ZERO {
            return Err(twoway_pki::Error::BadTtl("the token TTL must be positive".into()).into());
        }
        self.check_names(&t.sans, None)?;
        let prof = self.settings().profile(t.profile)?;
        if let Some(c) = t.cert_ttl {
            if c <= Duration::ZERO || c > prof.max_ttl {
                return Err(twoway_pki::Error::BadTtl(format!(
                    "the certificate TTL must be positive and at most the {} profile's max_ttl {}",
                    t.profile, prof.max_ttl_text
                ))
                .into());
            }
        }
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
        let now = now_s();
        let rec = TokenRecord {
            hash: token_hash(&secret),
            sans: t.sans.iter().map(|s| s.to_string()).collect(),
            profile: t.profile.as_str().into(),
            owner: t.owner.clone(),
            cert_ttl: t.cert_ttl.map(|d| d.whole_seconds()),
            created_by: t.actor.clone(),
            created_at: now,
            expires_at: now + t.ttl,
            used_at: None,
            used_by: None,
        };
        self.store().insert_token(
            &rec,
            &NewAudit {
                actor: t.actor.clone(),
                action: "token.create".into(),
                target: rec.hash[..16].to_string(),
                details: json!({"sans": rec.sans, "profile": rec.profile, "owner": rec.owner,
                    "expires_at": rfc3339(rec.expires_at)}),
                time: now,
            },
        )?;
        Ok((secret, rec))
    }

    /// Enrolls with a one-time token and a CSR: the token must be known, unused and
    /// unexpired, every name in the CSR allowed by it (a CSR without names gets the token's),
    /// and the CSR's signature valid. The token is consumed in the transaction that records
    /// the certificate.
    pub fn enroll(&self, secret: &str, csr: &[u8], actor: &str) -> Result<Issued> {
        let outcome = self.prepare_enroll(secret, csr, actor)?;
        self.record(outcome)
    }

    /// [`Ca::enroll`] without the recording: see [`Ca::prepare_with`].
    pub fn prepare_enroll(&self, secret: &str, csr: &[u8], actor: &str) -> Result<Outcome> {
        let (tok, hash) = self.token_grant(secret)?;
        let csr = verify_csr(csr)?;
        let (req, extras) = self.token_request(&tok, hash, &csr, actor)?;
        let signed = self.prepare_subject(
            &req,
            &csr.public_key_der,
            "cert.enroll",
            extras,
            CertSource::Issued,
            csr.serial_number.clone(),
        )?;
        Ok(Outcome::Unrecorded(Box::new(signed)))
    }

    /// The token of `secret`, if it is known, unused and unexpired (and its hash).
    pub(crate) fn token_grant(&self, secret: &str) -> Result<(TokenRecord, String)> {
        let hash = token_hash(secret);
        let tok = self.store().find_token(&hash)?;
        let now = now_s();
        if let Some(u) = tok.used_at {
            return Err(twoway_store::Error::TokenUsed(rfc3339(u)).into());
        }
        if tok.expires_at <= now {
            return Err(twoway_store::Error::TokenExpired(rfc3339(tok.expires_at)).into());
        }
        Ok((tok, hash))
    }

    /// What a token allows a verified CSR: its names (each one the token's; none: the
    /// token's), the token's profile, owner and certificate lifetime, and the token consumed
    /// by the issuing transaction.
    pub(crate) fn token_request(
        &self,
        tok: &TokenRecord,
        hash: String,
        csr: &twoway_pki::VerifiedCsr,
        actor: &str,
    ) -> Result<(IssueRequest, IssueExtras)> {
        let allowed: Vec<San> = tok
            .sans
            .iter()
            .map(|s| s.parse::<San>())
            .collect::<std::result::Result<_, _>>()?;
        let sans = if csr.sans.is_empty() {
            allowed.clone()
        } else {
            for s in &csr.sans {
                if !allowed.contains(s) {
                    return Err(Error::NameNotAllowed(s.to_string(), tok.sans.join(", ")));
                }
            }
            csr.sans.clone()
        };
        let profile: Profile = tok.profile.parse()?;
        let ttl = match tok.cert_ttl {
            Some(s) => Duration::seconds(s),
            None => self.settings().server.workload_ttl,
        };
        let req = IssueRequest {
            profile,
            sans,
            common_name: csr.common_name.clone(),
            ttl: Some(ttl),
            owner: tok.owner.clone(),
            labels: renewal_labels(RENEWED_BY_AGENT),
            location: None,
            actor: actor.to_string(),
        };
        let mut extras = IssueExtras::none(now_s());
        extras.consume_token = Some(hash);
        Ok((req, extras))
    }

    /// Signs a CSR for an administrator (`POST /v1/sign`): the CSR's signature must verify;
    /// the certificate carries its public key and its names, or `sans` when given, under
    /// the usual policy and profile limits, and is recorded (action `cert.sign`) before it
    /// is returned.
    pub fn sign_csr(&self, csr: &[u8], req: SignCsr) -> Result<Issued> {
        let outcome = self.prepare_sign_csr(csr, req)?;
        self.record(outcome)
    }

    /// [`Ca::sign_csr`] without the recording: see [`Ca::prepare_with`]. It reads nothing
    /// from the inventory: the CSR's signature, the policy and the profile are checked and
    /// the certificate signed, all in memory.
    pub fn prepare_sign_csr(&self, csr: &[u8], req: SignCsr) -> Result<Outcome> {
        let csr = verify_csr(csr)?;
        let subject_serial = csr.serial_number.clone();
        let sans = match req.sans {
            Some(s) if !s.is_empty() => s,
            _ if !csr.sans.is_empty() => csr.sans,
            _ => return Err(Error::Pki(twoway_pki::Error::NoSan)),
        };
        let req = IssueRequest {
            profile: req.profile,
            sans,
            common_name: csr.common_name,
            ttl: req.ttl,
            owner: req.owner,
            labels: BTreeMap::new(),
            location: None,
            actor: req.actor,
        };
        let extras = IssueExtras::none(OffsetDateTime::now_utc());
        let signed = self.prepare_subject(
            &req,
            &csr.public_key_der,
            "cert.sign",
            extras,
            CertSource::Issued,
            subject_serial,
        )?;
        Ok(Outcome::Unrecorded(Box::new(signed)))
    }

    /// Finds a presented certificate (DER) in the inventory and checks it can authenticate:
    /// issued by this CA's intermediate, not revoked, not expired. The inventory holds the
    /// exact DER the CA signed, so a match by fingerprint is a match of the certificate.
    pub fn authenticate(&self, cert_der: &[u8]) -> Result<CertRecord> {
        self.authenticate_inner(cert_der, false)
    }

    /// Like [`Ca::authenticate`], for a renewal: a certificate already superseded by a
    /// renewal is let through, so that [`Ca::renew`] can answer a retried renewal whose first
    /// answer was lost (the CA committed the new certificate, then the connection or the
    /// CA died) with the certificate it already issued.
    pub fn authenticate_renewal(&self, cert_der: &[u8]) -> Result<CertRecord> {
        self.authenticate_inner(cert_der, true)
    }

    fn authenticate_inner(&self, cert_der: &[u8], allow_superseded: bool) -> Result<CertRecord> {
        let fp = sha256_hex(cert_der);
        let rec = match self.store().find_certificate(&fp) {
            Ok(r) if r.fingerprint == fp => r,
            Ok(_) | Err(twoway_store::Error::NotFound(_)) => {
                return Err(Error::Unauthenticated(
                    "the client certificate was not issued by this CA".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if !rec.source.signed_here() || !self.vouches_for(&rec.issuer) {
            return Err(Error::Unauthenticated(
                "the client certificate was not issued by an intermediate of this CA that still vouches for its certificates (the active one or a retiring one)".into(),
            ));
        }
        let superseded = rec.revocation_reason.as_deref() == Some("superseded");
        if rec.status == CertStatus::Revoked && !(allow_superseded && superseded) {
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

    /// Checks a proof of possession: the chain's leaf authenticates, the timestamp is within
    /// [`PROOF_WINDOW`] of now, and `signature` verifies over `message` with the leaf's key.
    pub fn authenticate_proof(
        &self,
        chain_pem: &[u8],
        timestamp: i64,
        message: &[u8],
        signature: &[u8],
    ) -> Result<CertRecord> {
        let certs = twoway_pki::parse_certificates(chain_pem)?;
        let leaf = certs
            .first()
            .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
        let rec = self.authenticate_renewal(leaf)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if (now - timestamp).abs() > PROOF_WINDOW.whole_seconds() {
            return Err(Error::BadProof(format!(
                "the proof's timestamp {timestamp} is more than {}s from the server's clock ({now}): make a fresh proof (and check the clock)",
                PROOF_WINDOW.whole_seconds()
            )));
        }
        let spki = twoway_pki::spki_of_cert(leaf)?;
        twoway_pki::verify_signature(&spki, message, signature).map_err(|_| {
            Error::BadProof(
                "the proof's signature does not verify with the certificate's key".into(),
            )
        })?;
        Ok(rec)
    }

    /// Renews `current` (already authenticated) for the key in `csr`: same names, profile,
    /// owner, labels and location, the same lifetime (capped by the profile); `current` is
    /// marked superseded in the transaction that records the new certificate.
    ///
    /// If `current` was already superseded (see [`Ca::authenticate_renewal`]), the renewal
    /// is a retry: the certificate that replaced it is returned again when it certifies the
    /// CSR's key — the caller proved possession of both the old key (TLS or proof) and the
    /// new one (the CSR's signature). Otherwise the renewal is refused as revoked, so one
    /// enrollment never holds two active certificates.
    pub fn renew(&self, current: &CertRecord, csr: &[u8], actor: &str) -> Result<Issued> {
        let outcome = self.prepare_renew(current, csr, actor)?;
        self.record(outcome)
    }

    /// [`Ca::renew`] without the recording: see [`Ca::prepare_with`]. A retried renewal
    /// comes back [`Outcome::Recorded`].
    pub fn prepare_renew(&self, current: &CertRecord, csr: &[u8], actor: &str) -> Result<Outcome> {
        let csr = verify_csr(csr)?;
        if current.status == CertStatus::Revoked {
            return self
                .replay_renewal(current, &csr.public_key_der)
                .map(|i| Outcome::Recorded(Box::new(i)));
        }
        let profile: Profile = current.profile.parse().map_err(|_| {
            Error::Refused(format!(
                "certificate {} has profile {:?}, which cannot be renewed",
                current.serial, current.profile
            ))
        })?;
        let sans: Vec<San> = current
            .sans
            .iter()
            .map(|s| s.parse::<San>())
            .collect::<std::result::Result<_, _>>()?;
        let max = self.settings().profile(profile)?.max_ttl;
        // The original lifetime: not_after - not_before includes the one-minute backdate.
        let lifetime = (current.not_after - current.not_before - Duration::minutes(1))
            .max(Duration::minutes(1))
            .min(max);
        // Renewed over the API: by an agent, whatever the first certificate said.
        let mut labels = current.labels.clone();
        labels.insert(RENEWAL_LABEL.into(), RENEWED_BY_AGENT.into());
        // The CN is carried over only when it repeats one of the SANs: a certificate issued
        // before that rule may hold a free CN, which its renewal drops rather than fails on.
        let common_name = twoway_pki::subject_common_name(current.common_name.as_deref(), &sans)
            .ok()
            .flatten();
        let req = IssueRequest {
            profile,
            sans,
            common_name,
            ttl: Some(lifetime),
            owner: current.owner.clone(),
            labels,
            location: current.location.clone(),
            actor: actor.to_string(),
        };
        let now = now_s();
        let mut extras = IssueExtras::none(now);
        extras.supersede = Some(current.fingerprint.clone());
        extras.supersede_audit = Some(NewAudit {
            actor: actor.to_string(),
            action: "cert.revoke".into(),
            target: current.serial.clone(),
            details: json!({"fingerprint": current.fingerprint, "reason": "superseded"}),
            time: now,
        });
        // A device keeps its serial number in the subject across renewals.
        let subject_serial = twoway_pki::parse_certificates(current.pem.as_bytes())
            .ok()
            .and_then(|c| c.into_iter().next())
            .and_then(|der| twoway_pki::subject_serial_of_cert(&der));
        let signed = self.prepare_subject(
            &req,
            &csr.public_key_der,
            "cert.renew",
            extras,
            CertSource::Issued,
            subject_serial,
        )?;
        Ok(Outcome::Unrecorded(Box::new(signed)))
    }

    fn replay_renewal(&self, current: &CertRecord, spki: &[u8]) -> Result<Issued> {
        let revoked = || {
            Error::CertRevoked(
                current.serial.clone(),
                current.revocation_reason.clone().unwrap_or_default(),
            )
        };
        let Some(first) = current.sans.first() else {
            return Err(revoked());
        };
        let since = current.revoked_at.unwrap_or(current.not_before);
        let page = self.store().list_certificates(&twoway_store::CertQuery {
            status: Some("active".into()),
            owner: current.owner.clone(),
            san_glob: Some(first.clone()),
            limit: 50,
            ..Default::default()
        })?;
        for cand in page.items {
            if cand.recorded_at < since - Duration::minutes(1) || cand.sans != current.sans {
                continue;
            }
            let full = self.store().find_certificate(&cand.fingerprint)?;
            let der = twoway_pki::parse_certificates(full.pem.as_bytes())?
                .into_iter()
                .next()
                .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
            if twoway_pki::key_matches_cert(spki, &der).unwrap_or(false) {
                let info = twoway_pki::CertInfo::from_der(&der)?;
                return Ok(Issued { der, info });
            }
        }
        Err(revoked())
    }

    /// Issues and records the delegated OCSP signing certificate for `spki` (a key the server
    /// keeps in memory), valid for `ttl`.
    pub fn issue_ocsp_signer(&self, spki: &[u8], ttl: Duration, actor: &str) -> Result<Issued> {
        let now = now_s();
        let not_after = (now + ttl).min(self.intermediate_info().not_after);
        let issued = build_ocsp_signer(
            self.signer()?,
            spki,
            &self.config().ca.name,
            now - Duration::minutes(1),
            not_after,
        )?;
        self.record_service_cert(&issued, "ocsp", "ocsp.signer", actor)?;
        Ok(issued)
    }

    /// Issues and records the server's own TLS certificate (profile server) for `spki`.
    pub fn issue_server_cert(
        &self,
        spki: &[u8],
        sans: Vec<San>,
        ttl: Duration,
        actor: &str,
    ) -> Result<Issued> {
        let req = IssueRequest {
            profile: Profile::Server,
            sans,
            common_name: None,
            ttl: Some(ttl),
            owner: Some(SERVER_OWNER.into()),
            labels: renewal_labels(RENEWED_BY_SERVER),
            location: None,
            actor: actor.to_string(),
        };
        self.issue(&req, spki, "server.cert")
    }

    /// Retires one of the server's own certificates (its TLS or OCSP-signing certificate,
    /// whose key lives only in the server's memory): marks it revoked with `reason`,
    /// `superseded` after the server renewed it, `cessation-of-operation` when the server
    /// stops and the key dies with it. One already revoked is left alone; any other
    /// certificate is refused.
    pub fn retire_service_cert(
        &self,
        fingerprint: &str,
        reason: twoway_pki::Reason,
        actor: &str,
    ) -> Result<()> {
        let rec = self.store().find_certificate(fingerprint)?;
        let service = rec.fingerprint == fingerprint
            && rec.owner.as_deref() == Some(SERVER_OWNER)
            && rec.labels.get(RENEWAL_LABEL).map(String::as_str) == Some(RENEWED_BY_SERVER);
        if !service {
            return Err(Error::Refused(format!(
                "certificate {} is not one of the server's own: it is not retired",
                rec.serial
            )));
        }
        if rec.status == CertStatus::Revoked {
            return Ok(());
        }
        match self.revoke_record(&rec, reason, actor) {
            Ok(_) | Err(twoway_store::Error::AlreadyRevoked(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn record_service_cert(
        &self,
        issued: &Issued,
        profile: &str,
        action: &str,
        actor: &str,
    ) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let rec = record_for(
            &issued.info,
            &issued.der,
            profile,
            CertSource::Issued,
            Some(SERVER_OWNER.into()),
            renewal_labels(RENEWED_BY_SERVER),
            None,
            now,
        );
        self.store().insert_certificate(
            &rec,
            &NewAudit {
                actor: actor.into(),
                action: action.into(),
                target: issued.info.serial.clone(),
                details: json!({"fingerprint": issued.info.fingerprint,
                    "not_after": rfc3339(issued.info.not_after)}),
                time: now,
            },
        )?;
        Ok(())
    }
}

pub(crate) fn now_s() -> OffsetDateTime {
    let n = OffsetDateTime::now_utc();
    n.replace_nanosecond(0).unwrap_or(n)
}

/// True when `rec` (a presented, authenticated certificate) is one of `admins`
/// (`[server] admins` and `--admin`, parsed once): see [`Admins::contains`].
pub fn is_admin(admins: &Admins, rec: &CertRecord) -> bool {
    admins.contains(rec)
}
