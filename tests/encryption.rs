//! Transparent column encryption through real clients (tokio-postgres, psql, pgbench) against
//! real PostgreSQL: designated columns hold only `pgw1:` ciphertext in the database, clients
//! write and read plaintext, deterministic columns can be searched by equality, and whatever
//! the server would have to compute on a designated value is refused with 0A000.
//!
//! Every test has a table of its own, made as superuser before pgward starts:
//! `(id int PRIMARY KEY, name text, ssn text, email text)` with `ssn` deterministic,
//! `email` randomized and `name` plain.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage};

const LIMIT: Duration = Duration::from_secs(90);
const TIMEOUT: Duration = Duration::from_secs(30);
const MODEL: &str = include_str!("../policies/model.conf");

// ---------------------------------------------------------------------------------------------
// Setup: tables, keys, pgward with encryption on a table

/// A fresh `public.<table>` with the test layout, readable and writable by `app`.
fn create_table(table: &str) {
    admin_psql(
        DATABASE,
        &format!(
            "DROP TABLE IF EXISTS public.{table};
             CREATE TABLE public.{table} (id int PRIMARY KEY, name text, ssn text, email text);
             GRANT ALL ON public.{table} TO app;"
        ),
    );
}

/// A fresh plain (not designated) table, for joins and for echoing values back.
fn create_plain_table(table: &str, columns: &str) {
    admin_psql(
        DATABASE,
        &format!(
            "DROP TABLE IF EXISTS public.{table};
             CREATE TABLE public.{table} ({columns});
             GRANT ALL ON public.{table} TO app;"
        ),
    );
}

/// Base64 of 32 random bytes, as `pgward keygen` prints.
fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

/// The `[encryption]` section: key `k1` from `material`, `ssn` deterministic and `email`
/// randomized on `public.<table>`.
fn encryption_toml(material: &str, table: &str, without_decrypt: &str) -> String {
    format!(
        r#"
[encryption]
without_decrypt = "{without_decrypt}"

[[encryption.keys]]
id = "k1"
material = {material}
active = true

[[encryption.columns]]
table = "public.{table}"
column = "ssn"
mode = "deterministic"

[[encryption.columns]]
table = "public.{table}"
column = "email"
mode = "randomized"
"#,
        material = toml_string(material),
    )
}

/// A running pgward with encryption on one table, and the files it reads.
struct Encrypted {
    pgward: Pgward,
    admin_port: Option<u16>,
    files: tempfile::TempDir,
}

impl Encrypted {
    /// Starts `config` with encryption on `table` (which must exist) and a key from a file.
    fn start(table: &str, config: ProxyConfig) -> Encrypted {
        Encrypted::start_with(table, config, "null", "")
    }

    /// As `start`, with `without_decrypt` and raw TOML after the encryption section.
    fn start_with(
        table: &str,
        config: ProxyConfig,
        without_decrypt: &str,
        more_toml: &str,
    ) -> Encrypted {
        let files = tempfile::tempdir().expect("temp dir");
        let key_path = files.path().join("k1.key");
        std::fs::write(&key_path, format!("{}\n", new_key())).expect("writing the key");
        let material = format!("file:{}", key_path.display());
        let admin_port = config.admin_port;
        let pgward = config
            .extra(&encryption_toml(&material, table, without_decrypt))
            .extra(more_toml)
            .start();
        Encrypted {
            pgward,
            admin_port,
            files,
        }
    }

    async fn connect(&self) -> Client {
        self.pgward.connect().await
    }

    fn metrics(&self) -> String {
        let port = self.admin_port.expect("started with ProxyConfig::admin()");
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A fresh table and pgward (transaction mode, pool of 4) with encryption on it.
fn start(table: &str) -> Encrypted {
    create_table(table);
    Encrypted::start(table, ProxyConfig::transaction(4))
}

// ---------------------------------------------------------------------------------------------
// Direct reads from PostgreSQL (what is really stored)

/// One column of `public.<table>` read straight from PostgreSQL, ordered by id, NULL as None.
fn stored(table: &str, column: &str) -> Vec<Option<String>> {
    let out = admin_psql(
        DATABASE,
        &format!("SELECT coalesce({column}, '<NULL>') FROM public.{table} ORDER BY id"),
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| (l != "<NULL>").then(|| l.to_owned()))
        .collect()
}

/// Every row of the table as PostgreSQL prints it (`t::text`).
fn stored_rows(table: &str) -> String {
    admin_psql(
        DATABASE,
        &format!("SELECT t::text FROM public.{table} t ORDER BY id"),
    )
}

/// Every non-NULL value of the designated columns is an envelope, and none of `plaintexts`
/// appears anywhere in the stored rows.
fn assert_stored_encrypted(table: &str, plaintexts: &[&str]) {
    for column in ["ssn", "email"] {
        for value in stored(table, column).into_iter().flatten() {
            assert!(
                value.starts_with("pgw1:"),
                "{table}.{column} holds {value:?}, not a pgw1: envelope"
            );
        }
    }
    let rows = stored_rows(table);
    for plaintext in plaintexts {
        assert!(
            !rows.contains(plaintext),
            "plaintext {plaintext:?} is stored in {table}:\n{rows}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reading through pgward

/// Rows of a simple-protocol query (text results), every value as text.
async fn simple(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    simple_rows(&messages)
}

/// Rows of an extended-protocol query (tokio-postgres asks for binary results); every
/// selected column must be text.
async fn extended(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<Vec<Option<String>>> {
    let rows = client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

/// The same rows in the simple and the extended protocol.
async fn both(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let text = simple(client, sql).await;
    let binary = extended(client, sql, &[]).await;
    assert_eq!(text, binary, "{sql}: simple and extended protocol differ");
    text
}

fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_owned)).collect()
}

fn rows(values: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
    values.iter().map(|r| row(r)).collect()
}

/// "SQLSTATE message" of an error, or what kind of client error it was.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => format!("client error: {e}"),
    }
}

/// Asserts an error with `code` whose message names one of `table.column` for `columns`.
fn assert_error_naming<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    code: &str,
    table: &str,
    columns: &[&str],
    what: &str,
) {
    let e = match result {
        Ok(value) => panic!("{what}: expected {code}, it succeeded with {value:?}"),
        Err(e) => e,
    };
    let described = describe(&e);
    assert!(
        described.starts_with(&format!("{code} ")),
        "{what}: expected SQLSTATE {code}, got {described}"
    );
    assert!(
        columns
            .iter()
            .any(|c| described.contains(&format!("{table}.{c}"))),
        "{what}: the message should name {table}.{columns:?}: {described}"
    );
}

/// The connection still answers after an error.
async fn assert_usable(client: &Client, after: &str) {
    match client.simple_query("SELECT 1").await {
        Ok(messages) => assert_eq!(simple_rows(&messages), vec![vec![Some("1".into())]]),
        Err(e) => panic!("SELECT 1 after {after} failed: {}", describe(&e)),
    }
}

fn command_tag(messages: &[SimpleQueryMessage]) -> Option<u64> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Write path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_literals_are_stored_encrypted_and_read_back_in_plaintext() {
    let enc = start("enc_ins");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        // Multi-row with a column list; a quote and non-ASCII text in the values.
        client
            .simple_query(
                "INSERT INTO enc_ins (id, name, ssn, email) VALUES
                   (1, 'ann', 'secret-ssn-0001', 'ann@example.com'),
                   (2, 'bob', 'it''s-ssn-0002', 'zoë✓@example.com')",
            )
            .await
            .unwrap();
        // No column list; NULL stays NULL.
        client
            .simple_query("INSERT INTO enc_ins VALUES (3, 'cid', 'secret-ssn-0003', NULL)")
            .await
            .unwrap();
        // Columns in another order; the empty string is a value too.
        client
            .simple_query("INSERT INTO enc_ins (email, id, ssn) VALUES ('dan@example.com', 4, '')")
            .await
            .unwrap();
        // RETURNING answers in plaintext (simple protocol).
        let returned = simple(
            &client,
            "INSERT INTO enc_ins (id, name, ssn, email) VALUES (5, 'eve', 'secret-ssn-0005', 'eve@example.com') RETURNING name, ssn, email",
        )
        .await;
        assert_eq!(
            returned,
            rows(&[&[Some("eve"), Some("secret-ssn-0005"), Some("eve@example.com")]])
        );
        // Extended protocol: a literal and a parameter in one statement, RETURNING (binary).
        let returned = extended(
            &client,
            "INSERT INTO enc_ins (id, ssn, email) VALUES (6, 'secret-ssn-0006', $1) RETURNING ssn, email",
            &[&"fay@example.com"],
        )
        .await;
        assert_eq!(
            returned,
            rows(&[&[Some("secret-ssn-0006"), Some("fay@example.com")]])
        );

        assert_stored_encrypted(
            "enc_ins",
            &[
                "secret-ssn",
                "it's-ssn",
                "ann@example.com",
                "zoë✓@example.com",
                "dan@example.com",
                "eve@example.com",
                "fay@example.com",
            ],
        );
        assert_eq!(stored("enc_ins", "email")[2], None, "NULL is stored as NULL");
        assert!(
            stored("enc_ins", "ssn")[3].is_some(),
            "the empty string is stored (encrypted), not as NULL"
        );

        let expected = rows(&[
            &[Some("1"), Some("ann"), Some("secret-ssn-0001"), Some("ann@example.com")],
            &[Some("2"), Some("bob"), Some("it's-ssn-0002"), Some("zoë✓@example.com")],
            &[Some("3"), Some("cid"), Some("secret-ssn-0003"), None],
            &[Some("4"), None, Some(""), Some("dan@example.com")],
            &[Some("5"), Some("eve"), Some("secret-ssn-0005"), Some("eve@example.com")],
            &[Some("6"), None, Some("secret-ssn-0006"), Some("fay@example.com")],
        ]);
        assert_eq!(
            both(&client, "SELECT id::text, name, ssn, email FROM enc_ins ORDER BY id").await,
            expected
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_upsert_encrypt_the_new_values() {
    let enc = start("enc_upd");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query(
                "INSERT INTO enc_upd VALUES (1, 'ann', 'old-ssn-1', 'old-1@example.com'),
                                            (2, 'bob', 'old-ssn-2', 'old-2@example.com')",
            )
            .await
            .unwrap();
        let done = client
            .simple_query("UPDATE enc_upd SET ssn = 'upd-ssn-1', email = 'upd-1@example.com' WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(command_tag(&done), Some(1));
        // Prepared UPDATE with the new value as a parameter, RETURNING the plaintext.
        let returned = extended(
            &client,
            "UPDATE enc_upd SET email = $1 WHERE id = $2 RETURNING email",
            &[&"prep-2@example.com", &2i32],
        )
        .await;
        assert_eq!(returned, rows(&[&[Some("prep-2@example.com")]]));
        // INSERT ... ON CONFLICT DO UPDATE SET col = EXCLUDED.col.
        let returned = simple(
            &client,
            "INSERT INTO enc_upd (id, name, ssn, email) VALUES (2, 'bob', 'ups-ssn-2', 'ups-2@example.com')
             ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.ssn, email = EXCLUDED.email
             RETURNING id::text, ssn, email",
        )
        .await;
        assert_eq!(
            returned,
            rows(&[&[Some("2"), Some("ups-ssn-2"), Some("ups-2@example.com")]])
        );
        // Setting NULL is fine.
        client
            .simple_query("UPDATE enc_upd SET email = NULL WHERE id = 1")
            .await
            .unwrap();

        assert_stored_encrypted(
            "enc_upd",
            &["upd-ssn-1", "prep-2@example.com", "ups-ssn-2", "ups-2@example.com"],
        );
        assert_eq!(
            both(&client, "SELECT ssn, email FROM enc_upd ORDER BY id").await,
            rows(&[
                &[Some("upd-ssn-1"), None],
                &[Some("ups-ssn-2"), Some("ups-2@example.com")],
            ])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_encrypt_parameters_and_decrypt_results() {
    let enc = start("enc_bind");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        // tokio-postgres binds &str in binary format; one statement, executed several times
        // (in transaction mode each execution may run on another server connection).
        let insert = client
            .prepare("INSERT INTO enc_bind (id, name, ssn, email) VALUES ($1, $2, $3, $4)")
            .await
            .unwrap();
        for (id, ssn, email) in [
            (1i32, "bind-ssn-1", "bind-1@example.com"),
            (2, "bind-ssn-2", "bind-2@example.com"),
            (3, "bind-ssn-3", "bind-3@example.com"),
        ] {
            client
                .execute(&insert, &[&id, &"n", &ssn, &email])
                .await
                .unwrap();
        }
        // A NULL parameter.
        client
            .execute(&insert, &[&4i32, &"n", &None::<&str>, &None::<&str>])
            .await
            .unwrap();
        // Without a column list, parameters are matched to columns by position.
        client
            .execute(
                "INSERT INTO enc_bind VALUES (6, 'n', $1, $2)",
                &[&"bind-ssn-6", &"bind-6@example.com"],
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "INSERT without a column list, with parameters: {}",
                    describe(&e)
                )
            });
        // Inside an explicit transaction too.
        client.simple_query("BEGIN").await.unwrap();
        client
            .execute(
                &insert,
                &[&5i32, &"n", &"bind-ssn-5", &"bind-5@example.com"],
            )
            .await
            .unwrap();
        client.simple_query("COMMIT").await.unwrap();

        assert_stored_encrypted("enc_bind", &["bind-ssn", "@example.com"]);

        let select = client
            .prepare("SELECT ssn, email FROM enc_bind WHERE id = $1")
            .await
            .unwrap();
        for id in [1i32, 3, 4, 5, 6] {
            let got = client.query_one(&select, &[&id]).await.unwrap();
            let expected = match id {
                4 => (None, None),
                _ => (
                    Some(format!("bind-ssn-{id}")),
                    Some(format!("bind-{id}@example.com")),
                ),
            };
            assert_eq!(
                (
                    got.get::<_, Option<String>>(0),
                    got.get::<_, Option<String>>(1)
                ),
                expected
            );
        }
    })
    .await;
}

/// pgbench sends parameters in text format and asks for text results (extended and prepared
/// protocol): `\gset` carries a decrypted value into the next statement, which writes it to a
/// plain table.
#[test]
fn text_format_parameters_and_results_with_pgbench() {
    create_plain_table(
        "enc_pgb_echo",
        "mode text, ssn text, email text, found text",
    );
    let enc = start("enc_pgb");
    let script = enc.files.path().join("script.sql");
    std::fs::write(
        &script,
        "INSERT INTO enc_pgb (id, name, ssn, email) VALUES (:id, :mode, :ssn, :email);\n\
         SELECT ssn AS got_ssn, email AS got_email FROM enc_pgb WHERE id = :id \\gset\n\
         SELECT id AS found FROM enc_pgb WHERE ssn = :ssn \\gset\n\
         INSERT INTO enc_pgb_echo (mode, ssn, email, found) VALUES (:mode, :got_ssn, :got_email, :found);\n",
    )
    .unwrap();
    for (id, mode) in [(1, "extended"), (2, "prepared")] {
        let run = run_program(
            pg_client("pgbench", &enc.pgward).args([
                "-n".to_string(),
                "-t".into(),
                "1".into(),
                "-M".into(),
                mode.into(),
                "-f".into(),
                script.display().to_string(),
                "-D".into(),
                format!("id={id}"),
                "-D".into(),
                format!("mode={mode}"),
                "-D".into(),
                format!("ssn=pgb-ssn-{id}"),
                "-D".into(),
                format!("email=pgb-{id}@example.com"),
            ]),
            Duration::from_secs(60),
        );
        assert!(
            run.status.success() && run.stdout.contains("number of failed transactions: 0"),
            "pgbench -M {mode} ({}):\nstdout:\n{}\nstderr:\n{}",
            run.status,
            run.stdout,
            run.stderr
        );
    }
    assert_stored_encrypted("enc_pgb", &["pgb-ssn", "@example.com"]);
    assert_eq!(
        admin_psql(
            DATABASE,
            "SELECT mode, ssn, email, found FROM enc_pgb_echo ORDER BY found"
        )
        .trim(),
        "extended|pgb-ssn-1|pgb-1@example.com|1\nprepared|pgb-ssn-2|pgb-2@example.com|2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_text_and_out_is_encrypted_and_decrypted() {
    let enc = start("enc_copy");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        let sink = client
            .copy_in::<_, Bytes>("COPY enc_copy (id, name, ssn, email) FROM STDIN")
            .await
            .unwrap();
        pin_mut!(sink);
        // Rows split across CopyData messages at odd places; a NULL; an escaped tab.
        let data = "1\tann\tcopy-ssn-1\tcopy-1@example.com\n\
                    2\tbob\tcopy-ssn-2\t\\N\n\
                    3\tcid\tcopy\\tssn-3\tcopy-3@example.com\n";
        let (a, b) = data.split_at(17);
        let (b, c) = b.split_at(30);
        for chunk in [a, b, c] {
            sink.send(Bytes::from(chunk.to_owned())).await.unwrap();
        }
        assert_eq!(sink.finish().await.unwrap(), 3);

        assert_stored_encrypted("enc_copy", &["copy-ssn", "copy\tssn", "@example.com"]);
        assert_eq!(stored("enc_copy", "email")[1], None);
        assert_eq!(
            both(&client, "SELECT ssn, email FROM enc_copy ORDER BY id").await,
            rows(&[
                &[Some("copy-ssn-1"), Some("copy-1@example.com")],
                &[Some("copy-ssn-2"), None],
                &[Some("copy\tssn-3"), Some("copy-3@example.com")],
            ])
        );

        // COPY TO STDOUT, table and query forms, text and CSV.
        let copy_out = |sql: &'static str| {
            let client = &client;
            async move {
                let stream = client.copy_out(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
                pin_mut!(stream);
                let mut data = Vec::new();
                while let Some(chunk) = stream.next().await {
                    data.extend_from_slice(&chunk.unwrap());
                }
                String::from_utf8(data).unwrap()
            }
        };
        let mut lines: Vec<String> = copy_out("COPY enc_copy (id, ssn, email) TO STDOUT")
            .await
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "1\tcopy-ssn-1\tcopy-1@example.com",
                "2\tcopy-ssn-2\t\\N",
                "3\tcopy\\tssn-3\tcopy-3@example.com",
            ]
        );
        assert_eq!(
            copy_out("COPY (SELECT id, ssn, email FROM enc_copy WHERE id >= 2 ORDER BY id) TO STDOUT (FORMAT csv)").await,
            "2,copy-ssn-2,\n3,copy\tssn-3,copy-3@example.com\n"
        );
        assert_usable(&client, "COPY").await;
    })
    .await;
}

/// psql end to end: INSERT and SELECT with -c, `\copy` CSV in from a file and out to stdout.
#[test]
fn psql_inserts_copies_and_reads_plaintext() {
    let enc = start("enc_psql");
    let run = |args: &[&str]| {
        let mut command = psql(&enc.pgward);
        for arg in args {
            command.args(["-c", arg]);
        }
        run_program(&mut command, TIMEOUT).expect_success(&args.join("; "))
    };
    run(&["INSERT INTO enc_psql VALUES (1, 'ann', 'psql-ssn-1', 'psql-1@example.com')"]);
    let csv = enc.files.path().join("in.csv");
    std::fs::write(
        &csv,
        "2,bob,psql-ssn-2,\"psql-2, with comma@example.com\"\n\
         3,cid,\"psql \"\"quoted\"\" ssn-3\",\n\
         4,dan,\"\",psql-4@example.com\n",
    )
    .unwrap();
    let copied = run(&[&format!(
        "\\copy enc_psql (id, name, ssn, email) from '{}' with (format csv)",
        csv.display()
    )]);
    assert_eq!(copied.stdout.trim(), "COPY 3");

    assert_stored_encrypted("enc_psql", &["psql-ssn", "psql \"quoted\"", "@example.com"]);
    assert_eq!(
        stored("enc_psql", "email")[2],
        None,
        "an unquoted empty CSV field is NULL"
    );

    let selected = run(&["SELECT id, ssn, email FROM enc_psql WHERE ssn = 'psql-ssn-2'"]);
    assert_eq!(
        selected.stdout.trim(),
        "2|psql-ssn-2|psql-2, with comma@example.com"
    );
    let exported = run(&["\\copy (SELECT id, name, ssn, email FROM enc_psql ORDER BY id) to stdout with (format csv)"]);
    // psql may print the command tag after the data.
    let data = exported
        .stdout
        .strip_suffix("COPY 4\n")
        .unwrap_or(&exported.stdout);
    assert_eq!(
        data,
        "1,ann,psql-ssn-1,psql-1@example.com\n\
         2,bob,psql-ssn-2,\"psql-2, with comma@example.com\"\n\
         3,cid,\"psql \"\"quoted\"\" ssn-3\",\n\
         4,dan,\"\",psql-4@example.com\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Read path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_decrypt_through_aliases_joins_subqueries_and_ctes() {
    create_plain_table("enc_read_orders", "id int, customer_id int, amount int");
    admin_psql(
        DATABASE,
        "INSERT INTO enc_read_orders VALUES (1, 1, 10), (2, 2, 20), (3, 1, 30)",
    );
    let enc = start("enc_read");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query(
                "INSERT INTO enc_read VALUES (1, 'ann', 'read-ssn-1', 'read-1@example.com'),
                                             (2, 'bob', 'read-ssn-2', 'read-2@example.com')",
            )
            .await
            .unwrap();
        assert_stored_encrypted("enc_read", &["read-ssn", "@example.com"]);

        let cases: &[(&str, Vec<Vec<Option<String>>>)] = &[
            (
                "SELECT ssn FROM enc_read WHERE id = 1",
                rows(&[&[Some("read-ssn-1")]]),
            ),
            (
                "SELECT c.ssn AS s, c.email AS \"E-Mail\" FROM public.enc_read AS c WHERE c.id = 2",
                rows(&[&[Some("read-ssn-2"), Some("read-2@example.com")]]),
            ),
            (
                "SELECT email, name, ssn, name FROM enc_read ORDER BY id DESC",
                rows(&[
                    &[Some("read-2@example.com"), Some("bob"), Some("read-ssn-2"), Some("bob")],
                    &[Some("read-1@example.com"), Some("ann"), Some("read-ssn-1"), Some("ann")],
                ]),
            ),
            (
                "SELECT o.amount::text, c.ssn, c.email FROM enc_read_orders o JOIN enc_read c ON c.id = o.customer_id ORDER BY o.id",
                rows(&[
                    &[Some("10"), Some("read-ssn-1"), Some("read-1@example.com")],
                    &[Some("20"), Some("read-ssn-2"), Some("read-2@example.com")],
                    &[Some("30"), Some("read-ssn-1"), Some("read-1@example.com")],
                ]),
            ),
            (
                "SELECT s.ssn FROM (SELECT id, ssn FROM enc_read) AS s WHERE s.id = 2",
                rows(&[&[Some("read-ssn-2")]]),
            ),
            (
                "SELECT (SELECT email FROM enc_read WHERE id = 1) AS e",
                rows(&[&[Some("read-1@example.com")]]),
            ),
            (
                "WITH c AS (SELECT id, ssn, email FROM enc_read) SELECT ssn, email FROM c WHERE id = 2",
                rows(&[&[Some("read-ssn-2"), Some("read-2@example.com")]]),
            ),
            (
                "SELECT name, ssn FROM enc_read WHERE id IN (SELECT customer_id FROM enc_read_orders WHERE amount = 30)",
                rows(&[&[Some("ann"), Some("read-ssn-1")]]),
            ),
        ];
        let mut wrong = Vec::new();
        for (sql, expected) in cases {
            let text = simple(&client, sql).await;
            if &text != expected {
                wrong.push(format!("simple: {sql}\n    got {text:?}"));
            }
            // Prepared once, executed twice (binary results).
            let statement = client.prepare(sql).await.unwrap();
            for _ in 0..2 {
                let got: Vec<Vec<Option<String>>> = client
                    .query(&statement, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                    .collect();
                if &got != expected {
                    wrong.push(format!("extended: {sql}\n    got {got:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "wrong results:\n{}", wrong.join("\n"));

        // SELECT * (and t.*) decrypt by position.
        for sql in [
            "SELECT * FROM enc_read ORDER BY id",
            "SELECT t.* FROM enc_read t ORDER BY id",
        ] {
            let got = client.query(sql, &[]).await.unwrap();
            let ssns: Vec<String> = got.iter().map(|r| r.get("ssn")).collect();
            let emails: Vec<String> = got.iter().map(|r| r.get("email")).collect();
            assert_eq!(ssns, ["read-ssn-1", "read-ssn-2"], "{sql}");
            assert_eq!(emails, ["read-1@example.com", "read-2@example.com"], "{sql}");
            let text = simple(&client, sql).await;
            assert_eq!(
                text,
                rows(&[
                    &[Some("1"), Some("ann"), Some("read-ssn-1"), Some("read-1@example.com")],
                    &[Some("2"), Some("bob"), Some("read-ssn-2"), Some("read-2@example.com")],
                ]),
                "{sql}"
            );
        }

        // Several statements in one simple query, each decrypted.
        let messages = client
            .simple_query("SELECT ssn FROM enc_read WHERE id = 1; SELECT 'plain'; SELECT email FROM enc_read WHERE id = 2")
            .await
            .unwrap();
        assert_eq!(
            simple_rows(&messages),
            rows(&[&[Some("read-ssn-1")], &[Some("plain")], &[Some("read-2@example.com")]])
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Search and the two modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_columns_are_searchable_by_equality() {
    let enc = start("enc_search");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query(
                "INSERT INTO enc_search (id, ssn) VALUES (1, 'find-a'), (2, 'find-b'), (3, 'find-a'), (4, NULL), (5, 'find-c')",
            )
            .await
            .unwrap();
        assert_stored_encrypted("enc_search", &["find-"]);
        let ids = |list: &[&str]| -> Vec<Vec<Option<String>>> {
            list.iter().map(|id| vec![Some(id.to_string())]).collect()
        };
        let cases: &[(&str, &[&str])] = &[
            ("SELECT id::text FROM enc_search WHERE ssn = 'find-a' ORDER BY id", &["1", "3"]),
            ("SELECT id::text FROM enc_search WHERE 'find-b' = ssn ORDER BY id", &["2"]),
            ("SELECT id::text FROM enc_search WHERE ssn <> 'find-a' ORDER BY id", &["2", "5"]),
            ("SELECT id::text FROM enc_search WHERE ssn IN ('find-b', 'find-c') ORDER BY id", &["2", "5"]),
            ("SELECT id::text FROM enc_search WHERE ssn = 'nowhere' ORDER BY id", &[]),
            ("SELECT id::text FROM enc_search WHERE ssn IS NULL ORDER BY id", &["4"]),
            ("SELECT id::text FROM enc_search WHERE ssn IS NOT NULL AND id > 2 ORDER BY id", &["3", "5"]),
            ("SELECT id::text FROM enc_search s WHERE s.ssn = 'find-c' OR s.id = 1 ORDER BY id", &["1", "5"]),
        ];
        for (sql, expected) in cases {
            assert_eq!(both(&client, sql).await, ids(expected), "{sql}");
        }

        // A parameter compared with the column, prepared once and executed with several values.
        let by_ssn = client
            .prepare("SELECT id::text FROM enc_search WHERE ssn = $1 ORDER BY id")
            .await
            .unwrap();
        for (value, expected) in [("find-a", &["1", "3"][..]), ("find-c", &["5"]), ("nope", &[])] {
            let got: Vec<Vec<Option<String>>> = client
                .query(&by_ssn, &[&value])
                .await
                .unwrap()
                .iter()
                .map(|r| vec![r.get(0)])
                .collect();
            assert_eq!(got, ids(expected), "ssn = $1 with {value}");
        }

        // Equality in UPDATE and DELETE too.
        let done = client
            .simple_query("UPDATE enc_search SET name = 'hit' WHERE ssn = 'find-b'")
            .await
            .unwrap();
        assert_eq!(command_tag(&done), Some(1));
        let deleted = client
            .execute("DELETE FROM enc_search WHERE ssn = $1", &[&"find-c"])
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        assert_eq!(
            both(&client, "SELECT id::text, name FROM enc_search WHERE ssn = 'find-b'").await,
            rows(&[&[Some("2"), Some("hit")]])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_values_give_equal_ciphertexts_only_in_deterministic_columns() {
    let enc = start("enc_modes");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query("INSERT INTO enc_modes VALUES (1, 'a', 'same-ssn', 'same@example.com')")
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO enc_modes (id, name, ssn, email) VALUES (2, 'b', $1, $2)",
                &[&"same-ssn", &"same@example.com"],
            )
            .await
            .unwrap();
        let ssn = stored("enc_modes", "ssn");
        let email = stored("enc_modes", "email");
        assert_eq!(
            ssn[0], ssn[1],
            "deterministic: one ciphertext for one value"
        );
        assert_ne!(email[0], email[1], "randomized: a new ciphertext each time");
        assert_eq!(
            both(&client, "SELECT email FROM enc_modes ORDER BY id").await,
            rows(&[&[Some("same@example.com")], &[Some("same@example.com")]])
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Refusals

/// Statements the server would have to compute on ciphertext for: refused with 0A000 naming
/// the column, in both protocols, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_that_need_the_plaintext_are_refused() {
    let enc = start("enc_refuse");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query(
                "INSERT INTO enc_refuse VALUES (1, 'ann', 'ref-ssn-1', 'ref-1@example.com')",
            )
            .await
            .unwrap();
        let both_columns: &[&str] = &["ssn", "email"];
        let cases: &[(&str, &[&str])] = &[
            ("SELECT id FROM enc_refuse WHERE ssn LIKE 'ref%'", &["ssn"]),
            (
                "SELECT id FROM enc_refuse WHERE email ILIKE '%@example.com'",
                &["email"],
            ),
            ("SELECT id FROM enc_refuse WHERE ssn > 'a'", &["ssn"]),
            (
                "SELECT id FROM enc_refuse WHERE ssn BETWEEN 'a' AND 'z'",
                &["ssn"],
            ),
            ("SELECT id FROM enc_refuse ORDER BY ssn", &["ssn"]),
            (
                "SELECT name FROM enc_refuse ORDER BY email DESC",
                &["email"],
            ),
            (
                "SELECT email, count(*) FROM enc_refuse GROUP BY email",
                &["email"],
            ),
            ("SELECT DISTINCT email FROM enc_refuse", &["email"]),
            ("SELECT upper(ssn) FROM enc_refuse", &["ssn"]),
            (
                "SELECT id FROM enc_refuse WHERE length(email) > 3",
                &["email"],
            ),
            ("SELECT ssn::int FROM enc_refuse", &["ssn"]),
            (
                "SELECT id FROM enc_refuse WHERE email = 'ref-1@example.com'",
                &["email"],
            ),
            ("SELECT id FROM enc_refuse WHERE ssn = email", both_columns),
            (
                "INSERT INTO enc_refuse (id, ssn) SELECT id + 100, email FROM enc_refuse",
                both_columns,
            ),
            ("UPDATE enc_refuse SET ssn = email", both_columns),
            ("UPDATE enc_refuse SET email = ssn || 'x'", both_columns),
        ];
        for (sql, columns) in cases {
            assert_error_naming(
                client.simple_query(sql).await.map(|m| simple_rows(&m)),
                "0A000",
                "enc_refuse",
                columns,
                &format!("simple: {sql}"),
            );
            assert_usable(&client, sql).await;
            assert_error_naming(
                client.query(*sql, &[]).await.map(|r| r.len()),
                "0A000",
                "enc_refuse",
                columns,
                &format!("extended: {sql}"),
            );
            assert_usable(&client, sql).await;
        }
        // With a parameter in the refused place.
        assert_error_naming(
            client
                .query("SELECT id FROM enc_refuse WHERE ssn LIKE $1", &[&"ref%"])
                .await
                .map(|r| r.len()),
            "0A000",
            "enc_refuse",
            &["ssn"],
            "LIKE $1",
        );
        assert_usable(&client, "LIKE $1").await;
        // Inside a transaction the refusal fails the transaction like a server error would.
        client.simple_query("BEGIN").await.unwrap();
        assert!(client
            .simple_query("SELECT id FROM enc_refuse ORDER BY ssn")
            .await
            .is_err());
        client.simple_query("ROLLBACK").await.unwrap();
        assert_usable(&client, "ROLLBACK").await;

        // Nothing of the refused writes happened.
        assert_eq!(
            admin_psql(DATABASE, "SELECT count(*) FROM enc_refuse").trim(),
            "1"
        );
        assert_eq!(
            both(&client, "SELECT ssn, email FROM enc_refuse").await,
            rows(&[&[Some("ref-ssn-1"), Some("ref-1@example.com")]])
        );
    })
    .await;
}

/// A row of the test table: id, name, ssn, email.
type Row<'a> = (i32, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// PostgreSQL's binary COPY format, as asyncpg's `copy_records_to_table` and tokio-postgres'
/// `BinaryCopyInWriter` send it: header, tuples of length-prefixed fields, trailer.
fn binary_copy(rows: &[Row]) -> Vec<u8> {
    let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
    data.extend_from_slice(&[0; 8]);
    for (id, name, ssn, email) in rows {
        data.extend_from_slice(&4i16.to_be_bytes());
        data.extend_from_slice(&4i32.to_be_bytes());
        data.extend_from_slice(&id.to_be_bytes());
        for field in [name, ssn, email] {
            match field {
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    data.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    data.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_copy_in_and_out_is_encrypted_and_decrypted() {
    use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
    use tokio_postgres::types::Type;
    let enc = start("enc_bincopy");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        // Raw data cut at odd places, inside the header, a length and a value.
        let data = binary_copy(&[
            (1, Some("ann"), Some("bin-ssn-1"), Some("bin-1@example.com")),
            (2, None, Some("bin\tssn-2\n"), None),
            (3, Some("cid"), Some("bin-ssn-3 \u{e9}"), Some("")),
        ]);
        let sink = client
            .copy_in::<_, Bytes>(
                "COPY enc_bincopy (id, name, ssn, email) FROM STDIN (FORMAT binary)",
            )
            .await
            .unwrap_or_else(|e| panic!("binary COPY FROM: {}", describe(&e)));
        pin_mut!(sink);
        for chunk in [
            &data[..7],
            &data[7..21],
            &data[21..40],
            &data[40..75],
            &data[75..],
        ] {
            sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert_eq!(sink.finish().await.unwrap(), 3);

        // A driver's own writer, with enough rows for several CopyData messages.
        let sink = client
            .copy_in("COPY enc_bincopy (id, ssn, email) FROM STDIN BINARY")
            .await
            .unwrap();
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT, Type::TEXT]);
        pin_mut!(writer);
        for id in 10..510 {
            let (ssn, email) = (format!("bin-ssn-{id}"), format!("bin-{id}@example.com"));
            let row: [&(dyn ToSql + Sync); 3] = [&id, &ssn, &email];
            writer.as_mut().write(&row).await.unwrap();
        }
        assert_eq!(writer.finish().await.unwrap(), 500);

        assert_stored_encrypted("enc_bincopy", &["bin-ssn", "bin\tssn", "@example.com"]);
        assert_eq!(stored("enc_bincopy", "email")[1], None, "NULL stays NULL");
        assert_eq!(
            both(
                &client,
                "SELECT name, ssn, email FROM enc_bincopy WHERE id < 10 OR id = 509 ORDER BY id"
            )
            .await,
            rows(&[
                &[Some("ann"), Some("bin-ssn-1"), Some("bin-1@example.com")],
                &[None, Some("bin\tssn-2\n"), None],
                &[Some("cid"), Some("bin-ssn-3 \u{e9}"), Some("")],
                &[None, Some("bin-ssn-509"), Some("bin-509@example.com")],
            ])
        );
        // Deterministic encryption of binary COPY data matches that of a literal.
        assert_eq!(
            both(
                &client,
                "SELECT id::text FROM enc_bincopy WHERE ssn = 'bin-ssn-250'"
            )
            .await,
            rows(&[&[Some("250")]])
        );

        // COPY TO STDOUT in binary, table and query forms.
        for sql in [
            "COPY enc_bincopy (id, ssn, email) TO STDOUT (FORMAT binary)",
            "COPY (SELECT id, ssn, email FROM enc_bincopy ORDER BY id) TO STDOUT WITH BINARY",
        ] {
            let stream = client
                .copy_out(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
            let rows = BinaryCopyOutStream::new(stream, &[Type::INT4, Type::TEXT, Type::TEXT]);
            pin_mut!(rows);
            let mut got = Vec::new();
            while let Some(row) = rows.next().await {
                let row = row.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
                got.push((
                    row.get::<i32>(0),
                    row.get::<Option<String>>(1),
                    row.get::<Option<String>>(2),
                ));
            }
            got.sort();
            assert_eq!(got.len(), 503, "{sql}");
            assert_eq!(got[1], (2, Some("bin\tssn-2\n".into()), None), "{sql}");
            assert_eq!(
                got[502],
                (
                    509,
                    Some("bin-ssn-509".into()),
                    Some("bin-509@example.com".into())
                ),
                "{sql}"
            );
        }

        // Data that is not in the binary format is not sent; the connection stays usable.
        let sink = client
            .copy_in::<_, Bytes>("COPY enc_bincopy (id, ssn) FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        pin_mut!(sink);
        let failed = match sink.send(Bytes::from_static(b"600\tplain-ssn\n")).await {
            Ok(()) => sink.finish().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let e = failed.expect_err("text data in a binary COPY was accepted");
        assert!(describe(&e).contains("PGCOPY"), "{}", describe(&e));
        assert_usable(&client, "binary COPY of text data").await;
        assert_eq!(
            admin_psql(DATABASE, "SELECT count(*) FROM enc_bincopy WHERE id = 600").trim(),
            "0"
        );
    })
    .await;
}

/// COPY options are string literals (`FORMAT 'csv'` is how asyncpg writes them): each COPY is
/// read with its own, even when another COPY differing only in them came first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_options_given_as_literals_are_read_as_given() {
    let enc = start("enc_copyopts");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        for (id, delimiter, null) in [(1, ';', "NIL"), (2, '|', "NONE"), (3, ';', "NONE")] {
            let sql = format!(
                "COPY enc_copyopts (id, name, ssn, email) FROM STDIN (FORMAT 'csv', DELIMITER '{delimiter}', NULL '{null}')"
            );
            let sink = client
                .copy_in::<_, Bytes>(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
            pin_mut!(sink);
            let row = format!("{id}{delimiter}n,{id}{delimiter}opt-ssn-{id}{delimiter}{null}\n");
            sink.send(Bytes::from(row)).await.unwrap();
            assert_eq!(sink.finish().await.unwrap(), 1, "{sql}");
        }
        assert_stored_encrypted("enc_copyopts", &["opt-ssn", "NIL", "NONE"]);
        assert_eq!(
            both(&client, "SELECT name, ssn, email FROM enc_copyopts ORDER BY id").await,
            rows(&[
                &[Some("n,1"), Some("opt-ssn-1"), None],
                &[Some("n,2"), Some("opt-ssn-2"), None],
                &[Some("n,3"), Some("opt-ssn-3"), None],
            ])
        );
        let stream = client
            .copy_out("COPY (SELECT id, ssn FROM enc_copyopts ORDER BY id) TO STDOUT (FORMAT 'csv', DELIMITER '|')")
            .await
            .unwrap();
        pin_mut!(stream);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(
            String::from_utf8(data).unwrap(),
            "1|opt-ssn-1\n2|opt-ssn-2\n3|opt-ssn-3\n"
        );
        // Whose data is whose cannot be told when one query holds two such COPYs.
        let sql = "COPY enc_copyopts (id, ssn) FROM STDIN; COPY enc_copyopts (id, email) FROM STDIN";
        let e = client.simple_query(sql).await.map(|_| ()).unwrap_err();
        assert_eq!(sqlstate(&e), Some("0A000"), "{}", describe(&e));
        assert_usable(&client, "two COPYs in one query").await;
    })
    .await;
}

/// A client that prepares a name it already holds gets 42P05, and the name keeps running its
/// first statement: an INSERT into encrypted columns stays encrypted (its values reached the
/// database as plaintext once, when the refused Parse dropped the name's plan). Both pool modes.
#[test]
fn a_duplicate_statement_name_keeps_its_encryption() {
    for (table, config) in [
        ("enc_dup_tx", ProxyConfig::transaction(2)),
        ("enc_dup_session", ProxyConfig::session(2)),
    ] {
        create_table(table);
        let enc = Encrypted::start(table, config);
        let run = run_python(
            &py_script("duplicate_statement.py"),
            &[&pgward_dsn(&enc.pgward), table],
            TIMEOUT,
        );
        let run = run.expect_success(table);
        assert!(
            run.stdout.contains("duplicate statement ok"),
            "{}",
            run.stdout
        );
        assert_stored_encrypted(table, &["dup-ssn"]);
        assert_eq!(stored(table, "ssn").len(), 2, "{table}: rows 1 and 3");
    }
}

/// asyncpg sends COPY data right behind the statement, before the server's CopyInResponse:
/// its rows must be encrypted all the same (they were passed on as plaintext once), in the
/// binary and the text format, and a COPY the server refuses stores nothing.
#[test]
fn asyncpg_copies_rows_it_sends_ahead_encrypted() {
    let enc = start("enc_apgcopy");
    let uri = format!(
        "postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
        enc.pgward.port
    );
    let run = run_python(
        &py_script("asyncpg_copy.py"),
        &[&uri, "enc_apgcopy"],
        TIMEOUT,
    );
    let run = run.expect_success("asyncpg COPY through pgward");
    assert!(run.stdout.contains("asyncpg copy ok"), "{}", run.stdout);
    assert_stored_encrypted("enc_apgcopy", &["apg-ssn", "@example.com", "apg-dup-ssn"]);
    assert_eq!(
        admin_psql(DATABASE, "SELECT count(*), count(email) FROM enc_apgcopy").trim(),
        "300|200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_cannot_be_analysed_are_refused_on_encrypted_tables() {
    let enc = start("enc_unparsed");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        for sql in [
            "DO $$ BEGIN INSERT INTO enc_unparsed VALUES (9, 'x', 'do-ssn', 'do@example.com'); END $$",
            // sqlparser cannot parse ORDER BY ... USING.
            "SELECT ssn FROM enc_unparsed ORDER BY id USING <",
        ] {
            let e = client.simple_query(sql).await.map(|_| ()).unwrap_err();
            let code = sqlstate(&e).map(str::to_owned);
            assert!(
                matches!(code.as_deref(), Some("0A000" | "42501")),
                "{sql}: {}",
                describe(&e)
            );
            assert_usable(&client, sql).await;
        }
        assert_eq!(
            admin_psql(DATABASE, "SELECT count(*) FROM enc_unparsed").trim(),
            "0",
            "the DO block did not run"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Integrity

/// A ciphertext moved to another column, or changed in one character, fails the read with
/// XX001 naming the column; the failure is counted and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_or_tampered_ciphertext_fails_the_read() {
    create_table("enc_tamper");
    let enc = Encrypted::start("enc_tamper", ProxyConfig::transaction(4).admin());
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query(
                "INSERT INTO enc_tamper VALUES (1, 'ann', 'tamper-ssn-1', 'tamper-1@example.com'),
                                               (2, 'bob', 'tamper-ssn-2', 'tamper-2@example.com')",
            )
            .await
            .unwrap();
        let failures_before = metric(&enc.metrics(), "pgward_crypto_failures_total");

        // The ssn ciphertext of row 1 copied into its email column.
        admin_psql(
            DATABASE,
            "UPDATE public.enc_tamper SET email = ssn WHERE id = 1",
        );
        let sql = "SELECT email FROM enc_tamper WHERE id = 1";
        assert_error_naming(
            client.simple_query(sql).await.map(|m| simple_rows(&m)),
            "XX001",
            "enc_tamper",
            &["email"],
            "moved ciphertext, simple",
        );
        assert_usable(&client, "a failed decryption").await;
        assert_error_naming(
            client.query(sql, &[]).await.map(|r| r.len()),
            "XX001",
            "enc_tamper",
            &["email"],
            "moved ciphertext, extended",
        );
        assert_usable(&client, "a failed decryption").await;
        // The untouched column of the same row still reads.
        assert_eq!(
            both(&client, "SELECT ssn FROM enc_tamper WHERE id = 1").await,
            rows(&[&[Some("tamper-ssn-1")]])
        );

        // One base64 character of row 2's ssn changed (well inside the payload).
        admin_psql(
            DATABASE,
            "UPDATE public.enc_tamper
                SET ssn = overlay(ssn placing
                      CASE WHEN substr(ssn, length(ssn) - 8, 1) = 'A' THEN 'B' ELSE 'A' END
                      from length(ssn) - 8 for 1)
              WHERE id = 2",
        );
        let sql = "SELECT name, ssn FROM enc_tamper WHERE id = 2";
        assert_error_naming(
            client.simple_query(sql).await.map(|m| simple_rows(&m)),
            "XX001",
            "enc_tamper",
            &["ssn"],
            "tampered ciphertext, simple",
        );
        assert_usable(&client, "a failed decryption").await;
        assert_error_naming(
            client.query(sql, &[]).await.map(|r| r.len()),
            "XX001",
            "enc_tamper",
            &["ssn"],
            "tampered ciphertext, extended",
        );
        assert_usable(&client, "a failed decryption").await;
        // A read of only the intact column of that row is fine.
        assert_eq!(
            both(&client, "SELECT email FROM enc_tamper WHERE id = 2").await,
            rows(&[&[Some("tamper-2@example.com")]])
        );

        let failures_after = metric(&enc.metrics(), "pgward_crypto_failures_total");
        assert!(
            failures_after > failures_before,
            "pgward_crypto_failures_total went from {failures_before} to {failures_after}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Decrypt permission

/// Every user logs in to PostgreSQL as `app`; the policy decides who may decrypt.
const DECRYPT_POLICY: &str = "\
p, encwriter, appdb, public.*, *, insert, allow
p, encwriter, appdb, public.*, *, select, allow
p, encwriter, appdb, public.enc_perm, *, decrypt, allow
p, decryptor, appdb, public.enc_shape, *, decrypt, allow
p, nodecrypt, appdb, public.*, *, select, allow
p, nodecrypt, appdb, pg_catalog.*, *, select, allow
p, decryptor, appdb, public.*, *, select, allow
p, decryptor, appdb, pg_catalog.*, *, select, allow
p, decryptor, appdb, public.enc_perm, *, decrypt, allow
";

fn policy_toml(dir: &Path) -> String {
    std::fs::write(dir.join("model.conf"), MODEL).expect("writing the model");
    std::fs::write(dir.join("policy.csv"), DECRYPT_POLICY).expect("writing the policy");
    format!(
        "\n[policy]\nenabled = true\nmodel = {}\npolicy = {}\non_unparsed = \"deny\"\n",
        toml_string(&dir.join("model.conf").to_string_lossy()),
        toml_string(&dir.join("policy.csv").to_string_lossy()),
    )
}

fn policy_config() -> ProxyConfig {
    let mut config = ProxyConfig::transaction(4);
    for user in ["encwriter", "nodecrypt", "decryptor"] {
        config = config.user(ProxyUser::new(user, "pw").backend(USER, Some(PASSWORD)));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_without_decrypt_see_null_or_ciphertext() {
    create_table("enc_perm");
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_toml(policy_dir.path());
    let enc = Encrypted::start_with("enc_perm", policy_config(), "null", &policy);
    deadline(LIMIT, async {
        let writer = enc.pgward.connect_as("encwriter", "pw").await;
        writer
            .simple_query(
                "INSERT INTO enc_perm VALUES (1, 'ann', 'perm-ssn-1', 'perm-1@example.com')",
            )
            .await
            .unwrap();
        writer
            .execute(
                "INSERT INTO enc_perm (id, name, ssn, email) VALUES (2, 'bob', $1, $2)",
                &[&"perm-ssn-2", &"perm-2@example.com"],
            )
            .await
            .unwrap();

        let sql = "SELECT id::text, name, ssn, email FROM enc_perm ORDER BY id";
        let nodecrypt = enc.pgward.connect_as("nodecrypt", "pw").await;
        assert_eq!(
            both(&nodecrypt, sql).await,
            rows(&[
                &[Some("1"), Some("ann"), None, None],
                &[Some("2"), Some("bob"), None, None],
            ]),
            "without decrypt: NULL for the designated columns, plaintext for the others"
        );
        let star = nodecrypt
            .query("SELECT * FROM enc_perm WHERE id = 1", &[])
            .await
            .unwrap();
        assert_eq!(
            star[0].get::<_, Option<String>>("name").as_deref(),
            Some("ann")
        );
        assert_eq!(star[0].get::<_, Option<String>>("ssn"), None);
        assert_eq!(star[0].get::<_, Option<String>>("email"), None);

        let decryptor = enc.pgward.connect_as("decryptor", "pw").await;
        assert_eq!(
            both(&decryptor, sql).await,
            rows(&[
                &[
                    Some("1"),
                    Some("ann"),
                    Some("perm-ssn-1"),
                    Some("perm-1@example.com")
                ],
                &[
                    Some("2"),
                    Some("bob"),
                    Some("perm-ssn-2"),
                    Some("perm-2@example.com")
                ],
            ])
        );
    })
    .await;
    drop(enc);

    // without_decrypt = "ciphertext": the same user gets the stored envelope instead.
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_toml(policy_dir.path());
    let enc = Encrypted::start_with("enc_perm", policy_config(), "ciphertext", &policy);
    deadline(LIMIT, async {
        let nodecrypt = enc.pgward.connect_as("nodecrypt", "pw").await;
        let got = both(
            &nodecrypt,
            "SELECT name, ssn, email FROM enc_perm ORDER BY id",
        )
        .await;
        assert_eq!(got.len(), 2);
        for row in &got {
            assert!(row[0].is_some());
            for value in &row[1..] {
                let value = value.as_deref().unwrap_or("<NULL>");
                assert!(
                    value.starts_with("pgw1:"),
                    "expected an envelope, got {value}"
                );
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Operations: metrics, logs, session mode

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_operations_are_counted() {
    create_table("enc_metrics");
    let enc = Encrypted::start("enc_metrics", ProxyConfig::transaction(2).admin());
    deadline(LIMIT, async {
        let client = enc.connect().await;
        let encrypt = "pgward_crypto_operations_total{op=\"encrypt\"}";
        let decrypt = "pgward_crypto_operations_total{op=\"decrypt\"}";
        let before = enc.metrics();
        client
            .simple_query("INSERT INTO enc_metrics VALUES (1, 'a', 'm-ssn-1', 'm-1@example.com')")
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO enc_metrics (id, name, ssn, email) VALUES (2, 'b', $1, $2)",
                &[&"m-ssn-2", &"m-2@example.com"],
            )
            .await
            .unwrap();
        let written = enc.metrics();
        assert!(
            metric(&written, encrypt) > metric(&before, encrypt),
            "{encrypt} did not increase after two INSERTs:\n{written}"
        );
        both(&client, "SELECT ssn, email FROM enc_metrics").await;
        let read = enc.metrics();
        assert!(
            metric(&read, decrypt) > metric(&written, decrypt),
            "{decrypt} did not increase after SELECTs:\n{read}"
        );
        assert_eq!(
            metric(&read, "pgward_crypto_failures_total"),
            metric(&before, "pgward_crypto_failures_total"),
            "no failures in a clean run"
        );
    })
    .await;
}

/// With debug logging, pgward's log carries no plaintext of a designated column, whatever
/// path the value took (literal, parameter, COPY, search, refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_contain_no_plaintext() {
    create_table("enc_logs");
    let enc = Encrypted::start(
        "enc_logs",
        ProxyConfig::transaction(2).env("RUST_LOG", "debug"),
    );
    let secrets = [
        "secret-ssn-4711",
        "secret-mail-4711@example.com",
        "secret-ssn-4712",
        "secret-mail-4712@example.com",
        "secret-ssn-4713",
        "secret-ssn-4714",
    ];
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query("INSERT INTO enc_logs VALUES (1, 'a', 'secret-ssn-4711', 'secret-mail-4711@example.com')")
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO enc_logs (id, name, ssn, email) VALUES (2, 'b', $1, $2)",
                &[&"secret-ssn-4712", &"secret-mail-4712@example.com"],
            )
            .await
            .unwrap();
        let sink = client
            .copy_in::<_, Bytes>("COPY enc_logs (id, ssn) FROM STDIN")
            .await
            .unwrap();
        pin_mut!(sink);
        sink.send(Bytes::from_static(b"3\tsecret-ssn-4713\n")).await.unwrap();
        sink.finish().await.unwrap();
        both(&client, "SELECT ssn, email FROM enc_logs WHERE ssn = 'secret-ssn-4711'").await;
        client
            .query("SELECT id FROM enc_logs WHERE ssn = $1", &[&"secret-ssn-4712"])
            .await
            .unwrap();
        // A refused statement with a plaintext in it.
        assert!(client
            .simple_query("SELECT id FROM enc_logs WHERE ssn LIKE 'secret-ssn-4714%'")
            .await
            .is_err());
        assert_usable(&client, "LIKE").await;
    })
    .await;
    let log = enc.pgward.log();
    assert!(
        log.to_lowercase().contains("debug"),
        "RUST_LOG=debug did not reach pgward; log:\n{log}"
    );
    let leaks: Vec<&str> = log
        .lines()
        .filter(|line| secrets.iter().any(|s| line.contains(s)))
        .collect();
    assert!(
        leaks.is_empty(),
        "{} log lines contain plaintext of an encrypted column, e.g.:\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(20)
            .map(|l| l.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Session mode, with the key from an environment variable: write, search, read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_with_a_key_from_the_environment() {
    create_table("enc_session");
    let config = ProxyConfig::session(2)
        .env("PGWARD_TEST_KEY_K1", &new_key())
        .extra(&encryption_toml(
            "env:PGWARD_TEST_KEY_K1",
            "enc_session",
            "null",
        ));
    let pgward = config.start();
    deadline(LIMIT, async {
        let client = pgward.connect().await;
        client
            .simple_query(
                "INSERT INTO enc_session VALUES (1, 'ann', 'sess-ssn-1', 'sess-1@example.com')",
            )
            .await
            .unwrap();
        let insert = client
            .prepare("INSERT INTO enc_session (id, name, ssn, email) VALUES ($1, 'bob', $2, $3)")
            .await
            .unwrap();
        client
            .execute(&insert, &[&2i32, &"sess-ssn-2", &"sess-2@example.com"])
            .await
            .unwrap();
        assert_stored_encrypted("enc_session", &["sess-ssn", "@example.com"]);
        assert_eq!(
            both(&client, "SELECT ssn, email FROM enc_session ORDER BY id").await,
            rows(&[
                &[Some("sess-ssn-1"), Some("sess-1@example.com")],
                &[Some("sess-ssn-2"), Some("sess-2@example.com")],
            ])
        );
        let found = extended(
            &client,
            "SELECT id::text, email FROM enc_session WHERE ssn = $1",
            &[&"sess-ssn-2"],
        )
        .await;
        assert_eq!(found, rows(&[&[Some("2"), Some("sess-2@example.com")]]));
        assert_error_naming(
            client
                .simple_query("SELECT id FROM enc_session ORDER BY ssn")
                .await
                .map(|m| simple_rows(&m)),
            "0A000",
            "enc_session",
            &["ssn"],
            "ORDER BY in session mode",
        );
        assert_usable(&client, "a refusal").await;
    })
    .await;
}

/// Whatever the shape of a query, a designated value reaches a client decrypted (a user with
/// decrypt), as NULL (a user without), or not at all (refused): never as the stored envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_query_shape_hands_out_the_stored_envelope() {
    create_table("enc_shape");
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_toml(policy_dir.path());
    let enc = Encrypted::start_with("enc_shape", policy_config(), "null", &policy);
    deadline(LIMIT, async {
        let writer = enc.pgward.connect_as("encwriter", "pw").await;
        writer
            .simple_query("INSERT INTO enc_shape (id, name, ssn, email) VALUES (1, 'ann', 'shape-ssn-1', 'shape-1@example.com')")
            .await
            .unwrap();
        let shapes = [
            "SELECT (SELECT ssn FROM enc_shape WHERE id = 1) AS s",
            "SELECT x.s FROM (SELECT (SELECT email FROM enc_shape WHERE id = 1) AS s) AS x",
            "SELECT p::text FROM enc_shape p",
            "SELECT row_to_json(p)::text FROM enc_shape p",
            "SELECT CASE WHEN id = 1 THEN ssn END FROM enc_shape",
            "SELECT coalesce(email, 'none') FROM enc_shape",
            "SELECT ARRAY(SELECT email FROM enc_shape)::text",
            "SELECT max(ssn) FROM enc_shape",
            "SELECT string_agg(email, ',') FROM enc_shape",
            "SELECT ssn FROM enc_shape UNION ALL SELECT email FROM enc_shape",
        ];
        let mut wrong = Vec::new();
        for user in ["decryptor", "nodecrypt"] {
            let client = enc.pgward.connect_as(user, "pw").await;
            for sql in shapes {
                let text = match client.simple_query(sql).await {
                    Ok(messages) => format!("{:?}", simple_rows(&messages)),
                    Err(_) => continue,
                };
                let leaked = text.contains("pgw1:")
                    || (user == "nodecrypt" && text.contains("shape-"));
                if leaked {
                    wrong.push(format!("{user}: {sql}\n    got {text}"));
                }
            }
            assert_usable(&client, "the shapes").await;
        }
        assert!(
            wrong.is_empty(),
            "designated values left pgward undecrypted (or decrypted for a user without decrypt):\n{}",
            wrong.join("\n")
        );
    })
    .await;
}

/// However a value is written, it is encrypted with exactly the value PostgreSQL would have
/// stored, or the statement is refused: plaintext never reaches the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_writing_a_value_encrypts_it_or_is_refused() {
    create_plain_table("enc_wshape_src", "id int, v text");
    admin_psql(
        DATABASE,
        "INSERT INTO enc_wshape_src VALUES (1, 'wshape-src')",
    );
    let enc = start("enc_wshape");
    deadline(LIMIT, async {
        let client = enc.connect().await;
        client
            .simple_query("INSERT INTO enc_wshape (id, ssn) VALUES (1, 'wshape-0')")
            .await
            .unwrap();
        // (statement, the id it writes, the value PostgreSQL would store)
        let writes: &[(&str, i32, &str)] = &[
            ("WITH x AS (INSERT INTO enc_wshape (id, ssn) VALUES (10, 'wshape-1') RETURNING ssn) SELECT ssn FROM x", 10, "wshape-1"),
            ("INSERT INTO enc_wshape (id, ssn) SELECT 11, 'wshape-2'", 11, "wshape-2"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (12, 'wshape-' || '3')", 12, "wshape-3"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (13, 'wshape-5'::text)", 13, "wshape-5"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (14, $$wshape-6$$)", 14, "wshape-6"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (15, E'wshape-7\\x41')", 15, "wshape-7A"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (16, (SELECT 'wshape-9'))", 16, "wshape-9"),
            ("INSERT INTO enc_wshape (id, ssn) SELECT id + 16, v FROM enc_wshape_src", 17, "wshape-src"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (18, lower('WSHAPE-10'))", 18, "wshape-10"),
            ("MERGE INTO enc_wshape t USING (SELECT 19 AS id) s ON t.id = s.id WHEN NOT MATCHED THEN INSERT (id, ssn) VALUES (s.id, 'wshape-11')", 19, "wshape-11"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET ssn = 'wshape-12'", 1, "wshape-12"),
            ("UPDATE enc_wshape SET email = concat('wshape-', '13') WHERE id = 1", 1, "wshape-13"),
            ("PREPARE wshape_p (int, text) AS INSERT INTO enc_wshape (id, ssn) VALUES ($1, $2); EXECUTE wshape_p(20, 'wshape-14')", 20, "wshape-14"),
            ("INSERT INTO enc_wshape (id, ssn) VALUES (21, U&'wshape-15\\0041')", 21, "wshape-15A"),
        ];
        let mut accepted = Vec::new();
        for (sql, id, value) in writes {
            match client.simple_query(sql).await {
                Ok(_) => accepted.push((*sql, *id, *value)),
                Err(e) => {
                    let described = describe(&e);
                    assert!(
                        described.starts_with("0A000") || described.starts_with("42501"),
                        "{sql}: {described}"
                    );
                    assert_usable(&client, sql).await;
                }
            }
        }
        // With a parameter inside an expression.
        let param = client
            .execute(
                "INSERT INTO enc_wshape (id, ssn) VALUES (22, $1 || '-16')",
                &[&"wshape"],
            )
            .await;
        if param.is_ok() {
            accepted.push(("$1 || '-16'", 22, "wshape-16"));
        }

        let stored_text = stored_rows("enc_wshape");
        let mut wrong = Vec::new();
        if stored_text.contains("wshape-") {
            wrong.push(format!("plaintext stored:\n{stored_text}"));
        }
        for (sql, id, value) in &accepted {
            let column = if value == &"wshape-13" { "email" } else { "ssn" };
            let got = client
                .query(
                    &format!("SELECT {column} FROM enc_wshape WHERE id = $1"),
                    &[id],
                )
                .await;
            match got {
                Ok(r) if r.len() == 1 && r[0].get::<_, Option<String>>(0).as_deref() == Some(value) => {}
                Ok(r) => wrong.push(format!(
                    "{sql}: accepted, then id {id} reads {:?} instead of {value:?}",
                    r.iter().map(|r| r.get::<_, Option<String>>(0)).collect::<Vec<_>>()
                )),
                Err(e) => wrong.push(format!(
                    "{sql}: accepted, then id {id} does not read: {}",
                    describe(&e)
                )),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    })
    .await;
}

/// During a rotation (rows under k1 and under k2, both keys configured), equality finds a
/// value whichever key it was written under: literals (`=`, `<>`, `IN`) and a prepared
/// `= $1`, whose extra parameter pgward adds and hides from the client.
#[tokio::test]
async fn equality_matches_every_key_during_a_rotation() {
    deadline(LIMIT, async {
        let table = "enc_rotating";
        create_table(table);
        let files = tempfile::tempdir().expect("temp dir");
        let (k1, k2) = (files.path().join("k1.key"), files.path().join("k2.key"));
        std::fs::write(&k1, new_key()).unwrap();
        std::fs::write(&k2, new_key()).unwrap();
        let keys = |active: &str| {
            format!(
                "\n[[encryption.keys]]\nid = \"k1\"\nmaterial = {}\nactive = {}\n\
                 \n[[encryption.keys]]\nid = \"k2\"\nmaterial = {}\nactive = {}\n\
                 \n[[encryption.columns]]\ntable = \"public.{table}\"\ncolumn = \"ssn\"\nmode = \"deterministic\"\n",
                toml_string(&format!("file:{}", k1.display())),
                active == "k1",
                toml_string(&format!("file:{}", k2.display())),
                active == "k2",
            )
        };
        // Rows 1-2 written under k1, then the active key becomes k2 and rows 3-4 follow.
        let before = ProxyConfig::transaction(2).extra(&keys("k1")).start();
        let client = before.connect().await;
        client
            .batch_execute(&format!(
                "INSERT INTO {table} (id, ssn) VALUES (1, 'same-1'), (2, 'only-k1')"
            ))
            .await
            .unwrap();
        drop(client);
        drop(before);
        let after = ProxyConfig::transaction(2).extra(&keys("k2")).start();
        let client = after.connect().await;
        client
            .batch_execute(&format!(
                "INSERT INTO {table} (id, ssn) VALUES (3, 'same-1'), (4, 'only-k2')"
            ))
            .await
            .unwrap();
        let stored_keys: Vec<String> = stored(table, "ssn")
            .into_iter()
            .flatten()
            .map(|v| v.split(':').nth(1).unwrap_or_default().to_owned())
            .collect();
        assert_eq!(stored_keys, ["k1", "k1", "k2", "k2"]);

        let ids = |rows: Vec<Vec<Option<String>>>| -> Vec<String> {
            rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
        };
        let sql = format!("SELECT id::text FROM {table} WHERE ssn = 'same-1' ORDER BY id");
        assert_eq!(ids(simple(&client, &sql).await), ["1", "3"]);
        let sql = format!("SELECT id::text FROM {table} WHERE ssn IN ('only-k1', 'only-k2') ORDER BY id");
        assert_eq!(ids(simple(&client, &sql).await), ["2", "4"]);
        let sql = format!("SELECT id::text FROM {table} WHERE ssn <> 'same-1' ORDER BY id");
        assert_eq!(ids(simple(&client, &sql).await), ["2", "4"]);

        let statement = client
            .prepare(&format!("SELECT id::text, ssn FROM {table} WHERE ssn = $1 ORDER BY id"))
            .await
            .unwrap();
        assert_eq!(statement.params().len(), 1, "pgward's extra parameter is hidden");
        for (value, expected) in [("same-1", vec!["1", "3"]), ("only-k1", vec!["2"]), ("only-k2", vec!["4"])] {
            let rows = client.query(&statement, &[&value]).await.unwrap();
            let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(got, expected, "{value}");
            for row in &rows {
                assert_eq!(row.get::<_, String>(1), value);
            }
        }
    })
    .await;
}

/// A designated column that is not text cannot hold ciphertext: statements on its table are
/// refused with 0A000 saying so, before anything reaches PostgreSQL.
#[tokio::test]
async fn a_designated_column_must_be_text() {
    deadline(LIMIT, async {
        let table = "enc_not_text";
        create_plain_table(table, "id int PRIMARY KEY, ssn int, email text");
        let enc = Encrypted::start(table, ProxyConfig::transaction(2));
        let client = enc.connect().await;
        for sql in [
            format!("INSERT INTO {table} (id, ssn) VALUES (1, 123)"),
            format!("SELECT ssn FROM {table}"),
        ] {
            let err = client.simple_query(&sql).await.expect_err(&sql);
            assert_eq!(sqlstate(&err), Some("0A000"), "{sql}: {err:?}");
            assert!(
                describe(&err).contains("must be of type text"),
                "{sql}: {}",
                describe(&err)
            );
        }
        assert_usable(&client, "the type refusal").await;
        assert_eq!(
            admin_psql(DATABASE, &format!("SELECT count(*) FROM {table}")),
            "0"
        );
    })
    .await;
}
