//! The share is unsealed last: between real daemon processes (swtpm, mutual TLS, sled), a
//! sign request from a party outside the committee, a forged one, a replayed one and one
//! the policy denies make the TPM unseal nothing, and neither do ListVaults, GetVault,
//! GetVaultRecord or GetStatus. The daemon's own seal metrics count the unseals; a signature
//! afterwards shows that the count moves when a share is unsealed. With 1,000 vaults,
//! ListVaults and GetStatus still unseal nothing.

mod common;

use std::net::SocketAddr;

use common::*;
use cosigner_api::v1 as api;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_relay::PartyKeys;
use cosigner_relay::clock::now_ms;
use cosigner_tests::free_port;
use prost::Message as _;

const SIGN: &str = "/cosigner.v1.Cosigner/Sign";
const UNSEALS: &str = r#"cosigner_tpm_operation_duration_seconds_count{op="unseal",result="ok"}"#;
const FAILED_UNSEALS: &str =
    r#"cosigner_tpm_operation_duration_seconds_count{op="unseal",result="error"}"#;

fn unseals(addr: SocketAddr) -> (f64, f64) {
    let text = scrape(addr);
    (sample(&text, UNSEALS), sample(&text, FAILED_UNSEALS))
}

/// The usual two daemons and two devices, server-a exporting its metrics.
async fn setup_with_metrics_on_a() -> (Setup, SocketAddr) {
    let port = free_port();
    let ma: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = setup_configured(&[], |who| {
        if who == "a" {
            format!("\n[metrics]\nlisten = \"{ma}\"\n")
        } else {
            String::new()
        }
    })
    .await;
    (s, ma)
}

/// ListVaults on server-a as the admin; the client for more calls.
async fn list_as_admin(
    s: &Setup,
) -> (
    CosignerClient<tonic::transport::Channel>,
    api::ListVaultsResponse,
) {
    let admin = s.pki.channel(s.a.addr, Some("admin")).await.unwrap();
    let mut admin = CosignerClient::new(admin);
    let listed = admin
        .list_vaults(api::ListVaultsRequest::default())
        .await
        .unwrap()
        .into_inner();
    (admin, listed)
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_denied_and_replayed_signs_unseal_nothing() {
    let (s, ma) = setup_with_metrics_on_a().await;
    keygen(&s);
    // One real signature by device-1 and server-a, whose request is kept for a replay.
    let request_file = s._tmp.path().join("sign-request.json");
    let da = s.a.daemon_spec("server-a");
    ok(&s.d1.run(
        &s.pki,
        &[
            "sign",
            "--vault",
            "v1",
            "--message",
            "first",
            "--signer",
            "device-1",
            "--signer",
            "server-a",
            "--daemon",
            &da,
            "--request-out",
            request_file.to_str().unwrap(),
            "--json",
        ],
    ));
    let before = unseals(ma);
    assert!(before.0 >= 1.0, "the signature unsealed the share once");

    let ch = s.pki.channel(s.a.addr, Some("device-2")).await.unwrap();
    let mut c = CosignerClient::new(ch);
    // The same request again: refused as a replay.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&request_file).unwrap()).unwrap();
    let replay =
        api::SignRequest::decode(unhex(file["request"].as_str().unwrap()).as_slice()).unwrap();
    let e = c.sign(replay).await.expect_err("a replay is refused");
    assert!(
        e.message().contains("already") || e.message().contains("nonce"),
        "{}",
        e.message()
    );
    // A party outside the committee.
    let outsider = PartyKeys::generate();
    let record_members = record_of(&s.a, &s.pki, "v1").await.members;
    let a_id = record_members
        .iter()
        .find(|m| m.name == "server-a")
        .unwrap()
        .id;
    let body = personal_sign_body("v1", vec![a_id.to_vec(), outsider.party_id().to_vec()]);
    let auth = cosigner_relay::request::sign(&outsider, SIGN, &body, now_ms());
    let e = c
        .sign(api::SignRequest {
            body: body.clone(),
            auth: Some(auth.clone()),
        })
        .await
        .expect_err("a non-member is refused");
    assert!(
        e.message().contains("not in the committee"),
        "{}",
        e.message()
    );
    // A forged signature over a member's request.
    let mut forged = auth;
    forged.requester = a_id.to_vec();
    let e = c
        .sign(api::SignRequest {
            body,
            auth: Some(forged),
        })
        .await
        .expect_err("a forged request is refused");
    assert!(e.message().contains("does not verify"), "{}", e.message());
    // A policy denial: a daily limit of 1 wei, then a 1 ETH transaction.
    deny_by_daily_limit(&s);
    // Reading vaults and status.
    let out = s.a.ctl(&s.pki, "admin", &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["vaults"][0]["vault_id"], "v1", "{status}");
    let (mut admin, listed) = list_as_admin(&s).await;
    assert_eq!(listed.vaults.len(), 1);
    admin
        .get_vault(api::GetVaultRequest {
            vault_id: "v1".into(),
        })
        .await
        .unwrap();

    let after = unseals(ma);
    assert_eq!(
        after, before,
        "a replay, a non-member, a forged request, a denial and reading vaults and status unsealed something"
    );
    // The count does move when a share is unsealed: one more signature.
    ok(&common::sign(
        &s,
        &s.d1,
        &["device-1", "server-a"],
        "second",
    ));
    let signed = unseals(ma);
    assert_eq!(signed.0, after.0 + 1.0, "one signature, one unseal");
}

/// 1,000 vaults: a real keygen, then 999 more share files written beside it into the
/// stopped daemon's data directory, each sealed by its swtpm and with a public record signed
/// by its party key, exactly as the daemon writes them. (Their sealed shares name the first
/// vault inside and would be refused as damaged if unsealed; the point is that listing
/// never unseals them.) The restarted daemon lists and counts all 1,000 with its unseal
/// count unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn listing_and_status_of_a_thousand_vaults_unseal_nothing() {
    use cosigner_seal::{BackendConfig, Identity, Sealer, ShareStore, Slot};
    const VAULTS: usize = 1000;
    let (mut s, ma) = setup_with_metrics_on_a().await;
    keygen(&s);
    tokio::task::block_in_place(|| s.a.stop()).unwrap();
    let tcti = s.a.tcti().expect("server-a runs on its own swtpm");
    let data = s.a.data_dir.clone();
    let sealer = tokio::task::spawn_blocking(move || {
        Sealer::start(BackendConfig::Tpm { tcti, pcrs: vec![] }, 8)
    })
    .await
    .unwrap()
    .unwrap();
    let (keys, created) = Identity::load_or_create(&data, &sealer).await.unwrap();
    assert!(!created, "server-a's own identity");
    let me = keys.party_id();
    let store = ShareStore::open(&data, sealer.clone()).unwrap();
    let (_, bytes) = store.load("v1", Slot::Current, me, None).await.unwrap();
    let history = cosigner_history::History::open(&data.join("history")).unwrap();
    for i in 1..VAULTS {
        let vault = format!("v1-{i:04}");
        let mut held = cosigner_relay::Held::decode(&bytes).unwrap();
        held.record.public.vault_id = vault.clone();
        let epoch = held.record.epoch();
        let public = cosigner_party::signed::sign(
            &keys,
            cosigner_party::signed::PUBLIC_RECORD,
            &vault,
            &held.record.encode(),
        );
        store
            .seal_pending(&vault, me, epoch, &held.encode(), &public)
            .await
            .unwrap();
        store.promote(&vault, me).await.unwrap();
        history.raise_floor(&vault, epoch).unwrap();
    }
    drop(history);
    sealer.stop().await;
    drop((store, sealer));
    s.a.respawn(&s.pki).await.unwrap();

    let before = unseals(ma);
    let (mut admin, listed) = list_as_admin(&s).await;
    assert_eq!(listed.vaults.len(), VAULTS);
    assert!(
        listed.vaults.iter().all(|v| v.state == "active"),
        "every vault is listed as active"
    );
    let status = admin
        .get_status(api::GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.vaults.len(), VAULTS);
    let out = s.a.ctl(&s.pki, "admin", &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let after = unseals(ma);
    assert_eq!(
        after, before,
        "listing and counting {VAULTS} vaults unsealed something"
    );
    // The first vault still signs: its share was untouched.
    ok(&common::sign(&s, &s.d1, &["device-1", "server-a"], "after"));
    assert_eq!(unseals(ma).0, after.0 + 1.0, "one signature, one unseal");
}
