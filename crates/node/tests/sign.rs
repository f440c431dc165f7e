//! The sign pipeline in process: parties in memory behind the ports (shares that count their
//! unseals, a journal with nonce and session memory, a fixed policy rule), a real relay
//! on loopback and the real engine. It shows the order the module promises: every refusal
//! (a forged or stale request, a party outside the committee, a wrong epoch, expected
//! hashes that differ, a policy denial, a replay) happens before anything is unsealed, and
//! a signature unseals each signer's share exactly once.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Node, Store};
use cosigner_api::v1 as api;
use cosigner_node::ports::{Clock, SystemClock};
use cosigner_node::sign::{self, Rules};
use cosigner_node::{Code, NodeError};
use cosigner_party::{Held, PartyKeys, VaultRecord};
use cosigner_relay::mailbox::Relay;
use cosigner_tss::{Committee, Keygen, KeygenParams, PartyId, local};
use prost::Message as _;

trait Signs {
    async fn sign(&self, req: &api::SignRequest) -> Result<sign::Signed, NodeError>;
    fn unseals(&self) -> usize;
}

impl Signs for Node {
    async fn sign(&self, req: &api::SignRequest) -> Result<sign::Signed, NodeError> {
        self.server(&[], true)
            .sign(req, "spiffe://test/party")
            .await
    }

    fn unseals(&self) -> usize {
        self.store.unseals()
    }
}

struct World {
    relay: Arc<Relay>,
    nodes: Vec<Node>,
}

/// A 2-of-3 vault of three parties, each with its ports, and a relay on loopback.
async fn world() -> World {
    let (relay, addr) = common::serve_relay().await;
    let keys: Vec<PartyKeys> = (0..3).map(|_| PartyKeys::generate()).collect();
    let committee = Committee::new(2, keys.iter().map(|k| PartyId(k.party_id()))).unwrap();
    let machines = committee
        .parties()
        .iter()
        .map(|p| {
            Keygen::new(
                KeygenParams {
                    vault_id: "v1".into(),
                    committee: committee.clone(),
                    nonce: [5; 32],
                },
                *p,
            )
            .unwrap()
        })
        .collect();
    let mut shares = local::run(machines).unwrap().0;
    let members: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.member(&format!("p{i}")))
        .collect();
    let record = VaultRecord::new(shares[0].public().clone(), members, 1, 1).unwrap();
    let nodes = keys
        .into_iter()
        .map(|k| {
            let i = shares
                .iter()
                .position(|s| s.party() == PartyId(k.party_id()))
                .unwrap();
            let share = shares.remove(i);
            let held = Held::new(record.clone(), share).unwrap();
            Node::new(k, Store::holding(&held), &addr)
        })
        .collect();
    World { relay, nodes }
}

impl World {
    /// A request by `by` for `signers` to sign `message`, on a fresh relay session.
    fn request(&self, by: &PartyKeys, signers: &[usize], message: &str) -> api::SignRequest {
        let mut session = vec![0u8; 32];
        session[..message.len().min(32)]
            .copy_from_slice(&message.as_bytes()[..message.len().min(32)]);
        session[31] = signers.iter().map(|i| *i as u8 + 1).sum();
        let ids: Vec<Vec<u8>> = signers
            .iter()
            .map(|i| self.nodes[*i].keys.party_id().to_vec())
            .collect();
        let _ = self.relay.create("test", &session, &ids, 60);
        let body = api::SignBody {
            vault_id: "v1".into(),
            epoch: 0,
            signers: ids,
            payload: Some(api::Payload {
                kind: Some(api::payload::Kind::PersonalMessage(api::PersonalMessage {
                    message: message.as_bytes().to_vec(),
                })),
            }),
            derivation_path: String::new(),
            expected_hashes: Vec::new(),
            relay: Some(api::RelayRef {
                address: String::new(),
                session_id: session,
            }),
        }
        .encode_to_vec();
        let auth = cosigner_party::request::sign(by, sign::METHOD, &body, SystemClock.now_ms());
        api::SignRequest {
            body,
            auth: Some(auth),
        }
    }

    fn unseals(&self) -> Vec<usize> {
        self.nodes.iter().map(Node::unseals).collect()
    }
}

/// Re-signs `req` after editing its body, as a requester could.
fn edited(
    by: &PartyKeys,
    req: &api::SignRequest,
    f: impl FnOnce(&mut api::SignBody),
) -> api::SignRequest {
    let mut body = api::SignBody::decode(req.body.as_slice()).unwrap();
    f(&mut body);
    let body = body.encode_to_vec();
    let auth = cosigner_party::request::sign(by, sign::METHOD, &body, SystemClock.now_ms());
    api::SignRequest {
        body,
        auth: Some(auth),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_parties_sign_and_each_unseals_once() {
    let w = world().await;
    let req = w.request(&w.nodes[0].keys, &[0, 1], "pay the rent");
    let (a, b) = tokio::join!(w.nodes[0].sign(&req), w.nodes[1].sign(&req));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.signature.r, b.signature.r);
    assert_eq!(a.signature.s, b.signature.s);
    assert!(cosigner_tss::verify_ecdsa(
        &a.checked.public_key,
        &a.checked.message_hash,
        &a.signature.r,
        &a.signature.s
    ));
    assert_eq!(w.unseals(), vec![1, 1, 0]);
    for n in &w.nodes[..2] {
        assert_eq!(n.journal.ledger.entries(), vec!["started", "signed 1"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_comes_before_the_unseal() {
    let w = world().await;
    let (p0, b) = (&w.nodes[0].keys, &w.nodes[1]);
    let outsider = PartyKeys::generate();
    let refuse = |req: api::SignRequest| async move { b.sign(&req).await.expect_err("refused") };
    // A forged request: another party's signature.
    let mut forged = w.request(p0, &[0, 1], "forged");
    forged.auth.as_mut().unwrap().requester = outsider.party_id().to_vec();
    let e = refuse(forged).await;
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    // A stale one.
    let mut stale = w.request(p0, &[0, 1], "stale");
    let body = stale.body.clone();
    stale.auth = Some(cosigner_party::request::sign(
        p0,
        sign::METHOD,
        &body,
        SystemClock.now_ms() - 3_600_000,
    ));
    assert_eq!(refuse(stale).await.code(), Code::Unauthenticated);
    // A party outside the committee.
    let req = w.request(p0, &[0, 1], "outsider");
    let e = refuse(edited(&outsider, &req, |_| {})).await;
    assert!(
        e.code() == Code::PermissionDenied && e.to_string().contains("not in the committee"),
        "{e}"
    );
    // Another epoch than the one this party holds.
    let e = refuse(edited(p0, &req, |b| b.epoch = 1)).await;
    assert!(
        e.code() == Code::FailedPrecondition && e.to_string().contains("epoch"),
        "{e}"
    );
    // Expected hashes other than the payload's.
    let e = refuse(edited(p0, &req, |b| b.expected_hashes = vec![vec![0; 32]])).await;
    assert!(e.to_string().contains("expected_hashes differ"), "{e}");
    // An unknown vault.
    let e = refuse(edited(p0, &req, |b| b.vault_id = "v2".into())).await;
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // This party not among the signers.
    let e = refuse(w.request(p0, &[0, 2], "not me")).await;
    assert!(e.to_string().contains("not one of the signers"), "{e}");
    // A denial: recorded by the journal, nothing unsealed.
    let e = refuse(w.request(p0, &[0, 1], "deny this")).await;
    assert!(
        e.code() == Code::PermissionDenied && e.to_string().contains("denied by the policy"),
        "{e}"
    );
    assert_eq!(b.journal.ledger.entries(), vec!["denied"]);
    assert_eq!(w.unseals(), vec![0, 0, 0], "a refusal unsealed a share");

    // A real signature, then the same request again: a replay, refused before the unseal.
    let req = w.request(p0, &[0, 1], "once");
    let (x, y) = tokio::join!(w.nodes[0].sign(&req), b.sign(&req));
    x.unwrap();
    y.unwrap();
    assert_eq!(w.unseals(), vec![1, 1, 0]);
    let e = refuse(req).await;
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert_eq!(w.unseals(), vec![1, 1, 0], "a replay unsealed a share");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_never_signs_a_raw_hash() {
    let w = world().await;
    let p0 = &w.nodes[0].keys;
    let req = edited(p0, &w.request(p0, &[0, 1], "raw"), |b| {
        b.payload = Some(api::Payload {
            kind: Some(api::payload::Kind::RawHash(vec![7; 32])),
        });
    });
    let parsed = sign::parse(&req, SystemClock.now_ms(), 60_000).unwrap();
    let record = w.nodes[1].store.current().unwrap().record;
    let me = w.nodes[1].keys.party_id();
    let e = sign::check(
        &req.body,
        parsed,
        record.clone(),
        me,
        Rules { raw_hash: false },
    )
    .unwrap_err();
    assert!(e.to_string().contains("raw hash"), "{e}");
    // A daemon whose rules allow raw hashes passes the same request on to its policy.
    let parsed = sign::parse(&req, SystemClock.now_ms(), 60_000).unwrap();
    let c = sign::check(&req.body, parsed, record, me, Rules { raw_hash: true }).unwrap();
    assert_eq!(c.message_hash, [7; 32]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_answers_as_the_gate_would_and_unseals_nothing() {
    use cosigner_node::dry_run::DryRun;
    use cosigner_policy::Verdict;
    let w = world().await;
    let (p0, b) = (&w.nodes[0].keys, &w.nodes[1]);
    let ask = |req: api::SignRequest| async move {
        b.server(&[], true)
            .evaluate(
                DryRun::Sign,
                &req.body,
                p0.party_id(),
                "spiffe://test/party",
            )
            .await
    };
    let allowed = ask(w.request(p0, &[0, 1], "pay the rent")).await.unwrap();
    assert_eq!(allowed.decision.verdict, Verdict::Allow);
    assert!(allowed.decoded.is_some());
    // The requester is named as the vault's record names it, as at the gate.
    assert_eq!(
        allowed.document["requester"]["name"], "p0",
        "{}",
        allowed.document
    );
    // The policy sees the path as the engine derives it: every spelling of one key's
    // path is one string, so a rule on it cannot be escaped by writing it otherwise.
    for spelling in ["44/60/0/0/1", "m/044/60/0/0/1", " m/44/60/0/0/1 "] {
        let r = ask(edited(p0, &w.request(p0, &[0, 1], "x"), |b| {
            b.derivation_path = spelling.into()
        }))
        .await
        .unwrap();
        assert_eq!(
            r.document["request"]["derivation_path"], "m/44/60/0/0/1",
            "{spelling:?}"
        );
    }
    // A path the gate refuses, the dry run refuses too.
    let e = ask(edited(p0, &w.request(p0, &[0, 1], "x"), |b| {
        b.derivation_path = "m/44'/60".into()
    }))
    .await
    .err()
    .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let denied = ask(w.request(p0, &[0, 1], "deny this")).await.unwrap();
    assert!(matches!(denied.decision.verdict, Verdict::Deny(_)));
    // An unknown vault is refused as the gate refuses it.
    let e = ask(edited(p0, &w.request(p0, &[0, 1], "x"), |b| {
        b.vault_id = "v2".into()
    }))
    .await
    .err()
    .unwrap();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert_eq!(w.unseals(), vec![0, 0, 0]);
    assert!(
        b.journal.ledger.entries().is_empty(),
        "a dry run records nothing"
    );
}
