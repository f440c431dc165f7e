//! A hostile relay or party: tampered, replayed, stale, reordered, cross-session, misrouted,
//! forged, missing and equivocating messages, and a cheating dealer. Each is refused with a
//! typed error that names the party at fault.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use common::*;
use cosigner_tss::local::{self, Order};
use cosigner_tss::*;

fn vault() -> &'static [KeyShare] {
    static V: OnceLock<Vec<KeyShare>> = OnceLock::new();
    V.get_or_init(|| keygen("vault-adv", 2, &ids(20, 3)))
}

/// The party an error blames, if any.
fn culprit(e: &TssError) -> Option<PartyId> {
    match e {
        TssError::NotInCommittee { party }
        | TssError::EpochMismatch { party, .. }
        | TssError::WrongSession { party }
        | TssError::WrongRound { party, .. }
        | TssError::Duplicate { party, .. }
        | TssError::Misrouted { party }
        | TssError::Malformed { party, .. }
        | TssError::Protocol { party, .. } => Some(*party),
        TssError::InconsistentBroadcast { origin, .. } => Some(*origin),
        TssError::BadFragment { dealer } | TssError::BadConstantTerm { dealer } => Some(*dealer),
        _ => None,
    }
}

fn sign_machines(shares: &[&KeyShare], nonce: u8) -> Vec<Sign> {
    let signers: Vec<PartyId> = shares.iter().map(|s| s.party()).collect();
    shares
        .iter()
        .map(|s| {
            Sign::new(
                s,
                SignParams {
                    signers: signers.clone(),
                    message_hash: hash("adversarial"),
                    path: DerivationPath::default(),
                    nonce: [nonce; 32],
                },
            )
            .unwrap()
        })
        .collect()
}

/// Runs a 2-of-3 signing (parties 0 and 1) through `filter`; returns party 1's outcome.
fn sign_through(filter: &mut local::Filter<'_>) -> Result<Signature, TssError> {
    let s = vault();
    let run = local::run_with(sign_machines(&[&s[0], &s[1]], 1), Order::Fifo, filter);
    run.outputs.into_iter().nth(1).unwrap()
}

fn edit(bytes: Vec<u8>, f: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = Message::decode(&bytes).unwrap();
    f(&mut m);
    m.encode()
}

#[test]
fn tampered_body_names_the_sender() {
    let a = vault()[0].party();
    for round in [1u8, 2, 3] {
        let mut done = false;
        let err = sign_through(&mut |_, bytes| {
            let m = Message::decode(&bytes).unwrap();
            if !done && m.from == a && m.round == round {
                done = true;
                let mid = m.body.len() / 2;
                return vec![edit(bytes, |m| m.body[mid] ^= 0x40)];
            }
            vec![bytes]
        })
        .unwrap_err();
        assert_eq!(culprit(&err), Some(a), "round {round}: {err}");
    }
}

#[test]
fn replayed_message_is_refused() {
    let a = vault()[0].party();
    let err = sign_through(&mut |_, bytes| {
        let m = Message::decode(&bytes).unwrap();
        if m.from == a && m.round == 1 {
            return vec![bytes.clone(), bytes];
        }
        vec![bytes]
    })
    .unwrap_err();
    assert_eq!(err, TssError::Duplicate { party: a, round: 1 });
}

#[test]
fn stale_message_from_an_earlier_round_is_refused() {
    let a = vault()[0].party();
    let mut saved: Option<Vec<u8>> = None;
    let err = sign_through(&mut |_, bytes| {
        let m = Message::decode(&bytes).unwrap();
        if m.from == a && m.round == 1 {
            saved = Some(bytes.clone());
        }
        if m.from == a && m.round == 2 {
            // Replay A's round-1 message after its round-2 one.
            return vec![bytes, saved.clone().unwrap()];
        }
        vec![bytes]
    })
    .unwrap_err();
    assert_eq!(err, TssError::Duplicate { party: a, round: 1 });
}

#[test]
fn message_too_far_ahead_is_refused() {
    let a = vault()[0].party();
    let err = sign_through(&mut |_, bytes| {
        let m = Message::decode(&bytes).unwrap();
        if m.from == a && m.round == 1 {
            return vec![edit(bytes, |m| m.round = 3)];
        }
        vec![bytes]
    })
    .unwrap_err();
    assert_eq!(
        err,
        TssError::WrongRound {
            party: a,
            got: 3,
            expected: 1
        }
    );
}

#[test]
fn reordered_delivery_within_bounds_completes() {
    // Shuffled delivery makes parties run a round ahead of each other; the inbox buffers
    // next-round messages, so every seed must succeed.
    let s = vault();
    let key = s[0].public().public_key;
    for seed in 1..6u64 {
        let sig = sign_with(
            &[&s[1], &s[2]],
            hash(&format!("shuffle {seed}")),
            "m",
            Order::Shuffled(seed),
        )
        .unwrap();
        verify_independent(&sig, &key);
    }
}

#[test]
fn cross_session_message_is_refused() {
    let s = vault();
    let a = s[0].party();
    let mut first = sign_machines(&[&s[0], &s[1]], 1);
    let mut second = sign_machines(&[&s[0], &s[1]], 2);
    first[1].start().unwrap();
    let Step::Continue(out) = second[0].start().unwrap() else {
        panic!()
    };
    let stray = Message::decode(&out[0].encode()).unwrap();
    let err = first[1].handle(stray).unwrap_err();
    assert_eq!(err, TssError::WrongSession { party: a });
    // The ceremony refuses everything after an error.
    let Step::Continue(out) = first[0].start().unwrap() else {
        panic!()
    };
    let err = first[1]
        .handle(Message::decode(&out[0].encode()).unwrap())
        .unwrap_err();
    assert_eq!(err, TssError::Finished);
}

#[test]
fn misrouted_and_forged_senders_are_refused() {
    let s = vault();
    let (a, b, c) = (s[0].party(), s[1].party(), s[2].party());
    let mut m = sign_machines(&[&s[0], &s[1]], 1);
    let Step::Continue(out) = m[0].start().unwrap() else {
        panic!()
    };
    m[1].start().unwrap();
    let to_c = Message::decode(&edit(out[0].encode(), |m| m.to = Some(c))).unwrap();
    assert_eq!(
        m[1].handle(to_c).unwrap_err(),
        TssError::Misrouted { party: a }
    );

    let mut m = sign_machines(&[&s[0], &s[1]], 1);
    let Step::Continue(out) = m[0].start().unwrap() else {
        panic!()
    };
    m[1].start().unwrap();
    // C is in the committee but not a signer of this session: an outsider here.
    let forged = Message::decode(&edit(out[0].encode(), |m| m.from = c)).unwrap();
    assert_eq!(
        m[1].handle(forged).unwrap_err(),
        TssError::NotInCommittee { party: c }
    );
    let _ = b;
}

#[test]
fn missing_party_is_named() {
    let a = vault()[0].party();
    let err = sign_through(&mut |_, bytes| {
        let m = Message::decode(&bytes).unwrap();
        if m.from == a && m.round == 2 {
            return Vec::new(); // A goes silent after round 1
        }
        vec![bytes]
    })
    .unwrap_err();
    assert_eq!(err, TssError::Missing { parties: vec![a] });
}

#[test]
fn garbage_bytes_are_refused_without_panic() {
    for bytes in [
        vec![],
        vec![1u8],
        vec![2u8, 0, 0],
        vec![1u8; 64],
        vec![0xff; 1000],
    ] {
        assert!(
            matches!(Message::decode(&bytes), Err(TssError::Undecodable(_))),
            "{bytes:?}"
        );
    }
    let big = vec![1u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        Message::decode(&big),
        Err(TssError::Undecodable(_))
    ));
}

#[test]
fn equivocating_broadcast_is_detected() {
    // Keygen 2-of-3 where A's round-2 broadcast reaches B altered: B and C then hold
    // different views of it, which the round-3 echo exposes, naming A as the origin.
    let p = ids(21, 3);
    let a = p[0];
    let committee = Committee::new(2, p.iter().copied()).unwrap();
    let machines = p
        .iter()
        .map(|me| {
            Keygen::new(
                KeygenParams {
                    vault_id: "equivocation".into(),
                    committee: committee.clone(),
                    nonce: [1; 32],
                },
                *me,
            )
            .unwrap()
        })
        .collect();
    let run = local::run_with(machines, Order::Fifo, &mut |to, bytes| {
        let m = Message::decode(&bytes).unwrap();
        if m.from == a && m.round == 2 && m.is_broadcast() && *to == p[1] {
            return vec![edit(bytes, |m| m.body[0] ^= 1)];
        }
        vec![bytes]
    });
    let inconsistent: Vec<&TssError> = run
        .outputs
        .iter()
        .filter_map(|o| o.as_ref().err())
        .filter(|e| matches!(e, TssError::InconsistentBroadcast { origin, round: 2, .. } if *origin == a))
        .collect();
    assert!(
        !inconsistent.is_empty(),
        "no party detected it: {:?}",
        run.outputs
            .iter()
            .map(|o| o.as_ref().err())
            .collect::<Vec<_>>()
    );
    assert!(
        run.outputs.iter().all(|o| o.is_err()),
        "someone finished keygen with an equivocating party"
    );
}

#[test]
fn a_padded_dealing_is_refused_naming_the_dealer() {
    // A dealer that pads its round-1 broadcast (to push a blame's evidence over its size
    // limit) is refused as malformed by every receiver: a body means one thing.
    let s = vault();
    let p: Vec<PartyId> = s.iter().map(|x| x.party()).collect();
    let newcomer = ids(24, 1)[0];
    let committee = Committee::new(2, [p[0], p[1], newcomer]).unwrap();
    let params = || ReshareParams {
        old: s[0].public().clone(),
        dealers: vec![p[0], p[1]],
        new_committee: committee.clone(),
        nonce: [5; 32],
    };
    let machines = vec![
        Reshare::new(params(), p[0], Some(&s[0])).unwrap(),
        Reshare::new(params(), p[1], Some(&s[1])).unwrap(),
        Reshare::new(params(), newcomer, None).unwrap(),
    ];
    let run = local::run_with(machines, Order::Fifo, &mut |_, bytes| {
        let m = Message::decode(&bytes).unwrap();
        if m.from == p[1] && m.round == 1 && m.is_broadcast() {
            return vec![edit(bytes, |m| m.body.extend_from_slice(&[0u8; 64]))];
        }
        vec![bytes]
    });
    let newcomer_result = run.outputs.into_iter().nth(2).unwrap();
    assert!(
        matches!(newcomer_result, Err(TssError::Malformed { party, ref detail }) if party == p[1] && detail.contains("trailing")),
        "{newcomer_result:?}"
    );
}

#[test]
fn dealer_with_an_inconsistent_fragment_is_named() {
    let s = vault();
    let p: Vec<PartyId> = s.iter().map(|x| x.party()).collect();
    let newcomer = ids(22, 1)[0];
    let committee = Committee::new(2, [p[0], p[1], newcomer]).unwrap();
    let params = || ReshareParams {
        old: s[0].public().clone(),
        dealers: vec![p[0], p[1]],
        new_committee: committee.clone(),
        nonce: [4; 32],
    };
    let machines = vec![
        Reshare::new(params(), p[0], Some(&s[0])).unwrap(),
        Reshare::new(params(), p[1], Some(&s[1])).unwrap(),
        Reshare::new(params(), newcomer, None).unwrap(),
    ];
    let run = local::run_with(machines, Order::Fifo, &mut |to, bytes| {
        let m = Message::decode(&bytes).unwrap();
        if m.from == p[1] && m.round == 1 && !m.is_broadcast() && *to == newcomer {
            return vec![edit(bytes, |m| m.body[5] ^= 0x10)];
        }
        vec![bytes]
    });
    let newcomer_result = run.outputs.into_iter().nth(2).unwrap();
    assert_eq!(
        newcomer_result.unwrap_err(),
        TssError::BadFragment { dealer: p[1] }
    );
}

#[test]
fn reshare_parameters_are_checked() {
    let s = vault();
    let p: Vec<PartyId> = s.iter().map(|x| x.party()).collect();
    let committee = Committee::new(2, p.iter().copied()).unwrap();
    let params = |dealers: Vec<PartyId>| ReshareParams {
        old: s[0].public().clone(),
        dealers,
        new_committee: committee.clone(),
        nonce: [4; 32],
    };
    // Too few dealers, too many, an outsider, a dealer without its share, a stranger.
    assert!(matches!(
        Reshare::new(params(vec![p[0]]), p[0], Some(&s[0])),
        Err(TssError::InvalidParameters(_))
    ));
    assert!(matches!(
        Reshare::new(params(p.clone()), p[0], Some(&s[0])),
        Err(TssError::InvalidParameters(_))
    ));
    let outsider = ids(23, 1)[0];
    assert_eq!(
        Reshare::new(params(vec![p[0], outsider]), p[0], Some(&s[0])).unwrap_err(),
        TssError::NotInCommittee { party: outsider }
    );
    assert!(matches!(
        Reshare::new(params(vec![p[0], p[1]]), p[0], None),
        Err(TssError::InvalidParameters(_))
    ));
    assert_eq!(
        Reshare::new(params(vec![p[0], p[1]]), outsider, None).unwrap_err(),
        TssError::NotInCommittee { party: outsider }
    );
    // A share of another vault.
    let other = keygen("other-vault", 2, &p[..2]);
    let err = Reshare::new(params(vec![p[0], p[1]]), p[0], Some(&other[0])).unwrap_err();
    assert!(matches!(err, TssError::ShareVault { .. }), "{err}");
}
