//! Leading cache-hint comments: `/* pgward:nocache */` and `/* pgward:cache ttl=30s */`.
//!
//! Like the routing hints, only comments before the first token count, so a hint can never
//! come from inside a string literal or the middle of a statement.

use std::time::Duration;

use crate::sql::hint::split_block_comment;

/// What a statement's leading comments ask of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheHint {
    /// Never answer this statement from the cache, nor fill it.
    NoCache,
    /// Cache it, for `ttl` when given (else `cache.ttl`).
    Cache { ttl: Option<Duration> },
}

/// The first cache hint among the comments that come before the first token of `sql`.
/// A hint that does not parse (`ttl=soon`) is ignored, as PostgreSQL ignores the comment.
pub fn leading_hint(sql: &str) -> Option<CacheHint> {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("/*") {
            let (body, tail) = split_block_comment(after)?;
            if let Some(hint) = parse(body) {
                return Some(hint);
            }
            rest = tail;
        } else {
            return None;
        }
    }
}

fn parse(body: &str) -> Option<CacheHint> {
    let body = body.trim().to_ascii_lowercase();
    let rest = body.strip_prefix("pgward:")?.trim_start();
    let mut words = rest.split_whitespace();
    match words.next()? {
        "nocache" if words.next().is_none() => Some(CacheHint::NoCache),
        "cache" => {
            let mut ttl = None;
            for word in words {
                let value = word.strip_prefix("ttl=")?;
                ttl = Some(crate::config::parse_duration(value).ok()?);
            }
            Some(CacheHint::Cache { ttl })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_before_the_first_token() {
        assert_eq!(
            leading_hint("/* pgward:nocache */ select 1"),
            Some(CacheHint::NoCache)
        );
        assert_eq!(
            leading_hint("-- x\n/* PGWARD:cache ttl=30s */select 1"),
            Some(CacheHint::Cache {
                ttl: Some(Duration::from_secs(30))
            })
        );
        assert_eq!(
            leading_hint("/* other */ /* pgward:cache */ select 1"),
            Some(CacheHint::Cache { ttl: None })
        );
        assert_eq!(leading_hint("select /* pgward:nocache */ 1"), None);
        assert_eq!(leading_hint("/* pgward:cache ttl=soon */ select 1"), None);
        assert_eq!(leading_hint("/* pgward:cache ttl=1s"), None);
    }
}
