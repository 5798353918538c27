//! SQL-level prepared statements (PREPARE / EXECUTE / DEALLOCATE) in transaction mode.
//!
//! They live in the server session, under the client's own names, so pgward carries them
//! the way it carries protocol-level ones: it keeps each client's `PREPARE` text and, before
//! a text that refers to one of its names runs on a server connection, makes that connection
//! hold exactly the client's statement under that name (PREPARE it if missing, DEALLOCATE
//! another client's statement of the same name first). A name the client does not own is
//! removed from the connection, so the client gets PostgreSQL's own "does not exist".
//! The server is the judge of success: after a transaction that prepared or deallocated,
//! the connection's list is read back (`Session::release`).

use std::sync::Arc;

use bytes::BufMut;

use super::pump::Pending;
use super::sqlscan::{self, Deallocate, Effects};
use super::Session;
use crate::pool::server::quote_ident;
use crate::protocol::messages::{self, tag};

/// Name of pgward's own statement and portal for running a PREPARE/DEALLOCATE unseen.
const HIDDEN: &str = "pgward_sqlprep";

impl Session {
    /// Before a client's text runs (a Query, a Parse, or the Bind of a statement whose text
    /// it is): brings this connection's SQL-level statements in line with the names the text
    /// uses, and records the client's PREPAREs and DEALLOCATEs (`fx` is the text's effects).
    /// `simple`: the text is a
    /// simple Query, so pgward's own messages end with a Sync of their own.
    pub(super) fn carry_sql_prepared(&mut self, sql: &[u8], fx: &Effects, simple: bool) {
        if !fx.sql_prepared {
            return;
        }
        let Some(found) = sqlscan::sql_prepared(sql) else {
            return;
        };
        let deallocated = found.deallocates.iter().filter_map(|d| match d {
            Deallocate::Name(name) => Some(name),
            Deallocate::All => None,
        });
        let prepared = found.prepares.iter().map(|(name, _)| name);
        let names: Vec<String> = found
            .uses
            .iter()
            .chain(deallocated)
            .chain(prepared)
            .cloned()
            .collect();
        for name in &names {
            self.align_sql_prepared(name, simple);
        }
        // EXECUTE alone changes nothing; what PREPARE and DEALLOCATE did is read back.
        if !found.prepares.is_empty() || !found.deallocates.is_empty() {
            self.link.statements_dirty = true;
        }
        // What the text leaves behind, as if it all succeeds (a DEALLOCATE before a PREPARE
        // of the same name; the other order, and failures, are put right from the server's
        // list when the transaction ends).
        for d in found.deallocates {
            if let Deallocate::Name(name) = d {
                self.sql_statements.remove(&name);
                self.server_mut().sql_prepared.remove(&name);
            }
        }
        for (name, span) in found.prepares {
            if self.sql_statements.contains_key(&name) {
                continue; // PostgreSQL refuses it: the name is taken
            }
            let text: Arc<[u8]> = Arc::from(&sql[span]);
            self.sql_statements.insert(name.clone(), text.clone());
            self.server_mut()
                .sql_prepared
                .insert(name.clone(), Some(text));
            self.link.sql_prepared_now.push(name);
        }
    }

    /// Makes this connection hold the client's statement `name`, or none of that name when
    /// the client has none. Only the client's own PREPARE counts, not another client's of the
    /// same text: that one was parsed under its client's search_path, and perhaps before a
    /// schema change this client's PREPARE came after.
    fn align_sql_prepared(&mut self, name: &str, simple: bool) {
        let wanted = self.sql_statements.get(name).cloned();
        let held = self.server_mut().sql_prepared.get(name).cloned();
        match (&wanted, &held) {
            (Some(w), Some(Some(h))) if Arc::ptr_eq(w, h) => return,
            (None, None) => return,
            _ => {}
        }
        if held.is_some() {
            let sql = format!("DEALLOCATE {}", quote_ident(name));
            self.hidden_statement(sql.as_bytes(), simple);
            self.server_mut().sql_prepared.remove(name);
        }
        if let Some(text) = wanted {
            self.hidden_statement(&text, simple);
            self.server_mut()
                .sql_prepared
                .insert(name.to_owned(), Some(text));
        }
    }

    /// Runs `sql` on the server ahead of the client's next message; its replies are hidden
    /// but an error is the client's (it would have had it from PostgreSQL at that point).
    fn hidden_statement(&mut self, sql: &[u8], sync: bool) {
        let buf = self.server_mut().writer.buffer();
        messages::write_parse(buf, HIDDEN, sql, &[0, 0]);
        messages::frontend(buf, tag::BIND, |b| {
            b.put_slice(HIDDEN.as_bytes());
            b.put_u8(0);
            b.put_slice(HIDDEN.as_bytes());
            b.put_u8(0);
            b.put_slice(&[0, 0, 0, 0, 0, 0]);
        });
        messages::frontend(buf, tag::EXECUTE, |b| {
            b.put_slice(HIDDEN.as_bytes());
            b.put_u8(0);
            b.put_i32(0);
        });
        for kind in [b'P', b'S'] {
            messages::frontend(buf, tag::CLOSE, |b| {
                b.put_u8(kind);
                b.put_slice(HIDDEN.as_bytes());
                b.put_u8(0);
            });
        }
        if sync {
            messages::frontend(buf, tag::SYNC, |_| {});
        }
        let queue = &mut self.link.queue;
        queue.push_back(Pending::Parse {
            statement: None,
            hidden: true,
        });
        queue.push_back(Pending::Quiet(b'2'));
        queue.push_back(Pending::Quiet(b'C'));
        queue.push_back(Pending::Quiet(b'3'));
        queue.push_back(Pending::Quiet(b'3'));
        if sync {
            queue.push_back(Pending::HiddenSync);
        }
    }

    /// The connection's statements as the server lists them (name, from_sql), after a
    /// transaction that may have prepared or dropped some: pgward's records of the
    /// connection follow, and a client's PREPARE that failed is forgotten.
    pub(super) fn reconcile_prepared(
        &mut self,
        conn: &mut crate::pool::ServerConn,
        rows: Vec<Vec<Option<String>>>,
    ) {
        let mut protocol = std::collections::HashSet::new();
        let mut sql = std::collections::HashSet::new();
        for mut row in rows {
            let (Some(name), Some(from_sql)) = (
                row.get_mut(0).and_then(Option::take),
                row.get_mut(1).and_then(Option::take),
            ) else {
                continue;
            };
            if from_sql == "t" {
                sql.insert(name);
            } else {
                protocol.insert(name);
            }
        }
        conn.prepared
            .retain(|_, s| protocol.contains(&s.server_name));
        conn.sql_prepared.retain(|name, _| sql.contains(name));
        for name in &sql {
            conn.sql_prepared.entry(name.clone()).or_insert(None);
        }
        for name in std::mem::take(&mut self.link.sql_prepared_now) {
            if !sql.contains(&name) {
                self.sql_statements.remove(&name);
            }
        }
    }

    /// A CommandComplete of DEALLOCATE ALL or DISCARD ALL: the client's statements are gone,
    /// and so is every statement on the connection (pgward's own included).
    pub(super) fn all_statements_dropped(&mut self) {
        self.sql_statements.clear();
        let conn = self.server_mut();
        conn.prepared.clear();
        conn.sql_prepared.clear();
    }
}
