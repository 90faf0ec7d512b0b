//! The offline CA's certificates judged by independent tools: every key type and profile
//! verified by `openssl verify` for the right purpose only, the CSR flow that keeps a key
//! with its owner, revocation honoured by openssl with our CRL, mutual TLS between
//! `openssl s_server`/`s_client` and between nginx (`ssl_verify_client on`) and curl, RFC
//! 5280 conformance by pkilint (through `.ci/pkilint_check.py`), the commands `quickstart`
//! prints, and `cert inspect` of files and live servers.
//!
//! Every test drives the real `twoway` binary in its own temporary directory and on its
//! own free 127.0.0.1 ports, so they run in parallel. A missing tool fails the test with
//! the package to install: nothing is skipped silently. Command lines are written as one
//! string and split on whitespace (`Lab::tw`); the few arguments that contain spaces go
//! through `Lab::tw_args`.

mod common;

use common::lab::{
    assert_prints, san_flags, str_of, Lab, EXIT_CANTCREAT, EXIT_FAILURE, EXIT_USAGE,
};
use common::pki::{crl_number, pem_decode};
use common::{
    dir_entries, free_port, read, require_tool, run, run_with_timeout, words, write, Server, TWOWAY,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The actor every command of these tests runs as (audit log).
const ACTOR: &str = "test:alice";

/// `2027-02-21T13:05:09Z` → `2027-02-21 13:05 UTC`, the way twoway prints dates.
fn human_date(rfc3339: &str) -> String {
    format!("{} {} UTC", &rfc3339[..10], &rfc3339[11..16])
}

// ---------------------------------------------------------------------------------------
// 1. Every key type, every profile: openssl accepts each chain for the right purpose only.

/// Inits a CA of `key_type`, issues server, client and peer certificates with keys of the
/// same type, and has `openssl verify -x509_strict -purpose …` judge every chain.
fn chains_verify_for_key_type(key_type: &str) {
    let lab = Lab::with_ca(ACTOR, &format!("--key-type {key_type}"));
    let (pubkey, sigalg) = match key_type {
        "p256" => ("NIST CURVE: P-256", "ecdsa-with-SHA256"),
        "p384" => ("NIST CURVE: P-384", "ecdsa-with-SHA384"),
        "ed25519" => ("ED25519 Public-Key", "ED25519"),
        "rsa2048" => ("Public-Key: (2048 bit)", "sha256WithRSAEncryption"),
        other => panic!("no expectations for {other}"),
    };
    // Both CA certificates are of the requested type; the intermediate is pathLen 0.
    for (file, ca_flag) in [
        ("ca/root.pem", "CA:TRUE"),
        ("ca/intermediate.pem", "CA:TRUE, pathlen:0"),
    ] {
        let text = lab.openssl(&format!("x509 -in {file} -noout -text")).ok();
        assert_prints(
            &text,
            &[pubkey, &format!("Signature Algorithm: {sigalg}"), ca_flag],
        );
    }
    // profile, its EKU as openssl prints it, purposes openssl must accept, and refuse.
    let cases: [(&str, &str, &[&str], &[&str]); 3] = [
        (
            "server",
            "TLS Web Server Authentication",
            &["sslserver"],
            &["sslclient"],
        ),
        (
            "client",
            "TLS Web Client Authentication",
            &["sslclient"],
            &["sslserver"],
        ),
        (
            "peer",
            "TLS Web Server Authentication, TLS Web Client Authentication",
            &["sslserver", "sslclient"],
            &[],
        ),
    ];
    for (profile, eku, accepted, refused) in cases {
        let sans = format!("DNS:{profile}.example.internal IP:127.0.0.1");
        let info = lab.issue(&format!(
            "--ca-dir ca --profile {profile} --out {profile} {} --key-type {key_type}",
            san_flags(&sans)
        ));
        assert_eq!(info["key_type"], key_type, "issued key type: {info}");
        let cert = format!("{profile}/cert.pem");
        let text = lab.openssl(&format!("x509 -in {cert} -noout -text")).ok();
        let san_text = format!("DNS:{profile}.example.internal, IP Address:127.0.0.1");
        assert_prints(&text, &[pubkey, eku, &san_text, "CA:FALSE"]);
        let verify = |purpose: &str| {
            lab.openssl(&format!(
                "verify -x509_strict -CAfile ca/root.pem -untrusted ca/intermediate.pem \
                 -purpose {purpose} {cert}"
            ))
        };
        for purpose in accepted {
            let v = verify(purpose);
            assert!(
                v.success() && v.stdout.contains(&format!("{cert}: OK")),
                "{key_type} {profile}: openssl must accept it for {purpose}:\n{v}"
            );
        }
        for purpose in refused {
            let v = verify(purpose).fails();
            assert!(
                v.all().contains("unsuitable certificate purpose"),
                "{key_type} {profile}: openssl must refuse it for {purpose} (EKU):\n{v}"
            );
        }
        // chain.pem is the leaf then the intermediate; ca.pem is the root.
        let chain = read(lab.path(&format!("{profile}/chain.pem")));
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
        assert!(chain.starts_with(&read(lab.path(&cert))));
        assert!(chain.ends_with(&read(lab.path("ca/intermediate.pem"))));
        let ca_pem = read(lab.path(&format!("{profile}/ca.pem")));
        assert_eq!(ca_pem, read(lab.path("ca/root.pem")));
    }
}

#[test]
fn p256_chains_verify_with_openssl_for_their_purpose_only() {
    chains_verify_for_key_type("p256");
}

#[test]
fn p384_chains_verify_with_openssl_for_their_purpose_only() {
    chains_verify_for_key_type("p384");
}

#[test]
fn ed25519_chains_verify_with_openssl_for_their_purpose_only() {
    chains_verify_for_key_type("ed25519");
}

#[test]
fn rsa2048_chains_verify_with_openssl_for_their_purpose_only() {
    chains_verify_for_key_type("rsa2048");
}

// ---------------------------------------------------------------------------------------
// 2. CSR flow: the key stays with its owner.

#[test]
fn csr_and_sign_keep_the_key_with_its_owner() {
    let lab = Lab::with_ca(ACTOR, "");

    // The requester makes a key and a CSR; openssl agrees the CSR is well signed.
    let request = "cert csr --san DNS:app.example.internal --san IP:10.0.0.7 \
                   --cn app.example.internal --out requester";
    let o = lab.tw(request).ok();
    assert_prints(&o, &["requester/key.pem (0600", "requester/csr.pem"]);
    assert_eq!(dir_entries(&lab.path("requester")), ["csr.pem", "key.pem"]);
    let v = lab.openssl("req -in requester/csr.pem -noout -verify");
    assert!(v.success() && v.all().contains("verify OK"), "{v}");

    // The CA signs it into another directory: certificates only, never a key.
    let o = lab
        .tw("cert sign requester/csr.pem --ca-dir ca --profile server --owner team-app --out issued")
        .ok();
    assert_prints(
        &o,
        &[
            "Issued server certificate",
            "DNS:app.example.internal, IP:10.0.0.7",
        ],
    );
    assert_eq!(
        dir_entries(&lab.path("issued")),
        ["ca.pem", "cert.pem", "chain.pem"]
    );

    // The signed certificate carries the requester's public key …
    let cert_key = lab
        .openssl("x509 -in issued/cert.pem -noout -pubkey")
        .ok()
        .stdout;
    let owner_key = lab
        .openssl("pkey -in requester/key.pem -pubout")
        .ok()
        .stdout;
    assert!(cert_key.contains("BEGIN PUBLIC KEY"), "{cert_key}");
    assert_eq!(
        cert_key, owner_key,
        "the certificate must certify the CSR's key"
    );
    let text = lab.openssl("x509 -in issued/cert.pem -noout -text").ok();
    assert_prints(
        &text,
        &[
            "DNS:app.example.internal, IP Address:10.0.0.7",
            "Subject: CN = app",
        ],
    );
    lab.openssl(
        "verify -CAfile ca/root.pem -untrusted ca/intermediate.pem -purpose sslserver \
         issued/cert.pem",
    )
    .ok();

    // … and the private key reached neither the CA directory nor the issued directory:
    // no file there holds its DER or its PEM text.
    let key_pem = read(lab.path("requester/key.pem"));
    let key_der = pem_decode(&key_pem, "PRIVATE KEY");
    let key_b64: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for dir in ["ca", "issued"] {
        for name in dir_entries(&lab.path(dir)) {
            let bytes = std::fs::read(lab.path(&format!("{dir}/{name}"))).unwrap();
            let text = String::from_utf8_lossy(&bytes).replace(['\n', '\r'], "");
            assert!(
                !bytes
                    .windows(key_der.len())
                    .any(|w| w == key_der.as_slice())
                    && !text.contains(&key_b64),
                "the requester's private key must not reach {dir}/{name}"
            );
        }
    }

    // A CSR made by openssl (another key type, SANs via -addext) signs too, to stdout.
    lab.openssl(
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout legacy.key \
         -subj /CN=legacy.example.internal -out legacy.csr -addext \
         subjectAltName=DNS:legacy.example.internal,DNS:www.legacy.example.internal,IP:10.9.8.7",
    )
    .ok();
    let o = lab
        .tw("cert sign legacy.csr --ca-dir ca --profile client --ttl 7d")
        .ok();
    assert_eq!(
        o.stdout.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "without --out, sign prints the chain (leaf, intermediate):\n{o}"
    );
    write(lab.path("legacy-chain.pem"), &o.stdout);
    let text = lab.openssl("x509 -in legacy-chain.pem -noout -text").ok();
    assert_prints(
        &text,
        &[
            "DNS:legacy.example.internal, DNS:www.legacy.example.internal, IP Address:10.9.8.7",
            "NIST CURVE: P-384",
            "TLS Web Client Authentication",
            "Subject: CN = legacy.example.internal",
        ],
    );
    let cert_key = lab
        .openssl("x509 -in legacy-chain.pem -noout -pubkey")
        .ok()
        .stdout;
    let owner_key = lab.openssl("pkey -in legacy.key -pubout").ok().stdout;
    assert_eq!(cert_key, owner_key);
    lab.openssl(
        "verify -CAfile ca/root.pem -untrusted ca/intermediate.pem -purpose sslclient \
         legacy-chain.pem",
    )
    .ok();

    // Both are in the audit log as signed from a CSR.
    let audit = lab.tw("audit list --ca-dir ca --json").ok().json();
    let signs = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "cert.sign");
    assert_eq!(signs.count(), 2, "{audit:#}");
}

// ---------------------------------------------------------------------------------------
// 3. Revocation: openssl honours our CRL.

#[test]
fn revoked_certificate_is_rejected_by_openssl_with_our_crl() {
    let lab = Lab::with_ca(ACTOR, "");
    let gone = lab.issue("--ca-dir ca --profile server --out gone --san DNS:gone.example.internal");
    lab.issue("--ca-dir ca --profile server --out kept --san DNS:kept.example.internal");
    let serial = str_of(&gone, "serial");
    let upper = serial.to_uppercase();

    let o = lab
        .tw(&format!(
            "cert revoke {serial} --ca-dir ca --reason key-compromise"
        ))
        .ok();
    assert_prints(
        &o,
        &[&format!("Revoked serial {serial}"), "reason key-compromise"],
    );
    // Revoking twice is refused (exit 73) and changes nothing.
    let again = format!("cert revoke {serial} --ca-dir ca");
    lab.refused("ca", &again, EXIT_CANTCREAT, &["already revoked"], None);

    let o = lab.tw("crl --ca-dir ca --out crl.pem").ok();
    assert!(o.stderr.contains("Wrote CRL number 1 to crl.pem"), "{o}");
    assert!(read(lab.path("crl.pem")).starts_with("-----BEGIN X509 CRL-----"));

    let verify = |cert: &str, crl: &str| {
        lab.openssl(&format!(
            "verify -crl_check -CRLfile {crl} -CAfile ca/root.pem -untrusted ca/intermediate.pem \
             {cert}"
        ))
    };
    let v = verify("gone/cert.pem", "crl.pem").fails();
    assert!(v.all().contains("certificate revoked"), "{v}");
    verify("kept/cert.pem", "crl.pem").ok();

    // The CRL is signed by the intermediate and says what, why and which number.
    let v = lab.openssl("crl -in crl.pem -CAfile ca/intermediate.pem -noout");
    assert!(v.success() && v.all().contains("verify OK"), "{v}");
    let text = lab.openssl("crl -in crl.pem -noout -text").ok();
    assert_eq!(crl_number(&text.stdout), "1", "{text}");
    assert_prints(
        &text,
        &[
            &format!("Serial Number: {upper}"),
            "X509v3 CRL Reason Code",
            "Key Compromise",
            "Issuer: O = Test CA, CN = Test CA Intermediate CA",
            "Next Update:",
        ],
    );

    // --out *.der writes DER, with the next CRL number.
    let o = lab.tw("crl --ca-dir ca --out crl.der").ok();
    assert!(o.stderr.contains("Wrote CRL number 2 to crl.der"), "{o}");
    let der = std::fs::read(lab.path("crl.der")).unwrap();
    assert_eq!(der[0], 0x30, "DER starts with a SEQUENCE");
    assert!(!der.starts_with(b"-----"), "crl.der must be DER, not PEM");
    let text = lab.openssl("crl -inform DER -in crl.der -noout -text").ok();
    assert_eq!(crl_number(&text.stdout), "2", "{text}");
    assert_prints(
        &text,
        &[&format!("Serial Number: {upper}"), "Key Compromise"],
    );
    lab.openssl("crl -inform DER -in crl.der -out crl2.pem")
        .ok();
    let v = verify("gone/cert.pem", "crl2.pem").fails();
    assert!(v.all().contains("certificate revoked"), "{v}");

    // Without --out the PEM goes to stdout.
    let o = lab.tw("crl --ca-dir ca").ok();
    assert!(o.stdout.starts_with("-----BEGIN X509 CRL-----"), "{o}");
}

// ---------------------------------------------------------------------------------------
// 4. Mutual TLS with real peers.

/// A CA with a server certificate for localhost/127.0.0.1 and a client certificate.
fn mtls_lab() -> Lab {
    let lab = Lab::with_ca(ACTOR, "");
    lab.issue(
        "--ca-dir ca --profile server --san DNS:localhost --san IP:127.0.0.1 --out server \
         --cn localhost",
    );
    lab.issue(
        "--ca-dir ca --profile client --san URI:spiffe://example.org/ns/test/sa/client \
         --out client --cn spiffe://example.org/ns/test/sa/client",
    );
    lab
}

/// `openssl s_server -www ARGS` in the lab on a free port, listening.
fn s_server(lab: &Lab, args: &str) -> (Server, u16) {
    let openssl = require_tool("openssl", "openssl");
    let port = free_port();
    let line = format!("s_server -accept 127.0.0.1:{port} -www {args}");
    let mut cmd = Command::new(openssl);
    cmd.current_dir(lab.dir.path()).args(words(&line));
    let mut server = Server::spawn("openssl s_server", &mut cmd, &lab.path("s_server.log"));
    server.wait_for_port(port);
    (server, port)
}

#[test]
fn mtls_with_openssl_s_server_and_s_client() {
    let lab = mtls_lab();
    let (server, port) = s_server(
        &lab,
        "-cert server/cert.pem -cert_chain ca/intermediate.pem -key server/key.pem \
         -CAfile ca/root.pem -Verify 1 -verify_return_error",
    );

    let s_client = |client_cert: &str| {
        let line = format!(
            "s_client -connect 127.0.0.1:{port} -servername localhost -verify_hostname localhost \
             -CAfile ca/root.pem -verify_return_error -ign_eof {client_cert}"
        );
        run_with_timeout(
            Command::new("openssl")
                .current_dir(lab.dir.path())
                .args(words(&line)),
            Some(b"GET / HTTP/1.0\r\n\r\n"),
            Duration::from_secs(20),
        )
    };

    // With the client certificate: the server verified it and answers.
    let o = s_client("-cert client/cert.pem -cert_chain ca/intermediate.pem -key client/key.pem");
    assert!(
        o.stdout.contains("Verify return code: 0 (ok)"),
        "the client must trust the server's chain:\n{o}"
    );
    assert!(
        o.stdout.contains("HTTP/1.0 200 ok"),
        "with a client certificate the server must answer:\n{o}\n--- server ---\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("depth=0 CN = spiffe://example.org/ns/test/sa/client"),
        "the server verified the client:\n{log}"
    );

    // Without: the server refuses the handshake.
    let o = s_client("");
    assert!(
        !o.stdout.contains("HTTP/1.0 200 ok"),
        "without a client certificate the server must not answer:\n{o}"
    );
    assert!(
        o.all().contains("alert certificate required"),
        "refused with an alert:\n{o}"
    );
    let log = server.log();
    assert!(log.contains("peer did not return a certificate"), "{log}");
}

/// nginx on a free port, terminating mTLS with the lab's server certificate and verifying
/// clients against the root; `extra` adds directives to the server block (e.g. `ssl_crl`).
fn nginx_mtls(lab: &Lab, name: &str, extra: &str) -> (Server, u16) {
    let nginx = require_tool("/usr/sbin/nginx", "nginx");
    require_tool("curl", "curl");
    let port = free_port();
    let prefix = lab.p(name);
    std::fs::create_dir_all(lab.path(&format!("{name}/logs"))).unwrap();
    let conf = format!(
        r#"
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {server}/chain.pem;
        ssl_certificate_key {server}/key.pem;
        ssl_verify_client on;
        ssl_client_certificate {root};
        ssl_verify_depth 2;
        {extra}
        location / {{
            return 200 "ok $ssl_client_verify $ssl_client_s_dn_legacy\n";
        }}
    }}
}}
"#,
        server = lab.p("server"),
        root = lab.p("ca/root.pem"),
    );
    write(lab.path(&format!("{name}/nginx.conf")), conf);
    // master_process off: one process, so killing it on drop leaves no worker behind.
    let mut server = Server::spawn(
        "nginx",
        Command::new(&nginx)
            .args(["-p", &prefix, "-e", &format!("{prefix}/logs/error.log")])
            .args(["-c", &format!("{prefix}/nginx.conf"), "-g", "daemon off;"]),
        &lab.path(&format!("{name}.out")),
    );
    server.wait_for_port(port);
    (server, port)
}

/// curl to nginx on `port` with `client_cert` flags; what it printed, ending in the status.
fn curl_nginx(lab: &Lab, port: u16, client_cert: &str) -> common::Output {
    let mut args = words(&format!(
        "-sS --max-time 10 --resolve localhost:{port}:127.0.0.1 --cacert client/ca.pem \
         {client_cert} https://localhost:{port}/"
    ));
    args.extend(["-w".to_string(), "\n%{http_code}".to_string()]);
    lab.tool_args("curl", &args).ok()
}

#[test]
fn mtls_with_nginx_and_curl() {
    let lab = mtls_lab();
    let (_server, port) = nginx_mtls(&lab, "nginx", "");
    let curl = |client_cert: &str| curl_nginx(&lab, port, client_cert);
    let error_log = || read(lab.path("nginx/logs/error.log"));

    // With the client certificate and its chain: 200, verified, and nginx saw who it was.
    let o = curl("--cert client/chain.pem --key client/key.pem");
    assert!(
        o.stdout.ends_with("\n200"),
        "nginx must accept the client:\n{o}\n{}",
        error_log()
    );
    assert_prints(
        &o,
        // nginx's legacy form escapes the slashes
        &[r"ok SUCCESS /CN=spiffe:\/\/example.org\/ns\/test\/sa\/client"],
    );

    // Without a client certificate: nginx's 400 "No required SSL certificate was sent".
    let o = curl("");
    assert!(o.stdout.ends_with("\n400"), "{o}");
    assert_prints(&o, &["No required SSL certificate was sent"]);

    // The leaf alone (without the intermediate of chain.pem) cannot be verified against
    // the root: users must present chain.pem, as `cert issue` says.
    let o = curl("--cert client/cert.pem --key client/key.pem");
    assert!(o.stdout.ends_with("\n400"), "{o}");
    assert_prints(&o, &["The SSL certificate error"]);
    let log = error_log();
    assert!(
        log.contains("client sent no required SSL certificate"),
        "{log}"
    );
    assert!(
        log.contains("unable to verify the first certificate"),
        "{log}"
    );
}

/// nginx's `ssl_crl` checks a CRL for every CA of the chain (OpenSSL's full-chain check):
/// given only the intermediate's CRL it refuses every client, since the root has none.
/// `twoway crl --all` writes the root's CRL too (signed at init, or afresh when the root
/// key is here): nginx then accepts a valid client and refuses a revoked one, and
/// `openssl verify -crl_check_all` agrees.
#[test]
fn nginx_ssl_crl_takes_every_crl_of_the_chain() {
    let lab = mtls_lab();
    let revoked = lab.issue(
        "--ca-dir ca --profile client --san URI:spiffe://example.org/ns/test/sa/gone \
         --out gone --cn spiffe://example.org/ns/test/sa/gone",
    );
    lab.tw(&format!(
        "cert revoke {} --ca-dir ca --reason key-compromise",
        str_of(&revoked, "serial")
    ))
    .ok();
    // the root's CRL was signed at init, and is served with the intermediate's
    let root_crl = read(lab.path("ca/root.crl"));
    // valid for a year: `cert check` says so once its nextUpdate is within the window
    lab.tw("cert check --ca-dir ca --within 14d").ok();
    let o = lab.tw("cert check --ca-dir ca --within 400d").code(1);
    assert!(o.stdout.contains("twoway crl --root"), "{o}");
    let v = lab
        .tw("cert check --ca-dir ca --within 400d --json")
        .code(1)
        .json();
    assert_eq!(v["root_crl"]["due"], true, "{v}");
    assert!(
        root_crl.starts_with("-----BEGIN X509 CRL-----"),
        "{root_crl}"
    );

    lab.tw("crl --ca-dir ca --out int.pem").ok();
    lab.tw("crl --ca-dir ca --all --out bundle.pem").ok();
    assert_eq!(
        read(lab.path("bundle.pem"))
            .matches("BEGIN X509 CRL")
            .count(),
        2
    );
    let verify = |crls: &str, cert: &str| {
        lab.openssl(&format!(
            "verify -crl_check_all -CRLfile {crls} -CAfile ca/root.pem \
             -untrusted ca/intermediate.pem {cert}"
        ))
        .all()
    };
    assert!(verify("bundle.pem", "client/cert.pem").contains("client/cert.pem: OK"));
    assert!(verify("bundle.pem", "gone/cert.pem").contains("certificate revoked"));
    assert!(verify("int.pem", "client/cert.pem").contains("unable to get certificate CRL"));

    // the intermediate's CRL alone: nginx refuses even the valid client
    let (_only, port) = nginx_mtls(&lab, "nginx-int", &format!("ssl_crl {};", lab.p("int.pem")));
    let o = curl_nginx(&lab, port, "--cert client/chain.pem --key client/key.pem");
    assert!(o.stdout.ends_with("\n400"), "{o}");
    let log = read(lab.path("nginx-int/logs/error.log"));
    assert!(log.contains("unable to get certificate CRL"), "{log}");

    // every CRL of the chain: the valid client is served, the revoked one refused
    let (_all, port) = nginx_mtls(
        &lab,
        "nginx-all",
        &format!("ssl_crl {};", lab.p("bundle.pem")),
    );
    let o = curl_nginx(&lab, port, "--cert client/chain.pem --key client/key.pem");
    assert!(
        o.stdout.ends_with("\n200"),
        "{o}\n{}",
        read(lab.path("nginx-all/logs/error.log"))
    );
    let o = curl_nginx(&lab, port, "--cert gone/chain.pem --key gone/key.pem");
    assert!(o.stdout.ends_with("\n400"), "{o}");
    let log = read(lab.path("nginx-all/logs/error.log"));
    assert!(log.contains("certificate revoked"), "{log}");

    // the root key kept offline: --root says where to sign, --all uses root.crl as signed
    std::fs::rename(lab.path("ca/root.key"), lab.path("root.key.offline")).unwrap();
    let o = lab.tw("crl --ca-dir ca --root --out root.pem").fails();
    assert!(o.stderr.contains("root key"), "{o}");
    assert!(o.stderr.contains("twoway crl --root"), "{o}");
    assert!(!lab.path("root.pem").exists());
    let kept = read(lab.path("ca/root.crl"));
    assert_ne!(
        kept, root_crl,
        "--all re-signed the root's CRL while its key was here"
    );
    lab.tw("crl --ca-dir ca --all --out bundle2.pem").ok();
    assert!(read(lab.path("bundle2.pem")).ends_with(&kept));
    // several CRLs cannot go into one DER file
    let o = lab.tw("crl --ca-dir ca --all --out bundle.der").code(64);
    assert!(o.stderr.contains("PEM"), "{o}");
    // each CRL is numbered and audited; the root's names its issuer; the chain holds
    let audit = lab
        .tw("audit list --ca-dir ca --json --limit 100")
        .ok()
        .stdout;
    assert!(
        audit.contains(r#"\"issuer\":\"O=Test CA, CN=Test CA Root CA\""#),
        "{audit}"
    );
    lab.tw("audit verify --ca-dir ca").ok();
}

// ---------------------------------------------------------------------------------------
// 5. pkilint: RFC 5280 conformance of every profile and of the CRL.

/// A pkilint finding the tests accept, with the reason.
///
/// pkilint (0.13) checks dNSName and URI syntax with the `validators` package, which
/// rejects names that RFC 5280 allows:
/// - `validators.domain` wants at least two labels, so the single-label name `localhost`
///   (valid preferred name syntax, RFC 1034 §3.5 and RFC 5280 §4.2.1.6) is reported as
///   `pkix.invalid_domain_name_syntax` by `GeneralNameDnsNameSyntaxValidator`;
/// - `validators.url` only knows web schemes, so every `spiffe://` URI (a valid RFC 3986
///   URI: the SPIFFE ID format) is reported as `pkix.invalid_uri_syntax` by
///   `GeneralNameUriSyntaxValidator`.
///
/// Exactly these two findings are ignored, and only for a name this test itself put in
/// the certificate: validator, code, severity, node (a dNSName / URI general name) and the
/// quoted value must all match. Anything else fails the test
/// (`pkilint_false_positive_filter_is_narrow` pins this down).
fn known_pkilint_false_positive(
    validator: &str,
    node_path: &str,
    code: &str,
    severity: &str,
    message: &str,
    requested_sans: &[&str],
) -> bool {
    let quoted = |prefix: &str| -> Option<String> {
        let rest = message.strip_prefix(prefix)?.strip_prefix('"')?;
        rest.strip_suffix('"').map(str::to_string)
    };
    let in_san = |kind: &str| node_path.contains(".subjectAltName.") && node_path.ends_with(kind);
    if severity != "ERROR" {
        return false;
    }
    match (validator, code) {
        ("GeneralNameDnsNameSyntaxValidator", "pkix.invalid_domain_name_syntax") => {
            in_san(".dNSName")
                && quoted("Invalid domain name syntax: ").is_some_and(|v| {
                    !v.is_empty()
                        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && requested_sans.contains(&format!("DNS:{v}").as_str())
                })
        }
        ("GeneralNameUriSyntaxValidator", "pkix.invalid_uri_syntax") => {
            in_san(".uniformResourceIdentifier")
                && quoted("Invalid URI syntax: ").is_some_and(|v| {
                    v.starts_with("spiffe://")
                        && requested_sans.contains(&format!("URI:{v}").as_str())
                })
        }
        _ => false,
    }
}

#[test]
fn pkilint_false_positive_filter_is_narrow() {
    let req = [
        "DNS:localhost",
        "URI:spiffe://example.org/x",
        "DNS:a.b",
        "URI:http:/x",
    ];
    let san = "certificate.tbsCertificate.extensions.1.extnValue.subjectAltName";
    let (dns_node, uri_node) = (
        format!("{san}.0.dNSName"),
        format!("{san}.1.uniformResourceIdentifier"),
    );
    let nc_node = "certificate.tbsCertificate.extensions.2.extnValue.nameConstraints.\
                   permittedSubtrees.0.base.dNSName";
    let dns = (
        "GeneralNameDnsNameSyntaxValidator",
        "pkix.invalid_domain_name_syntax",
    );
    let uri = ("GeneralNameUriSyntaxValidator", "pkix.invalid_uri_syntax");
    let localhost = r#"Invalid domain name syntax: "localhost""#;
    let spiffe = r#"Invalid URI syntax: "spiffe://example.org/x""#;
    let f = |(v, c): (&str, &str), node: &str, sev: &str, msg: &str| {
        known_pkilint_false_positive(v, node, c, sev, msg, &req)
    };
    assert!(f(dns, &dns_node, "ERROR", localhost));
    assert!(f(uri, &uri_node, "ERROR", spiffe));
    // A name the test did not ask for, a multi-label name, another scheme, another
    // severity, code or validator, another node: all still fail the test.
    assert!(!f(
        dns,
        &dns_node,
        "ERROR",
        r#"Invalid domain name syntax: "intranet""#
    ));
    assert!(!f(
        dns,
        &dns_node,
        "ERROR",
        r#"Invalid domain name syntax: "a.b""#
    ));
    assert!(!f(
        uri,
        &uri_node,
        "ERROR",
        r#"Invalid URI syntax: "http:/x""#
    ));
    assert!(!f(
        uri,
        &uri_node,
        "ERROR",
        r#"Invalid URI syntax: "spiffe://other.org/x""#
    ));
    assert!(!f(dns, &dns_node, "FATAL", localhost));
    assert!(!f((dns.0, "pkix.other"), &dns_node, "ERROR", localhost));
    assert!(!f((uri.0, dns.1), &dns_node, "ERROR", localhost));
    assert!(!f(dns, &uri_node, "ERROR", localhost));
    assert!(!f(dns, nc_node, "ERROR", localhost));
}

#[test]
fn pkilint_finds_no_error_in_any_profile_or_crl() {
    require_tool("python3", "python3");
    let lab = Lab::new(ACTOR);
    // (document for the wrapper, SANs this test requested in it)
    let mut docs: Vec<(String, Vec<&str>)> = Vec::new();
    let server_sans = "DNS:localhost DNS:svc.example.internal IP:127.0.0.1 IP:::1";
    let client_sans = "URI:spiffe://example.org/ns/prod/sa/api";
    let peer_sans = "DNS:peer.example.internal URI:spiffe://example.org/ns/prod/sa/peer";
    for kt in ["p256", "p384", "ed25519", "rsa2048"] {
        // A CA with a URL, so leaves carry the CRL distribution point and OCSP AIA.
        lab.init_ca(
            kt,
            &format!("--key-type {kt} --url https://ca.example.internal:9000"),
        );
        let key = format!("--key-type {kt}");
        let (server, client, peer) = (
            format!("{kt}-server"),
            format!("{kt}-client"),
            format!("{kt}-peer"),
        );
        let issue = |profile: &str, sans: &str, out: &str, extra: &str| {
            let sans = san_flags(sans);
            lab.issue(&format!(
                "--ca-dir {kt} --profile {profile} {sans} --out {out} {key} {extra}"
            ))
        };
        issue("server", server_sans, &server, "--cn svc.example.internal");
        let c = issue("client", client_sans, &client, "");
        let p = issue("peer", peer_sans, &peer, "");
        // Revoked entries with and without a reason code, so the CRL has both forms.
        let c_serial = str_of(&c, "serial");
        let p_serial = str_of(&p, "serial");
        lab.tw(&format!(
            "cert revoke {c_serial} --ca-dir {kt} --reason key-compromise"
        ))
        .ok();
        lab.tw(&format!("cert revoke {p_serial} --ca-dir {kt}"))
            .ok();
        let crl = lab.p(&format!("{kt}-crl.pem"));
        lab.tw(&format!("crl --ca-dir {kt} --out {crl}")).ok();
        let root = lab.p(&format!("{kt}/root.pem"));
        let inter = lab.p(&format!("{kt}/intermediate.pem"));
        docs.push((format!("cert:{root}"), vec![]));
        docs.push((format!("cert:{inter}"), vec![]));
        docs.push((format!("pair:{root}:{inter}"), vec![]));
        for (dir, sans) in [
            (&server, server_sans),
            (&client, client_sans),
            (&peer, peer_sans),
        ] {
            let cert = lab.p(&format!("{dir}/cert.pem"));
            let sans: Vec<&str> = sans.split_whitespace().collect();
            docs.push((format!("cert:{cert}"), sans.clone()));
            docs.push((format!("pair:{inter}:{cert}"), sans));
        }
        docs.push((format!("crl:{crl}"), vec![]));
    }
    // The device profile (a subject serialNumber from the CSR, serverAuth beside
    // clientAuth for a host name) and the user profile (e-mail SAN, emailProtection).
    lab.openssl(
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key \
         -subj /serialNumber=SN-0042 -addext subjectAltName=DNS:router7.example.internal \
         -out device.csr",
    )
    .ok();
    lab.tw("cert sign device.csr --ca-dir p256 --profile device --out p256-device")
        .ok();
    lab.issue("--ca-dir p256 --profile user --san EMAIL:alice@example.org --out p256-user");
    let subject = lab
        .openssl("x509 -in p256-device/cert.pem -noout -subject -ext extendedKeyUsage")
        .ok();
    assert_prints(
        &subject,
        &[
            "serialNumber = SN-0042",
            "TLS Web Client Authentication, TLS Web Server Authentication",
        ],
    );
    let user = lab
        .openssl("x509 -in p256-user/cert.pem -noout -ext extendedKeyUsage")
        .ok();
    assert_prints(&user, &["TLS Web Client Authentication, E-mail Protection"]);
    let inter = lab.p("p256/intermediate.pem");
    for (dir, sans) in [
        ("p256-device", vec!["DNS:router7.example.internal"]),
        ("p256-user", vec!["EMAIL:alice@example.org"]),
    ] {
        let cert = lab.p(&format!("{dir}/cert.pem"));
        docs.push((format!("cert:{cert}"), sans.clone()));
        docs.push((format!("pair:{inter}:{cert}"), sans));
    }
    // A name-constrained intermediate (permitted DNS and IP subtrees) and a leaf under it.
    lab.init_ca(
        "constrained",
        "--permit-dns example.internal --permit-ip 10.0.0.0/8 --trust-domain example.org",
    );
    let sans = "DNS:api.example.internal IP:10.1.2.3 URI:spiffe://example.org/ns/prod/sa/api";
    lab.issue(&format!(
        "--ca-dir constrained --profile peer {} --out constrained-peer",
        san_flags(sans)
    ));
    let sans: Vec<&str> = sans.split_whitespace().collect();
    let inter = lab.p("constrained/intermediate.pem");
    let leaf = lab.p("constrained-peer/cert.pem");
    docs.push((format!("cert:{inter}"), vec![]));
    docs.push((format!("cert:{leaf}"), sans.clone()));
    docs.push((format!("pair:{inter}:{leaf}"), sans));

    // One Python process lints everything with pkilint's own CLI entry points.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/pkilint_check.py");
    let o = run(Command::new("python3")
        .arg(&script)
        .arg("WARNING")
        .args(docs.iter().map(|(d, _)| d)));
    assert!(
        o.code != Some(3),
        "pkilint is not installed: `pip install pkilint` (lint_pkix_cert, lint_crl):\n{o}"
    );
    let o = o.ok();
    let reports: Vec<Value> = serde_json::from_str(&o.stdout).expect("the wrapper prints JSON");
    assert_eq!(reports.len(), docs.len(), "one report per document:\n{o}");

    let mut errors = Vec::new();
    for (report, (doc, requested)) in reports.iter().zip(&docs) {
        assert_eq!(report["doc"].as_str(), Some(doc.as_str()));
        for result in report["results"].as_array().expect("results") {
            let validator = str_of(result, "validator");
            let node = str_of(result, "node_path");
            for f in result["finding_descriptions"].as_array().expect("findings") {
                let (severity, code) = (str_of(f, "severity"), str_of(f, "code"));
                let message = f["message"].as_str().unwrap_or_default();
                let line = format!("{doc}: {severity} {code} ({validator} @ {node}): {message}");
                if known_pkilint_false_positive(validator, node, code, severity, message, requested)
                {
                    eprintln!("pkilint known false positive (ignored): {line}");
                } else if severity == "ERROR" || severity == "FATAL" {
                    errors.push(line);
                } else {
                    eprintln!("pkilint (not failing): {line}");
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "pkilint found {} error(s):\n{}",
        errors.len(),
        errors.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 6. quickstart: the commands it prints work.

#[test]
fn quickstart_printed_commands_work() {
    require_tool("openssl", "openssl");
    require_tool("curl", "curl");
    let lab = Lab::new(ACTOR);
    let demo = lab.p("demo");
    let out = lab.tw(&format!("quickstart {demo}")).ok();
    for d in ["ca", "server", "client"] {
        assert!(lab.path(&format!("demo/{d}")).is_dir(), "{out}");
    }
    let printed = |pred: &dyn Fn(&str) -> bool, what: &str| -> String {
        let mut lines = out.stdout.lines().map(str::trim);
        let line = lines.find(|l| pred(l));
        line.unwrap_or_else(|| panic!("quickstart should print {what}:\n{out}"))
            .to_string()
    };
    let s_server = printed(
        &|l| l.starts_with("openssl s_server "),
        "an s_server command",
    );
    let s_client = printed(
        &|l| l.starts_with("openssl s_client "),
        "an s_client command",
    );
    let curl_cert = printed(
        &|l| l.starts_with("curl ") && l.contains(" --cert "),
        "a curl command with a client certificate",
    );
    let curl_bare = printed(
        &|l| l.starts_with("curl ") && !l.contains(" --cert "),
        "a curl command without one",
    );
    let list = printed(
        &|l| l.starts_with("The inventory: "),
        "the inventory command",
    );

    // Run them as printed, on a free port instead of 8443.
    let port = free_port();
    let on_port = |cmd: &str| -> Vec<String> {
        assert!(cmd.contains(":8443"), "{cmd}");
        words(&cmd.replace(":8443", &format!(":{port}")))
    };
    let argv = on_port(&s_server);
    let mut server = Server::spawn(
        "openssl s_server (quickstart)",
        Command::new(&argv[0]).args(&argv[1..]),
        &lab.path("s_server.log"),
    );
    server.wait_for_port(port);

    // curl resolves localhost to 127.0.0.1 only, and reports the status code.
    let resolve = format!("localhost:{port}:127.0.0.1");
    let curl = |cmd: &str| {
        let argv = on_port(cmd);
        let extra = [
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_code}",
        ];
        run(Command::new(&argv[0]).args(&argv[1..]).args(extra))
    };
    let o = curl(&curl_cert).ok();
    assert!(
        o.stdout.ends_with("\n200"),
        "the printed curl command with the client certificate must get a 200:\n{o}\n\
         --- server ---\n{}",
        server.log()
    );
    let o = curl(&curl_bare).fails();
    assert!(
        !o.stdout.ends_with("\n200"),
        "without a client certificate: refused:\n{o}"
    );
    assert!(o.stderr.contains("alert"), "{o}");

    let argv = on_port(&s_client);
    let o = run_with_timeout(
        Command::new(&argv[0]).args(&argv[1..]).arg("-ign_eof"),
        Some(b"GET / HTTP/1.0\r\n\r\n"),
        Duration::from_secs(20),
    );
    assert_prints(&o, &["Verify return code: 0 (ok)", "HTTP/1.0 200 ok"]);

    // The server presents exactly its leaf and the intermediate, each once.
    let o = lab
        .tw(&format!(
            "cert inspect --remote 127.0.0.1:{port} --server-name localhost --ca {demo}/ca/root.pem"
        ))
        .ok();
    assert_prints(&o, &[": 2 certificate(s)", "trusted: yes"]);
    drop(server);

    // As printed: `twoway` is not on PATH here, so the command names the binary itself.
    let argv = words(list.trim_start_matches("The inventory: "));
    assert_eq!(
        std::fs::canonicalize(&argv[0]).ok(),
        std::fs::canonicalize(TWOWAY).ok(),
        "{list}"
    );
    assert!(
        out.stdout.contains("cargo install --path crates/twoway"),
        "{out}"
    );
    let o = run(Command::new(&argv[0])
        .current_dir(lab.path(""))
        .env_remove("TWOWAY_CA_DIR")
        .args(&argv[1..]))
    .ok();
    assert_prints(
        &o,
        &[
            "DNS:localhost",
            "URI:spiffe://quickstart.twoway/client",
            "quickstart",
        ],
    );

    // A second quickstart in the same place is refused and changes nothing.
    let root = read(lab.path("demo/ca/root.pem"));
    let o = lab.tw(&format!("quickstart {demo}")).code(EXIT_USAGE);
    assert!(o.stderr.contains("already holds a quickstart"), "{o}");
    assert_eq!(read(lab.path("demo/ca/root.pem")), root);
}

// ---------------------------------------------------------------------------------------
// 7. cert inspect: files and live servers.

#[test]
fn inspect_shows_files_and_remote_chains() {
    require_tool("openssl", "openssl");
    let lab = Lab::with_ca(ACTOR, "");
    let info = lab.issue(
        "--ca-dir ca --profile server --san DNS:localhost --san DNS:inspect.example.internal \
         --san IP:127.0.0.1 --out srv --cn inspect.example.internal --ttl 20d",
    );
    let serial = str_of(&info, "serial");
    let not_after = human_date(str_of(&info, "not_after"));

    let o = lab.tw("cert inspect srv/cert.pem").ok();
    assert_prints(
        &o,
        &[
            "srv/cert.pem: 1 certificate(s)",
            "[0] leaf",
            "subject      CN=inspect.example.internal",
            "issuer       O=Test CA, CN=Test CA Intermediate CA",
            "names        DNS:localhost, DNS:inspect.example.internal, IP:127.0.0.1",
            "usage        server (serverAuth)",
            "key          p256",
            &format!("to {not_after}"),
            &format!("serial       {serial}"),
        ],
    );
    assert!(
        o.stdout.contains("expires      in 19d 23h") || o.stdout.contains("expires      in 20d"),
        "{o}"
    );
    let o = lab.tw("cert inspect srv/chain.pem").ok();
    assert_prints(
        &o,
        &[
            "2 certificate(s)",
            "[1] intermediate",
            "subject      O=Test CA, CN=Test CA Intermediate CA",
            "usage        CA",
        ],
    );
    let parsed = lab.tw("cert inspect srv/chain.pem --json").ok().json();
    assert_eq!(parsed["chain"][0]["serial"], info["serial"]);
    assert_eq!(parsed["chain"][0]["not_after"], info["not_after"]);
    assert_eq!(parsed["chain"][1]["is_ca"], true);

    // A live server presenting the leaf and the intermediate.
    let (_server, port) = s_server(
        &lab,
        "-cert srv/cert.pem -cert_chain ca/intermediate.pem -key srv/key.pem",
    );
    let inspect = |ca: &str, name: &str| {
        lab.tw(&format!(
            "cert inspect --remote 127.0.0.1:{port} --ca {ca} --server-name {name}"
        ))
    };
    let o = inspect("ca/root.pem", "localhost").ok();
    assert_prints(
        &o,
        &[
            &format!("127.0.0.1:{port}: 2 certificate(s)"),
            "negotiated TLSv1_3",
            "[0] leaf",
            "subject      CN=inspect.example.internal",
            "[1] intermediate",
            "subject      O=Test CA, CN=Test CA Intermediate CA",
            "trusted: yes",
        ],
    );
    // The verdict is real: another CA's root, or a name the certificate does not carry,
    // gives "trusted: NO" and exit 1.
    lab.init_ca("other", "");
    let o = inspect("other/root.pem", "localhost").code(EXIT_FAILURE);
    assert_prints(&o, &["trusted: NO"]);
    let o = inspect("ca/root.pem", "elsewhere.example.internal").code(EXIT_FAILURE);
    assert_prints(&o, &["trusted: NO"]);
}
