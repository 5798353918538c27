//! Session parameters in transaction mode. Each client has the settings it asked for (startup
//! parameters, and whatever its own SET/RESET left behind); each server connection knows which
//! settings were changed on it. On checkout the difference is applied in one round trip, so a
//! client's settings hold on every connection it gets and never leak to another client.

use std::collections::BTreeMap;

use crate::pool::server::{quote_ident, quote_literal};
use crate::protocol::ProxyError;

use super::sqlscan::{self, PinReason};
use super::Session;

/// Custom setting names kept per client: enough for any application, bounded for one that
/// generates them.
const MAX_CUSTOM_SETTINGS: usize = 256;

impl Session {
    /// Notes the custom settings `sql` may set, to be read back by name after its
    /// transaction. One set_config() whose name pgward cannot read keeps the client on its
    /// server connection for good (see `pin`): carrying it is impossible, leaving it to the
    /// next client is not allowed.
    pub(super) fn note_custom_settings(&mut self, sql: &[u8]) -> Result<(), ProxyError> {
        let found = sqlscan::custom_settings(sql);
        if found.unnamed {
            self.pin_or_refuse(PinReason::UnnamedSetting)?;
        }
        if found.names.is_empty() {
            return Ok(());
        }
        let known = self.custom_settings.get_or_insert_with(Default::default);
        for name in found.names {
            if known.len() >= MAX_CUSTOM_SETTINGS && !known.contains(&name) {
                tracing::warn!(client = self.client.info.id, "more than {MAX_CUSTOM_SETTINGS} custom settings: keeping the client on its server connection");
                return self.pin_or_refuse(PinReason::UnnamedSetting);
            }
            known.insert(name);
        }
        Ok(())
    }
}

pub type Settings = BTreeMap<String, String>;

/// Reads back every setting changed in the session (after a client's SET/RESET/DISCARD).
/// `pg_settings` hides two kinds, which are read on their own: `role` (a client's SET ROLE left
/// on the connection would give the next client its privileges) and custom settings such as
/// `app.tenant_id` (row-level security keyed on one would show the next client another
/// tenant's rows), asked for by `custom` name. A custom setting that was reset reads as ''.
pub fn session_settings_sql(custom: &std::collections::BTreeSet<String>) -> String {
    let mut sql = String::from(
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
         UNION ALL SELECT 'role', pg_catalog.current_setting('role') \
         WHERE pg_catalog.current_setting('role') <> 'none'",
    );
    if !custom.is_empty() {
        let names: Vec<String> = custom.iter().map(|n| quote_literal(n)).collect();
        sql.push_str(&format!(
            " UNION ALL SELECT n, pg_catalog.current_setting(n, true) \
             FROM pg_catalog.unnest(ARRAY[{}]::text[]) AS n \
             WHERE pg_catalog.current_setting(n, true) IS NOT NULL",
            names.join(", ")
        ));
    }
    sql.push_str(" ORDER BY 1");
    sql
}

/// The setting SET ROLE changes. It is applied after the others (which the login's own
/// privileges may be needed for) and reset before them.
pub const ROLE: &str = "role";

/// The statements prepared on this connection: name, and whether SQL PREPARE made it.
pub const PREPARED_SQL: &str = "SELECT name, from_sql FROM pg_catalog.pg_prepared_statements";

/// SQL that turns a server session with `current` settings into one with `wanted`, or None
/// when they already match (the common case: no extra round trip).
pub fn apply_sql(wanted: &Settings, current: &Settings) -> Option<String> {
    if wanted == current {
        return None;
    }
    let mut sets = Vec::new();
    let role_last = wanted
        .iter()
        .filter(|(name, _)| *name != ROLE)
        .chain(wanted.get_key_value(ROLE));
    for (name, value) in role_last {
        if current.get(name) != Some(value) {
            sets.push(format!(
                "pg_catalog.set_config({}, {}, false)",
                quote_literal(name),
                quote_literal(value)
            ));
        }
    }
    let mut sql = String::new();
    let role_first = current
        .get_key_value(ROLE)
        .into_iter()
        .chain(current.iter().filter(|(name, _)| *name != ROLE));
    for (name, _) in role_first.filter(|(n, _)| !wanted.contains_key(*n)) {
        sql.push_str(&format!("RESET {};", quote_ident(name)));
    }
    if !sets.is_empty() {
        sql.push_str("SELECT ");
        sql.push_str(&sets.join(", "));
    }
    Some(sql)
}

/// SQL restoring the client's startup values that a RESET or DISCARD took back to the server's
/// defaults: those of `startup` missing from the `session` settings read back (a setting the
/// client SET since is there, and stays). None when nothing is missing.
pub fn restore_sql(startup: &Settings, session: &Settings) -> Option<String> {
    let sets: Vec<String> = startup
        .iter()
        .filter(|(name, _)| !session.keys().any(|k| k.eq_ignore_ascii_case(name)))
        .map(|(name, value)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                quote_literal(name),
                quote_literal(value)
            )
        })
        .collect();
    (!sets.is_empty()).then(|| format!("SELECT {}", sets.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_only_the_difference() {
        let s = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Settings>()
        };
        assert_eq!(apply_sql(&s(&[("a", "1")]), &s(&[("a", "1")])), None);
        assert_eq!(
            apply_sql(&s(&[("a", "2"), ("c", "it's")]), &s(&[("a", "1"), ("b", "x")])).unwrap(),
            "RESET \"b\";SELECT pg_catalog.set_config(E'a', E'2', false), pg_catalog.set_config(E'c', E'it''s', false)"
        );
        // The role is reset before the others and set after them: they may need the login's
        // privileges.
        assert_eq!(
            apply_sql(&s(&[("role", "r"), ("work_mem", "8MB")]), &s(&[])).unwrap(),
            "SELECT pg_catalog.set_config(E'work_mem', E'8MB', false), pg_catalog.set_config(E'role', E'r', false)"
        );
        assert_eq!(
            apply_sql(&s(&[]), &s(&[("lc_messages", "C"), ("role", "r")])).unwrap(),
            "RESET \"role\";RESET \"lc_messages\";"
        );
        let startup = s(&[("datestyle", "Postgres,MDY"), ("TimeZone", "UTC")]);
        assert_eq!(
            restore_sql(&startup, &s(&[("DateStyle", "ISO, DMY")])).unwrap(),
            "SELECT pg_catalog.set_config(E'TimeZone', E'UTC', false)"
        );
        assert_eq!(
            restore_sql(&startup, &s(&[("DateStyle", "x"), ("TimeZone", "y")])),
            None
        );
    }
}
