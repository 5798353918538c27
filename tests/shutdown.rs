//! SIGTERM drains: pgward stops accepting, lets an open transaction finish, tells idle clients
//! it is shutting down (57P01) and exits.

mod common;

use std::time::Duration;

use common::{deadline, direct_postgres, sqlstate, ProxyConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_finish_then_exits() {
    let pgward = ProxyConfig::transaction(2).start();
    let pgward = deadline(Duration::from_secs(60), async move {
        let in_tx = pgward.connect().await;
        let idle = pgward.connect().await;
        in_tx
            .batch_execute("CREATE TABLE sd_drain (v int); BEGIN; INSERT INTO sd_drain VALUES (1)")
            .await
            .unwrap();

        pgward.sigterm();
        tokio::time::sleep(Duration::from_millis(500)).await;

        assert!(
            pgward.try_connect_as("app", "app-secret").await.is_err(),
            "a new client is refused while draining"
        );
        let err = idle
            .simple_query("SELECT 1")
            .await
            .expect_err("idle client is closed");
        assert!(
            sqlstate(&err) == Some("57P01") || err.is_closed(),
            "idle client sees the shutdown: {err}"
        );

        // The open transaction still completes, and its rows are committed.
        in_tx
            .batch_execute("INSERT INTO sd_drain VALUES (2); COMMIT")
            .await
            .unwrap();
        let direct = direct_postgres().await;
        let n: i64 = direct
            .query_one("SELECT count(*) FROM sd_drain", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2);
        drop(in_tx);
        pgward
    })
    .await;
    let mut pgward = pgward;
    let status = pgward.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "pgward exits cleanly once drained: {status:?}\n{}",
        pgward.log()
    );
}
