//! The ACME server's state (RFC 8555), once for every engine: accounts, orders,
//! authorizations and challenges as versioned JSON documents ([`AcmeObject`]), and the
//! single-use nonces. Replicas on one PostgreSQL database share all of it: a nonce handed
//! out by one is taken by another with one conditional `DELETE` (only one taker sees a row
//! deleted), and an object changes only when its version is still the one that was read
//! (compare-and-set), so two replicas validating the same challenge cannot both win.
//!
//! These writes take no part in the inventory's write lock: they touch their own tables
//! only. Nonces and pending orders, authorizations and challenges are ephemeral: their
//! commits do not wait for the flush to disk (`Engine::write_ephemeral`); accounts and
//! EAB keys are flushed like the inventory.

use crate::db::{Arg, Db, Row};
use crate::records::{all, first};
use crate::{Error, Result};
use time::OffsetDateTime;

/// One ACME object: an account, an order, an authorization or a challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct AcmeObject {
    /// `account`, `order`, `authz`, `challenge` (or any other kind the server keeps).
    pub kind: String,
    /// Its id, unique within the kind (the last segment of its URL).
    pub id: String,
    /// The object it belongs to (an order's account, an authorization's order).
    pub parent: Option<String>,
    /// A second key, unique within the kind when set (an account's JWK thumbprint).
    pub lookup: Option<String>,
    /// The document.
    pub doc: serde_json::Value,
    /// Bumped by each update; an update names the version it read.
    pub version: i64,
    /// When the object may be forgotten (None: kept).
    pub expires_at: Option<OffsetDateTime>,
}

const COLS: &str = "kind, id, parent, lookup, doc, version, expires_at";

fn decode(r: &dyn Row) -> Result<AcmeObject> {
    let text = |i| -> Result<String> {
        r.text(i)?
            .ok_or_else(|| Error::Corrupt(format!("acme_objects column {i} is NULL")))
    };
    let doc = text(4)?;
    Ok(AcmeObject {
        kind: text(0)?,
        id: text(1)?,
        parent: r.text(2)?,
        lookup: r.text(3)?,
        doc: serde_json::from_str(&doc)
            .map_err(|e| Error::Corrupt(format!("acme object document: {e}")))?,
        version: r.int(5)?.unwrap_or(0),
        expires_at: match r.int(6)? {
            None => None,
            Some(t) => Some(
                OffsetDateTime::from_unix_timestamp(t)
                    .map_err(|e| Error::Corrupt(format!("acme object expiry: {e}")))?,
            ),
        },
    })
}

/// Stores a new nonce valid until `expires_at`.
pub(crate) fn new_nonce(db: &mut dyn Db, nonce: &str, expires_at: OffsetDateTime) -> Result<()> {
    db.exec(
        "INSERT INTO acme_nonces (nonce, expires_at) VALUES (?, ?)",
        &[Arg::text(nonce), Arg::int(expires_at.unix_timestamp())],
    )?;
    Ok(())
}

/// Takes a nonce: true when it existed and had not expired; it is gone either way.
pub(crate) fn use_nonce(db: &mut dyn Db, nonce: &str, now: OffsetDateTime) -> Result<bool> {
    let n = db.exec(
        "DELETE FROM acme_nonces WHERE nonce = ? AND expires_at > ?",
        &[Arg::text(nonce), Arg::int(now.unix_timestamp())],
    )?;
    Ok(n == 1)
}

/// Forgets expired nonces and objects; how many rows went.
pub(crate) fn purge(db: &mut dyn Db, now: OffsetDateTime) -> Result<u64> {
    let t = now.unix_timestamp();
    let a = db.exec(
        "DELETE FROM acme_nonces WHERE expires_at <= ?",
        &[Arg::int(t)],
    )?;
    let b = db.exec(
        "DELETE FROM acme_objects WHERE expires_at IS NOT NULL AND expires_at <= ?",
        &[Arg::int(t)],
    )?;
    Ok(a + b)
}

/// Inserts a new object (its version as given); [`Error::Duplicate`] when the id or the
/// lookup key is taken.
pub(crate) fn insert(db: &mut dyn Db, o: &AcmeObject) -> Result<()> {
    db.exec(
        &format!("INSERT INTO acme_objects ({COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"),
        &[
            Arg::text(&o.kind),
            Arg::text(&o.id),
            Arg::opt_text(o.parent.as_deref()),
            Arg::opt_text(o.lookup.as_deref()),
            Arg::owned(o.doc.to_string()),
            Arg::int(o.version),
            Arg::Int(o.expires_at.map(|t| t.unix_timestamp())),
        ],
    )?;
    Ok(())
}

/// Replaces the document (and lookup key, and expiry) of `o` if its stored version is
/// still `o.version`, bumping the version; false when another writer got there first (or
/// the object is gone).
pub(crate) fn update(db: &mut dyn Db, o: &AcmeObject) -> Result<bool> {
    let n = db.exec(
        "UPDATE acme_objects SET doc = ?, lookup = ?, expires_at = ?, version = version + 1 \
         WHERE kind = ? AND id = ? AND version = ?",
        &[
            Arg::owned(o.doc.to_string()),
            Arg::opt_text(o.lookup.as_deref()),
            Arg::Int(o.expires_at.map(|t| t.unix_timestamp())),
            Arg::text(&o.kind),
            Arg::text(&o.id),
            Arg::int(o.version),
        ],
    )?;
    Ok(n == 1)
}

/// Compare-and-set attempts of [`modify`] before it gives up.
const MODIFY_TRIES: usize = 8;

/// Reads an object, lets `f` change it and stores the change by compare-and-set,
/// re-reading when another writer (a replica) won: see [`crate::Store::acme_modify`].
pub(crate) fn modify(
    db: &mut dyn Db,
    kind: &str,
    id: &str,
    f: &mut dyn FnMut(&mut AcmeObject) -> bool,
) -> Result<Option<(AcmeObject, bool)>> {
    for _ in 0..MODIFY_TRIES {
        let Some(mut o) = get(db, kind, id)? else {
            return Ok(None);
        };
        if !f(&mut o) {
            return Ok(Some((o, false)));
        }
        if update(db, &o)? {
            o.version += 1;
            return Ok(Some((o, true)));
        }
    }
    Err(Error::database(format!(
        "ACME {kind} {id} kept changing under {MODIFY_TRIES} updates"
    )))
}

/// One object by kind and id.
pub(crate) fn get(db: &mut dyn Db, kind: &str, id: &str) -> Result<Option<AcmeObject>> {
    first(
        db,
        &format!("SELECT {COLS} FROM acme_objects WHERE kind = ? AND id = ?"),
        &[Arg::text(kind), Arg::text(id)],
        decode,
    )
}

/// One object by kind and lookup key.
pub(crate) fn find(db: &mut dyn Db, kind: &str, lookup: &str) -> Result<Option<AcmeObject>> {
    first(
        db,
        &format!("SELECT {COLS} FROM acme_objects WHERE kind = ? AND lookup = ?"),
        &[Arg::text(kind), Arg::text(lookup)],
        decode,
    )
}

/// The objects of a kind that belong to `parent`, oldest id first.
pub(crate) fn children(db: &mut dyn Db, kind: &str, parent: &str) -> Result<Vec<AcmeObject>> {
    all(
        db,
        &format!("SELECT {COLS} FROM acme_objects WHERE kind = ? AND parent = ? ORDER BY id"),
        &[Arg::text(kind), Arg::text(parent)],
        decode,
    )
}

/// An open ACME transaction: what a job of [`crate::Store::acme_batch`] may do. Its
/// writes commit with the batch's, and only if the job returned Ok.
pub struct AcmeTx<'a> {
    db: &'a mut dyn Db,
    rows_read: &'a std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AcmeTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeTx").finish_non_exhaustive()
    }
}

impl<'a> AcmeTx<'a> {
    pub(crate) fn new(db: &'a mut dyn Db, rows_read: &'a std::sync::atomic::AtomicU64) -> Self {
        AcmeTx { db, rows_read }
    }

    /// Stores a new nonce, as [`crate::Store::acme_new_nonce`].
    pub fn new_nonce(&mut self, nonce: &str, expires_at: OffsetDateTime) -> Result<()> {
        new_nonce(self.db, nonce, expires_at)
    }

    /// Takes a nonce, as [`crate::Store::acme_use_nonce`].
    pub fn use_nonce(&mut self, nonce: &str, now: OffsetDateTime) -> Result<bool> {
        use_nonce(self.db, nonce, now)
    }

    /// One object by kind and id (this transaction's writes included).
    pub fn get(&mut self, kind: &str, id: &str) -> Result<Option<AcmeObject>> {
        get(self.db, kind, id)
    }

    /// One object by kind and lookup key.
    pub fn find(&mut self, kind: &str, lookup: &str) -> Result<Option<AcmeObject>> {
        find(self.db, kind, lookup)
    }

    /// The objects of a kind that belong to `parent`, oldest id first.
    pub fn children(&mut self, kind: &str, parent: &str) -> Result<Vec<AcmeObject>> {
        children(self.db, kind, parent)
    }

    /// Inserts a new object; [`Error::Duplicate`] when its id or lookup key is taken.
    pub fn insert(&mut self, o: &AcmeObject) -> Result<()> {
        insert(self.db, o)
    }

    /// Changes an object by compare-and-set, as [`crate::Store::acme_modify`].
    pub fn modify(
        &mut self,
        kind: &str,
        id: &str,
        f: &mut dyn FnMut(&mut AcmeObject) -> bool,
    ) -> Result<Option<(AcmeObject, bool)>> {
        modify(self.db, kind, id, f)
    }

    /// A certificate of the inventory by its fingerprint (None when there is none), as
    /// [`crate::Store::find_certificate`] finds it.
    pub fn certificate(&mut self, fingerprint: &str) -> Result<Option<crate::CertRecord>> {
        match crate::query::find(self.db, self.rows_read, fingerprint) {
            Ok(r) => Ok(Some(r)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One job of a batch: it runs in the batch's transaction under a savepoint of its own.
pub type AcmeJob<'f> = dyn FnMut(&mut AcmeTx<'_>) -> Result<()> + Send + 'f;

/// Runs `jobs` in the caller's transaction, each under its own savepoint: a job that fails
/// is rolled back alone and gets its error. One result per job, in order.
pub(crate) fn batch(
    db: &mut dyn Db,
    rows_read: &std::sync::atomic::AtomicU64,
    jobs: &mut [&mut AcmeJob<'_>],
) -> Result<Vec<Result<()>>> {
    let mut out = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter_mut().enumerate() {
        if i == 0 {
            db.batch(&["SAVEPOINT acme"])?;
        } else {
            db.batch(&["RELEASE SAVEPOINT acme", "SAVEPOINT acme"])?;
        }
        let r = job(&mut AcmeTx::new(&mut *db, rows_read));
        if r.is_err() {
            // If the error already ended the transaction, this fails and so does the
            // batch: nothing of it is committed.
            db.batch(&["ROLLBACK TO SAVEPOINT acme"])?;
        }
        out.push(r);
    }
    if !jobs.is_empty() {
        db.batch(&["RELEASE SAVEPOINT acme"])?;
    }
    Ok(out)
}
