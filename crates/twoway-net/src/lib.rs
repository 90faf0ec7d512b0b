//! twoway-net: the network edge of twoway's listeners — the connection table, lingering
//! close, and one HTTP/1 request framing ([`h1`]).
//!
//! A listener that takes a permit per connection, and waits for one when they run out, is
//! locked out by anyone who opens connections and sends nothing: every permit is held by a
//! silent connection and accept stops. [`ConnTable`] keeps that from happening:
//!
//! - Every accepted connection is admitted or refused at once ([`ConnTable::admit`]); accept
//!   never waits.
//! - There is a total limit and a per-address limit ([`Limits`]). The address is the IPv4
//!   address, or for IPv6 the /64 prefix: one host is commonly given a whole /64, so a
//!   per-/128 limit would not limit it. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
//!   counts as its IPv4 address. See [`AddressKey`].
//! - When a limit is reached, room is made by *shedding* the connection of that address
//!   (or, for the total limit, of any address) that has been idle longest. Only when every
//!   candidate is busy is the new connection refused. A connection is idle unless a request
//!   is in progress ([`Conn::busy`] returns a guard for the time the server works on one):
//!   waiting for a TLS handshake, a request head or a body counts as idle, so a client can
//!   keep a connection only by making the server work, which it pays for.
//! - A shed connection is told through [`Conn::shed`], a future its serve loop selects on;
//!   the serve loop then closes it cleanly in its own protocol. It has already left the
//!   table, so the new connection takes its place at once.
//! - [`Conn::idle_timeout`] resolves when a connection has been idle too long: one deadline
//!   for the first request (from admission, so it covers the TLS handshake and the first
//!   request head), another between requests.
//! - [`accept`] wraps `TcpListener::accept`: it admits or refuses each connection, and when
//!   the process runs out of file descriptors it sheds the oldest idle connection instead
//!   of spinning on the error.
//!
//! The crate knows nothing of HTTP or TLS and depends only on tokio; it sits at the bottom
//! of the workspace beside `twoway-pki`. Entry types: [`ConnTable`], [`Conn`], [`Busy`],
//! [`Limits`], [`accept`].
//!
//! ```no_run
//! # async fn serve(listener: tokio::net::TcpListener) {
//! use std::time::Duration;
//! let table = twoway_net::ConnTable::new(twoway_net::Limits::default());
//! loop {
//!     let a = twoway_net::accept(&listener, &table).await;
//!     tokio::spawn(async move {
//!         let work = async {
//!             // read a request, then: let _busy = a.conn.busy(); answer it ...
//!         };
//!         tokio::select! {
//!             _ = work => {}
//!             _ = a.conn.shed() => {} // the table needs the room: close
//!             _ = a.conn.idle_timeout(Duration::from_secs(10), Duration::from_secs(30)) => {}
//!         }
//!     });
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod h1;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many connections a [`ConnTable`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections in the table, all addresses together.
    pub max_connections: usize,
    /// Connections from one address (an IPv4 address or an IPv6 /64).
    pub max_per_address: usize,
}

impl Default for Limits {
    /// 4096 connections, 256 per address.
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_per_address: 256,
        }
    }
}

/// The address a connection counts against for [`Limits::max_per_address`]: an IPv4
/// address, or the /64 prefix of an IPv6 address (IPv4-mapped addresses count as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// An IPv4 address.
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl AddressKey {
    /// The key of a peer address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4),
                None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressKey::V4(a) => write!(f, "{a}"),
            AddressKey::V6Prefix(p) => {
                write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*p) << 64))
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds [`Limits::max_per_address`] connections, all busy.
    AddressFull,
    /// The table holds [`Limits::max_connections`] connections, all busy.
    TableFull,
}

impl Refused {
    /// A short label for metrics: `address` or `full`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::AddressFull => "address",
            Refused::TableFull => "full",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::AddressFull => "every connection allowed from this address is busy",
            Refused::TableFull => "every connection the listener allows is busy",
        })
    }
}

impl std::error::Error for Refused {}

/// Counters of a [`ConnTable`], for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections in the table now.
    pub open: usize,
    /// Connections shed to make room (idle ones, oldest first).
    pub shed: u64,
    /// Connections refused because their address had only busy connections.
    pub refused_address: u64,
    /// Connections refused because the table had only busy connections.
    pub refused_full: u64,
    /// Connections closed by a deadline ([`Conn::idle_timeout`], [`Conn::timed_out`]).
    pub timed_out: u64,
}

struct Entry {
    id: u64,
    key: AddressKey,
    /// Requests in progress.
    active: AtomicUsize,
    /// Requests begun.
    requests: AtomicU64,
    /// When the last request ended (or the connection was admitted), in nanoseconds since
    /// the table's epoch.
    idle_since: AtomicU64,
    shed: AtomicBool,
    shed_notify: Notify,
}

#[derive(Default)]
struct TableState {
    total: usize,
    by_address: HashMap<AddressKey, Vec<Arc<Entry>>>,
}

struct Shared {
    limits: Limits,
    epoch: Instant,
    next_id: AtomicU64,
    state: Mutex<TableState>,
    shed: AtomicU64,
    refused_address: AtomicU64,
    refused_full: AtomicU64,
    timed_out: AtomicU64,
}

impl Shared {
    fn nanos(&self) -> u64 {
        nanos_since(self.epoch)
    }

    fn lock(&self) -> MutexGuard<'_, TableState> {
        // The state stays consistent at every await-free step; a panic elsewhere while
        // holding the lock cannot leave it half-updated in a way that matters here.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// The table of a listener's connections; cheap to clone (one shared table).
#[derive(Clone)]
pub struct ConnTable {
    shared: Arc<Shared>,
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("limits", &self.shared.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl TableState {
    /// Sheds the connection idle longest among those of `only` (or all), removing it from
    /// the table. False when every candidate is busy.
    fn shed_oldest(&mut self, only: Option<AddressKey>, shared: &Shared) -> bool {
        // (idle since, admission order): of two idle since the same instant, the one
        // admitted first goes.
        let mut best: Option<((u64, u64), AddressKey, usize)> = None;
        let mut consider = |key: AddressKey, list: &Vec<Arc<Entry>>| {
            for (i, e) in list.iter().enumerate() {
                if e.active.load(Ordering::Acquire) != 0 || e.shed.load(Ordering::Relaxed) {
                    continue;
                }
                let age = (e.idle_since.load(Ordering::Relaxed), e.id);
                if best.is_none_or(|(b, _, _)| age < b) {
                    best = Some((age, key, i));
                }
            }
        };
        match only {
            Some(k) => {
                if let Some(list) = self.by_address.get(&k) {
                    consider(k, list);
                }
            }
            None => {
                for (k, list) in &self.by_address {
                    consider(*k, list);
                }
            }
        }
        let Some((_, key, i)) = best else {
            return false;
        };
        let Some(list) = self.by_address.get_mut(&key) else {
            return false;
        };
        let victim = list.swap_remove(i);
        if list.is_empty() {
            self.by_address.remove(&key);
        }
        self.total -= 1;
        victim.shed.store(true, Ordering::Release);
        victim.shed_notify.notify_waiters();
        shared.shed.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl ConnTable {
    /// An empty table with these limits (each at least 1).
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_connections: limits.max_connections.max(1),
            max_per_address: limits.max_per_address.max(1),
        };
        ConnTable {
            shared: Arc::new(Shared {
                limits,
                epoch: Instant::now(),
                next_id: AtomicU64::new(0),
                state: Mutex::new(TableState::default()),
                shed: AtomicU64::new(0),
                refused_address: AtomicU64::new(0),
                refused_full: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Admits a connection from `peer`, shedding the oldest idle connection of its address
    /// (when the address is at its limit) and then of the whole table (when that is full)
    /// to make room. Refused only when every candidate is busy. Never waits.
    pub fn admit(&self, peer: IpAddr) -> Result<Conn, Refused> {
        let sh = &self.shared;
        let key = AddressKey::of(peer);
        let mut st = sh.lock();
        let from_address = st.by_address.get(&key).map_or(0, Vec::len);
        if from_address >= sh.limits.max_per_address && !st.shed_oldest(Some(key), sh) {
            sh.refused_address.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::AddressFull);
        }
        if st.total >= sh.limits.max_connections && !st.shed_oldest(None, sh) {
            sh.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::TableFull);
        }
        let entry = Arc::new(Entry {
            id: sh.next_id.fetch_add(1, Ordering::Relaxed),
            key,
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(sh.nanos()),
            shed: AtomicBool::new(false),
            shed_notify: Notify::new(),
        });
        st.by_address.entry(key).or_default().push(entry.clone());
        st.total += 1;
        Ok(Conn {
            entry,
            shared: self.shared.clone(),
        })
    }

    /// Sheds the connection idle longest, of any address (when the process is out of file
    /// descriptors, say). False when every connection is busy.
    pub fn shed_oldest_idle(&self) -> bool {
        let sh = &self.shared;
        sh.lock().shed_oldest(None, sh)
    }

    /// Connections open now and the counters so far.
    pub fn stats(&self) -> Stats {
        let sh = &self.shared;
        Stats {
            open: sh.lock().total,
            shed: sh.shed.load(Ordering::Relaxed),
            refused_address: sh.refused_address.load(Ordering::Relaxed),
            refused_full: sh.refused_full.load(Ordering::Relaxed),
            timed_out: sh.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// A connection's place in a [`ConnTable`]; dropping it frees the place.
pub struct Conn {
    entry: Arc<Entry>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("address", &self.entry.key.to_string())
            .field("active", &self.entry.active.load(Ordering::Relaxed))
            .field("shed", &self.is_shed())
            .finish()
    }
}

impl Conn {
    /// Marks a request in progress until the guard is dropped: a busy connection is never
    /// shed. Take it once a request head has been read, drop it once the answer is written
    /// (or handed to the transport).
    pub fn busy(&self) -> Busy {
        self.entry.requests.fetch_add(1, Ordering::Relaxed);
        self.entry.active.fetch_add(1, Ordering::AcqRel);
        Busy {
            entry: self.entry.clone(),
            epoch: self.shared.epoch,
        }
    }

    /// True once the table has shed this connection: close it.
    pub fn is_shed(&self) -> bool {
        self.entry.shed.load(Ordering::Acquire)
    }

    /// Resolves when the table sheds this connection to make room for another: the serve
    /// loop should then close it (it is idle: no request is lost).
    pub async fn shed(&self) {
        loop {
            let notified = self.entry.shed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_shed() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when the connection has been idle (no request in progress) for
    /// `first_request` since it was admitted without having begun a request, or for
    /// `between_requests` since its last request ended; counted in [`Stats::timed_out`].
    /// Never resolves while a request is in progress.
    pub async fn idle_timeout(&self, first_request: Duration, between_requests: Duration) {
        let e = &self.entry;
        let epoch = self.shared.epoch;
        loop {
            let since = e.idle_since.load(Ordering::Acquire);
            let limit = if e.requests.load(Ordering::Relaxed) == 0 {
                first_request
            } else {
                between_requests
            };
            let deadline = epoch + Duration::from_nanos(since) + limit;
            if e.active.load(Ordering::Acquire) != 0 {
                // Busy: look again one idle period from now (the request will have ended,
                // and its end moved the deadline).
                tokio::time::sleep(between_requests.max(Duration::from_millis(10))).await;
                continue;
            }
            tokio::time::sleep_until(deadline).await;
            if e.active.load(Ordering::Acquire) == 0
                && e.idle_since.load(Ordering::Acquire) == since
            {
                self.timed_out();
                return;
            }
        }
    }

    /// Counts a connection closed by a deadline of the caller's own (a TLS handshake that
    /// took too long, say) in [`Stats::timed_out`].
    pub fn timed_out(&self) {
        self.shared.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests this connection has begun.
    pub fn requests(&self) -> u64 {
        self.entry.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let key = self.entry.key;
        let Some(list) = st.by_address.get_mut(&key) else {
            return;
        };
        // Absent when the connection was shed: it left the table then.
        if let Some(i) = list.iter().position(|e| e.id == self.entry.id) {
            list.swap_remove(i);
            if list.is_empty() {
                st.by_address.remove(&key);
            }
            st.total -= 1;
        }
    }
}

/// A request in progress on a [`Conn`] (see [`Conn::busy`]).
pub struct Busy {
    entry: Arc<Entry>,
    epoch: Instant,
}

impl fmt::Debug for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Busy")
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.entry
            .idle_since
            .store(nanos_since(self.epoch), Ordering::Release);
        self.entry.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection admitted by [`accept`].
#[derive(Debug)]
pub struct Accepted {
    /// The socket.
    pub stream: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Its place in the table.
    pub conn: Conn,
}

/// True for the errors that say the process or the system is out of file descriptors
/// (EMFILE, ENFILE: 24 and 23 on Linux and the BSDs).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Accepts the next connection `table` admits. Refused connections are closed at once;
/// when accept fails for lack of file descriptors the oldest idle connection is shed to
/// free one; other accept errors are logged and retried after 50 ms. Never returns an
/// error and never waits for room.
pub async fn accept(listener: &TcpListener, table: &ConnTable) -> Accepted {
    accept_with(listener, table, |peer, why| {
        tracing::debug!(%peer, "connection refused: {why}");
    })
    .await
}

/// [`accept`], telling `refused` about each connection the table refused (for a metric or
/// a log line of the caller's own) before closing it.
pub async fn accept_with(
    listener: &TcpListener,
    table: &ConnTable,
    mut refused: impl FnMut(SocketAddr, Refused),
) -> Accepted {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match table.admit(peer.ip()) {
                Ok(conn) => return Accepted { stream, peer, conn },
                Err(why) => {
                    refused(peer, why);
                    drop(stream);
                }
            },
            Err(e) if out_of_descriptors(&e) => {
                let freed = table.shed_oldest_idle();
                tracing::warn!(error = %e, freed, "accept failed: out of file descriptors (raise the open-files limit)");
                tokio::time::sleep(Duration::from_millis(if freed { 1 } else { 50 })).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Closes a connection the server refused (a failed TLS handshake after its alert, an HTTP
/// refusal) so that the client reads what was sent: FIN first, then what the client still
/// sends is read and dropped (at most 256 KiB or 1 s) before the socket closes. Closing
/// with unread bytes in the socket makes the kernel reset the connection, and the reset can
/// overtake the alert or the answer (a TLS 1.3 client sends its first request right after
/// its Finished). Box the future where it is awaited inside a long-lived task: its buffer
/// would otherwise size every connection's task.
pub async fn linger_close(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tcp.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 8 * 1024];
        let mut left: usize = 256 * 1024;
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

#[cfg(test)]
mod tests;
