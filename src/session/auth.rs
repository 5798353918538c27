//! Authenticating a client: against its `[[users]]` entry, or, with `auth.passthrough`, against
//! the password verifier PostgreSQL keeps for the role (read by `pool::verifiers`). SCRAM-SHA-256,
//! md5 or trust. A wrong password, an unknown user and a role without a password pgward can
//! check all look the same to the client (28P01), and take the same steps.

use std::sync::Arc;

use bytes::Bytes;
use pgwire::messages::startup::Authentication;
use rand::RngCore;

use crate::config::AuthMethod;
use crate::pool::verifiers::Verifier;
use crate::pool::Credential;
use crate::protocol::messages::{self, tag, Reader};
use crate::protocol::scram::{self, ChannelBinding, ScramExchange, ScramSecret};
use crate::protocol::{FrameReader, FrameWriter, ProxyError};
use crate::state::{Runtime, UserEntry};

const SCRAM: &str = "SCRAM-SHA-256";
const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Who an authenticated client is towards PostgreSQL.
#[derive(Debug)]
pub struct Login {
    /// The role pgward logs in to PostgreSQL as.
    pub backend_user: Arc<str>,
    pub credential: Arc<Credential>,
}

/// What pgward knows of a user name before the exchange.
enum Known<'a> {
    /// A `[[users]]` entry: it always wins over passthrough.
    Configured(&'a UserEntry),
    /// A PostgreSQL role, by passthrough.
    Role(Verifier),
    Nobody,
}

impl Known<'_> {
    /// The login of a client whose password held. `proven` is what a passthrough client
    /// proved of its role's password; a `[[users]]` entry has its own backend credentials.
    fn login(self, user: &str, proven: Credential) -> Login {
        match self {
            Known::Configured(entry) => Login {
                backend_user: entry.backend_user.clone(),
                credential: entry.backend_credential.clone(),
            },
            Known::Role(_) | Known::Nobody => Login {
                backend_user: user.into(),
                credential: Arc::new(proven),
            },
        }
    }
}

pub async fn authenticate(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    rt: &Runtime,
    user: &str,
    database: &str,
    over_tls: bool,
) -> Result<Login, ProxyError> {
    let failed = || ProxyError::AuthFailed(user.to_owned());
    let known = match (rt.users.get(user), &rt.verifiers) {
        (Some(entry), _) => Known::Configured(entry),
        (None, Some(verifiers)) => match verifiers.lookup(&rt.router, database, user).await {
            Ok(Some(verifier)) => Known::Role(verifier),
            Ok(None) => Known::Nobody,
            // Logged by the lookup; the client learns nothing of the cause.
            Err(_) => {
                return Err(ProxyError::ServerUnavailable(
                    "passthrough verifier lookup failed".into(),
                ))
            }
        },
        (None, None) => Known::Nobody,
    };
    let login = match rt.config.auth.method {
        AuthMethod::Trust => match known {
            Known::Configured(_) => known.login(user, Credential::None),
            _ => return Err(failed()),
        },
        AuthMethod::Md5 => {
            let mut salt = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut salt);
            messages::auth(writer.buffer(), &Authentication::MD5Password(salt.to_vec()));
            writer.flush().await.map_err(|_| failed())?;
            let body = read_password(reader).await?;
            let response = Reader::new(&body).cstr()?.to_owned();
            let proven = match &known {
                Known::Configured(entry) => entry
                    .config
                    .password
                    .as_deref()
                    .is_some_and(|p| scram::md5_matches(user, p, &salt, &response))
                    .then_some(Credential::None),
                Known::Role(Verifier::Md5(hash)) => scram::md5_hash_matches(hash, &salt, &response)
                    .then(|| Credential::Md5Hash(hash.clone())),
                // A SCRAM verifier cannot check an md5 response.
                Known::Role(Verifier::Scram(_)) | Known::Nobody => None,
            };
            let Some(proven) = proven else {
                return Err(failed());
            };
            known.login(user, proven)
        }
        AuthMethod::ScramSha256 => {
            // Anyone pgward cannot check still runs the exchange, against a secret nobody knows.
            let secret = match &known {
                Known::Configured(entry) => entry.scram.clone(),
                Known::Role(Verifier::Scram(secret)) => Some(secret.clone()),
                Known::Role(Verifier::Md5(_)) | Known::Nobody => None,
            }
            .unwrap_or_else(|| ScramSecret::mock(user));
            let server_key = secret.server_key;
            // Over TLS, channel binding to pgward's certificate is offered first, as
            // PostgreSQL does: a client that requires it (libpq's channel_binding=require)
            // then knows no one in the middle relays its login.
            let end_point = rt.tls.as_ref().and_then(|t| t.end_point.as_deref());
            let end_point = end_point.filter(|_| over_tls);
            let mut mechanisms = Vec::new();
            if end_point.is_some() {
                mechanisms.push(SCRAM_PLUS.to_owned());
            }
            mechanisms.push(SCRAM.to_owned());
            messages::auth(writer.buffer(), &Authentication::SASL(mechanisms));
            writer.flush().await.map_err(|_| failed())?;
            let body = read_password(reader).await?;
            let mut r = Reader::new(&body);
            let mechanism = r.cstr()?;
            let binding = match (mechanism, end_point) {
                (SCRAM_PLUS, Some(data)) => ChannelBinding::Bound(data),
                (SCRAM, Some(_)) => ChannelBinding::Declined,
                (SCRAM, None) => ChannelBinding::NotOffered,
                _ => {
                    return Err(ProxyError::protocol(format!(
                        "unsupported SASL mechanism {mechanism:?}"
                    )))
                }
            };
            let len = r.i32()?;
            let first = r.take(len.max(0) as usize)?;
            let (exchange, server_first) =
                ScramExchange::start(secret, first, binding).map_err(ProxyError::protocol)?;
            messages::auth(
                writer.buffer(),
                &Authentication::SASLContinue(Bytes::from(server_first)),
            );
            writer.flush().await.map_err(|_| failed())?;
            let body = read_password(reader).await?;
            let proof = exchange.finish(&body).map_err(|e| {
                tracing::info!(user, reason = e, "client authentication failed");
                failed()
            })?;
            let proven = match &known {
                Known::Configured(_) => Credential::None,
                Known::Role(Verifier::Scram(_)) => Credential::ScramKeys {
                    client_key: proof.client_key,
                    server_key,
                },
                Known::Role(Verifier::Md5(_)) | Known::Nobody => return Err(failed()),
            };
            messages::auth(
                writer.buffer(),
                &Authentication::SASLFinal(Bytes::from(proof.server_final)),
            );
            known.login(user, proven)
        }
    };
    messages::auth(writer.buffer(), &Authentication::Ok);
    Ok(login)
}

async fn read_password(reader: &mut FrameReader) -> Result<Vec<u8>, ProxyError> {
    let frame = reader
        .read_frame()
        .await
        .map_err(|e| ProxyError::protocol(format!("during authentication: {e}")))?;
    if frame.tag() != tag::PASSWORD {
        return Err(ProxyError::protocol(format!(
            "expected a password message, got '{}'",
            frame.tag() as char
        )));
    }
    Ok(frame.body().to_vec())
}
