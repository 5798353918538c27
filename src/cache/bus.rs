//! Invalidation across pgward instances through PostgreSQL itself: LISTEN/NOTIFY on the
//! primary, no other service, no list of peers in the config.
//!
//! # How
//! NOTIFY channels are per database, so each instance holds one LISTEN connection on the
//! primary per database its clients cache (started by [`Bus::ensure`] on first use), logged
//! in with the health-check credentials and named `application_name = 'pgward cache bus'`.
//! Each instance has a random id. Messages on `cache.channel` (payloads are ASCII, fields
//! percent-encoded, at most 8000 bytes; long table lists are split over several messages):
//! - `hb <instance> <n>`: a heartbeat, every second. An instance heard within 3 s is live.
//! - `inv <instance> <seq> <database> <table>,<table>...`: those tables were written. The
//!   receivers invalidate them at once and answer `ack <receiver> <instance> <seq>`.
//!
//! [`Bus::publish`] is called after a write's commit and before the commit is returned to
//! the client. It invalidates locally, sends `inv`, and waits up to `cache.ack_timeout` for
//! every live instance to acknowledge. One that does not is no longer counted as live (so a
//! dead instance delays one write, not all of them) until a heartbeat of it arrives after
//! that; the result names it.
//!
//! An instance serves hits for a database only while its listener for it is up, and:
//! - flushes the database whenever the listener drops and again once LISTEN is back
//!   (anything filled in between may have missed a message);
//! - starts serving only when its second heartbeat has come back (about 1 s after LISTEN),
//!   so that the other instances have heard of it and wait for its acknowledgements;
//! - stops serving by itself when its own heartbeat takes more than 3 s to come back:
//!   notifications are delivered in commit order, so hearing a heartbeat proves that every
//!   `inv` committed before it was handled.
//!
//! # What is guaranteed
//! Once instance A has returned a write's commit to its client, no live instance serves a
//! result that predates the write: each one acknowledged the `inv` after invalidating, and
//! its fills that started before the invalidation are refused (see the module above).
//!
//! # What is not
//! - Writes that bypass pgward (psql on the primary, triggers writing other tables, cron
//!   jobs) are not seen at all: only `cache.ttl` bounds how long results stay stale.
//! - An instance that is alive but slower than `ack_timeout` to acknowledge may serve
//!   stale results until it handles the message, at most 3 s (then it stops serving on its
//!   own). An instance partitioned from PostgreSQL stops serving when its listener drops or
//!   its heartbeats stop coming back, within 3 s.
//! - A new instance's first heartbeat must reach the others within its ~1 s warm-up.
//! - If A's own listener connection is down at commit, the `inv` cannot be sent:
//!   [`Published::sent`] is false and only the TTL bounds the others.
//! - A fill from a replica that has not replayed the write yet may store the old rows after
//!   the invalidation; fills should come from the primary, or from replicas known to have
//!   replayed past the last invalidation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Database, ResultCache};
use crate::config::CacheConfig;
use crate::pool::server::{quote_ident, quote_literal, Notification};
use crate::pool::{BackendTarget, Credential, ServerConn};
use crate::route::Router;

/// The `application_name` of the listener connections.
pub const APPLICATION_NAME: &str = "pgward cache bus";

const HEARTBEAT: Duration = Duration::from_secs(1);
/// An instance heard within this is live; an instance that has not heard itself within this
/// stops serving.
const LIVE_WINDOW: Duration = Duration::from_secs(3);
/// Instances not heard for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publisher waits for its `inv` to be committed by the listener connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Own heartbeats remembered while waiting for them to come back.
const MAX_HEARTBEATS_IN_FLIGHT: usize = 16;
/// PostgreSQL's payload limit is 8000 bytes.
const MAX_PAYLOAD: usize = 7999;

/// How the listeners log in: the primary and the health-check credentials.
#[derive(Clone)]
pub struct BusLogin {
    pub backend: Arc<BackendTarget>,
    pub user: String,
    pub credential: Credential,
}

impl BusLogin {
    /// The primary (the first one that is usable, else the first configured) with `login`,
    /// the health-check credentials (`Runtime::check_credentials`).
    pub fn primary(router: &Router, login: (String, Option<String>)) -> Option<BusLogin> {
        Some(BusLogin {
            backend: router.primary_target()?,
            user: login.0,
            credential: Credential::password(login.1.as_deref()),
        })
    }
}

/// Where the listeners connect, asked at every (re)connect, so a reload or a promotion is
/// followed.
pub type LoginSource = Arc<dyn Fn() -> Option<BusLogin> + Send + Sync>;

/// What [`Bus::publish`] achieved, for a log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The `inv` was committed on the primary. False when this instance's listener for the
    /// database is down: the other instances then rely on their TTL.
    pub sent: bool,
    /// Live instances that acknowledged in time.
    pub acked: Vec<String>,
    /// Live instances that did not; they count as down until their next heartbeat.
    pub missing: Vec<String>,
}

/// The invalidation bus of one pgward instance. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

struct BusInner {
    cache: ResultCache,
    instance: String,
    channel: String,
    ack_timeout: Duration,
    login: LoginSource,
    /// Ends every listener.
    shutdown: CancellationToken,
    listeners: Mutex<HashMap<String, Arc<Listener>>>,
}

/// One database's listener, as the publishers and the task share it.
struct Listener {
    db: Database,
    outbox: mpsc::UnboundedSender<Outgoing>,
    connected: AtomicBool,
    /// The listener's server process id (0 while disconnected).
    pid: AtomicI32,
    next_seq: AtomicU64,
    state: Mutex<ListenerState>,
}

#[derive(Default)]
struct ListenerState {
    peers: HashMap<String, Peer>,
    /// Publications waiting for acknowledgements, by sequence number.
    pending: HashMap<u64, Pending>,
}

struct Peer {
    heard: Instant,
    /// Did not acknowledge in time at this moment: not live until heard again after it.
    suspect_since: Option<Instant>,
}

struct Pending {
    waiting: HashSet<String>,
    done: Option<oneshot::Sender<()>>,
}

/// Payloads for the listener connection to send, and who to tell once they are committed.
struct Outgoing {
    payloads: Vec<String>,
    sent: Option<oneshot::Sender<()>>,
}

impl Listener {
    fn lock(&self) -> std::sync::MutexGuard<'_, ListenerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live_peers(&self, now: Instant) -> HashSet<String> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, p)| p.suspect_since.is_none() && now.duration_since(p.heard) < LIVE_WINDOW)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl Bus {
    /// A bus for `cache`; no connection is made before [`Bus::ensure`]. Its listeners end
    /// when `shutdown` is cancelled or [`Bus::stop`] is called.
    pub fn new(
        cache: ResultCache,
        config: &CacheConfig,
        login: LoginSource,
        shutdown: &CancellationToken,
    ) -> Bus {
        Bus {
            inner: Arc::new(BusInner {
                cache,
                instance: format!("{:016x}", rand::random::<u64>()),
                channel: config.channel.clone(),
                ack_timeout: config.ack_timeout,
                login,
                shutdown: shutdown.child_token(),
                listeners: Mutex::default(),
            }),
        }
    }

    /// This instance's random id.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn cache(&self) -> &ResultCache {
        &self.inner.cache
    }

    /// Starts the listener of `database` unless it runs. Until it is up (about a second),
    /// the cache does not serve that database. Call it when a client of the database first
    /// uses the cache.
    pub fn ensure(&self, database: &str) {
        self.listener(database);
    }

    /// Whether the cache serves hits for `database` now.
    pub fn serving(&self, database: &str) -> bool {
        self.inner.cache.database(database).serving()
    }

    /// The other instances counted as live in `database`.
    pub fn live_peers(&self, database: &str) -> Vec<String> {
        let Some(listener) = self.existing(database) else {
            return Vec::new();
        };
        let mut peers: Vec<String> = listener.live_peers(Instant::now()).into_iter().collect();
        peers.sort();
        peers
    }

    /// The server process id of the listener connection of `database`, while it is up.
    pub fn listener_pid(&self, database: &str) -> Option<i32> {
        match self.existing(database)?.pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    fn existing(&self, database: &str) -> Option<Arc<Listener>> {
        let listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.get(database).cloned()
    }

    /// Ends this bus's listeners (the instance stops serving hits).
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }

    fn listener(&self, database: &str) -> Arc<Listener> {
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(listener) = listeners.get(database) {
            return listener.clone();
        }
        let (outbox, rx) = mpsc::unbounded_channel();
        let listener = Arc::new(Listener {
            db: self.inner.cache.database(database),
            outbox,
            connected: AtomicBool::new(false),
            pid: AtomicI32::new(0),
            next_seq: AtomicU64::new(1),
            state: Mutex::default(),
        });
        listeners.insert(database.to_owned(), listener.clone());
        tokio::spawn(run(self.inner.clone(), listener.clone(), rx));
        listener
    }

    /// Announces that `tables` (`schema.table`) of `database` were written, after the write
    /// committed and before its commit goes back to the client: invalidates them here, tells
    /// the other instances, and waits up to `cache.ack_timeout` for the live ones to
    /// acknowledge.
    pub async fn publish(&self, database: &str, tables: &[&str]) -> Published {
        let inner = &self.inner;
        inner.cache.invalidate_tables(database, tables);
        let listener = self.listener(database);
        if tables.is_empty() {
            return Published {
                sent: true,
                ..Published::default()
            };
        }
        if !listener.connected.load(Ordering::Acquire) {
            return Published::default();
        }
        let live = listener.live_peers(Instant::now());
        let mut payloads = Vec::new();
        let mut seqs = Vec::new();
        for chunk in chunk_tables(&inner.instance, database, tables) {
            let seq = listener.next_seq.fetch_add(1, Ordering::Relaxed);
            payloads.push(format!(
                "inv {} {seq} {} {chunk}",
                inner.instance,
                escape(database)
            ));
            seqs.push(seq);
        }
        let mut acks = Vec::new();
        if !live.is_empty() {
            let mut state = listener.lock();
            for &seq in &seqs {
                let (done, rx) = oneshot::channel();
                state.pending.insert(
                    seq,
                    Pending {
                        waiting: live.clone(),
                        done: Some(done),
                    },
                );
                acks.push(rx);
            }
        }
        let (sent, sent_rx) = oneshot::channel();
        let queued = listener
            .outbox
            .send(Outgoing {
                payloads,
                sent: Some(sent),
            })
            .is_ok();
        let sent = queued
            && matches!(
                tokio::time::timeout(SEND_TIMEOUT, sent_rx).await,
                Ok(Ok(()))
            );
        if sent {
            let deadline = tokio::time::Instant::now() + inner.ack_timeout;
            for rx in acks {
                let _ = tokio::time::timeout_at(deadline, rx).await;
            }
        }
        let mut missing: HashSet<String> = HashSet::new();
        let now = Instant::now();
        let mut state = listener.lock();
        for seq in seqs {
            if let Some(pending) = state.pending.remove(&seq) {
                missing.extend(pending.waiting);
            }
        }
        if !sent {
            return Published::default();
        }
        for id in &missing {
            if let Some(peer) = state.peers.get_mut(id) {
                peer.suspect_since = Some(now);
            }
        }
        drop(state);
        let mut acked: Vec<String> = live.difference(&missing).cloned().collect();
        let mut missing: Vec<String> = missing.into_iter().collect();
        acked.sort();
        missing.sort();
        if !missing.is_empty() {
            tracing::warn!(
                database,
                ?missing,
                "pgward instances did not acknowledge a cache invalidation in time; treated as down until they are heard again"
            );
        }
        Published {
            sent: true,
            acked,
            missing,
        }
    }
}

/// The escaped table list split into parts that fit a payload with its `inv` prefix.
fn chunk_tables(instance: &str, database: &str, tables: &[&str]) -> Vec<String> {
    // "inv " + instance + " " + seq (at most 20 digits) + " " + database + " "
    let prefix = 4 + instance.len() + 1 + 20 + 1 + escape(database).len() + 1;
    let room = MAX_PAYLOAD.saturating_sub(prefix).max(1);
    let mut chunks = Vec::new();
    let mut current = String::new();
    for table in tables {
        let table = escape(table);
        if !current.is_empty() && current.len() + 1 + table.len() > room {
            chunks.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&table);
    }
    chunks.push(current);
    chunks
}

/// Keeps the payload ASCII and free of the separators (space, comma): every other byte is
/// written `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'$') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A message on the channel.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    Heartbeat {
        instance: String,
        n: Option<u64>,
    },
    Invalidate {
        instance: String,
        seq: u64,
        database: String,
        tables: Vec<String>,
    },
    Ack {
        from: String,
        origin: String,
        seq: u64,
    },
}

fn parse(payload: &str) -> Option<Message> {
    let mut words = payload.split(' ');
    let message = match words.next()? {
        "hb" => Message::Heartbeat {
            instance: words.next()?.to_owned(),
            n: words.next().and_then(|n| n.parse().ok()),
        },
        "inv" => Message::Invalidate {
            instance: words.next()?.to_owned(),
            seq: words.next()?.parse().ok()?,
            database: unescape(words.next()?)?,
            tables: words
                .next()?
                .split(',')
                .filter(|t| !t.is_empty())
                .map(unescape)
                .collect::<Option<_>>()?,
        },
        "ack" => Message::Ack {
            from: words.next()?.to_owned(),
            origin: words.next()?.to_owned(),
            seq: words.next()?.parse().ok()?,
        },
        _ => return None,
    };
    Some(message)
}

/// One statement that sends every payload on the channel in one transaction.
fn notify_sql(channel: &str, payloads: &[String]) -> String {
    let array: Vec<String> = payloads.iter().map(|p| quote_literal(p)).collect();
    format!(
        "SELECT pg_catalog.pg_notify({}, p) FROM unnest(ARRAY[{}]::text[]) WITH ORDINALITY AS m(p, i) ORDER BY i",
        quote_literal(channel),
        array.join(", ")
    )
}

/// The listener task of one database: connects, listens, reconnects with backoff, until
/// shutdown. The database is served only while a connection is up (see the module doc).
async fn run(
    bus: Arc<BusInner>,
    listener: Arc<Listener>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let database = listener.db.name().to_owned();
    let mut backoff = MIN_BACKOFF;
    // Repeated failures to connect are logged once, until the listener has been up again.
    let mut warned = false;
    loop {
        let mut established = false;
        let result = connection(&bus, &listener, &mut rx, &mut established).await;
        listener.connected.store(false, Ordering::Release);
        listener.pid.store(0, Ordering::Release);
        bus.cache.stop_serving(&listener.db);
        // Whatever was queued for the lost connection was not sent.
        while rx.try_recv().is_ok() {}
        if established {
            backoff = MIN_BACKOFF;
            warned = false;
        }
        match result {
            Ok(()) => return,
            Err(error) if !warned => {
                warned = true;
                tracing::warn!(%database, %error, "cache invalidation listener down; no cache hits for this database until it is back");
            }
            Err(error) => {
                tracing::debug!(%database, %error, "cache invalidation listener still down")
            }
        }
        tokio::select! {
            _ = bus.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listener connection, from connect to its end: Ok on shutdown, Err when it is lost.
async fn connection(
    bus: &Arc<BusInner>,
    listener: &Arc<Listener>,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    established: &mut bool,
) -> Result<(), String> {
    let login = (bus.login)().ok_or("no primary backend to listen on")?;
    let connect = ServerConn::connect(
        login.backend.clone(),
        &login.user,
        &login.credential,
        listener.db.name(),
    );
    let mut conn = tokio::select! {
        _ = bus.shutdown.cancelled() => return Ok(()),
        conn = tokio::time::timeout(CONNECT_TIMEOUT, connect) => conn
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|e| e.to_string())?,
    };
    let mut notes: Vec<Notification> = Vec::new();
    // Losing a NOTIFY in a crash is harmless (the listeners lose their connections too), so
    // the bus's own commits need not wait for a disk flush.
    let setup = format!(
        "SET application_name = {}; SET synchronous_commit = off; LISTEN {}",
        quote_literal(APPLICATION_NAME),
        quote_ident(&bus.channel)
    );
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        conn.internal_query_notified(&setup, &mut notes),
    )
    .await
    .map_err(|_| "timed out starting to listen".to_owned())?
    .map_err(|e| e.to_string())?;
    // Fills that started before now may have missed an invalidation.
    bus.cache.flush_database(&listener.db);
    listener.pid.store(conn.pid, Ordering::Release);
    listener.connected.store(true, Ordering::Release);
    *established = true;
    tracing::info!(database = %listener.db.name(), instance = %bus.instance, "cache invalidation listener up");

    let mut outgoing: Vec<String> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut heartbeats = Heartbeats::default();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for note in notes.drain(..) {
            handle(bus, listener, note, &mut outgoing, &mut heartbeats);
        }
        if !outgoing.is_empty() {
            let sql = notify_sql(&bus.channel, &outgoing);
            heartbeats.sending();
            tokio::time::timeout(LIVE_WINDOW, conn.internal_query_notified(&sql, &mut notes))
                .await
                .map_err(|_| "timed out sending notifications".to_owned())?
                .map_err(|e| e.to_string())?;
            outgoing.clear();
            for waiter in waiters.drain(..) {
                let _ = waiter.send(());
            }
            continue;
        }
        tokio::select! {
            _ = bus.shutdown.cancelled() => return Ok(()),
            note = conn.next_notification() => notes.push(note.map_err(|e| e.to_string())?),
            queued = rx.recv() => {
                let Some(queued) = queued else { return Ok(()) };
                let mut queued = Some(queued);
                while let Some(Outgoing { payloads, sent }) = queued {
                    outgoing.extend(payloads);
                    waiters.extend(sent);
                    queued = rx.try_recv().ok();
                }
            }
            _ = tick.tick() => {
                outgoing.push(format!("hb {} {}", bus.instance, heartbeats.next()));
                forget_quiet_peers(listener);
            }
        }
    }
}

/// This connection's own heartbeats still to come back, and when each was sent.
#[derive(Default)]
struct Heartbeats {
    next: u64,
    /// Queued but not yet sent (the send time is taken when the batch goes out).
    queued: Vec<u64>,
    in_flight: VecDeque<(u64, Instant)>,
}

impl Heartbeats {
    fn next(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        self.queued.push(n);
        n
    }

    fn sending(&mut self) {
        let now = Instant::now();
        self.in_flight
            .extend(self.queued.drain(..).map(|n| (n, now)));
        // Ones that never came back are of no use: serving has lapsed by then anyway.
        while self.in_flight.len() > MAX_HEARTBEATS_IN_FLIGHT {
            self.in_flight.pop_front();
        }
    }

    /// When heartbeat `n` was sent, if it is one of ours still expected.
    fn came_back(&mut self, n: u64) -> Option<Instant> {
        let mut sent = None;
        while let Some(&(m, at)) = self.in_flight.front() {
            if m > n {
                break;
            }
            self.in_flight.pop_front();
            if m == n {
                sent = Some(at);
            }
        }
        sent
    }
}

fn handle(
    bus: &BusInner,
    listener: &Listener,
    note: Notification,
    outgoing: &mut Vec<String>,
    heartbeats: &mut Heartbeats,
) {
    if note.channel != bus.channel {
        return;
    }
    let Some(message) = parse(&note.payload) else {
        tracing::debug!(payload = %note.payload, "ignoring a message on the cache channel");
        return;
    };
    let now = Instant::now();
    match message {
        Message::Heartbeat { instance, n } if instance == bus.instance => {
            // Everything committed before this heartbeat has been handled. The first one
            // of a connection only starts the warm-up (see the module doc).
            let sent = n.and_then(|n| heartbeats.came_back(n).filter(|_| n >= 1));
            if let Some(sent) = sent {
                bus.cache
                    .serve_until(&listener.db, Some(sent + LIVE_WINDOW));
            }
        }
        Message::Heartbeat { instance, .. } => {
            let mut state = listener.lock();
            let peer = state.peers.entry(instance).or_insert(Peer {
                heard: now,
                suspect_since: None,
            });
            peer.heard = now;
            if peer.suspect_since.is_some_and(|since| since < now) {
                peer.suspect_since = None;
            }
        }
        Message::Invalidate { instance, .. } if instance == bus.instance => {}
        Message::Invalidate {
            instance,
            seq,
            database,
            tables,
        } => {
            if database != listener.db.name() {
                return;
            }
            let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
            bus.cache.invalidate_tables(&database, &tables);
            outgoing.push(format!("ack {} {instance} {seq}", bus.instance));
        }
        Message::Ack { from, origin, seq } if origin == bus.instance => {
            let mut state = listener.lock();
            if let Some(pending) = state.pending.get_mut(&seq) {
                pending.waiting.remove(&from);
                if pending.waiting.is_empty() {
                    if let Some(done) = pending.done.take() {
                        let _ = done.send(());
                    }
                }
            }
        }
        Message::Ack { .. } => {}
    }
}

fn forget_quiet_peers(listener: &Listener) {
    let now = Instant::now();
    listener
        .lock()
        .peers
        .retain(|_, p| now.duration_since(p.heard) < FORGET_AFTER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let tables = ["public.orders", "odd schema.\"t,1\" %x", "ü.t"];
        let chunks = chunk_tables("abc", "app db", &tables);
        assert_eq!(chunks.len(), 1);
        let payload = format!("inv abc 7 {} {}", escape("app db"), chunks[0]);
        assert!(payload.is_ascii());
        assert_eq!(
            parse(&payload),
            Some(Message::Invalidate {
                instance: "abc".into(),
                seq: 7,
                database: "app db".into(),
                tables: tables.iter().map(|t| t.to_string()).collect(),
            })
        );
        assert_eq!(
            parse("hb abc 3"),
            Some(Message::Heartbeat {
                instance: "abc".into(),
                n: Some(3)
            })
        );
        assert_eq!(
            parse("hb abc"),
            Some(Message::Heartbeat {
                instance: "abc".into(),
                n: None
            })
        );
        assert_eq!(
            parse("ack b a 9"),
            Some(Message::Ack {
                from: "b".into(),
                origin: "a".into(),
                seq: 9
            })
        );
        assert_eq!(parse("inv abc x db t"), None);
        assert_eq!(parse("inv abc 1 db %zz"), None);
        assert_eq!(parse("hello"), None);
    }

    #[test]
    fn long_table_lists_are_split_to_fit_a_payload() {
        let names: Vec<String> = (0..2000).map(|i| format!("public.table_{i}")).collect();
        let tables: Vec<&str> = names.iter().map(String::as_str).collect();
        let instance = "0123456789abcdef";
        let chunks = chunk_tables(instance, "appdb", &tables);
        assert!(chunks.len() > 1);
        let mut seen = Vec::new();
        for chunk in &chunks {
            let payload = format!("inv {instance} {} appdb {chunk}", u64::MAX);
            assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
            let Some(Message::Invalidate { tables, .. }) = parse(&payload) else {
                panic!("{payload}");
            };
            seen.extend(tables);
        }
        assert_eq!(seen, names);
    }

    #[test]
    fn heartbeats_come_back_in_order() {
        let mut hb = Heartbeats::default();
        assert_eq!(hb.next(), 0);
        assert_eq!(hb.next(), 1);
        hb.sending();
        assert!(hb.came_back(1).is_some(), "0 is skipped over");
        assert!(hb.came_back(0).is_none());
        assert!(hb.came_back(5).is_none(), "not ours");
    }

    #[test]
    fn notify_sql_quotes_everything() {
        let sql = notify_sql("pgward_cache", &["hb a 1".into(), "it's".into()]);
        assert!(sql.contains("E'hb a 1', E'it''s'"), "{sql}");
        assert!(sql.starts_with("SELECT pg_catalog.pg_notify(E'pgward_cache', p)"));
    }
}
