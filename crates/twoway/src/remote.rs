//! The CLI against a remote CA (`twoway --ca https://… cert sign|list|revoke`, `token
//! create`): where it is, how to authenticate to it (an admin client certificate), and its
//! client. The commands themselves live in `cmd/`.

use crate::exit::usage;
use anyhow::{Context, Result};
use std::path::PathBuf;

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

/// A client of the remote CA, authenticated by the admin certificate when one is given.
pub fn client(r: &RemoteOpts) -> Result<twoway_agent::CaClient> {
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

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
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
