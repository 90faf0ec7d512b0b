//! `twoway quickstart DIR`: a CA, a server and a client certificate, and the commands that
//! show mutual TLS working.

use crate::cli::QuickstartArgs;
use crate::context::{actor, open_ca, CaOpts};
use crate::exit::usage;
use crate::output;
use anyhow::Result;
use std::process::ExitCode;
use twoway_ca::InitOptions;
use twoway_pki::KeyType;

pub fn run(a: QuickstartArgs) -> Result<ExitCode> {
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
            intermediate_in_hsm: None,
            root_in_hsm: None,
        },
    )?;
    let ca = open_ca(&opts, true)?;
    let server = crate::issue::issue_to_dir(
        &ca,
        crate::issue::IssueParams {
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
    let client = crate::issue::issue_to_dir(
        &ca,
        crate::issue::IssueParams {
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
