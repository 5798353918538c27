//! Throwaway PostgreSQL clusters made with the system's initdb/pg_basebackup: one primary and
//! any number of streaming replicas on free TCP ports in a temp dir, with the roles pgward's
//! demo, tests and benchmarks log in as. Used by `pgward demo`, tests/ and benches/.
//!
//! Everything is blocking (std::process); a cluster stops and deletes itself on drop, and
//! leftovers of processes that died without dropping are removed by the next `Cluster::start`.
//!
//! Roles created on every cluster (see `pg_hba.conf` below for how each one authenticates):
//! `postgres` (superuser, trust), `app`/`app-secret` (SCRAM, owns database `appdb`),
//! `app_md5`/`md5-secret` (md5) and `app_trust` (trust).

mod run;
mod stale;

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use run::{io_context, is_executable, run, Runner};

/// Programs a cluster needs from the PostgreSQL server package.
const REQUIRED_PROGRAMS: [&str; 4] = ["initdb", "pg_ctl", "pg_basebackup", "postgres"];
/// Root dirs are `<temp>/pgward-cluster-<pid>-<n>`; the pid lets leftovers be recognised.
const DIR_PREFIX: &str = "pgward-cluster-";
/// Records who created a root dir (pid and process start time), to survive pid reuse.
const OWNER_FILE: &str = "owner";
/// Server log written by `pg_ctl -l`, inside each data dir.
const LOG_FILE: &str = "server.log";
/// How long a replica may take to show up as streaming on the primary.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts to start a server when its port was taken between choosing and binding it.
const PORT_ATTEMPTS: usize = 4;

/// Exactly what every cluster accepts; tests rely on each user's method.
const PG_HBA: &str = "\
host all postgres 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
host all app_trust 127.0.0.1/32 trust
host all app_md5 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
";

/// Run in database `postgres` once the primary is up.
const CREATE_ROLES: &str = "\
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN CREATEDB PASSWORD 'app-secret';
SET password_encryption = 'md5';
CREATE ROLE app_md5 LOGIN PASSWORD 'md5-secret';
RESET password_encryption;
CREATE ROLE app_trust LOGIN;
CREATE DATABASE appdb OWNER app;
GRANT ALL ON DATABASE appdb TO app_md5, app_trust;
";

/// Run in database `appdb`: since PostgreSQL 15 only the owner may create in `public`.
const GRANT_PUBLIC_SCHEMA: &str = "GRANT ALL ON SCHEMA public TO PUBLIC;\n";

/// Distinguishes several clusters of one process.
static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server programs not found: {what}; install them with: apt-get install \
         postgresql-15 (or set PGWARD_PG_BIN to the directory holding initdb)"
    )]
    MissingBinaries { what: String },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what} timed out: {details}")]
    Timeout { what: String, details: String },
    #[error("{0}")]
    RootSetup(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What to build. `settings` are extra postgresql.conf lines (name, value), applied after the
/// defaults so they win; values are quoted as needed (`("work_mem", "8MB")`).
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub replicas: usize,
    pub settings: Vec<(String, String)>,
}

/// A running primary with its replicas. Dropping it stops them and deletes their files.
#[derive(Debug)]
pub struct Cluster {
    pub primary: Instance,
    pub replicas: Vec<Instance>,
    root: PathBuf,
    runner: Runner,
    stopped: bool,
}

/// One PostgreSQL server of a cluster, listening on 127.0.0.1:`port` (TCP only).
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    runner: Runner,
}

/// The directory holding initdb, pg_ctl, pg_basebackup and postgres: `$PGWARD_PG_BIN`, else
/// the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout, where they are not on
/// PATH), else the first PATH entry that has them all.
pub fn pg_bin_dir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("PGWARD_PG_BIN") {
        let dir = PathBuf::from(dir);
        let missing = missing_programs(&dir);
        if missing.is_empty() {
            return Ok(dir);
        }
        return Err(ClusterError::MissingBinaries {
            what: format!("{} in PGWARD_PG_BIN={}", missing.join(", "), dir.display()),
        });
    }
    if let Some(dir) = newest_versioned_bin_dir(Path::new("/usr/lib/postgresql")) {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| missing_programs(d).is_empty()) {
            return Ok(dir);
        }
    }
    Err(ClusterError::MissingBinaries {
        what: REQUIRED_PROGRAMS.join(", "),
    })
}

fn missing_programs(dir: &Path) -> Vec<&'static str> {
    REQUIRED_PROGRAMS
        .into_iter()
        .filter(|p| !is_executable(&dir.join(p)))
        .collect()
}

/// `<base>/<version>/bin` with the highest version (compared numerically: 9.6 < 10 < 15)
/// among those holding every required program.
fn newest_versioned_bin_dir(base: &Path) -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(base)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|(_, bin)| bin)
        .find(|bin| missing_programs(bin).is_empty())
}

impl Cluster {
    /// Builds and starts a cluster; returns once the primary accepts connections, the roles
    /// exist and every replica is streaming from the primary.
    pub fn start(opts: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let runner = Runner::new(pg_bin_dir()?)?;
        let parent = std::env::temp_dir();
        stale::remove_stale_clusters(&parent, &runner);
        let root = create_root_dir(&parent, &runner)?;

        let ports = free_ports(1 + opts.replicas)?;
        // From here on, dropping `cluster` (also on an early error return) cleans up.
        let mut cluster = Cluster {
            primary: Instance {
                name: "primary".into(),
                port: ports[0],
                data_dir: root.join("primary"),
                runner: runner.clone(),
            },
            replicas: Vec::new(),
            root,
            runner,
            stopped: false,
        };
        cluster.init_primary(opts)?;
        cluster.primary.start_on_free_port()?;
        cluster.psql(cluster.primary.port, "postgres", CREATE_ROLES)?;
        cluster.psql(cluster.primary.port, "appdb", GRANT_PUBLIC_SCHEMA)?;

        for (i, &port) in ports[1..].iter().enumerate() {
            let replica = cluster.base_backup(&format!("replica{}", i + 1), port)?;
            cluster.replicas.push(replica);
            cluster.replicas[i].start_on_free_port()?;
        }
        cluster.wait_for_streaming()?;
        Ok(cluster)
    }

    /// Runs `sql` (one or more statements, each in its own transaction) as superuser
    /// `postgres` over TCP and returns what psql printed: unaligned, tuples only, no command
    /// tags (`-X -q -At`), trailing newline removed. Stops at the first error.
    pub fn psql(&self, port: u16, db: &str, sql: &str) -> Result<String, ClusterError> {
        let mut cmd = self.runner.client_command("psql");
        cmd.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-f",
            "-",
        ])
        .env("PGCONNECT_TIMEOUT", "10");
        match run(&mut cmd, Some(sql)) {
            Ok(out) => Ok(out.stdout.trim_end_matches('\n').to_owned()),
            Err(ClusterError::Command {
                command,
                status,
                stderr,
            }) => Err(ClusterError::Command {
                command: format!("{command} <<< {}", abbreviate(sql)),
                status,
                stderr,
            }),
            Err(e) => Err(e),
        }
    }

    /// Stops every server at once (`pg_ctl stop -m immediate`) and deletes the cluster's
    /// files. Safe to call more than once.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for instance in self.replicas.iter().chain([&self.primary]) {
            instance.kill();
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.root.display(), "removing PostgreSQL cluster: {e}");
            }
        }
    }

    fn init_primary(&self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let data_dir = &self.primary.data_dir;
        run(
            self.runner
                .server_command("initdb")
                .arg("-D")
                .arg(data_dir)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
                // A throwaway cluster does not need its files flushed to disk.
                .arg("--no-sync"),
            None,
        )?;
        let mut conf = String::from("\n# pgward throwaway cluster\n");
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            ("port", &self.primary.port.to_string()),
            ("unix_socket_directories", ""),
            ("cluster_name", "primary"),
            ("wal_level", "replica"),
            ("max_wal_senders", "10"),
            ("wal_keep_size", "128MB"),
            ("hot_standby", "on"),
            ("max_connections", "200"),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("shared_buffers", "64MB"),
        ];
        for (name, value) in defaults {
            conf.push_str(&conf_line(name, value));
        }
        for (name, value) in &opts.settings {
            conf.push_str(&conf_line(name, value));
        }
        append(&data_dir.join("postgresql.conf"), &conf)?;
        fs::write(data_dir.join("pg_hba.conf"), PG_HBA)
            .map_err(|e| io_context(e, format!("writing {}/pg_hba.conf", data_dir.display())))
    }

    /// Clones the primary into a new data dir set up to stream from it (`-R`).
    fn base_backup(&self, name: &str, port: u16) -> Result<Instance, ClusterError> {
        let data_dir = self.root.join(name);
        run(
            self.runner
                .server_command("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &self.primary.port.to_string()])
                .args(["-U", "postgres", "-D"])
                .arg(&data_dir)
                // -c fast: do not wait for a spread checkpoint; --no-sync: throwaway files.
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]),
            None,
        )?;
        // The primary's log came along with the copy; the replica starts its own.
        let _ = fs::remove_file(data_dir.join(LOG_FILE));
        let conf = format!(
            "\n# pgward replica\n{}{}",
            conf_line("port", &port.to_string()),
            // Shows up as application_name in the primary's pg_stat_replication.
            conf_line("cluster_name", name)
        );
        append(&data_dir.join("postgresql.conf"), &conf)?;
        Ok(Instance {
            name: name.into(),
            port,
            data_dir,
            runner: self.runner.clone(),
        })
    }

    /// Replicas answer queries before they stream; callers expect replication to work.
    /// Waits until every replica has replayed what the primary has written so far, so that
    /// a read sent to a replica sees it.
    pub fn wait_replayed(&self) -> Result<(), ClusterError> {
        let lsn = self.psql(self.primary.port, "postgres", "SELECT pg_current_wal_lsn()")?;
        let query = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let deadline = Instant::now() + STREAMING_TIMEOUT;
        for replica in &self.replicas {
            while self.psql(replica.port, "postgres", &query)? != "t" {
                if Instant::now() > deadline {
                    return Err(ClusterError::Timeout {
                        what: format!("waiting for the replicas to replay up to {lsn}"),
                        details: replica.log_excerpt(),
                    });
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn wait_for_streaming(&self) -> Result<(), ClusterError> {
        if self.replicas.is_empty() {
            return Ok(());
        }
        let query = "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'";
        let deadline = Instant::now() + STREAMING_TIMEOUT;
        loop {
            let streaming = self.psql(self.primary.port, "postgres", query)?;
            let waiting: Vec<&Instance> = self
                .replicas
                .iter()
                .filter(|r| !streaming.lines().any(|line| line == r.name))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let mut details = format!(
                    "replicas not streaming after {STREAMING_TIMEOUT:?}; pg_stat_replication \
                     shows [{}]",
                    streaming.lines().collect::<Vec<_>>().join(", ")
                );
                for replica in waiting {
                    let _ = write!(details, "\n{}", replica.log_excerpt());
                }
                let _ = write!(details, "\n{}", self.primary.log_excerpt());
                return Err(ClusterError::Timeout {
                    what: "waiting for streaming replication".into(),
                    details,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Instance {
    /// `pg_ctl stop -m <mode>` (smart, fast or immediate), waiting until the server is down.
    pub fn stop(&self, mode: &str) -> Result<(), ClusterError> {
        run(
            self.runner
                .server_command("pg_ctl")
                .args(["stop", "-w", "-t", "60", "-m", mode, "-D"])
                .arg(&self.data_dir),
            None,
        )
        .map(drop)
    }

    /// Starts the server again (after `stop`), waiting until it accepts connections.
    pub fn start(&self) -> Result<(), ClusterError> {
        run(
            self.runner
                .server_command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(self.log_path()),
            None,
        )
        .map(drop)
        .map_err(|e| match e {
            ClusterError::Command {
                command,
                status,
                stderr,
            } => ClusterError::Command {
                command,
                status,
                stderr: format!("{stderr}\n{}", self.log_excerpt()),
            },
            e => e,
        })
    }

    /// The server's log file (`pg_ctl -l`), kept in the data dir.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The first start: if another process grabbed the chosen port meanwhile, move to a
    /// new free port and try again.
    fn start_on_free_port(&mut self) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            match self.start() {
                Err(e) if attempt < PORT_ATTEMPTS && self.port_was_taken() => {
                    tracing::debug!(instance = %self.name, port = self.port, "port taken: {e}");
                    self.port = free_ports(1)?[0];
                    append(
                        &self.data_dir.join("postgresql.conf"),
                        &conf_line("port", &self.port.to_string()),
                    )?;
                    let _ = fs::remove_file(self.log_path());
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn port_was_taken(&self) -> bool {
        fs::read_to_string(self.log_path())
            .map(|log| log.contains("Address already in use"))
            .unwrap_or(false)
    }

    /// Best effort, for cleanup: immediate shutdown, or SIGKILL to the postmaster if pg_ctl
    /// cannot do it.
    fn kill(&self) {
        if !self.data_dir.join("postmaster.pid").is_file() {
            return;
        }
        let stopped = run(
            self.runner
                .server_command("pg_ctl")
                .args(["stop", "-w", "-t", "30", "-m", "immediate", "-D"])
                .arg(&self.data_dir),
            None,
        );
        if let Err(e) = stopped {
            tracing::warn!(instance = %self.name, "stopping PostgreSQL: {e}");
            if let Some(pid) = pid_file_postmaster(&self.data_dir) {
                // SAFETY: plain kill(2); the backends exit when their postmaster dies.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// The end of the server log, labelled, for error messages.
    fn log_excerpt(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "--- last lines of {} ({}) ---\n{tail}",
            self.log_path().display(),
            self.name
        )
    }
}

/// The postmaster's pid: the first line of postmaster.pid.
fn pid_file_postmaster(data_dir: &Path) -> Option<i32> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
}

/// Creates `<parent>/pgward-cluster-<pid>-<n>`, enterable by `postgres`, which owns it so
/// initdb and pg_basebackup can create the data dirs inside.
fn create_root_dir(parent: &Path, runner: &Runner) -> Result<PathBuf, ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    let pid = std::process::id();
    let root = loop {
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let candidate = parent.join(format!("{DIR_PREFIX}{pid}-{n}"));
        match fs::create_dir(&candidate) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_context(e, format!("creating {}", candidate.display()))),
        }
    };
    let setup = || -> Result<(), ClusterError> {
        fs::write(root.join(OWNER_FILE), stale::owner_record())?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
        runner.hand_over(&root)
    };
    setup().inspect_err(|_| {
        let _ = fs::remove_dir_all(&root);
    })?;
    Ok(root)
}

/// Ports the kernel hands out for 127.0.0.1:0, all held at once so they are distinct.
fn free_ports(count: usize) -> Result<Vec<u16>, ClusterError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_context(e, "finding a free port".into()))?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One postgresql.conf line; the value is single-quoted (any setting accepts that) unless
/// the caller quoted it already.
fn conf_line(name: &str, value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        format!("{name} = {value}\n")
    } else {
        format!("{name} = '{}'\n", value.replace('\'', "''"))
    }
}

fn append(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| io_context(e, format!("appending to {}", path.display())))
}

/// SQL shown in an error message: one line, not too long.
fn abbreviate(sql: &str) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        format!("'{}...'", line.chars().take(200).collect::<String>())
    } else {
        format!("'{line}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_are_quoted_once() {
        assert_eq!(conf_line("port", "5433"), "port = '5433'\n");
        assert_eq!(
            conf_line("unix_socket_directories", ""),
            "unix_socket_directories = ''\n"
        );
        assert_eq!(
            conf_line("search_path", "'$user', public"),
            "search_path = '''$user'', public'\n"
        );
        assert_eq!(
            conf_line("listen_addresses", "'127.0.0.1'"),
            "listen_addresses = '127.0.0.1'\n"
        );
    }

    #[test]
    fn newest_version_with_all_programs_wins() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let make = |version: &str, programs: &[&str]| {
            let bin = base.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for p in programs {
                let path = bin.join(p);
                fs::write(&path, "").unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
        };
        make("9.6", &REQUIRED_PROGRAMS);
        make("10", &REQUIRED_PROGRAMS);
        make("16", &["initdb", "pg_ctl"]); // client-only leftovers do not count
        make("not-a-version", &REQUIRED_PROGRAMS);
        assert_eq!(
            newest_versioned_bin_dir(base.path()),
            Some(base.path().join("10").join("bin"))
        );
    }

    #[test]
    fn missing_binaries_message_says_how_to_install() {
        let text = ClusterError::MissingBinaries {
            what: "initdb, pg_ctl".into(),
        }
        .to_string();
        assert!(text.contains("initdb, pg_ctl"), "{text}");
        assert!(text.contains("apt-get install postgresql-15"), "{text}");
        assert!(text.contains("PGWARD_PG_BIN"), "{text}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(5).unwrap();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 5);
    }

    /// Needs PostgreSQL installed; fails (with install instructions) when it is not.
    #[test]
    fn cluster_with_replica_streams_restarts_and_cleans_up() {
        let opts = ClusterOptions {
            replicas: 1,
            settings: vec![("work_mem".into(), "7MB".into())],
        };
        let mut cluster = Cluster::start(&opts).unwrap_or_else(|e| panic!("{e}"));
        let root = cluster.root.clone();
        let primary = cluster.primary.port;
        let replica = cluster.replicas[0].port;

        assert_eq!(
            cluster.psql(primary, "postgres", "SHOW work_mem").unwrap(),
            "7MB"
        );
        assert_eq!(
            cluster
                .psql(primary, "appdb", "SELECT pg_catalog.current_database()")
                .unwrap(),
            "appdb"
        );
        let roles = cluster
            .psql(
                primary,
                "postgres",
                "SELECT rolname || ':' || coalesce(left(rolpassword, 3), '-') FROM pg_authid \
                 WHERE rolname LIKE 'app%' ORDER BY 1",
            )
            .unwrap();
        assert_eq!(roles, "app:SCR\napp_md5:md5\napp_trust:-");

        cluster
            .psql(
                primary,
                "appdb",
                "CREATE TABLE t(x int); INSERT INTO t VALUES (41);",
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = cluster.psql(replica, "appdb", "SELECT to_regclass('t') IS NOT NULL");
            if seen.is_ok_and(|s| s == "t") {
                break;
            }
            assert!(Instant::now() < deadline, "replica never saw table t");
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            cluster
                .psql(replica, "appdb", "SELECT pg_is_in_recovery()")
                .unwrap(),
            "t"
        );

        let err = cluster
            .psql(primary, "appdb", "SELECT 1/0")
            .expect_err("division by zero must fail");
        assert!(err.to_string().contains("division by zero"), "{err}");

        cluster.primary.stop("fast").unwrap();
        assert!(cluster.psql(primary, "postgres", "SELECT 1").is_err());
        cluster.primary.start().unwrap();
        assert_eq!(cluster.psql(primary, "postgres", "SELECT 1").unwrap(), "1");

        cluster.stop();
        cluster.stop();
        assert!(!root.exists(), "{} must be removed", root.display());
        assert!(std::net::TcpStream::connect(("127.0.0.1", primary)).is_err());
    }
}
