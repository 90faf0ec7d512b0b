//! Certs-only PKCS#7 (EST `cacerts` answers, SCEP GetCACert): read, and what was read
//! written again and read back the same (round trip).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = twoway_pki::pkcs7::certs_of(data) {
        let again = twoway_pki::pkcs7::certs_only(&certs);
        let back = twoway_pki::pkcs7::certs_of(&again).expect("its own certs-only reads");
        assert_eq!(
            back, certs,
            "certs-only round trip changed the certificates"
        );
    }
});
