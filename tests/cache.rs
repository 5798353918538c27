//! The result cache through real clients against real PostgreSQL: repeated reads are answered
//! without reaching the server (counted by pg_stat_statements), and no read is ever stale
//! after a write through this or another pgward instance.

mod common;

use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

const LIMIT: Duration = Duration::from_secs(120);

/// `[cache]` on, with `extra` keys, on a channel of its own: the tests of this file run at
/// the same time against one database, and an instance hearing another test's writes (a
/// `nextval` flushes a whole database) would miss where its test expects a hit.
fn cache_toml(extra: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let channel = format!("pgward_cache_test_{}_{n}", std::process::id());
    cache_toml_on(&channel, extra)
}

/// `[cache]` on `channel` (instances that must hear each other share one).
fn cache_toml_on(channel: &str, extra: &str) -> String {
    format!("\n[cache]\nenabled = true\nchannel = \"{channel}\"\n{extra}\n")
}

/// A pgward with the cache on, and its metrics port.
struct Cached {
    pgward: Pgward,
    admin_port: u16,
}

impl std::ops::Deref for Cached {
    type Target = Pgward;
    fn deref(&self) -> &Pgward {
        &self.pgward
    }
}

fn start_cached(extra: &str) -> Cached {
    start_config(ProxyConfig::transaction(4).extra(&cache_toml(extra)))
}

fn start_config(config: ProxyConfig) -> Cached {
    let config = config.admin();
    let admin_port = config.admin_port.expect("admin port");
    Cached {
        pgward: config.start(),
        admin_port,
    }
}

/// A fresh table `public.<name>` with `(k int PRIMARY KEY, v int)` rows `k = 1..=rows`, v = k.
fn create_kv(name: &str, rows: u32) {
    admin_psql(
        DATABASE,
        &format!(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             DROP TABLE IF EXISTS public.{name};
             CREATE TABLE public.{name} (k int PRIMARY KEY, v int);
             INSERT INTO public.{name} SELECT i, i FROM generate_series(1, {rows}) i;
             GRANT ALL ON public.{name} TO app;"
        ),
    );
}

/// How many times PostgreSQL ran statements mentioning `needle` (pg_stat_statements).
fn server_calls(needle: &str) -> u64 {
    let out = admin_psql(
        DATABASE,
        &format!(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements \
             WHERE query LIKE '%{needle}%' AND query NOT LIKE '%pg_stat_statements%'"
        ),
    );
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("calls: {out:?}"))
}

/// Waits until the cache serves this database (its listener is up), by repeating a read
/// until the second of two identical reads is a hit.
async fn until_serving(pgward: &Cached, client: &Client) {
    for _ in 0..100 {
        let before = hits(pgward);
        client.simple_query("SELECT 1 AS warmup").await.unwrap();
        client.simple_query("SELECT 1 AS warmup").await.unwrap();
        if hits(pgward) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cache never started serving:\n{}", pgward.log());
}

fn metrics(pgward: &Cached) -> String {
    let (status, body) = http_get(pgward.admin_port, "/metrics");
    assert_eq!(status, 200);
    body
}

fn hits(pgward: &Cached) -> f64 {
    metric(&metrics(pgward), "pgward_cache_hits_total")
}

async fn value(client: &Client, sql: &str) -> String {
    simple_value(client, sql).await
}

#[tokio::test]
async fn repeated_reads_are_answered_without_the_server() {
    deadline(LIMIT, async {
        create_kv("cache_repeat", 10);
        let pgward = start_cached("");
        let client = pgward.connect().await;
        until_serving(&pgward, &client).await;
        let before = server_calls("cache_repeat");
        let reads_before = server_calls("cache_repeat WHERE k");
        for _ in 0..5 {
            assert_eq!(
                value(&client, "SELECT v FROM cache_repeat WHERE k = 3").await,
                "3"
            );
        }
        let statement = client
            .prepare("SELECT v FROM cache_repeat WHERE k = $1")
            .await
            .unwrap();
        for _ in 0..5 {
            let row = client.query_one(&statement, &[&4i32]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), 4);
        }
        // One run for the simple text, one for the prepared one: the rest were hits.
        assert_eq!(server_calls("cache_repeat") - before, 2);
        let body = metrics(&pgward);
        assert!(
            metric(&body, "pgward_queries_total{route=\"cache\"}") >= 8.0,
            "{body}"
        );
        assert!(metric(&body, "pgward_cache_bytes") > 0.0);

        // A write through pgward makes the next read go to the server, and see it.
        client
            .execute("UPDATE cache_repeat SET v = 33 WHERE k = 3", &[])
            .await
            .unwrap();
        assert_eq!(
            value(&client, "SELECT v FROM cache_repeat WHERE k = 3").await,
            "33"
        );
        assert_eq!(server_calls("cache_repeat WHERE k") - reads_before, 3);
    })
    .await;
}

#[tokio::test]
async fn a_thousand_random_steps_never_read_stale() {
    deadline(LIMIT, async {
        const KEYS: i32 = 5;
        create_kv("cache_steps", KEYS as u32);
        let pgward = start_cached("");
        let client = pgward.connect().await;
        until_serving(&pgward, &client).await;
        let read = client
            .prepare("SELECT v FROM cache_steps WHERE k = $1")
            .await
            .unwrap();
        let mut expected: Vec<i32> = (0..=KEYS).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for step in 0..1000 {
            let k = rng.gen_range(1..=KEYS);
            match rng.gen_range(0..10) {
                0 => {
                    let v = rng.gen_range(0..1_000_000);
                    client
                        .simple_query(&format!("UPDATE cache_steps SET v = {v} WHERE k = {k}"))
                        .await
                        .unwrap();
                    expected[k as usize] = v;
                }
                1 => {
                    // A transaction block that writes: its commit invalidates.
                    let v = rng.gen_range(0..1_000_000);
                    client
                        .batch_execute(&format!(
                            "BEGIN; UPDATE cache_steps SET v = {v} WHERE k = {k}; COMMIT"
                        ))
                        .await
                        .unwrap();
                    expected[k as usize] = v;
                }
                2..=5 => {
                    let got =
                        value(&client, &format!("SELECT v FROM cache_steps WHERE k = {k}")).await;
                    assert_eq!(got, expected[k as usize].to_string(), "step {step}, k {k}");
                }
                _ => {
                    let row = client.query_one(&read, &[&k]).await.unwrap();
                    assert_eq!(
                        row.get::<_, i32>(0),
                        expected[k as usize],
                        "step {step}, k {k}"
                    );
                }
            }
        }
        assert!(hits(&pgward) > 50.0, "the cache served hits");
    })
    .await;
}

#[tokio::test]
async fn a_write_through_one_instance_is_never_read_stale_through_another() {
    deadline(LIMIT, async {
        create_kv("cache_two", 5);
        let channel = format!("pgward_cache_pair_{}", std::process::id());
        let a = start_config(ProxyConfig::transaction(4).extra(&cache_toml_on(&channel, "")));
        let b = start_config(ProxyConfig::transaction(4).extra(&cache_toml_on(&channel, "")));
        let (ca, cb) = (a.connect().await, b.connect().await);
        until_serving(&a, &ca).await;
        until_serving(&b, &cb).await;
        let read = "SELECT v FROM cache_two WHERE k = 1";
        for i in 0..300 {
            // B caches the current value, A changes it, B must see the change at once.
            assert_eq!(
                value(&cb, read).await,
                (if i == 0 { 1 } else { 1000 + i - 1 }).to_string()
            );
            ca.simple_query(&format!(
                "UPDATE cache_two SET v = {} WHERE k = 1",
                1000 + i
            ))
            .await
            .unwrap();
            assert_eq!(
                value(&cb, read).await,
                (1000 + i).to_string(),
                "iteration {i}"
            );
        }
        assert!(hits(&b) > 0.0);

        // B's listener dies: B stops serving what it cached and answers fresh results.
        // Only this pair's listeners (their queries name their channel): the other tests'
        // instances run alongside.
        admin_psql(
            DATABASE,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'pgward cache bus' AND query LIKE '%{channel}%'"
            ),
        );
        admin_psql(DATABASE, "UPDATE cache_two SET v = 7 WHERE k = 1");
        assert_eq!(
            value(&cb, read).await,
            "7",
            "no stale read after the listener dropped"
        );
        // ... and serves again once its listener is back (and A announces again once its
        // own is back).
        until_serving(&b, &cb).await;
        until_serving(&a, &ca).await;
        ca.simple_query("UPDATE cache_two SET v = 8 WHERE k = 1")
            .await
            .unwrap();
        assert_eq!(value(&cb, read).await, "8");
    })
    .await;
}

#[tokio::test]
async fn volatile_functions_transactions_and_roles_are_never_mixed_up() {
    deadline(LIMIT, async {
        create_kv("cache_misc", 3);
        admin_psql(
            DATABASE,
            "DROP SEQUENCE IF EXISTS cache_seq; CREATE SEQUENCE cache_seq; GRANT ALL ON cache_seq TO app;
             DROP TABLE IF EXISTS cache_rls; CREATE TABLE cache_rls (owner text, note text);
             INSERT INTO cache_rls VALUES ('app', 'app row'), ('cache_other', 'other row');
             ALTER TABLE cache_rls ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON cache_rls USING (owner = current_user);
             DO $$ BEGIN CREATE ROLE cache_other LOGIN PASSWORD 'other-secret'; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT SELECT ON cache_rls TO app, cache_other;",
        );
        let pgward = start_config(
            ProxyConfig::transaction(4)
                .user(ProxyUser::new("cache_other", "other-secret"))
                .extra(&cache_toml("")),
        );
        let client = pgward.connect().await;
        until_serving(&pgward, &client).await;
        for sql in [
            "SELECT now()::text",
            "SELECT clock_timestamp()::text",
            "SELECT random()::text",
            "SELECT nextval('cache_seq')::text",
        ] {
            let first = value(&client, sql).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert_ne!(value(&client, sql).await, first, "{sql} was answered from the cache");
        }
        // A transaction sees its own uncommitted write; after ROLLBACK the old value.
        let read = "SELECT v FROM cache_misc WHERE k = 2";
        assert_eq!(value(&client, read).await, "2");
        assert_eq!(value(&client, read).await, "2");
        client.simple_query("BEGIN").await.unwrap();
        client.simple_query("UPDATE cache_misc SET v = 20 WHERE k = 2").await.unwrap();
        assert_eq!(value(&client, read).await, "20");
        client.simple_query("ROLLBACK").await.unwrap();
        assert_eq!(value(&client, read).await, "2");

        // Row-level security: each role gets its own rows, never the other's cached ones.
        let rls = "SELECT note FROM cache_rls ORDER BY note";
        assert_eq!(value(&client, rls).await, "app row");
        assert_eq!(value(&client, rls).await, "app row");
        let other = pgward.connect_as("cache_other", "other-secret").await;
        assert_eq!(value(&other, rls).await, "other row");
        assert_eq!(value(&other, rls).await, "other row");
        // Row-level security keyed on a custom setting (tenant per client): each tenant's
        // repeated read is its own entry.
        admin_psql(
            DATABASE,
            "DROP TABLE IF EXISTS cache_tenant; CREATE TABLE cache_tenant (tenant text, note text);
             INSERT INTO cache_tenant VALUES ('a', 'tenant a row'), ('b', 'tenant b row');
             ALTER TABLE cache_tenant ENABLE ROW LEVEL SECURITY;
             ALTER TABLE cache_tenant FORCE ROW LEVEL SECURITY;
             CREATE POLICY by_tenant ON cache_tenant
               USING (tenant = current_setting('app.tenant', true));
             GRANT SELECT ON cache_tenant TO app;",
        );
        let tenant_read = "SELECT note FROM cache_tenant ORDER BY note";
        let (tenant_a, tenant_b) = (pgward.connect().await, pgward.connect().await);
        tenant_a.simple_query("SET app.tenant = 'a'").await.unwrap();
        tenant_b.simple_query("SET app.tenant = 'b'").await.unwrap();
        for _ in 0..3 {
            assert_eq!(value(&tenant_a, tenant_read).await, "tenant a row");
            assert_eq!(value(&tenant_b, tenant_read).await, "tenant b row");
        }
        // SET ROLE too: the role's rows for the client that set it, the login's for others.
        admin_psql(DATABASE, &format!("GRANT cache_other TO {USER}"));
        let by_role = pgward.connect().await;
        by_role.simple_query("SET ROLE cache_other").await.unwrap();
        assert_eq!(value(&by_role, rls).await, "other row");
        assert_eq!(value(&by_role, rls).await, "other row");
        assert_eq!(value(&client, rls).await, "app row");
    })
    .await;
}

#[tokio::test]
async fn settings_that_change_results_get_their_own_entries() {
    deadline(LIMIT, async {
        admin_psql(
            DATABASE,
            "DROP SCHEMA IF EXISTS cache_s1 CASCADE; DROP SCHEMA IF EXISTS cache_s2 CASCADE;
             CREATE SCHEMA cache_s1; CREATE SCHEMA cache_s2;
             CREATE TABLE cache_s1.t (v text); INSERT INTO cache_s1.t VALUES ('from s1');
             CREATE TABLE cache_s2.t (v text); INSERT INTO cache_s2.t VALUES ('from s2');
             DROP TABLE IF EXISTS public.cache_tz; CREATE TABLE public.cache_tz (at timestamptz);
             INSERT INTO public.cache_tz VALUES ('2020-01-01 12:00:00+00');
             GRANT USAGE ON SCHEMA cache_s1, cache_s2 TO app;
             GRANT SELECT ON cache_s1.t, cache_s2.t, public.cache_tz TO app;",
        );
        let pgward = start_cached("");
        let client = pgward.connect().await;
        until_serving(&pgward, &client).await;
        for (path, expected) in [
            ("cache_s1", "from s1"),
            ("cache_s2", "from s2"),
            ("cache_s1", "from s1"),
        ] {
            client
                .simple_query(&format!("SET search_path = {path}"))
                .await
                .unwrap();
            assert_eq!(value(&client, "SELECT v FROM t").await, expected, "{path}");
            assert_eq!(value(&client, "SELECT v FROM t").await, expected, "{path}");
        }
        client
            .simple_query("SET search_path = public")
            .await
            .unwrap();
        for (zone, expected) in [
            ("UTC", "2020-01-01 12:00:00+00"),
            ("Asia/Tokyo", "2020-01-01 21:00:00+09"),
            ("UTC", "2020-01-01 12:00:00+00"),
        ] {
            client
                .simple_query(&format!("SET TimeZone = '{zone}'"))
                .await
                .unwrap();
            assert_eq!(
                value(&client, "SELECT at::text FROM cache_tz").await,
                expected
            );
            assert_eq!(
                value(&client, "SELECT at::text FROM cache_tz").await,
                expected
            );
        }
    })
    .await;
}

#[tokio::test]
async fn the_byte_bound_holds() {
    deadline(LIMIT, async {
        create_kv("cache_bound", 2000);
        let pgward = start_cached("max_size = \"256kB\"\nmax_entry_size = \"64kB\"");
        let client = pgward.connect().await;
        until_serving(&pgward, &client).await;
        // 200 distinct results of about 4 kB each: far more than 256 kB.
        for i in 0..200 {
            let sql = format!(
                "SELECT k, v, repeat('x', 40) FROM cache_bound WHERE k > {} AND k <= {}",
                i * 10,
                i * 10 + 60
            );
            client.simple_query(&sql).await.unwrap();
            let bytes = metric(&metrics(&pgward), "pgward_cache_bytes");
            assert!(
                bytes <= 256.0 * 1024.0,
                "pgward_cache_bytes {bytes} after {i} results"
            );
        }
        assert!(metric(&metrics(&pgward), "pgward_cache_bytes") > 0.0);
        // A result above max_entry_size streams through and is never stored.
        let big = "SELECT k, repeat('y', 100) AS big_marker FROM cache_bound";
        let before = server_calls("big_marker");
        client.simple_query(big).await.unwrap();
        client.simple_query(big).await.unwrap();
        assert_eq!(server_calls("big_marker") - before, 2);
    })
    .await;
}

#[tokio::test]
async fn concurrent_identical_misses_run_once() {
    deadline(LIMIT, async {
        create_kv("cache_slow", 3000);
        let pgward = start_cached("");
        let client = pgward.connect().await;
        until_serving(&pgward, &client).await;
        // About half a second of work on the server, and cacheable.
        let slow = "SELECT count(*) FROM cache_slow a, cache_slow b WHERE a.v + b.v = 3001";
        let before = server_calls("cache_slow a, cache_slow b");
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(pgward.connect().await);
        }
        let runs = clients.iter().map(|c| value(c, slow));
        let answers = futures_util::future::join_all(runs).await;
        assert!(answers.iter().all(|a| a == "3000"), "{answers:?}");
        assert_eq!(server_calls("cache_slow a, cache_slow b") - before, 1);
    })
    .await;
}

#[tokio::test]
async fn the_admin_console_flushes_the_cache() {
    deadline(LIMIT, async {
        create_kv("cache_admin", 3);
        let pgward = start_config(
            ProxyConfig::transaction(4)
                .user(ProxyUser::new("admin", "admin-pw").backend(USER, Some(PASSWORD)))
                .extra(&cache_toml("")),
        );
        let client = pgward.connect().await;
        until_serving(&pgward, &client).await;
        let read = "SELECT v FROM cache_admin WHERE k = 1";
        assert_eq!(value(&client, read).await, "1");
        // Behind pgward's back: the cache cannot know until it is flushed (or the TTL ends).
        admin_psql(DATABASE, "UPDATE cache_admin SET v = 5 WHERE k = 1");
        assert_eq!(value(&client, read).await, "1");
        pg_client("psql", &pgward)
            .env("PGUSER", "admin")
            .env("PGPASSWORD", "admin-pw")
            .env("PGDATABASE", "pgward")
            .args(["-c", "CACHE FLUSH public.cache_admin"])
            .output()
            .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
            .expect("psql runs");
        assert_eq!(value(&client, read).await, "5");
    })
    .await;
}
