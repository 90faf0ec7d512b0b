//! OCSP (RFC 6960): parsing requests and encoding signed responses, by hand in DER.
//!
//! Only what a responder needs: [`parse_request`] reads the CertIDs (and a nonce) of an
//! `OCSPRequest`; [`IssuerHashes`] tells whether a CertID names our issuer; [`build_response`]
//! signs a `BasicOCSPResponse` with a delegated responder key (its certificate, with EKU
//! OCSPSigning and id-pkix-ocsp-nocheck, from [`build_ocsp_signer`], is included);
//! [`error_response`] is the unsigned answer for a malformed request or a failure.
//! [`client`] is the other side: the request a relying party sends and the verification
//! of the answer it gets.

pub mod client;

use crate::cert::der_len;
use crate::{CaSigner, Error, Issued, Reason, Result, Signer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
const OID_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// The hash algorithm of a CertID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertIdHash {
    /// SHA-1 (what most clients, openssl included, send).
    Sha1,
    /// SHA-256.
    Sha256,
}

/// One CertID of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    /// The CertID exactly as received, echoed in the response.
    pub raw: Vec<u8>,
    /// Its hash algorithm, when twoway knows it.
    pub hash: Option<CertIdHash>,
    /// Hash of the issuer's subject name (DER).
    pub issuer_name_hash: Vec<u8>,
    /// Hash of the issuer's public key (the BIT STRING's bytes).
    pub issuer_key_hash: Vec<u8>,
    /// The serial as lower-case hex without leading zero bytes (as the inventory has it).
    pub serial_hex: String,
}

/// A parsed `OCSPRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspRequest {
    /// The certificates asked about.
    pub cert_ids: Vec<CertId>,
    /// The nonce extension's value (the extnValue's content), if one was sent.
    pub nonce: Option<Vec<u8>>,
}

/// A certificate's status in a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcspStatus {
    /// Issued by us and not revoked.
    Good,
    /// Revoked at that time, for that reason.
    Revoked {
        /// When.
        at: OffsetDateTime,
        /// Why.
        reason: Reason,
    },
    /// Not known to this responder.
    Unknown,
}

/// One answer of a response.
#[derive(Clone, Debug)]
pub struct SingleResponse {
    /// The CertID as it was asked.
    pub cert_id_raw: Vec<u8>,
    /// The status.
    pub status: OcspStatus,
    /// When the status was known to be correct.
    pub this_update: OffsetDateTime,
    /// When newer information will be available.
    pub next_update: Option<OffsetDateTime>,
}

/// `OCSPResponseStatus` values for unsigned error responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OcspErrorStatus {
    /// The request does not parse.
    MalformedRequest = 1,
    /// The responder failed.
    InternalError = 2,
    /// Try again later.
    TryLater = 3,
    /// Not authorized to answer for this issuer.
    Unauthorized = 6,
}

/// The hashes by which CertIDs name an issuer.
#[derive(Clone, Debug)]
pub struct IssuerHashes {
    sha1_name: Vec<u8>,
    sha1_key: Vec<u8>,
    sha256_name: Vec<u8>,
    sha256_key: Vec<u8>,
}

impl IssuerHashes {
    /// Computes the hashes of an issuer certificate (DER).
    pub fn new(issuer_cert_der: &[u8]) -> Result<Self> {
        let (_, x) = x509_parser::parse_x509_certificate(issuer_cert_der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        let name = x.subject().as_raw();
        let key = &x.public_key().subject_public_key.data;
        let sha1 = |d: &[u8]| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, d)
                .as_ref()
                .to_vec()
        };
        Ok(IssuerHashes {
            sha1_name: sha1(name),
            sha1_key: sha1(key),
            sha256_name: Sha256::digest(name).to_vec(),
            sha256_key: Sha256::digest(key).to_vec(),
        })
    }

    /// True when the CertID names this issuer.
    pub fn matches(&self, id: &CertId) -> bool {
        match id.hash {
            Some(CertIdHash::Sha1) => {
                id.issuer_name_hash == self.sha1_name && id.issuer_key_hash == self.sha1_key
            }
            Some(CertIdHash::Sha256) => {
                id.issuer_name_hash == self.sha256_name && id.issuer_key_hash == self.sha256_key
            }
            None => false,
        }
    }
}

// ---- a minimal DER reader -------------------------------------------------------------

fn bad(what: &str) -> Error {
    Error::BadOcsp(what.to_string())
}

/// One TLV: (tag, content, whole TLV, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Reads one TLV.
fn tlv(input: &[u8]) -> Result<Tlv<'_>> {
    let (&tag, rest) = input.split_first().ok_or_else(|| bad("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(bad("multi-byte tags are not used in OCSP"));
    }
    let (&first, rest) = rest.split_first().ok_or_else(|| bad("truncated length"))?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad("bad length"));
        }
        let mut len = 0usize;
        for b in &rest[..n] {
            len = (len << 8) | *b as usize;
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad("truncated content"));
    }
    let header = input.len() - rest.len();
    Ok((tag, &rest[..len], &input[..header + len], &rest[len..]))
}

fn expect<'a>(input: &'a [u8], want: u8, what: &str) -> Result<(&'a [u8], &'a [u8], &'a [u8])> {
    let (tag, content, whole, rest) = tlv(input)?;
    if tag != want {
        return Err(bad(&format!("expected {what}")));
    }
    Ok((content, whole, rest))
}

/// Parses a DER `OCSPRequest` (RFC 6960 4.1.1). The optional signature is ignored.
pub fn parse_request(der: &[u8]) -> Result<OcspRequest> {
    let (req, _, rest) = expect(der, 0x30, "OCSPRequest SEQUENCE")?;
    if !rest.is_empty() {
        return Err(bad("trailing data after the request"));
    }
    let (mut tbs, _, _) = expect(req, 0x30, "TBSRequest SEQUENCE")?;
    // [0] version, [1] requestorName: skip.
    for t in [0xa0u8, 0xa1] {
        if tbs.first() == Some(&t) {
            tbs = tlv(tbs)?.3;
        }
    }
    let (mut list, _, mut after) = expect(tbs, 0x30, "requestList SEQUENCE")?;
    let mut cert_ids = Vec::new();
    while !list.is_empty() {
        if cert_ids.len() >= 64 {
            return Err(bad("more than 64 certificates in one request"));
        }
        let (request, _, next) = expect(list, 0x30, "Request SEQUENCE")?;
        list = next;
        let (cid, cid_raw, _) = expect(request, 0x30, "CertID SEQUENCE")?;
        let (alg, _, r) = expect(cid, 0x30, "hashAlgorithm")?;
        let (oid, _, _) = expect(alg, 0x06, "hash OID")?;
        let hash = match oid {
            OID_SHA1 => Some(CertIdHash::Sha1),
            OID_SHA256 => Some(CertIdHash::Sha256),
            _ => None,
        };
        let (name_hash, _, r) = expect(r, 0x04, "issuerNameHash")?;
        let (key_hash, _, r) = expect(r, 0x04, "issuerKeyHash")?;
        let (serial, _, _) = expect(r, 0x02, "serialNumber")?;
        if serial.is_empty() || serial.len() > 40 {
            return Err(bad("bad serial number"));
        }
        cert_ids.push(CertId {
            raw: cid_raw.to_vec(),
            hash,
            issuer_name_hash: name_hash.to_vec(),
            issuer_key_hash: key_hash.to_vec(),
            serial_hex: crate::serial_hex(serial),
        });
    }
    if cert_ids.is_empty() {
        return Err(bad("the request asks about no certificate"));
    }
    let mut nonce = None;
    if after.first() == Some(&0xa2) {
        let (exts, _, r) = expect(after, 0xa2, "requestExtensions")?;
        after = r;
        let (mut seq, _, _) = expect(exts, 0x30, "Extensions SEQUENCE")?;
        while !seq.is_empty() {
            let (ext, _, next) = expect(seq, 0x30, "Extension SEQUENCE")?;
            seq = next;
            let (oid, _, mut r) = expect(ext, 0x06, "extension OID")?;
            if r.first() == Some(&0x01) {
                r = tlv(r)?.3; // critical BOOLEAN
            }
            let (value, _, _) = expect(r, 0x04, "extnValue")?;
            if oid == OID_NONCE {
                if value.len() > 128 {
                    return Err(bad("nonce longer than 128 bytes"));
                }
                nonce = Some(value.to_vec());
            }
        }
    }
    let _ = after;
    Ok(OcspRequest { cert_ids, nonce })
}

// ---- DER writing ------------------------------------------------------------------------

fn w(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 6);
    v.push(tag);
    v.extend(der_len(content.len()));
    v.extend_from_slice(content);
    v
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    w(0x30, &parts.concat())
}

fn generalized_time(t: OffsetDateTime) -> Vec<u8> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let s = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    w(0x18, s.as_bytes())
}

fn sig_alg_id(kt: crate::KeyType) -> Vec<u8> {
    use crate::KeyType as K;
    match kt {
        K::P256 => seq(&[&w(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])]),
        K::P384 => seq(&[&w(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03])]),
        K::Ed25519 => seq(&[&w(0x06, &[0x2b, 0x65, 0x70])]),
        K::Rsa2048 | K::Rsa3072 | K::Rsa4096 => seq(&[
            &w(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
            ),
            &[0x05, 0x00],
        ]),
    }
}

/// The unsigned response for a request that cannot be answered.
pub fn error_response(status: OcspErrorStatus) -> Vec<u8> {
    seq(&[&w(0x0a, &[status as u8])])
}

/// Signs a successful `OCSPResponse` with the delegated responder key, including
/// `responder_chain` (the responder certificate, and optionally certificates above it) so
/// clients can check the delegation. `nonce` is echoed when given.
pub fn build_response(
    responder: &dyn Signer,
    responder_chain: &[&[u8]],
    produced_at: OffsetDateTime,
    responses: &[SingleResponse],
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>> {
    // ResponderID byKey: SHA-1 of the responder's public key bits.
    let spki = responder.public_key_der();
    let raw = crate::signer::raw_public_key(&spki)?;
    let key_hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &raw);
    let responder_id = w(0xa2, &w(0x04, key_hash.as_ref()));
    let mut singles = Vec::new();
    for r in responses {
        let status = match r.status {
            OcspStatus::Good => vec![0x80, 0x00],
            OcspStatus::Unknown => vec![0x82, 0x00],
            OcspStatus::Revoked { at, reason } => {
                let mut info = generalized_time(at);
                if reason != Reason::Unspecified {
                    info.extend(w(0xa0, &w(0x0a, &[reason.code()])));
                }
                w(0xa1, &info)
            }
        };
        let mut body = r.cert_id_raw.clone();
        body.extend(status);
        body.extend(generalized_time(r.this_update));
        if let Some(n) = r.next_update {
            body.extend(w(0xa0, &generalized_time(n)));
        }
        singles.extend(w(0x30, &body));
    }
    let mut data = responder_id;
    data.extend(generalized_time(produced_at));
    data.extend(w(0x30, &singles));
    if let Some(n) = nonce {
        let ext = seq(&[&w(0x06, OID_NONCE), &w(0x04, n)]);
        data.extend(w(0xa1, &w(0x30, &ext)));
    }
    let tbs = w(0x30, &data);
    let sig = responder.sign(&tbs)?;
    let mut bits = vec![0u8];
    bits.extend(sig);
    let certs = w(0xa0, &w(0x30, &responder_chain.concat()));
    let basic = seq(&[
        &tbs,
        &sig_alg_id(responder.key_type()),
        &w(0x03, &bits),
        &certs,
    ]);
    let bytes = seq(&[&w(0x06, OID_BASIC), &w(0x04, &basic)]);
    Ok(seq(&[&w(0x0a, &[0]), &w(0xa0, &bytes)]))
}

/// Issues the delegated OCSP signing certificate under `ca`: EKU OCSPSigning, keyUsage
/// digitalSignature, id-pkix-ocsp-nocheck, `CN=<org> OCSP Responder`.
pub fn build_ocsp_signer(
    ca: &CaSigner,
    subject_key_spki: &[u8],
    org: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued> {
    use rcgen::{
        CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyUsagePurpose, SerialNumber,
    };
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, format!("{org} OCSP Responder"));
    p.distinguished_name = dn;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(SerialNumber::from_slice(&crate::random_serial()?));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    p.use_authority_key_identifier_extension = true;
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5],
        vec![0x05, 0x00],
    ));
    let pk = rcgen::SubjectPublicKeyInfo::from_der(subject_key_spki)?;
    let der = p.signed_by(&pk, ca.issuer())?.der().to_vec();
    let info = crate::CertInfo::from_der(&der)?;
    Ok(Issued { der, info })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyType, PrivateKey};

    fn request(name_hash: &[u8], key_hash: &[u8], serial: &[u8], nonce: Option<&[u8]>) -> Vec<u8> {
        let alg = seq(&[&w(0x06, OID_SHA1), &[0x05, 0x00]]);
        let cid = seq(&[
            &alg,
            &w(0x04, name_hash),
            &w(0x04, key_hash),
            &w(0x02, serial),
        ]);
        let list = seq(&[&seq(&[&cid])]);
        let mut tbs = list;
        if let Some(n) = nonce {
            let ext = seq(&[&w(0x06, OID_NONCE), &w(0x04, &w(0x04, n))]);
            tbs.extend(w(0xa2, &seq(&[&ext])));
        }
        seq(&[&w(0x30, &tbs)])
    }

    #[test]
    fn parses_request_with_nonce() {
        let der = request(
            &[1; 20],
            &[2; 20],
            &[0x00, 0x8a, 0x01],
            Some(b"0123456789abcdef"),
        );
        let r = parse_request(&der).unwrap();
        assert_eq!(r.cert_ids.len(), 1);
        assert_eq!(r.cert_ids[0].serial_hex, "8a01");
        assert_eq!(r.cert_ids[0].hash, Some(CertIdHash::Sha1));
        assert_eq!(r.nonce.as_deref(), Some(&w(0x04, b"0123456789abcdef")[..]));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x04, 0x00],
            &[0x30, 0x03, 0x30, 0x01, 0x30],
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        // every truncation of a valid request fails cleanly
        let der = request(&[1; 20], &[2; 20], &[5], Some(b"n"));
        for i in 0..der.len() {
            assert!(parse_request(&der[..i]).is_err());
        }
    }

    #[test]
    fn signed_response_verifies() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let cid = seq(&[
            &seq(&[&w(0x06, OID_SHA1)]),
            &w(0x04, &[1; 20]),
            &w(0x04, &[2; 20]),
            &w(0x02, &[7]),
        ]);
        let now = OffsetDateTime::now_utc();
        let resp = build_response(
            &key,
            &[&[0x30, 0x00]],
            now,
            &[SingleResponse {
                cert_id_raw: cid,
                status: OcspStatus::Revoked {
                    at: now,
                    reason: Reason::KeyCompromise,
                },
                this_update: now,
                next_update: Some(now + time::Duration::hours(1)),
            }],
            Some(&w(0x04, b"abc")),
        )
        .unwrap();
        // OCSPResponse → responseBytes → BasicOCSPResponse → tbs, alg, sig
        let (outer, _, _) = expect(&resp, 0x30, "resp").unwrap();
        let (status, _, r) = expect(outer, 0x0a, "status").unwrap();
        assert_eq!(status, &[0]);
        let (rb, _, _) = expect(r, 0xa0, "rb").unwrap();
        let (rb, _, _) = expect(rb, 0x30, "rb seq").unwrap();
        let (_, _, r) = expect(rb, 0x06, "oid").unwrap();
        let (basic, _, _) = expect(r, 0x04, "octets").unwrap();
        let (basic, _, _) = expect(basic, 0x30, "basic").unwrap();
        let (_, tbs_raw, r) = expect(basic, 0x30, "tbs").unwrap();
        let (_, _, r) = expect(r, 0x30, "alg").unwrap();
        let (bits, _, _) = expect(r, 0x03, "sig").unwrap();
        let raw = crate::signer::raw_public_key(&key.public_key_der()).unwrap();
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            raw,
        )
        .verify(tbs_raw, &bits[1..])
        .unwrap();
        assert_eq!(
            error_response(OcspErrorStatus::MalformedRequest),
            vec![0x30, 0x03, 0x0a, 0x01, 0x01]
        );
    }
}
