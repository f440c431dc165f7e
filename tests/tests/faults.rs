//! Faults during ceremonies between real processes: a daemon SIGKILLed at each point of
//! keygen, sign and reshare (through its `COSIGNERD_TEST_KILL_AT` crash hook), and killed
//! between READY and promotion. The others stop with an error naming it, nobody loses a
//! usable share, the next ceremony succeeds, and the repair path (`vault resolve`) works.

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
        matches!(last["outcome"].as_str(), Some("aborted" | "failed")),
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

fn slots(d: &Daemon, pki: &Pki, vault: &str) -> Option<Value> {
    let o = d.ctl(pki, "admin", &["vault", "show", vault]);
    o.status.success().then(|| ok(&o)["slots"].clone())
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
        // Nobody kept a share of the failed vault; server-b may hold a pending one that
        // was never confirmed, which an operator discards.
        assert!(slots(&s.a, &s.pki, &vault).is_none(), "{point}");
        let show = s.d1.show().unwrap();
        assert!(
            show["vaults"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["epoch"].is_null()),
            "{point}: {show}"
        );
        if let Some(sl) = slots(&s.b, &s.pki, &vault) {
            assert_eq!(sl["current_epoch"], 0);
            assert!(sl["pending_epoch"].is_number(), "{point}: {sl}");
            ok(&s
                .b
                .ctl(&s.pki, "admin", &["vault", "resolve", &vault, "--discard"]));
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

fn refresh(s: &Setup) -> Output {
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    s.d1.run(
        &s.pki,
        &[
            "reshare", "--vault", "v1", "--dealer", "device-1", "--dealer", "server-a", "--daemon",
            &da, "--daemon", &db, "--json",
        ],
    )
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
        if slots(&s.b, &s.pki, "v1").is_some_and(|sl| sl["pending_epoch"].is_number()) {
            ok(&s
                .b
                .ctl(&s.pki, "admin", &["vault", "resolve", "v1", "--discard"]));
        }
        // Everyone is still at epoch 0 and signs there.
        for d in [&s.a, &s.b] {
            let sl = slots(d, &s.pki, "v1").unwrap();
            assert_eq!(sl["current_epoch"], 0, "{point}: {sl}");
            assert!(sl["pending_epoch"].is_null(), "{point}: {sl}");
        }
        let msg = format!("after {point}");
        let out = ok(&sign(&s, &s.d1, &["server-a", "server-b"], &msg));
        verify_independently(&out, &msg, &key);
        assert_eq!(out["epoch"], 0);
    }
    // And the next reshare succeeds.
    let v = ok(&refresh(&s));
    assert_eq!(v["epoch"], 1);
    let out = ok(&sign(&s, &s.d1, &["server-a", "server-b"], "epoch 1"));
    verify_independently(&out, "epoch 1", &key);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_between_ready_and_promotion_then_repaired() {
    let mut s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    arm(&mut s, "reshare:promote").await;
    // Every new party said READY, so the others promote; server-b dies before it does.
    let o = bounded(|| refresh(&s));
    b_died_and_restarts(&mut s, "promote").await;
    let _ = o; // the device may or may not have seen server-b's answer before it died
    let a = slots(&s.a, &s.pki, "v1").unwrap();
    assert_eq!(a["current_epoch"], 1, "{a}");
    let b = slots(&s.b, &s.pki, "v1").unwrap();
    assert_eq!(b["current_epoch"], 0, "{b}");
    assert_eq!(b["pending_epoch"], 1, "{b}");

    // At least t (2) parties sign at one epoch: device-1 and server-a at epoch 1.
    let out = ok(&sign(&s, &s.d1, &["device-1", "server-a"], "t at epoch 1"));
    verify_independently(&out, "t at epoch 1", &key);
    assert_eq!(out["epoch"], 1);

    // server-b refuses with the way to repair it...
    let e = err(&sign(&s, &s.d1, &["device-1", "server-b"], "before repair"));
    assert!(e.contains("resolve --promote"), "{e}");
    // ...which works.
    let v = ok(&s
        .b
        .ctl(&s.pki, "admin", &["vault", "resolve", "v1", "--promote"]));
    assert_eq!(v["epoch"], 1);
    let out = ok(&sign(&s, &s.d1, &["device-1", "server-b"], "after repair"));
    verify_independently(&out, "after repair", &key);
    assert_eq!(out["epoch"], 1);
}
