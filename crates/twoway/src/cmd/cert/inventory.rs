//! `twoway cert list`, `cert check` and `cert import`: the inventory for people and scripts.

use super::parse_labels;
use crate::cli::{ImportArgs, ListArgs};
use crate::context::{actor, duration_arg, open_ca, CaOpts};
use crate::exit::{self, usage};
use crate::output::{self, print_json, printable, Table};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;
use time::OffsetDateTime;
use twoway_pki::CertInfo;
use twoway_store::{CertQuery, CertRecord};

/// `cert check`: what expires within the window and needs a person (see its --help).
pub(super) fn check(within: &str, ca: &CaOpts, json: bool) -> Result<ExitCode> {
    let window = duration_arg("--within", within)?;
    let c = open_ca(ca, false)?;
    let now = OffsetDateTime::now_utc();
    let page = c.list(&CertQuery {
        expiring_before: Some(now + window),
        now: Some(now),
        ..Default::default()
    })?;
    let (attention, automatic): (Vec<CertRecord>, Vec<CertRecord>) = page
        .items
        .into_iter()
        .partition(|r| c.config().needs_attention(r, now));
    // The root's CRL is signed where the root key is kept, by a person: once past its
    // nextUpdate, verifiers that check the whole chain refuse every client.
    let root_crl = c.root_crl_next_update()?;
    let root_crl_due = root_crl.is_some_and(|t| t <= now + window);
    let printed = if json {
        print_json(&serde_json::json!({
            "within": within,
            "expiring": attention,
            "auto_renewed": automatic.len(),
            "root_crl": {
                "next_update": root_crl.map(rfc3339),
                "due": root_crl_due,
            },
        }))
    } else {
        (|| -> Result<()> {
            if let Some(t) = root_crl.filter(|_| root_crl_due) {
                outln!(
                    "The root's CRL (root.crl) is valid until {}: sign a new one with \
                     `twoway crl --root` where the root key is, and copy it into the CA directory.",
                    rfc3339(t)
                )?;
            }
            if attention.is_empty() {
                outln!("Nothing expires within {within} that needs a person.")?;
            } else {
                outln!(
                    "{} certificate(s) expire within {within} and nobody renews them:",
                    attention.len()
                )?;
                out!("{}", record_table(&attention, now).render())?;
            }
            if !automatic.is_empty() {
                outln!(
                    "Not counted: {} certificate(s) that renew themselves (agent, the online CA's own, [renewal] in ca.toml) and still can.",
                    automatic.len()
                )?;
            }
            Ok(())
        })()
    };
    // The verdict stands even when the reader went away (`cert check | head -1`).
    output::unless_closed(printed)?;
    Ok(if attention.is_empty() && !root_crl_due {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::EXPIRING)
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What to do with one file given to `cert import`.
enum ImportFile {
    /// Its certificates, DER.
    Certificates(Vec<Vec<u8>>),
    /// No certificate in it (a key, a CSR, any other file), or no permission to read it.
    Skipped(String),
}

fn import_file(f: &Path) -> Result<ImportFile> {
    let bytes = match std::fs::read(f) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Ok(ImportFile::Skipped(format!("cannot read it: {e}")))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", f.display())),
    };
    let ders = match twoway_pki::parse_certificates(&bytes) {
        Ok(d) => d,
        Err(twoway_pki::Error::NoPemBlock(_)) => {
            return Ok(ImportFile::Skipped("holds no certificate".into()))
        }
        Err(e) => {
            return Err(anyhow::Error::from(e))
                .with_context(|| format!("{} holds a malformed certificate", f.display()))
        }
    };
    for der in &ders {
        CertInfo::from_der(der)
            .with_context(|| format!("{} holds a malformed certificate", f.display()))?;
    }
    Ok(ImportFile::Certificates(ders))
}

/// `cert import FILES…`: every file is read and parsed first, so a malformed one imports
/// nothing; files without a certificate are skipped and named.
pub(super) fn import(a: ImportArgs) -> Result<ExitCode> {
    let labels = parse_labels(&a.labels)?;
    let mut files = Vec::new();
    for f in &a.files {
        files.push((f.display().to_string(), import_file(f)?));
    }
    if !files
        .iter()
        .any(|(_, f)| matches!(f, ImportFile::Certificates(_)))
    {
        let names: Vec<String> = files
            .iter()
            .map(|(n, f)| match f {
                ImportFile::Skipped(why) => format!("{n} ({why})"),
                ImportFile::Certificates(_) => n.clone(),
            })
            .collect();
        return Err(twoway_ca::Error::Pki(twoway_pki::Error::NoPemBlock(
            "CERTIFICATE",
        )))
        .with_context(|| {
            format!(
                "nothing to import: no file holds a certificate: {}",
                names.join(", ")
            )
        });
    }
    let ca = open_ca(&a.ca, false)?;
    let act = actor(&a.ca);
    let mut imported = Vec::new();
    let mut skipped = Vec::new();
    for (name, f) in files {
        match f {
            ImportFile::Skipped(why) => skipped.push((name, why)),
            ImportFile::Certificates(ders) => {
                for der in ders {
                    let pem = twoway_pki::der_to_pem("CERTIFICATE", &der);
                    let res = ca
                        .import(
                            pem.as_bytes(),
                            a.owner.clone(),
                            labels.clone(),
                            a.location.clone(),
                            &act,
                        )
                        .with_context(|| format!("importing {name}"))?;
                    imported.extend(res.into_iter().map(|o| (name.clone(), o)));
                }
            }
        }
    }
    if a.json {
        let mut v: Vec<serde_json::Value> = imported
            .iter()
            .map(|(f, o)| serde_json::json!({"file": f, "outcome": o.outcome, "certificate": o.info}))
            .collect();
        v.extend(skipped.iter().map(
            |(f, why)| serde_json::json!({"file": f, "outcome": "skipped", "reason": why, "certificate": null}),
        ));
        print_json(&v)?;
    } else {
        let mut t = Table::new(&["FILE", "ID", "SUBJECT", "EXPIRES", "RESULT"]);
        for (f, o) in &imported {
            t.row(vec![
                f.clone(),
                output::id(&o.info.fingerprint),
                o.info.subject.clone(),
                output::date(o.info.not_after),
                o.outcome.to_string(),
            ]);
        }
        out!("{}", t.render())?;
        for (f, why) in &skipped {
            outln!("skipped {}: {why}", printable(f))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn list(a: ListArgs) -> Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    if let Some(s) = &a.status {
        if !["active", "revoked", "expired"].contains(&s.as_str()) {
            return Err(usage(format!(
                "--status {s:?}: use active, revoked or expired"
            )));
        }
    }
    if a.page == 0 || a.limit == 0 {
        return Err(usage("--page and --limit start at 1"));
    }
    let expiring_before = a
        .expiring
        .as_deref()
        .map(|e| duration_arg("--expiring", e).map(|d| now + d))
        .transpose()?;
    let q = CertQuery {
        expiring_before,
        expired: a.expired,
        status: a.status.clone(),
        owner: a.owner.clone(),
        labels: parse_labels(&a.labels)?.into_iter().collect(),
        san_glob: a.san.clone(),
        profile: a.profile.clone(),
        now: Some(now),
        offset: (a.page - 1) * a.limit,
        limit: a.limit,
        ..Default::default()
    };
    let ca = open_ca(&a.ca, false)?;
    let mut q = q;
    if let Some(issuer) = &a.issuer {
        q.issuer = Some(match ca.issuers()?.into_iter().find(|i| &i.id == issuer) {
            Some(i) => i.certificate.subject,
            None => issuer.clone(),
        });
    }
    let page = ca.list(&q)?;
    if a.json {
        print_json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.items.is_empty() {
        outln!("No certificates match.")?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", record_table(&page.items, now).render())?;
    if page.total > page.offset + page.items.len() || page.offset > 0 {
        output::page_line(page.offset, page.items.len(), page.total, a.page)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The listing table. Its first column, ID, is what `cert show` and `cert revoke` take.
fn record_table(items: &[CertRecord], now: OffsetDateTime) -> Table {
    let mut t = Table::new(&output::LISTING_COLUMNS);
    for r in items {
        let names = output::names_cell(&r.sans, &r.subject);
        t.row(vec![
            output::id(&r.fingerprint),
            names,
            r.profile.clone(),
            r.owner.clone().unwrap_or_else(|| "-".into()),
            r.effective_status(now).to_string(),
            format!(
                "{} ({})",
                output::date(r.not_after),
                output::relative(r.not_after, now)
            ),
        ]);
    }
    t
}

pub(super) fn print_record(r: &CertRecord) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    // Everything but our own words comes from the certificate or the inventory: each value
    // is escaped whole, so it cannot break the line or drive the terminal.
    let field = |name: &str, value: &str| outln!("{name:<12} {}", printable(value));
    field("id", &output::id(&r.fingerprint))?;
    field("serial", &r.serial)?;
    field("fingerprint", &r.fingerprint)?;
    field(
        "subject",
        if r.subject.is_empty() {
            "(empty)"
        } else {
            &r.subject
        },
    )?;
    field("issuer", &r.issuer)?;
    field("names", &r.sans.join(", "))?;
    field("profile", &r.profile)?;
    field("key type", &r.key_type)?;
    field("not before", &output::date(r.not_before))?;
    field(
        "not after",
        &format!(
            "{} ({})",
            output::date(r.not_after),
            output::relative(r.not_after, now)
        ),
    )?;
    field("status", r.effective_status(now))?;
    if let (Some(at), Some(reason)) = (r.revoked_at, &r.revocation_reason) {
        field("revoked", &format!("{} ({reason})", output::date(at)))?;
    }
    field("owner", r.owner.as_deref().unwrap_or("-"))?;
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field(
        "labels",
        &if labels.is_empty() {
            "-".into()
        } else {
            labels.join(", ")
        },
    )?;
    field("location", r.location.as_deref().unwrap_or("-"))?;
    field("source", r.source.as_str())?;
    field("recorded", &output::date(r.recorded_at))
}
