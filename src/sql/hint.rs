//! Leading routing-hint comments (`/* pgward:replica */ select ...`).
//!
//! sqlparser drops comments, so the hint is found by scanning the raw text: only the
//! comments before the first token count, so a hint can never come from inside a
//! string literal or from the middle of a statement.

use super::RouteHint;

/// Returns the first `/* pgward:primary */` or `/* pgward:replica */` comment that
/// comes before the first token of `sql`, skipping whitespace and other comments.
///
/// Whitespace inside the hint comment is ignored and the keyword is case-insensitive.
pub(crate) fn leading_hint(sql: &str) -> Option<RouteHint> {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(is_sql_space);
        if let Some(after) = rest.strip_prefix("--") {
            // A line comment runs to the end of the line (or of the text).
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("/*") {
            let (body, tail) = split_block_comment(after)?;
            if let Some(hint) = parse_hint(body) {
                return Some(hint);
            }
            rest = tail;
        } else {
            return None;
        }
    }
}

/// Splits the text that follows a `/*` into the comment body and the text after the
/// closing `*/`. PostgreSQL block comments nest, so nesting is honoured. Returns None
/// for an unterminated comment (there is then no token after it either).
pub(crate) fn split_block_comment(after_open: &str) -> Option<(&str, &str)> {
    let bytes = after_open.as_bytes();
    let mut depth = 1usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                if depth == 0 {
                    // `i` and `i + 2` sit next to ASCII bytes, so both are char boundaries.
                    return Some((after_open.get(..i)?, after_open.get(i + 2..)?));
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// The characters PostgreSQL's scanner treats as whitespace.
fn is_sql_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn parse_hint(body: &str) -> Option<RouteHint> {
    let compact: String = body
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match compact.as_str() {
        "pgward:primary" => Some(RouteHint::Primary),
        "pgward:replica" => Some(RouteHint::Replica),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hints() {
        assert_eq!(
            leading_hint("/* pgward:replica */ select 1"),
            Some(RouteHint::Replica)
        );
        assert_eq!(
            leading_hint("/*pgward:primary*/select 1"),
            Some(RouteHint::Primary)
        );
        assert_eq!(
            leading_hint("  \n\t/*  PgWard : Replica  */ select 1"),
            Some(RouteHint::Replica)
        );
    }

    #[test]
    fn hint_among_other_leading_comments() {
        assert_eq!(
            leading_hint("-- x\n/* pgward:replica */ select 1"),
            Some(RouteHint::Replica)
        );
        assert_eq!(
            leading_hint("/* app=web */ /* nested /* c */ */\n/* pgward:primary */ select 1"),
            Some(RouteHint::Primary)
        );
    }

    #[test]
    fn no_hint() {
        assert_eq!(leading_hint("select 1"), None);
        assert_eq!(leading_hint("select /* pgward:replica */ 1"), None);
        assert_eq!(leading_hint("select '/* pgward:replica */'"), None);
        assert_eq!(leading_hint("/* pgward:elsewhere */ select 1"), None);
        assert_eq!(leading_hint("-- /* pgward:replica */\nselect 1"), None);
        assert_eq!(leading_hint("/* pgward:replica"), None);
        assert_eq!(leading_hint(""), None);
        assert_eq!(leading_hint("/* é */ /* ü"), None);
    }
}
