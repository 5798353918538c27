//! The drivers applications use most, each running a small application of its own through
//! pgward in transaction mode (a pool of 2, so clients share server connections), and the same
//! application `_directly` against PostgreSQL, so a failure through pgward is pgward's and
//! not the script's. libpq (psql, pgbench), psycopg and tokio-postgres have their own test
//! files; these are asyncpg (tests/py/asyncpg_app.py), node-postgres
//! (tests/js/node_postgres_app.js), pgJDBC (tests/java/PgJdbcApp.java) and pgx
//! (tests/go/pgx_app.go). What each
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
