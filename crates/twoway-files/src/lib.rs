//! twoway-files: crash-safe file output and the credential directory.
//!
//! Every file twoway writes goes through here: to a temporary file in the target
//! directory, fsync, then a rename over the target and an fsync of the directory, so a
//! reader sees the old file or the new one, never half. [`StagedFiles`] renames a set of
//! files into place together; [`write_atomic`] writes one. Key files are 0600.
//! [`Credentials`] is the one layout of a credential directory (`cert.pem`, `chain.pem`,
//! `key.pem` 0600, `ca.pem`) that the CLI and the agent both write.
//!
//! A leaf crate (no workspace dependency), so that the agent and the proxy write their
//! files without linking the CA, its store or any database driver.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod credentials;

pub use credentials::{Credentials, CA, CERT, CHAIN, KEY, KEY_MODE, PUBLIC_MODE};

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What can go wrong writing files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read, created or written.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An output file exists and overwriting was not asked for.
    #[error(
        "{0} already exists: choose another --out directory, or pass --force to replace the files"
    )]
    OutputExists(PathBuf),
    /// An output directory any user may write to (and so replace what is written there).
    #[error("{0} can be written by any user, who could replace the key or certificates written there: `chmod o-w {0}`, or choose a private directory")]
    UnsafeDirectory(PathBuf),
}

impl Error {
    fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// Result with the files error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Fails with [`Error::OutputExists`] if any of `names` exists in `dir`, unless `force`.
pub fn check_absent(dir: &Path, names: &[&str], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for n in names {
        let p = dir.join(n);
        if p.exists() {
            return Err(Error::OutputExists(p));
        }
    }
    Ok(())
}

/// Writes `data` to `path` atomically with the given mode (0600 for keys).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut set = StagedFiles::new(path.parent().unwrap_or(Path::new(".")))?;
    set.stage_path(path.to_path_buf(), data, mode)?;
    set.commit()
}

/// Fails unless a file can be created in the directory that will hold `path`: call it
/// before signing anything whose output goes there, so a bad path costs nothing.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut set = StagedFiles::new(dir)?;
    set.stage_path(path.to_path_buf(), b"", 0o600)?;
    drop(set);
    Ok(())
}

/// A set of files written to temporaries first and renamed into place together.
/// Dropping the set without `commit` removes the temporaries.
#[derive(Debug)]
pub struct StagedFiles {
    dir: PathBuf,
    staged: Vec<(PathBuf, PathBuf)>,
}

/// Creates `dir` and any missing parent with mode 0700, whatever the umask (a directory
/// made for a key is nobody else's business); existing directories are left as they are.
pub fn create_private_dir_all(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("cannot create directory", dir))
}

impl StagedFiles {
    /// Prepares to write into `dir`, creating it (and missing parents) 0700 if needed.
    /// A directory any user may write to is refused ([`Error::UnsafeDirectory`]): they
    /// could replace a key or a CA certificate after it is written. With the sticky bit
    /// (like `/tmp`) only the owner may rename or remove a file, and it is accepted.
    pub fn new(dir: &Path) -> Result<Self> {
        create_private_dir_all(dir)?;
        let here = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mode = fs::metadata(here)
            .map_err(Error::io("cannot read", dir))?
            .permissions()
            .mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(Error::UnsafeDirectory(dir.to_path_buf()));
        }
        Ok(StagedFiles {
            dir: dir.to_path_buf(),
            staged: Vec::new(),
        })
    }

    /// The target directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stages `name` inside the directory.
    pub fn stage(&mut self, name: &str, data: &[u8], mode: u32) -> Result<()> {
        let target = self.dir.join(name);
        self.stage_path(target, data, mode)
    }

    fn stage_path(&mut self, target: PathBuf, data: &[u8], mode: u32) -> Result<()> {
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let mut rnd = [0u8; 6];
        let _ = unique_bytes(&mut rnd);
        let tmp = target.with_file_name(format!(".{file_name}.tmp-{}", hex_encode(&rnd)));
        let write = || -> std::io::Result<()> {
            let mut f: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            // The umask may have narrowed the mode; never widened. Set it exactly.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Io {
                action: "cannot write",
                path: target,
                source: e,
            });
        }
        self.staged.push((tmp, target));
        Ok(())
    }

    /// Renames every staged file into place and syncs the directory.
    pub fn commit(mut self) -> Result<()> {
        for (tmp, target) in std::mem::take(&mut self.staged) {
            fs::rename(&tmp, &target).map_err(Error::io("cannot write", &target))?;
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for StagedFiles {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn unique_bytes(buf: &mut [u8]) -> std::result::Result<(), ()> {
    use std::time::{SystemTime, UNIX_EPOCH};
    // Uniqueness, not secrecy: the name only has to avoid collisions; create_new guards the rest.
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ u128::from(std::process::id()) << 64;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (n >> (i * 8)) as u8;
    }
    Ok(())
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key.pem");
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"secret");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut set = StagedFiles::new(d.path()).unwrap();
        set.stage("a", b"1", 0o644).unwrap();
        drop(set);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn new_directories_are_private_and_open_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let nested = d.path().join("a/b");
        StagedFiles::new(&nested).unwrap();
        assert_eq!(mode(&d.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        let open = d.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = StagedFiles::new(&open).unwrap_err();
        assert!(matches!(e, Error::UnsafeDirectory(_)), "{e}");
        assert!(e.to_string().contains("chmod o-w"), "{e}");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        StagedFiles::new(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o775)).unwrap();
        StagedFiles::new(&open).unwrap();
        // A bare file name writes to the working directory.
        StagedFiles::new(Path::new("")).unwrap();
    }
}
