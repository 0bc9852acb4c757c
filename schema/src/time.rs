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

/// Milliseconds in a day.
pub const DAY_MS: EpochMs = 86_400_000;

/// The start (00:00 UTC) of the day that holds `at`.
pub const fn start_of_day_utc(at: EpochMs) -> EpochMs {
    at - at.rem_euclid(DAY_MS)
}

/// `at` as people read it: `2026-12-02T10:04:05Z` (UTC, to the second).
pub fn format_utc(at: EpochMs) -> String {
    let (year, month, day) = crate::rules::cron::civil_from_days(at.div_euclid(DAY_MS));
    let secs = at.rem_euclid(DAY_MS) / 1000;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        // `date -u -d @1800000000` prints Fri Jan 15 08:00:00 UTC 2027.
        assert_eq!(format_utc(1_800_000_000_123), "2027-01-15T08:00:00Z");
        assert_eq!(format_utc(-1000), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_day_starts_at_midnight_utc() {
        assert_eq!(start_of_day_utc(1_800_000_000_123), 1_800_000_000_123 - 8 * 3_600_000 - 123);
        assert_eq!(start_of_day_utc(DAY_MS), DAY_MS);
        assert_eq!(start_of_day_utc(DAY_MS - 1), 0);
        assert_eq!(start_of_day_utc(-1), -DAY_MS);
    }
}
