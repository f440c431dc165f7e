//! Ceremony safety against a malicious committee member, stale files and stale backups,
//! between real daemon processes (swtpm, mutual TLS, sled). Each test names the finding of
//! issue 16 it guards and would fail without the code that fixes it:
//!
//! - a request must not choose whom a party encrypts to (finding 1): a body that lists a
//!   known member with another key is refused before the party subscribes or posts;
//! - parties shown different requests stop before round one (finding 1, roster hash);
//! - a dealer that left the committee signs nothing with its old share (finding 3);
//! - a share file rolled back to an older epoch is refused (finding 4, epoch floor);
//! - a stale backup is refused when a peer knows a newer epoch (finding 4);
//! - a blamed dealer is named with its own signed messages, which every other party and
//!   an operator check again (finding 6, blame evidence).

mod common;

use std::path::Path;

use common::*;
use cosigner_api::v1 as api;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_api::v1::relay_client::RelayClient;
use cosigner_relay::record::members_to_api;
use cosigner_relay::{Member, PartyKeys, VaultRecord};
use cosigner_tests::{Daemon, Pki, test_dir};
use prost::Message as _;
use serde_json::Value;

const RESHARE: &str = "/cosigner.v1.Cosigner/Reshare";

use cosigner_relay::clock::now_ms;

/// A reshare request by `m` (signed with its own keys), sent over device-1's TLS identity.
fn reshare_request(
    m: &PartyKeys,
    old: &VaultRecord,
    new_members: &[Member],
    threshold: u32,
    dealers: &[[u8; 32]],
    relay: &str,
    session: &[u8],
) -> api::ReshareRequest {
    endorsed_request(
        m,
        old,
        new_members,
        threshold,
        dealers,
        relay,
        session,
        Vec::new(),
    )
}

#[allow(clippy::too_many_arguments)]
fn endorsed_request(
    m: &PartyKeys,
    old: &VaultRecord,
    new_members: &[Member],
    threshold: u32,
    dealers: &[[u8; 32]],
    relay: &str,
    session: &[u8],
    endorsements: Vec<api::Endorsement>,
) -> api::ReshareRequest {
    let body = api::ReshareBody {
        vault_id: old.vault_id().to_string(),
        old_epoch: old.epoch(),
        dealers: dealers.iter().map(|d| d.to_vec()).collect(),
        new_committee: Some(members_to_api(threshold, new_members)),
        relay: Some(api::RelayRef {
            address: relay.to_string(),
            session_id: session.to_vec(),
        }),
        old_vault: old.encode(),
        scheduled: false,
        old_vault_endorsements: endorsements,
    }
    .encode_to_vec();
    let auth = cosigner_relay::request::sign(m, RESHARE, &body, now_ms());
    api::ReshareRequest {
        body,
        auth: Some(auth),
    }
}

async fn new_session(s: &Setup, session: &[u8], members: &[Member]) {
    let ch = s.pki.channel(s.a.addr, Some("device-1")).await.unwrap();
    RelayClient::new(ch)
        .create_session(api::CreateSessionRequest {
            session_id: session.to_vec(),
            participants: members.iter().map(|m| m.id.to_vec()).collect(),
            ttl_seconds: 120,
        })
        .await
        .unwrap();
}

/// The party id of the member called `name` in `r`.
fn id_of(r: &VaultRecord, name: &str) -> [u8; 32] {
    r.members.iter().find(|x| x.name == name).unwrap().id
}

fn show_vault(d: &Daemon, pki: &Pki, vault: &str) -> Value {
    ok(&d.ctl(pki, "admin", &["vault", "show", vault]))
}

/// Reshare entries of a request that passed the gate (STARTED, DENIED or an end), not the
/// `refused` entries of requests turned away before it.
fn reshare_entries(d: &Daemon, pki: &Pki) -> usize {
    history_kinds(d, pki)
        .iter()
        .filter(|(k, o)| k == "reshare" && o != "refused")
        .count()
}

fn refused_reshares(d: &Daemon, pki: &Pki) -> usize {
    history_kinds(d, pki)
        .iter()
        .filter(|(k, o)| k == "reshare" && o == "refused")
        .count()
}

/// A vault of device-1, server-a and server-b, and mallory: a party trusted to request
/// ceremonies (on the allow lists and operator of the policy) that joins as a new member.
async fn vault_with_mallory() -> (Setup, PartyKeys, VaultRecord) {
    let m = PartyKeys::generate();
    let s = setup_allowing(&[hex(&m.party_id())]).await;
    keygen(&s);
    let old = record_of(&s.a, &s.pki, "v1").await;
    (s, m, old)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_swaps_a_members_key_is_refused_before_anything_is_sent() {
    let (s, m, old) = vault_with_mallory().await;
    let a_id = id_of(&old, "server-a");
    let b_id = id_of(&old, "server-b");
    let mut members = old.members.clone();
    members.push(m.member("mallory"));
    members.sort_by_key(|x| x.id);
    // server-b is shown server-a with mallory's encryption key: it would deal server-a's
    // fragment to mallory.
    let mut swapped = members.clone();
    for x in swapped.iter_mut().filter(|x| x.id == a_id) {
        x.encryption_key = m.encryption_public();
    }
    let session = vec![0x51u8; 32];
    new_session(&s, &session, &members).await;
    let relay = format!("https://{}", s.a.addr);
    let before = reshare_entries(&s.b, &s.pki);
    let ch = s.pki.channel(s.b.addr, Some("device-1")).await.unwrap();
    let e = CosignerClient::new(ch.clone())
        .reshare(reshare_request(
            &m,
            &old,
            &swapped,
            2,
            &[a_id, b_id],
            &relay,
            &session,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("server-a") && e.message().contains("other keys"),
        "the refusal names the member whose key was swapped: {}",
        e.message()
    );
    // The same through the old record: a forged old_vault with the swapped key.
    let mut forged = old.clone();
    for x in forged.members.iter_mut().filter(|x| x.id == a_id) {
        x.encryption_key = m.encryption_public();
    }
    let e = CosignerClient::new(ch.clone())
        .reshare(reshare_request(
            &m,
            &forged,
            &members,
            2,
            &[a_id, b_id],
            &relay,
            &[0x52u8; 32],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("server-a"), "{}", e.message());
    // Refused before the gate: nothing started, nothing is pending, and server-b never
    // posted to the session (its HELLO would be the first thing in mallory's mailbox).
    assert_eq!(reshare_entries(&s.b, &s.pki), before);
    assert_eq!(
        refused_reshares(&s.b, &s.pki),
        2,
        "both refusals are recorded"
    );
    let v = show_vault(&s.b, &s.pki, "v1");
    assert!(v["slots"]["pending_epoch"].is_null(), "{v}");
    let ch = s.pki.channel(s.a.addr, Some("device-1")).await.unwrap();
    let mut stream = RelayClient::new(ch)
        .subscribe(cosigner_relay::driver::subscription(&m, &session, 0))
        .await
        .unwrap()
        .into_inner();
    let got = tokio::time::timeout(std::time::Duration::from_secs(2), stream.message()).await;
    assert!(
        got.is_err(),
        "something was posted to the session: {:?}",
        got.map(|m| m.map(|d| d.map(|d| d.envelope.map(|e| e.sender))))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parties_shown_different_requests_stop_before_round_one() {
    let (s, m, old) = vault_with_mallory().await;
    let a_id = id_of(&old, "server-a");
    let b_id = id_of(&old, "server-b");
    let mut members = old.members.clone();
    members.push(m.member("mallory"));
    members.sort_by_key(|x| x.id);
    let session = vec![0x53u8; 32];
    new_session(&s, &session, &members).await;
    let relay = format!("https://{}", s.a.addr);
    // Same keys, same session; server-a is asked for a 2-of-4, server-b for a 3-of-4.
    let to_a = reshare_request(&m, &old, &members, 2, &[a_id, b_id], &relay, &session);
    let to_b = reshare_request(&m, &old, &members, 3, &[a_id, b_id], &relay, &session);
    let ca = CosignerClient::new(s.pki.channel(s.a.addr, Some("device-1")).await.unwrap());
    let cb = CosignerClient::new(s.pki.channel(s.b.addr, Some("device-1")).await.unwrap());
    let (ra, rb) = tokio::join!(async move { ca.clone().reshare(to_a).await }, async move {
        cb.clone().reshare(to_b).await
    });
    for (who, r) in [("server-a", ra), ("server-b", rb)] {
        let e = r.expect_err("a ceremony ran on a request the others were not shown");
        assert!(
            e.message().contains("another participant list or request"),
            "{who}: {}",
            e.message()
        );
    }
    // Both recorded the abort; neither holds a pending share.
    for d in [&s.a, &s.b] {
        let kinds = history_kinds(d, &s.pki);
        assert_eq!(kinds[0], ("reshare".into(), "aborted".into()), "{kinds:?}");
        let v = show_vault(d, &s.pki, "v1");
        assert!(v["slots"]["pending_epoch"].is_null(), "{v}");
        assert_eq!(v["epoch"], 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dealer_that_left_the_committee_signs_nothing() {
    let s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    // A copy of device-1's party file from epoch 0 (a stale device or backup), which still
    // lists server-b.
    let stale = test_dir();
    let stale_file = stale.path().join("device-1.party");
    std::fs::copy(&s.d1.file, &stale_file).unwrap();
    // server-b deals and leaves: the new committee is device-1 and server-a (2-of-2).
    let v = ok(&s.d1.run(
        &s.pki,
        &[
            "reshare", "--vault", "v1", "--dealer", "device-1", "--dealer", "server-b", "--remove",
            "server-b", "--daemon", &da, "--daemon", &db, "--json",
        ],
    ));
    assert_eq!(v["epoch"], 1, "{v}");
    let current = stale.path().join("device-1.now");
    std::fs::copy(&s.d1.file, &current).unwrap();
    let b = show_vault(&s.b, &s.pki, "v1");
    assert_eq!(b["state"], "retired", "{b}");
    assert!(
        b["slots"]["current_epoch"].as_u64().unwrap_or(0) == 0,
        "{b}"
    );
    // server-b refuses to sign with its old share, even for a party still at epoch 0...
    std::fs::copy(&stale_file, &s.d1.file).unwrap();
    let e = err(&sign(
        &s,
        &s.d1,
        &["device-1", "server-b"],
        "from a retired dealer",
    ));
    assert!(
        e.contains("retired") || e.contains("left the committee"),
        "{e}"
    );
    // ...while the new committee (device-1 at epoch 1) signs under the same key.
    std::fs::copy(&current, &s.d1.file).unwrap();
    let out = ok(&sign(&s, &s.d1, &["device-1", "server-a"], "new committee"));
    verify_independently(&out, "new committee", &key);
    assert_eq!(out["epoch"], 1);

    // The retired share does not stay for ever: with a 2-second limit after the certified
    // commit, server-b drops it by itself and records that.
    let mut b = s.b;
    tokio::task::block_in_place(|| b.stop()).unwrap();
    let config = std::fs::read_to_string(&b.config).unwrap();
    std::fs::write(
        &b.config,
        config.replacen(
            "[ceremonies]\n",
            "[ceremonies]\ndrop_previous_after_secs = 2\n",
            1,
        ),
    )
    .unwrap();
    b.respawn(&s.pki).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(b.data_dir.join("shares/v1/previous")).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the retired share was kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        history_kinds(&b, &s.pki).contains(&("drop_previous".into(), "succeeded".into())),
        "the drop is recorded"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_file_rolled_back_to_an_older_epoch_is_refused() {
    let mut s = setup().await;
    keygen(&s);
    let saved = test_dir();
    let shares = s.b.data_dir.join("shares/v1");
    copy_dir(&shares, saved.path());
    assert_eq!(ok(&refresh(&s))["epoch"], 1);
    // Someone who can write the data directory puts the epoch-0 files back (a stale copy
    // or snapshot of the share directory), and the daemon restarts.
    tokio::task::block_in_place(|| s.b.stop()).unwrap();
    for f in ["current", "previous", "pending"] {
        let _ = std::fs::remove_file(shares.join(f));
    }
    std::fs::copy(saved.path().join("current"), shares.join("current")).unwrap();
    s.b.respawn(&s.pki).await.unwrap();
    let v = show_vault(&s.b, &s.pki, "v1");
    assert_eq!(v["state"], "damaged", "{v}");
    assert!(
        v["problem"].as_str().unwrap().contains("rolled back"),
        "{v}"
    );
    let e = err(&sign(&s, &s.d1, &["device-1", "server-b"], "rolled back"));
    assert!(e.contains("rolled back"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_backup_is_refused_when_a_peer_knows_a_newer_epoch() {
    let s = setup().await;
    keygen(&s);
    let dir = test_dir();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let bak = dir.path().join("b-epoch0.bak");
    ok(&s.b.ctl(
        &s.pki,
        "admin",
        &[
            "backup",
            "export",
            "--vault",
            "v1",
            "--out",
            bak.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    ));
    let o = s.b.ctl(&s.pki, "admin", &["status", "--json"]);
    ok(&o);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    let b_id = status["party_id"].as_str().unwrap().to_string();
    assert_eq!(ok(&refresh(&s))["epoch"], 1);
    // server-b's machine is lost; a fresh daemon (no history of the vault) replaces it.
    let allowed = std::fs::read_to_string(&s.b.config).unwrap();
    let extra = &allowed[allowed.find("[ceremonies]").unwrap()..];
    let fresh = test_dir();
    let c = Daemon::start_with(&fresh.path().join("c"), &s.pki, "", extra)
        .await
        .unwrap();
    let import = |more: &[&str]| {
        let mut args = vec![
            "backup",
            "import",
            "--backup",
            bak.to_str().unwrap(),
            "--replaces",
            &b_id,
            "--passphrase-file",
            pass.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        c.ctl(&s.pki, "admin", &args)
    };
    // With a peer: server-a signs that the vault is at epoch 1, so the epoch-0 backup is
    // refused as stale.
    let peer = format!("https://{}", s.a.addr);
    let e = err(&import(&["--peer", &peer]));
    assert!(e.contains("stale") && e.contains("epoch 1"), "{e}");
    // With no peer at all it is refused too, unless the operator says --offline.
    let e = err(&import(&[]));
    assert!(e.contains("no other party confirmed"), "{e}");
    assert!(!c.data_dir.join("shares/v1/current").exists());
}

fn member_of(spec: &str) -> Member {
    let mut it = spec.split(':');
    let name = it.next().unwrap().to_string();
    let id: [u8; 32] = unhex(it.next().unwrap()).try_into().unwrap();
    let encryption_key: [u8; 32] = unhex(it.next().unwrap()).try_into().unwrap();
    Member {
        id,
        encryption_key,
        name,
    }
}

/// Issue 16, finding 5: a daemon that holds nothing of a vault and is asked to join it as a
/// new member cannot check the old record against its own. It takes the record only with
/// endorsements by t old members over exactly that record, and only from a requester on its
/// keygen allow list; otherwise anyone with a party certificate could plant a vault whose
/// key they know.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_old_record_is_refused_by_a_party_joining_the_vault() {
    let (s, m, old) = vault_with_mallory().await;
    // server-c: a fresh daemon whose allow list does not name mallory.
    let config = std::fs::read_to_string(&s.b.config).unwrap();
    let extra = config[config.find("[ceremonies]").unwrap()..]
        .replace(&format!(", \"{}\"", hex(&m.party_id())), "");
    assert!(!extra.contains(&hex(&m.party_id())));
    let dir = test_dir();
    let c = Daemon::start_with(&dir.path().join("c"), &s.pki, "", &extra)
        .await
        .unwrap();
    let server_c = member_of(&c.member_spec(&s.pki, "server-c").unwrap());
    let a_id = id_of(&old, "server-a");
    let b_id = id_of(&old, "server-b");
    let mut members = old.members.clone();
    members.push(server_c.clone());
    members.push(m.member("mallory"));
    members.sort_by_key(|x| x.id);
    let relay = format!("https://{}", s.a.addr);
    let endorsements: Vec<api::Endorsement> = vec![
        record_answer(&s.a, &s.pki, "v1").await.endorsement.unwrap(),
        record_answer(&s.b, &s.pki, "v1").await.endorsement.unwrap(),
    ];
    let mut cc = CosignerClient::new(s.pki.channel(c.addr, Some("device-1")).await.unwrap());
    let ask = |record: &VaultRecord, endorsements: Vec<api::Endorsement>, n: u8| {
        endorsed_request(
            &m,
            record,
            &members,
            2,
            &[a_id, b_id],
            &relay,
            &[0x60 + n; 32],
            endorsements,
        )
    };
    // No endorsement: refused.
    let e = cc.reshare(ask(&old, Vec::new(), 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("endorsed by at least 2"),
        "{}",
        e.message()
    );
    // A forged record (server-a's key swapped for mallory's) with the real record's
    // endorsements: they do not verify over it.
    let mut forged = old.clone();
    for x in forged.members.iter_mut().filter(|x| x.id == a_id) {
        x.encryption_key = m.encryption_public();
    }
    let e = cc
        .reshare(ask(&forged, endorsements.clone(), 2))
        .await
        .unwrap_err();
    assert!(e.message().contains("does not verify"), "{}", e.message());
    // The real record, endorsed by two members: still refused, because mallory may not
    // bring a vault to this daemon.
    let e = cc.reshare(ask(&old, endorsements, 3)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("allowed_requesters"),
        "{}",
        e.message()
    );
    // Nothing started or was kept on server-c.
    assert!(
        !c.ctl(&s.pki, "admin", &["vault", "show", "v1"])
            .status
            .success()
    );
    assert_eq!(reshare_entries(&c, &s.pki), 0);
    assert_eq!(
        refused_reshares(&c, &s.pki),
        3,
        "the three refusals are recorded"
    );
}

/// Mallory's reshare engine, honest except that its round-1 fragment to `victim` is off by
/// one bit: it no longer matches mallory's commitments.
struct BadDealer {
    inner: cosigner_tss::Reshare,
    victim: [u8; 32],
}

impl BadDealer {
    fn tamper(
        &self,
        step: cosigner_tss::Step<cosigner_tss::ReshareOutput>,
    ) -> cosigner_tss::Step<cosigner_tss::ReshareOutput> {
        use cosigner_tss::{PartyId, Step};
        let fix = |msgs: Vec<cosigner_tss::Message>| {
            msgs.into_iter()
                .map(|mut m| {
                    if m.round == 1 && m.to == Some(PartyId(self.victim)) {
                        let last = m.body.len() - 1;
                        m.body[last] ^= 1;
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

impl cosigner_tss::Ceremony for BadDealer {
    type Output = cosigner_tss::ReshareOutput;
    fn session(&self) -> cosigner_tss::SessionId {
        self.inner.session()
    }
    fn me(&self) -> cosigner_tss::PartyId {
        self.inner.me()
    }
    fn start(&mut self) -> Result<cosigner_tss::Step<Self::Output>, cosigner_tss::TssError> {
        let s = self.inner.start()?;
        Ok(self.tamper(s))
    }
    fn handle(
        &mut self,
        msg: cosigner_tss::Message,
    ) -> Result<cosigner_tss::Step<Self::Output>, cosigner_tss::TssError> {
        let s = self.inner.handle(msg)?;
        Ok(self.tamper(s))
    }
    fn waiting_for(&self) -> Vec<cosigner_tss::PartyId> {
        self.inner.waiting_for()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blamed_dealer_is_named_with_its_own_signed_messages_as_evidence() {
    use cosigner_relay::roster::{Roster, RosterKind, request_digest};
    use cosigner_relay::{Driver, Hello, SessionSpec};
    use cosigner_tss::{Committee, PartyId, Reshare, ReshareParams};

    // Mallory joins a reshare of v1 (dealers server-a and server-b, new committee
    // {server-a, server-b, mallory}, 2-of-3) and deals server-a a bad fragment.
    let (s, m, old) = vault_with_mallory().await;
    let a_id = id_of(&old, "server-a");
    let b_id = id_of(&old, "server-b");
    let mut members: Vec<Member> = old
        .members
        .iter()
        .filter(|x| x.id == a_id || x.id == b_id)
        .cloned()
        .collect();
    members.push(m.member("mallory"));
    members.sort_by_key(|x| x.id);
    let mut dealers = vec![a_id, b_id];
    dealers.sort();
    let session = vec![0x5bu8; 32];
    new_session(&s, &session, &members).await;
    let relay = format!("https://{}", s.a.addr);
    let req = reshare_request(&m, &old, &members, 2, &dealers, &relay, &session);
    let roster = Roster {
        kind: RosterKind::Reshare,
        vault_id: "v1".into(),
        relay_session: session.clone(),
        request_digest: request_digest(&req.body),
        epoch: old.epoch(),
        threshold: 2,
        old_threshold: old.public.committee.threshold(),
        dealers: dealers.clone(),
        committee: members.iter().map(|x| x.id).collect(),
        participants: members.clone(),
    };
    let ca = CosignerClient::new(s.pki.channel(s.a.addr, Some("device-1")).await.unwrap());
    let cb = CosignerClient::new(s.pki.channel(s.b.addr, Some("device-1")).await.unwrap());
    let (to_a, to_b) = (req.clone(), req);
    let mallory = async {
        let ch = s.pki.channel(s.a.addr, Some("device-1")).await.unwrap();
        let mut d = Driver::open(
            RelayClient::new(ch),
            m.clone(),
            SessionSpec {
                roster,
                round_timeout: std::time::Duration::from_secs(20),
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
            old: old.public.clone(),
            dealers: dealers.iter().map(|x| PartyId(*x)).collect(),
            new_committee: Committee::new(2, members.iter().map(|x| PartyId(x.id))).unwrap(),
            nonce: d.engine_nonce().unwrap(),
        };
        let inner = Reshare::new(params, PartyId(m.party_id()), None).unwrap();
        d.run(BadDealer {
            inner,
            victim: a_id,
        })
        .await
    };
    let (ra, rb, rm) = tokio::join!(
        async move { ca.clone().reshare(to_a).await },
        async move { cb.clone().reshare(to_b).await },
        mallory
    );
    let mallory_hex = hex(&m.party_id());
    let short_m = &mallory_hex[..8];
    // server-a found the bad fragment; server-b stopped on a's ABORT and checked the
    // evidence itself; mallory's own driver heard the same.
    let ea = ra.expect_err("server-a took a bad fragment");
    let eb = rb.expect_err("server-b went on after an ABORT");
    assert!(
        ea.message().contains("does not match its commitments") && ea.message().contains("upheld"),
        "server-a: {}",
        ea.message()
    );
    assert!(
        eb.message().contains("server-a") && eb.message().contains("upheld"),
        "server-b: {}",
        eb.message()
    );
    assert!(rm.is_err(), "mallory's ceremony cannot complete");
    // Each daemon recorded the ABORT whole; an operator checks it again from either
    // history, without trusting the daemon or the accuser.
    for (who, d) in [("server-a", &s.a), ("server-b", &s.b)] {
        let list = ok(&d.ctl(
            &s.pki,
            "admin",
            &[
                "history", "list", "--json", "--kind", "reshare", "--limit", "1",
            ],
        ));
        let seq = list["seq"].as_u64().unwrap();
        assert_eq!(list["outcome"], "aborted", "{who}: {list}");
        // Listings name the blame but leave the stored ABORT (evidence, up to 128 KiB) to
        // GetHistoryEntry.
        let mut admin = CosignerClient::new(s.pki.channel(d.addr, Some("admin")).await.unwrap());
        let listed = admin
            .list_history(api::ListHistoryRequest {
                filter: None,
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let entry = listed.entries.iter().find(|e| e.seq == seq).unwrap();
        let listed_blame = entry.blame.as_ref().unwrap();
        assert!(
            listed_blame.abort_envelope.is_empty(),
            "{who}: listed whole"
        );
        assert_eq!(listed_blame.accused, m.party_id().to_vec());
        let full = admin
            .get_history_entry(api::GetHistoryEntryRequest { seq })
            .await
            .unwrap()
            .into_inner();
        let abort = &full.blame.as_ref().unwrap().abort_envelope;
        assert!(
            !abort.is_empty() && abort.len() <= cosigner_relay::blame::MAX_ABORT_BYTES,
            "{who}: {} bytes",
            abort.len()
        );
        assert_eq!(
            list["blame"]["accused"],
            mallory_hex.as_str(),
            "{who}: {list}"
        );
        let out = d.ctl(
            &s.pki,
            "admin",
            &["history", "blame", &seq.to_string(), "--json"],
        );
        let v = ok(&out);
        assert_eq!(v["finding"], "upheld", "{who}: {v}");
        assert_eq!(v["accused"], mallory_hex.as_str(), "{who}: {v}");
        assert_eq!(v["accuser"], hex(&a_id).as_str(), "{who}: {v}");
        assert!(
            v["summary"].as_str().unwrap().contains(short_m),
            "{who}: {v}"
        );
        // The vault is untouched: still epoch 0, nothing pending.
        let vault = show_vault(d, &s.pki, "v1");
        assert_eq!(vault["epoch"], 0, "{who}: {vault}");
        assert!(vault["slots"]["pending_epoch"].is_null(), "{who}: {vault}");
    }
    // An entry without evidence is refused by name.
    let out = s.a.ctl(&s.pki, "admin", &["history", "blame", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no blame evidence"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
