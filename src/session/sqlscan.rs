//! A lexical scan of SQL text for the few statement kinds that change server session state
//! (SET, RESET, DISCARD, DEALLOCATE, set_config(), LISTEN). It only decides *when* pgward
//! re-reads the session state from the server afterwards, so a false positive costs one extra
//! query and nothing else; the authoritative values always come from the server.

pub use crate::sql::contains_ignore_case;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// May change run-time parameters (SET, RESET, DISCARD, set_config()).
    pub session: bool,
    /// May drop prepared statements (DEALLOCATE, DISCARD).
    pub statements: bool,
    /// Subscribes to notifications, which need a dedicated server connection.
    pub listen: bool,
    /// May take settings back to their reset values (RESET, DISCARD): the client's startup
    /// values must then be restored (PostgreSQL resets to them, pgward's server to its own).
    pub resets: bool,
    /// May open a transaction block (BEGIN, START TRANSACTION).
    pub begins: bool,
}

impl Effects {
    pub fn any(&self) -> bool {
        self.session || self.statements || self.listen
    }
}

/// `sql` is in the client's encoding: the keywords looked for are ASCII in all of them.
pub fn effects(sql: &[u8]) -> Effects {
    let mut fx = Effects {
        session: contains_ignore_case(sql, b"set_config"),
        ..Effects::default()
    };
    for word in leading_words(sql) {
        match word.to_ascii_lowercase().as_slice() {
            b"set" => fx.session = true,
            b"reset" => {
                fx.session = true;
                fx.resets = true;
            }
            b"discard" => {
                fx.session = true;
                fx.statements = true;
                fx.resets = true;
            }
            b"deallocate" => fx.statements = true,
            b"begin" | b"start" => fx.begins = true,
            b"listen" => fx.listen = true,
            _ => {}
        }
    }
    fx
}

/// The first keyword of each statement, skipping comments, string literals, quoted
/// identifiers and dollar-quoted bodies.
fn leading_words(sql: &[u8]) -> Vec<&[u8]> {
    let mut words = Vec::new();
    let mut i = 0;
    let mut at_start = true;
    while i < sql.len() {
        let c = sql[i];
        match c {
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < sql.len() {
                    if sql[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if sql[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b';' => {
                at_start = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'\'' | b'"' => {
                at_start = false;
                let escapes = c == b'\'' && i > 0 && sql[i - 1].eq_ignore_ascii_case(&b'e');
                i += 1;
                while i < sql.len() {
                    if escapes && sql[i] == b'\\' {
                        i += 2;
                    } else if sql[i] == c {
                        i += 1;
                        if sql.get(i) != Some(&c) {
                            break;
                        }
                        i += 1;
                    } else {
                        i += 1;
                    }
                }
            }
            b'$' => {
                at_start = false;
                let tag_end = sql[i + 1..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(end)
                        if sql[end] == b'$'
                            && !sql[i + 1..end].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[i..=end];
                        i = end + 1;
                        match sql[i..].windows(tag.len()).position(|w| w == tag) {
                            Some(p) => i += p + tag.len(),
                            None => i = sql.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            _ => {
                let start = i;
                while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                    i += 1;
                }
                if i == start {
                    i += 1;
                } else if at_start {
                    words.push(&sql[start..i]);
                }
                at_start = false;
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_session_changes() {
        assert!(effects(b"SET search_path TO x").session);
        assert!(effects(b"select 1; /* c */ reset all").session);
        assert!(effects(b"select set_config('a.b', '1', false)").session);
        assert!(!effects(b"UPDATE t SET a = 1").session);
        assert!(!effects(b"select 'x; set a=1'").session);
        assert!(!effects(b"select $$; set a=1$$").session);
        assert!(!effects(b"select 1 -- ; set a = 1").session);
        let d = effects(b"DISCARD ALL");
        assert!(d.session && d.statements);
        assert!(effects(b"deallocate all").statements);
        assert!(effects(b"  LISTEN chan").listen);
        assert!(effects(b"select 1; BEGIN; insert into t values (1)").begins);
        assert!(effects(b"start transaction").begins);
        assert!(!effects(b"select 'begin'").begins);
        assert!(!effects(b"select $1, e'\\'; set'").session);
    }
}
