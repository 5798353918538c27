//! Prepared statements in transaction mode. A client's named statement is prepared on
//! whichever server connection serves it, under a name pgward derives from the statement text
//! parameter types, search_path and role, so clients running the same statement share one
//! server-side copy.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::BytesMut;

use super::sqlscan::Effects;
use crate::protocol::messages;
use crate::sql::RouteSetting;

#[derive(Debug)]
pub struct Statement {
    /// In the client's encoding.
    pub query: Vec<u8>,
    /// Encoded parameter type list of the client's Parse (count + OIDs).
    pub param_types: Vec<u8>,
    /// The client's search_path when it parsed the statement (None: the login's default).
    /// PostgreSQL parses a statement again under the search_path of each execution, so
    /// clients whose paths differ (schema per tenant) each need their own copy: a shared one
    /// would be refused at every switch where the result shape differs, "cached plan must not
    /// change result type".
    pub search_path: Option<String>,
    /// The client's SET ROLE, if any: `$user` in a search_path is that role.
    pub role: Option<String>,
    pub hash: u64,
    pub server_name: String,
    /// What executing it may change in the server session; applied at every Bind, because
    /// a statement is often prepared in one transaction and executed in another.
    pub effects: Effects,
    /// Certainly only reads (see `sql::Class::Read`): may run on a replica.
    pub reads: bool,
    /// The statement is `SET pgward.route = ...` (or RESET).
    pub route_setting: Option<RouteSetting>,
    /// When the client parsed it, in the order of all Parses pgward has seen (see `PARSES`).
    pub parsed: u64,
}

/// Numbers every client Parse. A server copy made for an earlier Parse may predate a schema
/// change the client's own Parse came after; PostgreSQL would have parsed the client's text
/// afresh, so such a copy is made again before the client uses it (`Session::prepare_on_server`).
static PARSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Two statements are the same when PostgreSQL would prepare the same thing; what pgward
/// derives from them (effects, routing, when it was parsed) does not count.
impl PartialEq for Statement {
    fn eq(&self, other: &Statement) -> bool {
        self.query == other.query
            && self.param_types == other.param_types
            && self.search_path == other.search_path
            && self.role == other.role
    }
}

impl Eq for Statement {}

impl Statement {
    /// `effects` and `reads` come from the analysis of `query` the caller already made.
    pub fn new(
        query: &[u8],
        param_types: &[u8],
        (search_path, role): (Option<&str>, Option<&str>),
        effects: Effects,
        reads: bool,
        route_setting: Option<RouteSetting>,
    ) -> Arc<Statement> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        query.hash(&mut h);
        param_types.hash(&mut h);
        search_path.hash(&mut h);
        role.hash(&mut h);
        let hash = h.finish();
        Arc::new(Statement {
            query: query.to_vec(),
            param_types: param_types.to_vec(),
            search_path: search_path.map(str::to_owned),
            role: role.map(str::to_owned),
            hash,
            server_name: format!("pgward_{hash:016x}"),
            effects,
            reads,
            route_setting,
            parsed: PARSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Writes a Parse for this statement under `name`.
    pub fn write_parse(&self, buf: &mut BytesMut, name: &str) {
        messages::write_parse(buf, name, &self.query, &self.param_types);
    }
}
