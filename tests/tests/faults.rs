//! Faults during ceremonies between real processes: a daemon SIGKILLed at each point of
//! keygen, sign and reshare (through its `COSIGNERD_TEST_KILL_AT` crash hook), and killed
//! between its certificate and promotion. The others stop with an error naming it, nobody
//! loses a usable share, every party ends at one epoch (directly or through `vault resolve`
//! and `party resolve` from the others' signed reports), and the next ceremony succeeds.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use cosigner_tests::{Daemon, Pki};
use serde_json::Value;

const KILL: &str = "COSIGNERD_TEST_KILL_AT";

/// Restarts server-b so that it kills itself at `point`.
async fn arm(s: &mut Setup, point: &str) {
    s.b.respawn_with_env(&s.pki, &[(KILL, point)])
        .await
        .unwrap();
}

/// Waits for server-b to have killed itself, then starts it again without the hook.
async fn b_died_and_restarts(s: &mut Setup, point: &str) {
    let status = s.b.exited(Duration::from_secs(60)).await.unwrap();
    let status = status.unwrap_or_else(|| panic!("server-b did not die at {point}"));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "server-b at {point}: {status:?}");
    assert!(s.b.log_text().contains("COSIGNERD_TEST_KILL_AT reached"));
    s.b.respawn(&s.pki).await.unwrap();
}

/// The failure names server-b, and server-a (if it took part) recorded the ceremony's
/// failure naming it.
fn names_server_b(o: &Output, a: Option<&Daemon>, pki: &Pki, point: &str) {
    let e = err(o);
    assert!(
        e.contains("server-b"),
        "{point}: device error does not name server-b: {e}"
    );
    let Some(a) = a else { return };
    let out = a.ctl(pki, "admin", &["history", "list", "--json", "--limit", "1"]);
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert!(
        matches!(
            last["outcome"].as_str(),
            Some("aborted" | "failed" | "in_doubt")
        ),
        "{point}: {last}"
    );
    assert!(
        last["error"].as_str().unwrap_or("").contains("server-b"),
        "{point}: server-a's record does not name server-b: {last}"
    );
}

/// Runs a ceremony command, bounding how long it may hang (a hang is the failure mode
/// this guards against, not a speed check).
fn bounded(f: impl FnOnce() -> Output) -> Output {
    let t = Instant::now();
    let o = tokio::task::block_in_place(f);
    assert!(t.elapsed() < Duration::from_secs(120), "the ceremony hung");
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn a_party_killed_in_each_keygen_round_stops_the_others_and_the_next_keygen_works() {
    let mut s = setup().await;
    for point in ["hello", "round-1", "round-2", "round-3", "ready"] {
        let vault = format!("k-{}", point.replace('-', ""));
        arm(&mut s, &format!("keygen:{point}")).await;
        let o = bounded(|| keygen_named(&s, &vault));
        b_died_and_restarts(&mut s, point).await;
        names_server_b(&o, Some(&s.a), &s.pki, point);
        // Killed before its READY was sent but after it was recorded, server-b's report
        // still completes the certificate if the others sent theirs: then everyone
        // promotes; otherwise every new party reported none and everyone discards.
        repair_all(&s, &vault);
        let e = epochs(&s, &vault);
        assert!(
            e == [None, None, None] || e == [Some(0), Some(0), Some(0)],
            "{point}: the parties disagree about vault {vault}: {e:?}"
        );
        // Before "ready" nobody recorded a commit. At "ready" it depends on whether
        // device-1 had sent its own READY before it saw server-b fail: either way every
        // party agrees.
        if point != "ready" {
            assert_eq!(e, [None, None, None], "{point}");
        }
    }
    // The next keygen succeeds and its vault signs.
    let v = ok(&keygen_named(&s, "v1"));
    let out = ok(&sign(&s, &s.d1, &["server-a", "server-b"], "after faults"));
    verify_independently(&out, "after faults", v["public_key"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_party_killed_in_each_sign_round_stops_the_others_and_keeps_its_share() {
    let mut s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    for point in ["hello", "round-1", "round-2", "round-3"] {
        arm(&mut s, &format!("sign:{point}")).await;
        let o = bounded(|| sign(&s, &s.d1, &["device-1", "server-b"], point));
        b_died_and_restarts(&mut s, point).await;
        names_server_b(&o, None, &s.pki, point);
        // The restarted daemon still signs with its sealed share.
        let msg = format!("after {point}");
        let out = ok(&sign(&s, &s.d1, &["device-1", "server-b"], &msg));
        verify_independently(&out, &msg, &key);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_party_killed_in_each_reshare_round_leaves_the_old_epoch_usable() {
    let mut s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    for point in ["hello", "round-1", "round-2", "round-3", "ready"] {
        arm(&mut s, &format!("reshare:{point}")).await;
        let o = bounded(|| refresh(&s));
        b_died_and_restarts(&mut s, point).await;
        names_server_b(&o, Some(&s.a), &s.pki, point);
        repair_all(&s, "v1");
        // Everyone is at one epoch (the old one, or the new one when server-b's recorded
        // READY completed the certificate) and signs there.
        let e = epochs(&s, "v1");
        assert!(
            e[0].is_some() && e.iter().all(|x| *x == e[0]),
            "{point}: {e:?}"
        );
        let msg = format!("after {point}");
        let out = ok(&sign(&s, &s.d1, &["server-a", "server-b"], &msg));
        verify_independently(&out, &msg, &key);
        assert_eq!(out["epoch"].as_u64(), e[0], "{point}");
    }
    // And the next reshare succeeds.
    let before = epochs(&s, "v1")[0].unwrap();
    let v = ok(&refresh(&s));
    assert_eq!(v["epoch"].as_u64(), Some(before + 1));
    let out = ok(&sign(
        &s,
        &s.d1,
        &["server-a", "server-b"],
        "after the faults",
    ));
    verify_independently(&out, "after the faults", &key);
}

const PROMOTE_RUNS: u64 = 3;

/// The relay runs inside server-a. Killing server-a after it recorded its certificate and
/// before it promoted also kills the relay, at the moment the other parties may or may not
/// have received the last READY. Every run ends committed or repairable: server-a finishes
/// its promotion at restart (its certificate is on disk), and a party left in doubt
/// promotes from server-a's signed report. Nobody ever discards a share the others use.
#[tokio::test(flavor = "multi_thread")]
async fn relay_host_killed_at_promote_commits_or_repairs_every_run() {
    let mut s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    let mut in_doubt_runs = 0;
    for run in 1..=PROMOTE_RUNS {
        s.a.respawn_with_env(&s.pki, &[(KILL, "reshare:promote")])
            .await
            .unwrap();
        let _ = bounded(|| refresh(&s));
        let status = s.a.exited(Duration::from_secs(60)).await.unwrap();
        assert!(
            status.is_some(),
            "run {run}: server-a did not die at promote"
        );
        s.a.respawn(&s.pki).await.unwrap();
        // server-a rolled its promotion forward at start.
        assert_eq!(
            daemon_state(&s.a, &s.pki, "v1").as_deref(),
            Some("active"),
            "run {run}"
        );
        assert_eq!(epochs(&s, "v1")[1], Some(run), "run {run}");
        if repair_all(&s, "v1") {
            in_doubt_runs += 1;
        }
        assert_eq!(epochs(&s, "v1"), [Some(run); 3], "run {run}");
        let msg = format!("run {run}");
        let out = ok(&sign(&s, &s.d1, &["device-1", "server-b"], &msg));
        verify_independently(&out, &msg, &key);
        assert_eq!(out["epoch"].as_u64(), Some(run));
    }
    eprintln!(
        "figure: relay host killed at promote: {PROMOTE_RUNS} runs, {in_doubt_runs} needed a resolve, all committed"
    );
}
