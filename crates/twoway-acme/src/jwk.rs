//! Account keys as JSON Web Keys (RFC 7517/7518): the public keys ACME clients sign with,
//! their RFC 7638 thumbprints (the account's identity in key authorizations), and signature
//! verification with aws-lc-rs.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::Error;

/// A JWS algorithm an ACME account may sign with. MAC algorithms and `none` are not
/// accepted for account requests (RFC 8555 §6.2); HMAC is only for the external account
/// binding, see [`crate::eab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048 to 8192 bits).
    Rs256,
}

impl Alg {
    /// Parses a JWS `alg` header value.
    pub fn parse(s: &str) -> Result<Alg, Error> {
        Ok(match s {
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            "RS256" => Alg::Rs256,
            other => {
                return Err(Error::BadSignatureAlgorithm(format!(
                    "{other:?} is not accepted: use ES256, ES384, EdDSA or RS256"
                )))
            }
        })
    }

    /// The JWS name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
        }
    }
}

/// A public key from a `jwk` header or an account record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Jwk {
    /// `kty: EC` on P-256 or P-384: the affine coordinates.
    Ec {
        /// `P-256` or `P-384`.
        crv: Curve,
        /// X coordinate, big-endian, full length.
        x: Vec<u8>,
        /// Y coordinate, big-endian, full length.
        y: Vec<u8>,
    },
    /// `kty: OKP`, `crv: Ed25519`: the 32-byte public key.
    Ed25519 {
        /// The public key.
        x: Vec<u8>,
    },
    /// `kty: RSA`: modulus and exponent, big-endian, no leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

/// The elliptic curves of EC account keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    fn len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

fn member<'a>(v: &'a Value, name: &str) -> Result<&'a str, Error> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadJwk(format!("the key has no string member {name:?}")))
}

fn b64(v: &Value, name: &str) -> Result<Vec<u8>, Error> {
    B64.decode(member(v, name)?)
        .map_err(|_| Error::BadJwk(format!("member {name:?} is not base64url without padding")))
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[first..]
}

impl Jwk {
    /// Reads a public JWK. Private members (`d`, `p`, …) are refused: a client that sends its
    /// private key has leaked it.
    pub fn from_json(v: &Value) -> Result<Jwk, Error> {
        if !v.is_object() {
            return Err(Error::BadJwk("the key is not a JSON object".into()));
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            if v.get(private).is_some() {
                return Err(Error::BadJwk(format!(
                    "the key carries the private member {private:?}: send the public key only"
                )));
            }
        }
        match member(v, "kty")? {
            "EC" => {
                let crv = match member(v, "crv")? {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    other => {
                        return Err(Error::BadJwk(format!(
                            "EC curve {other:?} is not accepted: use P-256 or P-384"
                        )))
                    }
                };
                let (x, y) = (b64(v, "x")?, b64(v, "y")?);
                if x.len() != crv.len() || y.len() != crv.len() {
                    return Err(Error::BadJwk(format!(
                        "{} coordinates must be {} bytes",
                        crv.name(),
                        crv.len()
                    )));
                }
                let key = Jwk::Ec { crv, x, y };
                // a point not on the curve is refused now, not at the first verification
                let alg = match crv {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                };
                signature::ParsedPublicKey::new(alg, key.ec_point())
                    .map_err(|_| Error::BadJwk("the EC point is not on the curve".into()))?;
                Ok(key)
            }
            "OKP" => {
                if member(v, "crv")? != "Ed25519" {
                    return Err(Error::BadJwk("OKP keys must be Ed25519".into()));
                }
                let x = b64(v, "x")?;
                if x.len() != 32 {
                    return Err(Error::BadJwk("an Ed25519 key is 32 bytes".into()));
                }
                Ok(Jwk::Ed25519 { x })
            }
            "RSA" => {
                let n = strip_zeros(&b64(v, "n")?).to_vec();
                let e = strip_zeros(&b64(v, "e")?).to_vec();
                let bits = n.len() * 8;
                if !(2048..=8192).contains(&bits) {
                    return Err(Error::BadJwk(format!(
                        "an RSA key of {bits} bits is not accepted: use 2048 to 8192 bits"
                    )));
                }
                if e.is_empty() || e.len() > 4 {
                    return Err(Error::BadJwk("bad RSA public exponent".into()));
                }
                Ok(Jwk::Rsa { n, e })
            }
            other => Err(Error::BadJwk(format!(
                "key type {other:?} is not accepted: use EC, OKP or RSA"
            ))),
        }
    }

    fn ec_point(&self) -> Vec<u8> {
        match self {
            Jwk::Ec { x, y, .. } => {
                let mut p = Vec::with_capacity(1 + x.len() + y.len());
                p.push(4);
                p.extend_from_slice(x);
                p.extend_from_slice(y);
                p
            }
            _ => Vec::new(),
        }
    }

    /// The key as a JWK JSON object (public members only, canonical order).
    pub fn to_json(&self) -> Value {
        serde_json::from_str(&self.canonical()).unwrap_or(Value::Null)
    }

    /// RFC 7638 canonical form: the required members, lexicographic order, no whitespace.
    fn canonical(&self) -> String {
        match self {
            Jwk::Ec { crv, x, y } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                crv.name(),
                B64.encode(x),
                B64.encode(y)
            ),
            Jwk::Ed25519 { x } => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(x))
            }
            Jwk::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                B64.encode(e),
                B64.encode(n)
            ),
        }
    }

    /// Whether this is the public key of the certificate `cert_der` (revocation signed by
    /// the certificate's own key, RFC 8555 §7.6).
    pub fn matches_certificate(&self, cert_der: &[u8]) -> bool {
        use x509_parser::public_key::PublicKey;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
            return false;
        };
        let spki = cert.public_key();
        match (self, spki.parsed()) {
            (Jwk::Ec { .. }, Ok(PublicKey::EC(point))) => point.data() == self.ec_point(),
            (Jwk::Rsa { n, e }, Ok(PublicKey::RSA(rsa))) => {
                strip_zeros(rsa.modulus) == strip_zeros(n)
                    && strip_zeros(rsa.exponent) == strip_zeros(e)
            }
            (Jwk::Ed25519 { x }, _) => {
                spki.algorithm.algorithm.to_id_string() == "1.3.101.112"
                    && spki.subject_public_key.data.as_ref() == x.as_slice()
            }
            _ => false,
        }
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url: the account's part of every key
    /// authorization (`token.thumbprint`).
    pub fn thumbprint(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.canonical().as_bytes());
        B64.encode(d.as_ref())
    }

    /// Whether `alg` is the algorithm of this key type (an ES256 signature by a P-384 key is
    /// refused, as is RS256 by an EC key).
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (
                Jwk::Ec {
                    crv: Curve::P256,
                    ..
                },
                Alg::Es256
            ) | (
                Jwk::Ec {
                    crv: Curve::P384,
                    ..
                },
                Alg::Es384
            ) | (Jwk::Ed25519 { .. }, Alg::EdDsa)
                | (Jwk::Rsa { .. }, Alg::Rs256)
        )
    }

    /// Verifies a JWS signature (`sig` as JWS carries it: `r||s` for ECDSA) over `msg`.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), Error> {
        if !self.fits(alg) {
            return Err(Error::BadSignatureAlgorithm(format!(
                "{} does not fit this account key",
                alg.name()
            )));
        }
        let ok = match self {
            Jwk::Ec { crv, .. } => {
                let alg = match crv {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                };
                UnparsedPublicKey::new(alg, self.ec_point())
                    .verify(msg, sig)
                    .is_ok()
            }
            Jwk::Ed25519 { x } => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok(),
            Jwk::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1: the example RSA key and its thumbprint.
    #[test]
    fn rfc7638_example_thumbprint() {
        let key: Value = serde_json::from_str(
            r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
        )
        .unwrap();
        let jwk = Jwk::from_json(&key).unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        for (json, want) in [
            (r#"{"kty":"oct","k":"AAAA"}"#, "private member"),
            (r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#, "P-521"),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#,
                "32 bytes",
            ),
            (r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#, "Ed25519"),
            (r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#, "bits"),
            (r#"{"kty":"EC","crv":"P-256"}"#, "\"x\""),
            (r#""a string""#, "JSON object"),
        ] {
            let v: Value = serde_json::from_str(json).unwrap();
            let e = Jwk::from_json(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        // a P-256 point that is not on the curve
        let x = B64.encode([1u8; 32]);
        let v = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": x});
        assert!(Jwk::from_json(&v)
            .unwrap_err()
            .to_string()
            .contains("not on the curve"));
    }
}
