//! A ceremony request as the daemon reads it: protobuf decode of the request and of each
//! body kind, the request signature check, and the payload decoders behind it.
#![no_main]
use cosigner_api::v1 as api;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = api::SignRequest::decode(data) {
        // The ceremony layer's own parse and payload decoding, as every party runs them.
        let _ = cosigner_node::sign::parse(&r, 0, 300_000);
        if let Ok(b) = cosigner_node::sign::parse_body(&r.body) {
            let _ = cosigner_node::payload::decode(b.payload.as_ref(), None);
        }
    }
    if let Ok(r) = api::ReshareRequest::decode(data)
        && let Ok(b) = api::ReshareBody::decode(r.body.as_slice())
    {
        let _ = cosigner_relay::VaultRecord::decode(&b.old_vault);
        if let Some(c) = b.new_committee.as_ref() {
            let _ = cosigner_relay::record::committee_from_api(c);
        }
    }
    let _ = cosigner_relay::Held::decode(data);
});
