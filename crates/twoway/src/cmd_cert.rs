//! `twoway cert …`: issue, csr, sign, list, show, import, inspect, revoke, check.

use crate::cmd_ca::{actor, open_ca};
use crate::output::{self, print_json, printable, Table};
use crate::{usage, CaOpts};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use time::OffsetDateTime;
use twoway_ca::{Ca, IssueRequest};
use twoway_files::{Credentials, StagedFiles};
use twoway_pki::{parse_duration, CertInfo, KeyType, PrivateKey, Profile, Reason, San};
use twoway_store::{CertQuery, CertRecord};

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate with a key generated here; writes cert.pem, chain.pem, key.pem
    /// (0600) and ca.pem into --out.
    #[command(after_help = "\
Examples:
  twoway cert issue --profile server --san DNS:api.example.internal --san IP:10.0.0.5 \\
      --ttl 90d --owner team-payments --label env=prod --location host-17 --out ./api
  twoway cert issue --profile client --san URI:spiffe://example.org/ns/prod/sa/billing --out ./billing")]
    Issue(IssueArgs),
    /// Make a private key and a CSR for the CA to sign (the key never leaves this machine).
    #[command(after_help = "\
Example:
  twoway cert csr --san DNS:api.example.internal --out ./api     # writes key.pem and csr.pem
  twoway cert sign ./api/csr.pem --profile server --out ./api     # on the CA")]
    Csr(CsrArgs),
    /// Sign a CSR: its signature is verified, its names checked against policy.
    #[command(after_help = "\
Examples:
  twoway cert sign request.csr --profile client --owner team-a --out ./client
  twoway cert sign request.csr --profile server > chain.pem")]
    Sign(SignArgs),
    /// List the inventory (a table for people, --json for machines).
    #[command(after_help = "\
Examples:
  twoway cert list --expiring 30d
  twoway cert list --owner team-payments --label env=prod --json
  twoway cert list --san '*.example.internal' --status revoked")]
    List(ListArgs),
    /// Show one certificate by its ID (the first column of `cert list`), serial or SHA-256
    /// fingerprint (or a unique prefix of 8+ hex digits of either).
    #[command(after_help = "\
Examples:
  twoway cert show 4f3a9c21e0b7            # the ID column of `twoway cert list`
  twoway cert show 4f3a9c21e0b7 --pem > api.pem
  twoway cert show 01a218aafaf2d6a1de834a6f418945a3 --json

An ID is the start of the SHA-256 fingerprint, which is random; serials start with the
issue time, so a short serial prefix can match several certificates issued together.")]
    Show {
        /// ID, serial or fingerprint, hex.
        serial: String,
        #[command(flatten)]
        ca: CaOpts,
        /// Print the PEM too.
        #[arg(long)]
        pem: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record certificates this CA did not issue, so the inventory answers for them too.
    #[command(after_help = "\
Example:
  twoway cert import /etc/nginx/certs/*.pem --owner team-web --location web-01")]
    Import(ImportArgs),
    /// Show what a certificate file holds, or what a server presents.
    #[command(after_help = "\
Examples:
  twoway cert inspect ./api/chain.pem
  twoway cert inspect --remote api.example.internal:8443
  twoway cert inspect --remote 127.0.0.1:8443 --server-name localhost --ca ./ca.pem")]
    Inspect(crate::inspect::InspectArgs),
    /// Revoke a certificate; publish with `twoway crl`.
    #[command(after_help = "\
Example:
  twoway cert revoke 4f3a9c21e0b7 --reason key-compromise && twoway crl --out crl.pem

Reasons: unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
cessation-of-operation, certificate-hold, privilege-withdrawn.")]
    Revoke {
        /// ID (from `cert list`), serial or fingerprint, hex.
        serial: String,
        /// Why.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        ca: CaOpts,
    },
    /// List what expires within a window and needs a person; exit 1 when anything does (for
    /// cron and monitoring).
    #[command(after_help = "\
Example:
  twoway cert check --within 14d || notify-team

Not reported: certificates that renew themselves while they still can, i.e. enrolled ones
an agent renews (label renewal=agent), the online CA's own TLS and OCSP certificates, and
owners or profiles listed in [renewal] of ca.toml (or labelled renewal=auto). Such a
certificate is reported once three quarters of its life have passed without a renewal.
Revoked and superseded certificates are never reported.")]
    Check {
        /// The window.
        #[arg(long, default_value = "14d")]
        within: String,
        #[command(flatten)]
        ca: CaOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// Subject alternative name: DNS:name, IP:addr, URI:uri (e.g. a SPIFFE ID), EMAIL:addr; repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    pub sans: Vec<String>,
    /// Optional subject common name.
    #[arg(long)]
    pub cn: Option<String>,
}

#[derive(Args, Debug)]
pub struct MetaArgs {
    /// Validity, e.g. 24h, 90d (default: the profile's default_ttl in ca.toml).
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    /// Owner (team or person), for the inventory.
    #[arg(long)]
    pub(crate) owner: Option<String>,
    /// Label key=value, for the inventory; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Where the certificate is deployed, for the inventory.
    #[arg(long)]
    pub(crate) location: Option<String>,
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Profile: server, client or peer.
    #[arg(long)]
    profile: Profile,
    #[command(flatten)]
    names: NameArgs,
    #[command(flatten)]
    meta: MetaArgs,
    /// Key type of the new key.
    #[arg(long, default_value = "p256")]
    key_type: KeyType,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Replace existing files in --out.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct CsrArgs {
    #[command(flatten)]
    names: NameArgs,
    /// Key type of the new key.
    #[arg(long, default_value = "p256")]
    key_type: KeyType,
    /// Output directory for key.pem (0600) and csr.pem.
    #[arg(long)]
    out: PathBuf,
    /// Replace existing files in --out.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The CSR, PEM or DER.
    pub(crate) csr: PathBuf,
    /// Profile: server, client or peer.
    #[arg(long)]
    pub(crate) profile: Profile,
    #[command(flatten)]
    pub(crate) meta: MetaArgs,
    /// Output directory for cert.pem, chain.pem and ca.pem; default: the chain on stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Replace existing files in --out.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    ca: CaOpts,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only certificates that expire within this window, e.g. 30d.
    #[arg(long)]
    pub(crate) expiring: Option<String>,
    /// Only expired certificates.
    #[arg(long)]
    pub(crate) expired: bool,
    /// Only this owner.
    #[arg(long)]
    pub(crate) owner: Option<String>,
    /// Only certificates with this label; repeatable (all must match).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Only this status: active, revoked, expired.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only certificates with a SAN matching this glob, e.g. '*.example.internal'.
    #[arg(long)]
    pub(crate) san: Option<String>,
    /// Only this profile: server, client, peer, ocsp, ca, unknown.
    #[arg(long, value_parser = ["server", "client", "peer", "ocsp", "ca", "unknown"])]
    pub(crate) profile: Option<String>,
    /// Rows per page.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// Page number, from 1.
    #[arg(long, default_value_t = 1)]
    pub(crate) page: usize,
    #[command(flatten)]
    ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// PEM or DER files; every certificate in them is recorded. Files holding no
    /// certificate (keys, CSRs) or that cannot be read for lack of permission are skipped
    /// and named; a malformed certificate stops the import before anything is recorded.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Owner, for the inventory.
    #[arg(long)]
    owner: Option<String>,
    /// Label key=value; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Where it is deployed.
    #[arg(long)]
    location: Option<String>,
    #[command(flatten)]
    ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Everything `issue_to_dir` needs.
pub struct IssueParams {
    pub profile: Profile,
    pub sans: Vec<San>,
    pub common_name: Option<String>,
    pub ttl: Option<time::Duration>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub location: Option<String>,
    pub key_type: KeyType,
    pub actor: String,
}

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

fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
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
    ttl.as_deref()
        .map(|t| parse_duration(t).map_err(|e| usage(format!("--ttl: {e}"))))
        .transpose()
}

fn check_outputs(dir: &Path, names: &[&str], force: bool) -> Result<()> {
    Ok(twoway_files::check_absent(dir, names, force)?)
}

/// Generates a key, stages it in `out` (so an unwritable directory fails before anything is
/// recorded), issues and records the certificate, then writes every file atomically.
pub fn issue_to_dir(ca: &Ca, p: IssueParams, out: &Path, force: bool) -> Result<CertInfo> {
    use twoway_files::{CA, CERT, CHAIN, KEY};
    check_outputs(out, &[CERT, CHAIN, KEY, CA], force)?;
    let req = IssueRequest {
        profile: p.profile,
        sans: p.sans,
        common_name: p.common_name,
        ttl: p.ttl,
        owner: p.owner,
        labels: p.labels,
        location: p.location,
        actor: p.actor,
    };
    // Refuse a bad request before making a key or touching the disk.
    ca.check_request(&req)?;
    if p.key_type.is_rsa() {
        output::progress(&format!("generating a {} key…", p.key_type));
    }
    let key = PrivateKey::generate(p.key_type)?;
    let mut files = Credentials::new(out)?;
    files.key(&key.to_pem(None)?)?;
    files.ca(ca.root_pem())?;
    let issued = ca.issue(&req, &key.public_key_der(), "cert.issue")?;
    let cert = issued.pem();
    files.certificate(&cert, &format!("{cert}{}", ca.intermediate_pem()))?;
    files.commit()?;
    Ok(issued.info)
}

fn describe(info: &CertInfo, out: Option<&Path>) -> Result<()> {
    outln!(
        "Issued {} certificate, serial {}",
        info.profile.map(|p| p.as_str()).unwrap_or("a"),
        info.serial
    )?;
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

pub fn run(cmd: CertCommand) -> Result<ExitCode> {
    match cmd {
        CertCommand::Issue(a) => {
            let sans = parse_sans(&a.names.sans)?;
            let labels = parse_labels(&a.meta.labels)?;
            let ttl = parse_ttl(&a.meta.ttl)?;
            let ca = open_ca(&a.ca, true)?;
            let info = issue_to_dir(
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
                &a.out,
                a.force,
            )?;
            if a.json {
                print_json(&info)?;
            } else {
                describe(&info, Some(&a.out))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Csr(a) => {
            let sans = parse_sans(&a.names.sans)?;
            check_outputs(&a.out, &[twoway_files::KEY, "csr.pem"], a.force)?;
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
                    check_outputs(dir, &[CERT, CHAIN, CA], a.force)?;
                    let mut s = Credentials::new(dir)?;
                    s.ca(ca.root_pem())?;
                    Some(s)
                }
                None => None,
            };
            let issued = ca.issue(&req, &csr.public_key_der, "cert.sign")?;
            let cert = issued.pem();
            let chain = format!("{cert}{}", ca.intermediate_pem());
            match staged.as_mut() {
                Some(s) => s.certificate(&cert, &chain)?,
                None => output::write_raw(chain.as_bytes())?,
            }
            if let Some(s) = staged {
                s.commit()?;
                describe(&issued.info, None)?;
                let d = a.out.as_deref().unwrap_or(Path::new(".")).display();
                outln!("  files        {d}/cert.pem {d}/chain.pem {d}/ca.pem")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::List(a) => list(a),
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
            print_record(&rec)?;
            if pem {
                output::write_raw(rec.pem.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Import(a) => import(a),
        CertCommand::Inspect(a) => crate::inspect::run(a),
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
        CertCommand::Check { within, ca, json } => check(&within, &ca, json),
    }
}

/// `cert check`: what expires within the window and needs a person (see its --help).
fn check(within: &str, ca: &CaOpts, json: bool) -> Result<ExitCode> {
    let window = parse_duration(within).map_err(|e| usage(format!("--within: {e}")))?;
    let c = open_ca(ca, false)?;
    let now = OffsetDateTime::now_utc();
    let page = c.list(&CertQuery {
        expiring_before: Some(now + window),
        now: Some(now),
        ..Default::default()
    })?;
    let (attention, automatic): (Vec<CertRecord>, Vec<CertRecord>) = page
        .items
        .into_iter()
        .partition(|r| c.config().needs_attention(r, now));
    let printed = if json {
        print_json(&serde_json::json!({
            "within": within,
            "expiring": attention,
            "auto_renewed": automatic.len(),
        }))
    } else {
        (|| -> Result<()> {
            if attention.is_empty() {
                outln!("Nothing expires within {within} that needs a person.")?;
            } else {
                outln!(
                    "{} certificate(s) expire within {within} and nobody renews them:",
                    attention.len()
                )?;
                out!("{}", record_table(&attention, now).render())?;
            }
            if !automatic.is_empty() {
                outln!(
                    "Not counted: {} certificate(s) that renew themselves (agent, the online CA's own, [renewal] in ca.toml) and still can.",
                    automatic.len()
                )?;
            }
            Ok(())
        })()
    };
    // The verdict stands even when the reader went away (`cert check | head -1`).
    output::unless_closed(printed)?;
    Ok(if attention.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::EXPIRING)
    })
}

/// What to do with one file given to `cert import`.
enum ImportFile {
    /// Its certificates, DER.
    Certificates(Vec<Vec<u8>>),
    /// No certificate in it (a key, a CSR, any other file), or no permission to read it.
    Skipped(String),
}

fn import_file(f: &Path) -> Result<ImportFile> {
    let bytes = match std::fs::read(f) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Ok(ImportFile::Skipped(format!("cannot read it: {e}")))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", f.display())),
    };
    let ders = match twoway_pki::parse_certificates(&bytes) {
        Ok(d) => d,
        Err(twoway_pki::Error::NoPemBlock(_)) => {
            return Ok(ImportFile::Skipped("holds no certificate".into()))
        }
        Err(e) => {
            return Err(anyhow::Error::from(e))
                .with_context(|| format!("{} holds a malformed certificate", f.display()))
        }
    };
    for der in &ders {
        CertInfo::from_der(der)
            .with_context(|| format!("{} holds a malformed certificate", f.display()))?;
    }
    Ok(ImportFile::Certificates(ders))
}

/// `cert import FILES…`: every file is read and parsed first, so a malformed one imports
/// nothing; files without a certificate are skipped and named.
fn import(a: ImportArgs) -> Result<ExitCode> {
    let labels = parse_labels(&a.labels)?;
    let mut files = Vec::new();
    for f in &a.files {
        files.push((f.display().to_string(), import_file(f)?));
    }
    if !files
        .iter()
        .any(|(_, f)| matches!(f, ImportFile::Certificates(_)))
    {
        let names: Vec<String> = files
            .iter()
            .map(|(n, f)| match f {
                ImportFile::Skipped(why) => format!("{n} ({why})"),
                ImportFile::Certificates(_) => n.clone(),
            })
            .collect();
        return Err(twoway_ca::Error::Pki(twoway_pki::Error::NoPemBlock(
            "CERTIFICATE",
        )))
        .with_context(|| {
            format!(
                "nothing to import: no file holds a certificate: {}",
                names.join(", ")
            )
        });
    }
    let ca = open_ca(&a.ca, false)?;
    let act = actor(&a.ca);
    let mut imported = Vec::new();
    let mut skipped = Vec::new();
    for (name, f) in files {
        match f {
            ImportFile::Skipped(why) => skipped.push((name, why)),
            ImportFile::Certificates(ders) => {
                for der in ders {
                    let pem = twoway_pki::der_to_pem("CERTIFICATE", &der);
                    let res = ca
                        .import(
                            pem.as_bytes(),
                            a.owner.clone(),
                            labels.clone(),
                            a.location.clone(),
                            &act,
                        )
                        .with_context(|| format!("importing {name}"))?;
                    imported.extend(res.into_iter().map(|o| (name.clone(), o)));
                }
            }
        }
    }
    if a.json {
        let mut v: Vec<serde_json::Value> = imported
            .iter()
            .map(|(f, o)| serde_json::json!({"file": f, "outcome": o.outcome, "certificate": o.info}))
            .collect();
        v.extend(skipped.iter().map(
            |(f, why)| serde_json::json!({"file": f, "outcome": "skipped", "reason": why, "certificate": null}),
        ));
        print_json(&v)?;
    } else {
        let mut t = Table::new(&["FILE", "ID", "SUBJECT", "EXPIRES", "RESULT"]);
        for (f, o) in &imported {
            t.row(vec![
                f.clone(),
                output::id(&o.info.fingerprint),
                o.info.subject.clone(),
                output::date(o.info.not_after),
                o.outcome.to_string(),
            ]);
        }
        out!("{}", t.render())?;
        for (f, why) in &skipped {
            outln!("skipped {}: {why}", printable(f))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(a: ListArgs) -> Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    if let Some(s) = &a.status {
        if !["active", "revoked", "expired"].contains(&s.as_str()) {
            return Err(usage(format!(
                "--status {s:?}: use active, revoked or expired"
            )));
        }
    }
    if a.page == 0 || a.limit == 0 {
        return Err(usage("--page and --limit start at 1"));
    }
    let expiring_before = a
        .expiring
        .as_deref()
        .map(|e| {
            parse_duration(e)
                .map(|d| now + d)
                .map_err(|err| usage(format!("--expiring: {err}")))
        })
        .transpose()?;
    let q = CertQuery {
        expiring_before,
        expired: a.expired,
        status: a.status.clone(),
        owner: a.owner.clone(),
        labels: parse_labels(&a.labels)?.into_iter().collect(),
        san_glob: a.san.clone(),
        profile: a.profile.clone(),
        now: Some(now),
        offset: (a.page - 1) * a.limit,
        limit: a.limit,
    };
    let ca = open_ca(&a.ca, false)?;
    let page = ca.list(&q)?;
    if a.json {
        print_json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.items.is_empty() {
        outln!("No certificates match.")?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", record_table(&page.items, now).render())?;
    let shown_to = page.offset + page.items.len();
    if page.total > shown_to || page.offset > 0 {
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

/// The listing table. Its first column, ID, is what `cert show` and `cert revoke` take.
fn record_table(items: &[CertRecord], now: OffsetDateTime) -> Table {
    let mut t = Table::new(&["ID", "NAMES", "PROFILE", "OWNER", "STATUS", "EXPIRES"]);
    for r in items {
        let names = match (r.sans.first(), r.sans.len()) {
            (Some(first), 1) => first.clone(),
            (Some(first), n) => format!("{first} (+{})", n - 1),
            (None, _) => r.subject.clone(),
        };
        t.row(vec![
            output::id(&r.fingerprint),
            names,
            r.profile.clone(),
            r.owner.clone().unwrap_or_else(|| "-".into()),
            r.effective_status(now).to_string(),
            format!(
                "{} ({})",
                output::date(r.not_after),
                output::relative(r.not_after, now)
            ),
        ]);
    }
    t
}

fn print_record(r: &CertRecord) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    // Everything but our own words comes from the certificate or the inventory: each value
    // is escaped whole, so it cannot break the line or drive the terminal.
    let field = |name: &str, value: &str| outln!("{name:<12} {}", printable(value));
    field("id", &output::id(&r.fingerprint))?;
    field("serial", &r.serial)?;
    field("fingerprint", &r.fingerprint)?;
    field(
        "subject",
        if r.subject.is_empty() {
            "(empty)"
        } else {
            &r.subject
        },
    )?;
    field("issuer", &r.issuer)?;
    field("names", &r.sans.join(", "))?;
    field("profile", &r.profile)?;
    field("key type", &r.key_type)?;
    field("not before", &output::date(r.not_before))?;
    field(
        "not after",
        &format!(
            "{} ({})",
            output::date(r.not_after),
            output::relative(r.not_after, now)
        ),
    )?;
    field("status", r.effective_status(now))?;
    if let (Some(at), Some(reason)) = (r.revoked_at, &r.revocation_reason) {
        field("revoked", &format!("{} ({reason})", output::date(at)))?;
    }
    field("owner", r.owner.as_deref().unwrap_or("-"))?;
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field(
        "labels",
        &if labels.is_empty() {
            "-".into()
        } else {
            labels.join(", ")
        },
    )?;
    field("location", r.location.as_deref().unwrap_or("-"))?;
    field("source", r.source.as_str())?;
    field("recorded", &output::date(r.recorded_at))
}
