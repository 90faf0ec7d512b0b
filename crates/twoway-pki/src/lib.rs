//! twoway-pki: the sans-IO X.509 core of twoway.
//!
//! It sits at the bottom of the workspace: the CA, the store's callers, the proxy and the
//! CLI build on it, and it knows nothing of files, databases or networks. Entry types:
//! [`PrivateKey`] and [`KeyType`] (keys), [`San`] and [`NamePolicy`] (names and what may be
//! certified, inside a CA certificate's [`NameConstraints`]), [`CaSigner`] with
//! [`build_root`], [`build_intermediate`] and [`build_leaf`]
//! (certificates by [`Profile`]), [`verify_csr`] (CSRs), [`build_crl`] (CRLs), [`CertInfo`]
//! (reading any certificate back), [`ocsp`] (requests and signed responses), the
//! [`Signer`] trait behind which CA keys live, and [`subject_common_name`] (the one rule
//! for a leaf's subject: a CN only when it repeats one of its SANs), [`pkcs7`] (certs-only
//! messages, as EST and SCEP hand certificates out) and [`pkcs12`] (key, certificate and
//! chain in one passphrase-protected file).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cert;
mod constraints;
mod crl;
mod csr;
mod der;
mod duration;
mod error;
mod key;
pub mod ocsp;
pub mod pkcs12;
pub mod pkcs7;
mod policy;
mod profile;
mod san;
mod scep_ra;
mod signer;
mod subject;

pub use cert::{
    build_cross, build_intermediate, build_leaf, build_root, der_to_pem, intermediate_common_name,
    key_matches_cert, parse_certificates, random_serial, root_common_name, serial_hex, sha256_hex,
    spki_of_cert, subject_der_of_cert, subject_serial_of_cert, CaSigner, CertInfo, Issued,
    LeafSpec, Permits, RevocationUrls,
};
pub use constraints::NameConstraints;
pub use crl::{build_crl, build_crl_as, complete_crl_info, CrlKind, Reason, RevokedEntry};
pub use csr::{create_csr, csr_body_der, csr_der, verify_csr, verify_signature, VerifiedCsr};
pub use der::{der_tlv, der_uint};
pub use duration::{format_duration, parse_duration};
pub use error::{Error, Result};
pub use key::{key_type_of_spki, KeyType, PrivateKey};
pub use ocsp::build_ocsp_signer;
pub use pkcs12::{build_pkcs12, Pkcs12Encryption};
pub use policy::NamePolicy;
pub use profile::{check_subject_serial, Profile, MAX_SUBJECT_SERIAL};
pub use san::{validate_spiffe, San};
pub use scep_ra::build_scep_ra;
pub use signer::Signer;
pub use subject::{subject_common_name, MAX_COMMON_NAME};

pub use time;
