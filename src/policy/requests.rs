//! From a statement's description and the catalog to the casbin requests it needs allowed:
//! one table-level request (`col = *`) per table and action, one per column it uses.

use std::collections::BTreeSet;

use crate::catalog::Snapshot;
use crate::sql::{Action, ColumnRef, RelName, StatementInfo};

/// One (table, column, action) to ask casbin about; `tbl` is `schema.table` or `*` for the
/// database as a whole, `col` a column name or `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub tbl: String,
    pub col: String,
    pub act: Action,
}

/// How unqualified relation names are found.
pub struct Lookup<'a> {
    pub snapshot: &'a Snapshot,
    /// The client's search_path (already split and with `$user` expanded).
    pub path: &'a [String],
    /// false when the client may have changed its search_path in a way pgward has not read
    /// back yet (a SET earlier in the same transaction or string): an unqualified name then
    /// stands for every relation of that name in any schema.
    pub path_certain: bool,
}

/// The requests of one statement, and whether a relation was missing from the catalog (the
/// caller may want a fresher catalog and ask again).
pub fn requests(info: &StatementInfo, lookup: &Lookup) -> (BTreeSet<Request>, bool) {
    let mut missing = false;
    let tables: Vec<Vec<String>> = info
        .tables
        .iter()
        .map(|name| {
            let (resolved, found) = resolve(name, lookup);
            missing |= !found;
            resolved
        })
        .collect();
    let mut out = BTreeSet::new();
    for &(table, act) in &info.accesses {
        for tbl in &tables[table] {
            out.insert(Request {
                tbl: tbl.clone(),
                col: "*".into(),
                act,
            });
        }
    }
    for used in &info.columns {
        for (tbl, col) in columns_of(&used.column, &tables, lookup.snapshot) {
            out.insert(Request {
                tbl,
                col,
                act: used.action,
            });
        }
    }
    (out, missing)
}

/// `schema.name` of each relation `name` may stand for, and whether the catalog knows it.
/// A name the catalog lacks resolves where PostgreSQL would create it (the first schema of
/// the path), so CREATE TABLE and a table made moments ago by someone else are named right.
pub fn resolve(name: &RelName, lookup: &Lookup) -> (Vec<String>, bool) {
    if name.is_database() {
        return (vec!["*".into()], true);
    }
    let qualified = |schema: &str| format!("{schema}.{}", name.name);
    if let Some(schema) = &name.schema {
        let found = lookup.snapshot.columns(schema, &name.name).is_some();
        return (vec![qualified(schema)], found);
    }
    let first = lookup.path.first().map_or("public", String::as_str);
    if !lookup.path_certain {
        let mut all: Vec<String> = lookup
            .snapshot
            .schemas_with(&name.name)
            .into_iter()
            .map(qualified)
            .collect();
        let found = !all.is_empty();
        let created = qualified(first);
        if !all.contains(&created) {
            all.push(created);
        }
        return (all, found);
    }
    match lookup.snapshot.find(name, lookup.path) {
        Some(schema) => (vec![qualified(&schema)], true),
        None => (vec![qualified(first)], false),
    }
}

/// The (`schema.table`, column) pairs a column reference stands for.
pub fn columns_of(
    column: &ColumnRef,
    tables: &[Vec<String>],
    snapshot: &Snapshot,
) -> Vec<(String, String)> {
    let known = |tbl: &str| -> Option<&[String]> {
        let (schema, name) = tbl.split_once('.')?;
        snapshot.columns(schema, name)
    };
    match column {
        ColumnRef::Of { table, name } => tables[*table]
            .iter()
            .map(|tbl| (tbl.clone(), name.clone()))
            .collect(),
        ColumnRef::All { table } => tables[*table]
            .iter()
            .flat_map(|tbl| {
                known(tbl)
                    .unwrap_or_default()
                    .iter()
                    .map(move |col| (tbl.clone(), col.clone()))
            })
            .collect(),
        ColumnRef::Unqualified { scopes, name } => {
            // The innermost scope with a table that has the column owns it. When no known
            // table has it but some candidate is unknown, every candidate is charged with it.
            let mut any_unknown = false;
            for scope in scopes {
                let owners: Vec<(String, String)> = scope
                    .iter()
                    .flat_map(|&t| tables[t].iter())
                    .filter(|tbl| match known(tbl) {
                        Some(cols) => cols.iter().any(|c| c == name),
                        None => {
                            any_unknown = true;
                            false
                        }
                    })
                    .map(|tbl| (tbl.clone(), name.clone()))
                    .collect();
                if !owners.is_empty() {
                    return owners;
                }
            }
            if !any_unknown {
                return Vec::new();
            }
            scopes
                .iter()
                .flatten()
                .flat_map(|&t| tables[t].iter())
                .map(|tbl| (tbl.clone(), name.clone()))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Kind;

    fn snapshot() -> Snapshot {
        Snapshot::from_rows(
            [
                ("public", "customers", Some("id")),
                ("public", "customers", Some("name")),
                ("public", "customers", Some("ssn")),
                ("public", "orders", Some("id")),
                ("public", "orders", Some("customer_id")),
                ("s2", "customers", Some("id")),
                ("s2", "customers", Some("secret")),
            ],
            vec!["public".into()],
        )
    }

    fn rel(name: &str) -> RelName {
        RelName {
            schema: None,
            name: name.into(),
        }
    }

    fn render(set: &BTreeSet<Request>) -> Vec<String> {
        set.iter()
            .map(|r| format!("{}.{}:{}", r.tbl, r.col, r.act.as_str()))
            .collect()
    }

    #[test]
    fn star_expands_and_unqualified_columns_find_their_table() {
        let snapshot = snapshot();
        let path = vec!["public".to_owned()];
        let lookup = Lookup {
            snapshot: &snapshot,
            path: &path,
            path_certain: true,
        };
        let mut info = StatementInfo::new(Kind::Select);
        let c = info.table(rel("customers"));
        let o = info.table(rel("orders"));
        info.use_column(ColumnRef::All { table: o }, Action::Select);
        info.use_column(
            ColumnRef::Unqualified {
                scopes: vec![vec![c, o]],
                name: "ssn".into(),
            },
            Action::Select,
        );
        info.use_column(
            ColumnRef::Unqualified {
                scopes: vec![vec![c, o]],
                name: "some_alias".into(),
            },
            Action::Select,
        );
        let (set, missing) = requests(&info, &lookup);
        assert!(!missing);
        assert_eq!(
            render(&set),
            [
                "public.customers.*:select",
                "public.customers.ssn:select",
                "public.orders.*:select",
                "public.orders.customer_id:select",
                "public.orders.id:select",
            ]
        );
    }

    #[test]
    fn an_uncertain_path_charges_every_schema_and_a_missing_table_is_reported() {
        let snapshot = snapshot();
        let path = vec!["public".to_owned()];
        let mut info = StatementInfo::new(Kind::Select);
        let c = info.table(rel("customers"));
        info.use_column(
            ColumnRef::Of {
                table: c,
                name: "secret".into(),
            },
            Action::Select,
        );
        let uncertain = Lookup {
            snapshot: &snapshot,
            path: &path,
            path_certain: false,
        };
        let (set, _) = requests(&info, &uncertain);
        assert!(set
            .iter()
            .any(|r| r.tbl == "s2.customers" && r.col == "secret"));
        assert!(set
            .iter()
            .any(|r| r.tbl == "public.customers" && r.col == "secret"));

        let mut info = StatementInfo::new(Kind::Insert);
        let n = info.table(rel("brand_new"));
        info.use_column(ColumnRef::All { table: n }, Action::Insert);
        let certain = Lookup {
            path_certain: true,
            ..uncertain
        };
        let (set, missing) = requests(&info, &certain);
        assert!(missing);
        assert_eq!(render(&set), ["public.brand_new.*:insert"]);
    }
}
