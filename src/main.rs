//! The pgward command line: run the daemon, the self-contained demo, config checks, key generation.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use pgward::config::{Config, ConfigError, LogFormat};
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format.map(LogFormat::from);
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config, log_format),
        Command::Demo { listen } => {
            init_logging(log_format.unwrap_or_default());
            runtime().and_then(|rt| rt.block_on(pgward::demo::run(&listen)))
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Reported>() => ExitCode::FAILURE,
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The daemon; the log format comes from the command line, else from the config.
fn run(path: &std::path::Path, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    init_logging(log_format.unwrap_or(config.server.log_format));
    runtime()?.block_on(async {
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
            if let Err(e) = runtime()?.block_on(pgward::policy::check(&config.policy)) {
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
