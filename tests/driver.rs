//! A real driver (tokio-postgres) through pgward against real PostgreSQL: the protocol features
//! applications rely on, in transaction mode unless a test says otherwise.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{
    deadline, direct_postgres, http_get, metric, show, simple_rows, simple_value, sqlstate,
    ProxyConfig, ProxyUser,
};
use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, SimpleQueryMessage};

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn simple_query_and_multi_statement_simple_query() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        assert_eq!(simple_value(&client, "SELECT 1 + 1").await, "2");

        client
            .batch_execute(
                "CREATE TABLE drv_simple (id int PRIMARY KEY, name text);
                 INSERT INTO drv_simple VALUES (1, 'one'), (2, 'two'), (3, NULL);",
            )
            .await
            .unwrap();
        let messages = client
            .simple_query(
                "SELECT count(*) FROM drv_simple;
                 SELECT id, name FROM drv_simple ORDER BY id;
                 UPDATE drv_simple SET name = 'deux' WHERE id = 2;
                 SELECT name FROM drv_simple WHERE id = 2",
            )
            .await
            .unwrap();
        let text = |s: &str| Some(s.to_owned());
        assert_eq!(
            simple_rows(&messages),
            vec![
                vec![text("3")],
                vec![text("1"), text("one")],
                vec![text("2"), text("two")],
                vec![text("3"), None],
                vec![text("deux")],
            ]
        );
        let completions: Vec<u64> = messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(completions, vec![1, 3, 1, 1]);

        // A failing statement in a multi-statement string: the implicit transaction rolls
        // back as a whole and the connection stays usable.
        let err = client
            .simple_query("INSERT INTO drv_simple VALUES (4, 'four'); SELECT 1/0; SELECT 5")
            .await
            .expect_err("division by zero");
        assert_eq!(sqlstate(&err), Some("22012"), "{err}");
        assert_eq!(
            simple_value(&client, "SELECT count(*) FROM drv_simple").await,
            "3"
        );
    })
    .await;
}

#[tokio::test]
async fn extended_query_with_parameters() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        let row = client
            .query_one(
                "SELECT $1::text || '-' || $2::int4, $2::int4 + 1",
                &[&"abc", &41i32],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "abc-41");
        assert_eq!(row.get::<_, i32>(1), 42);

        let rows = client
            .query(
                "SELECT g FROM generate_series(1, $1::int4) AS g",
                &[&1000i32],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1000);
        assert_eq!(
            rows.iter().map(|r| r.get::<_, i32>(0) as i64).sum::<i64>(),
            500_500
        );

        client
            .batch_execute("CREATE TABLE drv_params (id int PRIMARY KEY, note text)")
            .await
            .unwrap();
        for (id, note) in [(1, Some("first")), (2, None), (3, Some("third"))] {
            let inserted = client
                .execute("INSERT INTO drv_params VALUES ($1, $2)", &[&id, &note])
                .await
                .unwrap();
            assert_eq!(inserted, 1);
        }
        let row = client
            .query_one("SELECT note FROM drv_params WHERE id = $1", &[&2i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0), None);
        let notes: Vec<String> = client
            .query(
                "SELECT note FROM drv_params WHERE note IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(notes, ["first", "third"]);
    })
    .await;
}

#[tokio::test]
async fn binary_parameters_and_results() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        client
            .batch_execute(
                "CREATE TABLE drv_binary (
                    i4 int4, i8 int8, f8 float8, b bytea, t text[], ts timestamp
                 )",
            )
            .await
            .unwrap();
        let i4 = -2_147_483_648i32;
        let i8 = 9_007_199_254_740_993i64;
        let f8 = -1.5e300f64;
        let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
        let texts = vec![
            "plain".to_owned(),
            String::new(),
            "with \"quotes\", {braces} and \\backslash".to_owned(),
            "ünïcødé ✓".to_owned(),
        ];
        // Microsecond precision is what a timestamp stores.
        let ts = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);

        let insert = client
            .prepare_typed(
                "INSERT INTO drv_binary VALUES ($1, $2, $3, $4, $5, $6)",
                &[Type::INT4, Type::INT8, Type::FLOAT8, Type::BYTEA, Type::TEXT_ARRAY, Type::TIMESTAMP],
            )
            .await
            .unwrap();
        client
            .execute(&insert, &[&i4, &i8, &f8, &bytes, &texts, &ts])
            .await
            .unwrap();

        let row = client
            .query_one("SELECT i4, i8, f8, b, t, ts FROM drv_binary WHERE i8 = $1", &[&i8])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i4);
        assert_eq!(row.get::<_, i64>(1), i8);
        assert_eq!(row.get::<_, f64>(2), f8);
        assert_eq!(row.get::<_, Vec<u8>>(3), bytes);
        assert_eq!(row.get::<_, Vec<String>>(4), texts);
        assert_eq!(row.get::<_, SystemTime>(5), ts);

        // The server computes on the binary values too, not just echoes them.
        let row = client
            .query_one(
                "SELECT $1::int8 * 2, length($2::bytea), array_length($3::text[], 1), $4::timestamp + interval '1 day'",
                &[&21i64, &bytes, &texts, &ts],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 42);
        assert_eq!(row.get::<_, i32>(1), bytes.len() as i32);
        assert_eq!(row.get::<_, i32>(2), texts.len() as i32);
        assert_eq!(row.get::<_, SystemTime>(3), ts + Duration::from_secs(86_400));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_reused_across_transactions_by_many_clients() {
    const CLIENTS: i32 = 50;
    const TRANSACTIONS: i32 = 20;
    // Waiting for one of 5 connections is expected here; the timeout is not under test.
    let pgward = ProxyConfig::transaction(5).checkout_timeout("30s").start();
    deadline(LIMIT, async {
        let setup = pgward.connect().await;
        setup
            .batch_execute("CREATE TABLE drv_prepared (client_id int, n int, doubled int)")
            .await
            .unwrap();

        let mut tasks = tokio::task::JoinSet::new();
        for client_id in 0..CLIENTS {
            let config = pgward.client_config(common::USER, common::PASSWORD);
            tasks.spawn(async move {
                let mut client = common::connect_with(&config)
                    .await
                    .unwrap_or_else(|e| panic!("client {client_id} connecting: {e}"));
                // Prepared once; executed in every transaction, on whichever server
                // connection the transaction gets.
                let compute = client
                    .prepare("SELECT $1::int4 * 1000 + $2::int4, $2::int4 * 2")
                    .await
                    .unwrap();
                let insert = client
                    .prepare("INSERT INTO drv_prepared VALUES ($1, $2, $3)")
                    .await
                    .unwrap();
                for n in 0..TRANSACTIONS {
                    let tx = client.transaction().await.unwrap();
                    let row = tx.query_one(&compute, &[&client_id, &n]).await.unwrap();
                    assert_eq!(row.get::<_, i32>(0), client_id * 1000 + n);
                    let doubled: i32 = row.get(1);
                    assert_eq!(doubled, n * 2);
                    tx.execute(&insert, &[&client_id, &n, &doubled])
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
                // And outside an explicit transaction.
                let row = client.query_one(&compute, &[&client_id, &7]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), client_id * 1000 + 7);
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.expect("a client task failed");
        }

        let row = setup
            .query_one(
                "SELECT count(*), count(DISTINCT client_id), sum(doubled)::int8, \
                 bool_and(doubled = n * 2) FROM drv_prepared",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), (CLIENTS * TRANSACTIONS) as i64);
        assert_eq!(row.get::<_, i64>(1), CLIENTS as i64);
        let per_client: i64 = (0..TRANSACTIONS as i64).map(|n| n * 2).sum();
        assert_eq!(row.get::<_, i64>(2), per_client * CLIENTS as i64);
        assert!(row.get::<_, bool>(3));
    })
    .await;
}

#[tokio::test]
async fn error_in_a_pipeline_leaves_the_connection_usable() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        let add = client.prepare("SELECT $1::int4 + 1").await.unwrap();
        let divide = client.prepare("SELECT 10 / $1::int4").await.unwrap();

        // Sent back to back before any answer is read: one fails, the others are unaffected.
        let (a, b, c, d) = futures_util::join!(
            client.query_one(&add, &[&1i32]),
            client.query_one(&divide, &[&0i32]),
            client.query_one(&add, &[&41i32]),
            client.query_one(&divide, &[&5i32]),
        );
        assert_eq!(a.unwrap().get::<_, i32>(0), 2);
        let err = b.expect_err("division by zero");
        assert_eq!(sqlstate(&err), Some("22012"), "{err}");
        assert_eq!(c.unwrap().get::<_, i32>(0), 42);
        assert_eq!(d.unwrap().get::<_, i32>(0), 2);

        // Unprepared statements pipelined the same way (each is Parse/Describe, then Bind/Execute).
        let (a, b, c) = futures_util::join!(
            client.query_one("SELECT 'first'::text", &[]),
            client.query_one("SELECT 1 / $1::int4", &[&0i32]),
            client.query_one("SELECT 'third'::text", &[]),
        );
        assert_eq!(a.unwrap().get::<_, String>(0), "first");
        assert_eq!(sqlstate(&b.expect_err("division by zero")), Some("22012"));
        assert_eq!(c.unwrap().get::<_, String>(0), "third");

        // Inside a transaction the error aborts it: later statements get 25P02 until ROLLBACK,
        // and nothing of it is kept.
        client
            .batch_execute("CREATE TABLE drv_pipeline (x int)")
            .await
            .unwrap();
        let insert = client
            .prepare("INSERT INTO drv_pipeline VALUES ($1)")
            .await
            .unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        let (insert, fail, after) = futures_util::join!(
            client.execute(&insert, &[&1i32]),
            client.query_one(&divide, &[&0i32]),
            client.query_one(&add, &[&1i32]),
        );
        assert_eq!(insert.unwrap(), 1);
        assert_eq!(
            sqlstate(&fail.expect_err("division by zero")),
            Some("22012")
        );
        assert_eq!(
            sqlstate(&after.expect_err("aborted transaction")),
            Some("25P02")
        );
        client.batch_execute("ROLLBACK").await.unwrap();

        assert_eq!(
            client
                .query_one(&add, &[&99i32])
                .await
                .unwrap()
                .get::<_, i32>(0),
            100
        );
        assert_eq!(
            simple_value(&client, "SELECT count(*) FROM drv_pipeline").await,
            "0"
        );
    })
    .await;
}

#[tokio::test]
async fn copy_in_and_out_of_100k_rows() {
    const ROWS: i64 = 100_000;
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        client
            .batch_execute("CREATE TABLE drv_copy (id int8, label text)")
            .await
            .unwrap();

        let sink = client
            .copy_in::<_, Bytes>("COPY drv_copy (id, label) FROM STDIN")
            .await
            .unwrap();
        pin_mut!(sink);
        let mut chunk = String::new();
        for id in 1..=ROWS {
            chunk.push_str(&format!("{id}\trow {id}\n"));
            if id % 10_000 == 0 {
                sink.send(Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(sink.finish().await.unwrap(), ROWS as u64);

        let row = client
            .query_one("SELECT count(*), sum(id)::int8 FROM drv_copy", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), ROWS);
        assert_eq!(row.get::<_, i64>(1), ROWS * (ROWS + 1) / 2);

        let stream = client
            .copy_out("COPY drv_copy (id, label) TO STDOUT")
            .await
            .unwrap();
        pin_mut!(stream);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        let text = String::from_utf8(data).unwrap();
        let (mut count, mut sum) = (0i64, 0i64);
        for line in text.lines() {
            let (id, label) = line.split_once('\t').expect("tab-separated line");
            let id: i64 = id.parse().unwrap();
            assert_eq!(label, format!("row {id}"));
            count += 1;
            sum += id;
        }
        assert_eq!(count, ROWS);
        assert_eq!(sum, ROWS * (ROWS + 1) / 2);

        // The connection is back to normal after both COPYs.
        assert_eq!(
            simple_value(&client, "SELECT 'after copy'").await,
            "after copy"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_in_session_mode() {
    let pgward = ProxyConfig::session(4).start();
    deadline(LIMIT, async {
        let config = pgward.client_config(common::USER, common::PASSWORD);
        let (listener, mut notifications) =
            common::connect_with_notifications(&config).await.unwrap();
        listener.batch_execute("LISTEN drv_events").await.unwrap();
        let listener_pid = simple_value(&listener, "SELECT pg_backend_pid()").await;

        let notifier = pgward.connect().await;
        notifier
            .execute(
                "SELECT pg_notify('drv_events', 'hello ' || $1::text)",
                &[&"world"],
            )
            .await
            .unwrap();
        notifier
            .batch_execute("NOTIFY drv_events, 'second'")
            .await
            .unwrap();

        // The listener is idle: the notifications must arrive without it sending anything.
        for expected in ["hello world", "second"] {
            let n = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
                .await
                .unwrap_or_else(|_| panic!("notification {expected:?} did not arrive"))
                .expect("listener connection closed");
            assert_eq!(n.channel(), "drv_events");
            assert_eq!(n.payload(), expected);
        }
        // The listener still works, on the same server session.
        assert_eq!(
            simple_value(&listener, "SELECT pg_backend_pid()").await,
            listener_pid
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_running_query() {
    const SLEEP: &str = "SELECT pg_sleep(30) /* pgward cancel test */";
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        let token = client.cancel_token();
        let query = tokio::spawn(async move {
            let result = client.simple_query(SLEEP).await;
            (result, client)
        });

        // Cancel only once PostgreSQL is really running the sleep; earlier it would be a no-op.
        let observer = direct_postgres().await;
        let started = Instant::now();
        loop {
            let running: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                    &[&SLEEP],
                )
                .await
                .unwrap()
                .get(0);
            if running == 1 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the sleep never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let cancelled_at = Instant::now();
        token
            .cancel_query(NoTls)
            .await
            .expect("sending the cancel request");
        let (result, client) = tokio::time::timeout(Duration::from_secs(20), query)
            .await
            .expect("the cancelled query did not return")
            .unwrap();
        let err = result.expect_err("the query must be cancelled");
        assert_eq!(sqlstate(&err), Some("57014"), "{err}");
        // A hang guard: a working cancel returns in milliseconds, a lost one after 30 s.
        assert!(cancelled_at.elapsed() < Duration::from_secs(10));

        assert_eq!(
            simple_value(&client, "SELECT 'still here'").await,
            "still here"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_ends_the_wait_for_a_server_connection() {
    // One server connection, which another client's statement holds.
    let config = ProxyConfig::transaction(1).admin();
    let admin_port = config.admin_port.expect("admin endpoint");
    let pgward = config.start();
    deadline(LIMIT, async {
        // Both log in first: a login needs a server connection too.
        let holder = pgward.connect().await;
        let waiter = pgward.connect().await;
        let token = waiter.cancel_token();
        let hold = tokio::spawn(async move {
            holder.simple_query("SELECT pg_sleep(3)").await.unwrap();
            holder
        });
        let clients_in = |state: &'static str, n: f64| async move {
            let sample = format!("pgward_client_connections{{state=\"{state}\"}}");
            loop {
                let (_, body) = http_get(admin_port, "/metrics");
                if metric(&body, &sample) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // The holder has the server before the waiter asks for it.
        clients_in("active", 1.0).await;
        let query = tokio::spawn(async move {
            let result = waiter.simple_query("SELECT 'ran'").await;
            (result, waiter)
        });
        clients_in("waiting", 1.0).await;

        token
            .cancel_query(NoTls)
            .await
            .expect("sending the cancel request");
        let (result, waiter) = query.await.unwrap();
        let err = result.expect_err("the waiting request must be cancelled");
        assert_eq!(sqlstate(&err), Some("57014"), "{err}");
        assert!(
            !hold.is_finished(),
            "the request was answered only once the server connection came free"
        );
        clients_in("waiting", 0.0).await;

        // The client goes on as usual once a server connection is free.
        let holder = hold.await.unwrap();
        assert_eq!(
            simple_value(&waiter, "SELECT 'still here'").await,
            "still here"
        );
        assert_eq!(
            simple_value(&holder, "SELECT 'holder too'").await,
            "holder too"
        );
    })
    .await;
}

#[tokio::test]
async fn startup_parameters_stay_with_their_client() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let mut config = pgward.client_config(common::USER, common::PASSWORD);
        config
            .application_name("pgward_params_test")
            .options("-c statement_timeout=1234");
        let special = common::connect_with(&config).await.unwrap();
        let plain = pgward.connect().await;
        let other = pgward.connect().await;

        // One server connection shared by all three clients, in turns.
        for _ in 0..5 {
            assert_eq!(
                show(&special, "application_name").await,
                "pgward_params_test"
            );
            assert_eq!(show(&special, "statement_timeout").await, "1234ms");
            for client in [&plain, &other] {
                assert_ne!(show(client, "application_name").await, "pgward_params_test");
                assert_eq!(show(client, "statement_timeout").await, "0");
            }
            special.batch_execute("BEGIN").await.unwrap();
            assert_eq!(show(&special, "statement_timeout").await, "1234ms");
            special.batch_execute("COMMIT").await.unwrap();
        }

        // The setting does what it says, for its client only.
        let err = special
            .simple_query("SELECT pg_sleep(3)")
            .await
            .expect_err("statement_timeout must cancel the sleep");
        assert_eq!(sqlstate(&err), Some("57014"), "{err}");
        plain.simple_query("SELECT pg_sleep(1.5)").await.unwrap();
        assert_eq!(
            show(&special, "application_name").await,
            "pgward_params_test"
        );
    })
    .await;
}

#[tokio::test]
async fn checkout_timeout_gives_53300() {
    let pgward = ProxyConfig::transaction(1).checkout_timeout("1s").start();
    deadline(LIMIT, async {
        let holder = pgward.connect().await;
        let waiter = pgward.connect().await;
        holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

        let started = Instant::now();
        let err = waiter
            .simple_query("SELECT 1")
            .await
            .expect_err("the only server connection is taken");
        assert_eq!(sqlstate(&err), Some("53300"), "{err}");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "gave up after {:?}, before the 1s checkout_timeout",
            started.elapsed()
        );

        holder.batch_execute("COMMIT").await.unwrap();
        let fresh = pgward.connect().await;
        assert_eq!(
            simple_value(&fresh, "SELECT 'free again'").await,
            "free again"
        );
        assert_eq!(
            simple_value(&holder, "SELECT 'holder too'").await,
            "holder too"
        );
    })
    .await;
}

#[tokio::test]
async fn backend_logins_with_md5_and_trust() {
    let pgward = ProxyConfig::transaction(2)
        .user(ProxyUser::new("md5_client", "md5-client-pw").backend("app_md5", Some("md5-secret")))
        .user(ProxyUser::new("trust_client", "trust-client-pw").backend("app_trust", None))
        .start();
    deadline(LIMIT, async {
        let md5 = pgward.connect_as("md5_client", "md5-client-pw").await;
        assert_eq!(simple_value(&md5, "SELECT current_user").await, "app_md5");
        let row = md5
            .query_one("SELECT $1::int4 * 2", &[&21i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);

        let trust = pgward.connect_as("trust_client", "trust-client-pw").await;
        assert_eq!(
            simple_value(&trust, "SELECT session_user").await,
            "app_trust"
        );

        // The client password is pgward's, not the backend's.
        let err = pgward
            .try_connect_as("md5_client", "md5-secret")
            .await
            .expect_err("the backend password is not the client password");
        assert_eq!(sqlstate(&err), Some("28P01"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn session_mode_resets_server_state_between_clients() {
    let pgward = ProxyConfig::session(1).start();
    deadline(LIMIT, async {
        let first = pgward.connect().await;
        first
            .batch_execute(
                "SET work_mem = '7MB';
                 CREATE TEMP TABLE drv_session_tmp (x int);
                 INSERT INTO drv_session_tmp VALUES (1);
                 PREPARE drv_session_stmt AS SELECT 1;
                 LISTEN drv_session_channel;",
            )
            .await
            .unwrap();
        assert_eq!(show(&first, "work_mem").await, "7MB");
        assert_eq!(
            simple_value(&first, "SELECT count(*) FROM drv_session_tmp").await,
            "1"
        );
        drop(first);

        // Pool size 1: the next client gets the same server connection once it is released.
        let second = pgward.connect().await;
        assert_eq!(show(&second, "work_mem").await, "4MB");
        assert_eq!(
            simple_value(
                &second,
                "SELECT coalesce(to_regclass('pg_temp.drv_session_tmp')::text, 'gone')"
            )
            .await,
            "gone"
        );
        assert_eq!(
            simple_value(
                &second,
                "SELECT count(*) FROM pg_prepared_statements WHERE name = 'drv_session_stmt'"
            )
            .await,
            "0"
        );
        assert_eq!(
            simple_value(&second, "SELECT count(*) FROM pg_listening_channels()").await,
            "0"
        );
    })
    .await;
}
