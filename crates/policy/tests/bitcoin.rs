//! Bitcoin PSBT table tests. The sighashes are checked against the values published with
//! BIP-143 and the BIP-32 derivations against BIP-32's test vector 2, not against this
//! crate's own computation; the fee and outputs of BIP-174's valid vector 4 are the sums
//! of its published amounts.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Fingerprint, Xpub};
use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::secp256k1::PublicKey;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, absolute,
    transaction,
};
use cosigner_policy::btc::{analyse, fingerprint};
use cosigner_policy::{DecodeError, Payload, VaultKey, decode};

fn h(s: &str) -> Vec<u8> {
    alloy_primitives::hex::decode(s).unwrap()
}

fn hx(b: &[u8]) -> String {
    alloy_primitives::hex::encode(b)
}

fn tx(s: &str) -> Transaction {
    deserialize(&h(s)).unwrap()
}

fn key(s: &str) -> PublicKey {
    PublicKey::from_slice(&h(s)).unwrap()
}

/// A vault whose root key is `pk` (chain code arbitrary: these vectors sign at the root).
fn vault_at(pk: &PublicKey) -> VaultKey {
    VaultKey {
        public_key: pk.serialize(),
        chain_code: [7; 32],
    }
}

fn origin(v: &VaultKey, path: &str) -> (Fingerprint, DerivationPath) {
    (
        Fingerprint::from(fingerprint(v).unwrap()),
        DerivationPath::from_str(path).unwrap(),
    )
}

fn run(psbt: &Psbt, v: &VaultKey) -> Result<cosigner_policy::Decoded, DecodeError> {
    decode(
        &Payload::Psbt {
            psbt: &psbt.serialize(),
            network: "",
        },
        Some(v),
    )
}

fn err(psbt: &Psbt, v: &VaultKey) -> String {
    run(psbt, v).unwrap_err().to_string()
}

// ---- BIP-143 examples ----

const P2WPKH_TX: &str = "0100000002fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f0000000000eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d50ce2f0167faa815988ac11000000";
const P2WPKH_KEY: &str = "025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357";

/// BIP-143's native P2WPKH example as a PSBT: input 0 is a P2PK coin of someone else,
/// input 1 the P2WPKH coin whose key is the vault's root.
fn bip143_p2wpkh() -> (Psbt, VaultKey) {
    let mut psbt = Psbt::from_unsigned_tx(tx(P2WPKH_TX)).unwrap();
    let pk = key(P2WPKH_KEY);
    let v = vault_at(&pk);
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(625_000_000),
        script_pubkey: ScriptBuf::from_bytes(h(
            "2103c9f4836b9a4f77fc0d81f7bcb01b7f1b35916864b9476c241ce9fc198bd25432ac",
        )),
    });
    psbt.inputs[1].witness_utxo = Some(TxOut {
        value: Amount::from_sat(600_000_000),
        script_pubkey: ScriptBuf::from_bytes(h("00141d0f172a0ecb48aee1be1f2687d2963ae33f71a1")),
    });
    psbt.inputs[1].bip32_derivation.insert(pk, origin(&v, "m"));
    (psbt, v)
}

#[test]
fn bip143_native_p2wpkh_has_its_published_sighash() {
    let (psbt, v) = bip143_p2wpkh();
    let d = run(&psbt, &v).unwrap();
    assert_eq!(d.chain, "bitcoin");
    assert_eq!(d.network, "mainnet");
    assert_eq!(d.hashes.len(), 1);
    assert_eq!(
        hx(&d.hashes[0]),
        "c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670"
    );
    assert_eq!(d.key_paths, vec![Vec::<u32>::new()]);
    // 6.25 + 6 BTC in, 1.1234 + 2.2345 BTC out.
    assert_eq!(d.fee, "889210000");
    let amounts: Vec<&str> = d.transfers.iter().map(|t| t.amount.as_str()).collect();
    assert_eq!(amounts, ["112340000", "223450000"]);
    assert!(
        d.transfers
            .iter()
            .all(|t| !t.is_change && t.asset == "bitcoin:mainnet:native")
    );
    assert!(d.transfers.iter().all(|t| t.recipient.starts_with('1')));
    let inputs = d.document["inputs"].as_array().unwrap();
    assert_eq!(inputs[0]["script_type"], "p2pk");
    assert!(inputs[0]["sighash"].is_null());
    assert_eq!(inputs[1]["script_type"], "p2wpkh");
    assert_eq!(inputs[1]["vault_path"], "m");
    // Only witness_utxo: the amounts are claimed, not proven.
    assert_eq!(d.document["fee_proven"], false);
    assert_eq!(d.document["inputs"][1]["amount_proven"], false);
}

#[test]
fn bip143_p2sh_p2wpkh_has_its_published_sighash() {
    let mut psbt = Psbt::from_unsigned_tx(tx("0100000001db6b1b20aa0fd7b23880be2ecbd4a98130974cf4748fb66092ac4d3ceb1a54770100000000feffffff02b8b4eb0b000000001976a914a457b684d7f0d539a46a45bbc043f35b59d0d96388ac0008af2f000000001976a914fd270b1ee6abcaea97fea7ad0402e8bd8ad6d77c88ac92040000")).unwrap();
    let pk = key("03ad1d8e89212f0b92c74d23bb710c00662ad1470198ac48c43f7d6f93a2a26873");
    let v = vault_at(&pk);
    let redeem = ScriptBuf::from_bytes(h("001479091972186c449eb1ded22b78e40d009bdf0089"));
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(1_000_000_000),
        script_pubkey: redeem.to_p2sh(),
    });
    psbt.inputs[0].redeem_script = Some(redeem);
    psbt.inputs[0].bip32_derivation.insert(pk, origin(&v, "m"));
    let d = run(&psbt, &v).unwrap();
    assert_eq!(
        hx(&d.hashes[0]),
        "64f3b0f4dd2bb3aa1ce8566d220cc74dda9df97d8490cc81d89d735c92e59fb6"
    );
    assert_eq!(d.document["inputs"][0]["script_type"], "p2sh-p2wpkh");
    assert_eq!(
        d.document["inputs"][0]["address"]
            .as_str()
            .unwrap()
            .chars()
            .next(),
        Some('3')
    );
    // 10 BTC in; 1.99996600 + 8 BTC out.
    assert_eq!(
        d.fee,
        (1_000_000_000u64 - 199_996_600 - 800_000_000).to_string()
    );
}

#[test]
fn bip143_p2sh_p2wsh_six_of_six_has_its_published_sighash() {
    let mut psbt = Psbt::from_unsigned_tx(tx("010000000136641869ca081e70f394c6948e8af409e18b619df2ed74aa106c1ca29787b96e0100000000ffffffff0200e9a435000000001976a914389ffce9cd9ae88dcc0631e88a821ffdbe9bfe2688acc0832f05000000001976a9147480a33f950689af511e6e84c138dbbd3c3ee41588ac00000000")).unwrap();
    let ws = ScriptBuf::from_bytes(h(
        "56210307b8ae49ac90a048e9b53357a2354b3334e9c8bee813ecb98e99a7e07e8c3ba32103b28f0c28bfab54554ae8c658ac5c3e0ce6e79ad336331f78c428dd43eea8449b21034b8113d703413d57761b8b9781957b8c0ac1dfe69f492580ca4195f50376ba4a21033400f6afecb833092a9a21cfdf1ed1376e58c5d1f47de74683123987e967a8f42103a6d48b1131e94ba04d9737d61acdaa1322008af9602b3b14862c07a1789aac162102d8b661b0b3302ee2f162b09e07a55ad5dfbe673a9f01d9f0c19617681024306b56ae",
    ));
    let pk = key("0307b8ae49ac90a048e9b53357a2354b3334e9c8bee813ecb98e99a7e07e8c3ba3");
    let v = vault_at(&pk);
    let redeem = ws.to_p2wsh();
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(987_654_321),
        script_pubkey: redeem.to_p2sh(),
    });
    psbt.inputs[0].redeem_script = Some(redeem);
    psbt.inputs[0].witness_script = Some(ws.clone());
    psbt.inputs[0].bip32_derivation.insert(pk, origin(&v, "m"));
    let d = run(&psbt, &v).unwrap();
    assert_eq!(
        hx(&d.hashes[0]),
        "185c0be5263dce5b4bb50a047973c1b6272bfbd0103a89444597dc40b248ee7c"
    );
    assert_eq!(d.document["inputs"][0]["script_type"], "p2sh-p2wsh");
    assert_eq!(d.fee, "654321");

    // A witness script without the vault key is refused.
    let other = key(P2WPKH_KEY);
    let v2 = vault_at(&other);
    let mut p2 = psbt.clone();
    p2.inputs[0].bip32_derivation.clear();
    p2.inputs[0]
        .bip32_derivation
        .insert(other, origin(&v2, "m"));
    assert!(err(&p2, &v2).contains("does not contain the vault key"));
}

// ---- BIP-174 ----

/// BIP-174's valid vector 4: a legacy P2PKH input with its whole previous transaction and
/// a P2SH-P2WPKH input with only its witness UTXO; two P2PKH outputs whose derivations
/// belong to another wallet (hardened paths from fingerprint b4a6ba67).
const BIP174_VECTOR_4: &str = "70736274ff0100a00200000002ab0949a08c5af7c49b8212f417e2f15ab3f5c33dcf153821a8139f877a5b7be40000000000feffffffab0949a08c5af7c49b8212f417e2f15ab3f5c33dcf153821a8139f877a5b7be40100000000feffffff02603bea0b000000001976a914768a40bbd740cbe81d988e71de2a4d5c71396b1d88ac8e240000000000001976a9146f4620b553fa095e721b9ee0efe9fa039cca459788ac00000000000100df0200000001268171371edff285e937adeea4b37b78000c0566cbb3ad64641713ca42171bf6000000006a473044022070b2245123e6bf474d60c5b50c043d4c691a5d2435f09a34a7662a9dc251790a022001329ca9dacf280bdf30740ec0390422422c81cb45839457aeb76fc12edd95b3012102657d118d3357b8e0f4c2cd46db7b39f6d9c38d9a70abcb9b2de5dc8dbfe4ce31feffffff02d3dff505000000001976a914d0c59903c5bac2868760e90fd521a4665aa7652088ac00e1f5050000000017a9143545e6e33b832c47050f24d3eeb93c9c03948bc787b32e13000001012000e1f5050000000017a9143545e6e33b832c47050f24d3eeb93c9c03948bc787010416001485d13537f2e265405a34dbafa9e3dda01fb8230800220202ead596687ca806043edc3de116cdf29d5e9257c196cd055cf698c8d02bf24e9910b4a6ba670000008000000080020000800022020394f62be9df19952c5587768aeb7698061ad2c4a25c894f47d8c162b4d7213d0510b4a6ba6700000080010000800200008000";

#[test]
fn bip174_vector_4_outputs_and_fee() {
    let bytes = h(BIP174_VECTOR_4);
    let v = vault_at(&key(P2WPKH_KEY));
    let d = analyse(&bytes, "bitcoin", &v).unwrap();
    // 0.99999699 + 1 BTC in; 1.999 BTC + 9358 sat out.
    assert_eq!(d.fee, "90341");
    let amounts: Vec<&str> = d.transfers.iter().map(|t| t.amount.as_str()).collect();
    assert_eq!(amounts, ["199900000", "9358"]);
    assert!(d.transfers.iter().all(|t| !t.is_change));
    assert!(d.hashes.is_empty());
    let doc = &d.document;
    assert_eq!(doc["inputs"][0]["amount_proven"], true);
    assert_eq!(doc["inputs"][0]["script_type"], "p2pkh");
    assert_eq!(doc["inputs"][1]["amount_proven"], false);
    assert_eq!(doc["inputs"][1]["script_type"], "p2sh");
    assert_eq!(doc["fee_proven"], false);
    assert_eq!(doc["input_total"], "199999699");
    // Not the vault's: nothing to sign.
    let e = decode(
        &Payload::Psbt {
            psbt: &bytes,
            network: "bitcoin",
        },
        Some(&v),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no input is the vault's"), "{e}");
    // On testnet the same outputs show testnet addresses.
    let t = analyse(&bytes, "testnet", &v).unwrap();
    assert!(
        t.transfers
            .iter()
            .all(|x| x.recipient.starts_with('m') || x.recipient.starts_with('n'))
    );
}

// ---- the vault's own keys: BIP-32 derivation, change, ownership claims ----

/// BIP-32 test vector 2: the master key and its published child m/0.
const V2_MASTER: &str = "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB";
const V2_M0: &str = "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH";

fn v2_vault() -> (VaultKey, PublicKey) {
    let master = Xpub::from_str(V2_MASTER).unwrap();
    let child = Xpub::from_str(V2_M0).unwrap();
    (
        VaultKey {
            public_key: master.public_key.serialize(),
            chain_code: master.chain_code.to_bytes(),
        },
        child.public_key,
    )
}

fn p2wpkh(pk: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(*pk).wpubkey_hash())
}

/// A payment from the vault's m/0 coin (previous transaction included) to an outside
/// address, with change back to m/0.
fn vault_payment() -> (Psbt, VaultKey, PublicKey) {
    let (v, m0) = v2_vault();
    let prev = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Default::default(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(50_000),
            script_pubkey: p2wpkh(&m0),
        }],
    };
    let outside = p2wpkh(&key(P2WPKH_KEY));
    let unsigned = Transaction {
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
                value: Amount::from_sat(30_000),
                script_pubkey: outside,
            },
            TxOut {
                value: Amount::from_sat(19_000),
                script_pubkey: p2wpkh(&m0),
            },
        ],
    };
    let mut psbt = Psbt::from_unsigned_tx(unsigned).unwrap();
    psbt.inputs[0].non_witness_utxo = Some(prev);
    psbt.inputs[0]
        .bip32_derivation
        .insert(m0, origin(&v, "m/0"));
    psbt.outputs[1]
        .bip32_derivation
        .insert(m0, origin(&v, "m/0"));
    (psbt, v, m0)
}

#[test]
fn the_vaults_input_and_change_are_recognised_by_bip32_derivation() {
    let (psbt, v, m0) = vault_payment();
    let d = run(&psbt, &v).unwrap();
    assert_eq!(d.key_paths, vec![vec![0u32]]);
    assert_eq!(d.fee, "1000");
    assert_eq!(d.document["fee_proven"], true);
    assert_eq!(d.document["inputs"][0]["vault_path"], "m/0");
    assert!(!d.transfers[0].is_change);
    assert!(d.transfers[1].is_change);
    assert_eq!(d.document["outputs"][1]["vault_path"], "m/0");
    // The sighash is the BIP-143 one for the m/0 key (BIP-143 itself is checked above).
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    let want = cache
        .p2wpkh_signature_hash(
            0,
            &p2wpkh(&m0),
            Amount::from_sat(50_000),
            EcdsaSighashType::All,
        )
        .unwrap();
    assert_eq!(d.hashes, vec![want.to_byte_array()]);
    // One hash at m/0: signed at that path only.
    assert_eq!(d.single_hash(&[0]).unwrap(), d.hashes[0]);
    let e = d.single_hash(&[1]).unwrap_err().to_string();
    assert!(e.contains("m/0") && e.contains("m/1"), "{e}");
    // The first output moves 30,000 sat; change does not count as spent.
    assert_eq!(d.transfers[0].amount, "30000");
}

#[test]
fn false_claims_about_the_vault_are_refused() {
    let (psbt, v, m0) = vault_payment();

    // A derivation from the vault's fingerprint that gives another key.
    let mut p = psbt.clone();
    p.inputs[0].bip32_derivation.clear();
    p.inputs[0].bip32_derivation.insert(m0, origin(&v, "m/1"));
    let e = err(&p, &v);
    assert!(
        e.contains("input 0") && e.contains("claims the vault key at m/1"),
        "{e}"
    );

    // A hardened path from the vault's fingerprint.
    let mut p = psbt.clone();
    p.inputs[0].bip32_derivation.clear();
    p.inputs[0].bip32_derivation.insert(m0, origin(&v, "m/0'"));
    assert!(err(&p, &v).contains("hardened"));

    // Change claimed for an output that pays someone else.
    let mut p = psbt.clone();
    p.outputs[0].bip32_derivation.insert(m0, origin(&v, "m/0"));
    let e = err(&p, &v);
    assert!(
        e.contains("output 0") && e.contains("pays another script"),
        "{e}"
    );

    // The vault key listed for an input whose script pays another key.
    let mut p = psbt.clone();
    let other = p2wpkh(&key(P2WPKH_KEY));
    if let Some(prev) = p.inputs[0].non_witness_utxo.as_mut() {
        prev.output[0].script_pubkey = other;
    }
    // (The previous transaction changed, so its txid no longer matches: refused first.)
    assert!(err(&p, &v).contains("has txid"));
    let mut p = psbt.clone();
    p.inputs[0].non_witness_utxo = None;
    p.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(50_000),
        script_pubkey: p2wpkh(&key(P2WPKH_KEY)),
    });
    assert!(err(&p, &v).contains("pays another key"));
}

#[test]
fn unsafe_or_unsignable_psbts_are_refused() {
    let (psbt, v, m0) = vault_payment();

    let mut p = psbt.clone();
    p.inputs[0].non_witness_utxo = None;
    let e = err(&p, &v);
    assert!(e.contains("input 0 carries no UTXO"), "{e}");

    let mut p = psbt.clone();
    p.inputs[0].sighash_type = Some(PsbtSighashType::from(
        EcdsaSighashType::NonePlusAnyoneCanPay,
    ));
    assert!(err(&p, &v).contains("only SIGHASH_ALL"));

    // The vault's key as a taproot key.
    let mut p = psbt.clone();
    let (xonly, _) = m0.x_only_public_key();
    p.inputs[0]
        .tap_key_origins
        .insert(xonly, (vec![], origin(&v, "m/0")));
    assert!(err(&p, &v).contains("Schnorr"));

    // A legacy P2PKH coin of the vault.
    let mut p = psbt.clone();
    p.inputs[0].non_witness_utxo = None;
    p.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(50_000),
        script_pubkey: ScriptBuf::new_p2pkh(&bitcoin::PublicKey::new(m0).pubkey_hash()),
    });
    assert!(err(&p, &v).contains("p2pkh input is not signed"));

    // Outputs above the inputs.
    let mut p = psbt.clone();
    p.unsigned_tx.output[0].value = Amount::from_sat(40_000);
    assert!(err(&p, &v).contains("spend more than the inputs"));

    // The same coin spent twice.
    let mut p = psbt.clone();
    p.unsigned_tx.input.push(p.unsigned_tx.input[0].clone());
    p.inputs.push(p.inputs[0].clone());
    assert!(err(&p, &v).contains("twice"));

    // Two vault inputs decode, but one request signs one hash.
    let mut p = psbt.clone();
    let mut second = p.unsigned_tx.input[0].clone();
    second.previous_output.vout = 1;
    p.unsigned_tx.input.push(second);
    let mut inp = p.inputs[0].clone();
    inp.non_witness_utxo = None;
    inp.witness_utxo = Some(TxOut {
        value: Amount::from_sat(5_000),
        script_pubkey: p2wpkh(&m0),
    });
    p.inputs.push(inp);
    let d = run(&p, &v).unwrap();
    assert_eq!(d.hashes.len(), 2);
    assert!(matches!(
        d.single_hash(&[0]),
        Err(DecodeError::Unsupported(m)) if m.contains("needs 2 signatures")
    ));

    // Not a PSBT, empty, unknown network, no vault.
    for (bytes, net, want) in [
        (b"psbt\xff\x00".to_vec(), "bitcoin", "not a PSBT"),
        (b"hello".to_vec(), "bitcoin", "not a PSBT"),
        (Vec::new(), "bitcoin", "empty"),
        (psbt.serialize(), "dogecoin", "dogecoin"),
    ] {
        let e = decode(
            &Payload::Psbt {
                psbt: &bytes,
                network: net,
            },
            Some(&v),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    let e = decode(
        &Payload::Psbt {
            psbt: &psbt.serialize(),
            network: "",
        },
        None,
    )
    .unwrap_err();
    assert!(matches!(e, DecodeError::Unsupported(_)));
}

#[test]
fn bip32_vector_2_key_and_fingerprint() {
    // The published m/0 and master fingerprint of vector 2 (cosigner-tss checks its own
    // derivation against the same values).
    let (v, m0) = v2_vault();
    assert_eq!(
        hx(&m0.serialize()),
        "02fc9e5af0ac8d9b3cecfe2a888e2117ba3d089d8585886c9c826b6b22a98d12ea"
    );
    assert_eq!(hx(&fingerprint(&v).unwrap()), "bd16bee5");
}

#[test]
fn the_treasury_bundle_decides_on_a_decoded_psbt() {
    use cosigner_policy::input::{Facts, Request, WindowFacts, document};
    use cosigner_policy::{Bundle, Verdict};
    // The shipped treasury bundle, with this test's requester listed.
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policies/treasury");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let mut data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("data.json")).unwrap()).unwrap();
    data["treasury"]["requesters"][hx(&[0xaa; 32])] = "ops".into();
    std::fs::write(dir.path().join("data.json"), data.to_string()).unwrap();
    let bundle = Bundle::load(dir.path()).unwrap();
    let (mut psbt, v, _) = vault_payment();
    // Pay the treasury's allowlisted cold storage (BIP-173's example P2WPKH address).
    psbt.unsigned_tx.output[0].script_pubkey =
        ScriptBuf::from_bytes(h("0014751e76e8199196d454941c45d1b3a323f1433bd6"));
    let decide = |psbt: &Psbt| {
        let d = run(psbt, &v).unwrap();
        assert_eq!(
            d.transfers[0].recipient,
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        );
        let facts = Facts {
            request: Request {
                kind: "sign".into(),
                vault_id: "treasury".into(),
                epoch: 0,
                derivation_path: "m/0".into(),
                parties: vec![],
                committee: None,
                refresh: false,
                scheduled: false,
            },
            requester_id: [0xaa; 32],
            requester_name: "ops".into(),
            tls_identity: String::new(),
            vault: None,
            payload: Some(&d),
            windows: vec![(
                "24h",
                WindowFacts {
                    requests: 0,
                    signatures: 0,
                    spent: Default::default(),
                },
            )],
            last_reshare_at_ms: None,
            now_ms: 0,
        };
        (bundle.decide(document(&facts)), d)
    };
    // 30,000 sat out, 19,000 change, fee 1,000, every amount proven: allowed.
    let (decision, d) = decide(&psbt);
    assert_eq!(decision.verdict, Verdict::Allow, "{:?}", decision.reasons());
    assert_eq!(
        d.transfers[1].asset, "bitcoin:mainnet:native",
        "change is the same asset"
    );
    // Without the previous transaction the fee is unproven: denied with the reason.
    let mut unproven = psbt.clone();
    let prev = unproven.inputs[0].non_witness_utxo.take().unwrap();
    unproven.inputs[0].witness_utxo = Some(prev.output[0].clone());
    let (decision, _) = decide(&unproven);
    assert!(
        decision
            .reasons()
            .iter()
            .any(|r| r.contains("fee cannot be verified")),
        "{:?}",
        decision.reasons()
    );
}
