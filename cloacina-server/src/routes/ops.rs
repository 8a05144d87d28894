//! Operational routes: liveness, readiness, metrics, the OpenAPI document, and the status
//! `cloacinactl server status` shows.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloacina::store::ExecutionStatus;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Json, rfc3339_opt, state_word};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::SharedState;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    pub status: String,
}

/// Liveness: answers without touching the database.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = HealthBody)))]
pub async fn health() -> Json<HealthBody> {
    Json(HealthBody {
        status: "ok".to_string(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Readiness: the database answers and the server is not stopping (a stopping server
/// answers 503 through its drain grace, so a load balancer takes it out before it closes).
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = ReadyBody), (status = 503, body = ReadyBody)))]
pub async fn ready(State(state): State<SharedState>) -> Response {
    if *state.stopping.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody {
                status: "not ready".to_string(),
                reason: Some("stopping".to_string()),
            }),
        )
            .into_response();
    }
    match state
        .control
        .execution_count(&[ExecutionStatus::Running])
        .await
    {
        Ok(_) => Json(ReadyBody {
            status: "ready".to_string(),
            reason: None,
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody {
                status: "not ready".to_string(),
                reason: Some(e.to_string()),
            }),
        )
            .into_response(),
    }
}

/// Prometheus metrics (text format, `cloacina_` prefix).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(state): State<SharedState>) -> Response {
    let body = state.metrics.render(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
pub async fn openapi() -> Response {
    // Built once: the routes do not change while the server runs.
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        let (_, doc) = super::api().split_for_parts();
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    });
    axum::Json(doc).into_response()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PackageSummary {
    pub id: String,
    pub tenant: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub state: String,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerStatus {
    pub status: String,
    pub version: String,
    pub uptime_s: u64,
    pub backend: String,
    pub pid: u32,
    pub tenants: Vec<String>,
    pub packages: Vec<PackageSummary>,
    /// Executions by status, in the caller's tenant (every tenant for a global admin).
    pub executions: BTreeMap<String, i64>,
    /// When this replica's package reconciler last finished a pass.
    pub last_reconcile_at: Option<String>,
}

/// The server's status, for `cloacinactl server status` (any valid key).
#[utoipa::path(get, path = "/v1/health/status", tag = "operations",
    security(("api_key" = [])),
    responses((status = 200, body = ServerStatus), (status = 401, body = crate::error::ErrorBody)))]
pub async fn health_status(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<ServerStatus>> {
    let tenants: Vec<_> = state
        .tenants
        .all()
        .into_iter()
        .filter(|t| caller.is_global_admin() || t.name == caller.tenant())
        .collect();
    let mut packages = Vec::new();
    let mut executions = BTreeMap::new();
    for tenant in &tenants {
        for s in tenant.host.reconciler().statuses() {
            packages.push(PackageSummary {
                id: s.id,
                tenant: s.tenant,
                name: s.name,
                version: s.version,
                state: state_word(s.state).to_string(),
                last_error: s.last_error,
            });
        }
        for &status in ExecutionStatus::ALL {
            let n = tenant.store().execution_count(&[status]).await?;
            *executions.entry(status.as_str().to_string()).or_insert(0) += n;
        }
    }
    let last = state.last_sync.load(std::sync::atomic::Ordering::SeqCst);
    Ok(Json(ServerStatus {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        backend: state.control.backend_name().to_string(),
        pid: std::process::id(),
        tenants: tenants.iter().map(|t| t.name.clone()).collect(),
        packages,
        executions,
        last_reconcile_at: rfc3339_opt((last > 0).then_some(last)),
    }))
}
