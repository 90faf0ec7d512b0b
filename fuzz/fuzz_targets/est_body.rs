//! EST request bodies (`simpleenroll`, `simplereenroll`, `serverkeygen`): DER, PEM or base64
//! with or without line breaks (RFC 8951), then the CSR checked as every path checks it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(der) = twoway_pki::csr_body_der(data) {
        assert_eq!(
            der.first(),
            Some(&0x30),
            "a CSR body that is not a DER SEQUENCE"
        );
        let _ = twoway_pki::verify_csr(&der);
    }
});
