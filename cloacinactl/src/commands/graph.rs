//! `cloacinactl graph list|status|accumulators`: loaded computation graphs, their reactors
//! and accumulators, through the server's `/v1/health/graphs` and `/v1/health/accumulators`
//! routes. The `--tenant` is sent as the `tenant` query, so a global admin key sees that
//! tenant's graphs only (a tenant's own key always sees its own).

use serde_json::{Value, json};

use crate::api::{self, enc, query};
use crate::cli::GraphCommand;
use crate::commands::workflow::{field, indent, kv_lines};
use crate::error::CliError;
use crate::output::{self, Report, emit};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: &GraphCommand) -> Result<(), CliError> {
    match command {
        GraphCommand::List(_) => list(settings),
        GraphCommand::Status(args) => status(settings, &args.target),
        GraphCommand::Accumulators(_) => accumulators(settings),
    }
}

/// `?tenant=<tenant>` for the `--tenant` in force.
fn tenant_query(settings: &Settings) -> String {
    query(&[("tenant", Some(settings.tenant.clone()))])
}

/// The `name` of each row, one per line (what `graph status` takes).
fn names(items: &[Value]) -> String {
    items
        .iter()
        .map(|g| field(g, "name"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn list(settings: &Settings) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let (doc, items) = crate::api::list_all(
        &client,
        &format!("/v1/health/graphs{}", tenant_query(settings)),
    )?;
    let rows: Vec<Value> = items.iter().map(graph_row).collect();
    let mut report = Report::list(
        settings,
        doc,
        &rows,
        &[
            "name",
            "health",
            "reactor",
            "paused",
            "accumulators",
            "source_package",
            "fires",
            "last_fired_at",
            "last_error",
        ],
        &format!(
            "no computation graphs are loaded in tenant '{}'",
            settings.tenant
        ),
    );
    report.id = names(&items);
    emit(settings, &report)
}

/// A graph row with its firing time readable.
fn graph_row(g: &Value) -> Value {
    let mut row = g.clone();
    if let Value::Object(m) = &mut row {
        m.insert("last_fired_at".to_string(), json!(time(g, "last_fired_at")));
    }
    row
}

fn status(settings: &Settings, name: &str) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let doc = client.get_json(&format!(
        "/v1/health/graphs/{}{}",
        enc(name),
        tenant_query(settings)
    ))?;
    let report = Report {
        id: field(&doc, "name"),
        text: status_text(settings, &doc),
        value: doc,
    };
    emit(settings, &report)
}

/// The table view of one graph (or reactor): its fields as `key: value` lines, including
/// `subscribers: N` (what the bound-subscriber guard counts) followed by their names, then
/// its reactor's accumulators.
fn status_text(settings: &Settings, doc: &Value) -> String {
    let reactor = match (
        doc.get("reactor").and_then(Value::as_str),
        doc.get("reactor_tenant").and_then(Value::as_str),
    ) {
        (Some(r), Some(t)) if Some(t) != doc.get("tenant").and_then(Value::as_str) => {
            format!("{r} (tenant {t})")
        }
        (Some(r), _) => r.to_string(),
        (None, _) => "- (no reactor: invoked directly)".to_string(),
    };
    let package = format!(
        "{} {} ({})",
        field(doc, "package"),
        field(doc, "version"),
        field(doc, "package_id")
    );
    let subscribers: Vec<String> = doc
        .get("subscriber_names")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|s| output::cell(Some(s))).collect())
        .unwrap_or_default();
    let count = doc
        .get("subscribers")
        .and_then(Value::as_u64)
        .unwrap_or(subscribers.len() as u64);
    let bound: Vec<String> = doc
        .get("bound_graphs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|s| output::cell(Some(s))).collect())
        .unwrap_or_default();
    let mut out = kv_lines(&[
        ("name", field(doc, "name")),
        ("tenant", field(doc, "tenant")),
        ("package", package),
        ("health", field(doc, "health")),
        ("reactor", reactor),
        ("paused", field(doc, "paused")),
        ("fires", field(doc, "fires")),
        ("last_fired_at", time(doc, "last_fired_at")),
        ("last_error", field(doc, "last_error")),
        (
            "bound_graphs",
            if bound.is_empty() {
                "-".to_string()
            } else {
                bound.join(", ")
            },
        ),
        ("subscribers", count.to_string()),
    ]);
    for s in &subscribers {
        out.push_str(&format!("  - {s}\n"));
    }
    let accumulators: Vec<Value> = doc
        .get("accumulators")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(accumulator_row).collect())
        .unwrap_or_default();
    out.push_str("accumulators:");
    if accumulators.is_empty() {
        out.push_str(" none\n");
    } else {
        out.push('\n');
        out.push_str(&indent(&output::table(
            settings,
            &accumulators,
            &["name", "kind", "status", "depth", "events", "last_event_at"],
        )));
    }
    out
}

fn accumulators(settings: &Settings) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let (doc, items) = crate::api::list_all(
        &client,
        &format!("/v1/health/accumulators{}", tenant_query(settings)),
    )?;
    let rows: Vec<Value> = items.iter().map(accumulator_row).collect();
    let mut report = Report::list(
        settings,
        doc,
        &rows,
        &[
            "reactor",
            "name",
            "kind",
            "status",
            "depth",
            "events",
            "last_event_at",
        ],
        &format!("no accumulators in tenant '{}'", settings.tenant),
    );
    report.id = names(&items);
    emit(settings, &report)
}

/// An accumulator row: its kind with its parameters, `pending`/`idle`, a readable time.
fn accumulator_row(a: &Value) -> Value {
    let status = match a.get("status").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None if a.get("pending").and_then(Value::as_bool) == Some(true) => "pending".to_string(),
        None => "idle".to_string(),
    };
    let mut row = a.clone();
    if let Value::Object(m) = &mut row {
        m.insert("kind".to_string(), json!(kind_text(a)));
        m.insert("status".to_string(), json!(status));
        m.insert("last_event_at".to_string(), json!(time(a, "last_event_at")));
    }
    row
}

/// `passthrough`, `batch (max 10, flush 500ms)`, `state (capacity 5)`.
fn kind_text(a: &Value) -> String {
    let kind = field(a, "kind");
    match kind.as_str() {
        "batch" => format!(
            "batch (max {}, flush {}ms)",
            field(a, "max_items"),
            field(a, "flush_interval_ms")
        ),
        "state" => format!("state (capacity {})", field(a, "capacity")),
        _ => kind,
    }
}

/// A member holding Unix milliseconds (or a string) as RFC 3339 UTC; `-` when absent.
fn time(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::Number(n)) => n
            .as_i64()
            .map(output::rfc3339_ms)
            .unwrap_or_else(|| n.to_string()),
        other => output::cell(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_view_counts_subscribers() {
        let doc = json!({
            "name": "price_reactor", "tenant": "pub", "package": "price-publisher",
            "package_id": "p1", "version": "2.0.0", "reactor": "price_reactor",
            "reactor_tenant": "pub", "bound": false, "reactor_paused": false, "paused": false,
            "health": "healthy", "fires": 2, "last_fired_at": 0, "last_error": null,
            "subscribers": 1, "subscriber_names": ["sub/price_alerts"],
            "bound_graphs": ["price_summary", "sub/price_alerts"],
            "accumulators": [
                {"tenant": "pub", "reactor": "price_reactor", "name": "spot", "kind": "batch",
                 "max_items": 10, "flush_interval_ms": 500, "depth": 0, "pending": false,
                 "events": 3, "last_event": null, "last_event_at": null}
            ]
        });
        let text = status_text(&Settings::for_tests(), &doc);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"subscribers: 1"), "{text}");
        assert!(lines.contains(&"  - sub/price_alerts"), "{text}");
        assert!(lines.contains(&"reactor: price_reactor"), "{text}");
        assert!(
            lines.contains(&"last_fired_at: 1970-01-01T00:00:00.000Z"),
            "{text}"
        );
        assert!(text.contains("batch (max 10, flush 500ms)"), "{text}");
        let none =
            json!({"name": "g", "subscribers": 0, "subscriber_names": [], "accumulators": []});
        let text = status_text(&Settings::for_tests(), &none);
        assert!(text.lines().any(|l| l == "subscribers: 0"), "{text}");
        assert!(text.contains("accumulators: none"), "{text}");
        assert_eq!(
            kind_text(&json!({"kind": "state", "capacity": 5})),
            "state (capacity 5)"
        );
        assert_eq!(kind_text(&json!({"kind": "passthrough"})), "passthrough");
    }
}
