//! Printing a command's result on stdout in the chosen [`OutputFormat`].

use std::io::Write;

use serde_json::Value;

use crate::cli::OutputFormat;
use crate::error::CliError;
use crate::settings::Settings;

/// A command's result: a JSON object for `json`/`yaml`, its identifier for `id`, and lines of
/// text for `table`.
#[derive(Debug)]
pub struct Report {
    pub id: String,
    pub value: Value,
    pub text: String,
}

/// Prints `report` on stdout. A closed pipe (`cloacinactl ... | head -1`) is not an error.
pub fn emit(settings: &Settings, report: &Report) -> Result<(), CliError> {
    let text = match settings.output {
        OutputFormat::Table => report.text.clone(),
        OutputFormat::Json => serde_json::to_string_pretty(&report.value)
            .map_err(|e| CliError::User(format!("cannot format the result as JSON: {e}")))?,
        OutputFormat::Yaml => to_yaml(&report.value),
        OutputFormat::Id => report.id.clone(),
    };
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{}", text.trim_end_matches('\n')).and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::User(format!(
            "cannot write to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}

impl Report {
    /// A list answer: `value` is the server's whole document (printed as is for json/yaml),
    /// `items` its rows. `table` shows `columns` (the first row's keys when empty), `id` one
    /// `id` (else `name`) per line; with no rows the table is the line `empty`.
    pub fn list(
        settings: &Settings,
        value: Value,
        items: &[Value],
        columns: &[&str],
        empty: &str,
    ) -> Report {
        let text = if items.is_empty() {
            empty.to_string()
        } else {
            table(settings, items, columns)
        };
        Report {
            id: items.iter().map(id_of).collect::<Vec<_>>().join("\n"),
            value,
            text,
        }
    }
}

/// The identifier of a row for `-o id`: its `id`, else `execution_id`, `package_id`, `name`.
pub fn id_of(v: &Value) -> String {
    ["id", "execution_id", "package_id", "name"]
        .iter()
        .find_map(|k| v.get(*k).filter(|x| !x.is_null()))
        .map(|x| cell(Some(x)))
        .unwrap_or_default()
}

/// Widest a table cell gets before it is cut with `…`.
pub const CELL_MAX: usize = 48;

/// A JSON value as one table cell: `-` for missing or null, strings bare, arrays of scalars
/// comma-separated, other values as compact JSON; newlines become spaces.
pub fn cell(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.iter().all(|x| !x.is_object() && !x.is_array()) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    };
    text.replace(['\n', '\r'], " ")
}

/// `text` cut to at most `max` characters (never inside a character), the last one `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Rows as aligned columns under an upper-case header (bold when colours are on); each cell
/// is [`cell`] cut by [`truncate`] to [`CELL_MAX`]. `columns` empty: the first row's keys.
pub fn table(settings: &Settings, items: &[Value], columns: &[&str]) -> String {
    let inferred: Vec<String>;
    let cols: Vec<&str> = if columns.is_empty() {
        inferred = items
            .first()
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        inferred.iter().map(String::as_str).collect()
    } else {
        columns.to_vec()
    };
    let head: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| truncate(&cell(r.get(*c)), CELL_MAX))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            let pad = w.saturating_sub(c.chars().count());
            out.push_str(c);
            out.push_str(&" ".repeat(pad + 2));
        }
        out.trim_end().to_string()
    };
    let header = line(&head);
    let mut out = if settings.color {
        format!("\x1b[1m{header}\x1b[0m\n")
    } else {
        format!("{header}\n")
    };
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds (the server's own format,
/// `2026-12-03T16:34:15.123Z`); the number itself when it is out of chrono's range.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// `text` in bold green when colours are on.
pub fn good(settings: &Settings, text: &str) -> String {
    if settings.color {
        format!("\x1b[1;32m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `label: value` lines with the values aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}\n"))
        .collect()
}

/// A YAML document for a JSON value (strings are written JSON-quoted, which YAML reads back
/// unchanged).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => yaml_object(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => yaml_array(items, 0, &mut out),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

fn yaml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

fn is_nested(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn yaml_object(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_key(k));
        out.push(':');
        yaml_child(v, indent, out);
    }
}

fn yaml_array(items: &[Value], indent: usize, out: &mut String) {
    for v in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        yaml_child(v, indent, out);
    }
}

fn yaml_child(v: &Value, indent: usize, out: &mut String) {
    if is_nested(v) {
        out.push('\n');
        match v {
            Value::Object(m) => yaml_object(m, indent + 2, out),
            Value::Array(a) => yaml_array(a, indent + 2, out),
            _ => {}
        }
    } else {
        out.push(' ');
        out.push_str(&yaml_scalar(v));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml() {
        let v = serde_json::json!({
            "path": "a b.cloacina",
            "size": 12,
            "signed": true,
            "signature": null,
            "targets": ["x86_64-unknown-linux-gnu"],
            "nested": {"k": "v", "empty": []},
            "odd key": "\"quoted\"\n",
        });
        assert_eq!(
            to_yaml(&v),
            // serde_json objects keep their keys sorted.
            "nested:\n  empty: []\n  k: \"v\"\n\"odd key\": \"\\\"quoted\\\"\\n\"\npath: \"a b.cloacina\"\nsignature: null\nsigned: true\nsize: 12\ntargets:\n  - \"x86_64-unknown-linux-gnu\"\n"
        );
        assert_eq!(to_yaml(&serde_json::json!("x")), "\"x\"\n");
    }

    fn plain() -> Settings {
        Settings::for_tests()
    }

    #[test]
    fn tables_align_and_truncate_on_character_boundaries() {
        let long = "é".repeat(60);
        let rows = vec![
            serde_json::json!({"name": "a", "state": "loaded", "note": null}),
            serde_json::json!({"name": long, "state": "failed", "note": ["x", 1]}),
        ];
        // Columns given in order; inferred ones are the first row's keys (sorted by serde_json).
        let inferred = table(&plain(), &rows, &[]);
        assert!(
            inferred
                .lines()
                .next()
                .is_some_and(|h| h.starts_with("NAME") && h.ends_with("NOTE  STATE")),
            "{inferred}"
        );
        let text = table(&plain(), &rows, &["name", "state", "note"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("NAME{}STATE   NOTE", " ".repeat(CELL_MAX - 4 + 2))
        );
        assert!(lines[1].starts_with("a "), "{text}");
        assert!(lines[1].ends_with("loaded  -"), "{text}");
        let cut = format!("{}…", "é".repeat(CELL_MAX - 1));
        assert!(lines[2].starts_with(&cut), "{text}");
        assert!(lines[2].ends_with("failed  x, 1"), "{text}");
        assert!(!text.contains('\x1b'));
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }

    #[test]
    fn ids_come_from_id_or_name() {
        assert_eq!(id_of(&serde_json::json!({"id": "u1", "name": "n"})), "u1");
        assert_eq!(id_of(&serde_json::json!({"execution_id": "e"})), "e");
        assert_eq!(id_of(&serde_json::json!({"name": "n"})), "n");
        let r = Report::list(
            &plain(),
            serde_json::json!({}),
            &[
                serde_json::json!({"name": "a"}),
                serde_json::json!({"name": "b"}),
            ],
            &["name"],
            "none",
        );
        assert_eq!(r.id, "a\nb");
        let r = Report::list(
            &plain(),
            serde_json::json!({}),
            &[],
            &["name"],
            "no tenants",
        );
        assert_eq!(r.text, "no tenants");
    }

    #[test]
    fn milliseconds_read_as_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_714_557_600_123), "2024-05-01T10:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn aligned_fields() {
        assert_eq!(
            fields(&[("a", "1".into()), ("long", "2".into())]),
            "  a     1\n  long  2\n"
        );
    }
}
