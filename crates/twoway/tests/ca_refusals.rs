//! Refusals: bad input to the offline CA is refused with a message that names the problem
//! and the fix, the right exit code, nothing recorded in the inventory or the audit log,
//! and no partial file; and the CA never signs a name outside its own intermediate's name
//! constraints, whatever ca.toml says (a policy wider than the constraints is refused when
//! the configuration is read; every issuing path refuses a name, or a DNS-like common name,
//! outside them; whatever is issued, `openssl verify` accepts).
//!
//! The real `twoway` binary in a temporary directory per test; openssl and curl as
//! independent peers; only 127.0.0.1.

mod common;

use common::lab::{
    assert_prints, Lab, EXIT_CANTCREAT, EXIT_DATAERR, EXIT_IOERR, EXIT_NOINPUT, EXIT_NOPERM,
    EXIT_USAGE,
};
use common::pki::{crl_number, openssl_csr, pem_decode, pem_encode};
use common::{dir_entries, free_port, read, strings, words, write, Output, Server};
use serde_json::Value;
use std::path::Path;

/// The actor every command of these tests runs as (audit log).
const ACTOR: &str = "test:alice";

// ---------------------------------------------------------------------------------------
// 1. Bad input: refused with a message that names the problem and the fix, the right exit
//    code, nothing recorded, no partial file.

#[test]
fn bad_input_malformed_csr_is_refused() {
    let lab = Lab::with_ca(ACTOR, "");
    write(lab.path("garbage.csr"), "this is not a CSR\n");
    lab.refused(
        "ca",
        "cert sign garbage.csr --ca-dir ca --profile server --out out",
        EXIT_DATAERR,
        &[
            "refusing to sign garbage.csr",
            "no CERTIFICATE REQUEST found in the PEM input",
            "-----BEGIN CERTIFICATE REQUEST-----",
        ],
        Some("out"),
    );
    // A PEM block whose content is not a CSR (a truncated DER SEQUENCE).
    let truncated = pem_encode("CERTIFICATE REQUEST", &[0x30, 0x82, 0x01, 0x00, 0x30, 0x03]);
    write(lab.path("truncated.csr"), truncated);
    lab.refused(
        "ca",
        "cert sign truncated.csr --ca-dir ca --profile server --out out",
        EXIT_DATAERR,
        &[
            "refusing to sign truncated.csr",
            "the CSR is malformed",
            "Create one with `twoway cert csr` or `openssl req -new`",
        ],
        Some("out"),
    );
    // DER garbage straight from a file (no PEM) is malformed too.
    write(lab.path("der.csr"), [0x30, 0x05, 0x02, 0x01]);
    lab.refused(
        "ca",
        "cert sign der.csr --ca-dir ca --profile client",
        EXIT_DATAERR,
        &["the CSR is malformed"],
        None,
    );
}

#[test]
fn bad_input_tampered_csr_is_refused() {
    let lab = Lab::with_ca(ACTOR, "");
    lab.tw("cert csr --san DNS:honest.example.internal --out req")
        .ok();
    let mut der = pem_decode(&read(lab.path("req/csr.pem")), "CERTIFICATE REQUEST");
    let at = der
        .windows(6)
        .position(|w| w == b"honest")
        .expect("the SAN is in the signed part of the CSR");
    der[at] = b'd'; // DNS:donest.example.internal: the signature no longer matches
    write(
        lab.path("tampered.csr"),
        pem_encode("CERTIFICATE REQUEST", &der),
    );
    // openssl agrees the signature is broken.
    let v = lab.openssl("req -in tampered.csr -noout -verify");
    assert!(!v.all().contains("verify OK"), "{v}");
    lab.refused(
        "ca",
        "cert sign tampered.csr --ca-dir ca --profile server --out out",
        EXIT_DATAERR,
        &[
            "refusing to sign tampered.csr",
            "the CSR's signature does not verify",
            "create a new CSR",
        ],
        Some("out"),
    );
    // The same bytes untampered, re-encoded by these helpers, do sign: only the flip mattered.
    der[at] = b'h';
    write(
        lab.path("honest.csr"),
        pem_encode("CERTIFICATE REQUEST", &der),
    );
    lab.tw("cert sign honest.csr --ca-dir ca --profile server")
        .ok();
}

#[test]
fn bad_input_names_outside_policy_are_refused() {
    let lab = Lab::with_ca(ACTOR, "--permit-dns example.internal");
    // The intermediate carries the constraint for relying parties, too.
    let text = lab
        .openssl("x509 -in ca/intermediate.pem -noout -text")
        .ok();
    assert_prints(
        &text,
        &["X509v3 Name Constraints: critical", "DNS:example.internal"],
    );

    let o = lab.refused(
        "ca",
        "cert issue --ca-dir ca --profile server --san DNS:ok.example.internal \
         --san DNS:evil.com --out out",
        EXIT_DATAERR,
        &[
            "DNS:evil.com is outside the name constraints of the issuing CA certificate",
            "permitted: DNS example.internal",
            "every verifier would reject the certificate",
            "new intermediate",
        ],
        Some("out"),
    );
    assert!(
        !o.stderr.contains("DNS:ok.example.internal"),
        "only the bad name is named:\n{o}"
    );
    // A look-alike suffix is not inside the subtree.
    lab.refused(
        "ca",
        "cert issue --ca-dir ca --profile server --san DNS:notexample.internal --out out",
        EXIT_DATAERR,
        &["DNS:notexample.internal is outside the name constraints"],
        Some("out"),
    );
    // The same holds for a CSR.
    lab.tw("cert csr --san DNS:evil.com --out req").ok();
    lab.refused(
        "ca",
        "cert sign req/csr.pem --ca-dir ca --profile server --out out",
        EXIT_DATAERR,
        &["DNS:evil.com is outside the name constraints"],
        Some("out"),
    );
    // A name inside the policy is issued.
    lab.issue("--ca-dir ca --profile server --out ok --san DNS:api.example.internal");

    // A policy narrower than the constraints refuses the rest as a policy matter, which
    // ca.toml can widen (up to the constraints).
    let toml = lab.path("ca/ca.toml");
    let text = read(&toml).replace(
        "dns = [\"example.internal\"]",
        "dns = [\"api.example.internal\"]",
    );
    write(&toml, text);
    lab.refused(
        "ca",
        "cert issue --ca-dir ca --profile server --san DNS:db.example.internal --out out",
        EXIT_DATAERR,
        &[
            "DNS:db.example.internal is not allowed by the CA's name policy",
            "allowed: api.example.internal",
            "widen [policy] in ca.toml",
        ],
        Some("out"),
    );
}

#[test]
fn bad_input_ttl_beyond_issuer_or_profile_max_is_refused() {
    let lab = Lab::with_ca(ACTOR, "--intermediate-ttl 30d");
    let issue = "cert issue --ca-dir ca --profile server --san DNS:a.example.internal --out out";
    // 60d is within the server profile's max_ttl (397d) but past the intermediate's end.
    lab.refused(
        "ca",
        &format!("{issue} --ttl 60d"),
        EXIT_DATAERR,
        &[
            "requested validity ends",
            "after the issuing CA certificate expires",
            "use a shorter --ttl",
        ],
        Some("out"),
    );
    // 500d is past the profile's max_ttl.
    lab.refused(
        "ca",
        &format!("{issue} --ttl 500d"),
        EXIT_DATAERR,
        &[
            "invalid TTL",
            "exceeds the server profile's max_ttl of 397d in ca.toml",
            "use a shorter --ttl",
        ],
        Some("out"),
    );
    // Through a CSR as well.
    lab.tw("cert csr --san DNS:b.example.internal --out req")
        .ok();
    lab.refused(
        "ca",
        "cert sign req/csr.pem --ca-dir ca --profile client --ttl 60d --out out",
        EXIT_DATAERR,
        &["after the issuing CA certificate expires"],
        Some("out"),
    );
    // A TTL that is not a duration at all is a usage error.
    lab.refused(
        "ca",
        &format!("{issue} --ttl soon"),
        EXIT_USAGE,
        &["--ttl", "invalid duration \"soon\"", "e.g. 15m, 24h, 90d"],
        Some("out"),
    );
    // Inside both limits it works.
    lab.issue("--ca-dir ca --profile server --out ok --san DNS:a.example.internal --ttl 20d");
}

#[test]
fn bad_input_unknown_serial_is_not_found() {
    let lab = Lab::with_ca(ACTOR, "");
    lab.issue("--ca-dir ca --profile server --out a --san DNS:a.example.internal");
    for line in [
        "cert show 0123456789abcdef --ca-dir ca",
        "cert revoke 0123456789abcdef --ca-dir ca --reason superseded",
    ] {
        lab.refused(
            "ca",
            line,
            EXIT_NOINPUT,
            &[
                "no certificate with serial or fingerprint \"0123456789abcdef\" in the inventory",
                "list them with `twoway cert list`",
            ],
            None,
        );
    }
}

#[test]
fn bad_input_wrong_or_missing_passphrase_is_refused() {
    let lab = Lab::new(ACTOR);
    write(lab.path("right.txt"), "correct horse battery staple\n");
    write(lab.path("wrong.txt"), "incorrect horse\n");
    write(lab.path("empty.txt"), "");
    lab.init_ca("ca", "--passphrase-file right.txt");
    let issue = "cert issue --ca-dir ca --profile server --san DNS:a.example.internal --out out";
    lab.refused(
        "ca",
        &format!("{issue} --passphrase-file wrong.txt"),
        EXIT_NOPERM,
        &[
            "wrong passphrase",
            "could not be decrypted with the passphrase given",
        ],
        Some("out"),
    );
    lab.refused(
        "ca",
        issue,
        EXIT_NOPERM,
        &[
            "the private key is encrypted",
            "give its passphrase with --passphrase-file FILE (or TWOWAY_PASSPHRASE_FILE)",
        ],
        Some("out"),
    );
    lab.refused(
        "ca",
        &format!("{issue} --passphrase-file empty.txt"),
        EXIT_USAGE,
        &[
            "the passphrase file empty.txt is empty",
            "put the passphrase on its first line",
        ],
        Some("out"),
    );
    // Signing a CRL needs the key too; a refused CRL uses up no CRL number.
    lab.refused(
        "ca",
        "crl --ca-dir ca --passphrase-file wrong.txt --out out/crl.pem",
        EXIT_NOPERM,
        &["wrong passphrase"],
        Some("out"),
    );
    // With the right passphrase everything works.
    let right = "--passphrase-file right.txt";
    lab.issue(&format!(
        "--ca-dir ca --profile server --out ok --san DNS:a.example.internal {right}"
    ));
    lab.tw(&format!("crl --ca-dir ca {right} --out crl.pem"))
        .ok();
    let text = lab.openssl("crl -in crl.pem -noout -text").ok();
    assert_eq!(crl_number(&text.stdout), "1", "{text}");
}

#[test]
fn bad_input_existing_ca_dir_is_left_untouched() {
    let lab = Lab::with_ca(ACTOR, "");
    lab.issue("--ca-dir ca --profile server --out a --san DNS:a.example.internal");
    let files = [
        "root.pem",
        "root.key",
        "intermediate.pem",
        "intermediate.key",
        "ca.toml",
    ];
    let read_all = || -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(lab.path(&format!("ca/{f}"))).unwrap())
            .collect()
    };
    let before = read_all();
    lab.refused(
        "ca",
        "ca init --ca-dir ca --name Second --key-type p384",
        EXIT_CANTCREAT,
        &[
            "already holds a CA (ca.toml exists): refusing to overwrite it",
            "Choose another --ca-dir",
        ],
        None,
    );
    assert!(
        before == read_all(),
        "the first CA's files must be untouched: {files:?}"
    );
    // The first CA still issues under the same root.
    lab.issue("--ca-dir ca --profile client --out b --san DNS:b.example.internal");
    lab.openssl("verify -CAfile ca/root.pem -untrusted ca/intermediate.pem b/cert.pem")
        .ok();
}

#[test]
fn bad_input_unwritable_out_dir_is_refused() {
    // Tests run as root, so permissions would not stop the writes: the output goes under a
    // regular file instead, where nobody can create a directory.
    let lab = Lab::with_ca(ACTOR, "");
    write(lab.path("blocker"), "a regular file\n");
    lab.refused(
        "ca",
        "cert issue --ca-dir ca --profile server --san DNS:a.example.internal --out blocker/out",
        EXIT_IOERR,
        &["cannot create directory blocker/out", "Not a directory"],
        None,
    );
    lab.tw("cert csr --san DNS:b.example.internal --out req")
        .ok();
    lab.refused(
        "ca",
        "cert sign req/csr.pem --ca-dir ca --profile server --out blocker/out",
        EXIT_IOERR,
        &["cannot create directory blocker/out"],
        None,
    );
    lab.refused(
        "ca",
        "cert csr --san DNS:c.example.internal --out blocker/req",
        EXIT_IOERR,
        &["cannot create directory blocker/req"],
        None,
    );
    assert_eq!(read(lab.path("blocker")), "a regular file\n");
    // Existing files in --out are not replaced without --force.
    lab.issue("--ca-dir ca --profile server --out taken --san DNS:a.example.internal");
    let cert = read(lab.path("taken/cert.pem"));
    lab.refused(
        "ca",
        "cert issue --ca-dir ca --profile server --san DNS:a.example.internal --out taken",
        EXIT_CANTCREAT,
        &["already exists", "pass --force to replace the files"],
        None,
    );
    assert_eq!(read(lab.path("taken/cert.pem")), cert);
    let files = dir_entries(&lab.path("taken"));
    assert_eq!(files, ["ca.pem", "cert.pem", "chain.pem", "key.pem"]);
}

#[test]
fn bad_input_pem_without_certificate_is_refused() {
    let lab = Lab::with_ca(ACTOR, "");
    lab.tw("cert csr --san DNS:a.example.internal --out req")
        .ok();
    // The classic mistake: the key (or the CSR) instead of the certificate.
    for file in ["req/key.pem", "req/csr.pem"] {
        lab.refused(
            "ca",
            &format!("cert import {file} --ca-dir ca"),
            EXIT_DATAERR,
            &[
                "nothing to import",
                &format!("{file} (holds no certificate)"),
                "no CERTIFICATE found in the PEM input",
                "-----BEGIN CERTIFICATE-----",
            ],
            None,
        );
        lab.refused(
            "ca",
            &format!("cert inspect {file}"),
            EXIT_DATAERR,
            &[
                &format!("{file} holds no certificate"),
                "no CERTIFICATE found",
            ],
            None,
        );
    }
    // A key among certificates (a glob over a directory of both) is skipped and named;
    // the certificates are imported.
    lab.foreign_cert("foreign", "foreign.example.com");
    let o = lab
        .tw("cert import foreign.pem req/key.pem --ca-dir ca")
        .ok();
    assert_prints(
        &o,
        &["imported", "skipped req/key.pem: holds no certificate"],
    );
}

// ---------------------------------------------------------------------------------------
// 2. Name constraints: no path signs a name outside the intermediate's.

/// A CA in `ca` (found through TWOWAY_CA_DIR) whose intermediate permits example.internal,
/// 10.0.0.0/8 and 127.0.0.1.
fn constrained() -> Lab {
    let lab = Lab::with_ca_dir_env("test:constraints");
    lab.tw(
        "ca init --ca-dir ca --name Constrained --permit-dns example.internal \
         --permit-ip 10.0.0.0/8 --permit-ip 127.0.0.1 --trust-domain example.org",
    )
    .ok();
    lab
}

/// How many certificates the inventory holds.
fn recorded(lab: &Lab) -> u64 {
    lab.recorded("ca").total
}

/// Whatever a command issued verifies; a refusal issued nothing.
#[track_caller]
fn issued_verifies_or_refused(lab: &Lab, what: &str, o: &Output, cert: &Path, before: u64) {
    if o.success() {
        let (ok, text) = lab.verifies(cert, "");
        assert!(
            ok,
            "{what} issued a certificate openssl rejects:\n{text}\n{o}"
        );
    } else {
        // refused for the constraints, or earlier because a free CN is no SAN at all
        assert!(
            o.stderr.contains("name constraints")
                || o.stderr.contains("is not one of the certificate's SANs"),
            "{what}: the refusal names what was wrong:\n{o}"
        );
        assert_eq!(recorded(lab), before, "{what}: a refusal records nothing");
        assert!(!cert.exists(), "{what}: no file written");
    }
}

#[test]
fn a_policy_wider_than_the_intermediate_is_refused_when_read() {
    let lab = constrained();
    let before = recorded(&lab);
    let toml = lab.path("ca/ca.toml");
    let original = read(&toml);
    let widened = original.replace(
        "dns = [\"example.internal\"]",
        "dns = [\"example.internal\", \"localhost\"]",
    );
    assert_ne!(widened, original, "the policy line is where init wrote it");
    write(&toml, &widened);
    for line in [
        "cert issue --profile server --san DNS:localhost --out local",
        "cert list",
        "ca serve --listen 127.0.0.1:0",
    ] {
        let o = lab.tw(line).code(EXIT_USAGE);
        for needle in [
            "\"localhost\"",
            "name constraints",
            "intermediate.pem",
            "new intermediate",
        ] {
            assert!(o.stderr.contains(needle), "{needle:?} in:\n{o}");
        }
    }
    assert!(!lab.path("local").exists(), "nothing written");

    // Removing the dns line allows every DNS name: as wide, as refused.
    let unrestricted: String = original
        .lines()
        .filter(|l| !l.starts_with("dns = "))
        .map(|l| format!("{l}\n"))
        .collect();
    write(&toml, &unrestricted);
    let o = lab.tw("cert list").code(EXIT_USAGE);
    assert!(o.stderr.contains("dns is absent"), "{o}");

    write(&toml, &original);
    assert_eq!(recorded(&lab), before, "nothing was recorded meanwhile");
}

#[test]
fn no_path_signs_a_name_outside_the_constraints() {
    let lab = constrained();
    // The offline paths: a free common name beside an IP SAN is what OpenSSL checks
    // against the DNS constraints.
    let before = recorded(&lab);
    let o = lab.tw("cert issue --profile server --san IP:10.0.0.5 --cn www.evil.com --out issued");
    let cert = lab.path("issued/cert.pem");
    issued_verifies_or_refused(&lab, "cert issue", &o, &cert, before);

    openssl_csr(lab.dir.path(), "evil", "www.evil.com", "IP:10.0.0.6");
    let before = recorded(&lab);
    let o = lab.tw("cert sign evil.csr --profile server --out signed");
    let cert = lab.path("signed/cert.pem");
    issued_verifies_or_refused(&lab, "cert sign", &o, &cert, before);

    // A name outside: refused by the policy (which init keeps inside the constraints).
    let o = lab
        .tw("cert issue --profile server --san DNS:localhost --out outside")
        .fails();
    assert!(o.stderr.contains("DNS:localhost"), "{o}");

    // The server's own certificate: a name outside the constraints stops it with a
    // message naming --san.
    let o = lab
        .tw("ca serve --listen 127.0.0.1:0 --san DNS:localhost")
        .fails();
    assert!(
        o.stderr.contains("DNS:localhost") && o.stderr.contains("--san"),
        "{o}"
    );

    // The online paths.
    lab.tw("cert issue --profile client --san URI:spiffe://example.org/admin --out admin")
        .ok();
    let port = free_port();
    let serve = format!(
        "ca serve --listen 127.0.0.1:{port} --san IP:127.0.0.1 \
         --admin URI:spiffe://example.org/admin"
    );
    let mut server = Server::spawn(
        "ca serve",
        &mut lab.cmd(&words(&serve)),
        &lab.path("serve.log"),
    );
    server.wait_for_port(port);
    let url = format!("https://127.0.0.1:{port}");

    // /v1/sign through the remote CLI.
    let before = recorded(&lab);
    let sign = [
        "cert",
        "sign",
        "evil.csr",
        "--profile",
        "server",
        "--out",
        "remote-signed",
    ];
    let o = lab.remote(&url, &sign);
    let cert = lab.path("remote-signed/cert.pem");
    issued_verifies_or_refused(&lab, "/v1/sign", &o, &cert, before);

    // Enrollment with a token for the IP, and a CSR with the evil CN.
    let create = [
        "token",
        "create",
        "--san",
        "IP:10.0.0.6",
        "--profile",
        "server",
    ];
    let token = lab.remote(&url, &create).ok().line();
    let body = serde_json::json!({"token": token, "csr": read(lab.path("evil.csr"))});
    write(lab.path("enroll.json"), body.to_string());
    let before = recorded(&lab);
    let mut args = words("-sS --cacert ca/root.pem --data-binary @enroll.json -H");
    args.extend(strings(&[
        "content-type: application/json",
        "-w",
        "\n%{http_code}",
    ]));
    args.push(format!("{url}/v1/enroll"));
    let o = lab.tool_args("curl", &args);
    let text = o.stdout.clone();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    if code.trim() == "200" {
        let v: Value = serde_json::from_str(answer).unwrap();
        write(lab.path("enrolled.pem"), v["certificate"].as_str().unwrap());
        let (ok, text) = lab.verifies("enrolled.pem", "");
        assert!(ok, "enrollment issued what openssl rejects:\n{text}");
    } else {
        assert!(
            code.trim().starts_with('4')
                && (answer.contains("name constraints") || answer.contains("cn_not_a_san")),
            "enrollment refusal: {text}\n{}",
            server.log()
        );
        assert_eq!(recorded(&lab), before);
    }
}
