//! Helpers shared by the integration tests of the `twoway` binary: temporary directories,
//! running the real binary and other programs with a time limit, free ports, waiting for a
//! listener, and servers that are killed when the test ends (even when it panics).
//!
//! Nothing here knows about certificates; each test file brings its own domain helpers.
#![allow(dead_code)]

pub mod proxy;

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
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out_reader.join().unwrap_or_default();
                let stderr = err_reader.join().unwrap_or_default();
                panic!(
                    "`{line}` did not finish within {timeout:?}; killed it.\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{line}`: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout_bytes = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Output {
        cmdline: line,
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_bytes,
    }
}

/// Runs `cmd` with no input and the default time limit.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, None, COMMAND_TIMEOUT)
}

/// Finds `program` on PATH (or takes it as a path); fails the test, naming the Debian
/// package to install, when it is not there. Tests never skip silently.
#[track_caller]
pub fn require_tool(program: &str, apt_package: &str) -> PathBuf {
    let candidate = Path::new(program);
    if candidate.is_absolute() {
        if candidate.is_file() {
            return candidate.to_path_buf();
        }
    } else if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
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
        let deadline = Instant::now() + PORT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before listening on 127.0.0.1:{port}:\n{}",
                    self.name,
                    self.log()
                );
            }
            if port_open(port) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not listen on 127.0.0.1:{port} within {PORT_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
