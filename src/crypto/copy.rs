//! COPY data in text, CSV and binary formats: designated fields encrypted on the way in
//! (rows are cut from a byte stream that CopyData messages split anywhere) and decrypted on
//! the way out (PostgreSQL sends one row per CopyData). Other fields pass byte for byte.

use std::sync::Arc;

use super::copy_binary::{self as binary, Cutter};
use super::plan::{CopyPlan, Plan, Reveal};
use super::DecryptError;

/// Why a COPY FROM row cannot be encrypted; the COPY is failed without sending the row.
#[derive(Debug, thiserror::Error)]
#[error("pgward: {0}")]
pub struct CopyError(String);

impl From<DecryptError> for CopyError {
    fn from(e: DecryptError) -> CopyError {
        CopyError(e.to_string())
    }
}

impl From<String> for CopyError {
    fn from(message: String) -> CopyError {
        CopyError(message)
    }
}

/// A byte stream that CopyData messages split anywhere, cut into whole units (a row, a
/// tuple) as they complete. Once a unit ends the data, the rest passes as it is.
#[derive(Default)]
pub(super) struct Units {
    /// Bytes of a unit not yet complete.
    partial: Vec<u8>,
    /// The end of the data was seen.
    ended: bool,
}

impl Units {
    /// Runs `unit` on the bytes not yet cut (what came before, then `data`): it writes the
    /// first whole unit to `out` and says its length and whether it ended the data, or
    /// None when the bytes end inside it. Bytes arrive as they are: whole units are cut
    /// from `data` itself, only an incomplete one is kept.
    pub(super) fn feed<E>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        mut unit: impl FnMut(&[u8], &mut Vec<u8>) -> Result<Option<(usize, bool)>, E>,
    ) -> Result<(), E> {
        if self.ended {
            out.extend_from_slice(data);
            return Ok(());
        }
        let joined;
        let buffered = match self.partial.is_empty() {
            true => data,
            false => {
                self.partial.extend_from_slice(data);
                joined = std::mem::take(&mut self.partial);
                &joined[..]
            }
        };
        let mut start = 0;
        while let Some((len, ended)) = unit(&buffered[start..], out)? {
            start += len;
            if ended {
                self.ended = true;
                out.extend_from_slice(&buffered[start..]);
                return Ok(());
            }
        }
        self.partial.extend_from_slice(&buffered[start..]);
        Ok(())
    }

    /// The data stopped inside a unit.
    pub(super) fn unfinished(&self) -> bool {
        !self.ended && !self.partial.is_empty()
    }

    /// The bytes of an incomplete last unit, when the data has not ended.
    pub(super) fn take_rest(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.partial);
        (!rest.is_empty() && !self.ended).then_some(rest)
    }
}

/// Cuts COPY FROM STDIN data into rows and encrypts their designated fields.
pub struct CopyIn {
    plan: Arc<Plan>,
    statement: usize,
    /// Text and CSV: the stream, cut into rows (the end marker `\.` ends it).
    rows_in: Units,
    /// The header line (CSV with HEADER) is still to come.
    header: bool,
    rows: u64,
    /// Binary format: the stream, cut into tuples.
    binary: Option<Cutter>,
}

impl CopyIn {
    pub fn new(plan: Arc<Plan>, statement: usize) -> CopyIn {
        let copy = copy_plan(&plan, statement);
        let (header, binary) = (copy.header, copy.binary.then(Cutter::default));
        CopyIn {
            plan,
            statement,
            rows_in: Units::default(),
            header,
            rows: 0,
            binary,
        }
    }

    /// The complete rows of `data` (with what came before), encrypted, appended to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CopyError> {
        if let Some(cutter) = &mut self.binary {
            let (plan, statement, rows) = (&self.plan, self.statement, &mut self.rows);
            return cutter.feed(data, out, |fields, out| {
                *rows += 1;
                encrypt_tuple(plan, statement, *rows, fields, out)
            });
        }
        let (plan, statement) = (&self.plan, self.statement);
        let (header, rows) = (&mut self.header, &mut self.rows);
        self.rows_in.feed(data, out, |buffered, out| {
            let Some(end) = row_end(copy_plan(plan, statement), buffered) else {
                return Ok(None);
            };
            let ended = encrypt_row(plan, statement, header, rows, &buffered[..end], out)?;
            Ok(Some((end, ended)))
        })
    }

    /// The last row when the data did not end with a newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CopyError> {
        if self.binary.as_ref().is_some_and(Cutter::unfinished) {
            return Err(CopyError(format!(
                "binary COPY data ends inside row {}; not sent, as it holds values for encrypted columns",
                self.rows + 1
            )));
        }
        let Some(rest) = self.rows_in.take_rest() else {
            return Ok(());
        };
        let (header, rows) = (&mut self.header, &mut self.rows);
        encrypt_row(&self.plan, self.statement, header, rows, &rest, out).map(|_| ())
    }
}

/// One text or CSV row of a COPY FROM with its line ending, its designated fields encrypted;
/// true when it is the end marker `\.`.
fn encrypt_row(
    full: &Plan,
    statement: usize,
    header: &mut bool,
    rows: &mut u64,
    line: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, CopyError> {
    let plan = copy_plan(full, statement);
    let body_len = line.len()
        - line
            .iter()
            .rev()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
    let (body, ending) = line.split_at(body_len);
    if std::mem::take(header) {
        out.extend_from_slice(line);
        return Ok(false);
    }
    if !plan.csv && body == b"\\." {
        out.extend_from_slice(line);
        return Ok(true);
    }
    *rows += 1;
    let fields = split_fields(plan, body);
    check_width(*rows, fields.len(), plan.columns.len())?;
    for (i, (field, id)) in fields.iter().zip(&plan.columns).enumerate() {
        if i > 0 {
            out.push(plan.delimiter);
        }
        let Some(id) = id else {
            out.extend_from_slice(field);
            continue;
        };
        match decode_field(plan, field) {
            None => out.extend_from_slice(field),
            Some(value) => {
                let envelope = full.crypto.by_id(*id).encrypt(&value);
                encode_field(plan, envelope.as_bytes(), out);
            }
        }
    }
    out.extend_from_slice(ending);
    Ok(false)
}

/// Decrypts the designated fields of COPY TO STDOUT rows.
pub struct CopyOut {
    plan: Arc<Plan>,
    statement: usize,
    /// The header line (CSV with HEADER) is still to come.
    header: bool,
    /// Binary format: the stream, cut into tuples (PostgreSQL sends whole ones).
    binary: Option<Cutter>,
}

impl CopyOut {
    pub fn new(plan: Arc<Plan>, statement: usize) -> CopyOut {
        let copy = copy_plan(&plan, statement);
        let (header, binary) = (copy.header, copy.binary.then(Cutter::default));
        CopyOut {
            plan,
            statement,
            header,
            binary,
        }
    }

    /// One row as PostgreSQL sent it, decrypted.
    pub fn row(&mut self, line: &[u8]) -> Result<Vec<u8>, CopyError> {
        if let Some(cutter) = &mut self.binary {
            let mut out = Vec::with_capacity(line.len());
            let plan = &self.plan;
            let columns = &copy_plan(plan, self.statement).columns;
            cutter.feed(line, &mut out, |fields, out| {
                decrypt_tuple(plan, columns, fields, out)
            })?;
            return Ok(out);
        }
        let plan = copy_plan(&self.plan, self.statement);
        if self.header {
            self.header = false;
            return Ok(line.to_vec());
        }
        let body_len = line.len() - usize::from(line.ends_with(b"\n"));
        let (body, ending) = line.split_at(body_len);
        let mut out = Vec::with_capacity(line.len());
        for (i, field) in split_fields(plan, body).iter().enumerate() {
            if i > 0 {
                out.push(plan.delimiter);
            }
            let id = plan.columns.get(i).copied().flatten();
            let (Some(id), Some(value)) = (id, decode_field(plan, field)) else {
                out.extend_from_slice(field);
                continue;
            };
            match self.plan.reveal[id.index()] {
                Reveal::Plaintext => {
                    let plain = self.plan.crypto.by_id(id).decrypt(&value)?;
                    encode_field(plan, &plain, &mut out);
                }
                Reveal::Null => out.extend_from_slice(&plan.null),
                Reveal::Ciphertext => out.extend_from_slice(field),
            }
        }
        out.extend_from_slice(ending);
        Ok(out)
    }
}

/// A row with another number of fields than the COPY has columns is not sent: which of its
/// values belongs to an encrypted column cannot be told.
fn check_width(row: u64, fields: usize, columns: usize) -> Result<(), CopyError> {
    if fields == columns {
        return Ok(());
    }
    Err(CopyError(format!(
        "COPY row {row} has {fields} fields where {columns} were expected; not sent, as it holds values for encrypted columns"
    )))
}

/// Binary format: tuple `row` of a COPY FROM, its designated fields encrypted.
fn encrypt_tuple(
    plan: &Plan,
    statement: usize,
    row: u64,
    fields: &[Option<&[u8]>],
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    let columns = &copy_plan(plan, statement).columns;
    check_width(row, fields.len(), columns.len())?;
    binary::put_count(out, fields.len());
    for (field, id) in fields.iter().zip(columns) {
        match (id, field) {
            (Some(id), Some(value)) => {
                let envelope = plan.crypto.by_id(*id).encrypt(value);
                binary::put_field(out, Some(envelope.as_bytes()))?;
            }
            _ => binary::put_field(out, *field)?,
        }
    }
    Ok(())
}

/// Binary format: a tuple of a COPY TO, its designated fields shown as the plan says.
fn decrypt_tuple(
    plan: &Plan,
    columns: &[Option<super::ColumnId>],
    fields: &[Option<&[u8]>],
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    binary::put_count(out, fields.len());
    for (i, field) in fields.iter().enumerate() {
        let id = columns.get(i).copied().flatten();
        let (Some(id), Some(value)) = (id, field) else {
            binary::put_field(out, *field)?;
            continue;
        };
        let plain;
        let shown = match plan.reveal[id.index()] {
            Reveal::Plaintext => {
                plain = plan.crypto.by_id(id).decrypt(value)?;
                Some(&plain[..])
            }
            Reveal::Null => None,
            Reveal::Ciphertext => Some(*value),
        };
        binary::put_field(out, shown)?;
    }
    Ok(())
}

fn copy_plan(plan: &Plan, statement: usize) -> &CopyPlan {
    plan.statements[statement]
        .copy
        .as_ref()
        .expect("a COPY plan")
}

/// Walks `data`, calling `visit` with the index of every byte that is data syntax: outside
/// CSV quotes and not escaped by a backslash (text format). Stops when `visit` says so.
fn walk_syntax(plan: &CopyPlan, data: &[u8], mut visit: impl FnMut(usize, u8) -> bool) {
    let mut i = 0;
    let mut quoted = false;
    while i < data.len() {
        let c = data[i];
        if plan.csv {
            let escaped_quote = quoted
                && c == plan.escape
                && plan.escape != plan.quote
                && data
                    .get(i + 1)
                    .is_some_and(|&n| n == plan.quote || n == plan.escape);
            if escaped_quote {
                i += 2;
                continue;
            }
            if c == plan.quote {
                quoted = !quoted;
            } else if !quoted && visit(i, c) {
                return;
            }
        } else if c == b'\\' {
            i += 1; // the escaped byte, a newline included, is data
        } else if visit(i, c) {
            return;
        }
        i += 1;
    }
}

/// The length of the first complete row of `data` (with its newline), if there is one.
fn row_end(plan: &CopyPlan, data: &[u8]) -> Option<usize> {
    let mut end = None;
    walk_syntax(plan, data, |i, c| {
        if c == b'\n' {
            end = Some(i + 1);
        }
        end.is_some()
    });
    end
}

/// The raw fields of a row body (no line ending), split at unescaped, unquoted delimiters.
fn split_fields<'a>(plan: &CopyPlan, body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    walk_syntax(plan, body, |i, c| {
        if c == plan.delimiter {
            fields.push(&body[start..i]);
            start = i + 1;
        }
        false
    });
    fields.push(&body[start..]);
    fields
}

/// A field's value, None for NULL.
fn decode_field(plan: &CopyPlan, field: &[u8]) -> Option<Vec<u8>> {
    if plan.csv {
        if field == plan.null.as_slice() {
            return None;
        }
        let mut value = Vec::with_capacity(field.len());
        let mut quoted = false;
        let mut i = 0;
        while i < field.len() {
            let c = field[i];
            if quoted && c == plan.escape && field.get(i + 1) == Some(&plan.quote) {
                value.push(plan.quote);
                i += 2;
                continue;
            }
            if quoted
                && c == plan.escape
                && plan.escape != plan.quote
                && field.get(i + 1) == Some(&plan.escape)
            {
                value.push(plan.escape);
                i += 2;
                continue;
            }
            if c == plan.quote {
                quoted = !quoted;
            } else {
                value.push(c);
            }
            i += 1;
        }
        return Some(value);
    }
    if field == plan.null.as_slice() {
        return None;
    }
    let mut value = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let c = field[i];
        if c != b'\\' || i + 1 == field.len() {
            value.push(c);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        if let Some(control) = super::literal::control_escape(next) {
            value.push(control);
            continue;
        }
        match next {
            b'v' => value.push(11),
            b'0'..=b'7' | b'x' => match super::literal::numeric_escape(field, next, i) {
                // COPY keeps the low byte of an octal escape above 255, as PostgreSQL does.
                Some((n, after)) => {
                    value.push(n as u8);
                    i = after;
                }
                None => value.push(next),
            },
            other => value.push(other),
        }
    }
    Some(value)
}

/// Writes `value` as a field, escaped or quoted as the format needs.
fn encode_field(plan: &CopyPlan, value: &[u8], out: &mut Vec<u8>) {
    if plan.csv {
        let needs_quotes = value.is_empty()
            || value == plan.null.as_slice()
            || value
                .iter()
                .any(|&c| c == plan.delimiter || c == plan.quote || c == b'\n' || c == b'\r');
        if !needs_quotes {
            out.extend_from_slice(value);
            return;
        }
        out.push(plan.quote);
        for &c in value {
            if c == plan.quote || c == plan.escape {
                out.push(plan.escape);
            }
            out.push(c);
        }
        out.push(plan.quote);
        return;
    }
    for &c in value {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            11 => out.extend_from_slice(b"\\v"),
            c if c == plan.delimiter => {
                out.push(b'\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> CopyPlan {
        CopyPlan {
            columns: vec![None, None],
            csv: false,
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            header: false,
            quote: b'"',
            escape: b'"',
            binary: false,
            incoming: true,
        }
    }

    fn csv() -> CopyPlan {
        CopyPlan {
            csv: true,
            delimiter: b',',
            null: Vec::new(),
            ..text()
        }
    }

    #[test]
    fn text_rows_and_fields() {
        let plan = text();
        assert_eq!(row_end(&plan, b"a\tb\\\nc\nrest"), Some(7));
        assert_eq!(row_end(&plan, b"a\tb"), None);
        assert_eq!(split_fields(&plan, b"a\\\tx\tb"), [&b"a\\\tx"[..], b"b"]);
        assert_eq!(
            decode_field(&plan, b"a\\tb\\101\\x41\\\\"),
            Some(b"a\tbAA\\".to_vec())
        );
        assert_eq!(decode_field(&plan, b"\\N"), None);
        let mut out = Vec::new();
        encode_field(&plan, b"a\tb\\\n", &mut out);
        assert_eq!(out, b"a\\tb\\\\\\n");
    }

    #[test]
    fn csv_rows_and_fields() {
        let plan = csv();
        assert_eq!(row_end(&plan, b"1,\"a\nb\"\n2"), Some(8));
        assert_eq!(
            split_fields(&plan, b"1,\"x,y\",\"\""),
            [&b"1"[..], b"\"x,y\"", b"\"\""]
        );
        assert_eq!(
            decode_field(&plan, b"\"say \"\"hi\"\"\""),
            Some(b"say \"hi\"".to_vec())
        );
        assert_eq!(decode_field(&plan, b""), None);
        assert_eq!(decode_field(&plan, b"\"\""), Some(Vec::new()));
        let mut out = Vec::new();
        encode_field(&plan, b"x,\"y\"", &mut out);
        assert_eq!(out, b"\"x,\"\"y\"\"\"");
    }
}
