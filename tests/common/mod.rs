//! Shared harness for the integration tests: one throwaway PostgreSQL cluster per test binary,
//! the real pgward binary in front of it, and real clients (tokio-postgres, psql, pgbench).
//!
//! Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use pgward::cluster::{pg_bin_dir, Cluster, ClusterOptions};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The login every test uses unless it says otherwise (created by the cluster module).
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";
pub const DATABASE: &str = "appdb";

/// How long pgward gets to accept TCP connections after it is spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The cluster of this test binary. `Err` keeps the reason it could not start, so every test
/// fails with it instead of each one trying again. The `Option` lets the exit handler take it.
static CLUSTER: OnceLock<Result<Mutex<Option<Cluster>>, String>> = OnceLock::new();
static PRIMARY_PORT: OnceLock<u16> = OnceLock::new();

fn shared_cluster() -> &'static Mutex<Option<Cluster>> {
    let cluster = CLUSTER.get_or_init(|| {
        // pg_stat_statements counts what reaches the server (the result cache's tests).
        let mut options = ClusterOptions::default();
        options.settings.push((
            "shared_preload_libraries".into(),
            "pg_stat_statements".into(),
        ));
        let cluster = Cluster::start(&options).map_err(|e| e.to_string())?;
        let _ = PRIMARY_PORT.set(cluster.primary.port);
        // Statics are never dropped; stop PostgreSQL when the test binary exits.
        // SAFETY: registering a plain extern "C" function with no arguments.
        unsafe { libc::atexit(stop_shared_cluster) };
        Ok(Mutex::new(Some(cluster)))
    });
    match cluster {
        Ok(cluster) => cluster,
        Err(reason) => panic!("cannot start PostgreSQL for the tests: {reason}"),
    }
}

extern "C" fn stop_shared_cluster() {
    if let Some(Ok(cluster)) = CLUSTER.get() {
        let taken = cluster.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(taken);
    }
}

/// Port of the shared cluster's primary (starting the cluster on first use).
pub fn primary_port() -> u16 {
    shared_cluster();
    *PRIMARY_PORT.get().expect("set when the cluster started")
}

/// Runs SQL directly on the shared cluster as superuser `postgres` (not through pgward),
/// e.g. to prepare or inspect what a test did. Returns psql's unaligned output.
pub fn admin_psql(db: &str, sql: &str) -> String {
    let guard = shared_cluster().lock().unwrap_or_else(|p| p.into_inner());
    let cluster = guard.as_ref().expect("cluster already stopped");
    cluster
        .psql(cluster.primary.port, db, sql)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A tokio-postgres connection straight to PostgreSQL as `postgres`, to watch what the
/// backends do (pg_stat_activity) while a test talks through pgward.
pub async fn direct_postgres() -> Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(primary_port())
        .user("postgres")
        .dbname(DATABASE)
        .connect_timeout(Duration::from_secs(10));
    connect_with(&config)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL directly: {e}"))
}

/// A port nobody listens on right now, and not handed out before in this test process: the
/// kernel may give a port just released again, and one pgward's listen and admin ports
/// came out the same that way.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(port) {
            return port;
        }
    }
}

/// A `[[users]]` entry of the pgward config.
#[derive(Debug, Clone)]
pub struct ProxyUser {
    pub name: String,
    pub password: String,
    pub backend_user: Option<String>,
    pub backend_password: Option<String>,
}

impl ProxyUser {
    pub fn new(name: &str, password: &str) -> ProxyUser {
        ProxyUser {
            name: name.into(),
            password: password.into(),
            backend_user: None,
            backend_password: None,
        }
    }

    /// Logs in to PostgreSQL as `user` (with `password`, if any) instead of its own name.
    pub fn backend(mut self, user: &str, password: Option<&str>) -> ProxyUser {
        self.backend_user = Some(user.into());
        self.backend_password = password.map(Into::into);
        self
    }
}

/// A pgward config for the shared cluster, in the DESIGN.md format. Build, adjust, `start()`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen_port: u16,
    pub auth_method: String,
    pub pool_mode: String,
    pub pool_size: usize,
    pub checkout_timeout: String,
    /// (cert path, key path, tls_mode)
    pub tls: Option<(PathBuf, PathBuf, String)>,
    pub users: Vec<ProxyUser>,
    /// Port of the admin HTTP endpoint (`server.admin_listen`), when wanted.
    pub admin_port: Option<u16>,
    /// Raw `[[backends]]` TOML in place of the shared cluster's primary, for tests that run
    /// clusters of their own.
    pub backends: Option<String>,
    /// Raw TOML appended at the end, for settings no helper covers.
    pub extra: String,
    /// Raw lines added to `[server]`, such as `worker_threads = 1`.
    pub server_extra: String,
    /// Environment variables for the pgward process (e.g. RUST_LOG, key material).
    pub env: Vec<(String, String)>,
}

impl ProxyConfig {
    /// SCRAM client auth, user `app`/`app-secret` mapped to the same backend login, a free
    /// listen port, checkout timeout 5s.
    pub fn new(pool_mode: &str, pool_size: usize) -> ProxyConfig {
        ProxyConfig {
            listen_port: free_port(),
            auth_method: "scram-sha-256".into(),
            pool_mode: pool_mode.into(),
            pool_size,
            checkout_timeout: "5s".into(),
            tls: None,
            users: vec![ProxyUser::new(USER, PASSWORD).backend(USER, Some(PASSWORD))],
            admin_port: None,
            backends: None,
            extra: String::new(),
            server_extra: String::new(),
            env: Vec::new(),
        }
    }

    pub fn transaction(pool_size: usize) -> ProxyConfig {
        ProxyConfig::new("transaction", pool_size)
    }

    pub fn session(pool_size: usize) -> ProxyConfig {
        ProxyConfig::new("session", pool_size)
    }

    pub fn checkout_timeout(mut self, timeout: &str) -> ProxyConfig {
        self.checkout_timeout = timeout.into();
        self
    }

    pub fn auth(mut self, method: &str) -> ProxyConfig {
        self.auth_method = method.into();
        self
    }

    pub fn tls(mut self, cert: &Path, key: &Path, mode: &str) -> ProxyConfig {
        self.tls = Some((cert.into(), key.into(), mode.into()));
        self
    }

    /// Serves the admin endpoint on a free port (`admin_port`).
    pub fn admin(mut self) -> ProxyConfig {
        self.admin_port = Some(free_port());
        self
    }

    pub fn backends(mut self, backends: String) -> ProxyConfig {
        self.backends = Some(backends);
        self
    }

    /// Lines added to `[server]`.
    pub fn server(mut self, toml: &str) -> ProxyConfig {
        self.server_extra.push_str(toml);
        self
    }

    pub fn extra(mut self, toml: &str) -> ProxyConfig {
        self.extra.push_str(toml);
        self
    }

    /// Sets an environment variable of the pgward process (`RUST_LOG` overrides "info").
    pub fn env(mut self, name: &str, value: &str) -> ProxyConfig {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn user(mut self, user: ProxyUser) -> ProxyConfig {
        self.users.push(user);
        self
    }

    pub fn toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.into()).to_string();
        let p = |p: &Path| q(&p.to_string_lossy());
        let mut t = String::new();
        let _ = writeln!(
            t,
            "[server]\nlisten = {}",
            q(&format!("127.0.0.1:{}", self.listen_port))
        );
        t.push_str(&self.server_extra);
        if let Some(port) = self.admin_port {
            let _ = writeln!(t, "admin_listen = {}", q(&format!("127.0.0.1:{port}")));
        }
        if let Some((cert, key, mode)) = &self.tls {
            let _ = writeln!(
                t,
                "tls_cert = {}\ntls_key = {}\ntls_mode = {}",
                p(cert),
                p(key),
                q(mode)
            );
        }
        let _ = writeln!(t, "\n[auth]\nmethod = {}", q(&self.auth_method));
        for user in &self.users {
            let _ = writeln!(
                t,
                "\n[[users]]\nname = {}\npassword = {}",
                q(&user.name),
                q(&user.password)
            );
            if let Some(backend_user) = &user.backend_user {
                let _ = writeln!(t, "backend_user = {}", q(backend_user));
            }
            if let Some(backend_password) = &user.backend_password {
                let _ = writeln!(t, "backend_password = {}", q(backend_password));
            }
        }
        let _ = writeln!(
            t,
            "\n[pool]\nmode = {}\nsize = {}\ncheckout_timeout = {}",
            q(&self.pool_mode),
            self.pool_size,
            q(&self.checkout_timeout)
        );
        match &self.backends {
            Some(backends) => t.push_str(backends),
            None => {
                let _ = writeln!(
                    t,
                    "\n[[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"",
                    primary_port()
                );
            }
        }
        t.push_str(&self.extra);
        t
    }

    pub fn start(&self) -> Pgward {
        Pgward::start_with_env(&self.toml(), &self.env)
    }
}

/// The config string for the shared cluster with a free listen port, the given pool mode
/// and size, and the `app` user.
pub fn config_toml(pool_mode: &str, pool_size: usize) -> String {
    ProxyConfig::new(pool_mode, pool_size).toml()
}

/// A running pgward process. Killed (SIGKILL) on drop; its log is printed when the test that
/// owns it panics.
pub struct Pgward {
    child: Child,
    pub addr: SocketAddr,
    pub port: u16,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Pgward {
    /// Writes `config_toml` to a temp file, runs `pgward --config <file>` and waits until
    /// `[server] listen` accepts TCP. Call it from the test's own thread: pgward is killed
    /// when the thread that spawned it exits (so a crashed test binary leaves nothing behind).
    pub fn start(config_toml: &str) -> Pgward {
        Pgward::start_with_env(config_toml, &[])
    }

    /// `start` with extra environment variables for the pgward process.
    pub fn start_with_env(config_toml: &str, env: &[(String, String)]) -> Pgward {
        let config: toml::Table = config_toml
            .parse()
            .unwrap_or_else(|e| panic!("test config is not TOML: {e}\n{config_toml}"));
        let addr: SocketAddr = config
            .get("server")
            .and_then(|s| s.get("listen"))
            .and_then(|l| l.as_str())
            .expect("the test config must set [server] listen")
            .parse()
            .expect("[server] listen must be ip:port");

        let dir = tempfile::Builder::new()
            .prefix("pgward-test-")
            .tempdir()
            .expect("creating a temp dir");
        let config_path = dir.path().join("pgward.toml");
        fs::write(&config_path, config_toml).expect("writing the config");
        let log_path = dir.path().join("pgward.log");
        let log = File::create(&log_path).expect("creating the log file");

        let mut command = Command::new(env!("CARGO_BIN_EXE_pgward"));
        command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env_remove("PGWARD_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("spawning the pgward binary");
        let mut pgward = Pgward {
            child,
            addr,
            port: addr.port(),
            log_path,
            dir,
        };
        pgward.wait_until_listening();
        pgward
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "pgward exited ({status}) before accepting connections on {}; log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "pgward did not accept connections on {} within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Everything pgward printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Replaces the config file and sends SIGHUP; waits until pgward logs the reload.
    pub fn reload(&self, config_toml: &str) {
        fs::write(self.dir.path().join("pgward.toml"), config_toml).expect("writing the config");
        self.sighup_until("configuration reloaded");
    }

    /// Replaces the config file without telling pgward (for the console's RELOAD).
    pub fn write_config(&self, config_toml: &str) {
        fs::write(self.dir.path().join("pgward.toml"), config_toml).expect("writing the config");
    }

    /// Sends SIGHUP and waits until pgward logs `outcome` once more than before.
    pub fn sighup_until(&self, outcome: &str) {
        let before = self.log().matches(outcome).count();
        // SAFETY: plain kill(2) to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(outcome).count() == before {
            assert!(
                Instant::now() < deadline,
                "pgward did not reload; log:\n{}",
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Waits up to `timeout` for pgward to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Scratch space that lives as long as this pgward (for files psql reads or writes).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connection settings for a client of this pgward (database `appdb`).
    pub fn client_config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(DATABASE)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A tokio-postgres client logged in as `app`; panics with pgward's log if that fails.
    pub async fn connect(&self) -> Client {
        self.connect_as(USER, PASSWORD).await
    }

    pub async fn connect_as(&self, user: &str, password: &str) -> Client {
        match self.try_connect_as(user, password).await {
            Ok(client) => client,
            Err(e) => panic!(
                "connecting through pgward as {user}: {e} (SQLSTATE {:?}); pgward log:\n{}",
                e.code().map(|c| c.code()),
                self.log_tail(60)
            ),
        }
    }

    pub async fn try_connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        connect_with(&self.client_config(user, password)).await
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Pgward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- pgward log ({}), last 150 lines ----\n{}",
                self.addr,
                self.log_tail(150)
            );
        }
    }
}

/// Connects without TLS and drives the connection on a background task.
pub async fn connect_with(
    config: &tokio_postgres::Config,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("client connection ended with an error: {e}");
        }
    });
    Ok(client)
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Write as _;
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to the admin endpoint on {port}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("sending the request");
    let mut response = String::new();
    tcp.read_to_string(&mut response)
        .expect("reading the response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of a Prometheus sample (`name{labels}` exactly as exported, or a bare name) in a
/// /metrics body; 0 when absent.
pub fn metric(body: &str, sample: &str) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Fails the test instead of hanging it when the proxy stops answering.
pub async fn deadline<F: Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(output) => output,
        Err(_) => panic!("the test did not finish within {limit:?}: something hangs"),
    }
}

/// The SQLSTATE of a failed query, e.g. "22012".
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|c| c.code())
}

/// The rows of a simple-query response, every value as text.
pub fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// One value from a one-row simple query.
pub async fn simple_value(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = simple_rows(&messages);
    assert_eq!(rows.len(), 1, "{sql} must return one row, got {rows:?}");
    rows[0][0]
        .clone()
        .unwrap_or_else(|| panic!("{sql} returned NULL"))
}

/// `SHOW <setting>` as the client sees it.
pub async fn show(client: &Client, setting: &str) -> String {
    simple_value(client, &format!("SHOW {setting}")).await
}

/// A client program (psql, pgbench) from the PostgreSQL bin dir, else from PATH.
pub fn pg_program(name: &str) -> PathBuf {
    if let Ok(dir) = pg_bin_dir() {
        let path = dir.join(name);
        if path.is_file() {
            return path;
        }
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{name} not found; install it with: apt-get install postgresql-client-15")
        })
}

/// A client program with no PG* variables inherited from the environment, connecting as
/// `app` through `pgward` with PGPASSWORD.
pub fn pg_client(program: &str, pgward: &Pgward) -> Command {
    let mut command = Command::new(pg_program(program));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pgward.port.to_string())
        .env("PGUSER", USER)
        .env("PGPASSWORD", PASSWORD)
        .env("PGDATABASE", DATABASE)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("LC_ALL", "C");
    command
}

/// psql through `pgward`: `-X -At -v ON_ERROR_STOP=1`.
pub fn psql(pgward: &Pgward) -> Command {
    let mut command = pg_client("psql", pgward);
    command.args(["-X", "-At", "-v", "ON_ERROR_STOP=1"]);
    command
}

/// What a finished program printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics with the output unless the program exited 0.
    pub fn expect_success(self, what: &str) -> Finished {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs a program to completion; kills it and panics if it outlives `timeout`.
pub fn run_program(command: &mut Command, timeout: Duration) -> Finished {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {shown}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shown} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Connection string (libpq key=value) for `app` through `pgward`, as the Python scripts in
/// tests/py take it.
pub fn pgward_dsn(pgward: &Pgward) -> String {
    format!(
        "host=127.0.0.1 port={} dbname={DATABASE} user={USER} password={PASSWORD}",
        pgward.port
    )
}

/// Connection string (libpq key=value) for `app` straight to the shared cluster's primary.
pub fn direct_dsn() -> String {
    format!(
        "host=127.0.0.1 port={} dbname={DATABASE} user={USER} password={PASSWORD}",
        primary_port()
    )
}

/// What the Python scripts are written against: psycopg 3 and asyncpg, from PyPI.
const PYTHON_REQUIREMENTS: &[&str] = &["psycopg[binary]==3.2.*", "asyncpg==0.30.*"];

/// A python3 interpreter with psycopg 3 (binary) and asyncpg installed: a venv made once, from
/// PyPI, at `$CARGO_TARGET_TMPDIR/python-venv` and shared by every test binary (see
/// `installed_once`). Panics, naming the packages to install, when python3 or its venv module
/// is missing.
pub fn python_with_psycopg() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = installed_once(
                "python-venv",
                |venv| {
                    quietly_succeeds(
                        Command::new(venv.join("bin").join("python"))
                            .args(["-c", "import psycopg, asyncpg"]),
                    )
                },
                build_python_venv,
            );
            venv.join("bin").join("python")
        })
        .clone()
}

fn build_python_venv(partial: &Path) -> Result<(), String> {
    let system_python = on_path("python3").ok_or(
        "python3 not found on PATH; the Python driver tests need it: \
         apt-get install python3 python3-venv",
    )?;
    let created = run_program(
        Command::new(&system_python)
            .arg("-m")
            .arg("venv")
            .arg(partial),
        Duration::from_secs(300),
    );
    if !created.status.success() {
        return Err(format!(
            "`{} -m venv` failed; the Python driver tests need the venv module with ensurepip: \
             apt-get install python3-venv\nstdout:\n{}\nstderr:\n{}",
            system_python.display(),
            created.stdout,
            created.stderr
        ));
    }
    install(
        &format!("pip could not install {PYTHON_REQUIREMENTS:?} from PyPI"),
        Command::new(partial.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_REQUIREMENTS),
    )
}

/// What the JavaScript scripts are written against: node-postgres with its cursor and COPY
/// companions, from npm.
const NODE_REQUIREMENTS: &[&str] = &["pg@8", "pg-cursor@2", "pg-copy-streams@7"];

/// A folder whose `node_modules` holds node-postgres: installed once, from npm, at
/// `$CARGO_TARGET_TMPDIR/node-pg` (see `installed_once`). Panics, naming the packages to
/// install, when node or npm is missing.
pub fn node_with_pg() -> PathBuf {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        installed_once(
            "node-pg",
            |dir| {
                quietly_succeeds(
                    Command::new("node")
                        .args(["-e", "require('pg'); require('pg-cursor'); require('pg-copy-streams')"])
                        .current_dir(dir),
                )
            },
            |partial| {
                on_path("node")
                    .and(on_path("npm"))
                    .ok_or("node and npm not found on PATH; the node-postgres tests need them: apt-get install nodejs npm")?;
                fs::write(partial.join("package.json"), "{\"private\": true}\n")
                    .map_err(|e| format!("writing package.json: {e}"))?;
                install(
                    &format!("npm could not install {NODE_REQUIREMENTS:?}"),
                    Command::new("npm")
                        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                        .args(NODE_REQUIREMENTS)
                        .current_dir(partial),
                )
            },
        )
    })
    .clone()
}

/// Debian's pgJDBC (`libpostgresql-jdbc-java`), or the jar `PGWARD_PGJDBC_JAR` names.
pub fn pgjdbc_jar() -> PathBuf {
    let jar = std::env::var_os("PGWARD_PGJDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"));
    assert!(
        jar.is_file(),
        "{} not found; the pgJDBC tests need it: apt-get install libpostgresql-jdbc-java \
         (or set PGWARD_PGJDBC_JAR)",
        jar.display()
    );
    jar
}

/// The compiled classes of tests/java, built once per test binary with javac against
/// `pgjdbc_jar()`. Panics, naming the packages to install, when javac is missing.
pub fn java_classes() -> PathBuf {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            on_path("javac").unwrap_or_else(|| {
                panic!("javac not found on PATH; the pgJDBC tests need it: apt-get install default-jdk-headless")
            });
            let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("java-classes-{}", std::process::id()));
            let sources: Vec<PathBuf> = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("java"))
                .expect("tests/java")
                .map(|e| e.expect("tests/java entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "java"))
                .collect();
            run_program(
                Command::new("javac")
                    .arg("-cp")
                    .arg(pgjdbc_jar())
                    .arg("-d")
                    .arg(&out)
                    .args(&sources),
                Duration::from_secs(300),
            )
            .expect_success("javac tests/java");
            out
        })
        .clone()
}

/// Runs an installer (up to 10 minutes); its output, after `failure`, when it fails.
fn install(failure: &str, command: &mut Command) -> Result<(), String> {
    let done = run_program(command, Duration::from_secs(600));
    if done.status.success() {
        return Ok(());
    }
    Err(format!(
        "{failure} ({}):\nstdout:\n{}\nstderr:\n{}",
        done.status, done.stdout, done.stderr
    ))
}

/// Whether `command` runs and exits 0, its output discarded.
fn quietly_succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `$CARGO_TARGET_TMPDIR/<name>`, made once by `build` and shared by every test binary. It is
/// built in a folder of its own and renamed into place when complete, so concurrent binaries
/// never see half of it (the loser of the race throws its copy away); one that exists but
/// fails `works` is broken (left by an older toolchain, say) and is made again. Panics with
/// `build`'s error.
fn installed_once(
    name: &str,
    works: impl Fn(&Path) -> bool,
    build: impl FnOnce(&Path) -> Result<(), String>,
) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let done = root.join(name);
    if works(&done) {
        return done;
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    if done.exists() {
        // Set it aside, whoever gets there first.
        let aside = root.join(format!("{name}.broken-{unique}"));
        if fs::rename(&done, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }
    let partial = root.join(format!("{name}.partial-{unique}"));
    fs::create_dir_all(&partial).expect("creating CARGO_TARGET_TMPDIR");
    if let Err(why) = build(&partial) {
        let _ = fs::remove_dir_all(&partial);
        panic!("{why}");
    }
    // Atomic: either this copy becomes the real one, or another binary's already did.
    if fs::rename(&partial, &done).is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    assert!(
        works(&done),
        "{} does not work right after it was made",
        done.display()
    );
    done
}

/// A script of tests/py by file name.
pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("py")
        .join(name)
}

/// Runs a Python script with the psycopg venv's interpreter (no PG* variables inherited, so
/// libpq uses only the DSN it is given); kills it and panics if it outlives `timeout`.
pub fn run_python(script: &Path, args: &[&str], timeout: Duration) -> Finished {
    let mut command = Command::new(python_with_psycopg());
    without_pg_env(&mut command)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("LC_ALL", "C.UTF-8")
        .arg(script)
        .args(args);
    run_program(&mut command, timeout)
}

/// Connects a client whose notifications are collected as they arrive, while it is busy or
/// idle: driving the connection through `poll_message` surfaces asynchronous messages.
pub async fn connect_with_notifications(
    config: &tokio_postgres::Config,
) -> Result<
    (
        Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    tokio_postgres::Error,
> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("listener connection failed: {e}");
                    break;
                }
            }
        }
    });
    Ok((client, rx))
}

/// Runs a script of tests/js with node, node-postgres on its module path; kills it and
/// panics if it outlives `timeout`.
pub fn run_node(script: &str, args: &[&str], timeout: Duration) -> Finished {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
        .join(script);
    let mut command = Command::new("node");
    without_pg_env(&mut command)
        .env("NODE_PATH", node_with_pg().join("node_modules"))
        .arg(script)
        .args(args);
    run_program(&mut command, timeout)
}

/// Runs class `main` of tests/java with pgJDBC on the class path; kills it and panics if it
/// outlives `timeout`.
pub fn run_java(main: &str, args: &[&str], timeout: Duration) -> Finished {
    let class_path = std::env::join_paths([java_classes(), pgjdbc_jar()]).expect("class path");
    let mut command = Command::new("java");
    without_pg_env(&mut command)
        .arg("-cp")
        .arg(class_path)
        .arg(main)
        .args(args);
    run_program(&mut command, timeout)
}

/// Where Debian's Go packages keep their sources (`golang-github-jackc-pgx-v4-dev` and what
/// it depends on): the pgx application builds in GOPATH mode against them, offline.
const GO_PATH: &str = "/usr/share/gocode";

/// The pgx application of tests/go, built once per test binary. Panics, naming the packages
/// to install, when Go or pgx is missing.
pub fn go_app() -> PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        const INSTALL: &str = "apt-get install golang-go golang-github-jackc-pgx-v4-dev";
        on_path("go")
            .unwrap_or_else(|| panic!("go not found on PATH; the pgx tests need it: {INSTALL}"));
        let pgx = Path::new(GO_PATH).join("src/github.com/jackc/pgx/v4/pgxpool");
        assert!(
            pgx.is_dir(),
            "{} not found; the pgx tests need it: {INSTALL}",
            pgx.display()
        );
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = tmp.join(format!("pgx-app-{}", std::process::id()));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/pgx_app.go");
        run_program(
            Command::new("go")
                .env("GO111MODULE", "off")
                .env("GOPATH", GO_PATH)
                .env("GOCACHE", tmp.join("go-cache"))
                .env("GOFLAGS", "")
                .arg("build")
                .arg("-o")
                .arg(&out)
                .arg(&source),
            Duration::from_secs(300),
        )
        .expect_success("go build tests/go/pgx_app.go");
        out
    })
    .clone()
}

/// Runs the pgx application with `args`.
pub fn run_go(args: &[&str], timeout: Duration) -> Finished {
    let mut command = Command::new(go_app());
    without_pg_env(&mut command).args(args);
    run_program(&mut command, timeout)
}

/// No PG* variables inherited: a driver uses only the connection string it is given.
fn without_pg_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command
}
