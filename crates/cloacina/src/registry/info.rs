//! What the registry reports: outcomes of its calls and the rows of `graph list`,
//! `graph status`, `graph accumulators` and the reactor list. Every type serializes to the JSON
//! the HTTP API and the CLI show. Times are Unix epoch milliseconds.

use cloacina_workflow::GraphOutput;
use cloacina_workflow::package::{AccumulatorKind, Criterion};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// How a graph or reactor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Running normally (or not run yet).
    Healthy,
    /// Its reactor is paused: events accumulate, nothing fires.
    Paused,
    /// The last run (or firing) had an error; see `last_error`.
    Degraded,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Paused => "paused",
            Health::Degraded => "degraded",
        })
    }
}

/// What [`graphs_bind`](super::ReactorRegistry::graphs_bind) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BindOutcome {
    /// Every reactor-bound graph of the package is bound.
    Bound,
    /// A reactor they bind to is not loaded; nothing was bound. Retry later (the reconciler
    /// does, on every pass) and show `reason` meanwhile.
    Waiting { reason: String },
}

impl BindOutcome {
    pub fn is_bound(&self) -> bool {
        matches!(self, BindOutcome::Bound)
    }
}

/// What a push (or a batch flush, or a resume) did to a reactor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushOutcome {
    pub tenant: String,
    pub reactor: String,
    /// The accumulator pushed to; `None` for a flush timer or a resume.
    pub accumulator: Option<String>,
    /// Whether the reactor fired.
    pub fired: bool,
    /// Why it did not fire (paused, batch buffering, `when_all` waiting for others).
    pub note: Option<String>,
    /// The firing, when it fired.
    pub firing: Option<FireReport>,
}

impl PushOutcome {
    /// The run of bound graph `graph` in this firing.
    pub fn graph(&self, graph: &str) -> Option<&GraphRun> {
        self.firing.as_ref().and_then(|f| f.graph(graph))
    }
}

/// One firing of a reactor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FireReport {
    /// The reactor's firing count after this firing (1 for its first).
    pub fire: u64,
    pub fired_at: i64,
    /// The input cache the graphs ran on and the workflows started with: each accumulator's
    /// contribution keyed by its name.
    pub snapshot: Value,
    /// Every bound graph's run, in binding order.
    pub graphs: Vec<GraphRun>,
    /// Every workflow of the reactor, in declaration order.
    pub workflows: Vec<WorkflowStart>,
}

impl FireReport {
    pub fn graph(&self, graph: &str) -> Option<&GraphRun> {
        self.graphs.iter().find(|g| g.graph == graph)
    }

    /// Whether every graph ran and every workflow start that was attempted succeeded.
    pub fn is_clean(&self) -> bool {
        self.graphs.iter().all(|g| g.error.is_none())
            && self
                .workflows
                .iter()
                .all(|w| !matches!(w.outcome, StartOutcome::Failed { .. }))
    }
}

/// One bound graph's run in a firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphRun {
    /// The graph's own tenant (its package's).
    pub tenant: String,
    pub graph: String,
    pub package: String,
    pub package_id: String,
    pub version: String,
    /// The sink's output (an object of sink outputs for a graph with several sinks).
    pub result: Option<Value>,
    /// Every node's output and the order they ran in.
    pub output: Option<GraphOutput>,
    pub error: Option<String>,
}

/// A reactor's workflow start on a firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowStart {
    pub workflow: String,
    #[serde(flatten)]
    pub outcome: StartOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StartOutcome {
    Started {
        execution_id: Uuid,
    },
    Failed {
        error: String,
    },
    /// The registry has no workflow starter (a registry used without an engine).
    Skipped {
        reason: String,
    },
}

/// A row of `graph list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphInfo {
    pub name: String,
    /// The graph's tenant (its package's).
    pub tenant: String,
    pub package: String,
    pub package_id: String,
    pub version: String,
    /// The reactor it is bound to; `None` for a trigger-less graph.
    pub reactor: Option<String>,
    /// The reactor's tenant (differs from `tenant` for a graph bound across tenants).
    pub reactor_tenant: Option<String>,
    /// Bound to a reactor (false for a trigger-less graph).
    pub bound: bool,
    pub reactor_paused: bool,
    pub health: Health,
    /// Runs: firings of its reactor it ran on, or invocations of a trigger-less graph.
    pub fires: u64,
    pub last_fired_at: Option<i64>,
    pub last_error: Option<String>,
}

/// `graph status NAME`: a graph's row, its reactor's subscribers and accumulators. `NAME` may
/// also name a reactor, as the unload guide does (`graph status R` ... "subscribers: 0"): the
/// row then describes the reactor itself (`reactor` = its name, `fires` = its firings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphStatus {
    #[serde(flatten)]
    pub graph: GraphInfo,
    /// Graphs of *other* packages bound to the reactor: what the bound-subscriber guard counts.
    /// 0 for a trigger-less graph.
    pub subscribers: usize,
    /// Their names, in binding order.
    pub subscriber_names: Vec<String>,
    /// Every graph bound to the reactor (the owner's too), in binding order.
    pub bound_graphs: Vec<String>,
    /// The reactor's accumulators; empty for a trigger-less graph.
    pub accumulators: Vec<AccumulatorInfo>,
}

/// A row of `graph accumulators`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccumulatorInfo {
    pub tenant: String,
    pub reactor: String,
    pub name: String,
    /// `kind` (`passthrough`, `batch`, `state`) and its parameters.
    #[serde(flatten)]
    pub kind: AccumulatorKind,
    /// Events held: 0 or 1 for passthrough; buffered plus released-but-not-yet-fired for a
    /// batch; the history's length for state.
    pub depth: usize,
    /// New input since the reactor last fired.
    pub pending: bool,
    /// Events received since the reactor started.
    pub events: u64,
    pub last_event: Option<Value>,
    pub last_event_at: Option<i64>,
}

/// A reactor: owner, subscribers, pause state, firings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReactorInfo {
    pub tenant: String,
    pub name: String,
    /// The owner package's name, id and version.
    pub package: String,
    pub package_id: String,
    pub version: String,
    pub criterion: Criterion,
    pub workflows: Vec<String>,
    pub accumulators: Vec<String>,
    /// Graphs of other packages bound to it (the guard's list), in binding order.
    pub subscribers: Vec<String>,
    /// Every bound graph, the owner's included, in binding order.
    pub bound_graphs: Vec<String>,
    pub paused: bool,
    pub fires: u64,
    pub last_fired_at: Option<i64>,
    pub last_error: Option<String>,
    pub health: Health,
}
