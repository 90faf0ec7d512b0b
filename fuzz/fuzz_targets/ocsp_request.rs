//! OCSP requests as `ca serve`'s responder takes them (POST bodies and base64 GET paths).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = twoway_pki::ocsp::parse_request(data);
});
