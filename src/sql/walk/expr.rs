//! Expressions: walking them, resolving column references, function calls and the built-in
//! function lists, and the values compared with or assigned to columns.

use std::slice;

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, Ident,
    JsonPathElem, ListAggOnOverflow, ObjectName, Subscript, Value, WindowFrameBound, WindowSpec,
    WindowType,
};

use crate::sql::analysis::{
    Action, ColumnRef, CompareOp, FunctionCall, Output, ValueSource, ValueTarget, ValueUse,
};

use super::{
    conclude, exposes, fold, fold_parts, gather, last_name, leaf_tables, Candidates, Item,
    Resolved, Scope, Walker,
};

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

impl Walker<'_> {
    // ----- expressions -----

    pub(super) fn walk_exprs(&mut self, exprs: &[Expr]) {
        for expr in exprs {
            self.walk_expr(expr);
        }
    }

    pub(super) fn walk_expr(&mut self, expr: &Expr) {
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
            Expr::IsDistinctFrom(left, right) => self.comparison(left, right, CompareOp::Distinct),
            Expr::IsNotDistinctFrom(left, right) => {
                self.comparison(left, right, CompareOp::NotDistinct)
            }
            Expr::BinaryOp { left, op, right } => {
                if let Some(op) = comparison_op(op) {
                    self.comparison(left, right, op);
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
                    self.comparison(expr, pattern, CompareOp::Other);
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
            Expr::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, *negated),
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
    fn comparison(&mut self, left: &Expr, right: &Expr, op: CompareOp) {
        self.walk_expr(left);
        self.walk_expr(right);
        self.compare(left, right, op);
    }

    #[inline(never)]
    fn in_list(&mut self, expr: &Expr, list: &[Expr], negated: bool) {
        let op = if negated {
            CompareOp::NotIn
        } else {
            CompareOp::In
        };
        self.walk_expr(expr);
        for item in list {
            self.walk_expr(item);
            self.compare(expr, item, op);
        }
    }

    #[inline(never)]
    fn between(&mut self, expr: &Expr, low: &Expr, high: &Expr) {
        self.walk_expr(expr);
        self.walk_expr(low);
        self.walk_expr(high);
        self.compare(expr, low, CompareOp::Other);
        self.compare(expr, high, CompareOp::Other);
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
                self.compare(operand, &when.condition, CompareOp::CaseWhen);
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
    pub(super) fn walk_function(&mut self, function: &Function) {
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
    pub(super) fn function_arg(&mut self, arg: &FunctionArg, counts: bool) {
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

    pub(super) fn walk_window(&mut self, spec: &WindowSpec) {
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

    pub(super) fn builtin(&mut self, name: &str) {
        self.record_function(&ObjectName::from(vec![Ident::new(name)]));
    }

    pub(super) fn record_function(&mut self, name: &ObjectName) {
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
    pub(super) fn column(&mut self, parts: &[String]) {
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

    pub(super) fn output_of(&self, expr: &Expr) -> Output {
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
    fn compare(&mut self, left: &Expr, right: &Expr, op: CompareOp) {
        if let (Expr::Tuple(lefts), Expr::Tuple(rights)) = (strip_value(left), strip_value(right)) {
            if lefts.len() == rights.len() {
                for (left, right) in lefts.iter().zip(rights) {
                    self.compare(left, right, op);
                }
            }
            return;
        }
        let target = match (value_source(left), value_source(right)) {
            (None, Some(value)) => self.value_column(left).map(|column| (value, column, false)),
            (Some(value), None) => self.value_column(right).map(|column| (value, column, true)),
            _ => None,
        };
        if let Some((value, column, value_first)) = target {
            let usage = ValueUse::Compared { op, value_first };
            self.add_value(value, column, usage);
        }
    }

    pub(super) fn add_value(&mut self, value: ValueSource, column: ColumnRef, usage: ValueUse) {
        // A literal that cannot be located cannot be rewritten (encrypted) in place.
        if let ValueSource::Literal { line: 0, .. } = value {
            self.not_understood();
        }
        let target = ValueTarget {
            value,
            column,
            usage,
        };
        if !self.info.values.contains(&target) {
            self.info.values.push(target);
        }
    }
}

fn is_value_function(ident: &Ident) -> bool {
    ident.quote_style.is_none()
        && VALUE_FUNCTIONS.contains(&ident.value.to_ascii_lowercase().as_str())
}

/// The comparison a binary operator makes between a column and a value, if any.
fn comparison_op(op: &sqlparser::ast::BinaryOperator) -> Option<CompareOp> {
    use sqlparser::ast::BinaryOperator;
    match op {
        BinaryOperator::Eq => Some(CompareOp::Eq),
        BinaryOperator::NotEq => Some(CompareOp::NotEq),
        BinaryOperator::Lt | BinaryOperator::LtEq | BinaryOperator::Gt | BinaryOperator::GtEq => {
            Some(CompareOp::Other)
        }
        _ => None,
    }
}

/// The expression under parentheses, casts and COLLATE.
pub(super) fn strip_value(mut expr: &Expr) -> &Expr {
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
pub(super) fn value_source(expr: &Expr) -> Option<ValueSource> {
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
