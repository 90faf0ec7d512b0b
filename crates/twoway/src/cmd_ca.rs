//! `twoway ca …`, `twoway crl`, `twoway audit …` and `twoway quickstart`.

use crate::output::{self, print_json, printable, Table};
use crate::{usage, CaOpts};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use time::OffsetDateTime;
use twoway_ca::{Ca, InitOptions};
use twoway_files as files;
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
    /// Show the CA: its certificates, the names it may certify, settings and inventory counts.
    #[command(after_help = "\
Examples:
  twoway ca show --ca-dir ./ca
  twoway ca show | grep 'root sha256'     # the fingerprint `twoway agent --ca-fingerprint` takes")]
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
#[command(after_help = "\
Examples:
  twoway crl --out crl.pem                    # PEM; --out crl.der for DER
  twoway crl --next-update 7d > crl.pem
  openssl verify -crl_check -CRLfile crl.pem -CAfile ca/root.pem -untrusted ca/intermediate.pem cert.pem

Each CRL takes the next CRL number (recorded in the audit log) and lists every revoked,
unexpired certificate of this intermediate.")]
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
#[command(after_help = "\
Examples:
  twoway audit list --from 120 --limit 20
  twoway audit verify || echo 'the audit log was altered'")]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    #[command(after_help = "\
Examples:
  twoway audit list
  twoway audit list --from 120 --limit 20 --json")]
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
    #[command(after_help = "\
Example:
  twoway audit verify || notify-security

Limitation: the chain proves every entry up to the newest one, but not that the newest
entries are all there. Removing entries from the end leaves a shorter chain that verifies;
keep the last sequence number and hash somewhere else (a log shipper, a ticket) to notice.")]
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
/// `[server] database`, else the directory's inventory.db: [`twoway_ca::Database::for_ca`]).
pub fn open_ca_with(opts: &CaOpts, unlock: bool, database: Option<&str>) -> Result<Ca> {
    let database = database
        .map(|d| d.parse::<twoway_ca::Database>())
        .transpose()
        .map_err(|e| usage(format!("--database {e}")))?;
    let mut ca = Ca::open_with_database(&opts.ca_dir, database.as_ref())?;
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
            outln!("Created a CA for {:?} in {dir}", a.name)?;
            outln!("  root          {dir}/root.pem   (key {dir}/root.key: move it offline now)")?;
            outln!("  intermediate  {dir}/intermediate.pem   (key {dir}/intermediate.key signs everything)")?;
            outln!("  config        {dir}/ca.toml")?;
            outln!("  inventory     {dir}/inventory.db")?;
            outln!(
                "  valid until   {} (intermediate), fingerprint of the root: {}",
                output::date(ca.intermediate_info().not_after),
                twoway_pki::sha256_hex(
                    &twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
                        .first()
                        .cloned()
                        .unwrap_or_default()
                )
            )?;
            outln!(
                "Next: {} cert issue --ca-dir {dir} --profile server --san DNS:api.example.internal --out ./api",
                output::self_command()
            )?;
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
                    "name_constraints": ca.name_constraints().map(|nc| serde_json::json!({
                        "permitted": nc.permitted(), "excluded": nc.excluded(),
                    })),
                    "certificates": counts.iter().map(|(s, n)| (s.clone(), *n)).collect::<std::collections::BTreeMap<_,_>>(),
                }))
                .map(|_| ExitCode::SUCCESS);
            }
            let now = OffsetDateTime::now_utc();
            outln!(
                "CA            {} ({})",
                printable(&ca.config().ca.name),
                printable(&ca.dir().display().to_string())
            )?;
            for (label, info) in [("root", &root), ("intermediate", ca.intermediate_info())] {
                outln!(
                    "{label:<13} {}  expires {} ({})",
                    printable(&info.subject),
                    output::date(info.not_after),
                    output::relative(info.not_after, now)
                )?;
            }
            outln!("root sha256   {}", root.fingerprint)?;
            match ca.name_constraints() {
                Some(nc) => outln!(
                    "may certify   {} (the intermediate's name constraints; [policy] in ca.toml narrows them)",
                    nc.permitted()
                )?,
                None => outln!(
                    "may certify   any name (no name constraints; [policy] in ca.toml decides)"
                )?,
            }
            outln!("key type      {}", ca.config().ca.key_type)?;
            outln!(
                "url           {}",
                ca.config().ca.url.as_deref().unwrap_or("-")
            )?;
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            outln!(
                "certificates  {}",
                if summary.is_empty() {
                    "none".into()
                } else {
                    summary.join(", ")
                }
            )?;
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
        None => output::write_raw(pem.as_bytes())?,
        Some(path) => {
            let is_der = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("der"));
            files::write_atomic(path, if is_der { &der } else { pem.as_bytes() }, 0o644)?;
            // A note for people; a closed stderr is no reason to fail once the CRL is written.
            let _ = writeln!(
                std::io::stderr(),
                "Wrote CRL number {number} to {}",
                path.display()
            );
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
    outln!("Created in {d}:")?;
    outln!("  ca/       the CA (root.pem is the trust anchor)")?;
    outln!(
        "  server/   cert.pem chain.pem key.pem ca.pem   for localhost, 127.0.0.1, ::1 (serial {})",
        server.serial
    )?;
    outln!("  client/   cert.pem chain.pem key.pem ca.pem   for spiffe://quickstart.twoway/client (serial {})", client.serial)?;
    outln!()?;
    outln!("See mutual TLS work. In one terminal, a server that requires a client certificate:")?;
    outln!("  openssl s_server -accept 127.0.0.1:8443 -www -cert {d}/server/cert.pem -cert_chain {d}/ca/intermediate.pem -key {d}/server/key.pem -CAfile {d}/server/ca.pem -Verify 1 -verify_return_error")?;
    outln!("In another, a client that presents one (answers with the server's status page):")?;
    outln!("  curl --cacert {d}/client/ca.pem --cert {d}/client/chain.pem --key {d}/client/key.pem https://localhost:8443/")?;
    outln!("Without the client certificate the handshake is refused:")?;
    outln!("  curl --cacert {d}/client/ca.pem https://localhost:8443/")?;
    outln!("Or with openssl as the client:")?;
    outln!("  openssl s_client -connect 127.0.0.1:8443 -CAfile {d}/client/ca.pem -cert {d}/client/cert.pem -cert_chain {d}/ca/intermediate.pem -key {d}/client/key.pem -verify_return_error")?;
    outln!()?;
    let tw = output::self_command();
    outln!("Put mTLS in front of any app (here one on 127.0.0.1:8080) with the proxy:")?;
    outln!("  {tw} proxy server --listen 127.0.0.1:8443 --backend 127.0.0.1:8080 --cert {d}/server/chain.pem --key {d}/server/key.pem --client-ca {d}/server/ca.pem --http")?;
    outln!()?;
    outln!("The inventory: {tw} cert list --ca-dir {d}/ca")?;
    if tw != "twoway" {
        outln!()?;
        outln!("(twoway is not on your PATH, so these commands name the binary itself; `cargo install --path crates/twoway` puts it there.)")?;
    }
    Ok(ExitCode::SUCCESS)
}
