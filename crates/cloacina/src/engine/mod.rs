//! The runner: durable, event-driven execution of workflows on SQLite or PostgreSQL.
//!
//! Work flows like this. `submit` writes the execution and its root tasks as `Ready` in one
//! transaction; the store signals `TasksReady`. The dispatcher, woken by that signal (in
//! process at once; from other processes through `LISTEN/NOTIFY`), claims as many ready tasks
//! as it may hold (`concurrency` plus `prefetch`) — each claim a status-checked update that
//! bumps the attempt, the fencing token — and runs them, `concurrency` at a time. A held task
//! whose execution was paused (or whose runner began to stop) before it got a slot is handed
//! back unrun. When a body ends, its output, its status, its dependents'
//! readiness, the execution's counters and the events commit in one transaction; the
//! dependents that became ready wake the dispatcher again. Polling is only a slow safety net.
//!
//! Guarantee: each task body runs at least once per successful attempt and its committed
//! result is recorded exactly once; a body runs again only after its lease expired (counted
//! as a recovery, with an event) or after its runner shut down past the drain timeout.

mod cache;
mod config;
mod executor;
mod waiters;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use config::RunnerConfig;

use crate::store::{
    AttemptOutcome, ClaimRequest, ClaimedTask, EventRecord, ExecutionFilter, ExecutionRecord,
    ExecutionStatus, Handoff, NewExecution, Store, StoreError, StoreSignal, TaskFinish, TaskRecord,
    now_ms,
};
use crate::workflow::{Context, Workflow, WorkflowError};

/// Why a runner operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error(
        "workflow '{name}' is not registered on this runner{}",
        suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default()
    )]
    UnknownWorkflow {
        name: String,
        suggestion: Option<String>,
    },
    #[error("execution {0} not found")]
    ExecutionNotFound(Uuid),
    #[error("timed out after {0:?} waiting for execution {1} to finish; it is still running")]
    WaitTimeout(Duration, Uuid),
    #[error("the runner is shutting down; no new work is accepted")]
    ShuttingDown,
    #[error("invalid runner configuration: {0}")]
    Config(String),
    #[error("workflow '{0}' is paused: no new runs start until it is resumed")]
    WorkflowPaused(String),
}

impl crate::error::ErrorCode for EngineError {
    fn code(&self) -> &'static str {
        match self {
            EngineError::Store(e) => e.code(),
            EngineError::Workflow(e) => e.code(),
            EngineError::UnknownWorkflow { .. } => "workflow_not_found",
            EngineError::ExecutionNotFound(_) => "execution_not_found",
            EngineError::WaitTimeout(..) => "wait_timeout",
            EngineError::ShuttingDown => "shutting_down",
            EngineError::Config(_) => "config_invalid",
            EngineError::WorkflowPaused(_) => "workflow_paused",
        }
    }
}

/// How an execution ended (or stands, for `status`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionResult {
    pub id: Uuid,
    pub workflow: String,
    pub status: ExecutionStatus,
    /// The final context (input merged with the leaf outputs); absent unless the run ended
    /// Completed or Failed.
    pub context: Option<Context>,
    pub error: Option<String>,
}

/// What `shutdown` did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShutdownReport {
    /// Tasks that finished during the drain.
    pub drained: usize,
    /// Tasks whose leases were handed back: held ones that had not started when the drain
    /// began, and those still running at the timeout.
    pub released: usize,
}

/// Counters for observability and tests.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub claimed: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub skipped: AtomicU64,
    /// Results discarded because the attempt had lost its lease to a newer one.
    pub fenced: AtomicU64,
    /// Tasks (of any runner) this runner put back to Ready after a lost lease.
    pub recovered: AtomicU64,
    /// Held tasks handed back before they started (execution paused, runner stopping).
    pub handed_back: AtomicU64,
    /// Durations (seconds) of attempts that ended since the last [`RunnerStats::task_durations`],
    /// for a metrics histogram; at most [`DURATION_SAMPLES`] are kept between two reads.
    durations: Mutex<Vec<f64>>,
}

/// Most attempt durations kept between two reads of [`RunnerStats::task_durations`].
pub const DURATION_SAMPLES: usize = 65_536;

impl RunnerStats {
    /// Takes the attempt durations (seconds) recorded since the last call.
    pub fn task_durations(&self) -> Vec<f64> {
        std::mem::take(&mut *lock(&self.durations))
    }

    fn record_duration(&self, seconds: f64) {
        let mut d = lock(&self.durations);
        if d.len() < DURATION_SAMPLES {
            d.push(seconds);
        }
    }
}

/// Registered workflows: the current version per name, and every version seen, so runs keep
/// the version they started with.
#[derive(Default)]
struct Catalog {
    current: HashMap<String, Served>,
    versions: HashMap<(String, String), Arc<Workflow>>,
}

/// The version that serves a workflow name, and the package it came from (none when the
/// workflow was registered by embedding code).
#[derive(Clone)]
struct Served {
    workflow: Arc<Workflow>,
    package_id: Option<String>,
}

/// One line of the workflow catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CatalogEntry {
    pub name: String,
    pub version: String,
    pub package_id: Option<String>,
}

struct Shared {
    store: Store,
    config: RunnerConfig,
    owner: String,
    catalog: RwLock<Catalog>,
    wake: Notify,
    /// Tasks this runner holds (claimed, result not yet recorded): `concurrency + prefetch`.
    holds: Arc<Semaphore>,
    /// Task bodies running at once: `concurrency`. A body gives its slot back as soon as it
    /// returns, so a held task can run while the finished one's result is being committed.
    bodies: Semaphore,
    /// Running tasks per execution, with the execution's cancellation switch.
    running: Mutex<HashMap<Uuid, (watch::Sender<bool>, usize)>>,
    /// Tracked executions last seen paused: their held tasks that have not started yet are
    /// handed back instead of run.
    paused: Mutex<HashSet<Uuid>>,
    /// Workflow names whose new runs are refused (a paused workflow).
    paused_workflows: RwLock<HashSet<String>>,
    /// Spawned task runners by slot id, so shutdown can count and abort them.
    tasks: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    next_slot: AtomicU64,
    stopping: AtomicBool,
    stats: RunnerStats,
    contexts: Mutex<cache::ContextCache>,
    /// Who waits for which execution's end ([`Runner::wait`], [`Runner::wait_record`]).
    waiters: Arc<waiters::Waiters>,
    /// Whether a finish also claims other ready work for its freed slot: the store's
    /// [`Capabilities::refill_on_finish`](crate::store::Capabilities::refill_on_finish), asked
    /// once at start.
    refill: bool,
}

/// The embedded runner. Clone it freely; clones share one runner.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
    background: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("owner", &self.shared.owner)
            .finish()
    }
}

/// How soon `wait` checks again after the database failed transiently.
const OUTAGE_RECHECK: Duration = Duration::from_millis(500);

/// Context documents kept in memory per runner (inputs it submitted, outputs it committed).
const CONTEXT_CACHE_ENTRIES: usize = 4096;

impl Runner {
    /// Opens the database at `url` (`sqlite://...` or `postgres://...`) and starts the runner.
    pub async fn open(url: &str, config: RunnerConfig) -> Result<Runner, EngineError> {
        config.validate()?;
        let store = Store::open(url).await?;
        Self::start(store, config).await
    }

    /// Starts a runner on an open store. Recovers expired leases at once, then dispatches.
    pub async fn start(store: Store, config: RunnerConfig) -> Result<Runner, EngineError> {
        config.validate()?;
        let owner = config.owner();
        let refill = store.capabilities().refill_on_finish;
        let shared = Arc::new(Shared {
            holds: Arc::new(Semaphore::new(config.held_max())),
            bodies: Semaphore::new(config.concurrency),
            store,
            owner,
            config,
            catalog: RwLock::new(Catalog::default()),
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashSet::new()),
            paused_workflows: RwLock::new(HashSet::new()),
            tasks: Mutex::new(HashMap::new()),
            next_slot: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            stats: RunnerStats::default(),
            contexts: Mutex::new(cache::ContextCache::new(CONTEXT_CACHE_ENTRIES)),
            waiters: Arc::default(),
            refill,
        });
        recover(&shared).await;
        let signals = shared.store.subscribe();
        let background = vec![
            tokio::spawn(dispatch_loop(shared.clone())),
            tokio::spawn(signal_loop(shared.clone(), signals)),
            tokio::spawn(heartbeat_loop(shared.clone())),
            tokio::spawn(recovery_loop(shared.clone())),
        ];
        Ok(Runner {
            shared,
            background: Arc::new(Mutex::new(background)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The lease owner name this runner claims under.
    pub fn runner_id(&self) -> &str {
        &self.shared.owner
    }

    pub fn stats(&self) -> &RunnerStats {
        &self.shared.stats
    }

    /// Makes `workflow` the current version of its name. Runs already started keep the
    /// version they started with.
    pub fn register(&self, workflow: Workflow) {
        self.serve(workflow, None);
    }

    /// Registers a workflow from a package: the name switches to this version at once (an
    /// upgrade has no window where the name is missing); runs already started keep theirs.
    pub fn register_packaged(&self, workflow: Workflow, package_id: &str) {
        self.serve(workflow, Some(package_id.to_string()));
    }

    fn serve(&self, workflow: Workflow, package_id: Option<String>) {
        let wf = Arc::new(workflow);
        let mut cat = write_lock(&self.shared.catalog);
        cat.versions.insert(
            (wf.name().to_string(), wf.version().to_string()),
            wf.clone(),
        );
        cat.current.insert(
            wf.name().to_string(),
            Served {
                workflow: wf,
                package_id,
            },
        );
        drop(cat);
        self.shared.wake.notify_one();
    }

    /// Removes a workflow name; its runs in flight may still finish on the versions held.
    pub fn unregister(&self, name: &str) -> bool {
        write_lock(&self.shared.catalog)
            .current
            .remove(name)
            .is_some()
    }

    /// Removes the names that `package_id` still serves (a name another package took over in
    /// an upgrade stays). Runs in flight finish on the versions held. Returns the names removed.
    pub fn unregister_package(&self, package_id: &str) -> Vec<String> {
        let mut cat = write_lock(&self.shared.catalog);
        let names: Vec<String> = cat
            .current
            .iter()
            .filter(|(_, s)| s.package_id.as_deref() == Some(package_id))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            cat.current.remove(n);
        }
        names
    }

    /// Which version (and package) serves each workflow name, sorted by name.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        let mut out: Vec<CatalogEntry> = read_lock(&self.shared.catalog)
            .current
            .iter()
            .map(|(name, s)| CatalogEntry {
                name: name.clone(),
                version: s.workflow.version().to_string(),
                package_id: s.package_id.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Names of the registered workflows, sorted.
    pub fn workflows(&self) -> Vec<String> {
        let mut names: Vec<String> = read_lock(&self.shared.catalog)
            .current
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    pub fn workflow(&self, name: &str) -> Option<Arc<Workflow>> {
        read_lock(&self.shared.catalog)
            .current
            .get(name)
            .map(|s| s.workflow.clone())
    }

    /// Pauses workflow `name`: new runs (submitted, scheduled or triggered) are refused with
    /// [`EngineError::WorkflowPaused`] until [`Runner::workflow_resume`]; runs already started go
    /// on. `false` when it was paused already.
    pub fn workflow_pause(&self, name: &str) -> bool {
        write_lock(&self.shared.paused_workflows).insert(name.to_string())
    }

    /// Lets new runs of `name` start again. `false` when it was not paused.
    pub fn workflow_resume(&self, name: &str) -> bool {
        write_lock(&self.shared.paused_workflows).remove(name)
    }

    pub fn workflow_paused(&self, name: &str) -> bool {
        read_lock(&self.shared.paused_workflows).contains(name)
    }

    fn refuse_paused(&self, name: &str) -> Result<(), EngineError> {
        if self.workflow_paused(name) {
            return Err(EngineError::WorkflowPaused(name.to_string()));
        }
        Ok(())
    }

    /// Starts a run of the current version of `name`; returns its id at once.
    pub async fn submit(&self, name: &str, input: Context) -> Result<Uuid, EngineError> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        self.refuse_paused(name)?;
        let served = read_lock(&self.shared.catalog).current.get(name).cloned();
        let served = served.ok_or_else(|| {
            let cat = read_lock(&self.shared.catalog);
            EngineError::UnknownWorkflow {
                name: name.to_string(),
                suggestion: crate::workflow::names::suggest(
                    name,
                    cat.current.keys().map(String::as_str),
                ),
            }
        })?;
        let new = NewExecution::for_workflow(&served.workflow, input, served.package_id.clone());
        let (id, input) = (new.id, Arc::new(new.input.clone()));
        lock(&self.shared.contexts).put(id, crate::store::INPUT_CONTEXT, input);
        let record = self.create(new).await?;
        Ok(record.id)
    }

    /// Creates an execution, retrying transient failures with the same id. A retry after a
    /// commit whose acknowledgement was lost finds the execution (or its cron instant, or its
    /// de-duplication key) already taken by this very id: that is this creation, done once,
    /// not a conflict.
    async fn create(&self, new: NewExecution) -> Result<ExecutionRecord, StoreError> {
        let id = new.id;
        let mut retry = executor::Backoff::default();
        let mut first = true;
        loop {
            let claiming = if std::mem::take(&mut first) {
                self.create_claiming(&new).await
            } else {
                None
            };
            let created = match claiming {
                Some(result) => result,
                None => self.shared.store.execution_create(new.clone()).await,
            };
            match created {
                Err(e) if retry.retried() && created_by(&e, id) => {
                    if let Some(rec) = self.shared.store.execution_get(id).await? {
                        return Ok(rec);
                    }
                    return Err(e);
                }
                Err(e) if retry.again("creating an execution", &e).await => {}
                other => return other,
            }
        }
    }

    /// A creation that also claims the run's root tasks for this runner's free slots, and
    /// starts them once it has committed: the run's first task needs no dispatcher wake-up and
    /// no claim transaction of its own. `None` where that does not apply (no free slot, a
    /// store that merges creations, a cron fire). A failed attempt frees its slots; if its
    /// commit went through after all (its answer lost), the claimed tasks go back to `Ready`
    /// when their lease runs out, as any task of a runner that stopped answering.
    async fn create_claiming(
        &self,
        new: &NewExecution,
    ) -> Option<Result<ExecutionRecord, StoreError>> {
        let roots = new.tasks.iter().filter(|t| t.is_root()).count();
        if roots == 0 || !self.shared.store.claims_at_creation(new) {
            return None;
        }
        let mut permits = Vec::with_capacity(roots);
        while permits.len() < roots {
            match self.shared.holds.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        if permits.is_empty() {
            return None;
        }
        let claim = ClaimRequest {
            owner: self.shared.owner.clone(),
            lease_ms: self.shared.config.lease.as_millis() as i64,
            limit: permits.len() as i64,
            workflows: None,
            only: None,
        };
        let created = self
            .shared
            .store
            .execution_create_claiming(new.clone(), claim)
            .await;
        Some(created.map(|c| {
            for (task, permit) in c.claimed.into_iter().zip(permits) {
                spawn_task(&self.shared, task, permit);
            }
            c.record
        }))
    }

    /// Starts a run like [`submit`](Self::submit), with [`SubmitOptions`](crate::store::SubmitOptions):
    /// a de-duplication key (no second unfinished run with the same key, in any process) and/or
    /// a cron instant to claim (created only if that instant was neither fired nor skipped).
    /// A refused creation is not an error: it answers
    /// [`SubmitOutcome::Duplicate`](crate::store::SubmitOutcome) and starts nothing.
    pub async fn submit_with(
        &self,
        name: &str,
        input: Context,
        options: crate::store::SubmitOptions,
    ) -> Result<crate::store::SubmitOutcome, EngineError> {
        use crate::store::SubmitOutcome;
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        self.refuse_paused(name)?;
        let served = read_lock(&self.shared.catalog).current.get(name).cloned();
        let Some(served) = served else {
            let cat = read_lock(&self.shared.catalog);
            return Err(EngineError::UnknownWorkflow {
                name: name.to_string(),
                suggestion: crate::workflow::names::suggest(
                    name,
                    cat.current.keys().map(String::as_str),
                ),
            });
        };
        let new = NewExecution::for_workflow(&served.workflow, input, served.package_id.clone())
            .with_options(options);
        let (id, input) = (new.id, Arc::new(new.input.clone()));
        lock(&self.shared.contexts).put(id, crate::store::INPUT_CONTEXT, input);
        match self.create(new).await {
            Ok(record) => Ok(SubmitOutcome::Started(record.id)),
            Err(StoreError::DuplicateExecution { existing, .. })
            | Err(StoreError::CronInstantTaken { existing, .. }) => {
                Ok(SubmitOutcome::Duplicate { existing })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `name` with `input` and waits for the end.
    pub async fn execute(
        &self,
        name: &str,
        input: Context,
    ) -> Result<ExecutionResult, EngineError> {
        let id = self.submit(name, input).await?;
        self.wait(id, None).await
    }

    /// Waits until execution `id` ends, woken by the store's signal rather than polling.
    pub async fn wait(
        &self,
        id: Uuid,
        timeout: Option<Duration>,
    ) -> Result<ExecutionResult, EngineError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut waiter = self.shared.waiters.register(id);
        loop {
            // A database outage is waited out (to the deadline, if any), not reported: the
            // execution goes on once the database is back.
            let mut safety_net = self.shared.config.poll_interval.max(Duration::from_secs(5));
            match self.record_with_final(id).await {
                Ok((rec, context)) if rec.status.is_terminal() => {
                    return Ok(result_from(rec, context));
                }
                Ok(_) => {}
                Err(EngineError::Store(e)) if e.is_transient() => {
                    tracing::warn!(execution = %id, error = %e, "checking on an execution failed transiently; checking again shortly");
                    safety_net = OUTAGE_RECHECK;
                }
                Err(e) => return Err(e),
            }
            let safety_net = tokio::time::sleep(safety_net);
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = waiter.woken() => {}
                _ = safety_net => {}
                _ = until_deadline => {
                    let (rec, context) = self.record_with_final(id).await?;
                    if rec.status.is_terminal() {
                        return Ok(result_from(rec, context));
                    }
                    return Err(EngineError::WaitTimeout(timeout.unwrap_or_default(), id));
                }
            }
        }
    }

    /// The record of execution `id` once it has ended, or as it stands when `limit` has passed
    /// (a long poll: running out of time is an answer, not an error). Woken by the store's
    /// signal, so a client learns of the end in one request instead of polling for it.
    /// Comes with the final context, once the run has one (Completed or Failed).
    pub async fn wait_record(
        &self,
        id: Uuid,
        limit: Duration,
    ) -> Result<(ExecutionRecord, Option<Context>), EngineError> {
        let deadline = tokio::time::Instant::now() + limit;
        // Registered before the first read, so an end between the read and the wait is seen.
        let mut waiter = self.shared.waiters.register(id);
        let safety_net = self.shared.config.poll_interval.max(Duration::from_secs(5));
        loop {
            let (rec, context) = self.record_with_final(id).await?;
            if rec.status.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok((rec, context));
            }
            tokio::select! {
                _ = waiter.woken() => {}
                _ = tokio::time::sleep(safety_net) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The execution's current status, and its final context once it has one.
    pub async fn status(&self, id: Uuid) -> Result<ExecutionResult, EngineError> {
        let (rec, context) = self.record_with_final(id).await?;
        Ok(result_from(rec, context))
    }

    /// The execution's final context, once it has ended Completed or Failed.
    pub async fn result(&self, id: Uuid) -> Result<Option<Context>, EngineError> {
        Ok(self.record_with_final(id).await?.1)
    }

    pub async fn execution(&self, id: Uuid) -> Result<ExecutionRecord, EngineError> {
        self.record(id).await
    }

    pub async fn tasks(&self, id: Uuid) -> Result<Vec<TaskRecord>, EngineError> {
        Ok(self.shared.store.task_list(id).await?)
    }

    pub async fn events(&self, id: Uuid, after_seq: i64) -> Result<Vec<EventRecord>, EngineError> {
        Ok(self.shared.store.event_list(id, after_seq, 10_000).await?)
    }

    pub async fn list(&self, filter: ExecutionFilter) -> Result<Vec<ExecutionRecord>, EngineError> {
        Ok(self.shared.store.execution_list(filter).await?)
    }

    /// Stops new tasks of the run from starting; running ones finish; retries wait.
    pub async fn pause(&self, id: Uuid) -> Result<ExecutionRecord, EngineError> {
        let rec = self
            .shared
            .store
            .execution_pause(id)
            .await
            .map_err(not_found(id))?;
        // Held here, not yet started: known at once, not only when the signal arrives.
        self.shared
            .mark_paused(id, rec.status == ExecutionStatus::Paused);
        Ok(rec)
    }

    pub async fn resume(&self, id: Uuid) -> Result<ExecutionRecord, EngineError> {
        let rec = self
            .shared
            .store
            .execution_resume(id)
            .await
            .map_err(not_found(id))?;
        self.shared
            .mark_paused(id, rec.status == ExecutionStatus::Paused);
        Ok(rec)
    }

    /// Ends the run as Cancelled and signals its running tasks to stop.
    pub async fn cancel(&self, id: Uuid) -> Result<ExecutionRecord, EngineError> {
        let rec = self
            .shared
            .store
            .execution_cancel(id, None)
            .await
            .map_err(not_found(id))?;
        self.shared.signal_cancel(id);
        Ok(rec)
    }

    /// Stops claiming, waits up to `shutdown_timeout` for running tasks, then aborts the rest
    /// and hands their leases back so another runner can take them at once.
    pub async fn shutdown(&self) -> Result<ShutdownReport, EngineError> {
        self.shutdown_within(self.shared.config.shutdown_timeout)
            .await
    }

    /// [`Runner::shutdown`] with `timeout` instead of the configured `shutdown_timeout`: the
    /// daemon passes the value of its current configuration, which a reload may have changed.
    pub async fn shutdown_within(&self, timeout: Duration) -> Result<ShutdownReport, EngineError> {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        shared.wake.notify_one();
        let running_at_start = lock(&shared.tasks).len();
        let handed_back_before = shared.stats.handed_back.load(Ordering::SeqCst);
        let all = shared.config.held_max() as u32;
        let drained = tokio::time::timeout(timeout, shared.holds.acquire_many(all)).await;
        let mut report = ShutdownReport::default();
        let handed_back = |shared: &Shared| {
            (shared.stats.handed_back.load(Ordering::SeqCst) - handed_back_before) as usize
        };
        match drained {
            Ok(Ok(permits)) => {
                permits.forget();
                report.released = handed_back(shared);
                report.drained = running_at_start.saturating_sub(report.released);
            }
            _ => {
                let handles: Vec<_> = lock(&shared.tasks).drain().map(|(_, h)| h).collect();
                for h in &handles {
                    h.abort();
                }
                let released = executor::with_retries("releasing this runner's leases", || {
                    shared.store.lease_release(&shared.owner)
                })
                .await?;
                report.released = released.len() + handed_back(shared);
                report.drained = running_at_start.saturating_sub(report.released);
                tracing::warn!(
                    released = report.released,
                    "shutdown timeout reached; released leases of tasks still running"
                );
            }
        }
        for h in lock(&self.background).drain(..) {
            h.abort();
        }
        // The signal loop is gone: waiters look at the database once more now, and from here
        // on at their safety-net interval.
        shared.waiters.wake_all();
        Ok(report)
    }

    async fn record(&self, id: Uuid) -> Result<ExecutionRecord, EngineError> {
        self.shared
            .store
            .execution_get(id)
            .await?
            .ok_or(EngineError::ExecutionNotFound(id))
    }

    /// The record and its final context in one read (a waiter's look at a run that may have
    /// ended).
    async fn record_with_final(
        &self,
        id: Uuid,
    ) -> Result<(ExecutionRecord, Option<Context>), EngineError> {
        self.shared
            .store
            .execution_get_with_final(id)
            .await?
            .ok_or(EngineError::ExecutionNotFound(id))
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // The last handle going away stops the background loops.
        if Arc::strong_count(&self.background) == 1 {
            for h in lock(&self.background).drain(..) {
                h.abort();
            }
        }
    }
}

/// What a waiter answers: the final context only for a run that ended Completed or Failed.
fn result_from(rec: ExecutionRecord, context: Option<Context>) -> ExecutionResult {
    let context = match rec.status {
        ExecutionStatus::Completed | ExecutionStatus::Failed => context,
        _ => None,
    };
    ExecutionResult {
        id: rec.id,
        workflow: rec.workflow_name,
        status: rec.status,
        context,
        error: rec.error,
    }
}

/// Whether a creation was refused because execution `id` itself already exists.
fn created_by(e: &StoreError, id: Uuid) -> bool {
    match e.inner() {
        StoreError::ExecutionExists { id: taken } => *taken == id,
        StoreError::DuplicateExecution { existing, .. }
        | StoreError::CronInstantTaken { existing, .. } => *existing == Some(id),
        _ => false,
    }
}

fn not_found(id: Uuid) -> impl Fn(StoreError) -> StoreError {
    move |e| match e {
        StoreError::ExecutionNotFound(_) => StoreError::ExecutionNotFound(id),
        other => other,
    }
}

use crate::sync::{lock, read as read_lock, write as write_lock};

impl Shared {
    fn registered_names(&self) -> Vec<String> {
        read_lock(&self.catalog).current.keys().cloned().collect()
    }

    /// The workflow a claimed task belongs to: its exact version if this runner has it,
    /// otherwise the current version of the name (the database holds the run's DAG, so
    /// only task bodies and specs come from here).
    fn workflow_for(&self, claimed: &ClaimedTask) -> Option<Arc<Workflow>> {
        let cat = read_lock(&self.catalog);
        cat.versions
            .get(&(
                claimed.workflow_name.clone(),
                claimed.workflow_version.clone(),
            ))
            .cloned()
            .or_else(|| {
                cat.current
                    .get(&claimed.workflow_name)
                    .map(|s| s.workflow.clone())
            })
    }

    fn track(&self, execution: Uuid) -> watch::Receiver<bool> {
        let mut running = lock(&self.running);
        let entry = running
            .entry(execution)
            .or_insert_with(|| (watch::channel(false).0, 0));
        entry.1 += 1;
        entry.0.subscribe()
    }

    fn untrack(&self, execution: Uuid) {
        let mut running = lock(&self.running);
        if let Some(entry) = running.get_mut(&execution) {
            entry.1 -= 1;
            if entry.1 == 0 {
                running.remove(&execution);
                lock(&self.paused).remove(&execution);
            }
        }
    }

    /// Records whether a tracked execution is paused (untracked ones need no record).
    fn mark_paused(&self, execution: Uuid, paused: bool) {
        let running = lock(&self.running);
        let mut set = lock(&self.paused);
        if paused && running.contains_key(&execution) {
            set.insert(execution);
        } else {
            set.remove(&execution);
        }
    }

    /// Why a held task must not start now, if it must not: its execution was paused while
    /// it waited for a slot, or the runner is stopping.
    fn hand_back_reason(&self, task: &ClaimedTask) -> Option<&'static str> {
        if self.stopping.load(Ordering::SeqCst) {
            Some("the runner is shutting down")
        } else if lock(&self.paused).contains(&task.execution_id) {
            Some("the execution was paused")
        } else {
            None
        }
    }

    fn signal_cancel(&self, execution: Uuid) {
        if let Some((tx, _)) = lock(&self.running).get(&execution) {
            let _ = tx.send(true);
        }
    }
}

/// Claims ready tasks whenever there are free slots and something may be ready.
async fn dispatch_loop(shared: Arc<Shared>) {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(first) = shared.holds.clone().acquire_owned().await else {
            return;
        };
        // Reserve every slot before claiming: completions also take slots (for hand-off), so
        // a slot counted now might be gone after the claim, and a claimed task with no slot
        // would sit leased until its lease expired.
        let mut permits = vec![first];
        while let Ok(p) = shared.holds.clone().try_acquire_owned() {
            permits.push(p);
        }
        // Register interest before looking, so a signal that arrives during the claim is kept.
        let woken = shared.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let names = shared.registered_names();
        let limit = permits.len();
        let claimed = if names.is_empty() || shared.stopping.load(Ordering::SeqCst) {
            Ok(Vec::new())
        } else {
            shared
                .store
                .task_claim(ClaimRequest {
                    owner: shared.owner.clone(),
                    lease_ms: shared.config.lease.as_millis() as i64,
                    limit: limit as i64,
                    workflows: Some(names),
                    only: None,
                })
                .await
        };
        match claimed {
            Ok(tasks) if !tasks.is_empty() => {
                let full = tasks.len() >= limit;
                // At most `limit` tasks come back, one slot each; unused slots are released.
                for (task, permit) in tasks.into_iter().zip(permits.drain(..)) {
                    spawn_task(&shared, task, permit);
                }
                drop(permits);
                if full {
                    continue;
                }
            }
            Ok(_) => drop(permits),
            Err(e) => {
                drop(permits);
                tracing::warn!(error = %e, "claiming tasks failed; will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
}

fn spawn_task(shared: &Arc<Shared>, task: ClaimedTask, permit: OwnedSemaphorePermit) {
    shared.stats.claimed.fetch_add(1, Ordering::Relaxed);
    let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
    let cancel = shared.track(task.execution_id);
    let s = shared.clone();
    let body = async move {
        // Hand-off: the first dependent this task's completion claimed runs right here, on
        // the same slot; any others get runners of their own.
        let mut next = Some((task, permit, cancel));
        while let Some((task, permit, cancel)) = next.take() {
            let mut handed = run_task(&s, task, permit, cancel).await.into_iter();
            if let Some((t, p)) = handed.next() {
                s.stats.claimed.fetch_add(1, Ordering::Relaxed);
                let c = s.track(t.execution_id);
                next = Some((t, p, c));
            }
            for (t, p) in handed {
                spawn_task(&s, t, p);
            }
        }
        // No dispatcher wake-up here: a freed slot wakes a dispatcher waiting for one (the
        // semaphore), and work that became ready (a release included) was signalled by the
        // store. Waking it at every task end cost a claim per task end, in the writer.
        lock(&s.tasks).remove(&slot);
    };
    // Insert under the lock the body's removal also takes, so no entry outlives its task.
    let mut tasks = lock(&shared.tasks);
    let handle = tokio::spawn(body);
    tasks.insert(slot, handle.abort_handle());
}

/// Runs one attempt and records its end. Returns the dependents its completion claimed for
/// this runner, each with a slot to run in.
async fn run_task(
    shared: &Arc<Shared>,
    task: ClaimedTask,
    permit: OwnedSemaphorePermit,
    cancel: watch::Receiver<bool>,
) -> Vec<(ClaimedTask, OwnedSemaphorePermit)> {
    let workflow = shared.workflow_for(&task);
    // Never closed; were it, running without a slot beats leaving the task leased.
    let body = shared.bodies.acquire().await.ok();
    if let Some(why) = shared.hand_back_reason(&task) {
        drop(body);
        shared.untrack(task.execution_id);
        let reason = format!("released by {} before it started: {why}", shared.owner);
        let released = executor::with_retries("handing back a task", || {
            shared
                .store
                .task_release(task.execution_id, &task.task_id, task.attempt, &reason)
        })
        .await;
        shared.stats.handed_back.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = released {
            tracing::warn!(
                execution = %task.execution_id, task = %task.task_id, error = %e,
                "could not hand back a task that had not started; lease recovery will requeue it"
            );
        }
        return Vec::new();
    }
    let started = std::time::Instant::now();
    let outcome = match &workflow {
        Some(wf) => executor::attempt(&shared.store, &shared.contexts, wf, &task, cancel).await,
        None => Ok(AttemptOutcome::Failed {
            error: format!(
                "workflow '{}' is not registered on the runner that claimed it",
                task.workflow_name
            ),
        }),
    };
    drop(body);
    shared
        .stats
        .record_duration(started.elapsed().as_secs_f64());
    shared.untrack(task.execution_id);
    let mut handed = Vec::new();
    match outcome {
        Ok(outcome) => {
            let counter = match &outcome {
                AttemptOutcome::Completed { .. } => &shared.stats.completed,
                AttemptOutcome::Failed { .. } => &shared.stats.failed,
                AttemptOutcome::Skipped { .. } => &shared.stats.skipped,
                AttemptOutcome::Retry { retry_at, .. } => {
                    schedule_wake(shared, *retry_at);
                    &shared.stats.retried
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let output = match &outcome {
                AttemptOutcome::Completed { output } => Some(Arc::new(output.clone())),
                _ => None,
            };
            // Slots for the dependents this completion may ready: our own, plus any free.
            let mut permits = vec![permit];
            let dependents = match (&workflow, &outcome) {
                (
                    Some(wf),
                    AttemptOutcome::Completed { .. }
                    | AttemptOutcome::Failed { .. }
                    | AttemptOutcome::Skipped { .. },
                ) => wf.dependents(&task.task_id).len(),
                _ => 0,
            };
            while permits.len() < dependents {
                match shared.holds.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A terminal outcome frees this slot: its dependents take it first, then (refill)
            // other ready work, claimed in the finish's own transaction.
            let terminal = !matches!(outcome, AttemptOutcome::Retry { .. });
            let refill = shared.refill;
            let handoff =
                (terminal && (dependents > 0 || refill) && !shared.stopping.load(Ordering::SeqCst))
                    .then(|| Handoff {
                        owner: shared.owner.clone(),
                        lease_ms: shared.config.lease.as_millis() as i64,
                        limit: permits.len() as i64,
                        refill: refill.then(|| shared.registered_names()),
                    });
            let finish = TaskFinish {
                execution_id: task.execution_id,
                task_id: task.task_id.clone(),
                attempt: task.attempt,
                outcome,
                handoff,
            };
            match executor::with_retries("recording a task's result", || {
                shared.store.task_finish(finish.clone())
            })
            .await
            {
                Ok(r) if r.fenced => {
                    shared.stats.fenced.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        execution = %task.execution_id, task = %task.task_id, attempt = task.attempt,
                        "attempt lost its lease to a newer attempt; its result was discarded"
                    );
                }
                Ok(r) => {
                    if let Some(out) = output {
                        lock(&shared.contexts).put(task.execution_id, &task.task_id, out);
                    }
                    handed = r.claimed.into_iter().zip(permits.drain(..)).collect();
                }
                Err(e) => tracing::error!(
                    execution = %task.execution_id, task = %task.task_id, error = %e,
                    "could not record the task's result; lease recovery will run it again"
                ),
            }
        }
        Err(e) => {
            // The body has not run: hand the attempt back so it runs again at once, rather
            // than holding a lease this runner's heartbeat would keep renewing.
            let reason = format!(
                "released by {}: its inputs could not be read: {e}",
                shared.owner
            );
            let released = executor::with_retries("handing back a task", || {
                shared
                    .store
                    .task_release(task.execution_id, &task.task_id, task.attempt, &reason)
            })
            .await;
            match released {
                Ok(_) => tracing::warn!(
                    execution = %task.execution_id, task = %task.task_id, error = %e,
                    "could not read the task's inputs; handed the task back to run again"
                ),
                Err(re) => tracing::error!(
                    execution = %task.execution_id, task = %task.task_id, error = %e, release_error = %re,
                    "could not read the task's inputs nor hand the task back; lease recovery will run it again"
                ),
            }
        }
    }
    handed
}

/// Wakes the dispatcher when a retry becomes due (other runners find it by polling).
fn schedule_wake(shared: &Arc<Shared>, at: i64) {
    let s = Arc::downgrade(shared);
    let delay = Duration::from_millis((at - now_ms()).max(0) as u64);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(s) = s.upgrade() {
            s.wake.notify_one();
        }
    });
}

/// Turns store signals into dispatcher wake-ups and cancellations of local tasks.
async fn signal_loop(shared: Arc<Shared>, mut signals: broadcast::Receiver<StoreSignal>) {
    loop {
        match signals.recv().await {
            Ok(StoreSignal::TasksReady) => shared.wake.notify_one(),
            Ok(StoreSignal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                shared.wake.notify_one();
                shared.waiters.wake_all();
            }
            // An ended run has no task left to cancel or hold back, so no read is needed (a
            // cancel also signals `ExecutionChanged`, handled below).
            Ok(StoreSignal::ExecutionFinished(id)) => {
                shared.waiters.wake(id);
                shared.mark_paused(id, false);
            }
            Ok(StoreSignal::ExecutionChanged(id)) => {
                shared.wake.notify_one();
                let tracked = lock(&shared.running).contains_key(&id);
                if tracked && let Ok(Some(rec)) = shared.store.execution_get(id).await {
                    if rec.status == ExecutionStatus::Cancelled {
                        shared.signal_cancel(id);
                    }
                    shared.mark_paused(id, rec.status == ExecutionStatus::Paused);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = shared.config.heartbeat_interval();
    loop {
        tokio::time::sleep(every).await;
        if lock(&shared.tasks).is_empty() {
            continue;
        }
        let until = now_ms() + shared.config.lease.as_millis() as i64;
        let renewed = executor::with_retries("renewing leases", || {
            shared.store.lease_renew(&shared.owner, until)
        })
        .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "renewing leases failed; will retry at the next heartbeat");
        }
    }
}

async fn recovery_loop(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.config.recovery_interval).await;
        recover(&shared).await;
    }
}

async fn recover(shared: &Arc<Shared>) {
    match shared
        .store
        .lease_recover_expired(shared.config.max_recoveries as i32)
        .await
    {
        Ok(r) => {
            let n = (r.requeued.len() + r.failed.len()) as u64;
            if n > 0 {
                shared.stats.recovered.fetch_add(n, Ordering::Relaxed);
                tracing::info!(
                    requeued = r.requeued.len(),
                    failed = r.failed.len(),
                    "recovered tasks with expired leases"
                );
                shared.wake.notify_one();
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease recovery pass failed; will retry"),
    }
}
