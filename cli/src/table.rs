//! Compact human output: the API's JSON reduced to a few aligned columns per resource.

use serde_json::Value;

/// A column: its title and how a row (one JSON object) shows in it.
pub type Column = (&'static str, fn(&Value) -> String);

/// Rows under a header, each column as wide as its widest cell; `(none)` for no rows.
pub fn render(rows: &[Value], columns: &[Column]) -> String {
    if rows.is_empty() {
        return "(none)\n".into();
    }
    let cells: Vec<Vec<String>> = std::iter::once(columns.iter().map(|(title, _)| (*title).to_owned()).collect())
        .chain(rows.iter().map(|row| columns.iter().map(|(_, cell)| cell(row)).collect()))
        .collect();
    let widths: Vec<usize> =
        (0..columns.len()).map(|i| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A scalar as text; absent or null is `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time to the second, `2025-01-01 12:00:00`.
pub fn time(value: &Value) -> String {
    match value.as_str().and_then(|t| t.get(..19)) {
        Some(t) => t.replacen('T', " ", 1),
        None => text(value),
    }
}

/// A commit hash shortened as Bitbucket shows it.
pub fn short_hash(value: &Value) -> String {
    value.as_str().map(|h| h.chars().take(12).collect()).unwrap_or_else(|| text(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_align_and_missing_values_show_as_dashes() {
        let columns: [Column; 2] = [("ID", |r| text(&r["id"])), ("WHEN", |r| time(&r["at"]))];
        let rows = [json!({"id": "sandbox", "at": "2025-01-01T12:00:00.123456Z"}), json!({"id": "x"})];
        assert_eq!(render(&rows, &columns), "ID       WHEN\nsandbox  2025-01-01 12:00:00\nx        -\n");
        assert_eq!(render(&[], &columns), "(none)\n");
    }
}
