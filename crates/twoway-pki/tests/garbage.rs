//! Inputs a peer or a file controls never panic the parsers: truncations and bit flips of
//! valid CSRs, certificates and keys, and random bytes, all give errors or values.

use twoway_pki::{create_csr, parse_certificates, verify_csr, CertInfo, KeyType, PrivateKey, San};

fn mutations(valid: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for cut in (0..valid.len()).step_by(7) {
        out.push(valid[..cut].to_vec());
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut m = valid.to_vec();
        let i = (seed as usize) % m.len();
        m[i] ^= 1 << ((seed >> 60) % 8);
        out.push(m);
        let r: Vec<u8> = (0..(seed % 300) as usize)
            .map(|k| (seed >> (k % 56)) as u8)
            .collect();
        out.push(r);
    }
    out
}

#[test]
fn csr_parser_never_panics() {
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let sans: Vec<San> = vec!["DNS:a.example".parse().unwrap()];
    let pem_text = create_csr(&key, &sans, None).unwrap();
    let der = pem::parse(&pem_text).unwrap().into_contents();
    // The signed part (CertificationRequestInfo) starts after the outer SEQUENCE header.
    let outer_hdr = if der[1] & 0x80 != 0 {
        2 + (der[1] & 0x7f) as usize
    } else {
        2
    };
    let cri_len_byte = der[outer_hdr + 1];
    let (cri_hdr, cri_len) = if cri_len_byte & 0x80 != 0 {
        let n = (cri_len_byte & 0x7f) as usize;
        let len = der[outer_hdr + 2..outer_hdr + 2 + n]
            .iter()
            .fold(0usize, |acc, b| acc * 256 + *b as usize);
        (2 + n, len)
    } else {
        (2, cri_len_byte as usize)
    };
    let signed = outer_hdr..outer_hdr + cri_hdr + cri_len;
    for m in mutations(&der) {
        if verify_csr(&m).is_ok() && m.len() == der.len() {
            let changed: Vec<usize> = (0..m.len()).filter(|i| m[*i] != der[*i]).collect();
            // A flip outside the signed part (the outer algorithm identifier's tag, the
            // BIT STRING's unused-bits byte) changes nothing the CA uses; inside it, never.
            assert!(
                changed.iter().all(|i| !signed.contains(i)),
                "a CSR altered inside its signed part at {changed:?} verified"
            );
        } else {
            assert!(verify_csr(&m).is_err() || m == der);
        }
    }
}

#[test]
fn certificate_and_key_parsers_never_panic() {
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let csr = create_csr(&key, &["DNS:a.example".parse().unwrap()], None).unwrap();
    let der = pem::parse(&csr).unwrap().into_contents();
    for m in mutations(&der) {
        let _ = CertInfo::from_der(&m);
        let _ = parse_certificates(&m);
        let _ = PrivateKey::from_der(&m);
    }
    let key_der = pem::parse(key.to_pem(None).unwrap().as_str())
        .unwrap()
        .into_contents();
    for m in mutations(&key_der) {
        let _ = PrivateKey::from_der(&m);
    }
}
