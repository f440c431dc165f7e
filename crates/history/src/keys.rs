//! Key layout of the single sled tree. One tree, so one `apply_batch` makes an entry, its
//! index keys and the aggregate updates appear together or not at all.
//!
//! ```text
//! e seq                                   -> Stored (the entry and its hash)
//! v len vault seq                         -> ()            by vault
//! k kind seq                              -> ()            by kind
//! o outcome seq                           -> ()            by outcome
//! t time seq                              -> ()            by time (same order as seq)
//! n len requester nonce                   -> seq           replay protection
//! a series time seq                       -> Cum           prefix sums, one series per
//! c series                                -> Cum             (vault, asset) or vault requests
//! r len vault                             -> time          last reshare or refresh
//! s len session                           -> seq           relay session ids used
//! f len vault                             -> epoch         the vault's epoch floor
//! m "head" / "anchor"                     -> chain head, first kept entry after pruning
//! ```
//! Numbers are big-endian; times are i64 with the sign bit flipped so byte order is time
//! order; strings are length-prefixed (at most 255 bytes).

pub(crate) const ENTRY: u8 = b'e';
pub(crate) const VAULT: u8 = b'v';
pub(crate) const KIND: u8 = b'k';
pub(crate) const OUTCOME: u8 = b'o';
pub(crate) const TIME: u8 = b't';
pub(crate) const NONCE: u8 = b'n';
pub(crate) const AGG: u8 = b'a';
pub(crate) const SERIES_HEAD: u8 = b'c';
pub(crate) const RESHARE: u8 = b'r';
pub(crate) const SESSION: u8 = b's';
pub(crate) const FLOOR: u8 = b'f';
pub(crate) const HEAD: &[u8] = b"mhead";
pub(crate) const ANCHOR: &[u8] = b"manchor";

/// Series tags inside `a` and `c` keys.
pub(crate) const SPENT: u8 = b'S';
pub(crate) const REQUESTS: u8 = b'R';

pub(crate) fn time(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn lp(buf: &mut Vec<u8>, s: &[u8]) {
    // Callers validate lengths (<= 255) before building keys.
    buf.push(s.len().min(255) as u8);
    buf.extend_from_slice(&s[..s.len().min(255)]);
}

pub(crate) fn entry(seq: u64) -> Vec<u8> {
    let mut k = vec![ENTRY];
    k.extend(seq.to_be_bytes());
    k
}

/// Prefix of an index (`v`, `k`, `o`) or of the entries themselves; a seq follows.
pub(crate) fn vault_prefix(vault: &str) -> Vec<u8> {
    let mut k = vec![VAULT];
    lp(&mut k, vault.as_bytes());
    k
}

pub(crate) fn tag_prefix(which: u8, tag: u8) -> Vec<u8> {
    vec![which, tag]
}

pub(crate) fn with_seq(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend(seq.to_be_bytes());
    k
}

pub(crate) fn time_key(at: i64, seq: u64) -> Vec<u8> {
    let mut k = vec![TIME];
    k.extend(time(at));
    k.extend(seq.to_be_bytes());
    k
}

pub(crate) fn nonce(requester: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut k = vec![NONCE];
    lp(&mut k, requester);
    k.extend_from_slice(nonce);
    k
}

pub(crate) fn series(tag: u8, vault: &str, asset: &str) -> Vec<u8> {
    let mut k = vec![tag];
    lp(&mut k, vault.as_bytes());
    lp(&mut k, asset.as_bytes());
    k
}

pub(crate) fn agg(series: &[u8], at: i64, seq: u64) -> Vec<u8> {
    let mut k = vec![AGG];
    k.extend_from_slice(series);
    k.extend(time(at));
    k.extend(seq.to_be_bytes());
    k
}

pub(crate) fn series_head(series: &[u8]) -> Vec<u8> {
    let mut k = vec![SERIES_HEAD];
    k.extend_from_slice(series);
    k
}

pub(crate) fn reshare(vault: &str) -> Vec<u8> {
    let mut k = vec![RESHARE];
    lp(&mut k, vault.as_bytes());
    k
}

pub(crate) fn session(id: &[u8]) -> Vec<u8> {
    let mut k = vec![SESSION];
    lp(&mut k, id);
    k
}

pub(crate) fn floor(vault: &str) -> Vec<u8> {
    let mut k = vec![FLOOR];
    lp(&mut k, vault.as_bytes());
    k
}

/// The seq in the last 8 bytes of an index key.
pub(crate) fn seq_suffix(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bytes_sort_like_times() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(time(w[0]) < time(w[1]), "{} vs {}", w[0], w[1]);
        }
    }

    #[test]
    fn seq_suffix_reads_the_tail() {
        assert_eq!(seq_suffix(&with_seq(&vault_prefix("v"), 42)), Some(42));
        assert_eq!(seq_suffix(b"short"), None);
    }
}
