//! Decode + evaluate for an ERC-20 transfer against a treasury-style bundle with a
//! 1,000-address allowlist, as the daemon does per sign request; beside regorus alone
//! evaluating the same rules on a prepared input (the raw library), in the same run.
//! Prints percentiles. `cargo bench -p cosigner-policy --bench policy`
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address, U256, address};
use cosigner_policy::input::{Facts, Request, WindowFacts, document};
use cosigner_policy::{Bundle, Payload, Verdict, decode};

const N: usize = 20_000;

fn pct(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    (at(0.5), at(0.95), at(0.99))
}

fn make_facts(d: &cosigner_policy::Decoded, requester: [u8; 32]) -> Facts<'_> {
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
        payload: Some(d),
        windows: ["1h", "24h", "7d"]
            .into_iter()
            .map(|w| {
                (
                    w,
                    WindowFacts {
                        requests: 10,
                        signatures: 9,
                        spent: Default::default(),
                    },
                )
            })
            .collect(),
        last_reshare_at_ms: None,
        now_ms: 1_795_003_200_000,
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let treasury =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policies/treasury");
    std::fs::copy(treasury.join("policy.rego"), dir.path().join("policy.rego")).expect("copy");
    let recipient: Address = address!("1111111111111111111111111111111111111111");
    let mut allow = serde_json::Map::new();
    for i in 0..999u32 {
        allow.insert(
            format!("0x{:040x}", 0x1000_0000u64 + u64::from(i)),
            "vendor".into(),
        );
    }
    allow.insert(
        "0x1111111111111111111111111111111111111111".into(),
        "payroll".into(),
    );
    let requester = [0xab_u8; 32];
    let rid: String = requester.iter().map(|b| format!("{b:02x}")).collect();
    let data = serde_json::json!({"treasury": {
        "requesters": {rid: "ops"},
        "allowlist": allow,
        "limits": {"ethereum:1:0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48": {"per_transaction": "50000000000", "daily": "100000000000"}},
    }});
    std::fs::write(dir.path().join("data.json"), data.to_string()).expect("data");
    let bundle = Bundle::load(dir.path()).expect("bundle");

    let usdc = address!("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");
    let mut calldata = vec![0xa9, 0x05, 0x9c, 0xbb];
    calldata.extend([0u8; 12]);
    calldata.extend(recipient.as_slice());
    calldata.extend(U256::from(2_500_000u64).to_be_bytes::<32>());
    let rlp = TxEip1559 {
        chain_id: 1,
        nonce: 7,
        gas_limit: 65_000,
        to: usdc.into(),
        value: U256::ZERO,
        input: calldata.into(),
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        access_list: Default::default(),
    }
    .encoded_for_signing();

    // Warm up and check the decision is what we think.
    let d = decode(&Payload::Ethereum(&rlp), None).expect("decode");
    assert_eq!(
        bundle.decide(document(&make_facts(&d, requester))).verdict,
        Verdict::Allow
    );

    let (mut full, mut dec, mut eval, mut raw) = (vec![], vec![], vec![], vec![]);
    let (mut only_deny, mut only_allow) = (vec![], vec![]);
    let doc = document(&make_facts(&d, requester));
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(
            "policy.rego".into(),
            std::fs::read_to_string(dir.path().join("policy.rego")).expect("read"),
        )
        .expect("policy");
    engine
        .add_data(regorus::Value::from_json_str(&data.to_string()).expect("data"))
        .expect("add");
    let raw_input = regorus::Value::from_json_str(&doc.to_string()).expect("input");
    for _ in 0..N {
        let t = Instant::now();
        let d = decode(&Payload::Ethereum(&rlp), None).expect("decode");
        let t1 = Instant::now();
        let doc = document(&make_facts(&d, requester));
        let v = bundle.decide(doc);
        let t2 = Instant::now();
        std::hint::black_box(v);
        full.push((t2 - t).as_secs_f64() * 1e6);
        dec.push((t1 - t).as_secs_f64() * 1e6);
        eval.push((t2 - t1).as_secs_f64() * 1e6);

        let t = Instant::now();
        engine.set_input(raw_input.clone());
        let a = engine.eval_rule("data.cosigner.deny".into()).expect("deny");
        let b = engine
            .eval_rule("data.cosigner.allow".into())
            .expect("allow");
        std::hint::black_box((a, b));
        raw.push(t.elapsed().as_secs_f64() * 1e6);

        let t = Instant::now();
        engine.set_input(raw_input.clone());
        std::hint::black_box(engine.eval_rule("data.cosigner.deny".into()).expect("deny"));
        only_deny.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        engine.set_input(raw_input.clone());
        std::hint::black_box(
            engine
                .eval_rule("data.cosigner.allow".into())
                .expect("allow"),
        );
        only_allow.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // Where the time outside regorus goes: building the document, converting it.
    let (mut t_doc, mut t_conv) = (vec![], vec![]);
    for _ in 0..N {
        let t = Instant::now();
        let doc = document(&make_facts(&d, requester));
        let t1 = Instant::now();
        let v = regorus::Value::from(doc);
        let t2 = Instant::now();
        std::hint::black_box(v);
        t_doc.push((t1 - t).as_secs_f64() * 1e6);
        t_conv.push((t2 - t1).as_secs_f64() * 1e6);
    }
    // regorus's register VM (RVM) on the same bundle and input, for comparison only: the
    // daemon decides with the interpreter, because a bundle's own `test_` rules use
    // `with`, which the RVM compiler does not support, so they could not vouch for it.
    let mut rvm_t = vec![];
    {
        let entry: regorus::Rc<str> = "data.cosigner.deny".into();
        let compiled = engine.compile_with_entrypoint(&entry).expect("compile");
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
            &compiled,
            &["data.cosigner.deny", "data.cosigner.allow"],
        )
        .expect("rvm program");
        let mut vm = regorus::rvm::vm::RegoVM::new_with_policy(compiled.clone());
        vm.load_program(program);
        vm.set_data(regorus::Value::from_json_str(&data.to_string()).expect("data"))
            .expect("data");
        for _ in 0..N {
            let t = Instant::now();
            vm.set_input(raw_input.clone());
            let a = vm
                .execute_entry_point_by_name("data.cosigner.deny")
                .expect("deny");
            let b = vm
                .execute_entry_point_by_name("data.cosigner.allow")
                .expect("allow");
            rvm_t.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box((a, b));
        }
        vm.set_input(raw_input.clone());
        let allow = vm
            .execute_entry_point_by_name("data.cosigner.allow")
            .expect("allow");
        assert_eq!(allow, regorus::Value::from(true), "the RVM agrees here");
    }
    let show = |name: &str, v: Vec<f64>| {
        let (p50, p95, p99) = pct(v);
        println!("{name:<44} p50 {p50:>8.1} us  p95 {p95:>8.1} us  p99 {p99:>8.1} us");
        p50
    };
    println!("ERC-20 transfer, treasury bundle, 1,000-address allowlist, {N} runs");
    let f = show("decode + input document + decide (daemon)", full);
    show("  decode only", dec);
    let e = show("  input document + decide", eval);
    let r = show("regorus alone (deny + allow on a prepared input)", raw);
    show("  of which deny (ten rules)", only_deny);
    show("  of which allow", only_allow);
    show("  RVM instead (deny + allow, same input)", rvm_t);
    show("input document (serde_json)", t_doc);
    show("  serde_json -> regorus Value", t_conv);
    println!(
        "decide / regorus alone: {:.2}; target for the whole: p50 < 50 us (got {f:.1})",
        e / r
    );

    // The same request against a bundle that is only a 1,000-address allowlist with a
    // per-transaction limit (what the target describes), to separate the bundle's cost.
    let small = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        small.path().join("policy.rego"),
        r#"package cosigner
import rego.v1
default allow := false
allow if input.request.kind == "sign"
deny contains msg if {
    some t in input.payload.transfers
    not data.allowlist[t.recipient]
    msg := sprintf("%s is not allowlisted", [t.recipient])
}
deny contains "over the per-transaction limit" if {
    some t in input.payload.transfers
    count(t.amount) > 11
}
"#,
    )
    .expect("write");
    std::fs::write(
        small.path().join("data.json"),
        serde_json::json!({"allowlist": data["treasury"]["allowlist"]}).to_string(),
    )
    .expect("write");
    let small = Bundle::load(small.path()).expect("small bundle");
    let mut v = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let d = decode(&Payload::Ethereum(&rlp), None).expect("decode");
        let verdict = small.decide(document(&make_facts(&d, requester)));
        v.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(verdict.verdict, Verdict::Allow);
    }
    show("allowlist-only bundle: decode + document + decide", v);
}
