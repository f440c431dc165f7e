//! Sealed share storage against real software TPMs (swtpm), on a real filesystem.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cosigner_seal::*;
use cosigner_test_support::swtpm::SwTpm;
use sha2::Digest;

const PARTY: [u8; 32] = [7; 32];

fn tpm_sealer(tpm: &SwTpm, pcrs: &[u8]) -> Sealer {
    Sealer::start(
        BackendConfig::Tpm {
            tcti: tpm.tcti(),
            pcrs: pcrs.to_vec(),
        },
        64,
    )
    .unwrap()
}

/// A 105 KB share with a recognisable but non-repeating pattern.
fn share() -> Vec<u8> {
    let mut x = 0x243f6a8885a308d3u64;
    (0..105_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

const CHILD: &str = "COSIGNER_SEAL_CHILD";

/// Child process: unseal the current share and print its SHA-256, or promote with a crash
/// at a named step. Does nothing as an ordinary test.
#[tokio::test]
async fn child() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    let data = PathBuf::from(std::env::var("DATA_DIR").unwrap());
    match role.as_str() {
        "unseal" => {
            let sealer = Sealer::start(
                BackendConfig::Tpm {
                    tcti: std::env::var("TCTI").unwrap(),
                    pcrs: vec![],
                },
                4,
            )
            .unwrap();
            let store = ShareStore::open(&data, sealer).unwrap();
            let (epoch, s) = store
                .load("vault-a", Slot::Current, PARTY, None)
                .await
                .unwrap();
            println!("unsealed epoch {epoch} sha256 {}", sha(&s));
        }
        "promote" => {
            // Promotion re-seals each moved share (slots are bound), so it needs the TPM.
            let sealer = Sealer::start(
                BackendConfig::Tpm {
                    tcti: std::env::var("TCTI").unwrap(),
                    pcrs: vec![],
                },
                4,
            )
            .unwrap();
            let mut store = ShareStore::open(&data, sealer).unwrap();
            let crash_at = std::env::var("CRASH_AT").unwrap();
            store.set_fault_hook(Arc::new(move |point| {
                if point == crash_at {
                    eprintln!("crashing at {point}");
                    std::process::abort();
                }
            }));
            store.promote("vault-a", PARTY).await.unwrap();
            println!("promote finished without reaching the crash point");
        }
        other => panic!("unknown child role {other}"),
    }
}

fn run_child(role: &str, envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CHILD, role)
        .env("TSS2_LOG", "all+NONE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Seal in this process; unseal in a fresh process, after the TPM itself was restarted on
/// the same state (as after a reboot): the primary is re-created from its template and the
/// sealed key opens.
#[tokio::test]
async fn a_105_kb_share_round_trips_through_a_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm");
    let data = dir.path().join("data");
    let secret = share();
    {
        let tpm = SwTpm::start(&state).unwrap();
        let store = ShareStore::open(&data, tpm_sealer(&tpm, &[])).unwrap();
        store
            .seal_pending("vault-a", PARTY, 1, &secret, b"")
            .await
            .unwrap();
        store.promote("vault-a", PARTY).await.unwrap();
        let (epoch, back) = store
            .load("vault-a", Slot::Current, PARTY, Some(1))
            .await
            .unwrap();
        assert_eq!((epoch, back.as_slice()), (1, secret.as_slice()));
        store.sealer().stop().await;
    } // swtpm stops here
    let tpm = SwTpm::start(&state).unwrap();
    let out = run_child(
        "unseal",
        &[("TCTI", &tpm.tcti()), ("DATA_DIR", data.to_str().unwrap())],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("unsealed epoch 1 sha256 {}", sha(&secret))),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pcr_bound_shares_follow_pcr_16() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
    let store = ShareStore::open(&dir.path().join("data"), tpm_sealer(&tpm, &[16])).unwrap();
    store
        .seal_pending("v", PARTY, 3, b"pcr bound", b"")
        .await
        .unwrap();
    assert!(store.load("v", Slot::Pending, PARTY, Some(3)).await.is_ok());
    store
        .sealer()
        .pcr_extend(16, b"a new boot component")
        .await
        .unwrap();
    let err = store
        .load("v", Slot::Pending, PARTY, Some(3))
        .await
        .unwrap_err();
    assert_eq!(err, SealError::PcrPolicyMismatch);
    assert!(
        err.to_string().contains("PCR policy no longer matches"),
        "{err}"
    );
    store.sealer().pcr_reset(16).await.unwrap();
    let (_, s) = store
        .load("v", Slot::Pending, PARTY, Some(3))
        .await
        .unwrap();
    assert_eq!(s.as_slice(), b"pcr bound");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_share_copied_to_another_tpm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tpm_a = SwTpm::start(&dir.path().join("tpm-a")).unwrap();
    let tpm_b = SwTpm::start(&dir.path().join("tpm-b")).unwrap();
    let data_a = dir.path().join("data-a");
    let store = ShareStore::open(&data_a, tpm_sealer(&tpm_a, &[])).unwrap();
    store
        .seal_pending("v", PARTY, 1, b"only on tpm a", b"")
        .await
        .unwrap();
    store.promote("v", PARTY).await.unwrap();
    let data_b = dir.path().join("data-b");
    copy_dir(&data_a, &data_b);
    let other = ShareStore::open(&data_b, tpm_sealer(&tpm_b, &[])).unwrap();
    let err = other
        .load("v", Slot::Current, PARTY, None)
        .await
        .unwrap_err();
    assert_eq!(err, SealError::ForeignTpm);
    assert!(err.to_string().contains("sealed by another TPM"), "{err}");
    // The same copy still opens on TPM A.
    assert!(store.load("v", Slot::Current, PARTY, None).await.is_ok());
}

#[tokio::test]
async fn damaged_or_misplaced_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
    let data = dir.path().join("data");
    let store = ShareStore::open(&data, tpm_sealer(&tpm, &[])).unwrap();
    store
        .seal_pending("vault-a", PARTY, 4, &share(), b"")
        .await
        .unwrap();
    store.promote("vault-a", PARTY).await.unwrap();
    let current = data.join("shares/vault-a/current");
    let good = std::fs::read(&current).unwrap();

    let load = || async { store.load("vault-a", Slot::Current, PARTY, None).await };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..10].to_vec(), "truncated"),
        (good[..good.len() - 100].to_vec(), "decryption failed"),
        (Vec::new(), "truncated"),
        ([b"XXXXX", &good[5..]].concat(), "bad magic"),
        ([&good[..5], &[9u8], &good[6..]].concat(), "version 9"),
        (
            {
                let mut b = good.clone();
                let n = b.len();
                b[n - 500] ^= 1;
                b
            },
            "decryption failed",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&current, &bytes).unwrap();
        let err = load().await.unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    std::fs::write(&current, &good).unwrap();
    assert!(load().await.is_ok());

    // Another vault's file in this vault's place, another epoch, another party.
    std::fs::create_dir_all(data.join("shares/vault-b")).unwrap();
    std::fs::write(data.join("shares/vault-b/current"), &good).unwrap();
    let err = store
        .load("vault-b", Slot::Current, PARTY, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SealError::Binding(_)) && err.to_string().contains("vault-a"),
        "{err}"
    );
    let err = store
        .load("vault-a", Slot::Current, PARTY, Some(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("epoch 4, not 5"), "{err}");
    let err = store
        .load("vault-a", Slot::Current, [8; 32], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another party"), "{err}");
    // Editing the header to claim another epoch breaks the authentication.
    let mut relabeled = good.clone();
    let epoch_at = 5 + 1 + 1 + 1 + 1 + 2 + "vault-a".len() + 32;
    relabeled[epoch_at + 7] = 5;
    std::fs::write(&current, &relabeled).unwrap();
    let err = store
        .load("vault-a", Slot::Current, PARTY, Some(5))
        .await
        .unwrap_err();
    assert_eq!(err, SealError::Decrypt);
    // Missing slots and hostile vault ids.
    assert!(matches!(
        store.load("vault-a", Slot::Previous, PARTY, None).await,
        Err(SealError::Missing { .. })
    ));
    assert!(matches!(
        store.load("../etc", Slot::Current, PARTY, None).await,
        Err(SealError::Config(_))
    ));
}

const STEPS: [&str; 10] = [
    "previous: temporary file written",
    "previous: renamed",
    "previous: directory synced",
    "previous: written from current",
    "current: about to be replaced by pending",
    "current: temporary file written",
    "current: renamed",
    "current: directory synced",
    "current: written from pending",
    "pending: removed",
];

#[tokio::test]
async fn a_kill_at_any_step_of_promote_leaves_a_readable_current() {
    for (i, step) in STEPS.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
        let data = dir.path().join("data");
        {
            let store = ShareStore::open(&data, tpm_sealer(&tpm, &[])).unwrap();
            store
                .seal_pending("vault-a", PARTY, 1, b"epoch one", b"")
                .await
                .unwrap();
            store.promote("vault-a", PARTY).await.unwrap();
            store
                .seal_pending("vault-a", PARTY, 2, b"epoch two", b"")
                .await
                .unwrap();
            store.sealer().stop().await;
        }
        let out = run_child(
            "promote",
            &[
                ("DATA_DIR", data.to_str().unwrap()),
                ("CRASH_AT", step),
                ("TCTI", &tpm.tcti()),
            ],
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("crashing at {step}")),
            "step {step:?} was never reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let store = ShareStore::open(&data, tpm_sealer(&tpm, &[])).unwrap();
        let (epoch, s) = store
            .load("vault-a", Slot::Current, PARTY, None)
            .await
            .unwrap_or_else(|e| panic!("after a crash at {step:?}: {e}"));
        let renamed = i >= 6;
        assert_eq!(epoch, if renamed { 2 } else { 1 }, "{step}");
        assert_eq!(
            s.as_slice(),
            if renamed {
                &b"epoch two"[..]
            } else {
                &b"epoch one"[..]
            }
        );
        let slots = store.slots("vault-a").unwrap();
        if i < STEPS.len() - 1 {
            // Nothing lost: the promotion is simply run again (after the current was
            // replaced, that only removes the pending file).
            assert_eq!(slots.pending, Some(2), "{step}");
            store.promote("vault-a", PARTY).await.unwrap();
        }
        assert_eq!(
            store.slots("vault-a").unwrap(),
            SlotEpochs {
                current: Some(2),
                pending: None,
                previous: Some(1)
            }
        );
        let (_, prev) = store
            .load("vault-a", Slot::Previous, PARTY, Some(1))
            .await
            .unwrap();
        assert_eq!(prev.as_slice(), b"epoch one");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_unseals_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
    let store =
        Arc::new(ShareStore::open(&dir.path().join("data"), tpm_sealer(&tpm, &[])).unwrap());
    let secret = share();
    store
        .seal_pending("v", PARTY, 1, &secret, b"")
        .await
        .unwrap();
    let want = sha(&secret);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .load("v", Slot::Pending, PARTY, Some(1))
                    .await
                    .map(|(_, s)| sha(&s))
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), want);
    }
    // Nothing leaked in the TPM: sealing and unsealing still work.
    store
        .seal_pending("v", PARTY, 2, b"after", b"")
        .await
        .unwrap();
    assert_eq!(
        store
            .load("v", Slot::Pending, PARTY, Some(2))
            .await
            .unwrap()
            .1
            .as_slice(),
        b"after"
    );
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn nothing_secret_is_on_disk_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
    let data = dir.path().join("data");
    let sealer = tpm_sealer(&tpm, &[]);
    let store = ShareStore::open(&data, sealer.clone()).unwrap();
    let secret = share();
    store
        .seal_pending("v", PARTY, 1, &secret, b"")
        .await
        .unwrap();
    store.promote("v", PARTY).await.unwrap();
    store
        .seal_pending("v", PARTY, 2, &secret, b"")
        .await
        .unwrap();
    store.promote("v", PARTY).await.unwrap();
    let (identity, created) = Identity::load_or_create(&data, &sealer).await.unwrap();
    assert!(created);
    let (again, created) = Identity::load_or_create(&data, &sealer).await.unwrap();
    assert!(!created);
    assert_eq!(again.party_id(), identity.party_id());
    assert_eq!(again.encryption_public(), identity.encryption_public());
    assert!(!format!("{identity:?}").contains(&::hex::encode(&identity.to_secret_bytes()[..32])));

    let mut needles: Vec<Vec<u8>> = (0..secret.len() - 16)
        .step_by(997)
        .map(|i| secret[i..i + 16].to_vec())
        .collect();
    let id_secret = identity.to_secret_bytes();
    needles.push(id_secret[..16].to_vec());
    needles.push(id_secret[32..48].to_vec());
    let mut files = Vec::new();
    all_files(&data, &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "{} holds secret bytes in the clear",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn the_software_backend_guards_its_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("soft.key");
    let sealer = Sealer::start(
        BackendConfig::Software {
            key_file: key.clone(),
        },
        4,
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let store = ShareStore::open(&dir.path().join("data"), sealer).unwrap();
    store
        .seal_pending("v", PARTY, 1, b"dev share", b"")
        .await
        .unwrap();
    assert_eq!(
        store
            .load("v", Slot::Pending, PARTY, None)
            .await
            .unwrap()
            .1
            .as_slice(),
        b"dev share"
    );
    drop(store);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Sealer::start(BackendConfig::Software { key_file: key }, 4)
        .err()
        .unwrap();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

/// Someone who can write the data directory copies the previous epoch's share (or a
/// pending one) over `current`: the slot is bound in the seal, so the load is refused,
/// naming the slot, and the public part says the same without unsealing.
#[tokio::test]
async fn a_share_copied_into_another_slot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
    let data = dir.path().join("data");
    let store = ShareStore::open(&data, tpm_sealer(&tpm, &[])).unwrap();
    store
        .seal_pending("v", PARTY, 1, b"epoch one", b"public one")
        .await
        .unwrap();
    store.promote("v", PARTY).await.unwrap();
    store
        .seal_pending("v", PARTY, 2, b"epoch two", b"public two")
        .await
        .unwrap();
    store.promote("v", PARTY).await.unwrap();
    assert_eq!(
        store.public("v", Slot::Current).unwrap(),
        Some((2, b"public two".to_vec()))
    );
    assert_eq!(
        store.public("v", Slot::Previous).unwrap(),
        Some((1, b"public one".to_vec()))
    );
    let vdir = data.join("shares").join("v");
    let good = std::fs::read(vdir.join("current")).unwrap();
    std::fs::copy(vdir.join("previous"), vdir.join("current")).unwrap();
    let e = store
        .load("v", Slot::Current, PARTY, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SealError::Binding(m) if m.contains("previous slot")),
        "{e}"
    );
    // Restored, it loads again: nothing was lost by the refusal.
    std::fs::write(vdir.join("current"), &good).unwrap();
    let (epoch, s) = store.load("v", Slot::Current, PARTY, None).await.unwrap();
    assert_eq!((epoch, s.as_slice()), (2, &b"epoch two"[..]));
    // A dealer that left: current becomes previous, nothing is current.
    store.retire("v", PARTY).await.unwrap();
    let slots = store.slots("v").unwrap();
    assert_eq!((slots.current, slots.previous), (None, Some(2)));
    let (_, s) = store
        .load("v", Slot::Previous, PARTY, Some(2))
        .await
        .unwrap();
    assert_eq!(s.as_slice(), b"epoch two");
}

/// Files sealed in format 1 (before slots were bound) are refused by a plain load, and
/// re-sealed with their slot by the migration, share intact.
#[tokio::test]
async fn format_one_shares_are_migrated_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SwTpm::start(&dir.path().join("tpm")).unwrap();
    let data = dir.path().join("data");
    let store = ShareStore::open(&data, tpm_sealer(&tpm, &[])).unwrap();
    let legacy = |epoch| Binding {
        purpose: Purpose::Share,
        slot: None,
        vault_id: "v".into(),
        party_id: PARTY,
        epoch,
    };
    let vdir = data.join("shares").join("v");
    std::fs::create_dir_all(&vdir).unwrap();
    let f = store
        .sealer()
        .seal_legacy(&legacy(3), b"old format share")
        .await
        .unwrap();
    std::fs::write(vdir.join("current"), f).unwrap();
    assert!(store.load("v", Slot::Current, PARTY, None).await.is_err());
    let migrated = store.migrate(PARTY).await.unwrap();
    assert_eq!(migrated, vec![("v".to_string(), Slot::Current)]);
    let (epoch, s) = store.load("v", Slot::Current, PARTY, None).await.unwrap();
    assert_eq!((epoch, s.as_slice()), (3, &b"old format share"[..]));
    assert!(store.migrate(PARTY).await.unwrap().is_empty());
}
