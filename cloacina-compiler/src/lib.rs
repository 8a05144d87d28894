//! `cloacina-compiler`: the build service. Pending source packages in the database become
//! loadable, signed archives; the rules (claims, heartbeats, sweeps, the build itself) are the
//! library's (`cloacina::compiler`). This crate wires them to a database and serves what an
//! operator probes: `GET /health`, `GET /v1/status` and `GET /metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloacina::compiler::{Compiler, CompilerOptions, CompilerState};
use cloacina::store::{BuildCounts, Millis, Store, now_ms};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod metrics;

include!(concat!(env!("OUT_DIR"), "/abi_sources.rs"));

/// How long `/v1/status` waits for the database before answering without the queue.
const STATUS_DB_TIMEOUT: Duration = Duration::from_secs(3);

/// What the service needs to start.
#[derive(Debug, Clone)]
pub struct CompilerConfig {
    pub database_url: String,
    pub bind: SocketAddr,
    pub options: CompilerOptions,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] cloacina::store::StoreError),
    #[error(transparent)]
    Compiler(#[from] cloacina::compiler::CompilerError),
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
}

struct AppState {
    compiler: Compiler,
    metrics: Arc<metrics::Metrics>,
    started: Instant,
}

type Shared = Arc<AppState>;

/// A started compiler: the database open, the ABI crates written, the listener bound.
pub struct CompilerService {
    state: Shared,
    listener: TcpListener,
}

impl std::fmt::Debug for CompilerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompilerService")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl CompilerService {
    /// Opens (and migrates) the database, prepares the compiler and binds the listener.
    pub async fn start(config: CompilerConfig) -> Result<CompilerService, ServiceError> {
        let store = Store::open(&config.database_url).await?;
        let metrics = Arc::new(metrics::Metrics::new());
        let observer = metrics.clone();
        let compiler = Compiler::new(store, config.options, &ABI_SOURCES)?
            .with_observer(move |event| observer.event(event));
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|cause| ServiceError::Bind {
                    addr: config.bind.to_string(),
                    cause,
                })?;
        Ok(CompilerService {
            state: Arc::new(AppState {
                compiler,
                metrics,
                started: Instant::now(),
            }),
            listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn compiler(&self) -> &Compiler {
        &self.state.compiler
    }

    /// Builds and answers probes until `stop` completes; then stops the worker (an in-flight
    /// build is released to pending), stops answering and closes the database.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = watch::channel(false);
        let compiler = self.state.compiler.clone();
        let worker = tokio::spawn(async move {
            compiler.run(stop_rx).await;
            let _ = done_tx.send(true);
        });
        let stopper = stop_tx.clone();
        let shutdown = async move {
            stop.await;
            tracing::info!("stopping: an in-flight build is released to pending");
            let _ = stopper.send(true);
            let _ = done_rx.wait_for(|d| *d).await;
        };
        let served = axum::serve(self.listener, router(self.state.clone()))
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = worker.await;
        self.state.compiler.store().close().await;
        served
    }
}

/// The probes: `/health`, `/v1/status`, `/metrics`; anything else is a JSON 404.
fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/status", get(status))
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn health() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "no such endpoint; the compiler serves GET /health, GET /v1/status and GET /metrics",
            "code": "route_not_found",
        })),
    )
        .into_response()
}

fn rfc3339(ms: Option<Millis>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// The queue from the database, or why it could not be read.
async fn counts(compiler: &Compiler) -> Result<BuildCounts, String> {
    match tokio::time::timeout(STATUS_DB_TIMEOUT, compiler.counts()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the database did not answer within {}s",
            STATUS_DB_TIMEOUT.as_secs()
        )),
    }
}

/// The status document (`GET /v1/status`).
pub fn status_document(
    state: &CompilerState,
    counts: &Result<BuildCounts, String>,
    uptime: Duration,
    backend: &str,
    signing: bool,
) -> Value {
    let error = counts.as_ref().err().cloned().or(state.last_error.clone());
    let status = if state.stopping {
        "stopping"
    } else if error.is_some() {
        "degraded"
    } else {
        "ok"
    };
    let count = |f: fn(&BuildCounts) -> i64| counts.as_ref().map_or(Value::Null, |c| f(c).into());
    let since = state
        .last_contact
        .map(|t| Value::from(((now_ms() - t).max(0) / 1000) as u64))
        .unwrap_or(Value::Null);
    let current = state.current.as_ref().map(|c| {
        json!({
            "package_id": c.package_id,
            "tenant_id": c.tenant,
            "name": c.name,
            "version": c.version,
            "started_at": rfc3339(Some(c.started_at)),
        })
    });
    json!({
        "status": status,
        "pending": count(|c| c.pending),
        "building": count(|c| c.building),
        "failed": count(|c| c.failed),
        "seconds_since_heartbeat": since,
        "last_success_at": rfc3339(state.last_success_at),
        "last_failure_at": rfc3339(state.last_failure_at),
        "current_build": current,
        "builds_succeeded": state.builds_succeeded,
        "builds_failed": state.builds_failed,
        "worker_id": state.worker_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime.as_secs(),
        "backend": backend,
        "signing": signing,
        "error": error,
    })
}

async fn status(State(state): State<Shared>) -> Response {
    let c = &state.compiler;
    let counts = counts(c).await;
    let doc = status_document(
        &c.state(),
        &counts,
        state.started.elapsed(),
        c.store().backend_name(),
        c.options().signing_key.is_some(),
    );
    (StatusCode::OK, axum::Json(doc)).into_response()
}

async fn render_metrics(State(state): State<Shared>) -> Response {
    let counts = counts(&state.compiler).await.ok();
    let text = state.metrics.render(counts.as_ref());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloacina::compiler::CurrentBuild;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state() -> CompilerState {
        CompilerState {
            worker_id: "h/1/abc".into(),
            last_contact: Some(now_ms() - 3_500),
            last_error: None,
            current: None,
            last_success_at: Some(0),
            last_failure_at: None,
            builds_succeeded: 1,
            builds_failed: 0,
            stopping: false,
        }
    }

    #[test]
    fn the_status_document_has_the_contracts_fields() {
        let counts = Ok(BuildCounts {
            pending: 2,
            building: 1,
            failed: 0,
            success: 3,
        });
        let doc = status_document(&state(), &counts, Duration::from_secs(9), "sqlite", false);
        assert_eq!(doc["status"], "ok");
        assert_eq!(
            (doc["pending"].clone(), doc["building"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(doc["seconds_since_heartbeat"], 3);
        assert_eq!(doc["last_success_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(doc["last_failure_at"], Value::Null);
        assert_eq!(doc["current_build"], Value::Null);

        let mut s = state();
        s.current = Some(CurrentBuild {
            package_id: uuid_like(),
            tenant: "public".into(),
            name: "etl".into(),
            version: "1.0.0".into(),
            started_at: 0,
        });
        let doc = status_document(&s, &Err("down".into()), Duration::ZERO, "postgres", true);
        assert_eq!(doc["status"], "degraded");
        assert_eq!(doc["pending"], Value::Null);
        assert_eq!(doc["error"], "down");
        assert_eq!(doc["current_build"]["name"], "etl");
        s.stopping = true;
        assert_eq!(
            status_document(&s, &counts_ok(), Duration::ZERO, "sqlite", false)["status"],
            "stopping"
        );
    }

    fn counts_ok() -> Result<BuildCounts, String> {
        Ok(BuildCounts::default())
    }

    fn uuid_like() -> uuid::Uuid {
        uuid::Uuid::nil()
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn probes_answer() {
        let home = tempfile::tempdir().expect("home");
        let url = format!("sqlite://{}", home.path().join("c.db").display());
        let mut options = CompilerOptions::new(home.path());
        options.worker_id = "test-worker".into();
        let service = CompilerService::start(CompilerConfig {
            database_url: url,
            bind: "127.0.0.1:0".parse().expect("addr"),
            options,
        })
        .await
        .expect("start");
        let router = router(service.state.clone());
        let (code, body) = get(router.clone(), "/health").await;
        assert_eq!(
            (code, body.as_str()),
            (StatusCode::OK, r#"{"status":"ok"}"#)
        );
        let (code, body) = get(router.clone(), "/v1/status").await;
        assert_eq!(code, StatusCode::OK);
        let doc: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(doc["status"], "ok", "{doc}");
        assert_eq!(
            (doc["pending"].clone(), doc["building"].clone()),
            (json!(0), json!(0))
        );
        assert_eq!(doc["worker_id"], "test-worker");
        let (code, body) = get(router.clone(), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("cloacina_compiler_queue_depth 0"), "{body}");
        let (code, body) = get(router, "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body.contains("route_not_found"), "{body}");
        // The ABI crates were written where the options say.
        let abi = home.path().join("compiler/abi");
        let written: Vec<_> = std::fs::read_dir(&abi).expect("abi dir").collect();
        assert_eq!(written.len(), 1);
        service.compiler().store().close().await;
    }
}
