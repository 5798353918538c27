//! Every metric pgward exports, defined and registered in this one place.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

struct Metrics {
    registry: Registry,
    backend_up: IntGaugeVec,
    replica_lag: IntGaugeVec,
    /// Label values resolved once: the hot path only increments an atomic.
    queries_primary: IntCounter,
    queries_replica: IntCounter,
    queries_denied: IntCounter,
    policy_denials: IntCounter,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "pgward_backend_up",
                "1 when the backend passed its last health check and is not banned",
            ),
            &["backend"],
        )
        .expect("metric definition");
        let replica_lag = IntGaugeVec::new(
            Opts::new(
                "pgward_replica_lag_bytes",
                "WAL bytes a replica has still to replay, measured against the primary",
            ),
            &["backend"],
        )
        .expect("metric definition");
        let queries = IntCounterVec::new(
            Opts::new(
                "pgward_queries_total",
                "Requests (a query, or an extended-protocol batch up to Sync) by where they ran",
            ),
            &["route"],
        )
        .expect("metric definition");
        let policy_denials = IntCounter::new(
            "pgward_policy_denials_total",
            "Statements the access policy refused (including unanalysable ones under on_unparsed = deny)",
        )
        .expect("metric definition");
        for m in [
            Box::new(backend_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(replica_lag.clone()),
            Box::new(queries.clone()),
            Box::new(policy_denials.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Metrics {
            registry,
            queries_primary: queries.with_label_values(&["primary"]),
            queries_replica: queries.with_label_values(&["replica"]),
            queries_denied: queries.with_label_values(&["denied"]),
            policy_denials,
            backend_up,
            replica_lag,
        }
    })
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

/// Counts a request routed to the primary (`to_primary`) or to a replica.
pub fn query_routed(to_primary: bool) {
    let m = metrics();
    if to_primary {
        m.queries_primary.inc()
    } else {
        m.queries_replica.inc()
    }
}

/// Counts a request the access policy refused.
pub fn policy_denied() {
    let m = metrics();
    m.policy_denials.inc();
    m.queries_denied.inc();
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    TextEncoder::new()
        .encode_to_string(&metrics().registry.gather())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_the_contract_names() {
        super::backend_up("r1", true);
        super::replica_lag("r1", 42);
        super::query_routed(false);
        let text = super::render();
        assert!(
            text.contains("pgward_backend_up{backend=\"r1\"} 1"),
            "{text}"
        );
        assert!(text.contains("pgward_replica_lag_bytes{backend=\"r1\"} 42"));
        assert!(text.contains("pgward_queries_total{route=\"replica\"}"));
    }
}
