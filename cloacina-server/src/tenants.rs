//! Every tenant's runtime, opened at server start (not lazily on a first request): its own
//! store (a PostgreSQL schema, or a SQLite file under `<home>/tenants/`) and a
//! [`cloacina::Host`] on it — runner, cron, triggers, reactors and the reconciler — so each
//! tenant's schedules and packages run from the moment the server is up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cloacina::host::{Host, HostConfig, ReactorStarter};
use cloacina::registry::{ReactorRegistry, StartRequest};
use cloacina::store::Store;
use cloacina::sync::{read, write};
use cloacina::tenant::{ADMIN_TENANT, tenant_store_location};

use crate::error::ApiError;

/// One tenant's runtime.
pub struct Tenant {
    pub name: String,
    pub host: Host,
    /// Serialises this tenant's reconciler passes with package deletes, so a pass never
    /// reloads a package a delete is unloading.
    pub packages: tokio::sync::Mutex<()>,
}

impl Tenant {
    pub fn store(&self) -> &Store {
        self.host.store()
    }
}

type TenantMap = RwLock<BTreeMap<String, Arc<Tenant>>>;

/// The open tenants, by name, and the one reactor registry they share: a graph of one tenant
/// may bind to another tenant's reactor (`"publisher-tenant/price_reactor"`), and the
/// bound-subscriber guard then refuses the publisher's unload whatever tenant the subscriber
/// is in.
pub struct Tenants {
    map: Arc<TenantMap>,
    reactors: ReactorRegistry,
    base_url: String,
    home: PathBuf,
    template: HostConfig,
}

impl Tenants {
    pub fn new(base_url: String, home: PathBuf, template: HostConfig) -> Self {
        let map: Arc<TenantMap> = Arc::new(RwLock::new(BTreeMap::new()));
        // A firing starts its workflows in the reactor's own tenant. Weak: the map holds the
        // hosts, which hold this registry.
        let weak = Arc::downgrade(&map);
        let reactors = ReactorRegistry::with_tenant_starter(Arc::new(move |req: StartRequest| {
            let tenant = weak
                .upgrade()
                .and_then(|m| cloacina::sync::read(&m).get(&req.tenant).cloned());
            Box::pin(async move {
                let tenant =
                    tenant.ok_or_else(|| format!("tenant '{}' is not running", req.tenant))?;
                tenant
                    .host
                    .runner()
                    .submit(&req.workflow, req.context)
                    .await
                    .map_err(|e| e.to_string())
            })
        }));
        Tenants {
            map,
            reactors,
            base_url,
            home,
            template,
        }
    }

    /// The reactor registry every tenant's host shares.
    pub fn reactors(&self) -> &ReactorRegistry {
        &self.reactors
    }

    /// Starts `name`'s runtime on `store` (the `public` tenant shares the control store).
    pub async fn insert(&self, name: &str, store: Store) -> Result<Arc<Tenant>, ApiError> {
        let config = HostConfig {
            reactor_starter: ReactorStarter::Shared {
                registry: self.reactors.clone(),
                tenant: name.to_string(),
            },
            ..self.template.clone()
        };
        let host = Host::start(store, config).await?;
        let tenant = Arc::new(Tenant {
            name: name.to_string(),
            host,
            packages: tokio::sync::Mutex::new(()),
        });
        write(&self.map).insert(name.to_string(), tenant.clone());
        tracing::info!(tenant = name, "tenant runtime started");
        Ok(tenant)
    }

    /// Opens (creating and migrating) `name`'s store and starts its runtime.
    pub async fn open(&self, name: &str) -> Result<Arc<Tenant>, ApiError> {
        let store = self.open_store(name).await?;
        self.insert(name, store).await
    }

    async fn open_store(&self, name: &str) -> Result<Store, ApiError> {
        let (url, options) = tenant_store_location(&self.base_url, &self.home, name)?;
        if let Some(parent) = url
            .strip_prefix("sqlite://")
            .map(std::path::Path::new)
            .and_then(|p| p.parent())
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                ApiError::internal(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        Ok(Store::open_with(&url, options).await?)
    }

    /// The tenant named exactly `name`, or a 404 naming it.
    pub fn get(&self, name: &str) -> Result<Arc<Tenant>, ApiError> {
        read(&self.map).get(name).cloned().ok_or_else(|| {
            ApiError::not_found(
                "tenant_not_found",
                format!(
                    "tenant '{name}' does not exist; 'cloacinactl tenant list' shows the tenants"
                ),
            )
        })
    }

    pub fn all(&self) -> Vec<Arc<Tenant>> {
        read(&self.map).values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        read(&self.map).keys().cloned().collect()
    }

    /// Stops `name`'s runtime (schedules, triggers, reactors, runs: drained within
    /// `timeout`), closes its store and deletes its data (the schema or the file). Each failed
    /// step is returned, so the caller reports a failure, not a success.
    pub async fn remove(
        &self,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<TenantRemoval, ApiError> {
        let mut removal = match self.detach(name) {
            // The pool is evicted now: nobody gets this tenant's runtime any more.
            Some(tenant) => stop_detached(tenant, timeout).await,
            None => TenantRemoval::default(),
        };
        self.reactors.tenant_forget(name);
        if let Err(e) = self.drop_data(name).await {
            removal.failures.push(e);
        }
        Ok(removal)
    }

    async fn drop_data(&self, name: &str) -> Result<(), String> {
        let (url, _) =
            tenant_store_location(&self.base_url, &self.home, name).map_err(|e| e.to_string())?;
        if let Some(path) = url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{path}{suffix}");
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("deleting {file}: {e}")),
                }
            }
            return Ok(());
        }
        let store = self
            .open_store(name)
            .await
            .map_err(|e| format!("opening its schema to drop it: {}", e.message))?;
        let dropped = store.schema_drop().await;
        store.close().await;
        dropped.map_err(|e| format!("dropping its schema: {e}"))
    }

    /// Takes `name`'s runtime out of the map without deleting its data (a tenant deleted
    /// through another replica); stop it with [`stop_detached`].
    pub fn detach(&self, name: &str) -> Option<Arc<Tenant>> {
        write(&self.map).remove(name)
    }

    /// Stops every tenant, the admin tenant last (its store is the control plane's).
    pub async fn shutdown(&self, timeout: std::time::Duration) {
        let all: Vec<(String, Arc<Tenant>)> =
            std::mem::take(&mut *write(&self.map)).into_iter().collect();
        let (admin, others): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|(name, _)| name == ADMIN_TENANT);
        for (name, tenant) in others.into_iter().chain(admin) {
            let report = stop_detached(tenant, timeout).await;
            for failure in &report.failures {
                tracing::error!(tenant = %name, "{failure}");
            }
            tracing::info!(
                tenant = %name,
                drained = report.drained,
                released = report.released,
                "tenant stopped"
            );
        }
    }
}

/// Stops a runtime taken out of the map: its schedules, triggers, reactors and runner (drained
/// within `timeout`), then its store.
pub async fn stop_detached(tenant: Arc<Tenant>, timeout: std::time::Duration) -> TenantRemoval {
    let mut removal = TenantRemoval::default();
    match Arc::try_unwrap(tenant) {
        Ok(tenant) => match tenant.host.shutdown_within(timeout).await {
            Ok(report) => {
                removal.drained = report.drained;
                removal.released = report.released;
            }
            Err(e) => removal.failures.push(format!("stopping its runtime: {e}")),
        },
        Err(shared) => {
            // A request in flight still holds it: stop what creates and runs work now; the
            // last holder's drop closes the connections.
            shared.host.reconciler().close().await;
            shared.host.cron().stop().await;
            shared.host.triggers().stop().await;
            match shared.host.runner().shutdown_within(timeout).await {
                Ok(report) => {
                    removal.drained = report.drained;
                    removal.released = report.released;
                }
                Err(e) => removal.failures.push(format!("stopping its runner: {e}")),
            }
            shared.host.store().close().await;
        }
    }
    removal
}

/// What a tenant removal did.
#[derive(Debug, Default)]
pub struct TenantRemoval {
    pub drained: usize,
    pub released: usize,
    /// Steps that failed, each saying what and why.
    pub failures: Vec<String>,
}
