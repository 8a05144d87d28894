//! API keys: created (the plaintext shown once), listed (never a hash or plaintext), revoked
//! (refused on every replica from the next request), each written to the audit log. Global
//! routes are for global admins; `/v1/tenants/{tenant}/keys` for that tenant's admins.

use axum::extract::State;
use axum::http::StatusCode;
use cloacina::auth::{self, Role};
use cloacina::store::{ApiKeyRecord, NewApiKey, NewAuditEntry};
use cloacina::tenant::ADMIN_TENANT;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Json, List, Page, Path, Query, rfc3339};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct KeyCreate {
    pub name: String,
    /// `admin`, `write` or `read` (default `read`).
    #[schema(value_type = Option<String>)]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: String,
    /// The role: `admin`, `write` or `read`.
    pub permissions: String,
    pub tenant_id: Option<String>,
    pub is_admin: bool,
    pub created_at: String,
    pub revoked: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: Uuid,
    pub name: String,
    /// The plaintext key, shown this once.
    pub key: String,
    pub permissions: String,
    pub tenant_id: Option<String>,
    pub is_admin: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRevoked {
    pub status: String,
    pub id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub tenant_id: Option<String>,
    pub role: String,
    pub is_admin: bool,
    pub name: String,
}

fn info(k: &ApiKeyRecord) -> KeyInfo {
    KeyInfo {
        id: k.id,
        name: k.name.clone(),
        permissions: k.role.as_str().to_string(),
        tenant_id: k.tenant_id.clone(),
        is_admin: k.is_admin,
        created_at: rfc3339(k.created_at),
        revoked: k.revoked_at.is_some(),
    }
}

const MAX_KEY_NAME: usize = 128;

async fn create(
    state: &SharedState,
    caller: &Caller,
    tenant: &str,
    body: KeyCreate,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_KEY_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_key_name",
            format!("a key name must be 1-{MAX_KEY_NAME} printable characters"),
        ));
    }
    let role = match body.role.as_deref() {
        None => Role::Read,
        Some(r) => Role::parse(r)?,
    };
    state.tenants.get(tenant)?;
    let generated = auth::key_generate();
    let record = state
        .control
        .api_key_create(NewApiKey {
            name: name.to_string(),
            hash: generated.hash,
            role,
            tenant_id: Some(tenant.to_string()),
            is_admin: role == Role::Admin,
        })
        .await?;
    state
        .control
        .audit_append(NewAuditEntry {
            actor: caller.actor(),
            action: "key.create".to_string(),
            target: record.id.to_string(),
            detail: json!({"name": record.name, "role": role.as_str(), "tenant": tenant}),
        })
        .await?;
    tracing::info!(key_id = %record.id, tenant, role = role.as_str(), "API key created");
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            id: record.id,
            name: record.name,
            key: generated.plaintext,
            permissions: role.as_str().to_string(),
            tenant_id: record.tenant_id,
            is_admin: record.is_admin,
            created_at: rfc3339(record.created_at),
        }),
    ))
}

async fn list(
    state: &SharedState,
    tenant: Option<&str>,
    page: &Page,
) -> ApiResult<(Vec<KeyInfo>, usize)> {
    let keys: Vec<KeyInfo> = state
        .control
        .api_key_list(tenant)
        .await?
        .iter()
        .map(info)
        .collect();
    page.slice(&keys)
}

async fn revoke(
    state: &SharedState,
    caller: &Caller,
    id: Uuid,
    tenant: Option<&str>,
) -> ApiResult<Json<KeyRevoked>> {
    let revoked = state.control.api_key_revoke(id, tenant).await?;
    let Some(record) = revoked else {
        return Err(ApiError::not_found(
            "key_not_found",
            format!("no API key has id {id}; 'cloacinactl key list' shows the keys"),
        ));
    };
    state
        .control
        .audit_append(NewAuditEntry {
            actor: caller.actor(),
            action: "key.revoke".to_string(),
            target: id.to_string(),
            detail: json!({"name": record.name, "tenant": record.tenant_id}),
        })
        .await?;
    tracing::info!(key_id = %id, "API key revoked");
    Ok(Json(KeyRevoked {
        status: "revoked".to_string(),
        id,
    }))
}

/// Creates a key in the `public` tenant (global admins only). The plaintext is shown once.
#[utoipa::path(post, path = "/v1/auth/keys", tag = "keys", security(("api_key" = [])),
    request_body = KeyCreate,
    responses((status = 201, body = KeyCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn key_create(
    State(state): State<SharedState>,
    caller: Caller,
    Json(body): Json<KeyCreate>,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    caller.require_global_admin()?;
    create(&state, &caller, ADMIN_TENANT, body).await
}

/// Every key (global admins only): metadata, never a hash or plaintext.
#[utoipa::path(get, path = "/v1/auth/keys", tag = "keys", security(("api_key" = [])),
    params(Page),
    responses((status = 200, body = List<KeyInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn key_list(
    State(state): State<SharedState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<KeyInfo>>> {
    caller.require_global_admin()?;
    let (items, total) = list(&state, None, &page).await?;
    Ok(Json(List::of(items, total)))
}

/// Revokes a key (global admins only).
#[utoipa::path(delete, path = "/v1/auth/keys/{id}", tag = "keys", security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "The key's id")),
    responses((status = 200, body = KeyRevoked), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn key_revoke(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<KeyRevoked>> {
    caller.require_global_admin()?;
    refuse_last_global_admin(&state, id).await?;
    revoke(&state, &caller, id, None).await
}

/// Keys made through the API are never global, and a new bootstrap key is made only while no
/// key is live: revoking the last live global admin key would leave nobody able to manage
/// tenants or keys, for good.
async fn refuse_last_global_admin(state: &SharedState, id: Uuid) -> ApiResult<()> {
    let keys = state.control.api_key_list(None).await?;
    let mut live_global = keys
        .iter()
        .filter(|k| k.is_admin && k.tenant_id.is_none() && k.revoked_at.is_none());
    let only = match (live_global.next(), live_global.next()) {
        (Some(k), None) => k.id == id,
        _ => false,
    };
    if only {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_admin_key",
            format!(
                "key {id} is the last global admin key; revoking it would leave nobody able to manage tenants or keys"
            ),
        ));
    }
    Ok(())
}

/// Creates a key in `tenant` (that tenant's admins).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys", tag = "keys", security(("api_key" = [])),
    params(("tenant" = String, Path)),
    request_body = KeyCreate,
    responses((status = 201, body = KeyCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn tenant_key_create(
    State(state): State<SharedState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<KeyCreate>,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    caller.require_in(&tenant, Role::Admin)?;
    create(&state, &caller, &tenant, body).await
}

/// The keys of `tenant` (that tenant's admins).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys", tag = "keys", security(("api_key" = [])),
    params(("tenant" = String, Path), Page),
    responses((status = 200, body = List<KeyInfo>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn tenant_key_list(
    State(state): State<SharedState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<KeyInfo>>> {
    caller.require_in(&tenant, Role::Admin)?;
    state.tenants.get(&tenant)?;
    let (items, total) = list(&state, Some(&tenant), &page).await?;
    Ok(Json(List::in_tenant(items, total, &tenant)))
}

/// Revokes a key of `tenant` (that tenant's admins); another tenant's key is a 404.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/keys/{id}", tag = "keys", security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = KeyRevoked), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn tenant_key_revoke(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, Uuid)>,
) -> ApiResult<Json<KeyRevoked>> {
    caller.require_in(&tenant, Role::Admin)?;
    revoke(&state, &caller, id, Some(&tenant)).await
}

/// The calling key.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "keys", security(("api_key" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        tenant_id: caller.key.tenant_id.clone(),
        role: caller.key.role.as_str().to_string(),
        is_admin: caller.key.is_admin,
        name: caller.key.name.clone(),
    })
}
