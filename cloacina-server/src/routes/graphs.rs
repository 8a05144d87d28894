//! Computation graphs, accumulators (health views) and a tenant's cron schedules and triggers.
//! A key sees its own tenant's; a global admin sees every tenant's.

use axum::extract::State;
use cloacina::auth::Role;
use cloacina::store::{CronScheduleFilter, ExecutionFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{Json, List, Page, Path, Query, rfc3339, rfc3339_opt};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use crate::tenants::Tenant;

#[derive(Debug, Deserialize, IntoParams)]
pub struct HealthQuery {
    /// A global admin may narrow to one tenant.
    pub tenant: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TenantQuery {
    /// A global admin may narrow to one tenant.
    pub tenant: Option<String>,
}

/// The tenants whose graphs the caller may see.
fn visible_tenants(
    state: &SharedState,
    caller: &Caller,
    only: Option<&str>,
) -> ApiResult<Vec<std::sync::Arc<Tenant>>> {
    caller.require(Role::Read)?;
    if !caller.is_global_admin() {
        return Ok(vec![state.tenants.get(caller.tenant())?]);
    }
    match only {
        Some(t) => Ok(vec![state.tenants.get(t)?]),
        None => Ok(state.tenants.all()),
    }
}

fn page(q: &HealthQuery) -> Page {
    Page {
        limit: q.limit,
        offset: q.offset,
    }
}

/// `value` as a JSON object with `extra` fields added: the registry's own documents plus the
/// names the wire contract gives.
fn with_fields<const N: usize>(value: &impl Serialize, extra: [(&str, Value); N]) -> Value {
    let mut v = serde_json::to_value(value).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for (k, x) in extra {
            m.insert(k.to_string(), x);
        }
    }
    v
}

/// Loaded computation graphs with health, accumulators and reactor pause state.
#[utoipa::path(get, path = "/v1/health/graphs", tag = "graphs", security(("api_key" = [])),
    params(HealthQuery),
    responses((status = 200, body = List<Object>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn graph_list(
    State(state): State<SharedState>,
    caller: Caller,
    Query(q): Query<HealthQuery>,
) -> ApiResult<Json<List<Value>>> {
    let mut items = Vec::new();
    for tenant in visible_tenants(&state, &caller, q.tenant.as_deref())? {
        let reactors = tenant.host.reactors();
        let accumulators = reactors.accumulators_list(Some(&tenant.name));
        for g in reactors.graphs_list(Some(&tenant.name)) {
            let own: Vec<&str> = accumulators
                .iter()
                .filter(|a| Some(&a.reactor) == g.reactor.as_ref())
                .map(|a| a.name.as_str())
                .collect();
            items.push(with_fields(
                &g,
                [
                    ("accumulators", json!(own)),
                    ("paused", json!(g.reactor_paused)),
                    ("source_package", json!(g.package)),
                ],
            ));
        }
    }
    let (items, total) = page(&q).slice(&items)?;
    Ok(Json(List::of(items, total)))
}

/// One graph, with its reactor's bound subscribers (count and names) and accumulators.
#[utoipa::path(get, path = "/v1/health/graphs/{name}", tag = "graphs", security(("api_key" = [])),
    params(("name" = String, Path), TenantQuery),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn graph_get(
    State(state): State<SharedState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<Value>> {
    for tenant in visible_tenants(&state, &caller, q.tenant.as_deref())? {
        if let Some(status) = tenant.host.reactors().graph_status(&tenant.name, &name) {
            return Ok(Json(with_fields(
                &status,
                [
                    ("paused", json!(status.graph.reactor_paused)),
                    ("source_package", json!(status.graph.package)),
                ],
            )));
        }
    }
    Err(ApiError::not_found(
        "graph_not_found",
        format!(
            "no computation graph named '{name}' is loaded; 'cloacinactl graph list' shows them"
        ),
    ))
}

/// Every accumulator of every graph.
#[utoipa::path(get, path = "/v1/health/accumulators", tag = "graphs", security(("api_key" = [])),
    params(HealthQuery),
    responses((status = 200, body = List<Object>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn accumulator_list(
    State(state): State<SharedState>,
    caller: Caller,
    Query(q): Query<HealthQuery>,
) -> ApiResult<Json<List<Value>>> {
    let mut items = Vec::new();
    for tenant in visible_tenants(&state, &caller, q.tenant.as_deref())? {
        let reactors = tenant.host.reactors();
        for a in reactors.accumulators_list(Some(&tenant.name)) {
            items.push(with_fields(
                &a,
                [
                    ("tenant_id", json!(a.tenant)),
                    ("status", json!(if a.pending { "pending" } else { "idle" })),
                ],
            ));
        }
    }
    let (items, total) = page(&q).slice(&items)?;
    Ok(Json(List::of(items, total)))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleInfo {
    /// The schedule's id (cron) or `<package id>/<name>` (trigger).
    pub id: String,
    pub name: String,
    /// `cron` or `trigger`.
    pub schedule_type: String,
    pub workflow_name: String,
    pub enabled: bool,
    pub cron_expression: Option<String>,
    pub timezone: Option<String>,
    pub trigger_name: Option<String>,
    pub poll_interval_ms: Option<u64>,
    pub next_run_at: Option<String>,
    pub last_run_at: Option<String>,
    /// The workflow is paused: its instants are skipped and its fires refused.
    pub paused: bool,
    pub package_id: String,
}

/// Every cron schedule and custom-poll trigger of `tenant`, by name.
pub(super) async fn schedules(tenant: &Tenant) -> ApiResult<Vec<ScheduleInfo>> {
    let runner = tenant.host.runner();
    let mut out: Vec<ScheduleInfo> = tenant
        .store()
        .cron_schedule_list(CronScheduleFilter::default())
        .await?
        .into_iter()
        .map(|s| ScheduleInfo {
            id: s.id.to_string(),
            name: s.name.clone(),
            schedule_type: "cron".to_string(),
            paused: runner.workflow_paused(&s.workflow),
            workflow_name: s.workflow,
            enabled: true,
            cron_expression: Some(s.expression),
            timezone: Some(s.timezone),
            trigger_name: None,
            poll_interval_ms: None,
            next_run_at: Some(rfc3339(s.next_run_at)),
            last_run_at: rfc3339_opt(s.last_run_at),
            package_id: s.package_id,
        })
        .collect();
    out.extend(tenant.host.triggers().triggers_list().into_iter().map(|t| {
        ScheduleInfo {
            id: format!("{}/{}", t.package_id, t.name),
            name: t.name.clone(),
            schedule_type: "trigger".to_string(),
            paused: runner.workflow_paused(&t.workflow),
            workflow_name: t.workflow,
            enabled: t.waiting.is_none(),
            cron_expression: None,
            timezone: None,
            trigger_name: Some(t.name),
            poll_interval_ms: Some(t.interval.as_millis() as u64),
            next_run_at: t
                .last_poll
                .map(|p| rfc3339(p + t.interval.as_millis() as i64)),
            last_run_at: rfc3339_opt(t.last_fire),
            package_id: t.package_id,
        }
    }));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The tenant's cron schedules and custom-poll triggers.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/triggers", tag = "triggers", security(("api_key" = [])),
    params(("tenant" = String, Path), Page),
    responses((status = 200, body = List<ScheduleInfo>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn trigger_list(
    State(state): State<SharedState>,
    caller: Caller,
    Path(tenant_name): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<ScheduleInfo>>> {
    caller.require_in(&tenant_name, Role::Read)?;
    let tenant = state.tenants.get(&tenant_name)?;
    let all = schedules(&tenant).await?;
    let (items, total) = page.slice(&all)?;
    Ok(Json(List::in_tenant(items, total, &tenant_name)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerDetail {
    pub tenant_id: String,
    pub schedule: ScheduleInfo,
    /// The workflow's latest runs, newest first.
    #[schema(value_type = Vec<Object>)]
    pub recent_executions: Vec<Value>,
}

/// One schedule or trigger, with recent runs of its workflow.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/triggers/{name}", tag = "triggers", security(("api_key" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = TriggerDetail), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn trigger_get(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, name)): Path<(String, String)>,
) -> ApiResult<Json<TriggerDetail>> {
    caller.require_in(&tenant_name, Role::Read)?;
    let tenant = state.tenants.get(&tenant_name)?;
    let schedule = schedules(&tenant)
        .await?
        .into_iter()
        .find(|s| s.name == name || s.id == name)
        .ok_or_else(|| {
            ApiError::not_found(
                "trigger_not_found",
                format!("tenant '{tenant_name}' has no cron schedule or trigger named '{name}'; 'cloacinactl trigger list' shows them"),
            )
        })?;
    let recent = tenant
        .store()
        .execution_list(ExecutionFilter {
            workflow: Some(schedule.workflow_name.clone()),
            limit: Some(10),
            ..ExecutionFilter::default()
        })
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "status": e.status.as_str(),
                "started_at": rfc3339_opt(e.started_at),
                "completed_at": rfc3339_opt(e.completed_at),
            })
        })
        .collect();
    Ok(Json(TriggerDetail {
        tenant_id: tenant_name,
        schedule,
        recent_executions: recent,
    }))
}
