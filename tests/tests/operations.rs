//! Operations: the metrics endpoint and `cosignerctl status` after real ceremonies, and the
//! systemd watchdog fed only while the TPM answers. Real cosignerd processes, each with its
//! own swtpm, mutual TLS and sled.

mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{deny_by_daily_limit, http, ok, sample, scrape, setup_configured};
use cosigner_tests::{Daemon, Pki, free_port, test_dir};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_status_follow_keygen_and_sign() {
    let ports = [free_port(), free_port()];
    let metrics_addr = |who: &str| -> SocketAddr {
        let p = if who == "a" { ports[0] } else { ports[1] };
        format!("127.0.0.1:{p}").parse().unwrap()
    };
    let s = setup_configured(&[], |who| {
        format!("\n[metrics]\nlisten = \"{}\"\n", metrics_addr(who))
    })
    .await;
    let (ma, mb) = (metrics_addr("a"), metrics_addr("b"));

    let before = scrape(ma);
    assert_eq!(sample(&before, "cosigner_vaults"), 0.0, "{before}");
    assert_eq!(sample(&before, "cosigner_policy_bundle_loaded"), 1.0);
    let entries_before = sample(&before, "cosigner_history_entries");
    assert!(entries_before >= 1.0, "the start is recorded: {before}");
    // Starting sealed the identity once and the TPM latency is exported.
    assert!(
        sample(
            &before,
            r#"cosigner_tpm_operation_duration_seconds_count{op="seal",result="ok"}"#
        ) >= 1.0,
        "{before}"
    );

    let key = common::keygen(&s)["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ok(&common::sign(
        &s,
        &s.d1,
        &["device-1", "server-a"],
        "metrics",
    ));
    common::verify_independently(&out, "metrics", &key);
    // A denial: a daily limit of 1 wei, then a 1 ETH transaction (EIP-155's example).
    deny_by_daily_limit(&s);

    let after = scrape(ma);
    let after_b = scrape(mb);
    for text in [&after, &after_b] {
        assert_eq!(
            sample(
                text,
                r#"cosigner_ceremonies_total{kind="keygen",outcome="succeeded"}"#
            ),
            1.0,
            "{text}"
        );
        assert_eq!(
            sample(
                text,
                r#"cosigner_policy_decisions_total{kind="keygen",result="allow"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(
                text,
                r#"cosigner_ceremony_duration_seconds_count{kind="keygen",outcome="succeeded"}"#
            ),
            1.0
        );
        assert_eq!(sample(text, "cosigner_vaults"), 1.0);
        // Keygen sealed the share (and unsealed nothing yet on b).
        assert!(
            sample(
                text,
                r#"cosigner_tpm_operation_duration_seconds_count{op="seal",result="ok"}"#
            ) >= 2.0
        );
    }
    assert_eq!(
        sample(
            &after,
            r#"cosigner_ceremonies_total{kind="sign",outcome="succeeded"}"#
        ),
        1.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            r#"cosigner_ceremony_duration_seconds_sum{kind="sign",outcome="succeeded"}"#
        ) > 0.0
    );
    assert!(
        sample(
            &after,
            r#"cosigner_tpm_operation_duration_seconds_count{op="unseal",result="ok"}"#
        ) >= 1.0,
        "signing unsealed the share: {after}"
    );
    for (result, n) in [("allow", 1.0), ("deny", 1.0)] {
        let name = format!(r#"cosigner_policy_decisions_total{{kind="sign",result="{result}"}}"#);
        assert_eq!(sample(&after, &name), n, "{after}");
    }
    assert_eq!(
        sample(
            &after,
            r#"cosigner_ceremonies_total{kind="sign",outcome="denied"}"#
        ),
        1.0,
        "{after}"
    );
    // A denial never ran: no duration for it.
    assert!(
        !after
            .contains(r#"cosigner_ceremony_duration_seconds_count{kind="sign",outcome="denied"}"#)
    );
    // The reload (and the file watch, which may have seen the edit first) counted.
    assert!(
        sample(
            &after,
            r#"cosigner_policy_reloads_total{result="replaced"}"#
        ) + sample(
            &after,
            r#"cosigner_policy_reloads_total{result="unchanged"}"#
        ) >= 1.0,
        "{after}"
    );
    assert!(sample(&after, "cosigner_history_entries") >= entries_before + 4.0);
    assert!(sample(&after, "cosigner_history_disk_bytes") > 0.0);
    // a hosts the relay the ceremonies used.
    assert!(
        sample(
            &after,
            r#"cosigner_relay_envelopes_total{result="accepted"}"#
        ) > 0.0,
        "{after}"
    );
    assert!(sample(&after, "cosigner_relay_mailbox_depth_max") > 0.0);
    assert!(after.contains("# TYPE cosigner_relay_sessions gauge"));
    assert_eq!(sample(&after, "cosigner_ceremonies_running"), 0.0);

    // Nothing private in the exposition: no vault id, party id, key or identity.
    let status: Value =
        serde_json::from_slice(&s.a.ctl(&s.pki, "admin", &["status", "--json"]).stdout).unwrap();
    let d1 = s.d1.show().unwrap()["party_id"]
        .as_str()
        .unwrap()
        .to_string();
    for secretish in [
        "v1\"",
        status["party_id"].as_str().unwrap(),
        &d1,
        &key,
        "spiffe://",
        "device-1",
    ] {
        assert!(
            !after.contains(secretish),
            "{secretish} leaks into:\n{after}"
        );
    }

    // Only GET /metrics.
    assert_eq!(http(ma, "GET", "/").0, 404);
    assert_eq!(http(ma, "POST", "/metrics").0, 405);

    // Status, JSON: the vault with its epoch, threshold and slots, the last ceremonies,
    // the policy hash and the sealing backend.
    let v = &status["vaults"][0];
    assert_eq!(v["vault_id"], "v1");
    assert_eq!(v["epoch"], 0);
    assert_eq!(v["threshold"], 2);
    assert_eq!(v["committee"].as_array().unwrap().len(), 3);
    assert_eq!(v["public_key"], key.as_str());
    assert!(v["pending_epoch"].is_null() && v["previous_epoch"].is_null());
    assert_eq!(status["policy_hash"].as_str().unwrap().len(), 64);
    assert_eq!(status["sealing_backend"], "tpm");
    let recent = status["recent_ceremonies"].as_array().unwrap();
    assert!(recent.len() >= 2, "{status}");
    assert_eq!(recent[0]["kind"], "sign");
    assert_eq!(
        recent.last().unwrap()["kind"],
        "keygen",
        "newest first: {recent:?}"
    );
    assert!(recent.iter().all(|e| e["outcome"] != "started"));
    assert_eq!(status["rotations"].as_array().unwrap().len(), 0);

    // Status, table: the same facts, one row per vault and per ceremony.
    let o = s.a.ctl(&s.pki, "admin", &["status"]);
    assert!(o.status.success());
    let table = String::from_utf8_lossy(&o.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("v1 "))
        .unwrap_or_else(|| panic!("no vault row:\n{table}"));
    assert!(
        row.contains("2 of 3") && row.contains("NONE: export one"),
        "{table}"
    );
    assert!(table.contains(status["policy_hash"].as_str().unwrap()));
    assert!(table.contains("sealing    tpm (swtpm:"));
    assert!(table.contains("ROTATION: no schedule on this daemon"));
    assert!(
        table
            .lines()
            .any(|l| l.contains(" sign ") && l.contains(" succeeded ")),
        "{table}"
    );
}

/// Reads notifications until `want` arrives or `limit` passes.
fn wait_for(sock: &UnixDatagram, want: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == want)
        {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn watchdog_is_fed_only_while_the_tpm_answers() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    d.stop().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let notify = path.to_string_lossy().into_owned();
    d.respawn_with_env(
        &pki,
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "1000000")],
    )
    .await
    .unwrap();
    assert!(wait_for(&sock, "READY=1", Duration::from_secs(5)));
    assert!(
        wait_for(&sock, "WATCHDOG=1", Duration::from_secs(3)),
        "no keep-alive while healthy:\n{}",
        d.log_text()
    );
    assert!(wait_for(&sock, "WATCHDOG=1", Duration::from_secs(3)));

    // The TPM goes away: the probe fails, the keep-alives stop, the reason is logged.
    d.stop_tpm();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("watchdog keep-alive withheld") {
        assert!(
            Instant::now() < deadline,
            "no failure logged:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Drain what was sent before the failure, then expect silence for several intervals.
    while sock.recv(&mut [0u8; 4096]).is_ok() {}
    assert!(
        !wait_for(&sock, "WATCHDOG=1", Duration::from_millis(2500)),
        "a keep-alive was sent without a TPM:\n{}",
        d.log_text()
    );
    assert!(d.log_text().contains("the TPM did not answer a probe"));
}
