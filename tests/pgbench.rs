//! pgbench through pgward: initialisation (COPY, VACUUM, DDL) and 50 clients on a pool of 10
//! in transaction mode, in each query mode. Correctness only: every transaction must succeed.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{admin_psql, pg_client, run_program, Finished, ProxyConfig};

/// `pgbench -i -s 1` once per test binary, through its own pgward.
fn initialized() {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INIT.get_or_init(|| {
        let pgward = ProxyConfig::transaction(10).start();
        let init = run_program(
            pg_client("pgbench", &pgward).args(["-i", "-s", "1"]),
            Duration::from_secs(180),
        );
        if !init.status.success() {
            return Err(format!(
                "pgbench -i failed ({}):\n{}\n{}\npgward log:\n{}",
                init.status,
                init.stdout,
                init.stderr,
                pgward.log()
            ));
        }
        Ok(())
    });
    if let Err(reason) = result {
        panic!("{reason}");
    }
    assert_eq!(
        admin_psql("appdb", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
}

/// The number after `label` on its line of pgbench's report, e.g.
/// `number of failed transactions: 0 (0.000%)` -> 0.
fn reported(output: &str, label: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(label)?.trim_start();
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    })
}

fn bench(mode: &str) {
    initialized();
    // Fifty clients queue for ten connections; waiting is expected, not under test here.
    let pgward = ProxyConfig::transaction(10).checkout_timeout("30s").start();
    let run: Finished = run_program(
        pg_client("pgbench", &pgward).args(["-n", "-c", "50", "-j", "2", "-T", "5", "-M", mode]),
        Duration::from_secs(120),
    );
    let context = format!(
        "pgbench -M {mode} ({}):\nstdout:\n{}\nstderr:\n{}",
        run.status, run.stdout, run.stderr
    );
    assert!(run.status.success(), "{context}");
    let processed = reported(&run.stdout, "number of transactions actually processed:");
    let failed = reported(&run.stdout, "number of failed transactions:");
    assert!(
        processed.is_some_and(|n| n > 0),
        "no transactions processed; {context}"
    );
    assert_eq!(failed, Some(0), "{context}");
}

#[test]
fn pgbench_simple_protocol() {
    bench("simple");
}

#[test]
fn pgbench_extended_protocol() {
    bench("extended");
}

#[test]
fn pgbench_prepared_statements() {
    bench("prepared");
}

#[test]
fn report_lines_are_parsed() {
    let out = "number of transactions actually processed: 12345\n\
               number of failed transactions: 0 (0.000%)\n";
    assert_eq!(
        reported(out, "number of transactions actually processed:"),
        Some(12345)
    );
    assert_eq!(reported(out, "number of failed transactions:"), Some(0));
    assert_eq!(reported(out, "latency average ="), None);
}
