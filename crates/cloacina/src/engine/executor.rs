//! Running one claimed attempt: gather its input, apply its trigger rule, run its body under
//! timeout, panic and cancellation guards, and decide the outcome by its retry policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use super::cache::ContextCache;
use crate::sync::lock;

use crate::store::{
    AttemptOutcome, ClaimedTask, INPUT_CONTEXT, Store, StoreError, TaskStatus, now_ms,
};
use crate::workflow::{Context, Task, TaskError, TaskOutcome, TriggerRule, Workflow};

/// Decides how the claimed attempt ends. Store errors while reading inputs are returned so the
/// caller can leave the task to lease recovery rather than record a wrong outcome.
pub(crate) async fn attempt(
    store: &Store,
    cache: &Mutex<ContextCache>,
    workflow: &Workflow,
    claimed: &ClaimedTask,
    mut cancel: watch::Receiver<bool>,
) -> Result<AttemptOutcome, StoreError> {
    let Some(task) = workflow.task(&claimed.task_id).cloned() else {
        return Ok(AttemptOutcome::Failed {
            error: format!(
                "task '{}' is not part of workflow '{}' version {} registered on this runner",
                claimed.task_id,
                workflow.name(),
                workflow.version()
            ),
        });
    };
    let spec = task.spec();
    let (input, skip) = prepare(store, cache, claimed, task.as_ref()).await?;
    if let Some(reason) = skip {
        return Ok(AttemptOutcome::Skipped { reason });
    }

    let mut ctx = input;
    let body = AssertUnwindSafeRun {
        task: task.clone(),
        ctx: &mut ctx,
    };
    let guarded = async {
        let run = body.run();
        match spec.timeout_duration() {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(r) => r,
                Err(_) => Err(TaskError::Timeout(limit)),
            },
            None => run.await,
        }
    };
    let result = tokio::select! {
        r = guarded => r,
        _ = cancel.wait_for(|c| *c) => Err(TaskError::Cancelled),
    };
    Ok(match result {
        Ok(()) => AttemptOutcome::Completed { output: ctx },
        Err(error) => {
            // Recoveries re-run an attempt without it having failed, so they do not count
            // against the retry policy.
            let policy_attempt = (claimed.attempt - claimed.recoveries).max(1) as u32;
            if spec.retry.should_retry(policy_attempt, &error) {
                let delay = spec.retry.delay(policy_attempt);
                AttemptOutcome::Retry {
                    error: error.to_string(),
                    retry_at: now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                }
            } else {
                let error =
                    if spec.retry.max_attempts > 1 && policy_attempt >= spec.retry.max_attempts {
                        format!(
                            "{error} (attempt {policy_attempt} of {})",
                            spec.retry.max_attempts
                        )
                    } else {
                        error.to_string()
                    };
                AttemptOutcome::Failed { error }
            }
        }
    })
}

/// Reads the task's input (workflow input, then each dependency's output in declared order;
/// from the runner's cache where possible) and decides whether its trigger rule lets it run.
/// Returns the skip reason if not.
async fn prepare(
    store: &Store,
    cache: &Mutex<ContextCache>,
    claimed: &ClaimedTask,
    task: &dyn Task,
) -> Result<(Context, Option<String>), StoreError> {
    let spec = task.spec();
    let exec = claimed.execution_id;
    let mut owners = vec![INPUT_CONTEXT.to_string()];
    owners.extend(spec.dependencies.iter().cloned());
    let mut docs: HashMap<String, Arc<Context>> = HashMap::with_capacity(owners.len());
    {
        let cache = lock(cache);
        for owner in &owners {
            if let Some(ctx) = cache.get(exec, owner) {
                docs.insert(owner.clone(), ctx);
            }
        }
    }
    let missing: Vec<String> = owners
        .iter()
        .filter(|o| !docs.contains_key(*o))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let fetched = store.contexts_get(exec, missing).await?;
        let mut cache = lock(cache);
        for (owner, ctx) in fetched {
            let ctx = Arc::new(ctx);
            cache.put(exec, &owner, ctx.clone());
            docs.insert(owner, ctx);
        }
    }
    let mut input = docs
        .get(INPUT_CONTEXT)
        .map(|c| Context::clone(c))
        .unwrap_or_default();
    for dep in &spec.dependencies {
        if let Some(out) = docs.get(dep) {
            input.merge(out);
        }
    }
    // The default rule needs every dependency completed, which the claim already told us.
    if spec.trigger_rule.is_always() && (spec.dependencies.is_empty() || claimed.failed_deps == 0) {
        return Ok((input, None));
    }
    let statuses = store
        .task_statuses(claimed.execution_id, spec.dependencies.clone())
        .await?;
    let outcome_of = |name: &str| -> Option<TaskOutcome> {
        statuses
            .iter()
            .find(|(t, _)| t == name)
            .and_then(|(_, s)| match s {
                TaskStatus::Completed => Some(TaskOutcome::Completed),
                TaskStatus::Failed => Some(TaskOutcome::Failed),
                TaskStatus::Skipped => Some(TaskOutcome::Skipped),
                _ => None,
            })
    };
    let skip = match &spec.trigger_rule {
        TriggerRule::Always => spec.dependencies.iter().find_map(|d| match outcome_of(d) {
            Some(TaskOutcome::Completed) => None,
            Some(TaskOutcome::Failed) => Some(format!("dependency '{d}' failed")),
            Some(TaskOutcome::Skipped) => Some(format!("dependency '{d}' was skipped")),
            None => Some(format!("dependency '{d}' has not finished")),
        }),
        rule => rule.evaluate(&outcome_of, &input).err(),
    };
    Ok((input, skip))
}

/// Runs a task body with panics turned into task failures, so a panic never reaches the
/// engine or another task.
struct AssertUnwindSafeRun<'a> {
    task: Arc<dyn Task>,
    ctx: &'a mut Context,
}

impl AssertUnwindSafeRun<'_> {
    async fn run(self) -> Result<(), TaskError> {
        let fut = std::panic::AssertUnwindSafe(self.task.run(self.ctx));
        match fut.catch_unwind().await {
            Ok(r) => r,
            Err(payload) => Err(TaskError::from_panic(payload.as_ref())),
        }
    }
}

/// How long [`with_retries`] keeps retrying a transient failure: long enough to ride through
/// a lost connection or a restarting database, bounded so a caller hears of a lasting outage.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// The longest wait between two tries (the wait doubles from 20 ms up to this).
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Retries a store operation while its failure is transient (busy or locked database, lost
/// connection, restarting server), with exponential backoff for up to [`RETRY_FOR`], so a
/// blip does not turn into a lease expiry and a re-run. Safe for the engine's writes: each is
/// fenced by its attempt or checks the status it changes, so a retry after a commit whose
/// acknowledgement was lost finds the work done instead of doing it twice. Other errors are
/// returned at once. `what` names the operation in the log.
pub(crate) async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut retry = Backoff::default();
    loop {
        match op().await {
            Err(e) if retry.again(what, &e).await => {}
            other => return other,
        }
    }
}

/// Bounded exponential backoff over transient store errors.
pub(crate) struct Backoff {
    started: tokio::time::Instant,
    delay: Duration,
    tries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            started: tokio::time::Instant::now(),
            delay: Duration::from_millis(20),
            tries: 0,
        }
    }
}

impl Backoff {
    /// True (after waiting) when `e` is transient and the retry budget is not spent.
    pub(crate) async fn again(&mut self, what: &str, e: &StoreError) -> bool {
        if !e.is_transient() || self.started.elapsed() + self.delay > RETRY_FOR {
            return false;
        }
        self.tries += 1;
        tracing::warn!(
            error = %e, tries = self.tries, retry_in_ms = self.delay.as_millis() as u64,
            "{what} failed transiently; retrying"
        );
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(RETRY_MAX_DELAY);
        true
    }

    /// Whether a try has failed before.
    pub(crate) fn retried(&self) -> bool {
        self.tries > 0
    }
}
