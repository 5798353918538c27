//! Forwarding between a client and its leased server connection.
//!
//! Frames flow both ways as raw bytes. The few the proxy must touch are: Parse/Bind/Describe/
//! Close naming a prepared statement (renamed to pgward's server-side name, re-prepared when the
//! server lacks it), and the responses that tell where a request ends. A queue of the responses
//! still owed to the client keeps replies in protocol order even when pgward answers a message
//! itself (a CloseComplete for a client's name) or hides one (the ParseComplete of a re-prepare
//! the client never asked for).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BufMut;

use super::prepared::Statement;
use super::sqlscan;
use super::{Session, UnnamedParse};
use crate::config::PoolMode;
use crate::protocol::frame::{Buffered, FrameRef};
use crate::protocol::messages::{self, tag, Reader};
use crate::protocol::{Frame, FrameError, ProxyError};
use crate::sql::Class;

/// Stop reading one side while more than this waits to be written to the other.
const HIGH_WATER: usize = 256 * 1024;

pub(super) enum Exit {
    /// The transaction is over and nothing is outstanding: the lease may go back.
    Release,
    ClientGone,
    /// The server failed before answering a read that can run elsewhere (`Session::retry`);
    /// `ban` when the server itself is gone (the connection broke), not just this session.
    Retry {
        ban: bool,
    },
    /// The server connection broke (or the server said FATAL) and no retry can hide it;
    /// the error says why. `Session::run` decides whether the client can go on.
    Lost(ProxyError),
}

/// A response the client is owed, in order.
pub(super) enum Pending {
    /// `statement` is set when the Parse creates a pgward-named statement; `hidden` when pgward
    /// sent it on its own (its ParseComplete must not reach the client).
    Parse {
        statement: Option<Arc<Statement>>,
        hidden: bool,
    },
    /// What column encryption sets up when the reply comes (when it is on).
    Bind(Option<Box<super::encrypt::BindCrypt>>),
    Describe(Option<Box<super::encrypt::DescribeCrypt>>),
    /// The portal, when column encryption is on.
    Execute(Option<Box<str>>),
    Close,
    /// When it was sent, for the request's duration.
    Sync(Instant),
    /// A simple Query or FunctionCall: ends with ReadyForQuery, errors do not skip ahead.
    /// The plan is column encryption's, for a text touching designated columns.
    Query(Instant, Option<Arc<crate::crypto::plan::Plan>>),
    /// A reply pgward writes itself when its turn comes.
    Reply(Reply),
    /// pgward's failing Parse after a refusal (see `admit`): its error is not the client's.
    Hidden,
    /// A Sync pgward sent after that Parse: its ReadyForQuery is not the client's either,
    /// but its transaction status is.
    HiddenSync,
    /// A step of pgward's own statement (see `sqlprep`): the reply with this tag is hidden.
    Quiet(u8),
    /// pgward's Close of an older server copy of a statement, before it is parsed again; the
    /// copy stays if the server skips the Close.
    Refresh(Arc<Statement>),
}

// A message in flight costs its `Pending` to move and to keep.
const _: () = assert!(std::mem::size_of::<Pending>() <= 32);

pub(super) enum Reply {
    CloseComplete,
    /// Boxed: refusals are rare, and every message in flight has a `Pending` the size of
    /// the largest.
    Error(Box<ProxyError>),
    /// ReadyForQuery after a simple Query pgward refused.
    Ready,
}

/// Protocol state of one attachment of a client to a server connection.
#[derive(Default)]
pub(super) struct Link {
    pub(super) queue: VecDeque<Pending>,
    /// Extended-protocol messages were sent since the last Sync.
    pub(super) in_batch: bool,
    /// After a pgward-made error, skip client messages until Sync, as a server does.
    discarding: bool,
    /// Transaction status from the last ReadyForQuery.
    pub(super) tx_status: u8,
    /// The client ran something that may change session settings / drop statements.
    pub(super) session_dirty: bool,
    /// A request in flight may open a transaction block: losing the server then may lose a
    /// transaction the client's later requests belong to.
    may_begin: bool,
    /// Session mode: the client ran a RESET or DISCARD; its startup values are restored once
    /// the server is idle (transaction mode does that on release).
    restore_startup: bool,
    pub(super) statements_dirty: bool,
    /// The client's unnamed statement exists on this server connection.
    unnamed_ready: bool,
    /// In COPY FROM STDIN: the server ignores Sync and Flush until CopyDone/CopyFail.
    copy_in: bool,
    /// A replica in transaction mode serves one request at a time: the next one may be a
    /// write, so it is routed afresh instead of being pipelined onto this server.
    one_request: bool,
    /// The current request is sent (one_request): read no more client messages until its
    /// answer shows whether a transaction continues.
    hold: bool,
    /// Watch for writes (read-your-writes on the primary); `wrote` once one is sent.
    track_writes: bool,
    pub(super) wrote: bool,
    /// A pinned client ran something that may have released its session state: ask the
    /// server when its transaction ends.
    pub(super) pin_check: bool,
    /// Requests (Query / Sync) sent and answered on this link, numbering them.
    pub(super) requests_sent: u64,
    pub(super) requests_done: u64,
    /// LISTEN/UNLISTENs sent, waiting for their replies; those that ran, waiting for the
    /// transaction to commit.
    /// Boxed when the link first carries one: most never do.
    pub(super) listens: Option<Box<super::listen::LinkListens>>,
    /// The transaction failed or rolled back: its LISTENs do not take effect.
    pub(super) tx_failed: bool,
    /// CommandCompletes of the simple Query being answered so far.
    pub(super) commands: usize,
    /// The request sent NOTIFY (its client may be listening to itself).
    pub(super) notified: bool,
    /// SQL PREPAREs sent, checked against the server when the transaction ends.
    pub(super) sql_prepared_now: Vec<String>,
}

impl Link {
    /// `track_writes`: note writes for read-your-writes (transaction mode on the primary).
    pub(super) fn new(session_mode: bool, on_replica: bool, track_writes: bool) -> Link {
        Link {
            tx_status: b'I',
            unnamed_ready: session_mode,
            one_request: on_replica && !session_mode,
            track_writes,
            ..Link::default()
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.in_batch && self.tx_status == b'I'
    }

    /// Room in the queue for `n` more replies, taking an empty queue another request on
    /// this thread gave back rather than one from malloc.
    pub(super) fn reserve(&mut self, n: usize) {
        if self.queue.capacity() == 0 {
            if let Some(spare) = SPARE_QUEUES.with(|s| s.borrow_mut().pop()) {
                self.queue = spare;
            }
        }
        self.queue.reserve(n);
    }

    /// Gives an answered request's queue back to this thread's spares: an idle client
    /// keeps none, and the next request on the thread takes it.
    pub(super) fn release_queue(&mut self) {
        let cap = self.queue.capacity();
        if !self.queue.is_empty() || cap == 0 {
            return;
        }
        let queue = std::mem::take(&mut self.queue);
        if cap <= SPARE_QUEUE_CAPACITY {
            SPARE_QUEUES.with(|s| {
                let mut spares = s.borrow_mut();
                if spares.len() < SPARE_QUEUES_PER_THREAD {
                    spares.push(queue);
                }
            });
        }
    }
}

/// Spare reply queues, at most this many per thread and of this capacity at most (a
/// pipeline of that many messages is rare), so what they hold stays small.
const SPARE_QUEUES_PER_THREAD: usize = 32;
const SPARE_QUEUE_CAPACITY: usize = 64;

thread_local! {
    static SPARE_QUEUES: std::cell::RefCell<Vec<VecDeque<Pending>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

enum Event {
    Wrote(std::io::Result<()>),
    ClientWrote(std::io::Result<()>),
    ServerRead(Result<(), FrameError>),
    ClientRead(Result<(), FrameError>),
    Notification(bytes::Bytes),
}

impl Session {
    /// Pumps until the lease can be released (transaction mode) or the client leaves.
    pub(super) async fn pump(&mut self) -> Result<Exit, ProxyError> {
        loop {
            if let Some(exit) = self.relay_server_frames() {
                return Ok(exit);
            }
            // A transaction that wrote has ended; its ReadyForQuery waits in the client's
            // buffer until every pgward instance has dropped what it read.
            if self.publish_due {
                self.publish_due = false;
                self.publish_writes().await;
            }
            if self.listening.as_ref().is_some_and(|l| l.is_due()) {
                self.settle_listen().await;
            }
            while !self.link.hold && self.server_mut().writer.pending() < HIGH_WATER {
                let Some(frame) = self
                    .client_r
                    .try_frame()
                    .map_err(super::client_frame_error)?
                else {
                    break;
                };
                // The retry copy covers only the request as first sent.
                self.retry = None;
                let mut frame = frame;
                if runs_sql(frame.tag()) {
                    self.analyse_ahead(std::slice::from_ref(&frame)).await;
                    if let Err(err) = self.admit(std::slice::from_ref(&frame)).await {
                        self.refuse_attached(&frame, err);
                        continue;
                    }
                }
                if stages_rewrite(frame.tag()) {
                    if let Err(err) = self.encrypt(std::slice::from_mut(&mut frame)).await {
                        self.refuse_attached(&frame, err);
                        continue;
                    }
                }
                if let Some(exit) = self.on_client_frame(frame)? {
                    return Ok(exit);
                }
            }
            // A pinned client keeps its server between transactions, unless what it ran may
            // have released its session state: `release` asks the server.
            if self.mode == PoolMode::Transaction
                && self.link.is_idle()
                && (!self.pin.is_pinned() || self.link.pin_check)
            {
                return Ok(Exit::Release);
            }
            if self.link.restore_startup
                && self.link.is_idle()
                && self.server_mut().writer.pending() == 0
            {
                self.link.restore_startup = false;
                let (startup, custom) = (self.startup.clone(), self.custom_settings.clone());
                let read = super::read_settings(self.server_mut(), &startup, custom.as_deref());
                if let Err(e) = read.await {
                    tracing::warn!(client = self.client.info.id, error = %e, "could not restore the client's startup settings");
                    return Ok(Exit::Lost(ProxyError::ServerLost));
                }
            }

            // What is queued goes out now: the write usually completes at once, and the
            // select below then waits for the answer instead of taking a turn to write.
            let failed = std::future::poll_fn(|cx| Poll::Ready(self.write_queued(cx))).await;

            // In session mode the pump runs for the client's whole life: on shutdown, an idle
            // client is closed here (in transaction mode that happens between transactions).
            let drain =
                (self.mode == PoolMode::Session || self.pin.is_pinned()) && self.link.is_idle();
            let (hold, retry) = (self.link.hold, self.retry.is_some());
            // Notifications go out between transactions, as PostgreSQL sends them.
            let notify = self
                .listening
                .as_ref()
                .is_some_and(|l| l.listener.is_some())
                && self.link.is_idle();
            let Session {
                client_r,
                client_w,
                server,
                client,
                listening,
                ..
            } = self;
            let server = &mut server.as_mut().expect("attached").conn;
            if drain {
                // A session between transactions may idle for hours: it holds no empty buffer.
                client_r.release_idle();
                server.reader.release_idle();
            }
            let event = if let Some(failed) = failed {
                failed
            } else {
                tokio::select! {
                    biased;
                    stop = client.stopped(drain) => return Err(super::stop_error(stop)),
                    r = server.writer.write_some(), if server.writer.pending() > 0 => Event::Wrote(r),
                    r = client_w.write_some(), if client_w.pending() > 0 => Event::ClientWrote(r),
                    r = server.reader.fill(), if client_w.pending() < HIGH_WATER => Event::ServerRead(r),
                    r = client_r.fill(), if server.writer.pending() < HIGH_WATER && !hold => Event::ClientRead(r),
                    Some(n) = std::future::poll_fn(|cx| super::poll_notification(listening, cx)), if notify => Event::Notification(n),
                }
            };
            match event {
                Event::ClientWrote(Ok(())) => self.client_has_written(),
                Event::Wrote(Err(_)) | Event::ServerRead(Err(_)) if retry => {
                    return Ok(Exit::Retry { ban: true })
                }
                Event::Wrote(Err(e)) | Event::ServerRead(Err(FrameError::Io(e))) => {
                    tracing::warn!(client = client.info.id, error = %e, "server connection failed");
                    return Ok(Exit::Lost(ProxyError::ServerLost));
                }
                Event::ServerRead(Err(_)) => {
                    tracing::info!(client = client.info.id, "server closed the connection");
                    return Ok(Exit::Lost(ProxyError::ServerLost));
                }
                Event::ClientWrote(Err(_))
                | Event::ClientRead(Err(FrameError::Eof | FrameError::Io(_))) => {
                    return Ok(Exit::ClientGone)
                }
                Event::ClientRead(Err(e)) => return Err(super::client_frame_error(e)),
                Event::Notification(n) => {
                    super::queue_notifications(&mut self.listening, &mut self.client_w, &n)
                }
                _ => {}
            }
        }
    }

    /// Relays the complete messages the server has sent, where they were read, while the
    /// client's buffer has room. Some when the link ends.
    fn relay_server_frames(&mut self) -> Option<Exit> {
        let mut buffered = self.server_mut().reader.take_buffered();
        let exit = self.relay_buffered(&mut buffered);
        self.server_mut().reader.put_back(buffered);
        exit
    }

    fn relay_buffered(&mut self, buffered: &mut Buffered) -> Option<Exit> {
        while self.client_w.pending() < HIGH_WATER {
            let frame = match buffered.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(client = self.client.info.id, error = %e, "bad frame from server");
                    return Some(Exit::Lost(ProxyError::ServerLost));
                }
            };
            let fatal = is_fatal_error(frame);
            if self.retry.is_some() {
                // A FATAL error ends this session (shutdown, or a DBA's
                // pg_terminate_backend); whether the server is down is the monitor's call.
                if fatal {
                    return Some(Exit::Retry { ban: false });
                }
                if let Some(exit) = self.answer_so_far(frame) {
                    return Some(exit);
                }
            }
            if fatal && self.loss_is_hideable() {
                // The client gets the reason as a plain error and stays connected.
                return Some(Exit::Lost(server_error(frame)));
            }
            self.on_server_frame(frame);
        }
        None
    }

    /// Writes what is queued for the server and the client, as far as the sockets take it
    /// now; a failed write comes back as the event the select would have made of it.
    fn write_queued(&mut self, cx: &mut Context<'_>) -> Option<Event> {
        let server = &mut self.server.as_mut().expect("attached").conn;
        if server.writer.pending() > 0 {
            if let Poll::Ready(Err(e)) = server.writer.poll_write_some(cx) {
                return Some(Event::Wrote(Err(e)));
            }
        }
        if self.client_w.pending() > 0 {
            match self.client_w.poll_write_some(cx) {
                Poll::Ready(Ok(())) => self.client_has_written(),
                Poll::Ready(Err(e)) => return Some(Event::ClientWrote(Err(e))),
                Poll::Pending => {}
            }
        }
        None
    }

    /// A write to the client went through. Once part of the answer is among what it was
    /// sent, running the request again would repeat it: the retry copy goes.
    fn client_has_written(&mut self) {
        if self.retry.as_ref().is_some_and(|r| r.answer_from.is_some()) {
            self.retry = None;
        }
    }

    /// Keeps the retry copy of a read through what its server has sent so far, or drops it
    /// once the answer cannot be taken back. A notice or parameter report is no answer. A
    /// simple query's RowDescription and rows may be taken back while they wait in the
    /// client's buffer: PostgreSQL stopped with `-m immediate` flushes what it had
    /// buffered, then its WARNING, then closes. That WARNING (57P01, 57P02) says the
    /// answer will not finish, so it is taken back at once and the read runs elsewhere.
    fn answer_so_far(&mut self, frame: FrameRef) -> Option<Exit> {
        let retry = self.retry.as_mut().expect("a retry copy");
        let rewindable = !self.crypt.enabled
            && self.fill.is_none()
            && matches!(self.link.queue.front(), Some(Pending::Query(..)));
        match frame.tag() {
            b'N' if retry.answer_from.is_some()
                && matches!(error_sqlstate(frame), Some("57P01" | "57P02")) =>
            {
                return Some(Exit::Retry { ban: true });
            }
            b'N' | b'S' => {}
            b'T' | b'D' if rewindable => {
                retry.answer_from.get_or_insert(self.client_w.pending());
            }
            // The client is getting an answer from this server now.
            _ => self.retry = None,
        }
        None
    }

    /// Whether losing the server connection now costs the client nothing but the requests in
    /// flight: transaction mode (its session state lives in pgward, not on the connection),
    /// outside a transaction block, not in COPY FROM STDIN.
    pub(super) fn loss_is_hideable(&self) -> bool {
        self.mode == PoolMode::Transaction
            && !self.pin.is_pinned()
            && self.link.tx_status == b'I'
            && !self.link.may_begin
            && !self.link.copy_in
    }

    /// Answers every request still outstanding on a lost server connection with `err` and
    /// ReadyForQuery 'I', as if each had failed on its own; an unfinished extended-protocol
    /// batch is answered once the client ends it with Sync.
    /// False when the client left meanwhile.
    pub(super) async fn answer_lost(&mut self, err: &ProxyError) -> Result<bool, ProxyError> {
        let mut errored = false;
        while let Some(p) = self.link.queue.pop_front() {
            match p {
                Pending::Hidden | Pending::HiddenSync => {}
                // A Parse the client is told failed created nothing, as in PostgreSQL.
                Pending::Parse {
                    statement: Some(s),
                    hidden: false,
                } => {
                    self.statements.retain(|_, kept| !Arc::ptr_eq(kept, &s));
                    if !errored {
                        messages::error_response(self.client_w.buffer(), err, false);
                        errored = true;
                    }
                }
                Pending::Sync(_) | Pending::Query(..) | Pending::Reply(Reply::Ready) => {
                    if !errored {
                        messages::error_response(self.client_w.buffer(), err, false);
                    }
                    messages::ready_for_query(self.client_w.buffer(), b'I');
                    errored = false;
                }
                _ => {
                    if !errored {
                        messages::error_response(self.client_w.buffer(), err, false);
                        errored = true;
                    }
                }
            }
        }
        if !self.link.in_batch {
            return Ok(true);
        }
        if !errored && !self.link.discarding {
            messages::error_response(self.client_w.buffer(), err, false);
        }
        // The client may be waiting for the answer to its Flush before it sends its Sync.
        if self.client_w.flush().await.is_err() {
            return Ok(false);
        }
        loop {
            match self.client_r.read_frame().await {
                Ok(frame) => match frame.tag() {
                    tag::SYNC | tag::QUERY | tag::FUNCTION_CALL => break,
                    tag::TERMINATE => return Ok(false),
                    _ => {}
                },
                Err(FrameError::Eof) | Err(FrameError::Io(_)) => return Ok(false),
                Err(e) => return Err(super::client_frame_error(e)),
            }
        }
        messages::ready_for_query(self.client_w.buffer(), b'I');
        Ok(true)
    }

    pub(super) fn server_mut(&mut self) -> &mut crate::pool::ServerConn {
        &mut self.server.as_mut().expect("attached").conn
    }

    /// Handles one client message while attached; returns Exit::ClientGone on Terminate.
    pub(super) fn on_client_frame(&mut self, frame: Frame) -> Result<Option<Exit>, ProxyError> {
        let t = frame.tag();
        self.traffic.0 += frame.as_bytes().len() as u64;
        if self.link.discarding
            && !matches!(
                t,
                tag::SYNC | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL | tag::TERMINATE
            )
        {
            return Ok(None);
        }
        match t {
            tag::QUERY => {
                let sql = messages::read_query(frame.body())?;
                self.note_cache_writes(sql);
                match self.note_text(sql, true, None) {
                    Err(e) => self.push_error_reply(e, true),
                    Ok((fx, listen)) => {
                        if self.link.track_writes && !self.link.wrote {
                            let reads = self.analyze(sql).class != Class::Write;
                            self.note_write(reads);
                        }
                        // Inside a transaction PostgreSQL keeps it as a placeholder setting;
                        // pgward routes by it from the next transaction on.
                        if fx.session {
                            if let Some(setting) = self.route_setting_of(sql) {
                                self.route.setting = setting;
                            }
                        }
                        let plan = self.crypt.take_next_query();
                        self.expect_copy_in(plan.as_ref());
                        let frame = match listen {
                            Some(rewritten) => {
                                self.expect_listen(&rewritten.steps);
                                Frame::build(tag::QUERY, |b| {
                                    b.put_slice(&rewritten.text);
                                    b.put_u8(0);
                                })
                            }
                            None => frame,
                        };
                        self.forward(&frame, Some(Pending::Query(Instant::now(), plan)));
                        self.request_sent();
                    }
                }
            }
            tag::FUNCTION_CALL => {
                self.note_write(false);
                self.forward(&frame, Some(Pending::Query(Instant::now(), None)));
                self.request_sent();
            }
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::CLOSE => {
                let handled = match t {
                    tag::PARSE => self.on_parse(frame),
                    tag::BIND => self.on_bind(frame),
                    tag::DESCRIBE => self.on_describe(frame),
                    _ => self.on_close(frame),
                };
                match handled {
                    // A name pgward cannot keep (not UTF-8) fails the message, not the client.
                    Err(e) if !e.is_fatal() => self.refuse(e),
                    other => other?,
                }
            }
            tag::EXECUTE => {
                self.link.in_batch = true;
                let portal = self.execute_crypt(&frame);
                let plan = portal.as_deref().and_then(|p| self.portal_plan(p));
                self.expect_copy_in(plan.as_ref());
                self.forward(&frame, Some(Pending::Execute(portal)));
            }
            tag::FLUSH => {
                self.link.in_batch = true;
                self.forward(&frame, None);
            }
            tag::SYNC if self.link.copy_in => self.forward(&frame, None),
            tag::COPY_DONE | tag::COPY_FAIL => {
                self.link.copy_in = false;
                if let Some(frame) = self.copy_in_frame(frame) {
                    self.forward(&frame, None);
                }
            }
            tag::SYNC => {
                self.link.in_batch = false;
                self.link.discarding = false;
                self.forward(&frame, Some(Pending::Sync(Instant::now())));
                self.request_sent();
            }
            tag::COPY_DATA => {
                if let Some(frame) = self.copy_in_frame(frame) {
                    self.forward(&frame, None);
                }
            }
            tag::TERMINATE => return Ok(Some(Exit::ClientGone)),
            other => {
                return Err(ProxyError::protocol(format!(
                    "invalid frontend message type {other}"
                )));
            }
        }
        self.reply_ready();
        Ok(None)
    }

    /// A request is complete on the server's side; on a replica, wait for its answer.
    fn request_sent(&mut self) {
        if self.link.one_request {
            self.link.hold = true;
        }
    }

    /// Records that the client sent something that is not a plain read (read-your-writes).
    fn note_write(&mut self, reads: bool) {
        if !reads && self.link.track_writes {
            self.link.wrote = true;
        }
    }

    fn forward(&mut self, frame: &Frame, pending: Option<Pending>) {
        self.server_mut().writer.queue(frame.as_bytes());
        if let Some(p) = pending {
            if matches!(p, Pending::Sync(_) | Pending::Query(..)) {
                self.link.requests_sent += 1;
                // Counted here, not where a request is dispatched: a client that sends its
                // next request before the last one's ReadyForQuery (after an error, say) has
                // it forwarded by the pump.
                crate::metrics::query_routed(self.rt.router.is_primary(self.backend));
            }
            self.link.queue.push_back(p);
        }
    }

    /// Records what a statement may change, and what it means for pinning.
    /// `known`: the effects of `sql` when the caller has them (the scan is a pure function
    /// of the text).
    fn note_sql(
        &mut self,
        sql: &[u8],
        known: Option<sqlscan::Effects>,
    ) -> Result<sqlscan::Effects, ProxyError> {
        let fx = known.unwrap_or_else(|| self.effects(sql));
        if self.mode == PoolMode::Session {
            // Nothing is read back in session mode: after a SET the search_path is unknown.
            if self.state.policy_on() && fx.session {
                self.settings_unknown = true;
            }
            self.link.restore_startup |= fx.resets;
            return Ok(sqlscan::Effects::default());
        }
        self.note_pin(&fx)?;
        if fx.session {
            self.note_custom_settings(sql)?;
        }
        self.note_effects(fx);
        Ok(fx)
    }

    /// Keeps the client's unnamed Parse (`frame`, of text `query`), re-sent if a later Bind
    /// lands on another server. Drivers send the same one again and again: what is kept
    /// stands when the text is the same. A copy is kept, not the client's read buffer.
    pub(super) fn keep_unnamed(
        &mut self,
        frame: &Frame,
        query: &[u8],
        effects: sqlscan::Effects,
        reads: bool,
    ) {
        if self.kept_unnamed(frame).is_none() {
            let unnamed = UnnamedParse {
                frame: frame.detached(),
                effects,
                reads,
                route_setting: self.route_setting_of(query),
            };
            match &mut self.unnamed_parse {
                Some(kept) => **kept = unnamed,
                None => self.unnamed_parse = Some(Box::new(unnamed)),
            }
        }
    }

    /// The unnamed Parse kept, when `frame` is the same one again (drivers repeat it).
    pub(super) fn kept_unnamed(&self, frame: &Frame) -> Option<&UnnamedParse> {
        (self.unnamed_parse.as_deref()).filter(|kept| kept.frame.as_bytes() == frame.as_bytes())
    }

    /// Notes the SQL text of a Query (`simple`) or Parse about to be forwarded: its effects,
    /// and in transaction mode what stands in for its LISTENs and the SQL-level prepared
    /// statements it needs on this server (sent ahead of it).
    fn note_text(
        &mut self,
        sql: &[u8],
        simple: bool,
        known: Option<sqlscan::Effects>,
    ) -> Result<(sqlscan::Effects, Option<super::listen::Rewritten>), ProxyError> {
        let fx = self.note_sql(sql, known)?;
        if !self.transaction_mode() {
            return Ok((fx, None));
        }
        let listen = match fx.listen {
            true => self.listen_rewrite(sql, simple)?,
            false => None,
        };
        self.carry_sql_prepared(sql, &fx, simple);
        Ok((fx, listen))
    }

    fn note_effects(&mut self, fx: sqlscan::Effects) {
        if fx.notify {
            self.link.notified = true;
            // Listeners see the notifier's pid as this client knows it.
            if self.state.notify.active() {
                let server = self.server_mut().pid;
                self.state.notify.leased(server, self.cancel.slot.pid);
            }
        }
        self.link.may_begin |= fx.begins;
        self.link.session_dirty |= fx.session;
        self.link.statements_dirty |= fx.statements;
    }

    /// Answers a simple Query with an error of pgward's own (and its ReadyForQuery).
    pub(super) fn push_error_reply(&mut self, err: ProxyError, ready: bool) {
        self.link
            .queue
            .push_back(Pending::Reply(Reply::Error(Box::new(err))));
        if ready {
            self.link.requests_sent += 1;
            self.link.queue.push_back(Pending::Reply(Reply::Ready));
        }
    }

    /// Answers a message with an error of pgward's own and skips to the next Sync.
    pub(super) fn refuse(&mut self, err: ProxyError) {
        self.link
            .queue
            .push_back(Pending::Reply(Reply::Error(Box::new(err))));
        self.link.discarding = true;
        self.link.in_batch = true;
    }

    fn transaction_mode(&self) -> bool {
        self.mode == PoolMode::Transaction
    }

    fn on_parse(&mut self, frame: Frame) -> Result<(), ProxyError> {
        let parse = messages::read_parse(frame.body())?;
        self.link.in_batch = true;
        // Refused before anything is noted under the name: it keeps its statement, and what
        // the policy and LISTEN relaying know of that statement.
        if self.transaction_mode()
            && !parse.name.is_empty()
            && self.statements.contains_key(parse.name)
        {
            self.refuse(ProxyError::DuplicateStatement(parse.name.to_owned()));
            return Ok(());
        }
        self.note_cache_writes(parse.query);
        // The effects of a text are a pure function of it: those kept with it stand.
        let known = self.kept_unnamed(&frame).map(|kept| kept.effects);
        let (effects, listen) = match self.note_text(parse.query, false, known) {
            Ok(noted) => noted,
            Err(e) => {
                self.refuse(e);
                return Ok(());
            }
        };
        // A LISTEN becomes a no-op on the server; its operations wait for the Bind, where the
        // policy judges the client's own text, not the no-op.
        let rewritten = match listen {
            Some(rewritten) => {
                let mut buf = bytes::BytesMut::new();
                messages::write_parse(&mut buf, parse.name, &rewritten.text, parse.param_types);
                self.listening()
                    .binds
                    .insert(parse.name.to_owned(), rewritten.steps.into());
                Some((Frame::from_bytes(buf.freeze()), parse.query.to_vec()))
            }
            None => {
                self.forget_listen_bind(parse.name);
                None
            }
        };
        let (frame, parse) = match &rewritten {
            Some((frame, _)) => (frame, messages::read_parse(frame.body())?),
            None => (&frame, parse),
        };
        // What the client prepared is its own text, not the no-op standing in for its LISTEN.
        let original = rewritten
            .as_ref()
            .map_or(parse.query, |(_, text)| text.as_slice());
        self.note_prepared(parse.name, original);
        let class = self.class_of(parse.query);
        let reads = class == Class::Read;
        self.note_write(class != Class::Write);
        if parse.name.is_empty() || !self.transaction_mode() {
            if parse.name.is_empty() && self.transaction_mode() {
                self.keep_unnamed(frame, parse.query, effects, reads);
                self.link.unnamed_ready = true;
            }
            self.forward(
                frame,
                Some(Pending::Parse {
                    statement: None,
                    hidden: false,
                }),
            );
            return Ok(());
        }
        let statement = self.statement_with(parse.query, parse.param_types, effects);
        let copy = self.server_mut().prepared.get(&statement.hash).cloned();
        if copy.as_ref().is_some_and(|copy| **copy != *statement) {
            self.refuse(ProxyError::Unsupported(
                "pgward: prepared statement name hash collision; retry with different text".into(),
            ));
            return Ok(());
        }
        self.statements
            .insert(parse.name.to_owned(), statement.clone());
        // Parsed on the server as the client asks, so it reads the schema as it is now.
        self.prepare_on_server(statement, copy, false);
        Ok(())
    }

    /// Looks up a client's statement by name, preparing it on this server if the server has
    /// no copy made since the client parsed it.
    fn server_statement(&mut self, name: &str) -> Option<Arc<Statement>> {
        let statement = self.statements.get(name)?.clone();
        // The usual case, a copy at least as new as the client's Parse, clones nothing.
        let copy = self.server_mut().prepared.get(&statement.hash);
        if copy.is_none_or(|copy| copy.parsed < statement.parsed) {
            let copy = copy.cloned();
            self.prepare_on_server(statement.clone(), copy, true);
        }
        Some(statement)
    }

    /// Prepares `statement` under pgward's name, first closing the server's older `copy` of
    /// it: a copy made before the client's Parse may predate a schema change (PostgreSQL
    /// would refuse it, "cached plan must not change result type", or answer in the old
    /// shape), where a direct connection would have parsed the client's text afresh.
    fn prepare_on_server(
        &mut self,
        statement: Arc<Statement>,
        copy: Option<Arc<Statement>>,
        hidden: bool,
    ) {
        let conn = self.server_mut();
        if let Some(copy) = copy {
            messages::frontend(conn.writer.buffer(), tag::CLOSE, |b| {
                b.put_u8(b'S');
                b.put_slice(copy.server_name.as_bytes());
                b.put_u8(0);
            });
            self.link.queue.push_back(Pending::Refresh(copy));
        }
        let conn = self.server_mut();
        statement.write_parse(conn.writer.buffer(), &statement.server_name);
        conn.prepared.insert(statement.hash, statement.clone());
        self.link.queue.push_back(Pending::Parse {
            statement: Some(statement),
            hidden,
        });
    }

    /// The unnamed statement lives on the connection that parsed it; re-send it when a
    /// Bind or Describe reaches another one.
    fn ensure_unnamed(&mut self) {
        if self.link.unnamed_ready {
            return;
        }
        let kept = self.unnamed_parse.as_deref();
        if let Some((frame, effects, reads)) = kept.map(|u| (u.frame.clone(), u.effects, u.reads)) {
            self.note_write(reads);
            self.forward(
                &frame,
                Some(Pending::Parse {
                    statement: None,
                    hidden: true,
                }),
            );
            self.note_effects(effects);
            self.link.unnamed_ready = true;
        }
    }

    fn on_bind(&mut self, frame: Frame) -> Result<(), ProxyError> {
        let mut r = Reader::new(frame.body());
        let portal = r.name()?;
        let name = r.name()?;
        self.link.in_batch = true;
        let crypt = self.bind_crypt(&frame);
        if !self.transaction_mode() {
            self.forward(&frame, Some(Pending::Bind(crypt)));
        } else if name.is_empty() {
            self.ensure_unnamed();
            let kept = self.unnamed_parse.as_deref();
            if let Some((effects, frame)) = kept.map(|u| (u.effects, u.frame.clone())) {
                if let Err(e) = self.note_pin(&effects) {
                    self.refuse(e);
                    return Ok(());
                }
                // What the cache drops for a write (read again only when there is a cache).
                if self.state.cache.is_some() {
                    if let Ok(parse) = messages::read_parse(frame.body()) {
                        self.note_cache_writes(parse.query);
                    }
                }
            }
            self.bind_listens("");
            if let Some(setting) = self.unnamed_parse.as_ref().and_then(|u| u.route_setting) {
                self.route.setting = setting;
            }
            self.forward(&frame, Some(Pending::Bind(crypt)));
        } else {
            if let Some(statement) = self.statements.get(name).cloned() {
                if let Err(e) = self.note_pin(&statement.effects) {
                    self.refuse(e);
                    return Ok(());
                }
                // Its text may EXECUTE a SQL-level statement: this server must hold the
                // client's one of that name, or none, even when the client has none left
                // (the server may hold another client's).
                self.carry_sql_prepared(&statement.query, &statement.effects, false);
            }
            let Some(statement) = self.server_statement(name) else {
                self.refuse(ProxyError::UnknownStatement(name.to_owned()));
                return Ok(());
            };
            self.bind_listens(name);
            self.note_cache_writes(&statement.query);
            self.note_effects(statement.effects);
            self.note_write(statement.reads);
            // A prepared `SET pgward.route` (pgx, tokio-postgres): PostgreSQL keeps it as a
            // placeholder setting; pgward routes by it from the next request on.
            if let Some(setting) = statement.route_setting {
                self.route.setting = setting;
            }
            let rest = r.rest();
            messages::frontend(self.server_mut().writer.buffer(), tag::BIND, |b| {
                b.put_slice(portal.as_bytes());
                b.put_u8(0);
                b.put_slice(statement.server_name.as_bytes());
                b.put_u8(0);
                b.put_slice(rest);
            });
            self.link.queue.push_back(Pending::Bind(crypt));
        }
        Ok(())
    }

    fn on_describe(&mut self, frame: Frame) -> Result<(), ProxyError> {
        let mut r = Reader::new(frame.body());
        let kind = r.u8()?;
        let name = r.name()?;
        self.link.in_batch = true;
        let crypt = self.describe_crypt(&frame);
        if kind != b'S' || !self.transaction_mode() {
            self.forward(&frame, Some(Pending::Describe(crypt)));
        } else if name.is_empty() {
            self.ensure_unnamed();
            self.forward(&frame, Some(Pending::Describe(crypt)));
        } else {
            let Some(statement) = self.server_statement(name) else {
                self.refuse(ProxyError::UnknownStatement(name.to_owned()));
                return Ok(());
            };
            messages::frontend(self.server_mut().writer.buffer(), tag::DESCRIBE, |b| {
                b.put_u8(b'S');
                b.put_slice(statement.server_name.as_bytes());
                b.put_u8(0);
            });
            self.link.queue.push_back(Pending::Describe(crypt));
        }
        Ok(())
    }

    /// Closing a named statement only forgets the client's name for it: the server copy stays
    /// for other clients running the same statement.
    fn on_close(&mut self, frame: Frame) -> Result<(), ProxyError> {
        let mut r = Reader::new(frame.body());
        let kind = r.u8()?;
        let name = r.name()?;
        self.link.in_batch = true;
        if kind == b'S' {
            if let Some(known) = self.known.existing() {
                known.analyses.remove(name);
            }
            self.forget_listen_bind(name);
        }
        if kind == b'S' && !name.is_empty() && self.transaction_mode() {
            self.statements.remove(name);
            self.link
                .queue
                .push_back(Pending::Reply(Reply::CloseComplete));
        } else {
            self.forward(&frame, Some(Pending::Close));
        }
        Ok(())
    }

    fn on_server_frame(&mut self, frame: FrameRef) {
        let t = frame.tag();
        let ends_request = t == b'Z'
            && matches!(
                self.link.queue.front(),
                Some(Pending::Sync(_) | Pending::Query(..))
            );
        if ends_request && frame.body().first() == Some(&b'I') && self.writes_pending() {
            self.publish_due = true;
        }
        if !self.crypt.enabled && self.fill.is_none() {
            return self.relay_server_frame(frame);
        }
        let (decrypted, withhold) = if self.crypt.enabled {
            self.decrypt_reply(frame)
        } else {
            (None, false)
        };
        let mark = self.client_w.pending();
        self.relay_server_frame(decrypted.as_ref().map_or(frame, Frame::view));
        if withhold {
            self.client_w.buffer().truncate(mark);
        }
        if self.fill.is_some() {
            if ends_request {
                self.finish_fill();
            } else {
                self.capture(mark);
            }
        }
    }

    fn relay_server_frame(&mut self, frame: FrameRef) {
        let t = frame.tag();
        self.traffic.1 += frame.as_bytes().len() as u64;
        let replaced = match t {
            b'C' => self.on_command_complete(frame),
            _ => None,
        };
        let frame = replaced.as_ref().map_or(frame, Frame::view);
        match t {
            b'S' => {
                self.server_mut().record_parameter(frame.body());
                // A setting PostgreSQL reports changed (TimeZone, DateStyle, application_name,
                // ...), maybe inside a function where the text shows no SET: in transaction
                // mode, read the settings back when the transaction ends, as after a SET.
                self.link.session_dirty |= self.mode == PoolMode::Transaction;
                self.client_w.queue(frame.as_bytes());
            }
            b'A' | b'N' => self.client_w.queue(frame.as_bytes()),
            b'G' | b'W' => {
                // COPY FROM STDIN began: Syncs the client sent after its Execute (libpq and
                // tokio-postgres send one) are ignored by the server and get no ReadyForQuery.
                self.link.copy_in = true;
                if let Some(head) = self.link.queue.pop_front() {
                    self.link.queue.retain(|p| !matches!(p, Pending::Sync(_)));
                    self.link.queue.push_front(head);
                }
                self.client_w.queue(frame.as_bytes());
            }
            b'Z' if matches!(self.link.queue.front(), Some(Pending::HiddenSync)) => {
                self.link.queue.pop_front();
                self.link.tx_status = frame.body().first().copied().unwrap_or(b'I');
            }
            b'E' if matches!(self.link.queue.front(), Some(Pending::Hidden)) => {
                self.link.queue.pop_front();
            }
            b'Z' => {
                self.link.copy_in = false;
                self.link.tx_status = frame.body().first().copied().unwrap_or(b'I');
                self.link.requests_done += 1;
                self.link.commands = 0;
                self.listen_request_done(self.link.tx_status);
                let known = self.known.existing();
                if let Some(known) =
                    known.filter(|k| k.catalog_dirty && self.link.tx_status == b'I')
                {
                    known.catalog_dirty = false;
                    self.state.catalogs.invalidate(&self.client.info.database);
                }
                // A transaction goes on (BEGIN READ ONLY on a replica): keep the client here.
                if self.link.tx_status != b'I' {
                    self.link.hold = false;
                }
                // Pop through the Sync/Query this answers (anything before it was skipped).
                while let Some(p) = self.link.queue.pop_front() {
                    if let Pending::Sync(sent) | Pending::Query(sent, _) = p {
                        self.request_done(sent.elapsed());
                        break;
                    }
                    self.forget_unfinished(p);
                }
                if !self.link.in_batch
                    && !self
                        .link
                        .queue
                        .iter()
                        .any(|p| matches!(p, Pending::Sync(_) | Pending::Query(..)))
                {
                    self.link.may_begin = false;
                }
                self.client_w.queue(frame.as_bytes());
            }
            b'E' => {
                self.link.copy_in = false;
                self.link.tx_failed = true;
                crate::metrics::error(error_sqlstate(frame).unwrap_or("XX"));
                self.client_w.queue(frame.as_bytes());
                // In the extended protocol the server now skips everything up to Sync.
                while let Some(p) = self.link.queue.front() {
                    if matches!(
                        p,
                        Pending::Sync(_) | Pending::Query(..) | Pending::HiddenSync
                    ) {
                        break;
                    }
                    let p = self.link.queue.pop_front().expect("front exists");
                    self.forget_unfinished(p);
                }
            }
            _ => {
                let (terminal, hidden) = match self.link.queue.front() {
                    Some(Pending::Parse { hidden, .. }) => (t == b'1', *hidden),
                    Some(Pending::Bind(_)) => (t == b'2', false),
                    Some(Pending::Describe(_)) => (matches!(t, b'T' | b'n'), false),
                    Some(Pending::Execute(_)) => (matches!(t, b'C' | b'I' | b's'), false),
                    Some(Pending::Close) => (t == b'3', false),
                    Some(Pending::Quiet(reply)) => (t == *reply, true),
                    Some(Pending::Refresh(_)) => (t == b'3', true),
                    _ => (false, false),
                };
                if !hidden {
                    self.client_w.queue(frame.as_bytes());
                }
                if terminal {
                    if let Some(Pending::Parse {
                        statement: Some(s), ..
                    }) = self.link.queue.pop_front()
                    {
                        self.server.as_ref().expect("attached").pool().remember(&s);
                    }
                }
            }
        }
        self.reply_ready();
    }

    /// A CommandComplete: the few pgward must act on are told by their first letter. Some
    /// when the client is to see another message instead (LISTEN's).
    fn on_command_complete(&mut self, frame: FrameRef) -> Option<Frame> {
        // Which statement of a simple Query this is (LISTEN replies are told by it).
        let ordinal = match self.link.queue.front() {
            Some(Pending::Query(..)) => {
                self.link.commands += 1;
                Some(self.link.commands - 1)
            }
            _ => None,
        };
        match frame.body() {
            b"DEALLOCATE ALL\0" | b"DISCARD ALL\0" => self.all_statements_dropped(),
            b"DO\0" => return self.listen_reply(ordinal),
            body if body.starts_with(b"ROLLBACK") => self.link.tx_failed = true,
            _ => {}
        }
        None
    }

    /// Accounts for a request the server has answered: its duration, and the traffic so far.
    fn request_done(&mut self, elapsed: std::time::Duration) {
        crate::metrics::query_duration(elapsed);
        let stats = &self.client.stats;
        stats.request(elapsed, self.link.tx_status == b'I');
        let (received, sent) = std::mem::take(&mut self.traffic);
        stats.traffic(received, sent);
        crate::metrics::bytes(received, sent);
    }

    /// A Parse the server skipped or refused created nothing there; a Close it skipped left
    /// the older copy in place.
    fn forget_unfinished(&mut self, pending: Pending) {
        let prepared = &mut self.server_mut().prepared;
        match pending {
            Pending::Parse {
                statement: Some(s), ..
            } if prepared
                .get(&s.hash)
                .is_some_and(|kept| Arc::ptr_eq(kept, &s)) =>
            {
                prepared.remove(&s.hash);
            }
            Pending::Refresh(copy) => {
                prepared.insert(copy.hash, copy);
            }
            _ => {}
        }
    }

    /// Writes pgward's own replies that have reached the head of the queue. Runs after every
    /// message, and there rarely are any: the check is inlined, the writing is not.
    #[inline]
    pub(super) fn reply_ready(&mut self) {
        if matches!(self.link.queue.front(), Some(Pending::Reply(_))) {
            self.write_replies();
        }
    }

    #[inline(never)]
    fn write_replies(&mut self) {
        while let Some(Pending::Reply(_)) = self.link.queue.front() {
            // The client has part of an answer: running the request again would repeat it.
            self.retry = None;
            let Some(Pending::Reply(reply)) = self.link.queue.pop_front() else {
                unreachable!()
            };
            let out = self.client_w.buffer();
            match reply {
                Reply::CloseComplete => messages::close_complete(out),
                Reply::Error(e) => messages::error_response(out, &e, false),
                Reply::Ready => {
                    messages::ready_for_query(out, self.link.tx_status);
                    self.link.requests_done += 1;
                }
            }
        }
    }
}

/// Messages that run SQL, and so pass the policy stage first.
pub(super) fn runs_sql(tag: u8) -> bool {
    matches!(
        tag,
        tag::QUERY | tag::PARSE | tag::BIND | tag::FUNCTION_CALL
    )
}

/// Messages the encryption stage may rewrite or must see (statement names it tracks).
fn stages_rewrite(tag: u8) -> bool {
    matches!(tag, tag::QUERY | tag::PARSE | tag::BIND | tag::CLOSE)
}

/// The SQLSTATE of an ErrorResponse.
fn error_sqlstate(frame: FrameRef<'_>) -> Option<&str> {
    let mut r = Reader::new(frame.body());
    while let Ok(code) = r.u8() {
        // Fields are in the client's encoding; the SQLSTATE is ASCII.
        let value = r.cstr_bytes().ok()?;
        if code == b'C' {
            return std::str::from_utf8(value).ok();
        }
    }
    None
}

/// A server's FATAL ErrorResponse as an error of the request alone (same SQLSTATE and text).
fn server_error(frame: FrameRef) -> ProxyError {
    let (mut sqlstate, mut message) = ("08006".to_owned(), String::new());
    let mut r = Reader::new(frame.body());
    while let Ok(code) = r.u8() {
        let Ok(value) = r.cstr_bytes() else { break };
        let value = String::from_utf8_lossy(value).into_owned();
        match code {
            b'C' => sqlstate = value,
            b'M' => message = value,
            _ => {}
        }
    }
    ProxyError::FromServer {
        sqlstate,
        message,
        fatal: false,
    }
}

/// An ErrorResponse that ends the connection (FATAL or PANIC): the server is going away.
/// Asked of every server message: the tag test is inlined.
#[inline]
fn is_fatal_error(frame: FrameRef) -> bool {
    frame.tag() == b'E' && is_fatal_severity(frame)
}

#[inline(never)]
fn is_fatal_severity(frame: FrameRef) -> bool {
    let mut r = Reader::new(frame.body());
    while let Ok(code) = r.u8() {
        let Ok(value) = r.cstr_bytes() else {
            return false;
        };
        if code == b'V' || code == b'S' {
            return matches!(value, b"FATAL" | b"PANIC");
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answered_queue_goes_to_the_next_request_on_the_thread() {
        let mut first = Link::new(false, false, false);
        first.reserve(5);
        first.queue.push_back(Pending::Close);
        // A queue still owed replies is kept.
        first.release_queue();
        assert_eq!(first.queue.len(), 1);
        first.queue.pop_front();
        first.release_queue();
        assert_eq!(first.queue.capacity(), 0, "an idle link holds no queue");

        let mut next = Link::new(false, false, false);
        next.reserve(2);
        // Room for 2 from malloc would be less than the 5 the spare has.
        assert!(
            next.queue.is_empty() && next.queue.capacity() >= 5,
            "the spare is reused"
        );
    }
}
