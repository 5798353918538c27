//! LISTEN/NOTIFY in transaction pooling mode.
//!
//! A client's server connection changes from one transaction to the next, so a LISTEN run on
//! it would listen for whichever client gets that connection next. Instead pgward keeps one
//! listening server connection per (database, backend user) on the primary, its *hub*, which
//! LISTENs on the union of the channels its clients listen to and hands each notification to
//! every client listening on that channel. Sessions answer LISTEN/UNLISTEN themselves (see
//! `session::listen`) and tell their hub at commit.
//!
//! The process id in a notification is rewritten to what the notifier's own client sees: a
//! pgward client's backend pid (BackendKeyData), found through the server process on which it
//! last sent a NOTIFY (sessions record it only while some client listens, and only for
//! statements that notify, so the hot path takes no lock). Notifications from direct
//! connections, and those a trigger raises, keep the server's pid.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::pool::server::quote_ident;
use crate::pool::{BackendTarget, Credential, ServerConn, ServerError};
use crate::protocol::messages::Reader;

/// The relay connection's application_name (visible in pg_stat_activity).
pub const APPLICATION_NAME: &str = "pgward notify relay";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a hub logs in: the primary as currently configured, asked at every (re)connect.
pub type PrimarySource = Arc<dyn Fn() -> Option<Arc<BackendTarget>> + Send + Sync>;

/// One LISTEN / UNLISTEN of a client, applied when its transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOp {
    Listen(String),
    Unlisten(String),
    UnlistenAll,
}

/// Every hub of this pgward, and which client leased each server process last.
pub struct Relay {
    hubs: Mutex<HashMap<(String, String), Arc<Hub>>>,
    /// Server process id -> the pid pgward gave the client that last notified through it.
    /// Kept only once some client listens (`active`).
    lessees: Mutex<HashMap<i32, i32>>,
    active: AtomicBool,
    next_id: AtomicU64,
    shutdown: CancellationToken,
}

impl Relay {
    pub fn new(shutdown: CancellationToken) -> Relay {
        Relay {
            hubs: Mutex::default(),
            lessees: Mutex::default(),
            active: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            shutdown,
        }
    }

    /// Whether any client has listened since pgward started.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The client pgward knows as `client_pid` notifies through server process `server_pid`.
    pub fn leased(&self, server_pid: i32, client_pid: i32) {
        let mut lessees = self.lessees.lock().expect("lessees lock");
        // Bounded: server pids are reused, and the map is cleared when it grows past what
        // any pool could hold at once (a stale entry costs only a pid attribution).
        if lessees.len() > 100_000 {
            lessees.clear();
        }
        lessees.insert(server_pid, client_pid);
    }

    fn client_pid(&self, server_pid: i32) -> i32 {
        let lessees = self.lessees.lock().expect("lessees lock");
        lessees.get(&server_pid).copied().unwrap_or(server_pid)
    }

    /// Waits until every hub of `database` has handed out the notifications committed before
    /// now: a client that notified gets its ReadyForQuery only then, as it would directly
    /// (PostgreSQL signals listeners at commit), so a listener that looks right after sees them.
    pub async fn sync_database(&self, database: &str) {
        if !self.active() {
            return;
        }
        let hubs: Vec<Arc<Hub>> = {
            let hubs = self.hubs.lock().expect("hubs lock");
            hubs.iter()
                .filter(|((db, _), _)| db == database)
                .map(|(_, hub)| hub.clone())
                .collect()
        };
        let waits: Vec<_> = hubs.iter().filter_map(|hub| hub.sync()).collect();
        for wait in waits {
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, wait).await;
        }
    }

    /// A listener for a client of `database` whose server connections log in as `user`.
    pub fn listener(
        self: &Arc<Self>,
        database: &str,
        user: &str,
        credential: &Credential,
        primary: PrimarySource,
    ) -> Listener {
        self.active.store(true, Ordering::Relaxed);
        let hub = {
            let mut hubs = self.hubs.lock().expect("hubs lock");
            hubs.entry((database.to_owned(), user.to_owned()))
                .or_insert_with(|| {
                    Hub::start(
                        self.clone(),
                        Login {
                            database: database.to_owned(),
                            user: user.to_owned(),
                            credential: credential.clone(),
                            primary,
                        },
                    )
                })
                .clone()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        Listener {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            hub,
            tx,
            rx,
            channels: HashSet::new(),
        }
    }
}

struct Login {
    database: String,
    user: String,
    credential: Credential,
    primary: PrimarySource,
}

/// The handle of one (database, backend user)'s listening connection task.
pub struct Hub {
    commands: mpsc::UnboundedSender<Command>,
}

enum Command {
    Listen {
        id: u64,
        channel: String,
        to: mpsc::UnboundedSender<Bytes>,
    },
    Unlisten {
        id: u64,
        channel: String,
    },
    Leave {
        id: u64,
    },
    /// Answered once the commands before it are in effect on the server and every
    /// notification committed before it was sent has been handed out.
    Sync(oneshot::Sender<()>),
}

impl Hub {
    /// Asks for a sync (see `Command::Sync`); None when the hub is gone.
    fn sync(&self) -> Option<oneshot::Receiver<()>> {
        let (done, wait) = oneshot::channel();
        self.commands.send(Command::Sync(done)).ok()?;
        Some(wait)
    }

    fn start(relay: Arc<Relay>, login: Login) -> Arc<Hub> {
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(relay, login, rx));
        Arc::new(Hub { commands })
    }
}

/// A client's subscriptions and the notifications that reach it.
pub struct Listener {
    id: u64,
    hub: Arc<Hub>,
    tx: mpsc::UnboundedSender<Bytes>,
    /// NotificationResponse frames, ready to write to the client.
    pub rx: mpsc::UnboundedReceiver<Bytes>,
    channels: HashSet<String>,
}

impl Listener {
    /// Applies committed LISTEN/UNLISTENs; returns once the hub listens on every channel
    /// this client now listens to, so a NOTIFY sent after the client's commit reaches it.
    pub async fn apply(&mut self, ops: Vec<ListenOp>) {
        for op in ops {
            let command = match op {
                ListenOp::Listen(channel) => {
                    if !self.channels.insert(channel.clone()) {
                        continue;
                    }
                    Command::Listen {
                        id: self.id,
                        channel,
                        to: self.tx.clone(),
                    }
                }
                ListenOp::Unlisten(channel) => {
                    if !self.channels.remove(&channel) {
                        continue;
                    }
                    Command::Unlisten {
                        id: self.id,
                        channel,
                    }
                }
                ListenOp::UnlistenAll => {
                    self.channels.clear();
                    Command::Leave { id: self.id }
                }
            };
            let _ = self.hub.commands.send(command);
        }
        self.sync().await;
    }

    /// Waits until every notification committed before now has been handed out.
    pub async fn sync(&self) {
        if let Some(wait) = self.hub.sync() {
            // A hub that cannot reach the primary answers after its reconnect; do not hold
            // the client longer than a connect attempt.
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, wait).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.hub.commands.send(Command::Leave { id: self.id });
    }
}

/// Subscribers of a hub: channel -> client id -> where its notifications go.
type Subscribers = HashMap<String, HashMap<u64, mpsc::UnboundedSender<Bytes>>>;

/// The hub's task: keeps a listening connection while any client listens, reconnecting
/// (and re-LISTENing) when it is lost.
async fn run(relay: Arc<Relay>, login: Login, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut subscribers = Subscribers::new();
    let mut conn: Option<ServerConn> = None;
    // Commands that arrived while there was no connection to run them on.
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut lost = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        if conn.is_none() && !subscribers.is_empty() {
            match connect(&login, &subscribers).await {
                Ok(c) => {
                    if lost {
                        tracing::warn!(database = %login.database, user = %login.user, "notify relay reconnected; notifications may have been missed while it was down");
                    }
                    conn = Some(c);
                    lost = false;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    if !lost {
                        tracing::warn!(database = %login.database, user = %login.user, error = %e, "notify relay cannot connect; notifications may be missed until it does");
                    }
                    lost = true;
                    tokio::select! {
                        _ = relay.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        if conn.is_some() || subscribers.is_empty() {
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
        }
        let command = match conn.as_mut() {
            None => tokio::select! {
                _ = relay.shutdown.cancelled() => return,
                c = commands.recv() => c,
            },
            Some(c) => tokio::select! {
                _ = relay.shutdown.cancelled() => return,
                cmd = commands.recv() => cmd,
                frame = c.reader.read_frame() => {
                    match frame {
                        Ok(frame) if frame.tag() == b'A' => deliver(&relay, &subscribers, frame.body()),
                        Ok(frame) if matches!(frame.tag(), b'S' | b'N') => {}
                        Ok(frame) => {
                            let e = if frame.tag() == b'E' {
                                crate::pool::server::error_fields(frame.body())
                            } else {
                                ServerError::Unexpected(frame.tag())
                            };
                            tracing::warn!(database = %login.database, error = %e, "notify relay connection lost");
                            conn = None;
                            lost = true;
                        }
                        Err(e) => {
                            tracing::warn!(database = %login.database, error = %e, "notify relay connection lost");
                            conn = None;
                            lost = true;
                        }
                    }
                    continue;
                }
            },
        };
        let Some(command) = command else { return };
        // Run this command and every other one already queued in one round trip.
        let mut sql = String::new();
        let mut syncs = Vec::new();
        let mut next = Some(command);
        while let Some(command) = next.take() {
            apply(&mut subscribers, command, &mut sql, &mut syncs);
            next = commands.try_recv().ok();
        }
        let Some(c) = conn.as_mut() else {
            // Not connected: LISTENs are made at connect; syncs wait for it (or for no
            // channel being left to listen to).
            waiting.extend(syncs);
            continue;
        };
        if subscribers.is_empty() {
            // Nobody listens any more: let the connection go.
            tracing::debug!(database = %login.database, "notify relay idle; closing its connection");
            conn = None;
            waiting.extend(syncs);
            continue;
        }
        if sql.is_empty() && syncs.is_empty() {
            continue;
        }
        if sql.is_empty() {
            // A round trip makes the server hand over what was committed before it.
            sql.push_str("SELECT 1");
        }
        let mut notes = Vec::new();
        match c.internal_query_frames(&sql, &mut notes).await {
            Ok(()) => {
                for body in notes {
                    deliver(&relay, &subscribers, &body);
                }
                for done in syncs {
                    let _ = done.send(());
                }
            }
            Err(e) => {
                for body in notes {
                    deliver(&relay, &subscribers, &body);
                }
                tracing::warn!(database = %login.database, error = %e, "notify relay connection lost");
                conn = None;
                lost = true;
                waiting.extend(syncs);
            }
        }
    }
}

/// Updates the subscribers for `command`, adding the SQL that brings the server in line.
fn apply(
    subscribers: &mut Subscribers,
    command: Command,
    sql: &mut String,
    syncs: &mut Vec<oneshot::Sender<()>>,
) {
    match command {
        Command::Listen { id, channel, to } => {
            let clients = subscribers.entry(channel.clone()).or_default();
            if clients.is_empty() {
                sql.push_str(&format!("LISTEN {};", quote_ident(&channel)));
            }
            clients.insert(id, to);
        }
        Command::Unlisten { id, channel } => unlisten(subscribers, id, &channel, sql),
        Command::Leave { id } => {
            let channels: Vec<String> = subscribers
                .iter()
                .filter(|(_, clients)| clients.contains_key(&id))
                .map(|(channel, _)| channel.clone())
                .collect();
            for channel in channels {
                unlisten(subscribers, id, &channel, sql);
            }
        }
        Command::Sync(done) => syncs.push(done),
    }
}

fn unlisten(subscribers: &mut Subscribers, id: u64, channel: &str, sql: &mut String) {
    if let Some(clients) = subscribers.get_mut(channel) {
        clients.remove(&id);
        if clients.is_empty() {
            subscribers.remove(channel);
            sql.push_str(&format!("UNLISTEN {};", quote_ident(channel)));
        }
    }
}

/// Logs in to the primary and LISTENs on every channel subscribed to.
async fn connect(login: &Login, subscribers: &Subscribers) -> Result<ServerConn, String> {
    let target = (login.primary)().ok_or("no primary backend configured")?;
    let mut conn = tokio::time::timeout(
        CONNECT_TIMEOUT,
        ServerConn::connect(target, &login.user, &login.credential, &login.database),
    )
    .await
    .map_err(|_| "timed out connecting".to_owned())?
    .map_err(|e| e.to_string())?;
    let mut sql = format!(
        "SET application_name = {};",
        crate::pool::server::quote_literal(APPLICATION_NAME)
    );
    for channel in subscribers.keys() {
        sql.push_str(&format!("LISTEN {};", quote_ident(channel)));
    }
    tokio::time::timeout(CONNECT_TIMEOUT, conn.internal_query(&sql))
        .await
        .map_err(|_| "timed out starting to listen".to_owned())?
        .map_err(|e| e.to_string())?;
    tracing::info!(database = %login.database, user = %login.user, pid = conn.pid, channels = subscribers.len(), "notify relay listening");
    Ok(conn)
}

/// Hands a NotificationResponse to every client listening on its channel, with the pid the
/// notifier's client knows.
fn deliver(relay: &Relay, subscribers: &Subscribers, body: &[u8]) {
    let mut r = Reader::new(body);
    let (Ok(pid), Ok(channel), Ok(payload)) = (r.i32(), r.cstr_bytes(), r.cstr_bytes()) else {
        return;
    };
    let Some(clients) = subscribers.get(&*String::from_utf8_lossy(channel)) else {
        return;
    };
    let mut frame = BytesMut::with_capacity(body.len() + 5);
    frame.put_u8(b'A');
    frame.put_u32((body.len() + 4) as u32);
    frame.put_i32(relay.client_pid(pid));
    frame.put_slice(channel);
    frame.put_u8(0);
    frame.put_slice(payload);
    frame.put_u8(0);
    let frame = frame.freeze();
    for to in clients.values() {
        let _ = to.send(frame.clone());
    }
}
