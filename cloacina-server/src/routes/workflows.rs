//! Workflows of a tenant: list, inspect (task graph and schedules), run, pause and resume.

use axum::extract::State;
use axum::http::StatusCode;
use cloacina::auth::Role;
use cloacina::store::NewAuditEntry;
use cloacina::workflow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::tenant_for;
use super::{Json, List, Page, Path, Query};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use crate::tenants::Tenant;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowSummary {
    /// The package id (absent for a workflow not from a package).
    pub id: Option<String>,
    pub package_name: Option<String>,
    pub workflow_name: String,
    pub version: String,
    pub description: Option<String>,
    /// Task ids, in declared order.
    pub tasks: Vec<String>,
    pub created_at: Option<String>,
    pub paused: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowDetail {
    /// The package id.
    pub id: Option<String>,
    pub package_name: Option<String>,
    pub workflow_name: String,
    pub version: String,
    pub description: Option<String>,
    pub paused: bool,
    /// `pending`, `building`, `failed` or `success`.
    pub build_status: String,
    pub build_error: Option<String>,
    /// Each task with `id`, `dependencies`, `trigger_rule`, retry policy and timeout.
    #[schema(value_type = Vec<Object>)]
    pub task_graph: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub schedules: Vec<Value>,
    /// The package's other workflows (when `{name}` was a package id).
    pub workflows: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ExecuteRequest {
    /// The run's input context: a JSON object (default `{}`).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteAccepted {
    pub execution_id: Uuid,
    pub workflow_name: String,
    pub tenant_id: String,
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PauseState {
    pub tenant_id: String,
    pub name: String,
    pub paused: bool,
}

fn summaries(tenant: &Tenant) -> Vec<WorkflowSummary> {
    let runner = tenant.host.runner();
    let reconciler = tenant.host.reconciler();
    runner
        .catalog()
        .into_iter()
        .filter_map(|entry| {
            let wf = runner.workflow(&entry.name)?;
            let package = entry
                .package_id
                .as_deref()
                .and_then(|id| reconciler.status(id));
            Some(WorkflowSummary {
                id: entry.package_id.clone(),
                package_name: package.as_ref().and_then(|p| p.name.clone()),
                workflow_name: entry.name.clone(),
                version: package
                    .as_ref()
                    .and_then(|p| p.version.clone())
                    .unwrap_or(entry.version.clone()),
                description: wf.description_text().map(str::to_string),
                tasks: wf.tasks().map(|t| t.spec().id.clone()).collect(),
                created_at: None,
                paused: runner.workflow_paused(&entry.name),
            })
        })
        .collect()
}

/// The workflows served in `tenant`.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/workflows", tag = "workflows", security(("api_key" = [])),
    params(("tenant" = String, Path), Page),
    responses((status = 200, body = List<WorkflowSummary>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn workflow_list(
    State(state): State<SharedState>,
    caller: Caller,
    Path(tenant_name): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<WorkflowSummary>>> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Read)?;
    let mut all = summaries(&tenant);
    all.sort_by(|a, b| a.workflow_name.cmp(&b.workflow_name));
    let (items, total) = page.slice(&all)?;
    Ok(Json(List::in_tenant(items, total, &tenant_name)))
}

/// One workflow (or package, by id) with its task graph, schedules and build state.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/workflows/{name}", tag = "workflows", security(("api_key" = [])),
    params(("tenant" = String, Path), ("name" = String, Path, description = "A workflow name or a package id")),
    responses((status = 200, body = WorkflowDetail), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn workflow_get(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, name)): Path<(String, String)>,
) -> ApiResult<Json<WorkflowDetail>> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Read)?;
    let runner = tenant.host.runner();
    // A package id: its row (it may be pending a build and serve nothing yet).
    if let Ok(id) = Uuid::parse_str(&name)
        && let Some(row) = state.control.package_get(id).await?
        && row.tenant == tenant_name
    {
        let info = super::packages::package_info(&state, &row);
        let served: Vec<_> = runner
            .catalog()
            .into_iter()
            .filter(|e| e.package_id.as_deref() == Some(&name))
            .collect();
        let first = served.first().and_then(|e| runner.workflow(&e.name));
        return Ok(Json(WorkflowDetail {
            id: Some(name.clone()),
            package_name: Some(row.name.clone()),
            workflow_name: first
                .as_ref()
                .map(|w| w.name().to_string())
                .unwrap_or_default(),
            version: row.version.clone(),
            description: first
                .as_ref()
                .and_then(|w| w.description_text().map(str::to_string)),
            paused: first
                .as_ref()
                .is_some_and(|w| runner.workflow_paused(w.name())),
            build_status: info.build_status,
            build_error: info.build_error,
            task_graph: first.as_ref().map(|w| task_graph(w)).unwrap_or_default(),
            schedules: schedules(&tenant, first.as_ref().map(|w| w.name()).unwrap_or("")).await?,
            workflows: served.into_iter().map(|e| e.name).collect(),
        }));
    }
    let wf = runner
        .workflow(&name)
        .ok_or_else(|| not_found(&name, &tenant_name))?;
    let entry = runner.catalog().into_iter().find(|e| e.name == name);
    let package_id = entry.and_then(|e| e.package_id);
    let status = package_id
        .as_deref()
        .and_then(|id| tenant.host.reconciler().status(id));
    let row = match package_id
        .as_deref()
        .and_then(|id| Uuid::parse_str(id).ok())
    {
        Some(id) => state.control.package_get(id).await?,
        None => None,
    };
    Ok(Json(WorkflowDetail {
        id: package_id,
        package_name: status.as_ref().and_then(|s| s.name.clone()),
        workflow_name: wf.name().to_string(),
        version: status
            .as_ref()
            .and_then(|s| s.version.clone())
            .unwrap_or_else(|| wf.version().to_string()),
        description: wf.description_text().map(str::to_string),
        paused: runner.workflow_paused(&name),
        build_status: "success".to_string(),
        build_error: row.and_then(|r| r.build_error),
        task_graph: task_graph(&wf),
        schedules: schedules(&tenant, &name).await?,
        workflows: vec![name.clone()],
    }))
}

fn not_found(name: &str, tenant: &str) -> ApiError {
    ApiError::not_found(
        "workflow_not_found",
        format!(
            "tenant '{tenant}' serves no workflow named '{name}'; 'cloacinactl workflow list' shows them"
        ),
    )
}

fn task_graph(wf: &cloacina::workflow::Workflow) -> Vec<Value> {
    wf.tasks()
        .map(|t| serde_json::to_value(t.spec()).unwrap_or(Value::Null))
        .collect()
}

/// The tenant's cron schedules and triggers that start `workflow` (the rows of
/// `GET /v1/tenants/{t}/triggers`).
async fn schedules(tenant: &Tenant, workflow: &str) -> ApiResult<Vec<Value>> {
    Ok(super::graphs::schedules(tenant)
        .await?
        .into_iter()
        .filter(|s| s.workflow_name == workflow)
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect())
}

/// Starts a run; answers at once with its id.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/workflows/{name}/execute", tag = "workflows",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    request_body(content = ExecuteRequest, description = "Optional: an empty body runs with {}"),
    responses((status = 202, body = ExecuteAccepted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn workflow_execute(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<ExecuteAccepted>)> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Write)?;
    let request: ExecuteRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ExecuteRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))?
    };
    let context = match request.context {
        None | Some(Value::Null) => Context::new(),
        Some(v @ Value::Object(_)) => Context::from_value(v).map_err(|e| {
            ApiError::bad_request("invalid_context", format!("invalid context: {e}"))
        })?,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_context",
                format!(
                    "the context must be a JSON object, not {}",
                    json_kind(&other)
                ),
            ));
        }
    };
    let runner = tenant.host.runner();
    if runner.workflow(&name).is_none() {
        return Err(not_found(&name, &tenant_name));
    }
    let id = runner.submit(&name, context).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ExecuteAccepted {
            execution_id: id,
            workflow_name: name,
            tenant_id: tenant_name,
            status: "scheduled".to_string(),
        }),
    ))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

async fn set_paused(
    state: &SharedState,
    caller: &Caller,
    tenant_name: &str,
    name: &str,
    paused: bool,
) -> ApiResult<Json<PauseState>> {
    let tenant = tenant_for(state, caller, tenant_name, Role::Write)?;
    let runner = tenant.host.runner();
    if runner.workflow(name).is_none() {
        return Err(not_found(name, tenant_name));
    }
    state
        .control
        .workflow_pause_set(tenant_name, name, paused)
        .await?;
    if paused {
        runner.workflow_pause(name);
    } else {
        runner.workflow_resume(name);
    }
    state
        .control
        .audit_append(NewAuditEntry {
            actor: caller.actor(),
            action: if paused {
                "workflow.pause"
            } else {
                "workflow.resume"
            }
            .to_string(),
            target: format!("{tenant_name}/{name}"),
            detail: json!({}),
        })
        .await?;
    Ok(Json(PauseState {
        tenant_id: tenant_name.to_string(),
        name: name.to_string(),
        paused,
    }))
}

/// Pauses a workflow: new runs (API, cron, triggers) are refused until it is resumed; runs in
/// flight go on. Applies on every replica.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/workflows/{name}/pause", tag = "workflows",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PauseState), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn workflow_pause(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, name)): Path<(String, String)>,
) -> ApiResult<Json<PauseState>> {
    set_paused(&state, &caller, &tenant_name, &name, true).await
}

/// Resumes a paused workflow.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/workflows/{name}/resume", tag = "workflows",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PauseState), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn workflow_resume(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, name)): Path<(String, String)>,
) -> ApiResult<Json<PauseState>> {
    set_paused(&state, &caller, &tenant_name, &name, false).await
}
