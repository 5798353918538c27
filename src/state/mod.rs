//! State shared by the daemon, the sessions and the admin endpoint: the running
//! configuration (swapped whole on reload) and what outlives a reload (pools, backend
//! health, cancel keys). It sits below all of them, so the layers read top-down:
//! daemon, session, stages, pool, protocol.

pub mod cancel;
pub mod clients;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalogs;
use crate::config::{Config, UserConfig};
use crate::crypto::Crypto;
use crate::policy::Policy;
use crate::pool::verifiers::Verifiers;
use crate::pool::{BackendTarget, Credential, PoolSettings, Pools};
use crate::protocol::scram::ScramSecret;
use crate::protocol::tls;
use crate::route::{health, Backend, Router};
use crate::sql::Analyzer;
use cancel::CancelRegistry;
use clients::Clients;

/// Distinct SQL texts whose analysis is kept.
const ANALYSIS_CACHE_ENTRIES: u64 = 10_000;

/// Everything derived from one config file; swapped whole on reload. A client keeps the
/// runtime it connected with for its whole session.
pub struct Runtime {
    pub config: Arc<Config>,
    pub users: HashMap<String, UserEntry>,
    pub tls: Option<tls::ServerTls>,
    /// Backends in config order with their live status; picks the server for each request.
    pub router: Router,
    /// Statement analysis, cached by SQL text.
    pub analyzer: Analyzer,
    pub pool: PoolSettings,
    /// Password verifiers of roles without a `[[users]]` entry (`auth.passthrough`).
    pub verifiers: Option<Verifiers>,
    /// The designated columns and their keys (None when no column is designated).
    pub crypto: Option<Arc<Crypto>>,
}

pub struct UserEntry {
    pub config: UserConfig,
    /// Derived once here, so a login does not pay for PBKDF2.
    pub scram: Option<ScramSecret>,
    /// The backend login of this user's sessions, shared by them all.
    pub backend_user: Arc<str>,
    pub backend_credential: Arc<Credential>,
}

impl Runtime {
    /// `health` holds backend statuses across reloads.
    pub fn build(config: Config, health: &health::Registry) -> anyhow::Result<Runtime> {
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_tls(cert, key)?),
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
                        backend_user: u.backend_user().into(),
                        backend_credential: Arc::new(Credential::password(u.backend_password())),
                    },
                )
            })
            .collect();
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| {
                Ok(Backend {
                    target: Arc::new(BackendTarget::from_config(b)?),
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
        let crypto = Crypto::from_config(&config.encryption, config.base_dir())?;
        Ok(Runtime {
            verifiers,
            crypto,
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
    /// Every connected client (admin console, KILL, gauges).
    pub clients: Arc<Clients>,
    /// PAUSE / RESUME from the admin console.
    pub pause: Pause,
    /// The result cache and its invalidation bus; None when `[cache]` is off. Built once:
    /// `[cache]` changes take effect after a restart.
    pub cache: Option<crate::cache::Cache>,
    /// LISTEN/NOTIFY relay for clients in transaction mode.
    pub notify: Arc<crate::notify::Relay>,
    /// Whether a policy and encryption are in force, for the request path's checks.
    pub switches: Switches,
}

/// Whether an access policy (`State::policy`) and column encryption (`State::runtime`'s
/// crypto) are in force, as plain flags: the request path asks at every request, and an
/// `ArcSwap` load costs about 50 instructions where a flag costs one load. Each is set
/// after the swap it mirrors (`State::install`), so a request that sees one on and loads
/// what it mirrors finds it, or None while a reload turns it off, which every reader
/// handles; a request running alongside a reload follows either configuration, as before.
pub struct Switches {
    policy: AtomicBool,
    crypto: AtomicBool,
}

impl Switches {
    pub fn new(runtime: &Runtime, policy: Option<&Arc<Policy>>) -> Switches {
        Switches {
            policy: AtomicBool::new(policy.is_some()),
            crypto: AtomicBool::new(runtime.crypto.is_some()),
        }
    }
}

/// PAUSE holds new transactions before they take a server connection; RESUME lets them go.
pub struct Pause {
    paused: AtomicBool,
    resumed: tokio::sync::watch::Sender<bool>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            paused: AtomicBool::new(false),
            resumed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Pause {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.resumed.send_replace(paused);
    }

    /// Returns at once unless paused; then when RESUME comes.
    pub async fn wait(&self) {
        if !self.is_paused() {
            return;
        }
        // Boxed: a checkout's future (in every request's) need not hold room for a pause.
        Box::pin(async {
            let mut paused = self.resumed.subscribe();
            // The sender lives as long as the state, so this only ends on RESUME.
            let _ = paused.wait_for(|p| !*p).await;
        })
        .await
    }
}

impl State {
    /// An access policy is in force (see `Switches`).
    pub fn policy_on(&self) -> bool {
        self.switches.policy.load(Ordering::Acquire)
    }

    /// Column encryption is in force (see `Switches`).
    pub fn crypto_on(&self) -> bool {
        self.switches.crypto.load(Ordering::Acquire)
    }

    /// Puts a reloaded configuration and policy in force, then their switches.
    fn install(&self, runtime: Runtime, policy: Option<Arc<Policy>>) {
        let (policy_on, crypto_on) = (policy.is_some(), runtime.crypto.is_some());
        self.runtime.store(Arc::new(runtime));
        self.policy.store(policy);
        self.switches.policy.store(policy_on, Ordering::Release);
        self.switches.crypto.store(crypto_on, Ordering::Release);
    }

    /// Re-reads the config file and the policy files. Anything bad keeps the running
    /// configuration and policy whole, and the error says why. On success, the settings
    /// that need a restart to change are listed.
    pub async fn reload(&self) -> Result<Vec<String>, String> {
        let result = self.try_reload().await;
        crate::metrics::reloaded(result.is_ok());
        match &result {
            Ok(notes) => {
                for note in notes {
                    tracing::warn!("{note}");
                }
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the running configuration and policy")
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<Vec<String>, String> {
        let current = self.runtime.load();
        let path = current
            .config
            .source
            .clone()
            .ok_or("the configuration was not read from a file")?;
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        let policy = load_policy(&config).await.map_err(|e| e.to_string())?;
        let runtime = Runtime::build(config, &self.health).map_err(|e| format!("{e:#}"))?;
        let mut notes = Vec::new();
        let (old, new) = (&current.config.server, &runtime.config.server);
        if old.listen != new.listen {
            notes.push("server.listen changed: takes effect after a restart".to_owned());
        }
        if old.admin_listen != new.admin_listen {
            notes.push("server.admin_listen changed: takes effect after a restart".to_owned());
        }
        if old.worker_threads != new.worker_threads {
            notes.push("server.worker_threads changed: takes effect after a restart".to_owned());
        }
        if old.log_format != new.log_format {
            notes.push("server.log_format changed: takes effect after a restart".to_owned());
        }
        if old.max_clients != new.max_clients {
            notes.push("server.max_clients changed: takes effect after a restart".to_owned());
        }
        if current.config.cache != runtime.config.cache {
            notes.push("[cache] changed: takes effect after a restart".to_owned());
        }
        self.pools.resize_all(&runtime.pool);
        self.install(runtime, policy);
        Ok(notes)
    }
}

/// The access policy of `config`, loaded and checked; None when `[policy]` is off.
pub async fn load_policy(config: &Config) -> anyhow::Result<Option<Arc<Policy>>> {
    if !config.policy.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(Policy::load(&config.policy).await?)))
}
