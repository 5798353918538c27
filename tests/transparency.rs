//! Session features applications take for granted, in transaction pooling mode:
//!
//! - LISTEN/NOTIFY, relayed through one listening server connection per (database, backend
//!   user) on the primary (`application_name = 'pgward notify relay'`);
//! - SQL-level PREPARE / EXECUTE / DEALLOCATE, carried from server connection to server
//!   connection;
//! - pinning: session state that cannot be carried (temporary tables, WITH HOLD cursors,
//!   session advisory locks) keeps its client on its server connection until it is gone,
//!   counted by `pgward_pinned_clients` and `pgward_pins_total{reason}`.
//!
//! Pools are smaller than the number of clients, so clients really share server connections.
//! A scenario whose assertions are PostgreSQL's own behaviour runs twice: through pgward, and
//! `_directly` against the primary with the same code (pgward-only checks such as metrics are
//! skipped there), so a failure through pgward is pgward's and not the test's.
//! Tests run side by side on one database: every table, type, channel and lock key is the
//! test's own (and the variant's own, `_pw` / `_pg`).

mod common;

use std::time::{Duration, Instant};

use common::{
    admin_psql, connect_with, connect_with_notifications, deadline, direct_dsn, direct_postgres,
    http_get, metric, pgward_dsn, primary_port, py_script, run_python, simple_rows, simple_value,
    sqlstate, Pgward, ProxyConfig, ProxyUser, DATABASE, PASSWORD, USER,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::{Client, Config, Notification};

const LIMIT: Duration = Duration::from_secs(120);
/// How long a notification that must arrive may take.
const ARRIVAL: Duration = Duration::from_secs(10);
/// How long a metric may take to show a change.
const METRIC_SETTLE: Duration = Duration::from_secs(5);
/// Python scripts (the venv is made before this clock starts).
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

const PINNED: &str = "pgward_pinned_clients";

fn pins_total(reason: &str) -> String {
    format!("pgward_pins_total{{reason=\"{reason}\"}}")
}

/// Where a scenario's clients connect: through pgward, or straight to the primary.
struct Endpoint {
    config: Config,
    /// Suffix of the scenario's object names, so both variants can run at the same time.
    tag: &'static str,
    /// The admin endpoint, for metrics (pgward only).
    admin: Option<u16>,
}

impl Endpoint {
    fn pgward(pgward: &Pgward, admin: Option<u16>) -> Endpoint {
        Endpoint {
            config: pgward.client_config(USER, PASSWORD),
            tag: "pw",
            admin,
        }
    }

    fn direct() -> Endpoint {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(primary_port())
            .user(USER)
            .password(PASSWORD)
            .dbname(DATABASE)
            .connect_timeout(Duration::from_secs(10));
        Endpoint {
            config,
            tag: "pg",
            admin: None,
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{base}_{}", self.tag)
    }

    async fn connect(&self) -> Client {
        connect_with(&self.config)
            .await
            .unwrap_or_else(|e| panic!("connecting ({}): {}", self.tag, why(&e)))
    }

    async fn listener(&self) -> (Client, Notifications) {
        listener_with(&self.config).await
    }

    /// Waits until the metric sample reads `want` (pgward only; a no-op directly).
    async fn expect_metric(&self, sample: &str, want: f64) {
        if let Some(port) = self.admin {
            wait_metric(port, sample, |v| v == want, &format!("{want}")).await;
        }
    }
}

/// The notifications of one client connection, as tokio-postgres surfaces them while the
/// connection is driven through `poll_message`.
struct Notifications {
    rx: UnboundedReceiver<Notification>,
}

impl Notifications {
    /// The next notification; panics if none arrives within ARRIVAL.
    async fn next(&mut self, what: &str) -> Notification {
        tokio::time::timeout(ARRIVAL, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no notification within {ARRIVAL:?}"))
            .unwrap_or_else(|| panic!("{what}: the listener's connection ended"))
    }

    /// The next notification, which must be `payload` on `channel`.
    async fn expect(&mut self, channel: &str, payload: &str) -> Notification {
        let n = self.next(&format!("{channel} {payload:?}")).await;
        assert_eq!(
            (n.channel(), n.payload()),
            (channel, payload),
            "the next notification"
        );
        n
    }

    /// The next notification that is not a `skip_prefix` one, which must be `payload` on
    /// `channel`.
    async fn expect_skipping(&mut self, skip_prefix: &str, channel: &str, payload: &str) {
        loop {
            let n = self.next(&format!("{channel} {payload:?}")).await;
            if n.payload().starts_with(skip_prefix) {
                continue;
            }
            assert_eq!((n.channel(), n.payload()), (channel, payload));
            return;
        }
    }

    /// Everything received so far, without waiting.
    fn drain(&mut self) -> Vec<Notification> {
        let mut all = Vec::new();
        while let Ok(n) = self.rx.try_recv() {
            all.push(n);
        }
        all
    }
}

fn payloads(notifications: &[Notification]) -> Vec<(String, String)> {
    notifications
        .iter()
        .map(|n| (n.channel().to_owned(), n.payload().to_owned()))
        .collect()
}

/// A client whose notifications are collected as they arrive, busy or idle.
async fn listener_with(config: &Config) -> (Client, Notifications) {
    let (client, rx) = connect_with_notifications(config)
        .await
        .unwrap_or_else(|e| panic!("connecting a listener: {}", why(&e)));
    (client, Notifications { rx })
}

/// An error with its SQLSTATE and message (tokio-postgres shows only "db error").
fn why(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    body
}

/// Polls the admin endpoint until `sample` satisfies `ok`; panics after METRIC_SETTLE.
async fn wait_metric(port: u16, sample: &str, ok: impl Fn(f64) -> bool, want: &str) {
    let started = Instant::now();
    loop {
        let value = metric(&scrape(port), sample);
        if ok(value) {
            return;
        }
        assert!(
            started.elapsed() < METRIC_SETTLE,
            "{sample} is {value}, want {want} (waited {METRIC_SETTLE:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn backend_pid(client: &Client) -> String {
    simple_value(client, "SELECT pg_backend_pid()").await
}

async fn direct_pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------------------------
// LISTEN / NOTIFY
// ---------------------------------------------------------------------------------------------

/// Notifications from another client and from a direct connection reach a listener that is
/// idle and one that keeps running queries; the process id is the notifier's; a client's own
/// notification arrives before its NOTIFY returns.
async fn notifications_reach_idle_and_busy_listeners(ep: &Endpoint) {
    let channel = ep.name("tr_idle_busy");
    let (listener, mut notes) = ep.listener().await;
    let notifier = ep.connect().await;
    let bystander = ep.connect().await;
    let direct = direct_postgres().await;
    let direct_pid = direct_pid(&direct).await;

    listener
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();

    // Idle listener: it sends nothing while they arrive.
    notifier
        .batch_execute(&format!("NOTIFY {channel}, 'from a client'"))
        .await
        .unwrap();
    notifier
        .execute("SELECT pg_notify($1, $2)", &[&channel, &"via pg_notify"])
        .await
        .unwrap();
    direct
        .batch_execute(&format!("NOTIFY {channel}, 'from the primary'"))
        .await
        .unwrap();
    let first = notes.expect(&channel, "from a client").await;
    let second = notes.expect(&channel, "via pg_notify").await;
    let third = notes.expect(&channel, "from the primary").await;
    assert_eq!(
        first.process_id(),
        second.process_id(),
        "both came from the same client"
    );
    assert_eq!(
        third.process_id(),
        direct_pid,
        "a direct connection's notification carries its real backend pid"
    );
    assert_ne!(first.process_id(), direct_pid);

    // Busy listener: it runs queries back to back while ten notifications are sent from
    // the other client and the direct connection in turn; all arrive, in order, while it is
    // still running them.
    let expected: Vec<(String, String)> = (0..10)
        .map(|i| (channel.clone(), format!("busy {i}")))
        .collect();
    let send = async {
        for (i, (_, payload)) in expected.iter().enumerate() {
            let sql = format!("NOTIFY {channel}, '{payload}'");
            if i % 2 == 0 {
                notifier.batch_execute(&sql).await.unwrap();
            } else {
                direct.batch_execute(&sql).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let run = async {
        let mut got = Vec::new();
        for _ in 0..100 {
            listener.simple_query("SELECT pg_sleep(0.1)").await.unwrap();
            got.extend(notes.drain());
            if got.len() >= expected.len() {
                break;
            }
        }
        got
    };
    let other_work = async {
        for i in 0..20 {
            assert_eq!(
                simple_value(&bystander, &format!("SELECT {i}")).await,
                i.to_string()
            );
        }
    };
    let ((), got, ()) = tokio::join!(send, run, other_work);
    assert_eq!(
        payloads(&got),
        expected,
        "notifications received while the listener ran queries"
    );

    // Its own notification, before NOTIFY (or pg_notify) returns.
    listener
        .batch_execute(&format!("NOTIFY {channel}, 'own'"))
        .await
        .unwrap();
    assert_eq!(
        payloads(&notes.drain()),
        [(channel.clone(), "own".to_owned())],
        "a client's own notification arrives before its NOTIFY returns"
    );
    listener
        .execute("SELECT pg_notify($1, 'own again')", &[&channel])
        .await
        .unwrap();
    assert_eq!(
        payloads(&notes.drain()),
        [(channel.clone(), "own again".to_owned())],
        "a client's own notification arrives before its pg_notify returns"
    );
}

#[tokio::test]
async fn notifications_reach_idle_and_busy_listeners_through_pgward() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(
        LIMIT,
        notifications_reach_idle_and_busy_listeners(&Endpoint::pgward(&pgward, None)),
    )
    .await;
}

#[tokio::test]
async fn notifications_reach_idle_and_busy_listeners_directly() {
    deadline(
        LIMIT,
        notifications_reach_idle_and_busy_listeners(&Endpoint::direct()),
    )
    .await;
}

/// A listener inside a transaction block gets nothing until the block ends, as PostgreSQL
/// delivers notifications only between transactions; an idle listener on the same channel
/// gets them at once meanwhile.
async fn notifications_wait_for_the_listeners_transaction(ep: &Endpoint) {
    let channel = ep.name("tr_in_block");
    let (listener, mut notes) = ep.listener().await;
    let (idle, mut idle_notes) = ep.listener().await;
    let notifier = ep.connect().await;
    listener
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();
    idle.batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();

    for end in ["COMMIT", "ROLLBACK"] {
        listener.batch_execute("BEGIN").await.unwrap();
        listener.simple_query("SELECT 1").await.unwrap();
        let payload = format!("during {end}");
        notifier
            .batch_execute(&format!("NOTIFY {channel}, '{payload}'"))
            .await
            .unwrap();
        idle_notes.expect(&channel, &payload).await;
        // The listener keeps working inside its block; nothing may arrive meanwhile.
        for _ in 0..5 {
            listener.simple_query("SELECT pg_sleep(0.1)").await.unwrap();
        }
        assert_eq!(
            payloads(&notes.drain()),
            [],
            "nothing is delivered inside the listener's transaction block"
        );
        listener.batch_execute(end).await.unwrap();
        notes.expect(&channel, &payload).await;
    }
    assert_eq!(payloads(&notes.drain()), []);
    assert_eq!(payloads(&idle_notes.drain()), []);
}

#[tokio::test]
async fn notifications_wait_for_the_listeners_transaction_through_pgward() {
    // The listener in its block holds one server connection; the other two clients share
    // the other.
    let pgward = ProxyConfig::transaction(2).start();
    deadline(
        LIMIT,
        notifications_wait_for_the_listeners_transaction(&Endpoint::pgward(&pgward, None)),
    )
    .await;
}

#[tokio::test]
async fn notifications_wait_for_the_listeners_transaction_directly() {
    deadline(
        LIMIT,
        notifications_wait_for_the_listeners_transaction(&Endpoint::direct()),
    )
    .await;
}

/// UNLISTEN ch and UNLISTEN * stop notifications: one sent after them is not delivered, a
/// marker sent next on a channel still listened to is. UNLISTEN rolled back keeps listening.
async fn unlisten_stops_notifications(ep: &Endpoint) {
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|x| ep.name(&format!("tr_unlisten_{x}")));
    let (listener, mut notes) = ep.listener().await;
    let notifier = ep.connect().await;
    let notify = |channel: &str, payload: &str| {
        let sql = format!("NOTIFY {channel}, '{payload}'");
        let notifier = &notifier;
        async move { notifier.batch_execute(&sql).await.unwrap() }
    };

    listener
        .batch_execute(&format!("LISTEN {a}; LISTEN {b}"))
        .await
        .unwrap();
    listener.execute(&format!("LISTEN {c}"), &[]).await.unwrap();
    notify(&a, "a1").await;
    notes.expect(&a, "a1").await;

    listener
        .batch_execute(&format!("UNLISTEN {a}"))
        .await
        .unwrap();
    notify(&a, "after UNLISTEN a").await;
    notify(&b, "marker 1").await;
    notes.expect(&b, "marker 1").await;

    // Through the extended protocol too.
    listener
        .execute(&format!("UNLISTEN {b}"), &[])
        .await
        .unwrap();
    notify(&b, "after UNLISTEN b").await;
    notify(&c, "marker 2").await;
    notes.expect(&c, "marker 2").await;

    listener.batch_execute("UNLISTEN *").await.unwrap();
    notify(&a, "after UNLISTEN *").await;
    notify(&b, "after UNLISTEN *").await;
    notify(&c, "after UNLISTEN *").await;
    listener
        .batch_execute(&format!("LISTEN {d}"))
        .await
        .unwrap();
    notify(&d, "marker 3").await;
    notes.expect(&d, "marker 3").await;

    // UNLISTEN inside a block that rolls back: still listening.
    listener.batch_execute("BEGIN").await.unwrap();
    listener
        .batch_execute(&format!("UNLISTEN {d}"))
        .await
        .unwrap();
    listener.batch_execute("ROLLBACK").await.unwrap();
    notify(&d, "after a rolled back UNLISTEN").await;
    notes.expect(&d, "after a rolled back UNLISTEN").await;

    // ...and one that commits: no longer.
    listener
        .batch_execute(&format!("LISTEN {a}; BEGIN; UNLISTEN {d}; COMMIT"))
        .await
        .unwrap();
    notify(&d, "after a committed UNLISTEN").await;
    notify(&a, "marker 4").await;
    notes.expect(&a, "marker 4").await;
    assert_eq!(payloads(&notes.drain()), []);
}

#[tokio::test]
async fn unlisten_stops_notifications_through_pgward() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(
        LIMIT,
        unlisten_stops_notifications(&Endpoint::pgward(&pgward, None)),
    )
    .await;
}

#[tokio::test]
async fn unlisten_stops_notifications_directly() {
    deadline(LIMIT, unlisten_stops_notifications(&Endpoint::direct())).await;
}

/// Two clients on one channel both get each notification; one of them unlistening does not
/// stop the other's.
async fn two_listeners_on_one_channel(ep: &Endpoint) {
    let shared = ep.name("tr_two_shared");
    let only_second = ep.name("tr_two_only");
    let marker = ep.name("tr_two_marker");
    let (first, mut first_notes) = ep.listener().await;
    let (second, mut second_notes) = ep.listener().await;
    let notifier = ep.connect().await;

    first
        .batch_execute(&format!("LISTEN {shared}; LISTEN {marker}"))
        .await
        .unwrap();
    second
        .execute(&format!("LISTEN {shared}"), &[])
        .await
        .unwrap();
    second
        .batch_execute(&format!("LISTEN {only_second}"))
        .await
        .unwrap();

    notifier
        .batch_execute(&format!("NOTIFY {shared}, 'to both'"))
        .await
        .unwrap();
    let a = first_notes.expect(&shared, "to both").await;
    let b = second_notes.expect(&shared, "to both").await;
    assert_eq!(a.process_id(), b.process_id());

    notifier
        .batch_execute(&format!(
            "NOTIFY {only_second}, 'second only'; NOTIFY {marker}, 'marker 1'"
        ))
        .await
        .unwrap();
    second_notes.expect(&only_second, "second only").await;
    first_notes.expect(&marker, "marker 1").await;

    first
        .batch_execute(&format!("UNLISTEN {shared}"))
        .await
        .unwrap();
    notifier
        .batch_execute(&format!("NOTIFY {shared}, 'second still listens'"))
        .await
        .unwrap();
    notifier
        .batch_execute(&format!("NOTIFY {marker}, 'marker 2'"))
        .await
        .unwrap();
    second_notes.expect(&shared, "second still listens").await;
    first_notes.expect(&marker, "marker 2").await;

    // The other way round: the second gone entirely, the first listening again.
    drop(second);
    first
        .batch_execute(&format!("LISTEN {shared}"))
        .await
        .unwrap();
    notifier
        .batch_execute(&format!("NOTIFY {shared}, 'first again'"))
        .await
        .unwrap();
    first_notes.expect(&shared, "first again").await;
    assert_eq!(payloads(&first_notes.drain()), []);
}

#[tokio::test]
async fn two_listeners_on_one_channel_through_pgward() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(
        LIMIT,
        two_listeners_on_one_channel(&Endpoint::pgward(&pgward, None)),
    )
    .await;
}

#[tokio::test]
async fn two_listeners_on_one_channel_directly() {
    deadline(LIMIT, two_listeners_on_one_channel(&Endpoint::direct())).await;
}

/// LISTEN inside a transaction block takes effect at COMMIT, and not at all on ROLLBACK.
async fn listen_in_a_transaction_block(ep: &Endpoint) {
    let rolled_back = ep.name("tr_block_rolled_back");
    let committed = ep.name("tr_block_committed");
    let marker = ep.name("tr_block_marker");
    let (listener, mut notes) = ep.listener().await;
    let notifier = ep.connect().await;
    listener
        .batch_execute(&format!("LISTEN {marker}"))
        .await
        .unwrap();

    listener.batch_execute("BEGIN").await.unwrap();
    listener
        .batch_execute(&format!("LISTEN {rolled_back}"))
        .await
        .unwrap();
    listener.batch_execute("ROLLBACK").await.unwrap();
    // And in one simple query, through the extended protocol inside the block as well.
    listener
        .batch_execute(&format!("BEGIN; LISTEN {rolled_back}; ROLLBACK"))
        .await
        .unwrap();
    listener.batch_execute("BEGIN").await.unwrap();
    listener
        .execute(&format!("LISTEN {rolled_back}"), &[])
        .await
        .unwrap();
    listener.batch_execute("ROLLBACK").await.unwrap();
    notifier
        .batch_execute(&format!("NOTIFY {rolled_back}, 'not listened'"))
        .await
        .unwrap();
    notifier
        .batch_execute(&format!("NOTIFY {marker}, 'marker 1'"))
        .await
        .unwrap();
    notes.expect(&marker, "marker 1").await;

    listener.batch_execute("BEGIN").await.unwrap();
    listener
        .batch_execute(&format!("LISTEN {committed}"))
        .await
        .unwrap();
    listener.simple_query("SELECT 1").await.unwrap();
    listener.batch_execute("COMMIT").await.unwrap();
    notifier
        .batch_execute(&format!("NOTIFY {committed}, 'listened'"))
        .await
        .unwrap();
    notes.expect(&committed, "listened").await;

    // A LISTEN in a block that fails is rolled back with it.
    let err = listener
        .batch_execute(&format!(
            "BEGIN; LISTEN {rolled_back}; SELECT 1 / 0; COMMIT"
        ))
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&err), Some("22012"), "{}", why(&err));
    listener.batch_execute("ROLLBACK").await.unwrap();
    notifier
        .batch_execute(&format!(
            "NOTIFY {rolled_back}, 'still not listened'; NOTIFY {marker}, 'marker 2'"
        ))
        .await
        .unwrap();
    notes.expect(&marker, "marker 2").await;
    assert_eq!(payloads(&notes.drain()), []);
}

#[tokio::test]
async fn listen_in_a_transaction_block_takes_effect_at_commit_through_pgward() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(
        LIMIT,
        listen_in_a_transaction_block(&Endpoint::pgward(&pgward, None)),
    )
    .await;
}

#[tokio::test]
async fn listen_in_a_transaction_block_takes_effect_at_commit_directly() {
    deadline(LIMIT, listen_in_a_transaction_block(&Endpoint::direct())).await;
}

/// The relay's server connections of backend user `user` (there should be one).
async fn relay_pids(direct: &Client, user: &str) -> Vec<i32> {
    direct
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = 'pgward notify relay' AND usename = $1 AND datname = $2 \
             ORDER BY pid",
            &[&user, &DATABASE],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Polls pg_stat_activity until exactly one relay of `user` exists and it is not `old`.
async fn wait_for_relay(direct: &Client, user: &str, old: Option<i32>) -> i32 {
    let started = Instant::now();
    loop {
        let pids = relay_pids(direct, user).await;
        if let [pid] = pids[..] {
            if Some(pid) != old {
                return pid;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "want one relay of {user} other than {old:?}; pg_stat_activity has {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relay's server connection terminated: pgward reconnects and LISTENs again within a few
/// seconds, warns that notifications may have been missed, and notifications flow again.
/// Its own backend user, so the relay is told apart from other tests' relays.
#[tokio::test]
async fn the_notify_relay_comes_back_after_its_backend_is_terminated() {
    const RELAY_USER: &str = "tr_relay";
    admin_psql(
        "postgres",
        "DO $$ BEGIN CREATE ROLE tr_relay LOGIN PASSWORD 'tr-relay-secret'; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    );
    let pgward = ProxyConfig::transaction(2)
        .user(
            ProxyUser::new("tr_relay_client", "tr-relay-pw")
                .backend(RELAY_USER, Some("tr-relay-secret")),
        )
        .start();
    deadline(LIMIT, async {
        let config = pgward.client_config("tr_relay_client", "tr-relay-pw");
        let (first, mut first_notes) = listener_with(&config).await;
        let (second, mut second_notes) = listener_with(&config).await;
        let third = connect_with(&config).await.unwrap();
        first.batch_execute("LISTEN tr_relay_a").await.unwrap();
        second.batch_execute("LISTEN tr_relay_b").await.unwrap();
        let direct = direct_postgres().await;
        let notify = |channel: &'static str, payload: String| {
            let direct = &direct;
            async move {
                direct
                    .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                    .await
                    .unwrap();
            }
        };

        // One relay for both listeners (same database, same backend user).
        let old = wait_for_relay(&direct, RELAY_USER, None).await;
        notify("tr_relay_a", "before".into()).await;
        notify("tr_relay_b", "before".into()).await;
        first_notes.expect("tr_relay_a", "before").await;
        second_notes.expect("tr_relay_b", "before").await;
        assert_eq!(relay_pids(&direct, RELAY_USER).await, [old]);

        let terminated: bool = direct
            .query_one("SELECT pg_terminate_backend($1)", &[&old])
            .await
            .unwrap()
            .get(0);
        assert!(terminated, "terminating the relay's backend {old}");
        let new = wait_for_relay(&direct, RELAY_USER, Some(old)).await;

        // Notifications sent before it has LISTENed again may be missed: send until one
        // reaches each listener, then one more that must arrive.
        let started = Instant::now();
        let (mut first_back, mut second_back) = (false, false);
        for attempt in 0.. {
            notify("tr_relay_a", format!("retry {attempt}")).await;
            notify("tr_relay_b", format!("retry {attempt}")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            first_back |= !first_notes.drain().is_empty();
            second_back |= !second_notes.drain().is_empty();
            if first_back && second_back {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no notification through the new relay {new} within 15s \
                 (first listener: {first_back}, second: {second_back})"
            );
        }
        notify("tr_relay_a", "after".into()).await;
        notify("tr_relay_b", "after".into()).await;
        first_notes
            .expect_skipping("retry ", "tr_relay_a", "after")
            .await;
        second_notes
            .expect_skipping("retry ", "tr_relay_b", "after")
            .await;

        let started = Instant::now();
        while !pgward.log().contains("notifications may have been missed") {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "pgward logged no warning that notifications may have been missed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The clients never noticed: same sessions, still working, still one relay.
        for client in [&first, &second, &third] {
            assert_eq!(
                simple_value(client, "SELECT 'still here'").await,
                "still here"
            );
        }
        assert_eq!(relay_pids(&direct, RELAY_USER).await, [new]);
        notify("tr_relay_a", "last".into()).await;
        first_notes.expect("tr_relay_a", "last").await;
    })
    .await;
}

#[test]
fn psycopg_listen_notify_through_pgward() {
    // Pool of one for the listener and the notifier (the relay is pgward's own).
    let pgward = ProxyConfig::transaction(1).start();
    run_python(
        &py_script("listen_notify.py"),
        &[&pgward_dsn(&pgward)],
        SCRIPT_LIMIT,
    )
    .expect_success("listen_notify.py through pgward");
}

#[test]
fn psycopg_listen_notify_directly() {
    run_python(
        &py_script("listen_notify.py"),
        &[&direct_dsn()],
        SCRIPT_LIMIT,
    )
    .expect_success("listen_notify.py directly");
}

#[test]
fn a_cancel_has_landed_when_the_clients_cancel_returns_through_pgward() {
    let pgward = ProxyConfig::transaction(2).start();
    run_python(
        &py_script("cancel_lands_before_return.py"),
        &[&pgward_dsn(&pgward)],
        SCRIPT_LIMIT,
    )
    .expect_success("cancel_lands_before_return.py through pgward");
}

#[test]
fn a_cancel_has_landed_when_the_clients_cancel_returns_directly() {
    run_python(
        &py_script("cancel_lands_before_return.py"),
        &[&direct_dsn()],
        SCRIPT_LIMIT,
    )
    .expect_success("cancel_lands_before_return.py directly");
}

#[test]
fn a_cancel_never_cancels_the_next_clients_statement_through_pgward() {
    // One server connection: the client waiting for it gets it the moment the cancelling
    // client's statement ends.
    let pgward = ProxyConfig::transaction(1).start();
    run_python(
        &py_script("cancel_never_hits_another_client.py"),
        &[&pgward_dsn(&pgward)],
        SCRIPT_LIMIT,
    )
    .expect_success("cancel_never_hits_another_client.py through pgward");
}

#[test]
fn a_cancel_never_cancels_the_next_clients_statement_directly() {
    run_python(
        &py_script("cancel_never_hits_another_client.py"),
        &[&direct_dsn()],
        SCRIPT_LIMIT,
    )
    .expect_success("cancel_never_hits_another_client.py directly");
}

#[test]
fn session_mode_tells_the_client_its_servers_process_id() {
    let pgward = ProxyConfig::session(2).start();
    run_python(
        &py_script("session_pid.py"),
        &[&pgward_dsn(&pgward)],
        SCRIPT_LIMIT,
    )
    .expect_success("session_pid.py through pgward in session mode");
}

#[test]
fn session_pid_script_holds_directly() {
    run_python(&py_script("session_pid.py"), &[&direct_dsn()], SCRIPT_LIMIT)
        .expect_success("session_pid.py directly");
}

// ---------------------------------------------------------------------------------------------
// Prepared statements after a schema change
// ---------------------------------------------------------------------------------------------

/// A schema change that alters a prepared statement's result makes PostgreSQL refuse that
/// statement ("cached plan must not change result type", 0A000) on the connections that had
/// prepared it, while a client that prepares it afterwards gets the new shape. Through pgward,
/// clients share server-side copies: a copy made before the change must serve no client that
/// prepared the statement after it, whether or not anyone has met the refusal yet.
async fn prepared_statements_follow_a_schema_change(ep: &Endpoint) {
    for refused_first in [false, true] {
        let table = ep.name(&format!("reshaped_{refused_first}"));
        let sql = format!("SELECT * FROM {table} ORDER BY a");
        let setup = ep.connect().await;
        setup
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1)"
            ))
            .await
            .expect("create the table");

        // Two clients, each in a transaction at once: through pgward (pool of 2) both server
        // connections then hold the statement.
        let (first, second) = (ep.connect().await, ep.connect().await);
        let mut kept = Vec::new();
        for client in [&first, &second] {
            client.batch_execute("BEGIN").await.expect("BEGIN");
            let statement = client
                .prepare(&sql)
                .await
                .expect("prepare before the change");
            assert_eq!(
                client.query(&statement, &[]).await.expect("run it")[0].len(),
                1
            );
            kept.push(statement);
        }
        for client in [&first, &second] {
            client.batch_execute("COMMIT").await.expect("COMMIT");
        }

        setup
            .batch_execute(&format!(
                "ALTER TABLE {table} ADD COLUMN b text DEFAULT 'new'"
            ))
            .await
            .expect("alter the table");

        if refused_first {
            // A statement prepared before the change is refused, as PostgreSQL refuses it.
            let refused = first
                .query(&kept[0], &[])
                .await
                .expect_err("the stale statement runs");
            assert_eq!(sqlstate(&refused), Some("0A000"), "{}", why(&refused));
        }
        // Clients that prepare it now get the new shape, whichever connection serves them,
        // and so does a client that prepares it again.
        let when = if refused_first {
            "after a refusal"
        } else {
            "after the change"
        };
        new_clients_see_the_new_shape(ep, &sql, when).await;
        let fresh = second.prepare(&sql).await.expect("prepare again");
        for _ in 0..4 {
            let rows = second
                .query(&fresh, &[])
                .await
                .expect("the new statement runs");
            assert_eq!(
                rows[0].len(),
                2,
                "{when}: the re-prepared statement's shape"
            );
        }
    }
}

async fn new_clients_see_the_new_shape(ep: &Endpoint, sql: &str, when: &str) {
    for round in 0..3 {
        let clients = [ep.connect().await, ep.connect().await];
        for (i, client) in clients.iter().enumerate() {
            client.batch_execute("BEGIN").await.expect("BEGIN");
            let rows = match client.prepare(sql).await {
                Ok(statement) => client.query(&statement, &[]).await,
                Err(e) => Err(e),
            }
            .unwrap_or_else(|e| panic!("{when}, round {round}, client {i}: {}", why(&e)));
            assert_eq!(
                rows[0].len(),
                2,
                "{when}, round {round}, client {i}: the new column"
            );
            let b: &str = rows[0].get(1);
            assert_eq!(b, "new");
        }
        for client in &clients {
            client.batch_execute("COMMIT").await.expect("COMMIT");
        }
    }
}

#[tokio::test]
async fn prepared_statements_follow_a_schema_change_through_pgward() {
    let pgward = ProxyConfig::transaction(2).start();
    let ep = Endpoint::pgward(&pgward, None);
    deadline(LIMIT, prepared_statements_follow_a_schema_change(&ep)).await;
}

#[tokio::test]
async fn prepared_statements_follow_a_schema_change_directly() {
    deadline(
        LIMIT,
        prepared_statements_follow_a_schema_change(&Endpoint::direct()),
    )
    .await;
}

/// Schema-per-tenant: clients whose search_paths name different tables of the same name
/// prepare the same text. PostgreSQL re-parses a statement under the search_path of each
/// execution, so one server-side copy shared by both would change shape at every switch and be
/// refused ("cached plan must not change result type", 0A000); on their own connections each
/// client's statement keeps reading its own table. Checked for protocol-level statements and
/// for SQL PREPARE, with the two clients taking turns on one server connection. A tenant is
/// chosen by its search_path, or (`by_role`) by SET ROLE, the default path's `$user` then
/// naming the role's schema.
async fn tenants_prepare_the_same_text(ep: &Endpoint, by_role: bool) {
    let (one, two) = match by_role {
        false => (ep.name("tenant_one"), ep.name("tenant_two")),
        true => (ep.name("tenant_role_one"), ep.name("tenant_role_two")),
    };
    let tables = format!(
        "CREATE TABLE {one}.settings (a int); INSERT INTO {one}.settings VALUES (1);
         CREATE TABLE {two}.settings (a int, b text); INSERT INTO {two}.settings VALUES (2, 'two');"
    );
    let drop = format!("DROP SCHEMA IF EXISTS {one} CASCADE; DROP SCHEMA IF EXISTS {two} CASCADE;");
    let setup = ep.connect().await;
    if by_role {
        // Roles and their schemas are made by the superuser; the login may take either role.
        admin_psql(
            DATABASE,
            &format!(
                "DO $$ BEGIN CREATE ROLE {one} NOLOGIN; CREATE ROLE {two} NOLOGIN; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                 GRANT {one}, {two} TO {USER}; {drop}
                 CREATE SCHEMA {one} AUTHORIZATION {one}; CREATE SCHEMA {two} AUTHORIZATION {two};
                 {tables} GRANT SELECT ON {one}.settings TO {one}; GRANT SELECT ON {two}.settings TO {two};"
            ),
        );
    } else {
        setup
            .batch_execute(&format!(
                "{drop} CREATE SCHEMA {one}; CREATE SCHEMA {two}; {tables}"
            ))
            .await
            .expect("create the tenants");
    }
    let sql = "SELECT * FROM settings";
    let mut tenants = Vec::new();
    for (schema, columns) in [(&one, 1), (&two, 2)] {
        let client = ep.connect().await;
        let choose = match by_role {
            false => format!("SET search_path TO {schema}"),
            true => format!("SET ROLE {schema}"),
        };
        client
            .batch_execute(&format!("{choose}; PREPARE by_sql AS {sql}"))
            .await
            .expect("choose the tenant and PREPARE");
        let statement = client.prepare(sql).await.expect("prepare");
        tenants.push((client, statement, schema, columns));
    }
    for round in 0..4 {
        for (client, statement, schema, columns) in &tenants {
            let what = format!("round {round}, {schema}");
            let rows = client
                .query(statement, &[])
                .await
                .unwrap_or_else(|e| panic!("{what}: {}", why(&e)));
            assert_eq!(rows[0].len(), *columns, "{what}: its own table's columns");
            let messages = client
                .simple_query("EXECUTE by_sql")
                .await
                .unwrap_or_else(|e| panic!("{what}, EXECUTE: {}", why(&e)));
            let want: Vec<Option<String>> = if *columns == 1 {
                vec![Some("1".into())]
            } else {
                vec![Some("2".into()), Some("two".into())]
            };
            assert_eq!(simple_rows(&messages), [want], "{what}, EXECUTE");
        }
    }
    if by_role {
        admin_psql(DATABASE, &drop);
    } else {
        setup.batch_execute(&drop).await.expect("drop the tenants");
    }
}

#[tokio::test]
async fn tenants_prepare_the_same_text_through_pgward() {
    let pgward = ProxyConfig::transaction(1).start();
    let ep = Endpoint::pgward(&pgward, None);
    deadline(LIMIT, tenants_prepare_the_same_text(&ep, false)).await;
}

#[tokio::test]
async fn tenants_prepare_the_same_text_directly() {
    deadline(
        LIMIT,
        tenants_prepare_the_same_text(&Endpoint::direct(), false),
    )
    .await;
}

#[tokio::test]
async fn tenants_by_role_prepare_the_same_text_through_pgward() {
    let pgward = ProxyConfig::transaction(1).start();
    let ep = Endpoint::pgward(&pgward, None);
    deadline(LIMIT, tenants_prepare_the_same_text(&ep, true)).await;
}

#[tokio::test]
async fn tenants_by_role_prepare_the_same_text_directly() {
    deadline(
        LIMIT,
        tenants_prepare_the_same_text(&Endpoint::direct(), true),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// SQL PREPARE / EXECUTE / DEALLOCATE
// ---------------------------------------------------------------------------------------------

const PREPARE_CLIENTS: usize = 50;
const PREPARE_ROUNDS: usize = 20;

/// One of the concurrent clients: its own statement under the name every client uses.
async fn sql_prepare_client(ep: &Endpoint, i: usize, barrier: &tokio::sync::Barrier) {
    let client = ep.connect().await;
    client
        .batch_execute(&format!("PREPARE q(int) AS SELECT $1 * {i}"))
        .await
        .unwrap_or_else(|e| panic!("client {i}: PREPARE: {}", why(&e)));
    barrier.wait().await;

    for k in 1..=PREPARE_ROUNDS {
        let sql = format!("EXECUTE q({k})");
        let want = (k * i) as i32;
        let what = format!("client {i}, {sql}");
        match k % 4 {
            0 => assert_eq!(
                simple_value(&client, &sql).await,
                want.to_string(),
                "{what} (simple)"
            ),
            1 => {
                let row = client
                    .query_one(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {}", why(&e)));
                assert_eq!(row.get::<_, i32>(0), want, "{what} (extended)");
            }
            2 => {
                client.batch_execute("BEGIN").await.unwrap();
                assert_eq!(
                    simple_value(&client, &sql).await,
                    want.to_string(),
                    "{what}"
                );
                let row = client.query_one(&sql, &[]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), want, "{what} (in a block)");
                client.batch_execute("COMMIT").await.unwrap();
            }
            _ => {
                let messages = client
                    .simple_query(&format!("BEGIN; {sql}; EXECUTE q({k} + 1); COMMIT"))
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {}", why(&e)));
                let next = ((k + 1) * i).to_string();
                assert_eq!(
                    simple_rows(&messages),
                    [[Some(want.to_string())], [Some(next)]],
                    "{what} (one simple query with a block)"
                );
            }
        }
        if k == PREPARE_ROUNDS / 2 {
            let plan = simple_rows(&client.simple_query("EXPLAIN EXECUTE q(1)").await.unwrap());
            assert!(
                plan.first()
                    .and_then(|row| row[0].as_deref())
                    .is_some_and(|line| line.starts_with("Result")),
                "client {i}: EXPLAIN EXECUTE q(1) gave {plan:?}"
            );
        }
    }

    // The name is taken; the failed PREPARE leaves the client's statement as it was.
    let err = client
        .batch_execute("PREPARE q(int) AS SELECT 0")
        .await
        .expect_err("q exists");
    assert_eq!(sqlstate(&err), Some("42P05"), "client {i}: {}", why(&err));
    assert_eq!(
        simple_value(&client, "EXECUTE q(2)").await,
        (2 * i).to_string()
    );

    client.batch_execute("DEALLOCATE q").await.unwrap();
    let err = client
        .simple_query("EXECUTE q(1)")
        .await
        .expect_err("q is deallocated");
    assert_eq!(sqlstate(&err), Some("26000"), "client {i}: {}", why(&err));
    let err = client
        .query("EXECUTE q(1)", &[])
        .await
        .expect_err("q is deallocated (extended)");
    assert_eq!(sqlstate(&err), Some("26000"), "client {i}: {}", why(&err));

    // The name again, for another statement; then DEALLOCATE ALL.
    client
        .batch_execute(&format!(
            "PREPARE q(text) AS SELECT upper($1) || '{i}'; PREPARE r AS SELECT {i} + 1000"
        ))
        .await
        .unwrap();
    assert_eq!(
        simple_value(&client, "EXECUTE q('x')").await,
        format!("X{i}")
    );
    assert_eq!(
        simple_value(&client, "EXECUTE r").await,
        (i + 1000).to_string()
    );
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    for sql in ["EXECUTE q('x')", "EXECUTE r"] {
        let err = client.simple_query(sql).await.expect_err("deallocated");
        assert_eq!(
            sqlstate(&err),
            Some("26000"),
            "client {i}, {sql}: {}",
            why(&err)
        );
    }
    client
        .batch_execute(&format!("PREPARE q AS SELECT {i}"))
        .await
        .unwrap();
    assert_eq!(simple_value(&client, "EXECUTE q").await, i.to_string());
}

/// Many clients prepare the same name for different statements and execute them in many
/// transactions, whichever server connection each transaction gets.
async fn sql_prepare_execute_deallocate(ep: &Endpoint) {
    let barrier = tokio::sync::Barrier::new(PREPARE_CLIENTS + 1);
    let clients = futures_util::future::join_all(
        (1..=PREPARE_CLIENTS).map(|i| sql_prepare_client(ep, i, &barrier)),
    );
    let watch = async {
        barrier.wait().await;
        // Every client holds a prepared statement: none of them is pinned for it.
        if let Some(port) = ep.admin {
            assert_eq!(
                metric(&scrape(port), PINNED),
                0.0,
                "SQL prepared statements are carried, not pinned"
            );
        }
    };
    tokio::join!(clients, watch);
}

#[tokio::test]
async fn sql_prepare_execute_deallocate_through_pgward() {
    let config = ProxyConfig::transaction(5).checkout_timeout("30s").admin();
    let pgward = config.start();
    deadline(
        LIMIT,
        sql_prepare_execute_deallocate(&Endpoint::pgward(&pgward, config.admin_port)),
    )
    .await;
}

#[tokio::test]
async fn sql_prepare_execute_deallocate_directly() {
    deadline(LIMIT, sql_prepare_execute_deallocate(&Endpoint::direct())).await;
}

/// A client's protocol-level statement that EXECUTEs a SQL-level name it has deallocated
/// fails as it does on PostgreSQL, on a server connection where another client's statement
/// of that name lives: it never runs the other client's statement.
#[tokio::test]
async fn executing_a_deallocated_name_never_runs_another_clients_statement() {
    // One server connection, so both clients' statements meet on it.
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let other = pgward.connect().await;
        let client = pgward.connect().await;
        other
            .batch_execute("PREPARE q(int) AS SELECT $1 * 1000")
            .await
            .unwrap();
        client
            .batch_execute("PREPARE q(int) AS SELECT $1 * 2; DEALLOCATE q")
            .await
            .unwrap();
        // Parsed while the connection holds no q (pgward dropped the other client's for
        // this client's PREPARE and DEALLOCATE).
        let execute = client.prepare("EXECUTE q(1)").await.unwrap();
        // The other client's q is back on the connection.
        assert_eq!(simple_value(&other, "EXECUTE q(1)").await, "1000");
        let err = client
            .query(&execute, &[])
            .await
            .expect_err("this client's q is deallocated");
        assert_eq!(sqlstate(&err), Some("26000"), "{}", why(&err));
        assert_eq!(simple_value(&other, "EXECUTE q(2)").await, "2000");
    })
    .await;
}

#[test]
fn psycopg_prepared_statements_survive_a_type_dropped_and_recreated_through_pgward() {
    let pgward = ProxyConfig::transaction(2).start();
    run_python(
        &py_script("prepared_change_type.py"),
        &[&pgward_dsn(&pgward)],
        SCRIPT_LIMIT,
    )
    .expect_success("prepared_change_type.py through pgward");
}

#[test]
fn psycopg_prepared_statements_survive_a_type_dropped_and_recreated_directly() {
    run_python(
        &py_script("prepared_change_type.py"),
        &[&direct_dsn()],
        SCRIPT_LIMIT,
    )
    .expect_success("prepared_change_type.py directly");
}

// ---------------------------------------------------------------------------------------------
// Pinning
// ---------------------------------------------------------------------------------------------

async fn assert_no_table(client: &Client, table: &str, who: &str) {
    let err = client
        .simple_query(&format!("SELECT * FROM {table}"))
        .await
        .expect_err("another session's temporary table is not visible");
    assert_eq!(sqlstate(&err), Some("42P01"), "{who}: {}", why(&err));
}

/// A client that never sees the temporary table and keeps working meanwhile.
async fn never_sees(client: &Client, table: &str, who: &str) {
    for i in 0..20 {
        assert_no_table(client, table, who).await;
        assert_eq!(
            simple_value(client, &format!("SELECT {i}")).await,
            i.to_string()
        );
    }
}

/// A temporary table keeps its client on its server connection until DROP TABLE, DISCARD
/// ALL or the client's disconnection; the other clients never see it and go on sharing the
/// rest of the pool.
async fn temp_table_pins_its_client(ep: &Endpoint) {
    let table = ep.name("tr_pin_temp");
    let a = ep.connect().await;
    let b = ep.connect().await;
    let c = ep.connect().await;
    ep.expect_metric(PINNED, 0.0).await;

    a.batch_execute(&format!("CREATE TEMP TABLE {table} (n int)"))
        .await
        .unwrap();
    ep.expect_metric(PINNED, 1.0).await;
    let a_pid = backend_pid(&a).await;
    let work = async {
        for n in 1..=20i32 {
            match n % 3 {
                0 => a
                    .batch_execute(&format!("INSERT INTO {table} VALUES ({n})"))
                    .await
                    .unwrap(),
                1 => {
                    a.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&n])
                        .await
                        .unwrap();
                }
                _ => a
                    .batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES ({n}); COMMIT"))
                    .await
                    .unwrap(),
            }
            let row = a
                .query_one(
                    &format!("SELECT count(*)::int4, sum(n)::int4 FROM {table}"),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(
                (row.get::<_, i32>(0), row.get::<_, i32>(1)),
                (n, n * (n + 1) / 2),
                "A's rows after {n} inserts"
            );
            assert_eq!(
                backend_pid(&a).await,
                a_pid,
                "A stays on its server connection"
            );
        }
    };
    tokio::join!(
        work,
        never_sees(&b, &table, "B"),
        never_sees(&c, &table, "C")
    );
    ep.expect_metric(PINNED, 1.0).await;

    // DROP TABLE ends the pin.
    a.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    ep.expect_metric(PINNED, 0.0).await;
    assert_no_table(&a, &table, "A after DROP TABLE").await;

    // So does DISCARD ALL.
    a.batch_execute(&format!(
        "CREATE TEMP TABLE {table} (n int); INSERT INTO {table} VALUES (1)"
    ))
    .await
    .unwrap();
    ep.expect_metric(PINNED, 1.0).await;
    assert_eq!(
        simple_value(&a, &format!("SELECT count(*) FROM {table}")).await,
        "1"
    );
    a.batch_execute("DISCARD ALL").await.unwrap();
    ep.expect_metric(PINNED, 0.0).await;
    assert_no_table(&a, &table, "A after DISCARD ALL").await;

    // And disconnecting.
    a.batch_execute(&format!("CREATE TEMP TABLE {table} (n int)"))
        .await
        .unwrap();
    ep.expect_metric(PINNED, 1.0).await;
    drop(a);
    ep.expect_metric(PINNED, 0.0).await;
    for _ in 0..3 {
        assert_no_table(&b, &table, "B after A left").await;
        assert_no_table(&c, &table, "C after A left").await;
    }
    ep.expect_metric(&pins_total("temp_table"), 3.0).await;
}

#[tokio::test]
async fn temp_table_pins_its_client_through_pgward() {
    let config = ProxyConfig::transaction(2).admin();
    let pgward = config.start();
    deadline(
        LIMIT,
        temp_table_pins_its_client(&Endpoint::pgward(&pgward, config.admin_port)),
    )
    .await;
}

#[tokio::test]
async fn temp_table_pins_its_client_directly() {
    deadline(LIMIT, temp_table_pins_its_client(&Endpoint::direct())).await;
}

async fn fetch(client: &Client, sql: &str) -> Vec<String> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", why(&e)));
    simple_rows(&messages)
        .into_iter()
        .map(|row| row[0].clone().expect("not NULL"))
        .collect()
}

/// A WITH HOLD cursor outlives its transaction: its client stays on its server connection,
/// FETCHing in later transactions, until CLOSE (or CLOSE ALL).
async fn with_hold_cursor_pins_its_client(ep: &Endpoint) {
    let a = ep.connect().await;
    let b = ep.connect().await;
    let numbers = |from: i32, to: i32| (from..=to).map(|n| n.to_string()).collect::<Vec<_>>();

    // A cursor without HOLD ends with its transaction: nothing to pin.
    a.batch_execute("BEGIN; DECLARE tr_plain CURSOR FOR SELECT generate_series(1, 10)")
        .await
        .unwrap();
    assert_eq!(fetch(&a, "FETCH 2 FROM tr_plain").await, numbers(1, 2));
    a.batch_execute("COMMIT").await.unwrap();
    ep.expect_metric(PINNED, 0.0).await;

    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("DECLARE tr_hold CURSOR WITH HOLD FOR SELECT generate_series(1, 10)")
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    ep.expect_metric(PINNED, 1.0).await;
    let a_pid = backend_pid(&a).await;

    // B keeps the rest of the pool busy in between.
    let busy = async {
        for i in 0..10 {
            assert_eq!(
                simple_value(&b, &format!("SELECT {i} FROM pg_sleep(0.02)")).await,
                i.to_string()
            );
        }
    };
    let reads = async {
        assert_eq!(fetch(&a, "FETCH 3 FROM tr_hold").await, numbers(1, 3));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fetch(&a, "FETCH 3 FROM tr_hold").await, numbers(4, 6));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rows = a.query("FETCH 2 FROM tr_hold", &[]).await.unwrap();
        let values: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(values, [7, 8], "FETCH through the extended protocol");
        assert_eq!(
            backend_pid(&a).await,
            a_pid,
            "A stays on its server connection"
        );
    };
    tokio::join!(busy, reads);
    ep.expect_metric(PINNED, 1.0).await;

    a.batch_execute("CLOSE tr_hold").await.unwrap();
    ep.expect_metric(PINNED, 0.0).await;
    let err = a
        .simple_query("FETCH 1 FROM tr_hold")
        .await
        .expect_err("the cursor is closed");
    assert_eq!(sqlstate(&err), Some("34000"), "{}", why(&err));

    // Declared in one simple query; closed by CLOSE ALL.
    a.batch_execute(
        "BEGIN; DECLARE tr_hold_2 CURSOR WITH HOLD FOR SELECT generate_series(1, 3); COMMIT",
    )
    .await
    .unwrap();
    ep.expect_metric(PINNED, 1.0).await;
    simple_value(&b, "SELECT 1").await;
    assert_eq!(fetch(&a, "FETCH ALL FROM tr_hold_2").await, numbers(1, 3));
    a.batch_execute("CLOSE ALL").await.unwrap();
    ep.expect_metric(PINNED, 0.0).await;
    ep.expect_metric(&pins_total("cursor_with_hold"), 2.0).await;
}

#[tokio::test]
async fn with_hold_cursor_pins_its_client_through_pgward() {
    let config = ProxyConfig::transaction(2).admin();
    let pgward = config.start();
    deadline(
        LIMIT,
        with_hold_cursor_pins_its_client(&Endpoint::pgward(&pgward, config.admin_port)),
    )
    .await;
}

#[tokio::test]
async fn with_hold_cursor_pins_its_client_directly() {
    deadline(LIMIT, with_hold_cursor_pins_its_client(&Endpoint::direct())).await;
}

/// A session advisory lock keeps its client on its server connection until it is unlocked:
/// meanwhile another client cannot take it, however many transactions the holder runs.
async fn session_advisory_lock_pins_its_client(ep: &Endpoint, key: i64) {
    let a = ep.connect().await;
    let b = ep.connect().await;

    // A transaction-level lock ends with its transaction: nothing to pin.
    a.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({key}); COMMIT"
    ))
    .await
    .unwrap();
    ep.expect_metric(PINNED, 0.0).await;

    a.batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .await
        .unwrap();
    ep.expect_metric(PINNED, 1.0).await;
    let a_pid = backend_pid(&a).await;
    for i in 0..10i64 {
        if i % 2 == 0 {
            assert_eq!(
                simple_value(&b, &format!("SELECT pg_try_advisory_lock({key})")).await,
                "f",
                "B takes A's lock (round {i})"
            );
        } else {
            let row = b
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .unwrap();
            assert!(!row.get::<_, bool>(0), "B takes A's lock (round {i})");
        }
        match i % 3 {
            0 => {
                a.batch_execute(&format!("BEGIN; SELECT {i}; COMMIT"))
                    .await
                    .unwrap();
            }
            1 => {
                let row = a.query_one("SELECT $1::int8 + 1", &[&i]).await.unwrap();
                assert_eq!(row.get::<_, i64>(0), i + 1);
            }
            _ => assert_eq!(
                simple_value(&a, &format!("SELECT {i}")).await,
                i.to_string()
            ),
        }
        assert_eq!(
            backend_pid(&a).await,
            a_pid,
            "A stays on its server connection"
        );
    }

    assert_eq!(
        simple_value(&a, &format!("SELECT pg_advisory_unlock({key})")).await,
        "t"
    );
    assert_eq!(
        simple_value(&b, &format!("SELECT pg_try_advisory_lock({key})")).await,
        "t",
        "free once A unlocked it"
    );
    assert_eq!(
        simple_value(&b, &format!("SELECT pg_advisory_unlock({key})")).await,
        "t"
    );
    ep.expect_metric(PINNED, 0.0).await;
    if let Some(port) = ep.admin {
        wait_metric(port, &pins_total("advisory_lock"), |v| v >= 1.0, ">= 1").await;
    }
}

#[tokio::test]
async fn session_advisory_lock_pins_its_client_through_pgward() {
    let config = ProxyConfig::transaction(2).admin();
    let pgward = config.start();
    deadline(
        LIMIT,
        session_advisory_lock_pins_its_client(
            &Endpoint::pgward(&pgward, config.admin_port),
            7_340_001,
        ),
    )
    .await;
}

#[tokio::test]
async fn session_advisory_lock_pins_its_client_directly() {
    deadline(
        LIMIT,
        session_advisory_lock_pins_its_client(&Endpoint::direct(), 7_340_002),
    )
    .await;
}

/// `pool.pinning = "off"`: state that would pin is refused with 0A000 instead, and the
/// connection stays usable.
#[tokio::test]
async fn with_pinning_off_a_temp_table_is_refused() {
    let toml = ProxyConfig::transaction(2)
        .toml()
        .replace("[pool]\n", "[pool]\npinning = \"off\"\n");
    assert!(toml.contains("pinning = \"off\""), "{toml}");
    let pgward = Pgward::start(&toml);
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        let err = client
            .batch_execute("CREATE TEMP TABLE tr_off_temp (n int)")
            .await
            .expect_err("a temporary table needs a pin");
        assert_eq!(sqlstate(&err), Some("0A000"), "{}", why(&err));
        let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
        assert!(message.contains("session"), "{message}");
        assert_eq!(simple_value(&client, "SELECT 'usable'").await, "usable");

        let err = client
            .execute("CREATE TEMP TABLE tr_off_temp (n int)", &[])
            .await
            .expect_err("a temporary table needs a pin (extended protocol)");
        assert_eq!(sqlstate(&err), Some("0A000"), "{}", why(&err));
        assert_eq!(simple_value(&client, "SELECT 'usable'").await, "usable");
        assert_eq!(
            simple_value(&client, "SELECT to_regclass('tr_off_temp') IS NULL").await,
            "t",
            "no temporary table was made"
        );
    })
    .await;
}

/// Session mode keeps LISTEN where it was: on the client's own server connection.
#[tokio::test]
async fn session_mode_keeps_listen_on_the_clients_server_connection() {
    let pgward = ProxyConfig::session(2).start();
    deadline(LIMIT, async {
        let ep = Endpoint::pgward(&pgward, None);
        let (listener, mut notes) = ep.listener().await;
        let notifier = ep.connect().await;
        listener
            .batch_execute("LISTEN tr_session_mode")
            .await
            .unwrap();
        assert_eq!(
            simple_value(
                &listener,
                "SELECT string_agg(c, ',') FROM pg_listening_channels() c"
            )
            .await,
            "tr_session_mode"
        );
        notifier
            .batch_execute("NOTIFY tr_session_mode, 'hello'")
            .await
            .unwrap();
        notes.expect("tr_session_mode", "hello").await;
        listener.batch_execute("UNLISTEN *").await.unwrap();
        assert_eq!(
            simple_value(&listener, "SELECT count(*) FROM pg_listening_channels()").await,
            "0"
        );
    })
    .await;
}
