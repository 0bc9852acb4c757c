//! A stage's dashboard and alarm links, shown on the board (Teletraan's `MetricsConfigBean` and
//! `AlarmBean`): what users send, and the validation, whose errors name the item at fault
//! (`[1].specs[0].color`).

use serde::{Deserialize, Serialize};

use crate::rules::webhook::check_url;

/// At most this many links of each kind per stage.
pub const MAX_LINKS: usize = 100;
/// At most this many colour bands per graph.
pub const MAX_SPECS: usize = 20;
/// Longest URL, in characters.
const MAX_URL_CHARS: usize = 2048;
/// Longest title or name, in characters.
const MAX_TEXT_CHARS: usize = 256;

/// A rejected list of links, with the item and field at fault (`[2].url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LinkInvalid {
    /// Path of the field in the list.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: String, message: impl Into<String>) -> LinkInvalid {
    LinkInvalid { field, message: message.into() }
}

/// A graph of the stage's dashboards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsConfig {
    /// Shown above the graph.
    pub title: Option<String>,
    /// Where the graph is.
    pub url: String,
    /// Colour bands of its values.
    pub specs: Vec<MetricsSpec>,
}

/// A colour band of a graph's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// From this value.
    pub min: Option<f64>,
    /// To this value.
    pub max: Option<f64>,
    /// In this colour (`red`, `#ff0000`).
    pub color: Option<String>,
}

/// An alarm of the stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alarm {
    /// Its name.
    pub name: Option<String>,
    /// Where the alarm is.
    pub alarm_url: Option<String>,
    /// Where the metrics it watches are.
    pub metrics_url: Option<String>,
}

/// A graph as users send it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct MetricsConfigInput {
    pub title: Option<String>,
    pub url: Option<String>,
    pub specs: Option<Vec<MetricsSpecInput>>,
}

/// A colour band as users send it; bounds may be numbers or texts holding one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct MetricsSpecInput {
    #[serde(default, deserialize_with = "super::lenient::opt_f64")]
    pub min: Option<f64>,
    #[serde(default, deserialize_with = "super::lenient::opt_f64")]
    pub max: Option<f64>,
    pub color: Option<String>,
}

/// An alarm as users send it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct AlarmInput {
    pub name: Option<String>,
    pub alarm_url: Option<String>,
    pub metrics_url: Option<String>,
}

fn text(field: String, v: Option<String>) -> Result<Option<String>, LinkInvalid> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if let Some(s) = &v {
        if s.chars().count() > MAX_TEXT_CHARS {
            return Err(invalid(field, format!("longer than {MAX_TEXT_CHARS} characters")));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid(field, "contains control characters"));
        }
    }
    Ok(v)
}

fn url(field: String, v: Option<String>) -> Result<Option<String>, LinkInvalid> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if let Some(u) = &v {
        if u.chars().count() > MAX_URL_CHARS {
            return Err(invalid(field, format!("longer than {MAX_URL_CHARS} characters")));
        }
        check_url(u).map_err(|m| invalid(field, m))?;
    }
    Ok(v)
}

fn check_len(len: usize) -> Result<(), LinkInvalid> {
    if len > MAX_LINKS {
        return Err(invalid("list".into(), format!("at most {MAX_LINKS} links")));
    }
    Ok(())
}

/// Checks a stage's graphs: each has an http(s) URL; bands have finite bounds in order and a
/// colour of letters, digits or `#`.
pub fn check_metrics(items: Vec<MetricsConfigInput>) -> Result<Vec<MetricsConfig>, LinkInvalid> {
    check_len(items.len())?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let title = text(format!("[{i}].title"), item.title)?;
        let url = url(format!("[{i}].url"), item.url)?.ok_or_else(|| invalid(format!("[{i}].url"), "is required"))?;
        let specs_in = item.specs.unwrap_or_default();
        if specs_in.len() > MAX_SPECS {
            return Err(invalid(format!("[{i}].specs"), format!("at most {MAX_SPECS} bands")));
        }
        let mut specs = Vec::with_capacity(specs_in.len());
        for (j, s) in specs_in.into_iter().enumerate() {
            let at = |f: &str| format!("[{i}].specs[{j}].{f}");
            if let (Some(min), Some(max)) = (s.min, s.max)
                && min > max
            {
                return Err(invalid(at("min"), format!("{min} is above max {max}")));
            }
            let color = s.color.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
            if let Some(c) = &color
                && (c.len() > 32 || !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '#'))
            {
                return Err(invalid(at("color"), "a colour name or #rrggbb (letters, digits and '#', at most 32)"));
            }
            specs.push(MetricsSpec { min: s.min, max: s.max, color });
        }
        out.push(MetricsConfig { title, url, specs });
    }
    Ok(out)
}

/// Checks a stage's alarms: a name or a URL at least, URLs http(s).
pub fn check_alarms(items: Vec<AlarmInput>) -> Result<Vec<Alarm>, LinkInvalid> {
    check_len(items.len())?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let alarm = Alarm {
            name: text(format!("[{i}].name"), item.name)?,
            alarm_url: url(format!("[{i}].alarmUrl"), item.alarm_url)?,
            metrics_url: url(format!("[{i}].metricsUrl"), item.metrics_url)?,
        };
        if alarm.name.is_none() && alarm.alarm_url.is_none() && alarm.metrics_url.is_none() {
            return Err(invalid(format!("[{i}]"), "give a name, an alarmUrl or a metricsUrl"));
        }
        out.push(alarm);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(json: &str) -> Result<Vec<MetricsConfig>, LinkInvalid> {
        check_metrics(serde_json::from_str(json).unwrap())
    }

    fn alarms(json: &str) -> Result<Vec<Alarm>, LinkInvalid> {
        check_alarms(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn graphs_need_a_url_and_bands_in_order() {
        let ok =
            metrics(r##"[{"title":" p99 ","url":"https://g/x","specs":[{"min":0,"max":"5.5","color":"#ff0000"}]}]"##);
        let ok = ok.unwrap();
        assert_eq!(ok[0].title.as_deref(), Some("p99"));
        assert_eq!(ok[0].specs[0].max, Some(5.5), "a bound may come as a text");
        assert_eq!(metrics("[]").unwrap(), []);
        let cases = [
            (r#"[{"title":"t"}]"#, "[0].url"),
            (r#"[{"url":"https://g"},{"url":"ftp://g"}]"#, "[1].url"),
            (r#"[{"url":"https://g","specs":[{"min":2,"max":1}]}]"#, "[0].specs[0].min"),
            (r#"[{"url":"https://g","specs":[{},{"color":"red; x"}]}]"#, "[0].specs[1].color"),
            (r#"[{"url":"https://g","title":"a\u0000"}]"#, "[0].title"),
        ];
        for (json, field) in cases {
            assert_eq!(metrics(json).unwrap_err().field, field, "{json}");
        }
        let many = format!("[{}]", vec![r#"{"url":"https://g"}"#; MAX_LINKS + 1].join(","));
        assert!(metrics(&many).is_err());
    }

    #[test]
    fn alarms_need_something_to_show() {
        let ok = alarms(r#"[{"name":"5xx","alarmUrl":"https://a/1","metricsUrl":"http://m/1"}]"#).unwrap();
        assert_eq!(ok[0].alarm_url.as_deref(), Some("https://a/1"));
        assert_eq!(alarms(r#"[{"name":"x"},{}]"#).unwrap_err().field, "[1]");
        assert_eq!(alarms(r#"[{"alarmUrl":"javascript:x"}]"#).unwrap_err().field, "[0].alarmUrl");
    }
}
