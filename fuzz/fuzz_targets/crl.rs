//! CRLs as the proxy loads and reloads them (PEM or DER) and checks their nextUpdate;
//! rustls-webpki parses each too, as the handshake's verifier does.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let crls = twoway_tls::parse_crls("fuzz", data).unwrap_or_default();
    for crl in crls.iter().take(4) {
        let _ = twoway_tls::crl_next_update(crl);
        let _ = webpki::OwnedCertRevocationList::from_der(crl.as_ref());
    }
    let der = rustls_pki_types::CertificateRevocationListDer::from(data);
    let _ = twoway_tls::crl_next_update(&der);
});
