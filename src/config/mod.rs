//! Configuration: TOML types with serde defaults, parsed once, validated, then shared immutably
//! (swapped whole on reload).

mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub use units::{parse_duration, parse_size};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
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
    pub cache: toml::Table,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub encryption: toml::Table,
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
    /// Threads serving clients; 0 means one per CPU core. 1 runs everything on one thread,
    /// which leaves more of a small machine to PostgreSQL when it runs alongside.
    pub worker_threads: usize,
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
        }
    }
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

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.source = Some(path.to_owned());
        config.resolve_paths();
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(1);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                message: e.message().to_string(),
            }
        })
    }

    /// Relative file paths are relative to the config file's folder... unless they exist
    /// relative to the working directory (the repo layout `config/`, `policies/`).
    fn resolve_paths(&mut self) {
        let Some(dir) = self
            .source
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_owned)
        else {
            return;
        };
        let fix_path = |path: &mut PathBuf| {
            if path.is_relative() && !path.exists() && dir.join(&*path).exists() {
                *path = dir.join(&*path);
            }
        };
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                fix_path(path);
            }
        };
        fix_path(&mut self.policy.model);
        fix_path(&mut self.policy.policy);
        fix(&mut self.server.tls_cert);
        fix(&mut self.server.tls_key);
        for b in &mut self.backends {
            fix(&mut b.tls_ca);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.source.clone().unwrap_or_default(),
            message,
        };
        self.server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid(format!("server.listen {:?}: {e}", self.server.listen)))?;
        if !self.server.admin_listen.is_empty() {
            self.server
                .admin_listen
                .parse::<SocketAddr>()
                .map_err(|e| {
                    invalid(format!(
                        "server.admin_listen {:?}: {e}",
                        self.server.admin_listen
                    ))
                })?;
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert and server.tls_key go together".into(),
                ))
            }
            (None, None) if self.server.tls_mode == TlsMode::Require => {
                return Err(invalid(
                    "server.tls_mode = \"require\" needs tls_cert and tls_key".into(),
                ))
            }
            _ => {}
        }
        if self.pool.size == 0 {
            return Err(invalid("pool.size must be at least 1".into()));
        }
        if self.backends.is_empty() {
            return Err(invalid("at least one [[backends]] entry is needed".into()));
        }
        if self.backends.len() > 64 {
            return Err(invalid("at most 64 [[backends]] are supported".into()));
        }
        let mut names = std::collections::HashSet::new();
        for b in &self.backends {
            if !names.insert(&b.name) {
                return Err(invalid(format!("backend name {:?} is used twice", b.name)));
            }
            if b.tls == BackendTls::VerifyFull
                && b.host.parse::<std::net::IpAddr>().is_ok()
                && b.tls_ca.is_none()
            {
                return Err(invalid(format!(
                    "backend {:?}: verify-full against an IP address needs tls_ca",
                    b.name
                )));
            }
        }
        if self
            .backends
            .iter()
            .filter(|b| b.role == BackendRole::Primary)
            .count()
            > 1
        {
            return Err(invalid(
                "more than one backend has role = \"primary\"".into(),
            ));
        }
        if self.routing.check_interval.is_zero() {
            return Err(invalid("routing.check_interval must be above zero".into()));
        }
        if self.auth.passthrough {
            if self.auth.auth_user.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "auth.passthrough = true needs auth.auth_user (a role that may read the password verifiers)".into(),
                ));
            }
            if self.auth.method == AuthMethod::Trust {
                return Err(invalid(
                    "auth.passthrough needs auth.method = \"scram-sha-256\" or \"md5\": with trust there is no password to pass through".into(),
                ));
            }
            if !self.auth.auth_query.contains("$1") {
                return Err(invalid(
                    "auth.auth_query must take the role name as $1".into(),
                ));
            }
        }
        let mut users = std::collections::HashSet::new();
        for u in &self.users {
            if !users.insert(&u.name) {
                return Err(invalid(format!("user {:?} is listed twice", u.name)));
            }
            if self.auth.method != AuthMethod::Trust && u.password.is_none() {
                return Err(invalid(format!(
                    "user {:?} needs a password with auth.method = {:?}",
                    u.name, self.auth.method
                )));
            }
            if self.auth.method == AuthMethod::Md5
                && u.password
                    .as_deref()
                    .is_some_and(|p| p.starts_with("SCRAM-SHA-256$"))
            {
                return Err(invalid(format!(
                    "user {:?}: md5 authentication needs a plain password, not a SCRAM verifier",
                    u.name
                )));
            }
        }
        Ok(())
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
        let config = Config::parse(&text, Path::new("test.toml"))?;
        config.validate()?;
        Ok(config)
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
