//! What reads print: aligned columns for people, the API's JSON for scripts, nothing with
//! `--quiet`.

use std::io::Write;

use serde_json::Value;

use crate::args::{ClientArgs, OutputFormat};

/// Where a command's output goes, as its flags say.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Table or JSON.
    pub format: OutputFormat,
    /// Print nothing.
    pub quiet: bool,
}

impl Out {
    /// From the client flags.
    pub fn of(args: &ClientArgs) -> Out {
        Out { format: args.output, quiet: args.quiet }
    }

    /// Prints a read: `json` as it is with `--output json`, else the table `rows` make.
    pub fn read(&self, json: &Value, headers: &[&str], rows: impl FnOnce() -> Vec<Vec<String>>) {
        if self.quiet {
            return;
        }
        match self.format {
            OutputFormat::Json => self.json(json),
            OutputFormat::Table => print!("{}", table(headers, &rows())),
        }
    }

    /// Prints JSON (pretty), unless quiet.
    pub fn json(&self, json: &Value) {
        if !self.quiet {
            let text = serde_json::to_string_pretty(json).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }

    /// Prints a line for people (with `--output json` the JSON is the answer, so none).
    pub fn line(&self, text: &str) {
        if !self.quiet && self.format == OutputFormat::Table {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }

    /// Prints the result of a write: its JSON with `--output json`, else the line.
    pub fn done(&self, json: &Value, text: &str) {
        match self.format {
            OutputFormat::Json => self.json(json),
            OutputFormat::Table => self.line(text),
        }
    }
}

/// Columns padded to their widest cell (counted in characters), two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A JSON field as text (`-` for none).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An epoch-milliseconds field as a UTC time (`-` for none).
pub fn time(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) if ms > 0 => schema::time::format_utc(ms).replace('T', " ").trim_end_matches('Z').to_string(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = vec![vec!["web".into(), "prod".into()], vec!["payments-api".into(), "é".into()]];
        assert_eq!(table(&["ENV", "STAGE"], &rows), "ENV           STAGE\nweb           prod\npayments-api  é\n");
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&serde_json::json!(5)), "5");
        assert_eq!(time(&serde_json::json!(0)), "-");
        assert_eq!(time(&serde_json::json!(86_400_000)), "1970-01-02 00:00:00");
    }
}
