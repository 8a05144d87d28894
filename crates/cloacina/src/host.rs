//! A host: everything a process needs to serve packages on one store — the runner, the cron
//! and trigger schedulers, the reactor registry and the reconciler that drives them — built
//! together, reconfigured together and stopped in one defined order. The daemon, the server
//! and the compiler assemble their runtime through it, so they start and stop alike.
//!
//! **Stopping.** [`Host::shutdown`] goes from what creates work to what does it, so that no
//! component is stopped while another can still hand it something:
//!
//! 1. the reconciler is closed (a pass in progress ends; nothing loads or unloads after),
//! 2. the cron scheduler, then the trigger scheduler (no new runs from schedules or polls),
//! 3. the reactor registry (no new firings; firings in progress finish, so the runs they
//!    start are submitted before the drain),
//! 4. the runner drains: it stops claiming, waits for running tasks up to the timeout, then
//!    hands the leases of the rest back,
//! 5. the store closes: queued writes commit, connections close (on SQLite the WAL is
//!    checkpointed), and later calls fail with [`crate::StoreError::Closed`].
//!
//! Packages stay open while the reconciler (or a clone of a component holding them) lives:
//! their code may run until the drain ends, so nothing unmaps a library during the stop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::engine::{EngineError, Runner, RunnerConfig, ShutdownReport};
use crate::package::signing::SignaturePolicy;
use crate::reconciler::{Reconciler, Runtime};
use crate::registry::{
    ReactorRegistry, RegistryStopReport, TenantWorkflowStarter, WorkflowStarter,
};
use crate::schedule::cron::{CronConfig, CronScheduler};
use crate::schedule::trigger::{TriggerConfig, TriggerScheduler};
use crate::store::Store;

/// How the workflows a reactor lists are started when it fires.
#[derive(Clone, Default)]
pub enum ReactorStarter {
    /// Submitted to this host's runner (one tenant: the daemon).
    #[default]
    Runner,
    /// Through this function.
    Custom(WorkflowStarter),
    /// Through this function, told the tenant and owner package (a multi-tenant server that
    /// picks the tenant's runner).
    Tenant(TenantWorkflowStarter),
    /// Not at all: firings run their graphs only.
    None,
    /// Through `registry`, shared by the tenants of one server so that a graph of one tenant
    /// can bind to another tenant's reactor (`"tenant/reactor"`) and the bound-subscriber
    /// guard sees every tenant's subscribers. This host is `tenant`: its shutdown stops only
    /// that tenant's reactors.
    Shared {
        registry: ReactorRegistry,
        tenant: String,
    },
}

impl std::fmt::Debug for ReactorStarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReactorStarter::Runner => "Runner",
            ReactorStarter::Custom(_) => "Custom",
            ReactorStarter::Tenant(_) => "Tenant",
            ReactorStarter::None => "None",
            ReactorStarter::Shared { .. } => "Shared",
        })
    }
}

/// What a host is built from, besides its store.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The runner's settings; its `shutdown_timeout` is the drain's until
    /// [`Host::apply`] changes it.
    pub runner: RunnerConfig,
    pub cron: CronConfig,
    pub triggers: TriggerConfig,
    /// Where the reconciler keeps the content-addressed copies of package libraries.
    pub library_cache: PathBuf,
    /// What an archive's signature must be before it is loaded.
    pub signatures: SignaturePolicy,
    pub reactor_starter: ReactorStarter,
    /// The name of the service instance this host belongs to (e.g. `daemon-<id>` from
    /// [`instance_id`]), set only by a process whose PID-file lock proves that no other process
    /// of the instance runs. Its runners then claim as `<instance>/<pid>-<token>/…`, and at
    /// start the leases still held under `<instance>/` by earlier, dead processes end at once:
    /// after a crash their tasks run again without waiting out the lease (30 s).
    pub instance: Option<String>,
}

impl HostConfig {
    /// Default settings, with libraries cached in `library_cache`.
    pub fn new(library_cache: impl Into<PathBuf>) -> Self {
        HostConfig {
            runner: RunnerConfig::default(),
            cron: CronConfig::default(),
            triggers: TriggerConfig::default(),
            library_cache: library_cache.into(),
            signatures: SignaturePolicy::permissive(),
            reactor_starter: ReactorStarter::Runner,
            instance: None,
        }
    }
}

/// File in a home directory naming the service instances that run from it.
pub const INSTANCE_ID_FILE: &str = "instance-id";

/// This home's instance id: read from `<home>/instance-id`, or made (16 random hex digits)
/// and written there the first time. It outlives processes, so a new process of a service
/// can recognise the leases its dead predecessors left (see [`HostConfig::instance`]).
pub fn instance_id(home: &std::path::Path) -> std::io::Result<String> {
    let path = home.join(INSTANCE_ID_FILE);
    let valid = |t: &str| t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit());
    if let Ok(text) = std::fs::read_to_string(&path)
        && valid(text.trim())
    {
        return Ok(text.trim().to_string());
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let tmp = home.join(format!(".{INSTANCE_ID_FILE}.{}", std::process::id()));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Tells this process's runners from those of an earlier process with the same pid.
static PROCESS_TOKEN: std::sync::LazyLock<u32> = std::sync::LazyLock::new(rand::random);

/// The settings a running host can change (a configuration reload): each applies from the
/// components' next pass, poll or load.
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub cron: CronConfig,
    pub triggers: TriggerConfig,
    /// How long [`Host::shutdown`] waits for running tasks.
    pub shutdown_timeout: Duration,
    /// For the loads that follow; packages already loaded stay.
    pub signatures: SignaturePolicy,
}

/// Why a host could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot start the runner: {0}")]
    Start(EngineError),
    /// The drain could not hand back the leases of the tasks still running at the timeout;
    /// they are recovered once their leases expire. The store was closed anyway.
    #[error(
        "the runner's drain failed: {0}; tasks still running are recovered when their leases expire"
    )]
    Drain(EngineError),
}

impl crate::error::ErrorCode for HostError {
    fn code(&self) -> &'static str {
        match self {
            HostError::Start(e) | HostError::Drain(e) => e.code(),
        }
    }
}

/// One step of [`Host::shutdown`], in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopStep {
    Reconciler,
    Cron,
    Triggers,
    Reactors,
    Runner,
    Store,
}

/// What [`Host::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStopReport {
    /// The steps done, in order.
    pub steps: Vec<StopStep>,
    pub reactors: RegistryStopReport,
    /// Tasks that finished during the drain.
    pub drained: usize,
    /// Tasks whose leases were handed back (not started, or still running at the timeout).
    pub released: usize,
}

/// The runtime of one process on one store. See the module documentation.
pub struct Host {
    store: Store,
    runner: Runner,
    cron: CronScheduler,
    triggers: TriggerScheduler,
    reactors: ReactorRegistry,
    /// Set when `reactors` is shared with other tenants' hosts: this host's tenant.
    shared_tenant: Option<String>,
    reconciler: Arc<Reconciler>,
    shutdown_timeout: Mutex<Duration>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("store", &self.store)
            .field("runner", &self.runner)
            .finish()
    }
}

impl Host {
    /// Starts the runner (it recovers expired leases at once) and the cron scheduler on
    /// `store`; the trigger scheduler and the reactors start with the packages the reconciler
    /// loads. Nothing is loaded yet: run the reconciler's passes.
    pub async fn start(store: Store, config: HostConfig) -> Result<Host, HostError> {
        let shutdown_timeout = config.runner.shutdown_timeout;
        let mut runner_config = config.runner;
        if let Some(instance) = &config.instance {
            let own = format!("{instance}/{}-{:08x}/", std::process::id(), *PROCESS_TOKEN);
            if runner_config.runner_id.is_none() {
                let id = uuid::Uuid::new_v4().simple().to_string();
                runner_config.runner_id = Some(format!("{own}{}", &id[..8]));
            }
            // Earlier processes of this instance are dead (the caller holds their lock): the
            // runner's first recovery pass, at its start, takes their tasks back at once.
            let ended = store
                .lease_expire_owners(&format!("{instance}/"), &own)
                .await
                .map_err(|e| HostError::Start(EngineError::from(e)))?;
            if ended > 0 {
                tracing::info!(instance = %instance, tasks = ended, "taking back the tasks an earlier process of this instance held when it died");
            }
        }
        let runner = Runner::start(store.clone(), runner_config)
            .await
            .map_err(HostError::Start)?;
        let cron = CronScheduler::new(store.clone(), runner.clone(), config.cron);
        cron.start();
        let triggers = TriggerScheduler::new(store.clone(), runner.clone(), config.triggers);
        let mut shared_tenant = None;
        let reactors = match config.reactor_starter {
            ReactorStarter::Runner => {
                let r = runner.clone();
                ReactorRegistry::new(Some(Arc::new(move |workflow: String, ctx| {
                    let r = r.clone();
                    Box::pin(
                        async move { r.submit(&workflow, ctx).await.map_err(|e| e.to_string()) },
                    )
                })))
            }
            ReactorStarter::Custom(s) => ReactorRegistry::new(Some(s)),
            ReactorStarter::Tenant(s) => ReactorRegistry::with_tenant_starter(s),
            ReactorStarter::None => ReactorRegistry::new(None),
            ReactorStarter::Shared { registry, tenant } => {
                registry.tenant_start(&tenant);
                shared_tenant = Some(tenant);
                registry
            }
        };
        let reconciler = Arc::new(
            Reconciler::new(
                Runtime {
                    runner: runner.clone(),
                    reactors: reactors.clone(),
                    cron: cron.clone(),
                    triggers: triggers.clone(),
                },
                config.library_cache,
            )
            .with_signature_policy(config.signatures),
        );
        Ok(Host {
            store,
            runner,
            cron,
            triggers,
            reactors,
            shared_tenant,
            reconciler,
            shutdown_timeout: Mutex::new(shutdown_timeout),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    pub fn cron(&self) -> &CronScheduler {
        &self.cron
    }

    pub fn triggers(&self) -> &TriggerScheduler {
        &self.triggers
    }

    pub fn reactors(&self) -> &ReactorRegistry {
        &self.reactors
    }

    /// The reconciler; shared, so a status reporter or an HTTP handler can hold it.
    pub fn reconciler(&self) -> &Arc<Reconciler> {
        &self.reconciler
    }

    /// How long [`Host::shutdown`] waits for running tasks.
    pub fn shutdown_timeout(&self) -> Duration {
        *crate::sync::lock(&self.shutdown_timeout)
    }

    /// Applies new settings while the host runs (a configuration reload).
    pub fn apply(&self, settings: HostSettings) {
        self.cron.set_config(settings.cron);
        self.triggers.set_config(settings.triggers);
        self.reconciler.set_signature_policy(settings.signatures);
        *crate::sync::lock(&self.shutdown_timeout) = settings.shutdown_timeout;
    }

    /// Stops everything in the order of the module documentation, draining running tasks for
    /// up to [`Host::shutdown_timeout`].
    pub async fn shutdown(self) -> Result<HostStopReport, HostError> {
        let timeout = self.shutdown_timeout();
        self.shutdown_within(timeout).await
    }

    /// [`Host::shutdown`] with `timeout` for the drain. The store is closed even when the
    /// drain fails.
    pub async fn shutdown_within(self, timeout: Duration) -> Result<HostStopReport, HostError> {
        let mut steps = Vec::with_capacity(6);
        self.reconciler.close().await;
        steps.push(StopStep::Reconciler);
        self.cron.stop().await;
        steps.push(StopStep::Cron);
        self.triggers.stop().await;
        steps.push(StopStep::Triggers);
        let reactors = match &self.shared_tenant {
            Some(tenant) => self.reactors.tenant_stop(tenant).await,
            None => self.reactors.stop().await,
        };
        steps.push(StopStep::Reactors);
        let drained = self.runner.shutdown_within(timeout).await;
        steps.push(StopStep::Runner);
        self.store.close().await;
        steps.push(StopStep::Store);
        let ShutdownReport { drained, released } = drained.map_err(HostError::Drain)?;
        tracing::debug!(?steps, drained, released, "host stopped");
        Ok(HostStopReport {
            steps,
            reactors,
            drained,
            released,
        })
    }
}
