//! The three handshake-signature methods every rustls verifier must carry, written once.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Checks handshake signatures against the presented certificate with a provider's
/// algorithms: possession of the key, nothing about the chain.
#[derive(Debug, Clone)]
pub struct ProviderSignatures(pub Arc<CryptoProvider>);

impl ProviderSignatures {
    /// The TLS 1.2 handshake signature.
    pub fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(rustls::crypto::verify_tls12_signature, message, cert, dss)
    }

    /// The TLS 1.3 handshake signature.
    pub fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(rustls::crypto::verify_tls13_signature, message, cert, dss)
    }

    /// The schemes the provider verifies.
    pub fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }

    fn verify(
        &self,
        check: Check,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
}

/// rustls's signature check for one TLS version.
type Check = fn(
    &[u8],
    &CertificateDer<'_>,
    &DigitallySignedStruct,
    &rustls::crypto::WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error>;

/// Expands to `verify_tls12_signature`, `verify_tls13_signature` and
/// `supported_verify_schemes` inside an `impl ServerCertVerifier` or
/// `impl ClientCertVerifier` block:
///
/// `handshake_signatures!(delegate inner);` forwards all three to `self.inner`: a rustls
/// verifier, or a [`ProviderSignatures`] that checks the signature against the presented
/// certificate with a provider's algorithms.
///
/// The caller's scope needs `CertificateDer`, `DigitallySignedStruct`,
/// `HandshakeSignatureValid` and `SignatureScheme` from rustls.
#[macro_export]
macro_rules! handshake_signatures {
    (delegate $field:tt) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.$field.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.$field.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$field.supported_verify_schemes()
        }
    };
}
