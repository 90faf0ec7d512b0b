//! `twoway crl`: a signed CRL of this intermediate's revoked, unexpired certificates; with
//! `--root` the root's CRL (its revoked intermediates), with `--all` both in one PEM file.

use crate::cli::CrlArgs;
use crate::context::{actor, duration_arg, open_ca, passphrase};
use crate::exit::usage;
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
    let der_out = a
        .out
        .as_ref()
        .is_some_and(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("der")));
    if a.all && der_out {
        return Err(usage(
            "--all writes several CRLs, which only PEM can hold in one file: use --out FILE.pem",
        ));
    }
    if let Some(path) = &a.out {
        // Before a CRL number is used and audited: the output must be writable.
        files::check_writable(path)?;
    }
    if a.root {
        let ca = open_ca(&a.ca, false)?;
        let pass = passphrase(&a.ca)?;
        let der = ca.sign_root_crl(pass.as_ref().map(|p| p.as_slice()), next, &actor(&a.ca))?;
        return write(
            &a,
            &der,
            twoway_pki::der_to_pem("X509 CRL", &der),
            "the root CRL",
        );
    }
    let ca = open_ca(&a.ca, true)?;
    let (number, der) = ca.crl(next, &actor(&a.ca))?;
    let mut pem = twoway_pki::der_to_pem("X509 CRL", &der);
    if a.all {
        let root = if ca.has_root_key() {
            let pass = passphrase(&a.ca)?;
            ca.sign_root_crl(pass.as_ref().map(|p| p.as_slice()), None, &actor(&a.ca))?
        } else {
            ca.root_crl()?
        };
        pem.push_str(&twoway_pki::der_to_pem("X509 CRL", &root));
        return write(&a, &der, pem, "the intermediate's and the root's CRLs");
    }
    write(&a, &der, pem, &format!("CRL number {number}"))
}

/// Writes `pem` (or `der` to a .der file) to --out, or PEM to stdout.
fn write(a: &CrlArgs, der: &[u8], pem: String, what: &str) -> Result<ExitCode> {
    match &a.out {
        None => output::write_raw(pem.as_bytes())?,
        Some(path) => {
            let is_der = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("der"));
            files::write_atomic(path, if is_der { der } else { pem.as_bytes() }, 0o644)?;
            // A note for people; a closed stderr is no reason to fail once the CRL is written.
            let _ = writeln!(std::io::stderr(), "Wrote {what} to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
