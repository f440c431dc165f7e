//! Wall-clock time in Unix milliseconds, as requests, records and the history carry it.

/// Now, in Unix milliseconds (0 if the clock is before 1970: callers compare, never panic).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
