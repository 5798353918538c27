//! Leftovers from processes that died without cleaning up (SIGKILL, a crashed test binary):
//! their cluster dirs are found by name, their servers stopped, their dirs removed.

use std::fs;
use std::path::{Path, PathBuf};

use super::run::{run, Runner};
use super::{pid_file_postmaster, DIR_PREFIX, OWNER_FILE};

/// Stops and removes every `pgward-cluster-<pid>-<n>` dir in `parent` whose owner is gone.
pub(crate) fn remove_stale_clusters(parent: &Path, runner: &Runner) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = cluster_dir_pid(&name.to_string_lossy()) else {
            continue;
        };
        let dir = entry.path();
        if is_stale(&dir, pid) {
            tracing::info!(dir = %dir.display(), "removing stale PostgreSQL cluster");
            stop_servers_in(&dir, runner);
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// The owning pid from a dir name `pgward-cluster-<pid>-<n>`.
pub(crate) fn cluster_dir_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(DIR_PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    if pid.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// A dir is stale when its pid is dead, or alive but a different process (the pid was reused:
/// its start time differs from the one recorded in the owner file).
fn is_stale(dir: &Path, pid: i32) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    let recorded = fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|s| parse_owner(&s))
        .filter(|(owner, _)| *owner == pid)
        .map(|(_, start)| start);
    match (recorded, process_start_time(pid)) {
        (Some(recorded), Some(actual)) => recorded != actual,
        // No record yet (the owner is still creating it) or no /proc: trust liveness.
        _ => false,
    }
}

/// Content of the owner file: `<pid> <start time in clock ticks since boot>`.
pub(crate) fn owner_record() -> String {
    let pid = std::process::id() as i32;
    format!("{pid} {}\n", process_start_time(pid).unwrap_or(0))
}

fn parse_owner(text: &str) -> Option<(i32, u64)> {
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Field 22 of /proc/<pid>/stat; `None` off Linux or when the process is gone.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// `pg_ctl stop -m immediate` for every data dir below `dir` with a postmaster.pid.
fn stop_servers_in(dir: &Path, runner: &Runner) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let data_dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("postmaster.pid").is_file())
        .collect();
    for data_dir in data_dirs {
        let stopped = run(
            runner
                .server_command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
                .arg(&data_dir),
            None,
        );
        if stopped.is_err() {
            if let Some(pid) = pid_file_postmaster(&data_dir) {
                // SAFETY: plain kill(2); the backends exit when their postmaster dies.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names() {
        assert_eq!(cluster_dir_pid("pgward-cluster-1234-0"), Some(1234));
        assert_eq!(cluster_dir_pid("pgward-cluster-1234-17"), Some(1234));
        assert_eq!(cluster_dir_pid("pgward-cluster-1234"), None);
        assert_eq!(cluster_dir_pid("pgward-cluster-x-1"), None);
        assert_eq!(cluster_dir_pid("pgward-cluster-12-x"), None);
        assert_eq!(cluster_dir_pid("pgward-cluster-0-1"), None);
        assert_eq!(cluster_dir_pid("other-1234-0"), None);
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
    }

    #[test]
    fn own_process_is_alive_and_not_stale() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(OWNER_FILE), owner_record()).unwrap();
        assert!(!is_stale(dir.path(), std::process::id() as i32));
    }

    #[test]
    fn reused_pid_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        if process_start_time(me).is_none() {
            return; // no /proc: only liveness can be checked, covered elsewhere
        }
        fs::write(dir.path().join(OWNER_FILE), format!("{me} 1\n")).unwrap();
        assert!(is_stale(dir.path(), me));
    }

    #[test]
    fn dead_pid_is_stale() {
        // Spawn and reap a child: its pid is then dead (and reuse within the test is unlikely).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(is_stale(dir.path(), pid));
    }
}
