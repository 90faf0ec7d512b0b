//! A fresh PostgreSQL database per test on 127.0.0.1:5432 (user postgres, trust
//! authentication), dropped when the test ends, even when it fails.

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const START_HINT: &str = "PostgreSQL must be running on 127.0.0.1:5432 with trust \
    authentication for user postgres: start it with \
    `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
    (scripts/test-all does)";

/// A fresh database, dropped at the end even when the test fails.
pub struct TestDb {
    name: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let mut admin = postgres::Client::connect(ADMIN_URL, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL ({e}). {START_HINT}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("twoway_test_db_{}_{nanos}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        TestDb { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(ADMIN_URL, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
