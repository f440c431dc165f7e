//! Vault ceremonies between real processes: two cosignerd (each with its own swtpm and
//! embedded relay) and device parties (`cosignerctl party`), over mutual TLS on loopback.
//! Every signature is checked with libsecp256k1 (the `secp256k1` crate), an implementation
//! independent of the engine's k256.

use std::process::Output;

use cosigner_tests::{Daemon, Party, Pki, test_dir};
use serde_json::Value;

pub struct Setup {
    pub _tmp: tempfile::TempDir,
    pub pki: Pki,
    pub a: Daemon,
    pub b: Daemon,
    pub d1: Party,
    pub d2: Party,
}

fn ok(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

fn err(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn setup() -> Setup {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let d1 = Party::init(&tmp.path().join("devices"), "device-1").unwrap();
    let d2 = Party::init(&tmp.path().join("devices"), "device-2").unwrap();
    let allowed = format!(
        "[ceremonies]\nallowed_requesters = [\"{}\", \"{}\"]\nround_timeout_secs = 5\n",
        d1.show().unwrap()["party_id"].as_str().unwrap(),
        d2.show().unwrap()["party_id"].as_str().unwrap()
    );
    let a = Daemon::start_with(&tmp.path().join("a"), &pki, "", &allowed)
        .await
        .unwrap();
    let b = Daemon::start_with(&tmp.path().join("b"), &pki, "", &allowed)
        .await
        .unwrap();
    Setup {
        _tmp: tmp,
        pki,
        a,
        b,
        d1,
        d2,
    }
}

fn keygen(s: &Setup) -> Value {
    let a = s.a.member_spec(&s.pki, "server-a").unwrap();
    let b = s.b.member_spec(&s.pki, "server-b").unwrap();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    ok(&s.d1.run(
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
            "--json",
        ],
    ))
}

fn sign(s: &Setup, who: &Party, signers: &[&str], message: &str) -> Output {
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let mut args = vec![
        "sign",
        "--vault",
        "v1",
        "--message",
        message,
        "--daemon",
        &da,
        "--daemon",
        &db,
        "--json",
    ];
    for x in signers {
        args.push("--signer");
        args.push(x);
    }
    who.run(&s.pki, &args)
}

/// Checks a `party sign --json` output with libsecp256k1: the signature verifies under the
/// printed key for the EIP-191 hash of `message`, and recovers that key.
fn verify_independently(out: &Value, message: &str, expected_key: &str) {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
    use secp256k1::{Message, PublicKey, Secp256k1};
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    assert_eq!(out["public_key"].as_str().unwrap(), expected_key);
    // The hash is recomputed here, not taken from the output.
    use sha3::Digest;
    let mut h = sha3::Keccak256::new();
    h.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    h.update(message.as_bytes());
    let hash: [u8; 32] = h.finalize().into();
    assert_eq!(out["hash"].as_str().unwrap(), hex(&hash));
    let mut rs = unhex(out["r"].as_str().unwrap());
    rs.extend(unhex(out["s"].as_str().unwrap()));
    let secp = Secp256k1::verification_only();
    let msg = Message::from_digest(hash);
    let key = PublicKey::from_slice(&unhex(expected_key)).unwrap();
    let sig = Signature::from_compact(&rs).unwrap();
    secp.verify_ecdsa(&msg, &sig, &key)
        .expect("libsecp256k1 verifies the signature");
    let mut normalized = sig;
    normalized.normalize_s();
    assert_eq!(normalized, sig, "s is low");
    let rec = RecoverableSignature::from_compact(
        &rs,
        RecoveryId::from_i32(out["recovery_id"].as_i64().unwrap() as i32).unwrap(),
    )
    .unwrap();
    assert_eq!(secp.recover_ecdsa(&msg, &rec).unwrap(), key);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn history_kinds(d: &Daemon, pki: &Pki) -> Vec<(String, String)> {
    let o = d.ctl(
        pki,
        "admin",
        &["history", "list", "--json", "--limit", "1000"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap_or("").to_string(),
                v["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

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

/// Starts `party reshare` on d1 (2-of-3 -> 3-of-4 adding device-2) and lets device-2 join
/// from the request file. Returns both outputs.
async fn reshare_adding_device_2(s: &Setup) -> (Output, Output) {
    let req = s.d1.file.with_extension("request.json");
    let _ = std::fs::remove_file(&req);
    let add = s.d2.member_spec().unwrap();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let reqs = req.to_string_lossy().into_owned();
    let coordinator = s
        .d1
        .spawn(
            &s.pki,
            &[
                "reshare", "--vault", "v1", "--threshold", "3", "--dealer", "device-1", "--dealer",
                "server-a", "--add", &add, "--daemon", &da, "--daemon", &db, "--request-out",
                &reqs, "--json",
            ],
        )
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !req.exists() {
        assert!(std::time::Instant::now() < deadline, "no request file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let joiner = s.d2.spawn(&s.pki, &["join", "--request", &reqs, "--json"]).unwrap();
    let (c, j) = tokio::task::block_in_place(|| {
        (coordinator.wait_with_output().unwrap(), joiner.wait_with_output().unwrap())
    });
    (c, j)
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
    let out = ok(&sign(&s, &s.d2, &["device-2", "server-a", "server-b"], "after reshare"));
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
