//! Account key rollover (RFC 8555 §7.3.5): the payload of a `keyChange` request is an
//! inner JWS, signed by the new key (sent as `jwk`), for the same URL as the outer one,
//! without a nonce, over `{"account": <account URL>, "oldKey": <the current key>}`.
//! [`KeyChange::parse`] checks the inner JWS; the server checks `account` and `oldKey`
//! against the account that signed the outer JWS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::jwk::{Alg, Jwk};
use crate::Error;

/// A verified inner JWS of a key change.
#[derive(Clone, Debug)]
pub struct KeyChange {
    /// The new account key (the inner `jwk`, which signed the inner JWS).
    pub new_key: Jwk,
    /// The account URL the payload names.
    pub account: String,
    /// The old key the payload names.
    pub old_key: Jwk,
}

fn bad(s: &str) -> Error {
    Error::Malformed(format!("keyChange: {s}"))
}

impl KeyChange {
    /// Parses and verifies the inner JWS in `outer_payload` (the outer JWS's payload),
    /// whose `url` must be `outer_url`.
    pub fn parse(outer_payload: &[u8], outer_url: &str) -> Result<KeyChange, Error> {
        let v: Value = serde_json::from_slice(outer_payload)
            .map_err(|_| bad("the payload must be a JWS (the inner JWS, signed by the new key)"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the payload is not a JSON object"))?;
        if obj.contains_key("signatures") || obj.contains_key("header") {
            return Err(bad(
                "the inner JWS must use the flattened serialization without an unprotected header",
            ));
        }
        let field = |name: &str| {
            obj.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("the inner JWS has no {name:?} string")))
        };
        let (p, pl, s) = (field("protected")?, field("payload")?, field("signature")?);
        let dec = |x: &str, what: &str| {
            B64.decode(x)
                .map_err(|_| bad(&format!("the inner {what} is not base64url")))
        };
        let h: Value = serde_json::from_slice(&dec(p, "protected header")?)
            .map_err(|_| bad("the inner protected header is not JSON"))?;
        let h = h
            .as_object()
            .ok_or_else(|| bad("the inner protected header is not a JSON object"))?;
        if h.contains_key("crit") || h.contains_key("b64") {
            return Err(bad("crit and b64 are not supported"));
        }
        if h.contains_key("nonce") {
            return Err(bad("the inner JWS must not carry a nonce"));
        }
        if h.contains_key("kid") {
            return Err(bad(
                "the inner JWS is signed with the new key as jwk, not kid",
            ));
        }
        let alg = Alg::parse(
            h.get("alg")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("the inner protected header has no alg"))?,
        )?;
        let new_key = Jwk::from_json(
            h.get("jwk")
                .ok_or_else(|| bad("the inner protected header has no jwk (the new key)"))?,
        )?;
        let url = h
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the inner protected header has no url"))?;
        if url != outer_url {
            return Err(bad(&format!(
                "the inner url {url:?} is not the outer url {outer_url:?}"
            )));
        }
        let sig = dec(s, "signature")?;
        new_key
            .verify(alg, format!("{p}.{pl}").as_bytes(), &sig)
            .map_err(|e| match e {
                Error::BadSignature => {
                    bad("the inner JWS signature does not verify with its jwk (the new key)")
                }
                other => other,
            })?;
        let payload: Value = serde_json::from_slice(&dec(pl, "payload")?)
            .map_err(|_| bad("the inner payload is not JSON"))?;
        let account = payload
            .get("account")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the inner payload has no account URL"))?
            .to_owned();
        let old_key = Jwk::from_json(
            payload
                .get("oldKey")
                .ok_or_else(|| bad("the inner payload has no oldKey"))?,
        )
        .map_err(|_| bad("oldKey is not a public key JWK"))?;
        if old_key == new_key {
            return Err(bad("the new key is the old key"));
        }
        Ok(KeyChange {
            new_key,
            account,
            old_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::tests::TestKey;
    use serde_json::json;

    const URL: &str = "https://ca/acme/d/key-change";

    fn inner(signer: &TestKey, jwk: &Value, url: &str, old: &Value) -> Vec<u8> {
        let h = json!({"alg": signer.alg(), "jwk": jwk, "url": url});
        signer.sign(
            &h,
            json!({"account": "https://ca/acme/d/acct/1", "oldKey": old})
                .to_string()
                .as_bytes(),
        )
    }

    #[test]
    fn the_inner_jws_is_checked_by_rfc_8555() {
        let (old, new) = (TestKey::p256(), TestKey::ed25519());
        let kc = KeyChange::parse(&inner(&new, &new.jwk(), URL, &old.jwk()), URL).unwrap();
        assert_eq!(kc.account, "https://ca/acme/d/acct/1");
        assert_eq!(kc.old_key, Jwk::from_json(&old.jwk()).unwrap());
        assert_eq!(kc.new_key, Jwk::from_json(&new.jwk()).unwrap());
        // another url
        let e =
            KeyChange::parse(&inner(&new, &new.jwk(), "https://x", &old.jwk()), URL).unwrap_err();
        assert!(e.to_string().contains("outer url"), "{e}");
        // signed by the old key while naming the new one
        let old2 = TestKey::p256();
        let e = KeyChange::parse(&inner(&old2, &TestKey::p256().jwk(), URL, &old.jwk()), URL)
            .unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        // the same key twice
        let e = KeyChange::parse(&inner(&old, &old.jwk(), URL, &old.jwk()), URL).unwrap_err();
        assert!(e.to_string().contains("is the old key"), "{e}");
        // a nonce
        let h = json!({"alg": "EdDSA", "jwk": new.jwk(), "url": URL, "nonce": "n"});
        let e = KeyChange::parse(&new.sign(&h, b"{}"), URL).unwrap_err();
        assert!(e.to_string().contains("nonce"), "{e}");
        // not a JWS at all
        assert!(KeyChange::parse(b"{}", URL).is_err());
        assert!(KeyChange::parse(b"", URL).is_err());
    }
}
