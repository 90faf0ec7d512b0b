//! `twoway ca serve` as an operator meets it: what it says at start, its admins reloaded on
//! SIGHUP, its own certificates kept across restarts and superseded when renewed,
//! and `cert check` quiet about what renews itself. The real binary, curl-free, 127.0.0.1
//! only; every wait is bounded.

mod common;

use common::lab::{Lab, EXIT_NOPERM};
use common::{free_port, read, require_faketime, run, words, write, Output, Server, FAKETIME};
use serde_json::Value;
use std::time::{Duration, Instant};

const ADMIN: &str = "URI:spiffe://serve.test/admin";

/// A CA in `ca` (trust domain serve.test, found through TWOWAY_CA_DIR) and an admin
/// client certificate in `admin`, not yet listed in `[server] admins`.
fn lab() -> Lab {
    let lab = Lab::with_ca_dir_env("test:serve");
    lab.tw_args(&[
        "ca",
        "init",
        "--name",
        "Serve Test",
        "--trust-domain",
        "serve.test",
    ])
    .ok();
    lab.tw(&format!(
        "cert issue --profile client --san {ADMIN} --out admin"
    ))
    .ok();
    lab
}

/// `ca serve` on 127.0.0.1:`port` (named IP:127.0.0.1) with `extra` options.
fn serve(lab: &Lab, port: u16, extra: &[&str]) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["ca", "serve", "--listen", &listen, "--san", "IP:127.0.0.1"];
    args.extend_from_slice(extra);
    let mut s = Server::spawn(
        "ca serve",
        &mut lab.cmd(&args),
        &lab.path(&format!("serve-{port}.log")),
    );
    s.wait_for_port(port);
    s
}

/// The remote CLI as the admin against the server on `port`.
fn remote(lab: &Lab, port: u16, args: &[&str]) -> Output {
    lab.remote(&format!("https://127.0.0.1:{port}"), args)
}

/// The active certificates the server holds for itself.
fn server_rows(lab: &Lab) -> Vec<Value> {
    let line = "cert list --owner twoway-server --status active --json --limit 1000";
    let v = lab.tw(line).ok().json();
    v["items"].as_array().unwrap().clone()
}

/// Sends SIGTERM and waits (at most 15 s) for the server to end.
fn terminate(server: &mut Server) {
    server.signal("TERM");
    server.wait_for_exit(Duration::from_secs(15));
}

#[test]
fn serve_says_what_it_serves_and_reloads_its_admins_on_sighup() {
    let lab = lab();
    let port = free_port();
    let server = serve(&lab, port, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("admins") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    assert!(log.contains("IP:127.0.0.1"), "the names it serves:\n{log}");
    assert!(log.contains("admins"), "who its admins are:\n{log}");
    assert!(log.contains("SIGHUP"), "how to change them:\n{log}");

    // Not an admin yet: refused, with its own exit code and a message naming the fix.
    let o = remote(&lab, port, &["cert", "list"]).code(EXIT_NOPERM);
    assert!(o.stderr.contains("[server] admins"), "{o}");

    // Listed in ca.toml, then SIGHUP: admitted without a restart.
    let toml = lab.path("ca/ca.toml");
    let text = read(&toml).replace("admins = []", &format!("admins = [\"{ADMIN}\"]"));
    write(&toml, text);
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = remote(&lab, port, &["cert", "list"]);
    while !last.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        last = remote(&lab, port, &["cert", "list"]);
    }
    assert!(
        last.success(),
        "admitted after SIGHUP:\n{last}\n{}",
        server.log()
    );
    assert!(server.log().contains(ADMIN), "{}", server.log());

    // A broken ca.toml keeps the running admins, and says why.
    write(&toml, read(&toml).replace("admins = [", "admins = [[["));
    server.signal("HUP");
    std::thread::sleep(Duration::from_secs(1));
    remote(&lab, port, &["cert", "list"]).ok();
    assert!(server.log().contains("ca.toml"), "{}", server.log());

    // The help exit-code list documents the refusal.
    let o = lab.tw("--help").ok();
    assert!(o.stdout.contains("403"), "{o}");
}

/// The fingerprints of the server's active certificates, sorted.
fn server_fingerprints(lab: &Lab) -> Vec<String> {
    let mut fps: Vec<String> = server_rows(lab)
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap().to_string())
        .collect();
    fps.sort();
    fps
}

/// Every certificate the server ever issued itself, active or not.
fn server_total(lab: &Lab) -> u64 {
    let line = "cert list --owner twoway-server --json --limit 1";
    lab.tw(line).ok().json()["total"].as_u64().unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn restarts_reuse_the_kept_certificates_and_renewals_supersede_them() {
    let lab = lab();
    let port = free_port();
    let mut first: Option<Vec<String>> = None;
    for round in 0..3 {
        let mut server = serve(&lab, port, &[]);
        let fps = server_fingerprints(&lab);
        assert_eq!(
            fps.len(),
            2,
            "round {round}: one TLS and one OCSP-signing certificate active:\n{}",
            server.log()
        );
        match &first {
            None => first = Some(fps),
            Some(f) => assert_eq!(&fps, f, "round {round}: a restart issues nothing new"),
        }
        terminate(&mut server);
        assert_eq!(
            server_fingerprints(&lab).len(),
            2,
            "round {round}: a stopped server keeps its certificates for the next start"
        );
    }
    assert_eq!(
        server_total(&lab),
        2,
        "three starts, two certificates in all"
    );
    // Kept in the CA directory: 0700, each file 0600 with the certificate and its key.
    let kept = lab.path("ca/serve");
    assert_eq!(mode(&kept), 0o700);
    for f in ["tls.pem", "ocsp.pem"] {
        let p = kept.join(f);
        assert_eq!(mode(&p), 0o600, "{f}");
        let text = read(&p);
        assert!(text.contains("BEGIN CERTIFICATE") && text.contains("BEGIN PRIVATE KEY"));
    }

    // A kept file others could read is not trusted: a new certificate, the old superseded.
    {
        use std::os::unix::fs::PermissionsExt;
        let p = kept.join("tls.pem");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut server = serve(&lab, port, &[]);
    let fps = server_fingerprints(&lab);
    assert_eq!(fps.len(), 2, "{fps:?}");
    let old = first.unwrap();
    assert_eq!(
        fps.iter().filter(|f| old.contains(f)).count(),
        1,
        "only the TLS one is new"
    );
    assert!(
        server.log().contains("readable by others"),
        "{}",
        server.log()
    );
    assert_eq!(mode(&kept.join("tls.pem")), 0o600);
    terminate(&mut server);
    assert_eq!(server_total(&lab), 3);

    // A shorter lifetime than the kept certificate's: a new one at start (the kept one
    // superseded), and renewing it supersedes the one it replaces.
    let mut server = serve(&lab, port, &["--server-cert-ttl", "15s"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let renewed = || {
        let line = "cert list --owner twoway-server --profile server --status revoked --json";
        lab.tw(line).ok().json()["total"].as_u64().unwrap()
    };
    let before = renewed();
    assert!(
        before >= 2,
        "the two replaced TLS certificates are superseded: {before}"
    );
    while renewed() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(renewed() > before, "renewed within 40 s:\n{}", server.log());
    assert_eq!(server_rows(&lab).len(), 2, "{:#?}", server_rows(&lab));
    terminate(&mut server);
}

/// With encrypted CA keys the kept keys are encrypted with the same passphrase, and a
/// restart given it uses them again.
#[test]
fn kept_keys_of_an_encrypted_ca_are_encrypted() {
    let lab = Lab::with_ca_dir_env("test:serve-encrypted");
    write(lab.path("pass.txt"), "correct horse battery staple\n");
    lab.tw("ca init --name Sealed --trust-domain sealed.test --passphrase-file pass.txt")
        .ok();
    let port = free_port();
    let pass = lab.path("pass.txt");
    let pass = pass.to_str().unwrap();
    let mut fps = Vec::new();
    for _ in 0..2 {
        let mut server = serve(&lab, port, &["--passphrase-file", pass]);
        fps.push(server_fingerprints(&lab));
        terminate(&mut server);
    }
    assert_eq!(fps[0].len(), 2, "{fps:?}");
    assert_eq!(
        fps[0], fps[1],
        "the second start used the kept certificates"
    );
    for f in ["tls.pem", "ocsp.pem"] {
        let text = read(lab.path(&format!("ca/serve/{f}")));
        assert!(text.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{f}: {text}");
        assert!(!text.contains("BEGIN PRIVATE KEY"), "{f}");
    }
}

#[test]
fn cert_check_is_quiet_about_what_renews_itself() {
    require_faketime();
    let lab = lab();
    let toml = lab.path("ca/ca.toml");
    write(
        &toml,
        read(&toml).replace("admins = []", &format!("admins = [\"{ADMIN}\"]")),
    );
    let port = free_port();
    let _server = serve(&lab, port, &[]);
    let create = [
        "token",
        "create",
        "--san",
        "DNS:api.serve.test",
        "--profile",
        "server",
    ];
    let token = remote(&lab, port, &create).ok().line();
    let fp = lab.tw("ca show --json").ok().json();
    let fp = fp["root"]["fingerprint"].as_str().unwrap().to_string();
    let url = format!("https://127.0.0.1:{port}");
    let agent = format!(
        "agent --ca {url} --ca-fingerprint {fp} --san DNS:api.serve.test --out workload --once"
    );
    lab.tw(&format!("{agent} --token {token}")).ok();
    assert!(lab.path("workload/cert.pem").exists());
    // The server's TLS and OCSP certificates and the agent's 24 h certificate all expire
    // within 14 days, and none needs a person.
    let o = lab.tw("cert check --within 14d").ok();
    assert!(o.stdout.contains("Nothing"), "{o}");
    let v = lab.tw("cert check --within 14d --json").ok().json();
    assert_eq!(v["expiring"].as_array().unwrap().len(), 0, "{v:#}");
    assert!(v["auto_renewed"].as_u64().unwrap() >= 3, "{v:#}");

    // A certificate a person issued, expiring in a week, is reported.
    lab.tw("cert issue --profile server --san DNS:manual.serve.test --ttl 7d --out manual")
        .ok();
    let o = lab.tw("cert check --within 14d").code(1);
    assert!(o.stdout.contains("DNS:manual.serve.test"), "{o}");
    assert!(!o.stdout.contains("api.serve.test"), "{o}");

    // An agent certificate well past its renewal point (nobody renewed it) is reported:
    // 20 hours into its 24.
    let later = run(lab
        .cmd(&words("cert check --within 14d --json"))
        .env("LD_PRELOAD", FAKETIME)
        .env("FAKETIME", "+20h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"));
    assert_eq!(later.code, Some(1), "{later}");
    let v = later.json();
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
    lab.tw(
        "cert issue --profile client --san URI:spiffe://serve.test/batch --ttl 7d \
         --owner team-manual --out batch",
    )
    .ok();
    let o = lab.tw("cert check --within 14d").code(1);
    assert!(!o.stdout.contains("spiffe://serve.test/batch"), "{o}");

    // The agent once more: nothing to do, and the renewal time in RFC 3339 (without colour,
    // so only the format is judged).
    let o = run(lab.cmd(&words(&agent)).env("NO_COLOR", "1")).ok();
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

/// The audit checkpoints `ca serve` writes by itself (`[server] audit_checkpoint_interval`):
/// one soon after start, which `audit verify --checkpoint` accepts; none more while nothing
/// is logged (its own `audit.checkpoint` entry does not count); a new one once the log has
/// grown. (That a checkpoint catches removed entries: `ca_inventory.rs`.)
#[test]
fn serve_writes_audit_checkpoints_when_the_log_grows() {
    let lab = lab();
    let toml = lab.path("ca/ca.toml");
    let text = read(&toml);
    assert!(
        text.contains("audit_checkpoint_interval = \"1h\""),
        "a new ca.toml documents the default"
    );
    write(
        &toml,
        text.replace(
            "audit_checkpoint_interval = \"1h\"",
            "audit_checkpoint_interval = \"1s\"",
        ),
    );
    let port = free_port();
    let mut server = serve(&lab, port, &[]);
    let dir = lab.path("ca/audit-checkpoints");
    let files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let wait_for = |n: usize| {
        let t = Instant::now();
        while files().len() < n && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        files()
    };
    let first = wait_for(1);
    assert_eq!(
        first.len(),
        1,
        "no checkpoint written: {first:?}\n{}",
        server.log()
    );
    let cp = format!("ca/audit-checkpoints/{}", first[0]);
    let out = lab.tw(&format!("audit verify --checkpoint {cp}")).ok();
    assert!(out.stdout.contains("intact"), "{out}");

    // idle: nothing logged but the checkpoint itself, so no second one
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(files(), first, "a checkpoint of nothing new");

    // the log grows: a new checkpoint, further along
    lab.tw("cert issue --profile server --san DNS:grown.serve.test --out grown")
        .ok();
    let both = wait_for(2);
    assert_eq!(both.len(), 2, "no checkpoint after the log grew: {both:?}");
    let seq = |f: &str| -> i64 {
        let v: Value =
            serde_json::from_str(&read(lab.path(&format!("ca/audit-checkpoints/{f}")))).unwrap();
        v["seq"].as_i64().unwrap()
    };
    assert_ne!(seq(&both[0]), seq(&both[1]), "two checkpoints of one entry");
    for f in &both {
        let out = lab
            .tw(&format!(
                "audit verify --checkpoint ca/audit-checkpoints/{f}"
            ))
            .ok();
        assert!(out.stdout.contains("intact"), "{out}");
    }
    terminate(&mut server);
}
