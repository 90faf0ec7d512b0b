//! Pre-authorized names: an account bound with an EAB key made with `--preauthorize GLOB`
//! gets authorizations that are `valid` without a challenge for identifiers matching
//! those globs (private networks no validation can reach). The directory's `allow` and
//! the CA's `[policy]` are checked before, as for every order; each such authorization is
//! audited as `acme.authz.preauthorized`.

use super::Ctx;
use serde_json::{json, Value};
use time::OffsetDateTime;
use twoway_store::{AcmeObject, NewAudit};

/// The glob of the account's EAB key that pre-authorizes `name`, if any.
pub(super) fn glob_for(acct: &AcmeObject, name: &str) -> Option<String> {
    let globs: Vec<&str> = acct.doc["preauthorize"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    twoway_ca::acme::preauthorizing_glob(&globs, name).map(str::to_string)
}

/// Audits the pre-authorized authorizations of a new order: `(authz id, name, glob)`.
pub(super) async fn audit(
    ctx: &Ctx,
    acct: &AcmeObject,
    order: &str,
    list: Vec<(String, String, String)>,
) -> Result<(), super::Problem> {
    if list.is_empty() {
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let actor = format!("acme:{}:{}", ctx.dir.name, acct.id);
    let entries: Vec<NewAudit> = list
        .into_iter()
        .map(|(authz, name, glob)| NewAudit {
            actor: actor.clone(),
            action: "acme.authz.preauthorized".into(),
            target: name,
            details: json!({"directory": ctx.dir.name, "account": acct.id, "authz": authz,
                "order": order, "eab_kid": acct.doc["eab_kid"], "glob": glob}),
            time: now,
        })
        .collect();
    ctx.db(move |s| {
        for e in &entries {
            s.append_audit(e)?;
        }
        Ok(())
    })
    .await
}
