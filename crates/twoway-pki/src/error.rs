//! The one error type of the PKI core.

/// Everything that can go wrong in key, CSR, certificate, CRL and policy handling.
///
/// Messages name the problem and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key kept elsewhere (a PKCS#11 token) could not sign; the token may be gone.
    #[error("the CA key could not sign: {0}")]
    Signer(String),
    /// A key type name that twoway does not know.
    #[error("unknown key type {0:?}: use one of p256, p384, ed25519, rsa2048, rsa3072, rsa4096")]
    UnknownKeyType(String),
    /// Key generation failed in the crypto library.
    #[error("could not generate a {0} key: {1}")]
    KeyGeneration(&'static str, String),
    /// A private key could not be read.
    #[error("could not read the private key: {0}")]
    BadKey(String),
    /// The key is encrypted and no passphrase was given.
    #[error("the private key is encrypted: give its passphrase with --passphrase-file FILE (or TWOWAY_PASSPHRASE_FILE)")]
    PassphraseRequired,
    /// The passphrase did not decrypt the key.
    #[error("wrong passphrase: the private key could not be decrypted with the passphrase given")]
    WrongPassphrase,
    /// A subject alternative name that could not be parsed.
    #[error("invalid SAN {0:?}: {1}")]
    BadSan(String, String),
    /// A duration like `90d` that could not be parsed.
    #[error("invalid duration {0:?}: use a number and a unit, e.g. 15m, 24h, 90d, 10y")]
    BadDuration(String),
    /// A name the CA's policy does not allow.
    #[error("{san} is not allowed by the CA's name policy ({reason}); allowed: {allowed}. Ask for a name inside the policy, or widen [policy] in ca.toml (as far as the intermediate's name constraints, which `twoway ca show` lists)")]
    PolicyViolation {
        /// The offending SAN, as `DNS:name`.
        san: String,
        /// Why it did not match.
        reason: String,
        /// The rules of that SAN type.
        allowed: String,
    },
    /// A name outside the name constraints of the issuing CA certificate.
    #[error("{name} is outside the name constraints of the issuing CA certificate (permitted: {permitted}): every verifier would reject the certificate. Ask for a name inside them; other names need a new intermediate certificate with wider constraints, and twoway cannot re-issue the intermediate yet, so that means a new CA (`twoway ca init --permit-dns …`)")]
    NameConstraintViolation {
        /// The offending name, as `DNS:name`, or the common name.
        name: String,
        /// The permitted subtrees, for people.
        permitted: String,
    },
    /// A profile name that twoway does not know.
    #[error("unknown profile {0:?}: use server, client, peer, device or user")]
    UnknownProfile(String),
    /// A request that the profile cannot certify as asked (the message names the fix).
    #[error("{0}")]
    ProfileNeeds(&'static str),
    /// A subject common name that is none of the certificate's SANs.
    #[error("the subject CN {cn:?} is not one of the certificate's SANs ({sans}): the CA certifies only names it validated, so leave the CN out (the SANs carry the identity) or make it one of the SANs")]
    CommonNameNotASan {
        /// The CN asked for.
        cn: String,
        /// The certificate's SANs.
        sans: String,
    },
    /// A subject common name longer than X.509 allows.
    #[error("the subject CN {0:?} is longer than the 64 characters X.509 allows: leave the CN out (the SAN carries the name)")]
    CommonNameTooLong(String),
    /// A request without any SAN.
    #[error("no subject alternative name given: add at least one --san (e.g. --san DNS:api.example.internal)")]
    NoSan,
    /// A requested validity beyond what the issuer allows.
    #[error("requested validity ends {requested}, after the issuing CA certificate expires ({issuer_not_after}): use a shorter --ttl")]
    TtlBeyondIssuer {
        /// The requested notAfter.
        requested: String,
        /// The issuer's notAfter.
        issuer_not_after: String,
    },
    /// A TTL that is zero, negative, or above the profile's maximum.
    #[error("invalid TTL: {0}")]
    BadTtl(String),
    /// A CSR that could not be parsed.
    #[error("the CSR is malformed: {0}. Create one with `twoway cert csr` or `openssl req -new`")]
    MalformedCsr(String),
    /// A CSR whose signature does not verify.
    #[error("the CSR's signature does not verify: it was altered after signing or signed with another key; create a new CSR")]
    CsrSignature,
    /// A key or signature algorithm twoway does not support.
    #[error("unsupported public key algorithm in {0}: twoway accepts ECDSA P-256/P-384, Ed25519 and RSA 2048-4096")]
    UnsupportedKey(&'static str),
    /// A PEM file without the expected block.
    #[error("no {0} found in the PEM input: check the file is a PEM {0} (-----BEGIN {0}-----)")]
    NoPemBlock(&'static str),
    /// A certificate that could not be parsed.
    #[error("could not parse the certificate: {0}")]
    BadCertificate(String),
    /// A CRL that could not be parsed.
    #[error("could not parse the CRL: {0}")]
    BadCrl(String),
    /// An OCSP request that could not be parsed.
    #[error("malformed OCSP request: {0}")]
    BadOcsp(String),
    /// A signature that does not verify with the given public key.
    #[error("the signature does not verify with the certificate's public key")]
    BadSignature,
    /// A revocation reason name twoway does not know.
    #[error("unknown revocation reason {0:?}: use one of unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation, certificate-hold, privilege-withdrawn")]
    UnknownReason(String),
    /// An invalid name policy or name-constraint entry.
    #[error("invalid policy entry {0:?}: {1}")]
    BadPolicy(String, String),
    /// The certificate library refused to build or sign.
    #[error("certificate generation failed: {0}")]
    Generation(String),
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        match e {
            rcgen::Error::RemoteKeyError => Error::Signer(
                "the CA key's token did not sign (absent, or not answering): the CA's log says why"
                    .into(),
            ),
            e => Error::Generation(e.to_string()),
        }
    }
}

/// Result with the PKI error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
