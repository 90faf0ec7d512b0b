//! Issuing a certificate with a key made here into a credential directory and/or a PKCS#12
//! file: `cert issue` and `quickstart` do it; `cert export` writes PKCS#12 files too.

use crate::cli::P12Args;
use crate::exit::usage;
use crate::output;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use twoway_ca::{Ca, IssueRequest};
use twoway_files::{Credentials, StagedFiles};
use twoway_pki::{build_pkcs12, CertInfo, KeyType, Pkcs12Encryption, PrivateKey, Profile, San};
use zeroize::Zeroizing;

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
    issue_to(ca, p, Some(out), None, force)
}

/// [`issue_to_dir`] into a credential directory, a PKCS#12 file, or both: every output is
/// checked writable and staged before the certificate is recorded, and renamed into place
/// after.
pub fn issue_to(
    ca: &Ca,
    p: IssueParams,
    out: Option<&Path>,
    p12: Option<&P12Out>,
    force: bool,
) -> Result<CertInfo> {
    use twoway_files::{CA, CERT, CHAIN, KEY};
    if let Some(out) = out {
        twoway_files::check_absent(out, &[CERT, CHAIN, KEY, CA], force)?;
    }
    if let Some(f) = p12 {
        f.check(force)?;
    }
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
    let mut files = match out {
        Some(out) => {
            let mut f = Credentials::new(out)?;
            f.key(&key.to_pem(None)?)?;
            f.ca(ca.root_pem())?;
            Some(f)
        }
        None => None,
    };
    let mut p12_file = p12.map(P12Out::stage_dir).transpose()?;
    let issued = ca.issue(&req, &key.public_key_der(), "cert.issue")?;
    let cert = issued.pem();
    if let Some(files) = files.as_mut() {
        files.certificate(&cert, &format!("{cert}{}", ca.intermediate_pem()))?;
    }
    if let (Some(f), Some(staged)) = (p12, p12_file.as_mut()) {
        let pkcs8 = zeroize::Zeroizing::new(key.key_pair().serialize_der());
        let chain = chain_der(&issued.der, ca)?;
        f.stage(staged, &pkcs8, &chain, &issued.info)?;
    }
    if let Some(files) = files {
        files.commit()?;
    }
    if let Some(staged) = p12_file {
        staged.commit()?;
    }
    Ok(issued.info)
}

/// The leaf and the intermediate, DER: what a PKCS#12 file carries as the chain.
pub fn chain_der(leaf: &[u8], ca: &Ca) -> Result<Vec<Vec<u8>>> {
    let mut chain = vec![leaf.to_vec()];
    chain.extend(twoway_pki::parse_certificates(
        ca.intermediate_pem().as_bytes(),
    )?);
    Ok(chain)
}

/// Where and how to write a PKCS#12 file (`--p12` and its options).
pub struct P12Out {
    pub path: PathBuf,
    pub passphrase: Zeroizing<String>,
    pub encryption: Pkcs12Encryption,
    pub friendly_name: Option<String>,
}

impl P12Out {
    /// From the command line: the passphrase from `--p12-passphrase-file`, else the
    /// environment variable [`P12_PASSPHRASE_ENV`], else a prompt on the terminal.
    pub fn from_args(a: &P12Args) -> Result<Option<P12Out>> {
        let Some(path) = &a.p12 else {
            if a.p12_passphrase_file.is_some() || a.legacy || a.friendly_name.is_some() {
                return Err(usage(
                    "--p12-passphrase-file, --legacy and --friendly-name go with --p12 FILE: add it",
                ));
            }
            return Ok(None);
        };
        let passphrase = p12_passphrase(a.p12_passphrase_file.as_deref())?;
        Ok(Some(P12Out {
            path: path.clone(),
            passphrase,
            encryption: if a.legacy {
                Pkcs12Encryption::Legacy
            } else {
                Pkcs12Encryption::Modern
            },
            friendly_name: a.friendly_name.clone(),
        }))
    }

    /// Fails unless the file can be written (absent, or `force`; its directory writable).
    pub fn check(&self, force: bool) -> Result<()> {
        if self.path.exists() && !force {
            return Err(twoway_files::Error::OutputExists(self.path.clone()).into());
        }
        twoway_files::check_writable(&self.path)?;
        Ok(())
    }

    fn stage_dir(&self) -> Result<StagedFiles> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok(StagedFiles::new(dir)?)
    }

    fn stage(
        &self,
        staged: &mut StagedFiles,
        pkcs8: &[u8],
        chain: &[Vec<u8>],
        info: &CertInfo,
    ) -> Result<()> {
        let name = self
            .friendly_name
            .clone()
            .or_else(|| info.sans.first().map(|s| s.value()))
            .unwrap_or_else(|| info.serial.clone());
        let der = build_pkcs12(pkcs8, chain, &name, &self.passphrase, self.encryption)?;
        let file = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| usage(format!("--p12 {}: name a file", self.path.display())))?;
        staged.stage(file, &der, twoway_files::KEY_MODE)?;
        Ok(())
    }

    /// Writes the file (0600, atomically) for `pkcs8` and `chain`.
    pub fn write(&self, pkcs8: &[u8], chain: &[Vec<u8>], info: &CertInfo) -> Result<()> {
        let mut staged = self.stage_dir()?;
        self.stage(&mut staged, pkcs8, chain, info)?;
        staged.commit()?;
        Ok(())
    }
}

/// The environment variable a PKCS#12 passphrase may come from.
pub const P12_PASSPHRASE_ENV: &str = "TWOWAY_P12_PASSPHRASE";

fn p12_passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let text = if let Some(path) = file {
        let bytes = Zeroizing::new(std::fs::read(path).with_context(|| {
            format!("cannot read the PKCS#12 passphrase file {}", path.display())
        })?);
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        Zeroizing::new(String::from_utf8(first.to_vec()).map_err(|_| {
            usage(format!(
                "the passphrase file {} is not UTF-8 text",
                path.display()
            ))
        })?)
    } else if let Some(v) = std::env::var_os(P12_PASSPHRASE_ENV) {
        Zeroizing::new(
            v.into_string()
                .map_err(|_| usage(format!("{P12_PASSPHRASE_ENV} is not UTF-8 text")))?,
        )
    } else {
        prompt_twice()?
    };
    if text.is_empty() {
        return Err(usage(
            "the PKCS#12 passphrase is empty: it is what protects the key, so give one (--p12-passphrase-file, TWOWAY_P12_PASSPHRASE or the prompt)",
        ));
    }
    Ok(text)
}

fn prompt_twice() -> Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    if !rustix::termios::isatty(&stdin) {
        return Err(usage(format!(
            "no PKCS#12 passphrase: give --p12-passphrase-file FILE or set {P12_PASSPHRASE_ENV} (standard input is not a terminal to prompt on)"
        )));
    }
    let first = prompt("PKCS#12 passphrase: ")?;
    let again = prompt("again: ")?;
    if first != again {
        return Err(usage("the two passphrases differ: run the command again"));
    }
    Ok(first)
}

/// Reads one line from the terminal with echo off (restored afterwards, also on error).
fn prompt(text: &str) -> Result<Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("cannot turn the echo off")?;
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    read.context("cannot read the passphrase")?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_string();
    Ok(Zeroizing::new(trimmed))
}
