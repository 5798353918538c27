use base64::Engine;

use super::*;
use crate::config::{ColumnConfig, KeyConfig};

/// A master key that is easy to spot in any output: 32 times 0xA5.
const K1: [u8; 32] = [0xA5; 32];
const K2: [u8; 32] = [0x3C; 32];

/// Key files in a temporary folder, and configs naming them.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let keys = Keys {
            dir: tempfile::tempdir().unwrap(),
        };
        keys.write("k1", &K1);
        keys.write("k2", &K2);
        keys
    }

    fn write(&self, id: &str, key: &[u8]) {
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        std::fs::write(self.dir.path().join(format!("{id}.key")), text + "\n").unwrap();
    }

    fn key(id: &str, active: bool) -> KeyConfig {
        KeyConfig {
            id: id.into(),
            material: format!("file:{id}.key"),
            active,
        }
    }

    fn build(&self, keys: Vec<KeyConfig>) -> Arc<Crypto> {
        self.try_build(keys, columns()).unwrap().unwrap()
    }

    fn try_build(
        &self,
        keys: Vec<KeyConfig>,
        columns: Vec<ColumnConfig>,
    ) -> Result<Option<Arc<Crypto>>, CryptoError> {
        let cfg = EncryptionConfig {
            without_decrypt: WithoutDecrypt::Ciphertext,
            keys,
            columns,
            ..EncryptionConfig::default()
        };
        Crypto::from_config(&cfg, Some(self.dir.path()))
    }
}

fn column(table: &str, column: &str, mode: Mode) -> ColumnConfig {
    ColumnConfig {
        table: table.into(),
        column: column.into(),
        mode,
    }
}

fn columns() -> Vec<ColumnConfig> {
    vec![
        column("public.customers", "ssn", Mode::Deterministic),
        column("public.customers", "email", Mode::Randomized),
        column("Public.Customers", "\"Phone\"", Mode::Deterministic),
        column("billing.cards", "ssn", Mode::Deterministic),
    ]
}

fn one_key() -> Arc<Crypto> {
    Keys::new().build(vec![Keys::key("k1", true)])
}

#[test]
fn lookups_use_folded_names() {
    let crypto = one_key();
    assert_eq!(crypto.active_key_id(), "k1");
    assert_eq!(crypto.without_decrypt(), WithoutDecrypt::Ciphertext);
    let ssn = crypto.column("public", "customers", "ssn").unwrap();
    assert_eq!(
        (ssn.schema(), ssn.table(), ssn.column()),
        ("public", "customers", "ssn")
    );
    assert_eq!(ssn.name(), "public.customers.ssn");
    assert_eq!(ssn.mode(), Mode::Deterministic);
    assert!(crypto.column("public", "customers", "Phone").is_some());
    assert!(crypto.column("public", "customers", "phone").is_none());
    assert!(crypto.column("public", "customers", "name").is_none());
    assert!(crypto.column("public", "orders", "ssn").is_none());
    assert!(crypto.table_has_columns("billing", "cards"));
    assert!(!crypto.table_has_columns("billing", "customers"));
    let id = crypto.id_of("public", "customers", "ssn").unwrap();
    assert_eq!(crypto.by_id(id).name(), "public.customers.ssn");
    assert_eq!(crypto.id_of("public", "customers", "name"), None);
    let tables: Vec<_> = crypto.tables().collect();
    assert_eq!(tables, [("public", "customers"), ("billing", "cards")]);
    let names: Vec<_> = crypto.columns().map(ColumnCipher::name).collect();
    assert_eq!(
        names,
        [
            "public.customers.ssn",
            "public.customers.email",
            "public.customers.Phone",
            "billing.cards.ssn"
        ]
    );
}

#[test]
fn no_columns_no_keyring_and_no_key_read() {
    let keys = Keys::new();
    let missing = KeyConfig {
        id: "k9".into(),
        material: "file:nowhere.key".into(),
        active: true,
    };
    assert!(keys.try_build(vec![missing], vec![]).unwrap().is_none());
}

#[test]
fn both_modes_roundtrip() {
    let crypto = one_key();
    for (name, mode) in [("ssn", Mode::Deterministic), ("email", Mode::Randomized)] {
        let c = crypto.column("public", "customers", name).unwrap();
        assert_eq!(c.mode(), mode);
        for plaintext in [
            &b"123-45-6789"[..],
            b"",
            b"a",
            &[0xff, 0x00, 0xfe, 0x80],
            &[7; 1000],
        ] {
            let envelope = c.encrypt(plaintext);
            assert!(envelope.is_ascii());
            assert!(looks_like_envelope(envelope.as_bytes()), "{envelope}");
            let prefix = format!("pgw1:k1:{}:", mode.letter());
            assert!(envelope.starts_with(&prefix), "{envelope}");
            assert_eq!(c.decrypt(envelope.as_bytes()).unwrap(), plaintext);
            assert_eq!(
                ColumnCipher::envelope_key_id(envelope.as_bytes()),
                Some("k1")
            );
        }
    }
}

#[test]
fn randomized_differs_and_deterministic_repeats() {
    let crypto = one_key();
    let email = crypto.column("public", "customers", "email").unwrap();
    assert_ne!(email.encrypt(b"a@b.c"), email.encrypt(b"a@b.c"));
    let ssn = crypto.column("public", "customers", "ssn").unwrap();
    assert_eq!(ssn.encrypt(b"123-45-6789"), ssn.encrypt(b"123-45-6789"));
    assert_ne!(ssn.encrypt(b"123-45-6789"), ssn.encrypt(b"123-45-6780"));
    // The same value under the same key in another column is another envelope.
    let cards = crypto.column("billing", "cards", "ssn").unwrap();
    assert_ne!(ssn.encrypt(b"123-45-6789"), cards.encrypt(b"123-45-6789"));
    // And a rebuilt keyring gives the same envelopes: they are searchable across restarts.
    let again = one_key();
    let ssn_again = again.column("public", "customers", "ssn").unwrap();
    assert_eq!(ssn.encrypt(b"x"), ssn_again.encrypt(b"x"));
}

#[test]
fn an_envelope_only_opens_in_its_own_column() {
    let crypto = one_key();
    let ssn = crypto.column("public", "customers", "ssn").unwrap();
    let cards = crypto.column("billing", "cards", "ssn").unwrap();
    let phone = crypto.column("public", "customers", "Phone").unwrap();
    let envelope = ssn.encrypt(b"123-45-6789");
    assert_eq!(ssn.decrypt(envelope.as_bytes()).unwrap(), b"123-45-6789");
    for other in [cards, phone] {
        let err = other.decrypt(envelope.as_bytes()).unwrap_err();
        assert_eq!(err.failure(), &DecryptFailure::Authentication);
        assert_eq!(
            err.to_string(),
            format!(
                "cannot decrypt {}: authentication failed (tampered with, or copied from another column)",
                other.name()
            )
        );
    }
    let email = crypto.column("public", "customers", "email").unwrap();
    let envelope = email.encrypt(b"a@b.c");
    assert!(ssn.decrypt(envelope.as_bytes()).is_err());
}

#[test]
fn every_single_byte_change_fails() {
    let crypto = one_key();
    for name in ["ssn", "email"] {
        let c = crypto.column("public", "customers", name).unwrap();
        let envelope = c.encrypt(b"123-45-6789").into_bytes();
        for i in 0..envelope.len() {
            for flip in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
                let mut changed = envelope.clone();
                changed[i] ^= flip;
                let result = c.decrypt(&changed);
                assert!(
                    result.is_err(),
                    "{name}: byte {i} ^ {flip:#x} decrypted: {}",
                    String::from_utf8_lossy(&changed)
                );
            }
        }
        // Cut short or lengthened.
        for len in 0..envelope.len() {
            assert!(c.decrypt(&envelope[..len]).is_err(), "{name}: {len} bytes");
        }
        let mut longer = envelope.clone();
        longer.extend_from_slice(b"AA");
        assert!(c.decrypt(&longer).is_err());
    }
}

#[test]
fn failures_say_why_without_the_value() {
    let crypto = one_key();
    let ssn = crypto.column("public", "customers", "ssn").unwrap();
    let err = ssn.decrypt(b"123-45-6789").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decrypt public.customers.ssn: value is not a pgward ciphertext"
    );
    assert_eq!(err.column(), "public.customers.ssn");
    let err = ssn
        .decrypt(b"pgw1:k0:d:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decrypt public.customers.ssn: written under unknown key \"k0\""
    );
    let err = ssn.decrypt(b"pgw1:k1:d:AAAA").unwrap_err();
    assert_eq!(err.failure(), &DecryptFailure::Malformed);
    let err = ssn.decrypt(b"pgw1:k1:d:not*base64").unwrap_err();
    assert_eq!(err.failure(), &DecryptFailure::Malformed);
    let envelope = ssn.encrypt(b"123-45-6789");
    let mut tampered = envelope.into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'Q' } else { b'A' };
    let err = ssn.decrypt(&tampered).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("123-45"));
}

#[test]
fn old_keys_still_decrypt_and_are_searched_after_the_active_one() {
    let keys = Keys::new();
    let before = keys.build(vec![Keys::key("k1", true)]);
    let after = keys.build(vec![Keys::key("k1", false), Keys::key("k2", true)]);
    assert_eq!(after.active_key_id(), "k2");
    for name in ["ssn", "email"] {
        let old = before.column("public", "customers", name).unwrap();
        let new = after.column("public", "customers", name).unwrap();
        assert_eq!(new.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
        let under_k1 = old.encrypt(b"123-45-6789");
        let under_k2 = new.encrypt(b"123-45-6789");
        assert_eq!(
            ColumnCipher::envelope_key_id(under_k2.as_bytes()),
            Some("k2")
        );
        assert_eq!(new.decrypt(under_k1.as_bytes()).unwrap(), b"123-45-6789");
        assert_eq!(new.decrypt(under_k2.as_bytes()).unwrap(), b"123-45-6789");
        let err = old.decrypt(under_k2.as_bytes()).unwrap_err();
        assert_eq!(err.failure(), &DecryptFailure::UnknownKey("k2".into()));
    }
    let ssn = after.column("public", "customers", "ssn").unwrap();
    let old_ssn = before.column("public", "customers", "ssn").unwrap();
    assert_eq!(
        ssn.search_envelopes(b"123-45-6789"),
        [ssn.encrypt(b"123-45-6789"), old_ssn.encrypt(b"123-45-6789")]
    );
    let email = after.column("public", "customers", "email").unwrap();
    assert!(email.search_envelopes(b"a@b.c").is_empty());
}

#[test]
fn values_written_before_a_mode_change_still_decrypt() {
    let keys = Keys::new();
    let randomized = keys
        .try_build(
            vec![Keys::key("k1", true)],
            vec![column("public.customers", "ssn", Mode::Randomized)],
        )
        .unwrap()
        .unwrap();
    let envelope = randomized
        .column("public", "customers", "ssn")
        .unwrap()
        .encrypt(b"123-45-6789");
    let deterministic = keys.build(vec![Keys::key("k1", true)]);
    let ssn = deterministic.column("public", "customers", "ssn").unwrap();
    assert_eq!(ssn.mode(), Mode::Deterministic);
    assert_eq!(ssn.decrypt(envelope.as_bytes()).unwrap(), b"123-45-6789");
}

#[test]
fn debug_output_holds_no_key_bytes() {
    let keys = Keys::new();
    let crypto = keys.build(vec![Keys::key("k1", false), Keys::key("k2", true)]);
    let ssn = crypto.column("public", "customers", "ssn").unwrap();
    let shown = format!("{crypto:?} {crypto:#?} {ssn:?}");
    assert!(shown.contains("public.customers.ssn"), "{shown}");
    let b64 = base64::engine::general_purpose::STANDARD;
    for key in [K1, K2] {
        for needle in [
            format!("{:?}", &key[..4]),
            format!("{}, {}", key[0], key[1]),
            format!("{:02x}{:02x}", key[0], key[1]),
            b64.encode(key)[..8].to_owned(),
        ] {
            assert!(!shown.contains(&needle), "{needle} in {shown}");
        }
    }
    // Nothing that looks like an array of byte values at all.
    assert!(!shown.contains(", 1") && !shown.contains("0x"), "{shown}");
}

#[test]
fn many_threads_share_one_keyring() {
    let crypto = one_key();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let crypto = &crypto;
            scope.spawn(move || {
                for name in ["ssn", "email"] {
                    let c = crypto.column("public", "customers", name).unwrap();
                    for i in 0..200u8 {
                        let value = [t, i];
                        let envelope = c.encrypt(&value);
                        assert_eq!(c.decrypt(envelope.as_bytes()).unwrap(), value);
                    }
                }
            });
        }
    });
}

#[test]
fn bad_configs_name_the_key_or_column() {
    let keys = Keys::new();
    keys.write("short", &[1; 16]);
    let cols = columns;
    let err = |keys_cfg: Vec<KeyConfig>, columns: Vec<ColumnConfig>| {
        keys.try_build(keys_cfg, columns).unwrap_err().to_string()
    };
    assert!(err(vec![], cols()).contains("no [[encryption.keys]]"));
    assert!(err(vec![Keys::key("k1", false)], cols()).contains("no encryption key is active"));
    let two = err(vec![Keys::key("k1", true), Keys::key("k2", true)], cols());
    assert!(two.contains("\"k1\" and \"k2\" are both active"), "{two}");
    let dup = err(vec![Keys::key("k1", true), Keys::key("k1", false)], cols());
    assert!(dup.contains("\"k1\" is used twice"), "{dup}");
    let bad_id = err(vec![Keys::key("k:1", true)], cols());
    assert!(bad_id.contains("\"k:1\" must be"), "{bad_id}");
    let short = err(vec![Keys::key("short", true)], cols());
    assert!(
        short.starts_with("encryption key \"short\": \"")
            && short.contains("holds 16 bytes, not 32"),
        "{short}"
    );
    let missing = err(
        vec![KeyConfig {
            id: "k1".into(),
            material: "env:PGWARD_TEST_NEVER_SET_ANYWHERE".into(),
            active: true,
        }],
        cols(),
    );
    assert!(
        missing.contains("\"PGWARD_TEST_NEVER_SET_ANYWHERE\" is not set"),
        "{missing}"
    );
    let k1 = || vec![Keys::key("k1", true)];
    let table = err(k1(), vec![column("customers", "ssn", Mode::Randomized)]);
    assert!(table.contains("must be schema.table"), "{table}");
    let twice = err(
        k1(),
        vec![
            column("public.customers", "ssn", Mode::Randomized),
            column("PUBLIC.customers", "SSN", Mode::Deterministic),
        ],
    );
    assert_eq!(
        twice,
        "encrypted column public.customers.ssn is listed twice"
    );
}

#[test]
fn operations_and_failures_are_counted() {
    let crypto = one_key();
    let ssn = crypto.column("public", "customers", "ssn").unwrap();
    let count = |name: &str| -> u64 {
        let text = crate::metrics::render();
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let encrypts = count("pgward_crypto_operations_total{op=\"encrypt\"}");
    let decrypts = count("pgward_crypto_operations_total{op=\"decrypt\"}");
    let failures = count("pgward_crypto_failures_total");
    let envelope = ssn.encrypt(b"x");
    ssn.decrypt(envelope.as_bytes()).unwrap();
    ssn.decrypt(b"x").unwrap_err();
    // Other tests run alongside: the counters only grow by at least this much.
    assert!(count("pgward_crypto_operations_total{op=\"encrypt\"}") > encrypts);
    assert!(count("pgward_crypto_operations_total{op=\"decrypt\"}") >= decrypts + 2);
    assert!(count("pgward_crypto_failures_total") > failures);
}
