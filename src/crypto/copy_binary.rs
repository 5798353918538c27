//! COPY data in PostgreSQL's binary format: a header, then tuples of length-prefixed fields,
//! then a trailer (see PostgreSQL's `COPY` reference, "Binary Format"). Designated columns are
//! `text` or `varchar`, whose binary form is the value's bytes, so a field is encrypted or
//! decrypted as it stands and only its length prefix changes.

use super::copy::Units;

/// The fixed start of the header; 4 bytes of flags and an extension length follow.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
const HEADER_FIXED: usize = SIGNATURE.len() + 8;

/// One piece of a binary COPY stream, borrowed from it.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// The whole header, extension included, to pass on as it is.
    Header(&'a [u8]),
    /// A tuple's fields, None for NULL.
    Tuple(Vec<Option<&'a [u8]>>),
    /// The trailer (a field count of -1).
    Trailer(&'a [u8]),
}

/// The first complete piece of `data` and its length in bytes, or None when `data` ends
/// inside it. `header_seen`: the header has already been cut off the stream.
fn next_piece(data: &[u8], header_seen: bool) -> Result<Option<(Piece<'_>, usize)>, String> {
    if !header_seen {
        let seen = data.len().min(SIGNATURE.len());
        if data[..seen] != SIGNATURE[..seen] {
            return Err("binary COPY data does not start with the PGCOPY signature".into());
        }
        let Some(extension) = data.get(HEADER_FIXED - 4..HEADER_FIXED) else {
            return Ok(None);
        };
        let extension = u32::from_be_bytes(extension.try_into().expect("4 bytes")) as usize;
        let len = HEADER_FIXED.saturating_add(extension);
        return Ok(data.get(..len).map(|header| (Piece::Header(header), len)));
    }
    let Some(count) = data.get(..2) else {
        return Ok(None);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Some((Piece::Trailer(&data[..2]), 2)));
    }
    let count =
        usize::try_from(count).map_err(|_| format!("binary COPY tuple with {count} fields"))?;
    let mut fields = Vec::with_capacity(count);
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = data.get(at..at + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
        at += 4;
        if len == -1 {
            fields.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| format!("binary COPY field of length {len}"))?;
        let Some(value) = data.get(at..at + len) else {
            return Ok(None);
        };
        fields.push(Some(value));
        at += len;
    }
    Ok(Some((Piece::Tuple(fields), at)))
}

/// A binary COPY stream being cut into pieces, from CopyData messages that may split it
/// anywhere.
#[derive(Default)]
pub(super) struct Cutter {
    pieces: Units,
    header_seen: bool,
}

impl Cutter {
    /// Appends the complete pieces of `data` (after what came before) to `out`: the header
    /// and the trailer as they are, each tuple as `tuple` writes it.
    pub(super) fn feed<E: From<String>>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        mut tuple: impl FnMut(&[Option<&[u8]>], &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let header_seen = &mut self.header_seen;
        self.pieces.feed(data, out, |buffered, out| {
            let Some((piece, len)) = next_piece(buffered, *header_seen)? else {
                return Ok(None);
            };
            let ended = match piece {
                Piece::Header(header) => {
                    *header_seen = true;
                    out.extend_from_slice(header);
                    false
                }
                Piece::Tuple(fields) => {
                    tuple(&fields, out)?;
                    false
                }
                Piece::Trailer(trailer) => {
                    out.extend_from_slice(trailer);
                    true
                }
            };
            Ok(Some((len, ended)))
        })
    }

    /// The stream stopped inside a piece.
    pub(super) fn unfinished(&self) -> bool {
        self.pieces.unfinished()
    }
}

/// Appends a tuple's field count.
pub(super) fn put_count(out: &mut Vec<u8>, count: usize) {
    let count = i16::try_from(count).expect("a tuple read from the stream");
    out.extend_from_slice(&count.to_be_bytes());
}

/// Appends a field: its length (-1 for NULL), then its bytes.
pub(super) fn put_field(out: &mut Vec<u8>, value: Option<&[u8]>) -> Result<(), String> {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(value) => {
            let len = i32::try_from(value.len())
                .map_err(|_| "a binary COPY field over 2 GB".to_owned())?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&0i32.to_be_bytes());
        h.extend_from_slice(&3u32.to_be_bytes());
        h.extend_from_slice(b"ext");
        h
    }

    #[test]
    fn pieces_are_cut_only_when_complete() {
        let mut data = header();
        put_count(&mut data, 2);
        put_field(&mut data, Some(b"abc")).unwrap();
        put_field(&mut data, None).unwrap();
        data.extend_from_slice(&(-1i16).to_be_bytes());

        for end in 0..header().len() {
            assert_eq!(
                next_piece(&data[..end], false),
                Ok(None),
                "header cut at {end}"
            );
        }
        let (piece, len) = next_piece(&data, false).unwrap().unwrap();
        assert_eq!((piece, len), (Piece::Header(&header()[..]), header().len()));

        let rest = &data[len..];
        let tuple_len = 2 + 4 + 3 + 4;
        for end in 0..tuple_len {
            assert_eq!(
                next_piece(&rest[..end], true),
                Ok(None),
                "tuple cut at {end}"
            );
        }
        let (piece, n) = next_piece(rest, true).unwrap().unwrap();
        assert_eq!(
            (piece, n),
            (Piece::Tuple(vec![Some(&b"abc"[..]), None]), tuple_len)
        );
        assert_eq!(
            next_piece(&rest[n..], true),
            Ok(Some((Piece::Trailer(&rest[n..]), 2)))
        );
    }

    #[test]
    fn a_stream_fed_byte_by_byte_comes_out_whole() {
        let mut data = header();
        for value in [Some(&b"x"[..]), None, Some(b"")] {
            put_count(&mut data, 1);
            put_field(&mut data, value).unwrap();
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let mut cutter = Cutter::default();
        let (mut out, mut tuples) = (Vec::new(), 0);
        for byte in &data {
            cutter
                .feed(std::slice::from_ref(byte), &mut out, |fields, out| {
                    tuples += 1;
                    put_count(out, fields.len());
                    fields.iter().try_for_each(|f| put_field(out, *f))
                })
                .unwrap();
        }
        assert_eq!((out, tuples, cutter.unfinished()), (data, 3, false));
    }

    #[test]
    fn text_data_and_bad_lengths_are_errors() {
        assert!(next_piece(b"1\tann\n", false).is_err());
        assert!(next_piece(b"PGCOPY\n", false).unwrap().is_none());
        assert!(next_piece(&(-2i16).to_be_bytes(), true).is_err());
        let mut bad = Vec::new();
        put_count(&mut bad, 1);
        bad.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(next_piece(&bad, true).is_err());
    }
}
