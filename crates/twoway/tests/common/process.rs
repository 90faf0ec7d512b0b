//! Processes and ports: temporary directories, running the real binary and other programs
//! with a time limit, servers that are killed when the test ends (even when it panics),
//! free ports, signals, and libfaketime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `twoway` binary under test.
pub const TWOWAY: &str = env!("CARGO_BIN_EXE_twoway");

/// How long any one command may run before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to start listening.
pub const PORT_TIMEOUT: Duration = Duration::from_secs(10);

/// libfaketime, which moves a process's wall clock.
pub const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A fresh temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("twoway-test-")
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// What a finished command said.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// Standard output, raw.
    pub stdout_bytes: Vec<u8>,
}

impl Output {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics, showing everything, unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panics unless the command exited with `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}, got {:?}:\n{self}",
            self.code
        );
        self
    }

    /// Panics if the command exited 0.
    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(
            !self.success(),
            "command was expected to fail but succeeded:\n{self}"
        );
        self
    }

    /// Standard output and standard error together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Standard output parsed as JSON; fails the test, showing everything, when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// Standard output without surrounding white space (a token, a serial).
    pub fn line(&self) -> String {
        self.stdout.trim().to_string()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        writeln!(f, "exit: {:?}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Waits for `child` to exit, at most `timeout`; kills it and returns `None` when it does not.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs `cmd` to completion with `stdin` as its input, killing it (and failing the test)
/// after `timeout`.
#[track_caller]
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let line = cmdline(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run `{line}`: {e}"),
    };
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A program may exit without reading its input: ignore the broken pipe.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let out_reader = read_in_background(child.stdout.take().expect("stdout is piped"));
    let err_reader = read_in_background(child.stderr.take().expect("stderr is piped"));
    let status = wait_child(&mut child, timeout);
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout_bytes = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "`{line}` did not finish within {timeout:?}; killed it.\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout_bytes),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        cmdline: line,
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_bytes,
    }
}

/// Reads `pipe` to its end on a thread of its own.
pub fn read_in_background(
    mut pipe: impl Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
        v
    })
}

/// Runs `cmd` with no input and the default time limit.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, None, COMMAND_TIMEOUT)
}

/// Runs `program ARGS` with no input and the default time limit.
#[track_caller]
pub fn run_tool<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Output {
    run(Command::new(program).args(args))
}

/// Finds `program` on PATH or in the system's sbin and bin directories (or takes it as a
/// path); fails the test, naming the Debian package to install, when it is not there.
/// Tests never skip silently.
#[track_caller]
pub fn require_tool(program: &str, apt_package: &str) -> PathBuf {
    let candidate = Path::new(program);
    if candidate.is_absolute() {
        if candidate.is_file() {
            return candidate.to_path_buf();
        }
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let system = [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ];
        let dirs = std::env::split_paths(&path).chain(system.iter().map(PathBuf::from));
        for dir in dirs {
            let p = dir.join(program);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`{program}` is required by this test but was not found: install it with \
         `apt-get install {apt_package}`"
    );
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, release it),
/// never one this test process handed out before: two servers of one test must not be
/// given the same port because the kernel offered it twice in a row.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind 127.0.0.1:0");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 that this test process has not used already")
}

/// True once something accepts connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A long-running program (a server) whose output goes to a log file and which is killed
/// when this value is dropped.
pub struct Server {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd`, sending its stdout and stderr to `log` (created). Its stdin stays an
    /// open pipe, so servers that read the terminal do not see end-of-file and quit.
    #[track_caller]
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("cannot create the server log");
        let file2 = file.try_clone().expect("cannot clone the log handle");
        let line = cmdline(cmd);
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (`{line}`): {e}"));
        Server {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// What the server has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server accepts connections on 127.0.0.1:`port`; fails the test with
    /// the server's log if it exits first or does not listen within [`PORT_TIMEOUT`].
    #[track_caller]
    pub fn wait_for_port(&mut self, port: u16) {
        self.wait_for_port_within(port, PORT_TIMEOUT);
    }

    /// [`Server::wait_for_port`] with another time limit.
    #[track_caller]
    pub fn wait_for_port_within(&mut self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_running(&format!("before listening on 127.0.0.1:{port}"));
            if port_open(port) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not listen on 127.0.0.1:{port} within {limit:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test, with the server's log, if the server has exited.
    #[track_caller]
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.exited() {
            panic!("{} exited ({status}) {when}:\n{}", self.name, self.log());
        }
    }

    /// The exit status, once the server has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (at most `limit`) for the server to exit by itself; fails the test, with the
    /// server's log, when it does not.
    #[track_caller]
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`TERM`, `HUP`) with kill(1).
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let o = run_tool("kill", &[&format!("-{signal}"), &self.pid().to_string()]);
        assert!(o.success(), "{o}");
    }

    /// Kills the server (SIGKILL: no chance to finish anything) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a file as text, failing the test with the path when it cannot.
#[track_caller]
pub fn read(path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Writes a file, failing the test with the path when it cannot.
#[track_caller]
pub fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let p = path.as_ref();
    std::fs::write(p, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()))
}

/// The names in a directory, sorted; empty when it does not exist.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The permission bits of a file (`rwx` for owner, group and others).
#[track_caller]
pub fn mode(path: &Path) -> u32 {
    mode_bits(path) & 0o777
}

/// The permission bits of a file with the set-id and sticky bits.
#[track_caller]
pub fn mode_bits(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Owned strings from string slices, for argument lists built in pieces.
pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A command line split on whitespace. Test arguments passed this way never contain spaces.
pub fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// Fails the test, naming the package, unless libfaketime is installed.
#[track_caller]
pub fn require_faketime() {
    assert!(
        Path::new(FAKETIME).exists(),
        "libfaketime is missing: apt-get install faketime"
    );
}

/// The environment that runs a process on a wall clock offset by the contents of `file`
/// (`+0`, `+50m`), re-read every second, with the monotonic clock left alone: what a
/// process sees when the machine wakes from a suspend.
#[track_caller]
pub fn faked_clock(file: &Path) -> Vec<(&'static str, String)> {
    require_faketime();
    vec![
        ("LD_PRELOAD", FAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ("FAKETIME_CACHE_DURATION", "1".into()),
    ]
}

/// Raises this process's soft limit on open files to at least `n` (up to the hard limit),
/// so that a test can hold thousands of connections.
pub fn raise_fd_limit(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let want = match cur.maximum {
        Some(max) => n.min(max),
        None => n,
    };
    if cur.current.is_none_or(|c| c < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: cur.maximum,
            },
        );
    }
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|c| c >= n),
        "this test needs {n} open files; the hard limit allows {now:?}: raise it (ulimit -Hn)"
    );
}
