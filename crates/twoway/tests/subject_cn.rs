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

use common::lab::EXIT_DATAERR;
use common::online::OnlineCa;
use common::pki::{openssl_csr, random_serial, subject_of};
use common::{dir_entries, free_port, read, require_tool, words, write, Output, Server};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[track_caller]
fn refused_for_the_cn(o: &Output, cn: &str) {
    assert_eq!(o.code, Some(EXIT_DATAERR), "expected exit 65:\n{o}");
    assert!(
        o.stderr.contains(cn) && o.stderr.contains("SAN"),
        "the error should name the CN and the rule:\n{o}"
    );
}

#[test]
fn the_offline_cli_refuses_a_cn_that_is_not_a_san() {
    let ca = OnlineCa::init();
    let before = ca.count_offline();
    // cert issue: an operator's --cn that is none of the certificate's names.
    let issue = "cert issue --ca-dir ca --profile server --san DNS:api.example.internal";
    let o = ca.tw(&format!("{issue} --cn migrations --out api"));
    refused_for_the_cn(&o, "migrations");
    assert!(
        dir_entries(&ca.path("api")).is_empty(),
        "{:?}",
        dir_entries(&ca.path("api"))
    );
    // cert csr refuses to make such a request in the first place.
    let o = ca.tw(
        "cert csr --san URI:spiffe://limits.test/user2 --cn spiffe://limits.test/admin --out req",
    );
    refused_for_the_cn(&o, "spiffe://limits.test/admin");
    // cert sign: a CSR made elsewhere with a forged CN.
    let pem = openssl_csr(
        ca.dir.path(),
        "forged",
        "www.evil.com",
        "DNS:api.example.internal",
    );
    let o = ca.tw("cert sign forged.csr --ca-dir ca --profile server --out signed");
    refused_for_the_cn(&o, "www.evil.com");
    assert!(pem.contains("CERTIFICATE REQUEST"));
    assert_eq!(
        ca.count_offline(),
        before,
        "a refused request recorded something"
    );

    // A CN that repeats a SAN is kept, in the SAN's form.
    ca.tw(&format!("{issue} --cn API.example.internal --out api"))
        .ok();
    let cert = read(ca.path("api/cert.pem"));
    assert_eq!(subject_of(&cert), "subject=CN=api.example.internal");
    openssl_csr(ca.dir.path(), "same", "10.0.0.7", "IP:10.0.0.7");
    ca.tw("cert sign same.csr --ca-dir ca --profile server --out same")
        .ok();
    let cert = read(ca.path("same/cert.pem"));
    assert_eq!(subject_of(&cert), "subject=CN=10.0.0.7");
}

#[test]
fn the_online_ca_refuses_a_forged_cn_on_enrollment_and_signing() {
    let mut ca = OnlineCa::init();
    ca.serve();
    let before = ca.count_offline();
    let token = ca
        .tw("token create --ca-dir ca --profile client --san URI:spiffe://limits.test/user2")
        .ok()
        .line();
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
        let (s, v) = ca.post_json("/v1/enroll", &json!({"token": token, "csr": csr}), None);
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
    let (s, v) = ca.post_json("/v1/enroll", &json!({"token": token, "csr": csr}), None);
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        subject_of(v["certificate"].as_str().unwrap()),
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
    let (s, v) = ca.post_json(
        "/v1/sign",
        &json!({"csr": csr, "profile": "server"}),
        Some("admin"),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "cn_not_a_san", "{v}");
    // ...also when the administrator names the SANs.
    let (s, v) = ca.post_json(
        "/v1/sign",
        &json!({"csr": csr, "profile": "server", "sans": ["DNS:svc.example.internal"]}),
        Some("admin"),
    );
    assert_eq!(s, 400, "{v}");
    // The remote CLI says the same, with exit 65.
    let o = ca.remote(&["cert", "sign", "s1.csr", "--profile", "server"]);
    refused_for_the_cn(&o, "www.evil.com");
    assert_eq!(
        ca.count_offline(),
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
    write(d.join(format!("{name}.ext")), ext);
    let serial: String = random_serial().iter().map(|b| format!("{b:02x}")).collect();
    let line = format!(
        "x509 -req -in {name}.csr -CA ca/intermediate.pem -CAkey ca/intermediate.key \
         -set_serial 0x{serial} -days 1 -extfile {name}.ext -out {name}.leaf.pem"
    );
    ca.openssl(&line).ok();
    let leaf = read(d.join(format!("{name}.leaf.pem")));
    let int = read(d.join("ca/intermediate.pem"));
    write(d.join(format!("{name}.pem")), format!("{leaf}{int}"));
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
fn proxy(ca: &OnlineCa, backend: SocketAddr, rules: &[&str]) -> (Server, u16) {
    let (port, admin) = (free_port(), free_port());
    let mut args = words(&format!(
        "proxy server --listen 127.0.0.1:{port} --backend {backend} --cert proxy/chain.pem \
         --key proxy/key.pem --client-ca ca/root.pem --http --admin 127.0.0.1:{admin}"
    ));
    for r in rules {
        args.extend(["--allow".to_string(), r.to_string()]);
    }
    let log = ca.path(&format!("proxy-{port}.log"));
    let mut p = Server::spawn("twoway proxy", &mut ca.cmd(&args), &log);
    p.wait_for_port(port);
    p.wait_for_port(admin);
    (p, port)
}

/// curl through the proxy with the certificate `name`; (HTTP status or 0, body).
fn curl_as(ca: &OnlineCa, port: u16, name: &str) -> (u16, String) {
    let mut args = words(&format!(
        "-sS -m 5 --cacert ca/root.pem --cert {name}.pem --key {name}.key"
    ));
    args.extend(["-w".into(), "\n%{http_code}".into()]);
    args.push(format!("https://127.0.0.1:{port}/x"));
    let o = ca.tool_args("curl", &args);
    let (body, code) = o.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn a_cn_rule_is_not_satisfied_by_a_free_cn_beside_sans() {
    require_tool("curl", "curl");
    let ca = OnlineCa::init();
    ca.tw("cert issue --ca-dir ca --profile server --san DNS:localhost --san IP:127.0.0.1 --out proxy")
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
