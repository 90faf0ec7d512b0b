//! `twoway`: the one binary. It parses argv and env, builds runtimes, prints, and chooses
//! exit codes; everything else lives in the library crates.
//!
//! `cli` is the command tree (clap), `main` routes each command to its module in `cmd/`,
//! which uses what commands share: `context` (the local CA options, opening the CA, the
//! actor, runtimes, logging), `issue`, `remote` (the remote CA's client), `output` (the one
//! way to stdout) and `exit` (exit codes).
#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod cli;
mod cmd;
mod context;
mod exit;
mod issue;
mod remote;

use clap::Parser;
use cli::{CaCommand, Cli, Command};
use exit::usage;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help into a closed pipe is not worth a word either.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    raise_open_files_limit();
    let remote = cli.remote.url.is_some();
    let result = match cli.command {
        Command::Cert(c) => cmd::cert::run(c, &cli.remote),
        Command::Token(c) => cmd::token::run(c, &cli.remote),
        _ if remote => Err(usage(
            "with --ca URL only `cert sign`, `cert list`, `cert revoke` and `token create` work remotely",
        )),
        Command::Agent(c) => cmd::agent::run(c),
        Command::Acme(c) => cmd::acme::run(c),
        Command::Ca(CaCommand::Init(a)) => cmd::ca::init(a),
        Command::Ca(CaCommand::Show { ca, json }) => cmd::ca::show(&ca, json),
        Command::Ca(CaCommand::Serve(a)) => cmd::serve::run(a),
        Command::Ca(CaCommand::Rotate(c)) => cmd::ca::rotate(c),
        Command::Crl(c) => cmd::crl::run(c),
        Command::Audit(c) => cmd::audit::run(c),
        Command::Quickstart(c) => cmd::quickstart::run(c),
        Command::Proxy(c) => cmd::proxy::run(*c).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`| head -1`): nothing to report.
        Err(e) if output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", output::error_text(&e));
            ExitCode::from(exit::exit_code(&e))
        }
    }
}

/// Raises the soft limit on open files to the hard limit. The soft limit is often 1024,
/// which a server holding thousands of connections (`ca serve`, `proxy`) would reach long
/// before its own connection limits; the hard limit is what the administrator allows.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let below_hard = match (cur.current, cur.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        // macOS refuses RLIM_INFINITY here; its kernel cap then stays in force.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        );
    }
}
