//! Prometheus metrics, kept in atomics and rendered as text on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use twoway_tls::Reason;

/// Upper bounds (seconds) of the HTTP latency histogram buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Name, type, help and getter of a one-value-per-listener series.
type SimpleSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ListenerMetrics) -> i64,
);

/// Counters of one listener.
#[derive(Debug)]
pub struct ListenerMetrics {
    name: String,
    mode: &'static str,
    handshakes_ok: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
    refused_limit: AtomicU64,
    shed: AtomicU64,
    active: AtomicI64,
    bytes_from_client: AtomicU64,
    bytes_to_client: AtomicU64,
    upstream_errors: AtomicU64,
    upstream_mismatch: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    cert_not_after: AtomicI64,
    crl_next_update: std::sync::Mutex<Vec<(String, i64)>>,
    http_status: [AtomicU64; 5],
    http_denied: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    ocsp_answers: [AtomicU64; OCSP_ANSWERS.len()],
    ocsp_soft_passes: [AtomicU64; Reason::ALL.len()],
    ocsp_no_url: AtomicU64,
}

/// Labels of `twoway_proxy_ocsp_answers_total`.
const OCSP_ANSWERS: [&str; 4] = ["good", "revoked", "unknown", "failed"];

impl ListenerMetrics {
    fn new(name: &str, mode: &'static str) -> Self {
        Self {
            name: escape_label(name),
            mode,
            handshakes_ok: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            refused_limit: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            active: AtomicI64::new(0),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            upstream_mismatch: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            cert_not_after: AtomicI64::new(0),
            crl_next_update: std::sync::Mutex::new(Vec::new()),
            http_status: std::array::from_fn(|_| AtomicU64::new(0)),
            http_denied: AtomicU64::new(0),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            ocsp_answers: std::array::from_fn(|_| AtomicU64::new(0)),
            ocsp_soft_passes: std::array::from_fn(|_| AtomicU64::new(0)),
            ocsp_no_url: AtomicU64::new(0),
        }
    }

    /// A handshake completed (and the peer passed the listener rules).
    pub fn handshake_ok(&self) {
        self.handshakes_ok.fetch_add(1, Relaxed);
    }

    /// A handshake failed for `reason`.
    pub fn handshake_rejected(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    /// An OCSP query ended: `good`, `revoked`, `unknown` or `failed`.
    pub fn ocsp_answer(&self, result: &str) {
        if let Some(i) = OCSP_ANSWERS.iter().position(|r| *r == result) {
            self.ocsp_answers[i].fetch_add(1, Relaxed);
        }
    }

    /// A connection was let through without a usable OCSP answer (`ocsp_fail_open`).
    pub fn ocsp_soft_pass(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.ocsp_soft_passes[i].fetch_add(1, Relaxed);
        }
    }

    /// A peer certificate naming no OCSP responder was seen.
    pub fn ocsp_no_url(&self) {
        self.ocsp_no_url.fetch_add(1, Relaxed);
    }

    /// A connection was closed at once because the listener is full.
    pub fn refused_limit(&self) {
        self.refused_limit.fetch_add(1, Relaxed);
    }

    /// An idle connection was closed to make room for a new one.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Relaxed);
    }

    /// An upstream (backend/target) connection failed.
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }

    /// An HTTP request failed because the backend speaks another protocol than
    /// `backend_protocol` says (also counted by [`Self::upstream_error`]).
    pub fn upstream_mismatch(&self) {
        self.upstream_mismatch.fetch_add(1, Relaxed);
    }

    /// Bytes moved for a connection.
    pub fn add_bytes(&self, from_client: u64, to_client: u64) {
        self.bytes_from_client.fetch_add(from_client, Relaxed);
        self.bytes_to_client.fetch_add(to_client, Relaxed);
    }

    /// A reload finished.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Relaxed);
        }
    }

    /// Records the notAfter of the listener's own certificate.
    pub fn set_cert_not_after(&self, unix: i64) {
        self.cert_not_after.store(unix, Relaxed);
    }

    /// Each CRL's source and `nextUpdate` (Unix time), after a load or reload.
    pub fn set_crl_next_update(&self, crls: Vec<(String, i64)>) {
        if let Ok(mut v) = self.crl_next_update.lock() {
            *v = crls;
        }
    }

    /// An HTTP request finished with `status` after `elapsed`.
    pub fn http_request(&self, status: u16, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.http_status[class].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
    }

    /// An HTTP request was denied by route rules.
    pub fn http_denied(&self) {
        self.http_denied.fetch_add(1, Relaxed);
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Decrements the active connection gauge on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ListenerMetrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// All metrics of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    listeners: Mutex<Vec<Arc<ListenerMetrics>>>,
    agents: Mutex<Vec<(String, Arc<twoway_agent::AgentStatus>)>>,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Registers a listener.
    pub fn listener(&self, name: &str, mode: &'static str) -> Arc<ListenerMetrics> {
        let m = Arc::new(ListenerMetrics::new(name, mode));
        if let Ok(mut l) = self.listeners.lock() {
            l.push(m.clone());
        }
        m
    }

    /// Registers the in-process agent of an enrolling listener.
    pub fn agent(&self, listener: &str, status: Arc<twoway_agent::AgentStatus>) {
        if let Ok(mut a) = self.agents.lock() {
            a.push((listener.to_owned(), status));
        }
    }

    fn render_agents(&self, o: &mut String) {
        let agents = match self.agents.lock() {
            Ok(a) => a.clone(),
            Err(_) => return,
        };
        let Some((_, first)) = agents.first() else {
            return;
        };
        for (i, (name, kind, _)) in first.samples().iter().enumerate() {
            let _ = writeln!(o, "# TYPE twoway_agent_{name} {kind}");
            for (listener, st) in &agents {
                let v = st.samples()[i].2;
                let _ = writeln!(
                    o,
                    "twoway_agent_{name}{{listener=\"{}\"}} {v}",
                    escape_label(listener)
                );
            }
        }
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let listeners: Vec<Arc<ListenerMetrics>> = match self.listeners.lock() {
            Ok(l) => l.clone(),
            Err(_) => Vec::new(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut o = String::with_capacity(8192);
        let _ = writeln!(
            o,
            "# HELP twoway_proxy_handshakes_total TLS handshakes by result and rejection reason."
        );
        let _ = writeln!(o, "# TYPE twoway_proxy_handshakes_total counter");
        for l in &listeners {
            let _ = writeln!(
                o,
                "twoway_proxy_handshakes_total{{listener=\"{}\",mode=\"{}\",result=\"ok\",reason=\"\"}} {}",
                l.name,
                l.mode,
                l.handshakes_ok.load(Relaxed)
            );
            for (i, r) in Reason::ALL.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "twoway_proxy_handshakes_total{{listener=\"{}\",mode=\"{}\",result=\"rejected\",reason=\"{}\"}} {}",
                    l.name,
                    l.mode,
                    r.as_str(),
                    l.rejected[i].load(Relaxed)
                );
            }
        }
        let simple: [SimpleSeries; 8] = [
            (
                "twoway_proxy_active_connections",
                "gauge",
                "Open client connections.",
                |l| l.active.load(Relaxed),
            ),
            (
                "twoway_proxy_connections_refused_total",
                "counter",
                "Connections closed at once: the listener (max_connections) or the client's address (max_connections_per_address) was full of busy connections.",
                |l| l.refused_limit.load(Relaxed) as i64,
            ),
            (
                "twoway_proxy_connections_shed_total",
                "counter",
                "Idle connections (a handshake not finished, or no request in progress) closed to make room for new ones, oldest first.",
                |l| l.shed.load(Relaxed) as i64,
            ),
            (
                "twoway_proxy_upstream_errors_total",
                "counter",
                "Failed connections or requests to the backend/target.",
                |l| l.upstream_errors.load(Relaxed) as i64,
            ),
            (
                "twoway_proxy_http_denied_total",
                "counter",
                "HTTP requests answered 403 by route rules.",
                |l| l.http_denied.load(Relaxed) as i64,
            ),
            (
                "twoway_proxy_reloads_total",
                "counter",
                "Successful reloads of certificates, CAs, CRLs and rules.",
                |l| l.reloads_ok.load(Relaxed) as i64,
            ),
            (
                "twoway_proxy_reload_failures_total",
                "counter",
                "Reloads that failed and kept the running configuration.",
                |l| l.reloads_failed.load(Relaxed) as i64,
            ),
            (
                "twoway_proxy_certificate_not_after_seconds",
                "gauge",
                "notAfter of the listener's own certificate (Unix time).",
                |l| l.cert_not_after.load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in simple {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for l in &listeners {
                let _ = writeln!(
                    o,
                    "{name}{{listener=\"{}\",mode=\"{}\"}} {}",
                    l.name,
                    l.mode,
                    get(l)
                );
            }
        }
        let name = "twoway_proxy_upstream_errors_by_reason_total";
        let _ = writeln!(o, "# HELP {name} Failed backend/target connections or requests by reason: protocol_mismatch (the backend speaks another HTTP version than backend_protocol), other.\n# TYPE {name} counter");
        for l in &listeners {
            let mismatch = l.upstream_mismatch.load(Relaxed);
            let other = l.upstream_errors.load(Relaxed).saturating_sub(mismatch);
            for (reason, n) in [("protocol_mismatch", mismatch), ("other", other)] {
                let _ = writeln!(
                    o,
                    "{name}{{listener=\"{}\",mode=\"{}\",reason=\"{reason}\"}} {n}",
                    l.name, l.mode
                );
            }
        }
        let _ = writeln!(o, "# HELP twoway_proxy_certificate_expiry_seconds Seconds until the listener's own certificate expires.\n# TYPE twoway_proxy_certificate_expiry_seconds gauge");
        for l in &listeners {
            let _ = writeln!(
                o,
                "twoway_proxy_certificate_expiry_seconds{{listener=\"{}\",mode=\"{}\"}} {}",
                l.name,
                l.mode,
                l.cert_not_after.load(Relaxed) - now
            );
        }
        let _ = writeln!(o, "# HELP twoway_proxy_crl_next_update_seconds Seconds until each CRL's nextUpdate (negative: stale).\n# TYPE twoway_proxy_crl_next_update_seconds gauge");
        for l in &listeners {
            let Ok(crls) = l.crl_next_update.lock() else {
                continue;
            };
            for (source, next) in crls.iter() {
                let _ = writeln!(
                    o,
                    "twoway_proxy_crl_next_update_seconds{{listener=\"{}\",mode=\"{}\",crl=\"{}\"}} {}",
                    l.name,
                    l.mode,
                    escape_label(source),
                    next - now
                );
            }
        }
        let _ = writeln!(o, "# HELP twoway_proxy_bytes_total Bytes relayed, by direction.\n# TYPE twoway_proxy_bytes_total counter");
        for l in &listeners {
            for (dir, v) in [
                ("from_client", &l.bytes_from_client),
                ("to_client", &l.bytes_to_client),
            ] {
                let _ = writeln!(
                    o,
                    "twoway_proxy_bytes_total{{listener=\"{}\",mode=\"{}\",direction=\"{dir}\"}} {}",
                    l.name,
                    l.mode,
                    v.load(Relaxed)
                );
            }
        }
        let _ = writeln!(o, "# HELP twoway_proxy_http_responses_total HTTP responses by status class.\n# TYPE twoway_proxy_http_responses_total counter");
        for l in listeners.iter().filter(|l| l.mode == "http") {
            for (i, c) in l.http_status.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "twoway_proxy_http_responses_total{{listener=\"{}\",code=\"{}xx\"}} {}",
                    l.name,
                    i + 1,
                    c.load(Relaxed)
                );
            }
        }
        let _ = writeln!(o, "# HELP twoway_proxy_http_request_duration_seconds Time from request to response headers.\n# TYPE twoway_proxy_http_request_duration_seconds histogram");
        for l in listeners.iter().filter(|l| l.mode == "http") {
            let mut cum = 0;
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                cum += l.latency_buckets[i].load(Relaxed);
                let _ = writeln!(
                    o,
                    "twoway_proxy_http_request_duration_seconds_bucket{{listener=\"{}\",le=\"{b}\"}} {cum}",
                    l.name
                );
            }
            let count = l.latency_count.load(Relaxed);
            let _ = writeln!(
                o,
                "twoway_proxy_http_request_duration_seconds_bucket{{listener=\"{}\",le=\"+Inf\"}} {count}",
                l.name
            );
            let _ = writeln!(
                o,
                "twoway_proxy_http_request_duration_seconds_sum{{listener=\"{}\"}} {}",
                l.name,
                l.latency_sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                o,
                "twoway_proxy_http_request_duration_seconds_count{{listener=\"{}\"}} {count}",
                l.name
            );
        }
        let _ = writeln!(o, "# HELP twoway_proxy_ocsp_answers_total OCSP queries by result (good, revoked, unknown, failed: unreachable, slow or invalid).\n# TYPE twoway_proxy_ocsp_answers_total counter");
        for l in &listeners {
            for (i, r) in OCSP_ANSWERS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "twoway_proxy_ocsp_answers_total{{listener=\"{}\",mode=\"{}\",result=\"{r}\"}} {}",
                    l.name,
                    l.mode,
                    l.ocsp_answers[i].load(Relaxed)
                );
            }
        }
        let _ = writeln!(o, "# HELP twoway_proxy_ocsp_soft_passes_total Connections let through without a usable OCSP answer (ocsp_fail_open), by reason.\n# TYPE twoway_proxy_ocsp_soft_passes_total counter");
        for l in &listeners {
            for (i, r) in Reason::ALL.iter().enumerate() {
                if !r.as_str().starts_with("ocsp_") {
                    continue;
                }
                let _ = writeln!(
                    o,
                    "twoway_proxy_ocsp_soft_passes_total{{listener=\"{}\",mode=\"{}\",reason=\"{}\"}} {}",
                    l.name,
                    l.mode,
                    r.as_str(),
                    l.ocsp_soft_passes[i].load(Relaxed)
                );
            }
        }
        let _ = writeln!(o, "# HELP twoway_proxy_ocsp_no_url_total Peer certificates seen that name no OCSP responder (allowed or refused by ocsp_no_url).\n# TYPE twoway_proxy_ocsp_no_url_total counter");
        for l in &listeners {
            let _ = writeln!(
                o,
                "twoway_proxy_ocsp_no_url_total{{listener=\"{}\",mode=\"{}\"}} {}",
                l.name,
                l.mode,
                l.ocsp_no_url.load(Relaxed)
            );
        }
        self.render_agents(&mut o);
        o
    }
}
