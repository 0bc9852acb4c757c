//! Time as the domain sees it: epoch milliseconds, the unit of every Teletraan timestamp.

/// Milliseconds since the Unix epoch. Every timestamp in JSON and in the rules uses it.
pub type EpochMs = i64;

/// Seconds expressed in the same unit as [`EpochMs`], for threshold arithmetic.
pub const fn secs(s: i64) -> EpochMs {
    s * 1000
}
