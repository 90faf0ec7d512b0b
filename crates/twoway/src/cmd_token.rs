//! `twoway token create`: one-time enrollment tokens, locally or on a remote CA.

use crate::cmd_ca::{actor, open_ca};
use crate::output::print_json;
use crate::{usage, CaOpts};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a one-time enrollment token bound to names, a profile and an owner. The token is
    /// printed once (stdout); only its SHA-256 is stored.
    #[command(after_help = "\
Examples:
  twoway token create --san DNS:api.example.internal --profile server --ttl 15m --owner team-api
  twoway --ca https://ca.example.internal:9000 --cert admin/chain.pem --key admin/key.pem \\
      --ca-cert admin/ca.pem token create --san URI:spiffe://example.org/billing --profile client
Then on the workload:
  twoway agent --ca https://ca.example.internal:9000 --ca-fingerprint <root sha256> \\
      --token <token> --san DNS:api.example.internal --out /etc/twoway/api")]
    Create(CreateArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A name the enrolling CSR may ask for; repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    pub sans: Vec<String>,
    /// Profile of the certificate: server, client or peer.
    #[arg(long, default_value = "server")]
    pub profile: twoway_pki::Profile,
    /// How long the token can be used.
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// Validity of the certificate (default: [server] workload_ttl, 24h).
    #[arg(long)]
    pub cert_ttl: Option<String>,
    /// Owner recorded on the certificate.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: TokenCommand) -> Result<ExitCode> {
    let TokenCommand::Create(a) = cmd;
    if a.sans.is_empty() {
        return Err(usage(
            "no --san given: a token allows only the names it is bound to",
        ));
    }
    let sans = a
        .sans
        .iter()
        .map(|s| s.parse::<twoway_pki::San>())
        .collect::<Result<Vec<_>, _>>()?;
    let ttl = twoway_pki::parse_duration(&a.ttl).map_err(|e| usage(format!("--ttl: {e}")))?;
    let cert_ttl = a
        .cert_ttl
        .as_deref()
        .map(|t| twoway_pki::parse_duration(t).map_err(|e| usage(format!("--cert-ttl: {e}"))))
        .transpose()?;
    let ca = open_ca(&a.ca, false)?;
    let (secret, rec) = ca.create_token(&twoway_ca::NewToken {
        sans,
        profile: a.profile,
        ttl,
        cert_ttl,
        owner: a.owner.clone(),
        actor: actor(&a.ca),
    })?;
    print_token(
        &twoway_api::TokenResponse {
            token: secret,
            id: rec.hash[..16].to_string(),
            expires_at: rec
                .expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            sans: rec.sans,
            profile: rec.profile,
        },
        a.json,
    )
}

/// Prints a token: the secret alone on stdout (for scripts), the details on stderr.
pub fn print_token(t: &twoway_api::TokenResponse, json: bool) -> Result<ExitCode> {
    if json {
        print_json(&serde_json::json!({
            "token": t.token, "id": t.id, "expires_at": t.expires_at,
            "sans": t.sans, "profile": t.profile,
        }))?;
    } else {
        outln!("{}", t.token)?;
        // The details come from the CA (a remote one, maybe): escaped like any other text.
        let details = format!(
            "One-time {} token for {} (id {}), usable until {}. It is shown only now.",
            t.profile,
            t.sans.join(", "),
            t.id,
            t.expires_at
        );
        let _ = writeln!(std::io::stderr(), "{}", crate::output::printable(&details));
    }
    Ok(ExitCode::SUCCESS)
}
