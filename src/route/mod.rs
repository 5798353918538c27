//! Which backend runs a request.
//!
//! Writes, transactions and anything not certainly a read go to the primary. A read goes to a
//! replica chosen by the configured strategy among those that are up, not banned, within
//! `max_replica_lag`, and (read-your-writes) have replayed the client's last commit. When no
//! replica qualifies the read goes to the primary, or fails with 08006 if so configured.

pub mod health;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

use crate::config::{BackendRole, NoReplica, RoutingConfig, Strategy};
use crate::pool::BackendTarget;
use crate::protocol::ProxyError;
use health::BackendStatus;

pub struct Backend {
    pub target: Arc<BackendTarget>,
    pub role: BackendRole,
    pub weight: u32,
    pub status: Arc<BackendStatus>,
}

impl Backend {
    /// Configured as the primary, or `auto` and found out of recovery by the last check.
    fn is_primary(&self) -> bool {
        match self.role {
            BackendRole::Primary => true,
            BackendRole::Replica => false,
            BackendRole::Auto => self.status.in_recovery() == Some(false),
        }
    }

    fn is_replica(&self) -> bool {
        match self.role {
            BackendRole::Primary => false,
            BackendRole::Replica => true,
            BackendRole::Auto => self.status.in_recovery() == Some(true),
        }
    }
}

/// What a request needs from its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Primary,
    /// A read; `min_lsn` is the client's last commit position (0: none to wait for).
    Read {
        min_lsn: u64,
    },
}

/// Backends tried and failed for the current request, by index (at most 64 backends).
pub type Tried = u64;

pub struct Router {
    pub backends: Vec<Backend>,
    settings: RoutingConfig,
    next: AtomicUsize,
}

impl Router {
    pub fn new(backends: Vec<Backend>, settings: RoutingConfig) -> Router {
        Router {
            backends,
            settings,
            next: AtomicUsize::new(0),
        }
    }

    /// Whether reads may go anywhere but the primary: the split is on and replicas exist.
    pub fn splits(&self) -> bool {
        self.settings.read_write_split
            && self.backends.iter().any(|b| b.role != BackendRole::Primary)
    }

    pub fn settings(&self) -> &RoutingConfig {
        &self.settings
    }

    /// The backend for `want`, skipping those in `tried`. `load(i)` is how many of this
    /// client's pool connections backend `i` has in use (for least_connections).
    pub fn pick(
        &self,
        want: Want,
        tried: Tried,
        load: impl Fn(usize) -> usize,
    ) -> Result<usize, ProxyError> {
        let min_lsn = match want {
            Want::Read { min_lsn } if self.splits() => min_lsn,
            _ => return self.primary(tried),
        };
        let lag_ok = |b: &Backend| b.status.lag() <= self.settings.max_replica_lag;
        let mut candidates: Vec<(usize, u32)> = Vec::with_capacity(self.backends.len());
        let mut any_usable_replica = false;
        for (i, b) in self.backends.iter().enumerate() {
            if tried & (1 << i) != 0 || b.weight == 0 || !b.status.usable() {
                continue;
            }
            if b.is_replica() {
                any_usable_replica |= lag_ok(b);
                if lag_ok(b) && b.status.lsn() >= min_lsn {
                    candidates.push((i, b.weight));
                }
            } else if self.settings.primary_reads && b.is_primary() {
                candidates.push((i, b.weight));
            }
        }
        if candidates.is_empty() {
            // A replica that is merely behind this client's own write is not a failure:
            // the primary has the data, whatever `no_replica` says.
            if self.settings.no_replica == NoReplica::Error && !any_usable_replica {
                return Err(ProxyError::ServerUnavailable(
                    "no replica is available for reads".into(),
                ));
            }
            return self.primary(tried);
        }
        Ok(self.choose(&candidates, load))
    }

    /// The primary: one that passed its last check if there is one, else the configured
    /// primary even when down (a connection attempt fails fast with 08006, and the first
    /// write after it returns succeeds without waiting for a check).
    fn primary(&self, tried: Tried) -> Result<usize, ProxyError> {
        let candidates = || {
            self.backends
                .iter()
                .enumerate()
                .filter(|(i, b)| tried & (1 << i) == 0 && b.is_primary())
        };
        candidates()
            .find(|(_, b)| b.status.usable())
            .or_else(|| candidates().next())
            .map(|(i, _)| i)
            .ok_or_else(|| ProxyError::ServerUnavailable("no primary backend is available".into()))
    }

    /// One of `candidates` (index, weight) by the configured strategy.
    fn choose(&self, candidates: &[(usize, u32)], load: impl Fn(usize) -> usize) -> usize {
        if candidates.len() == 1 {
            return candidates[0].0;
        }
        let total: u64 = candidates.iter().map(|&(_, w)| u64::from(w)).sum();
        let by_weight = |mut n: u64| {
            for &(i, w) in candidates {
                if n < u64::from(w) {
                    return i;
                }
                n -= u64::from(w);
            }
            candidates[candidates.len() - 1].0
        };
        match self.settings.strategy {
            Strategy::RoundRobin => {
                let n = self.next.fetch_add(1, Ordering::Relaxed) as u64;
                by_weight(n % total)
            }
            Strategy::Random => by_weight(rand::thread_rng().gen_range(0..total)),
            Strategy::LeastConnections => {
                // Fewest connections in use per unit of weight; ties go round robin.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..candidates.len())
                    .map(|k| candidates[(start + k) % candidates.len()])
                    .min_by_key(|&(i, w)| (load(i) as u64 * 1_000_000) / u64::from(w))
                    .map(|(i, _)| i)
                    .expect("candidates is not empty")
            }
        }
    }

    /// Takes a backend out of rotation after a client saw it fail.
    pub fn ban(&self, idx: usize) {
        self.backends[idx].status.ban(self.settings.ban_time);
    }

    /// A primary passed its last check (for /readyz).
    pub fn primary_usable(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.is_primary() && b.status.usable())
    }

    pub fn is_primary(&self, idx: usize) -> bool {
        self.backends[idx].is_primary()
    }

    /// The primary to open pgward's own connections on (the cache bus, the notify relay):
    /// the first one that is usable, else the first configured.
    pub fn primary_target(&self) -> Option<Arc<BackendTarget>> {
        let primaries: Vec<usize> = (0..self.backends.len())
            .filter(|&i| self.is_primary(i))
            .collect();
        let idx = primaries
            .iter()
            .copied()
            .find(|&i| self.backends[i].status.usable())
            .or(primaries.first().copied())?;
        Some(self.backends[idx].target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendTls;

    fn backend(name: &str, role: BackendRole, weight: u32) -> Backend {
        let status = Arc::new(BackendStatus::new_for_test(name));
        Backend {
            target: Arc::new(BackendTarget {
                name: name.into(),
                host: "127.0.0.1".into(),
                port: 1,
                tls: BackendTls::Disable,
                tls_config: None,
            }),
            role,
            weight,
            status,
        }
    }

    fn router(strategy: Strategy, weights: [u32; 2]) -> Router {
        let backends = vec![
            backend("p", BackendRole::Primary, 1),
            backend("r1", BackendRole::Replica, weights[0]),
            backend("r2", BackendRole::Replica, weights[1]),
        ];
        for b in &backends {
            b.status
                .set_for_test(true, b.role == BackendRole::Replica, 1000, 0);
        }
        Router::new(
            backends,
            RoutingConfig {
                strategy,
                ..RoutingConfig::default()
            },
        )
    }

    fn counts(r: &Router, n: usize, want: Want) -> [usize; 3] {
        let mut c = [0; 3];
        for _ in 0..n {
            c[r.pick(want, 0, |_| 0).unwrap()] += 1;
        }
        c
    }

    const READ: Want = Want::Read { min_lsn: 0 };

    #[test]
    fn writes_go_to_the_primary_and_reads_to_replicas_by_weight() {
        let r = router(Strategy::RoundRobin, [1, 3]);
        assert_eq!(r.pick(Want::Primary, 0, |_| 0).unwrap(), 0);
        assert_eq!(counts(&r, 400, READ), [0, 100, 300]);
        let r = router(Strategy::Random, [1, 1]);
        let c = counts(&r, 2000, READ);
        assert_eq!(c[0], 0);
        assert!(c[1] > 800 && c[2] > 800, "{c:?}");
    }

    #[test]
    fn least_connections_prefers_the_idle_replica() {
        let r = router(Strategy::LeastConnections, [1, 1]);
        for _ in 0..10 {
            assert_eq!(r.pick(READ, 0, |i| if i == 1 { 5 } else { 1 }).unwrap(), 2);
        }
    }

    #[test]
    fn lagging_behind_and_banned_replicas_get_no_reads() {
        let r = router(Strategy::RoundRobin, [1, 1]);
        r.backends[1]
            .status
            .set_for_test(true, true, 1000, 64 << 20);
        assert_eq!(counts(&r, 10, READ), [0, 0, 10]);
        // Read-your-writes: only a replica that replayed the client's commit, else the primary.
        r.backends[2].status.set_for_test(true, true, 900, 0);
        assert_eq!(r.pick(Want::Read { min_lsn: 950 }, 0, |_| 0).unwrap(), 0);
        r.backends[2].status.set_for_test(true, true, 1000, 0);
        assert_eq!(r.pick(Want::Read { min_lsn: 950 }, 0, |_| 0).unwrap(), 2);
        r.ban(2);
        assert_eq!(
            r.pick(READ, 0, |_| 0).unwrap(),
            0,
            "falls back to the primary"
        );
        assert_eq!(r.pick(READ, 1 << 0, |_| 0).ok(), None, "nothing left");
    }

    #[test]
    fn auto_roles_follow_a_promotion() {
        let r = router(Strategy::RoundRobin, [1, 1]);
        let mut backends = r.backends;
        for b in &mut backends {
            b.role = BackendRole::Auto;
        }
        let r = Router::new(backends, RoutingConfig::default());
        assert_eq!(r.pick(Want::Primary, 0, |_| 0).unwrap(), 0);
        // The old primary stops answering; r1 is promoted.
        r.backends[0]
            .status
            .record_failure_for_test("connection refused");
        r.backends[1].status.set_for_test(true, false, 2000, 0);
        assert_eq!(r.pick(Want::Primary, 0, |_| 0).unwrap(), 1);
        assert_eq!(r.pick(READ, 0, |_| 0).unwrap(), 2);
    }

    #[test]
    fn no_replica_error_mode() {
        let mut r = router(Strategy::RoundRobin, [1, 1]);
        r.settings.no_replica = NoReplica::Error;
        r.ban(1);
        r.ban(2);
        assert_eq!(r.pick(READ, 0, |_| 0).unwrap_err().sqlstate(), "08006");
    }
}
