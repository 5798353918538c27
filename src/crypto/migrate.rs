//! `pgward encrypt` and `pgward rotate`: bring the rows already in a designated column to
//! the state pgward writes them in, online.
//!
//! Both walk the table in primary-key order over a connection of their own to the primary,
//! one short transaction per batch: read the next rows after the last key (keyset
//! pagination), compute the new envelope of each row that needs one, write those back with a
//! guarded UPDATE and save the last key read as a checkpoint, then commit. The guard
//! (`col IS NOT DISTINCT FROM <value read>`) makes a concurrent write win: a row a client
//! changed since the read is skipped, not overwritten, and a client writing through pgward
//! already writes under the active key.
//!
//! A row already done is never written, so any run can be stopped and started again; the
//! checkpoint (table `pgward_migration`) only spares a restarted run the rows it has read
//! already. A finished run deletes its checkpoint.
//!
//! Nothing here prints a value of the column or anything of a key: rows are named by their
//! primary key, which may not be the designated column itself.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use thiserror::Error;

use super::{looks_like_envelope, parse_envelope, ColumnCipher, ColumnId, Crypto, CryptoError};
use crate::config::{identifier, schema_table, BackendRole, Config};
use crate::pool::server::{quote_ident, quote_literal};
use crate::pool::{BackendTarget, Credential, ServerConn, ServerError};

/// The table that keeps each run's checkpoint, in `Options::state_schema`.
pub const STATE_TABLE: &str = "pgward_migration";

/// A table with at most this many rows by its statistics is counted exactly for the progress
/// bar; a larger one shows the planner's estimate.
const EXACT_COUNT_BELOW: i64 = 1_000_000;

/// At most this many rows of each kind are named in reports; the summary counts them all.
const REPORTED_ROWS: u64 = 10;

/// Bound parameters per UPDATE (the protocol's count is 16 bits); a larger batch is written
/// with several UPDATEs in its one transaction.
const MAX_PARAMS: usize = 32_000;

/// How long a run waits for another run on the same column to let go of it.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Namespace of pgward's advisory locks (`pgwd`): one per column, so two runs on the same
/// column do not race, and key 0 for creating the state table.
const LOCK_SPACE: i32 = 0x7067_7764;

/// What a run does to the rows of the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Plaintext (non-NULL, not an envelope) becomes an envelope under the active key.
    Encrypt,
    /// Envelopes under another key (or in the column's other mode) are re-encrypted under
    /// the active key, in the column's mode.
    Rotate,
}

impl Operation {
    /// As the subcommand and the checkpoint's `operation` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Rotate => "rotate",
        }
    }
}

/// One run, as the command line gives it.
#[derive(Debug, Clone)]
pub struct Options {
    pub operation: Operation,
    /// `schema.table`, or `table` in schema `public`; folded as PostgreSQL folds names.
    pub table: String,
    pub column: String,
    /// Rows read per transaction.
    pub batch_size: usize,
    /// The PostgreSQL login; None: the first `[[users]]` entry's backend login.
    pub user: Option<String>,
    /// None: the login's name, as libpq does.
    pub database: Option<String>,
    /// Password for a login no `[[users]]` entry has (PGPASSWORD on the command line).
    pub password: Option<String>,
    /// Where `pgward_migration` lives.
    pub state_schema: String,
    /// Forget the checkpoint and start from the first row.
    pub restart: bool,
    /// Without a terminal on stderr, a plain progress line this often (with one, a bar).
    pub progress_interval: Duration,
}

/// What a run saw and did. Every row read is counted once in `scanned`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `schema.table.column`
    pub column: String,
    pub scanned: u64,
    /// Rows written with a new envelope.
    pub changed: u64,
    /// Rows that needed work but had changed since they were read (the guard kept the newer
    /// value).
    pub skipped: u64,
    /// `rotate`: values that are not envelopes, left as they are (`encrypt` handles them).
    pub not_envelope: u64,
    /// `rotate`: envelopes that did not decrypt with any configured key, left as they are.
    pub undecryptable: u64,
    /// The run stopped on SIGINT/SIGTERM after a committed batch; the checkpoint holds its
    /// place.
    pub interrupted: bool,
    /// The checkpoint: the last primary key read (or resumed after), as `(k)=(v)`; None
    /// before the first batch.
    pub last_key: Option<String>,
}

impl Summary {
    /// The closing line: counts only, never a value.
    pub fn line(&self, operation: Operation) -> String {
        let column = &self.column;
        let mut line = format!(
            "pgward {} {column}: {} rows scanned, {} changed, {} skipped (changed concurrently)",
            operation.as_str(),
            self.scanned,
            self.changed,
            self.skipped
        );
        if operation == Operation::Rotate {
            let _ = write!(
                line,
                ", {} not encrypted (left as they are: run pgward encrypt for them), {} undecryptable",
                self.not_envelope, self.undecryptable
            );
        }
        line
    }
}

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("the configuration designates no encrypted column ([[encryption.columns]])")]
    NoDesignatedColumns,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    BadName(String),
    #[error("{0} is not a designated column: add it to [[encryption.columns]] first")]
    NotDesignated(String),
    #[error("{0}")]
    Login(String),
    #[error("{0}")]
    Backend(String),
    #[error("{context}: {error}")]
    Server { context: String, error: ServerError },
    #[error("{0}")]
    Table(String),
    #[error("another pgward encrypt or rotate is running on {0}")]
    Busy(String),
    /// A batch failed; the ones before it are committed and checkpointed.
    #[error("{error}\n({saved}: run the same command again to resume)")]
    Stopped {
        error: Box<MigrateError>,
        saved: String,
    },
}

/// Set on SIGINT/SIGTERM: the run stops after the batch under way has committed.
pub type StopFlag = Arc<AtomicBool>;

/// A flag the first SIGINT or SIGTERM sets (the run then stops after the batch under way);
/// a second one exits at once, and the server rolls back the batch under way. Call it inside
/// the runtime.
pub fn stop_on_signals() -> std::io::Result<StopFlag> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = StopFlag::default();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let flag = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "pgward: stopped; the batch under way is rolled back, the ones before are \
                     saved: run the same command again to resume"
                );
                std::process::exit(130);
            }
            eprintln!(
                "pgward: stopping after the batch under way (interrupt again to stop at once)"
            );
        }
    });
    Ok(stop)
}

fn server(context: impl Into<String>) -> impl FnOnce(ServerError) -> MigrateError {
    let context = context.into();
    move |error| MigrateError::Server { context, error }
}

/// `(schema, table)` of `--table`: `schema.table`, or `table` in `public`.
pub fn parse_table(name: &str) -> Result<(String, String), MigrateError> {
    match identifier(name) {
        Ok(table) => Ok(("public".into(), table)),
        Err(_) => schema_table(name).map_err(MigrateError::BadName),
    }
}

/// The keyring and the designated column a run works on; errors when the column is not
/// designated in the configuration.
pub fn designated_column(
    config: &Config,
    table: &str,
    column: &str,
) -> Result<(Arc<Crypto>, ColumnId), MigrateError> {
    let (schema, table) = parse_table(table)?;
    let column =
        identifier(column).map_err(|e| MigrateError::BadName(format!("column {column:?}: {e}")))?;
    let crypto = Crypto::from_config(&config.encryption, config.base_dir())?
        .ok_or(MigrateError::NoDesignatedColumns)?;
    let id = crypto
        .id_of(&schema, &table, &column)
        .ok_or_else(|| MigrateError::NotDesignated(format!("{schema}.{table}.{column}")))?;
    Ok((crypto, id))
}

/// The login a run uses: `--user` (its password from a `[[users]]` entry with that backend
/// login, else `fallback_password`), or the first `[[users]]` entry's backend login.
pub fn login(
    config: &Config,
    user: Option<&str>,
    fallback_password: Option<&str>,
) -> Result<(String, Credential), MigrateError> {
    let entry = match user {
        Some(user) => config.users.iter().find(|u| u.backend_user() == user),
        None => config.users.first(),
    };
    let name = match (user, entry) {
        (Some(user), _) => user.to_owned(),
        (None, Some(entry)) => entry.backend_user().to_owned(),
        (None, None) => {
            return Err(MigrateError::Login(
                "no [[users]] entry to take the PostgreSQL login from: give --user".into(),
            ))
        }
    };
    let password = entry
        .and_then(|e| e.backend_password())
        .or(fallback_password);
    Ok((name, Credential::password(password)))
}

/// A connection to the primary: the first `role = "primary"` backend, else the first `auto`
/// one that is not in recovery.
pub async fn connect_primary(
    config: &Config,
    user: &str,
    credential: &Credential,
    database: &str,
) -> Result<ServerConn, MigrateError> {
    let timeout = config.pool.connect_timeout;
    let primaries = config
        .backends
        .iter()
        .filter(|b| b.role == BackendRole::Primary);
    let autos = config
        .backends
        .iter()
        .filter(|b| b.role == BackendRole::Auto);
    let candidates: Vec<_> = match config
        .backends
        .iter()
        .any(|b| b.role == BackendRole::Primary)
    {
        true => primaries.take(1).collect(),
        false => autos.collect(),
    };
    if candidates.is_empty() {
        return Err(MigrateError::Backend(
            "no [[backends]] entry has role = \"primary\" or \"auto\"".into(),
        ));
    }
    let mut tried = Vec::new();
    for backend in candidates {
        let target = BackendTarget::from_config(backend)
            .map_err(|e| MigrateError::Backend(format!("backend {:?}: {e}", backend.name)))?;
        let place = format!(
            "backend {:?} ({}:{}) as {user:?}, database {database:?}",
            backend.name, backend.host, backend.port
        );
        let connected = tokio::time::timeout(
            timeout,
            ServerConn::connect(Arc::new(target), user, credential, database),
        )
        .await
        .unwrap_or(Err(ServerError::Timeout));
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) if backend.role == BackendRole::Primary => {
                return Err(server(format!("connecting to {place}"))(e))
            }
            Err(e) => {
                tried.push(format!("{place}: {e}"));
                continue;
            }
        };
        let rows = conn
            .internal_query("SELECT pg_catalog.pg_is_in_recovery()")
            .await
            .map_err(server(format!("asking {place} whether it is a replica")))?;
        let in_recovery = rows
            .first()
            .and_then(|r| r.first())
            .is_some_and(|v| v.as_deref() == Some("t"));
        if !in_recovery {
            return Ok(conn);
        }
        if backend.role == BackendRole::Primary {
            return Err(MigrateError::Backend(format!(
                "{place} is in recovery (a replica): the rows can only be written on the primary"
            )));
        }
        tried.push(format!("{place}: in recovery"));
    }
    Err(MigrateError::Backend(format!(
        "no auto backend is a reachable primary ({})",
        tried.join("; ")
    )))
}

/// The table as the run needs it, read from the catalog.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub oid: u32,
    /// `"schema"."table"`
    pub quoted: String,
    /// `schema.table.column`, for messages.
    pub display: String,
    /// `"column"`
    pub column: String,
    /// The primary key's columns in key order: (quoted name, type to cast parameters to).
    pub key: Vec<(String, String)>,
    /// The primary key's column names, for messages.
    pub key_names: Vec<String>,
}

impl TableInfo {
    /// Reads the table, checks the column is text and not part of the primary key, and
    /// reads the primary key.
    pub async fn read(
        conn: &mut ServerConn,
        cipher: &ColumnCipher,
    ) -> Result<TableInfo, MigrateError> {
        let display = cipher.name().to_owned();
        let (schema, table, column) = (cipher.schema(), cipher.table(), cipher.column());
        let rows = conn
            .query_params(
                "SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[Some(schema), Some(table)],
            )
            .await
            .map_err(server(format!("looking up table {schema}.{table}")))?;
        let Some([Some(oid), Some(kind)]) = rows.first().map(Vec::as_slice) else {
            return Err(MigrateError::Table(format!(
                "table {schema}.{table} does not exist (or this login cannot see it)"
            )));
        };
        if kind != "r" && kind != "p" {
            return Err(MigrateError::Table(format!(
                "{schema}.{table} is not a table (relkind {kind})"
            )));
        }
        let oid: u32 = oid
            .parse()
            .map_err(|_| MigrateError::Table(format!("odd OID for {schema}.{table}")))?;
        let oid_text = oid.to_string();

        let rows = conn
            .query_params(
                "SELECT a.atttypid::pg_catalog.regtype::text FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = $1::oid AND a.attname = $2 AND a.attnum > 0 \
                 AND NOT a.attisdropped",
                &[Some(&oid_text), Some(column)],
            )
            .await
            .map_err(server(format!("looking up column {display}")))?;
        let Some(Some(column_type)) = rows.first().and_then(|r| r.first()) else {
            return Err(MigrateError::Table(format!(
                "column {display} does not exist"
            )));
        };
        if column_type != "text" && column_type != "character varying" {
            return Err(MigrateError::Table(format!(
                "column {display} is of type {column_type}: designated columns hold \
                 ciphertext as text (ALTER TABLE ... ALTER COLUMN ... TYPE text first)"
            )));
        }

        let rows = conn
            .query_params(
                "SELECT a.attname, a.atttypid::pg_catalog.regtype::text \
                 FROM pg_catalog.pg_index i \
                 CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord",
                &[Some(&oid_text)],
            )
            .await
            .map_err(server(format!(
                "reading the primary key of {schema}.{table}"
            )))?;
        let mut key = Vec::new();
        let mut key_names = Vec::new();
        for row in rows {
            let (Some(Some(name)), Some(Some(ty))) = (row.first(), row.get(1)) else {
                continue;
            };
            if name == column {
                return Err(MigrateError::Table(format!(
                    "{display} is part of the primary key of {schema}.{table}: the rows are \
                     walked in key order, so the key itself cannot be rewritten"
                )));
            }
            key.push((quote_ident(name), ty.clone()));
            key_names.push(name.clone());
        }
        if key.is_empty() {
            return Err(MigrateError::Table(format!(
                "{schema}.{table} has no primary key: encrypt and rotate walk a table in \
                 primary-key order (add one, e.g. ALTER TABLE ... ADD PRIMARY KEY (id))"
            )));
        }
        Ok(TableInfo {
            oid,
            quoted: format!("{}.{}", quote_ident(schema), quote_ident(table)),
            display,
            column: quote_ident(column),
            key,
            key_names,
        })
    }

    /// `(a, b)=(1, x)`, the way PostgreSQL names a row by its key in messages.
    pub fn describe_key(&self, values: &[String]) -> String {
        format!("({})=({})", self.key_names.join(", "), values.join(", "))
    }

    /// `("a", "b")`
    fn key_list(&self) -> String {
        let names: Vec<&str> = self.key.iter().map(|(n, _)| n.as_str()).collect();
        names.join(", ")
    }

    /// `($1::integer, $2::text)`, parameters from `$first`.
    fn key_params(&self, first: usize) -> String {
        let params: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${}::{ty}", first + i))
            .collect();
        params.join(", ")
    }

    /// The next `limit` rows after a key (or from the start): key columns, then the column.
    fn select_sql(&self, after: bool, limit: usize) -> String {
        let keys = self.key_list();
        let mut sql = format!("SELECT {keys}, {} FROM {}", self.column, self.quoted);
        if after {
            let _ = write!(sql, " WHERE ({keys}) > ({})", self.key_params(1));
        }
        let _ = write!(sql, " ORDER BY {keys} LIMIT {limit}");
        sql
    }

    /// A guarded UPDATE of `rows` rows; parameters per row: key values, value read, new
    /// value. Returns one row per row written.
    fn update_sql(&self, rows: usize) -> String {
        let per_row = self.key.len() + 2;
        let mut values = String::new();
        for r in 0..rows {
            let first = r * per_row + 1;
            let old = first + self.key.len();
            let _ = write!(
                values,
                "{}({}, ${old}::text, ${}::text)",
                if r == 0 { "" } else { ", " },
                self.key_params(first),
                old + 1
            );
        }
        let names: Vec<String> = (0..self.key.len()).map(|i| format!("k{i}")).collect();
        let matches: Vec<String> = self
            .key
            .iter()
            .zip(&names)
            .map(|((column, _), v)| format!("t.{column} = v.{v}"))
            .collect();
        format!(
            "UPDATE {table} AS t SET {col} = v.new_value FROM (VALUES {values}) \
             AS v({names}, old_value, new_value) \
             WHERE {matches} AND t.{col} IS NOT DISTINCT FROM v.old_value RETURNING 1",
            table = self.quoted,
            col = self.column,
            names = names.join(", "),
            matches = matches.join(" AND "),
        )
    }
}

/// The checkpoint table, `"schema".pgward_migration`.
struct StateTable {
    quoted: String,
    /// Identifies the run's row.
    table_name: String,
    column_name: String,
    operation: &'static str,
    /// The active key and mode the run writes under: a rotation resumes only toward the same.
    target: String,
}

impl StateTable {
    async fn create(conn: &mut ServerConn, schema: &str) -> Result<String, MigrateError> {
        let quoted = format!("{}.{STATE_TABLE}", quote_ident(schema));
        let sql = format!(
            "BEGIN; SELECT pg_catalog.pg_advisory_xact_lock({LOCK_SPACE}, 0); \
             CREATE TABLE IF NOT EXISTS {quoted} (\
               table_name text NOT NULL, column_name text NOT NULL, operation text NOT NULL, \
               last_key text, target text, \
               started_at timestamptz NOT NULL DEFAULT pg_catalog.now(), \
               updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(), \
               PRIMARY KEY (table_name, column_name, operation)); COMMIT"
        );
        if let Err(e) = conn.internal_query(&sql).await {
            let _ = conn.internal_query("ROLLBACK").await;
            return Err(server(format!(
                "creating the progress table {schema}.{STATE_TABLE} (give --state-schema a \
                 schema this login may create tables in)"
            ))(e));
        }
        Ok(quoted)
    }

    fn params(&self) -> [Option<&str>; 3] {
        [
            Some(&self.table_name),
            Some(&self.column_name),
            Some(self.operation),
        ]
    }

    /// The saved last key, if there is a checkpoint toward the same target with a key of
    /// `key_len` columns; else None and the reason it is ignored.
    async fn load(
        &self,
        conn: &mut ServerConn,
        key_len: usize,
    ) -> Result<(Option<Vec<String>>, Option<&'static str>), MigrateError> {
        let sql = format!(
            "SELECT m.target, k.v FROM {} m \
             LEFT JOIN LATERAL pg_catalog.unnest(m.last_key::text[]) WITH ORDINALITY AS k(v, n) ON true \
             WHERE m.table_name = $1 AND m.column_name = $2 AND m.operation = $3 ORDER BY k.n",
            self.quoted
        );
        let rows = conn
            .query_params(&sql, &self.params())
            .await
            .map_err(server("reading the checkpoint"))?;
        if rows.is_empty() {
            return Ok((None, None));
        }
        if rows[0].first().cloned().flatten().as_deref() != Some(self.target.as_str()) {
            return Ok((
                None,
                Some("it was written toward another key or mode; starting from the first row"),
            ));
        }
        let key: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.get(1).cloned().flatten())
            .collect();
        if key.len() != key_len {
            return Ok((
                None,
                Some("the primary key has changed since; starting from the first row"),
            ));
        }
        Ok((Some(key), None))
    }

    /// Upserts the checkpoint (inside the batch's transaction).
    async fn save(&self, conn: &mut ServerConn, key: &[String]) -> Result<(), MigrateError> {
        let elements: Vec<String> = (0..key.len()).map(|i| format!("${}", i + 5)).collect();
        let sql = format!(
            "INSERT INTO {} AS m (table_name, column_name, operation, target, last_key) \
             VALUES ($1, $2, $3, $4, ARRAY[{}]::text[]::text) \
             ON CONFLICT (table_name, column_name, operation) DO UPDATE \
             SET last_key = EXCLUDED.last_key, target = EXCLUDED.target, updated_at = pg_catalog.now()",
            self.quoted,
            elements.join(", ")
        );
        let mut params: Vec<Option<&str>> = self.params().to_vec();
        params.push(Some(&self.target));
        params.extend(key.iter().map(|k| Some(k.as_str())));
        conn.query_params(&sql, &params)
            .await
            .map_err(server("saving the checkpoint"))?;
        Ok(())
    }

    async fn delete(&self, conn: &mut ServerConn) -> Result<(), MigrateError> {
        let sql = format!(
            "DELETE FROM {} WHERE table_name = $1 AND column_name = $2 AND operation = $3",
            self.quoted
        );
        conn.query_params(&sql, &self.params())
            .await
            .map_err(server("deleting the checkpoint"))?;
        Ok(())
    }
}

/// Where the run reports: an indicatif bar on a terminal, else a plain line now and then.
struct Progress {
    bar: Option<ProgressBar>,
    /// Without a bar, a line this often.
    interval: Duration,
    label: String,
    total: u64,
    /// Rows read before this run (a resumed run's start), part of `position`.
    resumed_at: u64,
    position: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// `label` names the run in plain lines, `short_label` on the bar.
    fn new(
        label: String,
        short_label: &'static str,
        total: u64,
        position: u64,
        terminal: bool,
        interval: Duration,
    ) -> Progress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:25}] {human_pos}/{human_len} rows ({percent}%), {rate}, ETA {eta}, {msg}",
            )
            .expect("a valid template")
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", state.per_sec());
            })
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(short_label);
            bar.set_position(position);
            bar.reset_eta();
            bar
        });
        Progress {
            bar,
            interval,
            label,
            total,
            resumed_at: position,
            position,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn advance(&mut self, rows: u64, summary: &Summary) {
        self.position += rows;
        if self.position > self.total {
            self.total = self.position;
        }
        match &self.bar {
            Some(bar) => {
                bar.set_length(self.total);
                bar.set_position(self.position);
                bar.set_message(format!("{} changed", summary.changed));
            }
            None if self.last_line.elapsed() >= self.interval => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line(summary));
            }
            None => {}
        }
    }

    /// `label: 1200/5000 rows (24%), 300 changed, 450 rows/s, ETA 8s`
    fn line(&self, summary: &Summary) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (self.position - self.resumed_at) as f64 / elapsed;
        let left = self.total.saturating_sub(self.position) as f64;
        let eta = if rate > 0.0 {
            humantime::format_duration(Duration::from_secs((left / rate).ceil() as u64)).to_string()
        } else {
            "unknown".into()
        };
        let percent = self.position * 100 / self.total.max(1);
        format!(
            "{}: {}/{} rows ({percent}%), {} changed, {rate:.0} rows/s, ETA {eta}",
            self.label, self.position, self.total, summary.changed
        )
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Rows of one batch that need a new envelope: key values, value read, new value.
type Work = Vec<(Vec<String>, String, String)>;

/// One migration: the column, the connection, what has been done.
struct Run<'a> {
    operation: Operation,
    cipher: &'a ColumnCipher,
    active_key: &'a str,
    table: TableInfo,
    state: StateTable,
    conn: ServerConn,
    batch_size: usize,
    summary: Summary,
}

impl Run<'_> {
    /// Reads, rewrites and checkpoints one batch in one transaction. Returns the last key
    /// read (None when the table has no more rows).
    async fn batch(
        &mut self,
        after: Option<&[String]>,
        progress: &Progress,
    ) -> Result<Option<Vec<String>>, MigrateError> {
        self.conn
            .internal_query("BEGIN")
            .await
            .map_err(server("starting a batch"))?;
        match self.batch_in_transaction(after, progress).await {
            Ok(last) => {
                let context = match &last {
                    Some(key) => format!("committing the batch up to {}", self.describe(key)),
                    None => "committing the last batch".to_owned(),
                };
                self.conn
                    .internal_query("COMMIT")
                    .await
                    .map_err(server(context))?;
                Ok(last)
            }
            Err(e) => {
                let _ = self.conn.internal_query("ROLLBACK").await;
                Err(e)
            }
        }
    }

    fn describe(&self, key: &[String]) -> String {
        self.table.describe_key(key)
    }

    async fn batch_in_transaction(
        &mut self,
        after: Option<&[String]>,
        progress: &Progress,
    ) -> Result<Option<Vec<String>>, MigrateError> {
        let sql = self.table.select_sql(after.is_some(), self.batch_size);
        let params: Vec<Option<&str>> = after
            .unwrap_or_default()
            .iter()
            .map(|k| Some(k.as_str()))
            .collect();
        let context = match after {
            Some(key) => format!("reading the rows after {}", self.describe(key)),
            None => "reading the first rows".to_owned(),
        };
        let rows = self
            .conn
            .query_params(&sql, &params)
            .await
            .map_err(server(context))?;
        let key_len = self.table.key.len();
        let mut last = None;
        let mut work: Work = Vec::new();
        for mut row in rows {
            let value = row.pop().flatten();
            let key: Vec<String> = row.into_iter().map(Option::unwrap_or_default).collect();
            debug_assert_eq!(key.len(), key_len);
            self.summary.scanned += 1;
            if let Some(value) = value {
                if let Some(new) = self.new_value(&key, &value, progress) {
                    work.push((key.clone(), value, new));
                }
            }
            last = Some(key);
        }
        let Some(last) = last else {
            return Ok(None);
        };

        let per_update = (MAX_PARAMS / (key_len + 2)).max(1);
        for chunk in work.chunks(per_update) {
            let sql = self.table.update_sql(chunk.len());
            let mut params = Vec::with_capacity(chunk.len() * (key_len + 2));
            for (key, old, new) in chunk {
                params.extend(key.iter().map(|k| Some(k.as_str())));
                params.push(Some(old.as_str()));
                params.push(Some(new.as_str()));
            }
            let first = &chunk[0].0;
            let end = &chunk[chunk.len() - 1].0;
            let context = format!(
                "writing the rows from {} to {}",
                self.describe(first),
                self.describe(end)
            );
            let written = self
                .conn
                .query_params(&sql, &params)
                .await
                .map_err(server(context))?
                .len() as u64;
            self.summary.changed += written;
            self.summary.skipped += chunk.len() as u64 - written.min(chunk.len() as u64);
        }
        self.state.save(&mut self.conn, &last).await?;
        Ok(Some(last))
    }

    /// The envelope a stored value should become, or None when the row is done (or is left
    /// as it is, with a report).
    fn new_value(&mut self, key: &[String], value: &str, progress: &Progress) -> Option<String> {
        let stored = value.as_bytes();
        match self.operation {
            Operation::Encrypt => {
                (!looks_like_envelope(stored)).then(|| self.cipher.encrypt(stored))
            }
            Operation::Rotate => {
                let envelope = parse_envelope(stored).filter(|_| looks_like_envelope(stored));
                let Some(envelope) = envelope else {
                    self.summary.not_envelope += 1;
                    if self.summary.not_envelope <= REPORTED_ROWS {
                        progress.note(&format!(
                            "{} at {} is not a pgward ciphertext: left as it is (pgward encrypt \
                             encrypts such values)",
                            self.cipher.name(),
                            self.describe(key)
                        ));
                    }
                    return None;
                };
                if envelope.key_id == self.active_key && envelope.mode == self.cipher.mode() {
                    return None;
                }
                match self.cipher.decrypt(stored) {
                    Ok(plaintext) => Some(self.cipher.encrypt(&plaintext)),
                    Err(e) => {
                        self.summary.undecryptable += 1;
                        if self.summary.undecryptable <= REPORTED_ROWS {
                            progress
                                .note(&format!("{e} (row {}): left as it is", self.describe(key)));
                        }
                        None
                    }
                }
            }
        }
    }
}

/// Runs `options` against the primary of `config` until the table is done or `stop` is set
/// (then after the batch under way). Progress goes to stderr.
pub async fn run(
    config: &Config,
    options: &Options,
    stop: StopFlag,
) -> Result<Summary, MigrateError> {
    let (crypto, id) = designated_column(config, &options.table, &options.column)?;
    let cipher = crypto.by_id(id);
    let (user, credential) = login(config, options.user.as_deref(), options.password.as_deref())?;
    let database = options.database.clone().unwrap_or_else(|| user.clone());
    let mut conn = connect_primary(config, &user, &credential, &database).await?;
    // Values travel as UTF-8 whatever the server's encoding; pgward encrypts them as such.
    conn.internal_query(&format!(
        "SET client_encoding = 'UTF8'; SET application_name = {}",
        quote_literal(&format!("pgward {}", options.operation.as_str()))
    ))
    .await
    .map_err(server("setting up the session"))?;

    let table = TableInfo::read(&mut conn, cipher).await?;
    take_column_lock(&mut conn, cipher.name()).await?;

    let state_quoted = StateTable::create(&mut conn, &options.state_schema).await?;
    let state = StateTable {
        quoted: state_quoted,
        table_name: format!("{}.{}", cipher.schema(), cipher.table()),
        column_name: cipher.column().to_owned(),
        operation: options.operation.as_str(),
        target: format!("{}/{}", crypto.active_key_id(), cipher.mode().as_str()),
    };
    let label = format!("pgward {} {}", options.operation.as_str(), cipher.name());
    if options.restart {
        state.delete(&mut conn).await?;
    }
    let (mut after, ignored) = state.load(&mut conn, table.key.len()).await?;
    if let Some(reason) = ignored {
        eprintln!("{label}: a saved checkpoint is ignored: {reason}");
    }

    let (total, done_before) = count_rows(&mut conn, &table, after.as_deref()).await?;
    let estimate = if total.exact { "" } else { "about " };
    let mut start = format!(
        "{label}: {estimate}{} rows, batches of {}, writing under key {:?} ({}) on backend {:?}",
        total.rows,
        options.batch_size,
        crypto.active_key_id(),
        cipher.mode().as_str(),
        conn.backend.name
    );
    if let Some(key) = &after {
        let _ = write!(start, "; resuming after {}", table.describe_key(key));
    }
    eprintln!("{start}");

    let mut progress = Progress::new(
        label.clone(),
        options.operation.as_str(),
        total.rows,
        done_before,
        std::io::stderr().is_terminal(),
        options.progress_interval,
    );
    let resumed_after = after.as_ref().map(|key| table.describe_key(key));
    let mut run = Run {
        operation: options.operation,
        cipher,
        active_key: crypto.active_key_id(),
        table,
        state,
        conn,
        batch_size: options.batch_size.max(1),
        summary: Summary {
            column: cipher.name().to_owned(),
            last_key: resumed_after,
            ..Summary::default()
        },
    };
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            run.summary.interrupted = true;
            break Ok(());
        }
        let scanned_before = run.summary.scanned;
        match run.batch(after.as_deref(), &progress).await {
            Ok(Some(last)) => {
                progress.advance(run.summary.scanned - scanned_before, &run.summary);
                run.summary.last_key = Some(run.table.describe_key(&last));
                after = Some(last);
            }
            Ok(None) => break run.state.delete(&mut run.conn).await,
            Err(error) => {
                let saved = match &run.summary.last_key {
                    Some(key) => format!("the rows up to {key} are done and saved"),
                    None => "no batch was committed".to_owned(),
                };
                break Err(MigrateError::Stopped {
                    error: Box::new(error),
                    saved,
                });
            }
        }
    };
    progress.finish();
    result.map(|()| run.summary)
}

/// Takes the session advisory lock of the column, so two runs on it do not race. A run that
/// was killed a moment ago may still hold it until its server process notices: wait a little.
async fn take_column_lock(conn: &mut ServerConn, column: &str) -> Result<(), MigrateError> {
    let sql =
        format!("SELECT pg_catalog.pg_try_advisory_lock({LOCK_SPACE}, pg_catalog.hashtext($1))");
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let rows = conn
            .query_params(&sql, &[Some(column)])
            .await
            .map_err(server("taking the column's advisory lock"))?;
        if rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .flatten()
            .as_deref()
            == Some("t")
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MigrateError::Busy(column.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows in the table (exact when small, else the planner's estimate) and, when exact, how
/// many lie up to the checkpoint.
struct RowCount {
    rows: u64,
    exact: bool,
}

async fn count_rows(
    conn: &mut ServerConn,
    table: &TableInfo,
    after: Option<&[String]>,
) -> Result<(RowCount, u64), MigrateError> {
    let rows = conn
        .query_params(
            "SELECT c.reltuples::bigint FROM pg_catalog.pg_class c WHERE c.oid = $1::oid",
            &[Some(&table.oid.to_string())],
        )
        .await
        .map_err(server("reading the table's row estimate"))?;
    let estimate: i64 = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    // reltuples is -1 until the table is first vacuumed or analysed.
    if estimate >= EXACT_COUNT_BELOW {
        return Ok((
            RowCount {
                rows: estimate as u64,
                exact: false,
            },
            0,
        ));
    }
    let mut sql = String::from("SELECT count(*)");
    if after.is_some() {
        let _ = write!(
            sql,
            ", count(*) FILTER (WHERE ({}) <= ({}))",
            table.key_list(),
            table.key_params(1)
        );
    }
    let _ = write!(sql, " FROM {}", table.quoted);
    let params: Vec<Option<&str>> = after
        .unwrap_or_default()
        .iter()
        .map(|k| Some(k.as_str()))
        .collect();
    let rows = conn
        .query_params(&sql, &params)
        .await
        .map_err(server("counting the table's rows"))?;
    let number = |i: usize| -> u64 {
        rows.first()
            .and_then(|r| r.get(i).cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        RowCount {
            rows: number(0),
            exact: true,
        },
        number(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(key: &[(&str, &str)]) -> TableInfo {
        TableInfo {
            oid: 1,
            quoted: "\"public\".\"t\"".into(),
            display: "public.t.ssn".into(),
            column: "\"ssn\"".into(),
            key: key
                .iter()
                .map(|(n, t)| (quote_ident(n), (*t).to_owned()))
                .collect(),
            key_names: key.iter().map(|(n, _)| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn table_names() {
        assert_eq!(parse_table("t").unwrap(), ("public".into(), "t".into()));
        assert_eq!(
            parse_table("App.\"Cust\"").unwrap(),
            ("app".into(), "Cust".into())
        );
        assert!(parse_table("a.b.c").is_err());
    }

    #[test]
    fn keyset_sql() {
        let one = table(&[("id", "integer")]);
        assert_eq!(
            one.select_sql(false, 10),
            "SELECT \"id\", \"ssn\" FROM \"public\".\"t\" ORDER BY \"id\" LIMIT 10"
        );
        assert_eq!(
            one.select_sql(true, 10),
            "SELECT \"id\", \"ssn\" FROM \"public\".\"t\" WHERE (\"id\") > ($1::integer) \
             ORDER BY \"id\" LIMIT 10"
        );
        let two = table(&[("region", "text"), ("id", "bigint")]);
        assert_eq!(
            two.update_sql(2),
            "UPDATE \"public\".\"t\" AS t SET \"ssn\" = v.new_value FROM (VALUES \
             ($1::text, $2::bigint, $3::text, $4::text), ($5::text, $6::bigint, $7::text, $8::text)) \
             AS v(k0, k1, old_value, new_value) \
             WHERE t.\"region\" = v.k0 AND t.\"id\" = v.k1 AND t.\"ssn\" IS NOT DISTINCT FROM v.old_value \
             RETURNING 1"
        );
        assert_eq!(
            two.describe_key(&["eu".into(), "7".into()]),
            "(region, id)=(eu, 7)"
        );
    }
}
