//! `pgward encrypt` and `pgward rotate` against real PostgreSQL: existing plaintext becomes
//! envelopes, a rotation moves every row to the new key (and old keys can then go), an
//! interrupted run resumes without rewriting what it did, and a concurrent writer's values
//! are never overwritten.
//!
//! The values are checked directly in PostgreSQL and decrypted here with the same keyring
//! (`Crypto::from_config`), so these tests do not depend on the proxy's own encryption.
//! [`Column`] and [`Migration`] are meant for tests that also drive clients through pgward
//! while a rotation runs: `Column::proxy_config` gives the config to `Pgward::start`.

mod common;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{admin_psql, direct_postgres, Finished, ProxyConfig, DATABASE};
use pgward::config::Config;
use pgward::crypto::{looks_like_envelope, ColumnCipher, Crypto};

/// Longest a migration in these tests may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// A designated column of a test table, with its key files and the configs naming them. Keys
/// are made on first use (base64 of 32 random bytes, one file each); a config lists keys as
/// `(id, active)` pairs.
pub struct Column {
    dir: tempfile::TempDir,
    /// `public.name`
    pub table: String,
    pub column: String,
    /// `randomized` or `deterministic`
    pub mode: &'static str,
    /// The proxy settings every config here starts from (the shared cluster's primary,
    /// user `app`).
    pub proxy: ProxyConfig,
}

impl Column {
    pub fn new(table: &str, column: &str, mode: &'static str) -> Column {
        Column {
            dir: tempfile::Builder::new()
                .prefix("pgward-rotation-")
                .tempdir()
                .expect("creating a temp dir"),
            table: table.into(),
            column: column.into(),
            mode,
            proxy: ProxyConfig::transaction(4),
        }
    }

    /// The file holding key `id`, made on first use.
    pub fn key_file(&self, id: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{id}.key"));
        if !path.exists() {
            let key: [u8; 32] = rand::random();
            let text = base64::engine::general_purpose::STANDARD.encode(key);
            fs::write(&path, format!("{text}\n")).expect("writing a key file");
        }
        path
    }

    /// The `[encryption]` section designating this column, with `keys`.
    pub fn encryption_toml(&self, keys: &[(&str, bool)]) -> String {
        let mut toml = String::from("\n[encryption]\n");
        for (id, active) in keys {
            toml.push_str(&format!(
                "\n[[encryption.keys]]\nid = \"{id}\"\nmaterial = \"file:{}\"\nactive = {active}\n",
                self.key_file(id).display()
            ));
        }
        toml.push_str(&format!(
            "\n[[encryption.columns]]\ntable = \"{}\"\ncolumn = \"{}\"\nmode = \"{}\"\n",
            self.table, self.column, self.mode
        ));
        toml
    }

    /// A whole pgward config with `keys` (key paths are absolute: it works from any folder,
    /// e.g. given to `Pgward::start`).
    pub fn proxy_config(&self, keys: &[(&str, bool)]) -> ProxyConfig {
        self.proxy.clone().extra(&self.encryption_toml(keys))
    }

    /// Writes the config with `keys` to a file of its own (named after the keys) and
    /// returns its path.
    pub fn config_file(&self, keys: &[(&str, bool)]) -> PathBuf {
        let name: Vec<String> = keys
            .iter()
            .map(|(id, active)| format!("{id}{}", if *active { "+" } else { "" }))
            .collect();
        let path = self
            .dir
            .path()
            .join(format!("pgward-{}.toml", name.join("-")));
        fs::write(&path, self.proxy_config(keys).toml()).expect("writing the config");
        path
    }

    /// The keyring pgward builds from the config with `keys`.
    pub fn crypto(&self, keys: &[(&str, bool)]) -> Arc<Crypto> {
        let config = Config::load(&self.config_file(keys)).expect("the test config loads");
        Crypto::from_config(&config.encryption, config.base_dir())
            .expect("the keyring builds")
            .expect("a column is designated")
    }

    /// `pgward <operation> --config ... --table ... --column ... --database appdb <args>`,
    /// with no PG* variables from the environment.
    pub fn command(&self, operation: &str, keys: &[(&str, bool)], args: &[&str]) -> Command {
        self.command_for(operation, keys, &self.table, &self.column, args)
    }

    /// Like `command`, with `--table` and `--column` as given (the config is unchanged).
    pub fn command_for(
        &self,
        operation: &str,
        keys: &[(&str, bool)],
        table: &str,
        column: &str,
        args: &[&str],
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgward"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(key);
            }
        }
        command
            .arg(operation)
            .arg("--config")
            .arg(self.config_file(keys))
            .args(["--table", table, "--column", column])
            .args(["--database", DATABASE])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        command
    }

    /// Runs a migration to its end.
    pub fn run(&self, operation: &str, keys: &[(&str, bool)], args: &[&str]) -> Finished {
        common::run_program(&mut self.command(operation, keys, args), RUN_TIMEOUT)
    }

    /// Starts a migration in the background (killed if the test's thread ends first).
    pub fn spawn(&self, operation: &str, keys: &[(&str, bool)], args: &[&str]) -> Migration {
        let n = fs::read_dir(self.dir.path()).map_or(0, |d| d.count());
        let out = self.dir.path().join(format!("run-{n}.out"));
        let err = self.dir.path().join(format!("run-{n}.err"));
        let mut command = self.command(operation, keys, args);
        command
            .stdout(File::create(&out).expect("creating the output file"))
            .stderr(File::create(&err).expect("creating the output file"));
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("spawning pgward");
        Migration {
            child,
            out,
            err,
            status: None,
        }
    }

    /// `(primary key as text, value)` of every row, in key order, read directly from
    /// PostgreSQL; a multi-column key is joined with `/`.
    pub fn rows(&self, key: &str) -> Vec<(String, Option<String>)> {
        let sql = format!(
            "SELECT {key}, {col} IS NULL, coalesce({col}, '') FROM {table} ORDER BY {key}",
            col = self.column,
            table = self.table,
            key = key.replace('/', "::text || '/' || ")
        );
        admin_psql(DATABASE, &sql)
            .lines()
            .map(|line| {
                let mut parts = line.splitn(3, '|');
                let k = parts.next().unwrap_or_default().to_owned();
                let null = parts.next() == Some("t");
                let value = parts.next().unwrap_or_default().to_owned();
                (k, (!null).then_some(value))
            })
            .collect()
    }

    /// The checkpoint row of a run (`last_key`), if one is saved.
    pub fn checkpoint(&self, operation: &str) -> Option<String> {
        let out = admin_psql(
            DATABASE,
            &format!(
                "SELECT last_key FROM public.pgward_migration WHERE table_name = '{}' \
                 AND column_name = '{}' AND operation = '{operation}'",
                self.table, self.column
            ),
        );
        (!out.is_empty()).then_some(out)
    }
}

/// A migration running in the background; its stdout and stderr go to files.
pub struct Migration {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
}

impl Migration {
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waiting for pgward");
        }
        self.status.is_none()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) to our own child.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for the end (panics after `RUN_TIMEOUT`).
    pub fn wait(mut self) -> Finished {
        let deadline = Instant::now() + RUN_TIMEOUT;
        while self.running() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("pgward did not finish in time; stderr:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Finished {
            status: self.status.expect("finished"),
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: self.stderr(),
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Migration {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Creates `table` owned by `app` (the login pgward uses) from `columns`, and fills it with
/// `insert` (run as superuser).
fn create_table(table: &str, columns: &str, insert: &str) {
    admin_psql(
        DATABASE,
        &format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns}); \
             ALTER TABLE {table} OWNER TO app; {insert}"
        ),
    );
}

/// The designated column's cipher in `crypto`.
fn cipher<'a>(crypto: &'a Crypto, column: &Column) -> &'a ColumnCipher {
    let (schema, table) = column.table.split_once('.').expect("schema.table");
    crypto
        .column(schema, table, &column.column)
        .expect("the column is designated")
}

/// Asserts that every non-NULL value is an envelope under `key` that decrypts with `cipher`
/// to `expected(key)`; NULLs must be expected as None.
fn assert_rows(
    rows: &[(String, Option<String>)],
    cipher: &ColumnCipher,
    key: &str,
    expected: impl Fn(&str) -> Option<String>,
) {
    for (k, value) in rows {
        let want = expected(k);
        match value {
            None => assert_eq!(want, None, "row {k} is NULL"),
            Some(stored) => {
                assert!(
                    looks_like_envelope(stored.as_bytes()),
                    "row {k} is not an envelope: {stored:?}"
                );
                assert_eq!(
                    ColumnCipher::envelope_key_id(stored.as_bytes()),
                    Some(key),
                    "row {k}"
                );
                let plain = cipher
                    .decrypt(stored.as_bytes())
                    .unwrap_or_else(|e| panic!("row {k}: {e}"));
                assert_eq!(Some(String::from_utf8(plain).unwrap()), want, "row {k}");
            }
        }
    }
}

/// Summary numbers from the closing line: "N rows scanned, N changed, N skipped".
fn counts(stdout: &str) -> HashMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.contains("rows scanned"))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    let tail = line.split_once(": ").map_or(line, |(_, t)| t);
    tail.split(", ")
        .filter_map(|part| {
            let (n, what) = part.split_once(' ')?;
            let word = what.split_whitespace().next()?;
            let word = if word == "rows" { "scanned" } else { word };
            Some((word.to_owned(), n.parse().ok()?))
        })
        .collect()
}

fn xmins(table: &str, up_to: i64) -> String {
    admin_psql(
        DATABASE,
        &format!("SELECT id, xmin FROM {table} WHERE id <= {up_to} ORDER BY id"),
    )
}

/// Waits until `f` holds, or panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The key of a checkpoint's `last_key` for a one-column key: `{123}` -> 123.
fn checkpoint_id(last_key: &str) -> i64 {
    last_key
        .trim_matches(|c| c == '{' || c == '}')
        .parse()
        .unwrap_or_else(|_| panic!("odd checkpoint {last_key:?}"))
}

/// No backend of a migration left (a killed run's server process ends a moment later and
/// holds the column's advisory lock until then).
fn wait_for_backends_gone() {
    wait_until(Duration::from_secs(20), "the killed run's backend", || {
        admin_psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgward %'",
        ) == "0"
    });
}

#[test]
fn encrypt_turns_plaintext_into_envelopes() {
    let column = Column::new("public.rot_encrypt", "ssn", "deterministic");
    let crypto = column.crypto(&[("k1", true)]);
    let cipher = cipher(&crypto, &column);
    // One row was written through pgward already: an envelope the run must leave alone.
    let done = cipher.encrypt(b"ssn-done");
    create_table(
        "public.rot_encrypt",
        "id int PRIMARY KEY, ssn text, note text",
        &format!(
            "INSERT INTO rot_encrypt SELECT i, CASE WHEN i % 100 = 0 THEN NULL ELSE 'ssn-' || i END, \
             'note' FROM generate_series(1, 3000) i; \
             INSERT INTO rot_encrypt VALUES (3001, '{done}', 'done');"
        ),
    );
    let before = xmins("rot_encrypt", 3001);
    let done_xmin = before.lines().last().unwrap().to_owned();

    // A bare table name means schema public.
    let mut command = column.command_for(
        "encrypt",
        &[("k1", true)],
        "rot_encrypt",
        "ssn",
        &["--batch-size", "250"],
    );
    let finished = common::run_program(&mut command, RUN_TIMEOUT).expect_success("pgward encrypt");
    let n = counts(&finished.stdout);
    assert_eq!(n["scanned"], 3001, "{}", finished.stdout);
    assert_eq!(n["changed"], 2970, "{}", finished.stdout);
    assert_eq!(n["skipped"], 0, "{}", finished.stdout);
    for output in [&finished.stdout, &finished.stderr] {
        assert!(!output.contains("ssn-1"), "plaintext printed: {output}");
    }

    let rows = column.rows("id");
    assert_eq!(rows.len(), 3001);
    assert_rows(&rows, cipher, "k1", |id| match id.parse::<u32>().unwrap() {
        3001 => Some("ssn-done".into()),
        i if i % 100 == 0 => None,
        i => Some(format!("ssn-{i}")),
    });
    let after = xmins("rot_encrypt", 3001);
    assert_eq!(
        after.lines().last().unwrap(),
        done_xmin,
        "the done row was rewritten"
    );
    assert_eq!(
        column.checkpoint("encrypt"),
        None,
        "a finished run keeps no checkpoint"
    );

    // Deterministic: equal plaintexts, equal envelopes.
    assert_eq!(cipher.encrypt(b"ssn-7"), rows[6].1.clone().unwrap());

    // A second run finds nothing to do and writes nothing.
    let again = column
        .run("encrypt", &[("k1", true)], &[])
        .expect_success("pgward encrypt, again");
    assert_eq!(counts(&again.stdout)["changed"], 0, "{}", again.stdout);
    assert_eq!(xmins("rot_encrypt", 3001), after);
}

#[test]
fn rotate_moves_every_row_to_the_new_key() {
    let column = Column::new("public.rot_rotate", "email", "randomized");
    create_table(
        "public.rot_rotate",
        "region text, id int, email text, PRIMARY KEY (region, id)",
        "INSERT INTO rot_rotate SELECT r, i, 'user' || i || '@' || r || '.example' \
         FROM unnest(ARRAY['eu', 'us']) r, generate_series(1, 1000) i;",
    );
    let expected = |k: &str| {
        let (region, id) = k.split_once('/').unwrap();
        Some(format!("user{id}@{region}.example"))
    };
    column
        .run("encrypt", &[("k1", true)], &["--batch-size", "300"])
        .expect_success("pgward encrypt under k1");
    let k1 = column.crypto(&[("k1", true)]);
    assert_rows(
        &column.rows("region/id"),
        cipher(&k1, &column),
        "k1",
        expected,
    );

    // A value written around pgward: rotate reports it and leaves it.
    admin_psql(
        DATABASE,
        "INSERT INTO rot_rotate VALUES ('zz', 1, 'stray-plaintext')",
    );
    let finished = column
        .run(
            "rotate",
            &[("k2", true), ("k1", false)],
            &["--batch-size", "300"],
        )
        .expect_success("pgward rotate to k2");
    let n = counts(&finished.stdout);
    assert_eq!(n["scanned"], 2001, "{}", finished.stdout);
    assert_eq!(n["changed"], 2000, "{}", finished.stdout);
    assert_eq!(n["not"], 1, "{}", finished.stdout);
    assert!(
        finished
            .stderr
            .contains("(region, id)=(zz, 1) is not a pgward ciphertext"),
        "{}",
        finished.stderr
    );
    for output in [&finished.stdout, &finished.stderr] {
        assert!(!output.contains("stray-plaintext") && !output.contains("@eu.example"));
    }
    let stray = column.rows("region/id").pop().unwrap();
    assert_eq!(stray.1.as_deref(), Some("stray-plaintext"));
    admin_psql(DATABASE, "DELETE FROM rot_rotate WHERE region = 'zz'");

    // k1 is gone from the config: every row still decrypts.
    let k2_only = column.crypto(&[("k2", true)]);
    assert_rows(
        &column.rows("region/id"),
        cipher(&k2_only, &column),
        "k2",
        expected,
    );
    let again = column
        .run("rotate", &[("k2", true)], &[])
        .expect_success("pgward rotate, again");
    assert_eq!(counts(&again.stdout)["changed"], 0, "{}", again.stdout);
}

#[test]
fn interrupted_rotation_resumes_without_rewriting() {
    let column = Column::new("public.rot_resume", "secret", "randomized");
    create_table(
        "public.rot_resume",
        "id int PRIMARY KEY, secret text",
        "INSERT INTO rot_resume SELECT i, 'secret-' || i FROM generate_series(1, 5000) i;",
    );
    column
        .run("encrypt", &[("k1", true)], &[])
        .expect_success("pgward encrypt under k1");
    // Count every row update from now on, and slow each UPDATE statement down a little so
    // the runs below are still going when they are stopped.
    admin_psql(
        DATABASE,
        "CREATE TABLE rot_resume_updates (id int PRIMARY KEY, n int NOT NULL);
         ALTER TABLE rot_resume_updates OWNER TO app;
         CREATE FUNCTION rot_resume_count() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO rot_resume_updates VALUES (NEW.id, 1)
             ON CONFLICT (id) DO UPDATE SET n = rot_resume_updates.n + 1;
           RETURN NEW;
         END $$;
         CREATE FUNCTION rot_resume_slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.01); RETURN NULL; END $$;
         CREATE TRIGGER count_updates AFTER UPDATE ON rot_resume
           FOR EACH ROW EXECUTE FUNCTION rot_resume_count();
         CREATE TRIGGER slow_updates BEFORE UPDATE ON rot_resume
           FOR EACH STATEMENT EXECUTE FUNCTION rot_resume_slow();",
    );
    let keys = [("k2", true), ("k1", false)];
    let args = ["--batch-size", "10"];

    // First run: SIGINT once some batches are done. It finishes its batch and exits 130.
    let first = column.spawn("rotate", &keys, &args);
    wait_until(Duration::from_secs(60), "a checkpoint past 300", || {
        column
            .checkpoint("rotate")
            .is_some_and(|k| checkpoint_id(&k) >= 300)
    });
    first.signal(libc::SIGINT);
    let first = first.wait();
    assert_eq!(first.status.code(), Some(130), "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains("run the same command again to resume"),
        "{}",
        first.stderr
    );
    let stop1 = checkpoint_id(&column.checkpoint("rotate").expect("a saved checkpoint"));
    let scanned1 = counts(&first.stdout)["scanned"];
    assert_eq!(scanned1 as i64, stop1, "{}", first.stdout);
    let early = xmins("rot_resume", stop1);

    // Second run: resumes after the first, and is killed outright.
    let second = column.spawn("rotate", &keys, &args);
    wait_until(Duration::from_secs(60), "the second run's progress", || {
        column
            .checkpoint("rotate")
            .is_some_and(|k| checkpoint_id(&k) >= stop1 + 300)
    });
    second.signal(libc::SIGKILL);
    let second = second.wait();
    assert!(
        second
            .stderr
            .contains(&format!("resuming after (id)=({stop1})")),
        "{}",
        second.stderr
    );
    let stop2 = checkpoint_id(&column.checkpoint("rotate").expect("a saved checkpoint"));
    wait_for_backends_gone();

    // Third run: finishes from the second's checkpoint.
    let third = column
        .run(
            "rotate",
            &keys,
            &["--batch-size", "10", "--progress-interval", "200ms"],
        )
        .expect_success("the resumed pgward rotate");
    assert!(
        third.stderr.contains("rows/s, ETA"),
        "no progress line: {}",
        third.stderr
    );
    assert!(
        third
            .stderr
            .contains(&format!("resuming after (id)=({stop2})")),
        "{}",
        third.stderr
    );
    let n = counts(&third.stdout);
    assert_eq!(n["scanned"] as i64, 5000 - stop2, "{}", third.stdout);
    assert_eq!(column.checkpoint("rotate"), None);

    // Every row was rewritten exactly once over the three runs, and the rows of the first
    // run were not touched again.
    assert_eq!(
        admin_psql(
            DATABASE,
            "SELECT count(*), min(n), max(n) FROM rot_resume_updates"
        ),
        "5000|1|1"
    );
    assert_eq!(xmins("rot_resume", stop1), early);
    let crypto = column.crypto(&[("k2", true)]);
    assert_rows(&column.rows("id"), cipher(&crypto, &column), "k2", |id| {
        Some(format!("secret-{id}"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_win_over_the_rotation() {
    let column = Column::new("public.rot_race", "card", "randomized");
    create_table(
        "public.rot_race",
        "id int PRIMARY KEY, card text",
        "INSERT INTO rot_race SELECT i, 'card-' || i FROM generate_series(1, 3000) i;",
    );
    column
        .run("encrypt", &[("k1", true)], &[])
        .expect_success("pgward encrypt under k1");
    // Widen the window between a batch's read and its write.
    admin_psql(
        DATABASE,
        "CREATE FUNCTION rot_race_slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.005); RETURN NULL; END $$;
         CREATE TRIGGER slow_updates BEFORE UPDATE ON rot_race
           FOR EACH STATEMENT EXECUTE FUNCTION rot_race_slow();",
    );
    let keys = [("k2", true), ("k1", false)];
    let k2 = column.crypto(&keys);
    let cipher = cipher(&k2, &column);

    // A client transaction holds row 1 with a new value when the rotation starts: the
    // rotation reads the old value, waits for the row, and must then leave the new one.
    let holder = direct_postgres().await;
    holder.batch_execute("BEGIN").await.unwrap();
    let held = cipher.encrypt(b"held-1");
    holder
        .execute("UPDATE rot_race SET card = $1 WHERE id = 1", &[&held])
        .await
        .unwrap();
    let mut rotation = column.spawn("rotate", &keys, &["--batch-size", "20"]);
    let watcher = direct_postgres().await;
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE application_name = 'pgward rotate' AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while watcher
        .query_one(waiting, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            rotation.running(),
            "the rotation ended: {}",
            rotation.stderr()
        );
        assert!(
            Instant::now() < deadline,
            "the rotation never waited for row 1"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.batch_execute("COMMIT").await.unwrap();

    let client = direct_postgres().await;
    let update = client
        .prepare("UPDATE rot_race SET card = $1 WHERE id = $2")
        .await
        .unwrap();
    // What each row written here must hold in the end.
    let mut written: HashMap<i32, String> = HashMap::from([(1, "held-1".to_owned())]);
    let mut n = 0u32;
    while rotation.running() {
        n += 1;
        let id = rand::random::<i32>().rem_euclid(3000) + 1;
        let plain = format!("written-{id}-{n}");
        let envelope = cipher.encrypt(plain.as_bytes());
        client.execute(&update, &[&envelope, &id]).await.unwrap();
        written.insert(id, plain);
    }
    let finished = rotation.wait().expect_success("pgward rotate");
    let counted = counts(&finished.stdout);
    eprintln!(
        "{} writes to {} rows during the rotation; {}",
        n,
        written.len(),
        finished.stdout.trim()
    );
    assert!(written.len() > 1, "no write happened during the rotation");
    assert_eq!(counted["scanned"], 3000);
    assert!(counted["skipped"] >= 1, "{}", finished.stdout);
    assert_rows(&column.rows("id"), cipher, "k2", |id| {
        let id: i32 = id.parse().unwrap();
        Some(
            written
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("card-{id}")),
        )
    });
}

#[test]
fn refuses_what_it_cannot_do() {
    create_table(
        "public.rot_refuse",
        "id int, secret text, amount int",
        "INSERT INTO rot_refuse VALUES (1, 'x', 1);",
    );
    let keys = [("k1", true)];

    let no_pk = Column::new("public.rot_refuse", "secret", "randomized");
    let finished = no_pk.run("encrypt", &keys, &[]);
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("public.rot_refuse has no primary key"),
        "{}",
        finished.stderr
    );

    let not_text = Column::new("public.rot_refuse", "amount", "randomized");
    let finished = not_text.run("encrypt", &keys, &[]);
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("is of type integer"),
        "{}",
        finished.stderr
    );

    // Designated: secret; asked for: amount.
    let mut command = no_pk.command_for("encrypt", &keys, "public.rot_refuse", "amount", &[]);
    let finished = common::run_program(&mut command, RUN_TIMEOUT);
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("public.rot_refuse.amount is not a designated column"),
        "{}",
        finished.stderr
    );

    let missing = Column::new("public.rot_missing", "secret", "randomized");
    let finished = missing.run("rotate", &keys, &[]);
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("does not exist"),
        "{}",
        finished.stderr
    );
}

/// The rotation a user runs: clients keep reading and writing through pgward while
/// `pgward rotate` moves every row from k1 to k2; every read is right during and after, and
/// once k1 is removed from the config everything still decrypts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_read_and_write_through_pgward_during_a_rotation() {
    const ROWS: i64 = 3000;
    let column = Column::new("public.rot_live", "secret", "deterministic");
    create_table("public.rot_live", "id int PRIMARY KEY, secret text", "");
    let pgward = column.proxy_config(&[("k1", true)]).start();
    let client = pgward.connect().await;
    let values: Vec<String> = (1..=ROWS).map(|i| format!("'value-{i}'")).collect();
    for chunk in (1..=ROWS).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| format!("({i}, {})", values[*i as usize - 1]))
            .collect();
        let sql = format!("INSERT INTO rot_live VALUES {}", rows.join(", "));
        client
            .batch_execute(&sql)
            .await
            .expect("insert through pgward");
    }
    // pgward now encrypts under k2 and still reads k1; then the rows move.
    pgward.reload(&column.proxy_config(&[("k2", true), ("k1", false)]).toml());
    let mut rotation = column.spawn(
        "rotate",
        &[("k2", true), ("k1", false)],
        &["--batch-size", "20"],
    );

    // While it runs: every row reads back as what was last written to it, by the value
    // itself (equality on either key) and in full; some rows are rewritten meanwhile.
    let mut expected: HashMap<i64, String> =
        (1..=ROWS).map(|i| (i, format!("value-{i}"))).collect();
    let lookup = client
        .prepare("SELECT id FROM rot_live WHERE secret = $1")
        .await
        .expect("prepare");
    let mut round = 0;
    while rotation.running() || round < 3 {
        round += 1;
        let id = 1 + (round * 37) % ROWS;
        let new_value = format!("rewritten-{round}");
        client
            .execute(
                "UPDATE rot_live SET secret = $1 WHERE id = $2",
                &[&new_value, &(id as i32)],
            )
            .await
            .expect("update through pgward");
        expected.insert(id, new_value.clone());
        let found = client.query(&lookup, &[&new_value]).await.expect("lookup");
        assert_eq!(found.len(), 1, "round {round}: {new_value} found once");
        let probe = 1 + (round * 101) % ROWS;
        let found = client
            .query(&lookup, &[&expected[&probe]])
            .await
            .expect("lookup");
        assert!(
            found.iter().any(|r| r.get::<_, i32>(0) as i64 == probe),
            "round {round}: row {probe} found by its value during the rotation"
        );
        if round % 10 == 0 {
            let all = client
                .query("SELECT id, secret FROM rot_live", &[])
                .await
                .expect("read all");
            assert_eq!(all.len() as i64, ROWS);
            for row in all {
                let id = row.get::<_, i32>(0) as i64;
                assert_eq!(row.get::<_, String>(1), expected[&id], "row {id}");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finished = rotation.wait();
    assert!(
        finished.status.success(),
        "rotate failed: {}",
        finished.stderr
    );
    assert!(
        round > 10,
        "the clients ran only {round} rounds during the rotation"
    );

    // Every row is under k2 now: a config without k1 still reads everything right.
    let crypto = column.crypto(&[("k2", true)]);
    assert_rows(&column.rows("id"), cipher(&crypto, &column), "k2", |k| {
        Some(expected[&k.parse::<i64>().unwrap()].clone())
    });
    pgward.reload(&column.proxy_config(&[("k2", true)]).toml());
    let client = pgward.connect().await;
    let all = client
        .query("SELECT id, secret FROM rot_live", &[])
        .await
        .expect("read all with k2 only");
    assert_eq!(all.len() as i64, ROWS);
    for row in all {
        let id = row.get::<_, i32>(0) as i64;
        assert_eq!(
            row.get::<_, String>(1),
            expected[&id],
            "row {id} with k2 only"
        );
    }
}

/// Encryption turned on by a reload applies to a client connected before it: its next
/// write reaches PostgreSQL as ciphertext, and it reads the plaintext back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_turns_encryption_on_applies_to_connected_clients() {
    let column = Column::new("public.rot_switch", "secret", "deterministic");
    create_table("public.rot_switch", "id int PRIMARY KEY, secret text", "");
    let pgward = column.proxy.clone().start();
    let client = pgward.connect().await;
    client
        .batch_execute("INSERT INTO rot_switch VALUES (1, 'before')")
        .await
        .expect("insert without encryption");
    pgward.reload(&column.proxy_config(&[("k1", true)]).toml());
    client
        .execute(
            "INSERT INTO rot_switch VALUES ($1, $2)",
            &[&2i32, &"after-extended"],
        )
        .await
        .expect("extended insert after the reload");
    client
        .batch_execute("INSERT INTO rot_switch VALUES (3, 'after-simple')")
        .await
        .expect("simple insert after the reload");

    let direct = direct_postgres().await;
    let stored: Vec<(i32, String)> = direct
        .query("SELECT id, secret FROM rot_switch ORDER BY id", &[])
        .await
        .expect("reading the table directly")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stored[0], (1, "before".to_owned()));
    for (id, secret) in &stored[1..] {
        assert!(
            secret.starts_with("pgw1:k1:"),
            "row {id} reached PostgreSQL as {secret}"
        );
    }
    let read: Vec<String> = client
        .query(
            "SELECT secret FROM rot_switch WHERE id > 1 ORDER BY id",
            &[],
        )
        .await
        .expect("reading through pgward")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(read, ["after-extended", "after-simple"]);
}
