//! The online CA harness: a CA directory (`ca/`) with an administrator's client
//! certificate (`admin/`), served by the real `twoway ca serve` on free ports whose
//! addresses and root fingerprint are read from its start-up lines; the remote CLI, the
//! agent, the API over curl and OCSP over openssl against it.
//!
//! Only 127.0.0.1; every wait is bounded.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{client_config, plain_request};
use super::lab::Lab;
use super::process::{require_tool, run_tool, Output, Server};

/// The administrator's SAN of [`OnlineCa::init`], listed in `[server] admins`.
pub const ADMIN: &str = "URI:spiffe://limits.test/admin";

/// The administrator's SAN of [`OnlineCa::start`].
pub const ONLINE_ADMIN: &str = "URI:spiffe://online.test/admin";

/// How long `ca serve` may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A CA directory and the server once started. Dereferences to its [`Lab`].
pub struct OnlineCa {
    lab: Lab,
    server: Option<CaServer>,
    /// The HTTPS listener of the running server.
    pub https: SocketAddr,
    /// The plain-HTTP listener of the running server.
    pub http: SocketAddr,
    /// The SHA-256 fingerprint of the root, as the server prints it.
    pub fingerprint: String,
    /// How many servers were started (each logs to its own file).
    started: u32,
}

impl Deref for OnlineCa {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl OnlineCa {
    /// `ca init` (“Limits Test”) and an administrator's certificate for [`ADMIN`]; nothing
    /// listens yet.
    #[track_caller]
    pub fn init() -> OnlineCa {
        Self::create("Limits Test", ADMIN, "", &[])
    }

    /// [`OnlineCa::init`] with `ca init` run after a shell prefix (e.g. `umask 000;`).
    #[track_caller]
    pub fn init_with(shell_prefix: &str) -> OnlineCa {
        Self::create("Limits Test", ADMIN, shell_prefix, &[])
    }

    /// A CA (“Online Test”, administrator [`ONLINE_ADMIN`]) with `settings` in `[server]`,
    /// serving.
    #[track_caller]
    pub fn start(settings: &[(&str, &str)]) -> OnlineCa {
        Self::start_env(settings, &[])
    }

    /// [`OnlineCa::start`], the server running with extra environment variables.
    #[track_caller]
    pub fn start_env(settings: &[(&str, &str)], envs: &[(&str, String)]) -> OnlineCa {
        let mut ca = Self::create("Online Test", ONLINE_ADMIN, "", settings);
        ca.serve_env(envs);
        ca
    }

    /// `ca init --name NAME` after `shell_prefix`, `[server]` keys set in ca.toml (`admins`
    /// to `admin`, then `settings`, TOML values), and then the administrator's client
    /// certificate for `admin` in `admin/` (so it is recorded where the settings say).
    #[track_caller]
    pub fn create(
        name: &str,
        admin: &str,
        shell_prefix: &str,
        settings: &[(&str, &str)],
    ) -> OnlineCa {
        Self::create_with(name, admin, shell_prefix, |_| String::new(), settings)
    }

    /// [`OnlineCa::create`] with `prepare` run on the new lab first; it returns more
    /// arguments for `ca init` (e.g. a PKCS#11 token's and `--key-uri`).
    #[track_caller]
    pub fn create_with(
        name: &str,
        admin: &str,
        shell_prefix: &str,
        prepare: impl FnOnce(&Lab) -> String,
        settings: &[(&str, &str)],
    ) -> OnlineCa {
        let lab = Lab::new("test:security");
        let init_args = prepare(&lab);
        lab.sh(&format!(
            "{shell_prefix} \"$TWOWAY\" ca init --ca-dir ca --name '{name}' {init_args}"
        ))
        .ok();
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let ca = OnlineCa {
            lab,
            server: None,
            https: unbound,
            http: unbound,
            fingerprint: String::new(),
            started: 0,
        };
        ca.set("admins", &format!("[\"{admin}\"]"));
        for (k, v) in settings {
            ca.set(k, v);
        }
        let line = format!("cert issue --ca-dir ca --profile client --san {admin} --out admin");
        ca.tw(&line).ok();
        ca
    }

    /// Sets `key = value` (TOML) in the `[server]` section of ca.toml.
    pub fn set(&self, key: &str, value: &str) {
        let path = self.path("ca/ca.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        let mut in_server = false;
        let mut done = false;
        for line in text.lines() {
            if line.starts_with('[') {
                if in_server && !done {
                    out.push_str(&format!("{key} = {value}\n"));
                    done = true;
                }
                in_server = line.trim() == "[server]";
            }
            if in_server && line.starts_with(&format!("{key} =")) {
                out.push_str(&format!("{key} = {value}\n"));
                done = true;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        if !done {
            if !in_server {
                out.push_str("[server]\n");
            }
            out.push_str(&format!("{key} = {value}\n"));
        }
        std::fs::write(&path, out).unwrap();
    }

    /// Starts `twoway ca serve` on free ports (HTTPS and plain HTTP) and waits for its
    /// start-up lines.
    #[track_caller]
    pub fn serve(&mut self) {
        self.serve_with("", &[]);
    }

    /// [`OnlineCa::serve`] with a shell prefix (e.g. `umask 000;`) and extra arguments.
    #[track_caller]
    pub fn serve_with(&mut self, shell_prefix: &str, extra: &[&str]) {
        let s = self.spawn_server(shell_prefix, "127.0.0.1:0", "127.0.0.1:0", extra, &[]);
        self.adopt(s.ready());
    }

    /// [`OnlineCa::serve`] with the plain-HTTP listener (OCSP, CRL) on `http_listen`.
    #[track_caller]
    pub fn serve_http_on(&mut self, http_listen: &str) {
        let s = self.spawn_server("", "127.0.0.1:0", http_listen, &[], &[]);
        self.adopt(s.ready());
    }

    /// Kills the running server (SIGKILL), if any.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.server.kill();
        }
    }

    /// [`OnlineCa::serve`] with extra environment variables (a faked clock).
    #[track_caller]
    pub fn serve_env(&mut self, envs: &[(&str, String)]) {
        let s = self.spawn_server("", "127.0.0.1:0", "127.0.0.1:0", &[], envs);
        self.adopt(s.ready());
    }

    /// Kills the server (SIGKILL: no chance to finish anything), waits `down_for`, and
    /// starts it again on the same addresses with the same CA directory and inventory.
    #[track_caller]
    pub fn restart(&mut self, down_for: Duration) {
        if let Some(mut s) = self.server.take() {
            s.server.kill();
        }
        std::thread::sleep(down_for);
        let (https, http) = (self.https.to_string(), self.http.to_string());
        let s = self.spawn_server("", &https, &http, &[], &[]).ready();
        assert_eq!(
            (s.https, s.http, &s.fingerprint),
            (self.https, self.http, &self.fingerprint)
        );
        self.adopt(s);
    }

    /// [`OnlineCa::restart`] after a root rotation: the same addresses, a new root
    /// fingerprint (returned; the old one stays in `/roots.pem` until it is retired).
    #[track_caller]
    pub fn restart_with_new_root(&mut self) -> String {
        if let Some(mut s) = self.server.take() {
            s.server.kill();
        }
        let (https, http) = (self.https.to_string(), self.http.to_string());
        let s = self.spawn_server("", &https, &http, &[], &[]).ready();
        assert_eq!((s.https, s.http), (self.https, self.http));
        assert_ne!(s.fingerprint, self.fingerprint, "the root changed");
        let old = std::mem::take(&mut self.fingerprint);
        self.adopt(s);
        old
    }

    fn adopt(&mut self, s: CaServer) {
        self.https = s.https;
        self.http = s.http;
        self.fingerprint = s.fingerprint.clone();
        self.server = Some(s);
    }

    /// Starts another `twoway ca serve` on this CA directory without waiting for it; the
    /// caller waits with [`Starting::ready`].
    pub fn spawn_server(
        &mut self,
        shell_prefix: &str,
        listen: &str,
        http_listen: &str,
        extra: &[&str],
        envs: &[(&str, String)],
    ) -> Starting {
        let mut args = vec!["ca", "serve", "--ca-dir", "ca", "--listen", listen];
        args.extend(["--http-listen", http_listen]);
        args.extend_from_slice(extra);
        let mut cmd = if shell_prefix.is_empty() {
            self.cmd(&args)
        } else {
            let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
            self.sh_cmd(&format!(
                "{shell_prefix} exec \"$TWOWAY\" {}",
                quoted.join(" ")
            ))
        };
        cmd.env("RUST_LOG", "info")
            .envs(envs.iter().map(|(k, v)| (k, v)));
        self.started += 1;
        let log = self.path(&format!("serve-{}.log", self.started));
        Starting {
            server: Server::spawn("twoway ca serve", &mut cmd, &log),
        }
    }

    /// The running server.
    #[track_caller]
    fn server(&self) -> &CaServer {
        self.server.as_ref().expect("the CA is not serving")
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.server().server.pid()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.server.as_ref().map(|s| s.log()).unwrap_or_default()
    }

    /// `https://ADDR` of the running server.
    pub fn url(&self) -> String {
        format!("https://{}", self.https)
    }

    /// A client configuration trusting the CA's root, with the certificate in `client`
    /// (a directory holding chain.pem and key.pem) if given.
    pub fn client_config(&self, client: Option<&str>) -> Arc<rustls::ClientConfig> {
        let identity =
            client.map(|c| (self.path(c).join("chain.pem"), self.path(c).join("key.pem")));
        client_config(
            &self.path("ca/root.pem"),
            identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
    }

    /// The server's metrics (over the plain listener).
    #[track_caller]
    pub fn metrics(&self) -> String {
        self.server().metrics()
    }

    /// `curl URL` against the HTTPS listener (trusting the root, 5 s at most); returns the
    /// output (the body, a line feed, the status) and how long curl took.
    pub fn curl_https(&self, path: &str, extra: &[&str]) -> (Output, Duration) {
        let root = self.p("ca/root.pem");
        let url = format!("https://{}{path}", self.https);
        let mut args = vec!["-sS", "-m", "5", "--cacert", &root, "-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        timed_curl(&args)
    }

    /// `curl URL` against the plain listener: its status code and how long it took.
    pub fn curl_http(&self, path: &str) -> (Output, Duration) {
        let url = format!("http://{}{path}", self.http);
        timed_curl(&[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
    }

    /// `twoway --ca URL ARGS` as the administrator, against the running server.
    #[track_caller]
    pub fn remote(&self, args: &[&str]) -> Output {
        self.remote_to(self.server(), args)
    }

    /// `twoway --ca URL ARGS` as the administrator, against `server`.
    #[track_caller]
    pub fn remote_to(&self, server: &CaServer, args: &[&str]) -> Output {
        self.lab.remote(&server.url(), args)
    }

    /// `token create ARGS` (e.g. `--san DNS:a.example.internal --profile server`) through
    /// the remote CLI; the token.
    #[track_caller]
    pub fn token(&self, args: &str) -> String {
        let args = super::process::words(&format!("token create {args}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.remote(&args).ok().line()
    }

    /// `twoway agent --once` for `san` into `out`, trusting the root by its fingerprint,
    /// enrolling with `token` when given.
    #[track_caller]
    pub fn agent_once(&self, token: Option<&str>, san: &str, out: &str) -> Output {
        let url = self.url();
        let mut a = vec!["agent", "--ca", &url, "--ca-fingerprint", &self.fingerprint];
        a.extend(["--san", san, "--out", out, "--once"]);
        if let Some(t) = token {
            a.extend_from_slice(&["--token", t]);
        }
        self.tw_args(&a)
    }

    /// A token for `san` with `token_options` (`--profile client`), and `twoway agent
    /// --once` enrolling with it into `out`, which must succeed.
    #[track_caller]
    pub fn enroll_agent(&self, san: &str, out: &str, token_options: &str) -> Output {
        let token = self.token(&format!("--san {san} {token_options}"));
        self.agent_once(Some(&token), san, out).ok()
    }

    /// POSTs `body` to the API of the running server with curl (optionally with the client
    /// certificate in the directory `client`); returns the status and the JSON answer.
    pub fn post(&self, path: &str, body: &[u8], client: Option<&str>) -> (u16, Value) {
        self.post_to(self.server(), path, body, client)
    }

    /// [`OnlineCa::post`] with a JSON value.
    pub fn post_json(&self, path: &str, body: &Value, client: Option<&str>) -> (u16, Value) {
        self.post(path, body.to_string().as_bytes(), client)
    }

    /// [`OnlineCa::post`] to `server`.
    pub fn post_to(
        &self,
        server: &CaServer,
        path: &str,
        body: &[u8],
        client: Option<&str>,
    ) -> (u16, Value) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let f = self.path(&format!("body-{}.json", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&f, body).unwrap();
        let data = format!("@{}", f.display());
        let (root, url) = (self.p("ca/root.pem"), format!("{}{path}", server.url()));
        let mut args = vec!["-sS", "-m", "30", "--cacert", &root];
        args.extend([
            "-H",
            "content-type: application/json",
            "--data-binary",
            &data,
        ]);
        args.extend(["-w", "\n%{http_code}"]);
        let (c, k);
        if let Some(dir) = client {
            (c, k) = (
                self.p(&format!("{dir}/chain.pem")),
                self.p(&format!("{dir}/key.pem")),
            );
            args.extend_from_slice(&["--cert", &c, "--key", &k]);
        }
        args.push(&url);
        let (o, _) = timed_curl(&args);
        let (json, code) = o.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(json).unwrap_or(Value::Null),
        )
    }

    /// `openssl ocsp` for the certificate file `cert` (relative to the lab) against the
    /// running server; the answer must verify. Returns what openssl printed.
    #[track_caller]
    pub fn ocsp(&self, cert: &str) -> String {
        self.ocsp_to(self.server(), cert)
    }

    /// [`OnlineCa::ocsp`] against `server`.
    #[track_caller]
    pub fn ocsp_to(&self, server: &CaServer, cert: &str) -> String {
        let url = format!("http://{}/ocsp", server.http);
        let o = self.openssl(&format!(
            "ocsp -timeout 5 -issuer ca/intermediate.pem -cert {cert} -url {url} -CAfile ca/root.pem"
        ));
        let out = format!("{}{}", o.stdout, o.stderr);
        assert!(out.contains("Response verify OK"), "openssl ocsp: {out}");
        out
    }

    /// The CRL of `server` (DER over plain HTTP, by curl) as `openssl crl -text` prints
    /// it, in lower case.
    #[track_caller]
    pub fn crl_text_to(&self, server: &CaServer) -> String {
        let url = format!("http://{}/crl", server.http);
        self.tool_args("curl", &["-sS", "--max-time", "30", "-o", "crl.der", &url])
            .ok();
        let t = self
            .openssl("crl -inform DER -in crl.der -noout -text")
            .ok();
        t.stdout.to_ascii_lowercase()
    }

    /// [`OnlineCa::crl_text_to`] the running server.
    #[track_caller]
    pub fn crl_text(&self) -> String {
        self.crl_text_to(self.server())
    }

    /// The number of certificates in the inventory, through the remote CLI.
    #[track_caller]
    pub fn count(&self) -> u64 {
        let v = self
            .remote(&["cert", "list", "--json", "--limit", "1"])
            .ok()
            .json();
        v["total"].as_u64().unwrap()
    }

    /// The number of certificates in the inventory, read from the CA directory.
    #[track_caller]
    pub fn count_offline(&self) -> u64 {
        let v = self
            .tw("cert list --ca-dir ca --json --limit 1")
            .ok()
            .json();
        v["total"].as_u64().unwrap()
    }
}

/// A `ca serve` started but not yet known to listen.
pub struct Starting {
    server: Server,
}

impl Starting {
    /// Waits (at most 60 s) for the server's start-up lines: its addresses and the root's
    /// fingerprint.
    #[track_caller]
    pub fn ready(mut self) -> CaServer {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.server.log();
            let after = |prefix: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(|a| a.trim().to_string())
            };
            let https = after("twoway CA serving https://").and_then(|a| a.parse().ok());
            let http = after("OCSP, CRL and roots also on http://").and_then(|a| a.parse().ok());
            let fingerprint = after("root fingerprint (SHA-256) ");
            if let (Some(https), Some(http), Some(fingerprint)) = (https, http, fingerprint) {
                return CaServer {
                    server: self.server,
                    https,
                    http,
                    fingerprint,
                };
            }
            self.server.assert_running("before printing its addresses");
            assert!(
                Instant::now() < deadline,
                "ca serve did not start within {START_TIMEOUT:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

/// A running `twoway ca serve`, killed on drop.
pub struct CaServer {
    server: Server,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub fingerprint: String,
}

impl CaServer {
    /// `https://ADDR`.
    pub fn url(&self) -> String {
        format!("https://{}", self.https)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// The server's metrics (over the plain listener).
    #[track_caller]
    pub fn metrics(&self) -> String {
        let (status, body) = plain_request(
            self.http,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn timed_curl(args: &[&str]) -> (Output, Duration) {
    require_tool("curl", "curl");
    let start = Instant::now();
    let o = run_tool("curl", args);
    (o, start.elapsed())
}
