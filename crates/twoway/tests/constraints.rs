//! The CA never signs a name outside its own intermediate's name constraints, whatever
//! ca.toml says: a policy wider than the constraints is refused when the configuration is
//! read, and every issuing path (cert issue, cert sign, enrollment, /v1/sign, the server's
//! own certificate) refuses a name, or a DNS-like common name, outside them. Whatever is
//! issued, `openssl verify` accepts: it never sees a violating certificate.

mod common;

use common::{free_port, read, require_tool, run, tempdir, write, Output, Server, TWOWAY};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXIT_USAGE: i32 = 64;

struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    /// A CA in `ca` whose intermediate permits example.internal, 10.0.0.0/8 and 127.0.0.1.
    fn new() -> Lab {
        let lab = Lab { dir: tempdir() };
        lab.tw(&[
            "ca",
            "init",
            "--ca-dir",
            "ca",
            "--name",
            "Constrained",
            "--permit-dns",
            "example.internal",
            "--permit-ip",
            "10.0.0.0/8",
            "--permit-ip",
            "127.0.0.1",
            "--trust-domain",
            "example.org",
        ])
        .ok();
        lab
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(TWOWAY);
        c.current_dir(self.dir.path())
            .env_remove("TWOWAY_CA_URL")
            .env_remove("TWOWAY_DATABASE")
            .env_remove("TWOWAY_PASSPHRASE_FILE")
            .env("TWOWAY_CA_DIR", self.path("ca"))
            .env("TWOWAY_ACTOR", "test:constraints")
            .args(args);
        c
    }

    #[track_caller]
    fn tw(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    #[track_caller]
    fn openssl(&self, args: &[&str]) -> Output {
        require_tool("openssl", "openssl");
        run(Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args))
    }

    /// How many certificates the inventory holds.
    fn recorded(&self) -> u64 {
        let o = self
            .tw(&["cert", "list", "--json", "--limit", "100000"])
            .ok();
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v["total"].as_u64().unwrap()
    }

    /// A CSR (and key) made by openssl with this subject and SAN extension.
    fn csr(&self, name: &str, subject: &str, sans: &str) -> PathBuf {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
            "-addext",
            &format!("subjectAltName={sans}"),
        ])
        .ok();
        self.path(&format!("{name}.csr"))
    }

    /// `openssl verify` of a leaf (PEM file) against the CA: true when it verifies.
    fn verifies(&self, cert: &Path) -> (bool, String) {
        let o = self.openssl(&[
            "verify",
            "-CAfile",
            &self.s("ca/root.pem"),
            "-untrusted",
            &self.s("ca/intermediate.pem"),
            cert.to_str().unwrap(),
        ]);
        (o.success(), o.all())
    }

    /// Whatever a command issued verifies; a refusal issued nothing.
    #[track_caller]
    fn issued_verifies_or_refused(&self, what: &str, o: &Output, cert: &Path, before: u64) {
        if o.success() {
            let (ok, text) = self.verifies(cert);
            assert!(
                ok,
                "{what} issued a certificate openssl rejects:\n{text}\n{o}"
            );
        } else {
            // refused for the constraints, or earlier because a free CN is no SAN at all
            assert!(
                o.stderr.contains("name constraints")
                    || o.stderr.contains("is not one of the certificate's SANs"),
                "{what}: the refusal names what was wrong:\n{o}"
            );
            assert_eq!(self.recorded(), before, "{what}: a refusal records nothing");
            assert!(!cert.exists(), "{what}: no file written");
        }
    }
}

#[test]
fn a_policy_wider_than_the_intermediate_is_refused_when_read() {
    let lab = Lab::new();
    let before = lab.recorded();
    let toml = lab.path("ca/ca.toml");
    let original = read(&toml);
    let widened = original.replace(
        "dns = [\"example.internal\"]",
        "dns = [\"example.internal\", \"localhost\"]",
    );
    assert_ne!(widened, original, "the policy line is where init wrote it");
    write(&toml, &widened);
    for args in [
        &[
            "cert",
            "issue",
            "--profile",
            "server",
            "--san",
            "DNS:localhost",
            "--out",
            "local",
        ][..],
        &["cert", "list"],
        &["ca", "serve", "--listen", "127.0.0.1:0"],
    ] {
        let o = lab.tw(args).code(EXIT_USAGE);
        for needle in [
            "\"localhost\"",
            "name constraints",
            "intermediate.pem",
            "new intermediate",
        ] {
            assert!(o.stderr.contains(needle), "{needle:?} in:\n{o}");
        }
    }
    assert!(!lab.path("local").exists(), "nothing written");

    // Removing the dns line allows every DNS name: as wide, as refused.
    let unrestricted: String = original
        .lines()
        .filter(|l| !l.starts_with("dns = "))
        .map(|l| format!("{l}\n"))
        .collect();
    write(&toml, &unrestricted);
    let o = lab.tw(&["cert", "list"]).code(EXIT_USAGE);
    assert!(o.stderr.contains("dns is absent"), "{o}");

    write(&toml, &original);
    assert_eq!(lab.recorded(), before, "nothing was recorded meanwhile");
}

#[test]
fn no_path_signs_a_name_outside_the_constraints() {
    let lab = Lab::new();
    // The offline paths: a free common name beside an IP SAN is what OpenSSL checks
    // against the DNS constraints.
    let before = lab.recorded();
    let o = lab.tw(&[
        "cert",
        "issue",
        "--profile",
        "server",
        "--san",
        "IP:10.0.0.5",
        "--cn",
        "www.evil.com",
        "--out",
        "issued",
    ]);
    lab.issued_verifies_or_refused("cert issue", &o, &lab.path("issued/cert.pem"), before);

    let csr = lab.csr("evil", "/CN=www.evil.com", "IP:10.0.0.6");
    let before = lab.recorded();
    let o = lab.tw(&[
        "cert",
        "sign",
        csr.to_str().unwrap(),
        "--profile",
        "server",
        "--out",
        "signed",
    ]);
    lab.issued_verifies_or_refused("cert sign", &o, &lab.path("signed/cert.pem"), before);

    // A name outside: refused by the policy (which init keeps inside the constraints).
    let o = lab
        .tw(&[
            "cert",
            "issue",
            "--profile",
            "server",
            "--san",
            "DNS:localhost",
            "--out",
            "outside",
        ])
        .fails();
    assert!(o.stderr.contains("DNS:localhost"), "{o}");

    // The server's own certificate: a name outside the constraints stops it with a
    // message naming --san.
    let o = lab
        .tw(&[
            "ca",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--san",
            "DNS:localhost",
        ])
        .fails();
    assert!(
        o.stderr.contains("DNS:localhost") && o.stderr.contains("--san"),
        "{o}"
    );

    // The online paths.
    lab.tw(&[
        "cert",
        "issue",
        "--profile",
        "client",
        "--san",
        "URI:spiffe://example.org/admin",
        "--out",
        "admin",
    ])
    .ok();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = lab.cmd(&[
        "ca",
        "serve",
        "--listen",
        &listen,
        "--san",
        "IP:127.0.0.1",
        "--admin",
        "URI:spiffe://example.org/admin",
    ]);
    let mut server = Server::spawn("ca serve", &mut cmd, &lab.path("serve.log"));
    server.wait_for_port(port);
    let url = format!("https://127.0.0.1:{port}");
    let remote = |args: &[&str]| {
        let mut a = vec![
            "--ca",
            url.as_str(),
            "--cert",
            "admin/chain.pem",
            "--key",
            "admin/key.pem",
            "--ca-cert",
            "ca/root.pem",
        ];
        a.extend_from_slice(args);
        lab.tw(&a)
    };

    // /v1/sign through the remote CLI.
    let before = lab.recorded();
    let o = remote(&[
        "cert",
        "sign",
        csr.to_str().unwrap(),
        "--profile",
        "server",
        "--out",
        "remote-signed",
    ]);
    lab.issued_verifies_or_refused("/v1/sign", &o, &lab.path("remote-signed/cert.pem"), before);

    // Enrollment with a token for the IP, and a CSR with the evil CN.
    let token = remote(&[
        "token",
        "create",
        "--san",
        "IP:10.0.0.6",
        "--profile",
        "server",
    ])
    .ok()
    .stdout
    .trim()
    .to_string();
    let body = serde_json::json!({"token": token, "csr": read(&csr)}).to_string();
    write(lab.path("enroll.json"), body);
    let before = lab.recorded();
    let o = run(Command::new("curl").current_dir(lab.dir.path()).args([
        "-sS",
        "--cacert",
        "ca/root.pem",
        "-H",
        "content-type: application/json",
        "--data-binary",
        "@enroll.json",
        "-w",
        "\n%{http_code}",
        &format!("{url}/v1/enroll"),
    ]));
    let text = o.stdout.clone();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    if code.trim() == "200" {
        let v: Value = serde_json::from_str(answer).unwrap();
        write(lab.path("enrolled.pem"), v["certificate"].as_str().unwrap());
        let (ok, text) = lab.verifies(&lab.path("enrolled.pem"));
        assert!(ok, "enrollment issued what openssl rejects:\n{text}");
    } else {
        assert!(
            code.trim().starts_with('4')
                && (answer.contains("name constraints") || answer.contains("cn_not_a_san")),
            "enrollment refusal: {text}\n{}",
            server.log()
        );
        assert_eq!(lab.recorded(), before);
    }
}
