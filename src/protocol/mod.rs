//! The PostgreSQL wire protocol as pgward needs it: framing, startup negotiation, TLS,
//! password exchanges and the messages pgward writes itself.

pub mod error;
pub mod frame;
pub mod messages;
pub mod scram;
pub mod startup;
pub mod tls;

pub use error::ProxyError;
pub use frame::{Frame, FrameError, FrameReader, FrameWriter, Stream};
