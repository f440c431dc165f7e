//! Table tests with published vectors: each hash is checked against a value published with
//! the standard (or recovered to a published signer with libsecp256k1), not against this
//! crate's own computation.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address, U256, address, hex};
use cosigner_policy::{DecodeError, Payload, decode};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn eip155_example_transaction_has_its_published_signing_hash() {
    // EIP-155's example: nonce 9, 20 gwei, 21000 gas, to 0x3535..35, 1 ether, chain id 1.
    let rlp = h(
        "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080",
    );
    let d = decode(&Payload::Ethereum(&rlp), None).unwrap();
    assert_eq!(
        hex::encode(d.hashes[0]),
        "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
    );
    assert_eq!(d.network, "1");
    assert_eq!(d.transfers.len(), 1);
    assert_eq!(d.transfers[0].asset, "ethereum:1:native");
    assert_eq!(
        d.transfers[0].recipient,
        "0x3535353535353535353535353535353535353535"
    );
    assert_eq!(d.transfers[0].amount, "1000000000000000000");
    assert_eq!(d.fee, (21000u64 * 20_000_000_000).to_string());
}

#[test]
fn a_mainnet_eip1559_transaction_recovers_to_its_signer() {
    // Mainnet transaction 0x0ec0b6a2...2ee0 (a setApprovalForAll call), signed by
    // 0xdd6b8b3d...4cea: the hash we compute must recover that address from its signature.
    let tx = TxEip1559 {
        chain_id: 1,
        nonce: 0x42,
        gas_limit: 44386,
        to: address!("6069a6c32cf691f5982febae4faf8a6f3ab2f0f6").into(),
        value: U256::ZERO,
        input: hex!("a22cb4650000000000000000000000005eee75727d804a2b13038928d36f8b188945a57a0000000000000000000000000000000000000000000000000000000000000000").into(),
        max_fee_per_gas: 0x4a817c800,
        max_priority_fee_per_gas: 0x3b9aca00,
        access_list: Default::default(),
    };
    let d = decode(&Payload::Ethereum(&tx.encoded_for_signing()), None).unwrap();
    let hash = d.hashes[0];
    assert_eq!(
        hex::encode(hash),
        "0d5688ac3897124635b6cf1bc0e29d6dfebceebdc10a54d74f2ef8b56535b682"
    );
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    let mut rs = h("840cfc572845f5786e702984c2a582528cad4b49b2a10b9db1be7fca90058565");
    rs.extend(h(
        "25e7109ceb98168d95b09b18bbf6b685130e0562f233877d492b94eee0c5b6d1",
    ));
    let sig = RecoverableSignature::from_compact(&rs, RecoveryId::from_i32(0).unwrap()).unwrap();
    let key = secp256k1::Secp256k1::verification_only()
        .recover_ecdsa(&secp256k1::Message::from_digest(hash), &sig)
        .unwrap();
    use sha3::Digest;
    let addr = sha3::Keccak256::digest(&key.serialize_uncompressed()[1..]);
    assert_eq!(
        hex::encode(&addr[12..]),
        "dd6b8b3dc6b7ad97db52f08a275ff4483e024cea"
    );
    // Not an ERC-20 call: flagged as an unknown call, no transfer.
    assert!(d.transfers.is_empty());
    assert_eq!(d.document["unknown_call"], true);
}

#[test]
fn an_eip1559_usdc_transfer_is_decoded_to_token_recipient_and_amount() {
    let usdc = address!("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");
    let recipient: Address = address!("1111111111111111111111111111111111111111");
    // transfer(address,uint256) = a9059cbb
    let mut data = hex!("a9059cbb").to_vec();
    data.extend([0u8; 12]);
    data.extend(recipient.as_slice());
    data.extend(U256::from(2_500_000u64).to_be_bytes::<32>());
    let tx = TxEip1559 {
        chain_id: 1,
        nonce: 7,
        gas_limit: 65_000,
        to: usdc.into(),
        value: U256::ZERO,
        input: data.into(),
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        access_list: Default::default(),
    };
    let rlp = tx.encoded_for_signing();
    let d = decode(&Payload::Ethereum(&rlp), None).unwrap();
    assert_eq!(d.transfers.len(), 1);
    let t = &d.transfers[0];
    assert_eq!(
        t.asset,
        "ethereum:1:0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
    );
    assert_eq!(t.recipient, "0x1111111111111111111111111111111111111111");
    assert_eq!(t.amount, "2500000");
    assert_eq!(d.document["erc20"]["function"], "transfer");
    assert_eq!(d.fee, (65_000u64 * 30_000_000_000).to_string());
    // The hash is keccak256 of exactly the bytes given (computed here with sha3).
    use sha3::Digest;
    assert_eq!(
        d.hashes[0].as_slice(),
        sha3::Keccak256::digest(&rlp).as_slice()
    );
}

#[test]
fn non_canonical_or_unsafe_transactions_are_refused() {
    let good = h(
        "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080",
    );
    // Trailing bytes.
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(decode(&Payload::Ethereum(&trailing), None).is_err());
    // EIP-155 fields other than (chain id, 0, 0): r = 1.
    let mut bad_r = good.clone();
    let n = bad_r.len();
    bad_r[n - 2] = 0x01;
    let e = decode(&Payload::Ethereum(&bad_r), None).unwrap_err();
    assert!(e.to_string().contains("re-encode"), "{e}");
    // No chain id (pre-EIP-155, replayable).
    let pre155 =
        h("e9098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080");
    let e = decode(&Payload::Ethereum(&pre155), None).unwrap_err();
    assert!(e.to_string().contains("EIP-155"), "{e}");
    // Empty and unknown types.
    assert!(decode(&Payload::Ethereum(&[]), None).is_err());
    assert!(matches!(
        decode(&Payload::Ethereum(&[0x04, 0xc0]), None),
        Err(DecodeError::Unsupported(_) | DecodeError::Invalid { .. })
    ));
}

#[test]
fn messages_have_their_published_hashes() {
    let d = decode(&Payload::PersonalMessage(b"hello world"), None).unwrap();
    assert_eq!(
        hex::encode(d.hashes[0]),
        "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
    );
    // EIP-712's own example (Mail from Cow to Bob).
    let mail = r#"{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]},"primaryType":"Mail","domain":{"name":"Ether Mail","version":"1","chainId":1,"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},"message":{"from":{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},"to":{"name":"Bob","wallet":"0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},"contents":"Hello, Bob!"}}"#;
    let d = decode(&Payload::TypedData(mail), None).unwrap();
    assert_eq!(
        hex::encode(d.hashes[0]),
        "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );
    assert_eq!(d.network, "1");
    assert!(decode(&Payload::TypedData("{}"), None).is_err());
    assert!(decode(&Payload::RawHash(&[0; 31]), None).is_err());
}
