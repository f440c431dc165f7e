//! Sealing through a real cosignerd: the party identity is created once, sealed by the
//! daemon's swtpm and stable across restarts; the software sealer needs an explicit opt-in
//! and is warned about at every start; an unreachable TPM stops the daemon with its reason.

use std::process::Command;

use cosigner_tests::{Daemon, Pki, bin, test_dir};

fn status(d: &Daemon, pki: &Pki) -> serde_json::Value {
    let o = d.ctl(pki, "admin", &["status", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

async fn stop(d: &mut Daemon) {
    let s = tokio::task::block_in_place(|| d.stop()).unwrap();
    assert_eq!(s.code(), Some(0), "{}", d.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_identity_is_sealed_by_the_tpm_and_survives_restarts() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"), &pki).await.unwrap();
    let s1 = status(&d, &pki);
    // One of the values the API lists, so a client can compare; the TCTI beside it.
    assert_eq!(s1["sealing_backend"], "tpm", "{s1}");
    assert!(
        s1["sealing_detail"].as_str().unwrap().starts_with("swtpm:"),
        "{s1}"
    );
    let party = s1["party_id"].as_str().unwrap().to_string();
    assert_eq!(party.len(), 64);
    assert!(d.log_text().contains("created=true"), "{}", d.log_text());

    stop(&mut d).await;
    d.respawn(&pki).await.unwrap();
    let s2 = status(&d, &pki);
    assert_eq!(s2["party_id"], s1["party_id"]);
    assert_eq!(s2["encryption_key"], s1["encryption_key"]);
    assert!(d.log_text().contains("created=false"), "{}", d.log_text());

    // The start record names the party.
    let o = d.ctl(&pki, "admin", &["history", "show", "2", "--json"]);
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["requester"].as_str().unwrap(), party);

    // The sealed identity file does not contain the identity in the clear (and the TPM it
    // was sealed with is the only one that opens it: covered in crates/seal).
    let file = std::fs::read(d.data_dir.join("identity")).unwrap();
    assert!(file.starts_with(b"CSEAL"));

    // The data directory is pinned to its TPM's storage primary: started against another
    // TPM (a replaced chip, a cleared owner hierarchy, something in the middle), the daemon
    // refuses before it unseals anything.
    assert!(d.data_dir.join("tpm-primary").exists());
    stop(&mut d).await;
    let other = cosigner_test_support::swtpm::SwTpm::start(&tmp.path().join("other-tpm")).unwrap();
    let moved = tmp.path().join("d").join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    let config = cosigner_tests::write_config(
        &moved,
        &pki,
        "127.0.0.1:1".parse().unwrap(),
        &d.data_dir,
        "",
        &cosigner_tests::tpm_seal(&other.tcti()),
        "",
    )
    .unwrap();
    let o = Command::new(bin("cosignerd"))
        .arg("--config")
        .arg(&config)
        .env("TSS2_LOG", "all+NONE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not the one pinned") && err.contains("Nothing was unsealed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn software_sealing_needs_an_explicit_opt_in_and_warns_at_every_start() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();

    // Without the opt-in: refused, naming the key.
    let config = cosigner_tests::write_config(
        &dir,
        &pki,
        "127.0.0.1:1".parse().unwrap(),
        &dir.join("data"),
        "",
        "[seal]\nbackend = \"software\"\n",
        "",
    )
    .unwrap();
    let o = Command::new(bin("cosignerd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("seal.allow_insecure_software_seal"), "{err}");
    assert!(
        !dir.join("data").exists(),
        "a refused config must not create anything"
    );

    // With it: serves, says so in status, and warns at every start.
    let mut d = Daemon::start_with_seal(
        &dir,
        &pki,
        "",
        "[seal]\nbackend = \"software\"\nallow_insecure_software_seal = true\n",
        "",
        None,
    )
    .await
    .unwrap();
    let s = status(&d, &pki);
    assert!(
        s["sealing_backend"] == "software"
            && s["sealing_detail"].as_str().unwrap().contains("INSECURE"),
        "{s}"
    );
    stop(&mut d).await;
    d.respawn(&pki).await.unwrap();
    let warnings = d
        .log_text()
        .matches("INSECURE: shares are sealed with a software key")
        .count();
    assert_eq!(warnings, 2, "{}", d.log_text());
}

#[tokio::test]
async fn an_unreachable_tpm_stops_the_daemon_with_the_reason() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    let port = cosigner_tests::free_port();
    let config = cosigner_tests::write_config(
        &dir,
        &pki,
        "127.0.0.1:1".parse().unwrap(),
        &dir.join("data"),
        "",
        &cosigner_tests::tpm_seal(&format!("swtpm:host=127.0.0.1,port={port}")),
        "",
    )
    .unwrap();
    let o = Command::new(bin("cosignerd"))
        .arg("--config")
        .arg(&config)
        .env("TSS2_LOG", "all+NONE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot open the TPM") && err.contains(&port.to_string()),
        "{err}"
    );
}
