//! The decoders that read what other parties and relays send: random and mutated input
//! gives an error, never a panic.

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
    }

    #[test]
    fn envelopes_with_any_field_changed_are_refused(
        field in 0usize..8,
        byte in any::<u8>(),
        pos in any::<usize>(),
        value in any::<u64>(),
    ) {
        let a = PartyKeys::generate();
        let b = PartyKeys::generate();
        let members = vec![a.member("a"), b.member("b")];
        let s = b"session-session-0";
        let env = seal(&a, s, Some(&members[1]), 2, 3, EnvelopeKind::Protocol, b"fragment").unwrap();
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
            _ => flip(&mut bad.signature),
        }
        let mut opener = Opener::new(b.clone(), s, &members);
        prop_assert!(opener.open(&bad).is_err());
        // And the untouched envelope still opens.
        let mut opener = Opener::new(b, s, &members);
        prop_assert!(opener.open(&env).is_ok());
    }
}
