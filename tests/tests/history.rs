//! The history through a real cosignerd: every start is recorded before the daemon serves,
//! queries and export over mutual TLS, `cosignerctl history ...`, and tampering or
//! corruption of the sled files while the daemon is stopped.

use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_api::v1::{
    GetHistoryEntryRequest, HistoryFilter, ListHistoryRequest, VerifyHistoryRequest,
};
use cosigner_tests::{Daemon, Pki, test_dir};
use tonic::Code;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn restart(d: &mut Daemon, pki: &Pki) {
    let status = tokio::task::block_in_place(|| d.stop()).unwrap();
    assert_eq!(status.code(), Some(0));
    d.respawn(pki).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_are_recorded_and_the_history_is_queryable() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    restart(&mut d, &pki).await;
    let c = |args: &[&str]| {
        let mut all = vec!["history"];
        all.extend_from_slice(args);
        d.ctl(&pki, "admin", &all)
    };

    let o = c(&["list", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let entries: Vec<serde_json::Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2, "{}", out(&o));
    assert_eq!(entries[0]["seq"], 2); // newest first
    for e in &entries {
        assert_eq!(e["kind"], "config_start");
        assert_eq!(e["outcome"], "succeeded");
        assert_eq!(e["tls_identity"], "spiffe://cosigner/party/cosignerd");
    }
    assert_eq!(entries[0]["prev_hash"], entries[1]["entry_hash"]);

    let o = c(&["list"]);
    assert!(out(&o).contains("config_start"), "{}", out(&o));
    let o = c(&["verify"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("history OK: 2 entries"), "{}", out(&o));
    let o = c(&["show", "1", "--json"]);
    let e: serde_json::Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert_eq!(e["seq"], 1);

    let file = tmp.path().join("export.jsonl");
    let o = c(&[
        "export",
        "--kind",
        "config_start",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let text = std::fs::read_to_string(&file).unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![1, 2]); // oldest first
    let o = c(&["list", "--kind", "sign", "--json"]);
    assert!(out(&o).trim().is_empty(), "{}", out(&o));
    let o = c(&["list", "--since", "1h", "--json"]);
    assert_eq!(out(&o).lines().count(), 2);
    let o = c(&["list", "--kind", "nonsense"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("unknown kind"), "{}", err(&o));

    // Status shows the history.
    let o = d.ctl(&pki, "admin", &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(s["history_entries"], 2);
    assert!(s["history_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn bad_history_requests_get_clear_codes() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    let mut admin = CosignerClient::new(pki.channel(d.addr, Some("admin")).await.unwrap());
    let list = |filter: HistoryFilter, token: &str| ListHistoryRequest {
        filter: Some(filter),
        page_size: 10,
        page_token: token.into(),
    };
    let cases = [
        list(HistoryFilter::default(), "garbage"),
        list(
            HistoryFilter {
                from_ms: 10,
                to_ms: 5,
                ..HistoryFilter::default()
            },
            "",
        ),
        list(
            HistoryFilter {
                from_ms: -1,
                ..HistoryFilter::default()
            },
            "",
        ),
        list(
            HistoryFilter {
                kind: 99,
                ..HistoryFilter::default()
            },
            "",
        ),
        list(
            HistoryFilter {
                outcome: 42,
                ..HistoryFilter::default()
            },
            "",
        ),
        ListHistoryRequest {
            page_size: 5000,
            ..ListHistoryRequest::default()
        },
    ];
    for req in cases {
        let e = admin.list_history(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
    }
    let e = admin
        .get_history_entry(GetHistoryEntryRequest { seq: 999 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Parties may not read the history.
    let mut party = CosignerClient::new(pki.channel(d.addr, Some("device-1")).await.unwrap());
    let e = party
        .verify_history(VerifyHistoryRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // The daemon is still fine.
    assert!(
        admin
            .verify_history(VerifyHistoryRequest {})
            .await
            .unwrap()
            .into_inner()
            .ok
    );
}

fn entry_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'e'];
    k.extend(seq.to_be_bytes());
    k
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_while_stopped_is_named_by_verify() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    restart(&mut d, &pki).await; // entries 1 and 2
    tokio::task::block_in_place(|| d.stop()).unwrap();

    // Someone with disk access rewrites entry 1's recorded identity.
    {
        let db = sled::open(d.data_dir.join("history")).unwrap();
        let tree = db.open_tree("history").unwrap();
        let v = tree.get(entry_key(1)).unwrap().unwrap().to_vec();
        let pos = v
            .windows(9)
            .position(|w| w == b"cosignerd")
            .expect("identity in the entry");
        let mut edited = v.clone();
        edited[pos] = b'C';
        tree.insert(entry_key(1), edited).unwrap();
        db.flush().unwrap();
    }
    d.respawn(&pki).await.unwrap();
    let o = d.ctl(&pki, "admin", &["history", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("BROKEN at entry 1"), "{}", out(&o));
    assert!(out(&o).contains("edited"), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_history_stops_the_daemon_before_it_serves() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    tokio::task::block_in_place(|| d.stop()).unwrap();
    let hist = d.data_dir.join("history");
    for f in std::fs::read_dir(&hist).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, vec![0x5a; 4096]).unwrap();
        }
    }
    let o = std::process::Command::new(cosigner_tests::bin("cosignerd"))
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(
        e.contains("history database") && e.contains(hist.to_str().unwrap()),
        "{e}"
    );
    assert_eq!(
        e.trim_end()
            .lines()
            .filter(|l| l.starts_with("cosignerd:"))
            .count(),
        1,
        "{e}"
    );
}
