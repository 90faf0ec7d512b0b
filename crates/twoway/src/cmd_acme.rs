//! `twoway acme eab create`: external account binding keys for the ACME directories of
//! `ca serve` (docs/acme.md).

use crate::cmd_ca::{actor, open_ca};
use crate::output::print_json;
use crate::CaOpts;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AcmeCommand {
    /// External account binding (EAB) keys.
    #[command(subcommand)]
    Eab(EabCommand),
}

#[derive(Subcommand, Debug)]
pub enum EabCommand {
    /// Make an EAB key for one ACME directory. The key id and HMAC key are printed once;
    /// only the key's SHA-256 is stored. The first account bound with it uses it up and
    /// takes its owner.
    #[command(after_help = "\
Example:
  twoway acme eab create --directory web --owner team-web
Then:
  certbot register --server https://ca.example.internal:9000/acme/web/directory \\
      --eab-kid <kid> --eab-hmac-key <hmac key> ...")]
    Create(EabCreateArgs),
}

#[derive(Args, Debug)]
pub struct EabCreateArgs {
    /// The `[[acme.directory]]` name the key is for.
    #[arg(long)]
    pub directory: String,
    /// Owner recorded on the certificates of the account bound with it (default: the
    /// directory's owner).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: AcmeCommand) -> Result<ExitCode> {
    let AcmeCommand::Eab(EabCommand::Create(a)) = cmd;
    let ca = open_ca(&a.ca, false)?;
    let eab = ca.create_eab(&a.directory, a.owner.clone(), &actor(&a.ca))?;
    if a.json {
        print_json(&eab)?;
    } else {
        outln!("kid: {}", eab.kid)?;
        outln!("hmac key: {}", eab.hmac_key)?;
        outln!(
            "(shown once; single use; for directory {}{})",
            eab.directory,
            eab.owner
                .as_deref()
                .map(|o| format!(", owner {o}"))
                .unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
