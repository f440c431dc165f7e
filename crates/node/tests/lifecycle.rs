//! Keygen, reshare and resolve through the ceremony layer in process: three parties in
//! memory, each a [`Server`] over its own ports (slots and commit record in memory, a
//! journal with nonce and session memory, a fixed policy rule), a real relay on loopback
//! and the real engine. Every party runs the whole pipeline a daemon runs (check, decide,
//! admit, unseal last, rounds, commit, record) and the same resolve, so a change in the
//! layer that breaks a ceremony, a refusal, a commit or a repair fails here in seconds.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Node, Store, epoch_of};
use cosigner_api::v1 as api;
use cosigner_node::coordinator::sign_request;
use cosigner_node::ports::{Clock, SystemClock};
use cosigner_node::resolve::{Applied, Resolution};
use cosigner_node::{Code, NodeError, keygen, previous, reshare};
use cosigner_party::record::members_to_api;
use cosigner_party::{Member, PartyKeys, VaultRecord};
use cosigner_relay::commit::{Holding, Phase, Report};
use cosigner_relay::mailbox::Relay;

struct World {
    relay: Arc<Relay>,
    nodes: Vec<Node>,
    members: Vec<Member>,
    /// The parties allowed to request a keygen: the first one.
    allowed: Vec<[u8; 32]>,
}

async fn world() -> World {
    let (relay, addr) = common::serve_relay().await;
    let keys: Vec<PartyKeys> = (0..3).map(|_| PartyKeys::generate()).collect();
    let mut members: Vec<Member> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.member(&format!("p{i}")))
        .collect();
    members.sort_by_key(|m| m.id);
    let allowed = vec![keys[0].party_id()];
    let nodes = keys
        .into_iter()
        .map(|k| Node::new(k, Store::default(), &addr))
        .collect();
    World {
        relay,
        nodes,
        members,
        allowed,
    }
}

impl World {
    fn session(&self, tag: u8) -> api::RelayRef {
        let session = vec![tag; 32];
        let ids: Vec<Vec<u8>> = self.members.iter().map(|m| m.id.to_vec()).collect();
        self.relay.create("test", &session, &ids, 60).unwrap();
        api::RelayRef {
            address: String::new(),
            session_id: session,
        }
    }

    /// A 2-of-3 keygen request for `vault` signed by `by`.
    fn keygen_request(&self, by: &PartyKeys, vault: &str, tag: u8) -> api::KeygenRequest {
        let body = api::KeygenBody {
            vault_id: vault.into(),
            scheme: api::Scheme::EcdsaSecp256k1 as i32,
            committee: Some(members_to_api(2, &self.members)),
            relay: Some(self.session(tag)),
        };
        let s = sign_request(by, keygen::METHOD, &body, SystemClock.now_ms());
        api::KeygenRequest {
            body: s.body,
            auth: Some(s.auth),
        }
    }

    /// A refresh of `old` (same committee and threshold) dealt by the first two parties,
    /// requested by the first.
    fn refresh_request(&self, old: &VaultRecord, tag: u8) -> api::ReshareRequest {
        let mut dealers: Vec<[u8; 32]> =
            self.nodes[..2].iter().map(|n| n.keys.party_id()).collect();
        dealers.sort();
        let body = api::ReshareBody {
            vault_id: old.vault_id().into(),
            old_epoch: old.epoch(),
            dealers: dealers.iter().map(|d| d.to_vec()).collect(),
            new_committee: Some(members_to_api(2, &self.members)),
            relay: Some(self.session(tag)),
            old_vault: old.encode(),
            scheduled: false,
            old_vault_endorsements: Vec::new(),
        };
        let s = sign_request(
            &self.nodes[0].keys,
            reshare::METHOD,
            &body,
            SystemClock.now_ms(),
        );
        api::ReshareRequest {
            body: s.body,
            auth: Some(s.auth),
        }
    }

    /// Every party serves `req` at once (a ceremony needs all of them running).
    async fn keygen(&self, req: &api::KeygenRequest) -> Vec<Result<keygen::Generated, NodeError>> {
        futures_util::future::join_all(
            self.nodes
                .iter()
                .map(|n| async move { n.server(&self.allowed, false).keygen(req, "test").await }),
        )
        .await
    }

    async fn reshare(
        &self,
        req: &api::ReshareRequest,
    ) -> Vec<Result<reshare::Reshared, NodeError>> {
        futures_util::future::join_all(
            self.nodes
                .iter()
                .map(|n| async move { n.server(&self.allowed, false).reshare(req, "test").await }),
        )
        .await
    }

    /// A committed 2-of-3 keygen of vault "v".
    async fn vault(&self) -> VaultRecord {
        let req = self.keygen_request(&self.nodes[0].keys, "v", 1);
        let out = self.keygen(&req).await;
        let records: Vec<VaultRecord> = out.into_iter().map(|r| r.unwrap().record).collect();
        assert!(records.iter().all(|r| r.public == records[0].public));
        records[0].clone()
    }

    fn unseals(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| n.store.unseals()).collect()
    }
}

/// `n` resolves its commit of vault "v" from `reports`.
async fn resolve(w: &World, n: &Node, reports: &[Report]) -> Result<Resolution, NodeError> {
    n.server(&w.allowed, false).resolve("v", reports, &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_then_a_refresh_moves_every_party_to_the_next_epoch_with_the_same_key() {
    let w = world().await;
    let record = w.vault().await;
    assert_eq!(record.epoch(), 0);
    for n in &w.nodes {
        assert_eq!(n.store.current().unwrap().record.public, record.public);
        assert_eq!(n.journal.ledger.entries(), vec!["started", "committed 0"]);
    }
    assert_eq!(w.unseals(), vec![0, 0, 0], "a keygen unseals nothing");
    let out = w.reshare(&w.refresh_request(&record, 2)).await;
    for r in out {
        let r = r.unwrap();
        assert!(matches!(r.part, reshare::Part::New(_)));
    }
    // Only the two dealers unsealed their share, once each.
    let mut dealt: Vec<usize> = w.unseals();
    dealt.sort();
    assert_eq!(dealt, vec![0, 1, 1]);
    for n in &w.nodes {
        let now = n.store.current().unwrap();
        assert_eq!(now.record.epoch(), 1);
        assert_eq!(now.record.public.public_key, record.public.public_key);
        let s = n.store.lock();
        assert_eq!(epoch_of(&s.previous), Some(0));
        assert_eq!(s.commit.as_ref().unwrap().phase, Phase::Committed);
        // The previous share goes after a signature at epoch 1, or a week after the
        // certified commit (the commit record holds a real certificate).
        let slots = cosigner_node::ports::Slots {
            current: epoch_of(&s.current),
            pending: None,
            previous: epoch_of(&s.previous),
        };
        assert_eq!(previous::after_signature(&slots, 1), Some(0));
        assert_eq!(previous::after_signature(&slots, 0), None);
        let keep = previous::KEEP_AFTER_COMMIT_MS;
        let at = s.commit.as_ref().unwrap().updated_at_ms;
        assert_eq!(
            previous::expired(&slots, s.commit.as_ref(), at + keep - 1, keep),
            None
        );
        let e = previous::expired(&slots, s.commit.as_ref(), at + keep, keep).unwrap();
        assert_eq!((e.previous, e.certified_epoch), (0, 1));
        drop(s);
        assert_eq!(
            n.journal.ledger.entries(),
            vec!["started", "committed 0", "started", "committed 1"]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_and_reshare_refusals_come_before_anything_runs() {
    let w = world().await;
    let n1 = &w.nodes[1];
    // A keygen requester not on the allow list: refused before anything is read.
    let req = w.keygen_request(&w.nodes[2].keys, "v", 1);
    let e = n1
        .server(&w.allowed, false)
        .keygen(&req, "test")
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::PermissionDenied && e.to_string().contains("allowed_requesters"),
        "{e}"
    );
    // A policy denial: recorded, nothing runs; the same request again is a replay.
    let denied = w.keygen_request(&w.nodes[0].keys, "deny-me", 2);
    let e = n1
        .server(&w.allowed, false)
        .keygen(&denied, "test")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("denied by the policy"), "{e}");
    let e = n1
        .server(&w.allowed, false)
        .keygen(&denied, "test")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert_eq!(n1.journal.ledger.entries(), vec!["denied"]);
    assert!(n1.store.current().is_none());
    // Only requests that reached the policy were observed as decided: the denied one and
    // its replay (decided, then refused at the gate), not the requester off the list.
    assert_eq!(
        *n1.journal.ledger.decided.lock().unwrap(),
        vec!["Keygen deny", "Keygen deny"]
    );

    let record = w.vault().await;
    // A second keygen of a vault this party holds.
    let req = w.keygen_request(&w.nodes[0].keys, "v", 3);
    let e = n1
        .server(&w.allowed, false)
        .keygen(&req, "test")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    // A reshare from an old record that is not this party's: the request's copy differs.
    let mut other = record.clone();
    other.public.chain_code = [9; 32];
    let e = n1
        .server(&w.allowed, false)
        .reshare(&w.refresh_request(&other, 4), "test")
        .await
        .err()
        .unwrap();
    assert!(
        e.code() == Code::FailedPrecondition || e.code() == Code::InvalidArgument,
        "{e}"
    );
    // A refresh that ran, sent again: its old record is stale now, refused before the gate.
    let req = w.refresh_request(&record, 5);
    for r in w.reshare(&req).await {
        r.unwrap();
    }
    let before = w.unseals();
    let e = n1
        .server(&w.allowed, false)
        .reshare(&req, "test")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert_eq!(w.unseals(), before, "a refusal unsealed a share");
    assert_eq!(
        n1.journal.ledger.entries(),
        vec!["denied", "started", "committed 0", "started", "committed 1"],
        "refusals before the gate leave nothing in the journal; the gate's own are its entries"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_party_that_cannot_seal_its_share_leaves_the_others_in_doubt_and_resolve_discards() {
    let w = world().await;
    let record = w.vault().await;
    // The third party's store fails to seal its new share: it signs no READY, so no party
    // can hold a certificate, and none may promote.
    w.nodes[2].store.lock().fail_seal = true;
    let out = w.reshare(&w.refresh_request(&record, 3)).await;
    let codes: Vec<Code> = out
        .iter()
        .map(|r| r.as_ref().err().unwrap().code())
        .collect();
    assert_eq!(
        codes,
        vec![Code::Unavailable, Code::Unavailable, Code::Aborted],
        "two in doubt, one failed"
    );
    let last = w.nodes[2].journal.ledger.entries().pop().unwrap();
    assert!(last.starts_with("failed: "), "{last}");
    for n in &w.nodes[..2] {
        assert_eq!(
            n.journal.ledger.entries().last().map(String::as_str),
            Some("in doubt 1")
        );
        let s = n.store.lock();
        // Each kept both its current share (epoch 0) and its pending one (epoch 1).
        assert_eq!(epoch_of(&s.current), Some(0));
        assert_eq!(epoch_of(&s.pending), Some(1));
    }
    // Every party's signed report on its commit, about the ceremony in question.
    let context = w.nodes[0]
        .store
        .lock()
        .commit
        .as_ref()
        .unwrap()
        .target
        .context;
    let reports: Vec<Report> = w
        .nodes
        .iter()
        .map(|n| {
            let s = n.store.lock();
            Report::answer(
                &n.keys,
                "v",
                s.commit.as_ref(),
                Holding {
                    current_epoch: epoch_of(&s.current),
                    pending_epoch: epoch_of(&s.pending),
                },
                Some(context),
                SystemClock.now_ms(),
            )
        })
        .collect();
    let n0 = &w.nodes[0];
    // Its own word alone decides nothing.
    let own = resolve(&w, n0, &reports[..1]).await.unwrap();
    assert!(matches!(own, Resolution::Undecided(_)));
    assert_eq!(epoch_of(&n0.store.lock().pending), Some(1));
    // A store that cannot write: the resolve fails with the store's own kind of error
    // (not a generic internal one), and nothing moved.
    n0.store.lock().fail_discard = Some(Code::ResourceExhausted);
    let e = resolve(&w, n0, &reports).await.err().unwrap();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert_eq!(epoch_of(&n0.store.lock().pending), Some(1));
    // Every new party reported and none holds a certificate: resolve discards, and the
    // vault signs at epoch 0 as before.
    for n in &w.nodes[..2] {
        let unseals = n.store.unseals();
        let done = resolve(&w, n, &reports).await.unwrap();
        let Resolution::Applied { applied, state, .. } = done else {
            panic!("undecided with every report");
        };
        assert_eq!(applied, Applied::Discarded);
        assert_eq!(state.phase, Phase::Discarded);
        assert_eq!(n.store.unseals(), unseals, "a discard unseals nothing");
        let s = n.store.lock();
        assert_eq!(epoch_of(&s.pending), None);
        assert_eq!(epoch_of(&s.current), Some(0));
    }
    // Decided once: asking again is refused, naming the phase.
    let e = resolve(&w, n0, &reports).await.err().unwrap();
    assert!(
        e.code() == Code::FailedPrecondition && e.to_string().contains("already decided"),
        "{e}"
    );
}

/// A GetVaultRecord request for vault `vault`, signed by `by` when given.
fn record_request(by: Option<&PartyKeys>, vault: &str) -> api::VaultRecordRequest {
    let body = api::VaultRecordBody {
        vault_id: vault.into(),
        about: Vec::new(),
    };
    match by {
        Some(k) => {
            let s = sign_request(
                k,
                cosigner_node::request::GET_VAULT_RECORD,
                &body,
                SystemClock.now_ms(),
            );
            api::VaultRecordRequest {
                body: s.body,
                auth: Some(s.auth),
            }
        }
        None => api::VaultRecordRequest {
            body: prost::Message::encode_to_vec(&body),
            auth: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vault_record_answers_members_and_operators_from_the_own_record_without_unsealing() {
    let w = world().await;
    let record = w.vault().await;
    let n = &w.nodes[1];
    let server = n.server(&w.allowed, false);

    // A member party, signed: the record, an endorsement, a signed report.
    let member = &w.nodes[2].keys;
    let r = server
        .vault_record(&record_request(Some(member), "v"), true)
        .await
        .unwrap();
    assert_eq!(r.state, "active");
    assert_eq!(r.epoch, 0);
    assert_eq!(r.party_id, n.keys.party_id().to_vec());
    assert_eq!(
        VaultRecord::decode(&r.record).unwrap().public,
        record.public
    );
    let endorsements = [r.endorsement.clone().unwrap()];
    assert_eq!(
        cosigner_relay::roster::check_endorsements(&record, &endorsements).unwrap(),
        1
    );
    let report = Report::decode(&r.commit_report).unwrap();
    assert!(report.verify());
    assert_eq!(report.party, n.keys.party_id());
    assert_eq!(report.current_epoch, Some(0));

    // An operator's certificate needs no request signature.
    let op = server
        .vault_record(&record_request(None, "v"), false)
        .await
        .unwrap();
    assert_eq!(op.record, r.record);

    // A party that is not a member, or that did not sign, gets nothing.
    let stranger = PartyKeys::generate();
    let e = server
        .vault_record(&record_request(Some(&stranger), "v"), true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = server
        .vault_record(&record_request(None, "v"), true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    // A vault it holds nothing of: a signed report that says so.
    let none = server
        .vault_record(&record_request(None, "other"), false)
        .await
        .unwrap();
    assert_eq!(none.state, "none");
    assert!(none.record.is_empty() && none.endorsement.is_none());
    let report = Report::decode(&none.commit_report).unwrap();
    assert!(report.verify() && report.current_epoch.is_none());

    // While a keygen, reshare or resolve of the vault runs here, the report would be
    // stale at once: refused, and asked again later.
    let claim = cosigner_node::ports::Journal::exclusive(&n.journal, "v").unwrap();
    let e = server
        .vault_record(&record_request(None, "v"), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    drop(claim);

    // A commit in doubt: no endorsement for a record not in use.
    n.store.lock().commit.as_mut().unwrap().phase = Phase::InDoubt;
    let doubt = server
        .vault_record(&record_request(None, "v"), false)
        .await
        .unwrap();
    assert_eq!(doubt.state, "in_doubt");
    assert!(doubt.endorsement.is_none());

    assert_eq!(w.unseals(), vec![0, 0, 0], "GetVaultRecord unseals nothing");
}
