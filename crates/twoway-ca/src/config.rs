//! The CA's configuration file, `ca.toml`, kept in the CA directory, in the form it is
//! written; [`crate::CaSettings`] is the same parsed, which everything else reads.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use twoway_pki::{KeyType, NamePolicy};

/// `ca.toml`: everything the CA needs besides its keys and certificates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The CA itself.
    pub ca: CaSection,
    /// Defaults and limits per leaf profile: `server`, `client`, `peer`, `device`, `user`.
    /// A profile without a section is refused.
    #[serde(default = "default_profiles")]
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// Which names this CA may certify.
    #[serde(default)]
    pub policy: NamePolicy,
    /// CRL settings.
    #[serde(default)]
    pub crl: CrlConfig,
    /// The online CA (`twoway ca serve`).
    #[serde(default)]
    pub server: ServerSection,
    /// Which certificates renew without a person (`twoway cert check`).
    #[serde(default)]
    pub renewal: RenewalSection,
    /// The ACME directories of `twoway ca serve` (`[[acme.directory]]`).
    #[serde(default, skip_serializing_if = "crate::acme::AcmeSection::is_empty")]
    pub acme: crate::acme::AcmeSection,
    /// The PKCS#11 token of CA keys kept in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<HsmSection>,
    /// SCEP at `/scep` of `twoway ca serve` (`[scep]`).
    #[serde(default, skip_serializing_if = "crate::scep::ScepSection::is_default")]
    pub scep: crate::scep::ScepSection,
    /// EST enrollment of `twoway ca serve` (`[est]`, `/.well-known/est/`).
    #[serde(default, skip_serializing_if = "crate::est::EstSection::is_empty")]
    pub est: crate::est::EstSection,
}

/// The `[renewal]` section: certificates that automation renews, which `twoway cert check`
/// does not report while they are inside their renewal window (less than three quarters of
/// their life gone). Enrolled certificates (label `renewal=agent`), the online CA's own
/// (`renewal=server`) and any labelled `renewal=auto` count as such without being listed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenewalSection {
    /// Owners whose certificates automation renews (an agent, a cron job, a deploy tool).
    pub auto_owners: Vec<String>,
    /// Profiles whose certificates automation renews (`server`, `client`, `peer`, `device`,
    /// `user`).
    pub auto_profiles: Vec<String>,
}

/// The `[server]` section: settings of `twoway ca serve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on, e.g. `127.0.0.1:9000`.
    pub listen: String,
    /// SANs of the server's own TLS certificate (issued at start from the intermediate).
    pub sans: Vec<String>,
    /// Who may administer the CA over the API (list, revoke any, make tokens): a client
    /// certificate issued by this CA carrying one of these SANs (`URI:spiffe://…/admin`,
    /// `DNS:…`), or whose SHA-256 fingerprint is listed as `sha256:<hex>`. A running
    /// `ca serve` re-reads it on SIGHUP.
    pub admins: Vec<String>,
    /// Who may read the dashboard (`/ui/`) without changing anything: the same forms as
    /// `admins` (a SAN of a client certificate issued by this CA, or `sha256:<hex>`).
    /// Administrators may read it too. A running `ca serve` re-reads it on SIGHUP.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auditors: Vec<String>,
    /// Validity of workload certificates from enrollment tokens when the token says none.
    pub workload_ttl: String,
    /// Enrollment requests allowed per second and client address (token bucket rate).
    pub enroll_rate: u32,
    /// Burst of enrollment requests allowed per client address.
    pub enroll_burst: u32,
    /// Validity (nextUpdate) of OCSP responses.
    pub ocsp_validity: String,
    /// Database URL: `sqlite://PATH` (default: the CA directory's inventory.db) or
    /// `postgres://user@host:port/db` for several replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Connections each listener (HTTPS, plain HTTP) holds at once. When it is full, the
    /// connection idle longest is closed to make room; a new one is refused only when every
    /// connection is busy with a request.
    pub max_connections: usize,
    /// Connections one client address (an IPv4 address, an IPv6 /64) may hold on each
    /// listener; past it, that address's connection idle longest is closed to make room.
    pub max_connections_per_address: usize,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: String,
    /// Time a new connection has, from accept, to send its first request (the TLS
    /// handshake included).
    pub first_request_timeout: String,
    /// Time a kept-alive connection may stay idle between requests.
    pub idle_timeout: String,
    /// How often `ca serve` signs a checkpoint of the audit log's head (`twoway audit
    /// checkpoint`) and writes it to `audit_checkpoint_dir`, when the log has grown since
    /// the last one; `off` never.
    pub audit_checkpoint_interval: String,
    /// Where those checkpoints go (`audit-checkpoint-<seq>.json`), relative to the CA
    /// directory unless absolute. Copy them off the machine: a checkpoint kept beside the
    /// log it vouches for proves less.
    pub audit_checkpoint_dir: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:9000".into(),
            sans: vec!["DNS:localhost".into(), "IP:127.0.0.1".into()],
            admins: Vec::new(),
            auditors: Vec::new(),
            workload_ttl: "24h".into(),
            enroll_rate: 5,
            enroll_burst: 20,
            ocsp_validity: "1h".into(),
            database: None,
            max_connections: 4096,
            max_connections_per_address: 256,
            handshake_timeout: "10s".into(),
            first_request_timeout: "10s".into(),
            idle_timeout: "30s".into(),
            audit_checkpoint_interval: "1h".into(),
            audit_checkpoint_dir: "audit-checkpoints".into(),
        }
    }
}

/// The `[ca]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// The organisation name, used in the CA certificates' subjects.
    pub name: String,
    /// The key type of the CA keys (`p256`, `p384`, `ed25519`, `rsa2048`, `rsa3072`, `rsa4096`).
    pub key_type: KeyType,
    /// Whether the CA keys are passphrase-encrypted.
    #[serde(default)]
    pub encrypted_keys: bool,
    /// The CA's public base URL; when set, leaves carry `<url>/crl` as CRL distribution point
    /// and `<url>/ocsp` as OCSP responder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The SPIFFE trust domain of this CA, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Where the intermediate key lives when it is not `intermediate.key`: an RFC 7512
    /// PKCS#11 URI (`pkcs11:token=ca;object=intermediate`), the token named by `[hsm]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_key: Option<String>,
    /// Where the root key lives when it is not `root.key`: a PKCS#11 URI in the same token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key: Option<String>,
}

/// The `[hsm]` section: the PKCS#11 library and the token's user PIN, for CA keys kept in a
/// token (`[ca] intermediate_key = "pkcs11:…"`). The PIN is never written here: it comes
/// from a file (`pin_file`, readable by the CA's user only) or an environment variable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// The PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: String,
    /// A file holding the user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<String>,
    /// An environment variable holding the user PIN (when `pin_file` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_env: Option<String>,
}

/// Per-profile settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Validity when `--ttl` is not given, e.g. `90d`.
    pub default_ttl: String,
    /// The longest validity this profile allows, e.g. `397d`.
    pub max_ttl: String,
}

/// The `[crl]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlConfig {
    /// How long a CRL is valid (its nextUpdate), e.g. `24h`.
    pub next_update: String,
    /// Delta CRLs (RFC 5280 §5.2.4): complete CRLs name `<url>/crl/delta` (Freshest CRL) and
    /// `ca serve` re-signs only the delta after a revocation, the complete CRL at half its
    /// validity.
    #[serde(default)]
    pub delta: bool,
    /// How long a delta CRL is valid, e.g. `1h`.
    #[serde(default = "default_delta_next_update")]
    pub delta_next_update: String,
}

fn default_delta_next_update() -> String {
    "1h".into()
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            next_update: "24h".into(),
            delta: false,
            delta_next_update: default_delta_next_update(),
        }
    }
}

fn default_profiles() -> BTreeMap<String, ProfileConfig> {
    let p = |d: &str, m: &str| ProfileConfig {
        default_ttl: d.into(),
        max_ttl: m.into(),
    };
    BTreeMap::from([
        ("server".to_string(), p("90d", "397d")),
        ("client".to_string(), p("30d", "397d")),
        ("peer".to_string(), p("30d", "397d")),
        ("device".to_string(), p("365d", "825d")),
        ("user".to_string(), p("365d", "397d")),
    ])
}

impl CaConfig {
    /// A config with default profiles.
    pub fn new(ca: CaSection, policy: NamePolicy) -> Self {
        CaConfig {
            ca,
            profiles: default_profiles(),
            policy,
            crl: CrlConfig::default(),
            server: ServerSection::default(),
            renewal: RenewalSection::default(),
            acme: crate::acme::AcmeSection::default(),
            hsm: None,
            scep: crate::scep::ScepSection::default(),
            est: crate::est::EstSection::default(),
        }
    }

    /// The config as a TOML text with a comment on every key.
    pub fn to_documented_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let list = |v: &Option<Vec<String>>| {
            v.as_ref().map(|l| {
                format!(
                    "[{}]",
                    l.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
                )
            })
        };
        let mut out = String::new();
        out.push_str(
            "# twoway CA configuration. Every key is documented; edit and keep it valid\n",
        );
        out.push_str(
            "# (`twoway cert list` or any command re-reads it and says what is wrong).\n\n",
        );
        out.push_str("[ca]\n# Organisation name used in the CA certificates' subjects.\n");
        out.push_str(&format!("name = {}\n", q(&self.ca.name)));
        out.push_str(
            "# Key type of the CA keys: p256, p384, ed25519, rsa2048, rsa3072, rsa4096.\n",
        );
        out.push_str(&format!("key_type = {}\n", q(self.ca.key_type.as_str())));
        out.push_str(
            "# Whether root.key and intermediate.key are passphrase-encrypted (PKCS#8 PBES2).\n",
        );
        out.push_str(&format!("encrypted_keys = {}\n", self.ca.encrypted_keys));
        out.push_str("# Public base URL of the CA. When set, leaves carry <url>/crl as CRL distribution\n# point and <url>/ocsp as OCSP responder.\n");
        match &self.ca.url {
            Some(u) => out.push_str(&format!("url = {}\n", q(u))),
            None => out.push_str("# url = \"https://ca.example.internal:9000\"\n"),
        }
        out.push_str(
            "# SPIFFE trust domain of this CA (informational; URIs are limited by [policy] uri).\n",
        );
        match &self.ca.trust_domain {
            Some(t) => out.push_str(&format!("trust_domain = {}\n", q(t))),
            None => out.push_str("# trust_domain = \"example.org\"\n"),
        }
        out.push_str("# Where the intermediate key lives when not in intermediate.key: a PKCS#11 URI of a\n# key in the token of [hsm] (RFC 7512; token= and object= labels).\n");
        match &self.ca.intermediate_key {
            Some(u) => out.push_str(&format!("intermediate_key = {}\n", q(u))),
            None => out.push_str("# intermediate_key = \"pkcs11:token=ca;object=intermediate\"\n"),
        }
        out.push_str("# Where the root key lives when not in root.key: a PKCS#11 URI of a key in the same\n# token (`twoway crl --root` signs the root's CRL there).\n");
        match &self.ca.root_key {
            Some(u) => out.push_str(&format!("root_key = {}\n", q(u))),
            None => out.push_str("# root_key = \"pkcs11:token=ca;object=root\"\n"),
        }
        out.push_str("\n# Validity per profile: default_ttl when --ttl is not given, max_ttl the longest allowed.\n# Units: s, m, h, d, w, y (365 days).\n");
        for (name, p) in &self.profiles {
            out.push_str(&format!(
                "[profiles.{name}]\ndefault_ttl = {}\nmax_ttl = {}\n",
                q(&p.default_ttl),
                q(&p.max_ttl)
            ));
        }
        out.push_str("\n# Name policy: which SANs this CA may certify. A key that is absent leaves that SAN\n# type unrestricted; a list (even empty) allows only names that match an entry.\n[policy]\n");
        out.push_str("# DNS: \"example.internal\" allows it and every name below; globs like \"*.svc.example.internal\"\n# match one pattern (* stays within a label).\n");
        match list(&self.policy.dns) {
            Some(l) => out.push_str(&format!("dns = {l}\n")),
            None => out.push_str("# dns = [\"example.internal\"]\n"),
        }
        out.push_str("# IP ranges in CIDR form.\n");
        match list(&self.policy.ip) {
            Some(l) => out.push_str(&format!("ip = {l}\n")),
            None => out.push_str("# ip = [\"10.0.0.0/8\"]\n"),
        }
        out.push_str("# URI globs (* crosses /), e.g. SPIFFE IDs of one trust domain.\n");
        match list(&self.policy.uri) {
            Some(l) => out.push_str(&format!("uri = {l}\n")),
            None => out.push_str("# uri = [\"spiffe://example.org/*\"]\n"),
        }
        out.push_str("# E-mail domains (\"example.org\") or globs (\"*@example.org\").\n");
        match list(&self.policy.email) {
            Some(l) => out.push_str(&format!("email = {l}\n")),
            None => out.push_str("# email = [\"example.org\"]\n"),
        }
        out.push_str("\n[crl]\n# How long a CRL from `twoway crl` is valid (its nextUpdate).\n");
        out.push_str(&format!("next_update = {}\n", q(&self.crl.next_update)));
        out.push_str("# Delta CRLs (RFC 5280 5.2.4) for large fleets: complete CRLs then name <url>/crl/delta\n# (Freshest CRL) and `ca serve` re-signs only the small delta after a revocation, the\n# complete CRL at half its validity. `twoway crl --delta --base FILE` signs one by hand.\n");
        out.push_str(&format!("delta = {}\n", self.crl.delta));
        out.push_str("# How long a delta CRL is valid (its nextUpdate).\n");
        out.push_str(&format!(
            "delta_next_update = {}\n",
            q(&self.crl.delta_next_update)
        ));
        let sv = &self.server;
        let qlist = |l: &[String]| {
            format!(
                "[{}]",
                l.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        out.push_str("\n# The online CA, `twoway ca serve` (HTTPS API, enrollment, OCSP, CRL). Flags override.\n[server]\n");
        out.push_str("# Address to listen on.\n");
        out.push_str(&format!("listen = {}\n", q(&sv.listen)));
        out.push_str(
            "# SANs of the server's own TLS certificate, issued from the intermediate at start.\n",
        );
        out.push_str(&format!("sans = {}\n", qlist(&sv.sans)));
        out.push_str("# API administrators: SANs of client certificates issued by this CA (\"URI:spiffe://example.org/admin\")\n# or \"sha256:<fingerprint>\" of one certificate. A running `ca serve` re-reads this list on SIGHUP.\n");
        out.push_str(&format!("admins = {}\n", qlist(&sv.admins)));
        out.push_str(
            "# Dashboard readers (/ui/, read-only): the same forms as admins. Re-read on SIGHUP.\n",
        );
        out.push_str(&format!("auditors = {}\n", qlist(&sv.auditors)));
        out.push_str("# Validity of workload certificates enrolled with a token that sets none.\n");
        out.push_str(&format!("workload_ttl = {}\n", q(&sv.workload_ttl)));
        out.push_str(
            "# Enrollment rate limit per client address: requests per second, and burst.\n",
        );
        out.push_str(&format!(
            "enroll_rate = {}\nenroll_burst = {}\n",
            sv.enroll_rate, sv.enroll_burst
        ));
        out.push_str("# Validity (nextUpdate) of OCSP responses.\n");
        out.push_str(&format!("ocsp_validity = {}\n", q(&sv.ocsp_validity)));
        out.push_str("# Connections each listener holds, and each client address (IPv4 address, IPv6 /64)\n# on it. When full, the connection idle longest is closed to make room.\n");
        out.push_str(&format!(
            "max_connections = {}\nmax_connections_per_address = {}\n",
            sv.max_connections, sv.max_connections_per_address
        ));
        out.push_str("# Deadlines: the TLS handshake; the first request of a connection (from accept);\n# the wait for the next request on a kept-alive connection.\n");
        out.push_str(&format!(
            "handshake_timeout = {}\nfirst_request_timeout = {}\nidle_timeout = {}\n",
            q(&sv.handshake_timeout),
            q(&sv.first_request_timeout),
            q(&sv.idle_timeout)
        ));
        out.push_str("# Audit checkpoints signed by `ca serve` when the log has grown (\"off\": never), and\n# where they are written (relative to the CA directory); copy them elsewhere.\n");
        out.push_str(&format!(
            "audit_checkpoint_interval = {}\naudit_checkpoint_dir = {}\n",
            q(&sv.audit_checkpoint_interval),
            q(&sv.audit_checkpoint_dir)
        ));
        out.push_str("# Database: sqlite://PATH (default: inventory.db here) or postgres://user@host:5432/db.\n");
        match &sv.database {
            Some(d) => out.push_str(&format!("database = {}\n", q(d))),
            None => {
                out.push_str("# database = \"postgres://twoway@db.example.internal:5432/twoway\"\n")
            }
        }
        let rn = &self.renewal;
        out.push_str("\n# Certificates that automation renews: `twoway cert check` reports them only once\n# three quarters of their life have passed without a renewal. Enrolled certificates\n# (label renewal=agent), the online CA's own (renewal=server) and certificates labelled\n# renewal=auto count without being listed here.\n[renewal]\n");
        out.push_str(
            "# Owners whose certificates an agent or a job renews, e.g. [\"team-batch\"].\n",
        );
        out.push_str(&format!("auto_owners = {}\n", qlist(&rn.auto_owners)));
        out.push_str("# Profiles whose certificates are renewed that way, e.g. [\"client\"].\n");
        out.push_str(&format!("auto_profiles = {}\n", qlist(&rn.auto_profiles)));
        out.push_str(&self.acme.documented_toml());
        if let Some(h) = &self.hsm {
            out.push_str("\n# The PKCS#11 token of CA keys kept in one ([ca] intermediate_key). The user PIN is read\n# from pin_file (keep it 0600) or from the environment variable pin_env, never from here.\n[hsm]\n");
            out.push_str("# The PKCS#11 library.\n");
            out.push_str(&format!("module = {}\n", q(&h.module)));
            match (&h.pin_file, &h.pin_env) {
                (Some(f), _) => out.push_str(&format!("pin_file = {}\n", q(f))),
                (None, Some(e)) => out.push_str(&format!("pin_env = {}\n", q(e))),
                (None, None) => out.push_str(
                    "# pin_file = \"/etc/twoway/hsm.pin\"\n# pin_env = \"TWOWAY_HSM_PIN\"\n",
                ),
            }
        }
        if !self.scep.is_default() {
            out.push_str(&self.scep.documented_toml());
        }
        out.push_str(&self.est.documented_toml());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_toml_roundtrips() {
        let cfg = CaConfig::new(
            CaSection {
                name: "Example \"Corp\"".into(),
                key_type: KeyType::P256,
                encrypted_keys: true,
                url: Some("https://ca.example.internal:9000".into()),
                trust_domain: None,
                intermediate_key: None,
                root_key: None,
            },
            NamePolicy {
                dns: Some(vec!["example.internal".into()]),
                ..Default::default()
            },
        );
        let text = cfg.to_documented_toml();
        let back: CaConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        assert!(crate::CaSettings::parse(back).is_ok());
    }
}
