//! `twoway audit list`, `twoway audit verify` and `twoway audit checkpoint`.

use crate::cli::AuditCommand;
use crate::context::{actor, open_ca};
use crate::exit;
use crate::output::{self, print_json, printable, Table};
use anyhow::{Context as _, Result};
use std::io::Write as _;
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
        AuditCommand::Checkpoint { ca: opts, out } => {
            if let Some(path) = &out {
                twoway_files::check_writable(path)?;
            }
            let ca = open_ca(&opts, true)?;
            let cp = ca.audit_checkpoint(&actor(&opts))?;
            let mut text = serde_json::to_string_pretty(&cp)?;
            text.push('\n');
            match &out {
                None => output::write_raw(text.as_bytes())?,
                Some(path) => {
                    twoway_files::write_atomic(path, text.as_bytes(), 0o644)?;
                    let _ = writeln!(
                        std::io::stderr(),
                        "Wrote the checkpoint of audit entry {} to {}",
                        cp.seq,
                        path.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            ca,
            checkpoint,
            json,
        } => {
            let ca = open_ca(&ca, false)?;
            let mut held = None;
            let (n, problems) = match &checkpoint {
                None => ca.verify_audit()?,
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read the checkpoint {}", path.display())
                    })?;
                    let cp: twoway_ca::Checkpoint = serde_json::from_str(&text).map_err(|e| {
                        twoway_ca::Error::Refused(format!(
                            "{} is not a checkpoint from `twoway audit checkpoint`: {e}",
                            path.display()
                        ))
                    })?;
                    let r = ca.verify_checkpoint(&cp)?;
                    held = Some(cp);
                    r
                }
            };
            if json {
                let cp = held
                    .as_ref()
                    .map(|c| serde_json::json!({"seq": c.seq, "time": c.time}));
                print_json(&serde_json::json!({
                    "entries": n, "ok": problems.is_empty(), "problems": problems,
                    "checkpoint": cp,
                }))?;
            } else if problems.is_empty() {
                match &held {
                    None => outln!("Audit log intact: {n} entries, hash chain verified.")?,
                    Some(c) => outln!(
                        "Audit log intact: {n} entries, hash chain verified; the checkpoint of \
                         entry {} ({}) holds.",
                        c.seq,
                        printable(&c.time)
                    )?,
                }
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
