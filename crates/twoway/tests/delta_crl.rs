//! Delta CRLs (RFC 5280 §5.2.4) as a verifier meets them: a complete CRL that names
//! `<url>/crl/delta` (Freshest CRL), a delta CRL against it listing what was revoked since,
//! and `openssl verify -crl_check -use_deltas` refusing a certificate that only the delta
//! lists. By hand (`twoway crl --delta --base`) and from `ca serve` with `[crl] delta = true`,
//! where a revocation re-signs only the delta. The real binary, openssl and curl;
//! 127.0.0.1 only.

mod common;

use common::lab::Lab;
use common::online::OnlineCa;
use common::pki::serial_of;
use common::{read, write};

/// Turns `[crl] delta` on in the CA's ca.toml.
fn deltas_on(toml: &std::path::Path) {
    let text = read(toml);
    assert!(text.contains("delta = false"), "{text}");
    write(toml, text.replace("delta = false", "delta = true"));
}

/// `openssl verify` of `cert` with CRL checking and the CRL files given; its output.
fn verify(lab: &Lab, cert: &str, crls: &[&str], deltas: bool) -> String {
    let files: Vec<String> = crls.iter().map(|c| format!("-CRLfile {c}")).collect();
    let line = format!(
        "openssl verify -crl_check {} {} -CAfile ca/root.pem -untrusted ca/intermediate.pem {cert} 2>&1",
        if deltas { "-use_deltas" } else { "" },
        files.join(" ")
    );
    lab.sh(&line).all()
}

#[test]
fn a_delta_crl_by_hand_lists_what_was_revoked_since_its_base() {
    let lab = Lab::new("test:delta");
    lab.init_ca("ca", "--url http://127.0.0.1:9080");
    deltas_on(&lab.path("ca/ca.toml"));
    for n in ["a", "b"] {
        lab.tw(&format!(
            "cert issue --ca-dir ca --profile server --san DNS:{n}.example.internal --out {n}"
        ))
        .ok();
    }
    lab.tw("crl --ca-dir ca --out base.pem").ok();
    let base = lab.sh("openssl crl -in base.pem -noout -text").ok().stdout;
    assert!(base.contains("Freshest CRL"), "{base}");
    assert!(
        base.contains("URI:http://127.0.0.1:9080/crl/delta"),
        "{base}"
    );

    let serial = serial_of(&lab.path("b/cert.pem"));
    lab.tw(&format!(
        "cert revoke {serial} --ca-dir ca --reason key-compromise"
    ))
    .ok();
    let o = lab
        .tw("crl --ca-dir ca --delta --base base.pem --out delta.pem")
        .ok();
    assert!(o.all().contains("delta CRL number"), "{o}");
    let delta = lab.sh("openssl crl -in delta.pem -noout -text").ok().stdout;
    assert!(delta.contains("Delta CRL Indicator: critical"), "{delta}");
    assert!(
        delta
            .to_ascii_lowercase()
            .contains(&serial.to_ascii_lowercase()),
        "{delta}"
    );
    let o = lab.sh("openssl crl -in delta.pem -CAfile ca/intermediate.pem -noout");
    assert!(o.all().contains("verify OK"), "{o}");

    // The base alone does not know; with the delta, openssl refuses b and accepts a.
    let out = verify(&lab, "b/cert.pem", &["base.pem"], false);
    assert!(out.contains("b/cert.pem: OK"), "{out}");
    let out = verify(&lab, "b/cert.pem", &["base.pem", "delta.pem"], true);
    assert!(out.contains("certificate revoked"), "{out}");
    let out = verify(&lab, "a/cert.pem", &["base.pem", "delta.pem"], true);
    assert!(out.contains("a/cert.pem: OK"), "{out}");

    // A delta as the base, a certificate as the base: refused with what to give instead.
    let o = lab.tw("crl --ca-dir ca --delta --base delta.pem").code(64);
    assert!(o.stderr.contains("itself a delta CRL"), "{o}");
    let o = lab
        .tw("crl --ca-dir ca --delta --base ca/root.pem")
        .code(64);
    assert!(o.stderr.contains("not a CRL"), "{o}");
}

#[test]
fn ca_serve_with_deltas_re_signs_only_the_delta_after_a_revocation() {
    let mut ca = OnlineCa::create("Delta Test", "URI:spiffe://delta.test/admin", "", &[]);
    let toml = ca.path("ca/ca.toml");
    deltas_on(&toml);
    // the Freshest CRL pointer needs the CA's URL (without it openssl ignored this delta)
    let text = read(&toml);
    let url_line = "# url = \"https://ca.example.internal:9000\"";
    assert!(text.contains(url_line), "{text}");
    write(
        &toml,
        text.replace(url_line, "url = \"http://127.0.0.1:9080\""),
    );
    ca.serve();
    let token = ca.token("--san DNS:d.example.internal --profile server");
    ca.agent_once(Some(&token), "DNS:d.example.internal", "d")
        .ok();
    let get = |path: &str, out: &str| {
        let url = format!("http://{}{path}", ca.http);
        ca.tool_args(
            "curl",
            &["-sS", "--fail", "--max-time", "30", "-o", out, &url],
        )
        .ok();
    };
    get("/crl", "base1.der");
    let serial = serial_of(&ca.path("d/cert.pem"));
    ca.remote(&["cert", "revoke", &serial, "--reason", "key-compromise"])
        .ok();
    // the complete CRL is the same signed list; the delta lists the revocation
    get("/crl", "base2.der");
    assert_eq!(
        std::fs::read(ca.path("base1.der")).unwrap(),
        std::fs::read(ca.path("base2.der")).unwrap(),
        "the complete CRL was re-signed"
    );
    get("/crl/delta", "delta.der");
    let text = ca
        .openssl("crl -inform DER -in delta.der -noout -text")
        .ok()
        .stdout;
    assert!(text.contains("Delta CRL Indicator: critical"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains(&serial.to_ascii_lowercase()),
        "{text}"
    );
    for (der, pem) in [("base2.der", "base.pem"), ("delta.der", "delta.pem")] {
        ca.openssl(&format!("crl -inform DER -in {der} -out {pem}"))
            .ok();
    }
    let out = verify(&ca, "d/cert.pem", &["base.pem", "delta.pem"], true);
    assert!(out.contains("certificate revoked"), "{out}");
}
