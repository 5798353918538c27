//! Classification of parsed statements, plus the lexical fallback for text that
//! sqlparser cannot parse.
//!
//! The rule throughout: a statement is `Read` only when it certainly only reads;
//! anything not understood is `Write`, because sending a write to a replica fails
//! (or worse, a function with side effects silently runs in the wrong place).

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    ContextModifier, Expr, ObjectName, Query, Set, SetExpr, Statement, TableFactor,
    TransactionAccessMode, TransactionMode, UtilityOption, Value, Visit, Visitor,
};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::{Class, Kind, RouteSetting};

/// Built-in functions that write, lock, or only work on the primary.
const WRITE_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "set_config",
    "pg_notify",
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_emit_message",
    "pg_import_system_collations",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "dblink_exec",
    "loread",
    "lowrite",
];

/// Name prefixes of built-in function families that write or lock: advisory locks,
/// large objects (`lo_import`, `lo_unlink`, ...) and replication origins.
const WRITE_FUNCTION_PREFIXES: &[&str] = &[
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "pg_replication_origin_",
];

/// The set of function names whose call makes a query `Write`.
#[derive(Debug, Clone)]
pub(crate) struct WriteFunctions {
    names: HashSet<String>,
}

impl WriteFunctions {
    /// The built-in list plus `extra` (configured names; compared case-insensitively).
    pub(crate) fn new(extra: &[String]) -> Self {
        let names = WRITE_FUNCTIONS
            .iter()
            .map(|name| (*name).to_owned())
            .chain(extra.iter().map(|name| name.trim().to_ascii_lowercase()))
            .filter(|name| !name.is_empty())
            .collect();
        Self { names }
    }

    /// Whether a call to `name` may write. Only the last identifier counts, so a
    /// schema-qualified `pg_catalog.nextval` matches `nextval`.
    pub(crate) fn is_write(&self, name: &ObjectName) -> bool {
        let Some(last) = name.0.last() else {
            return true;
        };
        // A non-identifier name part (Snowflake's IDENTIFIER(...)) is not understood.
        let Some(ident) = last.as_ident() else {
            return true;
        };
        let lower = ident.value.to_ascii_lowercase();
        self.names.contains(&lower)
            || WRITE_FUNCTION_PREFIXES
                .iter()
                .any(|prefix| lower.starts_with(prefix))
    }
}

/// Classifies one parsed statement.
pub(crate) fn classify_statement(statement: &Statement, functions: &WriteFunctions) -> Class {
    match statement {
        Statement::Query(query) => {
            if query_only_reads(query, functions) {
                Class::Read
            } else {
                Class::Write
            }
        }
        Statement::ShowVariable { .. } => Class::Read,
        Statement::Explain {
            analyze,
            options,
            statement: inner,
            ..
        } => classify_explain(*analyze, options.as_deref(), inner, functions),
        Statement::StartTransaction {
            modes,
            statements,
            exception,
            has_end_keyword,
            ..
        } => {
            // A BEGIN ... END block with a body is another dialect's procedural syntax.
            if !statements.is_empty() || exception.is_some() || *has_end_keyword {
                Class::Write
            } else {
                Class::Begin {
                    read_only: modes_read_only(modes),
                }
            }
        }
        // Savepoints only mean something inside a transaction block, which is already
        // pinned to one backend, so they are transaction control like COMMIT.
        Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Class::TxnControl,
        _ => Class::Write,
    }
}

/// Folds the classes of the statements of one string into the class of the string.
pub(crate) fn combine(classes: &[Class]) -> Class {
    match classes {
        [] => Class::Read,
        [single] => *single,
        // Transaction control inside a multi-statement string is not something the
        // router can follow statement by statement, so it is Write like anything else.
        many if many.iter().all(|class| *class == Class::Read) => Class::Read,
        _ => Class::Write,
    }
}

/// EXPLAIN without ANALYZE only plans, so it is safe on a replica for any plannable
/// DML. Other inner statements (EXECUTE of a session's prepared statement, DECLARE,
/// CREATE TABLE AS) depend on session state or are rare enough to keep on the primary.
fn classify_explain(
    analyze: bool,
    options: Option<&[UtilityOption]>,
    inner: &Statement,
    functions: &WriteFunctions,
) -> Class {
    if classify_statement(inner, functions) == Class::Read {
        return Class::Read;
    }
    let analyzes = analyze
        || options
            .unwrap_or_default()
            .iter()
            .any(option_enables_analyze);
    let plannable = matches!(
        inner,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update { .. }
            | Statement::Delete(_)
            | Statement::Merge { .. }
    );
    if plannable && !analyzes {
        Class::Read
    } else {
        Class::Write
    }
}

/// `EXPLAIN (ANALYZE)`, `(ANALYZE true)`, `(ANALYZE 1)`...: anything but an explicit
/// false / off / no counts as ANALYZE. Numbers and strings count as ANALYZE whatever
/// their value, because the cache key replaces constants (`1` becomes `0`).
fn option_enables_analyze(option: &UtilityOption) -> bool {
    if !option.name.value.eq_ignore_ascii_case("analyze") {
        return false;
    }
    match &option.arg {
        Some(Expr::Value(value)) => value.value != Value::Boolean(false),
        Some(Expr::Identifier(ident)) => !["false", "off", "no"]
            .iter()
            .any(|off| ident.value.eq_ignore_ascii_case(off)),
        _ => true,
    }
}

/// READ ONLY only when explicitly asked for and not contradicted by READ WRITE.
fn modes_read_only(modes: &[TransactionMode]) -> bool {
    let has = |mode| modes.contains(&TransactionMode::AccessMode(mode));
    has(TransactionAccessMode::ReadOnly) && !has(TransactionAccessMode::ReadWrite)
}

/// Walks the whole query (CTEs, subqueries, set operations, FROM items, every
/// expression) and stops at the first thing that may write.
fn query_only_reads(query: &Query, functions: &WriteFunctions) -> bool {
    let mut check = ReadOnlyCheck { functions };
    query.visit(&mut check).is_continue()
}

struct ReadOnlyCheck<'a> {
    functions: &'a WriteFunctions,
}

impl Visitor for ReadOnlyCheck<'_> {
    type Break = ();

    /// The walk starts at a query, so any statement met inside it is a
    /// data-modifying CTE (INSERT/UPDATE/DELETE/MERGE in WITH).
    fn pre_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        ControlFlow::Break(())
    }

    /// Locking clauses (FOR UPDATE / FOR SHARE) and SELECT INTO.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() || selects_into(&query.body) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Table functions in FROM: `generate_series(1, 3)` parses as a table with args.
    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let name = match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => name,
            _ => return ControlFlow::Continue(()),
        };
        if self.functions.is_write(name) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(function) if self.functions.is_write(&function.name) => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// Whether any SELECT of this query body (not of nested queries, which the visitor
/// reaches on its own) has an INTO clause. Iterative, because chains of UNIONs nest
/// as deep as they are long.
fn selects_into(body: &SetExpr) -> bool {
    let mut pending = vec![body];
    while let Some(expr) = pending.pop() {
        match expr {
            SetExpr::Select(select) if select.into.is_some() => return true,
            SetExpr::SetOperation { left, right, .. } => {
                pending.push(left);
                pending.push(right);
            }
            _ => {}
        }
    }
    false
}

/// `CREATE UNLOGGED TABLE` is `CREATE TABLE` for every stage (sqlparser 0.59 does not know
/// UNLOGGED): the word is dropped before parsing.
pub(crate) fn drop_unlogged(tokens: &mut Vec<TokenWithSpan>) {
    let is_word = |t: &TokenWithSpan, k: Keyword| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.keyword == k);
    let mut previous_word: Option<usize> = None;
    let mut drop = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        if is_word(t, Keyword::UNLOGGED)
            && previous_word.is_some_and(|p| is_word(&tokens[p], Keyword::CREATE))
        {
            drop.push(i);
        }
        previous_word = Some(i);
    }
    for i in drop.into_iter().rev() {
        tokens.remove(i);
    }
}

/// The deepest nesting of brackets ( `(`, `[`, `{` ) in a token stream.
pub(crate) fn bracket_depth(tokens: &[TokenWithSpan]) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0;
    for token in tokens {
        match token.token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `SET [SESSION] pgward.route {= | TO} value`. SET LOCAL is not recognised: the
/// proxy keeps no transaction-scoped routing state, so it goes to PostgreSQL as is.
pub(crate) fn route_setting(statement: &Statement) -> Option<RouteSetting> {
    let Statement::Set(Set::SingleAssignment {
        scope: None | Some(ContextModifier::Session),
        hivevar: false,
        variable,
        values,
    }) = statement
    else {
        return None;
    };
    let name_parts = variable.0.iter().map(|part| {
        part.as_ident()
            .map(|ident| (ident.value.as_str(), ident.quote_style.is_some()))
    });
    if !is_route_setting_name(name_parts)? {
        return None;
    }
    let [value] = values.as_slice() else {
        return None;
    };
    match value {
        Expr::Identifier(ident)
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") =>
        {
            Some(RouteSetting::Auto)
        }
        Expr::Identifier(ident) => parse_route_value(&ident.value),
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text) => parse_route_value(text),
            _ => None,
        },
        _ => None,
    }
}

fn parse_route_value(value: &str) -> Option<RouteSetting> {
    [
        ("primary", RouteSetting::Primary),
        ("replica", RouteSetting::Replica),
        ("auto", RouteSetting::Auto),
    ]
    .into_iter()
    .find(|(word, _)| value.eq_ignore_ascii_case(word))
    .map(|(_, setting)| setting)
}

/// Whether the dotted name parts spell `pgward.route` the way PostgreSQL resolves
/// it: unquoted parts fold to lower case, quoted ones are taken as written (so
/// `"pgward.route"` as one quoted identifier also matches). None when a part is
/// not an identifier at all.
fn is_route_setting_name<'a>(parts: impl Iterator<Item = Option<(&'a str, bool)>>) -> Option<bool> {
    let mut name = String::new();
    for (index, part) in parts.enumerate() {
        let (value, quoted) = part?;
        if index > 0 {
            name.push('.');
        }
        if quoted {
            name.push_str(value);
        } else {
            name.push_str(&value.to_ascii_lowercase());
        }
    }
    Some(name == super::ROUTE_PARAM)
}

/// What can still be said about one statement sqlparser could not parse, from its tokens
/// (whitespace and comments left out): transaction control that sqlparser 0.5x does not know
/// (ABORT, PREPARE TRANSACTION, BEGIN ... DEFERRABLE), RESET (with `RESET pgward.route`),
/// MOVE and a SELECT without a target list. These touch no table. None for anything else.
pub(crate) fn lexical_statement(
    statement: &[&Token],
) -> Option<(Class, Option<RouteSetting>, Kind)> {
    let keyword = |index: usize| match statement.get(index) {
        Some(Token::Word(word)) if word.quote_style.is_none() => word.keyword,
        _ => Keyword::NoKeyword,
    };
    let has_keyword_pair = |first: Keyword, second: Keyword| {
        (1..statement.len()).any(|index| keyword(index - 1) == first && keyword(index) == second)
    };

    // sqlparser has no PREPARED keyword, so that one word is compared as text.
    let second_is_prepared = matches!(
        statement.get(1),
        Some(Token::Word(word)) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case("prepared")
    );

    // sqlparser has no MOVE (a cursor's FETCH without the rows) and no SELECT without a
    // target list; neither touches a table.
    let first_is_move = matches!(
        statement.first(),
        Some(Token::Word(word)) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case("move")
    );
    if first_is_move {
        return Some((Class::Write, None, Kind::Utility));
    }
    if statement.len() == 1 && keyword(0) == Keyword::SELECT {
        return Some((Class::Read, None, Kind::Select));
    }
    match (keyword(0), keyword(1)) {
        (Keyword::BEGIN, _) | (Keyword::START, Keyword::TRANSACTION) => {
            let read_only = has_keyword_pair(Keyword::READ, Keyword::ONLY)
                && !has_keyword_pair(Keyword::READ, Keyword::WRITE);
            Some((Class::Begin { read_only }, None, Kind::Transaction))
        }
        // COMMIT/ROLLBACK PREPARED finish a two-phase transaction that lives on the
        // primary and cannot run inside a transaction block: Write, not TxnControl.
        (Keyword::COMMIT | Keyword::ROLLBACK, _) if second_is_prepared => {
            Some((Class::Write, None, Kind::Transaction))
        }
        (Keyword::COMMIT | Keyword::ROLLBACK | Keyword::END | Keyword::ABORT, _)
        | (Keyword::SAVEPOINT | Keyword::RELEASE, _)
        | (Keyword::PREPARE, Keyword::TRANSACTION) => {
            Some((Class::TxnControl, None, Kind::Transaction))
        }
        (Keyword::RESET, _) => Some((
            Class::Write,
            reset_route_setting(&statement[1..]),
            Kind::Set,
        )),
        _ => None,
    }
}

/// `RESET pgward.route` (the tokens after RESET, whitespace removed).
fn reset_route_setting(name: &[&Token]) -> Option<RouteSetting> {
    // Name parts sit at even positions with periods between them.
    let periods_ok = name
        .iter()
        .skip(1)
        .step_by(2)
        .all(|token| **token == Token::Period);
    let parts = name.iter().step_by(2).map(|token| match token {
        Token::Word(word) => Some((word.value.as_str(), word.quote_style.is_some())),
        _ => None,
    });
    (periods_ok && is_route_setting_name(parts)?).then_some(RouteSetting::Auto)
}

#[cfg(test)]
mod tests {
    use crate::sql::{Analysis, Analyzer, Class, RouteHint, RouteSetting};

    fn class(sql: &str) -> Class {
        Analyzer::new(&[], 100).analyze(sql).class
    }

    fn analysis(sql: &str) -> Analysis {
        (*Analyzer::new(&[], 100).analyze(sql)).clone()
    }

    fn assert_reads(sqls: &[&str]) {
        for sql in sqls {
            assert_eq!(class(sql), Class::Read, "{sql}");
        }
    }

    fn assert_writes(sqls: &[&str]) {
        for sql in sqls {
            assert_eq!(class(sql), Class::Write, "{sql}");
        }
    }

    #[test]
    fn plain_queries_read() {
        assert_reads(&[
            "select 1",
            "SELECT a, b FROM t WHERE id = 1 ORDER BY a LIMIT 10",
            "select * from generate_series(1,3)",
            "select $1::int",
            "select * from t where id = $1 and name = $2",
            "values (1)",
            "with x as (select 1) select * from x",
            "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r",
            "select 1 union select 2 except select 3",
            "select count(*), now(), lower(name) from t group by name having count(*) > 1",
            "select * from (select * from t) s join u on u.id = s.id",
            "select exists (select 1 from t)",
            "select * from t, lateral unnest(t.arr) as x",
        ]);
    }

    #[test]
    fn upper_case_and_comments() {
        assert_reads(&["SELECT * FROM T", "/* c */ -- d\nSELECT 1 /* e */"]);
        assert_writes(&[
            "SELECT NEXTVAL('S')",
            "DELETE FROM T",
            "SELECT * FROM T FOR UPDATE",
        ]);
    }

    #[test]
    fn locking_clauses_write() {
        assert_writes(&[
            "select * from t for update",
            "select * from t for share",
            "select * from t for update of t nowait",
            "select * from t for update skip locked",
            "select * from t where id in (select id from u for update)",
            "select * from (select * from t for share) s",
            // sqlparser 0.5x cannot parse these; unparsed text is Write.
            "select * from t for no key update",
            "select * from t for key share",
        ]);
    }

    #[test]
    fn data_modifying_ctes_write() {
        assert_writes(&[
            "with x as (delete from t returning *) select * from x",
            "with x as (insert into t values (1) returning *) select * from x",
            "with x as (update t set a = 1 returning *) select * from x",
            "with a as (select 1), b as (delete from t returning *) select * from a",
            "select * from (with x as (delete from t returning *) select * from x) s",
        ]);
    }

    #[test]
    fn write_functions_anywhere_write() {
        assert_writes(&[
            "select nextval('s')",
            "select pg_catalog.nextval('s')",
            "select pg_catalog.pg_advisory_lock(1)",
            "select pg_try_advisory_xact_lock(1)",
            "select lo_unlink(1)",
            "select lo_import('/tmp/x')",
            "select loread(0, 1)",
            "select set_config('a.b', 'c', false)",
            "select pg_notify('c', 'x')",
            "select txid_current()",
            "select * from t where id in (select nextval('s'))",
            "select * from (select nextval('s')) s",
            "select * from t order by setval('s', 1)",
            "select count(*) filter (where pg_advisory_lock(1) is null) from t",
            "select * from pg_logical_slot_get_changes('slot', null, null)",
            "select * from t join lateral dblink_exec('x', 'delete from t') d on true",
            "select coalesce(a, currval('s')) from t",
            "values (nextval('s'))",
            "select 1 union select nextval('s')",
            "with x as (select nextval('s')) select * from x",
            "select case when a then pg_terminate_backend(1) end from t",
        ]);
    }

    #[test]
    fn extra_configured_functions_write() {
        let analyzer = Analyzer::new(&["my_audit_fn".to_owned(), " Other_Fn ".to_owned()], 10);
        assert_eq!(
            analyzer.analyze("select my_audit_fn(1)").class,
            Class::Write
        );
        assert_eq!(
            analyzer.analyze("select app.MY_AUDIT_FN(1)").class,
            Class::Write
        );
        assert_eq!(
            analyzer.analyze("select * from my_audit_fn()").class,
            Class::Write
        );
        assert_eq!(analyzer.analyze("select other_fn()").class, Class::Write);
        assert_eq!(analyzer.analyze("select my_other_fn(1)").class, Class::Read);
        assert_eq!(class("select my_audit_fn(1)"), Class::Read);
    }

    #[test]
    fn select_into_writes() {
        assert_writes(&["select 1 into t2", "select * into temp t2 from t"]);
    }

    #[test]
    fn show_and_explain() {
        assert_reads(&[
            "show search_path",
            "SHOW ALL",
            "explain select 1",
            "explain analyze select 1",
            "explain delete from t",
            "explain select * from t for update",
            "explain (analyze false) delete from t",
            "explain (analyze off) delete from t",
        ]);
        assert_writes(&[
            "explain analyze delete from t",
            "explain analyze select nextval('s')",
            "explain (analyze, verbose) insert into t values (1)",
            "explain (analyze on) update t set a = 1",
            "explain (analyze 1) delete from t",
            "explain (analyze 0) delete from t",
        ]);
    }

    #[test]
    fn other_statements_write() {
        assert_writes(&[
            "insert into t values (1) returning *",
            "update t set a = 1",
            "delete from t",
            "copy t to stdout",
            "copy (select 1) to stdout",
            "create table t (a int)",
            "drop table t",
            "set search_path = x",
            "set transaction read only",
            "listen c",
            "notify c",
            "vacuum t",
            "lock table t",
            "prepare p as select 1",
            "execute p",
            "deallocate p",
            "discard all",
            "declare c cursor for select 1",
            "call p()",
            "do $$ begin end $$",
            "truncate t",
            "grant select on t to u",
        ]);
    }

    #[test]
    fn transactions() {
        let begin = |read_only| Class::Begin { read_only };
        for (sql, expected) in [
            ("begin", begin(false)),
            ("BEGIN TRANSACTION", begin(false)),
            ("start transaction", begin(false)),
            ("begin read only", begin(true)),
            ("start transaction read only", begin(true)),
            ("begin isolation level serializable, read only", begin(true)),
            (
                "start transaction isolation level repeatable read, read only",
                begin(true),
            ),
            ("begin read write", begin(false)),
            ("begin isolation level serializable", begin(false)),
            (
                "begin isolation level serializable, read only, deferrable",
                begin(true),
            ),
            ("begin read only deferrable", begin(true)),
            ("commit", Class::TxnControl),
            ("COMMIT AND CHAIN", Class::TxnControl),
            ("rollback", Class::TxnControl),
            ("end", Class::TxnControl),
            ("abort", Class::TxnControl),
            ("savepoint a", Class::TxnControl),
            ("release savepoint a", Class::TxnControl),
            ("rollback to savepoint a", Class::TxnControl),
            ("prepare transaction 'x'", Class::TxnControl),
            ("commit prepared 'x'", Class::Write),
            ("rollback prepared 'x'", Class::Write),
            ("begin; select 1", Class::Write),
            ("select 1; commit", Class::Write),
            ("abort; select 1", Class::Write),
        ] {
            assert_eq!(class(sql), expected, "{sql}");
        }
        assert!(analysis("begin read only").parsed);
        assert!(!analysis("abort").parsed);
    }

    #[test]
    fn multiple_statements() {
        assert_reads(&["select 1; select 2", "select 1;", ";select 1;;"]);
        assert_writes(&["select 1; delete from t", "delete from t; select 1"]);
    }

    #[test]
    fn empty_text_reads() {
        for sql in [
            "",
            "   ",
            ";",
            " ; ;; ",
            "-- only a comment",
            "/* c */ ; -- d\n",
        ] {
            let result = analysis(sql);
            assert_eq!(result.class, Class::Read, "{sql:?}");
            assert!(result.parsed, "{sql:?}");
        }
    }

    #[test]
    fn garbage_is_unparsed_write() {
        for sql in [
            "garbage ((",
            "select (",
            "select 'unterminated",
            "\u{0}\u{1}",
            "))))",
            "select ü€ from",
        ] {
            let result = analysis(sql);
            assert_eq!(result.class, Class::Write, "{sql:?}");
            assert!(!result.parsed, "{sql:?}");
        }
        let deep = format!("select {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(analysis(&deep).class, Class::Write);
    }

    #[test]
    fn hints_are_reported_without_changing_the_class() {
        let replica = analysis("/* pgward:replica */ select 1");
        assert_eq!(
            (replica.class, replica.hint),
            (Class::Read, Some(RouteHint::Replica))
        );
        let write = analysis("-- x\n/* pgward:replica */ delete from t");
        assert_eq!(
            (write.class, write.hint),
            (Class::Write, Some(RouteHint::Replica))
        );
        let primary = analysis("/* PGWARD:PRIMARY */ select 1");
        assert_eq!(
            (primary.class, primary.hint),
            (Class::Read, Some(RouteHint::Primary))
        );
        assert_eq!(analysis("select /* pgward:replica */ 1").hint, None);
        assert_eq!(
            analysis("/* pgward:replica */ garbage ((").hint,
            Some(RouteHint::Replica)
        );
    }

    #[test]
    fn statements_sqlparser_lacks_that_touch_no_table() {
        let analyzer = Analyzer::new(&[], 10);
        for (sql, class) in [
            ("select", Class::Read),
            ("SELECT ;", Class::Read),
            ("MOVE 2 FROM c", Class::Write),
            ("move absolute 2 from \"tmp\"", Class::Write),
        ] {
            let a = analyzer.analyze(sql);
            assert!(a.understood(), "{sql}");
            assert_eq!(a.class, class, "{sql}");
        }
        let a = analyzer.analyze("create unlogged table u (id int)");
        assert!(a.understood());
        assert_eq!(a.statements[0].kind, crate::sql::Kind::Ddl);
        assert_eq!(a.statements[0].tables[0].name, "u");
    }

    /// Texts mixing them with statements sqlparser parses are analysed statement by
    /// statement, so what the others touch is still seen; anything unknown among them leaves
    /// the whole text not understood.
    #[test]
    fn texts_mixing_such_statements_are_analysed_statement_by_statement() {
        let analyzer = Analyzer::new(&[], 10);
        // asyncpg's pool reset.
        let reset = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;";
        let a = analyzer.analyze(reset);
        assert!(a.understood());
        assert_eq!(a.class, Class::Write);
        assert_eq!(a.statements.len(), 4);
        assert_eq!(a.statements[3].kind, crate::sql::Kind::Set);

        let a = analyzer.analyze("select; drop table t");
        assert!(a.understood());
        assert_eq!(a.statements[1].kind, crate::sql::Kind::Ddl);
        assert_eq!(a.statements[1].tables[0].name, "t");

        let a = analyzer.analyze("abort; select * from secrets");
        assert!(a.understood());
        assert_eq!(a.statements[1].tables[0].name, "secrets");

        let a = analyzer.analyze("begin read only; move 1 in c; commit");
        assert!(a.understood());
        assert_eq!(a.class, Class::Write, "MOVE runs on the primary");

        for sql in [
            "reset all; do $$begin delete from t; end$$",
            "select 1; garbage ((",
            "reset all; select (",
            // The `;`s of a SQL-standard function body end no statement.
            "create function f() returns int language sql begin atomic; select 1; end",
        ] {
            let a = analyzer.analyze(sql);
            assert!(!a.understood(), "{sql}");
            assert_eq!(a.class, Class::Write, "{sql}");
        }
        // A route setting counts only alone.
        assert_eq!(
            analyzer
                .analyze("reset pgward.route; reset all")
                .route_setting,
            None
        );
    }

    #[test]
    fn route_settings() {
        for (sql, expected) in [
            ("set pgward.route = 'primary'", Some(RouteSetting::Primary)),
            ("SET pgward.route = primary", Some(RouteSetting::Primary)),
            ("set pgward.route to 'replica'", Some(RouteSetting::Replica)),
            (
                "SET SESSION PGWARD.ROUTE TO Replica",
                Some(RouteSetting::Replica),
            ),
            ("set pgward.route = 'auto';", Some(RouteSetting::Auto)),
            ("set \"pgward.route\" = 'AUTO'", Some(RouteSetting::Auto)),
            ("set pgward.route to default", Some(RouteSetting::Auto)),
            ("reset pgward.route", Some(RouteSetting::Auto)),
            ("RESET PGWARD . ROUTE ;", Some(RouteSetting::Auto)),
            (
                "/* c */ reset \"pgward\".\"route\"",
                Some(RouteSetting::Auto),
            ),
            ("set pgward.route = 'foo'", None),
            ("set pgward.route = 'primary', 'replica'", None),
            ("set local pgward.route = primary", None),
            ("set pgward.other = primary", None),
            ("set \"PGWARD\".route = primary", None),
            ("set route = primary", None),
            ("reset pgward.routes", None),
            ("reset all", None),
            ("reset pgward.route; select 1", None),
            ("set pgward.route = primary; select 1", None),
        ] {
            let result = analysis(sql);
            assert_eq!(result.route_setting, expected, "{sql}");
            assert_eq!(result.class, Class::Write, "{sql}");
        }
    }
}
