//! Where things are in a config file: the byte ranges of every key, value, table and array
//! element, from a second parse with toml_edit (which keeps spans), so that any message about
//! the config can name a line and column.
//!
//! Paths are the keys from the top joined with dots, array indexes as numbers:
//! `pool.mode`, `backends.1.role`, `auth.admin_users.0`.

use std::collections::HashMap;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Key, Table, Value};

/// Line and column (both from 1; the column counts characters) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `key = value`, also inside inline tables.
    KeyValue,
    /// A `[table]` or one `[[array]]` entry: its header.
    Table,
    /// An element of an inline array.
    Element,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
}

impl Entry {
    /// Where a message about the key (or the table) points.
    pub fn key_start(&self) -> Option<usize> {
        match self.kind {
            Kind::Table => self.value.as_ref().or(self.key.as_ref()),
            Kind::KeyValue | Kind::Element => self.key.as_ref().or(self.value.as_ref()),
        }
        .map(|r| r.start)
    }

    /// Where a message about the value points.
    pub fn value_start(&self) -> Option<usize> {
        self.value.as_ref().or(self.key.as_ref()).map(|r| r.start)
    }

    /// All of it: key, value, and for a table its header and body.
    pub fn range(&self) -> Option<Range<usize>> {
        let spans = [&self.key, &self.value];
        let start = spans
            .iter()
            .filter_map(|s| s.as_ref())
            .map(|s| s.start)
            .min()?;
        let end = spans
            .iter()
            .filter_map(|s| s.as_ref())
            .map(|s| s.end)
            .max()?;
        Some(start..end)
    }
}

/// Every entry of a document by path, in document order.
#[derive(Debug, Default)]
pub struct Spans {
    entries: Vec<Entry>,
    by_path: HashMap<String, usize>,
}

pub fn child(parent: &str, segment: impl std::fmt::Display) -> String {
    if parent.is_empty() {
        segment.to_string()
    } else {
        format!("{parent}.{segment}")
    }
}

/// Is `path` the entry `ancestor` or something inside it?
pub fn within(path: &str, ancestor: &str) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The path without its last segment.
pub fn parent(path: &str) -> &str {
    path.rfind('.').map_or("", |i| &path[..i])
}

impl Spans {
    pub fn new(doc: &ImDocument<&str>) -> Spans {
        let mut spans = Spans::default();
        spans.table("", doc.as_table());
        spans
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.by_path.get(path).map(|&i| &self.entries[i])
    }

    /// The entry at `path`, else its nearest ancestor that is in the file.
    pub fn nearest(&self, mut path: &str) -> Option<&Entry> {
        loop {
            if let Some(entry) = self.get(path) {
                return Some(entry);
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }

    /// The smallest entry of an accepted kind whose range holds `offset`.
    pub fn covering(&self, offset: usize, accept: impl Fn(Kind) -> bool) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| accept(e.kind))
            .filter_map(|e| e.range().map(|r| (e, r)))
            .filter(|(_, r)| r.contains(&offset) || r.start == offset)
            .min_by_key(|(e, r)| (r.len(), std::cmp::Reverse(e.path.len())))
            .map(|(e, _)| e)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn push(&mut self, entry: Entry) {
        self.by_path.insert(entry.path.clone(), self.entries.len());
        self.entries.push(entry);
    }

    fn table(&mut self, path: &str, table: &Table) {
        for (name, item) in table.iter() {
            let key = table.key(name).and_then(Key::span);
            self.item(&child(path, name), key, item);
        }
    }

    fn item(&mut self, path: &str, key: Option<Range<usize>>, item: &Item) {
        match item {
            Item::None => {}
            Item::Value(value) => {
                self.push(Entry {
                    path: path.to_owned(),
                    kind: Kind::KeyValue,
                    key,
                    value: value.span(),
                });
                self.value(path, value);
            }
            Item::Table(table) => {
                self.push(Entry {
                    path: path.to_owned(),
                    kind: Kind::Table,
                    key,
                    value: table.span(),
                });
                self.table(path, table);
            }
            Item::ArrayOfTables(array) => {
                self.push(Entry {
                    path: path.to_owned(),
                    kind: Kind::Table,
                    key,
                    value: array.span(),
                });
                for (i, table) in array.iter().enumerate() {
                    let path = child(path, i);
                    self.push(Entry {
                        path: path.clone(),
                        kind: Kind::Table,
                        key: None,
                        value: table.span(),
                    });
                    self.table(&path, table);
                }
            }
        }
    }

    fn value(&mut self, path: &str, value: &Value) {
        match value {
            Value::Array(array) => {
                for (i, element) in array.iter().enumerate() {
                    let path = child(path, i);
                    self.push(Entry {
                        path: path.clone(),
                        kind: Kind::Element,
                        key: None,
                        value: element.span(),
                    });
                    self.value(&path, element);
                }
            }
            Value::InlineTable(table) => {
                for (name, element) in table.iter() {
                    let key = table.key(name).and_then(Key::span);
                    let path = child(path, name);
                    self.push(Entry {
                        path: path.clone(),
                        kind: Kind::KeyValue,
                        key,
                        value: element.span(),
                    });
                    self.value(&path, element);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[server]
listen = \"127.0.0.1:6432\"

[auth]
admin_users = [\"admin\", \"bob\"]

[[backends]]
name = \"a\"

[[backends]]
name = \"b\"
role = { x = 1 }
";

    fn at(path: &str) -> (usize, usize) {
        let doc = ImDocument::parse(TEXT).unwrap();
        let spans = Spans::new(&doc);
        let entry = spans
            .get(path)
            .unwrap_or_else(|| panic!("{path}: {spans:?}"));
        line_col(TEXT, entry.value_start().unwrap())
    }

    #[test]
    fn keys_values_tables_and_elements_have_places() {
        assert_eq!(at("server.listen"), (2, 10));
        assert_eq!(at("auth.admin_users.1"), (5, 25));
        assert_eq!(at("backends.1"), (10, 1));
        assert_eq!(at("backends.1.name"), (11, 8));
        assert_eq!(at("backends.1.role.x"), (12, 14));
        assert_eq!(at("server"), (1, 1));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\nçé = 1", 6), (2, 3));
        assert_eq!(line_col("", 10), (1, 1));
    }

    #[test]
    fn paths() {
        assert!(within("backends.1.role", "backends.1"));
        assert!(within("backends.1", "backends.1"));
        assert!(!within("backends.10", "backends.1"));
        assert!(within("anything", ""));
        assert_eq!(parent("backends.1.role"), "backends.1");
        assert_eq!(parent("pool"), "");
    }
}
