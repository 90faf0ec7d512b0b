//! External account binding (RFC 8555 §7.3.4): a `newAccount` request proves that its
//! sender holds a MAC key the CA issued out of band, by an inner JWS over the account key.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::{Error, Jwk};

/// What an `externalAccountBinding` member claims, before its MAC is checked.
#[derive(Clone, Debug)]
pub struct Binding {
    /// The EAB key id the client names.
    pub kid: String,
    alg: hmac::Algorithm,
    url: String,
    key: Value,
    signing_input: Vec<u8>,
    mac: Vec<u8>,
}

fn err(s: &str) -> Error {
    Error::Eab(format!("externalAccountBinding: {s}"))
}

impl Binding {
    /// Reads the `externalAccountBinding` member of a `newAccount` payload.
    pub fn parse(v: &Value) -> Result<Binding, Error> {
        let field = |name: &str| {
            v.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| err(&format!("no {name:?}")))
        };
        let (p, pl, s) = (field("protected")?, field("payload")?, field("signature")?);
        let dec = |x: &str| B64.decode(x).map_err(|_| err("not base64url"));
        let h: Value = serde_json::from_slice(&dec(p)?).map_err(|_| err("header not JSON"))?;
        let alg = match h.get("alg").and_then(Value::as_str) {
            Some("HS256") => hmac::HMAC_SHA256,
            Some("HS384") => hmac::HMAC_SHA384,
            Some("HS512") => hmac::HMAC_SHA512,
            _ => return Err(err("alg must be HS256, HS384 or HS512")),
        };
        if h.get("nonce").is_some() {
            return Err(err("the inner JWS must not carry a nonce"));
        }
        let kid = h
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| err("no kid"))?
            .to_owned();
        let url = h
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| err("no url"))?
            .to_owned();
        let key: Value =
            serde_json::from_slice(&dec(pl)?).map_err(|_| err("payload is not a JWK"))?;
        Ok(Binding {
            kid,
            alg,
            url,
            key,
            signing_input: format!("{p}.{pl}").into_bytes(),
            mac: dec(s)?,
        })
    }

    /// Checks the binding: signed with `mac_key`, for `url` (the newAccount URL), over
    /// `account` (the outer JWS's key).
    pub fn verify(&self, mac_key: &[u8], url: &str, account: &Jwk) -> Result<(), Error> {
        if self.url != url {
            return Err(err("url differs from the request's"));
        }
        if Jwk::from_json(&self.key).ok().as_ref() != Some(account) {
            return Err(err("the bound key is not the account key"));
        }
        let key = hmac::Key::new(self.alg, mac_key);
        hmac::verify(&key, &self.signing_input, &self.mac)
            .map_err(|_| err("the MAC does not verify with that EAB key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::tests::TestKey;

    fn bind(alg: &str, kid: &str, url: &str, jwk: &Value, key: &[u8]) -> Value {
        let p = B64.encode(serde_json::json!({"alg": alg, "kid": kid, "url": url}).to_string());
        let pl = B64.encode(jwk.to_string());
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let tag = hmac::sign(&k, format!("{p}.{pl}").as_bytes());
        serde_json::json!({"protected": p, "payload": pl, "signature": B64.encode(tag.as_ref())})
    }

    #[test]
    fn bindings_verify_only_with_the_right_key_url_and_account() {
        let acct = TestKey::p256();
        let jwk = Jwk::from_json(&acct.jwk()).unwrap();
        let url = "https://ca/acme/d/new-account";
        let b = Binding::parse(&bind("HS256", "kid1", url, &acct.jwk(), b"secret")).unwrap();
        assert_eq!(b.kid, "kid1");
        b.verify(b"secret", url, &jwk).unwrap();
        assert!(b.verify(b"other", url, &jwk).is_err());
        assert!(b.verify(b"secret", "https://ca/other", &jwk).is_err());
        let other = Jwk::from_json(&TestKey::p256().jwk()).unwrap();
        assert!(b.verify(b"secret", url, &other).is_err());
        assert!(Binding::parse(&bind("RS256", "k", url, &acct.jwk(), b"s")).is_err());
    }
}
