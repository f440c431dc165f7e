//! The foundation, as a user meets it: a real cosignerd on loopback with certificates from
//! `cosignerctl certs init`, reached over mutual TLS.

use std::time::Duration;

use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_api::v1::{GetStatusRequest, ListHistoryRequest, SignRequest};
use cosigner_tests::{Daemon, Pki, ctl, test_dir};
use nix::sys::signal::Signal;
use tonic::Code;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn healthy_daemon_answers_ctl_and_reflection() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    let addr = format!("https://{}", d.addr);
    let certs = pki.dir.to_str().unwrap();

    let out = ctl(&["--addr", &addr, "--certs", certs, "health"]);
    assert!(out.status.success(), "health failed: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "SERVING");

    let out = ctl(&["--addr", &addr, "--certs", certs, "status", "--json"]);
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["identity"], "spiffe://cosigner/party/cosignerd");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        status["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().starts_with("Refresh: ")),
        "status does not list Refresh as unavailable: {status}"
    );
    assert_eq!(status["relay_enabled"], true, "{status}");

    // Reflection lists our services, so grpcurl and friends can discover the API.
    let ch = pki.channel(d.addr, Some("device-1")).await.unwrap();
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "cosigner.v1.Cosigner",
        "cosigner.v1.Relay",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

#[tokio::test]
async fn clients_without_a_valid_certificate_are_refused() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let other = Pki::init(tmp.path(), "other-ca").unwrap();
    let d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    let addr = format!("https://{}", d.addr);
    let ca = pki.file("ca.pem");
    let ca = ca.to_str().unwrap();

    // No client certificate at all.
    let out = ctl(&["--addr", &addr, "--ca", ca, "health"]);
    assert!(
        !out.status.success(),
        "no-cert client was served: {}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("SERVING"));

    // A certificate from another CA, even with the admin role in it.
    let out = ctl(&[
        "--addr",
        &addr,
        "--ca",
        ca,
        "--cert",
        other.file("admin.pem").to_str().unwrap(),
        "--key",
        other.file("admin.key").to_str().unwrap(),
        "health",
    ]);
    assert!(
        !out.status.success(),
        "foreign-CA client was served: {}",
        stdout(&out)
    );

    // The same refusals through a gRPC client, on an operator RPC.
    let no_cert = pki.channel(d.addr, None).await;
    if let Ok(ch) = no_cert {
        let err = CosignerClient::new(ch)
            .get_status(GetStatusRequest {})
            .await
            .unwrap_err();
        assert_ne!(err.code(), Code::Ok);
    }

    // The daemon survived all of it.
    let out = ctl(&[
        "--addr",
        &addr,
        "--certs",
        pki.dir.to_str().unwrap(),
        "health",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn roles_gate_the_rpcs() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();

    let party = CosignerClient::new(pki.channel(d.addr, Some("device-1")).await.unwrap());
    let admin = CosignerClient::new(pki.channel(d.addr, Some("admin")).await.unwrap());

    // Operator-only RPCs refuse a party certificate.
    let err = party
        .clone()
        .get_status(GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("needs admin"), "{}", err.message());
    let err = party
        .clone()
        .list_history(ListHistoryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // ...and the CLI shows the same refusal.
    let out = ctl(&[
        "--addr",
        &format!("https://{}", d.addr),
        "--certs",
        pki.dir.to_str().unwrap(),
        "--as",
        "device-1",
        "status",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&out)
    );

    // Sign is for parties: an admin is refused before the handler runs.
    let err = admin
        .clone()
        .sign(SignRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A party may call Sign; without the request's own signature it is refused.
    let err = party
        .clone()
        .sign(SignRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("RequestAuth"), "{}", err.message());
    // An RPC that is not built says so, and what to use instead.
    let err = admin
        .clone()
        .refresh(cosigner_api::v1::RefreshRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(
        err.message().contains("same committee"),
        "{}",
        err.message()
    );
    // A malformed backup request names the field.
    let err = admin
        .clone()
        .export_backup(cosigner_api::v1::ExportBackupRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("vault_id"), "{}", err.message());

    // The admin reads the status.
    let status = admin
        .clone()
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.identity, "spiffe://cosigner/party/cosignerd");
}

#[tokio::test]
async fn optional_client_auth_opens_only_health() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let d = Daemon::start_with(
        &tmp.path().join("d"),
        &pki,
        "client_auth = \"optional\"",
        "",
    )
    .await
    .unwrap();
    let ch = pki.channel(d.addr, None).await.unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "anonymous health check should be SERVING");
    let err = CosignerClient::new(ch)
        .get_status(GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test]
async fn json_logs_when_configured() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let d = Daemon::start_with(&tmp.path().join("d"), &pki, "", "[log]\nformat = \"json\"")
        .await
        .unwrap();
    let log = d.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "cosignerd ready"),
        "{log}"
    );
}

/// SIGTERM with a call still in flight (an open reflection stream): the daemon waits the
/// grace period, closes it, exits 0 within 5 seconds, and the data directory is free again.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_releases_the_lock() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();

    let ch = pki.channel(d.addr, Some("admin")).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    })
    .await
    .unwrap();
    assert!(stream.message().await.unwrap().is_some());

    d.signal(Signal::SIGTERM).unwrap();
    let status = tokio::task::block_in_place(|| d.wait_exit(Duration::from_secs(5))).unwrap();
    let status =
        status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", d.log_text()));
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.contains("did not finish within the grace period"),
        "{log}"
    );
    drop(tx);

    // The lock is released: the same data directory opens at once.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(d.data_dir.join("cosignerd.lock"))
        .unwrap();
    lock.try_lock().expect("lock file still held after exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_without_work_exits_at_once() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    d.signal(Signal::SIGINT).unwrap();
    let status = tokio::task::block_in_place(|| d.wait_exit(Duration::from_secs(5)))
        .unwrap()
        .expect("still running 5 s after SIGINT");
    assert_eq!(status.code(), Some(0));
    assert!(!d.log_text().contains("grace period"), "{}", d.log_text());
}

#[tokio::test]
async fn two_daemons_cannot_share_a_data_directory() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let first = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();

    let dir2 = tmp.path().join("d2");
    std::fs::create_dir_all(&dir2).unwrap();
    let addr2 = format!("127.0.0.1:{}", cosigner_tests::free_port())
        .parse()
        .unwrap();
    let config2 = cosigner_tests::write_config(
        &dir2,
        &pki,
        addr2,
        &first.data_dir,
        "",
        &cosigner_tests::tpm_seal("swtpm:host=127.0.0.1,port=1"),
        "",
    )
    .unwrap();
    let out = std::process::Command::new(cosigner_tests::bin("cosignerd"))
        .arg("--config")
        .arg(&config2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("in use by another cosignerd"), "{err}");
    assert!(err.contains(&first.pid().to_string()), "{err}");
}
