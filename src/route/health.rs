//! What pgward knows about each backend, and the monitor that keeps it current.
//!
//! One task checks every backend each `check_interval` over a connection of its own, with one
//! query that answers three things at once: is it up, is it in recovery (a replica; this is how
//! `role = "auto"` follows a promotion), and where is its WAL (the primary's current insert
//! position, a replica's replay position). A replica's lag is the primary's position minus its
//! own, from the same round of checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{BackendRole, RoutingConfig};
use crate::metrics;
use crate::pool::{BackendTarget, Credential, ServerConn, ServerError};
use crate::route::Router;

const CHECK_SQL: &str =
    "SELECT pg_catalog.pg_is_in_recovery(), CASE WHEN pg_catalog.pg_is_in_recovery() \
     THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_insert_lsn() END";

/// A lag value meaning "not measured yet": such a replica gets no reads.
const UNKNOWN: u64 = u64::MAX;

/// Live state of one backend, shared by the monitor (writer) and every router (readers).
/// Atomics only: routing a request reads these without taking a lock.
#[derive(Debug)]
pub struct BackendStatus {
    pub name: String,
    up: AtomicBool,
    /// 0 not known yet, 1 primary, 2 in recovery.
    recovery: AtomicU8,
    /// Primary: its WAL insert position; replica: its replay position. 0 when unknown.
    lsn: AtomicU64,
    lag: AtomicU64,
    /// Milliseconds since `epoch()` until which the backend gets no new traffic.
    banned_until: AtomicU64,
    /// The last check failed (so a failure is logged once, including the very first check).
    failing: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl BackendStatus {
    fn new(name: &str) -> BackendStatus {
        BackendStatus {
            name: name.to_owned(),
            up: AtomicBool::new(false),
            recovery: AtomicU8::new(0),
            lsn: AtomicU64::new(0),
            lag: AtomicU64::new(UNKNOWN),
            banned_until: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// Up at the last check and not banned.
    pub fn usable(&self) -> bool {
        // Most backends were never banned: no clock read for them.
        let banned_until = self.banned_until.load(Ordering::Relaxed);
        self.up.load(Ordering::Relaxed) && (banned_until == 0 || banned_until <= now_ms())
    }

    /// Whether the last check passed.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long the backend still gets no new traffic after a failure, if banned.
    pub fn banned_for(&self) -> Option<Duration> {
        let until = self.banned_until.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Whether the last check found it in recovery (None before the first successful check).
    pub fn in_recovery(&self) -> Option<bool> {
        match self.recovery.load(Ordering::Relaxed) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    pub fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::Relaxed)
    }

    /// Bytes of WAL the replica has still to replay; u64::MAX when not measured.
    pub fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    /// Takes the backend out of rotation for `ban` after a failure a client saw; the monitor's
    /// next successful check after that readmits it.
    pub fn ban(&self, ban: Duration) {
        let until = now_ms() + ban.as_millis() as u64;
        self.banned_until.fetch_max(until, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(backend = %self.name, ?ban, "backend failed a client request; banned");
        }
        metrics::backend_up(&self.name, false);
    }

    fn record_failure(&self, error: &str, ban: Duration) {
        self.up.store(false, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(backend = %self.name, %error, "backend check failed; no traffic until a check passes (see routing.check_user)");
        }
        // Its role is unknown until it answers again: a dead `auto` primary must not keep
        // the writes after a replica is promoted.
        self.recovery.store(0, Ordering::Relaxed);
        self.banned_until
            .fetch_max(now_ms() + ban.as_millis() as u64, Ordering::Relaxed);
        metrics::backend_up(&self.name, false);
    }

    fn record_success(&self, in_recovery: bool, lsn: Option<u64>) {
        self.failing.store(false, Ordering::Relaxed);
        self.recovery
            .store(if in_recovery { 2 } else { 1 }, Ordering::Relaxed);
        self.lsn.store(lsn.unwrap_or(0), Ordering::Relaxed);
        if self.banned_until.load(Ordering::Relaxed) <= now_ms()
            && !self.up.swap(true, Ordering::Relaxed)
        {
            tracing::info!(backend = %self.name, in_recovery, "backend is up");
        }
        metrics::backend_up(&self.name, self.up.load(Ordering::Relaxed));
    }

    fn record_lag(&self, lag: u64, max: u64) {
        let before = self.lag.swap(lag, Ordering::Relaxed);
        if (before > max) != (lag > max) && before != UNKNOWN {
            if lag > max {
                tracing::warn!(backend = %self.name, lag, max, "replica lags too far behind; no reads until it catches up");
            } else {
                tracing::info!(backend = %self.name, lag, "replica caught up; reads resume");
            }
        }
        metrics::replica_lag(&self.name, lag);
    }
}

#[cfg(test)]
impl BackendStatus {
    pub fn new_for_test(name: &str) -> BackendStatus {
        BackendStatus::new(name)
    }

    pub fn record_failure_for_test(&self, error: &str) {
        self.record_failure(error, Duration::from_secs(60));
    }

    pub fn set_for_test(&self, up: bool, in_recovery: bool, lsn: u64, lag: u64) {
        self.up.store(up, Ordering::Relaxed);
        self.recovery
            .store(if in_recovery { 2 } else { 1 }, Ordering::Relaxed);
        self.lsn.store(lsn, Ordering::Relaxed);
        self.lag.store(lag, Ordering::Relaxed);
    }
}

/// Statuses by backend name. They outlive a config reload, so a reload neither forgets that a
/// backend is down nor waits for a fresh check.
#[derive(Default)]
pub struct Registry {
    statuses: Mutex<HashMap<String, Arc<BackendStatus>>>,
}

impl Registry {
    /// Takes backends that a reload removed out of rotation: clients that connected before
    /// the reload still route with the old backend list.
    pub fn retire_all_but(&self, current: &[&str]) {
        for (name, status) in self.statuses.lock().expect("registry lock").iter() {
            if !current.contains(&name.as_str()) && status.up.swap(false, Ordering::Relaxed) {
                status.recovery.store(0, Ordering::Relaxed);
                tracing::info!(backend = %name, "backend removed from the configuration");
            }
        }
    }

    pub fn status(&self, name: &str) -> Arc<BackendStatus> {
        self.statuses
            .lock()
            .expect("registry lock")
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(BackendStatus::new(name)))
            .clone()
    }
}

/// The login the checks use.
#[derive(Clone, Copy)]
pub struct CheckLogin<'a> {
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub database: &'a str,
}

/// One round of checks, all backends at once, then the lag of each replica against the
/// primary found in this same round.
pub async fn check_all(
    router: &Router,
    routing: &RoutingConfig,
    login: CheckLogin<'_>,
    conns: &mut HashMap<String, ServerConn>,
) {
    conns.retain(|name, _| router.backends.iter().any(|b| &b.target.name == name));
    let mut checks = tokio::task::JoinSet::new();
    for (idx, b) in router.backends.iter().enumerate() {
        let conn = conns.remove(&b.target.name);
        let target = b.target.clone();
        let (user, password, database) = (
            login.user.to_owned(),
            login.password.map(str::to_owned),
            login.database.to_owned(),
        );
        let timeout = routing.check_timeout;
        checks.spawn(async move {
            let check = check(conn, target, &user, password.as_deref(), &database);
            let result = tokio::time::timeout(timeout, check)
                .await
                .unwrap_or(Err(ServerError::Timeout));
            (idx, result)
        });
    }
    let mut results = Vec::with_capacity(checks.len());
    while let Some(done) = checks.join_next().await {
        results.extend(done.ok());
    }
    let mut primary_lsn = None;
    for (idx, result) in results {
        let backend = &router.backends[idx];
        match result {
            Ok((conn, in_recovery, lsn)) => {
                conns.insert(backend.target.name.clone(), conn);
                backend.status.record_success(in_recovery, lsn);
                if !in_recovery && backend.role != BackendRole::Replica {
                    primary_lsn = lsn.max(primary_lsn);
                }
            }
            Err(e) => backend
                .status
                .record_failure(&e.to_string(), routing.ban_time),
        }
    }
    // Without the primary there is nothing to measure against: lags keep their last value.
    let Some(primary_lsn) = primary_lsn else {
        return;
    };
    for b in &router.backends {
        if b.status.in_recovery() == Some(true) && b.status.usable() {
            let replayed = b.status.lsn();
            let lag = if replayed == 0 {
                UNKNOWN
            } else {
                primary_lsn.saturating_sub(replayed)
            };
            b.status.record_lag(lag, routing.max_replica_lag);
        }
    }
}

async fn check(
    conn: Option<ServerConn>,
    target: Arc<BackendTarget>,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Result<(ServerConn, bool, Option<u64>), ServerError> {
    let mut conn = match conn {
        Some(conn) => conn,
        None => {
            ServerConn::connect(target, user, &Credential::password(password), database).await?
        }
    };
    let rows = conn.internal_query(CHECK_SQL).await?;
    let row = rows.first().ok_or(ServerError::Unexpected(b'C'))?;
    let in_recovery = row.first().and_then(|v| v.as_deref()) == Some("t");
    let lsn = row.get(1).and_then(|v| v.as_deref()).and_then(parse_lsn);
    Ok((conn, in_recovery, lsn))
}

/// Parses PostgreSQL's text form of an LSN, `16/B374D848`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("garbage"), None);
        assert_eq!(parse_lsn("1/zz"), None);
    }

    #[test]
    fn ban_takes_a_backend_out_until_readmitted() {
        let s = BackendStatus::new("r1");
        assert!(!s.usable(), "unknown until the first check");
        s.record_success(true, Some(100));
        assert!(s.usable());
        s.ban(Duration::from_secs(60));
        assert!(!s.usable());
        s.record_success(true, Some(100));
        assert!(!s.usable(), "a successful check does not cut a ban short");
    }
}
