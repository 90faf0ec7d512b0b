//! `twoway cert inspect FILE` and `twoway cert inspect --remote host:port`.

use crate::cli::InspectArgs;
use crate::exit::{self, usage};
use crate::output::{self, print_json, printable};
use anyhow::{Context, Result};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use twoway_pki::CertInfo;

struct Remote {
    chain: Vec<Vec<u8>>,
    protocol: String,
    cipher: String,
}

fn fetch_remote(target: &str, sni: &str) -> Result<Remote> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(twoway_tls::UnauthenticatedServer::new(
            provider,
        )))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).map_err(|_| {
        usage(format!(
            "--server-name {sni:?} is not a DNS name or IP address"
        ))
    })?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let addr = target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target}: give host:port"))?
        .next()
        .ok_or_else(|| usage(format!("{target} resolves to no address")))?;
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("cannot connect to {target}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| format!("TLS handshake with {target} failed"))?;
    }
    let chain = conn
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.to_vec()).collect())
        .unwrap_or_default();
    Ok(Remote {
        chain,
        protocol: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
    })
}

fn trust_check(
    chain: &[Vec<u8>],
    ca: &PathBuf,
    sni: Option<&str>,
) -> Result<std::result::Result<(), String>> {
    let bytes = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in
        twoway_pki::parse_certificates(&bytes).with_context(|| format!("--ca {}", ca.display()))?
    {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| usage(format!("--ca {}: {e}", ca.display())))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots)).build()?;
    let Some((leaf, rest)) = chain.split_first() else {
        return Ok(Err("no certificate".into()));
    };
    let inter: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).map_err(|_| usage("bad server name"))?,
        None => {
            // No name to check: verify the path only, using the leaf's first DNS/IP SAN.
            let info = CertInfo::from_der(leaf)?;
            let first = info.sans.iter().find_map(|s| match s {
                twoway_pki::San::Dns(d) => Some(d.clone()),
                twoway_pki::San::Ip(ip) => Some(ip.to_string()),
                _ => None,
            });
            match first {
                Some(n) => ServerName::try_from(n).map_err(|_| usage("bad SAN"))?,
                None => return Ok(Err("the leaf has no DNS or IP name to check".into())),
            }
        }
    };
    Ok(verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.as_slice()),
            &inter,
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string()))
}

pub fn run(a: InspectArgs) -> Result<ExitCode> {
    let (chain, source, meta, sni) = match (&a.file, &a.remote) {
        (Some(f), _) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let chain = twoway_pki::parse_certificates(&bytes)
                .with_context(|| format!("{} holds no certificate", f.display()))?;
            (chain, f.display().to_string(), None, a.server_name.clone())
        }
        (None, Some(target)) => {
            let host = target.rsplit_once(':').map(|(h, _)| h).unwrap_or(target);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let sni = a.server_name.clone().unwrap_or_else(|| host.to_string());
            let r = fetch_remote(target, &sni)?;
            (
                r.chain,
                target.clone(),
                Some((r.protocol, r.cipher)),
                Some(sni),
            )
        }
        (None, None) => return Err(usage("give a FILE or --remote host:port")),
    };
    let infos: Vec<CertInfo> = chain
        .iter()
        .map(|d| CertInfo::from_der(d))
        .collect::<std::result::Result<_, _>>()?;
    let trust =
        a.ca.as_ref()
            .map(|ca| trust_check(&chain, ca, sni.as_deref()))
            .transpose()?;
    if a.json {
        print_json(&serde_json::json!({
            "source": source,
            "protocol": meta.as_ref().map(|m| &m.0),
            "cipher_suite": meta.as_ref().map(|m| &m.1),
            "chain": infos,
            "trusted": trust.as_ref().map(|t| t.is_ok()),
            "trust_error": trust.as_ref().and_then(|t| t.as_ref().err()),
        }))?;
    } else {
        let now = OffsetDateTime::now_utc();
        outln!("{}: {} certificate(s)", printable(&source), infos.len())?;
        if let Some((p, c)) = &meta {
            outln!("negotiated {p}, {c}")?;
        }
        for (i, info) in infos.iter().enumerate() {
            let role = if i == 0 {
                "leaf"
            } else if info.self_issued {
                "root"
            } else {
                "intermediate"
            };
            outln!()?;
            outln!("[{i}] {role}")?;
            outln!(
                "  subject      {}",
                if info.subject.is_empty() {
                    "(empty)".into()
                } else {
                    printable(&info.subject)
                }
            )?;
            outln!("  issuer       {}", printable(&info.issuer))?;
            outln!("  serial       {}", info.serial)?;
            if !info.sans.is_empty() {
                let names: Vec<String> = info.sans.iter().map(|s| s.to_string()).collect();
                outln!("  names        {}", printable(&names.join(", ")))?;
            }
            let usage_desc = if info.is_ca {
                "CA".to_string()
            } else {
                info.profile
                    .map(|p| {
                        format!(
                            "{p} ({})",
                            match p {
                                twoway_pki::Profile::Server => "serverAuth",
                                twoway_pki::Profile::Client => "clientAuth",
                                twoway_pki::Profile::Peer => "serverAuth, clientAuth",
                                twoway_pki::Profile::Device => "clientAuth",
                                twoway_pki::Profile::User => "clientAuth, emailProtection",
                            }
                        )
                    })
                    .unwrap_or_else(|| "no TLS EKU".into())
            };
            outln!("  usage        {usage_desc}")?;
            outln!(
                "  key          {}",
                info.key_type.map(|k| k.as_str()).unwrap_or("unknown")
            )?;
            outln!(
                "  valid        {} to {}",
                output::date(info.not_before),
                output::date(info.not_after)
            )?;
            let state = if info.not_before > now {
                "NOT YET VALID".to_string()
            } else {
                output::relative(info.not_after, now)
            };
            outln!("  expires      {state}")?;
            outln!("  sha256       {}", info.fingerprint)?;
        }
        if let Some(t) = &trust {
            outln!()?;
            match t {
                Ok(()) => outln!("trusted: yes (chain verifies to --ca)")?,
                Err(e) => outln!("trusted: NO ({})", printable(e))?,
            }
        }
    }
    Ok(match trust {
        Some(Err(_)) => ExitCode::from(exit::FAILURE),
        _ => ExitCode::SUCCESS,
    })
}
