//! What a vault id may be: it names files in the data directory and keys in the history, so
//! it is checked once, here, by everyone who accepts one (the daemon's handlers, the sealing
//! layer, the ceremony layer, the device party).

/// 1-64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` (no path tricks, no hidden
/// files).
pub fn check(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "vault id {v:?} must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names_that_could_escape_the_data_directory_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "v\0",
            &"x".repeat(65),
            "ü",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for good in ["v1", "treasury-2026.q4", "A_b-c.d", &"x".repeat(64)] {
            assert!(check(good).is_ok(), "{good:?}");
        }
    }
}
