//! `keyChange` (RFC 8555 §7.3.5): an account replaces its key. The outer JWS is signed by
//! the account (`kid`); its payload, the inner JWS, by the new key ([`KeyChange`]). The
//! account's lookup key (the thumbprint) moves to the new key by compare-and-set, so the
//! old key is refused from then on, on every replica.

use super::{account_json, account_url, malformed, problem, Answer, Ctx, Problem, Req};
use http::StatusCode;
use serde_json::json;
use time::OffsetDateTime;
use twoway_acme::keychange::KeyChange;
use twoway_store::NewAudit;

/// The 409 answer for a new key another account already has.
fn in_use(ctx: &Ctx, other: &str) -> Problem {
    let mut p = problem(
        StatusCode::CONFLICT,
        "malformed",
        "the new key is already the key of another account (see Location)",
    );
    p.location = Some(ctx.url(&format!("acct/{other}")));
    p
}

pub(super) async fn key_change(ctx: &Ctx, req: Req) -> Result<Answer, Problem> {
    let acct = req.account()?.clone();
    let kc = KeyChange::parse(&req.jws.payload, &req.jws.url)?;
    let url = account_url(ctx, &acct);
    if kc.account != url {
        return Err(malformed(format!(
            "keyChange: the inner payload names account {:?}, not the signer {url:?}",
            kc.account
        )));
    }
    if kc.old_key != req.key {
        return Err(malformed(
            "keyChange: oldKey is not the account's current key",
        ));
    }
    let thumb = kc.new_key.thumbprint();
    let t2 = thumb.clone();
    if let Some(other) = ctx.db(move |s| s.acme_find("account", &t2)).await? {
        return Err(in_use(ctx, &other.id));
    }
    let (new_json, t3, old_thumb) = (kc.new_key.to_json(), thumb.clone(), req.key.thumbprint());
    let changed = super::change(ctx, "account", &acct.id, move |o| {
        // another key change won the race: this request's oldKey is no longer the key
        if o.lookup.as_deref() != Some(old_thumb.as_str()) {
            return false;
        }
        o.doc["key"] = new_json.clone();
        o.lookup = Some(t3.clone());
        true
    })
    .await;
    let a = match changed {
        Ok((a, true)) => a,
        Ok((_, false)) => {
            return Err(malformed(
                "keyChange: the account key changed meanwhile: sign with the current key",
            ))
        }
        // the unique lookup key: the new key was taken by an account made meanwhile
        Err(e) => {
            let t = thumb.clone();
            return match ctx.db(move |s| s.acme_find("account", &t)).await? {
                Some(other) if other.id != acct.id => Err(in_use(ctx, &other.id)),
                _ => Err(e),
            };
        }
    };
    let (actor, target) = (format!("acme:{}:{}", ctx.dir.name, acct.id), url.clone());
    let audit = NewAudit {
        actor,
        action: "acme.account.key-change".into(),
        target,
        details: json!({"directory": ctx.dir.name, "new_thumbprint": thumb}),
        time: OffsetDateTime::now_utc(),
    };
    // the key changed: a failed audit write is logged (by `db`), not the answer
    let _ = ctx.db(move |s| s.append_audit(&audit).map(|_| ())).await;
    Ok(Answer::json(StatusCode::OK, &account_json(ctx, &a)).header("location", url))
}
