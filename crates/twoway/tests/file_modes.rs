//! Who can read and replace what twoway writes, whatever the umask: output directories
//! that will hold a key are made 0700 and a world-writable one is refused; the SQLite
//! inventory and its `-wal` and `-shm` files are 0600.
//!
//! The real `twoway` binary under `sh -c 'umask 000; …'`; only 127.0.0.1.

mod common;

use common::lab::EXIT_CANTCREAT;
use common::mode_bits as mode;
use common::online::OnlineCa;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn output_directories_are_private_even_under_umask_000() {
    let ca = OnlineCa::init();
    let d = ca.dir.path();
    ca.sh(
        "umask 000; \"$TWOWAY\" cert issue --ca-dir ca --profile server \
         --san DNS:a.example.internal --out new/deeper",
    )
    .ok();
    for dir in ["new", "new/deeper"] {
        assert_eq!(mode(&d.join(dir)), 0o700, "{dir}");
    }
    assert_eq!(mode(&d.join("new/deeper/key.pem")), 0o600);
    ca.sh("umask 000; \"$TWOWAY\" cert csr --san DNS:b.example.internal --out req/b")
        .ok();
    assert_eq!(mode(&d.join("req")), 0o700);
    assert_eq!(mode(&d.join("req/b")), 0o700);

    // A directory anyone may write to: anyone could swap the key or the CA certificate
    // for their own. Refused before anything is issued.
    std::fs::create_dir(d.join("open")).unwrap();
    std::fs::set_permissions(d.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o =
        ca.tw("cert issue --ca-dir ca --profile server --san DNS:c.example.internal --out open");
    assert_eq!(o.code, Some(EXIT_CANTCREAT), "{o}");
    assert!(
        o.stderr.contains("chmod"),
        "the error should say how to fix it:\n{o}"
    );
    assert!(common::dir_entries(&d.join("open")).is_empty());
    let csr = "cert csr --san DNS:c.example.internal --out open";
    let o = ca.tw(csr);
    assert_eq!(o.code, Some(EXIT_CANTCREAT), "{o}");
    // With the sticky bit (like /tmp) nobody else may rename or remove our files: accepted.
    std::fs::set_permissions(d.join("open"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    ca.tw(csr).ok();
    assert_eq!(mode(&d.join("open/key.pem")), 0o600);
}

/// Waits (bounded) until `path` exists.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_sqlite_inventory_and_its_wal_and_shm_are_private_under_umask_000() {
    let mut ca = OnlineCa::init_with("umask 000;");
    let d = ca.dir.path().to_path_buf();
    assert_eq!(mode(&d.join("ca")), 0o700);
    for f in ["inventory.db", "inventory.db-wal", "inventory.db-shm"] {
        let p = d.join("ca").join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f} after ca init");
        }
    }
    // A server on the CA directory's inventory, then one on a new database file, both
    // started under umask 000: every file of each database is 0600 while they run.
    ca.serve_with("umask 000;", &[]);
    for f in ["inventory.db", "inventory.db-wal", "inventory.db-shm"] {
        let p = d.join("ca").join(f);
        wait_for(&p);
        assert_eq!(mode(&p), 0o600, "{f} beside a running server");
    }
    let url = format!("sqlite://{}", d.join("other.db").display());
    ca.serve_with("umask 000;", &["--database", &url]);
    for f in ["other.db", "other.db-wal", "other.db-shm"] {
        let p = d.join(f);
        wait_for(&p);
        assert_eq!(mode(&p), 0o600, "{f} of --database {url}");
    }
}
