//! `twoway acme eab create`: external account binding keys for the ACME directories of
//! `ca serve` (docs/acme.md).

use crate::cli::{AcmeCommand, EabCommand};
use crate::context::{actor, open_ca};
use crate::output::print_json;
use anyhow::Result;
use std::process::ExitCode;

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
