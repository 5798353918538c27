//! The first packets of a client connection: SSLRequest / GSSENCRequest negotiation, the
//! StartupMessage, or a CancelRequest. Runs on the raw socket, reading exactly one packet at a
//! time, so no plaintext sent ahead of a TLS handshake is ever taken as protocol data.

use std::collections::BTreeMap;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::error::ProxyError;
use super::frame::Stream;
use super::messages::{self, Reader};
use crate::config::TlsMode;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const MAX_STARTUP_LEN: usize = 10_000;

/// What a client asked for in its startup packet.
#[derive(Debug, Clone)]
pub struct StartupRequest {
    pub user: String,
    pub database: String,
    /// Every other run-time parameter, `options` expanded into its `-c name=value` settings.
    pub params: BTreeMap<String, String>,
    /// Protocol extensions we must decline with NegotiateProtocolVersion.
    pub unsupported_options: Vec<String>,
    pub minor_version: u16,
    /// The client negotiated TLS before it (SCRAM-SHA-256-PLUS is offered only then).
    pub tls: bool,
}

pub enum FirstPacket {
    Startup(StartupRequest),
    Cancel { pid: i32, secret: i32 },
}

/// Reads one untagged packet (length + body) and returns the body.
async fn read_packet(stream: &mut Stream) -> Result<Vec<u8>, ProxyError> {
    let eof = |_| ProxyError::protocol("connection closed during startup");
    let len = stream.read_i32().await.map_err(eof)?;
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(ProxyError::protocol(format!(
            "invalid startup packet length {len}"
        )));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await.map_err(eof)?;
    Ok(body)
}

/// Negotiates encryption and reads the startup packet. On error the caller gets the stream
/// back (when there still is one) to report the error on it.
pub async fn negotiate(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    tls_mode: TlsMode,
) -> Result<(Stream, FirstPacket), (Option<Stream>, ProxyError)> {
    let mut stream = Stream::Plain(tcp);
    loop {
        let body = match read_packet(&mut stream).await {
            Ok(b) => b,
            Err(e) => return Err((Some(stream), e)),
        };
        let mut r = Reader::new(&body);
        let code = r.i32().map_err(|e| (None, e))?;
        match code {
            SSL_REQUEST if !stream.is_tls() => {
                let acceptor = tls.filter(|_| tls_mode != TlsMode::Disable);
                let answer = if acceptor.is_some() { b'S' } else { b'N' };
                if stream.write_all(&[answer]).await.is_err() {
                    return Err((
                        None,
                        ProxyError::protocol("connection closed during startup"),
                    ));
                }
                if let Some(acceptor) = acceptor {
                    let Stream::Plain(tcp) = stream else {
                        unreachable!("SSLRequest is only honoured on a plain stream")
                    };
                    match acceptor.accept(tcp).await {
                        Ok(tls) => stream = Stream::ServerTls(Box::new(tls)),
                        Err(e) => {
                            return Err((
                                None,
                                ProxyError::protocol(format!("TLS handshake failed: {e}")),
                            ))
                        }
                    }
                }
            }
            GSSENC_REQUEST if !stream.is_tls() => {
                if stream.write_all(b"N").await.is_err() {
                    return Err((
                        None,
                        ProxyError::protocol("connection closed during startup"),
                    ));
                }
            }
            CANCEL_REQUEST => {
                let (pid, secret) = match (r.i32(), r.i32()) {
                    (Ok(p), Ok(s)) => (p, s),
                    _ => {
                        return Err((Some(stream), ProxyError::protocol("invalid cancel request")))
                    }
                };
                return Ok((stream, FirstPacket::Cancel { pid, secret }));
            }
            code if code >> 16 == 3 => {
                return match parse_startup(code as u16, r) {
                    Ok(req) => {
                        let req = StartupRequest {
                            tls: stream.is_tls(),
                            ..req
                        };
                        Ok((stream, FirstPacket::Startup(req)))
                    }
                    Err(e) => Err((Some(stream), e)),
                };
            }
            other => {
                return Err((
                    Some(stream),
                    ProxyError::protocol(format!(
                        "unsupported frontend protocol {}.{}",
                        other >> 16,
                        other & 0xffff
                    )),
                ))
            }
        }
    }
}

fn parse_startup(minor: u16, mut r: Reader<'_>) -> Result<StartupRequest, ProxyError> {
    let mut params = BTreeMap::new();
    let mut unsupported_options = Vec::new();
    let (mut user, mut database) = (None, None);
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr()?;
        match name {
            "user" => user = Some(value.to_owned()),
            "database" => database = Some(value.to_owned()),
            "options" => params.extend(parse_options(value)?),
            "replication" if !matches!(value, "false" | "off" | "no" | "0") => {
                return Err(ProxyError::Unsupported(
                    "pgward does not proxy replication connections".into(),
                ))
            }
            "replication" => {}
            n if n.starts_with("_pq_.") => unsupported_options.push(n.to_owned()),
            n => {
                params.insert(n.to_owned(), value.to_owned());
            }
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ProxyError::protocol("no user name specified in startup packet"))?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    Ok(StartupRequest {
        user,
        database,
        params,
        unsupported_options,
        minor_version: minor,
        tls: false,
    })
}

/// Expands the `options` startup parameter: `-c name=value`, `-cname=value`, `--name=value`,
/// with backslash-escaped spaces, as the PostgreSQL server reads it.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, ProxyError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let setting = if w == "-c" {
            iter.next()
                .ok_or_else(|| ProxyError::protocol("-c without a setting in options"))?
        } else if let Some(s) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            s.to_owned()
        } else {
            return Err(ProxyError::Unsupported(format!(
                "unsupported startup option {w:?}"
            )));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| ProxyError::protocol(format!("option {setting:?} has no value")))?;
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

/// Sends a FATAL error on a stream that is not framed yet, then closes it.
pub async fn reject(mut stream: Stream, err: &ProxyError) {
    let mut buf = BytesMut::new();
    messages::error_response(&mut buf, err, true);
    let _ = stream.write_all(&buf).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_forms() {
        let o =
            parse_options(r"-c statement_timeout=5s --search-path=a\ b -cDateStyle=ISO").unwrap();
        assert_eq!(
            o,
            vec![
                ("statement_timeout".into(), "5s".into()),
                ("search_path".into(), "a b".into()),
                ("DateStyle".into(), "ISO".into())
            ]
        );
        assert!(parse_options("-B 10").is_err());
    }
}
