//! What other parties send in a commit and a resolve: READY statements, signed reports,
//! a commit record read back from disk, and an ABORT's blame evidence (judged as a party
//! judges it). Junk gives an error, never a panic.
#![no_main]
use cosigner_api::v1::EnvelopeKind;
use cosigner_relay::PartyKeys;
use cosigner_relay::blame::{AbortMessage, judge};
use cosigner_relay::commit::{CommitState, ReadyStatement, Report};
use cosigner_relay::envelope::seal;
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
    if let Ok(m) = AbortMessage::decode(data) {
        let keys = PartyKeys::generate();
        let session = m
            .evidence
            .as_ref()
            .map(|e| e.roster.relay_session.clone())
            .unwrap_or_default();
        if let Ok(env) = seal(&keys, &session, None, None, 0, 1, EnvelopeKind::Abort, data) {
            let _ = judge(&env, None);
        }
    }
});
