//! The sign pipeline in process: parties in memory behind the ports (shares that count their
//! unseals, a journal with nonce and session memory, a policy as a closure), a real relay
//! on loopback and the real engine. It shows the order the module promises: every refusal
//! (a forged or stale request, a party outside the committee, a wrong epoch, expected
//! hashes that differ, a policy denial, a replay) happens before anything is unsealed, and
//! a signature unseals each signer's share exactly once.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cosigner_api::v1 as api;
use cosigner_node::facts::Windows;
use cosigner_node::ports::{
    Admission, Clock, Decider, Journal, Kind, Relays, Shares, SignatureOut, SystemClock,
};
use cosigner_node::sign::{self, Rules, Server};
use cosigner_node::{Code, NodeError};
use cosigner_party::{Held, PartyKeys, VaultRecord};
use cosigner_policy::{Decision, Verdict};
use cosigner_relay::mailbox::Relay;
use cosigner_relay::roster::Roster;
use cosigner_relay::{DriveError, Driver};
use cosigner_tss::{Committee, Keygen, KeygenParams, PartyId, local};
use prost::Message as _;

/// One party's sealed share, and how often it was unsealed.
struct MemShares {
    sealed: Vec<u8>,
    record: VaultRecord,
    unseals: AtomicUsize,
}

impl Shares for MemShares {
    async fn signing_record(&self, vault: &str) -> Result<VaultRecord, NodeError> {
        if vault != self.record.vault_id() {
            return Err(NodeError::new(
                Code::NotFound,
                format!("this party holds no share of vault {vault:?}"),
            ));
        }
        Ok(self.record.clone())
    }

    async fn pending(&self, _: &str) -> Result<Option<u64>, NodeError> {
        Ok(None)
    }

    async fn unseal(&self, _: &str) -> Result<Held, NodeError> {
        self.unseals.fetch_add(1, Ordering::SeqCst);
        Held::decode(&self.sealed).map_err(|e| NodeError::internal(e.to_string()))
    }
}

/// What the journal saw, in order.
#[derive(Default)]
struct MemJournal {
    nonces: Mutex<HashSet<Vec<u8>>>,
    sessions: Mutex<HashSet<Vec<u8>>>,
    entries: Mutex<Vec<String>>,
}

impl MemJournal {
    fn entries(&self) -> Vec<String> {
        self.entries.lock().unwrap().clone()
    }
}

impl Journal for MemJournal {
    type Admitted = ();

    async fn windows(&self, _: &str, _: i64) -> Result<Windows, NodeError> {
        Ok(Windows::default())
    }

    async fn admit(&self, a: Admission<'_>, d: &Decision) -> Result<(), NodeError> {
        assert_eq!(a.kind, Kind::Sign);
        if !self
            .sessions
            .lock()
            .unwrap()
            .insert(a.relay.session_id.clone())
        {
            return Err(NodeError::new(Code::AlreadyExists, "session already ran"));
        }
        if !self.nonces.lock().unwrap().insert(a.nonce.to_vec()) {
            return Err(NodeError::new(Code::AlreadyExists, "nonce already used"));
        }
        if let Verdict::Deny(why) = &d.verdict {
            self.entries.lock().unwrap().push("denied".into());
            return Err(NodeError::not_allowed(format!(
                "denied by the policy: {}",
                why.join("; ")
            )));
        }
        self.entries.lock().unwrap().push("started".into());
        Ok(())
    }

    async fn signed(&self, _: &(), s: &[SignatureOut]) -> Result<u64, NodeError> {
        let mut e = self.entries.lock().unwrap();
        e.push(format!("signed {}", s.len()));
        Ok(e.len() as u64)
    }

    async fn failed(&self, _: &(), error: NodeError) -> NodeError {
        self.entries
            .lock()
            .unwrap()
            .push(format!("failed: {error}"));
        error
    }
}

/// A policy: allow, unless the personal message says "deny".
struct Policy;

impl Decider for Policy {
    fn decide(&self, doc: serde_json::Value) -> Decision {
        let deny = doc.to_string().contains("deny");
        Decision {
            verdict: if deny {
                Verdict::Deny(vec!["the message asks for it".into()])
            } else {
                Verdict::Allow
            },
            bundle_hash: String::new(),
        }
    }
}

struct LoopbackRelay {
    addr: String,
    keys: PartyKeys,
}

impl Relays for LoopbackRelay {
    async fn open(&self, _: Kind, _: &api::RelayRef, roster: Roster) -> Result<Driver, DriveError> {
        common::open_driver(&self.addr, &self.keys, roster).await
    }
}

/// One party of the vault with its ports.
struct Node {
    keys: PartyKeys,
    shares: MemShares,
    journal: MemJournal,
    relay: LoopbackRelay,
}

impl Node {
    fn server(&self) -> Server<'_, MemShares, MemJournal, Policy, LoopbackRelay, SystemClock> {
        Server {
            me: self.keys.party_id(),
            shares: &self.shares,
            journal: &self.journal,
            decider: &Policy,
            relays: &self.relay,
            clock: &SystemClock,
            max_clock_skew_ms: 60_000,
            rules: Rules { raw_hash: true },
        }
    }

    async fn sign(&self, req: &api::SignRequest) -> Result<sign::Signed, NodeError> {
        self.server().sign(req, "spiffe://test/party").await
    }

    fn unseals(&self) -> usize {
        self.shares.unseals.load(Ordering::SeqCst)
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
            Node {
                shares: MemShares {
                    sealed: held.encode().to_vec(),
                    record: record.clone(),
                    unseals: AtomicUsize::new(0),
                },
                journal: MemJournal::default(),
                relay: LoopbackRelay {
                    addr: addr.clone(),
                    keys: k.clone(),
                },
                keys: k,
            }
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
        assert_eq!(n.journal.entries(), vec!["started", "signed 1"]);
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
    assert_eq!(b.journal.entries(), vec!["denied"]);
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
    let record = w.nodes[1].shares.record.clone();
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
