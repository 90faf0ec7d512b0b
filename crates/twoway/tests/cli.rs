//! What a person sees at the terminal: output into a closed pipe, error messages, colours,
//! help, the importer's handling of mixed files, and text from certificates that must not
//! drive the terminal. Every command runs the real binary in its own temporary directory.

mod common;

use common::lab::{Lab, EXIT_DATAERR, EXIT_USAGE};
use common::{free_port, read, read_in_background, run, wait_child, words, write, Server, TWOWAY};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// A lab whose commands run as `test:cli`.
fn lab() -> Lab {
    Lab::new("test:cli")
}

/// A CA in `ca` with one server and one client certificate.
fn with_certificates() -> Lab {
    let lab = lab();
    lab.tw_args(&["ca", "init", "--ca-dir", "ca", "--name", "Cli Test"])
        .ok();
    lab.tw("cert issue --ca-dir ca --profile server --san DNS:api.example.internal --out api")
        .ok();
    lab.tw("cert issue --ca-dir ca --profile client --san URI:spiffe://example.org/billing --out billing")
        .ok();
    lab
}

/// Runs `twoway ARGS` with its stdout a pipe whose reading end is already closed, as in
/// `twoway … | head -1` once head has exited. Returns the exit code and stderr.
fn into_closed_pipe(lab: &Lab, args: &[&str]) -> (Option<i32>, String) {
    let mut child = lab
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twoway");
    drop(child.stdout.take());
    let reader = read_in_background(child.stderr.take().expect("stderr is piped"));
    let status = wait_child(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
        panic!("twoway {args:?} did not end within 60 s with its stdout closed")
    });
    let stderr = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    (status.code(), stderr)
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let lab = with_certificates();
    for args in [
        &["cert", "inspect", "api/chain.pem"][..],
        &["ca", "show", "--ca-dir", "ca"],
        &["ca", "show", "--ca-dir", "ca", "--json"],
        &["cert", "list", "--ca-dir", "ca"],
        &["cert", "list", "--ca-dir", "ca", "--json"],
        &["audit", "list", "--ca-dir", "ca"],
        &["cert", "check", "--ca-dir", "ca", "--within", "400d"],
        &["cert", "list", "--help"],
    ] {
        let (code, stderr) = into_closed_pipe(&lab, args);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "twoway {args:?} into a closed pipe:\n{stderr}"
        );
        let expected = if args.contains(&"check") { 1 } else { 0 };
        assert_eq!(
            code,
            Some(expected),
            "twoway {args:?} into a closed pipe should end quietly (exit {expected}):\n{stderr}"
        );
        assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    }
    // The same through a real pipeline with a long listing.
    let o = run(lab.command("bash").env("PATH", path_with_twoway()).args([
        "-c",
        "set -o pipefail; for i in 1 2 3; do twoway cert inspect api/chain.pem; done | head -1; \
             twoway audit list --ca-dir ca --limit 1000 | head -c 10 >/dev/null",
    ]));
    assert!(o.success(), "{o}");
    assert!(!o.stderr.contains("panicked"), "{o}");
}

/// PATH with the directory of the binary under test first.
fn path_with_twoway() -> String {
    let dir = Path::new(TWOWAY).parent().expect("binary directory");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn each_cause_of_an_error_is_printed_once() {
    let lab = lab();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let o = lab
        .tw(&format!(
            "proxy server --listen {listen} --backend 127.0.0.1:9 --cert missing.pem \
             --key missing.key --client-ca missing-ca.pem"
        ))
        .fails();
    assert_eq!(
        o.stderr.matches("No such file or directory").count(),
        1,
        "the OS error once:\n{o}"
    );
    assert!(o.stderr.contains("missing.pem"), "{o}");
    assert_eq!(o.stderr.matches("error:").count(), 1, "{o}");

    let o = lab
        .tw_args(&["ca", "init", "--name", "X", "--passphrase-file", "nope"])
        .fails();
    assert_eq!(
        o.stderr.matches("No such file or directory").count(),
        1,
        "{o}"
    );
}

#[test]
fn logs_carry_colour_only_on_a_terminal() {
    let lab = lab();
    lab.tw_args(&["quickstart", "demo"]).ok();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = lab.cmd(&words(&format!(
        "proxy server --listen {listen} --backend 127.0.0.1:9 --cert demo/server/chain.pem \
         --key demo/server/key.pem --client-ca demo/server/ca.pem"
    )));
    let log = lab.path("proxy.log");
    let mut server = Server::spawn("proxy", &mut cmd, &log);
    server.wait_for_port(port);
    drop(server);
    let text = read(&log);
    assert!(!text.trim().is_empty(), "the proxy logs its start");
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI escape in a log written to a file:\n{text:?}"
    );
}

#[test]
fn messages_name_the_valid_choices() {
    let lab = with_certificates();
    let o = lab
        .tw("cert issue --ca-dir ca --profile sever --san DNS:a.example.internal --out x")
        .code(EXIT_USAGE);
    assert!(
        o.stderr.contains("server, client, peer, device or user")
            && !o.stderr.contains("certificate generation failed"),
        "{o}"
    );
    let o = lab
        .tw("cert issue --ca-dir ca --profile server --ttl 2y --san DNS:a.example.internal --out x")
        .fails();
    assert!(
        o.stderr.contains("730d") && !o.stderr.contains("730d 0h"),
        "{o}"
    );
    let o = lab
        .tw_args(&["cert", "list", "--ca-dir", "ca", "--profile", "sever"])
        .code(EXIT_USAGE);
    assert!(o.stderr.contains("server, client, peer"), "{o}");
    // A CSR for a SPIFFE ID is a client's: the next step says so.
    for (san, out, profile) in [
        (
            "URI:spiffe://example.org/ns/prod/sa/billing",
            "csr-billing",
            "client",
        ),
        ("DNS:web.example.internal", "csr-web", "server"),
    ] {
        let o = lab.tw(&format!("cert csr --san {san} --out {out}")).ok();
        assert!(o.stdout.contains(&format!("--profile {profile}")), "{o}");
    }
}

#[test]
fn help_shows_examples() {
    let lab = lab();
    for cmd in [
        &["proxy", "server"][..],
        &["proxy", "client"],
        &["crl"],
        &["audit"],
        &["audit", "list"],
        &["audit", "verify"],
        &["ca", "show"],
        &["ca", "serve"],
        &["cert", "show"],
        &["cert", "revoke"],
        &["cert", "check"],
        &["cert", "export"],
        &["cert", "issue"],
        &["token", "create"],
        &["agent"],
        &["acme", "eab", "create"],
        &["acme", "eab", "list"],
        &["acme", "eab", "revoke"],
        &["acme", "renew-early"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = lab.tw_args(&args).ok();
        assert!(
            o.stdout.contains("Example"),
            "twoway {} --help shows examples:\n{o}",
            cmd.join(" ")
        );
    }
}

#[test]
fn secrets_in_the_environment_stay_out_of_help_and_errors() {
    let lab = lab();
    let secret = "s3cret-Passw0rd";
    let url = format!("postgres://twoway:{secret}@127.0.0.1:1/twoway");
    for (env, cmd) in [
        ("TWOWAY_DATABASE", &["ca", "serve"][..]),
        ("TWOWAY_TOKEN", &["agent"]),
        ("TWOWAY_ENROLL_TOKEN", &["proxy", "server"]),
    ] {
        let value = if env == "TWOWAY_DATABASE" {
            url.clone()
        } else {
            format!("twt_{secret}")
        };
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = run(lab.cmd(&args).env(env, &value)).ok();
        assert!(o.stdout.contains(env), "--help names {env}:\n{o}");
        assert!(!o.all().contains(secret), "{env} leaked into --help:\n{o}");
    }
    lab.tw_args(&["ca", "init", "--ca-dir", "ca", "--name", "X"])
        .ok();
    let o = run(lab
        .cmd(&["ca", "serve", "--ca-dir", "ca"])
        .env("TWOWAY_DATABASE", &url))
    .fails();
    assert!(!o.all().contains(secret), "the password leaked:\n{o}");
}

/// A self-signed certificate whose subject and DNS name carry terminal control sequences.
fn hostile_certificate(path: &Path) -> String {
    let cn = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J\r\nstatus       revoked\u{9b}31m";
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.subject_alt_names = vec![rcgen::SanType::DnsName(
        rcgen::string::Ia5String::try_from("x\u{1b}[31m.example.com").unwrap(),
    )];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    write(path, cert.pem());
    cn.to_string()
}

/// Fails when `text` holds a control character other than a line feed.
#[track_caller]
fn assert_no_controls(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: control characters {bad:?} reach the terminal:\n{text}"
    );
}

#[test]
fn control_characters_from_certificates_are_escaped_for_people_and_exact_in_json() {
    let lab = lab();
    lab.tw_args(&["ca", "init", "--ca-dir", "ca", "--name", "X"])
        .ok();
    let cn = hostile_certificate(&lab.path("evil.pem"));
    let o = lab.tw("cert import evil.pem --ca-dir ca").ok();
    assert_no_controls("cert import", &o.all());
    assert!(o.stdout.contains("\\x1b"), "the escape is shown: {o}");
    let list = lab.tw("cert list --ca-dir ca --json").ok().json();
    let rec = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "imported")
        .expect("the import is listed")
        .clone();
    let fp = rec["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(
        rec["common_name"],
        cn.as_str(),
        "JSON keeps the exact value"
    );
    for args in [
        &["cert", "list", "--ca-dir", "ca"][..],
        &["cert", "show", &fp, "--ca-dir", "ca"],
        &["cert", "inspect", "evil.pem"],
        &["audit", "list", "--ca-dir", "ca"],
        &["cert", "check", "--ca-dir", "ca", "--within", "3650d"],
    ] {
        let o = lab.tw_args(args);
        assert_no_controls(&args.join(" "), &o.all());
    }
    let o = lab.tw_args(&["cert", "show", &fp, "--ca-dir", "ca"]).ok();
    assert!(
        !o.stdout
            .lines()
            .any(|l| l.starts_with("status       revoked")),
        "a certificate cannot forge a line of `cert show`:\n{o}"
    );
    let shown = lab
        .tw(&format!("cert show {fp} --ca-dir ca --json"))
        .ok()
        .json();
    assert_eq!(shown["common_name"], cn.as_str());
}

#[test]
fn import_of_a_mixed_glob_skips_files_without_certificates() {
    let lab = with_certificates();
    let certs = lab.path("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(lab.path("api/cert.pem"), certs.join("api.pem")).unwrap();
    std::fs::copy(lab.path("api/key.pem"), certs.join("api-key.pem")).unwrap();
    std::fs::copy(lab.path("billing/chain.pem"), certs.join("billing.pem")).unwrap();
    write(certs.join("notes.pem"), "not a certificate at all\n");

    // A fresh CA, so everything there is new to it.
    lab.tw_args(&["ca", "init", "--ca-dir", "inv", "--name", "Inventory"])
        .ok();
    let mut files: Vec<String> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| format!("certs/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    files.sort();
    let mut args = vec!["cert", "import", "--ca-dir", "inv", "--owner", "team-web"];
    args.extend(files.iter().map(String::as_str));
    let o = lab.tw_args(&args).ok();
    assert!(
        o.all().contains("certs/api-key.pem") && o.all().contains("certs/notes.pem"),
        "the skipped files are named:\n{o}"
    );
    assert!(o.all().contains("skipped"), "{o}");
    let list = lab
        .tw("cert list --ca-dir inv --owner team-web --json")
        .ok()
        .json();
    // api.pem, and billing.pem's leaf and intermediate.
    assert_eq!(list["total"], 3, "{list:#}");

    // --json names every file with its outcome.
    lab.tw_args(&["ca", "init", "--ca-dir", "inv2", "--name", "Inventory"])
        .ok();
    let mut args = vec!["cert", "import", "--ca-dir", "inv2", "--json"];
    args.extend(files.iter().map(String::as_str));
    let v = lab.tw_args(&args).ok().json();
    let skipped: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "skipped")
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["certs/api-key.pem", "certs/notes.pem"], "{v:#}");

    // Nothing to import at all: an error.
    let o = lab
        .tw_args(&["cert", "import", "--ca-dir", "inv", "certs/api-key.pem"])
        .code(EXIT_DATAERR);
    assert!(o.stderr.contains("certs/api-key.pem"), "{o}");

    // A malformed certificate among good ones: an error, and nothing imported.
    write(
        certs.join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHHIG\n-----END CERTIFICATE-----\n",
    );
    lab.tw_args(&["ca", "init", "--ca-dir", "inv3", "--name", "Inventory"])
        .ok();
    let o = lab
        .tw("cert import --ca-dir inv3 certs/api.pem certs/broken.pem")
        .code(EXIT_DATAERR);
    assert!(o.stderr.contains("certs/broken.pem"), "{o}");
    let list = lab.tw("cert list --ca-dir inv3 --json").ok().json();
    assert_eq!(list["total"], 2, "only the CA's own two: {list:#}");
}
