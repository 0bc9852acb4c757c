//! Time as the domain sees it: epoch milliseconds, the unit of every Teletraan timestamp.

/// Milliseconds since the Unix epoch. Every timestamp in JSON and in the rules uses it.
pub type EpochMs = i64;

/// Seconds expressed in the same unit as [`EpochMs`], for threshold arithmetic.
pub const fn secs(s: i64) -> EpochMs {
    s * 1000
}

/// The current time, read from the system clock. The one clock read of the domain crate: the
/// rules never call it, their callers pass `now` in (so tests control time).
pub fn now_ms() -> EpochMs {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
