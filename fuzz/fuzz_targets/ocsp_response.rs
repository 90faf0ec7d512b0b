//! OCSP responses as the proxy's OCSP check reads them from a responder it does not
//! control: parsed and verified against a fixed certificate and issuer (fixtures/). Only
//! a response signed by the issuer's key could be `Good`; random input never is.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use twoway_pki::ocsp::client::Target;

fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let leaf = twoway_pki::parse_certificates(include_bytes!("../fixtures/leaf.pem")).unwrap();
        let issuer =
            twoway_pki::parse_certificates(include_bytes!("../fixtures/issuer.pem")).unwrap();
        Target::new(&leaf[0], &issuer[0]).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    let _ = t.request();
    let _ = t.verify(data, 1_800_000_000, 300);
});
