//! ca.toml as `twoway` reads it at every command: TOML, then the settings' own checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = toml::from_str::<twoway_ca::CaConfig>(text) {
        let _ = twoway_ca::CaSettings::parse(raw);
    }
});
