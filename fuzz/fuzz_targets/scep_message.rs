//! SCEP pkiMessages (RFC 8894) as `/scep` takes them from any device: read (a bounded DER
//! reader), then opened with a fixed RA (fixtures/scep-ra.*, a throwaway test key):
//! signature, digest, signingTime, the envelope decrypted, legacy algorithms allowed so
//! that their code runs too. Never panics; never yields a request from random bytes whose
//! signature did not verify (that takes the requester's key).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use twoway_scep::{Policy, Ra};

fn ra() -> &'static Ra {
    static RA: OnceLock<Ra> = OnceLock::new();
    RA.get_or_init(|| {
        Ra::new(
            include_bytes!("../fixtures/scep-ra.key.der"),
            include_bytes!("../fixtures/scep-ra.der"),
        )
        .expect("the fixture RA loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = twoway_scep::read(data) else {
        return;
    };
    let _ = msg.open(
        &[ra()],
        Policy {
            allow_legacy: true,
            now: 1_800_000_000,
        },
    );
});
