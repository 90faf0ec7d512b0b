//! `twoway acme`: external account binding keys (`eab create|list|revoke`) and early
//! renewal through ACME Renewal Information (`renew-early`) for the ACME directories of
//! `ca serve` (docs/acme.md).

use crate::cli::{AcmeCommand, EabCommand, RenewEarlyArgs};
use crate::context::{actor, open_ca};
use crate::output::{print_json, Table};
use anyhow::{Context as _, Result};
use std::process::ExitCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn run(cmd: AcmeCommand) -> Result<ExitCode> {
    match cmd {
        AcmeCommand::Eab(EabCommand::Create(a)) => {
            let ca = open_ca(&a.ca, false)?;
            let eab = ca.create_eab(
                &a.directory,
                a.owner.clone(),
                &a.preauthorize,
                &actor(&a.ca),
            )?;
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
                if !eab.preauthorize.is_empty() {
                    outln!(
                        "pre-authorized without a challenge: {}",
                        eab.preauthorize.join(", ")
                    )?;
                }
            }
        }
        AcmeCommand::Eab(EabCommand::List(a)) => {
            let ca = open_ca(&a.ca, false)?;
            let keys = ca.list_eab(a.directory.as_deref())?;
            if a.json {
                print_json(&serde_json::json!({ "items": keys }))?;
            } else if keys.is_empty() {
                outln!("no EAB keys (make one with `twoway acme eab create`)")?;
            } else {
                let mut t = Table::new(&[
                    "KID",
                    "DIRECTORY",
                    "OWNER",
                    "CREATED",
                    "USED BY",
                    "REVOKED",
                    "PREAUTHORIZE",
                ]);
                for k in &keys {
                    t.row(vec![
                        k.kid.clone(),
                        k.directory.clone(),
                        k.owner.clone().unwrap_or_else(|| "-".into()),
                        k.created.clone().unwrap_or_else(|| "-".into()),
                        k.account
                            .as_deref()
                            .map(|a| format!("account {a}"))
                            .unwrap_or_else(|| "unused".into()),
                        if k.revoked { "yes" } else { "no" }.into(),
                        if k.preauthorize.is_empty() {
                            "-".into()
                        } else {
                            k.preauthorize.join(",")
                        },
                    ]);
                }
                out!("{}", t.render())?;
            }
        }
        AcmeCommand::Eab(EabCommand::Revoke(a)) => {
            let ca = open_ca(&a.ca, false)?;
            let k = ca.revoke_eab(&a.kid, &actor(&a.ca))?;
            if a.json {
                print_json(&k)?;
            } else {
                match &k.account {
                    Some(acct) => outln!(
                        "revoked EAB key {}; account {acct} bound with it is revoked too",
                        k.kid
                    )?,
                    None => outln!("revoked EAB key {} (it had bound no account)", k.kid)?,
                }
            }
        }
        AcmeCommand::RenewEarly(a) => renew_early(a)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn renew_early(a: RenewEarlyArgs) -> Result<()> {
    let issued_before = match &a.issued_before {
        Some(t) => Some(OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
            format!("--issued-before {t:?}: give an RFC 3339 time such as 2026-11-01T00:00:00Z")
        })?),
        None => None,
    };
    let ca = open_ca(&a.ca, false)?;
    let done = ca.renew_early(
        &twoway_ca::acme::RenewEarly {
            serials: a.serial.clone(),
            issued_before,
            all: a.all,
            directory: a.directory.clone(),
        },
        &actor(&a.ca),
    )?;
    if a.json {
        print_json(&done)?;
    } else {
        outln!(
            "{} certificate(s) will be renewed at their ACME clients' next renewal-information check (window ends {})",
            done.affected,
            done.window_end
        )?;
    }
    Ok(())
}
