//! pgward: a PostgreSQL proxy. See README.md for the pipeline and DESIGN notes.


pub mod config;
pub mod daemon;
pub mod pool;
pub mod protocol;
pub mod session;

