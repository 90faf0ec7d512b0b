//! `twoway ca init` and `twoway ca show`.

use crate::cli::{InitArgs, RotateCommand};
use crate::context::{actor, duration_arg, open_ca, passphrase, CaOpts};
use crate::exit::usage;
use crate::output::{self, print_json, printable};
use anyhow::Result;
use std::process::ExitCode;
use time::OffsetDateTime;
use twoway_ca::InitOptions;

/// `--key-uri` and its module and PIN source, as ca.toml keeps them.
fn hsm_of(a: &InitArgs) -> Result<Option<(String, twoway_ca::HsmSection)>> {
    let Some(uri) = &a.key_uri else {
        return Ok(None);
    };
    let module = a.pkcs11_module.clone().ok_or_else(|| {
        usage("--key-uri needs --pkcs11-module PATH (the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)")
    })?;
    if a.pin_file.is_none() && a.pin_env.is_none() {
        return Err(usage(
            "--key-uri needs --pin-file FILE or --pin-env VAR: where the token's user PIN is read from",
        ));
    }
    let pin_file = a
        .pin_file
        .as_ref()
        .map(|f| std::path::absolute(f).map(|p| p.display().to_string()))
        .transpose()?;
    let module = std::path::absolute(&module)?.display().to_string();
    Ok(Some((
        uri.clone(),
        twoway_ca::HsmSection {
            module,
            pin_file,
            pin_env: a.pin_env.clone(),
        },
    )))
}

/// `ca init`: a new CA directory.
pub fn init(a: InitArgs) -> Result<ExitCode> {
    let pass = passphrase(&a.ca)?;
    let opts = InitOptions {
        name: a.name.clone(),
        key_type: a.key_type,
        root_ttl: duration_arg("--root-ttl", &a.root_ttl)?,
        intermediate_ttl: duration_arg("--intermediate-ttl", &a.intermediate_ttl)?,
        permit_dns: a.permit_dns.clone(),
        permit_ip: a.permit_ip.clone(),
        trust_domain: a.trust_domain.clone(),
        url: a.url.clone(),
        passphrase: pass,
        actor: actor(&a.ca),
        intermediate_in_hsm: hsm_of(&a)?,
        root_in_hsm: a.root_key_uri.clone(),
    };
    if a.key_type.is_rsa() {
        output::progress(&format!("generating two {} keys…", a.key_type));
    }
    let ca = twoway_ca::init(&a.ca.ca_dir, &opts)?;
    let dir = a.ca.ca_dir.display();
    outln!("Created a CA for {:?} in {dir}", a.name)?;
    match &a.root_key_uri {
        Some(uri) => outln!("  root          {dir}/root.pem   (key in the PKCS#11 token: {uri})")?,
        None => {
            outln!("  root          {dir}/root.pem   (key {dir}/root.key: move it offline now)")?
        }
    }
    match &a.key_uri {
        Some(uri) => {
            outln!("  intermediate  {dir}/intermediate.pem   (key in the PKCS#11 token: {uri})")?
        }
        None => outln!(
            "  intermediate  {dir}/intermediate.pem   (key {dir}/intermediate.key signs everything)"
        )?,
    }
    outln!("  config        {dir}/ca.toml")?;
    outln!("  inventory     {dir}/inventory.db")?;
    outln!(
        "  valid until   {} (intermediate), fingerprint of the root: {}",
        output::date(ca.intermediate_info().not_after),
        twoway_pki::sha256_hex(
            &twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
                .first()
                .cloned()
                .unwrap_or_default()
        )
    )?;
    outln!(
        "Next: {} cert issue --ca-dir {dir} --profile server --san DNS:api.example.internal --out ./api",
        output::self_command()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `ca show`: the CA, its names, settings and inventory counts.
pub fn show(opts: &CaOpts, json: bool) -> Result<ExitCode> {
    let ca = open_ca(opts, false)?;
    let root = twoway_pki::CertInfo::from_der(
        twoway_pki::parse_certificates(ca.root_pem().as_bytes())?
            .first()
            .ok_or_else(|| anyhow::anyhow!("root.pem holds no certificate"))?,
    )?;
    let counts = ca.store().count_by_status()?;
    let issuers = ca.issuers()?;
    let roots = ca.roots()?;
    if json {
        return print_json(&serde_json::json!({
            "dir": ca.dir(),
            "config": ca.config(),
            "root": root,
            "intermediate": ca.intermediate_info(),
            "name_constraints": ca.name_constraints().map(|nc| serde_json::json!({
                "permitted": nc.permitted(), "excluded": nc.excluded(),
            })),
            "certificates": counts.iter().map(|(s, n)| (s.clone(), *n)).collect::<std::collections::BTreeMap<_,_>>(),
            "issuers": issuers,
            "roots": roots,
        }))
        .map(|_| ExitCode::SUCCESS);
    }
    let now = OffsetDateTime::now_utc();
    outln!(
        "CA            {} ({})",
        printable(&ca.config().ca.name),
        printable(&ca.dir().display().to_string())
    )?;
    for (label, info) in [("root", &root), ("intermediate", ca.intermediate_info())] {
        outln!(
            "{label:<13} {}  expires {} ({})",
            printable(&info.subject),
            output::date(info.not_after),
            output::relative(info.not_after, now)
        )?;
    }
    outln!("root sha256   {}", root.fingerprint)?;
    if roots.len() > 1 {
        outln!("roots (`twoway ca rotate root`):")?;
        for r in &roots {
            outln!(
                "  {:<4} {:<9} {}  expires {}  sha256 {}",
                r.id,
                r.state.as_str(),
                printable(&r.certificate.subject),
                output::date(r.certificate.not_after),
                r.certificate.fingerprint
            )?;
        }
    }
    if issuers.len() > 1 {
        outln!("intermediates (`twoway ca rotate`):")?;
        for i in &issuers {
            outln!(
                "  {:<4} {:<9} {}  expires {}  {} live certificate(s)",
                i.id,
                i.state.as_str(),
                printable(&i.certificate.subject),
                output::date(i.certificate.not_after),
                i.live_certificates
            )?;
        }
    }
    match ca.name_constraints() {
        Some(nc) => outln!(
            "may certify   {} (the intermediate's name constraints; [policy] in ca.toml narrows them)",
            nc.permitted()
        )?,
        None => outln!(
            "may certify   any name (no name constraints; [policy] in ca.toml decides)"
        )?,
    }
    outln!("key type      {}", ca.config().ca.key_type)?;
    outln!(
        "url           {}",
        ca.config().ca.url.as_deref().unwrap_or("-")
    )?;
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    outln!(
        "certificates  {}",
        if summary.is_empty() {
            "none".into()
        } else {
            summary.join(", ")
        }
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `ca rotate intermediate|activate|retire`.
pub fn rotate(c: RotateCommand) -> Result<ExitCode> {
    match c {
        RotateCommand::Intermediate {
            ca: opts,
            ttl,
            json,
        } => {
            let ttl = ttl.map(|t| duration_arg("--ttl", &t)).transpose()?;
            let ca = open_ca(&opts, false)?;
            let pass = passphrase(&opts)?;
            if ca.config().ca.key_type.is_rsa() {
                output::progress(&format!("generating a {} key…", ca.config().ca.key_type));
            }
            let view =
                ca.rotate_prepare(pass.as_ref().map(|p| p.as_slice()), ttl, &actor(&opts))?;
            if json {
                return print_json(&view).map(|_| ExitCode::SUCCESS);
            }
            outln!(
                "Prepared intermediate {}: {} (expires {})",
                view.id,
                printable(&view.certificate.subject),
                output::date(view.certificate.not_after)
            )?;
            outln!(
                "  in {}/{}/{}/ — it issues nothing until activated",
                ca.dir().display(),
                twoway_ca::ISSUERS_DIR,
                view.id
            )?;
            outln!(
                "Next: {} ca rotate activate --ca-dir {}",
                output::self_command(),
                ca.dir().display()
            )?;
        }
        RotateCommand::Root {
            ca: opts,
            ttl,
            json,
        } => {
            let ttl = ttl.map(|t| duration_arg("--ttl", &t)).transpose()?;
            let ca = open_ca(&opts, false)?;
            let pass = passphrase(&opts)?;
            let view =
                ca.rotate_root_prepare(pass.as_ref().map(|p| p.as_slice()), ttl, &actor(&opts))?;
            if json {
                return print_json(&view).map(|_| ExitCode::SUCCESS);
            }
            let dir = ca.dir().display();
            outln!(
                "Prepared root {}: {} (expires {}), sha256 {}",
                view.id,
                printable(&view.certificate.subject),
                output::date(view.certificate.not_after),
                view.certificate.fingerprint
            )?;
            let (new, old) = (&view.id, ca.active_root_id());
            outln!(
                "  in {dir}/{}/{new}/ with the cross certificates {new}-by-{old}.pem and {old}-by-{new}.pem",
                twoway_ca::ROOTS_DIR,
            )?;
            outln!(
                "Next: {} ca rotate intermediate --ca-dir {dir}   (signed by {})",
                output::self_command(),
                view.id
            )?;
        }
        RotateCommand::Activate { ca: opts } => {
            let ca = open_ca(&opts, false)?;
            let (old, new) = ca.rotate_activate(&actor(&opts))?;
            outln!("{new} is now the active intermediate: it issues every new certificate.")?;
            outln!(
                "{old} is retiring: it signs the CRL (/crl{}) and OCSP answers of the certificates it issued.",
                if old == "g1" { String::new() } else { format!("/{old}") }
            )?;
            outln!("Restart `ca serve` (one replica at a time) to serve with {new}; clients take the new chain at their next renewal.")?;
            outln!(
                "Then, once {old}'s certificates have expired: {} ca rotate retire {old} --ca-dir {}",
                output::self_command(),
                ca.dir().display()
            )?;
        }
        RotateCommand::Retire {
            id,
            ca: opts,
            force,
        } => {
            let ca = open_ca(&opts, true)?;
            let pass = passphrase(&opts)?;
            let r = ca.rotate_retire(
                &id,
                force,
                pass.as_ref().map(|p| p.as_slice()),
                &actor(&opts),
            )?;
            if r.id.starts_with('r') {
                outln!(
                    "Retired root {}: final CRL written, key destroyed; roots.pem and new chains no longer carry it.",
                    r.id
                )?;
            } else {
                outln!(
                    "Retired {}: final CRL written, revoked by its root (cessationOfOperation), key destroyed.",
                    r.id
                )?;
            }
            if r.live_certificates > 0 {
                outln!(
                    "  {} certificate(s) it issued are still valid: they keep its final CRL, OCSP no longer answers for them.",
                    r.live_certificates
                )?;
            }
            if !r.root_crl_signed {
                outln!("  The root key is not here: sign the root's CRL where it is (`twoway crl --root`) and copy root.crl into this directory, so verifiers see the revocation.")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
