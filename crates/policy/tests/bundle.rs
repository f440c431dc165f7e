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
