//! The credential directory: what `twoway cert issue`, `cert sign` and `twoway agent`
//! write, and what the proxy and every other TLS program read.

use crate::{Result, StagedFiles};
use std::path::Path;

/// The leaf certificate alone (PEM).
pub const CERT: &str = "cert.pem";
/// The leaf followed by the intermediate: what a TLS server or client presents.
pub const CHAIN: &str = "chain.pem";
/// The private key (PKCS#8 PEM), mode [`KEY_MODE`].
pub const KEY: &str = "key.pem";
/// The CA's root certificate: the trust anchor for the peer.
pub const CA: &str = "ca.pem";
/// The mode of key files.
pub const KEY_MODE: u32 = 0o600;
/// The mode of certificates.
pub const PUBLIC_MODE: u32 = 0o644;

/// A credential directory being written: each part is staged (written and fsynced under a
/// temporary name) when it is known, and [`Credentials::commit`] renames them all into
/// place. Dropping it without commit leaves the directory as it was.
#[derive(Debug)]
pub struct Credentials {
    staged: StagedFiles,
}

impl Credentials {
    /// Prepares to write into `dir` (created 0700 if missing; see [`StagedFiles::new`]).
    pub fn new(dir: &Path) -> Result<Self> {
        Ok(Credentials {
            staged: StagedFiles::new(dir)?,
        })
    }

    /// Stages `key.pem`, 0600.
    pub fn key(&mut self, pem: &str) -> Result<()> {
        self.staged.stage(KEY, pem.as_bytes(), KEY_MODE)
    }

    /// Stages `ca.pem`, the root to trust.
    pub fn ca(&mut self, root_pem: &str) -> Result<()> {
        self.staged.stage(CA, root_pem.as_bytes(), PUBLIC_MODE)
    }

    /// Stages `cert.pem` (the leaf) and `chain.pem` (the leaf and its intermediates).
    pub fn certificate(&mut self, cert_pem: &str, chain_pem: &str) -> Result<()> {
        self.staged.stage(CERT, cert_pem.as_bytes(), PUBLIC_MODE)?;
        self.staged.stage(CHAIN, chain_pem.as_bytes(), PUBLIC_MODE)
    }

    /// Renames every staged file into place and syncs the directory.
    pub fn commit(self) -> Result<()> {
        self.staged.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_four_files_with_a_private_key() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Credentials::new(d.path()).unwrap();
        c.key("KEY").unwrap();
        c.ca("ROOT").unwrap();
        c.certificate("LEAF", "LEAF+INT").unwrap();
        assert!(
            !d.path().join(CERT).exists(),
            "nothing in place before commit"
        );
        c.commit().unwrap();
        let read = |n: &str| std::fs::read_to_string(d.path().join(n)).unwrap();
        assert_eq!(
            (read(CERT), read(CHAIN), read(KEY), read(CA)),
            (
                "LEAF".into(),
                "LEAF+INT".into(),
                "KEY".into(),
                "ROOT".into()
            )
        );
        let mode = |n: &str| {
            std::fs::metadata(d.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode(KEY), mode(CERT), mode(CA)), (0o600, 0o644, 0o644));
    }
}
