//! Helpers that map Postgres values to domain values.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schema::time::EpochMs;
use tokio_postgres::Row;

use crate::{Error, Result};

/// Just past the last `timestamptz` Postgres stores (294276 AD) and before the first (4713
/// BC), in epoch milliseconds: both still convertible by the client library.
const PAST_LATEST: EpochMs = 9_224_318_720_800_000;
const BEFORE_EARLIEST: EpochMs = -9_222_425_351_200_000;

/// Epoch milliseconds as a `timestamptz` parameter. A value outside what Postgres stores (only
/// bad input can be) is sent as one just outside it, which Postgres refuses ("timestamp out
/// of range", class 22: a 400), rather than as one whose microseconds since 2000 overflow the
/// client's conversion (a panic in a debug build, a wrong date in a release build).
pub(crate) fn ts(ms: EpochMs) -> SystemTime {
    let ms = ms.clamp(BEFORE_EARLIEST, PAST_LATEST);
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A `timestamptz` value as epoch milliseconds.
pub(crate) fn ms(t: SystemTime) -> EpochMs {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as EpochMs,
        Err(e) => -(e.duration().as_millis() as EpochMs),
    }
}

/// Reads a `timestamptz` column as epoch milliseconds.
pub(crate) fn get_ms(row: &Row, col: &str) -> Result<EpochMs> {
    Ok(ms(row.try_get::<_, SystemTime>(col).map_err(|e| Error::Corrupt(format!("{col}: {e}")))?))
}

/// Reads a nullable `timestamptz` column.
pub(crate) fn get_opt_ms(row: &Row, col: &str) -> Result<Option<EpochMs>> {
    Ok(row.try_get::<_, Option<SystemTime>>(col).map_err(|e| Error::Corrupt(format!("{col}: {e}")))?.map(ms))
}

/// Reads a text column and parses it (enums, ids).
pub(crate) fn get_parsed<T: FromStr>(row: &Row, col: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s: &str = row.try_get(col).map_err(|e| Error::Corrupt(format!("{col}: {e}")))?;
    s.parse().map_err(|e: T::Err| Error::Corrupt(format!("{col}: {e}")))
}

/// Reads a nullable text column and parses it.
pub(crate) fn get_opt_parsed<T: FromStr>(row: &Row, col: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    let s: Option<&str> = row.try_get(col).map_err(|e| Error::Corrupt(format!("{col}: {e}")))?;
    s.map(|s| s.parse().map_err(|e: T::Err| Error::Corrupt(format!("{col}: {e}")))).transpose()
}

/// Reads a column of any type.
pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, col: &str) -> Result<T> {
    row.try_get(col).map_err(|e| Error::Corrupt(format!("{col}: {e}")))
}

/// Id types parse through `TryFrom<String>`; this adapts them to `FromStr` use.
pub(crate) fn get_id<T>(row: &Row, col: &str) -> Result<T>
where
    T: TryFrom<String>,
    T::Error: std::fmt::Display,
{
    let s: String = get(row, col)?;
    T::try_from(s).map_err(|e| Error::Corrupt(format!("{col}: {e}")))
}

/// Nullable id column.
pub(crate) fn get_opt_id<T>(row: &Row, col: &str) -> Result<Option<T>>
where
    T: TryFrom<String>,
    T::Error: std::fmt::Display,
{
    let s: Option<String> = get(row, col)?;
    s.map(|s| T::try_from(s).map_err(|e| Error::Corrupt(format!("{col}: {e}")))).transpose()
}

/// Whether an error is a unique-key violation.
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip() {
        for v in [0, 1, 1_795_826_082_513, -5] {
            assert_eq!(ms(ts(v)), v);
        }
    }

    #[test]
    fn any_milliseconds_convert_to_a_parameter_postgres_refuses_when_out_of_its_range() {
        use tokio_postgres::types::private::BytesMut;
        use tokio_postgres::types::{ToSql, Type};
        // i64::MAX ms overflowed the client's microseconds since 2000 (found by fuzzing
        // `expiresAt`, api/tests/fuzz.rs): a panic in the API's handler.
        for v in [i64::MAX, i64::MIN, PAST_LATEST, BEFORE_EARLIEST, 1 << 62, -(1 << 62)] {
            let mut out = BytesMut::new();
            ts(v).to_sql(&Type::TIMESTAMPTZ, &mut out).unwrap();
            let micros = i64::from_be_bytes(out[..8].try_into().unwrap());
            // Postgres's range in microseconds since 2000, and its two infinities.
            let (first, last) = (-211_813_488_000_000_000i64, 9_223_371_331_200_000_000i64);
            assert!(!(first..last).contains(&micros) && micros != i64::MAX && micros != i64::MIN, "{v}: {micros}");
        }
    }
}
