//! Envelopes from a hostile relay: protobuf decode, then the receiver's checks.
#![no_main]
use std::sync::OnceLock;

use cosigner_api::v1 as api;
use cosigner_relay::PartyKeys;
use cosigner_relay::envelope::Opener;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn parties() -> &'static (PartyKeys, PartyKeys) {
    static P: OnceLock<(PartyKeys, PartyKeys)> = OnceLock::new();
    P.get_or_init(|| (PartyKeys::generate(), PartyKeys::generate()))
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = parties();
    if let Ok(env) = api::Envelope::decode(data) {
        let mut o = Opener::new(b.clone(), b"session-session-0", &[a.member("a"), b.member("b")]);
        let _ = o.open(&env);
    }
});
