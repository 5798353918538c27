//! Authenticating a client against `[[users]]`: SCRAM-SHA-256, md5 or trust. A wrong password
//! and an unknown user look the same to the client (28P01), and take the same steps.

use bytes::Bytes;
use pgwire::messages::startup::Authentication;
use rand::RngCore;

use crate::config::AuthMethod;
use crate::protocol::messages::{self, tag, Reader};
use crate::protocol::scram::{self, ScramExchange, ScramSecret};
use crate::protocol::{FrameReader, FrameWriter, ProxyError};
use crate::state::Runtime;

pub async fn authenticate(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    rt: &Runtime,
    user: &str,
) -> Result<(), ProxyError> {
    let entry = rt.users.get(user);
    let failed = || ProxyError::AuthFailed(user.to_owned());
    match rt.config.auth.method {
        AuthMethod::Trust => {
            if entry.is_none() {
                return Err(failed());
            }
        }
        AuthMethod::Md5 => {
            let mut salt = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut salt);
            messages::auth(writer.buffer(), &Authentication::MD5Password(salt.to_vec()));
            writer.flush().await.map_err(|_| failed())?;
            let body = read_password(reader).await?;
            let response = Reader::new(&body).cstr()?.to_owned();
            let password = entry.and_then(|e| e.config.password.as_deref());
            if !password.is_some_and(|p| scram::md5_matches(user, p, &salt, &response)) {
                return Err(failed());
            }
        }
        AuthMethod::ScramSha256 => {
            // An unknown user still runs the exchange, against a secret nobody knows.
            let secret = entry
                .and_then(|e| e.scram.clone())
                .unwrap_or_else(|| ScramSecret::mock(user));
            messages::auth(
                writer.buffer(),
                &Authentication::SASL(vec!["SCRAM-SHA-256".into()]),
            );
            writer.flush().await.map_err(|_| failed())?;
            let body = read_password(reader).await?;
            let mut r = Reader::new(&body);
            let mechanism = r.cstr()?;
            if mechanism != "SCRAM-SHA-256" {
                return Err(ProxyError::protocol(format!(
                    "unsupported SASL mechanism {mechanism:?}"
                )));
            }
            let len = r.i32()?;
            let first = r.take(len.max(0) as usize)?;
            let (exchange, server_first) =
                ScramExchange::start(secret, first).map_err(ProxyError::protocol)?;
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
            if entry.is_none() {
                return Err(failed());
            }
            messages::auth(
                writer.buffer(),
                &Authentication::SASLFinal(Bytes::from(proof.server_final)),
            );
        }
    }
    messages::auth(writer.buffer(), &Authentication::Ok);
    Ok(())
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
