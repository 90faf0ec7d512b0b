//! twoway-scep: the SCEP (RFC 8894) message layer of the online CA, sans-IO.
//!
//! It reads a client's `pkiMessage` (a CMS SignedData whose content is an EnvelopedData
//! encrypted to the CA's registration authority), checks the signature with the signer
//! certificate the message carries, decrypts the envelope with the RA key, and builds the
//! `CertRep` answers (SUCCESS with the certificates encrypted back to the requester,
//! FAILURE with a failInfo, PENDING) and the degenerate certs-only PKCS#7 of GetCACert.
//! It knows nothing of HTTP, the inventory or tokens: `twoway-server` decides what a
//! request gets, `twoway-ca` issues. Entry types: [`Ra`] (the RA key and certificate),
//! [`read`] → [`Unverified`] → [`Unverified::open`] → [`Request`], [`cert_rep`] and
//! [`certs_only`]. CMS is encoded and read by hand (a bounded DER reader, definite lengths
//! only); RSA, AES and the digests are aws-lc-rs; DES and 3DES (RustCrypto) only serve
//! clients a setting lets in ([`Policy::allow_legacy`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod der;
mod message;
mod oids;

pub use message::{
    cert_rep, certs_of, certs_only, client_request, csr_info, read, Cipher, CsrInfo, Digest,
    FailInfo, Header, MessageType, Policy, Ra, Refusal, Reply, Request, Unverified,
};

/// Why a message could not be read or an answer not built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not the DER structure expected (named).
    #[error("malformed SCEP message: {0}")]
    Malformed(String),
    /// A key or certificate of the RA could not be used.
    #[error("the SCEP RA key or certificate cannot be used: {0}")]
    Ra(String),
    /// A cryptographic operation failed while building an answer.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}
