//! ACME request bodies (RFC 8555 flattened JWS): parsed (its protected header's JWK
//! decoded), the payload read as JSON, and the signature checked against the embedded key
//! (aws-lc-rs) and against a fixed other key, which must never verify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twoway_acme::{Jwk, Jws, Signer};

fuzz_target!(|data: &[u8]| {
    let Ok(jws) = Jws::parse(data) else {
        return;
    };
    let _ = jws.is_post_as_get();
    let _ = jws.json();
    if let Signer::Jwk(key) = &jws.signer {
        let _ = key.thumbprint();
        let _ = key.to_json();
        let _ = jws.verify(key);
    }
    // a P-256 key nobody holds the private half of
    let other = serde_json::json!({
        "kty": "EC", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    });
    if let Ok(k) = Jwk::from_json(&other) {
        assert!(
            jws.verify(&k).is_err(),
            "a JWS verified under a key nobody holds"
        );
    }
});
