//! Seal and unseal latency of a 105 KB share through the daemon's interface (`ShareStore`
//! over the sealing thread) on swtpm, with percentiles; and the same on the software backend
//! for comparison. Run: `cargo bench -p cosigner-seal --bench seal` (needs swtpm).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cosigner_seal::*;
use cosigner_test_support::swtpm::SwTpm;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<28} n={:<4} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        v[v.len() - 1]
    );
}

async fn run(name: &str, store: &ShareStore, n: usize) {
    let share = vec![0x5au8; 105_000];
    let party = [1u8; 32];
    let (mut seal, mut unseal) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        store
            .seal_pending("bench", party, i as u64, &share, b"public record")
            .await
            .unwrap();
        seal.push(t.elapsed());
        let t = Instant::now();
        let (_, s) = store
            .load("bench", Slot::Pending, party, Some(i as u64))
            .await
            .unwrap();
        unseal.push(t.elapsed());
        assert_eq!(s.len(), share.len());
    }
    report(&format!("{name} seal (105 KB)"), seal);
    report(&format!("{name} unseal (105 KB)"), unseal);
    store.sealer().stop().await;
}

fn main() {
    let n: usize = std::env::var("SEAL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
        let sealer = Sealer::start(
            BackendConfig::Tpm {
                tcti: tpm.tcti(),
                pcrs: vec![],
            },
            64,
        )
        .unwrap();
        run(
            "swtpm",
            &ShareStore::open(&dir.path().join("a"), sealer).unwrap(),
            n,
        )
        .await;
        let sealer = Sealer::start(
            BackendConfig::Tpm {
                tcti: tpm.tcti(),
                pcrs: vec![16],
            },
            64,
        )
        .unwrap();
        run(
            "swtpm + PCR 16",
            &ShareStore::open(&dir.path().join("b"), sealer).unwrap(),
            n,
        )
        .await;
        let soft = Sealer::start(
            BackendConfig::Software {
                key_file: dir.path().join("k"),
            },
            64,
        )
        .unwrap();
        run(
            "software",
            &ShareStore::open(&dir.path().join("c"), soft).unwrap(),
            n,
        )
        .await;
    });
}
