//! Two pgward instances' result caches (in-process, each with its own bus and instance id)
//! invalidate each other through LISTEN/NOTIFY on a real primary: a publish returns once the
//! other has acknowledged; a listener connection terminated on the server makes its instance
//! stop serving and flush, and it comes back by itself; an instance that stops acknowledging
//! delays one publish, then is no longer waited for.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{deadline, direct_postgres, primary_port, DATABASE, PASSWORD, USER};
use pgward::cache::bus::{Bus, BusLogin, APPLICATION_NAME};
use pgward::cache::{KeyBuilder, Lookup, ResultCache};
use pgward::config::{BackendTls, CacheConfig};
use pgward::pool::{BackendTarget, Credential};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(120);
const TABLE: &str = "public.cache_bus_items";

fn instance(shutdown: &CancellationToken) -> Bus {
    let config = CacheConfig {
        enabled: true,
        // Generous: the test machine is shared; the point is what is waited for.
        ack_timeout: Duration::from_secs(2),
        ..CacheConfig::default()
    };
    let target = Arc::new(BackendTarget {
        name: "primary".into(),
        host: "127.0.0.1".into(),
        port: primary_port(),
        tls: BackendTls::Disable,
        tls_config: None,
    });
    let login = Arc::new(move || {
        Some(BusLogin {
            backend: target.clone(),
            user: USER.into(),
            credential: Credential::Password(PASSWORD.into()),
        })
    });
    let cache = ResultCache::new(&config).unwrap();
    Bus::new(cache, &config, login, shutdown)
}

/// Polls `condition` every 20 ms until it holds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        panic!("waited 30 s for: {what}");
    }
}

/// Caches a result that read TABLE on `bus`'s instance; returns its key.
fn fill(bus: &Bus) -> pgward::cache::Key {
    let cache = bus.cache();
    let mut key = KeyBuilder::new(&cache.database(DATABASE), USER);
    key.shape(b"Q").sql("SELECT * FROM cache_bus_items");
    let key = key.finish();
    match cache.lookup_or_lead(&key) {
        Lookup::Lead(guard) => {
            let ticket = guard.begin_fill(&[TABLE]);
            assert!(guard.finish(ticket, Bytes::from_static(b"frames"), None));
        }
        other => panic!("expected a miss to lead, got {other:?}"),
    }
    assert!(matches!(cache.lookup_or_lead(&key), Lookup::Hit(_)));
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_invalidate_each_other_through_postgres() {
    let shutdown = CancellationToken::new();
    let (a, b) = (instance(&shutdown), instance(&shutdown));
    assert_ne!(a.instance(), b.instance());
    deadline(LIMIT, async {
        a.ensure(DATABASE);
        b.ensure(DATABASE);
        until("both instances serve", || {
            a.serving(DATABASE) && b.serving(DATABASE)
        })
        .await;
        until("each hears the other", || {
            a.live_peers(DATABASE) == [b.instance()] && b.live_peers(DATABASE) == [a.instance()]
        })
        .await;
        let direct = direct_postgres().await;
        let listeners: Vec<i32> = direct
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
                &[&APPLICATION_NAME, &DATABASE],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(listeners.len(), 2, "one listener connection per instance");

        // A write through A: B's entry goes before A's publish returns.
        let key = fill(&b);
        let published = a.publish(DATABASE, &[TABLE]).await;
        assert!(published.sent);
        assert_eq!(published.acked, [b.instance()]);
        assert!(published.missing.is_empty());
        assert!(matches!(b.cache().lookup_or_lead(&key), Lookup::Lead(_)));

        // B's listener is terminated on the server: B stops serving and flushes...
        let key = fill(&b);
        let pid = b.listener_pid(DATABASE).expect("B listens");
        let terminated: bool = direct
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get(0);
        assert!(terminated);
        until("B stops serving", || !b.serving(DATABASE)).await;
        assert!(matches!(b.cache().lookup_or_lead(&key), Lookup::Bypass));
        // ... and comes back on a new connection, with nothing of before.
        until("B serves again", || b.serving(DATABASE)).await;
        assert_ne!(b.listener_pid(DATABASE), Some(pid));
        assert!(matches!(b.cache().lookup_or_lead(&key), Lookup::Lead(_)));
        until("A hears B again", || {
            a.live_peers(DATABASE) == [b.instance()]
        })
        .await;
        let key = fill(&b);
        let published = a.publish(DATABASE, &[TABLE]).await;
        assert_eq!(published.acked, [b.instance()]);
        assert!(matches!(b.cache().lookup_or_lead(&key), Lookup::Lead(_)));

        // B goes away without a word: A's next publish waits for it once, then no more.
        b.stop();
        until("B's listener is gone", || {
            b.listener_pid(DATABASE).is_none()
        })
        .await;
        let published = a.publish(DATABASE, &[TABLE]).await;
        assert!(published.sent);
        assert_eq!(published.missing, [b.instance()]);
        let published = a.publish(DATABASE, &[TABLE]).await;
        assert!(published.sent);
        assert!(
            published.missing.is_empty() && published.acked.is_empty(),
            "a peer that missed its acknowledgement is not waited for again: {published:?}"
        );
    })
    .await;
    shutdown.cancel();
}
