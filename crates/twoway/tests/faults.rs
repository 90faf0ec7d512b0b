//! Faults under the online CA, as its clients see them: the PostgreSQL server restarted,
//! stopped and paused (SIGSTOP) under an issuance load, and the SQLite inventory's file
//! system full; the agent's output directory full or remounted read-only when a renewal
//! is due. Meanwhile the CA answers 503 with `Retry-After`, no request waits past the
//! CA's own deadline, nothing a client received is lost, and issuance comes back by itself
//! once the database does, without restarting `ca serve`.
//!
//! The real binary and a PostgreSQL server of the test's own (initdb on a free port, run as
//! the postgres user) so that restarting it disturbs no other test; the full or read-only disk
//! is a small tmpfs mounted for the test (root). Every wait is bounded.

mod common;

use common::http::try_post;
use common::online::OnlineCa;
use common::pg::PrivatePg;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &str = "URI:spiffe://faults.test/admin";
/// How long a client waits for an answer: well past the CA's own deadline for a request
/// that waits on the database, so a hang shows as a cut request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest the CA may take to answer while the database is away.
const ANSWER_WITHIN: Duration = Duration::from_secs(9);

/// One answer as the client saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    took: Duration,
    /// The status (0: no answer), the Retry-After header, the body.
    status: u16,
    retry_after: Option<String>,
    body: String,
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["faults.example.internal".into()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// `POST /v1/sign` as the administrator in `threads` threads until `stop`.
struct Load {
    addr: SocketAddr,
    admin: Arc<rustls::ClientConfig>,
    stop: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

impl Load {
    fn new(ca: &OnlineCa) -> Load {
        Load {
            addr: ca.https,
            admin: ca.client_config(Some("admin")),
            stop: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn sign(&self) -> Seen {
        let body = json!({"csr": csr(), "profile": "server", "ttl": "24h"}).to_string();
        let at = Instant::now();
        let answer = try_post(
            self.addr,
            self.admin.clone(),
            "/v1/sign",
            &body,
            CLIENT_TIMEOUT,
        );
        let took = at.elapsed();
        let (status, head, body) = answer.unwrap_or_default();
        let retry_after = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().to_string())
        });
        Seen {
            at,
            took,
            status,
            retry_after,
            body,
        }
    }

    fn run(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let s = self.sign();
            let failed = s.status != 201;
            self.seen.lock().unwrap().push(s);
            if failed {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Waits (at most `limit`) until a signing succeeds again; how long it took.
    fn until_issuing(&self, limit: Duration) -> Duration {
        let t = Instant::now();
        while t.elapsed() < limit {
            let s = self.sign();
            if s.status == 201 {
                self.seen.lock().unwrap().push(s);
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("issuance did not come back within {limit:?}");
    }
}

/// Every answer was a certificate or a 503 with Retry-After and a reason, each within
/// [`ANSWER_WITHIN`]; returns how many 503s there were.
fn check_answers(seen: &[Seen]) -> usize {
    let mut unavailable = 0;
    for s in seen {
        assert!(
            s.took <= ANSWER_WITHIN,
            "a request waited {:?} (status {}): the CA must answer within {ANSWER_WITHIN:?}",
            s.took,
            s.status
        );
        match s.status {
            201 => {}
            503 => {
                unavailable += 1;
                let ra = s.retry_after.as_deref().unwrap_or("");
                assert!(
                    ra.parse::<u64>().is_ok_and(|n| (1..=60).contains(&n)),
                    "503 without a usable Retry-After ({ra:?}): {}",
                    s.body
                );
                let v: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
                let msg = v["error"]["message"].as_str().unwrap_or("");
                assert!(
                    msg.contains("retry"),
                    "503 whose message does not say to retry: {}",
                    s.body
                );
            }
            other => panic!(
                "unexpected answer {other} while the database was away: {}",
                s.body
            ),
        }
    }
    unavailable
}

/// Every certificate a client received is in the inventory.
fn check_recorded(ca: &OnlineCa, seen: &[Seen]) {
    let list = ca
        .tw("cert list --ca-dir ca --json --limit 1000000")
        .ok()
        .json();
    let fps: std::collections::HashSet<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap())
        .collect();
    let mut n = 0;
    for s in seen.iter().filter(|s| s.status == 201) {
        let v: Value = serde_json::from_str(&s.body).unwrap();
        let fp = v["fingerprint"].as_str().unwrap();
        assert!(
            fps.contains(fp),
            "certificate {fp} was answered but is not recorded"
        );
        n += 1;
    }
    assert!(n > 0, "no certificate was issued at all");
    let verify = ca.tw("audit verify --ca-dir ca --json").ok().json();
    assert_eq!(verify["ok"], json!(true), "{verify}");
}

fn ca_on(pg: &PrivatePg) -> OnlineCa {
    let url = format!("\"{}\"", pg.url());
    let settings = [("database", url.as_str())];
    let mut ca = OnlineCa::create("Faults Test", ADMIN, "", &settings);
    ca.serve();
    ca
}

#[test]
fn postgres_restarted_and_stopped_under_load_answers_503_then_recovers() {
    let pg = PrivatePg::start();
    let ca = ca_on(&pg);
    let load = Load::new(&ca);
    let (restarted, recovered) = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| load.run());
        }
        std::thread::sleep(Duration::from_secs(1));
        // a restart drops every connection the CA holds
        pg.ctl(&["restart"]);
        let restarted = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        // then the database is away for a while
        pg.ctl(&["stop"]);
        std::thread::sleep(Duration::from_secs(3));
        pg.ctl(&["start"]);
        let recovered = load.until_issuing(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(500));
        load.stop.store(true, Ordering::Relaxed);
        (restarted, recovered)
    });
    let seen = load.seen.into_inner().unwrap();
    let unavailable = check_answers(&seen);
    assert!(
        unavailable > 0,
        "no request saw the database away: the test did not exercise the outage"
    );
    assert!(
        seen.iter().any(|s| s.status == 201 && s.at > restarted),
        "nothing was issued after the restart"
    );
    eprintln!(
        "{} requests, {unavailable} answered 503; issuing again {recovered:?} after the database started",
        seen.len()
    );
    check_recorded(&ca, &seen);
}

#[test]
fn postgres_paused_under_load_answers_503_within_the_deadline_then_recovers() {
    let pg = PrivatePg::start();
    let ca = ca_on(&pg);
    let load = Load::new(&ca);
    let recovered = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| load.run());
        }
        std::thread::sleep(Duration::from_secs(1));
        // the database keeps its connections open and answers nothing
        pg.pause(true);
        std::thread::sleep(Duration::from_secs(12));
        pg.pause(false);
        let recovered = load.until_issuing(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(500));
        load.stop.store(true, Ordering::Relaxed);
        recovered
    });
    let seen = load.seen.into_inner().unwrap();
    let unavailable = check_answers(&seen);
    assert!(unavailable > 0, "no request saw the database paused");
    eprintln!(
        "{} requests, {unavailable} answered 503; issuing again {recovered:?} after SIGCONT",
        seen.len()
    );
    check_recorded(&ca, &seen);
}

/// Unmounts the test's small file system when the test ends, even when it fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

/// Fills the file system holding `path` with one file until it is full; returns its size.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0u64;
    for _ in 0..100_000 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

#[test]
fn inventory_file_system_full_refuses_issuance_cleanly_and_recovers() {
    // the CA directory, inventory included, on a 4 MiB tmpfs of the test's own
    let mount = "mkdir ca && mount -t tmpfs -o size=4m,mode=0700 tmpfs ca || \
                 { echo 'mounting a tmpfs needs root (CI runs as root)' >&2; exit 1; };";
    let mut ca = OnlineCa::create("Faults Test", ADMIN, mount, &[]);
    let _unmount = Unmount(ca.path("ca"));
    ca.serve();
    let load = Load::new(&ca);
    // a few certificates while there is room
    for _ in 0..5 {
        let s = load.sign();
        assert_eq!(s.status, 201, "{}", s.body);
        load.seen.lock().unwrap().push(s);
    }
    let filled = fill(&ca.path("ca/filler"));
    assert!(filled > 0, "the file system took nothing");
    // the disk is full: each signing is refused with 503 and a reason, none hangs
    let mut full = Vec::new();
    for _ in 0..40 {
        full.push(load.sign());
    }
    let unavailable = check_answers(&full);
    assert!(
        unavailable > 0,
        "every signing succeeded on a full file system: the test did not fill it"
    );
    eprintln!(
        "full: {unavailable} of {} signings answered 503",
        full.len()
    );
    load.seen.lock().unwrap().extend(full);
    // room again: issuance comes back without a restart
    std::fs::remove_file(ca.path("ca/filler")).unwrap();
    let back = load.until_issuing(Duration::from_secs(20));
    eprintln!("issuing again {back:?} after space returned");
    for _ in 0..5 {
        let s = load.sign();
        assert_eq!(s.status, 201, "after space returned: {}", s.body);
        load.seen.lock().unwrap().push(s);
    }
    let seen = load.seen.into_inner().unwrap();
    check_recorded(&ca, &seen);
    let o = ca
        .tw("cert list --ca-dir ca --san faults.example.internal --json --limit 1000000")
        .ok()
        .json();
    let recorded = o["items"].as_array().unwrap().len();
    let answered = seen.iter().filter(|s| s.status == 201).count();
    // nothing the full disk refused was recorded
    assert_eq!(
        recorded, answered,
        "{recorded} certificates recorded for {answered} answered: a refused issuance was recorded"
    );
}

/// Waits (at most `limit`) for `f`; false if it never held.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The agent's output directory fills up when a renewal is due: the certificate the CA
/// issued is kept in memory and written once there is room again — the old files stay
/// whole meanwhile, the agent keeps running, and the CA is not asked again (it already
/// superseded the old certificate by the new one).
#[test]
fn agent_output_full_keeps_the_old_files_and_writes_the_renewal_later() {
    agent_output_unwritable(
        "full",
        |ca| {
            fill(&ca.path("d/filler"));
        },
        |ca| std::fs::remove_file(ca.path("d/filler")).unwrap(),
    );
}

/// The same with the output directory's file system remounted read-only (a card switched
/// to read-only by the kernel after errors, an operator's `mount -o remount,ro`): EROFS
/// on every write, then writable again.
#[test]
fn agent_output_read_only_keeps_the_old_files_and_writes_the_renewal_later() {
    agent_output_unwritable(
        "read-only",
        |ca| {
            ca.sh("mount -o remount,ro d").ok();
            assert!(
                std::fs::write(ca.path("d/probe"), b"x").is_err(),
                "the remounted file system still takes writes"
            );
        },
        |ca| {
            ca.sh("mount -o remount,rw d").ok();
        },
    );
}

/// Enrolls an agent into a 1 MiB tmpfs of the test's own, lets `break_output` make it
/// unwritable before the next renewal, checks that nothing on disk changed and the
/// agent kept running, then `repair` and checks the one renewal issued is what is written.
fn agent_output_unwritable(
    what: &str,
    break_output: impl Fn(&OnlineCa),
    repair: impl Fn(&OnlineCa),
) {
    let mut ca = OnlineCa::start(&[]);
    ca.sh("mkdir d && mount -t tmpfs -o size=1m,mode=0700 tmpfs d")
        .ok();
    let _unmount = Unmount(ca.path("d"));
    let san = "DNS:agent.example.internal";
    let token = ca.token(&format!("--san {san} --profile server --cert-ttl 20s"));
    let url = ca.url();
    let fp = ca.fingerprint.clone();
    let mut cmd = ca.cmd(&[
        "agent",
        "--ca",
        &url,
        "--ca-fingerprint",
        &fp,
        "--san",
        san,
        "--out",
        "d",
        "--token",
        &token,
    ]);
    cmd.env("RUST_LOG", "info");
    let agent_log = ca.path("agent.log");
    let mut agent = common::Server::spawn("twoway agent", &mut cmd, &agent_log);
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    assert!(
        within(Duration::from_secs(15), || ca.path("d/cert.pem").exists()),
        "the agent did not enroll:\n{}",
        log()
    );
    // certificates this short are renewed at once after enrollment (their notBefore is
    // backdated for clock skew): let that settle, then count the renewals so far
    std::thread::sleep(Duration::from_millis(1500));
    let renewals = || -> Vec<String> {
        let audit = ca
            .tw("audit list --ca-dir ca --json --limit 100000")
            .ok()
            .json();
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == json!("cert.renew"))
            .map(|e| e["target"].as_str().unwrap().to_ascii_lowercase())
            .collect()
    };
    let before = renewals().len();
    let (old_cert, old_key) = (
        std::fs::read(ca.path("d/cert.pem")).unwrap(),
        std::fs::read(ca.path("d/key.pem")).unwrap(),
    );
    break_output(&ca);

    // the next renewal (at about 2/3 of the certificate's life) is issued, and cannot be
    // written
    assert!(
        within(Duration::from_secs(40), || log()
            .contains("could not write the new certificate")),
        "no failed write was reported:\n{}",
        log()
    );
    agent.assert_running(&format!("with its output directory {what}"));
    assert_eq!(std::fs::read(ca.path("d/cert.pem")).unwrap(), old_cert);
    assert_eq!(std::fs::read(ca.path("d/key.pem")).unwrap(), old_key);
    let stray: Vec<String> = std::fs::read_dir(ca.path("d"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["cert.pem", "chain.pem", "key.pem", "ca.pem", "filler"].contains(&n.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "files left behind by the failed write: {stray:?}"
    );

    // writable again: the renewal the CA issued is written, without asking again
    repair(&ca);
    let old_serial = common::pki::serial_of(&ca.path("d/cert.pem"));
    assert!(
        within(Duration::from_secs(15), || common::pki::serial_of(
            &ca.path("d/cert.pem")
        ) != old_serial),
        "the new certificate was never written:\n{}",
        log()
    );
    let new_serial = common::pki::serial_of(&ca.path("d/cert.pem"));
    let after = renewals();
    assert_eq!(
        &after[before..],
        std::slice::from_ref(&new_serial),
        "the CA was asked again, or the certificate written is not the renewal issued \
         while the output was {what}\n{}",
        log()
    );
    // key and certificate on disk belong together
    let o = ca.openssl("x509 -in d/cert.pem -noout -pubkey").ok();
    let k = ca.openssl("pkey -in d/key.pem -pubout").ok();
    assert_eq!(o.stdout, k.stdout, "cert.pem and key.pem do not match");
    ca.stop();
}
