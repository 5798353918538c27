//! SQL analysis for routing: which statements may run on a streaming replica.
//!
//! Each SQL string is parsed once with sqlparser (PostgreSQL dialect) and the
//! resulting [`Analysis`] is cached by the text with its constants replaced (see
//! `normalize`), so the hot path of a repeated statement is one cache lookup. The
//! analysis is deliberately conservative: only what certainly only reads is
//! [`Class::Read`]; see `classify.rs` for the rules.
//!
//! Robustness: parsing runs on analysis worker threads with large stacks (see
//! [`Analyzer`]), and text nested deeper than sqlparser handles in bounded time is
//! not parsed (see `analyze_text`). Both fall back to Write, never to a crash.

pub mod analysis;
mod classify;
mod copy;
pub(crate) mod hint;
mod normalize;
mod walk;

use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;

use moka::sync::Cache;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

pub use analysis::{
    Action, AssignTarget, Assigned, Assignment, ColumnContext, ColumnRef, CompareOp, Context,
    CopyFormat, CopyInfo, Kind, Output, RelName, StatementInfo, ValueSource, ValueTarget, ValueUse,
};
use classify::WriteFunctions;

/// What the router needs to know about one SQL string (which may hold several statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub class: Class,
    /// A leading routing hint comment, if any.
    pub hint: Option<RouteHint>,
    /// `SET pgward.route = ...` / `RESET pgward.route` (the whole string is just that one statement).
    pub route_setting: Option<RouteSetting>,
    /// false when sqlparser could not parse the text (class is then Class::Write,
    /// or Begin/TxnControl when the tokens plainly start a transaction statement
    /// sqlparser does not know, such as ABORT or BEGIN ... DEFERRABLE).
    pub parsed: bool,
    /// One description per statement of the text (empty when it did not parse).
    pub statements: Vec<StatementInfo>,
    /// Identifies this analysis among all made by the process, so later stages can cache
    /// their own verdicts by it (a re-analysed text gets a new id).
    pub id: u64,
}

impl Analysis {
    /// Whether every statement was understood: parsed and described, or one of the few
    /// statements sqlparser cannot parse that touch no table (RESET, ABORT, ...).
    pub fn understood(&self) -> bool {
        (self.parsed || !self.statements.is_empty()) && self.statements.iter().all(|s| s.understood)
    }
}

/// Source of [`Analysis::id`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Where a SQL string may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Every statement only reads: safe on a replica.
    Read,
    /// Anything that writes, locks, calls a function that writes, or is not understood.
    Write,
    /// BEGIN / START TRANSACTION. read_only = true only for an explicit READ ONLY access mode.
    Begin { read_only: bool },
    /// COMMIT / ROLLBACK / END / ABORT / PREPARE TRANSACTION, and also SAVEPOINT /
    /// RELEASE / ROLLBACK TO: all of them only act on the current transaction block.
    /// COMMIT PREPARED / ROLLBACK PREPARED are Write: they finish a two-phase
    /// transaction on the primary and cannot run inside a block.
    TxnControl,
}

/// A leading `/* pgward:primary */` or `/* pgward:replica */` comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteHint {
    Primary,
    Replica,
}

/// The value of the session setting `pgward.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSetting {
    Primary,
    Replica,
    /// Route by analysis; also what `RESET pgward.route` and `SET ... TO DEFAULT` give.
    Auto,
}

/// Whether `needle` occurs in `hay`, ignoring ASCII case.
pub fn contains_ignore_case(hay: &[u8], needle: &Needle) -> bool {
    needle.bytes.is_empty() || find_ignore_case(hay, needle).next().is_some()
}

/// The startup parameter and setting name that steer routing (`SET pgward.route = replica`).
pub const ROUTE_PARAM: &str = "pgward.route";

/// `ROUTE_PARAM`, to search a text for.
pub const ROUTE_PARAM_NEEDLE: Needle = Needle::new(ROUTE_PARAM.as_bytes());

/// An ASCII string searched for with `find_ignore_case`, and where its least common byte
/// (`RARITY`) is: worked out when the constant is built, not at every search.
#[derive(Debug, Clone, Copy)]
pub struct Needle {
    bytes: &'static [u8],
    rarest: usize,
}

impl Needle {
    pub const fn new(bytes: &'static [u8]) -> Needle {
        let mut rarest = 0;
        let mut i = 1;
        while i < bytes.len() {
            if RARITY[bytes[i] as usize] > RARITY[bytes[rarest] as usize] {
                rarest = i;
            }
            i += 1;
        }
        Needle { bytes, rarest }
    }

    pub fn bytes(&self) -> &'static [u8] {
        self.bytes
    }
}

/// Where `needle` (not empty) occurs in `hay`, ignoring ASCII case. Candidates are found a
/// word at a time by the needle's least common byte: most texts asked about do not have the
/// needle, and a common first letter (the `c` of `copy`) would stop the search at every word
/// that has one, each stop costing a new search.
pub(crate) fn find_ignore_case<'a>(
    hay: &'a [u8],
    needle: &'a Needle,
) -> impl Iterator<Item = usize> + 'a {
    let (bytes, at) = (needle.bytes, needle.rarest);
    let key = bytes.get(at).copied().unwrap_or_default();
    let candidates = match hay.len().checked_sub(bytes.len()) {
        Some(last_start) if !bytes.is_empty() => &hay[at..=last_start + at],
        _ => &[],
    };
    let (lower, upper) = (key.to_ascii_lowercase(), key.to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, candidates)
        .filter(move |&i| hay[i..i + bytes.len()].eq_ignore_ascii_case(bytes))
}

/// How rare a byte is in SQL text, higher for rarer: letters by their frequency in English
/// (either case), space the most common, every other byte rarer than any letter.
const RARITY: [u8; 256] = {
    const BY_FREQUENCY: &[u8] = b" etaoinsrhldcumfpgwybvkxjqz";
    let mut table = [BY_FREQUENCY.len() as u8; 256];
    let mut i = 0;
    while i < BY_FREQUENCY.len() {
        let b = BY_FREQUENCY[i];
        table[b as usize] = i as u8;
        table[b.to_ascii_uppercase() as usize] = i as u8;
        i += 1;
    }
    table
};

/// Texts longer than this are analysed every time instead of cached, so one-off
/// huge strings (bulk INSERTs) cannot fill the cache's memory.
const MAX_CACHED_LEN: usize = 64 * 1024;

/// Texts whose brackets nest deeper than this are not parsed (see [`analyze_text`]).
/// The worst construct measured costs about 0.2 s of CPU at this depth, error case.
const MAX_BRACKET_DEPTH: usize = 10;

/// Stack for parsing at sqlparser's recursion limit (50 levels). Debug builds need
/// up to 8 MiB for the worst shapes measured (nested subqueries, CASE, casts).
const PARSE_BASE_STACK: usize = 16 * 1024 * 1024;

/// Extra stack per byte of SQL: walking and dropping a left-deep chain recurses
/// once per operator, at least two bytes each. Measured at about 1.5 KiB in debug
/// builds and 50 bytes in release builds.
const STACK_PER_BYTE: usize = if cfg!(debug_assertions) { 4096 } else { 256 };

/// Stack of each long-lived analysis worker (address space; pages are committed
/// only as used). Texts that need more get a thread of their own.
const WORKER_STACK: usize = 64 * 1024 * 1024;

/// Texts that would need more stack than this are not parsed (Write).
const MAX_HELPER_STACK: usize = 1024 * 1024 * 1024;

/// At most this many analysis workers, however many cores.
const MAX_WORKERS: usize = 8;

/// Analyses SQL with a cache keyed by the SQL text (constants replaced). Built once
/// from config; cheap to share (clones share the cache and the workers).
///
/// Parsing never runs on the caller's stack: sqlparser's frames are large (about
/// 70 KiB per nesting level in debug builds, so 30 nested subqueries overflow a
/// 2 MiB tokio worker) and a long chain of binary operators or UNIONs builds a tree
/// as deep as the text is long, which is walked and dropped recursively. A stack
/// overflow aborts the whole proxy, so each uncached text is analysed on a worker
/// thread with a large stack (or, for very long texts, a thread sized for it) while
/// the caller blocks, as it would for an inline parse.
#[derive(Clone)]
pub struct Analyzer {
    cache: Cache<String, Arc<Analysis>, crate::ClientKeyHasher>,
    functions: Arc<WriteFunctions>,
    jobs: mpsc::Sender<Job>,
}

/// One text for a worker to analyse, with where to send the answer.
struct Job {
    sql: String,
    reply: Reply,
}

/// Where a worker sends an analysis: to a thread blocked on it, or to a task awaiting it.
enum Reply {
    Blocking(mpsc::SyncSender<Analysis>),
    Waiting(tokio::sync::oneshot::Sender<Analysis>),
}

impl Reply {
    /// The caller may have gone away; nothing to do then.
    fn send(self, analysis: Analysis) {
        match self {
            Reply::Blocking(tx) => drop(tx.send(analysis)),
            Reply::Waiting(tx) => drop(tx.send(analysis)),
        }
    }
}

/// The text `sql`'s analysis is cached under, constants normalized (see `normalize`); None
/// for a text too long to cache.
fn cache_text(sql: &str) -> Option<std::borrow::Cow<'_, str>> {
    if sql.len() > MAX_CACHED_LEN {
        return None;
    }
    Some(match normalize::normalize(sql) {
        Some(normalized) => std::borrow::Cow::Owned(normalized),
        None => std::borrow::Cow::Borrowed(sql),
    })
}

/// Where a text is parsed: sqlparser recurses, so the stack needed grows with the text.
enum Placement {
    /// On a long-lived worker; this much stack is needed.
    Worker(usize),
    /// On a thread of its own with this stack.
    Helper(usize),
    /// Nowhere: the text is Write and unparsed.
    TooLarge,
}

fn placement(sql: &str) -> Placement {
    let stack = sql
        .len()
        .saturating_mul(STACK_PER_BYTE)
        .saturating_add(PARSE_BASE_STACK);
    if stack <= WORKER_STACK {
        Placement::Worker(stack)
    } else if stack <= MAX_HELPER_STACK {
        Placement::Helper(stack)
    } else {
        Placement::TooLarge
    }
}

impl Analyzer {
    /// `extra_write_functions`: lower-case function names that write or lock, from config, added to the built-in list.
    pub fn new(extra_write_functions: &[String], cache_entries: u64) -> Self {
        let functions = Arc::new(WriteFunctions::new(extra_write_functions));
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
        for index in 0..workers {
            let receiver = Arc::clone(&receiver);
            let functions = Arc::clone(&functions);
            // A worker that cannot be started is not fatal: with none at all,
            // `analyze` starts a thread per text instead.
            let _ = thread::Builder::new()
                .name(format!("pgward-sql-{index}"))
                .stack_size(WORKER_STACK)
                .spawn(move || run_worker(&receiver, &functions));
        }
        Self {
            cache: Cache::builder()
                .max_capacity(cache_entries)
                .build_with_hasher(Default::default()),
            functions,
            jobs,
        }
    }

    /// The analysis of `sql`, from the cache when a text differing from it only in constants
    /// was seen before (see `normalize`). A miss blocks the calling thread while a worker
    /// parses; async callers use [`Analyzer::analyze_async`].
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        match cache_text(sql) {
            None => Arc::new(self.analyze_uncached(sql)),
            Some(text) => self
                .cache
                .get_with_by_ref(&*text, || Arc::new(self.analyze_uncached(&text))),
        }
    }

    /// [`Analyzer::analyze`] for a task: a miss waits for the worker without holding up
    /// the thread, so the other clients a runtime thread serves go on meanwhile.
    pub async fn analyze_async(&self, sql: &str) -> Arc<Analysis> {
        let Some(text) = cache_text(sql) else {
            return Arc::new(self.analyze_off_thread(sql).await);
        };
        if let Some(hit) = self.cache.get(&*text) {
            return hit;
        }
        let analysis = Arc::new(self.analyze_off_thread(&text).await);
        self.cache.insert(text.into_owned(), analysis.clone());
        analysis
    }

    /// The analysis of `sql` itself, not of its normalized text and not cached: literal
    /// positions are then this text's own (column encryption rewrites literals in place).
    pub async fn analyze_exact(&self, sql: &str) -> Analysis {
        self.analyze_off_thread(sql).await
    }

    /// Runs [`analyze_text`] where the stack is large enough for `sql`, blocking. A text
    /// that cannot be analysed safely is Write and unparsed.
    fn analyze_uncached(&self, sql: &str) -> Analysis {
        let stack = match placement(sql) {
            Placement::TooLarge => return unparsed(sql),
            Placement::Worker(stack) => {
                let (reply, answer) = mpsc::sync_channel(1);
                if let Some(analysis) = self
                    .send(sql, Reply::Blocking(reply))
                    .and_then(|()| answer.recv().ok())
                {
                    return analysis;
                }
                stack
            }
            Placement::Helper(stack) => stack,
        };
        thread::scope(|scope| {
            thread::Builder::new()
                .name("pgward-sql-large".into())
                .stack_size(stack)
                .spawn_scoped(scope, || analyze_caught(sql, &self.functions))
                .ok()
                .and_then(|helper| helper.join().ok())
        })
        .unwrap_or_else(|| unparsed(sql))
    }

    /// [`Analyzer::analyze_uncached`] without blocking: the caller awaits the answer.
    async fn analyze_off_thread(&self, sql: &str) -> Analysis {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match placement(sql) {
            Placement::TooLarge => return unparsed(sql),
            Placement::Worker(_) => self.send(sql, Reply::Waiting(reply)),
            Placement::Helper(stack) => {
                let (sql, functions) = (sql.to_owned(), Arc::clone(&self.functions));
                thread::Builder::new()
                    .name("pgward-sql-large".into())
                    .stack_size(stack)
                    .spawn(move || {
                        let _ = reply.send(analyze_caught(&sql, &functions));
                    })
                    .ok()
                    .map(drop)
            }
        };
        match sent {
            Some(()) => answer.await.unwrap_or_else(|_| unparsed(sql)),
            // No worker and no thread to be had: parse here rather than guess.
            None => self.analyze_uncached(sql),
        }
    }

    /// Queues `sql` for a worker; None when no worker is running.
    fn send(&self, sql: &str, reply: Reply) -> Option<()> {
        let job = Job {
            sql: sql.to_owned(),
            reply,
        };
        self.jobs.send(job).ok()
    }
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("cached_entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// Serves jobs until every [`Analyzer`] clone (and so every sender) is dropped.
fn run_worker(receiver: &Mutex<mpsc::Receiver<Job>>, functions: &WriteFunctions) {
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(PoisonError::into_inner);
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job.reply.send(analyze_caught(&job.sql, functions));
    }
}

/// [`analyze_text`], with a panic (a sqlparser bug) turned into Write and unparsed.
fn analyze_caught(sql: &str, functions: &WriteFunctions) -> Analysis {
    panic::catch_unwind(AssertUnwindSafe(|| analyze_text(sql, functions)))
        .unwrap_or_else(|_| unparsed(sql))
}

/// The analysis of SQL text that is not UTF-8 (a client_encoding such as LATIN9): not
/// understood, so it runs on the primary and the policy treats it as unparsable.
pub fn undecodable() -> Analysis {
    unparsed("")
}

fn unparsed(sql: &str) -> Analysis {
    Analysis {
        class: Class::Write,
        hint: hint::leading_hint(sql),
        route_setting: None,
        parsed: false,
        statements: Vec::new(),
        id: next_id(),
    }
}

/// Parses and classifies `sql` on the current thread, without caching.
fn analyze_text(sql: &str, functions: &WriteFunctions) -> Analysis {
    let hint = hint::leading_hint(sql);
    let Ok(mut tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return unparsed(sql);
    };
    classify::drop_unlogged(&mut tokens);
    // sqlparser 0.59 backtracks exponentially on some nested constructs (CAST,
    // SUBSTRING, function calls) when something deep inside fails to parse: 12
    // nested CASTs around a syntax error take over a second. Deeper bracket
    // nesting than any ordinary query uses is therefore not parsed at all.
    let parsed = if classify::bracket_depth(&tokens) > MAX_BRACKET_DEPTH {
        None
    } else if copy::has_copy_from_stdin(&tokens) {
        copy::parse_one_by_one(tokens)
    } else {
        Parser::new(&PostgreSqlDialect {})
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .ok()
    };
    let Some(statements) = parsed else {
        return piecewise(sql, hint, functions);
    };
    let classes: Vec<Class> = statements
        .iter()
        .map(|statement| classify::classify_statement(statement, functions))
        .collect();
    let route_setting = match statements.as_slice() {
        [single] => classify::route_setting(single),
        _ => None,
    };
    let described: Vec<StatementInfo> = statements
        .iter()
        .map(|statement| walk::describe(statement, functions))
        .collect();
    assemble(&classes, described, hint, route_setting, true)
}

/// The analysis of a text from its statements' classes and descriptions. What the analysis
/// does not fully understand runs on the primary.
fn assemble(
    classes: &[Class],
    described: Vec<StatementInfo>,
    hint: Option<RouteHint>,
    route_setting: Option<RouteSetting>,
    parsed: bool,
) -> Analysis {
    let class = if described.iter().all(|s| s.understood) {
        classify::combine(classes)
    } else {
        Class::Write
    };
    Analysis {
        class,
        hint,
        route_setting,
        parsed,
        statements: described,
        id: next_id(),
    }
}

/// A text sqlparser cannot parse as a whole, analysed statement by statement: each one
/// parses on its own, or is one of the few statements sqlparser does not know that touch no
/// table (`classify::lexical_statement`: RESET, ABORT, MOVE, ...). Drivers send such mixes:
/// asyncpg's pool resets a connection with `SELECT pg_advisory_unlock_all(); CLOSE ALL;
/// UNLISTEN *; RESET ALL`. Any other statement leaves the whole text unparsed.
fn piecewise(sql: &str, hint: Option<RouteHint>, functions: &WriteFunctions) -> Analysis {
    let Ok(mut tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return unparsed(sql);
    };
    classify::drop_unlogged(&mut tokens);
    // A SQL-standard function body (BEGIN ATOMIC ... END) holds `;`s that end no statement.
    let atomic = tokens.iter().any(|t| {
        matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::ATOMIC)
    });
    if atomic {
        return unparsed(sql);
    }
    let pieces: Vec<_> = copy::statements(&tokens)
        .filter(|piece| !copy::is_blank(piece))
        .collect();
    let mut classes = Vec::with_capacity(pieces.len());
    let mut described = Vec::with_capacity(pieces.len());
    let mut route_setting = None;
    let mut parsed = true;
    for piece in &pieces {
        let statement = (classify::bracket_depth(piece) <= MAX_BRACKET_DEPTH)
            .then(|| copy::parse_piece(piece))
            .flatten();
        if let Some(statement) = statement {
            classes.push(classify::classify_statement(&statement, functions));
            described.push(walk::describe(&statement, functions));
            continue;
        }
        let words: Vec<&Token> = piece
            .iter()
            .map(|t| &t.token)
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect();
        let Some((class, setting, kind)) = classify::lexical_statement(&words) else {
            return unparsed(sql);
        };
        parsed = false;
        if pieces.len() == 1 {
            route_setting = setting;
        }
        classes.push(class);
        described.push(StatementInfo::new(kind));
    }
    assemble(&classes, described, hint, route_setting, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzer() -> Analyzer {
        Analyzer::new(&[], 100)
    }

    #[test]
    fn finds_a_needle_in_any_case() {
        let (route, copy) = (&ROUTE_PARAM_NEEDLE, &Needle::new(b"copy"));
        assert!(contains_ignore_case(b"SET PGWARD.Route = primary", route));
        assert!(contains_ignore_case(b"pgward.route", route));
        // Found by its rarest byte, wherever that is in the needle.
        for hay in [&b"copy"[..], b"x COPY", b"yy copy y", b"cop copY"] {
            assert!(contains_ignore_case(hay, copy), "{hay:?}");
        }
        for hay in [&b"cop"[..], b"opy", b"c opy", b"yyyy", b"coppy"] {
            assert!(!contains_ignore_case(hay, copy), "{hay:?}");
        }
        assert_eq!(
            find_ignore_case(b"serializable, SERIALIZABLE", &Needle::new(b"serializable"))
                .collect::<Vec<_>>(),
            [0, 14]
        );
        assert!(contains_ignore_case(b"x pgward.routE", route));
        assert!(!contains_ignore_case(b"pgward.rout", route));
        assert!(!contains_ignore_case(
            b"pgbench_accounts pgward_route",
            route
        ));
        assert!(!contains_ignore_case(b"", &Needle::new(b"serializable")));
        assert!(contains_ignore_case(b"anything", &Needle::new(b"")));
        // The rarest byte is found when the needle is built: `y` of copy, `.` of pgward.route.
        assert_eq!(copy.rarest, 3);
        assert_eq!(route.rarest, 6);
    }

    #[test]
    fn cache_returns_the_same_arc() {
        let analyzer = analyzer();
        let first = analyzer.analyze("select * from t where id = $1");
        let second = analyzer.analyze("select * from t where id = $1");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.class, Class::Read);
        // A different text (even by case) is a different entry.
        let other = analyzer.analyze("SELECT * FROM t WHERE id = $1");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(first.class, other.class);
        assert_eq!(first.statements, other.statements);
    }

    #[test]
    fn texts_differing_only_in_constants_share_an_entry() {
        let analyzer = analyzer();
        let first = analyzer.analyze("select * from t where id = 17 and name = 'a'");
        let second = analyzer.analyze("select * from t where id = 4242 and name = 'bb'");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.class, Class::Read);
        let hinted = analyzer.analyze("/* pgward:primary */ select * from t where id = 3");
        assert_eq!(hinted.hint, Some(RouteHint::Primary));
        let setting = analyzer.analyze("SET pgward.route = 'replica'");
        assert_eq!(setting.route_setting, Some(RouteSetting::Replica));
        assert_eq!(
            analyzer.analyze("select nextval('s')").class,
            Class::Write,
            "function names are not constants"
        );
    }

    #[test]
    fn huge_texts_are_analysed_but_not_cached() {
        let analyzer = analyzer();
        let sql = format!("select 1 where 'x' <> '{}'", "x".repeat(MAX_CACHED_LEN));
        let first = analyzer.analyze(&sql);
        let second = analyzer.analyze(&sql);
        assert_eq!(first.class, Class::Read);
        assert!(first.parsed);
        assert!(!Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn zero_sized_cache_still_analyses() {
        let analyzer = Analyzer::new(&[], 0);
        assert_eq!(analyzer.analyze("select 1").class, Class::Read);
        assert_eq!(analyzer.analyze("delete from t").class, Class::Write);
    }

    /// Texts that overflow a small stack or make sqlparser backtrack exponentially
    /// when parsed inline: each must come back, quickly, on a caller with a stack
    /// far smaller than a tokio worker's 2 MiB.
    #[test]
    fn pathological_texts_neither_crash_nor_hang() {
        let analyzer = analyzer();
        let nest = |open: &str, inner: &str, close: &str, n: usize| {
            format!("select {}{inner}{}", open.repeat(n), close.repeat(n))
        };
        let cases = vec![
            // Left-deep chains: as deep as they are long (short, and beyond a worker's stack).
            (format!("select {}1", "1+".repeat(2_000)), Class::Read, true),
            (
                format!("select {}1", "1+".repeat(50_000)),
                Class::Read,
                true,
            ),
            (
                "select 1 union all ".repeat(5_000) + "select nextval('s')",
                Class::Write,
                true,
            ),
            (
                format!("select * from t where {}false", "a = 1 or ".repeat(20_000)),
                Class::Read,
                true,
            ),
            // Recursion near sqlparser's limit: ~70 KiB of stack per level in debug builds.
            (
                format!("select {}true", "not ".repeat(45)),
                Class::Read,
                true,
            ),
            (nest("(select ", "1", ")", 10), Class::Read, true),
            // Deeper brackets are not parsed: nested CASTs around an error backtrack
            // exponentially, nested calls past the recursion limit hang.
            (nest("(select ", "1", ")", 11), Class::Write, false),
            (nest("cast(", "1 +", " as int)", 12), Class::Write, false),
            (nest("f(", "1", ")", 30), Class::Write, false),
            (nest("array[", "1", "]", 48), Class::Write, false),
            (nest("(", "1", ")", 100_000), Class::Write, false),
        ];
        let started = std::time::Instant::now();
        let results = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                cases
                    .into_iter()
                    .map(|(sql, class, parsed)| {
                        let label: String = sql.chars().take(40).collect();
                        (label, analyzer.analyze(&sql), class, parsed)
                    })
                    .collect::<Vec<_>>()
            })
            .expect("spawn test thread")
            .join()
            .expect("analysis must not crash the calling thread");
        for (label, analysis, class, parsed) in results {
            assert_eq!(analysis.class, class, "{label}");
            assert_eq!(analysis.parsed, parsed, "{label}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn workers_survive_and_serve_concurrent_callers() {
        let analyzer = analyzer();
        let callers: Vec<_> = (0..4)
            .map(|caller| {
                let analyzer = analyzer.clone();
                thread::spawn(move || {
                    (0..50)
                        .map(|i| {
                            analyzer
                                .analyze(&format!("select c{caller}_{i} from t"))
                                .class
                        })
                        .all(|class| class == Class::Read)
                })
            })
            .collect();
        for caller in callers {
            assert!(caller.join().expect("caller thread"));
        }
    }

    #[test]
    fn analyzer_is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Analyzer>();
        let analyzer = analyzer();
        let clone = analyzer.clone();
        let first = analyzer.analyze("select 1");
        assert!(Arc::ptr_eq(&first, &clone.analyze("select 1")));
    }

    /// The async path shares the cache with the blocking one and gives the same verdicts,
    /// for a text a worker parses and for one too long for a worker's stack.
    #[tokio::test(flavor = "current_thread")]
    async fn analyses_awaited_match_the_blocking_ones() {
        let analyzer = analyzer();
        let first = analyzer.analyze_async("select * from t where id = 1").await;
        assert_eq!(first.class, Class::Read);
        let second = analyzer.analyze("select * from t where id = 2");
        assert!(Arc::ptr_eq(&first, &second), "one cached analysis");
        let write = analyzer.analyze_async("delete from t").await;
        assert_eq!(write.class, Class::Write);
        let long = format!("select * from t where {}false", "a = 1 or ".repeat(20_000));
        let awaited = analyzer.analyze_async(&long).await;
        assert!(awaited.parsed);
        assert_eq!(awaited.class, Class::Read);
        let exact = analyzer.analyze_exact("select 'x' from t").await;
        assert_eq!(exact.class, Class::Read);
    }
}
