//! The pgward command line: run the daemon, the self-contained demo, config checks, key
//! generation, and the encryption of a column's existing rows.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use pgward::config::{Config, ConfigError, LogFormat};
use pgward::crypto::migrate::{self, Operation};
use pgward::daemon::{Daemon, Runtime, Signals};

#[derive(Parser)]
#[command(
    name = "pgward",
    version,
    about = "PostgreSQL proxy: pooling, routing, policy, encryption, caching"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "PGWARD_CONFIG",
        default_value = "config/pgward.toml"
    )]
    config: PathBuf,
    /// Log lines as readable text or as JSON objects (default: `server.log_format`, else text).
    #[arg(long, global = true, env = "PGWARD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Start a throwaway PostgreSQL primary + replica with pgward in front; Ctrl-C removes it all.
    Demo {
        /// Where the demo's pgward listens.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
    /// Validate the configuration (and the files it names); exit status 1 on errors.
    Check,
    /// Print a new random 256-bit key, base64-encoded.
    Keygen,
    /// Encrypt the plaintext values already in a designated column, online, in batches.
    Encrypt(MigrateArgs),
    /// Re-encrypt a designated column's values under the active key, online, in batches.
    Rotate(MigrateArgs),
}

/// What `encrypt` and `rotate` work on. Both are resumable: stop them (Ctrl-C) and run the
/// same command again.
#[derive(Args)]
struct MigrateArgs {
    /// The table: `schema.table`, or `table` in schema public.
    #[arg(long)]
    table: String,
    /// The column; it must be designated in [[encryption.columns]].
    #[arg(long)]
    column: String,
    /// Rows per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// PostgreSQL login (default: the first [[users]] entry's backend user). Its password is
    /// that of a [[users]] entry with this backend user, else PGPASSWORD.
    #[arg(long)]
    user: Option<String>,
    /// Database (default: the login's name, as libpq does).
    #[arg(long)]
    database: Option<String>,
    /// Schema of the progress table pgward_migration (created if missing).
    #[arg(long, default_value = "public")]
    state_schema: String,
    /// Forget the saved progress and start from the first row.
    #[arg(long)]
    restart: bool,
    /// When stderr is not a terminal, print a progress line this often (on a terminal: a bar).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    progress_interval: std::time::Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> LogFormat {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// `pgward check` has printed the problems itself; exit 1 without another message.
#[derive(Debug, thiserror::Error)]
#[error("the configuration has errors")]
struct Reported;

/// `pgward encrypt|rotate` stopped on a signal after saving its place: exit 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format.map(LogFormat::from);
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config, log_format),
        Command::Demo { listen } => {
            init_logging(log_format.unwrap_or_default());
            runtime(0).and_then(|rt| rt.block_on(pgward::demo::run(&listen)))
        }
        Command::Check => {
            init_logging(log_format.unwrap_or_default());
            check(&cli.config)
        }
        Command::Keygen => {
            use base64::Engine;
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            Ok(())
        }
        Command::Encrypt(args) => migrate(&cli.config, Operation::Encrypt, args, log_format),
        Command::Rotate(args) => migrate(&cli.config, Operation::Rotate, args, log_format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Reported>() => ExitCode::FAILURE,
        Err(e) if e.is::<Interrupted>() => ExitCode::from(130),
        // Each line already starts with the file it is about.
        Err(e) if e.is::<ConfigError>() => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pgward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`).
fn init_logging(format: LogFormat) {
    // sqlparser's debug output holds the SQL it parses, literals included: values of encrypted
    // columns must never reach a log, so it is capped at info whatever RUST_LOG says.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive("sqlparser=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a terminal, not for a log file.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A runtime sized as `server.worker_threads` says: 0 is half the cores (at least one), 1 a
/// single-threaded runtime (no work stealing, no wake-up of another thread per message: the
/// least CPU per transaction where one core is enough), n is n worker threads.
fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = match worker_threads {
        0 => pgward::config::default_worker_threads(),
        n => n,
    };
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if workers > 1 {
        builder.worker_threads(workers);
    }
    Ok(builder.enable_all().thread_name("pgward-worker").build()?)
}

/// The daemon; the log format comes from the command line, else from the config.
fn run(path: &std::path::Path, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    init_logging(log_format.unwrap_or(config.server.log_format));
    runtime(config.server.worker_threads)?.block_on(async {
        let daemon = Daemon::bind(config).await?;
        daemon.run(Signals::Handle).await
    })
}

/// Every problem with the config and the files it names, one per line on stderr; or one line
/// saying what the config runs.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let report = Config::inspect(path)?;
    let mut problems: Vec<String> = report.lines().collect();
    if let Some(config) = &report.config {
        // The policy files' contents, when the config could say where they are.
        let policy_read = !report.problems.iter().any(|p| p.key.starts_with("policy"));
        if config.policy.enabled && policy_read {
            if let Err(e) = runtime(0)?.block_on(pgward::policy::check(&config.policy)) {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            if let Err(e) = Runtime::build(config.clone(), &Default::default()) {
                problems.push(format!("{}: {e:#}", path.display()));
            }
        }
    }
    if !problems.is_empty() {
        for problem in problems {
            eprintln!("{problem}");
        }
        return Err(Reported.into());
    }
    let config = report.config.expect("no problems, so a config");
    println!("{}: ok ({})", path.display(), config.summary());
    Ok(())
}

/// `pgward encrypt` / `pgward rotate`: progress on stderr, the summary line on stdout.
fn migrate(
    path: &std::path::Path,
    operation: Operation,
    args: MigrateArgs,
    log_format: Option<LogFormat>,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    init_logging(log_format.unwrap_or(config.server.log_format));
    let options = migrate::Options {
        operation,
        table: args.table,
        column: args.column,
        batch_size: args.batch_size as usize,
        user: args.user,
        database: args.database,
        password: std::env::var("PGPASSWORD").ok(),
        state_schema: args.state_schema,
        restart: args.restart,
        progress_interval: args.progress_interval,
    };
    let summary = runtime(0)?.block_on(async {
        let stop = migrate::stop_on_signals()?;
        anyhow::Ok(migrate::run(&config, &options, stop).await?)
    })?;
    println!("{}", summary.line(operation));
    if summary.interrupted {
        match &summary.last_key {
            Some(key) => eprintln!(
                "pgward: interrupted; the rows up to {key} are done: run the same command again to resume"
            ),
            None => eprintln!("pgward: interrupted before the first batch; nothing was written"),
        }
        return Err(Interrupted.into());
    }
    if summary.undecryptable > 0 {
        anyhow::bail!(
            "{} value(s) of {} did not decrypt with any configured key and were left as they are",
            summary.undecryptable,
            summary.column
        );
    }
    Ok(())
}
