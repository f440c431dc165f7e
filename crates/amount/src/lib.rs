//! Amounts: decimal strings of base units (wei, satoshi, a token's smallest unit), as the
//! payload decoders produce them, the policy compares them and the history sums them.
//!
//! One parser for all of them, so that a string means the same everywhere. Sums saturate at
//! `u128::MAX` (about 3.4e20 tokens at 18 decimals): too much counts as too much, which
//! trips a velocity limit (deny), never as nothing.

/// Longest amount accepted: a u256 has 78 decimal digits.
pub const MAX_DIGITS: usize = 78;

/// Parses a non-empty string of ASCII digits (no sign, point, exponent, space or prefix);
/// saturates above `u128::MAX`.
pub fn parse(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > MAX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u128, |v, b| {
        v.saturating_mul(10).saturating_add(u128::from(b - b'0'))
    }))
}

/// As [`parse`] for a sum or a limit: a string that is not an amount counts as the most
/// there is, so a check against a limit fails closed.
pub fn parse_or_max(s: &str) -> u128 {
    parse(s).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_saturates() {
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("1000000000000000000"), Some(10u128.pow(18)));
        assert_eq!(parse(&"9".repeat(MAX_DIGITS)), Some(u128::MAX));
        for bad in [
            "",
            "-1",
            "1.5",
            "1e3",
            " 1",
            "0x10",
            &"1".repeat(MAX_DIGITS + 1),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
            assert_eq!(parse_or_max(bad), u128::MAX, "{bad:?}");
        }
    }
}
