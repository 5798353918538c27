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
//!    per transaction.
//!
//! Run with `cargo bench --bench pgbench`. `PGWARD_BENCH_SECONDS` sets the length of each
//! measured run (default 10); `PGWARD_BENCH=poolers|replicas|policy|encryption|cache` runs one
//! part only. PgBouncer is
//! measured only when its binary is installed.
//!
//! A run that fails (non-zero exit or failed transactions) is shown in the table as FAILED with
//! its reason, never hidden.

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Part 3: the cost of the access policy, pgward with it off and on, runs alternating.
fn policy(pgbench: &Path, pg_port: u16, seconds: u64, warmup: u64, scratch: &Path) {
    let files = scratch.join("policy");
    let written = fs::create_dir_all(&files)
        .and_then(|()| {
            fs::write(
                files.join("model.conf"),
                include_str!("../policies/model.conf"),
            )
        })
        .and_then(|()| fs::write(files.join("policy.csv"), bench_policy()));
    if let Err(e) = written {
        eprintln!("policy bench: cannot write the policy files: {e}");
        return;
    }
    let lines = bench_policy().lines().count();
    let on = format!(
        "\n[policy]\nenabled = true\nmodel = {:?}\npolicy = {:?}\n",
        files.join("model.conf"),
        files.join("policy.csv")
    );
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
            ("pgward + cache", Some("\n[cache]\nenabled = true\n")),
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
            let (before, ticks) = (
                commits(),
                proxy.as_ref().map(|p| cpu_ticks(p._process.child.id())),
            );
            let outcome =
                run_pgbench_with(pgbench, port, mode, clients, seconds, scratch, &workload);
            let ticks = proxy
                .as_ref()
                .zip(ticks)
                .map(|(p, t)| cpu_ticks(p._process.child.id()).saturating_sub(t));
            sleep(Duration::from_millis(1500));
            let served = commits().saturating_sub(before);
            let transactions = tps(&outcome) * seconds as f64;
            // Each pgbench transaction that reached PostgreSQL committed there once.
            let hit_ratio = (extra.is_some() && transactions > 0.0)
                .then(|| 1.0 - (served as f64 / transactions).min(1.0));
            // Microseconds of pgward CPU per transaction (ticks are 1/100 s).
            let cpu = ticks.map(|t| t as f64 * 10_000.0 / transactions);
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
    let pid = proxy._process.child.id();
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
            // pgward's CPU per query, in ms (ticks are 1/100 s).
            let used = cpu_ticks(pid).saturating_sub(ticks);
            let per_query = used as f64 * 10.0 / (tps(&outcome) * seconds as f64);
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

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
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
    field(11) + field(12)
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
    let mut cmd = Command::new(pgbench);
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
    let stdout_path = scratch.join("pgbench.out");
    let stderr_path = scratch.join("pgbench.err");
    let (stdout_file, stderr_file) = match (
        fs::File::create(&stdout_path),
        fs::File::create(&stderr_path),
    ) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => {
            return Outcome::Failed(format!("cannot create output file: {e}"))
        }
    };
    let threads = THREADS.min(clients);
    let mut cmd = client_command(pgbench, port);
    cmd.arg("-n")
        .args(workload)
        .args(["-M", mode])
        .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &seconds.to_string(), DATABASE])
        .stdout(stdout_file)
        .stderr(stderr_file);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("cannot run {}: {e}", pgbench.display())),
    };
    let mut guard = ChildGuard::new("pgbench", child);
    let status = match guard.wait_until(Instant::now() + Duration::from_secs(seconds) + RUN_GRACE) {
        Some(status) => status,
        None if interrupted() => return Outcome::Failed("interrupted".into()),
        None => {
            return Outcome::Failed(format!(
                "no result after {}s; killed",
                seconds + RUN_GRACE.as_secs()
            ))
        }
    };
    if interrupted() {
        return Outcome::Failed("interrupted".into());
    }
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    judge_run(status, &stdout, &stderr)
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
}

/// Reads `tps = X (without initial connection time)` and `number of failed transactions: N`.
fn parse_report(stdout: &str) -> Report {
    let mut report = Report::default();
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            if line.contains("without initial connection time") {
                report.tps = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            }
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
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() >= deadline || interrupted() => return None,
                Ok(None) => sleep(Duration::from_millis(50)),
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
    _process: ChildGuard,
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

/// Starts pgward in transaction mode in front of `backends` (name, port, role).
/// `extra` is TOML appended to the config.
fn start_pgward(
    scratch: &Path,
    backends: &[(&str, u16, &str)],
    extra: &str,
) -> std::result::Result<Proxy, Outcome> {
    let failed = |what: &str, e: &dyn fmt::Display| Outcome::Failed(format!("pgward {what}: {e}"));
    let port = free_port().map_err(|e| failed("port", &e))?;
    let config = scratch.join("pgward.toml");
    fs::write(&config, pgward_config(port, backends) + extra).map_err(|e| failed("config", &e))?;
    let log = scratch.join("pgward.log");
    let log_file = fs::File::create(&log).map_err(|e| failed("log", &e))?;
    let stderr = log_file.try_clone().map_err(|e| failed("log", &e))?;
    let child = Command::new(env!("CARGO_BIN_EXE_pgward"))
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
            eprintln!("pgward on 127.0.0.1:{port} (pool size {POOL_SIZE})");
            Ok(Proxy {
                port,
                _process: process,
            })
        }
        Err(reason) => {
            eprintln!("pgward unavailable: {reason}");
            Err(Outcome::Failed(shorten(&reason, 120)))
        }
    }
}

/// pgward's config file, per the contract in DESIGN.md.
fn pgward_config(port: u16, backends: &[(&str, u16, &str)]) -> String {
    let mut config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"

[auth]
method = "scram-sha-256"

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[pool]
mode = "transaction"
size = {POOL_SIZE}
"#
    );
    for (name, port, role) in backends {
        config.push_str(&format!(
            "\n[[backends]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"{role}\"\n"
        ));
    }
    config
}

/// Starts PgBouncer in transaction mode in front of the primary, if it is installed.
fn start_pgbouncer(scratch: &Path, pg_port: u16) -> std::result::Result<Proxy, Outcome> {
    let Some(bin) = pgbouncer_binary() else {
        let reason = "not installed, skipped (install it with: apt-get install pgbouncer)";
        eprintln!("PgBouncer {reason}");
        return Err(Outcome::Skipped(reason.into()));
    };
    let version = version_line(&bin).unwrap_or_default();
    let supports_prepared = parse_pgbouncer_version(&version).is_some_and(|v| v >= (1, 21));
    eprintln!("PgBouncer: {} ({version})", bin.display());
    match launch_pgbouncer(&bin, scratch, pg_port, supports_prepared) {
        Ok(proxy) => {
            eprintln!(
                "PgBouncer on 127.0.0.1:{} (pool size {POOL_SIZE})",
                proxy.port
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
) -> Result<Proxy> {
    let dir = scratch.join("pgbouncer");
    fs::create_dir(&dir)?;
    let port = free_port()?;
    let log = dir.join("pgbouncer.log");
    let userlist = dir.join("userlist.txt");
    fs::write(&userlist, format!("\"{USER}\" \"{PASSWORD}\"\n"))?;
    let ini = dir.join("pgbouncer.ini");
    fs::write(
        &ini,
        pgbouncer_ini(port, pg_port, &userlist, &log, supports_prepared),
    )?;

    let mut cmd = Command::new(bin);
    cmd.arg(&ini)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("pgbouncer.stderr"))?);
    // PgBouncer refuses to run as root: drop to the postgres user and hand it the directory.
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
    Ok(Proxy {
        port,
        _process: process,
    })
}

/// pgbouncer.ini for a transaction-mode pool that matches pgward's.
fn pgbouncer_ini(
    port: u16,
    pg_port: u16,
    userlist: &Path,
    log: &Path,
    supports_prepared: bool,
) -> String {
    let prepared = if supports_prepared {
        "max_prepared_statements = 100\n"
    } else {
        ""
    };
    format!(
        "[databases]
{DATABASE} = host=127.0.0.1 port={pg_port} dbname={DATABASE}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 1000
logfile = {log}
{prepared}",
        userlist = userlist.display(),
        log = log.display(),
    )
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
