//! Numbers as Teletraan's server (Jackson) takes them: `5`, `"5"` and `5.0` are the integer 5;
//! `5.5`, `"x"`, `true` are refused. Used with `#[serde(default, deserialize_with = "…")]` on
//! the integer fields of what users send; the caller's error names the field.

use std::fmt;

use serde::Deserializer;
use serde::de::{Error, Unexpected, Visitor};

/// The integer a text holds: `"5"`, `" 5 "`, `"5.0"`, `"-3"`; `None` for anything else
/// (a fraction, a word, an empty text, a number out of range).
pub fn parse_integer(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    // Only plain decimals: no "inf", "NaN" or exponents sneaking in through f64's parser.
    if !text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+')) {
        return None;
    }
    text.parse::<f64>().ok().and_then(integer_of_float)
}

/// The integer a float is when it has no fraction and fits an `i64`.
fn integer_of_float(f: f64) -> Option<i64> {
    // 2^63 is exactly representable: anything below it in magnitude (and integral) fits.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

struct Integer;

impl<'de> Visitor<'de> for Integer {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer (a number without a fraction, or a text holding one)")
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v).map(Some).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        integer_of_float(v).map(Some).ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_integer(v).map(Some).ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Integer)
    }
}

struct Float;

impl<'de> Visitor<'de> for Float {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number (or a text holding one)")
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        let plain = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'));
        match t.parse::<f64>() {
            Ok(f) if plain && f.is_finite() => Ok(Some(f)),
            _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Float)
    }
}

/// An optional finite `f64` sent as a number or a text holding one.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_any(Float)
}

/// An optional `i64` sent as a number, a float without a fraction, or a text.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(Integer)
}

/// An optional `i32` sent as a number, a float without a fraction, or a text.
pub fn opt_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    match opt_i64(d)? {
        None => Ok(None),
        Some(n) => i32::try_from(n).map(Some).map_err(|_| {
            D::Error::invalid_value(Unexpected::Signed(n), &"an integer between -2147483648 and 2147483647")
        }),
    }
}

/// An optional `u32` sent as a number, a float without a fraction, or a text.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match opt_i64(d)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| D::Error::invalid_value(Unexpected::Signed(n), &"an integer between 0 and 4294967295")),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Input {
        #[serde(default, deserialize_with = "opt_i32")]
        n: Option<i32>,
        #[serde(default, deserialize_with = "opt_i64")]
        big: Option<i64>,
    }

    fn n(json: &str) -> Result<Option<i32>, String> {
        serde_json::from_str::<Input>(json).map(|i| i.n).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_come_as_numbers_texts_or_floats_without_fraction() {
        for json in [r#"{"n":5}"#, r#"{"n":"5"}"#, r#"{"n":5.0}"#, r#"{"n":" 5 "}"#, r#"{"n":"5.0"}"#, r#"{"n":5e0}"#] {
            assert_eq!(n(json), Ok(Some(5)), "{json}");
        }
        assert_eq!(n(r#"{"n":-3}"#), Ok(Some(-3)));
        assert_eq!(n(r#"{"n":"-3"}"#), Ok(Some(-3)));
        assert_eq!(n(r#"{"n":null}"#), Ok(None));
        assert_eq!(n(r#"{}"#), Ok(None));
        let big: Input = serde_json::from_str(r#"{"big":"1700000000000"}"#).unwrap();
        assert_eq!(big.big, Some(1_700_000_000_000));
    }

    #[test]
    fn fractions_words_and_out_of_range_values_are_refused() {
        for json in [
            r#"{"n":5.5}"#,
            r#"{"n":"5.5"}"#,
            r#"{"n":"x"}"#,
            r#"{"n":""}"#,
            r#"{"n":true}"#,
            r#"{"n":[5]}"#,
            r#"{"n":"inf"}"#,
            r#"{"n":"NaN"}"#,
            r#"{"n":"1e3"}"#,
            r#"{"n":3000000000}"#,
            r#"{"n":1e300}"#,
        ] {
            assert!(n(json).is_err(), "{json} must be refused");
        }
        assert!(n(r#"{"n":"x"}"#).unwrap_err().contains("expected an integer"));
    }

    #[test]
    fn floats_come_as_numbers_or_texts() {
        #[derive(Debug, Deserialize)]
        struct F {
            #[serde(default, deserialize_with = "opt_f64")]
            f: Option<f64>,
        }
        let f = |json: &str| serde_json::from_str::<F>(json).map(|v| v.f).map_err(|e| e.to_string());
        assert_eq!(f(r#"{"f":1.5}"#), Ok(Some(1.5)));
        assert_eq!(f(r#"{"f":"-2.25"}"#), Ok(Some(-2.25)));
        assert_eq!(f(r#"{"f":3}"#), Ok(Some(3.0)));
        assert_eq!(f(r#"{"f":null}"#), Ok(None));
        for bad in [r#"{"f":"x"}"#, r#"{"f":"inf"}"#, r#"{"f":""}"#, r#"{"f":false}"#] {
            assert!(f(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn texts_parse_to_the_integer_they_hold() {
        assert_eq!(parse_integer("42"), Some(42));
        assert_eq!(parse_integer("42.0"), Some(42));
        assert_eq!(parse_integer(" -7 "), Some(-7));
        assert_eq!(parse_integer("4.2"), None);
        assert_eq!(parse_integer("9223372036854775808"), None, "beyond i64");
        assert_eq!(parse_integer("-inf"), None);
        assert_eq!(parse_integer(""), None);
    }
}
