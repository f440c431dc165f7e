//! Vault ceremonies between real processes: two cosignerd (each with its own swtpm and
//! embedded relay) and device parties (`cosignerctl party`), over mutual TLS on loopback.
//! Every signature is checked with libsecp256k1 (the `secp256k1` crate), an implementation
//! independent of the engine's k256.

mod common;

use common::*;
use cosigner_tests::Party;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn keygen_two_of_three_then_every_pair_signs() {
    let s = setup().await;
    let v = keygen(&s);
    let key = v["public_key"].as_str().unwrap().to_string();
    assert_eq!(v["epoch"], 0);
    assert_eq!(v["threshold"], 2);

    // Both daemons hold the vault under the same key, sealed by their TPMs.
    for d in [&s.a, &s.b] {
        let o = d.ctl(&s.pki, "admin", &["vault", "show", "v1"]);
        let vault = ok(&o);
        assert_eq!(vault["public_key"].as_str().unwrap(), key);
        assert_eq!(vault["slots"]["current_epoch"], 0);
        let current = std::fs::read(d.data_dir.join("shares/v1/current")).unwrap();
        assert!(current.starts_with(b"CSEAL"));
    }

    for (i, signers) in [
        ["server-a", "server-b"],
        ["device-1", "server-a"],
        ["device-1", "server-b"],
    ]
    .iter()
    .enumerate()
    {
        let msg = format!("payment {i}");
        let out = ok(&sign(&s, &s.d1, signers, &msg));
        verify_independently(&out, &msg, &key);
    }

    // Every ceremony is in each daemon's history: started and succeeded.
    let a = history_kinds(&s.a, &s.pki);
    let count = |k: &str, o: &str| a.iter().filter(|(x, y)| x == k && y == o).count();
    assert_eq!(count("keygen", "succeeded"), 1, "{a:?}");
    assert_eq!(count("keygen", "started"), 1, "{a:?}");
    assert_eq!(count("sign", "succeeded"), 2, "{a:?}");
    assert_eq!(count("sign", "started"), 2, "{a:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reshare_two_of_three_to_three_of_four_keeps_the_key_and_retires_old_shares() {
    let s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    let old_file = s.d1.file.with_extension("epoch0");
    std::fs::copy(&s.d1.file, &old_file).unwrap();

    let (c, j) = reshare_adding_device_2(&s).await;
    let cv = ok(&c);
    let jv = ok(&j);
    for v in [&cv, &jv] {
        assert_eq!(v["public_key"].as_str().unwrap(), key);
        assert_eq!(v["epoch"], 1);
        assert_eq!(v["threshold"], 3);
        assert_eq!(v["members"].as_array().unwrap().len(), 4);
    }
    for d in [&s.a, &s.b] {
        let v = ok(&d.ctl(&s.pki, "admin", &["vault", "show", "v1"]));
        assert_eq!(v["public_key"].as_str().unwrap(), key);
        assert_eq!(v["epoch"], 1);
        assert_eq!(v["slots"]["previous_epoch"], 0, "{v}");
        assert_eq!(v["slots"]["pending_epoch"], Value::Null, "{v}");
    }

    // The new committee signs under the same key, with 3 signers; device-2 can lead.
    let out = ok(&sign(
        &s,
        &s.d2,
        &["device-2", "server-a", "server-b"],
        "after reshare",
    ));
    verify_independently(&out, "after reshare", &key);
    assert_eq!(out["epoch"], 1);
    // The first signature of the new epoch retires the previous shares.
    for d in [&s.a, &s.b] {
        let v = ok(&d.ctl(&s.pki, "admin", &["vault", "show", "v1"]));
        assert_eq!(v["slots"]["previous_epoch"], Value::Null, "{v}");
    }
    // Two signers are no longer enough.
    let e = err(&sign(&s, &s.d1, &["device-1", "server-a"], "too few"));
    assert!(e.contains("threshold") || e.contains("exactly 3"), "{e}");

    // A share of the old epoch (a backup of device-1's file) can no longer join.
    let old = Party {
        name: "device-1".into(),
        file: old_file,
        pass_file: s.d1.pass_file.clone(),
    };
    let e = err(&sign(&s, &old, &["device-1", "server-a"], "old share"));
    assert!(e.contains("epoch 0") && e.contains("epoch 1"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_sign_reports_percentiles_without_failures() {
    let s = setup().await;
    keygen(&s);
    let file = s.d1.file.to_string_lossy().into_owned();
    let pass = s.d1.pass_file.to_string_lossy().into_owned();
    let certs = s.pki.dir.to_string_lossy().into_owned();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let o = cosigner_tests::ctl(&[
        "--certs",
        &certs,
        "--as",
        "device-1",
        "bench",
        "sign",
        "--file",
        &file,
        "--passphrase-file",
        &pass,
        "--vault",
        "v1",
        "--count",
        "12",
        "--concurrency",
        "4",
        "--in-process",
        "3",
        "--daemon",
        &da,
        "--daemon",
        &db,
        "--json",
    ]);
    let r = ok(&o);
    assert_eq!(r["failures"], 0, "{r}");
    for k in ["p50", "p95", "p99"] {
        assert!(r["end_to_end_ms"][k].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["in_process_ms"][k].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(r["signatures_per_second"].as_f64().unwrap() > 0.0);
    // 12 signatures (+2 warm-up) succeeded on each daemon, and their sessions were closed.
    let a = history_kinds(&s.a, &s.pki);
    assert_eq!(
        a.iter()
            .filter(|(k, o)| k == "sign" && o == "succeeded")
            .count(),
        14
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_only_daemon_carries_keygen_and_signing() {
    let s = setup().await;
    let relay_dir = s.pki.dir.parent().unwrap().join("relay");
    let relay = cosigner_tests::Daemon::start_with_seal(
        &relay_dir,
        &s.pki,
        "",
        "",
        "[relay]\nonly = true\n",
        None,
    )
    .await
    .unwrap();
    assert!(relay.log_text().contains("relay.only = true"));
    // It holds nothing and offers no Cosigner service.
    let o = relay.ctl(&s.pki, "admin", &["status"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("UNIMPLEMENTED"),
        "{o:?}"
    );
    assert!(!relay_dir.join("data/identity").exists());

    let via = format!("https://{}", relay.addr);
    let a = s.a.member_spec(&s.pki, "server-a").unwrap();
    let b = s.b.member_spec(&s.pki, "server-b").unwrap();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let v = ok(&s.d1.run(
        &s.pki,
        &[
            "keygen",
            "--vault",
            "v1",
            "--threshold",
            "2",
            "--member",
            &a,
            "--member",
            &b,
            "--daemon",
            &da,
            "--daemon",
            &db,
            "--relay",
            &via,
            "--json",
        ],
    ));
    let out = ok(&s.d1.run(
        &s.pki,
        &[
            "sign",
            "--vault",
            "v1",
            "--message",
            "via the relay",
            "--signer",
            "server-a",
            "--signer",
            "server-b",
            "--daemon",
            &da,
            "--daemon",
            &db,
            "--relay",
            &via,
            "--json",
        ],
    ));
    verify_independently(&out, "via the relay", v["public_key"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_join_keygen_and_signing_from_request_files() {
    let s = setup().await;
    // A 2-of-3 vault of two devices and one daemon; device-2 joins from a request file.
    let a = s.a.member_spec(&s.pki, "server-a").unwrap();
    let d2 = s.d2.member_spec().unwrap();
    let da = s.a.daemon_spec("server-a");
    let args = [
        "keygen",
        "--vault",
        "v1",
        "--threshold",
        "2",
        "--member",
        &a,
        "--member",
        &d2,
        "--daemon",
        &da,
        "--json",
    ];
    let (c, j) = with_joiner(&s, &s.d1, &args, &s.d2).await;
    let (cv, jv) = (ok(&c), ok(&j));
    let key = cv["public_key"].as_str().unwrap().to_string();
    assert_eq!(jv["public_key"].as_str().unwrap(), key);

    // The two devices sign together, without any daemon.
    let args = [
        "sign",
        "--vault",
        "v1",
        "--message",
        "device to device",
        "--signer",
        "device-1",
        "--signer",
        "device-2",
        "--relay",
        &format!("https://{}", s.a.addr),
        "--json",
    ];
    let (c, j) = with_joiner(&s, &s.d1, &args, &s.d2).await;
    let (cv, jv) = (ok(&c), ok(&j));
    verify_independently(&cv, "device to device", &key);
    assert_eq!(cv["r"], jv["r"]);
    assert_eq!(cv["s"], jv["s"]);
    // And each device with the daemon.
    let out = ok(&sign(
        &s,
        &s.d2,
        &["device-2", "server-a"],
        "device-2 and server-a",
    ));
    verify_independently(&out, "device-2 and server-a", &key);
}
