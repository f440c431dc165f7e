//! Emergency recovery: t shares of one epoch rebuild the key; the key signs (checked with
//! libsecp256k1); fewer than t, mixed epochs, mixed vaults and a repeated party are refused.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use cosigner_tss::*;
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey};

fn libsecp_sign_verifies(secret: &[u8; 32], public: &PointBytes, hash: [u8; 32]) {
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(secret).expect("a valid secret key");
    let pk = PublicKey::from_slice(&public.0).unwrap();
    assert_eq!(PublicKey::from_secret_key(&secp, &sk), pk);
    let msg = Message::from_digest(hash);
    let sig = secp.sign_ecdsa(&msg, &sk);
    secp.verify_ecdsa(&msg, &sig, &pk).unwrap();
}

#[test]
fn any_two_of_three_rebuild_the_key_and_it_signs() {
    let parties = ids(40, 3);
    let shares = keygen("rec", 2, &parties);
    let key = shares[0].public().public_key;
    for pair in subsets(3, 2) {
        let chosen: Vec<&KeyShare> = pair.iter().map(|&i| &shares[i]).collect();
        let k = recover_key(&chosen).unwrap();
        assert_eq!(k.public_key(), &key);
        libsecp_sign_verifies(k.secret(), &key, hash("after recovery"));
    }
    // All three also work (the first t are used).
    let all: Vec<&KeyShare> = shares.iter().collect();
    let k = recover_key(&all).unwrap();
    // The derived key at m/0/7 is the one the vault signs with at that path.
    let path = DerivationPath::parse("m/0/7").unwrap();
    let child = k.derive(&path).unwrap();
    assert_eq!(child.public_key, shares[0].public().derive(&path).unwrap());
    libsecp_sign_verifies(&child.secret, &child.public_key, hash("child"));
    // The threshold signature at that path verifies under the recovered child key.
    let sig = sign(&[&shares[0], &shares[2]], hash("m/0/7"), "m/0/7").unwrap();
    verify_independent(&sig, &child.public_key);
}

#[test]
fn refuses_too_few_mixed_epochs_mixed_vaults_and_repeats() {
    let parties = ids(41, 3);
    let shares = keygen("rec", 2, &parties);
    let e = recover_key(&[&shares[0]]).unwrap_err().to_string();
    assert!(e.contains("1 share(s) of a 2-of-3 vault"), "{e}");
    let e = recover_key(&[]).unwrap_err().to_string();
    assert!(e.contains("no shares"), "{e}");
    let e = recover_key(&[&shares[1], &shares[1]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("twice"), "{e}");

    // A reshare to the same committee (epoch 1): an epoch-0 share and an epoch-1 share do
    // not combine, even though together they are "two of three".
    let committee = shares[0].public().committee.clone();
    let refreshed = new_shares(
        reshare(
            &[&shares[0], &shares[1], &shares[2]],
            &parties[..2],
            &committee,
            &[],
        ),
        &committee,
    );
    assert_eq!(refreshed[0].epoch(), 1);
    let e = recover_key(&[&shares[0], &refreshed[1]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("epochs 0 and 1"), "{e}");
    // Two epoch-1 shares do.
    let k = recover_key(&[&refreshed[0], &refreshed[2]]).unwrap();
    assert_eq!(k.public_key(), &shares[0].public().public_key);

    let other = keygen("other", 2, &ids(42, 3));
    let e = recover_key(&[&shares[0], &other[1]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("two vaults"), "{e}");
}
