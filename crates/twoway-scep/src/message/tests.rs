use super::*;

/// An RSA 2048 key and a self-signed certificate for `cn`, as an `Ra` (the test's RA, or
/// a client signing its request).
fn party(cn: &str) -> Ra {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut p = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = p.self_signed(&key).unwrap();
    Ra::new(&key.serialize_der(), cert.der()).unwrap()
}

const NOW: i64 = 1_795_746_600; // 2026-11-27T02:30:00Z

struct Req<'a> {
    cipher: Cipher,
    message_type: &'a str,
    signing_time: &'a [u8],
    digest_of: Option<&'a [u8]>,
}

impl Default for Req<'_> {
    fn default() -> Self {
        Req {
            cipher: Cipher::Aes128,
            message_type: "19",
            signing_time: b"261127023000Z",
            digest_of: None,
        }
    }
}

/// A pkiMessage from `client` encrypted to `to` (DER certificate), as a client makes it.
fn request(client: &Ra, to: &[u8], r: Req<'_>) -> Vec<u8> {
    let env = envelope(b"the CSR", to, r.cipher).unwrap();
    let digest = Digest::Sha256.compute(r.digest_of.unwrap_or(&env));
    let ps = |s: &[u8]| tlv(tag::PRINTABLE_STRING, s);
    let attrs = vec![
        attribute(oids::ATTR_CONTENT_TYPE, &oid(oids::DATA)),
        attribute(oids::ATTR_MESSAGE_DIGEST, &tlv(tag::OCTET_STRING, &digest)),
        attribute(oids::ATTR_SIGNING_TIME, &tlv(0x17, r.signing_time)),
        attribute(oids::MESSAGE_TYPE, &ps(r.message_type.as_bytes())),
        attribute(oids::TRANSACTION_ID, &ps(b"tid+/=")),
        attribute(oids::SENDER_NONCE, &tlv(tag::OCTET_STRING, &[7u8; 16])),
    ];
    signed_message(client, attrs, Some(&env)).unwrap()
}

fn policy(allow_legacy: bool) -> Policy {
    Policy {
        allow_legacy,
        now: NOW,
    }
}

fn refused(ra: &Ra, msg: &[u8], allow_legacy: bool) -> FailInfo {
    match read(msg).unwrap().open(&[ra], policy(allow_legacy)) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(r) => r.fail_info,
    }
}

#[test]
fn requests_open_with_aes_and_legacy_only_when_allowed() {
    let (ra, client) = (party("ra"), party("device"));
    for cipher in [Cipher::Aes128, Cipher::Aes256] {
        let msg = request(
            &client,
            ra.cert_der(),
            Req {
                cipher,
                ..Default::default()
            },
        );
        let u = read(&msg).unwrap();
        assert_eq!(u.header().transaction_id, "tid+/=");
        assert_eq!(u.header().signer_cert, client.cert_der());
        let r = u.open(&[&ra], policy(false)).unwrap();
        assert_eq!((r.content.as_slice(), r.cipher), (&b"the CSR"[..], cipher));
        assert_eq!(r.header.message_type, MessageType::PkcsReq);
        assert!(r.legacy().is_empty());
    }
    for cipher in [Cipher::Des, Cipher::Des3] {
        let msg = request(
            &client,
            ra.cert_der(),
            Req {
                cipher,
                ..Default::default()
            },
        );
        assert_eq!(refused(&ra, &msg, false), FailInfo::BadAlg);
        let r = read(&msg).unwrap().open(&[&ra], policy(true)).unwrap();
        assert_eq!(r.content, b"the CSR");
        assert_eq!(r.legacy(), vec![cipher.name()]);
    }
}

#[test]
fn bad_requests_get_their_fail_info() {
    let (ra, other, client) = (party("ra"), party("other"), party("device"));
    // encrypted to another certificate
    let msg = request(&client, other.cert_der(), Req::default());
    assert_eq!(refused(&ra, &msg, false), FailInfo::BadMessageCheck);
    // … which the previous RA still opens
    assert!(read(&msg)
        .unwrap()
        .open(&[&ra, &other], policy(false))
        .is_ok());
    // a messageDigest of other content
    let msg = request(
        &client,
        ra.cert_der(),
        Req {
            digest_of: Some(b"x"),
            ..Default::default()
        },
    );
    assert_eq!(refused(&ra, &msg, false), FailInfo::BadMessageCheck);
    // a signature that does not verify
    let mut msg = request(&client, ra.cert_der(), Req::default());
    let n = msg.len();
    msg[n - 10] ^= 0x01;
    assert_eq!(refused(&ra, &msg, false), FailInfo::BadMessageCheck);
    // a signingTime hours away from the CA's clock
    let msg = request(
        &client,
        ra.cert_der(),
        Req {
            signing_time: b"261127063000Z",
            ..Default::default()
        },
    );
    assert_eq!(refused(&ra, &msg, false), FailInfo::BadTime);
    // a messageType not served
    let msg = request(
        &client,
        ra.cert_der(),
        Req {
            message_type: "22",
            ..Default::default()
        },
    );
    assert_eq!(refused(&ra, &msg, false), FailInfo::BadRequest);
}

#[test]
fn cert_reps_carry_status_nonces_and_the_certificates_encrypted_to_the_requester() {
    let (ra, client) = (party("ra"), party("device"));
    let msg = request(&client, ra.cert_der(), Req::default());
    let req = read(&msg).unwrap().open(&[&ra], policy(false)).unwrap();
    let certs: [&[u8]; 2] = [client.cert_der(), ra.cert_der()];
    let rep = cert_rep(
        &ra,
        &req.header,
        Reply::Success {
            certs: &certs,
            cipher: req.cipher,
        },
    )
    .unwrap();
    let u = read(&rep).unwrap();
    assert_eq!(u.header().message_type, MessageType::CertRep);
    assert_eq!(u.header().transaction_id, "tid+/=");
    assert_eq!(u.header().signer_cert, ra.cert_der());
    let (cipher, inner) = open_envelope(u.content.unwrap(), &[&client], policy(false)).unwrap();
    assert_eq!(cipher, Cipher::Aes128);
    assert_eq!(inner, certs_only(&certs));
    let fail = cert_rep(
        &ra,
        &req.header,
        Reply::Failure {
            fail_info: FailInfo::BadRequest,
            text: "why",
        },
    )
    .unwrap();
    let u = read(&fail).unwrap();
    assert!(u.content.is_none());
    let text = String::from_utf8_lossy(&fail);
    assert!(text.contains("why"));
}

#[test]
fn times() {
    assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
    assert_eq!(parse_time(0x17, b"261127023000Z"), Some(NOW));
    assert_eq!(parse_time(0x18, b"20261127023000Z"), Some(NOW));
    assert_eq!(parse_time(0x17, b"2611270230Z"), None);
    assert_eq!(parse_time(0x18, b"2026112702300xZ"), None);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for input in [
        &b""[..],
        b"hello",
        &[0x30, 0x03, 0x06, 0x01, 0x00],
        &[0x30, 0x82, 0xff, 0xff, 0x00],
    ] {
        assert!(read(input).is_err());
    }
    let degenerate = certs_only(&[]);
    assert!(matches!(read(&degenerate), Err(Error::Malformed(_))));
}
