//! `twoway --ca URL cert sign|list|revoke`: the cert commands against a remote CA.

use crate::cli::{CertCommand, SignArgs};
use crate::context::runtime;
use crate::exit::usage;
use crate::output::{self, print_json, Table};
use crate::remote::{self, RemoteOpts};
use anyhow::{Context, Result};
use std::process::ExitCode;

/// `cert sign`, `cert list` and `cert revoke` against the remote CA.
pub fn run(cmd: CertCommand, r: &RemoteOpts) -> Result<ExitCode> {
    match cmd {
        CertCommand::List(a) => {
            if a.page == 0 || a.limit == 0 {
                return Err(usage("--page and --limit start at 1"));
            }
            let mut q: Vec<String> = Vec::new();
            let mut add = |k: &str, v: &str| q.push(format!("{k}={}", remote::enc(v)));
            if let Some(v) = &a.expiring {
                add("expiring", v);
            }
            if a.expired {
                add("expired", "true");
            }
            if let Some(v) = &a.owner {
                add("owner", v);
            }
            for l in &a.labels {
                add("label", l);
            }
            if let Some(v) = &a.status {
                add("status", v);
            }
            if let Some(v) = &a.san {
                add("san", v);
            }
            if let Some(v) = &a.profile {
                add("profile", v);
            }
            add("limit", &a.limit.to_string());
            add("offset", &((a.page - 1) * a.limit).to_string());
            let c = remote::client(r)?;
            let page = runtime()?.block_on(c.list(&q.join("&")))?;
            if a.json {
                print_json(&page)?;
                return Ok(ExitCode::SUCCESS);
            }
            if page.items.is_empty() {
                outln!("No certificates match.")?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(&output::LISTING_COLUMNS);
            for i in &page.items {
                let names = output::names_cell(&i.sans, &i.subject);
                t.row(vec![
                    output::id(&i.fingerprint),
                    names,
                    i.profile.clone(),
                    i.owner.clone().unwrap_or_else(|| "-".into()),
                    i.status.clone(),
                    i.not_after.clone(),
                ]);
            }
            out!("{}", t.render())?;
            if page.total > page.offset + page.items.len() {
                output::page_line(page.offset, page.items.len(), page.total, a.page)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Revoke { serial, reason, .. } => {
            let c = remote::client(r)?;
            let resp = runtime()?.block_on(c.revoke(&twoway_api::RevokeRequest {
                serial,
                reason: Some(reason),
            }))?;
            outln!(
                "Revoked serial {} at {}, reason {}. OCSP and /crl on the CA reflect it now.",
                resp.serial, resp.revoked_at, resp.reason
            )?;
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Sign(a) => sign(a, r),
        _ => Err(usage(
            "with --ca URL only `cert sign`, `cert list` and `cert revoke` (and `token create`) work remotely; drop --ca to use a local CA directory",
        )),
    }
}

/// `cert sign CSR --profile P [--ttl] [--owner] [--out DIR]` through `POST /v1/sign`.
fn sign(a: SignArgs, r: &RemoteOpts) -> Result<ExitCode> {
    if !a.meta.labels.is_empty() || a.meta.location.is_some() {
        return Err(usage(
            "--label and --location are not sent to a remote CA: drop them, or sign on the CA's host",
        ));
    }
    let raw = std::fs::read(&a.csr)
        .with_context(|| format!("cannot read the CSR {}", a.csr.display()))?;
    // PEM or DER in; PEM on the wire (a DER CSR is re-encoded after a local parse).
    let csr = match std::str::from_utf8(&raw) {
        Ok(t) if t.contains("-----BEGIN") => t.to_string(),
        _ => {
            twoway_pki::verify_csr(&raw)
                .with_context(|| format!("{} is not a CSR", a.csr.display()))?;
            twoway_pki::der_to_pem("CERTIFICATE REQUEST", &raw)
        }
    };
    if let Some(dir) = &a.out {
        for f in [twoway_files::CERT, twoway_files::CHAIN, twoway_files::CA] {
            if dir.join(f).exists() && !a.force {
                return Err(usage(format!(
                    "{} exists: use --force to replace it, or another --out",
                    dir.join(f).display()
                )));
            }
        }
        // Fails now, before the CA records anything, if the files cannot be written.
        twoway_files::check_writable(&dir.join(twoway_files::CERT))?;
    }
    let c = remote::client(r)?;
    let resp = runtime()?.block_on(c.sign(&twoway_api::SignRequest {
        csr,
        profile: a.profile.as_str().into(),
        ttl: a.meta.ttl.clone(),
        owner: a.meta.owner.clone(),
        sans: None,
    }))?;
    match &a.out {
        None => output::write_raw(resp.chain.as_bytes())?,
        Some(dir) => {
            let mut s = twoway_files::Credentials::new(dir)?;
            s.ca(&resp.root)?;
            s.certificate(&resp.certificate, &resp.chain)?;
            s.commit()?;
            let d = dir.display();
            outln!(
                "Signed serial {}, valid until {}.\n  files        {d}/cert.pem {d}/chain.pem {d}/ca.pem",
                resp.serial, resp.not_after
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
