//! Intermediate rotation as an operator and a verifier meet it: `ca rotate intermediate`
//! prepares g2, `activate` makes it the issuer while g1 keeps signing its CRL and OCSP
//! answers, `retire` ends g1 (final CRL, revoked by the root, key destroyed) and is
//! refused while g1 still has live certificates. `openssl verify` checks both chains
//! with full-chain CRL checking; `ca serve` after the rotation publishes each
//! intermediate's CRL, answers OCSP for both, and an agent's renewal moves its workload
//! to g2. The real binary, openssl and curl; 127.0.0.1 only.

mod common;

use common::lab::Lab;
use common::online::OnlineCa;
use common::pki::serial_of;
use std::time::Duration;

/// `openssl verify -crl_check_all` of `dir/cert.pem` with its own chain and the CRL bundle.
fn verify_all(lab: &Lab, dir: &str, bundle: &str) -> String {
    lab.sh(&format!(
        "openssl verify -crl_check_all -CRLfile {bundle} -CAfile ca/root.pem \
         -untrusted {dir}/chain.pem {dir}/cert.pem 2>&1"
    ))
    .all()
}

fn issuer_of(lab: &Lab, cert: &str) -> String {
    lab.openssl(&format!("x509 -in {cert} -noout -issuer"))
        .ok()
        .stdout
}

#[test]
fn an_intermediate_is_prepared_activated_and_retired_while_both_chains_verify() {
    let lab = Lab::new("test:rotation");
    lab.init_ca(
        "ca",
        "--url http://127.0.0.1:9080 --permit-dns example.internal",
    );
    for n in ["a", "b"] {
        lab.tw(&format!(
            "cert issue --ca-dir ca --profile server --san DNS:{n}.example.internal --out {n}"
        ))
        .ok();
    }

    // Refusals before there is anything to rotate to.
    let o = lab.tw("ca rotate activate --ca-dir ca").fails();
    assert!(o.all().contains("no intermediate is prepared"), "{o}");
    let o = lab.tw("ca rotate retire g1 --ca-dir ca").fails();
    assert!(o.all().contains("g1 is the active intermediate"), "{o}");

    let o = lab.tw("ca rotate intermediate --ca-dir ca --json").ok();
    let prepared = o.json();
    assert_eq!(prepared["id"], "g2", "{o}");
    assert_eq!(prepared["state"], "prepared", "{o}");
    assert!(
        common::process::mode(&lab.path("ca/issuers/g2/intermediate.key")) & 0o077 == 0,
        "the prepared key is private"
    );
    let o = lab.tw("ca rotate intermediate --ca-dir ca").fails();
    assert!(o.all().contains("g2 is already prepared"), "{o}");
    let o = lab.tw("ca rotate retire g2 --ca-dir ca").fails();
    assert!(o.all().contains("never activated"), "{o}");
    // Prepared is not active: g1 still issues.
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:p.example.internal --out p")
        .ok();
    assert!(
        issuer_of(&lab, "p/cert.pem").ends_with("Test CA Intermediate CA\n"),
        "{}",
        issuer_of(&lab, "p/cert.pem")
    );

    let o = lab.tw("ca rotate activate --ca-dir ca").ok();
    assert!(
        o.stdout.contains("g2 is now the active intermediate"),
        "{o}"
    );
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:c.example.internal --out c")
        .ok();
    assert!(
        issuer_of(&lab, "c/cert.pem").contains("Intermediate CA G2"),
        "{}",
        issuer_of(&lab, "c/cert.pem")
    );
    let text = lab.openssl("x509 -in c/cert.pem -noout -text").ok().stdout;
    assert!(
        text.contains("URI:http://127.0.0.1:9080/crl/g2"),
        "a g2 certificate names g2's CRL:\n{text}"
    );
    let g2 = lab
        .openssl("x509 -in ca/intermediate.pem -noout -text")
        .ok()
        .stdout;
    assert!(
        g2.contains("Permitted") && g2.contains("DNS:example.internal"),
        "the name constraints carry over:\n{g2}"
    );
    let o = lab
        .tw("cert issue --ca-dir ca --profile server --san DNS:x.example.org --out x")
        .fails();
    assert!(o.all().contains("example.internal"), "{o}");

    // g1 still revokes what it issued; one bundle has every CRL a verifier needs.
    let a = serial_of(&lab.path("a/cert.pem"));
    lab.tw(&format!(
        "cert revoke {a} --ca-dir ca --reason key-compromise"
    ))
    .ok();
    lab.tw("crl --all --ca-dir ca --out bundle.pem").ok();
    let bundle = common::read(lab.path("bundle.pem"));
    assert_eq!(bundle.matches("BEGIN X509 CRL").count(), 3, "{bundle}");
    let v = verify_all(&lab, "a", "bundle.pem");
    assert!(v.contains("certificate revoked"), "{v}");
    for ok in ["b", "c", "p"] {
        let v = verify_all(&lab, ok, "bundle.pem");
        assert!(v.contains(": OK"), "{ok}: {v}");
    }

    let show = lab.tw("ca show --ca-dir ca --json").ok().json();
    let states: Vec<(String, String, u64)> = show["issuers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
                i["live_certificates"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("g2".into(), "active".into(), 1),
            ("g1".into(), "retiring".into(), 2),
        ],
        "{show}"
    );
    let listed = lab
        .tw("cert list --ca-dir ca --issuer g1 --status active --json")
        .ok()
        .json();
    assert_eq!(listed["total"], 2, "{listed}");

    // Retiring g1 would strand b and p: refused until they are gone.
    let o = lab.tw("ca rotate retire g1 --ca-dir ca").fails();
    assert!(
        o.all().contains("2 live certificate(s)") && o.all().contains("--force"),
        "{o}"
    );
    assert!(lab.path("ca/issuers/g1/intermediate.key").exists());
    for dir in ["b", "p"] {
        let s = serial_of(&lab.path(&format!("{dir}/cert.pem")));
        lab.tw(&format!("cert revoke {s} --ca-dir ca --reason superseded"))
            .ok();
    }
    let o = lab.tw("ca rotate retire g1 --ca-dir ca").ok();
    assert!(o.stdout.contains("Retired g1"), "{o}");
    assert!(
        !lab.path("ca/issuers/g1/intermediate.key").exists(),
        "the retired key is destroyed"
    );
    let o = lab.tw("ca rotate retire g1 --ca-dir ca").fails();
    assert!(o.all().contains("already retired"), "{o}");

    // The root now lists g1 (cessationOfOperation); g1's final CRL runs to its expiry.
    let g1_serial = serial_of(&lab.path("ca/issuers/g1/intermediate.pem"));
    let root_crl = lab
        .openssl("crl -in ca/root.crl -noout -text")
        .ok()
        .stdout
        .to_ascii_lowercase();
    assert!(root_crl.contains(&g1_serial), "{root_crl}");
    assert!(root_crl.contains("cessation of operation"), "{root_crl}");
    let final_crl = lab
        .openssl("crl -in ca/issuers/g1/final.crl -noout -nextupdate")
        .ok()
        .stdout;
    let g1_end = lab
        .openssl("x509 -in ca/issuers/g1/intermediate.pem -noout -enddate")
        .ok()
        .stdout;
    assert_eq!(
        final_crl.trim().trim_start_matches("nextUpdate="),
        g1_end.trim().trim_start_matches("notAfter="),
    );
    lab.tw("crl --all --ca-dir ca --out bundle2.pem").ok();
    let v = verify_all(&lab, "c", "bundle2.pem");
    assert!(v.contains(": OK"), "{v}");

    let audit = lab.tw("audit list --ca-dir ca --limit 1000").ok().stdout;
    for action in [
        "ca.rotate.prepare",
        "ca.rotate.activate",
        "ca.rotate.retire",
    ] {
        assert!(audit.contains(action), "{action} audited:\n{audit}");
    }
    lab.tw("audit verify --ca-dir ca").ok();
}

#[test]
fn ca_serve_after_a_rotation_answers_for_both_intermediates_and_renewals_move_to_the_new_one() {
    let mut ca = OnlineCa::start(&[]);
    // Short-lived, so that its renewal point (two thirds of its life) comes within the test.
    ca.enroll_agent(
        "DNS:svc.example.internal",
        "svc",
        "--profile server --cert-ttl 6s",
    );
    let enrolled = std::time::Instant::now();
    let old = common::read(ca.path("svc/cert.pem"));
    common::write(ca.path("old.pem"), &old);
    assert!(issuer_of(&ca, "old.pem").ends_with("Intermediate CA\n"));

    ca.stop();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    ca.restart(Duration::ZERO);

    // The old certificate is still good, and g1 answers for it with its own key.
    let ocsp = |issuer: &str, cert: &str| {
        let url = format!("http://{}/ocsp", ca.http);
        let o = ca.openssl(&format!(
            "ocsp -timeout 5 -issuer {issuer} -cert {cert} -url {url} -CAfile ca/root.pem"
        ));
        format!("{}{}", o.stdout, o.stderr)
    };
    let out = ocsp("ca/issuers/g1/intermediate.pem", "old.pem");
    assert!(
        out.contains("Response verify OK") && out.contains("old.pem: good"),
        "{out}"
    );

    // The agent renews through the restarted CA: the new certificate and chain are g2's.
    std::thread::sleep(Duration::from_millis(4_500).saturating_sub(enrolled.elapsed()));
    ca.agent_once(None, "DNS:svc.example.internal", "svc").ok();
    let new = common::read(ca.path("svc/cert.pem"));
    assert_ne!(new, old, "the agent renewed");
    assert!(
        issuer_of(&ca, "svc/cert.pem").contains("Intermediate CA G2"),
        "{}",
        issuer_of(&ca, "svc/cert.pem")
    );
    let v = ca
        .sh("openssl verify -CAfile ca/root.pem -untrusted svc/chain.pem svc/cert.pem 2>&1")
        .all();
    assert!(v.contains(": OK"), "{v}");
    let out = ocsp("ca/intermediate.pem", "svc/cert.pem");
    assert!(
        out.contains("Response verify OK") && out.contains("svc/cert.pem: good"),
        "{out}"
    );
    // The renewal superseded the old certificate, and g1's OCSP says so at once.
    let out = ocsp("ca/issuers/g1/intermediate.pem", "old.pem");
    assert!(out.contains("old.pem: revoked"), "{out}");

    // Each intermediate's CRL at its own address: /crl is g1's (its certificates name it).
    let crl_issuer = |path: &str| {
        let url = format!("http://{}{path}", ca.http);
        ca.tool_args("curl", &["-sS", "--max-time", "30", "-o", "got.der", &url])
            .ok();
        ca.openssl("crl -inform DER -in got.der -noout -issuer")
            .ok()
            .stdout
    };
    assert!(crl_issuer("/crl").ends_with("Intermediate CA\n"));
    assert!(crl_issuer("/crl/g1").ends_with("Intermediate CA\n"));
    assert!(crl_issuer("/crl/g2").contains("Intermediate CA G2"));
    let url = format!("http://{}/crl/g7", ca.http);
    let o = ca.tool_args(
        "curl",
        &["-sS", "--max-time", "30", "-w", "\n%{http_code}", &url],
    );
    assert!(
        o.stdout.ends_with("404") && o.stdout.contains("/crl/g2"),
        "{o}"
    );
}

/// `openssl verify` of `dir/cert.pem` trusting only `anchor`, with `untrusted` as the
/// chain offered; its output.
fn verify_with(lab: &Lab, anchor: &str, untrusted: &str, cert: &str) -> String {
    lab.sh(&format!(
        "openssl verify -CAfile {anchor} -untrusted {untrusted} {cert} 2>&1"
    ))
    .all()
}

#[test]
fn a_root_rotation_cross_signs_so_either_root_accepts_both_chains_until_the_old_retires() {
    let lab = Lab::new("test:rotation");
    lab.init_ca("ca", "--url http://127.0.0.1:9080");
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:old.example.internal --out old")
        .ok();
    std::fs::copy(lab.path("ca/root.pem"), lab.path("r1.pem")).unwrap();

    let o = lab.tw("ca rotate root --ca-dir ca --json").ok();
    let r2 = o.json();
    assert_eq!(r2["id"], "r2", "{o}");
    assert!(
        r2["certificate"]["subject"]
            .as_str()
            .unwrap()
            .ends_with("Root CA G2"),
        "{o}"
    );
    let o = lab.tw("ca rotate root --ca-dir ca").fails();
    assert!(o.all().contains("r2 is already prepared"), "{o}");
    // Until activation nothing changes for clients.
    assert_eq!(
        common::read(lab.path("ca/root.pem")),
        common::read(lab.path("r1.pem"))
    );
    let g2 = lab
        .tw("ca rotate intermediate --ca-dir ca --json")
        .ok()
        .json();
    assert!(
        g2["certificate"]["issuer"]
            .as_str()
            .unwrap()
            .ends_with("Root CA G2"),
        "the new intermediate is under the new root: {g2}"
    );
    lab.tw("ca rotate activate --ca-dir ca").ok();
    // root.pem holds both roots during the overlap, the new one first.
    let both = common::read(lab.path("ca/root.pem"));
    assert_eq!(both.matches("BEGIN CERTIFICATE").count(), 2, "{both}");
    let end = both.find("-----END CERTIFICATE-----\n").unwrap() + 26;
    common::write(lab.path("r2.pem"), &both[..end]);
    assert_ne!(
        common::read(lab.path("r2.pem")),
        common::read(lab.path("r1.pem"))
    );
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:new.example.internal --out new")
        .ok();

    // roots.pem (ca.pem) carries both roots; the new chain carries r2 certified by r1.
    let ca_pem = common::read(lab.path("new/ca.pem"));
    assert_eq!(ca_pem.matches("BEGIN CERTIFICATE").count(), 2, "{ca_pem}");
    let chain = common::read(lab.path("new/chain.pem"));
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 3, "{chain}");
    // Either root alone accepts the new chain, and (with r1 certified by r2) the old one.
    common::write(
        lab.path("old-chain-for-r2.pem"),
        common::read(lab.path("old/chain.pem"))
            + &common::read(lab.path("ca/roots/r2/r1-by-r2.pem")),
    );
    for anchor in ["r1.pem", "r2.pem"] {
        let v = verify_with(&lab, anchor, "new/chain.pem", "new/cert.pem");
        assert!(v.contains(": OK"), "new chain, {anchor}: {v}");
        let v = verify_with(&lab, anchor, "old-chain-for-r2.pem", "old/cert.pem");
        assert!(v.contains(": OK"), "old chain, {anchor}: {v}");
    }
    // And with full-chain CRL checking: every CRL of both roots and both intermediates.
    lab.tw("crl --all --ca-dir ca --out bundle.pem").ok();
    let bundle = common::read(lab.path("bundle.pem"));
    assert_eq!(bundle.matches("BEGIN X509 CRL").count(), 4, "{bundle}");
    for anchor in ["r1.pem", "r2.pem"] {
        let v = lab
            .sh(&format!(
                "openssl verify -crl_check_all -CRLfile bundle.pem -CAfile {anchor} \
                 -untrusted new/chain.pem new/cert.pem 2>&1"
            ))
            .all();
        assert!(v.contains(": OK"), "{anchor}: {v}");
    }

    // r1 cannot go while g1 is under it; then g1 and r1 retire, in that order.
    let o = lab.tw("ca rotate retire r1 --ca-dir ca").fails();
    assert!(o.all().contains("g1"), "{o}");
    lab.tw("ca rotate retire g1 --ca-dir ca --force").ok();
    let r1_crl = lab
        .openssl("crl -in ca/roots/r1/root.crl -noout -text")
        .ok()
        .stdout
        .to_ascii_lowercase();
    let g1_serial = serial_of(&lab.path("ca/issuers/g1/intermediate.pem"));
    assert!(r1_crl.contains(&g1_serial), "r1's CRL lists g1:\n{r1_crl}");
    let o = lab.tw("ca rotate retire r1 --ca-dir ca").ok();
    assert!(o.stdout.contains("Retired root r1"), "{o}");
    assert!(!lab.path("ca/roots/r1/root.key").exists());
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:after.example.internal --out after")
        .ok();
    let ca_pem = common::read(lab.path("after/ca.pem"));
    assert_eq!(ca_pem.matches("BEGIN CERTIFICATE").count(), 1, "{ca_pem}");
    assert_eq!(
        common::read(lab.path("ca/root.pem")),
        common::read(lab.path("r2.pem"))
    );
    let chain = common::read(lab.path("after/chain.pem"));
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
    let v = verify_with(&lab, "r2.pem", "after/chain.pem", "after/cert.pem");
    assert!(v.contains(": OK"), "{v}");
    lab.tw("audit verify --ca-dir ca").ok();
}

#[test]
fn agents_pinned_to_the_old_root_renew_after_a_root_rotation() {
    let mut ca = OnlineCa::start(&[]);
    ca.enroll_agent(
        "DNS:pinned.example.internal",
        "pinned",
        "--profile server --cert-ttl 6s",
    );
    let enrolled = std::time::Instant::now();
    std::fs::copy(ca.path("ca/root.pem"), ca.path("r1.pem")).unwrap();
    ca.stop();
    ca.tw("ca rotate root --ca-dir ca").ok();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    let old_fp = ca.restart_with_new_root();
    let roots = ca.tool_args(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            &format!("http://{}/roots.pem", ca.http),
        ],
    );
    assert_eq!(
        roots.stdout.matches("BEGIN CERTIFICATE").count(),
        2,
        "{roots}"
    );

    // The agent still pins r1: it finds r1 in /roots.pem, and the CA's chain reaches r1
    // through the cross certificate.
    std::thread::sleep(Duration::from_millis(4_500).saturating_sub(enrolled.elapsed()));
    let url = ca.url();
    ca.tw_args(&[
        "agent",
        "--ca",
        &url,
        "--ca-fingerprint",
        &old_fp,
        "--san",
        "DNS:pinned.example.internal",
        "--out",
        "pinned",
        "--once",
    ])
    .ok();
    assert!(
        issuer_of(&ca, "pinned/cert.pem").contains("Intermediate CA G2"),
        "{}",
        issuer_of(&ca, "pinned/cert.pem")
    );
    let v = ca
        .sh("openssl verify -CAfile r1.pem -untrusted pinned/chain.pem pinned/cert.pem 2>&1")
        .all();
    assert!(v.contains(": OK"), "{v}");
    // Each root's CRL is served: /crl/root the active one's, /crl/root/<id> any other's.
    let crl_issuer = |path: &str| {
        let url = format!("http://{}{path}", ca.http);
        ca.tool_args("curl", &["-sS", "--max-time", "30", "-o", "got.der", &url])
            .ok();
        ca.openssl("crl -inform DER -in got.der -noout -issuer")
            .ok()
            .stdout
    };
    assert!(crl_issuer("/crl/root").contains("Root CA G2"));
    assert!(crl_issuer("/crl/root/r2").contains("Root CA G2"));
    assert!(crl_issuer("/crl/root/r1")
        .trim_end()
        .ends_with("Online Test Root CA"));
    let o = ca.tool_args(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            &format!("http://{}/crl/root/r9", ca.http),
        ],
    );
    assert!(o.stdout.ends_with("404") && o.stdout.contains("r1"), "{o}");
    // A new agent pinned to the new root enrolls too.
    ca.enroll_agent("DNS:fresh.example.internal", "fresh", "--profile server");
    let v = ca
        .sh("openssl verify -CAfile ca/root.pem -untrusted fresh/chain.pem fresh/cert.pem 2>&1")
        .all();
    assert!(v.contains(": OK"), "{v}");

    // After g1 and r1 retire, r1 is gone from /roots.pem. The agent, started again with the
    // same r1 pin (here: enrolling anew into the same directory), trusts the roots its last
    // renewal brought (its ca.pem, which holds r1 and r2) and reaches the CA.
    ca.tw("ca rotate retire g1 --ca-dir ca --force").ok();
    ca.tw("ca rotate retire r1 --ca-dir ca").ok();
    ca.restart(Duration::ZERO);
    let roots = ca.tool_args(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            &format!("http://{}/roots.pem", ca.http),
        ],
    );
    assert_eq!(
        roots.stdout.matches("BEGIN CERTIFICATE").count(),
        1,
        "{roots}"
    );
    let before = common::read(ca.path("pinned/cert.pem"));
    for f in ["cert.pem", "chain.pem"] {
        std::fs::remove_file(ca.path(&format!("pinned/{f}"))).unwrap();
    }
    let token = ca
        .tw("token create --ca-dir ca --san DNS:pinned.example.internal --profile server")
        .ok()
        .line();
    ca.tw_args(&[
        "agent",
        "--ca",
        &url,
        "--ca-fingerprint",
        &old_fp,
        "--token",
        &token,
        "--san",
        "DNS:pinned.example.internal",
        "--out",
        "pinned",
        "--once",
    ])
    .ok();
    assert_ne!(
        common::read(ca.path("pinned/cert.pem")),
        before,
        "enrolled again"
    );
}

/// An activation cut short (here: after the old intermediate was copied to issuers/g1/ and
/// the new certificate reached the top, before its key did) is finished by running it
/// again: the new intermediate issues, and g1's copied key still matches g1 (retire, which
/// signs g1's final CRL with it, succeeds).
#[test]
fn an_activation_cut_short_is_finished_by_running_it_again() {
    let lab = Lab::new("test:rotation");
    lab.init_ca("ca", "");
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:a.example.internal --out a")
        .ok();
    lab.tw("ca rotate intermediate --ca-dir ca").ok();
    // The state a crash in the middle of `activate` leaves.
    lab.sh(
        "mkdir -m 700 ca/issuers/g1 && cp -p ca/intermediate.key ca/intermediate.pem ca/issuers/g1/ \
         && echo retiring > ca/issuers/g1/state && cp ca/issuers/g2/intermediate.pem ca/intermediate.pem",
    )
    .ok();
    let o = lab
        .tw("cert issue --ca-dir ca --profile server --san DNS:b.example.internal --out b")
        .fails();
    assert!(
        o.all().contains("does not match"),
        "a half-made pair is refused: {o}"
    );

    lab.tw("ca rotate activate --ca-dir ca").ok();
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:b.example.internal --out b")
        .ok();
    assert!(issuer_of(&lab, "b/cert.pem").contains("Intermediate CA G2"));
    let v = verify_with(&lab, "ca/root.pem", "b/chain.pem", "b/cert.pem");
    assert!(v.contains(": OK"), "{v}");
    lab.tw("ca rotate retire g1 --ca-dir ca --force").ok();
    lab.tw("crl --all --ca-dir ca --out bundle.pem").ok();
    let v = lab
        .sh("openssl verify -crl_check_all -CRLfile bundle.pem -CAfile ca/root.pem -untrusted a/chain.pem a/cert.pem 2>&1")
        .all();
    assert!(v.contains("certificate revoked"), "g1 is retired: {v}");
}
