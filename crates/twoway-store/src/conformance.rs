//! One test suite for every engine: each function takes `&dyn Store`, and
//! [`conformance_tests!`] makes one test of each for an engine (SQLite's and PostgreSQL's
//! test modules call it with a fresh store).

use crate::audit::verify_chain;
use crate::{
    AcmeObject, CertQuery, CertRecord, CertSource, CertStatus, Error, Issuance, IssueExtras,
    NewAudit, Store, TokenRecord,
};
use time::OffsetDateTime;

/// One `#[test]` per check of the suite; `$store` makes a fresh, empty store (anything
/// that derefs to one), once per test.
macro_rules! conformance_tests {
    ($store:expr) => {
        $crate::conformance::conformance_tests!(@each $store;
            insert_find_revoke_list_and_chain,
            tokens_and_supersession,
            leading_zero_fingerprints,
            plain_batches,
            batch_with_failures,
            group_commit,
            all_zero_prefixes_are_literal,
            san_glob_stays_linear,
            pages_read_only_their_rows,
            filters_match_exactly,
            acme_nonces_are_single_use_and_expire,
            acme_objects_compare_and_set,
            acme_exchange_and_modify,
            acme_batches_roll_back_a_failed_job_alone,
            dashboard_views_counts_and_prune,
            keyset_pages_match_offset_pages,
            expiry_windows_list_in_order,
        );
    };
    (@each $store:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let store = $store;
                $crate::conformance::$check(&*store);
            }
        )*
    };
}
pub(crate) use conformance_tests;

pub(crate) fn rec(fp: &str, serial: &str) -> CertRecord {
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    CertRecord {
        serial: serial.into(),
        fingerprint: fp.into(),
        subject: "".into(),
        issuer: "CN=I".into(),
        common_name: None,
        sans: vec!["DNS:a.example.internal".into()],
        profile: "server".into(),
        key_type: "p256".into(),
        not_before: now,
        not_after: now + time::Duration::days(30),
        owner: Some("team-a".into()),
        labels: [("env".to_string(), "prod".to_string())].into(),
        location: None,
        status: CertStatus::Active,
        revoked_at: None,
        revocation_reason: None,
        source: CertSource::Issued,
        recorded_at: now,
        pem: "PEM".into(),
    }
}

pub(crate) fn audit(action: &str) -> NewAudit {
    NewAudit {
        actor: "test".into(),
        action: action.into(),
        target: "x".into(),
        details: serde_json::json!({}),
        time: OffsetDateTime::now_utc(),
    }
}

fn token(hash: &str, expires_in: time::Duration) -> TokenRecord {
    let now = OffsetDateTime::now_utc();
    TokenRecord {
        hash: hash.into(),
        sans: vec!["DNS:t.example.internal".into()],
        profile: "server".into(),
        owner: Some("team-t".into()),
        cert_ttl: Some(3600),
        created_by: "test".into(),
        created_at: now,
        expires_at: now + expires_in,
        used_at: None,
        used_by: None,
    }
}

/// A fingerprint that starts with "00" (one in 256 do) is found whole and by prefix, and
/// its certificate can be revoked by it; a serial is still found with or without a
/// leading zero byte.
pub(crate) fn leading_zero_fingerprints(s: &dyn Store) {
    let fp = "009f71f746671a163ce62ca63a33c61808f8f0717b63d67d111cf1af06238119";
    s.insert_certificate(&rec(fp, "5101aa4802"), &audit("cert.issue"))
        .unwrap();
    assert_eq!(s.find_certificate(fp).unwrap().fingerprint, fp);
    assert_eq!(s.find_certificate("009f71f746").unwrap().fingerprint, fp);
    assert_eq!(s.find_certificate("005101aa4802").unwrap().fingerprint, fp);
    assert_eq!(s.find_certificate("5101aa4802").unwrap().fingerprint, fp);
    s.revoke(
        fp,
        OffsetDateTime::now_utc(),
        "key-compromise",
        &audit("cert.revoke"),
    )
    .unwrap();
    assert_eq!(s.find_certificate(fp).unwrap().status, CertStatus::Revoked);
}

/// Insert, find, revoke, list, CRL numbers and the audit chain.
pub(crate) fn insert_find_revoke_list_and_chain(s: &dyn Store) {
    s.insert_certificate(&rec("aa11aa11aa11", "0102030405"), &audit("cert.issue"))
        .unwrap();
    s.insert_certificate(&rec("bb22bb22bb22", "0a0b0c0d0e"), &audit("cert.issue"))
        .unwrap();
    assert!(matches!(
        s.insert_certificate(&rec("aa11aa11aa11", "99"), &audit("cert.issue")),
        Err(Error::Duplicate(_))
    ));
    // same serial from the same issuer under another fingerprint: refused by constraint
    assert!(matches!(
        s.insert_certificate(&rec("cc33cc33cc33", "0102030405"), &audit("cert.issue")),
        Err(Error::Duplicate(_))
    ));
    // a failed insert leaves no audit entry
    assert_eq!(s.audit_entries(1, 100).unwrap().len(), 2);
    assert_eq!(s.find_certificate("0102030405").unwrap().pem, "PEM");
    assert_eq!(s.find_certificate("bb22bb22").unwrap().serial, "0a0b0c0d0e");
    assert!(matches!(
        s.find_certificate("ffff"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.find_certificate("not hex%"),
        Err(Error::NotFound(_))
    ));
    assert_eq!(s.revocation_seq().unwrap(), 0);
    s.revoke(
        "aa11aa11aa11",
        OffsetDateTime::now_utc(),
        "superseded",
        &audit("cert.revoke"),
    )
    .unwrap();
    assert_eq!(s.revocation_seq().unwrap(), 1);
    assert!(matches!(
        s.revoke(
            "aa11aa11aa11",
            OffsetDateTime::now_utc(),
            "superseded",
            &audit("x")
        ),
        Err(Error::AlreadyRevoked(_))
    ));
    assert_eq!(s.revocation_seq().unwrap(), 1);
    let since = OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap();
    let revoked = s.revoked_by_issuer("CN=I", since).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].serial, "0102030405");
    assert_eq!(revoked[0].revocation_reason.as_deref(), Some("superseded"));
    let q = CertQuery {
        status: Some("revoked".into()),
        now: Some(since),
        ..Default::default()
    };
    assert_eq!(s.list_certificates(&q).unwrap().total, 1);
    let q = CertQuery {
        status: Some("active".into()),
        now: Some(since),
        ..Default::default()
    };
    assert_eq!(s.list_certificates(&q).unwrap().total, 1);
    let q = CertQuery {
        san_glob: Some("*.example.internal".into()),
        ..Default::default()
    };
    assert_eq!(s.list_certificates(&q).unwrap().total, 2);
    let q = CertQuery {
        labels: vec![("env".into(), "dev".into())],
        ..Default::default()
    };
    assert_eq!(s.list_certificates(&q).unwrap().total, 0);
    let q = CertQuery {
        owner: Some("team-a".into()),
        limit: 1,
        ..Default::default()
    };
    let page = s.list_certificates(&q).unwrap();
    assert_eq!((page.total, page.items.len()), (2, 1));
    assert!(page.items[0].pem.is_empty(), "listings carry no PEM");
    let counts = s.count_by_status().unwrap();
    assert!(counts.contains(&("revoked".to_string(), 1)), "{counts:?}");
    assert_eq!(s.next_crl_number(&audit("crl.sign")).unwrap(), 1);
    assert_eq!(s.next_crl_number(&audit("crl.sign")).unwrap(), 2);
    let entries = s.audit_entries(1, 100).unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[4].target, "2", "the CRL entry names its number");
    assert!(verify_chain(&entries).is_empty());
    assert_eq!(s.audit_entries(4, 1).unwrap().len(), 1);
    // tamper: alter one entry, drop another
    let mut altered = entries.clone();
    altered[1].actor = "mallory".into();
    assert_eq!(verify_chain(&altered)[0].seq, 2);
    let mut removed = entries.clone();
    removed.remove(2);
    assert!(!verify_chain(&removed).is_empty());
}

/// Tokens: stored, found, consumed once with the certificate, refused when used, expired
/// or unknown, and supersession in the same transaction.
pub(crate) fn tokens_and_supersession(s: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    s.insert_token(
        &token("t1", time::Duration::hours(1)),
        &audit("token.create"),
    )
    .unwrap();
    s.insert_token(
        &token("t2", -time::Duration::hours(1)),
        &audit("token.create"),
    )
    .unwrap();
    assert!(matches!(
        s.insert_token(
            &token("t1", time::Duration::hours(1)),
            &audit("token.create")
        ),
        Err(Error::Duplicate(_))
    ));
    let t = s.find_token("t1").unwrap();
    assert_eq!(t.cert_ttl, Some(3600));
    assert_eq!(t.used_at, None);
    assert!(matches!(s.find_token("nope"), Err(Error::TokenUnknown)));

    let with_token = |h: &str| IssueExtras {
        consume_token: Some(h.into()),
        supersede: None,
        supersede_audit: None,
        now,
    };
    s.record_issuance(
        &rec("f1f1f1f1", "11"),
        &audit("cert.enroll"),
        &with_token("t1"),
    )
    .unwrap();
    assert_eq!(
        s.find_token("t1").unwrap().used_by.as_deref(),
        Some("f1f1f1f1")
    );
    // used, expired, unknown: nothing recorded
    let before = s.audit_entries(1, 1000).unwrap().len();
    assert!(matches!(
        s.record_issuance(
            &rec("f2f2f2f2", "12"),
            &audit("cert.enroll"),
            &with_token("t1")
        ),
        Err(Error::TokenUsed(_))
    ));
    assert!(matches!(
        s.record_issuance(
            &rec("f2f2f2f2", "12"),
            &audit("cert.enroll"),
            &with_token("t2")
        ),
        Err(Error::TokenExpired(_))
    ));
    assert!(matches!(
        s.record_issuance(
            &rec("f2f2f2f2", "12"),
            &audit("cert.enroll"),
            &with_token("t9")
        ),
        Err(Error::TokenUnknown)
    ));
    assert_eq!(s.audit_entries(1, 1000).unwrap().len(), before);
    assert!(matches!(
        s.find_certificate("f2f2f2f2"),
        Err(Error::NotFound(_))
    ));
    // a token is not spent by an issuance that fails later in the transaction
    s.insert_token(
        &token("t3", time::Duration::hours(1)),
        &audit("token.create"),
    )
    .unwrap();
    assert!(matches!(
        s.record_issuance(
            &rec("f1f1f1f1", "13"),
            &audit("cert.enroll"),
            &with_token("t3")
        ),
        Err(Error::Duplicate(_))
    ));
    assert_eq!(s.find_token("t3").unwrap().used_at, None);

    // renewal supersedes the old certificate atomically
    let seq = s.revocation_seq().unwrap();
    let renew = IssueExtras {
        consume_token: None,
        supersede: Some("f1f1f1f1".into()),
        supersede_audit: Some(audit("cert.supersede")),
        now,
    };
    s.record_issuance(&rec("f3f3f3f3", "14"), &audit("cert.renew"), &renew)
        .unwrap();
    assert_eq!(s.revocation_seq().unwrap(), seq + 1);
    let old = s.find_certificate("f1f1f1f1").unwrap();
    assert_eq!(old.status, CertStatus::Revoked);
    assert_eq!(old.revocation_reason.as_deref(), Some("superseded"));
    // superseding it again fails and records nothing
    assert!(matches!(
        s.record_issuance(&rec("f4f4f4f4", "15"), &audit("cert.renew"), &renew),
        Err(Error::AlreadyRevoked(_))
    ));
    assert!(matches!(
        s.find_certificate("f4f4f4f4"),
        Err(Error::NotFound(_))
    ));
    assert!(verify_chain(&s.audit_entries(1, 1000).unwrap()).is_empty());
}

/// Two handles on one database (two connections or pools, as two processes would have),
/// writing from several threads at once: the audit chain stays linear, every certificate is
/// recorded once, a token is consumed by exactly one of its racers, and each revocation
/// bumps the counter once.
pub(crate) fn concurrent_writers(a: &dyn Store, b: &dyn Store) {
    const PER_THREAD: usize = 15;
    let stores = [a, b];
    for i in 0..4 {
        stores[i % 2]
            .insert_token(
                &token(&format!("race{i}"), time::Duration::hours(1)),
                &audit("token.create"),
            )
            .unwrap();
    }
    let base_audit = a.audit_entries(1, 100_000).unwrap().len();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..4usize {
            let s = stores[t % 2];
            handles.push(scope.spawn(move || {
                let mut won = 0usize;
                for i in 0..PER_THREAD {
                    let fp = format!("c{t:02}{i:04}ffff");
                    s.insert_certificate(
                        &rec(&fp, &format!("7{t:02}{i:04}")),
                        &audit("cert.issue"),
                    )
                    .unwrap();
                    s.append_audit(&audit("note")).unwrap();
                    // every thread races for every token
                    let extras = IssueExtras {
                        consume_token: Some(format!("race{}", i % 4)),
                        supersede: None,
                        supersede_audit: None,
                        now: OffsetDateTime::now_utc(),
                    };
                    let fp2 = format!("d{t:02}{i:04}eeee");
                    match s.record_issuance(
                        &rec(&fp2, &format!("8{t:02}{i:04}")),
                        &audit("cert.enroll"),
                        &extras,
                    ) {
                        Ok(_) => won += 1,
                        Err(Error::TokenUsed(_)) => {}
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
                won
            }));
        }
        let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(won, 4, "each token is consumed exactly once");
    });
    let entries = b.audit_entries(1, 100_000).unwrap();
    assert_eq!(entries.len(), base_audit + 4 * PER_THREAD * 2 + 4);
    assert!(verify_chain(&entries).is_empty(), "the chain stays linear");
    let all = a.list_certificates(&CertQuery::default()).unwrap();
    assert_eq!(all.total, 4 * PER_THREAD + 4);
    // concurrent revocations of distinct certificates each count once; of the same one,
    // only one wins
    let before = a.revocation_seq().unwrap();
    std::thread::scope(|scope| {
        let hs: Vec<_> = (0..4usize)
            .map(|t| {
                let s = stores[t % 2];
                scope.spawn(move || {
                    let own = s.revoke(
                        &format!("c{t:02}0000ffff"),
                        OffsetDateTime::now_utc(),
                        "key-compromise",
                        &audit("cert.revoke"),
                    );
                    assert!(own.is_ok(), "{own:?}");
                    s.revoke(
                        "c000001ffff",
                        OffsetDateTime::now_utc(),
                        "key-compromise",
                        &audit("cert.revoke"),
                    )
                    .is_ok()
                })
            })
            .collect();
        let wins = hs.into_iter().map(|h| h.join().unwrap());
        assert_eq!(wins.filter(|w| *w).count(), 1);
    });
    assert_eq!(a.revocation_seq().unwrap(), before + 5);
    assert_eq!(b.revocation_seq().unwrap(), before + 5);
    assert!(verify_chain(&a.audit_entries(1, 100_000).unwrap()).is_empty());
}

/// Many threads issuing at once through one handle (so their issuances share
/// transactions): every certificate is recorded exactly once with its own audit entry, the
/// chain stays linear, and the duplicates and spent tokens scattered among them fail alone.
pub(crate) fn group_commit(s: &dyn Store) {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 40;
    s.insert_certificate(&rec("d0d0d0d0", "dd"), &audit("cert.issue"))
        .unwrap();
    s.insert_token(
        &token("gc-token", time::Duration::hours(1)),
        &audit("token.create"),
    )
    .unwrap();
    let base_audit = s.audit_entries(1, 100_000).unwrap().len();
    let (ok, dup, used) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let (mut ok, mut dup, mut used) = (0usize, 0usize, 0usize);
                    for i in 0..PER_THREAD {
                        let fp = format!("e{t:02}{i:04}abcd");
                        let mut extras = IssueExtras::none(OffsetDateTime::now_utc());
                        // every 10th issuance of each thread repeats a recorded serial
                        let serial = if i % 10 == 5 {
                            "dd".to_string()
                        } else {
                            format!("9{t:02}{i:04}")
                        };
                        // and every thread races once for one token
                        if i == 7 {
                            extras.consume_token = Some("gc-token".into());
                        }
                        match s.record_issuance(&rec(&fp, &serial), &audit("cert.sign"), &extras) {
                            Ok(e) => {
                                assert_eq!(e.action, "cert.sign");
                                ok += 1;
                            }
                            Err(Error::Duplicate(_)) => dup += 1,
                            Err(Error::TokenUsed(_)) => used += 1,
                            Err(e) => panic!("unexpected: {e}"),
                        }
                    }
                    (ok, dup, used)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    });
    assert_eq!(dup, THREADS * PER_THREAD / 10, "every duplicate fails");
    assert_eq!(used, THREADS - 1, "the token is spent once");
    assert_eq!(ok, THREADS * PER_THREAD - dup - used);
    let entries = s.audit_entries(1, 100_000).unwrap();
    assert_eq!(
        entries.len(),
        base_audit + ok,
        "one audit entry per recorded certificate"
    );
    assert!(verify_chain(&entries).is_empty(), "the chain stays linear");
    let all = s.list_certificates(&CertQuery::default()).unwrap();
    assert_eq!(all.total, ok + 1);
    let mut fps: Vec<_> = all.items.iter().map(|r| r.fingerprint.clone()).collect();
    fps.sort();
    fps.dedup();
    assert_eq!(fps.len(), ok + 1, "no certificate is recorded twice");
    assert!(
        s.find_token("gc-token").unwrap().used_at.is_some(),
        "the token was consumed"
    );
}

/// A batch of `record_issuances` where the second and third issuances fail (a duplicate
/// serial, an unknown token): they alone are rolled back, and the audit chain stays whole.
pub(crate) fn batch_with_failures(store: &dyn Store) {
    store
        .insert_certificate(&rec("aa00", "01"), &audit("a"))
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let mut used = IssueExtras::none(now);
    used.consume_token = Some("no-such-token".into());
    let job = |rec, audit, extras| Issuance { rec, audit, extras };
    let batch = [
        job(rec("bb00", "02"), audit("b"), IssueExtras::none(now)),
        // same serial as the recorded one
        job(rec("cc00", "01"), audit("c"), IssueExtras::none(now)),
        job(rec("dd00", "04"), audit("d"), used),
        job(rec("ee00", "05"), audit("e"), IssueExtras::none(now)),
    ];
    let results = store.record_issuances(&batch).unwrap();
    assert_eq!(results.len(), 4);
    assert!(store.record_issuances(&[]).unwrap().is_empty());
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(Error::Duplicate(_))));
    assert!(matches!(results[2], Err(Error::TokenUnknown)));
    assert_eq!(
        results[3].as_ref().unwrap().seq,
        3,
        "seq continues past the failures"
    );
    assert!(store.find_certificate("bb00").is_ok());
    assert!(store.find_certificate("ee00").is_ok());
    assert!(matches!(
        store.find_certificate("cc00"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.find_certificate("dd00"),
        Err(Error::NotFound(_))
    ));
    let entries = store.audit_entries(1, 100).unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e.action.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "e"]
    );
    assert!(verify_chain(&entries).is_empty());
}

/// Batches of plain issuances (no token, no supersession), which an engine may record
/// with one statement per table: all recorded with a continuous audit chain; and with a
/// duplicate serial in the middle, the duplicate alone fails.
pub(crate) fn plain_batches(store: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    let job = |fp: &str, serial: &str, action: &str| Issuance {
        rec: rec(fp, serial),
        audit: audit(action),
        extras: IssueExtras::none(now),
    };
    let first: Vec<Issuance> = (0..40)
        .map(|i| job(&format!("f{i:03}"), &format!("1{i:03}"), &format!("p{i}")))
        .collect();
    let results = store.record_issuances(&first).unwrap();
    assert_eq!(results.len(), 40);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().seq, i as i64 + 1);
    }
    assert_eq!(
        store.find_certificate("f039").unwrap().serial,
        "1039",
        "the last row of the batch is recorded whole"
    );
    let second = [
        job("aa01", "2001", "q0"),
        job("aa02", "1005", "q1"), // the serial of f005
        job("aa03", "2003", "q2"),
    ];
    let results = store.record_issuances(&second).unwrap();
    assert_eq!(results[0].as_ref().unwrap().seq, 41);
    assert!(
        matches!(results[1], Err(Error::Duplicate(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().seq, 42);
    assert!(matches!(
        store.find_certificate("aa02"),
        Err(Error::NotFound(_))
    ));
    let entries = store.audit_entries(1, 100).unwrap();
    assert_eq!(entries.len(), 42);
    assert_eq!(entries[41].action, "q2");
    assert!(verify_chain(&entries).is_empty());
    let page = store
        .list_certificates(&CertQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.total, 42);
}

/// A certificate recorded `secs` after the base time, with these SANs, owner and labels.
fn rec_at(i: usize, secs: i64, sans: &[&str], owner: &str, labels: &[(&str, &str)]) -> CertRecord {
    let mut r = rec(&format!("{i:08x}f00d"), &format!("6{i:07x}"));
    r.recorded_at += time::Duration::seconds(secs);
    r.sans = sans.iter().map(|s| s.to_string()).collect();
    r.owner = Some(owner.into());
    r.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    r
}

/// Records `recs` through batches, as the online CA does.
fn record_all(s: &dyn Store, recs: Vec<CertRecord>) {
    let now = OffsetDateTime::now_utc();
    let jobs: Vec<Issuance> = recs
        .into_iter()
        .map(|rec| Issuance {
            rec,
            audit: audit("cert.issue"),
            extras: IssueExtras::none(now),
        })
        .collect();
    for chunk in jobs.chunks(500) {
        for r in s.record_issuances(chunk).unwrap() {
            r.unwrap();
        }
    }
}

fn fps(page: &crate::Page<CertRecord>) -> Vec<String> {
    page.items.iter().map(|r| r.fingerprint.clone()).collect()
}

/// A key of eight or more zeros is a literal prefix: it names no serial (serials are
/// stored without leading zero bytes), so it finds nothing, revokes nothing, and never
/// matches every certificate.
pub(crate) fn all_zero_prefixes_are_literal(s: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    let keys = ["00000000", "0000000000", "00:00:00:00", "0000000000000000"];
    s.insert_certificate(&rec("ab12ab12ab12", "0102030405"), &audit("cert.issue"))
        .unwrap();
    for key in keys {
        let found = s.find_certificate(key);
        assert!(matches!(found, Err(Error::NotFound(_))), "{key}: {found:?}");
    }
    let revoked = s.revoke("00000000", now, "key-compromise", &audit("cert.revoke"));
    assert!(matches!(revoked, Err(Error::NotFound(_))), "{revoked:?}");
    assert_eq!(s.revocation_seq().unwrap(), 0, "nothing was revoked");
    s.insert_certificate(&rec("cd34cd34cd34", "0a0b0c0d0e"), &audit("cert.issue"))
        .unwrap();
    for key in keys {
        let found = s.find_certificate(key);
        assert!(matches!(found, Err(Error::NotFound(_))), "{key}: {found:?}");
    }
    // leading zero bytes before a real serial or serial prefix are still stripped
    assert_eq!(
        s.find_certificate("000102030405").unwrap().fingerprint,
        "ab12ab12ab12"
    );
    assert_eq!(
        s.find_certificate("0000010203").unwrap().fingerprint,
        "ab12ab12ab12"
    );
    assert_eq!(
        s.find_certificate("0a0b0c0d").unwrap().fingerprint,
        "cd34cd34cd34"
    );
}

/// `*aaaaaaaa*a*a*a…b` (exponential for a backtracking matcher) against 10,000 rows whose
/// SANs are long runs of `a`: the answer comes at once. The bound is generous; the point is "not
/// exponential".
pub(crate) fn san_glob_stays_linear(s: &dyn Store) {
    let long = format!("DNS:{}.example", "a".repeat(60));
    record_all(
        s,
        (0..10_000)
            .map(|i| rec_at(i, 0, &[long.as_str()], "team-a", &[]))
            .collect(),
    );
    // its longest literal run, `aaaaaaaa`, is in every row: SQL lets them all through and
    // the glob itself decides, 20,000 times
    let glob = format!("*{}{}b", "a".repeat(8), "*a".repeat(30));
    let started = std::time::Instant::now();
    let page = s
        .list_certificates(&CertQuery {
            san_glob: Some(glob),
            limit: 50,
            ..Default::default()
        })
        .unwrap();
    let took = started.elapsed();
    eprintln!("a pathological glob over 10,000 rows: {took:?}");
    assert_eq!((page.total, page.items.len()), (0, 0));
    assert!(
        took < std::time::Duration::from_secs(2),
        "a pathological glob over 10,000 rows took {took:?}"
    );
    let page = s
        .list_certificates(&CertQuery {
            san_glob: Some(format!("{}.example", "*a".repeat(30))),
            limit: 50,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((page.total, page.items.len()), (10_000, 50));
}

/// Listing order, paging and what a page costs: without a SAN glob a page reads its own
/// rows and no others, whatever the filters; with one, the candidates are examined but
/// the answer is the same as filtering everything.
pub(crate) fn pages_read_only_their_rows(s: &dyn Store) {
    // 300 certificates, three to a second (ties are ordered by fingerprint)
    record_all(
        s,
        (0..300)
            .map(|i| {
                let owner = if i % 2 == 0 { "team-even" } else { "team-odd" };
                let env = if i % 3 == 0 { "prod" } else { "dev" };
                let san = format!("DNS:svc-{i}.ns-{}.example.internal", i % 4);
                rec_at(i, (i / 3) as i64, &[san.as_str()], owner, &[("env", env)])
            })
            .collect(),
    );
    let all = s.list_certificates(&CertQuery::default()).unwrap();
    assert_eq!((all.total, all.items.len()), (300, 300));
    for w in all.items.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            a.recorded_at > b.recorded_at
                || (a.recorded_at == b.recorded_at && a.fingerprint < b.fingerprint),
            "newest first, then by fingerprint: {} before {}",
            a.fingerprint,
            b.fingerprint
        );
    }
    let mut paged = Vec::new();
    for page in 0..7 {
        let before = s.certificate_rows_read();
        let p = s
            .list_certificates(&CertQuery {
                offset: page * 50,
                limit: 50,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.total, 300);
        assert_eq!(
            s.certificate_rows_read() - before,
            p.items.len() as u64,
            "page {page} reads its own rows only"
        );
        paged.extend(fps(&p));
    }
    assert_eq!(paged, fps(&all), "pages put together are the whole listing");
    // owner and labels are SQL too: a page reads the rows it shows
    let q = CertQuery {
        owner: Some("team-even".into()),
        labels: vec![("env".into(), "prod".into())],
        limit: 20,
        ..Default::default()
    };
    let before = s.certificate_rows_read();
    let p = s.list_certificates(&q).unwrap();
    assert_eq!((p.total, p.items.len()), (50, 20));
    assert_eq!(s.certificate_rows_read() - before, 20);
    assert!(p
        .items
        .iter()
        .all(|r| r.owner.as_deref() == Some("team-even") && r.labels["env"] == "prod"));
    // a SAN glob: the same rows, in the same order, as filtering the whole listing
    let glob = "*.ns-1.example.internal";
    let expected: Vec<String> = all
        .items
        .iter()
        .filter(|r| r.sans[0].ends_with(".ns-1.example.internal"))
        .map(|r| r.fingerprint.clone())
        .collect();
    let p = s
        .list_certificates(&CertQuery {
            san_glob: Some(glob.into()),
            offset: 10,
            limit: 30,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(p.total, 75);
    assert_eq!(fps(&p), expected[10..40]);
    let p = s
        .list_certificates(&CertQuery {
            san_glob: Some(glob.into()),
            offset: 70,
            limit: 30,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((p.total, fps(&p)), (75, expected[70..].to_vec()));
    let p = s
        .list_certificates(&CertQuery {
            offset: 400,
            limit: 30,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (p.total, p.items.len()),
        (300, 0),
        "past the end: an empty page"
    );
}

/// Labels match exactly (key and value, case, JSON escapes, LIKE metacharacters), and
/// the SAN glob as documented: ASCII case ignored, `?` one character, `*` any run, the
/// whole SAN or its value, other characters literal.
pub(crate) fn filters_match_exactly(s: &dyn Store) {
    let recs = vec![
        rec_at(1, 1, &["DNS:API.Example.internal"], "o", &[("env", "prod")]),
        rec_at(2, 2, &["DNS:a-1.x"], "o", &[("x", "1\",\"env\":\"prod")]),
        rec_at(
            3,
            3,
            &["DNS:axb.example"],
            "o",
            &[("env", "prod2"), ("team", "x")],
        ),
        rec_at(4, 4, &["DNS:a_b.example"], "o", &[("env", "PROD")]),
        rec_at(5, 5, &["URI:urn:x\"y"], "o", &[("a,\"env", "prod")]),
        rec_at(
            6,
            6,
            &["DNS:é.example"],
            "o",
            &[("env", "prod"), ("team", "x")],
        ),
        rec_at(7, 7, &["IP:10.0.0.1"], "o", &[("p", "50%_x")]),
        rec_at(8, 8, &["DNS:50%.example"], "o", &[("p", "50%ax")]),
    ];
    record_all(s, recs);
    let labels = |pairs: &[(&str, &str)]| {
        let q = CertQuery {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let mut ids: Vec<String> = fps(&s.list_certificates(&q).unwrap());
        ids.sort();
        ids.iter().map(|f| f[..8].to_string()).collect::<Vec<_>>()
    };
    assert_eq!(labels(&[("env", "prod")]), ["00000001", "00000006"]);
    assert_eq!(labels(&[("env", "prod"), ("team", "x")]), ["00000006"]);
    assert_eq!(labels(&[("p", "50%_x")]), ["00000007"]);
    assert_eq!(labels(&[("a,\"env", "prod")]), ["00000005"]);
    assert!(labels(&[("env", "pro")]).is_empty());
    let san = |glob: &str| {
        let q = CertQuery {
            san_glob: Some(glob.into()),
            ..Default::default()
        };
        let mut ids: Vec<String> = fps(&s.list_certificates(&q).unwrap());
        ids.sort();
        ids.iter().map(|f| f[..8].to_string()).collect::<Vec<_>>()
    };
    assert_eq!(san("api.example.*"), ["00000001"], "ASCII case is ignored");
    assert_eq!(san("dns:api.*"), ["00000001"], "the whole SAN matches too");
    assert_eq!(san("a-?.x"), ["00000002"]);
    assert!(san("a-??.x").is_empty(), "? is one character");
    assert_eq!(san("a_b.example"), ["00000004"], "_ is literal");
    assert_eq!(san("50%.example"), ["00000008"], "% is literal");
    assert_eq!(san("urn:x?y"), ["00000005"], "? matches a quote");
    assert_eq!(san("*x\"y"), ["00000005"]);
    assert_eq!(san("é.example"), ["00000006"]);
    assert!(san("É.example").is_empty(), "only ASCII case folds");
    assert_eq!(san("10.0.0.*"), ["00000007"]);
    assert_eq!(san("*").len(), 8);
}

pub(crate) fn acme_nonces_are_single_use_and_expire(s: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    s.acme_new_nonce("n1", now + time::Duration::minutes(5))
        .unwrap();
    s.acme_new_nonce("old", now - time::Duration::seconds(1))
        .unwrap();
    assert!(matches!(
        s.acme_new_nonce("n1", now + time::Duration::minutes(5)),
        Err(Error::Duplicate(_))
    ));
    assert!(!s.acme_use_nonce("unknown", now).unwrap());
    assert!(!s.acme_use_nonce("old", now).unwrap(), "an expired nonce");
    // concurrent takers: exactly one wins
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                if s.acme_use_nonce("n1", now).unwrap() {
                    won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 1);
    assert!(!s.acme_use_nonce("n1", now).unwrap(), "a used nonce");
    s.acme_new_nonce("n2", now + time::Duration::seconds(30))
        .unwrap();
    assert_eq!(s.acme_purge(now + time::Duration::minutes(1)).unwrap(), 2);
    assert!(!s.acme_use_nonce("n2", now).unwrap());
}

pub(crate) fn acme_objects_compare_and_set(s: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    let acct = AcmeObject {
        kind: "account".into(),
        id: "a1".into(),
        parent: None,
        lookup: Some("thumb1".into()),
        doc: serde_json::json!({"status": "valid", "contact": ["mailto:x@y"]}),
        version: 1,
        expires_at: None,
    };
    s.acme_insert(&acct).unwrap();
    // a second account with the same key, or the same id, is refused
    let dup_key = AcmeObject {
        id: "a2".into(),
        ..acct.clone()
    };
    assert!(matches!(s.acme_insert(&dup_key), Err(Error::Duplicate(_))));
    let dup_id = AcmeObject {
        lookup: Some("thumb2".into()),
        ..acct.clone()
    };
    assert!(matches!(s.acme_insert(&dup_id), Err(Error::Duplicate(_))));
    assert_eq!(s.acme_get("account", "a1").unwrap().unwrap(), acct);
    assert_eq!(s.acme_find("account", "thumb1").unwrap().unwrap(), acct);
    assert!(s.acme_find("order", "thumb1").unwrap().is_none());
    assert!(s.acme_get("account", "nope").unwrap().is_none());
    // compare-and-set: the first writer of version 1 wins, the second must re-read
    let mut a = acct.clone();
    a.doc["status"] = "deactivated".into();
    assert!(s.acme_update(&a).unwrap());
    assert!(!s.acme_update(&a).unwrap(), "a stale version");
    let read = s.acme_get("account", "a1").unwrap().unwrap();
    assert_eq!(read.version, 2);
    assert_eq!(read.doc["status"], "deactivated");
    // concurrent updates of one version: exactly one wins
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for i in 0..6 {
            let (won, read) = (&won, &read);
            sc.spawn(move || {
                let mut o = read.clone();
                o.doc["n"] = i.into();
                if s.acme_update(&o).unwrap() {
                    won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 1);
    // children and expiry
    for (id, exp) in [("o2", None), ("o1", Some(now - time::Duration::seconds(1)))] {
        s.acme_insert(&AcmeObject {
            kind: "order".into(),
            id: id.into(),
            parent: Some("a1".into()),
            lookup: None,
            doc: serde_json::json!({"status": "pending"}),
            version: 1,
            expires_at: exp,
        })
        .unwrap();
    }
    let ids: Vec<_> = s
        .acme_children("order", "a1")
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, ["o1", "o2"]);
    assert_eq!(s.acme_purge(now).unwrap(), 1);
    assert!(s.acme_get("order", "o1").unwrap().is_none());
    assert!(s.acme_get("order", "o2").unwrap().is_some());
}

pub(crate) fn acme_batches_roll_back_a_failed_job_alone(s: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    let later = now + time::Duration::minutes(5);
    let obj = |id: &str| AcmeObject {
        kind: "order".into(),
        id: id.into(),
        parent: Some("a1".into()),
        lookup: None,
        doc: serde_json::json!({"status": "pending"}),
        version: 1,
        expires_at: None,
    };
    s.acme_new_nonce("n1", later).unwrap();
    let (o1, o2) = (obj("o1"), obj("o2"));
    let mut taken = None;
    // a nonce taken and an order stored; then a job that writes and fails on a duplicate;
    // then one that reads what the first wrote in the same transaction
    let mut first = |tx: &mut crate::AcmeTx<'_>| {
        taken = Some(tx.use_nonce("n1", now)?);
        tx.new_nonce("n2", later)?;
        tx.insert(&o1)
    };
    let mut failing = |tx: &mut crate::AcmeTx<'_>| {
        tx.insert(&o2)?;
        tx.new_nonce("lost", later)?;
        tx.insert(&o1)
    };
    let mut seen = None;
    let mut unknown_cert = None;
    let mut reader = |tx: &mut crate::AcmeTx<'_>| {
        seen = tx.get("order", "o1")?;
        unknown_cert = Some(tx.certificate("00ab")?);
        Ok(())
    };
    let out = s
        .acme_batch(&mut [&mut first, &mut failing, &mut reader])
        .unwrap();
    assert_eq!(out.len(), 3);
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    assert!(matches!(out[1], Err(Error::Duplicate(_))), "{out:?}");
    assert_eq!(taken, Some(true));
    assert_eq!(
        seen,
        Some(obj("o1")),
        "a job sees the batch's earlier writes"
    );
    assert_eq!(unknown_cert, Some(None), "no such certificate");
    assert!(s.acme_get("order", "o1").unwrap().is_some(), "committed");
    assert!(
        s.acme_get("order", "o2").unwrap().is_none(),
        "the failed job's insert rolled back"
    );
    assert!(!s.acme_use_nonce("lost", now).unwrap(), "and its nonce too");
    assert!(s.acme_use_nonce("n2", now).unwrap());
    assert!(!s.acme_use_nonce("n1", now).unwrap(), "taken once");
    assert!(s.acme_batch(&mut []).unwrap().is_empty());
    // a lone job that fails: its writes go with it
    let mut alone = |tx: &mut crate::AcmeTx<'_>| {
        tx.new_nonce("lost-alone", later)?;
        tx.insert(&obj("o1"))
    };
    let out = s.acme_batch(&mut [&mut alone]).unwrap();
    assert!(matches!(out[..], [Err(Error::Duplicate(_))]), "{out:?}");
    assert!(!s.acme_use_nonce("lost-alone", now).unwrap());
}

pub(crate) fn acme_exchange_and_modify(s: &dyn Store) {
    let now = OffsetDateTime::now_utc();
    // expiries are kept to the second
    let later =
        OffsetDateTime::from_unix_timestamp((now + time::Duration::minutes(5)).unix_timestamp())
            .unwrap();
    let objs: Vec<AcmeObject> = ["c1", "c2"]
        .iter()
        .map(|id| AcmeObject {
            kind: "challenge".into(),
            id: (*id).into(),
            parent: Some("z1".into()),
            lookup: None,
            doc: serde_json::json!({"status": "pending"}),
            version: 1,
            expires_at: Some(later),
        })
        .collect();
    s.acme_insert_ephemeral(&objs).unwrap();
    assert!(matches!(
        s.acme_insert_ephemeral(&objs[..1]),
        Err(Error::Duplicate(_))
    ));
    // a nonce taken, the next stored, the object read: one call
    s.acme_new_nonce("n1", later).unwrap();
    let (fresh, obj) = s
        .acme_exchange_nonce("n1", "n2", now, later, Some(("challenge", "c1")))
        .unwrap();
    assert!(fresh);
    assert_eq!(obj.unwrap(), objs[0]);
    let (fresh, obj) = s.acme_exchange_nonce("n1", "n3", now, later, None).unwrap();
    assert!(!fresh, "a used nonce");
    assert!(obj.is_none());
    assert!(
        s.acme_use_nonce("n2", now).unwrap(),
        "the next nonce was stored"
    );
    assert!(
        s.acme_use_nonce("n3", now).unwrap(),
        "stored after a bad one too"
    );
    // modify: read, change, compare-and-set; f may decline
    let (o, changed) = s
        .acme_modify("challenge", "c1", false, &mut |o| {
            o.doc["status"] = "valid".into();
            true
        })
        .unwrap()
        .unwrap();
    assert!(changed);
    assert_eq!(o.version, 2);
    assert_eq!(s.acme_get("challenge", "c1").unwrap().unwrap(), o);
    let (o, changed) = s
        .acme_modify("challenge", "c1", true, &mut |o| {
            o.doc["status"] == "pending"
        })
        .unwrap()
        .unwrap();
    assert!(!changed);
    assert_eq!(o.doc["status"], "valid");
    assert!(s
        .acme_modify("challenge", "nope", false, &mut |_| true)
        .unwrap()
        .is_none());
    // concurrent claims of one pending object: exactly one wins
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..6 {
            let won = &won;
            sc.spawn(move || {
                let (_, mine) = s
                    .acme_modify("challenge", "c2", false, &mut |o| {
                        if o.doc["status"] != "pending" {
                            return false;
                        }
                        o.doc["status"] = "processing".into();
                        true
                    })
                    .unwrap()
                    .unwrap();
                if mine {
                    won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 1);
}

/// What the dashboard reads and the prune: counts per profile and owner follow inserts,
/// revocations (also by supersession) and prunes, and are rebuilt by `counts::ensure` on
/// an inventory that has none; the CRL's entries come from revoked, unexpired rows of one
/// issuer; a prune removes only expired rows, audited; an unused token can be withdrawn
/// once, a used one not; the audit search filters and pages newest first.
pub(crate) fn dashboard_views_counts_and_prune(s: &dyn Store) {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut recs = Vec::new();
    for i in 0..6 {
        let mut r = rec(&format!("dd{i:02}"), &format!("d{i:02}"));
        r.owner = Some(if i < 4 { "team-a" } else { "team-b" }.into());
        r.profile = if i % 2 == 0 { "server" } else { "client" }.into();
        r.not_before = now - time::Duration::days(200);
        r.recorded_at = now - time::Duration::days(i64::from(i));
        // two expired long ago, four valid
        r.not_after = if i < 2 {
            now - time::Duration::days(100)
        } else {
            now + time::Duration::days(10)
        };
        recs.push(r);
    }
    record_all(s, recs);
    s.revoke("dd02", now, "key-compromise", &audit("cert.revoke"))
        .unwrap();
    s.revoke("dd00", now, "superseded", &audit("cert.revoke"))
        .unwrap();
    let stats = s.inventory_stats(now).unwrap();
    assert_eq!(
        stats.by_profile,
        vec![("client".to_string(), 3), ("server".to_string(), 3)]
    );
    assert_eq!(stats.expiring, [0, 0, 3]);
    assert_eq!(stats.expiring_per_day.iter().sum::<u64>(), 3);
    assert_eq!(stats.issued_per_day.iter().sum::<u64>(), 6);
    // one a day, today (index 29) and the five days before; none earlier
    assert_eq!(stats.issued_per_day[24..], [1, 1, 1, 1, 1, 1]);
    // dd00 and dd01 expired (dd00 also revoked), dd02 revoked: what counting rows gives
    let by_status = |v: Vec<(&str, u64)>| -> Vec<(String, u64)> {
        v.into_iter().map(|(k, n)| (k.to_string(), n)).collect()
    };
    let expected = by_status(vec![("active", 3), ("expired", 1), ("revoked", 2)]);
    assert_eq!(stats.by_status, expected);
    assert_eq!(s.count_by_status().unwrap(), expected);
    assert_eq!(
        s.list_certificates(&CertQuery {
            status: Some("active".into()),
            now: Some(now),
            ..Default::default()
        })
        .unwrap()
        .total,
        3
    );
    let owners = s.owner_summary(now, 10).unwrap();
    assert_eq!(owners[0].owner.as_deref(), Some("team-a"));
    assert_eq!(
        (owners[0].total, owners[0].revoked, owners[0].expiring_30d),
        (4, 2, 1)
    );
    assert_eq!(
        (owners[1].total, owners[1].revoked, owners[1].expiring_30d),
        (2, 0, 2)
    );

    // the CRL: dd02 only (dd00 is revoked but expired)
    let crl = s.crl_entries("CN=I", now).unwrap();
    assert_eq!(crl.len(), 1);
    assert_eq!(crl[0].serial, "d02");
    assert_eq!(crl[0].reason.as_deref(), Some("key-compromise"));
    assert!(s.crl_entries("CN=other", now).unwrap().is_empty());
    // a delta's: revoked at or after the time asked (dd02 was revoked at `now`)
    let since = |t| s.crl_entries_revoked_since("CN=I", now, t).unwrap();
    assert_eq!(since(now - time::Duration::hours(1)).len(), 1);
    assert_eq!(since(now)[0].serial, "d02");
    assert!(since(now + time::Duration::seconds(1)).is_empty());

    // prune: the two expired, whatever is asked
    let old = s
        .expired_certificates(now - time::Duration::days(90), 10)
        .unwrap();
    assert_eq!(old.len(), 2);
    assert!(old.iter().all(|r| r.pem == "PEM"));
    let asked: Vec<String> = ["dd00", "dd01", "dd02"].map(String::from).to_vec();
    let gone = s
        .prune_certificates(&asked, now - time::Duration::days(90), &audit("cert.prune"))
        .unwrap();
    assert_eq!(gone, 2);
    assert!(s.find_certificate("dd02").is_ok());
    assert!(matches!(
        s.find_certificate("dd01"),
        Err(Error::NotFound(_))
    ));
    let owners = s.owner_summary(now, 10).unwrap();
    assert_eq!((owners[0].total, owners[0].revoked), (2, 1), "{owners:?}");
    let stats = s.inventory_stats(now).unwrap();
    assert_eq!(stats.by_profile.iter().map(|p| p.1).sum::<u64>(), 4);
    assert_eq!(
        stats.by_status,
        by_status(vec![("active", 3), ("revoked", 1)])
    );
    // the pruned dd00 and dd01 were recorded today and yesterday
    assert_eq!(stats.issued_per_day[24..], [1, 1, 1, 1, 0, 0]);

    // tokens: withdraw an unused one once; a used one is refused
    s.insert_token(
        &token("ab".repeat(32).as_str(), time::Duration::hours(1)),
        &audit("token.create"),
    )
    .unwrap();
    assert_eq!(s.list_tokens(10).unwrap().len(), 1);
    let id = "ab".repeat(8);
    s.withdraw_token(&id, now, &audit("token.withdraw"))
        .unwrap();
    assert!(matches!(
        s.withdraw_token(&id, now, &audit("token.withdraw")),
        Err(Error::TokenExpired(_))
    ));
    assert!(matches!(
        s.withdraw_token("cd", now, &audit("token.withdraw")),
        Err(Error::TokenUnknown)
    ));

    // the audit search: newest first, filtered, paged by sequence number
    let revokes = s
        .audit_search(&crate::AuditQuery {
            action: Some("cert.revoke".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(revokes.len(), 2);
    assert!(revokes[0].seq > revokes[1].seq);
    let older = s
        .audit_search(&crate::AuditQuery {
            action: Some("cert.*".into()),
            before: Some(revokes[1].seq),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert!(older
        .iter()
        .all(|e| e.seq < revokes[1].seq && e.action.starts_with("cert.")));
    assert_eq!(older.len(), 6, "the six issuances");
    assert!(verify_chain(&s.audit_entries(1, 1000).unwrap()).is_empty());
}

/// Keyset pages (`after` a cursor) are the offset pages, in every order, ties within a
/// second included, and their `total` is the filter's.
pub(crate) fn keyset_pages_match_offset_pages(s: &dyn Store) {
    let recs = (0..23)
        .map(|i| {
            let mut r = rec_at(
                i,
                (i / 3) as i64,
                &["DNS:k.example.internal"],
                "team-k",
                &[],
            );
            r.not_after += time::Duration::seconds((i % 5) as i64);
            r
        })
        .collect();
    record_all(s, recs);
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    for sort in [
        crate::CertSort::Newest,
        crate::CertSort::Oldest,
        crate::CertSort::ExpirySoonest,
        crate::CertSort::ExpiryLatest,
    ] {
        let q = CertQuery {
            owner: Some("team-k".into()),
            sort,
            now: Some(now),
            limit: 4,
            ..Default::default()
        };
        let mut after: Option<crate::Cursor> = None;
        for page in 0..6 {
            let by_offset = s
                .list_certificates(&CertQuery {
                    offset: page * 4,
                    ..q.clone()
                })
                .unwrap();
            let by_key = s
                .list_certificates(&CertQuery {
                    after: after.clone(),
                    ..q.clone()
                })
                .unwrap();
            assert_eq!(fps(&by_key), fps(&by_offset), "{sort:?} page {page}");
            assert_eq!(by_key.total, 23);
            after = by_key.items.last().map(|r| crate::Cursor::of(r, sort));
            let c = after.clone().unwrap();
            assert_eq!(crate::Cursor::parse(&c.encode()), Some(c));
        }
    }
    assert_eq!(crate::Cursor::parse("12.zz"), None);
    assert_eq!(crate::Cursor::parse("x.ab"), None);
}

/// An expiry window lists its matches in listing order, by offset and by keyset, whether
/// the page sorts the window's matches (few) or walks the listing order (many: more than
/// the tests' threshold of five).
pub(crate) fn expiry_windows_list_in_order(s: &dyn Store) {
    let recs: Vec<CertRecord> = (0..23)
        .map(|i| {
            let mut r = rec_at(
                i,
                (i / 3) as i64,
                &["DNS:w.example.internal"],
                "team-w",
                &[],
            );
            r.not_after = r.not_before + time::Duration::hours(7 * i as i64);
            r
        })
        .collect();
    record_all(s, recs.clone());
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    for (hours, matches) in [(10, 1), (20, 2), (50, 7), (200, 22)] {
        let before = now + time::Duration::hours(hours);
        for sort in [crate::CertSort::Newest, crate::CertSort::Oldest] {
            let mut expected: Vec<&CertRecord> = recs
                .iter()
                .filter(|r| r.not_after > now && r.not_after <= before)
                .collect();
            expected.sort_by(|a, b| match sort {
                crate::CertSort::Newest => b
                    .recorded_at
                    .cmp(&a.recorded_at)
                    .then(a.fingerprint.cmp(&b.fingerprint)),
                _ => a
                    .recorded_at
                    .cmp(&b.recorded_at)
                    .then(a.fingerprint.cmp(&b.fingerprint)),
            });
            let expected: Vec<String> = expected.iter().map(|r| r.fingerprint.clone()).collect();
            assert_eq!(expected.len(), matches);
            let q = CertQuery {
                expiring_before: Some(before),
                sort,
                now: Some(now),
                limit: 3,
                ..Default::default()
            };
            let (mut by_offset, mut by_key) = (Vec::new(), Vec::new());
            let mut after: Option<crate::Cursor> = None;
            for page in 0..8 {
                let p = s
                    .list_certificates(&CertQuery {
                        offset: page * 3,
                        ..q.clone()
                    })
                    .unwrap();
                assert_eq!(p.total, matches);
                by_offset.extend(fps(&p));
                let k = s
                    .list_certificates(&CertQuery {
                        after: after.clone(),
                        ..q.clone()
                    })
                    .unwrap();
                assert_eq!(k.total, matches);
                after = k.items.last().map(|r| crate::Cursor::of(r, sort));
                by_key.extend(fps(&k));
                if after.is_none() {
                    break;
                }
            }
            assert_eq!(by_offset, expected, "{hours} h {sort:?} by offset");
            assert_eq!(by_key, expected, "{hours} h {sort:?} by keyset");
        }
    }
}
