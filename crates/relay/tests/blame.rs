//! Blame evidence over the real relay service (gRPC on loopback) and the real driver, with a
//! real reshare engine: a dealer that sends one receiver a bad fragment is blamed with its
//! own signed messages, and every other party (and an operator, later) can check the blame
//! without trusting the accuser. A lying accuser is caught the same way.
//!
//! The reshare: vault 2-of-2 held by `a` and `b`, who deal to a new committee 2-of-3
//! {a, b, mallory}. Mallory joins as a new member, so it deals a zero-constant polynomial
//! in round one like every receiver, and can send one party a fragment that does not match
//! its commitments.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use cosigner_api::v1 as api;
use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::relay_server::RelayServer;
use cosigner_relay::blame::{AbortMessage, Blamed, Finding, judge};
use cosigner_relay::envelope::signed_bytes;
use cosigner_relay::mailbox::{Limits, Relay};
use cosigner_relay::roster::{Roster, RosterKind};
use cosigner_relay::service::RelayService;
use cosigner_relay::{DriveError, Driver, Hello, PartyKeys, SessionSpec};
use cosigner_tss::local;
use cosigner_tss::{
    Ceremony, Committee, KeyShare, Keygen, KeygenParams, Message, PartyId, Reshare, ReshareParams,
    SessionId, Step, TssError,
};
use prost::Message as _;
use tonic::transport::{Channel, Server};

const TIMEOUT: Duration = Duration::from_secs(5);

/// What a party's engine does wrong, if anything.
#[derive(Clone, Copy)]
enum Misdeed {
    /// Honest.
    None,
    /// Sends `to` a round-1 fragment that does not match its commitments.
    BadFragmentTo([u8; 32]),
    /// Claims `dealer`'s (good) fragment is bad.
    FalselyAccuse([u8; 32]),
}

/// An engine with a misdeed built in.
struct Rogue {
    inner: Reshare,
    misdeed: Misdeed,
}

impl Rogue {
    fn tamper(
        &self,
        step: Step<<Reshare as Ceremony>::Output>,
    ) -> Step<<Reshare as Ceremony>::Output> {
        let Misdeed::BadFragmentTo(victim) = self.misdeed else {
            return step;
        };
        let fix = |msgs: Vec<Message>| -> Vec<Message> {
            msgs.into_iter()
                .map(|mut m| {
                    if m.round == 1 && m.to == Some(PartyId(victim)) {
                        let last = m.body.len() - 1;
                        m.body[last] ^= 0x01;
                    }
                    m
                })
                .collect()
        };
        match step {
            Step::Continue(m) => Step::Continue(fix(m)),
            Step::Done(v, m) => Step::Done(v, fix(m)),
        }
    }
}

impl Ceremony for Rogue {
    type Output = <Reshare as Ceremony>::Output;

    fn session(&self) -> SessionId {
        self.inner.session()
    }

    fn me(&self) -> PartyId {
        self.inner.me()
    }

    fn start(&mut self) -> Result<Step<Self::Output>, TssError> {
        let s = self.inner.start()?;
        Ok(self.tamper(s))
    }

    fn handle(&mut self, msg: Message) -> Result<Step<Self::Output>, TssError> {
        if let Misdeed::FalselyAccuse(dealer) = self.misdeed
            && msg.from == PartyId(dealer)
            && msg.round == 1
            && msg.to.is_some()
        {
            return Err(TssError::BadFragment {
                dealer: PartyId(dealer),
            });
        }
        let s = self.inner.handle(msg)?;
        Ok(self.tamper(s))
    }

    fn waiting_for(&self) -> Vec<PartyId> {
        self.inner.waiting_for()
    }
}

async fn serve(limits: Limits) -> (String, Arc<Relay>) {
    let relay = Arc::new(Relay::new(limits));
    let svc = RelayService::new(relay.clone(), |_| None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(RelayServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), relay)
}

struct Party {
    name: &'static str,
    keys: PartyKeys,
    share: Option<KeyShare>,
}

fn vault(a: &PartyKeys, b: &PartyKeys) -> Vec<KeyShare> {
    let committee = Committee::new(2, [PartyId(a.party_id()), PartyId(b.party_id())]).unwrap();
    let machines = committee
        .parties()
        .iter()
        .map(|p| {
            Keygen::new(
                KeygenParams {
                    vault_id: "vault".into(),
                    committee: committee.clone(),
                    nonce: [9; 32],
                },
                *p,
            )
            .unwrap()
        })
        .collect();
    local::run(machines).unwrap().0
}

type End = (&'static str, DriveError, Option<Blamed>);

/// Three parties' keys: a, b and mallory.
fn keys() -> [PartyKeys; 3] {
    [
        PartyKeys::generate(),
        PartyKeys::generate(),
        PartyKeys::generate(),
    ]
}

/// Runs the reshare with one party's misdeed; returns every party's error and blame.
async fn reshare(k: &[PartyKeys; 3], who: &'static str, misdeed: Misdeed) -> Vec<End> {
    reshare_to(k, 2, who, misdeed).await
}

/// [`reshare`] to a new committee of threshold `t`.
async fn reshare_to(k: &[PartyKeys; 3], t: u8, who: &'static str, misdeed: Misdeed) -> Vec<End> {
    reshare_on(Limits::default(), k, t, who, misdeed).await
}

/// [`reshare_to`] over a relay with these limits.
async fn reshare_on(
    limits: Limits,
    k: &[PartyKeys; 3],
    t: u8,
    who: &'static str,
    misdeed: Misdeed,
) -> Vec<End> {
    let (addr, relay) = serve(limits).await;
    let [a, b, m] = k.clone();
    let mut shares = vault(&a, &b);
    let old = shares[0].public().clone();
    let mut share_of = |k: &PartyKeys| {
        let i = shares
            .iter()
            .position(|s| s.party() == PartyId(k.party_id()))?;
        Some(shares.remove(i))
    };
    let parties = vec![
        Party {
            name: "a",
            share: share_of(&a),
            keys: a.clone(),
        },
        Party {
            name: "b",
            share: share_of(&b),
            keys: b.clone(),
        },
        Party {
            name: "mallory",
            share: None,
            keys: m.clone(),
        },
    ];
    let mut members: Vec<_> = parties.iter().map(|p| p.keys.member(p.name)).collect();
    members.sort_by_key(|x| x.id);
    let mut dealers = vec![a.party_id(), b.party_id()];
    dealers.sort();
    let committee: Vec<[u8; 32]> = members.iter().map(|x| x.id).collect();
    let session = b"blame-session-0123456789".to_vec();
    let roster = Roster {
        kind: RosterKind::Reshare,
        vault_id: "vault".into(),
        relay_session: session.clone(),
        request_digest: [3; 32],
        epoch: old.epoch,
        threshold: t,
        old_threshold: 2,
        dealers: dealers.clone(),
        committee: committee.clone(),
        participants: members.clone(),
    };
    relay
        .create(
            "test",
            &session,
            &committee.iter().map(|i| i.to_vec()).collect::<Vec<_>>(),
            60,
        )
        .unwrap();
    let mut tasks = Vec::new();
    for p in parties {
        let client = RelayClient::new(
            Channel::from_shared(addr.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        let roster = roster.clone();
        let old = old.clone();
        let dealers = dealers.clone();
        let committee = committee.clone();
        let misdeed = if p.name == who {
            misdeed
        } else {
            Misdeed::None
        };
        tasks.push(tokio::spawn(async move {
            let mut d = Driver::open(
                client,
                p.keys.clone(),
                SessionSpec {
                    roster,
                    round_timeout: TIMEOUT,
                    fault: None,
                },
            )
            .await
            .unwrap();
            d.hello(
                Hello {
                    epoch: None,
                    pending: None,
                },
                &|_| None,
            )
            .await
            .unwrap();
            let params = ReshareParams {
                old,
                dealers: dealers.into_iter().map(PartyId).collect(),
                new_committee: Committee::new(t, committee.into_iter().map(PartyId)).unwrap(),
                nonce: d.engine_nonce().unwrap(),
            };
            let engine =
                Reshare::new(params, PartyId(p.keys.party_id()), p.share.as_ref()).unwrap();
            let r = d
                .run(Rogue {
                    inner: engine,
                    misdeed,
                })
                .await;
            let err = match r {
                Ok(_) => panic!("{}: the reshare should not complete", p.name),
                Err(e) => e,
            };
            // The error carries the same ABORT and verdict the driver keeps.
            assert_eq!(
                err.blamed().map(|b| b.abort.clone()),
                d.blamed().map(|b| b.abort.clone())
            );
            (p.name, err, d.blamed().cloned())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn of<'a>(v: &'a [End], name: &str) -> &'a End {
    v.iter().find(|x| x.0 == name).unwrap()
}

/// Re-signs an ABORT after editing its evidence, as its (lying) sender could.
fn edited(
    keys: &PartyKeys,
    abort: &api::Envelope,
    f: impl FnOnce(&mut AbortMessage),
) -> api::Envelope {
    let mut msg = AbortMessage::decode(&abort.payload).unwrap();
    f(&mut msg);
    let mut env = abort.clone();
    env.payload = msg.encode();
    env.signature = keys.sign(&signed_bytes(&env)).to_vec();
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_fragment_is_blamed_with_evidence_everyone_can_check() {
    // Mallory's fragment to `a` is bad; `b` gets a good one and goes on until a's ABORT.
    let k = keys();
    let (a, m) = (k[0].party_id(), k[2].party_id());
    let ends = reshare(&k, "mallory", Misdeed::BadFragmentTo(a)).await;
    let (_, a_err, a_blame) = of(&ends, "a");
    let DriveError::Blamed { error, .. } = a_err else {
        panic!("a: {a_err}");
    };
    assert!(
        matches!(**error, DriveError::Engine(TssError::BadFragment { dealer }) if dealer.0 == m),
        "a: {a_err}"
    );
    assert!(a_err.to_string().contains("upheld"), "a: {a_err}");
    let a_blame = a_blame.as_ref().expect("a keeps the ABORT it sent");
    assert_eq!(a_blame.verdict.accused, Some(m));
    assert!(
        matches!(a_blame.verdict.finding, Finding::Upheld(_)),
        "{:?}",
        a_blame.verdict
    );
    // b stopped on a's ABORT, checked the evidence itself, and says so.
    let (_, b_err, b_blame) = of(&ends, "b");
    let text = b_err.to_string();
    assert!(
        matches!(b_err, DriveError::Blamed { error, .. } if matches!(**error, DriveError::Aborted { .. }))
            && text.contains("upheld"),
        "b: {text}"
    );
    let b_blame = b_blame.as_ref().expect("b keeps the ABORT it received");
    assert_eq!(b_blame.verdict.accuser, a);
    assert_eq!(b_blame.verdict.accused, Some(m));
    assert!(matches!(b_blame.verdict.finding, Finding::Upheld(_)));
    // An operator holding only the ABORT reaches the same finding.
    let later = judge(&b_blame.abort, None).unwrap();
    assert!(matches!(later.finding, Finding::Upheld(_)), "{later:?}");
    assert!(later.exhibits >= 2, "commitments and fragment: {later:?}");

    // The accuser cannot dress the evidence up: each edit, re-signed by a, is rejected.
    let a_keys = &k[0];
    let rejected = |env: api::Envelope| match judge(&env, None).unwrap().finding {
        Finding::Rejected(why) => why,
        other => panic!("accepted: {other:?}"),
    };
    let abort = &a_blame.abort;
    // A wrong key for the fragment.
    let why = rejected(edited(a_keys, abort, |msg| {
        let ev = msg.evidence.as_mut().unwrap();
        for x in ev.exhibits.iter_mut().filter(|x| x.key.is_some()) {
            x.key = Some([7; 32]);
        }
    }));
    assert!(why.contains("revealed key"), "{why}");
    // The same exhibits held against b, who sent none of them.
    let b_id = k[1].party_id();
    let why = rejected(edited(a_keys, abort, |msg| {
        msg.evidence.as_mut().unwrap().accused = b_id;
    }));
    assert!(why.contains("not from the accused"), "{why}");
    // The fragment left out.
    let why = rejected(edited(a_keys, abort, |msg| {
        let ev = msg.evidence.as_mut().unwrap();
        ev.exhibits.retain(|x| x.key.is_none());
    }));
    assert!(why.contains("lacks"), "{why}");
    // A roster other than the one mallory signed (another threshold).
    let why = rejected(edited(a_keys, abort, |msg| {
        msg.evidence.as_mut().unwrap().roster.threshold = 3;
    }));
    assert!(why.contains("another participant list"), "{why}");
    // A byte of an exhibit changed: mallory's signature no longer holds.
    let why = rejected(edited(a_keys, abort, |msg| {
        let ev = msg.evidence.as_mut().unwrap();
        let mut env = api::Envelope::decode(ev.exhibits[0].envelope.as_slice()).unwrap();
        let last = env.payload.len() - 1;
        env.payload[last] ^= 1;
        ev.exhibits[0].envelope = env.encode_to_vec();
    }));
    assert!(why.contains("signature"), "{why}");
    // An ABORT of an earlier envelope version is named as such, not as a forgery.
    let mut old_format = abort.clone();
    old_format.version = 3;
    let e = judge(&old_format, None).unwrap_err().to_string();
    assert!(e.contains("earlier release"), "{e}");
    // Without evidence, the ABORT is the accuser's word, and says so.
    let bare = edited(a_keys, abort, |msg| msg.evidence = None);
    let v = judge(&bare, None).unwrap();
    assert_eq!(v.finding, Finding::NoEvidence);
    assert!(v.summary().contains("word"), "{}", v.summary());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_false_accusation_is_shown_not_to_hold() {
    // `a` claims mallory's good fragment is bad. The forwarded evidence is mallory's own
    // consistent dealing, so b (and an operator) see that the blame does not hold.
    let k = keys();
    let (a, m) = (k[0].party_id(), k[2].party_id());
    let ends = reshare(&k, "a", Misdeed::FalselyAccuse(m)).await;
    let (_, b_err, b_blame) = of(&ends, "b");
    let text = b_err.to_string();
    assert!(text.contains("does not hold"), "b: {text}");
    let b_blame = b_blame.as_ref().unwrap();
    assert_eq!(b_blame.verdict.accuser, a);
    match &b_blame.verdict.finding {
        Finding::Rejected(why) => assert!(why.contains("matches its commitments"), "{why}"),
        other => panic!("{other:?}"),
    }
    let (_, m_err, _) = of(&ends, "mallory");
    assert!(m_err.to_string().contains("does not hold"), "{m_err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accuser_cannot_mix_messages_from_two_ceremonies_on_one_session_id() {
    // Two ceremonies with the same parties on the same relay session id (a device that
    // forgot the id, a daemon restored from a backup): the first to a 2-of-3, the second
    // to a 3-of-3. Mallory deals honestly both times; `a` accuses it both times, and so
    // holds mallory's signed HELLO of the first and its signed dealing of the second. A
    // 3-of-3 dealing judged against the 2-of-3 participant list that mallory's first HELLO
    // signed does not check: without the ceremony context in every signed header, that mix
    // upholds a blame of an honest dealer.
    let k = keys();
    let m = k[2].party_id();
    let first = reshare_to(&k, 2, "a", Misdeed::FalselyAccuse(m)).await;
    let second = reshare_to(&k, 3, "a", Misdeed::FalselyAccuse(m)).await;
    let one = of(&first, "a").2.clone().unwrap().abort;
    let two = of(&second, "a").2.clone().unwrap().abort;
    assert_eq!(one.session_id, two.session_id);
    assert_ne!(
        one.context, two.context,
        "each ceremony has its own context"
    );
    let evidence = |abort: &api::Envelope| {
        AbortMessage::decode(&abort.payload)
            .unwrap()
            .evidence
            .unwrap()
    };
    let (ev1, ev2) = (evidence(&one), evidence(&two));
    let rejected = |env: api::Envelope| match judge(&env, None).unwrap().finding {
        Finding::Rejected(why) => why,
        other => panic!("accepted: {other:?}"),
    };
    // The second ceremony's dealing under the first's participant list, HELLO and name.
    let why = rejected(edited(&k[0], &one, |msg| {
        msg.evidence.as_mut().unwrap().exhibits = ev2.exhibits.clone();
    }));
    assert!(why.contains("belongs to another ceremony"), "{why}");
    // Nor can the accuser name the other ceremony in its own ABORT, or swap the HELLO or
    // the fresh values to make the mix fit.
    let mut renamed = one.clone();
    renamed.context = two.context.clone();
    let why = rejected(edited(&k[0], &renamed, |msg| {
        msg.evidence.as_mut().unwrap().exhibits = ev2.exhibits.clone();
    }));
    assert!(why.contains("another ceremony than its evidence"), "{why}");
    let why = rejected(edited(&k[0], &one, |msg| {
        msg.evidence.as_mut().unwrap().hello = ev2.hello.clone();
    }));
    assert!(why.contains("another participant list"), "{why}");
    let why = rejected(edited(&k[0], &one, |msg| {
        msg.evidence.as_mut().unwrap().fresh = ev2.fresh.clone();
    }));
    assert!(why.contains("another ceremony"), "{why}");
    let why = rejected(edited(&k[0], &one, |msg| {
        msg.evidence.as_mut().unwrap().fresh.pop();
    }));
    assert!(why.contains("one per participant"), "{why}");
    // An exhibit given twice is refused (no padding the evidence with repeats).
    let why = rejected(edited(&k[0], &one, |msg| {
        let ev = msg.evidence.as_mut().unwrap();
        let x = ev.exhibits[0].clone();
        ev.exhibits.push(x);
    }));
    assert!(why.contains("repeats or precedes"), "{why}");
    // Each unmixed ABORT is still judged on its own: the honest dealing holds.
    assert_eq!(ev1.roster.threshold, 2);
    for abort in [&one, &two] {
        match judge(abort, None).unwrap().finding {
            Finding::Rejected(why) => assert!(why.contains("matches its commitments"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_the_relay_refuses_with_evidence_still_goes_out_bare() {
    // A relay whose payload limit lets the protocol through but not an ABORT with evidence:
    // the accuser's ABORT goes out without it, and the others stop at once on it (not on a
    // timeout), on the accuser's word only.
    let k = keys();
    let m = k[2].party_id();
    let limits = Limits {
        max_payload_bytes: 1500,
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let ends = reshare_on(limits, &k, 2, "a", Misdeed::FalselyAccuse(m)).await;
    let (_, b_err, b_blame) = of(&ends, "b");
    assert!(
        matches!(b_err, DriveError::Aborted { evidence, .. } if evidence.is_empty()),
        "b: {b_err}"
    );
    assert!(b_blame.is_none());
    assert!(
        started.elapsed() < TIMEOUT,
        "b stopped on the ABORT, not on a timeout"
    );
}

#[test]
fn an_oversized_abort_is_not_decoded() {
    let big = AbortMessage {
        reason: "x".repeat(cosigner_relay::blame::MAX_ABORT_BYTES + 1),
        evidence: None,
    }
    .encode();
    let err = AbortMessage::decode(&big).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}
