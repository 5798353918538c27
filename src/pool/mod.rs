//! Server connection pools, one per (backend user, database, backend).
//!
//! A pool does not hold a password: each client brings the credential for its backend login
//! (from `[[users]]`, or proven by the client itself under passthrough) and new server
//! connections made for it use that one.
//!
//! One short mutex holds the pool's books: the places in use, the idle stack and the queue of
//! waiting clients, so a checkout or a release decides under one lock and never waits behind
//! another client's I/O. A released connection goes straight to the first waiting client
//! (first come, first served). Broken connections are never handed out: an idle connection
//! that has closed or spoken out of turn is dropped at checkout.

pub mod credential;
pub mod server;
pub mod verifiers;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use crate::protocol::ProxyError;
use crate::session::prepared::Statement;
pub use credential::Credential;
pub use server::{BackendTarget, ServerConn, ServerError};

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub checkout_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub user: String,
    pub database: String,
    pub backend: String,
    pub addr: (String, u16),
}

pub struct Pool {
    pub key: PoolKey,
    target: Arc<BackendTarget>,
    slots: Mutex<Slots>,
    /// `Slots::leased`, for readers that only count (routing picks the least busy backend).
    in_use: AtomicUsize,
    /// Wakes the task that expires waits, when a wait's deadline is earlier than its next wake.
    expiry: Arc<Notify>,
    /// Statements some server of this pool has parsed successfully, so a client's prepare of
    /// the same statement can be answered without a server (see `Session::prepare_locally`).
    known_statements: Mutex<HashMap<u64, Arc<Statement>>>,
}

/// The pool's books, kept under one lock.
struct Slots {
    settings: PoolSettings,
    /// Places in use: leased, or handed to a waiting client. Above `settings.size` only
    /// after a reload shrank the pool, until enough leases come back.
    leased: usize,
    /// Boxed: a checkout or release moves a pointer, not the connection's state, and a
    /// lease (kept in every session) is small. Most recently used last.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConn>>,
    /// Clients waiting for a place, first come first served. A waiter that gave up (its
    /// client left) stays until a release or the expiry task passes over it.
    waiters: VecDeque<Waiter>,
    /// When the expiry task wakes next; None while it waits to be told (or is not started).
    expiry_at: Option<Instant>,
    expiry_started: bool,
}

struct Waiter {
    /// None: a `checkout_timeout` beyond what the clock can tell, so no deadline.
    deadline: Option<Instant>,
    grant: oneshot::Sender<Grant>,
}

/// A place handed to a waiting client, with the connection released into it if there was one.
struct Grant {
    permit: Permit,
    conn: Option<Box<ServerConn>>,
}

impl Grant {
    /// Returns the place, and the connection, to the pool: to the next waiter if any.
    fn give_back(self) {
        let Grant { mut permit, conn } = self;
        Pool::put_back(permit.take(), conn);
    }
}

/// One of the pool's places in use. Dropping it gives the place back.
struct Permit(Option<Arc<Pool>>);

impl Permit {
    /// The pool, leaving nothing for `drop` to give back.
    fn take(&mut self) -> Arc<Pool> {
        self.0.take().expect("a permit is given back once")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            Pool::put_back(pool, None);
        }
    }
}

/// Bound on `known_statements`, so clients generating endless distinct SQL cannot grow it.
const MAX_KNOWN_STATEMENTS: usize = 10_000;

/// A checked-out server connection. Dropping it closes the connection and gives its place
/// back; `release` returns both.
pub struct Lease {
    pub conn: Box<ServerConn>,
    permit: Permit,
}

impl Lease {
    pub fn pool(&self) -> &Arc<Pool> {
        self.permit.0.as_ref().expect("a lease holds its permit")
    }

    pub fn release(self) {
        let Lease { conn, mut permit } = self;
        Pool::put_back(permit.take(), Some(conn));
    }
}

impl Pool {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().expect("pool lock")
    }

    /// A place, with the most recently used idle connection if any; None when all are in use.
    fn try_take(self: &Arc<Self>, slots: &mut Slots) -> Option<Grant> {
        if slots.leased >= slots.settings.size {
            return None;
        }
        slots.leased += 1;
        self.in_use.store(slots.leased, Ordering::Relaxed);
        Some(Grant {
            permit: Permit(Some(self.clone())),
            conn: slots.idle.pop(),
        })
    }

    /// Gives a place back, with the connection that held it if it is still good: to the
    /// first waiting client, or to the idle stack. A place over a shrunk size is retired.
    fn put_back(mut pool: Arc<Pool>, mut conn: Option<Box<ServerConn>>) {
        loop {
            let waiter = {
                let mut slots = pool.slots();
                // A place over a shrunk size is not handed on.
                let next = if slots.leased > slots.settings.size {
                    None
                } else {
                    slots.waiters.pop_front()
                };
                match next {
                    // A place without a connection (its lease was dropped) takes an idle one.
                    Some(waiter) => {
                        if conn.is_none() {
                            conn = slots.idle.pop();
                        }
                        waiter
                    }
                    None => {
                        slots.leased -= 1;
                        pool.in_use.store(slots.leased, Ordering::Relaxed);
                        if let Some(mut conn) = conn {
                            conn.idle_since = Instant::now();
                            slots.idle.push(conn);
                        }
                        return;
                    }
                }
            };
            // Outside the lock: the send wakes the waiter's task.
            let grant = Grant {
                permit: Permit(Some(pool)),
                conn,
            };
            match waiter.grant.send(grant) {
                Ok(()) => return,
                // That client gave up; the next one gets it.
                Err(Grant {
                    mut permit,
                    conn: back,
                }) => {
                    pool = permit.take();
                    conn = back;
                }
            }
        }
    }

    /// A place once one is free, first come first served; an error after `checkout_timeout`.
    async fn wait(self: &Arc<Self>) -> Result<Grant, ProxyError> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let checkout_timeout = {
            let mut slots = self.slots();
            // A place may have come free since the caller looked.
            if let Some(grant) = self.try_take(&mut slots) {
                return Ok(grant);
            }
            let timeout = slots.settings.checkout_timeout;
            let deadline = started.checked_add(timeout);
            slots.waiters.push_back(Waiter {
                deadline,
                grant: tx,
            });
            if let Some(deadline) = deadline {
                if !slots.expiry_started {
                    slots.expiry_started = true;
                    slots.expiry_at = Some(deadline);
                    tokio::spawn(expire_waits(Arc::downgrade(self), self.expiry.clone()));
                } else if slots.expiry_at.is_none_or(|at| deadline < at) {
                    slots.expiry_at = Some(deadline);
                    self.expiry.notify_one();
                }
            }
            timeout
        };
        let granted = rx.await;
        crate::metrics::pool_wait(started.elapsed());
        granted.map_err(|_| {
            crate::metrics::checkout_timeout();
            ProxyError::PoolTimeout(checkout_timeout)
        })
    }

    /// Fails the waits past their deadline (their clients get 53300), and forgets waiters
    /// that gave up. Returns the earliest deadline left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut slots = self.slots();
        let (kept, expired): (VecDeque<Waiter>, VecDeque<Waiter>) =
            std::mem::take(&mut slots.waiters)
                .into_iter()
                .partition(|w| !w.grant.is_closed() && w.deadline.is_none_or(|d| d > now));
        slots.waiters = kept;
        slots.expiry_at = slots.waiters.iter().filter_map(|w| w.deadline).min();
        let next = slots.expiry_at;
        drop(slots);
        // Dropping a waiter's sender wakes its client with the timeout.
        drop(expired);
        next
    }

    /// A connection of this pool, waiting up to checkout_timeout for one to be free; a new
    /// one logs in with `credential`.
    pub async fn checkout(self: &Arc<Self>, credential: &Credential) -> Result<Lease, ProxyError> {
        let taken = self.try_take(&mut self.slots());
        let Grant { permit, mut conn } = match taken {
            Some(grant) => grant,
            // Boxed: the common checkout should not carry a wait's size.
            None => Box::pin(self.wait()).await?,
        };
        while let Some(mut candidate) = conn {
            if !candidate.reader.is_closed_or_chatty() {
                return Ok(Lease {
                    conn: candidate,
                    permit,
                });
            }
            tracing::debug!(backend = %self.key.backend, "dropping a closed idle server connection");
            conn = self.slots().idle.pop();
        }
        // Boxed, as the wait above: most checkouts find an idle connection.
        let conn = Box::pin(self.connect(credential)).await?;
        Ok(Lease {
            conn: Box::new(conn),
            permit,
        })
    }

    /// A new connection of this pool, logged in within `connect_timeout`.
    async fn connect(&self, credential: &Credential) -> Result<ServerConn, ProxyError> {
        let connect_timeout = self.slots().settings.connect_timeout;
        let conn = tokio::time::timeout(
            connect_timeout,
            ServerConn::connect(self.target.clone(), &self.key.user, credential, &self.key.database),
        )
        .await
        .unwrap_or(Err(ServerError::Timeout))
        .map_err(|e| {
            tracing::warn!(backend = %self.key.backend, user = %self.key.user, database = %self.key.database, error = %e, "server connection failed");
            e.to_client()
        })?;
        tracing::debug!(backend = %self.key.backend, pid = conn.pid, "new server connection");
        Ok(conn)
    }

    /// Connections of this pool currently leased to clients.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Idle connections: (PostgreSQL process id, idle for).
    pub fn idle_connections(&self) -> Vec<(i32, Duration)> {
        let slots = self.slots();
        slots
            .idle
            .iter()
            .map(|c| (c.pid, c.idle_since.elapsed()))
            .collect()
    }

    pub fn size(&self) -> usize {
        self.slots().settings.size
    }

    /// Applies reloaded settings. A larger size serves waiting clients at once; a smaller
    /// one takes effect as leases come back.
    pub fn resize(self: &Arc<Self>, settings: &PoolSettings) {
        let grown = {
            let mut slots = self.slots();
            let grown = settings.size.saturating_sub(slots.settings.size);
            slots.settings = settings.clone();
            grown
        };
        for _ in 0..grown {
            let grant = {
                let mut slots = self.slots();
                if slots.waiters.is_empty() {
                    return;
                }
                match self.try_take(&mut slots) {
                    Some(grant) => grant,
                    None => return,
                }
            };
            // Hands the new place to the first waiter (or back to the pool if none is left).
            grant.give_back();
        }
    }

    /// Closes idle connections unused for longer than idle_timeout.
    pub fn reap(&self) {
        let closed = {
            let mut slots = self.slots();
            let cutoff = Instant::now() - slots.settings.idle_timeout;
            let (kept, closed) = std::mem::take(&mut slots.idle)
                .into_iter()
                .partition(|c| c.idle_since > cutoff);
            slots.idle = kept;
            closed
        };
        // Closed outside the lock.
        drop::<Vec<Box<ServerConn>>>(closed);
    }

    pub fn remember(&self, statement: &Arc<Statement>) {
        let mut known = self.known_statements.lock().expect("pool lock");
        if known.len() < MAX_KNOWN_STATEMENTS {
            known
                .entry(statement.hash)
                .or_insert_with(|| statement.clone());
        }
    }

    pub fn knows(&self, statement: &Statement) -> bool {
        let known = self.known_statements.lock().expect("pool lock");
        known
            .get(&statement.hash)
            .is_some_and(|k| **k == *statement)
    }
}

/// Fails a pool's waits at their deadlines: one task per pool, asleep until the earliest
/// deadline in the queue, rather than a timer for every wait. Ends with the pool.
async fn expire_waits(pool: Weak<Pool>, wake: Arc<Notify>) {
    loop {
        let next = match pool.upgrade() {
            Some(pool) => pool.expire(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// All pools of the process, created on first use.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    pub fn get(
        &self,
        key: PoolKey,
        target: Arc<BackendTarget>,
        settings: &PoolSettings,
    ) -> Arc<Pool> {
        let mut pools = self.pools.lock().expect("pools lock");
        pools
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Pool {
                    key,
                    target,
                    slots: Mutex::new(Slots {
                        settings: settings.clone(),
                        leased: 0,
                        idle: Vec::new(),
                        waiters: VecDeque::new(),
                        expiry_at: None,
                        expiry_started: false,
                    }),
                    in_use: AtomicUsize::new(0),
                    expiry: Arc::new(Notify::new()),
                    known_statements: Mutex::new(HashMap::new()),
                })
            })
            .clone()
    }

    /// Every pool, in no particular order.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .expect("pools lock")
            .values()
            .cloned()
            .collect()
    }

    /// Applies reloaded pool settings to every pool.
    pub fn resize_all(&self, settings: &PoolSettings) {
        for pool in self.all() {
            pool.resize(settings);
        }
    }

    pub fn reap_all(&self) {
        let pools: Vec<_> = self
            .pools
            .lock()
            .expect("pools lock")
            .values()
            .cloned()
            .collect();
        for p in pools {
            p.reap();
        }
    }
}
