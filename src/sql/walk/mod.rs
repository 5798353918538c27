//! Builds a [`StatementInfo`] from a parsed statement.
//!
//! The walk follows PostgreSQL's name resolution closely enough for a security policy: every
//! relation a statement touches is recorded with its action, and every column it reads or
//! writes is attributed to the base tables that may own it. The rule is to fail closed: a
//! construct that is not modelled precisely sets `understood = false`, and a name that could
//! belong to several tables is attributed to all of them (over-reporting is safe,
//! under-reporting is a policy bypass).
//!
//! Decisions worth knowing:
//! - `EXCLUDED.c` in ON CONFLICT records no column use: it is the row being inserted, whose
//!   columns the INSERT already records. Its contexts are those of the target's column c (the
//!   value being written into it).
//! - INSERT without a column list records `All` for the target and no value targets (the k-th
//!   column's name needs the catalog).
//! - A statement that modifies data inside a query (`WITH d AS (DELETE ...) SELECT ...`) gets
//!   the kind of that modification; SELECT INTO is DDL.
//! - `FOR UPDATE` / `FOR SHARE` record Update on the locked tables (PostgreSQL asks for the
//!   UPDATE privilege), as LOCK would.
//! - A table with a column alias list (`t AS x(a, b)`) records `All` for it: the aliases hide
//!   which real columns are read.
//! - Outputs of a set operation are the left branch's where all branches agree, else `Expr`.
//!   A `*` over a USING / NATURAL join lists `All` of each side (merged columns are not
//!   modelled), and a table function under `*` counts as one column per alias column (or one).
//! - `$n` compared with `= ANY(...)` is an array, not a column value: no value target.
//! - Functions are listed once each; special syntax (EXTRACT, SUBSTRING, ...) counts as a call.
//!
//! Column contexts (for column encryption): each expression is walked with the context of its
//! place (`walk_expr_as`); a column reference takes it, parentheses pass it on, and every
//! sub-expression gets its own place's context, `Computed` unless a rule names another (see
//! [`Context`](super::analysis::Context)). Equality-like comparisons resolve both operands
//! first and then record both sides at once (Equality, EqualsColumn or Computed). A reference
//! is an occurrence of the stored columns it may be: a result column of a subquery, CTE or set
//! operation carries the columns it comes from (`OutCol::sources`), and a reference through
//! which the value cannot be followed exactly (a field, a whole row, a column alias list) is
//! Computed whatever its place (`Carry::lossy`).

use std::collections::HashSet;

use sqlparser::ast::{DeclareType, Ident, ObjectName, ObjectNamePart, SetExpr, Statement};

use super::analysis::{
    Action, Assigned, Assignment, ColumnContext, ColumnRef, Context, Kind, Output, RelName,
    StatementInfo, ValueTarget,
};
use super::classify::WriteFunctions;

mod ddl;
mod dml;
mod expr;
mod query;

/// Describes one parsed statement. Never panics; what it does not model is marked not understood.
pub(crate) fn describe(statement: &Statement, functions: &WriteFunctions) -> StatementInfo {
    let mut walker = Walker {
        info: StatementInfo::new(Kind::Select),
        functions,
        scopes: Vec::new(),
        ctes: Vec::new(),
        modifies: None,
        select_into: false,
        cte_pending: false,
        seen_contexts: HashSet::new(),
        seen_assignments: HashSet::new(),
        seen_values: HashSet::new(),
    };
    walker.statement(statement);
    walker.info
}

/// A result column of a query: its name (for references from an enclosing query) and where
/// its value comes from.
#[derive(Debug, Clone)]
struct OutCol {
    name: Option<String>,
    output: Output,
    /// The columns whose stored value it may be as it is (several after a set operation):
    /// a reference to it from an enclosing query is an occurrence of these (contexts).
    sources: Vec<Carry>,
    /// `$n`, a literal or NULL as the whole item (what INSERT ... SELECT assigns).
    constant: Option<Assigned>,
}

impl OutCol {
    fn expr() -> OutCol {
        OutCol {
            name: None,
            output: Output::Expr,
            sources: Vec::new(),
            constant: None,
        }
    }

    /// A `*` column of one table.
    fn all(table: usize) -> OutCol {
        let all = ColumnRef::All { table };
        OutCol {
            name: None,
            output: Output::Column(all.clone()),
            sources: vec![Carry::exact(all)],
            constant: None,
        }
    }
}

/// A column whose stored value an expression (a column reference, a result column of a
/// subquery) is, for column contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Carry {
    column: ColumnRef,
    /// Set when the value is not the column's as it is, or cannot be told apart from its
    /// table's other columns (a field of it, a whole row, a column alias list): every
    /// occurrence is then `Computed` with this text, whatever its place.
    lossy: Option<&'static str>,
}

impl Carry {
    fn exact(column: ColumnRef) -> Carry {
        Carry {
            column,
            lossy: None,
        }
    }

    fn lossy(column: ColumnRef, why: &'static str) -> Carry {
        Carry {
            column,
            lossy: Some(why),
        }
    }

    /// The context of an occurrence in place `context`.
    fn context(&self, context: &Context) -> Context {
        match self.lossy {
            Some(why) => Context::Computed(why),
            None => context.clone(),
        }
    }
}

/// Adds `carry` to `carries` unless it is there.
fn add_carry(carries: &mut Vec<Carry>, carry: Carry) {
    if !carries.contains(&carry) {
        carries.push(carry);
    }
}

/// What a walked query offers its user.
#[derive(Debug, Clone, Default)]
struct Body {
    outputs: Vec<OutCol>,
    /// The base tables its FROM clauses read (for FOR UPDATE through a subquery).
    tables: Vec<usize>,
    /// A column alias list renamed columns of a `*`: names no longer map to table columns.
    renamed_star: bool,
}

/// What a FROM item is.
#[derive(Debug, Clone)]
enum Source {
    /// A base relation (index into `tables`); `renamed` when it has a column alias list.
    Table { index: usize, renamed: bool },
    /// A subquery or CTE reference: its body recorded its own columns.
    Derived(Body),
    /// A table function, UNNEST, JSON_TABLE, ...: no table columns; `width` result columns.
    Function { width: usize },
    /// An aliased join `(a JOIN b) AS j`, which hides the names of its members.
    Join(Vec<Item>),
    /// The EXCLUDED row of ON CONFLICT: the values being inserted into table `table`.
    Excluded { table: usize },
}

/// A FROM item visible to column references.
#[derive(Debug, Clone)]
struct Item {
    /// The alias, else the relation's, CTE's or function's own name.
    name: Option<String>,
    /// The schema a relation referenced without alias was written with.
    schema: Option<String>,
    /// Whether `name` is an alias (then `schema.name.col` cannot reach it).
    aliased: bool,
    source: Source,
}

impl Item {
    fn table(index: usize, rel: &RelName, alias: Option<String>, renamed: bool) -> Item {
        let source = Source::Table { index, renamed };
        match alias {
            Some(alias) => Item {
                name: Some(alias),
                schema: None,
                aliased: true,
                source,
            },
            None => Item {
                name: Some(rel.name.clone()),
                schema: rel.schema.clone(),
                aliased: false,
                source,
            },
        }
    }

    fn other(name: Option<String>, source: Source) -> Item {
        Item {
            name,
            schema: None,
            aliased: true,
            source,
        }
    }

    /// Whether `qualifier` (folded name parts before a column) names this item.
    fn matches(&self, qualifier: &[String]) -> bool {
        let Some(name) = &self.name else {
            return false;
        };
        match qualifier {
            [only] => only == name,
            // `schema.table.col` and `db.schema.table.col`. A table written without schema
            // matches any schema: the search path decides, and over-matching is safe.
            [schema, table] | [_, schema, table] => {
                !self.aliased
                    && table == name
                    && matches!(self.source, Source::Table { .. })
                    && self.schema.as_ref().is_none_or(|own| own == schema)
            }
            _ => false,
        }
    }
}

/// The FROM items of one query level.
#[derive(Debug, Default)]
struct Scope {
    items: Vec<Item>,
    /// Set while a non-LATERAL subquery of this FROM clause is walked: it cannot see its siblings.
    hidden: bool,
}

/// A CTE in scope; `body` is None while a recursive WITH is still being walked.
struct CteDef {
    name: String,
    body: Option<Body>,
}

/// What a column reference may denote.
struct Resolved {
    /// Column uses it implies (recorded as reads).
    uses: Vec<ColumnRef>,
    /// Where its value comes from.
    output: Output,
    /// The stored columns it may be (contexts): its own columns, those of the subqueries
    /// that may define it, the target column an EXCLUDED column is being written to.
    carries: Vec<Carry>,
}

/// The sources a column name may come from, gathered scope by scope.
#[derive(Default)]
struct Candidates<'s> {
    scopes: Vec<Vec<usize>>,
    /// Candidate tables with a column alias list.
    renamed: Vec<usize>,
    derived: Vec<&'s Body>,
    /// Table functions and EXCLUDED rows.
    opaque: bool,
    /// Tables whose EXCLUDED row is a candidate.
    excluded: Vec<usize>,
}

struct Walker<'a> {
    info: StatementInfo,
    functions: &'a WriteFunctions,
    /// Query levels, innermost last.
    scopes: Vec<Scope>,
    /// CTEs in scope, innermost last.
    ctes: Vec<CteDef>,
    /// The kind of the first data-modifying statement met inside a query.
    modifies: Option<Kind>,
    select_into: bool,
    /// A CTE was referenced before its body was walked (WITH RECURSIVE).
    cte_pending: bool,
    /// What `info.contexts`, `info.assignments` and `info.values` hold, for deduplication
    /// in constant time.
    seen_contexts: HashSet<ColumnContext>,
    seen_assignments: HashSet<Assignment>,
    seen_values: HashSet<ValueTarget>,
}

impl Walker<'_> {
    fn not_understood(&mut self) {
        self.info.understood = false;
    }

    // ----- statements -----

    fn statement(&mut self, statement: &Statement) {
        match statement {
            Statement::Query(query) => {
                let body = self.walk_query(query);
                self.info.kind = match query.body.as_ref() {
                    SetExpr::Insert(_) => Kind::Insert,
                    SetExpr::Update(_) => Kind::Update,
                    SetExpr::Delete(_) => Kind::Delete,
                    SetExpr::Merge(_) => Kind::Merge,
                    _ => self.modifies.unwrap_or(Kind::Select),
                };
                if self.select_into {
                    self.info.kind = Kind::Ddl;
                }
                self.set_outputs(body);
            }
            Statement::Insert(_)
            | Statement::Update { .. }
            | Statement::Delete(_)
            | Statement::Merge { .. } => {
                let (kind, body) = self.walk_dml(statement);
                self.info.kind = kind;
                self.set_outputs(body);
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => self.copy(source, *to, target, options, legacy_options),
            Statement::Truncate {
                table_names,
                partitions,
                on_cluster,
                ..
            } => {
                self.info.kind = Kind::Truncate;
                if partitions.is_some() || on_cluster.is_some() {
                    self.not_understood();
                }
                for target in table_names {
                    self.object(&target.name, Action::Truncate);
                }
            }
            Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
                self.info = describe(statement, self.functions);
                self.info.outputs.clear();
            }
            Statement::Declare { stmts } => {
                self.info.kind = Kind::Select;
                for declare in stmts {
                    let cursor = matches!(declare.declare_type, None | Some(DeclareType::Cursor));
                    match &declare.for_query {
                        Some(query) if cursor && declare.assignment.is_none() => {
                            self.walk_query(query);
                        }
                        _ => self.not_understood(),
                    }
                }
                if self.modifies.is_some() || self.select_into {
                    self.not_understood();
                }
            }
            Statement::Call(function) => {
                self.info.kind = Kind::Utility;
                self.walk_function(function);
            }
            Statement::StartTransaction {
                statements,
                exception,
                has_end_keyword,
                ..
            } => {
                self.info.kind = Kind::Transaction;
                if !statements.is_empty() || exception.is_some() || *has_end_keyword {
                    self.not_understood();
                }
            }
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => self.info.kind = Kind::Transaction,
            Statement::Set(set) => self.set(set),
            Statement::ShowVariable { .. } => self.info.kind = Kind::Show,
            Statement::ShowFunctions { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowCreate { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowObjects(_)
            | Statement::ShowTables { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowCollation { .. } => {
                self.info.kind = Kind::Show;
                self.not_understood();
            }
            Statement::Discard { .. }
            | Statement::Deallocate { .. }
            | Statement::Close { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. } => self.info.kind = Kind::Utility,
            Statement::Fetch { into, .. } => {
                self.info.kind = Kind::Utility;
                if into.is_some() {
                    self.not_understood();
                }
            }
            Statement::Execute { .. } => self.info = StatementInfo::not_understood(Kind::Utility),
            Statement::Grant { objects, .. } | Statement::Revoke { objects, .. } => {
                self.grant(objects.as_ref())
            }
            Statement::CreateRole { .. }
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::CreateDatabase { .. }
            | Statement::Load { .. } => self.admin_database(),
            Statement::Drop {
                object_type,
                names,
                table,
                ..
            } => self.drop(object_type, names, table.as_ref()),
            _ => self.ddl_statement(statement),
        }
    }

    // ----- names -----

    /// A relation name folded as PostgreSQL does; a catalog (database) part is dropped.
    fn rel_name(&mut self, name: &ObjectName) -> RelName {
        let Some(parts) = fold_parts(name) else {
            self.not_understood();
            return RelName {
                schema: None,
                name: name.to_string(),
            };
        };
        match parts.as_slice() {
            [name] => RelName {
                schema: None,
                name: name.clone(),
            },
            [schema, name] | [_, schema, name] => RelName {
                schema: Some(schema.clone()),
                name: name.clone(),
            },
            [] => {
                self.not_understood();
                RelName::database()
            }
            [.., schema, name] => {
                self.not_understood();
                RelName {
                    schema: Some(schema.clone()),
                    name: name.clone(),
                }
            }
        }
    }

    /// A schema as an object: `{schema, "*"}`.
    fn schema_rel(&mut self, name: &ObjectName) -> RelName {
        let parts = fold_parts(name).unwrap_or_default();
        match parts.as_slice() {
            [schema] | [_, schema] => RelName {
                schema: Some(schema.clone()),
                name: "*".into(),
            },
            _ => {
                self.not_understood();
                RelName::database()
            }
        }
    }

    /// Records `action` on the relation `name`; returns its index.
    fn object(&mut self, name: &ObjectName, action: Action) -> usize {
        let rel = self.rel_name(name);
        let index = self.info.table(rel);
        self.info.access(index, action);
        index
    }

    fn ddl_rel(&mut self, rel: RelName) {
        let index = self.info.table(rel);
        self.info.access(index, Action::Ddl);
    }

    fn admin_rel(&mut self, rel: RelName) {
        let index = self.info.table(rel);
        self.info.access(index, Action::Admin);
    }

    fn admin_database(&mut self) {
        self.info.kind = Kind::Admin;
        self.admin_rel(RelName::database());
    }

    /// Records one occurrence of a column (deduplicated).
    fn add_context(&mut self, column: ColumnRef, context: Context) {
        let entry = ColumnContext { column, context };
        if self.seen_contexts.insert(entry.clone()) {
            self.info.contexts.push(entry);
        }
    }

    /// Records an occurrence, in place `context`, of an expression that carries `carries`.
    fn add_carries(&mut self, carries: &[Carry], context: &Context) {
        for carry in carries {
            self.add_context(carry.column.clone(), carry.context(context));
        }
    }

    /// Records a value written into a column (deduplicated).
    fn add_assignment(&mut self, assignment: Assignment) {
        if self.seen_assignments.insert(assignment.clone()) {
            self.info.assignments.push(assignment);
        }
    }

    fn set_outputs(&mut self, body: Body) {
        self.info.outputs = body
            .outputs
            .into_iter()
            .map(|column| column.output)
            .collect();
    }
}

/// An identifier folded as PostgreSQL folds it: unquoted to lower case, quoted as written.
fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// The folded parts of a name; None when a part is not an identifier.
fn fold_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|part| part.as_ident().map(fold))
        .collect()
}

fn last_name(name: &ObjectName) -> Option<String> {
    name.0.last().and_then(ObjectNamePart::as_ident).map(fold)
}

/// Adds the candidates `items` offer for a column: their base tables to `tables`, the rest to
/// `candidates`.
fn gather<'s>(items: &'s [Item], tables: &mut Vec<usize>, candidates: &mut Candidates<'s>) {
    for item in items {
        match &item.source {
            Source::Table { index, renamed } => {
                if !tables.contains(index) {
                    tables.push(*index);
                }
                if *renamed && !candidates.renamed.contains(index) {
                    candidates.renamed.push(*index);
                }
            }
            Source::Derived(body) => candidates.derived.push(body),
            Source::Join(inner) => gather(inner, tables, candidates),
            Source::Function { .. } => candidates.opaque = true,
            Source::Excluded { table } => {
                candidates.opaque = true;
                if !candidates.excluded.contains(table) {
                    candidates.excluded.push(*table);
                }
            }
        }
    }
}

/// Every column an item offers, as whole-row values: `t.*` of its tables, every result
/// column of its subqueries.
fn item_carries(items: &[Item], carries: &mut Vec<Carry>) {
    for item in items {
        match &item.source {
            Source::Table { index, .. } | Source::Excluded { table: index } => {
                add_carry(carries, Carry::exact(ColumnRef::All { table: *index }))
            }
            Source::Derived(body) => {
                for out in &body.outputs {
                    for carry in &out.sources {
                        add_carry(carries, carry.clone());
                    }
                }
            }
            Source::Join(inner) => item_carries(inner, carries),
            Source::Function { .. } => {}
        }
    }
}

/// Whether a subquery or CTE among `items` certainly has a column called `name`.
fn exposes(items: &[Item], name: &str) -> bool {
    items.iter().any(|item| match &item.source {
        Source::Derived(body) => {
            !body.renamed_star
                && body
                    .outputs
                    .iter()
                    .any(|out| out.name.as_deref() == Some(name))
        }
        Source::Join(inner) => exposes(inner, name),
        Source::Table { .. } | Source::Function { .. } | Source::Excluded { .. } => false,
    })
}

/// The column reference for a name given its candidate tables, and where its value comes from.
fn conclude(candidates: Candidates<'_>, column: &str) -> Resolved {
    let reference = column_ref(candidates.scopes, column);
    let output = match (&reference, candidates.derived.as_slice()) {
        (Some(reference), []) if !candidates.opaque && candidates.renamed.is_empty() => {
            Output::Column(reference.clone())
        }
        (None, [body]) if !candidates.opaque => lookup(body, column),
        _ => Output::Expr,
    };
    let mut carries = Vec::new();
    if let Some(reference) = &reference {
        carries.push(Carry::exact(reference.clone()));
    }
    for table in candidates.renamed {
        // Which real column an alias names needs the catalog: any of them, computed.
        add_carry(
            &mut carries,
            Carry::lossy(ColumnRef::All { table }, "a column alias list"),
        );
    }
    for body in candidates.derived {
        for carry in lookup_carries(body, column) {
            add_carry(&mut carries, carry);
        }
    }
    for table in candidates.excluded {
        let name = column.to_owned();
        add_carry(&mut carries, Carry::exact(ColumnRef::Of { table, name }));
    }
    Resolved {
        uses: reference.into_iter().collect(),
        output,
        carries,
    }
}

/// The stored columns the column `column` of a derived table may be: those of the result
/// columns so named, else the column of that name of each table under a `*`. Where names
/// no longer map (a column alias list renamed a `*`), any column of the body, computed.
fn lookup_carries(body: &Body, column: &str) -> Vec<Carry> {
    let mut carries = Vec::new();
    let mut named = false;
    for out in &body.outputs {
        if out.name.as_deref() == Some(column) {
            named = true;
            for carry in &out.sources {
                add_carry(&mut carries, carry.clone());
            }
        }
    }
    if named {
        return carries;
    }
    for carry in body.outputs.iter().flat_map(|out| &out.sources) {
        if body.renamed_star {
            let lossy = carry.lossy.unwrap_or("a column alias list");
            add_carry(&mut carries, Carry::lossy(carry.column.clone(), lossy));
        } else if let ColumnRef::All { table } = carry.column {
            let name = column.to_owned();
            let of = ColumnRef::Of { table, name };
            add_carry(
                &mut carries,
                Carry {
                    column: of,
                    lossy: carry.lossy,
                },
            );
        }
    }
    carries
}

/// `Of` when the candidates are one table, `Unqualified` when several, None when none.
fn column_ref(scopes: Vec<Vec<usize>>, column: &str) -> Option<ColumnRef> {
    let scopes: Vec<Vec<usize>> = scopes
        .into_iter()
        .filter(|scope| !scope.is_empty())
        .collect();
    let mut distinct: Vec<usize> = scopes.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    match distinct.as_slice() {
        [] => None,
        [table] => Some(ColumnRef::Of {
            table: *table,
            name: column.to_owned(),
        }),
        _ => Some(ColumnRef::Unqualified {
            scopes,
            name: column.to_owned(),
        }),
    }
}

/// Where the column `column` of a derived table comes from.
fn lookup(body: &Body, column: &str) -> Output {
    let mut named = body
        .outputs
        .iter()
        .filter(|out| out.name.as_deref() == Some(column));
    match (named.next(), named.next()) {
        (Some(one), None) => one.output.clone(),
        (Some(_), Some(_)) => Output::Expr,
        (None, _) if body.renamed_star => Output::Expr,
        (None, _) => {
            // Not listed by name: it may come from a `*` over one table.
            let mut stars = body.outputs.iter().filter_map(|out| match out.output {
                Output::Column(ColumnRef::All { table }) => Some(table),
                _ => None,
            });
            match (stars.next(), stars.next()) {
                (Some(table), None) => Output::Column(ColumnRef::Of {
                    table,
                    name: column.to_owned(),
                }),
                _ => Output::Expr,
            }
        }
    }
}

/// The base tables of these items, looking into aliased joins but not into subqueries.
fn leaf_tables(items: &[Item]) -> Vec<usize> {
    let mut tables = Vec::new();
    for item in items {
        match &item.source {
            Source::Table { index, .. } => {
                if !tables.contains(index) {
                    tables.push(*index);
                }
            }
            Source::Join(inner) => {
                for table in leaf_tables(inner) {
                    if !tables.contains(&table) {
                        tables.push(table);
                    }
                }
            }
            Source::Derived(_) | Source::Function { .. } | Source::Excluded { .. } => {}
        }
    }
    tables
}

/// Every base table these items read, subqueries included.
fn scope_tables(items: &[Item]) -> Vec<usize> {
    let mut tables = Vec::new();
    for item in items {
        let found = match &item.source {
            Source::Table { index, .. } => vec![*index],
            Source::Derived(body) => body.tables.clone(),
            Source::Join(inner) => scope_tables(inner),
            Source::Function { .. } | Source::Excluded { .. } => Vec::new(),
        };
        for table in found {
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
    }
    tables
}

#[cfg(test)]
mod tests;
