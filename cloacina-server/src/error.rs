//! The one error shape of the HTTP API: `{"error": "<message>", "code": "<code>"}` with the
//! status of the code's kind. Library errors keep their own codes ([`cloacina::ErrorCode`]);
//! the codes only the HTTP layer produces are listed in [`HTTP_CODES`] and, like the library's,
//! in `docs/http-api.md` (a test keeps them in step).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloacina::{ErrorCode, ErrorKind};
use serde::Serialize;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do, for a person.
    pub error: String,
    /// A stable machine code (see docs/http-api.md).
    pub code: String,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// Codes produced by the HTTP layer itself, with their status and meaning.
pub const HTTP_CODES: &[(&str, u16, &str)] = &[
    ("route_not_found", 404, "no route has this path"),
    (
        "method_not_allowed",
        405,
        "the path exists but not with this method",
    ),
    (
        "invalid_json",
        400,
        "the body is not the JSON this route takes",
    ),
    (
        "unsupported_media_type",
        415,
        "the body's content type is not one this route takes",
    ),
    ("body_too_large", 413, "the body is larger than the limit"),
    (
        "request_timeout",
        408,
        "the request body did not arrive within --body-read-timeout-s; the connection is closed",
    ),
    (
        "too_many_connections",
        503,
        "the server is serving --max-connections connections; the connection is closed, retry shortly",
    ),
    (
        "invalid_pagination",
        400,
        "limit is not 1-1000 or offset is negative",
    ),
    (
        "invalid_request",
        400,
        "the request is not valid (the message says why)",
    ),
    (
        "package_not_found",
        404,
        "no package has this id (in the key's tenant)",
    ),
    (
        "package_load_failed",
        422,
        "the uploaded package cannot be loaded; nothing was kept",
    ),
    ("invalid_query", 400, "a query parameter is malformed"),
    (
        "invalid_path",
        400,
        "a path parameter is malformed (e.g. not a UUID)",
    ),
    (
        "invalid_context",
        400,
        "the execution context is not a JSON object",
    ),
    (
        "invalid_upload",
        400,
        "the upload has no archive or is not a package archive",
    ),
    (
        "invalid_key_name",
        400,
        "a key name must be 1-128 printable characters",
    ),
    (
        "tenant_step_failed",
        500,
        "a step of a tenant removal failed; the answer names it",
    ),
    ("tenant_not_found", 404, "no tenant has this name"),
    (
        "last_admin_key",
        409,
        "the last global admin key cannot be revoked (nobody could manage tenants or keys)",
    ),
    ("key_not_found", 404, "no key has this id (in this tenant)"),
    (
        "workflow_not_found",
        404,
        "no loaded workflow or package has this name or id",
    ),
    (
        "trigger_not_found",
        404,
        "no cron schedule or trigger has this name",
    ),
    ("graph_not_found", 404, "no computation graph has this name"),
    (
        "signature_rejected",
        403,
        "signatures are required and this one is missing or not trusted",
    ),
    (
        "not_ready",
        503,
        "the server cannot serve yet (its database is unreachable)",
    ),
    (
        "internal_error",
        500,
        "a failure of the server itself; see its log",
    ),
];

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A library error: its own code, the status of its kind, its whole message.
    pub fn from_code<E: ErrorCode + std::fmt::Display + ?Sized>(e: &E) -> Self {
        let kind = e.kind();
        let status =
            StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if kind == ErrorKind::Internal {
            tracing::error!(code = e.code(), "{e}");
        }
        ApiError::new(status, e.code(), e.to_string())
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("{message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("internal error: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_string(),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

macro_rules! from_library {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                ApiError::from_code(&e)
            }
        }
    )*};
}

from_library!(
    cloacina::StoreError,
    cloacina::EngineError,
    cloacina::auth::AuthError,
    cloacina::tenant::TenantError,
    cloacina::reconciler::ReconcileError,
    cloacina::package::archive::ArchiveError,
    cloacina::package::signing::SignatureError,
    cloacina::host::HostError,
    cloacina::registry::RegistryError,
);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with 'content-type: application/json'",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the limit",
                )
            }
            other => ApiError::bad_request(
                "invalid_json",
                format!("invalid JSON body: {}", other.body_text()),
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", format!("invalid query: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", format!("invalid path: {}", r.body_text()))
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;
