//! Auth passthrough against real PostgreSQL: roles without a `[[users]]` entry log in with
//! their own PostgreSQL password, checked against the verifier pgward reads with auth_query,
//! and pgward logs in to PostgreSQL as them with what the client proved.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use pgward::cluster::{Cluster, ClusterOptions};

const LIMIT: Duration = Duration::from_secs(60);

/// The role auth_query runs as. It is no superuser: it may only call `pgward.get_auth`, a
/// SECURITY DEFINER function owned by `postgres` that reads pg_shadow (what PgBouncer
/// recommends; the same function as in README.md).
const AUTH_USER: &str = "pgward_auth";
const AUTH_PASSWORD: &str = "auth-secret";
const AUTH_QUERY: &str = "SELECT usename, passwd FROM pgward.get_auth($1)";

const NOT_FOUND_OR_WRONG: &str = "28P01";

/// The auth role and its lookup function, made once per test binary as superuser.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        admin_psql(
            "postgres",
            &format!("CREATE ROLE {AUTH_USER} LOGIN PASSWORD '{AUTH_PASSWORD}';"),
        );
        admin_psql(
            DATABASE,
            &format!(
                "CREATE SCHEMA pgward AUTHORIZATION postgres;
                 CREATE FUNCTION pgward.get_auth(p_usename text)
                   RETURNS TABLE (usename name, passwd text)
                   LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
                   AS $$ SELECT usename, CASE WHEN valuntil < now() THEN NULL ELSE passwd END
                         FROM pg_catalog.pg_shadow WHERE usename = p_usename $$;
                 REVOKE ALL ON FUNCTION pgward.get_auth(text) FROM PUBLIC;
                 GRANT USAGE ON SCHEMA pgward TO {AUTH_USER};
                 GRANT EXECUTE ON FUNCTION pgward.get_auth(text) TO {AUTH_USER};"
            ),
        );
    });
}

/// A login role made directly in PostgreSQL (SCRAM unless `encryption` says otherwise).
fn create_role(name: &str, password: &str, encryption: &str) {
    admin_psql(
        "postgres",
        &format!(
            "SET password_encryption = '{encryption}';
             CREATE ROLE {name} LOGIN PASSWORD '{password}';"
        ),
    );
}

/// The `[auth]` keys of a passthrough config through the SECURITY DEFINER function.
fn auth_keys() -> String {
    format!(
        "passthrough = true\nauth_user = \"{AUTH_USER}\"\nauth_password = \"{AUTH_PASSWORD}\"\n\
         auth_query = \"{AUTH_QUERY}\"\n"
    )
}

/// `config` with `keys` added to its `[auth]` table.
fn with_auth(config: &ProxyConfig, keys: &str) -> String {
    let toml = config.toml();
    let at = toml
        .find("\n[auth]\n")
        .expect("the config has an [auth] table")
        + "\n[auth]\n".len();
    format!("{}{keys}{}", &toml[..at], &toml[at..])
}

fn start(config: &ProxyConfig) -> Pgward {
    setup();
    Pgward::start(&with_auth(config, &auth_keys()))
}

async fn login_error(pgward: &Pgward, user: &str, password: &str) -> tokio_postgres::Error {
    match pgward.try_connect_as(user, password).await {
        Ok(_) => panic!("{user} logged in with {password:?}; it should not"),
        Err(e) => e,
    }
}

/// The message of a refused login with the user name taken out.
fn anonymous_message(err: &tokio_postgres::Error, user: &str) -> String {
    err.as_db_error()
        .map(|db| db.message().replace(user, "<user>"))
        .unwrap_or_else(|| format!("client error: {err}"))
}

fn assert_no_secrets(pgward: &Pgward, passwords: &[&str]) {
    let log = pgward.log();
    for secret in passwords
        .iter()
        .copied()
        .chain(["SCRAM-SHA-256$", AUTH_PASSWORD])
    {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_created_after_start_logs_in_with_its_own_password() {
    let pgward = start(&ProxyConfig::transaction(4));
    create_role("pt_late", "late-secret", "scram-sha-256");
    deadline(LIMIT, async {
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(pgward.connect_as("pt_late", "late-secret").await);
        }
        // Three transactions open at once hold three server connections, each one logged
        // in to PostgreSQL with the keys recovered from a client's proof.
        let mut pids = HashSet::new();
        for client in &clients {
            client.batch_execute("BEGIN").await.unwrap();
            assert_eq!(simple_value(client, "SELECT current_user").await, "pt_late");
            pids.insert(simple_value(client, "SELECT pg_backend_pid()").await);
        }
        assert_eq!(
            pids.len(),
            3,
            "each open transaction has a server of its own"
        );
        for client in &clients {
            client.batch_execute("COMMIT").await.unwrap();
        }
        // Many more transactions, simple and extended, on whichever connection is free.
        clients[0]
            .batch_execute("CREATE TABLE public.pt_late_t (n int)")
            .await
            .unwrap();
        for i in 0..30i32 {
            let client = &clients[i as usize % clients.len()];
            let row = client
                .query_one("SELECT $1::int4 + 1, session_user::text", &[&i])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), i + 1);
            assert_eq!(row.get::<_, String>(1), "pt_late");
            client
                .execute("INSERT INTO public.pt_late_t VALUES ($1)", &[&i])
                .await
                .unwrap();
        }
        assert_eq!(
            simple_value(&clients[1], "SELECT count(*) FROM public.pt_late_t").await,
            "30"
        );
    })
    .await;
    assert_no_secrets(&pgward, &["late-secret"]);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_roles_get_28p01_alike() {
    let pgward = start(&ProxyConfig::transaction(2));
    create_role("pt_wrong", "right-pw", "scram-sha-256");
    admin_psql(
        "postgres",
        "CREATE ROLE pt_nopw LOGIN;
         CREATE ROLE pt_nologin NOLOGIN PASSWORD 'nologin-pw';
         CREATE ROLE pt_expired LOGIN PASSWORD 'expired-pw' VALID UNTIL '2000-01-01';",
    );
    deadline(LIMIT, async {
        let wrong = login_error(&pgward, "pt_wrong", "wrong-pw").await;
        assert_eq!(sqlstate(&wrong), Some(NOT_FOUND_OR_WRONG), "{wrong}");
        let expected = anonymous_message(&wrong, "pt_wrong");
        for (user, password) in [
            ("pt_no_such_role", "whatever"),
            ("pt_nopw", ""),
            ("pt_nopw", "x"),
            ("pt_nologin", "nologin-pw"),
            ("pt_expired", "expired-pw"),
        ] {
            let err = login_error(&pgward, user, password).await;
            assert_eq!(sqlstate(&err), Some(NOT_FOUND_OR_WRONG), "{user}: {err}");
            assert_eq!(anonymous_message(&err, user), expected, "{user}");
        }
        // Failures are not sticky: the right password still works (the answer is cached).
        let client = pgward.connect_as("pt_wrong", "right-pw").await;
        assert_eq!(
            simple_value(&client, "SELECT current_user").await,
            "pt_wrong"
        );
    })
    .await;
    assert_no_secrets(
        &pgward,
        &["right-pw", "wrong-pw", "nologin-pw", "expired-pw"],
    );
}

#[tokio::test]
async fn psql_reconnects_as_another_role() {
    let pgward = start(&ProxyConfig::session(2));
    create_role("pt_psql_a", "psql-a-pw", "scram-sha-256");
    create_role("pt_psql_b", "psql-b-pw", "scram-sha-256");
    let passfile = pgward.scratch_dir().join("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "127.0.0.1:{port}:{DATABASE}:pt_psql_a:psql-a-pw\n\
             127.0.0.1:{port}:{DATABASE}:pt_psql_b:psql-b-pw\n",
            port = pgward.port
        ),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut psql = psql(&pgward);
    psql.env("PGUSER", "pt_psql_a")
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", &passfile)
        .args([
            "-c",
            "SELECT current_user",
            "-c",
            "\\c - pt_psql_b",
            "-c",
            "SELECT current_user",
        ]);
    let out = run_program(&mut psql, LIMIT).expect_success("psql with \\c");
    let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.first(), Some(&"pt_psql_a"), "{}", out.stdout);
    assert_eq!(lines.last(), Some(&"pt_psql_b"), "{}", out.stdout);
}

#[tokio::test]
async fn a_users_entry_takes_precedence() {
    create_role("pt_dup", "db-pw", "scram-sha-256");
    let config = ProxyConfig::transaction(2)
        .user(ProxyUser::new("pt_dup", "cfg-pw").backend(USER, Some(PASSWORD)));
    let pgward = start(&config);
    deadline(LIMIT, async {
        let client = pgward.connect_as("pt_dup", "cfg-pw").await;
        assert_eq!(simple_value(&client, "SELECT current_user").await, USER);
        let err = login_error(&pgward, "pt_dup", "db-pw").await;
        assert_eq!(sqlstate(&err), Some(NOT_FOUND_OR_WRONG), "{err}");
        // Other roles still pass through alongside.
        create_role("pt_beside", "beside-pw", "scram-sha-256");
        let beside = pgward.connect_as("pt_beside", "beside-pw").await;
        assert_eq!(
            simple_value(&beside, "SELECT current_user").await,
            "pt_beside"
        );
    })
    .await;
}

#[tokio::test]
async fn an_md5_role_logs_in_under_auth_method_md5() {
    // PostgreSQL checks an md5 password only where pg_hba says md5.
    let hba_file = admin_psql("postgres", "SHOW hba_file").trim().to_owned();
    let hba = std::fs::read_to_string(&hba_file).unwrap();
    std::fs::write(
        &hba_file,
        format!("host all pt_md5 127.0.0.1/32 md5\nhost all pt_md5_scram 127.0.0.1/32 md5\n{hba}"),
    )
    .unwrap();
    admin_psql("postgres", "SELECT pg_reload_conf()");
    create_role("pt_md5", "md5-role-pw", "md5");
    create_role("pt_md5_scram", "scram-role-pw", "scram-sha-256");
    wait_for_direct_login("pt_md5", "md5-role-pw").await;

    let pgward = start(&ProxyConfig::transaction(2).auth("md5"));
    deadline(LIMIT, async {
        let client = pgward.connect_as("pt_md5", "md5-role-pw").await;
        assert_eq!(simple_value(&client, "SELECT current_user").await, "pt_md5");
        let row = client
            .query_one("SELECT $1::int4 * 2", &[&21i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
        let err = login_error(&pgward, "pt_md5", "wrong").await;
        assert_eq!(sqlstate(&err), Some(NOT_FOUND_OR_WRONG), "{err}");
        // An md5 response cannot be checked against a SCRAM verifier.
        let err = login_error(&pgward, "pt_md5_scram", "scram-role-pw").await;
        assert_eq!(sqlstate(&err), Some(NOT_FOUND_OR_WRONG), "{err}");
    })
    .await;
    assert_no_secrets(&pgward, &["md5-role-pw"]);
}

/// Waits until PostgreSQL has read the new pg_hba.conf and lets `user` in.
async fn wait_for_direct_login(user: &str, password: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(primary_port())
        .user(user)
        .password(password)
        .dbname(DATABASE);
    loop {
        match connect_with(&config).await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("{user} cannot log in directly: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn an_unusable_auth_user_gives_08006_without_detail() {
    setup();
    let keys = auth_keys().replace(AUTH_PASSWORD, "not-the-auth-password");
    let pgward = Pgward::start(&with_auth(&ProxyConfig::transaction(2), &keys));
    create_role("pt_orphan", "orphan-pw", "scram-sha-256");
    deadline(LIMIT, async {
        let err = login_error(&pgward, "pt_orphan", "orphan-pw").await;
        assert_eq!(sqlstate(&err), Some("08006"), "{err}");
        assert_eq!(
            err.as_db_error().unwrap().message(),
            "pgward: could not connect to the database server"
        );
        // [[users]] do not depend on auth_user.
        let app = pgward.connect().await;
        assert_eq!(simple_value(&app, "SELECT 1").await, "1");
    })
    .await;
    let log = pgward.log();
    assert!(
        log.contains("cannot read a password verifier") && log.contains(AUTH_USER),
        "the log says why:\n{log}"
    );
    assert_no_secrets(&pgward, &["orphan-pw", "not-the-auth-password"]);
}

#[tokio::test]
async fn the_default_auth_query_with_a_superuser_auth_user() {
    admin_psql(
        "postgres",
        "CREATE ROLE pt_super LOGIN SUPERUSER PASSWORD 'super-pw';",
    );
    // No auth_password: it is the backend password of the [[users]] entry named auth_user.
    let config = ProxyConfig::transaction(2).user(ProxyUser::new("pt_super", "super-pw"));
    let pgward = Pgward::start(&with_auth(
        &config,
        "passthrough = true\nauth_user = \"pt_super\"\n",
    ));
    create_role("pt_via_shadow", "shadow-pw", "scram-sha-256");
    deadline(LIMIT, async {
        let client = pgward.connect_as("pt_via_shadow", "shadow-pw").await;
        assert_eq!(
            simple_value(&client, "SELECT current_user").await,
            "pt_via_shadow"
        );
    })
    .await;
}

#[tokio::test]
async fn passthrough_and_password_changes_follow_a_reload() {
    setup();
    let config = ProxyConfig::transaction(2);
    let pgward = Pgward::start(&config.toml());
    create_role("pt_reload", "first-pw", "scram-sha-256");
    deadline(LIMIT, async {
        let err = login_error(&pgward, "pt_reload", "first-pw").await;
        assert_eq!(sqlstate(&err), Some(NOT_FOUND_OR_WRONG), "off: {err}");

        pgward.reload(&with_auth(&config, &auth_keys()));
        let first = pgward.connect_as("pt_reload", "first-pw").await;
        assert_eq!(
            simple_value(&first, "SELECT current_user").await,
            "pt_reload"
        );

        // A reload starts with no cached verifiers, so a new password works at once.
        admin_psql("postgres", "ALTER ROLE pt_reload PASSWORD 'second-pw'");
        pgward.reload(&with_auth(&config, &auth_keys()));
        let second = pgward.connect_as("pt_reload", "second-pw").await;
        assert_eq!(
            simple_value(&second, "SELECT current_user").await,
            "pt_reload"
        );
        let err = login_error(&pgward, "pt_reload", "first-pw").await;
        assert_eq!(
            sqlstate(&err),
            Some(NOT_FOUND_OR_WRONG),
            "old password: {err}"
        );
        // The client that logged in before the change keeps working.
        assert_eq!(simple_value(&first, "SELECT 1").await, "1");
    })
    .await;
}

#[tokio::test]
async fn the_policy_applies_to_passthrough_roles_by_name() {
    create_role("pt_policy", "policy-pw", "scram-sha-256");
    admin_psql(
        DATABASE,
        "CREATE TABLE public.pt_items (id int, secret text);
         INSERT INTO public.pt_items VALUES (1, 'hidden');
         GRANT SELECT, INSERT ON public.pt_items TO pt_policy;",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let q = |p: &Path| toml::Value::String(p.to_string_lossy().into()).to_string();
    let model = file("model.conf", include_str!("../policies/model.conf"));
    let policy = file(
        "policy.csv",
        "p, pt_policy, appdb, public.*, *, select, allow\n\
         p, pt_policy, appdb, pg_catalog.*, *, select, allow\n\
         p, pt_policy, *, public.pt_items, secret, *, deny\n",
    );
    let config = ProxyConfig::transaction(2).extra(&format!(
        "\n[policy]\nenabled = true\nmodel = {}\npolicy = {}\n",
        q(&model),
        q(&policy)
    ));
    let pgward = start(&config);
    deadline(LIMIT, async {
        let client = pgward.connect_as("pt_policy", "policy-pw").await;
        assert_eq!(simple_value(&client, "SELECT id FROM pt_items").await, "1");
        for sql in [
            "SELECT secret FROM pt_items",
            "INSERT INTO pt_items (id) VALUES (2)",
        ] {
            let err = client.simple_query(sql).await.expect_err(sql);
            assert_eq!(sqlstate(&err), Some("42501"), "{sql}: {err}");
        }
    })
    .await;
}

/// A PostgreSQL of its own with `ssl = on`, since a server on a TLS connection offers
/// SCRAM-SHA-256-PLUS and refuses a client that claims channel binding support yet picks
/// plain SCRAM-SHA-256: both the password login and the key login must decline it properly.
#[tokio::test]
async fn scram_logins_over_a_tls_backend() {
    let dir = tempfile::tempdir().unwrap();
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    give_to_postgres(&[&cert, &key]);
    let cluster = Cluster::start(&ClusterOptions {
        replicas: 0,
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), cert.to_string_lossy().into()),
            ("ssl_key_file".into(), key.to_string_lossy().into()),
        ],
    })
    .unwrap_or_else(|e| panic!("cannot start PostgreSQL with ssl = on: {e}"));
    let port = cluster.primary.port;
    cluster
        .psql(
            port,
            "postgres",
            "CREATE ROLE pt_tls LOGIN PASSWORD 'tls-pw';",
        )
        .unwrap();
    // `postgres` logs in by trust, so it reads pg_shadow itself with the default auth_query.
    let config = ProxyConfig::transaction(2).backends(format!(
        "\n[[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"primary\"\ntls = \"require\"\n"
    ));
    let pgward = Pgward::start(&with_auth(
        &config,
        "passthrough = true\nauth_user = \"postgres\"\n",
    ));
    let on_tls = "SELECT current_user || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    deadline(LIMIT, async {
        let app = pgward.connect().await;
        assert_eq!(simple_value(&app, on_tls).await, "app true");
        let role = pgward.connect_as("pt_tls", "tls-pw").await;
        assert_eq!(simple_value(&role, on_tls).await, "pt_tls true");
    })
    .await;
    drop(cluster);
}

/// PostgreSQL runs as `postgres` when the tests run as root; it must own its key file.
fn give_to_postgres(paths: &[&Path]) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        assert!(
            !pw.is_null(),
            "running as root, but there is no postgres user"
        );
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    for path in paths {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}
