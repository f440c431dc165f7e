//! Every refused ceremony request is in the history, with its reason, between real daemon
//! processes (swtpm, mutual TLS, sled): a forged signature, a stale timestamp, a keygen
//! requester not on the allow list, an unknown vault, a requester outside the committee,
//! expected hashes that do not match, a replayed request and a reused nonce. A flood of
//! refusals from one caller is answered in full but written only up to the rate limit.

mod common;

use common::*;
use cosigner_api::v1 as api;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_relay::record::members_to_api;
use cosigner_relay::{PartyKeys, VaultRecord};
use prost::Message as _;
use serde_json::Value;
use tonic::transport::Channel;

const KEYGEN: &str = "/cosigner.v1.Cosigner/Keygen";
const SIGN: &str = "/cosigner.v1.Cosigner/Sign";

use cosigner_relay::clock::now_ms;

/// A request signature with a chosen time and nonce.
fn auth_at(keys: &PartyKeys, method: &str, body: &[u8], ts: i64, nonce: &[u8]) -> api::RequestAuth {
    let msg = cosigner_relay::request::signed_bytes(method, body, ts, nonce);
    api::RequestAuth {
        requester: keys.party_id().to_vec(),
        timestamp_ms: ts,
        nonce: nonce.to_vec(),
        signature: keys.sign(&msg).to_vec(),
    }
}

fn keygen_body(record: &VaultRecord, outsider: &PartyKeys, session: &[u8]) -> Vec<u8> {
    let mut members: Vec<_> = record
        .members
        .iter()
        .filter(|m| m.name == "server-a")
        .cloned()
        .collect();
    members.push(outsider.member("outsider"));
    members.sort_by_key(|m| m.id);
    api::KeygenBody {
        vault_id: "v9".into(),
        scheme: api::Scheme::EcdsaSecp256k1 as i32,
        committee: Some(members_to_api(2, &members)),
        relay: Some(api::RelayRef {
            address: String::new(),
            session_id: session.to_vec(),
        }),
    }
    .encode_to_vec()
}

async fn keygen(c: &mut CosignerClient<Channel>, body: Vec<u8>, auth: api::RequestAuth) -> String {
    c.keygen(api::KeygenRequest {
        body,
        auth: Some(auth),
    })
    .await
    .expect_err("refused")
    .message()
    .to_string()
}

async fn sign(c: &mut CosignerClient<Channel>, body: Vec<u8>, auth: api::RequestAuth) -> String {
    c.sign(api::SignRequest {
        body,
        auth: Some(auth),
    })
    .await
    .expect_err("refused")
    .message()
    .to_string()
}

fn refused(d: &cosigner_tests::Daemon, pki: &cosigner_tests::Pki) -> Vec<Value> {
    let o = d.ctl(
        pki,
        "admin",
        &[
            "history",
            "list",
            "--json",
            "--all",
            "--limit",
            "1000",
            "--outcome",
            "refused",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refused_request_is_in_the_history_with_its_reason() {
    let outsider = PartyKeys::generate();
    let s = setup_allowing(&[hex(&outsider.party_id())]).await;
    common::keygen(&s);
    let record = record_of(&s.a, &s.pki, "v1").await;
    let ch = s.pki.channel(s.a.addr, Some("device-2")).await.unwrap();
    let mut c = CosignerClient::new(ch);
    let mut expect: Vec<(&str, String)> = Vec::new();

    // A forged signature (the claimed requester is the outsider).
    let body = keygen_body(&record, &outsider, &[1; 32]);
    let mut auth = cosigner_relay::request::sign(&outsider, KEYGEN, &body, now_ms());
    auth.signature[0] ^= 1;
    let e = keygen(&mut c, body, auth).await;
    expect.push(("does not verify", e));
    // A stale timestamp.
    let body = keygen_body(&record, &outsider, &[2; 32]);
    let e = keygen(
        &mut c,
        body.clone(),
        auth_at(&outsider, KEYGEN, &body, now_ms() - 3_600_000, &[2; 16]),
    )
    .await;
    expect.push(("timestamp", e));
    // A keygen requester on no allow list.
    let stranger = PartyKeys::generate();
    let body = keygen_body(&record, &stranger, &[3; 32]);
    let auth = cosigner_relay::request::sign(&stranger, KEYGEN, &body, now_ms());
    expect.push(("allowed_requesters", keygen(&mut c, body, auth).await));
    // An unknown vault.
    let body = personal_sign_body("nope", vec![outsider.party_id().to_vec()]);
    let auth = cosigner_relay::request::sign(&outsider, SIGN, &body, now_ms());
    expect.push(("no share of vault", sign(&mut c, body, auth).await));
    // A requester outside the committee.
    let a_id = record
        .members
        .iter()
        .find(|m| m.name == "server-a")
        .unwrap()
        .id;
    let body = personal_sign_body("v1", vec![a_id.to_vec(), outsider.party_id().to_vec()]);
    let auth = cosigner_relay::request::sign(&outsider, SIGN, &body, now_ms());
    expect.push(("not in the committee", sign(&mut c, body, auth).await));
    // Expected hashes that differ from the payload's (device-1 is a member and only
    // coordinates: a device that signs checks its own request first and would not send it).
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let out = s.d1.run(
        &s.pki,
        &[
            "sign",
            "--vault",
            "v1",
            "--message",
            "hello",
            "--daemon",
            &da,
            "--daemon",
            &db,
            "--signer",
            "server-b",
            "--signer",
            "server-a",
            "--expected-hash",
            &"00".repeat(32),
            "--json",
        ],
    );
    assert!(
        !out.status.success(),
        "signed against the expected hash: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    expect.push(("expected_hashes differ", String::new()));
    // A request that got as far as the ceremony (recorded with its nonce), then the same
    // request again, then its nonce on another body.
    let body = keygen_body(&record, &outsider, &[4; 32]);
    let nonce = [4u8; 16];
    let first = auth_at(&outsider, KEYGEN, &body, now_ms(), &nonce);
    let _ = c
        .keygen(api::KeygenRequest {
            body: body.clone(),
            auth: Some(first.clone()),
        })
        .await;
    let e = keygen(&mut c, body, first).await;
    expect.push(("already ran", e));
    let body = keygen_body(&record, &outsider, &[5; 32]);
    let e = keygen(
        &mut c,
        body.clone(),
        auth_at(&outsider, KEYGEN, &body, now_ms(), &nonce),
    )
    .await;
    expect.push(("nonce was already used", e));

    let entries = refused(&s.a, &s.pki);
    for (needle, answer) in &expect {
        assert!(
            answer.is_empty() || answer.contains(needle),
            "the caller was told {answer:?}, expected {needle:?}"
        );
        let hit = entries
            .iter()
            .find(|e| e["error"].as_str().unwrap_or("").contains(needle));
        let Some(hit) = hit else {
            panic!("no refused entry for {needle:?} in {entries:#?}");
        };
        // Who asked, through which certificate, and nothing indexed for replays.
        assert!(
            hit["tls_identity"]
                .as_str()
                .unwrap()
                .contains("/party/device-"),
            "{hit}"
        );
        assert_eq!(hit["nonce"], "", "{hit}");
        assert_eq!(hit["session_id"], "", "{hit}");
    }
    let non_member = entries
        .iter()
        .find(|e| {
            e["error"]
                .as_str()
                .unwrap()
                .contains("not in the committee")
        })
        .unwrap();
    assert_eq!(non_member["requester"], hex(&outsider.party_id()));
    assert_eq!(non_member["vault_id"], "v1");
    assert_eq!(non_member["kind"], "sign");
    // The refusals did not count as requests of v1 for the policy's windows, and the
    // chain still verifies.
    ok(&s.a.ctl(&s.pki, "admin", &["history", "verify"]));

    // A flood from one certificate: every request is answered, but only the rate limit's
    // worth is written.
    let before = refused(&s.a, &s.pki).len();
    let sent = 80;
    for i in 0..sent {
        let body = keygen_body(&record, &outsider, &[(i % 200) as u8 + 10; 32]);
        let mut auth = cosigner_relay::request::sign(&outsider, KEYGEN, &body, now_ms());
        auth.signature[1] ^= 1;
        let e = keygen(&mut c, body, auth).await;
        assert!(e.contains("does not verify"), "{e}");
    }
    let written = refused(&s.a, &s.pki).len() - before;
    assert!(
        written < sent,
        "{written} of {sent} flooded refusals were written"
    );
    assert!(written > 0, "none of the flood was recorded");
    // The next refusal written after the flood says how many were not: the history shows
    // the flood even without an entry per request.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let body = keygen_body(&record, &outsider, &[250; 32]);
    let mut auth = cosigner_relay::request::sign(&outsider, KEYGEN, &body, now_ms());
    auth.signature[1] ^= 1;
    keygen(&mut c, body, auth).await;
    let after = refused(&s.a, &s.pki);
    let note = after
        .iter()
        .filter_map(|e| e["error"].as_str())
        .find(|t| t.contains("were not written: refusal rate limit"))
        .unwrap_or_else(|| panic!("no entry tells of the dropped refusals: {after:#?}"));
    let dropped: u64 = note
        .split(" refused request(s) before this one")
        .next()
        .and_then(|t| t.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(dropped, (sent - written) as u64, "{note}");
    // The daemon still serves.
    ok(&s.a.ctl(&s.pki, "admin", &["status", "--json"]));
}
