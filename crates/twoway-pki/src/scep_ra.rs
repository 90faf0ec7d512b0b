//! The SCEP registration authority's certificate: the CA's online server decrypts SCEP
//! requests and signs its answers with a key of its own (RSA: SCEP key transport is RSA
//! PKCS#1 v1.5), never with the intermediate's, which may live in an HSM that refuses
//! that decryption.

use crate::{CaSigner, Issued, Result};
use time::OffsetDateTime;

/// Issues the SCEP RA certificate under `ca`: `CN=<org> SCEP RA`, keyUsage
/// digitalSignature and keyEncipherment (clients pick the certificate to encrypt to by the
/// latter), no extended key usage, not a CA.
pub fn build_scep_ra(
    ca: &CaSigner,
    subject_key_spki: &[u8],
    org: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose, SerialNumber,
    };
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, format!("{org} SCEP RA"));
    p.distinguished_name = dn;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(SerialNumber::from_slice(&crate::random_serial()?));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.use_authority_key_identifier_extension = true;
    let pk = rcgen::SubjectPublicKeyInfo::from_der(subject_key_spki)?;
    let der = p.signed_by(&pk, ca.issuer())?.der().to_vec();
    let info = crate::CertInfo::from_der(&der)?;
    Ok(Issued { der, info })
}
