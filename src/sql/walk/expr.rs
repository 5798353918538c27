//! Expressions: walking them, resolving column references, function calls and the built-in
//! function lists, and the values compared with or assigned to columns.

use std::slice;

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArguments, Ident, JsonPathElem, ListAggOnOverflow, ObjectName,
    Query, Subscript, UnaryOperator, Value, WindowFrameBound, WindowSpec, WindowType,
};

use crate::sql::analysis::{
    Action, Assigned, ColumnRef, CompareOp, Context, FunctionCall, Output, ValueSource,
    ValueTarget, ValueUse,
};

use super::{
    add_carry, conclude, exposes, fold, fold_parts, gather, item_carries, last_name, leaf_tables,
    Candidates, Carry, Item, Resolved, Scope, Walker,
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

/// The place of a column occurrence when no rule names it: computed, fail-closed.
pub(super) const EXPRESSION: Context = Context::Computed("an expression");
pub(super) const CONDITION: Context = Context::Computed("a condition");
pub(super) const ORDER_BY: Context = Context::Computed("ORDER BY");
const FUNCTION_CALL: Context = Context::Computed("a function call");
const OPERATOR: Context = Context::Computed("an operator");
const CASE: Context = Context::Computed("a CASE expression");
const RANGE: Context = Context::Computed("a range comparison");
const LIKE: Context = Context::Computed("LIKE");
/// A column compared with something that is neither a value nor a plain column.
const COMPARED_WITH_EXPRESSION: &str = "a comparison with an expression";

/// One side of an equality comparison, for contexts.
enum Operand {
    /// `$n` or a literal.
    Value(ValueSource),
    /// A plain column reference: what it carries (its value targets come from `compare`).
    Columns(Vec<Carry>),
    /// A subquery's only result column: what it carries (its value targets come from `pair`).
    Result(Vec<Carry>),
    Other,
}

impl Walker<'_> {
    // ----- expressions -----

    pub(super) fn walk_exprs(&mut self, exprs: &[Expr]) {
        for expr in exprs {
            self.walk_expr(expr);
        }
    }

    /// Walks an expression whose place names no context: its columns are `Computed`.
    pub(super) fn walk_expr(&mut self, expr: &Expr) {
        self.walk_expr_as(expr, &EXPRESSION);
    }

    /// Walks an expression in place `context`: the context of the expression itself if it is
    /// a column reference (parentheses are transparent); its sub-expressions get the context
    /// of their own place, `Computed` unless a rule says otherwise.
    pub(super) fn walk_expr_as(&mut self, expr: &Expr, context: &Context) {
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
                self.column(&[fold(ident)], context);
            }
            Expr::CompoundIdentifier(idents) => {
                let parts: Vec<String> = idents.iter().map(fold).collect();
                self.column(&parts, context);
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                self.field_access(root, access_chain, context)
            }
            Expr::Nested(inner) => self.walk_expr_as(inner, context),
            Expr::JsonAccess { value, path } => {
                self.walk_expr_as(value, &OPERATOR);
                for element in &path.path {
                    if let JsonPathElem::Bracket { key } = element {
                        self.walk_expr(key);
                    }
                }
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                self.walk_expr_as(inner, &Context::NullTest)
            }
            Expr::IsFalse(inner)
            | Expr::IsNotFalse(inner)
            | Expr::IsTrue(inner)
            | Expr::IsNotTrue(inner)
            | Expr::IsUnknown(inner)
            | Expr::IsNotUnknown(inner) => self.walk_expr_as(inner, &OPERATOR),
            Expr::UnaryOp { op, expr: inner } => {
                let context = match op {
                    UnaryOperator::Not => &CONDITION,
                    _ => &OPERATOR,
                };
                self.walk_expr_as(inner, context);
            }
            Expr::Collate { expr: inner, .. } => {
                self.walk_expr_as(inner, &Context::Computed("a collation"))
            }
            Expr::IsNormalized { expr: inner, .. } => self.walk_expr_as(inner, &FUNCTION_CALL),
            Expr::AtTimeZone {
                timestamp,
                time_zone,
            } => {
                self.walk_expr_as(timestamp, &OPERATOR);
                self.walk_expr_as(time_zone, &OPERATOR);
            }
            Expr::IsDistinctFrom(left, right) => self.comparison(left, right, CompareOp::Distinct),
            Expr::IsNotDistinctFrom(left, right) => {
                self.comparison(left, right, CompareOp::NotDistinct)
            }
            // Left-deep chains of operators recurse once per operator: one frame each.
            Expr::BinaryOp { left, op, right } => match operand_context(op) {
                Some(context) => {
                    self.walk_expr_as(left, context);
                    self.walk_expr_as(right, context);
                }
                None => self.binary_comparison(left, op, right),
            },
            Expr::Like {
                any, expr, pattern, ..
            }
            | Expr::ILike {
                any, expr, pattern, ..
            } => {
                self.walk_expr_as(expr, &LIKE);
                self.walk_expr_as(pattern, &LIKE);
                if !*any {
                    self.compare(expr, pattern, CompareOp::Other);
                }
            }
            Expr::SimilarTo { expr, pattern, .. } | Expr::RLike { expr, pattern, .. } => {
                self.walk_expr_as(expr, &LIKE);
                self.walk_expr_as(pattern, &LIKE);
            }
            Expr::AnyOp { left, right, .. } | Expr::AllOp { left, right, .. } => {
                self.walk_expr_as(left, &OPERATOR);
                self.walk_expr_as(right, &OPERATOR);
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, *negated),
            Expr::InSubquery {
                expr,
                subquery,
                negated,
            } => self.in_subquery(expr, subquery, *negated),
            Expr::InUnnest {
                expr, array_expr, ..
            } => {
                self.walk_expr_as(expr, &OPERATOR);
                self.walk_expr_as(array_expr, &OPERATOR);
            }
            Expr::Between {
                expr, low, high, ..
            } => self.between(expr, low, high),
            Expr::Cast { expr, .. } => self.walk_expr_as(expr, &Context::Computed("a cast")),
            Expr::Convert { expr, styles, .. } => {
                self.builtin("convert");
                self.walk_expr_as(expr, &FUNCTION_CALL);
                self.walk_exprs(styles);
            }
            Expr::Extract { expr, .. } => {
                // date_part on timestamptz depends on the TimeZone setting: stable.
                self.builtin("extract");
                self.walk_expr_as(expr, &FUNCTION_CALL);
            }
            Expr::Ceil { expr, .. } => {
                self.builtin("ceil");
                self.walk_expr_as(expr, &FUNCTION_CALL);
            }
            Expr::Floor { expr, .. } => {
                self.builtin("floor");
                self.walk_expr_as(expr, &FUNCTION_CALL);
            }
            Expr::Position { expr, r#in } => {
                self.builtin("position");
                self.walk_expr_as(expr, &FUNCTION_CALL);
                self.walk_expr_as(r#in, &FUNCTION_CALL);
            }
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                self.builtin("substring");
                self.walk_expr_as(expr, &FUNCTION_CALL);
                for part in [substring_from, substring_for].into_iter().flatten() {
                    self.walk_expr_as(part, &FUNCTION_CALL);
                }
            }
            Expr::Trim {
                expr,
                trim_what,
                trim_characters,
                ..
            } => {
                self.builtin("trim");
                self.walk_expr_as(expr, &FUNCTION_CALL);
                if let Some(what) = trim_what {
                    self.walk_expr_as(what, &FUNCTION_CALL);
                }
                for characters in trim_characters.iter().flatten() {
                    self.walk_expr_as(characters, &FUNCTION_CALL);
                }
            }
            Expr::Overlay {
                expr,
                overlay_what,
                overlay_from,
                overlay_for,
            } => {
                self.builtin("overlay");
                self.walk_expr_as(expr, &FUNCTION_CALL);
                self.walk_expr_as(overlay_what, &FUNCTION_CALL);
                self.walk_expr_as(overlay_from, &FUNCTION_CALL);
                if let Some(overlay_for) = overlay_for {
                    self.walk_expr_as(overlay_for, &FUNCTION_CALL);
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
            Expr::Exists { subquery, .. } => {
                self.walk_query(subquery);
            }
            Expr::Subquery(subquery) => {
                // A scalar subquery is its result column's value.
                let body = self.walk_query(subquery);
                for out in &body.outputs {
                    self.add_carries(&out.sources, context);
                }
            }
            Expr::GroupingSets(sets) | Expr::Cube(sets) | Expr::Rollup(sets) => {
                for expr in sets.iter().flatten() {
                    self.walk_expr_as(expr, &Context::Grouped);
                }
            }
            Expr::Tuple(exprs) => {
                // `GROUP BY (a, b)` groups by a and b; elsewhere a row is built.
                // `(a, b) IS NULL` tests each.
                let context = match context {
                    Context::Grouped => &Context::Grouped,
                    Context::NullTest => &Context::NullTest,
                    _ => &Context::Computed("a row constructor"),
                };
                for expr in exprs {
                    self.walk_expr_as(expr, context);
                }
            }
            Expr::Array(array) => {
                for expr in &array.elem {
                    self.walk_expr_as(expr, &Context::Computed("an array constructor"));
                }
            }
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
                    self.column(&parts, &EXPRESSION);
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
            Expr::Wildcard(_) => self.whole_scope(context),
            Expr::QualifiedWildcard(name, _) => self.qualified_star(name, None, context),
        }
    }

    /// `=`, `<>` and range comparisons.
    #[inline(never)]
    fn binary_comparison(&mut self, left: &Expr, op: &BinaryOperator, right: &Expr) {
        match op {
            BinaryOperator::Eq => self.comparison(left, right, CompareOp::Eq),
            BinaryOperator::NotEq => self.comparison(left, right, CompareOp::NotEq),
            _ => {
                self.walk_expr_as(left, &RANGE);
                self.walk_expr_as(right, &RANGE);
                self.compare(left, right, CompareOp::Other);
            }
        }
    }

    /// `(t).c`, `(t.c).f`, `c[1]`: leading field names after a plain name extend it as
    /// name parts (so `(t).c` is column c of t); subscripts are walked.
    #[inline(never)]
    fn field_access(
        &mut self,
        root: &Expr,
        chain: &[sqlparser::ast::AccessExpr],
        context: &Context,
    ) {
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
        // A subscript or a field of something else computes on the value.
        let context = if rest.is_empty() { context } else { &OPERATOR };
        match parts {
            Some(parts) => self.column(&parts, context),
            None => self.walk_expr_as(root, &OPERATOR),
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

    /// One side of an equality: a plain column reference is resolved (its uses recorded)
    /// but its context is left to the caller; anything else is walked.
    fn operand(&mut self, expr: &Expr) -> Operand {
        if let Some(parts) = column_parts(expr) {
            let carries = self.reference(&parts);
            return if carries.is_empty() {
                Operand::Other
            } else {
                Operand::Columns(carries)
            };
        }
        if let Expr::Subquery(query) = strip_nested(expr) {
            let body = self.walk_query(query);
            return match body.outputs.as_slice() {
                [only] if !only.sources.is_empty() => Operand::Result(only.sources.clone()),
                _ => Operand::Other,
            };
        }
        self.walk_expr(expr);
        // A value under COLLATE changes how the column compares: not a plain equality.
        match value_source(expr) {
            Some(value) if !has_collate(expr) => Operand::Value(value),
            _ => Operand::Other,
        }
    }

    /// Contexts of two operands compared by `op`: Equality for a column compared with a
    /// value, EqualsColumn for two columns, Computed for a column compared with anything
    /// else. A subquery's column compared with a value also gets its value target.
    fn pair(&mut self, left: &Operand, right: &Operand, op: CompareOp) {
        match (left, right) {
            (Operand::Columns(columns) | Operand::Result(columns), Operand::Value(_))
            | (Operand::Value(_), Operand::Columns(columns) | Operand::Result(columns)) => {
                self.add_carries(columns, &Context::Equality)
            }
            (
                Operand::Columns(left) | Operand::Result(left),
                Operand::Columns(right) | Operand::Result(right),
            ) => self.equate(left, right, COMPARED_WITH_EXPRESSION),
            (Operand::Columns(columns) | Operand::Result(columns), Operand::Other)
            | (Operand::Other, Operand::Columns(columns) | Operand::Result(columns)) => {
                self.add_carries(columns, &Context::Computed(COMPARED_WITH_EXPRESSION))
            }
            (Operand::Value(_) | Operand::Other, Operand::Value(_) | Operand::Other) => {}
        }
        let (value, columns, value_first) = match (left, right) {
            (Operand::Result(columns), Operand::Value(value)) => (value, columns, false),
            (Operand::Value(value), Operand::Result(columns)) => (value, columns, true),
            _ => return,
        };
        for carry in columns {
            if carry.lossy.is_none() && !matches!(carry.column, ColumnRef::All { .. }) {
                let usage = ValueUse::Compared { op, value_first };
                self.add_value(*value, carry.column.clone(), usage);
            }
        }
    }

    /// Two sets of columns compared for equality: each gets EqualsColumn naming each of the
    /// other's; with nothing on one side, or a lossy column, Computed(`otherwise`).
    pub(super) fn equate(&mut self, left: &[Carry], right: &[Carry], otherwise: &'static str) {
        if left.is_empty() || right.is_empty() {
            for carry in left.iter().chain(right) {
                self.add_carries(slice::from_ref(carry), &Context::Computed(otherwise));
            }
            return;
        }
        for one in left {
            for other in right {
                for (this, that) in [(one, other), (other, one)] {
                    let context = match (this.lossy, that.lossy) {
                        (Some(why), _) => Context::Computed(why),
                        (None, Some(_)) => Context::Computed(otherwise),
                        (None, None) => Context::EqualsColumn(that.column.clone()),
                    };
                    self.add_context(this.column.clone(), context);
                }
            }
        }
    }

    /// `=`, `<>`, IS [NOT] DISTINCT FROM (row constructors pairwise).
    #[inline(never)]
    fn comparison(&mut self, left: &Expr, right: &Expr, op: CompareOp) {
        if let (Expr::Tuple(lefts), Expr::Tuple(rights)) = (strip_nested(left), strip_nested(right))
        {
            if lefts.len() == rights.len() {
                for (left, right) in lefts.iter().zip(rights) {
                    self.comparison(left, right, op);
                }
                return;
            }
        }
        let left_operand = self.operand(left);
        let right_operand = self.operand(right);
        self.pair(&left_operand, &right_operand, op);
        self.compare(left, right, op);
    }

    /// The operands of a row constructor, or the expression as one operand.
    fn operands(&mut self, expr: &Expr) -> Vec<Operand> {
        match strip_nested(expr) {
            Expr::Tuple(items) => items.iter().map(|item| self.operand(item)).collect(),
            _ => vec![self.operand(expr)],
        }
    }

    #[inline(never)]
    fn in_list(&mut self, expr: &Expr, list: &[Expr], negated: bool) {
        let op = if negated {
            CompareOp::NotIn
        } else {
            CompareOp::In
        };
        let lefts = self.operands(expr);
        for item in list {
            let rights = match strip_nested(item) {
                Expr::Tuple(items) if lefts.len() > 1 => {
                    items.iter().map(|item| self.operand(item)).collect()
                }
                _ if lefts.len() > 1 => {
                    self.walk_expr(item);
                    Vec::new()
                }
                _ => vec![self.operand(item)],
            };
            self.pair_all(&lefts, &rights, op);
            self.compare(expr, item, op);
        }
        if list.is_empty() {
            for left in &lefts {
                self.pair(left, &Operand::Other, op);
            }
        }
    }

    /// `x IN (SELECT y ...)`: x compared with the subquery's result columns.
    #[inline(never)]
    fn in_subquery(&mut self, expr: &Expr, subquery: &Query, negated: bool) {
        let op = if negated {
            CompareOp::NotIn
        } else {
            CompareOp::In
        };
        let lefts = self.operands(expr);
        let body = self.walk_query(subquery);
        let rights: Vec<Operand> = body
            .outputs
            .iter()
            .map(|out| match out.sources.is_empty() {
                true => Operand::Other,
                false => Operand::Result(out.sources.clone()),
            })
            .collect();
        self.pair_all(&lefts, &rights, op);
    }

    /// Pairs a row of operands with another, position by position; when their widths
    /// differ, each left operand is compared with something unknown.
    fn pair_all(&mut self, lefts: &[Operand], rights: &[Operand], op: CompareOp) {
        if rights.len() == lefts.len() {
            for (left, right) in lefts.iter().zip(rights) {
                self.pair(left, right, op);
            }
        } else {
            for left in lefts {
                self.pair(left, &Operand::Other, op);
            }
        }
    }

    #[inline(never)]
    fn between(&mut self, expr: &Expr, low: &Expr, high: &Expr) {
        self.walk_expr_as(expr, &RANGE);
        self.walk_expr_as(low, &RANGE);
        self.walk_expr_as(high, &RANGE);
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
        match operand {
            Some(operand) => {
                // `CASE col WHEN $1 ...` compares col with $1.
                let left = self.operand(operand);
                for when in conditions {
                    let right = self.operand(&when.condition);
                    self.pair(&left, &right, CompareOp::CaseWhen);
                    self.compare(operand, &when.condition, CompareOp::CaseWhen);
                    self.walk_expr_as(&when.result, &CASE);
                }
                if conditions.is_empty() {
                    self.pair(&left, &Operand::Other, CompareOp::CaseWhen);
                }
            }
            None => {
                for when in conditions {
                    self.walk_expr_as(&when.condition, &CASE);
                    self.walk_expr_as(&when.result, &CASE);
                }
            }
        }
        if let Some(otherwise) = otherwise {
            self.walk_expr_as(otherwise, &CASE);
        }
    }

    /// A bare `*` inside an expression reads every column of the current FROM clause.
    fn whole_scope(&mut self, context: &Context) {
        let (tables, carries) = match self.scopes.last() {
            Some(scope) => {
                let mut carries = Vec::new();
                item_carries(&scope.items, &mut carries);
                (leaf_tables(&scope.items), carries)
            }
            None => Default::default(),
        };
        for table in tables {
            self.info
                .use_column(ColumnRef::All { table }, Action::Select);
        }
        self.add_carries(&carries, context);
    }

    #[inline(never)]
    pub(super) fn walk_function(&mut self, function: &Function) {
        self.record_function(&function.name);
        if function.uses_odbc_syntax {
            self.not_understood();
        }
        let counts = last_name(&function.name).is_some_and(|name| name == "count");
        let builtin_count = match fold_parts(&function.name).as_deref() {
            Some([name]) => name == "count",
            Some([schema, name]) => schema == "pg_catalog" && name == "count",
            _ => false,
        };
        // count(col) only tests for NULL, count(DISTINCT col) also groups.
        let context = match &function.args {
            FunctionArguments::List(list) if builtin_count => match list.duplicate_treatment {
                Some(DuplicateTreatment::Distinct) => &Context::Grouped,
                _ => &Context::NullTest,
            },
            _ => &FUNCTION_CALL,
        };
        self.function_arguments(&function.parameters, false, &FUNCTION_CALL);
        self.function_arguments(&function.args, counts, context);
        if let Some(filter) = &function.filter {
            self.walk_expr_as(filter, &CONDITION);
        }
        match &function.over {
            Some(WindowType::WindowSpec(spec)) => self.walk_window(spec),
            Some(WindowType::NamedWindow(_)) | None => {}
        }
        self.walk_order_by_exprs(&function.within_group, &[]);
    }

    fn function_arguments(
        &mut self,
        arguments: &FunctionArguments,
        counts: bool,
        context: &Context,
    ) {
        match arguments {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(query) => {
                // ARRAY(SELECT ...): the function's input is the result column.
                let body = self.walk_query(query);
                for out in &body.outputs {
                    self.add_carries(&out.sources, &FUNCTION_CALL);
                }
            }
            FunctionArguments::List(list) => {
                for arg in &list.args {
                    self.function_arg(arg, counts, context);
                }
                for clause in &list.clauses {
                    match clause {
                        FunctionArgumentClause::OrderBy(exprs) => {
                            self.walk_order_by_exprs(exprs, &[])
                        }
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

    /// One argument in place `context`; `counts` when the function is count, whose `*`
    /// reads no column.
    pub(super) fn function_arg(&mut self, arg: &FunctionArg, counts: bool, context: &Context) {
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
            FunctionArgExpr::Expr(expr) => self.walk_expr_as(expr, context),
            FunctionArgExpr::QualifiedWildcard(name) => self.qualified_star(name, None, context),
            FunctionArgExpr::Wildcard => {
                if !counts {
                    self.whole_scope(context);
                }
            }
        }
    }

    pub(super) fn walk_window(&mut self, spec: &WindowSpec) {
        for expr in &spec.partition_by {
            self.walk_expr_as(expr, &Context::Grouped);
        }
        self.walk_order_by_exprs(&spec.order_by, &[]);
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

    /// An occurrence of a column reference in place `context`: records its uses and its
    /// context.
    pub(super) fn column(&mut self, parts: &[String], context: &Context) {
        let carries = self.reference(parts);
        self.add_carries(&carries, context);
    }

    /// Resolves a column reference and records its uses; returns what it carries.
    pub(super) fn reference(&mut self, parts: &[String]) -> Vec<Carry> {
        let resolved = self.resolve(parts);
        for column in resolved.uses {
            self.info.use_column(column, Action::Select);
        }
        resolved.carries
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
                carries: Vec::new(),
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
                    resolved.field();
                }
                return resolved;
            }
        }
        let mut resolved = self.resolve_unqualified(first);
        resolved.field();
        resolved
    }

    /// An unqualified name: a column of any table in scope, or a whole row when it names a
    /// FROM item (`SELECT t FROM t` returns every column of t).
    fn resolve_unqualified(&self, name: &str) -> Resolved {
        let mut candidates = Candidates::default();
        let mut whole_rows = Vec::new();
        let mut row_carries = Vec::new();
        let qualifier = [name.to_owned()];
        for scope in self.visible_scopes() {
            let mut tables = Vec::new();
            gather(&scope.items, &mut tables, &mut candidates);
            candidates.scopes.push(tables);
            for item in scope.items.iter().filter(|item| item.matches(&qualifier)) {
                for table in leaf_tables(slice::from_ref(item)) {
                    whole_rows.push(ColumnRef::All { table });
                }
                item_carries(slice::from_ref(item), &mut row_carries);
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
        for carry in row_carries {
            add_carry(
                &mut resolved.carries,
                Carry::lossy(carry.column, "a whole-row reference"),
            );
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

    /// What a select-list item carries: the columns of a plain column reference, else nothing
    /// (a computed value's columns got their own contexts).
    pub(super) fn sources_of(&self, expr: &Expr) -> Vec<Carry> {
        match column_parts(expr) {
            Some(parts) => self.resolve(&parts).carries,
            None => Vec::new(),
        }
    }

    /// The columns a value compared with `expr` is meant for, seeing through casts: where
    /// its value comes from, else its first column use; plus every other stored column it may
    /// be (a result column of a set operation in a subquery is either branch's).
    fn value_columns(&self, expr: &Expr) -> Vec<ColumnRef> {
        let parts: Vec<String> = match strip_value(expr) {
            Expr::Identifier(ident) if is_value_function(ident) => return Vec::new(),
            Expr::Identifier(ident) => vec![fold(ident)],
            Expr::CompoundIdentifier(idents) => idents.iter().map(fold).collect(),
            _ => return Vec::new(),
        };
        let resolved = self.resolve(&parts);
        let main = match resolved.output {
            Output::Column(column) if !matches!(column, ColumnRef::All { .. }) => Some(column),
            _ => resolved
                .uses
                .into_iter()
                .find(|column| !matches!(column, ColumnRef::All { .. })),
        };
        let mut columns: Vec<ColumnRef> = main.into_iter().collect();
        for carry in resolved.carries {
            let exact = carry.lossy.is_none() && !matches!(carry.column, ColumnRef::All { .. });
            if exact && !columns.contains(&carry.column) {
                columns.push(carry.column);
            }
        }
        columns
    }

    /// `column <op> value` or `value <op> column` (row constructors pairwise): the value target.
    fn compare(&mut self, left: &Expr, right: &Expr, op: CompareOp) {
        if let (Expr::Tuple(lefts), Expr::Tuple(rights)) = (strip_value(left), strip_value(right)) {
            if lefts.len() == rights.len() {
                for (left, right) in lefts.iter().zip(rights) {
                    self.compare(left, right, op);
                }
            }
            return;
        }
        let (value, columns, value_first) = match (value_source(left), value_source(right)) {
            (None, Some(value)) => (value, self.value_columns(left), false),
            (Some(value), None) => (value, self.value_columns(right), true),
            _ => return,
        };
        for column in columns {
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
        if self.seen_values.insert(target.clone()) {
            self.info.values.push(target);
        }
    }
}

impl Resolved {
    /// The reference names a field of the column (`(t.c).f`): computed on its value.
    fn field(&mut self) {
        self.output = Output::Expr;
        for carry in &mut self.carries {
            carry.lossy.get_or_insert("a field access");
        }
    }
}

/// The place of a binary operator's operands; None for the comparisons that
/// `binary_comparison` handles.
fn operand_context(op: &BinaryOperator) -> Option<&'static Context> {
    match op {
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq => None,
        BinaryOperator::And | BinaryOperator::Or | BinaryOperator::Xor => Some(&CONDITION),
        BinaryOperator::PGRegexMatch
        | BinaryOperator::PGRegexIMatch
        | BinaryOperator::PGRegexNotMatch
        | BinaryOperator::PGRegexNotIMatch
        | BinaryOperator::PGLikeMatch
        | BinaryOperator::PGILikeMatch
        | BinaryOperator::PGNotLikeMatch
        | BinaryOperator::PGNotILikeMatch
        | BinaryOperator::PGStartsWith
        | BinaryOperator::Regexp => Some(&LIKE),
        _ => Some(&OPERATOR),
    }
}

fn is_value_function(ident: &Ident) -> bool {
    ident.quote_style.is_none()
        && VALUE_FUNCTIONS.contains(&ident.value.to_ascii_lowercase().as_str())
}

/// The folded name parts of a plain column reference (under parentheses), else None.
pub(super) fn column_parts(expr: &Expr) -> Option<Vec<String>> {
    match strip_nested(expr) {
        Expr::Identifier(ident)
            if is_value_function(ident)
                || (ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default")) =>
        {
            None
        }
        Expr::Identifier(ident) => Some(vec![fold(ident)]),
        Expr::CompoundIdentifier(idents) => Some(idents.iter().map(fold).collect()),
        _ => None,
    }
}

/// Whether a COLLATE applies to the expression under parentheses and casts.
fn has_collate(mut expr: &Expr) -> bool {
    loop {
        match expr {
            Expr::Collate { .. } => return true,
            Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => expr = inner,
            _ => return false,
        }
    }
}

/// The expression under parentheses.
pub(super) fn strip_nested(mut expr: &Expr) -> &Expr {
    while let Expr::Nested(inner) = expr {
        expr = inner;
    }
    expr
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

/// What a whole item assigns when it is a constant: `$n`, a literal or NULL (casts allowed).
pub(super) fn constant(expr: &Expr) -> Option<Assigned> {
    if let Some(value) = value_source(expr) {
        return Some(Assigned::Value(value));
    }
    match strip_value(expr) {
        Expr::Value(value) if value.value == Value::Null => Some(Assigned::Null),
        _ => None,
    }
}
