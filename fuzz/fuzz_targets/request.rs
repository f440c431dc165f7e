//! A ceremony request as the daemon reads it: protobuf decode of the request and of each
//! body kind, the request signature check, and the payload decoders behind it.
#![no_main]
use cosigner_api::v1 as api;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = api::SignRequest::decode(data) {
        let _ = cosigner_relay::request::check(r.auth.as_ref(), "/cosigner.v1.Cosigner/Sign", &r.body, 0, 300_000);
        if let Ok(b) = api::SignBody::decode(r.body.as_slice())
            && let Some(api::Payload { kind: Some(k) }) = b.payload
        {
            use api::payload::Kind as K;
            use cosigner_policy::Payload as P;
            let p = match &k {
                K::EthereumTransaction(t) => P::Ethereum(&t.unsigned_rlp),
                K::BitcoinPsbt(b) => P::Psbt {
                    psbt: &b.psbt,
                    network: &b.network,
                },
                K::PersonalMessage(m) => P::PersonalMessage(&m.message),
                K::TypedData(t) => P::TypedData(&t.json),
                K::RawHash(h) => P::RawHash(h),
            };
            let _ = cosigner_policy::decode(&p, None);
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
