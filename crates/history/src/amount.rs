//! Amounts in aggregates: decimal strings in base units, summed as saturating u128.
//!
//! 2^128 - 1 base units is ~3.4e20 tokens at 18 decimals; a sum that would exceed it stays
//! at the maximum, which errs on the side of a velocity limit being exceeded (deny), never
//! of an amount going missing. The entry itself keeps the exact decimal string.

/// Parses a non-empty string of ASCII digits; saturates above u128::MAX.
pub(crate) fn parse(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > 100 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u128 = 0;
    for b in s.bytes() {
        v = v.saturating_mul(10).saturating_add(u128::from(b - b'0'));
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_saturates() {
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("1000000000000000000"), Some(10u128.pow(18)));
        assert_eq!(parse(&"9".repeat(60)), Some(u128::MAX));
        for bad in ["", "-1", "1.5", "1e3", " 1", "0x10", &"1".repeat(101)] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
