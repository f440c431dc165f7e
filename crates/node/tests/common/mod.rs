//! What the in-process tests of the ceremony layer share: a real relay on loopback and a
//! party's driver into it.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::relay_server::RelayServer;
use cosigner_party::PartyKeys;
use cosigner_relay::mailbox::{Limits, Relay};
use cosigner_relay::roster::Roster;
use cosigner_relay::service::RelayService;
use cosigner_relay::{DriveError, Driver, SessionSpec};
use tonic::transport::{Channel, Server};

/// A relay served on a free loopback port: the relay (to create sessions) and its address.
pub async fn serve_relay() -> (Arc<Relay>, String) {
    let relay = Arc::new(Relay::new(Limits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .add_service(RelayServer::new(RelayService::new(relay.clone(), |_| None)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (relay, addr)
}

/// `keys`' driver in the session `roster` names, on the relay at `addr`.
pub async fn open_driver(
    addr: &str,
    keys: &PartyKeys,
    roster: Roster,
) -> Result<Driver, DriveError> {
    let ch = Channel::from_shared(addr.to_string())
        .map_err(|e| DriveError::Relay(e.to_string()))?
        .connect()
        .await
        .map_err(|e| DriveError::Relay(e.to_string()))?;
    Driver::open(
        RelayClient::new(ch),
        keys.clone(),
        SessionSpec {
            roster,
            round_timeout: Duration::from_secs(10),
            fault: None,
        },
    )
    .await
}

// ---- the ports, in memory ----

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use cosigner_api::v1::RelayRef;
use cosigner_node::facts::Windows;
use cosigner_node::gate::{Changing, End, Ending, Gate, Ledger, Outcome, Ticket};
use cosigner_node::journal::Gated;
use cosigner_node::ports::{Admission, Decider, Kind, Observer, Relays, Shares, SystemClock};
use cosigner_node::resolve::Discard;
use cosigner_node::{Code, NodeError};
use cosigner_party::{Held, VaultRecord};
use cosigner_policy::{Decision, Verdict};
use cosigner_relay::commit::CommitState;
use cosigner_relay::finish::CommitStore;

/// One party's slots and commit record (shares kept encoded, as sealed), and how often a
/// share was unsealed.
#[derive(Default)]
pub struct Slots {
    pub current: Option<Vec<u8>>,
    pub pending: Option<Vec<u8>>,
    pub previous: Option<Vec<u8>>,
    pub commit: Option<CommitState>,
    /// Fail the next pending seal (a full disk, a TPM that stopped answering).
    pub fail_seal: bool,
    /// Fail the next discard with this kind of error (a busy TPM, a damaged file).
    pub fail_discard: Option<Code>,
    pub unseals: usize,
}

pub fn epoch_of(slot: &Option<Vec<u8>>) -> Option<u64> {
    slot.as_ref()
        .map(|b| Held::decode(b).unwrap().record.epoch())
}

/// A party's store: the Shares port and the commit store it hands out share the slots.
#[derive(Clone, Default)]
pub struct Store(Arc<Mutex<Slots>>);

impl Store {
    pub fn holding(held: &Held) -> Store {
        let s = Store::default();
        s.lock().current = Some(held.encode().to_vec());
        s
    }

    pub fn lock(&self) -> MutexGuard<'_, Slots> {
        self.0.lock().unwrap()
    }

    pub fn current(&self) -> Option<Held> {
        self.lock()
            .current
            .as_ref()
            .map(|b| Held::decode(b).unwrap())
    }

    pub fn unseals(&self) -> usize {
        self.lock().unseals
    }

    fn record(&self) -> Option<VaultRecord> {
        self.current().map(|h| h.record)
    }
}

fn not_found(vault: &str) -> NodeError {
    NodeError::new(
        Code::NotFound,
        format!("this party holds no share of vault {vault:?}"),
    )
}

impl Shares for Store {
    async fn signing_record(&self, vault: &str) -> Result<VaultRecord, NodeError> {
        self.record()
            .filter(|r| r.vault_id() == vault)
            .ok_or_else(|| not_found(vault))
    }

    async fn pending(&self, _: &str) -> Result<Option<u64>, NodeError> {
        Ok(epoch_of(&self.lock().pending))
    }

    async fn unseal(&self, vault: &str) -> Result<Held, NodeError> {
        let mut s = self.lock();
        s.unseals += 1;
        let bytes = s.current.clone().ok_or_else(|| not_found(vault))?;
        Held::decode(&bytes).map_err(|e| NodeError::internal(e.to_string()))
    }

    async fn vacant(&self, vault: &str) -> Result<(), NodeError> {
        let s = self.lock();
        if s.current.is_some() || s.pending.is_some() || s.previous.is_some() {
            return Err(NodeError::new(
                Code::AlreadyExists,
                format!("this party already holds a share of vault {vault:?}"),
            ));
        }
        if s.commit.as_ref().is_some_and(|c| c.phase.needs_resolve()) {
            return Err(NodeError::new(Code::FailedPrecondition, "in doubt"));
        }
        Ok(())
    }

    async fn reshare_record(&self, vault: &str) -> Result<Option<VaultRecord>, NodeError> {
        Ok(self.record().filter(|r| r.vault_id() == vault))
    }

    async fn slots(&self, _: &str) -> Result<cosigner_node::ports::Slots, NodeError> {
        let s = self.lock();
        Ok(cosigner_node::ports::Slots {
            current: epoch_of(&s.current),
            pending: epoch_of(&s.pending),
            previous: epoch_of(&s.previous),
        })
    }

    async fn commit_state(&self, _: &str) -> Result<Option<CommitState>, NodeError> {
        Ok(self.lock().commit.clone())
    }

    async fn check_pending(&self, vault: &str) -> Result<(), NodeError> {
        let mut s = self.lock();
        s.unseals += 1;
        let bytes = s.pending.clone().ok_or_else(|| not_found(vault))?;
        Held::decode(&bytes)
            .map(drop)
            .map_err(|e| NodeError::internal(e.to_string()))
    }

    async fn view(&self, vault: &str) -> Result<Option<cosigner_node::ports::View>, NodeError> {
        let s = self.lock();
        let slots = cosigner_node::ports::Slots {
            current: epoch_of(&s.current),
            pending: epoch_of(&s.pending),
            previous: epoch_of(&s.previous),
        };
        let Some(bytes) = s
            .current
            .as_ref()
            .or(s.pending.as_ref())
            .or(s.previous.as_ref())
        else {
            return Ok(None);
        };
        let record = Held::decode(bytes).unwrap().record;
        if record.vault_id() != vault {
            return Ok(None);
        }
        let standing = cosigner_node::standing::standing(&slots, s.commit.as_ref(), None);
        Ok(Some(cosigner_node::ports::View {
            record,
            slots,
            commit: s.commit.clone(),
            standing,
        }))
    }

    type Commit = Store;

    fn commit(&self, _: Kind, _: u64) -> Store {
        self.clone()
    }
}

impl CommitStore for Store {
    type Pending = Held;
    type Error = NodeError;

    async fn save(&mut self, state: &CommitState) -> Result<(), NodeError> {
        self.lock().commit = Some(state.clone());
        Ok(())
    }

    async fn seal_pending(&mut self, pending: Held) -> Result<(), NodeError> {
        let mut s = self.lock();
        if std::mem::take(&mut s.fail_seal) {
            return Err(NodeError::new(Code::Unavailable, "the disk is full"));
        }
        s.pending = Some(pending.encode().to_vec());
        Ok(())
    }

    async fn promote(&mut self, _: &str) -> Result<(), NodeError> {
        let mut s = self.lock();
        if let Some(p) = s.pending.take() {
            s.previous = s.current.take();
            s.current = Some(p);
        }
        Ok(())
    }

    async fn retire(&mut self, _: &str) -> Result<(), NodeError> {
        let mut s = self.lock();
        if let Some(c) = s.current.take() {
            s.previous = Some(c);
        }
        Ok(())
    }

    fn fault(&self, _: &str) {}
}

impl Discard for Store {
    async fn discard(&mut self, state: &CommitState) -> Result<(), NodeError> {
        let mut s = self.lock();
        if let Some(code) = s.fail_discard.take() {
            return Err(NodeError::new(code, "the store cannot write now"));
        }
        if epoch_of(&s.pending) == Some(state.target.epoch) {
            s.pending = None;
        }
        s.commit = Some(state.clone());
        Ok(())
    }
}

/// The ledger in memory: what it recorded, in order, with the nonces and sessions it
/// indexed; and, as the observer, the decisions reported. The gate in front of it is the
/// real one ([`Gated`]).
#[derive(Default)]
pub struct MemLedger {
    pub decided: Mutex<Vec<String>>,
    nonces: Mutex<HashSet<Vec<u8>>>,
    sessions: Mutex<HashSet<Vec<u8>>>,
    entries: Mutex<Vec<String>>,
}

impl MemLedger {
    pub fn entries(&self) -> Vec<String> {
        self.entries.lock().unwrap().clone()
    }

    fn push(&self, e: String) -> u64 {
        let mut v = self.entries.lock().unwrap();
        v.push(e);
        v.len() as u64
    }

    /// Indexes the admission's nonce and session, as the history does, and appends `what`.
    fn remember(&self, a: &Admission<'_>, what: &str) -> u64 {
        self.nonces.lock().unwrap().insert(a.nonce.to_vec());
        self.sessions
            .lock()
            .unwrap()
            .insert(a.relay.session_id.clone());
        self.push(what.into())
    }
}

impl Ledger for MemLedger {
    type Entry = ();

    async fn session_seen(&self, s: &[u8]) -> Result<Option<u64>, NodeError> {
        Ok(self.sessions.lock().unwrap().contains(s).then_some(0))
    }

    async fn nonce_seen(&self, _: &[u8; 32], n: &[u8]) -> Result<Option<u64>, NodeError> {
        Ok(self.nonces.lock().unwrap().contains(n).then_some(0))
    }

    async fn denied(&self, a: &Admission<'_>, _: &Decision) -> Result<u64, NodeError> {
        Ok(self.remember(a, "denied"))
    }

    async fn started(&self, a: &Admission<'_>, _: &Decision) -> Result<(), NodeError> {
        self.remember(a, "started");
        Ok(())
    }

    async fn ended(&self, _: &Ticket<()>, end: End) -> Result<u64, NodeError> {
        let line = match (end.outcome, &end.ending, end.epoch) {
            (Outcome::Succeeded, Ending::Signatures(s), _) => format!("signed {}", s.len()),
            (Outcome::Succeeded, _, Some(e)) => format!("committed {e}"),
            (Outcome::InDoubt, _, Some(e)) => format!("in doubt {e}"),
            (Outcome::Failed, Ending::Error(e), _) => format!("failed: {e}"),
            (Outcome::Aborted, Ending::Error(e), _) => format!("aborted: {e}"),
            (o, e, epoch) => format!("{o:?} {e:?} {epoch:?}"),
        };
        Ok(self.push(line))
    }

    async fn windows(&self, _: &str, _: i64) -> Result<Windows, NodeError> {
        Ok(Windows::default())
    }
}

/// A party's journal: the real gate and claims over a [`MemLedger`] (leaked: a test
/// party lives as long as its test).
pub type MemJournal = Gated<'static, MemLedger>;

pub fn mem_journal() -> MemJournal {
    Gated {
        gate: Box::leak(Box::new(Gate::new(16))),
        ledger: Box::leak(Box::new(MemLedger::default())),
        changing: Box::leak(Box::new(Changing::default())),
    }
}

impl Observer for MemLedger {
    fn decided(&self, kind: Kind, d: &Decision) {
        let verdict = match d.verdict {
            Verdict::Allow => "allow",
            _ => "deny",
        };
        self.decided
            .lock()
            .unwrap()
            .push(format!("{kind:?} {verdict}"));
    }
}

/// A policy (a fixed rule, not a bundle): allow, unless the request mentions "deny".
pub struct Policy;

impl Decider for Policy {
    fn decide(&self, doc: serde_json::Value) -> Decision {
        let deny = doc.to_string().contains("deny");
        Decision {
            verdict: if deny {
                Verdict::Deny(vec!["the request asks for it".into()])
            } else {
                Verdict::Allow
            },
            bundle_hash: String::new(),
        }
    }
}

/// This party's drivers into the loopback relay.
pub struct LoopbackRelay {
    pub addr: String,
    pub keys: PartyKeys,
}

impl Relays for LoopbackRelay {
    async fn open(&self, _: Kind, _: &RelayRef, roster: Roster) -> Result<Driver, DriveError> {
        open_driver(&self.addr, &self.keys, roster).await
    }
}

/// One party with its ports in memory.
pub struct Node {
    pub keys: PartyKeys,
    /// The Bitcoin network binding (none unless a test sets one).
    pub networks: cosigner_node::payload::Networks,
    pub store: Store,
    pub journal: MemJournal,
    pub relay: LoopbackRelay,
}

impl Node {
    /// A party on the relay at `addr` holding what `store` holds.
    pub fn new(keys: PartyKeys, store: Store, addr: &str) -> Node {
        Node {
            networks: Default::default(),
            store,
            journal: mem_journal(),
            relay: LoopbackRelay {
                addr: addr.to_string(),
                keys: keys.clone(),
            },
            keys,
        }
    }

    /// The party serving requests; `allowed` may request keygens; `raw_hash` as a daemon
    /// (true) or a device (false).
    pub fn server<'a>(
        &'a self,
        allowed: &'a [[u8; 32]],
        raw_hash: bool,
    ) -> cosigner_node::server::Server<
        'a,
        Store,
        MemJournal,
        Policy,
        LoopbackRelay,
        SystemClock,
        MemLedger,
    > {
        cosigner_node::server::Server {
            keys: &self.keys,
            shares: &self.store,
            journal: &self.journal,
            decider: &Policy,
            relays: &self.relay,
            clock: &SystemClock,
            observer: self.journal.ledger,
            max_clock_skew_ms: 60_000,
            rules: cosigner_node::sign::Rules { raw_hash },
            networks: &self.networks,
            allowed_requesters: allowed,
        }
    }
}
