//! twoway-acme: the protocol core of twoway's ACME server (RFC 8555), without HTTP or
//! storage: JWS requests parsed and verified by the RFC's rules ([`Jws`]), account keys
//! as JWKs with their RFC 7638 thumbprints ([`Jwk`]), external account binding ([`eab`]),
//! account key rollover ([`keychange`]), and the problem types every refusal carries ([`Error::problem_type`]).
//!
//! It sits beside `twoway-api`: `twoway-server` serves the endpoints and keeps the state in
//! the store; this crate decides what a request says and whether it is authentic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod challenge;
pub mod eab;
pub mod jwk;
pub mod jws;
pub mod keychange;

pub use jwk::{Alg, Curve, Jwk};
pub use jws::{Jws, Signer};

/// Why an ACME request is refused; each maps to an RFC 8555 §6.7 problem type.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The request is not what the protocol allows (`malformed`).
    #[error("{0}")]
    Malformed(String),
    /// The nonce is missing, unknown, used or expired (`badNonce`).
    #[error("{0}")]
    BadNonce(String),
    /// The signature algorithm is not accepted or does not fit the key
    /// (`badSignatureAlgorithm`).
    #[error("{0}")]
    BadSignatureAlgorithm(String),
    /// The key is not an acceptable public key (`badPublicKey`).
    #[error("bad account key: {0}")]
    BadJwk(String),
    /// The signature does not verify (`unauthorized`).
    #[error("the JWS signature does not verify with the account key")]
    BadSignature,
    /// External account binding is wrong or missing (`unauthorized` /
    /// `externalAccountRequired`).
    #[error("{0}")]
    Eab(String),
}

impl Error {
    /// The problem document's `type`.
    pub fn problem_type(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "urn:ietf:params:acme:error:malformed",
            Error::BadNonce(_) => "urn:ietf:params:acme:error:badNonce",
            Error::BadSignatureAlgorithm(_) => "urn:ietf:params:acme:error:badSignatureAlgorithm",
            Error::BadJwk(_) => "urn:ietf:params:acme:error:badPublicKey",
            Error::BadSignature | Error::Eab(_) => "urn:ietf:params:acme:error:unauthorized",
        }
    }
}
