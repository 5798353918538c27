//! The drivers applications use most, each running a small application of its own through
//! pgward in transaction mode (a pool of 2, so clients share server connections), and the same
//! application `_directly` against PostgreSQL, so a failure through pgward is pgward's and
//! not the script's. libpq (psql, pgbench), psycopg and tokio-postgres have their own test
//! files; these are asyncpg (tests/py/asyncpg_app.py), node-postgres
//! (tests/js/node_postgres_app.js), pgJDBC (tests/java/PgJdbcApp.java), pgx
//! (tests/go/pgx_app.go) and sqlx (`sqlx_app` below). What each
//! application does is in its file: typed parameters in text and binary formats, named
//! statements reused across transactions, transactions, errors, savepoints, cursors, COPY,
//! SET, catalog introspection, cancels and timeouts, LISTEN/NOTIFY.
//!
//! Drivers come from PyPI and npm (installed once per target folder) and from Debian
//! (pgJDBC: `libpostgresql-jdbc-java`; pgx v4: `golang-github-jackc-pgx-v4-dev`, built with
//! `golang-go`); a missing one fails the test, naming what to install.

mod common;

use std::time::Duration;

use common::{
    primary_port, py_script, run_go, run_java, run_node, run_python, Pgward, ProxyConfig, DATABASE,
    PASSWORD, USER,
};

const LIMIT: Duration = Duration::from_secs(180);

fn uri(port: u16) -> String {
    format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}")
}

fn pgward() -> Pgward {
    ProxyConfig::transaction(2).start()
}

/// pgward with an access policy that allows `app` everything: every statement a driver
/// sends must then be analysed (asyncpg's pool reset, its LISTEN as a prepared statement).
fn pgward_with_policy(dir: &tempfile::TempDir) -> Pgward {
    let model = dir.path().join("model.conf");
    let policy = dir.path().join("policy.csv");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/model.conf"),
        &model,
    )
    .expect("copy the policy model");
    let actions = [
        "select", "insert", "update", "delete", "truncate", "ddl", "admin",
    ];
    let lines: String = actions
        .iter()
        .map(|a| format!("p, {USER}, *, *, *, {a}, allow\n"))
        .collect();
    std::fs::write(&policy, lines).expect("write the policy");
    let q = |p: &std::path::Path| toml::Value::String(p.to_string_lossy().into()).to_string();
    ProxyConfig::transaction(2)
        .extra(&format!(
            "\n[policy]\nenabled = true\nmodel = {}\npolicy = {}\n",
            q(&model),
            q(&policy)
        ))
        .start()
}

fn asyncpg(port: u16, tag: &str) {
    run_python(&py_script("asyncpg_app.py"), &[&uri(port), tag], LIMIT)
        .expect_success(&format!("asyncpg_app.py ({tag})"));
}

#[test]
fn asyncpg_through_pgward() {
    let pgward = pgward();
    asyncpg(pgward.port, "pw");
}

#[test]
fn asyncpg_through_pgward_with_the_policy_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pgward = pgward_with_policy(&dir);
    asyncpg(pgward.port, "pol");
}

#[test]
fn asyncpg_directly() {
    asyncpg(primary_port(), "pg");
}

fn node_postgres(port: u16, tag: &str) {
    run_node("node_postgres_app.js", &[&uri(port), tag], LIMIT)
        .expect_success(&format!("node_postgres_app.js ({tag})"));
}

#[test]
fn node_postgres_through_pgward() {
    let pgward = pgward();
    node_postgres(pgward.port, "pw");
}

#[test]
fn node_postgres_directly() {
    node_postgres(primary_port(), "pg");
}

fn pgjdbc(port: u16, tag: &str) {
    let url = format!("jdbc:postgresql://127.0.0.1:{port}/{DATABASE}");
    run_java("PgJdbcApp", &[&url, USER, PASSWORD, tag], LIMIT)
        .expect_success(&format!("PgJdbcApp ({tag})"));
}

#[test]
fn pgjdbc_through_pgward() {
    let pgward = pgward();
    pgjdbc(pgward.port, "pw");
}

#[test]
fn pgjdbc_directly() {
    pgjdbc(primary_port(), "pg");
}

fn pgx(port: u16, tag: &str) {
    run_go(&[&uri(port), tag], LIMIT).expect_success(&format!("pgx_app ({tag})"));
}

#[test]
fn pgx_through_pgward() {
    let pgward = pgward();
    pgx(pgward.port, "pw");
}

#[test]
fn pgx_through_pgward_with_the_policy_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pgward = pgward_with_policy(&dir);
    pgx(pgward.port, "pol");
}

#[test]
fn pgx_directly() {
    pgx(primary_port(), "pg");
}

/// An sqlx application, in the style of the scripts above: a pool of 10 shared by 40 tasks,
/// typed binds and results through sqlx's statement cache, transactions with a savepoint,
/// 23505, several statements in one `raw_sql`, a streamed read, COPY in and out, a
/// statement timeout, and `PgListener`.
async fn sqlx_app(port: u16, tag: &str) {
    use futures_util::TryStreamExt;
    use sqlx::postgres::{PgListener, PgPoolOptions};
    use sqlx::Row;

    let table = format!("sqlx_t_{tag}");
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&uri(port))
        .await
        .expect("sqlx pool");
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table}(id int PRIMARY KEY, v text)"
    ))
    .execute(&pool)
    .await
    .expect("create the table");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40i32 {
        let (pool, table) = (pool.clone(), table.clone());
        tasks.spawn(async move {
            let json = serde_json::json!({ "k": i });
            for _ in 0..3 {
                // The same text each time: a statement sqlx prepared once, reused.
                let row: (
                    i32,
                    String,
                    sqlx::types::Json<serde_json::Value>,
                    i64,
                    Vec<i32>,
                    Vec<u8>,
                ) = sqlx::query_as(
                    "SELECT $1::int + 1, $2::text, $3::jsonb, $4::int8, $5::int4[], $6::bytea",
                )
                .bind(i)
                .bind(format!("t{i}"))
                .bind(sqlx::types::Json(&json))
                .bind(5i64)
                .bind(vec![1, i])
                .bind(vec![0u8, 1, 2])
                .fetch_one(&pool)
                .await
                .expect("typed round trip");
                assert_eq!(row.0, i + 1);
                assert_eq!(row.1, format!("t{i}"));
                assert_eq!(row.2 .0, json);
                assert_eq!((row.3, row.4, row.5), (5, vec![1, i], vec![0, 1, 2]));
            }
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(&format!("INSERT INTO {table}(id, v) VALUES ($1, $2)"))
                .bind(i)
                .bind(format!("v{i}"))
                .execute(&mut *tx)
                .await
                .expect("insert");
            let v: String = sqlx::query_scalar(&format!("SELECT v FROM {table} WHERE id = $1"))
                .bind(i)
                .fetch_one(&mut *tx)
                .await
                .expect("read own write");
            assert_eq!(v, format!("v{i}"));
            let mut savepoint = sqlx::Acquire::begin(&mut *tx).await.expect("savepoint");
            let duplicate = sqlx::query(&format!("INSERT INTO {table}(id, v) VALUES ($1, 'dup')"))
                .bind(i)
                .execute(&mut *savepoint)
                .await
                .expect_err("a duplicate key");
            let code = duplicate
                .as_database_error()
                .and_then(|e| e.code().map(|c| c.into_owned()));
            assert_eq!(code.as_deref(), Some("23505"), "{duplicate}");
            savepoint.rollback().await.expect("rollback to savepoint");
            tx.commit().await.expect("commit");

            // Not prepared (an unnamed statement), and several statements in one query.
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE id = $1"))
                .bind(i)
                .persistent(false)
                .fetch_one(&pool)
                .await
                .expect("unnamed statement");
            assert_eq!(n, 1);
            let rows = sqlx::raw_sql("SELECT 1 AS a; SELECT 2 AS b")
                .fetch_all(&pool)
                .await
                .expect("two statements in one query");
            assert_eq!(rows.len(), 2);
            assert_eq!(rows[1].get::<i32, _>("b"), 2);

            let mut series = sqlx::query("SELECT g FROM generate_series(1, 250) g").fetch(&pool);
            let mut count = 0;
            while let Some(row) = series.try_next().await.expect("series") {
                count += 1;
                assert_eq!(row.get::<i32, _>(0), count);
            }
            assert_eq!(count, 250);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a task failed");
    }

    // COPY in and out on one connection.
    let mut conn = pool.acquire().await.expect("acquire");
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table}(id, v) FROM STDIN"))
        .await
        .expect("copy in");
    let data: String = (0..1000).map(|k| format!("{}\tc{k}\n", 1000 + k)).collect();
    copy.send(data.as_bytes()).await.expect("copy data");
    assert_eq!(copy.finish().await.expect("copy done"), 1000);
    let out: Vec<u8> = conn
        .copy_out_raw(&format!(
            "COPY (SELECT v FROM {table} WHERE id >= 1000 ORDER BY id) TO STDOUT"
        ))
        .await
        .expect("copy out")
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .expect("copy out data");
    let lines: Vec<&str> = std::str::from_utf8(&out).expect("utf-8").lines().collect();
    assert_eq!((lines.len(), lines[0], lines[999]), (1000, "c0", "c999"));

    // A statement timeout for one transaction: 57014, and the connection stays usable.
    let mut tx = sqlx::Acquire::begin(&mut *conn).await.expect("begin");
    sqlx::query("SET LOCAL statement_timeout = '100ms'")
        .execute(&mut *tx)
        .await
        .expect("set local");
    let timeout = sqlx::query("SELECT pg_sleep(5)")
        .execute(&mut *tx)
        .await
        .expect_err("a statement timeout");
    let code = timeout
        .as_database_error()
        .and_then(|e| e.code().map(|c| c.into_owned()));
    assert_eq!(code.as_deref(), Some("57014"), "{timeout}");
    tx.rollback().await.expect("rollback");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *conn)
        .await
        .expect("after");
    assert_eq!(one, 1);
    drop(conn);

    // LISTEN on a connection of its own (PgListener), NOTIFY through the pool.
    let channel = format!("sqlx_ch_{tag}");
    let mut listener = PgListener::connect_with(&pool).await.expect("listener");
    listener.listen(&channel).await.expect("listen");
    sqlx::query("SELECT pg_notify($1, 'hello')")
        .bind(&channel)
        .execute(&pool)
        .await
        .expect("notify");
    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .expect("recv");
    assert_eq!(
        (notification.channel(), notification.payload()),
        (channel.as_str(), "hello")
    );
    listener.unlisten_all().await.expect("unlisten");
    drop(listener);

    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .expect("drop the table");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_through_pgward() {
    let pgward = pgward();
    tokio::time::timeout(LIMIT, sqlx_app(pgward.port, "pw"))
        .await
        .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_through_pgward_with_the_policy_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pgward = pgward_with_policy(&dir);
    tokio::time::timeout(LIMIT, sqlx_app(pgward.port, "pol"))
        .await
        .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_directly() {
    tokio::time::timeout(LIMIT, sqlx_app(primary_port(), "pg"))
        .await
        .expect("within the limit");
}
