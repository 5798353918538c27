//! DDL, admin and utility statements: CREATE / ALTER / DROP, GRANT, COMMENT, SET and the
//! queries nested in DDL.

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterIndexOperation, AlterSchemaOperation, AlterTableOperation, ColumnOption, ColumnOptionDef,
    CommentObject, CreateTableLikeKind, Expr, GrantObjects, Ident, ObjectName, ObjectNamePart,
    ObjectType, Query, RenameTableNameKind, SchemaName, Set, Statement, TableConstraint, Visit,
    Visitor,
};

use crate::sql::analysis::{Action, ColumnRef, Kind, RelName, StatementInfo};

use super::{fold, fold_parts, Walker};

impl Walker<'_> {
    // ----- DDL, admin and utility statements -----

    /// DDL and maintenance statements; anything else is not understood.
    pub(super) fn ddl_statement(&mut self, statement: &Statement) {
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

    pub(super) fn set(&mut self, set: &Set) {
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

    pub(super) fn grant(&mut self, objects: Option<&GrantObjects>) {
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

    pub(super) fn drop(
        &mut self,
        object_type: &ObjectType,
        names: &[ObjectName],
        table: Option<&ObjectName>,
    ) {
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
        self.column_list(index, columns, Action::Select);
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
