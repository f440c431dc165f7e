//! Every ceremony end to end, all parties in one process, every message serialized and
//! deserialized; every signature verified by libsecp256k1 and k256 against the vault key.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use common::*;
use cosigner_tss::*;

/// One 2-of-3 vault shared by the tests that only read it.
fn vault_2_of_3() -> &'static [KeyShare] {
    static V: OnceLock<Vec<KeyShare>> = OnceLock::new();
    V.get_or_init(|| keygen("vault-2of3", 2, &ids(1, 3)))
}

#[test]
fn keygen_2_of_3_signs_with_every_pair() {
    let shares = vault_2_of_3();
    let public = shares[0].public();
    assert_eq!(public.epoch, 0);
    assert_eq!(public.committee.threshold(), 2);
    assert_eq!(public.verifying_shares.len(), 3);
    sign_every_subset(shares, "2of3");
}

#[test]
fn keygen_3_of_5_signs_with_every_triple() {
    let shares = keygen("vault-3of5", 3, &ids(2, 5));
    sign_every_subset(&shares, "3of5");
}

#[test]
fn signing_needs_exactly_threshold_members() {
    let s = vault_2_of_3();
    let one = [&s[0]];
    let err = sign(&one, hash("x"), "m").unwrap_err();
    assert!(matches!(err, TssError::InvalidParameters(_)), "{err}");
    let all: Vec<&KeyShare> = s.iter().collect();
    let err = sign(&all, hash("x"), "m").unwrap_err();
    assert!(matches!(err, TssError::InvalidParameters(_)), "{err}");
    // A signer outside the committee is named.
    let outsider = ids(99, 1)[0];
    let err = Sign::new(
        &s[0],
        SignParams {
            signers: vec![s[0].party(), outsider],
            message_hash: hash("x"),
            path: DerivationPath::default(),
            nonce: [0; 32],
        },
    )
    .unwrap_err();
    assert_eq!(err, TssError::NotInCommittee { party: outsider });
}

/// BIP-32 CKDpub computed independently (HMAC-SHA512 + libsecp256k1 tweak addition).
fn bip32_public(pk: &PointBytes, chain: &[u8; 32], path: &[u32]) -> PointBytes {
    use hmac::{KeyInit, Mac};
    let secp = secp256k1::Secp256k1::new();
    let mut key = secp256k1::PublicKey::from_slice(&pk.0).unwrap();
    let mut cc = *chain;
    for &i in path {
        let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(&cc).unwrap();
        mac.update(&key.serialize());
        mac.update(&i.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let tweak = secp256k1::Scalar::from_be_bytes(out[..32].try_into().unwrap()).unwrap();
        key = key.add_exp_tweak(&secp, &tweak).unwrap();
        cc.copy_from_slice(&out[32..]);
    }
    PointBytes(key.serialize())
}

#[test]
fn derived_keys_sign_and_match_bip32() {
    let s = vault_2_of_3();
    let public = s[0].public();
    for path in ["m/44/60/0/0/7", "m/0", "m/84/0/0/1/2147483647"] {
        let parsed = DerivationPath::parse(path).unwrap();
        let derived = public.derive(&parsed).unwrap();
        assert_eq!(
            derived,
            bip32_public(&public.public_key, &public.chain_code, &parsed.0),
            "{path}"
        );
        assert_ne!(derived, public.public_key);
        let sig = sign(&[&s[0], &s[2]], hash(path), path).unwrap();
        verify_independent(&sig, &derived);
    }
    // Two paths give two keys; the signature of one does not verify under the other.
    let sig = sign(&[&s[1], &s[2]], hash("p"), "m/1").unwrap();
    let other = public
        .derive(&DerivationPath::parse("m/2").unwrap())
        .unwrap();
    assert!(!verify_ecdsa(&other, &sig.message_hash, &sig.r, &sig.s));
}

#[test]
fn refresh_keeps_the_key_and_retires_old_shares() {
    let old = vault_2_of_3();
    let machines = old
        .iter()
        .map(|s| Refresh::new(s, RefreshParams { nonce: [5; 32] }).unwrap())
        .collect();
    let (new, _) = cosigner_tss::local::run(machines).unwrap();
    check_same_vault(&new);
    let (o, n) = (old[0].public(), new[0].public());
    assert_eq!(n.public_key, o.public_key);
    assert_eq!(n.chain_code, o.chain_code);
    assert_eq!(n.epoch, o.epoch + 1);
    for i in 0..3 {
        assert_ne!(
            n.verifying_shares[i], o.verifying_shares[i],
            "share {i} did not change"
        );
        assert_ne!(new[i].encode().as_slice(), old[i].encode().as_slice());
    }
    sign_every_subset(&new, "refreshed");

    // An old share cannot be mixed with a new one: the other party is named.
    let err = sign(&[&old[0], &new[1]], hash("mix"), "m").unwrap_err();
    assert!(
        matches!(err, TssError::EpochMismatch { .. }),
        "mixing epochs gave {err}"
    );
    // And an old share is refused by a ceremony of the new epoch.
    let err = Reshare::new(
        ReshareParams {
            old: n.clone(),
            dealers: vec![new[0].party(), new[1].party()],
            new_committee: n.committee.clone(),
            nonce: [1; 32],
        },
        old[0].party(),
        Some(&old[0]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TssError::ShareEpoch {
            share_epoch: 0,
            ceremony_epoch: 1
        }
    );
}

#[test]
fn reshare_adds_a_party_2_of_2_to_2_of_3() {
    let p = ids(3, 3);
    let old = keygen("vault-add", 2, &p[..2]);
    sign_every_subset(&old, "2of2");
    let committee = Committee::new(2, p.iter().copied()).unwrap();
    let results = reshare(&[&old[0], &old[1]], &p[..2], &committee, &p[2..]);
    let new = new_shares(results, &committee);
    assert_eq!(new[0].public().public_key, old[0].public().public_key);
    assert_eq!(new[0].public().chain_code, old[0].public().chain_code);
    assert_eq!(new[0].epoch(), 1);
    sign_every_subset(&new, "added");
    // Derivation still gives the same child keys after the reshare.
    let path = DerivationPath::parse("m/44/60/0/0/7").unwrap();
    assert_eq!(new[0].public().derive(&path), old[0].public().derive(&path));
    // Old and new shares do not mix.
    let old_a = old.iter().find(|s| s.party() == p[0]).unwrap();
    let new_b = new.iter().find(|s| s.party() == p[1]).unwrap();
    assert!(sign(&[old_a, new_b], hash("mix"), "m").is_err());
}

#[test]
fn reshare_removes_a_party_2_of_3_to_2_of_2() {
    let old = vault_2_of_3();
    let p: Vec<PartyId> = old.iter().map(|s| s.party()).collect();
    let committee = Committee::new(2, [p[0], p[1]]).unwrap();
    // The removed party deals (with p[0]) and leaves with nothing.
    let results = reshare(&[&old[0], &old[1], &old[2]], &[p[0], p[2]], &committee, &[]);
    let new = new_shares(results, &committee);
    assert_eq!(new[0].public().public_key, old[0].public().public_key);
    sign_every_subset(&new, "removed");
}

#[test]
fn reshare_replaces_a_lost_party() {
    let old = vault_2_of_3();
    let p: Vec<PartyId> = old.iter().map(|s| s.party()).collect();
    let replacement = ids(4, 1)[0];
    let committee = Committee::new(2, [p[0], p[1], replacement]).unwrap();
    // p[2] is lost: only p[0] and p[1] take part.
    let results = reshare(
        &[&old[0], &old[1]],
        &[p[0], p[1]],
        &committee,
        &[replacement],
    );
    let new = new_shares(results, &committee);
    assert_eq!(new[0].public().public_key, old[0].public().public_key);
    sign_every_subset(&new, "replaced");
    // The lost party's old share is useless with the new committee.
    let new_a = new.iter().find(|s| s.party() == p[0]).unwrap();
    assert!(sign(&[new_a, &old[2]], hash("lost"), "m").is_err());
}

#[test]
fn reshare_raises_then_lowers_the_threshold() {
    let old = vault_2_of_3();
    let p: Vec<PartyId> = old.iter().map(|s| s.party()).collect();
    let d = ids(5, 2);
    let c34 = Committee::new(3, [p[0], p[1], p[2], d[0]]).unwrap();
    let results = reshare(&[&old[1], &old[2], &old[0]], &[p[1], p[2]], &c34, &[d[0]]);
    let s34 = new_shares(results, &c34);
    assert_eq!(s34[0].public().public_key, old[0].public().public_key);
    assert_eq!(s34[0].public().committee.threshold(), 3);
    sign_every_subset(&s34, "3of4");
    // t'-1 = 2 parties of the new committee cannot sign.
    let err = sign(&[&s34[0], &s34[1]], hash("two"), "m").unwrap_err();
    assert!(matches!(err, TssError::InvalidParameters(_)), "{err}");

    // 3-of-4 -> 2-of-3: three dealers, one party leaves, one joins.
    let c23 = Committee::new(2, [p[0], d[0], d[1]]).unwrap();
    let dealers = [p[0], p[2], d[0]];
    let holders: Vec<&KeyShare> = s34.iter().collect();
    let results = reshare(&holders, &dealers, &c23, &[d[1]]);
    let s23 = new_shares(results, &c23);
    assert_eq!(s23[0].public().public_key, old[0].public().public_key);
    assert_eq!(s23[0].epoch(), 2);
    sign_every_subset(&s23, "2of3-again");
}

#[test]
fn share_encoding_round_trips_and_refuses_damage() {
    let s = &vault_2_of_3()[0];
    let bytes = s.encode();
    assert!(
        bytes.len() > 50_000,
        "a share is ~105 KB, got {}",
        bytes.len()
    );
    let back = KeyShare::decode(&bytes).unwrap();
    assert_eq!(back.public(), s.public());
    assert_eq!(back.encode().as_slice(), bytes.as_slice());
    let other = &vault_2_of_3()[1];
    let sig = sign(&[&back, other], hash("decoded"), "m").unwrap();
    verify_independent(&sig, &s.public().public_key);

    // Debug shows public facts only.
    let dbg = format!("{s:?}");
    assert!(dbg.contains("vault-2of3") && dbg.len() < 400, "{dbg}");

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bytes[..bytes.len() / 2].to_vec(), "checksum"),
        (bytes[..4].to_vec(), "truncated"),
        (bytes[..20].to_vec(), "truncated"),
        ([b"XXXX", &bytes[4..]].concat(), "magic"),
        ([&bytes[..4], &[9u8], &bytes[5..]].concat(), "version 9"),
        ([bytes.as_slice(), &[0u8]].concat(), "checksum"),
    ];
    for (bad, want) in cases {
        let err = KeyShare::decode(&bad).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    // A flipped bit anywhere after the version byte is refused.
    for pos in [
        10,
        100,
        1000,
        bytes.len() / 2,
        bytes.len() - 40,
        bytes.len() - 1,
    ] {
        let mut bad = bytes.to_vec();
        bad[pos] ^= 0x01;
        let err = KeyShare::decode(&bad).unwrap_err().to_string();
        assert!(err.contains("checksum"), "bit at {pos}: {err}");
    }
}
