//! The running configuration as (key, value) rows for the admin console's SHOW CONFIG, with
//! secrets masked. Users and backends have SHOW commands of their own.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use super::Config;

/// What a secret shows as.
const MASK: &str = "********";

/// Every setting as `section.key = value`, in file order.
pub fn settings(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut put = |key: &str, value: String| out.push((key.to_owned(), value));
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let path = |p: &Option<std::path::PathBuf>| p.as_deref().map_or(String::new(), show_path);
    let word = |v: &dyn Debug| format!("{v:?}").to_lowercase();

    let s = &config.server;
    put("server.listen", s.listen.clone());
    put("server.admin_listen", s.admin_listen.clone());
    put("server.max_clients", s.max_clients.to_string());
    put("server.tls_cert", path(&s.tls_cert));
    put("server.tls_key", path(&s.tls_key));
    put("server.tls_mode", word(&s.tls_mode));
    put("server.startup_timeout", duration(s.startup_timeout));
    put("server.max_message_size", s.max_message_size.to_string());
    put("server.shutdown_timeout", duration(s.shutdown_timeout));
    put("server.worker_threads", s.worker_threads.to_string());
    put("server.log_format", word(&s.log_format));

    let a = &config.auth;
    put("auth.method", word(&a.method));
    put("auth.admin_users", a.admin_users.join(", "));

    let p = &config.pool;
    put("pool.mode", word(&p.mode));
    put("pool.size", p.size.to_string());
    put("pool.checkout_timeout", duration(p.checkout_timeout));
    put("pool.connect_timeout", duration(p.connect_timeout));
    put("pool.idle_timeout", duration(p.idle_timeout));
    put("pool.reset_query", p.reset_query.clone());
    put(
        "pool.max_prepared_statements",
        p.max_prepared_statements.to_string(),
    );
    put("pool.pinning", word(&p.pinning));

    let r = &config.routing;
    put("routing.read_write_split", r.read_write_split.to_string());
    put("routing.strategy", word(&r.strategy));
    put("routing.max_replica_lag", r.max_replica_lag.to_string());
    put("routing.read_your_writes", r.read_your_writes.to_string());
    put("routing.primary_reads", r.primary_reads.to_string());
    put("routing.no_replica", word(&r.no_replica));
    put("routing.write_functions", r.write_functions.join(", "));
    put("routing.check_interval", duration(r.check_interval));
    put("routing.check_timeout", duration(r.check_timeout));
    put("routing.ban_time", duration(r.ban_time));
    put(
        "routing.check_user",
        r.check_user.clone().unwrap_or_default(),
    );
    let masked = r.check_password.as_ref().map_or("", |_| MASK);
    put("routing.check_password", masked.to_owned());
    put("routing.check_database", r.check_database.clone());

    let pol = &config.policy;
    put("policy.enabled", pol.enabled.to_string());
    put("policy.model", show_path(&pol.model));
    put("policy.policy", show_path(&pol.policy));
    put("policy.on_unparsed", word(&pol.on_unparsed));
    put("policy.catalog_refresh", duration(pol.catalog_refresh));

    let c = &config.cache;
    let size = |n: u64| n.to_string();
    put("cache.enabled", c.enabled.to_string());
    put("cache.max_size", size(c.max_size));
    put("cache.ttl", duration(c.ttl));
    put("cache.max_entry_size", size(c.max_entry_size));
    put("cache.tables", c.tables.join(", "));
    put("cache.exclude_tables", c.exclude_tables.join(", "));
    put("cache.system_catalogs", c.system_catalogs.to_string());
    put("cache.ack_timeout", duration(c.ack_timeout));
    put("cache.channel", c.channel.clone());

    let e = &config.encryption;
    put(
        "encryption.without_decrypt",
        e.without_decrypt.as_str().into(),
    );
    put("encryption.decrypt_cache", e.decrypt_cache.to_string());
    for (i, key) in e.keys.iter().enumerate() {
        put(&format!("encryption.keys[{i}].id"), key.id.clone());
        // Only where the key is, but a key pasted in by mistake must not show.
        put(&format!("encryption.keys[{i}].material"), MASK.into());
        put(
            &format!("encryption.keys[{i}].active"),
            key.active.to_string(),
        );
    }
    for (i, column) in e.columns.iter().enumerate() {
        put(
            &format!("encryption.columns[{i}].table"),
            column.table.clone(),
        );
        put(
            &format!("encryption.columns[{i}].column"),
            column.column.clone(),
        );
        put(
            &format!("encryption.columns[{i}].mode"),
            column.mode.as_str().into(),
        );
    }
    out
}

fn show_path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let config = Config::parse(
            r#"
[routing]
check_password = "hunter2"
[encryption]
without_decrypt = "null"
[[encryption.keys]]
id = "k1"
material = "env:KEY"
active = true
[[encryption.columns]]
table = "public.customers"
column = "ssn"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let all = settings(&config);
        let get = |k: &str| {
            all.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("routing.check_password"), Some(MASK));
        assert_eq!(get("encryption.keys[0].material"), Some(MASK));
        assert_eq!(get("encryption.keys[0].id"), Some("k1"));
        assert_eq!(get("encryption.keys[0].active"), Some("true"));
        assert_eq!(get("encryption.without_decrypt"), Some("null"));
        assert_eq!(get("encryption.columns[0].table"), Some("public.customers"));
        assert_eq!(get("encryption.columns[0].mode"), Some("randomized"));
        assert_eq!(get("pool.checkout_timeout"), Some("5s"));
        assert_eq!(get("server.log_format"), Some("text"));
        assert_eq!(get("cache.ttl"), Some("1m"));
        assert_eq!(get("cache.ack_timeout"), Some("20ms"));
        assert_eq!(get("cache.channel"), Some("pgward_cache"));
        assert!(!all.iter().any(|(_, v)| v.contains("hunter2")));
    }
}
