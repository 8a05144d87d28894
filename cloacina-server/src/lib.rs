//! `cloacina-server`: the multi-tenant HTTP control plane. The binary parses flags, sets up
//! logging and the PID file and handles signals; everything else is here, by concept:
//! [`config`], [`tenants`] (each tenant's runtime), [`sync`] (packages from the database to
//! every replica's reconciler), [`auth`] (who is calling), [`bootstrap`] (the first key),
//! [`routes`] (one module per resource), [`error`] (the one error shape), [`metrics`].

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod serve;
pub mod state;
pub mod sync;
pub mod tenants;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use axum::Router;
use cloacina::RunnerConfig;
use cloacina::host::{HostConfig, ReactorStarter};
use cloacina::package::signing::{SignaturePolicy, load_public_key};
use cloacina::schedule::trigger::TriggerConfig;
use cloacina::store::Store;
use cloacina::tenant::ADMIN_TENANT;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub use config::ServerConfig;
use state::{AppState, SharedState};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] cloacina::StoreError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(
        "--require-signatures needs at least one trusted public key (--trusted-key FILE); without one no upload could ever be accepted"
    )]
    NoTrustedKeys,
    #[error(transparent)]
    Signature(#[from] cloacina::package::signing::SignatureError),
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("cannot start tenant '{tenant}': {message}")]
    Tenant { tenant: String, message: String },
    #[error("cannot create {path}: {cause}")]
    Home { path: String, cause: std::io::Error },
}

/// A started server: tenants running, listener bound, not yet answering.
pub struct Server {
    state: SharedState,
    listener: TcpListener,
    router: Router,
    pub bootstrap: bootstrap::Bootstrap,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl Server {
    /// Opens the database (migrating it), sets up the bootstrap key, starts every tenant's
    /// runtime, loads the packages, and binds the listener.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        for dir in [config.home.clone(), config.cache_dir()] {
            std::fs::create_dir_all(&dir).map_err(|cause| ServerError::Home {
                path: dir.display().to_string(),
                cause,
            })?;
        }
        let signatures = signature_policy(&config)?;
        // Store errors name the database (with the password redacted).
        let control = Store::open(&config.database_url).await?;
        let bootstrap = bootstrap::ensure(
            &control,
            config.bootstrap_key.as_deref(),
            &config.bootstrap_key_file(),
        )
        .await?;
        let template = HostConfig {
            runner: RunnerConfig {
                shutdown_timeout: config.shutdown_timeout,
                ..RunnerConfig::default()
            },
            cron: Default::default(),
            triggers: TriggerConfig {
                claim_polls: true,
                ..TriggerConfig::default()
            },
            library_cache: config.cache_dir().join("libraries"),
            signatures: signatures.clone(),
            reactor_starter: ReactorStarter::Runner,
            instance: config.instance.clone(),
        };
        let tenants =
            tenants::Tenants::new(config.database_url.clone(), config.home.clone(), template);
        let tenant_err = |tenant: &str, e: error::ApiError| ServerError::Tenant {
            tenant: tenant.to_string(),
            message: e.message,
        };
        tenants
            .insert(ADMIN_TENANT, control.clone())
            .await
            .map_err(|e| tenant_err(ADMIN_TENANT, e))?;
        for t in control.tenant_list().await? {
            tenants
                .open(&t.name)
                .await
                .map_err(|e| tenant_err(&t.name, e))?;
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|cause| ServerError::Bind {
                addr: config.bind.to_string(),
                cause,
            })?;
        let state: SharedState = Arc::new(AppState {
            config,
            control,
            tenants,
            started: Instant::now(),
            metrics: metrics::Metrics::new(),
            signatures,
            sync_wake: Notify::new(),
            last_sync: AtomicI64::new(0),
            stopping: watch::channel(false).0,
        });
        // Packages (and paused workflows) are in place before the first request.
        if let Err(e) = sync::pass(&state).await {
            tracing::error!("first package reconciliation failed: {}", e.message);
        }
        let router = router(state.clone());
        Ok(Server {
            state,
            listener,
            router,
            bootstrap,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Answers requests until `stop` completes; then answers `/ready` with 503 and keeps
    /// serving for the drain grace, then stops accepting, lets requests in flight finish, stops
    /// the package sync, and stops every tenant (their runs drained within the shutdown
    /// timeout).
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (sync_stop, sync_rx) = watch::channel(false);
        let sync = tokio::spawn(sync::run(self.state.clone(), sync_rx));
        let stopping = self.state.stopping.clone();
        let grace = self.state.config.drain_grace;
        let stop = async move {
            stop.await;
            stopping.send_replace(true);
            if !grace.is_zero() {
                tracing::info!(
                    grace_ms = grace.as_millis() as u64,
                    "draining: /ready answers 503, still serving"
                );
                tokio::time::sleep(grace).await;
            }
        };
        let served = serve::run(
            self.listener,
            self.router,
            self.state.config.limits,
            self.state.metrics.connection_stats(),
            stop,
        )
        .await;
        let _ = sync_stop.send(true);
        let _ = sync.await;
        self.state
            .tenants
            .shutdown(self.state.config.shutdown_timeout)
            .await;
        served
    }
}

fn signature_policy(config: &ServerConfig) -> Result<SignaturePolicy, ServerError> {
    let keys = config
        .trusted_keys
        .iter()
        .map(|p| load_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    if config.require_signatures && keys.is_empty() {
        return Err(ServerError::NoTrustedKeys);
    }
    Ok(SignaturePolicy::new(config.require_signatures, keys)?)
}

/// The whole HTTP surface: the API's routes, the one error shape for everything (unknown
/// routes and wrong methods included), request ids, metrics, body limits.
pub fn router(state: SharedState) -> Router {
    let max_upload = state.config.max_upload_bytes;
    let (api, _) = routes::api_with_upload_limit(max_upload).split_for_parts();
    api.fallback(middleware::route_not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            middleware::JSON_BODY_LIMIT,
        ))
        .with_state(state)
}
