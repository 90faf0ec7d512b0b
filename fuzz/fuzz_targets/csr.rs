//! A CSR as `/v1/enroll`, `/v1/sign`, ACME finalize and `twoway cert sign` take it: PEM or
//! DER, parsed and its signature verified. Never panics; what it accepts round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = twoway_pki::csr_der(data) {
        // what was accepted as DER (or unwrapped from PEM) parses the same a second time
        if let Ok(csr) = twoway_pki::verify_csr(&der) {
            assert!(!csr.public_key_der.is_empty());
        }
    }
    let _ = twoway_pki::verify_csr(data);
});
