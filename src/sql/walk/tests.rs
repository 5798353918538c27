//! Tests of the statement walker: expected accesses, columns, values, outputs and functions
//! per statement, plus random statements that must never panic.

use super::*;
use crate::sql::analysis::{AssignTarget, Assigned, CompareOp, Context, ValueSource, ValueUse};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

fn describe_with(sql: &str, functions: &WriteFunctions) -> StatementInfo {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    assert_eq!(statements.len(), 1, "{sql}");
    describe(&statements[0], functions)
}

fn info(sql: &str) -> StatementInfo {
    describe_with(sql, &WriteFunctions::new(&[]))
}

fn table(info: &StatementInfo, index: usize) -> String {
    match info.tables.get(index) {
        Some(RelName {
            schema: Some(schema),
            name,
        }) => format!("{schema}.{name}"),
        Some(RelName { schema: None, name }) => name.clone(),
        None => format!("#{index}"),
    }
}

fn column(info: &StatementInfo, column: &ColumnRef) -> String {
    match column {
        ColumnRef::Of { table: t, name } => format!("{}.{name}", table(info, *t)),
        ColumnRef::All { table: t } => format!("{}.*", table(info, *t)),
        ColumnRef::Unqualified { scopes, name } => {
            let scopes: Vec<String> = scopes
                .iter()
                .map(|scope| {
                    let tables: Vec<String> = scope.iter().map(|t| table(info, *t)).collect();
                    tables.join(",")
                })
                .collect();
            format!("?{{{}}}.{name}", scopes.join(";"))
        }
    }
}

fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut items: Vec<String> = items.into_iter().collect();
    items.sort();
    items
}

fn strings(items: &[&str]) -> Vec<String> {
    sorted(items.iter().map(|item| (*item).to_owned()))
}

/// "table:action", sorted.
fn accesses(info: &StatementInfo) -> Vec<String> {
    sorted(
        info.accesses
            .iter()
            .map(|(t, action)| format!("{}:{}", table(info, *t), action.as_str())),
    )
}

/// "table.column:action", "table.*:action" or "?{a,b;c}.column:action", sorted.
fn columns(info: &StatementInfo) -> Vec<String> {
    sorted(
        info.columns
            .iter()
            .map(|used| format!("{}:{}", column(info, &used.column), used.action.as_str())),
    )
}

/// "$n=column" or "Lline:col=column", sorted.
fn values(info: &StatementInfo) -> Vec<String> {
    sorted(info.values.iter().map(|target| {
        let value = match target.value {
            ValueSource::Param(n) => format!("${n}"),
            ValueSource::Literal { line, column } => format!("L{line}:{column}"),
        };
        format!("{value}={}", column(info, &target.column))
    }))
}

/// "value=column usage" with usage "assigned" or the comparison ("eq", "in", ...) followed
/// by "<" when the value is the left operand, sorted.
fn usages(info: &StatementInfo) -> Vec<String> {
    sorted(info.values.iter().map(|target| {
        let value = match target.value {
            ValueSource::Param(n) => format!("${n}"),
            ValueSource::Literal { line, column } => format!("L{line}:{column}"),
        };
        let usage = match target.usage {
            ValueUse::Assigned => "assigned".to_owned(),
            ValueUse::Compared { op, value_first } => {
                let op = match op {
                    CompareOp::Eq => "eq",
                    CompareOp::NotEq => "ne",
                    CompareOp::In => "in",
                    CompareOp::NotIn => "not in",
                    CompareOp::Distinct => "distinct",
                    CompareOp::NotDistinct => "not distinct",
                    CompareOp::CaseWhen => "case",
                    CompareOp::Other => "other",
                };
                format!("{op}{}", if value_first { "<" } else { "" })
            }
        };
        format!("{value}={} {usage}", column(info, &target.column))
    }))
}

fn check_usages(sql: &str, expected: &[&str]) {
    let info = info(sql);
    assert!(info.understood, "not understood: {sql}");
    assert_eq!(usages(&info), strings(expected), "value usages of {sql}");
}

/// "column:context", sorted: context "output", "eq", "null", "grouped", "(what)" for
/// Computed, or "column=other" for EqualsColumn.
fn contexts(info: &StatementInfo) -> Vec<String> {
    sorted(info.contexts.iter().map(|entry| {
        let name = column(info, &entry.column);
        match &entry.context {
            Context::Output => format!("{name}:output"),
            Context::Equality => format!("{name}:eq"),
            Context::NullTest => format!("{name}:null"),
            Context::Grouped => format!("{name}:grouped"),
            Context::Computed(what) => format!("{name}:({what})"),
            Context::EqualsColumn(other) => format!("{name}={}", column(info, other)),
        }
    }))
}

fn check_contexts(sql: &str, expected: &[&str]) -> StatementInfo {
    let info = info(sql);
    assert!(info.understood, "not understood: {sql}");
    assert_eq!(contexts(&info), strings(expected), "contexts of {sql}");
    info
}

/// "table.target<-value", sorted: target a column name or "#k" (a position), value "$n",
/// "Lline:col", "null", "default", a column, "excluded.c" or "expr".
fn assignments(info: &StatementInfo) -> Vec<String> {
    sorted(info.assignments.iter().map(|assignment| {
        let target = match &assignment.target {
            AssignTarget::Named(name) => name.clone(),
            AssignTarget::Position(k) => format!("#{k}"),
        };
        let value = match &assignment.value {
            Assigned::Value(ValueSource::Param(n)) => format!("${n}"),
            Assigned::Value(ValueSource::Literal { line, column }) => format!("L{line}:{column}"),
            Assigned::Null => "null".to_owned(),
            Assigned::Default => "default".to_owned(),
            Assigned::Column(c) => column(info, c),
            Assigned::Excluded(name) => format!("excluded.{name}"),
            Assigned::Expr => "expr".to_owned(),
        };
        format!("{}.{target}<-{value}", table(info, assignment.table))
    }))
}

fn check_assignments(sql: &str, expected: &[&str]) -> StatementInfo {
    let info = info(sql);
    assert!(info.understood, "not understood: {sql}");
    assert_eq!(
        assignments(&info),
        strings(expected),
        "assignments of {sql}"
    );
    info
}

/// In order: a column, or "expr".
fn outputs(info: &StatementInfo) -> Vec<String> {
    info.outputs
        .iter()
        .map(|output| match output {
            Output::Column(c) => column(info, c),
            Output::Expr => "expr".to_owned(),
        })
        .collect()
}

/// "schema.name[wv]" with w = writes, v = volatile, sorted.
fn functions(info: &StatementInfo) -> Vec<String> {
    sorted(info.functions.iter().map(|call| {
        let flags = match (call.writes, call.volatile) {
            (true, true) => "[wv]",
            (true, false) => "[w]",
            (false, true) => "[v]",
            (false, false) => "",
        };
        match &call.schema {
            Some(schema) => format!("{schema}.{}{flags}", call.name),
            None => format!("{}{flags}", call.name),
        }
    }))
}

/// Describes `sql`, which must be understood, and checks its accesses and column uses.
fn check(sql: &str, expected_accesses: &[&str], expected_columns: &[&str]) -> StatementInfo {
    let info = info(sql);
    assert!(info.understood, "not understood: {sql}");
    assert_eq!(
        accesses(&info),
        strings(expected_accesses),
        "accesses of {sql}"
    );
    assert_eq!(
        columns(&info),
        strings(expected_columns),
        "columns of {sql}"
    );
    info
}

fn check_values(sql: &str, expected: &[&str]) {
    let info = info(sql);
    assert!(info.understood, "not understood: {sql}");
    assert_eq!(values(&info), strings(expected), "values of {sql}");
}

fn check_outputs(sql: &str, expected: &[&str]) {
    let info = info(sql);
    assert!(info.understood, "not understood: {sql}");
    let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(outputs(&info), expected, "outputs of {sql}");
}

/// 1-based (line, column) of the first occurrence of `needle` in `sql`.
fn position(sql: &str, needle: &str) -> String {
    let offset = sql.find(needle).expect("needle in sql");
    let before = &sql[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    format!("L{line}:{column}")
}

#[test]
fn simple_select() {
    let info = check(
        "SELECT a, b FROM t WHERE c = 1",
        &["t:select"],
        &["t.a:select", "t.b:select", "t.c:select"],
    );
    assert_eq!(info.kind, Kind::Select);
    assert_eq!(outputs(&info), ["t.a", "t.b"]);
    let info = check("SELECT count(*) FROM t", &["t:select"], &[]);
    assert_eq!(outputs(&info), ["expr"]);
    assert_eq!(functions(&info), ["count"]);
    let info = check("SELECT 1", &[], &[]);
    assert!(info.tables.is_empty());
    check("SELECT foo", &[], &[]);
}

#[test]
fn aliases_and_schema_qualified_names() {
    check(
        "SELECT x.a, b FROM s.t AS x WHERE x.c > 0",
        &["s.t:select"],
        &["s.t.a:select", "s.t.b:select", "s.t.c:select"],
    );
    check("SELECT t.a FROM db.s.t", &["s.t:select"], &["s.t.a:select"]);
    check("SELECT s.t.a FROM s.t", &["s.t:select"], &["s.t.a:select"]);
    check(
        "SELECT db.s.t.a FROM s.t",
        &["s.t:select"],
        &["s.t.a:select"],
    );
    // Written without schema, the table may be public.t.
    check("SELECT public.t.a FROM t", &["t:select"], &["t.a:select"]);
    // An alias hides the table's own name: t.a is then field a of a column t.
    check("SELECT t.a FROM t AS x", &["t:select"], &["t.t:select"]);
    let info = info("SELECT 1 FROM a.b.c.d");
    assert!(!info.understood);
}

#[test]
fn identifiers_fold_like_postgresql() {
    let info = check(
        r#"SELECT "Id", Name, "MixedCase".x FROM "MixedCase", MixedCase"#,
        &["MixedCase:select", "mixedcase:select"],
        &[
            "?{MixedCase,mixedcase}.Id:select",
            "?{MixedCase,mixedcase}.name:select",
            "MixedCase.x:select",
        ],
    );
    assert_eq!(info.tables.len(), 2);
    check(
        r#"SELECT A FROM "S"."T""#,
        &["S.T:select"],
        &["S.T.a:select"],
    );
}

#[test]
fn joins() {
    check(
        "SELECT t.a, u.b FROM t JOIN u ON t.id = u.tid LEFT JOIN v ON v.x = u.y",
        &["t:select", "u:select", "v:select"],
        &[
            "t.a:select",
            "u.b:select",
            "t.id:select",
            "u.tid:select",
            "v.x:select",
            "u.y:select",
        ],
    );
    check(
        "SELECT id, t.a FROM t JOIN u USING (id)",
        &["t:select", "u:select"],
        &[
            "t.id:select",
            "u.id:select",
            "?{t,u}.id:select",
            "t.a:select",
        ],
    );
    check(
        "SELECT 1 FROM t JOIN u USING (id) FULL JOIN v USING (id)",
        &["t:select", "u:select", "v:select"],
        &[
            "t.id:select",
            "u.id:select",
            "?{t,u}.id:select",
            "v.id:select",
        ],
    );
    check(
        "SELECT a FROM t NATURAL JOIN u",
        &["t:select", "u:select"],
        &["t.*:select", "u.*:select", "?{t,u}.a:select"],
    );
    let info = check(
        "SELECT * FROM t CROSS JOIN u",
        &["t:select", "u:select"],
        &["t.*:select", "u.*:select"],
    );
    assert_eq!(outputs(&info), ["t.*", "u.*"]);
    check(
        "SELECT a FROM t, u WHERE b = 1",
        &["t:select", "u:select"],
        &["?{t,u}.a:select", "?{t,u}.b:select"],
    );
    // An aliased join hides its members' names; its columns are theirs.
    check(
        "SELECT j.a FROM (t JOIN u ON true) AS j",
        &["t:select", "u:select"],
        &["?{t,u}.a:select"],
    );
    check(
        "SELECT t.a FROM (t JOIN u ON t.id = u.id)",
        &["t:select", "u:select"],
        &["t.a:select", "t.id:select", "u.id:select"],
    );
    // The same table twice is one candidate.
    check(
        "SELECT a FROM t x JOIN t y ON x.id = y.parent",
        &["t:select"],
        &["t.a:select", "t.id:select", "t.parent:select"],
    );
}

#[test]
fn ctes() {
    let info = check(
        "WITH c AS (SELECT a, b AS x FROM t) SELECT a, x FROM c",
        &["t:select"],
        &["t.a:select", "t.b:select"],
    );
    assert_eq!(info.tables.len(), 1);
    assert_eq!(outputs(&info), ["t.a", "t.b"]);
    check(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT n FROM r",
        &[],
        &[],
    );
    let info = check(
        "WITH RECURSIVE tree AS (SELECT id, parent FROM nodes WHERE id = $1 \
         UNION ALL SELECT n.id, n.parent FROM nodes n JOIN tree ON n.parent = tree.id) \
         SELECT id FROM tree",
        &["nodes:select"],
        &["nodes.id:select", "nodes.parent:select"],
    );
    assert_eq!(values(&info), ["$1=nodes.id"]);
    assert_eq!(outputs(&info), ["nodes.id"]);
    check(
        "WITH a AS (WITH b AS (SELECT x FROM t) SELECT x FROM b) SELECT x FROM a",
        &["t:select"],
        &["t.x:select"],
    );
    // A CTE shadows a table of the same name...
    let info = check(
        "WITH t AS (SELECT a FROM u) SELECT a FROM t",
        &["u:select"],
        &["u.a:select"],
    );
    assert_eq!(
        info.tables,
        [RelName {
            schema: None,
            name: "u".into()
        }]
    );
    // ...but not inside its own (non-recursive) body, nor schema-qualified.
    check(
        "WITH t AS (SELECT a FROM t) SELECT a FROM t",
        &["t:select"],
        &["t.a:select"],
    );
    check(
        "WITH t AS (SELECT 1 AS a) SELECT a FROM public.t",
        &["public.t:select"],
        &["public.t.a:select"],
    );
    // Later CTEs see earlier ones; a subquery sees the CTEs of its enclosing query and
    // resolves a name its FROM subquery lists without looking further out.
    check(
        "WITH c AS (SELECT a FROM t), d AS (SELECT a FROM c) SELECT (SELECT max(a) FROM d) FROM u",
        &["t:select", "u:select"],
        &["t.a:select"],
    );
    check(
        "WITH c(p) AS (SELECT a FROM t) SELECT p, c.p FROM c",
        &["t:select"],
        &["t.a:select"],
    );
}

#[test]
fn subqueries() {
    let info = check(
        "SELECT a, (SELECT max(b) FROM u WHERE u.k = t.k) FROM t",
        &["t:select", "u:select"],
        &["t.a:select", "?{u;t}.b:select", "u.k:select", "t.k:select"],
    );
    assert_eq!(outputs(&info), ["t.a", "expr"]);
    // Correlated, unqualified: inner scope first, then the outer one.
    check(
        "SELECT a FROM t WHERE b IN (SELECT c FROM u WHERE d = a)",
        &["t:select", "u:select"],
        &[
            "t.a:select",
            "t.b:select",
            "?{u;t}.c:select",
            "?{u;t}.d:select",
            "?{u;t}.a:select",
        ],
    );
    check(
        "SELECT 1 FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.x = t.y)",
        &["t:select", "u:select"],
        &["u.x:select", "t.y:select"],
    );
    check(
        "SELECT 1 FROM t WHERE t.a = ANY (SELECT u.b FROM u) AND t.c > ALL (SELECT v.d FROM v)",
        &["t:select", "u:select", "v:select"],
        &["t.a:select", "u.b:select", "t.c:select", "v.d:select"],
    );
    let info = check(
        "SELECT s.x FROM (SELECT a AS x FROM t) s",
        &["t:select"],
        &["t.a:select"],
    );
    assert_eq!(outputs(&info), ["t.a"]);
    let info = check(
        "SELECT * FROM (SELECT * FROM t) s",
        &["t:select"],
        &["t.*:select"],
    );
    assert_eq!(outputs(&info), ["t.*"]);
    let info = check(
        "SELECT s.* FROM (SELECT a, b FROM t) s",
        &["t:select"],
        &["t.a:select", "t.b:select"],
    );
    assert_eq!(outputs(&info), ["t.a", "t.b"]);
    // LATERAL sees the items before it; a plain subquery in FROM does not.
    check(
        "SELECT 1 FROM t, LATERAL (SELECT u.b FROM u WHERE u.k = t.k) s",
        &["t:select", "u:select"],
        &["u.b:select", "u.k:select", "t.k:select"],
    );
    check(
        "SELECT 1 FROM t, (SELECT k FROM u) s",
        &["t:select", "u:select"],
        &["u.k:select"],
    );
    check(
        "SELECT 1 FROM t JOIN LATERAL (SELECT k FROM u) s ON s.k = t.k",
        &["t:select", "u:select"],
        &["?{u;t}.k:select", "t.k:select"],
    );
    // Function arguments in FROM are lateral.
    check(
        "SELECT 1 FROM t, generate_series(1, t.n) g",
        &["t:select"],
        &["t.n:select"],
    );
}

#[test]
fn set_operations() {
    let info = check(
        "SELECT a FROM t UNION SELECT b FROM u",
        &["t:select", "u:select"],
        &["t.a:select", "u.b:select"],
    );
    assert_eq!(outputs(&info), ["expr"]);
    check_outputs("SELECT a FROM t UNION ALL SELECT a FROM t", &["t.a"]);
    check(
        "SELECT a FROM t INTERSECT SELECT a FROM u ORDER BY a LIMIT 3",
        &["t:select", "u:select"],
        &["t.a:select", "u.a:select"],
    );
    check(
        "(SELECT a FROM t) EXCEPT (SELECT a FROM u WHERE b IN (SELECT c FROM v))",
        &["t:select", "u:select", "v:select"],
        &["t.a:select", "u.a:select", "u.b:select", "?{v;u}.c:select"],
    );
    let info = check("VALUES (1, $1)", &[], &[]);
    assert_eq!(outputs(&info), ["expr", "expr"]);
}

#[test]
fn clauses() {
    let info = check(
        "SELECT a, count(*) FROM t WHERE b > $1 GROUP BY a HAVING sum(c) > 10 ORDER BY d LIMIT $2 OFFSET 5",
        &["t:select"],
        &["t.a:select", "t.b:select", "t.c:select", "t.d:select"],
    );
    assert_eq!(values(&info), ["$1=t.b"]);
    assert_eq!(functions(&info), ["count", "sum"]);
    check(
        "SELECT rank() OVER (PARTITION BY a ORDER BY b ROWS BETWEEN e PRECEDING AND CURRENT ROW), \
         sum(c) OVER w FROM t WINDOW w AS (PARTITION BY d)",
        &["t:select"],
        &[
            "t.a:select",
            "t.b:select",
            "t.c:select",
            "t.d:select",
            "t.e:select",
        ],
    );
    check(
        "SELECT DISTINCT ON (a) b FROM t ORDER BY a, c",
        &["t:select"],
        &["t.a:select", "t.b:select", "t.c:select"],
    );
    check(
        "SELECT CASE WHEN a > 0 THEN b::text ELSE CAST(c AS int) END FROM t",
        &["t:select"],
        &["t.a:select", "t.b:select", "t.c:select"],
    );
    check(
        "SELECT lower(name), count(*) FILTER (WHERE x > 1), string_agg(y, ',' ORDER BY z) \
         FROM t WHERE coalesce(p, q) IS NOT NULL GROUP BY GROUPING SETS ((r), ())",
        &["t:select"],
        &[
            "t.name:select",
            "t.x:select",
            "t.y:select",
            "t.z:select",
            "t.p:select",
            "t.q:select",
            "t.r:select",
        ],
    );
    check(
        "SELECT a[1], b->>'k', (c).f, (t.d).g, substring(e FROM 1 FOR 2), extract(year FROM f) FROM t",
        &["t:select"],
        &[
            "t.a:select",
            "t.b:select",
            "t.c:select",
            "t.d:select",
            "t.e:select",
            "t.f:select",
        ],
    );
    // A column of composite type: x.y is field y of column x.
    check("SELECT x.y FROM t", &["t:select"], &["t.x:select"]);
    check(
        "SELECT a FROM t LIMIT (SELECT n FROM u) OFFSET $1",
        &["t:select", "u:select"],
        &["t.a:select", "?{u;t}.n:select"],
    );
}

#[test]
fn whole_row_references_read_every_column() {
    check(
        "SELECT t FROM t",
        &["t:select"],
        &["t.*:select", "t.t:select"],
    );
    check(
        "SELECT row_to_json(x) FROM t x",
        &["t:select"],
        &["t.*:select", "t.x:select"],
    );
    check("SELECT count(t.*) FROM t", &["t:select"], &["t.*:select"]);
    check("SELECT (t).a FROM t", &["t:select"], &["t.a:select"]);
    // A column alias list hides which columns are read.
    let info = check(
        "SELECT x.a FROM t AS x(a)",
        &["t:select"],
        &["t.*:select", "t.a:select"],
    );
    assert_eq!(outputs(&info), ["expr"]);
}

#[test]
fn locking_clauses_need_update() {
    check(
        "SELECT t.a FROM t JOIN u ON true FOR UPDATE OF t",
        &["t:select", "t:update", "u:select"],
        &["t.a:select"],
    );
    check(
        "SELECT a FROM t FOR SHARE",
        &["t:select", "t:update"],
        &["t.a:select"],
    );
    check(
        "SELECT * FROM (SELECT a FROM t) s FOR UPDATE",
        &["t:select", "t:update"],
        &["t.a:select"],
    );
}

#[test]
fn stars() {
    let info = check(
        "SELECT * FROM t, u",
        &["t:select", "u:select"],
        &["t.*:select", "u.*:select"],
    );
    assert_eq!(outputs(&info), ["t.*", "u.*"]);
    let info = check(
        "SELECT t.*, u.a FROM t, u",
        &["t:select", "u:select"],
        &["t.*:select", "u.a:select"],
    );
    assert_eq!(outputs(&info), ["t.*", "u.a"]);
    check_outputs("SELECT x.* FROM s.t x", &["s.t.*"]);
    let info = check(
        "SELECT * FROM t JOIN (SELECT a FROM u) s ON true",
        &["t:select", "u:select"],
        &["t.*:select", "u.a:select"],
    );
    assert_eq!(outputs(&info), ["t.*", "u.a"]);
    let info = check(
        "WITH c AS (SELECT a, b FROM t) SELECT c.* FROM c",
        &["t:select"],
        &["t.a:select", "t.b:select"],
    );
    assert_eq!(outputs(&info), ["t.a", "t.b"]);
    check_outputs("SELECT * FROM generate_series(1, 3) g", &["expr"]);
}

#[test]
fn insert() {
    let sql = "INSERT INTO t (a, b) VALUES ($1, $2), ($3, 'x')";
    let info = check(sql, &["t:insert"], &["t.a:insert", "t.b:insert"]);
    assert_eq!(info.kind, Kind::Insert);
    let literal = format!("{}=t.b", position(sql, "'x'"));
    assert_eq!(
        values(&info),
        strings(&["$1=t.a", "$2=t.b", "$3=t.a", &literal])
    );
    assert!(info.outputs.is_empty());
    // Without a column list the k-th column is unknown: All, and no value targets.
    let info = check(
        "INSERT INTO t VALUES ($1, 2)",
        &["t:insert"],
        &["t.*:insert"],
    );
    assert!(info.values.is_empty());
    check(
        "INSERT INTO t DEFAULT VALUES",
        &["t:insert"],
        &["t.*:insert"],
    );
    check_values("INSERT INTO t (a, b) VALUES (DEFAULT, $1)", &["$1=t.b"]);
    let info = check(
        "INSERT INTO s.t (a) SELECT b FROM u WHERE c = $1",
        &["s.t:insert", "u:select"],
        &["s.t.a:insert", "u.b:select", "u.c:select"],
    );
    assert_eq!(values(&info), ["$1=u.c"]);
    check_values(
        "INSERT INTO t (a, b) SELECT $1, $2::int",
        &["$1=t.a", "$2=t.b"],
    );
}

#[test]
fn insert_on_conflict_returning() {
    let sql = "INSERT INTO t AS x (id, a) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE \
               SET a = EXCLUDED.a, n = x.n + 1, m = $3 WHERE x.b > 0 RETURNING id, x.a";
    let info = check(
        sql,
        &["t:insert", "t:select", "t:update"],
        &[
            "t.id:insert",
            "t.a:insert",
            "t.id:select",
            "t.a:update",
            "t.n:update",
            "t.n:select",
            "t.m:update",
            "t.b:select",
            "t.a:select",
        ],
    );
    let literal = format!("{}=t.b", position(sql, "0 RETURNING"));
    assert_eq!(
        values(&info),
        strings(&["$1=t.id", "$2=t.a", "$3=t.m", &literal])
    );
    assert_eq!(outputs(&info), ["t.id", "t.a"]);
    check(
        "INSERT INTO t (a) VALUES (1) ON CONFLICT ON CONSTRAINT t_pkey DO NOTHING",
        &["t:insert"],
        &["t.a:insert"],
    );
    let info = check(
        "INSERT INTO t (a) VALUES (1) RETURNING *",
        &["t:insert", "t:select"],
        &["t.a:insert", "t.*:select"],
    );
    assert_eq!(outputs(&info), ["t.*"]);
}

#[test]
fn update() {
    let info = check(
        "UPDATE t SET a = $1, b = b + 1 FROM u WHERE t.id = u.id AND u.flag RETURNING t.a, c",
        &["t:select", "t:update", "u:select"],
        &[
            "t.a:update",
            "t.b:update",
            "?{t,u}.b:select",
            "t.id:select",
            "u.id:select",
            "u.flag:select",
            "t.a:select",
            "?{t,u}.c:select",
        ],
    );
    assert_eq!(info.kind, Kind::Update);
    assert_eq!(values(&info), ["$1=t.a"]);
    assert_eq!(outputs(&info), ["t.a", "?{t,u}.c"]);
    let info = check(
        "UPDATE t SET (a, b) = ($1, $2) WHERE id = $3",
        &["t:select", "t:update"],
        &["t.a:update", "t.b:update", "t.id:select"],
    );
    assert_eq!(values(&info), ["$1=t.a", "$2=t.b", "$3=t.id"]);
    check(
        "UPDATE t SET a = (SELECT max(x) FROM u WHERE u.k = t.k)",
        &["t:select", "t:update", "u:select"],
        &["t.a:update", "?{u;t}.x:select", "u.k:select", "t.k:select"],
    );
    check("UPDATE ONLY t SET a = 1", &["t:update"], &["t.a:update"]);
    check(
        "UPDATE s.t AS x SET a = 1 WHERE x.id = 2",
        &["s.t:select", "s.t:update"],
        &["s.t.a:update", "s.t.id:select"],
    );
}

#[test]
fn delete() {
    let info = check(
        "DELETE FROM t USING u WHERE t.id = u.id AND u.x = $1 RETURNING t.*",
        &["t:delete", "t:select", "u:select"],
        &["t.id:select", "u.id:select", "u.x:select", "t.*:select"],
    );
    assert_eq!(info.kind, Kind::Delete);
    assert_eq!(values(&info), ["$1=u.x"]);
    assert_eq!(outputs(&info), ["t.*"]);
    check(
        "DELETE FROM ONLY t WHERE a = 1",
        &["t:delete", "t:select"],
        &["t.a:select"],
    );
    check("DELETE FROM t", &["t:delete"], &[]);
}

#[test]
fn merge() {
    let sql = "MERGE INTO t USING s ON t.id = s.id \
               WHEN MATCHED AND s.x > 0 THEN UPDATE SET a = s.a \
               WHEN MATCHED THEN DELETE \
               WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, $1)";
    let info = check(
        sql,
        &["t:delete", "t:insert", "t:select", "t:update", "s:select"],
        &[
            "t.id:select",
            "s.id:select",
            "s.x:select",
            "t.a:update",
            "s.a:select",
            "t.id:insert",
            "t.a:insert",
        ],
    );
    assert_eq!(info.kind, Kind::Merge);
    let literal = format!("{}=s.x", position(sql, "0 THEN"));
    assert_eq!(values(&info), strings(&["$1=t.a", &literal]));
    check(
        "MERGE INTO t x USING (SELECT k FROM u) AS y ON x.k = y.k WHEN NOT MATCHED THEN INSERT VALUES (y.k)",
        &["t:insert", "t:select", "u:select"],
        &["t.k:select", "u.k:select", "t.*:insert"],
    );
}

#[test]
fn data_modifying_ctes() {
    let info = check(
        "WITH d AS (DELETE FROM t WHERE a = $1 RETURNING *) SELECT * FROM d",
        &["t:delete", "t:select"],
        &["t.a:select", "t.*:select"],
    );
    assert_eq!(info.kind, Kind::Delete);
    assert_eq!(values(&info), ["$1=t.a"]);
    assert_eq!(outputs(&info), ["t.*"]);
    let info = check(
        "WITH x AS (SELECT a FROM u) INSERT INTO t (a) SELECT a FROM x",
        &["t:insert", "u:select"],
        &["t.a:insert", "u.a:select"],
    );
    assert_eq!(info.kind, Kind::Insert);
    let info = check(
        "SELECT * INTO n FROM t",
        &["n:ddl", "t:select"],
        &["t.*:select"],
    );
    assert_eq!(info.kind, Kind::Ddl);
}

#[test]
fn truncate() {
    let info = check("TRUNCATE t1, s.t2", &["t1:truncate", "s.t2:truncate"], &[]);
    assert_eq!(info.kind, Kind::Truncate);
    check("TRUNCATE ONLY t", &["t:truncate"], &[]);
}

#[test]
fn copy() {
    let info = check(
        "COPY t (a, b) FROM STDIN;",
        &["t:insert"],
        &["t.a:insert", "t.b:insert"],
    );
    assert_eq!(info.kind, Kind::CopyIn);
    let info = check("COPY s.t TO STDOUT", &["s.t:select"], &["s.t.*:select"]);
    assert_eq!(info.kind, Kind::CopyOut);
    assert_eq!(outputs(&info), ["s.t.*"]);
    let info = check(
        "COPY (SELECT a FROM t WHERE b = 1) TO STDOUT",
        &["t:select"],
        &["t.a:select", "t.b:select"],
    );
    assert_eq!(info.kind, Kind::CopyOut);
    assert_eq!(outputs(&info), ["t.a"]);
    let info = check(
        "COPY t FROM '/tmp/x'",
        &["*:admin", "t:insert"],
        &["t.*:insert"],
    );
    assert_eq!(info.kind, Kind::Admin);
    let info = check(
        "COPY t (a) TO PROGRAM 'gzip > /tmp/x'",
        &["*:admin", "t:select"],
        &["t.a:select"],
    );
    assert_eq!(info.kind, Kind::Admin);
    assert!(info.outputs.is_empty());
}

/// The CopyInfo of `sql` as "format table(columns) delimiter null header quote escape other",
/// with "-" for what is absent.
fn copy_info(sql: &str) -> String {
    let info = info(sql);
    let Some(copy) = &info.copy else {
        return "none".to_owned();
    };
    let table = copy.table.map_or("-".to_owned(), |t| table(&info, t));
    let columns = copy
        .columns
        .as_ref()
        .map_or(String::new(), |columns| format!("({})", columns.join(",")));
    let char_or_dash = |c: Option<char>| c.map_or("-".to_owned(), String::from);
    format!(
        "{:?} {table}{columns} {} {} {} {} {} {}{}",
        copy.format,
        char_or_dash(copy.delimiter),
        copy.null.as_deref().unwrap_or("-"),
        if copy.header { "header" } else { "-" },
        char_or_dash(copy.quote),
        char_or_dash(copy.escape),
        if copy.other_options { "other" } else { "-" },
        if info.understood {
            ""
        } else {
            " not-understood"
        },
    )
}

#[test]
fn copy_details() {
    for (sql, expected) in [
        ("COPY t FROM STDIN;", "Text t - - - - - -"),
        ("COPY s.t (a, \"B\") TO STDOUT", "Text s.t(a,B) - - - - - -"),
        (
            "COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';', \
             NULL 'nil', QUOTE '''', ESCAPE '\\', FREEZE);",
            "Csv t(a,b) ; nil header ' \\ -",
        ),
        ("COPY t FROM STDIN (FORMAT binary);", "Binary t - - - - - -"),
        (
            "COPY t FROM STDIN (FORMAT text, HEADER false);",
            "Text t - - - - - -",
        ),
        (
            "COPY t FROM STDIN (FORMAT CSV, HEADER);",
            "Csv t - - header - - -",
        ),
        (
            "COPY (SELECT a FROM t) TO STDOUT WITH (FORMAT csv)",
            "Csv - - - - - - -",
        ),
        // The pre-9.0 syntax.
        ("COPY t TO STDOUT BINARY", "Binary t - - - - - -"),
        (
            "COPY t FROM STDIN WITH CSV HEADER QUOTE AS '\"' ESCAPE AS '!';",
            "Csv t - - header \" ! -",
        ),
        (
            "COPY t FROM STDIN DELIMITER AS '|' NULL AS 'x';",
            "Text t | x - - - -",
        ),
        // Options pgward does not model.
        (
            "COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE (a))",
            "Csv t - - - - - other",
        ),
        (
            "COPY t FROM STDIN (FORMAT csv, FORCE_NOT_NULL (a));",
            "Csv t - - - - - other",
        ),
        (
            "COPY t FROM STDIN (FORMAT csv, FORCE_NULL (a));",
            "Csv t - - - - - other",
        ),
        (
            "COPY t FROM STDIN (ENCODING 'LATIN1');",
            "Text t - - - - - other",
        ),
        (
            "COPY t FROM STDIN CSV FORCE NOT NULL a;",
            "Csv t - - - - - other",
        ),
        ("COPY t FROM STDIN (FORMAT json);", "Text t - - - - - other"),
        // Redshift's options are not PostgreSQL's.
        (
            "COPY t FROM STDIN GZIP;",
            "Text t - - - - - other not-understood",
        ),
        // A server file: Admin, described all the same.
        ("COPY t FROM '/tmp/x' (FORMAT csv)", "Csv t - - - - - -"),
        ("SELECT 1", "none"),
    ] {
        assert_eq!(copy_info(sql), expected, "{sql}");
    }
}

#[test]
fn ddl() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "CREATE TABLE s.n (a int PRIMARY KEY, b text DEFAULT now(), c int REFERENCES o(id))",
            &["s.n:ddl", "o:select"],
            &["o.id:select"],
        ),
        (
            "CREATE TABLE n (a int, FOREIGN KEY (a) REFERENCES p)",
            &["n:ddl", "p:select"],
            &["p.*:select"],
        ),
        (
            "CREATE TABLE n AS SELECT a FROM t",
            &["n:ddl", "t:select"],
            &["t.a:select"],
        ),
        (
            "CREATE INDEX i ON t (lower(b)) WHERE c > 0",
            &["t:ddl"],
            &[],
        ),
        (
            "CREATE VIEW v AS SELECT a FROM t WHERE b = 1",
            &["v:ddl", "t:select"],
            &["t.a:select", "t.b:select"],
        ),
        (
            "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t",
            &["mv:ddl", "t:select"],
            &["t.*:select"],
        ),
        ("DROP TABLE a, s.b", &["a:ddl", "s.b:ddl"], &[]),
        ("DROP VIEW v", &["v:ddl"], &[]),
        ("DROP MATERIALIZED VIEW v", &["v:ddl"], &[]),
        ("DROP INDEX i", &["i:ddl"], &[]),
        ("ALTER TABLE s.t RENAME TO u", &["s.t:ddl", "s.u:ddl"], &[]),
        (
            "ALTER TABLE t ADD COLUMN c int REFERENCES o(id)",
            &["t:ddl", "o:select"],
            &["o.id:select"],
        ),
        ("ALTER TABLE t OWNER TO bob", &["t:ddl"], &[]),
        ("ALTER INDEX i RENAME TO j", &["i:ddl", "j:ddl"], &[]),
        (
            "ALTER VIEW v AS SELECT a FROM t",
            &["v:ddl", "t:select"],
            &["t.a:select"],
        ),
        ("COMMENT ON TABLE t IS 'x'", &["t:ddl"], &[]),
        (
            "COMMENT ON COLUMN s.t.c IS 'x'",
            &["s.t:ddl"],
            &["s.t.c:ddl"],
        ),
        ("CREATE SCHEMA app", &["app.*:ddl"], &[]),
        ("CREATE SCHEMA AUTHORIZATION bob", &["bob.*:ddl"], &[]),
        ("DROP SCHEMA app", &["app.*:ddl"], &[]),
        (
            "ALTER SCHEMA app RENAME TO app2",
            &["app.*:ddl", "app2.*:ddl"],
            &[],
        ),
        (
            "CREATE SEQUENCE seq OWNED BY t.id",
            &["seq:ddl", "t:ddl"],
            &[],
        ),
        ("DROP SEQUENCE seq", &["seq:ddl"], &[]),
        ("CREATE TYPE ty AS (a int)", &["ty:ddl"], &[]),
        ("DROP TYPE ty", &["ty:ddl"], &[]),
        ("CREATE DOMAIN d AS int", &["d:ddl"], &[]),
        (
            "CREATE FUNCTION s.f() RETURNS int AS 'select 1' LANGUAGE sql",
            &["s.f:ddl"],
            &[],
        ),
        ("DROP FUNCTION f", &["f:ddl"], &[]),
        ("DROP PROCEDURE p", &["p:ddl"], &[]),
        (
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
            &["t:ddl"],
            &[],
        ),
        ("DROP TRIGGER tr ON t", &["t:ddl"], &[]),
        ("CREATE EXTENSION pgcrypto", &["*:ddl"], &[]),
        ("DROP EXTENSION pgcrypto", &["*:ddl"], &[]),
        ("VACUUM t", &["t:ddl"], &[]),
        ("VACUUM", &["*:ddl"], &[]),
        ("ANALYZE s.t", &["s.t:ddl"], &[]),
        (
            "CREATE POLICY p ON t USING (owner IN (SELECT name FROM acl))",
            &["t:ddl", "acl:select"],
            &["acl.name:select"],
        ),
        ("DROP POLICY p ON t", &["t:ddl"], &[]),
    ];
    for (sql, expected_accesses, expected_columns) in cases {
        let info = check(sql, expected_accesses, expected_columns);
        assert_eq!(info.kind, Kind::Ddl, "{sql}");
    }
    assert_eq!(
        functions(&info("CREATE INDEX i ON t (lower(b))")),
        ["lower"]
    );
    assert_eq!(
        functions(&info("CREATE TABLE n (b timestamptz DEFAULT now())")),
        ["now[v]"]
    );
}

#[test]
fn admin() {
    let cases: &[(&str, &[&str])] = &[
        ("GRANT SELECT ON t, s.u TO bob", &["t:admin", "s.u:admin"]),
        (
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bob",
            &["public.*:admin"],
        ),
        ("GRANT USAGE ON SCHEMA app TO bob", &["app.*:admin"]),
        ("REVOKE ALL ON t FROM bob", &["t:admin"]),
        ("CREATE ROLE r", &["*:admin"]),
        ("ALTER ROLE r WITH PASSWORD 'x'", &["*:admin"]),
        ("DROP ROLE r", &["*:admin"]),
        ("CREATE USER u", &["*:admin"]),
        ("DROP USER u", &["*:admin"]),
        ("CREATE DATABASE d", &["*:admin"]),
        ("DROP DATABASE d", &["*:admin"]),
        ("LOAD 'plugin'", &["*:admin"]),
        ("SET ROLE admin", &["*:admin"]),
        ("SET LOCAL ROLE admin", &["*:admin"]),
        ("SET role = 'admin'", &["*:admin"]),
        ("SET session_authorization TO 'bob'", &["*:admin"]),
    ];
    for (sql, expected_accesses) in cases {
        let info = check(sql, expected_accesses, &[]);
        assert_eq!(info.kind, Kind::Admin, "{sql}");
    }
}

#[test]
fn statements_that_touch_no_table() {
    let cases: &[(&str, Kind)] = &[
        ("BEGIN", Kind::Transaction),
        ("START TRANSACTION READ ONLY", Kind::Transaction),
        ("COMMIT", Kind::Transaction),
        ("END", Kind::Transaction),
        ("ROLLBACK", Kind::Transaction),
        ("SAVEPOINT s", Kind::Transaction),
        ("RELEASE SAVEPOINT s", Kind::Transaction),
        ("ROLLBACK TO SAVEPOINT s", Kind::Transaction),
        ("SET search_path TO a, b", Kind::Set),
        ("SET LOCAL work_mem = 1", Kind::Set),
        ("SET TIME ZONE 'UTC'", Kind::Set),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Kind::Set),
        ("SET pgward.route = 'replica'", Kind::Set),
        ("SHOW work_mem", Kind::Show),
        ("SHOW ALL", Kind::Show),
        ("DISCARD ALL", Kind::Utility),
        ("DEALLOCATE p", Kind::Utility),
        ("DEALLOCATE ALL", Kind::Utility),
        ("FETCH NEXT FROM c", Kind::Utility),
        ("CLOSE c", Kind::Utility),
        ("CLOSE ALL", Kind::Utility),
        ("LISTEN ch", Kind::Utility),
        ("UNLISTEN *", Kind::Utility),
        ("NOTIFY ch, 'x'", Kind::Utility),
    ];
    for (sql, kind) in cases {
        let info = check(sql, &[], &[]);
        assert_eq!(info.kind, *kind, "{sql}");
        assert!(info.tables.is_empty(), "{sql}");
    }
}

#[test]
fn wrappers_describe_the_inner_statement() {
    let info = check("EXPLAIN SELECT a FROM t", &["t:select"], &["t.a:select"]);
    assert_eq!(info.kind, Kind::Select);
    assert!(info.outputs.is_empty());
    let info = check(
        "EXPLAIN ANALYZE DELETE FROM t WHERE a = 1",
        &["t:delete", "t:select"],
        &["t.a:select"],
    );
    assert_eq!(info.kind, Kind::Delete);
    let info = check(
        "PREPARE p (text) AS SELECT a FROM t WHERE b = $1",
        &["t:select"],
        &["t.a:select", "t.b:select"],
    );
    assert_eq!(values(&info), ["$1=t.b"]);
    assert!(info.outputs.is_empty());
    let info = check(
        "PREPARE q AS UPDATE t SET a = $1",
        &["t:update"],
        &["t.a:update"],
    );
    assert_eq!(info.kind, Kind::Update);
    let info = check(
        "DECLARE c CURSOR FOR SELECT a FROM t",
        &["t:select"],
        &["t.a:select"],
    );
    assert_eq!(info.kind, Kind::Select);
    let info = check("CALL s.proc(1, 'x')", &[], &[]);
    assert_eq!(info.kind, Kind::Utility);
    assert_eq!(functions(&info), ["s.proc[v]"]);
}

#[test]
fn not_understood() {
    for sql in [
        "EXECUTE p(1)",
        "SELECT 1 FROM a.b.c.d",
        "SELECT * FROM ONLY (t)",
        "INSERT INTO a.b.c.d VALUES (1)",
    ] {
        assert!(!info(sql).understood, "{sql}");
    }
    // What sqlparser 0.59 cannot parse never reaches describe: the analyzer treats the
    // text as unparsed (Write, no statement info).
    for sql in [
        "DO $$ BEGIN PERFORM 1; END $$",
        "ALTER SYSTEM SET work_mem = '1MB'",
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
        "REFRESH MATERIALIZED VIEW v",
        "CLUSTER t",
        "REINDEX TABLE t",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION bob",
        "PREPARE TRANSACTION 'x'",
        "COMMIT PREPARED 'x'",
    ] {
        assert!(
            Parser::parse_sql(&PostgreSqlDialect {}, sql).is_err(),
            "{sql}"
        );
    }
}

#[test]
fn parameters_map_to_columns() {
    check_values("SELECT 1 FROM t WHERE ssn = $1", &["$1=t.ssn"]);
    check_values("SELECT 1 FROM t WHERE $2 = t.email", &["$2=t.email"]);
    let sql = "SELECT 1 FROM t WHERE a IN ($1, $2, 'x')";
    let literal = format!("{}=t.a", position(sql, "'x'"));
    check_values(sql, &["$1=t.a", "$2=t.a", &literal]);
    check_values(
        "SELECT 1 FROM t WHERE a LIKE $1 AND b BETWEEN $2 AND $3 AND c::text = $4::text \
         AND d <> $5 AND e >= $6 AND f = true AND g IS NULL AND h = NULL AND $7 < i",
        &[
            "$1=t.a", "$2=t.b", "$3=t.b", "$4=t.c", "$5=t.d", "$6=t.e", "$7=t.i",
        ],
    );
    check_values(
        "SELECT 1 FROM t WHERE (a, b) = ($1, $2)",
        &["$1=t.a", "$2=t.b"],
    );
    check_values(
        "SELECT 1 FROM t JOIN u ON t.id = u.id WHERE u.k = $1 AND x = $2",
        &["$1=u.k", "$2=?{t,u}.x"],
    );
    check_values(
        "SELECT 1 FROM (SELECT ssn AS s FROM t) d WHERE d.s = $1",
        &["$1=t.ssn"],
    );
    check_values("SELECT CASE a WHEN $1 THEN 1 END FROM t", &["$1=t.a"]);
    check_values("SELECT 1 FROM t WHERE a = ANY($1)", &[]);
    check_values("SELECT 1 FROM t WHERE lower(a) = $1", &[]);
    check_values("UPDATE t SET a = $1 WHERE b = $2", &["$1=t.a", "$2=t.b"]);
}

#[test]
fn literals_map_to_columns_by_position() {
    let sql = "SELECT 1 FROM t WHERE a = 'x'";
    check_values(sql, &[&format!("{}=t.a", position(sql, "'x'"))]);
    let sql = "SELECT 1\nFROM t\nWHERE a = 42 AND b = $$x$$";
    check_values(
        sql,
        &[
            &format!("{}=t.a", position(sql, "42")),
            &format!("{}=t.b", position(sql, "$$x$$")),
        ],
    );
    assert_eq!(position(sql, "42"), "L3:11");
    let sql = "INSERT INTO t (a, b) VALUES (7, 'y')";
    check_values(
        sql,
        &[
            &format!("{}=t.a", position(sql, "7")),
            &format!("{}=t.b", position(sql, "'y'")),
        ],
    );
    let sql = "UPDATE t SET a = 'z'";
    check_values(sql, &[&format!("{}=t.a", position(sql, "'z'"))]);
}

#[test]
fn functions_are_classified() {
    let info = check(
        "SELECT now(), lower(a), nextval('s'), pg_catalog.upper(b), myschema.lower(c), \
         CURRENT_TIMESTAMP, current_date, random(), \"lower\"(d) FROM t",
        &["t:select"],
        &["t.a:select", "t.b:select", "t.c:select", "t.d:select"],
    );
    assert_eq!(
        functions(&info),
        strings(&[
            "now[v]",
            "lower",
            "nextval[wv]",
            "pg_catalog.upper",
            "myschema.lower[v]",
            "current_timestamp[v]",
            "current_date[v]",
            "random[v]",
        ])
    );
    let info = check(
        "SELECT * FROM generate_series(1, 3) g, unnest($1::int[]) u",
        &[],
        &[],
    );
    assert_eq!(functions(&info), ["generate_series[v]", "unnest"]);
    let info = check(
        "SELECT 1 FROM t WHERE a IN (SELECT pg_advisory_lock(b) FROM u)",
        &["t:select", "u:select"],
        &["t.a:select", "?{u;t}.b:select"],
    );
    assert_eq!(functions(&info), ["pg_advisory_lock[wv]"]);
    let configured = WriteFunctions::new(&["audit".into()]);
    let info = describe_with("SELECT audit(1)", &configured);
    assert_eq!(functions(&info), ["audit[wv]"]);
}

#[test]
fn output_provenance() {
    check_outputs(
        "SELECT a, t.b, c AS x, a + 1, (d), * FROM t",
        &["t.a", "t.b", "t.c", "expr", "t.d", "t.*"],
    );
    check_outputs(
        "WITH c AS (SELECT a AS x FROM t) SELECT x, c.x AS y FROM c",
        &["t.a", "t.a"],
    );
    check_outputs("SELECT s.a FROM (SELECT * FROM t) s", &["t.a"]);
    check_outputs("WITH c(p) AS (SELECT a FROM t) SELECT p FROM c", &["t.a"]);
    check_outputs("SELECT a FROM t, u", &["?{t,u}.a"]);
    check_outputs("SELECT a::text FROM t", &["expr"]);
    check_outputs(
        "SELECT * FROM (SELECT a, b + 1 AS b FROM t) s JOIN u ON true",
        &["t.a", "expr", "u.*"],
    );
    check_outputs("UPDATE t SET a = 1 RETURNING a, b * 2", &["t.a", "expr"]);
    check_outputs(
        "SELECT x FROM (SELECT a AS x FROM t UNION SELECT b FROM u) s",
        &["expr"],
    );
}

#[test]
fn value_usages_name_the_comparison() {
    check_usages(
        "SELECT 1 FROM t WHERE a = $1 AND $2 = b AND c <> $3 AND d != $4 AND e IN ($5, $6) \
         AND f NOT IN ($7) AND (g IS DISTINCT FROM $8) AND ($9 IS NOT DISTINCT FROM h)",
        &[
            "$1=t.a eq",
            "$2=t.b eq<",
            "$3=t.c ne",
            "$4=t.d ne",
            "$5=t.e in",
            "$6=t.e in",
            "$7=t.f not in",
            "$8=t.g distinct",
            "$9=t.h not distinct<",
        ],
    );
    check_usages(
        "SELECT CASE a WHEN $1 THEN 1 END FROM t WHERE b < $2 AND $3 >= c \
         AND d BETWEEN $4 AND $5 AND e LIKE $6 AND $7 IN (f, g)",
        &[
            "$1=t.a case",
            "$2=t.b other",
            "$3=t.c other<",
            "$4=t.d other",
            "$5=t.d other",
            "$6=t.e other",
            "$7=t.f in<",
            "$7=t.g in<",
        ],
    );
    check_usages(
        "SELECT 1 FROM t WHERE (a, b) = ($1, $2) AND (c, d) IN (($3, $4))",
        &["$1=t.a eq", "$2=t.b eq", "$3=t.c in", "$4=t.d in"],
    );
    check_usages(
        "UPDATE t SET a = $1 WHERE b = $2",
        &["$1=t.a assigned", "$2=t.b eq"],
    );
    // A result column of a set operation is either branch's column.
    check_usages(
        "SELECT * FROM (SELECT a FROM t UNION SELECT b FROM u) s WHERE s.a = $1",
        &["$1=t.a eq", "$1=u.b eq"],
    );
    check_usages(
        "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE SET b = $3",
        &["$1=t.a assigned", "$2=t.b assigned", "$3=t.b assigned"],
    );
}

#[test]
fn contexts_of_outputs() {
    check_contexts(
        "SELECT a, t.b, c AS x, (d), (e) AS y FROM t",
        &[
            "t.a:output",
            "t.b:output",
            "t.c:output",
            "t.d:output",
            "t.e:output",
        ],
    );
    check_contexts("SELECT * FROM t", &["t.*:output"]);
    check_contexts("SELECT t.*, u.a FROM t, u", &["t.*:output", "u.a:output"]);
    check_contexts("SELECT a FROM t, u", &["?{t,u}.a:output"]);
    check_contexts(
        "SELECT a || b, a::text, lower(c), (d + 1) AS e FROM t",
        &[
            "t.a:(an operator)",
            "t.b:(an operator)",
            "t.a:(a cast)",
            "t.c:(a function call)",
            "t.d:(an operator)",
        ],
    );
    // Through subqueries and CTEs: the outer occurrence is the inner column's.
    check_contexts("SELECT x FROM (SELECT a AS x FROM t) s", &["t.a:output"]);
    check_contexts(
        "SELECT upper(x) FROM (SELECT a AS x FROM t) s",
        &["t.a:output", "t.a:(a function call)"],
    );
    check_contexts(
        "WITH c AS (SELECT a, b FROM t) SELECT a FROM c WHERE b = $1",
        &["t.a:output", "t.b:output", "t.b:eq"],
    );
    check_contexts("SELECT * FROM (SELECT a FROM t) s", &["t.a:output"]);
    check_contexts(
        "SELECT s.x FROM (SELECT * FROM t) s WHERE s.y LIKE $1",
        &["t.*:output", "t.x:output", "t.y:(LIKE)"],
    );
    check_contexts(
        "SELECT x FROM (SELECT a AS x FROM t UNION ALL SELECT b FROM u) s WHERE x = $1",
        &["t.a:output", "u.b:output", "t.a:eq", "u.b:eq"],
    );
    check_contexts("SELECT (SELECT a FROM t LIMIT 1)", &["t.a:output"]);
    check_contexts(
        "SELECT lower((SELECT a FROM t LIMIT 1))",
        &["t.a:output", "t.a:(a function call)"],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE EXISTS (SELECT a FROM u WHERE u.b = t.c)",
        &["?{u;t}.a:output", "u.b=t.c", "t.c=u.b"],
    );
    check_contexts("INSERT INTO t (a) SELECT b FROM u", &["u.b:output"]);
    check_contexts(
        "UPDATE t SET a = $1 RETURNING a, b + 1",
        &["t.a:output", "t.b:(an operator)"],
    );
    check_contexts(
        "SELECT a FROM t UNION ALL SELECT b FROM u",
        &["t.a:output", "u.b:output"],
    );
    // Whole rows, fields, subscripts and renamed columns are computed on.
    // (`t` may also be a column of t: PostgreSQL prefers it.)
    check_contexts(
        "SELECT t FROM t",
        &["t.t:output", "t.*:(a whole-row reference)"],
    );
    check_contexts(
        "SELECT s FROM (SELECT a FROM t) s",
        &["t.a:output", "t.a:(a whole-row reference)"],
    );
    check_contexts("SELECT (t.c).f FROM t", &["t.c:(a field access)"]);
    check_contexts("SELECT a[1] FROM t", &["t.a:(an operator)"]);
    check_contexts(
        "SELECT p FROM t AS x(p)",
        &["t.p:output", "t.*:(a column alias list)"],
    );
    check_contexts(
        "SELECT p FROM (SELECT * FROM t) AS s(p) WHERE p = $1",
        &["t.*:output", "t.*:(a column alias list)"],
    );
    check_contexts("COPY t (a, b) TO STDOUT", &["t.a:output", "t.b:output"]);
    check_contexts("COPY t FROM STDIN;", &[]);
}

#[test]
fn contexts_of_comparisons_with_values() {
    check_contexts(
        "SELECT 1 FROM t WHERE a = $1 AND $2 <> b AND c != 'x' AND d IN ($3, 4) \
         AND e NOT IN ($4) AND (f IS DISTINCT FROM $5) AND (g IS NOT DISTINCT FROM 'y')",
        &[
            "t.a:eq", "t.b:eq", "t.c:eq", "t.d:eq", "t.e:eq", "t.f:eq", "t.g:eq",
        ],
    );
    check_contexts(
        "SELECT CASE a WHEN $1 THEN b ELSE c END FROM t",
        &[
            "t.a:eq",
            "t.b:(a CASE expression)",
            "t.c:(a CASE expression)",
        ],
    );
    check_contexts(
        "SELECT CASE WHEN a THEN 1 WHEN b = $1 THEN 2 END FROM t",
        &["t.a:(a CASE expression)", "t.b:eq"],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE a = $1::text AND b::text = $2 AND (c) = $3 AND (d = $4)",
        &["t.a:eq", "t.b:(a cast)", "t.c:eq", "t.d:eq"],
    );
    // COLLATE on either side changes how the column compares.
    check_contexts(
        "SELECT 1 FROM t WHERE a = $1 COLLATE \"C\" AND b COLLATE \"C\" = $2",
        &["t.a:(a comparison with an expression)", "t.b:(a collation)"],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE a IS NULL AND (b) IS NOT NULL",
        &["t.a:null", "t.b:null"],
    );
    check_contexts(
        "SELECT count(a), count(*), count(DISTINCT b), pg_catalog.count(c), s.count(d) FROM t",
        &[
            "t.a:null",
            "t.b:grouped",
            "t.c:null",
            "t.d:(a function call)",
        ],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE a = lower($1) AND b = NULL AND c = current_user",
        &[
            "t.a:(a comparison with an expression)",
            "t.b:(a comparison with an expression)",
            "t.c:(a comparison with an expression)",
        ],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE (a, b) = ($1, $2) AND (c, d) IN (($3, $4), ($5, $6))",
        &["t.a:eq", "t.b:eq", "t.c:eq", "t.d:eq"],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE a IN ($1, b)",
        &["t.a:eq", "t.a=t.b", "t.b=t.a"],
    );
}

#[test]
fn contexts_of_columns_compared_with_columns() {
    check_contexts(
        "SELECT 1 FROM t JOIN u ON t.x = u.y",
        &["t.x=u.y", "u.y=t.x"],
    );
    check_contexts(
        "SELECT 1 FROM t JOIN u ON t.x <> u.y AND (t.z IS DISTINCT FROM u.z)",
        &["t.x=u.y", "u.y=t.x", "t.z=u.z", "u.z=t.z"],
    );
    check_contexts(
        "SELECT 1 FROM t JOIN u USING (id)",
        &["t.id=u.id", "u.id=t.id"],
    );
    check_contexts(
        "SELECT 1 FROM t JOIN u USING (id) JOIN v USING (id)",
        &["t.id=u.id", "u.id=t.id", "?{t,u}.id=v.id", "v.id=?{t,u}.id"],
    );
    check_contexts(
        "SELECT 1 FROM t JOIN (SELECT a AS id FROM u) s USING (id)",
        &["u.a:output", "t.id=u.a", "u.a=t.id"],
    );
    check_contexts(
        "SELECT 1 FROM t JOIN (SELECT lower(a) AS id FROM u) s USING (id)",
        &["u.a:(a function call)", "t.id:(a join)"],
    );
    check_contexts(
        "SELECT 1 FROM t NATURAL JOIN u",
        &["t.*:(a join)", "u.*:(a join)"],
    );
    check_contexts(
        "SELECT 1 FROM t JOIN u ON t.x < u.y",
        &["t.x:(a range comparison)", "u.y:(a range comparison)"],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE x = (SELECT u.y FROM u)",
        &["u.y:output", "t.x=u.y", "u.y=t.x"],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE x IN (SELECT u.y FROM u) \
         AND z NOT IN (SELECT lower(u.w) FROM u)",
        &[
            "u.y:output",
            "t.x=u.y",
            "u.y=t.x",
            "u.w:(a function call)",
            "t.z:(a comparison with an expression)",
        ],
    );
    check_contexts(
        "SELECT 1 FROM t JOIN u ON t.flag WHERE NOT ok AND (done OR u.gone)",
        &[
            "t.flag:(a condition)",
            "?{t,u}.ok:(a condition)",
            "?{t,u}.done:(a condition)",
            "u.gone:(a condition)",
        ],
    );
}

#[test]
fn contexts_of_grouping() {
    check_contexts(
        "SELECT a, count(*) FROM t GROUP BY a HAVING count(b) > 1",
        &["t.a:output", "t.a:grouped", "t.b:null"],
    );
    check_contexts(
        "SELECT DISTINCT a, b FROM t",
        &["t.a:output", "t.a:grouped", "t.b:output", "t.b:grouped"],
    );
    check_contexts("SELECT DISTINCT * FROM t", &["t.*:output", "t.*:grouped"]);
    check_contexts(
        "SELECT DISTINCT ON (a) b FROM t ORDER BY a, c",
        &[
            "t.a:grouped",
            "t.a:(ORDER BY)",
            "t.b:output",
            "t.c:(ORDER BY)",
        ],
    );
    check_contexts(
        "SELECT a FROM t UNION SELECT b FROM u",
        &["t.a:output", "t.a:grouped", "u.b:output", "u.b:grouped"],
    );
    // INTERSECT ALL and EXCEPT ALL still match rows by equality.
    check_contexts(
        "SELECT a FROM t INTERSECT ALL SELECT b FROM u",
        &["t.a:output", "t.a:grouped", "u.b:output", "u.b:grouped"],
    );
    check_contexts(
        "SELECT a FROM t UNION SELECT b FROM u ORDER BY a",
        &[
            "t.a:output",
            "t.a:grouped",
            "t.a:(ORDER BY)",
            "u.b:output",
            "u.b:grouped",
            "u.b:(ORDER BY)",
        ],
    );
    check_contexts(
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
        &["t.a:grouped", "t.b:(ORDER BY)"],
    );
    check_contexts(
        "SELECT sum(n) OVER w FROM t WINDOW w AS (PARTITION BY a)",
        &["t.n:(a function call)", "t.a:grouped"],
    );
    // A result column named by position or alias: its column. (`x` is also tried as a
    // column of t: over-reporting is safe.)
    check_contexts(
        "SELECT a AS x, b FROM t GROUP BY 1, b ORDER BY x",
        &[
            "t.a:output",
            "t.a:grouped",
            "t.a:(ORDER BY)",
            "t.b:output",
            "t.b:grouped",
            "t.x:(ORDER BY)",
        ],
    );
    check_contexts(
        "SELECT a, b FROM t GROUP BY ROLLUP (a, b)",
        &["t.a:output", "t.a:grouped", "t.b:output", "t.b:grouped"],
    );
    check_contexts(
        "SELECT a, b FROM t GROUP BY GROUPING SETS ((a), (a, b))",
        &["t.a:output", "t.a:grouped", "t.b:output", "t.b:grouped"],
    );
}

#[test]
fn contexts_of_computations() {
    check_contexts(
        "SELECT 1 FROM t WHERE a LIKE $1 OR b ILIKE 'x' OR c SIMILAR TO 'y' OR d ~ 'z' \
         OR e !~* 'w' OR f NOT LIKE 'v'",
        &[
            "t.a:(LIKE)",
            "t.b:(LIKE)",
            "t.c:(LIKE)",
            "t.d:(LIKE)",
            "t.e:(LIKE)",
            "t.f:(LIKE)",
        ],
    );
    check_contexts(
        "SELECT a FROM t ORDER BY b, lower(c)",
        &["t.a:output", "t.b:(ORDER BY)", "t.c:(a function call)"],
    );
    check_contexts(
        "SELECT 1 FROM t WHERE a BETWEEN $1 AND $2 AND b > 3 AND $3 <= c",
        &[
            "t.a:(a range comparison)",
            "t.b:(a range comparison)",
            "t.c:(a range comparison)",
        ],
    );
    check_contexts(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a), string_agg(b, ',' ORDER BY c) \
         FROM t",
        &["t.a:(ORDER BY)", "t.b:(a function call)", "t.c:(ORDER BY)"],
    );
    check_contexts(
        "SELECT -a, b->>'k', c + 1 FROM t WHERE d = ANY($1) AND e[2] = $2",
        &[
            "t.a:(an operator)",
            "t.b:(an operator)",
            "t.c:(an operator)",
            "t.d:(an operator)",
            "t.e:(an operator)",
        ],
    );
    check_contexts(
        "SELECT CAST(a AS int), b COLLATE \"C\", substring(c FROM 1 FOR 2) FROM t",
        &["t.a:(a cast)", "t.b:(a collation)", "t.c:(a function call)"],
    );
    check_contexts(
        "SELECT count(*) FILTER (WHERE a) FROM t, generate_series(1, t.n)",
        &["t.a:(a condition)", "t.n:(a function call)"],
    );
    check_contexts(
        "SELECT (a, b), ARRAY[c] FROM t",
        &[
            "t.a:(a row constructor)",
            "t.b:(a row constructor)",
            "t.c:(an array constructor)",
        ],
    );
    check_contexts(
        "SELECT 1 FROM t, LATERAL (VALUES (t.a)) v LIMIT (SELECT u.b FROM u)",
        &["t.a:(an expression)", "u.b:output", "u.b:(an expression)"],
    );
}

#[test]
fn contexts_of_data_modifications() {
    check_contexts(
        "UPDATE t SET a = b, c = $1, d = e || 'x' WHERE f = $2 RETURNING g",
        &["t.b:output", "t.e:(an operator)", "t.f:eq", "t.g:output"],
    );
    check_contexts(
        "UPDATE t SET a = u.b FROM u WHERE t.id = u.id",
        &["u.b:output", "t.id=u.id", "u.id=t.id"],
    );
    check_contexts(
        "UPDATE t SET (a, b) = (c, lower(d)), (e, f) = (SELECT u.x, u.y FROM u)",
        &[
            "t.c:output",
            "t.d:(a function call)",
            "u.x:output",
            "u.y:output",
        ],
    );
    check_contexts(
        "INSERT INTO t (a, b) VALUES ($1, 2) ON CONFLICT (a) DO UPDATE \
         SET b = excluded.b || 'x' WHERE t.c IS NULL",
        &["t.a:grouped", "t.b:(an operator)", "t.c:null"],
    );
    check_contexts(
        "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a",
        &["t.a:grouped", "t.a:output"],
    );
    check_contexts(
        "DELETE FROM t WHERE a = $1 RETURNING *",
        &["t.a:eq", "t.*:output"],
    );
    check_contexts(
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND s.flag THEN UPDATE SET a = s.a \
         WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, lower(s.a))",
        &[
            "t.id=s.id",
            "s.id=t.id",
            "s.flag:(a condition)",
            "s.a:output",
            "s.id:output",
            "s.a:(a function call)",
        ],
    );
}

#[test]
fn assignments_of_insert() {
    let sql = "INSERT INTO t (a, b, c, d) VALUES ($1, 'x', NULL, DEFAULT)";
    let literal = format!("t.b<-{}", position(sql, "'x'"));
    check_assignments(sql, &["t.a<-$1", &literal, "t.c<-null", "t.d<-default"]);
    check_assignments(
        "INSERT INTO t VALUES ($1, $2::int, lower($3), NULL::text, (SELECT 1))",
        &[
            "t.#0<-$1",
            "t.#1<-$2",
            "t.#2<-expr",
            "t.#3<-null",
            "t.#4<-expr",
        ],
    );
    check_assignments(
        "INSERT INTO t (a, b) VALUES ($1, $2), ($3, DEFAULT), ($4, DEFAULT)",
        &["t.a<-$1", "t.a<-$3", "t.a<-$4", "t.b<-$2", "t.b<-default"],
    );
    check_assignments("INSERT INTO t DEFAULT VALUES", &[]);
    check_assignments(
        "INSERT INTO t (a, b, c, d) SELECT x, $1, x || y, NULL FROM u",
        &["t.a<-u.x", "t.b<-$1", "t.c<-expr", "t.d<-null"],
    );
    check_assignments(
        "INSERT INTO t SELECT id, * FROM u",
        &["t.#0<-u.id", "t.#1<-u.*"],
    );
    check_assignments(
        "INSERT INTO t (a, b, c) SELECT id, *, 1 FROM u",
        &["t.a<-u.id", "t.b<-u.*", "t.c<-u.*"],
    );
    check_assignments(
        "INSERT INTO t SELECT * FROM (SELECT b, a FROM u) s",
        &["t.#0<-u.b", "t.#1<-u.a"],
    );
    check_assignments(
        "INSERT INTO t (a, b) SELECT a, $1 FROM u UNION SELECT b, $1 FROM v",
        &["t.a<-expr", "t.b<-$1"],
    );
    check_assignments(
        "WITH s AS (SELECT x FROM u) INSERT INTO t (a) SELECT x FROM s",
        &["t.a<-u.x"],
    );
}

#[test]
fn assignments_of_update_upsert_and_merge() {
    check_assignments(
        "UPDATE t SET a = $1, b = NULL, c = DEFAULT, d = e, f = e + 1, \
         (g, h) = ($2, i), (j, k) = (SELECT 1, 2), l = (m)",
        &[
            "t.a<-$1",
            "t.b<-null",
            "t.c<-default",
            "t.d<-t.e",
            "t.f<-expr",
            "t.g<-$2",
            "t.h<-t.i",
            "t.j<-expr",
            "t.k<-expr",
            "t.l<-t.m",
        ],
    );
    check_assignments(
        "UPDATE t SET a = u.b FROM u WHERE t.id = u.id",
        &["t.a<-u.b"],
    );
    check_assignments(
        "UPDATE t SET a = s.x FROM (SELECT b AS x FROM u) s",
        &["t.a<-u.b"],
    );
    check_assignments(
        "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE \
         SET b = EXCLUDED.b, c = t.c || EXCLUDED.b, d = excluded.a",
        &[
            "t.a<-$1",
            "t.b<-$2",
            "t.b<-excluded.b",
            "t.c<-expr",
            "t.d<-excluded.a",
        ],
    );
    check_assignments(
        "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING",
        &["t.a<-$1"],
    );
    check_assignments(
        "MERGE INTO t USING s ON t.id = s.id \
         WHEN MATCHED THEN UPDATE SET a = s.a, b = $1 \
         WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, $2)",
        &["t.a<-s.a", "t.b<-$1", "t.id<-s.id", "t.a<-$2"],
    );
    check_assignments(
        "MERGE INTO t USING s ON t.id = s.id \
         WHEN NOT MATCHED THEN INSERT VALUES (s.id, DEFAULT, s.a || 'x')",
        &["t.#0<-s.id", "t.#1<-default", "t.#2<-expr"],
    );
    check_assignments("DELETE FROM t WHERE a = $1", &[]);
}

/// A tiny xorshift generator: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'v>(&mut self, items: &[&'v str]) -> &'v str {
        items[self.below(items.len())]
    }
}

const NAMES: &[&str] = &[
    "t", "u", "s.t", "x", "a", "b", "\"Q\"", "c", "t.a", "x.b", "only",
];

/// A random, mostly valid statement: grammar-driven so that most of them parse.
fn statement(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => format!(
            "INSERT INTO {} (a, b) {} {}",
            rng.pick(NAMES),
            query(rng, 2),
            rng.pick(&["", "ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING *", "RETURNING a"])
        ),
        1 => format!(
            "UPDATE {} SET a = {} FROM {} WHERE {}",
            rng.pick(NAMES),
            expr(rng, 2),
            from_item(rng, 2),
            expr(rng, 2)
        ),
        2 => format!("DELETE FROM {} USING {} WHERE {}", rng.pick(NAMES), from_item(rng, 2), expr(rng, 2)),
        3 => format!(
            "MERGE INTO {} USING {} ON {} WHEN MATCHED THEN UPDATE SET a = {} WHEN NOT MATCHED THEN INSERT (a) VALUES ({})",
            rng.pick(NAMES),
            from_item(rng, 1),
            expr(rng, 2),
            expr(rng, 1),
            expr(rng, 1)
        ),
        4 => format!("WITH {} AS ({}) {}", rng.pick(NAMES), query(rng, 2), query(rng, 2)),
        _ => query(rng, 3),
    }
}

fn query(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 {
        return "SELECT 1".into();
    }
    let mut sql = format!("SELECT {}", select_item(rng, depth));
    for _ in 0..rng.below(3) {
        sql += &format!(", {}", select_item(rng, depth));
    }
    if rng.below(5) > 0 {
        sql += &format!(" FROM {}", from_item(rng, depth));
    }
    for clause in [" WHERE", " GROUP BY", " HAVING", " ORDER BY"] {
        if rng.below(3) == 0 {
            sql += &format!("{clause} {}", expr(rng, depth - 1));
        }
    }
    match rng.below(8) {
        0 => sql += &format!(" UNION {}", query(rng, depth - 1)),
        1 => sql += " FOR UPDATE",
        2 => sql += &format!(" LIMIT {}", expr(rng, 1)),
        _ => {}
    }
    sql
}

fn select_item(rng: &mut Rng, depth: usize) -> String {
    match rng.below(6) {
        0 => "*".into(),
        1 => format!("{}.*", rng.pick(NAMES)),
        2 => format!("{} AS {}", expr(rng, depth - 1), rng.pick(NAMES)),
        _ => expr(rng, depth - 1),
    }
}

fn from_item(rng: &mut Rng, depth: usize) -> String {
    let item = match rng.below(6) {
        0 if depth > 0 => format!("({}) {}", query(rng, depth - 1), rng.pick(NAMES)),
        1 => format!("generate_series(1, {}) {}", expr(rng, 0), rng.pick(NAMES)),
        _ => format!("{} {}", rng.pick(NAMES), rng.pick(&["", "x", "AS y(p, q)"])),
    };
    match rng.below(5) {
        0 => format!("{item} JOIN {} USING (a)", rng.pick(NAMES)),
        1 => format!("{item} NATURAL JOIN {}", rng.pick(NAMES)),
        2 => format!("{item} LEFT JOIN {} ON {}", rng.pick(NAMES), expr(rng, 1)),
        3 if depth > 0 => format!("{item}, LATERAL ({}) l", query(rng, depth - 1)),
        _ => item,
    }
}

fn expr(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 {
        return rng
            .pick(&[
                "a", "t.a", "x.b", "$1", "'s'", "42", "NULL", "true", "\"Q\".c", "t", "s.t.a",
                "x.y.z.w",
            ])
            .into();
    }
    match rng.below(10) {
        0 => format!("({})", query(rng, depth - 1)),
        1 => format!("EXISTS ({})", query(rng, depth - 1)),
        2 => format!(
            "{} IN ({}, {})",
            expr(rng, depth - 1),
            expr(rng, 0),
            expr(rng, 0)
        ),
        3 => format!("lower({})", expr(rng, depth - 1)),
        4 => format!(
            "CASE {} WHEN {} THEN {} END",
            expr(rng, 0),
            expr(rng, 0),
            expr(rng, depth - 1)
        ),
        5 => format!("{}::text", expr(rng, depth - 1)),
        6 => format!("count(*) OVER (PARTITION BY {})", expr(rng, 0)),
        _ => format!(
            "{} {} {}",
            expr(rng, depth - 1),
            rng.pick(&["=", "<>", "AND", "OR", "+", "LIKE", "<"]),
            expr(rng, depth - 1)
        ),
    }
}

const SOUP: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "JOIN",
    "ON",
    "USING",
    "WITH",
    "AS",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "MERGE",
    "WHEN",
    "MATCHED",
    "THEN",
    "UNION",
    "ALL",
    "LATERAL",
    "ONLY",
    "RETURNING",
    "ORDER",
    "BY",
    "GROUP",
    "NATURAL",
    "LEFT",
    "*",
    ",",
    "(",
    ")",
    ".",
    "=",
    "<",
    "+",
    "::",
    "t",
    "u",
    "a",
    "b",
    "x",
    "\"Q\"",
    "$1",
    "'s'",
    "1",
    "NULL",
    "count",
    "now",
    "COPY",
    "TO",
    "STDOUT",
    "CREATE",
    "TABLE",
    "DROP",
    "GRANT",
    "EXPLAIN",
    "IN",
    "EXISTS",
    "CASE",
    "END",
    "ROW",
    "DEFAULT",
    "excluded",
    "CONFLICT",
    "DO",
    "NOTHING",
    "OVER",
];

/// Random statements, grammar-driven and token soups: describe must never panic.
#[test]
fn random_statements_never_panic() {
    std::thread::Builder::new()
        .stack_size(64 * 1024 * 1024)
        .spawn(|| {
            let functions = WriteFunctions::new(&[]);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let mut parsed = 0;
            for round in 0..4000 {
                let sql = if round % 2 == 0 {
                    statement(&mut rng)
                } else {
                    let length = 2 + rng.below(16);
                    (0..length)
                        .map(|_| rng.pick(SOUP))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                if sql.matches('(').count() > 6 {
                    continue;
                }
                if let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, &sql) {
                    parsed += 1;
                    for statement in &statements {
                        let info = describe(statement, &functions);
                        for (table, _) in &info.accesses {
                            assert!(*table < info.tables.len(), "{sql}");
                        }
                    }
                }
            }
            assert!(parsed > 1000, "only {parsed} statements parsed");
        })
        .expect("spawn")
        .join()
        .expect("describe panicked");
}
