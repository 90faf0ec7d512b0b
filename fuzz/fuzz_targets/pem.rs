//! PEM files as the proxy and the agent read them (certificates, CRLs, private keys).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = twoway_tls::parse_certificates("fuzz", data);
    let _ = twoway_tls::parse_crls("fuzz", data);
    let _ = twoway_tls::parse_private_key("fuzz", data);
});
