//! Cron expressions for auto-promotion schedules: a promotion may only happen inside a window
//! that opens at a fire time of the pipeline's `schedule`.
//!
//! # Syntax
//!
//! Fields are separated by whitespace:
//!
//! - 6 fields (Quartz, as Teletraan stores them): `second minute hour day-of-month month day-of-week`,
//!   e.g. `0 30 3 * * ?` or `0 0/30 9-17 ? * MON-FRI`;
//! - 7 fields: the same plus `year` (1970-2199);
//! - 5 fields (Unix): `minute hour day-of-month month day-of-week`, firing at second 0.
//!
//! Ranges: second and minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or `JAN`-`DEC`.
//! Day-of-week is 1-7 with 1 = Sunday in the 6 and 7 field forms (Quartz), 0-7 with both 0 and
//! 7 = Sunday in the 5 field form (Unix); the names `SUN`-`SAT` work in both. Names are
//! case-insensitive.
//!
//! Each field is `*`, a value `a`, a range `a-b` (with `a <= b`: no wrap-around), a step `*/n`,
//! `a/n` (from `a` to the field's maximum) or `a-b/n`, or a comma list of these. `?` ("no specific
//! value") may stand alone in day-of-month or day-of-week; both days cannot be `?` at once. A year
//! field of `*` means every year.
//!
//! Days: when day-of-month or day-of-week is exactly `*` or `?`, only the other field restricts
//! the day; when both restrict it, a day matches if either does (as Vixie cron does).
//!
//! The Quartz extras `L`, `W`, `LW` and `#` are refused, as is anything else outside this syntax,
//! with a message naming the field and the value.
//!
//! # Time
//!
//! All evaluation is in UTC on the proleptic Gregorian calendar, at whole-second precision.
//! Instants before 1970 (negative [`EpochMs`]) work like any other, but a year field only
//! matches 1970-2199.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::EpochMs;

/// Longest expression accepted; a real schedule is a few dozen characters.
pub const MAX_LEN: usize = 256;

/// How far ahead [`Cron::next_after`] looks: ten years, counting the three leap days they may hold.
const HORIZON_SECS: i64 = 3653 * SECS_PER_DAY;

const SECS_PER_DAY: i64 = 86_400;

/// The first and last year a year field accepts.
const FIRST_YEAR: u32 = 1970;
const LAST_YEAR: u32 = 2199;

const MONTH_NAMES: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Why an expression was refused; the message is shown to users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(pub String);

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// The fields joined by single spaces, for [`fmt::Display`].
    text: String,
    seconds: Bits,
    minutes: Bits,
    hours: Bits,
    /// `None` when the field is `*` or `?`: the day is then up to day-of-week alone.
    days_of_month: Option<Bits>,
    months: Bits,
    /// Sunday is 0. `None` when the field is `*` or `?`.
    days_of_week: Option<Bits>,
    /// Offsets from [`FIRST_YEAR`]; `None` when there is no year field or it is `*`.
    years: Option<Bits>,
}

/// A set of small numbers (0-255), one bit each: enough for every field, years being stored
/// as offsets from [`FIRST_YEAR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bits([u64; 4]);

impl Bits {
    fn insert(&mut self, v: u32) {
        if let Some(word) = self.0.get_mut((v / 64) as usize) {
            *word |= 1 << (v % 64);
        }
    }

    fn contains(&self, v: u32) -> bool {
        self.0.get((v / 64) as usize).is_some_and(|word| word & (1 << (v % 64)) != 0)
    }

    /// The smallest member `>= from`.
    fn next_from(&self, from: u32) -> Option<u32> {
        let first = (from / 64) as usize;
        self.0.iter().enumerate().skip(first).find_map(|(i, &word)| {
            let word = if i == first { word & (u64::MAX << (from % 64)) } else { word };
            (word != 0).then(|| i as u32 * 64 + word.trailing_zeros())
        })
    }
}

/// The fields an expression can have, in the order they can appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    /// 1-7, 1 = Sunday.
    QuartzDayOfWeek,
    /// 0-7, 0 and 7 = Sunday.
    UnixDayOfWeek,
    Year,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::QuartzDayOfWeek | Field::UnixDayOfWeek => "day-of-week",
            Field::Year => "year",
        }
    }

    /// The values as written, inclusive.
    fn range(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::QuartzDayOfWeek => (1, 7),
            Field::UnixDayOfWeek => (0, 7),
            Field::Year => (FIRST_YEAR, LAST_YEAR),
        }
    }

    fn is_day(self) -> bool {
        matches!(self, Field::DayOfMonth | Field::QuartzDayOfWeek | Field::UnixDayOfWeek)
    }

    /// Where a written value goes in the field's [`Bits`]: days of the week become Sunday = 0,
    /// years an offset from [`FIRST_YEAR`] so that they fit.
    fn slot(self, v: u32) -> u32 {
        match self {
            Field::QuartzDayOfWeek => v - 1,
            Field::UnixDayOfWeek => v % 7,
            Field::Year => v - FIRST_YEAR,
            _ => v,
        }
    }

    /// The written value of a month or day name.
    fn value_of_name(self, upper: &str) -> Option<u32> {
        let position = |names: &[&str]| names.iter().position(|n| *n == upper).map(|i| i as u32);
        match self {
            Field::Month => position(&MONTH_NAMES).map(|i| i + 1),
            Field::QuartzDayOfWeek => position(&DAY_NAMES).map(|i| i + 1),
            Field::UnixDayOfWeek => position(&DAY_NAMES),
            _ => None,
        }
    }

    fn error(self, message: impl fmt::Display) -> CronError {
        CronError(format!("{}: {message}", self.name()))
    }
}

/// Parses one value (a number or a name) and checks it is in the field's range.
fn parse_value(field: Field, item: &str, text: &str) -> Result<u32, CronError> {
    let (min, max) = field.range();
    if text.is_empty() {
        return Err(field.error(format_args!("{item:?} is missing a value")));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u32 is out of range all the same.
        return match text.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ if field == Field::QuartzDayOfWeek => {
                Err(field.error(format_args!("{text} is out of range {min}-{max} (1 = SUN)")))
            }
            _ => Err(field.error(format_args!("{text} is out of range {min}-{max}"))),
        };
    }
    let upper = text.to_ascii_uppercase();
    field.value_of_name(&upper).ok_or_else(|| match field {
        Field::Month => field.error(format_args!("{text:?} is not a month name (JAN-DEC)")),
        Field::QuartzDayOfWeek | Field::UnixDayOfWeek => {
            field.error(format_args!("{text:?} is not a day name (SUN-SAT)"))
        }
        _ => field.error(format_args!("{text:?} is not a number")),
    })
}

/// Whether an item uses one of the Quartz day extras (`L`, `W`, `LW`, `#`, `L-n`, `nL`, `nW`).
fn is_quartz_extra(field: Field, item: &str) -> bool {
    let upper = item.to_ascii_uppercase();
    if upper.contains('#') {
        return true;
    }
    if !field.is_day() {
        return false;
    }
    if matches!(upper.as_str(), "L" | "W" | "LW") || upper.starts_with("L-") {
        return true;
    }
    match upper.strip_suffix('L').or_else(|| upper.strip_suffix('W')) {
        Some(base) => {
            (!base.is_empty() && base.bytes().all(|b| b.is_ascii_digit())) || field.value_of_name(base).is_some()
        }
        None => false,
    }
}

/// Adds one list item (`*`, `a`, `a-b`, with an optional `/n`) to `bits`.
fn parse_item(field: Field, item: &str, bits: &mut Bits) -> Result<(), CronError> {
    if is_quartz_extra(field, item) {
        return Err(field.error(format_args!("{item} is not supported (no L, W, LW or #)")));
    }
    if item == "?" {
        return Err(field.error("? must stand alone, not in a list"));
    }
    let (min, max) = field.range();
    let mut parts = item.split('/');
    let base = parts.next().unwrap_or_default();
    let step = parts.next();
    if parts.next().is_some() {
        return Err(field.error(format_args!("{item:?} has more than one /")));
    }
    let (low, high) = if base == "*" {
        (min, max)
    } else if let Some((a, b)) = base.split_once('-') {
        let (low, high) = (parse_value(field, item, a)?, parse_value(field, item, b)?);
        if low > high {
            return Err(
                field.error(format_args!("{base} goes from high to low; a range must be low-high (no wrap-around)"))
            );
        }
        (low, high)
    } else {
        let v = parse_value(field, item, base)?;
        // `a/n` runs from a to the end of the field; a lone `a` is just a.
        (v, if step.is_some() { max } else { v })
    };
    let step = match step {
        None => 1,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) && (1..=max - min).contains(&n) => n,
            _ => return Err(field.error(format_args!("step {s:?} must be a number from 1 to {}", max - min))),
        },
    };
    for v in (low..=high).step_by(step as usize) {
        bits.insert(field.slot(v));
    }
    Ok(())
}

/// Parses a whole field; `None` when it is `*` or `?` (no restriction).
fn parse_field(field: Field, text: &str) -> Result<Option<Bits>, CronError> {
    if text == "?" {
        return if field.is_day() {
            Ok(None)
        } else {
            Err(field.error("? is only allowed in day-of-month and day-of-week"))
        };
    }
    if text == "*" {
        return Ok(None);
    }
    let mut bits = Bits::default();
    for item in text.split(',') {
        if item.is_empty() {
            return Err(field.error(format_args!("{text:?} has an empty list item")));
        }
        parse_item(field, item, &mut bits)?;
    }
    Ok(Some(bits))
}

/// Every value of a field, for a `*` in a field that always restricts (seconds to months).
fn all(field: Field) -> Bits {
    let (min, max) = field.range();
    let mut bits = Bits::default();
    for v in min..=max {
        bits.insert(field.slot(v));
    }
    bits
}

fn parse_restricting(field: Field, text: &str) -> Result<Bits, CronError> {
    Ok(parse_field(field, text)?.unwrap_or_else(|| all(field)))
}

impl Cron {
    /// Parses 5, 6 or 7 whitespace-separated fields (see the module documentation).
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        if expr.chars().nth(MAX_LEN).is_some() {
            return Err(CronError(format!("the expression is longer than {MAX_LEN} characters")));
        }
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (second, rest, dow_field) = match fields.as_slice() {
            [] => return Err(CronError("the expression is empty".to_string())),
            [_, _, _, _, _] => ("0", &fields[..], Field::UnixDayOfWeek),
            [second, rest @ ..] if matches!(rest.len(), 5 | 6) => (*second, rest, Field::QuartzDayOfWeek),
            _ => return Err(CronError(format!("expected 5, 6 or 7 fields, found {}", fields.len()))),
        };
        let [minute, hour, dom, month, dow, year @ ..] = rest else {
            return Err(CronError(format!("expected 5, 6 or 7 fields, found {}", fields.len())));
        };
        if *dom == "?" && *dow == "?" {
            return Err(CronError(
                "day-of-month and day-of-week cannot both be ?; give one of them a value or *".to_string(),
            ));
        }
        Ok(Cron {
            text: fields.join(" "),
            seconds: parse_restricting(Field::Second, second)?,
            minutes: parse_restricting(Field::Minute, minute)?,
            hours: parse_restricting(Field::Hour, hour)?,
            days_of_month: parse_field(Field::DayOfMonth, dom)?,
            months: parse_restricting(Field::Month, month)?,
            days_of_week: parse_field(dow_field, dow)?,
            years: match year.first() {
                Some(y) => parse_field(Field::Year, y)?,
                None => None,
            },
        })
    }

    /// The first fire time strictly after `after`, at whole-second precision (the result is a
    /// multiple of 1000 ms); `None` when there is none within the next ten years (e.g.
    /// `0 0 0 30 2 ?`). Works for instants before 1970 too.
    ///
    /// It steps over whole years, months and days that cannot match, then over hours and
    /// minutes, so a rare expression costs a few hundred steps at most.
    pub fn next_after(&self, after: EpochMs) -> Option<EpochMs> {
        let mut t = after.div_euclid(1000).checked_add(1)?;
        let limit = t.saturating_add(HORIZON_SECS);
        while t <= limit {
            let day = t.div_euclid(SECS_PER_DAY);
            let second_of_day = t.rem_euclid(SECS_PER_DAY);
            let (year, month, dom) = civil_from_days(day);
            if !self.year_matches(year) {
                t = days_from_civil(self.next_year(year.checked_add(1)?)?, 1, 1).checked_mul(SECS_PER_DAY)?;
                continue;
            }
            if !self.months.contains(month) {
                let next = match self.months.next_from(month + 1) {
                    Some(m) => days_from_civil(year, m, 1),
                    None => days_from_civil(year.checked_add(1)?, 1, 1),
                };
                t = next.checked_mul(SECS_PER_DAY)?;
                continue;
            }
            if !self.day_matches(day, dom) {
                let month_end = day + i64::from(days_in_month(year, month) - dom);
                // The first matching day left in this month, else the first of the next month.
                let next = (day + 1..=month_end).find(|&d| self.day_matches(d, dom + (d - day) as u32));
                t = next.unwrap_or(month_end + 1).checked_mul(SECS_PER_DAY)?;
                continue;
            }
            let midnight = t - second_of_day;
            let (hour, minute, second) =
                ((second_of_day / 3600) as u32, (second_of_day / 60 % 60) as u32, (second_of_day % 60) as u32);
            if !self.hours.contains(hour) {
                t = match self.hours.next_from(hour + 1) {
                    Some(h) => midnight + i64::from(h) * 3600,
                    None => midnight + SECS_PER_DAY,
                };
                continue;
            }
            let hour_start = midnight + i64::from(hour) * 3600;
            if !self.minutes.contains(minute) {
                t = match self.minutes.next_from(minute + 1) {
                    Some(m) => hour_start + i64::from(m) * 60,
                    None => hour_start + 3600,
                };
                continue;
            }
            let minute_start = hour_start + i64::from(minute) * 60;
            if !self.seconds.contains(second) {
                t = match self.seconds.next_from(second + 1) {
                    Some(s) => minute_start + i64::from(s),
                    None => minute_start + 60,
                };
                continue;
            }
            return t.checked_mul(1000);
        }
        None
    }

    /// Whether `at` (truncated to the second) is a fire time.
    pub fn matches(&self, at: EpochMs) -> bool {
        let t = at.div_euclid(1000);
        let day = t.div_euclid(SECS_PER_DAY);
        let second_of_day = t.rem_euclid(SECS_PER_DAY);
        let (year, month, dom) = civil_from_days(day);
        self.year_matches(year)
            && self.months.contains(month)
            && self.day_matches(day, dom)
            && self.hours.contains((second_of_day / 3600) as u32)
            && self.minutes.contains((second_of_day / 60 % 60) as u32)
            && self.seconds.contains((second_of_day % 60) as u32)
    }

    /// Whether `now` falls in a window `[fire, fire + window_ms)` of some fire time.
    ///
    /// That is the same as `next_after(now - window_ms) <= now`: a fire time `f` has `now` in
    /// its window exactly when `now - window_ms < f <= now`, and the first fire time after
    /// `now - window_ms` is in that interval if any is. A window of zero or less is empty, and
    /// like [`Cron::next_after`] it sees at most ten years back.
    pub fn in_window(&self, now: EpochMs, window_ms: i64) -> bool {
        window_ms > 0 && self.next_after(now.saturating_sub(window_ms)).is_some_and(|fire| fire <= now)
    }

    fn year_matches(&self, year: i64) -> bool {
        match &self.years {
            None => true,
            Some(bits) => {
                (i64::from(FIRST_YEAR)..=i64::from(LAST_YEAR)).contains(&year)
                    && bits.contains((year - i64::from(FIRST_YEAR)) as u32)
            }
        }
    }

    /// The first year `>= from` the year field allows.
    fn next_year(&self, from: i64) -> Option<i64> {
        match &self.years {
            None => Some(from),
            Some(bits) => {
                let offset = (from - i64::from(FIRST_YEAR)).clamp(0, i64::from(LAST_YEAR - FIRST_YEAR) + 1);
                bits.next_from(offset as u32).map(|o| i64::from(FIRST_YEAR + o))
            }
        }
    }

    /// Whether a day (days since the epoch, and its day of the month) passes the day fields.
    fn day_matches(&self, day: i64, dom: u32) -> bool {
        let dow = || weekday(day);
        match (&self.days_of_month, &self.days_of_week) {
            (None, None) => true,
            (Some(doms), None) => doms.contains(dom),
            (None, Some(dows)) => dows.contains(dow()),
            // Both restricted: either will do, as in Vixie cron.
            (Some(doms), Some(dows)) => doms.contains(dom) || dows.contains(dow()),
        }
    }
}

impl fmt::Display for Cron {
    /// The expression as given, trimmed, its fields separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cron::parse(s)
    }
}

impl schemars::JsonSchema for Cron {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cron".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A cron expression: 6 fields (Quartz: second minute hour day-of-month month day-of-week), 7 (plus year) or 5 (Unix, without seconds).",
        })
    }
}

impl Serialize for Cron {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cron::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week of a day counted from 1970-01-01, Sunday = 0.
fn weekday(day: i64) -> u32 {
    // 1970-01-01 was a Thursday.
    (day + 4).rem_euclid(7) as u32
}

/// Days from 1970-01-01 to a date.
///
/// Counts in years that start on March 1st, so that the leap day is the last day of its year
/// and the month lengths before it follow a fixed pattern, and in 400-year cycles of 146097
/// days, after which the Gregorian calendar repeats.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let cycle = year.div_euclid(400);
    let year_of_cycle = year - cycle * 400;
    // Months counted from March: Mar..Jul and Aug..Dec each run 31,30,31,30,31 days, which
    // (153 * m + 2) / 5 reproduces; January and February come last.
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_cycle = year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
    // 719468 days separate 0000-03-01, where the cycles start, from 1970-01-01.
    cycle * 146_097 + day_of_cycle - 719_468
}

/// The date (year, month 1-12, day 1-31) of a day counted from 1970-01-01; the inverse of
/// [`days_from_civil`].
pub(crate) fn civil_from_days(day: i64) -> (i64, u32, u32) {
    let day = day + 719_468;
    let cycle = day.div_euclid(146_097);
    let day_of_cycle = day - cycle * 146_097;
    // Undo the leap days counted so far in the cycle (every 4 years, not every 100, but the
    // very last day of the cycle) to find the year within it.
    let year_of_cycle = (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year = day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day_of_month = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = (if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 }) as u32;
    let year = year_of_cycle + cycle * 400 + i64::from(month <= 2);
    (year, month, day_of_month)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cron(expr: &str) -> Cron {
        Cron::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// Seconds since the epoch, as `date -u -d ... +%s` printed them, to milliseconds.
    fn ms(secs: i64) -> EpochMs {
        secs * 1000
    }

    #[test]
    fn refuses_with_a_message_naming_the_field_and_value() {
        let too_long = format!("0 0 0 * * ? {}", "1".repeat(MAX_LEN));
        let cases: &[(&str, &str)] = &[
            ("", "the expression is empty"),
            (" \t\n ", "the expression is empty"),
            (&too_long, "longer than 256 characters"),
            ("* * *", "expected 5, 6 or 7 fields, found 3"),
            ("0 0 0 * * ? 2030 1", "expected 5, 6 or 7 fields, found 8"),
            ("60 * * * * ?", "second: 60 is out of range 0-59"),
            ("0 61 * * * ?", "minute: 61 is out of range 0-59"),
            ("0 99999999999 * * * ?", "minute: 99999999999 is out of range 0-59"),
            ("0 0 24 * * ?", "hour: 24 is out of range 0-23"),
            ("0 0 0 0 * ?", "day-of-month: 0 is out of range 1-31"),
            ("0 0 0 32 * ?", "day-of-month: 32 is out of range 1-31"),
            ("0 0 0 * 13 ?", "month: 13 is out of range 1-12"),
            ("0 0 0 ? * 0", "day-of-week: 0 is out of range 1-7"),
            ("0 0 0 ? * 8", "day-of-week: 8 is out of range 1-7"),
            ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
            ("0 0 0 1 1 ? 1969", "year: 1969 is out of range 1970-2199"),
            ("0 0 0 1 1 ? 2200", "year: 2200 is out of range 1970-2199"),
            ("0 0 0 ? * FUN", "day-of-week: \"FUN\" is not a day name (SUN-SAT)"),
            ("0 0 0 1 FOO ?", "month: \"FOO\" is not a month name (JAN-DEC)"),
            ("0 x * * * ?", "minute: \"x\" is not a number"),
            ("0 -1 * * * ?", "minute: \"-1\" is missing a value"),
            ("0 1- * * * ?", "minute: \"1-\" is missing a value"),
            ("0 1,,2 * * * ?", "minute: \"1,,2\" has an empty list item"),
            ("0 1/2/3 * * * ?", "minute: \"1/2/3\" has more than one /"),
            ("0 0/0 * * * ?", "minute: step \"0\" must be a number from 1 to 59"),
            ("0 */60 * * * ?", "minute: step \"60\" must be a number from 1 to 59"),
            ("0 */x * * * ?", "minute: step \"x\" must be a number from 1 to 59"),
            ("0 */+5 * * * ?", "minute: step \"+5\" must be a number from 1 to 59"),
            ("0 0 0 ? * FRI-MON", "day-of-week: FRI-MON goes from high to low"),
            ("0 0 20-8 * * ?", "hour: 20-8 goes from high to low"),
            ("0 0 0 L * ?", "day-of-month: L is not supported"),
            ("0 0 0 LW * ?", "day-of-month: LW is not supported"),
            ("0 0 0 15W * ?", "day-of-month: 15W is not supported"),
            ("0 0 0 L-3 * ?", "day-of-month: L-3 is not supported"),
            ("0 0 0 ? * 6L", "day-of-week: 6L is not supported"),
            ("0 0 0 ? * FRIL", "day-of-week: FRIL is not supported"),
            ("0 0 0 ? * 6#3", "day-of-week: 6#3 is not supported"),
            ("0 0 0 ? * l", "day-of-week: l is not supported"),
            ("0 0 0 ? * ?", "day-of-month and day-of-week cannot both be ?"),
            ("0 ? * * * ?", "minute: ? is only allowed in day-of-month and day-of-week"),
            ("0 0 0 1 1 ? ?", "year: ? is only allowed"),
            ("0 0 0 ?,1 * ?", "day-of-month: ? must stand alone"),
        ];
        for (expr, message) in cases {
            let err = Cron::parse(expr).expect_err(expr);
            assert!(err.0.contains(message), "{expr:?}: {:?} does not contain {message:?}", err.0);
        }
    }

    #[test]
    fn accepts_the_documented_syntax() {
        for expr in [
            "0 30 3 * * ?",
            "0 0/30 9-17 ? * MON-FRI",
            "0 0 12 ? * mon-fri",
            "*/5 * * * * *",
            "0 0 0 1,15 JAN-mar,Dec ?",
            "0 0 0 ? * 1-7/2",
            "0 0 0 ? * SUN,7",
            "0 0 0 1 1 ? 2030-2040/2,2199",
            "0 0 0 1 1 ? *",
            "30 4 * * 0",
            "30 4 * * 7",
            "30 4 * * 5-7",
            "00 05 * * *",
        ] {
            assert!(Cron::parse(expr).is_ok(), "{expr}: {:?}", Cron::parse(expr));
        }
    }

    #[test]
    fn known_fire_times() {
        // (expression, after, expected), seconds from `date -u -d <iso> +%s`.
        let cases: &[(&str, i64, Option<i64>)] = &[
            // 2026-12-02T03:30:00Z -> 2026-12-03T03:30:00Z
            ("0 30 3 * * ?", 1796182200, Some(1796268600)),
            // 2026-01-01T10:07:13Z -> 10:15:00Z; 10:45:00Z -> 11:00:00Z
            ("0 0/15 * * * ?", 1767262033, Some(1767262500)),
            ("0 0/15 * * * ?", 1767264300, Some(1767265200)),
            ("0 */15 * * * ?", 1767262033, Some(1767262500)),
            // Fri 2026-03-06T12:00:00Z -> Mon 2026-03-09T12:00:00Z
            ("0 0 12 ? * MON-FRI", 1772798400, Some(1773057600)),
            ("0 0 12 ? * 2-6", 1772798400, Some(1773057600)),
            ("0 12 * * 1-5", 1772798400, Some(1773057600)),
            // 2025-01-01 -> 2028-02-29; 1999-06-01 -> 2000-02-29 (2000 is a leap year)
            ("0 0 0 29 2 ?", 1735689600, Some(1835395200)),
            ("0 0 0 29 FEB ?", 928195200, Some(951782400)),
            // 2097-01-01 -> 2104-02-29: 2100 is not a leap year
            ("0 0 0 29 2 ?", 4007836800, Some(4233686400)),
            ("0 0 0 29 2 ? 2100", 3944678400, None),
            // Mon 2026-03-09T00:00Z -> Sun 2026-03-15T04:30Z, Sunday written four ways
            ("30 4 * * 0", 1773014400, Some(1773549000)),
            ("30 4 * * 7", 1773014400, Some(1773549000)),
            ("30 4 * * sun", 1773014400, Some(1773549000)),
            ("0 30 4 ? * 1", 1773014400, Some(1773549000)),
            // year field: 2026-03-09 -> 2030-01-01; a year in the past or beyond ten years
            ("0 0 0 1 1 ? 2030", 1773014400, Some(1893456000)),
            ("0 0 0 1 1 ? 2020", 1773014400, None),
            ("0 0 0 1 1 ? 2199", 1773014400, None),
            // both days restricted: Tue 2026-03-10 -> the 15th (a Sunday), then Monday the 16th
            ("0 0 15 * MON", 1773100800, Some(1773532800)),
            ("0 0 0 15 * MON", 1773532800, Some(1773619200)),
            // month names: 2026-02-01 -> 2026-07-01 -> 2027-01-01
            ("0 0 0 1 JAN,jul ?", 1769904000, Some(1782864000)),
            ("0 0 0 1 JAN,jul ?", 1782864000, Some(1798761600)),
            // rollover into the next year: 2026-12-31T12:00Z -> 2027-01-01T00:00Z
            ("0 0 0 * * ?", 1798718400, Some(1798761600)),
            ("0 0 * * *", 1798718400, Some(1798761600)),
            ("59 59 23 31 DEC ?", 1798761599, Some(1830297599)),
            // never
            ("0 0 0 30 2 ?", 1735689600, None),
            ("0 0 0 31 4,6,9,11 ?", 1735689600, None),
            // before 1970: 1969-06-01 -> 1970-01-01; 1960-03-01 -> 1961-01-01
            ("0 0 0 1 1 ?", -18489600, Some(0)),
            ("0 0 0 1 1 ?", -310435200, Some(-283996800)),
            // the last second a year field allows, from 2190-01-01 (6942585600)
            ("59 59 23 31 12 ? 2199", 6942585600, Some(7258118399)),
        ];
        for (expr, after, expected) in cases {
            assert_eq!(cron(expr).next_after(ms(*after)), expected.map(ms), "{expr} after {after}");
        }
    }

    #[test]
    fn next_after_is_strictly_after_at_millisecond_precision() {
        let c = cron("0 30 3 * * ?");
        let fire = ms(1796268600);
        assert_eq!(c.next_after(fire - 1), Some(fire));
        assert_eq!(c.next_after(fire - 999), Some(fire));
        assert_eq!(c.next_after(fire), Some(fire + ms(86_400)));
        assert_eq!(c.next_after(fire + 1), Some(fire + ms(86_400)));
        assert_eq!(c.next_after(i64::MAX), None);
        assert!(c.next_after(i64::MIN).is_some_and(|t| t > i64::MIN && t % 1000 == 0), "no overflow far back");
    }

    #[test]
    fn matches_truncates_to_the_second() {
        let c = cron("0 30 3 * * ?");
        let fire = ms(1796268600);
        assert!(c.matches(fire));
        assert!(c.matches(fire + 999));
        assert!(!c.matches(fire + 1000));
        assert!(!c.matches(fire - 1));
        assert!(!cron("0 0 0 29 2 ? 2100").matches(ms(4107542400) - ms(86_400)), "2100-02-28 is not the 29th");
    }

    #[test]
    fn in_window_at_the_edges() {
        let c = cron("0 30 3 * * ?");
        let fire = ms(1796268600);
        let hour = ms(3600);
        let cases: &[(EpochMs, i64, bool)] = &[
            (fire, hour, true),
            (fire + 1, hour, true),
            (fire + hour - 1, hour, true),
            (fire + hour, hour, false),
            (fire - 1, hour, false),
            (fire - ms(86_400) + hour, hour, false),
            (fire, 1, true),
            (fire + 1, 1, false),
            (fire, 0, false),
            (fire, -hour, false),
        ];
        for (now, window, expected) in cases {
            assert_eq!(c.in_window(*now, *window), *expected, "now {now}, window {window}");
            let by_definition = *window > 0 && c.next_after(now - window).is_some_and(|f| f <= *now);
            assert_eq!(by_definition, *expected);
        }
    }

    #[test]
    fn display_normalises_whitespace_and_round_trips() {
        let c = cron("  0  30\t3 * *\n? ");
        assert_eq!(c.to_string(), "0 30 3 * * ?");
        assert_eq!(cron(&c.to_string()), c);
        assert_eq!("0 30 3 * * ?".parse::<Cron>(), Ok(c));
        assert_eq!("0 61 3 * * ?".parse::<Cron>().unwrap_err().to_string(), "minute: 61 is out of range 0-59");
    }

    #[test]
    fn serde_uses_the_text() {
        let c = cron("0 0/30 9-17 ? * MON-FRI");
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#""0 0/30 9-17 ? * MON-FRI""#);
        assert_eq!(serde_json::from_str::<Cron>(&json).unwrap(), c);
        let err = serde_json::from_str::<Cron>(r#""0 61 * * * ?""#).unwrap_err();
        assert!(err.to_string().contains("minute: 61 is out of range 0-59"), "{err}");
    }

    #[test]
    fn calendar_agrees_with_date() {
        // (year, month, day, seconds from `date -u -d <date> +%s`)
        let cases: &[(i64, u32, u32, i64)] = &[
            (1970, 1, 1, 0),
            (1960, 3, 1, -310435200),
            (1600, 2, 29, -11670998400),
            (2000, 2, 29, 951782400),
            (2028, 2, 29, 1835395200),
            (2100, 3, 1, 4107542400),
            (2104, 2, 29, 4233686400),
        ];
        for &(y, m, d, secs) in cases {
            assert_eq!(days_from_civil(y, m, d) * SECS_PER_DAY, secs, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(secs / SECS_PER_DAY), (y, m, d));
        }
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2026, 2), 28);
        // 2026-03-15 was a Sunday, 2026-03-16 a Monday.
        assert_eq!(weekday(1773532800 / SECS_PER_DAY), 0);
        assert_eq!(weekday(1773619200 / SECS_PER_DAY), 1);
    }

    /// Second to hour fields, each a small choice.
    fn time_fields() -> impl Strategy<Value = (&'static str, &'static str, &'static str)> {
        (
            prop::sample::select(vec!["0", "*/15", "0,30", "5-10", "*", "7/20", "59"]),
            prop::sample::select(vec!["0", "*/5", "30", "0-10/3", "*", "15,45", "59"]),
            prop::sample::select(vec!["*", "3", "9-17", "*/6", "0,12", "23"]),
        )
    }

    /// Expressions that fire at least once a day.
    fn daily() -> impl Strategy<Value = String> {
        (time_fields(), prop::sample::select(vec![("*", "?"), ("?", "*"), ("*", "*")]), any::<bool>()).prop_map(
            |((s, m, h), (dom, dow), unix)| {
                if unix { format!("{m} {h} {dom} * {dow}") } else { format!("{s} {m} {h} {dom} * {dow}") }
            },
        )
    }

    /// Any expression, including rare and impossible ones.
    fn any_expr() -> impl Strategy<Value = String> {
        (
            time_fields(),
            prop::sample::select(vec!["*", "?", "1", "15,31", "29", "1-7", "*/10", "30"]),
            prop::sample::select(vec!["*", "2", "JAN,JUL", "*/3", "11-12", "4,6"]),
            prop::sample::select(vec!["*", "?", "MON-FRI", "SUN", "1,7", "2/2"]),
            prop::sample::select(vec!["", " *", " 2030", " 2026-2040/3", " 1999,2100"]),
        )
            .prop_map(|((s, m, h), dom, month, dow, year)| format!("{s} {m} {h} {dom} {month} {dow}{year}"))
    }

    /// 1970-01-01 to 2100-01-01 (`date -u -d 2100-01-01 +%s` = 4102444800), in milliseconds.
    fn instant() -> impl Strategy<Value = EpochMs> {
        0..ms(4102444800)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The next fire time of a daily expression is after `after`, whole, a fire time, and
        /// no second in between is one (checked one second at a time).
        #[test]
        fn next_after_is_the_first_fire_time(expr in daily(), after in instant()) {
            let c = cron(&expr);
            let t = c.next_after(after);
            prop_assert!(t.is_some(), "{expr} never fires after {after}");
            let t = t.unwrap_or_default();
            prop_assert!(t > after);
            prop_assert_eq!(t % 1000, 0);
            prop_assert!(c.matches(t));
            prop_assert!(t - after <= ms(2 * 86_400), "{expr}: {after} -> {t}");
            let mut s = after.div_euclid(1000) + 1;
            while ms(s) < t {
                prop_assert!(!c.matches(ms(s)), "{expr}: {} matches, before {t}", ms(s));
                s += 1;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any expression: what `next_after` finds is a later, whole-second fire time, and
        /// `in_window` agrees with its definition.
        #[test]
        fn next_after_finds_a_later_fire_time(expr in any_expr(), after in instant(), window in 1i64..ms(86_400)) {
            let c = match Cron::parse(&expr) {
                Ok(c) => c,
                Err(e) => {
                    prop_assert!(e.0.contains("cannot both be ?"), "{expr}: {e}");
                    return Ok(());
                }
            };
            if let Some(t) = c.next_after(after) {
                prop_assert!(t > after);
                prop_assert_eq!(t % 1000, 0);
                prop_assert!(c.matches(t), "{expr}: {t} does not match");
                prop_assert!(!c.matches(t - 1000) || t - 1000 <= after, "{expr}: {} matches before {t}", t - 1000);
                prop_assert!(c.in_window(t, window));
                prop_assert!(c.in_window(t + window - 1, window));
            }
            prop_assert_eq!(c.in_window(after, window), c.next_after(after - window).is_some_and(|f| f <= after));
            prop_assert_eq!(cron(&c.to_string()), c);
        }

        /// The two calendar conversions undo each other and days follow one another.
        #[test]
        fn calendar_round_trips(day in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(day);
            prop_assert_eq!(days_from_civil(y, m, d), day);
            prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            let next = civil_from_days(day + 1);
            let expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            prop_assert_eq!(next, expected);
        }
    }
}
