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
//! - `EXCLUDED.c` in ON CONFLICT records nothing: it is the row being inserted, whose columns
//!   the INSERT already records.
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

use std::ops::ControlFlow;
use std::slice;

use sqlparser::ast::{
    AlterIndexOperation, AlterSchemaOperation, AlterTableOperation, Assignment, AssignmentTarget,
    ColumnOption, ColumnOptionDef, CommentObject, ConflictTarget, CopySource, CopyTarget,
    CreateTableLikeKind, DeclareType, Delete, Distinct, Expr, FromTable, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentClause, FunctionArguments, GrantObjects, GroupByExpr,
    GroupByWithModifier, Ident, Insert, JoinConstraint, JoinOperator, JsonPathElem, LimitClause,
    ListAggOnOverflow, LockClause, MergeAction, MergeClause, MergeInsertKind,
    NamedWindowDefinition, NamedWindowExpr, ObjectName, ObjectNamePart, ObjectType,
    OnConflictAction, OnInsert, OrderBy, OrderByExpr, OrderByKind, Query, RenameTableNameKind,
    SchemaName, Select, SelectFlavor, SelectItem, SelectItemQualifiedWildcardKind, Set, SetExpr,
    SetOperator, SetQuantifier, Statement, Subscript, TableAlias, TableConstraint, TableFactor,
    TableObject, TableSampleKind, TableWithJoins, TopQuantity, UpdateTableFromKind, Value, Values,
    Visit, Visitor, WildcardAdditionalOptions, WindowFrameBound, WindowSpec, WindowType,
    XmlTableColumnOption,
};

use super::analysis::{
    Action, ColumnRef, FunctionCall, Kind, Output, RelName, StatementInfo, ValueSource, ValueTarget,
};
use super::classify::WriteFunctions;

/// Built-in functions whose result depends on their arguments alone (PostgreSQL IMMUTABLE,
/// plus aggregates and window functions over immutable inputs). Everything else, including
/// every user-defined or schema-qualified function outside pg_catalog, counts as volatile.
/// `concat`, `format`, `to_char` and friends are STABLE in PostgreSQL (they format
/// timestamps per session settings), so they are not here.
const IMMUTABLE_FUNCTIONS: &[&str] = &[
    // strings
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "substring",
    "substr",
    "replace",
    "translate",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "split_part",
    "left",
    "right",
    "position",
    "strpos",
    "lpad",
    "rpad",
    "initcap",
    "reverse",
    "repeat",
    "overlay",
    "ascii",
    "chr",
    "starts_with",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "encode",
    "decode",
    "quote_ident",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    // numbers
    "abs",
    "round",
    "trunc",
    "floor",
    "ceil",
    "ceiling",
    "sign",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log10",
    "power",
    "pow",
    "mod",
    "div",
    "gcd",
    "lcm",
    "degrees",
    "radians",
    "pi",
    "width_bucket",
    // conditionals and constructors
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "row",
    // arrays (`array` is the ARRAY(subquery) constructor)
    "array",
    "array_length",
    "cardinality",
    "array_upper",
    "array_lower",
    "array_ndims",
    "array_dims",
    "array_position",
    "array_positions",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "unnest",
    // json accessors
    "json_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "json_array_length",
    "jsonb_array_length",
    "json_typeof",
    "jsonb_typeof",
    "json_object_keys",
    "jsonb_object_keys",
    "json_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "json_each",
    "json_each_text",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_strip_nulls",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_pretty",
    // aggregates
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "array_agg",
    "string_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    // window functions
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// SQL-standard functions written without parentheses, which sqlparser 0.59 reads as plain
/// identifiers when they are not in its own list. All are reserved words in PostgreSQL, so
/// unquoted they are never columns.
const VALUE_FUNCTIONS: &[&str] = &[
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "session_user",
    "system_user",
    "user",
];

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
}

impl OutCol {
    fn expr() -> OutCol {
        OutCol {
            name: None,
            output: Output::Expr,
        }
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
    /// The EXCLUDED row of ON CONFLICT: the values being inserted.
    Excluded,
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
}

/// The sources a column name may come from, gathered scope by scope.
#[derive(Default)]
struct Candidates<'s> {
    scopes: Vec<Vec<usize>>,
    renamed: bool,
    derived: Vec<&'s Body>,
    opaque: bool,
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
                source, to, target, ..
            } => self.copy(source, *to, target),
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

    /// DDL and maintenance statements; anything else is not understood.
    fn ddl_statement(&mut self, statement: &Statement) {
        self.info.kind = Kind::Ddl;
        match statement {
            Statement::CreateTable(create) => {
                self.object(&create.name, Action::Ddl);
                for column in &create.columns {
                    self.column_references(&column.options);
                }
                for constraint in &create.constraints {
                    self.constraint_references(constraint);
                }
                if let Some(
                    CreateTableLikeKind::Parenthesized(like) | CreateTableLikeKind::Plain(like),
                ) = &create.like
                {
                    self.object(&like.name, Action::Select);
                }
                if let Some(clone) = &create.clone {
                    self.not_understood();
                    let index = self.object(clone, Action::Select);
                    self.info
                        .use_column(ColumnRef::All { table: index }, Action::Select);
                }
                for parent in create.inherits.iter().flatten() {
                    self.object(parent, Action::Ddl);
                }
                self.nested(statement);
            }
            Statement::AlterTable {
                name,
                operations,
                location,
                on_cluster,
                iceberg,
                ..
            } => {
                let rel = self.rel_name(name);
                self.ddl_rel(rel.clone());
                if location.is_some() || on_cluster.is_some() || *iceberg {
                    self.not_understood();
                }
                for operation in operations {
                    match operation {
                        AlterTableOperation::RenameTable {
                            table_name: RenameTableNameKind::To(new) | RenameTableNameKind::As(new),
                        } => self.renamed(&rel, new),
                        AlterTableOperation::AddConstraint { constraint, .. } => {
                            self.constraint_references(constraint)
                        }
                        AlterTableOperation::AddColumn { column_def, .. } => {
                            self.column_references(&column_def.options)
                        }
                        AlterTableOperation::SwapWith { table_name } => {
                            self.not_understood();
                            self.object(table_name, Action::Ddl);
                        }
                        _ => {}
                    }
                }
                self.nested(statement);
            }
            Statement::CreateIndex(index) => {
                self.object(&index.table_name, Action::Ddl);
                self.nested(statement);
            }
            Statement::CreateView { name, to, .. } => {
                self.object(name, Action::Ddl);
                if let Some(to) = to {
                    self.not_understood();
                    self.object(to, Action::Ddl);
                }
                self.nested(statement);
            }
            Statement::AlterView { name, .. } => {
                self.object(name, Action::Ddl);
                self.nested(statement);
            }
            Statement::CreatePolicy { table_name, .. }
            | Statement::AlterPolicy { table_name, .. } => {
                self.object(table_name, Action::Ddl);
                self.nested(statement);
            }
            Statement::DropPolicy { table_name, .. } => {
                self.object(table_name, Action::Ddl);
            }
            Statement::AlterIndex {
                name,
                operation: AlterIndexOperation::RenameIndex { index_name },
            } => {
                let rel = self.rel_name(name);
                self.ddl_rel(rel.clone());
                self.renamed(&rel, index_name);
            }
            Statement::AlterType(alter) => {
                self.object(&alter.name, Action::Ddl);
            }
            Statement::CreateType { name, .. } | Statement::CreateProcedure { name, .. } => {
                self.object(name, Action::Ddl);
            }
            Statement::CreateDomain(domain) => {
                self.object(&domain.name, Action::Ddl);
                self.nested(statement);
            }
            Statement::DropDomain(domain) => {
                self.object(&domain.name, Action::Ddl);
            }
            Statement::CreateFunction(function) => {
                self.object(&function.name, Action::Ddl);
            }
            Statement::DropFunction { func_desc, .. }
            | Statement::DropProcedure {
                proc_desc: func_desc,
                ..
            } => {
                for function in func_desc {
                    self.object(&function.name, Action::Ddl);
                }
            }
            Statement::CreateTrigger(trigger) => {
                self.object(&trigger.table_name, Action::Ddl);
            }
            Statement::DropTrigger(trigger) => match &trigger.table_name {
                Some(table) => {
                    self.object(table, Action::Ddl);
                }
                None => self.ddl_rel(RelName::database()),
            },
            Statement::CreateSequence { name, owned_by, .. } => {
                self.object(name, Action::Ddl);
                if let Some(owned_by) = owned_by {
                    // OWNED BY table.column
                    match owned_by.0.split_last() {
                        Some((_, table)) if !table.is_empty() => {
                            self.object(&ObjectName(table.to_vec()), Action::Ddl);
                        }
                        _ => {}
                    }
                }
            }
            Statement::CreateSchema {
                schema_name, clone, ..
            } => {
                let rel = match schema_name {
                    SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) => {
                        self.schema_rel(name)
                    }
                    SchemaName::UnnamedAuthorization(owner) => RelName {
                        schema: Some(fold(owner)),
                        name: "*".into(),
                    },
                };
                self.ddl_rel(rel);
                if clone.is_some() {
                    self.not_understood();
                }
            }
            Statement::AlterSchema(alter) => {
                let rel = self.schema_rel(&alter.name);
                self.ddl_rel(rel);
                for operation in &alter.operations {
                    match operation {
                        AlterSchemaOperation::Rename { name } => {
                            let rel = self.schema_rel(name);
                            self.ddl_rel(rel);
                        }
                        AlterSchemaOperation::OwnerTo { .. } => {}
                        _ => self.not_understood(),
                    }
                }
            }
            Statement::Comment {
                object_type,
                object_name,
                ..
            } => self.comment(object_type, object_name),
            Statement::CreateExtension { .. }
            | Statement::DropExtension { .. }
            | Statement::CreateServer(_) => self.ddl_rel(RelName::database()),
            Statement::Analyze {
                table_name,
                partitions,
                ..
            } => {
                self.object(table_name, Action::Ddl);
                if partitions.is_some() {
                    self.not_understood();
                }
            }
            Statement::Vacuum(vacuum) => {
                match &vacuum.table_name {
                    Some(table) => {
                        self.object(table, Action::Ddl);
                    }
                    None => self.ddl_rel(RelName::database()),
                }
                if vacuum.sort_only
                    || vacuum.delete_only
                    || vacuum.reindex
                    || vacuum.recluster
                    || vacuum.threshold.is_some()
                    || vacuum.boost
                {
                    self.not_understood();
                }
            }
            Statement::RenameTable(renames) => {
                self.not_understood();
                for rename in renames {
                    self.object(&rename.old_name, Action::Ddl);
                    self.object(&rename.new_name, Action::Ddl);
                }
            }
            Statement::LockTables { tables } => {
                // MySQL's LOCK TABLES; PostgreSQL's LOCK does not parse in sqlparser 0.59.
                self.not_understood();
                self.info.kind = Kind::Utility;
                for lock in tables {
                    let index = self.info.table(RelName {
                        schema: None,
                        name: fold(&lock.table),
                    });
                    self.info.access(index, Action::Update);
                }
            }
            // Everything else comes from other dialects or is procedural: the most
            // privileged category, not understood.
            _ => self.info = StatementInfo::not_understood(Kind::Admin),
        }
    }

    fn copy(&mut self, source: &CopySource, to: bool, target: &CopyTarget) {
        let kind = match (target, to) {
            (CopyTarget::Stdin, false) => Kind::CopyIn,
            (CopyTarget::Stdout, true) => Kind::CopyOut,
            (CopyTarget::File { .. } | CopyTarget::Program { .. }, _) => Kind::Admin,
            _ => {
                self.not_understood();
                if to {
                    Kind::CopyOut
                } else {
                    Kind::CopyIn
                }
            }
        };
        self.info.kind = kind;
        if kind == Kind::Admin {
            self.admin_rel(RelName::database());
        }
        match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                let action = if to { Action::Select } else { Action::Insert };
                let index = self.object(table_name, action);
                let refs: Vec<ColumnRef> = if columns.is_empty() {
                    vec![ColumnRef::All { table: index }]
                } else {
                    columns
                        .iter()
                        .map(|column| ColumnRef::Of {
                            table: index,
                            name: fold(column),
                        })
                        .collect()
                };
                for column in refs {
                    if kind == Kind::CopyOut {
                        self.info.outputs.push(Output::Column(column.clone()));
                    }
                    self.info.use_column(column, action);
                }
            }
            CopySource::Query(query) => {
                if !to {
                    self.not_understood();
                }
                let body = self.walk_query(query);
                if self.select_into {
                    self.not_understood();
                }
                if kind == Kind::CopyOut {
                    self.set_outputs(body);
                }
            }
        }
    }

    fn set(&mut self, set: &Set) {
        self.info.kind = Kind::Set;
        let changes_role = match set {
            Set::SetRole { .. } => true,
            Set::SingleAssignment {
                variable, hivevar, ..
            } => {
                if *hivevar {
                    self.not_understood();
                }
                is_role_variable(variable)
            }
            Set::ParenthesizedAssignments { variables, .. } => {
                variables.iter().any(is_role_variable)
            }
            Set::MultipleAssignments { assignments } => assignments
                .iter()
                .any(|assignment| is_role_variable(&assignment.name)),
            Set::SetSessionParam(_) => {
                self.not_understood();
                false
            }
            Set::SetTimeZone { .. }
            | Set::SetNames { .. }
            | Set::SetNamesDefault {}
            | Set::SetTransaction { .. } => false,
        };
        if changes_role {
            self.admin_database();
        }
    }

    fn grant(&mut self, objects: Option<&GrantObjects>) {
        self.info.kind = Kind::Admin;
        let mut rels = Vec::new();
        match objects {
            Some(
                GrantObjects::Tables(names)
                | GrantObjects::Views(names)
                | GrantObjects::Sequences(names),
            ) => {
                for name in names {
                    rels.push(self.rel_name(name));
                }
            }
            Some(
                GrantObjects::Schemas(schemas)
                | GrantObjects::AllTablesInSchema { schemas }
                | GrantObjects::AllSequencesInSchema { schemas }
                | GrantObjects::AllViewsInSchema { schemas }
                | GrantObjects::AllMaterializedViewsInSchema { schemas }
                | GrantObjects::AllFunctionsInSchema { schemas },
            ) => {
                for schema in schemas {
                    rels.push(self.schema_rel(schema));
                }
            }
            Some(GrantObjects::Function { name, .. } | GrantObjects::Procedure { name, .. }) => {
                rels.push(self.rel_name(name))
            }
            Some(GrantObjects::Databases(_)) | None => {}
            Some(_) => self.not_understood(),
        }
        if rels.is_empty() {
            rels.push(RelName::database());
        }
        for rel in rels {
            self.admin_rel(rel);
        }
    }

    fn drop(&mut self, object_type: &ObjectType, names: &[ObjectName], table: Option<&ObjectName>) {
        self.info.kind = Kind::Ddl;
        match object_type {
            ObjectType::Database | ObjectType::Role | ObjectType::User => self.admin_database(),
            ObjectType::Schema => {
                for name in names {
                    let rel = self.schema_rel(name);
                    self.ddl_rel(rel);
                }
            }
            ObjectType::Table
            | ObjectType::View
            | ObjectType::MaterializedView
            | ObjectType::Index
            | ObjectType::Sequence
            | ObjectType::Type => {
                for name in names {
                    self.object(name, Action::Ddl);
                }
            }
            _ => {
                self.not_understood();
                for name in names {
                    self.object(name, Action::Ddl);
                }
            }
        }
        if let Some(table) = table {
            self.not_understood();
            self.object(table, Action::Ddl);
        }
    }

    fn comment(&mut self, object_type: &CommentObject, object_name: &ObjectName) {
        match object_type {
            CommentObject::Table => {
                self.object(object_name, Action::Ddl);
            }
            CommentObject::Column => match object_name.0.split_last() {
                Some((ObjectNamePart::Identifier(column), table)) if !table.is_empty() => {
                    let index = self.object(&ObjectName(table.to_vec()), Action::Ddl);
                    self.info.use_column(
                        ColumnRef::Of {
                            table: index,
                            name: fold(column),
                        },
                        Action::Ddl,
                    );
                }
                _ => {
                    self.not_understood();
                    self.ddl_rel(RelName::database());
                }
            },
            CommentObject::Schema => {
                let rel = self.schema_rel(object_name);
                self.ddl_rel(rel);
            }
            CommentObject::Extension
            | CommentObject::Database
            | CommentObject::User
            | CommentObject::Role => self.ddl_rel(RelName::database()),
        }
    }

    /// FOREIGN KEY ... REFERENCES t (cols) in column options: the referenced columns are
    /// read (PostgreSQL's REFERENCES privilege, closest to Select).
    fn column_references(&mut self, options: &[ColumnOptionDef]) {
        for option in options {
            if let ColumnOption::ForeignKey {
                foreign_table,
                referred_columns,
                ..
            } = &option.option
            {
                self.references(foreign_table, referred_columns);
            }
        }
    }

    fn constraint_references(&mut self, constraint: &TableConstraint) {
        if let TableConstraint::ForeignKey {
            foreign_table,
            referred_columns,
            ..
        } = constraint
        {
            self.references(foreign_table, referred_columns);
        }
    }

    fn references(&mut self, table: &ObjectName, columns: &[Ident]) {
        let index = self.object(table, Action::Select);
        if columns.is_empty() {
            self.info
                .use_column(ColumnRef::All { table: index }, Action::Select);
        }
        for column in columns {
            self.info.use_column(
                ColumnRef::Of {
                    table: index,
                    name: fold(column),
                },
                Action::Select,
            );
        }
    }

    /// The new name of a renamed relation, in the old one's schema when written without one.
    fn renamed(&mut self, old: &RelName, new: &ObjectName) {
        let mut rel = self.rel_name(new);
        if rel.schema.is_none() {
            rel.schema.clone_from(&old.schema);
        }
        self.ddl_rel(rel);
    }

    /// Walks the queries inside a DDL statement (view bodies, CREATE TABLE AS, policy
    /// expressions) as reads, and records the functions its expressions call.
    fn nested(&mut self, statement: &Statement) {
        let mut parts = NestedParts::default();
        let _ = statement.visit(&mut parts);
        for name in &parts.functions {
            self.record_function(name);
        }
        for query in &parts.queries {
            self.walk_query(query);
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

    fn set_outputs(&mut self, body: Body) {
        self.info.outputs = body
            .outputs
            .into_iter()
            .map(|column| column.output)
            .collect();
    }

    // ----- queries -----

    fn walk_query(&mut self, query: &Query) -> Body {
        let visible_ctes = self.ctes.len();
        if let Some(with) = &query.with {
            self.walk_with(&with.cte_tables, with.recursive);
        }
        if query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            self.not_understood();
        }
        let body = match query.body.as_ref() {
            SetExpr::Select(select) => self.walk_select(select, Some(query)),
            other => {
                let body = self.walk_set_expr(other);
                // ORDER BY / LIMIT over a set operation name its output columns; subqueries
                // in them are still walked.
                self.scopes.push(Scope::default());
                self.walk_tail(query);
                self.scopes.pop();
                for _ in &query.locks {
                    for table in &body.tables {
                        self.info.access(*table, Action::Update);
                    }
                }
                body
            }
        };
        self.ctes.truncate(visible_ctes);
        body
    }

    fn walk_with(&mut self, ctes: &[sqlparser::ast::Cte], recursive: bool) {
        if ctes.iter().any(|cte| cte.from.is_some()) {
            self.not_understood();
        }
        if recursive {
            // Every CTE of a WITH RECURSIVE sees every other one, itself included.
            let first = self.ctes.len();
            for cte in ctes {
                self.ctes.push(CteDef {
                    name: fold(&cte.alias.name),
                    body: None,
                });
            }
            let outer_pending = std::mem::take(&mut self.cte_pending);
            self.walk_recursive_bodies(first, ctes);
            if std::mem::take(&mut self.cte_pending) {
                // A CTE used one defined after it: walk again with every body known.
                self.walk_recursive_bodies(first, ctes);
            }
            self.cte_pending |= outer_pending;
        } else {
            // A plain CTE sees only the ones before it: its own name still means a table.
            for cte in ctes {
                let body = self.walk_query(&cte.query);
                self.ctes.push(CteDef {
                    name: fold(&cte.alias.name),
                    body: Some(rename(body, Some(&cte.alias))),
                });
            }
        }
    }

    fn walk_recursive_bodies(&mut self, first: usize, ctes: &[sqlparser::ast::Cte]) {
        for (position, cte) in ctes.iter().enumerate() {
            let body = self.walk_query(&cte.query);
            let body = rename(body, Some(&cte.alias));
            if let Some(def) = self.ctes.get_mut(first + position) {
                def.body = Some(body);
            }
        }
    }

    fn walk_set_expr(&mut self, expr: &SetExpr) -> Body {
        match expr {
            SetExpr::Select(select) => self.walk_select(select, None),
            SetExpr::Query(query) => self.walk_query(query),
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                if matches!(op, SetOperator::Minus)
                    || matches!(
                        set_quantifier,
                        SetQuantifier::ByName
                            | SetQuantifier::AllByName
                            | SetQuantifier::DistinctByName
                    )
                {
                    self.not_understood();
                }
                let left = self.walk_set_expr(left);
                let right = self.walk_set_expr(right);
                merge_branches(left, right)
            }
            SetExpr::Values(values) => self.walk_values(values),
            SetExpr::Insert(statement)
            | SetExpr::Update(statement)
            | SetExpr::Delete(statement)
            | SetExpr::Merge(statement) => {
                let (kind, body) = self.walk_dml(statement);
                self.modifies.get_or_insert(kind);
                body
            }
            SetExpr::Table(table) => {
                self.not_understood();
                let Some(name) = &table.table_name else {
                    return Body::default();
                };
                let rel = RelName {
                    schema: table.schema_name.as_ref().map(|s| s.to_ascii_lowercase()),
                    name: name.to_ascii_lowercase(),
                };
                let index = self.info.table(rel);
                self.info
                    .use_column(ColumnRef::All { table: index }, Action::Select);
                Body {
                    outputs: vec![OutCol {
                        name: None,
                        output: Output::Column(ColumnRef::All { table: index }),
                    }],
                    tables: vec![index],
                    renamed_star: false,
                }
            }
        }
    }

    fn walk_values(&mut self, values: &Values) -> Body {
        for row in &values.rows {
            self.walk_exprs(row);
        }
        let width = values.rows.first().map_or(0, Vec::len);
        Body {
            outputs: (1..=width)
                .map(|position| OutCol {
                    name: Some(format!("column{position}")),
                    output: Output::Expr,
                })
                .collect(),
            ..Body::default()
        }
    }

    /// One SELECT; `tail` is the query whose ORDER BY / LIMIT / locking clauses apply to it.
    fn walk_select(&mut self, select: &Select, tail: Option<&Query>) -> Body {
        self.scopes.push(Scope::default());
        if select.top.is_some()
            || select.exclude.is_some()
            || !select.lateral_views.is_empty()
            || select.prewhere.is_some()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
            || select.qualify.is_some()
            || select.value_table_mode.is_some()
            || select.connect_by.is_some()
            || !matches!(select.flavor, SelectFlavor::Standard)
        {
            self.not_understood();
        }
        if let Some(into) = &select.into {
            self.object(&into.name, Action::Ddl);
            self.select_into = true;
        }
        for from in &select.from {
            self.walk_table_with_joins(from);
        }
        let mut outputs = Vec::new();
        for item in &select.projection {
            self.walk_select_item(item, &mut outputs);
        }
        if let Some(Distinct::On(exprs)) = &select.distinct {
            self.walk_exprs(exprs);
        }
        if let Some(top) = &select.top {
            if let Some(TopQuantity::Expr(expr)) = &top.quantity {
                self.walk_expr(expr);
            }
        }
        for lateral in &select.lateral_views {
            self.walk_expr(&lateral.lateral_view);
        }
        for expr in [
            &select.prewhere,
            &select.selection,
            &select.having,
            &select.qualify,
        ]
        .into_iter()
        .flatten()
        {
            self.walk_expr(expr);
        }
        self.walk_exprs(&select.cluster_by);
        self.walk_exprs(&select.distribute_by);
        self.walk_order_by_exprs(&select.sort_by);
        match &select.group_by {
            GroupByExpr::All(modifiers) => {
                self.not_understood();
                self.group_modifiers(modifiers);
            }
            GroupByExpr::Expressions(exprs, modifiers) => {
                self.walk_exprs(exprs);
                self.group_modifiers(modifiers);
            }
        }
        for NamedWindowDefinition(_, window) in &select.named_window {
            if let NamedWindowExpr::WindowSpec(spec) = window {
                self.walk_window(spec);
            }
        }
        if let Some(connect_by) = &select.connect_by {
            self.walk_expr(&connect_by.condition);
            self.walk_exprs(&connect_by.relationships);
        }
        if let Some(query) = tail {
            self.walk_tail(query);
            self.lock(&query.locks);
        }
        let scope = self.scopes.pop().unwrap_or_default();
        Body {
            outputs,
            tables: scope_tables(&scope.items),
            renamed_star: false,
        }
    }

    fn group_modifiers(&mut self, modifiers: &[GroupByWithModifier]) {
        for modifier in modifiers {
            match modifier {
                GroupByWithModifier::GroupingSets(expr) => self.walk_expr(expr),
                _ => self.not_understood(),
            }
        }
    }

    /// ORDER BY, LIMIT, OFFSET and FETCH of a query.
    fn walk_tail(&mut self, query: &Query) {
        if let Some(order_by) = &query.order_by {
            self.walk_order_by(order_by);
        }
        match &query.limit_clause {
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if let Some(limit) = limit {
                    self.walk_expr(limit);
                }
                if let Some(offset) = offset {
                    self.walk_expr(&offset.value);
                }
                if !limit_by.is_empty() {
                    self.not_understood();
                    self.walk_exprs(limit_by);
                }
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                self.not_understood();
                self.walk_expr(offset);
                self.walk_expr(limit);
            }
            None => {}
        }
        if let Some(quantity) = query.fetch.as_ref().and_then(|f| f.quantity.as_ref()) {
            self.walk_expr(quantity);
        }
    }

    fn walk_order_by(&mut self, order_by: &OrderBy) {
        match &order_by.kind {
            OrderByKind::All(_) => self.not_understood(),
            OrderByKind::Expressions(exprs) => self.walk_order_by_exprs(exprs),
        }
        if let Some(interpolate) = &order_by.interpolate {
            self.not_understood();
            for item in interpolate.exprs.iter().flatten() {
                if let Some(expr) = &item.expr {
                    self.walk_expr(expr);
                }
            }
        }
    }

    fn walk_order_by_exprs(&mut self, exprs: &[OrderByExpr]) {
        for order in exprs {
            self.walk_expr(&order.expr);
            if let Some(fill) = &order.with_fill {
                self.not_understood();
                for expr in [&fill.from, &fill.to, &fill.step].into_iter().flatten() {
                    self.walk_expr(expr);
                }
            }
        }
    }

    /// FOR UPDATE / FOR SHARE [OF ...]: PostgreSQL asks for UPDATE on the locked tables.
    fn lock(&mut self, locks: &[LockClause]) {
        for lock in locks {
            let items = self
                .scopes
                .last()
                .map(|scope| scope.items.as_slice())
                .unwrap_or_default();
            let tables = match &lock.of {
                None => Some(scope_tables(items)),
                Some(name) => {
                    let qualifier = fold_parts(name).unwrap_or_default();
                    let matched: Vec<Item> = items
                        .iter()
                        .filter(|item| item.matches(&qualifier))
                        .cloned()
                        .collect();
                    (!matched.is_empty()).then(|| scope_tables(&matched))
                }
            };
            match tables {
                Some(tables) => {
                    for table in tables {
                        self.info.access(table, Action::Update);
                    }
                }
                None => self.not_understood(),
            }
        }
    }

    // ----- FROM -----

    fn push_item(&mut self, item: Item) {
        match self.scopes.last_mut() {
            Some(scope) => scope.items.push(item),
            None => self.not_understood(),
        }
    }

    fn current_len(&self) -> usize {
        self.scopes.last().map_or(0, |scope| scope.items.len())
    }

    fn set_current_hidden(&mut self, hidden: bool) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.hidden = hidden;
        }
    }

    fn walk_table_with_joins(&mut self, from: &TableWithJoins) {
        let start = self.current_len();
        self.add_factor(&from.relation);
        for join in &from.joins {
            let split = self.current_len();
            self.add_factor(&join.relation);
            if join.global {
                self.not_understood();
            }
            let constraint = match &join.join_operator {
                JoinOperator::Join(constraint)
                | JoinOperator::Inner(constraint)
                | JoinOperator::Left(constraint)
                | JoinOperator::LeftOuter(constraint)
                | JoinOperator::Right(constraint)
                | JoinOperator::RightOuter(constraint)
                | JoinOperator::FullOuter(constraint)
                | JoinOperator::CrossJoin(constraint) => Some(constraint),
                JoinOperator::Semi(constraint)
                | JoinOperator::LeftSemi(constraint)
                | JoinOperator::RightSemi(constraint)
                | JoinOperator::Anti(constraint)
                | JoinOperator::LeftAnti(constraint)
                | JoinOperator::RightAnti(constraint)
                | JoinOperator::StraightJoin(constraint) => {
                    self.not_understood();
                    Some(constraint)
                }
                JoinOperator::AsOf {
                    match_condition,
                    constraint,
                } => {
                    self.not_understood();
                    self.walk_expr(match_condition);
                    Some(constraint)
                }
                JoinOperator::CrossApply | JoinOperator::OuterApply => {
                    self.not_understood();
                    None
                }
            };
            match constraint {
                Some(JoinConstraint::On(expr)) => self.walk_expr(expr),
                Some(JoinConstraint::Using(names)) => self.join_using(start, split, names),
                Some(JoinConstraint::Natural) => self.natural_join(start),
                Some(JoinConstraint::None) | None => {}
            }
        }
    }

    /// `USING (c)`: c is read from each side; on a side of several tables, from one of them.
    fn join_using(&mut self, start: usize, split: usize, names: &[ObjectName]) {
        let Some(scope) = self.scopes.last() else {
            return;
        };
        let left = leaf_tables(scope.items.get(start..split).unwrap_or_default());
        let right = leaf_tables(scope.items.get(split..).unwrap_or_default());
        for name in names {
            let column = match name.0.as_slice() {
                [part] => part.as_ident().map(fold),
                _ => None,
            };
            let Some(column) = column else {
                self.not_understood();
                continue;
            };
            for side in [&left, &right] {
                if let Some(column) = column_ref(vec![side.clone()], &column) {
                    self.info.use_column(column, Action::Select);
                }
            }
        }
    }

    /// NATURAL JOIN compares the columns both sides share: all of them, conservatively.
    fn natural_join(&mut self, start: usize) {
        let tables = self
            .scopes
            .last()
            .map(|scope| leaf_tables(scope.items.get(start..).unwrap_or_default()))
            .unwrap_or_default();
        for table in tables {
            self.info
                .use_column(ColumnRef::All { table }, Action::Select);
        }
    }

    fn add_factor(&mut self, factor: &TableFactor) {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality: _,
                partitions,
                json_path,
                sample,
                index_hints,
            } => {
                if !with_hints.is_empty()
                    || version.is_some()
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || !index_hints.is_empty()
                {
                    self.not_understood();
                }
                if let Some(
                    TableSampleKind::BeforeTableAlias(sample)
                    | TableSampleKind::AfterTableAlias(sample),
                ) = sample
                {
                    // Random rows: as volatile as random().
                    self.builtin("tablesample");
                    if let Some(quantity) = &sample.quantity {
                        self.walk_expr(&quantity.value);
                    }
                    if let Some(offset) = &sample.offset {
                        self.walk_expr(offset);
                    }
                    if let Some(on) = sample.bucket.as_ref().and_then(|b| b.on.as_ref()) {
                        self.walk_expr(on);
                    }
                }
                let (name, alias) = self.strip_only(name, alias.as_ref());
                if let Some(args) = args {
                    // A table function: `generate_series(1, 3)`.
                    if args.settings.is_some() {
                        self.not_understood();
                    }
                    self.record_function(&name);
                    for arg in &args.args {
                        self.function_arg(arg, false);
                    }
                    self.push_function_item(alias, last_name(&name), 1);
                } else if let Some(body) = self.cte(&name) {
                    let item_name = match alias {
                        Some(alias) => Some(fold(&alias.name)),
                        None => last_name(&name),
                    };
                    self.push_item(Item::other(item_name, Source::Derived(rename(body, alias))));
                } else {
                    let rel = self.rel_name(&name);
                    let index = self.info.table(rel.clone());
                    self.info.access(index, Action::Select);
                    let renamed = alias.is_some_and(|alias| !alias.columns.is_empty());
                    if renamed {
                        self.info
                            .use_column(ColumnRef::All { table: index }, Action::Select);
                    }
                    let alias = alias.map(|alias| fold(&alias.name));
                    self.push_item(Item::table(index, &rel, alias, renamed));
                }
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
            } => {
                // Without LATERAL a subquery cannot see the other items of its FROM clause.
                if !lateral {
                    self.set_current_hidden(true);
                }
                let body = self.walk_query(subquery);
                if !lateral {
                    self.set_current_hidden(false);
                }
                let name = alias.as_ref().map(|alias| fold(&alias.name));
                self.push_item(Item::other(
                    name,
                    Source::Derived(rename(body, alias.as_ref())),
                ));
            }
            TableFactor::Function {
                lateral: _,
                name,
                args,
                alias,
            } => {
                self.record_function(name);
                for arg in args {
                    self.function_arg(arg, false);
                }
                self.push_function_item(alias.as_ref(), last_name(name), 1);
            }
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset,
                with_offset_alias,
                with_ordinality,
            } => {
                if *with_offset || with_offset_alias.is_some() {
                    self.not_understood();
                }
                self.record_function(&ObjectName::from(vec![Ident::new("unnest")]));
                self.walk_exprs(array_exprs);
                let width = array_exprs.len() + usize::from(*with_ordinality);
                self.push_function_item(alias.as_ref(), Some("unnest".into()), width);
            }
            TableFactor::JsonTable {
                json_expr,
                columns,
                alias,
                ..
            } => {
                self.walk_expr(json_expr);
                self.push_function_item(alias.as_ref(), None, columns.len());
            }
            TableFactor::XmlTable {
                namespaces,
                row_expression,
                passing,
                columns,
                alias,
            } => {
                for namespace in namespaces {
                    self.walk_expr(&namespace.uri);
                }
                self.walk_expr(row_expression);
                for argument in &passing.arguments {
                    self.walk_expr(&argument.expr);
                }
                for column in columns {
                    if let XmlTableColumnOption::NamedInfo { path, default, .. } = &column.option {
                        for expr in [path, default].into_iter().flatten() {
                            self.walk_expr(expr);
                        }
                    }
                }
                self.push_function_item(alias.as_ref(), None, columns.len());
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let start = self.current_len();
                self.walk_table_with_joins(table_with_joins);
                if let Some(alias) = alias {
                    let mut inner = match self.scopes.last_mut() {
                        Some(scope) => scope.items.split_off(start.min(scope.items.len())),
                        None => Vec::new(),
                    };
                    if !alias.columns.is_empty() {
                        // Renamed join columns hide which table columns are read.
                        for table in leaf_tables(&inner) {
                            self.info
                                .use_column(ColumnRef::All { table }, Action::Select);
                        }
                        mark_renamed(&mut inner);
                    }
                    self.push_item(Item::other(Some(fold(&alias.name)), Source::Join(inner)));
                }
            }
            TableFactor::TableFunction { expr, alias } => {
                self.not_understood();
                self.walk_expr(expr);
                self.push_function_item(alias.as_ref(), None, 1);
            }
            TableFactor::OpenJsonTable {
                json_expr, alias, ..
            } => {
                self.not_understood();
                self.walk_expr(json_expr);
                self.push_function_item(alias.as_ref(), None, 1);
            }
            TableFactor::Pivot { table, .. }
            | TableFactor::Unpivot { table, .. }
            | TableFactor::MatchRecognize { table, .. } => {
                self.not_understood();
                self.add_factor(table);
            }
            TableFactor::SemanticView { name, alias, .. } => {
                self.not_understood();
                self.object(name, Action::Select);
                self.push_function_item(alias.as_ref(), None, 1);
            }
        }
    }

    fn push_function_item(
        &mut self,
        alias: Option<&TableAlias>,
        name: Option<String>,
        width: usize,
    ) {
        let (name, width) = match alias {
            Some(alias) if !alias.columns.is_empty() => {
                (Some(fold(&alias.name)), alias.columns.len())
            }
            Some(alias) => (Some(fold(&alias.name)), width.max(1)),
            None => (name, width.max(1)),
        };
        self.push_item(Item::other(name, Source::Function { width }));
    }

    /// sqlparser 0.59 reads `ONLY t` as the table `ONLY` aliased `t`. `only` is reserved in
    /// PostgreSQL, so unquoted it can only mean "t without its inheritance children".
    fn strip_only<'b>(
        &mut self,
        name: &ObjectName,
        alias: Option<&'b TableAlias>,
    ) -> (ObjectName, Option<&'b TableAlias>) {
        let only = matches!(
            name.0.as_slice(),
            [ObjectNamePart::Identifier(ident)]
                if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("only")
        );
        if !only {
            return (name.clone(), alias);
        }
        match alias {
            Some(alias) if alias.columns.is_empty() => {
                (ObjectName::from(vec![alias.name.clone()]), None)
            }
            _ => {
                self.not_understood();
                (name.clone(), alias)
            }
        }
    }

    /// The body of the CTE an unqualified relation name refers to, if any.
    fn cte(&mut self, name: &ObjectName) -> Option<Body> {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return None;
        };
        let name = fold(ident);
        let cte = self.ctes.iter().rev().find(|cte| cte.name == name)?;
        if cte.body.is_none() {
            self.cte_pending = true;
        }
        Some(cte.body.clone().unwrap_or_default())
    }

    // ----- DML -----

    fn walk_dml(&mut self, statement: &Statement) -> (Kind, Body) {
        match statement {
            Statement::Insert(insert) => (Kind::Insert, self.walk_insert(insert)),
            Statement::Update {
                table,
                assignments,
                from,
                selection,
                returning,
                or,
                limit,
            } => {
                if or.is_some() || limit.is_some() {
                    self.not_understood();
                }
                let body = self.walk_update(
                    table,
                    assignments,
                    from.as_ref(),
                    selection.as_ref(),
                    returning.as_deref(),
                );
                (Kind::Update, body)
            }
            Statement::Delete(delete) => (Kind::Delete, self.walk_delete(delete)),
            Statement::Merge {
                table,
                source,
                on,
                clauses,
                output,
                ..
            } => {
                if output.is_some() {
                    self.not_understood();
                }
                self.walk_merge(table, source, on, clauses);
                (Kind::Merge, Body::default())
            }
            _ => {
                self.not_understood();
                (Kind::Admin, Body::default())
            }
        }
    }

    /// The target of UPDATE / DELETE / MERGE: a plain table.
    fn target(&mut self, factor: &TableFactor) -> Option<(usize, Item)> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version,
            partitions,
            json_path,
            sample,
            index_hints,
            ..
        } = factor
        else {
            return None;
        };
        if !with_hints.is_empty()
            || version.is_some()
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_hints.is_empty()
        {
            self.not_understood();
        }
        let (name, alias) = self.strip_only(name, alias.as_ref());
        if alias.is_some_and(|alias| !alias.columns.is_empty()) {
            self.not_understood();
        }
        let rel = self.rel_name(&name);
        let index = self.info.table(rel.clone());
        let alias = alias.map(|alias| fold(&alias.name));
        Some((index, Item::table(index, &rel, alias, false)))
    }

    fn walk_insert(&mut self, insert: &Insert) -> Body {
        if insert.or.is_some()
            || insert.ignore
            || insert.overwrite
            || insert.partitioned.is_some()
            || !insert.after_columns.is_empty()
            || insert.replace_into
            || insert.priority.is_some()
            || insert.insert_alias.is_some()
            || insert.settings.is_some()
            || insert.format_clause.is_some()
        {
            self.not_understood();
        }
        let name = match &insert.table {
            TableObject::TableName(name) => name,
            TableObject::TableFunction(function) => {
                self.not_understood();
                self.walk_function(function);
                return Body::default();
            }
        };
        let rel = self.rel_name(name);
        let index = self.info.table(rel.clone());
        self.info.access(index, Action::Insert);
        let columns: Vec<String> = insert.columns.iter().map(fold).collect();
        if columns.is_empty() {
            self.info
                .use_column(ColumnRef::All { table: index }, Action::Insert);
        }
        for column in &columns {
            self.info.use_column(
                ColumnRef::Of {
                    table: index,
                    name: column.clone(),
                },
                Action::Insert,
            );
        }
        if let Some(source) = &insert.source {
            self.walk_query(source);
            self.insert_values(index, &columns, source);
        }
        let item = Item::table(index, &rel, insert.table_alias.as_ref().map(fold), false);
        if !insert.assignments.is_empty() {
            // MySQL's INSERT ... SET
            self.not_understood();
            self.scopes.push(Scope {
                items: vec![item.clone()],
                hidden: false,
            });
            self.assignments(index, &insert.assignments, Action::Insert);
            self.scopes.pop();
        }
        match &insert.on {
            Some(OnInsert::OnConflict(on_conflict)) => {
                self.scopes.push(Scope {
                    items: vec![
                        item.clone(),
                        Item::other(Some("excluded".into()), Source::Excluded),
                    ],
                    hidden: false,
                });
                if let Some(ConflictTarget::Columns(columns)) = &on_conflict.conflict_target {
                    for column in columns {
                        self.info.use_column(
                            ColumnRef::Of {
                                table: index,
                                name: fold(column),
                            },
                            Action::Select,
                        );
                    }
                }
                if let OnConflictAction::DoUpdate(update) = &on_conflict.action {
                    self.info.access(index, Action::Update);
                    self.assignments(index, &update.assignments, Action::Update);
                    if let Some(selection) = &update.selection {
                        self.walk_expr(selection);
                    }
                }
                self.scopes.pop();
            }
            Some(OnInsert::DuplicateKeyUpdate(assignments)) => {
                self.not_understood();
                self.scopes.push(Scope {
                    items: vec![item.clone()],
                    hidden: false,
                });
                self.info.access(index, Action::Update);
                self.assignments(index, assignments, Action::Update);
                self.scopes.pop();
            }
            Some(_) => self.not_understood(),
            None => {}
        }
        self.scopes.push(Scope {
            items: vec![item],
            hidden: false,
        });
        let body = self.returning(insert.returning.as_deref());
        self.scopes.pop();
        body
    }

    /// Values of INSERT's VALUES rows (or of a SELECT list) land in the listed columns.
    fn insert_values(&mut self, table: usize, columns: &[String], source: &Query) {
        if columns.is_empty() {
            return;
        }
        let rows: Vec<Vec<&Expr>> = match source.body.as_ref() {
            SetExpr::Values(values) => values.rows.iter().map(|row| row.iter().collect()).collect(),
            SetExpr::Select(select) => vec![select
                .projection
                .iter()
                .map_while(|item| match item {
                    SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                        Some(expr)
                    }
                    _ => None,
                })
                .collect()],
            _ => Vec::new(),
        };
        for row in rows {
            for (expr, column) in row.into_iter().zip(columns) {
                if let Some(value) = value_source(expr) {
                    self.add_value(
                        value,
                        ColumnRef::Of {
                            table,
                            name: column.clone(),
                        },
                    );
                }
            }
        }
    }

    fn walk_update(
        &mut self,
        table: &TableWithJoins,
        assignments: &[Assignment],
        from: Option<&UpdateTableFromKind>,
        selection: Option<&Expr>,
        returning: Option<&[SelectItem]>,
    ) -> Body {
        self.scopes.push(Scope::default());
        let index = match self.target(&table.relation) {
            Some((index, item)) => {
                self.info.access(index, Action::Update);
                self.push_item(item);
                Some(index)
            }
            None => {
                self.not_understood();
                self.add_factor(&table.relation);
                None
            }
        };
        if !table.joins.is_empty() {
            // MySQL's multi-table UPDATE: the joined tables are at least read.
            self.not_understood();
            for join in &table.joins {
                self.add_factor(&join.relation);
            }
        }
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            from
        {
            for from in from {
                self.walk_table_with_joins(from);
            }
        }
        match index {
            Some(index) => self.assignments(index, assignments, Action::Update),
            None => {
                for assignment in assignments {
                    self.walk_expr(&assignment.value);
                }
            }
        }
        if let Some(selection) = selection {
            self.walk_expr(selection);
        }
        let body = self.returning(returning);
        self.scopes.pop();
        body
    }

    fn walk_delete(&mut self, delete: &Delete) -> Body {
        if !delete.tables.is_empty() || !delete.order_by.is_empty() || delete.limit.is_some() {
            // MySQL's multi-table DELETE and DELETE ... ORDER BY / LIMIT
            self.not_understood();
            for name in &delete.tables {
                self.object(name, Action::Delete);
            }
        }
        self.scopes.push(Scope::default());
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
        if from.len() != 1 {
            self.not_understood();
        }
        for target in from {
            match self.target(&target.relation) {
                Some((index, item)) => {
                    self.info.access(index, Action::Delete);
                    self.push_item(item);
                }
                None => {
                    self.not_understood();
                    self.add_factor(&target.relation);
                }
            }
            if !target.joins.is_empty() {
                self.not_understood();
                for join in &target.joins {
                    self.add_factor(&join.relation);
                }
            }
        }
        for using in delete.using.iter().flatten() {
            self.walk_table_with_joins(using);
        }
        if let Some(selection) = &delete.selection {
            self.walk_expr(selection);
        }
        self.walk_order_by_exprs(&delete.order_by);
        if let Some(limit) = &delete.limit {
            self.walk_expr(limit);
        }
        let body = self.returning(delete.returning.as_deref());
        self.scopes.pop();
        body
    }

    fn walk_merge(
        &mut self,
        table: &TableFactor,
        source: &TableFactor,
        on: &Expr,
        clauses: &[MergeClause],
    ) {
        self.scopes.push(Scope::default());
        let target = self.target(table);
        let index = match target {
            Some((index, item)) => {
                self.push_item(item);
                Some(index)
            }
            None => {
                self.not_understood();
                self.add_factor(table);
                None
            }
        };
        self.add_factor(source);
        self.walk_expr(on);
        for clause in clauses {
            if let Some(predicate) = &clause.predicate {
                self.walk_expr(predicate);
            }
            let Some(index) = index else {
                continue;
            };
            match &clause.action {
                MergeAction::Insert(insert) => {
                    self.info.access(index, Action::Insert);
                    let columns: Vec<String> = insert.columns.iter().map(fold).collect();
                    if columns.is_empty() {
                        self.info
                            .use_column(ColumnRef::All { table: index }, Action::Insert);
                    }
                    for column in &columns {
                        self.info.use_column(
                            ColumnRef::Of {
                                table: index,
                                name: column.clone(),
                            },
                            Action::Insert,
                        );
                    }
                    match &insert.kind {
                        MergeInsertKind::Values(values) => {
                            for row in &values.rows {
                                self.walk_exprs(row);
                                if columns.is_empty() {
                                    continue;
                                }
                                for (expr, column) in row.iter().zip(&columns) {
                                    if let Some(value) = value_source(expr) {
                                        self.add_value(
                                            value,
                                            ColumnRef::Of {
                                                table: index,
                                                name: column.clone(),
                                            },
                                        );
                                    }
                                }
                            }
                        }
                        MergeInsertKind::Row => self.not_understood(),
                    }
                }
                MergeAction::Update { assignments } => {
                    self.info.access(index, Action::Update);
                    self.assignments(index, assignments, Action::Update);
                }
                MergeAction::Delete => self.info.access(index, Action::Delete),
            }
        }
        self.scopes.pop();
    }

    /// SET clauses: the target columns get `action`, the values are read, and a value
    /// assigned directly maps to its column.
    fn assignments(&mut self, table: usize, assignments: &[Assignment], action: Action) {
        for assignment in assignments {
            let targets: Vec<&ObjectName> = match &assignment.target {
                AssignmentTarget::ColumnName(name) => vec![name],
                AssignmentTarget::Tuple(names) => names.iter().collect(),
            };
            let mut columns = Vec::new();
            for target in targets {
                // `SET c.field = ...` assigns a field of c; other parts are recorded too in
                // case a dialect meant `table.column`.
                let parts = fold_parts(target).unwrap_or_default();
                if parts.is_empty() {
                    self.not_understood();
                }
                for part in &parts {
                    self.info.use_column(
                        ColumnRef::Of {
                            table,
                            name: part.clone(),
                        },
                        action,
                    );
                }
                columns.push(match parts.as_slice() {
                    [column] => Some(column.clone()),
                    _ => None,
                });
            }
            self.walk_expr(&assignment.value);
            let values: Vec<&Expr> = match (columns.len(), strip_value(&assignment.value)) {
                (1, _) => vec![&assignment.value],
                (n, Expr::Tuple(values)) if n == values.len() => values.iter().collect(),
                _ => Vec::new(),
            };
            for (column, value) in columns.into_iter().zip(values) {
                if let (Some(name), Some(value)) = (column, value_source(value)) {
                    self.add_value(value, ColumnRef::Of { table, name });
                }
            }
        }
    }

    /// RETURNING, in the current (DML) scope.
    fn returning(&mut self, returning: Option<&[SelectItem]>) -> Body {
        let mut outputs = Vec::new();
        for item in returning.unwrap_or_default() {
            self.walk_select_item(item, &mut outputs);
        }
        Body {
            outputs,
            ..Body::default()
        }
    }

    // ----- select lists -----

    fn walk_select_item(&mut self, item: &SelectItem, outputs: &mut Vec<OutCol>) {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                self.walk_expr(expr);
                outputs.push(OutCol {
                    name: expr_name(expr),
                    output: self.output_of(expr),
                });
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                self.walk_expr(expr);
                outputs.push(OutCol {
                    name: Some(fold(alias)),
                    output: self.output_of(expr),
                });
            }
            SelectItem::Wildcard(options) => {
                self.wildcard_options(options);
                let items = self
                    .scopes
                    .last()
                    .map(|scope| scope.items.clone())
                    .unwrap_or_default();
                for item in &items {
                    self.expand(item, outputs);
                }
            }
            SelectItem::QualifiedWildcard(kind, options) => {
                self.wildcard_options(options);
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        self.qualified_star(name, Some(outputs))
                    }
                    SelectItemQualifiedWildcardKind::Expr(expr) => {
                        self.walk_expr(expr);
                        outputs.push(OutCol::expr());
                    }
                }
            }
        }
    }

    /// EXCLUDE / EXCEPT / REPLACE / RENAME / ILIKE after `*` belong to other dialects.
    fn wildcard_options(&mut self, options: &WildcardAdditionalOptions) {
        if options.opt_ilike.is_some()
            || options.opt_exclude.is_some()
            || options.opt_except.is_some()
            || options.opt_replace.is_some()
            || options.opt_rename.is_some()
        {
            self.not_understood();
        }
        if let Some(replace) = &options.opt_replace {
            for element in &replace.items {
                self.walk_expr(&element.expr);
            }
        }
    }

    /// The columns `*` yields for one FROM item.
    fn expand(&mut self, item: &Item, outputs: &mut Vec<OutCol>) {
        match &item.source {
            Source::Table { index, .. } => {
                let all = ColumnRef::All { table: *index };
                self.info.use_column(all.clone(), Action::Select);
                outputs.push(OutCol {
                    name: None,
                    output: Output::Column(all),
                });
            }
            Source::Derived(body) => outputs.extend(body.outputs.iter().cloned()),
            Source::Function { width } => {
                outputs.extend(std::iter::repeat_with(OutCol::expr).take(*width));
            }
            Source::Join(inner) => {
                for item in inner {
                    self.expand(item, outputs);
                }
            }
            Source::Excluded => {}
        }
    }

    /// `x.*`, in a select list (`outputs`) or as an expression (a whole-row value).
    fn qualified_star(&mut self, name: &ObjectName, outputs: Option<&mut Vec<OutCol>>) {
        let Some(parts) = fold_parts(name) else {
            self.not_understood();
            return;
        };
        let matched: Vec<Item> = self
            .scopes
            .iter()
            .rev()
            .filter(|scope| !scope.hidden)
            .map(|scope| {
                scope
                    .items
                    .iter()
                    .filter(|item| item.matches(&parts))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .find(|matched| !matched.is_empty())
            .unwrap_or_default();
        if matched.is_empty() {
            // `(composite_column).*`
            self.column(&parts);
            if let Some(outputs) = outputs {
                outputs.push(OutCol::expr());
            }
            return;
        }
        let mut expanded = Vec::new();
        for item in &matched {
            self.expand(item, &mut expanded);
        }
        if let Some(outputs) = outputs {
            outputs.extend(expanded);
        }
    }

    // ----- expressions -----

    fn walk_exprs(&mut self, exprs: &[Expr]) {
        for expr in exprs {
            self.walk_expr(expr);
        }
    }

    fn walk_expr(&mut self, expr: &Expr) {
        match expr {
            Expr::Identifier(ident) => {
                // DEFAULT in VALUES and SET is a keyword, not a column.
                if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") {
                    return;
                }
                if is_value_function(ident) {
                    self.builtin(&fold(ident));
                    return;
                }
                self.column(&[fold(ident)]);
            }
            Expr::CompoundIdentifier(idents) => {
                let parts: Vec<String> = idents.iter().map(fold).collect();
                self.column(&parts);
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                self.field_access(root, access_chain)
            }
            Expr::JsonAccess { value, path } => {
                self.walk_expr(value);
                for element in &path.path {
                    if let JsonPathElem::Bracket { key } = element {
                        self.walk_expr(key);
                    }
                }
            }
            Expr::IsFalse(inner)
            | Expr::IsNotFalse(inner)
            | Expr::IsTrue(inner)
            | Expr::IsNotTrue(inner)
            | Expr::IsNull(inner)
            | Expr::IsNotNull(inner)
            | Expr::IsUnknown(inner)
            | Expr::IsNotUnknown(inner)
            | Expr::UnaryOp { expr: inner, .. }
            | Expr::Nested(inner)
            | Expr::Collate { expr: inner, .. }
            | Expr::IsNormalized { expr: inner, .. } => self.walk_expr(inner),
            Expr::AtTimeZone {
                timestamp,
                time_zone,
            } => {
                self.walk_expr(timestamp);
                self.walk_expr(time_zone);
            }
            Expr::IsDistinctFrom(left, right) | Expr::IsNotDistinctFrom(left, right) => {
                self.comparison(left, right)
            }
            Expr::BinaryOp { left, op, right } => {
                if is_comparison(op) {
                    self.comparison(left, right);
                } else {
                    self.walk_expr(left);
                    self.walk_expr(right);
                }
            }
            Expr::Like {
                any, expr, pattern, ..
            }
            | Expr::ILike {
                any, expr, pattern, ..
            } => {
                if *any {
                    self.walk_expr(expr);
                    self.walk_expr(pattern);
                } else {
                    self.comparison(expr, pattern);
                }
            }
            Expr::SimilarTo { expr, pattern, .. } | Expr::RLike { expr, pattern, .. } => {
                self.walk_expr(expr);
                self.walk_expr(pattern);
            }
            Expr::AnyOp { left, right, .. } | Expr::AllOp { left, right, .. } => {
                self.walk_expr(left);
                self.walk_expr(right);
            }
            Expr::InList { expr, list, .. } => self.in_list(expr, list),
            Expr::InSubquery { expr, subquery, .. } => {
                self.walk_expr(expr);
                self.walk_query(subquery);
            }
            Expr::InUnnest {
                expr, array_expr, ..
            } => {
                self.walk_expr(expr);
                self.walk_expr(array_expr);
            }
            Expr::Between {
                expr, low, high, ..
            } => self.between(expr, low, high),
            Expr::Cast { expr, .. } => self.walk_expr(expr),
            Expr::Convert { expr, styles, .. } => {
                self.builtin("convert");
                self.walk_expr(expr);
                self.walk_exprs(styles);
            }
            Expr::Extract { expr, .. } => {
                // date_part on timestamptz depends on the TimeZone setting: stable.
                self.builtin("extract");
                self.walk_expr(expr);
            }
            Expr::Ceil { expr, .. } => {
                self.builtin("ceil");
                self.walk_expr(expr);
            }
            Expr::Floor { expr, .. } => {
                self.builtin("floor");
                self.walk_expr(expr);
            }
            Expr::Position { expr, r#in } => {
                self.builtin("position");
                self.walk_expr(expr);
                self.walk_expr(r#in);
            }
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                self.builtin("substring");
                self.walk_expr(expr);
                for part in [substring_from, substring_for].into_iter().flatten() {
                    self.walk_expr(part);
                }
            }
            Expr::Trim {
                expr,
                trim_what,
                trim_characters,
                ..
            } => {
                self.builtin("trim");
                self.walk_expr(expr);
                if let Some(what) = trim_what {
                    self.walk_expr(what);
                }
                if let Some(characters) = trim_characters {
                    self.walk_exprs(characters);
                }
            }
            Expr::Overlay {
                expr,
                overlay_what,
                overlay_from,
                overlay_for,
            } => {
                self.builtin("overlay");
                self.walk_expr(expr);
                self.walk_expr(overlay_what);
                self.walk_expr(overlay_from);
                if let Some(overlay_for) = overlay_for {
                    self.walk_expr(overlay_for);
                }
            }
            Expr::Value(_) | Expr::TypedString(_) => {}
            Expr::Prefixed { value, .. } => self.walk_expr(value),
            Expr::Function(function) => self.walk_function(function),
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref()),
            Expr::Exists { subquery, .. } | Expr::Subquery(subquery) => {
                self.walk_query(subquery);
            }
            Expr::GroupingSets(sets) | Expr::Cube(sets) | Expr::Rollup(sets) => {
                for set in sets {
                    self.walk_exprs(set);
                }
            }
            Expr::Tuple(exprs) => self.walk_exprs(exprs),
            Expr::Array(array) => self.walk_exprs(&array.elem),
            Expr::Interval(interval) => self.walk_expr(&interval.value),
            Expr::Named { expr, .. } | Expr::OuterJoin(expr) | Expr::Prior(expr) => {
                self.not_understood();
                self.walk_expr(expr);
            }
            Expr::Struct { values, .. } => {
                self.not_understood();
                self.walk_exprs(values);
            }
            Expr::Dictionary(fields) => {
                self.not_understood();
                for field in fields {
                    self.walk_expr(&field.value);
                }
            }
            Expr::Map(map) => {
                self.not_understood();
                for entry in &map.entries {
                    self.walk_expr(&entry.key);
                    self.walk_expr(&entry.value);
                }
            }
            Expr::MatchAgainst { columns, .. } => {
                self.not_understood();
                for column in columns {
                    let parts = fold_parts(column).unwrap_or_default();
                    self.column(&parts);
                }
            }
            Expr::Lambda(lambda) => {
                self.not_understood();
                self.walk_expr(&lambda.body);
            }
            Expr::MemberOf(member) => {
                self.not_understood();
                self.walk_expr(&member.value);
                self.walk_expr(&member.array);
            }
            Expr::Wildcard(_) => self.whole_scope(),
            Expr::QualifiedWildcard(name, _) => self.qualified_star(name, None),
        }
    }

    /// `(t).c`, `(t.c).f`, `c[1]`: leading field names after a plain name extend it as
    /// name parts (so `(t).c` is column c of t); subscripts are walked.
    #[inline(never)]
    fn field_access(&mut self, root: &Expr, chain: &[sqlparser::ast::AccessExpr]) {
        use sqlparser::ast::AccessExpr;
        let mut base = root;
        while let Expr::Nested(inner) = base {
            base = inner;
        }
        let mut parts: Option<Vec<String>> = match base {
            Expr::Identifier(ident) => Some(vec![fold(ident)]),
            Expr::CompoundIdentifier(idents) => Some(idents.iter().map(fold).collect()),
            _ => None,
        };
        let mut rest = chain;
        if let Some(parts) = parts.as_mut() {
            while let Some((AccessExpr::Dot(Expr::Identifier(field)), tail)) = rest.split_first() {
                parts.push(fold(field));
                rest = tail;
            }
        }
        match parts {
            Some(parts) => self.column(&parts),
            None => self.walk_expr(root),
        }
        for access in rest {
            match access {
                AccessExpr::Dot(Expr::Identifier(_)) => {}
                AccessExpr::Dot(other) => self.walk_expr(other),
                AccessExpr::Subscript(Subscript::Index { index }) => self.walk_expr(index),
                AccessExpr::Subscript(Subscript::Slice {
                    lower_bound,
                    upper_bound,
                    stride,
                }) => {
                    for bound in [lower_bound, upper_bound, stride].into_iter().flatten() {
                        self.walk_expr(bound);
                    }
                }
            }
        }
    }

    #[inline(never)]
    fn comparison(&mut self, left: &Expr, right: &Expr) {
        self.walk_expr(left);
        self.walk_expr(right);
        self.compare(left, right);
    }

    #[inline(never)]
    fn in_list(&mut self, expr: &Expr, list: &[Expr]) {
        self.walk_expr(expr);
        for item in list {
            self.walk_expr(item);
            self.compare(expr, item);
        }
    }

    #[inline(never)]
    fn between(&mut self, expr: &Expr, low: &Expr, high: &Expr) {
        self.walk_expr(expr);
        self.walk_expr(low);
        self.walk_expr(high);
        self.compare(expr, low);
        self.compare(expr, high);
    }

    #[inline(never)]
    fn case(
        &mut self,
        operand: Option<&Expr>,
        conditions: &[sqlparser::ast::CaseWhen],
        otherwise: Option<&Expr>,
    ) {
        if let Some(operand) = operand {
            self.walk_expr(operand);
        }
        for when in conditions {
            self.walk_expr(&when.condition);
            self.walk_expr(&when.result);
            // `CASE col WHEN $1 ...` compares col with $1.
            if let Some(operand) = operand {
                self.compare(operand, &when.condition);
            }
        }
        if let Some(otherwise) = otherwise {
            self.walk_expr(otherwise);
        }
    }

    /// A bare `*` inside an expression reads every column of the current FROM clause.
    fn whole_scope(&mut self) {
        let tables = self
            .scopes
            .last()
            .map(|scope| leaf_tables(&scope.items))
            .unwrap_or_default();
        for table in tables {
            self.info
                .use_column(ColumnRef::All { table }, Action::Select);
        }
    }

    #[inline(never)]
    fn walk_function(&mut self, function: &Function) {
        self.record_function(&function.name);
        if function.uses_odbc_syntax {
            self.not_understood();
        }
        let counts = last_name(&function.name).is_some_and(|name| name == "count");
        self.function_arguments(&function.parameters, counts);
        self.function_arguments(&function.args, counts);
        if let Some(filter) = &function.filter {
            self.walk_expr(filter);
        }
        match &function.over {
            Some(WindowType::WindowSpec(spec)) => self.walk_window(spec),
            Some(WindowType::NamedWindow(_)) | None => {}
        }
        self.walk_order_by_exprs(&function.within_group);
    }

    fn function_arguments(&mut self, arguments: &FunctionArguments, counts: bool) {
        match arguments {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(query) => {
                self.walk_query(query);
            }
            FunctionArguments::List(list) => {
                for arg in &list.args {
                    self.function_arg(arg, counts);
                }
                for clause in &list.clauses {
                    match clause {
                        FunctionArgumentClause::OrderBy(exprs) => self.walk_order_by_exprs(exprs),
                        FunctionArgumentClause::Limit(expr) => self.walk_expr(expr),
                        FunctionArgumentClause::Having(bound) => self.walk_expr(&bound.1),
                        FunctionArgumentClause::OnOverflow(overflow) => {
                            self.not_understood();
                            if let ListAggOnOverflow::Truncate {
                                filler: Some(filler),
                                ..
                            } = overflow
                            {
                                self.walk_expr(filler);
                            }
                        }
                        FunctionArgumentClause::IgnoreOrRespectNulls(_)
                        | FunctionArgumentClause::Separator(_)
                        | FunctionArgumentClause::JsonNullClause(_)
                        | FunctionArgumentClause::JsonReturningClause(_) => {}
                    }
                }
            }
        }
    }

    /// One argument; `counts` when the function is count, whose `*` reads no column.
    fn function_arg(&mut self, arg: &FunctionArg, counts: bool) {
        let arg = match arg {
            FunctionArg::Named { arg, .. } | FunctionArg::Unnamed(arg) => arg,
            FunctionArg::ExprNamed { name, arg, .. } => {
                // `f(param => value)`: a bare name is the parameter, not a column.
                if !matches!(name, Expr::Identifier(_)) {
                    self.walk_expr(name);
                }
                arg
            }
        };
        match arg {
            FunctionArgExpr::Expr(expr) => self.walk_expr(expr),
            FunctionArgExpr::QualifiedWildcard(name) => self.qualified_star(name, None),
            FunctionArgExpr::Wildcard => {
                if !counts {
                    self.whole_scope();
                }
            }
        }
    }

    fn walk_window(&mut self, spec: &WindowSpec) {
        self.walk_exprs(&spec.partition_by);
        self.walk_order_by_exprs(&spec.order_by);
        if let Some(frame) = &spec.window_frame {
            for bound in std::iter::once(&frame.start_bound).chain(&frame.end_bound) {
                if let WindowFrameBound::Preceding(Some(expr))
                | WindowFrameBound::Following(Some(expr)) = bound
                {
                    self.walk_expr(expr);
                }
            }
        }
    }

    fn builtin(&mut self, name: &str) {
        self.record_function(&ObjectName::from(vec![Ident::new(name)]));
    }

    fn record_function(&mut self, name: &ObjectName) {
        let Some(parts) = fold_parts(name) else {
            self.not_understood();
            return;
        };
        let Some((function, qualifiers)) = parts.split_last() else {
            self.not_understood();
            return;
        };
        if qualifiers.len() > 2 {
            self.not_understood();
        }
        let schema = qualifiers.last().cloned();
        let builtin = schema
            .as_deref()
            .is_none_or(|schema| schema == "pg_catalog");
        let call = FunctionCall {
            schema,
            name: function.clone(),
            writes: self.functions.is_write(name),
            volatile: !(builtin && IMMUTABLE_FUNCTIONS.contains(&function.as_str())),
        };
        if !self.info.functions.contains(&call) {
            self.info.functions.push(call);
        }
    }

    // ----- columns and values -----

    /// Records the column uses a column reference implies.
    fn column(&mut self, parts: &[String]) {
        for column in self.resolve(parts).uses {
            self.info.use_column(column, Action::Select);
        }
    }

    fn visible_scopes(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter().rev().filter(|scope| !scope.hidden)
    }

    /// Resolves a (folded) column reference the way PostgreSQL does: the longest qualifier
    /// naming a FROM item, innermost scope first; else the first part is a column and the
    /// rest are fields of it.
    fn resolve(&self, parts: &[String]) -> Resolved {
        let Some((first, rest)) = parts.split_first() else {
            return Resolved {
                uses: Vec::new(),
                output: Output::Expr,
            };
        };
        if rest.is_empty() {
            return self.resolve_unqualified(first);
        }
        for length in (1..=rest.len().min(3)).rev() {
            let (Some(qualifier), Some(column)) = (parts.get(..length), parts.get(length)) else {
                continue;
            };
            for scope in self.visible_scopes() {
                let matched: Vec<&Item> = scope
                    .items
                    .iter()
                    .filter(|item| item.matches(qualifier))
                    .collect();
                if matched.is_empty() {
                    continue;
                }
                let mut candidates = Candidates::default();
                let mut tables = Vec::new();
                for item in matched {
                    gather(slice::from_ref(item), &mut tables, &mut candidates);
                }
                candidates.scopes.push(tables);
                let mut resolved = conclude(candidates, column);
                if length + 1 < parts.len() {
                    resolved.output = Output::Expr;
                }
                return resolved;
            }
        }
        let mut resolved = self.resolve_unqualified(first);
        resolved.output = Output::Expr;
        resolved
    }

    /// An unqualified name: a column of any table in scope, or a whole row when it names a
    /// FROM item (`SELECT t FROM t` returns every column of t).
    fn resolve_unqualified(&self, name: &str) -> Resolved {
        let mut candidates = Candidates::default();
        let mut whole_rows = Vec::new();
        let qualifier = [name.to_owned()];
        for scope in self.visible_scopes() {
            let mut tables = Vec::new();
            gather(&scope.items, &mut tables, &mut candidates);
            candidates.scopes.push(tables);
            for item in scope.items.iter().filter(|item| item.matches(&qualifier)) {
                for table in leaf_tables(slice::from_ref(item)) {
                    whole_rows.push(ColumnRef::All { table });
                }
            }
            // A subquery of this scope that lists the name resolves it here: PostgreSQL
            // looks no further out.
            if exposes(&scope.items, name) {
                break;
            }
        }
        let mut resolved = conclude(candidates, name);
        if !whole_rows.is_empty() {
            resolved.uses.extend(whole_rows);
            resolved.output = Output::Expr;
        }
        resolved
    }

    fn output_of(&self, expr: &Expr) -> Output {
        match expr {
            Expr::Nested(inner) => self.output_of(inner),
            Expr::Identifier(ident) if is_value_function(ident) => Output::Expr,
            Expr::Identifier(ident) => self.resolve(&[fold(ident)]).output,
            Expr::CompoundIdentifier(idents) => {
                let parts: Vec<String> = idents.iter().map(fold).collect();
                self.resolve(&parts).output
            }
            _ => Output::Expr,
        }
    }

    /// The column a value compared with `expr` is meant for, seeing through casts.
    fn value_column(&self, expr: &Expr) -> Option<ColumnRef> {
        let parts: Vec<String> = match strip_value(expr) {
            Expr::Identifier(ident) if is_value_function(ident) => return None,
            Expr::Identifier(ident) => vec![fold(ident)],
            Expr::CompoundIdentifier(idents) => idents.iter().map(fold).collect(),
            _ => return None,
        };
        let resolved = self.resolve(&parts);
        match resolved.output {
            Output::Column(column) if !matches!(column, ColumnRef::All { .. }) => Some(column),
            _ => resolved
                .uses
                .into_iter()
                .find(|column| !matches!(column, ColumnRef::All { .. })),
        }
    }

    /// `column <op> value` or `value <op> column` (row constructors pairwise).
    fn compare(&mut self, left: &Expr, right: &Expr) {
        if let (Expr::Tuple(lefts), Expr::Tuple(rights)) = (strip_value(left), strip_value(right)) {
            if lefts.len() == rights.len() {
                for (left, right) in lefts.iter().zip(rights) {
                    self.compare(left, right);
                }
            }
            return;
        }
        let target = match (value_source(left), value_source(right)) {
            (None, Some(value)) => self.value_column(left).map(|column| (value, column)),
            (Some(value), None) => self.value_column(right).map(|column| (value, column)),
            _ => None,
        };
        if let Some((value, column)) = target {
            self.add_value(value, column);
        }
    }

    fn add_value(&mut self, value: ValueSource, column: ColumnRef) {
        // A literal that cannot be located cannot be rewritten (encrypted) in place.
        if let ValueSource::Literal { line: 0, .. } = value {
            self.not_understood();
        }
        let target = ValueTarget { value, column };
        if !self.info.values.contains(&target) {
            self.info.values.push(target);
        }
    }
}

/// Finds the queries and function calls at the top level of a statement the walker does not
/// descend into field by field (DDL).
#[derive(Default)]
struct NestedParts {
    depth: usize,
    queries: Vec<Query>,
    functions: Vec<ObjectName>,
}

impl Visitor for NestedParts {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.depth == 0 {
            self.queries.push(query.clone());
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let (0, Expr::Function(function)) = (self.depth, expr) {
            self.functions.push(function.name.clone());
        }
        ControlFlow::Continue(())
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

fn is_value_function(ident: &Ident) -> bool {
    ident.quote_style.is_none()
        && VALUE_FUNCTIONS.contains(&ident.value.to_ascii_lowercase().as_str())
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

/// Whether `SET name` changes the session's identity.
fn is_role_variable(name: &ObjectName) -> bool {
    match fold_parts(name) {
        Some(parts) => {
            let name = parts.join(".");
            name == "role" || name == "session_authorization"
        }
        None => true,
    }
}

fn is_comparison(op: &sqlparser::ast::BinaryOperator) -> bool {
    use sqlparser::ast::BinaryOperator;
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
    )
}

/// The expression under parentheses, casts and COLLATE.
fn strip_value(mut expr: &Expr) -> &Expr {
    loop {
        match expr {
            Expr::Nested(inner)
            | Expr::Cast { expr: inner, .. }
            | Expr::Collate { expr: inner, .. } => expr = inner,
            _ => return expr,
        }
    }
}

/// A `$n` parameter or a number / string literal (NULL and booleans are not values of a column's
/// domain worth tracking).
fn value_source(expr: &Expr) -> Option<ValueSource> {
    let value = match strip_value(expr) {
        Expr::Value(value) => value,
        Expr::TypedString(typed) => &typed.value,
        _ => return None,
    };
    match &value.value {
        Value::Placeholder(placeholder) => placeholder
            .strip_prefix('$')
            .and_then(|number| number.parse::<u32>().ok())
            .filter(|number| *number >= 1)
            .map(ValueSource::Param),
        Value::Boolean(_) | Value::Null => None,
        _ => Some(ValueSource::Literal {
            line: value.span.start.line,
            column: value.span.start.column,
        }),
    }
}

/// The output name PostgreSQL gives a select-list expression (enough for lookups).
fn expr_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(fold(ident)),
        Expr::CompoundIdentifier(idents) => idents.last().map(fold),
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => expr_name(inner),
        Expr::Function(function) => last_name(&function.name),
        _ => None,
    }
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
                candidates.renamed |= *renamed;
            }
            Source::Derived(body) => candidates.derived.push(body),
            Source::Join(inner) => gather(inner, tables, candidates),
            Source::Function { .. } | Source::Excluded => candidates.opaque = true,
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
        Source::Table { .. } | Source::Function { .. } | Source::Excluded => false,
    })
}

/// The column reference for a name given its candidate tables, and where its value comes from.
fn conclude(candidates: Candidates<'_>, column: &str) -> Resolved {
    let reference = column_ref(candidates.scopes, column);
    let output = match (&reference, candidates.derived.as_slice()) {
        (Some(reference), []) if !candidates.opaque && !candidates.renamed => {
            Output::Column(reference.clone())
        }
        (None, [body]) if !candidates.opaque => lookup(body, column),
        _ => Output::Expr,
    };
    Resolved {
        uses: reference.into_iter().collect(),
        output,
    }
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

/// Applies a column alias list (`AS s(a, b)`) to a body's output names.
fn rename(mut body: Body, alias: Option<&TableAlias>) -> Body {
    let Some(alias) = alias.filter(|alias| !alias.columns.is_empty()) else {
        return body;
    };
    for (out, column) in body.outputs.iter_mut().zip(&alias.columns) {
        if matches!(out.output, Output::Column(ColumnRef::All { .. })) {
            // Positions past a `*` are unknown, and the `*`'s columns are renamed.
            body.renamed_star = true;
            break;
        }
        out.name = Some(fold(&column.name));
    }
    if body.renamed_star {
        for out in &mut body.outputs {
            out.name = None;
        }
    }
    body
}

/// Outputs of a set operation: the left branch's where both branches agree.
fn merge_branches(mut left: Body, right: Body) -> Body {
    if left.outputs.len() == right.outputs.len() {
        for (out, other) in left.outputs.iter_mut().zip(&right.outputs) {
            if out.output != other.output {
                out.output = Output::Expr;
            }
        }
    } else {
        for out in &mut left.outputs {
            out.output = Output::Expr;
        }
    }
    for table in right.tables {
        if !left.tables.contains(&table) {
            left.tables.push(table);
        }
    }
    left.renamed_star |= right.renamed_star;
    left
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
            Source::Derived(_) | Source::Function { .. } | Source::Excluded => {}
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
            Source::Function { .. } | Source::Excluded => Vec::new(),
        };
        for table in found {
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
    }
    tables
}

fn mark_renamed(items: &mut [Item]) {
    for item in items {
        match &mut item.source {
            Source::Table { renamed, .. } => *renamed = true,
            Source::Join(inner) => mark_renamed(inner),
            Source::Derived(body) => {
                body.renamed_star = true;
                for out in &mut body.outputs {
                    out.name = None;
                }
            }
            Source::Function { .. } | Source::Excluded => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            &["t.a:select", "t.b:select", "t.c:select", "t.d:select", "t.e:select"],
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
            ("CREATE INDEX i ON t (lower(b)) WHERE c > 0", &["t:ddl"], &[]),
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
            ("ALTER VIEW v AS SELECT a FROM t", &["v:ddl", "t:select"], &["t.a:select"]),
            ("COMMENT ON TABLE t IS 'x'", &["t:ddl"], &[]),
            ("COMMENT ON COLUMN s.t.c IS 'x'", &["s.t:ddl"], &["s.t.c:ddl"]),
            ("CREATE SCHEMA app", &["app.*:ddl"], &[]),
            ("CREATE SCHEMA AUTHORIZATION bob", &["bob.*:ddl"], &[]),
            ("DROP SCHEMA app", &["app.*:ddl"], &[]),
            ("ALTER SCHEMA app RENAME TO app2", &["app.*:ddl", "app2.*:ddl"], &[]),
            ("CREATE SEQUENCE seq OWNED BY t.id", &["seq:ddl", "t:ddl"], &[]),
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
}
