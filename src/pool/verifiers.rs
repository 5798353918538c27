//! Auth passthrough: a role's password verifier, read from PostgreSQL with `auth.auth_query`
//! as `auth.auth_user` (PgBouncer's auth_query), over connections of pgward's own.
//!
//! Answers are cached per (database, role) for `VERIFIER_TTL`, found or not, so a storm of
//! logins runs the query once per role, and concurrent logins of one role wait for one query.
//! A password changed in PostgreSQL is therefore seen within that time. Failures to run the
//! query are not cached. The cache belongs to one configuration and goes with it on reload.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use tokio::sync::OnceCell;

use super::{BackendTarget, Credential, ServerConn, ServerError};
use crate::config::Config;
use crate::protocol::scram::{self, ScramSecret};
use crate::route::{Router, Want};

/// How long an answer of `auth_query` is used.
pub const VERIFIER_TTL: Duration = Duration::from_secs(30);

/// Roles whose answers are kept at most (unknown names included).
const MAX_CACHED_ROLES: u64 = 10_000;

/// Idle connections of auth_user kept for the next query.
const MAX_IDLE: usize = 4;

/// A password verifier as PostgreSQL stores it (`pg_authid.rolpassword`).
#[derive(Clone)]
pub enum Verifier {
    Scram(ScramSecret),
    /// "md5" + md5(password + role name).
    Md5(String),
}

impl Verifier {
    /// None for anything else (no password, or a format pgward cannot check).
    pub fn parse(stored: &str) -> Option<Verifier> {
        if scram::is_md5_hash(stored) {
            return Some(Verifier::Md5(stored.to_owned()));
        }
        ScramSecret::parse_verifier(stored).map(Verifier::Scram)
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verifier::Scram(_) => "Verifier::Scram(..)",
            Verifier::Md5(_) => "Verifier::Md5(..)",
        })
    }
}

/// `auth_query` could not be run: auth_user cannot connect, the query fails, no backend.
#[derive(Debug, thiserror::Error)]
#[error("auth_query as {user} failed: {reason}")]
pub struct LookupError {
    user: String,
    reason: String,
}

type Answer = Arc<OnceCell<Option<Verifier>>>;

pub struct Verifiers {
    user: String,
    credential: Credential,
    query: String,
    database: Option<String>,
    /// For one lookup: connecting and one query.
    timeout: Duration,
    /// Kept connections unused for longer are closed.
    idle_timeout: Duration,
    answers: Cache<(String, String), Answer>,
    /// (backend name, database, connection).
    idle: Mutex<Vec<(String, String, ServerConn)>>,
}

impl Verifiers {
    /// None unless `auth.passthrough` is on.
    pub fn new(config: &Config) -> Option<Verifiers> {
        let auth = &config.auth;
        if !auth.passthrough {
            return None;
        }
        Some(Verifiers {
            user: auth.auth_user.clone().unwrap_or_default(),
            credential: Credential::password(config.auth_user_password()),
            query: auth.auth_query.clone(),
            database: auth.auth_database.clone(),
            timeout: config.pool.connect_timeout + config.routing.check_timeout,
            idle_timeout: config.pool.idle_timeout,
            answers: Cache::builder()
                .max_capacity(MAX_CACHED_ROLES)
                .time_to_live(VERIFIER_TTL)
                .build(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The verifier of `role` (None: no such login role, or it has no usable password),
    /// asking PostgreSQL unless a recent answer is cached. `client_database` is where the
    /// query runs unless `auth_database` says otherwise.
    pub async fn lookup(
        &self,
        router: &Router,
        client_database: &str,
        role: &str,
    ) -> Result<Option<Verifier>, LookupError> {
        let database = self.database.as_deref().unwrap_or(client_database);
        let answer = self
            .answers
            .get_with((database.to_owned(), role.to_owned()), Default::default);
        let fetch = || async {
            // The primary, else any usable backend (replicas hold the same roles).
            let idx = router
                .pick(Want::Primary, 0, |_| 0)
                .or_else(|_| router.pick(Want::Read { min_lsn: 0 }, 0, |_| 0))
                .map_err(|e| e.to_string())?;
            let target = router.backends[idx].target.clone();
            match tokio::time::timeout(self.timeout, self.fetch(target, database, role)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(ServerError::Timeout.to_string()),
            }
        };
        match answer.get_or_try_init(fetch).await {
            Ok(verifier) => Ok(verifier.clone()),
            Err(reason) => {
                let err = LookupError {
                    user: self.user.clone(),
                    reason,
                };
                tracing::warn!(database, error = %err, "cannot read a password verifier for passthrough");
                Err(err)
            }
        }
    }

    async fn fetch(
        &self,
        target: Arc<BackendTarget>,
        database: &str,
        role: &str,
    ) -> Result<Option<Verifier>, ServerError> {
        let mut reused = self.take_idle(&target.name, database);
        loop {
            let from_idle = reused.is_some();
            let mut conn = match reused.take() {
                Some(conn) => conn,
                None => {
                    ServerConn::connect(target.clone(), &self.user, &self.credential, database)
                        .await?
                }
            };
            match conn.query_params(&self.query, &[Some(role)]).await {
                Ok(rows) => {
                    self.put_idle(database, conn);
                    let stored = rows.first().and_then(|row| row.get(1)).cloned().flatten();
                    return Ok(stored.as_deref().and_then(Verifier::parse));
                }
                // A kept connection may have died meanwhile: one more try on a fresh one.
                Err(ServerError::Io(_) | ServerError::Frame(_)) if from_idle => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn take_idle(&self, backend: &str, database: &str) -> Option<ServerConn> {
        let mut idle = self.idle.lock().expect("verifier connections lock");
        let cutoff = Instant::now() - self.idle_timeout;
        idle.retain_mut(|(_, _, c)| c.idle_since > cutoff && !c.reader.is_closed_or_chatty());
        let at = idle
            .iter()
            .position(|(b, d, _)| b == backend && d == database)?;
        Some(idle.swap_remove(at).2)
    }

    fn put_idle(&self, database: &str, mut conn: ServerConn) {
        let mut idle = self.idle.lock().expect("verifier connections lock");
        if idle.len() < MAX_IDLE {
            conn.idle_since = Instant::now();
            idle.push((conn.backend.name.clone(), database.to_owned(), conn));
        }
    }
}
