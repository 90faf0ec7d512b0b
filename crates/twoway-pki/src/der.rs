//! The two DER writers that hand-built structures need (a CRL's delta extensions, a token
//! key's SubjectPublicKeyInfo): a TLV and an unsigned INTEGER.

/// A DER TLV: `tag`, the length in short or long form, `body`.
pub fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(body);
    out
}

/// A DER INTEGER of the unsigned big-endian `v`: leading zeros dropped, a zero byte put
/// before a high bit, zero as one zero byte.
pub fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = match v.iter().position(|&b| b != 0) {
        Some(i) => &v[i..],
        None => &[0u8][..],
    };
    let mut body = Vec::with_capacity(v.len() + 1);
    if v[0] & 0x80 != 0 {
        body.push(0);
    }
    body.extend_from_slice(v);
    der_tlv(0x02, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_integers() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der_tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der_uint(&[0, 0, 5]), vec![0x02, 1, 5]);
        assert_eq!(der_uint(&[0x80]), vec![0x02, 2, 0, 0x80]);
        assert_eq!(der_uint(&[0, 0]), vec![0x02, 1, 0]);
    }
}
