//! Group commit: issuances that arrive together share one transaction and one flush.
//!
//! Every issuance must be durable before its certificate leaves, so with one transaction
//! per certificate the store can record no more certificates per second than the disk can
//! flush. Instead, a caller queues its job. If no leader is running it becomes the leader;
//! otherwise it sleeps on its own reply channel. The leader takes the writer (the engine's
//! write transaction: the SQLite writer connection, or PostgreSQL's advisory lock), drains
//! the queued jobs (at most [`MAX_BATCH`] at a time), runs them in one transaction with a
//! savepoint each, commits once, and only then answers each job. A job that fails (a duplicate serial, a used token, a certificate
//! already superseded) is rolled back to its savepoint and gets its own error; the others
//! still commit. If the commit fails, every job in the batch gets the error. Once its own
//! job is answered, a leader that finds more jobs queued hands the leadership to the
//! oldest one's caller, so every caller is woken once, and no caller leads for long.

use crate::audit::{AuditEntry, NewAudit};
use crate::model::CertRecord;
use crate::token::{Issuance, IssueExtras};
use crate::{Error, Result};
use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;

/// The most jobs one transaction takes: bounds a batch's latency and its memory.
pub(crate) const MAX_BATCH: usize = 512;

/// What a queued caller is told.
pub(crate) enum Reply {
    /// Its job was committed (or failed).
    Done(Result<AuditEntry>),
    /// It is the leader now: it must run the queue.
    Lead,
}

/// One queued issuance: owned copies of what `record_issuance` was given.
pub(crate) struct Job {
    item: Issuance,
    reply: SyncSender<Reply>,
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<Job>,
    /// A leader is running (or has been told to run).
    leading: bool,
}

/// The queue of issuances waiting for a leader.
#[derive(Default)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
}

/// One answer per job of a batch of `n` from what its commit returned: the transaction's
/// error is every job's error, and a commit that returned the wrong number of results
/// fails every job rather than answer one with another's result.
pub fn answers(n: usize, committed: Result<Vec<Result<AuditEntry>>>) -> Vec<Result<AuditEntry>> {
    match committed {
        Ok(r) if r.len() == n => r,
        Ok(_) => (0..n)
            .map(|_| Err(Error::database("group commit lost a result")))
            .collect(),
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

impl Queue {
    /// The queue's state. Its critical sections only push, drain and flip a flag, so a
    /// poisoned lock (a panic elsewhere while holding it) leaves it consistent: carry on,
    /// rather than leave a leader's followers waiting forever.
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one issuance through the group. `commit` takes the writer (blocking until
    /// it is free), runs a batch in one transaction and returns one result per job, in
    /// order, or the error that failed the whole transaction.
    pub(crate) fn submit(
        &self,
        rec: &CertRecord,
        audit: &NewAudit,
        extras: &IssueExtras,
        mut commit: impl FnMut(&[Issuance]) -> Result<Vec<Result<AuditEntry>>>,
    ) -> Result<AuditEntry> {
        // Capacity 2: a `Lead` and then a `Done` never block their sender.
        let (tx, rx) = sync_channel(2);
        let job = Job {
            item: Issuance {
                rec: rec.clone(),
                audit: audit.clone(),
                extras: extras.clone(),
            },
            reply: tx,
        };
        let lead_now = {
            let mut g = self.inner();
            g.pending.push_back(job);
            !std::mem::replace(&mut g.leading, true)
        };
        if !lead_now {
            match rx.recv() {
                Ok(Reply::Done(r)) => return r,
                Ok(Reply::Lead) => {}
                Err(_) => {
                    return Err(Error::database(
                        "group commit: the leader went away before answering",
                    ))
                }
            }
        }
        // The leader. The queue is FIFO and each round takes up to MAX_BATCH jobs from its
        // front, so our job is taken within (jobs ahead of it / MAX_BATCH + 1) rounds; the
        // bound is a safety net.
        let mut own = None;
        let mut settled = false;
        for _ in 0..1 + 1_000_000 / MAX_BATCH {
            let (batch, replies): (Vec<Issuance>, Vec<SyncSender<Reply>>) = {
                let mut g = self.inner();
                let n = g.pending.len().min(MAX_BATCH);
                g.pending.drain(..n).map(|j| (j.item, j.reply)).unzip()
            };
            if !batch.is_empty() {
                let results = answers(batch.len(), commit(&batch));
                for (reply, r) in replies.into_iter().zip(results) {
                    // A caller that went away (a panicked thread) has nothing to be told.
                    let _ = reply.send(Reply::Done(r));
                }
            }
            if own.is_none() {
                if let Ok(Reply::Done(r)) = rx.try_recv() {
                    own = Some(r);
                }
            }
            let mut g = self.inner();
            match (g.pending.front(), own.is_some()) {
                (None, _) => {
                    g.leading = false;
                    settled = true;
                    break;
                }
                (Some(next), true) => {
                    // `leading` stays set: the oldest caller takes over. If it is gone
                    // (nobody waits for its certificate), its job is dropped unrecorded.
                    if next.reply.send(Reply::Lead).is_ok() {
                        settled = true;
                        break;
                    }
                    if let Some(gone) = g.pending.pop_front() {
                        drop(gone);
                    }
                }
                (Some(_), false) => {}
            }
        }
        if !settled {
            // Out of rounds (cannot happen with fewer than a million callers): leave the
            // queue led, or marked unled, never stuck.
            let mut g = self.inner();
            let handed = g
                .pending
                .front()
                .is_some_and(|next| next.reply.send(Reply::Lead).is_ok());
            if !handed {
                g.leading = false;
            }
        }
        own.unwrap_or_else(|| {
            Err(Error::database(
                "group commit: the issuance was neither run nor queued",
            ))
        })
    }
}
