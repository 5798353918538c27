//! Server connection pools, one per (backend user, database, backend).
//!
//! A pool does not hold a password: each client brings the credential for its backend login
//! (from `[[users]]`, or proven by the client itself under passthrough) and new server
//! connections made for it use that one.
//!
//! Capacity is a semaphore (fair, FIFO), the idle list a short mutex-protected stack, so a
//! checkout never waits behind another client's I/O. Broken connections are never handed out:
//! an idle connection that has closed or spoken out of turn is dropped at checkout.

pub mod credential;
pub mod server;
pub mod verifiers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Swapped whole when a reload changes them.
    settings: ArcSwap<PoolSettings>,
    /// The size the semaphore's permits add up to (with those lent out).
    size: AtomicUsize,
    /// Boxed: a checkout or release moves a pointer, not the connection's state, and a
    /// lease (kept in every session) is small.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConn>>>,
    permits: Arc<Semaphore>,
    /// Statements some server of this pool has parsed successfully, so a client's prepare of
    /// the same statement can be answered without a server (see `Session::prepare_locally`).
    known_statements: Mutex<HashMap<u64, Arc<Statement>>>,
}

/// Bound on `known_statements`, so clients generating endless distinct SQL cannot grow it.
const MAX_KNOWN_STATEMENTS: usize = 10_000;

/// A checked-out server connection. Dropping it closes the connection; `release` returns it.
pub struct Lease {
    pub conn: Box<ServerConn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn release(self) {
        let Lease {
            mut conn,
            pool,
            _permit,
        } = self;
        conn.idle_since = Instant::now();
        pool.idle.lock().expect("pool lock").push(conn);
    }
}

impl Pool {
    /// A permit to lease a connection, once one is free; an error after `checkout_timeout`.
    async fn wait_for_permit(
        &self,
        checkout_timeout: Duration,
    ) -> Result<OwnedSemaphorePermit, ProxyError> {
        // One clock read for the start and the deadline (`timeout` would read it again).
        let started = Instant::now();
        let wait = self.permits.clone().acquire_owned();
        let acquired = match started.checked_add(checkout_timeout) {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), wait).await,
            // Beyond what the clock can tell: no deadline.
            None => Ok(wait.await),
        };
        crate::metrics::pool_wait(started.elapsed());
        match acquired {
            Ok(permit) => Ok(permit.expect("pool semaphore is never closed")),
            Err(_) => {
                crate::metrics::checkout_timeout();
                Err(ProxyError::PoolTimeout(checkout_timeout))
            }
        }
    }

    /// A connection of this pool, waiting up to checkout_timeout for one to be free; a new
    /// one logs in with `credential`.
    pub async fn checkout(self: &Arc<Self>, credential: &Credential) -> Result<Lease, ProxyError> {
        let (checkout_timeout, connect_timeout) = {
            let settings = self.settings.load();
            (settings.checkout_timeout, settings.connect_timeout)
        };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Boxed: a wait holds a timer, and the common checkout should not carry its size.
            Err(_) => Box::pin(self.wait_for_permit(checkout_timeout)).await?,
        };
        while let Some(mut conn) = self.pop_idle() {
            if conn.reader.is_closed_or_chatty() {
                tracing::debug!(backend = %self.key.backend, "dropping a closed idle server connection");
                continue;
            }
            return Ok(Lease {
                conn,
                pool: self.clone(),
                _permit: permit,
            });
        }
        // Boxed, as the wait above: most checkouts find an idle connection.
        let conn = Box::pin(self.connect(credential, connect_timeout)).await?;
        Ok(Lease {
            conn: Box::new(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    /// A new connection of this pool, logged in within `connect_timeout`.
    async fn connect(
        &self,
        credential: &Credential,
        connect_timeout: Duration,
    ) -> Result<ServerConn, ProxyError> {
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
        self.size
            .load(Ordering::Relaxed)
            .saturating_sub(self.permits.available_permits())
    }

    /// Idle connections: (PostgreSQL process id, idle for).
    pub fn idle_connections(&self) -> Vec<(i32, Duration)> {
        let idle = self.idle.lock().expect("pool lock");
        idle.iter()
            .map(|c| (c.pid, c.idle_since.elapsed()))
            .collect()
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Applies reloaded settings. A smaller size takes effect as leases come back: the
    /// surplus permits are taken, in turn with waiting clients, and never given back.
    pub fn resize(self: &Arc<Self>, settings: &PoolSettings) {
        self.settings.store(Arc::new(settings.clone()));
        let old = self.size.swap(settings.size, Ordering::Relaxed);
        if settings.size > old {
            self.permits.add_permits(settings.size - old);
        } else if settings.size < old {
            let surplus = u32::try_from(old - settings.size).unwrap_or(u32::MAX);
            let permits = self.permits.clone();
            tokio::spawn(async move {
                if let Ok(taken) = permits.acquire_many_owned(surplus).await {
                    taken.forget();
                }
            });
        }
    }

    /// Most recently used first: warm connections stay warm, old ones age out.
    fn pop_idle(&self) -> Option<Box<ServerConn>> {
        self.idle.lock().expect("pool lock").pop()
    }

    /// Closes idle connections unused for longer than idle_timeout.
    pub fn reap(&self) {
        let cutoff = Instant::now() - self.settings.load().idle_timeout;
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain(|c| c.idle_since > cutoff);
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
                    settings: ArcSwap::from_pointee(settings.clone()),
                    size: AtomicUsize::new(settings.size),
                    idle: Mutex::new(Vec::new()),
                    permits: Arc::new(Semaphore::new(settings.size)),
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
