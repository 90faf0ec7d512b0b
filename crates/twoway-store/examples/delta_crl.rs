//! Times a delta CRL's query (`Store::crl_entries_revoked_since`) on a SQLite inventory of
//! many revoked certificates, with the indexes of schema version 2 and then of version 3
//! (BENCHMARKS.md, "Delta CRLs at a million revoked entries").
//!
//! ```sh
//! cargo run --release -p twoway-store --example delta_crl -- /tmp/delta.db 200000
//! ```
//!
//! The file is made anew: COUNT certificates of one issuer revoked over the year before
//! now, unexpired, put in by SQL (the counts the writes keep are not updated; this query
//! does not read them), then ten revoked in the last minute. The query asks for what was
//! revoked in the last hour (the ten), as a delta against a complete CRL signed then would.
//! It runs first with version 2's index set (version 3's index dropped and version 2's
//! `certificates_revoked_at` built, on the same file), then after version 3's migration
//! statements, through the store each time (its read connections and cached statements);
//! RUNS timings each (default 201), after 20 unmeasured runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use twoway_store::schema::MIGRATIONS;
use twoway_store::{SqliteStore, Store};

const ISSUER: &str = "CN=Bench Intermediate CA,O=Bench";

/// The statement the store runs for a delta CRL (`query::CRL_DELTA_ENTRIES_SQL`), here
/// only to print SQLite's plan for it.
const DELTA_SQL: &str = "SELECT serial, revoked_at, revocation_reason \
     FROM certificates WHERE status = 'revoked' AND issuer = ? AND revoked_at >= ? \
     AND not_after > ?";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(count)) = (args.first(), args.get(1)) else {
        eprintln!("usage: delta_crl DB_PATH COUNT\n  e.g. delta_crl /tmp/delta.db 200000");
        return ExitCode::from(64);
    };
    let Ok(count) = count.replace('_', "").parse::<i64>() else {
        eprintln!("COUNT must be a whole number, e.g. 200000");
        return ExitCode::from(64);
    };
    let runs = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(201);
    match run(&PathBuf::from(path), count, runs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, count: i64, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(&p);
    }
    drop(SqliteStore::open(path)?);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let raw = rusqlite::Connection::open(path)?;
    let started = Instant::now();
    raw.execute(
        "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?1 + 10)
         INSERT INTO certificates (fingerprint, serial, subject, issuer, sans, profile,
             key_type, not_before, not_after, labels, status, revoked_at, revocation_reason,
             source, recorded_at, pem)
         SELECT printf('%064x', n), printf('%032x', n), '', ?2, '[]', 'server', 'p256',
             ?3 - 400 * 86400, ?3 + 30 * 86400, '{}', 'revoked',
             CASE WHEN n < ?1 THEN ?3 - 86400 * 365 + n * (86400 * 364 / ?1)
                  ELSE ?3 - 60 + (n - ?1) END,
             'key-compromise', 'issued', ?3 - 400 * 86400, '' FROM i",
        rusqlite::params![count, ISSUER, now],
    )?;
    eprintln!(
        "{} revoked certificates put in in {:.1} s",
        count + 10,
        started.elapsed().as_secs_f64()
    );

    // version 2's indexes: version 3's dropped, version 2's built
    raw.execute_batch("DROP INDEX certificates_revoked_since")?;
    raw.execute_batch(migration(2))?;
    measure(&raw, path, now, runs, "version 2 (certificates_revoked_at)")?;

    // version 3's statements, as the migration runs them
    let started = Instant::now();
    raw.execute_batch(migration(3))?;
    eprintln!(
        "version 3's migration: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    measure(
        &raw,
        path,
        now,
        runs,
        "version 3 (certificates_revoked_since)",
    )?;
    Ok(())
}

fn migration(version: i64) -> &'static str {
    MIGRATIONS
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, sql)| *sql)
        .expect("a known version")
}

fn measure(
    raw: &rusqlite::Connection,
    path: &std::path::Path,
    now: i64,
    runs: usize,
    label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let plan: Vec<String> = raw
        .prepare(&format!("EXPLAIN QUERY PLAN {DELTA_SQL}"))?
        .query_map(rusqlite::params![ISSUER, now - 3600, now], |r| r.get(3))?
        .collect::<Result<_, _>>()?;
    let store = SqliteStore::open(path)?;
    let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).expect("a time");
    let (now_t, base) = (at(now), at(now - 3600));
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for i in 0..runs + 20 {
        let started = Instant::now();
        let entries = store.crl_entries_revoked_since(ISSUER, now_t, base)?;
        let took = started.elapsed();
        assert_eq!(entries.len(), 10, "the ten recent revocations");
        if i >= 20 {
            times.push(took);
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{label}");
    println!("  plan: {}", plan.join("; "));
    println!(
        "  delta query, {runs} runs: median {:.3} ms, min {:.3} ms, max {:.3} ms",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    Ok(())
}
