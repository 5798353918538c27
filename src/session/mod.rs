//! One client connection, from startup to goodbye.
//!
//! Phases: negotiate (TLS, startup packet) -> authenticate -> greet (a server connection's
//! parameters) -> serve requests. Serving alternates between idle (no server connection; only
//! in transaction mode) and attached (a leased server connection, messages pumped both ways by
//! `pump`). In transaction mode the lease ends when the server reports an idle transaction
//! state with nothing outstanding; in session mode it lasts as long as the client.

mod admit;
pub mod auth;
mod cache;
mod encrypt;
mod listen;
pub mod params;
mod pin;
pub mod prepared;
mod pump;
mod sqlprep;
pub mod sqlscan;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{ready, Poll};

use pgwire::messages::startup::NegotiateProtocolVersion;
use pgwire::messages::Message;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::PoolMode;
use crate::metrics::ClientState;
use crate::pool::{Credential, Lease, Pool, PoolKey, ServerError};
use crate::protocol::messages::{self, tag};
use crate::protocol::startup::{self, FirstPacket, StartupRequest};
use crate::protocol::{Frame, FrameError, FrameReader, FrameWriter, ProxyError};
use crate::route::{Tried, Want};
use crate::sql::{Analysis, Class, Needle, RouteHint, RouteSetting, ROUTE_PARAM};
use crate::state::cancel::{CancelHandle, CancelTarget};
use crate::state::clients::{ClientHandle, Stop};
use crate::state::{Runtime, State};
use params::Settings;
use prepared::Statement;
use pump::{Exit, Link};

/// Longer texts are not kept in `KnownState::memo` (a bulk INSERT would stay in memory).
const MEMO_MAX_LEN: usize = 4096;

/// A request is buffered whole before it is routed, up to this size; a larger one goes to
/// the primary as it streams in.
const REQUEST_BUFFER_LIMIT: usize = 1 << 20;

/// Entry point for an accepted TCP connection. Negotiation and login run boxed, made here
/// (not an async fn, so the connection's arguments are not kept in the task): once they are
/// done, the task holds only what serving the session needs (memory per idle client).
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
) -> impl std::future::Future<Output = ()> {
    let opening = Box::pin(open(tcp, peer, state));
    async move {
        let Some((mut session, _client_slot)) = opening.await else {
            return;
        };
        let outcome = session.run().await;
        finish(session, outcome).await;
    }
}

/// Logs the client's departure and runs `Session::finish`, boxed and built outside the
/// task's future (not an async fn, as `serve`), so the task holds only a pointer for it.
fn finish(
    session: Box<Session>,
    outcome: Result<(), ProxyError>,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()>>> {
    let id = session.client.info.id;
    match &outcome {
        Ok(()) => tracing::info!(client = id, "client disconnected"),
        Err(e) => tracing::info!(client = id, error = %e, "client disconnected with an error"),
    }
    Box::pin(async move { session.finish(outcome).await })
}

/// What mimalloc serves from its per-thread free lists. A request's future is allocated for
/// every request, and one past this size takes the allocator's slow path (about 330
/// instructions more, measured) and a longer copy into its box.
const REQUEST_FUTURE_LIMIT: usize = 1024;

/// `Box::pin`, for a request's future: the build fails if one outgrows
/// `REQUEST_FUTURE_LIMIT`. Box the new wait that grew it, as `Pool::checkout` boxes the wait
/// for a connection.
fn boxed_request<F: std::future::Future>(future: F) -> std::pin::Pin<Box<F>> {
    const {
        assert!(
            std::mem::size_of::<F>() <= REQUEST_FUTURE_LIMIT,
            "a request's future outgrew REQUEST_FUTURE_LIMIT"
        )
    };
    Box::pin(future)
}

/// Negotiates the connection and logs the client in. None when it was refused, or was an
/// admin console (served here).
async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
) -> Option<(Box<Session>, OwnedSemaphorePermit)> {
    let rt = state.runtime.load_full();
    let timeout = rt.config.server.startup_timeout;
    let negotiated = tokio::time::timeout(
        timeout,
        startup::negotiate(
            tcp,
            rt.tls.as_ref().map(|t| &t.acceptor),
            rt.config.server.tls_mode,
        ),
    )
    .await;
    let (stream, first) = match negotiated {
        Ok(Ok(ok)) => ok,
        Ok(Err((stream, err))) => {
            tracing::debug!(%peer, error = %err, "startup failed");
            if let Some(stream) = stream {
                startup::reject(stream, &err).await;
            }
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "startup timed out");
            return None;
        }
    };
    let request = match first {
        FirstPacket::Cancel { pid, secret } => {
            state.cancels.cancel(pid, secret).await;
            return None;
        }
        FirstPacket::Startup(request) => request,
    };
    let Ok(client_slot) = state.client_slots.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "max_clients reached; refusing a client");
        startup::reject(stream, &ProxyError::TooManyClients).await;
        return None;
    };
    if rt.config.server.tls_mode == crate::config::TlsMode::Require && !stream.is_tls() {
        startup::reject(stream, &ProxyError::TlsRequired).await;
        return None;
    }
    let (reader, writer) = stream.into_framed(rt.config.server.max_message_size);
    let client = state
        .clients
        .register(&request.user, &request.database, peer);
    let session = log_in(reader, writer, state, rt, request, client).await?;
    Some((session, client_slot))
}

/// Logs the client in: its session, or None when it was refused or was served as an admin
/// console.
async fn log_in(
    reader: FrameReader,
    writer: FrameWriter,
    state: Arc<State>,
    rt: Arc<Runtime>,
    request: StartupRequest,
    client: ClientHandle,
) -> Option<Box<Session>> {
    let timeout = rt.config.server.startup_timeout;
    // The session's events name the client by id (a span per client would cost each idle
    // client some 400 bytes); this line says who that is.
    let info = client.info.clone();
    let (id, addr, user, database) = (info.id, info.addr, &info.user, &info.database);
    let login = login(reader, writer, &state, &rt, request, client);
    match tokio::time::timeout(timeout, login).await {
        Ok(Ok(Login::Session(session))) => {
            tracing::info!(client = id, %addr, user, database, "client connected");
            Some(session)
        }
        Ok(Ok(Login::Console(console))) => {
            console.run().await;
            None
        }
        Ok(Err((mut writer, err))) => {
            if let ProxyError::AuthFailed(_) = err {
                crate::metrics::auth_failed();
            }
            tracing::info!(client = id, %addr, user, database, error = %err, "login refused");
            messages::error_response(writer.buffer(), &err, true);
            writer.shutdown().await;
            None
        }
        Err(_) => {
            tracing::info!(client = id, %addr, user, database, "login timed out");
            None
        }
    }
}

/// What a logged-in client gets.
enum Login {
    Session(Box<Session>),
    /// The admin console (database `pgward`, an admin user).
    Console(crate::admin::console::Console),
}

/// Authenticates the client, leases a server connection for its settings and greets it with
/// that server's parameters. On failure the writer comes back to report the error.
async fn login(
    mut reader: FrameReader,
    mut writer: FrameWriter,
    state: &Arc<State>,
    rt: &Arc<Runtime>,
    request: StartupRequest,
    client: ClientHandle,
) -> Result<Login, (FrameWriter, ProxyError)> {
    if request.minor_version > 0 || !request.unsupported_options.is_empty() {
        NegotiateProtocolVersion::new(0, request.unsupported_options.clone())
            .encode(writer.buffer())
            .expect("encode NegotiateProtocolVersion");
    }
    let login = match auth::authenticate(
        &mut reader,
        &mut writer,
        rt,
        &request.user,
        &request.database,
        request.tls,
    )
    .await
    {
        Ok(login) => login,
        Err(e) => return Err((writer, e)),
    };
    if request.database == crate::admin::console::DATABASE {
        if !rt.config.auth.admin_users.contains(&request.user) {
            return Err((
                writer,
                ProxyError::PermissionDenied(format!(
                    "pgward: permission denied: {} is not an admin user (auth.admin_users)",
                    request.user
                )),
            ));
        }
        let console = crate::admin::console::Console::new(reader, writer, state.clone(), client);
        return Ok(Login::Console(console));
    }
    let mut wanted = request.params;
    let setting = match wanted.remove(ROUTE_PARAM) {
        None => RouteSetting::Auto,
        Some(value) => match parse_route_setting(&value) {
            Some(setting) => setting,
            None => return Err((writer, ProxyError::InvalidParameter(ROUTE_PARAM.into()))),
        },
    };
    let mut session = Session {
        state: state.clone(),
        rt: rt.clone(),
        mode: rt.config.pool.mode,
        max_prepared: rt.config.pool.max_prepared_statements,
        pools: vec![None; rt.router.backends.len()],
        settings_unknown: false,
        known: Default::default(),
        pool_user: login.backend_user,
        pool_credential: login.credential,
        cancel: state.cancels.register(),
        startup: wanted.clone(),
        wanted,
        statements: BTreeMap::new(),
        unnamed_parse: None,
        server: None,
        backend: 0,
        route: RouteState {
            setting,
            min_lsn: 0,
        },
        retry: None,
        link: Link::default(),
        client,
        traffic: (0, 0),
        crypt: Default::default(),
        fill: None,
        cache_db: None,
        writes: Default::default(),
        publish_due: false,
        listening: None,
        pin: Default::default(),
        sql_statements: BTreeMap::new(),
        custom_settings: None,
        client_r: reader,
        client_w: writer,
    };
    // The greeting needs a server. In transaction mode any will do, so read-only clients keep
    // working through a primary outage; in session mode it is the client's server for good.
    let first = match (session.mode, setting) {
        (PoolMode::Session, RouteSetting::Replica) => Want::Read { min_lsn: 0 },
        _ => Want::Primary,
    };
    let greet = match session.attach_for(first, 0).await {
        Err(e) if e.backend_down() && session.mode == PoolMode::Transaction => {
            session.attach_for(Want::Read { min_lsn: 0 }, 0).await
        }
        other => other,
    };
    if let Err(e) = greet {
        return Err((session.client_w, e));
    }
    let conn = &session.server.as_ref().expect("attached").conn;
    if session.mode == PoolMode::Session {
        // The client keeps this server: it is told the server's own process id.
        let target = session.cancel.slot.target();
        session.cancel = state.cancels.register_as(Some(conn.pid));
        session.cancel.slot.set(target);
    }
    let w = session.client_w.buffer();
    for (name, value) in &conn.reported {
        messages::parameter_status(w, name, value);
    }
    messages::backend_key_data(w, session.cancel.slot.pid, session.cancel.slot.secret);
    messages::ready_for_query(w, b'I');
    if session.client_w.flush().await.is_err() {
        return Err((
            session.client_w,
            ProxyError::protocol("client went away during login"),
        ));
    }
    if session.mode == PoolMode::Transaction {
        session.release().await;
    }
    Ok(Login::Session(Box::new(session)))
}

/// Hot standbys refuse serializable transactions (see `Session::frame_reads`).
const SERIALIZABLE: Needle = Needle::new(b"serializable");

fn parse_route_setting(value: &str) -> Option<RouteSetting> {
    match value.trim().to_ascii_lowercase().as_str() {
        "primary" => Some(RouteSetting::Primary),
        "replica" => Some(RouteSetting::Replica),
        "auto" | "default" | "" => Some(RouteSetting::Auto),
        _ => None,
    }
}

/// A session's maps by statement name are BTreeMaps: half a HashMap's size when empty, as
/// they are in most sessions, and a session holds few names.
pub(crate) struct Session {
    state: Arc<State>,
    /// The configuration this client connected with.
    rt: Arc<Runtime>,
    mode: PoolMode,
    max_prepared: usize,
    /// This client's pools (its backend user and database), one per backend, made on first use.
    pools: Vec<Option<Arc<Pool>>>,
    /// Session mode: the client ran something that may have changed its settings, which
    /// pgward does not read back there, so its search_path is not known for sure.
    settings_unknown: bool,
    /// What statement analysis keeps for this client (policy, encryption, cache, routing).
    known: Known,
    /// The role this client's server connections log in as, and with what.
    pool_user: Arc<str>,
    pool_credential: Arc<Credential>,
    cancel: CancelHandle,
    /// The run-time settings this client expects on every server connection it gets.
    wanted: Settings,
    /// The settings of its startup packet: its reset values, as PostgreSQL keeps them.
    startup: Settings,
    /// The client's named prepared statements (transaction mode).
    statements: BTreeMap<String, Arc<Statement>>,
    /// The client's last unnamed Parse, re-sent if a later Bind lands on another server.
    unnamed_parse: Option<Box<UnnamedParse>>,
    server: Option<Lease>,
    /// Index (in the router's backends) of the server attached.
    backend: usize,
    route: RouteState,
    /// A read request as it was sent, kept until its server answers, so a server that dies
    /// first costs the client nothing: the request runs again elsewhere.
    retry: Option<Box<Retry>>,
    /// Protocol state of the current server attachment.
    link: Link,
    /// This client in the registry (admin console, KILL) and the client gauges.
    client: ClientHandle,
    /// Bytes received from and sent to the client since the last request was accounted.
    traffic: (u64, u64),
    /// Column encryption's state (plans of prepared statements, the result being read).
    crypt: encrypt::CryptSlot,
    /// The result-cache entry the request in flight fills.
    fill: Option<Box<cache::Fill>>,
    /// This client's database in the result cache, from its first cacheable request on
    /// (the database's invalidation listener runs from then on: `Bus::ensure`).
    cache_db: Option<crate::cache::Database>,
    /// What the current transaction wrote (for cache invalidation).
    writes: cache::Writes,
    /// A transaction that wrote has ended: announce it before its ReadyForQuery goes out.
    publish_due: bool,
    /// LISTEN and NOTIFY in transaction mode, made when the client first uses them.
    listening: Option<Box<listen::Listening>>,
    /// Whether session state keeps this client on its server connection (transaction mode).
    pin: pin::Pin,
    /// The client's SQL-level prepared statements (PREPARE text by name), transaction mode.
    sql_statements: BTreeMap<String, Arc<[u8]>>,
    /// Custom settings (`app.tenant_id`) the client's SQL named, read back by name after
    /// its transactions (see `sqlscan::custom_settings`); transaction mode. Boxed: one
    /// pointer in every idle client, most of which never set one.
    #[allow(clippy::box_collection)]
    custom_settings: Option<Box<std::collections::BTreeSet<String>>>,
    client_r: FrameReader,
    client_w: FrameWriter,
}

/// What statement analysis keeps for a client, allocated at its first analysis: a client
/// that never needs one (no policy, encryption, cache or replicas) holds a null pointer.
#[derive(Default)]
struct Known(std::cell::OnceCell<Box<KnownState>>);

#[derive(Default)]
struct KnownState {
    /// Analyses of the client's prepared statements by name ("" for the unnamed one), kept
    /// while a policy is on, so a Bind is checked with the search_path of its execution.
    analyses: BTreeMap<String, Arc<Analysis>>,
    /// The catalog of this client's database and login, once the policy needed it.
    catalog: Option<Arc<crate::catalog::Entry>>,
    /// DDL went through: the catalog is marked stale again when its transaction ends.
    catalog_dirty: bool,
    /// This client as the policy sees it, kept while its search_path stays the same.
    subject: Option<admit::CachedSubject>,
    /// The policy's last Allow for this client and what it was for: a client mostly runs
    /// the same statements, and this spares the shared verdict cache's lookup. Weak, so a
    /// replaced policy is freed (its allocation stays, so no new policy takes its address).
    allowed: Option<(
        std::sync::Weak<crate::policy::Policy>,
        crate::policy::DecisionKey,
    )>,
    /// The last text analysed and what is known of it: the stages ask about the same text
    /// in turn.
    memo: std::cell::RefCell<Memo>,
}

#[derive(Default)]
struct Memo {
    text: Vec<u8>,
    analysis: Option<Arc<Analysis>>,
    /// Its `sqlscan::effects`, once asked for.
    effects: Option<sqlscan::Effects>,
}

impl Known {
    fn get(&self) -> &KnownState {
        self.0.get_or_init(Box::default)
    }

    fn get_mut(&mut self) -> &mut KnownState {
        self.get();
        self.0.get_mut().expect("just made")
    }

    /// The state if there is any, without making it.
    fn peek(&self) -> Option<&KnownState> {
        self.0.get().map(|b| &**b)
    }

    /// As `peek`, to change it.
    fn existing(&mut self) -> Option<&mut KnownState> {
        self.0.get_mut().map(|b| &mut **b)
    }
}

struct UnnamedParse {
    frame: Frame,
    effects: sqlscan::Effects,
    reads: bool,
    route_setting: Option<RouteSetting>,
}

struct RouteState {
    setting: RouteSetting,
    /// WAL position of this client's last write; its reads need a server that has replayed it.
    min_lsn: u64,
}

enum AttachError {
    Backend(ProxyError),
    Client(ProxyError),
}

struct Retry {
    frames: Vec<Frame>,
    /// Where the server's answer begins in the client's output buffer, while all of it
    /// is still there (see `Session::answer_so_far`).
    answer_from: Option<usize>,
    /// Statement names the request created, forgotten before it runs again.
    new_names: Vec<String>,
    tried: Tried,
}

/// One client request: a Query, or extended-protocol messages up to Sync or Flush.
struct Request {
    frames: Vec<Frame>,
    /// The whole request up to its Sync (or a Query): false when it was cut off at
    /// REQUEST_BUFFER_LIMIT, ended at a Flush, or ended without either.
    complete: bool,
}

/// What became of a request read while no server was attached.
enum Began {
    /// Answered, refused or failed without a server: wait for the next one.
    Done,
    /// Sent to a server: pump.
    Attached,
    ClientGone,
}

impl Session {
    /// Serves the client until it leaves. Only the wait for the next request lives in this
    /// future; a request's own work (the stages, checkout, pumping) is boxed while it runs,
    /// so an idle client costs little memory.
    async fn run(&mut self) -> Result<(), ProxyError> {
        loop {
            let more = if self.server.is_none() {
                let Some(frame) = self.next_request().await? else {
                    return Ok(());
                };
                boxed_request(self.serve_request(frame)).await?
            } else {
                boxed_request(self.serve_attached()).await?
            };
            if !more {
                return Ok(());
            }
        }
    }

    /// A request read while no server was attached, and then whatever its server serves:
    /// one future, so one allocation per request. False when the client has left.
    async fn serve_request(&mut self, frame: Frame) -> Result<bool, ProxyError> {
        match self.begin_request(frame).await? {
            Began::Done => Ok(true),
            Began::ClientGone => Ok(false),
            Began::Attached => self.serve_attached().await,
        }
    }

    /// Runs the pipeline over a request that `frame` begins, up to sending it to a server.
    async fn begin_request(&mut self, frame: Frame) -> Result<Began, ProxyError> {
        match frame.tag() {
            tag::TERMINATE => return Ok(Began::ClientGone),
            // Nothing is pending, so a lone Sync only asks for ReadyForQuery.
            tag::SYNC => {
                messages::ready_for_query(self.client_w.buffer(), b'I');
                return Ok(Began::Done);
            }
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {
                return Ok(Began::Done)
            }
            _ => {}
        }
        let Some(mut request) = self.read_request(frame).await? else {
            return Ok(Began::ClientGone);
        };
        // The pipeline, in order: policy, encryption, then where the request runs; each
        // asks about the SQL, analysed once up front.
        self.analyse_ahead(&request.frames).await;
        if let Err(err) = self.admit(&request.frames).await {
            self.fail_request(&request.frames, &err).await?;
            return Ok(Began::Done);
        }
        if let Err(err) = self.encrypt(&mut request.frames).await {
            self.fail_request(&request.frames, &err).await?;
            return Ok(Began::Done);
        }
        if self.answer_locally(&request)? {
            return Ok(Began::Done);
        }
        let mut want = self.plan(&request);
        if self.mode == PoolMode::Transaction && request.complete {
            match self.cache_lookup(&request.frames).await {
                cache::Cached::Answered => return Ok(Began::Done),
                // Fills run on the primary: a lagging replica could store rows a
                // write already invalidated.
                cache::Cached::Fill(fill) => {
                    self.fill = Some(fill);
                    want = Want::Primary;
                }
                cache::Cached::Pass => {}
            }
        }
        if let Some(Exit::ClientGone) = self.dispatch(request.frames, want, 0).await? {
            return Ok(Began::ClientGone);
        }
        if self.server.is_none() {
            // The request failed before reaching a server: nothing to fill.
            self.fill = None;
            return Ok(Began::Done);
        }
        Ok(Began::Attached)
    }

    /// Pumps while a server is attached, then releases it, retries elsewhere or reports a
    /// loss. False when the client is gone.
    async fn serve_attached(&mut self) -> Result<bool, ProxyError> {
        loop {
            match self.pump().await? {
                Exit::Release => self.release().await,
                Exit::ClientGone => return Ok(false),
                Exit::Retry { ban } => {
                    if let Some(Exit::ClientGone) = self.retry_elsewhere(ban).await? {
                        return Ok(false);
                    }
                }
                Exit::Lost(err) => {
                    if !self.loss_is_hideable() {
                        // A transaction block (or the session's state) went with the server.
                        return Err(err);
                    }
                    tracing::info!(client = self.client.info.id, error = %err, "server connection lost outside a transaction; failing the requests in flight");
                    self.drop_server();
                    if !self.answer_lost(&err).await? {
                        return Ok(false);
                    }
                }
            }
            if self.server.is_none() {
                return Ok(true);
            }
        }
    }

    /// Waits, without a server connection, for the first message of the next request.
    /// None when the client leaves or pgward shuts down.
    async fn next_request(&mut self) -> Result<Option<Frame>, ProxyError> {
        // What the last request's link queued is answered: an idle client keeps no queue.
        self.link.release_queue();
        self.forget_long_memo();
        let Session {
            client_r: reader,
            client_w: writer,
            client,
            listening,
            ..
        } = self;
        // A poll function rather than a select: the wait is what an idle client's task
        // holds, and this way it holds nothing but the borrows.
        std::future::poll_fn(|cx| loop {
            if ready!(writer.poll_flush(cx)).is_err() {
                return Poll::Ready(Ok(None));
            }
            if let Some(frame) = reader.try_frame().map_err(client_frame_error)? {
                return Poll::Ready(Ok(Some(frame)));
            }
            writer.release_idle();
            if let Poll::Ready(stop) = client.poll_stop(cx, true) {
                return Poll::Ready(Err(stop_error(stop)));
            }
            if let Poll::Ready(Some(n)) = poll_notification(listening, cx) {
                queue_notifications(listening, writer, &n);
                continue;
            }
            let filled = reader.poll_fill(cx);
            if filled.is_pending() {
                reader.release_idle();
            }
            match ready!(filled) {
                Ok(()) => {}
                Err(FrameError::Eof) | Err(FrameError::Io(_)) => return Poll::Ready(Ok(None)),
                Err(e) => return Poll::Ready(Err(client_frame_error(e))),
            }
        })
        .await
    }

    /// Reads the rest of the request `first` begins, so it can be routed as a whole.
    /// None when the client leaves.
    async fn read_request(&mut self, first: Frame) -> Result<Option<Request>, ProxyError> {
        // A Query is the whole request; an extended-protocol one is most often
        // Parse/Bind/Describe/Execute/Sync: room for it at once rather than three regrowths.
        let mut frames = Vec::with_capacity(if first.tag() == tag::QUERY { 1 } else { 8 });
        frames.push(first);
        let mut request = Request {
            complete: true,
            frames,
        };
        let mut size = 0;
        loop {
            let last = &request.frames[request.frames.len() - 1];
            size += last.as_bytes().len();
            match last.tag() {
                tag::QUERY | tag::FUNCTION_CALL | tag::SYNC => return Ok(Some(request)),
                // The batch goes on after the client has read what it flushed: what follows
                // is unknown, so the request is not judged a read.
                tag::FLUSH => {
                    request.complete = false;
                    return Ok(Some(request));
                }
                tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE
                    if size < REQUEST_BUFFER_LIMIT => {}
                _ => {
                    request.complete = false;
                    return Ok(Some(request));
                }
            }
            match self.client_r.read_frame().await {
                Ok(frame) => request.frames.push(frame),
                Err(FrameError::Eof | FrameError::Io(_)) => return Ok(None),
                Err(e) => return Err(client_frame_error(e)),
            }
        }
    }

    /// Answers, without a server, the requests that need none: `SET pgward.route`, and a lone
    /// `Parse; Sync` of a statement this client's pools already know.
    fn answer_locally(&mut self, request: &Request) -> Result<bool, ProxyError> {
        if self.mode != PoolMode::Transaction || !request.complete {
            return Ok(false);
        }
        Ok(self.set_route_locally(&request.frames)? || self.prepare_locally(&request.frames)?)
    }

    /// `SET pgward.route = ...` and `RESET pgward.route` as a simple query set pgward's own
    /// routing preference and are answered here. (Sent as a prepared statement, they reach
    /// PostgreSQL, which keeps them as a placeholder setting, and pgward notes them at Bind.)
    fn set_route_locally(&mut self, frames: &[Frame]) -> Result<bool, ProxyError> {
        let [query] = frames else {
            return Ok(false);
        };
        if query.tag() != tag::QUERY {
            return Ok(false);
        }
        let sql = messages::read_query(query.body())?;
        let Some(setting) = self.route_setting_of(sql) else {
            return Ok(false);
        };
        self.route.setting = setting;
        messages::command_complete(self.client_w.buffer(), "SET");
        messages::ready_for_query(self.client_w.buffer(), b'I');
        Ok(true)
    }

    /// The routing preference `sql` sets, if it is `SET/RESET pgward.route`.
    fn route_setting_of(&self, sql: &[u8]) -> Option<RouteSetting> {
        if sqlscan::contains_ignore_case(sql, &crate::sql::ROUTE_PARAM_NEEDLE) {
            self.analyze(sql).route_setting
        } else {
            None
        }
    }

    /// A lone `Parse; Sync` (libpq's PQprepare) of a statement this client's pools already
    /// know is answered here; the server copy is made at its first Bind. Besides saving a round
    /// trip, this keeps a client that prepares synchronously from waiting for a server while
    /// other clients of its own thread hold them all (pgbench -j).
    fn prepare_locally(&mut self, frames: &[Frame]) -> Result<bool, ProxyError> {
        if frames.len() != 2 || frames[0].tag() != tag::PARSE || frames[1].tag() != tag::SYNC {
            return Ok(false);
        }
        // A malformed Parse is left to the pump, which answers it.
        let Ok(parse) = messages::read_parse(frames[0].body()) else {
            return Ok(false);
        };
        if parse.name.is_empty() || self.statements.contains_key(parse.name) {
            return Ok(false);
        }
        let statement = self.statement(parse.query, parse.param_types);
        if statement.effects.any() || !self.pools.iter().flatten().any(|p| p.knows(&statement)) {
            return Ok(false);
        }
        self.statements.insert(parse.name.to_owned(), statement);
        self.note_prepared(parse.name, parse.query);
        messages::parse_complete(self.client_w.buffer());
        messages::ready_for_query(self.client_w.buffer(), b'I');
        Ok(true)
    }

    /// `sql` is in the client's encoding; text that is not UTF-8 is not understood (it runs
    /// on the primary, and the policy refuses it as unparsable under on_unparsed = "deny").
    fn analyze(&self, sql: &[u8]) -> Arc<Analysis> {
        if let Some(analysis) = self.memoized(sql) {
            return analysis;
        }
        let analysis = match std::str::from_utf8(sql) {
            Ok(text) => self.rt.analyzer.analyze(text),
            Err(_) => Arc::new(crate::sql::undecodable()),
        };
        if sql.len() <= MEMO_MAX_LEN {
            self.remember_analysis(sql, &analysis);
        }
        analysis
    }

    /// The analysis of `sql` when it is the last text analysed.
    fn memoized(&self, sql: &[u8]) -> Option<Arc<Analysis>> {
        let memo = self.known.get().memo.borrow();
        match &memo.analysis {
            Some(analysis) if memo.text == sql => Some(analysis.clone()),
            _ => None,
        }
    }

    fn remember_analysis(&self, sql: &[u8], analysis: &Arc<Analysis>) {
        let mut memo = self.known.get().memo.borrow_mut();
        // The buffer keeps its capacity: no allocation per statement once it has grown.
        memo.text.clear();
        memo.text.extend_from_slice(sql);
        memo.analysis = Some(analysis.clone());
        memo.effects = None;
    }

    /// `sqlscan::effects(sql)`, scanned once per text when it is the text last analysed
    /// (the policy and the pump both ask about a request's statement).
    fn effects(&self, sql: &[u8]) -> sqlscan::Effects {
        let Some(known) = self.known.peek() else {
            return sqlscan::effects(sql);
        };
        let mut memo = known.memo.borrow_mut();
        if memo.text != sql {
            return sqlscan::effects(sql);
        }
        *memo.effects.get_or_insert_with(|| sqlscan::effects(sql))
    }

    /// Analyses the SQL of a request before the stages ask for it, awaiting the parse of a
    /// text not seen before instead of blocking the runtime thread on it (the thread serves
    /// other clients meanwhile). The stages then find the analysis in the memo, or in the
    /// analyzer's cache for all but the last text. Nothing is parsed when no stage will ask.
    async fn analyse_ahead(&mut self, frames: &[Frame]) {
        let needed = self.rt.router.splits()
            || self.rt.crypto.is_some()
            || self.state.cache.is_some()
            || self.state.policy_on();
        if !needed {
            return;
        }
        for sql in frames.iter().filter_map(messages::sql_text) {
            if self.memoized(sql).is_some() {
                continue;
            }
            let Ok(text) = std::str::from_utf8(sql) else {
                continue;
            };
            let analysis = self.rt.analyzer.analyze_async(text).await;
            // Kept whatever its length until the client is idle again (`next_request`).
            self.remember_analysis(sql, &analysis);
        }
    }

    /// Forgets a long text the memo kept for the request that just ended.
    fn forget_long_memo(&mut self) {
        if let Some(known) = self.known.existing() {
            let memo = known.memo.get_mut();
            if memo.text.capacity() > MEMO_MAX_LEN {
                *memo = Default::default();
            }
        }
    }

    /// The routing class of `sql`; without replicas to route to there is nothing to decide,
    /// and nothing is parsed.
    fn class_of(&self, sql: &[u8]) -> Class {
        if self.rt.router.splits() {
            self.analyze(sql).class
        } else {
            Class::Write
        }
    }

    /// A prepared statement with what executing it may change and where it may run.
    fn statement(&self, query: &[u8], param_types: &[u8]) -> Arc<Statement> {
        self.statement_with(query, param_types, self.effects(query))
    }

    /// As `statement`, with the `sqlscan::effects` of `query` the caller already has.
    fn statement_with(
        &self,
        query: &[u8],
        param_types: &[u8],
        effects: sqlscan::Effects,
    ) -> Arc<Statement> {
        let reads = self.class_of(query) == Class::Read;
        let route_setting = self.route_setting_of(query);
        let (search_path, role) = self.name_context();
        Statement::new(
            query,
            param_types,
            (search_path.map(String::as_str), role.map(String::as_str)),
            effects,
            reads,
            route_setting,
        )
    }

    /// Where a request should run. A read goes to a replica only when every statement in it
    /// certainly reads (or a hint or `pgward.route` says so); all else runs on the primary.
    fn plan(&self, request: &Request) -> Want {
        let router = &self.rt.router;
        if !router.splits() || self.route.setting == RouteSetting::Primary {
            return Want::Primary;
        }
        let mut reads = request.complete;
        let mut hint = None;
        for frame in &request.frames {
            let (frame_reads, frame_hint) = self.frame_reads(frame);
            reads &= frame_reads;
            hint = hint.or(frame_hint);
        }
        // Hot standbys refuse serializable transactions.
        if self
            .wanted
            .get("default_transaction_isolation")
            .is_some_and(|v| v.eq_ignore_ascii_case("serializable"))
        {
            reads = false;
        }
        let read = match (hint, self.route.setting) {
            (Some(RouteHint::Primary), _) => false,
            (Some(RouteHint::Replica), _) | (None, RouteSetting::Replica) => true,
            _ => reads,
        };
        if !read {
            return Want::Primary;
        }
        Want::Read {
            min_lsn: self.plan_min_lsn(),
        }
    }

    /// Whether one message of a request only reads, and its routing hint.
    fn frame_reads(&self, frame: &Frame) -> (bool, Option<RouteHint>) {
        let sql = match frame.tag() {
            tag::QUERY => messages::read_query(frame.body()).ok(),
            tag::PARSE => messages::read_parse(frame.body()).ok().map(|p| p.query),
            tag::BIND | tag::DESCRIBE => {
                return (self.named_statement_reads(frame).unwrap_or(false), None);
            }
            tag::EXECUTE | tag::SYNC | tag::FLUSH | tag::CLOSE => return (true, None),
            _ => return (false, None),
        };
        match sql {
            // Session state that pins the client lives on the primary.
            Some(sql) if self.mode == PoolMode::Transaction && self.effects(sql).pin.is_some() => {
                (false, None)
            }
            Some(sql) => {
                let a = self.analyze(sql);
                let reads = match a.class {
                    Class::Read => true,
                    // Hot standbys refuse serializable transactions.
                    Class::Begin { read_only: true } => {
                        !sqlscan::contains_ignore_case(sql, &SERIALIZABLE)
                    }
                    _ => false,
                };
                (reads, a.hint)
            }
            None => (false, None),
        }
    }

    /// Whether the statement a Bind or Describe names only reads. A name not known yet is
    /// one this same request's Parse creates, and that Parse is judged on its own.
    fn named_statement_reads(&self, frame: &Frame) -> Option<bool> {
        let mut r = messages::Reader::new(frame.body());
        let name = if frame.tag() == tag::BIND {
            r.cstr().ok()?;
            r.cstr().ok()?
        } else {
            if r.u8().ok()? != b'S' {
                return Some(true);
            }
            r.cstr().ok()?
        };
        if name.is_empty() {
            return Some(self.unnamed_parse.as_ref().is_none_or(|u| u.reads));
        }
        Some(self.statements.get(name).is_none_or(|s| s.reads))
    }

    /// Attaches a server for `want` and sends it the request. A read keeps its frames for a
    /// retry until the server answers.
    async fn dispatch(
        &mut self,
        frames: Vec<Frame>,
        want: Want,
        tried: Tried,
    ) -> Result<Option<Exit>, ProxyError> {
        let tried = match self.attach_for(want, tried).await {
            Ok(tried) => tried,
            Err(err) if !err.is_fatal() => {
                self.fail_request(&frames, &err).await?;
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        if want != Want::Primary {
            let new_names = frames
                .iter()
                .filter(|f| f.tag() == tag::PARSE)
                .filter_map(|f| messages::read_parse(f.body()).ok())
                .filter(|p| !p.name.is_empty() && !self.statements.contains_key(p.name))
                .map(|p| p.name.to_owned())
                .collect();
            self.retry = Some(Box::new(Retry {
                frames: frames.clone(),
                answer_from: None,
                new_names,
                tried,
            }));
        }
        // One reply awaited per message at most: the queue grows once, not message by message.
        self.link.reserve(frames.len());
        for frame in frames {
            if let Some(Exit::ClientGone) = self.on_client_frame(frame)? {
                return Ok(Some(Exit::ClientGone));
            }
        }
        Ok(None)
    }

    /// Lets go of a broken server connection: it is closed, not returned to the pool.
    fn drop_server(&mut self) {
        self.unpin_lost();
        self.fill = None;
        self.client.set(ClientState::Idle, None);
        self.cancel.slot.set(None);
        self.retry = None;
        self.server = None;
    }

    /// The server of a read failed before answering: run the read again on another one, as if
    /// nothing happened (taking the server out of rotation if it is gone).
    async fn retry_elsewhere(&mut self, ban: bool) -> Result<Option<Exit>, ProxyError> {
        let retry = self.retry.take().expect("Exit::Retry comes with a retry");
        // What the client was not sent of this server's answer is taken back.
        if let Some(mark) = retry.answer_from {
            self.traffic.1 -= (self.client_w.pending() - mark) as u64;
            self.client_w.buffer().truncate(mark);
        }
        let failed = self.backend;
        tracing::info!(client = self.client.info.id, backend = %self.rt.router.backends[failed].target.name, "server failed before answering a read; retrying elsewhere");
        self.cancel.slot.set(None);
        self.server = None;
        if ban {
            self.rt.router.ban(failed);
        }
        for name in &retry.new_names {
            self.statements.remove(name);
        }
        let want = Want::Read {
            min_lsn: self.plan_min_lsn(),
        };
        self.dispatch(retry.frames, want, retry.tried | (1 << failed))
            .await
    }

    /// The WAL position a read of this client needs (0 when read-your-writes is off).
    fn plan_min_lsn(&self) -> u64 {
        if self.rt.router.settings().read_your_writes {
            self.route.min_lsn
        } else {
            0
        }
    }

    /// Attaches a server for `want`, moving on from backends that turn out to be down.
    /// Returns the backends tried and failed.
    async fn attach_for(&mut self, want: Want, mut tried: Tried) -> Result<Tried, ProxyError> {
        loop {
            let pools = &self.pools;
            let idx = self
                .rt
                .router
                .pick(want, tried, |i| pools[i].as_ref().map_or(0, |p| p.in_use()))?;
            match self.attach(idx).await {
                Ok(()) => return Ok(tried),
                // A read can go elsewhere: past a replica that is down, refuses logins (too
                // many clients, pg_hba) or lacks the database (not caught up yet).
                Err(AttachError::Backend(e)) if want != Want::Primary => {
                    tracing::info!(client = self.client.info.id, backend = %self.rt.router.backends[idx].target.name, error = %e, "backend unavailable; trying another");
                    self.rt.router.ban(idx);
                    tried |= 1 << idx;
                }
                Err(AttachError::Backend(e) | AttachError::Client(e)) => return Err(e),
            }
        }
    }

    /// This client's pool on backend `idx`.
    fn pool(&mut self, idx: usize) -> Arc<Pool> {
        if let Some(pool) = &self.pools[idx] {
            return pool.clone();
        }
        let target = self.rt.router.backends[idx].target.clone();
        let key = PoolKey {
            user: self.pool_user.to_string(),
            database: self.client.info.database.clone(),
            backend: target.name.clone(),
            addr: (target.host.clone(), target.port),
        };
        let pool = self.state.pools.get(key, target, &self.rt.pool);
        self.pools[idx] = Some(pool.clone());
        pool
    }

    /// Answers a request that could not get a server connection, keeping the protocol in step:
    /// an extended-protocol request is skipped up to its Sync, as a server would.
    async fn fail_request(&mut self, frames: &[Frame], err: &ProxyError) -> Result<(), ProxyError> {
        messages::error_response(self.client_w.buffer(), err, false);
        let mut tag = frames[frames.len() - 1].tag();
        if !matches!(tag, tag::SYNC | tag::QUERY | tag::FUNCTION_CALL) {
            // The client may be waiting for the answer to its Flush before it sends more.
            if self.client_w.flush().await.is_err() {
                return Ok(());
            }
        }
        while !matches!(tag, tag::SYNC | tag::QUERY | tag::FUNCTION_CALL) {
            match self.client_r.read_frame().await {
                Ok(frame) => tag = frame.tag(),
                // The client left; the next read ends the session.
                Err(FrameError::Eof) | Err(FrameError::Io(_)) => return Ok(()),
                Err(e) => return Err(client_frame_error(e)),
            }
        }
        messages::ready_for_query(self.client_w.buffer(), b'I');
        Ok(())
    }

    /// Leases a connection to backend `idx` and brings its session settings in line with
    /// this client's. An error says whether the backend is to blame (it could not be reached
    /// or refused the login) or the client (its settings were refused, the pool was busy).
    async fn attach(&mut self, idx: usize) -> Result<(), AttachError> {
        let pool = self.pool(idx);
        let mut retried = false;
        loop {
            // The client shows as waiting only while it does: most checkouts are immediate,
            // and neither the registry nor the clock is read twice for them. While it waits
            // (PAUSE, a busy pool) it can cancel its request (see `state::cancel`).
            let (pause, credential, slot) =
                (&self.state.pause, &self.pool_credential, &self.cancel.slot);
            let mut wait = std::pin::pin!(async {
                pause.wait().await;
                pool.checkout(credential).await
            });
            let client = &mut self.client;
            let mut started = None;
            let mut checkout = std::future::poll_fn(|cx| {
                let polled = std::future::Future::poll(wait.as_mut(), cx);
                if polled.is_pending() {
                    if started.is_none() {
                        started = Some(std::time::Instant::now());
                        client.set(ClientState::Waiting, None);
                    }
                    if slot.poll_cancelled(cx).is_ready() {
                        return Poll::Ready(Err(ProxyError::Canceled));
                    }
                }
                polled
            })
            .await;
            if let Some(started) = started {
                if slot.stop_waiting() {
                    // The cancel and a free server came together: the request is not sent.
                    if let Ok(lease) = std::mem::replace(&mut checkout, Err(ProxyError::Canceled)) {
                        lease.release();
                    }
                }
                self.client.stats.waited(started.elapsed());
            }
            let mut lease = match checkout {
                Ok(lease) => lease,
                Err(e) => {
                    self.client.set(ClientState::Idle, None);
                    return Err(match e {
                        ProxyError::PoolTimeout(_) | ProxyError::Canceled => AttachError::Client(e),
                        e => AttachError::Backend(e),
                    });
                }
            };
            let server = Some((lease.conn.backend.clone(), lease.conn.pid));
            self.client.set(ClientState::Active, server);
            if let Some(sql) = params::apply_sql(&self.wanted, &lease.conn.session_params) {
                // Boxed: most checkouts need no SET, and every request's future would
                // otherwise hold room for this query's.
                match Box::pin(lease.conn.internal_query(&sql)).await {
                    Ok(_) => lease.conn.session_params = self.wanted.clone(),
                    Err(ServerError::Postgres {
                        sqlstate, message, ..
                    }) => {
                        self.client.set(ClientState::Idle, None);
                        return Err(AttachError::Client(ProxyError::FromServer {
                            sqlstate,
                            message,
                            fatal: true,
                        }));
                    }
                    // A connection that died while idle: try once more with a fresh one.
                    Err(e) if !retried => {
                        tracing::debug!(client = self.client.info.id, error = %e, "server connection failed at checkout; retrying");
                        retried = true;
                        continue;
                    }
                    Err(e) => {
                        self.client.set(ClientState::Idle, None);
                        return Err(AttachError::Backend(e.to_client()));
                    }
                }
            }
            let conn = &lease.conn;
            self.cancel.slot.set(Some(CancelTarget {
                backend: conn.backend.clone(),
                pid: conn.pid,
                secret: conn.secret,
            }));
            let router = &self.rt.router;
            let on_replica = !router.is_primary(idx);
            let session_mode = self.mode == PoolMode::Session;
            let track_writes = !on_replica
                && !session_mode
                && router.splits()
                && router.settings().read_your_writes;
            self.link = Link::new(session_mode, on_replica, track_writes);
            self.backend = idx;
            self.retry = None;
            self.server = Some(lease);
            return Ok(());
        }
    }

    /// Returns the server connection to the pool after a transaction (transaction mode),
    /// first reading back session state the client may have changed.
    async fn release(&mut self) {
        if self.server.is_none() {
            return;
        }
        if self.pin.is_pinned() {
            self.link.pin_check = false;
            match self.still_pinned().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(client = self.client.info.id, error = %e, "could not check a pinned client's session state; closing server connection");
                    return self.drop_server();
                }
            }
        }
        let Some(mut lease) = self.server.take() else {
            return;
        };
        self.client.set(ClientState::Idle, None);
        if self.cancel.slot.clear() {
            // A cancel of this client's is on its way to the server: until it lands it
            // could cancel the next client's statement. The client has its answer.
            let _ = self.client_w.flush().await;
            self.cancel.settled().await;
        }
        if self.link.wrote && self.rt.router.splits() && self.rt.router.settings().read_your_writes
        {
            // The client already has its answer; it waits on this only for its next request.
            let _ = self.client_w.flush().await;
            match lease.conn.internal_query(WRITE_LSN_SQL).await {
                Ok(rows) => {
                    let lsn = rows
                        .first()
                        .and_then(|r| r.first()?.as_deref())
                        .and_then(crate::route::health::parse_lsn);
                    // A later insert position is past every earlier commit: no max() needed,
                    // and an unreadable position (u64::MAX: primary only) does not stick.
                    self.route.min_lsn = lsn.unwrap_or(u64::MAX);
                }
                Err(e) => {
                    // Without the position, only the primary is sure to have the write.
                    self.route.min_lsn = u64::MAX;
                    return tracing::warn!(client = self.client.info.id, error = %e, "could not read the WAL position after a write; closing server connection");
                }
            }
        }
        if self.link.session_dirty {
            let custom = self.custom_settings.as_deref();
            match read_settings(&mut lease.conn, &self.startup, custom).await {
                Ok(settings) => {
                    self.wanted = settings.clone();
                    lease.conn.session_params = settings;
                }
                Err(e) => {
                    return tracing::warn!(client = self.client.info.id, error = %e, "could not read session settings; closing server connection")
                }
            }
        }
        if self.link.statements_dirty {
            match lease.conn.internal_query(params::PREPARED_SQL).await {
                Ok(rows) => self.reconcile_prepared(&mut lease.conn, rows),
                Err(e) => {
                    return tracing::warn!(client = self.client.info.id, error = %e, "could not list prepared statements; closing server connection")
                }
            }
        }
        if lease.conn.prepared.len() > self.max_prepared {
            return; // dropped: closing is the simplest way to free its statements
        }
        lease.release();
    }

    /// Ends the session: tells the client why if it is an error, and returns or closes the
    /// server connection.
    async fn finish(mut self, outcome: Result<(), ProxyError>) {
        if let Err(err) = &outcome {
            tracing::debug!(client = self.client.info.id, error = %err, "closing client");
            messages::error_response(self.client_w.buffer(), err, true);
        }
        self.client_w.shutdown().await;
        let cancel_on_its_way = self.cancel.slot.clear();
        let Some(mut lease) = self.server.take() else {
            return;
        };
        if cancel_on_its_way {
            self.cancel.settled().await;
        }
        // A pinned client's connection is reset like a session-mode one (LOAD cannot be).
        let reusable = self.mode == PoolMode::Session || (self.pin.is_pinned() && !self.pin.load);
        let clean = outcome.is_ok() && self.link.is_idle() && reusable;
        if clean
            && lease
                .conn
                .internal_query(&self.rt.config.pool.reset_query)
                .await
                .is_ok()
        {
            lease.conn.session_params.clear();
            lease.conn.prepared.clear();
            lease.conn.sql_prepared.clear();
            lease.release();
        }
        // Otherwise the lease drops here: a connection mid-transaction is closed, not reused.
    }
}

fn stop_error(stop: Stop) -> ProxyError {
    match stop {
        Stop::Killed => ProxyError::Killed,
        Stop::ShuttingDown => ProxyError::ShuttingDown,
    }
}

/// Reads back the settings changed in a server session, first restoring the client's startup
/// values that a RESET or DISCARD took away. Custom settings are asked for by name: those the
/// client named (`custom`), set at startup, or set on the connection before.
async fn read_settings(
    conn: &mut crate::pool::ServerConn,
    startup: &Settings,
    custom: Option<&std::collections::BTreeSet<String>>,
) -> Result<Settings, ServerError> {
    let read = |rows: Vec<Vec<Option<String>>>| -> Settings {
        rows.into_iter()
            .filter_map(|mut r| Some((r.get_mut(0)?.take()?, r.get_mut(1)?.take()?)))
            .collect()
    };
    let mut names: std::collections::BTreeSet<String> = custom.cloned().unwrap_or_default();
    let known = startup.keys().chain(conn.session_params.keys());
    names.extend(known.filter(|name| name.contains('.')).cloned());
    let sql = params::session_settings_sql(&names);
    let settings = read(conn.internal_query(&sql).await?);
    let Some(restore) = params::restore_sql(startup, &settings) else {
        return Ok(settings);
    };
    conn.internal_query(&restore).await?;
    Ok(read(conn.internal_query(&sql).await?))
}

/// Queues `first` and every notification already received after it: PostgreSQL sends those
/// of one commit together, and a client may expect to read them in one batch (psycopg's
/// `notifies(stop_after=1)` returns the whole batch).
fn queue_notifications(
    listening: &mut Option<Box<listen::Listening>>,
    writer: &mut FrameWriter,
    first: &bytes::Bytes,
) {
    writer.queue(first);
    if let Some(listener) = listener(listening) {
        while let Ok(n) = listener.rx.try_recv() {
            writer.queue(&n);
        }
    }
}

/// The next notification for a listening client; never ready for one that does not listen.
fn poll_notification(
    listening: &mut Option<Box<listen::Listening>>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Option<bytes::Bytes>> {
    match listener(listening) {
        Some(l) => l.rx.poll_recv(cx),
        None => Poll::Pending,
    }
}

/// The channel a listening client's notifications arrive on, once it has one.
fn listener(
    listening: &mut Option<Box<listen::Listening>>,
) -> Option<&mut crate::notify::Listener> {
    listening.as_mut().and_then(|l| l.listener.as_mut())
}

/// Where the primary's WAL ends after a client's write: its later reads need a server that
/// has replayed this far. The insert position, because a replica's replay position ends exactly
/// at a record's end, as the insert position does when nothing else is being written.
const WRITE_LSN_SQL: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()";

fn client_frame_error(e: FrameError) -> ProxyError {
    match e {
        FrameError::TooLarge(n) => {
            ProxyError::protocol(format!("message of {n} bytes exceeds max_message_size"))
        }
        FrameError::BadLength(n) => ProxyError::protocol(format!("invalid message length {n}")),
        other => ProxyError::protocol(other.to_string()),
    }
}
