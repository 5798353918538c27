//! psql through pgward, the way a person uses it: meta-commands, multi-statement `-c`
//! strings and `\copy` (password from PGPASSWORD).

mod common;

use std::fs;
use std::time::Duration;

use common::{admin_psql, psql, run_program, ProxyConfig};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn describe_lists_a_created_table() {
    let pgward = ProxyConfig::transaction(2).start();
    run_program(
        psql(&pgward).args([
            "-c",
            "CREATE TABLE psql_described (id int PRIMARY KEY, note text)",
        ]),
        TIMEOUT,
    )
    .expect_success("CREATE TABLE");

    let tables = run_program(psql(&pgward).args(["-c", r"\d"]), TIMEOUT).expect_success(r"\d");
    assert!(
        tables
            .stdout
            .lines()
            .any(|l| l.contains("|psql_described|table|")),
        "\\d does not list the table:\n{}",
        tables.stdout
    );

    let columns = run_program(psql(&pgward).args(["-c", r"\d psql_described"]), TIMEOUT)
        .expect_success(r"\d table");
    assert!(
        columns.stdout.lines().any(|l| l.starts_with("note|text|")),
        "{}",
        columns.stdout
    );
}

#[test]
fn multi_statement_command_string() {
    let pgward = ProxyConfig::transaction(2).start();
    let out = run_program(
        psql(&pgward).args([
            "-c",
            "CREATE TABLE psql_multi (x int); INSERT INTO psql_multi VALUES (1), (2), (3); \
             SELECT sum(x) FROM psql_multi",
        ]),
        TIMEOUT,
    )
    .expect_success("multi-statement -c");
    // psql shows every statement's result, the query's rows last.
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["CREATE TABLE", "INSERT 0 3", "6"]
    );
    assert_eq!(admin_psql("appdb", "SELECT count(*) FROM psql_multi"), "3");

    // An error in the string fails the whole string, and psql says why.
    let failed = run_program(
        psql(&pgward).args(["-c", "INSERT INTO psql_multi VALUES (4); SELECT 1/0"]),
        TIMEOUT,
    );
    assert!(
        !failed.status.success(),
        "division by zero must fail: {failed:?}"
    );
    assert!(
        failed.stderr.contains("division by zero"),
        "{}",
        failed.stderr
    );
    assert_eq!(admin_psql("appdb", "SELECT count(*) FROM psql_multi"), "3");
}

#[test]
fn copy_into_and_out_of_a_file() {
    let pgward = ProxyConfig::transaction(2).start();
    let input = pgward.scratch_dir().join("in.tsv");
    let output = pgward.scratch_dir().join("out.tsv");
    let rows: String = (1..=5000).map(|i| format!("{i}\tname {i}\n")).collect();
    fs::write(&input, &rows).unwrap();

    run_program(
        psql(&pgward).args(["-c", "CREATE TABLE psql_copy (id int, name text)"]),
        TIMEOUT,
    )
    .expect_success("CREATE TABLE");
    let copied_in = run_program(
        psql(&pgward).args([
            "-c",
            &format!(r"\copy psql_copy FROM '{}'", input.display()),
        ]),
        TIMEOUT,
    )
    .expect_success(r"\copy from");
    assert_eq!(copied_in.stdout.trim(), "COPY 5000");

    let totals = run_program(
        psql(&pgward).args(["-c", "SELECT count(*), sum(id) FROM psql_copy"]),
        TIMEOUT,
    )
    .expect_success("SELECT");
    assert_eq!(totals.stdout.trim(), "5000|12502500");

    run_program(
        psql(&pgward).args([
            "-c",
            &format!(
                r"\copy (SELECT * FROM psql_copy ORDER BY id) TO '{}'",
                output.display()
            ),
        ]),
        TIMEOUT,
    )
    .expect_success(r"\copy to");
    assert!(
        fs::read_to_string(&output).unwrap() == rows,
        "the exported file differs from the imported one"
    );
}
