//! PKCS#12 files from `twoway cert issue --p12` and `twoway cert export --p12`, judged by
//! the tools that import them: `openssl pkcs12 -info` (both encodings; `-legacy` for the
//! 3DES one, which OpenSSL 3 refuses without it), Java's `keytool -list -storetype PKCS12`,
//! NSS's `pk12util -i` into a fresh database (the store of Firefox, and of Chrome on
//! Linux), and a Java TLS client whose keystore is the file completing an mTLS request
//! through `twoway proxy` to an nginx backend.

mod common;

use common::lab::{Lab, EXIT_USAGE};
use common::process::{free_port, require_tool, run_with_timeout, strings};
use common::proxy::{nginx, proxy, support};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

const PASS: &str = "correct horse battery";

fn lab_with_user() -> Lab {
    let lab = Lab::with_ca("test:p12", "");
    std::fs::write(lab.path("pass.txt"), format!("{PASS}\n")).unwrap();
    lab
}

fn mode(lab: &Lab, file: &str) -> u32 {
    std::fs::metadata(lab.path(file))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn p12_files_open_in_openssl_keytool_and_nss() {
    require_tool("keytool", "openjdk-17-jdk-headless");
    require_tool("pk12util", "libnss3-tools");
    let lab = lab_with_user();
    // Modern: issue straight into a PKCS#12 file, no PEM key on disk.
    lab.tw_args(&[
        "cert",
        "issue",
        "--ca-dir",
        "ca",
        "--profile",
        "user",
        "--san",
        "EMAIL:alice@example.org",
        "--p12",
        "alice.p12",
        "--p12-passphrase-file",
        "pass.txt",
        "--friendly-name",
        "Alice (example.org)",
    ])
    .ok();
    assert_eq!(mode(&lab, "alice.p12"), 0o600);
    assert!(!lab.path("key.pem").exists());
    let info = lab
        .openssl("pkcs12 -info -in alice.p12 -passin file:pass.txt -noenc")
        .ok();
    let all = info.all();
    for want in [
        "MAC: sha256, Iteration 2048",
        "PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256",
        "Shrouded Keybag",
        "friendlyName: Alice (example.org)",
        "-----BEGIN PRIVATE KEY-----",
        "subject=O = Test CA, CN = Test CA Intermediate CA",
    ] {
        assert!(all.contains(want), "missing {want:?}:\n{all}");
    }
    // A wrong passphrase is refused by openssl (the MAC holds).
    std::fs::write(lab.path("wrong.txt"), "nope\n").unwrap();
    let bad = lab.openssl("pkcs12 -info -in alice.p12 -passin file:wrong.txt -noout");
    assert!(!bad.success(), "{bad}");

    // Legacy: a certificate issued as PEM files, exported with --legacy.
    let issued =
        lab.issue("--ca-dir ca --profile client --san URI:spiffe://example.org/bob --out bob");
    let serial = issued["serial"].as_str().unwrap().to_string();
    let o = lab
        .cmd(&[
            "cert",
            "export",
            &serial,
            "--ca-dir",
            "ca",
            "--key",
            "bob/key.pem",
            "--p12",
            "bob.p12",
            "--legacy",
        ])
        .env("TWOWAY_P12_PASSPHRASE", PASS)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode(&lab, "bob.p12"), 0o600);
    let info = lab
        .openssl("pkcs12 -legacy -info -in bob.p12 -passin file:pass.txt -noenc")
        .ok();
    let all = info.all();
    for want in [
        "MAC: sha1, Iteration 2048",
        "pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048",
        "friendlyName: spiffe://example.org/bob",
        "-----BEGIN PRIVATE KEY-----",
    ] {
        assert!(all.contains(want), "missing {want:?}:\n{all}");
    }
    // The exported key is bob's key.
    lab.openssl(
        "pkcs12 -legacy -in bob.p12 -passin file:pass.txt -nocerts -noenc -out bob-from-p12.key",
    )
    .ok();
    let a = lab.openssl("pkey -in bob-from-p12.key -pubout").ok().stdout;
    let b = lab.openssl("pkey -in bob/key.pem -pubout").ok().stdout;
    assert_eq!(a, b);

    // Java's keytool lists both as a private key entry with its chain.
    for (file, alias) in [
        ("alice.p12", "alice (example.org)"),
        ("bob.p12", "spiffe://example.org/bob"),
    ] {
        let o = lab.tool_args(
            "keytool",
            &[
                "-list",
                "-v",
                "-storetype",
                "PKCS12",
                "-keystore",
                file,
                "-storepass",
                PASS,
            ],
        );
        let all = o.all();
        assert!(o.success(), "{all}");
        assert!(
            all.contains("PrivateKeyEntry") && all.contains("Certificate chain length: 2"),
            "{all}"
        );
        assert!(all.to_lowercase().contains(alias), "{alias}: {all}");
    }
    // NSS imports both into a fresh database.
    std::fs::create_dir(lab.path("nss")).unwrap();
    lab.tool_args("certutil", &["-N", "-d", "sql:nss", "--empty-password"])
        .ok();
    for file in ["alice.p12", "bob.p12"] {
        let o = lab.tool_args("pk12util", &["-i", file, "-d", "sql:nss", "-W", PASS]);
        assert!(
            o.success() && o.all().contains("PKCS12 IMPORT SUCCESSFUL"),
            "{}",
            o.all()
        );
    }
    let keys = lab.tool_args("certutil", &["-K", "-d", "sql:nss"]).ok();
    assert_eq!(
        keys.stdout.lines().filter(|l| l.contains("ec ")).count(),
        2,
        "two private keys in NSS:\n{}",
        keys.stdout
    );
    let certs = lab.tool_args("certutil", &["-L", "-d", "sql:nss"]).ok();
    assert!(
        certs.stdout.contains("Alice (example.org)"),
        "{}",
        certs.stdout
    );
}

#[test]
fn a_java_client_with_the_p12_keystore_talks_mtls_through_the_proxy() {
    let java = require_tool("java", "openjdk-17-jdk-headless");
    let lab = lab_with_user();
    lab.issue("--ca-dir ca --profile server --san DNS:localhost --san IP:127.0.0.1 --out srv");
    lab.tw_args(&[
        "cert",
        "issue",
        "--ca-dir",
        "ca",
        "--profile",
        "user",
        "--san",
        "EMAIL:carol@example.org",
        "--p12",
        "carol.p12",
        "--p12-passphrase-file",
        "pass.txt",
        "--legacy",
    ])
    .ok();
    let (_nginx, backend, _) = nginx(lab.dir.path());
    let (port, admin) = (free_port(), free_port());
    let args = strings(&[
        "server",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--backend",
        &format!("127.0.0.1:{backend}"),
        "--cert",
        &lab.p("srv/chain.pem"),
        "--key",
        &lab.p("srv/key.pem"),
        "--client-ca",
        &lab.p("ca/root.pem"),
        "--http",
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let _proxy = proxy(lab.dir.path(), &args, admin);
    // With the identity: the backend's answer, with the identity the proxy passed on.
    let client = support("P12Client.java");
    let url = format!("https://localhost:{port}/hello");
    let java_run = |p12: &str| {
        run_with_timeout(
            Command::new(&java)
                .current_dir(lab.dir.path())
                .arg(&client)
                .args([&url, p12, PASS, "ca/root.pem"]),
            None,
            Duration::from_secs(60),
        )
    };
    // Both encodings: carol's --legacy file, dave's default (PBES2/AES-256) one.
    lab.tw_args(&[
        "cert",
        "issue",
        "--ca-dir",
        "ca",
        "--profile",
        "client",
        "--san",
        "URI:spiffe://example.org/dave",
        "--p12",
        "dave.p12",
        "--p12-passphrase-file",
        "pass.txt",
    ])
    .ok();
    for (file, who) in [
        ("carol.p12", "carol@example.org"),
        ("dave.p12", "spiffe://example.org/dave"),
    ] {
        let o = java_run(file);
        assert!(o.success(), "{o}");
        assert!(o.stdout.contains("status 200"), "{o}");
        assert!(
            o.stdout.contains("hello id=[") && o.stdout.contains(who),
            "the backend saw {who}: {o}"
        );
    }
    // A keystore of a certificate from another CA is refused in the handshake.
    lab.sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -keyout o.key -subj /CN=mallory -out o.pem && openssl pkcs12 -export -in o.pem -inkey o.key -passout pass:'correct horse battery' -out other.p12")
        .ok();
    let o = java_run("other.p12");
    assert!(!o.success() || !o.stdout.contains("status 200"), "{o}");
}

#[test]
fn bad_p12_requests_fail_before_anything_is_written_or_recorded() {
    let lab = lab_with_user();
    let count = || {
        lab.tw("cert list --ca-dir ca --json --limit 1").ok().json()["total"]
            .as_u64()
            .unwrap()
    };
    let before = count();
    // No passphrase and no terminal: exit 64 naming the ways to give one.
    let o = lab
        .tw("cert issue --ca-dir ca --profile user --san EMAIL:d@example.org --p12 d.p12")
        .code(EXIT_USAGE);
    assert!(
        o.stderr.contains("--p12-passphrase-file") && o.stderr.contains("TWOWAY_P12_PASSPHRASE"),
        "{o}"
    );
    // An empty passphrase.
    std::fs::write(lab.path("empty.txt"), "\n").unwrap();
    let o = lab
        .tw("cert issue --ca-dir ca --profile user --san EMAIL:d@example.org --p12 d.p12 --p12-passphrase-file empty.txt")
        .code(EXIT_USAGE);
    assert!(o.stderr.contains("empty"), "{o}");
    // The user profile without an e-mail address.
    let o = lab
        .tw("cert issue --ca-dir ca --profile user --san DNS:d.example.org --p12 d.p12 --p12-passphrase-file pass.txt")
        .fails();
    assert!(o.stderr.contains("EMAIL:"), "{o}");
    // A place no file can be written (its "directory" is a file).
    let o = lab
        .tw("cert issue --ca-dir ca --profile user --san EMAIL:d@example.org --p12 pass.txt/d.p12 --p12-passphrase-file pass.txt")
        .fails();
    assert!(o.stderr.contains("pass.txt"), "{o}");
    assert!(!lab.path("d.p12").exists());
    assert_eq!(count(), before, "nothing was recorded");
    // An existing file is kept unless --force.
    std::fs::write(lab.path("keep.p12"), "precious").unwrap();
    let o = lab
        .tw("cert issue --ca-dir ca --profile user --san EMAIL:d@example.org --p12 keep.p12 --p12-passphrase-file pass.txt")
        .fails();
    assert!(o.stderr.contains("keep.p12"), "{o}");
    assert_eq!(
        std::fs::read_to_string(lab.path("keep.p12")).unwrap(),
        "precious"
    );
    assert_eq!(count(), before, "nothing was recorded");
    // Export with a key that is not the certificate's.
    let one =
        lab.issue("--ca-dir ca --profile client --san URI:spiffe://example.org/one --out one");
    lab.issue("--ca-dir ca --profile client --san URI:spiffe://example.org/two --out two");
    let serial = one["serial"].as_str().unwrap();
    let o = lab
        .tw(&format!(
            "cert export {serial} --ca-dir ca --key two/key.pem --p12 one.p12 --p12-passphrase-file pass.txt"
        ))
        .code(EXIT_USAGE);
    assert!(o.stderr.contains("is not the key of certificate"), "{o}");
    assert!(!lab.path("one.p12").exists());
    // Export of a serial the inventory does not have.
    let o = lab
        .tw("cert export 0badc0ffee --ca-dir ca --key one/key.pem --p12 one.p12 --p12-passphrase-file pass.txt")
        .fails();
    assert!(!lab.path("one.p12").exists(), "{o}");
}
