//! Two replicas of `twoway ca serve` on one PostgreSQL database: concurrent issuance split
//! between them lands in one inventory exactly once, and a revocation on one replica reaches
//! the other's OCSP responder and CRL within a second. The real binary, curl and openssl;
//! PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication). Every wait is bounded.

mod common;

use common::online::{CaServer, OnlineCa};
use common::pg::TestDb;
use common::pki::openssl_csr;
use common::{read, write};
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SAN: &str = "DNS:ha.example.internal";
const REPLICAS: usize = 2;
const WORKERS_PER_REPLICA: usize = 4;
const ENROLLMENTS_PER_WORKER: usize = 10;

/// Makes a token on `r` and enrolls `csr` with it on `r`; returns the certificate response.
fn enroll(ca: &OnlineCa, r: &CaServer, csr: &str) -> Value {
    let token = ca
        .remote_to(r, &["token", "create", "--san", SAN])
        .ok()
        .line();
    let body = serde_json::json!({"token": token, "csr": csr}).to_string();
    let (status, v) = ca.post_to(r, "/v1/enroll", body.as_bytes(), None);
    assert_eq!(status, 201, "enroll on {}: {v}", r.url());
    v
}

#[test]
fn two_replicas_share_one_postgres_inventory() {
    let db = TestDb::new();
    // [server] database points every command of this CA at PostgreSQL; the admin's
    // certificate goes there too
    let url = format!("\"{}\"", db.url());
    let settings = [
        ("enroll_rate", "1000"),
        ("enroll_burst", "1000"),
        ("database", url.as_str()),
    ];
    let mut ca = OnlineCa::create("HA Test", "URI:spiffe://ha.test/admin", "", &settings);
    let cfg = read(ca.path("ca/ca.toml"));
    assert!(cfg.contains("database = \"postgres://"), "{cfg}");

    // two replicas started together (both apply the schema): A by the config key, B by flag
    let url = db.url();
    let a = ca.spawn_server("", "127.0.0.1:0", "127.0.0.1:0", &[], &[]);
    let b = ca.spawn_server("", "127.0.0.1:0", "127.0.0.1:0", &["--database", &url], &[]);
    let (a, b) = (a.ready(), b.ready());
    let replicas = [&a, &b];

    // concurrent issuance, split between the replicas
    let csrs: Vec<String> = (0..REPLICAS * WORKERS_PER_REPLICA)
        .map(|w| openssl_csr(ca.dir.path(), &format!("w{w}"), "", SAN))
        .collect();
    let started = Instant::now();
    let issued: Vec<(String, String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = csrs
            .iter()
            .enumerate()
            .map(|(w, csr)| {
                let (r, ca) = (replicas[w % REPLICAS], &ca);
                scope.spawn(move || {
                    (0..ENROLLMENTS_PER_WORKER)
                        .map(|_| {
                            let v = enroll(ca, r, csr);
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
        let o = ca.remote_to(r, &["cert", "list", "--json", "--limit", "1000"]);
        let v = o.ok().json();
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
    ca.tw("audit verify --ca-dir ca").ok();

    // B answers "good" (and caches it); A revokes; B says "revoked" within a second
    let (serial, _, pem) = &issued[0];
    let cert = "victim.pem";
    write(ca.path(cert), pem);
    let out = ca.ocsp_to(&b, cert);
    assert!(out.contains(": good"), "{out}");
    ca.remote_to(
        &a,
        &["cert", "revoke", serial, "--reason", "key-compromise"],
    )
    .ok();
    let revoked_at = Instant::now();
    let deadline = revoked_at + Duration::from_secs(1);
    let mut last = String::new();
    let mut seen = false;
    while Instant::now() < deadline {
        last = ca.ocsp_to(&b, cert);
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
    let text = ca.crl_text_to(&b);
    assert!(
        text.contains(&serial.to_ascii_lowercase()),
        "{serial} not in B's CRL: {text}"
    );
    drop(a);
    drop(b);
    drop(db);
}
