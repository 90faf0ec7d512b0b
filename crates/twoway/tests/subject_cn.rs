//! Where a certificate's subject comes from. A requester controls the CN of its CSR; the CA
//! validates only the SANs (against the token, the policy, the administrator's request).
//! So the CA writes a CN only when it repeats one of the certificate's validated SANs, and
//! refuses a request for any other CN, on every issuance path: `cert issue`, `cert sign`,
//! `cert csr`, enrollment, `/v1/sign` (and remote `cert sign`), renewal. The proxy, which
//! also meets certificates of other CAs, takes identity from the SANs and lets a `cn:` rule
//! match only a CN that is not free text beside SANs.
//!
//! The real `twoway` binary as CA, server and proxy; openssl and curl as the requester and
//! the client. Only 127.0.0.1; every wait is bounded.

mod common;
mod online_ca;

use common::{dir_entries, run, Output};
use online_ca::{openssl_csr, subject_of, OnlineCa};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXIT_DATAERR: i32 = 65;

/// The number of certificates in the inventory.
fn count(ca: &OnlineCa) -> u64 {
    let o = ca.tw(&["cert", "list", "--ca-dir", "ca", "--json", "--limit", "1"]);
    let v: Value = serde_json::from_str(&o.ok().stdout).unwrap();
    v["total"].as_u64().unwrap()
}

#[track_caller]
fn refused_for_the_cn(o: &Output, cn: &str) {
    assert_eq!(o.code, Some(EXIT_DATAERR), "expected exit 65:\n{o}");
    assert!(
        o.stderr.contains(cn) && o.stderr.contains("SAN"),
        "the error should name the CN and the rule:\n{o}"
    );
}

/// POSTs JSON to the HTTPS API with curl; (status, answer).
fn post(ca: &OnlineCa, path: &str, body: &Value, client: Option<&str>) -> (u16, Value) {
    let f = ca.p(&format!("body-{}.json", rand_suffix()));
    std::fs::write(&f, body.to_string()).unwrap();
    let data = format!("@{}", f.display());
    let (c, k);
    let mut extra = vec![
        "-H",
        "content-type: application/json",
        "--data-binary",
        &data,
    ];
    if let Some(dir) = client {
        c = ca.s(&format!("{dir}/chain.pem"));
        k = ca.s(&format!("{dir}/key.pem"));
        extra.extend_from_slice(&["--cert", &c, "--key", &k]);
    }
    let (o, _) = ca.curl_https(path, &extra);
    let (json, code) = o.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(json).unwrap_or(Value::Null),
    )
}

fn rand_suffix() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn the_offline_cli_refuses_a_cn_that_is_not_a_san() {
    let ca = OnlineCa::init();
    let before = count(&ca);
    // cert issue: an operator's --cn that is none of the certificate's names.
    let o = ca.tw(&[
        "cert",
        "issue",
        "--ca-dir",
        "ca",
        "--profile",
        "server",
        "--san",
        "DNS:api.example.internal",
        "--cn",
        "migrations",
        "--out",
        "api",
    ]);
    refused_for_the_cn(&o, "migrations");
    assert!(
        dir_entries(&ca.p("api")).is_empty(),
        "{:?}",
        dir_entries(&ca.p("api"))
    );
    // cert csr refuses to make such a request in the first place.
    let o = ca.tw(&[
        "cert",
        "csr",
        "--san",
        "URI:spiffe://limits.test/user2",
        "--cn",
        "spiffe://limits.test/admin",
        "--out",
        "req",
    ]);
    refused_for_the_cn(&o, "spiffe://limits.test/admin");
    // cert sign: a CSR made elsewhere with a forged CN.
    let pem = openssl_csr(
        ca.dir.path(),
        "forged",
        "www.evil.com",
        "DNS:api.example.internal",
    );
    let o = ca.tw(&[
        "cert",
        "sign",
        "forged.csr",
        "--ca-dir",
        "ca",
        "--profile",
        "server",
        "--out",
        "signed",
    ]);
    refused_for_the_cn(&o, "www.evil.com");
    assert!(pem.contains("CERTIFICATE REQUEST"));
    assert_eq!(count(&ca), before, "a refused request recorded something");

    // A CN that repeats a SAN is kept, in the SAN's form.
    let o = ca.tw(&[
        "cert",
        "issue",
        "--ca-dir",
        "ca",
        "--profile",
        "server",
        "--san",
        "DNS:api.example.internal",
        "--cn",
        "API.example.internal",
        "--out",
        "api",
    ]);
    o.ok();
    let cert = std::fs::read_to_string(ca.p("api/cert.pem")).unwrap();
    assert_eq!(
        subject_of(&cert, ca.dir.path()),
        "subject=CN=api.example.internal"
    );
    openssl_csr(ca.dir.path(), "same", "10.0.0.7", "IP:10.0.0.7");
    ca.tw(&[
        "cert",
        "sign",
        "same.csr",
        "--ca-dir",
        "ca",
        "--profile",
        "server",
        "--out",
        "same",
    ])
    .ok();
    let cert = std::fs::read_to_string(ca.p("same/cert.pem")).unwrap();
    assert_eq!(subject_of(&cert, ca.dir.path()), "subject=CN=10.0.0.7");
}

#[test]
fn the_online_ca_refuses_a_forged_cn_on_enrollment_and_signing() {
    let mut ca = OnlineCa::init();
    ca.serve();
    let before = count(&ca);
    let token = ca
        .tw(&[
            "token",
            "create",
            "--ca-dir",
            "ca",
            "--profile",
            "client",
            "--san",
            "URI:spiffe://limits.test/user2",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    // Enrollment: the token binds the SAN; the CN is the requester's free text.
    for (name, subj, sans) in [
        ("e1", "migrations", "URI:spiffe://limits.test/user2"),
        (
            "e2",
            "spiffe://limits.test/admin",
            "URI:spiffe://limits.test/user2",
        ),
        ("e3", "migrations", ""),
    ] {
        let csr = openssl_csr(ca.dir.path(), name, subj, sans);
        let (s, v) = post(
            &ca,
            "/v1/enroll",
            &json!({"token": token, "csr": csr}),
            None,
        );
        assert_eq!(s, 400, "enroll with {subj}: {v}");
        assert_eq!(v["error"]["code"], "cn_not_a_san", "{v}");
    }
    // The token was not spent by the refusals; a CN equal to the SAN is fine.
    let csr = openssl_csr(
        ca.dir.path(),
        "e4",
        "spiffe://limits.test/user2",
        "URI:spiffe://limits.test/user2",
    );
    let (s, v) = post(
        &ca,
        "/v1/enroll",
        &json!({"token": token, "csr": csr}),
        None,
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        subject_of(v["certificate"].as_str().unwrap(), ca.dir.path()),
        "subject=CN=spiffe://limits.test/user2"
    );

    // POST /v1/sign: an administrator signs a CSR whose CN is a name it was never asked to
    // certify (and which name constraints would not allow as a SAN).
    let csr = openssl_csr(
        ca.dir.path(),
        "s1",
        "www.evil.com",
        "DNS:svc.example.internal",
    );
    let (s, v) = post(
        &ca,
        "/v1/sign",
        &json!({"csr": csr, "profile": "server"}),
        Some("admin"),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "cn_not_a_san", "{v}");
    // ...also when the administrator names the SANs.
    let (s, v) = post(
        &ca,
        "/v1/sign",
        &json!({"csr": csr, "profile": "server", "sans": ["DNS:svc.example.internal"]}),
        Some("admin"),
    );
    assert_eq!(s, 400, "{v}");
    // The remote CLI says the same, with exit 65.
    let root = ca.s("ca/root.pem");
    let url = format!("https://{}", ca.https);
    let o = ca.tw(&[
        "--ca",
        &url,
        "--cert",
        "admin/chain.pem",
        "--key",
        "admin/key.pem",
        "--ca-cert",
        &root,
        "cert",
        "sign",
        "s1.csr",
        "--profile",
        "server",
    ]);
    refused_for_the_cn(&o, "www.evil.com");
    assert_eq!(
        count(&ca),
        before + 1,
        "only the good enrollment is recorded"
    );
}

/// A certificate for `subj`/`sans` (clientAuth) signed by the CA's intermediate key with
/// openssl, as a CA that copies the CSR's CN would sign it. Writes `name.pem` (leaf and
/// intermediate) and `name.key`.
fn signed_by_openssl(ca: &OnlineCa, name: &str, subj: &str, sans: &str) {
    let d = ca.dir.path();
    openssl_csr(d, name, subj, "");
    let mut ext = String::from(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    if !sans.is_empty() {
        ext.push_str(&format!("subjectAltName={sans}\n"));
    }
    std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
    run(Command::new("openssl").current_dir(d).args([
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        "ca/intermediate.pem",
        "-CAkey",
        "ca/intermediate.key",
        "-set_serial",
        &format!("0x{:x}{}", std::process::id(), rand_suffix() + 100),
        "-days",
        "1",
        "-extfile",
        &format!("{name}.ext"),
        "-out",
        &format!("{name}.leaf.pem"),
    ]))
    .ok();
    let leaf = std::fs::read_to_string(d.join(format!("{name}.leaf.pem"))).unwrap();
    let int = std::fs::read_to_string(d.join("ca/intermediate.pem")).unwrap();
    std::fs::write(d.join(format!("{name}.pem")), format!("{leaf}{int}")).unwrap();
}

/// A backend answering every request with the head it received; counts requests.
fn echo_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(1000) {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::Relaxed);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                match s.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let body = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, hits)
}

/// `twoway proxy server --http` in front of `backend`, with `rules`; killed on drop.
fn proxy(ca: &OnlineCa, backend: SocketAddr, rules: &[&str]) -> (common::Server, u16) {
    let port = common::free_port();
    let admin = common::free_port();
    let mut cmd = Command::new(common::TWOWAY);
    cmd.current_dir(ca.dir.path()).args([
        "proxy",
        "server",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--backend",
        &backend.to_string(),
        "--cert",
        "proxy/chain.pem",
        "--key",
        "proxy/key.pem",
        "--client-ca",
        "ca/root.pem",
        "--http",
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    for r in rules {
        cmd.args(["--allow", r]);
    }
    let mut p = common::Server::spawn(
        "twoway proxy",
        &mut cmd,
        &ca.p(&format!("proxy-{port}.log")),
    );
    p.wait_for_port(port);
    p.wait_for_port(admin);
    (p, port)
}

/// curl through the proxy with the certificate `name`; (HTTP status or 0, body).
fn curl_as(ca: &OnlineCa, port: u16, name: &str) -> (u16, String) {
    let (o, _) = {
        let root = ca.s("ca/root.pem");
        let cert = ca.s(&format!("{name}.pem"));
        let key = ca.s(&format!("{name}.key"));
        let url = format!("https://127.0.0.1:{port}/x");
        let start = Instant::now();
        let o = run(Command::new("curl").args([
            "-sS",
            "-m",
            "5",
            "--cacert",
            &root,
            "--cert",
            &cert,
            "--key",
            &key,
            "-w",
            "\n%{http_code}",
            &url,
        ]));
        (o, start.elapsed())
    };
    let (body, code) = o.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn a_cn_rule_is_not_satisfied_by_a_free_cn_beside_sans() {
    common::require_tool("curl", "curl");
    let ca = OnlineCa::init();
    ca.tw(&[
        "cert",
        "issue",
        "--ca-dir",
        "ca",
        "--profile",
        "server",
        "--san",
        "DNS:localhost",
        "--san",
        "IP:127.0.0.1",
        "--out",
        "proxy",
    ])
    .ok();
    // What a CA that copies CNs hands out (twoway before this rule, or another CA).
    signed_by_openssl(
        &ca,
        "forged",
        "migrations",
        "URI:spiffe://limits.test/user2",
    );
    signed_by_openssl(
        &ca,
        "forged-dns",
        "migrations",
        "DNS:user2.example.internal",
    );
    signed_by_openssl(&ca, "ip-only", "spiffe://limits.test/admin", "IP:10.9.9.9");
    // A legacy certificate whose only name is its CN, and one whose CN repeats its SAN.
    signed_by_openssl(&ca, "legacy", "migrations", "");
    signed_by_openssl(
        &ca,
        "repeats",
        "migrations.example.internal",
        "DNS:migrations.example.internal",
    );

    let (backend, hits) = echo_backend();
    let (p, port) = proxy(&ca, backend, &["cn:migrations*"]);
    for name in ["forged", "forged-dns", "ip-only"] {
        let before = hits.load(Ordering::Relaxed);
        let (status, body) = curl_as(&ca, port, name);
        assert_ne!(
            status,
            200,
            "{name} passed cn:migrations*: {body}\n{}",
            p.log()
        );
        assert_eq!(
            hits.load(Ordering::Relaxed),
            before,
            "{name} reached the backend"
        );
    }
    for name in ["legacy", "repeats"] {
        let (status, body) = curl_as(&ca, port, name);
        assert_eq!(status, 200, "{name}: {body}\n{}", p.log());
    }
    drop(p);

    // Without rules: the identity the backend receives comes from the SANs, never from a
    // CN beside them.
    let (p, port) = proxy(&ca, backend, &[]);
    let (status, body) = curl_as(&ca, port, "ip-only");
    assert_eq!(status, 200, "{body}\n{}", p.log());
    assert!(body.contains("x-client-identity: 10.9.9.9\r\n"), "{body}");
    assert!(!body.contains("x-client-identity: spiffe"), "{body}");
    let (status, body) = curl_as(&ca, port, "legacy");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-client-identity: migrations\r\n"), "{body}");
}
