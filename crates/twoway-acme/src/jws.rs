//! ACME requests as JWS (RFC 8555 §6.2, RFC 7515 flattened JSON serialization): parsing the
//! protected header by the RFC's rules, and verifying the signature with the account key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::jwk::{Alg, Jwk};
use crate::Error;

/// Largest JWS body accepted (a CSR of a large RSA key with many names fits easily).
pub const MAX_JWS: usize = 64 * 1024;

/// Who signed: a key sent along (`newAccount`, `revokeCert` by the certificate's key) or an
/// account URL (every other request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The `jwk` header.
    Jwk(Jwk),
    /// The `kid` header: the account URL.
    Kid(String),
}

/// A parsed, not yet verified, ACME request.
#[derive(Clone, Debug)]
pub struct Jws {
    /// The signature algorithm.
    pub alg: Alg,
    /// The anti-replay nonce from the protected header.
    pub nonce: String,
    /// The URL the client meant to reach (must equal the request URL).
    pub url: String,
    /// The key or account.
    pub signer: Signer,
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

fn decode(s: &str, what: &str) -> Result<Vec<u8>, Error> {
    B64.decode(s)
        .map_err(|_| Error::Malformed(format!("{what} is not base64url without padding")))
}

impl Jws {
    /// Parses a flattened JSON JWS body by RFC 8555 §6.2: one signature, a protected header
    /// with `alg`, `nonce`, `url` and exactly one of `jwk` and `kid`, no unprotected header,
    /// no `crit`, no unencoded payload.
    pub fn parse(body: &[u8]) -> Result<Jws, Error> {
        if body.len() > MAX_JWS {
            return Err(Error::Malformed(format!(
                "the request body is larger than {MAX_JWS} bytes"
            )));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| Error::Malformed(format!("the body is not a JSON JWS: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::Malformed("the body is not a JSON object".into()))?;
        if obj.contains_key("signatures") {
            return Err(Error::Malformed(
                "use the flattened JWS serialization with one signature".into(),
            ));
        }
        if obj.contains_key("header") {
            return Err(Error::Malformed(
                "an unprotected JWS header is not allowed".into(),
            ));
        }
        let field = |name: &str| -> Result<&str, Error> {
            obj.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Malformed(format!("the JWS has no {name:?} string")))
        };
        let (protected_b64, payload_b64, sig_b64) =
            (field("protected")?, field("payload")?, field("signature")?);
        let protected: Value = serde_json::from_slice(&decode(protected_b64, "protected")?)
            .map_err(|_| Error::Malformed("the protected header is not JSON".into()))?;
        let h = protected
            .as_object()
            .ok_or_else(|| Error::Malformed("the protected header is not a JSON object".into()))?;
        if h.contains_key("crit") || h.get("b64").is_some() {
            return Err(Error::Malformed(
                "crit and b64 are not supported in ACME requests".into(),
            ));
        }
        let alg = match h.get("alg").and_then(Value::as_str) {
            None => return Err(Error::Malformed("the protected header has no alg".into())),
            Some(a) => Alg::parse(a)?,
        };
        let nonce = h
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::BadNonce("the protected header has no nonce".into()))?
            .to_owned();
        let url = h
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Malformed("the protected header has no url".into()))?
            .to_owned();
        let signer = match (h.get("jwk"), h.get("kid")) {
            (Some(jwk), None) => Signer::Jwk(Jwk::from_json(jwk)?),
            (None, Some(kid)) => Signer::Kid(
                kid.as_str()
                    .ok_or_else(|| Error::Malformed("kid is not a string".into()))?
                    .to_owned(),
            ),
            (Some(_), Some(_)) => {
                return Err(Error::Malformed(
                    "the protected header has both jwk and kid: send exactly one".into(),
                ))
            }
            (None, None) => {
                return Err(Error::Malformed(
                    "the protected header has neither jwk nor kid".into(),
                ))
            }
        };
        let mut signing_input = Vec::with_capacity(protected_b64.len() + 1 + payload_b64.len());
        signing_input.extend_from_slice(protected_b64.as_bytes());
        signing_input.push(b'.');
        signing_input.extend_from_slice(payload_b64.as_bytes());
        Ok(Jws {
            alg,
            nonce,
            url,
            signer,
            payload: decode(payload_b64, "payload")?,
            signing_input,
            signature: decode(sig_b64, "signature")?,
        })
    }

    /// Verifies the signature with `key` (the `jwk` header's, or the account's for `kid`).
    pub fn verify(&self, key: &Jwk) -> Result<(), Error> {
        key.verify(self.alg, &self.signing_input, &self.signature)
    }

    /// True for POST-as-GET (an empty payload).
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }

    /// The payload as JSON (`{}`-shaped requests).
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::Malformed(format!("the payload is not JSON: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

    /// A client key for tests: signs JWS as an ACME client would.
    pub(crate) enum TestKey {
        P256(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl TestKey {
        pub(crate) fn p256() -> TestKey {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            )
            .unwrap();
            TestKey::P256(
                EcdsaKeyPair::from_pkcs8(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.as_ref(),
                )
                .unwrap(),
            )
        }

        pub(crate) fn ed25519() -> TestKey {
            TestKey::Ed(Ed25519KeyPair::generate().unwrap())
        }

        pub(crate) fn jwk(&self) -> Value {
            match self {
                TestKey::P256(k) => {
                    let p = k.public_key().as_ref();
                    serde_json::json!({"kty": "EC", "crv": "P-256",
                        "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
                }
                TestKey::Ed(k) => serde_json::json!({"kty": "OKP", "crv": "Ed25519",
                    "x": B64.encode(k.public_key().as_ref())}),
            }
        }

        pub(crate) fn alg(&self) -> &'static str {
            match self {
                TestKey::P256(_) => "ES256",
                TestKey::Ed(_) => "EdDSA",
            }
        }

        pub(crate) fn sign(&self, protected: &Value, payload: &[u8]) -> Vec<u8> {
            let p = B64.encode(protected.to_string());
            let pl = B64.encode(payload);
            let input = format!("{p}.{pl}");
            let sig = match self {
                TestKey::P256(k) => k
                    .sign(&SystemRandom::new(), input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                TestKey::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            };
            serde_json::json!({"protected": p, "payload": pl, "signature": B64.encode(sig)})
                .to_string()
                .into_bytes()
        }
    }

    fn header(key: &TestKey) -> Value {
        serde_json::json!({"alg": key.alg(), "nonce": "n1", "url": "https://ca/acme/new-account", "jwk": key.jwk()})
    }

    #[test]
    fn signed_requests_verify_and_tampering_does_not() {
        for key in [TestKey::p256(), TestKey::ed25519()] {
            let body = key.sign(&header(&key), br#"{"termsOfServiceAgreed":true}"#);
            let jws = Jws::parse(&body).unwrap();
            let Signer::Jwk(jwk) = &jws.signer else {
                panic!("expected a jwk")
            };
            jws.verify(jwk).unwrap();
            assert_eq!(jws.nonce, "n1");
            assert_eq!(jws.json().unwrap()["termsOfServiceAgreed"], true);
            // another key does not verify it
            let other = Jwk::from_json(&TestKey::p256().jwk()).unwrap();
            assert!(jws.verify(&other).is_err());
            // a changed payload does not verify
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            v["payload"] = Value::String(B64.encode(b"{}"));
            let jws = Jws::parse(v.to_string().as_bytes()).unwrap();
            assert!(matches!(jws.verify(jwk), Err(Error::BadSignature)));
        }
    }

    #[test]
    fn header_rules_of_rfc_8555() {
        let key = TestKey::p256();
        let cases: Vec<(Value, &str)> = vec![
            (
                serde_json::json!({"alg": "none", "nonce": "n", "url": "u", "jwk": key.jwk()}),
                "none",
            ),
            (
                serde_json::json!({"alg": "HS256", "nonce": "n", "url": "u", "kid": "k"}),
                "HS256",
            ),
            (
                serde_json::json!({"alg": "ES256", "url": "u", "kid": "k"}),
                "nonce",
            ),
            (
                serde_json::json!({"alg": "ES256", "nonce": "n", "kid": "k"}),
                "url",
            ),
            (
                serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u", "kid": "k", "jwk": key.jwk()}),
                "both",
            ),
            (
                serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u"}),
                "neither",
            ),
            (
                serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u", "kid": "k", "crit": ["x"]}),
                "crit",
            ),
        ];
        for (h, want) in cases {
            let body = key.sign(&h, b"");
            let e = Jws::parse(&body).unwrap_err().to_string();
            assert!(e.contains(want), "{h}: {e}");
        }
        for (body, want) in [
            (&b"not json"[..], "JSON"),
            (
                br#"{"protected":"e30","payload":"","signature":"","header":{}}"#,
                "unprotected",
            ),
            (br#"{"signatures":[]}"#, "flattened"),
            (
                br#"{"protected":"!!","payload":"","signature":""}"#,
                "base64url",
            ),
        ] {
            let e = Jws::parse(body).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
        }
        // ES256 by an Ed25519 key
        let ed = TestKey::ed25519();
        let h = serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u", "jwk": ed.jwk()});
        let jws = Jws::parse(&ed.sign(&h, b"")).unwrap();
        let Signer::Jwk(jwk) = &jws.signer else {
            panic!()
        };
        assert!(matches!(
            jws.verify(jwk),
            Err(Error::BadSignatureAlgorithm(_))
        ));
    }
}
