//! Upgrades, on SQLite and on PostgreSQL, from inventories checked in as SQL:
//!
//! - `fixtures/inventory-unversioned.sql`, written before the schema was versioned (made
//!   by `twoway ca init`, `cert issue`, `cert revoke` and `token create`): every row is
//!   still there and the same, the audit chain still links, the schema is recorded at the
//!   current version (version 3's covering index of revoked certificates by revocation
//!   time there, version 2's gone), and opening it again changes nothing. A database whose
//!   recorded version is newer than this binary knows is refused with an error that says
//!   so, and nothing is written to it.
//! - `fixtures/schema-v1.sql`, written by the code of schema version 1 (`ca init`, four
//!   `cert issue`, `cert revoke`, `crl`): the first open applies versions 2 and 3 only; the
//!   certificates, the revocation, the CRL number, the counts and the audit chain read back
//!   as the version-1 code wrote them; one index is added, version 3's
//!   `certificates_revoked_since` (version 2's `certificates_revoked_at`, built and dropped
//!   in the same open, is gone), and the delta CRL's query (revoked since a time) finds the
//!   revocation; a second open changes nothing; and writes after the upgrade (an issuance,
//!   a revocation, a CRL number) extend the same chain and counters.
//!
//! PostgreSQL: a real server on 127.0.0.1:5432 (user postgres, trust authentication), as
//! the store's unit tests use; each test makes its own database and drops it.

use postgres::{Client, NoTls};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use twoway_store::schema::SCHEMA_VERSION;
use twoway_store::{
    chain_hash, verify_chain, CertQuery, CertRecord, CertSource, CertStatus, CrlEntry, Error,
    NewAudit, PostgresStore, SqliteStore, Store, GENESIS_HASH,
};

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
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(sqlite_versions(&path), versions);
    let indexes = sqlite_indexes(&path);
    assert!(
        indexes.contains(&"certificates_revoked_since".to_string())
            && !indexes.contains(&"certificates_revoked_at".to_string()),
        "{indexes:?}"
    );
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
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(pg_versions(&db.url()), versions);
    let indexes = pg_indexes(&db.url());
    assert!(
        indexes.contains(&"certificates_revoked_since".to_string())
            && !indexes.contains(&"certificates_revoked_at".to_string()),
        "{indexes:?}"
    );
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

// ---- from schema version 1 -------------------------------------------------------------

const FIXTURE_V1: &str = include_str!("fixtures/schema-v1.sql");

const ROOT: &str = "O=Fixture, CN=Fixture Root CA";
const INTERMEDIATE: &str = "O=Fixture, CN=Fixture Intermediate CA";

/// When the version-1 code recorded svc-b's revocation (unix seconds).
const SVC_B_REVOKED_AT: i64 = 1_795_781_910;

/// The hash of the fixture's last audit entry (8, `crl.sign`).
const V1_AUDIT_HEAD: &str = "784fdc6b3ae6a14da5085d8e20e21ac5f7e54f52b738376e156a2776446fa3a0";

/// A certificate of `fixtures/schema-v1.sql`, as the version-1 code recorded it.
struct V1Cert {
    fingerprint: &'static str,
    serial: &'static str,
    issuer: &'static str,
    owner: Option<&'static str>,
    profile: &'static str,
    sans: &'static [&'static str],
    /// Revocation time (unix seconds) and reason.
    revoked: Option<(i64, &'static str)>,
}

const V1_CERTS: &[V1Cert] = &[
    V1Cert {
        fingerprint: "da2095733caab2c8e96b9a35cb28fbb4901503a177a0602c2ac0a3d7004108fd",
        serial: "01a21cf157d9f790b4c54da1c4435bfd",
        issuer: ROOT,
        owner: None,
        profile: "ca",
        sans: &[],
        revoked: None,
    },
    V1Cert {
        fingerprint: "7aedb368fee7b5a8e4cc95adeedbd2873dde12108ec9177c8f172c86586f1508",
        serial: "01a21cf157da4a517022f3280d41f55c",
        issuer: ROOT,
        owner: None,
        profile: "ca",
        sans: &[],
        revoked: None,
    },
    V1Cert {
        fingerprint: "86efd17e81d78673076c6791f7d8c04ed122ae798424b6b50ae8531a1926db02",
        serial: "01a21cf158006e8fe6b0843675f9b9d7",
        issuer: INTERMEDIATE,
        owner: Some("team-a"),
        profile: "server",
        sans: &["DNS:svc-a.example.internal"],
        revoked: None,
    },
    V1Cert {
        fingerprint: "3c38affc9d3b2b36b2956cc859dafd7f274b36d569c45e3a50ce154b2bac33b5",
        serial: "01a21cf1581c0f5efef457785e49e463",
        issuer: INTERMEDIATE,
        owner: Some("team-b"),
        profile: "server",
        sans: &["DNS:svc-b.example.internal", "IP:10.0.0.7"],
        revoked: Some((SVC_B_REVOKED_AT, "key-compromise")),
    },
    V1Cert {
        fingerprint: "ff6755626ed9240d320fbf4d78a46207f7236bf6bb95316f04f6bf106a5b4c38",
        serial: "01a21cf15832402c148440f9e90094a3",
        issuer: INTERMEDIATE,
        owner: Some("billing"),
        profile: "client",
        sans: &["URI:spiffe://example.org/ns/prod/sa/billing"],
        revoked: None,
    },
    V1Cert {
        fingerprint: "ca2d9f810dd49d8af1bfd9372f48943e539a5244a249e07b28564851ba470398",
        serial: "01a21cf15e263d88c3ea728e6246318d",
        issuer: INTERMEDIATE,
        owner: Some("alice"),
        profile: "user",
        sans: &["EMAIL:alice@example.org"],
        revoked: None,
    },
];

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// A fixed "now" at which every certificate of the fixture is still valid (the checks
/// must not depend on the day they run).
fn v1_now() -> OffsetDateTime {
    at(SVC_B_REVOKED_AT + 60)
}

fn new_audit(action: &str, target: &str, time: OffsetDateTime) -> NewAudit {
    NewAudit {
        actor: "test:upgrade".into(),
        action: action.into(),
        target: target.into(),
        details: serde_json::json!({}),
        time,
    }
}

/// What `fixtures/schema-v1.sql` holds, read through the store after the upgrade.
fn check_v1_data(store: &dyn Store) {
    let now = v1_now();
    let page = store
        .list_certificates(&CertQuery::default())
        .expect("list the upgraded inventory");
    assert_eq!(
        page.total,
        V1_CERTS.len(),
        "2 CA certificates and 4 issued ones"
    );
    let listed: BTreeMap<&str, &CertRecord> = page
        .items
        .iter()
        .map(|r| (r.fingerprint.as_str(), r))
        .collect();
    assert_eq!(listed.len(), V1_CERTS.len());
    for want in V1_CERTS {
        let got = *listed
            .get(want.fingerprint)
            .unwrap_or_else(|| panic!("{} is not listed", want.fingerprint));
        assert_eq!(got.serial, want.serial);
        assert_eq!(got.issuer, want.issuer);
        assert_eq!(got.owner.as_deref(), want.owner, "{}", want.serial);
        assert_eq!(got.profile, want.profile);
        assert_eq!(got.sans, want.sans, "{}", want.serial);
        assert_eq!(got.source, CertSource::Issued);
        match want.revoked {
            None => {
                assert_eq!(got.status, CertStatus::Active, "{}", want.serial);
                assert_eq!(
                    (got.revoked_at, got.revocation_reason.as_deref()),
                    (None, None)
                );
            }
            Some((t, reason)) => {
                assert_eq!(got.status, CertStatus::Revoked, "{}", want.serial);
                assert_eq!(got.revoked_at, Some(at(t)));
                assert_eq!(got.revocation_reason.as_deref(), Some(reason));
            }
        }
        // found by serial, and by the 12-digit ID `cert list` shows, with its PEM
        let by_serial = store.find_certificate(want.serial).expect("by serial");
        assert_eq!(by_serial.fingerprint, want.fingerprint);
        let by_id = store
            .find_certificate(&want.fingerprint[..12])
            .expect("by ID");
        assert_eq!(by_id.serial, want.serial);
        assert!(
            by_id.pem.starts_with("-----BEGIN CERTIFICATE-----\n")
                && by_id.pem.ends_with("-----END CERTIFICATE-----\n"),
            "{}",
            by_id.pem
        );
    }
    let svc_b = store.find_certificate("3c38affc9d3b").unwrap();
    assert_eq!(
        svc_b.labels,
        BTreeMap::from([
            ("env".to_string(), "staging".to_string()),
            ("tier".to_string(), "web".to_string()),
        ])
    );
    assert_eq!(svc_b.location.as_deref(), Some("host-7"));

    // the CRL: svc-b, revoked by the version-1 code, as the complete CRL and as a delta
    let svc_b_entry = CrlEntry {
        serial: "01a21cf1581c0f5efef457785e49e463".into(),
        revoked_at: at(SVC_B_REVOKED_AT),
        reason: Some("key-compromise".into()),
    };
    assert_eq!(
        store.crl_entries(INTERMEDIATE, now).unwrap(),
        vec![svc_b_entry.clone()]
    );
    assert!(store.crl_entries(ROOT, now).unwrap().is_empty());
    let since = |t: i64| {
        store
            .crl_entries_revoked_since(INTERMEDIATE, now, at(t))
            .unwrap()
    };
    assert_eq!(since(SVC_B_REVOKED_AT - 3600), vec![svc_b_entry.clone()]);
    assert_eq!(since(SVC_B_REVOKED_AT), vec![svc_b_entry]);
    assert!(since(SVC_B_REVOKED_AT + 1).is_empty());
    let revoked = store.revoked_by_issuer(INTERMEDIATE, now).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].fingerprint, svc_b.fingerprint);
    assert_eq!(store.revocation_seq().unwrap(), 1);

    // the counts the version-1 code kept
    let owners = store.owner_summary(now, 10).unwrap();
    assert_eq!(owners.len(), 5, "{owners:?}");
    let team_b = owners
        .iter()
        .find(|o| o.owner.as_deref() == Some("team-b"))
        .expect("team-b");
    assert_eq!((team_b.total, team_b.revoked), (1, 1));
    let no_owner = owners.iter().find(|o| o.owner.is_none()).expect("the CAs");
    assert_eq!((no_owner.total, no_owner.revoked), (2, 0));

    // the audit log: 8 entries from the genesis hash, each linked and unchanged
    let log = store.audit_entries(1, 100).expect("audit entries");
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "ca.init",
            "ca.init",
            "cert.issue",
            "cert.issue",
            "cert.issue",
            "cert.issue",
            "cert.revoke",
            "crl.sign"
        ]
    );
    assert_eq!(log[0].prev_hash, GENESIS_HASH);
    assert_eq!(verify_chain(&log), vec![]);
    assert_eq!(log[7].target, "1", "CRL number 1");
    assert_eq!(log[7].hash, V1_AUDIT_HEAD);
}

/// Writes after the upgrade: an issuance, a refused duplicate, a refused second
/// revocation, a revocation found by the delta CRL's query, the next CRL number; the audit
/// chain goes on from the version-1 head.
fn write_after_v1_upgrade(store: &dyn Store) {
    let issued_at = at(SVC_B_REVOKED_AT + 1800);
    let revoked_at = at(SVC_B_REVOKED_AT + 3600);
    let now = at(SVC_B_REVOKED_AT + 7200);
    let svc_c = CertRecord {
        serial: "01a21cf1600000000000000000000001".into(),
        fingerprint: "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00".into(),
        subject: String::new(),
        issuer: INTERMEDIATE.into(),
        common_name: None,
        sans: vec!["DNS:svc-c.example.internal".into()],
        profile: "server".into(),
        key_type: "p256".into(),
        not_before: issued_at,
        not_after: issued_at + time::Duration::days(90),
        owner: Some("team-c".into()),
        labels: BTreeMap::from([("env".to_string(), "prod".to_string())]),
        location: None,
        status: CertStatus::Active,
        revoked_at: None,
        revocation_reason: None,
        source: CertSource::Issued,
        recorded_at: issued_at,
        pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
    };
    let entry = store
        .insert_certificate(&svc_c, &new_audit("cert.issue", &svc_c.serial, issued_at))
        .expect("an issuance after the upgrade");
    assert_eq!((entry.seq, entry.prev_hash.as_str()), (9, V1_AUDIT_HEAD));
    assert_eq!(store.find_certificate("c0ffee00c0ffee00").unwrap(), svc_c);

    // the version-1 constraints hold: svc-a's serial from the same issuer is refused
    let mut dup = svc_c.clone();
    dup.fingerprint = "d0d0".repeat(16);
    dup.serial = "01a21cf158006e8fe6b0843675f9b9d7".into();
    let err = store
        .insert_certificate(&dup, &new_audit("cert.issue", &dup.serial, issued_at))
        .expect_err("svc-a's serial twice");
    assert!(matches!(err, Error::Duplicate(_)), "{err:?}");
    let err = store
        .revoke(
            "3c38affc9d3b",
            revoked_at,
            "superseded",
            &new_audit("cert.revoke", "svc-b", revoked_at),
        )
        .expect_err("svc-b revoked twice");
    assert!(matches!(err, Error::AlreadyRevoked(_)), "{err:?}");

    // svc-a revoked now: the complete CRL holds both, the delta since then svc-a only
    store
        .revoke(
            "86efd17e81d7",
            revoked_at,
            "superseded",
            &new_audit("cert.revoke", "svc-a", revoked_at),
        )
        .expect("a revocation after the upgrade");
    let crl = store.crl_entries(INTERMEDIATE, now).unwrap();
    let mut serials: Vec<&str> = crl.iter().map(|e| e.serial.as_str()).collect();
    serials.sort_unstable();
    assert_eq!(
        serials,
        [
            "01a21cf158006e8fe6b0843675f9b9d7",
            "01a21cf1581c0f5efef457785e49e463"
        ]
    );
    let delta = store
        .crl_entries_revoked_since(INTERMEDIATE, now, revoked_at)
        .unwrap();
    assert_eq!(
        delta,
        vec![CrlEntry {
            serial: "01a21cf158006e8fe6b0843675f9b9d7".into(),
            revoked_at,
            reason: Some("superseded".into()),
        }]
    );
    assert_eq!(
        store
            .crl_entries_revoked_since(INTERMEDIATE, now, at(SVC_B_REVOKED_AT))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.revocation_seq().unwrap(), 2);
    assert_eq!(
        store
            .next_crl_number(&new_audit("crl.sign", "2", now))
            .unwrap(),
        2,
        "the CRL number goes on from the version-1 one"
    );

    // 8 + issuance + revocation + CRL (the refused writes left nothing), one chain
    let log = store.audit_entries(1, 100).unwrap();
    assert_eq!(log.len(), 11);
    assert_eq!(log[7].hash, V1_AUDIT_HEAD);
    assert_eq!(verify_chain(&log), vec![]);
    let owners = store.owner_summary(now, 10).unwrap();
    let count = |name: &str| {
        owners
            .iter()
            .find(|o| o.owner.as_deref() == Some(name))
            .map(|o| (o.total, o.revoked))
    };
    assert_eq!(count("team-a"), Some((1, 1)));
    assert_eq!(count("team-c"), Some((1, 0)));
}

/// Every row of the tables the version-1 code wrote, rendered, by table: what an upgrade
/// must leave alone. `schema_migrations` is read separately.
fn sqlite_v1_rows(path: &std::path::Path) -> BTreeMap<&'static str, Vec<String>> {
    let c = rusqlite::Connection::open(path).unwrap();
    [
        "certificates",
        "audit_log",
        "counters",
        "inventory_counts",
        "tokens",
        "acme_nonces",
        "acme_objects",
    ]
    .into_iter()
    .map(|table| {
        let mut st = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let n = st.column_count();
        let mut rows: Vec<String> = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        (table, rows)
    })
    .collect()
}

fn sqlite_migrations(path: &std::path::Path) -> Vec<(i64, i64, String)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT version, applied_at, applied_by FROM schema_migrations ORDER BY version")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The names of the indexes on `certificates`.
fn sqlite_indexes(path: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'certificates'
             ORDER BY name",
        )
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn sqlite_upgrades_a_version_1_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(FIXTURE_V1)
        .expect("load the fixture");
    let v1_migrations = sqlite_migrations(&path);
    assert_eq!(
        v1_migrations,
        [(1, 1_795_781_908, "twoway 0.1.0".to_string())],
        "the fixture is at version 1"
    );
    let v1_indexes = sqlite_indexes(&path);
    assert!(v1_indexes.contains(&"certificates_revoked".to_string()));
    for later in ["certificates_revoked_at", "certificates_revoked_since"] {
        assert!(
            !v1_indexes.contains(&later.to_string()),
            "version 1 has no {later}"
        );
    }
    let v1_rows = sqlite_v1_rows(&path);
    assert_eq!(v1_rows["certificates"].len(), 6);
    assert_eq!(v1_rows["audit_log"].len(), 8);

    // the first open applies versions 2 and 3 alone; the rows are untouched
    {
        let store = SqliteStore::open(&path).expect("open the version-1 inventory");
        check_v1_data(&store);
    }
    let migrations = sqlite_migrations(&path);
    assert_eq!(SCHEMA_VERSION, 3);
    assert_eq!(
        migrations.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "{migrations:?}"
    );
    assert_eq!(migrations[0], v1_migrations[0], "version 1's row is kept");
    assert_eq!(sqlite_v1_rows(&path), v1_rows, "the upgrade changed a row");
    // version 2's index is dropped by version 3, which adds its covering one
    let mut indexes = v1_indexes.clone();
    indexes.push("certificates_revoked_since".to_string());
    indexes.sort();
    assert_eq!(
        sqlite_indexes(&path),
        indexes,
        "versions 2 and 3 add one index in all"
    );

    // opened again: nothing applied, nothing changed
    {
        let store = SqliteStore::open(&path).expect("open the upgraded inventory");
        check_v1_data(&store);
    }
    assert_eq!(sqlite_migrations(&path), migrations);
    assert_eq!(sqlite_v1_rows(&path), v1_rows);
    assert_eq!(sqlite_indexes(&path), indexes);

    // and written to, then opened once more
    {
        let store = SqliteStore::open(&path).unwrap();
        write_after_v1_upgrade(&store);
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.audit_entries(1, 100).unwrap().len(), 11);
    assert_eq!(
        store
            .find_certificate("c0ffee00c0ffee00")
            .unwrap()
            .owner
            .as_deref(),
        Some("team-c")
    );
    drop(store);
    assert_eq!(sqlite_migrations(&path), migrations);
}

/// The names of the indexes on `certificates`, in byte order (not the database's collation).
fn pg_indexes(url: &str) -> Vec<String> {
    let mut c = Client::connect(url, NoTls).unwrap();
    let mut names: Vec<String> = c
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'certificates'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

#[test]
fn postgres_upgrades_a_version_1_inventory() {
    let db = TestDb::new();
    Client::connect(&db.url(), NoTls)
        .unwrap()
        .batch_execute(FIXTURE_V1)
        .expect("the fixture is portable SQL");
    assert_eq!(pg_versions(&db.url()), [1]);
    let v1_indexes = pg_indexes(&db.url());
    assert!(v1_indexes.contains(&"certificates_revoked".to_string()));
    assert!(!v1_indexes.contains(&"certificates_revoked_at".to_string()));
    assert!(!v1_indexes.contains(&"certificates_revoked_since".to_string()));
    {
        let store = PostgresStore::connect(&db.url()).expect("connect to the version-1 inventory");
        check_v1_data(&store);
    }
    assert_eq!(pg_versions(&db.url()), [1, 2, 3]);
    // version 2's index is dropped by version 3, which adds its covering one
    let mut indexes = v1_indexes.clone();
    indexes.push("certificates_revoked_since".to_string());
    indexes.sort();
    assert_eq!(pg_indexes(&db.url()), indexes);
    {
        let store = PostgresStore::connect(&db.url()).expect("connect again");
        check_v1_data(&store);
        write_after_v1_upgrade(&store);
    }
    assert_eq!(pg_versions(&db.url()), [1, 2, 3]);
    assert_eq!(pg_indexes(&db.url()), indexes);
}
