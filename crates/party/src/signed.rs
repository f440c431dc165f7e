//! The clear files a party keeps beside its sealed shares (the public vault record, the
//! commit record), signed with its own identity key.
//!
//! They are read without unsealing anything, so every cheap check of a request runs before
//! the TPM is touched; the signature is what stops someone who can write the data
//! directory from swapping in another record. The signed message binds a purpose tag and
//! the vault id, so a record signed for one vault, or as one kind of file, does not pass
//! as another.

use crate::keys::{PartyKeys, verify};

/// The public vault record beside a share.
pub const PUBLIC_RECORD: &[u8] = b"cosigner/v1/public-record";
/// The commit record of the latest keygen or reshare.
pub const COMMIT_RECORD: &[u8] = b"cosigner/v1/commit-record";

fn message(tag: &[u8], vault: &str, bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(tag.len() + 5 + vault.len() + bytes.len());
    m.extend(tag);
    m.push(0);
    m.extend((vault.len() as u32).to_be_bytes());
    m.extend(vault.as_bytes());
    m.extend(bytes);
    m
}

/// `bytes` signed by `keys` for `vault` under `tag`: len (u32 BE) || bytes || signature.
pub fn sign(keys: &PartyKeys, tag: &[u8], vault: &str, bytes: &[u8]) -> Vec<u8> {
    let sig = keys.sign(&message(tag, vault, bytes));
    let mut out = Vec::with_capacity(4 + bytes.len() + 64);
    out.extend((bytes.len() as u32).to_be_bytes());
    out.extend(bytes);
    out.extend(sig);
    out
}

/// The bytes of a blob `party` signed for `vault` under `tag`; `what` names the file in
/// the error.
pub fn open<'a>(
    party: &[u8; 32],
    tag: &[u8],
    what: &str,
    vault: &str,
    blob: &'a [u8],
) -> Result<&'a [u8], String> {
    let (len, rest) = blob
        .split_at_checked(4)
        .ok_or_else(|| format!("the {what} is truncated"))?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (bytes, sig) = rest
        .split_at_checked(len)
        .ok_or_else(|| format!("the {what} is truncated"))?;
    if !verify(party, &message(tag, vault, bytes), sig) {
        return Err(format!("the {what} is not signed by this party"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_opens_only_for_its_party_vault_and_tag() {
        let keys = PartyKeys::generate();
        let other = PartyKeys::generate();
        let blob = sign(&keys, PUBLIC_RECORD, "v1", b"record");
        let me = keys.party_id();
        assert_eq!(
            open(&me, PUBLIC_RECORD, "r", "v1", &blob),
            Ok(&b"record"[..])
        );
        assert!(open(&other.party_id(), PUBLIC_RECORD, "r", "v1", &blob).is_err());
        assert!(open(&me, PUBLIC_RECORD, "r", "v2", &blob).is_err());
        assert!(open(&me, COMMIT_RECORD, "r", "v1", &blob).is_err());
        assert!(open(&me, PUBLIC_RECORD, "r", "v1", &blob[..3]).is_err());
        let mut flipped = blob.clone();
        flipped[5] ^= 1;
        assert!(open(&me, PUBLIC_RECORD, "r", "v1", &flipped).is_err());
    }
}
