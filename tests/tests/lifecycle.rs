//! Share lifecycle through real daemons (own swtpm each, mutual TLS, sled): backups exported,
//! refused and imported on a fresh machine that then signs; emergency recovery from backups;
//! scheduled rotation among three daemons, with a peer offline during one run.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use cosigner_tests::{Daemon, Pki, ctl, test_dir};
use serde_json::Value;

const PASS: &str = "a long backup passphrase\n";

fn status(d: &Daemon, pki: &Pki) -> Value {
    let o = d.ctl(pki, "admin", &["status", "--json"]);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn party_id(d: &Daemon, pki: &Pki) -> String {
    status(d, pki)["party_id"].as_str().unwrap().to_string()
}

fn export(d: &Daemon, pki: &Pki, vault: &str, out: &Path, pass: &Path) -> Value {
    ok(&d.ctl(
        pki,
        "admin",
        &[
            "backup",
            "export",
            "--vault",
            vault,
            "--out",
            out.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "--json",
        ],
    ))
}

/// A backup import the operator vouches for (`--offline`: no peer is asked).
fn import(d: &Daemon, pki: &Pki, file: &Path, replaces: &str, pass: &Path) -> std::process::Output {
    import_with(d, pki, file, replaces, pass, &["--offline"])
}

fn import_with(
    d: &Daemon,
    pki: &Pki,
    file: &Path,
    replaces: &str,
    pass: &Path,
    more: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "backup",
        "import",
        "--backup",
        file.to_str().unwrap(),
        "--replaces",
        replaces,
        "--passphrase-file",
        pass.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    d.ctl(pki, "admin", &args)
}

fn recover(files: &[&Path], pass: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["recover".to_string()];
    for f in files {
        args.push("--backup".into());
        args.push(f.to_str().unwrap().into());
    }
    args.extend(["--passphrase-file".into(), pass.to_str().unwrap().into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    ctl(&a)
}

/// Every file under `dir` with its bytes: "nothing changed on disk" is this, equal.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(snapshot(&p));
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out.sort();
    out
}

fn sealed_state(d: &Daemon) -> Vec<(PathBuf, Vec<u8>)> {
    let mut s = snapshot(&d.data_dir.join("shares"));
    s.push((
        d.data_dir.join("identity"),
        std::fs::read(d.data_dir.join("identity")).unwrap(),
    ));
    s
}

/// Signs `hash` with the recovered secret (libsecp256k1) and verifies under `key`.
fn recovered_key_signs(secret_hex: &str, key_hex: &str) {
    use secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(&unhex(secret_hex)).unwrap();
    let pk = PublicKey::from_slice(&unhex(key_hex)).unwrap();
    assert_eq!(PublicKey::from_secret_key(&secp, &sk), pk);
    let msg = Message::from_digest([7u8; 32]);
    let sig = secp.sign_ecdsa(&msg, &sk);
    secp.verify_ecdsa(&msg, &sig, &pk).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_restore_a_lost_daemon_and_recover_the_key() {
    let s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    let dir = s.d1.file.parent().unwrap().to_path_buf();
    let pass = dir.join("backup.pass");
    std::fs::write(&pass, PASS).unwrap();
    let wrong = dir.join("wrong.pass");
    std::fs::write(&wrong, "not the right passphrase\n").unwrap();
    let a_id = party_id(&s.a, &s.pki);
    let b_id = party_id(&s.b, &s.pki);

    // Exports: both daemons (admin RPC) and the device (same format).
    let a_bak = dir.join("server-a.bak");
    let t = Instant::now();
    let meta = export(&s.a, &s.pki, "v1", &a_bak, &pass);
    // Figures for the README (printed, never asserted: machines are shared and noisy).
    eprintln!(
        "figure: backup export (cosignerctl -> daemon -> file) {:?}",
        t.elapsed()
    );
    let m = &meta["backup"];
    assert_eq!(m["vault_id"], "v1");
    assert_eq!(m["public_key"].as_str().unwrap(), key);
    assert_eq!(m["party_id"].as_str().unwrap(), a_id);
    assert_eq!(m["epoch"], 0);
    assert_eq!(m["threshold"], 2);
    assert_eq!(m["committee"].as_array().unwrap().len(), 3);
    assert!(
        m["source"]
            .as_str()
            .unwrap()
            .starts_with("cosignerd spiffe://")
    );
    let b_bak = dir.join("server-b.bak");
    export(&s.b, &s.pki, "v1", &b_bak, &pass);
    let d_bak = dir.join("device-1.bak");
    let d = ok(&s.d1.run(
        &s.pki,
        &[
            "backup-export",
            "--vault",
            "v1",
            "--out",
            d_bak.to_str().unwrap(),
            "--backup-passphrase-file",
            pass.to_str().unwrap(),
        ],
    ));
    assert_eq!(d["backup"]["party_name"], "device-1");
    // The clear metadata is readable offline, without the passphrase.
    let inspected = ok(&ctl(&[
        "backup",
        "inspect",
        "--backup",
        d_bak.to_str().unwrap(),
    ]));
    assert_eq!(inspected["epoch"], 0);
    // A backup is never overwritten.
    let again = s.a.ctl(
        &s.pki,
        "admin",
        &[
            "backup",
            "export",
            "--vault",
            "v1",
            "--out",
            a_bak.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(err(&again).contains("exists"));
    let kinds = history_kinds(&s.a, &s.pki);
    assert!(
        kinds.contains(&("backup_export".into(), "succeeded".into())),
        "{kinds:?}"
    );

    // Emergency recovery from two of three backups (a daemon's and the device's).
    let r = ok(&recover(
        &[&a_bak, &d_bak],
        &pass,
        &["--path", "m/0/7", "--json"],
    ));
    assert_eq!(r["public_key"].as_str().unwrap(), key);
    let root = &r["keys"][0];
    assert_eq!(root["public_key"].as_str().unwrap(), key);
    recovered_key_signs(root["private_key_hex"].as_str().unwrap(), &key);
    let child = &r["keys"][1];
    assert_eq!(child["path"], "m/0/7");
    recovered_key_signs(
        child["private_key_hex"].as_str().unwrap(),
        child["public_key"].as_str().unwrap(),
    );
    assert!(
        child["ethereum_address"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    assert!(
        child["bitcoin_p2wpkh_mainnet"]
            .as_str()
            .unwrap()
            .starts_with("bc1q")
    );
    // One backup is not enough; the same one twice is still one party.
    assert!(err(&recover(&[&a_bak], &pass, &[])).contains("at least 2"));
    let e = err(&recover(&[&a_bak, &a_bak], &pass, &[]));
    assert!(e.contains("twice"), "{e}");
    // Backups of another vault do not mix.
    ok(&keygen_named(&s, "v2"));
    let b2_bak = dir.join("server-b-v2.bak");
    export(&s.b, &s.pki, "v2", &b2_bak, &pass);
    let e = err(&recover(&[&a_bak, &b2_bak], &pass, &[]));
    assert!(e.contains("one vault"), "{e}");

    // Refusals on a daemon that holds v1: nothing changes on disk.
    let before = sealed_state(&s.a);
    let e = err(&import(&s.a, &s.pki, &a_bak, &a_id, &wrong));
    assert!(
        e.contains("wrong passphrase, or the file was altered"),
        "{e}"
    );
    let mut tampered = std::fs::read(&a_bak).unwrap();
    let at = tampered.len() - 10;
    tampered[at] ^= 0x40;
    let t_bak = dir.join("tampered.bak");
    std::fs::write(&t_bak, &tampered).unwrap();
    let e = err(&import(&s.a, &s.pki, &t_bak, &a_id, &pass));
    assert!(
        e.contains("wrong passphrase, or the file was altered"),
        "{e}"
    );
    // Metadata altered: the epoch in clear text.
    let text = std::fs::read(&a_bak).unwrap();
    let pos = text.windows(9).position(|w| w == b"\"epoch\":0").unwrap();
    let mut forged = text.clone();
    forged[pos + 8] = b'7';
    let f_bak = dir.join("forged.bak");
    std::fs::write(&f_bak, &forged).unwrap();
    let e = err(&import(&s.a, &s.pki, &f_bak, &a_id, &pass));
    assert!(e.contains("does not authenticate"), "{e}");
    let e = err(&import(&s.a, &s.pki, &a_bak, &a_id, &pass));
    assert!(e.contains("already holds a share of vault \"v1\""), "{e}");
    let e = err(&import(&s.a, &s.pki, &b_bak, &a_id, &pass));
    assert!(e.contains("another party than the one it replaces"), "{e}");
    assert_eq!(
        sealed_state(&s.a),
        before,
        "a refused import changed the share store"
    );
    let kinds = history_kinds(&s.a, &s.pki);
    assert!(
        kinds.contains(&("backup_import".into(), "failed".into())),
        "{kinds:?}"
    );

    // The machine of server-a is lost: a fresh daemon with a fresh TPM takes its place.
    let mut a = s.a;
    tokio::task::block_in_place(|| a.stop()).unwrap();
    let allowed = std::fs::read_to_string(&a.config).unwrap();
    let extra = &allowed[allowed.find("[ceremonies]").unwrap()..];
    let tmp2 = test_dir();
    let a2 = Daemon::start_with(&tmp2.path().join("a2"), &s.pki, "", extra)
        .await
        .unwrap();
    assert_ne!(party_id(&a2, &s.pki), a_id);
    let t = Instant::now();
    // server-b confirms (signed) that epoch 0 is still the vault's epoch.
    let peer = format!("https://{}", s.b.addr);
    let v = ok(&import_with(
        &a2,
        &s.pki,
        &a_bak,
        &a_id,
        &pass,
        &["--peer", &peer],
    ));
    eprintln!(
        "figure: backup import on a fresh daemon (identity + share sealed) {:?}",
        t.elapsed()
    );
    assert_eq!(v["public_key"].as_str().unwrap(), key);
    assert_eq!(v["epoch"], 0);
    assert_eq!(
        party_id(&a2, &s.pki),
        a_id,
        "the new machine acts as the replaced party"
    );
    let sealed = std::fs::read(a2.data_dir.join("shares/v1/current")).unwrap();
    assert!(sealed.starts_with(b"CSEAL"));
    // A daemon is one party: another party's backup (of a vault it does not hold) is
    // refused now that it holds a vault; of a vault it holds, as a second share.
    let before = sealed_state(&a2);
    let e = err(&import(&a2, &s.pki, &b2_bak, &b_id, &pass));
    assert!(e.contains("a daemon is one party"), "{e}");
    let e = err(&import(&a2, &s.pki, &b_bak, &b_id, &pass));
    assert!(e.contains("already holds a share"), "{e}");
    assert_eq!(sealed_state(&a2), before);

    // The restored server-a signs with device-1, and the signature verifies.
    let out = ok(&s.d1.run(
        &s.pki,
        &[
            "sign",
            "--vault",
            "v1",
            "--message",
            "after the restore",
            "--signer",
            "device-1",
            "--signer",
            "server-a",
            "--daemon",
            &a2.daemon_spec("server-a"),
            "--daemon",
            &s.b.daemon_spec("server-b"),
            "--json",
        ],
    ));
    verify_independently(&out, "after the restore", &key);
    // And it still does after a restart (identity and share were sealed to its TPM).
    let mut a2 = a2;
    a2.respawn(&s.pki).await.unwrap();
    assert_eq!(party_id(&a2, &s.pki), a_id);
}

/// Waits until `f(status of d)` holds; panics with the status after `limit`.
async fn wait_status(
    d: &Daemon,
    pki: &Pki,
    limit: Duration,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let st = status(d, pki);
        if f(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached in {limit:?}; status {st:#}\nlog:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rotation(st: &Value) -> &Value {
    &st["rotations"][0]
}

#[tokio::test(flavor = "multi_thread")]
async fn three_daemons_rotate_on_schedule_and_survive_an_offline_peer() {
    let s = setup().await;
    let key = keygen(&s)["public_key"].as_str().unwrap().to_string();
    let d1_id = s.d1.show().unwrap()["party_id"]
        .as_str()
        .unwrap()
        .to_string();
    let extra = format!(
        "[ceremonies]\nallowed_requesters = [\"{d1_id}\"]\nround_timeout_secs = 10\n\n[policy]\nbundle = \"{}\"\n",
        s.bundle.display()
    );
    let tmp = test_dir();
    let mut c = Daemon::start_with(&tmp.path().join("c"), &s.pki, "", &extra)
        .await
        .unwrap();
    // server-b's share at epoch 0, before the reshare below makes it stale.
    let b_epoch0 = tmp.path().join("server-b-epoch0.bak");
    let early_pass = tmp.path().join("early.pass");
    std::fs::write(&early_pass, PASS).unwrap();
    export(&s.b, &s.pki, "v1", &b_epoch0, &early_pass);
    // The device hands its place to a third daemon: committee server-a, server-b, server-c.
    let c_spec = c.member_spec(&s.pki, "server-c").unwrap();
    let out = ok(&s.d1.run(
        &s.pki,
        &[
            "reshare",
            "--vault",
            "v1",
            "--dealer",
            "device-1",
            "--dealer",
            "server-a",
            "--remove",
            "device-1",
            "--add",
            &c_spec,
            "--daemon",
            &s.a.daemon_spec("server-a"),
            "--daemon",
            &s.b.daemon_spec("server-b"),
            "--daemon",
            &c.daemon_spec("server-c"),
            "--json",
        ],
    ));
    assert_eq!(out["dealt"], true, "{out}");
    let dir = tmp.path().to_path_buf();
    let pass = dir.join("backup.pass");
    std::fs::write(&pass, PASS).unwrap();
    let c_epoch1 = dir.join("server-c-epoch1.bak");
    export(&c, &s.pki, "v1", &c_epoch1, &pass);
    let b_epoch1 = dir.join("server-b-epoch1.bak");
    export(&s.b, &s.pki, "v1", &b_epoch1, &pass);

    // A device restoring a backup asks the committee like a daemon does: server-a signs
    // that the vault is at epoch 1, so the epoch-0 backup is refused as stale; with no
    // peer it is refused unless --offline; the epoch-1 backup is confirmed and restored.
    let peer = format!("https://{}", s.a.addr);
    let device_import = |file: &std::path::Path, more: &[&str]| {
        let mut args = vec![
            "backup-import",
            "--backup",
            file.to_str().unwrap(),
            "--backup-passphrase-file",
            pass.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        s.d2.run(&s.pki, &args)
    };
    let e = err(&device_import(&b_epoch0, &["--peer", &peer]));
    assert!(e.contains("stale") && e.contains("epoch 1"), "{e}");
    let e = err(&device_import(&b_epoch0, &[]));
    assert!(e.contains("no other party confirmed"), "{e}");
    assert!(
        s.d2.show().unwrap()["vaults"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let v = ok(&device_import(&b_epoch1, &["--peer", &peer]));
    assert_eq!(v["epoch"], 1, "{v}");

    // Every daemon's policy lets server-a start scheduled refreshes.
    let (a_id, b_id, c_id) = (
        party_id(&s.a, &s.pki),
        party_id(&s.b, &s.pki),
        party_id(&c, &s.pki),
    );
    let before = status(&s.b, &s.pki)["policy_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let data = s.bundle.join("data.json");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(
        &data,
        text.replace(
            "\"rotation_initiators\": {}",
            &format!("\"rotation_initiators\": {{\"{a_id}\": true}}"),
        ),
    )
    .unwrap();
    // Reloaded now (the file watch may have been first: then `replaced` is false, but the
    // hash is the new bundle's either way).
    for d in [&s.a, &s.b, &c] {
        let r = ok(&d.ctl(&s.pki, "admin", &["policy", "reload"]));
        assert_eq!(r["error"], "", "{r}");
        assert_ne!(r["policy_hash"].as_str().unwrap(), before, "{r}");
    }
    // server-a gets a schedule every 10 seconds (retries after 1 s, at most 2 s); a
    // rotation takes about 3 s here, more on a loaded machine.
    let mut a = s.a;
    let mut conf = std::fs::read_to_string(&a.config).unwrap();
    conf.push_str(&format!(
        "\n[rotation]\nretry_min_secs = 1\nretry_max_secs = 2\n\n[rotation.peers]\n\"{b_id}\" = \"https://{}\"\n\"{c_id}\" = \"https://{}\"\n\n[[rotation.schedule]]\nvault = \"v1\"\ncron = \"*/10 * * * * *\"\n",
        s.b.addr, c.addr
    ));
    std::fs::write(&a.config, conf).unwrap();
    a.respawn(&s.pki).await.unwrap();
    let st = status(&a, &s.pki);
    assert_eq!(rotation(&st)["schedule"], "*/10 * * * * *");

    // First rotation.
    let st = wait_status(
        &a,
        &s.pki,
        Duration::from_secs(60),
        "first rotation",
        |st| rotation(st)["runs_succeeded"].as_u64() >= Some(1),
    )
    .await;
    let epoch_after_first = rotation(&st)["epoch"].as_u64().unwrap();
    let r = rotation(&st);
    eprintln!(
        "figure: 3-party scheduled rotation (peer checks, session, reshare, commit) {} ms",
        r["last_success_at_ms"].as_i64().unwrap() - r["last_attempt_at_ms"].as_i64().unwrap()
    );
    assert!(epoch_after_first >= 2, "{st}");
    // A backup reminder: server-a never exported, and others' backups are of epoch 1.
    let b_st = status(&s.b, &s.pki);
    assert_eq!(b_st["backups"][0]["backup_renewal_needed"], true, "{b_st}");

    // server-c goes offline right after a run: the next run fails cleanly.
    wait_status(
        &a,
        &s.pki,
        Duration::from_secs(30),
        "a quiet moment",
        |st| {
            let r = rotation(st);
            let next = r["next_run_at_ms"].as_i64().unwrap_or(0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            r["last_success_at_ms"].as_i64() >= r["last_attempt_at_ms"].as_i64()
                && next - now > 1500
        },
    )
    .await;
    tokio::task::block_in_place(|| c.stop()).unwrap();
    let st = wait_status(&a, &s.pki, Duration::from_secs(30), "a failed run", |st| {
        rotation(st)["runs_failed"].as_u64() >= Some(1)
    })
    .await;
    let why = rotation(&st)["last_error"].as_str().unwrap().to_string();
    assert!(
        why.contains("server-c") && why.contains("unreachable"),
        "{why}"
    );
    let failed_at = rotation(&st)["runs_succeeded"].as_u64().unwrap();
    // Nothing half-done: a and b are at the same epoch, with no pending share.
    for d in [&a, &s.b] {
        let v = ok(&d.ctl(&s.pki, "admin", &["vault", "show", "v1"]));
        assert_eq!(v["slots"]["pending_epoch"], Value::Null, "{v}");
        assert_eq!(v["public_key"].as_str().unwrap(), key);
    }
    // Back online: the next run succeeds.
    c.respawn(&s.pki).await.unwrap();
    let st = wait_status(
        &a,
        &s.pki,
        Duration::from_secs(60),
        "a run after the peer returned",
        |st| {
            rotation(st)["runs_succeeded"].as_u64() > Some(failed_at)
                && rotation(st)["consecutive_failures"] == 0
        },
    )
    .await;
    assert!(rotation(&st)["runs_succeeded"].as_u64().unwrap() >= 2);

    // Stop the schedule (stop server-a) and look at the result: same key, new epoch, shares
    // changed, old backups refused.
    tokio::task::block_in_place(|| a.stop()).unwrap();
    let vb = ok(&s.b.ctl(&s.pki, "admin", &["vault", "show", "v1"]));
    let vc = ok(&c.ctl(&s.pki, "admin", &["vault", "show", "v1"]));
    assert_eq!(vb["public_key"].as_str().unwrap(), key);
    assert_eq!(vc["public_key"].as_str().unwrap(), key);
    let epoch = vb["epoch"].as_u64().unwrap();
    assert!(
        epoch >= 3,
        "two rotations after the reshare to epoch 1: {vb}"
    );
    assert_eq!(vc["epoch"].as_u64().unwrap(), epoch);
    let kinds = history_kinds(&s.b, &s.pki);
    assert!(
        kinds
            .iter()
            .filter(|k| k.0 == "reshare" && k.1 == "succeeded")
            .count()
            >= 3,
        "{kinds:?}"
    );
    // Backups of two epochs do not combine.
    let c_now = dir.join("server-c-now.bak");
    export(&c, &s.pki, "v1", &c_now, &pass);
    let e = err(&recover(&[&b_epoch1, &c_now], &pass, &[]));
    assert!(e.contains("of epoch"), "{e}");
    // The shares changed: the old and the new backup of server-c hold different shares.
    let old =
        cosigner_backup::open(&std::fs::read(&c_epoch1).unwrap(), PASS.trim().as_bytes()).unwrap();
    let new =
        cosigner_backup::open(&std::fs::read(&c_now).unwrap(), PASS.trim().as_bytes()).unwrap();
    assert_ne!(
        old.held.share.encode().as_slice(),
        new.held.share.encode().as_slice()
    );
    assert_eq!(new.meta.epoch, epoch);
    // server-c loses its share (its history remains): the epoch-1 backup is refused...
    tokio::task::block_in_place(|| c.stop()).unwrap();
    std::fs::remove_dir_all(c.data_dir.join("shares/v1")).unwrap();
    c.respawn(&s.pki).await.unwrap();
    let e = err(&import(&c, &s.pki, &c_epoch1, &c_id, &pass));
    assert!(
        e.contains(&format!("has seen vault \"v1\" at epoch {epoch}")),
        "{e}"
    );
    assert!(!c.data_dir.join("shares/v1/current").exists());
    // ...and the current one restores it.
    let v = ok(&import(&c, &s.pki, &c_now, &c_id, &pass));
    assert_eq!(v["epoch"].as_u64().unwrap(), epoch);
}
