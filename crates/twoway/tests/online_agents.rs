//! The online CA's clients end to end: renewal over mutual TLS and by proof of possession,
//! the agent renewing when due and at once after waking past its renewal point, and proxies
//! that enroll in process (refusing bad input before they listen, both sides of an mTLS
//! hop, and renewing through a CA restart without one failed request). The real `twoway`
//! binary as server, agent, proxy and remote CLI, with openssl, curl and Python's
//! http.server as independent peers. Only 127.0.0.1; every wait is bounded.

mod common;

use common::http::{http_get, sample};
use common::online::OnlineCa;
use common::pki::{cert_info, openssl_csr, openssl_x509, serial_of};
use common::{
    faked_clock, free_port, port_open, read, require_tool, run, run_tool, strings, write, Server,
};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long an enrolling proxy may take to listen.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn renewal_over_mtls_and_by_proof_and_refusals() {
    let ca = OnlineCa::start(&[]);
    ca.enroll_agent(
        "DNS:r.example.internal",
        "r",
        "--profile peer --cert-ttl 1h",
    );
    let first = serial_of(&ca.path("r/cert.pem"));

    // renew over mutual TLS with curl presenting the current certificate
    let new_csr = openssl_csr(ca.dir.path(), "r2", "", "DNS:ignored.example.internal");
    let body = json!({"csr": new_csr});
    let (s, v) = ca.post_json("/v1/renew", &body, Some("r"));
    assert_eq!(s, 201, "{v}");
    let renewed = v["certificate"].as_str().unwrap().to_string();
    let info = cert_info(renewed.as_bytes());
    assert_eq!(
        info.sans,
        vec!["DNS:r.example.internal".parse().unwrap()],
        "same names"
    );
    assert_eq!((info.not_after - info.not_before).whole_minutes(), 61);
    // the old one is superseded (revoked), visible through OCSP
    let out = ca.ocsp("r/cert.pem");
    assert!(
        out.contains("revoked") && out.contains("superseded"),
        "{out}"
    );
    // a retry of that renewal (same CSR, answer lost) gets the same certificate again,
    // and nothing new is recorded
    let before = ca.count();
    let (s, v) = ca.post_json("/v1/renew", &body, Some("r"));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["certificate"].as_str(), Some(renewed.as_str()));
    assert_eq!(ca.count(), before);
    // renewing the superseded certificate with any other key is refused
    let other = openssl_csr(ca.dir.path(), "r4", "", "DNS:r.example.internal");
    let (s, v) = ca.post_json("/v1/renew", &json!({"csr": other}), Some("r"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("certificate_revoked")),
        "{v}"
    );
    // without any credential
    let (s, v) = ca.post_json("/v1/renew", &body, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    assert!(!first.is_empty());

    // proof of possession (behind a TLS-terminating load balancer): no client cert
    std::fs::create_dir_all(ca.path("r3")).unwrap();
    let intermediate = read(ca.path("ca/intermediate.pem"));
    write(ca.path("r3/chain.pem"), format!("{renewed}{intermediate}"));
    std::fs::copy(ca.path("r2.key"), ca.path("r3/key.pem")).unwrap();
    let key = twoway_pki::PrivateKey::from_pem(&read(ca.path("r2.key")), None).unwrap();
    let next_key = twoway_pki::PrivateKey::generate(twoway_pki::KeyType::P256).unwrap();
    let next_csr = twoway_pki::create_csr(
        &next_key,
        &["DNS:r.example.internal".parse().unwrap()],
        None,
    )
    .unwrap();
    let chain = read(ca.path("r3/chain.pem"));
    let now = time::OffsetDateTime::now_utc();
    let renew_by_proof = |key: &twoway_pki::PrivateKey, at: time::OffsetDateTime| {
        let proof = twoway_agent::proof_request(key, &chain, &next_csr, at).unwrap();
        ca.post("/v1/renew", &serde_json::to_vec(&proof).unwrap(), None)
    };
    // a stale proof is refused
    let (s, v) = renew_by_proof(&key, now - time::Duration::minutes(10));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("bad_proof")),
        "{v}"
    );
    // a proof signed by another key is refused
    let (s, v) = renew_by_proof(&next_key, now);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("bad_proof")),
        "{v}"
    );
    let (s, v) = renew_by_proof(&key, now);
    assert_eq!(s, 201, "{v}");

    // an expired certificate cannot renew
    ca.enroll_agent(
        "DNS:e.example.internal",
        "e",
        "--profile client --cert-ttl 2s",
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (s, v) = ca.post_json("/v1/renew", &body, Some("e"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("certificate_expired")),
        "{v}"
    );
}

#[test]
fn agent_renews_when_due() {
    let ca = OnlineCa::start(&[]);
    ca.enroll_agent(
        "DNS:due.example.internal",
        "d",
        "--profile server --cert-ttl 6s",
    );
    let first = serial_of(&ca.path("d/cert.pem"));
    let deadline = Instant::now() + Duration::from_secs(20);
    // past 2/3 (±5%) of 6 s the agent renews over mTLS with a fresh key
    std::thread::sleep(Duration::from_millis(4700));
    ca.agent_once(None, "DNS:due.example.internal", "d").ok();
    assert!(Instant::now() < deadline);
    let second = serial_of(&ca.path("d/cert.pem"));
    assert_ne!(first, second);
    assert!(ca.ocsp("d/cert.pem").contains("d/cert.pem: good"));
}

/// A machine suspended past its certificate's renewal point renews as soon as it wakes,
/// not when a monotonic timer set before the suspend would fire: the agent and the CA run
/// on a wall clock that jumps 50 minutes ahead while the monotonic clock does not (as after
/// a suspend); the agent holds a 1-hour certificate due at ~40 minutes, and renews within
/// its 30-second wake-up step, once.
#[test]
fn agent_renews_at_once_after_waking_past_the_renewal_point() {
    let clock = tempfile::NamedTempFile::new().unwrap();
    write(clock.path(), "+0\n");
    let env = faked_clock(clock.path());
    let ca = OnlineCa::start_env(&[], &env);
    ca.enroll_agent(
        "DNS:sleepy.example.internal",
        "s",
        "--profile server --cert-ttl 1h",
    );
    let first = serial_of(&ca.path("s/cert.pem"));
    let url = ca.url();
    let mut args = vec!["agent", "--ca", &url, "--ca-fingerprint", &ca.fingerprint];
    args.extend(["--san", "DNS:sleepy.example.internal", "--out", "s"]);
    let mut cmd = ca.cmd(&args);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let agent = Server::spawn("twoway agent", &mut cmd, &ca.path("agent.log"));
    // The agent has read its certificate and gone to sleep until its next check.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        serial_of(&ca.path("s/cert.pem")),
        first,
        "renewed too early"
    );
    let jumped = Instant::now();
    write(clock.path(), "+50m\n");
    let deadline = jumped + Duration::from_secs(45);
    let mut second = first.clone();
    while Instant::now() < deadline && second == first {
        std::thread::sleep(Duration::from_millis(500));
        second = serial_of(&ca.path("s/cert.pem"));
    }
    assert_ne!(
        second, first,
        "not renewed within 45 s of waking past the renewal point"
    );
    // Issued on the CA's (jumped) clock: valid from about 50 minutes from now.
    let info = cert_info(&std::fs::read(ca.path("s/cert.pem")).unwrap());
    let ahead = info.not_before - time::OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::minutes(45),
        "not_before {} is not on the jumped clock",
        info.not_before
    );
    // Once: the new certificate is not due for another ~40 minutes of the jumped clock.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        serial_of(&ca.path("s/cert.pem")),
        second,
        "renewed more than once"
    );
    drop(agent);
}

/// The serial of the certificate a TLS server presents now, as openssl sees it.
fn served_serial(port: u16, name: &str, client: &Path) -> Option<String> {
    served_field(port, name, client, "-serial")
}

/// The issuer of the certificate the proxy on `port` serves for `name`.
fn served_issuer(port: u16, name: &str, client: &Path) -> Option<String> {
    served_field(port, name, client, "-issuer")
}

fn served_field(port: u16, name: &str, client: &Path, field: &str) -> Option<String> {
    let openssl = require_tool("openssl", "openssl");
    let connect = format!("127.0.0.1:{port}");
    let (chain, key) = (client.join("chain.pem"), client.join("key.pem"));
    let mut cmd = std::process::Command::new(openssl);
    cmd.args(["s_client", "-connect", &connect, "-servername", name])
        .arg("-cert")
        .arg(chain)
        .arg("-key")
        .arg(key);
    let pem = run(&mut cmd).stdout;
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    Some(openssl_x509(&pem[start..end], &[field]))
}

/// The app behind the proxies: python's http.server on a free port, serving `hello.txt`
/// with `text` from `dir`.
fn app(dir: &Path, text: &str) -> (Server, u16) {
    std::fs::create_dir_all(dir).unwrap();
    write(dir.join("hello.txt"), text);
    let port = free_port();
    let python = require_tool("python3", "python3");
    let mut cmd = std::process::Command::new(python);
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .current_dir(dir);
    let mut server = Server::spawn("http.server", &mut cmd, &dir.join("server.log"));
    server.wait_for_port(port);
    (server, port)
}

/// `--enroll-token TOKEN --ca URL --ca-fingerprint FP --san SAN`: what an enrolling proxy
/// needs.
fn enroll_args(ca: &OnlineCa, token: &str, san: &str) -> Vec<String> {
    let url = ca.url();
    strings(&["--enroll-token", token, "--ca", &url])
        .into_iter()
        .chain(strings(&[
            "--ca-fingerprint",
            &ca.fingerprint,
            "--san",
            san,
        ]))
        .collect()
}

/// Starts `twoway ARGS` (a proxy that enrolls) and waits for it to listen on `port`.
fn enrolled_proxy(ca: &OnlineCa, args: &[String], port: u16, log: &str) -> Server {
    let mut cmd = ca.cmd(args);
    cmd.env("RUST_LOG", "info");
    let mut proxy = Server::spawn("twoway proxy", &mut cmd, &ca.path(log));
    proxy.wait_for_port_within(port, ENROLL_TIMEOUT);
    proxy
}

/// The whole lifecycle with real parts: `ca serve` issues 2-minute certificates to a twoway
/// proxy whose in-process agent enrolled with a token (no key file anywhere); curl keeps
/// calling an app through the proxy while the agent renews three times, once across the CA
/// being killed and restarted. Not one request may fail.
#[test]
fn proxy_enrolled_in_process_renews_through_a_ca_restart_without_failed_requests() {
    let mut ca = OnlineCa::start(&[]);
    let name = "api.e2e.test";
    // The app: a plain HTTP server.
    let (_app, app_port) = app(&ca.path("site"), "hello from the app\n");
    // A client certificate for curl, issued offline from the same CA (the server runs).
    ca.tw("cert issue --ca-dir ca --profile client --san URI:spiffe://online.test/curl --out curl")
        .ok();
    let token = ca.token(&format!(
        "--san DNS:{name} --profile server --cert-ttl 2m --owner team-api"
    ));
    let (port, admin) = (free_port(), free_port());
    let mut args = strings(&["proxy", "server", "--listen", &format!("127.0.0.1:{port}")]);
    args.extend(strings(&["--backend", &format!("127.0.0.1:{app_port}")]));
    args.extend(strings(&[
        "--http",
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]));
    args.extend(strings(&["--workers", "1"]));
    args.extend(enroll_args(&ca, &token, &format!("DNS:{name}")));
    let proxy = enrolled_proxy(&ca, &args, port, "proxy.log");
    // No key file was written anywhere by the proxy: its key lives in memory.
    let logs = proxy.log();
    assert!(logs.contains("certificate obtained from the CA"), "{logs}");

    // The curl loop: a new process and a full mTLS handshake per request.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let curl_dir = ca.path("curl");
    let looper = curl_loop(
        name,
        port,
        ca.path("ca/root.pem"),
        std::sync::Arc::new(std::sync::Mutex::new(curl_dir.clone())),
        stop.clone(),
    );

    let gauge = |n: &str| sample(&http_get(admin, "/metrics").1, n).unwrap_or(-1.0);
    let mut serials = vec![served_serial(port, name, &curl_dir).expect("served certificate")];
    let note_serial = |serials: &mut Vec<String>| {
        if let Some(s) = served_serial(port, name, &curl_dir) {
            if serials.last() != Some(&s) {
                serials.push(s);
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(400);
    // First renewal with the CA up.
    while gauge("twoway_agent_renewals_total") < 1.0 {
        assert!(Instant::now() < deadline, "no first renewal");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(1500)); // the reloader polls every second
    note_serial(&mut serials);
    // Kill the CA shortly before the next renewal point and keep it down past it.
    let next = gauge("twoway_agent_next_renewal_seconds");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    std::thread::sleep(Duration::from_secs_f64((next - now - 5.0).max(0.0)));
    let failures_before = gauge("twoway_agent_failures_total");
    ca.restart(Duration::from_secs(20));
    let failures_during = gauge("twoway_agent_failures_total");
    assert!(
        failures_during > failures_before,
        "the agent should have found the CA down ({failures_before} → {failures_during})"
    );
    while gauge("twoway_agent_renewals_total") < 3.0 {
        assert!(
            Instant::now() < deadline,
            "fewer than three renewals: {}",
            http_get(admin, "/metrics").1
        );
        std::thread::sleep(Duration::from_millis(500));
        note_serial(&mut serials);
    }
    std::thread::sleep(Duration::from_millis(1500));
    note_serial(&mut serials);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (oks, failures) = looper.join().unwrap();
    eprintln!(
        "through the proxy: {oks} requests ok, {} failed; served serials {serials:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(oks >= 100, "only {oks} requests made");
    // The proxy served four different certificates: the enrollment and three renewals.
    assert!(serials.len() >= 4, "served serials: {serials:?}");
    // The inventory: one active certificate for the proxy, the earlier ones superseded.
    let v = ca
        .remote(&[
            "cert", "list", "--json", "--owner", "team-api", "--limit", "100",
        ])
        .ok()
        .json();
    let items = v["items"].as_array().unwrap();
    let active: Vec<&Value> = items.iter().filter(|c| c["status"] == "active").collect();
    assert_eq!(active.len(), 1, "{v:#}");
    assert!(items.len() >= 4, "{v:#}");
    let last = serials
        .last()
        .unwrap()
        .trim_start_matches("serial=")
        .to_lowercase();
    assert_eq!(
        active[0]["serial"]
            .as_str()
            .unwrap()
            .replace(':', "")
            .to_lowercase(),
        last,
        "the active certificate is the one the proxy serves"
    );
    drop(proxy);
}

/// The curl loop of the rotation test: a new process and a full mTLS handshake per request
/// to `https://NAME:PORT/hello.txt`, with the client certificate in the directory the
/// shared path names (switched during the test); (successes, failures) when `stop` is set.
fn curl_loop(
    name: &'static str,
    port: u16,
    root: std::path::PathBuf,
    client: std::sync::Arc<std::sync::Mutex<std::path::PathBuf>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut oks, mut failures) = (0u32, Vec::new());
        let end = Instant::now() + Duration::from_secs(480);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            let dir = client.lock().unwrap().clone();
            let o = run_tool(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "10",
                    "--cacert",
                    root.to_str().unwrap(),
                    "--cert",
                    dir.join("chain.pem").to_str().unwrap(),
                    "--key",
                    dir.join("key.pem").to_str().unwrap(),
                    "--resolve",
                    &format!("{name}:{port}:127.0.0.1"),
                    &format!("https://{name}:{port}/hello.txt"),
                ],
            );
            if o.success() && o.stdout == "hello from the app\n" {
                oks += 1;
            } else {
                failures.push(format!("{}{}", o.stdout, o.stderr));
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        (oks, failures)
    })
}

/// curl's side of the rotation test: a client that renews. Every 8 s it takes a new 25 s
/// client certificate from whatever intermediate is active (`twoway cert issue` into
/// `curl-<n>/` of the lab) and points `client` at it, so the curl loop always has a valid
/// one and each old intermediate's last curl certificate expires soon after a rotation.
fn curl_renewer(
    lab: std::path::PathBuf,
    client: std::sync::Arc<std::sync::Mutex<std::path::PathBuf>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(480);
        let mut n = 0u32;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            let dir = format!("curl-{n}");
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_twoway"));
            cmd.current_dir(&lab).args([
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--profile",
                "client",
                "--san",
                "URI:spiffe://online.test/curl",
                "--ttl",
                "25s",
                "--out",
                &dir,
            ]);
            // A failure (the intermediate's files caught mid-activation) is retried.
            if run(&mut cmd).success() {
                *client.lock().unwrap() = lab.join(&dir);
                n += 1;
                for _ in 0..80 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    })
}

/// Runs `twoway ca rotate retire ID` until it succeeds (the retiring intermediate's last
/// certificates expire meanwhile), within `limit`.
#[track_caller]
fn retire_when_free(ca: &OnlineCa, id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let o = ca.tw(&format!("ca rotate retire {id} --ca-dir ca"));
        if o.success() {
            return;
        }
        assert!(
            o.all().contains("live certificate") && Instant::now() < deadline,
            "{o}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits (up to 90 s) until the proxy on `port`, the agent (`agent/`) and curl's current
/// client certificate are all issued by `gen`.
#[track_caller]
fn wait_under(
    ca: &OnlineCa,
    port: u16,
    name: &str,
    client: &std::sync::Mutex<std::path::PathBuf>,
    gen: &str,
) {
    let current = || client.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let served = served_issuer(port, name, &current()).unwrap_or_default();
        let agent_issuer = ca.openssl("x509 -in agent/cert.pem -noout -issuer").stdout;
        let curl_issuer = ca
            .openssl(&format!(
                "x509 -in {}/cert.pem -noout -issuer",
                current().display()
            ))
            .stdout;
        if [&served, &agent_issuer, &curl_issuer]
            .iter()
            .all(|i| i.trim_end().ends_with(gen))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal under {gen}: proxy {served:?}, agent {agent_issuer:?}, curl {curl_issuer:?}\n{}",
            ca.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The intermediate, then the root, are rotated under load: `ca serve` with a proxy
/// enrolled in process and a long-running agent, both on short-lived certificates, and
/// curl calling the app through the proxy with a full handshake per request, with client
/// certificates that a renewer keeps fresh. `ca rotate intermediate` and `activate` run
/// beside the server, which is restarted; the proxy, the agent and curl move to the new
/// intermediate at their next renewal, both chains verify against the one root during the
/// overlap, and the old intermediate is refused retirement while certificates depend on it,
/// then retired (without --force) once the last has expired. Then `ca rotate root` (r2, g3
/// under it): the agent, pinned to r1, keeps renewing through the cross certificate, either
/// root accepts the new chains, and after g2 and r1 are retired the proxy and the agent
/// renew once more. Not one request may fail.
#[test]
fn intermediate_and_root_rotations_under_load_fail_no_request_through_an_enrolled_proxy() {
    let mut ca = OnlineCa::start(&[]);
    let name = "rot.e2e.test";
    let (_app, app_port) = app(&ca.path("site"), "hello from the app\n");
    let token = ca.token(&format!(
        "--san DNS:{name} --profile server --cert-ttl 24s --owner team-rot"
    ));
    let (port, admin) = (free_port(), free_port());
    let mut args = strings(&["proxy", "server", "--listen", &format!("127.0.0.1:{port}")]);
    args.extend(strings(&["--backend", &format!("127.0.0.1:{app_port}")]));
    args.extend(strings(&[
        "--http",
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]));
    args.extend(strings(&["--workers", "1"]));
    args.extend(enroll_args(&ca, &token, &format!("DNS:{name}")));
    let proxy = enrolled_proxy(&ca, &args, port, "rotation-proxy.log");
    // A long-running agent beside it.
    let agent_token = ca.token("--san DNS:agent.e2e.test --profile server --cert-ttl 24s");
    let url = ca.url();
    let mut cmd = ca.cmd(&[
        "agent",
        "--ca",
        &url,
        "--ca-fingerprint",
        &ca.fingerprint,
        "--token",
        &agent_token,
        "--san",
        "DNS:agent.e2e.test",
        "--out",
        "agent",
    ]);
    cmd.env("RUST_LOG", "info");
    let agent = Server::spawn("twoway agent", &mut cmd, &ca.path("agent.log"));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = std::sync::Arc::new(std::sync::Mutex::new(std::path::PathBuf::new()));
    let renewer = curl_renewer(ca.path(""), client.clone(), stop.clone());
    let started = Instant::now() + Duration::from_secs(30);
    while client.lock().unwrap().as_os_str().is_empty() {
        assert!(Instant::now() < started, "no client certificate for curl");
        std::thread::sleep(Duration::from_millis(100));
    }
    let looper = curl_loop(
        name,
        port,
        ca.path("ca/root.pem"),
        client.clone(),
        stop.clone(),
    );
    let current = || client.lock().unwrap().clone();
    let first = served_issuer(port, name, &current()).expect("served certificate");
    assert!(first.trim_end().ends_with("Intermediate CA"), "{first}");
    std::thread::sleep(Duration::from_secs(2));

    // The rotation, beside the running server; then the server takes g2 at its restart.
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    ca.restart(Duration::from_millis(200));

    // The proxy, the agent and curl renew on their own and come back with g2's chain.
    wait_under(&ca, port, name, &client, "Intermediate CA G2");
    // During the overlap both chains verify against the one root. curl's first (g1)
    // certificate lives 24 s and may have expired by now on a loaded machine: its chain is
    // what is checked, not its time.
    for dir in ["curl-0", &current().display().to_string(), "agent"] {
        let when = if dir == "curl-0" {
            "-no_check_time"
        } else {
            ""
        };
        let v = ca
            .sh(&format!(
                "openssl verify {when} -CAfile ca/root.pem -untrusted {dir}/chain.pem {dir}/cert.pem 2>&1"
            ))
            .all();
        assert!(v.contains(": OK"), "{dir}: {v}");
    }

    // g1 still has live certificates (the administrator's, curl's last g1 one): refused.
    // The administrator's is revoked (this test needs it no more), curl's expires; then g1
    // retires without --force (the proxy's and the agent's g1 certificates were superseded
    // by their renewals, the server's own by its restart).
    let o = ca.tw("ca rotate retire g1 --ca-dir ca").fails();
    assert!(o.all().contains("live certificate"), "{o}");
    let admin = common::pki::serial_of(&ca.path("admin/cert.pem"));
    ca.tw(&format!(
        "cert revoke {admin} --ca-dir ca --reason superseded"
    ))
    .ok();
    retire_when_free(&ca, "g1", Duration::from_secs(60));
    ca.restart(Duration::from_millis(200));

    // Then the root: r2 and g3 under it, cross-signed with r1; the server restarts with a
    // new root fingerprint, and the agent, still pinned to r1, keeps renewing.
    std::fs::copy(ca.path("ca/root.pem"), ca.path("r1.pem")).unwrap();
    ca.tw("ca rotate root --ca-dir ca").ok();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    ca.restart_with_new_root();
    let both = common::read(ca.path("ca/root.pem"));
    let end = both.find("-----END CERTIFICATE-----\n").unwrap() + 26;
    common::write(ca.path("r2.pem"), &both[..end]);
    wait_under(&ca, port, name, &client, "Intermediate CA G3");
    // Either root accepts the new chains (they carry r2 certified by r1).
    for anchor in ["r1.pem", "r2.pem"] {
        for dir in [current().display().to_string(), "agent".to_string()] {
            let v = ca
                .sh(&format!(
                    "openssl verify -CAfile {anchor} -untrusted {dir}/chain.pem {dir}/cert.pem 2>&1"
                ))
                .all();
            assert!(v.contains(": OK"), "{dir} with {anchor}: {v}");
        }
    }
    // The old intermediate and root go; the proxy and the agent renew once more with only
    // r2 left (the agent took r2 from its last renewal's answer).
    retire_when_free(&ca, "g2", Duration::from_secs(60));
    ca.tw("ca rotate retire r1 --ca-dir ca").ok();
    ca.restart(Duration::from_millis(200));
    let (served_before, agent_before) = (
        served_serial(port, name, &current()),
        common::read(ca.path("agent/cert.pem")),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while served_serial(port, name, &current()) == served_before
        || common::read(ca.path("agent/cert.pem")) == agent_before
    {
        assert!(
            Instant::now() < deadline,
            "no renewal after r1 retired\n{}",
            ca.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let roots = common::read(ca.path("agent/ca.pem"));
    assert_eq!(roots.matches("BEGIN CERTIFICATE").count(), 1, "{roots}");
    std::thread::sleep(Duration::from_secs(2));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (oks, failures) = looper.join().unwrap();
    renewer.join().unwrap();
    eprintln!(
        "through the proxy during the rotations: {oks} requests ok, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(oks >= 40, "only {oks} requests made");
    drop((proxy, agent));
}

/// An enrolling proxy refuses bad input before it listens, with the CA's reason and a
/// non-zero exit; `--check-config` does not spend the single-use token.
#[test]
fn proxy_enrollment_refuses_bad_input_before_listening() {
    let ca = OnlineCa::start(&[]);
    let token = ca.token("--san DNS:bad.e2e.test --profile server");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = ca.url();
    let args = |tok: &str, fp: &str, extra: &[&str]| {
        let mut a = vec!["proxy", "server", "--listen", &listen, "--backend"];
        a.extend(["127.0.0.1:9", "--enroll-token", tok, "--ca", &url]);
        a.extend(["--ca-fingerprint", fp]);
        a.extend_from_slice(extra);
        strings(&a)
    };
    let proxy = |tok: &str, fp: &str, extra: &[&str]| {
        let o = ca.tw_args(&args(tok, fp, extra));
        (o.code, format!("{}{}", o.stdout, o.stderr))
    };
    // --check-config validates without contacting the CA.
    let (code, out) = proxy(
        &token,
        &ca.fingerprint,
        &["--san", "DNS:bad.e2e.test", "--check-config"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not contacted"), "{out}");
    // A root that does not match the fingerprint is not trusted.
    let wrong = "00".repeat(32);
    let (code, out) = proxy(&token, &wrong, &["--san", "DNS:bad.e2e.test"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("fingerprint"), "{out}");
    // A name the token does not allow.
    let (code, out) = proxy(&token, &ca.fingerprint, &["--san", "DNS:other.e2e.test"]);
    assert_eq!(code, Some(65), "{out}");
    assert!(out.contains("other.e2e.test"), "{out}");
    // An unknown token.
    let (code, out) = proxy("twt_00", &ca.fingerprint, &["--san", "DNS:bad.e2e.test"]);
    assert_eq!(code, Some(77), "{out}");
    assert!(out.to_lowercase().contains("token"), "{out}");
    // Files and a token at once.
    let (code, out) = proxy(
        &token,
        &ca.fingerprint,
        &["--cert", "c.pem", "--key", "k.pem"],
    );
    assert_eq!(code, Some(64), "{out}");
    assert!(!port_open(port));
    // The token is still good: a proxy enrolls with it and serves.
    let good = args(&token, &ca.fingerprint, &["--san", "DNS:bad.e2e.test"]);
    drop(enrolled_proxy(&ca, &good, port, "proxy.log"));
    // Now it is spent: a second proxy with it is refused.
    let (code, out) = proxy(&token, &ca.fingerprint, &["--san", "DNS:bad.e2e.test"]);
    assert!(matches!(code, Some(65 | 77)), "{out}");
    assert!(out.contains("used"), "{out}");
}

/// Both sides without key files: a client-mode proxy and a server-mode proxy each enroll
/// with their own token, and a plaintext request crosses the mTLS hop between them, the
/// server allowing only the client's SPIFFE ID.
#[test]
fn client_and_server_proxies_both_enroll() {
    let ca = OnlineCa::start(&[]);
    let (_app, app_port) = app(&ca.path("site2"), "hello over enrolled mTLS\n");
    let server_token = ca.token("--san DNS:svc.e2e.test --profile server");
    let caller = "spiffe://online.test/caller";
    let client_token = ca.token(&format!("--san URI:{caller} --profile client"));
    let (sport, cport) = (free_port(), free_port());
    let mut server_args = strings(&["proxy", "server", "--listen", &format!("127.0.0.1:{sport}")]);
    server_args.extend(strings(&["--backend", &format!("127.0.0.1:{app_port}")]));
    server_args.extend(strings(&["--http", "--allow", caller]));
    server_args.extend(enroll_args(&ca, &server_token, "DNS:svc.e2e.test"));
    let _server = enrolled_proxy(&ca, &server_args, sport, "server.log");
    let mut client_args = strings(&["proxy", "client", "--listen", &format!("127.0.0.1:{cport}")]);
    client_args.extend(strings(&["--target", &format!("127.0.0.1:{sport}")]));
    client_args.extend(strings(&["--server-name", "svc.e2e.test"]));
    client_args.extend(enroll_args(&ca, &client_token, &format!("URI:{caller}")));
    let _client = enrolled_proxy(&ca, &client_args, cport, "client.log");
    let o = run_tool(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{cport}/hello.txt"),
        ],
    );
    assert_eq!(o.stdout, "hello over enrolled mTLS\n", "{}", o.stderr);
    // Both certificates are in the inventory, one client and one server.
    let v = ca
        .remote(&["cert", "list", "--json", "--san", "*e2e.test*"])
        .json();
    let v2 = ca
        .remote(&["cert", "list", "--json", "--san", "*caller*"])
        .json();
    assert_eq!(v["total"], 1, "{v:#}");
    assert_eq!(v2["total"], 1, "{v2:#}");
}
