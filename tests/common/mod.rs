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

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
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

/// The psycopg release the Python scripts are written against.
const PSYCOPG_REQUIREMENT: &str = "psycopg[binary]==3.2.*";

/// A python3 interpreter with psycopg 3 (binary) installed: a venv made once, from PyPI, at
/// `$CARGO_TARGET_TMPDIR/psycopg-venv` and shared by every test binary. It is built in a
/// directory of its own and renamed into place when complete, so concurrent binaries never
/// see half a venv (the loser of the race throws its copy away). Panics, naming the packages
/// to install, when python3 or its venv module is missing.
pub fn python_with_psycopg() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(prepare_psycopg_venv).clone()
}

fn prepare_psycopg_venv() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join("psycopg-venv");
    let python = venv.join("bin").join("python");
    let works = |python: &Path| {
        Command::new(python)
            .args(["-c", "import psycopg"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&python) {
        return python;
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    // Existence first: a venv appears only complete, so one that exists and still cannot
    // import psycopg is broken (left by an older python3, say), not half-built.
    if venv.exists() && !works(&python) {
        // Set it aside, whoever gets there first.
        let aside = root.join(format!("psycopg-venv.broken-{unique}"));
        if fs::rename(&venv, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }

    fs::create_dir_all(root).expect("creating CARGO_TARGET_TMPDIR");
    let partial = root.join(format!("psycopg-venv.partial-{unique}"));
    let system_python = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("python3"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "python3 not found on PATH; the psycopg tests need it: \
                 apt-get install python3 python3-venv"
            )
        });
    let created = run_program(
        Command::new(&system_python)
            .arg("-m")
            .arg("venv")
            .arg(&partial),
        Duration::from_secs(300),
    );
    if !created.status.success() {
        let _ = fs::remove_dir_all(&partial);
        panic!(
            "`{} -m venv` failed; the psycopg tests need the venv module with ensurepip: \
             apt-get install python3-venv\nstdout:\n{}\nstderr:\n{}",
            system_python.display(),
            created.stdout,
            created.stderr
        );
    }
    let installed = run_program(
        Command::new(partial.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(PSYCOPG_REQUIREMENT),
        Duration::from_secs(600),
    );
    if !installed.status.success() {
        let _ = fs::remove_dir_all(&partial);
        panic!(
            "pip could not install {PSYCOPG_REQUIREMENT} from PyPI ({}):\nstdout:\n{}\nstderr:\n{}",
            installed.status, installed.stdout, installed.stderr
        );
    }
    // Atomic: either this copy becomes the venv, or another binary's already did.
    if fs::rename(&partial, &venv).is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    assert!(
        works(&python),
        "{} cannot import psycopg after installing it",
        python.display()
    );
    python
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
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command
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
