//! The reactor registry: reactors with their accumulators, the computation graphs bound to
//! them and the trigger-less graphs, and the bound-subscriber guard (docs/reactors.md).
//!
//! One [`ReactorRegistry`] per runtime (it is a cheap `Clone`). The reconciler drives it
//! through the load and unload steps; every call is idempotent:
//!
//! | step | load | unload |
//! |---|---|---|
//! | before step 1 | | [`guard_check`](ReactorRegistry::guard_check) |
//! | reactors | 3: [`reactors_start`](ReactorRegistry::reactors_start) | 4: [`reactors_stop`](ReactorRegistry::reactors_stop) |
//! | trigger-less graphs | 4: [`graphs_register`](ReactorRegistry::graphs_register) | 3: [`graphs_unregister`](ReactorRegistry::graphs_unregister) |
//! | reactor-bound graphs | 5: [`graphs_bind`](ReactorRegistry::graphs_bind) | 2: [`graphs_unbind`](ReactorRegistry::graphs_unbind) |
//!
//! **Runtime.** Events are pushed to a reactor's accumulators
//! ([`accumulator_push`](ReactorRegistry::accumulator_push)); when the reactor's criterion
//! holds it fires: every bound graph runs, in binding order, on a snapshot of the input cache
//! (in process, through the package's ABI), then every workflow the reactor lists is started
//! with the snapshot as its context (through the [`WorkflowStarter`]). One reactor's firings
//! are serialized, so graphs see them in order. Batch accumulators flush on a timer (one
//! tokio task per open batch window, stopped with the reactor). Reactors can be paused (events
//! still accumulate) and resumed (fires at once if the criterion holds).
//!
//! **Ownership.** A reactor belongs to the package that started it; a graph to the package
//! that registered or bound it. Names are per tenant. Another *version* of the same package
//! (same package name, another `package_id`) takes a reactor or graph over — this is how an
//! upgrade keeps the subscribers of a reactor bound — while a *different* package using the
//! same name is a conflict. "Another package", for the guard, means another package name.
//!
//! **Binding.** A bare reactor name resolves in the graph's own tenant, then in `public`;
//! `tenant/name` names the tenant. When the reactor is not loaded, nothing is bound and
//! [`BindOutcome::Waiting`] says why.
//!
//! Locks: one `std::sync::Mutex` over the registry's state, never held across an `.await`;
//! graph runs and workflow starts happen outside it.

mod accumulator;
mod graph;
mod guard;
mod info;
mod reactor;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use cloacina_workflow::package::{Criterion, GraphDescription, ReactorDescription, ReactorRef};
use cloacina_workflow::{BoxFuture, Context, GraphOutput};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::package::loader::LoadedPackage;
use crate::schedule::{Clock, SystemClock};
use accumulator::PushEffect;
use graph::{GraphEntry, graph_result, qualified};
use reactor::{Key, ReactorState};

pub use guard::{BoundSubscribers, GuardRefusal};
pub use info::{
    AccumulatorInfo, BindOutcome, FireReport, GraphInfo, GraphRun, GraphStatus, Health,
    PushOutcome, ReactorInfo, StartOutcome, WorkflowStart,
};

/// The admin tenant, where bare reactor names are looked up after the graph's own tenant.
pub const PUBLIC_TENANT: &str = "public";

/// The package that owns a reactor or a graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The upload's UUID (or any id unique per loaded package version).
    pub package_id: String,
    /// The package name.
    pub package: String,
    pub version: String,
}

impl Owner {
    pub fn new(
        package_id: impl Into<String>,
        package: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            package_id: package_id.into(),
            package: package.into(),
            version: version.into(),
        }
    }

    /// The owner for a loaded package with id `package_id`.
    pub fn of(package_id: impl Into<String>, package: &LoadedPackage) -> Self {
        Self::new(package_id, package.name(), package.version())
    }
}

/// Starts a workflow for a reactor's firing: `(workflow name, context)` → execution id. The
/// context is the firing's snapshot. Wire it to `Runner::submit`.
pub type WorkflowStarter =
    Arc<dyn Fn(String, Context) -> BoxFuture<'static, Result<Uuid, String>> + Send + Sync>;

/// Everything about one workflow start, for a multi-tenant starter
/// ([`ReactorRegistry::with_tenant_starter`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    /// The reactor's tenant.
    pub tenant: String,
    pub reactor: String,
    /// The reactor's owner package, which exports the workflow.
    pub owner: Owner,
    pub workflow: String,
    /// The reactor's firing count for this firing.
    pub fire: u64,
    /// The firing's snapshot.
    pub context: Context,
}

/// A workflow starter that is told the tenant and the owner package.
pub type TenantWorkflowStarter =
    Arc<dyn Fn(StartRequest) -> BoxFuture<'static, Result<Uuid, String>> + Send + Sync>;

enum Starter {
    None,
    Simple(WorkflowStarter),
    Tenant(TenantWorkflowStarter),
}

/// Why a registry call failed. Messages name the tenant, the reactor or graph, the packages
/// involved and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// The bound-subscriber guard refused; the text is the exact wire format.
    #[error(transparent)]
    Guard(#[from] GuardRefusal),

    #[error(
        "reactor '{reactor}' in tenant '{tenant}' is owned by package '{owner}' (id {owner_id}); package '{package}' cannot start a reactor with the same name — rename one of them, or unload '{owner}' first"
    )]
    ReactorConflict {
        tenant: String,
        reactor: String,
        owner: String,
        owner_id: String,
        package: String,
    },

    #[error(
        "graph '{graph}' in tenant '{tenant}' belongs to package '{owner}' (id {owner_id}); package '{package}' cannot load a graph with the same name — rename one of them, or unload '{owner}' first"
    )]
    GraphConflict {
        tenant: String,
        graph: String,
        owner: String,
        owner_id: String,
        package: String,
    },

    #[error(
        "reactor '{reactor}' of package '{package}' is not valid: {problem}; fix the package and rebuild it"
    )]
    InvalidReactor {
        reactor: String,
        package: String,
        problem: String,
    },

    #[error(
        "reactor '{reactor}' is not loaded in tenant '{tenant}' ({}); check 'cloacinactl graph accumulators' and that its package is loaded",
        if available.is_empty() { "the tenant has no reactors".to_string() } else { format!("its reactors: {}", available.join(", ")) }
    )]
    UnknownReactor {
        tenant: String,
        reactor: String,
        available: Vec<String>,
    },

    #[error(
        "reactor '{reactor}' in tenant '{tenant}' has no accumulator '{accumulator}' (it has: {})",
        available.join(", ")
    )]
    UnknownAccumulator {
        tenant: String,
        reactor: String,
        accumulator: String,
        available: Vec<String>,
    },

    #[error(
        "graph '{graph}' is not loaded in tenant '{tenant}' ({}); check 'cloacinactl graph list'",
        if available.is_empty() { "the tenant has no trigger-less graphs".to_string() } else { format!("its trigger-less graphs: {}", available.join(", ")) }
    )]
    UnknownGraph {
        tenant: String,
        graph: String,
        available: Vec<String>,
    },

    #[error(
        "graph '{graph}' in tenant '{tenant}' is bound to reactor '{reactor}': it runs when that reactor fires (push events to its accumulators); only trigger-less graphs are invoked directly"
    )]
    NotTriggerLess {
        tenant: String,
        graph: String,
        reactor: String,
    },

    #[error(
        "the reactor registry is stopped (its host is shutting down); nothing fires and no graph runs"
    )]
    Stopped,

    #[error("graph '{graph}' in tenant '{tenant}' failed: {message}")]
    GraphFailed {
        tenant: String,
        graph: String,
        package: String,
        version: String,
        message: String,
    },
}

impl crate::error::ErrorCode for RegistryError {
    fn code(&self) -> &'static str {
        match self {
            RegistryError::Guard(g) => crate::error::ErrorCode::code(g),
            RegistryError::ReactorConflict { .. } | RegistryError::GraphConflict { .. } => {
                "reactor_conflict"
            }
            RegistryError::InvalidReactor { .. } => "reactor_invalid",
            RegistryError::UnknownReactor { .. } | RegistryError::UnknownAccumulator { .. } => {
                "reactor_not_found"
            }
            RegistryError::UnknownGraph { .. } => "graph_not_found",
            RegistryError::NotTriggerLess { .. } => "graph_not_trigger_less",
            RegistryError::GraphFailed { .. } => "graph_failed",
            RegistryError::Stopped => "shutting_down",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    reactors: BTreeMap<Key, ReactorState>,
    graphs: BTreeMap<Key, GraphEntry>,
    generations: u64,
    /// Set by [`ReactorRegistry::stop`]: no firing, flush or graph run starts afterwards.
    stopped: bool,
    /// Tenants stopped by [`ReactorRegistry::tenant_stop`] (a registry shared by the tenants
    /// of a server, one of which stops): the same, for their reactors and graphs only.
    stopped_tenants: std::collections::BTreeSet<String>,
}

impl State {
    fn stopped_for(&self, tenant: &str) -> bool {
        self.stopped || self.stopped_tenants.contains(tenant)
    }
}

/// What [`ReactorRegistry::stop`] stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistryStopReport {
    /// Reactors that no longer fire.
    pub reactors: usize,
    /// Graphs (bound and trigger-less) that no longer run.
    pub graphs: usize,
    /// Batch events still buffered, never released (they were not persisted).
    pub discarded_events: usize,
}

struct Inner {
    state: Mutex<State>,
    starter: Starter,
    /// Fire and record times; the schedulers' injectable clock, so tests control it too.
    clock: Arc<dyn Clock>,
}

/// The runtime registry of reactors and computation graphs. See the module documentation.
#[derive(Clone)]
pub struct ReactorRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReactorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("ReactorRegistry")
            .field("reactors", &st.reactors.keys().collect::<Vec<_>>())
            .field("graphs", &st.graphs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for ReactorRegistry {
    fn default() -> Self {
        Self::new(None)
    }
}

/// What a reactor is asked to do under its fire lock.
#[derive(Debug)]
enum Action {
    Push {
        accumulator: String,
        event: Value,
    },
    Flush {
        accumulator: String,
        window: u64,
        generation: u64,
    },
    Evaluate {
        generation: u64,
    },
}

/// A flush timer to start for a batch window.
#[derive(Debug)]
struct TimerRequest {
    accumulator: String,
    window: u64,
    interval: Duration,
    generation: u64,
}

/// A bound graph to run in a firing.
struct RunSpec {
    tenant: String,
    graph: String,
    owner: Owner,
    package: Arc<LoadedPackage>,
}

/// A firing decided under the lock, to run outside it.
struct Firing {
    key: Key,
    generation: u64,
    fire: u64,
    fired_at: i64,
    snapshot: Map<String, Value>,
    runs: Vec<RunSpec>,
    workflows: Vec<String>,
    owner: Owner,
}

/// What applying an action decided.
struct Applied {
    note: Option<String>,
    firing: Option<Firing>,
    timer: Option<TimerRequest>,
}

impl Applied {
    fn nothing(note: impl Into<String>) -> Self {
        Self {
            note: Some(note.into()),
            firing: None,
            timer: None,
        }
    }
}

fn key(tenant: &str, name: &str) -> Key {
    (tenant.to_string(), name.to_string())
}

/// `tenant/name` splits into its parts; a bare name is in `tenant`.
fn reactor_key(tenant: &str, reactor: &str) -> Key {
    match reactor.split_once('/') {
        Some((t, n)) => key(t, n),
        None => key(tenant, reactor),
    }
}

/// Where a graph's binding points, if that reactor is loaded: `tenant/name` exactly; a bare
/// name in the graph's own tenant, then in `public`.
fn resolve(
    reactors: &BTreeMap<Key, ReactorState>,
    tenant: &str,
    r: &ReactorRef<'_>,
) -> Option<Key> {
    let candidates = match r.tenant {
        Some(t) => vec![key(t, r.name)],
        None => vec![key(tenant, r.name), key(PUBLIC_TENANT, r.name)],
    };
    candidates.into_iter().find(|k| reactors.contains_key(k))
}

fn check_reactor(r: &ReactorDescription, owner: &Owner) -> Result<(), RegistryError> {
    let invalid = |problem: String| RegistryError::InvalidReactor {
        reactor: r.name.clone(),
        package: owner.package.clone(),
        problem,
    };
    if r.name.is_empty() || r.name.contains('/') {
        return Err(invalid(
            "its name must be non-empty and must not contain '/'".to_string(),
        ));
    }
    if r.accumulators.is_empty() {
        return Err(invalid("it has no accumulators".to_string()));
    }
    for (i, a) in r.accumulators.iter().enumerate() {
        if r.accumulators[..i].iter().any(|b| b.name == a.name) {
            return Err(invalid(format!(
                "accumulator name '{}' is used more than once",
                a.name
            )));
        }
    }
    Ok(())
}

/// Removes graph `graph` from the subscribers of the reactor it was bound to.
fn detach(reactors: &mut BTreeMap<Key, ReactorState>, graph: &Key, binding: Option<&Key>) {
    if let Some(r) = binding.and_then(|b| reactors.get_mut(b)) {
        r.subscribers.retain(|s| s != graph);
    }
}

impl ReactorRegistry {
    /// A registry whose reactors start their workflows through `starter` (none: firings run
    /// their graphs and skip the workflows).
    pub fn new(starter: Option<WorkflowStarter>) -> Self {
        Self::with_clock(starter, Arc::new(SystemClock))
    }

    /// [`ReactorRegistry::new`] reading the time from `clock`.
    pub fn with_clock(starter: Option<WorkflowStarter>, clock: Arc<dyn Clock>) -> Self {
        Self::with(
            match starter {
                Some(s) => Starter::Simple(s),
                None => Starter::None,
            },
            clock,
        )
    }

    /// A registry whose starter is told each start's tenant and owner package (what a
    /// multi-tenant server needs to pick the tenant's runner).
    pub fn with_tenant_starter(starter: TenantWorkflowStarter) -> Self {
        Self::with(Starter::Tenant(starter), Arc::new(SystemClock))
    }

    fn with(starter: Starter, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                starter,
                clock,
            }),
        }
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.inner.state)
    }

    // -----------------------------------------------------------------------------------------
    // The guard
    // -----------------------------------------------------------------------------------------

    /// The bound-subscriber guard, checked by the reconciler before unload step 1: `Err` when
    /// a reactor owned by `package_id` in `tenant` has graphs of other packages bound, with
    /// the exact text `reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1',
    /// 'aggregator']; unbind them first`.
    pub fn guard_check(&self, tenant: &str, package_id: &str) -> Result<(), GuardRefusal> {
        let st = self.lock();
        guard::check(&st.reactors, &st.graphs, tenant, package_id)
    }

    // -----------------------------------------------------------------------------------------
    // Reactors: load step 3, unload step 4
    // -----------------------------------------------------------------------------------------

    /// Starts the package's reactors (load step 3). All or none: a reactor name owned by
    /// another package in the tenant is a [`RegistryError::ReactorConflict`] and starts
    /// nothing. A reactor this package id already runs is left as it is (idempotent); one run
    /// by another version of the same package is taken over: it restarts with this version's
    /// accumulators and keeps its bound graphs and pause state.
    pub fn reactors_start(
        &self,
        tenant: &str,
        owner: &Owner,
        reactors: &[ReactorDescription],
    ) -> Result<(), RegistryError> {
        for (i, r) in reactors.iter().enumerate() {
            check_reactor(r, owner)?;
            if reactors[..i].iter().any(|o| o.name == r.name) {
                return Err(RegistryError::InvalidReactor {
                    reactor: r.name.clone(),
                    package: owner.package.clone(),
                    problem: "the package declares it more than once".to_string(),
                });
            }
        }
        let mut st = self.lock();
        let State {
            reactors: running,
            generations,
            ..
        } = &mut *st;
        for r in reactors {
            if let Some(existing) = running.get(&key(tenant, &r.name))
                && existing.owner.package != owner.package
            {
                return Err(RegistryError::ReactorConflict {
                    tenant: tenant.to_string(),
                    reactor: r.name.clone(),
                    owner: existing.owner.package.clone(),
                    owner_id: existing.owner.package_id.clone(),
                    package: owner.package.clone(),
                });
            }
        }
        for r in reactors {
            let k = key(tenant, &r.name);
            *generations = generations.wrapping_add(1);
            match running.get_mut(&k) {
                Some(existing) if existing.owner.package_id == owner.package_id => {}
                Some(existing) => {
                    let mut next = ReactorState::new(tenant, owner, r, *generations);
                    existing.stop_timers();
                    next.subscribers = std::mem::take(&mut existing.subscribers);
                    next.paused = existing.paused;
                    next.fire_lock = existing.fire_lock.clone();
                    tracing::info!(
                        tenant, reactor = %r.name, package_id = %owner.package_id,
                        package = %owner.package, version = %owner.version,
                        previous_package_id = %existing.owner.package_id,
                        previous_version = %existing.owner.version,
                        "reactor taken over by a new version of its package"
                    );
                    *existing = next;
                }
                None => {
                    running.insert(k, ReactorState::new(tenant, owner, r, *generations));
                    tracing::info!(
                        tenant, reactor = %r.name, package_id = %owner.package_id,
                        package = %owner.package, version = %owner.version,
                        "reactor started"
                    );
                }
            }
        }
        Ok(())
    }

    /// Tears down the package's reactors in `tenant` (unload step 4), after re-checking the
    /// guard (a refusal changes nothing). Their accumulators go with them; batch events still
    /// buffered are discarded; graphs of the same package still bound are unbound. Returns
    /// informational warnings: none of its reactors is loaded (a clean no-op), discarded
    /// events, graphs unbound here.
    pub fn reactors_stop(
        &self,
        tenant: &str,
        package_id: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let mut st = self.lock();
        let State {
            reactors, graphs, ..
        } = &mut *st;
        guard::check(reactors, graphs, tenant, package_id)?;
        let keys: Vec<Key> = reactors
            .iter()
            .filter(|(_, r)| r.tenant == tenant && r.owner.package_id == package_id)
            .map(|(k, _)| k.clone())
            .collect();
        let mut warnings = Vec::new();
        if keys.is_empty() {
            let w = format!(
                "no reactor of package {package_id} is in the scheduler for tenant '{tenant}'; nothing to tear down"
            );
            tracing::info!(tenant, package_id, "{w}");
            warnings.push(w);
            return Ok(warnings);
        }
        for k in keys {
            let Some(mut r) = reactors.remove(&k) else {
                continue;
            };
            r.stop_timers();
            for a in &r.accumulators {
                if a.buffered() > 0 {
                    warnings.push(format!(
                        "reactor '{}': {} buffered event(s) of batch accumulator '{}' were discarded",
                        r.name,
                        a.buffered(),
                        a.name
                    ));
                }
            }
            for sub in &r.subscribers {
                if let Some(g) = graphs.remove(sub) {
                    warnings.push(format!(
                        "graph '{}' of package '{}' was still bound to reactor '{}'; it was unbound with the reactor",
                        qualified(tenant, &g.tenant, &g.name),
                        g.owner.package,
                        r.name
                    ));
                }
            }
            tracing::info!(
                tenant, reactor = %r.name, package_id, package = %r.owner.package,
                version = %r.owner.version, fires = r.fires, "reactor torn down"
            );
        }
        for w in &warnings {
            tracing::warn!(tenant, package_id, "{w}");
        }
        Ok(warnings)
    }

    // -----------------------------------------------------------------------------------------
    // Trigger-less graphs: load step 4, unload step 3
    // -----------------------------------------------------------------------------------------

    /// Registers the package's trigger-less graphs (load step 4); reactor-bound graphs in
    /// `graphs` are ignored (see [`graphs_bind`](Self::graphs_bind)). All or none: a graph
    /// name of another package in the tenant is a [`RegistryError::GraphConflict`].
    pub fn graphs_register(
        &self,
        tenant: &str,
        owner: &Owner,
        package: Arc<LoadedPackage>,
        graphs: &[GraphDescription],
    ) -> Result<(), RegistryError> {
        let list: Vec<&GraphDescription> = graphs.iter().filter(|g| g.is_trigger_less()).collect();
        let mut st = self.lock();
        let State {
            reactors, graphs, ..
        } = &mut *st;
        for g in &list {
            conflict(graphs, tenant, owner, &g.name)?;
        }
        for g in list {
            let k = key(tenant, &g.name);
            if let Some(e) = graphs.get(&k)
                && e.owner.package_id == owner.package_id
                && e.binding.is_none()
            {
                continue;
            }
            if let Some(old) = graphs.remove(&k) {
                detach(reactors, &k, old.binding.as_ref());
            }
            graphs.insert(k, GraphEntry::new(tenant, owner, package.clone(), g, None));
            tracing::info!(
                tenant, graph = %g.name, package_id = %owner.package_id,
                package = %owner.package, version = %owner.version,
                "trigger-less graph registered"
            );
        }
        Ok(())
    }

    /// Unregisters the package's trigger-less graphs in `tenant` (unload step 3); answers how
    /// many there were.
    pub fn graphs_unregister(
        &self,
        tenant: &str,
        package_id: &str,
    ) -> Result<usize, RegistryError> {
        let mut st = self.lock();
        let keys: Vec<Key> = st
            .graphs
            .iter()
            .filter(|(_, g)| {
                g.tenant == tenant && g.owner.package_id == package_id && g.binding.is_none()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            st.graphs.remove(k);
            tracing::info!(tenant, graph = %k.1, package_id, "trigger-less graph unregistered");
        }
        Ok(keys.len())
    }

    // -----------------------------------------------------------------------------------------
    // Reactor-bound graphs: load step 5, unload step 2
    // -----------------------------------------------------------------------------------------

    /// Binds the package's reactor-bound graphs to their reactors (load step 5); trigger-less
    /// graphs in `graphs` are ignored. All or none: when a reactor is not loaded nothing is
    /// bound and the answer is [`BindOutcome::Waiting`] with the reason (`reactor
    /// 'price_reactor' is not loaded (its publisher package may not be loaded yet)`); a graph
    /// name of another package in the tenant is a [`RegistryError::GraphConflict`]. Graphs
    /// already bound stay bound, in their binding position.
    pub fn graphs_bind(
        &self,
        tenant: &str,
        owner: &Owner,
        package: Arc<LoadedPackage>,
        graphs: &[GraphDescription],
    ) -> Result<BindOutcome, RegistryError> {
        let mut st = self.lock();
        let State {
            reactors,
            graphs: entries,
            ..
        } = &mut *st;
        let mut resolved = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        for g in graphs {
            let Some(r) = g.reactor_ref() else { continue };
            conflict(entries, tenant, owner, &g.name)?;
            match resolve(reactors, tenant, &r) {
                Some(k) => resolved.push((g, k)),
                None => {
                    let reason = format!(
                        "reactor '{}' is not loaded (its publisher package may not be loaded yet)",
                        g.reactor.as_deref().unwrap_or(r.name)
                    );
                    if !missing.contains(&reason) {
                        missing.push(reason);
                    }
                }
            }
        }
        if !missing.is_empty() {
            let reason = missing.join("; ");
            tracing::debug!(
                tenant, package_id = %owner.package_id, package = %owner.package,
                version = %owner.version, %reason, "graphs wait for their reactor"
            );
            return Ok(BindOutcome::Waiting { reason });
        }
        for (g, rk) in resolved {
            let gk = key(tenant, &g.name);
            if let Some(e) = entries.get(&gk)
                && e.owner.package_id == owner.package_id
                && e.binding.as_ref() == Some(&rk)
            {
                continue;
            }
            let old = entries.remove(&gk);
            let old_binding = old.as_ref().and_then(|o| o.binding.clone());
            if old_binding.as_ref() != Some(&rk) {
                detach(reactors, &gk, old_binding.as_ref());
            }
            if let Some(r) = reactors.get_mut(&rk)
                && !r.subscribers.contains(&gk)
            {
                r.subscribers.push(gk.clone());
            }
            entries.insert(
                gk,
                GraphEntry::new(tenant, owner, package.clone(), g, Some(rk.clone())),
            );
            tracing::info!(
                tenant, graph = %g.name, reactor = %rk.1, reactor_tenant = %rk.0,
                package_id = %owner.package_id, package = %owner.package,
                version = %owner.version, "graph bound to its reactor"
            );
        }
        Ok(BindOutcome::Bound)
    }

    /// Unbinds the package's reactor-bound graphs in `tenant` from their reactors (unload
    /// step 2); answers how many there were. Never stops a reactor.
    pub fn graphs_unbind(&self, tenant: &str, package_id: &str) -> Result<usize, RegistryError> {
        let mut st = self.lock();
        let State {
            reactors, graphs, ..
        } = &mut *st;
        let keys: Vec<Key> = graphs
            .iter()
            .filter(|(_, g)| {
                g.tenant == tenant && g.owner.package_id == package_id && g.binding.is_some()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            if let Some(g) = graphs.remove(k) {
                detach(reactors, k, g.binding.as_ref());
                tracing::info!(
                    tenant, graph = %k.1, package_id,
                    reactor = %g.binding.as_ref().map(|b| b.1.as_str()).unwrap_or(""),
                    "graph unbound from its reactor"
                );
            }
        }
        Ok(keys.len())
    }

    // -----------------------------------------------------------------------------------------
    // Runtime
    // -----------------------------------------------------------------------------------------

    /// Pushes `event` to accumulator `accumulator` of reactor `reactor` (`name` in `tenant`,
    /// or `tenant/name`). When the reactor's criterion then holds (and it is not paused) it
    /// fires before this returns: the outcome has every bound graph's output and every
    /// workflow start.
    pub async fn accumulator_push(
        &self,
        tenant: &str,
        reactor: &str,
        accumulator: &str,
        event: Value,
    ) -> Result<PushOutcome, RegistryError> {
        self.act(
            reactor_key(tenant, reactor),
            Action::Push {
                accumulator: accumulator.to_string(),
                event,
            },
        )
        .await
    }

    /// Runs trigger-less graph `graph` of `tenant` with `input`; answers its result (the only
    /// sink's output, or an object of every sink's output keyed by node id).
    pub async fn graph_invoke(
        &self,
        tenant: &str,
        graph: &str,
        input: Value,
    ) -> Result<Value, RegistryError> {
        self.graph_invoke_output(tenant, graph, input)
            .await
            .map(|o| graph_result(&o))
    }

    /// [`graph_invoke`](Self::graph_invoke), answering every node's output.
    pub async fn graph_invoke_output(
        &self,
        tenant: &str,
        graph: &str,
        input: Value,
    ) -> Result<GraphOutput, RegistryError> {
        let k = key(tenant, graph);
        let (package, owner) = {
            let st = self.lock();
            if st.stopped_for(tenant) {
                return Err(RegistryError::Stopped);
            }
            match st.graphs.get(&k) {
                Some(g) => match &g.binding {
                    None => (g.package.clone(), g.owner.clone()),
                    Some(b) => {
                        return Err(RegistryError::NotTriggerLess {
                            tenant: tenant.to_string(),
                            graph: graph.to_string(),
                            reactor: qualified(tenant, &b.0, &b.1),
                        });
                    }
                },
                None => {
                    return Err(RegistryError::UnknownGraph {
                        tenant: tenant.to_string(),
                        graph: graph.to_string(),
                        available: st
                            .graphs
                            .values()
                            .filter(|g| g.tenant == tenant && g.binding.is_none())
                            .map(|g| g.name.clone())
                            .collect(),
                    });
                }
            }
        };
        let result = package.run_graph(graph, input).await;
        let error = result.as_ref().err().map(ToString::to_string);
        {
            let mut st = self.lock();
            if let Some(g) = st.graphs.get_mut(&k)
                && g.owner.package_id == owner.package_id
            {
                g.record(self.now_ms(), error);
            }
        }
        result.map_err(|e| RegistryError::GraphFailed {
            tenant: tenant.to_string(),
            graph: graph.to_string(),
            package: owner.package,
            version: owner.version,
            message: e.to_string(),
        })
    }

    /// Pauses reactor `reactor`: events still accumulate, nothing fires. Idempotent.
    pub fn reactor_pause(&self, tenant: &str, reactor: &str) -> Result<(), RegistryError> {
        let k = reactor_key(tenant, reactor);
        let mut st = self.lock();
        let r = match st.reactors.get_mut(&k) {
            Some(r) => r,
            None => return Err(unknown_reactor(&st, &k)),
        };
        if !r.paused {
            r.paused = true;
            tracing::info!(tenant = %k.0, reactor = %k.1, "reactor paused");
        }
        Ok(())
    }

    /// Resumes reactor `reactor`. When its criterion holds (events arrived while it was
    /// paused) it fires at once, on a task of the current tokio runtime (outside a runtime, at
    /// its next event). Idempotent.
    pub fn reactor_resume(&self, tenant: &str, reactor: &str) -> Result<(), RegistryError> {
        let k = reactor_key(tenant, reactor);
        let (ready, generation) = {
            let mut st = self.lock();
            let r = match st.reactors.get_mut(&k) {
                Some(r) => r,
                None => return Err(unknown_reactor(&st, &k)),
            };
            if r.paused {
                r.paused = false;
                tracing::info!(tenant = %k.0, reactor = %k.1, "reactor resumed");
            }
            (r.ready(), r.generation)
        };
        if ready {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    let this = self.clone();
                    handle.spawn(async move {
                        if let Err(e) = this.act(k, Action::Evaluate { generation }).await {
                            tracing::debug!(error = %e, "firing on resume");
                        }
                    });
                }
                Err(_) => tracing::warn!(
                    tenant = %k.0, reactor = %k.1,
                    "reactor resumed outside a tokio runtime; it fires at its next event"
                ),
            }
        }
        Ok(())
    }

    /// Stops the registry for a host's shutdown: flush timers end, pushes and graph
    /// invocations are refused with [`RegistryError::Stopped`], and it waits for every firing in
    /// progress to finish (the workflows a firing starts are then submitted before the runner
    /// drains). Reactors and graphs stay listed, and their packages stay open, since tasks of
    /// their workflows may still be running. Idempotent.
    pub async fn stop(&self) -> RegistryStopReport {
        let (report, fire_locks) = {
            let mut st = self.lock();
            st.stopped = true;
            let mut report = RegistryStopReport {
                reactors: st.reactors.len(),
                graphs: st.graphs.len(),
                discarded_events: 0,
            };
            let mut fire_locks = Vec::with_capacity(st.reactors.len());
            for r in st.reactors.values_mut() {
                r.stop_timers();
                report.discarded_events +=
                    r.accumulators.iter().map(|a| a.buffered()).sum::<usize>();
                fire_locks.push(r.fire_lock.clone());
            }
            (report, fire_locks)
        };
        // A firing holds its reactor's fire lock until its graphs ran and its workflows were
        // started; one that takes the lock after this point sees `stopped` and does nothing.
        for l in fire_locks {
            drop(l.lock().await);
        }
        if report.discarded_events > 0 {
            tracing::warn!(
                discarded = report.discarded_events,
                "reactor registry stopped: buffered batch events were discarded"
            );
        }
        tracing::info!(
            reactors = report.reactors,
            graphs = report.graphs,
            "reactor registry stopped"
        );
        report
    }

    /// [`ReactorRegistry::stop`] for one tenant of a registry its tenants share: that
    /// tenant's reactors stop firing (their timers end, firings in progress are waited for)
    /// and its graphs stop running; other tenants' go on. Undone by
    /// [`ReactorRegistry::tenant_start`].
    pub async fn tenant_stop(&self, tenant: &str) -> RegistryStopReport {
        let (report, fire_locks) = {
            let mut st = self.lock();
            st.stopped_tenants.insert(tenant.to_string());
            let graphs = st.graphs.keys().filter(|k| k.0 == tenant).count();
            let mut report = RegistryStopReport {
                reactors: 0,
                graphs,
                discarded_events: 0,
            };
            let mut fire_locks = Vec::new();
            for (_, r) in st.reactors.iter_mut().filter(|(k, _)| k.0 == tenant) {
                r.stop_timers();
                report.reactors += 1;
                report.discarded_events +=
                    r.accumulators.iter().map(|a| a.buffered()).sum::<usize>();
                fire_locks.push(r.fire_lock.clone());
            }
            (report, fire_locks)
        };
        for l in fire_locks {
            drop(l.lock().await);
        }
        tracing::info!(
            tenant,
            reactors = report.reactors,
            graphs = report.graphs,
            "tenant's reactors stopped"
        );
        report
    }

    /// Lets a tenant stopped by [`ReactorRegistry::tenant_stop`] fire again (its runtime
    /// started anew, e.g. a tenant created again under the same name).
    pub fn tenant_start(&self, tenant: &str) {
        self.lock().stopped_tenants.remove(tenant);
    }

    /// Forgets a deleted tenant's reactors and graphs, so nothing of it is listed or bound any
    /// more (its graphs leave the subscriber lists of other tenants' reactors).
    pub fn tenant_forget(&self, tenant: &str) {
        let mut st = self.lock();
        let gone: Vec<Key> = st
            .graphs
            .keys()
            .filter(|k| k.0 == tenant)
            .cloned()
            .collect();
        for r in st.reactors.values_mut() {
            r.subscribers.retain(|g| g.0 != tenant);
        }
        for k in gone {
            st.graphs.remove(&k);
        }
        st.reactors.retain(|k, _| k.0 != tenant);
    }

    /// Whether [`ReactorRegistry::stop`] ran.
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    // -----------------------------------------------------------------------------------------
    // Reporting
    // -----------------------------------------------------------------------------------------

    /// `graph list`: every graph (of `tenant`, or of every tenant), by tenant and name.
    pub fn graphs_list(&self, tenant: Option<&str>) -> Vec<GraphInfo> {
        let st = self.lock();
        st.graphs
            .values()
            .filter(|g| tenant.is_none_or(|t| g.tenant == t))
            .map(|g| graph_info(&st, g))
            .collect()
    }

    /// `graph status NAME`: a graph of `tenant` (or, failing that, a reactor of `tenant`
    /// named `name`) with its reactor's subscribers and accumulators.
    pub fn graph_status(&self, tenant: &str, name: &str) -> Option<GraphStatus> {
        let st = self.lock();
        let k = key(tenant, name);
        if let Some(g) = st.graphs.get(&k) {
            let info = graph_info(&st, g);
            let reactor = g.binding.as_ref().and_then(|b| st.reactors.get(b));
            return Some(match reactor {
                Some(r) => status_of(&st, info, r),
                None => GraphStatus {
                    graph: info,
                    subscribers: 0,
                    subscriber_names: Vec::new(),
                    bound_graphs: Vec::new(),
                    accumulators: Vec::new(),
                },
            });
        }
        let r = st.reactors.get(&k)?;
        let info = GraphInfo {
            name: r.name.clone(),
            tenant: r.tenant.clone(),
            package: r.owner.package.clone(),
            package_id: r.owner.package_id.clone(),
            version: r.owner.version.clone(),
            reactor: Some(r.name.clone()),
            reactor_tenant: Some(r.tenant.clone()),
            bound: false,
            reactor_paused: r.paused,
            health: reactor_health(r),
            fires: r.fires,
            last_fired_at: r.last_fired_at,
            last_error: r.last_error.clone(),
        };
        Some(status_of(&st, info, r))
    }

    /// `graph accumulators`: every accumulator (of `tenant`, or of every tenant), by tenant,
    /// reactor, then declaration order.
    pub fn accumulators_list(&self, tenant: Option<&str>) -> Vec<AccumulatorInfo> {
        let st = self.lock();
        st.reactors
            .values()
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .flat_map(accumulator_infos)
            .collect()
    }

    /// Every reactor (of `tenant`, or of every tenant), by tenant and name.
    pub fn reactors_list(&self, tenant: Option<&str>) -> Vec<ReactorInfo> {
        let st = self.lock();
        st.reactors
            .values()
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .map(|r| ReactorInfo {
                tenant: r.tenant.clone(),
                name: r.name.clone(),
                package: r.owner.package.clone(),
                package_id: r.owner.package_id.clone(),
                version: r.owner.version.clone(),
                criterion: r.criterion,
                workflows: r.workflows.clone(),
                accumulators: r.accumulator_names(),
                subscribers: guard::foreign_subscribers(r, &st.graphs),
                bound_graphs: bound_graphs(&st, r),
                paused: r.paused,
                fires: r.fires,
                last_fired_at: r.last_fired_at,
                last_error: r.last_error.clone(),
                health: reactor_health(r),
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Firing
    // -----------------------------------------------------------------------------------------

    /// Applies `action` to reactor `k` under its fire lock and runs the firing it causes.
    async fn act(&self, k: Key, action: Action) -> Result<PushOutcome, RegistryError> {
        let accumulator = match &action {
            Action::Push { accumulator, .. } => Some(accumulator.clone()),
            _ => None,
        };
        // The fire lock can be replaced (the reactor stopped and started again) between
        // reading it and holding it: then read it again.
        let mut action = Some(action);
        let mut attempts = 0;
        let (applied, _turn) = loop {
            attempts += 1;
            let lock = {
                let st = self.lock();
                match st.reactors.get(&k) {
                    Some(r) => r.fire_lock.clone(),
                    None => return Err(unknown_reactor(&st, &k)),
                }
            };
            let turn = lock.clone().lock_owned().await;
            let mut st = self.lock();
            let same = st
                .reactors
                .get(&k)
                .is_some_and(|r| Arc::ptr_eq(&r.fire_lock, &lock));
            if !same && attempts < 8 {
                continue;
            }
            let Some(a) = action.take() else {
                return Err(unknown_reactor(&st, &k));
            };
            break (apply(&mut st, &k, a, self.now_ms())?, turn);
        };
        if let Some(timer) = applied.timer {
            self.spawn_timer(&k, timer);
        }
        let Some(firing) = applied.firing else {
            return Ok(PushOutcome {
                tenant: k.0,
                reactor: k.1,
                accumulator,
                fired: false,
                note: applied.note,
                firing: None,
            });
        };
        let report = self.run_firing(firing).await;
        Ok(PushOutcome {
            tenant: k.0,
            reactor: k.1,
            accumulator,
            fired: true,
            note: None,
            firing: Some(report),
        })
    }

    /// Runs a firing's graphs (in binding order) and starts its workflows, then records how it
    /// went.
    async fn run_firing(&self, f: Firing) -> FireReport {
        let snapshot = Value::Object(f.snapshot.clone());
        let mut graphs = Vec::with_capacity(f.runs.len());
        for run in f.runs {
            let result = run.package.run_graph(&run.graph, snapshot.clone()).await;
            let (output, error) = match result {
                Ok(o) => (Some(o), None),
                Err(e) => (None, Some(e.to_string())),
            };
            graphs.push(GraphRun {
                tenant: run.tenant,
                graph: run.graph,
                package: run.owner.package,
                package_id: run.owner.package_id,
                version: run.owner.version,
                result: output.as_ref().map(graph_result),
                output,
                error,
            });
        }
        let mut workflows = Vec::with_capacity(f.workflows.len());
        for workflow in f.workflows {
            let context = Context::from_map(f.snapshot.clone());
            let started = match &self.inner.starter {
                Starter::None => None,
                Starter::Simple(start) => Some(start(workflow.clone(), context).await),
                Starter::Tenant(start) => Some(
                    start(StartRequest {
                        tenant: f.key.0.clone(),
                        reactor: f.key.1.clone(),
                        owner: f.owner.clone(),
                        workflow: workflow.clone(),
                        fire: f.fire,
                        context,
                    })
                    .await,
                ),
            };
            let outcome = match started {
                None => StartOutcome::Skipped {
                    reason: "this registry has no workflow starter".to_string(),
                },
                Some(Ok(execution_id)) => StartOutcome::Started { execution_id },
                Some(Err(error)) => StartOutcome::Failed { error },
            };
            workflows.push(WorkflowStart { workflow, outcome });
        }

        let errors: Vec<String> = graphs
            .iter()
            .filter_map(|g| {
                g.error
                    .as_ref()
                    .map(|e| format!("graph '{}': {e}", qualified(&f.key.0, &g.tenant, &g.graph)))
            })
            .chain(workflows.iter().filter_map(|w| match &w.outcome {
                StartOutcome::Failed { error } => {
                    Some(format!("starting workflow '{}': {error}", w.workflow))
                }
                _ => None,
            }))
            .collect();
        let finished = self.now_ms();
        {
            let mut st = self.lock();
            for g in &graphs {
                if let Some(e) = st.graphs.get_mut(&key(&g.tenant, &g.graph))
                    && e.owner.package_id == g.package_id
                {
                    e.record(finished, g.error.clone());
                }
            }
            if let Some(r) = st.reactors.get_mut(&f.key)
                && r.generation == f.generation
            {
                r.last_error = (!errors.is_empty()).then(|| errors.join("; "));
            }
        }
        if errors.is_empty() {
            tracing::debug!(
                tenant = %f.key.0, reactor = %f.key.1, fire = f.fire,
                graphs = graphs.len(), workflows = workflows.len(), "reactor fired"
            );
        } else {
            tracing::warn!(
                tenant = %f.key.0, reactor = %f.key.1, fire = f.fire,
                package_id = %f.owner.package_id, package = %f.owner.package,
                version = %f.owner.version, errors = %errors.join("; "),
                "reactor fired with errors"
            );
        }
        FireReport {
            fire: f.fire,
            fired_at: f.fired_at,
            snapshot,
            graphs,
            workflows,
        }
    }

    /// Starts the flush timer of a batch window: after the interval it releases the window's
    /// buffer (if still open) and lets the reactor fire.
    fn spawn_timer(&self, k: &Key, t: TimerRequest) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                tenant = %k.0, reactor = %k.1, accumulator = %t.accumulator,
                "no tokio runtime: the batch flushes when it is full"
            );
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task_key = k.clone();
        let action = Action::Flush {
            accumulator: t.accumulator.clone(),
            window: t.window,
            generation: t.generation,
        };
        let interval = t.interval;
        let task = handle.spawn(async move {
            tokio::time::sleep(interval).await;
            let Some(inner) = weak.upgrade() else { return };
            let registry = ReactorRegistry { inner };
            match registry.act(task_key, action).await {
                Ok(outcome) => tracing::debug!(fired = outcome.fired, "batch flush timer"),
                Err(e) => tracing::debug!(error = %e, "batch flush timer"),
            }
        });
        let abort = task.abort_handle();
        let mut st = self.lock();
        let acc = st
            .reactors
            .get_mut(k)
            .filter(|r| r.generation == t.generation)
            .and_then(|r| r.accumulator_mut(&t.accumulator))
            .filter(|a| a.window == t.window);
        match acc {
            Some(a) => {
                if let Some(old) = a.timer.replace(abort) {
                    old.abort();
                }
            }
            None => abort.abort(),
        }
    }
}

/// A graph name of another package in `tenant` is a conflict.
fn conflict(
    graphs: &BTreeMap<Key, GraphEntry>,
    tenant: &str,
    owner: &Owner,
    name: &str,
) -> Result<(), RegistryError> {
    match graphs.get(&key(tenant, name)) {
        Some(e) if e.owner.package != owner.package => Err(RegistryError::GraphConflict {
            tenant: tenant.to_string(),
            graph: name.to_string(),
            owner: e.owner.package.clone(),
            owner_id: e.owner.package_id.clone(),
            package: owner.package.clone(),
        }),
        _ => Ok(()),
    }
}

fn unknown_reactor(st: &State, k: &Key) -> RegistryError {
    RegistryError::UnknownReactor {
        tenant: k.0.clone(),
        reactor: k.1.clone(),
        available: st
            .reactors
            .keys()
            .filter(|(t, _)| *t == k.0)
            .map(|(_, n)| n.clone())
            .collect(),
    }
}

/// Applies `action` to reactor `k` and decides whether it fires (under the state lock).
fn apply(st: &mut State, k: &Key, action: Action, now: i64) -> Result<Applied, RegistryError> {
    if st.stopped_for(&k.0) {
        return Err(RegistryError::Stopped);
    }
    let State {
        reactors, graphs, ..
    } = st;
    let Some(r) = reactors.get_mut(k) else {
        return Err(RegistryError::UnknownReactor {
            tenant: k.0.clone(),
            reactor: k.1.clone(),
            available: Vec::new(),
        });
    };
    let generation = r.generation;
    let mut note = None;
    let mut timer = None;
    match action {
        Action::Push { accumulator, event } => {
            let available = r.accumulator_names();
            let Some(acc) = r.accumulator_mut(&accumulator) else {
                return Err(RegistryError::UnknownAccumulator {
                    tenant: k.0.clone(),
                    reactor: k.1.clone(),
                    accumulator,
                    available,
                });
            };
            match acc.push(event, now) {
                PushEffect::NewInput => {}
                PushEffect::Buffered {
                    held,
                    max_items,
                    start_timer,
                } => {
                    note = Some(format!(
                        "accumulator '{accumulator}' buffered the event ({held} of {max_items}); the batch is released when it is full or its flush interval ends"
                    ));
                    timer = start_timer.map(|(window, interval)| TimerRequest {
                        accumulator,
                        window,
                        interval,
                        generation,
                    });
                }
            }
        }
        Action::Flush {
            accumulator,
            window,
            generation: g,
        } => {
            let flushed = g == generation
                && r.accumulator_mut(&accumulator)
                    .is_some_and(|a| a.flush(window));
            if !flushed {
                return Ok(Applied::nothing("the batch window was already released"));
            }
        }
        Action::Evaluate { generation: g } => {
            if g != generation {
                return Ok(Applied::nothing("the reactor was restarted"));
            }
        }
    }
    if r.paused {
        let paused = format!(
            "reactor '{}' is paused; events accumulate and count when it resumes",
            r.name
        );
        return Ok(Applied {
            note: Some(note.map_or(paused.clone(), |n| format!("{n}; {paused}"))),
            firing: None,
            timer,
        });
    }
    if !r.ready() {
        let waiting = r.waiting_for();
        let note = note.or_else(|| {
            Some(format!(
                "waiting for new input on [{}] (criterion {})",
                waiting
                    .iter()
                    .map(|w| format!("'{w}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                match r.criterion {
                    Criterion::WhenAll => "when_all",
                    Criterion::WhenAny => "when_any",
                }
            ))
        });
        return Ok(Applied {
            note,
            firing: None,
            timer,
        });
    }
    let (fire, snapshot) = r.fire(now);
    let runs = r
        .subscribers
        .iter()
        .filter_map(|s| graphs.get(s))
        .map(|g| RunSpec {
            tenant: g.tenant.clone(),
            graph: g.name.clone(),
            owner: g.owner.clone(),
            package: g.package.clone(),
        })
        .collect();
    Ok(Applied {
        note: None,
        firing: Some(Firing {
            key: k.clone(),
            generation,
            fire,
            fired_at: now,
            snapshot,
            runs,
            workflows: r.workflows.clone(),
            owner: r.owner.clone(),
        }),
        timer,
    })
}

fn reactor_health(r: &ReactorState) -> Health {
    if r.paused {
        Health::Paused
    } else if r.last_error.is_some() {
        Health::Degraded
    } else {
        Health::Healthy
    }
}

fn graph_info(st: &State, g: &GraphEntry) -> GraphInfo {
    let reactor = g.binding.as_ref().and_then(|b| st.reactors.get(b));
    let reactor_paused = reactor.is_some_and(|r| r.paused);
    GraphInfo {
        name: g.name.clone(),
        tenant: g.tenant.clone(),
        package: g.owner.package.clone(),
        package_id: g.owner.package_id.clone(),
        version: g.owner.version.clone(),
        reactor: g.binding.as_ref().map(|b| b.1.clone()),
        reactor_tenant: g.binding.as_ref().map(|b| b.0.clone()),
        bound: g.binding.is_some(),
        reactor_paused,
        health: if g.last_error.is_some() {
            Health::Degraded
        } else if reactor_paused {
            Health::Paused
        } else {
            Health::Healthy
        },
        fires: g.runs,
        last_fired_at: g.last_run_at,
        last_error: g.last_error.clone(),
    }
}

fn bound_graphs(st: &State, r: &ReactorState) -> Vec<String> {
    r.subscribers
        .iter()
        .filter(|k| st.graphs.contains_key(*k))
        .map(|(t, n)| qualified(&r.tenant, t, n))
        .collect()
}

fn status_of(st: &State, graph: GraphInfo, r: &ReactorState) -> GraphStatus {
    let subscriber_names = guard::foreign_subscribers(r, &st.graphs);
    GraphStatus {
        graph,
        subscribers: subscriber_names.len(),
        subscriber_names,
        bound_graphs: bound_graphs(st, r),
        accumulators: accumulator_infos(r),
    }
}

fn accumulator_infos(r: &ReactorState) -> Vec<AccumulatorInfo> {
    r.accumulators
        .iter()
        .map(|a| AccumulatorInfo {
            tenant: r.tenant.clone(),
            reactor: r.name.clone(),
            name: a.name.clone(),
            kind: a.kind,
            depth: a.depth(),
            pending: a.fresh,
            events: a.events,
            last_event: a.last_event.clone(),
            last_event_at: a.last_event_at,
        })
        .collect()
}
