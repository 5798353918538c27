//! pgbench comparisons on one throwaway cluster (a primary and two streaming replicas), in one run:
//! 1. `pgbench -S` against PostgreSQL directly, through pgward and through PgBouncer, all in
//!    transaction mode, in front of the primary;
//! 2. `pgbench -S` with 32 clients through pgward in front of the primary only, then in front of
//!    the primary and both replicas, with the transactions each server ran;
//! 3. `pgbench -S` (simple, extended, prepared; 16 clients) through pgward with the access
//!    policy off and on (a policy of a few dozen lines), runs alternating;
//! 4. column encryption: one client selecting 100k rows, with two encrypted columns and
//!    from the same table unencrypted, through one pgward (simple, extended, prepared);
//! 5. the result cache: 16 clients reading a hot set of 1000 accounts, direct, through pgward
//!    without the cache and with it (simple and prepared), with the hit ratio and pgward's CPU
//!    per transaction;
//! 6. efficiency, pgward beside PgBouncer, both with pool size 10 in transaction mode: proxy
//!    CPU per transaction and throughput (simple, extended, prepared; 16 and 64 clients; pgward
//!    also with the access policy, with the result cache, and with `worker_threads = 1`),
//!    memory per idle client (4000 idle clients each, then pgward's RSS with 10k), the
//!    latency each adds at one client (pgward also with `worker_threads = 1`), and
//!    pgward with one and two worker threads (and, where `taskset` exists, pinned to one CPU).
//!    It first raises RLIMIT_NOFILE to 65536 (only the soft limit, up to the hard one, where
//!    raising the hard limit is refused), which both proxies inherit, to hold 10k clients.
//!
//! Run with `cargo bench --bench pgbench`. `PGWARD_BENCH_SECONDS` sets the length of each
//! measured run (default 10);
//! `PGWARD_BENCH=poolers|replicas|policy|encryption|cache|efficiency` runs one part only, and
//! `PGWARD_BENCH=efficiency:cpu|memory|latency|threads` one section of the efficiency part.
//! PgBouncer is measured only when its binary is installed.
//!
//! A run that fails (non-zero exit or failed transactions) is shown in the table as FAILED with
//! its reason, never hidden.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pgward::cluster::{pg_bin_dir, Cluster, ClusterOptions};

/// Login used for every benchmark connection (created by the cluster harness).
const USER: &str = "app";
const PASSWORD: &str = "app-secret";
const DATABASE: &str = "appdb";
/// Server connections per proxy pool, the same for pgward and PgBouncer.
const POOL_SIZE: usize = 16;
const SCALE: u32 = 10;
const CLIENT_COUNTS: [u32; 2] = [16, 64];
/// Clients of the replica comparison.
const REPLICA_CLIENTS: u32 = 32;
const THREADS: u32 = 2;
const MODES: [&str; 3] = ["simple", "extended", "prepared"];
/// Room for the direct runs (64 clients) plus both proxy pools and the harness.
const MAX_CONNECTIONS: &str = "200";
/// How long a proxy gets to start accepting TCP connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack beyond `-T` before a hung pgbench run is killed and reported.
const RUN_GRACE: Duration = Duration::from_secs(60);

/// Set by the SIGINT handler so the run stops and the cleanup in `Drop` impls still happens.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn main() -> Result<()> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    let seconds = bench_seconds()?;
    let warmup = (seconds / 3).clamp(1, 5);
    let scratch = tempfile::Builder::new().prefix("pgward-bench-").tempdir()?;
    let pgbench = pgbench_binary();

    eprintln!("pgbench comparison: {seconds} s per run, {warmup} s warmup per target");
    eprintln!("pgward:  {}", env!("CARGO_BIN_EXE_pgward"));
    eprintln!(
        "pgbench: {}",
        version_line(&pgbench).unwrap_or_else(|| "unknown".into())
    );

    let part = std::env::var("PGWARD_BENCH").unwrap_or_default();
    let mut options = ClusterOptions {
        replicas: 2,
        ..ClusterOptions::default()
    };
    options
        .settings
        .push(("max_connections".into(), MAX_CONNECTIONS.into()));
    let cluster = Cluster::start(&options).map_err(|e| anyhow!("starting PostgreSQL: {e}"))?;
    let pg_port = cluster.primary.port;
    eprintln!("PostgreSQL primary on 127.0.0.1:{pg_port}");

    initialize(&pgbench, pg_port)?;

    // `efficiency:memory` runs one section of a part.
    let (part, section) = part.split_once(':').unwrap_or((part.as_str(), ""));
    let wanted = |name: &str| part.is_empty() || part == name;
    if wanted("poolers") {
        poolers(&pgbench, pg_port, seconds, warmup, scratch.path());
    }
    if wanted("replicas") && !interrupted() {
        replicas(&pgbench, &cluster, seconds, scratch.path());
    }
    if wanted("policy") && !interrupted() {
        policy(&pgbench, pg_port, seconds, warmup, scratch.path());
    }
    if wanted("cache") && !interrupted() {
        cache(&pgbench, &cluster, seconds, warmup, scratch.path());
    }
    if wanted("encryption") && !interrupted() {
        if let Err(e) = encryption(&pgbench, pg_port, seconds, warmup, scratch.path()) {
            eprintln!("encryption bench: {e:#}");
        }
    }
    if wanted("efficiency") && !interrupted() {
        let bench = Bench {
            pgbench: &pgbench,
            pg_port,
            seconds,
            warmup,
            scratch: scratch.path(),
        };
        efficiency(&bench, section);
    }
    if interrupted() {
        eprintln!("interrupted; results are incomplete");
    }
    drop(cluster);
    Ok(())
}

/// Part 1: direct, pgward and PgBouncer in front of the primary.
fn poolers(pgbench: &Path, pg_port: u16, seconds: u64, warmup: u64, scratch: &Path) {
    // Each target is either a port to benchmark or the reason it cannot be measured.
    let pgward = start_pgward(scratch, &[("primary", pg_port, "primary")], "");
    let pgbouncer = start_pgbouncer(scratch, pg_port);
    let targets: [(&str, Endpoint); 3] = [
        ("direct", Ok(pg_port)),
        ("pgward", endpoint(&pgward)),
        ("pgbouncer", endpoint(&pgbouncer)),
    ];

    for (name, endpoint) in &targets {
        if let Ok(port) = endpoint {
            eprintln!(
                "warmup {name}: {warmup} s, simple, {} clients",
                CLIENT_COUNTS[0]
            );
            let outcome = run_pgbench(pgbench, *port, "simple", CLIENT_COUNTS[0], warmup, scratch);
            eprintln!("warmup {name}: {outcome}");
        }
    }

    let mut rows = Vec::new();
    'matrix: for mode in MODES {
        for clients in CLIENT_COUNTS {
            let mut outcomes = Vec::with_capacity(targets.len());
            for (name, endpoint) in &targets {
                if interrupted() {
                    break 'matrix;
                }
                let outcome = match endpoint {
                    Ok(port) => run_pgbench(pgbench, *port, mode, clients, seconds, scratch),
                    Err(skip) => skip.clone(),
                };
                eprintln!("{mode:>8} {clients:>3} clients {name:>9}: {outcome}");
                outcomes.push(outcome);
            }
            rows.push(Row {
                mode,
                clients,
                direct: outcomes[0].clone(),
                pgward: outcomes[1].clone(),
                pgbouncer: outcomes[2].clone(),
            });
        }
    }

    print_table(seconds, &rows);
    if let Err(Outcome::Skipped(reason)) = &pgbouncer {
        println!("\nPgBouncer: {reason}");
    }
}

/// Part 2: pgward in front of the primary only, then of the primary and both replicas, with
/// the transactions each server committed (pg_stat_database) during the measured run.
fn replicas(pgbench: &Path, cluster: &Cluster, seconds: u64, scratch: &Path) {
    let servers = [
        ("primary", cluster.primary.port, "primary"),
        ("r1", cluster.replicas[0].port, "replica"),
        ("r2", cluster.replicas[1].port, "replica"),
    ];
    let commits = |port: u16| -> Option<u64> {
        cluster
            .psql(
                port,
                DATABASE,
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            )
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut rows = Vec::new();
    for (label, backends) in [
        ("primary only", &servers[..1]),
        ("primary + 2 replicas", &servers[..]),
    ] {
        if interrupted() {
            break;
        }
        let outcome = match start_pgward(scratch, backends, "") {
            Ok(proxy) => {
                // Warm up every pool before counting.
                run_pgbench(pgbench, proxy.port, "simple", REPLICA_CLIENTS, 2, scratch);
                // Statistics reach pg_stat_database within a second of a transaction.
                sleep(Duration::from_millis(1500));
                let before: Vec<_> = servers.iter().map(|s| commits(s.1)).collect();
                let outcome = run_pgbench(
                    pgbench,
                    proxy.port,
                    "simple",
                    REPLICA_CLIENTS,
                    seconds,
                    scratch,
                );
                sleep(Duration::from_millis(1500));
                let after: Vec<_> = servers.iter().map(|s| commits(s.1)).collect();
                let spread: Vec<String> = before
                    .iter()
                    .zip(&after)
                    .map(|(b, a)| match (b, a) {
                        (Some(b), Some(a)) => (a - b).to_string(),
                        _ => "?".into(),
                    })
                    .collect();
                (outcome, spread)
            }
            Err(failed) => (failed, vec!["-".into(); 3]),
        };
        eprintln!("replicas {label}: {}", outcome.0);
        rows.push((label, outcome));
    }
    println!(
        "\n## pgbench -S -M simple, {REPLICA_CLIENTS} clients, {seconds} s, through pgward (pool size {POOL_SIZE} per server)\n"
    );
    println!("| backends | tps | vs primary only | primary xacts | r1 xacts | r2 xacts |");
    println!("|---|---:|---:|---:|---:|---:|");
    let base = rows.first().map(|r| r.1 .0.clone());
    for (label, (outcome, spread)) in &rows {
        println!(
            "| {label} | {} | {} | {} |",
            cell(outcome),
            base.as_ref().map_or("n/a".into(), |b| ratio(outcome, b)),
            spread.join(" | ")
        );
    }
}

/// A policy of the size and shape a real deployment has: roles over a dozen schemas, column
/// denies, and the rules pgbench's user needs somewhere in the middle.
fn bench_policy() -> String {
    let mut lines = vec![
        "p, reader, *, pg_catalog.*, *, select, allow".to_owned(),
        "p, reader, *, information_schema.*, *, select, allow".to_owned(),
    ];
    for schema in [
        "sales",
        "billing",
        "hr",
        "audit",
        "inventory",
        "crm",
        "web",
        "ops",
    ] {
        lines.push(format!(
            "p, {schema}_reader, *, {schema}.*, *, select, allow"
        ));
        lines.push(format!(
            "p, {schema}_writer, *, {schema}.*, *, insert, allow"
        ));
        lines.push(format!(
            "p, {schema}_writer, *, {schema}.*, *, update, allow"
        ));
        lines.push(format!("g, {schema}_writer, {schema}_reader"));
    }
    lines.extend(
        [
            "p, reader, appdb, public.pgbench_*, *, select, allow",
            "p, writer, appdb, public.pgbench_*, *, insert, allow",
            "p, writer, appdb, public.pgbench_*, *, update, allow",
            "g, writer, reader",
            "p, no_pii, *, public.customers, ssn, *, deny",
            "p, no_pii, *, hr.*, salary, *, deny",
            "p, no_pii, *, public.pgbench_accounts, filler, *, deny",
            "p, dba, *, *, *, *, allow",
            "g, app, writer",
            "g, app, no_pii",
            "g, app, sales_reader",
            "g, app, crm_writer",
        ]
        .map(str::to_owned),
    );
    lines.join("\n") + "\n"
}

/// Writes the bench policy and the model to `scratch` and returns the pgward config section
/// that turns them on.
fn policy_section(scratch: &Path) -> std::io::Result<String> {
    let files = scratch.join("policy");
    fs::create_dir_all(&files)?;
    fs::write(
        files.join("model.conf"),
        include_str!("../policies/model.conf"),
    )?;
    fs::write(files.join("policy.csv"), bench_policy())?;
    Ok(format!(
        "\n[policy]\nenabled = true\nmodel = {:?}\npolicy = {:?}\n",
        files.join("model.conf"),
        files.join("policy.csv")
    ))
}

/// Part 3: the cost of the access policy, pgward with it off and on, runs alternating.
fn policy(pgbench: &Path, pg_port: u16, seconds: u64, warmup: u64, scratch: &Path) {
    let on = match policy_section(scratch) {
        Ok(on) => on,
        Err(e) => {
            eprintln!("policy bench: cannot write the policy files: {e}");
            return;
        }
    };
    let lines = bench_policy().lines().count();
    let backends = [("primary", pg_port, "primary")];
    let mut rows = Vec::new();
    for mode in MODES {
        let mut outcomes = Vec::new();
        for extra in ["", on.as_str()] {
            if interrupted() {
                return;
            }
            let outcome = match start_pgward(scratch, &backends, extra) {
                Ok(proxy) => {
                    run_pgbench(pgbench, proxy.port, mode, CLIENT_COUNTS[0], warmup, scratch);
                    run_pgbench(
                        pgbench,
                        proxy.port,
                        mode,
                        CLIENT_COUNTS[0],
                        seconds,
                        scratch,
                    )
                }
                Err(failed) => failed,
            };
            let label = if extra.is_empty() { "off" } else { "on" };
            eprintln!("policy {label} {mode}: {outcome}");
            outcomes.push(outcome);
        }
        rows.push((mode, outcomes));
    }
    println!(
        "\n## pgbench -S, {} clients, {seconds} s per run, through pgward: access policy off and on ({lines} policy lines)\n",
        CLIENT_COUNTS[0]
    );
    println!("| mode | policy off tps | policy on tps | on/off |");
    println!("|---|---:|---:|---:|");
    for (mode, outcomes) in &rows {
        println!(
            "| {mode} | {} | {} | {} |",
            cell(&outcomes[0]),
            cell(&outcomes[1]),
            ratio(&outcomes[1], &outcomes[0])
        );
    }
}

/// Part 5: the result cache. A hot set of 1000 accounts read by 16 clients, direct, through
/// pgward without the cache and with it; the hit ratio from the transactions PostgreSQL
/// committed, and pgward's CPU per transaction from /proc.
fn cache(pgbench: &Path, cluster: &Cluster, seconds: u64, warmup: u64, scratch: &Path) {
    let pg_port = cluster.primary.port;
    let script = scratch.join("hot.sql");
    if let Err(e) = fs::write(
        &script,
        "\\set aid random(1, 1000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n",
    ) {
        eprintln!("cache bench: {e}");
        return;
    }
    let workload = ["-f", &script.to_string_lossy()].map(str::to_owned);
    let commits = || -> u64 {
        cluster
            .psql(
                pg_port,
                DATABASE,
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            )
            .ok()
            .and_then(|out| out.trim().parse().ok())
            .unwrap_or(0)
    };
    let clients = CLIENT_COUNTS[0];
    let mut rows = Vec::new();
    for mode in ["simple", "prepared"] {
        let mut cells = Vec::new();
        for (label, extra) in [
            ("direct", None),
            ("pgward", Some("")),
            ("pgward + cache", Some(CACHE_ON)),
        ] {
            if interrupted() {
                return;
            }
            let proxy = match extra
                .map(|extra| start_pgward(scratch, &[("primary", pg_port, "primary")], extra))
            {
                Some(Ok(proxy)) => Some(proxy),
                Some(Err(failed)) => {
                    cells.push((failed, None, None));
                    continue;
                }
                None => None,
            };
            let port = proxy.as_ref().map_or(pg_port, |p| p.port);
            run_pgbench_with(pgbench, port, mode, clients, warmup, scratch, &workload);
            sleep(Duration::from_millis(1500));
            let (before, ticks) = (commits(), proxy.as_ref().map(|p| cpu_ticks(p.pid())));
            let outcome =
                run_pgbench_with(pgbench, port, mode, clients, seconds, scratch, &workload);
            let ticks = proxy
                .as_ref()
                .zip(ticks)
                .map(|(p, t)| cpu_ticks(p.pid()).saturating_sub(t));
            sleep(Duration::from_millis(1500));
            let served = commits().saturating_sub(before);
            let transactions = tps(&outcome) * seconds as f64;
            // Each pgbench transaction that reached PostgreSQL committed there once.
            let hit_ratio = (extra.is_some() && transactions > 0.0)
                .then(|| 1.0 - (served as f64 / transactions).min(1.0));
            // Microseconds of pgward CPU per transaction.
            let cpu = ticks.map(|t| ticks_to_us(t) / transactions);
            eprintln!("cache {mode} {label}: {outcome} (hit ratio {hit_ratio:?}, pgward CPU {cpu:?} us per transaction)");
            cells.push((outcome, hit_ratio, cpu));
        }
        rows.push((mode, cells));
    }
    println!(
        "\n## Result cache: a hot set of 1000 accounts, {clients} clients, {seconds} s per run\n"
    );
    println!("| mode | direct tps | pgward tps | pgward + cache tps | cache / direct | cache / pgward | hit ratio | pgward CPU per transaction, without / with cache (us) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, cells) in &rows {
        let [(direct, _, _), (plain, _, plain_cpu), (cached, hits, cached_cpu)] = cells.as_slice()
        else {
            continue;
        };
        let us = |v: &Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        println!(
            "| {mode} | {} | {} | {} | {} | {} | {} | {} / {} |",
            cell(direct),
            cell(plain),
            cell(cached),
            ratio(cached, direct),
            ratio(cached, plain),
            hits.map_or("n/a".to_owned(), |h| format!("{:.1}%", h * 100.0)),
            us(plain_cpu),
            us(cached_cpu),
        );
    }
}

/// Rows each encryption-bench query returns.
const ENCRYPTED_ROWS: u32 = 100_000;

/// Part 4: what decrypting costs. The same 100k rows (an SSN-like and an email-like value)
/// stored encrypted in one table and as plaintext in another, read whole by one client through
/// the same pgward, runs alternating.
fn encryption(
    pgbench: &Path,
    pg_port: u16,
    seconds: u64,
    warmup: u64,
    scratch: &Path,
) -> Result<()> {
    let dir = scratch.join("encryption");
    fs::create_dir_all(&dir)?;
    let key: [u8; 32] = rand::random();
    fs::write(dir.join("bench.key"), {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key)
    })?;
    let extra = format!(
        "\n[[encryption.keys]]\nid = \"bench\"\nmaterial = \"file:{}\"\nactive = true\n\
         \n[[encryption.columns]]\ntable = \"public.enc_bench\"\ncolumn = \"ssn\"\nmode = \"deterministic\"\n\
         \n[[encryption.columns]]\ntable = \"public.enc_bench\"\ncolumn = \"email\"\nmode = \"randomized\"\n",
        dir.join("bench.key").display()
    );
    let proxy = start_pgward(scratch, &[("primary", pg_port, "primary")], &extra)
        .map_err(|e| anyhow!("pgward did not start: {e}"))?;
    // The data, as CSV, loaded through pgward: the encrypted table gets ciphertext.
    let csv = dir.join("rows.csv");
    let rows: String = (1..=ENCRYPTED_ROWS)
        .map(|i| {
            format!(
                "{i},{:03}-{:02}-{:04},customer{i}@example.com\n",
                i % 1000,
                i % 100,
                i % 10000
            )
        })
        .collect();
    fs::write(&csv, rows)?;
    let psql = pgbench.with_file_name("psql");
    for table in ["enc_bench", "plain_bench"] {
        let sql = format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, ssn text, email text);"
        );
        let load = format!("\\copy {table} FROM '{}' WITH (FORMAT csv)", csv.display());
        for command in [
            sql.as_str(),
            load.as_str(),
            &format!("VACUUM ANALYZE {table}"),
        ] {
            let output = client_command(&psql, proxy.port)
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    DATABASE,
                    "-c",
                    command,
                ])
                .output()?;
            if !output.status.success() {
                bail!(
                    "{command}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
        }
    }
    let pid = proxy.pid();
    let mut results = Vec::new();
    for mode in MODES {
        let mut outcomes = Vec::new();
        for table in ["plain_bench", "enc_bench"] {
            if interrupted() {
                return Ok(());
            }
            let script = dir.join(format!("{table}.sql"));
            fs::write(&script, format!("SELECT id, ssn, email FROM {table};\n"))?;
            let workload = ["-f", &script.to_string_lossy()].map(str::to_owned);
            run_pgbench_with(pgbench, proxy.port, mode, 1, warmup, scratch, &workload);
            let ticks = cpu_ticks(pid);
            let outcome =
                run_pgbench_with(pgbench, proxy.port, mode, 1, seconds, scratch, &workload);
            // pgward's CPU per query, in ms.
            let used = cpu_ticks(pid).saturating_sub(ticks);
            let per_query = ticks_to_us(used) / 1000.0 / (tps(&outcome) * seconds as f64);
            eprintln!(
                "encryption {table} {mode}: {outcome} ({per_query:.1} ms of pgward CPU per query)"
            );
            outcomes.push((outcome, per_query));
        }
        results.push((mode, outcomes));
    }
    // What PostgreSQL itself pays for the larger stored values: the same reads straight from it.
    let mut direct = Vec::new();
    for table in ["plain_bench", "enc_bench"] {
        let script = dir.join(format!("{table}.sql"));
        let workload = ["-f", &script.to_string_lossy()].map(str::to_owned);
        let outcome =
            run_pgbench_with(pgbench, pg_port, "prepared", 1, seconds, scratch, &workload);
        eprintln!("encryption {table} direct: {outcome}");
        direct.push(outcome);
    }
    println!(
        "\n## SELECT of {ENCRYPTED_ROWS} rows (two text columns), 1 client, {seconds} s per run, through pgward: plaintext table vs both columns encrypted\n"
    );
    println!("| mode | plaintext queries/s | encrypted queries/s | time ratio (encrypted/plaintext) | pgward CPU per query, plaintext / encrypted (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for (mode, outcomes) in &results {
        let ((plain, plain_cpu), (enc, enc_cpu)) = (&outcomes[0], &outcomes[1]);
        println!(
            "| {mode} | {:.2} | {:.2} | {} | {plain_cpu:.1} / {enc_cpu:.1} |",
            tps(plain),
            tps(enc),
            ratio(plain, enc),
        );
    }
    println!(
        "| direct to PostgreSQL, prepared (ciphertext, nothing decrypted) | {:.2} | {:.2} | {} | |",
        tps(&direct[0]),
        tps(&direct[1]),
        ratio(&direct[0], &direct[1])
    );
    Ok(())
}

/// Server connections per pool in the efficiency part, for pgward and PgBouncer alike.
const EFFICIENCY_POOL_SIZE: usize = 10;
/// pgward as the efficiency part runs it unless told otherwise.
const EFFICIENCY_PGWARD: PgwardSetup<'static> = PgwardSetup {
    pool_size: EFFICIENCY_POOL_SIZE,
    auth: "scram-sha-256",
    server: "",
    extra: "",
    prefix: &[],
};
/// PgBouncer as the efficiency part runs it unless told otherwise.
const EFFICIENCY_PGBOUNCER: PgbouncerSetup<'static> = PgbouncerSetup {
    pool_size: EFFICIENCY_POOL_SIZE,
    auth_type: "scram-sha-256",
    settings: &[],
};
/// pgward's result cache, on with its defaults.
const CACHE_ON: &str = "\n[cache]\nenabled = true\n";
/// Idle clients held open against each proxy to measure memory per client.
const IDLE_CLIENTS: usize = 4000;
/// Idle clients pgward is then shown holding.
const MANY_IDLE_CLIENTS: usize = 10_000;
/// Open-file limit for the efficiency part: 10k client sockets in this process and as many in
/// the proxy, with room to spare.
const OPEN_FILE_LIMIT: libc::rlim_t = 65_536;
/// Clients of the worker-thread comparison.
const THREAD_CLIENTS: u32 = 16;

/// What every efficiency measurement needs.
struct Bench<'a> {
    pgbench: &'a Path,
    pg_port: u16,
    /// Length of each measured run.
    seconds: u64,
    /// Length of the unmeasured run of the same workload before each measured one.
    warmup: u64,
    scratch: &'a Path,
}

impl<'a> Bench<'a> {
    /// `pgbench -S -M <mode> -c <clients>` against `port`, one measured run long.
    fn select_only(&self, port: u16, mode: &'a str, clients: u32) -> PgbenchRun<'a> {
        PgbenchRun {
            pgbench: self.pgbench,
            scratch: self.scratch,
            port,
            mode,
            clients,
            seconds: self.seconds,
            workload: SELECT_ONLY,
            prefix: &[],
        }
    }

    /// pgward in front of the primary only.
    fn pgward(&self, setup: &PgwardSetup) -> std::result::Result<Proxy, Outcome> {
        start_pgward_with(self.scratch, &[("primary", self.pg_port, "primary")], setup)
    }

    fn pgbouncer(&self, setup: &PgbouncerSetup) -> std::result::Result<Proxy, Outcome> {
        start_pgbouncer_with(self.scratch, self.pg_port, setup)
    }
}

/// One measured run: pgbench's outcome and what the target's process spent on it.
#[derive(Clone, Debug)]
struct Sample {
    outcome: Outcome,
    /// Microseconds of the proxy's CPU (user + system) per transaction pgbench completed.
    cpu_us: Option<f64>,
    /// The system (kernel) part of `cpu_us`.
    system_us: Option<f64>,
    /// pgbench's `latency average`, in ms.
    latency_ms: Option<f64>,
}

impl From<Outcome> for Sample {
    /// A target that was not measured, with the reason in its outcome.
    fn from(outcome: Outcome) -> Self {
        Sample {
            outcome,
            cpu_us: None,
            system_us: None,
            latency_ms: None,
        }
    }
}

impl Sample {
    /// The latency of a run that succeeded.
    fn latency(&self) -> Option<f64> {
        matches!(self.outcome, Outcome::Tps(_))
            .then_some(self.latency_ms)
            .flatten()
    }
}

/// Runs `run` after an unmeasured `warmup`-second run of the same workload (connections made,
/// caches and the CPU frequency settled), counting the CPU `pid` used over the steady part of
/// the measured run (see `SteadyCpu`).
fn measure(run: &PgbenchRun, warmup: u64, pid: Option<u32>) -> Sample {
    if warmup > 0 {
        let (outcome, _) = PgbenchRun {
            seconds: warmup,
            ..*run
        }
        .execute();
        if !matches!(outcome, Outcome::Tps(_)) {
            eprintln!("warmup: {outcome}");
        }
    }
    let (outcome, report, steady) = run.run(pid);
    let per_tx = match (&outcome, steady) {
        (Outcome::Tps(_), Some(cpu)) if cpu.transactions > 0 => Some((
            ticks_to_us(cpu.user + cpu.system) / cpu.transactions as f64,
            ticks_to_us(cpu.system) / cpu.transactions as f64,
        )),
        _ => None,
    };
    Sample {
        outcome,
        cpu_us: per_tx.map(|(cpu, _)| cpu),
        system_us: per_tx.map(|(_, system)| system),
        latency_ms: report.latency_ms,
    }
}

/// PostgreSQL itself or a proxy in front of it, as the efficiency runs measure it.
struct Target {
    name: &'static str,
    endpoint: Endpoint,
    /// The process whose CPU is counted; none for PostgreSQL itself.
    pid: Option<u32>,
    /// A mode it cannot run, with the reason shown in its cells.
    unsupported: Option<(&'static str, String)>,
}

impl Target {
    fn direct(pg_port: u16) -> Self {
        Target {
            name: "direct",
            endpoint: Ok(pg_port),
            pid: None,
            unsupported: None,
        }
    }

    fn proxy(name: &'static str, proxy: &std::result::Result<Proxy, Outcome>) -> Self {
        Target {
            name,
            endpoint: endpoint(proxy),
            pid: proxy.as_ref().ok().map(Proxy::pid),
            unsupported: None,
        }
    }

    /// `pgbench -S -M <mode> -c <clients>` through it, warmed up, logged as it finishes.
    fn measure(&self, bench: &Bench, mode: &'static str, clients: u32) -> Sample {
        let sample = match (&self.endpoint, &self.unsupported) {
            (_, Some((unsupported, reason))) if *unsupported == mode => {
                Sample::from(Outcome::Skipped(reason.clone()))
            }
            (Err(missing), _) => Sample::from(missing.clone()),
            (Ok(port), _) => measure(
                &bench.select_only(*port, mode, clients),
                bench.warmup,
                self.pid,
            ),
        };
        let result = match &sample.outcome {
            Outcome::Tps(tps) => format!(
                "{tps:.0} tps, {} us/tx, latency {} ms",
                cpu_cell(&sample),
                sample.latency_ms.map_or("n/a".into(), |l| l.to_string())
            ),
            other => reason_cell(other),
        };
        eprintln!(
            "efficiency {mode:>8} {clients:>3} clients {:>13}: {result}",
            self.name
        );
        sample
    }
}

/// Part 6: what pgward costs beside PgBouncer (pool size 10 each, transaction mode): CPU per
/// transaction, memory per idle client, latency at one client, and worker threads.
/// `section` (cpu, memory, latency or threads) runs one of them; empty runs all.
fn efficiency(bench: &Bench, section: &str) {
    // Before any proxy starts, so that they inherit it.
    let open_files = raise_open_file_limit(OPEN_FILE_LIMIT);
    eprintln!("efficiency: open-file limit {open_files} (asked for {OPEN_FILE_LIMIT})");
    let wanted = |name: &str| (section.is_empty() || section == name) && !interrupted();
    if wanted("cpu") {
        cpu_per_transaction(bench);
    }
    if wanted("memory") {
        idle_client_memory(bench, open_files);
    }
    if wanted("latency") {
        added_latency(bench);
    }
    if wanted("threads") {
        worker_threads(bench);
    }
}

/// Raises this process's RLIMIT_NOFILE, soft and hard, to `wanted` (or the soft limit as far
/// as the hard one allows, where raising that is refused) and returns the soft limit in force.
/// Children inherit it, PgBouncer through its switch to the postgres user too.
fn raise_open_file_limit(wanted: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: limit.rlim_max.max(wanted),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                let soft = libc::rlimit {
                    rlim_cur: limit.rlim_max.min(wanted),
                    ..limit
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            }
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Efficiency 1: proxy CPU per transaction and throughput. Per row every target runs in turn,
/// starting one target further along each row, so drift spreads evenly over them.
fn cpu_per_transaction(bench: &Bench) {
    let with_policy = match policy_section(bench.scratch) {
        Ok(section) => bench.pgward(&PgwardSetup {
            extra: &section,
            ..EFFICIENCY_PGWARD
        }),
        Err(e) => Err(Outcome::Failed(format!(
            "cannot write the policy files: {e}"
        ))),
    };
    let proxies = [
        bench.pgward(&EFFICIENCY_PGWARD),
        with_policy,
        bench.pgward(&PgwardSetup {
            extra: CACHE_ON,
            ..EFFICIENCY_PGWARD
        }),
        bench.pgbouncer(&EFFICIENCY_PGBOUNCER),
        bench.pgward(&PgwardSetup {
            server: &per_core_setting(),
            ..EFFICIENCY_PGWARD
        }),
    ];
    let mut pgbouncer = Target::proxy("PgBouncer", &proxies[3]);
    pgbouncer.unsupported = pgbouncer_prepared_gap().map(|reason| ("prepared", reason));
    // Columns of both tables, in this order.
    let targets = [
        Target::direct(bench.pg_port),
        Target::proxy("pgward", &proxies[0]),
        Target::proxy("pgward+policy", &proxies[1]),
        Target::proxy("pgward+cache", &proxies[2]),
        pgbouncer,
        Target::proxy("pgward per core", &proxies[4]),
    ];
    let cases = MODES
        .iter()
        .flat_map(|&mode| CLIENT_COUNTS.map(|clients| (mode, clients)));
    let mut rows = Vec::new();
    'rows: for (row, (mode, clients)) in cases.enumerate() {
        let mut samples = vec![Sample::from(Outcome::Skipped("not run".into())); targets.len()];
        for k in 0..targets.len() {
            if interrupted() {
                break 'rows;
            }
            let i = (row + k) % targets.len();
            samples[i] = targets[i].measure(bench, mode, clients);
        }
        rows.push((mode, clients, samples));
    }

    let workload = format!(
        "pgbench -S -M <mode> -c <N> -j {THREADS} -T {}, scale {SCALE}, pool size {EFFICIENCY_POOL_SIZE} for both proxies, transaction mode, primary only; every target warmed up {} s with the same workload before each run, targets alternating within each row",
        bench.seconds, bench.warmup
    );
    println!(
        "\n## CPU per transaction: {workload}; microseconds of the proxy process's CPU (utime+stime, /proc/<pid>/stat) from pgbench's first progress report (1 s in, every client logged in) to the end of the run / the transactions pgbench completed in that span; pgward: the default worker_threads ({} on {} CPUs); pgward+policy: the access policy of part 3 ({} lines); pgward+cache: the result cache on; pgward per core: worker_threads = {}\n",
        pgward::config::default_worker_threads(),
        cpu_count(),
        bench_policy().lines().count(),
        cpu_count(),
    );
    println!("| mode | clients | pgward us/tx | pgward+policy us/tx | pgward+cache us/tx | pgward per core us/tx | PgBouncer us/tx | pgward/PgBouncer | pgward+policy/PgBouncer | pgward per core/PgBouncer |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, clients, s) in &rows {
        println!(
            "| {mode} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cpu_cell(&s[1]),
            cpu_cell(&s[2]),
            cpu_cell(&s[3]),
            cpu_cell(&s[5]),
            cpu_cell(&s[4]),
            ratio_of(s[1].cpu_us, s[4].cpu_us),
            ratio_of(s[2].cpu_us, s[4].cpu_us),
            ratio_of(s[5].cpu_us, s[4].cpu_us),
        );
    }
    // How much of the difference is the kernel's time and how much the proxy's own code.
    println!("\n## CPU per transaction, user and system apart: the same runs; user = the proxy's own code, system = the kernel on its behalf (socket calls, the TCP/IP work loopback does in the sender's context, wake-ups and context switches)\n");
    println!("| mode | clients | pgward user | pgward system | PgBouncer user | PgBouncer system | system pgward/PgBouncer |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let user = |s: &Sample| s.cpu_us.zip(s.system_us).map(|(cpu, system)| cpu - system);
    let cell = |us: Option<f64>| us.map_or("n/a".into(), |us| format!("{us:.1}"));
    for (mode, clients, s) in &rows {
        println!(
            "| {mode} | {clients} | {} | {} | {} | {} | {} |",
            cell(user(&s[1])),
            cell(s[1].system_us),
            cell(user(&s[4])),
            cell(s[4].system_us),
            ratio_of(s[1].system_us, s[4].system_us),
        );
    }
    println!("\n## Throughput: {workload}; direct = PostgreSQL without a proxy\n");
    println!("| mode | clients | direct tps | pgward tps | pgward+policy tps | pgward+cache tps | pgward per core tps | PgBouncer tps | pgward/PgBouncer | pgward per core/PgBouncer | pgward/direct |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, clients, s) in &rows {
        println!(
            "| {mode} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            reason_cell(&s[0].outcome),
            reason_cell(&s[1].outcome),
            reason_cell(&s[2].outcome),
            reason_cell(&s[3].outcome),
            reason_cell(&s[5].outcome),
            reason_cell(&s[4].outcome),
            ratio(&s[1].outcome, &s[4].outcome),
            ratio(&s[5].outcome, &s[4].outcome),
            ratio(&s[1].outcome, &s[0].outcome),
        );
    }
}

/// A proxy's resident memory in bytes after a warm-up client, and with each number of idle
/// clients connected.
struct Rss {
    before: u64,
    with: Vec<(usize, u64)>,
    /// The proxy's own open-file limit, to show it inherited the raised one.
    open_files: Option<u64>,
}

impl Rss {
    /// Bytes per idle client with `clients` of them, over the warm-up RSS.
    fn per_client(&self, clients: usize) -> Option<f64> {
        let &(_, after) = self.with.iter().find(|(n, _)| *n == clients)?;
        Some((after as f64 - self.before as f64) / clients as f64)
    }

    fn with(&self, clients: usize) -> Option<u64> {
        self.with.iter().find(|(n, _)| *n == clients).map(|w| w.1)
    }
}

/// Efficiency 2: memory per idle client. Each proxy starts fresh with trust auth (so a client
/// costs no password exchange) and room for 20000 clients.
fn idle_client_memory(bench: &Bench, open_files: libc::rlim_t) {
    let measured = |proxy: std::result::Result<Proxy, Outcome>, counts: &[usize]| {
        if open_files < (MANY_IDLE_CLIENTS + 1000) as libc::rlim_t {
            return Err(Outcome::Failed(format!(
                "open-file limit {open_files} is too low for {MANY_IDLE_CLIENTS} clients (raising it needs root)"
            )));
        }
        let proxy = proxy?;
        idle_client_rss(&proxy, counts)
            .map_err(|e| Outcome::Failed(shorten(&format!("{e:#}"), 120)))
        // The proxy stops here, before the next one starts.
    };
    let pgward = measured(
        bench.pgward(&PgwardSetup {
            auth: "trust",
            server: "max_clients = 20000\n",
            ..EFFICIENCY_PGWARD
        }),
        &[IDLE_CLIENTS, MANY_IDLE_CLIENTS],
    );
    let pgbouncer = measured(
        bench.pgbouncer(&PgbouncerSetup {
            auth_type: "trust",
            settings: &[("max_client_conn", "20000")],
            ..EFFICIENCY_PGBOUNCER
        }),
        &[IDLE_CLIENTS],
    );

    println!(
        "\n## Memory per idle client: each proxy started fresh (trust auth, pool size {EFFICIENCY_POOL_SIZE}, room for 20000 clients, open-file limit {open_files}); VmRSS (/proc/<pid>/status) after one warm-up client ran SELECT 1 and left, then 1 s after {IDLE_CLIENTS} more clients completed startup (StartupMessage to ReadyForQuery) and stayed idle\n"
    );
    println!("| proxy | its open-file limit | RSS after warm-up (KiB) | RSS with {IDLE_CLIENTS} idle clients (KiB) | bytes per idle client |");
    println!("|---|---:|---:|---:|---:|");
    for (name, rss) in [("pgward", &pgward), ("PgBouncer", &pgbouncer)] {
        match rss {
            Ok(rss) => println!(
                "| {name} | {} | {} | {} | {} |",
                rss.open_files.map_or("n/a".into(), |n| n.to_string()),
                rss.before / 1024,
                rss.with(IDLE_CLIENTS)
                    .map_or("n/a".into(), |b| (b / 1024).to_string()),
                rss.per_client(IDLE_CLIENTS)
                    .map_or("n/a".into(), |b| format!("{b:.0}")),
            ),
            Err(failed) => println!("| {name} | {} | | | |", reason_cell(failed)),
        }
    }
    let per_client = |rss: &std::result::Result<Rss, Outcome>| {
        rss.as_ref().ok().and_then(|r| r.per_client(IDLE_CLIENTS))
    };
    println!(
        "| pgward / PgBouncer | | | | {} |",
        ratio_of(per_client(&pgward), per_client(&pgbouncer))
    );
    match &pgward {
        Ok(rss) => println!(
            "\npgward with {MANY_IDLE_CLIENTS} idle clients: RSS {} KiB ({:.1} MiB), {} bytes per idle client over the warm-up RSS",
            rss.with(MANY_IDLE_CLIENTS).map_or("n/a".into(), |b| (b / 1024).to_string()),
            rss.with(MANY_IDLE_CLIENTS).map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0)),
            rss.per_client(MANY_IDLE_CLIENTS)
                .map_or("n/a".into(), |b| format!("{b:.0}")),
        ),
        Err(failed) => println!("\npgward with {MANY_IDLE_CLIENTS} idle clients: {}", reason_cell(failed)),
    }
}

/// The proxy's RSS after a warm-up client, then with each number in `counts` of idle clients
/// held open (read 1 s after the last of them connected). Every client is closed on return.
fn idle_client_rss(proxy: &Proxy, counts: &[usize]) -> Result<Rss> {
    warm_up_client(proxy.port).context("warm-up client")?;
    sleep(Duration::from_secs(1));
    let before = vm_rss(proxy.pid())?;
    let mut clients = Vec::with_capacity(counts.iter().copied().max().unwrap_or(0));
    let mut with = Vec::new();
    for &count in counts {
        let started = Instant::now();
        while clients.len() < count {
            if interrupted() {
                bail!("interrupted");
            }
            let client = idle_client(proxy.port)
                .with_context(|| format!("idle client {}", clients.len() + 1))?;
            clients.push(client);
        }
        eprintln!(
            "{} idle clients connected to port {} in {:.1} s",
            count,
            proxy.port,
            started.elapsed().as_secs_f64()
        );
        sleep(Duration::from_secs(1));
        with.push((count, vm_rss(proxy.pid())?));
    }
    drop(clients);
    Ok(Rss {
        before,
        with,
        open_files: open_file_limit_of(proxy.pid()),
    })
}

/// The soft open-file limit of `pid` ("Max open files" in /proc/<pid>/limits).
fn open_file_limit_of(pid: u32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Resident set size of `pid` in bytes (VmRSS of /proc/<pid>/status).
fn vm_rss(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// A frontend message: type byte, length (itself included), body.
fn frontend_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend(((body.len() + 4) as u32).to_be_bytes());
    message.extend(body);
    message
}

/// A connection to `port` that has completed startup as the app role and now sits idle. The
/// proxy must trust the client: a password request fails it.
fn idle_client(port: u16) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // StartupMessage: length, protocol 3.0, then name/value pairs and a final zero byte.
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for text in ["user", USER, "database", DATABASE] {
        body.extend(text.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend(body);
    stream.write_all(&startup)?;
    read_until_ready(&mut stream)?;
    Ok(stream)
}

/// A client that runs one query and leaves, so that the proxy has its pool and its server
/// parameters before its memory is read.
fn warm_up_client(port: u16) -> Result<()> {
    let mut stream = idle_client(port)?;
    stream.write_all(&frontend_message(b'Q', b"SELECT 1\0"))?;
    read_until_ready(&mut stream)?;
    stream.write_all(&frontend_message(b'X', &[]))?;
    Ok(())
}

/// Reads backend messages up to ReadyForQuery; an ErrorResponse or a password request fails.
fn read_until_ready(stream: &mut TcpStream) -> Result<()> {
    loop {
        let mut header = [0u8; 5];
        stream
            .read_exact(&mut header)
            .context("reading from the proxy")?;
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        stream
            .read_exact(&mut body)
            .context("reading from the proxy")?;
        match header[0] {
            b'Z' => return Ok(()),
            b'E' => bail!("{}", error_message(&body)),
            b'R' if body.get(..4) != Some(&[0u8; 4][..]) => {
                bail!("the proxy asked for a password (expected trust)")
            }
            _ => {}
        }
    }
}

/// The message field (`M`) of an ErrorResponse body.
fn error_message(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map_or_else(
            || "error without a message".into(),
            |m| String::from_utf8_lossy(m).into_owned(),
        )
}

/// Rounds of the latency comparison: a proxy adds a few microseconds to a round trip of about
/// a hundred, less than one run's noise, so each target runs this often, in turn.
const LATENCY_ROUNDS: usize = 5;

/// Efficiency 3: the latency each proxy adds to one client's extended-protocol reads; each
/// target's median over `LATENCY_ROUNDS` alternating runs.
fn added_latency(bench: &Bench) {
    let pgbouncer = bench.pgbouncer(&EFFICIENCY_PGBOUNCER);
    let pgward = bench.pgward(&EFFICIENCY_PGWARD);
    let per_core = bench.pgward(&PgwardSetup {
        server: &per_core_setting(),
        ..EFFICIENCY_PGWARD
    });
    let relay = tokio_relay(bench.pg_port).map_err(|e| Outcome::Failed(format!("{e:#}")));
    let targets = [
        Target::direct(bench.pg_port),
        Target::proxy("PgBouncer", &pgbouncer),
        Target::proxy("pgward", &pgward),
        Target::proxy("pgward, a worker thread per CPU", &per_core),
        Target {
            name: "a bare tokio relay (copy_bidirectional, one thread)",
            endpoint: relay,
            pid: None,
            unsupported: None,
        },
    ];
    let mut runs: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for round in 0..LATENCY_ROUNDS {
        for k in 0..targets.len() {
            if interrupted() {
                return;
            }
            let i = (round + k) % targets.len();
            runs[i].push(targets[i].measure(bench, "extended", 1));
        }
    }
    let median = |samples: &[Sample]| {
        let mut latencies: Vec<f64> = samples.iter().filter_map(Sample::latency).collect();
        latencies.sort_by(f64::total_cmp);
        (latencies.len() == samples.len()).then(|| latencies[latencies.len() / 2])
    };
    let medians: Vec<Option<f64>> = runs.iter().map(|r| median(r)).collect();
    let added = |i: usize| medians[i].zip(medians[0]).map(|(l, d)| l - d);
    println!(
        "\n## Latency added at 1 client: pgbench -S -M extended -c 1 -j 1 -T {}, pool size {EFFICIENCY_POOL_SIZE}, each target warmed up {} s before each run; the median of {LATENCY_ROUNDS} runs per target, targets alternating, of the latency average pgbench reports; pgward runs its default worker_threads ({} on {} CPUs); the bare tokio relay (a thread of the bench) shows what tokio alone adds\n",
        bench.seconds,
        bench.warmup,
        pgward::config::default_worker_threads(),
        cpu_count(),
    );
    println!("| target | tps (first run) | latency average, median (ms) | each run (ms) | added over direct (ms) |");
    println!("|---|---:|---:|---|---:|");
    let ms = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    for (i, target) in targets.iter().enumerate() {
        let each: Vec<String> = runs[i].iter().map(|s| ms(s.latency())).collect();
        println!(
            "| {} | {} | {} | {} | {} |",
            target.name,
            reason_cell(&runs[i][0].outcome),
            ms(medians[i]),
            each.join(" "),
            if i == 0 { String::new() } else { ms(added(i)) },
        );
    }
    for (i, target) in targets.iter().enumerate().skip(2) {
        println!(
            "| {} added / PgBouncer added | | | | {} |",
            target.name,
            ratio_of(added(i), added(1))
        );
    }
}

/// A bare TCP relay to PostgreSQL on `pg_port`, a current-thread tokio runtime in a thread of
/// this process: what a tokio proxy adds to a round trip before it does anything of its own.
/// Returns its port; it runs until the bench exits.
fn tokio_relay(pg_port: u16) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tokio-relay".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((mut client, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let Ok(mut server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await
                        else {
                            return;
                        };
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            })
        })?;
    Ok(port)
}

/// Efficiency 4: pgward with one and with two worker threads, and, where `taskset` can, with
/// one thread on a CPU of its own while pgbench runs on the other.
fn worker_threads(bench: &Bench) {
    let pinned = "worker_threads = 1, pgward pinned to CPU 1 (taskset -c 1), pgbench to CPU 0 (taskset -c 0), PostgreSQL unpinned";
    let variants: [(&str, &str, &[&str], &[&str]); 3] = [
        ("worker_threads = 1", "worker_threads = 1\n", &[], &[]),
        ("worker_threads = 2", "worker_threads = 2\n", &[], &[]),
        (
            pinned,
            "worker_threads = 1\n",
            &["taskset", "-c", "1"],
            &["taskset", "-c", "0"],
        ),
    ];
    let mut rows = Vec::new();
    for (label, server, pgward_prefix, pgbench_prefix) in variants {
        if interrupted() {
            return;
        }
        let unavailable = (!pgward_prefix.is_empty())
            .then(pinning_unavailable)
            .flatten();
        let sample = match unavailable {
            Some(reason) => Sample::from(Outcome::Skipped(reason)),
            None => match bench.pgward(&PgwardSetup {
                server,
                prefix: pgward_prefix,
                ..EFFICIENCY_PGWARD
            }) {
                Ok(proxy) => measure(
                    &PgbenchRun {
                        prefix: pgbench_prefix,
                        ..bench.select_only(proxy.port, "extended", THREAD_CLIENTS)
                    },
                    bench.warmup,
                    Some(proxy.pid()),
                ),
                Err(failed) => Sample::from(failed),
            },
        };
        eprintln!(
            "threads {label}: {} ({} us/tx)",
            sample.outcome,
            cpu_cell(&sample)
        );
        rows.push((label, sample));
    }
    let cpus = cpu_count();
    println!(
        "\n## pgward worker threads: pgbench -S -M extended -c {THREAD_CLIENTS} -j {THREADS} -T {}, pool size {EFFICIENCY_POOL_SIZE}, {cpus} CPUs, each run warmed up {} s first; CPU per transaction as in the CPU table\n",
        bench.seconds, bench.warmup
    );
    println!("| pgward | tps | pgward us/tx |");
    println!("|---|---:|---:|");
    for (label, sample) in &rows {
        println!(
            "| {label} | {} | {} |",
            reason_cell(&sample.outcome),
            cpu_cell(sample)
        );
    }
}

/// The CPUs this process may use.
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// pgward's `[server]` line for a worker thread per CPU, the default before it was half of them.
fn per_core_setting() -> String {
    format!("worker_threads = {}\n", cpu_count())
}

/// Why pgward and pgbench cannot be pinned to CPUs 1 and 0 here, if they cannot.
fn pinning_unavailable() -> Option<String> {
    let taskset = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !taskset.is_ok_and(|status| status.success()) {
        return Some("taskset not installed (util-linux)".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus < 2).then(|| format!("{cpus} CPU available, pinning needs 2"))
}

/// A table cell that keeps a skip's reason (other parts note theirs below the table).
fn reason_cell(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Skipped(reason) => format!("skipped: {}", reason.replace('|', "/")),
        other => cell(other),
    }
}

/// The CPU cell of a run: microseconds per transaction, or why there are none.
fn cpu_cell(sample: &Sample) -> String {
    match (&sample.outcome, sample.cpu_us) {
        (Outcome::Tps(_), Some(us)) => format!("{us:.1}"),
        (Outcome::Tps(_), None) => "n/a".into(),
        (other, _) => reason_cell(other),
    }
}

/// `a / b` when both are known.
fn ratio_of(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let (user, system) = cpu_split_ticks(pid);
    user + system
}

/// User and system CPU time (clock ticks) a process has used, apart.
fn cpu_split_ticks(pid: u32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after the last ')':
    // utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(11), field(12))
}

/// Microseconds in `ticks` clock ticks of /proc/<pid>/stat.
fn ticks_to_us(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // POSIX leaves it unspecified only in theory; Linux has used 100 for decades.
    let per_second = if per_second > 0 { per_second } else { 100 };
    ticks as f64 * 1e6 / per_second as f64
}

fn tps(outcome: &Outcome) -> f64 {
    match outcome {
        Outcome::Tps(tps) => *tps,
        _ => f64::NAN,
    }
}

/// Length of each measured run, from `PGWARD_BENCH_SECONDS` (default 10).
fn bench_seconds() -> Result<u64> {
    match std::env::var("PGWARD_BENCH_SECONDS") {
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(secs),
            _ => bail!("PGWARD_BENCH_SECONDS must be a positive number of seconds, got {value:?}"),
        },
        Err(_) => Ok(10),
    }
}

/// The pgbench that belongs to the cluster's PostgreSQL, else whatever is on PATH.
fn pgbench_binary() -> PathBuf {
    pg_bin_dir()
        .ok()
        .map(|dir| dir.join("pgbench"))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("pgbench"))
}

/// First line of `<bin> --version`, if it runs.
fn version_line(bin: &Path) -> Option<String> {
    let output = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().next().map(|line| line.trim().to_string())
}

/// `pgbench -i -s 10` as the app role, straight to PostgreSQL.
fn initialize(pgbench: &Path, pg_port: u16) -> Result<()> {
    eprintln!("pgbench -i -s {SCALE} on appdb ...");
    let output = client_command(pgbench, pg_port)
        .args(["-i", "-s", &SCALE.to_string(), "-q", DATABASE])
        .output()
        .with_context(|| format!("running {}", pgbench.display()))?;
    if !output.status.success() {
        bail!(
            "pgbench -i failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A pgbench command connecting as the app role over TCP without TLS, so all three targets pay
/// the same (no) encryption cost.
fn client_command(pgbench: &Path, port: u16) -> Command {
    client_command_under(&[], pgbench, port)
}

/// `client_command` run under `prefix` (e.g. `taskset -c 0`), or directly when it is empty.
fn client_command_under(prefix: &[&str], bin: &Path, port: u16) -> Command {
    let mut cmd = prefixed_command(prefix, bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    cmd
}

/// Result of one pgbench run, or why a target was not measured.
#[derive(Clone, Debug)]
enum Outcome {
    Tps(f64),
    Failed(String),
    Skipped(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Tps(tps) => write!(f, "{tps:.0}"),
            Outcome::Failed(reason) => write!(f, "FAILED ({reason})"),
            Outcome::Skipped(_) => write!(f, "skipped"),
        }
    }
}

/// The port of a running target, or the outcome to report for every cell of a missing one.
type Endpoint = std::result::Result<u16, Outcome>;

/// One `pgbench -n -S` run; never panics, every problem becomes `Outcome::Failed`.
fn run_pgbench(
    pgbench: &Path,
    port: u16,
    mode: &str,
    clients: u32,
    seconds: u64,
    scratch: &Path,
) -> Outcome {
    run_pgbench_with(
        pgbench,
        port,
        mode,
        clients,
        seconds,
        scratch,
        &["-S".to_owned()],
    )
}

/// One `pgbench -n` run of `workload` (`-S`, or `-f script`).
fn run_pgbench_with(
    pgbench: &Path,
    port: u16,
    mode: &str,
    clients: u32,
    seconds: u64,
    scratch: &Path,
    workload: &[String],
) -> Outcome {
    let workload: Vec<&str> = workload.iter().map(String::as_str).collect();
    PgbenchRun {
        pgbench,
        scratch,
        port,
        mode,
        clients,
        seconds,
        workload: &workload,
        prefix: &[],
    }
    .execute()
    .0
}

/// The workload of `pgbench -S` (pgbench's built-in select-only script).
const SELECT_ONLY: &[&str] = &["-S"];

/// One `pgbench -n` invocation, `-j` as many threads as `THREADS` allows.
#[derive(Clone, Copy)]
struct PgbenchRun<'a> {
    pgbench: &'a Path,
    scratch: &'a Path,
    port: u16,
    mode: &'a str,
    clients: u32,
    seconds: u64,
    /// `-S`, or `-f script`.
    workload: &'a [&'a str],
    /// A command pgbench runs under (e.g. `taskset -c 0`); empty for none.
    prefix: &'a [&'a str],
}

impl PgbenchRun<'_> {
    /// Runs it and returns the outcome with pgbench's summary (empty if it printed none); never
    /// panics, every problem becomes `Outcome::Failed`.
    fn execute(&self) -> (Outcome, Report) {
        let (outcome, report, _) = self.run(None);
        (outcome, report)
    }

    /// `execute`, also counting the CPU process `cpu_of` uses over the run's steady part.
    fn run(&self, cpu_of: Option<u32>) -> (Outcome, Report, Option<SteadyCpu>) {
        let failed = |reason: String| (Outcome::Failed(reason), Report::default(), None);
        let stdout_path = self.scratch.join("pgbench.out");
        let stderr_path = self.scratch.join("pgbench.err");
        let (stdout_file, stderr_file) = match (
            fs::File::create(&stdout_path),
            fs::File::create(&stderr_path),
        ) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => return failed(format!("cannot create output file: {e}")),
        };
        let threads = THREADS.min(self.clients);
        let mut cmd = client_command_under(self.prefix, self.pgbench, self.port);
        cmd.arg("-n")
            .args(self.workload)
            .args(["-M", self.mode])
            .args(["-c", &self.clients.to_string(), "-j", &threads.to_string()])
            .args(["-T", &self.seconds.to_string(), DATABASE])
            .stdout(stdout_file)
            .stderr(stderr_file);
        if cpu_of.is_some() {
            cmd.args(["-P", "1"]);
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => return failed(format!("cannot run {}: {e}", self.pgbench.display())),
        };
        let mut guard = ChildGuard::new("pgbench", child);
        let deadline = Instant::now() + Duration::from_secs(self.seconds) + RUN_GRACE;
        // The CPU count starts at pgbench's first progress report, with that report's tps.
        let mut start: Option<((u64, u64), f64)> = None;
        let status = guard.wait_watching(deadline, Duration::from_millis(10), || {
            if let (Some(pid), None) = (cpu_of, start) {
                let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
                start = first_progress_tps(&stderr).map(|tps| (cpu_split_ticks(pid), tps));
            }
        });
        let end = cpu_of.map(cpu_split_ticks);
        let status = match status {
            Some(status) => status,
            None if interrupted() => return failed("interrupted".into()),
            None => {
                return failed(format!(
                    "no result after {}s; killed",
                    self.seconds + RUN_GRACE.as_secs()
                ))
            }
        };
        if interrupted() {
            return failed("interrupted".into());
        }
        let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let report = parse_report(&stdout);
        let steady = match (start, end, report.transactions) {
            (Some(((user, system), first_tps)), Some((user_end, system_end)), Some(done)) => {
                Some(SteadyCpu {
                    user: user_end.saturating_sub(user),
                    system: system_end.saturating_sub(system),
                    // The first report covers one second.
                    transactions: done.saturating_sub(first_tps.round() as u64),
                })
            }
            _ => None,
        };
        (judge_run(status, &stdout, &stderr), report, steady)
    }
}

/// A proxy's CPU (clock ticks) over the steady part of a run, from pgbench's first progress
/// report (one second in, every client logged in) to its end, and the transactions pgbench
/// completed in that span. Logins are left out: what one costs depends on how the proxy
/// checks passwords (PgBouncer derives the SCRAM key from a plain-text `auth_file` entry at
/// every login, a few milliseconds each), not on what a transaction costs.
#[derive(Clone, Copy)]
struct SteadyCpu {
    user: u64,
    system: u64,
    transactions: u64,
}

/// The tps of pgbench's first progress report (`progress: 1.0 s, 1234.5 tps, ...`), once
/// it has printed one.
fn first_progress_tps(stderr: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.starts_with("progress:"))?;
    let (before, _) = line.split_once(" tps")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// `bin` run under `prefix` (a wrapper that execs it, such as `taskset -c 1`, so the child's
/// pid is `bin`'s), or `bin` itself when `prefix` is empty.
fn prefixed_command(prefix: &[&str], bin: &Path) -> Command {
    match prefix.split_first() {
        Some((wrapper, args)) => {
            let mut cmd = Command::new(wrapper);
            cmd.args(args).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Turn pgbench's exit status and output into an outcome.
fn judge_run(status: ExitStatus, stdout: &str, stderr: &str) -> Outcome {
    let report = parse_report(stdout);
    if !status.success() {
        let code = status
            .code()
            .map_or_else(|| status.to_string(), |c| format!("exit {c}"));
        return Outcome::Failed(format!("{code}: {}", error_summary(stderr)));
    }
    if report.failed > 0 {
        return Outcome::Failed(format!(
            "{} failed transactions: {}",
            report.failed,
            error_summary(stderr)
        ));
    }
    match report.tps {
        Some(tps) => Outcome::Tps(tps),
        None => {
            let processed = stdout
                .lines()
                .find(|l| l.starts_with("number of transactions actually processed"))
                .unwrap_or("no summary");
            Outcome::Failed(format!("no tps line in pgbench output ({processed})"))
        }
    }
}

/// The numbers read from pgbench's summary.
#[derive(Debug, Default, PartialEq)]
struct Report {
    tps: Option<f64>,
    failed: u64,
    /// Transactions pgbench completed.
    transactions: Option<u64>,
    /// Average latency in milliseconds.
    latency_ms: Option<f64>,
}

/// Reads `tps = X (without initial connection time)`, `number of failed transactions: N`,
/// `number of transactions actually processed: N` (`N/M` with `-t`) and
/// `latency average = X ms`.
fn parse_report(stdout: &str) -> Report {
    let mut report = Report::default();
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            if line.contains("without initial connection time") {
                report.tps = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            }
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            report.transactions = rest
                .split(['/', ' '])
                .find(|v| !v.is_empty())
                .and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            report.latency_ms = rest.strip_suffix(" ms").and_then(|v| v.trim().parse().ok());
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            report.failed = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    report
}

/// The most telling line of pgbench's stderr (the first error), shortened for a table cell.
fn error_summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .find(|l| l.contains("error") || l.contains("ERROR") || l.contains("FATAL"))
        .or(lines.last())
        .copied()
        .unwrap_or("no error output");
    let line = line.strip_prefix("pgbench: ").unwrap_or(line);
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    shorten(&line, 120)
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max_chars).collect();
        format!("{cut}...")
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    fn new(name: &'static str, child: Child) -> Self {
        ChildGuard { name, child }
    }

    /// Waits for exit until `deadline` or an interrupt; `None` means it is still running.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        self.wait_watching(deadline, Duration::from_millis(50), || {})
    }

    /// `wait_until`, calling `watch` every `every` while the child runs.
    fn wait_watching(
        &mut self,
        deadline: Instant,
        every: Duration,
        mut watch: impl FnMut(),
    ) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() >= deadline || interrupted() => return None,
                Ok(None) => {
                    watch();
                    sleep(every);
                }
                Err(_) => return None,
            }
        }
    }

    /// The exit status if the child has already exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: plain kill(2) on the pid of a child we have not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if self
            .wait_until(Instant::now() + Duration::from_secs(5))
            .is_none()
        {
            eprintln!("{} did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A proxy process under benchmark and the port it listens on.
struct Proxy {
    port: u16,
    process: ChildGuard,
}

impl Proxy {
    /// The proxy's own process id (wrappers such as `taskset` exec it), for /proc.
    fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

/// A number for each proxy instance's files, so proxies running side by side in one scratch
/// directory keep separate configs and logs.
fn instance_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The port of a started proxy, or the reason to report in its cells.
fn endpoint(proxy: &std::result::Result<Proxy, Outcome>) -> Endpoint {
    proxy.as_ref().map(|p| p.port).map_err(Clone::clone)
}

/// A free TCP port on 127.0.0.1 (released just before the proxy binds it).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `port` accepts TCP connections, failing early if the process exits.
fn wait_for_port(
    process: &mut ChildGuard,
    port: u16,
    log: &Path,
) -> std::result::Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = process.exited() {
            return Err(format!(
                "{} exited at startup ({status}): {}",
                process.name,
                log_tail(log)
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline || interrupted() {
            return Err(format!(
                "{} not accepting on {addr} after {}s: {}",
                process.name,
                STARTUP_TIMEOUT.as_secs(),
                log_tail(log)
            ));
        }
        sleep(Duration::from_millis(100));
    }
}

/// The last non-empty line of a log file, for error messages.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let last = text.lines().rev().map(str::trim).find(|l| !l.is_empty());
    shorten(last.unwrap_or("(empty log)"), 200)
}

/// What differs between the pgward instances of the benches.
#[derive(Clone, Copy)]
struct PgwardSetup<'a> {
    pool_size: usize,
    /// `auth.method`.
    auth: &'a str,
    /// Lines added to `[server]`, such as `worker_threads = 1`.
    server: &'a str,
    /// TOML appended to the config (whole sections).
    extra: &'a str,
    /// A command pgward runs under (e.g. `taskset -c 1`); empty for none.
    prefix: &'a [&'a str],
}

impl Default for PgwardSetup<'_> {
    fn default() -> Self {
        PgwardSetup {
            pool_size: POOL_SIZE,
            auth: "scram-sha-256",
            server: "",
            extra: "",
            prefix: &[],
        }
    }
}

/// Starts pgward in transaction mode in front of `backends` (name, port, role).
/// `extra` is TOML appended to the config.
fn start_pgward(
    scratch: &Path,
    backends: &[(&str, u16, &str)],
    extra: &str,
) -> std::result::Result<Proxy, Outcome> {
    start_pgward_with(
        scratch,
        backends,
        &PgwardSetup {
            extra,
            ..PgwardSetup::default()
        },
    )
}

/// `start_pgward` with more than the appended TOML chosen.
fn start_pgward_with(
    scratch: &Path,
    backends: &[(&str, u16, &str)],
    setup: &PgwardSetup,
) -> std::result::Result<Proxy, Outcome> {
    let failed = |what: &str, e: &dyn fmt::Display| Outcome::Failed(format!("pgward {what}: {e}"));
    let port = free_port().map_err(|e| failed("port", &e))?;
    let instance = instance_number();
    let config = scratch.join(format!("pgward-{instance}.toml"));
    fs::write(&config, pgward_config(port, backends, setup) + setup.extra)
        .map_err(|e| failed("config", &e))?;
    let log = scratch.join(format!("pgward-{instance}.log"));
    let log_file = fs::File::create(&log).map_err(|e| failed("log", &e))?;
    let stderr = log_file.try_clone().map_err(|e| failed("log", &e))?;
    let child = prefixed_command(setup.prefix, Path::new(env!("CARGO_BIN_EXE_pgward")))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr)
        .spawn()
        .map_err(|e| failed("spawn", &e))?;
    let mut process = ChildGuard::new("pgward", child);
    match wait_for_port(&mut process, port, &log) {
        Ok(()) => {
            eprintln!(
                "pgward on 127.0.0.1:{port} (pool size {}, config {})",
                setup.pool_size,
                config.display()
            );
            Ok(Proxy { port, process })
        }
        Err(reason) => {
            eprintln!("pgward unavailable: {reason}");
            Err(Outcome::Failed(shorten(&reason, 120)))
        }
    }
}

/// pgward's config file, per the contract in DESIGN.md.
fn pgward_config(port: u16, backends: &[(&str, u16, &str)], setup: &PgwardSetup) -> String {
    let PgwardSetup {
        pool_size,
        auth,
        server,
        ..
    } = setup;
    let mut config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
{server}
[auth]
method = "{auth}"

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[pool]
mode = "transaction"
size = {pool_size}
"#
    );
    for (name, port, role) in backends {
        config.push_str(&format!(
            "\n[[backends]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"{role}\"\n"
        ));
    }
    config
}

/// What differs between the PgBouncer instances of the benches.
#[derive(Clone, Copy)]
struct PgbouncerSetup<'a> {
    pool_size: usize,
    auth_type: &'a str,
    /// `[pgbouncer]` settings that replace or add to the generated ones.
    settings: &'a [(&'a str, &'a str)],
}

impl Default for PgbouncerSetup<'_> {
    fn default() -> Self {
        PgbouncerSetup {
            pool_size: POOL_SIZE,
            auth_type: "scram-sha-256",
            settings: &[],
        }
    }
}

/// Starts PgBouncer in transaction mode in front of the primary, if it is installed.
fn start_pgbouncer(scratch: &Path, pg_port: u16) -> std::result::Result<Proxy, Outcome> {
    start_pgbouncer_with(scratch, pg_port, &PgbouncerSetup::default())
}

/// `start_pgbouncer` with its pool size, auth and other settings chosen.
fn start_pgbouncer_with(
    scratch: &Path,
    pg_port: u16,
    setup: &PgbouncerSetup,
) -> std::result::Result<Proxy, Outcome> {
    let Some(bin) = pgbouncer_binary() else {
        let reason = "not installed, skipped (install it with: apt-get install pgbouncer)";
        eprintln!("PgBouncer {reason}");
        return Err(Outcome::Skipped(reason.into()));
    };
    let version = version_line(&bin).unwrap_or_default();
    let supports_prepared = supports_prepared(&version);
    eprintln!("PgBouncer: {} ({version})", bin.display());
    match launch_pgbouncer(&bin, scratch, pg_port, supports_prepared, setup) {
        Ok(proxy) => {
            eprintln!(
                "PgBouncer on 127.0.0.1:{} (pool size {})",
                proxy.port, setup.pool_size
            );
            if !supports_prepared {
                eprintln!("PgBouncer < 1.21: no max_prepared_statements, so -M prepared is expected to fail");
            }
            Ok(proxy)
        }
        Err(e) => {
            eprintln!("PgBouncer unavailable: {e:#}");
            Err(Outcome::Failed(shorten(&format!("pgbouncer: {e:#}"), 120)))
        }
    }
}

/// `pgbouncer` on PATH or in the sbin directories Debian installs it to.
fn pgbouncer_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file())
}

/// Whether the PgBouncer of `version` (its `--version` line) can carry prepared statements in
/// transaction mode: `max_prepared_statements` arrived in 1.21.
fn supports_prepared(version: &str) -> bool {
    parse_pgbouncer_version(version).is_some_and(|v| v >= (1, 21))
}

/// Why the installed PgBouncer cannot run `-M prepared` in transaction mode, if it cannot.
fn pgbouncer_prepared_gap() -> Option<String> {
    let version = version_line(&pgbouncer_binary()?)?;
    (!supports_prepared(&version)).then(|| {
        format!(
            "{} has no prepared statements in transaction mode (max_prepared_statements needs 1.21)",
            version.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        )
    })
}

/// `(major, minor)` from a line such as `PgBouncer 1.18.0`.
fn parse_pgbouncer_version(line: &str) -> Option<(u32, u32)> {
    let version = line.split_whitespace().nth(1)?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

fn launch_pgbouncer(
    bin: &Path,
    scratch: &Path,
    pg_port: u16,
    supports_prepared: bool,
    setup: &PgbouncerSetup,
) -> Result<Proxy> {
    let dir = scratch.join(format!("pgbouncer-{}", instance_number()));
    fs::create_dir(&dir)?;
    let port = free_port()?;
    let log = dir.join("pgbouncer.log");
    let userlist = dir.join("userlist.txt");
    fs::write(&userlist, format!("\"{USER}\" \"{PASSWORD}\"\n"))?;
    let ini = dir.join("pgbouncer.ini");
    fs::write(
        &ini,
        pgbouncer_ini(port, pg_port, &userlist, &log, supports_prepared, setup),
    )?;

    let mut cmd = Command::new(bin);
    cmd.arg(&ini)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("pgbouncer.stderr"))?);
    // PgBouncer refuses to run as root: drop to the postgres user and hand it the directory.
    // Resource limits (RLIMIT_NOFILE) survive the switch.
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        let (uid, gid) =
            system_user("postgres").context("running as root needs the postgres user")?;
        for path in [scratch, dir.as_path()] {
            chown(path, uid, gid)?;
        }
        for entry in fs::read_dir(&dir)? {
            chown(&entry?.path(), uid, gid)?;
        }
        cmd.uid(uid).gid(gid);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let mut process = ChildGuard::new("pgbouncer", child);
    wait_for_port(&mut process, port, &log).map_err(|reason| anyhow!(reason))?;
    Ok(Proxy { port, process })
}

/// pgbouncer.ini for a transaction-mode pool that matches pgward's.
fn pgbouncer_ini(
    port: u16,
    pg_port: u16,
    userlist: &Path,
    log: &Path,
    supports_prepared: bool,
    setup: &PgbouncerSetup,
) -> String {
    let mut settings: Vec<(&str, String)> = vec![
        ("listen_addr", "127.0.0.1".into()),
        ("listen_port", port.to_string()),
        ("unix_socket_dir", String::new()),
        ("auth_type", setup.auth_type.into()),
        ("auth_file", userlist.display().to_string()),
        ("pool_mode", "transaction".into()),
        ("default_pool_size", setup.pool_size.to_string()),
        ("max_client_conn", "1000".into()),
        ("logfile", log.display().to_string()),
    ];
    if supports_prepared {
        settings.push(("max_prepared_statements", "100".into()));
    }
    for &(key, value) in setup.settings {
        match settings.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value.into(),
            None => settings.push((key, value.into())),
        }
    }
    let mut ini =
        format!("[databases]\n{DATABASE} = host=127.0.0.1 port={pg_port} dbname={DATABASE}\n\n[pgbouncer]\n");
    for (key, value) in settings {
        ini.push_str(format!("{key} = {value}").trim_end());
        ini.push('\n');
    }
    ini
}

/// uid and gid of a system user, via getpwnam.
fn system_user(name: &str) -> Result<(u32, u32)> {
    let c_name = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam returns null or a pointer to a static passwd record we read at once.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        bail!("no {name} user on this machine");
    }
    // SAFETY: checked non-null above.
    Ok(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))
}

/// One line of the results table.
struct Row {
    mode: &'static str,
    clients: u32,
    direct: Outcome,
    pgward: Outcome,
    pgbouncer: Outcome,
}

/// `a / b` when both runs produced a number.
fn ratio(a: &Outcome, b: &Outcome) -> String {
    match (a, b) {
        (Outcome::Tps(a), Outcome::Tps(b)) if *b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

/// A table cell: pipes would split the markdown column.
fn cell(outcome: &Outcome) -> String {
    outcome.to_string().replace('|', "/")
}

fn print_table(seconds: u64, rows: &[Row]) {
    println!(
        "\n## pgbench -S, {seconds} s per run, scale {SCALE}, -j {THREADS}, pool size {POOL_SIZE} (transaction mode)\n"
    );
    println!("| mode | clients | direct tps | pgward tps | pgbouncer tps | pgward/direct | pgward/pgbouncer |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.mode,
            row.clients,
            cell(&row.direct),
            cell(&row.pgward),
            cell(&row.pgbouncer),
            ratio(&row.pgward, &row.direct),
            ratio(&row.pgward, &row.pgbouncer),
        );
    }
}
