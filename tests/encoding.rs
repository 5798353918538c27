//! A client_encoding other than UTF-8 (LATIN9): SQL text reaches PostgreSQL byte for byte,
//! through psql and through a raw protocol client (simple and extended protocol), and pgward
//! never refuses what PostgreSQL accepts. Client auth is `trust` so the raw client needs no
//! SCRAM.

mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use common::{psql, run_program, Pgward, ProxyConfig};

const PROTOCOL_3_0: u32 = 196_608;
/// "café" in LATIN9: not UTF-8.
const CAFE: &[u8] = b"caf\xe9";

struct Message {
    tag: u8,
    body: Vec<u8>,
}

fn read_message(stream: &mut TcpStream) -> Message {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).expect("a message from pgward");
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0; length - 4];
    stream.read_exact(&mut body).expect("message body");
    Message { tag: head[0], body }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(((body.len() + 4) as u32).to_be_bytes());
    out.extend(body);
    out
}

fn cstr(parts: &[&[u8]]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| p.iter().copied().chain([0]))
        .collect()
}

/// A LATIN9 client through startup and trust auth, up to the first ReadyForQuery.
fn latin9_client(pgward: &Pgward) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", pgward.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend(cstr(&[
        b"user",
        common::USER.as_bytes(),
        b"database",
        common::DATABASE.as_bytes(),
        b"client_encoding",
        b"LATIN9",
    ]));
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    stream.write_all(&packet).unwrap();
    while read_message(&mut stream).tag != b'Z' {}
    stream
}

/// Sends `messages` and returns the answer up to ReadyForQuery: the values of its DataRows
/// and the SQLSTATEs of its errors.
fn request(stream: &mut TcpStream, messages: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<String>) {
    stream.write_all(&messages.concat()).unwrap();
    let (mut values, mut errors) = (Vec::new(), Vec::new());
    loop {
        let m = read_message(stream);
        match m.tag {
            b'Z' => return (values, errors),
            b'D' => {
                let mut rest = &m.body[2..];
                while rest.len() >= 4 {
                    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                    let len = len.max(0) as usize;
                    values.push(rest[4..4 + len].to_vec());
                    rest = &rest[4 + len..];
                }
            }
            b'E' => {
                let at = m.body.windows(2).position(|w| w == b"\0C").map(|i| i + 2);
                let at = if m.body[0] == b'C' { 1 } else { at.unwrap() };
                let end = m.body[at..].iter().position(|&b| b == 0).unwrap();
                errors.push(String::from_utf8_lossy(&m.body[at..at + end]).into_owned());
            }
            _ => {}
        }
    }
}

fn query(sql: &[u8]) -> Vec<u8> {
    message(b'Q', &cstr(&[sql]))
}

/// Parse (no parameter types), Bind (text parameters, text results), Execute, Sync.
fn extended(name: &[u8], sql: &[u8], params: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut parse = cstr(&[name, sql]);
    parse.extend(0u16.to_be_bytes());
    let mut bind = cstr(&[b"", name]);
    bind.extend(0u16.to_be_bytes());
    bind.extend((params.len() as u16).to_be_bytes());
    for p in params {
        bind.extend((p.len() as i32).to_be_bytes());
        bind.extend(*p);
    }
    bind.extend(0u16.to_be_bytes());
    vec![
        message(b'P', &parse),
        message(b'B', &bind),
        message(
            b'E',
            &cstr(&[b""])
                .into_iter()
                .chain([0, 0, 0, 0])
                .collect::<Vec<_>>(),
        ),
        message(b'S', &[]),
    ]
}

fn latin9_sql(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn latin9_text_passes_through_both_protocols() {
    for mode in ["transaction", "session"] {
        let pgward = ProxyConfig::new(mode, 2).auth("trust").start();
        let mut client = latin9_client(&pgward);
        // Simple protocol: the server decodes the LATIN9 literal (4 characters, é is U+00E9).
        let sql = latin9_sql(&[
            b"SELECT '",
            CAFE,
            b"', length('",
            CAFE,
            b"'), encode(convert_to('",
            CAFE,
            b"', 'UTF8'), 'hex')",
        ]);
        let (values, errors) = request(&mut client, &[query(&sql)]);
        assert_eq!(errors, Vec::<String>::new(), "{mode}");
        assert_eq!(
            values,
            vec![CAFE.to_vec(), b"4".to_vec(), b"636166c3a9".to_vec()],
            "{mode}"
        );

        // Extended protocol, named and unnamed statements, LATIN9 in text and parameter.
        for name in [&b"latin9"[..], b""] {
            let sql = latin9_sql(&[b"SELECT $1::text || '", &CAFE[3..], b"'"]);
            let (values, errors) = request(&mut client, &extended(name, &sql, &[b"caf"]));
            assert_eq!(errors, Vec::<String>::new(), "{mode}");
            assert_eq!(values, vec![CAFE.to_vec()], "{mode}");
        }
        let sql = latin9_sql(&[b"SELECT length($1::text)"]);
        let (values, _) = request(&mut client, &extended(b"", &sql, &[CAFE]));
        assert_eq!(values, vec![b"4".to_vec()], "{mode}");

        // A statement name that is not UTF-8 fails its request, not the connection.
        let (values, errors) = request(&mut client, &extended(b"s\xe9", b"SELECT 1", &[]));
        assert!(values.is_empty(), "{mode}");
        assert_eq!(errors, vec!["0A000".to_string()], "{mode}");
        let (values, _) = request(&mut client, &[query(b"SELECT 1")]);
        assert_eq!(values, vec![b"1".to_vec()], "{mode}");
    }
}

#[test]
fn psql_with_latin9_inserts_and_reads_back_the_same_bytes() {
    common::admin_psql(
        common::DATABASE,
        "CREATE TABLE IF NOT EXISTS enc_latin9 (t text); GRANT ALL ON enc_latin9 TO app;",
    );
    let pgward = ProxyConfig::transaction(2).start();
    let mut command = psql(&pgward);
    let sql = latin9_sql(&[
        b"INSERT INTO enc_latin9 VALUES ('",
        CAFE,
        b"'); SELECT encode(convert_to(t, 'UTF8'), 'hex') FROM enc_latin9 WHERE t = '",
        CAFE,
        b"' LIMIT 1",
    ]);
    command
        .env("PGCLIENTENCODING", "LATIN9")
        .arg("-c")
        .arg(OsString::from_vec(sql));
    let run = run_program(&mut command, Duration::from_secs(30)).expect_success("psql LATIN9");
    assert_eq!(run.stdout.trim(), "INSERT 0 1\n636166c3a9");
}
