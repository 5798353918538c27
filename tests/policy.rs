//! Access policies through real clients (tokio-postgres, psql) against real PostgreSQL: who
//! may run what, at table, column and action level, in every protocol mode.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Every policy user logs in to PostgreSQL as `app`, which may do everything there: what
/// they may not do, only pgward's policy stops.
const USERS: &[&str] = &[
    "reader", "writer", "alice", "dev", "loader", "s2reader", "roler",
];

const MODEL: &str = include_str!("../policies/model.conf");

const POLICY: &str = "\
# readers read public; writers also write it; alice is a writer without the ssn column
p, reader, appdb, public.*, *, select, allow
p, reader, appdb, pg_catalog.*, *, select, allow
g, writer, reader
p, writer, appdb, public.*, *, insert, allow
p, writer, appdb, public.*, *, update, allow
p, writer, appdb, public.*, *, delete, allow
p, no_pii, *, public.customers, ssn, *, deny
g, alice, writer
g, alice, no_pii
p, ddl_user, appdb, public.*, *, ddl, allow
g, dev, writer
g, dev, ddl_user
p, loader, appdb, public.audit, *, insert, allow
p, loader, appdb, public.orders, *, select, allow
p, s2reader, appdb, s2.*, *, select, allow
p, no_pii, *, public.fresh_*, ssn, *, deny
";

/// The tables the tests read and write, made once per test binary as superuser.
fn schema() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        admin_psql(
            DATABASE,
            "CREATE TABLE public.customers (id int PRIMARY KEY, name text, ssn text);
             INSERT INTO public.customers VALUES (1, 'ann', '111-11-1111'), (2, 'bob', '222-22-2222');
             CREATE TABLE public.orders (id serial PRIMARY KEY, customer_id int, amount int);
             INSERT INTO public.orders (customer_id, amount) VALUES (1, 10), (2, 20);
             CREATE TABLE public.audit (id serial PRIMARY KEY, note text);
             CREATE SCHEMA s2;
             CREATE TABLE s2.customers (id int, secret text);
             INSERT INTO s2.customers VALUES (1, 's2-secret');
             CREATE SCHEMA vault;
             CREATE TABLE vault.keys (id int, k text);
             INSERT INTO vault.keys VALUES (1, 'key');
             GRANT ALL ON SCHEMA public, s2, vault TO app;
             GRANT ALL ON ALL TABLES IN SCHEMA public, s2, vault TO app;
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app;",
        );
    });
}

/// Model and policy files in a folder of their own.
struct PolicyFiles {
    dir: tempfile::TempDir,
}

impl PolicyFiles {
    fn new(policy: &str) -> PolicyFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("model.conf"), MODEL).expect("write model");
        std::fs::write(dir.path().join("policy.csv"), policy).expect("write policy");
        PolicyFiles { dir }
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.csv")
    }

    fn toml(&self, on_unparsed: &str) -> String {
        let q = |p: &Path| toml::Value::String(p.to_string_lossy().into()).to_string();
        format!(
            "\n[policy]\nenabled = true\nmodel = {}\npolicy = {}\non_unparsed = \"{on_unparsed}\"\n",
            q(&self.dir.path().join("model.conf")),
            q(&self.policy_path()),
        )
    }
}

fn config(mode: &str, files: &PolicyFiles, on_unparsed: &str) -> ProxyConfig {
    let mut config = ProxyConfig::new(mode, 4).extra(&files.toml(on_unparsed));
    for user in USERS {
        config = config.user(ProxyUser::new(user, "pw").backend(USER, Some(PASSWORD)));
    }
    config
}

fn start(mode: &str, on_unparsed: &str) -> (Pgward, PolicyFiles) {
    schema();
    let files = PolicyFiles::new(POLICY);
    let pgward = config(mode, &files, on_unparsed).start();
    (pgward, files)
}

/// The SQLSTATE and message of a failed statement, or "ok".
async fn outcome_simple(client: &Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => "ok".into(),
        Err(e) => describe(&e),
    }
}

async fn outcome_extended(client: &Client, sql: &str) -> String {
    match client.query(sql, &[]).await {
        Ok(_) => "ok".into(),
        Err(e) => describe(&e),
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => format!("client error: {e}"),
    }
}

fn denied(outcome: &str) -> bool {
    outcome.starts_with("42501 pgward: permission denied")
}

/// (user, statement, allowed) rows run in both protocols, outside and inside a transaction.
const MATRIX: &[(&str, &str, bool)] = &[
    ("reader", "SELECT id, name FROM customers", true),
    ("reader", "SELECT * FROM customers", true),
    ("reader", "SELECT count(*) FROM public.orders", true),
    ("reader", "INSERT INTO audit (note) VALUES ('r')", false),
    ("reader", "UPDATE orders SET amount = 1 WHERE id = -1", false),
    ("reader", "DELETE FROM audit WHERE id = -1", false),
    ("writer", "INSERT INTO audit (note) VALUES ('w')", true),
    ("writer", "SELECT ssn FROM customers", true),
    ("writer", "UPDATE orders SET amount = amount WHERE id = -1", true),
    ("writer", "CREATE TABLE public.not_allowed (x int)", false),
    ("writer", "TRUNCATE audit", false),
    // Column deny for alice (deny beats the allow she inherits as a writer).
    ("alice", "SELECT id, name FROM customers", true),
    ("alice", "SELECT ssn FROM customers", false),
    ("alice", "SELECT * FROM customers", false),
    ("alice", "SELECT c.* FROM customers c", false),
    ("alice", "SELECT id FROM customers WHERE ssn = '111-11-1111'", false),
    ("alice", "SELECT id FROM customers ORDER BY ssn", false),
    ("alice", "UPDATE customers SET name = name WHERE id = -1 RETURNING ssn", false),
    ("alice", "UPDATE customers SET name = name WHERE id = -1 RETURNING id", true),
    ("alice", "WITH c AS (SELECT ssn FROM customers) SELECT count(*) FROM c", false),
    ("alice", "SELECT (SELECT ssn FROM customers LIMIT 1)", false),
    ("alice", "SELECT o.id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.ssn IS NOT NULL)", false),
    ("alice", "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id", true),
    ("alice", "SELECT name FROM orders JOIN customers ON customers.id = customer_id ORDER BY ssn", false),
    ("alice", "INSERT INTO customers (id, name, ssn) VALUES (-5, 'x', 'y')", false),
    // A join across an allowed and a denied table.
    ("reader", "SELECT c.name FROM customers c JOIN vault.keys k ON k.id = c.id", false),
    ("reader", "SELECT name FROM customers WHERE id IN (SELECT id FROM vault.keys)", false),
    // DDL needs ddl.
    ("dev", "CREATE TABLE IF NOT EXISTS public.dev_table (x int)", true),
    ("reader", "DROP TABLE IF EXISTS public.dev_table", false),
    // INSERT ... SELECT: insert on one table, select on the other.
    ("loader", "INSERT INTO audit (note) SELECT amount::text FROM orders WHERE id = -1", true),
    ("loader", "INSERT INTO audit (note) SELECT name FROM customers WHERE id = -1", false),
    ("loader", "INSERT INTO orders (amount) SELECT amount FROM orders WHERE id = -1", false),
    // Names the search_path does not reach are not guessed at.
    ("s2reader", "SELECT secret FROM s2.customers", true),
    ("s2reader", "SELECT * FROM customers", false),
];

async fn run_matrix(pgward: &Pgward, extended: bool, in_transaction: bool) {
    let mut failures = Vec::new();
    for &(user, sql, allowed) in MATRIX {
        let client = pgward.connect_as(user, "pw").await;
        if in_transaction {
            client.simple_query("BEGIN").await.expect("BEGIN");
        }
        let outcome = if extended {
            outcome_extended(&client, sql).await
        } else {
            outcome_simple(&client, sql).await
        };
        let ok = if allowed {
            outcome == "ok"
        } else {
            denied(&outcome)
        };
        if !ok {
            failures.push(format!("{user}: {sql}\n    -> {outcome}"));
        }
        if in_transaction {
            client.simple_query("ROLLBACK").await.expect("ROLLBACK");
        }
    }
    assert!(
        failures.is_empty(),
        "extended={extended} in_transaction={in_transaction}:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_of_users_and_statements_in_every_mode() {
    let (pgward, _files) = start("transaction", "deny");
    deadline(Duration::from_secs(120), async {
        for extended in [false, true] {
            for in_transaction in [false, true] {
                run_matrix(&pgward, extended, in_transaction).await;
            }
        }
    })
    .await;
    admin_psql(DATABASE, "DROP TABLE IF EXISTS public.dev_table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_checks_too() {
    let (pgward, _files) = start("session", "deny");
    deadline(Duration::from_secs(60), async {
        run_matrix(&pgward, false, false).await;
        run_matrix(&pgward, true, true).await;
    })
    .await;
    admin_psql(DATABASE, "DROP TABLE IF EXISTS public.dev_table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_names_user_action_and_object() {
    let (pgward, _files) = start("transaction", "deny");
    let alice = pgward.connect_as("alice", "pw").await;
    assert_eq!(
        outcome_simple(&alice, "SELECT ssn FROM customers").await,
        "42501 pgward: permission denied: alice may not select public.customers.ssn"
    );
    let reader = pgward.connect_as("reader", "pw").await;
    assert_eq!(
        outcome_extended(&reader, "INSERT INTO audit (note) VALUES ($1)").await,
        "42501 pgward: permission denied: reader may not insert public.audit"
    );
    assert_eq!(
        outcome_simple(&reader, "SELECT * FROM vault.keys").await,
        "42501 pgward: permission denied: reader may not select vault.keys"
    );
    // The connection stays usable, and the denial was counted.
    assert_eq!(
        simple_value(&reader, "SELECT name FROM customers WHERE id = 1").await,
        "ann"
    );
    assert!(pgward.log().contains("policy denied a statement"));
    assert!(!pgward.log().contains("111-11-1111"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_fails_the_transaction_like_a_server_error() {
    let (pgward, _files) = start("transaction", "deny");
    deadline(Duration::from_secs(30), async {
        let alice = pgward.connect_as("alice", "pw").await;
        alice.simple_query("BEGIN").await.unwrap();
        alice
            .simple_query("INSERT INTO audit (note) VALUES ('in-failed-tx')")
            .await
            .unwrap();
        let e = alice
            .simple_query("SELECT ssn FROM customers")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), Some("42501"));
        let e = alice.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(sqlstate(&e), Some("25P02"), "{e}");
        // Extended protocol in the failed transaction too.
        let e = alice.query("SELECT $1::int", &[&1i32]).await.unwrap_err();
        assert_eq!(sqlstate(&e), Some("25P02"), "{e}");
        // COMMIT of a failed transaction rolls back, as in PostgreSQL.
        let done = alice.simple_query("COMMIT").await.unwrap();
        let tag = done.iter().find_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        });
        assert_eq!(tag, Some(0));
        assert_eq!(simple_value(&alice, "SELECT 40 + 2").await, "42");
        assert_eq!(
            admin_psql(
                DATABASE,
                "SELECT count(*) FROM audit WHERE note = 'in-failed-tx'"
            )
            .trim(),
            "0"
        );

        // Savepoints recover from a denial as from any error.
        alice.simple_query("BEGIN").await.unwrap();
        alice.simple_query("SAVEPOINT s").await.unwrap();
        assert!(alice.query("SELECT ssn FROM customers", &[]).await.is_err());
        alice.simple_query("ROLLBACK TO SAVEPOINT s").await.unwrap();
        alice
            .simple_query("INSERT INTO audit (note) VALUES ('after-savepoint')")
            .await
            .unwrap();
        alice.simple_query("COMMIT").await.unwrap();
        assert_eq!(
            admin_psql(
                DATABASE,
                "SELECT count(*) FROM audit WHERE note = 'after-savepoint'"
            )
            .trim(),
            "1"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_statement_in_a_string_runs_nothing_of_it() {
    let (pgward, _files) = start("transaction", "deny");
    let alice = pgward.connect_as("alice", "pw").await;
    let e = alice
        .simple_query("INSERT INTO audit (note) VALUES ('multi-1'); SELECT ssn FROM customers; INSERT INTO audit (note) VALUES ('multi-2')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some("42501"));
    assert_eq!(
        admin_psql(
            DATABASE,
            "SELECT count(*) FROM audit WHERE note LIKE 'multi-%'"
        )
        .trim(),
        "0"
    );
    // The same string without the denied statement runs whole.
    alice
        .simple_query("INSERT INTO audit (note) VALUES ('multi-1'); SELECT name FROM customers")
        .await
        .unwrap();
    assert_eq!(
        admin_psql(
            DATABASE,
            "SELECT count(*) FROM audit WHERE note LIKE 'multi-%'"
        )
        .trim(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_are_checked_one_by_one() {
    let (pgward, _files) = start("transaction", "deny");
    deadline(Duration::from_secs(30), async {
        let alice = pgward.connect_as("alice", "pw").await;
        let ok = alice
            .prepare("SELECT name FROM customers WHERE id = $1")
            .await
            .unwrap();
        // tokio-postgres pipelines queries issued together: each gets its own answer.
        let (a, b, c) = futures_util::join!(
            alice.query(&ok, &[&1i32]),
            alice.query("SELECT ssn FROM customers WHERE id = $1", &[&1i32]),
            alice.query(&ok, &[&2i32]),
        );
        assert_eq!(a.unwrap()[0].get::<_, String>(0), "ann");
        assert_eq!(sqlstate(&b.unwrap_err()), Some("42501"));
        assert_eq!(c.unwrap()[0].get::<_, String>(0), "bob");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unqualified_names_follow_the_search_path() {
    let (pgward, _files) = start("transaction", "deny");
    deadline(Duration::from_secs(30), async {
        // s2reader with search_path s2 reads s2.customers by its bare name.
        let mut config = pgward.client_config("s2reader", "pw");
        config.options("-c search_path=s2");
        let s2 = connect_with(&config).await.unwrap();
        assert_eq!(
            simple_value(&s2, "SELECT secret FROM customers").await,
            "s2-secret"
        );
        // A reader whose search_path reaches s2 first is refused the same text.
        let reader = pgward.connect_as("reader", "pw").await;
        reader
            .simple_query("SET search_path = s2, public")
            .await
            .unwrap();
        let e = reader
            .simple_query("SELECT * FROM customers")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), Some("42501"), "{e}");
        // ...and inside a transaction right after its SET, before pgward read it back.
        reader.simple_query("RESET search_path").await.unwrap();
        assert_eq!(
            simple_value(&reader, "SELECT count(*) FROM customers").await,
            "2"
        );
        reader.simple_query("BEGIN").await.unwrap();
        reader
            .simple_query("SET LOCAL search_path = s2")
            .await
            .unwrap();
        let e = reader
            .simple_query("SELECT id FROM customers")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), Some("42501"), "{e}");
        reader.simple_query("ROLLBACK").await.unwrap();
        // In one string with the SET as well.
        let e = reader
            .simple_query("SET search_path = s2; SELECT id FROM customers")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), Some("42501"), "{e}");
        // A prepared statement is checked at each execution with the path of that moment.
        let reader = pgward.connect_as("reader", "pw").await;
        let statement = reader.prepare("SELECT id FROM customers").await.unwrap();
        assert_eq!(reader.query(&statement, &[]).await.unwrap().len(), 2);
        reader.simple_query("SET search_path = s2").await.unwrap();
        let e = reader.query(&statement, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), Some("42501"), "{e}");
    })
    .await;
}

/// `$user` in a search_path is the role the client runs as: after `SET ROLE po_vault`,
/// PostgreSQL reads a bare `po_rows` from schema po_vault, so the policy must judge that
/// table, not the login's. Both pool modes, both protocols.
#[tokio::test]
async fn user_in_the_search_path_is_the_role_set() {
    schema();
    admin_psql(
        DATABASE,
        &format!(
            "DO $$ BEGIN CREATE ROLE po_vault NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT po_vault TO {USER};
             CREATE SCHEMA IF NOT EXISTS po_vault AUTHORIZATION po_vault;
             CREATE TABLE IF NOT EXISTS po_vault.po_rows (id int, secret text);
             ALTER TABLE po_vault.po_rows OWNER TO po_vault;
             CREATE TABLE IF NOT EXISTS public.po_rows (id int, secret text);
             GRANT SELECT ON public.po_rows TO {USER}, po_vault;"
        ),
    );
    let files = PolicyFiles::new(
        "p, roler, appdb, public.*, *, select, allow\n\
         p, roler, appdb, pg_catalog.*, *, select, allow\n\
         p, roler, appdb, *, *, admin, allow\n",
    );
    for mode in ["transaction", "session"] {
        let pgward = config(mode, &files, "deny").start();
        deadline(Duration::from_secs(30), async {
            let client = pgward.connect_as("roler", "pw").await;
            assert_eq!(outcome_simple(&client, "SELECT * FROM po_rows").await, "ok");
            client.simple_query("SET ROLE po_vault").await.unwrap();
            for sql in ["SELECT * FROM po_rows", "SELECT secret FROM po_rows"] {
                let simple = outcome_simple(&client, sql).await;
                assert!(denied(&simple), "{mode}, {sql}: {simple}");
                let extended = outcome_extended(&client, sql).await;
                assert!(denied(&extended), "{mode}, {sql}: {extended}");
            }
            // What the role may read under its qualified name stays allowed.
            assert_eq!(
                simple_value(&client, "SELECT count(*) FROM public.po_rows").await,
                "0"
            );
            // Transaction mode reads the settings back after a SET: the role is known to be
            // gone. Session mode does not, and judges a bare name in every schema it may be in.
            if mode == "transaction" {
                client.simple_query("RESET ROLE").await.unwrap();
                assert_eq!(outcome_simple(&client, "SELECT * FROM po_rows").await, "ok");
            }
        })
        .await;
    }
}

/// A client that prepares a name it already holds gets 42P05, and the name is still checked as
/// the statement it names: once the client's search_path leads to a schema it may not read, the
/// refused duplicate's harmless text must not stand in for it. Both pool modes.
#[test]
fn a_duplicate_statement_name_keeps_its_checks() {
    for mode in ["transaction", "session"] {
        let (pgward, _files) = start(mode, "deny");
        let dsn = format!(
            "host=127.0.0.1 port={} dbname={DATABASE} user=reader password=pw",
            pgward.port
        );
        let script = py_script("policy_duplicate_statement.py");
        let run = run_python(&script, &[&dsn], Duration::from_secs(30)).expect_success(mode);
        assert!(
            run.stdout.contains("duplicate statement checked"),
            "{mode}: {}",
            run.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_through_pgward_is_known_at_once() {
    let (pgward, _files) = start("transaction", "deny");
    deadline(Duration::from_secs(30), async {
        let dev = pgward.connect_as("dev", "pw").await;
        let alice = pgward.connect_as("alice", "pw").await;
        // Both clients have used the catalog before the table exists.
        assert_eq!(
            outcome_simple(&alice, "SELECT id FROM customers").await,
            "ok"
        );
        for round in 0..5 {
            let table = format!("fresh_{round}");
            dev.simple_query(&format!("CREATE TABLE public.{table} (id int, ssn text)"))
                .await
                .unwrap();
            // `*` expands to the new table's columns, ssn among them, right away.
            let outcome = outcome_simple(&alice, &format!("SELECT * FROM {table}")).await;
            assert_eq!(
                outcome,
                format!("42501 pgward: permission denied: alice may not select public.{table}.ssn")
            );
            assert_eq!(
                outcome_simple(&alice, &format!("SELECT id FROM {table}")).await,
                "ok"
            );
            admin_psql(DATABASE, &format!("DROP TABLE public.{table}"));
        }
    })
    .await;
}

#[test]
fn copy_from_stdin_is_checked_and_what_follows_it_too() {
    let (pgward, _files) = start("transaction", "deny");
    let copy = |user: &str, sql: &str| {
        let mut command = psql(&pgward);
        command
            .env("PGUSER", user)
            .env("PGPASSWORD", "pw")
            .args(["-c", sql]);
        run_program(&mut command, Duration::from_secs(30))
    };
    let data = pgward.scratch_dir().join("notes.txt");
    std::fs::write(&data, "copied-1\ncopied-2\n").unwrap();
    let sql = format!("\\copy audit (note) from '{}'", data.display());
    let refused = copy("reader", &sql);
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains("reader may not insert public.audit"),
        "{}",
        refused.stderr
    );
    copy("loader", &sql).expect_success("loader may copy into audit");
    assert_eq!(
        admin_psql(
            DATABASE,
            "SELECT count(*) FROM audit WHERE note LIKE 'copied-%'"
        )
        .trim(),
        "2"
    );
    // A statement after COPY ... FROM STDIN in the same string is checked too: loader may
    // not delete, so nothing of the string runs.
    let sneaky = copy("loader", "COPY audit (note) FROM STDIN; DELETE FROM orders");
    assert!(!sneaky.status.success());
    assert!(
        sneaky
            .stderr
            .contains("loader may not delete public.orders"),
        "{}",
        sneaky.stderr
    );
    assert_ne!(
        admin_psql(DATABASE, "SELECT count(*) FROM orders").trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_statements_follow_on_unparsed() {
    // sqlparser 0.59 cannot parse ORDER BY ... USING.
    let sql = "SELECT id FROM customers ORDER BY id USING <";
    let (deny, _files) = start("transaction", "deny");
    let reader = deny.connect_as("reader", "pw").await;
    assert_eq!(
        outcome_simple(&reader, sql).await,
        "42501 pgward: permission denied: statement could not be analysed"
    );
    assert_eq!(
        outcome_extended(&reader, sql).await,
        "42501 pgward: permission denied: statement could not be analysed"
    );
    let (allow, _files) = start("transaction", "allow");
    let reader = allow.connect_as("reader", "pw").await;
    let rows = reader.simple_query(sql).await.unwrap();
    assert_eq!(simple_rows(&rows).len(), 2, "the primary answered");
}

/// SQL text that is not UTF-8 (client_encoding LATIN9) cannot be analysed: it is refused
/// like an unparsable statement under on_unparsed = "deny", and runs under "allow".
#[test]
fn text_that_is_not_utf8_follows_on_unparsed() {
    use std::os::unix::ffi::OsStringExt;
    let sql = b"SELECT name FROM customers WHERE name <> 'caf\xe9' ORDER BY id".to_vec();
    let run = |pgward: &Pgward| {
        let mut command = psql(pgward);
        command
            .env("PGUSER", "reader")
            .env("PGPASSWORD", "pw")
            .env("PGCLIENTENCODING", "LATIN9")
            .arg("-c")
            .arg(std::ffi::OsString::from_vec(sql.clone()));
        run_program(&mut command, Duration::from_secs(30))
    };
    let (deny, _files) = start("transaction", "deny");
    let refused = run(&deny);
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains("pgward: permission denied: statement could not be analysed"),
        "{}",
        refused.stderr
    );
    let (allow, _files) = start("transaction", "allow");
    let ok = run(&allow).expect_success("psql LATIN9 under allow");
    assert_eq!(ok.stdout.trim(), "ann\nbob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_sees_denials_and_allowed_rows() {
    let (pgward, _files) = start("transaction", "deny");
    let run = |user: &str, sql: &str| {
        let mut command = psql(&pgward);
        command
            .env("PGUSER", user)
            .env("PGPASSWORD", "pw")
            .args(["-c", sql]);
        run_program(&mut command, Duration::from_secs(30))
    };
    let ok = run("alice", "SELECT name FROM customers ORDER BY id").expect_success("psql select");
    assert_eq!(ok.stdout.trim(), "ann\nbob");
    let refused = run("alice", "SELECT * FROM customers");
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains("pgward: permission denied: alice may not select public.customers.ssn"),
        "{}",
        refused.stderr
    );
    // psql's \d reads the catalog, which readers may.
    let described = run("reader", "\\d customers").expect_success("psql \\d");
    assert!(described.stdout.contains("ssn"), "{}", described.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_policy_and_a_broken_file_keeps_the_old_one() {
    schema();
    let files = PolicyFiles::new(POLICY);
    let config = config("transaction", &files, "deny");
    let pgward = config.start();
    deadline(Duration::from_secs(60), async {
        let reader = pgward.connect_as("reader", "pw").await;
        assert!(denied(
            &outcome_simple(&reader, "INSERT INTO audit (note) VALUES ('reload')").await
        ));
        std::fs::write(
            files.policy_path(),
            format!("{POLICY}p, reader, appdb, public.audit, *, insert, allow\n"),
        )
        .unwrap();
        pgward.reload(&config.toml());
        assert_eq!(
            outcome_simple(&reader, "INSERT INTO audit (note) VALUES ('reload')").await,
            "ok",
            "the connected client follows the new policy"
        );
        // A broken file (a glob casbin would panic on) keeps the running policy.
        std::fs::write(
            files.policy_path(),
            "p, reader, appdb, public.[, *, select, allow\n",
        )
        .unwrap();
        pgward.sighup_until("reload failed");
        assert!(pgward.log().contains("policy.csv:1:"), "{}", pgward.log());
        assert_eq!(
            outcome_simple(&reader, "INSERT INTO audit (note) VALUES ('reload')").await,
            "ok"
        );
        assert_eq!(
            outcome_simple(&reader, "SELECT count(*) FROM customers").await,
            "ok"
        );
        // Taken back: the statement this client was allowed last is refused now.
        assert_eq!(
            outcome_simple(&reader, "INSERT INTO audit (note) VALUES ('reload')").await,
            "ok"
        );
        std::fs::write(files.policy_path(), POLICY).unwrap();
        pgward.reload(&config.toml());
        assert!(
            denied(&outcome_simple(&reader, "INSERT INTO audit (note) VALUES ('reload')").await),
            "an allow of the old policy still counted"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_turns_the_policy_on_and_off_applies_to_connected_clients() {
    schema();
    let files = PolicyFiles::new(POLICY);
    let config = config("transaction", &files, "deny");
    let on = config.toml();
    let off = on.replace("[policy]\nenabled = true", "[policy]\nenabled = false");
    assert_ne!(on, off);
    let pgward = Pgward::start(&off);
    deadline(Duration::from_secs(60), async {
        let reader = pgward.connect_as("reader", "pw").await;
        let insert = "INSERT INTO audit (note) VALUES ('switch')";
        assert_eq!(outcome_simple(&reader, insert).await, "ok", "no policy yet");
        pgward.reload(&on);
        assert!(
            denied(&outcome_simple(&reader, insert).await),
            "the policy applies to a client connected before it"
        );
        assert!(denied(&outcome_extended(&reader, insert).await));
        pgward.reload(&off);
        assert_eq!(
            outcome_simple(&reader, insert).await,
            "ok",
            "no policy after the next reload"
        );
        assert_eq!(outcome_extended(&reader, insert).await, "ok");
    })
    .await;
}

#[test]
fn pgward_check_validates_the_policy_files() {
    let files = PolicyFiles::new("p, reader, appdb, public.*, *, select, allow\np, bad, appdb, {unclosed, *, select, allow\n");
    let config = ProxyConfig::new("transaction", 1).extra(&files.toml("deny"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgward.toml");
    std::fs::write(&path, config.toml()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("policy.csv:2:"), "{stderr}");
    std::fs::write(files.policy_path(), POLICY).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A statement pgward takes long to analyse holds up no other client, even with a single
/// thread serving all of them: the parse runs off that thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_analysis_holds_up_no_other_client() {
    schema();
    let files = PolicyFiles::new(POLICY);
    let pgward = config("transaction", &files, "deny")
        .server("worker_threads = 1\n")
        .start();
    // Nested CASTs around a syntax error: sqlparser backtracks through every level, about
    // 0.2 s of CPU in a release build at the deepest nesting pgward parses.
    let depth = 10;
    let sql = format!(
        "SELECT {}1 +{}",
        "cast(".repeat(depth),
        " as int)".repeat(depth)
    );
    deadline(Duration::from_secs(120), async {
        let alice = pgward.connect_as("alice", "pw").await;
        let reader = pgward.connect_as("reader", "pw").await;
        let quick_sql = "SELECT name FROM public.customers WHERE id = 1";
        // Analysed and the catalog read before the race, so the quick query only runs.
        assert_eq!(outcome_simple(&reader, quick_sql).await, "ok");
        let started = std::time::Instant::now();
        let long = tokio::spawn(async move {
            let outcome = outcome_simple(&alice, &sql).await;
            (outcome, std::time::Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let quick = outcome_simple(&reader, quick_sql).await;
        let quick_done = std::time::Instant::now();
        assert_eq!(quick, "ok");
        let (outcome, long_done) = long.await.unwrap();
        assert_eq!(
            outcome,
            "42501 pgward: permission denied: statement could not be analysed"
        );
        assert!(
            quick_done < long_done,
            "the quick query was answered only after the long analysis ({:?} vs {:?})",
            quick_done - started,
            long_done - started
        );
    })
    .await;
}
