//! History benchmarks on a real sled database in a temporary directory.
//!
//! 1. Appends with a flush per entry: filling 100,000 entries, timed one by one; prints
//!    appends per second and latency percentiles.
//! 2. With those 100,000 entries present (spread over 7 days, 10 assets, 2 vaults):
//!    the policy aggregates over the last hour/day/week, and pages of 100 entries.
//!
//! Run: `cargo bench -p cosigner-history --bench history`. Set HISTORY_BENCH_ENTRIES to
//! change the size.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use cosigner_history::*;
use criterion::{Criterion, criterion_group, criterion_main};

const T0: i64 = 1_800_000_000_000;
const WEEK: i64 = 7 * 86_400_000;

fn record(i: u64) -> Record {
    Record {
        vault_id: if i.is_multiple_of(2) {
            "treasury"
        } else {
            "hot"
        }
        .into(),
        requester: vec![(i % 3) as u8; 32],
        nonce: i.to_be_bytes().to_vec(),
        payload_digest: vec![7; 32],
        summary: Some(Summary {
            chain: "ethereum".into(),
            network: "1".into(),
            recipient: format!("0x{:040x}", i % 1000),
            asset: format!("0x{:040x}", i % 10),
            amount: (1_000_000 + i).to_string(),
        }),
        ..Record::new(
            Kind::Sign,
            if i.is_multiple_of(4) {
                Outcome::Started
            } else {
                Outcome::Succeeded
            },
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn benches(c: &mut Criterion) {
    let n: u64 = std::env::var("HISTORY_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let clock = now.clone();
    let h = History::open_with_clock(
        &dir.path().join("history"),
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
    .unwrap();

    let mut lat = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        now.store(T0 + (i as i64) * WEEK / n as i64, Ordering::SeqCst);
        let t = Instant::now();
        h.append(record(i)).unwrap();
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    eprintln!(
        "append + flush, {n} entries: {:.0} appends/s; latency p50 {:?} p90 {:?} p99 {:?} max {:?}; {} bytes on disk",
        n as f64 / total.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
        h.size_on_disk().unwrap_or(0),
    );

    let end = T0 + WEEK;
    let mut g = c.benchmark_group(format!("history_{n}_entries"));
    g.bench_function("aggregates_treasury_10_assets_3_windows", |b| {
        b.iter(|| black_box(h.aggregates("treasury", end).unwrap()))
    });
    g.bench_function("page_100_newest", |b| {
        b.iter(|| black_box(h.list(&Query::default(), 100, None).unwrap()))
    });
    let middle = h.list(&Query::default(), 1000, None).unwrap();
    let mut token = middle.next;
    for _ in 0..(n / 2000) {
        token = h
            .list(&Query::default(), 1000, token.as_deref())
            .unwrap()
            .next;
    }
    g.bench_function("page_100_from_the_middle", |b| {
        b.iter(|| black_box(h.list(&Query::default(), 100, token.as_deref()).unwrap()))
    });
    let q = Query {
        vault_id: Some("hot".into()),
        from_ms: Some(end - 86_400_000),
        ..Query::default()
    };
    g.bench_function("page_100_vault_last_day", |b| {
        b.iter(|| black_box(h.list(&q, 100, None).unwrap()))
    });
    g.bench_function("get_one", |b| b.iter(|| black_box(h.get(n / 2).unwrap())));
    g.finish();

    let t = Instant::now();
    let v = h.verify().unwrap();
    eprintln!(
        "verify {} entries: {:?} ({:?})",
        v.checked,
        t.elapsed(),
        v.first_bad
    );
}

criterion_group! {
    name = history_benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(history_benches);
