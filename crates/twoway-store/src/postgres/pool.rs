//! A small pool of synchronous PostgreSQL connections.

use crate::{Error, Result};
use ::postgres::{Client, NoTls};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a caller waits for a free connection before giving up.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// At most `max` connections, opened on demand and kept while they work.
pub(super) struct Pool {
    pub(super) config: ::postgres::Config,
    pub(super) max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Client>,
    open: usize,
}

fn poisoned<T>(_: T) -> Error {
    Error::database("pool lock poisoned")
}

/// A pooled connection, returned to the pool on drop (or discarded if it broke).
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Conn<'_> {
    pub(super) fn client(&mut self) -> Result<&mut Client> {
        self.client
            .as_mut()
            .ok_or_else(|| Error::database("connection already returned"))
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Ok(mut st) = self.pool.state.lock() else {
            return;
        };
        match self.client.take() {
            Some(c) if !c.is_closed() => st.idle.push(c),
            _ => st.open = st.open.saturating_sub(1),
        }
        drop(st);
        self.pool.freed.notify_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a synchronous client blocks on its own runtime, which panics (and aborts
        // the process during shutdown) on a thread that drives a tokio runtime: the online
        // CA drops its store on one when it stops. Close the idle connections on a plain
        // thread instead.
        let idle = match self.state.get_mut() {
            Ok(st) => std::mem::take(&mut st.idle),
            Err(_) => return,
        };
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl Pool {
    pub(super) fn new(config: ::postgres::Config, max: usize) -> Self {
        Pool {
            config,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// A connection: an idle one, a new one while fewer than `max` are open, or the next
    /// one freed within [`CHECKOUT_TIMEOUT`].
    pub(super) fn get(&self) -> Result<Conn<'_>> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut st = self.state.lock().map_err(poisoned)?;
        loop {
            while let Some(c) = st.idle.pop() {
                if c.is_closed() {
                    st.open = st.open.saturating_sub(1);
                    continue;
                }
                return Ok(Conn {
                    pool: self,
                    client: Some(c),
                });
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match self.config.connect(NoTls) {
                    Ok(c) => Ok(Conn {
                        pool: self,
                        client: Some(c),
                    }),
                    Err(e) => {
                        if let Ok(mut st) = self.state.lock() {
                            st.open = st.open.saturating_sub(1);
                        }
                        self.freed.notify_one();
                        Err(Error::database_source("cannot connect to PostgreSQL", e))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::database(format!(
                    "no free database connection after {}s",
                    CHECKOUT_TIMEOUT.as_secs()
                )));
            }
            st = self.freed.wait_timeout(st, left).map_err(poisoned)?.0;
        }
    }
}
