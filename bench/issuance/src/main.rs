//! Offline issuance benchmark: how many CSRs a twoway CA verifies, checks against policy,
//! signs and durably records (SQLite, one committed transaction per certificate) per second.
//!
//! Usage: twoway-issue-bench CA_DIR CSR_DIR [SECONDS]
//! Signs every `*.csr` in CSR_DIR in a loop (round robin) for SECONDS (default 5) and prints
//! one line of JSON: {"certs": N, "seconds": S, "certs_per_sec": R}.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};
use twoway_ca::{Ca, IssueRequest};
use twoway_pki::{verify_csr, Profile};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: twoway-issue-bench CA_DIR CSR_DIR [SECONDS]";
    let ca_dir = PathBuf::from(args.next().ok_or(usage)?);
    let csr_dir = PathBuf::from(args.next().ok_or(usage)?);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let mut csrs = Vec::new();
    for entry in std::fs::read_dir(&csr_dir)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "csr") {
            csrs.push(std::fs::read(&p)?);
        }
    }
    if csrs.is_empty() {
        return Err(format!("no *.csr files in {}", csr_dir.display()).into());
    }
    let mut ca = Ca::open(&ca_dir)?;
    ca.unlock(None)?;
    let deadline = Instant::now() + Duration::from_secs(secs.clamp(1, 600));
    let start = Instant::now();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        let csr = verify_csr(&csrs[(n as usize) % csrs.len()])?;
        let req = IssueRequest {
            profile: Profile::Server,
            sans: csr.sans.clone(),
            common_name: csr.common_name.clone(),
            ttl: Some(time::Duration::days(90)),
            owner: Some("bench".into()),
            labels: Default::default(),
            location: None,
            actor: "bench".into(),
        };
        ca.issue(&req, &csr.public_key_der, "cert.sign")?;
        n += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{{\"certs\": {n}, \"seconds\": {elapsed:.3}, \"certs_per_sec\": {:.1}}}",
        n as f64 / elapsed
    );
    Ok(())
}
