//! Writes seed pkiMessages for the `scep_message` fuzz target: a PKCSReq and a RenewalReq,
//! AES-128, AES-256 and DES, encrypted to the fuzz fixtures' RA and signed by it.
//! Usage: cargo run -p twoway-scep --example fuzz_seeds -- fuzz/fixtures fuzz/seeds/scep_message

use twoway_scep::{client_request, Cipher, Ra};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fuzz_seeds FIXTURES_DIR OUT_DIR";
    let fixtures = std::path::PathBuf::from(args.next().ok_or(usage)?);
    let out = std::path::PathBuf::from(args.next().ok_or(usage)?);
    let key = std::fs::read(fixtures.join("scep-ra.key.der"))?;
    let cert = std::fs::read(fixtures.join("scep-ra.der"))?;
    let ra = Ra::new(&key, &cert)?;
    // any DER stands in for the CSR: the target reads and opens, it does not issue
    let content = cert.clone();
    std::fs::create_dir_all(&out)?;
    for (name, message_type, cipher) in [
        ("pkcsreq-aes128", 19u8, Cipher::Aes128),
        ("pkcsreq-aes256", 19, Cipher::Aes256),
        ("pkcsreq-des", 19, Cipher::Des),
        ("renewalreq-aes128", 17, Cipher::Aes128),
    ] {
        let m = client_request(&ra, &cert, message_type, "fuzz-seed", &content, cipher)?;
        std::fs::write(out.join(name), m)?;
    }
    Ok(())
}
