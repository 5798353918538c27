//! Data-modifying statements: INSERT, UPDATE, DELETE, MERGE and COPY, with the value
//! targets their assignments and inserted rows imply.

use sqlparser::ast::{
    Assignment, AssignmentTarget, ConflictTarget, CopyLegacyCsvOption, CopyLegacyOption,
    CopyOption, CopySource, CopyTarget, Delete, Expr, FromTable, Ident, Insert, MergeAction,
    MergeClause, MergeInsertKind, ObjectName, OnConflictAction, OnInsert, Query, SelectItem,
    SetExpr, Statement, TableFactor, TableObject, TableWithJoins, UpdateTableFromKind,
};

use crate::sql::analysis::{
    Action, AssignTarget, Assigned, ColumnRef, Context, CopyFormat, CopyInfo, Kind, Output,
    RelName, ValueUse,
};

use super::expr::{column_parts, constant, strip_nested, value_source, CONDITION};
use super::{fold, fold_parts, Body, Item, Scope, Source, Walker};

impl Walker<'_> {
    /// The insert into table `index` of `columns` (all of them when the list is empty):
    /// records the uses and returns the folded names.
    fn inserted_columns(&mut self, index: usize, columns: &[Ident]) -> Vec<String> {
        self.info.access(index, Action::Insert);
        self.column_list(index, columns, Action::Insert)
    }

    /// A column list of table `index` used with `action` (an empty list: every column).
    pub(super) fn column_list(
        &mut self,
        index: usize,
        columns: &[Ident],
        action: Action,
    ) -> Vec<String> {
        let columns: Vec<String> = columns.iter().map(fold).collect();
        if columns.is_empty() {
            self.info
                .use_column(ColumnRef::All { table: index }, action);
        }
        for column in &columns {
            let name = column.clone();
            self.info
                .use_column(ColumnRef::Of { table: index, name }, action);
        }
        columns
    }

    // ----- DML -----

    pub(super) fn walk_dml(&mut self, statement: &Statement) -> (Kind, Body) {
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
        let columns = self.inserted_columns(index, &insert.columns);
        if let Some(source) = &insert.source {
            let body = self.walk_query(source);
            self.insert_values(index, &columns, source);
            self.insert_assignments(index, &columns, source, &body);
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
                        Item::other(Some("excluded".into()), Source::Excluded { table: index }),
                    ],
                    hidden: false,
                });
                if let Some(ConflictTarget::Columns(columns)) = &on_conflict.conflict_target {
                    // The unique index compares the stored values: Grouped.
                    for name in self.column_list(index, columns, Action::Select) {
                        let column = ColumnRef::Of { table: index, name };
                        self.add_context(column, Context::Grouped);
                    }
                }
                if let OnConflictAction::DoUpdate(update) = &on_conflict.action {
                    self.info.access(index, Action::Update);
                    self.assignments(index, &update.assignments, Action::Update);
                    if let Some(selection) = &update.selection {
                        self.walk_expr_as(selection, CONDITION);
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
                        ValueUse::Assigned,
                    );
                }
            }
        }
    }

    /// What INSERT writes: each VALUES item, or each result column of its query, into the
    /// listed column (or the column at that position).
    fn insert_assignments(
        &mut self,
        table: usize,
        columns: &[String],
        source: &Query,
        body: &Body,
    ) {
        let target = |position: usize| match columns {
            [] => Some(AssignTarget::Position(position)),
            _ => columns.get(position).cloned().map(AssignTarget::Named),
        };
        if let SetExpr::Values(values) = source.body.as_ref() {
            for row in &values.rows {
                for (position, expr) in row.iter().enumerate() {
                    let Some(target) = target(position) else {
                        break;
                    };
                    let value = self.assigned(expr);
                    self.assign(table, target, value);
                }
            }
            return;
        }
        for (position, out) in body.outputs.iter().enumerate() {
            let value = match (&out.constant, &out.output) {
                (Some(constant), _) => constant.clone(),
                (None, Output::Column(all @ ColumnRef::All { .. })) => {
                    // How many columns the `*` yields needs the catalog: the star's position
                    // (or each listed column from it on) gets the whole table, and the
                    // mapping stops.
                    match columns {
                        [] => self.assign(
                            table,
                            AssignTarget::Position(position),
                            Assigned::Column(all.clone()),
                        ),
                        _ => {
                            for name in columns.iter().skip(position) {
                                let target = AssignTarget::Named(name.clone());
                                self.assign(table, target, Assigned::Column(all.clone()));
                            }
                        }
                    }
                    break;
                }
                (None, Output::Column(column)) => Assigned::Column(column.clone()),
                (None, Output::Expr) => Assigned::Expr,
            };
            let Some(target) = target(position) else {
                break;
            };
            self.assign(table, target, value);
        }
    }

    fn assign(&mut self, table: usize, target: AssignTarget, value: Assigned) {
        self.add_assignment(crate::sql::analysis::Assignment {
            table,
            target,
            value,
        });
    }

    /// What an expression assigned to a column writes.
    fn assigned(&self, expr: &Expr) -> Assigned {
        if let Some(constant) = constant(expr) {
            return constant;
        }
        if let Expr::Identifier(ident) = strip_nested(expr) {
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") {
                return Assigned::Default;
            }
        }
        let Some(parts) = column_parts(expr) else {
            return Assigned::Expr;
        };
        if let Some(column) = self.excluded_column(&parts) {
            return Assigned::Excluded(column);
        }
        match self.output_of(expr) {
            Output::Column(column) if !matches!(column, ColumnRef::All { .. }) => {
                Assigned::Column(column)
            }
            _ => Assigned::Expr,
        }
    }

    /// `excluded.col` in ON CONFLICT DO UPDATE: col.
    fn excluded_column(&self, parts: &[String]) -> Option<String> {
        let [qualifier, column] = parts else {
            return None;
        };
        let qualifier = std::slice::from_ref(qualifier);
        let item = self
            .scopes
            .iter()
            .rev()
            .filter(|scope| !scope.hidden)
            .find_map(|scope| scope.items.iter().find(|item| item.matches(qualifier)))?;
        matches!(item.source, Source::Excluded { .. }).then(|| column.clone())
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
            self.walk_expr_as(selection, CONDITION);
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
            self.walk_expr_as(selection, CONDITION);
        }
        self.walk_order_by_exprs(&delete.order_by, &[]);
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
        self.walk_expr_as(on, CONDITION);
        for clause in clauses {
            if let Some(predicate) = &clause.predicate {
                self.walk_expr_as(predicate, CONDITION);
            }
            let Some(index) = index else {
                continue;
            };
            match &clause.action {
                MergeAction::Insert(insert) => {
                    let columns = self.inserted_columns(index, &insert.columns);
                    match &insert.kind {
                        MergeInsertKind::Values(values) => {
                            for row in &values.rows {
                                for (position, expr) in row.iter().enumerate() {
                                    // A source column inserted as it is.
                                    self.walk_expr_as(expr, Context::Output);
                                    let target = match columns.as_slice() {
                                        [] => AssignTarget::Position(position),
                                        _ => match columns.get(position) {
                                            Some(name) => AssignTarget::Named(name.clone()),
                                            None => continue,
                                        },
                                    };
                                    let value = self.assigned(expr);
                                    self.assign(index, target, value);
                                }
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
                                            ValueUse::Assigned,
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

    /// SET clauses: the target columns get `action`, the values are read (a plain column is
    /// written as it is: Output), and a value assigned directly maps to its column.
    fn assignments(&mut self, table: usize, assignments: &[Assignment], action: Action) {
        for assignment in assignments {
            let targets: Vec<&ObjectName> = match &assignment.target {
                AssignmentTarget::ColumnName(name) => vec![name],
                AssignmentTarget::Tuple(names) => names.iter().collect(),
            };
            // The column each target writes (a field's column for `SET c.f = ...`), and
            // whether it is written whole.
            let mut written: Vec<Option<(String, bool)>> = Vec::new();
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
                written.push(parts.first().map(|first| (first.clone(), parts.len() == 1)));
            }
            let values: Vec<&Expr> = match (columns.len(), strip_nested(&assignment.value)) {
                (1, _) => vec![&assignment.value],
                (n, Expr::Tuple(values)) if n == values.len() => values.iter().collect(),
                _ => Vec::new(),
            };
            if values.is_empty() {
                // `(a, b) = (SELECT ...)`: the subquery's columns are written as they are.
                self.walk_expr_as(&assignment.value, Context::Output);
            }
            for value in &values {
                self.walk_expr_as(value, Context::Output);
            }
            for (position, column) in written.into_iter().enumerate() {
                let Some((name, whole)) = column else {
                    continue;
                };
                let value = match values.get(position) {
                    Some(value) if whole => self.assigned(value),
                    _ => Assigned::Expr,
                };
                self.assign(table, AssignTarget::Named(name), value);
            }
            for (column, value) in columns.into_iter().zip(values) {
                if let (Some(name), Some(value)) = (column, value_source(value)) {
                    self.add_value(value, ColumnRef::Of { table, name }, ValueUse::Assigned);
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

    // ----- COPY -----

    pub(super) fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy_options: &[CopyLegacyOption],
    ) {
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
                    if to {
                        self.add_context(column.clone(), Context::Output);
                    }
                    self.info.use_column(column, action);
                }
                let columns = (!columns.is_empty()).then(|| columns.iter().map(fold).collect());
                self.copy_options(Some(index), columns, options, legacy_options);
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
                self.copy_options(None, None, options, legacy_options);
            }
        }
    }

    /// The data format of a COPY, from its options (`WITH (FORMAT csv, ...)`) or the
    /// pre-9.0 syntax (`WITH CSV HEADER`, `BINARY`, ...). An option that is not PostgreSQL's
    /// (sqlparser reads Redshift's too) is not understood.
    fn copy_options(
        &mut self,
        table: Option<usize>,
        columns: Option<Vec<String>>,
        options: &[CopyOption],
        legacy_options: &[CopyLegacyOption],
    ) {
        let mut copy = CopyInfo {
            table,
            columns,
            format: CopyFormat::Text,
            delimiter: None,
            null: None,
            header: false,
            quote: None,
            escape: None,
            other_options: false,
        };
        for option in options {
            match option {
                CopyOption::Format(name) => match fold(name).as_str() {
                    "text" => copy.format = CopyFormat::Text,
                    "csv" => copy.format = CopyFormat::Csv,
                    "binary" => copy.format = CopyFormat::Binary,
                    // PostgreSQL refuses the statement.
                    _ => copy.other_options = true,
                },
                // FREEZE changes nothing in the data.
                CopyOption::Freeze(_) => {}
                CopyOption::Delimiter(delimiter) => copy.delimiter = Some(*delimiter),
                CopyOption::Null(null) => copy.null = Some(null.clone()),
                CopyOption::Header(header) => copy.header = *header,
                CopyOption::Quote(quote) => copy.quote = Some(*quote),
                CopyOption::Escape(escape) => copy.escape = Some(*escape),
                CopyOption::ForceQuote(_)
                | CopyOption::ForceNotNull(_)
                | CopyOption::ForceNull(_)
                | CopyOption::Encoding(_) => copy.other_options = true,
            }
        }
        for option in legacy_options {
            match option {
                CopyLegacyOption::Binary => copy.format = CopyFormat::Binary,
                CopyLegacyOption::Csv(csv_options) => {
                    copy.format = CopyFormat::Csv;
                    for csv_option in csv_options {
                        match csv_option {
                            CopyLegacyCsvOption::Header => copy.header = true,
                            CopyLegacyCsvOption::Quote(quote) => copy.quote = Some(*quote),
                            CopyLegacyCsvOption::Escape(escape) => copy.escape = Some(*escape),
                            CopyLegacyCsvOption::ForceQuote(_)
                            | CopyLegacyCsvOption::ForceNotNull(_) => copy.other_options = true,
                        }
                    }
                }
                CopyLegacyOption::Delimiter(delimiter) => copy.delimiter = Some(*delimiter),
                CopyLegacyOption::Null(null) => copy.null = Some(null.clone()),
                CopyLegacyOption::Header => copy.header = true,
                _ => {
                    self.not_understood();
                    copy.other_options = true;
                }
            }
        }
        self.info.copy = Some(copy);
    }
}
