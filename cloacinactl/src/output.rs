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

    #[test]
    fn aligned_fields() {
        assert_eq!(
            fields(&[("a", "1".into()), ("long", "2".into())]),
            "  a     1\n  long  2\n"
        );
    }
}
