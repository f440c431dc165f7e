//! Shared helpers for the engine's integration tests: run ceremonies with every message
//! serialized, and verify signatures with an independent implementation (libsecp256k1).

#![allow(dead_code)]

use cosigner_tss::local::{self, Order};
use cosigner_tss::*;

/// Distinct, deterministic party ids; `seed` keeps sets of different tests apart.
pub fn ids(seed: u8, n: usize) -> Vec<PartyId> {
    (0..n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = seed;
            b[1] = i as u8;
            b[31] = 0xa5;
            PartyId(b)
        })
        .collect()
}

pub fn keygen(vault: &str, t: u8, parties: &[PartyId]) -> Vec<KeyShare> {
    let committee = Committee::new(t, parties.iter().copied()).unwrap();
    let machines = parties
        .iter()
        .map(|p| {
            Keygen::new(
                KeygenParams {
                    vault_id: vault.into(),
                    committee: committee.clone(),
                    nonce: [7; 32],
                },
                *p,
            )
            .unwrap()
        })
        .collect();
    let (shares, _) = local::run(machines).unwrap();
    check_same_vault(&shares);
    shares
}

pub fn check_same_vault(shares: &[KeyShare]) {
    let first = shares[0].public();
    for s in shares {
        assert_eq!(s.public(), first, "parties disagree on the vault record");
    }
}

pub fn hash(tag: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(tag.as_bytes()).into()
}

/// Signs with exactly the given shares; every signer must produce the same signature.
pub fn sign(shares: &[&KeyShare], msg: [u8; 32], path: &str) -> Result<Signature, TssError> {
    sign_with(shares, msg, path, Order::Fifo)
}

pub fn sign_with(
    shares: &[&KeyShare],
    msg: [u8; 32],
    path: &str,
    order: Order,
) -> Result<Signature, TssError> {
    let signers: Vec<PartyId> = shares.iter().map(|s| s.party()).collect();
    let machines = shares
        .iter()
        .map(|s| {
            Sign::new(
                s,
                SignParams {
                    signers: signers.clone(),
                    message_hash: msg,
                    path: DerivationPath::parse(path).unwrap(),
                    nonce: [9; 32],
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let run = local::run_with(machines, order, &mut |_, m| vec![m]);
    let sigs = run.outputs.into_iter().collect::<Result<Vec<_>, _>>()?;
    for s in &sigs {
        assert_eq!(s, &sigs[0], "signers assembled different signatures");
    }
    Ok(sigs[0].clone())
}

/// Verifies with libsecp256k1 (an implementation independent of k256 and dkls23), including
/// public-key recovery from the recovery id, and with k256's verifier.
pub fn verify_independent(sig: &Signature, expected_key: &PointBytes) {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    assert_eq!(&sig.public_key, expected_key, "signed under another key");
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::PublicKey::from_slice(&expected_key.0).expect("valid key");
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(&sig.r);
    rs[32..].copy_from_slice(&sig.s);
    let msg = secp256k1::Message::from_digest(sig.message_hash);
    let ecdsa = secp256k1::ecdsa::Signature::from_compact(&rs).expect("compact signature");
    secp.verify_ecdsa(&msg, &ecdsa, &pk)
        .expect("libsecp256k1 rejects the signature (or it is high-s)");
    let rec = RecoverableSignature::from_compact(
        &rs,
        RecoveryId::from_i32(i32::from(sig.recovery_id)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        secp.recover_ecdsa(&msg, &rec).unwrap(),
        pk,
        "recovery id is wrong"
    );
    assert!(
        verify_ecdsa(expected_key, &sig.message_hash, &sig.r, &sig.s),
        "k256 rejects it"
    );
}

/// Every t-subset of `shares` (by position).
pub fn subsets(n: usize, t: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn rec(start: usize, n: usize, t: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == t {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            rec(i + 1, n, t, cur, out);
            cur.pop();
        }
    }
    rec(0, n, t, &mut cur, &mut out);
    out
}

pub fn sign_every_subset(shares: &[KeyShare], label: &str) {
    let t = usize::from(shares[0].public().committee.threshold());
    let key = shares[0].public().public_key;
    for (k, subset) in subsets(shares.len(), t).into_iter().enumerate() {
        let signers: Vec<&KeyShare> = subset.iter().map(|&i| &shares[i]).collect();
        let msg = hash(&format!("{label} subset {k}"));
        let sig = sign(&signers, msg, "m").unwrap_or_else(|e| panic!("{label} {subset:?}: {e}"));
        verify_independent(&sig, &key);
    }
}

/// Runs a reshare where `holders` are the old shares available (the dealers must be among
/// them) and `newcomers` join with nothing. Returns each participant's output by party.
pub fn reshare(
    holders: &[&KeyShare],
    dealers: &[PartyId],
    new_committee: &Committee,
    newcomers: &[PartyId],
) -> Vec<(PartyId, Result<ReshareOutput, TssError>)> {
    let old = holders[0].public().clone();
    let params = || ReshareParams {
        old: old.clone(),
        dealers: dealers.to_vec(),
        new_committee: new_committee.clone(),
        nonce: [3; 32],
    };
    let mut machines = Vec::new();
    for s in holders {
        let p = s.party();
        if dealers.contains(&p) || new_committee.contains(&p) {
            machines.push(Reshare::new(params(), p, Some(s)).unwrap());
        }
    }
    for p in newcomers {
        machines.push(Reshare::new(params(), *p, None).unwrap());
    }
    let ids: Vec<PartyId> = machines.iter().map(|m| m.me()).collect();
    let run = local::run_with(machines, Order::Fifo, &mut |_, m| vec![m]);
    ids.into_iter().zip(run.outputs).collect()
}

/// The new shares of a successful reshare, in committee order; asserts dealer-only parties
/// end with `Dealt`.
pub fn new_shares(
    results: Vec<(PartyId, Result<ReshareOutput, TssError>)>,
    committee: &Committee,
) -> Vec<KeyShare> {
    let mut shares = Vec::new();
    for (p, r) in results {
        match r.unwrap_or_else(|e| panic!("party {p} failed: {e}")) {
            ReshareOutput::NewShare(s) => {
                assert!(committee.contains(&p));
                shares.push(*s);
            }
            ReshareOutput::Dealt => assert!(
                !committee.contains(&p),
                "{p} is in the new committee but got no share"
            ),
        }
    }
    shares.sort_by_key(|s| s.party());
    assert_eq!(shares.len(), committee.parties().len());
    check_same_vault(&shares);
    shares
}
