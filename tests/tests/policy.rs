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

fn sign_eth(s: &Setup, extra: &[&str]) -> std::process::Output {
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let mut args = vec![
        "sign",
        "--vault",
        "v1",
        "--eth-tx",
        ONE_ETHER_TX,
        "--signer",
        "server-a",
        "--signer",
        "server-b",
        "--daemon",
        &da,
        "--daemon",
        &db,
        "--json",
    ];
    args.extend_from_slice(extra);
    s.d1.run(&s.pki, &args)
}

fn policy_hash(d: &Daemon, s: &Setup) -> String {
    let o = d.ctl(&s.pki, "admin", &["status", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["policy_hash"].as_str().unwrap_or("").to_string()
}

/// Sets the ether daily limit (in wei) on chain 1.
async fn set_daily_limit(s: &Setup, wei: &str) {
    set_daily_limits(s, serde_json::json!({"ethereum:1:native": wei})).await
}

/// Rewrites the bundle's daily limits (asset -> base units) and waits until both daemons
/// use it.
async fn set_daily_limits(s: &Setup, limits: Value) {
    let bundle = s.bundle.clone();
    let data = std::fs::read_to_string(bundle.join("data.json")).unwrap();
    let mut v: Value = serde_json::from_str(&data).unwrap();
    v["development"]["daily_limit"] = limits;
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
            ONE_ETHER_TX,
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
    // The dry run shows the policy what the real gate shows it (one builder for both):
    // the requester's name from the committee and the epoch this daemon holds.
    assert_eq!(v["input"]["requester"]["name"], "device-1", "{v}");
    assert_eq!(v["input"]["request"]["epoch"], 0, "{v}");
    // The same for a keygen dry run: the requester named as the committee names it (the
    // dry run used to leave the name empty while the gate filled it in).
    let alice = cosigner_relay::PartyKeys::generate();
    let bob = cosigner_relay::PartyKeys::generate();
    let mut members = vec![alice.member("alice"), bob.member("bob")];
    members.sort_by_key(|m| m.id);
    let body = api::KeygenBody {
        vault_id: "v7".into(),
        scheme: api::Scheme::EcdsaSecp256k1 as i32,
        committee: Some(cosigner_relay::record::members_to_api(2, &members)),
        relay: None,
    }
    .encode_to_vec();
    let mut admin = api::cosigner_client::CosignerClient::new(
        s.pki.channel(s.a.addr, Some("admin")).await.unwrap(),
    );
    let r = admin
        .evaluate_policy(api::EvaluatePolicyRequest {
            kind: api::CeremonyKind::Keygen as i32,
            body,
            requester: alice.party_id().to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let input: Value = serde_json::from_str(&r.input_json).unwrap();
    assert_eq!(input["requester"]["name"], "alice", "{input}");
    assert_eq!(input["request"]["kind"], "keygen", "{input}");
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

/// A regtest payment from the vault's m/0 coin: `out` sat to an outside address, the rest
/// less a 1,000 sat fee back to m/0 as change, with the previous transaction included.
fn vault_psbt(keygen: &Value, prev_amount: u64, out: u64, tag: u8) -> (Vec<u8>, [u8; 32], String) {
    use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Fingerprint, Xpub};
    use bitcoin::hashes::Hash as _;
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    use bitcoin::{
        Amount, CompressedPublicKey, NetworkKind, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
        TxOut, absolute, transaction,
    };
    let secp = bitcoin::secp256k1::Secp256k1::verification_only();
    let root = Xpub {
        network: NetworkKind::Test,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key: bitcoin::secp256k1::PublicKey::from_slice(&unhex(
            keygen["public_key"].as_str().unwrap(),
        ))
        .unwrap(),
        chain_code: ChainCode::from(
            <[u8; 32]>::try_from(unhex(keygen["chain_code"].as_str().unwrap())).unwrap(),
        ),
    };
    let path: DerivationPath = "m/0".parse().unwrap();
    let m0 = root.derive_pub(&secp, &path).unwrap().public_key;
    let mine = ScriptBuf::new_p2wpkh(&CompressedPublicKey(m0).wpubkey_hash());
    let prev = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: bitcoin::Txid::from_byte_array([tag; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Default::default(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(prev_amount),
            script_pubkey: mine.clone(),
        }],
    };
    let outside = ScriptBuf::from_bytes(unhex("0014751e76e8199196d454941c45d1b3a323f1433bd6"));
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: prev.compute_txid(),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Default::default(),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(out),
                script_pubkey: outside,
            },
            TxOut {
                value: Amount::from_sat(prev_amount - out - 1_000),
                script_pubkey: mine.clone(),
            },
        ],
    };
    // The sighash computed here, independently of the daemons (rust-bitcoin's BIP-143).
    let sighash = SighashCache::new(&tx)
        .p2wpkh_signature_hash(
            0,
            &mine,
            Amount::from_sat(prev_amount),
            EcdsaSighashType::All,
        )
        .unwrap()
        .to_byte_array();
    let mut psbt = bitcoin::psbt::Psbt::from_unsigned_tx(tx).unwrap();
    psbt.inputs[0].non_witness_utxo = Some(prev);
    let origin = (root.fingerprint(), path);
    psbt.inputs[0].bip32_derivation.insert(m0, origin.clone());
    psbt.outputs[1].bip32_derivation.insert(m0, origin);
    (psbt.serialize(), sighash, hex(&m0.serialize()))
}

fn sign_psbt(s: &Setup, psbt: &[u8], path: &str) -> std::process::Output {
    sign_psbt_as(s, psbt, path, "regtest")
}

/// As `sign_psbt`, labelled with `network`.
fn sign_psbt_as(s: &Setup, psbt: &[u8], path: &str, network: &str) -> std::process::Output {
    use sha3::Digest as _;
    let name = hex(&sha3::Keccak256::digest(psbt)[..8]);
    let file = s.bundle.parent().unwrap().join(format!("pay-{name}.psbt"));
    std::fs::write(&file, psbt).unwrap();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    s.d1.run(
        &s.pki,
        &[
            "sign",
            "--vault",
            "v1",
            "--psbt",
            file.to_str().unwrap(),
            "--network",
            network,
            "--path",
            path,
            "--signer",
            "server-a",
            "--signer",
            "server-b",
            "--daemon",
            &da,
            "--daemon",
            &db,
            "--json",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_psbt_is_decoded_signed_for_its_vault_input_and_counted_without_change() {
    use secp256k1::{Message, PublicKey, Secp256k1, ecdsa::Signature};
    // The daemons bind vault v1 to regtest (every other vault: mainnet, the default).
    let s = setup_configured(&[], |_| {
        "[ceremonies.bitcoin_networks]\nv1 = \"regtest\"\n".to_string()
    })
    .await;
    let kg = keygen(&s);
    // 40,000 sat a day on regtest: a 30,000 payment with 19,000 change is under it only if
    // change is not counted as spent.
    set_daily_limits(&s, serde_json::json!({"bitcoin:regtest:native": "40000"})).await;

    let (psbt, sighash, m0) = vault_psbt(&kg, 50_000, 30_000, 1);
    let out = ok(&sign_psbt(&s, &psbt, "m/0"));
    assert_eq!(out["hash"].as_str().unwrap(), hex(&sighash));
    assert_eq!(out["public_key"].as_str().unwrap(), m0);
    let sig = Signature::from_der(&unhex(out["der"].as_str().unwrap())).unwrap();
    Secp256k1::verification_only()
        .verify_ecdsa(
            &Message::from_digest(sighash),
            &sig,
            &PublicKey::from_slice(&unhex(&m0)).unwrap(),
        )
        .expect("the signature verifies under the m/0 key for the BIP-143 sighash");
    let last = last_entry(&s.a, &s, "sign");
    assert_eq!(last["outcome"], "succeeded", "{last}");

    // Signing at another path than the input's key is refused before anything starts.
    let (psbt2, _, _) = vault_psbt(&kg, 50_000, 5_000, 2);
    let e = err(&sign_psbt(&s, &psbt2, "m/1"));
    assert!(e.contains("m/0") && e.contains("m/1"), "{e}");

    // A second 30,000 sat payment crosses the daily limit: denied with the reason.
    let (psbt3, _, _) = vault_psbt(&kg, 60_000, 30_000, 3);
    let e = err(&sign_psbt(&s, &psbt3, "m/0"));
    assert!(
        e.contains("PermissionDenied") && e.contains("bitcoin:regtest:native"),
        "{e}"
    );
    let last = last_entry(&s.a, &s, "sign");
    assert_eq!(last["outcome"], "denied", "{last}");

    // The network is a label no sighash covers: the same kind of PSBT sent as "testnet"
    // (whose limits are other) is refused by the vault's binding, before the policy.
    let (psbt4, _, _) = vault_psbt(&kg, 50_000, 1_000, 4);
    let e = err(&sign_psbt_as(&s, &psbt4, "m/0", "testnet"));
    assert!(
        e.contains("bound to \"regtest\"") && e.contains("\"testnet\""),
        "{e}"
    );
    let last = last_entry(&s.a, &s, "sign");
    assert_eq!(last["outcome"], "refused", "{last}");
}
