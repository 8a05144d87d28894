//! What wraps every request: a request id (the caller's own when it sent a valid one),
//! metrics by route template, the body's read deadline (`--body-read-timeout-s`), and the one
//! error shape for answers produced outside the handlers (unknown routes, wrong methods, body
//! limits, extractor rejections).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::{Body, HttpBody as _};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::SharedState;

/// Largest JSON (non-upload) body.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

const REQUEST_ID: &str = "x-request-id";

/// A request id sent by a client is kept when it is short printable ASCII.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// The method as a metric label and span field: the standard ones by name, any other
/// (clients may send any token) as `OTHER`, so a client cannot grow the metrics without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

pub async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| valid_request_id(v))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        });
    let span = request_span(method, &route, &request_id);
    // The body (if any) must arrive before the deadline: a client trickling it in does not
    // hold a connection (and a handler) for longer.
    let limit = state.config.limits.body_read_timeout;
    let timed_out = Arc::new(AtomicBool::new(false));
    let req = if req.body().is_end_stream() {
        req
    } else {
        let flag = timed_out.clone();
        req.map(|body| Body::new(crate::serve::DeadlineBody::new(body, limit, flag)))
    };
    let mut response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    if timed_out.load(Ordering::Relaxed) {
        response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s (cloacina-server --body-read-timeout-s); the connection is closed",
                limit.as_secs()
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if response.status().is_client_error() || response.status().is_server_error() {
        response = json_error_shape(response).await;
    }
    response.headers_mut().insert(REQUEST_ID, request_id);
    let status = response.status().as_u16();
    // i64: the exporter sends u64 values as strings, and the convention wants an int.
    span.record("http.response.status_code", i64::from(status));
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    state
        .metrics
        .http_request(&route, method, status, started.elapsed().as_secs_f64());
    response
}

/// The request's span for trace export (OpenTelemetry HTTP semantic conventions; never
/// headers, query strings or bodies, which can hold keys). Export-only: absent from the logs,
/// and free when tracing is off (no layer enables it).
fn request_span(method: &str, route: &str, request_id: &HeaderValue) -> tracing::Span {
    tracing::info_span!(
        target: cloacina_service::EXPORT_ONLY_TARGET,
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        http.request.id = request_id.to_str().unwrap_or("unknown"),
    )
}

/// Rewrites an error answer that is not already JSON (axum's own rejections, the 405 of a
/// wrong method, a body limit) into `{"error", "code"}`.
async fn json_error_shape(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let status = response.status();
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, fallback) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take this method; see /v1/openapi.json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "the request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the body's content type is not one this route takes",
        ),
        StatusCode::NOT_FOUND => ("route_not_found", "no such route; see /v1/openapi.json"),
        s if s.is_server_error() => ("internal_error", "internal error; see the server's log"),
        _ => ("invalid_request", "the request is not valid"),
    };
    let message = if text.is_empty() {
        fallback.to_string()
    } else {
        format!("{fallback}: {text}")
    };
    let mut fresh = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name == header::ALLOW {
            fresh.headers_mut().insert(name, value.clone());
        }
    }
    fresh
}

/// Answer for paths no route has.
pub async fn route_not_found(req: Request<Body>) -> ApiError {
    ApiError::not_found(
        "route_not_found",
        format!(
            "no route for {} {}; see /v1/openapi.json for the routes",
            req.method(),
            req.uri().path()
        ),
    )
}
