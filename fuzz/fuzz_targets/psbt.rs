//! Bitcoin PSBTs against a fixed vault key (BIP-32 vector 2's master): any bytes decode or
//! are refused, never panic. Whatever decodes has one vault key path per hash, a fee that is
//! a base-unit amount, and outputs that add up with the fee to the inputs.
//! Seeds: fuzz/seeds/psbt (BIP-174's vectors and a payment from the vault's m/0).
#![no_main]
use libfuzzer_sys::fuzz_target;

const VAULT: cosigner_policy::VaultKey = cosigner_policy::VaultKey {
    public_key: [
        0x03, 0xcb, 0xca, 0xa9, 0xc9, 0x8c, 0x87, 0x7a, 0x26, 0x97, 0x7d, 0x00, 0x82, 0x5c, 0x95,
        0x6a, 0x23, 0x8e, 0x8d, 0xdd, 0xfb, 0xd3, 0x22, 0xcc, 0xe4, 0xf7, 0x4b, 0x0b, 0x5b, 0xd6,
        0xac, 0xe4, 0xa7,
    ],
    chain_code: [
        0x60, 0x49, 0x9f, 0x80, 0x1b, 0x89, 0x6d, 0x83, 0x17, 0x9a, 0x43, 0x74, 0xae, 0xb7, 0x82,
        0x2a, 0xae, 0xac, 0xea, 0xa0, 0xdb, 0x1f, 0x85, 0xee, 0x3e, 0x90, 0x4c, 0x4d, 0xef, 0xbd,
        0x96, 0x89,
    ],
};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = cosigner_policy::btc::analyse(data, "bitcoin", &VAULT) {
        assert_eq!(d.hashes.len(), d.key_paths.len());
        let fee: u64 = d.fee.parse().expect("fee is a base-unit amount");
        let out: u64 = d
            .transfers
            .iter()
            .map(|t| t.amount.parse::<u64>().expect("amount"))
            .sum();
        let total_in: u64 = d.document["input_total"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("input_total");
        assert_eq!(out + fee, total_in);
    }
});
