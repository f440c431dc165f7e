//! The TPM backend against a real software TPM (swtpm).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cosigner_seal::SealError;
use cosigner_seal::tpm::TpmBackend;
use cosigner_test_support::swtpm::SwTpm;

#[test]
fn seal_unseal_and_pcr_binding() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SwTpm::start(&dir.path().join("tpm1")).unwrap();
    let key = [0x42u8; 32];

    let mut plain = TpmBackend::connect(&tpm.tcti(), &[]).unwrap();
    let sealed = plain.seal_key(&key).unwrap();
    assert_eq!(*plain.unseal_key(&sealed).unwrap(), key);
    drop(plain);

    let mut bound = TpmBackend::connect(&tpm.tcti(), &[16]).unwrap();
    let sealed16 = bound.seal_key(&key).unwrap();
    assert_eq!(*bound.unseal_key(&sealed16).unwrap(), key);
    bound.pcr_extend(16, b"something was measured").unwrap();
    let err = bound.unseal_key(&sealed16).unwrap_err();
    assert_eq!(err, SealError::PcrPolicyMismatch, "{err}");
    assert!(err.to_string().contains("PCR policy no longer matches"));
    // Unbound blobs still unseal.
    assert_eq!(*bound.unseal_key(&sealed).unwrap(), key);
    bound.pcr_reset(16).unwrap();
    assert_eq!(*bound.unseal_key(&sealed16).unwrap(), key);
    drop(bound);
    drop(tpm);

    // Another TPM (fresh state) refuses both.
    let other = SwTpm::start(&dir.path().join("tpm2")).unwrap();
    let mut b = TpmBackend::connect(&other.tcti(), &[]).unwrap();
    for s in [&sealed, &sealed16] {
        let err = b.unseal_key(s).unwrap_err();
        assert_eq!(err, SealError::ForeignTpm, "{err}");
    }
}
