//! Running PostgreSQL programs: as the `postgres` user when we are root (initdb and postgres
//! refuse to run as root), with a clean environment, captured output and a time limit.

use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::ClusterError;

/// How long any single command may run before it is killed; `pg_ctl -t 60` stays inside it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the PostgreSQL programs live and which user runs them.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub(crate) bin: PathBuf,
    /// `Some((uid, gid))` of `postgres` when we run as root and must switch user.
    pub(crate) as_postgres: Option<(u32, u32)>,
    runuser: Option<PathBuf>,
}

impl Runner {
    pub(crate) fn new(bin: PathBuf) -> Result<Runner, ClusterError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Runner {
                bin,
                as_postgres: None,
                runuser: None,
            });
        }
        let ids = postgres_user_ids().ok_or_else(|| {
            ClusterError::RootSetup(
                "running as root, but there is no `postgres` user to run initdb and postgres as \
                 (initdb refuses to run as root); create one with: useradd --system postgres"
                    .into(),
            )
        })?;
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| find_in_path("runuser"))
            .ok_or_else(|| {
                ClusterError::RootSetup(
                    "running as root needs `runuser` (util-linux) to start PostgreSQL as the \
                     `postgres` user; install it with: apt-get install util-linux"
                        .into(),
                )
            })?;
        Ok(Runner {
            bin,
            as_postgres: Some(ids),
            runuser: Some(runuser),
        })
    }

    /// A command for a server-side program from the bin dir, run as the right user.
    pub(crate) fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.runuser {
            Some(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        clean_env(&mut cmd);
        cmd
    }

    /// A command for a client program (psql, pg_isready): from the bin dir if it is there,
    /// else from PATH; run as the current user since it only talks TCP.
    pub(crate) fn client_command(&self, program: &str) -> Command {
        let local = self.bin.join(program);
        let mut cmd = if local.is_file() {
            Command::new(local)
        } else {
            Command::new(program)
        };
        clean_env(&mut cmd);
        cmd
    }

    /// Makes `path` owned by `postgres` when the programs run as that user.
    pub(crate) fn hand_over(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some((uid, gid)) = self.as_postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| io_context(e, format!("chown postgres {}", path.display())))?;
        }
        Ok(())
    }
}

/// What a finished command printed.
pub(crate) struct Output {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `cmd` to completion (feeding `stdin`), failing with the command line and its stderr
/// when it exits non-zero or runs past the time limit.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, ClusterError> {
    let shown = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .current_dir("/");
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ClusterError::MissingBinaries {
                what: format!("{} (not found)", program_name(cmd)),
            }
        } else {
            io_context(e, format!("starting {shown}"))
        }
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let text = text.to_owned();
        // A writer thread, so a child that prints a lot before reading cannot deadlock us.
        thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| io_context(e, format!("waiting for {shown}")))?
        {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClusterError::Timeout {
                what: shown,
                details: format!(
                    "still running after {COMMAND_TIMEOUT:?}; stderr so far:\n{}",
                    collect(stderr)
                ),
            });
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    };
    let output = Output {
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    if status.success() {
        Ok(output)
    } else {
        Err(ClusterError::Command {
            command: shown,
            status: describe_status(status),
            stderr: if output.stderr.trim().is_empty() {
                output.stdout
            } else {
                output.stderr
            },
        })
    }
}

/// Reads a pipe to its end on a thread; the result arrives on the returned channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Waits briefly for a drained pipe: a daemon that inherited it must not hang us.
fn collect(rx: mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
}

/// PG* variables from the caller's shell (PGDATA, PGPORT, PGSSLMODE, ...) would silently
/// change what these programs do; messages in English keep errors greppable.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C");
}

/// The command line as a person would type it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
    {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The program actually missing: the one after `runuser ... --` when switching user.
fn program_name(cmd: &Command) -> String {
    let args: Vec<_> = cmd.get_args().collect();
    match args.iter().position(|a| *a == "--") {
        Some(i) if i + 1 < args.len() => args[i + 1].to_string_lossy().into_owned(),
        _ => cmd.get_program().to_string_lossy().into_owned(),
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// An io::Error that says what was being done, kept as io::Error for `ClusterError::Io`.
pub(crate) fn io_context(e: std::io::Error, context: String) -> ClusterError {
    ClusterError::Io(std::io::Error::new(e.kind(), format!("{context}: {e}")))
}

fn postgres_user_ids() -> Option<(u32, u32)> {
    let name = CString::new("postgres").ok()?;
    // SAFETY: getpwnam takes a NUL-terminated name; the returned record is read at once,
    // before any other call could overwrite it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null pointer to a passwd record owned by libc.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_only_what_needs_it() {
        let mut cmd = Command::new("/usr/bin/psql");
        cmd.args(["-p", "5432", "-c", "select 'x'"]);
        assert_eq!(
            describe(&cmd),
            r"/usr/bin/psql -p 5432 -c 'select '\''x'\'''"
        );
    }

    #[test]
    fn failing_command_reports_its_stderr() {
        let err = run(
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
            None,
        )
        .err()
        .expect("must fail");
        let text = err.to_string();
        assert!(text.contains("exit status 3"), "{text}");
        assert!(text.contains("boom"), "{text}");
        assert!(text.contains("sh -c"), "{text}");
    }

    #[test]
    fn stdin_reaches_the_command() {
        let out = run(&mut Command::new("cat"), Some("hello\n")).unwrap();
        assert_eq!(out.stdout, "hello\n");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run(&mut Command::new("pgward-no-such-program"), None)
            .err()
            .expect("must fail");
        assert!(
            matches!(&err, ClusterError::MissingBinaries { what } if what.contains("pgward-no-such-program")),
            "{err}"
        );
    }
}
