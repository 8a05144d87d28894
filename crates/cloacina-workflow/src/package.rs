//! What a package declares besides its workflows — cron schedules, custom-poll triggers,
//! reactors and computation graphs — in two forms:
//!
//! - **declarations** ([`CronSchedule`], [`PollTrigger`], [`Reactor`], [`ComputationGraph`]):
//!   `const`-constructible values with `'static` data and plain function pointers, written by
//!   package authors and listed in [`export_package!`](crate::export_package);
//! - **descriptions** ([`PackageDescription`] and the `*Description` types): owned,
//!   serializable, what a package library tells the host through the ABI's `describe` call.
//!
//! [`PackageDescription::validate`] (feature `validate`, on by default) is the check the host
//! runs at load time: every workflow rebuilds into a valid [`Workflow`], names are unique, cron
//! expressions and time zones parse, graphs are DAGs of known nodes, and everything refers to
//! workflows of the package.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::TaskError;
use crate::graph::ComputationGraph;
use crate::task::{BoxFuture, Task, TaskSpec};
use crate::workflow::{Workflow, WorkflowDescription};

// ---------------------------------------------------------------------------------------------
// Shared enums
// ---------------------------------------------------------------------------------------------

/// What a cron schedule does about instants it missed (the process was down, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed instants are dropped; the schedule resumes at the next instant.
    Skip,
    /// Every missed instant runs, oldest first, but at most `max` of them (the most recent).
    RunAll { max: u32 },
}

/// How an accumulator keeps the events pushed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccumulatorKind {
    /// Only the latest event.
    Passthrough,
    /// Events are buffered and released together when `max_items` are waiting or
    /// `flush_interval_ms` has passed since the first of them, whichever comes first.
    Batch {
        max_items: u32,
        flush_interval_ms: u64,
    },
    /// A bounded history: the last `capacity` events, oldest first.
    State { capacity: u32 },
}

/// When a reactor fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// As soon as any accumulator has something new.
    #[default]
    WhenAny,
    /// Once every accumulator has something new since the last firing.
    WhenAll,
}

/// What a custom-poll trigger's poll function answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PollOutcome {
    /// Start the trigger's workflow with this input context.
    Fire { context: Context },
    /// Nothing to do this time.
    NotNow,
}

impl PollOutcome {
    pub fn fire(context: Context) -> Self {
        PollOutcome::Fire { context }
    }

    pub fn is_fire(&self) -> bool {
        matches!(self, PollOutcome::Fire { .. })
    }
}

/// What a poll function returns: a boxed future, so it can await I/O.
pub type PollFuture = BoxFuture<'static, Result<PollOutcome, TaskError>>;

/// A poll function. Write `fn check() -> PollFuture { Box::pin(async { ... }) }`, or pass a
/// non-capturing closure around an `async fn`: `|| Box::pin(check())`.
pub type PollFn = fn() -> PollFuture;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Declarations (written by package authors)
// ---------------------------------------------------------------------------------------------

/// A cron schedule that starts a workflow of the package.
///
/// ```
/// use cloacina_workflow::package::{CatchUp, CronSchedule};
/// pub const NIGHTLY: CronSchedule = CronSchedule::new("nightly", "report", "0 2 * * *")
///     .timezone("Europe/Amsterdam")
///     .catch_up(CatchUp::RunAll { max: 3 });
/// assert_eq!(NIGHTLY.describe().timezone, "Europe/Amsterdam");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronSchedule {
    pub name: &'static str,
    /// The workflow started at each instant (use the workflow module's `WORKFLOW_NAME`).
    pub workflow: &'static str,
    /// Five fields (minute precision) or six (with seconds first); `@daily` and friends too.
    pub expression: &'static str,
    /// An IANA time zone the expression is read in. Default `UTC`.
    pub timezone: &'static str,
    /// Default: [`CatchUp::Skip`].
    pub catch_up: CatchUp,
}

impl CronSchedule {
    pub const fn new(name: &'static str, workflow: &'static str, expression: &'static str) -> Self {
        Self {
            name,
            workflow,
            expression,
            timezone: "UTC",
            catch_up: CatchUp::Skip,
        }
    }

    pub const fn timezone(mut self, timezone: &'static str) -> Self {
        self.timezone = timezone;
        self
    }

    pub const fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    pub fn describe(&self) -> CronDescription {
        CronDescription {
            name: self.name.to_string(),
            workflow: self.workflow.to_string(),
            expression: self.expression.to_string(),
            timezone: self.timezone.to_string(),
            catch_up: self.catch_up,
        }
    }
}

/// A custom-poll trigger: the host calls `poll` every `poll_interval`; when it answers
/// [`PollOutcome::Fire`], the host starts `workflow` with the returned context.
///
/// ```
/// use std::time::Duration;
/// use cloacina_workflow::package::{PollFuture, PollOutcome, PollTrigger};
/// use cloacina_workflow::Context;
///
/// fn check_inbox() -> PollFuture {
///     Box::pin(async { Ok(PollOutcome::NotNow) })
/// }
///
/// pub const INBOX: PollTrigger = PollTrigger::new("inbox", "ingest", check_inbox)
///     .every(Duration::from_secs(10));
/// assert_eq!(INBOX.describe().poll_interval_ms, 10_000);
/// ```
#[derive(Clone, Copy)]
pub struct PollTrigger {
    pub name: &'static str,
    pub workflow: &'static str,
    pub poll: PollFn,
    /// Default 30 s.
    pub poll_interval: Duration,
    /// Whether a fire whose context equals that of a run still in flight starts another run.
    /// Default `false`: such fires are de-duplicated.
    pub allow_concurrent: bool,
}

impl std::fmt::Debug for PollTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollTrigger")
            .field("name", &self.name)
            .field("workflow", &self.workflow)
            .field("poll_interval", &self.poll_interval)
            .field("allow_concurrent", &self.allow_concurrent)
            .finish()
    }
}

impl PollTrigger {
    pub const fn new(name: &'static str, workflow: &'static str, poll: PollFn) -> Self {
        Self {
            name,
            workflow,
            poll,
            poll_interval: Duration::from_secs(30),
            allow_concurrent: false,
        }
    }

    pub const fn every(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    pub const fn allow_concurrent(mut self, allow: bool) -> Self {
        self.allow_concurrent = allow;
        self
    }

    pub fn describe(&self) -> TriggerDescription {
        TriggerDescription {
            name: self.name.to_string(),
            workflow: self.workflow.to_string(),
            poll_interval_ms: millis(self.poll_interval),
            allow_concurrent: self.allow_concurrent,
        }
    }
}

/// A named input of a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accumulator {
    pub name: &'static str,
    pub kind: AccumulatorKind,
}

impl Accumulator {
    pub const fn passthrough(name: &'static str) -> Self {
        Self {
            name,
            kind: AccumulatorKind::Passthrough,
        }
    }

    pub const fn batch(name: &'static str, max_items: u32, flush_interval: Duration) -> Self {
        let flush_interval_ms = flush_interval.as_millis();
        Self {
            name,
            kind: AccumulatorKind::Batch {
                max_items,
                flush_interval_ms: if flush_interval_ms > u64::MAX as u128 {
                    u64::MAX
                } else {
                    flush_interval_ms as u64
                },
            },
        }
    }

    pub const fn state(name: &'static str, capacity: u32) -> Self {
        Self {
            name,
            kind: AccumulatorKind::State { capacity },
        }
    }

    pub fn describe(&self) -> AccumulatorDescription {
        AccumulatorDescription {
            name: self.name.to_string(),
            kind: self.kind,
        }
    }
}

/// A reactor: accumulators, a firing criterion, and the workflows it starts when it fires.
/// Computation graphs bind to it by name (possibly from other packages).
///
/// ```
/// use std::time::Duration;
/// use cloacina_workflow::package::{Accumulator, Criterion, Reactor};
/// pub const PRICES: Reactor = Reactor::new(
///     "price_reactor",
///     &[Accumulator::passthrough("spot"), Accumulator::batch("trades", 100, Duration::from_secs(5))],
/// )
/// .criterion(Criterion::WhenAny);
/// assert_eq!(PRICES.describe().accumulators.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reactor {
    pub name: &'static str,
    pub accumulators: &'static [Accumulator],
    /// Default [`Criterion::WhenAny`].
    pub criterion: Criterion,
    /// Workflows of this package started (with the cache snapshot as input) on each firing.
    pub workflows: &'static [&'static str],
}

impl Reactor {
    pub const fn new(name: &'static str, accumulators: &'static [Accumulator]) -> Self {
        Self {
            name,
            accumulators,
            criterion: Criterion::WhenAny,
            workflows: &[],
        }
    }

    pub const fn criterion(mut self, criterion: Criterion) -> Self {
        self.criterion = criterion;
        self
    }

    pub const fn starts(mut self, workflows: &'static [&'static str]) -> Self {
        self.workflows = workflows;
        self
    }

    pub fn describe(&self) -> ReactorDescription {
        ReactorDescription {
            name: self.name.to_string(),
            accumulators: self
                .accumulators
                .iter()
                .map(Accumulator::describe)
                .collect(),
            criterion: self.criterion,
            workflows: self.workflows.iter().map(|w| w.to_string()).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Descriptions (the ABI's describe document)
// ---------------------------------------------------------------------------------------------

/// The document a package library returns from `describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageDescription {
    /// The crate's name (`CARGO_PKG_NAME`); must equal `package.toml`'s `package.name`.
    pub name: String,
    /// The crate's version (`CARGO_PKG_VERSION`); must equal `package.toml`'s `package.version`.
    pub version: String,
    /// The plugin ABI the library speaks ([`crate::abi::ABI_VERSION`] when it was built).
    pub abi_version: u32,
    /// The `cloacina-workflow` version the library was built against.
    #[serde(default)]
    pub sdk_version: String,
    /// `"unwind"` or `"abort"`: the panic strategy the library was built with. The host refuses
    /// `abort`, under which a panicking task would take the whole process down.
    #[serde(default = "default_panic")]
    pub panic: String,
    #[serde(default)]
    pub workflows: Vec<WorkflowDescription>,
    #[serde(default)]
    pub cron: Vec<CronDescription>,
    #[serde(default)]
    pub triggers: Vec<TriggerDescription>,
    #[serde(default)]
    pub reactors: Vec<ReactorDescription>,
    #[serde(default)]
    pub graphs: Vec<GraphDescription>,
}

fn default_panic() -> String {
    "unwind".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronDescription {
    pub name: String,
    pub workflow: String,
    pub expression: String,
    pub timezone: String,
    pub catch_up: CatchUp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerDescription {
    pub name: String,
    pub workflow: String,
    pub poll_interval_ms: u64,
    pub allow_concurrent: bool,
}

impl TriggerDescription {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccumulatorDescription {
    pub name: String,
    #[serde(flatten)]
    pub kind: AccumulatorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactorDescription {
    pub name: String,
    pub accumulators: Vec<AccumulatorDescription>,
    pub criterion: Criterion,
    #[serde(default)]
    pub workflows: Vec<String>,
}

/// A computation graph: nodes, their edges (each node lists the nodes it takes input from),
/// and the reactor it is bound to — a bare name (resolved in the package's own tenant, then
/// `public`), `tenant/name`, or none for a trigger-less graph invoked by tasks or the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphDescription {
    pub name: String,
    pub reactor: Option<String>,
    pub nodes: Vec<NodeDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub id: String,
    /// The nodes whose outputs this node receives, in order. Empty for a root node, which
    /// receives the graph's input.
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// Where a graph's reactor binding points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorRef<'a> {
    /// `Some` for `tenant/name`; `None` for a bare name (own tenant, then `public`).
    pub tenant: Option<&'a str>,
    pub name: &'a str,
}

impl GraphDescription {
    /// The reactor binding split into tenant and name; `None` for a trigger-less graph.
    pub fn reactor_ref(&self) -> Option<ReactorRef<'_>> {
        self.reactor.as_deref().map(|r| match r.split_once('/') {
            Some((tenant, name)) => ReactorRef {
                tenant: Some(tenant),
                name,
            },
            None => ReactorRef {
                tenant: None,
                name: r,
            },
        })
    }

    pub fn is_trigger_less(&self) -> bool {
        self.reactor.is_none()
    }

    /// Node ids in execution order: a topological order in which ties keep declaration
    /// order, so every run of the graph visits nodes in the same order. Errors name the
    /// unknown node, the duplicate, or the cycle.
    pub fn execution_order(&self) -> Result<Vec<String>, String> {
        let mut index = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if index.insert(n.id.as_str(), i).is_some() {
                return Err(format!(
                    "graph '{}' declares node '{}' more than once",
                    self.name, n.id
                ));
            }
        }
        let mut indegree = vec![0usize; self.nodes.len()];
        let mut dependents = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for (k, input) in n.inputs.iter().enumerate() {
                let Some(&j) = index.get(input.as_str()) else {
                    let hint = crate::names::suggest(input, index.keys().copied())
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    return Err(format!(
                        "graph '{}': node '{}' takes input from '{}', which is not a node of this graph{hint}",
                        self.name, n.id, input
                    ));
                };
                if n.inputs[..k].contains(input) {
                    return Err(format!(
                        "graph '{}': node '{}' lists input '{}' twice",
                        self.name, n.id, input
                    ));
                }
                indegree[i] += 1;
                dependents[j].push(i);
            }
        }
        let mut ready: BTreeSet<usize> = (0..self.nodes.len())
            .filter(|&i| indegree[i] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop_first() {
            order.push(self.nodes[i].id.clone());
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        if order.len() != self.nodes.len() {
            let stuck: Vec<&str> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| indegree[*i] > 0)
                .map(|(_, n)| n.id.as_str())
                .collect();
            return Err(format!(
                "graph '{}' has a cycle among nodes [{}]; a graph's edges must form a DAG",
                self.name,
                stuck.join(", ")
            ));
        }
        Ok(order)
    }

    /// Nodes no other node takes input from, in declaration order: the graph's results.
    pub fn sinks(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !self.nodes.iter().any(|m| m.inputs.contains(&n.id)))
            .map(|n| n.id.clone())
            .collect()
    }
}

/// A task that only carries a declaration: what the host uses to check that a described
/// workflow is a valid DAG before any code runs.
struct DeclaredTask(TaskSpec);

impl Task for DeclaredTask {
    fn spec(&self) -> &TaskSpec {
        &self.0
    }
    fn run<'a>(&'a self, _ctx: &'a mut Context) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async {
            Err(TaskError::permanent(
                "this task is a declaration only; its code lives in the package library",
            ))
        })
    }
}

impl PackageDescription {
    /// Rebuilds `workflow` as a [`Workflow`] whose tasks only carry their declarations (their
    /// bodies refuse to run): the same validation and the same version hash as the library's.
    pub fn declared_workflow(
        workflow: &WorkflowDescription,
    ) -> Result<Workflow, crate::WorkflowError> {
        Workflow::new(
            workflow.name.clone(),
            workflow.description.clone(),
            workflow
                .tasks
                .iter()
                .map(|spec| Arc::new(DeclaredTask(spec.clone())) as Arc<dyn Task>)
                .collect(),
        )
    }

    pub fn workflow_names(&self) -> Vec<&str> {
        self.workflows.iter().map(|w| w.name.as_str()).collect()
    }
    pub fn cron_names(&self) -> Vec<&str> {
        self.cron.iter().map(|c| c.name.as_str()).collect()
    }
    pub fn trigger_names(&self) -> Vec<&str> {
        self.triggers.iter().map(|t| t.name.as_str()).collect()
    }
    pub fn reactor_names(&self) -> Vec<&str> {
        self.reactors.iter().map(|r| r.name.as_str()).collect()
    }
    pub fn graph_names(&self) -> Vec<&str> {
        self.graphs.iter().map(|g| g.name.as_str()).collect()
    }

    pub fn graph(&self, name: &str) -> Option<&GraphDescription> {
        self.graphs.iter().find(|g| g.name == name)
    }
    pub fn trigger(&self, name: &str) -> Option<&TriggerDescription> {
        self.triggers.iter().find(|t| t.name == name)
    }
    pub fn reactor(&self, name: &str) -> Option<&ReactorDescription> {
        self.reactors.iter().find(|r| r.name == name)
    }
    pub fn workflow(&self, name: &str) -> Option<&WorkflowDescription> {
        self.workflows.iter().find(|w| w.name == name)
    }

    /// Everything wrong with the description, one sentence per problem, in a stable order.
    /// Empty when it is valid. `abi_version` is checked against this crate's
    /// [`crate::abi::ABI_VERSION`].
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.abi_version != crate::abi::ABI_VERSION {
            p.push(format!(
                "the description says ABI version {}, this host speaks {}",
                self.abi_version,
                crate::abi::ABI_VERSION
            ));
        }
        if self.panic != "unwind" {
            p.push(format!(
                "the library was built with panic = \"{}\": a panicking task would take the whole process down; build it with the default panic = \"unwind\"",
                self.panic
            ));
        }
        if self.name.is_empty() {
            p.push("the package name is empty".to_string());
        }
        if self.version.is_empty() {
            p.push("the package version is empty".to_string());
        }

        duplicates(&mut p, "workflow", self.workflow_names());
        for wf in &self.workflows {
            if let Err(e) = Self::declared_workflow(wf) {
                p.push(e.to_string());
            }
        }
        let workflows: BTreeSet<&str> = self.workflow_names().into_iter().collect();
        let known_workflow = |p: &mut Vec<String>, what: String, wf: &str| {
            if !workflows.contains(wf) {
                let hint = crate::names::suggest(wf, workflows.iter().copied())
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                p.push(format!(
                    "{what} starts workflow '{wf}', which this package does not export{hint}"
                ));
            }
        };

        // Cron schedules and custom-poll triggers are listed together (`trigger list`), so
        // their names share one namespace.
        duplicates(
            &mut p,
            "trigger or cron schedule",
            self.cron_names()
                .into_iter()
                .chain(self.trigger_names())
                .collect(),
        );
        for c in &self.cron {
            name_problem(&mut p, "cron schedule", &c.name);
            known_workflow(&mut p, format!("cron schedule '{}'", c.name), &c.workflow);
            if let Err(e) = check_cron_expression(&c.expression) {
                p.push(format!(
                    "cron schedule '{}': expression '{}' is not valid: {e}",
                    c.name, c.expression
                ));
            }
            if let Err(e) = check_timezone(&c.timezone) {
                p.push(format!("cron schedule '{}': {e}", c.name));
            }
            if let CatchUp::RunAll { max: 0 } = c.catch_up {
                p.push(format!(
                    "cron schedule '{}': catch-up run_all needs a cap of at least 1 (max = 0)",
                    c.name
                ));
            }
        }
        for t in &self.triggers {
            name_problem(&mut p, "trigger", &t.name);
            known_workflow(&mut p, format!("trigger '{}'", t.name), &t.workflow);
            if t.poll_interval_ms == 0 {
                p.push(format!(
                    "trigger '{}': poll interval must be greater than zero",
                    t.name
                ));
            }
        }

        duplicates(&mut p, "reactor", self.reactor_names());
        for r in &self.reactors {
            name_problem(&mut p, "reactor", &r.name);
            if r.accumulators.is_empty() {
                p.push(format!(
                    "reactor '{}' has no accumulators; give it at least one",
                    r.name
                ));
            }
            duplicates(
                &mut p,
                &format!("accumulator of reactor '{}'", r.name),
                r.accumulators.iter().map(|a| a.name.as_str()).collect(),
            );
            for a in &r.accumulators {
                name_problem(
                    &mut p,
                    &format!("accumulator of reactor '{}'", r.name),
                    &a.name,
                );
                match a.kind {
                    AccumulatorKind::Batch {
                        max_items,
                        flush_interval_ms,
                    } if max_items == 0 || flush_interval_ms == 0 => p.push(format!(
                        "reactor '{}': batch accumulator '{}' needs max_items >= 1 and a flush interval > 0",
                        r.name, a.name
                    )),
                    AccumulatorKind::State { capacity: 0 } => p.push(format!(
                        "reactor '{}': state accumulator '{}' needs a capacity >= 1",
                        r.name, a.name
                    )),
                    _ => {}
                }
            }
            for wf in &r.workflows {
                known_workflow(&mut p, format!("reactor '{}'", r.name), wf);
            }
        }

        duplicates(&mut p, "graph", self.graph_names());
        for g in &self.graphs {
            name_problem(&mut p, "graph", &g.name);
            if g.nodes.is_empty() {
                p.push(format!(
                    "graph '{}' has no nodes; give it at least one",
                    g.name
                ));
            }
            for n in &g.nodes {
                name_problem(&mut p, &format!("node of graph '{}'", g.name), &n.id);
            }
            if let Err(e) = g.execution_order() {
                p.push(e);
            }
            if let Some(r) = &g.reactor {
                let parts: Vec<&str> = r.split('/').collect();
                let ok = match parts.as_slice() {
                    [name] | [_, name] => {
                        parts
                            .iter()
                            .all(|s| crate::names::name_problem(s).is_none())
                            && !name.is_empty()
                    }
                    _ => false,
                };
                if !ok {
                    p.push(format!(
                        "graph '{}': reactor binding '{r}' is not valid; write a reactor name, or 'tenant/name' for another tenant's reactor",
                        g.name
                    ));
                }
            }
        }
        p
    }

    /// `Ok` when [`PackageDescription::problems`] finds none.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn name_problem(p: &mut Vec<String>, what: &str, name: &str) {
    if let Some(reason) = crate::names::name_problem(name) {
        p.push(format!("invalid {what} name '{name}': {reason}"));
    }
}

fn duplicates(p: &mut Vec<String>, what: &str, names: Vec<&str>) {
    let mut seen = BTreeSet::new();
    let mut reported = BTreeSet::new();
    for n in names {
        if !seen.insert(n) && reported.insert(n) {
            p.push(format!("{what} name '{n}' is used more than once"));
        }
    }
}

/// Checks a cron expression the way the host's scheduler parses it: five fields (minute
/// precision) or six (seconds first), plus `@hourly`-style nicknames.
#[cfg(feature = "validate")]
pub fn check_cron_expression(expression: &str) -> Result<(), String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expression)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Without the `validate` feature only emptiness is checked.
#[cfg(not(feature = "validate"))]
pub fn check_cron_expression(expression: &str) -> Result<(), String> {
    if expression.trim().is_empty() {
        Err("it is empty".to_string())
    } else {
        Ok(())
    }
}

/// Checks an IANA time zone name (`UTC`, `Europe/Amsterdam`, ...).
#[cfg(feature = "validate")]
pub fn check_timezone(timezone: &str) -> Result<(), String> {
    timezone
        .parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| {
            format!("time zone '{timezone}' is not an IANA time zone name (like 'UTC' or 'Europe/Amsterdam')")
        })
}

/// Without the `validate` feature only emptiness is checked.
#[cfg(not(feature = "validate"))]
pub fn check_timezone(timezone: &str) -> Result<(), String> {
    if timezone.trim().is_empty() {
        Err("the time zone is empty".to_string())
    } else {
        Ok(())
    }
}

/// Describes a computation graph declaration (see [`crate::graph`]).
pub(crate) fn describe_graph(graph: &ComputationGraph) -> GraphDescription {
    GraphDescription {
        name: graph.name.to_string(),
        reactor: graph.reactor.map(str::to_string),
        nodes: graph
            .nodes
            .iter()
            .map(|n| NodeDescription {
                id: n.id.to_string(),
                inputs: n.inputs.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desc() -> PackageDescription {
        PackageDescription {
            name: "p".into(),
            version: "1.0.0".into(),
            abi_version: crate::abi::ABI_VERSION,
            sdk_version: String::new(),
            panic: "unwind".into(),
            workflows: vec![WorkflowDescription {
                name: "wf".into(),
                description: None,
                tasks: vec![TaskSpec::new("a"), TaskSpec::new("b").depends_on(["a"])],
            }],
            cron: vec![CronSchedule::new("nightly", "wf", "0 2 * * *").describe()],
            triggers: vec![],
            reactors: vec![],
            graphs: vec![GraphDescription {
                name: "g".into(),
                reactor: Some("tenant/r".into()),
                nodes: vec![
                    NodeDescription {
                        id: "x".into(),
                        inputs: vec![],
                    },
                    NodeDescription {
                        id: "y".into(),
                        inputs: vec!["x".into()],
                    },
                ],
            }],
        }
    }

    #[test]
    fn valid_description_has_no_problems() {
        assert_eq!(desc().problems(), Vec::<String>::new());
        let g = &desc().graphs[0];
        assert_eq!(
            g.reactor_ref(),
            Some(ReactorRef {
                tenant: Some("tenant"),
                name: "r"
            })
        );
        assert_eq!(g.execution_order().expect("dag"), ["x", "y"]);
        assert_eq!(g.sinks(), ["y"]);
    }

    #[test]
    fn every_problem_is_reported() {
        let mut d = desc();
        d.workflows[0].tasks[1].dependencies = vec!["nope".into()];
        d.cron.push(CronDescription {
            name: "nightly".into(),
            workflow: "wf2".into(),
            expression: "61 * * * *".into(),
            timezone: "Mars/Olympus".into(),
            catch_up: CatchUp::RunAll { max: 0 },
        });
        d.graphs[0].nodes[0].inputs = vec!["y".into()];
        d.graphs[0].reactor = Some("a/b/c".into());
        let p = d.problems();
        let text = p.join("\n");
        for needle in [
            "depends on 'nope'",
            "trigger or cron schedule name 'nightly' is used more than once",
            "starts workflow 'wf2', which this package does not export (did you mean 'wf'?)",
            "expression '61 * * * *' is not valid",
            "time zone 'Mars/Olympus' is not an IANA time zone name",
            "needs a cap of at least 1",
            "graph 'g' has a cycle among nodes [x, y]",
            "reactor binding 'a/b/c' is not valid",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn serde_shapes() {
        let a = Accumulator::batch("t", 10, Duration::from_secs(2)).describe();
        assert_eq!(
            serde_json::to_value(&a).expect("json"),
            json!({"name": "t", "kind": "batch", "max_items": 10, "flush_interval_ms": 2000})
        );
        let c = CronSchedule::new("n", "w", "@daily")
            .catch_up(CatchUp::RunAll { max: 5 })
            .describe();
        assert_eq!(
            serde_json::to_value(&c).expect("json"),
            json!({"name": "n", "workflow": "w", "expression": "@daily", "timezone": "UTC", "catch_up": {"policy": "run_all", "max": 5}})
        );
        let fire = PollOutcome::fire(Context::from_value(json!({"k": 1})).expect("object"));
        assert_eq!(
            serde_json::to_value(&fire).expect("json"),
            json!({"outcome": "fire", "context": {"k": 1}})
        );
        let back: AccumulatorDescription =
            serde_json::from_value(json!({"name": "s", "kind": "state", "capacity": 3}))
                .expect("parse");
        assert_eq!(back.kind, AccumulatorKind::State { capacity: 3 });
    }
}
