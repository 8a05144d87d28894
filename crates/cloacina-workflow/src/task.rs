//! The unit of work: a task's declaration (`TaskSpec`) and its body (the `Task` trait).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::TaskError;
use crate::retry::RetryPolicy;
use crate::trigger::TriggerRule;

/// A boxed, sendable future: what a task body returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything about a task except its code. Serializable, so packages can describe their
/// tasks to the host and the host can show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: String,
    /// Tasks that must finish first, in declared order (that order is the merge order).
    pub dependencies: Vec<String>,
    pub retry: RetryPolicy,
    /// A wall-clock limit per attempt.
    pub timeout_ms: Option<u64>,
    pub trigger_rule: TriggerRule,
    pub description: Option<String>,
    /// A hash of the task's source when built by `#[task]`, so a code change changes the
    /// workflow version.
    pub code_fingerprint: Option<String>,
}

impl TaskSpec {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            dependencies: Vec::new(),
            retry: RetryPolicy::none(),
            timeout_ms: None,
            trigger_rule: TriggerRule::Always,
            description: None,
            code_fingerprint: None,
        }
    }

    pub fn depends_on<I, S>(mut self, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dependencies.extend(deps.into_iter().map(Into::into));
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    pub fn trigger_rule(mut self, rule: TriggerRule) -> Self {
        self.trigger_rule = rule;
        self
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    pub fn timeout_duration(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// A task: its declaration and a body that transforms the context.
///
/// The body gets the task's input context (workflow input merged with its dependencies'
/// outputs) and mutates it; what it leaves behind is the task's output.
pub trait Task: Send + Sync + 'static {
    fn spec(&self) -> &TaskSpec;
    fn run<'a>(&'a self, ctx: &'a mut Context) -> BoxFuture<'a, Result<(), TaskError>>;
}

/// A task built from a spec and a function, for workflows assembled by hand.
///
/// ```
/// use cloacina_workflow::{FnTask, TaskSpec};
/// let t = FnTask::new(TaskSpec::new("hello"), |ctx| {
///     Box::pin(async move {
///         ctx.set("greeting", "hi")?;
///         Ok(())
///     })
/// });
/// # let _ = t;
/// ```
pub struct FnTask<F> {
    spec: TaskSpec,
    body: F,
}

impl<F> FnTask<F>
where
    F: for<'a> Fn(&'a mut Context) -> BoxFuture<'a, Result<(), TaskError>> + Send + Sync + 'static,
{
    pub fn new(spec: TaskSpec, body: F) -> Self {
        Self { spec, body }
    }
}

impl<F> Task for FnTask<F>
where
    F: for<'a> Fn(&'a mut Context) -> BoxFuture<'a, Result<(), TaskError>> + Send + Sync + 'static,
{
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn run<'a>(&'a self, ctx: &'a mut Context) -> BoxFuture<'a, Result<(), TaskError>> {
        (self.body)(ctx)
    }
}

impl std::fmt::Debug for dyn Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("spec", self.spec()).finish()
    }
}
