//! The dashboard (`/ui/` of `ca serve`) in a real browser: Debian's Chromium driven by
//! Playwright (`support/dashboard.py`), signed in with client certificates. An
//! administrator sees the overview agree with `twoway cert list`, filters and pages the
//! inventory, revokes a certificate through the confirmation (then `openssl ocsp`, the CLI
//! and the audit page agree), creates a token that a real `twoway agent` enrolls with; an
//! auditor sees but cannot revoke; a certificate that is neither, and no certificate, are
//! refused; an imported certificate whose subject, SAN and owner carry HTML renders as
//! text; forged and cross-site POSTs are refused. Only 127.0.0.1; the browser run is
//! bounded (90 s).

mod common;

use common::online::OnlineCa;
use common::{require_tool, run, run_with_timeout};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const AUDITOR: &str = "URI:spiffe://online.test/auditor";
const OWNER: &str = "team-dash";
const XSS_OWNER: &str = "<script>alert(3)</script>";
const TOKEN_SAN: &str = "DNS:agent-ui.dash.test";

/// Playwright's Python package must be installed (scripts/test-all does it); the test
/// fails naming the fix otherwise.
fn require_playwright() {
    let o = run(Command::new("python3").args(["-c", "import playwright.sync_api"]));
    assert!(
        o.success(),
        "the dashboard test needs Python's playwright: `python3 -m pip install playwright` \
         (no browser download: it drives Debian's chromium)\n{}",
        o.all()
    );
}

fn total(ca: &OnlineCa, args: &str) -> u64 {
    let o = ca
        .tw(&format!("cert list --ca-dir ca --json --limit 1 {args}"))
        .ok();
    o.json()["total"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn dashboard_in_chromium() {
    let chromium = require_tool("chromium", "chromium");
    require_tool("python3", "python3");
    require_playwright();
    let ca = OnlineCa::start(&[("auditors", &format!("[\"{AUDITOR}\"]"))]);
    for (san, out) in [
        (AUDITOR, "auditor"),
        ("URI:spiffe://online.test/nobody", "nobody"),
    ] {
        ca.tw(&format!(
            "cert issue --ca-dir ca --profile client --san {san} --out {out}"
        ))
        .ok();
    }
    // 30 certificates of one owner: two pages of 25.
    for i in 0..30 {
        ca.tw(&format!(
            "cert issue --ca-dir ca --profile server --san DNS:a-{i:02}.dash.test --owner {OWNER} \
             --label env=test --ttl 20d --out a-{i:02}"
        ))
        .ok();
    }
    // An imported certificate whose subject, SAN and owner carry HTML.
    ca.tool_args(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "xss.key",
            "-out",
            "xss.pem",
            "-days",
            "30",
            "-subj",
            "/CN=<script>alert(1)<\\/script>",
            "-addext",
            "subjectAltName=DNS:<img src=x onerror=alert(2)>.test",
        ],
    )
    .ok();
    ca.tw_args(&[
        "cert", "import", "--ca-dir", "ca", "--owner", XSS_OWNER, "xss.pem",
    ])
    .ok();

    // What the CLI says, just before the browser looks.
    let cli = json!({
        "total": total(&ca, ""),
        "active": total(&ca, "--status active"),
        "expired": total(&ca, "--status expired"),
        "revoked": total(&ca, "--status revoked"),
        "expiring_30d": total(&ca, "--expiring 30d"),
    });

    let shots = ca.path("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let p = |d: &str, f: &str| ca.p(&format!("{d}/{f}"));
    let cfg = json!({
        "base": ca.url(),
        "chromium": chromium,
        "shots": shots,
        "owner": OWNER,
        "xss_owner_q": "%3Cscript%3Ealert(3)%3C%2Fscript%3E",
        "token_san": TOKEN_SAN,
        "admin": {"cert": p("admin", "chain.pem"), "key": p("admin", "key.pem")},
        "auditor": {"cert": p("auditor", "chain.pem"), "key": p("auditor", "key.pem")},
        "nobody": {"cert": p("nobody", "chain.pem"), "key": p("nobody", "key.pem")},
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dashboard.py");
    let o = run_with_timeout(
        Command::new("python3").args([script, &cfg.to_string()]),
        None,
        Duration::from_secs(90),
    );
    assert!(o.success(), "the browser run failed:\n{}", o.all());
    let seen: Value = serde_json::from_str(o.stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON from the browser run ({e}):\n{}", o.all()));
    let s = |k: &str| seen[k].as_str().unwrap_or("").to_string();
    let pair = |k: &str| {
        (
            seen[k][0].as_u64().unwrap_or(0),
            seen[k][1].as_str().unwrap_or("").to_string(),
        )
    };

    // Signed in, with the headers that keep other sites and inline code out.
    assert_eq!(seen["overview_status"], 200, "{seen}");
    assert!(s("viewer").contains("administrator"), "{seen}");
    assert!(s("csp").contains("script-src 'self'") && s("csp").contains("frame-ancestors 'none'"));
    assert_eq!(s("nosniff"), "nosniff");
    assert_eq!(seen["charts"], 2);
    // The overview agrees with the CLI.
    assert_eq!(seen["overview"], cli, "overview vs cert list");

    // Filtered through the form, paged, bookmarkable.
    assert!(s("filtered_url").contains("owner=team-dash"), "{seen}");
    assert!(s("filtered_url").contains("per=25"), "{seen}");
    assert_eq!(seen["page1_rows"], 25, "{seen}");
    assert!(
        s("page1_summary").starts_with("30 matches: 1–25 shown, page 1 of 2"),
        "{seen}"
    );
    assert!(s("page2_url").contains("page=2") && s("page2_url").contains("owner=team-dash"));
    assert!(
        s("page2_url").contains("&after="),
        "keyset paging: {}",
        s("page2_url")
    );
    assert_eq!(seen["page2_rows"], 5, "{seen}");

    // Revoked through the confirmation; the view it came from shows it revoked.
    assert_eq!(s("cert_status_before"), "active");
    assert_eq!(seen["cert_has_pem"], true);
    assert_eq!(s("confirm_reason"), "key-compromise");
    assert_eq!(s("cert_status_after"), "revoked", "{seen}");
    assert!(s("notice").contains("key-compromise"), "{seen}");
    assert_eq!(
        s("back_url"),
        s("page2_url"),
        "the filtered view survives the revoke"
    );
    assert_eq!(s("list_status_after"), "revoked", "{seen}");
    let victim = s("victim_serial");
    assert!(victim.len() >= 16, "{seen}");
    let dir = s("victim_sans")
        .strip_prefix("DNS:")
        .and_then(|d| d.strip_suffix(".dash.test"))
        .unwrap_or_else(|| panic!("victim SANs {:?}", s("victim_sans")))
        .to_string();
    // openssl ocsp against the server, and the CLI, agree.
    let ocsp = ca.ocsp(&format!("{dir}/cert.pem"));
    assert!(ocsp.contains(": revoked"), "{ocsp}");
    assert!(
        ocsp.contains("Key Compromise") || ocsp.contains("keyCompromise"),
        "{ocsp}"
    );
    let listed = ca
        .tw("cert list --ca-dir ca --json --status revoked")
        .ok()
        .json();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["serial"] == victim.as_str()),
        "{listed}"
    );
    // The audit page names the revocation and who made it; the chain verifies.
    let rows = seen["audit_rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r[4] == victim.as_str()
            && r[2].as_str().unwrap_or("").starts_with("ui:admin:")
            && r[3] == "cert.revoke"),
        "{rows:?}"
    );
    assert!(s("chain").contains("verifies"), "{seen}");

    // Bad input says what is wrong, in the page.
    let (st, msg) = pair("bad_filter");
    assert_eq!(st, 400);
    assert!(
        msg.contains("expiring \"soon\"") && msg.contains("7d"),
        "{msg}"
    );
    let (st, msg) = pair("past_end");
    assert_eq!(st, 404);
    assert!(
        msg.contains("Page 99 is past the end: this view has 2 pages"),
        "{msg}"
    );
    assert_eq!(seen["csv_lines"], 31, "a header and 30 rows");

    // Owners.
    let owners = seen["owners"].as_array().unwrap();
    assert!(
        owners
            .iter()
            .any(|r| r[0] == OWNER && r[1] == "30" && r[2] == "29" && r[3] == "1"),
        "{owners:?}"
    );

    // The token is shown once, and a real agent enrolls with it.
    let token = s("token");
    assert!(token.starts_with("twt_"), "{seen}");
    assert_eq!(seen["token_shown_again"], 0);
    assert!(s("token_error").contains("names"), "{seen}");
    ca.agent_once(Some(&token), TOKEN_SAN, "agent").ok();
    let enrolled = ca
        .tw("cert list --ca-dir ca --json --owner team-ui")
        .ok()
        .json();
    assert_eq!(enrolled["total"], 1, "{enrolled}");
    assert!(std::fs::metadata(ca.path("agent/cert.pem")).is_ok());

    // Stored HTML renders as text: no dialog, no script element, the text visible.
    assert_eq!(seen["dialogs"], json!([]), "a dialog fired: {seen}");
    assert_eq!(seen["xss_rows"], 1, "{seen}");
    assert_eq!(seen["xss_script_elements"], 0);
    assert!(s("xss_text").contains(XSS_OWNER), "{seen}");
    assert!(
        s("xss_text").contains("<img src=x onerror=alert(2)>.test"),
        "{seen}"
    );
    assert!(
        s("xss_cert_text").contains("<script>alert(1)</script>"),
        "{seen}"
    );
    assert!(
        s("xss_heading").contains("<script>alert(1)</script>"),
        "{seen}"
    );

    // Forged POSTs: no token, a wrong token, another Origin, another site's form.
    let (st, body) = pair("post_no_csrf");
    assert_eq!(st, 403);
    assert!(body.contains("no CSRF token"), "{body}");
    let (st, body) = pair("post_bad_csrf");
    assert_eq!(st, 403);
    assert!(body.contains("CSRF token is not valid"), "{body}");
    let (st, body) = pair("post_wrong_origin");
    assert_eq!(st, 403);
    assert!(body.contains("another site (https://evil.test)"), "{body}");
    let (st, body) = pair("cross_site_form");
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("another site"), "{body}");
    let log = ca
        .tw("audit list --ca-dir ca --json --limit 100000")
        .ok()
        .stdout;
    assert!(
        !log.contains("forged.test"),
        "a forged request made a token"
    );

    // The auditor reads but cannot revoke: no button, the forged POST refused.
    assert!(s("auditor_viewer").contains("auditor, read-only"), "{seen}");
    assert!(seen["auditor_rows"].as_u64().unwrap_or(0) > 0);
    assert_eq!(seen["auditor_revoke_buttons"], 0);
    let (st, body) = pair("auditor_post");
    assert_eq!(st, 403);
    assert!(body.contains("auditor"), "{body}");
    assert_eq!(seen["auditor_confirm_page"], 403);
    assert_eq!(seen["auditor_token_forms"], 0);
    assert_eq!(
        total(&ca, "--status revoked"),
        cli["revoked"].as_u64().unwrap() + 1,
        "only the administrator's revocation happened"
    );

    // Neither an administrator nor an auditor; no certificate at all.
    let (st, msg) = pair("nobody");
    assert_eq!(st, 403);
    assert!(msg.contains("URI:spiffe://online.test/nobody"), "{msg}");
    assert!(msg.contains("[server] auditors"), "{msg}");
    assert_eq!(seen["no_certificate"], 401);

    // A phone with JavaScript off reads the overview.
    assert_eq!(seen["phone_status"], 200);
    assert_eq!(seen["phone_total"], cli["total"]);

    // Screenshots of each page (docs/dashboard/ holds copies).
    for name in [
        "overview",
        "inventory",
        "certificate",
        "revoke-confirm",
        "audit",
        "owners",
        "tokens",
        "xss-certificate",
        "auditor-certificate",
        "overview-phone",
    ] {
        let f = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing", f.display());
        if let Some(to) = std::env::var_os("TWOWAY_SCREENSHOTS_TO") {
            std::fs::copy(&f, std::path::Path::new(&to).join(format!("{name}.png"))).unwrap();
        }
    }
}
