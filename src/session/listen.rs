//! LISTEN / UNLISTEN in transaction mode, through the notify relay (`crate::notify`).
//!
//! A text made only of LISTEN/UNLISTEN statements still goes to the server, as a no-op
//! statement per LISTEN (`DO`), so PostgreSQL itself decides everything around it: the
//! transaction block it is in, an aborted transaction, errors, the protocol's replies. pgward
//! turns each `DO` CommandComplete back into the client's tag and, when the transaction
//! commits, subscribes the client at its hub before the client sees ReadyForQuery (so a NOTIFY
//! sent once LISTEN has returned reaches it). A rolled-back transaction subscribes nothing.

use std::sync::{Arc, Weak};

use bytes::BufMut;

use super::sqlscan::{self, ListenText};
use super::Session;
use crate::notify::ListenOp;
use crate::protocol::{Frame, ProxyError};

/// What each LISTEN/UNLISTEN becomes on the server.
const NO_OP: &[u8] = b"DO $$BEGIN END$$";

/// The text sent in place of one with LISTEN/UNLISTEN statements, and what they do.
pub(super) struct Rewritten {
    pub(super) text: Vec<u8>,
    pub(super) steps: Vec<(Option<usize>, ListenOp)>,
}

/// The LISTEN/UNLISTENs of a prepared statement, done at each of its Binds.
pub(super) type BoundListens = Arc<[(Option<usize>, ListenOp)]>;

/// A LISTEN/UNLISTEN whose reply is still to come: `request` numbers the request (Query or
/// Sync) it belongs to, counted on the link; `ordinal`, in a simple Query, which of its
/// CommandCompletes is this statement's.
pub(super) struct ListenStep {
    request: u64,
    ordinal: Option<usize>,
    op: ListenOp,
}

impl Session {
    /// For a text with LISTEN/UNLISTEN statements: the text to send instead (each of them a
    /// no-op), and their operations. `simple`: a Query, where statements are told apart by
    /// their place; a Parse holds one statement.
    pub(super) fn listen_rewrite(
        &self,
        sql: &[u8],
        simple: bool,
    ) -> Result<Option<Rewritten>, ProxyError> {
        let found = match sqlscan::listen_text(sql) {
            ListenText::None => return Ok(None),
            ListenText::Found(found) => found,
            ListenText::Unreadable => {
                return Err(ProxyError::Unsupported(
                    "pgward: cannot read this LISTEN/UNLISTEN's channel name (transaction mode relays notifications by channel)".into(),
                ))
            }
        };
        let mut text = Vec::with_capacity(sql.len());
        let mut at = 0;
        let mut steps = Vec::with_capacity(found.len());
        for stmt in found {
            text.extend_from_slice(&sql[at..stmt.span.start]);
            text.extend_from_slice(NO_OP);
            at = stmt.span.end;
            let op = match stmt.op {
                sqlscan::ListenOp::Listen(c) => ListenOp::Listen(c),
                sqlscan::ListenOp::Unlisten(c) => ListenOp::Unlisten(c),
                sqlscan::ListenOp::UnlistenAll => ListenOp::UnlistenAll,
            };
            steps.push((simple.then_some(stmt.ordinal), op));
        }
        text.extend_from_slice(&sql[at..]);
        Ok(Some(Rewritten { text, steps }))
    }

    /// The operations belong to the request being sent: their replies come before its end.
    pub(super) fn expect_listen(&mut self, steps: &[(Option<usize>, ListenOp)]) {
        let request = self.link.requests_sent + 1;
        self.link
            .listen_steps
            .extend(steps.iter().map(|(ordinal, op)| ListenStep {
                request,
                ordinal: *ordinal,
                op: op.clone(),
            }));
    }

    /// A CommandComplete `DO` that may answer a LISTEN/UNLISTEN: the client's tag.
    /// `ordinal`: which CommandComplete of a simple Query it is.
    pub(super) fn listen_reply(&mut self, ordinal: Option<usize>) -> Option<Frame> {
        let current = self.link.requests_done + 1;
        let step = self.link.listen_steps.front()?;
        if step.request != current || step.ordinal != ordinal {
            return None;
        }
        let step = self.link.listen_steps.pop_front().expect("front exists");
        let tag: &[u8] = match step.op {
            ListenOp::Listen(_) => b"LISTEN",
            _ => b"UNLISTEN",
        };
        self.link.listen_pending.push(step.op);
        Some(Frame::build(b'C', |b| {
            b.put_slice(tag);
            b.put_u8(0);
        }))
    }

    /// A request ended with transaction status `status` (called before its ReadyForQuery is
    /// queued for the client): steps of it that never ran are dropped, and a finished
    /// transaction's LISTENs take effect if it committed.
    pub(super) fn listen_request_done(&mut self, status: u8) {
        let done = self.link.requests_done;
        while self
            .link
            .listen_steps
            .front()
            .is_some_and(|s| s.request <= done)
        {
            self.link.listen_steps.pop_front();
        }
        if status != b'I' {
            return;
        }
        // Cheap when nothing of LISTEN/NOTIFY is in flight (the common case): no allocation.
        let ops = std::mem::take(&mut self.link.listen_pending);
        if !self.link.tx_failed {
            self.listen_due.extend(ops);
        }
        self.link.tx_failed = false;
        if std::mem::take(&mut self.link.notified) && self.state.notify.active() {
            // The notifications of this transaction reach their listeners before its client
            // sees this ReadyForQuery, and a client listening to itself gets its own first.
            self.notify_due = Some(self.client_w.buffer().len());
        }
    }

    /// Before the client sees the ReadyForQuery of a committed transaction: subscribe what
    /// it LISTENed to, and put the notifications of its own NOTIFY ahead of that reply.
    pub(super) async fn settle_listen(&mut self) {
        let ops = std::mem::take(&mut self.listen_due);
        if !ops.is_empty() {
            if self.listener.is_none() {
                let weak: Weak<crate::state::State> = Arc::downgrade(&self.state);
                let primary: crate::notify::PrimarySource =
                    Arc::new(move || weak.upgrade()?.runtime.load().router.primary_target());
                let listener = self.state.notify.listener(
                    &self.client.info.database,
                    &self.pool_user,
                    &self.pool_credential,
                    primary,
                );
                self.listener = Some(Box::new(listener));
                // From now on the hub attributes notifications to their clients.
                if let Some(server) = &self.server {
                    self.state
                        .notify
                        .leased(server.conn.pid, self.cancel.slot.pid);
                }
            }
            let listener = self.listener.as_mut().expect("just made");
            listener.apply(ops).await;
        }
        let Some(mark) = self.notify_due.take() else {
            return;
        };
        self.state
            .notify
            .sync_database(&self.client.info.database)
            .await;
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        let mut notes = Vec::new();
        while let Ok(frame) = listener.rx.try_recv() {
            notes.extend_from_slice(&frame);
        }
        if notes.is_empty() {
            return;
        }
        let buf = self.client_w.buffer();
        let mark = mark.min(buf.len());
        let tail = buf.split_off(mark);
        buf.extend_from_slice(&notes);
        buf.unsplit(tail);
    }
}
