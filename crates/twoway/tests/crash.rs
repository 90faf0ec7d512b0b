//! Crash consistency of the online CA: `twoway ca serve` SIGKILLed at random moments under a
//! concurrent issuance load — `POST /v1/sign` (the administrator), `/v1/enroll` (one-time
//! tokens), `/v1/renew` (over mutual TLS) and whole ACME orders by lego (finalize included)
//! — and started again, many times, on SQLite and on PostgreSQL. Afterwards, from what the clients saw and what the store holds:
//!
//! - every certificate a client received is in the inventory and has its audit entry;
//! - the inventory holds no certificate beyond those: each row a client did not receive
//!   is accounted for by a request cut short by a kill;
//! - `twoway audit verify` passes;
//! - every token was consumed at most once: one used before the kill is refused again, one
//!   whose request was cut is either consumed (with its certificate recorded) or still good
//!   exactly once, and the inventory's enrollments number the consumed tokens.
//!
//! The real binary; rustls clients in threads; PostgreSQL on 127.0.0.1:5432. Every wait is
//! bounded: the loop stops after `KILLS` kills or `BUDGET`, whichever comes first, and
//! fails if fewer than `KILLS` kills fit in the budget.

mod common;

use common::http::{client_config, try_post};
use common::online::OnlineCa;
use common::pg::TestDb;
use common::pki::{serial_of, sha256_hex};
use common::{require_tool, run_with_timeout};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kills per store engine.
const KILLS: usize = 50;
/// The most the kill loop of one engine may take.
const BUDGET: Duration = Duration::from_secs(240);
/// Client threads per operation.
const SIGNERS: usize = 2;
const ENROLLERS: usize = 2;
const RENEWERS: usize = 2;
const SAN: &str = "DNS:crash.example.internal";
const ADMIN: &str = "URI:spiffe://crash.test/admin";

/// What one request came to, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A certificate (its serial and fingerprint).
    Certificate(String, String),
    /// A refusal with this status.
    Refused(u16),
    /// No answer: the connection failed or was cut (the server was killed or down).
    Cut,
}

/// Everything the clients saw.
#[derive(Default)]
struct Ledger {
    /// (operation, serial, fingerprint) of every certificate received.
    received: Vec<(&'static str, String, String)>,
    /// Each token made and what its enrollment came to.
    tokens: Vec<(String, Seen)>,
    /// Requests that may have reached the server and got no answer.
    cut: u64,
    /// lego runs that did not end with a certificate (each may have been cut anywhere).
    acme_failed: u64,
    /// Refusals by operation and status, with one answer of each.
    refused: HashMap<(&'static str, u16), (u64, String)>,
}

/// A 64-bit xorshift: the kill points, reproducible from the seed printed at the start.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One request, never panicking: the status and body, or `None` (cut).
fn request(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    body: &str,
) -> Option<(u16, String)> {
    try_post(addr, cfg, path, body, Duration::from_secs(10)).map(|(s, _, b)| (s, b))
}

/// A fresh P-256 key and a CSR for `SAN`: (key PEM, CSR PEM).
fn key_and_csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["crash.example.internal".into()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key.serialize_pem(), csr)
}

/// What a request came to: a certificate (201 with a whole answer), a refusal, or cut.
fn seen(answer: Option<(u16, String)>) -> Seen {
    match answer {
        None => Seen::Cut,
        Some((201, body)) => match serde_json::from_str::<Value>(&body) {
            Ok(v) => match (v["serial"].as_str(), v["fingerprint"].as_str()) {
                (Some(s), Some(f)) => Seen::Certificate(s.into(), f.into()),
                _ => Seen::Cut,
            },
            Err(_) => Seen::Cut,
        },
        Some((status, _)) => Seen::Refused(status),
    }
}

/// The client side of the load: configurations, the server's address, the ledger.
struct Load {
    /// The test's directory (credentials are written under it).
    dir: PathBuf,
    /// The CA's root, which the clients trust.
    root: PathBuf,
    addr: Mutex<SocketAddr>,
    admin: Arc<rustls::ClientConfig>,
    anonymous: Arc<rustls::ClientConfig>,
    ledger: Mutex<Ledger>,
    stop: AtomicBool,
    dirs: AtomicU64,
    /// The ACME directory's URL and the port its http-01 validations connect to.
    acme: (String, u16),
}

impl Load {
    fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap()
    }

    fn note(&self, op: &'static str, s: &Seen, answer: &str) {
        let mut l = self.ledger.lock().unwrap();
        match s {
            Seen::Certificate(serial, fp) => l.received.push((op, serial.clone(), fp.clone())),
            Seen::Cut => l.cut += 1,
            Seen::Refused(status) => {
                let e = l.refused.entry((op, *status)).or_insert((0, answer.into()));
                e.0 += 1;
            }
        }
    }

    /// Waits a little after a failure (the server is down or restarting).
    fn pause(&self) {
        std::thread::sleep(Duration::from_millis(20));
    }

    fn sign_loop(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let (_, csr) = key_and_csr();
            let body = json!({"csr": csr, "profile": "server", "ttl": "24h"}).to_string();
            let answer = request(self.addr(), self.admin.clone(), "/v1/sign", &body);
            let text = answer.as_ref().map(|a| a.1.clone()).unwrap_or_default();
            let s = seen(answer);
            self.note("sign", &s, &text);
            if s == Seen::Cut {
                self.pause();
            }
        }
    }

    /// A token from the API, or `None` when the server is down.
    fn token(&self) -> Option<String> {
        let body = json!({"sans": [SAN], "profile": "server", "ttl": "1h"}).to_string();
        let (status, answer) = request(self.addr(), self.admin.clone(), "/v1/tokens", &body)?;
        if status != 201 {
            return None;
        }
        let v: Value = serde_json::from_str(&answer).ok()?;
        v["token"].as_str().map(str::to_string)
    }

    /// Enrolls with a new token: the certificate and its key, when one came back.
    fn enroll_once(&self) -> Option<(String, String, String)> {
        let Some(token) = self.token() else {
            self.pause();
            return None;
        };
        let (key, csr) = key_and_csr();
        let body = json!({"token": token, "csr": csr}).to_string();
        let answer = request(self.addr(), self.anonymous.clone(), "/v1/enroll", &body);
        let cert = answer.as_ref().and_then(|(status, body)| {
            let v: Value = serde_json::from_str(body).ok()?;
            (*status == 201).then(|| v["chain"].as_str().map(str::to_string))?
        });
        let text = answer.as_ref().map(|a| a.1.clone()).unwrap_or_default();
        let s = seen(answer);
        self.note("enroll", &s, &text);
        self.ledger.lock().unwrap().tokens.push((token, s.clone()));
        if s == Seen::Cut {
            self.pause();
        }
        cert.map(|chain| (chain, key, String::new()))
    }

    fn enroll_loop(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.enroll_once();
        }
    }

    /// Whole ACME orders by lego (http-01 answered by lego itself, a new account each
    /// time), one at a time: newAccount, newOrder, the challenge, finalize, download.
    fn acme_loop(&self) {
        let lego = require_tool("lego", "lego");
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let name = format!("n{n}.acme.test");
            let dir = self.dir.join(format!("lego-{n}"));
            let mut c = std::process::Command::new(&lego);
            c.env("LEGO_CA_CERTIFICATES", &self.root)
                .current_dir(&self.dir)
                .args([
                    "--accept-tos",
                    "--email",
                    "ops@acme.test",
                    "--server",
                    &self.acme.0,
                ])
                .arg("--path")
                .arg(&dir)
                .args(["--domains", &name, "--http", "--http.port"])
                .arg(format!("127.0.0.1:{}", self.acme.1))
                .arg("run");
            let o = run_with_timeout(&mut c, None, Duration::from_secs(30));
            let crt = dir.join(format!("certificates/{name}.crt"));
            match std::fs::read_to_string(&crt) {
                Ok(pem) if o.success() => {
                    let der = pem::parse_many(pem.as_bytes())
                        .ok()
                        .and_then(|p| p.into_iter().next())
                        .map(|p| p.contents().to_vec())
                        .unwrap_or_default();
                    let fp = sha256_hex(&der);
                    let serial = serial_of(&crt);
                    self.note("acme", &Seen::Certificate(serial, fp), "");
                }
                _ => {
                    self.ledger.lock().unwrap().acme_failed += 1;
                    self.pause();
                }
            }
        }
    }

    /// Writes a certificate and its key where a client configuration reads them.
    fn credential_dir(&self, chain: &str, key: &str) -> PathBuf {
        let n = self.dirs.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("cred-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("chain.pem"), chain).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        dir
    }

    /// Renews its certificate over and over; starts again from an enrollment when a renewal
    /// is refused (its certificate was superseded by a renewal whose answer was cut).
    fn renew_loop(&self) {
        let mut current: Option<PathBuf> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(dir) = current.clone() else {
                if let Some((chain, key, _)) = self.enroll_once() {
                    current = Some(self.credential_dir(&chain, &key));
                }
                continue;
            };
            let (key, csr) = key_and_csr();
            let body = json!({"csr": csr}).to_string();
            let identity = (dir.join("chain.pem"), dir.join("key.pem"));
            let cfg = client_config(&self.root, Some((&identity.0, &identity.1)));
            let answer = request(self.addr(), cfg, "/v1/renew", &body);
            let chain = answer.as_ref().and_then(|(status, body)| {
                let v: Value = serde_json::from_str(body).ok()?;
                (*status == 201).then(|| v["chain"].as_str().map(str::to_string))?
            });
            let text = answer.as_ref().map(|a| a.1.clone()).unwrap_or_default();
            let s = seen(answer);
            self.note("renew", &s, &text);
            match (s, chain) {
                (Seen::Certificate(..), Some(chain)) => {
                    current = Some(self.credential_dir(&chain, &key));
                }
                (Seen::Refused(_), _) => current = None,
                _ => self.pause(),
            }
        }
    }
}

/// Runs the load against `ca` (serving), kills and restarts the server `KILLS` times at
/// random moments, then checks what the store holds against what the clients saw.
fn kill_loop(mut ca: OnlineCa, engine: &str, acme_port: u16) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{engine}: kill points from seed {seed}");
    let mut rng = Rng(seed);
    let load = Load {
        dir: ca.path(""),
        root: ca.path("ca/root.pem"),
        addr: Mutex::new(ca.https),
        admin: ca.client_config(Some("admin")),
        anonymous: ca.client_config(None),
        ledger: Mutex::new(Ledger::default()),
        stop: AtomicBool::new(false),
        dirs: AtomicU64::new(0),
        acme: (
            format!("https://{}/acme/test/directory", ca.https),
            acme_port,
        ),
    };
    let started = Instant::now();
    let mut kills = 0;
    std::thread::scope(|scope| {
        let load = &load;
        for _ in 0..SIGNERS {
            scope.spawn(move || load.sign_loop());
        }
        for _ in 0..ENROLLERS {
            scope.spawn(move || load.enroll_loop());
        }
        for _ in 0..RENEWERS {
            scope.spawn(move || load.renew_loop());
        }
        scope.spawn(move || load.acme_loop());
        while kills < KILLS && started.elapsed() < BUDGET {
            // a random moment of the load, then SIGKILL: whatever is in flight is cut; every
            // fifth a longer stretch, in which whole ACME orders (several requests) can
            // complete too
            let ms = if kills % 5 == 4 {
                rng.between(1500, 3000)
            } else {
                rng.between(50, 400)
            };
            std::thread::sleep(Duration::from_millis(ms));
            ca.restart(Duration::from_millis(rng.between(0, 50)));
            *load.addr.lock().unwrap() = ca.https;
            kills += 1;
        }
        // a last stretch of load on the last server, then the clients stop
        std::thread::sleep(Duration::from_millis(300));
        load.stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();
    let ledger = load.ledger.into_inner().unwrap();
    eprintln!(
        "{engine}: {kills} kills in {elapsed:.1?}: {} certificates received ({} by ACME, {} lego runs failed), {} requests cut, {} tokens",
        ledger.received.len(),
        ledger.received.iter().filter(|r| r.0 == "acme").count(),
        ledger.acme_failed,
        ledger.cut,
        ledger.tokens.len()
    );
    for ((op, status), (n, answer)) in &ledger.refused {
        eprintln!("{engine}: {op} refused {status} x{n}, e.g. {answer}");
    }
    assert_eq!(kills, KILLS, "only {kills} kills fit in {BUDGET:?}");
    assert!(
        ledger.cut > 0,
        "no request was ever cut by a kill: the loop proves nothing"
    );
    for op in ["sign", "enroll", "renew", "acme"] {
        let n = ledger.received.iter().filter(|r| r.0 == op).count();
        assert!(n > 0, "no {op} succeeded under the load");
    }

    // A final kill, so that what is checked is what a SIGKILL left behind.
    ca.restart(Duration::ZERO);
    let list = ca
        .tw("cert list --ca-dir ca --json --limit 1000000")
        .ok()
        .json();
    let rows: HashMap<String, Value> = list["items"]
        .as_array()
        .expect("cert list --json has items")
        .iter()
        .map(|r| (r["fingerprint"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    let audit = ca
        .tw("audit list --ca-dir ca --json --limit 1000000")
        .ok()
        .json();
    let entries = audit.as_array().expect("audit list --json is a list");
    let audited: HashSet<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();

    // every certificate a client received is recorded, with its audit entry
    let action = |op: &str| match op {
        "sign" => "cert.sign",
        "enroll" => "cert.enroll",
        "acme" => "cert.acme",
        _ => "cert.renew",
    };
    for (op, serial, fp) in &ledger.received {
        let row = rows
            .get(fp)
            .unwrap_or_else(|| panic!("{op} answered {serial} ({fp}) but the inventory lacks it"));
        assert_eq!(row["serial"].as_str(), Some(serial.as_str()));
        assert!(
            audited.contains(&(action(op), serial.as_str())),
            "{op} answered {serial} but the audit log has no {} entry for it",
            action(op)
        );
    }
    // nothing beyond: each row for the load's name that no client received is one request
    // cut by a kill
    let received: HashSet<&str> = ledger.received.iter().map(|r| r.2.as_str()).collect();
    let unreceived = rows
        .values()
        .filter(|r| r["sans"].to_string().contains("crash.example.internal"))
        .filter(|r| !received.contains(r["fingerprint"].as_str().unwrap()))
        .count();
    assert!(
        unreceived as u64 <= ledger.cut,
        "{unreceived} recorded certificates were never answered, but only {} requests were cut",
        ledger.cut
    );
    let acme_unreceived = rows
        .values()
        .filter(|r| r["sans"].to_string().contains(".acme.test"))
        .filter(|r| !received.contains(r["fingerprint"].as_str().unwrap()))
        .count();
    assert!(
        acme_unreceived as u64 <= ledger.acme_failed,
        "{acme_unreceived} ACME certificates recorded but never received, \
         only {} lego runs failed",
        ledger.acme_failed
    );
    // every recorded issuance is audited, and no audit entry names a missing certificate
    let serials: HashSet<&str> = rows
        .values()
        .map(|r| r["serial"].as_str().unwrap())
        .collect();
    for e in entries {
        let (a, t) = (e["action"].as_str().unwrap(), e["target"].as_str().unwrap());
        if ["cert.sign", "cert.enroll", "cert.renew", "cert.acme"].contains(&a) {
            assert!(
                serials.contains(t),
                "audit entry {a} {t} names no recorded certificate"
            );
        }
    }
    let issuances = entries
        .iter()
        .filter(|e| {
            ["cert.sign", "cert.enroll", "cert.renew"].contains(&e["action"].as_str().unwrap())
        })
        .count();
    let load_rows = rows
        .values()
        .filter(|r| r["sans"].to_string().contains("crash.example.internal"))
        .count();
    assert_eq!(
        issuances, load_rows,
        "each recorded certificate has exactly one issuance entry"
    );
    let verify = ca.tw("audit verify --ca-dir ca --json").ok().json();
    assert_eq!(
        verify["ok"],
        json!(true),
        "audit verify after the kills: {verify}"
    );

    // tokens: consumed at most once, and the enrollments number the consumed tokens
    let anonymous = ca.client_config(None);
    let mut consumed = 0;
    for (token, first) in &ledger.tokens {
        let (_, csr) = key_and_csr();
        let body = json!({"token": token, "csr": csr}).to_string();
        let again = seen(request(ca.https, anonymous.clone(), "/v1/enroll", &body));
        match (first, &again) {
            (Seen::Certificate(..), Seen::Refused(403 | 409 | 410 | 401)) => consumed += 1,
            (Seen::Certificate(s, _), other) => {
                panic!("token of {s} was accepted twice: the second time {other:?}")
            }
            (Seen::Refused(_), Seen::Refused(_)) => {}
            (Seen::Refused(st), other) => {
                panic!("a token refused ({st}) was accepted later: {other:?}")
            }
            // cut: consumed by the cut request (refused now), or never (good once, now)
            (Seen::Cut, Seen::Refused(_)) => consumed += 1,
            (Seen::Cut, Seen::Certificate(..)) => {}
            (Seen::Cut, Seen::Cut) => panic!("the server did not answer a re-enrollment"),
        }
    }
    let enrollments = entries
        .iter()
        .filter(|e| e["action"] == json!("cert.enroll"))
        .count();
    let redone = ledger
        .tokens
        .iter()
        .filter(|(_, first)| *first == Seen::Cut)
        .count();
    // the enrollments before the check are the consumed tokens; those the check itself made
    // came from cut tokens that had not been consumed
    let total_now = ca
        .tw("audit list --ca-dir ca --json --limit 1000000")
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == json!("cert.enroll"))
        .count();
    assert_eq!(
        enrollments, consumed,
        "{enrollments} enrollments recorded but {consumed} tokens consumed"
    );
    assert!(total_now - enrollments <= redone);
    eprintln!("{engine}: {consumed} tokens consumed once each; invariants hold");
}

/// Adds the ACME directory `test` (`*.acme.test`, http-01 validations to 127.0.0.1 on a
/// free port); returns that port.
fn acme_directory(ca: &OnlineCa) -> u16 {
    let port = common::free_port();
    let path = ca.path("ca/ca.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[acme.directory]]\nname = \"test\"\nowner = \"team-web\"\nallow = [\"*.acme.test\"]\n\
         http01_port = {port}\nvalidation_address = \"127.0.0.1\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    port
}

#[test]
fn sigkill_under_load_loses_nothing_on_sqlite() {
    let settings = [("enroll_rate", "100000"), ("enroll_burst", "100000")];
    let mut ca = OnlineCa::create("Crash Test", ADMIN, "", &settings);
    let port = acme_directory(&ca);
    ca.serve();
    kill_loop(ca, "sqlite", port);
}

#[test]
fn sigkill_under_load_loses_nothing_on_postgres() {
    let db = TestDb::new();
    let url = format!("\"{}\"", db.url());
    let settings = [
        ("enroll_rate", "100000"),
        ("enroll_burst", "100000"),
        ("database", url.as_str()),
    ];
    let mut ca = OnlineCa::create("Crash Test", ADMIN, "", &settings);
    let port = acme_directory(&ca);
    ca.serve();
    kill_loop(ca, "postgres", port);
}
