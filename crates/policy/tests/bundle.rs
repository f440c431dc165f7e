//! Policy bundles through regorus: the shipped examples load and pass their own tests, a
//! broken or failing bundle is refused naming the problem, decisions default to deny.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cosigner_policy::input::{Facts, Request, WindowFacts, document};
use cosigner_policy::{Bundle, BundleError, Payload, Verdict, decode};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/policies")
        .join(name)
}

fn facts<'a>(
    payload: &'a cosigner_policy::Decoded,
    requester: [u8; 32],
    spent_24h: &str,
) -> Facts<'a> {
    let mut spent = std::collections::BTreeMap::new();
    spent.insert("ethereum:1:native".to_string(), spent_24h.to_string());
    Facts {
        request: Request {
            kind: "sign".into(),
            vault_id: "treasury".into(),
            epoch: 0,
            derivation_path: String::new(),
            parties: vec![],
            committee: None,
            refresh: false,
            scheduled: false,
        },
        requester_id: requester,
        requester_name: "ops".into(),
        tls_identity: "spiffe://cosigner/party/ops".into(),
        vault: None,
        payload: Some(payload),
        windows: vec![(
            "24h",
            WindowFacts {
                requests: 1,
                signatures: 1,
                spent,
            },
        )],
        last_reshare_at_ms: None,
        now_ms: 1_800_000_000_000,
    }
}

fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn every_example_bundle_loads_and_passes_its_tests() {
    let dir = example("");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    for name in &names {
        let b = Bundle::load(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(b.tests() > 0, "{name} has no tests");
        assert_eq!(b.hash().len(), 64);
    }
}

#[test]
fn the_treasury_allows_an_allowlisted_transfer_and_denies_over_the_daily_limit() {
    let dir = tempfile::tempdir().unwrap();
    copy_bundle(&example("treasury"), dir.path());
    let requester = [0xab; 32];
    let data = std::fs::read_to_string(dir.path().join("data.json")).unwrap();
    let hexid: String = requester.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        dir.path().join("data.json"),
        data.replace(
            "\"requesters\": {}",
            &format!("\"requesters\": {{\"{hexid}\": \"ops\"}}"),
        ),
    )
    .unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    // EIP-155 example: 1 ether to 0x3535..35, not on the allowlist.
    let rlp = alloy_primitives::hex::decode("ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080").unwrap();
    let tx = decode(&Payload::Ethereum(&rlp), None).unwrap();
    let d = b.decide(document(&facts(&tx, requester, "0")));
    match &d.verdict {
        Verdict::Deny(r) => assert!(
            r.iter().any(|m| m.contains("not on the allowlist")),
            "{r:?}"
        ),
        v => panic!("{v:?}"),
    }
    assert_eq!(d.bundle_hash, b.hash());

    // Allowlist 0x3535..35: allowed with nothing spent; 19.5 ether already spent today
    // plus this 1 ether crosses the 20 ether daily limit.
    let data = std::fs::read_to_string(dir.path().join("data.json")).unwrap();
    std::fs::write(
        dir.path().join("data.json"),
        data.replace(
            "\"allowlist\": {",
            "\"allowlist\": {\"0x3535353535353535353535353535353535353535\": \"test\",",
        ),
    )
    .unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    assert_eq!(
        b.decide(document(&facts(&tx, requester, "0"))).verdict,
        Verdict::Allow
    );
    let over = b.decide(document(&facts(&tx, requester, "19500000000000000000")));
    match over.verdict {
        Verdict::Deny(r) => assert!(r.iter().any(|m| m.contains("daily limit")), "{r:?}"),
        v => panic!("{v:?}"),
    }
    // Someone else asking is denied.
    let other = b.decide(document(&facts(&tx, [1; 32], "0")));
    assert!(matches!(other.verdict, Verdict::Deny(_)));
}

#[test]
fn broken_and_failing_bundles_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.rego"), "package cosigner\nallow if {").unwrap();
    let e = Bundle::load(dir.path()).unwrap_err();
    assert!(
        matches!(&e, BundleError::Compile { file, .. } if file == "p.rego"),
        "{e}"
    );

    std::fs::write(
        dir.path().join("p.rego"),
        "package cosigner\nimport rego.v1\nallow if input.ok\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package cosigner_test\nimport rego.v1\ntest_ok_allows if data.cosigner.allow with input as {\"ok\": false}\n",
    )
    .unwrap();
    let e = Bundle::load(dir.path()).unwrap_err();
    assert!(
        matches!(&e, BundleError::TestFailed { test, .. } if test == "test_ok_allows"),
        "{e}"
    );

    std::fs::write(dir.path().join("data.json"), "{not json").unwrap();
    assert!(Bundle::load(dir.path()).is_err());

    let empty = tempfile::tempdir().unwrap();
    assert!(Bundle::load(empty.path()).is_err());
}

#[test]
fn default_deny_and_errors_deny() {
    let dir = tempfile::tempdir().unwrap();
    // A bundle that defines nothing allows nothing.
    std::fs::write(
        dir.path().join("p.rego"),
        "package cosigner\nimport rego.v1\nx := 1\n",
    )
    .unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    let msg = decode(&Payload::PersonalMessage(b"hi"), None).unwrap();
    let d = b.decide(document(&facts(&msg, [0; 32], "0")));
    assert!(
        matches!(d.verdict, Verdict::Deny(ref r) if r[0].contains("default deny")),
        "{d:?}"
    );
    // allow of the wrong type is an evaluation error, which denies.
    std::fs::write(
        dir.path().join("p.rego"),
        "package cosigner\nimport rego.v1\nallow := \"yes\"\n",
    )
    .unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    let d = b.decide(document(&facts(&msg, [0; 32], "0")));
    assert!(
        matches!(d.verdict, Verdict::Deny(ref r) if r[0].contains("policy evaluation failed")),
        "{d:?}"
    );
    // Approvals are refused until an approval flow exists.
    std::fs::write(
        dir.path().join("p.rego"),
        "package cosigner\nimport rego.v1\nallow := true\napprovals_required := 2\n",
    )
    .unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    let d = b.decide(document(&facts(&msg, [0; 32], "0")));
    assert_eq!(d.verdict, Verdict::NeedsApproval(2));
}

/// The reasons a shipped bundle (copied, with `edit` applied to its data) gives for a
/// request signing `payload`, decoded by the daemon's own decoder.
fn denied_by(bundle: &str, edit: impl Fn(String) -> String, payload: &Payload<'_>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    copy_bundle(&example(bundle), dir.path());
    let data = std::fs::read_to_string(dir.path().join("data.json")).unwrap();
    std::fs::write(dir.path().join("data.json"), edit(data)).unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    let decoded = decode(payload, None).unwrap();
    match b
        .decide(document(&facts(&decoded, [0xab; 32], "0")))
        .verdict
    {
        Verdict::Deny(r) => r,
        v => panic!("{bundle}: {v:?}"),
    }
}

/// The input document for signing `d`, on a Wednesday at noon UTC (inside the hot
/// wallet's business hours: the payloads, not the clock, are under test).
fn at_noon(d: &cosigner_policy::Decoded) -> serde_json::Value {
    let mut doc = document(&facts(d, [0xab; 32], "0"));
    doc["now_ms"] = serde_json::json!(1_795_003_200_000i64);
    doc
}

/// Calldata for `selector(address spender, uint256 amount)` with spender 0xaa..aa.
fn spender_call(selector: &str, amount: [u8; 32]) -> Vec<u8> {
    let mut data = alloy_primitives::hex::decode(selector).unwrap();
    data.extend([0u8; 12]);
    data.extend([0xaa; 20]);
    data.extend(amount);
    data
}

/// An EIP-1559 call on Base (chain 8453) to `to` with `data`.
fn base_call(to: alloy_primitives::Address, data: Vec<u8>) -> Vec<u8> {
    use alloy_consensus::{SignableTransaction, TxEip1559};
    TxEip1559 {
        chain_id: 8453,
        nonce: 1,
        gas_limit: 80_000,
        to: to.into(),
        value: alloy_primitives::U256::ZERO,
        input: data.into(),
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 1_000_000,
        access_list: Default::default(),
    }
    .encoded_for_signing()
}

#[test]
fn value_moves_no_limit_sees_are_refused_by_the_shipped_bundles() {
    use alloy_primitives::address;
    let same = |d: String| d;
    let usdc = address!("833589fcd6edb6e08f4c7c32d4f71b54bda02913");

    // approve(spender, 2^256-1): an unlimited allowance.
    let approve = spender_call("095ea7b3", [0xff; 32]);
    let r = denied_by(
        "hot-wallet",
        same,
        &Payload::Ethereum(&base_call(usdc, approve)),
    );
    assert!(r.iter().any(|m| m.contains("ERC-20 approve")), "{r:?}");

    // increaseAllowance(spender, amount): not an ERC-20 call the decoder knows.
    let increase = spender_call("39509351", [0xff; 32]);
    let r = denied_by(
        "hot-wallet",
        same,
        &Payload::Ethereum(&base_call(usdc, increase)),
    );
    assert!(r.iter().any(|m| m.contains("cannot decode")), "{r:?}");

    // An EIP-2612 permit for USDC, and a Safe transaction, as typed data.
    let permit = r#"{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],"Permit":[{"name":"owner","type":"address"},{"name":"spender","type":"address"},{"name":"value","type":"uint256"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"}]},"primaryType":"Permit","domain":{"name":"USD Coin","version":"2","chainId":8453,"verifyingContract":"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"},"message":{"owner":"0x1111111111111111111111111111111111111111","spender":"0xaAaAaAaaAaAaAaaAaAAAAAAAAaaaAaAaAaaAaaAa","value":"115792089237316195423570985008687907853269984665640564039457584007913129639935","nonce":"0","deadline":"99999999999"}}"#;
    let r = denied_by("hot-wallet", same, &Payload::TypedData(permit));
    assert!(r.iter().any(|m| m.contains("EIP-712 Permit")), "{r:?}");
    let safe_tx = r#"{"types":{"EIP712Domain":[{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],"SafeTx":[{"name":"to","type":"address"},{"name":"value","type":"uint256"},{"name":"data","type":"bytes"},{"name":"operation","type":"uint8"},{"name":"safeTxGas","type":"uint256"},{"name":"baseGas","type":"uint256"},{"name":"gasPrice","type":"uint256"},{"name":"gasToken","type":"address"},{"name":"refundReceiver","type":"address"},{"name":"nonce","type":"uint256"}]},"primaryType":"SafeTx","domain":{"chainId":1,"verifyingContract":"0x2222222222222222222222222222222222222222"},"message":{"to":"0x3333333333333333333333333333333333333333","value":"1000000000000000000000","data":"0x","operation":0,"safeTxGas":"0","baseGas":"0","gasPrice":"0","gasToken":"0x0000000000000000000000000000000000000000","refundReceiver":"0x0000000000000000000000000000000000000000","nonce":"7"}}"#;
    let r = denied_by("organization", same, &Payload::TypedData(safe_tx));
    assert!(r.iter().any(|m| m.contains("EIP-712 SafeTx")), "{r:?}");
    let r = denied_by("hot-wallet", same, &Payload::TypedData(safe_tx));
    assert!(r.iter().any(|m| m.contains("EIP-712 SafeTx")), "{r:?}");

    // EIP-3009: a USDC transfer signed as typed data, under a name the token chose.
    let auth = r#"{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],"TransferWithAuthorization":[{"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"},{"name":"validAfter","type":"uint256"},{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"}]},"primaryType":"TransferWithAuthorization","domain":{"name":"USD Coin","version":"2","chainId":8453,"verifyingContract":"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"},"message":{"from":"0x1111111111111111111111111111111111111111","to":"0xaAaAaAaaAaAaAaaAaAAAAAAAAaaaAaAaAaaAaaAa","value":"5000000000","validAfter":"0","validBefore":"99999999999","nonce":"0x0000000000000000000000000000000000000000000000000000000000000001"}}"#;
    let r = denied_by("hot-wallet", same, &Payload::TypedData(auth));
    assert!(
        r.iter().any(|m| m.contains("TransferWithAuthorization")),
        "{r:?}"
    );
    // The same under a name no list holds: the token's own contract still refuses it.
    let renamed = auth.replace("TransferWithAuthorization", "Voucher");
    let r = denied_by("hot-wallet", same, &Payload::TypedData(&renamed));
    assert!(r.iter().any(|m| m.contains("EIP-712 Voucher")), "{r:?}");

    // personal_sign of a 32-byte hash (a safeTxHash): blind signing.
    let r = denied_by(
        "organization",
        |d| d,
        &Payload::PersonalMessage(&[0x5a; 32]),
    );
    assert!(r.iter().any(|m| m.contains("32 bytes")), "{r:?}");
    let r = denied_by("hot-wallet", same, &Payload::PersonalMessage(&[0x5a; 32]));
    assert!(r.iter().any(|m| m.contains("32 bytes")), "{r:?}");
}

#[test]
fn listed_spenders_contracts_and_typed_data_pass_the_hot_wallet() {
    use alloy_primitives::address;
    let dir = tempfile::tempdir().unwrap();
    copy_bundle(&example("hot-wallet"), dir.path());
    let data = std::fs::read_to_string(dir.path().join("data.json"))
        .unwrap()
        .replace(
            "\"spenders\": {}",
            "\"spenders\": {\"0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": \"router\"}",
        );
    std::fs::write(dir.path().join("data.json"), data).unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    let usdc = address!("833589fcd6edb6e08f4c7c32d4f71b54bda02913");
    let mut one = [0u8; 32];
    one[31] = 1;
    let approve = spender_call("095ea7b3", one);
    let rlp = base_call(usdc, approve);
    let d = decode(&Payload::Ethereum(&rlp), None).unwrap();
    let v = b.decide(at_noon(&d)).verdict;
    assert_eq!(v, Verdict::Allow, "an approve of a listed spender");
    // A message that is not a hash is still signed.
    let d = decode(&Payload::PersonalMessage(b"log in to example.com"), None).unwrap();
    let v = b.decide(at_noon(&d)).verdict;
    assert_eq!(v, Verdict::Allow);
}
