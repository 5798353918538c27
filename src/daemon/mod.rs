//! The daemon: listener, per-client tasks, the shared state they use, reload and shutdown.

pub mod cancel;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BackendTls, Config, UserConfig};
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
        Ok(Runtime {
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
}

/// How `run` treats process signals; the demo handles Ctrl-C itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    Handle,
    Ignore,
}

/// A bound, running daemon.
pub struct Daemon {
    pub state: Arc<State>,
    pub listen_addr: std::net::SocketAddr,
    listener: TcpListener,
    /// `server.admin_listen`, when set.
    admin: Option<TcpListener>,
}

impl Daemon {
    pub async fn bind(config: Config) -> anyhow::Result<Daemon> {
        let addr = config.listen_addr();
        let health = health::Registry::default();
        let runtime = Runtime::build(config, &health)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let listen_addr = listener.local_addr()?;
        let admin = match runtime.config.server.admin_listen.as_str() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (server.admin_listen)"))?,
            ),
        };
        let state = Arc::new(State {
            client_slots: Arc::new(Semaphore::new(runtime.config.server.max_clients)),
            runtime: ArcSwap::from_pointee(runtime),
            pools: Pools::default(),
            cancels: Arc::new(CancelRegistry::default()),
            shutdown: CancellationToken::new(),
            health,
        });
        // One round of checks before the first client, so routing starts from facts.
        health::check_all(&state.runtime.load(), &mut Default::default()).await;
        Ok(Daemon {
            state,
            listen_addr,
            listener,
            admin,
        })
    }

    /// Serves until shutdown is requested, then drains clients up to `shutdown_timeout`.
    pub async fn run(self, signals: Signals) -> anyhow::Result<()> {
        let Daemon {
            state,
            listen_addr,
            listener,
            admin,
        } = self;
        if let Some(admin) = admin {
            tracing::info!(addr = ?admin.local_addr().ok(), "admin endpoint listening");
            tokio::spawn(crate::admin::serve(admin, state.clone()));
        }
        tracing::info!(%listen_addr, "pgward listening");
        if signals == Signals::Handle {
            tokio::spawn(handle_signals(state.clone()));
        }
        let reaper = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    state.pools.reap_all();
                }
            })
        };
        let monitor = tokio::spawn(health::monitor(state.clone()));
        let tracker = TaskTracker::new();
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        tracker.spawn(crate::session::serve(tcp, peer, state.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        tracker.close();
        let timeout = state.runtime.load().config.server.shutdown_timeout;
        tracing::info!(
            clients = tracker.len(),
            ?timeout,
            "shutting down: draining clients"
        );
        if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
            tracing::warn!(
                clients = tracker.len(),
                "shutdown timeout: closing remaining clients"
            );
        }
        reaper.abort();
        monitor.abort();
        Ok(())
    }
}

/// Re-reads the config file; a bad file keeps the running config.
pub fn reload(state: &State) {
    let current = state.runtime.load();
    let Some(path) = current.config.source.clone() else {
        tracing::warn!("reload requested but the config was not read from a file");
        return;
    };
    match Config::load(&path)
        .map_err(anyhow::Error::from)
        .and_then(|config| Runtime::build(config, &state.health))
    {
        Ok(runtime) => {
            if runtime.config.server.listen != current.config.server.listen {
                tracing::warn!("server.listen changed: takes effect after a restart");
            }
            state.runtime.store(Arc::new(runtime));
            tracing::info!(path = %path.display(), "configuration reloaded");
        }
        Err(e) => tracing::error!(error = %e, "reload failed; keeping the running configuration"),
    }
}

async fn handle_signals(state: Arc<State>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&state),
            _ = term.recv() => {
                tracing::info!("SIGTERM: no new clients; draining");
                state.shutdown.cancel();
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                std::process::exit(130);
            }
        }
    }
}
