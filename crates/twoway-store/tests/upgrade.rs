//! Upgrades: an inventory written before the schema was versioned (checked in as SQL,
//! `fixtures/inventory-unversioned.sql`, made by `twoway ca init`, `cert issue`, `cert
//! revoke` and `token create`) is opened by this version on SQLite and on PostgreSQL: every
//! row is still there and the same, the audit chain still links, the schema is recorded
//! at the current version, and opening it again changes nothing. A database whose
//! recorded version is newer than this binary knows is refused with an error that says
//! so, and nothing is written to it.
//!
//! PostgreSQL: a real server on 127.0.0.1:5432 (user postgres, trust authentication), as
//! the store's unit tests use; each test makes its own database and drops it.

use postgres::{Client, NoTls};
use twoway_store::schema::SCHEMA_VERSION;
use twoway_store::{chain_hash, CertQuery, CertStatus, Error, PostgresStore, SqliteStore, Store};

const FIXTURE: &str = include_str!("fixtures/inventory-unversioned.sql");

/// What the fixture holds, checked through the store's own reads.
fn check_fixture_data(store: &dyn Store) {
    let all = store
        .list_certificates(&CertQuery::default())
        .expect("list the upgraded inventory");
    assert_eq!(all.total, 6, "2 CA certificates and 4 issued ones");
    let revoked = store.find_certificate("41ecb56ba739").expect("svc-2 by id");
    assert_eq!(revoked.status, CertStatus::Revoked);
    assert_eq!(revoked.revocation_reason.as_deref(), Some("key-compromise"));
    assert_eq!(revoked.sans, vec!["DNS:svc-2.example.internal".to_string()]);
    assert_eq!(revoked.owner.as_deref(), Some("team-2"));
    assert!(revoked.pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let alice = store
        .find_certificate("01a21bb23edcfd498c29776f949ae4bb")
        .expect("alice by serial");
    assert_eq!(alice.profile, "client");
    assert_eq!(alice.owner.as_deref(), Some("alice"));
    // the one token, by its hash as the fixture stores it
    let hash = FIXTURE
        .lines()
        .find_map(|l| l.strip_prefix("INSERT INTO tokens VALUES('"))
        .and_then(|l| l.split('\'').next())
        .expect("a token in the fixture");
    let token = store.find_token(hash).expect("the token");
    assert_eq!(token.owner.as_deref(), Some("devices"));
    assert_eq!(token.sans, vec!["DNS:dev-1.example.internal".to_string()]);
    // the audit log: 8 entries, each hash recomputed from its fields and linked
    let log = store.audit_entries(1, 100).expect("audit entries");
    assert_eq!(log.len(), 8);
    let mut prev = String::new();
    for e in &log {
        if !prev.is_empty() {
            assert_eq!(e.prev_hash, prev, "entry {} does not link", e.seq);
        }
        let h = chain_hash(
            e.seq,
            &e.time,
            &e.actor,
            &e.action,
            &e.target,
            &e.details,
            &e.prev_hash,
        );
        assert_eq!(h, e.hash, "entry {} changed", e.seq);
        prev = e.hash.clone();
    }
    assert_eq!(log[7].action, "token.create");
}

fn sqlite_versions(path: &std::path::Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn sqlite_opens_an_unversioned_inventory_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(FIXTURE)
        .expect("load the fixture");

    // the first open upgrades (version 0 → current), the data is intact
    {
        let store = SqliteStore::open(&path).expect("open the old inventory");
        check_fixture_data(&store);
    }
    let versions: Vec<i64> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(sqlite_versions(&path), versions);
    // written by this version: opened again, nothing re-applied, the same data
    {
        let store = SqliteStore::open(&path).expect("open the upgraded inventory");
        check_fixture_data(&store);
    }
    assert_eq!(sqlite_versions(&path), versions);

    // a newer twoway recorded a version this one does not know
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, applied_at, applied_by) VALUES (?1, 0, 'twoway 99')",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let Err(err) = SqliteStore::open(&path) else {
        panic!("a newer schema was opened");
    };
    assert!(
        matches!(err, Error::SchemaTooNew { found, known } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("newer than this twoway knows") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the refused file changed"
    );
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database `twoway_upgrade_<random>`, dropped on drop.
struct TestDb(String);

impl TestDb {
    fn new() -> TestDb {
        let mut admin = Client::connect(ADMIN_URL, NoTls).unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL on 127.0.0.1:5432 as postgres ({e}); scripts/test-all \
                 starts it"
            )
        });
        let name = format!("twoway_upgrade_{:016x}", rand::random::<u64>());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        TestDb(name)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(ADMIN_URL, NoTls) {
            let _ =
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
        }
    }
}

fn pg_versions(url: &str) -> Vec<i64> {
    let mut c = Client::connect(url, NoTls).unwrap();
    c.query(
        "SELECT version FROM schema_migrations ORDER BY version",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn postgres_opens_an_unversioned_inventory_and_refuses_a_newer_one() {
    let db = TestDb::new();
    Client::connect(&db.url(), NoTls)
        .unwrap()
        .batch_execute(FIXTURE)
        .expect("the fixture is portable SQL");
    {
        let store = PostgresStore::connect(&db.url()).expect("connect to the old inventory");
        check_fixture_data(&store);
    }
    let versions: Vec<i64> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(pg_versions(&db.url()), versions);
    {
        let store = PostgresStore::connect(&db.url()).expect("connect again");
        check_fixture_data(&store);
    }
    assert_eq!(pg_versions(&db.url()), versions);

    Client::connect(&db.url(), NoTls)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, applied_at, applied_by) VALUES ($1, 0, 'twoway 99')",
            &[&(SCHEMA_VERSION + 1)],
        )
        .unwrap();
    let Err(err) = PostgresStore::connect(&db.url()) else {
        panic!("a newer schema was opened");
    };
    assert!(matches!(err, Error::SchemaTooNew { .. }), "{err:?}");
    let mut newest = versions.clone();
    newest.push(SCHEMA_VERSION + 1);
    assert_eq!(
        pg_versions(&db.url()),
        newest,
        "the refused database changed"
    );
}
