//! The degenerate PKCS#7 / CMS SignedData "certs-only" message (RFC 5652 §5, RFC 8551
//! §3.8): a bag of certificates with no content and no signers, the form EST (RFC 7030
//! §4.1.3, §4.2.3) and SCEP (RFC 8894 §3.4) hand certificates out in. Encoded by hand in
//! DER: it is a handful of fixed bytes around the certificates.
//!
//! Also the few DER building blocks the PKCS#12 writer shares ([`crate::pkcs12`]).

/// OID 1.2.840.113549.1.7.1 (id-data), DER.
pub(crate) const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];
/// OID 1.2.840.113549.1.7.2 (id-signedData), DER.
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];

/// A DER TLV: `tag`, the definite length, `content`.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 6);
    v.push(tag);
    v.extend(crate::cert::der_len(content.len()));
    v.extend_from_slice(content);
    v
}

/// A SEQUENCE of already encoded parts.
pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A SET of already encoded parts, in the order given.
pub(crate) fn set(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

/// A non-negative INTEGER.
pub(crate) fn uint(n: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    tlv(0x02, &bytes)
}

/// A certs-only SignedData holding `certs` (DER certificates, in this order), as DER.
/// An empty list is a valid message too (no certificate to give).
pub fn certs_only(certs: &[Vec<u8>]) -> Vec<u8> {
    let certificates = tlv(0xa0, &certs.concat());
    let signed_data = seq(&[
        &uint(1),          // version
        &set(&[]),         // digestAlgorithms
        &seq(&[OID_DATA]), // encapContentInfo: id-data, no content
        &certificates,     // [0] IMPLICIT CertificateSet
        &set(&[]),         // signerInfos
    ]);
    seq(&[OID_SIGNED_DATA, &tlv(0xa0, &signed_data)])
}

/// Every certificate of a certs-only (or any) SignedData `der`, as DER, in order; a
/// message that is not SignedData, or is malformed, is an error naming what is wrong.
pub fn certs_of(der: &[u8]) -> crate::Result<Vec<Vec<u8>>> {
    use crate::Error;
    let bad = |m: &str| Error::BadCertificate(format!("not a PKCS#7 certs-only message: {m}"));
    let (ci, rest) = read_tlv(der).ok_or_else(|| bad("truncated"))?;
    if ci.0 != 0x30 || !rest.is_empty() {
        return Err(bad("not one SEQUENCE"));
    }
    let (oid, rest) = read_tlv(ci.1).ok_or_else(|| bad("no content type"))?;
    if [&[oid.0][..], &crate::cert::der_len(oid.1.len()), oid.1].concat() != OID_SIGNED_DATA {
        return Err(bad("the content type is not signedData"));
    }
    let (explicit, _) = read_tlv(rest).ok_or_else(|| bad("no content"))?;
    let (sd, _) = read_tlv(explicit.1).ok_or_else(|| bad("no SignedData"))?;
    let mut body = sd.1;
    let mut out = Vec::new();
    // version, digestAlgorithms, encapContentInfo, then [0] certificates if present
    for _ in 0..3 {
        let (_, r) = read_tlv(body).ok_or_else(|| bad("truncated SignedData"))?;
        body = r;
    }
    if let Some(((0xa0, mut certs), _)) = read_tlv(body) {
        while !certs.is_empty() {
            let start = certs;
            let ((tag, _), r) = read_tlv(certs).ok_or_else(|| bad("truncated certificate"))?;
            if tag == 0x30 {
                out.push(start[..start.len() - r.len()].to_vec());
            }
            certs = r;
        }
    }
    Ok(out)
}

/// A TLV read: (tag, content), and what follows it.
type Read<'a> = ((u8, &'a [u8]), &'a [u8]);

/// One DER TLV at the start of `b`: (tag, content) and what follows, or None when it is
/// truncated or uses a length form DER does not (indefinite, more than 4 length bytes).
pub(crate) fn read_tlv(b: &[u8]) -> Option<Read<'_>> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    let content = b.get(hdr..end)?;
    Some(((tag, content), &b[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_only_round_trips_and_refuses_garbage() {
        let a = seq(&[&uint(1)]);
        let b = seq(&[&uint(300), &tlv(0x04, &[7u8; 200])]);
        let msg = certs_only(&[a.clone(), b.clone()]);
        assert_eq!(certs_of(&msg).unwrap(), vec![a, b]);
        assert_eq!(certs_of(&certs_only(&[])).unwrap(), Vec::<Vec<u8>>::new());
        assert!(certs_of(b"garbage").is_err());
        assert!(certs_of(&msg[..msg.len() - 1]).is_err());
        assert_eq!(uint(0), vec![2, 1, 0]);
        assert_eq!(uint(128), vec![2, 2, 0, 128]);
        assert_eq!(uint(2048), vec![2, 2, 8, 0]);
    }
}
