//! The result-cache stage of the pipeline (transaction mode, a request outside a
//! transaction block). A cacheable read is answered from the cache, or runs on the primary
//! with its response captured and stored; writes invalidate the tables they touch, here at
//! once and everywhere (through the bus) before their commit reaches the client.
//!
//! Cacheable: one SELECT the analysis fully understands, reading only tables the catalog knows
//! (so no temporary tables) and the config allows, calling only immutable functions, touching
//! no encrypted column (so no plaintext is ever held here), as a simple Query or as
//! `[Parse] Bind [Describe] Execute Sync` of the unnamed portal. The key holds the database,
//! the server role, every setting the client made, the message shapes, the SQL text, the
//! parameters and all formats.

use std::time::Duration;

use bytes::Bytes;

use crate::cache::{self, CacheHint, FillTicket, KeyBuilder, LeaderGuard, Lookup};
use crate::protocol::messages::{self, tag, Reader};
use crate::protocol::Frame;
use crate::sql::{Action, Analysis, Class, Kind};

use super::Session;

/// How long a request waits for another client filling the same entry. Long: the leader's
/// guard wakes the followers as soon as it is done or gone (failed, too large, client left),
/// so this only bounds a query that runs very long.
const FOLLOW_LIMIT: Duration = Duration::from_secs(30);

/// Response messages a cached entry may hold (no ParameterStatus, no error).
const REPLAYABLE: &[u8] = b"12tTnDCIsN";

/// A fill under way: the leader's guard and what the client has been sent so far.
pub(super) struct Fill {
    guard: LeaderGuard,
    ticket: FillTicket,
    ttl: Option<Duration>,
    response: Vec<u8>,
    /// Larger than `cache.max_entry_size`, or an answer that must not be replayed.
    spoiled: bool,
}

/// What the current transaction wrote, published when it ends.
#[derive(Default)]
pub(super) struct Writes {
    tables: Vec<String>,
    /// Something may have written anywhere (a function, DO, unanalysable text): the whole
    /// database is invalidated.
    everything: bool,
}

/// What the cache stage decided for a request.
pub(super) enum Cached {
    /// Answered from the cache: nothing to send.
    Answered,
    /// Run it on the primary and store the response.
    Fill(Box<Fill>),
    /// Not the cache's business.
    Pass,
}

impl Session {
    /// Answers `frames` from the cache when it can, or sets up a fill.
    pub(super) async fn cache_lookup(&mut self, frames: &[Frame]) -> Cached {
        let Some(cache) = self.state.cache.clone() else {
            return Cached::Pass;
        };
        // Boxed, so that a deployment without the cache does not carry its future's size in
        // every request's.
        Box::pin(self.cache_lookup_in(cache, frames)).await
    }

    async fn cache_lookup_in(&mut self, cache: crate::cache::Cache, frames: &[Frame]) -> Cached {
        let Some((key, tables, ttl)) = self.cache_key(&cache, frames).await else {
            return Cached::Pass;
        };
        let lookup = cache.results.lookup_or_lead(&key);
        let entry = match lookup {
            Lookup::Bypass => return Cached::Pass,
            Lookup::Hit(entry) => entry,
            Lookup::Follow(follower) => match follower.wait(FOLLOW_LIMIT).await {
                Some(entry) => entry,
                None => return Cached::Pass,
            },
            Lookup::Lead(guard) => {
                let names: Vec<&str> = tables.iter().map(String::as_str).collect();
                let ticket = guard.begin_fill(&names);
                return Cached::Fill(Box::new(Fill {
                    guard,
                    ticket,
                    ttl,
                    // Most answers are a few rows: no regrowth from nothing.
                    response: Vec::with_capacity(512),
                    spoiled: false,
                }));
            }
        };
        self.replay(entry.response(), frames);
        Cached::Answered
    }

    /// Writes a cached response and its ReadyForQuery, and keeps the session's books as if
    /// the server had answered.
    fn replay(&mut self, response: &Bytes, frames: &[Frame]) {
        crate::metrics::query(crate::metrics::Route::Cache);
        self.client_w.queue(response);
        messages::ready_for_query(self.client_w.buffer(), b'I');
        // The unnamed statement now exists for the client, as it would on a server.
        for frame in frames.iter().filter(|f| f.tag() == tag::PARSE) {
            self.remember_unnamed(frame.clone());
        }
    }

    /// Keeps an unnamed Parse answered from the cache, so a later Bind without a Parse finds
    /// the statement (as `on_parse` does for one a server saw).
    fn remember_unnamed(&mut self, frame: Frame) {
        let Ok(parse) = messages::read_parse(frame.body()) else {
            return;
        };
        if !parse.name.is_empty() || self.kept_unnamed(&frame).is_some() {
            return;
        }
        let effects = self.effects(parse.query);
        let reads = self.class_of(parse.query) == Class::Read;
        self.keep_unnamed(&frame, parse.query, effects, reads);
    }

    /// The key, the tables read and the TTL of a cacheable request; None when it is not one.
    async fn cache_key(
        &mut self,
        cache: &cache::Cache,
        frames: &[Frame],
    ) -> Option<(cache::Key, Vec<String>, Option<Duration>)> {
        let (source, bind) = cacheable_shape(frames)?;
        let named;
        let (sql, param_types) = match source {
            Source::Text { sql, param_types } => (sql, param_types),
            Source::Named(name) => {
                named = self.statements.get(name)?.clone();
                (&named.query[..], &named.param_types[..])
            }
        };
        let text = std::str::from_utf8(sql).ok()?;
        let ttl = match cache::leading_hint(text) {
            Some(CacheHint::NoCache) => return None,
            Some(CacheHint::Cache { ttl }) => ttl,
            None => None,
        };
        let analysis = self.analyze(sql);
        if !cacheable(&analysis) {
            return None;
        }
        if let Some(crypto) = self.state.runtime.load().crypto.clone() {
            let info = &analysis.statements[0];
            if info
                .tables
                .iter()
                .any(|t| crypto.tables().any(|(_, name)| name == t.name))
            {
                return None;
            }
        }
        let (snapshot, path_certain) = self.snapshot_for(&analysis).await.ok()?;
        if !path_certain {
            return None;
        }
        let subject = self.subject(&snapshot, true);
        let mut tables = Vec::new();
        for name in &analysis.statements[0].tables {
            // Only relations the catalog knows: a temporary table is not in it.
            let mut table = snapshot.find(name, subject.search_path())?;
            table.push('.');
            table.push_str(&name.name);
            if !cache.results.table_allowed(&table) {
                return None;
            }
            tables.push(table);
        }
        // Once is enough: a database's listener stays in the bus for good (it reconnects on
        // its own) and its handle is never replaced.
        let db = self.cache_db.get_or_insert_with(|| {
            cache.bus.ensure(&self.client.info.database);
            cache.results.database(&self.client.info.database)
        });
        let mut key = KeyBuilder::new(db, &self.pool_user);
        // In the order of their names (a BTreeMap's).
        for (name, value) in &self.wanted {
            key.setting(name, value);
        }
        // At most five messages (cacheable_shape).
        let mut shape = [0u8; 5];
        for (tag, frame) in shape.iter_mut().zip(frames) {
            *tag = frame.tag();
        }
        key.shape(shape.get(..frames.len())?)
            .shape(param_types)
            .sql(text);
        if let Some(bind) = bind {
            bind.add_to(&mut key)?;
        }
        Some((key.finish(), tables, ttl))
    }

    /// Collects what the client is sent while a fill runs: the bytes its buffer gained from
    /// `mark` on (read in place, not copied out first).
    pub(super) fn capture(&mut self, mark: usize) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        if fill.spoiled {
            return;
        }
        let bytes = &self.client_w.queued()[mark..];
        let limit = self
            .state
            .cache
            .as_ref()
            .map_or(0, |c| c.results.max_entry_size()) as usize;
        if fill.response.len() + bytes.len() > limit || !replayable(bytes) {
            fill.spoiled = true;
            fill.response = Vec::new();
            return;
        }
        fill.response.extend_from_slice(bytes);
    }

    /// The request being filled has its answer: store it (unless spoiled).
    pub(super) fn finish_fill(&mut self) {
        let Some(fill) = self.fill.take() else {
            return;
        };
        let Fill {
            guard,
            ticket,
            ttl,
            response,
            spoiled,
        } = *fill;
        if !spoiled {
            guard.finish(ticket, Bytes::from(response), ttl);
        }
    }

    /// Notes what a statement about to run writes; it is invalidated here now, and
    /// everywhere when its transaction ends.
    pub(super) fn note_cache_writes(&mut self, sql: &[u8]) {
        let Some(cache) = self.state.cache.clone() else {
            return;
        };
        let analysis = self.analyze(sql);
        if analysis.class == Class::Read
            || matches!(analysis.class, Class::Begin { .. } | Class::TxnControl)
        {
            return;
        }
        let catalog = self
            .known
            .get()
            .catalog
            .as_ref()
            .and_then(|e| e.current(Duration::MAX).0);
        let path = catalog.as_ref().map(|snapshot| self.search_path(snapshot));
        let mut tables = Vec::new();
        let mut everything = !analysis.understood();
        for info in &analysis.statements {
            everything |= info.functions.iter().any(|f| f.writes)
                || matches!(info.kind, Kind::Ddl | Kind::Admin);
            for &(table, action) in &info.accesses {
                if action == Action::Select {
                    continue;
                }
                let name = &info.tables[table];
                if name.is_database() {
                    everything = true;
                    continue;
                }
                let schema = match (&name.schema, &catalog) {
                    (Some(schema), _) => Some(schema.clone()),
                    (None, Some(snapshot)) => {
                        snapshot.find(name, path.as_deref().unwrap_or_default())
                    }
                    (None, None) => None,
                };
                match schema {
                    Some(schema) => tables.push(format!("{schema}.{}", name.name)),
                    // Not resolvable for sure: every table of that name, in any schema.
                    None => everything = true,
                }
            }
        }
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        if everything {
            cache
                .results
                .invalidate_tables(&self.client.info.database, &[cache::EVERY_TABLE]);
        } else if !names.is_empty() {
            cache
                .results
                .invalidate_tables(&self.client.info.database, &names);
        }
        self.writes.everything |= everything;
        for table in tables {
            if !self.writes.tables.contains(&table) {
                self.writes.tables.push(table);
            }
        }
    }

    /// Whether a transaction that wrote has ended and must be announced before its
    /// ReadyForQuery reaches the client.
    pub(super) fn writes_pending(&self) -> bool {
        self.writes.everything || !self.writes.tables.is_empty()
    }

    /// Announces the ended transaction's writes to every instance (and here), waiting up to
    /// `cache.ack_timeout` for the others.
    pub(super) async fn publish_writes(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        let Some(cache) = self.state.cache.clone() else {
            return;
        };
        let mut tables: Vec<&str> = writes.tables.iter().map(String::as_str).collect();
        if writes.everything {
            tables = vec![cache::EVERY_TABLE];
        }
        let published = cache.bus.publish(&self.client.info.database, &tables).await;
        if !published.sent || !published.missing.is_empty() {
            tracing::warn!(client = self.client.info.id, database = %self.client.info.database, sent = published.sent, missing = ?published.missing, "cache invalidation not acknowledged by every pgward instance");
        }
    }
}

/// Whether every frame of a captured response may be replayed.
fn replayable(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if !REPLAYABLE.contains(&bytes[0]) || bytes.len() < 1 + len {
            return false;
        }
        bytes = &bytes[1 + len..];
    }
    bytes.is_empty()
}

/// A single understood SELECT of immutable functions only.
fn cacheable(analysis: &Analysis) -> bool {
    let [info] = analysis.statements.as_slice() else {
        return false;
    };
    analysis.understood()
        && analysis.class == Class::Read
        && info.kind == Kind::Select
        && info.functions.iter().all(|f| !f.volatile && !f.writes)
        && info
            .accesses
            .iter()
            .all(|&(_, action)| action == Action::Select)
        && info.tables.iter().all(|t| !t.is_database())
}

/// The parts of a Bind that change a result.
struct BindParts<'a> {
    body: &'a [u8],
}

impl BindParts<'_> {
    fn add_to(&self, key: &mut KeyBuilder) -> Option<()> {
        let mut r = Reader::new(self.body);
        r.cstr_bytes().ok()?;
        r.cstr_bytes().ok()?;
        // Format codes go in as the message has them (the same bytes as their i16s).
        let n = r.i16().ok()?.max(0) as usize;
        key.param_formats(r.take(2 * n).ok()?);
        let count = r.i16().ok()?.max(0);
        for _ in 0..count {
            let len = r.i32().ok()?;
            key.param((len >= 0).then(|| r.take(len as usize)).transpose().ok()?);
        }
        let n = r.i16().ok()?.max(0) as usize;
        key.result_formats(r.take(2 * n).ok()?);
        Some(())
    }
}

/// Where a cacheable request's SQL text is.
enum Source<'a> {
    /// In the request: a Query, or a Parse of the unnamed statement.
    Text {
        sql: &'a [u8],
        param_types: &'a [u8],
    },
    /// A named statement the client prepared before.
    Named(&'a str),
}

/// The SQL source and Bind of a request of a cacheable shape: a lone Query, or
/// `[Parse(unnamed)] Bind(unnamed portal) [Describe(portal)] Execute(all rows) Sync`.
fn cacheable_shape(frames: &[Frame]) -> Option<(Source<'_>, Option<BindParts<'_>>)> {
    if let [query] = frames {
        if query.tag() != tag::QUERY {
            return None;
        }
        let sql = messages::read_query(query.body()).ok()?;
        return Some((
            Source::Text {
                sql,
                param_types: &[],
            },
            None,
        ));
    }
    let (parse, rest) = match frames.first() {
        Some(first) if first.tag() == tag::PARSE => (Some(first), &frames[1..]),
        _ => (None, frames),
    };
    let shape_ok = match rest {
        [b, e, s] => (b.tag(), e.tag(), s.tag()) == (tag::BIND, tag::EXECUTE, tag::SYNC),
        [b, d, e, s] => {
            (b.tag(), d.tag(), e.tag(), s.tag())
                == (tag::BIND, tag::DESCRIBE, tag::EXECUTE, tag::SYNC)
        }
        _ => false,
    };
    if !shape_ok {
        return None;
    }
    let bind = &rest[0];
    let mut r = Reader::new(bind.body());
    let portal = r.cstr().ok()?;
    let name = r.cstr().ok()?;
    if !portal.is_empty() {
        return None;
    }
    let execute = &rest[rest.len() - 2];
    let mut r = Reader::new(execute.body());
    if !r.cstr().ok()?.is_empty() || r.i32().ok()? != 0 {
        return None;
    }
    if rest.len() == 4 {
        let mut r = Reader::new(rest[1].body());
        if r.u8().ok()? != b'P' || !r.cstr().ok()?.is_empty() {
            return None;
        }
    }
    let source = match parse {
        Some(parse) => {
            let parse = messages::read_parse(parse.body()).ok()?;
            if !parse.name.is_empty() || !name.is_empty() {
                return None;
            }
            Source::Text {
                sql: parse.query,
                param_types: parse.param_types,
            }
        }
        None if name.is_empty() => return None,
        None => Source::Named(name),
    };
    Some((source, Some(BindParts { body: bind.body() })))
}
