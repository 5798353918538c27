//! LISTEN / UNLISTEN in transaction mode, through the notify relay (`crate::notify`).
//!
//! A text made only of LISTEN/UNLISTEN statements still goes to the server, as a no-op
//! statement per LISTEN (`DO`), so PostgreSQL itself decides everything around it: the
//! transaction block it is in, an aborted transaction, errors, the protocol's replies. pgward
//! turns each `DO` CommandComplete back into the client's tag and, when the transaction
//! commits, subscribes the client at its hub before the client sees ReadyForQuery (so a NOTIFY
//! sent once LISTEN has returned reaches it). A rolled-back transaction subscribes nothing.

use std::collections::{BTreeMap, VecDeque};
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

/// A client's LISTEN and NOTIFY state (transaction mode), boxed in its session when it
/// first uses them: most clients never do.
#[derive(Default)]
pub(super) struct Listening {
    /// The client's subscriptions, made at its first committed LISTEN.
    pub(super) listener: Option<crate::notify::Listener>,
    /// LISTEN/UNLISTENs committed, to apply before the client sees their ReadyForQuery.
    due: Vec<ListenOp>,
    /// The client notified while others listen: its own notifications go before the
    /// ReadyForQuery at this position of its output buffer.
    notify_due: Option<usize>,
    /// Prepared statements (by the client's name, "" for the unnamed one) that are
    /// LISTEN/UNLISTEN, with what a Bind of them does.
    pub(super) binds: BTreeMap<String, BoundListens>,
}

/// A link's LISTEN/UNLISTENs: sent and waiting for their replies (`steps`), and those that
/// ran, waiting for their transaction to commit (`ran`).
#[derive(Default)]
pub(super) struct LinkListens {
    steps: VecDeque<ListenStep>,
    ran: Vec<ListenOp>,
}

impl Listening {
    /// Something to settle before the client sees its ReadyForQuery.
    pub(super) fn is_due(&self) -> bool {
        !self.due.is_empty() || self.notify_due.is_some()
    }
}

impl Session {
    pub(super) fn listening(&mut self) -> &mut Listening {
        self.listening.get_or_insert_with(Default::default)
    }

    /// A Bind of `name`: the LISTEN/UNLISTENs its statement does.
    pub(super) fn bind_listens(&mut self, name: &str) {
        let ops = self.listening.as_ref().and_then(|l| l.binds.get(name));
        if let Some(ops) = ops.cloned() {
            self.expect_listen(&ops);
        }
    }

    /// Statement `name` was replaced or closed.
    pub(super) fn forget_listen_bind(&mut self, name: &str) {
        if let Some(l) = self.listening.as_mut() {
            l.binds.remove(name);
        }
    }

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
        let listens = self.link.listens.get_or_insert_with(Default::default);
        listens
            .steps
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
        let listens = self.link.listens.as_mut()?;
        let step = listens.steps.front()?;
        if step.request != current || step.ordinal != ordinal {
            return None;
        }
        let step = listens.steps.pop_front().expect("front exists");
        let tag: &[u8] = match step.op {
            ListenOp::Listen(_) => b"LISTEN",
            _ => b"UNLISTEN",
        };
        listens.ran.push(step.op);
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
        if let Some(listens) = self.link.listens.as_mut() {
            while listens.steps.front().is_some_and(|s| s.request <= done) {
                listens.steps.pop_front();
            }
        }
        if status != b'I' {
            return;
        }
        let ran = self
            .link
            .listens
            .as_mut()
            .map(|l| std::mem::take(&mut l.ran));
        if let Some(ops) = ran.filter(|ops| !self.link.tx_failed && !ops.is_empty()) {
            self.listening().due.extend(ops);
        }
        self.link.tx_failed = false;
        if std::mem::take(&mut self.link.notified) && self.state.notify.active() {
            // The notifications of this transaction reach their listeners before its client
            // sees this ReadyForQuery, and a client listening to itself gets its own first.
            let mark = self.client_w.buffer().len();
            self.listening().notify_due = Some(mark);
        }
    }

    /// Before the client sees the ReadyForQuery of a committed transaction: subscribe what
    /// it LISTENed to, and put the notifications of its own NOTIFY ahead of that reply.
    pub(super) async fn settle_listen(&mut self) {
        let Some(listening) = self.listening.as_mut() else {
            return;
        };
        let ops = std::mem::take(&mut listening.due);
        let notify_due = listening.notify_due.take();
        if !ops.is_empty() {
            if listening.listener.is_none() {
                let weak: Weak<crate::state::State> = Arc::downgrade(&self.state);
                let primary: crate::notify::PrimarySource =
                    Arc::new(move || weak.upgrade()?.runtime.load().router.primary_target());
                let listener = self.state.notify.listener(
                    &self.client.info.database,
                    &self.pool_user,
                    &self.pool_credential,
                    primary,
                );
                self.listening().listener = Some(listener);
                // From now on the hub attributes notifications to their clients.
                if let Some(server) = &self.server {
                    self.state
                        .notify
                        .leased(server.conn.pid, self.cancel.slot.pid);
                }
            }
            let listener = self.listening().listener.as_mut().expect("just made");
            listener.apply(ops).await;
        }
        let Some(mark) = notify_due else {
            return;
        };
        self.state
            .notify
            .sync_database(&self.client.info.database)
            .await;
        let Some(listener) = self.listening().listener.as_mut() else {
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
