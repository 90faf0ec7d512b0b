//! Real ACME clients against `twoway ca serve` (RFC 8555): certbot (`certonly
//! --standalone`, http-01; `--manual` dns-01 with a hook; with EAB; with pre-authorized
//! names; `renew` when the CA asks early and across an intermediate rotation; `revoke`),
//! lego (`--http`, `--tls`, `--dns exec`) and dehydrated (http-01 from a webroot,
//! `--revoke`). Each certificate verifies with openssl, is in the inventory with source
//! `acme` and the directory's owner, and a revoked one reads `revoked` from `openssl
//! ocsp`. Across an intermediate rotation certbot renews from the new intermediate and
//! revokes the certificate the old one issued, which the old one's OCSP answers and CRL
//! then report.
//!
//! Only 127.0.0.1: the directory's `validation_address` sends validations there. Every
//! client run is bounded in time.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::acme::*;
use common::online::OnlineCa;
use common::{free_port, Output, Server};
use serde_json::Value;

#[test]
fn certbot_standalone_issues_and_revokes() {
    let port = free_port();
    let ca = acme_ca(port, free_port());
    let mut c = client(&ca, "certbot", "certbot (pip install certbot)");
    c.args([
        "certonly",
        "--standalone",
        "--agree-tos",
        "--register-unsafely-without-email",
    ])
    .args(certbot_args(&ca, port))
    .args(["-d", "web1.acme.test"]);
    let o = run_client(c);
    assert!(o.success(), "certbot certonly: {}\n{}", o.all(), ca.log());
    let live = ca.p("certbot/config/live/web1.acme.test");
    std::fs::copy(format!("{live}/cert.pem"), ca.path("web1.pem")).unwrap();
    // the chain certbot saved is the leaf and the intermediate
    let full = std::fs::read_to_string(format!("{live}/fullchain.pem")).unwrap();
    assert_eq!(full.matches("BEGIN CERTIFICATE").count(), 2);
    check_issued(&ca, "web1.pem", "web1.acme.test");
    assert!(ca.ocsp("web1.pem").contains("web1.pem: good"));

    let mut c = client(&ca, "certbot", "certbot (pip install certbot)");
    c.args([
        "revoke",
        "--cert-path",
        &ca.p("web1.pem"),
        "--no-delete-after-revoke",
    ])
    .args(certbot_args(&ca, 0));
    let o = run_client(c);
    assert!(o.success(), "certbot revoke: {}", o.all());
    let ocsp = ca.ocsp("web1.pem");
    assert!(ocsp.contains("web1.pem: revoked"), "{ocsp}");
    assert_eq!(inventory_record(&ca, "web1.acme.test")["status"], "revoked");
}

fn lego(ca: &OnlineCa, name: &str, challenge: &[&str]) -> Output {
    let mut c = client(ca, "lego", "lego");
    c.args([
        "--accept-tos",
        "--email",
        "ops@acme.test",
        "--server",
        &directory_url(ca),
        "--path",
        &ca.p("lego"),
        "--domains",
        name,
    ])
    .args(challenge)
    .arg("run");
    run_client(c)
}

#[test]
fn lego_http01_and_tls_alpn01() {
    let (http, tls) = (free_port(), free_port());
    let ca = acme_ca(http, tls);
    // each name through one challenge type; the certificate lego saved is checked
    let obtain = |name: &str, how: &[&str]| {
        let o = lego(&ca, name, how);
        assert!(o.success(), "lego {how:?}: {}\n{}", o.all(), ca.log());
        let saved = ca.path(&format!("lego/certificates/{name}.crt"));
        std::fs::copy(saved, ca.path(&format!("{name}.pem"))).unwrap();
        check_issued(&ca, &format!("{name}.pem"), name);
    };
    obtain(
        "web2.acme.test",
        &["--http", "--http.port", &format!("127.0.0.1:{http}")],
    );
    obtain(
        "web3.acme.test",
        &["--tls", "--tls.port", &format!("127.0.0.1:{tls}")],
    );

    // a name outside the directory's allow list is refused before any challenge
    let o = lego(
        &ca,
        "web4.other.test",
        &["--http", "--http.port", &format!("127.0.0.1:{http}")],
    );
    assert!(!o.success());
    assert!(o.all().contains("rejectedIdentifier"), "{}", o.all());
}

#[test]
fn certbot_with_external_account_binding() {
    let port = free_port();
    let ca = acme_ca_with(port, free_port(), "eab_required = true");
    // without a binding: certbot reads externalAccountRequired in the directory's meta
    let o = certbot_certonly(&ca, port, "cb-none", "eab0.acme.test", &[]);
    assert!(!o.success());
    assert!(
        o.all().contains("requires external account binding"),
        "{}",
        o.all()
    );

    let eab = ca
        .tw("acme eab create --ca-dir ca --directory test --owner team-eab --json")
        .ok()
        .json();
    let (kid, key) = (
        eab["kid"].as_str().unwrap(),
        eab["hmac_key"].as_str().unwrap(),
    );
    let bad_key = B64.encode([7u8; 32]);
    let o = certbot_certonly(
        &ca,
        port,
        "cb-bad",
        "eab1.acme.test",
        &[
            &format!("--eab-kid={kid}"),
            &format!("--eab-hmac-key={bad_key}"),
        ],
    );
    assert!(!o.success());
    assert!(o.all().contains("MAC does not verify"), "{}", o.all());

    let o = certbot_certonly(
        &ca,
        port,
        "cb-eab",
        "eab1.acme.test",
        &[
            &format!("--eab-kid={kid}"),
            &format!("--eab-hmac-key={key}"),
        ],
    );
    assert!(o.success(), "certbot with EAB: {}\n{}", o.all(), ca.log());
    let rec = inventory_record(&ca, "eab1.acme.test");
    assert_eq!(rec["source"], "acme");
    assert_eq!(rec["owner"], "team-eab", "the EAB key's owner: {rec}");

    // the key is single-use: a second account cannot bind with it
    let o = certbot_certonly(
        &ca,
        port,
        "cb-again",
        "eab2.acme.test",
        &[
            &format!("--eab-kid={kid}"),
            &format!("--eab-hmac-key={key}"),
        ],
    );
    assert!(!o.success());
    assert!(o.all().contains("used already"), "{}", o.all());
    // and a directory name that does not exist is refused by the CLI
    let o = ca
        .tw("acme eab create --ca-dir ca --directory nope")
        .fails();
    assert!(o.all().contains("no ACME directory"), "{}", o.all());
    // the secret EAB keys derive from is private
    assert_eq!(common::mode(&ca.path("ca/acme-eab.key")), 0o600);
}

#[test]
fn certbot_manual_dns01() {
    let ca_holder = std::sync::Arc::new(std::sync::Mutex::new(std::path::PathBuf::new()));
    let txt_path = ca_holder.clone();
    let (dns, answered) = dns_server(move || {
        let p = txt_path.lock().unwrap().clone();
        std::fs::read_to_string(p).unwrap_or_default()
    });
    let ca = acme_ca_with(
        free_port(),
        free_port(),
        &format!("dns_resolver = \"127.0.0.1:{dns}\""),
    );
    let txt = ca.path("txt-record");
    *ca_holder.lock().unwrap() = txt.clone();
    // the hook puts the record where the CA's resolver (the DNS server above) reads it
    let hook = format!("printf %s \"$CERTBOT_VALIDATION\" > {}", txt.display());
    let o = certbot_certonly(
        &ca,
        0,
        "cb-dns",
        "dns2.acme.test",
        &[
            "--manual",
            "--preferred-challenges",
            "dns",
            "--manual-auth-hook",
            &hook,
        ],
    );
    assert!(
        o.success(),
        "certbot --manual dns: {}\n{}",
        o.all(),
        ca.log()
    );
    assert_eq!(answered.join().unwrap(), "_acme-challenge.dns2.acme.test");
    let live = ca.p("cb-dns/live/dns2.acme.test");
    std::fs::copy(format!("{live}/cert.pem"), ca.path("dns2.pem")).unwrap();
    check_issued(&ca, "dns2.pem", "dns2.acme.test");
}

/// A DNS server on 127.0.0.1 that answers every TXT question with the record the file at
/// `path` holds (no record while it is empty or absent) and every other question with an
/// empty answer; the names asked are collected. It serves at most 500 questions and stops
/// answering after [`CLIENT_TIMEOUT`] twice over.
fn dns_server_from_file(
    path: std::path::PathBuf,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let deadline = std::time::Instant::now() + 2 * CLIENT_TIMEOUT;
        let mut buf = [0u8; 1500];
        for _ in 0..500 {
            if std::time::Instant::now() > deadline {
                return;
            }
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            let mut labels = Vec::new();
            let mut i = 12;
            while i < n && q[i] != 0 {
                let l = q[i] as usize;
                if i + 1 + l > n {
                    break;
                }
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).into_owned());
                i += 1 + l;
            }
            if i + 5 > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            seen.lock().unwrap().push(labels.join("."));
            // header and question only: no authority or additional records (EDNS) echoed
            let mut r = q[..i + 5].to_vec();
            r[2] |= 0x80;
            r[3] = 0x80;
            r[6..12].fill(0);
            let value = std::fs::read_to_string(&path).unwrap_or_default();
            if qtype == 16 && !value.is_empty() {
                r[7] = 1;
                r.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 1]);
                r.extend_from_slice(&(value.len() as u16 + 1).to_be_bytes());
                r.push(value.len() as u8);
                r.extend_from_slice(value.as_bytes());
            }
            let _ = sock.send_to(&r, from);
        }
    });
    (port, asked)
}

#[test]
fn lego_dns01_through_an_exec_hook() {
    let holder = tempfile_path();
    let (dns, asked) = dns_server_from_file(holder.clone());
    let ca = acme_ca_with(
        free_port(),
        free_port(),
        &format!("dns_resolver = \"127.0.0.1:{dns}\""),
    );
    // lego's exec provider runs the hook with `present|cleanup FQDN VALUE`; the hook puts the
    // record where the DNS server above reads it
    let hook = ca.path("lego-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  present) printf %s \"$3\" > {f} ;;\n  cleanup) : > {f} ;;\nesac\n",
            f = holder.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = client(&ca, "lego", "lego");
    c.env("EXEC_PATH", &hook)
        .env("EXEC_PROPAGATION_TIMEOUT", "30")
        .env("EXEC_POLLING_INTERVAL", "1")
        .args([
            "--accept-tos",
            "--email",
            "ops@acme.test",
            "--server",
            &directory_url(&ca),
            "--path",
            &ca.p("lego"),
            "--domains",
            "dns3.acme.test",
            "--dns",
            "exec",
            "--dns.resolvers",
            &format!("127.0.0.1:{dns}"),
            "--dns.disable-cp",
            "run",
        ]);
    let o = run_client(c);
    assert!(o.success(), "lego --dns exec: {}\n{}", o.all(), ca.log());
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .any(|n| n == "_acme-challenge.dns3.acme.test"),
        "the CA looked the record up through its resolver: {:?}",
        asked.lock().unwrap()
    );
    std::fs::copy(
        ca.path("lego/certificates/dns3.acme.test.crt"),
        ca.path("dns3.pem"),
    )
    .unwrap();
    check_issued(&ca, "dns3.pem", "dns3.acme.test");
    let _ = std::fs::remove_file(&holder);
}

/// A path in the system's temporary directory no other test uses.
fn tempfile_path() -> std::path::PathBuf {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.into_temp_path().keep().unwrap()
}

#[test]
fn dehydrated_http01_issues_and_revokes() {
    let port = free_port();
    let ca = acme_ca(port, free_port());
    // dehydrated writes the challenge files into a webroot; a plain HTTP server serves it
    // on the port the CA validates http-01 at
    let wellknown = ca.path("www/.well-known/acme-challenge");
    std::fs::create_dir_all(&wellknown).unwrap();
    std::fs::create_dir_all(ca.path("dehydrated")).unwrap();
    let mut web = Server::spawn(
        "http.server",
        Command::new("python3").args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            &ca.p("www"),
            &port.to_string(),
        ]),
        &ca.path("http-server.log"),
    );
    web.wait_for_port(port);
    let config = ca.path("dehydrated.conf");
    std::fs::write(
        &config,
        format!(
            "CA=\"{}\"\nBASEDIR=\"{}\"\nWELLKNOWN=\"{}\"\nCHALLENGETYPE=\"http-01\"\n\
             CONTACT_EMAIL=\"ops@acme.test\"\nKEY_ALGO=\"secp384r1\"\n",
            directory_url(&ca),
            ca.p("dehydrated"),
            wellknown.display()
        ),
    )
    .unwrap();
    let dehydrated = |args: &[&str]| {
        let mut c = client(&ca, "dehydrated", "dehydrated");
        c.env("CURL_CA_BUNDLE", ca.p("ca/root.pem"))
            .args(["--config", &config.display().to_string()])
            .args(args);
        run_client(c)
    };
    let o = dehydrated(&["--register", "--accept-terms"]);
    assert!(
        o.success(),
        "dehydrated --register: {}\n{}",
        o.all(),
        ca.log()
    );
    let o = dehydrated(&["--cron", "--domain", "web5.acme.test"]);
    assert!(o.success(), "dehydrated --cron: {}\n{}", o.all(), ca.log());
    let cert = ca.p("dehydrated/certs/web5.acme.test/cert.pem");
    std::fs::copy(&cert, ca.path("web5.pem")).unwrap();
    check_issued(&ca, "web5.pem", "web5.acme.test");
    assert!(ca.ocsp("web5.pem").contains("web5.pem: good"));

    let o = dehydrated(&["--revoke", &cert]);
    assert!(
        o.success(),
        "dehydrated --revoke: {}\n{}",
        o.all(),
        ca.log()
    );
    let ocsp = ca.ocsp("web5.pem");
    assert!(ocsp.contains("web5.pem: revoked"), "{ocsp}");
    assert_eq!(inventory_record(&ca, "web5.acme.test")["status"], "revoked");
}

#[test]
fn certbot_renews_when_the_ca_asks_early() {
    let port = free_port();
    // clients may ask again after a second: the test need not wait 6 hours
    let ca = acme_ca_with(port, free_port(), "ari_retry_after = \"1s\"");
    let o = certbot_certonly(&ca, port, "cb-ari", "ari2.acme.test", &[]);
    assert!(o.success(), "certbot certonly: {}\n{}", o.all(), ca.log());
    let old = inventory_record(&ca, "ari2.acme.test");
    let renew = || {
        let mut c = client(&ca, "certbot", "certbot (pip install certbot)");
        // non-interactive `renew` otherwise sleeps up to 8 minutes first (spreading load on
        // public CAs): the test asks now
        c.args(["renew", "--no-random-sleep-on-renew"])
            .args(certbot_args(&ca, port))
            .args(["--config-dir", &ca.p("cb-ari")]);
        run_client(c)
    };
    let log = || std::fs::read_to_string(ca.path("certbot/logs/letsencrypt.log")).unwrap();
    let o = renew();
    assert!(o.success(), "{}", o.all());
    assert!(o.all().contains("not yet due"), "{}", o.all());
    // certbot asked the renewal information
    assert!(log().contains("/acme/test/renewal-info/"), "{}", log());
    assert_eq!(inventory_records(&ca, "ari2.acme.test").len(), 1);

    let r = ca
        .tw("acme renew-early --ca-dir ca --all --json")
        .ok()
        .json();
    assert_eq!(r["affected"], 1, "{r}");
    assert_eq!(r["serials"][0], old["serial"]);
    let r = ca
        .tw("acme renew-early --ca-dir ca --all --directory test")
        .ok();
    assert!(r.stdout.contains("1 certificate"), "{}", r.stdout);
    let audit = ca.tw("audit list --ca-dir ca --json").ok().stdout;
    assert!(audit.contains("acme.renew-early"), "{audit}");
    // past certbot's Retry-After
    std::thread::sleep(Duration::from_millis(2500));
    let o = renew();
    assert!(o.success(), "certbot renew: {}\n{}", o.all(), ca.log());
    assert!(o.all().contains("renewals succeeded"), "{}", o.all());
    let recs = inventory_records(&ca, "ari2.acme.test");
    assert_eq!(recs.len(), 2, "renewed: {recs:?}");
}

#[test]
fn certbot_with_preauthorized_names() {
    // no challenge server anywhere: the port certbot would be validated on stays closed
    let ca = acme_ca_with(free_port(), free_port(), "eab_required = true");
    let eab = ca
        .tw_args(&[
            "acme",
            "eab",
            "create",
            "--ca-dir",
            "ca",
            "--directory",
            "test",
            "--owner",
            "team-lab",
            "--preauthorize",
            "pre*.acme.test",
            "--preauthorize",
            "pre*.other.test",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(eab["preauthorize"][0], "pre*.acme.test");
    let bad = ca
        .tw("acme eab create --ca-dir ca --directory test --preauthorize bad/glob")
        .fails();
    assert!(bad.all().contains("--preauthorize"), "{}", bad.all());
    let (kid, key) = (
        eab["kid"].as_str().unwrap(),
        eab["hmac_key"].as_str().unwrap(),
    );
    // the manual plugin's hook fails: a challenge would not be answered
    let manual = [
        "--manual",
        "--preferred-challenges",
        "http",
        "--manual-auth-hook",
        "false",
    ];
    let mut args = manual.to_vec();
    let (k1, k2) = (format!("--eab-kid={kid}"), format!("--eab-hmac-key={key}"));
    args.extend([k1.as_str(), k2.as_str()]);
    let o = certbot_certonly(&ca, 0, "cb-pre", "pre1.acme.test", &args);
    assert!(
        o.success(),
        "certbot, pre-authorized: {}\n{}",
        o.all(),
        ca.log()
    );
    let rec = inventory_record(&ca, "pre1.acme.test");
    assert_eq!(rec["owner"], "team-lab", "{rec}");
    let audit = ca.tw("audit list --ca-dir ca --json").ok().json();
    let pre: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "acme.authz.preauthorized")
        .collect();
    assert_eq!(pre.len(), 1, "{audit}");
    assert_eq!(pre[0]["target"], "pre1.acme.test");
    let details: Value = serde_json::from_str(pre[0]["details"].as_str().unwrap()).unwrap();
    assert_eq!(details["glob"], "pre*.acme.test", "{details}");
    assert_eq!(details["eab_kid"], kid, "{details}");
    // a name outside the globs needs its challenge, which nothing answers
    let o = certbot_certonly(&ca, 0, "cb-pre", "web7.acme.test", &manual);
    assert!(!o.success(), "{}", o.all());
    assert!(inventory_records(&ca, "web7.acme.test").is_empty());
    // the directory's allow still applies to pre-authorized names
    let o = certbot_certonly(&ca, 0, "cb-pre", "pre1.other.test", &manual);
    assert!(!o.success());
    assert!(
        o.all().contains("is not allowed in ACME directory"),
        "{}",
        o.all()
    );
    let m = ca.metrics();
    assert!(m.contains("code=\"acme:rejectedIdentifier\""), "{m}");
    // still one pre-authorized authorization in the audit log
    let audit = ca.tw("audit list --ca-dir ca --json").ok().stdout;
    assert_eq!(
        audit.matches("acme.authz.preauthorized").count(),
        1,
        "{audit}"
    );
}

/// The issuer line `openssl x509 -issuer` prints for the certificate file `cert` in the lab.
fn issuer_of(ca: &OnlineCa, cert: &str) -> String {
    let o = ca.openssl(&format!("x509 -in {cert} -noout -issuer")).ok();
    o.stdout.trim().to_string()
}

#[test]
fn certbot_renews_across_an_intermediate_rotation() {
    let port = free_port();
    let mut ca = acme_ca(port, free_port());
    let name = "rot1.acme.test";
    let live = ca.p(&format!("cb-rot/live/{name}"));
    let o = certbot_certonly(&ca, port, "cb-rot", name, &[]);
    assert!(o.success(), "certbot certonly: {}\n{}", o.all(), ca.log());
    std::fs::copy(format!("{live}/cert.pem"), ca.path("old.pem")).unwrap();
    let g1_issuer = issuer_of(&ca, "old.pem");
    assert!(
        g1_issuer.ends_with("ACME Test Intermediate CA"),
        "{g1_issuer}"
    );
    check_issued(&ca, "old.pem", name);
    let old_serial = common::pki::serial_of(&ca.path("old.pem"));

    // g2 prepared and activated while the server is down; the restarted server issues
    // from g2 under the same root
    ca.stop();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    let show = ca.tw("ca show --ca-dir ca --json").ok().json();
    let state = |id: &str| {
        show["issuers"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["id"] == id))
            .map(|i| i["state"].clone())
            .unwrap_or_else(|| panic!("issuer {id} in `ca show`: {show}"))
    };
    assert_eq!(state("g1"), "retiring", "{show}");
    assert_eq!(state("g2"), "active", "{show}");
    ca.restart(Duration::ZERO);

    // certbot renews the lineage from the same config directory; its new certificate and
    // the chain it saved are g2's
    let mut c = client(&ca, "certbot", "certbot (pip install certbot)");
    c.args(["renew", "--force-renewal", "--no-random-sleep-on-renew"])
        .args(certbot_args(&ca, port))
        .args(["--config-dir", &ca.p("cb-rot")]);
    let o = run_client(c);
    assert!(o.success(), "certbot renew: {}\n{}", o.all(), ca.log());
    for (from, to) in [
        ("cert.pem", "new.pem"),
        ("chain.pem", "new-chain.pem"),
        ("fullchain.pem", "new-full.pem"),
    ] {
        std::fs::copy(format!("{live}/{from}"), ca.path(to)).unwrap();
    }
    let new_serial = common::pki::serial_of(&ca.path("new.pem"));
    assert_ne!(new_serial, old_serial, "certbot renewed");
    let g2_issuer = issuer_of(&ca, "new.pem");
    assert!(
        g2_issuer.ends_with("ACME Test Intermediate CA G2"),
        "{g2_issuer}"
    );
    // the chain is the g2 intermediate alone, the one `ca/intermediate.pem` now holds
    let fingerprint = |file: &str| {
        ca.openssl(&format!("x509 -in {file} -noout -fingerprint -sha256"))
            .ok()
            .stdout
    };
    let chain = std::fs::read_to_string(ca.path("new-chain.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 1, "{chain}");
    let subject = ca
        .openssl("x509 -in new-chain.pem -noout -subject")
        .ok()
        .stdout;
    assert!(
        subject.trim_end().ends_with("ACME Test Intermediate CA G2"),
        "{subject}"
    );
    assert_eq!(
        fingerprint("new-chain.pem"),
        fingerprint("ca/intermediate.pem")
    );
    let full = std::fs::read_to_string(ca.path("new-full.pem")).unwrap();
    assert_eq!(full.matches("BEGIN CERTIFICATE").count(), 2, "{full}");
    assert!(
        full.ends_with(&chain),
        "fullchain is the leaf, then the chain"
    );
    let v = ca
        .sh("openssl verify -CAfile ca/root.pem -untrusted new-chain.pem new.pem 2>&1")
        .all();
    assert!(v.contains("new.pem: OK"), "{v}");
    // the g1 intermediate does not make a chain for it
    let v = ca
        .sh("openssl verify -CAfile ca/root.pem -untrusted ca/issuers/g1/intermediate.pem new.pem 2>&1")
        .all();
    assert!(!v.contains("new.pem: OK"), "{v}");
    let recs = inventory_records(&ca, name);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let new = recs
        .iter()
        .find(|r| r["serial"] == new_serial.as_str())
        .unwrap_or_else(|| panic!("{new_serial} is in the inventory: {recs:?}"));
    assert_eq!(new["source"], "acme", "{new}");
    assert_eq!(new["owner"], "team-web", "{new}");
    assert_eq!(new["status"], "active", "{new}");
    assert!(ca.ocsp("new.pem").contains("new.pem: good"));

    // the g1 certificate is revoked through ACME after the rotation; g1 answers for it
    let ocsp_g1 = || {
        let url = format!("http://{}/ocsp", ca.http);
        let o = ca.openssl(&format!(
            "ocsp -timeout 5 -issuer ca/issuers/g1/intermediate.pem -cert old.pem -url {url} \
             -CAfile ca/root.pem"
        ));
        let out = format!("{}{}", o.stdout, o.stderr);
        assert!(out.contains("Response verify OK"), "openssl ocsp: {out}");
        out
    };
    let out = ocsp_g1();
    assert!(out.contains("old.pem: good"), "{out}");
    let mut c = client(&ca, "certbot", "certbot (pip install certbot)");
    c.args([
        "revoke",
        "--cert-path",
        &ca.p("old.pem"),
        "--no-delete-after-revoke",
    ])
    .args(certbot_args(&ca, 0))
    .args(["--config-dir", &ca.p("cb-rot")]);
    let o = run_client(c);
    assert!(o.success(), "certbot revoke: {}\n{}", o.all(), ca.log());
    let out = ocsp_g1();
    assert!(out.contains("old.pem: revoked"), "{out}");
    let recs = inventory_records(&ca, name);
    let status = |serial: &str| {
        recs.iter()
            .find(|r| r["serial"] == serial)
            .map(|r| r["status"].clone())
            .unwrap_or_else(|| panic!("{serial}: {recs:?}"))
    };
    assert_eq!(status(&old_serial), "revoked", "{recs:?}");
    assert_eq!(status(&new_serial), "active", "{recs:?}");
    assert!(ca.ocsp("new.pem").contains("new.pem: good"));
    // and g1's CRL, still at /crl, lists it
    let crl = ca.crl_text();
    let crl_issuer = crl
        .lines()
        .find(|l| l.contains("issuer:"))
        .unwrap_or_default();
    assert!(crl_issuer.ends_with("acme test intermediate ca"), "{crl}");
    assert!(
        crl.contains(&format!("serial number: {old_serial}")),
        "{crl}"
    );
    assert!(
        !crl.contains(&format!("serial number: {new_serial}")),
        "{crl}"
    );
}

#[test]
fn certbot_takes_the_chain_to_the_new_root_with_preferred_chain() {
    let port = free_port();
    let mut ca = acme_ca(port, free_port());
    // a root rotation, the intermediate under the new root active: the server offers the
    // chain through the cross certificate by default, the one to the new root as alternate
    ca.stop();
    ca.tw("ca rotate root --ca-dir ca").ok();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    ca.restart_with_new_root();
    let chain_of = |config: &str, name: &str, extra: &[&str]| {
        let o = certbot_certonly(&ca, port, config, name, extra);
        assert!(o.success(), "certbot certonly: {}\n{}", o.all(), ca.log());
        let live = ca.p(&format!("{config}/live/{name}"));
        let chain = std::fs::read_to_string(format!("{live}/chain.pem")).unwrap();
        std::fs::copy(
            format!("{live}/chain.pem"),
            ca.path(&format!("{config}.pem")),
        )
        .unwrap();
        chain
    };
    let default = chain_of("cb-default", "dflt.acme.test", &[]);
    assert_eq!(default.matches("BEGIN CERTIFICATE").count(), 2, "{default}");
    let preferred = chain_of(
        "cb-preferred",
        "pref.acme.test",
        &["--preferred-chain", "ACME Test Root CA G2"],
    );
    assert_eq!(
        preferred.matches("BEGIN CERTIFICATE").count(),
        1,
        "{preferred}"
    );
    // its topmost certificate (the intermediate) was issued by the new root
    let top = issuer_of(&ca, "cb-preferred.pem");
    assert!(top.ends_with("ACME Test Root CA G2"), "{top}");
    check_issued(
        &ca,
        "cb-preferred/live/pref.acme.test/cert.pem",
        "pref.acme.test",
    );
}
