//! One client connection, from startup to goodbye.
//!
//! Phases: negotiate (TLS, startup packet) -> authenticate -> greet (a server connection's
//! parameters) -> serve requests. Serving alternates between idle (no server connection; only
//! in transaction mode) and attached (a leased server connection, messages pumped both ways by
//! `pump`). In transaction mode the lease ends when the server reports an idle transaction
//! state with nothing outstanding; in session mode it lasts as long as the client.

pub mod auth;
pub mod params;
pub mod prepared;
mod pump;
pub mod sqlscan;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::messages::startup::NegotiateProtocolVersion;
use pgwire::messages::Message;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::PoolMode;
use crate::daemon::cancel::{CancelHandle, CancelTarget};
use crate::daemon::{Runtime, State};
use crate::pool::{Lease, Pool, PoolKey, ServerError};
use crate::protocol::messages::{self, tag};
use crate::protocol::startup::{self, FirstPacket, StartupRequest};
use crate::protocol::{Frame, FrameError, FrameReader, FrameWriter, ProxyError};
use params::Settings;
use prepared::Statement;
use pump::{Exit, Link};

/// Entry point for an accepted TCP connection.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, state: Arc<State>) {
    let rt = state.runtime.load_full();
    let timeout = rt.config.server.startup_timeout;
    let negotiated = tokio::time::timeout(
        timeout,
        startup::negotiate(tcp, rt.tls.as_ref(), rt.config.server.tls_mode),
    )
    .await;
    let (stream, first) = match negotiated {
        Ok(Ok(ok)) => ok,
        Ok(Err((stream, err))) => {
            tracing::debug!(%peer, error = %err, "startup failed");
            if let Some(stream) = stream {
                startup::reject(stream, &err).await;
            }
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "startup timed out");
            return;
        }
    };
    let request = match first {
        FirstPacket::Cancel { pid, secret } => return state.cancels.cancel(pid, secret).await,
        FirstPacket::Startup(request) => request,
    };
    let Ok(_client_slot) = state.client_slots.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "max_clients reached; refusing a client");
        return startup::reject(stream, &ProxyError::TooManyClients).await;
    };
    if rt.config.server.tls_mode == crate::config::TlsMode::Require && !stream.is_tls() {
        return startup::reject(stream, &ProxyError::TlsRequired).await;
    }
    let (reader, writer) = stream.into_framed(rt.config.server.max_message_size);
    let user = request.user.clone();
    let mut session =
        match tokio::time::timeout(timeout, login(reader, writer, &state, &rt, request)).await {
            Ok(Ok(session)) => session,
            Ok(Err((mut writer, err))) => {
                tracing::info!(%peer, %user, error = %err, "login refused");
                messages::error_response(writer.buffer(), &err, true);
                return writer.shutdown().await;
            }
            Err(_) => return tracing::info!(%peer, %user, "login timed out"),
        };
    tracing::debug!(%peer, %user, database = %session.pool.key.database, "client connected");
    let outcome = session.run().await;
    session.finish(outcome).await;
}

/// Authenticates the client, leases a server connection for its settings and greets it with
/// that server's parameters. On failure the writer comes back to report the error.
async fn login(
    mut reader: FrameReader,
    mut writer: FrameWriter,
    state: &Arc<State>,
    rt: &Arc<Runtime>,
    request: StartupRequest,
) -> Result<Session, (FrameWriter, ProxyError)> {
    if request.minor_version > 0 || !request.unsupported_options.is_empty() {
        NegotiateProtocolVersion::new(0, request.unsupported_options.clone())
            .encode(writer.buffer())
            .expect("encode NegotiateProtocolVersion");
    }
    if let Err(e) = auth::authenticate(&mut reader, &mut writer, rt, &request.user).await {
        return Err((writer, e));
    }
    let user = &rt.users[&request.user].config;
    let backend = rt.primary().clone();
    let key = PoolKey {
        user: user.backend_user().to_owned(),
        database: request.database.clone(),
        backend: backend.name.clone(),
        addr: (backend.host.clone(), backend.port),
    };
    let pool = state.pools.get(
        key,
        backend,
        user.backend_password().map(str::to_owned),
        &rt.pool,
    );
    let mut session = Session {
        mode: rt.config.pool.mode,
        max_prepared: rt.config.pool.max_prepared_statements,
        reset_query: rt.config.pool.reset_query.clone(),
        shutdown: state.shutdown.clone(),
        pool,
        cancel: state.cancels.register(),
        wanted: request.params,
        statements: HashMap::new(),
        unnamed_parse: None,
        server: None,
        link: Link::default(),
        client_r: reader,
        client_w: writer,
    };
    if let Err(e) = session.attach().await {
        return Err((session.client_w, e));
    }
    let conn = &session.server.as_ref().expect("attached").conn;
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
    Ok(session)
}

pub(crate) struct Session {
    mode: PoolMode,
    max_prepared: usize,
    reset_query: String,
    /// pgward's shutdown signal (a clone kept here: cloning takes a lock).
    shutdown: CancellationToken,
    pool: Arc<Pool>,
    cancel: CancelHandle,
    /// The run-time settings this client expects on every server connection it gets.
    wanted: Settings,
    /// The client's named prepared statements (transaction mode).
    statements: HashMap<String, Arc<Statement>>,
    /// The client's last unnamed Parse, re-sent if a later Bind lands on another server.
    unnamed_parse: Option<(Frame, sqlscan::Effects)>,
    server: Option<Lease>,
    /// Protocol state of the current server attachment.
    link: Link,
    client_r: FrameReader,
    client_w: FrameWriter,
}

impl Session {
    async fn run(&mut self) -> Result<(), ProxyError> {
        loop {
            if self.server.is_none() {
                let Some(frame) = self.next_request().await? else {
                    return Ok(());
                };
                match frame.tag() {
                    tag::TERMINATE => return Ok(()),
                    // Nothing is pending, so a lone Sync only asks for ReadyForQuery.
                    tag::SYNC => {
                        messages::ready_for_query(self.client_w.buffer(), b'I');
                        continue;
                    }
                    tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => continue,
                    _ => {}
                }
                let mut request = vec![frame];
                if self.prepare_locally(&mut request).await? {
                    continue;
                }
                if let Err(err) = self.attach().await {
                    if err.is_fatal() {
                        return Err(err);
                    }
                    self.fail_request(&request[request.len() - 1], &err).await?;
                    continue;
                }
                for frame in request {
                    if let Some(Exit::ClientGone) = self.on_client_frame(frame)? {
                        return Ok(());
                    }
                }
            }
            match self.pump().await? {
                Exit::Release => self.release().await,
                Exit::ClientGone => return Ok(()),
            }
        }
    }

    /// Waits, without a server connection, for the first message of the next request.
    /// None when the client leaves or pgward shuts down.
    async fn next_request(&mut self) -> Result<Option<Frame>, ProxyError> {
        let (reader, writer, shutdown) = (&mut self.client_r, &mut self.client_w, &self.shutdown);
        if writer.flush().await.is_err() {
            return Ok(None);
        }
        loop {
            if let Some(frame) = reader.try_frame().map_err(client_frame_error)? {
                return Ok(Some(frame));
            }
            tokio::select! {
                filled = reader.fill() => match filled {
                    Ok(()) => {}
                    Err(FrameError::Eof) | Err(FrameError::Io(_)) => return Ok(None),
                    Err(e) => return Err(client_frame_error(e)),
                },
                _ = shutdown.cancelled() => return Err(ProxyError::ShuttingDown),
            }
        }
    }

    /// Answers a lone `Parse; Sync` (libpq's PQprepare) without a server when this pool has
    /// already prepared the same statement; the server copy is made at its first Bind.
    /// Besides saving a round trip, this keeps a client that prepares synchronously from
    /// waiting for a server while other clients of its own thread hold them all (pgbench -j).
    /// Returns false, with the frames read so far in `request`, when it does not apply.
    async fn prepare_locally(&mut self, request: &mut Vec<Frame>) -> Result<bool, ProxyError> {
        if self.mode != PoolMode::Transaction || request[0].tag() != tag::PARSE {
            return Ok(false);
        }
        let parse = messages::read_parse(request[0].body())?;
        if parse.name.is_empty() || self.statements.contains_key(parse.name) {
            return Ok(false);
        }
        let statement = Statement::new(
            parse.query,
            parse.param_types,
            sqlscan::effects(parse.query),
        );
        if statement.effects.any() || !self.pool.knows(&statement) {
            return Ok(false);
        }
        let name = parse.name.to_owned();
        let next = match self.client_r.read_frame().await {
            Ok(frame) => frame,
            // The client left; the next read ends the session.
            Err(FrameError::Eof | FrameError::Io(_)) => return Ok(true),
            Err(e) => return Err(client_frame_error(e)),
        };
        if next.tag() != tag::SYNC {
            request.push(next);
            return Ok(false);
        }
        self.statements.insert(name, statement);
        messages::parse_complete(self.client_w.buffer());
        messages::ready_for_query(self.client_w.buffer(), b'I');
        Ok(true)
    }

    /// Answers a request that could not get a server connection, keeping the protocol in step:
    /// an extended-protocol request is skipped up to its Sync, as a server would.
    async fn fail_request(&mut self, first: &Frame, err: &ProxyError) -> Result<(), ProxyError> {
        messages::error_response(self.client_w.buffer(), err, false);
        let mut tag = first.tag();
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

    /// Leases a server connection and brings its session settings in line with this client's.
    async fn attach(&mut self) -> Result<(), ProxyError> {
        let mut retried = false;
        loop {
            let mut lease = self.pool.checkout().await?;
            if let Some(sql) = params::apply_sql(&self.wanted, &lease.conn.session_params) {
                match lease.conn.internal_query(&sql).await {
                    Ok(_) => lease.conn.session_params = self.wanted.clone(),
                    Err(ServerError::Postgres {
                        sqlstate, message, ..
                    }) => {
                        return Err(ProxyError::FromServer {
                            sqlstate,
                            message,
                            fatal: true,
                        })
                    }
                    // A connection that died while idle: try once more with a fresh one.
                    Err(e) if !retried => {
                        tracing::debug!(error = %e, "server connection failed at checkout; retrying");
                        retried = true;
                        continue;
                    }
                    Err(e) => return Err(e.to_client()),
                }
            }
            let conn = &lease.conn;
            self.cancel.slot.set(Some(CancelTarget {
                backend: conn.backend.clone(),
                pid: conn.pid,
                secret: conn.secret,
            }));
            self.link = Link::new(self.mode == PoolMode::Session);
            self.server = Some(lease);
            return Ok(());
        }
    }

    /// Returns the server connection to the pool after a transaction (transaction mode),
    /// first reading back session state the client may have changed.
    async fn release(&mut self) {
        let Some(mut lease) = self.server.take() else {
            return;
        };
        self.cancel.slot.set(None);
        if self.link.session_dirty {
            match lease
                .conn
                .internal_query(params::SESSION_SETTINGS_SQL)
                .await
            {
                Ok(rows) => {
                    let settings: Settings = rows
                        .into_iter()
                        .filter_map(|mut r| Some((r.get_mut(0)?.take()?, r.get_mut(1)?.take()?)))
                        .collect();
                    self.wanted = settings.clone();
                    lease.conn.session_params = settings;
                }
                Err(e) => {
                    return tracing::warn!(error = %e, "could not read session settings; closing server connection")
                }
            }
        }
        if self.link.statements_dirty {
            match lease.conn.internal_query(params::PREPARED_SQL).await {
                Ok(rows) => {
                    let names: std::collections::HashSet<String> = rows
                        .into_iter()
                        .filter_map(|mut r| r.get_mut(0)?.take())
                        .collect();
                    lease
                        .conn
                        .prepared
                        .retain(|_, s| names.contains(&s.server_name));
                }
                Err(e) => {
                    return tracing::warn!(error = %e, "could not list prepared statements; closing server connection")
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
            tracing::debug!(error = %err, "closing client");
            messages::error_response(self.client_w.buffer(), err, true);
        }
        self.client_w.shutdown().await;
        self.cancel.slot.set(None);
        let Some(mut lease) = self.server.take() else {
            return;
        };
        let clean = outcome.is_ok() && self.link.is_idle() && self.mode == PoolMode::Session;
        if clean && lease.conn.internal_query(&self.reset_query).await.is_ok() {
            lease.conn.session_params.clear();
            lease.conn.prepared.clear();
            lease.release();
        }
        // Otherwise the lease drops here: a connection mid-transaction is closed, not reused.
    }
}

fn client_frame_error(e: FrameError) -> ProxyError {
    match e {
        FrameError::TooLarge(n) => {
            ProxyError::protocol(format!("message of {n} bytes exceeds max_message_size"))
        }
        FrameError::BadLength(n) => ProxyError::protocol(format!("invalid message length {n}")),
        other => ProxyError::protocol(other.to_string()),
    }
}
