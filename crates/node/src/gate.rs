//! The gate: what every ceremony request passes after its checks and the policy's decision,
//! before anything is unsealed or sent.
//!
//! - the relay session id has a sane length and was never used here: recent ids are
//!   remembered in memory (a session runs once per process), older ones asked of the ledger
//!   (the history survives restarts);
//! - a ceremony slot is free (a bounded number run at once);
//! - the request's nonce was never used by its requester;
//! - the policy's decision is recorded: a denial (with its nonce, so it cannot be replayed)
//!   and answered with its reasons, an allowed request as started. Nothing runs that the
//!   ledger did not take.
//!
//! "Nonce unseen, then recorded" is one step: a request's (requester, nonce) is reserved in
//! memory before the ledger is asked and until its entry is written, so two copies of one
//! request sent at once cannot both pass, while requests with other nonces never wait for
//! each other's ledger writes.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cosigner_policy::{Decision, Verdict};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Code, NodeError};
use crate::facts::Windows;
use crate::ports::{Admission, Kind, SignatureOut};

/// How long a used relay session id is remembered in memory (relay sessions live at most
/// an hour; the ledger remembers beyond).
pub const SESSION_MEMORY: Duration = Duration::from_secs(2 * 3600);

/// Where the gate records what it admits and denies (the daemon: its history).
pub trait Ledger {
    /// What the ledger keeps for an admitted request, carried by its ticket.
    type Entry;
    /// The entry of an earlier ceremony on `session`, if any.
    fn session_seen(
        &self,
        session: &[u8],
    ) -> impl Future<Output = Result<Option<u64>, NodeError>> + Send;
    /// The entry of an earlier request by `requester` with `nonce`, if any.
    fn nonce_seen(
        &self,
        requester: &[u8; 32],
        nonce: &[u8],
    ) -> impl Future<Output = Result<Option<u64>, NodeError>> + Send;
    /// Records a denial; returns its entry number.
    fn denied(
        &self,
        a: &Admission<'_>,
        decision: &Decision,
    ) -> impl Future<Output = Result<u64, NodeError>> + Send;
    /// Records the start of an admitted request.
    fn started(
        &self,
        a: &Admission<'_>,
        decision: &Decision,
    ) -> impl Future<Output = Result<Self::Entry, NodeError>> + Send;
    /// Records how an admitted request ended; returns its entry number. Only then may the
    /// answer leave.
    fn ended(
        &self,
        ticket: &Ticket<Self::Entry>,
        end: End,
    ) -> impl Future<Output = Result<u64, NodeError>> + Send;
    /// The vault's recent use, for the policy.
    fn windows(
        &self,
        vault: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Windows, NodeError>> + Send;
}

/// How an admitted request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Could not run (the relay unreachable, a store failed, the engine's bug).
    Failed,
    /// Stopped by an ABORT, a timeout or a bad message.
    Aborted,
    /// A keygen or reshare ended without a certificate: the new share waits as pending.
    InDoubt,
}

impl Outcome {
    /// How a failure ends: stopped or could not run.
    pub fn of(error: &NodeError) -> Outcome {
        if error.stopped() {
            Outcome::Aborted
        } else {
            Outcome::Failed
        }
    }
}

/// What the entry of an ended request keeps besides its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Signatures(Vec<SignatureOut>),
    /// A keygen's or reshare's vault key.
    PublicKey(Vec<u8>),
    Error(String),
    /// A ceremony that ended with an ABORT carrying evidence: kept whole, so the blame can
    /// be checked again from the record.
    Blame {
        error: String,
        accuser: [u8; 32],
        accused: Option<[u8; 32]>,
        /// What checking the evidence found.
        finding: String,
        /// The ABORT envelope, encoded.
        abort: Vec<u8>,
    },
}

/// How an admitted request ended, as its ledger entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub outcome: Outcome,
    pub ending: Ending,
    /// The epoch the vault is at afterwards, when a keygen or reshare moved it.
    pub epoch: Option<u64>,
}

impl End {
    /// A failure, with its blame evidence when the ceremony ended with one.
    pub fn failed(error: &NodeError) -> End {
        let text = error.to_string();
        let ending = match error.drive().and_then(|e| e.blamed()) {
            None => Ending::Error(text),
            Some(b) => Ending::Blame {
                error: text,
                accuser: b.verdict.accuser,
                accused: b.verdict.accused,
                finding: b.verdict.summary(),
                abort: prost::Message::encode_to_vec(&b.abort),
            },
        };
        End {
            outcome: Outcome::of(error),
            ending,
            epoch: None,
        }
    }
}

/// Session ids in the order they were used, forgotten after [`SESSION_MEMORY`].
#[derive(Default)]
struct UsedSessions {
    set: HashSet<Vec<u8>>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl UsedSessions {
    /// False if `id` was used within the memory.
    fn insert(&mut self, id: &[u8], now: Instant) -> bool {
        while let Some((at, old)) = self.order.front() {
            if now.duration_since(*at) < SESSION_MEMORY {
                break;
            }
            self.set.remove(old);
            self.order.pop_front();
        }
        if !self.set.insert(id.to_vec()) {
            return false;
        }
        self.order.push_back((now, id.to_vec()));
        true
    }
}

/// An admitted request: holds its ceremony slot until dropped.
pub struct Ticket<E> {
    pub entry: E,
    pub kind: Kind,
    pub vault_id: String,
    pub session: Vec<u8>,
    /// When the gate admitted it (the start of the duration metric).
    pub admitted: Instant,
    _permit: OwnedSemaphorePermit,
}

pub struct Gate {
    slots: Arc<Semaphore>,
    max: usize,
    sessions: Mutex<UsedSessions>,
    /// (requester, nonce) of the requests between "nonce unseen" and "recorded".
    nonces: Arc<Mutex<HashSet<Vec<u8>>>>,
}

impl Gate {
    /// A gate that lets `max_concurrent` ceremonies run at once.
    pub fn new(max_concurrent: usize) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max: max_concurrent,
            sessions: Mutex::new(UsedSessions::default()),
            nonces: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// How many ceremonies hold a slot now.
    pub fn running(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Admits `a` (see the module docs), or refuses it naming why.
    pub async fn admit<L: Ledger>(
        &self,
        ledger: &L,
        a: Admission<'_>,
        decision: &Decision,
    ) -> Result<Ticket<L::Entry>, NodeError> {
        let session = &a.relay.session_id;
        if !(16..=64).contains(&session.len()) {
            return Err(NodeError::invalid(
                "relay.session_id",
                format!("{} bytes; 16 to 64 are required", session.len()),
            ));
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            NodeError::new(
                Code::ResourceExhausted,
                format!(
                    "{} ceremonies are already running (ceremonies.max_concurrent)",
                    self.max
                ),
            )
        })?;
        let _reserved = Reserved::take(&self.nonces, &a.requester, a.nonce)?;
        let fresh = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session, Instant::now());
        let short = cosigner_party::keys::short(session);
        if !fresh {
            return Err(NodeError::new(
                Code::AlreadyExists,
                format!(
                    "session {short} already ran or is running here; a ceremony uses a fresh session"
                ),
            ));
        }
        // The memory forgets after a restart; the ledger does not.
        if let Some(seq) = ledger.session_seen(session).await? {
            return Err(NodeError::new(
                Code::AlreadyExists,
                format!(
                    "session {short} already ran here (history entry {seq}); a ceremony uses a fresh session"
                ),
            ));
        }
        if let Some(seq) = ledger.nonce_seen(&a.requester, a.nonce).await? {
            return Err(NodeError::new(
                Code::AlreadyExists,
                format!("this request's nonce was already used (history entry {seq}): a replay"),
            ));
        }
        if decision.verdict != Verdict::Allow {
            let seq = ledger.denied(&a, decision).await?;
            crate::refusals::mark_recorded();
            return Err(NodeError::not_allowed(format!(
                "denied by the policy (history entry {seq}): {}",
                decision.reasons().join("; ")
            )));
        }
        let entry = ledger.started(&a, decision).await?;
        crate::refusals::mark_recorded();
        Ok(Ticket {
            entry,
            kind: a.kind,
            vault_id: a.vault_id.to_string(),
            session: session.clone(),
            admitted: Instant::now(),
            _permit: permit,
        })
    }
}

/// A request's (requester, nonce) held from "unseen" until its ledger entry is written (or
/// it is refused); released on drop.
struct Reserved {
    set: Arc<Mutex<HashSet<Vec<u8>>>>,
    key: Vec<u8>,
}

impl Reserved {
    fn take(
        set: &Arc<Mutex<HashSet<Vec<u8>>>>,
        requester: &[u8; 32],
        nonce: &[u8],
    ) -> Result<Reserved, NodeError> {
        let mut key = requester.to_vec();
        key.extend_from_slice(nonce);
        if !set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return Err(NodeError::new(
                Code::AlreadyExists,
                "this request's nonce is being used by a request admitted right now: a replay",
            ));
        }
        Ok(Reserved {
            set: set.clone(),
            key,
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// The vaults a keygen, reshare or resolve is changing here: one at a time per vault, so
/// two ceremonies never write the same slots.
#[derive(Default, Clone)]
pub struct Changing(Arc<Mutex<HashSet<String>>>);

/// A vault claimed until this drops.
pub struct Claim {
    set: Changing,
    vault: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.vault);
    }
}

impl Changing {
    /// Whether a keygen, reshare or resolve of `vault` runs now (only looked at, not held).
    pub fn is_claimed(&self, vault: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(vault)
    }

    /// Claims `vault`, or refuses while another keygen, reshare or resolve of it runs.
    pub fn claim(&self, vault: &str) -> Result<Claim, NodeError> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(vault.to_string()) {
            return Err(NodeError::new(
                Code::Aborted,
                format!(
                    "a keygen or reshare of vault {vault:?} is already running on this party; retry when it ends"
                ),
            ));
        }
        Ok(Claim {
            set: self.clone(),
            vault: vault.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cosigner_api::v1::RelayRef;

    /// A ledger in memory: what it was asked to record, and what it already holds.
    #[derive(Default)]
    struct Memory {
        sessions: Mutex<Vec<Vec<u8>>>,
        nonces: Mutex<Vec<Vec<u8>>>,
        entries: Mutex<Vec<&'static str>>,
    }

    impl Memory {
        /// Indexes the admission's nonce and session, as the history does, and appends
        /// `what`; returns the entry number.
        fn remember(&self, a: &Admission<'_>, what: &'static str) -> usize {
            self.nonces.lock().unwrap().push(a.nonce.to_vec());
            self.sessions
                .lock()
                .unwrap()
                .push(a.relay.session_id.clone());
            let mut e = self.entries.lock().unwrap();
            e.push(what);
            e.len()
        }
    }

    impl Ledger for Memory {
        type Entry = usize;

        async fn session_seen(&self, s: &[u8]) -> Result<Option<u64>, NodeError> {
            let seen = self.sessions.lock().unwrap().iter().any(|x| x == s);
            Ok(seen.then_some(7))
        }

        async fn nonce_seen(&self, _: &[u8; 32], n: &[u8]) -> Result<Option<u64>, NodeError> {
            let seen = self.nonces.lock().unwrap().iter().any(|x| x == n);
            Ok(seen.then_some(8))
        }

        async fn denied(&self, a: &Admission<'_>, _: &Decision) -> Result<u64, NodeError> {
            Ok(self.remember(a, "denied") as u64)
        }

        async fn started(&self, a: &Admission<'_>, _: &Decision) -> Result<usize, NodeError> {
            Ok(self.remember(a, "started"))
        }

        async fn ended(&self, _: &Ticket<usize>, _: End) -> Result<u64, NodeError> {
            Ok(0)
        }

        async fn windows(&self, _: &str, _: i64) -> Result<Windows, NodeError> {
            Ok(Windows::default())
        }
    }

    /// A ledger whose write of the request with nonce [9; 16] waits until released.
    #[derive(Default)]
    struct Slow {
        inner: Memory,
        writing: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    impl Ledger for Slow {
        type Entry = usize;

        async fn session_seen(&self, s: &[u8]) -> Result<Option<u64>, NodeError> {
            self.inner.session_seen(s).await
        }

        async fn nonce_seen(&self, r: &[u8; 32], n: &[u8]) -> Result<Option<u64>, NodeError> {
            self.inner.nonce_seen(r, n).await
        }

        async fn denied(&self, a: &Admission<'_>, d: &Decision) -> Result<u64, NodeError> {
            self.inner.denied(a, d).await
        }

        async fn started(&self, a: &Admission<'_>, d: &Decision) -> Result<usize, NodeError> {
            if a.nonce == [9; 16] {
                self.writing.notify_one();
                self.release.notified().await;
            }
            self.inner.started(a, d).await
        }

        async fn ended(&self, t: &Ticket<usize>, e: End) -> Result<u64, NodeError> {
            self.inner.ended(t, e).await
        }

        async fn windows(&self, v: &str, now: i64) -> Result<Windows, NodeError> {
            self.inner.windows(v, now).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_ledger_write_holds_back_only_its_own_nonce() {
        let gate = Arc::new(Gate::new(4));
        let ledger = Arc::new(Slow::default());
        let (g, l) = (gate.clone(), ledger.clone());
        let first = tokio::spawn(async move {
            let r = relay(&[1; 32]);
            g.admit(&*l, admission(&r, &[9; 16]), &allow())
                .await
                .map(|_| ())
        });
        // The first request is inside its ledger write.
        ledger.writing.notified().await;
        let limit = Duration::from_secs(10);
        // Another request is admitted meanwhile: no lock over another request's write.
        let r2 = relay(&[2; 32]);
        let other = tokio::time::timeout(
            limit,
            gate.admit(&*ledger, admission(&r2, &[8; 16]), &allow()),
        )
        .await
        .expect("held back by another request's ledger write");
        assert!(other.is_ok());
        // A copy of the first request, on another session, is refused at once.
        let r3 = relay(&[3; 32]);
        let copy = tokio::time::timeout(
            limit,
            gate.admit(&*ledger, admission(&r3, &[9; 16]), &allow()),
        )
        .await
        .expect("a copy waited");
        assert!(copy.err().unwrap().to_string().contains("a replay"));
        ledger.release.notify_one();
        first.await.unwrap().unwrap();
        // Written: now the ledger refuses the nonce.
        let r4 = relay(&[4; 32]);
        let again = gate
            .admit(&*ledger, admission(&r4, &[9; 16]), &allow())
            .await;
        assert!(again.err().unwrap().to_string().contains("history entry"));
    }

    /// A ledger whose store is damaged.
    struct Broken;

    impl Ledger for Broken {
        type Entry = ();

        async fn session_seen(&self, _: &[u8]) -> Result<Option<u64>, NodeError> {
            Err(NodeError::new(
                Code::DataLoss,
                "the history does not read back",
            ))
        }

        async fn nonce_seen(&self, _: &[u8; 32], _: &[u8]) -> Result<Option<u64>, NodeError> {
            Ok(None)
        }

        async fn denied(&self, _: &Admission<'_>, _: &Decision) -> Result<u64, NodeError> {
            Ok(0)
        }

        async fn started(&self, _: &Admission<'_>, _: &Decision) -> Result<(), NodeError> {
            Ok(())
        }

        async fn ended(&self, _: &Ticket<()>, _: End) -> Result<u64, NodeError> {
            Ok(0)
        }

        async fn windows(&self, _: &str, _: i64) -> Result<Windows, NodeError> {
            Ok(Windows::default())
        }
    }

    fn allow() -> Decision {
        Decision {
            verdict: Verdict::Allow,
            bundle_hash: String::new(),
        }
    }

    fn relay(session: &[u8]) -> RelayRef {
        RelayRef {
            address: String::new(),
            session_id: session.to_vec(),
        }
    }

    fn admission<'a>(relay: &'a RelayRef, nonce: &'a [u8]) -> Admission<'a> {
        Admission {
            kind: Kind::Sign,
            vault_id: "v",
            epoch: 0,
            committee: None,
            payload: None,
            decoded: None,
            requester: [1; 32],
            nonce,
            tls_identity: "spiffe://t/party/a",
            relay,
        }
    }

    #[tokio::test]
    async fn replays_sessions_slots_and_denials() {
        let gate = Gate::new(1);
        let ledger = Memory::default();
        let (r1, r2, r3) = (relay(&[1; 32]), relay(&[2; 32]), relay(&[3; 32]));
        let first = gate
            .admit(&ledger, admission(&r1, &[1; 16]), &allow())
            .await
            .unwrap();
        assert_eq!(gate.running(), 1);
        // No free slot while the first runs.
        let e = gate
            .admit(&ledger, admission(&r2, &[2; 16]), &allow())
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        drop(first);
        assert_eq!(gate.running(), 0);
        // The same session again: refused from memory.
        let e = gate
            .admit(&ledger, admission(&r1, &[3; 16]), &allow())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("already ran or is running"), "{e}");
        // A session the ledger knows (a restart forgot the memory): refused by the ledger.
        ledger.sessions.lock().unwrap().push(vec![9; 32]);
        let r9 = relay(&[9; 32]);
        let e = gate
            .admit(&ledger, admission(&r9, &[4; 16]), &allow())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("history entry 7"), "{e}");
        // The nonce of the first request on a fresh session: a replay.
        let e = gate
            .admit(&ledger, admission(&r2, &[1; 16]), &allow())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("a replay"), "{e}");
        // A denial is recorded, and its nonce cannot be used again.
        let deny = Decision {
            verdict: Verdict::Deny(vec!["too much".into()]),
            bundle_hash: String::new(),
        };
        let e = gate
            .admit(&ledger, admission(&r3, &[5; 16]), &deny)
            .await
            .err()
            .unwrap();
        assert!(
            e.code() == Code::PermissionDenied && e.to_string().contains("too much"),
            "{e}"
        );
        assert_eq!(*ledger.entries.lock().unwrap(), vec!["started", "denied"]);
        // The denied request's nonce is spent: the same request on a fresh session is a
        // replay, even if the policy would now allow it.
        let r4 = relay(&[4; 32]);
        let e = gate
            .admit(&ledger, admission(&r4, &[5; 16]), &allow())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("a replay"), "{e}");
        // A ledger that cannot answer refuses the request and frees the slot.
        let broken = Broken;
        let r5 = relay(&[5; 32]);
        let e = gate
            .admit(&broken, admission(&r5, &[7; 16]), &allow())
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::DataLoss, "{e}");
        assert_eq!(gate.running(), 0);
        // A session id of a silly length.
        let short = relay(&[4; 8]);
        let e = gate
            .admit(&ledger, admission(&short, &[6; 16]), &allow())
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert_eq!(gate.running(), 0);
    }
}
