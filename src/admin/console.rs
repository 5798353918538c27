//! The admin console: an admin user (`auth.admin_users`) connecting to the database `pgward`
//! gets PgBouncer-style commands over the simple query protocol, answered in rows psql prints
//! as tables. Column names follow PgBouncer's where the concept is the same.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, BytesMut};

use crate::metrics::{ClientState, Route};
use crate::protocol::messages::{self, tag};
use crate::protocol::{FrameError, FrameReader, FrameWriter, ProxyError};
use crate::state::clients::ClientHandle;
use crate::state::State;

/// The database name that reaches the console.
pub const DATABASE: &str = "pgward";

/// How long PAUSE waits for server connections in use to come back.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(30);

const COMMANDS: &str =
    "SHOW POOLS | CLIENTS | SERVERS | STATS | BACKENDS | CONFIG | USERS | VERSION; \
     RELOAD; PAUSE; RESUME; KILL <client id>; CACHE FLUSH [schema.table]; SHUTDOWN";

/// One console session.
pub struct Console {
    reader: FrameReader,
    writer: FrameWriter,
    state: Arc<State>,
    /// Keeps this connection in SHOW CLIENTS and the gauges, and lets KILL reach it.
    client: ClientHandle,
}

/// A result set: column names and text rows (None is NULL).
struct Table {
    columns: &'static [&'static str],
    rows: Vec<Vec<Option<String>>>,
}

/// What a command answers.
enum Answer {
    Rows(Table, String),
    Done(String),
}

impl Console {
    pub fn new(
        reader: FrameReader,
        writer: FrameWriter,
        state: Arc<State>,
        client: ClientHandle,
    ) -> Console {
        Console {
            reader,
            writer,
            state,
            client,
        }
    }

    /// Greets the client like a server would, then answers commands until it leaves.
    pub async fn run(mut self) {
        let w = self.writer.buffer();
        for (name, value) in [
            ("server_version", "15.0 (pgward console)"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
        ] {
            messages::parameter_status(w, name, value);
        }
        messages::backend_key_data(w, 0, 0);
        messages::ready_for_query(w, b'I');
        tracing::info!(user = %self.client.info.user, addr = %self.client.info.addr, "admin console session");
        loop {
            if self.writer.flush().await.is_err() {
                return;
            }
            let frame = tokio::select! {
                frame = self.reader.read_frame() => frame,
                _ = self.client.stopped(false) => {
                    messages::error_response(self.writer.buffer(), &ProxyError::Killed, true);
                    return self.writer.shutdown().await;
                }
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(FrameError::Eof | FrameError::Io(_)) => return,
                Err(e) => {
                    let err = ProxyError::protocol(e.to_string());
                    messages::error_response(self.writer.buffer(), &err, true);
                    return self.writer.shutdown().await;
                }
            };
            match frame.tag() {
                tag::TERMINATE => return,
                tag::QUERY => {
                    let sql = messages::read_query(frame.body())
                        .map(|text| String::from_utf8_lossy(text).into_owned())
                        .unwrap_or_default();
                    self.client.set(ClientState::Active, None);
                    self.answer(&sql).await;
                    self.client.set(ClientState::Idle, None);
                    messages::ready_for_query(self.writer.buffer(), b'I');
                }
                tag::SYNC => messages::ready_for_query(self.writer.buffer(), b'I'),
                tag::FLUSH => {}
                _ => {
                    // Extended protocol: refuse once, skip to Sync as a server would.
                    let err = ProxyError::Unsupported(
                        "pgward: the admin console speaks the simple query protocol only".into(),
                    );
                    messages::error_response(self.writer.buffer(), &err, false);
                    if !self.skip_to_sync().await {
                        return;
                    }
                    messages::ready_for_query(self.writer.buffer(), b'I');
                }
            }
        }
    }

    async fn skip_to_sync(&mut self) -> bool {
        loop {
            match self.reader.read_frame().await {
                Ok(frame) if frame.tag() == tag::SYNC => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Runs every command of a query string in turn; the first error ends it.
    async fn answer(&mut self, sql: &str) {
        let commands: Vec<&str> = sql
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if commands.is_empty() {
            messages::frontend(self.writer.buffer(), b'I', |_| {});
            return;
        }
        for command in commands {
            crate::metrics::query(Route::Admin);
            match self.command(command).await {
                Ok(Answer::Rows(table, tag)) => {
                    write_table(self.writer.buffer(), &table);
                    messages::command_complete(self.writer.buffer(), &tag);
                }
                Ok(Answer::Done(tag)) => messages::command_complete(self.writer.buffer(), &tag),
                Err(err) => {
                    messages::error_response(self.writer.buffer(), &err, false);
                    return;
                }
            }
        }
    }

    /// `CACHE FLUSH [schema.table]`: drops every cached result here (or those that read the
    /// table). Other instances keep theirs; their writes are what they follow.
    fn cache_flush(&self, table: Option<&str>) -> Result<Answer, ProxyError> {
        let Some(cache) = &self.state.cache else {
            return Err(ProxyError::Admin {
                sqlstate: "55000",
                message: "pgward: the result cache is off ([cache] enabled = false)".into(),
            });
        };
        match table {
            None => cache.results.flush_all(),
            Some(table) => cache.results.flush_table(&table.to_lowercase()),
        }
        tracing::info!(
            table = table.unwrap_or("*"),
            "CACHE FLUSH from the admin console"
        );
        Ok(Answer::Done("CACHE FLUSH".into()))
    }

    async fn command(&mut self, command: &str) -> Result<Answer, ProxyError> {
        let words: Vec<String> = command
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let table = |table: Table| {
            let tag = format!("SHOW {}", table.rows.len());
            Ok(Answer::Rows(table, tag))
        };
        match words.as_slice() {
            ["SHOW", "POOLS"] => table(self.pools()),
            ["SHOW", "CLIENTS"] => table(self.clients()),
            ["SHOW", "SERVERS"] => table(self.servers()),
            ["SHOW", "STATS"] => table(self.stats()),
            ["SHOW", "BACKENDS"] => table(self.backends()),
            ["SHOW", "CONFIG"] => table(self.config()),
            ["SHOW", "USERS"] => table(self.users()),
            ["SHOW", "VERSION"] => table(Table {
                columns: &["version"],
                rows: vec![vec![Some(format!("pgward {}", env!("CARGO_PKG_VERSION")))]],
            }),
            ["RELOAD"] => self.reload().await,
            ["PAUSE"] => self.pause().await,
            ["RESUME"] => {
                self.state.pause.set(false);
                tracing::info!("RESUME: server connections are handed out again");
                Ok(Answer::Done("RESUME".into()))
            }
            ["KILL", id] => self.kill(id),
            ["CACHE", "FLUSH"] => self.cache_flush(None),
            ["CACHE", "FLUSH", _] => {
                // The table name as written, not upper-cased.
                let table = command.split_whitespace().nth(2).unwrap_or_default();
                self.cache_flush(Some(table))
            }
            ["SHUTDOWN"] => {
                tracing::info!("SHUTDOWN from the admin console: draining");
                self.state.shutdown.cancel();
                Ok(Answer::Done("SHUTDOWN".into()))
            }
            _ => Err(ProxyError::Syntax {
                message: format!("pgward: unknown admin command {command:?}"),
                hint: format!("commands: {COMMANDS}"),
            }),
        }
    }

    async fn reload(&mut self) -> Result<Answer, ProxyError> {
        match self.state.reload().await {
            Ok(notes) => {
                for note in notes {
                    messages::notice(self.writer.buffer(), &note);
                }
                Ok(Answer::Done("RELOAD".into()))
            }
            Err(e) => Err(ProxyError::Admin {
                sqlstate: "F0000",
                message: format!("pgward: reload failed, the running configuration stays: {e}"),
            }),
        }
    }

    /// Stops handing out server connections, then waits for those in use to come back.
    async fn pause(&mut self) -> Result<Answer, ProxyError> {
        self.state.pause.set(true);
        tracing::info!("PAUSE: no new server connections are handed out");
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        loop {
            let in_use: usize = self.state.pools.all().iter().map(|p| p.in_use()).sum();
            if in_use == 0 {
                return Ok(Answer::Done("PAUSE".into()));
            }
            if Instant::now() >= deadline {
                return Err(ProxyError::Admin {
                    sqlstate: "57014",
                    message: format!(
                        "pgward: PAUSE timed out after {PAUSE_TIMEOUT:?} with {in_use} server connections \
                         still in use; new transactions stay paused until RESUME"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self, id: &str) -> Result<Answer, ProxyError> {
        let client = id
            .parse()
            .ok()
            .and_then(|id| self.state.clients.get(id))
            .ok_or_else(|| ProxyError::Admin {
                sqlstate: "42704",
                message: format!("pgward: no client with id {id}"),
            })?;
        tracing::info!(client = client.id, user = %client.user, "KILL from the admin console");
        client.kill();
        Ok(Answer::Done("KILL".into()))
    }

    fn pools(&self) -> Table {
        let clients = self.state.clients.list();
        let mode = format!("{:?}", self.state.runtime.load().config.pool.mode).to_lowercase();
        let mut rows = Vec::new();
        let mut pools = self.state.pools.all();
        pools.sort_by(|a, b| {
            (&a.key.database, &a.key.user, &a.key.backend).cmp(&(
                &b.key.database,
                &b.key.user,
                &b.key.backend,
            ))
        });
        for pool in pools {
            let mine = |state: ClientState| {
                clients
                    .iter()
                    .filter(|c| c.database == pool.key.database)
                    .map(|c| c.link())
                    .filter(|l| l.state == state)
                    .filter(|l| match &l.server {
                        Some((backend, _)) => backend.name == pool.key.backend,
                        None => true,
                    })
                    .count()
            };
            let idle = pool.idle_connections();
            rows.push(vec![
                Some(pool.key.database.clone()),
                Some(pool.key.user.clone()),
                Some(pool.key.backend.clone()),
                Some(mine(ClientState::Active).to_string()),
                Some(mine(ClientState::Waiting).to_string()),
                Some(pool.in_use().to_string()),
                Some(idle.len().to_string()),
                Some(pool.size().to_string()),
                Some(mode.clone()),
            ]);
        }
        Table {
            columns: &[
                "database",
                "user",
                "backend",
                "cl_active",
                "cl_waiting",
                "sv_active",
                "sv_idle",
                "pool_size",
                "pool_mode",
            ],
            rows,
        }
    }

    fn clients(&self) -> Table {
        let rows = self
            .state
            .clients
            .list()
            .iter()
            .map(|c| {
                let link = c.link();
                let (backend, pid) = match link.server {
                    Some((backend, pid)) => (Some(backend.name.clone()), Some(pid.to_string())),
                    None => (None, None),
                };
                vec![
                    Some("C".into()),
                    Some(c.id.to_string()),
                    Some(c.user.clone()),
                    Some(c.database.clone()),
                    Some(link.state.as_str().into()),
                    Some(c.addr.ip().to_string()),
                    Some(c.addr.port().to_string()),
                    Some(timestamp(c.connected_at)),
                    Some(timestamp(link.since)),
                    backend,
                    pid,
                ]
            })
            .collect();
        Table {
            columns: &[
                "type",
                "id",
                "user",
                "database",
                "state",
                "addr",
                "port",
                "connect_time",
                "request_time",
                "backend",
                "server_pid",
            ],
            rows,
        }
    }

    fn servers(&self) -> Table {
        let rt = self.state.runtime.load();
        let address = |backend: &str| {
            rt.router
                .backends
                .iter()
                .find(|b| b.target.name == backend)
                .map(|b| (b.target.host.clone(), b.target.port.to_string()))
                .unwrap_or_default()
        };
        let mut rows = Vec::new();
        for c in self.state.clients.list() {
            let link = c.link();
            if let Some((backend, pid)) = link.server {
                let (host, port) = address(&backend.name);
                rows.push(vec![
                    Some("S".into()),
                    Some(c.user.clone()),
                    Some(c.database.clone()),
                    Some("active".into()),
                    Some(backend.name.clone()),
                    Some(host),
                    Some(port),
                    Some(pid.to_string()),
                    Some(c.id.to_string()),
                ]);
            }
        }
        for pool in self.state.pools.all() {
            let (host, port) = address(&pool.key.backend);
            for (pid, _) in pool.idle_connections() {
                rows.push(vec![
                    Some("S".into()),
                    Some(pool.key.user.clone()),
                    Some(pool.key.database.clone()),
                    Some("idle".into()),
                    Some(pool.key.backend.clone()),
                    Some(host.clone()),
                    Some(port.clone()),
                    Some(pid.to_string()),
                    None,
                ]);
            }
        }
        Table {
            columns: &[
                "type",
                "user",
                "database",
                "state",
                "backend",
                "addr",
                "port",
                "remote_pid",
                "link",
            ],
            rows,
        }
    }

    fn stats(&self) -> Table {
        use std::sync::atomic::Ordering::Relaxed;
        let rows = self
            .state
            .clients
            .all_stats()
            .into_iter()
            .map(|(db, s)| {
                let queries = s.queries.load(Relaxed);
                let query_time = s.query_time_us.load(Relaxed);
                let avg = query_time.checked_div(queries).unwrap_or(0);
                vec![
                    Some(db),
                    Some(s.xacts.load(Relaxed).to_string()),
                    Some(queries.to_string()),
                    Some(s.received.load(Relaxed).to_string()),
                    Some(s.sent.load(Relaxed).to_string()),
                    Some(query_time.to_string()),
                    Some(s.wait_time_us.load(Relaxed).to_string()),
                    Some(avg.to_string()),
                ]
            })
            .collect();
        Table {
            columns: &[
                "database",
                "total_xact_count",
                "total_query_count",
                "total_received",
                "total_sent",
                "total_query_time",
                "total_wait_time",
                "avg_query_time",
            ],
            rows,
        }
    }

    fn backends(&self) -> Table {
        let rt = self.state.runtime.load();
        let rows = rt
            .router
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let status = &b.status;
                let lag = match status.lag() {
                    u64::MAX => None,
                    lag => Some(lag.to_string()),
                };
                vec![
                    Some(b.target.name.clone()),
                    Some(b.target.host.clone()),
                    Some(b.target.port.to_string()),
                    Some(format!("{:?}", b.role).to_lowercase()),
                    Some(
                        if rt.router.is_primary(i) {
                            "primary"
                        } else {
                            "replica"
                        }
                        .into(),
                    ),
                    Some(if status.is_up() { "up" } else { "down" }.into()),
                    status.in_recovery().map(|r| r.to_string()),
                    lag,
                    Some(b.weight.to_string()),
                    status
                        .banned_for()
                        .map(|d| timestamp(SystemTime::now() + d)),
                ]
            })
            .collect();
        Table {
            columns: &[
                "name",
                "host",
                "port",
                "role",
                "acting_as",
                "health",
                "in_recovery",
                "lag_bytes",
                "weight",
                "banned_until",
            ],
            rows,
        }
    }

    fn config(&self) -> Table {
        let rt = self.state.runtime.load();
        let rows = crate::config::settings(&rt.config)
            .into_iter()
            .map(|(key, value)| vec![Some(key), Some(value)])
            .collect();
        Table {
            columns: &["key", "value"],
            rows,
        }
    }

    fn users(&self) -> Table {
        let rt = self.state.runtime.load();
        let config = &rt.config;
        let rows = config
            .users
            .iter()
            .map(|u| {
                vec![
                    Some(u.name.clone()),
                    Some(u.backend_user().to_owned()),
                    Some(config.auth.admin_users.contains(&u.name).to_string()),
                ]
            })
            .collect();
        Table {
            columns: &["name", "backend_user", "admin"],
            rows,
        }
    }
}

/// RowDescription (every column text) and the DataRows of `table`.
fn write_table(buf: &mut BytesMut, table: &Table) {
    messages::frontend(buf, b'T', |b| {
        b.put_i16(table.columns.len() as i16);
        for name in table.columns {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(25); // text
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0); // text format
        }
    });
    for row in &table.rows {
        messages::frontend(buf, b'D', |b| {
            b.put_i16(row.len() as i16);
            for value in row {
                match value {
                    Some(v) => {
                        b.put_i32(v.len() as i32);
                        b.put_slice(v.as_bytes());
                    }
                    None => b.put_i32(-1),
                }
            }
        });
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS`.
fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(timestamp(t), "2026-11-18 11:06:40");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29 00:00:00");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00");
    }
}
