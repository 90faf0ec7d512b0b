//! EST (RFC 7030) of `twoway ca serve`, driven the way a Linux box without an EST client
//! does it: curl for the transport, openssl for keys, CSRs and reading the PKCS#7 answers
//! (`openssl pkcs7 -inform DER -print_certs`). Every issued certificate is judged by
//! `openssl verify` against the CA's chain, looked up in `twoway cert list --json` (owner,
//! source `est`), and a revoked one by `openssl ocsp` against the server. Refusals are
//! asserted as curl sees them: status, reason text, and nothing recorded.
//!
//! Only 127.0.0.1; every wait is bounded (curl `-m 10`, the harness's time limits).

mod common;

use common::online::OnlineCa;
use common::require_tool;
use serde_json::Value;

/// Replaces the commented `[est]` defaults of ca.toml with `lines` (TOML keys of `[est]`)
/// and `labels` (keys of `[est.labels]`).
fn configure_est(ca: &OnlineCa, lines: &str, labels: &str) {
    let path = ca.path("ca/ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("bootstrap_names = []"),
        "ca.toml has an [est] section"
    );
    let text = text
        .replace("bootstrap_names = []\n", &format!("{lines}\n"))
        .replace("# routers = \"device\"\n", &format!("{labels}\n"));
    std::fs::write(&path, text).unwrap();
}

/// A CA serving with the administrator of [`OnlineCa::start`].
fn serving(est_lines: &str, labels: &str) -> OnlineCa {
    require_tool("curl", "curl");
    let mut ca = OnlineCa::create("Est Test", common::online::ONLINE_ADMIN, "", &[]);
    configure_est(&ca, est_lines, labels);
    ca.serve();
    ca
}

/// `curl` against `/.well-known/est/PATH` of the running server (trusting the root) with
/// `args`; the body is written to `out`. Returns the status and the headers, lower-case.
fn curl(ca: &OnlineCa, path: &str, args: &str, out: &str) -> (u16, String) {
    let line = format!(
        "curl -sS -m 10 --cacert ca/root.pem -D {out}.headers -o {out} -w '%{{http_code}}' {args} https://{}/.well-known/est/{path}",
        ca.https
    );
    let o = ca.sh(&line).ok();
    let status = o.stdout.trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(ca.path(&format!("{out}.headers")))
        .unwrap_or_default()
        .to_ascii_lowercase();
    (status, headers)
}

/// A P-256 key `NAME.key` and a DER CSR `NAME.csr` for `san` (and `subj`, `/` for none),
/// made by openssl.
fn csr(ca: &OnlineCa, name: &str, subj: &str, san: &str) {
    ca.sh(&format!(
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -subj '{subj}' -addext 'subjectAltName={san}' -outform DER -out {name}.csr"
    ))
    .ok();
}

/// The certificates of a base64 PKCS#7 answer in `b64`, written as PEM to `pem` by
/// `openssl pkcs7 -print_certs`; what it printed.
fn certs_of(ca: &OnlineCa, b64: &str, pem: &str) -> String {
    ca.sh(&format!(
        "base64 -d {b64} > {b64}.der && openssl pkcs7 -inform DER -in {b64}.der -print_certs -out {pem} && openssl pkcs7 -inform DER -in {b64}.der -print_certs -noout"
    ))
    .ok()
    .stdout
}

/// The inventory's record of the certificate in `pem`, by the local CLI.
fn record_of(ca: &OnlineCa, pem: &str) -> Value {
    let serial = ca
        .openssl(&format!("x509 -in {pem} -noout -serial"))
        .ok()
        .stdout
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let list = ca
        .tw("cert list --ca-dir ca --json --limit 1000")
        .ok()
        .json();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["serial"].as_str() == Some(serial.as_str()))
        .unwrap_or_else(|| panic!("serial {serial} is not in the inventory: {list}"))
        .clone()
}

fn body(ca: &OnlineCa, file: &str) -> String {
    std::fs::read_to_string(ca.path(file)).unwrap_or_default()
}

#[test]
fn token_enrollment_reenrollment_serverkeygen_and_revocation_over_curl() {
    let ca = serving("bootstrap_names = []", "");
    // cacerts: the intermediate and the root, certs-only, base64.
    let (status, headers) = curl(&ca, "cacerts", "", "cacerts.b64");
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-type: application/pkcs7-mime; smime-type=certs-only")
            && headers.contains("content-transfer-encoding: base64"),
        "{headers}"
    );
    let printed = certs_of(&ca, "cacerts.b64", "cacerts.pem");
    assert!(
        printed.contains("CN = Est Test Intermediate CA")
            && printed.contains("CN = Est Test Root CA"),
        "{printed}"
    );
    // csrattrs: what to put in the CSR, base64 DER.
    let (status, headers) = curl(&ca, "csrattrs", "", "attrs.b64");
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-type: application/csrattrs"),
        "{headers}"
    );
    let attrs = ca
        .sh("base64 -d attrs.b64 | openssl asn1parse -inform DER")
        .ok()
        .stdout;
    assert!(
        attrs.contains("ecdsa-with-SHA256") && attrs.contains("prime256v1"),
        "{attrs}"
    );

    // simpleenroll with a one-time token as the HTTP Basic password, the CSR base64 with
    // line breaks (as `base64` writes it).
    let token =
        ca.token("--san DNS:sensor1.example.org --profile device --owner team-iot --cert-ttl 30d");
    csr(
        &ca,
        "sensor1",
        "/serialNumber=SN-0001",
        "DNS:sensor1.example.org",
    );
    ca.sh("base64 sensor1.csr > sensor1.csr.b64").ok();
    let (status, headers) = curl(
        &ca,
        "simpleenroll",
        &format!("-u sensor1:{token} -H 'Content-Type: application/pkcs10' --data-binary @sensor1.csr.b64"),
        "sensor1.b64",
    );
    assert_eq!(status, 200, "{}", body(&ca, "sensor1.b64"));
    assert!(
        headers.contains("application/pkcs7-mime; smime-type=certs-only"),
        "{headers}"
    );
    let printed = certs_of(&ca, "sensor1.b64", "sensor1.pem");
    assert!(printed.contains("serialNumber = SN-0001"), "{printed}");
    let (ok, why) = ca.verifies("sensor1.pem", "-purpose sslclient");
    assert!(ok, "{why}");
    let rec = record_of(&ca, "sensor1.pem");
    assert_eq!(rec["source"], "est", "{rec}");
    assert_eq!(rec["owner"], "team-iot", "{rec}");
    assert_eq!(rec["profile"], "device", "{rec}");
    assert_eq!(rec["labels"]["est_auth"], "token", "{rec}");

    // simplereenroll over mutual TLS with the current certificate: a new certificate for
    // a new key, the old one superseded.
    csr(
        &ca,
        "sensor1b",
        "/serialNumber=SN-0001",
        "DNS:sensor1.example.org",
    );
    ca.sh("base64 -w0 sensor1b.csr > sensor1b.csr.b64").ok();
    let (status, _) = curl(
        &ca,
        "simplereenroll",
        "--cert sensor1.pem --key sensor1.key --data-binary @sensor1b.csr.b64",
        "sensor1b.b64",
    );
    assert_eq!(status, 200, "{}", body(&ca, "sensor1b.b64"));
    certs_of(&ca, "sensor1b.b64", "sensor1b.pem");
    let (ok, why) = ca.verifies("sensor1b.pem", "");
    assert!(ok, "{why}");
    let new = record_of(&ca, "sensor1b.pem");
    assert_eq!(
        (
            new["source"].as_str(),
            new["owner"].as_str(),
            new["status"].as_str()
        ),
        (Some("est"), Some("team-iot"), Some("active")),
        "{new}"
    );
    let old = record_of(&ca, "sensor1.pem");
    assert_eq!(old["status"], "revoked", "{old}");
    assert_eq!(old["revocation_reason"], "superseded", "{old}");
    assert!(
        ca.ocsp("sensor1.pem").contains("sensor1.pem: revoked"),
        "the superseded certificate reads revoked over OCSP"
    );

    // The superseded certificate cannot re-enroll a third key.
    csr(&ca, "sensor1c", "/", "DNS:sensor1.example.org");
    let (status, _) = curl(
        &ca,
        "simplereenroll",
        "--cert sensor1.pem --key sensor1.key --data-binary @sensor1c.csr",
        "sensor1c.out",
    );
    assert_eq!(status, 403);
    assert!(
        body(&ca, "sensor1c.out").contains("is revoked (reason superseded)"),
        "{}",
        body(&ca, "sensor1c.out")
    );

    // Revoked by an administrator: OCSP says so, and it re-enrolls no more.
    let serial = new["serial"].as_str().unwrap().to_string();
    ca.remote(&["cert", "revoke", &serial, "--reason", "key-compromise"])
        .ok();
    let ocsp = ca.ocsp("sensor1b.pem");
    assert!(ocsp.contains("sensor1b.pem: revoked"), "{ocsp}");
    let before = ca.count_offline();
    let (status, _) = curl(
        &ca,
        "simplereenroll",
        "--cert sensor1b.pem --key sensor1b.key --data-binary @sensor1c.csr",
        "revoked.out",
    );
    assert_eq!(status, 403);
    let why = body(&ca, "revoked.out");
    assert!(
        why.contains("is revoked (reason key-compromise)") && why.contains("new token"),
        "{why}"
    );
    assert_eq!(ca.count_offline(), before, "a refusal records nothing");

    // serverkeygen: the CA makes the key; multipart/mixed with the PKCS#8 key and the
    // certificate, which must belong together.
    let token = ca.token("--san DNS:cam7.example.org --profile device --owner team-cams");
    ca.sh("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout throwaway.key -subj / -addext subjectAltName=DNS:cam7.example.org -out cam7.csr")
        .ok();
    let (status, headers) = curl(
        &ca,
        "serverkeygen",
        &format!("-u cam7:{token} --data-binary @cam7.csr"),
        "cam7.multipart",
    );
    assert_eq!(status, 200, "{}", body(&ca, "cam7.multipart"));
    assert!(
        headers.contains("content-type: multipart/mixed; boundary="),
        "{headers}"
    );
    let parts = body(&ca, "cam7.multipart");
    let (key_b64, cert_b64) = split_multipart(&parts, &headers);
    std::fs::write(ca.path("cam7.key.b64"), &key_b64).unwrap();
    std::fs::write(ca.path("cam7.b64"), cert_b64).unwrap();
    ca.sh("base64 -d cam7.key.b64 | openssl pkey -inform DER -out cam7.key")
        .ok();
    certs_of(&ca, "cam7.b64", "cam7.pem");
    let key_pub = ca.openssl("pkey -in cam7.key -pubout").ok().stdout;
    let cert_pub = ca.openssl("x509 -in cam7.pem -noout -pubkey").ok().stdout;
    let throwaway = ca.openssl("pkey -in throwaway.key -pubout").ok().stdout;
    assert_eq!(
        key_pub, cert_pub,
        "the key and the certificate belong together"
    );
    assert_ne!(cert_pub, throwaway, "the CSR's key was not certified");
    let (ok, why) = ca.verifies("cam7.pem", "");
    assert!(ok, "{why}");
    let rec = record_of(&ca, "cam7.pem");
    assert_eq!(
        (rec["source"].as_str(), rec["owner"].as_str()),
        (Some("est"), Some("team-cams"))
    );
    // The key is nowhere in the CA directory or the server's log.
    let der_b64: String = key_b64.split_whitespace().collect();
    let grep = ca.sh(&format!(
        "grep -rl '{}' ca serve-*.log || true",
        &der_b64[20..60]
    ));
    assert!(
        grep.stdout.trim().is_empty(),
        "the generated key was stored: {}",
        grep.stdout
    );
}

/// The key part and the certificate part of a `serverkeygen` answer.
fn split_multipart(body: &str, headers: &str) -> (String, String) {
    let boundary = headers
        .split("boundary=")
        .nth(1)
        .and_then(|b| b.split_whitespace().next())
        .expect("a boundary")
        .trim_matches('"')
        .to_string();
    let mut key = None;
    let mut cert = None;
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let head = head.to_ascii_lowercase();
        if head.contains("content-type: application/pkcs8") {
            key = Some(content.trim().to_string());
        } else if head.contains("smime-type=certs-only") {
            cert = Some(content.trim().to_string());
        }
    }
    (key.expect("a key part"), cert.expect("a certificate part"))
}

#[test]
fn bootstrap_device_certificates_enroll_under_a_label() {
    // A manufacturer's device CA and a device certificate it issued (with the device's
    // serial number in the subject), made by openssl.
    let mut ca = OnlineCa::create("Est Boot", common::online::ONLINE_ADMIN, "", &[]);
    ca.sh(concat!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 ",
        "-keyout mfg.key -subj '/O=Acme Devices/CN=Acme Device CA' -out ca/mfg-ca.pem ",
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign && ",
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout idevid.key ",
        "-subj '/O=Acme Devices/CN=router/serialNumber=RT-9001' -out idevid.csr && ",
        "openssl x509 -req -in idevid.csr -CA ca/mfg-ca.pem -CAkey mfg.key -days 30 -out idevid.pem ",
        "-extfile /dev/stdin <<EOF\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nEOF\n",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 ",
        "-keyout rogue.key -subj '/O=Elsewhere/CN=rogue/serialNumber=RT-9001' -out rogue.pem",
    ))
    .ok();
    configure_est(
        &ca,
        concat!(
            "bootstrap_ca = \"mfg-ca.pem\"\n",
            "bootstrap_names = [\"DNS:*.routers.example.org\"]\n",
            "bootstrap_owner = \"team-network\"",
        ),
        "routers = \"device\"\nstaff = \"user\"",
    );
    ca.serve();

    // csrattrs under the device label asks for the serial number too.
    let (status, _) = curl(&ca, "routers/csrattrs", "", "attrs.b64");
    assert_eq!(status, 200);
    let attrs = ca
        .sh("base64 -d attrs.b64 | openssl asn1parse -inform DER")
        .ok()
        .stdout;
    assert!(attrs.contains("serialNumber"), "{attrs}");

    // First enrollment by the device certificate alone (no token), under the label.
    csr(
        &ca,
        "rt",
        "/serialNumber=RT-9001",
        "DNS:rt9001.routers.example.org",
    );
    let (status, _) = curl(
        &ca,
        "routers/simpleenroll",
        "--cert idevid.pem --key idevid.key --data-binary @rt.csr",
        "rt.b64",
    );
    assert_eq!(status, 200, "{}", body(&ca, "rt.b64"));
    let printed = certs_of(&ca, "rt.b64", "rt.pem");
    assert!(printed.contains("serialNumber = RT-9001"), "{printed}");
    let (ok, why) = ca.verifies("rt.pem", "-purpose sslclient");
    assert!(ok, "{why}");
    let rec = record_of(&ca, "rt.pem");
    assert_eq!(rec["source"], "est", "{rec}");
    assert_eq!(rec["owner"], "team-network", "{rec}");
    assert_eq!(rec["profile"], "device", "{rec}");
    assert_eq!(rec["labels"]["est_auth"], "bootstrap", "{rec}");
    let device = rec["labels"]["est_device"].as_str().unwrap_or_default();
    assert!(
        device.contains("RT-9001") && device.contains("router"),
        "{rec}"
    );
    let idevid_serial = ca
        .openssl("x509 -in idevid.pem -noout -serial")
        .ok()
        .stdout
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert_eq!(
        rec["labels"]["est_device_serial"]
            .as_str()
            .map(|s| s.trim_start_matches('0')),
        Some(idevid_serial.trim_start_matches('0')),
        "{rec}"
    );
    // People find them by profile and label.
    let listed = ca
        .tw("cert list --ca-dir ca --profile device --label est_auth=bootstrap --json")
        .ok()
        .json();
    assert_eq!(listed["total"], 1, "{listed}");
    // The audit log names the device too.
    let audit = ca.tw("audit list --ca-dir ca --json").ok().stdout;
    assert!(
        audit.contains("cert.est.enroll") && audit.contains("RT-9001"),
        "{audit}"
    );

    // The enrolled certificate re-enrolls like any other.
    csr(&ca, "rt2", "/", "DNS:rt9001.routers.example.org");
    let (status, _) = curl(
        &ca,
        "simplereenroll",
        "--cert rt.pem --key rt.key --data-binary @rt2.csr",
        "rt2.b64",
    );
    assert_eq!(status, 200, "{}", body(&ca, "rt2.b64"));
    certs_of(&ca, "rt2.b64", "rt2.pem");
    let printed = ca.openssl("x509 -in rt2.pem -noout -subject").ok().stdout;
    assert!(
        printed.contains("RT-9001"),
        "the serial number stays: {printed}"
    );

    let before = ca.count_offline();
    // A name outside bootstrap_names.
    csr(&ca, "far", "/", "DNS:www.example.org");
    let (status, _) = curl(
        &ca,
        "routers/simpleenroll",
        "--cert idevid.pem --key idevid.key --data-binary @far.csr",
        "far.out",
    );
    assert_eq!(status, 403);
    assert!(
        body(&ca, "far.out").contains("bootstrap_names"),
        "{}",
        body(&ca, "far.out")
    );
    // Another device's serial number.
    csr(
        &ca,
        "other",
        "/serialNumber=RT-0002",
        "DNS:rt2.routers.example.org",
    );
    let (status, _) = curl(
        &ca,
        "routers/simpleenroll",
        "--cert idevid.pem --key idevid.key --data-binary @other.csr",
        "other.out",
    );
    assert_eq!(status, 403);
    assert!(
        body(&ca, "other.out").contains("RT-9001"),
        "{}",
        body(&ca, "other.out")
    );
    // A certificate from a CA that is not the bootstrap CA.
    let (status, _) = curl(
        &ca,
        "routers/simpleenroll",
        "--cert rogue.pem --key rogue.key --data-binary @rt.csr",
        "rogue.out",
    );
    assert_eq!(status, 403);
    assert!(
        body(&ca, "rogue.out").contains("bootstrap_ca"),
        "{}",
        body(&ca, "rogue.out")
    );
    // An unknown label.
    let (status, _) = curl(
        &ca,
        "printers/simpleenroll",
        "--cert idevid.pem --key idevid.key --data-binary @rt.csr",
        "label.out",
    );
    assert_eq!(status, 404);
    assert!(
        body(&ca, "label.out").contains("routers"),
        "{}",
        body(&ca, "label.out")
    );
    // A token for another profile than the label's.
    let token = ca.token("--san DNS:x.routers.example.org --profile client");
    csr(&ca, "x", "/", "DNS:x.routers.example.org");
    let (status, _) = curl(
        &ca,
        "routers/simpleenroll",
        &format!("-u x:{token} --data-binary @x.csr"),
        "x.out",
    );
    assert_eq!(status, 403);
    assert!(
        body(&ca, "x.out").contains("--profile device"),
        "{}",
        body(&ca, "x.out")
    );
    assert_eq!(ca.count_offline(), before, "refusals record nothing");
}

#[test]
fn bad_requests_get_a_status_and_a_reason_and_record_nothing() {
    let ca = serving("bootstrap_names = []", "");
    let token = ca.token("--san DNS:box1.example.org --profile device --owner team-iot");
    csr(&ca, "box1", "/", "DNS:box1.example.org");
    csr(
        &ca,
        "greedy",
        "/",
        "DNS:box1.example.org,DNS:bank.example.org",
    );
    ca.sh("base64 box1.csr > box1.csr.b64; openssl req -inform DER -in box1.csr -out box1.csr.pem; head -c 300 /dev/urandom > garbage.bin; head -c 200000 /dev/zero | base64 > huge.b64")
        .ok();
    let before = ca.count_offline();
    let cases: [(&str, String, u16, &str); 7] = [
        (
            "huge",
            format!("-u box1:{token} --data-binary @huge.b64"),
            413,
            "larger than 65536 bytes",
        ),
        // no credentials: 401 with a Basic challenge
        ("none", "--data-binary @box1.csr.b64".into(), 401, "HTTP Basic password"),
        (
            "wrong",
            "-u box1:twt_0000000000000000000000000000000000000000000000000000000000000000 --data-binary @box1.csr.b64".into(),
            403,
            "unknown enrollment token",
        ),
        (
            "greedy",
            format!("-u box1:{token} --data-binary @greedy.csr"),
            403,
            "bank.example.org, which the enrollment token does not allow",
        ),
        ("garbage", format!("-u box1:{token} --data-binary @garbage.bin"), 400, "base64"),
        (
            "text",
            format!("-u box1:{token} --data-binary 'not a csr at all'"),
            400,
            "base64",
        ),
        (
            "badauth",
            "-H 'Authorization: Bearer x' --data-binary @box1.csr.b64".into(),
            401,
            "HTTP Basic",
        ),
    ];
    for (name, args, want, reason) in &cases {
        let (status, headers) = curl(&ca, "simpleenroll", args, &format!("{name}.out"));
        let text = body(&ca, &format!("{name}.out"));
        assert_eq!(status, *want, "{name}: {text}");
        assert!(text.contains(reason), "{name}: {text}");
        assert!(
            headers.contains("content-type: text/plain"),
            "{name}: {headers}"
        );
        if *want == 401 {
            assert!(
                headers.contains("www-authenticate: basic"),
                "{name}: {headers}"
            );
        }
    }
    assert_eq!(ca.count_offline(), before, "no refusal recorded anything");

    // A PEM-armoured CSR with a wrong Content-Transfer-Encoding is taken, once.
    let (status, _) = curl(
        &ca,
        "simpleenroll",
        &format!(
            "-u box1:{token} -H 'Content-Transfer-Encoding: 7bit' --data-binary @box1.csr.pem"
        ),
        "box1.b64",
    );
    assert_eq!(status, 200, "{}", body(&ca, "box1.b64"));
    certs_of(&ca, "box1.b64", "box1.pem");
    assert!(ca.verifies("box1.pem", "").0);
    // The token is spent.
    let (status, _) = curl(
        &ca,
        "simpleenroll",
        &format!("-u box1:{token} --data-binary @box1.csr.b64"),
        "reused.out",
    );
    assert_eq!(status, 403);
    assert!(
        body(&ca, "reused.out").contains("already used"),
        "{}",
        body(&ca, "reused.out")
    );
    // Re-enrollment without a certificate.
    let (status, _) = curl(
        &ca,
        "simplereenroll",
        "--data-binary @box1.csr.b64",
        "noauth.out",
    );
    assert_eq!(status, 401);
    assert!(
        body(&ca, "noauth.out").contains("mutual TLS"),
        "{}",
        body(&ca, "noauth.out")
    );
    // Wrong method, unknown operation.
    let (status, _) = curl(&ca, "simpleenroll", "", "get.out");
    assert_eq!(status, 405);
    let (status, _) = curl(&ca, "fullcmc", "--data-binary @box1.csr.b64", "cmc.out");
    assert_eq!(status, 404);
    assert_eq!(
        ca.count_offline(),
        before + 1,
        "only the one enrollment was recorded"
    );

    let metrics = ca.metrics();
    for code in [
        "est_unauthenticated",
        "est_token_unknown",
        "est_token_used",
        "est_name_not_allowed",
        "est_bad_body",
        "est_body_too_large",
    ] {
        assert!(metrics.contains(code), "{code} counted:\n{metrics}");
    }
}
