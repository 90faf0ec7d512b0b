//! Certificate revocation lists.

use crate::{der_tlv as der, der_uint, CaSigner, Error, Result};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// Why a certificate was revoked (RFC 5280 CRLReason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No reason given.
    Unspecified,
    /// The private key was compromised.
    KeyCompromise,
    /// The CA key was compromised.
    CaCompromise,
    /// The subject's affiliation changed.
    AffiliationChanged,
    /// Replaced by a newer certificate.
    Superseded,
    /// No longer needed.
    CessationOfOperation,
    /// Temporarily on hold.
    CertificateHold,
    /// The privileges were withdrawn.
    PrivilegeWithdrawn,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 8] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::CertificateHold,
        Reason::PrivilegeWithdrawn,
    ];

    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::CertificateHold => "certificate-hold",
            Reason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    /// The RFC 5280 code.
    pub fn code(self) -> u8 {
        self.to_rcgen() as u8
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            Reason::Unspecified => R::Unspecified,
            Reason::KeyCompromise => R::KeyCompromise,
            Reason::CaCompromise => R::CaCompromise,
            Reason::AffiliationChanged => R::AffiliationChanged,
            Reason::Superseded => R::Superseded,
            Reason::CessationOfOperation => R::CessationOfOperation,
            Reason::CertificateHold => R::CertificateHold,
            Reason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == norm || r.as_str().replace('-', "") == norm)
            .ok_or_else(|| Error::UnknownReason(s.to_string()))
    }
}

/// One revoked certificate as it appears in a CRL.
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    /// Serial, hex.
    pub serial_hex: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: Reason,
}

/// What kind of CRL [`build_crl_as`] signs.
#[derive(Clone, Debug, Default)]
pub enum CrlKind {
    /// A complete CRL, as [`build_crl`] signs.
    #[default]
    Complete,
    /// A complete CRL that names where its delta CRLs are published (the Freshest CRL
    /// extension, RFC 5280 §5.2.6): the URL.
    CompleteWithDeltas(String),
    /// A delta CRL (RFC 5280 §5.2.4): the changes since the complete CRL of this number
    /// (the Delta CRL Indicator extension, critical).
    Delta(u64),
}

/// Signs a CRL (v2, with CRL number and AKI) listing `entries`.
pub fn build_crl(
    ca: &CaSigner,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
) -> Result<Vec<u8>> {
    build_crl_as(
        ca,
        number,
        this_update,
        next_update,
        entries,
        &CrlKind::Complete,
    )
}

/// Signs a CRL of `kind` listing `entries`: [`build_crl`]'s CRL, with the delta extension
/// `kind` asks for among its extensions.
pub fn build_crl_as(
    ca: &CaSigner,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
    kind: &CrlKind,
) -> Result<Vec<u8>> {
    let der = rcgen_crl(ca, number, this_update, next_update, entries)?;
    let ext = match kind {
        CrlKind::Complete => return Ok(der),
        CrlKind::CompleteWithDeltas(url) => freshest_crl(url),
        CrlKind::Delta(base) => delta_crl_indicator(*base),
    };
    with_extension(ca, &der, &ext)
}

/// The CRL number and thisUpdate of `crl` (PEM or DER), a complete CRL signed by the key of
/// `issuer_der`: what a delta CRL against it needs. A delta CRL, one without a number or
/// one another key signed is refused, saying which. Read by walking the DER, not by parsing
/// every entry: a complete CRL of a million entries is 66 MB.
pub fn complete_crl_info(crl: &[u8], issuer_der: &[u8]) -> Result<(u64, OffsetDateTime)> {
    let der = match pem::parse(crl) {
        Ok(p) if p.tag() == "X509 CRL" => p.into_contents(),
        Ok(p) => return Err(Error::BadCrl(format!("it holds a {}, not a CRL", p.tag()))),
        Err(_) => crl.to_vec(),
    };
    let bad = |why: &str| Error::BadCrl(why.to_string());
    let malformed = |_| bad("it is not DER: give the PEM or DER file `twoway crl` wrote");
    let (tag, _, list, _) = tlv(&der).map_err(malformed)?;
    if tag != 0x30 {
        return Err(bad("it is not a CRL"));
    }
    let (_, tbs_whole, tbs, rest) = tlv(list).map_err(malformed)?;
    let (_, _, _, rest) = tlv(rest).map_err(malformed)?;
    let (tag, _, bits, _) = tlv(rest).map_err(malformed)?;
    let sig = match bits.split_first() {
        Some((0, sig)) if tag == 0x03 => sig,
        _ => return Err(bad("its signature is not a BIT STRING")),
    };
    let spki = crate::spki_of_cert(issuer_der)?;
    crate::verify_signature(&spki, tbs_whole, sig)
        .map_err(|_| bad("this CA's intermediate did not sign it"))?;
    let (mut this_update, mut exts) = (None, None);
    let mut rest = tbs;
    while !rest.is_empty() {
        let (tag, _, content, next) = tlv(rest).map_err(malformed)?;
        match tag {
            0x17 | 0x18 if this_update.is_none() => this_update = Some(der_time(tag, content)?),
            0xa0 => exts = Some(content),
            _ => {}
        }
        rest = next;
    }
    let this_update = this_update.ok_or_else(|| bad("it has no thisUpdate"))?;
    let mut number = None;
    if let Some(exts) = exts {
        let (_, _, mut list, _) = tlv(exts).map_err(malformed)?;
        while !list.is_empty() {
            let (_, _, ext, next) = tlv(list).map_err(malformed)?;
            let (_, _, oid, mut fields) = tlv(ext).map_err(malformed)?;
            match oid {
                // deltaCRLIndicator
                [0x55, 0x1d, 0x1b] => return Err(bad("it is itself a delta CRL")),
                // cRLNumber: OCTET STRING { INTEGER }
                [0x55, 0x1d, 0x14] => {
                    while !fields.is_empty() {
                        let (tag, _, value, after) = tlv(fields).map_err(malformed)?;
                        if tag == 0x04 {
                            let (_, _, int, _) = tlv(value).map_err(malformed)?;
                            if int.len() <= 9 && int.first().is_some_and(|b| b & 0x80 == 0) {
                                number =
                                    Some(int.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)));
                            }
                        }
                        fields = after;
                    }
                }
                _ => {}
            }
            list = next;
        }
    }
    let number = number.ok_or_else(|| bad("it has no CRL number"))?;
    Ok((number, this_update))
}

/// A DER UTCTime (`0x17`, YYMMDDHHMMSSZ) or GeneralizedTime (`0x18`, YYYYMMDDHHMMSSZ).
fn der_time(tag: u8, v: &[u8]) -> Result<OffsetDateTime> {
    let bad = || Error::BadCrl("its thisUpdate is not a DER time".into());
    let text = std::str::from_utf8(v).map_err(|_| bad())?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy: i32 = text[..2].parse().map_err(|_| bad())?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (text[..4].parse().map_err(|_| bad())?, &text[4..]),
        _ => return Err(bad()),
    };
    if !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = |i: usize| rest[i..i + 2].parse::<u8>().map_err(|_| bad());
    let month = time::Month::try_from(n(0)?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(year, month, n(2)?).map_err(|_| bad())?;
    let t = time::Time::from_hms(n(4)?, n(6)?, n(8)?).map_err(|_| bad())?;
    Ok(time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// The first DER TLV of some input: (tag, whole TLV, content, the input after it).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Splits the first DER TLV off `input`.
fn tlv(input: &[u8]) -> Result<Tlv<'_>> {
    let bad = || Error::BadCrl("malformed DER in the CRL being extended".into());
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    let header = input.len() - rest.len();
    Ok((tag, &input[..header + len], &rest[..len], &rest[len..]))
}

/// The Delta CRL Indicator extension (2.5.29.27, critical): the base CRL's number.
fn delta_crl_indicator(base: u64) -> Vec<u8> {
    let oid = [0x06, 0x03, 0x55, 0x1d, 0x1b];
    let critical = [0x01, 0x01, 0xff];
    der(
        0x30,
        &[
            &oid[..],
            &critical[..],
            &der(0x04, &der_uint(&base.to_be_bytes())),
        ]
        .concat(),
    )
}

/// The Freshest CRL extension (2.5.29.46, not critical): one distribution point, `url`.
fn freshest_crl(url: &str) -> Vec<u8> {
    let oid = [0x06, 0x03, 0x55, 0x1d, 0x2e];
    // CRLDistributionPoints { DistributionPoint { [0] { fullName [0] { URI [6] } } } }
    let uri = der(0x86, url.as_bytes());
    let point = der(0x30, &der(0xa0, &der(0xa0, &uri)));
    der(0x30, &[&oid[..], &der(0x04, &der(0x30, &point))].concat())
}

/// `crl` with `ext` appended to its extensions, signed again by `ca`.
fn with_extension(ca: &CaSigner, crl: &[u8], ext: &[u8]) -> Result<Vec<u8>> {
    let (_, _, list, _) = tlv(crl)?;
    let (_, _, tbs, rest) = tlv(list)?;
    let (_, alg, _, _) = tlv(rest)?;
    let mut fields = Vec::with_capacity(tbs.len() + ext.len() + 8);
    let mut rest = tbs;
    let mut extended = false;
    while !rest.is_empty() {
        let (tag, whole, content, next) = tlv(rest)?;
        if tag == 0xa0 {
            let (_, _, exts, _) = tlv(content)?;
            let all = [exts, ext].concat();
            fields.extend_from_slice(&der(0xa0, &der(0x30, &all)));
            extended = true;
        } else {
            fields.extend_from_slice(whole);
        }
        rest = next;
    }
    if !extended {
        fields.extend_from_slice(&der(0xa0, &der(0x30, ext)));
    }
    let tbs = der(0x30, &fields);
    let sig = ca.sign(&tbs)?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig);
    Ok(der(0x30, &[&tbs[..], alg, &der(0x03, &bits)].concat()))
}

fn rcgen_crl(
    ca: &CaSigner,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
) -> Result<Vec<u8>> {
    let mut revoked = Vec::with_capacity(entries.len());
    for e in entries {
        let serial = hex::decode(&e.serial_hex)
            .map_err(|_| Error::BadCrl(format!("serial {:?} is not hex", e.serial_hex)))?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: e.revoked_at,
            // RFC 5280 5.3.1: reasonCode unspecified SHOULD be absent.
            reason_code: (e.reason != Reason::Unspecified).then(|| e.reason.to_rcgen()),
            invalidity_date: None,
        });
    }
    let ski = ca
        .info()
        .subject_key_id
        .as_ref()
        .and_then(|h| hex::decode(h).ok())
        .map(KeyIdMethod::PreSpecified)
        .unwrap_or(KeyIdMethod::Sha256);
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(
            &number.to_be_bytes()[number.leading_zeros() as usize / 8..],
        ),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: ski,
    };
    Ok(params.signed_by(ca.issuer())?.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_root, KeyType, PrivateKey};
    use std::sync::Arc;

    fn ca(name: &str) -> CaSigner {
        let key: Arc<dyn crate::Signer> = Arc::new(PrivateKey::generate(KeyType::P256).unwrap());
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let der = build_root(key.clone(), name, 1, now, now + time::Duration::days(1)).unwrap();
        CaSigner::new(der, key).unwrap()
    }

    /// A complete CRL's number and time are read back; a delta, another CA's CRL and
    /// garbage are refused with why.
    #[test]
    fn complete_crl_info_reads_the_base_and_refuses_the_rest() {
        let a = ca("A");
        let t = OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
        let entries = [RevokedEntry {
            serial_hex: "0102".into(),
            revoked_at: t,
            reason: Reason::KeyCompromise,
        }];
        let next = t + time::Duration::hours(1);
        let kind = CrlKind::CompleteWithDeltas("http://ca.example/crl/delta".into());
        let base = build_crl_as(&a, 300, t, next, &entries, &kind).unwrap();
        assert_eq!(complete_crl_info(&base, a.cert_der()).unwrap(), (300, t));
        let pem = crate::der_to_pem("X509 CRL", &base);
        assert_eq!(
            complete_crl_info(pem.as_bytes(), a.cert_der()).unwrap().0,
            300
        );
        let delta = build_crl_as(&a, 301, t, next, &[], &CrlKind::Delta(300)).unwrap();
        let e = complete_crl_info(&delta, a.cert_der()).unwrap_err();
        assert!(e.to_string().contains("itself a delta"), "{e}");
        let e = complete_crl_info(&base, ca("B").cert_der()).unwrap_err();
        assert!(e.to_string().contains("did not sign it"), "{e}");
        let e = complete_crl_info(b"\x30\x05\x01", a.cert_der()).unwrap_err();
        assert!(e.to_string().contains("not DER"), "{e}");
    }
}
