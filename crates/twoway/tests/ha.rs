//! Two replicas of `twoway ca serve` on one PostgreSQL database: concurrent issuance split
//! between them lands in one inventory exactly once, and a revocation on one replica reaches
//! the other's OCSP responder and CRL within a second. The real binary, curl and openssl;
//! PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication). Every wait is bounded.

use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_twoway");
const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const START_HINT: &str = "PostgreSQL must be running on 127.0.0.1:5432 with trust \
    authentication for user postgres: start it with \
    `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
    (scripts/test-all does)";
const SAN: &str = "DNS:ha.example.internal";
const REPLICAS: usize = 2;
const WORKERS_PER_REPLICA: usize = 4;
const ENROLLMENTS_PER_WORKER: usize = 10;

/// A fresh database, dropped at the end even when the test fails.
struct TestDb {
    name: String,
}

impl TestDb {
    fn new() -> TestDb {
        let mut admin = postgres::Client::connect(ADMIN_URL, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL ({e}). {START_HINT}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("twoway_test_ha_{}_{nanos}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        TestDb { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(ADMIN_URL, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TWOWAY_CA_URL")
        .env_remove("TWOWAY_CA_DIR")
        .env_remove("TWOWAY_DATABASE")
        .output()
        .expect("run twoway")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "twoway {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is needed for this test (apt-get install {name}): {e}"))
}

/// One `twoway ca serve`, killed on drop.
struct Replica {
    child: Child,
    https: String,
    http: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn spawn(ca_dir: &Path, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = Command::new(BIN)
            .args([
                "ca",
                "serve",
                "--ca-dir",
                ca_dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("TWOWAY_DATABASE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ca serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().take(3).map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Waits (at most 60 s) for the addresses the server prints.
    fn ready(child: Child, rx: mpsc::Receiver<String>) -> Replica {
        let mut r = Replica {
            child,
            https: String::new(),
            http: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..3 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(l) = rx.recv_timeout(left) else {
                panic!("ca serve did not start: {:?}", r.child.try_wait());
            };
            if let Some(a) = l.strip_prefix("twoway CA serving ") {
                r.https = a.to_string();
            } else if let Some(a) = l.strip_prefix("OCSP, CRL and roots also on ") {
                r.http = a.to_string();
            }
        }
        assert!(!r.https.is_empty() && !r.http.is_empty());
        r
    }
}

struct Env {
    dir: PathBuf,
}

impl Env {
    fn s(&self, rel: &str) -> String {
        self.dir.join(rel).to_str().unwrap().to_string()
    }

    fn remote(&self, r: &Replica, args: &[&str]) -> Output {
        let (c, k, root) = (
            self.s("admin/chain.pem"),
            self.s("admin/key.pem"),
            self.s("ca/root.pem"),
        );
        let mut a = vec![
            "--ca",
            r.https.as_str(),
            "--cert",
            &c,
            "--key",
            &k,
            "--ca-cert",
            &root,
        ];
        a.extend_from_slice(args);
        run(&a)
    }

    fn csr(&self, name: &str) -> String {
        let key = self.s(&format!("{name}.key"));
        let out = self.s(&format!("{name}.csr"));
        let o = tool(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &out,
                "-subj",
                "/",
                "-addext",
                "subjectAltName=DNS:ha.example.internal",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    }

    /// Makes a token on `r` and enrolls with it on `r`; returns the certificate response.
    fn enroll(&self, r: &Replica, csr: &str, tag: &str) -> Value {
        let o = self.remote(r, &["token", "create", "--san", SAN]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let body = serde_json::to_vec(&serde_json::json!({"token": token, "csr": csr})).unwrap();
        let f = self.dir.join(format!("body-{tag}.json"));
        std::fs::write(&f, body).unwrap();
        let data = format!("@{}", f.display());
        let root = self.s("ca/root.pem");
        let url = format!("{}/v1/enroll", r.https);
        let o = tool(
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                "--cacert",
                &root,
                "-H",
                "content-type: application/json",
                "--data-binary",
                &data,
                "-w",
                "\n%{http_code}",
                &url,
            ],
        );
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (json, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        assert_eq!(code.trim(), "201", "enroll on {}: {text}", r.https);
        serde_json::from_str(json).unwrap()
    }

    fn ocsp(&self, r: &Replica, cert: &str) -> String {
        let o = tool(
            "openssl",
            &[
                "ocsp",
                "-timeout",
                "5",
                "-issuer",
                &self.s("ca/intermediate.pem"),
                "-cert",
                cert,
                "-url",
                &format!("{}/ocsp", r.http),
                "-CAfile",
                &self.s("ca/root.pem"),
            ],
        );
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("Response verify OK"), "openssl ocsp: {out}");
        out
    }
}

#[test]
fn two_replicas_share_one_postgres_inventory() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let env = Env {
        dir: tmp.path().to_path_buf(),
    };
    let ca = tmp.path().join("ca");
    let cas = ca.to_str().unwrap();
    ok(&["ca", "init", "--ca-dir", cas, "--name", "HA Test"]);
    // [server] database points every command of this CA at PostgreSQL
    let cfg_path = ca.join("ca.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let mut out = String::new();
    for line in cfg.lines() {
        let l = if line.starts_with("admins =") {
            "admins = [\"URI:spiffe://ha.test/admin\"]".to_string()
        } else if line.starts_with("enroll_rate =") {
            "enroll_rate = 1000".to_string()
        } else if line.starts_with("enroll_burst =") {
            "enroll_burst = 1000".to_string()
        } else if line.starts_with("# database =") || line.starts_with("database =") {
            format!("database = \"{}\"", db.url())
        } else {
            line.to_string()
        };
        out.push_str(&l);
        out.push('\n');
    }
    assert!(out.contains("database = \"postgres://"), "{out}");
    std::fs::write(&cfg_path, out).unwrap();
    // the admin's certificate goes into PostgreSQL (the config's database)
    ok(&[
        "cert",
        "issue",
        "--ca-dir",
        cas,
        "--profile",
        "client",
        "--san",
        "URI:spiffe://ha.test/admin",
        "--out",
        &env.s("admin"),
    ]);

    // two replicas started together (both apply the schema): A by the config key, B by flag
    let url = db.url();
    let (ca_child, a_rx) = Replica::spawn(&ca, &[]);
    let (cb_child, b_rx) = Replica::spawn(&ca, &["--database", &url]);
    let a = Replica::ready(ca_child, a_rx);
    let b = Replica::ready(cb_child, b_rx);
    let replicas = [&a, &b];

    // concurrent issuance, split between the replicas
    let csrs: Vec<String> = (0..REPLICAS * WORKERS_PER_REPLICA)
        .map(|w| env.csr(&format!("w{w}")))
        .collect();
    let started = Instant::now();
    let issued: Vec<(String, String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = csrs
            .iter()
            .enumerate()
            .map(|(w, csr)| {
                let (r, env) = (replicas[w % REPLICAS], &env);
                scope.spawn(move || {
                    (0..ENROLLMENTS_PER_WORKER)
                        .map(|i| {
                            let v = env.enroll(r, csr, &format!("{w}-{i}"));
                            (
                                v["serial"].as_str().unwrap().to_string(),
                                v["fingerprint"].as_str().unwrap().to_string(),
                                v["certificate"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = REPLICAS * WORKERS_PER_REPLICA * ENROLLMENTS_PER_WORKER;
    assert_eq!(issued.len(), total);
    eprintln!(
        "{total} enrollments through {REPLICAS} replicas in {:?}",
        started.elapsed()
    );
    let issued_serials: HashSet<&str> = issued.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(issued_serials.len(), total, "duplicate serial handed out");

    // the inventory, read through either replica, has each exactly once
    for r in replicas {
        let o = env.remote(r, &["cert", "list", "--json", "--limit", "1000"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(v["total"].as_u64().unwrap() as usize, items.len());
        let all: Vec<&str> = items
            .iter()
            .map(|i| i["serial"].as_str().unwrap())
            .collect();
        let unique: HashSet<&str> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "a serial appears twice");
        let workload: Vec<&Value> = items
            .iter()
            .filter(|i| i["sans"].as_array().unwrap().iter().any(|s| s == SAN))
            .collect();
        assert_eq!(
            workload.len(),
            total,
            "enrolled certificates in the inventory"
        );
        for s in &issued_serials {
            assert!(
                unique.contains(s),
                "issued serial {s} is not in the inventory"
            );
        }
        for (serial, fp, _) in &issued {
            let rec = items
                .iter()
                .find(|i| i["serial"] == serial.as_str())
                .unwrap();
            assert_eq!(rec["fingerprint"], fp.as_str());
        }
    }
    // the audit chain, written by both replicas at once, verifies
    let o = run(&["audit", "verify", "--ca-dir", cas]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // B answers "good" (and caches it); A revokes; B says "revoked" within a second
    let (serial, _, pem) = &issued[0];
    let cert = env.s("victim.pem");
    std::fs::write(&cert, pem).unwrap();
    let out = env.ocsp(&b, &cert);
    assert!(out.contains(": good"), "{out}");
    let o = env.remote(
        &a,
        &["cert", "revoke", serial, "--reason", "key-compromise"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let revoked_at = Instant::now();
    let deadline = revoked_at + Duration::from_secs(1);
    let mut last = String::new();
    let mut seen = false;
    while Instant::now() < deadline {
        last = env.ocsp(&b, &cert);
        if last.contains(": revoked") {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen,
        "replica B still answers for a certificate revoked on A {:?} ago: {last}",
        revoked_at.elapsed()
    );
    assert!(last.contains("keyCompromise"), "{last}");
    eprintln!("B's OCSP said revoked after {:?}", revoked_at.elapsed());

    // B's CRL lists it
    let crl = env.s("b.crl");
    let c = tool(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "-o",
            &crl,
            &format!("{}/crl", b.http),
        ],
    );
    assert!(c.status.success());
    let t = tool(
        "openssl",
        &["crl", "-inform", "DER", "-in", &crl, "-noout", "-text"],
    );
    let text = String::from_utf8_lossy(&t.stdout).to_ascii_lowercase();
    assert!(
        t.status.success() && text.contains(&serial.to_ascii_lowercase()),
        "{serial} not in B's CRL: {text}"
    );
    drop(a);
    drop(b);
    drop(db);
}
