//! Every route of the HTTP API (docs/http-api.md), registered once with its OpenAPI
//! description (`utoipa-axum`), so the document at `/v1/openapi.json` and the router cannot
//! disagree. One module per resource.

pub mod executions;
pub mod graphs;
pub mod keys;
pub mod ops;
pub mod packages;
pub mod tenants;
pub mod workflows;

use axum::extract::{FromRequest, FromRequestParts, Request};
use cloacina::reconciler::PackageState;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};
use crate::state::SharedState;

/// The document's frame; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cloacina HTTP API",
        description = "The control plane of cloacina-server. Errors are always {\"error\", \"code\"}; see docs/http-api.md."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes and their document (uploads limited to 64 MiB).
pub fn api() -> OpenApiRouter<SharedState> {
    api_with_upload_limit(64 * 1024 * 1024)
}

/// The API's routes, package uploads limited to `max_upload` bytes (other bodies: the
/// router's JSON limit).
pub fn api_with_upload_limit(max_upload: usize) -> OpenApiRouter<SharedState> {
    let (schemas, paths, upload) = routes!(packages::package_upload, workflows::workflow_list);
    let upload = upload.layer(axum::extract::DefaultBodyLimit::max(max_upload));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes((schemas, paths, upload))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(ops::health_status))
        .routes(routes!(keys::key_create, keys::key_list))
        .routes(routes!(keys::key_revoke))
        .routes(routes!(keys::tenant_key_create, keys::tenant_key_list))
        .routes(routes!(keys::tenant_key_revoke))
        .routes(routes!(keys::whoami))
        .routes(routes!(tenants::tenant_create, tenants::tenant_list))
        .routes(routes!(tenants::tenant_delete))
        .routes(routes!(packages::package_list))
        .routes(routes!(packages::package_get, packages::package_delete))
        .routes(routes!(packages::package_delete_by_version))
        .routes(routes!(workflows::workflow_get))
        .routes(routes!(workflows::workflow_execute))
        .routes(routes!(workflows::workflow_pause))
        .routes(routes!(workflows::workflow_resume))
        .routes(routes!(executions::execution_list))
        .routes(routes!(executions::execution_get))
        .routes(routes!(executions::execution_events))
        .routes(routes!(executions::execution_stream))
        .routes(routes!(executions::execution_tasks))
        .routes(routes!(executions::execution_cancel))
        .routes(routes!(executions::execution_pause))
        .routes(routes!(executions::execution_resume))
        .routes(routes!(graphs::graph_list))
        .routes(routes!(graphs::graph_get))
        .routes(routes!(graphs::accumulator_list))
        .routes(routes!(graphs::trigger_list))
        .routes(routes!(graphs::trigger_get))
}

/// `axum::Json` whose rejections are [`ApiError`]s (the one error shape).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(value))
    }
}

impl<T: Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A wrapper of an axum extractor of request parts whose rejections are [`ApiError`]s.
macro_rules! parts_extractor {
    ($(#[$doc:meta])* $name:ident, $inner:ident, $rejection:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<T>(pub T);

        impl<S, T> FromRequestParts<S> for $name<T>
        where
            axum::extract::$inner<T>:
                FromRequestParts<S, Rejection = axum::extract::rejection::$rejection>,
            S: Send + Sync,
        {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let axum::extract::$inner(value) =
                    axum::extract::$inner::<T>::from_request_parts(parts, state).await?;
                Ok($name(value))
            }
        }
    };
}

parts_extractor!(
    /// `axum::extract::Path` whose rejections are [`ApiError`]s.
    Path,
    Path,
    PathRejection
);
parts_extractor!(
    /// `axum::extract::Query` whose rejections are [`ApiError`]s.
    Query,
    Query,
    QueryRejection
);

/// `limit` (1-1000, default 100) and `offset` (≥ 0) of a list.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
pub struct Page {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Page {
    /// `(limit, offset)`, or a 400 `invalid_pagination`.
    pub fn resolve(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(100);
        let offset = self.offset.unwrap_or(0);
        if !(1..=1000).contains(&limit) || offset < 0 {
            return Err(ApiError::bad_request(
                "invalid_pagination",
                format!(
                    "invalid pagination (limit {limit}, offset {offset}): limit must be 1-1000 and offset at least 0"
                ),
            ));
        }
        Ok((limit, offset))
    }

    /// One page of `items` (already filtered), as a list answer.
    pub fn slice<T: Clone>(&self, items: &[T]) -> Result<(Vec<T>, usize), ApiError> {
        let (limit, offset) = self.resolve()?;
        let total = items.len();
        let page = items
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .cloned()
            .collect();
        Ok((page, total))
    }
}

/// A list answer: `{"items": [...], "total": N}` (+ `tenant_id` for tenant-scoped lists).
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    pub items: Vec<T>,
    /// Matching rows in all, not the page size.
    pub total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

impl<T: ToSchema> List<T> {
    pub fn of(items: Vec<T>, total: usize) -> Self {
        List {
            items,
            total,
            tenant_id: None,
        }
    }

    pub fn in_tenant(items: Vec<T>, total: usize, tenant: &str) -> Self {
        List {
            items,
            total,
            tenant_id: Some(tenant.to_string()),
        }
    }
}

/// `tenant`'s runtime, once the caller is allowed `role` in it.
pub fn tenant_for(
    state: &SharedState,
    caller: &crate::auth::Caller,
    tenant: &str,
    role: cloacina::auth::Role,
) -> Result<std::sync::Arc<crate::tenants::Tenant>, ApiError> {
    caller.require_in(tenant, role)?;
    state.tenants.get(tenant)
}

/// A package state as the API writes it.
pub fn state_word(state: PackageState) -> &'static str {
    match state {
        PackageState::Loaded => "loaded",
        PackageState::Waiting => "waiting",
        PackageState::Failed => "failed",
        PackageState::PartiallyUnloaded => "partially_unloaded",
        PackageState::UnloadRefused => "unload_refused",
        PackageState::Superseded => "superseded",
    }
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}
