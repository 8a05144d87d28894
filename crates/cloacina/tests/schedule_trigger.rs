//! Custom-poll triggers on SQLite and PostgreSQL: the `scheduled-reports` example package's
//! `inbox_watch` trigger fires its workflow, a fire whose context matches a run still in flight
//! is de-duplicated (in one process and across two), unregister stops polling, register
//! replaces; and, with in-test sources, polls never block each other, errors back off, and a
//! trigger waits for its workflow.

mod common;
mod common_packages;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cloacina::package::loader::{self, LoadedPackage};
use cloacina::schedule::trigger::{
    FireOutcome, TriggerConfig, TriggerInfo, TriggerScheduler, TriggerSource,
};
use cloacina::schedule::{ManualClock, ScheduleError};
use cloacina::store::{ExecutionFilter, ExecutionStatus, Store};
use cloacina::workflow::package::TriggerDescription;
use cloacina::workflow::{Context, FnTask, PollOutcome, Task, TaskError, TaskSpec, Workflow};
use cloacina::{Runner, RunnerConfig};
use common::TestDb;
use futures::future::BoxFuture;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

fn ctx(v: Value) -> Context {
    Context::from_value(v).expect("a JSON object")
}

fn reports() -> Arc<LoadedPackage> {
    let ex = common_packages::example("scheduled-reports");
    let cache = common_packages::target_dir().join("loader-cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    loader::load_dir(&ex.dir, &ex.library, &cache).expect("scheduled-reports loads")
}

/// The package's `inbox_watch`, polled every `every_ms` instead of its 5 s.
fn inbox_watch(pkg: &LoadedPackage, every_ms: u64) -> TriggerDescription {
    let mut t = pkg
        .description()
        .trigger("inbox_watch")
        .expect("declared")
        .clone();
    t.poll_interval_ms = every_ms;
    t
}

/// Runs whose task waits until their gate (the context's `gate`) is opened.
fn gates() -> &'static Mutex<HashMap<String, bool>> {
    static GATES: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

fn open_gate(gate: &str) {
    gates()
        .lock()
        .expect("gates")
        .insert(gate.to_string(), true);
}

fn gated_workflow() -> Workflow {
    let task: Arc<dyn Task> = Arc::new(FnTask::new(TaskSpec::new("wait"), |c: &mut Context| {
        let gate = c
            .get_opt::<String>("gate")
            .ok()
            .flatten()
            .unwrap_or_default();
        Box::pin(async move {
            loop {
                if gates()
                    .lock()
                    .map(|g| g.get(&gate).copied().unwrap_or(false))
                    .unwrap_or(true)
                {
                    return Ok::<(), TaskError>(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }));
    Workflow::new("gated", None, vec![task]).expect("valid")
}

async fn runner(store: &Store, package: Option<&Arc<LoadedPackage>>) -> Runner {
    let r = Runner::start(
        store.clone(),
        RunnerConfig {
            poll_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(5),
            ..RunnerConfig::default()
        },
    )
    .await
    .expect("runner");
    if let Some(p) = package {
        for wf in p.workflows() {
            r.register_packaged(wf, "reports");
        }
    }
    r.register(gated_workflow());
    r
}

fn scheduler(store: &Store, runner: &Runner) -> TriggerScheduler {
    TriggerScheduler::new(
        store.clone(),
        runner.clone(),
        TriggerConfig {
            base_interval: Duration::from_millis(20),
            ..TriggerConfig::default()
        },
    )
}

fn info(t: &TriggerScheduler, name: &str) -> TriggerInfo {
    t.triggers_list()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("trigger {name} is registered"))
}

async fn wait_until<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + LONG;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn runs(store: &Store, workflow: &str) -> Vec<cloacina::store::ExecutionRecord> {
    store
        .execution_list(ExecutionFilter {
            workflow: Some(workflow.into()),
            limit: Some(10_000),
            ..ExecutionFilter::default()
        })
        .await
        .expect("list")
}

/// A test source: fires `context` (or fails with `error`) after `delay`, counting polls.
struct Fake {
    polls: AtomicU64,
    context: Value,
    delay: Duration,
    error: Option<String>,
    failing: AtomicBool,
}

impl Fake {
    fn firing(context: Value) -> Arc<Self> {
        Arc::new(Self {
            polls: AtomicU64::new(0),
            context,
            delay: Duration::ZERO,
            error: None,
            failing: AtomicBool::new(false),
        })
    }
    fn polls(&self) -> u64 {
        self.polls.load(Ordering::SeqCst)
    }
}

impl TriggerSource for Fake {
    fn poll(&self, _trigger: &str) -> BoxFuture<'static, Result<PollOutcome, String>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let (delay, context) = (self.delay, self.context.clone());
        let error = self
            .error
            .clone()
            .filter(|_| self.failing.load(Ordering::SeqCst));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match error {
                Some(e) => Err(e),
                None if context.is_null() => Ok(PollOutcome::NotNow),
                None => Ok(PollOutcome::Fire {
                    context: ctx(context),
                }),
            }
        })
    }
}

fn desc(name: &str, workflow: &str, every_ms: u64, allow_concurrent: bool) -> TriggerDescription {
    TriggerDescription {
        name: name.to_string(),
        workflow: workflow.to_string(),
        poll_interval_ms: every_ms,
        allow_concurrent,
    }
}

// ---- the example package --------------------------------------------------------------------

async fn package_trigger_fires_its_workflow(db: &TestDb) {
    let pkg = reports();
    let store = db.open().await;
    let r = runner(&store, Some(&pkg)).await;
    let t = scheduler(&store, &r);
    t.triggers_register("reports", "public", pkg.clone(), &[inbox_watch(&pkg, 100)])
        .await
        .expect("register");
    let i = info(&t, "inbox_watch");
    assert_eq!(
        (i.package_id.as_str(), i.workflow.as_str(), i.interval),
        ("reports", "report", Duration::from_millis(100))
    );
    assert!(!i.allow_concurrent);
    wait_until("a fire", || info(&t, "inbox_watch").fires >= 1).await;
    let i = info(&t, "inbox_watch");
    let id = i.last_execution.expect("last execution");
    assert!(
        i.polls >= 1 && i.last_poll.is_some() && i.last_fire.is_some(),
        "{i:?}"
    );
    assert_eq!((i.errors, i.last_error.clone()), (0, None));
    let done = r.wait(id, Some(LONG)).await.expect("the run ends");
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:?}");
    let report: String = done
        .context
        .expect("final context")
        .get("report")
        .expect("report");
    assert!(report.ends_with("rows from inbox"), "{report}");
    // The package's own interval (5 s) is kept; an interval below the base is raised to it.
    t.triggers_register(
        "reports",
        "public",
        pkg.clone(),
        &pkg.description().triggers,
    )
    .await
    .expect("register as declared");
    assert_eq!(info(&t, "inbox_watch").interval, Duration::from_secs(5));
    t.triggers_register("reports", "public", pkg.clone(), &[inbox_watch(&pkg, 1)])
        .await
        .expect("register too fast");
    assert_eq!(info(&t, "inbox_watch").interval, Duration::from_millis(20));
    t.stop().await;
    assert!(t.triggers_list().is_empty());
    r.shutdown().await.expect("shutdown");
}

async fn duplicate_context_is_deduplicated_while_the_first_run_is_in_flight(db: &TestDb) {
    let pkg = reports();
    let store = db.open().await;
    let r = runner(&store, Some(&pkg)).await;
    let t = scheduler(&store, &r);
    // Polled once at registration, then not for an hour: the fires below are the test's own.
    t.triggers_register(
        "reports",
        "public",
        pkg.clone(),
        &[inbox_watch(&pkg, 3_600_000)],
    )
    .await
    .expect("register");
    // A context like the ones the package's poll returns. Pause the run at once so it stays
    // in flight (retry with another batch in the unlikely case it already finished).
    let mut first = None;
    for batch in 1_000_001..1_000_004u64 {
        let fired = t
            .trigger_fire(
                "reports",
                "inbox_watch",
                ctx(json!({"source": "inbox", "batch": batch})),
            )
            .await
            .expect("fire");
        let FireOutcome::Started(id) = fired else {
            panic!("the first fire of a fresh context starts a run: {fired:?}")
        };
        if r.pause(id).await.is_ok() {
            first = Some((batch, id));
            break;
        }
    }
    let (batch, id) = first.expect("a run paused in flight");
    let before = info(&t, "inbox_watch");
    // The same context, keys in another order: de-duplicated, naming the run in flight.
    let mut same = Context::new();
    same.insert("batch", batch).expect("set");
    same.insert("source", "inbox").expect("set");
    let again = t
        .trigger_fire("reports", "inbox_watch", same)
        .await
        .expect("fire again");
    assert_eq!(again, FireOutcome::Deduplicated { existing: Some(id) });
    let after = info(&t, "inbox_watch");
    assert_eq!(after.deduplicated, before.deduplicated + 1);
    // Only one run has this context (the trigger's own first poll may add runs of others).
    let mut with_batch = 0;
    for e in runs(&store, "report").await {
        let input = store
            .context_get(e.id, cloacina::store::INPUT_CONTEXT)
            .await
            .expect("ctx")
            .expect("input");
        if input.get_value("batch") == Some(&json!(batch)) {
            with_batch += 1;
        }
    }
    assert_eq!(with_batch, 1);
    // A different context is not a duplicate.
    let other = t
        .trigger_fire(
            "reports",
            "inbox_watch",
            ctx(json!({"source": "inbox", "batch": batch + 100})),
        )
        .await
        .expect("other");
    assert!(matches!(other, FireOutcome::Started(_)), "{other:?}");
    // Once the first run has finished, the same context starts a new run.
    r.resume(id).await.expect("resume");
    let done = r.wait(id, Some(LONG)).await.expect("ends");
    assert_eq!(done.status, ExecutionStatus::Completed);
    let later = t
        .trigger_fire(
            "reports",
            "inbox_watch",
            ctx(json!({"source": "inbox", "batch": batch})),
        )
        .await
        .expect("fire after");
    assert!(
        matches!(later, FireOutcome::Started(n) if n != id),
        "{later:?}"
    );
    // Firing a trigger that is not registered is a clear error.
    let err = t
        .trigger_fire("reports", "nope", Context::new())
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, ScheduleError::TriggerNotRegistered { .. }),
        "{err}"
    );
    t.stop().await;
    r.shutdown().await.expect("shutdown");
}

async fn unregister_stops_polling_and_register_replaces(db: &TestDb) {
    let pkg = reports();
    let store = db.open().await;
    let r = runner(&store, Some(&pkg)).await;
    let t = scheduler(&store, &r);
    // Undeclared trigger names are refused and nothing is registered.
    let mut bogus = inbox_watch(&pkg, 100);
    bogus.name = "not_declared".into();
    let err = t
        .triggers_register("reports", "public", pkg.clone(), &[bogus])
        .await
        .expect_err("undeclared");
    assert!(err.to_string().contains("'not_declared' is not declared by package 'scheduled-reports' (it declares: inbox_watch)"), "{err}");
    assert!(t.triggers_list().is_empty());

    t.triggers_register("reports", "public", pkg.clone(), &[inbox_watch(&pkg, 50)])
        .await
        .expect("register");
    wait_until("a few polls", || info(&t, "inbox_watch").polls >= 3).await;
    // Register again: the old polling stops and the new settings take over, counters fresh.
    let mut replacement = inbox_watch(&pkg, 3_600_000);
    replacement.allow_concurrent = true;
    t.triggers_register("reports", "public", pkg.clone(), &[replacement])
        .await
        .expect("replace");
    let list = t.triggers_list();
    assert_eq!(list.len(), 1, "replaced, not added: {list:?}");
    assert_eq!(
        (list[0].interval, list[0].allow_concurrent),
        (Duration::from_secs(3_600), true)
    );
    assert!(list[0].polls <= 1, "{list:?}");
    // Unregister: polling stops; nothing starts afterwards.
    assert_eq!(
        t.triggers_unregister("reports").await.expect("unregister"),
        1
    );
    assert!(t.triggers_list().is_empty());
    let settled = runs(&store, "report").await.len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        runs(&store, "report").await.len(),
        settled,
        "no fires after unregister"
    );
    assert_eq!(t.triggers_unregister("reports").await.expect("again"), 0);
    assert_eq!(
        t.triggers_unregister("never-registered")
            .await
            .expect("unknown"),
        0
    );

    // With a counting source, the stop is exact: no poll starts after unregister returns.
    let fake = Fake::firing(Value::Null);
    t.triggers_register_source(
        "fake",
        "public",
        fake.clone(),
        &[desc("counted", "gated", 20, false)],
    )
    .await
    .expect("register fake");
    wait_until("polls", || fake.polls() >= 3).await;
    t.triggers_unregister("fake")
        .await
        .expect("unregister fake");
    let polls = fake.polls();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.polls(), polls);
    r.shutdown().await.expect("shutdown");
}

// ---- in-test sources ------------------------------------------------------------------------

async fn poll_loop_deduplicates_identical_fires(db: &TestDb) {
    let store = db.open().await;
    let r = runner(&store, None).await;
    let t = scheduler(&store, &r);
    let gate = uuid::Uuid::new_v4().to_string();
    let fake = Fake::firing(json!({"gate": gate, "n": 1}));
    t.triggers_register_source(
        "p",
        "public",
        fake.clone(),
        &[desc("same", "gated", 20, false)],
    )
    .await
    .expect("register");
    wait_until("de-duplicated fires", || info(&t, "same").deduplicated >= 3).await;
    let list = runs(&store, "gated").await;
    assert_eq!(list.len(), 1, "one run while the context repeats");
    assert_eq!(info(&t, "same").fires, 1);
    // When the run finishes, the next identical fire starts a new one.
    open_gate(&gate);
    r.wait(list[0].id, Some(LONG))
        .await
        .expect("first run ends");
    wait_until("a second run", || info(&t, "same").fires >= 2).await;
    t.stop().await;
    r.shutdown().await.expect("shutdown");
}

async fn allow_concurrent_starts_every_fire(db: &TestDb) {
    let store = db.open().await;
    let r = runner(&store, None).await;
    let t = scheduler(&store, &r);
    let gate = uuid::Uuid::new_v4().to_string();
    let fake = Fake::firing(json!({"gate": gate}));
    t.triggers_register_source(
        "p",
        "public",
        fake.clone(),
        &[desc("many", "gated", 20, true)],
    )
    .await
    .expect("register");
    wait_until("three fires", || info(&t, "many").fires >= 3).await;
    t.stop().await;
    assert_eq!(info_deduplicated(&store).await, 0);
    let unfinished = runs(&store, "gated")
        .await
        .into_iter()
        .filter(|e| !e.status.is_terminal())
        .count();
    assert!(
        unfinished >= 3,
        "identical contexts run side by side: {unfinished}"
    );
    open_gate(&gate);
    r.shutdown().await.expect("shutdown");
}

async fn info_deduplicated(store: &Store) -> usize {
    // Runs started with allow_concurrent carry no de-duplication key.
    runs(store, "gated")
        .await
        .iter()
        .filter(|e| e.dedup_key.is_some())
        .count()
}

async fn dedup_holds_across_processes(db: &TestDb) {
    let gate = uuid::Uuid::new_v4().to_string();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store = db.open().await;
        let r = runner(&store, None).await;
        let t = scheduler(&store, &r);
        let fake = Fake::firing(json!({"gate": gate}));
        t.triggers_register_source("p", "public", fake, &[desc("shared", "gated", 20, false)])
            .await
            .expect("register");
        nodes.push((store, r, t));
    }
    wait_until("both de-duplicate", || {
        nodes
            .iter()
            .all(|(_, _, t)| info(t, "shared").deduplicated >= 2)
    })
    .await;
    let fires: u64 = nodes.iter().map(|(_, _, t)| info(t, "shared").fires).sum();
    assert_eq!(fires, 1, "one run for both processes");
    assert_eq!(runs(&nodes[0].0, "gated").await.len(), 1);
    open_gate(&gate);
    for (_, r, t) in nodes {
        t.stop().await;
        r.shutdown().await.expect("shutdown");
    }
}

async fn a_slow_poll_never_blocks_another_trigger(db: &TestDb) {
    let store = db.open().await;
    let r = runner(&store, None).await;
    let t = scheduler(&store, &r);
    let slow = Arc::new(Fake {
        polls: AtomicU64::new(0),
        context: Value::Null,
        delay: Duration::from_secs(3),
        error: None,
        failing: AtomicBool::new(false),
    });
    let fast = Fake::firing(Value::Null);
    t.triggers_register_source(
        "slow",
        "public",
        slow.clone(),
        &[desc("slow", "gated", 20, false)],
    )
    .await
    .expect("register slow");
    t.triggers_register_source(
        "fast",
        "public",
        fast.clone(),
        &[desc("fast", "gated", 20, false)],
    )
    .await
    .expect("register fast");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(info(&t, "slow").polls, 0, "the slow poll is still running");
    assert!(info(&t, "fast").polls >= 10, "{:?}", info(&t, "fast"));
    // Unregistering does not wait for the slow poll to return.
    let started = std::time::Instant::now();
    t.triggers_unregister("slow").await.expect("unregister");
    assert!(started.elapsed() < Duration::from_secs(2));
    t.stop().await;
    r.shutdown().await.expect("shutdown");
}

async fn poll_errors_back_off_and_are_recorded(db: &TestDb) {
    let store = db.open().await;
    let r = runner(&store, None).await;
    let t = scheduler(&store, &r);
    let failing = Arc::new(Fake {
        polls: AtomicU64::new(0),
        context: Value::Null,
        delay: Duration::ZERO,
        error: Some("inbox unreachable".into()),
        failing: AtomicBool::new(true),
    });
    t.triggers_register_source(
        "p",
        "public",
        failing.clone(),
        &[desc("flaky", "gated", 50, false)],
    )
    .await
    .expect("register");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let i = info(&t, "flaky");
    // Without back-off it would have polled ~14 times; with it: 0, 50, 150, 350, (750) ms.
    assert!((2..=5).contains(&i.polls), "{i:?}");
    assert_eq!((i.errors, i.consecutive_errors as u64), (i.polls, i.polls));
    assert_eq!(
        i.last_error.as_deref(),
        Some("poll failed: inbox unreachable")
    );
    assert_eq!(i.fires, 0);
    // It recovers: the error count stays, consecutive errors reset.
    failing.failing.store(false, Ordering::SeqCst);
    wait_until("recovery", || info(&t, "flaky").consecutive_errors == 0).await;
    assert!(info(&t, "flaky").errors >= 2);
    t.stop().await;
    r.shutdown().await.expect("shutdown");
}

async fn a_trigger_waits_for_its_workflow(db: &TestDb) {
    let store = db.open().await;
    let r = runner(&store, None).await;
    let t = scheduler(&store, &r);
    let fake = Fake::firing(json!({"x": 1}));
    t.triggers_register_source(
        "p",
        "public",
        fake.clone(),
        &[desc("early", "later", 20, false)],
    )
    .await
    .expect("register");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let i = info(&t, "early");
    assert_eq!(
        (i.polls, fake.polls()),
        (0, 0),
        "not polled before its workflow exists"
    );
    assert!(
        i.waiting
            .as_deref()
            .unwrap_or("")
            .contains("'later' is not registered"),
        "{i:?}"
    );
    let task: Arc<dyn Task> = Arc::new(FnTask::new(TaskSpec::new("t"), |_c: &mut Context| {
        Box::pin(async { Ok::<(), TaskError>(()) })
    }));
    r.register(Workflow::new("later", None, vec![task]).expect("wf"));
    wait_until("a fire", || info(&t, "early").fires >= 1).await;
    assert_eq!(info(&t, "early").waiting, None);
    t.stop().await;
    r.shutdown().await.expect("shutdown");
}

async fn dropping_the_scheduler_stops_its_triggers(db: &TestDb) {
    let store = db.open().await;
    let r = runner(&store, None).await;
    let t = scheduler(&store, &r);
    let fake = Fake::firing(Value::Null);
    t.triggers_register_source(
        "p",
        "public",
        fake.clone(),
        &[desc("orphan", "gated", 20, false)],
    )
    .await
    .expect("register");
    wait_until("polls", || fake.polls() >= 2).await;
    drop(t);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let polls = fake.polls();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.polls(), polls, "no polling once every handle is gone");
    r.shutdown().await.expect("shutdown");
}

/// `set_config` (a daemon reload) re-bases the triggers already registered: a slower base
/// interval applies from their next poll.
async fn a_new_base_interval_applies_to_registered_triggers(db: &TestDb) {
    let store = db.open().await;
    let r = runner(&store, None).await;
    let t = scheduler(&store, &r);
    let fake = Fake::firing(Value::Null);
    t.triggers_register_source(
        "p",
        "public",
        fake.clone(),
        &[desc("rebased", "gated", 20, false)],
    )
    .await
    .expect("register");
    wait_until("polls", || fake.polls() >= 3).await;
    assert_eq!(info(&t, "rebased").interval, Duration::from_millis(20));
    t.set_config(TriggerConfig {
        base_interval: Duration::from_secs(60),
        ..TriggerConfig::default()
    });
    assert_eq!(t.config().base_interval, Duration::from_secs(60));
    assert_eq!(info(&t, "rebased").interval, Duration::from_secs(60));
    // The poll already sleeping its 20 ms may still happen; then none for a minute.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let polls = fake.polls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.polls(), polls, "polled at the new base interval");
    t.stop().await;
    r.shutdown().await.expect("shutdown");
}

/// With `claim_polls`, processes sharing a database poll a trigger once per slot between them:
/// with the clock held still, two schedulers (two stores) keep trying the same slot and only
/// one poll happens; one interval later, exactly one more.
async fn claimed_polls_happen_once_per_slot_across_processes(db: &TestDb) {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store = db.open().await;
        let r = runner(&store, None).await;
        let t = TriggerScheduler::with_clock(
            store.clone(),
            r.clone(),
            TriggerConfig {
                base_interval: Duration::from_millis(20),
                claim_polls: true,
            },
            clock.clone(),
        );
        let fake = Fake::firing(Value::Null);
        t.triggers_register_source(
            "p",
            "public",
            fake.clone(),
            &[desc("claimed", "gated", 20, false)],
        )
        .await
        .expect("register");
        nodes.push((store, r, t, fake));
    }
    let polls = |nodes: &[(Store, Runner, TriggerScheduler, Arc<Fake>)]| -> u64 {
        nodes.iter().map(|n| n.3.polls()).sum()
    };
    wait_until("the first poll", || polls(&nodes) >= 1).await;
    // Each scheduler retries the slot every few ms; none may poll it again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(polls(&nodes), 1, "one poll for the slot across both");
    clock.advance(Duration::from_millis(20));
    wait_until("the next slot's poll", || polls(&nodes) >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(polls(&nodes), 2, "one poll for the next slot across both");
    for (_, _, t, _) in &nodes {
        assert_eq!(info(t, "claimed").errors, 0, "{:?}", info(t, "claimed"));
    }
    // Without claims, each process polls on its own.
    for (_, _, t, _) in &nodes {
        t.set_config(TriggerConfig {
            base_interval: Duration::from_millis(20),
            claim_polls: false,
        });
    }
    wait_until("both poll", || nodes.iter().all(|n| n.3.polls() >= 3)).await;
    for (_, r, t, _) in nodes {
        t.stop().await;
        r.shutdown().await.expect("shutdown");
    }
}

conformance!(
    claimed_polls_happen_once_per_slot_across_processes,
    package_trigger_fires_its_workflow,
    a_new_base_interval_applies_to_registered_triggers,
    duplicate_context_is_deduplicated_while_the_first_run_is_in_flight,
    unregister_stops_polling_and_register_replaces,
    poll_loop_deduplicates_identical_fires,
    allow_concurrent_starts_every_fire,
    dedup_holds_across_processes,
    a_slow_poll_never_blocks_another_trigger,
    poll_errors_back_off_and_are_recorded,
    a_trigger_waits_for_its_workflow,
    dropping_the_scheduler_stops_its_triggers,
);
