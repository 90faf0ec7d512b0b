//! Certificate verifiers: webpki chain and CRL checks, then the identity rules.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{IssuerIndex, PeerIdentity};
use crate::material::TrustBundle;
use crate::rules::{Decision, Policy};
use crate::signatures::ProviderSignatures;
use crate::Error;

/// How peers of one side are verified: the CA bundle, the CRLs and the identity rules.
#[derive(Clone, Debug)]
pub struct PeerAuth {
    /// The trust anchors peer chains must lead to.
    pub trust: TrustBundle,
    /// CRLs consulted on every handshake (end-entity certificates only; a leaf whose issuer
    /// has no CRL here is accepted).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Identity rules applied after the chain verified; empty allows every verified peer.
    pub policy: Policy,
    /// What a CRL past its `nextUpdate` does to the certificates of its issuer.
    pub stale_crl: StaleCrl,
}

/// What a verifier does with a CRL whose `nextUpdate` has passed (it may miss revocations
/// made since): applies to the certificates of that CRL's issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleCrl {
    /// Refuse them once `nextUpdate` plus `grace` has passed (`ExpiredRevocationList`,
    /// reason `stale_crl`); before that, accept with a warning.
    Refuse {
        /// Time after `nextUpdate` during which the CRL is still used, with a warning.
        grace: std::time::Duration,
    },
    /// Accept them, with a warning in the log (at most once a minute per verifier).
    Warn,
}

impl Default for StaleCrl {
    /// Refuse one hour after `nextUpdate`.
    fn default() -> Self {
        StaleCrl::Refuse {
            grace: std::time::Duration::from_secs(3600),
        }
    }
}

/// The `nextUpdate` of a CRL (Unix seconds), if it has one and parses.
pub fn crl_next_update(crl: &CertificateRevocationListDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref()).ok()?;
    parsed.next_update().map(|t| t.timestamp())
}

/// The CRLs' issuers and `nextUpdate`s, checked on every handshake.
#[derive(Debug)]
struct StaleCheck {
    policy: StaleCrl,
    /// (issuer name DER, nextUpdate, position in the CRL list)
    windows: Vec<(Vec<u8>, i64, usize)>,
    /// When the last warning was logged (Unix seconds).
    warned: std::sync::atomic::AtomicI64,
}

impl StaleCheck {
    fn new(auth: &PeerAuth) -> Self {
        let windows = auth
            .crls
            .iter()
            .enumerate()
            .filter_map(|(i, der)| {
                let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).ok()?;
                let next = crl.next_update()?.timestamp();
                Some((crl.issuer().as_raw().to_vec(), next, i))
            })
            .collect();
        Self {
            policy: auth.stale_crl,
            windows,
            warned: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.windows.is_empty() {
            return Ok(());
        }
        let now = UnixTime::now().as_secs() as i64;
        if self.windows.iter().all(|w| w.1 >= now) {
            return Ok(());
        }
        let (_, leaf) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let issuer = leaf.issuer().as_raw();
        for (name, next, i) in &self.windows {
            if name.as_slice() != issuer || *next >= now {
                continue;
            }
            if let StaleCrl::Refuse { grace } = self.policy {
                if now > next.saturating_add(grace.as_secs() as i64) {
                    return Err(rustls::Error::InvalidCertificate(
                        CertificateError::ExpiredRevocationList,
                    ));
                }
            }
            let last = self.warned.load(std::sync::atomic::Ordering::Relaxed);
            if now.saturating_sub(last) >= 60 {
                self.warned.store(now, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    crl = i,
                    stale_for_secs = now - next,
                    "a CRL is past its nextUpdate and still used: publish a fresh one"
                );
            }
        }
        Ok(())
    }
}

impl PeerAuth {
    /// Trust `trust`, no CRL, no rule.
    pub fn new(trust: TrustBundle) -> Self {
        Self {
            trust,
            crls: Vec::new(),
            policy: Policy::allow_all(),
            stale_crl: StaleCrl::default(),
        }
    }
}

/// Evaluates `policy` for a verified leaf; shared by both verifiers.
#[derive(Debug)]
struct RuleCheck {
    policy: Policy,
    issuers: Option<IssuerIndex>,
}

impl RuleCheck {
    fn new(auth: &PeerAuth) -> Self {
        let issuers = auth
            .policy
            .needs_issuers()
            .then(|| IssuerIndex::new(auth.trust.certificates()));
        Self {
            policy: auth.policy.clone(),
            issuers,
        }
    }

    fn check(
        &self,
        side: &'static str,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if self.policy.is_empty() {
            return Ok(());
        }
        let mut id = PeerIdentity::from_leaf(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if let Some(index) = &self.issuers {
            id.issuer_sha256 = index.issuer_chain(end_entity, intermediates);
        }
        match self.policy.evaluate(&id) {
            Decision::Denied => {
                tracing::info!(
                    side,
                    peer = id.primary(),
                    subject = %id.subject,
                    decision = "deny",
                    "peer identity matched no rule"
                );
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            Decision::Allowed(rule) => {
                tracing::debug!(side, peer = id.primary(), rule, decision = "allow");
                Ok(())
            }
            Decision::AllowedWithoutRules => Ok(()),
        }
    }
}

fn verifier_error(e: impl std::fmt::Display) -> Error {
    Error::Verifier {
        detail: e.to_string(),
    }
}

/// Client-certificate verifier: webpki path building to the bundle, CRL check of the end
/// entity (unknown status allowed), then the rules. A denied identity fails the handshake
/// with an `access_denied` alert.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    rules: RuleCheck,
    stale: StaleCheck,
}

impl ClientVerifier {
    /// Builds the verifier. CRLs are fixed here: rebuild to pick up new ones.
    pub fn new(auth: &PeerAuth, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let inner = WebPkiClientVerifier::builder_with_provider(auth.trust.roots.clone(), provider)
            .with_crls(auth.crls.iter().cloned())
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
            .map_err(verifier_error)?;
        Ok(Self {
            inner,
            rules: RuleCheck::new(auth),
            stale: StaleCheck::new(auth),
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.stale.check(end_entity)?;
        self.rules.check("client", end_entity, intermediates)?;
        Ok(ok)
    }

    crate::handshake_signatures!(delegate inner);
}

/// Server-certificate verifier for the client side: webpki (chain, name, CRL of the end
/// entity) then the rules (`--expect-server`).
#[derive(Debug)]
pub struct ServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    rules: RuleCheck,
    stale: StaleCheck,
}

impl ServerVerifier {
    /// Builds the verifier. CRLs are fixed here: rebuild to pick up new ones.
    pub fn new(auth: &PeerAuth, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            auth.trust.roots.clone(),
            provider,
        )
        .with_crls(auth.crls.iter().cloned())
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(verifier_error)?;
        Ok(Self {
            inner,
            rules: RuleCheck::new(auth),
            stale: StaleCheck::new(auth),
        })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.stale.check(end_entity)?;
        self.rules.check("server", end_entity, intermediates)?;
        Ok(ok)
    }

    crate::handshake_signatures!(delegate inner);
}

/// Accepts any server certificate chain, while still checking the handshake signature
/// against the presented certificate. Only for connections whose payload is authenticated
/// another way (a CA root checked against its fingerprint) or merely shown to a person
/// (`cert inspect --remote`): never for anything secret.
#[derive(Debug)]
pub struct UnauthenticatedServer(ProviderSignatures);

impl UnauthenticatedServer {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        UnauthenticatedServer(ProviderSignatures(provider))
    }
}

impl ServerCertVerifier for UnauthenticatedServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    crate::handshake_signatures!(delegate 0);
}
