//! Share backups of a real vault: round trip, what the metadata says, every refusal, and
//! recovery from two backups.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cosigner_backup::*;
use cosigner_tss::recover_key;

const CHEAP: Costs = Costs {
    m_kib: 64,
    t: 1,
    p: 1,
};
const PASS: &[u8] = b"twelve chars or more";

#[test]
fn backups_round_trip_say_what_they_hold_and_recover_the_key() {
    let v = common::vault("vault-1");
    let files: Vec<Vec<u8>> = v
        .iter()
        .map(|(k, h)| export_with(k, h, PASS, "test", 42, CHEAP).unwrap())
        .collect();
    let (k0, h0) = &v[0];
    let meta = inspect(&files[0]).unwrap();
    assert_eq!(meta.vault_id, "vault-1");
    assert_eq!(meta.epoch, 0);
    assert_eq!(meta.threshold, 2);
    assert_eq!(meta.committee.len(), 3);
    assert_eq!(meta.created_at_ms, 42);
    assert_eq!(meta.party_id, cosigner_party::keys::hex(&k0.party_id()));
    let b = open(&files[0], PASS).unwrap();
    assert_eq!(b.keys.party_id(), k0.party_id());
    assert_eq!(b.keys.encryption_public(), k0.encryption_public());
    assert_eq!(
        b.held.share.encode().as_slice(),
        h0.share.encode().as_slice()
    );
    assert_eq!(b.held.record, h0.record);

    // Two backups rebuild the key.
    let b1 = open(&files[1], PASS).unwrap();
    let key = recover_key(&[&b.held.share, &b1.held.share]).unwrap();
    assert_eq!(key.public_key(), &h0.record.public.public_key);
}

#[test]
fn refusals_name_the_problem() {
    let v = common::vault("vault-2");
    let (k0, h0) = &v[0];
    let (k1, _) = &v[1];
    // Only one's own share can be exported.
    assert!(matches!(
        export_with(k1, h0, PASS, "t", 0, CHEAP).unwrap_err(),
        BackupError::Mismatch(_)
    ));
    assert_eq!(
        export_with(k0, h0, b"short", "t", 0, CHEAP).unwrap_err(),
        BackupError::Box(BoxError::ShortPassphrase)
    );
    let f = export_with(k0, h0, PASS, "t", 0, CHEAP).unwrap();
    assert_eq!(
        open(&f, b"another passphrase").unwrap_err(),
        BackupError::Box(BoxError::Open)
    );
    // Any altered byte, metadata included, fails to open.
    for i in (0..f.len()).step_by(97) {
        let mut x = f.clone();
        x[i] ^= 1;
        assert!(open(&x, PASS).is_err(), "byte {i}");
    }
    // Not a backup at all.
    assert!(matches!(
        inspect(b"CPTY....").unwrap_err(),
        BackupError::Box(BoxError::Format(_))
    ));
    // A party file is not a backup, even with the right passphrase.
    let pf = passbox::seal(Kind::PartyFile, b"{}", b"x", PASS, CHEAP).unwrap();
    assert!(matches!(
        open(&pf, PASS).unwrap_err(),
        BackupError::Box(BoxError::Kind { .. })
    ));
    // A box whose metadata lies about its share (built with the passphrase, so the AEAD
    // holds) is refused as forged.
    let mut meta = inspect(&f).unwrap();
    meta.epoch = 5;
    let (_, plain) = passbox::open(&f, Kind::ShareBackup, PASS).unwrap();
    let forged = passbox::seal(
        Kind::ShareBackup,
        &serde_json::to_vec(&meta).unwrap(),
        &plain,
        PASS,
        CHEAP,
    )
    .unwrap();
    let e = open(&forged, PASS).unwrap_err();
    assert!(matches!(e, BackupError::Mismatch(_)), "{e}");
    assert!(e.to_string().contains("epoch 5 vs 0"), "{e}");
}
