//! One connection from pgward to a PostgreSQL server: connect, TLS, authenticate with the
//! backend credentials, and run the few internal queries pgward needs (applying a client's
//! session parameters, resets). Client traffic is forwarded by the session, not here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Credential;
use crate::config::{BackendConfig, BackendTls};
use crate::protocol::messages::{self, Reader};
use crate::protocol::scram::{self, ScramClient};
use crate::protocol::{Frame, FrameError, FrameReader, FrameWriter, ProxyError, Stream};
use crate::session::prepared::Statement;

/// Where and how to reach one backend; built once per config.
#[derive(Debug)]
pub struct BackendTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: BackendTls,
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl BackendTarget {
    /// The target a `[[backends]]` entry names, with its TLS client settings: verified for
    /// verify-full, encrypted but unverified for prefer/require (as libpq does).
    pub fn from_config(b: &BackendConfig) -> Result<BackendTarget, crate::protocol::tls::TlsError> {
        use crate::protocol::tls::client_config;
        let tls_config = match b.tls {
            BackendTls::Disable => None,
            BackendTls::VerifyFull => Some(client_config(true, b.tls_ca.as_deref())?),
            BackendTls::Prefer | BackendTls::Require => Some(client_config(false, None)?),
        };
        Ok(BackendTarget {
            name: b.name.clone(),
            host: b.host.clone(),
            port: b.port,
            tls: b.tls,
            tls_config,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server refused TLS (backend tls = require)")]
    TlsRefused,
    #[error("unsupported authentication request {0}")]
    UnsupportedAuth(i32),
    #[error("backend needs a password and none is configured")]
    NoPassword,
    #[error(
        "the server asks for {0}, which the credential pgward holds for this login cannot answer"
    )]
    CredentialMismatch(&'static str),
    #[error("SCRAM: {0}")]
    Scram(String),
    #[error("server error {sqlstate}: {message}")]
    Postgres {
        sqlstate: String,
        message: String,
        severity: String,
    },
    #[error("unexpected message '{}' from server", *.0 as char)]
    Unexpected(u8),
    #[error("timed out")]
    Timeout,
}

impl ServerError {
    /// What the client should see: PostgreSQL's own errors pass through (e.g. 3D000 for a
    /// missing database); connectivity problems become 08006 without internal detail.
    pub fn to_client(&self) -> ProxyError {
        match self {
            ServerError::Postgres {
                sqlstate,
                message,
                severity,
            } => ProxyError::FromServer {
                sqlstate: sqlstate.clone(),
                message: message.clone(),
                fatal: severity == "FATAL" || severity == "PANIC",
            },
            other => ProxyError::ServerUnavailable(other.to_string()),
        }
    }
}

/// Reads (severity, SQLSTATE, message) out of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> ServerError {
    let mut r = Reader::new(body);
    let (mut severity, mut sqlstate, mut message) = (String::new(), String::new(), String::new());
    while let Ok(code) = r.u8() {
        if code == 0 {
            break;
        }
        let Ok(value) = r.cstr() else { break };
        match code {
            b'V' => severity = value.to_owned(),
            b'S' if severity.is_empty() => severity = value.to_owned(),
            b'C' => sqlstate = value.to_owned(),
            b'M' => message = value.to_owned(),
            _ => {}
        }
    }
    ServerError::Postgres {
        sqlstate,
        message,
        severity,
    }
}

pub struct ServerConn {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub backend: Arc<BackendTarget>,
    /// PostgreSQL's own process id and cancel key, for forwarding CancelRequests.
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus values the server has reported.
    pub reported: BTreeMap<String, String>,
    /// Settings whose session value pgward (or a client through it) set; everything else is
    /// at the role/database default.
    pub session_params: BTreeMap<String, String>,
    /// Statements prepared on this connection under pgward's names, keyed by name hash.
    pub prepared: HashMap<u64, Arc<Statement>>,
    /// SQL-level prepared statements on this connection by name, with the PREPARE text
    /// that made them (None: made by a text pgward does not keep; see `session::sqlprep`).
    pub sql_prepared: HashMap<String, Option<Arc<[u8]>>>,
    pub idle_since: Instant,
}

/// A SCRAM exchange with the server under way: from a password, or from recovered keys.
enum Scram {
    Password(Box<ScramSha256>),
    Keys(ScramClient),
}

impl ServerConn {
    /// A new connection, logged in. The login's future (TLS, SCRAM) is large and runs
    /// rarely, so it is boxed: a caller on the request path (a checkout, a catalog load)
    /// holds a pointer to it, and its own future stays small to move and to allocate.
    pub async fn connect(
        backend: Arc<BackendTarget>,
        user: &str,
        credential: &Credential,
        database: &str,
    ) -> Result<ServerConn, ServerError> {
        Box::pin(Self::log_in(backend, user, credential, database)).await
    }

    async fn log_in(
        backend: Arc<BackendTarget>,
        user: &str,
        credential: &Credential,
        database: &str,
    ) -> Result<ServerConn, ServerError> {
        let mut tcp = TcpStream::connect((backend.host.as_str(), backend.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match (backend.tls, &backend.tls_config) {
            (BackendTls::Disable, _) | (_, None) => Stream::Plain(tcp),
            (mode, Some(config)) => {
                tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
                match tcp.read_u8().await? {
                    b'S' => {
                        let connector = tokio_rustls::TlsConnector::from(config.clone());
                        let name = crate::protocol::tls::server_name(&backend.host);
                        let tls = connector
                            .connect(name, tcp)
                            .await
                            .map_err(|e| ServerError::Tls(e.to_string()))?;
                        Stream::ClientTls(Box::new(tls))
                    }
                    b'N' if mode == BackendTls::Prefer => Stream::Plain(tcp),
                    b'N' => return Err(ServerError::TlsRefused),
                    other => return Err(ServerError::Unexpected(other)),
                }
            }
        };
        let tls = stream.is_tls();
        let (reader, writer) = stream.into_framed(1 << 30);
        let mut conn = ServerConn {
            reader,
            writer,
            backend,
            pid: 0,
            secret: 0,
            reported: BTreeMap::new(),
            session_params: BTreeMap::new(),
            prepared: HashMap::new(),
            sql_prepared: HashMap::new(),
            idle_since: Instant::now(),
        };
        conn.startup(user, credential, database, tls).await?;
        Ok(conn)
    }

    async fn startup(
        &mut self,
        user: &str,
        credential: &Credential,
        database: &str,
        tls: bool,
    ) -> Result<(), ServerError> {
        let buf = self.writer.buffer();
        let start = buf.len();
        buf.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 0]);
        for (k, v) in [("user", user), ("database", database)] {
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(&[0]);
            buf.extend_from_slice(v.as_bytes());
            buf.extend_from_slice(&[0]);
        }
        buf.extend_from_slice(&[0]);
        let len = (buf.len() - start) as i32;
        buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        self.writer.flush().await?;

        let mut scram: Option<Scram> = None;
        loop {
            let frame = self.reader.read_frame().await?;
            match frame.tag() {
                b'R' => {
                    self.authenticate(&frame, user, credential, tls, &mut scram)
                        .await?
                }
                b'S' => self.record_parameter(frame.body()),
                b'K' => {
                    let mut r = Reader::new(frame.body());
                    self.pid = r.i32().unwrap_or(0);
                    self.secret = r.i32().unwrap_or(0);
                }
                b'Z' => return Ok(()),
                b'E' => return Err(error_fields(frame.body())),
                b'N' | b'v' => {}
                other => return Err(ServerError::Unexpected(other)),
            }
        }
    }

    async fn authenticate(
        &mut self,
        frame: &Frame,
        user: &str,
        credential: &Credential,
        tls: bool,
        scram: &mut Option<Scram>,
    ) -> Result<(), ServerError> {
        let mut r = Reader::new(frame.body());
        let code = r.i32().map_err(|_| ServerError::Unexpected(b'R'))?;
        let password = || match credential {
            Credential::Password(p) => Ok(p.as_str()),
            Credential::None => Err(ServerError::NoPassword),
            Credential::ScramKeys { .. } | Credential::Md5Hash(_) => {
                Err(ServerError::CredentialMismatch("a cleartext password"))
            }
        };
        match code {
            0 => return Ok(()),
            3 => {
                let pw = password()?;
                messages::frontend(self.writer.buffer(), b'p', |b| {
                    b.extend_from_slice(pw.as_bytes());
                    b.extend_from_slice(&[0]);
                });
            }
            5 => {
                let salt: [u8; 4] = r
                    .take(4)
                    .ok()
                    .and_then(|s| s.try_into().ok())
                    .ok_or(ServerError::Unexpected(b'R'))?;
                let hash = match credential {
                    Credential::Md5Hash(hash) => scram::md5_response_from_hash(hash, &salt),
                    Credential::ScramKeys { .. } => {
                        return Err(ServerError::CredentialMismatch("md5"))
                    }
                    _ => postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password()?.as_bytes(),
                        salt,
                    ),
                };
                messages::frontend(self.writer.buffer(), b'p', |b| {
                    b.extend_from_slice(hash.as_bytes());
                    b.extend_from_slice(&[0]);
                });
            }
            10 => {
                let mut mechanisms = Vec::new();
                while let Ok(m) = r.cstr() {
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m);
                }
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    return Err(ServerError::Scram(format!(
                        "no supported mechanism in {mechanisms:?}"
                    )));
                }
                let (client, first) = match credential {
                    Credential::ScramKeys {
                        client_key,
                        server_key,
                    } => {
                        let (client, first) = ScramClient::start(client_key, server_key);
                        (Scram::Keys(client), first.into_bytes())
                    }
                    Credential::Md5Hash(_) => {
                        return Err(ServerError::CredentialMismatch("SCRAM-SHA-256"))
                    }
                    _ => {
                        // pgward does no channel binding. "y" (the client could, but thinks
                        // the server cannot) only when the server did not offer it: a server
                        // that did refuses "y" as a downgrade; "n" otherwise.
                        let binding = if tls && !mechanisms.contains(&"SCRAM-SHA-256-PLUS") {
                            ChannelBinding::unrequested()
                        } else {
                            ChannelBinding::unsupported()
                        };
                        let client = ScramSha256::new(password()?.as_bytes(), binding);
                        let first = client.message().to_vec();
                        (Scram::Password(Box::new(client)), first)
                    }
                };
                messages::frontend(self.writer.buffer(), b'p', |b| {
                    b.extend_from_slice(b"SCRAM-SHA-256\0");
                    b.extend_from_slice(&(first.len() as i32).to_be_bytes());
                    b.extend_from_slice(&first);
                });
                *scram = Some(client);
            }
            11 => {
                let msg = match scram.take().ok_or(ServerError::Unexpected(b'R'))? {
                    Scram::Password(mut client) => {
                        // PBKDF2 over the password (4096 rounds by default, about a
                        // millisecond) runs off the runtime's threads: with one worker thread,
                        // every client would wait for each server login the pool makes.
                        let server_first = r.rest().to_vec();
                        let (client, result) = tokio::task::spawn_blocking(move || {
                            let result = client.update(&server_first);
                            (client, result)
                        })
                        .await
                        .map_err(|e| ServerError::Scram(e.to_string()))?;
                        result.map_err(|e| ServerError::Scram(e.to_string()))?;
                        let msg = client.message().to_vec();
                        *scram = Some(Scram::Password(client));
                        msg
                    }
                    Scram::Keys(mut client) => {
                        let msg = client
                            .respond(r.rest())
                            .map_err(|e| ServerError::Scram(e.into()))?
                            .into_bytes();
                        *scram = Some(Scram::Keys(client));
                        msg
                    }
                };
                messages::frontend(self.writer.buffer(), b'p', |b| b.extend_from_slice(&msg));
            }
            12 => {
                match scram.take().ok_or(ServerError::Unexpected(b'R'))? {
                    Scram::Password(mut client) => client
                        .finish(r.rest())
                        .map_err(|e| ServerError::Scram(e.to_string()))?,
                    Scram::Keys(client) => client
                        .verify(r.rest())
                        .map_err(|e| ServerError::Scram(e.into()))?,
                }
                return Ok(());
            }
            other => return Err(ServerError::UnsupportedAuth(other)),
        }
        self.writer.flush().await?;
        Ok(())
    }

    /// Keeps what a ParameterStatus (of body `body`) reports.
    pub fn record_parameter(&mut self, body: &[u8]) {
        let mut r = Reader::new(body);
        if let (Ok(name), Ok(value)) = (r.cstr(), r.cstr()) {
            self.reported.insert(name.to_owned(), value.to_owned());
        }
    }

    /// Runs pgward's own simple query (possibly several statements) and returns the rows of
    /// its result sets as text. Nothing of it reaches a client.
    pub async fn internal_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        messages::query(self.writer.buffer(), sql);
        self.writer.flush().await?;
        self.read_rows(None).await
    }

    /// `internal_query` on a connection that LISTENs: the notifications that arrive before
    /// its ReadyForQuery are added to `notifications` rather than dropped.
    pub async fn internal_query_notified(
        &mut self,
        sql: &str,
        notifications: &mut Vec<Notification>,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        messages::query(self.writer.buffer(), sql);
        self.writer.flush().await?;
        self.read_rows(Some(&mut |body: &[u8]| {
            notifications.extend(parse_notification(body))
        }))
        .await
    }

    /// `internal_query` on a connection that LISTENs, keeping the NotificationResponse bodies
    /// that arrive before its ReadyForQuery as they are (the notify relay forwards them).
    pub async fn internal_query_frames(
        &mut self,
        sql: &str,
        notifications: &mut Vec<Vec<u8>>,
    ) -> Result<(), ServerError> {
        messages::query(self.writer.buffer(), sql);
        self.writer.flush().await?;
        self.read_rows(Some(&mut |body: &[u8]| notifications.push(body.to_vec())))
            .await
            .map(drop)
    }

    /// Waits on an idle connection that LISTENs for the next notification. ParameterStatus
    /// and notices are taken in passing; an ErrorResponse (the server ending the session) or
    /// anything else unexpected is an error. Cancel-safe: a frame is either handled whole or
    /// left in the buffer.
    pub async fn next_notification(&mut self) -> Result<Notification, ServerError> {
        loop {
            let frame = self.reader.read_frame().await?;
            match frame.tag() {
                b'A' => {
                    return parse_notification(frame.body()).ok_or(ServerError::Unexpected(b'A'))
                }
                b'S' => self.record_parameter(frame.body()),
                b'N' => {}
                b'E' => return Err(error_fields(frame.body())),
                other => return Err(ServerError::Unexpected(other)),
            }
        }
    }

    /// The rows of pgward's own request, as text, up to its ReadyForQuery; notifications go to
    /// `notifications` when given, else they are dropped.
    async fn read_rows(
        &mut self,
        mut notifications: Option<&mut NotificationSink<'_>>,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.reader.read_frame().await?;
            match frame.tag() {
                b'D' => rows.push(data_row_text(frame.body())),
                b'S' => self.record_parameter(frame.body()),
                b'E' => error = Some(error_fields(frame.body())),
                b'Z' => return error.map_or(Ok(rows), Err),
                b'A' => {
                    if let Some(out) = notifications.as_deref_mut() {
                        out(frame.body());
                    }
                }
                b'T' | b'C' | b'N' | b'I' | b'1' | b'2' | b's' => {}
                other => return Err(ServerError::Unexpected(other)),
            }
        }
    }

    /// Runs one statement of pgward's own through the extended protocol, with its parameters
    /// sent as text values (never spliced into the SQL), and returns its rows as text.
    pub async fn query_params(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let buf = self.writer.buffer();
        messages::write_parse(buf, "", sql.as_bytes(), &[0, 0]);
        messages::frontend(buf, b'B', |b| {
            b.extend_from_slice(b"\0\0");
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&(params.len() as i16).to_be_bytes());
            for p in params {
                match p {
                    Some(v) => {
                        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        b.extend_from_slice(v.as_bytes());
                    }
                    None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            b.extend_from_slice(&0i16.to_be_bytes());
        });
        messages::frontend(buf, b'E', |b| b.extend_from_slice(&[0, 0, 0, 0, 0]));
        messages::frontend(buf, b'S', |_| {});
        self.writer.flush().await?;
        self.read_rows(None).await
    }
}

/// What takes the bodies of the NotificationResponses an internal query comes across.
type NotificationSink<'a> = dyn FnMut(&[u8]) + Send + 'a;

/// An asynchronous NotificationResponse: a NOTIFY on a channel the connection LISTENs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The notifying backend's process id.
    pub pid: i32,
    pub channel: String,
    pub payload: String,
}

/// Reads a NotificationResponse body: process id, channel, payload.
pub fn parse_notification(body: &[u8]) -> Option<Notification> {
    let mut r = Reader::new(body);
    Some(Notification {
        pid: r.i32().ok()?,
        channel: r.cstr().ok()?.to_owned(),
        payload: r.cstr().ok()?.to_owned(),
    })
}

fn data_row_text(body: &[u8]) -> Vec<Option<String>> {
    let mut r = Reader::new(body);
    let n = r.i16().unwrap_or(0).max(0) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(len) = r.i32() else { break };
        if len < 0 {
            out.push(None);
        } else {
            let Ok(bytes) = r.take(len as usize) else {
                break;
            };
            out.push(Some(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    out
}

/// Quotes a string as an SQL literal that reads the same whatever standard_conforming_strings is.
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
