//! `cloacinactl key create|list|revoke`: API keys through `/v1/auth/keys` (global admins, the
//! `public` tenant) or `/v1/tenants/<tenant>/keys` when `--tenant` names another tenant (that
//! tenant's admins). Spec: CLI reference, "key"; wire contract, "Keys and tenants".

use cloacina::tenant::is_admin_tenant;
use serde_json::{Value, json};

use super::tenant::text_of;
use crate::api::{self, enc};
use crate::cli::{ForceArgs, KeyCommand, KeyCreateArgs};
use crate::error::CliError;
use crate::http::Client;
use crate::output::{Report, emit, fields};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: &KeyCommand) -> Result<(), CliError> {
    if let KeyCommand::Revoke(args) = command {
        check_id(&args.target)?;
    }
    let client = api::client(settings)?;
    match command {
        KeyCommand::Create(args) => create(settings, &client, args),
        KeyCommand::List(_) => list(settings, &client),
        KeyCommand::Revoke(args) => revoke(settings, &client, args),
    }
}

/// The keys route for `--tenant`: the global one for `public`, else the tenant's.
fn keys_path(settings: &Settings) -> String {
    if is_admin_tenant(&settings.tenant) {
        "/v1/auth/keys".to_string()
    } else {
        api::tenant_path(settings, "keys")
    }
}

/// A key id is a UUID; anything else is a typo, refused before asking or sending.
fn check_id(id: &str) -> Result<(), CliError> {
    let groups: Vec<&str> = id.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = groups.len() == shape.len()
        && groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(CliError::User(format!(
            "'{id}' is not a key id (a UUID such as 0b8e0e65-4f3c-4a8a-9d2b-0f6a1c2b3d4e); 'cloacinactl key list' shows the ids"
        )))
    }
}

/// `key create NAME [--role admin|write|read]`: the plaintext key is printed this once, with a
/// warning on stderr that it cannot be retrieved later. `-o id` prints the key's id; json and
/// yaml print the server's document (which holds the plaintext key).
fn create(settings: &Settings, client: &Client, args: &KeyCreateArgs) -> Result<(), CliError> {
    let body = json!({"name": args.name, "role": args.role.name()});
    let created = client.post_json(&keys_path(settings), &body)?;
    let id = text_of(&created, "id");
    let key = text_of(&created, "key");
    eprintln!(
        "warning: this is the only time the key is shown: it cannot be retrieved later. Save it now (a password manager, a secret store, or a file with mode 0600 used as --api-key file:PATH)."
    );
    let text = format!(
        "created API key '{}'\n{}\nkey: {key}",
        text_of(&created, "name"),
        fields(&[
            ("id", id.clone()),
            ("role", text_of(&created, "permissions")),
            ("tenant", text_of(&created, "tenant_id")),
        ])
        .trim_end()
    );
    emit(
        settings,
        &Report {
            id,
            value: created,
            text,
        },
    )
}

/// `key list`: metadata only (the server never returns a hash or a plaintext key).
fn list(settings: &Settings, client: &Client) -> Result<(), CliError> {
    let (doc, items) = crate::api::list_all(client, &keys_path(settings))?;
    let rows: Vec<Value> = items
        .iter()
        .map(|k| {
            json!({
                "id": k.get("id"),
                "name": k.get("name"),
                "role": k.get("permissions"),
                "tenant": k.get("tenant_id").filter(|t| !t.is_null()).cloned().unwrap_or(json!("(global)")),
                "admin": k.get("is_admin"),
                "created_at": k.get("created_at"),
                "revoked": k.get("revoked"),
            })
        })
        .collect();
    emit(
        settings,
        &Report::list(
            settings,
            doc,
            &rows,
            &[
                "id",
                "name",
                "role",
                "tenant",
                "admin",
                "created_at",
                "revoked",
            ],
            "no keys",
        ),
    )
}

/// `key revoke ID [--force]`: asks first (refused without a terminal unless --force).
fn revoke(settings: &Settings, client: &Client, args: &ForceArgs) -> Result<(), CliError> {
    let id = &args.target;
    api::confirm(
        args.force,
        &format!("revoke API key {id} (every request with it is refused from now on)"),
    )?;
    let revoked = client.delete_json(&format!("{}/{}", keys_path(settings), enc(id)))?;
    emit(
        settings,
        &Report {
            id: id.clone(),
            value: revoked,
            text: format!("revoked API key {id}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_uuids() {
        assert!(check_id("0b8e0e65-4f3c-4a8a-9d2b-0f6a1c2b3d4e").is_ok());
        for bad in ["", "x", "0b8e0e65-4f3c-4a8a-9d2b-0f6a1c2b3d4", "../keys"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
