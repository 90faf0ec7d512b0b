//! The server's TLS: its own certificate behind a hot-swappable resolver (renewed by the
//! server itself), and a client-certificate verifier that requests but does not require a
//! certificate.
//!
//! The verifier checks only the handshake signature (possession of the key). Whether the
//! certificate may authenticate is decided per request by `Ca::authenticate`, which looks up
//! the exact DER in the inventory and checks issuer, revocation and expiry: an expired or
//! revoked certificate so gets a JSON error saying so instead of a bare TLS alert.

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use std::sync::Arc;

/// The server's current certificate and key; swapped when the server renews itself.
#[derive(Debug)]
pub struct Identity {
    current: ArcSwap<CertifiedKey>,
}

impl Identity {
    /// Starts with a certificate.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Identity {
            current: ArcSwap::new(key),
        }
    }
    /// Replaces the certificate for every new handshake.
    pub fn swap(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }

    /// The SHA-256 fingerprint (hex) of the certificate in use.
    pub fn leaf_fingerprint(&self) -> Option<String> {
        self.current
            .load()
            .cert
            .first()
            .map(|c| twoway_pki::sha256_hex(c.as_ref()))
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Builds a rustls certified key from a PKCS#8 key and a chain (leaf first).
pub fn certified_key(
    provider: &CryptoProvider,
    chain: Vec<Vec<u8>>,
    pkcs8: Vec<u8>,
) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))?;
    Ok(Arc::new(CertifiedKey::new(
        chain.into_iter().map(CertificateDer::from).collect(),
        key,
    )))
}

/// Requests a client certificate, hinting the CA's root, and checks the handshake signature.
#[derive(Debug)]
pub struct OptionalClientCert {
    hints: Vec<DistinguishedName>,
    signatures: twoway_tls::ProviderSignatures,
}

impl OptionalClientCert {
    /// A verifier hinting the subjects `hint_subjects_der` (the CA's root, and the EST
    /// bootstrap CA's certificates).
    pub fn new(hint_subjects_der: Vec<Vec<u8>>, provider: Arc<CryptoProvider>) -> Self {
        OptionalClientCert {
            hints: hint_subjects_der
                .into_iter()
                .map(DistinguishedName::from)
                .collect(),
            signatures: twoway_tls::ProviderSignatures(provider),
        }
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Only refuse what cannot be a certificate at all; authorization happens per request.
        twoway_pki::CertInfo::from_der(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
    }
    twoway_tls::handshake_signatures!(delegate signatures);
}

/// The HTTPS server configuration: TLS 1.3 and 1.2, h2 and http/1.1.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    identity: Arc<Identity>,
    hint_subjects_der: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let verifier = Arc::new(OptionalClientCert::new(hint_subjects_der, provider.clone()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
