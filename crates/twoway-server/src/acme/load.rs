//! What an ACME request reads besides its signing account, read in the same store job as
//! its nonce and account ([`super::authenticate`]): one store call for both. It is looked
//! at only once the JWS verified.

use serde_json::Value;
use twoway_store::{AcmeObject, AcmeTx};

/// What a route reads besides its signer, read in the transaction that takes the
/// request's nonce (one store call for both).
pub(super) enum Load {
    /// An object and the objects its document names in `field` (an authorization and its
    /// challenges, an order and its authorizations, a challenge and its authorization).
    With {
        kind: &'static str,
        id: String,
        field: &'static str,
        of: &'static str,
    },
    /// A certificate of the inventory by fingerprint.
    Cert(String),
}

/// What a [`Load`] found.
pub(super) enum Loaded {
    /// The object (None: there is none) and the ones it names (None: one is missing).
    With(Option<AcmeObject>, Vec<Option<AcmeObject>>),
    /// The certificate, if there is one with that fingerprint.
    Cert(Option<Box<twoway_store::CertRecord>>),
}

impl Load {
    /// What the request to `what/id` reads.
    pub(super) fn of(what: &str, id: &str) -> Option<Load> {
        let with = |kind, field, of| Load::With {
            kind,
            id: id.to_string(),
            field,
            of,
        };
        match what {
            "authz" => Some(with("authz", "challenges", "challenge")),
            "chall" => Some(with("challenge", "authz", "authz")),
            "order" | "finalize" => Some(with("order", "authorizations", "authz")),
            // `cert/<fingerprint>`, or `cert/<fingerprint>/<n>` for an alternate chain
            "cert" => Some(Load::Cert(
                id.split_once('/').map_or(id, |(fp, _)| fp).to_string(),
            )),
            _ => None,
        }
    }

    pub(super) fn read(&self, s: &mut AcmeTx<'_>) -> twoway_store::Result<Loaded> {
        match self {
            Load::With {
                kind,
                id,
                field,
                of,
            } => {
                let Some(o) = s.get(kind, id)? else {
                    return Ok(Loaded::With(None, Vec::new()));
                };
                let mut list = Vec::new();
                for i in ids_in(&o.doc[*field]) {
                    list.push(s.get(of, &i)?);
                }
                Ok(Loaded::With(Some(o), list))
            }
            Load::Cert(fp) => Ok(Loaded::Cert(
                s.certificate(fp)?
                    .filter(|r| &r.fingerprint == fp)
                    .map(Box::new),
            )),
        }
    }
}

/// The ids a document names in one of its fields: one id, or a list of them.
pub(super) fn ids_in(v: &Value) -> Vec<String> {
    match v {
        Value::String(one) => vec![one.clone()],
        v => v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    }
}
