//! Private keys: generation, PKCS#8 PEM (optionally passphrase-encrypted), key types.

use crate::{Error, Result};
use pkcs8::der::Decode;
use rcgen::{KeyPair, PublicKeyData, RsaKeySize, SignatureAlgorithm};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The key algorithms twoway issues and signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256 (the default: small and fast).
    P256,
    /// ECDSA on NIST P-384 with SHA-384.
    P384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with SHA-256.
    Rsa2048,
    /// RSA 3072 with SHA-256.
    Rsa3072,
    /// RSA 4096 with SHA-256.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order `--help` lists them.
    pub const ALL: [KeyType; 6] = [
        KeyType::P256,
        KeyType::P384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The name used on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
        }
    }

    /// The signature algorithm a key of this type signs with.
    pub fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// True for RSA key types.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnknownKeyType(s.to_string()))
    }
}

/// A private key. `Debug` never prints key material.
pub struct PrivateKey {
    pair: KeyPair,
    key_type: KeyType,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_type", &self.key_type)
            .field("material", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    /// Generates a fresh key of the given type from the system CSPRNG.
    pub fn generate(key_type: KeyType) -> Result<Self> {
        let gen_err = |e: rcgen::Error| Error::KeyGeneration(key_type.as_str(), e.to_string());
        let pair = match key_type {
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyType::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
            other => KeyPair::generate_for(other.signature_algorithm()),
        }
        .map_err(gen_err)?;
        Ok(PrivateKey { pair, key_type })
    }

    /// Reads a PKCS#8 PEM key (`PRIVATE KEY` or `ENCRYPTED PRIVATE KEY`), as well as SEC1
    /// (`EC PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE KEY`) keys written by other tools.
    pub fn from_pem(pem_text: &str, passphrase: Option<&[u8]>) -> Result<Self> {
        let block = pem::parse_many(pem_text)
            .map_err(|e| Error::BadKey(e.to_string()))?
            .into_iter()
            .find(|p| p.tag().ends_with("PRIVATE KEY"))
            .ok_or(Error::NoPemBlock("PRIVATE KEY"))?;
        if block.tag() == "ENCRYPTED PRIVATE KEY" {
            let pass = passphrase.ok_or(Error::PassphraseRequired)?;
            let info = pkcs8::EncryptedPrivateKeyInfo::from_der(block.contents())
                .map_err(|e| Error::BadKey(e.to_string()))?;
            let doc = info.decrypt(pass).map_err(|_| Error::WrongPassphrase)?;
            return Self::from_der(doc.as_bytes());
        }
        Self::from_der(block.contents())
    }

    /// Reads an unencrypted DER private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let pair = KeyPair::try_from(der).map_err(|e| Error::BadKey(e.to_string()))?;
        let key_type = key_type_of(&pair)?;
        // RSA keys from try_from may pick PSS; always sign with PKCS#1 v1.5 SHA-256 for certs.
        let pair = if key_type.is_rsa() {
            let der = rustls_pki_types::PrivateKeyDer::try_from(der)
                .map_err(|e| Error::BadKey(e.to_string()))?;
            KeyPair::from_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
                .map_err(|e| Error::BadKey(e.to_string()))?
        } else {
            pair
        };
        Ok(PrivateKey { pair, key_type })
    }

    /// This key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The rcgen key pair, for signing.
    pub fn key_pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// The key as PKCS#8 PEM; encrypted with PBES2 (PBKDF2-SHA256, AES-256-CBC) when a
    /// passphrase is given, in a form `openssl pkey` reads.
    pub fn to_pem(&self, passphrase: Option<&[u8]>) -> Result<Zeroizing<String>> {
        let der = Zeroizing::new(self.pair.serialize_der());
        match passphrase {
            None => Ok(Zeroizing::new(pem::encode(&pem::Pem::new(
                "PRIVATE KEY",
                der.to_vec(),
            )))),
            Some(pass) => {
                let info = pkcs8::PrivateKeyInfo::from_der(&der)
                    .map_err(|e| Error::BadKey(e.to_string()))?;
                let mut salt = [0u8; 16];
                let mut iv = [0u8; 16];
                aws_lc_rs::rand::fill(&mut salt)
                    .and_then(|_| aws_lc_rs::rand::fill(&mut iv))
                    .map_err(|_| Error::BadKey("the system random generator failed".into()))?;
                let params =
                    pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(310_000, &salt, &iv)
                        .map_err(|e| Error::BadKey(e.to_string()))?;
                let doc = info
                    .encrypt_with_params(params, pass)
                    .map_err(|e| Error::BadKey(e.to_string()))?;
                Ok(Zeroizing::new(pem::encode(&pem::Pem::new(
                    "ENCRYPTED PRIVATE KEY",
                    doc.as_bytes().to_vec(),
                ))))
            }
        }
    }
}

fn key_type_of(pair: &KeyPair) -> Result<KeyType> {
    let alg = pair.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Ok(KeyType::P256);
    }
    if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        return Ok(KeyType::P384);
    }
    if alg == &rcgen::PKCS_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    if pair.is_compatible(&rcgen::PKCS_RSA_SHA256) {
        return rsa_key_type(&pair.subject_public_key_info());
    }
    Err(Error::UnsupportedKey("the private key"))
}

/// Determines the key type of a DER SubjectPublicKeyInfo.
pub fn key_type_of_spki(spki_der: &[u8]) -> Result<KeyType> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|_| Error::UnsupportedKey("the public key"))?;
    key_type_of_parsed_spki(&spki, spki_der)
}

pub(crate) fn key_type_of_parsed_spki(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    spki_der: &[u8],
) -> Result<KeyType> {
    use x509_parser::oid_registry as oids;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == oids::OID_EC_P256 => Ok(KeyType::P256),
            Some(c) if c == oids::OID_NIST_EC_P384 => Ok(KeyType::P384),
            _ => Err(Error::UnsupportedKey("the public key (EC curve)")),
        };
    }
    if *alg == oids::OID_SIG_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    if *alg == oids::OID_PKCS1_RSAENCRYPTION {
        return rsa_key_type(spki_der);
    }
    Err(Error::UnsupportedKey("the public key"))
}

fn rsa_key_type(spki_der: &[u8]) -> Result<KeyType> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|_| Error::UnsupportedKey("the RSA key"))?;
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => match rsa.key_size() {
            2048 => Ok(KeyType::Rsa2048),
            3072 => Ok(KeyType::Rsa3072),
            4096 => Ok(KeyType::Rsa4096),
            _ => Err(Error::UnsupportedKey("the RSA key (size)")),
        },
        _ => Err(Error::UnsupportedKey("the RSA key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_plain_and_encrypted() {
        for kt in [KeyType::P256, KeyType::P384, KeyType::Ed25519] {
            let k = PrivateKey::generate(kt).unwrap();
            let pem = k.to_pem(None).unwrap();
            let back = PrivateKey::from_pem(&pem, None).unwrap();
            assert_eq!(back.key_type(), kt);
            assert_eq!(back.public_key_der(), k.public_key_der());
            let enc = k.to_pem(Some(b"s3cret")).unwrap();
            assert!(enc.contains("ENCRYPTED PRIVATE KEY"));
            assert!(matches!(
                PrivateKey::from_pem(&enc, None),
                Err(Error::PassphraseRequired)
            ));
            assert!(matches!(
                PrivateKey::from_pem(&enc, Some(b"wrong")),
                Err(Error::WrongPassphrase)
            ));
            let back = PrivateKey::from_pem(&enc, Some(b"s3cret")).unwrap();
            assert_eq!(back.public_key_der(), k.public_key_der());
        }
    }

    #[test]
    fn rsa_key_type_detected() {
        let k = PrivateKey::generate(KeyType::Rsa2048).unwrap();
        assert_eq!(k.key_type(), KeyType::Rsa2048);
        let back = PrivateKey::from_pem(&k.to_pem(None).unwrap(), None).unwrap();
        assert_eq!(back.key_type(), KeyType::Rsa2048);
        assert_eq!(
            key_type_of_spki(&k.public_key_der()).unwrap(),
            KeyType::Rsa2048
        );
    }

    #[test]
    fn debug_redacts() {
        let k = PrivateKey::generate(KeyType::P256).unwrap();
        assert!(format!("{k:?}").contains("redacted"));
    }
}
