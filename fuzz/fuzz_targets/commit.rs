//! What other parties send in a commit and a resolve: READY statements, signed reports,
//! and a commit record read back from disk. Junk gives an error, never a panic.
#![no_main]
use cosigner_relay::commit::{CommitState, ReadyStatement, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = ReadyStatement::decode(data) {
        let _ = r.verify();
    }
    if let Ok(r) = Report::decode(data) {
        let _ = r.verify();
        let _ = r.digest();
    }
    if let Ok(s) = CommitState::decode(data) {
        let _ = s.target.certificate(&s.received);
        let _ = s.ended();
    }
});
