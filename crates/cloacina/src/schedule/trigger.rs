//! Custom-poll triggers: each polled on a tokio task of its own at its interval (never faster
//! than the configured base), so a slow poll delays only its own trigger. A poll that answers
//! `Fire { context }` starts the trigger's workflow with that context.
//!
//! **De-duplication.** Unless the trigger allows concurrency, a fire carries the key
//! `trigger:<workflow>:<trigger>:<sha256>` where the hash is over the context's canonical JSON
//! (object keys sorted at every level, no whitespace). The database refuses a second
//! unfinished (Pending, Running, Paused) execution with the same key — in this process or any
//! other — and the fire is counted as de-duplicated instead of starting a run.
//!
//! **Errors.** A poll that fails is counted and recorded (`last_error`, `consecutive_errors`)
//! and the trigger backs off (interval × 2ⁿ, at most 5 min or the interval if longer); the
//! log gets one line when the error first appears or changes, and one when polling recovers.
//!
//! **Replicas.** With [`TriggerConfig::claim_polls`] (the server turns it on), every poll is
//! first claimed in the store: slot `now_ms / interval_ms` of `(tenant, "<workflow>:<trigger>")`
//! goes to exactly one process sharing the database, the others skip that slot, and each
//! process sleeps to the next slot's start. So N replicas poll a trigger once per interval, not
//! N times. Claims older than an hour are pruned now and then.
//!
//! **Waiting.** A trigger whose workflow is not registered on the runner yet (the reconciler
//! registers workflows after triggers) is not polled: a fire it could not start would be lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{Clock, ScheduleError, SystemClock};
use crate::engine::Runner;
use crate::package::loader::LoadedPackage;
use crate::store::{Millis, Store, SubmitOptions, SubmitOutcome};
use crate::sync::lock;
use crate::workflow::package::TriggerDescription;
use crate::workflow::{Context, PollOutcome};

/// Longest back-off after repeated poll errors (unless the interval itself is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Poll claims (see [`TriggerConfig::claim_polls`]) older than this are pruned.
const CLAIM_KEEP_MS: Millis = 60 * 60 * 1000;
/// How often, at most, one scheduler prunes old poll claims.
const CLAIM_PRUNE_EVERY_MS: Millis = 10 * 60 * 1000;
/// How long `triggers_unregister`/`stop` wait for a trigger task to notice it must stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Something that answers polls: a loaded package, or (embedding, tests) any other source.
pub trait TriggerSource: Send + Sync + 'static {
    /// Polls trigger `trigger` once. An error is a message for the operator.
    fn poll(&self, trigger: &str) -> BoxFuture<'static, Result<PollOutcome, String>>;
}

/// Polls through the package's ABI on a blocking thread.
struct PackageSource(Arc<LoadedPackage>);

impl TriggerSource for PackageSource {
    fn poll(&self, trigger: &str) -> BoxFuture<'static, Result<PollOutcome, String>> {
        let package = self.0.clone();
        let trigger = trigger.to_string();
        Box::pin(async move {
            package
                .poll_trigger(&trigger)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Trigger scheduler settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerConfig {
    /// The shortest poll interval: a trigger's own interval is used, but never faster than
    /// this (the daemon's `trigger_poll_interval_ms`). Default 1000 ms.
    pub base_interval: Duration,
    /// Claim each poll in the store first (`Store::trigger_poll_claim`), so that processes
    /// sharing a database (server replicas) poll each trigger once per interval between them.
    /// Default false (one daemon per database has nobody to share with).
    pub claim_polls: bool,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            base_interval: Duration::from_millis(1000),
            claim_polls: false,
        }
    }
}

impl TriggerConfig {
    /// The settings from the daemon's configuration file.
    pub fn from_daemon(d: &crate::config::DaemonConfig) -> Self {
        Self {
            base_interval: d.trigger_poll_interval(),
            ..Self::default()
        }
    }
}

/// One registered trigger, as `trigger list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerInfo {
    pub name: String,
    pub package_id: String,
    pub tenant: String,
    pub workflow: String,
    /// The interval it is polled at (its own, never below the base interval).
    pub interval: Duration,
    pub allow_concurrent: bool,
    /// Polls that returned (fired, not now, or failed).
    pub polls: u64,
    /// Runs started.
    pub fires: u64,
    /// Fires skipped because a run with the same context was still unfinished.
    pub deduplicated: u64,
    /// Polls (or starts) that failed, in total.
    pub errors: u64,
    /// Failures since the last success; non-zero means the trigger is backing off.
    pub consecutive_errors: u32,
    pub last_poll: Option<Millis>,
    pub last_fire: Option<Millis>,
    pub last_execution: Option<Uuid>,
    pub last_error: Option<String>,
    /// Why the trigger is not being polled right now, if it is not.
    pub waiting: Option<String>,
}

/// What a fire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FireOutcome {
    Started(Uuid),
    /// An unfinished run (`existing`) had the same context.
    Deduplicated {
        existing: Option<Uuid>,
    },
}

#[derive(Debug, Default)]
struct Mutable {
    consecutive_errors: u32,
    last_poll: Option<Millis>,
    last_fire: Option<Millis>,
    last_execution: Option<Uuid>,
    last_error: Option<String>,
    waiting: Option<String>,
}

struct TriggerState {
    desc: TriggerDescription,
    package_id: String,
    tenant: String,
    /// Milliseconds between polls: the trigger's own interval, never below the base interval;
    /// recomputed by [`TriggerScheduler::set_config`].
    interval_ms: AtomicU64,
    polls: AtomicU64,
    fires: AtomicU64,
    deduplicated: AtomicU64,
    errors: AtomicU64,
    mutable: std::sync::Mutex<Mutable>,
}

impl TriggerState {
    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// The trigger's own interval, never faster than `base`.
    fn set_interval(&self, base: Duration) {
        let ms = Duration::from_millis(self.desc.poll_interval_ms)
            .max(base)
            .as_millis()
            .min(u64::MAX as u128) as u64;
        self.interval_ms.store(ms, Ordering::Relaxed);
    }

    fn info(&self) -> TriggerInfo {
        let m = lock(&self.mutable);
        TriggerInfo {
            name: self.desc.name.clone(),
            package_id: self.package_id.clone(),
            tenant: self.tenant.clone(),
            workflow: self.desc.workflow.clone(),
            interval: self.interval(),
            allow_concurrent: self.desc.allow_concurrent,
            polls: self.polls.load(Ordering::Relaxed),
            fires: self.fires.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            consecutive_errors: m.consecutive_errors,
            last_poll: m.last_poll,
            last_fire: m.last_fire,
            last_execution: m.last_execution,
            last_error: m.last_error.clone(),
            waiting: m.waiting.clone(),
        }
    }
}

struct Registered {
    state: Arc<TriggerState>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

struct TriggerInner {
    store: Store,
    runner: Runner,
    /// Replaced by [`TriggerScheduler::set_config`] (a daemon reload).
    config: std::sync::RwLock<TriggerConfig>,
    clock: Arc<dyn Clock>,
    /// Registered triggers by package id, in declaration order.
    packages: std::sync::Mutex<BTreeMap<String, Vec<Registered>>>,
    /// Serializes register/unregister so a replace never interleaves with another.
    changes: tokio::sync::Mutex<()>,
    /// When this scheduler last pruned old poll claims (clock ms; 0 = never).
    last_prune: AtomicI64,
}

impl TriggerInner {
    fn config(&self) -> TriggerConfig {
        crate::sync::read(&self.config).clone()
    }
}

/// Polls the registered custom-poll triggers. Clone it freely; clones share one scheduler.
#[derive(Clone)]
pub struct TriggerScheduler {
    inner: Arc<TriggerInner>,
}

impl std::fmt::Debug for TriggerScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerScheduler")
            .field("config", &self.config())
            .field("triggers", &self.triggers_list().len())
            .finish()
    }
}

/// The canonical hash of a context: SHA-256 (lowercase hex) of its JSON with object keys
/// sorted at every level and no insignificant whitespace. Equal contexts hash equally whatever
/// the order their keys were set in.
pub fn canonical_hash(context: &Context) -> String {
    let mut text = String::new();
    write_canonical(&Value::Object(context.as_map().clone()), &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(value) = map.get(k) {
                    write_canonical(value, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The de-duplication key of a fire of `trigger` (starting `workflow`) with `context`.
pub fn dedup_key(workflow: &str, trigger: &str, context: &Context) -> String {
    format!("trigger:{workflow}:{trigger}:{}", canonical_hash(context))
}

impl TriggerScheduler {
    pub fn new(store: Store, runner: Runner, config: TriggerConfig) -> Self {
        Self::with_clock(store, runner, config, Arc::new(SystemClock))
    }

    /// A scheduler stamping `last_poll`/`last_fire` from `clock`.
    pub fn with_clock(
        store: Store,
        runner: Runner,
        config: TriggerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(TriggerInner {
                store,
                runner,
                config: std::sync::RwLock::new(config),
                clock,
                packages: std::sync::Mutex::new(BTreeMap::new()),
                changes: tokio::sync::Mutex::new(()),
                last_prune: AtomicI64::new(0),
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> TriggerConfig {
        self.inner.config()
    }

    /// Replaces the settings while triggers run (a daemon reload): every registered trigger's
    /// interval is recomputed against the new base and applies from its next poll.
    pub fn set_config(&self, config: TriggerConfig) {
        let base = config.base_interval;
        *crate::sync::write(&self.inner.config) = config;
        for registered in lock(&self.inner.packages).values().flatten() {
            registered.state.set_interval(base);
        }
    }

    /// The store runs are recorded in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Reconciler load step 2: registers the package's triggers, replacing any it had (their
    /// polling stops first). Every trigger must be declared by the package; nothing is
    /// registered otherwise. Each is polled on a task of its own, first at once (as soon as
    /// its workflow is registered), then every interval.
    pub async fn triggers_register(
        &self,
        package_id: &str,
        tenant: &str,
        package: Arc<LoadedPackage>,
        triggers: &[TriggerDescription],
    ) -> Result<(), ScheduleError> {
        for t in triggers {
            if package.description().trigger(&t.name).is_none() {
                return Err(ScheduleError::UnknownTrigger {
                    trigger: t.name.clone(),
                    package: package.name().to_string(),
                    declared: package.description().trigger_names().join(", "),
                });
            }
        }
        self.triggers_register_source(
            package_id,
            tenant,
            Arc::new(PackageSource(package)),
            triggers,
        )
        .await
    }

    /// Like [`triggers_register`](Self::triggers_register), polling any [`TriggerSource`].
    pub async fn triggers_register_source(
        &self,
        package_id: &str,
        tenant: &str,
        source: Arc<dyn TriggerSource>,
        triggers: &[TriggerDescription],
    ) -> Result<(), ScheduleError> {
        let mut seen = std::collections::HashSet::new();
        for t in triggers {
            if !seen.insert(t.name.as_str()) {
                return Err(ScheduleError::DuplicateName {
                    what: "custom-poll trigger",
                    name: t.name.clone(),
                });
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(ScheduleError::Engine(crate::engine::EngineError::Config(
                "the trigger scheduler needs a tokio runtime".to_string(),
            )));
        };
        let _changes = self.inner.changes.lock().await;
        let replaced = self.take(package_id);
        let replaced_count = replaced.len();
        stop_all(replaced).await;
        let mut registered = Vec::with_capacity(triggers.len());
        let base = self.inner.config().base_interval;
        for t in triggers {
            let state = Arc::new(TriggerState {
                desc: t.clone(),
                package_id: package_id.to_string(),
                tenant: tenant.to_string(),
                interval_ms: AtomicU64::new(0),
                polls: AtomicU64::new(0),
                fires: AtomicU64::new(0),
                deduplicated: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                mutable: std::sync::Mutex::new(Mutable::default()),
            });
            state.set_interval(base);
            let (stop, stop_rx) = watch::channel(false);
            // Weakly held: dropping every handle of the scheduler ends its triggers too.
            let handle = runtime.spawn(poll_loop(
                Arc::downgrade(&self.inner),
                state.clone(),
                source.clone(),
                stop_rx,
            ));
            registered.push(Registered {
                state,
                stop,
                handle,
            });
        }
        tracing::debug!(
            package_id,
            tenant,
            triggers = registered.len(),
            replaced = replaced_count,
            "custom-poll triggers registered"
        );
        lock(&self.inner.packages).insert(package_id.to_string(), registered);
        Ok(())
    }

    /// Reconciler unload step 5: stops polling the package's triggers (waiting for each task
    /// to end; a poll call in flight finishes on its thread and its answer is dropped) and
    /// forgets them. None registered is success. Returns how many were stopped.
    pub async fn triggers_unregister(&self, package_id: &str) -> Result<usize, ScheduleError> {
        let _changes = self.inner.changes.lock().await;
        let removed = self.take(package_id);
        let n = removed.len();
        stop_all(removed).await;
        tracing::debug!(package_id, stopped = n, "custom-poll triggers unregistered");
        Ok(n)
    }

    /// Every registered trigger, by package id then declaration order.
    pub fn triggers_list(&self) -> Vec<TriggerInfo> {
        lock(&self.inner.packages)
            .values()
            .flat_map(|v| v.iter().map(|r| r.state.info()))
            .collect()
    }

    /// Fires registered trigger `trigger` of `package_id` with `context` now, as if its poll
    /// had answered `Fire` (de-duplicated the same way and counted in its statistics).
    pub async fn trigger_fire(
        &self,
        package_id: &str,
        trigger: &str,
        context: Context,
    ) -> Result<FireOutcome, ScheduleError> {
        let state = lock(&self.inner.packages)
            .get(package_id)
            .and_then(|v| v.iter().find(|r| r.state.desc.name == trigger))
            .map(|r| r.state.clone())
            .ok_or_else(|| ScheduleError::TriggerNotRegistered {
                trigger: trigger.to_string(),
                package_id: package_id.to_string(),
            })?;
        fire(&self.inner, &state, context).await
    }

    /// Stops every trigger (shutdown). Safe to call more than once.
    pub async fn stop(&self) {
        let _changes = self.inner.changes.lock().await;
        let all: Vec<Registered> = std::mem::take(&mut *lock(&self.inner.packages))
            .into_values()
            .flatten()
            .collect();
        stop_all(all).await;
    }

    fn take(&self, package_id: &str) -> Vec<Registered> {
        lock(&self.inner.packages)
            .remove(package_id)
            .unwrap_or_default()
    }
}

async fn stop_all(registered: Vec<Registered>) {
    for r in &registered {
        r.stop.send_replace(true);
    }
    for r in registered {
        let mut handle = r.handle;
        if tokio::time::timeout(STOP_WAIT, &mut handle).await.is_err() {
            handle.abort();
        }
    }
}

/// Starts the trigger's workflow with `context`, de-duplicated unless it allows concurrency.
async fn fire(
    inner: &TriggerInner,
    state: &TriggerState,
    context: Context,
) -> Result<FireOutcome, ScheduleError> {
    let desc = &state.desc;
    let options = SubmitOptions {
        dedup_key: (!desc.allow_concurrent)
            .then(|| dedup_key(&desc.workflow, &desc.name, &context)),
        cron: None,
    };
    let outcome = inner
        .runner
        .submit_with(&desc.workflow, context, options)
        .await?;
    Ok(match outcome {
        SubmitOutcome::Started(id) => {
            state.fires.fetch_add(1, Ordering::Relaxed);
            let mut m = lock(&state.mutable);
            m.last_fire = Some(inner.clock.now_ms());
            m.last_execution = Some(id);
            drop(m);
            tracing::debug!(trigger = %desc.name, package_id = %state.package_id, execution = %id, "trigger fired");
            FireOutcome::Started(id)
        }
        SubmitOutcome::Duplicate { existing } => {
            state.deduplicated.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                trigger = %desc.name, package_id = %state.package_id, existing = ?existing,
                "trigger fire de-duplicated: a run with the same context is still unfinished"
            );
            FireOutcome::Deduplicated { existing }
        }
    })
}

fn backoff(interval: Duration, consecutive: u32) -> Duration {
    let factor = 1u32 << consecutive.saturating_sub(1).min(16);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

async fn poll_loop(
    inner: std::sync::Weak<TriggerInner>,
    state: Arc<TriggerState>,
    source: Arc<dyn TriggerSource>,
    mut stop: watch::Receiver<bool>,
) {
    let name = state.desc.name.clone();
    let mut delay = Duration::ZERO;
    loop {
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.runner.workflow(&state.desc.workflow).is_none() {
            lock(&state.mutable).waiting = Some(format!(
                "workflow '{}' is not registered on this runner yet",
                state.desc.workflow
            ));
            // Look again soon (the base interval), not a whole poll interval later.
            delay = state.interval().min(inner.config().base_interval);
            continue;
        }
        lock(&state.mutable).waiting = None;
        let claim_polls = inner.config().claim_polls;
        if claim_polls {
            match claim_poll(&inner, &state).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another process polls this slot; try the next one.
                    delay = until_next_slot(&inner, &state);
                    continue;
                }
                Err(e) => {
                    delay = poll_failed(&state, format!("claiming the poll failed: {e}"));
                    continue;
                }
            }
        }
        let started = tokio::time::Instant::now();
        let polled = tokio::select! {
            r = source.poll(&name) => r,
            _ = stop.changed() => return,
        };
        state.polls.fetch_add(1, Ordering::Relaxed);
        lock(&state.mutable).last_poll = Some(inner.clock.now_ms());
        let result = match polled {
            Ok(PollOutcome::NotNow) => Ok(()),
            Ok(PollOutcome::Fire { context }) => {
                if *stop.borrow() {
                    return;
                }
                fire(&inner, &state, context)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("starting workflow '{}' failed: {e}", state.desc.workflow))
            }
            Err(e) => Err(format!("poll failed: {e}")),
        };
        match result {
            Ok(()) => {
                let recovered = {
                    let mut m = lock(&state.mutable);
                    std::mem::replace(&mut m.consecutive_errors, 0)
                };
                if recovered > 0 {
                    tracing::info!(trigger = %name, package_id = %state.package_id, after_errors = recovered, "custom-poll trigger polls again");
                }
                delay = if claim_polls {
                    until_next_slot(&inner, &state)
                } else {
                    state.interval().saturating_sub(started.elapsed())
                };
                if delay.is_zero() {
                    // A poll slower than its interval: the next one starts at once, but yield
                    // so a trigger that is always late cannot starve the runtime.
                    tokio::task::yield_now().await;
                }
            }
            Err(message) => delay = poll_failed(&state, message),
        }
    }
}

/// Counts a failed poll (or start, or claim), logs it when new, and returns the back-off.
fn poll_failed(state: &TriggerState, message: String) -> Duration {
    state.errors.fetch_add(1, Ordering::Relaxed);
    let (consecutive, changed) = {
        let mut m = lock(&state.mutable);
        m.consecutive_errors = m.consecutive_errors.saturating_add(1);
        let changed = m.last_error.as_deref() != Some(message.as_str());
        m.last_error = Some(message.clone());
        (m.consecutive_errors, changed)
    };
    let delay = backoff(state.interval(), consecutive);
    if consecutive == 1 || changed {
        tracing::warn!(
            trigger = %state.desc.name, package_id = %state.package_id, error = %message,
            retry_in_ms = delay.as_millis() as u64,
            "custom-poll trigger failed; backing off (repeats of this error are not logged)"
        );
    }
    delay
}

/// The trigger's interval in ms (at least 1), the length of its poll slots.
fn slot_ms(state: &TriggerState) -> Millis {
    (state.interval().as_millis().min(i64::MAX as u128) as Millis).max(1)
}

/// The name a trigger's polls are claimed under: `<workflow>:<trigger>`, so two versions of
/// one package share their slots while unrelated triggers of the same name do not.
pub fn poll_claim_name(workflow: &str, trigger: &str) -> String {
    format!("{workflow}:{trigger}")
}

/// Claims the current poll slot of the trigger; prunes old claims now and then.
async fn claim_poll(inner: &TriggerInner, state: &TriggerState) -> Result<bool, ScheduleError> {
    let now = inner.clock.now_ms();
    let slot = now / slot_ms(state);
    let name = poll_claim_name(&state.desc.workflow, &state.desc.name);
    let claimed = inner
        .store
        .trigger_poll_claim(&state.tenant, &name, slot)
        .await?;
    let last = inner.last_prune.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= CLAIM_PRUNE_EVERY_MS
        && inner
            .last_prune
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        match inner.store.trigger_poll_prune(now - CLAIM_KEEP_MS).await {
            Ok(n) => tracing::debug!(pruned = n, "old trigger poll claims pruned"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning old trigger poll claims failed; will retry later")
            }
        }
    }
    Ok(claimed)
}

/// How long until the trigger's next poll slot starts (at most one interval, at least 1 ms).
fn until_next_slot(inner: &TriggerInner, state: &TriggerState) -> Duration {
    let len = slot_ms(state);
    let now = inner.clock.now_ms();
    let next = (now / len + 1).saturating_mul(len);
    Duration::from_millis(next.saturating_sub(now).clamp(1, len) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> Context {
        Context::from_value(v).unwrap_or_default()
    }

    #[test]
    fn canonical_hash_ignores_key_order_at_every_level() {
        let a = ctx(json!({"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": null}}));
        let mut b = Context::new();
        b.insert("a", json!({"x": null, "y": [1, {"p": 2, "q": 1}]}))
            .ok();
        b.insert("b", 1).ok();
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_eq!(canonical_hash(&a).len(), 64);
        // Array order and values matter.
        let c = ctx(json!({"b": 1, "a": {"y": [{"q": 1, "p": 2}, 1], "x": null}}));
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
        let d = ctx(json!({"b": "1", "a": {"y": [1, {"q": 1, "p": 2}], "x": null}}));
        assert_ne!(canonical_hash(&a), canonical_hash(&d));
    }

    #[test]
    fn canonical_text_is_sorted_compact_json() {
        let mut out = String::new();
        write_canonical(&json!({"b": [true, 1.5, "x\"y"], "a": {}}), &mut out);
        assert_eq!(out, r#"{"a":{},"b":[true,1.5,"x\"y"]}"#);
        // The empty context's hash is the SHA-256 of "{}".
        assert_eq!(
            canonical_hash(&Context::new()),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn dedup_keys_name_the_trigger() {
        let c = ctx(json!({"k": 1}));
        assert!(dedup_key("report", "inbox", &c).starts_with("trigger:report:inbox:"));
        assert_ne!(
            dedup_key("report", "inbox", &c),
            dedup_key("report", "other", &c)
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        let i = Duration::from_secs(1);
        assert_eq!(backoff(i, 1), i);
        assert_eq!(backoff(i, 2), 2 * i);
        assert_eq!(backoff(i, 4), 8 * i);
        assert_eq!(backoff(i, 40), MAX_BACKOFF);
        let long = Duration::from_secs(600);
        assert_eq!(backoff(long, 5), long);
    }
}
