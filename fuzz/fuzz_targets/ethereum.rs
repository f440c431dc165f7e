//! Unsigned Ethereum transactions: any bytes decode or are refused, never panic; whatever
//! decodes has exactly one hash and re-encodes to the input (checked inside the decoder).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = cosigner_policy::decode(&cosigner_policy::Payload::Ethereum(data), None) {
        assert_eq!(d.hashes.len(), 1);
    }
});
