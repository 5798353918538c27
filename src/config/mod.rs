//! Configuration: TOML types with serde defaults, parsed once, validated, then shared immutably
//! (swapped whole on reload).

mod check;
mod encryption;
mod locate;
mod show;
mod suggest;
mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub use check::{Problem, Report};
pub use encryption::{
    identifier, schema_table, valid_key_id, ColumnConfig, EncryptionConfig, KeyConfig, KeySource,
    WithoutDecrypt, MAX_KEY_ID_LEN,
};
pub use show::settings;
pub use units::{parse_duration, parse_size};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Everything found wrong with the file, one `file:line:column: message` per line.
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.render(path))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
    /// Where the file was read from; relative paths inside it resolve against its folder.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// HTTP endpoint for /metrics, /healthz, /readyz; empty disables it.
    pub admin_listen: String,
    pub max_clients: usize,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_mode: TlsMode,
    /// A client must finish startup and authentication within this time.
    #[serde(with = "units::duration")]
    pub startup_timeout: Duration,
    /// Largest protocol message accepted from a client; larger ones get 08P01.
    #[serde(with = "units::size")]
    pub max_message_size: u64,
    /// How long SIGTERM waits for clients to finish before exiting.
    #[serde(with = "units::duration")]
    pub shutdown_timeout: Duration,
    /// Threads serving clients; 0 means half the CPU cores, at least one (see
    /// `default_worker_threads`). 1 runs everything on one thread.
    pub worker_threads: usize,
    /// Readable lines or JSON lines on stderr; `--log-format` wins. Read at startup only.
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            admin_listen: String::new(),
            max_clients: 10_000,
            tls_cert: None,
            tls_key: None,
            tls_mode: TlsMode::Prefer,
            startup_timeout: Duration::from_secs(15),
            max_message_size: 256 << 20,
            shutdown_timeout: Duration::from_secs(30),
            worker_threads: 0,
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub method: AuthMethod,
    pub admin_users: Vec<String>,
    /// Roles without a `[[users]]` entry log in with their PostgreSQL password: pgward reads
    /// the role's verifier with `auth_query` as `auth_user` and checks the client against it.
    pub passthrough: bool,
    /// The role `auth_query` runs as; required with passthrough.
    pub auth_user: Option<String>,
    /// Its password; default: the backend password of the `[[users]]` entry named `auth_user`.
    pub auth_password: Option<String>,
    /// Returns (name, verifier) for the role name in `$1`; the verifier is the second column.
    pub auth_query: String,
    /// Where `auth_query` runs; default: the database the client asked for.
    pub auth_database: Option<String>,
}

/// PgBouncer's default `auth_query`.
pub const DEFAULT_AUTH_QUERY: &str =
    "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1";

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            method: AuthMethod::ScramSha256,
            admin_users: vec!["admin".into()],
            passthrough: false,
            auth_user: None,
            auth_password: None,
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_database: None,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    /// The auth_user's password never appears in logs or error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("method", &self.method)
            .field("admin_users", &self.admin_users)
            .field("passthrough", &self.passthrough)
            .field("auth_user", &self.auth_user)
            .field("auth_query", &self.auth_query)
            .field("auth_database", &self.auth_database)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain text, or a SCRAM verifier `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub backend_user: Option<String>,
    #[serde(default)]
    pub backend_password: Option<String>,
}

impl std::fmt::Debug for UserConfig {
    /// Passwords never appear in logs or error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("backend_user", &self.backend_user)
            .finish_non_exhaustive()
    }
}

impl UserConfig {
    pub fn backend_user(&self) -> &str {
        self.backend_user.as_deref().unwrap_or(&self.name)
    }

    /// The password pgward presents to PostgreSQL; a SCRAM verifier cannot be used for that.
    pub fn backend_password(&self) -> Option<&str> {
        self.backend_password.as_deref().or(self
            .password
            .as_deref()
            .filter(|p| !p.starts_with("SCRAM-SHA-256$")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub mode: PoolMode,
    /// Server connections per (user, database, backend).
    pub size: usize,
    #[serde(with = "units::duration")]
    pub checkout_timeout: Duration,
    #[serde(with = "units::duration")]
    pub connect_timeout: Duration,
    /// Idle server connections older than this are closed.
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    /// Run in session mode when a client leaves, so the next one starts clean.
    pub reset_query: String,
    /// Server-side prepared statements kept per connection before it is recycled.
    pub max_prepared_statements: usize,
    /// Transaction mode: keep a client on its server connection while it holds session state
    /// that cannot move (temporary tables, WITH HOLD cursors, ...), or refuse such statements.
    pub pinning: Pinning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pinning {
    Auto,
    Off,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            mode: PoolMode::Transaction,
            size: 20,
            checkout_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            reset_query: "DISCARD ALL".into(),
            max_prepared_statements: 1000,
            pinning: Pinning::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Transaction,
    Session,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_role")]
    pub role: BackendRole,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "default_backend_tls")]
    pub tls: BackendTls,
    /// CA bundle (PEM) for `verify-full`; the public web roots when absent.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_role() -> BackendRole {
    BackendRole::Primary
}
fn default_weight() -> u32 {
    1
}
fn default_backend_tls() -> BackendTls {
    BackendTls::Disable
}

/// Read/write splitting across a primary and its streaming replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Send statements that certainly only read to replicas; false sends everything to the primary.
    pub read_write_split: bool,
    pub strategy: Strategy,
    /// A replica whose replay position trails the primary by more gets no reads.
    #[serde(with = "units::size")]
    pub max_replica_lag: u64,
    /// After a client's write commits, its reads go only to servers that have replayed it.
    pub read_your_writes: bool,
    /// Let the primary take a share of the reads (by its weight), not only the replicas.
    pub primary_reads: bool,
    /// Where reads go when no replica is usable: the primary, or nowhere (08006).
    pub no_replica: NoReplica,
    /// Functions (lower case) that write or lock, beyond the built-in list; a SELECT calling
    /// one goes to the primary.
    pub write_functions: Vec<String>,
    /// How often each backend is checked (role, health, WAL position).
    #[serde(with = "units::duration")]
    pub check_interval: Duration,
    /// A check that takes longer counts as a failure.
    #[serde(with = "units::duration")]
    pub check_timeout: Duration,
    /// How long a failed backend gets no traffic before it may be readmitted.
    #[serde(with = "units::duration")]
    pub ban_time: Duration,
    /// Credentials for the checks; default: the first [[users]] entry's backend credentials.
    pub check_user: Option<String>,
    pub check_password: Option<String>,
    pub check_database: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            read_write_split: true,
            strategy: Strategy::RoundRobin,
            max_replica_lag: 16 << 20,
            read_your_writes: true,
            primary_reads: false,
            no_replica: NoReplica::Primary,
            write_functions: Vec::new(),
            check_interval: Duration::from_millis(250),
            check_timeout: Duration::from_secs(2),
            ban_time: Duration::from_secs(5),
            check_user: None,
            check_password: None,
            check_database: "postgres".into(),
        }
    }
}

/// `[cache]`: the result cache (src/cache) and its cross-instance invalidation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Bytes of cached results (response frames plus keys) kept at most.
    #[serde(with = "units::size")]
    pub max_size: u64,
    /// How long an entry lives unless a `/* pgward:cache ttl=... */` hint says otherwise; the
    /// only bound on staleness for writes that do not go through pgward.
    #[serde(with = "units::duration")]
    pub ttl: Duration,
    /// Larger results stream through uncached.
    #[serde(with = "units::size")]
    pub max_entry_size: u64,
    /// `schema.table` glob patterns; when not empty, only results that read nothing but
    /// matching tables are cached.
    pub tables: Vec<String>,
    /// `schema.table` glob patterns never cached.
    pub exclude_tables: Vec<String>,
    /// Cache results that read `pg_catalog` or `information_schema`.
    pub system_catalogs: bool,
    /// How long a write's commit waits for the other pgward instances to acknowledge its
    /// invalidation; one that does not is treated as down until it sends a new heartbeat.
    #[serde(with = "units::duration")]
    pub ack_timeout: Duration,
    /// The LISTEN/NOTIFY channel pgward instances share (in each database they cache).
    pub channel: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_size: 256 << 20,
            ttl: Duration::from_secs(60),
            max_entry_size: 1 << 20,
            tables: Vec::new(),
            exclude_tables: Vec::new(),
            system_catalogs: false,
            ack_timeout: Duration::from_millis(20),
            channel: "pgward_cache".into(),
        }
    }
}

/// `[policy]`: casbin access rules checked for every statement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub enabled: bool,
    /// casbin model file (request `sub, db, tbl, col, act`).
    pub model: PathBuf,
    /// casbin policy file (`p` and `g` lines).
    pub policy: PathBuf,
    /// What happens to a statement that cannot be analysed: deny (42501) or allow (primary).
    pub on_unparsed: OnUnparsed,
    /// How often the catalog (schemas, tables, columns) pgward resolves names with is re-read.
    #[serde(with = "units::duration")]
    pub catalog_refresh: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: "policies/model.conf".into(),
            policy: "policies/policy.csv".into(),
            on_unparsed: OnUnparsed::Deny,
            catalog_refresh: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnparsed {
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    LeastConnections,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoReplica {
    Primary,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendRole {
    Primary,
    Replica,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// What `server.worker_threads = 0` runs: half the cores, at least one. Most of a proxied
/// transaction is the kernel's socket work, and a second worker pays only once one core is
/// busy: until then a multi-threaded runtime spends CPU waking parked workers. Where the proxy
/// shares the machine with PostgreSQL or its clients, one thread took less CPU per
/// transaction, added less latency and carried more transactions than a worker per core (two
/// cores; README, Efficiency). A proxy with cores of its own can be given them.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Compiles a `cache.tables` / `cache.exclude_tables` pattern: a glob over `schema.table`
/// names as pgward resolves them (PostgreSQL's case folding applied, e.g. `public.orders`,
/// `audit.*`, `public.report_*`).
pub fn table_glob(pattern: &str) -> Result<globset::Glob, String> {
    if !pattern.contains('.') {
        return Err(format!(
            "{pattern:?} names no schema; patterns match schema.table (e.g. \"public.{pattern}\" or \"*.{pattern}\")"
        ));
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("{pattern:?} is not a valid glob pattern: {e}"))
}

/// Relative file paths are relative to the config file's folder `dir`... unless they exist
/// relative to the working directory (the repo layout `config/`, `policies/`).
pub(crate) fn resolve_in(dir: Option<&Path>, path: &Path) -> PathBuf {
    match dir {
        Some(dir) if path.is_relative() && !path.exists() && dir.join(path).exists() => {
            dir.join(path)
        }
        _ => path.to_owned(),
    }
}

impl Config {
    /// Reads, parses and validates a config file (and checks the files it names); every
    /// problem found is in the error, each with its line and column.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::inspect(path)?.into_result()
    }

    /// Everything `load` finds, and the config when it could be read at all. Errs only when
    /// the file cannot be read.
    pub fn inspect(path: &Path) -> Result<Report, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Ok(check::read(&text, path))
    }

    /// The settings in `text` (read from `path`, which errors name): TOML syntax, keys, types
    /// and values only; `load` also checks them against each other and the files they name.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        check::parse(text, path).into_result()
    }

    /// The folder of the config file, which relative paths in it (such as `file:` key
    /// material) resolve against.
    pub fn base_dir(&self) -> Option<&Path> {
        self.source.as_deref().and_then(Path::parent)
    }

    fn resolve_paths(&mut self) {
        let dir = self.source.as_deref().and_then(Path::parent);
        let mut paths: Vec<&mut PathBuf> = vec![&mut self.policy.model, &mut self.policy.policy];
        paths.extend(self.server.tls_cert.as_mut());
        paths.extend(self.server.tls_key.as_mut());
        paths.extend(self.backends.iter_mut().filter_map(|b| b.tls_ca.as_mut()));
        for path in paths {
            *path = resolve_in(dir, path);
        }
    }

    /// One line for `pgward check`: what this config runs.
    pub fn summary(&self) -> String {
        let count = |n: usize, what: &str| match n {
            1 => format!("1 {what}"),
            n => format!("{n} {what}s"),
        };
        let mode = match self.pool.mode {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        };
        let mut summary = format!(
            "{}, {}, {mode} pooling, policy {}",
            count(self.backends.len(), "backend"),
            count(self.users.len(), "user"),
            if self.policy.enabled { "on" } else { "off" }
        );
        if self.encryption.enabled() {
            let columns = count(self.encryption.columns.len(), "encrypted column");
            summary.push_str(&format!(", {columns}"));
        }
        summary
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The password of `auth.auth_user`: `auth.auth_password`, else the backend password of
    /// the `[[users]]` entry of that name.
    pub fn auth_user_password(&self) -> Option<&str> {
        self.auth.auth_password.as_deref().or_else(|| {
            self.auth
                .auth_user
                .as_deref()
                .and_then(|name| self.user(name))
                .and_then(UserConfig::backend_password)
        })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().expect("validated")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(auth: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[auth]\n{auth}\n[[users]]\nname = \"pgward_auth\"\npassword = \"pw\"\n\
             backend_password = \"backend-pw\"\n[[backends]]\nname = \"primary\"\n"
        );
        check::read(&text, Path::new("test.toml")).into_result()
    }

    #[test]
    fn passthrough_keys_default_and_validate() {
        let off = config("").unwrap();
        assert!(!off.auth.passthrough);
        assert_eq!(off.auth.auth_query, DEFAULT_AUTH_QUERY);

        let on = config("passthrough = true\nauth_user = \"pgward_auth\"").unwrap();
        assert_eq!(on.auth_user_password(), Some("backend-pw"));
        assert_eq!(on.auth.auth_database, None);
        let own = config("passthrough = true\nauth_user = \"other\"\nauth_password = \"x\"");
        assert_eq!(own.unwrap().auth_user_password(), Some("x"));
        let none = config("passthrough = true\nauth_user = \"other\"").unwrap();
        assert_eq!(none.auth_user_password(), None);

        for (auth, needle) in [
            ("passthrough = true", "auth_user"),
            ("passthrough = true\nauth_user = \"\"", "auth_user"),
            (
                "passthrough = true\nauth_user = \"a\"\nmethod = \"trust\"",
                "trust",
            ),
            (
                "passthrough = true\nauth_user = \"a\"\nauth_query = \"SELECT 1, 2\"",
                "$1",
            ),
        ] {
            let err = config(auth).expect_err(auth).to_string();
            assert!(err.contains(needle), "{auth}: {err}");
        }
    }

    #[test]
    fn the_auth_password_stays_out_of_debug() {
        let on = config("passthrough = true\nauth_user = \"a\"\nauth_password = \"hush\"").unwrap();
        assert!(!format!("{:?}", on.auth).contains("hush"));
    }
}
