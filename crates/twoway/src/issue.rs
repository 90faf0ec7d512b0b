//! Issuing a certificate with a key made here into a credential directory: `cert issue`
//! and `quickstart` both do it.

use crate::output;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;
use twoway_ca::{Ca, IssueRequest};
use twoway_files::Credentials;
use twoway_pki::{CertInfo, KeyType, PrivateKey, Profile, San};

/// Everything `issue_to_dir` needs.
pub struct IssueParams {
    pub profile: Profile,
    pub sans: Vec<San>,
    pub common_name: Option<String>,
    pub ttl: Option<time::Duration>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub location: Option<String>,
    pub key_type: KeyType,
    pub actor: String,
}

/// Generates a key, stages it in `out` (so an unwritable directory fails before anything is
/// recorded), issues and records the certificate, then writes every file atomically.
pub fn issue_to_dir(ca: &Ca, p: IssueParams, out: &Path, force: bool) -> Result<CertInfo> {
    use twoway_files::{CA, CERT, CHAIN, KEY};
    twoway_files::check_absent(out, &[CERT, CHAIN, KEY, CA], force)?;
    let req = IssueRequest {
        profile: p.profile,
        sans: p.sans,
        common_name: p.common_name,
        ttl: p.ttl,
        owner: p.owner,
        labels: p.labels,
        location: p.location,
        actor: p.actor,
    };
    // Refuse a bad request before making a key or touching the disk.
    ca.check_request(&req)?;
    if p.key_type.is_rsa() {
        output::progress(&format!("generating a {} key…", p.key_type));
    }
    let key = PrivateKey::generate(p.key_type)?;
    let mut files = Credentials::new(out)?;
    files.key(&key.to_pem(None)?)?;
    files.ca(ca.root_pem())?;
    let issued = ca.issue(&req, &key.public_key_der(), "cert.issue")?;
    let cert = issued.pem();
    files.certificate(&cert, &format!("{cert}{}", ca.intermediate_pem()))?;
    files.commit()?;
    Ok(issued.info)
}
