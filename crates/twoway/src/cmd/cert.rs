//! `twoway cert …`: issue, csr, sign, show and revoke here; listing, `check` and `import`
//! in `inventory`, `inspect` in its own file, and the remote forms in `remote`.

mod inspect;
mod inventory;
mod remote;

use crate::cli::CertCommand;
use crate::context::{actor, duration_arg, open_ca, CaOpts};
use crate::exit::usage;
use crate::issue::{issue_to, IssueParams, P12Out};
use crate::output::{self, print_json, printable};
use crate::remote::RemoteOpts;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use twoway_ca::IssueRequest;
use twoway_files::{Credentials, StagedFiles};
use twoway_pki::{CertInfo, PrivateKey, Reason, San};

fn parse_sans(raw: &[String]) -> Result<Vec<San>> {
    if raw.is_empty() {
        return Err(usage(
            "no --san given: add at least one, e.g. --san DNS:api.example.internal or --san URI:spiffe://example.org/ns/prod/sa/api",
        ));
    }
    raw.iter()
        .map(|s| s.parse::<San>().map_err(anyhow::Error::from))
        .collect()
}

pub(super) fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    usage(format!(
                        "--label {l:?}: write labels as key=value, e.g. --label env=prod"
                    ))
                })
        })
        .collect()
}

fn parse_ttl(ttl: &Option<String>) -> Result<Option<time::Duration>> {
    ttl.as_deref().map(|t| duration_arg("--ttl", t)).transpose()
}

fn describe(info: &CertInfo, profile: twoway_pki::Profile, out: Option<&Path>) -> Result<()> {
    outln!("Issued {profile} certificate, serial {}", info.serial)?;
    let names: Vec<String> = info.sans.iter().map(|s| s.to_string()).collect();
    outln!("  names        {}", printable(&names.join(", ")))?;
    outln!("  valid until  {}", output::date(info.not_after))?;
    outln!(
        "  fingerprint  {} (ID {})",
        info.fingerprint,
        output::id(&info.fingerprint)
    )?;
    if let Some(d) = out {
        let d = d.display();
        outln!("  files        {d}/cert.pem {d}/chain.pem {d}/key.pem (0600) {d}/ca.pem")?;
    }
    Ok(())
}

/// The profile to sign a CSR with, from its names: a SPIFFE ID or e-mail only is a
/// client's, a DNS name or IP only a server's, both a peer's.
fn suggested_profile(sans: &[San]) -> &'static str {
    let host = sans.iter().any(|s| matches!(s, San::Dns(_) | San::Ip(_)));
    let identity = sans
        .iter()
        .any(|s| matches!(s, San::Uri(_) | San::Email(_)));
    match (host, identity) {
        (true, true) => "peer",
        (false, true) => "client",
        _ => "server",
    }
}

/// `cert export SERIAL --key KEY --p12 FILE`: the inventory's certificate, the key this
/// host holds and the chain in one PKCS#12 file.
fn export(a: crate::cli::ExportArgs) -> Result<ExitCode> {
    let key_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&a.key)
            .with_context(|| format!("cannot read the key {}", a.key.display()))?,
    );
    let key = PrivateKey::from_pem(&key_text, None)
        .with_context(|| format!("{} is not an unencrypted PEM private key", a.key.display()))?;
    let Some(p12) = P12Out::from_args(&a.p12)? else {
        return Err(usage("cert export writes a PKCS#12 file: add --p12 FILE"));
    };
    p12.check(a.force)?;
    let ca = open_ca(&a.ca, false)?;
    let rec = ca
        .store()
        .find_certificate(&a.serial)
        .map_err(twoway_ca::Error::from)?;
    let der = twoway_pki::parse_certificates(rec.pem.as_bytes())?
        .into_iter()
        .next()
        .context("the inventory holds no certificate for this record")?;
    if !twoway_pki::key_matches_cert(&key.public_key_der(), &der)? {
        return Err(usage(format!(
            "{} is not the key of certificate {}: give the key.pem written with it",
            a.key.display(),
            rec.serial
        )));
    }
    let info = CertInfo::from_der(&der)?;
    let chain = crate::issue::chain_der(&der, &ca)?;
    let pkcs8 = zeroize::Zeroizing::new(key.key_pair().serialize_der());
    p12.write(&pkcs8, &chain, &info)?;
    outln!(
        "Wrote certificate {} with its key and chain to {} (0600)",
        rec.serial,
        p12.path.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `twoway cert …`: against the remote CA with `--ca URL`, else the local one.
pub fn run(cmd: CertCommand, r: &RemoteOpts) -> Result<ExitCode> {
    if r.url.is_some() {
        return remote::run(cmd, r);
    }
    match cmd {
        CertCommand::Issue(a) => {
            let sans = parse_sans(&a.names.sans)?;
            let labels = parse_labels(&a.meta.labels)?;
            let ttl = parse_ttl(&a.meta.ttl)?;
            let p12 = P12Out::from_args(&a.p12)?;
            let ca = open_ca(&a.ca, true)?;
            let profile = a.profile;
            let info = issue_to(
                &ca,
                IssueParams {
                    profile: a.profile,
                    sans,
                    common_name: a.names.cn,
                    ttl,
                    owner: a.meta.owner,
                    labels,
                    location: a.meta.location,
                    key_type: a.key_type,
                    actor: actor(&a.ca),
                },
                a.out.as_deref(),
                p12.as_ref(),
                a.force,
            )?;
            if a.json {
                print_json(&info)?;
            } else {
                describe(&info, profile, a.out.as_deref())?;
                if let Some(f) = &p12 {
                    outln!("  PKCS#12      {} (0600)", f.path.display())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Export(a) => export(a),
        CertCommand::Csr(a) => {
            let sans = parse_sans(&a.names.sans)?;
            twoway_files::check_absent(&a.out, &[twoway_files::KEY, "csr.pem"], a.force)?;
            if a.key_type.is_rsa() {
                output::progress(&format!("generating a {} key…", a.key_type));
            }
            let key = PrivateKey::generate(a.key_type)?;
            let csr = twoway_pki::create_csr(&key, &sans, a.names.cn.as_deref())?;
            let mut staged = StagedFiles::new(&a.out)?;
            staged.stage(
                twoway_files::KEY,
                key.to_pem(None)?.as_bytes(),
                twoway_files::KEY_MODE,
            )?;
            staged.stage("csr.pem", csr.as_bytes(), twoway_files::PUBLIC_MODE)?;
            staged.commit()?;
            let d = a.out.display();
            let profile = suggested_profile(&sans);
            outln!("Wrote {d}/key.pem (0600, keep it here) and {d}/csr.pem (send it to the CA).")?;
            outln!("Next, on the CA: twoway cert sign {d}/csr.pem --profile {profile} --out {d}")?;
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Sign(a) => {
            let labels = parse_labels(&a.meta.labels)?;
            let ttl = parse_ttl(&a.meta.ttl)?;
            let bytes = std::fs::read(&a.csr)
                .with_context(|| format!("cannot read the CSR {}", a.csr.display()))?;
            let csr = twoway_pki::verify_csr(&bytes)
                .with_context(|| format!("refusing to sign {}", a.csr.display()))?;
            if csr.sans.is_empty() {
                return Err(anyhow::Error::from(twoway_pki::Error::NoSan))
                    .context("the CSR asks for no subject alternative name; make it with `twoway cert csr --san …`");
            }
            let ca = open_ca(&a.ca, true)?;
            let req = IssueRequest {
                profile: a.profile,
                sans: csr.sans.clone(),
                common_name: csr.common_name.clone(),
                ttl,
                owner: a.meta.owner,
                labels,
                location: a.meta.location,
                actor: actor(&a.ca),
            };
            ca.check_request(&req)?;
            let mut staged = match &a.out {
                Some(dir) => {
                    use twoway_files::{CA, CERT, CHAIN};
                    twoway_files::check_absent(dir, &[CERT, CHAIN, CA], a.force)?;
                    let mut s = Credentials::new(dir)?;
                    s.ca(ca.root_pem())?;
                    Some(s)
                }
                None => None,
            };
            let issued = ca.issue_for_csr(&req, &csr, "cert.sign")?;
            let cert = issued.pem();
            let chain = format!("{cert}{}", ca.intermediate_pem());
            match staged.as_mut() {
                Some(s) => s.certificate(&cert, &chain)?,
                None => output::write_raw(chain.as_bytes())?,
            }
            if let Some(s) = staged {
                s.commit()?;
                describe(&issued.info, a.profile, None)?;
                let d = a.out.as_deref().unwrap_or(Path::new(".")).display();
                outln!("  files        {d}/cert.pem {d}/chain.pem {d}/ca.pem")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::List(a) => inventory::list(a),
        CertCommand::Show {
            serial,
            ca,
            pem,
            json,
        } => {
            let ca = open_ca(&ca, false)?;
            // Through the CA error, so an unknown serial exits 66 like `cert revoke`.
            let rec = ca
                .store()
                .find_certificate(&serial)
                .map_err(twoway_ca::Error::from)?;
            if json {
                print_json(&rec)?;
                return Ok(ExitCode::SUCCESS);
            }
            inventory::print_record(&rec)?;
            if pem {
                output::write_raw(rec.pem.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Import(a) => inventory::import(a),
        CertCommand::Inspect(a) => inspect::run(a),
        CertCommand::Revoke { serial, reason, ca } => {
            let reason: Reason = reason
                .parse()
                .map_err(|e: twoway_pki::Error| usage(e.to_string()))?;
            let c = open_ca(&ca, false)?;
            let rec = c.revoke(&serial, reason, &actor(&ca))?;
            outln!(
                "Revoked serial {} ({}), reason {reason}. Publish it: twoway crl --ca-dir {} --out crl.pem",
                rec.serial,
                printable(&rec.sans.join(", ")),
                ca.ca_dir.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Check { within, ca, json } => inventory::check(&within, &ca, json),
        CertCommand::Prune {
            expired_before,
            archive,
            limit,
            ca,
            json,
        } => prune(&expired_before, archive, limit, &ca, json),
    }
}

/// `cert prune`: archive, then remove, certificates expired more than `expired_before` ago.
fn prune(
    expired_before: &str,
    archive: Option<std::path::PathBuf>,
    limit: usize,
    ca: &CaOpts,
    json: bool,
) -> Result<ExitCode> {
    let age = duration_arg("--expired-before", expired_before)?;
    if age < time::Duration::ZERO {
        return Err(usage("--expired-before: a time ago, such as 90d"));
    }
    if limit == 0 {
        return Err(usage("--limit: at least 1"));
    }
    let now = time::OffsetDateTime::now_utc();
    let before = now - age;
    let c = open_ca(ca, false)?;
    let archive = match archive {
        Some(p) => p,
        None => {
            let dir = ca.ca_dir.join("archive");
            twoway_files::create_private_dir_all(&dir)?;
            dir.join(format!(
                "pruned-{:04}{:02}{:02}T{:02}{:02}{:02}Z.jsonl",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            ))
        }
    };
    if archive.exists() {
        return Err(usage(format!(
            "--archive {}: the file exists; name a new one",
            archive.display()
        )));
    }
    let done = c.prune(before, limit, &archive, &actor(ca))?;
    if json {
        print_json(&done)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &done.archive {
        None => outln!("Nothing expired before {}: nothing pruned.", expired_before)?,
        Some(a) => {
            outln!(
                "Pruned {} certificate{} that expired more than {expired_before} ago; archived first to {} (sha256 {}).",
                done.removed,
                if done.removed == 1 { "" } else { "s" },
                printable(&a.display().to_string()),
                done.archive_sha256.as_deref().unwrap_or("")
            )?;
            if done.more {
                outln!("More are left: run it again.")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
