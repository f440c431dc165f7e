//! Keygen, reshare and resolve through the ceremony layer in process: three parties in
//! memory (each with a commit store over its own slots), a real relay on loopback and the
//! real engine. The parties take part exactly as the daemon and the device do
//! (`keygen::check` + `take_part` + the commit, `reshare::check` + `take_part` +
//! `commit`), so a change in the layer that breaks a ceremony fails here in seconds.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use cosigner_api::v1 as api;
use cosigner_node::resolve::{self, Applied, Discard, Verdict};
use cosigner_node::{keygen, reshare};
use cosigner_party::record::members_to_api;
use cosigner_party::{Held, Member, PartyKeys, VaultRecord};
use cosigner_relay::Driver;
use cosigner_relay::commit::{CommitState, Phase};
use cosigner_relay::finish::{self, CommitEnd, CommitStore};
use cosigner_relay::mailbox::Relay;
use prost::Message as _;

/// One party's slots and commit record, in memory (shares kept encoded, as sealed).
#[derive(Default)]
struct Slots {
    current: Option<Vec<u8>>,
    pending: Option<Vec<u8>>,
    previous: Option<Vec<u8>>,
    commit: Option<CommitState>,
    /// Fail the next pending seal (a full disk, a TPM that stopped answering).
    fail_seal: bool,
}

impl Slots {
    fn current(&self) -> Option<Held> {
        self.current.as_ref().map(|b| Held::decode(b).unwrap())
    }
    fn epoch(slot: &Option<Vec<u8>>) -> Option<u64> {
        slot.as_ref()
            .map(|b| Held::decode(b).unwrap().record.epoch())
    }
}

impl CommitStore for Slots {
    type Pending = Held;
    type Error = String;

    async fn save(&mut self, state: &CommitState) -> Result<(), String> {
        self.commit = Some(state.clone());
        Ok(())
    }

    async fn seal_pending(&mut self, pending: Held) -> Result<(), String> {
        if std::mem::take(&mut self.fail_seal) {
            return Err("the disk is full".into());
        }
        self.pending = Some(pending.encode().to_vec());
        Ok(())
    }

    async fn promote(&mut self, _: &str) -> Result<(), String> {
        if let Some(p) = self.pending.take() {
            self.previous = self.current.take();
            self.current = Some(p);
        }
        Ok(())
    }

    async fn retire(&mut self, _: &str) -> Result<(), String> {
        if let Some(c) = self.current.take() {
            self.previous = Some(c);
        }
        Ok(())
    }

    fn fault(&self, _: &str) {}
}

impl Discard for Slots {
    async fn discard(&mut self, state: &CommitState) -> Result<(), String> {
        if Slots::epoch(&self.pending) == Some(state.target.epoch) {
            self.pending = None;
        }
        self.commit = Some(state.clone());
        Ok(())
    }
}

struct World {
    relay: Arc<Relay>,
    addr: String,
    keys: Vec<PartyKeys>,
    members: Vec<Member>,
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
    World {
        relay,
        addr,
        keys,
        members,
    }
}

impl World {
    fn member(&self, k: &PartyKeys) -> Member {
        self.members
            .iter()
            .find(|m| m.id == k.party_id())
            .unwrap()
            .clone()
    }

    fn session(&self, tag: u8) -> api::RelayRef {
        let session = vec![tag; 32];
        let ids: Vec<Vec<u8>> = self.members.iter().map(|m| m.id.to_vec()).collect();
        self.relay.create("test", &session, &ids, 60).unwrap();
        api::RelayRef {
            address: String::new(),
            session_id: session,
        }
    }

    async fn driver(&self, k: &PartyKeys, roster: cosigner_relay::roster::Roster) -> Driver {
        common::open_driver(&self.addr, k, roster).await.unwrap()
    }
}

/// A 2-of-3 keygen of vault "v" requested by the first party; every store ends committed.
async fn keygen_all(w: &World, stores: &mut [Slots]) -> VaultRecord {
    let body = api::KeygenBody {
        vault_id: "v".into(),
        scheme: api::Scheme::EcdsaSecp256k1 as i32,
        committee: Some(members_to_api(2, &w.members)),
        relay: Some(w.session(1)),
    };
    let bytes = body.encode_to_vec();
    let requester = w.keys[0].party_id();
    let runs = w.keys.iter().zip(stores.iter_mut()).map(|(k, store)| {
        let (bytes, body) = (bytes.clone(), body.clone());
        async move {
            let c =
                keygen::check(&bytes, keygen::Parsed { requester, body }, &w.member(k)).unwrap();
            let mut d = w.driver(k, c.plan.roster.clone()).await;
            let held = keygen::take_part(&mut d, &c, k.party_id(), 1)
                .await
                .unwrap();
            let record = held.record.clone();
            let parties = record.members.iter().map(|m| m.id).collect();
            let (end, _) = finish::new_party(&mut d, k, store, &record, held, parties, None).await;
            (end, record)
        }
    });
    let ends = futures_join(runs).await;
    for (end, _) in &ends {
        assert!(matches!(end, CommitEnd::Committed), "{end:?}");
    }
    ends[0].1.clone()
}

/// Runs the parties' futures concurrently (a ceremony needs all of them running).
async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(fs).await
}

/// A refresh of `old` (same committee and threshold) dealt by the first two parties.
async fn reshare_all(
    w: &World,
    stores: &mut [Slots],
    old: &VaultRecord,
    tag: u8,
) -> Vec<CommitEnd> {
    let mut dealers: Vec<[u8; 32]> = w.keys[..2].iter().map(|k| k.party_id()).collect();
    dealers.sort();
    let body = api::ReshareBody {
        vault_id: "v".into(),
        old_epoch: old.epoch(),
        dealers: dealers.iter().map(|d| d.to_vec()).collect(),
        new_committee: Some(members_to_api(2, &w.members)),
        relay: Some(w.session(tag)),
        old_vault: old.encode(),
        scheduled: false,
        old_vault_endorsements: Vec::new(),
    };
    let bytes = body.encode_to_vec();
    let requester = w.keys[0].party_id();
    let runs = w.keys.iter().zip(stores.iter_mut()).map(|(k, store)| {
        let (bytes, body) = (bytes.clone(), body.clone());
        async move {
            let held = store.current().unwrap();
            let c = reshare::check(
                &bytes,
                reshare::Parsed { requester, body },
                Some(&held.record),
                &w.member(k),
            )
            .unwrap();
            let mine = reshare::Mine {
                epoch: Some(held.record.epoch()),
                pending: None,
                share: c.plan.is_dealer.then_some(held),
            };
            let mut d = w.driver(k, c.plan.roster.clone()).await;
            let dealt = reshare::take_part(&mut d, &c, k.party_id(), mine, 2)
                .await
                .unwrap();
            let (end, _) = reshare::commit(&mut d, k, store, &c, dealt, Some(old.epoch())).await;
            end
        }
    });
    futures_join(runs).await
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_then_a_refresh_moves_every_party_to_the_next_epoch_with_the_same_key() {
    let w = world().await;
    let mut stores: Vec<Slots> = (0..3).map(|_| Slots::default()).collect();
    let record = keygen_all(&w, &mut stores).await;
    assert_eq!(record.epoch(), 0);
    for s in &stores {
        assert_eq!(s.current().unwrap().record.public, record.public);
    }
    let ends = reshare_all(&w, &mut stores, &record, 2).await;
    for end in &ends {
        assert!(matches!(end, CommitEnd::Committed), "{end:?}");
    }
    for s in &stores {
        let now = s.current().unwrap();
        assert_eq!(now.record.epoch(), 1);
        assert_eq!(now.record.public.public_key, record.public.public_key);
        assert_eq!(Slots::epoch(&s.previous), Some(0));
        assert_eq!(s.commit.as_ref().unwrap().phase, Phase::Committed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_party_that_cannot_seal_its_share_leaves_the_others_in_doubt_and_resolve_discards() {
    let w = world().await;
    let mut stores: Vec<Slots> = (0..3).map(|_| Slots::default()).collect();
    let record = keygen_all(&w, &mut stores).await;
    // The third party's store fails to seal its new share: it signs no READY, so no party
    // can hold a certificate, and none may promote.
    stores[2].fail_seal = true;
    let ends = reshare_all(&w, &mut stores, &record, 3).await;
    assert!(matches!(ends[2], CommitEnd::Failed(_)), "{:?}", ends[2]);
    for (end, s) in ends[..2].iter().zip(&stores[..2]) {
        assert!(matches!(end, CommitEnd::InDoubt(_)), "{end:?}");
        // Each kept both its current share (epoch 0) and its pending one (epoch 1).
        assert_eq!(Slots::epoch(&s.current), Some(0));
        assert_eq!(Slots::epoch(&s.pending), Some(1));
    }
    // Every new party reported and none holds a certificate: resolve discards, and the
    // vault signs at epoch 0 as before.
    for s in &mut stores[..2] {
        let state = s.commit.clone().unwrap();
        let (applied, state) = resolve::apply(s, state, Verdict::Discard, 3).await.unwrap();
        assert_eq!(applied, Applied::Discarded);
        assert_eq!(state.phase, Phase::Discarded);
        assert_eq!(Slots::epoch(&s.pending), None);
        assert_eq!(Slots::epoch(&s.current), Some(0));
    }
}
