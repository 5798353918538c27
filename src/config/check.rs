//! Reading a config file with every problem found in one pass, each at the line and column
//! of the key or value it is about: TOML syntax, unknown keys, bad values, contradictions
//! between settings, and files named in it that cannot be used.
//!
//! serde stops at the first error, so after each one the offending `key = value` (or table) is
//! blanked out of a copy of the text (same length, so every position stays put) and the rest
//! is read again. Such keys then hold their defaults; the later checks skip what depends on
//! them rather than report consequences of a default nobody wrote.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::ImDocument;

use super::encryption::{identifier, schema_table, valid_key_id, KeySource, MAX_KEY_ID_LEN};
use super::locate::{child, line_col, parent, within, Entry, Kind, Spans};
use super::suggest::closest;
use super::{AuthMethod, BackendRole, BackendTls, Config, ConfigError, TlsMode};

/// After this many errors the rest of a file is not read.
const MAX_PROBLEMS: usize = 100;
/// More client threads than this is a typo, not a machine (tokio would start them all).
const MAX_WORKER_THREADS: usize = 1024;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// The key it is about, as a path (`backends.1.role`); empty when it is about no key.
    pub key: String,
    pub message: String,
}

impl Problem {
    /// `file:line:column: message`
    pub fn render(&self, path: &Path) -> String {
        format!(
            "{}:{}:{}: {}",
            path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// What reading a config file found.
#[derive(Debug)]
pub struct Report {
    pub path: PathBuf,
    /// The settings, when the file could be read into them at all. With problems, the keys that
    /// had errors hold their defaults.
    pub config: Option<Config>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// One `file:line:column: message` per problem.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().map(|p| p.render(&self.path))
    }

    pub fn into_result(self) -> Result<Config, ConfigError> {
        match self.config {
            Some(config) if self.problems.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: self.path,
                problems: self.problems,
            }),
        }
    }
}

/// Reads `text` (the contents of `path`) into a config, collecting every problem.
pub fn read(text: &str, path: &Path) -> Report {
    inspect(text, path, true)
}

/// Only the TOML and the settings' types and values: no contradictions, no files.
pub fn parse(text: &str, path: &Path) -> Report {
    inspect(text, path, false)
}

fn inspect(text: &str, path: &Path, whole: bool) -> Report {
    let mut report = Report {
        path: path.to_owned(),
        config: None,
        problems: Vec::new(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            report.problems.push(Problem {
                line,
                column,
                key: String::new(),
                message: one_line(e.message()),
            });
            return report;
        }
    };
    let mut checker = Checker {
        text,
        spans: Spans::new(&doc),
        problems: Vec::new(),
        broken: Vec::new(),
    };
    let mut config = checker.deserialize();
    if let Some(config) = config.as_mut().filter(|_| whole) {
        config.source = Some(path.to_owned());
        config.resolve_paths();
        checker.contradictions(config);
        checker.files(config);
    }
    report.config = config;
    report.problems = checker.problems;
    report.problems.sort_by_key(|p| (p.line, p.column));
    report
}

struct Checker<'a> {
    text: &'a str,
    spans: Spans,
    problems: Vec<Problem>,
    /// Paths taken out of the text for errors: the config holds defaults there.
    broken: Vec<String>,
}

impl Checker<'_> {
    fn report_at(&mut self, offset: Option<usize>, key: &str, message: String) {
        let (line, column) = offset.map_or((1, 1), |o| line_col(self.text, o));
        self.problems.push(Problem {
            line,
            column,
            key: key.to_owned(),
            message,
        });
    }

    /// A problem with the value at `path` (or, when it is not in the file, the nearest
    /// enclosing table).
    fn at_value(&mut self, path: &str, message: String) {
        let offset = self.spans.nearest(path).and_then(Entry::value_start);
        self.report_at(offset, path, message);
    }

    /// A problem with the key (or table) at `path`.
    fn at_key(&mut self, path: &str, message: String) {
        let offset = self.spans.nearest(path).and_then(Entry::key_start);
        self.report_at(offset, path, message);
    }

    /// Was `path`, or a table holding it, taken out for an error?
    fn broken(&self, path: &str) -> bool {
        self.broken.iter().any(|b| within(path, b))
    }

    fn written(&self, path: &str) -> bool {
        self.spans.get(path).is_some()
    }

    fn line(&self, path: &str) -> usize {
        self.spans
            .nearest(path)
            .and_then(Entry::value_start)
            .map_or(1, |o| line_col(self.text, o).0)
    }

    /// serde over the text, again and again with each offending entry blanked out.
    fn deserialize(&mut self) -> Option<Config> {
        let mut text = self.text.to_owned();
        for _ in 0..MAX_PROBLEMS {
            let error = match toml::from_str::<Config>(&text) {
                Ok(config) => return Some(config),
                Err(error) => error,
            };
            let offset = error.span().map(|s| s.start);
            let entry = offset
                .and_then(|o| self.spans.covering(o, |kind| kind != Kind::Element))
                .cloned();
            let path = entry.as_ref().map_or("", |e| e.path.as_str());
            let message = describe(error.message(), path);
            // A key missing from a table that lost keys to earlier errors is their consequence.
            let consequence = error.message().starts_with("missing field")
                && self.broken.iter().any(|b| within(b, path));
            if !consequence {
                self.report_at(offset, path, message);
            }
            let removal = entry
                .filter(|e| !self.broken(&e.path))
                .and_then(|e| self.removable(&e).map(|range| (e.path, range)));
            let (path, range) = removal?;
            blank(&mut text, range);
            if ImDocument::parse(text.as_str()).is_err() {
                return None;
            }
            self.broken.push(path);
        }
        None
    }

    /// The text of `entry`, if blanking it leaves everything else in place. Never one
    /// `[[array]]` entry: the ones after it would move up and be reported at its place.
    fn removable(&self, entry: &Entry) -> Option<Range<usize>> {
        let last = entry.path.rsplit('.').next().unwrap_or_default();
        if entry.kind == Kind::Table && last.parse::<usize>().is_ok() {
            return None;
        }
        let range = entry.range()?;
        let foreign = self.spans.entries().iter().any(|e| {
            !within(&e.path, &entry.path)
                && !within(&entry.path, &e.path)
                && e.range().is_some_and(|r| range.contains(&r.start))
        });
        (!foreign).then_some(range)
    }

    /// Settings that cannot all hold at once, or that can never work.
    fn contradictions(&mut self, config: &Config) {
        let server = &config.server;
        let listen = match server.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(e) => {
                let message = format!("server.listen {:?} is not ip:port: {e}", server.listen);
                self.at_value("server.listen", message);
                None
            }
        };
        if !server.admin_listen.is_empty() {
            match server.admin_listen.parse::<SocketAddr>() {
                Ok(admin) if listen.is_some_and(|l| same_listener(l, admin)) => self.at_value(
                    "server.admin_listen",
                    format!(
                        "server.admin_listen {:?} is the address of server.listen; they need different ports",
                        server.admin_listen
                    ),
                ),
                Ok(_) => {}
                Err(e) => self.at_value(
                    "server.admin_listen",
                    format!(
                        "server.admin_listen {:?} is not ip:port: {e}",
                        server.admin_listen
                    ),
                ),
            }
        }
        if server.max_clients == 0 {
            let message = "server.max_clients must be at least 1".to_owned();
            self.at_value("server.max_clients", message);
        }
        if server.worker_threads > MAX_WORKER_THREADS {
            let message = format!(
                "server.worker_threads {} is more than {MAX_WORKER_THREADS}; 0 is half the cores",
                server.worker_threads
            );
            self.at_value("server.worker_threads", message);
        }
        self.tls_contradictions(config);
        if config.pool.size == 0 {
            self.at_value("pool.size", "pool.size must be at least 1".into());
        }
        if config.routing.check_interval.is_zero() {
            let message = "routing.check_interval must be above zero".to_owned();
            self.at_value("routing.check_interval", message);
        }
        self.backend_contradictions(config, listen);
        self.user_contradictions(config);
        self.encryption_contradictions(config);
        self.cache_contradictions(config);
    }

    fn cache_contradictions(&mut self, config: &Config) {
        let cache = &config.cache;
        for key in ["tables", "exclude_tables"] {
            let path = format!("cache.{key}");
            if self.broken(&path) {
                continue;
            }
            let patterns = match key {
                "tables" => &cache.tables,
                _ => &cache.exclude_tables,
            };
            for (i, pattern) in patterns.iter().enumerate() {
                if let Err(e) = super::table_glob(pattern) {
                    self.at_value(&child(&path, i), format!("{path}: {e}"));
                }
            }
        }
        if cache.max_size == 0 && !self.broken("cache.max_size") {
            self.at_value("cache.max_size", "cache.max_size must be above zero".into());
        }
        let entry_size_known =
            !self.broken("cache.max_entry_size") && !self.broken("cache.max_size");
        if entry_size_known && cache.max_entry_size > cache.max_size {
            let message =
                "cache.max_entry_size is larger than cache.max_size; no such entry could be kept";
            self.at_value("cache.max_entry_size", message.into());
        } else if entry_size_known && cache.max_entry_size > 1 << 30 {
            let message = "cache.max_entry_size must be at most 1GB";
            self.at_value("cache.max_entry_size", message.into());
        }
        for key in ["ttl", "ack_timeout"] {
            let path = format!("cache.{key}");
            let value = match key {
                "ttl" => cache.ttl,
                _ => cache.ack_timeout,
            };
            if value.is_zero() && !self.broken(&path) {
                self.at_value(&path, format!("{path} must be above zero"));
            }
        }
        if !self.broken("cache.channel") && (cache.channel.is_empty() || cache.channel.len() > 63) {
            let message = "cache.channel must be 1 to 63 bytes (a PostgreSQL identifier)";
            self.at_value("cache.channel", message.into());
        }
    }

    fn tls_contradictions(&mut self, config: &Config) {
        let server = &config.server;
        let unknown = self.broken("server.tls_cert") || self.broken("server.tls_key");
        match (&server.tls_cert, &server.tls_key) {
            _ if unknown => {}
            (Some(_), None) => self.at_value(
                "server.tls_cert",
                "server.tls_cert is set but server.tls_key is not; TLS needs both".into(),
            ),
            (None, Some(_)) => self.at_value(
                "server.tls_key",
                "server.tls_key is set but server.tls_cert is not; TLS needs both".into(),
            ),
            (None, None) if server.tls_mode == TlsMode::Require => self.at_value(
                "server.tls_mode",
                "server.tls_mode = \"require\" needs server.tls_cert and server.tls_key".into(),
            ),
            _ => {}
        }
    }

    fn backend_contradictions(&mut self, config: &Config, listen: Option<SocketAddr>) {
        let backends = &config.backends;
        if backends.is_empty() && !self.broken("backends") {
            let message =
                "no [[backends]] entry: at least one PostgreSQL server is needed".to_owned();
            self.at_key("backends", message);
        }
        if backends.len() > 64 {
            let message = "at most 64 [[backends]] are supported".to_owned();
            self.at_key("backends.64", message);
        }
        let mut primary: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            let at = |key: &str| child(&child("backends", i), key);
            if let Some(first) = backends[..i].iter().position(|o| o.name == b.name) {
                let message = format!(
                    "backend name {:?} is used twice (first at line {})",
                    b.name,
                    self.line(&at_index("backends", first, "name"))
                );
                self.at_value(&at("name"), message);
            }
            if b.port == 0 {
                self.at_value(&at("port"), "backends.port must be 1 to 65535".into());
            }
            if listen.is_some_and(|l| is_listener(&b.host, b.port, l)) {
                let message = format!(
                    "backend {:?} is pgward's own server.listen address; pgward would connect to itself",
                    b.name
                );
                self.at_value(&at("port"), message);
            }
            if b.tls == BackendTls::VerifyFull
                && b.host.parse::<IpAddr>().is_ok()
                && b.tls_ca.is_none()
                && !self.broken(&at("tls_ca"))
            {
                let message = format!(
                    "backend {:?}: tls = \"verify-full\" against an IP address needs tls_ca",
                    b.name
                );
                self.at_value(&at("tls"), message);
            }
            if b.role != BackendRole::Primary || self.broken(&at("role")) {
                continue;
            }
            let Some(first) = primary else {
                primary = Some(i);
                continue;
            };
            let first_name = &backends[first].name;
            let first_line = self.line(&at_index("backends", first, "role"));
            if self.written(&at("role")) {
                let message = format!(
                    "backend {:?} has role = \"primary\" but {first_name:?} (line {first_line}) is the primary already; at most one backend may be",
                    b.name
                );
                self.at_value(&at("role"), message);
            } else {
                let message = format!(
                    "backend {:?} is a primary too (role defaults to \"primary\") but {first_name:?} (line {first_line}) is the primary already; set role = \"replica\"",
                    b.name
                );
                self.at_key(&child("backends", i), message);
            }
        }
    }

    fn user_contradictions(&mut self, config: &Config) {
        let method_known = !self.broken("auth.method");
        for (i, u) in config.users.iter().enumerate() {
            let at = |key: &str| at_index("users", i, key);
            if let Some(first) = config.users[..i].iter().position(|o| o.name == u.name) {
                let message = format!(
                    "user {:?} is listed twice (first at line {})",
                    u.name,
                    self.line(&at_index("users", first, "name"))
                );
                self.at_value(&at("name"), message);
            }
            if !method_known || self.broken(&at("password")) {
                continue;
            }
            if config.auth.method != AuthMethod::Trust && u.password.is_none() {
                let message = format!(
                    "user {:?} has no password, which auth.method = {:?} needs",
                    u.name,
                    config.auth.method.as_str()
                );
                self.at_key(&child("users", i), message);
            }
            if config.auth.method == AuthMethod::Md5
                && u.password
                    .as_deref()
                    .is_some_and(|p| p.starts_with("SCRAM-SHA-256$"))
            {
                let message = format!(
                    "user {:?}: md5 authentication needs a plain password, not a SCRAM verifier",
                    u.name
                );
                self.at_value(&at("password"), message);
            }
        }
        // The built-in default names "admin"; only names someone wrote must exist.
        if self.written("auth.admin_users") && !self.broken("auth.admin_users") {
            for (i, name) in config.auth.admin_users.iter().enumerate() {
                if config.user(name).is_none() {
                    let message = format!("auth.admin_users: {name:?} has no [[users]] entry");
                    self.at_value(&child("auth.admin_users", i), message);
                }
            }
        }
        if config.auth.passthrough {
            if config.auth.auth_user.as_deref().is_none_or(str::is_empty) {
                let message = "auth.passthrough = true needs auth.auth_user (a role that may read \
                     the password verifiers)";
                self.at_value("auth.passthrough", message.to_owned());
            }
            if config.auth.method == AuthMethod::Trust {
                let message = "auth.passthrough needs auth.method = \"scram-sha-256\" or \"md5\": \
                     with trust there is no password to pass through";
                self.at_value("auth.passthrough", message.to_owned());
            }
            if !config.auth.auth_query.contains("$1") {
                let message = "auth.auth_query must take the role name as $1";
                self.at_value("auth.auth_query", message.to_owned());
            }
        }
    }

    /// `[encryption]`: well-formed unique key ids, exactly one active key whenever there is a
    /// key or a column, keys for the columns, columns named `schema.table`, none twice.
    fn encryption_contradictions(&mut self, config: &Config) {
        let e = &config.encryption;
        let key_at = |i: usize, key: &str| at_index("encryption.keys", i, key);
        let mut active: Option<usize> = None;
        for (i, key) in e.keys.iter().enumerate() {
            if !valid_key_id(&key.id) {
                let message = format!(
                    "encryption.keys.id {:?} must be 1 to {MAX_KEY_ID_LEN} of A-Z a-z 0-9 _ - \
                     (it is written into every encrypted value)",
                    key.id
                );
                self.at_value(&key_at(i, "id"), message);
            } else if let Some(first) = e.keys[..i].iter().position(|o| o.id == key.id) {
                let message = format!(
                    "encryption key id {:?} is used twice (first at line {})",
                    key.id,
                    self.line(&key_at(first, "id"))
                );
                self.at_value(&key_at(i, "id"), message);
            }
            if let Err(problem) = KeySource::parse(&key.material) {
                let message = format!("encryption.keys.material {problem}");
                self.at_value(&key_at(i, "material"), message);
            }
            if !key.active {
                continue;
            }
            let Some(first) = active else {
                active = Some(i);
                continue;
            };
            let message = format!(
                "encryption key {:?} is active but {:?} (line {}) is already; exactly one key may be",
                key.id,
                e.keys[first].id,
                self.line(&key_at(first, "active"))
            );
            self.at_value(&key_at(i, "active"), message);
        }
        let active_known = (0..e.keys.len()).all(|i| !self.broken(&key_at(i, "active")));
        if e.keys.is_empty() && !e.columns.is_empty() && !self.broken("encryption.keys") {
            let message = "[[encryption.columns]] are configured but there is no \
                 [[encryption.keys]] entry to encrypt them with (make a key with `pgward keygen`)";
            self.at_key("encryption.columns", message.to_owned());
        } else if !e.keys.is_empty() && active.is_none() && active_known {
            let message = "no [[encryption.keys]] entry has active = true; exactly one must \
                 (new values are encrypted under it)";
            self.at_key("encryption.keys", message.to_owned());
        }

        let mut seen: Vec<((String, String, String), usize)> = Vec::new();
        for (i, c) in e.columns.iter().enumerate() {
            let at = |key: &str| at_index("encryption.columns", i, key);
            let table = schema_table(&c.table).map_err(|problem| {
                self.at_value(&at("table"), format!("encryption.columns.{problem}"));
            });
            let column = identifier(&c.column).map_err(|problem| {
                let message = format!("encryption.columns.column {:?}: {problem}", c.column);
                self.at_value(&at("column"), message);
            });
            let (Ok((schema, table)), Ok(column)) = (table, column) else {
                continue;
            };
            let names = (schema, table, column);
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == names) {
                let (schema, table, column) = &names;
                let message = format!(
                    "encrypted column {schema}.{table}.{column} is listed twice (first at line {})",
                    self.line(&at_index("encryption.columns", *first, "column"))
                );
                self.at_value(&at("column"), message);
            }
            seen.push((names, i));
        }
    }

    /// Files the config names: they must be readable and of the right kind.
    fn files(&mut self, config: &Config) {
        if let Some(cert) = &config.server.tls_cert {
            if let Err(e) = pem_certificates(cert) {
                let message = format!("server.tls_cert {:?}: {e}", cert.display().to_string());
                self.at_value("server.tls_cert", message);
            }
        }
        if let Some(key) = &config.server.tls_key {
            if let Err(e) = pem_private_key(key) {
                let message = format!("server.tls_key {:?}: {e}", key.display().to_string());
                self.at_value("server.tls_key", message);
            }
        }
        for (i, b) in config.backends.iter().enumerate() {
            if let Some(ca) = &b.tls_ca {
                if let Err(e) = pem_certificates(ca) {
                    let message = format!("backends.tls_ca {:?}: {e}", ca.display().to_string());
                    self.at_value(&at_index("backends", i, "tls_ca"), message);
                }
            }
        }
        if config.policy.enabled {
            for (key, file) in [
                ("policy.model", &config.policy.model),
                ("policy.policy", &config.policy.policy),
            ] {
                if let Err(e) = std::fs::read_to_string(file) {
                    let message = format!("{key} {:?}: {e}", file.display().to_string());
                    self.at_value(key, message);
                }
            }
        }
        self.key_material(config);
    }

    /// `[[encryption.keys]] material`: `env:NAME` must be set, `file:PATH` readable, and
    /// either must hold base64 of 32 bytes. What it holds never goes into a message.
    fn key_material(&mut self, config: &Config) {
        for (i, key) in config.encryption.keys.iter().enumerate() {
            let path = at_index("encryption.keys", i, "material");
            // A reference that is neither env: nor file: was reported with the contradictions.
            if self.broken(&path) || KeySource::parse(&key.material).is_err() {
                continue;
            }
            if let Err(e) = crate::crypto::load_key(&key.material, config.base_dir()) {
                let separator = if e.names_file() { " " } else { ": " };
                self.at_value(&path, format!("encryption.keys.material{separator}{e}"));
            }
        }
    }
}

fn at_index(array: &str, index: usize, key: &str) -> String {
    child(&child(array, index), key)
}

/// Would binding both addresses clash?
fn same_listener(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Is `host:port` the address pgward itself listens on?
fn is_listener(host: &str, port: u16, listen: SocketAddr) -> bool {
    if port != listen.port() {
        return false;
    }
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) if host.eq_ignore_ascii_case("localhost") => IpAddr::from([127, 0, 0, 1]),
        Err(_) => return false,
    };
    ip == listen.ip() || (listen.ip().is_unspecified() && ip.is_loopback())
}

fn pem_certificates(path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(())
}

fn pem_private_key(path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    match rustls_pemfile::private_key(&mut data.as_slice()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("no PEM private key in it".into()),
        Err(e) => Err(format!("not PEM: {e}")),
    }
}

/// Spaces over `range`, newlines kept, so every other position stays where it was.
fn blank(text: &mut String, range: Range<usize>) {
    let blanked: String = text[range.clone()]
        .bytes()
        .map(|b| if b == b'\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(range, &blanked);
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The words serde quotes in backticks: the offending name first, then the expected ones.
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// `backends.1.role` as people say it: `backends.role`.
fn key_name(path: &str) -> String {
    path.split('.')
        .filter(|s| s.parse::<usize>().is_err())
        .collect::<Vec<_>>()
        .join(".")
}

/// `in [pool]`, `in [[backends]]`, `at the top level`.
fn table_name(path: &str) -> String {
    if path.is_empty() {
        return "at the top level".into();
    }
    let name = key_name(path);
    if path
        .rsplit('.')
        .next()
        .is_some_and(|s| s.parse::<usize>().is_ok())
    {
        format!("in [[{name}]]")
    } else {
        format!("in [{name}]")
    }
}

/// serde's message about the entry at `path`, reworded to name the key and what it takes.
fn describe(message: &str, path: &str) -> String {
    let quoted = |words: &[&str]| {
        words
            .iter()
            .map(|w| format!("{w:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let words = backticked(message);
    if let (true, Some((name, expected))) =
        (message.starts_with("unknown field"), words.split_first())
    {
        let table = table_name(parent(path));
        return match closest(name, expected) {
            Some(near) => format!("unknown key {name:?} {table}; did you mean {near:?}?"),
            None if expected.is_empty() => format!("unknown key {name:?} {table}"),
            None => format!(
                "unknown key {name:?} {table}; valid keys: {}",
                expected.join(", ")
            ),
        };
    }
    if let (true, Some((value, expected))) =
        (message.starts_with("unknown variant"), words.split_first())
    {
        let mut text = format!(
            "{} = {value:?} is not one of {}",
            key_name(path),
            quoted(expected)
        );
        if let Some(near) = closest(value, expected) {
            text.push_str(&format!("; did you mean {near:?}?"));
        }
        return text;
    }
    if let (true, Some(name)) = (message.starts_with("missing field"), words.first()) {
        return format!("missing key {name:?} {}", table_name(path));
    }
    let message = match message {
        "wanted string or table" => "expected a string",
        other => other,
    };
    match path {
        "" => one_line(message),
        _ => format!("{}: {}", key_name(path), one_line(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
[[users]]
name = \"app\"
password = \"secret\"

[[backends]]
name = \"pg1\"
port = 5432
";

    fn problems(text: &str) -> Vec<String> {
        read(text, Path::new("t.toml")).lines().collect()
    }

    #[test]
    fn a_good_file_has_no_problems() {
        let report = read(BASE, Path::new("t.toml"));
        assert_eq!(report.problems, []);
        assert!(report.config.is_some());
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let found = problems("[server]\nlisten = \"x\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("t.toml:2:"), "{found:?}");
        assert!(!found[0].contains('\n'));
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        let found = problems(&format!("{BASE}\n[pool]\nmode_x = \"session\"\n"));
        assert_eq!(
            found,
            ["t.toml:10:1: unknown key \"mode_x\" in [pool]; did you mean \"mode\"?"]
        );
        let found = problems(&format!("{BASE}\n[pool]\nflavour = 1\n"));
        assert!(found[0].contains("valid keys: mode, size"), "{found:?}");
        let found = problems(&format!("[servr]\nlisten = \"x\"\n{BASE}"));
        assert_eq!(
            found,
            ["t.toml:1:2: unknown key \"servr\" at the top level; did you mean \"server\"?"]
        );
        let found = problems(&format!("{BASE}hots = \"h\"\n"));
        assert_eq!(
            found,
            ["t.toml:8:1: unknown key \"hots\" in [[backends]]; did you mean \"host\"?"]
        );
    }

    #[test]
    fn bad_values_name_the_key_and_what_it_takes() {
        let found = problems(&format!("{BASE}\n[pool]\nmode = \"sesion\"\n"));
        assert_eq!(
            found,
            ["t.toml:10:8: pool.mode = \"sesion\" is not one of \"transaction\", \"session\"; did you mean \"session\"?"]
        );
        let found = problems(&format!(
            "{BASE}\n[pool]\ncheckout_timeout = \"5 parsecs\"\n"
        ));
        assert!(
            found[0].starts_with("t.toml:10:20: pool.checkout_timeout: invalid duration"),
            "{found:?}"
        );
        let found = problems(&format!("{BASE}\n[pool]\ncheckout_timeout = 5\n"));
        assert!(found[0].contains("a duration such as \"5s\""), "{found:?}");
        let found = problems(&format!(
            "{BASE}\n[routing]\nmax_replica_lag = \"16 MiBs\"\n"
        ));
        assert!(
            found[0].starts_with("t.toml:10:19: routing.max_replica_lag: invalid size unit"),
            "{found:?}"
        );
        let found = problems(&format!("[server]\nworker_threads = 40000\n{BASE}"));
        assert_eq!(
            found,
            ["t.toml:2:18: server.worker_threads 40000 is more than 1024; 0 is half the cores"]
        );
    }

    #[test]
    fn every_error_is_reported_and_defaults_cause_no_false_alarms() {
        let text = format!(
            "{BASE}role = \"mastr\"\n\n[[backends]]\nname = \"pg2\"\nrole = \"primary\"\n\n[pool]\nmode = \"x\"\nsize = 0\nsise = 3\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("t.toml:8:8: backends.role = \"mastr\""));
        assert!(found[1].starts_with("t.toml:15:8: pool.mode"));
        assert!(found[2].starts_with("t.toml:16:8: pool.size must be at least 1"));
        assert!(found[3].starts_with("t.toml:17:1: unknown key \"sise\""));
    }

    #[test]
    fn contradictions_point_at_the_second_occurrence() {
        let text =
            format!("{BASE}\n[[backends]]\nname = \"pg1\"\nport = 5433\nrole = \"primary\"\n");
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            found[0],
            "t.toml:10:8: backend name \"pg1\" is used twice (first at line 6)"
        );
        assert!(found[1].starts_with("t.toml:12:8: backend \"pg1\" has role = \"primary\""));
        let text = format!("{BASE}\n[[backends]]\nname = \"pg2\"\n");
        let found = problems(&text);
        assert!(
            found[0].starts_with("t.toml:9:1: backend \"pg2\" is a primary too"),
            "{found:?}"
        );
    }

    #[test]
    fn an_array_entry_missing_a_key_stops_the_reading() {
        let text = format!("{BASE}\n[[backends]]\nhost = \"h\"\n\n[[backends]]\nname = \"pg1\"\n");
        assert_eq!(
            problems(&text),
            ["t.toml:9:1: missing key \"name\" in [[backends]]"]
        );
        let text = "[[users]]\nname = 5\npassword = \"x\"\n";
        assert_eq!(
            problems(text),
            ["t.toml:2:8: users.name: invalid type: integer `5`, expected a string"]
        );
    }

    #[test]
    fn admin_users_must_exist_when_written() {
        let text = format!("[auth]\nadmin_users = [\"app\", \"root\"]\n{BASE}");
        assert_eq!(
            problems(&text),
            ["t.toml:2:23: auth.admin_users: \"root\" has no [[users]] entry"]
        );
    }

    #[test]
    fn cache_settings_are_typed_and_checked() {
        let report = read(BASE, Path::new("t.toml"));
        let cache = report.config.unwrap().cache;
        assert!(!cache.enabled);
        assert_eq!(cache.max_size, 256 << 20);
        assert_eq!(cache.ttl, std::time::Duration::from_secs(60));
        assert_eq!(cache.max_entry_size, 1 << 20);
        assert_eq!(cache.ack_timeout, std::time::Duration::from_millis(20));
        assert_eq!(cache.channel, "pgward_cache");
        assert!(!cache.system_catalogs);

        let text = format!(
            "{BASE}\n[cache]\nenabled = true\ntables = [\"public.*\", \"orders\"]\nexclude_tables = [\"public.[x\"]\nmax_entry_size = \"2GB\"\nttl = \"0s\"\nchanel = \"x\"\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(
            found[0].starts_with("t.toml:11:23: cache.tables: \"orders\" names no schema"),
            "{found:#?}"
        );
        assert!(found[1].starts_with(
            "t.toml:12:19: cache.exclude_tables: \"public.[x\" is not a valid glob pattern"
        ));
        assert!(found[2].starts_with("t.toml:13:18: cache.max_entry_size is larger"));
        assert_eq!(found[3], "t.toml:14:7: cache.ttl must be above zero");
        assert_eq!(
            found[4],
            "t.toml:15:1: unknown key \"chanel\" in [cache]; did you mean \"channel\"?"
        );
    }

    #[test]
    fn the_same_address_twice() {
        let base = BASE.replace("5432", "7000");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:7000\"\nadmin_listen = \"0.0.0.0:7000\"\n{base}"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("t.toml:3:16: server.admin_listen"));
        assert!(found[1].starts_with("t.toml:10:8: backend \"pg1\" is pgward's own"));
    }

    /// A folder with key files `good.key` (32 bytes), `short.key` (16) and `junk.key`.
    fn key_files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("good.key", "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n");
        write("short.key", "MDEyMzQ1Njc4OTAxMjM0NQ==\n");
        write("junk.key", "this is no key\n");
        dir
    }

    fn key(dir: &tempfile::TempDir, id: &str, file: &str, active: bool) -> String {
        let path = dir.path().join(file);
        format!(
            "\n[[encryption.keys]]\nid = \"{id}\"\nmaterial = \"file:{}\"\nactive = {active}\n",
            path.display()
        )
    }

    fn encrypted(table: &str, column: &str) -> String {
        format!("\n[[encryption.columns]]\ntable = \"{table}\"\ncolumn = \"{column}\"\n")
    }

    #[test]
    fn encryption_is_checked() {
        let dir = key_files();
        let good = key(&dir, "k1", "good.key", true);
        let ssn = encrypted("public.customers", "ssn");
        let report = read(&format!("{BASE}{good}{ssn}"), Path::new("t.toml"));
        assert_eq!(report.problems, []);
        let config = report.config.unwrap();
        assert_eq!(
            config.encryption.columns[0].mode,
            crate::crypto::Mode::Randomized
        );
        assert!(config.summary().ends_with(", 1 encrypted column"));

        // Lines 8 to 12 hold the first key, 13 to 17 the second; then the columns.
        let found = problems(&format!(
            "{BASE}{}{}",
            key(&dir, "k1", "short.key", true),
            key(&dir, "k2", "junk.key", false)
        ));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("t.toml:11:12: encryption.keys.material \""),
            "{found:?}"
        );
        assert!(
            found[0]
                .ends_with("short.key\" holds 16 bytes, not 32 (make a key with `pgward keygen`)"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("t.toml:16:12: encryption.keys.material \""),
            "{found:?}"
        );
        assert!(
            found[1].ends_with("junk.key\" does not hold base64 (make a key with `pgward keygen`)"),
            "{found:?}"
        );
        assert!(!found.iter().any(|f| f.contains("this is")));

        let found = problems(&format!(
            "{BASE}{}{}",
            key(&dir, "k1", "good.key", false),
            key(&dir, "k2", "good.key", false)
        ));
        assert_eq!(found, ["t.toml:9:1: no [[encryption.keys]] entry has active = true; exactly one must (new values are encrypted under it)"]);

        let found = problems(&format!(
            "{BASE}{good}{}",
            key(&dir, "k2", "good.key", true)
        ));
        assert_eq!(found, ["t.toml:17:10: encryption key \"k2\" is active but \"k1\" (line 12) is already; exactly one key may be"]);

        let found = problems(&format!(
            "{BASE}{good}{}",
            key(&dir, "k1", "good.key", false)
        ));
        assert_eq!(
            found,
            ["t.toml:15:6: encryption key id \"k1\" is used twice (first at line 10)"]
        );

        let found = problems(&format!("{BASE}{}", key(&dir, "k:1", "good.key", true)));
        assert!(
            found[0].starts_with("t.toml:10:6: encryption.keys.id \"k:1\" must be 1 to 32 of"),
            "{found:?}"
        );

        let text = format!("{BASE}\n[[encryption.keys]]\nid = \"k1\"\nmaterial = \"MDEyMzQ1Njc4OTAx\"\nactive = true\n");
        let found = problems(&text);
        assert_eq!(found, ["t.toml:11:12: encryption.keys.material must be env:NAME or file:PATH (the key itself does not go in the config)"]);
        assert!(!found[0].contains("MDEy"));

        let found = problems(&format!("{BASE}{ssn}"));
        assert_eq!(found, ["t.toml:9:1: [[encryption.columns]] are configured but there is no [[encryption.keys]] entry to encrypt them with (make a key with `pgward keygen`)"]);

        let text = format!(
            "{BASE}{good}{ssn}{}{}",
            encrypted("Public.Customers", "SSN"),
            encrypted("customers", "email")
        );
        let found = problems(&text);
        assert_eq!(found, [
            "t.toml:20:10: encrypted column public.customers.ssn is listed twice (first at line 16)",
            "t.toml:23:9: encryption.columns.table \"customers\" must be schema.table (like \"public.customers\"), not 1 part",
        ]);

        let text = format!("{BASE}{good}{ssn}mode = \"deterministc\"\n");
        let found = problems(&text);
        assert_eq!(found, ["t.toml:17:8: encryption.columns.mode = \"deterministc\" is not one of \"randomized\", \"deterministic\"; did you mean \"deterministic\"?"]);

        let text = format!("{BASE}\n[encryption]\nwithout_decrypt = \"zero\"\n");
        let found = problems(&text);
        assert!(found[0].starts_with("t.toml:10:19: encryption.without_decrypt = \"zero\" is not one of \"null\", \"ciphertext\", \"deny\""), "{found:?}");
    }

    #[test]
    fn a_missing_environment_variable_is_named() {
        let text = format!(
            "{BASE}\n[[encryption.keys]]\nid = \"k1\"\nmaterial = \"env:PGWARD_TEST_NEVER_SET_ANYWHERE\"\nactive = true\n"
        );
        assert_eq!(
            problems(&text),
            ["t.toml:11:12: encryption.keys.material: environment variable \"PGWARD_TEST_NEVER_SET_ANYWHERE\" is not set"]
        );
    }
}
