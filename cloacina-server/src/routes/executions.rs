//! Executions of a tenant: list with filters, status, tasks, events (with `since`), a live
//! event stream (Server-Sent Events, resumable from the last event id), cancel, pause, resume.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use cloacina::auth::Role;
use cloacina::store::{EventRecord, ExecutionFilter, ExecutionRecord, ExecutionStatus, now_ms};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::tenant_for;
use super::{Json, List, Page, Path, Query, rfc3339, rfc3339_opt};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use crate::tenants::Tenant;

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExecutionQuery {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs with this status (`Pending`, `Running`, `Completed`, `Failed`, `Cancelled`,
    /// `Paused`; any case).
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionSummary {
    pub id: Uuid,
    pub workflow_name: String,
    pub status: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// `package:<id>` for a run of a packaged workflow, `trigger` for a de-duplicated trigger
    /// fire, `api` otherwise.
    pub trigger_origin: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionDetail {
    pub tenant_id: String,
    pub execution_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: String,
    /// `Pending`, `Running`, `Completed`, `Failed`, `Cancelled` or `Paused`.
    pub status: String,
    pub total_tasks: i32,
    pub remaining_tasks: i32,
    pub failed_tasks: i32,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// The final context of a completed run.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventInfo {
    /// `<execution id>:<sequence number>`.
    pub id: String,
    pub event_type: String,
    #[schema(value_type = Object)]
    pub event_data: Value,
    pub task_name: Option<String>,
    pub created_at: String,
    pub sequence_num: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub tenant_id: String,
    pub execution_id: Uuid,
    pub events: Vec<EventInfo>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventQuery {
    /// Events newer than this: a duration (`90s`, `5m`, `1h30m`), an RFC 3339 time, or a
    /// sequence number (events after it).
    pub since: Option<String>,
    /// Most events (1-10000, default 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatusQuery {
    /// Long poll: hold the answer until the run has ended (`Completed`, `Failed` or
    /// `Cancelled`) or this long has passed, whichever is first, then answer with the status
    /// at that moment. A duration (`500ms`, `30s`); at most 60s (longer is cut to 60s).
    /// Without it the answer is immediate.
    pub wait: Option<String>,
}

/// The longest a status request is held (`?wait=`): under the idle timeouts of common load
/// balancers, and short enough that a client's retry loop stays responsive.
const WAIT_MAX: Duration = Duration::from_secs(60);

fn wait_limit(text: Option<&str>) -> ApiResult<Option<Duration>> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    // Milliseconds too: a client that polls in a loop asks for short holds.
    let millis = text.strip_suffix("ms").and_then(|n| n.parse::<u64>().ok());
    let d = match millis {
        Some(ms) => Duration::from_millis(ms),
        None => cloacina::duration::parse(text).map_err(|e| {
            ApiError::bad_request(
                "invalid_query",
                format!("invalid wait: {e}; give a duration such as 30s or 500ms (at most 60s)"),
            )
        })?,
    };
    Ok(Some(d.min(WAIT_MAX)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Resume after this sequence number (the `Last-Event-ID` header does the same).
    pub after: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskInfo {
    pub task_id: String,
    pub status: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub dependencies_remaining: i32,
    pub dependents: Vec<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tenant_id: String,
    pub execution_id: Uuid,
    pub tasks: Vec<TaskInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionState {
    pub tenant_id: String,
    pub execution_id: Uuid,
    pub status: String,
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::bad_request(
            "invalid_path",
            format!("'{id}' is not an execution id (a UUID)"),
        )
    })
}

/// The execution with its final context (once it has one), in one read.
async fn with_final(
    tenant: &Tenant,
    id: Uuid,
) -> ApiResult<(ExecutionRecord, Option<cloacina::workflow::Context>)> {
    tenant
        .store()
        .execution_get_with_final(id)
        .await?
        .ok_or_else(|| execution_not_found(tenant, id))
}

async fn record(tenant: &Tenant, id: Uuid) -> ApiResult<ExecutionRecord> {
    tenant
        .store()
        .execution_get(id)
        .await?
        .ok_or_else(|| execution_not_found(tenant, id))
}

fn execution_not_found(tenant: &Tenant, id: Uuid) -> ApiError {
    ApiError::not_found(
        "execution_not_found",
        format!("execution {id} not found in tenant '{}'", tenant.name),
    )
}

fn origin(e: &ExecutionRecord) -> String {
    if e.dedup_key.is_some() {
        "trigger".to_string()
    } else if let Some(p) = &e.package_id {
        format!("package:{p}")
    } else {
        "api".to_string()
    }
}

/// The tenant's executions, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/executions", tag = "executions", security(("api_key" = [])),
    params(("tenant" = String, Path), ExecutionQuery),
    responses((status = 200, body = List<ExecutionSummary>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn execution_list(
    State(state): State<SharedState>,
    caller: Caller,
    Path(tenant_name): Path<String>,
    Query(q): Query<ExecutionQuery>,
) -> ApiResult<Json<List<ExecutionSummary>>> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Read)?;
    let (limit, offset) = Page {
        limit: q.limit,
        offset: q.offset,
    }
    .resolve()?;
    let status =
        match &q.status {
            Some(s) => Some(s.parse::<ExecutionStatus>().map_err(|e| {
                ApiError::bad_request("invalid_query", format!("invalid status: {e}"))
            })?),
            None => None,
        };
    let filter = ExecutionFilter {
        workflow: q.workflow.clone(),
        status,
        limit: Some(limit),
        offset: Some(offset),
        ..ExecutionFilter::default()
    };
    let total = tenant.store().execution_total(&filter).await?;
    let rows = tenant.store().execution_list(filter).await?;
    let items = rows
        .iter()
        .map(|e| ExecutionSummary {
            id: e.id,
            workflow_name: e.workflow_name.clone(),
            status: e.status.as_str().to_string(),
            started_at: rfc3339_opt(e.started_at),
            completed_at: rfc3339_opt(e.completed_at),
            trigger_origin: origin(e),
        })
        .collect();
    Ok(Json(List::in_tenant(items, total as usize, &tenant_name)))
}

/// One execution's status; with `wait`, once it has ended (a long poll).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/executions/{id}", tag = "executions", security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path, description = "The execution id (a UUID)"), StatusQuery),
    responses((status = 200, body = ExecutionDetail), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn execution_get(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, id)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Json<ExecutionDetail>> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Read)?;
    let id = parse_id(&id)?;
    let (e, final_context) = match wait_limit(q.wait.as_deref())? {
        None => with_final(&tenant, id).await?,
        Some(limit) => {
            // A stopping server answers a held request at once (with the status as it
            // stands) instead of holding its shutdown for the rest of the wait.
            let mut stopping = state.stopping.subscribe();
            let waited = tokio::select! {
                r = tenant.host.runner().wait_record(id, limit) => Some(r),
                _ = stopping.wait_for(|s| *s) => None,
            };
            match waited {
                Some(Err(cloacina::EngineError::ExecutionNotFound(_))) | None => {
                    with_final(&tenant, id).await?
                }
                Some(other) => other?,
            }
        }
    };
    let result = final_context
        .filter(|_| e.status == ExecutionStatus::Completed)
        .map(|c| c.into_value());
    Ok(Json(ExecutionDetail {
        tenant_id: tenant_name,
        execution_id: e.id,
        workflow_name: e.workflow_name,
        workflow_version: e.workflow_version,
        status: e.status.as_str().to_string(),
        total_tasks: e.total_tasks,
        remaining_tasks: e.remaining_tasks,
        failed_tasks: e.failed_tasks,
        error: e.error,
        created_at: rfc3339(e.created_at),
        started_at: rfc3339_opt(e.started_at),
        completed_at: rfc3339_opt(e.completed_at),
        result,
    }))
}

fn event_info(e: &EventRecord) -> EventInfo {
    let mut data = serde_json::Map::new();
    if let Some(a) = e.attempt {
        data.insert("attempt".to_string(), a.into());
    }
    if let Some(m) = &e.message {
        data.insert("message".to_string(), m.clone().into());
    }
    EventInfo {
        id: format!("{}:{}", e.execution_id, e.seq),
        event_type: e.kind.clone(),
        event_data: Value::Object(data),
        task_name: e.task_id.clone(),
        created_at: rfc3339(e.created_at),
        sequence_num: e.seq,
    }
}

/// `since` as `(after_seq, not_before_ms)`.
fn since(text: Option<&str>) -> ApiResult<(i64, Option<i64>)> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok((0, None));
    };
    if let Ok(seq) = text.parse::<i64>() {
        return Ok((seq.max(0), None));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok((0, Some(t.timestamp_millis())));
    }
    let d = cloacina::duration::parse(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("invalid since: {e}; or give an RFC 3339 time or a sequence number"),
        )
    })?;
    Ok((0, Some(now_ms() - d.as_millis() as i64)))
}

/// An execution's events, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/executions/{id}/events", tag = "executions",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path, description = "The execution id (a UUID)"), EventQuery),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn execution_events(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, id)): Path<(String, String)>,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<EventList>> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Read)?;
    let id = parse_id(&id)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_pagination",
            format!("invalid limit {limit}: it must be 1-10000"),
        ));
    }
    record(&tenant, id).await?;
    let (after, not_before) = since(q.since.as_deref())?;
    let events = tenant
        .store()
        .event_list(id, after, limit)
        .await?
        .iter()
        .filter(|e| not_before.is_none_or(|t| e.created_at >= t))
        .map(event_info)
        .collect();
    Ok(Json(EventList {
        tenant_id: tenant_name,
        execution_id: id,
        events,
    }))
}

/// A live stream of an execution's events (Server-Sent Events): each event's `id` is its
/// sequence number, so a client that reconnects with `Last-Event-ID` (or `?after=`) misses
/// nothing. The stream ends after the event that finishes the run.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/executions/{id}/events/stream", tag = "executions",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path, description = "The execution id (a UUID)"), StreamQuery),
    responses((status = 200, description = "text/event-stream of EventInfo documents", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn execution_stream(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, id)): Path<(String, String)>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Read)?;
    let id = parse_id(&id)?;
    record(&tenant, id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(':').next())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = q.after.or(resume).unwrap_or(0);
    let store = tenant.store().clone();
    // A server that begins to stop ends the stream (the client resumes elsewhere with
    // Last-Event-ID), so the graceful stop does not wait for the run to finish.
    let stopping = state.stopping.subscribe();
    let stream = futures::stream::unfold(
        (store, after, Vec::<EventRecord>::new(), false),
        move |(store, mut after, mut queued, mut done)| {
            let mut stopping = stopping.clone();
            async move {
                loop {
                    if *stopping.borrow() {
                        return None;
                    }
                    if let Some(e) = (!queued.is_empty()).then(|| queued.remove(0)) {
                        after = e.seq;
                        let info = event_info(&e);
                        let event = Event::default()
                            .id(e.seq.to_string())
                            .event(e.kind.clone())
                            .json_data(&info)
                            .unwrap_or_else(|_| Event::default().comment("unencodable event"));
                        return Some((Ok(event), (store, after, queued, done)));
                    }
                    if done {
                        return None;
                    }
                    match store.event_list(id, after, 500).await {
                        Ok(events) if !events.is_empty() => {
                            queued = events;
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let event = Event::default().event("error").data(e.to_string());
                            return Some((Ok(event), (store, after, queued, true)));
                        }
                    }
                    // Nothing new: finished runs end the stream, others are polled again.
                    match store.execution_get(id).await {
                        Ok(Some(rec)) if rec.status.is_terminal() => {
                            // One more read: events committed with the final status.
                            if let Ok(events) = store.event_list(id, after, 500).await {
                                queued = events;
                            }
                            done = true;
                        }
                        Ok(None) => return None,
                        _ => {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                _ = stopping.changed() => {}
                            }
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// An execution's tasks with status, attempts, timings and last error.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/executions/{id}/tasks", tag = "executions",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path, description = "The execution id (a UUID)")),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn execution_tasks(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, id)): Path<(String, String)>,
) -> ApiResult<Json<TaskList>> {
    let tenant = tenant_for(&state, &caller, &tenant_name, Role::Read)?;
    let id = parse_id(&id)?;
    record(&tenant, id).await?;
    let tasks = tenant
        .store()
        .task_list(id)
        .await?
        .into_iter()
        .map(|t| TaskInfo {
            task_id: t.task_id,
            status: t.status.as_str().to_string(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            dependencies_remaining: t.remaining_deps,
            dependents: t.dependents,
            started_at: rfc3339_opt(t.started_at),
            completed_at: rfc3339_opt(t.completed_at),
            last_error: t.error,
            lease_owner: t.lease_owner,
        })
        .collect();
    Ok(Json(TaskList {
        tenant_id: tenant_name,
        execution_id: id,
        tasks,
    }))
}

#[derive(Clone, Copy)]
enum Action {
    Cancel,
    Pause,
    Resume,
}

async fn act(
    state: &SharedState,
    caller: &Caller,
    tenant_name: String,
    id: &str,
    action: Action,
) -> ApiResult<Json<ExecutionState>> {
    let tenant = tenant_for(state, caller, &tenant_name, Role::Write)?;
    let id = parse_id(id)?;
    record(&tenant, id).await?;
    let runner = tenant.host.runner();
    let rec = match action {
        Action::Cancel => runner.cancel(id).await?,
        Action::Pause => runner.pause(id).await?,
        Action::Resume => runner.resume(id).await?,
    };
    Ok(Json(ExecutionState {
        tenant_id: tenant_name,
        execution_id: rec.id,
        status: rec.status.as_str().to_string(),
    }))
}

/// Cancels a run: tasks not started never start; running ones are told to stop.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/executions/{id}/cancel", tag = "executions",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path, description = "The execution id (a UUID)")),
    responses((status = 200, body = ExecutionState), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn execution_cancel(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, id)): Path<(String, String)>,
) -> ApiResult<Json<ExecutionState>> {
    act(&state, &caller, tenant_name, &id, Action::Cancel).await
}

/// Pauses a run: no new task starts; running ones finish.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/executions/{id}/pause", tag = "executions",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path, description = "The execution id (a UUID)")),
    responses((status = 200, body = ExecutionState), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn execution_pause(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, id)): Path<(String, String)>,
) -> ApiResult<Json<ExecutionState>> {
    act(&state, &caller, tenant_name, &id, Action::Pause).await
}

/// Resumes a paused run.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/executions/{id}/resume", tag = "executions",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("id" = Uuid, Path, description = "The execution id (a UUID)")),
    responses((status = 200, body = ExecutionState), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn execution_resume(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, id)): Path<(String, String)>,
) -> ApiResult<Json<ExecutionState>> {
    act(&state, &caller, tenant_name, &id, Action::Resume).await
}
