//! Column encryption on one core: encrypt and decrypt of a designated column's value in both
//! modes, for a short value (an SSN, 11 bytes) and a longer one (an email, 40 bytes). Each
//! element is one value; the figures include building the envelope text and counting the
//! metric, as the proxy pays them.
//!
//! `cargo bench --bench crypto -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgward::config::{ColumnConfig, EncryptionConfig, KeyConfig, WithoutDecrypt};
use pgward::crypto::{Crypto, Mode};

const VALUES: [(&str, &[u8]); 2] = [
    ("ssn_11B", b"123-45-6789"),
    ("email_40B", b"margaret.hamilton.1936@example-mails.org"),
];

fn keyring(dir: &std::path::Path) -> Arc<Crypto> {
    let key: [u8; 32] = rand::random();
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    std::fs::write(dir.join("k1.key"), text).expect("writing the key file");
    let column = |name: &str, mode| ColumnConfig {
        table: "public.customers".into(),
        column: name.into(),
        mode,
    };
    // No cache of decrypted values: every decrypt here does the cryptography.
    let cfg = EncryptionConfig {
        without_decrypt: WithoutDecrypt::Null,
        decrypt_cache: 0,
        keys: vec![KeyConfig {
            id: "k1".into(),
            material: "file:k1.key".into(),
            active: true,
        }],
        columns: vec![
            column("randomized", Mode::Randomized),
            column("deterministic", Mode::Deterministic),
        ],
    };
    Crypto::from_config(&cfg, Some(dir))
        .expect("a valid keyring")
        .expect("columns are designated")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let crypto = keyring(dir.path());
    assert_eq!(VALUES[1].1.len(), 40);
    for mode in [Mode::Randomized, Mode::Deterministic] {
        let column = crypto
            .column("public", "customers", mode.as_str())
            .expect("designated");
        let mut group = c.benchmark_group(mode.as_str());
        group.throughput(Throughput::Elements(1));
        for (name, value) in VALUES {
            group.bench_with_input(BenchmarkId::new("encrypt", name), value, |b, value| {
                b.iter(|| column.encrypt(black_box(value)))
            });
            let envelope = column.encrypt(value);
            group.bench_with_input(
                BenchmarkId::new("decrypt", name),
                envelope.as_bytes(),
                |b, envelope| b.iter(|| column.decrypt(black_box(envelope)).expect("decrypts")),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
