//! Prometheus text metrics of the online CA.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters, rendered as Prometheus text by [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    issued: Mutex<BTreeMap<&'static str, u64>>,
    ocsp: Mutex<BTreeMap<&'static str, u64>>,
    /// OCSP answers served from the pre-signed cache.
    pub ocsp_cache_hits: AtomicU64,
    /// CRLs signed.
    pub crl_signed: AtomicU64,
    /// Requests refused by the per-address rate limit.
    pub rate_limited: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failures: AtomicU64,
    /// Times the server renewed its own certificate.
    pub self_renewals: AtomicU64,
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    if let Ok(mut g) = m.lock() {
        *g.entry(k).or_default() += 1;
    }
}

impl Metrics {
    /// Counts a request by route and status.
    pub fn request(&self, route: &'static str, status: u16) {
        bump(&self.requests, (route, status));
    }
    /// Counts an error answer by code.
    pub fn error(&self, code: &str) {
        bump(&self.errors, code.to_string());
    }
    /// Counts an issued certificate by how (`enroll`, `renew`).
    pub fn issued(&self, how: &'static str) {
        bump(&self.issued, how);
    }
    /// Counts an OCSP answer by status (`good`, `revoked`, `unknown`, `malformed`).
    pub fn ocsp(&self, status: &'static str) {
        bump(&self.ocsp, status);
    }

    /// OCSP answers by status so far.
    pub fn ocsp_counts(&self) -> Vec<(&'static str, u64)> {
        self.ocsp
            .lock()
            .map(|g| g.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    /// The Prometheus text exposition.
    pub fn render(
        &self,
        certs: &[(String, u64)],
        commits: &crate::committer::CommitStats,
        conns: &[(&str, twoway_net::Stats)],
    ) -> String {
        let mut o = String::new();
        render_connections(&mut o, conns);
        let _ = writeln!(
            o,
            "# HELP twoway_ca_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(o, "# TYPE twoway_ca_requests_total counter");
        if let Ok(g) = self.requests.lock() {
            for ((r, s), n) in g.iter() {
                let _ = writeln!(
                    o,
                    "twoway_ca_requests_total{{route=\"{r}\",status=\"{s}\"}} {n}"
                );
            }
        }
        let _ = writeln!(o, "# HELP twoway_ca_errors_total Error answers by code.");
        let _ = writeln!(o, "# TYPE twoway_ca_errors_total counter");
        if let Ok(g) = self.errors.lock() {
            for (c, n) in g.iter() {
                let _ = writeln!(o, "twoway_ca_errors_total{{code=\"{c}\"}} {n}");
            }
        }
        let _ = writeln!(
            o,
            "# HELP twoway_ca_issued_total Certificates issued over the API."
        );
        let _ = writeln!(o, "# TYPE twoway_ca_issued_total counter");
        if let Ok(g) = self.issued.lock() {
            for (k, n) in g.iter() {
                let _ = writeln!(o, "twoway_ca_issued_total{{how=\"{k}\"}} {n}");
            }
        }
        let _ = writeln!(
            o,
            "# HELP twoway_ca_ocsp_responses_total OCSP answers by status."
        );
        let _ = writeln!(o, "# TYPE twoway_ca_ocsp_responses_total counter");
        if let Ok(g) = self.ocsp.lock() {
            for (k, n) in g.iter() {
                let _ = writeln!(o, "twoway_ca_ocsp_responses_total{{status=\"{k}\"}} {n}");
            }
        }
        for (name, help, v) in [
            (
                "twoway_ca_ocsp_cache_hits_total",
                "OCSP answers served pre-signed.",
                &self.ocsp_cache_hits,
            ),
            (
                "twoway_ca_crl_signed_total",
                "CRLs signed.",
                &self.crl_signed,
            ),
            (
                "twoway_ca_rate_limited_total",
                "Requests refused by the rate limit.",
                &self.rate_limited,
            ),
            (
                "twoway_ca_tls_handshake_failures_total",
                "Failed TLS handshakes.",
                &self.tls_failures,
            ),
            (
                "twoway_ca_self_renewals_total",
                "Renewals of the server's own certificates.",
                &self.self_renewals,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
        }
        {
            let c = commits;
            for (name, help, v) in [
                (
                    "twoway_ca_issuance_commits_total",
                    "Transactions that recorded issuances (several concurrent issuances share one).",
                    &c.batches,
                ),
                (
                    "twoway_ca_issuance_committed_total",
                    "Issuances those transactions carried.",
                    &c.issuances,
                ),
            ] {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
                let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
            }
        }
        let _ = writeln!(
            o,
            "# HELP twoway_ca_certificates Certificates in the inventory by status."
        );
        let _ = writeln!(o, "# TYPE twoway_ca_certificates gauge");
        for (s, n) in certs {
            let _ = writeln!(o, "twoway_ca_certificates{{status=\"{s}\"}} {n}");
        }
        o
    }
}

/// The listeners' connection tables: open connections, and those shed, refused and
/// timed out, by listener (`https`, `http`).
fn render_connections(o: &mut String, conns: &[(&str, twoway_net::Stats)]) {
    let _ = writeln!(
        o,
        "# HELP twoway_ca_connections Connections open, by listener.\n# TYPE twoway_ca_connections gauge"
    );
    for (l, s) in conns {
        let _ = writeln!(o, "twoway_ca_connections{{listener=\"{l}\"}} {}", s.open);
    }
    let _ = writeln!(
        o,
        "# HELP twoway_ca_connections_shed_total Idle connections closed to make room for new ones (the listener or the address was at its limit).\n# TYPE twoway_ca_connections_shed_total counter"
    );
    for (l, s) in conns {
        let _ = writeln!(
            o,
            "twoway_ca_connections_shed_total{{listener=\"{l}\"}} {}",
            s.shed
        );
    }
    let _ = writeln!(
        o,
        "# HELP twoway_ca_connections_refused_total Connections refused at accept because every connection of the address (address) or of the listener (full) was busy.\n# TYPE twoway_ca_connections_refused_total counter"
    );
    for (l, s) in conns {
        for (why, n) in [("address", s.refused_address), ("full", s.refused_full)] {
            let _ = writeln!(
                o,
                "twoway_ca_connections_refused_total{{listener=\"{l}\",reason=\"{why}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP twoway_ca_connections_timed_out_total Connections closed by a deadline (TLS handshake, first request, idle between requests).\n# TYPE twoway_ca_connections_timed_out_total counter"
    );
    for (l, s) in conns {
        let _ = writeln!(
            o,
            "twoway_ca_connections_timed_out_total{{listener=\"{l}\"}} {}",
            s.timed_out
        );
    }
}
