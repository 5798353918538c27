//! A server connection lost outside a transaction block (pg_terminate_backend) fails only the
//! request in flight: the client gets an ErrorResponse with the server's reason and stays
//! connected. Inside a transaction block (or when the request may have opened one) the
//! transaction is gone, and so is the client.

mod common;

use std::time::Duration;

use common::{deadline, direct_postgres, simple_value, sqlstate, ProxyConfig};
use tokio_postgres::Client;

const LIMIT: Duration = Duration::from_secs(120);

/// Terminates the backend running a query containing `marker` once it is running.
async fn terminate_running(marker: &str) {
    let direct = direct_postgres().await;
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    loop {
        if !direct.query(&sql, &[]).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn still_serves(client: &Client) {
    assert_eq!(simple_value(client, "SELECT 41 + 1").await, "42");
    let row = client.query_one("SELECT $1::int4 + 1", &[&1i32]).await;
    assert_eq!(row.unwrap().get::<_, i32>(0), 2);
}

#[tokio::test]
async fn a_terminated_server_fails_a_simple_query_and_the_client_goes_on() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        let marker = "server_loss_simple";
        let sleep = client.simple_query("SELECT pg_sleep(60) /* server_loss_simple */");
        let (result, ()) = tokio::join!(sleep, terminate_running(marker));
        let err = result.expect_err("the query's server was terminated");
        assert_eq!(sqlstate(&err), Some("57P01"), "{err}");
        assert!(!client.is_closed());
        still_serves(&client).await;
    })
    .await;
}

#[tokio::test]
async fn a_terminated_server_fails_an_extended_query_and_the_client_goes_on() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        let statement = client
            .prepare("SELECT pg_sleep($1::float8) /* server_loss_extended */")
            .await
            .unwrap();
        let sleep = client.query(&statement, &[&60f64]);
        let (result, ()) = tokio::join!(sleep, terminate_running("server_loss_extended"));
        let err = result.expect_err("the query's server was terminated");
        assert_eq!(sqlstate(&err), Some("57P01"), "{err}");
        still_serves(&client).await;
        // The prepared statement survives on the next server connection.
        let rows = client.query(&statement, &[&0f64]).await.unwrap();
        assert_eq!(rows.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_server_lost_inside_a_transaction_block_ends_the_client() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        client.batch_execute("BEGIN").await.unwrap();
        let sleep = client.simple_query("SELECT pg_sleep(60) /* server_loss_in_block */");
        let (result, ()) = tokio::join!(sleep, terminate_running("server_loss_in_block"));
        result.expect_err("the query's server was terminated");
        // The transaction is gone: no statement of it may seem to run on another server.
        client
            .simple_query("SELECT 1")
            .await
            .expect_err("the connection ends with its transaction");
    })
    .await;
}

#[tokio::test]
async fn a_server_lost_by_a_request_that_opens_a_block_ends_the_client() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        let sleep = client.simple_query("BEGIN; SELECT pg_sleep(60) /* server_loss_begins */");
        let (result, ()) = tokio::join!(sleep, terminate_running("server_loss_begins"));
        result.expect_err("the query's server was terminated");
        // Later requests may belong to the transaction that request opened.
        client
            .simple_query("SELECT 1")
            .await
            .expect_err("the connection ends with the transaction it may have opened");
    })
    .await;
}
