//! The `Signer` trait: where a CA key lives (a PKCS#8 file today, an HSM tomorrow) is hidden
//! behind it, and certificates and CRLs are built against it.

use crate::{KeyType, PrivateKey, Result};
use std::sync::Arc;

/// A private key that can sign, wherever it is kept.
pub trait Signer: Send + Sync {
    /// The key's algorithm.
    fn key_type(&self) -> KeyType;
    /// The DER SubjectPublicKeyInfo of the key.
    fn public_key_der(&self) -> Vec<u8>;
    /// Signs `msg` with the key's signature algorithm (ECDSA/RSA over SHA-2, or Ed25519).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>>;
}

impl Signer for PrivateKey {
    fn key_type(&self) -> KeyType {
        PrivateKey::key_type(self)
    }
    fn public_key_der(&self) -> Vec<u8> {
        PrivateKey::public_key_der(self)
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        Ok(rcgen::SigningKey::sign(self.key_pair(), msg)?)
    }
}

/// Adapts any `Signer` to rcgen's signing hook.
pub(crate) struct RcgenKey {
    signer: Arc<dyn Signer>,
    raw_public: Vec<u8>,
}

impl RcgenKey {
    pub(crate) fn new(signer: Arc<dyn Signer>) -> Result<Self> {
        let spki = signer.public_key_der();
        let raw_public = raw_public_key(&spki)?;
        Ok(RcgenKey { signer, raw_public })
    }
}

pub(crate) fn raw_public_key(spki_der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|_| crate::Error::UnsupportedKey("the public key"))?;
    Ok(spki.subject_public_key.data.to_vec())
}

impl rcgen::PublicKeyData for RcgenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.signer.key_type().signature_algorithm()
    }
}

impl rcgen::SigningKey for RcgenKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.signer
            .sign(msg)
            // a key kept elsewhere (a token) that could not sign: told apart from a bad
            // certificate, so that the CA answers 503 rather than blaming the request
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}
