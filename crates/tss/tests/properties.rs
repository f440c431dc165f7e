//! Property tests: random committees, thresholds, reshare targets, signer subsets and
//! delivery orders; and the decoders on arbitrary bytes (they must refuse, never panic).
//!
//! Each ceremony case costs seconds (a DKG with proofs), so the count is small and fixed;
//! set PROPTEST_CASES to run more.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use cosigner_tss::local::Order;
use cosigner_tss::*;
use proptest::prelude::*;

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A committee shape (t, n) with 2 <= t <= n <= 4.
fn shape() -> impl Strategy<Value = (u8, u8)> {
    (2u8..=4).prop_flat_map(|n| (2u8..=n, Just(n)))
}

proptest! {
    #![proptest_config(cases(4))]

    #[test]
    fn keygen_reshare_sign(
        (t, n) in shape(),
        (t2, n2) in shape(),
        keep in 0usize..=4,
        pick in any::<u64>(),
        seed in 1u64..u64::MAX,
    ) {
        let old_ids = ids(100 + (pick % 100) as u8, usize::from(n));
        let old = keygen("prop", t, &old_ids);
        let key = old[0].public().public_key;

        // Dealers: t old parties chosen by `pick`.
        let mut order: Vec<usize> = (0..usize::from(n)).collect();
        let mut r = pick;
        for i in (1..order.len()).rev() {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (r >> 33) as usize % (i + 1));
        }
        let dealers: Vec<PartyId> = order[..usize::from(t)].iter().map(|&i| old_ids[i]).collect();

        // New committee: up to `keep` old parties, the rest newcomers, n2 in all.
        let kept = keep.min(usize::from(n)).min(usize::from(n2));
        let mut members: Vec<PartyId> = order[..kept].iter().map(|&i| old_ids[i]).collect();
        let newcomers = ids(200 + (pick % 50) as u8, usize::from(n2) - kept);
        members.extend(&newcomers);
        let committee = Committee::new(t2, members).unwrap();

        let holders: Vec<&KeyShare> = old.iter().collect();
        let new = new_shares(reshare(&holders, &dealers, &committee, &newcomers), &committee);
        prop_assert_eq!(new[0].public().public_key, key);
        prop_assert_eq!(new[0].public().chain_code, old[0].public().chain_code);

        // A random t2-subset signs, with shuffled delivery.
        let mut idx: Vec<usize> = (0..new.len()).collect();
        for i in (1..idx.len()).rev() {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            idx.swap(i, (r >> 33) as usize % (i + 1));
        }
        let signers: Vec<&KeyShare> = idx[..usize::from(t2)].iter().map(|&i| &new[i]).collect();
        let sig = sign_with(&signers, hash(&format!("prop {pick}")), "m/7", Order::Shuffled(seed)).unwrap();
        verify_independent(&sig, &new[0].public().derive(&DerivationPath::parse("m/7").unwrap()).unwrap());
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn message_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
        let mut versioned = vec![WIRE_VERSION];
        versioned.extend(&bytes);
        let _ = Message::decode(&versioned);
    }

    #[test]
    fn share_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut framed = SHARE_MAGIC.to_vec();
        framed.push(SHARE_VERSION);
        framed.extend(&bytes);
        prop_assert!(KeyShare::decode(&framed).is_err());
        prop_assert!(KeyShare::decode(&bytes).is_err());
    }

    #[test]
    fn path_parser_never_panics(s in ".{0,64}") {
        let _ = DerivationPath::parse(&s);
    }
}

/// Corrupts byte `pos % len` of the `which`-th message (counting every delivery) with `xor`.
fn corrupting(which: usize, pos: usize, xor: u8) -> impl FnMut(&PartyId, Vec<u8>) -> Vec<Vec<u8>> {
    let mut count = 0usize;
    move |_, mut bytes| {
        if count == which && !bytes.is_empty() {
            let i = pos % bytes.len();
            bytes[i] ^= xor.max(1);
        }
        count += 1;
        vec![bytes]
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// A corrupted byte anywhere in any signing message (headers, length prefixes, dkls23's
    /// OT data) ends in an error for someone, never a panic and never a wrong signature.
    #[test]
    fn corrupted_signing_messages_never_panic(which in 0usize..6, pos in any::<usize>(), xor in any::<u8>()) {
        static V: std::sync::OnceLock<Vec<KeyShare>> = std::sync::OnceLock::new();
        let shares = V.get_or_init(|| keygen("corrupt", 2, &ids(60, 3)));
        let signers = [&shares[0], &shares[2]];
        let ids: Vec<PartyId> = signers.iter().map(|s| s.party()).collect();
        let machines = signers.iter().map(|s| Sign::new(s, SignParams {
            signers: ids.clone(),
            message_hash: hash("corrupt"),
            path: DerivationPath::default(),
            nonce: [1; 32],
        }).unwrap()).collect();
        let run = cosigner_tss::local::run_with(machines, Order::Fifo, &mut corrupting(which, pos, xor));
        for out in run.outputs.iter().flatten() {
            verify_independent(out, &shares[0].public().public_key);
        }
    }
}

proptest! {
    #![proptest_config(cases(6))]

    /// The same for keygen, whose round-3 messages carry dkls23's OT set-up.
    #[test]
    fn corrupted_keygen_messages_never_panic(which in 0usize..18, pos in any::<usize>(), xor in any::<u8>()) {
        let p = ids(61, 3);
        let committee = Committee::new(2, p.iter().copied()).unwrap();
        let machines = p.iter().map(|me| Keygen::new(KeygenParams {
            vault_id: "corrupt-kg".into(),
            committee: committee.clone(),
            nonce: [2; 32],
        }, *me).unwrap()).collect();
        let run = cosigner_tss::local::run_with(machines, Order::Fifo, &mut corrupting(which, pos, xor));
        let ok: Vec<&KeyShare> = run.outputs.iter().flatten().collect();
        for s in &ok {
            prop_assert_eq!(s.public(), ok[0].public());
        }
    }
}
