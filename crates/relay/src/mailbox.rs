//! The relay: sessions with declared participants, one mailbox per participant.
//!
//! It routes signed envelopes and nothing more. It checks what it can without trusting
//! anyone (the sender's signature, that sender and recipient are participants, sizes and
//! depths) so that junk is refused early, but the parties never rely on it: they verify and
//! decrypt every envelope themselves. A mailbox keeps its whole history for the session so
//! a subscriber can resume after a reconnect (`after_seq`); a session ends when a
//! participant closes it or its time to live runs out, and is then forgotten.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cosigner_api::v1::{Delivery, Envelope};
use tokio::sync::watch;

use crate::envelope::{ENVELOPE_VERSION, signature_ok};
use crate::keys::short;

/// Limits that keep one client from exhausting the relay.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest envelope payload accepted.
    pub max_payload_bytes: usize,
    /// Most envelopes one mailbox holds in one session.
    pub mailbox_depth: usize,
    /// Most live sessions created by one client (TLS identity).
    pub sessions_per_client: usize,
    /// Most live sessions in total.
    pub max_sessions: usize,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Most participants in one session.
    pub max_participants: usize,
    /// How far a subscriber's clock may be from ours.
    pub max_skew: Duration,
    /// How long a closed session stays readable (so late readers drain their mailbox).
    pub linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 2 << 20,
            mailbox_depth: 4096,
            sessions_per_client: 256,
            max_sessions: 4096,
            default_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(3600),
            max_participants: 64,
            max_skew: Duration::from_secs(300),
            linger: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayError {
    #[error("{0}")]
    Invalid(String),
    #[error("no session {0} on this relay (never created, closed, or expired)")]
    NoSession(String),
    #[error("session {0} exists with other participants")]
    Conflict(String),
    #[error("{0}")]
    NotParticipant(String),
    #[error("{0}")]
    Limit(String),
    #[error("session {0} is closed")]
    Closed(String),
}

/// Where a subscriber stands: how many envelopes its mailbox has, and whether more can come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxState {
    pub len: u64,
    pub open: bool,
}

struct Mailbox {
    items: Vec<Envelope>,
    tx: watch::Sender<MailboxState>,
}

struct Session {
    participants: BTreeSet<[u8; 32]>,
    owner: String,
    expires_at: Instant,
    expires_at_ms: i64,
    closed_at: Option<Instant>,
    mailboxes: HashMap<[u8; 32], Mailbox>,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        self.closed_at.is_none() && now < self.expires_at
    }

    fn end(&mut self, now: Instant) {
        if self.closed_at.is_none() {
            self.closed_at = Some(now);
        }
        for m in self.mailboxes.values() {
            m.tx.send_modify(|s| s.open = false);
        }
    }
}

/// (party, subscription nonce) -> when it was seen.
type SeenNonces = HashMap<([u8; 32], Vec<u8>), Instant>;

pub struct Relay {
    limits: Limits,
    sessions: Mutex<HashMap<Vec<u8>, Session>>,
    /// Subscription nonces seen within the clock-skew window, per party.
    subscriptions: Mutex<SeenNonces>,
    posted: AtomicU64,
    refused: AtomicU64,
}

/// What the relay holds and has done, for metrics: counts only, never a session or party.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Sessions open and within their time to live.
    pub live_sessions: u64,
    /// Envelopes held in all mailboxes (kept until the session is forgotten, for resumes).
    pub envelopes: u64,
    /// The fullest mailbox, to compare with `relay.mailbox_depth`.
    pub deepest_mailbox: u64,
    /// Envelopes accepted and refused since start.
    pub posted: u64,
    pub refused: u64,
}

fn sid(s: &[u8]) -> String {
    short(s)
}

fn party(b: &[u8], what: &str) -> Result<[u8; 32], RelayError> {
    b.try_into()
        .map_err(|_| RelayError::Invalid(format!("{what} is {} bytes; a party id is 32", b.len())))
}

fn check_session_id(s: &[u8]) -> Result<(), RelayError> {
    if (16..=64).contains(&s.len()) {
        Ok(())
    } else {
        Err(RelayError::Invalid(format!(
            "session_id is {} bytes; 16 to 64 are required",
            s.len()
        )))
    }
}

use cosigner_party::clock::now_ms;

/// Bytes a subscriber signs to prove it holds its identity key. The nonce makes each
/// subscription unique: the relay refuses one it has seen (a copied subscription would
/// otherwise read the mailbox again within the clock-skew window).
pub fn subscribe_bytes(
    session: &[u8],
    party: &[u8],
    after_seq: u64,
    ts_ms: i64,
    nonce: &[u8],
) -> Vec<u8> {
    let mut out = b"cosigner/v2/subscribe\0".to_vec();
    out.push(session.len() as u8);
    out.extend_from_slice(session);
    out.extend_from_slice(party);
    out.extend_from_slice(&after_seq.to_be_bytes());
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.extend_from_slice(nonce);
    out
}

/// Bytes a participant signs to close a session.
pub fn close_bytes(session: &[u8], party: &[u8], ts_ms: i64) -> Vec<u8> {
    let mut out = b"cosigner/v1/close\0".to_vec();
    out.push(session.len() as u8);
    out.extend_from_slice(session);
    out.extend_from_slice(party);
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out
}

impl Relay {
    pub fn new(limits: Limits) -> Self {
        Relay {
            limits,
            sessions: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            posted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Counts for metrics, read under the lock in one pass.
    pub fn stats(&self) -> RelayStats {
        let now = Instant::now();
        let sessions = self.lock();
        let mut st = RelayStats {
            posted: self.posted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            ..RelayStats::default()
        };
        for s in sessions.values() {
            if s.live(now) {
                st.live_sessions += 1;
            }
            for m in s.mailboxes.values() {
                let n = m.items.len() as u64;
                st.envelopes += n;
                st.deepest_mailbox = st.deepest_mailbox.max(n);
            }
        }
        st
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Session>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself is
        // still consistent (every mutation is a single insert/remove/push).
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a session (or returns the existing one with the same participants).
    pub fn create(
        &self,
        owner: &str,
        session_id: &[u8],
        participants: &[Vec<u8>],
        ttl_seconds: u32,
    ) -> Result<i64, RelayError> {
        check_session_id(session_id)?;
        let mut set = BTreeSet::new();
        for (i, p) in participants.iter().enumerate() {
            let p = party(p, &format!("participants[{i}]"))?;
            if !set.insert(p) {
                return Err(RelayError::Invalid(format!(
                    "participant {} is listed twice",
                    short(&p)
                )));
            }
        }
        if set.len() < 2 || set.len() > self.limits.max_participants {
            return Err(RelayError::Invalid(format!(
                "{} participants; a session has 2 to {}",
                set.len(),
                self.limits.max_participants
            )));
        }
        let ttl = match ttl_seconds {
            0 => self.limits.default_ttl,
            s if u64::from(s) <= self.limits.max_ttl.as_secs() => Duration::from_secs(s.into()),
            s => {
                return Err(RelayError::Invalid(format!(
                    "ttl_seconds {s}; at most {}",
                    self.limits.max_ttl.as_secs()
                )));
            }
        };
        let now = Instant::now();
        let mut sessions = self.lock();
        Self::sweep_locked(&mut sessions, now, self.limits.linger);
        if let Some(s) = sessions.get(session_id) {
            if s.participants == set && s.live(now) {
                return Ok(s.expires_at_ms);
            }
            return Err(RelayError::Conflict(sid(session_id)));
        }
        let live = sessions.values().filter(|s| s.live(now));
        let (total, mine) = live.fold((0, 0), |(t, m), s| {
            (t + 1, m + usize::from(s.owner == owner))
        });
        if mine >= self.limits.sessions_per_client {
            return Err(RelayError::Limit(format!(
                "{owner} already has {mine} open sessions (limit {})",
                self.limits.sessions_per_client
            )));
        }
        if total >= self.limits.max_sessions {
            return Err(RelayError::Limit(format!(
                "the relay holds {total} open sessions (limit {})",
                self.limits.max_sessions
            )));
        }
        let expires_at_ms = now_ms() + ttl.as_millis() as i64;
        let mailboxes = set
            .iter()
            .map(|p| {
                let (tx, _) = watch::channel(MailboxState { len: 0, open: true });
                (
                    *p,
                    Mailbox {
                        items: Vec::new(),
                        tx,
                    },
                )
            })
            .collect();
        sessions.insert(
            session_id.to_vec(),
            Session {
                participants: set,
                owner: owner.to_string(),
                expires_at: now + ttl,
                expires_at_ms,
                closed_at: None,
                mailboxes,
            },
        );
        Ok(expires_at_ms)
    }

    /// Accepts one envelope into its recipient's mailbox (or every other participant's).
    pub fn post(&self, env: Envelope) -> Result<u64, RelayError> {
        let r = self.accept(env);
        let counter = if r.is_ok() {
            &self.posted
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r
    }

    fn accept(&self, env: Envelope) -> Result<u64, RelayError> {
        if env.version != ENVELOPE_VERSION {
            return Err(RelayError::Invalid(format!(
                "envelope version {}; this relay speaks {ENVELOPE_VERSION}",
                env.version
            )));
        }
        check_session_id(&env.session_id)?;
        let sender = party(&env.sender, "envelope.sender")?;
        if env.payload.len() > self.limits.max_payload_bytes {
            return Err(RelayError::Limit(format!(
                "envelope payload is {} bytes; at most {}",
                env.payload.len(),
                self.limits.max_payload_bytes
            )));
        }
        let recipient = if env.recipient.is_empty() {
            None
        } else {
            Some(party(&env.recipient, "envelope.recipient")?)
        };
        // Signature before the lock: it is the expensive part and needs no state.
        if !signature_ok(&env) {
            return Err(RelayError::Invalid(format!(
                "envelope from {} has a bad signature",
                short(&sender)
            )));
        }
        let now = Instant::now();
        let mut sessions = self.lock();
        let s = sessions
            .get_mut(&env.session_id)
            .ok_or_else(|| RelayError::NoSession(sid(&env.session_id)))?;
        if !s.live(now) {
            return Err(RelayError::Closed(sid(&env.session_id)));
        }
        if !s.participants.contains(&sender) {
            return Err(RelayError::NotParticipant(format!(
                "sender {} is not a participant of session {}",
                short(&sender),
                sid(&env.session_id)
            )));
        }
        let targets: Vec<[u8; 32]> = match recipient {
            Some(r) if r == sender => {
                return Err(RelayError::Invalid(
                    "an envelope addressed to its sender".into(),
                ));
            }
            Some(r) if !s.participants.contains(&r) => {
                return Err(RelayError::NotParticipant(format!(
                    "recipient {} is not a participant of session {}",
                    short(&r),
                    sid(&env.session_id)
                )));
            }
            Some(r) => vec![r],
            None => s
                .participants
                .iter()
                .filter(|p| **p != sender)
                .copied()
                .collect(),
        };
        for t in &targets {
            if let Some(m) = s.mailboxes.get(t)
                && m.items.len() >= self.limits.mailbox_depth
            {
                return Err(RelayError::Limit(format!(
                    "the mailbox of {} is full ({} envelopes)",
                    short(t),
                    self.limits.mailbox_depth
                )));
            }
        }
        let mut seq = 0;
        for t in targets {
            if let Some(m) = s.mailboxes.get_mut(&t) {
                m.items.push(env.clone());
                seq = m.items.len() as u64;
                m.tx.send_modify(|st| st.len = seq);
            }
        }
        Ok(seq)
    }

    /// Checks a subscriber and returns a watch on its mailbox.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &self,
        session_id: &[u8],
        party_id: &[u8],
        after_seq: u64,
        ts_ms: i64,
        nonce: &[u8],
        signature: &[u8],
    ) -> Result<watch::Receiver<MailboxState>, RelayError> {
        check_session_id(session_id)?;
        let p = party(party_id, "party_id")?;
        if !(16..=32).contains(&nonce.len()) {
            return Err(RelayError::Invalid(format!(
                "nonce is {} bytes; 16 to 32 are required",
                nonce.len()
            )));
        }
        let skew = now_ms().saturating_sub(ts_ms).saturating_abs();
        if skew > self.limits.max_skew.as_millis() as i64 {
            return Err(RelayError::Invalid(format!(
                "timestamp is {skew} ms away from the relay's clock"
            )));
        }
        if !crate::keys::verify(
            &p,
            &subscribe_bytes(session_id, party_id, after_seq, ts_ms, nonce),
            signature,
        ) {
            return Err(RelayError::NotParticipant(format!(
                "the subscription for {} is not signed by its identity key",
                short(&p)
            )));
        }
        let sessions = self.lock();
        let s = sessions
            .get(session_id)
            .ok_or_else(|| RelayError::NoSession(sid(session_id)))?;
        let m = s.mailboxes.get(&p).ok_or_else(|| {
            RelayError::NotParticipant(format!(
                "{} is not a participant of session {}",
                short(&p),
                sid(session_id)
            ))
        })?;
        let watch = m.tx.subscribe();
        drop(sessions);
        {
            // A nonce is remembered for twice the skew window: a copy of this subscription
            // is refused for as long as its timestamp would pass.
            let now = Instant::now();
            let keep = self.limits.max_skew * 2;
            let mut seen = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, at| now.duration_since(*at) < keep);
            if seen.insert((p, nonce.to_vec()), now).is_some() {
                return Err(RelayError::Invalid(format!(
                    "the subscription for {} was already used (a replayed subscription)",
                    short(&p)
                )));
            }
        }
        Ok(watch)
    }

    /// Envelopes of a mailbox after `after` (at most `max`), with their positions.
    pub fn read(
        &self,
        session_id: &[u8],
        party_id: &[u8; 32],
        after: u64,
        max: usize,
    ) -> Vec<Delivery> {
        let sessions = self.lock();
        let Some(m) = sessions
            .get(session_id)
            .and_then(|s| s.mailboxes.get(party_id))
        else {
            return Vec::new();
        };
        m.items
            .iter()
            .enumerate()
            .skip(after as usize)
            .take(max)
            .map(|(i, e)| Delivery {
                seq: i as u64 + 1,
                envelope: Some(e.clone()),
            })
            .collect()
    }

    /// Ends a session at a participant's signed request, or at the request of the client
    /// that created it (`party_id` empty; `caller` is the TLS identity that created it).
    pub fn close(
        &self,
        caller: &str,
        session_id: &[u8],
        party_id: &[u8],
        ts_ms: i64,
        signature: &[u8],
    ) -> Result<(), RelayError> {
        check_session_id(session_id)?;
        let by_party = if party_id.is_empty() {
            None
        } else {
            let p = party(party_id, "party_id")?;
            let skew = now_ms().saturating_sub(ts_ms).saturating_abs();
            if skew > self.limits.max_skew.as_millis() as i64 {
                return Err(RelayError::Invalid(format!(
                    "timestamp is {skew} ms away from the relay's clock"
                )));
            }
            if !crate::keys::verify(&p, &close_bytes(session_id, party_id, ts_ms), signature) {
                return Err(RelayError::NotParticipant(format!(
                    "the close request for {} is not signed by its identity key",
                    short(&p)
                )));
            }
            Some(p)
        };
        let mut sessions = self.lock();
        let s = sessions
            .get_mut(session_id)
            .ok_or_else(|| RelayError::NoSession(sid(session_id)))?;
        let allowed = match by_party {
            Some(p) => s.participants.contains(&p),
            None => !caller.is_empty() && s.owner == caller,
        };
        if !allowed {
            return Err(RelayError::NotParticipant(format!(
                "only a participant or the session's creator may close session {}",
                sid(session_id)
            )));
        }
        s.end(Instant::now());
        Ok(())
    }

    /// Ends expired sessions and forgets ended ones after the linger time.
    pub fn sweep(&self) -> usize {
        let mut sessions = self.lock();
        Self::sweep_locked(&mut sessions, Instant::now(), self.limits.linger)
    }

    fn sweep_locked(
        sessions: &mut HashMap<Vec<u8>, Session>,
        now: Instant,
        linger: Duration,
    ) -> usize {
        for s in sessions.values_mut() {
            if s.closed_at.is_none() && now >= s.expires_at {
                s.end(now);
            }
        }
        let before = sessions.len();
        sessions.retain(|_, s| s.closed_at.is_none_or(|t| now < t + linger));
        before - sessions.len()
    }

    /// Live sessions (for status and tests).
    pub fn live_sessions(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|s| s.live(now)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::seal;
    use crate::keys::PartyKeys;
    use cosigner_api::v1::EnvelopeKind;

    fn relay(f: impl FnOnce(&mut Limits)) -> Relay {
        let mut l = Limits::default();
        f(&mut l);
        Relay::new(l)
    }

    const S: &[u8] = b"session-0123456789";

    #[test]
    fn sessions_are_idempotent_and_conflicts_refused() {
        let r = relay(|_| {});
        let (a, b, c) = (
            PartyKeys::generate(),
            PartyKeys::generate(),
            PartyKeys::generate(),
        );
        let ps = vec![a.party_id().to_vec(), b.party_id().to_vec()];
        let t = r.create("x", S, &ps, 60).unwrap();
        assert_eq!(r.create("x", S, &ps, 60).unwrap(), t);
        let other = vec![a.party_id().to_vec(), c.party_id().to_vec()];
        assert!(matches!(
            r.create("x", S, &other, 60),
            Err(RelayError::Conflict(_))
        ));
        assert!(matches!(
            r.create("x", b"short", &ps, 60),
            Err(RelayError::Invalid(_))
        ));
        assert!(matches!(
            r.create("x", b"0123456789abcdef", &ps[..1], 60),
            Err(RelayError::Invalid(_))
        ));
        assert!(matches!(
            r.create("x", b"0123456789abcdef", &ps, 4000),
            Err(RelayError::Invalid(_))
        ));
    }

    #[test]
    fn limits_name_what_was_exceeded() {
        let r = relay(|l| {
            l.sessions_per_client = 1;
            l.mailbox_depth = 2;
            l.max_payload_bytes = 100;
        });
        let (a, b) = (PartyKeys::generate(), PartyKeys::generate());
        let ps = vec![a.party_id().to_vec(), b.party_id().to_vec()];
        r.create("alice", S, &ps, 60).unwrap();
        let e = r
            .create("alice", b"another-session-00", &ps, 60)
            .unwrap_err();
        assert!(
            matches!(&e, RelayError::Limit(m) if m.contains("alice")),
            "{e}"
        );
        r.create("bob", b"another-session-00", &ps, 60).unwrap();

        let big = seal(&a, S, None, None, 1, 1, EnvelopeKind::Protocol, &[0; 101]).unwrap();
        assert!(matches!(r.post(big), Err(RelayError::Limit(_))));
        for i in 1..=2 {
            let e = seal(&a, S, None, None, 1, i, EnvelopeKind::Protocol, b"x").unwrap();
            assert_eq!(r.post(e).unwrap(), i);
        }
        let e = seal(&a, S, None, None, 1, 3, EnvelopeKind::Protocol, b"x").unwrap();
        assert!(matches!(r.post(e), Err(RelayError::Limit(m)) if m.contains("full")));
        // Mailboxes are per recipient: b's is full, a's is empty.
        assert_eq!(r.read(S, &b.party_id(), 0, 10).len(), 2);
        assert_eq!(r.read(S, &a.party_id(), 0, 10).len(), 0);
    }

    #[test]
    fn only_participants_or_the_creator_close_and_closed_sessions_refuse_posts() {
        let r = relay(|_| {});
        let (a, b, c) = (
            PartyKeys::generate(),
            PartyKeys::generate(),
            PartyKeys::generate(),
        );
        let ps = vec![a.party_id().to_vec(), b.party_id().to_vec()];
        r.create("coordinator", S, &ps, 60).unwrap();
        let ts = now_ms();
        let sig = c.sign(&close_bytes(S, &c.party_id(), ts));
        assert!(matches!(
            r.close("x", S, &c.party_id(), ts, &sig),
            Err(RelayError::NotParticipant(_))
        ));
        assert!(matches!(
            r.close("someone-else", S, &[], 0, &[]),
            Err(RelayError::NotParticipant(_))
        ));
        r.close("coordinator", S, &[], 0, &[]).unwrap();
        let e = seal(&a, S, None, None, 1, 1, EnvelopeKind::Protocol, b"x").unwrap();
        assert!(matches!(r.post(e), Err(RelayError::Closed(_))));
        // A forged envelope is refused before it reaches any mailbox.
        r.create("coordinator", b"session-abcdefghij", &ps, 60)
            .unwrap();
        let mut e = seal(
            &a,
            b"session-abcdefghij",
            None,
            None,
            1,
            1,
            EnvelopeKind::Protocol,
            b"x",
        )
        .unwrap();
        e.payload[0] ^= 1;
        assert!(matches!(r.post(e), Err(RelayError::Invalid(m)) if m.contains("signature")));
    }

    #[test]
    fn a_subscription_is_used_once() {
        let r = Relay::new(Limits::default());
        let a = PartyKeys::generate();
        let b = PartyKeys::generate();
        let ps = vec![a.party_id().to_vec(), b.party_id().to_vec()];
        r.create("coordinator", S, &ps, 60).unwrap();
        let ts = now_ms();
        let nonce = [3u8; 16];
        let sig = a.sign(&subscribe_bytes(S, &a.party_id(), 0, ts, &nonce));
        assert!(r.subscribe(S, &a.party_id(), 0, ts, &nonce, &sig).is_ok());
        // The same signed subscription again (copied off the wire): refused.
        assert!(matches!(
            r.subscribe(S, &a.party_id(), 0, ts, &nonce, &sig),
            Err(RelayError::Invalid(m)) if m.contains("replayed")
        ));
        // A nonce is covered by the signature, and must be 16 to 32 bytes.
        assert!(matches!(
            r.subscribe(S, &a.party_id(), 0, ts, &[4u8; 16], &sig),
            Err(RelayError::NotParticipant(_))
        ));
        assert!(matches!(
            r.subscribe(S, &a.party_id(), 0, ts, &[4u8; 8], &sig),
            Err(RelayError::Invalid(_))
        ));
    }
}
