//! `cloacinactl workflow list|inspect|run|pause|resume`: the workflows a tenant's loaded
//! packages serve, through the server's `/v1/tenants/<tenant>/workflows` routes.
//!
//! Also the helpers the other server-facing list verbs of this family share: [`crate::api::list_all`]
//! (every page of a `{"items","total"}` list) and [`kv_lines`] (`key: value` views).

use std::io::Read;

use serde_json::{Value, json};

use crate::api::{self, enc, tenant_path};
use crate::cli::{WorkflowCommand, WorkflowListArgs, WorkflowRunArgs};
use crate::error::CliError;
use crate::output::{self, Report, cell, emit};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: &WorkflowCommand) -> Result<(), CliError> {
    match command {
        WorkflowCommand::List(args) => list(settings, args),
        WorkflowCommand::Inspect(args) => inspect(settings, &args.target),
        WorkflowCommand::Run(args) => start(settings, args),
        WorkflowCommand::Pause(args) => set_paused(settings, &args.target, true),
        WorkflowCommand::Resume(args) => set_paused(settings, &args.target, false),
    }
}

/// `key: value` lines (values through [`cell`]), unaligned so each line reads the same to a
/// person and to `grep` (`subscribers: 0`).
pub(crate) fn kv_lines(rows: &[(&str, String)]) -> String {
    rows.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// A member of `v` as one cell (`-` when missing or null).
pub(crate) fn field(v: &Value, key: &str) -> String {
    cell(v.get(key))
}

fn list(settings: &Settings, args: &WorkflowListArgs) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let (mut doc, items) = crate::api::list_all(&client, &tenant_path(settings, "workflows"))?;
    let items = filter_by_package(items, args.package.as_deref());
    if let Value::Object(map) = &mut doc {
        map.insert("items".to_string(), Value::Array(items.clone()));
        map.insert("total".to_string(), json!(items.len()));
    }
    let empty = match &args.package {
        Some(f) => format!(
            "no workflows in tenant '{}' from a package whose name contains '{f}'",
            settings.tenant
        ),
        None => format!("no workflows in tenant '{}'", settings.tenant),
    };
    let mut report = Report::list(
        settings,
        doc,
        &items,
        &[
            "workflow_name",
            "package_name",
            "version",
            "tasks",
            "paused",
        ],
        &empty,
    );
    // What `workflow inspect|run` take.
    report.id = items
        .iter()
        .map(|w| field(w, "workflow_name"))
        .collect::<Vec<_>>()
        .join("\n");
    emit(settings, &report)
}

/// The workflows whose `package_name` contains `filter` (all of them without one).
fn filter_by_package(items: Vec<Value>, filter: Option<&str>) -> Vec<Value> {
    match filter {
        None => items,
        Some(f) => items
            .into_iter()
            .filter(|w| {
                w.get("package_name")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.contains(f))
            })
            .collect(),
    }
}

fn inspect(settings: &Settings, name: &str) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let doc = client.get_json(&tenant_path(settings, &format!("workflows/{}", enc(name))))?;
    let report = Report {
        id: field(&doc, "workflow_name"),
        text: inspect_text(settings, &doc),
        value: doc,
    };
    emit(settings, &report)
}

/// The table view of `GET .../workflows/{name}`: its fields, its tasks (dependencies,
/// trigger rule, attempts, timeout) and the schedules that start it.
fn inspect_text(settings: &Settings, doc: &Value) -> String {
    let package = match (
        doc.get("package_name").and_then(Value::as_str),
        doc.get("id"),
    ) {
        (Some(p), Some(Value::String(id))) => format!("{p} ({id})"),
        (Some(p), _) => p.to_string(),
        (None, _) => "-".to_string(),
    };
    let mut rows = vec![
        ("workflow", field(doc, "workflow_name")),
        ("package", package),
        ("version", field(doc, "version")),
        ("description", field(doc, "description")),
        ("paused", field(doc, "paused")),
        ("build_status", field(doc, "build_status")),
        ("build_error", field(doc, "build_error")),
    ];
    let others: Vec<&str> = doc
        .get("workflows")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if others.len() > 1 {
        rows.push(("package_workflows", others.join(", ")));
    }
    let mut out = kv_lines(&rows);
    let tasks: Vec<Value> = doc
        .get("task_graph")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(task_row).collect())
        .unwrap_or_default();
    out.push_str("\ntasks:\n");
    if tasks.is_empty() {
        out.push_str("  none (the package is not built or serves no workflow yet)\n");
    } else {
        out.push_str(&indent(&output::table(
            settings,
            &tasks,
            &[
                "task",
                "dependencies",
                "trigger_rule",
                "max_attempts",
                "timeout_ms",
            ],
        )));
    }
    let schedules: Vec<Value> = doc
        .get("schedules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(schedule_row).collect())
        .unwrap_or_default();
    out.push_str("\nschedules:\n");
    if schedules.is_empty() {
        out.push_str("  none (started only on demand)\n");
    } else {
        out.push_str(&indent(&output::table(
            settings,
            &schedules,
            &["name", "type", "schedule", "enabled", "next_run_at"],
        )));
    }
    out
}

/// A task of `task_graph` as a table row.
fn task_row(t: &Value) -> Value {
    let deps = match t.get("dependencies").and_then(Value::as_array) {
        Some(d) if !d.is_empty() => cell(Some(&Value::Array(d.clone()))),
        _ => "-".to_string(),
    };
    json!({
        "task": field(t, "id"),
        "dependencies": deps,
        "trigger_rule": t.get("trigger_rule").map_or_else(|| "always".to_string(), rule_text),
        "max_attempts": t.pointer("/retry/max_attempts").cloned().unwrap_or(json!(1)),
        "timeout_ms": t.get("timeout_ms").cloned().unwrap_or(Value::Null),
    })
}

/// A trigger rule (`{"rule": "all", "args": [...]}`) as text: `always`,
/// `task_success(fetch)`, `all(task_success(a), task_failed(b))`, `context_value(k eq 1)`.
pub(crate) fn rule_text(rule: &Value) -> String {
    let name = rule.get("rule").and_then(Value::as_str);
    let args = rule.get("args");
    match (name, args) {
        (Some(name), None | Some(Value::Null)) => name.to_string(),
        (Some(name), Some(Value::String(s))) => format!("{name}({s})"),
        (Some(name), Some(Value::Array(inner))) => format!(
            "{name}({})",
            inner.iter().map(rule_text).collect::<Vec<_>>().join(", ")
        ),
        (Some(name), Some(Value::Object(o))) => {
            let part = |k: &str| o.get(k).map(|v| cell(Some(v))).unwrap_or_default();
            if o.contains_key("key") {
                format!("{name}({} {} {})", part("key"), part("op"), part("value"))
            } else {
                format!("{name}({})", Value::Object(o.clone()))
            }
        }
        (Some(name), Some(other)) => format!("{name}({other})"),
        (None, _) => rule.to_string(),
    }
}

/// A schedule row (of `GET .../triggers`) for the inspect view: cron expression and time
/// zone, or the trigger's poll interval.
pub(crate) fn schedule_row(s: &Value) -> Value {
    json!({
        "name": field(s, "name"),
        "type": field(s, "schedule_type"),
        "schedule": schedule_text(s),
        "workflow": field(s, "workflow_name"),
        "enabled": s.get("enabled").cloned().unwrap_or(Value::Null),
        "paused": s.get("paused").cloned().unwrap_or(Value::Null),
        "next_run_at": s.get("next_run_at").cloned().unwrap_or(Value::Null),
        "last_run_at": s.get("last_run_at").cloned().unwrap_or(Value::Null),
    })
}

/// `0 2 * * * (UTC)` for a cron schedule, `every 5s` for a custom-poll trigger.
pub(crate) fn schedule_text(s: &Value) -> String {
    if let Some(expr) = s.get("cron_expression").and_then(Value::as_str) {
        return match s.get("timezone").and_then(Value::as_str) {
            Some(tz) => format!("{expr} ({tz})"),
            None => expr.to_string(),
        };
    }
    match s.get("poll_interval_ms").and_then(Value::as_u64) {
        Some(ms) if ms % 1000 == 0 => format!("every {}s", ms / 1000),
        Some(ms) => format!("every {ms}ms"),
        None => "-".to_string(),
    }
}

/// `text` with every line indented by two spaces.
pub(crate) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn start(settings: &Settings, args: &WorkflowRunArgs) -> Result<(), CliError> {
    // The context is read and checked before anything is sent (and before a server is even
    // needed), so a bad file never starts a run.
    let context = match args.context.as_deref() {
        None => json!({}),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .read_to_string(&mut text)
                .map_err(|e| {
                    CliError::User(format!("--context -: cannot read standard input: {e}"))
                })?;
            parse_context(&text, "standard input")?
        }
        Some(path) => {
            let file = std::path::Path::new(path);
            let text = std::fs::read_to_string(file)
                .map_err(|e| CliError::io("read the --context file", file, &e))?;
            parse_context(&text, &format!("the --context file {path}"))?
        }
    };
    let client = api::client(settings)?;
    let doc = client.post_json(
        &tenant_path(settings, &format!("workflows/{}/execute", enc(&args.name))),
        &json!({ "context": context }),
    )?;
    let id = field(&doc, "execution_id");
    let report = Report {
        id: id.clone(),
        text: id,
        value: doc,
    };
    emit(settings, &report)
}

/// `text` as a run's context: a JSON object. `origin` names where it came from in the error
/// (which carries the parser's line and column).
pub(crate) fn parse_context(text: &str, origin: &str) -> Result<Value, CliError> {
    if text.trim().is_empty() {
        return Err(CliError::User(format!(
            "{origin} is empty, but a context must be a JSON object (e.g. {{}} or {{\"name\": \"world\"}}); nothing was submitted"
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        CliError::User(format!(
            "{origin} is not valid JSON: {e}; nothing was submitted"
        ))
    })?;
    if value.is_object() {
        return Ok(value);
    }
    let kind = match &value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Err(CliError::User(format!(
        "{origin} holds {kind}, but a context must be a JSON object (e.g. {{\"name\": \"world\"}}); nothing was submitted"
    )))
}

fn set_paused(settings: &Settings, name: &str, paused: bool) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let verb = if paused { "pause" } else { "resume" };
    let doc = client.post_json(
        &tenant_path(settings, &format!("workflows/{}/{verb}", enc(name))),
        &json!({}),
    )?;
    let text = if paused {
        format!(
            "paused workflow '{name}' in tenant '{}': new runs (API, cron, triggers) are refused until 'cloacinactl workflow resume {name}'",
            settings.tenant
        )
    } else {
        format!("resumed workflow '{name}' in tenant '{}'", settings.tenant)
    };
    let report = Report {
        id: name.to_string(),
        text,
        value: doc,
    };
    emit(settings, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_must_be_a_json_object() {
        assert_eq!(
            parse_context(" {\"a\": [1, 2]} ", "f").expect("object"),
            json!({"a": [1, 2]})
        );
        let err = parse_context("{\n  \"a\": 1,\n}", "the --context file c.json").expect_err("bad");
        let msg = err.to_string();
        assert_eq!(err.exit_code(), 1);
        assert!(
            msg.starts_with("the --context file c.json is not valid JSON"),
            "{msg}"
        );
        assert!(msg.contains("line 3 column 1"), "{msg}");
        assert!(msg.contains("nothing was submitted"), "{msg}");
        let err = parse_context(" \n", "standard input").expect_err("empty");
        assert!(
            err.to_string().starts_with("standard input is empty"),
            "{err}"
        );
        let err = parse_context("[1]", "standard input").expect_err("array");
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string()
                .starts_with("standard input holds an array, but a context must be a JSON object"),
            "{err}"
        );
        assert!(parse_context("\"x\"", "f").is_err());
        assert!(parse_context("null", "f").is_err());
    }

    #[test]
    fn package_filter_is_a_substring_of_the_package_name() {
        let items = vec![
            json!({"workflow_name": "hello", "package_name": "hello-orders"}),
            json!({"workflow_name": "report", "package_name": "scheduled-reports"}),
            json!({"workflow_name": "loose", "package_name": null}),
        ];
        let names = |f: Option<&str>| -> Vec<String> {
            filter_by_package(items.clone(), f)
                .iter()
                .map(|w| field(w, "workflow_name"))
                .collect()
        };
        assert_eq!(names(None), ["hello", "report", "loose"]);
        assert_eq!(names(Some("orders")), ["hello"]);
        assert_eq!(names(Some("re")), ["report"]);
        assert!(names(Some("nope")).is_empty());
    }

    #[test]
    fn rules_and_schedules_read_as_text() {
        assert_eq!(rule_text(&json!({"rule": "always"})), "always");
        assert_eq!(
            rule_text(&json!({"rule": "all", "args": [
                {"rule": "task_success", "args": "a"},
                {"rule": "context_value", "args": {"key": "k", "op": "eq", "value": 1}}
            ]})),
            "all(task_success(a), context_value(k eq 1))"
        );
        assert_eq!(
            schedule_text(&json!({"cron_expression": "0 2 * * *", "timezone": "UTC"})),
            "0 2 * * * (UTC)"
        );
        assert_eq!(
            schedule_text(&json!({"poll_interval_ms": 5000})),
            "every 5s"
        );
        assert_eq!(
            schedule_text(&json!({"poll_interval_ms": 250})),
            "every 250ms"
        );
        assert_eq!(kv_lines(&[("subscribers", "0".into())]), "subscribers: 0\n");
        assert_eq!(indent("a\nb\n"), "  a\n  b\n");
    }

    #[test]
    fn the_inspect_view_lists_tasks_and_schedules() {
        let doc = json!({
            "id": "p1", "package_name": "hello-orders", "workflow_name": "orders",
            "version": "1.0.0", "description": null, "paused": false,
            "build_status": "success", "build_error": null,
            "task_graph": [
                {"id": "fetch", "dependencies": [], "trigger_rule": {"rule": "always"},
                 "retry": {"max_attempts": 1}, "timeout_ms": 120000},
                {"id": "ship", "dependencies": ["fetch", "price"],
                 "trigger_rule": {"rule": "always"}, "retry": {"max_attempts": 3}}
            ],
            "schedules": [],
            "workflows": ["orders"]
        });
        let text = inspect_text(&Settings::for_tests(), &doc);
        assert!(text.contains("workflow: orders\n"), "{text}");
        assert!(text.contains("package: hello-orders (p1)\n"), "{text}");
        assert!(text.contains("build_status: success\n"), "{text}");
        assert!(text.contains("build_error: -\n"), "{text}");
        assert!(text.contains("TASK"), "{text}");
        assert!(text.contains("fetch, price"), "{text}");
        assert!(text.contains("schedules:\n  none"), "{text}");
    }
}
