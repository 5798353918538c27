//! Malformed protocol input over a raw socket: pgward answers with an ErrorResponse carrying
//! SQLSTATE 08P01 and closes that connection, while a well-behaved client on the same pgward
//! keeps working. Client auth is `trust` here so the raw socket needs no SCRAM.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{deadline, Pgward, ProxyConfig};
use tokio_postgres::Client;

/// How long pgward gets to answer and close; a connection left open fails the test.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const PROTOCOL_3_0: u32 = 196_608;

/// One message from pgward: type byte and body (without the length).
#[derive(Debug)]
struct Message {
    tag: u8,
    body: Vec<u8>,
}

/// The next message, or `None` at EOF (a reset after the server's last message counts as EOF).
fn read_message(stream: &mut TcpStream) -> Option<Message> {
    let mut tag = [0u8; 1];
    match stream.read_exact(&mut tag) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            return None
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("pgward neither answered nor closed the connection within {READ_TIMEOUT:?}")
        }
        Err(e) => panic!("reading from pgward: {e}"),
    }
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("message length");
    let length = u32::from_be_bytes(length) as usize;
    assert!(
        (4..1 << 20).contains(&length),
        "implausible message length {length}"
    );
    let mut body = vec![0; length - 4];
    stream.read_exact(&mut body).expect("message body");
    Some(Message { tag: tag[0], body })
}

/// ErrorResponse/NoticeResponse fields: code byte ('S', 'C', 'M', ...) -> value.
fn error_fields(body: &[u8]) -> HashMap<char, String> {
    let mut fields = HashMap::new();
    let mut rest = body;
    while let Some((&code, after)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = after
            .iter()
            .position(|&b| b == 0)
            .expect("NUL-terminated field");
        fields.insert(
            code as char,
            String::from_utf8_lossy(&after[..end]).into_owned(),
        );
        rest = &after[end + 1..];
    }
    fields
}

fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (key, value) in params {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

fn raw_connection(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting to pgward");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// A connection through startup and trust auth, up to the first ReadyForQuery.
fn authenticated(addr: SocketAddr) -> TcpStream {
    let mut stream = raw_connection(addr);
    stream
        .write_all(&startup_packet(
            PROTOCOL_3_0,
            &[("user", common::USER), ("database", common::DATABASE)],
        ))
        .unwrap();
    loop {
        let message = read_message(&mut stream).expect("pgward closed during startup");
        match message.tag {
            b'R' => assert_eq!(
                message.body[..4],
                [0, 0, 0, 0],
                "expected AuthenticationOk (trust)"
            ),
            b'E' => panic!("startup failed: {:?}", error_fields(&message.body)),
            b'Z' => return stream,
            _ => {} // ParameterStatus, BackendKeyData, notices
        }
    }
}

/// Sends `bytes` and expects an ErrorResponse with SQLSTATE 08P01 as the last message, then EOF.
fn expect_protocol_violation(mut stream: TcpStream, bytes: &[u8], what: &str) {
    // The server may close before taking everything; what matters is its answer.
    let _ = stream.write_all(bytes);
    let mut messages = Vec::new();
    while let Some(message) = read_message(&mut stream) {
        messages.push(message);
    }
    let (last, before) = messages
        .split_last()
        .unwrap_or_else(|| panic!("{what}: pgward closed without an ErrorResponse"));
    assert!(
        before.iter().all(|m| m.tag == b'N'),
        "{what}: unexpected messages before the error: {before:?}"
    );
    assert_eq!(
        last.tag, b'E',
        "{what}: expected an ErrorResponse, got {last:?}"
    );
    let fields = error_fields(&last.body);
    assert_eq!(
        fields.get(&'C').map(String::as_str),
        Some("08P01"),
        "{what}: {fields:?}"
    );
    assert!(
        fields.get(&'S').is_some_and(|s| !s.is_empty()),
        "{what}: no severity: {fields:?}"
    );
    assert!(
        fields.get(&'M').is_some_and(|m| !m.is_empty()),
        "{what}: no message: {fields:?}"
    );
}

async fn assert_works(client: &Client) {
    let row = client
        .query_one("SELECT $1::int4 + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

/// Runs the raw-socket part `misbehave` while a proper client is connected, and checks that
/// client and a new one work before and after.
async fn with_bystander(pgward: &Pgward, misbehave: impl FnOnce(SocketAddr) + Send + 'static) {
    let addr = pgward.addr;
    deadline(Duration::from_secs(60), async {
        let bystander = pgward.connect().await;
        assert_works(&bystander).await;
        if let Err(e) = tokio::task::spawn_blocking(move || misbehave(addr)).await {
            std::panic::resume_unwind(e.into_panic());
        }
        assert_works(&bystander).await;
        assert_works(&pgward.connect().await).await;
    })
    .await;
}

fn trust_pgward() -> Pgward {
    ProxyConfig::transaction(2).auth("trust").start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_startup_packet() {
    let pgward = trust_pgward();
    with_bystander(&pgward, |addr| {
        let mut packet = 0x7fff_ffffu32.to_be_bytes().to_vec();
        packet.extend(PROTOCOL_3_0.to_be_bytes());
        expect_protocol_violation(raw_connection(addr), &packet, "startup length 0x7fffffff");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_protocol_version() {
    let pgward = trust_pgward();
    with_bystander(&pgward, |addr| {
        let packet = startup_packet(4 << 16, &[("user", common::USER)]);
        expect_protocol_violation(raw_connection(addr), &packet, "protocol version 4.0");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_startup_packet() {
    let pgward = trust_pgward();
    with_bystander(&pgward, |addr| {
        expect_protocol_violation(
            raw_connection(addr),
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "an HTTP request",
        );
        expect_protocol_violation(
            raw_connection(addr),
            &[0, 0, 0, 2, b'x', b'y'],
            "startup length 2",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_message_type_after_authentication() {
    let pgward = trust_pgward();
    with_bystander(&pgward, |addr| {
        expect_protocol_violation(authenticated(addr), &[b'!', 0, 0, 0, 4], "message type '!'");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_length_after_authentication() {
    let pgward = trust_pgward();
    with_bystander(&pgward, |addr| {
        expect_protocol_violation(
            authenticated(addr),
            &[b'Q', 0, 0, 0, 2],
            "Query with length 2",
        );
        expect_protocol_violation(
            authenticated(addr),
            &[b'Q', 0x7f, 0xff, 0xff, 0xff],
            "Query with length 0x7fffffff",
        );
    })
    .await;
}

#[test]
fn error_fields_are_parsed() {
    let body = b"SFATAL\0C08P01\0Minvalid message\0\0";
    let fields = error_fields(body);
    assert_eq!(fields[&'S'], "FATAL");
    assert_eq!(fields[&'C'], "08P01");
    assert_eq!(fields[&'M'], "invalid message");
    assert_eq!(
        startup_packet(PROTOCOL_3_0, &[("user", "u")]),
        b"\0\0\0\x10\0\x03\0\0user\0u\0\0"
    );
}
