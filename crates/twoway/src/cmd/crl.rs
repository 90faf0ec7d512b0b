//! `twoway crl`: a signed CRL of this intermediate's revoked, unexpired certificates.

use crate::cli::CrlArgs;
use crate::context::{actor, duration_arg, open_ca};
use crate::output;
use anyhow::Result;
use std::io::Write;
use std::process::ExitCode;
use twoway_files as files;

pub fn run(a: CrlArgs) -> Result<ExitCode> {
    let next = a
        .next_update
        .as_deref()
        .map(|v| duration_arg("--next-update", v))
        .transpose()?;
    let ca = open_ca(&a.ca, true)?;
    if let Some(path) = &a.out {
        // Before a CRL number is used and audited: the output must be writable.
        files::check_writable(path)?;
    }
    let (number, der) = ca.crl(next, &actor(&a.ca))?;
    let pem = twoway_pki::der_to_pem("X509 CRL", &der);
    match &a.out {
        None => output::write_raw(pem.as_bytes())?,
        Some(path) => {
            let is_der = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("der"));
            files::write_atomic(path, if is_der { &der } else { pem.as_bytes() }, 0o644)?;
            // A note for people; a closed stderr is no reason to fail once the CRL is written.
            let _ = writeln!(
                std::io::stderr(),
                "Wrote CRL number {number} to {}",
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
