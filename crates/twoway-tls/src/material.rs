//! Loading TLS material from PEM (or DER) bytes: credentials, trust bundles and CRLs.
//!
//! Everything here is sans-IO: the caller reads the files and passes their bytes plus a
//! name (`what`) used in error messages.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;

/// Parses every `CERTIFICATE` PEM block of `pem`; fails when there is none or one does not
/// parse as X.509.
pub fn parse_certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| Error::Pem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
        X509Certificate::from_der(&der).map_err(|e| Error::BadCertificate {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
        out.push(der);
    }
    if out.is_empty() {
        return Err(Error::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(out)
}

/// Parses the first private key (PKCS#8, SEC1 or PKCS#1) of `pem`.
pub fn parse_private_key(what: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::NoPrivateKey {
            what: what.to_owned(),
        },
        other => Error::Pem {
            what: what.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// Parses CRLs from PEM (`X509 CRL` blocks) or, when the input is not PEM, as one DER CRL.
/// Each CRL is checked to be well-formed. An empty input is an error.
pub fn parse_crls(
    what: &str,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let bad = |detail: String| Error::BadCrl {
        what: what.to_owned(),
        detail,
    };
    let trimmed = bytes.trim_ascii_start();
    let crls: Vec<CertificateRevocationListDer<'static>> = if trimmed.starts_with(b"-----BEGIN") {
        let mut v = Vec::new();
        for item in CertificateRevocationListDer::pem_slice_iter(bytes) {
            v.push(item.map_err(|e| bad(e.to_string()))?);
        }
        v
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    if crls.is_empty() {
        return Err(bad("no 'X509 CRL' PEM block found".into()));
    }
    for crl in &crls {
        let (rest, _) = x509_parser::parse_x509_crl(crl).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad("trailing data after the CRL".into()));
        }
    }
    Ok(crls)
}

/// A certificate chain and its private key, checked to belong together.
#[derive(Clone)]
pub struct Credentials {
    certified: Arc<CertifiedKey>,
    not_after: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("chain_len", &self.certified.cert.len())
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Builds credentials from a PEM chain (leaf first) and a PEM private key.
    pub fn from_pem(
        what: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
        provider: &CryptoProvider,
    ) -> Result<Self, Error> {
        let chain = parse_certificates(what, chain_pem)?;
        let key = parse_private_key(what, key_pem)?;
        Self::from_der(what, chain, key, provider)
    }

    /// Builds credentials from DER values (leaf first).
    pub fn from_der(
        what: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provider: &CryptoProvider,
    ) -> Result<Self, Error> {
        let Some(leaf) = chain.first() else {
            return Err(Error::NoCertificate {
                what: what.to_owned(),
            });
        };
        let (_, parsed) = X509Certificate::from_der(leaf).map_err(|e| Error::BadCertificate {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
        let not_after = parsed.validity().not_after.timestamp();
        let signing =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| Error::UnsupportedKey {
                    what: what.to_owned(),
                    detail: e.to_string(),
                })?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(Error::KeyMismatch {
                    what: what.to_owned(),
                })
            }
        }
        Ok(Self {
            certified: Arc::new(certified),
            not_after,
        })
    }

    /// The chain and key in the form rustls resolvers take.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // from_der refuses an empty chain
        &self.certified.cert[0]
    }

    /// The leaf's notAfter as seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
    }
}

/// A set of trust anchors (a CA bundle), kept both as rustls roots and as raw certificates
/// for issuer look-ups.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) roots: Arc<rustls::RootCertStore>,
}

impl TrustBundle {
    /// Parses a PEM bundle; fails when it holds no certificate or one rustls cannot use as a
    /// trust anchor.
    pub fn from_pem(what: &str, pem: &[u8]) -> Result<Self, Error> {
        Self::from_der(what, parse_certificates(what, pem)?)
    }

    /// Builds a bundle from DER certificates.
    pub fn from_der(what: &str, certs: Vec<CertificateDer<'static>>) -> Result<Self, Error> {
        if certs.is_empty() {
            return Err(Error::NoCertificate {
                what: what.to_owned(),
            });
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in &certs {
            roots.add(c.clone()).map_err(|e| Error::BadCertificate {
                what: what.to_owned(),
                detail: e.to_string(),
            })?;
        }
        Ok(Self {
            certs,
            roots: Arc::new(roots),
        })
    }

    /// The certificates of the bundle.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}
