//! Who may take part, and a relay that lies: a party outside the committee cannot join, a
//! relay that alters, drops or replays an envelope makes the ceremony abort naming the
//! sender, and a client without a valid certificate is refused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use cosigner_api::v1 as api;
use cosigner_api::v1::relay_server::{Relay as RelayApi, RelayServer};
use cosigner_relay::mailbox::{Limits, Relay};
use cosigner_relay::service::RelayService;
use cosigner_tests::{Pki, free_port};
use prost::Message as _;
use serde_json::Value;
use tonic::{Request, Response, Status};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Lie {
    Alter,
    Drop,
    Replay,
    /// The victim's READY never reaches anyone.
    DropReady,
    /// The victim's READY is delivered after every round timeout.
    DelayReady,
    /// The victim's READY is kept from `hide_from` only (who times out and ABORTs after
    /// its own READY went out).
    HideReady,
}

/// A relay that tells one lie about the first round-2 protocol envelope from `victim`:
/// alters it on its way to a recipient, drops it, or delivers it twice.
struct LyingRelay {
    inner: Arc<RelayService>,
    lie: Lie,
    victim: Vec<u8>,
    hide_from: Vec<u8>,
    told: Arc<AtomicUsize>,
}

fn is_ready(env: &api::Envelope, victim: &[u8]) -> bool {
    env.sender == victim && env.kind == api::EnvelopeKind::Ready as i32
}

fn target(env: &api::Envelope, victim: &[u8]) -> bool {
    env.sender == victim && env.round == 2 && env.kind == api::EnvelopeKind::Protocol as i32
}

#[tonic::async_trait]
impl RelayApi for LyingRelay {
    async fn create_session(
        &self,
        r: Request<api::CreateSessionRequest>,
    ) -> Result<Response<api::CreateSessionResponse>, Status> {
        self.inner.create_session(r).await
    }

    async fn post(
        &self,
        r: Request<api::PostRequest>,
    ) -> Result<Response<api::PostResponse>, Status> {
        let req = r.into_inner();
        let env = req.envelope.clone().unwrap_or_default();
        if is_ready(&env, &self.victim) {
            match self.lie {
                Lie::DropReady => return Ok(Response::new(api::PostResponse { seq: 0 })),
                Lie::DelayReady => {
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(25)).await;
                        let _ = inner.post(Request::new(req)).await;
                    });
                    return Ok(Response::new(api::PostResponse { seq: 0 }));
                }
                _ => {}
            }
        }
        if target(&env, &self.victim)
            && matches!(self.lie, Lie::Alter | Lie::Drop | Lie::Replay)
            && self.told.fetch_add(1, Ordering::SeqCst) == 0
        {
            match self.lie {
                Lie::Alter => {
                    // Accepted as sent; altered on delivery (see subscribe).
                    self.told.fetch_sub(1, Ordering::SeqCst);
                }
                Lie::Drop => return Ok(Response::new(api::PostResponse { seq: 0 })),
                Lie::Replay => {
                    self.inner.post(Request::new(req.clone())).await?;
                }
                // These lie about READY only (above and in subscribe).
                Lie::DropReady | Lie::DelayReady | Lie::HideReady => {}
            }
        }
        self.inner.post(Request::new(req)).await
    }

    type SubscribeStream = <RelayService as RelayApi>::SubscribeStream;

    async fn subscribe(
        &self,
        r: Request<api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subscriber = r.get_ref().party_id.clone();
        let stream = self.inner.subscribe(r).await?.into_inner();
        if self.lie == Lie::HideReady && subscriber == self.hide_from {
            let victim = self.victim.clone();
            let hidden = tokio_stream::StreamExt::filter(
                stream,
                move |d| !matches!(d, Ok(d) if d.envelope.as_ref().is_some_and(|e| is_ready(e, &victim))),
            );
            return Ok(Response::new(Box::pin(hidden)));
        }
        if self.lie != Lie::Alter {
            return Ok(Response::new(stream));
        }
        let (victim, told) = (self.victim.clone(), self.told.clone());
        let altered = tokio_stream::StreamExt::map(stream, move |d| {
            let mut d = d?;
            if let Some(e) = d.envelope.as_mut()
                && target(e, &victim)
                && told.fetch_add(1, Ordering::SeqCst) == 0
            {
                let last = e.payload.len() - 1;
                e.payload[last] ^= 0x01;
            }
            Ok(d)
        });
        Ok(Response::new(Box::pin(altered)))
    }

    async fn close_session(
        &self,
        r: Request<api::CloseSessionRequest>,
    ) -> Result<Response<api::CloseSessionResponse>, Status> {
        self.inner.close_session(r).await
    }
}

/// Serves a lying relay over TLS (with the daemon certificate of `pki`); its address.
async fn lying_relay(pki: &Pki, lie: Lie, victim: Vec<u8>) -> String {
    lying_relay_hiding(pki, lie, victim, Vec::new()).await
}

async fn lying_relay_hiding(pki: &Pki, lie: Lie, victim: Vec<u8>, hide_from: Vec<u8>) -> String {
    let port = free_port();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(pki.file("cosignerd.pem")).unwrap(),
            std::fs::read(pki.file("cosignerd.key")).unwrap(),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(
            std::fs::read(pki.file("ca.pem")).unwrap(),
        ));
    let svc = LyingRelay {
        inner: Arc::new(RelayService::new(
            Arc::new(Relay::new(Limits::default())),
            |_| None,
        )),
        lie,
        victim,
        hide_from,
        told: Arc::new(AtomicUsize::new(0)),
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(RelayServer::new(svc))
            .serve(addr),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    format!("https://{addr}")
}

fn party_id_of(spec: &str) -> Vec<u8> {
    let hex = spec.split(':').nth(1).unwrap();
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_that_alters_drops_or_replays_makes_the_ceremony_abort_naming_the_sender() {
    let s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    let b_spec = s.b.member_spec(&s.pki, "server-b").unwrap();
    let b_id = party_id_of(&b_spec);
    for (lie, expect) in [
        (Lie::Alter, "bad signature"),
        (Lie::Replay, "replayed"),
        (Lie::Drop, "timed out"),
    ] {
        let relay = lying_relay(&s.pki, lie, b_id.clone()).await;
        let da = s.a.daemon_spec("server-a");
        let db = s.b.daemon_spec("server-b");
        let o = s.d1.run(
            &s.pki,
            &[
                "sign",
                "--vault",
                "v1",
                "--message",
                "lied to",
                "--signer",
                "device-1",
                "--signer",
                "server-b",
                "--daemon",
                &da,
                "--daemon",
                &db,
                "--relay",
                &relay,
                "--json",
            ],
        );
        let e = err(&o);
        assert!(e.contains(expect), "{lie:?}: {e}");
        assert!(
            e.contains("server-b"),
            "{lie:?} does not name server-b: {e}"
        );
        // server-b stopped because device-1 told it to (a signed ABORT), not by waiting for
        // its own timeout, and recorded why. (A replayed envelope is seen by device-1 only
        // after its own next round went out, so server-b may already have finished then.)
        if lie == Lie::Alter {
            let out = s.b.ctl(
                &s.pki,
                "admin",
                &["history", "list", "--json", "--limit", "1"],
            );
            let last: Value =
                serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap())
                    .unwrap();
            let why = last["error"].as_str().unwrap_or("");
            assert_eq!(last["outcome"], "aborted", "{lie:?}: {last}");
            assert!(
                why.contains("device-1")
                    && why.contains("aborted the ceremony")
                    && why.contains(expect),
                "{lie:?}: {last}"
            );
        }
    }
    // The honest relay still works afterwards: nobody lost anything.
    let out = ok(&sign(&s, &s.d1, &["device-1", "server-b"], "honest"));
    verify_independently(&out, "honest", &key);
}

/// Issue 16, finding 2: a READY the relay drops, delays past every timeout, or keeps from
/// one party (which then ABORTs after its own READY went out) splits the parties into
/// committed and in doubt. Nobody deletes its new share, and the resolve from the others'
/// signed reports brings every party to the new epoch, which signs.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_delayed_or_half_delivered_ready_ends_in_doubt_and_resolves_to_one_epoch() {
    let s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    let b_id = party_id_of(&s.b.member_spec(&s.pki, "server-b").unwrap());
    let d1_id = unhex(s.d1.show().unwrap()["party_id"].as_str().unwrap());
    let cases = [
        (Lie::DropReady, b_id.clone(), Vec::new()),
        (Lie::DelayReady, b_id.clone(), Vec::new()),
        (Lie::HideReady, d1_id.clone(), b_id.clone()),
    ];
    for (n, (lie, victim, hide_from)) in cases.into_iter().enumerate() {
        let epoch = n as u64 + 1;
        let relay = lying_relay_hiding(&s.pki, lie, victim, hide_from).await;
        let o = tokio::task::block_in_place(|| refresh_via(&s, Some(&relay)));
        // The coordinator says what happened: a split is reported as in doubt, per party.
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{lie:?}: a split commit reported success: {out}"
        );
        assert!(out.contains("doubt"), "{lie:?}: {out}");
        // Every party holds the new share (current or pending): nobody deleted it.
        let daemons_hold = [&s.a, &s.b].iter().all(|d| {
            let sl = slots(d, &s.pki, "v1").unwrap();
            sl["current_epoch"].as_u64() == Some(epoch)
                || sl["pending_epoch"].as_u64() == Some(epoch)
        });
        assert!(daemons_hold, "{lie:?}: a daemon lost its new share");
        let in_doubt = [&s.a, &s.b]
            .iter()
            .filter(|d| daemon_state(d, &s.pki, "v1").as_deref() == Some("in_doubt"))
            .count()
            + usize::from(device_state(&s.d1, "v1").as_deref() == Some("in_doubt"));
        assert!(in_doubt > 0, "{lie:?}: nobody was in doubt");
        // A party in doubt signs nothing until it is resolved.
        if daemon_state(&s.a, &s.pki, "v1").as_deref() == Some("in_doubt") {
            let e = err(&sign(&s, &s.d1, &["server-a", "server-b"], "in doubt"));
            assert!(
                e.contains("in doubt") || e.contains("in_doubt"),
                "{lie:?}: {e}"
            );
        }
        assert!(repair_all(&s, "v1"), "{lie:?}");
        assert_eq!(epochs(&s, "v1"), [Some(epoch); 3], "{lie:?}");
        let msg = format!("after {lie:?}");
        let sig = ok(&sign(&s, &s.d1, &["server-a", "server-b"], &msg));
        verify_independently(&sig, &msg, &key);
        assert_eq!(sig["epoch"].as_u64(), Some(epoch), "{lie:?}");
    }
}

use cosigner_relay::clock::now_ms;

#[tokio::test(flavor = "multi_thread")]
async fn a_party_outside_the_committee_cannot_take_part() {
    // `outsider` may ask for ceremonies on these daemons (it is on their allow lists), but
    // it is not in v1's committee.
    let outsider = cosigner_relay::PartyKeys::generate();
    let s = setup_allowing(&[cosigner_relay::keys::hex(&outsider.party_id())]).await;
    keygen(&s);
    let a_spec = s.a.member_spec(&s.pki, "server-a").unwrap();
    let sign_body = |signer: &cosigner_relay::PartyKeys| {
        personal_sign_body("v1", vec![party_id_of(&a_spec), signer.party_id().to_vec()])
    };
    let ch = s.pki.channel(s.a.addr, Some("device-2")).await.unwrap();
    let mut c = api::cosigner_client::CosignerClient::new(ch.clone());
    let body = sign_body(&outsider);
    let auth =
        cosigner_relay::request::sign(&outsider, "/cosigner.v1.Cosigner/Sign", &body, now_ms());
    let e = c
        .sign(api::SignRequest {
            body,
            auth: Some(auth),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not in the committee"), "{e:?}");

    // A keygen from a party on no allow list is refused before anything else.
    let keys = cosigner_relay::PartyKeys::generate();
    let body = api::KeygenBody {
        vault_id: "v2".into(),
        scheme: api::Scheme::EcdsaSecp256k1 as i32,
        committee: None,
        relay: None,
    }
    .encode_to_vec();
    let auth =
        cosigner_relay::request::sign(&keys, "/cosigner.v1.Cosigner/Keygen", &body, now_ms());
    let e = c
        .keygen(api::KeygenRequest {
            body,
            auth: Some(auth),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("allowed_requesters"), "{e:?}");

    // A relay session does not let a non-participant read or post.
    let mut relay = api::relay_client::RelayClient::new(ch);
    let sid = vec![9u8; 32];
    let member = cosigner_relay::PartyKeys::generate();
    let other = cosigner_relay::PartyKeys::generate();
    relay
        .create_session(api::CreateSessionRequest {
            session_id: sid.clone(),
            participants: vec![member.party_id().to_vec(), other.party_id().to_vec()],
            ttl_seconds: 60,
        })
        .await
        .unwrap();
    let ts = now_ms();
    let sig = keys.sign(&cosigner_relay::mailbox::subscribe_bytes(
        &sid,
        &keys.party_id(),
        0,
        ts,
        &[7u8; 16],
    ));
    let e = match relay
        .subscribe(api::SubscribeRequest {
            session_id: sid.clone(),
            party_id: keys.party_id().to_vec(),
            after_seq: 0,
            timestamp_ms: ts,
            signature: sig.to_vec(),
            nonce: vec![7u8; 16],
        })
        .await
    {
        Ok(_) => panic!("a stranger subscribed"),
        Err(e) => e,
    };
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // Nor subscribe as a participant without that participant's key.
    let sig = keys.sign(&cosigner_relay::mailbox::subscribe_bytes(
        &sid,
        &member.party_id(),
        0,
        ts,
        &[7u8; 16],
    ));
    let e = match relay
        .subscribe(api::SubscribeRequest {
            session_id: sid.clone(),
            party_id: member.party_id().to_vec(),
            after_seq: 0,
            timestamp_ms: ts,
            signature: sig.to_vec(),
            nonce: vec![7u8; 16],
        })
        .await
    {
        Ok(_) => panic!("an impostor subscribed"),
        Err(e) => e,
    };
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let env = cosigner_relay::envelope::seal(
        &keys,
        &sid,
        None,
        None,
        1,
        1,
        api::EnvelopeKind::Protocol,
        b"junk",
    )
    .unwrap();
    let e = relay
        .post(api::PostRequest {
            envelope: Some(env),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ceremony_and_relay_calls_need_a_valid_client_certificate() {
    let s = setup().await;
    let other_ca = Pki::init(s.pki.dir.parent().unwrap(), "other-ca").unwrap();
    // A certificate from another CA, and no certificate at all.
    for who in [Some("device-1"), None] {
        let pki = if who.is_some() { &other_ca } else { &s.pki };
        let ch = pki.channel(s.a.addr, who).await;
        let Ok(ch) = ch else { continue }; // refused during the handshake: fine
        let mut c = api::cosigner_client::CosignerClient::new(ch.clone());
        let e = c.sign(api::SignRequest::default()).await.unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unauthenticated
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            "{who:?}: {e:?}"
        );
        let mut r = api::relay_client::RelayClient::new(ch);
        let e = r
            .create_session(api::CreateSessionRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unauthenticated
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            "{who:?}: {e:?}"
        );
    }
    // The device party itself, with the other CA's certificate, cannot start a keygen.
    let a = s.a.member_spec(&s.pki, "server-a").unwrap();
    let da = s.a.daemon_spec("server-a");
    let o = s.d1.run(
        &other_ca,
        &[
            "keygen",
            "--vault",
            "x",
            "--threshold",
            "2",
            "--member",
            &a,
            "--daemon",
            &da,
        ],
    );
    let e = err(&o);
    assert!(!e.is_empty());
}
