//! PKCS#12 files (RFC 7292) for browsers, phones and keystores: a private key, its
//! certificate and the chain, encrypted with a passphrase, with a friendly name.
//!
//! Two encodings, both password-integrity (an HMAC over the contents) and both with the key
//! and the certificates encrypted:
//!
//! - the default, what OpenSSL 3 writes: the key bag and the certificate bag encrypted with
//!   PBES2 (PBKDF2-HMAC-SHA256, 2048 iterations, 16-byte salt; AES-256-CBC), the MAC an
//!   HMAC-SHA256 keyed by the PKCS#12 key derivation (SHA-256, 2048 iterations, 8-byte
//!   salt). OpenSSL 3, Java 11.0.12+/17 keytool, NSS (Firefox, Chrome on Linux), macOS 12+
//!   and Windows 10 1709+ read it.
//! - `legacy`: pbeWithSHAAnd3-KeyTripleDES-CBC for both bags and an HMAC-SHA1 MAC (2048
//!   iterations each), for older Windows, macOS and Java imports (OpenSSL 3 reads it only
//!   with `-legacy`, since it refuses 3DES by default).
//!
//! Hand-encoded in DER (the structure is fixed); PBES2 comes from the `pkcs5` crate,
//! 3DES from `des`/`cbc`, digests and HMACs from aws-lc-rs.

use crate::pkcs7::{seq, set, tlv, uint, OID_DATA};
use crate::{Error, Result};
use aws_lc_rs::{digest, hmac};
use pkcs8::der::Encode;

/// Iterations of PBKDF2 and of the MAC key derivation, as OpenSSL 3 uses by default.
pub const ITERATIONS: u32 = 2048;

const OID_ENCRYPTED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06,
];
const OID_SHROUDED_KEY_BAG: &[u8] = &[
    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
];
const OID_CERT_BAG: &[u8] = &[
    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
];
const OID_X509_CERT: &[u8] = &[
    0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01,
];
const OID_FRIENDLY_NAME: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14,
];
const OID_LOCAL_KEY_ID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15,
];
const OID_PBE_SHA1_3DES: &[u8] = &[
    0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03,
];
const OID_SHA1: &[u8] = &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
const NULL: &[u8] = &[0x05, 0x00];

/// How to encrypt a PKCS#12 file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pkcs12Encryption {
    /// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and an HMAC-SHA256 MAC: OpenSSL 3's default.
    #[default]
    Modern,
    /// pbeWithSHAAnd3-KeyTripleDES-CBC and an HMAC-SHA1 MAC, for old importers.
    Legacy,
}

/// Builds a PKCS#12 file: `pkcs8_key` (an unencrypted PKCS#8 private key, DER) with
/// `chain` (DER certificates, the key's own first), under `friendly_name`, encrypted with
/// `passphrase`. The leaf and the key carry the same `localKeyId` (the leaf's SHA-1), as
/// every importer expects; the other certificates go in as the chain.
pub fn build_pkcs12(
    pkcs8_key: &[u8],
    chain: &[Vec<u8>],
    friendly_name: &str,
    passphrase: &str,
    enc: Pkcs12Encryption,
) -> Result<Vec<u8>> {
    let leaf = chain.first().ok_or_else(|| {
        Error::BadCertificate("a PKCS#12 file needs the key's certificate".into())
    })?;
    if !crate::key_matches_cert(&spki_of_pkcs8(pkcs8_key)?, leaf)? {
        return Err(Error::BadKey(
            "the key does not belong to the certificate: give the key.pem issued with it".into(),
        ));
    }
    let key_id = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let key_id = tlv(0x04, key_id.as_ref());
    let name = bmp_string(friendly_name);
    let leaf_attrs = set(&[
        &seq(&[OID_FRIENDLY_NAME, &set(&[&tlv(0x1e, &name)])]),
        &seq(&[OID_LOCAL_KEY_ID, &set(&[&key_id])]),
    ]);
    // The certificates: one bag each, encrypted together.
    let mut bags = Vec::new();
    for (i, cert) in chain.iter().enumerate() {
        let cert_bag = seq(&[OID_X509_CERT, &tlv(0xa0, &tlv(0x04, cert))]);
        let attrs: &[u8] = if i == 0 { &leaf_attrs } else { &[] };
        bags.push(seq(&[OID_CERT_BAG, &tlv(0xa0, &cert_bag), attrs]));
    }
    let cert_safe = tlv(0x30, &bags.concat());
    let (alg, encrypted) = encrypt(&cert_safe, passphrase, enc)?;
    let encrypted_data = seq(&[&uint(0), &seq(&[OID_DATA, &alg, &tlv(0x80, &encrypted)])]);
    let certs_ci = seq(&[OID_ENCRYPTED_DATA, &tlv(0xa0, &encrypted_data)]);
    // The key: a shrouded key bag in a plain data content.
    let (alg, encrypted) = encrypt(pkcs8_key, passphrase, enc)?;
    let epki = seq(&[&alg, &tlv(0x04, &encrypted)]);
    let key_bag = seq(&[OID_SHROUDED_KEY_BAG, &tlv(0xa0, &epki), &leaf_attrs]);
    let key_safe = seq(&[&key_bag]);
    let key_ci = seq(&[OID_DATA, &tlv(0xa0, &tlv(0x04, &key_safe))]);
    let auth_safe = seq(&[&certs_ci, &key_ci]);
    // Integrity: the MAC over the AuthenticatedSafe's encoding.
    let (hash, mac_alg, hash_oid) = match enc {
        Pkcs12Encryption::Modern => (&digest::SHA256, hmac::HMAC_SHA256, OID_SHA256),
        Pkcs12Encryption::Legacy => (
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            OID_SHA1,
        ),
    };
    let mac_salt = random::<8>()?;
    let mac_key = pkcs12_kdf(
        hash,
        3,
        &mac_salt,
        &bmp_password(passphrase),
        ITERATIONS,
        hash.output_len(),
    );
    let tag = hmac::sign(&hmac::Key::new(mac_alg, &mac_key), &auth_safe);
    let mac_data = seq(&[
        &seq(&[&seq(&[hash_oid, NULL]), &tlv(0x04, tag.as_ref())]),
        &tlv(0x04, &mac_salt),
        &uint(u64::from(ITERATIONS)),
    ]);
    Ok(seq(&[
        &uint(3),
        &seq(&[OID_DATA, &tlv(0xa0, &tlv(0x04, &auth_safe))]),
        &mac_data,
    ]))
}

/// Encrypts `plain` as `enc` says: the AlgorithmIdentifier (DER) and the ciphertext.
fn encrypt(plain: &[u8], passphrase: &str, enc: Pkcs12Encryption) -> Result<(Vec<u8>, Vec<u8>)> {
    let failed = |e: &dyn std::fmt::Display| Error::Generation(format!("PKCS#12 encryption: {e}"));
    match enc {
        Pkcs12Encryption::Modern => {
            let salt = random::<16>()?;
            let iv = random::<16>()?;
            let params =
                pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(ITERATIONS, &salt, &iv)
                    .map_err(|e| failed(&e))?;
            let scheme = pkcs8::pkcs5::EncryptionScheme::from(params);
            // PBES2 takes the passphrase as its UTF-8 bytes (as OpenSSL does), not BMP.
            let ct = scheme
                .encrypt(passphrase.as_bytes(), plain)
                .map_err(|e| failed(&e))?;
            Ok((scheme.to_der().map_err(|e| failed(&e))?, ct))
        }
        Pkcs12Encryption::Legacy => {
            use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
            let salt = random::<8>()?;
            let pw = bmp_password(passphrase);
            let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
            let key = pkcs12_kdf(sha1, 1, &salt, &pw, ITERATIONS, 24);
            let iv = pkcs12_kdf(sha1, 2, &salt, &pw, ITERATIONS, 8);
            let ct = cbc::Encryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                .map_err(|e| failed(&e))?
                .encrypt_padded_vec_mut::<Pkcs7>(plain);
            let params = seq(&[&tlv(0x04, &salt), &uint(u64::from(ITERATIONS))]);
            Ok((seq(&[OID_PBE_SHA1_3DES, &params]), ct))
        }
    }
}

/// The public key (SubjectPublicKeyInfo, DER) of an unencrypted PKCS#8 key.
fn spki_of_pkcs8(der: &[u8]) -> Result<Vec<u8>> {
    let pem = crate::der_to_pem("PRIVATE KEY", der);
    Ok(crate::PrivateKey::from_pem(&pem, None)?.public_key_der())
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| Error::Generation("the system random generator failed".into()))?;
    Ok(b)
}

/// UTF-16BE without a terminator: the content of a BMPString.
fn bmp_string(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The passphrase as PKCS#12's key derivation takes it: BMPString with a 0x0000 terminator.
fn bmp_password(s: &str) -> zeroize::Zeroizing<Vec<u8>> {
    let mut v = bmp_string(s);
    v.extend([0, 0]);
    zeroize::Zeroizing::new(v)
}

/// The PKCS#12 key derivation (RFC 7292 Appendix B.2): `n` bytes for purpose `id` (1 key,
/// 2 IV, 3 MAC key).
fn pkcs12_kdf(
    hash: &'static digest::Algorithm,
    id: u8,
    salt: &[u8],
    password: &[u8],
    iterations: u32,
    n: usize,
) -> zeroize::Zeroizing<Vec<u8>> {
    let u = hash.output_len();
    let v = hash.block_len();
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        src.iter().copied().cycle().take(len).collect()
    };
    let d = vec![id; v];
    let mut i_buf = fill(salt);
    i_buf.extend(fill(password));
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(n + u));
    while out.len() < n {
        let mut ctx = digest::Context::new(hash);
        ctx.update(&d);
        ctx.update(&i_buf);
        let mut a = ctx.finish().as_ref().to_vec();
        for _ in 1..iterations {
            a = digest::digest(hash, &a).as_ref().to_vec();
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        let b: Vec<u8> = a.iter().copied().cycle().take(v).collect();
        for block in i_buf.chunks_mut(v) {
            // block = (block + b + 1) mod 2^(8v)
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_matches_a_known_vector() {
        // From the test vectors shared by Bouncy Castle and OpenSSL's pkcs12 KDF tests:
        // SHA-1, ID 1, password "smeg", salt 0A58CF64530D823F, 1 iteration, 24 bytes.
        let pw = bmp_password("smeg");
        let salt = hex::decode("0A58CF64530D823F").unwrap();
        let key = pkcs12_kdf(&digest::SHA1_FOR_LEGACY_USE_ONLY, 1, &salt, &pw, 1, 24);
        assert_eq!(
            hex::encode_upper(&*key),
            "8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3"
        );
        let iv = pkcs12_kdf(&digest::SHA1_FOR_LEGACY_USE_ONLY, 2, &salt, &pw, 1, 8);
        assert_eq!(hex::encode_upper(&*iv), "79993DFE048D3B76");
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let ca_key = crate::PrivateKey::generate(crate::KeyType::P256).unwrap();
        let other = crate::PrivateKey::generate(crate::KeyType::P256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        let cert = params
            .self_signed(ca_key.key_pair())
            .unwrap()
            .der()
            .to_vec();
        let pk8 = other.key_pair().serialize_der();
        let e = build_pkcs12(
            &pk8,
            std::slice::from_ref(&cert),
            "a",
            "pw",
            Pkcs12Encryption::Modern,
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        let ok = ca_key.key_pair().serialize_der();
        for enc in [Pkcs12Encryption::Modern, Pkcs12Encryption::Legacy] {
            let p12 = build_pkcs12(&ok, std::slice::from_ref(&cert), "a", "pw", enc).unwrap();
            assert_eq!(p12[0], 0x30);
        }
    }
}
