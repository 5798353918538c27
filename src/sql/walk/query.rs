//! Queries: WITH and CTEs, set operations, SELECT and its clauses, FROM items and joins, and
//! select lists (the outputs a query offers its user).

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, GroupByWithModifier, Ident, JoinConstraint, JoinOperator,
    LimitClause, LockClause, NamedWindowDefinition, NamedWindowExpr, ObjectName, ObjectNamePart,
    OrderBy, OrderByExpr, OrderByKind, Query, Select, SelectFlavor, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, SetOperator, SetQuantifier, TableAlias, TableFactor,
    TableSampleKind, TableWithJoins, TopQuantity, Value, Values, WildcardAdditionalOptions,
    XmlTableColumnOption,
};

use crate::sql::analysis::{Action, ColumnRef, Context, Output, RelName};

use super::expr::{constant, strip_nested, CONDITION, ORDER_BY};
use super::{
    add_carry, column_ref, conclude, fold, fold_parts, gather, item_carries, last_name,
    leaf_tables, scope_tables, Body, Candidates, Carry, CteDef, Item, OutCol, Scope, Source,
    Walker,
};

const FUNCTION_CALL: Context = Context::Computed("a function call");

impl Walker<'_> {
    // ----- queries -----

    pub(super) fn walk_query(&mut self, query: &Query) -> Body {
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
                self.walk_tail(query, &body.outputs);
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
                // Only UNION ALL compares no rows: UNION, INTERSECT and EXCEPT (with or
                // without ALL) match rows by equality.
                let compares = !matches!(
                    (op, set_quantifier),
                    (
                        SetOperator::Union,
                        SetQuantifier::All | SetQuantifier::AllByName
                    )
                );
                if compares {
                    for out in left.outputs.iter().chain(&right.outputs) {
                        self.add_carries(&out.sources, &Context::Grouped);
                    }
                }
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
                self.add_context(ColumnRef::All { table: index }, Context::Output);
                Body {
                    outputs: vec![OutCol::all(index)],
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
                    ..OutCol::expr()
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
        match &select.distinct {
            // Every result column is compared with the others' rows.
            Some(Distinct::Distinct) => {
                for out in &outputs {
                    self.add_carries(&out.sources, &Context::Grouped);
                }
            }
            Some(Distinct::On(exprs)) => {
                for expr in exprs {
                    self.walk_expr_as(expr, Context::Grouped);
                    self.output_reference(expr, &outputs, &Context::Grouped);
                }
            }
            None => {}
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
            self.walk_expr_as(expr, CONDITION);
        }
        self.walk_exprs(&select.cluster_by);
        self.walk_exprs(&select.distribute_by);
        self.walk_order_by_exprs(&select.sort_by, &outputs);
        match &select.group_by {
            GroupByExpr::All(modifiers) => {
                self.not_understood();
                self.group_modifiers(modifiers);
            }
            GroupByExpr::Expressions(exprs, modifiers) => {
                for expr in exprs {
                    self.walk_expr_as(expr, Context::Grouped);
                    self.output_reference(expr, &outputs, &Context::Grouped);
                }
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
            self.walk_tail(query, &outputs);
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
                GroupByWithModifier::GroupingSets(expr) => {
                    self.walk_expr_as(expr, Context::Grouped)
                }
                _ => self.not_understood(),
            }
        }
    }

    /// ORDER BY, LIMIT, OFFSET and FETCH of a query whose result columns are `outputs`.
    fn walk_tail(&mut self, query: &Query, outputs: &[OutCol]) {
        if let Some(order_by) = &query.order_by {
            self.walk_order_by(order_by, outputs);
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

    fn walk_order_by(&mut self, order_by: &OrderBy, outputs: &[OutCol]) {
        match &order_by.kind {
            OrderByKind::All(_) => self.not_understood(),
            OrderByKind::Expressions(exprs) => self.walk_order_by_exprs(exprs, outputs),
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

    /// Sort keys, which may name a result column of `outputs` by name or position.
    pub(super) fn walk_order_by_exprs(&mut self, exprs: &[OrderByExpr], outputs: &[OutCol]) {
        for order in exprs {
            self.walk_expr_as(&order.expr, ORDER_BY);
            self.output_reference(&order.expr, outputs, &ORDER_BY);
            if let Some(fill) = &order.with_fill {
                self.not_understood();
                for expr in [&fill.from, &fill.to, &fill.step].into_iter().flatten() {
                    self.walk_expr(expr);
                }
            }
        }
    }

    /// An ORDER BY, GROUP BY or DISTINCT ON item that may name a result column, by its name or
    /// its position: an occurrence of what that column carries. (A name that is also an input
    /// column is walked as one too: over-reporting is safe.)
    fn output_reference(&mut self, expr: &Expr, outputs: &[OutCol], context: &Context) {
        let mut carries = Vec::new();
        match strip_nested(expr) {
            Expr::Identifier(ident) => {
                let name = fold(ident);
                for out in outputs
                    .iter()
                    .filter(|out| out.name.as_ref() == Some(&name))
                {
                    carries.extend(out.sources.iter().cloned());
                }
            }
            Expr::Value(value) => {
                if let Value::Number(number, _) = &value.value {
                    let position = number.parse::<usize>().ok().and_then(|n| n.checked_sub(1));
                    if let Some(out) = position.and_then(|position| outputs.get(position)) {
                        carries.extend(out.sources.iter().cloned());
                    }
                }
            }
            _ => {}
        }
        self.add_carries(&carries, context);
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

    pub(super) fn push_item(&mut self, item: Item) {
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

    pub(super) fn walk_table_with_joins(&mut self, from: &TableWithJoins) {
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
                    self.walk_expr_as(match_condition, CONDITION);
                    Some(constraint)
                }
                JoinOperator::CrossApply | JoinOperator::OuterApply => {
                    self.not_understood();
                    None
                }
            };
            match constraint {
                Some(JoinConstraint::On(expr)) => self.walk_expr_as(expr, CONDITION),
                Some(JoinConstraint::Using(names)) => self.join_using(start, split, names),
                Some(JoinConstraint::Natural) => self.natural_join(start),
                Some(JoinConstraint::None) | None => {}
            }
        }
    }

    /// `USING (c)`: c is read from each side; on a side of several tables, from one of them.
    /// Each side's c equals the other's.
    fn join_using(&mut self, start: usize, split: usize, names: &[ObjectName]) {
        let Some(scope) = self.scopes.last() else {
            return;
        };
        let left_items = scope.items.get(start..split).unwrap_or_default();
        let right_items = scope.items.get(split..).unwrap_or_default();
        let left = leaf_tables(left_items);
        let right = leaf_tables(right_items);
        let mut columns = Vec::new();
        for name in names {
            let column = match name.0.as_slice() {
                [part] => part.as_ident().map(fold),
                _ => None,
            };
            let Some(column) = column else {
                columns.push(None);
                continue;
            };
            let carries = (
                side_carries(left_items, &column),
                side_carries(right_items, &column),
            );
            columns.push(Some((column, carries)));
        }
        for column in columns {
            let Some((column, (left_carries, right_carries))) = column else {
                self.not_understood();
                continue;
            };
            for side in [&left, &right] {
                if let Some(column) = column_ref(vec![side.clone()], &column) {
                    self.info.use_column(column, Action::Select);
                }
            }
            self.equate(&left_carries, &right_carries, "a join");
        }
    }

    /// NATURAL JOIN compares the columns both sides share: all of them, conservatively
    /// (which ones needs the catalog, so their contexts are Computed).
    fn natural_join(&mut self, start: usize) {
        let (tables, carries) = match self.scopes.last() {
            Some(scope) => {
                let items = scope.items.get(start..).unwrap_or_default();
                let mut carries = Vec::new();
                item_carries(items, &mut carries);
                (leaf_tables(items), carries)
            }
            None => Default::default(),
        };
        for table in tables {
            self.info
                .use_column(ColumnRef::All { table }, Action::Select);
        }
        self.add_carries(&carries, &Context::Computed("a join"));
    }

    pub(super) fn add_factor(&mut self, factor: &TableFactor) {
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
                        self.function_arg(arg, false, FUNCTION_CALL);
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
                    self.function_arg(arg, false, FUNCTION_CALL);
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
                for expr in array_exprs {
                    self.walk_expr_as(expr, FUNCTION_CALL);
                }
                let width = array_exprs.len() + usize::from(*with_ordinality);
                self.push_function_item(alias.as_ref(), Some("unnest".into()), width);
            }
            TableFactor::JsonTable {
                json_expr,
                columns,
                alias,
                ..
            } => {
                self.walk_expr_as(json_expr, FUNCTION_CALL);
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
                self.walk_expr_as(row_expression, FUNCTION_CALL);
                for argument in &passing.arguments {
                    self.walk_expr_as(&argument.expr, FUNCTION_CALL);
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
    pub(super) fn strip_only<'b>(
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

    // ----- select lists -----

    /// A select-list or RETURNING item: a plain column (or `*`, `t.*`) is returned as it is
    /// (Output).
    pub(super) fn walk_select_item(&mut self, item: &SelectItem, outputs: &mut Vec<OutCol>) {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                self.walk_expr_as(expr, Context::Output);
                outputs.push(self.out_col(expr, expr_name(expr)));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                self.walk_expr_as(expr, Context::Output);
                outputs.push(self.out_col(expr, Some(fold(alias))));
            }
            SelectItem::Wildcard(options) => {
                self.wildcard_options(options);
                let items = self
                    .scopes
                    .last()
                    .map(|scope| scope.items.clone())
                    .unwrap_or_default();
                let start = outputs.len();
                for item in &items {
                    self.expand(item, outputs);
                }
                let carries: Vec<Carry> = outputs
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|out| out.sources.iter().cloned())
                    .collect();
                self.add_carries(&carries, &Context::Output);
            }
            SelectItem::QualifiedWildcard(kind, options) => {
                self.wildcard_options(options);
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        self.qualified_star(name, Some(outputs), Context::Output)
                    }
                    SelectItemQualifiedWildcardKind::Expr(expr) => {
                        // `(composite).*`
                        self.walk_expr_as(expr, Context::Computed("a field access"));
                        outputs.push(OutCol::expr());
                    }
                }
            }
        }
    }

    fn out_col(&self, expr: &Expr, name: Option<String>) -> OutCol {
        OutCol {
            name,
            output: self.output_of(expr),
            sources: self.sources_of(expr),
            constant: constant(expr),
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
                self.info.use_column(all, Action::Select);
                outputs.push(OutCol::all(*index));
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
            Source::Excluded { .. } => {}
        }
    }

    /// `x.*`, in a select list (`outputs`) or as an expression (a whole-row value), in place
    /// `context`.
    pub(super) fn qualified_star(
        &mut self,
        name: &ObjectName,
        outputs: Option<&mut Vec<OutCol>>,
        context: Context,
    ) {
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
            self.column(&parts, &Context::Computed("a field access"));
            if let Some(outputs) = outputs {
                outputs.push(OutCol::expr());
            }
            return;
        }
        let mut expanded = Vec::new();
        for item in &matched {
            self.expand(item, &mut expanded);
        }
        let carries: Vec<Carry> = expanded
            .iter()
            .flat_map(|out| out.sources.iter().cloned())
            .collect();
        self.add_carries(&carries, &context);
        if let Some(outputs) = outputs {
            outputs.extend(expanded);
        }
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

/// Outputs of a set operation: the left branch's where both branches agree; each carries
/// what either branch's does.
fn merge_branches(mut left: Body, right: Body) -> Body {
    if left.outputs.len() == right.outputs.len() {
        for (out, other) in left.outputs.iter_mut().zip(right.outputs) {
            if out.output != other.output {
                out.output = Output::Expr;
            }
            if out.constant != other.constant {
                out.constant = None;
            }
            for carry in other.sources {
                add_carry(&mut out.sources, carry);
            }
        }
    } else {
        // PostgreSQL refuses the statement.
        for out in &mut left.outputs {
            out.output = Output::Expr;
            out.constant = None;
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
            Source::Function { .. } | Source::Excluded { .. } => {}
        }
    }
}

/// What column `column` of one side of a USING join may be.
fn side_carries(items: &[Item], column: &str) -> Vec<Carry> {
    let mut candidates = Candidates::default();
    let mut tables = Vec::new();
    gather(items, &mut tables, &mut candidates);
    candidates.scopes.push(tables);
    conclude(candidates, column).carries
}
