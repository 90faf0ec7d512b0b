//! The CLI against a remote CA (`twoway --ca https://… cert sign|list|revoke`, `token create`),
//! authenticated by an admin client certificate.

use crate::cmd_cert::CertCommand;
use crate::cmd_token::TokenCommand;
use crate::output::{self, print_json, Table};
use crate::usage;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the remote CA is and how to authenticate to it.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteOpts {
    /// Drive a remote CA at this URL (https://host:port) instead of a local CA directory.
    #[arg(long = "ca", env = "TWOWAY_CA_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Admin client certificate chain (PEM) for the remote CA.
    #[arg(long = "cert", env = "TWOWAY_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Key of the admin client certificate (PEM).
    #[arg(long = "key", env = "TWOWAY_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The remote CA's root certificate (PEM), to verify the server.
    #[arg(long = "ca-cert", env = "TWOWAY_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

fn client(r: &RemoteOpts) -> Result<twoway_agent::CaClient> {
    let url = r.url.as_deref().unwrap_or_default();
    let ca_cert = r.ca_cert.as_ref().ok_or_else(|| {
        usage("--ca-cert FILE is needed with --ca URL: the remote CA's root certificate (its /roots.pem)")
    })?;
    let root = std::fs::read_to_string(ca_cert)
        .with_context(|| format!("cannot read {}", ca_cert.display()))?;
    let id = match (&r.cert, &r.key) {
        (Some(c), Some(k)) => Some(twoway_agent::ClientIdentity {
            chain_pem: std::fs::read_to_string(c)
                .with_context(|| format!("cannot read {}", c.display()))?,
            key_pem: zeroize::Zeroizing::new(
                std::fs::read_to_string(k)
                    .with_context(|| format!("cannot read {}", k.display()))?,
            ),
        }),
        (None, None) => None,
        _ => {
            return Err(usage(
                "give both --cert and --key (the admin client certificate)",
            ))
        }
    };
    Ok(twoway_agent::CaClient::new(url, &root, id.as_ref())?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// `cert sign`, `cert list` and `cert revoke` against the remote CA.
pub fn run_cert(cmd: CertCommand, r: &RemoteOpts) -> Result<ExitCode> {
    match cmd {
        CertCommand::List(a) => {
            if a.page == 0 || a.limit == 0 {
                return Err(usage("--page and --limit start at 1"));
            }
            let mut q: Vec<String> = Vec::new();
            let mut add = |k: &str, v: &str| q.push(format!("{k}={}", enc(v)));
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
            let c = client(r)?;
            let page = runtime()?.block_on(c.list(&q.join("&")))?;
            if a.json {
                print_json(&page)?;
                return Ok(ExitCode::SUCCESS);
            }
            if page.items.is_empty() {
                outln!("No certificates match.")?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(&["ID", "NAMES", "PROFILE", "OWNER", "STATUS", "EXPIRES"]);
            for i in &page.items {
                let names = match (i.sans.first(), i.sans.len()) {
                    (Some(f), 1) => f.clone(),
                    (Some(f), n) => format!("{f} (+{})", n - 1),
                    (None, _) => i.subject.clone(),
                };
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
            let shown_to = page.offset + page.items.len();
            if page.total > shown_to {
                outln!(
                    "Showing {}-{} of {}. Next page: --page {}",
                    page.offset + 1,
                    shown_to,
                    page.total,
                    a.page + 1
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Revoke { serial, reason, .. } => {
            let c = client(r)?;
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
fn sign(a: crate::cmd_cert::SignArgs, r: &RemoteOpts) -> Result<ExitCode> {
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
    let c = client(r)?;
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

/// `token create` against the remote CA.
pub fn run_token(cmd: TokenCommand, r: &RemoteOpts) -> Result<ExitCode> {
    let TokenCommand::Create(a) = cmd;
    if a.sans.is_empty() {
        return Err(usage(
            "no --san given: a token allows only the names it is bound to",
        ));
    }
    let c = client(r)?;
    let resp = runtime()?.block_on(c.create_token(&twoway_api::TokenRequest {
        sans: a.sans.clone(),
        profile: a.profile.as_str().into(),
        ttl: a.ttl.clone(),
        cert_ttl: a.cert_ttl.clone(),
        owner: a.owner.clone(),
    }))?;
    crate::cmd_token::print_token(&resp, a.json)
}
