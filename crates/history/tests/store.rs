//! The history against a real sled database on disk.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use cosigner_history::*;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const T0: i64 = 1_800_000_000_000;

/// A history whose clock the test moves.
fn open_at(dir: &std::path::Path) -> (History, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(T0));
    let n = now.clone();
    let h = History::open_with_clock(
        &dir.join("history"),
        Arc::new(move || n.load(Ordering::SeqCst)),
    )
    .unwrap();
    (h, now)
}

/// sled releases its file lock from a background thread shortly after the last handle is
/// dropped; a raw reopen right after waits for it.
fn raw_sled(path: &std::path::Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    sled::open(path).unwrap()
}

fn sign(vault: &str, outcome: Outcome, asset: &str, amount: &str) -> Record {
    Record {
        vault_id: vault.into(),
        summary: Some(Summary {
            chain: "ethereum".into(),
            network: "1".into(),
            recipient: "0xabc".into(),
            asset: asset.into(),
            amount: amount.into(),
        }),
        ..Record::new(Kind::Sign, outcome)
    }
}

fn seqs(p: &Page) -> Vec<u64> {
    p.entries.iter().map(|(e, _)| e.seq).collect()
}

#[test]
fn append_get_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (h, now) = open_at(dir.path());
    assert!(h.is_empty().unwrap());
    let r1 = h
        .append(Record::new(Kind::ConfigStart, Outcome::Succeeded))
        .unwrap();
    now.fetch_add(5, Ordering::SeqCst);
    let r2 = h
        .append(sign("v1", Outcome::Succeeded, "native", "10"))
        .unwrap();
    assert_eq!((r1.seq, r2.seq), (1, 2));
    assert_eq!(r2.at_ms, T0 + 5);
    let (e2, hash2) = h.get(2).unwrap();
    assert_eq!(hash2, r2.hash);
    assert_eq!(e2.prev_hash, r1.hash);
    assert_eq!(e2.record.summary.unwrap().amount, "10");
    assert!(matches!(h.get(3), Err(HistoryError::NotFound(3))));
    assert_eq!(
        h.verify().unwrap(),
        Verification {
            checked: 2,
            first_bad: None
        }
    );
    // A clock that steps back does not reorder the chain in time.
    now.store(T0 - DAY, Ordering::SeqCst);
    let r3 = h
        .append(Record::new(Kind::Keygen, Outcome::Started))
        .unwrap();
    assert_eq!(r3.at_ms, T0 + 5);
    // Reopening continues the same chain.
    drop(h);
    let (h, _) = open_at(dir.path());
    assert_eq!(
        h.append(Record::new(Kind::Keygen, Outcome::Failed))
            .unwrap()
            .seq,
        4
    );
    assert_eq!(h.verify().unwrap().checked, 4);
}

#[test]
fn invalid_records_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = open_at(dir.path());
    for bad in [
        sign("v", Outcome::Succeeded, "native", "12.5"),
        sign("v", Outcome::Succeeded, "native", "-1"),
        Record {
            vault_id: "x".repeat(256),
            ..Record::new(Kind::Sign, Outcome::Started)
        },
    ] {
        assert!(matches!(h.append(bad), Err(HistoryError::InvalidRecord(_))));
    }
    assert_eq!(h.len().unwrap(), 0);
}

/// 12 entries over two vaults, kinds and outcomes, one hour apart.
fn populated(h: &History, now: &AtomicI64) {
    for i in 0..12i64 {
        now.store(T0 + i * HOUR, Ordering::SeqCst);
        let vault = if i % 2 == 0 { "even" } else { "odd" };
        let rec = match i % 3 {
            0 => sign(vault, Outcome::Succeeded, "native", "1"),
            1 => sign(vault, Outcome::Denied, "native", "1"),
            _ => Record {
                vault_id: vault.into(),
                ..Record::new(Kind::Reshare, Outcome::Failed)
            },
        };
        h.append(rec).unwrap();
    }
}

#[test]
fn queries_filter_and_page_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (h, now) = open_at(dir.path());
    populated(&h, &now);
    let all = h.list(&Query::default(), 0, None).unwrap();
    assert_eq!(seqs(&all), (1..=12).rev().collect::<Vec<_>>());
    assert!(all.next.is_none());

    let by = |q: Query| seqs(&h.list(&q, 0, None).unwrap());
    assert_eq!(
        by(Query {
            vault_id: Some("odd".into()),
            ..Query::default()
        }),
        vec![12, 10, 8, 6, 4, 2]
    );
    assert_eq!(
        by(Query {
            kind: Some(Kind::Reshare),
            ..Query::default()
        }),
        vec![12, 9, 6, 3]
    );
    assert_eq!(
        by(Query {
            outcome: Some(Outcome::Denied),
            ..Query::default()
        }),
        vec![11, 8, 5, 2]
    );
    assert_eq!(
        by(Query {
            vault_id: Some("even".into()),
            outcome: Some(Outcome::Succeeded),
            ..Query::default()
        }),
        vec![7, 1]
    );
    assert!(
        by(Query {
            vault_id: Some("none".into()),
            ..Query::default()
        })
        .is_empty()
    );

    // Half-open time range [from, to): entry i+1 is at T0 + i h.
    let range = |from: i64, to: i64| {
        by(Query {
            from_ms: Some(from),
            to_ms: Some(to),
            ..Query::default()
        })
    };
    assert_eq!(range(T0 + 2 * HOUR, T0 + 5 * HOUR), vec![5, 4, 3]);
    assert_eq!(range(T0 + 2 * HOUR + 1, T0 + 5 * HOUR + 1), vec![6, 5, 4]);
    assert_eq!(range(T0, T0), Vec::<u64>::new());
    assert_eq!(range(T0 + 11 * HOUR, T0 + 99 * HOUR), vec![12]);
    assert_eq!(range(0, T0), Vec::<u64>::new());
    assert_eq!(
        by(Query {
            from_ms: Some(T0 + 6 * HOUR),
            vault_id: Some("even".into()),
            ..Query::default()
        }),
        vec![11, 9, 7]
    );

    // Pagination visits every entry once, in order.
    let mut token = None;
    let mut visited = Vec::new();
    loop {
        let page = h.list(&Query::default(), 5, token.as_deref()).unwrap();
        assert!(page.entries.len() <= 5);
        visited.extend(seqs(&page));
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(visited, (1..=12).rev().collect::<Vec<_>>());
    let q = Query {
        kind: Some(Kind::Sign),
        ..Query::default()
    };
    let p1 = h.list(&q, 3, None).unwrap();
    let p2 = h.list(&q, 3, p1.next.as_deref()).unwrap();
    assert_eq!((seqs(&p1), seqs(&p2)), (vec![11, 10, 8], vec![7, 5, 4]));
}

#[test]
fn bad_queries_are_invalid_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let (h, now) = open_at(dir.path());
    populated(&h, &now);
    for token in [
        "",
        "xyz",
        "c1-zz",
        "c1-00000000000000000",
        "c2-0000000000000001",
    ] {
        let err = h.list(&Query::default(), 10, Some(token)).unwrap_err();
        assert!(
            matches!(err, HistoryError::InvalidQuery(_)),
            "{token:?}: {err}"
        );
    }
    let backwards = Query {
        from_ms: Some(T0 + 5),
        to_ms: Some(T0),
        ..Query::default()
    };
    assert!(matches!(
        h.list(&backwards, 10, None),
        Err(HistoryError::InvalidQuery(_))
    ));
    let negative = Query {
        from_ms: Some(-1),
        ..Query::default()
    };
    assert!(matches!(
        h.list(&negative, 10, None),
        Err(HistoryError::InvalidQuery(_))
    ));
    assert!(matches!(
        h.list(&Query::default(), 1001, None),
        Err(HistoryError::InvalidQuery(_))
    ));
    assert!(h.export(&backwards).is_err());
}

#[test]
fn aggregates_count_windows_exactly_at_their_edges() {
    let dir = tempfile::tempdir().unwrap();
    let (h, now) = open_at(dir.path());
    let at = |t: i64, r: Record| {
        now.store(t, Ordering::SeqCst);
        h.append(r).unwrap();
    };
    let usdc = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
    at(
        T0,
        sign("v", Outcome::Succeeded, "native", "1000000000000000000"),
    ); // 1 ETH, 7 days before now: outside 7d
    at(T0 + 1, sign("v", Outcome::Succeeded, "native", "5")); // just inside 7d
    at(
        T0 + 6 * DAY,
        sign("v", Outcome::Succeeded, usdc, "250000000"),
    );
    at(
        T0 + 7 * DAY - HOUR,
        sign("v", Outcome::Succeeded, "native", "7"),
    ); // exactly now-1h: outside 1h
    at(
        T0 + 7 * DAY - HOUR + 1,
        sign("v", Outcome::Succeeded, "native", "11"),
    ); // inside 1h
    at(
        T0 + 7 * DAY - 10,
        sign("v", Outcome::Started, "native", "99"),
    ); // a request, not spent
    at(T0 + 7 * DAY - 9, sign("v", Outcome::Denied, "native", "99"));
    at(T0 + 7 * DAY - 8, sign("v", Outcome::Failed, "native", "99")); // neither
    at(
        T0 + 7 * DAY - 7,
        sign("other", Outcome::Succeeded, "native", "1000"),
    );
    at(
        T0 + 7 * DAY - 6,
        Record {
            vault_id: "v".into(),
            ..Record::new(Kind::Refresh, Outcome::Succeeded)
        },
    );
    at(
        T0 + 7 * DAY - 5,
        Record {
            vault_id: "v".into(),
            ..Record::new(Kind::Reshare, Outcome::Failed)
        },
    );

    let a = h.aggregates("v", T0 + 7 * DAY).unwrap();
    let w = |name: &str| a.windows.iter().find(|w| w.name == name).unwrap().clone();
    assert_eq!(w("1h").spent.get("native").map(String::as_str), Some("11"));
    assert_eq!(w("1h").spent.get(usdc).map(String::as_str), Some("0"));
    assert_eq!(w("1h").signatures, 1);
    assert_eq!(w("1h").requests, 2);
    assert_eq!(w("24h").spent.get("native").map(String::as_str), Some("18"));
    assert_eq!(w("24h").signatures, 2);
    assert_eq!(w("7d").spent.get("native").map(String::as_str), Some("23"));
    assert_eq!(
        w("7d").spent.get(usdc).map(String::as_str),
        Some("250000000")
    );
    assert_eq!(w("7d").signatures, 4);
    assert_eq!(a.last_reshare_ms, Some(T0 + 7 * DAY - 6));

    // A day later the week window has moved on, and nothing happened in the last day.
    let later = h.aggregates("v", T0 + 8 * DAY).unwrap();
    assert_eq!(later.windows[1].signatures, 0);
    assert_eq!(
        later.windows[2].spent.get("native").map(String::as_str),
        Some("18")
    );
    // Another vault sees only its own; an unknown vault sees nothing.
    let other = h.aggregates("other", T0 + 7 * DAY).unwrap();
    assert_eq!(
        other.windows[0].spent.get("native").map(String::as_str),
        Some("1000")
    );
    assert_eq!(
        h.aggregates("nobody", T0).unwrap().windows[2],
        Window {
            name: "7d",
            ..Window::default()
        }
    );
}

#[test]
fn aggregate_amounts_saturate_instead_of_wrapping() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = open_at(dir.path());
    let huge = "9".repeat(60);
    h.append(sign("v", Outcome::Succeeded, "t", &huge)).unwrap();
    h.append(sign("v", Outcome::Succeeded, "t", "1")).unwrap();
    let a = h.aggregates("v", T0).unwrap();
    assert_eq!(a.windows[0].spent["t"], u128::MAX.to_string());
    // The entry keeps the exact amount.
    assert_eq!(h.get(1).unwrap().0.record.summary.unwrap().amount, huge);
}

#[test]
fn nonces_are_remembered_per_requester() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = open_at(dir.path());
    let rec = |requester: &[u8], nonce: &[u8], outcome| Record {
        requester: requester.to_vec(),
        nonce: nonce.to_vec(),
        ..Record::new(Kind::Sign, outcome)
    };
    h.append(rec(b"alice", b"n1", Outcome::Started)).unwrap();
    h.append(rec(b"alice", b"n1", Outcome::Succeeded)).unwrap(); // same request's outcome
    assert_eq!(h.nonce_seen(b"alice", b"n1").unwrap(), Some(1));
    assert_eq!(h.nonce_seen(b"bob", b"n1").unwrap(), None);
    assert_eq!(h.nonce_seen(b"alice", b"n2").unwrap(), None);
}

#[test]
fn tampering_with_stored_bytes_is_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (h, now) = open_at(dir.path());
        populated(&h, &now);
    }
    let path = dir.path().join("history");
    // Edit entry 5 directly in sled: change its amount.
    {
        let db = raw_sled(&path);
        let tree = db.open_tree("history").unwrap();
        let mut key = vec![b'e'];
        key.extend(5u64.to_be_bytes());
        let v = tree.get(&key).unwrap().unwrap().to_vec();
        let pos = v
            .windows(1)
            .rposition(|w| w == b"1")
            .expect("the amount byte");
        let mut edited = v.clone();
        edited[pos] = b'9';
        tree.insert(&key, edited).unwrap();
        db.flush().unwrap();
    }
    let (h, _) = open_at(dir.path());
    let v = h.verify().unwrap();
    assert_eq!(v.checked, 4);
    let (seq, why) = v.first_bad.unwrap();
    assert_eq!(seq, 5, "{why}");
    assert!(why.contains("edited"), "{why}");

    // Removing an entry is named too.
    drop(h);
    {
        let db = raw_sled(&path);
        let tree = db.open_tree("history").unwrap();
        let mut key = vec![b'e'];
        key.extend(3u64.to_be_bytes());
        tree.remove(&key).unwrap();
        db.flush().unwrap();
    }
    let (h, _) = open_at(dir.path());
    let (seq, why) = h.verify().unwrap().first_bad.unwrap();
    assert_eq!(seq, 3, "{why}");
    assert!(why.contains("missing"), "{why}");
}

#[test]
fn corrupt_database_files_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (h, now) = open_at(dir.path());
        populated(&h, &now);
    }
    let path = dir.path().join("history");
    for entry in std::fs::read_dir(&path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let len = std::fs::metadata(&p).unwrap().len().max(64) as usize;
            std::fs::write(&p, vec![0xa5u8; len]).unwrap();
        }
    }
    let err = History::open(&path).err().expect("corrupt files opened");
    assert!(matches!(err, HistoryError::Open { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    // A path that is a file, not a directory.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a database").unwrap();
    assert!(matches!(
        History::open(&file),
        Err(HistoryError::Open { .. })
    ));
}

#[test]
fn export_streams_matching_entries_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (h, now) = open_at(dir.path());
    populated(&h, &now);
    let q = Query {
        vault_id: Some("even".into()),
        ..Query::default()
    };
    let lines: Vec<String> = h.export(&q).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(lines.len(), 6);
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![1, 3, 5, 7, 9, 11]);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["kind"], "sign");
    assert_eq!(first["summary"]["amount"], "1");
    assert_eq!(first["hash"].as_str().unwrap().len(), 64);
}

#[test]
fn pruning_keeps_the_chain_and_the_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let (h, now) = open_at(dir.path());
    for day in 0..12i64 {
        now.store(T0 + day * DAY, Ordering::SeqCst);
        h.append(sign("v", Outcome::Succeeded, "native", "1"))
            .unwrap();
        h.append(sign("v", Outcome::Started, "native", "1"))
            .unwrap();
    }
    let end = T0 + 11 * DAY + 1;
    now.store(end, Ordering::SeqCst);
    let before = h.aggregates("v", end).unwrap();
    assert!(matches!(
        h.prune(end - 6 * DAY),
        Err(HistoryError::Retention(_))
    ));
    let pruned = h.prune(end - 8 * DAY).unwrap();
    assert_eq!(pruned.removed, 8); // days 0..=3, two entries each
    assert_eq!(pruned.first_kept, 9);
    assert!(matches!(h.get(8), Err(HistoryError::NotFound(8))));
    assert_eq!(h.len().unwrap(), 16);
    assert_eq!(
        h.verify().unwrap(),
        Verification {
            checked: 16,
            first_bad: None
        }
    );
    assert_eq!(h.aggregates("v", end).unwrap(), before);
    // Queries skip the pruned range; appends continue the chain.
    assert_eq!(
        h.list(&Query::default(), 1000, None).unwrap().entries.len(),
        16
    );
    h.append(Record::new(Kind::ConfigStart, Outcome::Succeeded))
        .unwrap();
    drop(h);
    let (h, _) = open_at(dir.path());
    assert_eq!(h.verify().unwrap().first_bad, None);
}

const CHILD_ENV: &str = "COSIGNER_HISTORY_CRASH_CHILD";

/// The child of `acknowledged_entries_survive_sigkill`: appends forever, printing each
/// acknowledged seq. Does nothing when run as an ordinary test.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let h = History::open(std::path::Path::new(&path)).unwrap();
    let mut out = std::io::stdout();
    for i in 0..1_000_000u64 {
        let receipt = h
            .append(Record {
                nonce: i.to_be_bytes().to_vec(),
                requester: b"crash".to_vec(),
                ..sign("crash", Outcome::Succeeded, "native", "1")
            })
            .unwrap();
        writeln!(out, "ack {}", receipt.seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history");
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut total_acked = 0u64;
    for round in 0..50 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a random number of acknowledgements (0..40), i.e. at a random moment.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait_for = rng % 40;
        let mut acked = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while (acked.len() as u64) < wait_for {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(s) = l.strip_prefix("ack ") {
                        acked.push(s.parse::<u64>().unwrap());
                    }
                }
                _ => break,
            }
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Acknowledgements already in the pipe count too.
        for l in lines.map_while(Result::ok) {
            if let Some(s) = l.strip_prefix("ack ") {
                acked.push(s.parse().unwrap());
            }
        }
        child.wait().unwrap();
        total_acked += acked.len() as u64;

        let h = History::open(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        for seq in &acked {
            h.get(*seq)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged entry {seq} lost: {e}"));
        }
        let v = h.verify().unwrap();
        assert_eq!(v.first_bad, None, "round {round}");
    }
    assert!(
        total_acked > 200,
        "too few appends to mean anything: {total_acked}"
    );
}

#[test]
fn sessions_floors_and_permissions_survive_a_reopen() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    {
        let (h, _) = open_at(dir.path());
        assert_eq!(h.session_seen(b"session-one-0000").unwrap(), None);
        let r = h
            .append(Record {
                vault_id: "v".into(),
                session_id: b"session-one-0000".to_vec(),
                ..Record::new(Kind::Reshare, Outcome::Started)
            })
            .unwrap();
        // The outcome of the same session does not move the first use.
        h.append(Record {
            vault_id: "v".into(),
            session_id: b"session-one-0000".to_vec(),
            ..Record::new(Kind::Reshare, Outcome::InDoubt)
        })
        .unwrap();
        assert_eq!(h.session_seen(b"session-one-0000").unwrap(), Some(r.seq));
        assert_eq!(h.floor("v").unwrap(), None);
        assert_eq!(h.raise_floor("v", 3).unwrap(), 3);
        // Never lowered.
        assert_eq!(h.raise_floor("v", 2).unwrap(), 3);
        assert_eq!(h.raise_floor("v", 4).unwrap(), 4);
        assert_eq!(h.floor("other").unwrap(), None);
    }
    let (h, _) = open_at(dir.path());
    assert!(h.session_seen(b"session-one-0000").unwrap().is_some());
    assert_eq!(h.floor("v").unwrap(), Some(4));
    assert!(h.verify().unwrap().first_bad.is_none());
    // Only the daemon's user reads the history.
    let root = dir.path().join("history");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    let mut files = 0;
    for e in walk(&root) {
        if e.is_dir() {
            assert_eq!(mode(&e), 0o700, "{}", e.display());
        } else {
            files += 1;
            assert_eq!(mode(&e), 0o600, "{}", e.display());
        }
    }
    assert!(files > 0);
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
