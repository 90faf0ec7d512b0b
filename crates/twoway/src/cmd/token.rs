//! `twoway token create`: one-time enrollment tokens, locally or on a remote CA.

use crate::cli::{CreateArgs, TokenCommand};
use crate::context::{actor, duration_arg, open_ca, runtime};
use crate::exit::usage;
use crate::output::{self, print_json};
use crate::remote::{self, RemoteOpts};
use anyhow::Result;
use std::io::Write;
use std::process::ExitCode;

/// `token create`, on the remote CA with `--ca URL`, else on the local one.
pub fn run(cmd: TokenCommand, r: &RemoteOpts) -> Result<ExitCode> {
    let TokenCommand::Create(a) = cmd;
    if r.url.is_some() {
        create_remote(a, r)
    } else {
        create_local(a)
    }
}

/// `token create` on the local CA.
fn create_local(a: CreateArgs) -> Result<ExitCode> {
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
    let ttl = duration_arg("--ttl", &a.ttl)?;
    let cert_ttl = a
        .cert_ttl
        .as_deref()
        .map(|t| duration_arg("--cert-ttl", t))
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

/// `token create` against the remote CA.
fn create_remote(a: CreateArgs, r: &RemoteOpts) -> Result<ExitCode> {
    if a.sans.is_empty() {
        return Err(usage(
            "no --san given: a token allows only the names it is bound to",
        ));
    }
    let c = remote::client(r)?;
    let resp = runtime()?.block_on(c.create_token(&twoway_api::TokenRequest {
        sans: a.sans.clone(),
        profile: a.profile.as_str().into(),
        ttl: a.ttl.clone(),
        cert_ttl: a.cert_ttl.clone(),
        owner: a.owner.clone(),
    }))?;
    print_token(&resp, a.json)
}

/// Prints a token: the secret alone on stdout (for scripts), the details on stderr.
fn print_token(t: &twoway_api::TokenResponse, json: bool) -> Result<ExitCode> {
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
        let _ = writeln!(std::io::stderr(), "{}", output::printable(&details));
    }
    Ok(ExitCode::SUCCESS)
}
