//! The ACME state thread: one thread runs the store work of ACME requests (nonces taken
//! and handed out, orders, authorizations and challenges read and changed), and runs what
//! is queued together in one transaction, each request as if under a savepoint of its own
//! ([`twoway_store::Store::acme_batch`]), answering each once it committed.
//!
//! An order costs about ten such store calls. Run one transaction each on the blocking
//! pool, they cost a thread hand-off and a wake-up there and back, a WAL append and, on
//! SQLite, a transaction's fixed work: together more than half of the server's CPU per
//! order. Queued here, concurrent requests share the transaction, its pages written once,
//! and the thread, which is woken once per batch rather than once per call. A lone request
//! is run at once (nothing waits to gather a batch: these commits do not flush).
//!
//! Durable ACME writes (accounts, EAB keys) do not come here: they flush, and are rare.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use twoway_ca::Ca;
use twoway_store::{AcmeJob, AcmeTx, Error as StoreError, Result as StoreResult};

/// The most requests one transaction takes: bounds a batch's latency.
const MAX_BATCH: usize = 256;

/// ACME state threads on PostgreSQL: each batch is a few round trips per request, so
/// several batches run at once, on connections of the store's pool (of 4) while the
/// committer and the reads keep theirs. (With one thread, ACME on PostgreSQL was bound by
/// the round trips of one batch at a time.)
const POSTGRES_THREADS: usize = 3;

/// A queued request: its store work, run in a batch's transaction (perhaps again, never
/// after its answer), and the answer once the batch committed or failed.
trait Work: Send {
    fn run(&mut self, tx: &mut AcmeTx<'_>) -> StoreResult<()>;
    fn answer(self: Box<Self>, committed: StoreResult<()>);
}

struct Typed<T, F> {
    f: F,
    out: Option<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Work for Typed<T, F>
where
    T: Send,
    F: FnMut(&mut AcmeTx<'_>) -> StoreResult<T> + Send,
{
    fn run(&mut self, tx: &mut AcmeTx<'_>) -> StoreResult<()> {
        self.out = Some((self.f)(tx)?);
        Ok(())
    }

    fn answer(mut self: Box<Self>, committed: StoreResult<()>) {
        let r = committed.and_then(|()| {
            self.out
                .take()
                .ok_or_else(|| StoreError::database("an ACME store job lost its result"))
        });
        // a request that went away (its client disconnected) has nothing to be told
        let _ = self.reply.send(r);
    }
}

/// Counters of the ACME state thread, for `/metrics`.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Transactions run (committed or failed).
    pub batches: AtomicU64,
    /// Requests they carried.
    pub jobs: AtomicU64,
}

/// The handle the ACME handlers queue their store work on.
pub struct AcmeState {
    tx: mpsc::Sender<Box<dyn Work>>,
    /// Batches and requests so far.
    pub stats: Arc<BatchStats>,
}

impl std::fmt::Debug for AcmeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeState")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn stopped() -> StoreError {
    StoreError::database("the ACME state thread stopped: restart the CA (see its log)")
}

impl AcmeState {
    /// Starts the threads: one on SQLite (it has one writer), [`POSTGRES_THREADS`] on
    /// PostgreSQL, whose batches wait on round trips rather than the CPU. They run until
    /// every handle is dropped.
    pub fn start(ca: Arc<Ca>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Box<dyn Work>>();
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(BatchStats::default());
        let threads = match ca.database() {
            Some(twoway_ca::Database::Postgres(_)) => POSTGRES_THREADS,
            _ => 1,
        };
        for _ in 0..threads {
            let (ca, rx, st) = (ca.clone(), rx.clone(), stats.clone());
            std::thread::Builder::new()
                .name("twoway-acme".into())
                .spawn(move || run(&ca, &rx, &st))?;
        }
        Ok(AcmeState { tx, stats })
    }

    /// Appends the batching counters to a `/metrics` text.
    pub(crate) fn render(&self, o: &mut String) {
        use std::fmt::Write as _;
        for (name, help, v) in [
            (
                "twoway_ca_acme_store_batches_total",
                "Transactions of ACME store work (concurrent requests share one).",
                &self.stats.batches,
            ),
            (
                "twoway_ca_acme_store_jobs_total",
                "ACME requests' store work those transactions carried.",
                &self.stats.jobs,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
        }
    }

    /// Runs `f` in the next batch's transaction, and returns what it returned once that
    /// committed (an error of `f` rolls back its own writes only). `f` may run again when
    /// the batch is redone (see [`twoway_store::Store::acme_batch`]), so it acts on the
    /// transaction only. [`crate::Error::StoreTimeout`] after [`crate::STORE_DEADLINE`]
    /// (the database is paused or unreachable).
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<StoreResult<T>, crate::Error>
    where
        T: Send + 'static,
        F: FnMut(&mut AcmeTx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Work> = Box::new(Typed {
            f,
            out: None,
            reply,
        });
        if self.tx.send(job).is_err() {
            return Ok(Err(stopped()));
        }
        match tokio::time::timeout(crate::STORE_DEADLINE, answer).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Ok(Err(stopped())),
            Err(_) => Err(crate::Error::StoreTimeout),
        }
    }
}

/// Takes what is queued (waiting for the first) and runs it as a batch, until the queue
/// closes. With several threads, one waits on the queue while the others run theirs.
fn run(ca: &Ca, rx: &Mutex<mpsc::Receiver<Box<dyn Work>>>, stats: &BatchStats) {
    loop {
        let mut jobs = {
            // a poisoned lock only means another thread panicked while holding it: the
            // receiver itself is intact
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            jobs
        };
        let answers = match commit(ca, &mut jobs, stats) {
            Ok(answers) => answers,
            Err(e) if jobs.len() == 1 => vec![Err(e)],
            Err(_) => redo_alone(ca, &mut jobs, stats),
        };
        for (job, r) in jobs.into_iter().zip(answers) {
            job.answer(r);
        }
    }
}

/// Redoes the jobs of a batch that failed as a whole (on PostgreSQL, a deadlock with
/// another replica's batch, or a job whose error ended the transaction) one per
/// transaction, so that one request's trouble is not every request's. The batch's writes
/// were rolled back, so the jobs run again from scratch. When the first of them fails as a
/// whole too, the database itself is in trouble: the rest are answered with that error
/// rather than wait once each.
fn redo_alone(ca: &Ca, jobs: &mut [Box<dyn Work>], stats: &BatchStats) -> Vec<StoreResult<()>> {
    let mut answers = Vec::with_capacity(jobs.len());
    let mut down: Option<StoreError> = None;
    for job in jobs.iter_mut() {
        if let Some(e) = &down {
            answers.push(Err(e.clone()));
            continue;
        }
        match commit(ca, std::slice::from_mut(job), stats) {
            Ok(mut r) => answers.push(
                r.pop()
                    .unwrap_or_else(|| Err(StoreError::database("an ACME batch lost a result"))),
            ),
            Err(e) => {
                if answers.is_empty() {
                    down = Some(e.clone());
                }
                answers.push(Err(e));
            }
        }
    }
    answers
}

/// Runs `jobs` in one transaction: one result per job, or the error that failed the
/// whole transaction (nothing of it committed).
fn commit(
    ca: &Ca,
    jobs: &mut [Box<dyn Work>],
    stats: &BatchStats,
) -> StoreResult<Vec<StoreResult<()>>> {
    let n = jobs.len();
    let results = {
        // a job that panics fails alone, like a job that returns an error
        let mut runs: Vec<_> = jobs
            .iter_mut()
            .map(|j| {
                move |tx: &mut AcmeTx<'_>| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j.run(tx)))
                        .unwrap_or_else(|_| {
                            tracing::error!("an ACME request's store work panicked");
                            Err(StoreError::database("the ACME store work failed"))
                        })
                }
            })
            .collect();
        let mut refs: Vec<&mut AcmeJob<'_>> =
            runs.iter_mut().map(|r| r as &mut AcmeJob<'_>).collect();
        // a panic inside the store itself fails this batch, not every later one
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ca.store().acme_batch(&mut refs)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("a batch of ACME store work panicked");
            Err(StoreError::database("the ACME store work failed"))
        })
    };
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.jobs.fetch_add(n as u64, Ordering::Relaxed);
    match results {
        Ok(r) if r.len() == n => Ok(r),
        Ok(_) => Err(StoreError::database("an ACME batch lost a result")),
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                jobs = n,
                "a batch of ACME store work was not committed"
            );
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committer::tests::new_ca;
    use time::{Duration, OffsetDateTime};
    use twoway_store::AcmeObject;

    fn order(id: &str) -> AcmeObject {
        AcmeObject {
            kind: "order".into(),
            id: id.into(),
            parent: Some("a1".into()),
            lookup: None,
            doc: serde_json::json!({"status": "pending"}),
            version: 1,
            expires_at: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_transactions_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca(dir.path());
        let state = Arc::new(AcmeState::start(ca.clone()).unwrap());
        let later = OffsetDateTime::now_utc() + Duration::minutes(5);
        let taken = order("taken");
        state
            .run(move |tx| tx.insert(&taken))
            .await
            .unwrap()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                let o = order(&format!("o{i}"));
                state
                    .run(move |tx| {
                        tx.new_nonce(&format!("n{i}"), later)?;
                        tx.insert(&o)?;
                        Ok(i)
                    })
                    .await
            }));
        }
        // one that stores a nonce and then fails, among them: its nonce is rolled back
        // with it
        let dup = order("taken");
        let failing = state
            .run(move |tx| {
                tx.new_nonce("lost", later)?;
                tx.insert(&dup)
            })
            .await;
        // and one that panics: it fails alone too
        let panicking = state
            .run(move |tx| -> twoway_store::Result<()> {
                tx.new_nonce("lost-too", later)?;
                panic!("a bug in a handler's store work")
            })
            .await;
        assert!(matches!(panicking, Ok(Err(_))), "{panicking:?}");
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap().unwrap(), i);
        }
        assert!(
            matches!(failing, Ok(Err(twoway_store::Error::Duplicate(_)))),
            "{failing:?}"
        );
        let now = OffsetDateTime::now_utc();
        let store = ca.store();
        assert!(!store.acme_use_nonce("lost", now).unwrap());
        assert!(!store.acme_use_nonce("lost-too", now).unwrap());
        for i in 0..200 {
            assert!(store.acme_get("order", &format!("o{i}")).unwrap().is_some());
            assert!(store.acme_use_nonce(&format!("n{i}"), now).unwrap());
        }
        let batches = state.stats.batches.load(Ordering::Relaxed);
        assert_eq!(state.stats.jobs.load(Ordering::Relaxed), 203);
        assert!((2..=203).contains(&batches), "{batches} batches");
        let mut text = String::new();
        state.render(&mut text);
        assert!(
            text.contains("twoway_ca_acme_store_jobs_total 203"),
            "{text}"
        );
    }
}
