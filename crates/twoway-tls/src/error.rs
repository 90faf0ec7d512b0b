//! The one error type of this crate.

/// Everything that can go wrong while loading TLS material or building a configuration.
///
/// Each message names the input (`what`, usually a file path given by the caller) and, where
/// there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate input (chain or CA bundle) held no certificate at all.
    #[error("{what}: no certificate found; expected one or more PEM blocks '-----BEGIN CERTIFICATE-----'")]
    NoCertificate {
        /// The input that was read.
        what: String,
    },
    /// A key input held no private key.
    #[error("{what}: no private key found; expected a PEM block 'PRIVATE KEY', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY'")]
    NoPrivateKey {
        /// The input that was read.
        what: String,
    },
    /// A PEM input could not be decoded.
    #[error("{what}: malformed PEM: {detail}")]
    Pem {
        /// The input that was read.
        what: String,
        /// What the decoder said.
        detail: String,
    },
    /// A certificate could not be parsed as X.509.
    #[error("{what}: not a valid X.509 certificate: {detail}")]
    BadCertificate {
        /// The input that was read.
        what: String,
        /// What the parser said.
        detail: String,
    },
    /// The private key is not the one the leaf certificate was issued for.
    #[error("{what}: the private key does not match the certificate; use the key the certificate was issued for")]
    KeyMismatch {
        /// The certificate/key pair.
        what: String,
    },
    /// The private key type is not usable with the crypto provider.
    #[error(
        "{what}: unsupported private key: {detail}; use an ECDSA (P-256/P-384), Ed25519 or RSA key"
    )]
    UnsupportedKey {
        /// The input that was read.
        what: String,
        /// What the provider said.
        detail: String,
    },
    /// A certificate revocation list could not be parsed.
    #[error("{what}: not a valid CRL (PEM 'X509 CRL' or DER): {detail}")]
    BadCrl {
        /// The input that was read.
        what: String,
        /// What the parser said.
        detail: String,
    },
    /// An authorization rule was not understood.
    #[error("invalid rule {rule:?}: {detail}; expected one of spiffe://…, uri:GLOB, dns:GLOB, ip:GLOB, cn:GLOB, ou:GLOB, issuer:SHA256HEX")]
    BadRule {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The certificate verifier could not be built from the trust anchors and CRLs.
    #[error("cannot build the certificate verifier: {detail}")]
    Verifier {
        /// What rustls said.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}
