//! Client-side TLS: with `tls_mode = "require"` only encrypted clients get in, with "prefer"
//! both kinds do; a wrong password is refused with 28P01 either way.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::{deadline, psql, run_program, simple_value, sqlstate, Finished, Pgward, ProxyConfig};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A self-signed certificate for localhost/127.0.0.1, written as PEM files.
struct TestCert {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn test_cert() -> TestCert {
    test_cert_signed(&rcgen::PKCS_ECDSA_P256_SHA256)
}

fn test_cert_signed(algorithm: &'static rcgen::SignatureAlgorithm) -> TestCert {
    let dir = tempfile::tempdir().unwrap();
    let key_pair = rcgen::KeyPair::generate_for(algorithm).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let generated = params.self_signed(&key_pair).unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    fs::write(&cert, generated.pem()).unwrap();
    fs::write(&key, key_pair.serialize_pem()).unwrap();
    TestCert {
        _dir: dir,
        cert,
        key,
    }
}

/// psql with the given sslmode (None: libpq's default, prefer) running `-c command`.
/// The root cert points nowhere so `require` means "encrypt", not "verify".
fn psql_with(pgward: &Pgward, sslmode: Option<&str>, command: &str) -> Finished {
    let mut cmd = psql(pgward);
    cmd.env(
        "PGSSLROOTCERT",
        pgward.scratch_dir().join("no-such-root.crt"),
    );
    if let Some(mode) = sslmode {
        cmd.env("PGSSLMODE", mode);
    }
    run_program(cmd.args(["-c", command]), TIMEOUT)
}

/// Whether `\conninfo` reports an SSL connection (PostgreSQL <= 17 prints a sentence, 18 a
/// table row).
fn says_ssl(conninfo: &str) -> bool {
    let text = conninfo.to_lowercase();
    text.contains("ssl connection (protocol")
        || text
            .lines()
            .any(|l| l.contains("ssl connection") && l.contains("true"))
}

#[test]
fn require_mode_accepts_only_ssl_clients() {
    let cert = test_cert();
    let pgward = ProxyConfig::transaction(2)
        .tls(&cert.cert, &cert.key, "require")
        .start();

    let info =
        psql_with(&pgward, Some("require"), r"\conninfo").expect_success("psql sslmode=require");
    assert!(
        says_ssl(&info.stdout),
        "\\conninfo does not mention SSL:\n{}",
        info.stdout
    );
    let query =
        psql_with(&pgward, Some("require"), "SELECT 40 + 2").expect_success("query over SSL");
    assert_eq!(query.stdout.trim(), "42");

    let refused = psql_with(&pgward, Some("disable"), "SELECT 1");
    assert!(
        !refused.status.success(),
        "plaintext must be refused: {refused:?}"
    );
    let message = refused.stderr.to_lowercase();
    assert!(
        message.contains("ssl"),
        "the refusal should say SSL is required: {}",
        refused.stderr
    );

    let wrong = {
        let mut cmd = psql(&pgward);
        cmd.env(
            "PGSSLROOTCERT",
            pgward.scratch_dir().join("no-such-root.crt"),
        )
        .env("PGSSLMODE", "require")
        .env("PGPASSWORD", "not-the-password");
        run_program(cmd.args(["-c", "SELECT 1"]), TIMEOUT)
    };
    assert!(
        !wrong.status.success(),
        "a wrong password must be refused: {wrong:?}"
    );
}

/// SCRAM-SHA-256-PLUS: libpq's `channel_binding=require` logs in over TLS (its binding is the
/// hash of pgward's certificate, by the certificate's signature hash: SHA-256 and SHA-384
/// here), a wrong password is still refused, and a plaintext connection cannot bind.
#[test]
fn channel_binding_is_offered_over_tls() {
    for algorithm in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let cert = test_cert_signed(algorithm);
        let pgward = ProxyConfig::transaction(2)
            .tls(&cert.cert, &cert.key, "prefer")
            .start();
        let run = |sslmode: &str, binding: &str, password: Option<&str>| {
            let mut cmd = psql(&pgward);
            cmd.env(
                "PGSSLROOTCERT",
                pgward.scratch_dir().join("no-such-root.crt"),
            )
            .env("PGSSLMODE", sslmode)
            .env("PGCHANNELBINDING", binding);
            if let Some(password) = password {
                cmd.env("PGPASSWORD", password);
            }
            run_program(cmd.args(["-c", "SELECT 'in'"]), TIMEOUT)
        };
        let ok = run("require", "require", None).expect_success("psql channel_binding=require");
        assert_eq!(ok.stdout.trim(), "in");
        let wrong = run("require", "require", Some("not-the-password"));
        assert!(
            !wrong.status.success(),
            "a wrong password must be refused: {wrong:?}"
        );
        assert!(
            wrong.stderr.contains("password authentication failed"),
            "{}",
            wrong.stderr
        );
        let plain = run("disable", "require", None);
        assert!(!plain.status.success(), "no binding without TLS: {plain:?}");
        // A client that does not ask for binding still logs in over TLS and without it.
        for sslmode in ["require", "disable"] {
            run(sslmode, "disable", None)
                .expect_success(&format!("psql channel_binding=disable sslmode={sslmode}"));
        }
    }
}

#[test]
fn prefer_mode_accepts_ssl_and_plaintext_clients() {
    let cert = test_cert();
    let pgward = ProxyConfig::transaction(2)
        .tls(&cert.cert, &cert.key, "prefer")
        .start();

    let encrypted = psql_with(&pgward, None, r"\conninfo").expect_success("psql, default sslmode");
    assert!(
        says_ssl(&encrypted.stdout),
        "libpq prefers SSL when offered:\n{}",
        encrypted.stdout
    );

    let plain =
        psql_with(&pgward, Some("disable"), r"\conninfo").expect_success("psql sslmode=disable");
    assert!(
        !says_ssl(&plain.stdout),
        "sslmode=disable must not use SSL:\n{}",
        plain.stdout
    );
    let query =
        psql_with(&pgward, Some("disable"), "SELECT 'plain'").expect_success("plaintext query");
    assert_eq!(query.stdout.trim(), "plain");
}

#[tokio::test]
async fn wrong_password_gets_28p01_and_right_one_works() {
    let cert = test_cert();
    let pgward = ProxyConfig::transaction(2)
        .tls(&cert.cert, &cert.key, "prefer")
        .start();
    deadline(Duration::from_secs(60), async {
        let err = pgward
            .try_connect_as(common::USER, "not-the-password")
            .await
            .expect_err("a wrong password must be refused");
        assert_eq!(sqlstate(&err), Some("28P01"), "{err}");

        let err = pgward
            .try_connect_as("no_such_user", common::PASSWORD)
            .await
            .expect_err("an unknown user must be refused");
        // PostgreSQL answers as for a wrong password (28P01); 28000 is also a fair answer.
        assert!(matches!(sqlstate(&err), Some("28P01" | "28000")), "{err}");

        let client = pgward.connect().await;
        assert_eq!(
            simple_value(&client, "SELECT current_user").await,
            common::USER
        );
    })
    .await;
}
