//! README.md's own path, walked: every `sh` code block, in order, runs in one bash shell in
//! a fresh directory against the binary under test, including the online CA, the agent and
//! the proxy. The few substitutions a reader makes too (an ID from `cert list`, a directory
//! of certificates) and the test's own (free ports instead of 9000, 8443, 8444 and 8080;
//! `twoway` instead of `cargo run …`) are listed below; the commands it does not run are
//! listed with the reason, and each must still be in the README, so the two cannot drift.
//! `WALK_SHOW=1 cargo test -p twoway --test readme -- --nocapture` prints the whole walk.

mod common;

use common::pki::openssl_self_signed;
use common::{free_port, read, require_tool, tempdir, wait_child, write, TWOWAY};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long the whole walk may take.
const WALK_TIMEOUT: Duration = Duration::from_secs(300);

/// Stops the background jobs the walk started (each its own process group) by their ids,
/// recorded in `walk.pids`.
fn stop_jobs(dir: &Path) {
    let pids = std::fs::read_to_string(dir.join("walk.pids")).unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
}

/// Commands of the README the walk does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "./scripts/test-all",
        "it is the test suite this walk is part of",
    ),
    (
        "cargo install --path crates/twoway",
        "it builds a release binary; the walk runs the binary under test from PATH",
    ),
];

/// What the walk replaces, as a reader would (`4f3a9c21e0b7` stands for an ID of their
/// own). Ports are replaced separately.
fn substitutions() -> Vec<(&'static str, String)> {
    vec![
        ("cargo run -q -p twoway -- ", "twoway ".to_string()),
        ("/etc/nginx/certs", "./nginx-certs".to_string()),
        (
            "4f3a9c21e0b7",
            "$(twoway cert list --owner team-payments | awk 'NR == 2 {print $1}')".to_string(),
        ),
    ]
}

/// The `sh` code blocks of a Markdown text, in order.
fn sh_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match &mut current {
            None if line.trim_start() == "```sh" => current = Some(String::new()),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block in README.md");
    blocks
}

/// Joins continuation lines (`\` at the end), so each entry is one command as typed.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        out.push(std::mem::take(&mut cur));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The command without its comment and surrounding blanks (for matching [`NOT_RUN`]).
fn bare(command: &str) -> String {
    command
        .split(" #")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces each whole-word port number with a free port.
fn replace_ports(text: &str, ports: &[(u16, u16)]) -> String {
    let mut out = text.to_string();
    for (from, to) in ports {
        let from = from.to_string();
        let mut result = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&from) {
            let before = rest[..i].chars().last();
            let after = rest[i + from.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            result.push_str(&rest[..i]);
            if word(before) || word(after) {
                result.push_str(&from);
            } else {
                result.push_str(&to.to_string());
            }
            rest = &rest[i + from.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

#[test]
fn readme_blocks_have_what_the_walk_expects() {
    let md = read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"));
    let all: Vec<String> = sh_blocks(&md)
        .iter()
        .flat_map(|b| commands(b))
        .map(|c| bare(&c))
        .collect();
    for (cmd, why) in NOT_RUN {
        assert!(
            all.iter().any(|c| c == cmd),
            "the walk skips `{cmd}` ({why}), which README.md no longer has: update NOT_RUN"
        );
    }
    for (from, _) in substitutions() {
        assert!(
            md.contains(from),
            "the walk replaces {from:?}, which README.md no longer has"
        );
    }
    assert_eq!(
        replace_ports("a:9000 b 9000x 19000 c 9000", &[(9000, 1)]),
        "a:1 b 9000x 19000 c 1"
    );
}

#[test]
fn readme_walks_end_to_end() {
    for (tool, package) in [
        ("bash", "bash"),
        ("openssl", "openssl"),
        ("curl", "curl"),
        ("python3", "python3"),
        ("awk", "gawk"),
    ] {
        require_tool(tool, package);
    }
    let md = read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"));
    let dir = tempdir();

    // A directory like /etc/nginx/certs: a certificate from elsewhere and its key.
    let certs = dir.path().join("nginx-certs");
    std::fs::create_dir(&certs).unwrap();
    openssl_self_signed(&certs, "shop-key.pem", "shop.pem", "shop.example.com", 90);

    let ports: Vec<(u16, u16)> = [9000, 8443, 8444, 8080]
        .into_iter()
        .map(|p| (p, free_port()))
        .collect();
    let port = |p: u16| {
        ports
            .iter()
            .find(|(f, _)| *f == p)
            .map(|(_, t)| *t)
            .unwrap()
    };

    // Job control gives each background command its own process group, so stopping it
    // stops everything it started; their ids go to walk.pids as they start.
    let mut script = String::from(
        "set -euo pipefail -m\n\
         stop() { for p in $(cat walk.pids 2>/dev/null); do kill -TERM -- -$p 2>/dev/null || true; done; wait; }\n\
         trap stop EXIT\n\
         set -x\n",
    );
    let mut skipped = Vec::new();
    for block in sh_blocks(&md) {
        for cmd in commands(&block) {
            if let Some((_, why)) = NOT_RUN.iter().find(|(c, _)| bare(&cmd) == *c) {
                skipped.push(format!("{cmd}  ({why})"));
                script.push_str(&format!("# not run: {cmd}\n"));
                continue;
            }
            let mut line = cmd.clone();
            for (from, to) in substitutions() {
                line = line.replace(from, &to);
            }
            script.push_str(&replace_ports(&line, &ports));
            script.push('\n');
            if bare(&cmd).ends_with('&') {
                script.push_str("echo $! >> walk.pids\n");
            }
        }
    }
    assert_eq!(skipped.len(), NOT_RUN.len(), "{skipped:?}");
    // After the README: what its background commands promised, each wait bounded.
    script.push_str(&format!(
        "set +x\n\
         for _ in $(seq 1 150); do [ -s ./workload/chain.pem ] && break; sleep 0.2; done\n\
         openssl verify -CAfile ./ca/root.pem -untrusted ./ca/intermediate.pem ./workload/cert.pem\n\
         curl -sf --retry 15 --retry-connrefused --retry-delay 1 \
           --resolve api.example.internal:{p8444}:127.0.0.1 --cacert ./ca/root.pem \
           --cert ./billing/chain.pem --key ./billing/key.pem \
           https://api.example.internal:{p8444}/ >/dev/null\n\
         echo WALKED TO THE END\n",
        p8444 = port(8444)
    ));
    write(dir.path().join("walk.sh"), &script);

    let bin = Path::new(TWOWAY).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Output to a file, not a pipe: a background job that outlived the walk cannot hold
    // the test up.
    let log = dir.path().join("walk.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("walk.sh")
        .current_dir(dir.path())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, _) in std::env::vars() {
        if k.starts_with("TWOWAY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("start bash");
    let status = wait_child(&mut child, WALK_TIMEOUT);
    stop_jobs(dir.path());
    let text = read(&log);
    assert!(
        status.is_some_and(|s| s.success()) && text.contains("\nWALKED TO THE END"),
        "README.md's commands did not all succeed within {WALK_TIMEOUT:?} ({status:?}):\n{text}\n--- script ---\n{script}"
    );
    if std::env::var_os("WALK_SHOW").is_some() {
        eprintln!("{text}");
    }
    // The walk did what the README says.
    let d = |rel: &str| dir.path().join(rel);
    for f in [
        "ca/root.pem",
        "api/chain.pem",
        "billing/chain.pem",
        "crl.pem",
        "admin/key.pem",
    ] {
        assert!(d(f).exists(), "{f} after the walk:\n{text}");
    }
    assert!(
        text.contains("skipped ./nginx-certs/shop-key.pem"),
        "the key in the certificate directory is skipped:\n{text}"
    );
}
