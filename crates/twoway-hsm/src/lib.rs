//! CA keys in a PKCS#11 token (a hardware security module, or SoftHSM2): the key is
//! generated inside the token, never leaves it, and signs there behind the
//! [`twoway_pki::Signer`] seam that certificates, CRLs and OCSP answers are built against.
//!
//! - [`KeyUri`]: the RFC 7512 URI naming the key (`pkcs11:token=ca;object=intermediate`).
//! - [`Module`]: the PKCS#11 library and the user PIN (from a file or an environment
//!   variable, never from the URI or the command line).
//! - [`Pkcs11Signer`]: EC P-256 and P-384 keys, and RSA keys of 2048, 3072 and 4096 bits.
//!   The message is hashed on the host and the token signs the digest: `CKM_ECDSA` (tokens
//!   such as Debian's SoftHSM2 lack the combined `CKM_ECDSA_SHA256`), its raw `r‖s` made
//!   the DER signature X.509 wants; for RSA, `CKM_RSA_PKCS` over the SHA-256 `DigestInfo`
//!   (PKCS#1 v1.5 with SHA-256, the signature twoway's RSA CAs make in software too).
//!   Sessions are pooled (a PKCS#11 session may move between threads but not be shared)
//!   and, when the token goes away, the whole library is re-initialised and the call tried
//!   once more, so a token that comes back is used again without a restart.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeType, KeyType as P11KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use twoway_pki::{der_tlv as der, der_uint, KeyType, Signer};
use zeroize::Zeroizing;

/// Errors of the PKCS#11 key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key URI is not a usable RFC 7512 URI.
    #[error(
        "invalid PKCS#11 URI {uri:?}: {why} (expected e.g. pkcs11:token=ca;object=intermediate)"
    )]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is wrong.
        why: String,
    },
    /// The PKCS#11 library could not be loaded.
    #[error("cannot load the PKCS#11 module {path}: {source} (set [hsm] module in ca.toml to the library's path, e.g. /usr/lib/softhsm/libsofthsm2.so)")]
    Module {
        /// The library's path.
        path: PathBuf,
        /// Why.
        source: P11Error,
    },
    /// The PIN could not be read.
    #[error("cannot read the token PIN: {0}")]
    Pin(String),
    /// No token with the URI's label.
    #[error("no PKCS#11 token labelled {0:?} (list them with `pkcs11-tool --module MODULE --list-slots`)")]
    NoToken(String),
    /// No key with the URI's label on the token.
    #[error("no private key labelled {object:?} on token {token:?} (list them with `pkcs11-tool --module MODULE --login --list-objects`)")]
    NoKey {
        /// The token label.
        token: String,
        /// The object label.
        object: String,
    },
    /// A key with that label exists already (refusing to make a second).
    #[error("token {token:?} already holds a key labelled {object:?}: choose another object= in the URI, or use the existing key")]
    KeyExists {
        /// The token label.
        token: String,
        /// The object label.
        object: String,
    },
    /// The key's type is not one twoway signs with through PKCS#11.
    #[error("PKCS#11 keys must be EC P-256 or P-384 here: {0}")]
    Unsupported(String),
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {what} failed: {source}")]
    Call {
        /// What was being done.
        what: &'static str,
        /// The library's error.
        source: P11Error,
    },
}

impl Error {
    /// True when the token is absent or gone (the CA answers 503 and tries again later),
    /// as opposed to a configuration mistake.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::NoToken(_) => true,
            Error::Call { source, .. } => matches!(source, P11Error::Pkcs11(rv, _) if gone(*rv)),
            _ => false,
        }
    }
}

fn call(what: &'static str) -> impl FnOnce(P11Error) -> Error {
    move |source| Error::Call { what, source }
}

/// The errors after which the library is re-initialised and the call tried again.
fn gone(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::CryptokiNotInitialized
            | RvError::SlotIdInvalid
            | RvError::UserNotLoggedIn
            | RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
    )
}

/// An RFC 7512 PKCS#11 URI naming a token and a key on it: `token` and `object` (labels)
/// are required; `id`, `type` and the other path attributes are accepted and ignored, and
/// so are query attributes except `module-path` (the library, overriding ca.toml). A PIN
/// in the URI (`pin-value`) is refused: it would end up in ca.toml and in logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUri {
    /// The token label.
    pub token: String,
    /// The key label (`CKA_LABEL`).
    pub object: String,
    /// `module-path`, when the URI names the library.
    pub module_path: Option<PathBuf>,
}

fn pct_decode(s: &str, uri: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::BadUri {
        uri: uri.into(),
        why: why.into(),
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| bad("a % is not followed by two hex digits"))?;
            let v = u8::from_str_radix(hex, 16)
                .map_err(|_| bad("a % is not followed by two hex digits"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("an attribute is not UTF-8"))
}

impl std::str::FromStr for KeyUri {
    type Err = Error;

    fn from_str(uri: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::BadUri {
            uri: uri.into(),
            why,
        };
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("it does not start with pkcs11:".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut module_path) = (None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("{attr:?} is not name=value")))?;
            let v = pct_decode(v, uri)?;
            match k {
                "token" => token = Some(v),
                "object" => object = Some(v),
                "id"
                | "type"
                | "manufacturer"
                | "model"
                | "serial"
                | "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-id"
                | "slot-manufacturer" => {}
                other => return Err(bad(format!("unknown path attribute {other:?}"))),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k {
                "module-path" => module_path = Some(PathBuf::from(pct_decode(v, uri)?)),
                "pin-value" => {
                    return Err(bad(
                        "a PIN in the URI would be stored in ca.toml: give it with [hsm] pin_file or pin_env".into(),
                    ))
                }
                _ => {}
            }
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("it names no token= label".into()))?;
        let object = object
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("it names no object= label".into()))?;
        Ok(KeyUri {
            token,
            object,
            module_path,
        })
    }
}

impl std::fmt::Display for KeyUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        write!(
            f,
            "pkcs11:token={};object={}",
            enc(&self.token),
            enc(&self.object)
        )?;
        if let Some(m) = &self.module_path {
            write!(f, "?module-path={}", enc(&m.display().to_string()))?;
        }
        Ok(())
    }
}

/// Where the PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN (trailing newline ignored).
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

impl PinSource {
    fn read(&self) -> Result<Zeroizing<String>, Error> {
        let raw = match self {
            PinSource::File(p) => Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|e| Error::Pin(format!("{}: {e}", p.display())))?,
            ),
            PinSource::Env(v) => Zeroizing::new(
                std::env::var(v)
                    .map_err(|_| Error::Pin(format!("the environment variable {v} is not set")))?,
            ),
        };
        Ok(Zeroizing::new(
            raw.trim_end_matches(['\n', '\r']).to_string(),
        ))
    }
}

/// The PKCS#11 library and how to log in to the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The library (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub path: PathBuf,
    /// The user PIN's source.
    pub pin: PinSource,
}

/// The library, initialised, and the slot of the URI's token.
struct Context {
    pkcs11: Pkcs11,
    slot: Slot,
}

fn open_context(path: &Path, token: &str) -> Result<Context, Error> {
    let pkcs11 = Pkcs11::new(path).map_err(|source| Error::Module {
        path: path.to_path_buf(),
        source,
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(call("C_Initialize")(e)),
    }
    for slot in pkcs11
        .get_slots_with_token()
        .map_err(call("C_GetSlotList"))?
    {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(call("C_GetTokenInfo"))?;
        if info.label().trim_end() == token {
            return Ok(Context { pkcs11, slot });
        }
    }
    Err(Error::NoToken(token.to_string()))
}

/// The DER SubjectPublicKeyInfo of an EC key from its `CKA_EC_POINT` (a DER OCTET STRING
/// holding the uncompressed point, or the bare point as some tokens give it).
fn spki_of(key_type: KeyType, ec_point: &[u8]) -> Result<Vec<u8>, Error> {
    let (prefix, len): (&[u8], usize) = match key_type {
        KeyType::P256 => (
            &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ],
            65,
        ),
        KeyType::P384 => (
            &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
            ],
            97,
        ),
        other => return Err(Error::Unsupported(format!("{other:?}"))),
    };
    let point = if ec_point.len() == len + 2 && ec_point[0] == 0x04 && ec_point[1] as usize == len {
        &ec_point[2..]
    } else {
        ec_point
    };
    if point.len() != len || point[0] != 0x04 {
        return Err(Error::Unsupported(
            "the token's EC point is not an uncompressed point of the curve".into(),
        ));
    }
    let mut spki = prefix.to_vec();
    spki.extend_from_slice(point);
    Ok(spki)
}

/// The DER SubjectPublicKeyInfo of an RSA key (`rsaEncryption`) from its modulus and
/// public exponent, and the key type its modulus size makes.
fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<(KeyType, Vec<u8>), Error> {
    let bits = match modulus.iter().position(|&b| b != 0) {
        Some(i) => (modulus.len() - i) * 8 - modulus[i].leading_zeros() as usize,
        None => 0,
    };
    let key_type = match bits {
        2048 => KeyType::Rsa2048,
        3072 => KeyType::Rsa3072,
        4096 => KeyType::Rsa4096,
        other => {
            return Err(Error::Unsupported(format!(
                "an RSA key of {other} bits (2048, 3072 and 4096 are supported)"
            )))
        }
    };
    let rsa_public = der(0x30, &[der_uint(modulus), der_uint(exponent)].concat());
    let mut bits_body = vec![0u8];
    bits_body.extend_from_slice(&rsa_public);
    // rsaEncryption (1.2.840.113549.1.1.1), NULL parameters
    let alg = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let spki = der(0x30, &[&alg[..], &der(0x03, &bits_body)].concat());
    Ok((key_type, spki))
}

/// The DER `DigestInfo` of a SHA-256 digest, what `CKM_RSA_PKCS` signs for PKCS#1 v1.5.
fn sha256_digest_info(digest: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    out.extend_from_slice(digest);
    out
}

/// `CKA_EC_PARAMS` (the curve's OID) of a key type.
fn ec_params(key_type: KeyType) -> Result<Vec<u8>, Error> {
    match key_type {
        KeyType::P256 => Ok(vec![
            0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
        ]),
        KeyType::P384 => Ok(vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        other => Err(Error::Unsupported(format!(
            "{other:?} (a key in the token is EC P-256 or P-384, or RSA 2048, 3072 or 4096: \
             --key-type p256|p384|rsa2048|rsa3072|rsa4096)"
        ))),
    }
}

/// A raw `r‖s` ECDSA signature as the DER `Ecdsa-Sig-Value` X.509 carries.
fn der_signature(raw: &[u8]) -> Result<Vec<u8>, Error> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(Error::Unsupported(
            "the token's signature is not r‖s".into(),
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let int = |v: &[u8]| -> Vec<u8> {
        let v = match v.iter().position(|&b| b != 0) {
            Some(i) => &v[i..],
            None => &[0u8][..],
        };
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else {
        out.push(0x81);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// What a new key pair is generated with.
enum KeyParams {
    /// `CKA_EC_PARAMS`: the curve.
    Ec(Vec<u8>),
    /// `CKA_MODULUS_BITS`.
    Rsa(u64),
}

struct State {
    ctx: Option<Context>,
    /// Idle logged-in sessions.
    idle: Vec<Session>,
}

/// A private key inside a PKCS#11 token.
pub struct Pkcs11Signer {
    uri: KeyUri,
    module: PathBuf,
    pin: PinSource,
    key_type: KeyType,
    spki: Vec<u8>,
    state: Mutex<State>,
    /// Held shared by every signing for as long as it uses a session, and exclusively by
    /// [`Pkcs11Signer::reset`]: the library is never finalized under a call in progress
    /// on another thread (SoftHSM frees a session's memory at `C_Finalize`; a `C_Sign`
    /// running on it then brought the whole process down).
    calls: RwLock<()>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("uri", &self.uri.to_string())
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

fn login(ctx: &Context, pin: &PinSource) -> Result<Session, Error> {
    let session = ctx
        .pkcs11
        .open_rw_session(ctx.slot)
        .map_err(call("C_OpenSession"))?;
    let pin = pin.read()?;
    match session.login(
        UserType::User,
        Some(&AuthPin::from(pin.as_str().to_string())),
    ) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(call("C_Login")(e)),
    }
}

fn find_key(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Vec<ObjectHandle>, Error> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(call("C_FindObjects"))
}

impl Pkcs11Signer {
    /// Generates a key of `key_type` on the URI's token (sensitive, not extractable,
    /// labelled with the URI's object); refuses when a key with that label exists.
    pub fn generate(uri: &KeyUri, module: &Module, key_type: KeyType) -> Result<Self, Error> {
        let (mechanism, params) = match key_type {
            KeyType::Rsa2048 => (Mechanism::RsaPkcsKeyPairGen, KeyParams::Rsa(2048)),
            KeyType::Rsa3072 => (Mechanism::RsaPkcsKeyPairGen, KeyParams::Rsa(3072)),
            KeyType::Rsa4096 => (Mechanism::RsaPkcsKeyPairGen, KeyParams::Rsa(4096)),
            other => (Mechanism::EccKeyPairGen, KeyParams::Ec(ec_params(other)?)),
        };
        let path = uri
            .module_path
            .clone()
            .unwrap_or_else(|| module.path.clone());
        let ctx = open_context(&path, &uri.token)?;
        let session = login(&ctx, &module.pin)?;
        if !find_key(&session, ObjectClass::PRIVATE_KEY, &uri.object)?.is_empty() {
            return Err(Error::KeyExists {
                token: uri.token.clone(),
                object: uri.object.clone(),
            });
        }
        let label = uri.object.as_bytes().to_vec();
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Label(label.clone()),
        ];
        match params {
            KeyParams::Ec(p) => public.push(Attribute::EcParams(p)),
            KeyParams::Rsa(bits) => {
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            }
        }
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
        ];
        session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(call("C_GenerateKeyPair"))?;
        drop(session);
        Self::open_with(uri, path, module.pin.clone(), Some(ctx))
    }

    /// Destroys the key pair the URI names (its private and public key objects) in the
    /// token: what retiring a CA key means. Returns how many objects went.
    pub fn destroy(uri: &KeyUri, module: &Module) -> Result<usize, Error> {
        let path = uri
            .module_path
            .clone()
            .unwrap_or_else(|| module.path.clone());
        let ctx = open_context(&path, &uri.token)?;
        let session = login(&ctx, &module.pin)?;
        let mut n = 0;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for h in find_key(&session, class, &uri.object)? {
                session.destroy_object(h).map_err(call("C_DestroyObject"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The existing key the URI names.
    pub fn open(uri: &KeyUri, module: &Module) -> Result<Self, Error> {
        let path = uri
            .module_path
            .clone()
            .unwrap_or_else(|| module.path.clone());
        Self::open_with(uri, path, module.pin.clone(), None)
    }

    fn open_with(
        uri: &KeyUri,
        module: PathBuf,
        pin: PinSource,
        ctx: Option<Context>,
    ) -> Result<Self, Error> {
        let ctx = match ctx {
            Some(c) => c,
            None => open_context(&module, &uri.token)?,
        };
        let session = login(&ctx, &pin)?;
        let no_key = || Error::NoKey {
            token: uri.token.clone(),
            object: uri.object.clone(),
        };
        if find_key(&session, ObjectClass::PRIVATE_KEY, &uri.object)?.is_empty() {
            return Err(no_key());
        }
        let public = find_key(&session, ObjectClass::PUBLIC_KEY, &uri.object)?;
        let public = *public.first().ok_or_else(no_key)?;
        let kt = session
            .get_attributes(public, &[AttributeType::KeyType])
            .map_err(call("C_GetAttributeValue"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::KeyType(k) => Some(k),
                _ => None,
            });
        let (key_type, spki) = if kt == Some(P11KeyType::EC) {
            let attrs = session
                .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
                .map_err(call("C_GetAttributeValue"))?;
            let (mut params, mut point) = (None, None);
            for a in attrs {
                match a {
                    Attribute::EcParams(p) => params = Some(p),
                    Attribute::EcPoint(p) => point = Some(p),
                    _ => {}
                }
            }
            let params = params.unwrap_or_default();
            let key_type = if params == ec_params(KeyType::P256)? {
                KeyType::P256
            } else if params == ec_params(KeyType::P384)? {
                KeyType::P384
            } else {
                return Err(Error::Unsupported(
                    "an EC curve other than P-256 and P-384".into(),
                ));
            };
            (key_type, spki_of(key_type, &point.unwrap_or_default())?)
        } else if kt == Some(P11KeyType::RSA) {
            let attrs = session
                .get_attributes(
                    public,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(call("C_GetAttributeValue"))?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            rsa_spki(&n.unwrap_or_default(), &e.unwrap_or_default())?
        } else {
            return Err(Error::Unsupported(format!("the key is {kt:?}")));
        };
        Ok(Pkcs11Signer {
            uri: uri.clone(),
            module,
            pin,
            key_type,
            spki,
            state: Mutex::new(State {
                ctx: Some(ctx),
                idle: vec![session],
            }),
            calls: RwLock::new(()),
        })
    }

    /// The URI of the key.
    pub fn uri(&self) -> &KeyUri {
        &self.uri
    }

    /// One signing of `digest` on a session from the pool (or a new one).
    fn sign_once(&self, digest: &[u8]) -> Result<Vec<u8>, Error> {
        let _call = self.calls.read().unwrap_or_else(|e| e.into_inner());
        let session = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.ctx.is_none() {
                st.ctx = Some(open_context(&self.module, &self.uri.token)?);
                st.idle.clear();
            }
            match st.idle.pop() {
                Some(s) => s,
                None => match &st.ctx {
                    Some(ctx) => login(ctx, &self.pin)?,
                    None => return Err(Error::NoToken(self.uri.token.clone())),
                },
            }
        };
        let key = find_key(&session, ObjectClass::PRIVATE_KEY, &self.uri.object)?;
        let key = *key.first().ok_or_else(|| Error::NoKey {
            token: self.uri.token.clone(),
            object: self.uri.object.clone(),
        })?;
        let rsa = self.key_type.is_rsa();
        let raw = if rsa {
            session.sign(&Mechanism::RsaPkcs, key, &sha256_digest_info(digest))
        } else {
            session.sign(&Mechanism::Ecdsa, key, digest)
        }
        .map_err(call("C_Sign"))?;
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .idle
            .push(session);
        if rsa {
            // PKCS#1 v1.5: the signature is the bytes X.509 carries
            return Ok(raw);
        }
        der_signature(&raw)
    }

    /// Drops every session and the library's initialisation: the next call starts over.
    fn reset(&self) {
        // every call in progress ends first (with the token gone, each fails at once)
        let _all = self.calls.write().unwrap_or_else(|e| e.into_inner());
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.idle.clear();
        if let Some(ctx) = st.ctx.take() {
            let _ = ctx.pkcs11.finalize();
        }
    }
}

impl Signer for Pkcs11Signer {
    fn key_type(&self) -> KeyType {
        self.key_type
    }

    fn public_key_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn sign(&self, msg: &[u8]) -> twoway_pki::Result<Vec<u8>> {
        let digest = match self.key_type {
            KeyType::P384 => sha2::Sha384::digest(msg).to_vec(),
            _ => sha2::Sha256::digest(msg).to_vec(),
        };
        // any failure (the token removed, replaced, or its sessions lost) starts over once
        // with the library re-initialised: a token that is back is found again
        let result = match self.sign_once(&digest) {
            Err(e) => {
                tracing::warn!(error = %e, uri = %self.uri, "signing in the token failed: opening it again");
                self.reset();
                self.sign_once(&digest)
            }
            ok => ok,
        };
        result.map_err(|e| {
            tracing::warn!(error = %e, uri = %self.uri, "the PKCS#11 token did not sign");
            self.reset();
            twoway_pki::Error::Signer(e.to_string())
        })
    }
}

/// Shares a signer as the CA's `Arc<dyn Signer>`.
pub fn shared(s: Pkcs11Signer) -> Arc<dyn Signer> {
    Arc::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_print() {
        let u: KeyUri = "pkcs11:token=ca;object=intermediate".parse().unwrap();
        assert_eq!(
            (u.token.as_str(), u.object.as_str()),
            ("ca", "intermediate")
        );
        let u: KeyUri = "pkcs11:token=My%20CA;object=int%3B1;id=%01?module-path=/usr/lib/x.so"
            .parse()
            .unwrap();
        assert_eq!(u.token, "My CA");
        assert_eq!(u.object, "int;1");
        assert_eq!(u.module_path.as_deref(), Some(Path::new("/usr/lib/x.so")));
        let back: KeyUri = u.to_string().parse().unwrap();
        assert_eq!(back, u);
        for bad in [
            "token=ca;object=x",
            "pkcs11:object=x",
            "pkcs11:token=ca",
            "pkcs11:token=ca;object=x?pin-value=1234",
            "pkcs11:token=ca;object=%zz",
            "pkcs11:token=ca;object=x;colour=red",
        ] {
            assert!(bad.parse::<KeyUri>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn raw_signatures_become_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[32] = 0x00;
        raw[33] = 0x01; // s has leading zeros to strip
        let der = der_signature(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert!(der_signature(&[1, 2, 3]).is_err());
    }
}
