//! The online CA's API end to end: enrollment by the agent with OCSP and the CRL following
//! a remote revocation, the plain listener's HTTP/1, the refusals of enrollment and signing
//! (each recording nothing), authorization of revocation and listing, and the remote
//! `cert sign`. The real `twoway` binary as server, agent and remote CLI, with openssl and
//! curl as independent peers. Only 127.0.0.1; every wait is bounded.

mod common;

use common::http::{exchange_until_closed, sample};
use common::online::OnlineCa;
use common::pki::{cert_info, openssl_csr, pem_encode, serial_of};
use common::{mode, read, write};
use serde_json::json;
use std::time::Duration;

#[test]
fn agent_enrolls_and_ocsp_and_crl_follow_a_remote_revocation() {
    let ca = OnlineCa::start(&[]);
    let token = ca.token("--san DNS:api.example.internal --profile server --owner team-api");
    assert!(token.starts_with("twt_"), "{token}");
    ca.agent_once(Some(&token), "DNS:api.example.internal", "api")
        .ok();
    for f in ["cert.pem", "chain.pem", "key.pem", "ca.pem"] {
        assert!(ca.path("api").join(f).exists(), "{f}");
    }
    assert_eq!(mode(&ca.path("api/key.pem")), 0o600);
    // 24h workload certificates by default
    let info = cert_info(&std::fs::read(ca.path("api/cert.pem")).unwrap());
    assert_eq!((info.not_after - info.not_before).whole_hours(), 24);
    // the certificate verifies with openssl against the root
    let (verified, text) = ca.verifies("api/cert.pem", "");
    assert!(verified, "{text}");
    // a second --once run has nothing to do
    ca.agent_once(None, "DNS:api.example.internal", "api").ok();

    assert!(ca.ocsp("api/cert.pem").contains("api/cert.pem: good"));
    let serial = serial_of(&ca.path("api/cert.pem"));
    ca.remote(&["cert", "revoke", &serial, "--reason", "key-compromise"])
        .ok();
    let out = ca.ocsp("api/cert.pem");
    assert!(out.contains("api/cert.pem: revoked"), "{out}");
    assert!(out.contains("keyCompromise"), "{out}");
    // the CRL, DER over plain HTTP, lists the serial
    let text = ca.crl_text();
    assert!(text.contains(&serial), "{text}");
    // the root's CRL beside it, for verifiers that check every CA of the chain
    let url = format!("http://{}/crl/root", ca.http);
    ca.tool_args(
        "curl",
        &["-sS", "--max-time", "30", "-o", "root-crl.der", &url],
    )
    .ok();
    let root = ca
        .openssl("crl -inform DER -in root-crl.der -noout -issuer -nextupdate")
        .ok()
        .stdout;
    assert!(root.contains("Root CA"), "{root}");
    // without root.crl (never copied back from where the root key is): 503, saying how
    std::fs::remove_file(ca.path("ca/root.crl")).unwrap();
    let body = ca
        .tool_args(
            "curl",
            &["-sS", "--max-time", "30", "-w", "\n%{http_code}", &url],
        )
        .ok()
        .stdout;
    assert!(body.ends_with("\n503"), "{body}");
    assert!(body.contains("twoway crl --root"), "{body}");
    // an unknown serial is "unknown" to OCSP: a cert from another CA's intermediate name
    let metrics = ca.metrics();
    assert!(
        metrics.contains("twoway_ca_ocsp_responses_total{status=\"revoked\"}"),
        "{metrics}"
    );
    // the enrollment went through the committer: one commit carried it
    for series in [
        "twoway_ca_issuance_committed_total",
        "twoway_ca_issuance_commits_total",
    ] {
        assert!(sample(&metrics, series).unwrap_or(0.0) >= 1.0, "{metrics}");
    }
}

#[test]
fn plain_listener_speaks_http1_to_curl_openssl_and_raw_clients() {
    let ca = OnlineCa::start(&[]);
    ca.tw("cert issue --ca-dir ca --profile server --san DNS:web.example.internal --out web")
        .ok();
    // openssl ocsp verifies the answer (the responder's certificate rides in it; openssl
    // checks the delegation against -issuer)
    assert!(ca.ocsp("web/cert.pem").contains("web/cert.pem: good"));
    ca.openssl("ocsp -issuer ca/intermediate.pem -cert web/cert.pem -no_nonce -reqout req.der")
        .ok();
    let url = format!("http://{}/ocsp", ca.http);
    // curl: POST with Expect: 100-continue, then HTTP/1.0, then HEAD, on the plain listener
    for extra in [&["-H", "Expect: 100-continue"][..], &["-0"][..]] {
        let mut args = vec!["-sS", "-f", "--data-binary", "@req.der", "-H"];
        args.extend([
            "Content-Type: application/ocsp-request",
            "-o",
            "resp.der",
            &url,
        ]);
        args.extend_from_slice(extra);
        let c = ca.tool_args("curl", &args);
        assert!(c.success(), "curl {extra:?}: {}", c.stderr);
        let v = ca.openssl(
            "ocsp -respin resp.der -issuer ca/intermediate.pem -cert web/cert.pem \
             -CAfile ca/root.pem",
        );
        let out = format!("{}{}", v.stdout, v.stderr);
        assert!(
            out.contains("Response verify OK") && out.contains(": good"),
            "{extra:?}: {out}"
        );
    }
    let roots = format!("http://{}/roots.pem", ca.http);
    let head = ca.tool_args("curl", &["-sS", "-I", &roots]);
    let head = head.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let root_len = std::fs::metadata(ca.path("ca/root.pem")).unwrap().len();
    assert!(
        head.contains(&format!("content-length: {root_len}")),
        "{head}"
    );
    // two pipelined requests on one connection: two answers, in order; the second asks
    // to close
    let (both, closed) = exchange_until_closed(
        ca.http,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /roots.pem HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    let first = both.find("HTTP/1.1 200 OK").unwrap();
    let second = both.rfind("HTTP/1.1 200 OK").unwrap();
    assert!(first < second, "{both}");
    assert!(
        both.contains("ok\n") && both.contains("BEGIN CERTIFICATE"),
        "{both}"
    );
    assert!(
        both.to_ascii_lowercase().contains("connection: close"),
        "{both}"
    );
    assert!(
        closed,
        "the server closes after a Connection: close request"
    );
    // refusals: a status, a JSON error naming the fix, and the connection closed
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        (
            "chunked",
            b"POST /ocsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 411",
            "length_required",
        ),
        (
            "too large",
            // the body is sent too, as by a client that does not wait for an early answer
            [
                &b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n"[..],
                &vec![b'x'; 300_000],
            ]
            .concat(),
            "HTTP/1.1 413",
            "body_too_large",
        ),
        (
            "huge head",
            format!("GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            "HTTP/1.1 431",
            "head_too_large",
        ),
        (
            "garbage",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "bad_request",
        ),
        (
            "API route",
            b"GET /v1/certificates HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 404",
            "use HTTPS",
        ),
    ];
    for (what, raw, status, needle) in cases {
        let (got, closed) = exchange_until_closed(ca.http, &raw, Duration::from_secs(5));
        assert!(got.starts_with(status), "{what}: {got}");
        assert!(closed, "{what}: the connection stayed open");
        assert!(got.contains(needle), "{what}: {got}");
    }
    // the listener still answers, and the refusals were counted
    let m = ca.metrics();
    assert_eq!(
        sample(&m, "twoway_ca_errors_total{code=\"length_required\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "twoway_ca_ocsp_cache_hits_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[test]
fn enrollment_refuses_bad_input_and_records_nothing() {
    let ca = OnlineCa::start(&[("enroll_rate", "1"), ("enroll_burst", "40")]);
    let good_csr = openssl_csr(ca.dir.path(), "a", "", "DNS:a.example.internal");
    let enroll = |token: &str, csr: &str| {
        ca.post_json("/v1/enroll", &json!({"token": token, "csr": csr}), None)
    };
    let before = ca.count();

    // unknown token
    let (s, v) = enroll("twt_nope", &good_csr);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("token_unknown")),
        "{v}"
    );
    // names outside the token
    let tok = ca.token("--san DNS:b.example.internal --profile server");
    let (s, v) = enroll(&tok, &good_csr);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("name_not_allowed")),
        "{v}"
    );
    // a CSR whose signature does not verify
    let der = ca.openssl("req -in a.csr -outform DER").stdout_bytes;
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x01;
    let bad_pem = pem_encode("CERTIFICATE REQUEST", &bad);
    let tok_a = ca.token("--san DNS:a.example.internal --profile server");
    let (s, v) = enroll(&tok_a, &bad_pem);
    assert_eq!(s, 400, "{v}");
    let code = v["error"]["code"].as_str().unwrap_or_default();
    assert!(code == "bad_csr_signature" || code == "bad_csr", "{v}");
    // a garbage CSR
    let (s, v) = enroll(&tok_a, "not a csr");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_csr")),
        "{v}"
    );
    // malformed JSON
    let (s, v) = ca.post("/v1/enroll", b"{\"token\": ", None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    // oversized body
    let big = vec![b'a'; 70 * 1024];
    let (s, v) = ca.post("/v1/enroll", &big, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    // an expired token
    let tok_exp = ca.token("--san DNS:a.example.internal --profile server --ttl 1s");
    std::thread::sleep(Duration::from_millis(2100));
    let (s, v) = enroll(&tok_exp, &good_csr);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("token_expired")),
        "{v}"
    );
    assert_eq!(
        ca.count(),
        before,
        "nothing recorded by refused enrollments"
    );

    // the happy path, then the token reused
    let (s, v) = enroll(&tok_a, &good_csr);
    assert_eq!(s, 201, "{v}");
    assert!(
        v["chain"]
            .as_str()
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    );
    assert_eq!(ca.count(), before + 1);
    let (s, v) = enroll(&tok_a, &good_csr);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("token_used")),
        "{v}"
    );
    assert_eq!(ca.count(), before + 1);

    // wrong method, unknown route
    let (o, _) = ca.curl_https("/v1/enroll", &[]);
    assert!(o.stdout.ends_with("405"));

    // flooding: one curl, many requests; the bucket (burst 40, 1/s) runs dry
    let body = json!({"token": "twt_nope", "csr": good_csr}).to_string();
    write(ca.path("flood.json"), body);
    let url = format!("{}/v1/enroll", ca.url());
    // 100 requests, 20 at a time: far more than the burst plus what refills meanwhile,
    // even on a slow machine.
    let mut args = vec![
        "-sS",
        "-Z",
        "--parallel-max",
        "20",
        "--cacert",
        "ca/root.pem",
    ];
    args.extend(["--data-binary", "@flood.json"]);
    for _ in 0..100 {
        args.push(&url);
    }
    let o = ca.tool_args("curl", &args);
    let limited = o.stdout.matches("\"rate_limited\"").count();
    assert!(limited >= 5, "{}", o.stdout);
    let metrics = ca.metrics();
    for code in [
        "token_unknown",
        "token_used",
        "token_expired",
        "name_not_allowed",
        "bad_csr",
        "malformed_json",
        "body_too_large",
        "rate_limited",
    ] {
        assert!(
            metrics.contains(&format!("twoway_ca_errors_total{{code=\"{code}\"}}")),
            "{code}\n{metrics}"
        );
    }
    assert_eq!(ca.count(), before + 1);
}

#[test]
fn revocation_and_listing_are_authorized() {
    let ca = OnlineCa::start(&[]);
    ca.enroll_agent("DNS:h1.example.internal", "h1", "--profile client");
    ca.enroll_agent("DNS:h2.example.internal", "h2", "--profile client");
    let (s1, s2) = (
        serial_of(&ca.path("h1/cert.pem")),
        serial_of(&ca.path("h2/cert.pem")),
    );
    let revoke = |serial: &str, who: Option<&str>| {
        ca.post_json("/v1/revoke", &json!({"serial": serial}), who)
    };
    // no certificate, another holder's certificate
    let (s, v) = revoke(&s2, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    let (s, v) = revoke(&s2, Some("h1"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // the holder revokes its own
    let (s, v) = revoke(&s1, Some("h1"));
    assert_eq!(s, 200, "{v}");
    // a non-admin may not list
    let h2 = ["--cacert", "ca/root.pem", "--cert", "h2/chain.pem", "--key"];
    let list = format!("{}/v1/certificates", ca.url());
    let mut args = vec!["-sS"];
    args.extend(h2);
    args.extend(["h2/key.pem", &list]);
    let v = ca.tool_args("curl", &args).json();
    assert_eq!(v["error"]["code"], "forbidden");
    // the admin lists, filtered and paginated
    let v = ca
        .remote(&["cert", "list", "--status", "revoked", "--json"])
        .json();
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["serial"].as_str(), Some(s1.as_str()));
    let v = ca
        .remote(&["cert", "list", "--limit", "2", "--page", "2", "--json"])
        .json();
    assert_eq!(v["offset"], 2);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    // the remote CLI with a non-admin certificate is refused with exit 77
    let url = ca.url();
    let mut args = vec![
        "--ca",
        &url,
        "--cert",
        "h2/chain.pem",
        "--key",
        "h2/key.pem",
    ];
    args.extend(["--ca-cert", "ca/root.pem", "cert", "revoke", &s1]);
    ca.tw_args(&args).code(77);
    // the holder revokes its own again: conflict
    let (s, v) = revoke(&s2, Some("h2"));
    assert_eq!(s, 200, "{v}");
    // roots.pem and healthz
    let plain = |path: &str| {
        let url = format!("http://{}{path}", ca.http);
        ca.tool_args("curl", &["-sS", &url]).stdout
    };
    assert_eq!(plain("/healthz").trim(), "ok");
    assert_eq!(plain("/roots.pem"), read(ca.path("ca/root.pem")));
    // a wrong fingerprint makes the agent refuse to trust the CA
    let zeros = "00".repeat(32);
    let mut args = vec![
        "agent",
        "--ca",
        &url,
        "--ca-fingerprint",
        &zeros,
        "--token",
        "x",
    ];
    args.extend(["--san", "DNS:x.example.internal", "--out", "x", "--once"]);
    let o = ca.tw_args(&args).fails();
    assert!(o.stderr.contains("fingerprint"));
    assert!(!ca.path("x/key.pem").exists());
}

#[test]
fn admins_sign_csrs_and_refusals_record_nothing() {
    let ca = OnlineCa::start(&[]);
    // a non-admin client certificate
    ca.enroll_agent("DNS:plain.example.internal", "plain", "--profile client");
    let pem = openssl_csr(
        ca.dir.path(),
        "svc",
        "",
        "DNS:svc.example.internal,IP:10.1.2.3",
    );
    let sign = |v: serde_json::Value, who: Option<&str>| ca.post_json("/v1/sign", &v, who);
    let before = ca.count();

    // the admin signs: the CSR's names, the asked validity, recorded
    let (s, v) = sign(
        json!({"csr": pem, "profile": "server", "ttl": "2h", "owner": "team-svc"}),
        Some("admin"),
    );
    assert_eq!(s, 201, "{v}");
    let cert = ca.path("svc.pem");
    write(&cert, v["certificate"].as_str().unwrap());
    let (verified, text) = ca.verifies("svc.pem", "-purpose sslserver");
    assert!(verified, "{text}");
    let text = ca.openssl("x509 -in svc.pem -noout -text").stdout;
    assert!(text.contains("DNS:svc.example.internal"), "{text}");
    assert!(text.contains("IP Address:10.1.2.3"), "{text}");
    assert_eq!(serial_of(&cert), v["serial"].as_str().unwrap());
    assert_eq!(ca.count(), before + 1);
    // `sans` replaces the CSR's names
    let (s, v) = sign(
        json!({"csr": pem, "profile": "client", "sans": ["URI:spiffe://online.test/svc"]}),
        Some("admin"),
    );
    assert_eq!(s, 201, "{v}");
    write(&cert, v["certificate"].as_str().unwrap());
    let text = ca
        .openssl("x509 -in svc.pem -noout -ext subjectAltName")
        .stdout;
    assert!(
        text.contains("URI:spiffe://online.test/svc") && !text.contains("DNS:"),
        "{text}"
    );
    assert_eq!(ca.count(), before + 2);

    // refusals: each a 4xx JSON error, and nothing recorded
    let ok_body = json!({"csr": pem, "profile": "server"});
    let cases: Vec<(serde_json::Value, Option<&str>, u16, &str)> = vec![
        (ok_body.clone(), None, 401, "unauthenticated"),
        (ok_body.clone(), Some("plain"), 403, "forbidden"),
        (
            json!({"csr": "not a csr", "profile": "server"}),
            Some("admin"),
            400,
            "bad_csr",
        ),
        (
            json!({"csr": pem, "profile": "server", "ttl": "100000h"}),
            Some("admin"),
            400,
            "policy_violation",
        ),
        (
            json!({"csr": pem, "profile": "root"}),
            Some("admin"),
            400,
            "bad_request",
        ),
        (
            json!({"csr": pem, "profile": "server", "ttl": "soon"}),
            Some("admin"),
            400,
            "bad_request",
        ),
        (
            json!({"csr": pem, "profile": "server", "sans": ["IP:999.1.1.1"]}),
            Some("admin"),
            400,
            "bad_request",
        ),
        (
            json!({"csr": pem, "profile": "server", "extra": 1}),
            Some("admin"),
            400,
            "malformed_json",
        ),
    ];
    for (b, who, status, code) in cases {
        let (s, v) = sign(b.clone(), who);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{who:?} {b}: {v}"
        );
    }
    // a CSR whose signature does not match its content (the last signature byte changed)
    let mut lines: Vec<String> = pem.lines().map(str::to_string).collect();
    let last = lines.len() - 2;
    let l = &mut lines[last];
    let c = if l.starts_with('A') { "B" } else { "A" };
    l.replace_range(0..1, c);
    let tampered = lines.join("\n") + "\n";
    let (s, v) = sign(json!({"csr": tampered, "profile": "server"}), Some("admin"));
    assert_eq!(s, 400, "{v}");
    assert!(
        ["bad_csr", "bad_csr_signature"].contains(&v["error"]["code"].as_str().unwrap_or("")),
        "{v}"
    );
    assert_eq!(ca.count(), before + 2, "refused requests record nothing");
    // counted in the metrics
    let m = ca.metrics();
    assert!(m.contains("twoway_ca_issued_total{how=\"sign\"} 2"), "{m}");
    assert!(m.contains("route=\"sign\",status=\"403\"} 1"), "{m}");
    assert!(
        m.contains("twoway_ca_errors_total{code=\"policy_violation\"} 1"),
        "{m}"
    );
    // and the audit log names the admin
    let v = ca
        .remote(&["cert", "list", "--owner", "team-svc", "--json"])
        .json();
    assert_eq!(v["total"], 1, "{v}");
}

/// `twoway --ca URL cert sign` drives `POST /v1/sign` as the admin and writes the files.
#[test]
fn remote_cert_sign_writes_a_verifiable_certificate() {
    let ca = OnlineCa::start(&[]);
    openssl_csr(ca.dir.path(), "rs", "", "DNS:remote.example.internal");
    let args = [
        "cert",
        "sign",
        "rs.csr",
        "--profile",
        "server",
        "--owner",
        "team-remote",
        "--ttl",
        "2h",
        "--out",
        "rs-out",
    ];
    ca.remote(&args).ok();
    let (verified, text) = ca.verifies("rs-out/cert.pem", "");
    assert!(verified, "{text}");
    let chain = read(ca.path("rs-out/chain.pem"));
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let listed = || {
        ca.remote(&["cert", "list", "--owner", "team-remote", "--json"])
            .json()
    };
    let v = listed();
    assert_eq!(v["total"], 1, "{v}");
    // Existing files are kept without --force, and nothing more is recorded.
    ca.remote(&args).code(64);
    // Inventory-only options that the API does not carry are refused up front.
    let label = ["--profile", "server", "--label", "env=prod"];
    let o = ca.remote(&[&["cert", "sign", "rs.csr"][..], &label].concat());
    assert_eq!(o.code, Some(64));
    assert!(o.stderr.contains("--label"));
    let v = listed();
    assert_eq!(v["total"], 1, "{v}");
}
