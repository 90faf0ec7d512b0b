//! Enrollment over Secure Transport (RFC 7030), the CA's half: the `[est]` section of
//! ca.toml and the issuing calls behind `/.well-known/est/` (no HTTP here; `twoway-server`
//! reads requests, authenticates TLS and maps errors to statuses).
//!
//! Three ways in, each recorded with source `est` and audited like every other path:
//! - a first enrollment with a one-time token ([`Ca::prepare_est_token`]): the token's
//!   names, profile, owner and lifetime, the token consumed by the issuing transaction;
//! - a first enrollment by a device certificate from a bootstrap CA (a manufacturer's
//!   device CA, `[est] bootstrap_ca`; [`Ca::prepare_est_bootstrap`]): names within
//!   `[est] bootstrap_names`, the device's identity kept in the inventory's labels;
//! - a re-enrollment by the current certificate ([`Ca::prepare_est_reenroll`]): the names
//!   and profile of the current certificate, which is superseded in the same transaction,
//!   exactly as `/v1/renew` does.
//!
//! `serverkeygen` uses the first two with a key the server made (`key_spki`).

use crate::online::now_s;
use crate::{Ca, Error, IssueRequest, Outcome, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use twoway_pki::{verify_csr, Profile, San};
use twoway_store::{CertRecord, CertSource, IssueExtras};

/// The `[est]` section: EST enrollment of `twoway ca serve` (docs/devices.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstSection {
    /// PEM file of the CA certificates (a manufacturer's device CA) whose certificates may
    /// make a first enrollment without a token; relative to the CA directory. Unset: only
    /// tokens enroll.
    pub bootstrap_ca: Option<String>,
    /// The names a device enrolling with a bootstrap certificate may ask for: `TYPE:glob`
    /// (`DNS:*.devices.example.org`, `URI:spiffe://example.org/device/*`; `*` never
    /// crosses a dot in DNS names or a `/` in URIs). `[policy]` and the name constraints
    /// apply too.
    pub bootstrap_names: Vec<String>,
    /// Profile of certificates enrolled with a bootstrap certificate (default `device`).
    pub bootstrap_profile: Option<String>,
    /// Owner recorded for them (default: the bootstrap certificate's subject).
    pub bootstrap_owner: Option<String>,
    /// Validity of them (default: the profile's `default_ttl`).
    pub bootstrap_cert_ttl: Option<String>,
    /// Label → profile: `/.well-known/est/<label>/…` enrolls under that profile (a
    /// token's profile must be the same).
    pub labels: BTreeMap<String, String>,
}

impl EstSection {
    /// True when nothing is set (the section is left out of ca.toml).
    pub fn is_empty(&self) -> bool {
        self == &EstSection::default()
    }

    /// Checks every key; the error names the wrong one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for n in &self.bootstrap_names {
            name_glob(n).map_err(|e| format!("[est] bootstrap_names: {e}"))?;
        }
        if let Some(p) = &self.bootstrap_profile {
            p.parse::<Profile>()
                .map_err(|e| format!("[est] bootstrap_profile: {e}"))?;
        }
        if let Some(t) = &self.bootstrap_cert_ttl {
            twoway_pki::parse_duration(t).map_err(|e| format!("[est] bootstrap_cert_ttl: {e}"))?;
        }
        if self.bootstrap_ca.is_some() && self.bootstrap_names.is_empty() {
            return Err("[est] bootstrap_ca is set but bootstrap_names is empty: list the names devices may ask for, e.g. bootstrap_names = [\"DNS:*.devices.example.org\"]".into());
        }
        for (label, p) in &self.labels {
            if label.is_empty()
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "[est.labels] {label:?}: a label is letters, digits, '-' and '_'"
                ));
            }
            if is_operation(label) {
                return Err(format!(
                    "[est.labels] {label:?} is the name of an EST operation: pick another"
                ));
            }
            p.parse::<Profile>()
                .map_err(|e| format!("[est.labels] {label}: {e}"))?;
        }
        Ok(())
    }

    /// The profile a label maps to, or a refusal naming the labels there are.
    pub fn label_profile(&self, label: &str) -> Result<Profile> {
        match self.labels.get(label) {
            Some(p) => Ok(p.parse()?),
            None => Err(Error::Refused(format!(
                "no EST label {label:?}: use one of [est.labels] in ca.toml ({}) or none",
                self.labels.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The section as commented TOML (every key documented; an example when empty).
    pub fn documented_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let ql = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let opt = |key: &str, v: &Option<String>, example: &str| match v {
            Some(v) => format!("{key} = {}\n", q(v)),
            None => format!("# {key} = {}\n", q(example)),
        };
        let mut out = String::from(
            "\n# EST enrollment (RFC 7030) of `twoway ca serve` at /.well-known/est/ (docs/devices.md).\n# First enrollment with a one-time token (HTTP Basic, the token as password) or a device\n# certificate from a bootstrap CA; re-enrollment with the current certificate (mTLS).\n[est]\n",
        );
        out.push_str("# PEM file (relative to the CA directory) of the manufacturer CA whose device\n# certificates may enroll without a token; unset: tokens only.\n");
        out.push_str(&opt(
            "bootstrap_ca",
            &self.bootstrap_ca,
            "manufacturer-ca.pem",
        ));
        out.push_str(
            "# Names those devices may ask for, TYPE:glob (* never crosses a dot or a /).\n",
        );
        out.push_str(&format!(
            "bootstrap_names = {}\n",
            ql(&self.bootstrap_names)
        ));
        out.push_str("# Profile, owner and validity of their certificates (defaults: device, the\n# bootstrap certificate's subject, the profile's default_ttl).\n");
        out.push_str(&opt("bootstrap_profile", &self.bootstrap_profile, "device"));
        out.push_str(&opt(
            "bootstrap_owner",
            &self.bootstrap_owner,
            "team-devices",
        ));
        out.push_str(&opt("bootstrap_cert_ttl", &self.bootstrap_cert_ttl, "365d"));
        out.push_str("# Labels: /.well-known/est/<label>/... enrolls under the profile named here.\n[est.labels]\n");
        if self.labels.is_empty() {
            out.push_str("# routers = \"device\"\n");
        }
        for (l, p) in &self.labels {
            out.push_str(&format!("{l} = {}\n", q(p)));
        }
        out
    }
}

/// The EST operations (RFC 7030 §3.2.2), which a label may not be called.
pub fn is_operation(s: &str) -> bool {
    matches!(
        s,
        "cacerts" | "simpleenroll" | "simplereenroll" | "csrattrs" | "serverkeygen" | "fullcmc"
    )
}

/// A `TYPE:glob` of `[est] bootstrap_names`, parsed.
fn name_glob(s: &str) -> std::result::Result<(String, twoway_glob::Glob), String> {
    let (kind, pat) = s
        .split_once(':')
        .filter(|(k, p)| !p.is_empty() && ["DNS", "IP", "URI", "EMAIL"].contains(k))
        .ok_or_else(|| format!("{s:?} is not TYPE:glob with TYPE one of DNS, IP, URI, EMAIL"))?;
    let opts = match kind {
        "DNS" => twoway_glob::Options::new()
            .separator('.')
            .ignore_ascii_case(),
        "URI" => twoway_glob::Options::new().separator('/'),
        _ => twoway_glob::Options::new(),
    };
    let g = twoway_glob::Glob::new(pat, opts).map_err(|e| format!("{s:?}: {e}"))?;
    Ok((kind.to_string(), g))
}

/// The device certificate a bootstrap enrollment was authenticated by (already verified
/// against `[est] bootstrap_ca` by the server).
#[derive(Clone, Debug)]
pub struct BootstrapDevice {
    /// Its subject, RFC 4514 style.
    pub subject: String,
    /// Its serial number, hex.
    pub serial: String,
    /// Its issuer, RFC 4514 style.
    pub issuer: String,
    /// The subject's `serialNumber` attribute, if any (a device serial number).
    pub subject_serial: Option<String>,
}

impl BootstrapDevice {
    /// Reads the identity of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let info = twoway_pki::CertInfo::from_der(der)?;
        Ok(BootstrapDevice {
            subject: info.subject,
            serial: info.serial,
            issuer: info.issuer,
            subject_serial: twoway_pki::subject_serial_of_cert(der),
        })
    }
}

/// What an EST issuance asks besides its credential and its CSR.
#[derive(Clone, Debug)]
pub struct EstIssue {
    /// The profile of the label in the URL, if any.
    pub label: Option<(String, Profile)>,
    /// A key the server made (`serverkeygen`): certify it instead of the CSR's.
    pub key_spki: Option<Vec<u8>>,
    /// Who asks (audit).
    pub actor: String,
}

/// The label recording how an EST certificate was first authenticated.
pub const EST_AUTH_LABEL: &str = "est_auth";
/// The label holding the bootstrap certificate's subject.
pub const EST_DEVICE_LABEL: &str = "est_device";
/// The label holding the bootstrap certificate's serial number.
pub const EST_DEVICE_SERIAL_LABEL: &str = "est_device_serial";

impl Ca {
    /// `simpleenroll` / `serverkeygen` with a one-time token (HTTP Basic): as
    /// [`Ca::prepare_enroll`], recorded with source `est`; with a label, the token's
    /// profile must be the label's.
    pub fn prepare_est_token(&self, secret: &str, csr: &[u8], est: &EstIssue) -> Result<Outcome> {
        let (tok, hash) = self.token_grant(secret)?;
        let csr = verify_csr(csr)?;
        let (mut req, extras) = self.token_request(&tok, hash, &csr, &est.actor)?;
        if let Some((label, profile)) = &est.label {
            if *profile != req.profile {
                return Err(Error::Forbidden(format!(
                    "the token is for the {} profile but EST label {label:?} enrolls {profile}: use /.well-known/est/ without a label, or a token made with --profile {profile}",
                    req.profile
                )));
            }
        }
        req.labels = BTreeMap::from([(EST_AUTH_LABEL.into(), "token".into())]);
        let spki = est.key_spki.as_deref().unwrap_or(&csr.public_key_der);
        let signed = self.prepare_subject(
            &req,
            spki,
            action(est, "cert.est.enroll"),
            extras,
            CertSource::Est,
            csr.serial_number.clone(),
        )?;
        Ok(Outcome::Unrecorded(Box::new(signed)))
    }

    /// `simpleenroll` / `serverkeygen` by a device certificate from `[est] bootstrap_ca`
    /// (verified by the caller): the CSR's names must match `[est] bootstrap_names`; the
    /// device's identity goes into the labels and the audit entry; a subject serial number
    /// in the CSR must be the device certificate's, which is used when the CSR has none.
    pub fn prepare_est_bootstrap(
        &self,
        device: &BootstrapDevice,
        csr: &[u8],
        est: &EstIssue,
    ) -> Result<Outcome> {
        let cfg = &self.config().est;
        let csr = verify_csr(csr)?;
        if csr.sans.is_empty() {
            return Err(twoway_pki::Error::NoSan.into());
        }
        let globs = cfg
            .bootstrap_names
            .iter()
            .map(|n| name_glob(n))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::Refused)?;
        for san in &csr.sans {
            let kind = match san {
                San::Dns(_) => "DNS",
                San::Ip(_) => "IP",
                San::Uri(_) => "URI",
                San::Email(_) => "EMAIL",
            };
            let value = san.value();
            if !globs.iter().any(|(k, g)| k == kind && g.is_match(&value)) {
                return Err(Error::NameNotAllowed(
                    san.to_string(),
                    format!("[est] bootstrap_names {}", cfg.bootstrap_names.join(", ")),
                ));
            }
        }
        let subject_serial = match (&csr.serial_number, &device.subject_serial) {
            (Some(asked), Some(dev)) if asked != dev => {
                return Err(Error::Forbidden(format!(
                    "the CSR's subject serialNumber {asked:?} is not the device certificate's {dev:?}: ask for the device's own serial number, or none"
                )))
            }
            (Some(asked), _) => Some(asked.clone()),
            (None, dev) => dev.clone(),
        };
        let profile = match (&est.label, &cfg.bootstrap_profile) {
            (Some((_, p)), _) => *p,
            (None, Some(p)) => p.parse()?,
            (None, None) => Profile::Device,
        };
        let ttl = cfg
            .bootstrap_cert_ttl
            .as_deref()
            .map(twoway_pki::parse_duration)
            .transpose()?;
        let labels = BTreeMap::from([
            (EST_AUTH_LABEL.to_string(), "bootstrap".to_string()),
            (EST_DEVICE_LABEL.to_string(), device.subject.clone()),
            (EST_DEVICE_SERIAL_LABEL.to_string(), device.serial.clone()),
        ]);
        let req = IssueRequest {
            profile,
            sans: csr.sans.clone(),
            common_name: csr.common_name.clone(),
            ttl,
            owner: Some(
                cfg.bootstrap_owner
                    .clone()
                    .unwrap_or_else(|| device.subject.clone()),
            ),
            labels,
            location: None,
            actor: est.actor.clone(),
        };
        let spki = est.key_spki.as_deref().unwrap_or(&csr.public_key_der);
        let mut signed = self.prepare_subject(
            &req,
            spki,
            action(est, "cert.est.enroll"),
            IssueExtras::none(now_s()),
            CertSource::Est,
            subject_serial,
        )?;
        signed.record.audit.details["device"] = serde_json::json!({
            "subject": device.subject,
            "serial": device.serial,
            "issuer": device.issuer,
        });
        Ok(Outcome::Unrecorded(Box::new(signed)))
    }

    /// `simplereenroll` by the current certificate (authenticated by the caller with
    /// [`Ca::authenticate_renewal`]): as [`Ca::prepare_renew`] (same names, profile, owner,
    /// labels; the current certificate superseded in the same transaction; a retry answered
    /// with the certificate already issued), recorded with source `est`.
    pub fn prepare_est_reenroll(
        &self,
        current: &CertRecord,
        csr: &[u8],
        actor: &str,
    ) -> Result<Outcome> {
        match self.prepare_renew(current, csr, actor)? {
            Outcome::Unrecorded(mut u) => {
                u.record.rec.source = CertSource::Est;
                u.record.audit.action = "cert.est.reenroll".into();
                Ok(Outcome::Unrecorded(u))
            }
            recorded => Ok(recorded),
        }
    }
}

fn action(est: &EstIssue, enroll: &'static str) -> &'static str {
    if est.key_spki.is_some() {
        "cert.est.serverkeygen"
    } else {
        enroll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_checked_key_by_key() {
        let mut s = EstSection {
            bootstrap_ca: Some("m.pem".into()),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("bootstrap_names"));
        s.bootstrap_names = vec!["DNS:*.devices.example.org".into()];
        s.validate().unwrap();
        s.bootstrap_names.push("dns:x".into());
        assert!(s.validate().unwrap_err().contains("TYPE:glob"));
        s.bootstrap_names.pop();
        s.labels.insert("simpleenroll".into(), "device".into());
        assert!(s.validate().unwrap_err().contains("EST operation"));
        s.labels.clear();
        s.labels.insert("routers".into(), "printer".into());
        assert!(s.validate().unwrap_err().contains("routers"));
        s.labels.insert("routers".into(), "device".into());
        s.validate().unwrap();
        assert_eq!(s.label_profile("routers").unwrap(), Profile::Device);
        assert!(s
            .label_profile("x")
            .unwrap_err()
            .to_string()
            .contains("routers"));
        let (_, g) = name_glob("DNS:*.devices.example.org").unwrap();
        assert!(g.is_match("a.devices.example.org") && !g.is_match("a.b.devices.example.org"));
        let text = s.documented_toml();
        let back: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(back["est"]["labels"]["routers"].as_str(), Some("device"));
    }
}
