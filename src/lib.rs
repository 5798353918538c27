//! pgward: a PostgreSQL proxy. See README.md for the pipeline and the module map.

pub mod admin;
pub mod cache;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod pool;
pub mod protocol;
pub mod route;
pub mod session;
pub mod sql;
pub mod state;

/// The hasher of the caches keyed by what clients send (statement texts, policy decisions,
/// result-cache keys): seeded per process like std's RandomState, at a fraction of
/// SipHash's cost per lookup.
pub type ClientKeyHasher = foldhash::quality::RandomState;
