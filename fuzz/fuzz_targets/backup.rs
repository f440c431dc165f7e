//! Backup files from an untrusted place: the clear header and metadata as read before any
//! passphrase, and the decrypted contents (identity + held share) as decoded after one.
//! The second half seals the fuzzer's bytes into a valid box with cheap Argon2 costs, so
//! the decoders behind the AEAD are reached (random bytes would never authenticate).
#![no_main]
use cosigner_backup::passbox::{self, Costs, Kind};
use libfuzzer_sys::fuzz_target;

const PASS: &[u8] = b"fuzzing passphrase";
const CHEAP: Costs = Costs { m_kib: 8, t: 1, p: 1 };

fuzz_target!(|data: &[u8]| {
    let _ = cosigner_backup::inspect(data);
    if let Ok(h) = passbox::header(data)
        && h.costs.m_kib <= 64
        && h.costs.t <= 2
    {
        let _ = cosigner_backup::open(data, PASS);
    }
    // [meta_len u16][meta][plaintext]
    if data.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        let (meta, plain) = data[2..].split_at(n);
        if let Ok(b) = passbox::seal(Kind::ShareBackup, meta, plain, PASS, CHEAP) {
            let _ = cosigner_backup::open(&b, PASS);
        }
    }
});
