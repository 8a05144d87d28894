//! `cloacinactl tenant create|list|delete` (global admin keys): the server's `/v1/tenants`
//! routes (spec: CLI reference, "tenant"; wire contract, "Keys and tenants").

use serde_json::{Value, json};

use crate::api::{self, enc};
use crate::cli::{ForceArgs, TenantCommand, TenantCreateArgs};
use crate::error::CliError;
use crate::http::Client;
use crate::output::{Report, emit, fields};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: &TenantCommand) -> Result<(), CliError> {
    let client = api::client(settings)?;
    match command {
        TenantCommand::Create(args) => create(settings, &client, args),
        TenantCommand::List(_) => list(settings, &client),
        TenantCommand::Delete(args) => delete(settings, &client, args),
    }
}

/// A member as text, `-` when missing or null.
pub(crate) fn text_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `tenant create NAME [--description TEXT]`: POST /v1/tenants.
fn create(settings: &Settings, client: &Client, args: &TenantCreateArgs) -> Result<(), CliError> {
    let mut body = json!({"name": args.name});
    if let Some(d) = &args.description {
        body["description"] = json!(d);
    }
    let created = client.post_json("/v1/tenants", &body)?;
    let name = created
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&args.name)
        .to_string();
    let mut text = format!("created tenant '{name}'");
    if let Some(d) = created.get("description").and_then(Value::as_str) {
        text.push_str(&format!(" ({d})"));
    }
    emit(
        settings,
        &Report {
            id: name,
            value: created,
            text,
        },
    )
}

/// `tenant list`: GET /v1/tenants (every page).
fn list(settings: &Settings, client: &Client) -> Result<(), CliError> {
    let (doc, items) = crate::api::list_all(client, "/v1/tenants")?;
    emit(
        settings,
        &Report::list(
            settings,
            doc,
            &items,
            &["name", "description", "created_at"],
            "no tenants",
        ),
    )
}

/// `tenant delete NAME [--force]`: asks first (refused without a terminal unless --force),
/// then DELETE /v1/tenants/NAME; prints what the server reports it removed.
fn delete(settings: &Settings, client: &Client, args: &ForceArgs) -> Result<(), CliError> {
    let name = &args.target;
    api::confirm(
        args.force,
        &format!(
            "delete tenant '{name}': revoke its keys, stop its runs and drop all its packages, executions and data"
        ),
    )?;
    let removed = client.delete_json(&format!("/v1/tenants/{}", enc(name)))?;
    let shown = removed
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    let mut rows: Vec<(&str, String)> = Vec::new();
    for (key, label) in [
        ("revoked_keys", "revoked keys"),
        ("deleted_packages", "deleted packages"),
        ("drained_tasks", "drained tasks"),
        ("released_tasks", "released tasks"),
    ] {
        if removed.get(key).is_some() {
            rows.push((label, text_of(&removed, key)));
        }
    }
    let text = format!("removed tenant '{shown}'\n{}", fields(&rows));
    emit(
        settings,
        &Report {
            id: shown,
            value: removed,
            text,
        },
    )
}
