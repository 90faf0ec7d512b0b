//! `ca.toml` parsed once: [`CaSettings`] holds every duration, name, administrator and the
//! database in the type it is used as, built when the file is loaded. [`CaConfig`] stays the
//! file's own form (what `ca init` writes and `ca show --json` prints).

use crate::{CaConfig, Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use time::Duration;
use twoway_pki::{parse_duration, Profile, San};
use twoway_store::{CertRecord, Store};

/// The settings of a CA, parsed from its `ca.toml`.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// The file as written.
    pub raw: CaConfig,
    /// `[profiles.*]` by profile name.
    profiles: BTreeMap<String, ProfileSettings>,
    /// `[crl] next_update`.
    pub crl_next_update: Duration,
    /// `[crl] delta_next_update`.
    pub crl_delta_next_update: Duration,
    /// `[server]`.
    pub server: ServerSettings,
}

/// One `[profiles.NAME]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileSettings {
    /// Validity when none is asked for.
    pub default_ttl: Duration,
    /// The longest validity allowed.
    pub max_ttl: Duration,
    /// `max_ttl` as written in ca.toml, for messages.
    pub max_ttl_text: String,
}

/// The `[server]` section, parsed (the settings `twoway ca serve` and enrollment use).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// SANs of the server's own TLS certificate.
    pub sans: Vec<San>,
    /// Who may administer the CA over the API.
    pub admins: Admins,
    /// Who may read the dashboard without changing anything (`[server] auditors`).
    pub auditors: Admins,
    /// Validity of certificates enrolled with a token that sets none.
    pub workload_ttl: Duration,
    /// Validity of OCSP responses.
    pub ocsp_validity: Duration,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a new connection has to send its first request.
    pub first_request_timeout: Duration,
    /// Time a kept-alive connection may stay idle.
    pub idle_timeout: Duration,
    /// The inventory, when not the CA directory's `inventory.db`.
    pub database: Option<Database>,
    /// How often `ca serve` writes an audit checkpoint; `None`: never.
    pub audit_checkpoint_interval: Option<Duration>,
}

impl CaSettings {
    /// Reads and parses `ca.toml`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
        let raw: CaConfig = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(raw).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses a configuration; the error names the key that is wrong.
    pub fn parse(raw: CaConfig) -> std::result::Result<Self, String> {
        let mut profiles = BTreeMap::new();
        for (name, p) in &raw.profiles {
            name.parse::<Profile>()
                .map_err(|e| format!("[profiles.{name}]: {e}"))?;
            let default_ttl = parse_duration(&p.default_ttl)
                .map_err(|e| format!("[profiles.{name}] default_ttl: {e}"))?;
            let max_ttl = parse_duration(&p.max_ttl)
                .map_err(|e| format!("[profiles.{name}] max_ttl: {e}"))?;
            if default_ttl > max_ttl {
                return Err(format!(
                    "[profiles.{name}]: default_ttl is longer than max_ttl"
                ));
            }
            profiles.insert(
                name.clone(),
                ProfileSettings {
                    default_ttl,
                    max_ttl,
                    max_ttl_text: p.max_ttl.clone(),
                },
            );
        }
        let crl_next_update =
            parse_duration(&raw.crl.next_update).map_err(|e| format!("[crl] next_update: {e}"))?;
        let crl_delta_next_update = parse_duration(&raw.crl.delta_next_update)
            .map_err(|e| format!("[crl] delta_next_update: {e}"))?;
        raw.policy
            .validate()
            .map_err(|e| format!("[policy]: {e}"))?;
        let sv = &raw.server;
        let workload_ttl =
            parse_duration(&sv.workload_ttl).map_err(|e| format!("[server] workload_ttl: {e}"))?;
        let ocsp_validity = parse_duration(&sv.ocsp_validity)
            .map_err(|e| format!("[server] ocsp_validity: {e}"))?;
        let sans = sv
            .sans
            .iter()
            .map(|s| s.parse::<San>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("[server] sans: {e}"))?;
        let people = |key: &str, list: &[String]| {
            Admins::parse(list).map_err(|e| match e {
                BadAdmin::Fingerprint(a) => {
                    format!("[server] {key}: {a:?} is not sha256:<64 hex digits>")
                }
                BadAdmin::San(e) => format!("[server] {key}: {e}"),
            })
        };
        let admins = people("admins", &sv.admins)?;
        let auditors = people("auditors", &sv.auditors)?;
        for p in &raw.renewal.auto_profiles {
            p.parse::<Profile>()
                .map_err(|e| format!("[renewal] auto_profiles: {e}"))?;
        }
        let mut deadlines = [Duration::ZERO; 3];
        for (slot, (key, v)) in deadlines.iter_mut().zip([
            ("handshake_timeout", &sv.handshake_timeout),
            ("first_request_timeout", &sv.first_request_timeout),
            ("idle_timeout", &sv.idle_timeout),
        ]) {
            let d = parse_duration(v).map_err(|e| format!("[server] {key}: {e}"))?;
            if d <= Duration::ZERO {
                return Err(format!("[server] {key} must be longer than zero"));
            }
            *slot = d;
        }
        if sv.max_connections == 0 || sv.max_connections_per_address == 0 {
            return Err(
                "[server] max_connections and max_connections_per_address must be at least 1"
                    .into(),
            );
        }
        if sv.enroll_rate == 0 || sv.enroll_burst == 0 {
            return Err("[server] enroll_rate and enroll_burst must be at least 1".into());
        }
        raw.acme.validate()?;
        raw.scep.validate()?;
        raw.est.validate()?;
        if let Some(u) = &raw.ca.url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err("[ca] url must start with https:// or http://".into());
            }
        }
        let database = sv
            .database
            .as_deref()
            .map(|d| d.parse::<Database>())
            .transpose()
            .map_err(|e| format!("[server] database: {e}"))?;
        let [handshake_timeout, first_request_timeout, idle_timeout] = deadlines;
        let audit_checkpoint_interval =
            match sv.audit_checkpoint_interval.trim() {
                "off" => None,
                v => match parse_duration(v) {
                    Ok(d) if d > Duration::ZERO => Some(d),
                    Ok(_) => return Err(
                        "[server] audit_checkpoint_interval: must be longer than 0 s, or \"off\""
                            .into(),
                    ),
                    Err(e) => {
                        return Err(format!(
                            "[server] audit_checkpoint_interval: {e} (or \"off\")"
                        ))
                    }
                },
            };
        let server = ServerSettings {
            sans,
            admins,
            auditors,
            workload_ttl,
            ocsp_validity,
            handshake_timeout,
            first_request_timeout,
            idle_timeout,
            database,
            audit_checkpoint_interval,
        };
        Ok(CaSettings {
            raw,
            profiles,
            crl_next_update,
            crl_delta_next_update,
            server,
        })
    }

    /// The settings of a profile, or a refusal naming the section to add.
    pub fn profile(&self, p: Profile) -> Result<&ProfileSettings> {
        self.profiles.get(p.as_str()).ok_or_else(|| {
            Error::Refused(format!(
                "profile {p} is not enabled in ca.toml: add a [profiles.{p}] section"
            ))
        })
    }
}

/// One administrator: a certificate fingerprint, or a SAN a client certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Admin {
    /// `sha256:<hex>`, lower case.
    Fingerprint(String),
    /// A SAN of a client (or peer) certificate.
    San(San),
}

/// Why an administrator entry does not parse.
#[derive(Debug)]
#[non_exhaustive]
pub enum BadAdmin {
    /// `sha256:` followed by something else than 64 hex digits (the entry).
    Fingerprint(String),
    /// Not a SAN.
    San(twoway_pki::Error),
}

/// The administrators of the online CA (`[server] admins`, `--admin`), parsed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admins {
    /// Each entry as written, and parsed.
    entries: Vec<(String, Admin)>,
}

impl Admins {
    /// Parses entries: `sha256:<64 hex digits>` or a SAN such as `URI:spiffe://…/admin`.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> std::result::Result<Self, BadAdmin> {
        let mut admins = Admins::default();
        for a in list {
            admins.push(a.as_ref())?;
        }
        Ok(admins)
    }

    /// Adds one entry unless the same text is there already.
    pub fn push(&mut self, a: &str) -> std::result::Result<(), BadAdmin> {
        let parsed = match a.strip_prefix("sha256:") {
            Some(fp) if fp.len() == 64 && fp.chars().all(|c| c.is_ascii_hexdigit()) => {
                Admin::Fingerprint(fp.to_ascii_lowercase())
            }
            Some(_) => return Err(BadAdmin::Fingerprint(a.to_string())),
            None => Admin::San(a.parse::<San>().map_err(BadAdmin::San)?),
        };
        if !self.entries.iter().any(|(t, _)| t == a) {
            self.entries.push((a.to_string(), parsed));
        }
        Ok(())
    }

    /// Adds every entry of `other` that is not here yet.
    pub fn extend(&mut self, other: &Admins) {
        for (text, a) in &other.entries {
            if !self.entries.iter().any(|(t, _)| t == text) {
                self.entries.push((text.clone(), a.clone()));
            }
        }
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as written.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(t, _)| t.as_str())
    }

    /// True when `rec` (a presented, authenticated certificate) is an administrator: its
    /// fingerprint is listed, or it is a client (or peer) certificate carrying a listed SAN.
    pub fn contains(&self, rec: &CertRecord) -> bool {
        let client = rec.profile == "client" || rec.profile == "peer";
        self.entries.iter().any(|(_, a)| match a {
            Admin::Fingerprint(fp) => fp.eq_ignore_ascii_case(&rec.fingerprint),
            Admin::San(_) if !client => false,
            Admin::San(want) => rec
                .sans
                .iter()
                .any(|s| s.parse::<San>().is_ok_and(|s| &s == want)),
        })
    }
}

/// Where the inventory is: `sqlite://PATH` or `postgres://user[:password]@host:port/db`.
/// Its `Display` and `Debug` leave the password out.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (several CA replicas share it).
    Postgres(String),
}

impl std::str::FromStr for Database {
    type Err = String;

    fn from_str(url: &str) -> std::result::Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_string()));
        }
        Err(format!(
            "{:?}: use sqlite://PATH or postgres://user@host:port/db",
            redact(url)
        ))
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

impl Database {
    /// The inventory of the CA in `dir` with `database` (`--database`, `[server] database`),
    /// else its `inventory.db`: the one place the engine is chosen.
    pub fn for_ca(dir: &Path, database: Option<&Database>) -> Database {
        match database {
            Some(d) => d.clone(),
            None => Database::Sqlite(dir.join(crate::layout::DATABASE)),
        }
    }

    /// True for SQLite, whose reads cost microseconds (no round trip).
    pub fn is_local(&self) -> bool {
        matches!(self, Database::Sqlite(_))
    }

    /// Opens the inventory. A new SQLite file is made 0600.
    pub fn open(&self) -> Result<Box<dyn Store>> {
        match self {
            Database::Sqlite(path) => {
                let existed = path.exists();
                let store =
                    twoway_store::SqliteStore::open(path).map_err(|source| Error::Inventory {
                        engine: "SQLite",
                        target: path.display().to_string(),
                        source,
                    })?;
                if !existed {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                }
                Ok(Box::new(store))
            }
            Database::Postgres(url) => {
                let store = twoway_store::PostgresStore::connect(url).map_err(|source| {
                    Error::Inventory {
                        engine: "PostgreSQL",
                        target: redact(url),
                        source,
                    }
                })?;
                Ok(Box::new(store))
            }
        }
    }
}

/// The URL without its password or parameters, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparsable URL)".into();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let host = host.split_once('?').map_or(host, |(h, _)| h);
    match auth {
        Some(a) => {
            let user = a.split_once(':').map_or(a, |(u, _)| u);
            format!("{scheme}://{user}@{host}")
        }
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_the_password_and_parameters() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x?password=p"),
            "postgres://u@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact("nonsense"), "(unparsable URL)");
        let db: Database = "postgres://u:secret@db/x".parse().unwrap();
        assert!(!format!("{db} {db:?}").contains("secret"));
        assert!("mysql://u:secret@db/x"
            .parse::<Database>()
            .unwrap_err()
            .contains("use sqlite://PATH"));
    }

    #[test]
    fn admins_are_parsed_once_and_match_by_fingerprint_or_client_san() {
        let fp = "ab".repeat(32);
        let admins = Admins::parse(&[
            format!("sha256:{}", fp.to_uppercase()),
            "URI:spiffe://example.org/admin".into(),
        ])
        .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let rec = |profile: &str, sans: &[&str], fingerprint: &str| CertRecord {
            serial: "01".into(),
            fingerprint: fingerprint.into(),
            subject: String::new(),
            issuer: String::new(),
            common_name: None,
            sans: sans.iter().map(|s| s.to_string()).collect(),
            profile: profile.into(),
            key_type: "p256".into(),
            not_before: now,
            not_after: now,
            owner: None,
            labels: Default::default(),
            location: None,
            status: twoway_store::CertStatus::Active,
            revoked_at: None,
            revocation_reason: None,
            source: twoway_store::CertSource::Issued,
            recorded_at: now,
            pem: String::new(),
        };
        assert!(admins.contains(&rec("server", &[], &fp)));
        assert!(admins.contains(&rec("client", &["URI:spiffe://example.org/admin"], "00")));
        assert!(!admins.contains(&rec("server", &["URI:spiffe://example.org/admin"], "00")));
        assert!(!admins.contains(&rec("client", &["URI:spiffe://example.org/x"], "00")));
        assert!(matches!(
            Admins::parse(&["sha256:12"]),
            Err(BadAdmin::Fingerprint(_))
        ));
        assert!(matches!(
            Admins::parse(&["IP:not-an-address"]),
            Err(BadAdmin::San(_))
        ));
    }
}
