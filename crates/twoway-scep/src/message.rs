//! Reading a client's pkiMessage and building the CA's answers.

use crate::der::{self, cons, oid, seq, set_of, small_int, tag, tlv, Reader};
use crate::{oids, Error};
use aws_lc_rs::{rand, rsa, signature};
use x509_parser::prelude::{FromDer, X509Certificate};

/// How far a request's `signingTime` may be from the CA's clock (failInfo badTime).
pub const MAX_CLOCK_SKEW_SECS: i64 = 3600;

/// A message digest algorithm of a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// SHA-1: legacy, refused unless [`Policy::allow_legacy`].
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Digest {
    fn from_oid(o: &[u8]) -> Option<Self> {
        match o {
            oids::SHA1 => Some(Digest::Sha1),
            oids::SHA256 => Some(Digest::Sha256),
            oids::SHA384 => Some(Digest::Sha384),
            oids::SHA512 => Some(Digest::Sha512),
            _ => None,
        }
    }

    /// True for SHA-1.
    pub fn is_legacy(self) -> bool {
        self == Digest::Sha1
    }

    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "sha1",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha512 => "sha512",
        }
    }

    fn compute(self, data: &[u8]) -> Vec<u8> {
        use aws_lc_rs::digest as d;
        let alg = match self {
            Digest::Sha1 => &d::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &d::SHA256,
            Digest::Sha384 => &d::SHA384,
            Digest::Sha512 => &d::SHA512,
        };
        d::digest(alg, data).as_ref().to_vec()
    }
}

/// A content-encryption algorithm of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// DES-CBC: legacy, refused unless [`Policy::allow_legacy`].
    Des,
    /// Triple DES (EDE3) CBC: legacy, refused unless [`Policy::allow_legacy`].
    Des3,
    /// AES-128-CBC.
    Aes128,
    /// AES-192-CBC.
    Aes192,
    /// AES-256-CBC.
    Aes256,
}

impl Cipher {
    fn from_oid(o: &[u8]) -> Option<Self> {
        match o {
            oids::DES_CBC => Some(Cipher::Des),
            oids::DES_EDE3_CBC => Some(Cipher::Des3),
            oids::AES128_CBC => Some(Cipher::Aes128),
            oids::AES192_CBC => Some(Cipher::Aes192),
            oids::AES256_CBC => Some(Cipher::Aes256),
            _ => None,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            Cipher::Des => oids::DES_CBC,
            Cipher::Des3 => oids::DES_EDE3_CBC,
            Cipher::Aes128 => oids::AES128_CBC,
            Cipher::Aes192 => oids::AES192_CBC,
            Cipher::Aes256 => oids::AES256_CBC,
        }
    }

    /// True for DES and 3DES.
    pub fn is_legacy(self) -> bool {
        matches!(self, Cipher::Des | Cipher::Des3)
    }

    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Des => "des",
            Cipher::Des3 => "3des",
            Cipher::Aes128 => "aes128",
            Cipher::Aes192 => "aes192",
            Cipher::Aes256 => "aes256",
        }
    }

    fn key_len(self) -> usize {
        match self {
            Cipher::Des => 8,
            Cipher::Des3 | Cipher::Aes192 => 24,
            Cipher::Aes128 => 16,
            Cipher::Aes256 => 32,
        }
    }

    fn iv_len(self) -> usize {
        if self.is_legacy() {
            8
        } else {
            16
        }
    }

    fn decrypt(self, key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
        use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
        match self {
            Cipher::Des => cbc::Decryptor::<des::Des>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_vec_mut::<Pkcs7>(ct)
                .ok(),
            Cipher::Des3 => cbc::Decryptor::<des::TdesEde3>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_vec_mut::<Pkcs7>(ct)
                .ok(),
            _ => {
                use aws_lc_rs::cipher::{
                    DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
                };
                let iv: [u8; 16] = iv.try_into().ok()?;
                let k = UnboundCipherKey::new(self.aes()?, key).ok()?;
                let k = PaddedBlockDecryptingKey::cbc_pkcs7(k).ok()?;
                let mut buf = ct.to_vec();
                let ctx = DecryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from(iv));
                let out = k.decrypt(&mut buf, ctx).ok()?;
                Some(out.to_vec())
            }
        }
    }

    fn encrypt(self, key: &[u8], iv: &[u8], pt: &[u8]) -> Result<Vec<u8>, Error> {
        use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
        let fail = || Error::Crypto("content encryption");
        match self {
            Cipher::Des => Ok(cbc::Encryptor::<des::Des>::new_from_slices(key, iv)
                .map_err(|_| fail())?
                .encrypt_padded_vec_mut::<Pkcs7>(pt)),
            Cipher::Des3 => Ok(cbc::Encryptor::<des::TdesEde3>::new_from_slices(key, iv)
                .map_err(|_| fail())?
                .encrypt_padded_vec_mut::<Pkcs7>(pt)),
            _ => {
                use aws_lc_rs::cipher::{
                    EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey,
                };
                let iv: [u8; 16] = iv.try_into().map_err(|_| fail())?;
                let k =
                    UnboundCipherKey::new(self.aes().ok_or_else(fail)?, key).map_err(|_| fail())?;
                let k = PaddedBlockEncryptingKey::cbc_pkcs7(k).map_err(|_| fail())?;
                let mut buf = pt.to_vec();
                let ctx = EncryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from(iv));
                k.less_safe_encrypt(&mut buf, ctx).map_err(|_| fail())?;
                Ok(buf)
            }
        }
    }

    fn aes(self) -> Option<&'static aws_lc_rs::cipher::Algorithm> {
        match self {
            Cipher::Aes128 => Some(&aws_lc_rs::cipher::AES_128),
            Cipher::Aes192 => Some(&aws_lc_rs::cipher::AES_192),
            Cipher::Aes256 => Some(&aws_lc_rs::cipher::AES_256),
            _ => None,
        }
    }
}

/// What the CA accepts.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Accept DES, 3DES and SHA-1 (`[scep] allow_legacy`); refused with badAlg otherwise.
    pub allow_legacy: bool,
    /// The CA's clock (Unix seconds), against which `signingTime` is judged.
    pub now: i64,
}

/// A SCEP messageType.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// 3: the CA's answer.
    CertRep,
    /// 17: renewal, signed with the current certificate.
    RenewalReq,
    /// 18: update (SCEP drafts), treated as renewal.
    UpdateReq,
    /// 19: first enrollment, with a challenge password.
    PkcsReq,
    /// 20: GetCertInitial (CertPoll): polling a pending request.
    CertPoll,
    /// 21: GetCert.
    GetCert,
    /// 22: GetCRL.
    GetCrl,
    /// Any other value.
    Other(String),
}

impl MessageType {
    fn parse(s: &str) -> Self {
        match s.trim() {
            "3" => MessageType::CertRep,
            "17" => MessageType::RenewalReq,
            "18" => MessageType::UpdateReq,
            "19" => MessageType::PkcsReq,
            "20" => MessageType::CertPoll,
            "21" => MessageType::GetCert,
            "22" => MessageType::GetCrl,
            other => MessageType::Other(other.chars().take(16).collect()),
        }
    }

    /// The name used in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageType::CertRep => "CertRep",
            MessageType::RenewalReq => "RenewalReq",
            MessageType::UpdateReq => "UpdateReq",
            MessageType::PkcsReq => "PKCSReq",
            MessageType::CertPoll => "GetCertInitial",
            MessageType::GetCert => "GetCert",
            MessageType::GetCrl => "GetCRL",
            MessageType::Other(_) => "unknown",
        }
    }
}

/// A SCEP failInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailInfo {
    /// 0: unrecognized or unsupported algorithm.
    BadAlg,
    /// 1: integrity check failed (signature, digest, decryption, wrong recipient).
    BadMessageCheck,
    /// 2: transaction not permitted or supported.
    BadRequest,
    /// 3: signingTime too far from the CA's clock.
    BadTime,
    /// 4: no certificate matches the criteria.
    BadCertId,
}

impl FailInfo {
    fn code(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "0",
            FailInfo::BadMessageCheck => "1",
            FailInfo::BadRequest => "2",
            FailInfo::BadTime => "3",
            FailInfo::BadCertId => "4",
        }
    }

    /// The RFC's name (`badAlg`, …), used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadMessageCheck => "badMessageCheck",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadTime => "badTime",
            FailInfo::BadCertId => "badCertId",
        }
    }
}

/// A refused request: the failInfo and the reason (sent as failInfoText and logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What the client is told.
    pub fail_info: FailInfo,
    /// Why, in words that name the fix.
    pub reason: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(fail_info: FailInfo, reason: impl Into<String>) -> Self {
        Refusal {
            fail_info,
            reason: reason.into(),
        }
    }
}

/// What every answer repeats of its request.
#[derive(Clone, Debug)]
pub struct Header {
    /// The messageType.
    pub message_type: MessageType,
    /// The transactionID (printable text).
    pub transaction_id: String,
    /// The senderNonce, echoed as the answer's recipientNonce.
    pub sender_nonce: Vec<u8>,
    /// The certificate that signed the request (DER): self-signed for PKCSReq, the
    /// current certificate for RenewalReq. Answers are encrypted to it.
    pub signer_cert: Vec<u8>,
    /// The pkiStatus of a CertRep (`0` SUCCESS, `2` FAILURE, `3` PENDING).
    pub pki_status: Option<String>,
    /// The failInfo of a CertRep FAILURE.
    pub fail_info: Option<String>,
}

/// The RA: its RSA key (decrypts requests, signs answers) and certificate.
pub struct Ra {
    decrypt: rsa::Pkcs1PrivateDecryptingKey,
    sign: signature::RsaKeyPair,
    cert_der: Vec<u8>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
    ski: Option<Vec<u8>>,
    not_after: i64,
}

impl std::fmt::Debug for Ra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ra")
            .field("serial", &hex(&self.serial))
            .field("key", &"<redacted>")
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    match X509Certificate::from_der(der) {
        Ok(([], c)) => Ok(c),
        _ => Err(Error::Malformed("a certificate could not be read".into())),
    }
}

fn ski_of(c: &X509Certificate<'_>) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

impl Ra {
    /// The RA from its PKCS#8 RSA key and its certificate (DER), which must match.
    pub fn new(pkcs8: &[u8], cert_der: &[u8]) -> Result<Self, Error> {
        let sign = signature::RsaKeyPair::from_pkcs8(pkcs8)
            .map_err(|e| Error::Ra(format!("the key is not an RSA PKCS#8 key: {e}")))?;
        let dk = rsa::PrivateDecryptingKey::from_pkcs8(pkcs8)
            .map_err(|e| Error::Ra(format!("the key is not an RSA PKCS#8 key: {e}")))?;
        let decrypt = rsa::Pkcs1PrivateDecryptingKey::new(dk)
            .map_err(|_| Error::Ra("the key cannot decrypt".into()))?;
        let c =
            parse_cert(cert_der).map_err(|_| Error::Ra("the certificate is malformed".into()))?;
        use signature::KeyPair;
        if c.public_key().subject_public_key.data.as_ref() != sign.public_key().as_ref() {
            return Err(Error::Ra("the key does not match the certificate".into()));
        }
        Ok(Ra {
            issuer: c.tbs_certificate.issuer.as_raw().to_vec(),
            serial: c.tbs_certificate.raw_serial().to_vec(),
            ski: ski_of(&c),
            not_after: c.validity().not_after.timestamp(),
            decrypt,
            sign,
            cert_der: cert_der.to_vec(),
        })
    }

    /// The RA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate's notAfter (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    fn is(&self, rid: &Rid<'_>) -> bool {
        match rid {
            Rid::IssuerSerial { issuer, serial } => {
                *issuer == self.issuer.as_slice() && *serial == self.serial.as_slice()
            }
            Rid::Ski(k) => self.ski.as_deref() == Some(*k),
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let mut sig = vec![0u8; self.sign.public_modulus_len()];
        self.sign
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &rand::SystemRandom::new(),
                msg,
                &mut sig,
            )
            .map_err(|_| Error::Crypto("RSA signature"))?;
        Ok(sig)
    }
}

/// How a SignerInfo or a RecipientInfo names a certificate.
#[derive(Debug)]
enum Rid<'a> {
    IssuerSerial { issuer: &'a [u8], serial: &'a [u8] },
    Ski(&'a [u8]),
}

fn read_rid<'a>(r: &mut Reader<'a>, what: &str) -> Result<Rid<'a>, Error> {
    match r.peek_tag() {
        Some(tag::SEQUENCE) => {
            let mut ias = r.enter(tag::SEQUENCE, what)?;
            let issuer = ias.expect(tag::SEQUENCE, what)?.raw;
            let serial = ias.expect(tag::INTEGER, what)?.content;
            Ok(Rid::IssuerSerial { issuer, serial })
        }
        Some(tag::CTX0_PRIM) => Ok(Rid::Ski(r.expect(tag::CTX0_PRIM, what)?.content)),
        _ => Err(Error::Malformed(what.into())),
    }
}

fn cert_is(c: &X509Certificate<'_>, rid: &Rid<'_>) -> bool {
    match rid {
        Rid::IssuerSerial { issuer, serial } => {
            c.tbs_certificate.issuer.as_raw() == *issuer
                && c.tbs_certificate.raw_serial() == *serial
        }
        Rid::Ski(k) => ski_of(c).as_deref() == Some(*k),
    }
}

/// A pkiMessage read but not yet checked: the header is known (so an answer can be
/// addressed), the signature and the envelope are not.
pub struct Unverified<'a> {
    header: Header,
    digest_oid: &'a [u8],
    sig_oid: &'a [u8],
    signed_attrs: &'a [u8],
    message_digest: &'a [u8],
    signing_time: Option<i64>,
    signature: &'a [u8],
    content: Option<&'a [u8]>,
}

impl std::fmt::Debug for Unverified<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unverified")
            .field("message_type", &self.header.message_type)
            .field("transaction_id", &self.header.transaction_id)
            .finish_non_exhaustive()
    }
}

fn printable(content: &[u8], tagv: u8) -> Option<String> {
    match tagv {
        tag::PRINTABLE_STRING | tag::UTF8_STRING | tag::IA5_STRING => {
            std::str::from_utf8(content).ok().map(str::to_string)
        }
        _ => None,
    }
}

/// Reads a pkiMessage (DER): the SignedData, its signer and the SCEP attributes. Garbage,
/// a truncated body or a message without transactionID, messageType or senderNonce is an
/// error: there is nothing to address an answer to.
pub fn read(input: &[u8]) -> Result<Unverified<'_>, Error> {
    let m = |w: &str| Error::Malformed(w.to_string());
    let ci = der::single(input, tag::SEQUENCE, "not a DER ContentInfo")?;
    let mut ci = Reader::new(ci.content);
    if ci.expect(tag::OID, "ContentInfo contentType")?.content != oids::SIGNED_DATA {
        return Err(m("the ContentInfo is not a SignedData"));
    }
    let mut explicit = ci.enter(tag::CTX0, "ContentInfo content")?;
    let mut sd = explicit.enter(tag::SEQUENCE, "SignedData")?;
    sd.expect(tag::INTEGER, "SignedData version")?;
    sd.expect(tag::SET, "SignedData digestAlgorithms")?;
    let mut encap = sd.enter(tag::SEQUENCE, "SignedData encapContentInfo")?;
    encap.expect(tag::OID, "eContentType")?;
    let content = match encap.optional(tag::CTX0, "eContent")? {
        Some(t) => {
            Some(der::single(t.content, tag::OCTET_STRING, "eContent OCTET STRING")?.content)
        }
        None => None,
    };
    let mut certs = Vec::new();
    if let Some(t) = sd.optional(tag::CTX0, "SignedData certificates")? {
        let mut r = Reader::new(t.content);
        while !r.is_empty() {
            certs.push(r.any("a certificate")?.raw);
        }
    }
    sd.optional(tag::CTX1, "SignedData crls")?;
    let mut signers = sd.enter(tag::SET, "SignedData signerInfos")?;
    let mut si = signers.enter(tag::SEQUENCE, "SignerInfo: the message is not signed")?;
    si.expect(tag::INTEGER, "SignerInfo version")?;
    let rid = read_rid(&mut si, "SignerInfo sid")?;
    let digest_oid = si
        .enter(tag::SEQUENCE, "SignerInfo digestAlgorithm")?
        .expect(tag::OID, "digestAlgorithm")?
        .content;
    let attrs = si
        .expect(
            tag::CTX0,
            "SignerInfo signedAttrs: SCEP messages carry signed attributes",
        )?
        .content;
    let sig_oid = si
        .enter(tag::SEQUENCE, "SignerInfo signatureAlgorithm")?
        .expect(tag::OID, "signatureAlgorithm")?
        .content;
    let signature = si
        .expect(tag::OCTET_STRING, "SignerInfo signature")?
        .content;

    let (mut message_type, mut transaction_id, mut sender_nonce) = (None, None, None);
    let (mut message_digest, mut signing_time) = (None, None);
    let (mut pki_status, mut fail_info) = (None, None);
    let mut ar = Reader::new(attrs);
    while !ar.is_empty() {
        let mut a = ar.enter(tag::SEQUENCE, "an attribute")?;
        let t = a.expect(tag::OID, "attribute type")?.content;
        let mut vals = a.enter(tag::SET, "attribute values")?;
        let v = vals.any("attribute value")?;
        match t {
            oids::MESSAGE_TYPE => message_type = printable(v.content, v.tag),
            oids::TRANSACTION_ID => transaction_id = printable(v.content, v.tag),
            oids::SENDER_NONCE if v.tag == tag::OCTET_STRING => sender_nonce = Some(v.content),
            oids::ATTR_MESSAGE_DIGEST if v.tag == tag::OCTET_STRING => {
                message_digest = Some(v.content)
            }
            oids::ATTR_SIGNING_TIME => signing_time = parse_time(v.tag, v.content),
            oids::PKI_STATUS => pki_status = printable(v.content, v.tag),
            oids::FAIL_INFO => fail_info = printable(v.content, v.tag),
            _ => {}
        }
    }
    let message_type =
        MessageType::parse(&message_type.ok_or_else(|| m("no messageType attribute"))?);
    let transaction_id = transaction_id.ok_or_else(|| m("no transactionID attribute"))?;
    if transaction_id.is_empty() || transaction_id.len() > 128 {
        return Err(m(
            "the transactionID is empty or longer than 128 characters",
        ));
    }
    let sender_nonce = sender_nonce.ok_or_else(|| m("no senderNonce attribute"))?;
    let message_digest = message_digest.ok_or_else(|| m("no messageDigest attribute"))?;
    let signer_cert = certs
        .iter()
        .find(|c| parse_cert(c).is_ok_and(|c| cert_is(&c, &rid)))
        .ok_or_else(|| m("the message does not carry the certificate that signed it"))?;
    Ok(Unverified {
        header: Header {
            message_type,
            transaction_id,
            sender_nonce: sender_nonce.to_vec(),
            signer_cert: signer_cert.to_vec(),
            pki_status,
            fail_info,
        },
        digest_oid,
        sig_oid,
        signed_attrs: attrs,
        message_digest,
        signing_time,
        signature,
        content,
    })
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTCTime or GeneralizedTime (`…Z`, whole seconds) as Unix seconds.
fn parse_time(t: u8, c: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(c).ok()?.strip_suffix('Z')?;
    let (year, rest) = match t {
        0x17 if s.len() == 12 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 if s.len() == 14 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let days = days_from_civil(year, n(0)?, n(2)?);
    Some(days * 86_400 + n(4)? * 3600 + n(6)? * 60 + n(8)?)
}

/// A request whose signature verified and whose envelope was decrypted by the RA.
pub struct Request {
    /// What every answer repeats.
    pub header: Header,
    /// The digest of its signature.
    pub digest: Digest,
    /// The cipher of its envelope (the answer's envelope uses the same).
    pub cipher: Cipher,
    /// The decrypted content: a PKCS#10 CSR for PKCSReq and RenewalReq, an
    /// IssuerAndSubject for GetCertInitial.
    pub content: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("message_type", &self.header.message_type)
            .field("transaction_id", &self.header.transaction_id)
            .field("digest", &self.digest)
            .field("cipher", &self.cipher)
            .field("content", &"<redacted>")
            .finish()
    }
}

impl Request {
    /// The legacy algorithms it used (`sha1`, `des`, `3des`), for counting.
    pub fn legacy(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.digest.is_legacy() {
            v.push(self.digest.name());
        }
        if self.cipher.is_legacy() {
            v.push(self.cipher.name());
        }
        v
    }
}

impl Unverified<'_> {
    /// What every answer repeats.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Checks the request: its algorithms (badAlg), the signing time (badTime), the
    /// digest and the signature by the certificate it carries (badMessageCheck), then
    /// decrypts the envelope with whichever of `ras` it is addressed to (badMessageCheck
    /// when none). The signer certificate itself is judged by the caller (self-signed for
    /// PKCSReq; for RenewalReq it must be one the CA issued).
    pub fn open(self, ras: &[&Ra], policy: Policy) -> Result<Request, Refusal> {
        use FailInfo::*;
        match self.header.message_type {
            MessageType::PkcsReq
            | MessageType::RenewalReq
            | MessageType::UpdateReq
            | MessageType::CertPoll => {}
            ref other => {
                return Err(Refusal::new(
                    BadRequest,
                    format!(
                    "messageType {} is not served here: send PKCSReq, RenewalReq or GetCertInitial",
                    match other {
                        MessageType::Other(s) => s.clone(),
                        o => o.name().to_string(),
                    }
                ),
                ))
            }
        }
        let legacy_refused = |what: &str| {
            Refusal::new(
                BadAlg,
                format!("{what} is a legacy algorithm this CA refuses: configure the client for AES and SHA-256 (GetCACaps lists what is taken), or set [scep] allow_legacy = true in ca.toml"),
            )
        };
        let digest = Digest::from_oid(self.digest_oid).ok_or_else(|| {
            Refusal::new(
                BadAlg,
                "the signature's digest algorithm is not supported: use SHA-256 or SHA-512",
            )
        })?;
        if digest.is_legacy() && !policy.allow_legacy {
            return Err(legacy_refused("SHA-1"));
        }
        if let Some(t) = self.signing_time {
            if (t - policy.now).abs() > MAX_CLOCK_SKEW_SECS {
                return Err(Refusal::new(
                    BadTime,
                    format!("the request's signingTime is more than {MAX_CLOCK_SKEW_SECS} s from the CA's clock: set the device's clock"),
                ));
            }
        }
        let signer = parse_cert(&self.header.signer_cert)
            .map_err(|_| Refusal::new(BadMessageCheck, "the signer certificate is malformed"))?;
        if !signer
            .public_key()
            .algorithm
            .algorithm
            .as_bytes()
            .eq(oids::RSA_ENCRYPTION)
        {
            return Err(Refusal::new(
                BadAlg,
                "the signer's key is not RSA: SCEP answers are encrypted to it, so use an RSA key",
            ));
        }
        let sig_digest = match self.sig_oid {
            oids::RSA_ENCRYPTION => digest,
            oids::SHA1_WITH_RSA => Digest::Sha1,
            oids::SHA256_WITH_RSA => Digest::Sha256,
            oids::SHA384_WITH_RSA => Digest::Sha384,
            oids::SHA512_WITH_RSA => Digest::Sha512,
            _ => {
                return Err(Refusal::new(
                    BadAlg,
                    "the signature algorithm is not supported: sign with RSA PKCS#1 v1.5",
                ))
            }
        };
        if sig_digest.is_legacy() && !policy.allow_legacy {
            return Err(legacy_refused("SHA-1"));
        }
        let content = self.content.unwrap_or(&[]);
        let computed = digest.compute(content);
        if computed.as_slice() != self.message_digest {
            return Err(Refusal::new(
                BadMessageCheck,
                "the messageDigest attribute does not match the content",
            ));
        }
        let alg: &dyn signature::VerificationAlgorithm = match sig_digest {
            Digest::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Digest::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Digest::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        };
        let signed = tlv(tag::SET, self.signed_attrs);
        signature::UnparsedPublicKey::new(alg, signer.public_key().subject_public_key.data.as_ref())
            .verify(&signed, self.signature)
            .map_err(|_| {
                Refusal::new(
                    BadMessageCheck,
                    "the signature does not verify with the certificate the message carries (RSA keys of at least 2048 bits)",
                )
            })?;
        if content.is_empty() {
            return Err(Refusal::new(
                BadRequest,
                "the message carries no pkcsPKIEnvelope",
            ));
        }
        let (cipher, plain) = open_envelope(content, ras, policy)?;
        Ok(Request {
            header: self.header,
            digest,
            cipher,
            content: plain,
        })
    }
}

fn open_envelope(input: &[u8], ras: &[&Ra], policy: Policy) -> Result<(Cipher, Vec<u8>), Refusal> {
    use FailInfo::*;
    let malformed = |_| {
        Refusal::new(
            BadMessageCheck,
            "the pkcsPKIEnvelope is not a DER EnvelopedData",
        )
    };
    let ci = der::single(input, tag::SEQUENCE, "").map_err(malformed)?;
    let mut ci = Reader::new(ci.content);
    if ci.expect(tag::OID, "").map_err(malformed)?.content != oids::ENVELOPED_DATA {
        return Err(Refusal::new(
            BadMessageCheck,
            "the pkcsPKIEnvelope is not an EnvelopedData",
        ));
    }
    let mut ed = ci
        .enter(tag::CTX0, "")
        .and_then(|mut e| e.enter(tag::SEQUENCE, ""))
        .map_err(malformed)?;
    ed.expect(tag::INTEGER, "").map_err(malformed)?;
    ed.optional(tag::CTX0, "").map_err(malformed)?;
    let mut ris = ed.enter(tag::SET, "").map_err(malformed)?;
    let mut found = None;
    while !ris.is_empty() {
        let ri = ris.any("").map_err(malformed)?;
        if ri.tag != tag::SEQUENCE {
            continue; // not a key-transport recipient
        }
        let mut r = Reader::new(ri.content);
        r.expect(tag::INTEGER, "").map_err(malformed)?;
        let rid = read_rid(&mut r, "").map_err(malformed)?;
        let kea = r
            .enter(tag::SEQUENCE, "")
            .and_then(|mut a| a.expect(tag::OID, ""))
            .map_err(malformed)?
            .content;
        let ek = r.expect(tag::OCTET_STRING, "").map_err(malformed)?.content;
        if let Some(ra) = ras.iter().find(|ra| ra.is(&rid)) {
            found = Some((*ra, kea, ek));
            break;
        }
    }
    let Some((ra, kea, ek)) = found else {
        return Err(Refusal::new(
            BadMessageCheck,
            "the message is encrypted to another certificate: fetch GetCACert again and encrypt to the RA certificate",
        ));
    };
    if kea != oids::RSA_ENCRYPTION {
        return Err(Refusal::new(
            BadAlg,
            "the content key is not RSA PKCS#1 v1.5 encrypted (rsaEncryption)",
        ));
    }
    let mut eci = ed.enter(tag::SEQUENCE, "").map_err(malformed)?;
    eci.expect(tag::OID, "").map_err(malformed)?;
    let mut alg = eci.enter(tag::SEQUENCE, "").map_err(malformed)?;
    let cipher_oid = alg.expect(tag::OID, "").map_err(malformed)?.content;
    let cipher = Cipher::from_oid(cipher_oid).ok_or_else(|| {
        Refusal::new(
            BadAlg,
            "the content encryption algorithm is not supported: use AES-128-CBC or AES-256-CBC",
        )
    })?;
    if cipher.is_legacy() && !policy.allow_legacy {
        return Err(Refusal::new(
            BadAlg,
            format!("{} is a legacy algorithm this CA refuses: configure the client for AES (GetCACaps lists what is taken), or set [scep] allow_legacy = true in ca.toml", if cipher == Cipher::Des { "DES" } else { "3DES" }),
        ));
    }
    let iv = alg
        .expect(tag::OCTET_STRING, "")
        .map_err(malformed)?
        .content;
    if iv.len() != cipher.iv_len() {
        return Err(Refusal::new(BadMessageCheck, "the IV has the wrong length"));
    }
    let ct = match eci.any("").map_err(malformed)? {
        t if t.tag == tag::CTX0_PRIM => t.content.to_vec(),
        t if t.tag == tag::CTX0 => {
            let mut parts = Reader::new(t.content);
            let mut v = Vec::new();
            while !parts.is_empty() {
                v.extend_from_slice(
                    parts
                        .expect(tag::OCTET_STRING, "")
                        .map_err(malformed)?
                        .content,
                );
            }
            v
        }
        _ => {
            return Err(Refusal::new(
                BadMessageCheck,
                "the envelope has no encrypted content",
            ))
        }
    };
    // A failed RSA decryption goes on with a random key (its failure then looks like any
    // other decryption failure), so the answer does not tell a padding oracle apart.
    let mut key = zeroize::Zeroizing::new(vec![0u8; cipher.key_len()]);
    rand::fill(&mut key).map_err(|_| Refusal::new(BadMessageCheck, "no randomness"))?;
    let mut buf = zeroize::Zeroizing::new(vec![0u8; ra.decrypt.min_output_size()]);
    if ek.len() == ra.decrypt.key_size_bytes() {
        if let Ok(k) = ra.decrypt.decrypt(ek, &mut buf) {
            if k.len() == key.len() {
                key.copy_from_slice(k);
            }
        }
    }
    let plain = cipher.decrypt(&key, iv, &ct).ok_or_else(|| {
        Refusal::new(
            BadMessageCheck,
            "the envelope could not be decrypted with the RA key",
        )
    })?;
    Ok((cipher, plain))
}

/// The degenerate certs-only PKCS#7 (a SignedData without signers) of `certs`, as
/// GetCACert answers and CertRep carries.
pub fn certs_only(certs: &[&[u8]]) -> Vec<u8> {
    let sd = seq(&[
        &small_int(1),
        &tlv(tag::SET, &[]),
        &seq(&[&oid(oids::DATA)]),
        &tlv(tag::CTX0, &certs.concat()),
        &tlv(tag::SET, &[]),
    ]);
    seq(&[&oid(oids::SIGNED_DATA), &cons(tag::CTX0, &[&sd])])
}

/// The certificates (DER) of a certs-only PKCS#7 such as GetCACert's answer.
pub fn certs_of(pkcs7: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let ci = der::single(pkcs7, tag::SEQUENCE, "not a DER ContentInfo")?;
    let mut ci = Reader::new(ci.content);
    if ci.expect(tag::OID, "ContentInfo contentType")?.content != oids::SIGNED_DATA {
        return Err(Error::Malformed(
            "the ContentInfo is not a SignedData".into(),
        ));
    }
    let mut sd = ci
        .enter(tag::CTX0, "ContentInfo content")?
        .enter(tag::SEQUENCE, "SignedData")?;
    sd.expect(tag::INTEGER, "SignedData version")?;
    sd.expect(tag::SET, "SignedData digestAlgorithms")?;
    sd.expect(tag::SEQUENCE, "SignedData encapContentInfo")?;
    let mut out = Vec::new();
    if let Some(t) = sd.optional(tag::CTX0, "SignedData certificates")? {
        let mut r = Reader::new(t.content);
        while !r.is_empty() {
            out.push(r.any("a certificate")?.raw.to_vec());
        }
    }
    Ok(out)
}

fn algorithm_id(o: &[u8]) -> Vec<u8> {
    seq(&[&oid(o), &[tag::NULL, 0]])
}

/// An EnvelopedData of `content` for the RSA key of `recipient_der`.
fn envelope(content: &[u8], recipient_der: &[u8], cipher: Cipher) -> Result<Vec<u8>, Error> {
    let c = parse_cert(recipient_der)?;
    let pk = rsa::PublicEncryptingKey::from_der(c.public_key().raw)
        .map_err(|_| Error::Crypto("the requester's key is not RSA"))?;
    let pk = rsa::Pkcs1PublicEncryptingKey::new(pk).map_err(|_| Error::Crypto("RSA key"))?;
    let mut key = zeroize::Zeroizing::new(vec![0u8; cipher.key_len()]);
    let mut iv = vec![0u8; cipher.iv_len()];
    rand::fill(&mut key).map_err(|_| Error::Crypto("randomness"))?;
    rand::fill(&mut iv).map_err(|_| Error::Crypto("randomness"))?;
    let ct = cipher.encrypt(&key, &iv, content)?;
    let mut ek = vec![0u8; pk.ciphertext_size()];
    let ek = pk
        .encrypt(&key, &mut ek)
        .map_err(|_| Error::Crypto("RSA encryption of the content key"))?;
    let ias = seq(&[
        c.tbs_certificate.issuer.as_raw(),
        &tlv(tag::INTEGER, c.tbs_certificate.raw_serial()),
    ]);
    let ktri = seq(&[
        &small_int(0),
        &ias,
        &algorithm_id(oids::RSA_ENCRYPTION),
        &tlv(tag::OCTET_STRING, ek),
    ]);
    let eci = seq(&[
        &oid(oids::DATA),
        &seq(&[&oid(cipher.oid()), &tlv(tag::OCTET_STRING, &iv)]),
        &tlv(tag::CTX0_PRIM, &ct),
    ]);
    let ed = seq(&[&small_int(0), &tlv(tag::SET, &ktri), &eci]);
    Ok(seq(&[&oid(oids::ENVELOPED_DATA), &cons(tag::CTX0, &[&ed])]))
}

/// What a CertRep says.
#[derive(Clone, Copy, Debug)]
pub enum Reply<'a> {
    /// The certificate (first) and any chain, encrypted to the request's signer with
    /// `cipher`.
    Success {
        /// The issued certificate first, then whatever CA certificates go with it.
        certs: &'a [&'a [u8]],
        /// The envelope's cipher (the request's).
        cipher: Cipher,
    },
    /// A refusal; `text` goes in failInfoText.
    Failure {
        /// The failInfo.
        fail_info: FailInfo,
        /// Why (failInfoText, RFC 8894 §3.2.1.4.5).
        text: &'a str,
    },
    /// Not decided yet.
    Pending,
}

fn attribute(o: &[u8], value: &[u8]) -> Vec<u8> {
    seq(&[&oid(o), &tlv(tag::SET, value)])
}

/// Builds a CertRep for `header`, signed by `ra` (SHA-256 with RSA).
pub fn cert_rep(ra: &Ra, header: &Header, reply: Reply<'_>) -> Result<Vec<u8>, Error> {
    let (status, content) = match reply {
        Reply::Success { certs, cipher } => (
            "0",
            Some(envelope(&certs_only(certs), &header.signer_cert, cipher)?),
        ),
        Reply::Failure { .. } => ("2", None),
        Reply::Pending => ("3", None),
    };
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce).map_err(|_| Error::Crypto("randomness"))?;
    let digest = Digest::Sha256.compute(content.as_deref().unwrap_or(&[]));
    let ps = |s: &str| tlv(tag::PRINTABLE_STRING, s.as_bytes());
    let tid: String = header
        .transaction_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(*c))
        .collect();
    let tid_value = if tid == header.transaction_id {
        ps(&tid)
    } else {
        tlv(tag::UTF8_STRING, header.transaction_id.as_bytes())
    };
    let mut attrs = vec![
        attribute(oids::ATTR_CONTENT_TYPE, &oid(oids::DATA)),
        attribute(oids::ATTR_MESSAGE_DIGEST, &tlv(tag::OCTET_STRING, &digest)),
        attribute(oids::MESSAGE_TYPE, &ps("3")),
        attribute(oids::TRANSACTION_ID, &tid_value),
        attribute(oids::PKI_STATUS, &ps(status)),
        attribute(oids::SENDER_NONCE, &tlv(tag::OCTET_STRING, &nonce)),
        attribute(
            oids::RECIPIENT_NONCE,
            &tlv(tag::OCTET_STRING, &header.sender_nonce),
        ),
    ];
    if let Reply::Failure { fail_info, text } = reply {
        attrs.push(attribute(oids::FAIL_INFO, &ps(fail_info.code())));
        let text: String = text.chars().take(512).collect();
        attrs.push(attribute(
            oids::FAIL_INFO_TEXT,
            &tlv(tag::UTF8_STRING, text.as_bytes()),
        ));
    }
    signed_message(ra, attrs, content.as_deref())
}

/// A SignedData of `content` (none: no eContent) by `signer` (SHA-256 with RSA) with the
/// signed attributes `attrs` (each an encoded Attribute, messageDigest among them).
fn signed_message(
    signer: &Ra,
    attrs: Vec<Vec<u8>>,
    content: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let attrs_set = set_of(attrs);
    let sig = signer.sign(&attrs_set)?;
    let mut signed_attrs = attrs_set;
    signed_attrs[0] = tag::CTX0;
    let ias = seq(&[&signer.issuer, &tlv(tag::INTEGER, &signer.serial)]);
    let si = seq(&[
        &small_int(1),
        &ias,
        &algorithm_id(oids::SHA256),
        &signed_attrs,
        &algorithm_id(oids::RSA_ENCRYPTION),
        &tlv(tag::OCTET_STRING, &sig),
    ]);
    let encap = match content {
        Some(c) => seq(&[
            &oid(oids::DATA),
            &cons(tag::CTX0, &[&tlv(tag::OCTET_STRING, c)]),
        ]),
        None => seq(&[&oid(oids::DATA)]),
    };
    let sd = seq(&[
        &small_int(1),
        &tlv(tag::SET, &algorithm_id(oids::SHA256)),
        &encap,
        &tlv(tag::CTX0, &signer.cert_der),
        &tlv(tag::SET, &si),
    ]);
    Ok(seq(&[&oid(oids::SIGNED_DATA), &cons(tag::CTX0, &[&sd])]))
}

/// A client's pkiMessage: `content` (a DER CSR for PKCSReq and RenewalReq) encrypted with
/// `cipher` to `recipient` (the RA certificate, DER), signed by `signer` (SHA-256 with
/// RSA; for PKCSReq a self-signed certificate of the CSR's key). For tests and load
/// generators: the CA only reads these.
pub fn client_request(
    signer: &Ra,
    recipient: &[u8],
    message_type: u8,
    transaction_id: &str,
    content: &[u8],
    cipher: Cipher,
) -> Result<Vec<u8>, Error> {
    let env = envelope(content, recipient, cipher)?;
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce).map_err(|_| Error::Crypto("randomness"))?;
    let ps = |s: &[u8]| tlv(tag::PRINTABLE_STRING, s);
    let attrs = vec![
        attribute(oids::ATTR_CONTENT_TYPE, &oid(oids::DATA)),
        attribute(
            oids::ATTR_MESSAGE_DIGEST,
            &tlv(tag::OCTET_STRING, &Digest::Sha256.compute(&env)),
        ),
        attribute(oids::MESSAGE_TYPE, &ps(message_type.to_string().as_bytes())),
        attribute(oids::TRANSACTION_ID, &ps(transaction_id.as_bytes())),
        attribute(oids::SENDER_NONCE, &tlv(tag::OCTET_STRING, &nonce)),
    ];
    signed_message(signer, attrs, Some(&env))
}

/// What the CA takes from a SCEP CSR besides what every CSR gives: the challenge
/// password and the subject the device asked for.
pub struct CsrInfo {
    /// The challengePassword attribute (PKCSReq: the enrollment token).
    pub challenge: Option<zeroize::Zeroizing<String>>,
    /// The subject, RFC 4514 style (`CN=router1,O=Example`): the device's identity.
    pub subject: String,
}

impl std::fmt::Debug for CsrInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrInfo")
            .field("challenge", &self.challenge.as_ref().map(|_| "<redacted>"))
            .field("subject", &self.subject)
            .finish()
    }
}

/// Reads the challenge password and the subject of a PKCS#10 CSR (DER). Its signature is
/// checked by the CA when it issues.
pub fn csr_info(der: &[u8]) -> Result<CsrInfo, Error> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::cri_attributes::ParsedCriAttribute;
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| Error::Malformed(format!("the CSR could not be read: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::Malformed("trailing data after the CSR".into()));
    }
    let info = &csr.certification_request_info;
    let challenge = info
        .iter_attributes()
        .find_map(|a| match a.parsed_attribute() {
            ParsedCriAttribute::ChallengePassword(p) => Some(zeroize::Zeroizing::new(p.0.clone())),
            _ => None,
        });
    let subject: String = info
        .subject
        .to_string()
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect();
    Ok(CsrInfo { challenge, subject })
}

#[cfg(test)]
mod tests;
