//! The result cache: complete read results (the server's response frames, replayed as they
//! came) kept in memory, bounded in bytes, and never served after a write that could have
//! changed them.
//!
//! # Freshness by generations
//! A process-wide clock ticks once for every event below, so tick values order them.
//! - Each table (per database) has a generation: the tick of its last invalidation.
//!   [`ResultCache::invalidate_tables`] gives it a new one.
//! - A fill takes a tick when it starts, *before* its query goes to the server
//!   ([`ResultCache::begin_fill`]), and stores that tick with the entry.
//! - An entry is good while every table it read has a generation older than its start, and
//!   neither the whole cache nor its database was flushed since (an epoch, also a tick).
//!
//! So a write that is invalidated after it committed (and before its commit is returned to
//! its client) also rejects every fill that started before the invalidation, including a miss
//! that was in flight while the write committed: its rows may predate the write. Entries are
//! checked at every lookup; a stale one is removed then.
//!
//! # Serving
//! Hits for a database are served only while its invalidation listener (see [`bus`]) is up
//! and has recently heard itself; whenever it is not, the database's entries are flushed,
//! because messages may have been missed.
//!
//! # Coalescing
//! Concurrent identical misses run one query: the first caller leads, the others follow and
//! wait (bounded) for the leader to fill, then look again.

pub mod bus;
mod hint;
mod key;
mod presence;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use globset::{Candidate, GlobSet, GlobSetBuilder};
use moka::notification::RemovalCause;
use tokio::sync::watch;

use crate::config::{table_glob, CacheConfig};
use crate::metrics;
use presence::Presence;

pub use hint::{leading_hint, CacheHint};
pub use key::{Key, KeyBuilder};

/// The table name that stands for every table of a database in an invalidation.
pub const EVERY_TABLE: &str = "*";

/// What an entry costs beyond its response and key bytes (entry, moka's node, the key's and
/// the entry's allocations), an estimate.
const ENTRY_OVERHEAD: usize = 256;
/// And per table the entry read.
const TABLE_OVERHEAD: usize = 16;

/// The result cache and its invalidation bus, as the daemon holds them (None in the state
/// when `[cache]` is off).
#[derive(Clone)]
pub struct Cache {
    pub results: ResultCache,
    pub bus: bus::Bus,
}

impl Cache {
    /// Makes no connection yet: each database's listener starts on `bus.ensure`.
    pub fn new(config: &CacheConfig, login: bus::LoginSource) -> Result<Cache, String> {
        let results = ResultCache::new(config)?;
        let bus = bus::Bus::new(
            results.clone(),
            config,
            login,
            &tokio_util::sync::CancellationToken::new(),
        );
        Ok(Cache { results, bus })
    }
}

/// A cached result: the response frames to replay and what it read.
pub struct Entry {
    response: Bytes,
    tables: Box<[TableGeneration]>,
    /// The clock's tick when the fill started.
    started: u64,
    ttl: Duration,
}

impl Entry {
    /// The server's response frames, exactly as they came.
    pub fn response(&self) -> &Bytes {
        &self.response
    }

    /// The `schema.table` names the result read.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.tables.iter().map(|t| &*t.name)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("bytes", &self.response.len())
            .field("tables", &self.tables().collect::<Vec<_>>())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A table's name (interned per database) and its generation.
#[derive(Clone)]
struct TableGeneration {
    name: Arc<str>,
    generation: Arc<AtomicU64>,
}

/// Taken when a fill starts, before its query is sent; [`ResultCache::finish_fill`] stores the
/// result only if nothing it read was invalidated since.
pub struct FillTicket {
    db: Database,
    tables: Box<[TableGeneration]>,
    started: u64,
}

/// One database's share of the cache: whether it serves, its epoch and its tables'
/// generations. Cheap to clone; a session takes one when it starts.
#[derive(Clone)]
pub struct Database(Arc<DbState>);

struct DbState {
    name: Arc<str>,
    /// Tick of the last flush of this database.
    epoch: AtomicU64,
    /// Milliseconds (see `now_ms`) until which hits are served; 0: not serving.
    serve_until: AtomicU64,
    /// Read-mostly: a fill of a table seen before takes the read lock only. Tables are
    /// never removed, so a generation handle stays valid for good.
    tables: RwLock<HashMap<Arc<str>, Arc<AtomicU64>>>,
}

impl Database {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Whether hits are served now.
    pub fn serving(&self) -> bool {
        now_ms() < self.0.serve_until.load(Ordering::Acquire)
    }

    fn generation(&self, table: &str) -> Option<TableGeneration> {
        let tables = self.0.tables.read().unwrap_or_else(PoisonError::into_inner);
        tables
            .get_key_value(table)
            .map(|(name, generation)| TableGeneration {
                name: name.clone(),
                generation: generation.clone(),
            })
    }

    fn generation_or_new(&self, table: &str) -> TableGeneration {
        if let Some(found) = self.generation(table) {
            return found;
        }
        let mut tables = self
            .0
            .tables
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let name: Arc<str> = table.into();
        let generation = tables
            .entry(name.clone())
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone();
        TableGeneration { name, generation }
    }
}

/// What a lookup found.
pub enum Lookup {
    /// The cache does not serve this database now (its listener is down): run the query
    /// and fill nothing.
    Bypass,
    /// Answer with these frames.
    Hit(Arc<Entry>),
    /// A miss, and this caller runs the query: `begin_fill` before sending it, `finish`
    /// with the response. Dropping the guard (on failure, a result too large, a cancelled
    /// client) lets the followers go.
    Lead(LeaderGuard),
    /// The same query is in flight for another client: wait for it.
    Follow(Follower),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lookup::Bypass => "Bypass",
            Lookup::Hit(_) => "Hit",
            Lookup::Lead(_) => "Lead",
            Lookup::Follow(_) => "Follow",
        })
    }
}

/// The one caller running a missed query; see [`Lookup::Lead`].
pub struct LeaderGuard {
    cache: ResultCache,
    key: Key,
    /// Its receiver is in the in-flight map; dropping the sender wakes the followers.
    done: watch::Sender<()>,
}

impl LeaderGuard {
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// [`ResultCache::begin_fill`] for this key's database.
    pub fn begin_fill(&self, tables: &[&str]) -> FillTicket {
        self.cache.begin_fill(self.key.database(), tables)
    }

    /// Stores the response (see [`ResultCache::finish_fill`]), then wakes the followers.
    pub fn finish(self, ticket: FillTicket, response: Bytes, ttl: Option<Duration>) -> bool {
        self.cache.finish_fill(ticket, &self.key, response, ttl)
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let mut inflight = self
            .cache
            .inner
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if inflight
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.done.subscribe()))
        {
            inflight.remove(&self.key);
        }
        // `done` drops after this, which wakes the followers.
    }
}

/// A caller waiting for the leader of the same query; see [`Lookup::Follow`].
pub struct Follower {
    cache: ResultCache,
    key: Key,
    done: watch::Receiver<()>,
}

impl Follower {
    /// Waits up to `limit` for the leader, then looks again. None: still no entry (the
    /// leader failed, its result was not cacheable, or it is slow); the caller runs the
    /// query itself, and may fill with `begin_fill`/`finish_fill`.
    pub async fn wait(mut self, limit: Duration) -> Option<Arc<Entry>> {
        // The sender is never used to send: `changed` returns when it is dropped.
        let _ = tokio::time::timeout(limit, self.done.changed()).await;
        let found = if self.key.database().serving() {
            self.cache.get_valid(&self.key)
        } else {
            None
        };
        match found {
            Some(entry) => {
                metrics::cache_hit();
                Some(entry)
            }
            None => {
                metrics::cache_miss();
                None
            }
        }
    }
}

/// The result cache. Cheap to clone (all clones share one cache).
#[derive(Clone)]
pub struct ResultCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: moka::sync::Cache<Key, Arc<Entry>, crate::ClientKeyHasher>,
    /// The keys `entries` may hold: a miss ends here, without walking moka's buckets.
    presence: Arc<Presence>,
    enabled: bool,
    ttl: Duration,
    max_entry_size: u64,
    filter: TableFilter,
    /// Source of the ticks that order invalidations and fills.
    clock: AtomicU64,
    /// Tick of the last flush of everything.
    epoch: AtomicU64,
    databases: RwLock<HashMap<Arc<str>, Database>>,
    /// Queries in flight by their leaders, with the channel their followers wait on.
    inflight: Mutex<HashMap<Key, watch::Receiver<()>>>,
}

/// Each entry's own TTL (the default, or a hint's).
struct EntryExpiry;

impl moka::Expiry<Key, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(&self, _: &Key, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

fn weigh(key: &Key, entry: &Arc<Entry>) -> u32 {
    let bytes =
        entry.response.len() + key.len() + ENTRY_OVERHEAD + entry.tables.len() * TABLE_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl ResultCache {
    /// A cache as `config` describes it. Errs on a table pattern that does not compile
    /// (`pgward check` reports those first).
    pub fn new(config: &CacheConfig) -> Result<ResultCache, String> {
        // Every entry weighs at least ENTRY_OVERHEAD: no more can fit.
        let most_entries = usize::try_from(config.max_size).unwrap_or(usize::MAX) / ENTRY_OVERHEAD;
        let presence = Arc::new(Presence::new(most_entries));
        let removed = presence.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_size)
            .weigher(weigh)
            .expire_after(EntryExpiry)
            .eviction_listener(move |key: Arc<Key>, _, cause| {
                removed.remove(key.hash());
                match cause {
                    RemovalCause::Size => metrics::cache_eviction(),
                    RemovalCause::Explicit => metrics::cache_invalidation(),
                    RemovalCause::Expired | RemovalCause::Replaced => {}
                }
            })
            .build_with_hasher(Default::default());
        Ok(ResultCache {
            inner: Arc::new(Inner {
                entries,
                presence,
                enabled: config.enabled,
                ttl: config.ttl,
                max_entry_size: config.max_entry_size,
                filter: TableFilter::new(config)?,
                clock: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                databases: RwLock::default(),
                inflight: Mutex::default(),
            }),
        })
    }

    /// `cache.enabled`.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Responses larger than this are not cached: stop collecting a response beyond it.
    pub fn max_entry_size(&self) -> u64 {
        self.inner.max_entry_size
    }

    /// The handle of a database (made on first use).
    pub fn database(&self, name: &str) -> Database {
        let databases = self
            .inner
            .databases
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = databases.get(name) {
            return db.clone();
        }
        drop(databases);
        let mut databases = self
            .inner
            .databases
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        databases
            .entry(name.into())
            .or_insert_with(|| {
                Database(Arc::new(DbState {
                    name: name.into(),
                    epoch: AtomicU64::new(0),
                    serve_until: AtomicU64::new(0),
                    tables: RwLock::default(),
                }))
            })
            .clone()
    }

    /// The next tick of the clock: every call returns a larger value than all before it.
    fn tick(&self) -> u64 {
        self.inner.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether a result started at tick `started`, reading `tables`, is still good.
    fn fresh(&self, db: &Database, started: u64, tables: &[TableGeneration]) -> bool {
        self.inner.epoch.load(Ordering::SeqCst) < started
            && db.0.epoch.load(Ordering::SeqCst) < started
            && tables
                .iter()
                .all(|t| t.generation.load(Ordering::SeqCst) < started)
    }

    /// The entry for `key` if it is there and fresh; a stale one is removed.
    fn get_valid(&self, key: &Key) -> Option<Arc<Entry>> {
        if !self.inner.presence.may_contain(key.hash()) {
            return None;
        }
        let entry = self.inner.entries.get(key)?;
        if self.fresh(key.database(), entry.started, &entry.tables) {
            return Some(entry);
        }
        // Counted as an invalidation by the removal listener.
        self.inner.entries.invalidate(key);
        None
    }

    /// Looks `key` up: a hit, or the lead of the query, or a place behind its leader.
    /// Counts a hit or a miss (a follower counts when it has waited).
    pub fn lookup_or_lead(&self, key: &Key) -> Lookup {
        if !key.database().serving() {
            metrics::cache_miss();
            return Lookup::Bypass;
        }
        if let Some(entry) = self.get_valid(key) {
            metrics::cache_hit();
            return Lookup::Hit(entry);
        }
        let mut inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = inflight.get(key) {
            return Lookup::Follow(Follower {
                cache: self.clone(),
                key: key.clone(),
                done: done.clone(),
            });
        }
        let (done, rx) = watch::channel(());
        inflight.insert(key.clone(), rx);
        drop(inflight);
        metrics::cache_miss();
        Lookup::Lead(LeaderGuard {
            cache: self.clone(),
            key: key.clone(),
            done,
        })
    }

    /// Call before the query of a fill is sent: what it reads, as `schema.table` names.
    pub fn begin_fill(&self, db: &Database, tables: &[&str]) -> FillTicket {
        // The generation handles exist before the tick, so an invalidation that ticks
        // later finds them (see `invalidate_tables`).
        let tables: Box<[TableGeneration]> =
            tables.iter().map(|t| db.generation_or_new(t)).collect();
        FillTicket {
            db: db.clone(),
            tables,
            started: self.tick(),
        }
    }

    /// Stores `response` (the concatenated frames to replay) under `key`, for `ttl` or
    /// `cache.ttl`, unless something it read was invalidated since `begin_fill`, the database
    /// does not serve now, or it is larger than `cache.max_entry_size`. Returns whether it
    /// was stored.
    pub fn finish_fill(
        &self,
        ticket: FillTicket,
        key: &Key,
        response: Bytes,
        ttl: Option<Duration>,
    ) -> bool {
        let ttl = ttl.unwrap_or(self.inner.ttl);
        if !Arc::ptr_eq(&ticket.db.0, &key.database().0)
            || response.len() as u64 > self.inner.max_entry_size
            || ttl.is_zero()
            || !key.database().serving()
            || !self.fresh(&ticket.db, ticket.started, &ticket.tables)
        {
            return false;
        }
        let entry = Arc::new(Entry {
            response,
            tables: ticket.tables,
            started: ticket.started,
            ttl,
        });
        // An invalidation that ticks between the check and the insert is caught by the
        // next lookup, which checks again. Counted in before it is there, so a lookup
        // never skips an entry that is.
        self.inner.presence.add(key.hash());
        self.inner.entries.insert(key.clone(), entry);
        true
    }

    /// Marks `tables` (`schema.table`) of `database` as written: every entry that read one
    /// of them, and every fill of one that started before, is stale from now on.
    pub fn invalidate_tables(&self, database: &str, tables: &[&str]) {
        let db = self.database(database);
        // `*`: something may have written anywhere (a function, DDL, unanalysable text).
        if tables.contains(&EVERY_TABLE) {
            return self.flush_database(&db);
        }
        let tick = self.tick();
        // A table without a generation has no entry and no fill under way: a fill creates
        // the generation before it ticks, so one that ticks after us is newer anyway.
        for table in tables {
            if let Some(t) = db.generation(table) {
                t.generation.fetch_max(tick, Ordering::SeqCst);
            }
        }
    }

    /// Drops every entry of every database that read `table` (admin `CACHE FLUSH table`).
    pub fn flush_table(&self, table: &str) {
        let databases: Vec<Database> = {
            let databases = self
                .inner
                .databases
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            databases.values().cloned().collect()
        };
        for db in databases {
            self.invalidate_tables(db.name(), &[table]);
        }
    }

    /// Drops everything (admin `CACHE FLUSH`).
    pub fn flush_all(&self) {
        let tick = self.tick();
        self.inner.epoch.fetch_max(tick, Ordering::SeqCst);
        self.inner.entries.invalidate_all();
    }

    /// Drops everything cached for `db`, and every fill of it under way.
    pub fn flush_database(&self, db: &Database) {
        let tick = self.tick();
        db.0.epoch.fetch_max(tick, Ordering::SeqCst);
    }

    /// Stops serving hits for `db` and flushes it: its listener is down, so invalidations
    /// may be missed from now on.
    pub fn stop_serving(&self, db: &Database) {
        db.0.serve_until.store(0, Ordering::Release);
        self.flush_database(db);
    }

    /// Serves hits for `db` until `until` (renewed by the listener as it hears itself), or
    /// for good with None (a cache without a bus, in tests).
    pub fn serve_until(&self, db: &Database, until: Option<Instant>) {
        let until = until.map_or(u64::MAX, |t| ms_since_base(t).max(1));
        db.0.serve_until.store(until, Ordering::Release);
    }

    /// Whether a result that read `table` (`schema.table`) may be cached: the allow-list
    /// (`cache.tables`), the exclusions, system catalogs only with `cache.system_catalogs`,
    /// temporary tables never.
    pub fn table_allowed(&self, table: &str) -> bool {
        self.inner.filter.allowed(table)
    }

    /// Bytes held (moka's weighted size, after its pending work).
    pub fn weighted_size(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.weighted_size()
    }

    /// Sets `pgward_cache_bytes`; called at scrape time.
    pub fn refresh_metrics(&self) {
        metrics::cache_bytes(self.weighted_size());
    }
}

/// `cache.tables`, `cache.exclude_tables` and the schemas never cached.
struct TableFilter {
    allow: Option<GlobSet>,
    exclude: GlobSet,
    system_catalogs: bool,
}

impl TableFilter {
    fn new(config: &CacheConfig) -> Result<TableFilter, String> {
        let set = |patterns: &[String]| -> Result<GlobSet, String> {
            let mut set = GlobSetBuilder::new();
            for pattern in patterns {
                set.add(table_glob(pattern)?);
            }
            set.build().map_err(|e| e.to_string())
        };
        Ok(TableFilter {
            allow: match config.tables.as_slice() {
                [] => None,
                patterns => Some(set(patterns)?),
            },
            exclude: set(&config.exclude_tables)?,
            system_catalogs: config.system_catalogs,
        })
    }

    fn allowed(&self, table: &str) -> bool {
        let schema = table.split_once('.').map_or("", |(schema, _)| schema);
        // Temporary tables belong to one server session: never shared.
        if schema.starts_with("pg_temp") || schema.starts_with("pg_toast_temp") {
            return false;
        }
        let system = matches!(schema, "pg_catalog" | "information_schema" | "pg_toast");
        if system && !self.system_catalogs {
            return false;
        }
        // Matching prepares the name as a path first: not for sets that match nothing.
        if self.allow.is_none() && self.exclude.is_empty() {
            return true;
        }
        let candidate = Candidate::new(table);
        if self
            .allow
            .as_ref()
            .is_some_and(|allow| !allow.is_match_candidate(&candidate))
        {
            return false;
        }
        !self.exclude.is_match_candidate(&candidate)
    }
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn ms_since_base(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_millis() as u64
}

fn now_ms() -> u64 {
    ms_since_base(Instant::now())
}

#[cfg(test)]
mod tests;
