//! Literals in SQL text: found by the position the analysis reports, decoded to the value
//! PostgreSQL would see, and replaced by other text (ciphertext). Forms whose value this
//! lexer cannot be sure of (Unicode escapes, bit strings) are refused, never guessed.

use super::plan::Refusal;

/// A literal found in the text: its byte range and decoded value.
#[derive(Debug, PartialEq, Eq)]
pub struct Literal {
    pub start: usize,
    pub end: usize,
    pub value: Vec<u8>,
}

/// The byte offset of a 1-based (line, column) position, columns counted in characters.
pub fn offset(sql: &str, line: u64, column: u64) -> Option<usize> {
    let mut current = 1;
    let mut line_start = 0;
    if line > 1 {
        for (i, b) in sql.bytes().enumerate() {
            if b == b'\n' {
                current += 1;
                if current == line {
                    line_start = i + 1;
                    break;
                }
            }
        }
        if current != line {
            return None;
        }
    }
    let rest = &sql[line_start..];
    let skip = usize::try_from(column.checked_sub(1)?).ok()?;
    rest.char_indices().nth(skip).map(|(i, _)| line_start + i)
}

/// The literal starting at byte `at`.
pub fn read(sql: &str, at: usize) -> Result<Literal, Refusal> {
    let b = sql.as_bytes();
    let unsupported = || {
        Refusal("pgward: cannot read a literal written for an encrypted column; pass it as a parameter or a plain '...' string".into())
    };
    match b.get(at).copied() {
        Some(b'\'') => quoted(b, at, at + 1, false).ok_or_else(unsupported),
        Some(b'e' | b'E') if b.get(at + 1) == Some(&b'\'') => {
            quoted(b, at, at + 2, true).ok_or_else(unsupported)
        }
        Some(b'n' | b'N') if b.get(at + 1) == Some(&b'\'') => {
            quoted(b, at, at + 2, false).ok_or_else(unsupported)
        }
        Some(b'$') => {
            let end = super::plan::dollar_quote_end(b, at).ok_or_else(unsupported)?;
            let tag = b[at + 1..]
                .iter()
                .position(|&c| c == b'$')
                .ok_or_else(unsupported)?
                + 2;
            Ok(Literal {
                start: at,
                end,
                value: b[at + tag..end - tag].to_vec(),
            })
        }
        Some(c) if c.is_ascii_digit() || c == b'.' => {
            let mut end = at;
            while end < b.len() {
                let c = b[end];
                let exponent_sign = (c == b'+' || c == b'-') && matches!(b[end - 1], b'e' | b'E');
                if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exponent_sign {
                    end += 1;
                } else {
                    break;
                }
            }
            Ok(Literal {
                start: at,
                end,
                value: b[at..end].to_vec(),
            })
        }
        _ => Err(unsupported()),
    }
}

/// A quoted string whose body starts at `body`; `escapes` for E'...' strings.
fn quoted(b: &[u8], start: usize, body: usize, escapes: bool) -> Option<Literal> {
    let mut value = Vec::new();
    let mut i = body;
    loop {
        let c = *b.get(i)?;
        match c {
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                value.push(b'\'');
                i += 2;
            }
            b'\'' => {
                return Some(Literal {
                    start,
                    end: i + 1,
                    value,
                })
            }
            b'\\' if escapes => {
                let next = *b.get(i + 1)?;
                i += 2;
                if let Some(control) = control_escape(next) {
                    value.push(control);
                    continue;
                }
                match next {
                    b'0'..=b'7' | b'x' => {
                        let (n, after) = numeric_escape(b, next, i)?;
                        value.push(u8::try_from(n).ok()?);
                        i = after;
                    }
                    b'u' | b'U' => return None,
                    other => value.push(other),
                }
            }
            _ => {
                value.push(c);
                i += 1;
            }
        }
    }
}

/// The control character a backslash letter stands for in E'...' strings and COPY's text
/// format (`\b \f \n \r \t`; COPY also knows `\v`).
pub(super) fn control_escape(letter: u8) -> Option<u8> {
    match letter {
        b'b' => Some(8),
        b'f' => Some(12),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    }
}

/// The value of an octal (`\101`: `first` is its first digit) or hex (`\x41`: `first` is
/// `x`) backslash escape, whose remaining digits start at `at`, and the index after them.
/// None for `\x` without a digit. Used by E'...' strings and COPY's text format alike.
pub(super) fn numeric_escape(bytes: &[u8], first: u8, mut at: usize) -> Option<(u32, usize)> {
    let (radix, max_digits, mut n) = match first {
        b'x' => (16, 2, 0),
        digit => (8, 2, u32::from(digit - b'0')),
    };
    let mut digits = 0;
    while digits < max_digits {
        match bytes.get(at).and_then(|d| (*d as char).to_digit(radix)) {
            Some(d) => {
                n = n * radix + d;
                at += 1;
                digits += 1;
            }
            None => break,
        }
    }
    (first != b'x' || digits > 0).then_some((n, at))
}

/// `value` as a standard SQL string literal.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sql: &str, line: u64, column: u64) -> Literal {
        read(sql, offset(sql, line, column).unwrap()).unwrap()
    }

    #[test]
    fn literals_are_found_and_decoded() {
        let sql = "SELECT 'it''s', E'a\\nb\\x41\\101', $x$ raw ' $x$,\n  12.5e+3, N'n'";
        let l = at(sql, 1, 8);
        assert_eq!(
            (l.value.as_slice(), &sql[l.start..l.end]),
            (&b"it's"[..], "'it''s'")
        );
        assert_eq!(at(sql, 1, 17).value, b"a\nbAA");
        assert_eq!(at(sql, 1, 34).value, b" raw ' ");
        assert_eq!(at(sql, 2, 3).value, b"12.5e+3");
        assert_eq!(at(sql, 2, 12).value, b"n");
    }

    #[test]
    fn columns_count_characters() {
        let sql = "SELECT 'é', 'x'";
        assert_eq!(at(sql, 1, 13).value, b"x");
    }

    #[test]
    fn unsure_forms_are_refused() {
        for sql in ["U&'d\\0061t'", "B'101'", "'unterminated", "E'\\u0041'"] {
            assert!(read(sql, 0).is_err(), "{sql}");
        }
    }
}
