//! The intermediate key in a PKCS#11 token (Debian's SoftHSM2, a token of the test's own):
//! `ca init --key-uri` generates it inside the token (EC, or RSA with `--key-type
//! rsa2048`; the root's too with `--root-key-uri`), no key file exists, `pkcs11-tool`
//! lists a sensitive, never-extractable key, and everything the intermediate signs —
//! certificates by the CLI and by `ca serve`, CRLs, OCSP answers — verifies with openssl.
//! The token taken away under an issuance load: requests fail cleanly (503, none hangs),
//! and issuance resumes once it is back, without a restart. Wrong PIN, missing module, a
//! URI naming no key and a second key under the same label are refused with the fix.
//!
//! The real binary, softhsm2-util, pkcs11-tool, openssl and curl; only 127.0.0.1.

mod common;

use common::lab::Lab;
use common::online::OnlineCa;
use common::{read, require_tool};
use std::time::{Duration, Instant};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const URI: &str = "pkcs11:token=ca;object=intermediate";
const PIN: &str = "5678";

/// A SoftHSM2 configuration in the lab (every command run in it uses it), a token
/// labelled `ca` with user PIN [`PIN`], and the PIN in `hsm.pin` (0600). Returns the
/// `ca init` arguments that put the intermediate key in it.
fn softhsm(lab: &Lab) -> String {
    require_tool("softhsm2-util", "softhsm2");
    assert!(
        std::path::Path::new(MODULE).exists(),
        "{MODULE} is missing: apt-get install softhsm2"
    );
    std::fs::create_dir_all(lab.path("tokens")).unwrap();
    std::fs::write(
        lab.path("softhsm2.conf"),
        format!("directories.tokendir = {}\n", lab.p("tokens")),
    )
    .unwrap();
    // through the lab, so that it uses the lab's configuration
    let mut c = lab.command("softhsm2-util");
    c.args([
        "--init-token",
        "--free",
        "--label",
        "ca",
        "--so-pin",
        "1234",
        "--pin",
        PIN,
    ]);
    common::run(&mut c).ok();
    lab.sh(&format!("umask 077; printf '%s\\n' {PIN} > hsm.pin"))
        .ok();
    format!("--key-uri '{URI}' --pkcs11-module {MODULE} --pin-file hsm.pin")
}

/// `pkcs11-tool --list-objects` on the lab's token.
fn objects(lab: &Lab) -> String {
    require_tool("pkcs11-tool", "opensc");
    let mut c = lab.command("pkcs11-tool");
    c.args([
        "--module",
        MODULE,
        "--login",
        "--pin",
        PIN,
        "--list-objects",
    ]);
    common::run(&mut c).all()
}

#[test]
fn the_intermediate_key_lives_in_the_token_and_signs_there() {
    let mut ca = OnlineCa::create_with("HSM Test", "URI:spiffe://hsm.test/admin", "", softhsm, &[]);
    // no key file; the token holds a key that cannot leave it
    assert!(!ca.path("ca/intermediate.key").exists());
    let list = objects(&ca);
    assert!(list.contains("Private Key Object; EC"), "{list}");
    assert!(list.contains("label:      intermediate"), "{list}");
    assert!(list.contains("never extractable"), "{list}");
    let toml = read(ca.path("ca/ca.toml"));
    assert!(
        toml.contains(&format!("intermediate_key = \"{URI}\"")),
        "{toml}"
    );
    assert!(!toml.contains(PIN), "the PIN is in ca.toml:\n{toml}");

    // the CLI issues through the token; openssl accepts the chain
    ca.tw("cert issue --ca-dir ca --profile server --san DNS:a.example.internal --out a")
        .ok();
    let (ok, why) = ca.verifies(ca.path("a/cert.pem"), "");
    assert!(ok, "{why}");
    // a CRL signed in the token verifies against the intermediate
    ca.tw("crl --ca-dir ca --out crl.pem").ok();
    let o = ca.openssl("crl -in crl.pem -CAfile ca/intermediate.pem -noout");
    assert!(o.all().contains("verify OK"), "{}", o.all());

    // ca serve signs through the token: API issuance and OCSP answers
    ca.serve();
    let csr = common::pki::openssl_csr(ca.dir.path(), "b", "", "DNS:b.example.internal");
    let body = serde_json::json!({"csr": csr, "profile": "server"});
    let (s, v) = ca.post_json("/v1/sign", &body, Some("admin"));
    assert_eq!(s, 201, "{v}");
    std::fs::write(ca.path("b.pem"), v["certificate"].as_str().unwrap()).unwrap();
    let (ok, why) = ca.verifies(ca.path("b.pem"), "");
    assert!(ok, "{why}");
    assert!(ca.ocsp("b.pem").contains("b.pem: good"));
}

/// An intermediate whose key is in the token rotates in the token: the new key is made
/// there (`object=intermediate-g2`, never on disk), activation points ca.toml at it, the
/// old key keeps signing its OCSP answers from the token, and retiring destroys it there.
#[test]
fn a_token_held_intermediate_rotates_inside_the_token() {
    let mut ca = OnlineCa::create_with("HSM Test", "URI:spiffe://hsm.test/admin", "", softhsm, &[]);
    ca.tw("cert issue --ca-dir ca --profile server --san DNS:a.example.internal --out a")
        .ok();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    let list = objects(&ca);
    assert!(list.contains("label:      intermediate-g2"), "{list}");
    assert!(!ca.path("ca/issuers/g2/intermediate.key").exists());
    assert_eq!(
        read(ca.path("ca/issuers/g2/key-uri")).trim(),
        "pkcs11:token=ca;object=intermediate-g2"
    );
    ca.tw("ca rotate activate --ca-dir ca").ok();
    let toml = read(ca.path("ca/ca.toml"));
    assert!(
        toml.contains("intermediate_key = \"pkcs11:token=ca;object=intermediate-g2\""),
        "{toml}"
    );
    assert!(
        toml.contains("# The PKCS#11 token of CA keys"),
        "the rest of ca.toml is kept:\n{toml}"
    );
    assert!(!ca.path("ca/intermediate.key").exists());
    ca.tw("cert issue --ca-dir ca --profile server --san DNS:b.example.internal --out b")
        .ok();
    for c in ["a", "b"] {
        let v = ca
            .sh(&format!(
                "openssl verify -CAfile ca/root.pem -untrusted {c}/chain.pem {c}/cert.pem 2>&1"
            ))
            .all();
        assert!(v.contains(": OK"), "{c}: {v}");
    }
    let issuer = ca.openssl("x509 -in b/cert.pem -noout -issuer").ok().stdout;
    assert!(issuer.contains("Intermediate CA G2"), "{issuer}");

    // ca serve: g2 issues through the token, g1 answers OCSP from the token.
    ca.serve();
    let url = format!("http://{}/ocsp", ca.http);
    let o = ca.openssl(&format!(
        "ocsp -timeout 5 -issuer ca/issuers/g1/intermediate.pem -cert a/cert.pem -url {url} -CAfile ca/root.pem"
    ));
    assert!(
        o.all().contains("Response verify OK") && o.all().contains("a/cert.pem: good"),
        "{o}"
    );
    assert!(ca.ocsp("b/cert.pem").contains("b/cert.pem: good"));
    ca.stop();

    // Retiring g1 destroys its key in the token; g2's stays.
    ca.tw("ca rotate retire g1 --ca-dir ca --force").ok();
    let list = objects(&ca);
    assert!(list.contains("label:      intermediate-g2"), "{list}");
    assert!(
        !list.contains("label:      intermediate\n"),
        "g1's key is gone:\n{list}"
    );
    assert!(!ca.path("ca/issuers/g1/key-uri").exists());
}

/// An RSA intermediate key generated in the token (`--key-type rsa2048`): it signs with
/// `CKM_RSA_PKCS` over the SHA-256 DigestInfo, and openssl accepts what it signs —
/// certificates (sha256WithRSAEncryption), the CRL and `ca serve`'s OCSP signer's chain.
#[test]
fn an_rsa_intermediate_key_in_the_token_signs_what_openssl_accepts() {
    let init = |lab: &Lab| format!("{} --key-type rsa2048", softhsm(lab));
    let mut ca = OnlineCa::create_with("HSM RSA", "URI:spiffe://hsm.test/admin", "", init, &[]);
    assert!(!ca.path("ca/intermediate.key").exists());
    let list = objects(&ca);
    assert!(list.contains("Private Key Object; RSA"), "{list}");
    assert!(list.contains("never extractable"), "{list}");

    ca.tw("cert issue --ca-dir ca --profile server --san DNS:r.example.internal --out r")
        .ok();
    let (ok, why) = ca.verifies(ca.path("r/cert.pem"), "");
    assert!(ok, "{why}");
    let text = ca.openssl("x509 -in r/cert.pem -noout -text").all();
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");
    ca.tw("crl --ca-dir ca --out crl.pem").ok();
    let o = ca.openssl("crl -in crl.pem -CAfile ca/intermediate.pem -noout");
    assert!(o.all().contains("verify OK"), "{}", o.all());

    ca.serve();
    let csr = common::pki::openssl_csr(ca.dir.path(), "s", "", "DNS:s.example.internal");
    let body = serde_json::json!({"csr": csr, "profile": "server"});
    let (s, v) = ca.post_json("/v1/sign", &body, Some("admin"));
    assert_eq!(s, 201, "{v}");
    std::fs::write(ca.path("s.pem"), v["certificate"].as_str().unwrap()).unwrap();
    let (ok, why) = ca.verifies(ca.path("s.pem"), "");
    assert!(ok, "{why}");
    assert!(ca.ocsp("s.pem").contains("s.pem: good"));
}

/// Both CA keys in the token (`--root-key-uri`): no key file at all, `pkcs11-tool` lists
/// the two keys, the chain verifies, and the root's CRL (`crl --root`, and within `crl
/// --all`) is signed in the token and verifies against the root.
#[test]
fn the_root_key_can_live_in_the_token_too() {
    let lab = Lab::new("test:hsm-root");
    let args = softhsm(&lab);
    let o = lab
        .sh(&format!(
            "\"$TWOWAY\" ca init --ca-dir ca --name R {args} --root-key-uri 'pkcs11:token=ca;object=root'"
        ))
        .ok();
    assert!(
        o.stdout
            .contains("root          ca/root.pem   (key in the PKCS#11 token"),
        "{o}"
    );
    assert!(!lab.path("ca/root.key").exists() && !lab.path("ca/intermediate.key").exists());
    let list = objects(&lab);
    assert!(list.contains("label:      root"), "{list}");
    assert!(list.contains("label:      intermediate"), "{list}");
    let toml = read(lab.path("ca/ca.toml"));
    assert!(
        toml.contains("root_key = \"pkcs11:token=ca;object=root\""),
        "{toml}"
    );

    lab.tw("cert issue --ca-dir ca --profile server --san DNS:x.example.internal --out x")
        .ok();
    let o = lab.sh("openssl verify -CAfile ca/root.pem -untrusted ca/intermediate.pem x/cert.pem");
    assert!(o.stdout.contains("x/cert.pem: OK"), "{o}");
    lab.tw("crl --ca-dir ca --root --out root-crl.pem").ok();
    let o = lab.sh("openssl crl -in root-crl.pem -CAfile ca/root.pem -noout");
    assert!(o.all().contains("verify OK"), "{o}");
    lab.tw("crl --ca-dir ca --all --out all.pem").ok();
    let o = lab.sh(
        "openssl verify -crl_check_all -CRLfile all.pem -CAfile ca/root.pem \
         -untrusted ca/intermediate.pem x/cert.pem",
    );
    assert!(o.stdout.contains("x/cert.pem: OK"), "{o}");

    // the root key alone in a token is refused: the intermediate's goes there first
    let o = lab
        .sh("\"$TWOWAY\" ca init --ca-dir ca2 --name R --root-key-uri 'pkcs11:token=ca;object=r2'");
    assert!(!o.success() && o.stderr.contains("--key-uri"), "{o}");
}

#[test]
fn the_token_taken_away_under_load_fails_cleanly_and_comes_back() {
    let mut ca = OnlineCa::create_with("HSM Test", "URI:spiffe://hsm.test/admin", "", softhsm, &[]);
    ca.serve();
    let csr = common::pki::openssl_csr(ca.dir.path(), "c", "", "DNS:c.example.internal");
    let body = serde_json::json!({"csr": csr, "profile": "server"}).to_string();
    let statuses = std::sync::Mutex::new(Vec::<(u16, Duration)>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let token_dir = std::fs::read_dir(ca.path("tokens"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let away = ca.path("token-away");
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let (s, _) = ca.post("/v1/sign", body.as_bytes(), Some("admin"));
                    statuses.lock().unwrap().push((s, t.elapsed()));
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        // the token goes away (as when an HSM is unplugged) and comes back
        std::fs::rename(&token_dir, &away).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        std::fs::rename(&away, &token_dir).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let seen = statuses.into_inner().unwrap();
    let count = |code: u16| seen.iter().filter(|(s, _)| *s == code).count();
    eprintln!(
        "{} requests: {} issued, {} answered 503",
        seen.len(),
        count(201),
        count(503)
    );
    for (s, took) in &seen {
        assert!(
            *s == 201 || *s == 503,
            "answered {s} while the token was away:\n{}",
            ca.log()
        );
        assert!(*took < Duration::from_secs(10), "a request waited {took:?}");
    }
    assert!(count(503) > 0, "no request saw the token away");
    // issued again after it came back, by the same running server
    let last = seen.iter().rev().take(3).all(|(s, _)| *s == 201);
    assert!(last, "issuance did not resume:\n{}", ca.log());
    assert!(
        ca.log().contains("PKCS#11"),
        "the log does not say why:\n{}",
        ca.log()
    );
}

#[test]
fn token_mistakes_are_refused_with_the_fix() {
    let lab = Lab::new("test:hsm");
    let args = softhsm(&lab);
    lab.sh(&format!("\"$TWOWAY\" ca init --ca-dir ca --name T {args}"))
        .ok();
    // a second key under the same label is refused, and nothing is left behind
    let o = lab.sh(&format!("\"$TWOWAY\" ca init --ca-dir ca2 --name T {args}"));
    assert!(!o.success());
    assert!(
        o.stderr.contains("already holds a key labelled"),
        "{}",
        o.all()
    );
    assert!(!lab.path("ca2/ca.toml").exists());
    // Ed25519 keys are not generated in the token (PKCS#11 2.40 has no EdDSA)
    let o = lab.sh(&format!(
        "\"$TWOWAY\" ca init --ca-dir ca3 --name T --key-type ed25519 {}",
        args.replace("object=intermediate", "object=ed")
    ));
    assert!(
        !o.success()
            && o.stderr
                .contains("P-256 or P-384, or RSA 2048, 3072 or 4096"),
        "{}",
        o.all()
    );
    // --key-uri without its module or PIN source
    let o = lab.sh(&format!(
        "\"$TWOWAY\" ca init --ca-dir ca4 --name T --key-uri '{URI}'"
    ));
    assert!(
        !o.success() && o.stderr.contains("--pkcs11-module"),
        "{}",
        o.all()
    );
    // a PIN inside the URI is refused
    let o = lab.sh(&format!(
        "\"$TWOWAY\" ca init --ca-dir ca5 --name T --key-uri '{URI}?pin-value={PIN}' --pkcs11-module {MODULE} --pin-file hsm.pin"
    ));
    assert!(
        !o.success() && o.stderr.contains("pin_file or pin_env"),
        "{}",
        o.all()
    );

    // a wrong PIN: the CA refuses to sign, says why, and writes nothing
    lab.sh("printf '0000\\n' > hsm.pin").ok();
    let o = lab.tw("cert issue --ca-dir ca --profile server --san DNS:x.example.internal --out x");
    assert!(!o.success());
    assert!(o.stderr.contains("C_Login"), "{}", o.all());
    assert!(!lab.path("x/cert.pem").exists());
    lab.sh(&format!("printf '%s\\n' {PIN} > hsm.pin")).ok();
    // a module that is not there
    let toml = read(lab.path("ca/ca.toml"));
    std::fs::write(
        lab.path("ca/ca.toml"),
        toml.replace(MODULE, "/nonexistent/libpkcs11.so"),
    )
    .unwrap();
    let o = lab.tw("cert issue --ca-dir ca --profile server --san DNS:x.example.internal --out x");
    assert!(!o.success());
    assert!(
        o.stderr.contains("cannot load the PKCS#11 module"),
        "{}",
        o.all()
    );
    // a URI naming no key
    std::fs::write(
        lab.path("ca/ca.toml"),
        toml.replace("object=intermediate", "object=nothing"),
    )
    .unwrap();
    let o = lab.tw("cert issue --ca-dir ca --profile server --san DNS:x.example.internal --out x");
    assert!(!o.success());
    assert!(
        o.stderr.contains("no private key labelled \"nothing\""),
        "{}",
        o.all()
    );
    assert!(!lab.path("x/cert.pem").exists());
}
