//! Tenants (global admins only). Create validates the name, creates and migrates the
//! tenant's store and starts its runtime at once; delete revokes its keys, stops its
//! schedules and runs, evicts its connections and drops its schema or file, answering with a
//! failure if any step failed.

use axum::extract::State;
use axum::http::StatusCode;
use cloacina::store::NewAuditEntry;
use cloacina::tenant::{self, ADMIN_TENANT};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{Json, List, Page, Path, Query, rfc3339};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct TenantCreate {
    /// `^[A-Za-z_][A-Za-z0-9_-]{0,62}$`; `public` and `pg_*` are reserved.
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantInfo {
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantRemoved {
    pub status: String,
    pub name: String,
    pub revoked_keys: usize,
    pub deleted_packages: usize,
    /// Tasks that finished during the stop, and tasks whose leases were handed back.
    pub drained_tasks: usize,
    pub released_tasks: usize,
}

/// Creates a tenant and starts its runtime.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", security(("api_key" = [])),
    request_body = TenantCreate,
    responses((status = 201, body = TenantCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn tenant_create(
    State(state): State<SharedState>,
    caller: Caller,
    Json(body): Json<TenantCreate>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    caller.require_global_admin()?;
    tenant::tenant_name_check(&body.name)?;
    let record = state
        .control
        .tenant_create(&body.name, body.description.as_deref())
        .await?;
    if let Err(e) = state.tenants.open(&record.name).await {
        // Nothing half-made is left: the row goes, the next create starts afresh.
        let _ = state.control.tenant_delete(&record.name).await;
        return Err(e);
    }
    state
        .control
        .audit_append(NewAuditEntry {
            actor: caller.actor(),
            action: "tenant.create".to_string(),
            target: record.name.clone(),
            detail: json!({"description": record.description}),
        })
        .await?;
    // Other replicas open the tenant's runtime within a second.
    state.control.package_generation_bump().await?;
    tracing::info!(tenant = %record.name, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            name: record.name,
            description: record.description,
        }),
    ))
}

/// Every tenant, `public` included.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("api_key" = [])),
    params(Page),
    responses((status = 200, body = List<TenantInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn tenant_list(
    State(state): State<SharedState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<TenantInfo>>> {
    caller.require_global_admin()?;
    let mut items = vec![TenantInfo {
        name: ADMIN_TENANT.to_string(),
        description: Some("the admin tenant".to_string()),
        created_at: rfc3339(0),
    }];
    items.extend(
        state
            .control
            .tenant_list()
            .await?
            .into_iter()
            .map(|t| TenantInfo {
                name: t.name,
                description: t.description,
                created_at: rfc3339(t.created_at),
            }),
    );
    let (items, total) = page.slice(&items)?;
    Ok(Json(List::of(items, total)))
}

/// Removes a tenant and everything in it.
#[utoipa::path(delete, path = "/v1/tenants/{name}", tag = "tenants", security(("api_key" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = TenantRemoved), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub async fn tenant_delete(
    State(state): State<SharedState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TenantRemoved>> {
    caller.require_global_admin()?;
    if tenant::is_admin_tenant(&name) {
        return Err(ApiError::bad_request(
            "reserved_tenant_name",
            "the 'public' tenant is the admin tenant and cannot be deleted",
        ));
    }
    // Names are unique in any case; every step below uses the name as created, which keys,
    // package rows and the runtimes carry (a delete of `ACME` must remove `Acme` whole).
    let Some(record) = state.control.tenant_get(&name).await? else {
        return Err(ApiError::not_found(
            "tenant_not_found",
            format!("tenant '{name}' does not exist; 'cloacinactl tenant list' shows the tenants"),
        ));
    };
    let name = record.name;
    // Keys first: from now on nobody can act in the tenant.
    let revoked_keys = state.control.api_key_revoke_tenant(&name).await?;
    let removal = state
        .tenants
        .remove(&name, state.config.shutdown_timeout)
        .await?;
    let deleted_packages = state.control.package_delete_tenant(&name).await?;
    state.control.workflow_pause_delete_tenant(&name).await?;
    let mut failures = removal.failures;
    if failures.is_empty()
        && let Err(e) = state.control.tenant_delete(&name).await
    {
        failures.push(format!("deleting its row: {e}"));
    }
    // Other replicas stop the tenant's runtime within a second.
    state.control.package_generation_bump().await?;
    state
        .control
        .audit_append(NewAuditEntry {
            actor: caller.actor(),
            action: "tenant.delete".to_string(),
            target: name.clone(),
            detail: json!({"revoked_keys": revoked_keys, "deleted_packages": deleted_packages, "failures": failures}),
        })
        .await?;
    if !failures.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tenant_step_failed",
            format!(
                "tenant '{name}' was not fully removed: {}; its keys are revoked; rerun the delete to finish",
                failures.join("; ")
            ),
        ));
    }
    tracing::info!(tenant = %name, revoked_keys, deleted_packages, "tenant removed");
    Ok(Json(TenantRemoved {
        status: "removed".to_string(),
        name,
        revoked_keys,
        deleted_packages,
        drained_tasks: removal.drained,
        released_tasks: removal.released,
    }))
}
