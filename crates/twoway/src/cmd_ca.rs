//! `twoway ca …`, `twoway crl`, `twoway audit …` and `twoway quickstart`.

use crate::output::{self, print_json, Table};
use crate::{usage, CaOpts};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use time::OffsetDateTime;
use twoway_ca::{files, Ca, InitOptions};
use twoway_pki::{parse_duration, KeyType};
use zeroize::Zeroizing;

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a CA: a self-signed root, an intermediate (pathLen 0), keys (0600), ca.toml and
    /// an empty inventory. Refuses to overwrite an existing CA.
    #[command(after_help = "\
Examples:
  twoway ca init --name \"Example Corp\"
  twoway ca init --ca-dir /srv/ca --name \"Example Corp\" --key-type p384 \\
      --permit-dns example.internal --permit-ip 10.0.0.0/8 --trust-domain example.org \\
      --url https://ca.example.internal:9000 --passphrase-file /run/secrets/ca-pass

After init the root key (root.key) is not needed any more: move it offline.")]
    Init(InitArgs),
    /// Run the online CA: HTTPS API (enroll, renew, revoke, inventory), OCSP, CRL, metrics.
    Serve(crate::cmd_serve::ServeArgs),
    /// Show the CA: its certificates, settings and inventory counts.
    Show {
        #[command(flatten)]
        ca: CaOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    ca: CaOpts,
    /// Organisation name for the CA certificates' subjects.
    #[arg(long)]
    name: String,
    /// Key type of the CA keys: p256, p384, ed25519, rsa2048, rsa3072, rsa4096.
    #[arg(long, default_value = "p256")]
    key_type: KeyType,
    /// Root validity.
    #[arg(long, default_value = "10y")]
    root_ttl: String,
    /// Intermediate validity.
    #[arg(long, default_value = "5y")]
    intermediate_ttl: String,
    /// Permitted DNS subtree (X.509 name constraint and policy); repeatable.
    #[arg(long = "permit-dns", value_name = "DOMAIN")]
    permit_dns: Vec<String>,
    /// Permitted IP range (X.509 name constraint and policy); repeatable.
    #[arg(long = "permit-ip", value_name = "CIDR")]
    permit_ip: Vec<String>,
    /// SPIFFE trust domain: URI SANs limited to spiffe://DOMAIN/*.
    #[arg(long)]
    trust_domain: Option<String>,
    /// Public URL of the CA (CRL distribution point and OCSP in issued certificates).
    #[arg(long)]
    url: Option<String>,
}

#[derive(Args, Debug)]
pub struct CrlArgs {
    #[command(flatten)]
    ca: CaOpts,
    /// Where to write the CRL; .der for DER, anything else PEM. Default: PEM on stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// How long the CRL is valid (default: [crl] next_update in ca.toml).
    #[arg(long)]
    next_update: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    List {
        #[command(flatten)]
        ca: CaOpts,
        /// First sequence number to show.
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the hash chain: detects an altered or removed entry (exit 1 if broken).
    Verify {
        #[command(flatten)]
        ca: CaOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
#[command(after_help = "\
Example:
  twoway quickstart ./demo
Creates ./demo/ca, ./demo/server (localhost, 127.0.0.1, ::1) and ./demo/client, then prints
the openssl and curl commands that show mutual TLS working, and failing without the client
certificate.")]
pub struct QuickstartArgs {
    /// Directory to create everything in.
    dir: PathBuf,
}

/// Who is acting, for the audit log.
pub fn actor(opts: &CaOpts) -> String {
    if let Some(a) = &opts.actor {
        return a.clone();
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("cli:{user}@{host}")
}

fn read_passphrase(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        return Err(usage(format!(
            "the passphrase file {} is empty: put the passphrase on its first line",
            path.display()
        )));
    }
    Ok(Zeroizing::new(first.to_vec()))
}

/// Opens the CA; with `unlock`, also loads the signing key.
pub fn open_ca(opts: &CaOpts, unlock: bool) -> Result<Ca> {
    open_ca_with(opts, unlock, None)
}

/// Opens the CA with the inventory at `database` (`sqlite://PATH`, `postgres://…`; default
/// `[server] database`, else the directory's inventory.db).
pub fn open_ca_with(opts: &CaOpts, unlock: bool, database: Option<&str>) -> Result<Ca> {
    let url = match database {
        Some(d) => Some(d.to_string()),
        None => twoway_ca::CaConfig::load(&opts.ca_dir.join(twoway_ca::layout::CONFIG))
            .ok()
            .and_then(|c| c.server.database),
    };
    let mut ca = match url {
        None => Ca::open(&opts.ca_dir)?,
        Some(u) => Ca::open_with_store(&opts.ca_dir, crate::cmd_serve::open_store(&u)?)?,
    };
    if unlock {
        let pass = opts
            .passphrase_file
            .as_deref()
            .map(read_passphrase)
            .transpose()?;
        ca.unlock(pass.as_ref().map(|p| p.as_slice()))?;
    }
    Ok(ca)
}

fn duration_arg(flag: &str, v: &str) -> Result<time::Duration> {
    parse_duration(v).map_err(|e| usage(format!("{flag}: {e}")))
}

pub fn run_ca(cmd: CaCommand) -> Result<ExitCode> {
    match cmd {
        CaCommand::Serve(a) => crate::cmd_serve::run(a),
        CaCommand::Init(a) => {
            let pass =
                a.ca.passphrase_file
                    .as_deref()
                    .map(read_passphrase)
                    .transpose()?;
            let opts = InitOptions {
                name: a.name.clone(),
                key_type: a.key_type,
                root_ttl: duration_arg("--root-ttl", &a.root_ttl)?,
                intermediate_ttl: duration_arg("--intermediate-ttl", &a.intermediate_ttl)?,
                permit_dns: a.permit_dns.clone(),
                permit_ip: a.permit_ip.clone(),
                trust_domain: a.trust_domain.clone(),
                url: a.url.clone(),
                passphrase: pass,
                actor: actor(&a.ca),
            };
            if a.key_type.is_rsa() {
                output::progress(&format!("generating two {} keys…", a.key_type));
            }
            let ca = twoway_ca::init(&a.ca.ca_dir, &opts)?;
            let dir = a.ca.ca_dir.display();
            println!("Created a CA for {:?} in {dir}", a.name);
            println!("  root          {dir}/root.pem   (key {dir}/root.key: move it offline now)");
            println!("  intermediate  {dir}/intermediate.pem   (key {dir}/intermediate.key signs everything)");
            println!("  config        {dir}/ca.toml");
            println!("  inventory     {dir}/inventory.db");
            println!(
                "  valid until   {} (intermediate), fingerprint of the root: {}",
                output::date(ca.intermediate_info().not_after),
                twoway_pki::sha256_hex(
                    &twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
                        .first()
                        .cloned()
                        .unwrap_or_default()
                )
            );
            println!("Next: twoway cert issue --ca-dir {dir} --profile server --san DNS:api.example.internal --out ./api");
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Show { ca, json } => {
            let ca = open_ca(&ca, false)?;
            let root = twoway_pki::CertInfo::from_der(
                twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
                    .first()
                    .ok_or_else(|| anyhow::anyhow!("root.pem holds no certificate"))?,
            )?;
            let counts = ca.store().count_by_status()?;
            if json {
                return print_json(&serde_json::json!({
                    "dir": ca.dir(),
                    "config": ca.config(),
                    "root": root,
                    "intermediate": ca.intermediate_info(),
                    "certificates": counts.iter().map(|(s, n)| (s.clone(), *n)).collect::<std::collections::BTreeMap<_,_>>(),
                }))
                .map(|_| ExitCode::SUCCESS);
            }
            let now = OffsetDateTime::now_utc();
            println!(
                "CA            {} ({})",
                ca.config().ca.name,
                ca.dir().display()
            );
            for (label, info) in [("root", &root), ("intermediate", ca.intermediate_info())] {
                println!(
                    "{label:<13} {}  expires {} ({})",
                    info.subject,
                    output::date(info.not_after),
                    output::relative(info.not_after, now)
                );
            }
            println!("key type      {}", ca.config().ca.key_type);
            println!(
                "url           {}",
                ca.config().ca.url.as_deref().unwrap_or("-")
            );
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            println!(
                "certificates  {}",
                if summary.is_empty() {
                    "none".into()
                } else {
                    summary.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn run_crl(a: CrlArgs) -> Result<ExitCode> {
    let next = a
        .next_update
        .as_deref()
        .map(|v| duration_arg("--next-update", v))
        .transpose()?;
    let ca = open_ca(&a.ca, true)?;
    if let Some(path) = &a.out {
        // Before a CRL number is used and audited: the output must be writable.
        files::check_writable(path)?;
    }
    let (number, der) = ca.crl(next, &actor(&a.ca))?;
    let pem = twoway_pki::der_to_pem("X509 CRL", &der);
    match &a.out {
        None => print!("{pem}"),
        Some(path) => {
            let is_der = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("der"));
            files::write_atomic(path, if is_der { &der } else { pem.as_bytes() }, 0o644)?;
            eprintln!("Wrote CRL number {number} to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_audit(cmd: AuditCommand) -> Result<ExitCode> {
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
                println!("No audit entries from {from} on.");
            } else {
                print!("{}", t.render());
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
                println!("Audit log intact: {n} entries, hash chain verified.");
            } else {
                println!("Audit log BROKEN ({n} entries):");
                for p in &problems {
                    println!("  entry {}: {}", p.seq, p.problem);
                }
            }
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::exit::FAILURE)
            })
        }
    }
}

pub fn run_quickstart(a: QuickstartArgs) -> Result<ExitCode> {
    let ca_dir = a.dir.join("ca");
    if ca_dir.join("ca.toml").exists() {
        return Err(usage(format!(
            "{} already holds a quickstart: choose another directory, or remove it to start over",
            a.dir.display()
        )));
    }
    let opts = CaOpts {
        ca_dir: ca_dir.clone(),
        passphrase_file: None,
        actor: None,
    };
    let act = actor(&opts);
    output::progress("creating the CA…");
    twoway_ca::init(
        &ca_dir,
        &InitOptions {
            name: "twoway quickstart".into(),
            key_type: KeyType::P256,
            root_ttl: time::Duration::days(3650),
            intermediate_ttl: time::Duration::days(1825),
            permit_dns: vec![],
            permit_ip: vec![],
            trust_domain: Some("quickstart.twoway".into()),
            url: None,
            passphrase: None,
            actor: act.clone(),
        },
    )?;
    let ca = open_ca(&opts, true)?;
    let server = crate::cmd_cert::issue_to_dir(
        &ca,
        crate::cmd_cert::IssueParams {
            profile: twoway_pki::Profile::Server,
            sans: vec![
                "DNS:localhost".parse()?,
                "IP:127.0.0.1".parse()?,
                "IP:::1".parse()?,
            ],
            common_name: Some("localhost".into()),
            ttl: None,
            owner: Some("quickstart".into()),
            labels: Default::default(),
            location: None,
            key_type: KeyType::P256,
            actor: act.clone(),
        },
        &a.dir.join("server"),
        false,
    )?;
    let client = crate::cmd_cert::issue_to_dir(
        &ca,
        crate::cmd_cert::IssueParams {
            profile: twoway_pki::Profile::Client,
            sans: vec!["URI:spiffe://quickstart.twoway/client".parse()?],
            common_name: None,
            ttl: None,
            owner: Some("quickstart".into()),
            labels: Default::default(),
            location: None,
            key_type: KeyType::P256,
            actor: act,
        },
        &a.dir.join("client"),
        false,
    )?;
    let d = a.dir.display();
    println!("Created in {d}:");
    println!("  ca/       the CA (root.pem is the trust anchor)");
    println!(
        "  server/   cert.pem chain.pem key.pem ca.pem   for localhost, 127.0.0.1, ::1 (serial {})",
        server.serial
    );
    println!("  client/   cert.pem chain.pem key.pem ca.pem   for spiffe://quickstart.twoway/client (serial {})", client.serial);
    println!();
    println!("See mutual TLS work. In one terminal, a server that requires a client certificate:");
    println!("  openssl s_server -accept 127.0.0.1:8443 -www -cert {d}/server/cert.pem -cert_chain {d}/ca/intermediate.pem -key {d}/server/key.pem -CAfile {d}/server/ca.pem -Verify 1 -verify_return_error");
    println!("In another, a client that presents one (answers with the server's status page):");
    println!("  curl --cacert {d}/client/ca.pem --cert {d}/client/chain.pem --key {d}/client/key.pem https://localhost:8443/");
    println!("Without the client certificate the handshake is refused:");
    println!("  curl --cacert {d}/client/ca.pem https://localhost:8443/");
    println!("Or with openssl as the client:");
    println!("  openssl s_client -connect 127.0.0.1:8443 -CAfile {d}/client/ca.pem -cert {d}/client/cert.pem -cert_chain {d}/ca/intermediate.pem -key {d}/client/key.pem -verify_return_error");
    println!();
    println!("Put mTLS in front of any app (here one on 127.0.0.1:8080) with the proxy:");
    println!("  twoway proxy server --listen 127.0.0.1:8443 --backend 127.0.0.1:8080 --cert {d}/server/chain.pem --key {d}/server/key.pem --client-ca {d}/server/ca.pem --http");
    println!();
    println!("The inventory: twoway cert list --ca-dir {d}/ca");
    Ok(ExitCode::SUCCESS)
}
