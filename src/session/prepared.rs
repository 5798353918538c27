//! Prepared statements in transaction mode. A client's named statement is prepared on
//! whichever server connection serves it, under a name pgward derives from the statement text
//! and parameter types, so clients running the same statement share one server-side copy.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::BytesMut;

use super::sqlscan::Effects;
use crate::protocol::messages;

#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    pub query: String,
    /// Encoded parameter type list of the client's Parse (count + OIDs).
    pub param_types: Vec<u8>,
    pub hash: u64,
    pub server_name: String,
    /// What executing it may change in the server session; applied at every Bind, because
    /// a statement is often prepared in one transaction and executed in another.
    pub effects: Effects,
}

impl Statement {
    /// `effects` is the scan of `query` the caller already made (`sqlscan::effects`).
    pub fn new(query: &str, param_types: &[u8], effects: Effects) -> Arc<Statement> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        query.hash(&mut h);
        param_types.hash(&mut h);
        let hash = h.finish();
        Arc::new(Statement {
            query: query.to_owned(),
            param_types: param_types.to_vec(),
            hash,
            server_name: format!("pgward_{hash:016x}"),
            effects,
        })
    }

    /// Writes a Parse for this statement under `name`.
    pub fn write_parse(&self, buf: &mut BytesMut, name: &str) {
        messages::write_parse(buf, name, &self.query, &self.param_types);
    }
}
