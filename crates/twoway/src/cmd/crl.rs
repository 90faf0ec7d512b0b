//! `twoway crl`: a signed CRL of this intermediate's revoked, unexpired certificates; with
//! `--root` the root's CRL (its revoked intermediates), with `--all` every intermediate's
//! (after a rotation, the retiring and retired ones' too) and the root's in one PEM file.

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
    if let (true, Some(base)) = (a.delta, &a.base) {
        let ca = open_ca(&a.ca, true)?;
        let (number, this_update) = base_crl(&ca, base)?;
        let (n, der) = ca.delta_crl(number, this_update, next, &actor(&a.ca))?;
        let pem = twoway_pki::der_to_pem("X509 CRL", &der);
        return write(
            &a,
            &der,
            pem,
            &format!("delta CRL number {n} (against CRL number {number})"),
        );
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
        // After a rotation: the retiring intermediates' CRLs (signed now) and the retired
        // ones' final CRLs, for the certificates they issued.
        for id in ca.crl_issuer_ids() {
            if id != ca.active_issuer_id() {
                let (_, der) = ca.crl_of(&id, next, &actor(&a.ca))?;
                pem.push_str(&twoway_pki::der_to_pem("X509 CRL", &der));
            }
        }
        let root = if ca.has_root_key() {
            let pass = passphrase(&a.ca)?;
            ca.sign_root_crl(pass.as_ref().map(|p| p.as_slice()), None, &actor(&a.ca))?
        } else {
            ca.root_crl()?
        };
        pem.push_str(&twoway_pki::der_to_pem("X509 CRL", &root));
        for der in ca.other_root_crls()? {
            pem.push_str(&twoway_pki::der_to_pem("X509 CRL", &der));
        }
        return write(&a, &der, pem, "the intermediates' and the root's CRLs");
    }
    write(&a, &der, pem, &format!("CRL number {number}"))
}

/// The CRL number and thisUpdate of a complete CRL this CA's intermediate signed, read from
/// `path` (PEM or DER); refused, saying why, for anything else.
fn base_crl(ca: &twoway_ca::Ca, path: &std::path::Path) -> Result<(u64, time::OffsetDateTime)> {
    let raw = std::fs::read(path)
        .map_err(|e| usage(format!("cannot read the base CRL {}: {e}", path.display())))?;
    let inter = twoway_pki::parse_certificates(ca.intermediate_pem().as_bytes())?;
    let inter = inter
        .first()
        .ok_or(twoway_pki::Error::NoPemBlock("CERTIFICATE"))?;
    twoway_pki::complete_crl_info(&raw, inter).map_err(|e| {
        usage(format!(
            "{} is not a complete CRL of this CA ({e}): give one `twoway crl` wrote",
            path.display()
        ))
    })
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
