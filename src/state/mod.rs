//! State shared by the daemon, the sessions and the admin endpoint: the running
//! configuration (swapped whole on reload) and what outlives a reload (pools, backend
//! health, cancel keys). It sits below all of them, so the layers read top-down:
//! daemon, session, stages, pool, protocol.

pub mod cancel;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalogs;
use crate::config::{BackendTls, Config, UserConfig};
use crate::policy::Policy;
use crate::pool::verifiers::Verifiers;
use crate::pool::{BackendTarget, PoolSettings, Pools};
use crate::protocol::scram::ScramSecret;
use crate::protocol::tls;
use crate::route::{health, Backend, Router};
use crate::sql::Analyzer;
use cancel::CancelRegistry;

/// Distinct SQL texts whose analysis is kept.
const ANALYSIS_CACHE_ENTRIES: u64 = 10_000;

/// Everything derived from one config file; swapped whole on reload. A client keeps the
/// runtime it connected with for its whole session.
pub struct Runtime {
    pub config: Arc<Config>,
    pub users: HashMap<String, UserEntry>,
    pub tls: Option<TlsAcceptor>,
    /// Backends in config order with their live status; picks the server for each request.
    pub router: Router,
    /// Statement analysis, cached by SQL text.
    pub analyzer: Analyzer,
    pub pool: PoolSettings,
    /// Password verifiers of roles without a `[[users]]` entry (`auth.passthrough`).
    pub verifiers: Option<Verifiers>,
}

pub struct UserEntry {
    pub config: UserConfig,
    /// Derived once here, so a login does not pay for PBKDF2.
    pub scram: Option<ScramSecret>,
}

impl Runtime {
    /// `health` holds backend statuses across reloads.
    pub fn build(config: Config, health: &health::Registry) -> anyhow::Result<Runtime> {
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
            _ => None,
        };
        let users = config
            .users
            .iter()
            .map(|u| {
                let scram = u.password.as_deref().map(|p| {
                    ScramSecret::parse_verifier(p).unwrap_or_else(|| ScramSecret::from_password(p))
                });
                (
                    u.name.clone(),
                    UserEntry {
                        config: u.clone(),
                        scram,
                    },
                )
            })
            .collect();
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| {
                let tls_config = match b.tls {
                    BackendTls::Disable => None,
                    BackendTls::VerifyFull => Some(tls::client_config(true, b.tls_ca.as_deref())?),
                    BackendTls::Prefer | BackendTls::Require => {
                        Some(tls::client_config(false, None)?)
                    }
                };
                Ok(Backend {
                    target: Arc::new(BackendTarget {
                        name: b.name.clone(),
                        host: b.host.clone(),
                        port: b.port,
                        tls: b.tls,
                        tls_config,
                    }),
                    role: b.role,
                    weight: b.weight,
                    status: health.status(&b.name),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let analyzer = Analyzer::new(&config.routing.write_functions, ANALYSIS_CACHE_ENTRIES);
        let router = Router::new(backends, config.routing.clone());
        let pool = PoolSettings {
            size: config.pool.size,
            checkout_timeout: config.pool.checkout_timeout,
            connect_timeout: config.pool.connect_timeout,
            idle_timeout: config.pool.idle_timeout,
        };
        let verifiers = Verifiers::new(&config);
        Ok(Runtime {
            verifiers,
            config: Arc::new(config),
            users,
            tls,
            router,
            analyzer,
            pool,
        })
    }

    /// User and password for health checks: `routing.check_user`, else the first user's
    /// backend credentials.
    pub fn check_credentials(&self) -> (String, Option<String>) {
        let routing = &self.config.routing;
        let first = self.config.users.first();
        let user = routing
            .check_user
            .clone()
            .or_else(|| first.map(|u| u.backend_user().to_owned()))
            .unwrap_or_else(|| "postgres".into());
        let password = routing
            .check_password
            .clone()
            .or_else(|| first.and_then(|u| u.backend_password().map(str::to_owned)));
        (user, password)
    }
}

pub struct State {
    pub runtime: ArcSwap<Runtime>,
    pub pools: Pools,
    pub cancels: Arc<CancelRegistry>,
    /// Cancelled on SIGTERM: stop accepting, let clients finish their transaction, close.
    pub shutdown: CancellationToken,
    pub client_slots: Arc<Semaphore>,
    /// Live backend statuses, kept across reloads.
    pub health: health::Registry,
    /// The access policy in force (None when `[policy]` is off); swapped whole on reload,
    /// and every client follows the new one from its next statement.
    pub policy: ArcSwapOption<Policy>,
    /// Relations and columns of each database, for resolving names.
    pub catalogs: Catalogs,
}
