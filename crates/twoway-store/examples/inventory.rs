//! Fills an inventory with synthetic certificates, for measuring listings at scale
//! (BENCHMARKS.md, "Inventory queries"): a SQLite file, or a PostgreSQL database when the
//! first argument is a `postgres://` URL (the same URL as `database` in `ca.toml`).
//!
//! ```sh
//! twoway ca init --ca-dir /tmp/inv --name Bench
//! cargo run --release -p twoway-store --example inventory -- /tmp/inv/inventory.db 1000000
//! twoway cert list --ca-dir /tmp/inv --limit 50
//! # PostgreSQL: a CA directory whose ca.toml says database = "postgres://…"
//! cargo run --release -p twoway-store --example inventory -- postgres://postgres@127.0.0.1/inv 1000000
//! ```
//!
//! Rows go in through the store's own batch path (`Store::record_issuances`, 512 a
//! transaction), each with its audit entry, as the online CA records them. The data is
//! deterministic for a given count (seeded), except for the clock: certificates are
//! recorded over the two years before now, so expiry filters see a realistic mix.
//!
//! Shape: 70% 24-hour, 20% 90-day and 10% one-year certificates; 2% revoked; 1,000 owners;
//! labels `env` (prod, staging, dev) and `app` (300 values); a DNS SAN
//! `svc-N.ns-M.example.internal` (40 namespaces) on every certificate, a SPIFFE URI on 30%
//! and an IP on 10%; a PEM of realistic size (the listings never read it).

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::PathBuf;
use std::process::ExitCode;
use time::{Duration, OffsetDateTime};
use twoway_store::{
    CertRecord, CertSource, CertStatus, Issuance, IssueExtras, NewAudit, PostgresStore,
    SqliteStore, Store,
};

const BATCH: usize = 512;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(count)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: inventory DB_PATH|POSTGRES_URL COUNT [ISSUER_DN]\n  e.g. inventory /tmp/inv/inventory.db 1000000"
        );
        return ExitCode::from(64);
    };
    let Ok(count) = count.replace('_', "").parse::<usize>() else {
        eprintln!("COUNT must be a whole number, e.g. 1000000");
        return ExitCode::from(64);
    };
    let issuer = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "CN=Bench Intermediate CA,O=Bench".into());
    let store: Box<dyn Store> = match open(path) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(store.as_ref(), path, count, &issuer) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A `postgres://` (or `postgresql://`) URL opens PostgreSQL; anything else is a SQLite file.
fn open(target: &str) -> Result<Box<dyn Store>, twoway_store::Error> {
    if target.starts_with("postgres://") || target.starts_with("postgresql://") {
        Ok(Box::new(PostgresStore::connect(target)?))
    } else {
        Ok(Box::new(SqliteStore::open(&PathBuf::from(target))?))
    }
}

fn run(
    store: &dyn Store,
    target: &str,
    count: usize,
    issuer: &str,
) -> Result<(), twoway_store::Error> {
    let mut rng = StdRng::seed_from_u64(count as u64);
    let now = OffsetDateTime::now_utc();
    let start = now - Duration::days(730);
    let step = Duration::days(730) / count.max(1) as f64;
    let pem = fake_pem(&mut rng);
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..count {
        let recorded_at = start + step * i as f64;
        batch.push(issuance(&mut rng, i, recorded_at, issuer, &pem));
        if batch.len() == BATCH || i + 1 == count {
            for r in store.record_issuances(&batch)? {
                r?;
            }
            batch.clear();
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "{} certificates in {:.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "recorded {count} certificates in {:.1} s into {}",
        started.elapsed().as_secs_f64(),
        target
    );
    Ok(())
}

fn issuance(
    rng: &mut StdRng,
    i: usize,
    recorded_at: OffsetDateTime,
    issuer: &str,
    pem: &str,
) -> Issuance {
    let ttl = match rng.gen_range(0..10) {
        0..=6 => Duration::hours(24),
        7 | 8 => Duration::days(90),
        _ => Duration::days(365),
    };
    let revoked = rng.gen_range(0..50) == 0;
    let (svc, ns) = (rng.gen_range(0..5000), rng.gen_range(0..40));
    let mut sans = vec![format!("DNS:svc-{svc}.ns-{ns}.example.internal")];
    if rng.gen_range(0..10) < 3 {
        sans.push(format!(
            "URI:spiffe://example.internal/ns/ns-{ns}/sa/svc-{svc}"
        ));
    }
    if rng.gen_range(0..10) == 0 {
        sans.push(format!("IP:10.{}.{}.{}", ns, svc / 256, svc % 256));
    }
    let profile = match rng.gen_range(0..10) {
        0..=5 => "server",
        6..=8 => "client",
        _ => "peer",
    };
    let ms = (recorded_at.unix_timestamp_nanos() / 1_000_000) as u64;
    let serial = format!("{:012x}{:020x}", ms, rng.gen::<u128>() >> 48);
    let fingerprint = format!("{:032x}{:032x}", rng.gen::<u128>(), rng.gen::<u128>());
    let env = ["prod", "staging", "dev"][rng.gen_range(0..3)];
    let rec = CertRecord {
        serial: serial.clone(),
        fingerprint,
        subject: String::new(),
        issuer: issuer.to_string(),
        common_name: None,
        sans,
        profile: profile.into(),
        key_type: "p256".into(),
        not_before: recorded_at - Duration::minutes(1),
        not_after: recorded_at + ttl,
        owner: Some(format!("team-{}", rng.gen_range(0..1000))),
        labels: [
            ("env".to_string(), env.to_string()),
            ("app".to_string(), format!("app-{}", i % 300)),
        ]
        .into(),
        location: None,
        status: if revoked {
            CertStatus::Revoked
        } else {
            CertStatus::Active
        },
        revoked_at: revoked.then(|| recorded_at + Duration::hours(1)),
        revocation_reason: revoked.then(|| "key-compromise".to_string()),
        source: CertSource::Issued,
        recorded_at,
        pem: pem.to_string(),
    };
    let audit = NewAudit {
        actor: "bench".into(),
        action: "cert.issue".into(),
        target: serial,
        details: serde_json::json!({"profile": profile}),
        time: recorded_at,
    };
    Issuance {
        rec,
        audit,
        extras: IssueExtras::none(recorded_at),
    }
}

/// A PEM block the size of a P-256 server certificate's (about 700 bytes of DER).
fn fake_pem(rng: &mut StdRng) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body: Vec<u8> = (0..936).map(|_| B64[rng.gen_range(0..64)]).collect();
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
