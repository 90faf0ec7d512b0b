//! rustls `ServerConfig` / `ClientConfig` builders with the house defaults.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme, SupportedProtocolVersion};

use crate::material::Credentials;
use crate::verifier::{ClientVerifier, PeerAuth, ServerVerifier};
use crate::Error;

/// The crypto provider twoway uses: aws-lc-rs, its default cipher suites, and the key
/// exchange groups X25519MLKEM768 (hybrid post-quantum, preferred), X25519 and P-256.
pub fn provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    CryptoProvider {
        kx_groups: vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// Protocol and session choices shared by both sides.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Also allow TLS 1.2 (TLS 1.3 only when false).
    pub tls12: bool,
    /// ALPN protocols to offer/accept, most preferred first.
    pub alpn: Vec<Vec<u8>>,
    /// Allow session resumption (stateful cache on the server, tickets off). Off by default:
    /// every connection does a full handshake, so every connection's client certificate is
    /// checked against the current CA bundle, CRLs and rules.
    pub resumption: bool,
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS13_AND_12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(opts: &TlsOptions) -> &'static [&'static SupportedProtocolVersion] {
    if opts.tls12 {
        TLS13_AND_12
    } else {
        TLS13_ONLY
    }
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Builds a server configuration that requires and verifies client certificates.
pub fn server_config(
    creds: &Credentials,
    clients: &PeerAuth,
    opts: &TlsOptions,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(provider());
    let verifier = Arc::new(ClientVerifier::new(clients, provider.clone())?);
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(opts))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(FixedCert(creds.certified_key())));
    cfg.alpn_protocols = opts.alpn.clone();
    cfg.send_tls13_tickets = 0;
    if opts.resumption {
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    } else {
        cfg.session_storage = Arc::new(NoServerSessionStorage {});
    }
    Ok(Arc::new(cfg))
}

/// Builds a client configuration that presents `creds` and verifies the server against
/// `servers` (chain, name, CRLs, rules).
pub fn client_config(
    creds: &Credentials,
    servers: &PeerAuth,
    opts: &TlsOptions,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(provider());
    let verifier = Arc::new(ServerVerifier::new(servers, provider.clone())?);
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(opts))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(FixedCert(creds.certified_key())));
    cfg.alpn_protocols = opts.alpn.clone();
    if !opts.resumption {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(cfg))
}
