//! SQL analysis for routing: which statements may run on a streaming replica.
//!
//! Each SQL string is parsed once with sqlparser (PostgreSQL dialect) and the
//! resulting [`Analysis`] is cached by the exact text, so the hot path of a repeated
//! statement is one cache lookup. The analysis is deliberately conservative: only
//! what certainly only reads is [`Class::Read`]; see `classify.rs` for the rules.
//!
//! Stack safety: sqlparser limits nesting depth while parsing, but a long chain of
//! binary operators or UNIONs (`1+1+1+...`) still builds a tree as deep as the text
//! is long, and walking or dropping that tree recurses once per level. Rather than
//! let a client overflow a worker thread's stack (which aborts the process), any
//! text that could need more than a small stack budget is analysed on a short-lived
//! helper thread whose stack is sized from the text length.

mod classify;
mod hint;
mod normalize;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use moka::sync::Cache;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

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

/// Texts longer than this are analysed every time instead of cached, so one-off
/// huge strings (bulk INSERTs) cannot fill the cache's memory.
const MAX_CACHED_LEN: usize = 64 * 1024;

/// Upper bound of the stack one byte of SQL can need while its syntax tree is
/// walked and dropped (one tree level per operator, at least two bytes each).
/// Measured at about 1.5 KiB in debug builds and 50 bytes in release builds.
const STACK_PER_BYTE: usize = if cfg!(debug_assertions) { 4096 } else { 256 };

/// Stack the caller is assumed to have to spare; texts needing less run inline.
const INLINE_STACK_BUDGET: usize = 256 * 1024;

/// Fixed part of a helper thread's stack (parser, visitor and classifier frames).
const HELPER_BASE_STACK: usize = 2 * 1024 * 1024;

/// Texts that would need a larger helper stack than this are not parsed (Write).
const MAX_HELPER_STACK: usize = 1024 * 1024 * 1024;

/// Analyses SQL with a cache keyed by the exact SQL text. Built once from config;
/// cheap to share (clones share the cache).
#[derive(Clone)]
pub struct Analyzer {
    cache: Cache<String, Arc<Analysis>>,
    functions: Arc<WriteFunctions>,
}

impl Analyzer {
    /// `extra_write_functions`: lower-case function names that write or lock, from config, added to the built-in list.
    pub fn new(extra_write_functions: &[String], cache_entries: u64) -> Self {
        Self {
            cache: Cache::new(cache_entries),
            functions: Arc::new(WriteFunctions::new(extra_write_functions)),
        }
    }

    /// The analysis of `sql`, from the cache when a text differing from it only in constants
    /// was seen before (see `normalize`).
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        if sql.len() > MAX_CACHED_LEN {
            return Arc::new(analyze_guarded(sql, &self.functions));
        }
        let key = normalize::normalize(sql);
        let text = key.as_deref().unwrap_or(sql);
        self.cache
            .get_with_by_ref(text, || Arc::new(analyze_guarded(text, &self.functions)))
    }
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("cached_entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// [`analyze_text`] with enough stack for any input and no panic escaping: a text
/// that cannot be analysed safely is Write and unparsed.
fn analyze_guarded(sql: &str, functions: &WriteFunctions) -> Analysis {
    let unparsed = || Analysis {
        class: Class::Write,
        hint: hint::leading_hint(sql),
        route_setting: None,
        parsed: false,
    };
    let needed = sql.len().saturating_mul(STACK_PER_BYTE);
    if needed <= INLINE_STACK_BUDGET {
        return panic::catch_unwind(AssertUnwindSafe(|| analyze_text(sql, functions)))
            .unwrap_or_else(|_| unparsed());
    }
    let stack = needed.saturating_add(HELPER_BASE_STACK);
    if stack > MAX_HELPER_STACK {
        return unparsed();
    }
    thread::scope(|scope| {
        thread::Builder::new()
            .name("pgward-sql".into())
            .stack_size(stack)
            .spawn_scoped(scope, || analyze_text(sql, functions))
            .ok()
            .and_then(|helper| helper.join().ok())
    })
    .unwrap_or_else(unparsed)
}

/// Parses and classifies `sql` without caching.
fn analyze_text(sql: &str, functions: &WriteFunctions) -> Analysis {
    let hint = hint::leading_hint(sql);
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => {
            let classes: Vec<Class> = statements
                .iter()
                .map(|statement| classify::classify_statement(statement, functions))
                .collect();
            let route_setting = match statements.as_slice() {
                [single] => classify::route_setting(single),
                _ => None,
            };
            Analysis {
                class: classify::combine(&classes),
                hint,
                route_setting,
                parsed: true,
            }
        }
        Err(_) => {
            let (class, route_setting) = classify::lexical_fallback(sql);
            Analysis {
                class,
                hint,
                route_setting,
                parsed: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzer() -> Analyzer {
        Analyzer::new(&[], 100)
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
        assert_eq!(*first, *other);
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

    /// A left-deep operator chain is as deep as it is long; on a small stack
    /// (tokio's workers have 2 MiB) it must not overflow.
    #[test]
    fn deep_operator_chains_do_not_overflow_a_small_stack() {
        let analyzer = analyzer();
        let plus = format!("select {}1", "1+".repeat(50_000));
        let unions = "select 1 union all ".repeat(5_000) + "select nextval('s')";
        let ors = format!("select * from t where {}false", "a = 1 or ".repeat(20_000));
        let results = thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                (
                    analyzer.analyze(&plus),
                    analyzer.analyze(&unions),
                    analyzer.analyze(&ors),
                )
            })
            .expect("spawn test thread")
            .join()
            .expect("analysis must not crash the calling thread");
        assert_eq!(results.0.class, Class::Read);
        assert!(results.0.parsed);
        assert_eq!(results.1.class, Class::Write);
        assert!(results.1.parsed);
        assert_eq!(results.2.class, Class::Read);
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
}
