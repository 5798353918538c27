//! Pinning: in transaction mode, a client that creates session state which cannot move to
//! another server connection (a temporary table, a WITH HOLD cursor, a session-level
//! advisory lock, ...) keeps its server connection, on the primary, until that state is gone.
//!
//! Statements that may create such state are spotted lexically (`sqlscan`, on purpose more
//! often than needed); whether the state exists is then asked of the server itself when a
//! transaction that may have released it ends (`PROBE_SQL`), so a false alarm costs one
//! round trip and the client goes back to sharing connections.

use super::sqlscan::{Effects, PinReason};
use super::Session;
use crate::config::{Pinning, PoolMode};
use crate::pool::server::quote_literal;
use crate::protocol::ProxyError;

/// This client's pin, if any. The gauge follows it, also when the session ends.
#[derive(Default)]
pub(super) struct Pin {
    /// Why the client is pinned (the first reason), None when it is not.
    pub(super) reason: Option<PinReason>,
    /// LOAD cannot be undone: the connection stays with the client and is closed after it.
    pub(super) load: bool,
    /// The client stays pinned until it leaves (LOAD, a setting pgward cannot name).
    pub(super) for_good: bool,
    /// The first pin of a client is logged; later ones are only counted.
    logged: bool,
}

impl Pin {
    pub(super) fn is_pinned(&self) -> bool {
        self.reason.is_some()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if self.reason.is_some() {
            crate::metrics::unpinned();
        }
    }
}

impl Session {
    /// Notes what a statement about to run means for pinning: pins the client (or refuses the
    /// statement under `pool.pinning = "off"`), or asks for a probe when its transaction ends.
    pub(super) fn note_pin(&mut self, fx: &Effects) -> Result<(), ProxyError> {
        if self.mode != PoolMode::Transaction {
            return Ok(());
        }
        if let Some(reason) = fx.pin {
            self.pin_or_refuse(reason)?;
        }
        if fx.unpin_check && self.pin.is_pinned() {
            self.link.pin_check = true;
        }
        Ok(())
    }

    /// Pins the client for `reason`, or refuses the statement under `pool.pinning = "off"`.
    pub(super) fn pin_or_refuse(&mut self, reason: PinReason) -> Result<(), ProxyError> {
        if self.rt.config.pool.pinning == Pinning::Off {
            return Err(ProxyError::Unsupported(format!(
                "pgward: {} need pool.mode = \"session\" (pool.pinning = \"off\" refuses them in transaction mode)",
                reason.describe()
            )));
        }
        self.pin_for(reason);
        Ok(())
    }

    fn pin_for(&mut self, reason: PinReason) {
        self.pin.load |= reason == PinReason::Load;
        self.pin.for_good |= matches!(reason, PinReason::Load | PinReason::UnnamedSetting);
        if self.pin.reason.is_some() {
            return;
        }
        self.pin.reason = Some(reason);
        crate::metrics::pinned(reason.as_str());
        if !self.pin.logged {
            self.pin.logged = true;
            tracing::info!(
                client = self.client.info.id,
                reason = reason.as_str(),
                "client pinned to its server connection until its session state is gone"
            );
        } else {
            tracing::debug!(
                client = self.client.info.id,
                reason = reason.as_str(),
                "client pinned again"
            );
        }
    }

    fn unpin(&mut self) {
        if let Some(reason) = self.pin.reason.take() {
            crate::metrics::unpinned();
            tracing::debug!(
                client = self.client.info.id,
                reason = reason.as_str(),
                "client unpinned"
            );
        }
    }

    /// At the end of a pinned client's transaction: whether it still holds session state on
    /// its server connection (it stays pinned) or not (the connection may go back).
    /// An error means the connection is unusable.
    pub(super) async fn still_pinned(&mut self) -> Result<bool, crate::pool::ServerError> {
        if self.pin.for_good {
            return Ok(true);
        }
        let sql = PROBE_SQL.replace("$login", &quote_literal(&self.pool_user));
        let rows = self.server_mut().internal_query(&sql).await?;
        let holds = rows
            .iter()
            .filter_map(|r| r.first()?.as_deref())
            .any(|kind| {
                match kind.strip_prefix("prepare:") {
                    // Statements pgward carries between connections do not pin.
                    Some(name) => !self.sql_statements.contains_key(name),
                    None => true,
                }
            });
        if !holds {
            self.unpin();
        }
        Ok(holds)
    }

    /// The server connection is gone with the client's session state.
    pub(super) fn unpin_lost(&mut self) {
        if self.pin.is_pinned() {
            tracing::warn!(client = self.client.info.id, "a pinned client's server connection was lost, and its session state (temporary tables, cursors, locks) with it");
            self.unpin();
        }
    }
}

/// One row per kind of session state the server connection holds (`$login` is the role
/// pgward logs in as). Run only between transactions, where transaction-scoped locks and
/// cursors are already gone.
const PROBE_SQL: &str = "\
SELECT 'temp_table' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
UNION ALL SELECT 'cursor_with_hold' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_cursors WHERE is_holdable) \
UNION ALL SELECT 'advisory_lock' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
UNION ALL SELECT 'session_authorization' WHERE session_user::text <> $login \
UNION ALL SELECT 'prepare:' || name FROM pg_catalog.pg_prepared_statements WHERE from_sql";
