//! Operations: the metric catalogue after a known workload, and the admin console through
//! psql (SHOW, PAUSE/RESUME, RELOAD, KILL, refusals).

mod common;

use std::time::Duration;

use common::*;

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-pw";

fn config(pool_size: usize) -> ProxyConfig {
    ProxyConfig::transaction(pool_size)
        .admin()
        .user(ProxyUser::new(ADMIN, ADMIN_PASSWORD).backend(USER, Some(PASSWORD)))
}

/// psql on the admin console (`-A`, with the header line), as `user`.
fn console_as(pgward: &Pgward, user: &str, password: &str, sql: &str) -> Finished {
    let mut command = pg_client("psql", pgward);
    command
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", "pgward")
        .args(["-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    run_program(&mut command, Duration::from_secs(40))
}

fn console(pgward: &Pgward, sql: &str) -> Vec<Vec<String>> {
    let out = console_as(pgward, ADMIN, ADMIN_PASSWORD, sql).expect_success(sql);
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('(') && !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

fn scrape(pgward_admin_port: u16) -> String {
    let (status, body) = http_get(pgward_admin_port, "/metrics");
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    let config = config(4);
    let port = config.admin_port.expect("admin endpoint");
    let pgward = config.start();
    deadline(Duration::from_secs(60), async {
        let client = pgward.connect().await;
        client
            .simple_query("CREATE TABLE IF NOT EXISTS ops_t (x int)")
            .await
            .unwrap();
        let before = scrape(port);
        assert_eq!(
            metric(&before, "pgward_client_connections{state=\"idle\"}"),
            1.0
        );
        let (selects, inserts, errors) = (7, 4, 3);
        for i in 0..selects {
            client.simple_query(&format!("SELECT {i}")).await.unwrap();
        }
        for i in 0..inserts {
            client
                .simple_query(&format!("INSERT INTO ops_t VALUES ({i})"))
                .await
                .unwrap();
        }
        for _ in 0..errors {
            assert!(client.simple_query("SELECT 1/0").await.is_err());
        }
        // A client may see an error before pgward has relayed the ReadyForQuery that ends
        // its request (where the duration is recorded): one more round trip settles them.
        client.simple_query("SELECT 'settled'").await.unwrap();
        let after = scrape(port);
        let delta = |sample: &str| metric(&after, sample) - metric(&before, sample);
        let requests = f64::from(selects + inserts + errors + 1);
        assert_eq!(delta("pgward_queries_total{route=\"primary\"}"), requests);
        assert_eq!(delta("pgward_query_duration_seconds_count"), requests);
        assert_eq!(
            delta("pgward_errors_total{class=\"22\"}"),
            f64::from(errors)
        );
        assert!(delta("pgward_bytes_total{direction=\"received\"}") > 0.0);
        assert!(delta("pgward_bytes_total{direction=\"sent\"}") > 0.0);
        assert_eq!(
            metric(
                &after,
                "pgward_server_connections{backend=\"primary\",state=\"idle\"}"
            ),
            1.0
        );

        // A wrong password counts as an auth failure; a console-killed client and a dropped
        // one both leave the gauges.
        assert!(pgward.try_connect_as(USER, "wrong").await.is_err());
        let other = pgward.connect().await;
        let id = console(&pgward, "SHOW CLIENTS")
            .into_iter()
            .filter(|row| row.get(2).map(String::as_str) == Some(USER))
            .map(|row| row[1].clone())
            .max_by_key(|id| id.parse::<u64>().unwrap_or(0))
            .expect("a client row");
        console(&pgward, &format!("KILL {id}"));
        let e = other.simple_query("SELECT 1").await.unwrap_err();
        assert!(e.is_closed() || sqlstate(&e) == Some("57P01"), "{e}");
        drop(client);
        let ended = async {
            loop {
                let now = scrape(port);
                let total: f64 = ["idle", "active", "waiting"]
                    .iter()
                    .map(|s| metric(&now, &format!("pgward_client_connections{{state=\"{s}\"}}")))
                    .sum();
                if total == 0.0 {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let now = tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("client gauges return to 0");
        assert_eq!(metric(&now, "pgward_auth_failures_total"), 1.0);
    })
    .await;
}

#[test]
fn console_shows_what_pgward_holds() {
    let pgward = config(3).start();
    // Some traffic first, so there are pools and statistics to show.
    let mut app = psql(&pgward);
    app.args(["-c", "SELECT 1"]);
    run_program(&mut app, Duration::from_secs(30)).expect_success("psql");
    let header = |sql: &str| console(&pgward, sql).into_iter().next().unwrap_or_default();
    assert_eq!(
        header("SHOW POOLS"),
        [
            "database",
            "user",
            "backend",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "pool_size",
            "pool_mode"
        ]
    );
    let pools = console(&pgward, "SHOW POOLS");
    assert_eq!(pools[1][..3], ["appdb", USER, "primary"]);
    assert_eq!(pools[1][7], "3");
    assert_eq!(pools[1][8], "transaction");
    assert_eq!(
        header("SHOW CLIENTS")[..5],
        ["type", "id", "user", "database", "state"]
    );
    let clients = console(&pgward, "SHOW CLIENTS");
    assert!(
        clients.iter().any(|r| r[2] == ADMIN && r[3] == "pgward"),
        "{clients:?}"
    );
    assert_eq!(
        header("SHOW SERVERS")[..4],
        ["type", "user", "database", "state"]
    );
    let servers = console(&pgward, "SHOW SERVERS");
    assert!(
        servers.iter().any(|r| r[3] == "idle" && r[4] == "primary"),
        "{servers:?}"
    );
    let stats = console(&pgward, "SHOW STATS");
    assert_eq!(
        stats[0][..3],
        ["database", "total_xact_count", "total_query_count"]
    );
    let appdb = stats.iter().find(|r| r[0] == "appdb").expect("appdb stats");
    assert!(appdb[2].parse::<u64>().unwrap() >= 1);
    let backends = console(&pgward, "SHOW BACKENDS");
    assert_eq!(
        backends[0][..6],
        ["name", "host", "port", "role", "acting_as", "health"]
    );
    assert_eq!(backends[1][0], "primary");
    assert_eq!(backends[1][5], "up");
    let config_rows = console(&pgward, "SHOW CONFIG");
    assert!(config_rows
        .iter()
        .any(|r| r[0] == "pool.size" && r[1] == "3"));
    let users = console(&pgward, "SHOW USERS");
    assert!(users.iter().any(|r| r[0] == ADMIN && r[2] == "true"));
    assert!(console(&pgward, "SHOW VERSION")[1][0].starts_with("pgward "));

    // Unknown commands get 42601 with the list of commands; other users are refused.
    let unknown = console_as(&pgward, ADMIN, ADMIN_PASSWORD, "SHOW NONSENSE");
    assert!(!unknown.status.success());
    assert!(
        unknown.stderr.contains("unknown admin command"),
        "{}",
        unknown.stderr
    );
    assert!(
        unknown.stderr.contains("HINT:  commands: SHOW POOLS"),
        "{}",
        unknown.stderr
    );
    let refused = console_as(&pgward, USER, PASSWORD, "SHOW POOLS");
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("is not an admin user"),
        "{}",
        refused.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_queries_until_resume() {
    let pgward = config(2).start();
    deadline(Duration::from_secs(60), async {
        let client = pgward.connect().await;
        assert_eq!(simple_value(&client, "SELECT 1").await, "1");
        assert!(console_as(&pgward, ADMIN, ADMIN_PASSWORD, "PAUSE")
            .status
            .success());
        let held = tokio::spawn(async move { simple_value(&client, "SELECT 2").await });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!held.is_finished(), "a query ran while paused");
        assert!(console_as(&pgward, ADMIN, ADMIN_PASSWORD, "RESUME")
            .status
            .success());
        assert_eq!(held.await.unwrap(), "2", "the held query runs after RESUME");
    })
    .await;
}

/// `client`'s next statement finds the pool full and gets 53300; returns how long it waited.
async fn gets_pool_timeout(client: &tokio_postgres::Client) -> Duration {
    let started = std::time::Instant::now();
    let err = client
        .simple_query("SELECT 1")
        .await
        .expect_err("the pool is full");
    assert_eq!(sqlstate(&err), Some("53300"), "{err}");
    started.elapsed()
}

/// A reload resizes a busy pool: a larger size serves a waiting client at once, a smaller
/// one holds once the leases over it come back, and a shorter `checkout_timeout` applies to
/// the next wait even while an earlier, longer one is pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resizes_a_busy_pool() {
    let mut config = config(1).checkout_timeout("60s");
    let port = config.admin_port.expect("admin endpoint");
    let pgward = config.start();
    let waiting = |n: f64| async move {
        let sample = "pgward_client_connections{state=\"waiting\"}";
        while metric(&scrape(port), sample) != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    deadline(Duration::from_secs(60), async {
        // All log in first: a login needs a server connection too.
        let first = pgward.connect().await;
        let second = pgward.connect().await;
        let third = pgward.connect().await;
        first.batch_execute("BEGIN; SELECT 1").await.unwrap();
        let query = tokio::spawn(async move {
            second.batch_execute("BEGIN").await.unwrap();
            second
        });
        waiting(1.0).await;

        // Size 2: the waiting client gets the new place while the first still holds its own.
        config.pool_size = 2;
        pgward.write_config(&config.toml());
        console(&pgward, "RELOAD");
        let second = query.await.unwrap();
        assert_eq!(console(&pgward, "SHOW POOLS")[1][7], "2");

        // Back to 1, with a 1s wait: both places stay leased until their transactions end.
        config.pool_size = 1;
        let shrunk = config.clone().checkout_timeout("1s");
        pgward.write_config(&shrunk.toml());
        console(&pgward, "RELOAD");
        second.batch_execute("COMMIT").await.unwrap();
        // One place is still leased (the first's), and the pool has one: the third waits.
        let waited = gets_pool_timeout(&third).await;
        assert!(
            waited < Duration::from_secs(30),
            "waited {waited:?}: the reloaded checkout_timeout is 1s"
        );

        // A wait under the long timeout, then one under a short one: the short one ends first.
        pgward.write_config(&config.clone().checkout_timeout("40s").toml());
        console(&pgward, "RELOAD");
        let long = tokio::spawn(async move {
            let result = simple_value(&second, "SELECT 'long wait served'").await;
            (result, second)
        });
        waiting(1.0).await;
        pgward.write_config(&shrunk.toml());
        console(&pgward, "RELOAD");
        let waited = gets_pool_timeout(&third).await;
        assert!(
            waited < Duration::from_secs(20),
            "waited {waited:?}, past the 1s checkout_timeout, behind the 40s wait"
        );
        assert!(!long.is_finished(), "the long wait is still pending");

        // The first's place goes to the long wait, and then the pool serves everyone.
        first.batch_execute("COMMIT").await.unwrap();
        let (result, _second) = long.await.unwrap();
        assert_eq!(result, "long wait served");
        assert_eq!(simple_value(&third, "SELECT 'third'").await, "third");
        assert_eq!(simple_value(&first, "SELECT 'first'").await, "first");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_held_by_pause_can_be_cancelled() {
    let config = config(2);
    let port = config.admin_port.expect("admin endpoint");
    let pgward = config.start();
    deadline(Duration::from_secs(60), async {
        let client = pgward.connect().await;
        let token = client.cancel_token();
        assert!(console_as(&pgward, ADMIN, ADMIN_PASSWORD, "PAUSE")
            .status
            .success());
        let held = tokio::spawn(async move {
            let result = client.simple_query("SELECT 2").await;
            (result, client)
        });
        while metric(
            &scrape(port),
            "pgward_client_connections{state=\"waiting\"}",
        ) != 1.0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("sending the cancel request");
        let (result, client) = held.await.unwrap();
        let err = result.expect_err("the held query must be cancelled");
        assert_eq!(sqlstate(&err), Some("57014"), "{err}");
        assert!(console_as(&pgward, ADMIN, ADMIN_PASSWORD, "RESUME")
            .status
            .success());
        assert_eq!(simple_value(&client, "SELECT 3").await, "3");
    })
    .await;
}

#[test]
fn reload_through_the_console_applies_a_pool_size_and_reports_errors() {
    let mut config = config(2);
    let pgward = config.start();
    let mut app = psql(&pgward);
    app.args(["-c", "SELECT 1"]);
    run_program(&mut app, Duration::from_secs(30)).expect_success("psql");
    assert_eq!(console(&pgward, "SHOW POOLS")[1][7], "2");
    config.pool_size = 5;
    pgward.write_config(&config.toml());
    console(&pgward, "RELOAD");
    assert_eq!(console(&pgward, "SHOW POOLS")[1][7], "5");

    pgward.write_config("[server]\nlisten = \"nonsense\"\n");
    let failed = console_as(&pgward, ADMIN, ADMIN_PASSWORD, "RELOAD");
    assert!(!failed.status.success());
    assert!(failed.stderr.contains("reload failed"), "{}", failed.stderr);
    // Still serving, with the running config.
    assert_eq!(console(&pgward, "SHOW POOLS")[1][7], "5");
    let mut app = psql(&pgward);
    app.args(["-c", "SELECT 1"]);
    run_program(&mut app, Duration::from_secs(30)).expect_success("psql after a failed reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_keeps_serving() {
    let config = config(2);
    let port = config.admin_port.expect("admin endpoint");
    let pgward = config.start();
    let client = pgward.connect().await;
    pgward.write_config("[pool]\nmode = \"sideways\"\n");
    pgward.sighup_until("reload failed");
    assert_eq!(simple_value(&client, "SELECT 7").await, "7");
    let newcomer = pgward.connect().await;
    assert_eq!(simple_value(&newcomer, "SELECT 8").await, "8");
    let body = scrape(port);
    assert_eq!(
        metric(&body, "pgward_reloads_total{result=\"failure\"}"),
        1.0
    );
    assert_eq!(
        metric(&body, "pgward_reloads_total{result=\"success\"}"),
        0.0
    );
}

/// `server.worker_threads` is how many threads serve clients (the log says so), and a single
/// thread still serves clients side by side: one client's slow query holds up no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_sets_the_threads_that_serve_clients() {
    for threads in [1, 3] {
        let pgward = config(2)
            .server(&format!("worker_threads = {threads}\n"))
            .start();
        // The line follows the listener's bind, so a client may get in before it is written.
        let said = format!("worker_threads={threads}\n");
        let started = std::time::Instant::now();
        while !pgward.log().contains("pgward listening")
            && started.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            pgward.log().contains(&said),
            "the log does not say {threads} worker threads:\n{}",
            pgward.log()
        );
        deadline(Duration::from_secs(60), async {
            let slow = pgward.connect().await;
            let quick = pgward.connect().await;
            let sleeping =
                tokio::spawn(async move { simple_value(&slow, "SELECT pg_sleep(3)::text").await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(simple_value(&quick, "SELECT 7").await, "7");
            assert!(
                !sleeping.is_finished(),
                "the other client's answer waited for the slow query ({threads} threads)"
            );
            assert_eq!(sleeping.await.unwrap(), "");
        })
        .await;
    }
}
