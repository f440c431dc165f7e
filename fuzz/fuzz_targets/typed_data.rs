//! EIP-712 documents (and personal messages) from arbitrary input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cosigner_policy::decode(&cosigner_policy::Payload::TypedData(s), None);
    }
    let _ = cosigner_policy::decode(&cosigner_policy::Payload::PersonalMessage(data), None);
});
