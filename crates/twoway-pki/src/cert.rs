//! Building certificates (root, intermediate, leaf) and reading them back.

use crate::signer::{raw_public_key, RcgenKey};
use crate::{Error, KeyType, Profile, Result, San, Signer};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, CustomExtension, DistinguishedName, DnType,
    GeneralSubtree, IsCa, Issuer, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

/// A CA certificate with the key that signs under it.
pub struct CaSigner {
    cert_der: Vec<u8>,
    info: CertInfo,
    constraints: Option<crate::NameConstraints>,
    issuer: Issuer<'static, RcgenKey>,
    signer: Arc<dyn Signer>,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner")
            .field("subject", &self.info.subject)
            .finish_non_exhaustive()
    }
}

impl CaSigner {
    /// Pairs a CA certificate (DER) with its key; fails if the key does not match.
    pub fn new(cert_der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self> {
        let info = CertInfo::from_der(&cert_der)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        if x509.public_key().raw != signer.public_key_der().as_slice() {
            return Err(Error::BadKey(
                "the CA key does not match the CA certificate's public key".into(),
            ));
        }
        let constraints = crate::NameConstraints::from_cert_der(&cert_der)?;
        let key = RcgenKey::new(signer.clone())?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)?;
        Ok(CaSigner {
            cert_der,
            info,
            constraints,
            issuer,
            signer,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.cert_der)
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The CA certificate's name constraints, if it has any.
    pub fn name_constraints(&self) -> Option<&crate::NameConstraints> {
        self.constraints.as_ref()
    }

    /// Signs `msg` with the CA key (what [`crate::verify_signature`] checks against the CA
    /// certificate's key): for records the CA vouches for outside X.509, such as audit
    /// checkpoints.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        self.signer.sign(msg)
    }

    /// The CA key, to sign with directly (an OCSP answer by the CA itself).
    pub fn key(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, RcgenKey> {
        &self.issuer
    }
}

/// Extensions pointing at where revocation status is published.
#[derive(Clone, Debug, Default)]
pub struct RevocationUrls {
    /// The CRL distribution point URL.
    pub crl: Option<String>,
    /// The OCSP responder URL (Authority Information Access).
    pub ocsp: Option<String>,
}

/// What goes into a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// The profile (EKUs).
    pub profile: Profile,
    /// Subject alternative names; at least one.
    pub sans: Vec<San>,
    /// An optional subject common name.
    pub common_name: Option<String>,
    /// The device's serial number for the subject's `serialNumber` attribute (profile
    /// `device` only; [`crate::check_subject_serial`]).
    pub subject_serial: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// CRL and OCSP locations.
    pub urls: RevocationUrls,
}

/// A freshly signed certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// What it says.
    pub info: CertInfo,
}

impl Issued {
    /// The certificate, PEM.
    pub fn pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.der)
    }
}

/// A fresh serial: 16 bytes, positive, no leading zero byte. The first 6 bytes are the
/// milliseconds since the Unix epoch (the first byte is 0x01 until 2039, and stays below
/// 0x80 for millennia), the other 10 come from the CSPRNG: 80 bits of entropy, above the 64 that
/// RFC 5280 practice (and the CA/Browser Forum) asks for. Serials issued later sort later,
/// so the inventory's serial indexes grow at their right edge instead of taking a random
/// page per certificate.
pub fn random_serial() -> Result<Vec<u8>> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b[6..])
        .map_err(|_| Error::Generation("the system random generator failed".into()))?;
    let ms = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0)
        .clamp(1 << 40, (1 << 47) - 1);
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Ok(b.to_vec())
}

fn org_name(name: &str, cn: String) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, name);
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(
    dn: DistinguishedName,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    path_len: Option<u8>,
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    p.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(p)
}

/// The common name of a root: `<org> Root CA` for the first, `<org> Root CA G<n>` for the
/// n-th made by `ca rotate root`.
pub fn root_common_name(org: &str, generation: u32) -> String {
    match generation {
        0 | 1 => format!("{org} Root CA"),
        n => format!("{org} Root CA G{n}"),
    }
}

/// Builds a self-signed root CA certificate: `O=<name>, CN=<name> Root CA` (the
/// `generation`'s name: [`root_common_name`]), no path length limit.
pub fn build_root(
    signer: Arc<dyn Signer>,
    org: &str,
    generation: u32,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>> {
    let params = ca_params(
        org_name(org, root_common_name(org, generation)),
        not_before,
        not_after,
        None,
    )?;
    let key = RcgenKey::new(signer)?;
    Ok(params.self_signed(&key)?.der().to_vec())
}

/// A cross certificate: the root `subject_der` (root `generation` of `org`) certified by
/// another root, `issuer`. It has the subject's name, key and key identifier, so a chain
/// that reaches the subject root also reaches the issuing root through it: verifiers that
/// trust either root accept chains of both during a root rotation.
pub fn build_cross(
    issuer: &CaSigner,
    subject_der: &[u8],
    org: &str,
    generation: u32,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>> {
    let info = CertInfo::from_der(subject_der)?;
    let mut params = ca_params(
        org_name(org, root_common_name(org, generation)),
        not_before,
        not_after.min(issuer.info().not_after),
        None,
    )?;
    let ski = info
        .subject_key_id
        .as_deref()
        .and_then(hex_decode)
        .ok_or_else(|| Error::BadCertificate("the root has no subject key identifier".into()))?;
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ski);
    params.use_authority_key_identifier_extension = true;
    let pk = rcgen::SubjectPublicKeyInfo::from_der(&spki_of_cert(subject_der)?)?;
    let der = params.signed_by(&pk, issuer.issuer())?.der().to_vec();
    if CertInfo::from_der(&der)?.subject != info.subject {
        return Err(Error::BadCertificate(format!(
            "the cross certificate's subject differs from the root's ({})",
            info.subject
        )));
    }
    Ok(der)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| *c != ':').collect();
    s.len().is_multiple_of(2).then_some(())?;
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Name constraints for an intermediate: permitted DNS subtrees and IP ranges.
#[derive(Clone, Debug, Default)]
pub struct Permits {
    /// Permitted DNS subtrees, e.g. `example.internal`.
    pub dns: Vec<String>,
    /// Permitted IP ranges, e.g. `10.0.0.0/8`.
    pub ip: Vec<ipnet::IpNet>,
}

/// The common name of an intermediate: `<org> Intermediate CA` for the first (the one
/// `ca init` makes), `<org> Intermediate CA G<n>` for the n-th made by a rotation. Each
/// intermediate gets its own name, so the inventory, CRLs and OCSP tell them apart.
pub fn intermediate_common_name(org: &str, generation: u32) -> String {
    match generation {
        0 | 1 => format!("{org} Intermediate CA"),
        n => format!("{org} Intermediate CA G{n}"),
    }
}

/// Builds an intermediate CA certificate signed by `root`: pathLen 0, and X.509 name
/// constraints when `permits` has any entry. `generation` names it
/// ([`intermediate_common_name`]).
pub fn build_intermediate(
    root: &CaSigner,
    subject_key_spki: &[u8],
    org: &str,
    generation: u32,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    permits: &Permits,
) -> Result<Vec<u8>> {
    let mut params = ca_params(
        org_name(org, intermediate_common_name(org, generation)),
        not_before,
        not_after,
        Some(0),
    )?;
    params.use_authority_key_identifier_extension = true;
    if !permits.dns.is_empty() || !permits.ip.is_empty() {
        let mut permitted = Vec::new();
        for d in &permits.dns {
            permitted.push(GeneralSubtree::DnsName(
                d.trim_start_matches('.').to_string(),
            ));
        }
        for net in &permits.ip {
            permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                net.network(),
                net.prefix_len(),
            )));
        }
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: vec![],
        });
    }
    let pk = rcgen::SubjectPublicKeyInfo::from_der(subject_key_spki)?;
    Ok(params.signed_by(&pk, root.issuer())?.der().to_vec())
}

/// Signs a leaf certificate for `subject_key_spki` under `ca`. The caller has already
/// applied policy and checked validity against the issuer; the names are checked here
/// once more against the CA certificate's own name constraints, so no path signs a
/// certificate that verifiers must reject. The subject holds a CN only when
/// `spec.common_name` repeats one of the SANs ([`crate::subject_common_name`]; any other CN
/// is refused), and nothing else.
pub fn build_leaf(ca: &CaSigner, subject_key_spki: &[u8], spec: &LeafSpec) -> Result<Issued> {
    if spec.sans.is_empty() {
        return Err(Error::NoSan);
    }
    spec.profile.check_names(&spec.sans)?;
    if let Some(nc) = &ca.constraints {
        nc.check_all(&spec.sans, spec.common_name.as_deref())?;
    }
    let key_type = crate::key::key_type_of_spki(subject_key_spki)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    if let Some(cn) = crate::subject_common_name(spec.common_name.as_deref(), &spec.sans)? {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    if let Some(serial) = &spec.subject_serial {
        if spec.profile != Profile::Device {
            return Err(Error::ProfileNeeds(
                "only the device profile carries a subject serialNumber",
            ));
        }
        crate::check_subject_serial(serial)?;
        p.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            rcgen::DnValue::PrintableString(
                serial.as_str().try_into().map_err(|_| {
                    Error::ProfileNeeds("the subject serialNumber is not printable")
                })?,
            ),
        );
    }
    p.not_before = spec.not_before;
    p.not_after = spec.not_after;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    p.is_ca = IsCa::ExplicitNoCa;
    p.subject_alt_names = spec.sans.iter().map(San::to_rcgen).collect::<Result<_>>()?;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if key_type.is_rsa() && spec.profile != Profile::Client {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = spec.profile.ekus(&spec.sans);
    p.use_authority_key_identifier_extension = true;
    if let Some(crl) = &spec.urls.crl {
        p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec![crl.clone()],
        }];
    }
    if let Some(ocsp) = &spec.urls.ocsp {
        p.custom_extensions.push(aia_ocsp_extension(ocsp));
    }
    let pk = rcgen::SubjectPublicKeyInfo::from_der(subject_key_spki)?;
    let der = p.signed_by(&pk, ca.issuer())?.der().to_vec();
    let info = CertInfo::from_der(&der)?;
    Ok(Issued { der, info })
}

/// Authority Information Access with one OCSP access description (RFC 5280 4.2.2.1).
fn aia_ocsp_extension(url: &str) -> CustomExtension {
    const OCSP_OID: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    let mut uri = vec![0x86];
    uri.extend(der_len(url.len()));
    uri.extend(url.as_bytes());
    let mut desc_body = OCSP_OID.to_vec();
    desc_body.extend(uri);
    let mut desc = vec![0x30];
    desc.extend(der_len(desc_body.len()));
    desc.extend(desc_body);
    let mut seq = vec![0x30];
    seq.extend(der_len(desc.len()));
    seq.extend(desc);
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], seq)
}

pub(crate) fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut v = vec![0x80 | bytes.len() as u8];
        v.extend(bytes);
        v
    }
}

/// Encodes DER as PEM with the given label.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The DER SubjectPublicKeyInfo of a DER certificate.
pub fn spki_of_cert(der: &[u8]) -> Result<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::BadCertificate(e.to_string()))?;
    Ok(x.public_key().raw.to_vec())
}

/// The DER subject Name of a DER certificate.
pub fn subject_der_of_cert(der: &[u8]) -> Result<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::BadCertificate(e.to_string()))?;
    Ok(x.subject().as_raw().to_vec())
}

/// The subject's `serialNumber` attribute (2.5.4.5) of a DER certificate, if it has one.
pub fn subject_serial_of_cert(der: &[u8]) -> Option<String> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    let attr = x
        .subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()?;
    attr.as_str().ok().map(str::to_string)
}

/// Lower-case hex SHA-256 of `der`.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Every `CERTIFICATE` block of a PEM text, as DER; also accepts a single DER certificate.
pub fn parse_certificates(input: &[u8]) -> Result<Vec<Vec<u8>>> {
    if input.first() == Some(&0x30) {
        return Ok(vec![input.to_vec()]);
    }
    let blocks = pem::parse_many(input).map_err(|e| Error::BadCertificate(e.to_string()))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE" || b.tag() == "X509 CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(Error::NoPemBlock("CERTIFICATE"));
    }
    Ok(certs)
}

/// What a certificate says, in the terms the inventory and people use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// Serial number, lower-case hex without leading zero bytes.
    pub serial: String,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    /// Subject, RFC 4514 style.
    pub subject: String,
    /// Issuer, RFC 4514 style.
    pub issuer: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Subject alternative names.
    pub sans: Vec<San>,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The subject key's type, if twoway knows it.
    pub key_type: Option<KeyType>,
    /// True for a CA certificate (basicConstraints CA:true).
    pub is_ca: bool,
    /// The profile the EKUs correspond to, if any.
    pub profile: Option<Profile>,
    /// True when subject and issuer are the same name.
    pub self_issued: bool,
    /// Subject key identifier, hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier, hex.
    pub authority_key_id: Option<String>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let (rest, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::BadCertificate(
                "trailing data after the certificate".into(),
            ));
        }
        let mut sans = Vec::new();
        let mut ekus = (false, false);
        let mut email_protection = false;
        let mut ski = None;
        let mut aki = None;
        for ext in x.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(s) => {
                    for gn in &s.general_names {
                        match gn {
                            GeneralName::DNSName(d) => sans.push(San::Dns(d.to_string())),
                            GeneralName::URI(u) => sans.push(San::Uri(u.to_string())),
                            GeneralName::RFC822Name(e) => sans.push(San::Email(e.to_string())),
                            GeneralName::IPAddress(b) => {
                                if let Some(ip) = ip_from_bytes(b) {
                                    sans.push(San::Ip(ip));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                ParsedExtension::ExtendedKeyUsage(e) => {
                    ekus = (e.server_auth, e.client_auth);
                    email_protection = e.email_protection;
                }
                ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(hex::encode(k.0)),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|k| hex::encode(k.0))
                }
                _ => {}
            }
        }
        let is_ca = x.is_ca();
        let profile = match (is_ca, ekus) {
            (false, (false, true)) if email_protection => Some(Profile::User),
            (false, (true, true)) => Some(Profile::Peer),
            (false, (true, false)) => Some(Profile::Server),
            (false, (false, true)) => Some(Profile::Client),
            _ => None,
        };
        let common_name = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let spki_raw = x.public_key().raw;
        Ok(CertInfo {
            serial: serial_hex(x.raw_serial()),
            fingerprint: sha256_hex(der),
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            common_name,
            sans,
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
            key_type: crate::key::key_type_of_parsed_spki(x.public_key(), spki_raw).ok(),
            is_ca,
            profile,
            self_issued: x.subject().as_raw() == x.issuer().as_raw(),
            subject_key_id: ski,
            authority_key_id: aki,
        })
    }

    /// Seconds-precision lifetime left at `now` (negative once expired).
    pub fn remaining(&self, now: OffsetDateTime) -> time::Duration {
        self.not_after - now
    }
}

/// Serial bytes as lower-case hex without leading zero bytes (at least one digit pair).
pub fn serial_hex(raw: &[u8]) -> String {
    let trimmed: Vec<u8> = raw.iter().copied().skip_while(|b| *b == 0).collect();
    if trimmed.is_empty() {
        "00".into()
    } else {
        hex::encode(trimmed)
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Checks that a PEM/DER private key matches a certificate's public key.
pub fn key_matches_cert(key_spki: &[u8], cert_der: &[u8]) -> Result<bool> {
    let (_, x) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::BadCertificate(e.to_string()))?;
    Ok(raw_public_key(x.public_key().raw)? == raw_public_key(key_spki)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_distinct_and_sort_by_issue_time() {
        let a = random_serial().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = random_serial().unwrap();
        for s in [&a, &b] {
            assert_eq!(s.len(), 16);
            assert!(
                s[0] != 0 && s[0] < 0x80,
                "not a positive minimal DER integer: {s:02x?}"
            );
        }
        assert_ne!(a, b);
        assert!(
            serial_hex(&a) < serial_hex(&b),
            "a later serial sorts later"
        );
        // the random part differs between two serials of the same millisecond
        let same: Vec<Vec<u8>> = (0..64).map(|_| random_serial().unwrap()).collect();
        let tails: std::collections::HashSet<&[u8]> = same.iter().map(|s| &s[6..]).collect();
        assert_eq!(tails.len(), same.len());
    }
}
