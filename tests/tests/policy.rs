//! The signing policy through real daemons: a daily limit counted across restarts, denials
//! answered with their reasons and recorded, replayed requests and mismatched hashes
//! refused, and bundles reloaded (a broken one refused while the old one keeps deciding).

mod common;

use std::time::Duration;

use common::*;
use cosigner_api::v1 as api;
use cosigner_tests::Daemon;
use prost::Message as _;
use serde_json::Value;

/// EIP-155's example transaction: 1 ether to 0x3535...35 on chain 1.
const ONE_ETHER: &str =
    "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080";

fn sign_eth(s: &Setup, extra: &[&str]) -> std::process::Output {
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let mut args = vec![
        "sign", "--vault", "v1", "--eth-tx", ONE_ETHER, "--signer", "server-a", "--signer",
        "server-b", "--daemon", &da, "--daemon", &db, "--json",
    ];
    args.extend_from_slice(extra);
    s.d1.run(&s.pki, &args)
}

fn policy_hash(d: &Daemon, s: &Setup) -> String {
    let o = d.ctl(&s.pki, "admin", &["status", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["policy_hash"].as_str().unwrap_or("").to_string()
}

/// Rewrites the bundle's data.json (limit in wei) and waits until both daemons use it.
async fn set_daily_limit(s: &Setup, wei: &str) {
    let bundle = s.bundle.clone();
    let data = std::fs::read_to_string(bundle.join("data.json")).unwrap();
    let mut v: Value = serde_json::from_str(&data).unwrap();
    v["development"]["daily_limit"] = serde_json::json!({"native": wei});
    let before = (policy_hash(&s.a, s), policy_hash(&s.b, s));
    std::fs::write(bundle.join("data.json"), v.to_string()).unwrap();
    // The daemons watch the folder; a SIGHUP makes it immediate.
    for d in [&s.a, &s.b] {
        d.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    }
    for _ in 0..100 {
        if policy_hash(&s.a, s) != before.0 && policy_hash(&s.b, s) != before.1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemons did not load the new bundle");
}

fn last_entry(d: &Daemon, s: &Setup, kind: &str) -> Value {
    let o = d.ctl(
        &s.pki,
        "admin",
        &["history", "list", "--json", "--kind", kind, "--limit", "1"],
    );
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daily_limit_allows_then_denies_across_restarts() {
    let mut s = setup().await;
    keygen(&s);
    set_daily_limit(&s, "2000000000000000000").await;

    // 1 + 1 ether: allowed (exactly the limit).
    for _ in 0..2 {
        let out = ok(&sign_eth(&s, &[]));
        assert_eq!(out["epoch"], 0);
    }
    // The third crosses it: refused with the policy's reason, recorded as denied.
    let e = err(&sign_eth(&s, &[]));
    assert!(
        e.contains("PermissionDenied") && e.contains("daily limit"),
        "{e}"
    );
    let last = last_entry(&s.a, &s, "sign");
    assert_eq!(last["outcome"], "denied", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("daily limit"),
        "{last}"
    );
    assert_eq!(last["policy"]["decision"], "deny", "{last}");
    assert_eq!(
        last["policy"]["policy_hash"].as_str().unwrap(),
        policy_hash(&s.a, &s)
    );

    // After a restart the spending is still counted.
    tokio::task::block_in_place(|| s.a.stop()).unwrap();
    s.a.respawn(&s.pki).await.unwrap();
    let e = err(&sign_eth(&s, &[]));
    assert!(e.contains("daily limit"), "{e}");

    // A message is still signed: the limit is on ether.
    let out = ok(&sign(&s, &s.d1, &["server-a", "server-b"], "still fine"));
    assert_eq!(out["epoch"], 0);

    // A higher limit takes effect without a restart.
    set_daily_limit(&s, "10000000000000000000").await;
    ok(&sign_eth(&s, &[]));
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_requests_and_mismatched_hashes_are_refused() {
    let s = setup().await;
    keygen(&s);
    // A signed request, written out by the coordinator, then used.
    let req = s.d1.file.with_extension("sign-request.json");
    let reqs = req.to_string_lossy().into_owned();
    ok(&sign_eth(&s, &["--request-out", &reqs]));
    let j: Value = serde_json::from_slice(&std::fs::read(&req).unwrap()).unwrap();
    let hex = j["request"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let request = api::SignRequest::decode(bytes.as_slice()).unwrap();
    // Sent again, as is: the nonce was seen.
    let ch = s.pki.channel(s.a.addr, Some("device-1")).await.unwrap();
    let e = api::cosigner_client::CosignerClient::new(ch)
        .sign(request)
        .await
        .unwrap_err();
    assert!(matches!(e.code(), tonic::Code::AlreadyExists), "{e:?}");
    assert!(
        e.message().contains("nonce") || e.message().contains("session"),
        "{e:?}"
    );

    // A hash that is not the payload's.
    let wrong = "00".repeat(32);
    let e = err(&sign_eth(&s, &["--expected-hash", &wrong]));
    assert!(e.contains("expected_hashes differ"), "{e}");

    // A raw hash is blind signing: the development policy refuses it (a device would not
    // even send one, so ask the daemon's dry run).
    let requester = s.d1.show().unwrap()["party_id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = s.a.ctl(
        &s.pki,
        "admin",
        &[
            "policy",
            "evaluate",
            "--vault",
            "v1",
            "--requester",
            &requester,
            "--eth-tx",
            ONE_ETHER,
            "--show-input",
        ],
    );
    let v = ok(&o);
    assert_eq!(v["decision"], "allow", "{v}");
    assert_eq!(
        v["input"]["payload"]["transfers"][0]["amount"],
        "1000000000000000000"
    );
    assert_eq!(v["input"]["payload"]["network"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_bundle_is_refused_and_the_old_one_keeps_deciding() {
    let s = setup().await;
    keygen(&s);
    let before = policy_hash(&s.a, &s);
    assert_eq!(before.len(), 64);
    std::fs::write(s.bundle.join("broken.rego"), "package cosigner\nallow if {").unwrap();
    let o = s.a.ctl(&s.pki, "admin", &["policy", "reload"]);
    assert!(!o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["replaced"], false);
    assert!(v["error"].as_str().unwrap().contains("broken.rego"), "{v}");
    assert_eq!(policy_hash(&s.a, &s), before);
    let r = last_entry(&s.a, &s, "policy_reload");
    assert_eq!(r["outcome"], "failed", "{r}");
    // The old bundle still decides.
    ok(&sign(&s, &s.d1, &["server-a", "server-b"], "still allowed"));

    // A bundle whose own test fails is refused too.
    std::fs::write(
        s.bundle.join("broken.rego"),
        "package cosigner_extra_test\nimport rego.v1\ntest_fails if false\n",
    )
    .unwrap();
    std::fs::rename(
        s.bundle.join("broken.rego"),
        s.bundle.join("extra_test.rego"),
    )
    .unwrap();
    let o = s.a.ctl(&s.pki, "admin", &["policy", "reload"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("test_fails"), "{v}");
    assert_eq!(policy_hash(&s.a, &s), before);

    // Fixed: it takes effect without a restart.
    std::fs::remove_file(s.bundle.join("extra_test.rego")).unwrap();
    std::fs::write(s.bundle.join("extra.rego"), "package cosigner\nimport rego.v1\ndeny contains \"frozen\" if input.request.kind == \"sign\"\n").unwrap();
    let o = s.a.ctl(&s.pki, "admin", &["policy", "reload"]);
    let v = ok(&o);
    assert_eq!(v["replaced"], true, "{v}");
    let e = err(&sign(&s, &s.d1, &["server-a", "server-b"], "now frozen"));
    assert!(e.contains("frozen"), "{e}");
}
