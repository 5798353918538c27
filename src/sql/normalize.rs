//! The cache key of a SQL text: the text with its constants replaced (`aid = 4711` and
//! `aid = 12` both become `aid = 0`), so clients that inline values (psql, pgbench -M simple,
//! psycopg2, PHP) hit the analysis cache instead of parsing every query.
//!
//! The analysis is made from the normalized text itself, never from the original, so two
//! texts with one key always get the analysis of that key. Which statement and which
//! functions a text holds does not depend on its constants, so the verdict is the original's.
//! Where this lexer could disagree with PostgreSQL about where a constant ends, it declines
//! (None) and the caller analyses the text as it is:
//! - a backslash anywhere: its meaning in '...' depends on standard_conforming_strings;
//! - dollar quoting, which needs a tag-matching lexer;
//! - an unterminated string, identifier or comment;
//! - `pgward.route`, whose value is the point of the statement;
//! - `COPY`, whose options (`FORMAT 'csv'`, `DELIMITER ';'`, `NULL 'x'`) say how column
//!   encryption must read the data that follows.
//!
//! Comments and quoted identifiers are copied as they are (a leading hint stays visible).

use super::Needle;

/// The normalized text, or None when `sql` should be analysed as it is.
pub(crate) fn normalize(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    if memchr::memchr(b'\\', b).is_some()
        || super::contains_ignore_case(b, &super::ROUTE_PARAM_NEEDLE)
        || contains_word_ignore_case(b, &COPY)
    {
        return None;
    }
    // Runs of the text are copied as `str` slices: they start and end at ASCII bytes (or the
    // end), so no check of the whole result as UTF-8 is needed; `get` would say if one did not.
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                i = skip_quoted(b, i, b'\'')?;
                out.push_str("''");
            }
            b'"' => {
                let end = skip_quoted(b, i, b'"')?;
                out.push_str(sql.get(i..end)?);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                out.push_str(sql.get(i..end)?);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = skip_block_comment(sql, i)?;
                out.push_str(sql.get(i..end)?);
                i = end;
            }
            b'$' if b.get(i + 1).is_some_and(|n| !n.is_ascii_digit()) => return None,
            b'0'..=b'9' if !continues_word(b, i) => {
                i = skip_number(b, i);
                out.push('0');
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) && !continues_word(b, i) => {
                i = skip_number(b, i);
                out.push('0');
            }
            _ => {
                // This byte and the ordinary ones after it are copied as they are.
                let end = b[i + 1..]
                    .iter()
                    .position(|&x| MAY_START_TOKEN[x as usize])
                    .map_or(b.len(), |p| i + 1 + p);
                out.push_str(sql.get(i..end)?);
                i = end;
            }
        }
    }
    Some(out)
}

/// The bytes a match arm of `normalize` may act on; runs of the others are copied whole.
const MAY_START_TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = matches!(c, b'\'' | b'"' | b'-' | b'/' | b'$' | b'.') || c.is_ascii_digit();
        b += 1;
    }
    table
};

/// Whether the byte at `i` belongs to the word before it (`t1`, `$1`, `x.2` is not a word).
fn continues_word(b: &[u8], i: usize) -> bool {
    i > 0 && is_word_byte(b[i - 1])
}

/// A byte of an identifier, keyword, number or `$n` (UTF-8 bytes count as letters).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$') || b >= 0x80
}

/// The end of the '...' or "..." starting at `start` (a doubled quote is part of it).
fn skip_quoted(b: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let p = b[i..].iter().position(|&x| x == quote)?;
        i += p + 1;
        if b.get(i) != Some(&quote) {
            return Some(i);
        }
        i += 1;
    }
}

/// The end of the (nesting) block comment starting at `start`.
fn skip_block_comment(sql: &str, start: usize) -> Option<usize> {
    let (_, tail) = super::hint::split_block_comment(sql.get(start + 2..)?)?;
    Some(sql.len() - tail.len())
}

/// The end of a numeric constant: digits, a fraction, an exponent (`1.5e-3`).
fn skip_number(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        let mut j = i + 1;
        if j < b.len() && matches!(b[j], b'+' | b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

const COPY: Needle = Needle::new(b"copy");

/// Whether `word` stands in `hay` as a word of its own (`COPY`, not `copyright`).
fn contains_word_ignore_case(hay: &[u8], word: &Needle) -> bool {
    let len = word.bytes().len();
    super::find_ignore_case(hay, word)
        .any(|i| !continues_word(hay, i) && !hay.get(i + len).copied().is_some_and(is_word_byte))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn text_beyond_ascii_is_copied_whole() {
        assert_eq!(
            normalize("select 'é', \"naïve\", größe + 2 from tëst /* ñ */ where x = 3 -- ü")
                .as_deref(),
            Some("select '', \"naïve\", größe + 0 from tëst /* ñ */ where x = 0 -- ü")
        );
        assert_eq!(normalize("select 1é2").as_deref(), Some("select 0é2"));
    }

    #[test]
    fn constants_become_placeholders() {
        assert_eq!(
            normalize("SELECT abalance FROM pgbench_accounts WHERE aid = 4711").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = 0")
        );
        assert_eq!(
            normalize("select * from t2 where a = 'it''s' and b > 1.5e-3 and c = $1").as_deref(),
            Some("select * from t2 where a = '' and b > 0 and c = $1")
        );
        assert_eq!(
            normalize("select x.y, .5, E'a', \"col'1\" from s1.t_9").as_deref(),
            Some("select x.y, 0, E'', \"col'1\" from s1.t_9")
        );
        // Bytes that may start a token but do not here are copied like the rest.
        assert_eq!(
            normalize("select a-1, b/2, t1.c2 from t1 where x = -3 and y = 'q'--c\n").as_deref(),
            Some("select a-0, b/0, t1.c2 from t1 where x = -0 and y = ''--c\n")
        );
    }

    #[test]
    fn comments_and_hints_stay() {
        assert_eq!(
            normalize("/* pgward:replica */ select 1 -- it's 2\n").as_deref(),
            Some("/* pgward:replica */ select 0 -- it's 2\n")
        );
    }

    #[test]
    fn declines_what_it_cannot_lex_like_postgresql() {
        assert_eq!(normalize("select 'a\\'; delete from t; --'"), None);
        assert_eq!(normalize("select $$a'b$$"), None);
        assert_eq!(normalize("select 'unterminated"), None);
        assert_eq!(normalize("select 1 /* open"), None);
        assert_eq!(normalize("SET pgward.route = 'replica'"), None);
        assert_eq!(
            normalize("COPY t FROM STDIN (FORMAT 'csv', DELIMITER ';')"),
            None
        );
        // A name that merely starts with "copy" is normalized like any other text.
        assert!(normalize("SELECT copyright FROM copies WHERE id = 5").is_some());
        assert!(normalize("select 1 as mycopy, copy_2").is_some());
        assert_eq!(normalize("select 1; Copy t to stdout"), None);
    }

    #[test]
    fn a_write_hidden_in_a_string_is_not_possible() {
        // The whole string is one constant; the delete is outside it and stays visible.
        assert_eq!(
            normalize("select 'x'; delete from t where id = 3").as_deref(),
            Some("select ''; delete from t where id = 0")
        );
    }
}
