//! A test's private workspace: a temporary directory in which the real `twoway` (with no
//! TWOWAY_* variable from the outside world), openssl and sh run; and the offline CA's
//! helpers on it: init, issue, what the inventory and audit log hold, and refusals that
//! must record nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::pki::{openssl_in, openssl_self_signed};
use super::process::{dir_entries, run, words, Output, TWOWAY};

// Exit codes, as documented in `twoway --help` and the `exit` module of src/main.rs.
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_DATAERR: i32 = 65;
pub const EXIT_NOINPUT: i32 = 66;
pub const EXIT_CANTCREAT: i32 = 73;
pub const EXIT_IOERR: i32 = 74;
pub const EXIT_NOPERM: i32 = 77;

/// A temporary directory that is the working directory of every command run through it.
pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The audit log's actor of every `twoway` command (TWOWAY_ACTOR).
    actor: &'static str,
    /// Point TWOWAY_CA_DIR at `ca/` in the lab, so commands need no `--ca-dir`.
    ca_dir_env: bool,
}

impl Lab {
    /// A lab whose commands run as `actor` and name their CA directory themselves.
    pub fn new(actor: &'static str) -> Lab {
        Lab {
            dir: super::process::tempdir(),
            actor,
            ca_dir_env: false,
        }
    }

    /// A lab with a CA in `ca/` made by [`Lab::init_ca`] with `extra` options.
    #[track_caller]
    pub fn with_ca(actor: &'static str, extra: &str) -> Lab {
        let lab = Lab::new(actor);
        lab.init_ca("ca", extra);
        lab
    }

    /// A lab whose commands find their CA in `ca/` through TWOWAY_CA_DIR.
    pub fn with_ca_dir_env(actor: &'static str) -> Lab {
        Lab {
            ca_dir_env: true,
            ..Lab::new(actor)
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A path inside the lab as a string, for command lines and config files.
    pub fn p(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    /// `program` to be run in the lab, with no TWOWAY_* variable and no RUST_LOG from the
    /// outside world.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TWOWAY_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.env("TWOWAY_ACTOR", self.actor);
        // a lab with a SoftHSM2 configuration of its own (tests/hsm.rs) runs every command
        // against its tokens
        let softhsm = self.path("softhsm2.conf");
        if softhsm.exists() {
            c.env("SOFTHSM2_CONF", softhsm);
        }
        if self.ca_dir_env {
            c.env("TWOWAY_CA_DIR", self.path("ca"));
        }
        c
    }

    /// `twoway ARGS` to be run in the lab.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = self.command(TWOWAY);
        c.args(args);
        c
    }

    /// Runs `twoway LINE` in the lab, the line split on whitespace.
    #[track_caller]
    pub fn tw(&self, line: &str) -> Output {
        self.tw_args(&words(line))
    }

    /// Runs `twoway ARGS` in the lab.
    #[track_caller]
    pub fn tw_args<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run(&mut self.cmd(args))
    }

    /// `sh -c LINE` to be run in the lab, with `$TWOWAY` naming the binary (for `umask`).
    pub fn sh_cmd(&self, line: &str) -> Command {
        let mut c = self.command("sh");
        c.env("TWOWAY", TWOWAY).args(["-c", line]);
        c
    }

    /// Runs `sh -c LINE` in the lab.
    #[track_caller]
    pub fn sh(&self, line: &str) -> Output {
        run(&mut self.sh_cmd(line))
    }

    /// Runs a program (curl, python3) in the lab.
    #[track_caller]
    pub fn tool_args<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Output {
        run(Command::new(program)
            .current_dir(self.dir.path())
            .args(args))
    }

    /// Runs `openssl LINE` in the lab, the line split on whitespace.
    #[track_caller]
    pub fn openssl(&self, line: &str) -> Output {
        openssl_in(self.dir.path(), &words(line))
    }

    /// `twoway --ca URL ARGS` as the administrator whose certificate is in `admin/`,
    /// trusting `ca/root.pem`.
    #[track_caller]
    pub fn remote(&self, url: &str, args: &[&str]) -> Output {
        let mut a = vec!["--ca", url, "--cert", "admin/chain.pem", "--key"];
        a.extend(["admin/key.pem", "--ca-cert", "ca/root.pem"]);
        a.extend_from_slice(args);
        self.tw_args(&a)
    }

    /// `openssl verify` of `cert` against `ca/root.pem` with `ca/intermediate.pem` (and
    /// `extra` options): whether it verifies, and what openssl said.
    #[track_caller]
    pub fn verifies(&self, cert: impl AsRef<Path>, extra: &str) -> (bool, String) {
        let cert = cert.as_ref().display();
        let o = self.openssl(&format!(
            "verify -CAfile ca/root.pem -untrusted ca/intermediate.pem {extra} {cert}"
        ));
        (o.success(), o.all())
    }

    /// A self-signed certificate from openssl, as if from another CA: NAME.pem and
    /// NAME.key.
    #[track_caller]
    pub fn foreign_cert(&self, name: &str, dns: &str) {
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        openssl_self_signed(self.dir.path(), &key, &cert, dns, 40);
    }

    /// `twoway ca init --ca-dir CA --name "Test CA" EXTRA`, which must succeed.
    #[track_caller]
    pub fn init_ca(&self, ca: &str, extra: &str) {
        let mut args = words(&format!("ca init --ca-dir {ca} {extra}"));
        args.extend(["--name".to_string(), "Test CA".to_string()]);
        let out = self.tw_args(&args).ok();
        assert!(
            out.stdout.contains("Created a CA"),
            "ca init should say what it created:\n{out}"
        );
    }

    /// `twoway cert issue --json ARGS`, which must succeed; returns what it printed.
    #[track_caller]
    pub fn issue(&self, args: &str) -> Value {
        self.tw(&format!("cert issue --json {args}")).ok().json()
    }

    /// What the inventory and the audit log hold, to prove that a refused command
    /// recorded nothing.
    #[track_caller]
    pub fn recorded(&self, ca: &str) -> Recorded {
        let list = self
            .tw(&format!("cert list --ca-dir {ca} --json --limit 100000"))
            .ok()
            .json();
        let audit = self
            .tw(&format!("audit list --ca-dir {ca} --json --limit 100000"))
            .ok()
            .json();
        Recorded {
            total: list["total"]
                .as_u64()
                .expect("cert list --json has a total"),
            fingerprints: list["items"]
                .as_array()
                .expect("cert list --json has items")
                .iter()
                .map(|i| i["fingerprint"].as_str().unwrap_or_default().to_string())
                .collect(),
            audit: audit
                .as_array()
                .expect("audit list --json is an array")
                .clone(),
        }
    }

    /// Runs `twoway LINE`, which must be refused: exit `code`, every one of `needles` in
    /// the error message, nothing recorded in the inventory or the audit log of `ca`, and
    /// no file (not even a temporary one) in `out`.
    #[track_caller]
    pub fn refused(
        &self,
        ca: &str,
        line: &str,
        code: i32,
        needles: &[&str],
        out: Option<&str>,
    ) -> Output {
        let before = self.recorded(ca);
        let o = self.tw(line).code(code);
        assert!(
            o.stderr.starts_with("error: "),
            "a refusal is one `error: …` message on stderr:\n{o}"
        );
        for n in needles {
            assert!(
                o.stderr.contains(n),
                "the error message should contain {n:?}:\n{o}"
            );
        }
        let after = self.recorded(ca);
        assert_eq!(
            before.total, after.total,
            "a refused command must not record a certificate:\n{o}"
        );
        assert_eq!(
            before.fingerprints, after.fingerprints,
            "the inventory changed:\n{o}"
        );
        assert_eq!(
            before.audit, after.audit,
            "a refused command must not write to the audit log:\n{o}"
        );
        if let Some(out) = out {
            assert_no_output(&self.path(out));
        }
        o
    }
}

/// `--san A --san B` for the space-separated SANs `sans` (`"A B"`).
pub fn san_flags(sans: &str) -> String {
    let flags: Vec<String> = sans
        .split_whitespace()
        .map(|s| format!("--san {s}"))
        .collect();
    flags.join(" ")
}

/// What a CA has recorded: the inventory's size and fingerprints, the audit log.
#[derive(Debug)]
pub struct Recorded {
    pub total: u64,
    pub fingerprints: Vec<String>,
    pub audit: Vec<Value>,
}

/// The out directory must not exist, or be empty: no cert.pem, key.pem or temporary file.
#[track_caller]
pub fn assert_no_output(dir: &Path) {
    let entries = dir_entries(dir);
    assert!(
        entries.is_empty(),
        "{} should hold no file after a refused command, found {entries:?}",
        dir.display()
    );
}

/// Asserts that `o`'s stdout contains every one of `wanted`.
#[track_caller]
pub fn assert_prints(o: &Output, wanted: &[&str]) {
    for w in wanted {
        assert!(o.stdout.contains(w), "stdout should contain {w:?}:\n{o}");
    }
}

/// The string `key` of a JSON object, failing the test when it is not there.
#[track_caller]
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v:#}"))
}
