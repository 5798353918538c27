//! The daemon: listener, per-client tasks, the shared state they use, reload and shutdown.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::pool::Pools;
use crate::route::health;
use crate::state::cancel::CancelRegistry;
pub use crate::state::{Runtime, State};

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
        let policy = crate::state::load_policy(&runtime.config).await?;
        let cache_config = &runtime.config.cache;
        let weak_state: Arc<OnceLock<Weak<State>>> = Arc::default();
        let cache = match cache_config.enabled {
            // The listeners log in as the health checks do, on the primary of the moment.
            true => Some(
                crate::cache::Cache::new(cache_config, bus_login(weak_state.clone()))
                    .map_err(|e| anyhow::anyhow!("[cache]: {e}"))?,
            ),
            false => None,
        };
        let shutdown = CancellationToken::new();
        let state = Arc::new(State {
            switches: crate::state::Switches::new(&runtime, policy.as_ref()),
            notify: Arc::new(crate::notify::Relay::new(shutdown.clone())),
            client_slots: Arc::new(Semaphore::new(runtime.config.server.max_clients)),
            runtime: ArcSwap::from_pointee(runtime),
            pools: Pools::default(),
            cancels: Arc::new(CancelRegistry::default()),
            shutdown,
            health,
            policy: ArcSwapOption::new(policy),
            catalogs: Default::default(),
            clients: Default::default(),
            pause: Default::default(),
            cache,
        });
        let _ = weak_state.set(Arc::downgrade(&state));
        // One round of checks before the first client, so routing starts from facts.
        check_all(&state.runtime.load(), &mut Default::default()).await;
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
        let worker_threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(%listen_addr, worker_threads, "pgward listening");
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
        let monitor = tokio::spawn(monitor(state.clone()));
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
        // Idle sessions close now, the others once their transaction is over.
        state.clients.shut_down();
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
        // Only now: clients that drained still published their writes' invalidations.
        if let Some(cache) = &state.cache {
            cache.bus.stop();
        }
        Ok(())
    }
}

/// Checks every backend of the running config, forever. Connections are kept between rounds
/// and re-made after a failure; a backend removed by a reload has its connection dropped.
async fn monitor(state: Arc<State>) {
    let mut conns = HashMap::new();
    loop {
        let rt = state.runtime.load_full();
        let interval = rt.config.routing.check_interval;
        let names: Vec<&str> = rt
            .router
            .backends
            .iter()
            .map(|b| b.target.name.as_str())
            .collect();
        state.health.retire_all_but(&names);
        check_all(&rt, &mut conns).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}

/// Where the cache's listeners connect: the running config's primary, with the health-check
/// login.
fn bus_login(state: Arc<OnceLock<Weak<State>>>) -> crate::cache::bus::LoginSource {
    Arc::new(move || {
        let state = state.get()?.upgrade()?;
        let rt = state.runtime.load();
        crate::cache::bus::BusLogin::primary(&rt.router, rt.check_credentials())
    })
}

/// One round of health checks with the running config's check login.
async fn check_all(rt: &Runtime, conns: &mut HashMap<String, crate::pool::ServerConn>) {
    let (user, password) = rt.check_credentials();
    let login = health::CheckLogin {
        user: &user,
        password: password.as_deref(),
        database: &rt.config.routing.check_database,
    };
    health::check_all(&rt.router, &rt.config.routing, login, conns).await;
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
            _ = hup.recv() => { let _ = state.reload().await; }
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
