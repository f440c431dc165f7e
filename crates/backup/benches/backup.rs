//! Export and open of a real share backup (Argon2id 64 MiB / 3 passes, the shipped costs)
//! beside the raw Argon2id derivation with the same costs, so the ratio shows what the
//! format adds on top of the key derivation.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use argon2::{Algorithm, Argon2, Params, Version};
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../tests/common/mod.rs"]
mod common;

const PASS: &[u8] = b"a long backup passphrase";

fn bench(c: &mut Criterion) {
    let v = common::vault("bench");
    let (k, h) = &v[0];
    let file = cosigner_backup::export(k, h, PASS, "bench", 0).unwrap();
    let mut g = c.benchmark_group("backup");
    g.sample_size(20);
    g.bench_function("raw argon2id 64MiB t=3", |b| {
        let params = Params::new(64 * 1024, 3, 1, Some(32)).unwrap();
        let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        b.iter(|| {
            let mut key = [0u8; 32];
            a.hash_password_into(PASS, b"sixteen byte salt", &mut key)
                .unwrap();
            key
        })
    });
    g.bench_function("export", |b| {
        b.iter(|| cosigner_backup::export(k, h, PASS, "bench", 0).unwrap())
    });
    g.bench_function("open", |b| {
        b.iter(|| cosigner_backup::open(&file, PASS).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
