//! The proxy's TOML configuration: parsed, then validated as a whole (listeners, rules,
//! routes, backends, OCSP and CRL settings). Validation reads no files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = twoway_proxy::ProxyConfig::from_toml(text) {
        let _ = cfg.validate();
    }
});
