//! Printing for people (aligned tables, durations) and for machines (JSON), and the one
//! way to stdout: [`out!`] and [`outln!`] for people, [`print_json`] and [`write_raw`] for
//! machines. Writing into a closed pipe (`twoway cert list | head -1`) gives
//! [`StdoutClosed`], which `main` turns into a quiet exit instead of a panic.
//!
//! Text a certificate (or any peer) controls can hold terminal control sequences: people's
//! output escapes them ([`printable`]), every table cell and every line through [`out!`];
//! JSON stays exact (its encoder escapes control characters itself).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use time::OffsetDateTime;

/// Prints a line for people on stdout; `?` it (a closed pipe is [`StdoutClosed`]).
macro_rules! outln {
    () => {
        $crate::output::write_out("\n")
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints text for people on stdout, without a newline; `?` it.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(&format!($($arg)*))
    };
}

/// Standard output was closed by its reader. Nothing is wrong: the command stops and the
/// process exits quietly, as Unix tools do.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// True when `e` is (or was caused by) a closed standard output.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// Lets a command keep its own exit code (`cert check`'s 1) when its reader went away.
pub fn unless_closed(r: anyhow::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if is_stdout_closed(&e) => Ok(()),
        other => other,
    }
}

fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// Writes bytes to stdout as they are (PEM, JSON, a token).
pub fn write_raw(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(stdout_error)
}

/// Writes text for people to stdout, every line passed through [`printable`].
pub fn write_out(text: &str) -> anyhow::Result<()> {
    let mut clean = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            clean.push('\n');
        }
        clean.push_str(&printable(line));
    }
    write_raw(clean.as_bytes())
}

/// The text with every control character (C0, DEL, C1, line breaks included) and every
/// bidirectional-override character written as a visible escape (`\x1b`, `\u{202e}`), so
/// text from a certificate cannot move the cursor, retitle the terminal, forge a line or
/// reorder what a person reads. JSON output does not use it: it must stay exact.
pub fn printable(s: &str) -> Cow<'_, str> {
    let hostile =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(hostile) {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if (c as u32) < 0x100 && hostile(c) => o.push_str(&format!("\\x{:02x}", c as u32)),
            c if hostile(c) => o.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => o.push(c),
        }
    }
    Cow::Owned(o)
}

/// An aligned text table; every cell goes through [`printable`].
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| printable(&c).into_owned())
                .collect(),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let n = cells.len();
            for (i, c) in cells.iter().enumerate() {
                out.push_str(c);
                if i + 1 < n {
                    let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.push('\n');
        };
        line(&self.headers, &mut out);
        for r in &self.rows {
            line(r, &mut out);
        }
        out
    }
}

/// Prints JSON, pretty, with a trailing newline.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    write_raw(s.as_bytes())
}

/// `2027-02-21 13:05 UTC`.
pub fn date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `in 89d 23h` / `expired 2d 1h ago`.
pub fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = t - now;
    if d.is_negative() {
        format!("expired {} ago", twoway_pki::format_duration(-d))
    } else {
        format!("in {}", twoway_pki::format_duration(d))
    }
}

/// A progress note on stderr for anything slow, only when a person is watching.
pub fn progress(msg: &str) {
    if std::io::stderr().is_terminal() {
        let _ = writeln!(std::io::stderr(), "{msg}");
    }
}

/// Shortens long hex for tables.
pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// How many hex digits of the SHA-256 fingerprint name a certificate in listings (its ID).
/// `cert show` and `cert revoke` take it: 48 bits, so two certificates of one inventory
/// share an ID with odds below one in a million up to ten thousand certificates; a
/// collision is refused as ambiguous, never resolved to the wrong certificate.
pub const ID_DIGITS: usize = 12;

/// The ID of a certificate in listings: the first [`ID_DIGITS`] hex digits of its
/// fingerprint.
pub fn id(fingerprint: &str) -> String {
    fingerprint.chars().take(ID_DIGITS).collect()
}

/// The columns of a certificate listing, local or remote. ID is what `cert show` and
/// `cert revoke` take.
pub const LISTING_COLUMNS: [&str; 6] = ["ID", "NAMES", "PROFILE", "OWNER", "STATUS", "EXPIRES"];

/// The line under a page of a listing: which rows it showed and how to get the next.
pub fn page_line(offset: usize, shown: usize, total: usize, page: usize) -> anyhow::Result<()> {
    outln!(
        "Showing {}-{} of {}. Next page: --page {}",
        offset + 1,
        offset + shown,
        total,
        page + 1
    )
}

/// The NAMES cell of a certificate listing: the first SAN and how many more, or the
/// subject of a certificate without SANs.
pub fn names_cell(sans: &[String], subject: &str) -> String {
    match (sans.first(), sans.len()) {
        (Some(first), 1) => first.clone(),
        (Some(first), n) => format!("{first} (+{})", n - 1),
        (None, _) => subject.to_string(),
    }
}

/// An error and its causes for people, each cause once: messages that already include
/// their source's text (`…: No such file or directory (os error 2); check the path`) are
/// not followed by it again.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || parts.iter().any(|p| p.contains(msg.as_str())) {
            continue;
        }
        parts.push(msg);
    }
    parts
        .iter()
        .map(|p| printable(p).into_owned())
        .collect::<Vec<_>>()
        .join(": ")
}

/// How printed commands call this program: `twoway` when that name on PATH is this very
/// binary, else its path (relative to the working directory when below it), so that the
/// commands `cargo run … quickstart` prints work as printed.
pub fn self_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) else {
        return "twoway".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            dir.join("twoway")
                .canonicalize()
                .is_ok_and(|candidate| candidate == exe)
        })
    });
    if on_path {
        return "twoway".into();
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| {
            exe.strip_prefix(cwd)
                .ok()
                .map(|rel| format!("./{}", rel.display()))
        })
        .unwrap_or_else(|| exe.display().to_string());
    if shown
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        shown
    } else {
        format!("'{}'", shown.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_drives_a_terminal() {
        assert_eq!(printable("api.example.internal"), "api.example.internal");
        assert_eq!(
            printable("a\u{1b}[2Jb\r\nc\u{7}\u{9b}\u{202e}"),
            "a\\x1b[2Jb\\x0d\\x0ac\\x07\\x9b\\u{202e}"
        );
        assert_eq!(printable("naïve 名前"), "naïve 名前");
    }

    #[test]
    fn error_text_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io).context("cannot read x: No such file; check the path");
        assert_eq!(
            error_text(&e),
            "cannot read x: No such file; check the path"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
