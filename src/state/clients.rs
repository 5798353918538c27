//! Who is connected and what they do, for the admin console (SHOW CLIENTS, SHOW SERVERS,
//! SHOW POOLS, SHOW STATS, KILL) and the client gauges. A session registers at login and its
//! handle takes it out again however the session ends.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use atomic_waker::AtomicWaker;

use crate::metrics::{ClientGauge, ClientState};
use crate::pool::BackendTarget;

/// Every client session, by pgward's client id.
#[derive(Default)]
pub struct Clients {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    stats: Mutex<HashMap<String, Arc<DbStats>>>,
    /// pgward is shutting down (see `shut_down`).
    shutting_down: AtomicBool,
}

/// One connected client.
pub struct ClientInfo {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub addr: SocketAddr,
    pub connected_at: SystemTime,
    /// Set by KILL: the session ends with 57P01.
    killed: AtomicBool,
    /// The session's task, woken by KILL and shutdown. A flag and a waker rather than a
    /// cancellation future: a session waits on them with no state of its own (memory per idle
    /// client) and without a lock per wait.
    waker: AtomicWaker,
    link: Mutex<Link>,
}

/// Why a session must end now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Killed,
    ShuttingDown,
}

/// What a client is attached to right now.
#[derive(Debug, Clone)]
pub struct Link {
    pub state: ClientState,
    /// Backend and PostgreSQL process id of the server connection it holds (shared, not
    /// copied: this is set at every attach).
    pub server: Option<(Arc<BackendTarget>, i32)>,
    /// When the state last changed.
    pub since: SystemTime,
}

impl ClientInfo {
    /// KILL from the admin console: the session ends at once.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn link(&self) -> Link {
        self.link.lock().expect("client lock").clone()
    }
}

/// A session's registration: keeps the client gauge and the registry entry right, and
/// removes both when dropped.
pub struct ClientHandle {
    pub info: Arc<ClientInfo>,
    pub stats: Arc<DbStats>,
    gauge: ClientGauge,
    clients: Arc<Clients>,
}

impl Clients {
    pub fn register(
        self: &Arc<Self>,
        user: &str,
        database: &str,
        addr: SocketAddr,
    ) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let now = coarse_now();
        let info = Arc::new(ClientInfo {
            id,
            user: user.to_owned(),
            database: database.to_owned(),
            addr,
            connected_at: now,
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            link: Mutex::new(Link {
                state: ClientState::Idle,
                server: None,
                since: now,
            }),
        });
        self.entries
            .lock()
            .expect("clients lock")
            .insert(id, info.clone());
        ClientHandle {
            info,
            stats: self.stats(database),
            gauge: ClientGauge::new(ClientState::Idle),
            clients: self.clone(),
        }
    }

    /// Every client, oldest first.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        let mut all: Vec<_> = self
            .entries
            .lock()
            .expect("clients lock")
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.entries.lock().expect("clients lock").get(&id).cloned()
    }

    /// The statistics of `database`, made on first use.
    pub fn stats(&self, database: &str) -> Arc<DbStats> {
        self.stats
            .lock()
            .expect("stats lock")
            .entry(database.to_owned())
            .or_default()
            .clone()
    }

    /// Tells every session that pgward is shutting down (after `State::shutdown` is
    /// cancelled): idle ones close, the others once their transaction is over.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for client in self.entries.lock().expect("clients lock").values() {
            client.waker.wake();
        }
    }

    /// Every database's statistics, by name.
    pub fn all_stats(&self) -> Vec<(String, Arc<DbStats>)> {
        let mut all: Vec<_> = self
            .stats
            .lock()
            .expect("stats lock")
            .iter()
            .map(|(db, s)| (db.clone(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl ClientHandle {
    /// Moves the client to `state`, holding `server` (backend name, pid) or none.
    pub fn set(&mut self, state: ClientState, server: Option<(Arc<BackendTarget>, i32)>) {
        self.gauge.set(state);
        *self.info.link.lock().expect("client lock") = Link {
            state,
            server,
            since: coarse_now(),
        };
    }

    pub fn state(&self) -> ClientState {
        self.gauge.state()
    }

    /// Ready when the session must end: it was killed, or pgward is shutting down and
    /// `drain` says the session may close now. The waker is registered before the flags are
    /// read, so a KILL or shutdown after the check still wakes the task.
    pub fn poll_stop(&self, cx: &mut Context<'_>, drain: bool) -> Poll<Stop> {
        self.info.waker.register(cx.waker());
        if self.info.killed.load(Ordering::Acquire) {
            Poll::Ready(Stop::Killed)
        } else if drain && self.clients.shutting_down.load(Ordering::Acquire) {
            Poll::Ready(Stop::ShuttingDown)
        } else {
            Poll::Pending
        }
    }

    /// `poll_stop` as a future, for `select!`.
    pub fn stopped(&self, drain: bool) -> impl Future<Output = Stop> + '_ {
        std::future::poll_fn(move |cx| self.poll_stop(cx, drain))
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.clients
            .entries
            .lock()
            .expect("clients lock")
            .remove(&self.info.id);
    }
}

/// Totals per database since pgward started (SHOW STATS), in the units PgBouncer uses.
#[derive(Default)]
pub struct DbStats {
    pub xacts: AtomicU64,
    pub queries: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
}

impl DbStats {
    /// One request answered (`ended_transaction`: the server is idle again).
    pub fn request(&self, elapsed: Duration, ended_transaction: bool) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.query_time_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if ended_transaction {
            self.xacts.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn traffic(&self, received: u64, sent: u64) {
        self.received.fetch_add(received, Ordering::Relaxed);
        self.sent.fetch_add(sent, Ordering::Relaxed);
    }

    pub fn waited(&self, elapsed: Duration) {
        self.wait_time_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The time of day to within a few milliseconds, for the state-change stamp every attach
/// and release writes: the kernel's coarse clock, which skips reading the hardware counter
/// (`SHOW CLIENTS` shows seconds).
#[cfg(target_os = "linux")]
fn coarse_now() -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to, and CLOCK_REALTIME_COARSE exists on
    // every Linux pgward runs on (since 2.6.32).
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return SystemTime::now();
    }
    SystemTime::UNIX_EPOCH + std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(target_os = "linux"))]
fn coarse_now() -> SystemTime {
    SystemTime::now()
}
