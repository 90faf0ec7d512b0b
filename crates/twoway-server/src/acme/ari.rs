//! ACME Renewal Information (RFC 9773): `GET <base>/renewal-info/<certID>` tells a client
//! when to renew a certificate, and `replaces` in `newOrder` names the certificate an
//! order replaces. The window is the CA's ([`twoway_ca::Ca::ari_window`]): the last third
//! of the lifetime by default, the present after `twoway acme renew-early`.

use super::{account_url, malformed, problem, rfc, Answer, Ctx, Problem};
use crate::blocking;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use http::StatusCode;
use serde_json::{json, Value};
use time::OffsetDateTime;
use twoway_store::{AcmeObject, CertRecord, CertStatus};

/// A parsed certID: the authority key identifier (hex) and the serial (hex, as stored).
struct CertId {
    aki: String,
    serial: String,
}

fn parse_cert_id(id: &str) -> Result<CertId, Problem> {
    let bad = || {
        malformed(format!(
            "{id:?} is not a certID: base64url(authority key identifier) \".\" base64url(serial number)"
        ))
    };
    let (a, s) = id.split_once('.').ok_or_else(bad)?;
    let dec = |x: &str| B64.decode(x.trim_end_matches('=')).map_err(|_| bad());
    let (aki, serial) = (dec(a)?, dec(s)?);
    if aki.is_empty() || serial.is_empty() || serial.len() > 21 {
        return Err(bad());
    }
    Ok(CertId {
        aki: hex_lower(&aki),
        serial: twoway_pki::serial_hex(&serial),
    })
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The inventory record a certID names: the serial must match exactly and the
/// certificate's authority key identifier must be the certID's.
async fn find(ctx: &Ctx, id: &str) -> Result<CertRecord, Problem> {
    let cid = parse_cert_id(id)?;
    let serial = cid.serial.clone();
    let rec = ctx
        .db(move |s| Ok(s.find_certificate(&serial).ok()))
        .await?
        .filter(|r| r.serial == cid.serial);
    let aki_of = |r: &CertRecord| {
        twoway_pki::parse_certificates(r.pem.as_bytes())
            .ok()
            .and_then(|d| d.into_iter().next())
            .and_then(|d| twoway_pki::CertInfo::from_der(&d).ok())
            .and_then(|i| i.authority_key_id)
    };
    match rec {
        Some(r) if aki_of(&r).as_deref() == Some(cid.aki.as_str()) => Ok(r),
        _ => Err(problem(
            StatusCode::NOT_FOUND,
            "malformed",
            format!("no certificate {id} was issued by this CA"),
        )),
    }
}

/// RFC 3339 in whole seconds (some clients' parsers refuse nanoseconds).
fn whole(t: OffsetDateTime) -> String {
    rfc(t.replace_nanosecond(0).unwrap_or(t))
}

/// `GET renewal-info/<certID>`.
pub(super) async fn renewal_info(ctx: &Ctx, id: &str) -> Result<Answer, Problem> {
    let rec = find(ctx, id).await?;
    let ca = ctx.state.ca.clone();
    let (start, end) = blocking(move || ca.ari_window(&rec))
        .await
        .map_err(super::internal)?
        .map_err(super::internal)?;
    Ok(Answer::json(
        StatusCode::OK,
        &json!({"suggestedWindow": {"start": whole(start), "end": whole(end)}}),
    )
    .header("retry-after", ctx.dir.ari_retry_after_secs().to_string()))
}

/// Checks the `replaces` of a new order (RFC 9773 §5): the certificate exists, was
/// ordered by this account or certifies only names this order holds (whoever validates
/// them all could revoke it too), and was not replaced already (`alreadyReplaced`). What
/// the order keeps: the certID, the fingerprint and serial.
pub(super) async fn check_replaces(
    ctx: &Ctx,
    acct: &AcmeObject,
    v: &Value,
    names: &[String],
) -> Result<Value, Problem> {
    let id = v
        .as_str()
        .ok_or_else(|| malformed("replaces must be a certID string"))?;
    let rec = find(ctx, id).await?;
    let mine = rec.labels.get("acme_account") == Some(&account_url(ctx, acct));
    let dns: Vec<&str> = rec
        .sans
        .iter()
        .filter_map(|s| s.strip_prefix("DNS:"))
        .collect();
    let covered = !dns.is_empty()
        && dns
            .iter()
            .all(|d| names.iter().any(|n| n.eq_ignore_ascii_case(d)));
    let shares = dns
        .iter()
        .any(|d| names.iter().any(|n| n.eq_ignore_ascii_case(d)));
    if !(shares && (mine || covered)) {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "unauthorized",
            format!(
                "replaces {id}: that certificate was not ordered by this account for these identifiers"
            ),
        ));
    }
    if rec.status == CertStatus::Revoked && rec.revocation_reason.as_deref() == Some("superseded") {
        return Err(problem(
            StatusCode::CONFLICT,
            "alreadyReplaced",
            format!("certificate {} was already replaced", rec.serial),
        ));
    }
    Ok(json!({"id": id, "fingerprint": rec.fingerprint, "serial": rec.serial}))
}

/// The certificate a `replaces` names, as the order recorded it, for finalize.
pub(super) async fn replaced(ctx: &Ctx, order: &AcmeObject) -> Result<Option<CertRecord>, Problem> {
    let Some(fp) = order.doc["replaces"]["fingerprint"].as_str() else {
        return Ok(None);
    };
    let f = fp.to_string();
    let rec = ctx
        .db(move |s| Ok(s.find_certificate(&f).ok()))
        .await?
        .filter(|r| r.fingerprint == fp);
    match rec {
        Some(r)
            if r.status == CertStatus::Revoked
                && r.revocation_reason.as_deref() == Some("superseded") =>
        {
            Err(problem(
                StatusCode::CONFLICT,
                "alreadyReplaced",
                format!(
                    "certificate {} was replaced by another order meanwhile",
                    r.serial
                ),
            ))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_ids_parse_by_rfc_9773() {
        // the example of RFC 9773 §4.1
        let c = parse_cert_id("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
        assert_eq!(c.aki, "69885b6b87464041e1b37b847ba0ae2cde01c8d4");
        assert_eq!(c.serial, "87654321");
        for bad in ["", "abc", ".AIdl", "aYhb.", "a!b.c", "aYhb.AIdl.x"] {
            assert!(parse_cert_id(bad).is_err(), "{bad}");
        }
    }
}
