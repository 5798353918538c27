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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Context {
    /// Returned as it is: a select-list or RETURNING item that is only the column
    /// (parenthesised or aliased), including items of subqueries and CTEs.
    Output,
    /// Compared with a value (`$n` or a literal, see [`ValueTarget`]) by `=`, `<>`, `!=`,
    /// `IN` / `NOT IN`, `IS [NOT] DISTINCT FROM` or `CASE col WHEN`.
    Equality,
    /// `IS NULL`, `IS NOT NULL`, `count(col)`.
    NullTest,
    /// Compared by `=`, `<>` or `IS [NOT] DISTINCT FROM` with another column (`a.x = b.y`,
    /// JOIN ... ON, USING, NATURAL).
    EqualsColumn(ColumnRef),
    /// Grouped or deduplicated: GROUP BY, DISTINCT, DISTINCT ON, PARTITION BY, the outputs
    /// of UNION / INTERSECT / EXCEPT without ALL, `count(DISTINCT col)`.
    Grouped,
    /// Anything else; the text names it for error messages ("LIKE", "ORDER BY", "a function
    /// call", "a cast", "an operator", "a range comparison", ...).
    Computed(&'static str),
}

/// One occurrence of a column and its use (`StatementInfo::contexts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnContext {
    pub column: ColumnRef,
    pub context: Context,
}

/// The column an INSERT, UPDATE, MERGE or COPY FROM writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssignTarget {
    Named(String),
    /// By position (0-based) in the table's column order: an INSERT without a column list.
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
    /// column. `ColumnRef::All` for a `*` of INSERT ... SELECT (positions then need the catalog).
    Column(ColumnRef),
    /// `EXCLUDED.col` in ON CONFLICT DO UPDATE: what the INSERT was writing into `col`.
    Excluded(String),
    /// Anything computed: an expression, a function's result, a subquery.
    Expr,
}

/// A value written into a column (`StatementInfo::assignments`).
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
/// `table` is None and the columns are the query's `outputs`).
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
    /// DEFAULT, HEADER MATCH, ...): column encryption refuses the COPY.
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
    /// Every occurrence of a column with its use (for column encryption).
    pub contexts: Vec<ColumnContext>,
    /// Every value written into a column, by INSERT, UPDATE, MERGE.
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
