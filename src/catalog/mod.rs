//! What the database holds, as far as name resolution needs: schemas, relations and their
//! columns in order, and the search_path a login gets by default.
//!
//! One snapshot per (database, backend user), read from pg_catalog over a connection of its
//! own (never a pool connection, so a client holding the last one cannot wait on itself).
//! Readers take the current snapshot without a lock; a snapshot older than the refresh
//! interval is replaced in the background while readers keep using it. DDL through pgward
//! marks it stale, and the next lookup of a name it lacks waits for a fresh one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::pool::{BackendTarget, Credential, ServerConn, ServerError};
use crate::sql::RelName;

/// Every relation with a column list (tables, views, materialized views, foreign and
/// partitioned tables), one row per column in order; relations without columns get a NULL.
const RELATIONS_SQL: &str = "SELECT n.nspname, c.relname, a.attname, c.oid, a.attnum, a.atttypid \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_catalog.pg_attribute a \
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') \
       AND n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
       AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' \
     ORDER BY n.nspname, c.relname, a.attnum";

const SEARCH_PATH_SQL: &str = "SELECT pg_catalog.current_setting('search_path'), current_user";

/// A lookup that misses waits for a fresh snapshot only when the current one is at least
/// this old (or stale after DDL), so a name that does not exist cannot cause a reload storm.
const MISS_RELOAD_AFTER: Duration = Duration::from_secs(1);

/// The relations of one database.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Changes with every snapshot made, so verdicts cached against one are not reused
    /// against another.
    pub generation: u64,
    /// `schema -> relation -> columns in order`.
    relations: Map<String, Map<String, Vec<String>>>,
    /// The search_path a new session of this login gets, with `$user` expanded.
    pub default_search_path: Vec<String>,
    /// That search_path as written, for a client whose `$user` is another role (SET ROLE).
    pub default_search_path_setting: Option<String>,
    /// Each relation's OID, with its columns' numbers and types (what RowDescription names).
    details: Map<u32, Details>,
    /// `(schema, relation) -> OID`.
    oids: Map<(String, String), u32>,
    loaded_at: Option<Instant>,
}

/// A relation as RowDescription identifies it.
#[derive(Debug)]
struct Details {
    schema: String,
    name: String,
    /// `(attnum, column, type OID)` in column order.
    attributes: Vec<(i16, String, u32)>,
}

/// One row of the catalog query: schema, relation, and the column with its relation OID,
/// number and type, when there is one.
pub type CatalogRow<'a> = (&'a str, &'a str, Option<(&'a str, u32, i16, u32)>);

/// The snapshot's maps: looked up for the tables of every statement the cache or column
/// encryption plan, so with a hasher quicker than SipHash on short names (still seeded per
/// process; only catalog names are inserted).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Source of [`Snapshot::generation`].
static GENERATION: AtomicU64 = AtomicU64::new(1);

impl Snapshot {
    /// A snapshot made from rows of (schema, relation, column or None).
    pub fn from_rows<'a>(
        rows: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
        default_search_path: Vec<String>,
    ) -> Snapshot {
        let mut relations: Map<String, Map<String, Vec<String>>> = Map::default();
        for (schema, relation, column) in rows {
            let columns = relations
                .entry(schema.to_owned())
                .or_default()
                .entry(relation.to_owned())
                .or_default();
            columns.extend(column.map(str::to_owned));
        }
        Snapshot {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            relations,
            default_search_path,
            default_search_path_setting: None,
            details: Map::default(),
            oids: Map::default(),
            loaded_at: Some(Instant::now()),
        }
    }

    /// A snapshot that also knows OIDs, column numbers and types (see [`CatalogRow`]).
    pub fn from_detailed_rows<'a>(
        rows: impl IntoIterator<Item = CatalogRow<'a>> + Clone,
        default_search_path: Vec<String>,
    ) -> Snapshot {
        let mut snapshot = Snapshot::from_rows(
            rows.clone()
                .into_iter()
                .map(|(schema, rel, column)| (schema, rel, column.map(|c| c.0))),
            default_search_path,
        );
        for (schema, rel, column) in rows {
            let Some((column, oid, attnum, type_oid)) = column else {
                continue;
            };
            snapshot
                .oids
                .insert((schema.to_owned(), rel.to_owned()), oid);
            snapshot
                .details
                .entry(oid)
                .or_insert_with(|| Details {
                    schema: schema.to_owned(),
                    name: rel.to_owned(),
                    attributes: Vec::new(),
                })
                .attributes
                .push((attnum, column.to_owned(), type_oid));
        }
        snapshot
    }

    /// `(schema, relation, column)` of a result column RowDescription attributes to the
    /// relation `oid` and column number `attnum`.
    pub fn attribute(&self, oid: u32, attnum: i16) -> Option<(&str, &str, &str)> {
        let details = self.details.get(&oid)?;
        let (_, column, _) = details.attributes.iter().find(|a| a.0 == attnum)?;
        Some((&details.schema, &details.name, column))
    }

    /// The type OID of a column, when the snapshot has the details.
    pub fn column_type(&self, schema: &str, name: &str, column: &str) -> Option<u32> {
        let oid = self.oids.get(&(schema.to_owned(), name.to_owned()))?;
        let details = self.details.get(oid)?;
        details
            .attributes
            .iter()
            .find(|a| a.1 == column)
            .map(|a| a.2)
    }

    /// The columns of `schema.name`, if it exists.
    pub fn columns(&self, schema: &str, name: &str) -> Option<&[String]> {
        self.relations.get(schema)?.get(name).map(Vec::as_slice)
    }

    /// The schemas holding a relation called `name`.
    pub fn schemas_with(&self, name: &str) -> Vec<&str> {
        let mut schemas: Vec<&str> = self
            .relations
            .iter()
            .filter(|(_, rels)| rels.contains_key(name))
            .map(|(schema, _)| schema.as_str())
            .collect();
        schemas.sort_unstable();
        schemas
    }

    /// Whether any schema holds a relation called `name` (`schemas_with` without the list).
    pub fn has_relation_named(&self, name: &str) -> bool {
        self.relations.values().any(|rels| rels.contains_key(name))
    }

    /// Where PostgreSQL finds `name` along `path` (pg_catalog first unless the path places
    /// it), or None when no schema of the path has it.
    pub fn find(&self, name: &RelName, path: &[String]) -> Option<String> {
        if let Some(schema) = &name.schema {
            return self.columns(schema, &name.name).map(|_| schema.clone());
        }
        implicit_path(path)
            .find(|schema| self.columns(schema, &name.name).is_some())
            .map(str::to_owned)
    }

    fn age(&self) -> Duration {
        self.loaded_at.map_or(Duration::MAX, |t| t.elapsed())
    }
}

/// The schemas PostgreSQL searches for an unqualified name: pg_catalog first unless `path`
/// names it, then `path` in order (temporary schemas are not modelled).
pub fn implicit_path(path: &[String]) -> impl Iterator<Item = &str> {
    let catalog_first = !path.iter().any(|s| s == "pg_catalog");
    catalog_first
        .then_some("pg_catalog")
        .into_iter()
        .chain(path.iter().map(String::as_str))
}

/// Parses a search_path value (`"$user", public`) into schema names, folding unquoted ones
/// and expanding `$user`.
pub fn parse_search_path(value: &str, user: &str) -> Vec<String> {
    let mut schemas = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (item, tail) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut item = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if quoted[i + 1..].starts_with('"') {
                        item.push('"');
                        chars.next();
                    } else {
                        end = i + 1;
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            (item, &quoted[end..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_lowercase(), &rest[end..])
        };
        match item.as_str() {
            "$user" => schemas.push(user.to_owned()),
            "" => {}
            _ => schemas.push(item),
        }
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    schemas
}

/// The snapshots of every (database, backend user) seen, shared by all sessions.
#[derive(Default)]
pub struct Catalogs {
    entries: Mutex<HashMap<(String, String), Arc<Entry>>>,
}

/// How to reach a server to read the catalog from.
#[derive(Clone)]
pub struct Source {
    pub target: Arc<BackendTarget>,
    pub user: String,
    pub credential: Credential,
    pub database: String,
}

#[derive(Default)]
pub struct Entry {
    current: ArcSwapOption<Snapshot>,
    /// Set by DDL through pgward: the snapshot may lack what it created.
    stale: AtomicBool,
    /// One load at a time; others wait for it or keep the current snapshot.
    loading: tokio::sync::Mutex<()>,
}

impl Catalogs {
    /// The entry of (database, backend user).
    pub fn entry(&self, database: &str, user: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("catalog lock");
        entries
            .entry((database.to_owned(), user.to_owned()))
            .or_default()
            .clone()
    }

    /// Marks every snapshot of `database` stale (after DDL).
    pub fn invalidate(&self, database: &str) {
        let entries = self.entries.lock().expect("catalog lock");
        for ((db, _), entry) in entries.iter() {
            if db == database {
                entry.stale.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl Entry {
    /// The current snapshot, if any, and whether it is due for a refresh (older than
    /// `refresh`, or stale after DDL). Costs no lock.
    pub fn current(&self, refresh: Duration) -> (Option<Arc<Snapshot>>, bool) {
        let current = self.current.load_full();
        let due = current
            .as_ref()
            .is_none_or(|s| s.age() >= refresh || self.stale.load(Ordering::Relaxed));
        (current, due)
    }

    /// The first snapshot, loaded now (one loader at a time; the others wait for it).
    pub async fn first(&self, source: &Source) -> Result<Arc<Snapshot>, ServerError> {
        Box::pin(self.reload(source, None)).await
    }

    /// A fresh snapshot after a lookup missed a relation, when the current one may be out of
    /// date; otherwise the current one.
    pub async fn after_miss(&self, current: Arc<Snapshot>, source: &Source) -> Arc<Snapshot> {
        if let Some(newer) = self.current.load_full() {
            if newer.generation != current.generation {
                return newer;
            }
        }
        // A load under way (a background refresh after DDL) is waited for.
        let loading = self.loading.try_lock().is_err();
        if !loading && !self.stale.load(Ordering::Relaxed) && current.age() < MISS_RELOAD_AFTER {
            return current;
        }
        match Box::pin(self.reload(source, Some(current.generation))).await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(error = %e, database = %source.database, "catalog reload failed; keeping the previous one");
                current
            }
        }
    }

    /// Replaces the snapshot in the background; readers keep the current one meanwhile.
    pub fn refresh_in_background(self: &Arc<Self>, source: Source) {
        let Ok(guard) = self.loading.try_lock() else {
            return; // a load is already running
        };
        drop(guard);
        let entry = self.clone();
        tokio::spawn(async move {
            let seen = entry.current.load().as_ref().map(|s| s.generation);
            if let Err(e) = entry.reload(&source, seen).await {
                tracing::warn!(error = %e, database = %source.database, "catalog refresh failed; keeping the previous one");
            }
        });
    }

    /// Loads a snapshot unless another task replaced `seen` while this one waited.
    /// A request awaits it boxed: a load (a login and two queries) is rare, and its future
    /// would otherwise take its size in every request's future that may wait for one.
    async fn reload(
        &self,
        source: &Source,
        seen: Option<u64>,
    ) -> Result<Arc<Snapshot>, ServerError> {
        let _loading = self.loading.lock().await;
        if let Some(current) = self.current.load_full() {
            if Some(current.generation) != seen {
                return Ok(current);
            }
        }
        self.stale.store(false, Ordering::Relaxed);
        let snapshot = match load(source).await {
            Ok(snapshot) => Arc::new(snapshot),
            Err(e) => {
                self.stale.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        tracing::debug!(database = %source.database, user = %source.user, generation = snapshot.generation, "catalog loaded");
        self.current.store(Some(snapshot.clone()));
        Ok(snapshot)
    }
}

/// Reads a snapshot over a connection of its own.
async fn load(source: &Source) -> Result<Snapshot, ServerError> {
    let mut conn = ServerConn::connect(
        source.target.clone(),
        &source.user,
        &source.credential,
        &source.database,
    )
    .await?;
    let path_rows = conn.internal_query(SEARCH_PATH_SQL).await?;
    let (path, user) = path_rows
        .first()
        .and_then(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?)))
        .ok_or(ServerError::Unexpected(b'C'))?;
    let rows = conn.internal_query(RELATIONS_SQL).await?;
    fn number<T: std::str::FromStr>(r: &[Option<String>], i: usize) -> Option<T> {
        r.get(i)?.as_deref()?.parse().ok()
    }
    let rows: Vec<CatalogRow> = rows
        .iter()
        .filter_map(|r| {
            let column = r
                .get(2)?
                .as_deref()
                .and_then(|column| Some((column, number(r, 3)?, number(r, 4)?, number(r, 5)?)));
            Some((r.first()?.as_deref()?, r.get(1)?.as_deref()?, column))
        })
        .collect();
    let mut snapshot =
        Snapshot::from_detailed_rows(rows.iter().copied(), parse_search_path(&path, &user));
    snapshot.default_search_path_setting = Some(path);
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(schema: Option<&str>, name: &str) -> RelName {
        RelName {
            schema: schema.map(str::to_owned),
            name: name.into(),
        }
    }

    #[test]
    fn search_path_values() {
        assert_eq!(
            parse_search_path("\"$user\", public", "app"),
            ["app", "public"]
        );
        assert_eq!(
            parse_search_path("Sales, \"Mixed\"\"Q\", pg_catalog", "u"),
            ["sales", "Mixed\"Q", "pg_catalog"]
        );
        assert_eq!(parse_search_path("", "u"), Vec::<String>::new());
    }

    #[test]
    fn resolution_follows_the_path_with_pg_catalog_first() {
        let snapshot = Snapshot::from_rows(
            [
                ("public", "t", Some("a")),
                ("s2", "t", Some("b")),
                ("pg_catalog", "pg_class", Some("oid")),
                ("public", "pg_class", Some("x")),
            ],
            vec!["public".into()],
        );
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            snapshot
                .find(&rel(None, "t"), &path(&["public", "s2"]))
                .as_deref(),
            Some("public")
        );
        assert_eq!(
            snapshot
                .find(&rel(None, "t"), &path(&["s2", "public"]))
                .as_deref(),
            Some("s2")
        );
        assert_eq!(
            snapshot
                .find(&rel(None, "pg_class"), &path(&["public"]))
                .as_deref(),
            Some("pg_catalog")
        );
        assert_eq!(
            snapshot
                .find(&rel(None, "pg_class"), &path(&["public", "pg_catalog"]))
                .as_deref(),
            Some("public")
        );
        assert_eq!(
            snapshot.find(&rel(Some("s2"), "t"), &[]).as_deref(),
            Some("s2")
        );
        assert_eq!(snapshot.find(&rel(None, "nope"), &path(&["public"])), None);
        assert_eq!(snapshot.schemas_with("t"), ["public", "s2"]);
        assert_eq!(snapshot.columns("s2", "t").unwrap(), ["b"]);
    }
}
