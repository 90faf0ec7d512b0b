//! Certificates as `cert import`, `cert inspect`, the proxy's trust bundle and the CA's
//! own files read them. Differential: every certificate that twoway's decoding
//! (x509-parser, `CertInfo`) accepts is fed to rustls-webpki too (as the TLS handshake
//! would); neither may panic, and a PEM round trip returns the same DER.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ders = match twoway_pki::parse_certificates(data) {
        Ok(d) => d,
        Err(_) => vec![data.to_vec()],
    };
    for der in ders.iter().take(4) {
        let info = twoway_pki::CertInfo::from_der(der);
        let _ = twoway_pki::spki_of_cert(der);
        let _ = twoway_pki::subject_der_of_cert(der);
        let cert = rustls_pki_types::CertificateDer::from(der.as_slice());
        let _ = webpki::EndEntityCert::try_from(&cert);
        if info.is_ok() {
            let pem = twoway_pki::der_to_pem("CERTIFICATE", der);
            let back = twoway_pki::parse_certificates(pem.as_bytes()).expect("own PEM reads");
            assert_eq!(
                back,
                vec![der.clone()],
                "PEM round trip changed the certificate"
            );
        }
    }
});
