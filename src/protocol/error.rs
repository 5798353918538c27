//! Errors the proxy reports to clients. This is the one place that maps them to SQLSTATEs;
//! internal causes (I/O errors, file paths) are logged, never sent to the client.

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("SSL/TLS connection required")]
    TlsRequired,
    #[error("too many client connections")]
    TooManyClients,
    #[error("startup timed out")]
    StartupTimeout,
    #[error("no server connection available within {0:?}")]
    PoolTimeout(std::time::Duration),
    #[error("server unavailable: {0}")]
    ServerUnavailable(String),
    #[error("server connection lost")]
    ServerLost,
    #[error("pgward is shutting down")]
    ShuttingDown,
    #[error("terminating connection due to administrator command")]
    Killed,
    /// The client cancelled its request while it waited for a server connection.
    #[error("canceling statement due to user request")]
    Canceled,
    /// A statement pgward does not understand (the admin console's unknown commands).
    #[error("{message}")]
    Syntax { message: String, hint: String },
    /// An admin console command that could not be carried out.
    #[error("{message}")]
    Admin {
        sqlstate: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unsupported(String),
    /// A stored value of an encrypted column that does not decrypt; the text names the
    /// column and why, never the value.
    #[error("{0}")]
    Undecryptable(String),
    #[error("prepared statement \"{0}\" does not exist")]
    UnknownStatement(String),
    #[error("prepared statement \"{0}\" already exists")]
    DuplicateStatement(String),
    #[error("invalid value for {0}")]
    InvalidParameter(String),
    /// A statement the access policy refuses; the text is the whole client message.
    #[error("{0}")]
    PermissionDenied(String),
    /// A statement after a refused one inside a transaction block, as PostgreSQL answers
    /// statements in a failed transaction.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TransactionAborted,
    #[error("{message}")]
    FromServer {
        sqlstate: String,
        message: String,
        fatal: bool,
    },
}

impl ProxyError {
    /// A hint for the client, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            ProxyError::Syntax { hint, .. } => Some(hint),
            _ => None,
        }
    }

    pub fn protocol(msg: impl Into<String>) -> Self {
        ProxyError::Protocol(msg.into())
    }

    pub fn sqlstate(&self) -> &str {
        match self {
            ProxyError::Protocol(_) | ProxyError::StartupTimeout => "08P01",
            ProxyError::AuthFailed(_) => "28P01",
            ProxyError::TlsRequired => "28000",
            ProxyError::TooManyClients | ProxyError::PoolTimeout(_) => "53300",
            ProxyError::ServerUnavailable(_) | ProxyError::ServerLost => "08006",
            ProxyError::ShuttingDown | ProxyError::Killed => "57P01",
            ProxyError::Canceled => "57014",
            ProxyError::Unsupported(_) => "0A000",
            ProxyError::Undecryptable(_) => "XX001",
            ProxyError::UnknownStatement(_) => "26000",
            ProxyError::DuplicateStatement(_) => "42P05",
            ProxyError::InvalidParameter(_) => "22023",
            ProxyError::PermissionDenied(_) => "42501",
            ProxyError::Syntax { .. } => "42601",
            ProxyError::Admin { sqlstate, .. } => sqlstate,
            ProxyError::TransactionAborted => "25P02",
            ProxyError::FromServer { sqlstate, .. } => sqlstate,
        }
    }

    /// Whether the client connection ends with this error (else only the request fails).
    pub fn is_fatal(&self) -> bool {
        match self {
            ProxyError::PoolTimeout(_)
            | ProxyError::Canceled
            | ProxyError::ServerUnavailable(_)
            | ProxyError::Unsupported(_)
            | ProxyError::Undecryptable(_)
            | ProxyError::UnknownStatement(_)
            | ProxyError::DuplicateStatement(_)
            | ProxyError::InvalidParameter(_)
            | ProxyError::PermissionDenied(_)
            | ProxyError::TransactionAborted
            | ProxyError::Syntax { .. }
            | ProxyError::Admin { .. } => false,
            ProxyError::FromServer { fatal, .. } => *fatal,
            _ => true,
        }
    }

    /// The backend is unreachable or going away (worth trying another one), as opposed to a
    /// refusal that would repeat anywhere (bad password, missing database, pool timeout).
    pub fn backend_down(&self) -> bool {
        match self {
            ProxyError::ServerUnavailable(_) | ProxyError::ServerLost => true,
            ProxyError::FromServer { sqlstate, .. } => {
                sqlstate.starts_with("57P") || sqlstate.starts_with("08")
            }
            _ => false,
        }
    }

    /// What the client reads. Server-originated text passes through as the server wrote it;
    /// pgward's own errors say they come from pgward and leave out internal causes.
    pub fn client_message(&self) -> String {
        match self {
            ProxyError::FromServer { message, .. } => message.clone(),
            ProxyError::ServerUnavailable(_) => {
                "pgward: could not connect to the database server".into()
            }
            ProxyError::Protocol(_) => format!("pgward: {self}"),
            ProxyError::PermissionDenied(message)
            | ProxyError::Undecryptable(message)
            | ProxyError::Syntax { message, .. }
            | ProxyError::Admin { message, .. } => message.clone(),
            ProxyError::TransactionAborted => self.to_string(),
            ProxyError::Unsupported(message) if message.starts_with("pgward") => message.clone(),
            other => format!("pgward: {other}"),
        }
    }
}
