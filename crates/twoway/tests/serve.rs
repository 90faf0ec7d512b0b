//! `twoway ca serve` as an operator meets it: what it says at start, its admins reloaded on
//! SIGHUP, its own certificates retired instead of piling up across restarts and renewals,
//! and `cert check` quiet about what renews itself. The real binary, curl-free, 127.0.0.1
//! only; every wait is bounded.

mod common;

use common::{free_port, read, run, tempdir, write, Output, Server, TWOWAY};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const EXIT_NOPERM: i32 = 77;
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const ADMIN: &str = "URI:spiffe://serve.test/admin";

struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    /// A CA in `ca` (trust domain serve.test) and an admin client certificate in `admin`,
    /// not yet listed in `[server] admins`.
    fn new() -> Lab {
        let lab = Lab { dir: tempdir() };
        lab.tw(&[
            "ca",
            "init",
            "--name",
            "Serve Test",
            "--trust-domain",
            "serve.test",
        ])
        .ok();
        lab.tw(&[
            "cert",
            "issue",
            "--profile",
            "client",
            "--san",
            ADMIN,
            "--out",
            "admin",
        ])
        .ok();
        lab
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(TWOWAY);
        c.current_dir(self.dir.path())
            .env_remove("TWOWAY_CA_URL")
            .env_remove("TWOWAY_DATABASE")
            .env_remove("TWOWAY_PASSPHRASE_FILE")
            .env_remove("RUST_LOG")
            .env("TWOWAY_CA_DIR", self.path("ca"))
            .env("TWOWAY_ACTOR", "test:serve")
            .args(args);
        c
    }

    #[track_caller]
    fn tw(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    fn serve(&self, port: u16, extra: &[&str]) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["ca", "serve", "--listen", &listen, "--san", "IP:127.0.0.1"];
        args.extend_from_slice(extra);
        let mut s = Server::spawn(
            "ca serve",
            &mut self.cmd(&args),
            &self.path(&format!("serve-{port}.log")),
        );
        s.wait_for_port(port);
        s
    }

    fn remote(&self, port: u16, args: &[&str]) -> Output {
        let url = format!("https://127.0.0.1:{port}");
        let mut a = vec![
            "--ca",
            &url,
            "--cert",
            "admin/chain.pem",
            "--key",
            "admin/key.pem",
            "--ca-cert",
            "ca/root.pem",
        ];
        a.extend_from_slice(args);
        self.tw(&a)
    }

    /// The active certificates the server holds for itself.
    fn server_rows(&self) -> Vec<Value> {
        let o = self
            .tw(&[
                "cert",
                "list",
                "--owner",
                "twoway-server",
                "--status",
                "active",
                "--json",
                "--limit",
                "1000",
            ])
            .ok();
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v["items"].as_array().unwrap().clone()
    }
}

/// Sends `sig` (TERM, HUP) to the server and, for TERM, waits (at most 15 s) for it to end.
fn signal(server: &mut Server, sig: &str) {
    let o = run(Command::new("kill").args([&format!("-{sig}"), &server.pid().to_string()]));
    assert!(o.success(), "{o}");
}

fn wait_for_exit(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if !std::path::Path::new(&format!("/proc/{}", server.pid())).exists()
            || read(format!("/proc/{}/stat", server.pid())).contains(") Z ")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "ca serve did not stop within 15 s of SIGTERM:\n{}",
        server.log()
    );
}

#[test]
fn serve_says_what_it_serves_and_reloads_its_admins_on_sighup() {
    let lab = Lab::new();
    let port = free_port();
    let mut server = lab.serve(port, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("admins") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    assert!(log.contains("IP:127.0.0.1"), "the names it serves:\n{log}");
    assert!(log.contains("admins"), "who its admins are:\n{log}");
    assert!(log.contains("SIGHUP"), "how to change them:\n{log}");

    // Not an admin yet: refused, with its own exit code and a message naming the fix.
    let o = lab.remote(port, &["cert", "list"]).code(EXIT_NOPERM);
    assert!(o.stderr.contains("[server] admins"), "{o}");

    // Listed in ca.toml, then SIGHUP: admitted without a restart.
    let toml = lab.path("ca/ca.toml");
    let text = read(&toml).replace("admins = []", &format!("admins = [\"{ADMIN}\"]"));
    write(&toml, text);
    signal(&mut server, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = lab.remote(port, &["cert", "list"]);
    while !last.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        last = lab.remote(port, &["cert", "list"]);
    }
    assert!(
        last.success(),
        "admitted after SIGHUP:\n{last}\n{}",
        server.log()
    );
    assert!(server.log().contains(ADMIN), "{}", server.log());

    // A broken ca.toml keeps the running admins, and says why.
    write(&toml, read(&toml).replace("admins = [", "admins = [[["));
    signal(&mut server, "HUP");
    std::thread::sleep(Duration::from_secs(1));
    lab.remote(port, &["cert", "list"]).ok();
    assert!(server.log().contains("ca.toml"), "{}", server.log());

    // The help exit-code list documents the refusal.
    let o = lab.tw(&["--help"]).ok();
    assert!(o.stdout.contains("403"), "{o}");
}

#[test]
fn restarts_and_renewals_leave_one_active_certificate_per_role() {
    let lab = Lab::new();
    let port = free_port();
    for round in 0..3 {
        let mut server = lab.serve(port, &[]);
        let rows = lab.server_rows();
        assert_eq!(
            rows.len(),
            2,
            "round {round}: one TLS and one OCSP-signing certificate active:\n{rows:#?}"
        );
        signal(&mut server, "TERM");
        wait_for_exit(&server);
        assert!(
            lab.server_rows().is_empty(),
            "round {round}: a stopped server retires its certificates:\n{}",
            server.log()
        );
    }
    // Renewing its own certificate supersedes the one it replaces.
    let mut server = lab.serve(port, &["--server-cert-ttl", "15s"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let renewed = || {
        let o = lab
            .tw(&[
                "cert",
                "list",
                "--owner",
                "twoway-server",
                "--profile",
                "server",
                "--status",
                "revoked",
                "--json",
            ])
            .ok();
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v["total"].as_u64().unwrap()
    };
    let before = renewed();
    while renewed() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(renewed() > before, "renewed within 40 s:\n{}", server.log());
    assert_eq!(lab.server_rows().len(), 2, "{:#?}", lab.server_rows());
    signal(&mut server, "TERM");
    wait_for_exit(&server);
}

#[test]
fn cert_check_is_quiet_about_what_renews_itself() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "libfaketime is missing: apt-get install faketime"
    );
    let lab = Lab::new();
    let toml = lab.path("ca/ca.toml");
    write(
        &toml,
        read(&toml).replace("admins = []", &format!("admins = [\"{ADMIN}\"]")),
    );
    let port = free_port();
    let _server = lab.serve(port, &[]);
    let token = lab
        .remote(
            port,
            &[
                "token",
                "create",
                "--san",
                "DNS:api.serve.test",
                "--profile",
                "server",
            ],
        )
        .ok()
        .stdout
        .trim()
        .to_string();
    let fp = lab.tw(&["ca", "show", "--json"]).ok();
    let fp: Value = serde_json::from_str(&fp.stdout).unwrap();
    let fp = fp["root"]["fingerprint"].as_str().unwrap().to_string();
    let url = format!("https://127.0.0.1:{port}");
    lab.tw(&[
        "agent",
        "--ca",
        &url,
        "--ca-fingerprint",
        &fp,
        "--token",
        &token,
        "--san",
        "DNS:api.serve.test",
        "--out",
        "workload",
        "--once",
    ])
    .ok();
    assert!(lab.path("workload/cert.pem").exists());
    // The server's TLS and OCSP certificates and the agent's 24 h certificate all expire
    // within 14 days, and none needs a person.
    let o = lab.tw(&["cert", "check", "--within", "14d"]).ok();
    assert!(o.stdout.contains("Nothing"), "{o}");
    let v: Value = serde_json::from_str(
        &lab.tw(&["cert", "check", "--within", "14d", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["expiring"].as_array().unwrap().len(), 0, "{v:#}");
    assert!(v["auto_renewed"].as_u64().unwrap() >= 3, "{v:#}");

    // A certificate a person issued, expiring in a week, is reported.
    lab.tw(&[
        "cert",
        "issue",
        "--profile",
        "server",
        "--san",
        "DNS:manual.serve.test",
        "--ttl",
        "7d",
        "--out",
        "manual",
    ])
    .ok();
    let o = lab.tw(&["cert", "check", "--within", "14d"]).code(1);
    assert!(o.stdout.contains("DNS:manual.serve.test"), "{o}");
    assert!(!o.stdout.contains("api.serve.test"), "{o}");

    // An agent certificate well past its renewal point (nobody renewed it) is reported:
    // 20 hours into its 24.
    let later = run(lab
        .cmd(&["cert", "check", "--within", "14d", "--json"])
        .env("LD_PRELOAD", FAKETIME)
        .env("FAKETIME", "+20h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"));
    assert_eq!(later.code, Some(1), "{later}");
    let v: Value = serde_json::from_str(&later.stdout).unwrap();
    let names: Vec<String> = v["expiring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sans"][0].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(names.contains(&"DNS:api.serve.test".to_string()), "{v:#}");

    // Profiles declared auto-renewed in ca.toml are not reported.
    let text = read(&toml);
    assert!(
        text.contains("[renewal]"),
        "ca.toml documents [renewal]:\n{text}"
    );
    write(
        &toml,
        text.replace("auto_owners = []", "auto_owners = [\"team-manual\"]"),
    );
    lab.tw(&[
        "cert",
        "issue",
        "--profile",
        "client",
        "--san",
        "URI:spiffe://serve.test/batch",
        "--ttl",
        "7d",
        "--owner",
        "team-manual",
        "--out",
        "batch",
    ])
    .ok();
    let o = lab.tw(&["cert", "check", "--within", "14d"]).code(1);
    assert!(!o.stdout.contains("spiffe://serve.test/batch"), "{o}");

    // The agent once more: nothing to do, and the renewal time in RFC 3339 (without colour,
    // so only the format is judged).
    let o = run(lab
        .cmd(&[
            "agent",
            "--ca",
            &url,
            "--ca-fingerprint",
            &fp,
            "--san",
            "DNS:api.serve.test",
            "--out",
            "workload",
            "--once",
        ])
        .env("NO_COLOR", "1"))
    .ok();
    let at = o
        .stderr
        .split("renew_at=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("the agent says when it renews:\n{o}"));
    assert!(
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
        "renew_at {at:?} is RFC 3339:\n{o}"
    );
}
