//! The decoders that read what other parties and relays send: random and mutated input
//! gives an error, never a panic.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cosigner_api::v1::{Envelope, EnvelopeKind};
use cosigner_relay::envelope::{Opener, seal};
use cosigner_relay::record::VaultRecord;
use cosigner_relay::{Held, PartyKeys};
use proptest::prelude::*;

proptest! {
    #[test]
    fn vault_records_and_held_shares_reject_junk(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = VaultRecord::decode(&bytes);
        let _ = Held::decode(&bytes);
        let mut with_magic = b"CVRC\x01".to_vec();
        with_magic.extend(&bytes);
        let _ = VaultRecord::decode(&with_magic);
        let mut held = b"CHLD\x01".to_vec();
        held.extend(&bytes);
        let _ = Held::decode(&held);
        let _ = cosigner_relay::commit::Report::decode(&bytes);
        let _ = cosigner_relay::commit::CommitState::decode(&bytes);
        let _ = cosigner_relay::commit::ReadyStatement::decode(&bytes);
        let mut report = b"CRPT\x01".to_vec();
        report.extend(&bytes);
        let _ = cosigner_relay::commit::Report::decode(&report);
        let mut state = b"CCMT\x01".to_vec();
        state.extend(&bytes);
        let _ = cosigner_relay::commit::CommitState::decode(&state);
        let _ = cosigner_relay::blame::AbortMessage::decode(&bytes);
        // An ABORT envelope carrying junk, or junk evidence, is judged without a panic.
        let keys = PartyKeys::generate();
        let abort = seal(&keys, b"session-session-0", None, None, 0, 1, EnvelopeKind::Abort, &bytes).unwrap();
        let _ = cosigner_relay::blame::judge(&abort, None);
    }

    #[test]
    fn envelopes_with_any_field_changed_are_refused(
        field in 0usize..9,
        byte in any::<u8>(),
        pos in any::<usize>(),
        value in any::<u64>(),
    ) {
        let a = PartyKeys::generate();
        let b = PartyKeys::generate();
        let members = vec![a.member("a"), b.member("b")];
        let s = b"session-session-0";
        let ctx = [5u8; 32];
        let env = seal(&a, s, Some(&ctx), Some(&members[1]), 2, 3, EnvelopeKind::Protocol, b"fragment").unwrap();
        let mut bad: Envelope = env.clone();
        let flip = |v: &mut Vec<u8>| {
            if v.is_empty() { v.push(byte) } else { let i = pos % v.len(); v[i] ^= byte.max(1) }
        };
        match field {
            0 => flip(&mut bad.session_id),
            1 => flip(&mut bad.sender),
            2 => flip(&mut bad.recipient),
            3 => bad.round = bad.round.wrapping_add(1 + (value as u32 % 1000)),
            4 => bad.counter = bad.counter.wrapping_add(1 + value % 1000),
            5 => bad.kind = (bad.kind + 1 + (value % 5) as i32) % 6,
            6 => flip(&mut bad.payload),
            7 => bad.version = bad.version.wrapping_add(1 + (value as u32 % 1000)),
            _ => flip(&mut bad.signature),
        }
        let mut opener = Opener::new(b.clone(), s, &members);
        opener.set_context(ctx);
        prop_assert!(opener.open(&bad).is_err());
        // Under another ceremony's context (a reused session id) it does not open either.
        let mut other = Opener::new(b.clone(), s, &members);
        other.set_context([6u8; 32]);
        prop_assert!(other.open(&env).is_err());
        // And the untouched envelope still opens.
        let mut opener = Opener::new(b, s, &members);
        opener.set_context(ctx);
        prop_assert!(opener.open(&env).is_ok());
    }
}
