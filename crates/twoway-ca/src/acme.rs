//! What the ACME server (RFC 8555, in `twoway-server`) needs of the CA, without HTTP: the
//! `[[acme.directory]]` settings of `ca.toml`, the identifier rule of a directory, and
//! issuance for a finalized order through the same checks, signing and recording as every
//! other path ([`Ca::prepare_acme`]), with the certificate's source `acme`.

use crate::{Ca, Error, IssueRequest, Outcome, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};
use twoway_pki::{parse_duration, verify_csr, Profile, San};
use twoway_store::{CertSource, IssueExtras};

mod admin;
pub use admin::{
    preauthorizing_glob, replaced_serial, EabInfo, RenewEarly, RenewedEarly, ARI_KIND,
};

/// The `[acme]` section: the ACME directories `twoway ca serve` offers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSection {
    /// One `[[acme.directory]]` per directory, served at `<url>/acme/<name>/directory`.
    pub directory: Vec<AcmeDirectory>,
}

/// One ACME directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeDirectory {
    /// Its name: the path segment after `/acme/` (letters, digits, `-`, `_`).
    pub name: String,
    /// The profile of its certificates (`server` by default).
    pub profile: String,
    /// DNS name globs this directory certifies (`*.example.internal`; `*` never crosses a
    /// dot). Empty: whatever `[policy]` allows. `[policy]` and the name constraints always
    /// apply too.
    pub allow: Vec<String>,
    /// Validity of its certificates (None: the profile's `default_ttl`).
    pub cert_ttl: Option<String>,
    /// Owner recorded on its certificates (an account bound by EAB may name another).
    pub owner: Option<String>,
    /// Port the `http-01` validation connects to (80 by RFC 8555; other values for tests
    /// and closed networks).
    pub http01_port: u16,
    /// Port the `tls-alpn-01` validation connects to (443 by RFC 8737).
    pub tlsalpn01_port: u16,
    /// DNS resolver (`IP:port`) for `dns-01` TXT lookups; None: dns-01 is not offered.
    pub dns_resolver: Option<String>,
    /// Whether new accounts must carry an external account binding.
    pub eab_required: bool,
    /// Address the http-01 and tls-alpn-01 validations connect to instead of resolving the
    /// identifier (tests and closed networks, as Pebble's resolver does); None: the name
    /// is resolved by the system.
    pub validation_address: Option<std::net::IpAddr>,
    /// How long ACME Renewal Information (RFC 9773) answers tell clients to wait before
    /// asking again (`Retry-After`); None: 6 hours.
    pub ari_retry_after: Option<String>,
}

impl Default for AcmeDirectory {
    fn default() -> Self {
        AcmeDirectory {
            name: String::new(),
            profile: "server".into(),
            allow: Vec::new(),
            cert_ttl: None,
            owner: None,
            http01_port: 80,
            tlsalpn01_port: 443,
            dns_resolver: None,
            eab_required: false,
            validation_address: None,
            ari_retry_after: None,
        }
    }
}

impl AcmeSection {
    /// True when no directory is configured.
    pub fn is_empty(&self) -> bool {
        self.directory.is_empty()
    }

    /// The directory named `name`.
    pub fn get(&self, name: &str) -> Option<&AcmeDirectory> {
        self.directory.iter().find(|d| d.name == name)
    }

    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for d in &self.directory {
            let at = format!("[[acme.directory]] {:?}", d.name);
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "{at}: name must be letters, digits, - or _ (it is a URL path segment)"
                ));
            }
            if !seen.insert(&d.name) {
                return Err(format!("{at}: two directories have this name"));
            }
            d.profile
                .parse::<Profile>()
                .map_err(|e| format!("{at} profile: {e}"))?;
            if let Some(t) = &d.cert_ttl {
                parse_duration(t).map_err(|e| format!("{at} cert_ttl: {e}"))?;
            }
            if let Some(r) = &d.dns_resolver {
                r.parse::<std::net::SocketAddr>()
                    .map_err(|_| format!("{at} dns_resolver: {r:?} is not IP:port"))?;
            }
            if let Some(t) = &d.ari_retry_after {
                let t = parse_duration(t).map_err(|e| format!("{at} ari_retry_after: {e}"))?;
                if t < Duration::seconds(1) {
                    return Err(format!("{at} ari_retry_after: at least 1s"));
                }
            }
            if d.http01_port == 0 || d.tlsalpn01_port == 0 {
                return Err(format!(
                    "{at}: http01_port and tlsalpn01_port must not be 0"
                ));
            }
        }
        Ok(())
    }

    /// The section as commented TOML (every key documented; an example when empty).
    pub fn documented_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = String::from(
            "\n# ACME directories (RFC 8555) of `twoway ca serve`, one [[acme.directory]] each, served at\n# <[ca] url>/acme/<name>/directory. certbot, lego and other ACME clients use them unchanged\n# (docs/acme.md).\n",
        );
        let example = [AcmeDirectory {
            name: "default".into(),
            ..AcmeDirectory::default()
        }];
        let (dirs, prefix) = if self.directory.is_empty() {
            (&example[..], "# ")
        } else {
            (&self.directory[..], "")
        };
        for d in dirs {
            let p = prefix;
            out.push_str(&format!("{p}[[acme.directory]]\n"));
            out.push_str("# Name: the URL path segment after /acme/.\n");
            out.push_str(&format!("{p}name = {}\n", q(&d.name)));
            out.push_str("# Profile of its certificates: server, client or peer.\n");
            out.push_str(&format!("{p}profile = {}\n", q(&d.profile)));
            out.push_str("# DNS name globs it certifies (* never crosses a dot); empty: what [policy] allows.\n# [policy] and the intermediate's name constraints always apply too.\n");
            out.push_str(&format!(
                "{p}allow = [{}]\n",
                d.allow.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            ));
            out.push_str("# Validity of its certificates; unset: the profile's default_ttl.\n");
            match &d.cert_ttl {
                Some(t) => out.push_str(&format!("{p}cert_ttl = {}\n", q(t))),
                None => out.push_str("# cert_ttl = \"30d\"\n"),
            }
            out.push_str("# Owner recorded in the inventory for its certificates.\n");
            match &d.owner {
                Some(o) => out.push_str(&format!("{p}owner = {}\n", q(o))),
                None => out.push_str("# owner = \"team-web\"\n"),
            }
            out.push_str("# Ports the http-01 and tls-alpn-01 validations connect to (80 and 443 by the RFCs;\n# others for tests and closed networks).\n");
            out.push_str(&format!(
                "{p}http01_port = {}\n{p}tlsalpn01_port = {}\n",
                d.http01_port, d.tlsalpn01_port
            ));
            out.push_str(
                "# DNS resolver (IP:port) for dns-01 TXT lookups; unset: dns-01 is not offered.\n",
            );
            match &d.dns_resolver {
                Some(r) => out.push_str(&format!("{p}dns_resolver = {}\n", q(r))),
                None => out.push_str("# dns_resolver = \"10.0.0.53:53\"\n"),
            }
            out.push_str("# Whether new accounts need an external account binding (EAB).\n");
            out.push_str(&format!("{p}eab_required = {}\n", d.eab_required));
            out.push_str("# Address the http-01 and tls-alpn-01 validations connect to instead of resolving\n# the name (tests, closed networks); unset: the system resolver.\n");
            match &d.validation_address {
                Some(a) => {
                    out.push_str(&format!("{p}validation_address = {}\n", q(&a.to_string())))
                }
                None => out.push_str("# validation_address = \"127.0.0.1\"\n"),
            }
            out.push_str("# How long renewal information (ARI) answers ask clients to wait before asking\n# again (Retry-After); unset: 6h.\n");
            match &d.ari_retry_after {
                Some(t) => out.push_str(&format!("{p}ari_retry_after = {}\n", q(t))),
                None => out.push_str("# ari_retry_after = \"6h\"\n"),
            }
        }
        out
    }
}

impl AcmeDirectory {
    /// The profile (validated at load).
    pub fn profile(&self) -> Result<Profile> {
        self.profile
            .parse::<Profile>()
            .map_err(|e| Error::Refused(format!("[[acme.directory]] profile: {e}")))
    }

    /// The certificate validity (None: the profile's default).
    pub fn ttl(&self) -> Result<Option<Duration>> {
        Ok(match &self.cert_ttl {
            Some(t) => Some(parse_duration(t)?),
            None => None,
        })
    }

    /// Seconds ARI answers tell clients to wait before asking again.
    pub fn ari_retry_after_secs(&self) -> i64 {
        self.ari_retry_after
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .map(|d| d.whole_seconds().max(1))
            .unwrap_or(6 * 3600)
    }

    /// Whether `name` (a DNS name, lower case) matches the directory's `allow` globs.
    pub fn allows(&self, name: &str) -> bool {
        let opts = twoway_glob::Options::new()
            .separator('.')
            .ignore_ascii_case();
        self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|g| twoway_glob::is_match(g, name, opts))
    }
}

/// An order being finalized: what [`Ca::prepare_acme`] needs beside the CSR.
#[derive(Clone, Debug)]
pub struct AcmeIssue<'a> {
    /// The directory.
    pub directory: &'a AcmeDirectory,
    /// The order's DNS identifiers, every one validated.
    pub names: &'a [String],
    /// Owner for the inventory (the directory's, or an EAB key's).
    pub owner: Option<String>,
    /// The account URL and order URL (labels `acme_account` and `acme_order`, and the audit
    /// entry's details).
    pub account: &'a str,
    /// The order URL.
    pub order: &'a str,
    /// Who asks (audit).
    pub actor: String,
    /// The certificate this one replaces (the order's `replaces`, RFC 9773): the new one
    /// carries its serial in the label `replaces`, and it is marked superseded in the
    /// transaction that records the new one (if it is still active then).
    pub replaces: Option<&'a twoway_store::CertRecord>,
}

/// The file in the CA directory holding the secret EAB keys are derived from (0600).
pub const EAB_SECRET_FILE: &str = "acme-eab.key";

/// Label of a certificate ordered to replace another (RFC 9773 `replaces`): the old
/// certificate's serial.
pub const REPLACES_LABEL: &str = "replaces";

/// The kind of the store's ACME objects that record EAB keys.
pub const EAB_KIND: &str = "eab";

/// A new EAB key, as `twoway acme eab create` prints it once.
#[derive(Clone, Debug, Serialize)]
pub struct NewEab {
    /// The key id the client sends.
    pub kid: String,
    /// The HMAC-SHA256 key, base64url without padding.
    pub hmac_key: String,
    /// The directory it is for.
    pub directory: String,
    /// The owner accounts bound with it take.
    pub owner: Option<String>,
    /// DNS name globs whose authorizations are valid without a challenge for accounts
    /// bound with it.
    pub preauthorize: Vec<String>,
}

/// Why a CSR does not fit its order (RFC 8555 `badCSR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCsr(pub String);

impl Ca {
    /// The secret EAB keys are derived from, made on first use (32 random bytes, 0600).
    fn eab_secret(&self, create: bool) -> Result<Vec<u8>> {
        let path = self.dir().join(EAB_SECRET_FILE);
        match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => return Ok(b),
            Ok(_) => {
                return Err(Error::Refused(format!(
                    "{} is not 32 bytes: restore it from a backup (EAB keys given out are derived from it)",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
            Err(e) => return Err(Error::io("cannot read", &path)(e)),
        }
        let mut b = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        twoway_files::write_atomic(&path, &b, 0o600)?;
        Ok(b)
    }

    fn eab_derive(secret: &[u8], kid: &str) -> Vec<u8> {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        aws_lc_rs::hmac::sign(&k, format!("twoway-acme-eab:{kid}").as_bytes())
            .as_ref()
            .to_vec()
    }

    /// Makes an external account binding key for `directory`: the key id and the HMAC
    /// key (returned once; the store keeps only the key's SHA-256, the key is derived
    /// from [`EAB_SECRET_FILE`] when a client uses it). An account bound with it takes
    /// `owner` in the inventory. Single use: the first account bound with it uses it up.
    ///
    /// `preauthorize`: DNS name globs (`*` never crosses a dot) for which accounts bound
    /// with the key get authorizations that are valid without a challenge (the
    /// directory's `allow` and `[policy]` still apply); each such authorization is audited.
    pub fn create_eab(
        &self,
        directory: &str,
        owner: Option<String>,
        preauthorize: &[String],
        actor: &str,
    ) -> Result<NewEab> {
        use base64::Engine as _;
        if self.config().acme.get(directory).is_none() {
            return Err(Error::Refused(format!(
                "no ACME directory {directory:?} in ca.toml: add an [[acme.directory]] with name = {directory:?}"
            )));
        }
        let preauthorize: Vec<String> = preauthorize
            .iter()
            .map(|g| g.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        for g in &preauthorize {
            let ok = !g.is_empty()
                && g.len() <= 253
                && g.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '?'))
                && g.split('.').all(|l| !l.is_empty())
                && g.contains('.');
            if !ok {
                return Err(Error::Refused(format!(
                    "--preauthorize {g:?}: give a DNS name glob with at least two labels, such as '*.lab.example.internal' (* never crosses a dot)"
                )));
            }
        }
        let secret = self.eab_secret(true)?;
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        // hex: a key id starting with '-' would read as an option on clients' command lines
        let kid = hex::encode(id);
        let key = Self::eab_derive(&secret, &kid);
        let now = OffsetDateTime::now_utc();
        self.store().acme_insert(&twoway_store::AcmeObject {
            kind: EAB_KIND.into(),
            id: kid.clone(),
            parent: Some(directory.to_string()),
            lookup: None,
            doc: serde_json::json!({
                "directory": directory,
                "owner": owner,
                "key_sha256": twoway_pki::sha256_hex(&key),
                "created_by": actor,
                "created": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "status": "unused",
                "preauthorize": preauthorize,
            }),
            version: 1,
            expires_at: None,
        })?;
        self.store().append_audit(&twoway_store::NewAudit {
            actor: actor.into(),
            action: "acme.eab.create".into(),
            target: kid.clone(),
            details: serde_json::json!({"directory": directory, "owner": owner, "preauthorize": preauthorize}),
            time: now,
        })?;
        Ok(NewEab {
            kid,
            hmac_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key),
            directory: directory.into(),
            owner,
            preauthorize,
        })
    }

    /// The HMAC key of EAB key id `kid` (derived, checked against the stored hash) and
    /// its record; None when no such key was made.
    pub fn eab_key(&self, kid: &str) -> Result<Option<(Vec<u8>, twoway_store::AcmeObject)>> {
        let Some(rec) = self.store().acme_get(EAB_KIND, kid)? else {
            return Ok(None);
        };
        let key = Self::eab_derive(&self.eab_secret(false)?, kid);
        if rec.doc["key_sha256"] != twoway_pki::sha256_hex(&key).as_str() {
            return Err(Error::Refused(format!(
                "{EAB_SECRET_FILE} does not derive EAB key {kid}: it was replaced; restore it from a backup"
            )));
        }
        Ok(Some((key, rec)))
    }

    /// Whether this CA may certify the DNS name `name` at all (`[policy]`, the
    /// intermediate's name constraints): what `newOrder` checks before any challenge.
    pub fn check_dns_name(&self, name: &str) -> Result<()> {
        self.check_names(&[San::Dns(name.to_string())], None)
    }

    /// Issues for a finalized ACME order: the CSR's signature must verify and its names
    /// (SANs, and the CN if any) must be exactly the order's identifiers (else
    /// `Ok(Err(BadCsr))`); then the usual policy, profile and lifetime checks and the
    /// signing, as every path does. The certificate is recorded with source `acme` and
    /// labels naming the account and order; nothing leaves before that is committed.
    pub fn prepare_acme(
        &self,
        csr: &[u8],
        o: &AcmeIssue<'_>,
    ) -> Result<std::result::Result<Outcome, BadCsr>> {
        let csr = match verify_csr(csr) {
            Ok(c) => c,
            Err(e) => return Ok(Err(BadCsr(format!("the CSR does not verify: {e}")))),
        };
        let mut want: Vec<String> = o.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        want.sort();
        want.dedup();
        let mut got = Vec::new();
        for s in &csr.sans {
            match s {
                San::Dns(d) => got.push(d.to_ascii_lowercase()),
                other => {
                    return Ok(Err(BadCsr(format!(
                        "the CSR asks for {other}, which is not an identifier of the order"
                    ))))
                }
            }
        }
        if let Some(cn) = &csr.common_name {
            if !want.contains(&cn.to_ascii_lowercase()) {
                return Ok(Err(BadCsr(format!(
                    "the CSR's common name {cn:?} is not an identifier of the order"
                ))));
            }
            if got.is_empty() {
                got.push(cn.to_ascii_lowercase());
            }
        }
        got.sort();
        got.dedup();
        if got != want {
            return Ok(Err(BadCsr(format!(
                "the CSR names {got:?}, the order {want:?}: they must be the same"
            ))));
        }
        let mut labels = BTreeMap::from([
            ("acme_account".to_string(), o.account.to_string()),
            ("acme_order".to_string(), o.order.to_string()),
        ]);
        let now = OffsetDateTime::now_utc();
        let mut extras = IssueExtras::none(now);
        if let Some(old) = o.replaces {
            labels.insert(REPLACES_LABEL.to_string(), old.serial.clone());
            if old.status == twoway_store::CertStatus::Active {
                extras.supersede = Some(old.fingerprint.clone());
                extras.supersede_audit = Some(twoway_store::NewAudit {
                    actor: o.actor.clone(),
                    action: "cert.revoke".into(),
                    target: old.serial.clone(),
                    details: serde_json::json!({"fingerprint": old.fingerprint, "reason": "superseded", "acme_order": o.order}),
                    time: now,
                });
            }
        }
        let req = IssueRequest {
            profile: o.directory.profile()?,
            sans: want.iter().map(|n| San::Dns(n.clone())).collect(),
            common_name: csr.common_name.map(|c| c.to_ascii_lowercase()),
            ttl: o.directory.ttl()?,
            owner: o.owner.clone(),
            labels,
            location: None,
            actor: o.actor.clone(),
        };
        let mut signed = self.prepare_from(
            &req,
            &csr.public_key_der,
            "cert.acme",
            extras,
            CertSource::Acme,
        )?;
        if let Some(d) = signed.record.audit.details.as_object_mut() {
            d.insert("acme_directory".into(), o.directory.name.clone().into());
            d.insert("acme_account".into(), o.account.into());
            d.insert("acme_order".into(), o.order.into());
        }
        Ok(Ok(Outcome::Unrecorded(Box::new(signed))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_parse_validate_and_match() {
        let s: AcmeSection = toml::from_str(
            "[[directory]]\nname = \"web\"\nallow = [\"*.example.internal\"]\nhttp01_port = 5002\n",
        )
        .unwrap();
        s.validate().unwrap();
        let d = s.get("web").unwrap();
        assert_eq!(d.profile, "server");
        assert!(d.allows("a.example.internal"));
        assert!(!d.allows("a.b.example.internal"));
        assert!(!d.allows("example.org"));
        let bad: AcmeSection = toml::from_str("[[directory]]\nname = \"a/b\"\n").unwrap();
        assert!(bad.validate().unwrap_err().contains("name"));
        let back: AcmeSection = toml::from_str(
            &s.documented_toml()
                .replace("[[acme.directory]]", "[[directory]]"),
        )
        .unwrap();
        assert_eq!(back, s);
    }
}
