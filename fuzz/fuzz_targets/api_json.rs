//! The JSON bodies of the CA's API (`twoway-api`'s wire types), as `ca serve` reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twoway_api::{EnrollRequest, RenewRequest, RevokeRequest, SignRequest, TokenRequest};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<EnrollRequest>(data);
    let _ = serde_json::from_slice::<RenewRequest>(data);
    let _ = serde_json::from_slice::<RevokeRequest>(data);
    let _ = serde_json::from_slice::<SignRequest>(data);
    let _ = serde_json::from_slice::<TokenRequest>(data);
});
