//! Encoding of the messages pgward writes itself (through pgwire's message types) and a
//! bounds-checked reader for the few client messages it must look inside.
//!
//! pgwire's decoders assume well-formed input (they index without checks), so untrusted client
//! bytes are parsed here instead; a malformed body becomes an error, never a panic.

use bytes::{BufMut, BytesMut};
use pgwire::messages::extendedquery::{CloseComplete, ParseComplete};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;

use super::error::ProxyError;

/// Frontend message tags pgward knows; anything else is a protocol violation.
pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const FLUSH: u8 = b'H';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PASSWORD: u8 = b'p';
}

fn encode<M: Message>(buf: &mut BytesMut, msg: &M) {
    // Encoding into a BytesMut only fails for oversized messages, which pgward never builds.
    msg.encode(buf).expect("encode protocol message");
}

/// An ErrorResponse; `fatal` when the connection ends right after it.
pub fn error_response(buf: &mut BytesMut, err: &ProxyError, fatal: bool) {
    crate::metrics::error(err.sqlstate());
    let severity = if fatal { "FATAL" } else { "ERROR" };
    let mut fields = vec![
        (b'S', severity.to_string()),
        (b'V', severity.to_string()),
        (b'C', err.sqlstate().to_string()),
        (b'M', err.client_message()),
    ];
    if let Some(hint) = err.hint() {
        fields.push((b'H', hint.to_owned()));
    }
    encode(buf, &ErrorResponse::new(fields));
}

/// A NoticeResponse with severity WARNING.
pub fn notice(buf: &mut BytesMut, message: &str) {
    let fields = vec![
        (b'S', "WARNING".to_string()),
        (b'V', "WARNING".to_string()),
        (b'C', "01000".to_string()),
        (b'M', message.to_owned()),
    ];
    encode(buf, &NoticeResponse::new(fields));
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode(buf, &ReadyForQuery::new(status));
}

pub fn auth(buf: &mut BytesMut, msg: &Authentication) {
    encode(buf, msg);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    encode(
        buf,
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
    );
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    encode(buf, &BackendKeyData::new(pid, SecretKey::I32(secret)));
}

pub fn parse_complete(buf: &mut BytesMut) {
    encode(buf, &ParseComplete::new());
}

pub fn close_complete(buf: &mut BytesMut) {
    encode(buf, &CloseComplete::new());
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    encode(buf, &CommandComplete::new(tag.to_owned()));
}

/// A frontend message built from parts (tag, then body written by `body`), with its length.
pub fn frontend(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    frontend(buf, b'Q', |b| {
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
    });
}

/// How far `Reader::name` looks for the end of a name before it calls memchr.
const SHORT_NAME: usize = 16;

/// Cursor over an untrusted message body.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn cstr(&mut self) -> Result<&'a str, ProxyError> {
        std::str::from_utf8(self.cstr_bytes()?)
            .map_err(|_| ProxyError::protocol("invalid UTF-8 in message"))
    }

    /// A NUL-terminated string as bytes: SQL text is in the client's encoding, which need
    /// not be UTF-8.
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], ProxyError> {
        let end = memchr::memchr(0, self.data)
            .ok_or_else(|| ProxyError::protocol("string without terminator"))?;
        let s = &self.data[..end];
        self.data = &self.data[end + 1..];
        Ok(s)
    }

    /// A statement or portal name. pgward keys statements by name as text, so a name that
    /// is not UTF-8 fails its message (an error the client can go on after), not the
    /// connection.
    pub fn name(&mut self) -> Result<&'a str, ProxyError> {
        // Names are short and most are empty (the unnamed statement and portal): a look at
        // the first bytes costs less than memchr's call and set-up.
        let head = &self.data[..self.data.len().min(SHORT_NAME)];
        let bytes = match head.iter().position(|&b| b == 0) {
            Some(end) => {
                let (name, rest) = self.data.split_at(end);
                self.data = &rest[1..];
                name
            }
            None => self.cstr_bytes()?,
        };
        std::str::from_utf8(bytes).map_err(|_| {
            ProxyError::Unsupported("pgward: statement and portal names must be valid UTF-8".into())
        })
    }

    pub fn u8(&mut self) -> Result<u8, ProxyError> {
        let (&b, rest) = self
            .data
            .split_first()
            .ok_or_else(|| ProxyError::protocol("message too short"))?;
        self.data = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, ProxyError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ProxyError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProxyError> {
        if self.data.len() < n {
            return Err(ProxyError::protocol("message too short"));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// The parts of a Parse message the proxy needs.
pub struct ParseMsg<'a> {
    pub name: &'a str,
    /// In the client's encoding.
    pub query: &'a [u8],
    /// Parameter type OIDs, still encoded (count + OIDs), copied verbatim when re-prepared.
    pub param_types: &'a [u8],
}

pub fn read_parse(body: &[u8]) -> Result<ParseMsg<'_>, ProxyError> {
    let mut r = Reader::new(body);
    let name = r.name()?;
    let query = r.cstr_bytes()?;
    let types = r.rest();
    let mut t = Reader::new(types);
    let n = t.i16()?;
    if n < 0 || t.rest().len() != n as usize * 4 {
        return Err(ProxyError::protocol("invalid Parse message"));
    }
    Ok(ParseMsg {
        name,
        query,
        param_types: types,
    })
}

pub fn write_parse(buf: &mut BytesMut, name: &str, query: &[u8], param_types: &[u8]) {
    frontend(buf, b'P', |b| {
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_slice(query);
        b.put_u8(0);
        b.put_slice(param_types);
    });
}

/// The SQL text of a Query or a Parse; None for other messages and for malformed ones (the
/// pump closes the connection over those).
pub fn sql_text(frame: &super::Frame) -> Option<&[u8]> {
    match frame.tag() {
        tag::QUERY => read_query(frame.body()).ok(),
        tag::PARSE => read_parse(frame.body()).ok().map(|p| p.query),
        _ => None,
    }
}

/// The query text of a simple Query message, in the client's encoding.
pub fn read_query(body: &[u8]) -> Result<&[u8], ProxyError> {
    Reader::new(body).cstr_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_roundtrip_and_malformed() {
        let mut buf = BytesMut::new();
        write_parse(&mut buf, "s1", b"select $1", &[0, 1, 0, 0, 0, 23]);
        let p = read_parse(&buf[5..]).unwrap();
        assert_eq!((p.name, p.query), ("s1", &b"select $1"[..]));
        assert_eq!(p.param_types, &[0, 1, 0, 0, 0, 23]);
        assert!(read_parse(b"s1\0select").is_err());
        assert!(read_parse(b"s1\0q\0\0\x05").is_err());
        // LATIN9 text is fine; a name that is not UTF-8 fails the message only.
        let p = read_parse(b"s1\0select 'caf\xe9'\0\0\0").unwrap();
        assert_eq!(p.query, b"select 'caf\xe9'");
        let err = read_parse(b"s\xe9\0select 1\0\0\0").err().unwrap();
        assert!(!err.is_fatal());
    }

    #[test]
    fn names_of_every_length_end_at_their_nul() {
        for len in [0, 1, SHORT_NAME - 1, SHORT_NAME, SHORT_NAME + 1, 63] {
            let name = "n".repeat(len);
            let body = [name.as_bytes(), b"\0stmt\0\0\0"].concat();
            let mut r = Reader::new(&body);
            assert_eq!(r.name().unwrap(), name);
            assert_eq!(r.cstr().unwrap(), "stmt");
            assert_eq!(r.i16().unwrap(), 0);
        }
        assert!(Reader::new(b"portal").name().is_err(), "no NUL");
        assert!(Reader::new(b"").name().is_err());
        assert!(!Reader::new(b"p\xe9\0").name().unwrap_err().is_fatal());
    }
}
