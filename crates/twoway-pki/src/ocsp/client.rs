//! The client side of OCSP (RFC 6960, profiled by RFC 5019), sans-IO: the request for one
//! certificate and the verification of a responder's answer.
//!
//! [`Target`] holds a certificate and its issuer; [`Target::request`] is the DER
//! `OCSPRequest` (a SHA-1 CertID, no nonce: RFC 5019, so responders can answer from a
//! cache); [`Target::verify`] reads an `OCSPResponse` with the bounded DER reader of this
//! module and accepts it only when it is successful, answers for this very certificate,
//! is signed by the issuer or by a responder certificate the issuer delegated
//! (`id-kp-OCSPSigning`, valid now), and is current (`thisUpdate` not in the future and
//! `nextUpdate` not past, each with `skew`). Signatures are verified with aws-lc-rs.

use super::{expect, tlv, w, OID_BASIC, OID_SHA1, OID_SHA256};
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// At most this many certificates in a response, or single answers, are looked at.
const MAX_ITEMS: usize = 16;

/// A certificate's status as the responder gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Good,
    /// Revoked at that time (Unix seconds), with the CRL reason code if one was given.
    Revoked {
        /// When.
        at: i64,
        /// The `CRLReason` code.
        reason: Option<u8>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// A verified answer about one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The certificate's status.
    pub status: Status,
    /// When the status was known to be correct (Unix seconds).
    pub this_update: i64,
    /// When newer information will be available (Unix seconds), if the responder said.
    pub next_update: Option<i64>,
}

/// Why an answer was not accepted. [`Problem::label`] is a stable short name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Not a DER `OCSPResponse` of the basic type.
    #[error("not a valid OCSP response: {0}")]
    Malformed(String),
    /// The responder answered with an error status (1 malformed request, 2 internal
    /// error, 3 try later, 5 signature required, 6 unauthorized).
    #[error("the responder refused the request (OCSPResponseStatus {0})")]
    Refused(u8),
    /// The answer is about other certificates only.
    #[error("the response does not answer for this certificate")]
    WrongCertificate,
    /// `nextUpdate` is past (beyond the allowed skew).
    #[error("the response expired at {next_update} (Unix time)")]
    Expired {
        /// Its nextUpdate.
        next_update: i64,
    },
    /// `thisUpdate` is in the future (beyond the allowed skew).
    #[error("the response is dated in the future ({this_update}, Unix time)")]
    NotYetValid {
        /// Its thisUpdate.
        this_update: i64,
    },
    /// The signature does not verify, or the signer is neither the issuer nor a responder
    /// it delegated.
    #[error("the response signature is not acceptable: {0}")]
    BadSignature(String),
}

impl Problem {
    /// `malformed`, `refused`, `wrong_certificate`, `expired`, `not_yet_valid` or
    /// `bad_signature`.
    pub fn label(&self) -> &'static str {
        match self {
            Problem::Malformed(_) => "malformed",
            Problem::Refused(_) => "refused",
            Problem::WrongCertificate => "wrong_certificate",
            Problem::Expired { .. } => "expired",
            Problem::NotYetValid { .. } => "not_yet_valid",
            Problem::BadSignature(_) => "bad_signature",
        }
    }
}

fn malformed(e: Error) -> Problem {
    match e {
        Error::BadOcsp(m) => Problem::Malformed(m),
        other => Problem::Malformed(other.to_string()),
    }
}

/// The OCSP responder URL of a certificate's Authority Information Access extension
/// (the first `http://` one), if any.
pub fn responder_url(cert_der: &[u8]) -> Option<String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for d in aia.iter() {
                if d.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP {
                    if let GeneralName::URI(u) = d.access_location {
                        if u.starts_with("http://") {
                            return Some(u.to_string());
                        }
                    }
                }
            }
        }
    }
    None
}

/// A certificate to ask about, with its issuer.
#[derive(Clone, Debug)]
pub struct Target {
    issuer_der: Vec<u8>,
    serial: Vec<u8>,
    sha1_name: Vec<u8>,
    sha1_key: Vec<u8>,
    sha256_name: Vec<u8>,
    sha256_key: Vec<u8>,
}

fn sha1(d: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, d)
        .as_ref()
        .to_vec()
}

fn strip_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == 0).count();
    &s[n.min(s.len().saturating_sub(1))..]
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| Error::BadCertificate(e.to_string()))
}

impl Target {
    /// `cert_der` as issued by `issuer_der`: the issuer's subject must be the certificate's
    /// issuer and its key must verify the certificate's signature.
    pub fn new(cert_der: &[u8], issuer_der: &[u8]) -> Result<Self> {
        let cert = parse_cert(cert_der)?;
        let issuer = parse_cert(issuer_der)?;
        if cert.issuer().as_raw() != issuer.subject().as_raw()
            || cert.verify_signature(Some(issuer.public_key())).is_err()
        {
            return Err(Error::BadSignature);
        }
        let name = issuer.subject().as_raw();
        let key = &issuer.public_key().subject_public_key.data;
        Ok(Target {
            issuer_der: issuer_der.to_vec(),
            serial: strip_zeros(cert.raw_serial()).to_vec(),
            sha1_name: sha1(name),
            sha1_key: sha1(key),
            sha256_name: Sha256::digest(name).to_vec(),
            sha256_key: Sha256::digest(key).to_vec(),
        })
    }

    /// The certificate's serial number (its INTEGER's bytes, without leading zeros).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The DER `OCSPRequest` for this certificate: one SHA-1 CertID, no nonce, unsigned.
    pub fn request(&self) -> Vec<u8> {
        let alg = w(0x30, &[w(0x06, OID_SHA1), vec![0x05, 0x00]].concat());
        let mut serial = self.serial.clone();
        if serial.first().is_some_and(|b| b & 0x80 != 0) {
            serial.insert(0, 0);
        }
        let cid = w(
            0x30,
            &[
                alg,
                w(0x04, &self.sha1_name),
                w(0x04, &self.sha1_key),
                w(0x02, &serial),
            ]
            .concat(),
        );
        let request = w(0x30, &cid);
        let list = w(0x30, &request);
        let tbs = w(0x30, &list);
        w(0x30, &tbs)
    }

    fn names_us(&self, oid: &[u8], name_hash: &[u8], key_hash: &[u8], serial: &[u8]) -> bool {
        let hashes = if oid == OID_SHA1 {
            (&self.sha1_name, &self.sha1_key)
        } else if oid == OID_SHA256 {
            (&self.sha256_name, &self.sha256_key)
        } else {
            return false;
        };
        hashes.0 == name_hash && hashes.1 == key_hash && strip_zeros(serial) == self.serial
    }

    /// Verifies `response` (DER) at `now` (Unix seconds), allowing `skew` seconds of clock
    /// difference, and returns the certificate's status.
    pub fn verify(&self, response: &[u8], now: i64, skew: i64) -> Result<Answer, Problem> {
        let (outer, _, rest) =
            expect(response, 0x30, "OCSPResponse SEQUENCE").map_err(malformed)?;
        if !rest.is_empty() {
            return Err(Problem::Malformed(
                "trailing data after the response".into(),
            ));
        }
        let (status, _, r) = expect(outer, 0x0a, "responseStatus").map_err(malformed)?;
        match status {
            [0] => {}
            [s] => return Err(Problem::Refused(*s)),
            _ => return Err(Problem::Malformed("bad responseStatus".into())),
        }
        let (rb, _, _) = expect(r, 0xa0, "responseBytes").map_err(malformed)?;
        let (rb, _, _) = expect(rb, 0x30, "ResponseBytes SEQUENCE").map_err(malformed)?;
        let (oid, _, r) = expect(rb, 0x06, "responseType").map_err(malformed)?;
        if oid != OID_BASIC {
            return Err(Problem::Malformed("not a basic OCSP response".into()));
        }
        let (basic, _, _) = expect(r, 0x04, "response OCTET STRING").map_err(malformed)?;
        let (basic, _, _) = expect(basic, 0x30, "BasicOCSPResponse").map_err(malformed)?;
        let (data, tbs_raw, r) = expect(basic, 0x30, "tbsResponseData").map_err(malformed)?;
        let (_, alg_raw, r) = expect(r, 0x30, "signatureAlgorithm").map_err(malformed)?;
        let (_, sig_raw, r) = expect(r, 0x03, "signature").map_err(malformed)?;
        let mut certs = Vec::new();
        if r.first() == Some(&0xa0) {
            let (c, _, _) = expect(r, 0xa0, "certs").map_err(malformed)?;
            let (mut list, _, _) = expect(c, 0x30, "certs SEQUENCE").map_err(malformed)?;
            while !list.is_empty() && certs.len() < MAX_ITEMS {
                let (_, _, whole, next) = tlv(list).map_err(malformed)?;
                certs.push(whole);
                list = next;
            }
        }

        // ResponseData
        let mut d = data;
        if d.first() == Some(&0xa0) {
            d = tlv(d).map_err(malformed)?.3;
        }
        let (tag, rid, _, d) = tlv(d).map_err(malformed)?;
        let responder = match tag {
            0xa1 => ResponderId::Name(tlv(rid).map_err(malformed)?.2),
            0xa2 => ResponderId::Key(expect(rid, 0x04, "KeyHash").map_err(malformed)?.0),
            _ => return Err(Problem::Malformed("bad responderID".into())),
        };
        let (_, _, d) = expect(d, 0x18, "producedAt").map_err(malformed)?;
        let (mut list, _, _) = expect(d, 0x30, "responses").map_err(malformed)?;
        let mut ours = None;
        let mut seen = 0;
        while !list.is_empty() && seen < MAX_ITEMS {
            seen += 1;
            let (single, _, next) = expect(list, 0x30, "SingleResponse").map_err(malformed)?;
            list = next;
            let answer = single_response(single).map_err(malformed)?;
            if self.names_us(answer.0, answer.1, answer.2, answer.3) {
                ours = Some(answer.4);
                break;
            }
        }
        let answer = ours.ok_or(Problem::WrongCertificate)?;

        self.check_signature(&responder, &certs, tbs_raw, alg_raw, sig_raw, now)?;

        if answer.this_update > now.saturating_add(skew) {
            return Err(Problem::NotYetValid {
                this_update: answer.this_update,
            });
        }
        if let Some(next) = answer.next_update {
            if next.saturating_add(skew) < now {
                return Err(Problem::Expired { next_update: next });
            }
        }
        Ok(answer)
    }

    fn check_signature(
        &self,
        responder: &ResponderId<'_>,
        certs: &[&[u8]],
        tbs: &[u8],
        alg_raw: &[u8],
        sig_raw: &[u8],
        now: i64,
    ) -> Result<(), Problem> {
        let bad = |m: &str| Problem::BadSignature(m.to_string());
        let issuer = parse_cert(&self.issuer_der).map_err(|e| bad(&e.to_string()))?;
        let (_, alg) = x509_parser::x509::AlgorithmIdentifier::from_der(alg_raw)
            .map_err(|_| bad("unreadable signature algorithm"))?;
        let (_, sig) = x509_parser::asn1_rs::BitString::from_der(sig_raw)
            .map_err(|_| bad("unreadable signature"))?;
        let verify = |spki| x509_parser::verify::verify_signature(spki, &alg, &sig, tbs);
        if responder.is(&issuer) {
            return verify(issuer.public_key())
                .map_err(|_| bad("the signature does not verify with the issuer's key"));
        }
        let Some(delegate) = certs
            .iter()
            .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
            .find(|c| responder.is(c))
        else {
            return Err(bad(
                "signed by neither the issuer nor a responder certificate in the response",
            ));
        };
        if delegate.issuer().as_raw() != issuer.subject().as_raw()
            || delegate
                .verify_signature(Some(issuer.public_key()))
                .is_err()
        {
            return Err(bad(
                "the responder certificate was not issued by the issuer",
            ));
        }
        let ocsp_signing = matches!(
            delegate.extended_key_usage(),
            Ok(Some(eku)) if eku.value.ocsp_signing
        );
        if !ocsp_signing {
            return Err(bad("the responder certificate lacks id-kp-OCSPSigning"));
        }
        let v = delegate.validity();
        if v.not_before.timestamp() > now || v.not_after.timestamp() < now {
            return Err(bad("the responder certificate is not valid now"));
        }
        verify(delegate.public_key())
            .map_err(|_| bad("the signature does not verify with the responder's key"))
    }
}

/// How a response names its signer.
enum ResponderId<'a> {
    /// The signer's subject (the Name's whole TLV).
    Name(&'a [u8]),
    /// SHA-1 of the signer's public key bits.
    Key(&'a [u8]),
}

impl ResponderId<'_> {
    fn is(&self, cert: &X509Certificate<'_>) -> bool {
        match self {
            ResponderId::Name(n) => *n == cert.subject().as_raw(),
            ResponderId::Key(k) => *k == sha1(&cert.public_key().subject_public_key.data),
        }
    }
}

/// (hash OID, issuerNameHash, issuerKeyHash, serial, answer) of a `SingleResponse`.
type Single<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8], Answer);

fn single_response(single: &[u8]) -> Result<Single<'_>> {
    let (cid, _, r) = expect(single, 0x30, "CertID")?;
    let (alg, _, c) = expect(cid, 0x30, "hashAlgorithm")?;
    let (oid, _, _) = expect(alg, 0x06, "hash OID")?;
    let (name_hash, _, c) = expect(c, 0x04, "issuerNameHash")?;
    let (key_hash, _, c) = expect(c, 0x04, "issuerKeyHash")?;
    let (serial, _, _) = expect(c, 0x02, "serialNumber")?;
    let (tag, content, _, r) = tlv(r)?;
    let status = match tag {
        0x80 => Status::Good,
        0x82 => Status::Unknown,
        0xa1 => {
            let (t, _, rest) = expect(content, 0x18, "revocationTime")?;
            let mut reason = None;
            if rest.first() == Some(&0xa0) {
                let (e, _, _) = expect(rest, 0xa0, "revocationReason")?;
                let (code, _, _) = expect(e, 0x0a, "CRLReason")?;
                reason = code.first().copied();
            }
            Status::Revoked {
                at: generalized_time(t)?,
                reason,
            }
        }
        _ => return Err(Error::BadOcsp("bad certStatus".into())),
    };
    let (this, _, r) = expect(r, 0x18, "thisUpdate")?;
    let mut next_update = None;
    if r.first() == Some(&0xa0) {
        let (n, _, _) = expect(r, 0xa0, "nextUpdate")?;
        let (t, _, _) = expect(n, 0x18, "nextUpdate time")?;
        next_update = Some(generalized_time(t)?);
    }
    Ok((
        oid,
        name_hash,
        key_hash,
        serial,
        Answer {
            status,
            this_update: generalized_time(this)?,
            next_update,
        },
    ))
}

/// `YYYYMMDDHHMMSS[.fff]Z` as Unix seconds.
fn generalized_time(t: &[u8]) -> Result<i64> {
    let bad = || Error::BadOcsp("bad GeneralizedTime".into());
    if t.len() < 15 || t.last() != Some(&b'Z') || !t[..14].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let frac = &t[14..t.len() - 1];
    if !frac.is_empty()
        && (frac[0] != b'.' || frac.len() < 2 || !frac[1..].iter().all(u8::is_ascii_digit))
    {
        return Err(bad());
    }
    let n = |a: usize, b: usize| -> u32 {
        t[a..b]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let month = time::Month::try_from(n(4, 6) as u8).map_err(|_| bad())?;
    let date =
        time::Date::from_calendar_date(n(0, 4) as i32, month, n(6, 8) as u8).map_err(|_| bad())?;
    let clock = time::Time::from_hms(n(8, 10) as u8, n(10, 12) as u8, n(12, 14) as u8)
        .map_err(|_| bad())?;
    Ok(time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::super::{build_response, OcspStatus, SingleResponse};
    use super::*;
    use crate::{KeyType, PrivateKey, Signer};
    use time::OffsetDateTime;

    struct Fixture {
        issuer_key: rcgen::KeyPair,
        issuer: rcgen::Certificate,
        issuer_params: rcgen::CertificateParams,
        leaf: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let issuer_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "OCSP test CA");
        let issuer = p.self_signed(&issuer_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut lp = rcgen::CertificateParams::new(vec!["leaf.test".to_string()]).unwrap();
        lp.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x81, 2, 3]));
        let leaf = lp
            .signed_by(&leaf_key, &rcgen::Issuer::from_params(&p, &issuer_key))
            .unwrap()
            .der()
            .to_vec();
        Fixture {
            issuer_key,
            issuer,
            issuer_params: p,
            leaf,
        }
    }

    /// An rcgen key pair as a [`Signer`].
    struct RcgenSigner<'a>(&'a rcgen::KeyPair);
    impl Signer for RcgenSigner<'_> {
        fn key_type(&self) -> KeyType {
            KeyType::P256
        }
        fn public_key_der(&self) -> Vec<u8> {
            rcgen::PublicKeyData::subject_public_key_info(self.0)
        }
        fn sign(&self, msg: &[u8]) -> crate::Result<Vec<u8>> {
            let pk = PrivateKey::from_pem(&self.0.serialize_pem(), None).unwrap();
            pk.sign(msg)
        }
    }

    fn respond(
        signer: &dyn Signer,
        chain: &[&[u8]],
        target: &Target,
        status: OcspStatus,
        this: OffsetDateTime,
        next: Option<OffsetDateTime>,
    ) -> Vec<u8> {
        // the CertID as the request has it
        let req = target.request();
        let cid = super::super::parse_request(&req).unwrap().cert_ids[0]
            .raw
            .clone();
        build_response(
            signer,
            chain,
            this,
            &[SingleResponse {
                cert_id_raw: cid,
                status,
                this_update: this,
                next_update: next,
            }],
            None,
        )
        .unwrap()
    }

    #[test]
    fn accepts_the_issuers_answer_and_refuses_tampering() {
        let f = fixture();
        let t = Target::new(&f.leaf, f.issuer.der()).unwrap();
        let req = super::super::parse_request(&t.request()).unwrap();
        assert_eq!(req.cert_ids[0].serial_hex, "810203");
        let now = OffsetDateTime::now_utc();
        let signer = RcgenSigner(&f.issuer_key);
        let good = respond(
            &signer,
            &[],
            &t,
            OcspStatus::Good,
            now,
            Some(now + time::Duration::hours(1)),
        );
        let n = now.unix_timestamp();
        let a = t.verify(&good, n, 300).unwrap();
        assert_eq!(a.status, Status::Good);
        // expired, future-dated
        assert!(matches!(
            t.verify(&good, n + 7200, 300),
            Err(Problem::Expired { .. })
        ));
        assert!(matches!(
            t.verify(&good, n - 7200, 300),
            Err(Problem::NotYetValid { .. })
        ));
        // a flipped byte anywhere never panics and never yields a different good answer
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            if let Ok(a) = t.verify(&b, n, 300) {
                assert_eq!(a.status, Status::Good, "byte {i}");
            }
        }
        for i in 0..good.len() {
            assert!(t.verify(&good[..i], n, 300).is_err());
        }
        // another key (same name: a look-alike issuer) does not verify
        let other = rcgen::KeyPair::generate().unwrap();
        let forged = respond(
            &RcgenSigner(&other),
            &[],
            &t,
            OcspStatus::Good,
            now,
            Some(now + time::Duration::hours(1)),
        );
        assert!(matches!(
            t.verify(&forged, n, 300),
            Err(Problem::BadSignature(_))
        ));
        let _ = f.issuer_params;
    }

    #[test]
    fn delegated_responder_needs_ocsp_signing_from_the_issuer() {
        let f = fixture();
        let t = Target::new(&f.leaf, f.issuer.der()).unwrap();
        let issuer = rcgen::Issuer::from_params(&f.issuer_params, &f.issuer_key);
        let now = OffsetDateTime::now_utc();
        let n = now.unix_timestamp();
        let mk = |eku: Vec<rcgen::ExtendedKeyUsagePurpose>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "responder");
            p.extended_key_usages = eku;
            let cert = p.signed_by(&key, &issuer).unwrap().der().to_vec();
            (key, cert)
        };
        let (key, cert) = mk(vec![rcgen::ExtendedKeyUsagePurpose::OcspSigning]);
        let revoked = OcspStatus::Revoked {
            at: now,
            reason: crate::Reason::KeyCompromise,
        };
        let next = Some(now + time::Duration::hours(1));
        let r = respond(&RcgenSigner(&key), &[&cert], &t, revoked, now, next);
        let a = t.verify(&r, n, 300).unwrap();
        assert!(matches!(
            a.status,
            Status::Revoked {
                reason: Some(1),
                ..
            }
        ));
        // without the EKU
        let (key, cert) = mk(vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]);
        let r = respond(
            &RcgenSigner(&key),
            &[&cert],
            &t,
            OcspStatus::Good,
            now,
            next,
        );
        assert!(matches!(
            t.verify(&r, n, 300),
            Err(Problem::BadSignature(_))
        ));
        // an answer about another certificate
        let other = fixture();
        let t2 = Target::new(&other.leaf, other.issuer.der()).unwrap();
        let r = respond(
            &RcgenSigner(&other.issuer_key),
            &[],
            &t2,
            OcspStatus::Good,
            now,
            next,
        );
        assert_eq!(t.verify(&r, n, 300), Err(Problem::WrongCertificate));
        assert_eq!(
            t.verify(&[0x30, 0x03, 0x0a, 0x01, 0x06], n, 300),
            Err(Problem::Refused(6))
        );
    }

    #[test]
    fn generalized_times() {
        assert_eq!(generalized_time(b"19700101000000Z").unwrap(), 0);
        assert_eq!(generalized_time(b"20240229120000.5Z").unwrap(), 1709208000);
        for bad in [
            &b"2024022912000Z"[..],
            b"20241301000000Z",
            b"20240101000000",
            b"2024010100000aZ",
        ] {
            assert!(generalized_time(bad).is_err());
        }
    }
}
