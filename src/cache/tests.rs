use std::collections::HashSet;

use super::*;

fn config() -> CacheConfig {
    CacheConfig {
        enabled: true,
        ..CacheConfig::default()
    }
}

fn serving(cache: &ResultCache, name: &str) -> Database {
    let db = cache.database(name);
    cache.serve_until(&db, None);
    db
}

fn key(db: &Database, sql: &str) -> Key {
    let mut b = KeyBuilder::new(db, "app");
    b.shape(b"Q").sql(sql);
    b.finish()
}

/// Leads the lookup of `key` and fills it with `response`, reading `tables`.
fn fill(cache: &ResultCache, key: &Key, tables: &[&str], response: &'static [u8]) -> bool {
    match cache.lookup_or_lead(key) {
        Lookup::Lead(guard) => {
            let ticket = guard.begin_fill(tables);
            guard.finish(ticket, Bytes::from_static(response), None)
        }
        other => panic!("expected to lead, got {other:?}"),
    }
}

fn is_hit(cache: &ResultCache, key: &Key) -> bool {
    matches!(cache.lookup_or_lead(key), Lookup::Hit(_))
}

#[test]
fn keys_from_different_parts_never_collide() {
    let cache = ResultCache::new(&config()).unwrap();
    let (db, other_db) = (cache.database("a"), cache.database("ab"));
    let build = |db: &Database, role: &str, f: &dyn Fn(&mut KeyBuilder)| {
        let mut b = KeyBuilder::new(db, role);
        f(&mut b);
        b.finish()
    };
    let keys = [
        build(&db, "app", &|b| {
            b.sql("select 1");
        }),
        build(&db, "ap", &|b| {
            b.sql("pselect 1");
        }),
        build(&other_db, "pp", &|b| {
            b.sql("select 1");
        }),
        build(&db, "app", &|b| {
            b.setting("search_path", "a,b").sql("select 1");
        }),
        build(&db, "app", &|b| {
            b.setting("search_path", "a").sql(",bselect 1");
        }),
        build(&db, "app", &|b| {
            b.setting("search_pat", "ha,b").sql("select 1");
        }),
        build(&db, "app", &|b| {
            b.setting("TimeZone", "UTC").sql("select 1");
        }),
        build(&db, "app", &|b| {
            b.sql("select $1").param(Some(b"ab")).param(Some(b"c"));
        }),
        build(&db, "app", &|b| {
            b.sql("select $1").param(Some(b"a")).param(Some(b"bc"));
        }),
        build(&db, "app", &|b| {
            b.sql("select $1").param(Some(b"")).param(Some(b"abc"));
        }),
        build(&db, "app", &|b| {
            b.sql("select $1").param(None).param(Some(b"abc"));
        }),
        build(&db, "app", &|b| {
            b.sql("select $1").param(Some(b"abc"));
        }),
        build(&db, "app", &|b| {
            b.sql("select $1")
                .param(Some(b"abc"))
                .param_formats(&1i16.to_be_bytes());
        }),
        build(&db, "app", &|b| {
            b.sql("select $1")
                .param(Some(b"abc"))
                .result_formats(&1i16.to_be_bytes());
        }),
        build(&db, "app", &|b| {
            b.shape(b"Q").sql("select 1");
        }),
        build(&db, "app", &|b| {
            b.shape(b"PBDES").sql("select 1");
        }),
    ];
    let distinct: HashSet<&[u8]> = keys.iter().map(Key::as_bytes).collect();
    assert_eq!(distinct.len(), keys.len());
    // Hash and Eq read only the bytes, not the database handle's atomics.
    #[allow(clippy::mutable_key_type)]
    let distinct: HashSet<&Key> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len());
    let again = build(&db, "app", &|b| {
        b.sql("select $1").param(Some(b"ab")).param(Some(b"c"));
    });
    assert_eq!(again, keys[7]);
}

#[test]
fn a_filled_entry_is_served_until_a_table_it_read_is_written() {
    let cache = ResultCache::new(&config()).unwrap();
    let db = serving(&cache, "appdb");
    let k = key(&db, "select * from t join u using (id)");
    assert!(fill(&cache, &k, &["public.t", "public.u"], b"frames"));
    match cache.lookup_or_lead(&k) {
        Lookup::Hit(entry) => {
            assert_eq!(&entry.response()[..], b"frames");
            assert_eq!(entry.tables().collect::<Vec<_>>(), ["public.t", "public.u"]);
        }
        other => panic!("{other:?}"),
    }
    // Another database's table of the same name, and another table, change nothing.
    cache.invalidate_tables("otherdb", &["public.u"]);
    cache.invalidate_tables("appdb", &["public.v"]);
    assert!(is_hit(&cache, &k));
    cache.invalidate_tables("appdb", &["public.u"]);
    assert!(matches!(cache.lookup_or_lead(&k), Lookup::Lead(_)));
    // Refilled after the write: served again.
    assert!(fill(&cache, &k, &["public.t", "public.u"], b"new"));
    assert!(is_hit(&cache, &k));
}

#[test]
fn a_fill_in_flight_while_a_write_commits_is_not_stored() {
    let cache = ResultCache::new(&config()).unwrap();
    let db = serving(&cache, "appdb");
    let k = key(&db, "select * from t");
    let Lookup::Lead(guard) = cache.lookup_or_lead(&k) else {
        panic!("expected to lead");
    };
    let ticket = guard.begin_fill(&["public.t"]);
    // The query runs on the server, and meanwhile a write to t commits and is invalidated:
    // the result may predate the write.
    cache.invalidate_tables("appdb", &["public.t"]);
    assert!(!guard.finish(ticket, Bytes::from_static(b"old rows"), None));
    assert!(matches!(cache.lookup_or_lead(&k), Lookup::Lead(_)));

    // A fill that starts after the invalidation is stored.
    let ticket = cache.begin_fill(&db, &["public.t"]);
    assert!(cache.finish_fill(ticket, &k, Bytes::from_static(b"rows"), None));
    assert!(is_hit(&cache, &k));
}

#[test]
fn flushes_drop_everything_and_fills_in_flight() {
    let cache = ResultCache::new(&config()).unwrap();
    let (a, b) = (serving(&cache, "a"), serving(&cache, "b"));
    let (ka, kb) = (key(&a, "select 1"), key(&b, "select 1"));
    assert_ne!(ka, kb, "the database is part of the key");
    assert!(fill(&cache, &ka, &["public.t"], b"a"));
    assert!(fill(&cache, &kb, &["public.t"], b"b"));
    let in_flight = cache.begin_fill(&a, &["public.t"]);
    cache.flush_all();
    assert!(!cache.finish_fill(in_flight, &ka, Bytes::from_static(b"a"), None));
    assert!(!is_hit(&cache, &ka) && !is_hit(&cache, &kb));

    assert!(fill(&cache, &ka, &["public.t"], b"a"));
    assert!(fill(&cache, &kb, &["public.x"], b"b"));
    cache.flush_table("public.t");
    assert!(!is_hit(&cache, &ka));
    assert!(is_hit(&cache, &kb));

    assert!(fill(&cache, &ka, &["public.t"], b"a"));
    cache.flush_database(&b);
    assert!(is_hit(&cache, &ka));
    assert!(!is_hit(&cache, &kb));
}

#[test]
fn no_hits_while_not_serving_and_a_flush_when_it_stops() {
    let cache = ResultCache::new(&config()).unwrap();
    let db = cache.database("appdb");
    let k = key(&db, "select 1");
    assert!(matches!(cache.lookup_or_lead(&k), Lookup::Bypass));
    let ticket = cache.begin_fill(&db, &[]);
    assert!(!cache.finish_fill(ticket, &k, Bytes::from_static(b"x"), None));

    cache.serve_until(&db, Some(Instant::now() + Duration::from_secs(60)));
    assert!(fill(&cache, &k, &[], b"x"));
    assert!(is_hit(&cache, &k));
    cache.stop_serving(&db);
    assert!(matches!(cache.lookup_or_lead(&k), Lookup::Bypass));
    cache.serve_until(&db, None);
    assert!(!is_hit(&cache, &k), "stopping flushed the entry");

    // Serving lapses on its own when the listener stops renewing it.
    assert!(fill(&cache, &k, &[], b"x"));
    cache.serve_until(&db, Some(Instant::now()));
    assert!(matches!(cache.lookup_or_lead(&k), Lookup::Bypass));
}

#[test]
fn the_byte_bound_holds_and_large_entries_are_not_kept() {
    let cache = ResultCache::new(&CacheConfig {
        max_size: 64 << 10,
        max_entry_size: 8 << 10,
        ..config()
    })
    .unwrap();
    let db = serving(&cache, "appdb");
    static RESPONSE: [u8; 4096] = [7; 4096];
    for i in 0..100 {
        let k = key(&db, &format!("select {i}"));
        let ticket = cache.begin_fill(&db, &["public.t"]);
        assert!(cache.finish_fill(ticket, &k, Bytes::from_static(&RESPONSE), None));
        assert!(cache.weighted_size() <= 64 << 10);
    }
    assert!(cache.weighted_size() > 32 << 10, "the cache is used");

    static LARGE: [u8; 9000] = [7; 9000];
    let k = key(&db, "select large");
    let ticket = cache.begin_fill(&db, &["public.t"]);
    assert!(!cache.finish_fill(ticket, &k, Bytes::from_static(&LARGE), None));
    assert!(!is_hit(&cache, &k));
}

#[test]
fn the_presence_filter_follows_evictions_and_replacements() {
    // Room for a few dozen entries; two thousand go through.
    let cache = ResultCache::new(&CacheConfig {
        max_size: 64 << 10,
        ..config()
    })
    .unwrap();
    let db = serving(&cache, "appdb");
    static RESPONSE: [u8; 1024] = [7; 1024];
    let keys: Vec<Key> = (0..2000)
        .map(|i| key(&db, &format!("select {i}")))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        for _ in 0..1 + usize::from(i % 7 == 0) {
            let ticket = cache.begin_fill(&db, &["public.t"]);
            assert!(cache.finish_fill(ticket, k, Bytes::from_static(&RESPONSE), None));
        }
    }
    // Runs moka's pending work, which reports the removals.
    cache.weighted_size();

    let kept = keys
        .iter()
        .filter(|k| cache.inner.entries.contains_key(*k))
        .count();
    assert!(kept > 10, "{kept} entries kept");
    for k in &keys {
        assert_eq!(is_hit(&cache, k), cache.inner.entries.contains_key(k));
    }
    // Removed keys were counted out: the filter still tells absent keys apart.
    let maybe = (0..1000)
        .map(|i| key(&db, &format!("select never {i}")))
        .filter(|k| cache.inner.presence.may_contain(k.hash()))
        .count();
    assert!(maybe < 100, "{maybe} of 1000 absent keys said maybe");
}

#[test]
fn each_entry_has_its_ttl() {
    let cache = ResultCache::new(&config()).unwrap();
    let db = serving(&cache, "appdb");
    let (short, long) = (key(&db, "select 1"), key(&db, "select 2"));
    for (k, ttl) in [
        (&short, Duration::from_millis(50)),
        (&long, Duration::from_secs(60)),
    ] {
        let ticket = cache.begin_fill(&db, &[]);
        assert!(cache.finish_fill(ticket, k, Bytes::from_static(b"x"), Some(ttl)));
    }
    assert!(is_hit(&cache, &short));
    std::thread::sleep(Duration::from_millis(120));
    assert!(!is_hit(&cache, &short), "expired by its own ttl");
    assert!(is_hit(&cache, &long), "the default ttl is a minute");

    // The hint that sets it.
    let sql = "/* pgward:cache ttl=30s */ select 1";
    assert_eq!(
        leading_hint(sql),
        Some(CacheHint::Cache {
            ttl: Some(Duration::from_secs(30))
        })
    );
}

#[tokio::test]
async fn concurrent_misses_run_one_query() {
    let cache = ResultCache::new(&config()).unwrap();
    let db = serving(&cache, "appdb");
    let k = key(&db, "select * from t");
    let Lookup::Lead(leader) = cache.lookup_or_lead(&k) else {
        panic!("the first caller leads");
    };
    let followers: Vec<_> = (0..3)
        .map(|_| match cache.lookup_or_lead(&k) {
            Lookup::Follow(f) => tokio::spawn(f.wait(Duration::from_secs(10))),
            other => panic!("expected to follow, got {other:?}"),
        })
        .collect();
    tokio::task::yield_now().await;
    let ticket = leader.begin_fill(&["public.t"]);
    assert!(leader.finish(ticket, Bytes::from_static(b"rows"), None));
    for f in followers {
        let entry = tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("woken by the leader")
            .unwrap()
            .expect("the leader's entry");
        assert_eq!(&entry.response()[..], b"rows");
    }
}

#[tokio::test]
async fn followers_go_on_their_own_when_the_leader_gives_up() {
    let cache = ResultCache::new(&config()).unwrap();
    let db = serving(&cache, "appdb");
    let k = key(&db, "select * from t");
    let Lookup::Lead(leader) = cache.lookup_or_lead(&k) else {
        panic!("the first caller leads");
    };
    let Lookup::Follow(follower) = cache.lookup_or_lead(&k) else {
        panic!("the second follows");
    };
    let waiting = tokio::spawn(follower.wait(Duration::from_secs(30)));
    tokio::task::yield_now().await;
    drop(leader); // the query failed, or the client went away
    let found = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken when the leader dropped")
        .unwrap();
    assert!(found.is_none());
    // Nobody is in flight any more: the next caller leads.
    assert!(matches!(cache.lookup_or_lead(&k), Lookup::Lead(_)));

    // A leader that never finishes holds followers only for their limit.
    let Lookup::Lead(_stuck) = cache.lookup_or_lead(&k) else {
        panic!("leads");
    };
    let Lookup::Follow(follower) = cache.lookup_or_lead(&k) else {
        panic!("follows");
    };
    assert!(follower.wait(Duration::from_millis(20)).await.is_none());
}

#[test]
fn table_filters() {
    let cache = ResultCache::new(&config()).unwrap();
    assert!(cache.table_allowed("public.orders"));
    assert!(!cache.table_allowed("pg_catalog.pg_class"));
    assert!(!cache.table_allowed("information_schema.tables"));
    assert!(!cache.table_allowed("pg_temp_3.scratch"));

    let cache = ResultCache::new(&CacheConfig {
        tables: vec!["public.*".into(), "shop.products".into()],
        exclude_tables: vec!["public.audit_*".into()],
        system_catalogs: true,
        ..config()
    })
    .unwrap();
    assert!(cache.table_allowed("public.orders"));
    assert!(cache.table_allowed("shop.products"));
    assert!(!cache.table_allowed("shop.orders"), "not in the allow-list");
    assert!(!cache.table_allowed("public.audit_log"), "excluded");
    assert!(
        !cache.table_allowed("pg_catalog.pg_class"),
        "not in the allow-list"
    );
    assert!(
        !cache.table_allowed("pg_temp_3.scratch"),
        "temp tables never"
    );

    let cache = ResultCache::new(&CacheConfig {
        system_catalogs: true,
        ..config()
    })
    .unwrap();
    assert!(cache.table_allowed("pg_catalog.pg_class"));
    assert!(ResultCache::new(&CacheConfig {
        tables: vec!["orders".into()],
        ..config()
    })
    .is_err());
}
