//! What one statement does, in the terms every stage shares: which relations it touches and
//! how, which columns it reads or writes, which values land in which column, which functions
//! it calls and where its result columns come from.
//!
//! The description is made from the SQL text alone (it is cached by text), so names are kept
//! as written: a relation's schema is resolved later, against the client's search_path and
//! the catalog (`crate::catalog`), and an unqualified column with several tables in scope
//! keeps its candidates until the catalog says which of them has it.

/// The statement category (what the README's action mapping table lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    /// CREATE / ALTER / DROP / COMMENT / maintenance (VACUUM, ANALYZE, REINDEX, ...).
    Ddl,
    /// GRANT / REVOKE, roles, ALTER SYSTEM, COPY with a server file or program, LOAD, ...
    Admin,
    /// COPY ... FROM STDIN.
    CopyIn,
    /// COPY ... TO STDOUT.
    CopyOut,
    /// BEGIN / COMMIT / ROLLBACK / SAVEPOINT / ...
    Transaction,
    /// SET / RESET.
    Set,
    Show,
    /// Everything that touches no table: DISCARD, DEALLOCATE, FETCH, CLOSE, LISTEN, ...
    Utility,
}

/// A policy action (the `act` of a casbin request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    Ddl,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Select => "select",
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Truncate => "truncate",
            Action::Ddl => "ddl",
            Action::Admin => "admin",
        }
    }
}

/// A relation (or another schema object) as written. Identifiers are folded as PostgreSQL
/// folds them: unquoted ones to lower case, quoted ones kept exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelName {
    pub schema: Option<String>,
    pub name: String,
}

impl RelName {
    /// The database as a whole: the object of actions that name no table (CREATE ROLE,
    /// ALTER SYSTEM, ...). It resolves to `*`, not against the search_path.
    pub fn database() -> RelName {
        RelName {
            schema: None,
            name: "*".into(),
        }
    }

    pub fn is_database(&self) -> bool {
        self.schema.is_none() && self.name == "*"
    }
}

/// A column reference, by index into [`StatementInfo::tables`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnRef {
    /// A column of a known table: qualified by the table's name or alias, or unqualified
    /// with only one table in scope.
    Of { table: usize, name: String },
    /// An unqualified name with several tables in scope. `scopes` lists the candidate tables
    /// of each enclosing scope, innermost first: the column belongs to the candidates of the
    /// first scope where (per the catalog) some table has it.
    Unqualified {
        scopes: Vec<Vec<usize>>,
        name: String,
    },
    /// Every column of a table: `*`, `t.*`, or the implicit column list of an INSERT or COPY.
    All { table: usize },
}

/// A column read or written with an action (a WHERE column of an UPDATE is read: Select).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnUse {
    pub column: ColumnRef,
    pub action: Action,
}

/// Where a value comes from in the statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueSource {
    /// `$n` (1-based).
    Param(u32),
    /// A literal constant, by its position (1-based line and column) in the analysed text.
    Literal { line: u64, column: u64 },
}

/// A value compared with, assigned to or inserted into a column (for column encryption).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValueTarget {
    pub value: ValueSource,
    pub column: ColumnRef,
    pub usage: ValueUse,
}

/// What a [`ValueTarget`]'s value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueUse {
    /// Inserted or assigned (INSERT VALUES, UPDATE SET, ON CONFLICT DO UPDATE SET, MERGE).
    Assigned,
    /// Compared with the column by `op`; `value_first` when the value is the left operand.
    Compared { op: CompareOp, value_first: bool },
}

/// A comparison between a column and a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// An item of `IN (...)`.
    In,
    /// An item of `NOT IN (...)`.
    NotIn,
    /// `IS DISTINCT FROM`
    Distinct,
    /// `IS NOT DISTINCT FROM`
    NotDistinct,
    /// `CASE col WHEN value`
    CaseWhen,
    /// Anything else: `<`, `>=`, BETWEEN, LIKE, ...
    Other,
}

/// How one occurrence of a column is used, as column encryption sees it: whether the server
/// would compute on the stored value (which for an encrypted column is ciphertext).
///
/// Only the places listed for the first five variants get them; every other place is
/// `Computed` (fail-closed). Over-reporting is possible (a name that may be a column of
/// several tables, an ORDER BY name that may be an input or a result column), never
/// under-reporting: a query is safe when every entry is acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Context {
    /// Returned as it is: a select-list or RETURNING item that is only the column
    /// (parenthesised or aliased), `*` and `t.*` (as `ColumnRef::All`, or the columns of a
    /// subquery under it), at any query level (subqueries, CTEs, set-operation branches,
    /// INSERT ... SELECT); a scalar subquery's column where the subquery is such an item; a
    /// column of `COPY ... TO`. Also a value written as it is, which
    /// [`StatementInfo::assignments`] describes: `UPDATE SET a = b`, MERGE's
    /// `INSERT VALUES (s.b)`, `SET a = EXCLUDED.a` (an occurrence of the target's `a`).
    Output,
    /// Compared with a value (`$n` or a literal, see [`ValueTarget`]) by `=`, `<>`, `!=`,
    /// `IN` / `NOT IN`, `IS [NOT] DISTINCT FROM` or `CASE col WHEN`. A cast on the value is
    /// fine; a cast or COLLATE on the column, or a COLLATE on the value, is not Equality.
    Equality,
    /// `IS NULL`, `IS NOT NULL`, `count(col)` (count and pg_catalog.count only).
    NullTest,
    /// Compared by `=`, `<>` or `IS [NOT] DISTINCT FROM` with another column (`a.x = b.y`,
    /// JOIN ... ON, USING), an item of `IN (..., b)`, `CASE a WHEN b`, `a IN (SELECT b ...)`,
    /// `a = (SELECT b ...)`. Both columns get an entry naming the other; a column that may
    /// be several (`ColumnRef::Unqualified`, a union's result column) gets one entry per
    /// candidate. NATURAL JOIN, whose columns need the catalog, is `Computed("a join")`.
    EqualsColumn(ColumnRef),
    /// Grouped or deduplicated: GROUP BY (including ROLLUP, CUBE, GROUPING SETS, and a result
    /// column named by position or alias), DISTINCT (every result column), DISTINCT ON,
    /// PARTITION BY, the result columns of each branch of UNION without ALL and of INTERSECT
    /// and EXCEPT (with or without ALL: they match rows too), `count(DISTINCT col)`, and an
    /// `ON CONFLICT (col)` target (the unique index compares stored values).
    Grouped,
    /// Anything else; the text names it for error messages: "LIKE" (also ILIKE, SIMILAR TO,
    /// regular expressions), "ORDER BY" (also window and aggregate ORDER BY, WITHIN GROUP),
    /// "a range comparison" (`<`, `<=`, `>`, `>=`, BETWEEN), "a function call", "a cast",
    /// "a collation", "an operator" (arithmetic, `||`, unary, JSON, ANY / ALL, subscripts),
    /// "a condition" (a column alone as a WHERE / ON / HAVING / FILTER condition), "a CASE
    /// expression", "a comparison with an expression" (`col = f(x)`, `col = NULL`), "a join",
    /// "a row constructor", "an array constructor", "a field access" (`(col).f`), "a
    /// whole-row reference" (`SELECT t FROM t`, `row_to_json(t)`), "a column alias list"
    /// (`FROM t AS x(p, q)` hides which column `p` is: `ColumnRef::All`), "an expression"
    /// (the fallback).
    Computed(&'static str),
}

/// One occurrence of a column and its use (`StatementInfo::contexts`). A reference to a
/// result column of a subquery or CTE is an occurrence of the columns it comes from (of
/// either branch of a set operation). Columns written by INSERT, UPDATE, MERGE or COPY FROM
/// have no entry as targets: `assignments` and `copy` describe them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnContext {
    pub column: ColumnRef,
    pub context: Context,
}

/// The column an INSERT, UPDATE or MERGE writes (COPY FROM: see [`CopyInfo`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssignTarget {
    /// A listed column; for `SET c.field = ...` the column c (value `Expr`).
    Named(String),
    /// By position (0-based) in the table's column order: an INSERT or MERGE INSERT without a
    /// column list.
    Position(usize),
}

/// Where a written value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Assigned {
    /// `$n` or a literal.
    Value(ValueSource),
    Null,
    Default,
    /// A column's value as it is: INSERT ... SELECT col, UPDATE SET a = b, a MERGE source
    /// column (through subqueries and CTEs, the column it comes from).
    ///
    /// `ColumnRef::All` for a `*` of INSERT ... SELECT: how many columns it yields needs the
    /// catalog, so the mapping stops there. Without a column list the star's position gets
    /// one entry (`Position(k)`: the star's columns start there); with one, every listed
    /// column from the star's position on gets an entry.
    Column(ColumnRef),
    /// `EXCLUDED.col` in ON CONFLICT DO UPDATE: what the INSERT was writing into `col`.
    Excluded(String),
    /// Anything computed: an expression, a function's result, a subquery (also a row
    /// subquery or `ROW(...)` assigned to a column tuple).
    Expr,
}

/// A value written into a column (`StatementInfo::assignments`). Multi-row VALUES give one
/// per row and column (identical ones once); `INSERT ... DEFAULT VALUES` gives none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Assignment {
    /// Index into [`StatementInfo::tables`].
    pub table: usize,
    pub target: AssignTarget,
    pub value: Assigned,
}

/// The data format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

/// A `COPY table [(columns)] FROM STDIN / TO STDOUT` (or `COPY (query) TO STDOUT`, where
/// `table` is None and the columns are the query's `outputs`). Filled for a COPY with a
/// server file or program too (Kind::Admin). Options are read from both the `WITH (...)`
/// list and the pre-9.0 syntax (`CSV HEADER`, `BINARY`, `DELIMITER AS`, ...); the last
/// occurrence wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    pub table: Option<usize>,
    /// The column list, None when absent (every column in table order).
    pub columns: Option<Vec<String>>,
    pub format: CopyFormat,
    /// DELIMITER, one character (default tab for text, comma for CSV).
    pub delimiter: Option<char>,
    /// NULL string (default `\N` for text, empty for CSV).
    pub null: Option<String>,
    pub header: bool,
    /// QUOTE and ESCAPE (CSV; default `"` for both).
    pub quote: Option<char>,
    pub escape: Option<char>,
    /// An option pgward does not model (FORCE_QUOTE, FORCE_NOT_NULL, FORCE_NULL, ENCODING,
    /// an unknown FORMAT, ...): column encryption refuses the COPY. FREEZE is harmless and
    /// does not count. (sqlparser 0.59 does not parse HEADER MATCH, DEFAULT or ON_ERROR:
    /// such a COPY is not analysed at all.)
    pub other_options: bool,
}

/// A function the statement calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// Schema qualifier as written, folded.
    pub schema: Option<String>,
    /// Last name part, folded.
    pub name: String,
    /// Writes, locks or has another side effect (the routing write-function list).
    pub writes: bool,
    /// May return different results for the same arguments within or across statements
    /// (volatile or stable: now(), random(), ...). Unknown functions count as volatile.
    pub volatile: bool,
}

/// A result column of the statement (its top-level query, or RETURNING).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A plain column reference: the value is that column's.
    Column(ColumnRef),
    /// Anything computed.
    Expr,
}

/// Everything pgward knows about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    pub kind: Kind,
    /// Every relation or object the statement names (CTE names and aliases resolved away),
    /// each once. Indexed by [`ColumnRef`] and `accesses`.
    pub tables: Vec<RelName>,
    /// (index into `tables`, action), each pair once. Every (table, action) a column use
    /// implies is here too.
    pub accesses: Vec<(usize, Action)>,
    pub columns: Vec<ColumnUse>,
    pub values: Vec<ValueTarget>,
    pub functions: Vec<FunctionCall>,
    pub outputs: Vec<Output>,
    /// Every occurrence of a column with its use (for column encryption), each distinct
    /// entry once.
    pub contexts: Vec<ColumnContext>,
    /// Every value written into a column, by INSERT, UPDATE, ON CONFLICT DO UPDATE, MERGE,
    /// each distinct entry once.
    pub assignments: Vec<Assignment>,
    /// COPY FROM STDIN / TO STDOUT details.
    pub copy: Option<CopyInfo>,
    /// false when the statement parsed but something in it was not understood (a construct
    /// the walker does not model, a DO block, SQL-level EXECUTE): policy and crypto refuse
    /// it, the cache declines it, routing sends it to the primary.
    pub understood: bool,
}

impl StatementInfo {
    pub fn new(kind: Kind) -> StatementInfo {
        StatementInfo {
            kind,
            tables: Vec::new(),
            accesses: Vec::new(),
            columns: Vec::new(),
            values: Vec::new(),
            functions: Vec::new(),
            outputs: Vec::new(),
            contexts: Vec::new(),
            assignments: Vec::new(),
            copy: None,
            understood: true,
        }
    }

    /// A statement that parsed but is not understood.
    pub fn not_understood(kind: Kind) -> StatementInfo {
        StatementInfo {
            understood: false,
            ..StatementInfo::new(kind)
        }
    }

    /// The index of `name` in `tables`, adding it if new.
    pub fn table(&mut self, name: RelName) -> usize {
        if let Some(i) = self.tables.iter().position(|t| *t == name) {
            return i;
        }
        self.tables.push(name);
        self.tables.len() - 1
    }

    /// Records that the statement does `action` on table `table` (an index).
    pub fn access(&mut self, table: usize, action: Action) {
        if !self.accesses.contains(&(table, action)) {
            self.accesses.push((table, action));
        }
    }

    /// Records a column use, and the table-level access it implies.
    pub fn use_column(&mut self, column: ColumnRef, action: Action) {
        match &column {
            ColumnRef::Of { table, .. } | ColumnRef::All { table } => self.access(*table, action),
            ColumnRef::Unqualified { scopes, .. } => {
                for table in scopes.iter().flatten().copied().collect::<Vec<_>>() {
                    self.access(table, action);
                }
            }
        }
        let used = ColumnUse { column, action };
        if !self.columns.contains(&used) {
            self.columns.push(used);
        }
    }
}
