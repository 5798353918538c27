//! `pgward check --config PATH`: every problem of a config file on its own line as
//! `file:line:column: message`, exit status 1; a one-line summary and 0 for a good file. And
//! `--log-format json` / `server.log_format`. None of this needs PostgreSQL: the configs are
//! written by hand and the one daemon started has nothing behind it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const GOOD: &str = r#"[server]
listen = "127.0.0.1:6432"

[auth]
method = "scram-sha-256"

[[users]]
name = "app"
password = "app-secret"

[pool]
mode = "transaction"
size = 4
checkout_timeout = "5s"

[[backends]]
name = "primary"
host = "127.0.0.1"
port = 5432
role = "primary"
"#;

/// A folder holding the config under test (and any files it names).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("pgward-check-")
                .tempdir()
                .expect("creating a temp dir"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("writing a test file");
        path
    }
}

fn pgward() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgward"));
    for var in ["RUST_LOG", "PGWARD_CONFIG", "PGWARD_LOG_FORMAT"] {
        command.env_remove(var);
    }
    command
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(config: &Path) -> Outcome {
    let out = pgward()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("running pgward check");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Checks `text` and expects exit status 1 with a line `<file>:<at>: ...<fragment>...`.
fn expect_problem(scratch: &Scratch, text: &str, at: &str, fragment: &str) {
    let path = scratch.write("pgward.toml", text);
    let out = check(&path);
    assert_eq!(out.code, Some(1), "stderr:\n{}", out.stderr);
    let prefix = format!("{}:{at}: ", path.display());
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(fragment)),
        "expected a line starting {prefix:?} containing {fragment:?}; stderr:\n{}",
        out.stderr
    );
    assert_eq!(out.stdout, "", "nothing on stdout when the check fails");
}

#[test]
fn bad_toml_syntax() {
    let text = GOOD.replace("[pool]", "[pool");
    expect_problem(&Scratch::new(), &text, "11:6", "invalid table header");
}

#[test]
fn unknown_key_with_a_suggestion() {
    let text = GOOD.replace("mode = \"transaction\"", "mode_x = \"session\"");
    expect_problem(
        &Scratch::new(),
        &text,
        "12:1",
        "unknown key \"mode_x\" in [pool]; did you mean \"mode\"?",
    );
}

#[test]
fn unknown_key_without_a_near_miss_lists_the_valid_ones() {
    let text = GOOD.replace("size = 4", "flavour = 4");
    expect_problem(
        &Scratch::new(),
        &text,
        "13:1",
        "unknown key \"flavour\" in [pool]; valid keys: ",
    );
}

#[test]
fn bad_duration() {
    let text = GOOD.replace("\"5s\"", "\"5 parsecs\"");
    expect_problem(
        &Scratch::new(),
        &text,
        "14:20",
        "pool.checkout_timeout: invalid duration \"5 parsecs\"",
    );
}

#[test]
fn bad_size() {
    let text = format!("{GOOD}\n[routing]\nmax_replica_lag = \"16 MB per second\"\n");
    expect_problem(
        &Scratch::new(),
        &text,
        "23:19",
        "routing.max_replica_lag: invalid size unit in \"16 MB per second\"",
    );
}

#[test]
fn bad_enum_names_the_accepted_values() {
    let text = GOOD.replace("mode = \"transaction\"", "mode = \"sesion\"");
    expect_problem(
        &Scratch::new(),
        &text,
        "12:8",
        "pool.mode = \"sesion\" is not one of \"transaction\", \"session\"; did you mean \"session\"?",
    );
}

#[test]
fn two_primaries_point_at_the_second() {
    let text = format!(
        "{GOOD}\n[[backends]]\nname = \"other\"\nhost = \"127.0.0.1\"\nport = 5433\nrole = \"primary\"\n"
    );
    expect_problem(
        &Scratch::new(),
        &text,
        "26:8",
        "backend \"other\" has role = \"primary\" but \"primary\" (line 20) is the primary already",
    );
}

#[test]
fn admin_user_without_a_users_entry() {
    let text = GOOD.replace(
        "method = \"scram-sha-256\"",
        "method = \"scram-sha-256\"\nadmin_users = [\"app\", \"admin\"]",
    );
    expect_problem(
        &Scratch::new(),
        &text,
        "6:23",
        "auth.admin_users: \"admin\" has no [[users]] entry",
    );
}

#[test]
fn duplicate_user() {
    let text = format!("{GOOD}\n[[users]]\nname = \"app\"\npassword = \"other\"\n");
    expect_problem(
        &Scratch::new(),
        &text,
        "23:8",
        "user \"app\" is listed twice (first at line 8)",
    );
}

#[test]
fn unreadable_tls_cert() {
    let scratch = Scratch::new();
    let key = scratch.write("server.key", "not a key\n");
    let text = GOOD.replace(
        "listen = \"127.0.0.1:6432\"",
        &format!(
            "listen = \"127.0.0.1:6432\"\ntls_cert = \"missing.crt\"\ntls_key = {:?}",
            key.display().to_string()
        ),
    );
    expect_problem(
        &scratch,
        &text,
        "3:12",
        "server.tls_cert \"missing.crt\": No such file or directory",
    );
    // The key file exists but holds no PEM key.
    expect_problem(&scratch, &text, "4:11", "no PEM private key in it");
}

#[test]
fn unreadable_policy_file_with_policy_enabled() {
    let scratch = Scratch::new();
    scratch.write("model.conf", include_str!("../policies/model.conf"));
    let text = format!(
        "{GOOD}\n[policy]\nenabled = true\nmodel = \"model.conf\"\npolicy = \"no-such-policy.csv\"\n"
    );
    expect_problem(
        &scratch,
        &text,
        "25:10",
        "policy.policy \"no-such-policy.csv\": No such file or directory",
    );
    // With the policy off, the files are not needed.
    let off = text.replace("enabled = true", "enabled = false");
    let out = check(&scratch.write("pgward.toml", &off));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn policy_file_contents_are_still_checked_with_their_own_lines() {
    let scratch = Scratch::new();
    scratch.write("model.conf", include_str!("../policies/model.conf"));
    scratch.write(
        "policy.csv",
        "p, reader, appdb, public.*, *, select, allow\np, bad, appdb, public.[x, *, select, allow\n",
    );
    let text = format!(
        "{GOOD}\n[policy]\nenabled = true\nmodel = \"model.conf\"\npolicy = \"policy.csv\"\n"
    );
    let out = check(&scratch.write("pgward.toml", &text));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("policy.csv:2: tbl \"public.[x\""),
        "{}",
        out.stderr
    );
}

#[test]
fn encryption_key_file_missing() {
    let text = format!(
        "{GOOD}\n[encryption]\nwithout_decrypt = \"null\"\n\n[[encryption.keys]]\nid = \"k1\"\nmaterial = \"file:/nonexistent/pgward-k1.key\"\nactive = true\n"
    );
    expect_problem(
        &Scratch::new(),
        &text,
        "27:12",
        "encryption.keys.material \"/nonexistent/pgward-k1.key\": No such file or directory",
    );
}

#[test]
fn a_good_config_passes_with_a_summary() {
    let scratch = Scratch::new();
    scratch.write("model.conf", include_str!("../policies/model.conf"));
    scratch.write("policy.csv", include_str!("../policies/policy.csv"));
    scratch.write("k1.key", "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n");
    let text = format!(
        "{GOOD}\n[[backends]]\nname = \"replica\"\nport = 5433\nrole = \"replica\"\n\n\
         [[users]]\nname = \"admin\"\npassword = \"a\"\n\n[[users]]\nname = \"reader\"\npassword = \"r\"\n\n\
         [policy]\nenabled = true\nmodel = \"model.conf\"\npolicy = \"policy.csv\"\n\n\
         [[encryption.keys]]\nid = \"k1\"\nmaterial = \"file:k1.key\"\nactive = true\n"
    );
    let text = text.replace(
        "method = \"scram-sha-256\"",
        "method = \"scram-sha-256\"\nadmin_users = [\"admin\"]",
    );
    let path = scratch.write("pgward.toml", &text);
    let out = check(&path);
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "{}: ok (2 backends, 3 users, transaction pooling, policy on)\n",
            path.display()
        )
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let scratch = Scratch::new();
    let text = format!(
        "{GOOD}\n[[backends]]\nname = \"replica\"\nport = 5433\nrole = \"replca\"\n\n\
         [[users]]\nname = \"app\"\npassword = \"again\"\n\n\
         [routing]\nstrategy = \"random\"\ncheck_interval = \"often\"\n\n\
         [[encryption.keys]]\nid = \"k1\"\nmaterial = \"env:PGWARD_TEST_UNSET_KEY\"\nactive = true\n"
    )
    .replace("size = 4", "size = 4\nsise = 5")
    .replace(
        "listen = \"127.0.0.1:6432\"",
        "listen = \"127.0.0.1:6432\"\nadmin_listen = \"127.0.0.1:6432\"",
    );
    let path = scratch.write("pgward.toml", &text);
    let out = check(&path);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let expected = [
        ("3:16", "server.admin_listen \"127.0.0.1:6432\" is the address of server.listen"),
        ("15:1", "unknown key \"sise\" in [pool]; did you mean \"size\"?"),
        ("27:8", "backends.role = \"replca\" is not one of \"primary\", \"replica\", \"auto\"; did you mean \"replica\"?"),
        ("30:8", "user \"app\" is listed twice (first at line 9)"),
        ("35:18", "routing.check_interval: invalid duration \"often\""),
        ("39:12", "encryption.keys.material: environment variable \"PGWARD_TEST_UNSET_KEY\" is not set"),
    ];
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{}", out.stderr);
    for (line, (at, fragment)) in lines.iter().zip(expected) {
        let prefix = format!("{}:{at}: ", path.display());
        assert!(
            line.starts_with(&prefix) && line.contains(fragment),
            "expected {prefix}...{fragment}...; got:\n{}",
            out.stderr
        );
    }
}

#[test]
fn the_daemon_reports_the_same_problems() {
    let scratch = Scratch::new();
    let text = GOOD.replace("\"5s\"", "\"5 parsecs\"");
    let path = scratch.write("pgward.toml", &text);
    let out = pgward()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("running pgward");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}:14:20: pool.checkout_timeout: invalid duration",
            path.display()
        )),
        "{stderr}"
    );
}

/// A pgward daemon, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// Starts the daemon with nothing behind its backend and returns its first log line.
fn first_log_line(config: &str, args: &[&str]) -> String {
    let scratch = Scratch::new();
    let path = scratch.write("pgward.toml", config);
    let mut child = pgward()
        .args(args)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pgward");
    let stderr = child.stderr.take().expect("piped stderr");
    let _daemon = Daemon(child);
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
        .recv_timeout(Duration::from_secs(20))
        .expect("pgward logs something within 20s")
        .expect("reading pgward's stderr")
}

fn daemon_config(extra_server: &str) -> String {
    GOOD.replace(
        "listen = \"127.0.0.1:6432\"",
        &format!("listen = \"127.0.0.1:{}\"\n{extra_server}", free_port()),
    )
    .replace("port = 5432", &format!("port = {}", free_port()))
}

fn assert_json_log(line: &str) {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    assert!(value["level"].is_string(), "{line}");
    assert!(value["fields"]["message"].is_string(), "{line}");
}

#[test]
fn log_format_json_from_the_command_line() {
    let line = first_log_line(&daemon_config(""), &["--log-format", "json"]);
    assert_json_log(&line);
}

#[test]
fn log_format_json_from_the_config_and_the_command_line_wins() {
    let config = daemon_config("log_format = \"json\"");
    assert_json_log(&first_log_line(&config, &[]));
    let line = first_log_line(&config, &["--log-format", "text"]);
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_err(),
        "{line}"
    );
    assert!(line.contains("WARN") || line.contains("INFO"), "{line}");
}
