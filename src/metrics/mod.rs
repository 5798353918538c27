//! Every metric pgward exports, defined and registered in this one place (the catalogue of
//! DESIGN.md). Labels are bounded: backend names from the config, fixed state and route
//! names, SQLSTATE classes; never SQL text or anything a client chose.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 100 us to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What a client connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Between requests, holding no server connection.
    Idle,
    /// Waiting for a server connection.
    Waiting,
    /// Holding a server connection.
    Active,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// Where a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replica,
    Cache,
    Admin,
    Denied,
}

struct Metrics {
    registry: Registry,
    /// Label values resolved once: the hot path only touches atomics.
    clients: [IntGauge; 3],
    servers: IntGaugeVec,
    queries: [IntCounter; 5],
    query_duration: Histogram,
    pool_wait: Histogram,
    checkout_timeouts: IntCounter,
    errors: IntCounterVec,
    backend_up: IntGaugeVec,
    replica_lag: IntGaugeVec,
    bytes_received: IntCounter,
    bytes_sent: IntCounter,
    auth_failures: IntCounter,
    reloads_ok: IntCounter,
    reloads_failed: IntCounter,
    last_reload: Gauge,
    policy_denials: IntCounter,
    crypto_encrypts: IntCounter,
    crypto_decrypts: IntCounter,
    crypto_failures: IntCounter,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_invalidations: IntCounter,
    cache_evictions: IntCounter,
    cache_bytes: IntGauge,
    pinned_clients: IntGauge,
    pins: IntCounterVec,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric definition");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = Histogram::with_opts(opts).expect("metric definition");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let clients = gauge_vec(
            "pgward_client_connections",
            "Client connections by state: active (holding a server connection), idle, waiting (for one)",
            &["state"],
        );
        let queries = counter_vec(
            "pgward_queries_total",
            "Requests (a query, or an extended-protocol batch up to Sync) by where they were answered",
            &["route"],
        );
        let bytes = counter_vec(
            "pgward_bytes_total",
            "Protocol bytes received from and sent to clients",
            &["direction"],
        );
        let reloads = counter_vec(
            "pgward_reloads_total",
            "Configuration reloads (SIGHUP or RELOAD) by result",
            &["result"],
        );
        let crypto_operations = counter_vec(
            "pgward_crypto_operations_total",
            "Values of designated columns encrypted (including each searched envelope) and decrypted",
            &["op"],
        );
        let last_reload = Gauge::new(
            "pgward_config_last_reload_timestamp_seconds",
            "When the running configuration was loaded (Unix time)",
        )
        .expect("metric definition");
        registry
            .register(Box::new(last_reload.clone()))
            .expect("registered once");
        last_reload.set(unix_now());
        let cache_bytes = IntGauge::new(
            "pgward_cache_bytes",
            "Bytes the result cache holds (cached responses and their keys), as of the scrape",
        )
        .expect("metric definition");
        registry
            .register(Box::new(cache_bytes.clone()))
            .expect("registered once");
        let pinned_clients = IntGauge::new(
            "pgward_pinned_clients",
            "Clients in transaction mode kept on one server connection by session state (pinning)",
        )
        .expect("metric definition");
        registry
            .register(Box::new(pinned_clients.clone()))
            .expect("registered once");
        Metrics {
            pinned_clients,
            pins: counter_vec(
                "pgward_pins_total",
                "Times a client in transaction mode was pinned to its server connection, by reason",
                &["reason"],
            ),
            clients: [ClientState::Idle, ClientState::Waiting, ClientState::Active]
                .map(|s| clients.with_label_values(&[s.as_str()])),
            servers: gauge_vec(
                "pgward_server_connections",
                "Server connections by backend and state: active (leased to a client) or idle",
                &["backend", "state"],
            ),
            queries: ["primary", "replica", "cache", "admin", "denied"]
                .map(|r| queries.with_label_values(&[r])),
            query_duration: histogram(
                "pgward_query_duration_seconds",
                "Time from a request's last message to the server's ReadyForQuery",
            ),
            pool_wait: histogram(
                "pgward_pool_wait_seconds",
                "Time a request waited for a server connection from its pool",
            ),
            checkout_timeouts: counter(
                "pgward_pool_checkout_timeouts_total",
                "Requests that got no server connection within pool.checkout_timeout (53300)",
            ),
            errors: counter_vec(
                "pgward_errors_total",
                "ErrorResponses sent to clients (from PostgreSQL or pgward) by SQLSTATE class",
                &["class"],
            ),
            backend_up: gauge_vec(
                "pgward_backend_up",
                "1 when the backend passed its last health check and is not banned",
                &["backend"],
            ),
            replica_lag: gauge_vec(
                "pgward_replica_lag_bytes",
                "WAL bytes a replica has still to replay, measured against the primary",
                &["backend"],
            ),
            bytes_received: bytes.with_label_values(&["received"]),
            bytes_sent: bytes.with_label_values(&["sent"]),
            auth_failures: counter(
                "pgward_auth_failures_total",
                "Client logins refused for a wrong password or an unknown user",
            ),
            reloads_ok: reloads.with_label_values(&["success"]),
            reloads_failed: reloads.with_label_values(&["failure"]),
            last_reload,
            policy_denials: counter(
                "pgward_policy_denials_total",
                "Statements the access policy refused (including unanalysable ones under on_unparsed = deny)",
            ),
            crypto_encrypts: crypto_operations.with_label_values(&["encrypt"]),
            crypto_decrypts: crypto_operations.with_label_values(&["decrypt"]),
            crypto_failures: counter(
                "pgward_crypto_failures_total",
                "Stored values that did not decrypt (not a pgward ciphertext, unknown key, or failed authentication)",
            ),
            cache_hits: counter(
                "pgward_cache_hits_total",
                "Result cache lookups answered from the cache",
            ),
            cache_misses: counter(
                "pgward_cache_misses_total",
                "Result cache lookups that went to a server (as the one query filling the entry)",
            ),
            cache_invalidations: counter(
                "pgward_cache_invalidations_total",
                "Cached results dropped because a table they read was written, or the cache was flushed",
            ),
            cache_evictions: counter(
                "pgward_cache_evictions_total",
                "Cached results evicted to keep the cache within cache.max_size",
            ),
            cache_bytes,
            registry,
        }
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Counts one client connection in its state for as long as it lives; `set` moves it.
pub struct ClientGauge {
    state: ClientState,
}

impl ClientGauge {
    pub fn new(state: ClientState) -> ClientGauge {
        client_gauge(state).inc();
        ClientGauge { state }
    }

    pub fn set(&mut self, state: ClientState) {
        if state != self.state {
            client_gauge(self.state).dec();
            client_gauge(state).inc();
            self.state = state;
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        client_gauge(self.state).dec();
    }
}

fn client_gauge(state: ClientState) -> &'static IntGauge {
    let m = metrics();
    match state {
        ClientState::Idle => &m.clients[0],
        ClientState::Waiting => &m.clients[1],
        ClientState::Active => &m.clients[2],
    }
}

pub fn backend_up(backend: &str, up: bool) {
    metrics()
        .backend_up
        .with_label_values(&[backend])
        .set(i64::from(up));
}

pub fn replica_lag(backend: &str, bytes: u64) {
    metrics()
        .replica_lag
        .with_label_values(&[backend])
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Counts a request by where it was answered.
pub fn query(route: Route) {
    let m = metrics();
    let i = match route {
        Route::Primary => 0,
        Route::Replica => 1,
        Route::Cache => 2,
        Route::Admin => 3,
        Route::Denied => 4,
    };
    m.queries[i].inc();
}

/// Counts a request routed to the primary (`to_primary`) or to a replica.
pub fn query_routed(to_primary: bool) {
    query(if to_primary {
        Route::Primary
    } else {
        Route::Replica
    });
}

pub fn query_duration(elapsed: Duration) {
    metrics().query_duration.observe(elapsed.as_secs_f64());
}

pub fn pool_wait(elapsed: Duration) {
    metrics().pool_wait.observe(elapsed.as_secs_f64());
}

pub fn checkout_timeout() {
    metrics().checkout_timeouts.inc();
}

/// Counts an ErrorResponse sent to a client by the class of its SQLSTATE.
pub fn error(sqlstate: &str) {
    // Only well-formed classes become label values, so the label set stays bounded.
    let class = match sqlstate.as_bytes() {
        [a, b, ..] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => &sqlstate[..2],
        _ => "XX",
    };
    metrics().errors.with_label_values(&[class]).inc();
}

/// Adds a session's protocol traffic (flushed in batches, not per message).
pub fn bytes(received: u64, sent: u64) {
    let m = metrics();
    if received > 0 {
        m.bytes_received.inc_by(received);
    }
    if sent > 0 {
        m.bytes_sent.inc_by(sent);
    }
}

pub fn auth_failed() {
    metrics().auth_failures.inc();
}

pub fn reloaded(ok: bool) {
    let m = metrics();
    if ok {
        m.reloads_ok.inc();
        m.last_reload.set(unix_now());
    } else {
        m.reloads_failed.inc();
    }
}

/// Counts a request the access policy refused.
pub fn policy_denied() {
    let m = metrics();
    m.policy_denials.inc();
    query(Route::Denied);
}

/// Counts `count` values encrypted (a searched value counts once per key it is searched under).
pub fn crypto_encrypted(count: u64) {
    metrics().crypto_encrypts.inc_by(count);
}

/// Counts one value decrypted, and a failure when it did not decrypt.
pub fn crypto_decrypted(ok: bool) {
    let m = metrics();
    m.crypto_decrypts.inc();
    if !ok {
        m.crypto_failures.inc();
    }
}

pub fn cache_hit() {
    metrics().cache_hits.inc();
}

pub fn cache_miss() {
    metrics().cache_misses.inc();
}

pub fn cache_invalidation() {
    metrics().cache_invalidations.inc();
}

pub fn cache_eviction() {
    metrics().cache_evictions.inc();
}

/// Sets the result cache's size (refreshed at scrape time, like the server connections).
pub fn cache_bytes(bytes: u64) {
    metrics()
        .cache_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Sets the server connection gauges to `counts` (backend, active, idle), replacing all.
/// A client became pinned to its server connection for `reason`.
pub fn pinned(reason: &str) {
    let m = metrics();
    m.pinned_clients.inc();
    m.pins.with_label_values(&[reason]).inc();
}

/// A pinned client was let go (its session state is gone, or it left).
pub fn unpinned() {
    metrics().pinned_clients.dec();
}

pub fn server_connections(counts: &[(String, i64, i64)]) {
    let servers = &metrics().servers;
    servers.reset();
    for (backend, active, idle) in counts {
        servers.with_label_values(&[backend, "active"]).set(*active);
        servers.with_label_values(&[backend, "idle"]).set(*idle);
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    TextEncoder::new()
        .encode_to_string(&metrics().registry.gather())
        .unwrap_or_default()
}
