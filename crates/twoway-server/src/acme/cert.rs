//! The certificate of a finalized order (`cert/<fingerprint>`, with its alternate chains
//! during a root rotation as `cert/<fingerprint>/<n>`) and its revocation (`revoke-cert`,
//! by the account that ordered it or by the certificate's own key).

use super::load::{Load, Loaded};
use super::{
    account_url, internal, malformed, not_found, problem, unauthorized, Answer, Ctx, Problem, Req,
};
use crate::blocking;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;

pub(super) async fn cert(ctx: &Ctx, mut req: Req, id: &str) -> Result<Answer, Problem> {
    // `<fingerprint>` is the default chain, `<fingerprint>/<n>` the n-th alternate one
    let (fp, alt) = match id.split_once('/') {
        Some((fp, n)) => (fp, Some(n)),
        None => (id, None),
    };
    let found = match req.pre.take() {
        Some(Loaded::Cert(rec)) => rec,
        _ => {
            let load = Load::Cert(fp.to_string());
            match ctx.tx(move |s| load.read(s)).await? {
                Loaded::Cert(rec) => rec,
                Loaded::With(..) => return Err(internal("an object read for a certificate")),
            }
        }
    };
    let acct = req.account()?;
    let rec = found
        .filter(|r| r.fingerprint == fp)
        .ok_or_else(|| not_found("certificate"))?;
    if rec.labels.get("acme_account") != Some(&account_url(ctx, acct)) {
        return Err(unauthorized(
            "this certificate was issued to another account",
        ));
    }
    // the chain above is its issuer's: the active intermediate's (with the cross
    // certificate and the alternate during a root rotation), or, for a certificate an
    // intermediate issued before a rotation, that intermediate's
    let ca = &ctx.state.ca;
    let by_active = rec.issuer == ca.intermediate_info().subject;
    let alternates = if by_active {
        ca.alternate_chains()
    } else {
        Vec::new()
    };
    let above = match alt {
        None if by_active => ctx.state.intermediate_pem.clone(),
        None => ca
            .issuer_pem(&rec.issuer)
            .ok_or_else(|| internal(format!("no intermediate {} here", rec.issuer)))?,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| alternates.get(i).cloned())
            .ok_or_else(|| not_found("certificate chain"))?,
    };
    let mut pem = rec.pem.clone();
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(&above);
    // every other chain of the same certificate, as `alternate` links (RFC 8555 §7.4.2)
    let up = match ca.issuer_id(&rec.issuer) {
        Some(id) if !by_active => ctx.url(&format!("issuer/{id}")),
        _ => ctx.url("issuer"),
    };
    let mut headers = vec![("link", format!("<{up}>;rel=\"up\""))];
    let others = std::iter::once(None)
        .chain((1..=alternates.len()).map(Some))
        .filter(|n| n.map(|n| n.to_string()).as_deref() != alt);
    for n in others {
        let url = match n {
            None => ctx.url(&format!("cert/{fp}")),
            Some(n) => ctx.url(&format!("cert/{fp}/{n}")),
        };
        headers.push(("link", format!("<{url}>;rel=\"alternate\"")));
    }
    Ok(Answer {
        status: StatusCode::OK,
        body: Bytes::from(pem),
        ctype: "application/pem-certificate-chain",
        headers,
    })
}

pub(super) async fn revoke(ctx: &Ctx, req: Req) -> Result<Answer, Problem> {
    let payload = req.jws.json()?;
    let der = payload["certificate"]
        .as_str()
        .and_then(|c| B64.decode(c).ok())
        .ok_or_else(|| malformed("certificate must be base64url DER"))?;
    let reason = match payload["reason"].as_u64() {
        None => twoway_pki::Reason::Unspecified,
        Some(code) => reason_of(code).ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                "badRevocationReason",
                format!("reason {code} is not a revocation reason this CA takes"),
            )
        })?,
    };
    let fp = twoway_pki::sha256_hex(&der);
    let f = fp.clone();
    let rec = ctx
        .db(move |s| Ok(s.find_certificate(&f).ok()))
        .await?
        .filter(|r| r.fingerprint == fp)
        .ok_or_else(|| unauthorized("this CA did not issue that certificate"))?;
    let allowed = match &req.account {
        Some(a) => rec.labels.get("acme_account") == Some(&account_url(ctx, a)),
        None => req.key.matches_certificate(&der),
    };
    if !allowed {
        return Err(unauthorized(
            "only the account that ordered the certificate, or its own key, may revoke it",
        ));
    }
    if rec.status == twoway_store::CertStatus::Revoked {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "alreadyRevoked",
            "the certificate is already revoked",
        ));
    }
    let actor = match &req.account {
        Some(a) => format!("acme:{}:{}", ctx.dir.name, a.id),
        None => format!("acme:{}:certificate-key", ctx.dir.name),
    };
    let ca = ctx.state.ca.clone();
    let res = blocking(move || ca.revoke(&fp, reason, &actor))
        .await
        .map_err(internal)?;
    match res {
        Ok(_) => {}
        Err(twoway_ca::Error::Store(twoway_store::Error::AlreadyRevoked(_))) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "alreadyRevoked",
                "the certificate is already revoked",
            ))
        }
        Err(e) => return Err(internal(e)),
    }
    crate::routes::invalidate(&ctx.state);
    Ok(Answer::empty(StatusCode::OK))
}

/// RFC 5280 reason codes an ACME client may give.
fn reason_of(code: u64) -> Option<twoway_pki::Reason> {
    let name = match code {
        0 => "unspecified",
        1 => "key-compromise",
        3 => "affiliation-changed",
        4 => "superseded",
        5 => "cessation-of-operation",
        _ => return None,
    };
    name.parse().ok()
}
