//! SCEP (RFC 8894) at `/scep` of `twoway ca serve`, driven by real clients: Debian's
//! `scepclient` (micromdm) enrolls with a one-time token as challenge password (PKCSReq,
//! plain HTTP) and renews with its certificate (RenewalReq, over HTTPS); certmonger's
//! `scep-submit` reads GetCACaps and GetCACert. Each certificate verifies with openssl,
//! is in the inventory with source `scep`, the token's owner and the device's subject,
//! and a revoked one reads `revoked` from `openssl ocsp`. Bad input is asserted from the
//! client's side: each refusal is the failInfo the client prints, counted in /metrics,
//! and records nothing.
//!
//! scepclient 2.1 always sends DES-CBC and SHA-1 (go.mozilla.org/pkcs7's defaults), so
//! its CA sets `[scep] allow_legacy = true`; with it off the same client gets badAlg.
//! Only 127.0.0.1; every client run is bounded in time.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::http::metric_sum;
use common::online::{OnlineCa, ONLINE_ADMIN};
use common::{require_tool, run_with_timeout, Output};
use serde_json::Value;

/// The longest a client run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A CA with `[scep]` set (`scep` holds its keys) serving, made by `ca init` with `init`
/// arguments.
fn scep_ca(scep: &str, init: &str) -> OnlineCa {
    // `ca init … INIT`: the harness runs `PREFIX "$TWOWAY" ca init …`; a shell function
    // as the prefix appends the arguments.
    let prefix = format!("f() {{ \"$@\" {init}; }}; f");
    let mut ca = OnlineCa::create("SCEP Test", ONLINE_ADMIN, &prefix, &[]);
    let path = ca.path("ca/ca.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n[scep]\nenabled = true\n{scep}\n"));
    std::fs::write(&path, text).unwrap();
    ca.serve();
    ca
}

fn scep_url(ca: &OnlineCa) -> String {
    format!("http://{}/scep", ca.http)
}

/// The SHA-256 fingerprint of a PEM certificate file in the lab.
fn fingerprint(ca: &OnlineCa, pem: &str) -> String {
    let o = ca
        .openssl(&format!("x509 -in {pem} -noout -fingerprint -sha256"))
        .ok();
    o.line()
        .split_once('=')
        .map(|(_, f)| f.replace(':', ""))
        .unwrap_or_default()
}

/// `scepclient` for the device whose files are in `dir` (key `dir/dev.key`, certificate
/// `dir/dev.pem`: a PKCSReq when it does not exist, else a RenewalReq), encrypting to the
/// certificate of GetCACert whose SHA-256 is `recipient`.
fn scepclient(
    ca: &OnlineCa,
    url: &str,
    dir: &str,
    cn: &str,
    challenge: &str,
    recipient: &str,
) -> Output {
    let bin = require_tool("scepclient", "scep");
    std::fs::create_dir_all(ca.path(dir)).unwrap();
    let (key, cert) = (format!("{dir}/dev.key"), format!("{dir}/dev.pem"));
    let mut cmd = Command::new(bin);
    cmd.current_dir(ca.path(""))
        .env("SSL_CERT_FILE", ca.path("ca/root.pem"))
        .args([
            "-server-url",
            url,
            "-private-key",
            &key,
            "-certificate",
            &cert,
        ])
        .args(["-cn", cn, "-ca-fingerprint", recipient]);
    if !challenge.is_empty() {
        cmd.args(["-challenge", challenge]);
    }
    run_with_timeout(&mut cmd, None, CLIENT_TIMEOUT)
}

/// The inventory record with serial `serial` (`cert list --json`).
#[track_caller]
fn record(ca: &OnlineCa, serial: &str) -> Value {
    let list = ca
        .tw("cert list --ca-dir ca --json --limit 1000")
        .ok()
        .json();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["serial"].as_str() == Some(serial))
        .cloned()
        .unwrap_or_else(|| panic!("serial {serial} is not in the inventory: {list}"))
}

fn serial_of(ca: &OnlineCa, pem: &str) -> String {
    let o = ca.openssl(&format!("x509 -in {pem} -noout -serial")).ok();
    o.line().trim_start_matches("serial=").to_ascii_lowercase()
}

/// `openssl ocsp` until it reads `want` (the revocation reaches the server's OCSP cache
/// through the store's counter, polled every 250 ms), 5 s at most.
#[track_caller]
fn ocsp_reads(ca: &OnlineCa, cert: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ca.ocsp(cert);
        if out.contains(&format!("{cert}: {want}")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "openssl ocsp never read {want}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn scepclient_enrolls_and_renews_certmonger_reads_caps_and_certs() {
    let ca = scep_ca("allow_legacy = true", "");
    let url = scep_url(&ca);
    let https_url = format!("https://{}/scep/pkiclient.exe", ca.https);

    // certmonger's SCEP helper: GetCACaps and GetCACert
    let submit = require_tool("/usr/lib/certmonger/scep-submit", "certmonger");
    let caps = common::run_tool(submit.to_str().unwrap(), &["-u", &url, "-c"]).ok();
    let caps: Vec<&str> = caps.stdout.lines().filter(|l| !l.is_empty()).collect();
    for want in [
        "POSTPKIOperation",
        "SHA-256",
        "SHA-512",
        "AES",
        "SCEPStandard",
        "Renewal",
    ] {
        assert!(caps.contains(&want), "GetCACaps lacks {want}: {caps:?}");
    }
    assert!(!caps.contains(&"GetNextCACert"), "{caps:?}");
    let certs = common::run_tool(submit.to_str().unwrap(), &["-u", &url, "-C"]).ok();
    std::fs::write(ca.path("getcacert.pem"), &certs.stdout).unwrap();
    let ra = std::fs::read_to_string(ca.path("ca/scep-ra.pem")).unwrap();
    let inter = std::fs::read_to_string(ca.path("ca/intermediate.pem")).unwrap();
    for (what, pem) in [("RA", &ra), ("intermediate", &inter)] {
        assert!(
            certs.stdout.contains(pem.trim()),
            "GetCACert lacks the {what}:\n{}",
            certs.stdout
        );
    }
    let ra_fp = fingerprint(&ca, "ca/scep-ra.pem");
    let o = ca.openssl("x509 -in ca/scep-ra.pem -noout -text").ok();
    assert!(
        o.stdout.contains("Key Encipherment") && o.stdout.contains("rsaEncryption"),
        "{o}"
    );
    let ra_mode = std::fs::metadata(ca.path("ca/scep-ra.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&ra_mode.permissions()) & 0o777,
        0o600
    );

    // PKCSReq over plain HTTP with a one-time token
    let token = ca.token("--san DNS:router1.scep.test --profile client --owner netops");
    scepclient(&ca, &url, "router1", "router1.scep.test", &token, &ra_fp).ok();
    let (ok, why) = ca.verifies("router1/dev.pem", "-purpose sslclient");
    assert!(ok, "{why}");
    let first = serial_of(&ca, "router1/dev.pem");
    let rec = record(&ca, &first);
    assert_eq!(rec["source"], "scep", "{rec}");
    assert_eq!(rec["owner"], "netops", "{rec}");
    assert_eq!(rec["sans"][0], "DNS:router1.scep.test", "{rec}");
    let device = rec["labels"]["device"].as_str().unwrap_or_default();
    assert!(
        device.contains("CN=router1.scep.test") && device.contains("O=scep-client"),
        "{rec}"
    );
    ocsp_reads(&ca, "router1/dev.pem", "good");

    // RenewalReq over HTTPS, signed by the current certificate
    let old = std::fs::read(ca.path("router1/dev.pem")).unwrap();
    std::fs::write(ca.path("router1/first.pem"), &old).unwrap();
    scepclient(&ca, &https_url, "router1", "router1.scep.test", "", &ra_fp).ok();
    let second = serial_of(&ca, "router1/dev.pem");
    assert_ne!(first, second, "the renewal returned the same certificate");
    let (ok, why) = ca.verifies("router1/dev.pem", "-purpose sslclient");
    assert!(ok, "{why}");
    let rec = record(&ca, &second);
    assert_eq!(
        (rec["source"].as_str(), rec["owner"].as_str()),
        (Some("scep"), Some("netops")),
        "{rec}"
    );
    let old_rec = record(&ca, &first);
    assert_eq!(old_rec["status"], "revoked", "{old_rec}");
    ocsp_reads(&ca, "router1/first.pem", "revoked");

    // revoked by a person: OCSP says so
    ca.tw(&format!("cert revoke {second} --ca-dir ca")).ok();
    ocsp_reads(&ca, "router1/dev.pem", "revoked");

    let m = ca.metrics();
    assert!(
        metric_sum(&m, "twoway_scep_total", &["legacy=\"des\""]) >= 2.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "twoway_scep_total", &["legacy=\"sha1\""]) >= 2.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "twoway_ca_issued_total", &["scep"]) >= 2.0,
        "{m}"
    );
}

/// Runs `f`, which must leave the inventory and the audit log as they were.
#[track_caller]
fn records_nothing(ca: &OnlineCa, what: &str, f: impl FnOnce() -> Output) -> Output {
    let before = ca.recorded("ca");
    let out = f();
    let after = ca.recorded("ca");
    assert_eq!(
        before.total, after.total,
        "{what}: a certificate was recorded:\n{out}"
    );
    assert_eq!(
        before.audit.len(),
        after.audit.len(),
        "{what}: the audit log grew:\n{out}"
    );
    out
}

#[track_caller]
fn fails_with(out: Output, fail_info: &str) {
    let out = out.fails();
    assert!(
        out.all().contains(&format!("failInfo: {fail_info}")),
        "expected failInfo {fail_info}:\n{out}"
    );
}

#[test]
fn bad_scep_requests_get_failures_and_record_nothing() {
    // An RSA CA, so that the intermediate can be (wrongly) chosen as the recipient.
    let mut ca = scep_ca("allow_legacy = false", "--key-type rsa2048");
    let url = scep_url(&ca);
    let ra_fp = fingerprint(&ca, "ca/scep-ra.pem");
    let token = ca.token("--san DNS:dev1.scep.test --profile client --owner iot");

    // scepclient's DES and SHA-1 with allow_legacy off: badAlg, and the token still unused
    let out = records_nothing(&ca, "legacy", || {
        scepclient(&ca, &url, "legacy", "dev1.scep.test", &token, &ra_fp)
    });
    fails_with(out, "badAlg");
    let caps = ca
        .tool_args(
            "curl",
            &["-sS", "-m", "5", &format!("{url}?operation=GetCACaps")],
        )
        .ok();
    assert!(
        !caps.stdout.contains("DES3") && !caps.stdout.contains("SHA-1"),
        "{caps}"
    );
    let m = ca.metrics();
    assert!(
        metric_sum(&m, "twoway_scep_total", &["fail_info=\"badAlg\""]) >= 1.0,
        "{m}"
    );

    // from here on the legacy setting is on (scepclient sends nothing else)
    let path = ca.path("ca/ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("allow_legacy = false", "allow_legacy = true"),
    )
    .unwrap();
    ca.restart(Duration::from_millis(100));
    let ra_fp2 = fingerprint(&ca, "ca/scep-ra.pem");
    assert_eq!(ra_fp, ra_fp2, "a restart made a new RA");

    // a wrong challenge
    let out = records_nothing(&ca, "wrong challenge", || {
        scepclient(&ca, &url, "wrong", "dev1.scep.test", "twt_00112233", &ra_fp)
    });
    fails_with(out, "badRequest");

    // no challenge at all
    let out = records_nothing(&ca, "no challenge", || {
        scepclient(&ca, &url, "none", "dev1.scep.test", "", &ra_fp)
    });
    fails_with(out, "badRequest");

    // a CN the token does not bind
    let out = records_nothing(&ca, "other CN", || {
        scepclient(&ca, &url, "othercn", "dev2.scep.test", &token, &ra_fp)
    });
    fails_with(out, "badRequest");

    // a SAN the token does not bind: scepclient sends the CSR it finds beside the key
    std::fs::create_dir_all(ca.path("othersan")).unwrap();
    ca.openssl("genrsa -traditional -out othersan/dev.key 2048")
        .ok();
    std::fs::write(
        ca.path("othersan/req.cnf"),
        format!("[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\n[dn]\nCN = dev1.scep.test\n[attrs]\nchallengePassword = {token}\n"),
    )
    .unwrap();
    ca.openssl("req -new -key othersan/dev.key -config othersan/req.cnf -addext subjectAltName=DNS:dev1.scep.test,DNS:evil.scep.test -out othersan/csr.pem").ok();
    let out = records_nothing(&ca, "other SAN", || {
        scepclient(&ca, &url, "othersan", "dev1.scep.test", &token, &ra_fp)
    });
    fails_with(out, "badRequest");

    // encrypted to another certificate (the intermediate, also RSA here): the CertRep
    // FAILURE is signed by the RA, which scepclient 2.1 (checking the answer against the
    // certificate it encrypted to) cannot verify, so it prints that instead of the failInfo
    let inter_fp = fingerprint(&ca, "ca/intermediate.pem");
    let out = records_nothing(&ca, "wrong recipient", || {
        scepclient(&ca, &url, "recipient", "dev1.scep.test", &token, &inter_fp)
    })
    .fails();
    assert!(out.stdout.contains("No certificate for signer"), "{out}");
    assert!(
        ca.log().contains("encrypted to another certificate"),
        "{}",
        ca.log()
    );

    // the token works once …
    scepclient(&ca, &url, "dev1", "dev1.scep.test", &token, &ra_fp).ok();
    let (ok, why) = ca.verifies("dev1/dev.pem", "");
    assert!(ok, "{why}");
    // … and not for a second device
    let out = records_nothing(&ca, "reused challenge", || {
        scepclient(&ca, &url, "dev1b", "dev1.scep.test", &token, &ra_fp)
    });
    fails_with(out, "badRequest");

    // a RenewalReq signed by a certificate this CA never issued
    std::fs::create_dir_all(ca.path("stranger")).unwrap();
    ca.openssl("genrsa -traditional -out stranger/dev.key 2048")
        .ok();
    ca.openssl("req -x509 -new -key stranger/dev.key -subj /CN=dev1.scep.test -days 2 -out stranger/dev.pem").ok();
    let out = records_nothing(&ca, "unknown signer", || {
        scepclient(&ca, &url, "stranger", "dev1.scep.test", "", &ra_fp)
    });
    fails_with(out, "badCertID");

    // a RenewalReq signed by a revoked certificate
    let serial = serial_of(&ca, "dev1/dev.pem");
    ca.tw(&format!("cert revoke {serial} --ca-dir ca")).ok();
    let out = records_nothing(&ca, "revoked signer", || {
        scepclient(&ca, &url, "dev1", "dev1.scep.test", "", &ra_fp)
    });
    fails_with(out, "badCertID");

    // garbage, by POST and by GET: no CertRep can be addressed, a 400 says why
    let garbage = ca.path("garbage.bin");
    std::fs::write(&garbage, b"\x30\x82\x01\x00not a pkiMessage").unwrap();
    let post = format!("{url}?operation=PKIOperation");
    let data = format!("@{}", garbage.display());
    let out = records_nothing(&ca, "garbage", || {
        ca.tool_args(
            "curl",
            &[
                "-sS",
                "-m",
                "5",
                "-w",
                "\n%{http_code}",
                "--data-binary",
                &data,
                &post,
            ],
        )
    });
    assert!(
        out.stdout.ends_with("\n400") && out.stdout.contains("malformed SCEP message"),
        "{out}"
    );
    let get = format!("{url}?operation=PKIOperation&message=%%%");
    let out = ca
        .tool_args("curl", &["-sS", "-m", "5", "-w", "\n%{http_code}", &get])
        .ok();
    assert!(out.stdout.ends_with("\n400"), "{out}");
    let out = ca
        .tool_args(
            "curl",
            &[
                "-sS",
                "-m",
                "5",
                "-w",
                "\n%{http_code}",
                &format!("{url}?operation=Nope"),
            ],
        )
        .ok();
    assert!(
        out.stdout.ends_with("\n400") && out.stdout.contains("GetCACaps"),
        "{out}"
    );

    let m = ca.metrics();
    for (fi, n) in [
        ("badRequest", 5.0),
        ("badMessageCheck", 1.0),
        ("badCertId", 2.0),
    ] {
        let got = metric_sum(&m, "twoway_scep_total", &[&format!("fail_info=\"{fi}\"")]);
        assert!(got >= n, "{fi}: {got} < {n}\n{m}");
    }
    assert!(
        metric_sum(&m, "twoway_scep_total", &["outcome=\"malformed\""]) >= 1.0,
        "{m}"
    );
}

#[test]
fn the_ra_is_replaced_at_two_thirds_of_its_life() {
    let mut ca = OnlineCa::create("SCEP Test", ONLINE_ADMIN, "", &[]);
    let path = ca.path("ca/ca.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[scep]\nenabled = true\nra_ttl = \"30d\"\n");
    std::fs::write(&path, text).unwrap();
    let clock = ca.path("clock");
    std::fs::write(&clock, "+0").unwrap();
    ca.serve_env(&common::faked_clock(&clock));
    let first = fingerprint(&ca, "ca/scep-ra.pem");
    let url = scep_url(&ca);
    let get = |ca: &OnlineCa| {
        ca.tool_args(
            "curl",
            &[
                "-sS",
                "-m",
                "5",
                "-o",
                "getcacert.der",
                &format!("{url}?operation=GetCACert"),
            ],
        )
        .ok();
        ca.openssl("pkcs7 -inform DER -in getcacert.der -print_certs")
            .ok()
            .stdout
    };
    let ra_pem = std::fs::read_to_string(ca.path("ca/scep-ra.pem")).unwrap();
    assert!(get(&ca).contains(ra_pem.trim()));

    // 21 of 30 days later (past two thirds) the maintenance loop (every 10 s) replaces it
    std::fs::write(&clock, "+21d").unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    let second = loop {
        let fp = fingerprint(&ca, "ca/scep-ra.pem");
        if fp != first {
            break fp;
        }
        assert!(
            Instant::now() < deadline,
            "the RA was not replaced:\n{}",
            ca.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_ne!(first, second);
    let ra_pem = std::fs::read_to_string(ca.path("ca/scep-ra.pem")).unwrap();
    assert!(
        get(&ca).contains(ra_pem.trim()),
        "GetCACert still answers the old RA"
    );
    let mode = std::fs::metadata(ca.path("ca/scep-ra.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let list = ca
        .tw("cert list --ca-dir ca --json --profile scep-ra")
        .ok()
        .json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let statuses: Vec<&str> = items.iter().filter_map(|i| i["status"].as_str()).collect();
    assert!(
        statuses.contains(&"active") && statuses.contains(&"revoked"),
        "{list}"
    );
}
