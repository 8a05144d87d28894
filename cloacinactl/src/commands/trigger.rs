//! `cloacinactl trigger list|inspect`: a tenant's cron schedules and custom-poll triggers,
//! through the server's `/v1/tenants/<tenant>/triggers` routes.

use serde_json::Value;

use crate::api::{self, enc, tenant_path};
use crate::cli::TriggerCommand;
use crate::commands::workflow::{field, indent, kv_lines, schedule_row, schedule_text};
use crate::error::CliError;
use crate::output::{self, Report, emit};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: &TriggerCommand) -> Result<(), CliError> {
    match command {
        TriggerCommand::List(_) => list(settings),
        TriggerCommand::Inspect(args) => inspect(settings, &args.target),
    }
}

fn list(settings: &Settings) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let (doc, items) = crate::api::list_all(&client, &tenant_path(settings, "triggers"))?;
    let rows: Vec<Value> = items.iter().map(schedule_row).collect();
    let mut report = Report::list(
        settings,
        doc,
        &rows,
        &[
            "name",
            "type",
            "workflow",
            "schedule",
            "enabled",
            "paused",
            "next_run_at",
            "last_run_at",
        ],
        &format!(
            "no cron schedules or triggers in tenant '{}'",
            settings.tenant
        ),
    );
    // What `trigger inspect` takes.
    report.id = items
        .iter()
        .map(|s| field(s, "name"))
        .collect::<Vec<_>>()
        .join("\n");
    emit(settings, &report)
}

fn inspect(settings: &Settings, name: &str) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let doc = client.get_json(&tenant_path(settings, &format!("triggers/{}", enc(name))))?;
    let schedule = doc.get("schedule").cloned().unwrap_or(Value::Null);
    let report = Report {
        id: field(&schedule, "name"),
        text: inspect_text(settings, &doc),
        value: doc,
    };
    emit(settings, &report)
}

/// The table view: the schedule's fields, then its workflow's recent executions.
fn inspect_text(settings: &Settings, doc: &Value) -> String {
    let s = doc.get("schedule").cloned().unwrap_or(Value::Null);
    let mut out = kv_lines(&[
        ("name", field(&s, "name")),
        ("id", field(&s, "id")),
        ("type", field(&s, "schedule_type")),
        ("workflow", field(&s, "workflow_name")),
        ("schedule", schedule_text(&s)),
        ("enabled", field(&s, "enabled")),
        ("paused", field(&s, "paused")),
        ("next_run_at", field(&s, "next_run_at")),
        ("last_run_at", field(&s, "last_run_at")),
        ("package_id", field(&s, "package_id")),
    ]);
    let recent: Vec<Value> = doc
        .get("recent_executions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.push_str("recent_executions:");
    if recent.is_empty() {
        out.push_str(" none\n");
    } else {
        out.push('\n');
        out.push_str(&indent(&output::table(
            settings,
            &recent,
            &["id", "status", "started_at", "completed_at"],
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_inspect_view_shows_the_schedule_and_recent_runs() {
        let doc = json!({
            "tenant_id": "public",
            "schedule": {
                "id": "5d0c", "name": "nightly_report", "schedule_type": "cron",
                "workflow_name": "report", "enabled": true, "cron_expression": "0 2 * * *",
                "timezone": "UTC", "trigger_name": null, "poll_interval_ms": null,
                "next_run_at": "2024-05-02T02:00:00.000Z", "last_run_at": null,
                "paused": false, "package_id": "p1"
            },
            "recent_executions": [
                {"id": "e1", "status": "Completed", "started_at": "a", "completed_at": "b"}
            ]
        });
        let text = inspect_text(&Settings::for_tests(), &doc);
        assert!(text.contains("name: nightly_report\n"), "{text}");
        assert!(text.contains("schedule: 0 2 * * * (UTC)\n"), "{text}");
        assert!(text.contains("last_run_at: -\n"), "{text}");
        assert!(text.contains("recent_executions:\n  ID"), "{text}");
        assert!(text.contains("e1  Completed"), "{text}");
        let empty = json!({"schedule": {"name": "inbox_watch", "poll_interval_ms": 1000}, "recent_executions": []});
        let text = inspect_text(&Settings::for_tests(), &empty);
        assert!(text.contains("schedule: every 1s\n"), "{text}");
        assert!(text.contains("recent_executions: none"), "{text}");
    }
}
