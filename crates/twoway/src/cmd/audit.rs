//! `twoway audit list` and `twoway audit verify`.

use crate::cli::AuditCommand;
use crate::context::open_ca;
use crate::exit;
use crate::output::{self, print_json, printable, Table};
use anyhow::Result;
use std::process::ExitCode;

pub fn run(cmd: AuditCommand) -> Result<ExitCode> {
    match cmd {
        AuditCommand::List {
            ca,
            from,
            limit,
            json,
        } => {
            let ca = open_ca(&ca, false)?;
            let entries = ca.audit(from, limit)?;
            if json {
                print_json(&entries)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(&["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"]);
            for e in &entries {
                t.row(vec![
                    e.seq.to_string(),
                    e.time.clone(),
                    e.actor.clone(),
                    e.action.clone(),
                    output::short(&e.target, 16),
                    output::short(&e.details, 80),
                ]);
            }
            if t.is_empty() {
                outln!("No audit entries from {from} on.")?;
            } else {
                out!("{}", t.render())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { ca, json } => {
            let ca = open_ca(&ca, false)?;
            let (n, problems) = ca.verify_audit()?;
            if json {
                print_json(
                    &serde_json::json!({"entries": n, "ok": problems.is_empty(), "problems": problems}),
                )?;
            } else if problems.is_empty() {
                outln!("Audit log intact: {n} entries, hash chain verified.")?;
            } else {
                outln!("Audit log BROKEN ({n} entries):")?;
                for p in &problems {
                    outln!("  entry {}: {}", p.seq, printable(&p.problem))?;
                }
            }
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::FAILURE)
            })
        }
    }
}
