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
    keyring_with(dir, 0)
}

/// A keyring whose columns keep `decrypt_cache` bytes of recently decrypted values.
fn keyring_with(dir: &std::path::Path, decrypt_cache: u64) -> Arc<Crypto> {
    let key: [u8; 32] = rand::random();
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    std::fs::write(dir.join("k1.key"), text).expect("writing the key file");
    let column = |name: &str, mode| ColumnConfig {
        table: "public.customers".into(),
        column: name.into(),
        mode,
    };
    let cfg = EncryptionConfig {
        without_decrypt: WithoutDecrypt::Null,
        decrypt_cache,
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
    // A read of rows read before: 100k distinct values, each found among the recently
    // decrypted ones (what a repeated SELECT costs per value).
    let cached = keyring_with(dir.path(), 64 << 20);
    let mut group = c.benchmark_group("recently decrypted");
    for mode in [Mode::Randomized, Mode::Deterministic] {
        let column = cached
            .column("public", "customers", mode.as_str())
            .expect("designated");
        let envelopes: Vec<String> = (0..100_000)
            .map(|i| column.encrypt(format!("customer{i}@example.com").as_bytes()))
            .collect();
        let mut out = bytes::BytesMut::with_capacity(64);
        for e in &envelopes {
            out.clear();
            column
                .decrypt_into(e.as_bytes(), &mut out)
                .expect("decrypts");
        }
        group.throughput(Throughput::Elements(envelopes.len() as u64));
        group.bench_function(BenchmarkId::new("decrypt_into", mode.as_str()), |b| {
            b.iter(|| {
                for e in &envelopes {
                    out.clear();
                    column
                        .decrypt_into(black_box(e.as_bytes()), &mut out)
                        .expect("decrypts");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
