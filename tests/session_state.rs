//! Session state in transaction mode: a client's SET follows that client from server
//! connection to server connection, and never leaks to another client sharing the pool.
//! Every test uses a pool of one connection, so the two clients always share it.

mod common;

use std::time::Duration;

use common::{admin_psql, deadline, show, simple_value, sqlstate, ProxyConfig};

const LIMIT: Duration = Duration::from_secs(120);
const ROUNDS: usize = 10;

#[tokio::test]
async fn search_path_stays_with_its_client() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let a = pgward.connect().await;
        let b = pgward.connect().await;
        let default = show(&b, "search_path").await;
        assert_eq!(default, "\"$user\", public");

        a.batch_execute("CREATE SCHEMA ss_search_a").await.unwrap();
        a.batch_execute("SET search_path TO ss_search_a")
            .await
            .unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(show(&a, "search_path").await, "ss_search_a");
            assert_eq!(show(&b, "search_path").await, default);
        }
        // Inside explicit transactions, and with the extended protocol, too.
        a.batch_execute("BEGIN").await.unwrap();
        assert_eq!(show(&a, "search_path").await, "ss_search_a");
        a.batch_execute("COMMIT").await.unwrap();
        let row = a.query_one("SELECT current_schema()", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "ss_search_a");

        // What the setting is for: unqualified names resolve in A's schema only.
        a.batch_execute("CREATE TABLE ss_where (x int)")
            .await
            .unwrap();
        assert_eq!(
            simple_value(&b, "SELECT to_regclass('ss_search_a.ss_where') IS NOT NULL").await,
            "t"
        );
        assert_eq!(
            simple_value(&b, "SELECT to_regclass('public.ss_where') IS NULL").await,
            "t"
        );
        let err = b
            .simple_query("SELECT * FROM ss_where")
            .await
            .expect_err("B's search_path does not include ss_search_a");
        assert_eq!(sqlstate(&err), Some("42P01"), "{err}");

        a.batch_execute("RESET search_path").await.unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(show(&a, "search_path").await, default);
            assert_eq!(show(&b, "search_path").await, default);
        }
    })
    .await;
}

#[tokio::test]
async fn time_zone_stays_with_its_client() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let a = pgward.connect().await;
        let b = pgward.connect().await;
        let default = show(&b, "TimeZone").await;
        assert_ne!(
            default, "Pacific/Chatham",
            "pick a zone that is not the default"
        );

        // Set through the extended protocol, as drivers and ORMs often do.
        a.execute("SET TimeZone TO 'Pacific/Chatham'", &[])
            .await
            .unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(show(&a, "TimeZone").await, "Pacific/Chatham");
            assert_eq!(show(&b, "TimeZone").await, default);
        }
        // Chatham is 12:45 or 13:45 ahead of UTC; the offset shows in A's timestamps.
        let local = simple_value(&a, "SELECT '2024-01-01 00:00:00+00'::timestamptz::text").await;
        assert!(
            local.ends_with("+13:45") || local.ends_with("+12:45"),
            "{local}"
        );

        a.execute("RESET TimeZone", &[]).await.unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(show(&a, "TimeZone").await, default);
            assert_eq!(show(&b, "TimeZone").await, default);
        }

        // Set inside a function: nothing in the text A sends says SET, but PostgreSQL
        // reports the new TimeZone with a ParameterStatus.
        assert_ne!(
            default, "Asia/Kathmandu",
            "pick a zone that is not the default"
        );
        a.batch_execute(
            "CREATE FUNCTION ss_to_kathmandu() RETURNS void LANGUAGE plpgsql \
             AS $$ BEGIN SET TimeZone TO 'Asia/Kathmandu'; END $$",
        )
        .await
        .unwrap();
        a.execute("SELECT ss_to_kathmandu()", &[]).await.unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(show(&a, "TimeZone").await, "Asia/Kathmandu");
            assert_eq!(show(&b, "TimeZone").await, default);
        }
    })
    .await;
}

#[tokio::test]
async fn statement_timeout_stays_with_its_client() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let a = pgward.connect().await;
        let b = pgward.connect().await;
        assert_eq!(show(&b, "statement_timeout").await, "0");

        a.batch_execute("SET statement_timeout = '300ms'")
            .await
            .unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(show(&a, "statement_timeout").await, "300ms");
            assert_eq!(show(&b, "statement_timeout").await, "0");
        }
        let err = a
            .simple_query("SELECT pg_sleep(2)")
            .await
            .expect_err("A's statement_timeout cancels the sleep");
        assert_eq!(sqlstate(&err), Some("57014"), "{err}");
        b.simple_query("SELECT pg_sleep(0.6)").await.unwrap();

        a.batch_execute("RESET statement_timeout").await.unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(show(&a, "statement_timeout").await, "0");
            assert_eq!(show(&b, "statement_timeout").await, "0");
        }
        a.simple_query("SELECT pg_sleep(0.6)").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn transaction_scoped_settings_end_with_the_transaction() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let a = pgward.connect().await;
        let b = pgward.connect().await;
        let default = show(&b, "TimeZone").await;

        // SET LOCAL lasts until the end of the transaction only.
        a.batch_execute("BEGIN; SET LOCAL TimeZone TO 'Asia/Kathmandu'")
            .await
            .unwrap();
        assert_eq!(show(&a, "TimeZone").await, "Asia/Kathmandu");
        a.batch_execute("COMMIT").await.unwrap();
        assert_eq!(show(&a, "TimeZone").await, default);
        assert_eq!(show(&b, "TimeZone").await, default);

        // A plain SET is undone by ROLLBACK, as in PostgreSQL.
        a.batch_execute("BEGIN; SET TimeZone TO 'Asia/Kathmandu'")
            .await
            .unwrap();
        a.batch_execute("ROLLBACK").await.unwrap();
        for _ in 0..3 {
            assert_eq!(show(&a, "TimeZone").await, default);
            assert_eq!(show(&b, "TimeZone").await, default);
        }

        // ...and kept by COMMIT.
        a.batch_execute("BEGIN; SET TimeZone TO 'Asia/Kathmandu'; COMMIT")
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(show(&a, "TimeZone").await, "Asia/Kathmandu");
            assert_eq!(show(&b, "TimeZone").await, default);
        }
    })
    .await;
}

/// Startup parameters are the client's reset values, as PostgreSQL makes them: RESET,
/// RESET ALL and DISCARD ALL return to them, not to the server's defaults; a SET since holds
/// until it is reset.
#[tokio::test]
async fn reset_returns_to_the_startup_values() {
    for mode in ["transaction", "session"] {
        let pgward = common::ProxyConfig::new(mode, 2).start();
        deadline(LIMIT, async {
            let mut config = pgward.client_config(common::USER, common::PASSWORD);
            config.options("-c DateStyle=Postgres,MDY -c extra_float_digits=1");
            let client = common::connect_with(&config).await.unwrap();
            let startup = "Postgres, MDY";
            assert_eq!(show(&client, "DateStyle").await, startup, "{mode}");
            for reset in ["RESET DateStyle", "RESET ALL", "DISCARD ALL"] {
                client
                    .batch_execute("SET DateStyle = ISO, DMY")
                    .await
                    .unwrap();
                client
                    .batch_execute("SET extra_float_digits = 2")
                    .await
                    .unwrap();
                assert_eq!(show(&client, "DateStyle").await, "ISO, DMY", "{mode}");
                client.batch_execute(reset).await.unwrap();
                assert_eq!(show(&client, "DateStyle").await, startup, "{mode} {reset}");
                let digits = if reset == "RESET DateStyle" { "2" } else { "1" };
                assert_eq!(
                    show(&client, "extra_float_digits").await,
                    digits,
                    "{mode} {reset}"
                );
            }
            // Another client of the same pool gets the server's default.
            let other = pgward.connect().await;
            assert_eq!(show(&other, "DateStyle").await, "ISO, MDY", "{mode}");
        })
        .await;
    }
}

/// `SET ROLE` is a setting PostgreSQL does not list in `pg_settings`; it is the one whose leak
/// would matter most: another client would run with the role's privileges.
#[tokio::test]
async fn set_role_stays_with_its_client() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let a = pgward.connect().await;
        let b = pgward.connect().await;
        let login = simple_value(&b, "SELECT current_user").await;
        admin_psql(
            "postgres",
            &format!(
                "DO $$ BEGIN CREATE ROLE ss_role_r NOLOGIN; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$; GRANT ss_role_r TO {login}"
            ),
        );
        a.batch_execute("SET ROLE ss_role_r").await.unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(simple_value(&a, "SELECT current_user").await, "ss_role_r");
            assert_eq!(simple_value(&b, "SELECT current_user").await, login);
            let row = b.query_one("SELECT current_user::text", &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), login);
        }
        // B's own SET LOCAL ROLE ends with its transaction; A keeps its role.
        b.batch_execute("BEGIN; SET LOCAL ROLE ss_role_r; COMMIT")
            .await
            .unwrap();
        assert_eq!(simple_value(&b, "SELECT current_user").await, login);
        assert_eq!(simple_value(&a, "SELECT current_user").await, "ss_role_r");
        // set_config() changes it as SET does.
        b.batch_execute("SELECT set_config('role', 'ss_role_r', false)")
            .await
            .unwrap();
        a.batch_execute("RESET ROLE").await.unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(simple_value(&a, "SELECT current_user").await, login);
            assert_eq!(simple_value(&b, "SELECT current_user").await, "ss_role_r");
        }
    })
    .await;
}

/// Custom settings (`app.tenant_id`), which `pg_settings` does not list: row-level security
/// keyed on one must never show a client another client's tenant. Set by SET, by set_config()
/// in the extended protocol and at startup; RESET reads as '' afterwards, as on one server.
#[tokio::test]
async fn custom_settings_stay_with_their_client() {
    let pgward = ProxyConfig::transaction(1).start();
    deadline(LIMIT, async {
        let mut config = pgward.client_config(common::USER, common::PASSWORD);
        config.options("-c app.origin=startup");
        let a = common::connect_with(&config).await.unwrap();
        let b = pgward.connect().await;
        let get = |name: &'static str| {
            format!("SELECT coalesce(current_setting('{name}', true), '<null>')")
        };
        a.batch_execute("SET app.tenant_id = '42'").await.unwrap();
        let row = a
            .query_one("SELECT set_config('app.user', $1, false)", &[&"alice"])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "alice");
        // Any other SET: the startup one must survive the read-back too.
        a.batch_execute("SET statement_timeout = '1min'")
            .await
            .unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(simple_value(&a, &get("app.tenant_id")).await, "42");
            assert_eq!(simple_value(&a, &get("app.user")).await, "alice");
            assert_eq!(simple_value(&a, &get("app.origin")).await, "startup");
            for name in ["app.tenant_id", "app.user", "app.origin"] {
                let seen = simple_value(&b, &get(name)).await;
                assert!(
                    seen == "<null>" || seen.is_empty(),
                    "B sees {name} = {seen}"
                );
            }
        }
        a.batch_execute("RESET app.tenant_id").await.unwrap();
        for _ in 0..ROUNDS {
            assert_eq!(simple_value(&a, &get("app.tenant_id")).await, "");
            assert_eq!(simple_value(&a, &get("app.user")).await, "alice");
            let seen = simple_value(&b, &get("app.user")).await;
            assert!(
                seen == "<null>" || seen.is_empty(),
                "B sees app.user = {seen}"
            );
        }
    })
    .await;
}

/// A set_config() whose setting is named by a parameter cannot be carried: the client keeps
/// its server connection, so no other client is given the setting.
#[tokio::test]
async fn a_setting_named_by_a_parameter_pins_its_client() {
    let pgward = ProxyConfig::transaction(2).start();
    deadline(LIMIT, async {
        let a = pgward.connect().await;
        let b = pgward.connect().await;
        a.query_one(
            "SELECT set_config($1, $2, false)",
            &[&"app.secret", &"a-only"],
        )
        .await
        .unwrap();
        for _ in 0..ROUNDS {
            let mine = simple_value(&a, "SELECT current_setting('app.secret', true)").await;
            assert_eq!(mine, "a-only");
            let seen = simple_value(
                &b,
                "SELECT coalesce(current_setting('app.secret', true), '')",
            )
            .await;
            assert_eq!(seen, "", "B was given A's connection");
        }
    })
    .await;
}
