//! The proxy configuration: the TOML file's shape (every CLI flag has a key here) and its
//! validation into the types the runtime uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use twoway_tls::Policy;

use crate::http::target;
use crate::ProxyError;

/// The whole file: process-wide settings plus any number of listeners.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Worker threads, each running its own single-threaded runtime (default: one per CPU
    /// core). With one, everything runs on the main thread.
    pub workers: Option<usize>,
    /// Address of the admin listener serving `/metrics`, `/healthz` and `/ready`
    /// (plain HTTP; keep it on loopback). No admin listener when absent.
    pub admin: Option<String>,
    /// Seconds to let open connections finish after SIGTERM/SIGINT before closing them.
    pub drain_timeout_secs: Option<f64>,
    /// Seconds between checks of the certificate, key, CA, CRL and config files for
    /// changes (content hash, so in-place writes are seen). Default 1.
    pub reload_interval_secs: Option<f64>,
    /// Server-mode listeners: terminate mTLS and forward to a plaintext backend.
    pub server: Vec<ServerListenerConfig>,
    /// Client-mode listeners: accept plaintext locally and originate mTLS to a target.
    pub client: Vec<ClientListenerConfig>,
}

/// One server-mode listener (`twoway proxy server`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerListenerConfig {
    /// Name used in logs and metrics (default: the listen address).
    pub name: Option<String>,
    /// Address to accept mTLS on, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// Where to forward: `HOST:PORT` over TCP, or `unix:/path/to.sock`.
    pub backend: String,
    /// PEM certificate chain presented to clients (leaf first). Not with `[server.enroll]`.
    pub cert: PathBuf,
    /// PEM private key of the certificate (PKCS#8, SEC1 or PKCS#1). Not with
    /// `[server.enroll]`.
    pub key: PathBuf,
    /// PEM bundle of the CAs client certificates must chain to. With `[server.enroll]` it
    /// defaults to the enrolling CA's root.
    pub client_ca: PathBuf,
    /// CRLs consulted on every handshake: file paths (PEM or DER) or `http://` URLs.
    pub crl: Vec<String>,
    /// Seconds between fetches of CRL URLs (default 300).
    pub crl_refresh_secs: Option<f64>,
    /// What a CRL past its `nextUpdate` does: `"refuse"` (default) refuses the certificates
    /// of its issuer once `crl_stale_grace_secs` have passed since `nextUpdate`, warning
    /// until then; `"warn"` keeps accepting them, with a warning in the log.
    pub crl_stale: Option<String>,
    /// Seconds after a CRL's `nextUpdate` before `crl_stale = "refuse"` refuses (default 3600).
    pub crl_stale_grace_secs: Option<f64>,
    // ---- OCSP (docs/proxy.md, "OCSP") ----
    /// Ask the client certificate's OCSP responder (its AIA URL, or `ocsp_url`) about each
    /// client before the backend is dialled; answers are cached until their `nextUpdate`. Off by default.
    pub ocsp: bool,
    /// OCSP responder URL (`http://…`) used instead of the one in the certificate.
    pub ocsp_url: Option<String>,
    /// When no usable answer can be had (responder unreachable, slow, or answering
    /// something invalid) and no cached good answer is current: accept the certificate
    /// anyway (counted and logged as a soft pass) instead of refusing it (default false).
    pub ocsp_fail_open: bool,
    /// A certificate naming no OCSP responder (and no `ocsp_url`): `"allow"` (default,
    /// counted) or `"refuse"`.
    pub ocsp_no_url: Option<String>,
    /// Seconds to wait for the responder (default 2).
    pub ocsp_timeout_secs: Option<f64>,
    /// Seconds a failed OCSP query is remembered before the responder is asked again for
    /// that certificate (default 5).
    pub ocsp_error_cache_secs: Option<f64>,
    /// Get the certificate from a twoway CA instead of files: an agent inside the proxy
    /// enrolls with a one-time token, keeps the key in memory and renews it before expiry.
    pub enroll: Option<EnrollConfig>,
    /// Identity rules for the whole listener (checked during the handshake). Empty allows
    /// every client with a valid certificate. Syntax: `spiffe://…`, `uri:`, `dns:`, `ip:`,
    /// `cn:`, `ou:`, `issuer:SHA256HEX`, with `*`/`?` globs.
    pub allow: Vec<String>,
    /// HTTP mode: terminate HTTP/1.1 and HTTP/2, pool keep-alive connections to the backend,
    /// authorize per route and add identity headers. TCP mode (bytes as-is) when false.
    pub http: bool,
    /// HTTP mode only: per-route rules, first match wins. Once any route exists, a request
    /// that matches none is denied with 403.
    pub route: Vec<RouteConfig>,
    /// HTTP mode only: compare route prefixes with paths ignoring ASCII case, for backends
    /// that fold case (IIS, some frameworks), so `/ADMIN` falls under the `/admin` route.
    pub case_insensitive_paths: bool,
    /// HTTP mode only: peers (addresses or CIDR ranges, e.g. `10.0.0.0/8`) whose
    /// `X-Forwarded-For` and `Forwarded` headers are passed on, with the peer's address
    /// appended; from any other client they are removed and replaced by its address.
    pub trusted_proxies: Vec<String>,
    /// TCP mode only: send a PROXY protocol v2 header to the backend carrying the client
    /// address and, as TLVs, the TLS details and the peer identity.
    pub proxy_protocol: bool,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    pub tls12: bool,
    /// Allow session resumption (off by default: every connection is a full handshake
    /// with its client certificate checked against the current CA, CRLs and rules).
    pub resumption: bool,
    /// Seconds a client has to complete the TLS handshake (default 10).
    pub handshake_timeout_secs: Option<f64>,
    /// Seconds without a byte in either direction before a connection is closed
    /// (default 300).
    pub idle_timeout_secs: Option<f64>,
    /// Most concurrent connections (default 10000). When full, the connection idle longest
    /// (a handshake not finished, or an HTTP connection with no request in progress) is
    /// closed to make room; only when every one is busy is the new one refused.
    pub max_connections: Option<usize>,
    /// Most concurrent connections from one client address (an IPv4 address or an IPv6
    /// /64; default 1024), with the same shedding of that address's idle ones: one address
    /// cannot take the whole listener with connections that never finish their handshake.
    pub max_connections_per_address: Option<usize>,
    // -- the backend's protocol (HTTP mode) --
    /// HTTP mode only: the protocol spoken to the backend, whatever the client speaks:
    /// `"http1"` (default: HTTP/1.1 keep-alive), `"h2c"` (HTTP/2 over plain TCP with prior
    /// knowledge, e.g. a gRPC server) or `"h2"` (HTTP/2 over TLS, ALPN `h2`; the backend's
    /// certificate is verified against `backend_ca`).
    pub backend_protocol: Option<String>,
    /// `backend_protocol = "h2"` only: PEM bundle of the CAs the backend's certificate
    /// chains to (required).
    pub backend_ca: PathBuf,
    /// `backend_protocol = "h2"` only: the name the backend's certificate must carry
    /// (default: the backend's host; required for a `unix:` backend).
    pub backend_server_name: Option<String>,
}

/// `[server.enroll]`: the listener's certificate comes from a twoway CA (`twoway ca serve`).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrollConfig {
    /// The CA's URL, `https://host:port`.
    pub ca: String,
    /// SHA-256 fingerprint of the CA's root certificate (hex, colons allowed): how the
    /// proxy knows it talks to the right CA before it has any certificate.
    pub ca_fingerprint: String,
    /// The one-time enrollment token (`twoway token create`). Prefer `token_file`.
    pub token: Option<String>,
    /// A file whose first line is the token.
    pub token_file: Option<PathBuf>,
    /// Names to ask for, e.g. `DNS:api.example.internal` (at least one; the token must
    /// allow each).
    pub san: Vec<String>,
    /// Key type of the keys made here: p256 (default), p384, ed25519, rsa2048, rsa3072,
    /// rsa4096.
    pub key_type: Option<String>,
    /// Keep the key (0600) and certificates in this directory instead of only in memory,
    /// so a restarted proxy renews what it has instead of needing a new token.
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait at start for the first certificate before giving up (default 60).
    pub timeout_secs: Option<f64>,
}

impl std::fmt::Debug for EnrollConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollConfig")
            .field("ca", &self.ca)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("san", &self.san)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// An enrollment after validation.
#[derive(Clone)]
pub struct EnrollSpec {
    /// The CA's URL.
    pub ca: String,
    /// The root's SHA-256 fingerprint.
    pub ca_fingerprint: String,
    /// The token, if one was given inline.
    pub token: Option<zeroize::Zeroizing<String>>,
    /// The file holding the token (read when the agent starts).
    pub token_file: Option<PathBuf>,
    /// Names to ask for.
    pub sans: Vec<twoway_pki::San>,
    /// Key type.
    pub key_type: twoway_pki::KeyType,
    /// Where the material lives: a directory, or memory shared with the listener.
    pub storage: twoway_agent::Storage,
    /// How long to wait for the first certificate.
    pub timeout: Duration,
}

impl std::fmt::Debug for EnrollSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollSpec")
            .field("ca", &self.ca)
            .field("sans", &self.sans)
            .field("storage", &self.storage.to_string())
            .finish_non_exhaustive()
    }
}

impl EnrollConfig {
    fn validate(&self, listener: &str) -> Result<EnrollSpec, ProxyError> {
        let bad = |m: String| ProxyError::Config(format!("listener {listener:?}: enroll: {m}"));
        if !self.ca.starts_with("https://") {
            return Err(bad(format!(
                "ca must be the CA's https:// URL (got {:?})",
                self.ca
            )));
        }
        if self.ca_fingerprint.trim().is_empty() {
            return Err(bad(
                "missing ca_fingerprint: the SHA-256 of the CA's root (`twoway ca show` prints it)"
                    .into(),
            ));
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(bad("give token or token_file, not both".into()));
        }
        let token = self
            .token
            .as_ref()
            .map(|t| zeroize::Zeroizing::new(t.trim().to_owned()));
        if token.is_none() && self.token_file.is_none() && self.state_dir.is_none() {
            return Err(bad(
                "missing token: create one with `twoway token create` and pass it (token / token_file / --enroll-token)"
                    .into(),
            ));
        }
        let sans = self
            .san
            .iter()
            .map(|s| s.parse::<twoway_pki::San>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("san: {e}")))?;
        if sans.is_empty() {
            return Err(bad(
                "no san: name what the certificate is for, e.g. san = [\"DNS:api.example.internal\"] / --san DNS:api.example.internal"
                    .into(),
            ));
        }
        let key_type = match &self.key_type {
            None => twoway_pki::KeyType::P256,
            Some(k) => k.parse().map_err(|e| bad(format!("key_type: {e}")))?,
        };
        let storage = match &self.state_dir {
            Some(d) => twoway_agent::Storage::Dir(d.clone()),
            None => twoway_agent::Storage::Memory(Default::default()),
        };
        Ok(EnrollSpec {
            ca: self.ca.clone(),
            ca_fingerprint: self.ca_fingerprint.clone(),
            token,
            token_file: self.token_file.clone(),
            sans,
            key_type,
            storage,
            timeout: secs("enroll.timeout_secs", self.timeout_secs, 60.0)?,
        })
    }
}

/// One HTTP route rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix this route covers, on segment boundaries: `/admin` (or `/admin/`) covers
    /// `/admin`, `/admin/` and `/admin/…`, not `/adminx` (default `/`). Matched against the
    /// normalized path (see docs/proxy.md, "Paths").
    pub prefix: String,
    /// HTTP methods covered (any when empty), e.g. `["GET", "HEAD"]`.
    pub methods: Vec<String>,
    /// Identity rules for this route; empty allows every client the listener accepted.
    pub allow: Vec<String>,
    /// With `methods`: what a request under `prefix` with another method gets. `"deny"`
    /// (default): only a later route with the same or a longer prefix can still take it,
    /// else 403. `"next"`: it goes on to the next routes as if this one did not exist.
    pub other_methods: Option<String>,
}

/// One client-mode listener (`twoway proxy client`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientListenerConfig {
    /// Name used in logs and metrics (default: the listen address).
    pub name: Option<String>,
    /// Local plaintext address to accept on, e.g. `127.0.0.1:15001`.
    pub listen: String,
    /// The mTLS server to connect to, `HOST:PORT`.
    pub target: String,
    /// PEM client certificate chain presented to the target. Not with `[client.enroll]`.
    pub cert: PathBuf,
    /// PEM private key of the client certificate. Not with `[client.enroll]`.
    pub key: PathBuf,
    /// PEM bundle of the CAs the target's certificate must chain to. With
    /// `[client.enroll]` it defaults to the enrolling CA's root.
    pub server_ca: PathBuf,
    /// Get the client certificate from a twoway CA instead of files (like
    /// `[server.enroll]`; the token must be for a client or peer profile).
    pub enroll: Option<EnrollConfig>,
    /// CRLs checked against the server certificate: file paths or `http://` URLs.
    pub crl: Vec<String>,
    /// Seconds between fetches of CRL URLs (default 300).
    pub crl_refresh_secs: Option<f64>,
    /// What a CRL past its `nextUpdate` does: `"refuse"` (default) refuses the certificates
    /// of its issuer once `crl_stale_grace_secs` have passed since `nextUpdate`, warning
    /// until then; `"warn"` keeps accepting them, with a warning in the log.
    pub crl_stale: Option<String>,
    /// Seconds after a CRL's `nextUpdate` before `crl_stale = "refuse"` refuses (default 3600).
    pub crl_stale_grace_secs: Option<f64>,
    // ---- OCSP (docs/proxy.md, "OCSP") ----
    /// Ask the server certificate's OCSP responder (its AIA URL, or `ocsp_url`) about each
    /// server before anything is relayed; answers are cached until their `nextUpdate`. Off by default.
    pub ocsp: bool,
    /// OCSP responder URL (`http://…`) used instead of the one in the certificate.
    pub ocsp_url: Option<String>,
    /// When no usable answer can be had (responder unreachable, slow, or answering
    /// something invalid) and no cached good answer is current: accept the certificate
    /// anyway (counted and logged as a soft pass) instead of refusing it (default false).
    pub ocsp_fail_open: bool,
    /// A certificate naming no OCSP responder (and no `ocsp_url`): `"allow"` (default,
    /// counted) or `"refuse"`.
    pub ocsp_no_url: Option<String>,
    /// Seconds to wait for the responder (default 2).
    pub ocsp_timeout_secs: Option<f64>,
    /// Seconds a failed OCSP query is remembered before the responder is asked again for
    /// that certificate (default 5).
    pub ocsp_error_cache_secs: Option<f64>,
    /// Name to verify in the server certificate and send as SNI (default: the target host).
    pub server_name: Option<String>,
    /// Identity rules the server certificate must match (e.g. `spiffe://…/ns/prod/sa/api`).
    pub expect_server: Vec<String>,
    /// Also allow TLS 1.2.
    pub tls12: bool,
    /// Seconds for TCP connect plus TLS handshake to the target (default 10).
    pub handshake_timeout_secs: Option<f64>,
    /// Seconds without a byte in either direction before closing (default 300).
    pub idle_timeout_secs: Option<f64>,
    /// Most concurrent connections (default 10000).
    pub max_connections: Option<usize>,
}

impl ProxyConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ProxyError> {
        Ok(toml::from_str(text)?)
    }

    /// Makes every relative file path absolute against `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        let fix_crl = |c: &mut String| {
            if !c.starts_with("http://") && !c.starts_with("https://") && Path::new(c).is_relative()
            {
                *c = base.join(&*c).to_string_lossy().into_owned();
            }
        };
        for s in &mut self.server {
            fix(&mut s.cert);
            fix(&mut s.key);
            fix(&mut s.client_ca);
            fix(&mut s.backend_ca);
            if let Some(e) = &mut s.enroll {
                if let Some(p) = &mut e.token_file {
                    fix(p);
                }
                if let Some(p) = &mut e.state_dir {
                    fix(p);
                }
            }
            s.crl.iter_mut().for_each(fix_crl);
            if let Some(path) = s.backend.strip_prefix("unix:") {
                if Path::new(path).is_relative() {
                    s.backend = format!("unix:{}", base.join(path).display());
                }
            }
        }
        for c in &mut self.client {
            fix(&mut c.cert);
            fix(&mut c.key);
            fix(&mut c.server_ca);
            if let Some(e) = &mut c.enroll {
                if let Some(p) = &mut e.token_file {
                    fix(p);
                }
                if let Some(p) = &mut e.state_dir {
                    fix(p);
                }
            }
            c.crl.iter_mut().for_each(fix_crl);
        }
    }
}

/// Where a server listener forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `HOST:PORT` over TCP (resolved at connect time).
    Tcp(String),
    /// A Unix stream socket.
    Unix(PathBuf),
}

impl Backend {
    fn parse(s: &str) -> Result<Self, ProxyError> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(ProxyError::Config(
                    "backend \"unix:\" needs a socket path, e.g. unix:/run/app.sock".into(),
                ));
            }
            return Ok(Backend::Unix(PathBuf::from(p)));
        }
        check_host_port("backend", s)?;
        Ok(Backend::Tcp(s.to_owned()))
    }

    /// The authority used for the backend in HTTP mode.
    pub(crate) fn authority(&self) -> &str {
        match self {
            Backend::Tcp(a) => a,
            Backend::Unix(_) => "localhost",
        }
    }
}

fn check_host_port(key: &str, s: &str) -> Result<(), ProxyError> {
    let ok = s
        .rsplit_once(':')
        .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ProxyError::Config(format!(
            "{key} {s:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"
        )))
    }
}

fn parse_listen(key: &str, s: &str) -> Result<SocketAddr, ProxyError> {
    s.parse().map_err(|_| {
        ProxyError::Config(format!(
            "{key} {s:?} is not an IP:PORT socket address (e.g. 0.0.0.0:8443 or [::]:8443)"
        ))
    })
}

fn secs(key: &str, v: Option<f64>, default: f64) -> Result<Duration, ProxyError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(ProxyError::Config(format!(
            "{key} = {v} must be a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A CRL source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrlSource {
    /// A local file, re-read on change.
    File(PathBuf),
    /// An `http://` URL, fetched on an interval.
    Url(String),
}

fn stale_crl(policy: Option<&str>, grace: Option<f64>) -> Result<twoway_tls::StaleCrl, ProxyError> {
    let grace = secs("crl_stale_grace_secs", grace, 3600.0)?;
    match policy.unwrap_or("refuse") {
        "refuse" => Ok(twoway_tls::StaleCrl::Refuse { grace }),
        "warn" => Ok(twoway_tls::StaleCrl::Warn),
        other => Err(ProxyError::Config(format!(
            "crl_stale = {other:?}: use \"refuse\" (the default) or \"warn\""
        ))),
    }
}

fn parse_crls(items: &[String]) -> Result<Vec<CrlSource>, ProxyError> {
    items
        .iter()
        .map(|c| {
            if c.starts_with("https://") {
                Err(ProxyError::Config(format!(
                    "CRL URL {c:?}: only http:// is supported (CRLs are signed; serve them over plain HTTP)"
                )))
            } else if c.starts_with("http://") {
                Ok(CrlSource::Url(c.clone()))
            } else if c.is_empty() {
                Err(ProxyError::Config("empty CRL entry".into()))
            } else {
                Ok(CrlSource::File(PathBuf::from(c)))
            }
        })
        .collect()
}

fn parse_policy(listener: &str, key: &str, rules: &[String]) -> Result<Policy, ProxyError> {
    Policy::parse(rules)
        .map_err(|e| ProxyError::Config(format!("listener {listener:?}, {key}: {e}")))
}

fn require_path(listener: &str, key: &str, p: &Path) -> Result<(), ProxyError> {
    if p.as_os_str().is_empty() {
        Err(ProxyError::Config(format!(
            "listener {listener:?}: missing {key} (a PEM file path)"
        )))
    } else {
        Ok(())
    }
}

/// A route after validation.
#[derive(Clone, Debug)]
pub struct Route {
    /// Path prefix, normalized, without a trailing `/` (unless it is `/`).
    pub prefix: String,
    /// Methods (any when empty), upper-case.
    pub methods: Vec<http::Method>,
    /// Rules.
    pub policy: Policy,
    /// A request under `prefix` with another method is refused unless a later route with
    /// the same or a longer prefix takes it (`other_methods = "deny"`).
    pub deny_other_methods: bool,
}

/// The request rules of an HTTP listener: its routes and whose forwarding headers it trusts.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// In order; first match wins.
    pub routes: Vec<Route>,
    /// Prefixes are compared with the path case-insensitively (`case_insensitive_paths`:
    /// for backends that fold case).
    pub case_insensitive: bool,
    /// Peers whose `X-Forwarded-For`/`Forwarded` are passed on.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Routes {
    /// Finds the route for a request whose `path` is normalized: `None` means no route may
    /// take it (none matched, or a method-scoped route refused the method).
    pub fn find(&self, method: &http::Method, path: &str) -> Option<&Route> {
        let folded;
        let path = if self.case_insensitive && path.bytes().any(|b| b.is_ascii_uppercase()) {
            folded = path.to_ascii_lowercase();
            folded.as_str()
        } else {
            path
        };
        // set by a method-scoped route that refused the method: later routes must be at
        // least as specific
        let mut within: Option<&str> = None;
        for r in &self.routes {
            if !target::covers(&r.prefix, path) {
                continue;
            }
            if within.is_some_and(|w| !target::covers(w, &r.prefix)) {
                continue;
            }
            if r.methods.is_empty() || r.methods.contains(method) {
                return Some(r);
            }
            if r.deny_other_methods && within.is_none() {
                within = Some(&r.prefix);
            }
        }
        None
    }

    /// Whether the forwarding headers of a client at `addr` are passed on.
    pub fn trusts(&self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|n| n.contains(&addr))
    }

    /// The decision for `peer` asking `method path` (`path` normalized).
    pub fn decide(
        &self,
        method: &http::Method,
        path: &str,
        peer: &twoway_tls::PeerIdentity,
    ) -> twoway_tls::Decision {
        if self.routes.is_empty() {
            return twoway_tls::Decision::AllowedWithoutRules;
        }
        match self.find(method, path) {
            Some(route) => route.policy.evaluate(peer),
            None => twoway_tls::Decision::Denied,
        }
    }
}

fn parse_routes(listener: &str, cfg: &ServerListenerConfig) -> Result<Routes, ProxyError> {
    let case_insensitive = cfg.case_insensitive_paths;
    if !cfg.http && (case_insensitive || !cfg.trusted_proxies.is_empty()) {
        return Err(ProxyError::Config(format!(
            "listener {listener:?}: case_insensitive_paths and trusted_proxies need HTTP mode \
             (http = true / --http)"
        )));
    }
    let mut trusted_proxies = Vec::new();
    for t in &cfg.trusted_proxies {
        let net = t
            .parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                ProxyError::Config(format!(
                    "listener {listener:?}: trusted_proxies entry {t:?} is not an address or \
                     a CIDR range (e.g. 10.0.0.5 or 10.0.0.0/8)"
                ))
            })?;
        trusted_proxies.push(net);
    }
    let mut out = Vec::new();
    for (i, r) in cfg.route.iter().enumerate() {
        let raw = if r.prefix.is_empty() { "/" } else { &r.prefix };
        let mut prefix = target::normalize_path(raw)
            .map_err(|e| {
                ProxyError::Config(format!(
                    "listener {listener:?}, route {i}: prefix {raw:?}: {} (a prefix is a path \
                     starting with '/', without escapes of '/', '\\' or NUL)",
                    e.as_str()
                ))
            })?
            .into_owned();
        if prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        if case_insensitive {
            prefix.make_ascii_lowercase();
        }
        let mut methods = Vec::new();
        for m in &r.methods {
            let m = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ProxyError::Config(format!(
                    "listener {listener:?}, route {i}: {m:?} is not an HTTP method"
                ))
            })?;
            methods.push(m);
        }
        let deny_other_methods = match r.other_methods.as_deref() {
            None | Some("deny") => true,
            Some("next") => false,
            Some(other) => {
                return Err(ProxyError::Config(format!(
                    "listener {listener:?}, route {i}: other_methods = {other:?}: use \"deny\" \
                     (refuse other methods under this prefix) or \"next\" (let later routes \
                     decide)"
                )))
            }
        };
        out.push(Route {
            prefix,
            methods,
            policy: parse_policy(listener, &format!("route {i} allow"), &r.allow)?,
            deny_other_methods,
        });
    }
    Ok(Routes {
        routes: out,
        case_insensitive,
        trusted_proxies,
    })
}

/// OCSP checking of peer certificates, after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspSpec {
    /// Responder URL used instead of the certificate's.
    pub url: Option<String>,
    /// Accept (counted) when no usable answer can be had and none is cached.
    pub fail_open: bool,
    /// Refuse certificates that name no responder (when there is no `url`).
    pub refuse_no_url: bool,
    /// How long to wait for the responder.
    pub timeout: Duration,
    /// How long a failed query is remembered.
    pub error_cache: Duration,
}

impl OcspSpec {
    #[allow(clippy::too_many_arguments)]
    fn parse(
        listener: &str,
        on: bool,
        url: &Option<String>,
        fail_open: bool,
        no_url: &Option<String>,
        timeout: Option<f64>,
        error_cache: Option<f64>,
    ) -> Result<Option<Self>, ProxyError> {
        let set = url.is_some() || fail_open || no_url.is_some() || timeout.is_some();
        if !on {
            if set || error_cache.is_some() {
                return Err(ProxyError::Config(format!(
                    "listener {listener:?}: ocsp_* settings without ocsp = true (--ocsp): turn OCSP on or remove them"
                )));
            }
            return Ok(None);
        }
        if let Some(u) = url {
            if !u.starts_with("http://") || u.parse::<http::Uri>().is_err() {
                return Err(ProxyError::Config(format!(
                    "listener {listener:?}: ocsp_url {u:?} must be an http:// URL (OCSP answers are signed; they travel over plain HTTP)"
                )));
            }
        }
        let refuse_no_url = match no_url.as_deref() {
            None | Some("allow") => false,
            Some("refuse") => true,
            Some(other) => {
                return Err(ProxyError::Config(format!(
                    "listener {listener:?}: ocsp_no_url = {other:?}: use \"allow\" or \"refuse\""
                )))
            }
        };
        Ok(Some(OcspSpec {
            url: url.clone(),
            fail_open,
            refuse_no_url,
            timeout: secs("ocsp_timeout_secs", timeout, 2.0)?,
            error_cache: secs("ocsp_error_cache_secs", error_cache, 5.0)?,
        }))
    }
}

/// A server listener after validation.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Name for logs and metrics.
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Backend.
    pub backend: Backend,
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Client CA bundle file (empty: the enrolling CA's root).
    pub client_ca: PathBuf,
    /// CRL sources.
    pub crls: Vec<CrlSource>,
    /// CRL URL refresh interval.
    pub crl_refresh: Duration,
    /// What a CRL past its `nextUpdate` does.
    pub stale_crl: twoway_tls::StaleCrl,
    /// OCSP checking of client certificates (None: off).
    pub ocsp: Option<OcspSpec>,
    /// Enrollment with a twoway CA, which then provides the certificate and key.
    pub enroll: Option<EnrollSpec>,
    /// Listener rules.
    pub policy: Policy,
    /// HTTP mode.
    pub http: bool,
    /// Routes (HTTP mode).
    pub routes: Routes,
    /// PROXY protocol v2 to the backend (TCP mode).
    pub proxy_protocol: bool,
    /// TLS options.
    pub tls: twoway_tls::TlsOptions,
    /// Handshake timeout.
    pub handshake_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Connection limits (total and per client address).
    pub limits: twoway_net::Limits,
    /// The protocol spoken to the backend (HTTP mode).
    pub backend_protocol: BackendProtocol,
}

/// The protocol an HTTP-mode listener speaks to its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over plain TCP (or a Unix socket) with prior knowledge.
    H2c,
    /// HTTP/2 over TLS, ALPN `h2`.
    H2 {
        /// PEM bundle the backend's certificate must chain to.
        ca: PathBuf,
        /// The name checked in the backend's certificate.
        server_name: rustls::pki_types::ServerName<'static>,
    },
}

impl BackendProtocol {
    /// The configuration value: `http1`, `h2c` or `h2`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendProtocol::Http1 => "http1",
            BackendProtocol::H2c => "h2c",
            BackendProtocol::H2 { .. } => "h2",
        }
    }

    /// HTTP/2 to the backend.
    pub fn is_h2(&self) -> bool {
        !matches!(self, BackendProtocol::Http1)
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
fn host_of(hostport: &str) -> &str {
    let (h, _) = hostport.rsplit_once(':').unwrap_or((hostport, ""));
    h.trim_start_matches('[').trim_end_matches(']')
}

fn parse_backend_protocol(
    name: &str,
    cfg: &ServerListenerConfig,
    backend: &Backend,
) -> Result<BackendProtocol, ProxyError> {
    let proto = cfg.backend_protocol.as_deref().unwrap_or("http1");
    let tls_keys = !cfg.backend_ca.as_os_str().is_empty() || cfg.backend_server_name.is_some();
    if proto != "h2" && tls_keys {
        return Err(ProxyError::Config(format!(
            "listener {name:?}: backend_ca and backend_server_name are for backend_protocol = \"h2\" (TLS to the backend)"
        )));
    }
    if proto != "http1" && !cfg.http {
        return Err(ProxyError::Config(format!(
            "listener {name:?}: backend_protocol = {proto:?} needs HTTP mode (http = true / --http)"
        )));
    }
    match proto {
        "http1" => Ok(BackendProtocol::Http1),
        "h2c" => Ok(BackendProtocol::H2c),
        "h2" => {
            if cfg.backend_ca.as_os_str().is_empty() {
                return Err(ProxyError::Config(format!(
                    "listener {name:?}: backend_protocol = \"h2\" needs backend_ca (--backend-ca), the PEM bundle the backend's certificate chains to"
                )));
            }
            let host = match (&cfg.backend_server_name, backend) {
                (Some(n), _) => n.clone(),
                (None, Backend::Tcp(a)) => host_of(a).to_owned(),
                (None, Backend::Unix(_)) => {
                    return Err(ProxyError::Config(format!(
                        "listener {name:?}: a unix: backend with backend_protocol = \"h2\" needs backend_server_name, the name in the backend's certificate"
                    )))
                }
            };
            let server_name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
                ProxyError::Config(format!(
                    "listener {name:?}: {host:?} is not a valid server name; set backend_server_name"
                ))
            })?;
            Ok(BackendProtocol::H2 {
                ca: cfg.backend_ca.clone(),
                server_name,
            })
        }
        other => Err(ProxyError::Config(format!(
            "listener {name:?}: backend_protocol {other:?} is not one of \"http1\", \"h2c\", \"h2\""
        ))),
    }
}

/// A client listener after validation.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// Name for logs and metrics.
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Target `HOST:PORT`.
    pub target: String,
    /// Name verified in the server certificate and sent as SNI.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Client certificate chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Server CA bundle file (empty: the enrolling CA's root).
    pub server_ca: PathBuf,
    /// Enrollment with a twoway CA, which then provides the certificate and key.
    pub enroll: Option<EnrollSpec>,
    /// CRL sources.
    pub crls: Vec<CrlSource>,
    /// CRL URL refresh interval.
    pub crl_refresh: Duration,
    /// What a CRL past its `nextUpdate` does.
    pub stale_crl: twoway_tls::StaleCrl,
    /// OCSP checking of the server certificate (None: off).
    pub ocsp: Option<OcspSpec>,
    /// Rules for the server identity.
    pub policy: Policy,
    /// TLS options.
    pub tls: twoway_tls::TlsOptions,
    /// Connect + handshake timeout.
    pub handshake_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Connection limit.
    pub max_connections: usize,
}

/// The whole configuration after validation.
#[derive(Clone, Debug)]
pub struct ValidConfig {
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// File poll interval.
    pub reload_interval: Duration,
    /// Server listeners.
    pub servers: Vec<ServerSpec>,
    /// Client listeners.
    pub clients: Vec<ClientSpec>,
}

/// The certificate, key and CA paths of a listener, and its enrollment: files as
/// configured, or where an enrollment with a state directory keeps them (the CA path
/// defaults to the CA's root there; with memory storage an empty path means the same).
fn material(
    name: &str,
    enroll: Option<&EnrollConfig>,
    cert: &Path,
    key: &Path,
    ca_key: &str,
    ca: &Path,
) -> Result<(PathBuf, PathBuf, PathBuf, Option<EnrollSpec>), ProxyError> {
    let Some(e) = enroll else {
        require_path(name, "cert", cert)?;
        require_path(name, "key", key)?;
        require_path(name, ca_key, ca)?;
        return Ok((cert.to_owned(), key.to_owned(), ca.to_owned(), None));
    };
    if !cert.as_os_str().is_empty() || !key.as_os_str().is_empty() {
        return Err(ProxyError::Config(format!(
            "listener {name:?}: give either cert and key files or an enrollment (enroll / --enroll-token), not both"
        )));
    }
    let spec = e.validate(name)?;
    Ok(match &spec.storage {
        twoway_agent::Storage::Dir(d) => (
            d.join(twoway_files::CHAIN),
            d.join(twoway_files::KEY),
            if ca.as_os_str().is_empty() {
                d.join(twoway_files::CA)
            } else {
                ca.to_owned()
            },
            Some(spec),
        ),
        twoway_agent::Storage::Memory(_) => {
            (PathBuf::new(), PathBuf::new(), ca.to_owned(), Some(spec))
        }
    })
}

impl ServerListenerConfig {
    /// Validates this listener.
    pub fn validate(&self) -> Result<ServerSpec, ProxyError> {
        let listen = parse_listen("listen", &self.listen)?;
        let name = self.name.clone().unwrap_or_else(|| self.listen.clone());
        if self.backend.is_empty() {
            return Err(ProxyError::Config(format!(
                "listener {name:?}: missing backend (HOST:PORT or unix:/path)"
            )));
        }
        let backend = Backend::parse(&self.backend)?;
        let backend_protocol = parse_backend_protocol(&name, self, &backend)?;
        let (cert, key, client_ca, enroll) = material(
            &name,
            self.enroll.as_ref(),
            &self.cert,
            &self.key,
            "client_ca",
            &self.client_ca,
        )?;
        if !self.http && !self.route.is_empty() {
            return Err(ProxyError::Config(format!(
                "listener {name:?}: routes need HTTP mode (http = true / --http)"
            )));
        }
        if self.http && self.proxy_protocol {
            return Err(ProxyError::Config(format!(
                "listener {name:?}: proxy_protocol is for TCP mode; HTTP mode sends identity headers instead"
            )));
        }
        let alpn = if self.http {
            vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()]
        } else {
            Vec::new()
        };
        let max_connections = self.max_connections.unwrap_or(10_000);
        let max_per_address = self
            .max_connections_per_address
            .unwrap_or(1024)
            .min(max_connections);
        if max_connections == 0 || max_per_address == 0 {
            return Err(ProxyError::Config(format!(
                "listener {name:?}: max_connections and max_connections_per_address must be at least 1"
            )));
        }
        Ok(ServerSpec {
            listen,
            backend,
            cert,
            key,
            client_ca,
            crls: parse_crls(&self.crl)?,
            crl_refresh: secs("crl_refresh_secs", self.crl_refresh_secs, 300.0)?,
            stale_crl: stale_crl(self.crl_stale.as_deref(), self.crl_stale_grace_secs)?,
            ocsp: OcspSpec::parse(
                &name,
                self.ocsp,
                &self.ocsp_url,
                self.ocsp_fail_open,
                &self.ocsp_no_url,
                self.ocsp_timeout_secs,
                self.ocsp_error_cache_secs,
            )?,
            enroll,
            policy: parse_policy(&name, "allow", &self.allow)?,
            http: self.http,
            routes: parse_routes(&name, self)?,
            proxy_protocol: self.proxy_protocol,
            tls: twoway_tls::TlsOptions {
                tls12: self.tls12,
                alpn,
                resumption: self.resumption,
            },
            handshake_timeout: secs("handshake_timeout_secs", self.handshake_timeout_secs, 10.0)?,
            idle_timeout: secs("idle_timeout_secs", self.idle_timeout_secs, 300.0)?,
            limits: twoway_net::Limits {
                max_connections,
                max_per_address,
            },
            backend_protocol,
            name,
        })
    }
}

impl ClientListenerConfig {
    /// Validates this listener.
    pub fn validate(&self) -> Result<ClientSpec, ProxyError> {
        let listen = parse_listen("listen", &self.listen)?;
        let name = self.name.clone().unwrap_or_else(|| self.listen.clone());
        check_host_port("target", &self.target)?;
        let (cert, key, server_ca, enroll) = material(
            &name,
            self.enroll.as_ref(),
            &self.cert,
            &self.key,
            "server_ca",
            &self.server_ca,
        )?;
        let host = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let (h, _) = self.target.rsplit_once(':').unwrap_or((&self.target, ""));
                h.trim_start_matches('[').trim_end_matches(']').to_owned()
            }
        };
        let server_name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            ProxyError::Config(format!(
                "listener {name:?}: {host:?} is not a valid server name; set server_name"
            ))
        })?;
        let max_connections = self.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            return Err(ProxyError::Config(format!(
                "listener {name:?}: max_connections must be at least 1"
            )));
        }
        Ok(ClientSpec {
            listen,
            target: self.target.clone(),
            server_name,
            cert,
            key,
            server_ca,
            enroll,
            crls: parse_crls(&self.crl)?,
            crl_refresh: secs("crl_refresh_secs", self.crl_refresh_secs, 300.0)?,
            stale_crl: stale_crl(self.crl_stale.as_deref(), self.crl_stale_grace_secs)?,
            ocsp: OcspSpec::parse(
                &name,
                self.ocsp,
                &self.ocsp_url,
                self.ocsp_fail_open,
                &self.ocsp_no_url,
                self.ocsp_timeout_secs,
                self.ocsp_error_cache_secs,
            )?,
            policy: parse_policy(&name, "expect_server", &self.expect_server)?,
            tls: twoway_tls::TlsOptions {
                tls12: self.tls12,
                alpn: Vec::new(),
                resumption: false,
            },
            handshake_timeout: secs("handshake_timeout_secs", self.handshake_timeout_secs, 10.0)?,
            idle_timeout: secs("idle_timeout_secs", self.idle_timeout_secs, 300.0)?,
            max_connections,
            name,
        })
    }
}

impl ProxyConfig {
    /// Validates everything that can be checked without reading files.
    pub fn validate(&self) -> Result<ValidConfig, ProxyError> {
        if self.server.is_empty() && self.client.is_empty() {
            return Err(ProxyError::Config(
                "no listener: add a [[server]] or [[client]] section (or use `twoway proxy server|client`)".into(),
            ));
        }
        if self.workers == Some(0) {
            return Err(ProxyError::Config("workers must be at least 1".into()));
        }
        let admin = self
            .admin
            .as_deref()
            .map(|a| parse_listen("admin", a))
            .transpose()?;
        let servers = self
            .server
            .iter()
            .map(ServerListenerConfig::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let clients = self
            .client
            .iter()
            .map(ClientListenerConfig::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = servers
            .iter()
            .map(|s| s.name.as_str())
            .chain(clients.iter().map(|c| c.name.as_str()))
            .collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ProxyError::Config(format!(
                "two listeners are named {:?}; names must be unique",
                w[0]
            )));
        }
        let mut addrs: Vec<SocketAddr> = servers
            .iter()
            .map(|s| s.listen)
            .chain(clients.iter().map(|c| c.listen))
            .chain(admin)
            .collect();
        addrs.sort_unstable();
        if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1] && w[0].port() != 0) {
            return Err(ProxyError::Config(format!(
                "two listeners use {}; each needs its own address",
                w[0]
            )));
        }
        Ok(ValidConfig {
            admin,
            drain_timeout: secs("drain_timeout_secs", self.drain_timeout_secs, 10.0)?,
            reload_interval: secs("reload_interval_secs", self.reload_interval_secs, 1.0)?,
            servers,
            clients,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses_and_validates() {
        let text = include_str!("../../../docs/proxy.example.toml");
        let mut cfg = ProxyConfig::from_toml(text).unwrap();
        cfg.resolve_paths(Path::new("/etc/twoway"));
        let v = cfg.validate().unwrap();
        assert_eq!(v.servers.len(), 3);
        let e = v.servers[2].enroll.as_ref().unwrap();
        assert_eq!(
            e.token_file.as_deref(),
            Some(Path::new("/etc/twoway/secrets/orders.token"))
        );
        assert!(matches!(e.storage, twoway_agent::Storage::Memory(_)));
        assert_eq!(v.clients.len(), 1);
        assert_eq!(v.servers[0].routes.routes.len(), 3);
        assert_eq!(
            v.servers[0].cert,
            Path::new("/etc/twoway/certs/api.chain.pem")
        );
        assert!(matches!(v.servers[1].backend, Backend::Unix(_)));
    }

    #[test]
    fn ocsp_keys_are_validated() {
        let base = "[[server]]\nlisten = \"127.0.0.1:1\"\nbackend = \"b:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n";
        let spec = |extra: &str| {
            ProxyConfig::from_toml(&format!("{base}{extra}"))
                .unwrap()
                .validate()
                .map(|v| v.servers[0].ocsp.clone())
        };
        assert_eq!(spec("").unwrap(), None);
        let on = spec("ocsp = true\n").unwrap().unwrap();
        assert!(!on.fail_open && !on.refuse_no_url && on.url.is_none());
        assert_eq!(on.timeout, Duration::from_secs(2));
        let e = spec("ocsp_fail_open = true\n").unwrap_err().to_string();
        assert!(e.contains("without ocsp = true"), "{e}");
        let e = spec("ocsp = true\nocsp_url = \"https://x/ocsp\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http:// URL"), "{e}");
        let e = spec("ocsp = true\nocsp_no_url = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"allow\" or \"refuse\""), "{e}");
        let r =
            spec("ocsp = true\nocsp_no_url = \"refuse\"\nocsp_url = \"http://127.0.0.1:9/ocsp\"\n");
        assert!(r.unwrap().unwrap().refuse_no_url);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(ProxyConfig::from_toml("[[server]]\nlisten = \"x\"\nbogus = 1\n").is_err());
        let bad = ProxyConfig::from_toml(
            "[[server]]\nlisten = \"127.0.0.1:1\"\nbackend = \"b:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\nallow = [\"nope:x\"]\n",
        )
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("unknown kind prefix"), "{e}");
    }

    fn listener(backend: &str, extra: &str) -> Result<ServerSpec, ProxyError> {
        let text = format!(
            "[[server]]\nlisten = \"127.0.0.1:1\"\nbackend = {backend:?}\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n{extra}\n"
        );
        ProxyConfig::from_toml(&text)?.server[0].validate()
    }

    #[test]
    fn backend_protocol_values_and_their_keys() {
        let p = |b: &str, extra: &str| listener(b, extra).map(|s| s.backend_protocol);
        assert_eq!(p("b:1", "http = true").unwrap(), BackendProtocol::Http1);
        assert_eq!(
            p("b:1", "http = true\nbackend_protocol = \"h2c\"").unwrap(),
            BackendProtocol::H2c
        );
        let h2 = p(
            "[::1]:8443",
            "http = true\nbackend_protocol = \"h2\"\nbackend_ca = \"ca.pem\"",
        )
        .unwrap();
        assert_eq!(
            h2,
            BackendProtocol::H2 {
                ca: "ca.pem".into(),
                server_name: rustls::pki_types::ServerName::try_from("::1").unwrap()
            }
        );
        let err = |b: &str, extra: &str| p(b, extra).unwrap_err().to_string();
        let e = err("b:1", "http = true\nbackend_protocol = \"h3\"");
        assert!(e.contains("not one of"), "{e}");
        let e = err("b:1", "backend_protocol = \"h2c\"");
        assert!(e.contains("needs HTTP mode"), "{e}");
        let e = err("b:1", "http = true\nbackend_protocol = \"h2\"");
        assert!(e.contains("needs backend_ca"), "{e}");
        let e = err("b:1", "http = true\nbackend_ca = \"ca.pem\"");
        assert!(e.contains("are for backend_protocol"), "{e}");
        let e = err(
            "unix:/run/s",
            "http = true\nbackend_protocol = \"h2\"\nbackend_ca = \"ca.pem\"",
        );
        assert!(e.contains("needs backend_server_name"), "{e}");
    }
}
