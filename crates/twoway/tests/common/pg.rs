//! A fresh PostgreSQL database per test on 127.0.0.1:5432 (user postgres, trust
//! authentication), dropped when the test ends, even when it fails.

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const START_HINT: &str = "PostgreSQL must be running on 127.0.0.1:5432 with trust \
    authentication for user postgres: start it with \
    `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
    (scripts/test-all does)";

/// A fresh database, dropped at the end even when the test fails.
pub struct TestDb {
    name: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let mut admin = postgres::Client::connect(ADMIN_URL, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL ({e}). {START_HINT}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("twoway_test_db_{}_{nanos}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        TestDb { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(ADMIN_URL, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A PostgreSQL server of the test's own (initdb into a temporary directory, started on a
/// free port of 127.0.0.1, trust authentication), which the test may restart, stop and
/// pause without disturbing the shared server other tests use. Runs as the `postgres` user
/// (the server refuses root); stopped and removed when dropped.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PrivatePg {
    /// initdb and start; panics with what to install when PostgreSQL's binaries are absent.
    pub fn start() -> PrivatePg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path().join("bin")).max())
            .filter(|b| b.join("initdb").is_file())
            .expect("PostgreSQL's server binaries are needed: apt-get install postgresql");
        let dir = tempfile::Builder::new()
            .prefix("twoway-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = super::process::free_port();
        let pg = PrivatePg { dir, bin, port };
        pg.as_postgres(&["chown", "-R", "postgres:", &pg.root()], true);
        pg.as_postgres(
            &[
                &pg.tool("initdb"),
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            false,
        );
        pg.ctl(&["start"]);
        pg
    }

    fn root(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn data(&self) -> String {
        format!("{}/data", self.root())
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    /// Runs `args` as the postgres user (or as is, for `root_ok` commands run as root).
    fn as_postgres(&self, args: &[&str], root_ok: bool) -> String {
        let mut cmd = if root_ok {
            std::process::Command::new(args[0])
        } else {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", args[0]]);
            c
        };
        cmd.args(&args[1..]);
        let o =
            super::process::run_with_timeout(&mut cmd, None, std::time::Duration::from_secs(60));
        assert!(o.success(), "{args:?}: {}", o.all());
        o.stdout
    }

    /// `pg_ctl ACTION` (start, stop, restart), waiting for it to finish.
    pub fn ctl(&self, action: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
            self.port,
            self.root()
        );
        let log = format!("{}/server.log", self.root());
        let mut args = vec![
            self.tool("pg_ctl"),
            "-D".into(),
            self.data(),
            "-l".into(),
            log,
            "-o".into(),
            opts,
            "-w".into(),
            "-t".into(),
            "30".into(),
        ];
        if action == ["restart"] || action == ["stop"] {
            args.extend(["-m".into(), "fast".into()]);
        }
        args.extend(action.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.as_postgres(&args, false);
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's process and its children (the backends).
    fn pids(&self) -> Vec<String> {
        let pidfile =
            std::fs::read_to_string(format!("{}/postmaster.pid", self.data())).unwrap_or_default();
        let Some(main) = pidfile.lines().next().map(str::to_string) else {
            return Vec::new();
        };
        let o = super::process::run_tool("pgrep", &["-P", &main]);
        let mut pids: Vec<String> = o.stdout.split_whitespace().map(str::to_string).collect();
        pids.push(main);
        pids
    }

    /// SIGSTOP (true) or SIGCONT (false) to the server and every backend: a database that
    /// keeps its connections open and answers nothing.
    pub fn pause(&self, stop: bool) {
        let sig = if stop { "-STOP" } else { "-CONT" };
        for pid in self.pids() {
            let _ = super::process::run_tool("kill", &[sig, &pid]);
        }
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.pause(false);
        let data = self.data();
        let pg_ctl = self.tool("pg_ctl");
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}
