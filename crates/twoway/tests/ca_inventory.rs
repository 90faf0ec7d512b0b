//! The offline CA's records: the inventory (owners, labels, locations, filters,
//! pagination, show, import, check), the hash-chained audit log that detects tampering,
//! and keys on disk (private modes, standard encrypted PKCS#8). The real `twoway` binary in
//! a temporary directory per test, judged by openssl and python3's sqlite3.

mod common;

use common::lab::{assert_prints, str_of, Lab, EXIT_DATAERR, EXIT_FAILURE, EXIT_USAGE};
use common::{mode, read, require_tool, write};
use serde_json::{json as j, Value};

/// The actor every command of these tests runs as (audit log).
const ACTOR: &str = "test:alice";

// ---------------------------------------------------------------------------------------
// 1. Inventory: owners, labels, locations, filters, pagination, show, import, check.

#[test]
fn inventory_lists_filters_pages_and_shows() {
    let lab = Lab::with_ca(ACTOR, "");
    let api = lab.issue(
        "--ca-dir ca --profile server --san DNS:api.example.internal --san IP:10.0.0.5 \
         --out api --owner team-api --label env=prod --label tier=web --location host-17 --ttl 10d",
    );
    let billing = lab.issue(
        "--ca-dir ca --profile client --san URI:spiffe://example.org/ns/prod/sa/billing \
         --out billing --owner team-billing --label env=prod --ttl 90d",
    );
    let db = lab.issue(
        "--ca-dir ca --profile peer --san DNS:db.other.internal --out db --owner team-api \
         --label env=dev --ttl 60d",
    );
    let list = |args: &str| {
        lab.tw(&format!("cert list --ca-dir ca --json {args}"))
            .ok()
            .json()
    };
    let serials = |page: &Value| -> Vec<String> {
        let mut s: Vec<String> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| str_of(i, "serial").to_string())
            .collect();
        s.sort();
        s
    };
    let sorted = |certs: &[&Value]| -> Vec<String> {
        let mut s: Vec<String> = certs
            .iter()
            .map(|c| str_of(c, "serial").to_string())
            .collect();
        s.sort();
        s
    };

    // --json shape, and what the inventory keeps about a certificate.
    let all = list("");
    for key in ["items", "total", "offset", "limit"] {
        assert!(
            all.get(key).is_some(),
            "cert list --json has {key}: {all:#}"
        );
    }
    assert_eq!(
        all["total"], 5,
        "root, intermediate and three leaves: {all:#}"
    );
    assert_eq!(all["offset"], 0);
    let items = all["items"].as_array().unwrap();
    let rec = items
        .iter()
        .find(|i| i["serial"] == api["serial"])
        .expect("api is listed");
    assert_eq!(rec["owner"], "team-api");
    assert_eq!(rec["labels"], j!({"env": "prod", "tier": "web"}));
    assert_eq!(rec["location"], "host-17");
    assert_eq!(rec["profile"], "server");
    assert_eq!(rec["source"], "issued");
    assert_eq!(rec["status"], "active");
    assert_eq!(rec["sans"], j!(["DNS:api.example.internal", "IP:10.0.0.5"]));
    assert!(rec.get("pem").is_none(), "listings carry no PEM");

    // Filters.
    assert_eq!(serials(&list("--owner team-api")), sorted(&[&api, &db]));
    assert_eq!(
        serials(&list("--label env=prod")),
        sorted(&[&api, &billing])
    );
    assert_eq!(
        serials(&list("--label env=prod --label tier=web")),
        sorted(&[&api])
    );
    assert_eq!(
        serials(&list("--owner team-api --label env=dev")),
        sorted(&[&db])
    );
    assert_eq!(serials(&list("--san *.example.internal")), sorted(&[&api]));
    assert_eq!(serials(&list("--san *.internal")), sorted(&[&api, &db]));
    assert_eq!(
        serials(&list("--san spiffe://example.org/*")),
        sorted(&[&billing])
    );
    assert_eq!(serials(&list("--profile peer")), sorted(&[&db]));
    assert_eq!(list("--profile ca")["total"], 2);
    assert_eq!(serials(&list("--expiring 30d")), sorted(&[&api]));
    assert_eq!(
        serials(&list("--expiring 100d")),
        sorted(&[&api, &billing, &db])
    );

    // Revoked ones: --status revoked, and they no longer count as "expiring".
    lab.tw(&format!(
        "cert revoke {} --ca-dir ca",
        str_of(&billing, "serial")
    ))
    .ok();
    assert_eq!(serials(&list("--status revoked")), sorted(&[&billing]));
    assert_eq!(list("--status active")["total"], 4);
    assert_eq!(serials(&list("--expiring 100d")), sorted(&[&api, &db]));
    let o = lab.tw("cert list --ca-dir ca --status revoked").ok();
    assert_prints(
        &o,
        &[
            "revoked",
            "team-billing",
            "spiffe://example.org/ns/prod/sa/billing",
        ],
    );
    let o = lab
        .tw("cert list --ca-dir ca --status gone")
        .code(EXIT_USAGE);
    assert!(o.stderr.contains("use active, revoked or expired"), "{o}");

    // Pagination: page 2 of size 1 is the second row of the full listing; the five pages
    // together are the whole inventory, each certificate once.
    let full = list("");
    let page2 = list("--limit 1 --page 2");
    assert_eq!(
        (&page2["total"], &page2["offset"], &page2["limit"]),
        (&j!(5), &j!(1), &j!(1))
    );
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        page2["items"][0]["fingerprint"],
        full["items"][1]["fingerprint"]
    );
    let mut seen: Vec<Value> = (1..=5)
        .map(|p| list(&format!("--limit 1 --page {p}"))["items"][0]["fingerprint"].clone())
        .collect();
    seen.sort_by_key(|v| v.to_string());
    seen.dedup();
    assert_eq!(seen.len(), 5, "five pages, five different certificates");
    assert_eq!(list("--limit 1 --page 6")["items"], j!([]));
    let o = lab.tw("cert list --ca-dir ca --limit 2 --page 2").ok();
    assert_prints(&o, &["Showing 3-4 of 5. Next page: --page 3"]);

    // show by serial, and by a unique fingerprint prefix.
    let serial = str_of(&api, "serial");
    let o = lab.tw(&format!("cert show {serial} --ca-dir ca")).ok();
    assert_prints(
        &o,
        &[
            &format!("serial       {serial}"),
            "names        DNS:api.example.internal, IP:10.0.0.5",
            "profile      server",
            "owner        team-api",
            "labels       env=prod, tier=web",
            "location     host-17",
            "source       issued",
            "status       active",
        ],
    );
    let prefix = &str_of(&api, "fingerprint")[..12];
    let shown = lab
        .tw(&format!("cert show {prefix} --ca-dir ca --json"))
        .ok()
        .json();
    assert_eq!(shown["serial"], api["serial"]);
    assert_eq!(shown["fingerprint"], api["fingerprint"]);
    let pem = shown["pem"].as_str().unwrap_or_default();
    assert_eq!(
        pem,
        read(lab.path("api/cert.pem")),
        "show --json carries the PEM"
    );
    let o = lab
        .tw(&format!(
            "cert show {} --ca-dir ca",
            str_of(&billing, "serial")
        ))
        .ok();
    assert_prints(&o, &["status       revoked", "(unspecified)"]);
}

#[test]
fn inventory_imports_foreign_certificates_once() {
    let lab = Lab::with_ca(ACTOR, "");
    lab.foreign_cert("web", "web.example.com");
    let o = lab
        .openssl("x509 -in web.pem -noout -fingerprint -sha256")
        .ok();
    let fingerprint = o
        .stdout
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    let o = lab
        .tw("cert import web.pem --ca-dir ca --owner team-web --label env=prod --location lb-01")
        .ok();
    assert_prints(&o, &["CN=web.example.com", "imported"]);

    let page = lab
        .tw("cert list --ca-dir ca --owner team-web --json")
        .ok()
        .json();
    assert_eq!(page["total"], 1, "{page:#}");
    let rec = &page["items"][0];
    assert_eq!(rec["source"], "imported");
    assert_eq!(rec["fingerprint"], fingerprint.as_str());
    assert_eq!(rec["sans"], j!(["DNS:web.example.com"]));
    assert_eq!(rec["location"], "lb-01");
    assert_eq!(rec["labels"], j!({"env": "prod"}));
    let o = lab.tw(&format!("cert show {fingerprint} --ca-dir ca")).ok();
    assert_prints(&o, &["source       imported", "owner        team-web"]);

    // Importing again records nothing and says so.
    let before = lab.recorded("ca");
    let again = lab.tw("cert import web.pem --ca-dir ca --json").ok().json();
    assert_eq!(again[0]["outcome"], "already-recorded", "{again:#}");
    assert_eq!(again[0]["certificate"]["fingerprint"], fingerprint.as_str());
    let o = lab.tw("cert import web.pem --ca-dir ca").ok();
    assert_prints(&o, &["already-recorded"]);
    let after = lab.recorded("ca");
    assert_eq!((before.total, before.audit), (after.total, after.audit));

    // Only the issuer can revoke: an imported certificate is refused.
    let o = lab
        .tw(&format!("cert revoke {fingerprint} --ca-dir ca"))
        .code(EXIT_DATAERR);
    assert!(o.stderr.contains("only its issuer can revoke it"), "{o}");
}

#[test]
fn cert_check_exits_1_when_something_expires_within_the_window() {
    let lab = Lab::with_ca(ACTOR, "");
    lab.issue(
        "--ca-dir ca --profile server --san DNS:later.example.internal --out later --ttl 30d",
    );
    let check = "cert check --ca-dir ca --within 14d";
    let o = lab.tw(check).ok();
    assert_prints(&o, &["Nothing expires within 14d that needs a person."]);
    let report = lab.tw(&format!("{check} --json")).ok().json();
    assert_eq!(report["expiring"], j!([]), "{report:#}");

    let soon = lab.issue(
        "--ca-dir ca --profile client --san DNS:soon.example.internal --out soon --ttl 7d \
         --owner team-soon",
    );
    let serial = str_of(&soon, "serial");
    let o = lab.tw(check).code(EXIT_FAILURE);
    assert_prints(
        &o,
        &[
            "1 certificate(s) expire within 14d and nobody renews them:",
            &str_of(&soon, "fingerprint")[..12],
            "DNS:soon.example.internal",
            "team-soon",
        ],
    );
    assert!(!o.stdout.contains("later.example.internal"), "{o}");
    let report = lab.tw(&format!("{check} --json")).code(EXIT_FAILURE).json();
    assert_eq!(report["within"], "14d");
    let expiring = report["expiring"].as_array().unwrap();
    assert_eq!(expiring.len(), 1, "{report:#}");
    assert_eq!(expiring[0]["serial"], serial);
    // A window that is not a duration is a usage error.
    let o = lab
        .tw("cert check --ca-dir ca --within fortnight")
        .code(EXIT_USAGE);
    assert!(
        o.stderr
            .contains("--within: invalid duration \"fortnight\""),
        "{o}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Audit log: every action, in order, hash-chained; tampering is detected.

#[test]
fn audit_log_records_every_action_and_detects_tampering() {
    require_tool("python3", "python3");
    let lab = Lab::with_ca(ACTOR, "");
    let issued = lab.issue("--ca-dir ca --profile server --out a --san DNS:a.example.internal");
    lab.tw("cert csr --san DNS:b.example.internal --out b").ok();
    lab.tw("cert sign b/csr.pem --ca-dir ca --profile client --out b")
        .ok();
    lab.foreign_cert("foreign", "foreign.example.com");
    lab.tw("cert import foreign.pem --ca-dir ca").ok();
    let serial = str_of(&issued, "serial");
    lab.tw(&format!(
        "cert revoke {serial} --ca-dir ca --reason superseded"
    ))
    .ok();
    lab.tw("crl --ca-dir ca --out crl.pem").ok();

    let entries = lab.tw("audit list --ca-dir ca --json").ok().json();
    let entries = entries.as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| str_of(e, "action")).collect();
    assert_eq!(
        actions,
        [
            "ca.init",
            "ca.init",
            "cert.issue",
            "cert.sign",
            "cert.import",
            "cert.revoke",
            "crl.sign"
        ],
        "{entries:#?}"
    );
    let mut prev = "0".repeat(64);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i + 1);
        assert_eq!(e["actor"], ACTOR);
        assert_eq!(
            e["prev_hash"],
            prev.as_str(),
            "entry {} chains to the one before",
            i + 1
        );
        prev = str_of(e, "hash").to_string();
    }
    assert_eq!(entries[2]["target"], serial);
    assert_eq!(entries[5]["target"], serial);
    assert!(str_of(&entries[5], "details").contains("superseded"));
    assert_eq!(entries[6]["target"], "1", "the CRL number");
    let o = lab.tw("audit list --ca-dir ca").ok();
    assert_prints(&o, &["cert.revoke", ACTOR]);

    let verify = "audit verify --ca-dir ca";
    let o = lab.tw(verify).ok();
    assert_prints(&o, &["Audit log intact: 7 entries, hash chain verified."]);

    // Someone edits the database behind the CA's back (python3's sqlite3 module, since the
    // sqlite3 CLI is not always installed).
    let db = lab.p("ca/inventory.db");
    let sql = |statement: &str| {
        let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
                      n = c.execute(sys.argv[2]).rowcount\nc.commit()\nassert n == 1, n";
        lab.tool_args("python3", &["-c", script, &db, statement])
            .ok();
    };
    sql("UPDATE audit_log SET actor = 'cli:mallory@host' WHERE seq = 4");
    let o = lab.tw(verify).code(EXIT_FAILURE);
    assert_prints(
        &o,
        &[
            "Audit log BROKEN (7 entries)",
            "entry 4: its content does not match its hash (the entry was altered)",
        ],
    );
    let report = lab
        .tw(&format!("{verify} --json"))
        .code(EXIT_FAILURE)
        .json();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["problems"].as_array().unwrap().len(),
        1,
        "only entry 4: {report:#}"
    );
    assert_eq!(report["problems"][0]["seq"], 4, "{report:#}");

    // Undo the edit: intact again (the check is exact, not merely suspicious).
    sql(&format!(
        "UPDATE audit_log SET actor = '{ACTOR}' WHERE seq = 4"
    ));
    lab.tw(verify).ok();

    // Someone deletes an entry from the middle.
    sql("DELETE FROM audit_log WHERE seq = 5");
    let o = lab.tw(verify).code(EXIT_FAILURE);
    assert_prints(
        &o,
        &[
            "Audit log BROKEN (6 entries)",
            "entry 6: entries 5..5 are missing",
            "entry 6: does not chain to the entry before it",
        ],
    );
}

/// Removing the newest audit entries leaves a shorter chain that verifies; a checkpoint signed
/// by the CA and kept elsewhere catches it, names the gap, and cannot be forged or moved to
/// another CA.
#[test]
fn audit_checkpoint_catches_removed_newest_entries() {
    let lab = Lab::with_ca(ACTOR, "");
    for name in ["a", "b"] {
        lab.issue(&format!(
            "--ca-dir ca --profile server --san DNS:{name}.example.internal --out {name}"
        ));
    }
    let o = lab.tw("audit checkpoint --ca-dir ca --out cp.json").ok();
    assert!(
        o.stderr.contains("Wrote the checkpoint of audit entry 4"),
        "{o}"
    );
    let cp: Value = serde_json::from_str(&read(lab.path("cp.json"))).unwrap();
    assert_eq!(cp["seq"], 4, "{cp}");
    assert_eq!(cp["format"], "twoway-audit-checkpoint/1");
    // taking it is audited, after the checkpointed entry
    let entries = lab.tw("audit list --ca-dir ca --json").ok().json();
    assert_eq!(entries[4]["action"], "audit.checkpoint", "{entries}");
    // the log grows past it: still consistent with the checkpoint
    lab.issue("--ca-dir ca --profile server --san DNS:c.example.internal --out c");
    let verify = "audit verify --ca-dir ca --checkpoint cp.json";
    let o = lab.tw(verify).ok();
    assert_prints(&o, &["hash chain verified; the checkpoint of entry 4 ("]);
    lab.tw("audit verify --ca-dir ca").ok();

    let db = lab.p("ca/inventory.db");
    let sql = |statement: &str| {
        let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
                      c.execute(sys.argv[2])\nc.commit()";
        lab.tool_args("python3", &["-c", script, &db, statement])
            .ok();
    };
    // the newest entries go, down to before the checkpointed one: the chain alone still
    // verifies, the checkpoint does not
    sql("DELETE FROM audit_log WHERE seq >= 3");
    lab.tw("audit verify --ca-dir ca").ok();
    let o = lab.tw(verify).code(EXIT_FAILURE);
    assert_prints(
        &o,
        &[
            "Audit log BROKEN (2 entries)",
            "entry 4: the checkpoint of",
            "the log ends at entry 2: entries 3..4 were removed",
        ],
    );
    let report = lab
        .tw(&format!("{verify} --json"))
        .code(EXIT_FAILURE)
        .json();
    assert_eq!(report["ok"], false, "{report}");

    // a checkpoint whose numbers were edited does not verify; nor one from another CA
    let mut forged = cp.clone();
    forged["seq"] = 2.into();
    write(lab.path("forged.json"), forged.to_string());
    let o = lab
        .tw("audit verify --ca-dir ca --checkpoint forged.json")
        .fails();
    assert!(o.stderr.contains("signature does not verify"), "{o}");
    lab.init_ca("other", "");
    let o = lab
        .tw("audit verify --ca-dir other --checkpoint cp.json")
        .fails();
    assert!(o.stderr.contains("signed by another CA"), "{o}");
    let o = lab
        .tw("audit verify --ca-dir ca --checkpoint ca/ca.toml")
        .code(EXIT_DATAERR);
    assert!(o.stderr.contains("is not a checkpoint"), "{o}");
}

// ---------------------------------------------------------------------------------------
// 3. Keys on disk.

#[test]
fn keys_are_private_and_encrypted_keys_are_standard_pkcs8() {
    let lab = Lab::new(ACTOR);
    write(lab.path("pass.txt"), "correct horse battery staple\n");
    write(lab.path("wrong.txt"), "wrong\n");
    lab.init_ca("ca", "--passphrase-file pass.txt");
    assert_eq!(mode(&lab.path("ca")), 0o700, "the CA directory");
    for f in ["root.key", "intermediate.key", "ca.toml", "inventory.db"] {
        assert_eq!(mode(&lab.path(&format!("ca/{f}"))), 0o600, "ca/{f}");
    }
    for f in ["root.pem", "intermediate.pem"] {
        assert_eq!(mode(&lab.path(&format!("ca/{f}"))), 0o644, "ca/{f}");
    }
    for (key, cert) in [
        ("ca/root.key", "ca/root.pem"),
        ("ca/intermediate.key", "ca/intermediate.pem"),
    ] {
        let pem = read(lab.path(key));
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{key}"
        );
        // PKCS#8 EncryptedPrivateKeyInfo with PBES2 / PBKDF2 / AES-256-CBC, as openssl sees it.
        let asn1 = lab.openssl(&format!("asn1parse -in {key}")).ok();
        assert_prints(&asn1, &["PBES2", "PBKDF2", "aes-256-cbc"]);
        // openssl decrypts it with the passphrase file, and it is the certificate's key.
        let from_key = lab
            .openssl(&format!("pkey -in {key} -passin file:pass.txt -pubout"))
            .ok();
        let from_cert = lab.openssl(&format!("x509 -in {cert} -noout -pubkey")).ok();
        assert_eq!(from_key.stdout, from_cert.stdout, "{key} belongs to {cert}");
        lab.openssl(&format!("pkey -in {key} -passin file:wrong.txt -noout"))
            .fails();
    }
    // Leaf keys are written 0600, certificates 0644.
    let pass = "--passphrase-file pass.txt";
    lab.issue(&format!(
        "--ca-dir ca --profile server --out srv --san DNS:a.example.internal {pass}"
    ));
    assert_eq!(mode(&lab.path("srv/key.pem")), 0o600);
    for f in ["cert.pem", "chain.pem", "ca.pem"] {
        assert_eq!(mode(&lab.path(&format!("srv/{f}"))), 0o644, "srv/{f}");
    }
    assert!(read(lab.path("srv/key.pem")).starts_with("-----BEGIN PRIVATE KEY-----"));
    let from_key = lab.openssl("pkey -in srv/key.pem -pubout").ok();
    let from_cert = lab.openssl("x509 -in srv/cert.pem -noout -pubkey").ok();
    assert_eq!(from_key.stdout, from_cert.stdout);
    lab.tw("cert csr --san DNS:b.example.internal --out req")
        .ok();
    assert_eq!(mode(&lab.path("req/key.pem")), 0o600);
    assert_eq!(mode(&lab.path("req/csr.pem")), 0o644);
}

/// `cert prune` archives expired certificates (whole records, PEM included, 0600) before
/// removing them, audited with the archive's SHA-256; what has not expired long enough
/// stays; a bad window is a usage error; an archive that cannot be written removes
/// nothing; `--limit` says when more are left.
#[test]
fn prune_archives_first_then_removes_expired_certificates() {
    let lab = Lab::with_ca("test:prune", "");
    for i in 0..3 {
        lab.tw(&format!(
            "cert issue --ca-dir ca --profile server --san DNS:old-{i}.test --ttl 1s --owner team-old --out old-{i}"
        ))
        .ok();
    }
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:keep.test --ttl 1h --out keep")
        .ok();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let listed = |lab: &Lab| lab.tw("cert list --ca-dir ca --json").ok().json()["total"].clone();
    let before = listed(&lab);

    let o = lab
        .tw("cert prune --ca-dir ca --expired-before soon")
        .code(EXIT_USAGE);
    assert!(o.stderr.contains("--expired-before"), "{o}");
    // the archive's directory is a file: nothing is removed
    lab.tw("cert prune --ca-dir ca --expired-before 1s --archive keep/cert.pem/x.jsonl")
        .fails();
    assert_eq!(listed(&lab), before);
    // nothing expired 1 day ago
    let o = lab.tw("cert prune --ca-dir ca --expired-before 1d").ok();
    assert!(o.stdout.contains("nothing pruned"), "{o}");

    let o = lab
        .tw("cert prune --ca-dir ca --expired-before 1s --limit 2 --archive a1.jsonl --json")
        .ok()
        .json();
    assert_eq!(
        (o["removed"].as_u64(), o["more"].as_bool()),
        (Some(2), Some(true)),
        "{o}"
    );
    let o = lab
        .tw("cert prune --ca-dir ca --expired-before 1s --archive a2.jsonl --json")
        .ok()
        .json();
    assert_eq!(
        (o["removed"].as_u64(), o["more"].as_bool()),
        (Some(1), Some(false)),
        "{o}"
    );
    assert_eq!(listed(&lab).as_u64(), before.as_u64().map(|n| n - 3));
    assert!(lab.tw("cert show --ca-dir ca keep").code.is_some());
    let kept = lab
        .tw("cert list --ca-dir ca --json --san keep.test")
        .ok()
        .json();
    assert_eq!(kept["total"], 1);
    let gone = lab
        .tw("cert list --ca-dir ca --json --owner team-old")
        .ok()
        .json();
    assert_eq!(gone["total"], 0);

    // the archives hold the whole records; only the owner reads them
    let mut archived = Vec::new();
    for f in ["a1.jsonl", "a2.jsonl"] {
        assert_eq!(mode(&lab.path(f)) & 0o777, 0o600);
        for line in read(lab.path(f)).lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(v["pem"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
            archived.push(v["sans"][0].as_str().unwrap().to_string());
        }
    }
    archived.sort();
    assert_eq!(
        archived,
        ["DNS:old-0.test", "DNS:old-1.test", "DNS:old-2.test"]
    );
    // audited, with the archive's digest; the chain still verifies
    let log = lab
        .tw("audit list --ca-dir ca --json --limit 1000")
        .ok()
        .json();
    let prunes: Vec<&Value> = log
        .as_array()
        .or_else(|| log["entries"].as_array())
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "cert.prune")
        .collect();
    assert_eq!(prunes.len(), 2, "{log}");
    assert!(prunes[0]["details"].to_string().contains("archive_sha256"));
    lab.tw("audit verify --ca-dir ca").ok();
}
