//! The runner's guarantees, each tested on SQLite and PostgreSQL.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloacina::store::*;
use cloacina::workflow::trigger::dsl::*;
use cloacina::workflow::{Context, FnTask, RetryPolicy, Task, TaskError, TaskSpec, Workflow};
use cloacina::{EngineError, Runner, RunnerConfig};
use common::TestDb;
use serde_json::json;
use tokio::sync::Notify;

const LONG: Duration = Duration::from_secs(60);

/// A config whose safety-net poll and recovery timer are an hour away: anything that finishes
/// in a test was driven by events (or by the start-up recovery pass).
fn event_driven() -> RunnerConfig {
    RunnerConfig {
        concurrency: 8,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(3600),
        recovery_interval: Duration::from_secs(3600),
        shutdown_timeout: Duration::from_secs(5),
        ..RunnerConfig::default()
    }
}

async fn runner(db: &TestDb, config: RunnerConfig) -> Runner {
    Runner::start(db.open().await, config)
        .await
        .expect("runner")
}

fn task<F>(spec: TaskSpec, body: F) -> Arc<dyn Task>
where
    F: for<'a> Fn(&'a mut Context) -> cloacina::workflow::BoxFuture<'a, Result<(), TaskError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(FnTask::new(spec, body))
}

fn setter(id: &str, deps: &[&str]) -> Arc<dyn Task> {
    let key = id.to_string();
    task(
        TaskSpec::new(id).depends_on(deps.iter().copied()),
        move |ctx: &mut Context| {
            let key = key.clone();
            Box::pin(async move {
                ctx.set(key, true)?;
                Ok(())
            })
        },
    )
}

fn wf(name: &str, tasks: Vec<Arc<dyn Task>>) -> Workflow {
    Workflow::new(name, None, tasks).expect("valid workflow")
}

async fn task_status(r: &Runner, id: uuid::Uuid, task: &str) -> TaskStatus {
    r.tasks(id)
        .await
        .expect("tasks")
        .into_iter()
        .find(|t| t.task_id == task)
        .map(|t| t.status)
        .expect("task exists")
}

/// Polls (test-side only) until `cond` holds, failing after a generous bound.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LONG;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn chain_completes_by_events_not_polling(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    let names: Vec<String> = (0..10).map(|i| format!("step{i}")).collect();
    let tasks = (0..10)
        .map(|i| {
            let deps: Vec<&str> = if i == 0 {
                vec![]
            } else {
                vec![names[i - 1].as_str()]
            };
            let me = i;
            task(
                TaskSpec::new(names[i].clone()).depends_on(deps),
                move |ctx: &mut Context| {
                    Box::pin(async move {
                        // Each step sees its predecessor's output.
                        if me > 0 {
                            let prev: i64 = ctx.get("last")?;
                            assert_eq!(prev, me as i64 - 1);
                        }
                        ctx.set("last", me)?;
                        ctx.set(format!("s{me}"), me)?;
                        Ok(())
                    })
                },
            )
        })
        .collect();
    r.register(wf("chain", tasks));
    let id = r
        .submit(
            "chain",
            Context::from_value(json!({"seed": 1})).expect("ctx"),
        )
        .await
        .expect("submit");
    let res = r
        .wait(id, Some(LONG))
        .await
        .expect("finished without polling");
    assert_eq!(res.status, ExecutionStatus::Completed);
    let out = res.context.expect("final context");
    assert_eq!(out.get::<i64>("last").expect("last"), 9);
    assert_eq!(out.get::<i64>("seed").expect("input kept"), 1);
    assert!((0..10).all(|i| out.contains_key(&format!("s{i}"))));
    r.shutdown().await.expect("shutdown");
}

async fn tasks_run_concurrently_up_to_the_limit(db: &TestDb) {
    let mut config = event_driven();
    config.concurrency = 4;
    let r = runner(db, config).await;
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks = (0..6)
        .map(|i| {
            let (active, peak) = (active.clone(), peak.clone());
            task(TaskSpec::new(format!("t{i}")), move |_ctx: &mut Context| {
                let (active, peak) = (active.clone(), peak.clone());
                Box::pin(async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Hold the slot until four bodies have overlapped (or give up after a while).
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                    while peak.load(Ordering::SeqCst) < 4 && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        })
        .collect();
    r.register(wf("wide", tasks));
    let res = r.execute("wide", Context::new()).await.expect("execute");
    assert_eq!(res.status, ExecutionStatus::Completed);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "four bodies ran at once, and never more"
    );
    r.shutdown().await.expect("shutdown");
}

async fn retries_follow_the_policy_and_keep_each_error(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    r.register(wf(
        "flaky",
        vec![task(
            TaskSpec::new("f").retry(RetryPolicy::fixed(3, Duration::from_millis(10))),
            move |ctx: &mut Context| {
                let c = c.clone();
                Box::pin(async move {
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    if n < 3 {
                        return Err(TaskError::transient(format!("flaky #{n}")));
                    }
                    ctx.set("done", n)?;
                    Ok(())
                })
            },
        )],
    ));
    let res = r.execute("flaky", Context::new()).await.expect("execute");
    assert_eq!(res.status, ExecutionStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let events = r.events(res.id, 0).await.expect("events");
    let retries: Vec<String> = events
        .iter()
        .filter(|e| e.kind == event_kind::TASK_RETRY_SCHEDULED)
        .map(|e| e.message.clone().unwrap_or_default())
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(
        retries[0].starts_with("attempt 1 failed: transient: flaky #1"),
        "{retries:?}"
    );
    assert!(
        retries[1].starts_with("attempt 2 failed: transient: flaky #2"),
        "{retries:?}"
    );

    r.register(wf(
        "hopeless",
        vec![task(
            TaskSpec::new("h").retry(RetryPolicy::fixed(2, Duration::from_millis(5))),
            |_ctx: &mut Context| Box::pin(async { Err(TaskError::failed("no luck")) }),
        )],
    ));
    let res = r
        .execute("hopeless", Context::new())
        .await
        .expect("execute");
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert_eq!(
        res.error.as_deref(),
        Some("task 'h' failed: no luck (attempt 2 of 2)")
    );
    r.shutdown().await.expect("shutdown");
}

async fn timeouts_and_panics_fail_the_attempt(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    r.register(wf(
        "slow",
        vec![task(
            TaskSpec::new("s").timeout(Duration::from_millis(50)),
            |_ctx: &mut Context| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                })
            },
        )],
    ));
    r.register(wf(
        "panicky",
        vec![task(TaskSpec::new("p"), |_ctx: &mut Context| {
            Box::pin(async {
                if std::hint::black_box(true) {
                    panic!("kaboom");
                }
                Ok(())
            })
        })],
    ));
    r.register(wf("fine", vec![setter("ok", &[])]));
    let slow = r.execute("slow", Context::new()).await.expect("execute");
    assert_eq!(slow.status, ExecutionStatus::Failed);
    assert_eq!(
        slow.error.as_deref(),
        Some("task 's' failed: timed out after 50ms")
    );
    let panicky = r.execute("panicky", Context::new()).await.expect("execute");
    assert_eq!(panicky.status, ExecutionStatus::Failed);
    assert_eq!(
        panicky.error.as_deref(),
        Some("task 'p' failed: panicked: kaboom")
    );
    let fine = r
        .execute("fine", Context::new())
        .await
        .expect("runner still works");
    assert_eq!(fine.status, ExecutionStatus::Completed);
    r.shutdown().await.expect("shutdown");
}

async fn trigger_rules_skip_with_a_reason(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    let cleanup_ran = Arc::new(AtomicBool::new(false));
    let flag = cleanup_ran.clone();
    r.register(wf(
        "rules",
        vec![
            task(TaskSpec::new("load"), |ctx: &mut Context| {
                Box::pin(async move {
                    ctx.set("rows", 3)?;
                    Err(TaskError::failed("disk full"))
                })
            }),
            setter("report", &["load"]),
            task(
                TaskSpec::new("cleanup")
                    .depends_on(["load"])
                    .trigger_rule(any([task_failed("load")])),
                move |ctx: &mut Context| {
                    let flag = flag.clone();
                    Box::pin(async move {
                        flag.store(true, Ordering::SeqCst);
                        ctx.set("cleaned", true)?;
                        Ok(())
                    })
                },
            ),
            task(
                TaskSpec::new("big_only")
                    .depends_on(["cleanup"])
                    .trigger_rule(all([context_value("rows", ValueOp::GreaterThan, 100)])),
                |_ctx: &mut Context| Box::pin(async { Ok(()) }),
            ),
            setter("after_report", &["report"]),
        ],
    ));
    let res = r
        .execute(
            "rules",
            Context::from_value(json!({"rows": 3})).expect("ctx"),
        )
        .await
        .expect("execute");
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert!(cleanup_ran.load(Ordering::SeqCst));
    let tasks = r.tasks(res.id).await.expect("tasks");
    let get = |id: &str| {
        tasks
            .iter()
            .find(|t| t.task_id == id)
            .expect("task")
            .clone()
    };
    assert_eq!(get("load").status, TaskStatus::Failed);
    assert_eq!(
        (get("report").status, get("report").error.as_deref()),
        (TaskStatus::Skipped, Some("dependency 'load' failed"))
    );
    assert_eq!(
        get("after_report").error.as_deref(),
        Some("dependency 'report' was skipped")
    );
    assert_eq!(get("cleanup").status, TaskStatus::Completed);
    assert_eq!(get("big_only").status, TaskStatus::Skipped);
    assert_eq!(
        get("big_only").error.as_deref(),
        Some("trigger rule not satisfied: all(context_value('rows', GreaterThan, 100))")
    );
    r.shutdown().await.expect("shutdown");
}

/// A two-step chain whose first step waits for the test to open a gate.
fn gated(started: Arc<Notify>, gate: Arc<Notify>, second_runs: Arc<AtomicUsize>) -> Workflow {
    wf(
        "gated",
        vec![
            task(TaskSpec::new("first"), move |_ctx: &mut Context| {
                let (started, gate) = (started.clone(), gate.clone());
                Box::pin(async move {
                    started.notify_one();
                    gate.notified().await;
                    Ok(())
                })
            }),
            task(
                TaskSpec::new("second").depends_on(["first"]),
                move |_ctx: &mut Context| {
                    let n = second_runs.clone();
                    Box::pin(async move {
                        n.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                },
            ),
        ],
    )
}

async fn pause_stops_new_tasks_and_resume_continues(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    let (started, gate, second) = (
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(AtomicUsize::new(0)),
    );
    r.register(gated(started.clone(), gate.clone(), second.clone()));
    let id = r.submit("gated", Context::new()).await.expect("submit");
    started.notified().await;
    assert_eq!(
        r.pause(id).await.expect("pause").status,
        ExecutionStatus::Paused
    );
    gate.notify_one();
    eventually("first completes while paused", || async {
        task_status(&r, id, "first").await == TaskStatus::Completed
    })
    .await;
    // Give the dispatcher every chance to (wrongly) start `second`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        second.load(Ordering::SeqCst),
        0,
        "no new task starts while paused"
    );
    assert_eq!(task_status(&r, id, "second").await, TaskStatus::Ready);
    assert_eq!(
        r.status(id).await.expect("status").status,
        ExecutionStatus::Paused
    );
    r.resume(id).await.expect("resume");
    let res = r.wait(id, Some(LONG)).await.expect("wait");
    assert_eq!(res.status, ExecutionStatus::Completed);
    assert_eq!(second.load(Ordering::SeqCst), 1);
    r.shutdown().await.expect("shutdown");
}

/// Two independent tasks whose bodies wait for the test to open a gate; `runs` counts bodies.
fn two_gated(started: Arc<Notify>, gate: Arc<Notify>, runs: Arc<AtomicUsize>) -> Workflow {
    let gated_task = |id: &str| {
        let (started, gate, runs) = (started.clone(), gate.clone(), runs.clone());
        task(TaskSpec::new(id), move |_ctx: &mut Context| {
            let (started, gate, runs) = (started.clone(), gate.clone(), runs.clone());
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                started.notify_one();
                gate.notified().await;
                Ok(())
            })
        })
    };
    wf("two_gated", vec![gated_task("a"), gated_task("b")])
}

/// One slot, one prefetched task: starts `two_gated` and returns once one body runs and the
/// other task is held (claimed, waiting for the slot).
async fn one_running_one_held(
    db: &TestDb,
    shutdown_timeout: Duration,
) -> (Runner, uuid::Uuid, Arc<Notify>, Arc<AtomicUsize>) {
    let mut config = event_driven();
    config.concurrency = 1;
    config.prefetch = Some(1);
    config.shutdown_timeout = shutdown_timeout;
    let r = runner(db, config).await;
    let (started, gate, runs) = (
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(AtomicUsize::new(0)),
    );
    r.register(two_gated(started.clone(), gate.clone(), runs.clone()));
    let id = r.submit("two_gated", Context::new()).await.expect("submit");
    started.notified().await;
    eventually("both tasks are claimed", || async {
        r.tasks(id)
            .await
            .expect("tasks")
            .iter()
            .all(|t| t.status == TaskStatus::Running)
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one slot, one body");
    (r, id, gate, runs)
}

/// The held task of a paused run never starts: it is handed back, and runs after resume.
async fn pause_hands_back_held_tasks(db: &TestDb) {
    let (r, id, gate, runs) = one_running_one_held(db, Duration::from_secs(5)).await;
    r.pause(id).await.expect("pause");
    gate.notify_one();
    eventually("the held task is handed back", || async {
        r.tasks(id)
            .await
            .expect("tasks")
            .iter()
            .any(|t| t.status == TaskStatus::Ready && t.lease_owner.is_none())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "nothing started while paused"
    );
    assert_eq!(r.stats().handed_back.load(Ordering::SeqCst), 1);
    let events = r.events(id, 0).await.expect("events");
    assert!(
        events.iter().any(|e| e.kind == "task_recovered"
            && e.message
                .as_deref()
                .is_some_and(|m| m.ends_with("before it started: the execution was paused"))),
        "{events:?}"
    );
    r.resume(id).await.expect("resume");
    gate.notify_one();
    let res = r.wait(id, Some(LONG)).await.expect("wait");
    assert_eq!(res.status, ExecutionStatus::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    r.shutdown().await.expect("shutdown");
}

/// A held task does not start once shutdown began: the drain finishes the running one and
/// hands the held one back at once, unrun and not counted as a recovery.
async fn shutdown_hands_back_held_tasks(db: &TestDb) {
    let (r, id, gate, runs) = one_running_one_held(db, LONG).await;
    let stopping = tokio::spawn({
        let r = r.clone();
        async move { r.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.notify_one();
    let report = stopping.await.expect("join").expect("shutdown");
    assert_eq!((report.drained, report.released), (1, 1));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let mut tasks = r.tasks(id).await.expect("tasks");
    tasks.sort_by_key(|t| t.status == TaskStatus::Ready);
    let statuses: Vec<_> = tasks
        .iter()
        .map(|t| (t.status, t.lease_owner.is_none(), t.recoveries))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (TaskStatus::Completed, true, 0),
            (TaskStatus::Ready, true, 0)
        ]
    );
}

async fn cancel_stops_running_tasks(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    let started = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicBool::new(false));
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let (s, d) = (started.clone(), dropped.clone());
    r.register(wf(
        "forever",
        vec![
            task(TaskSpec::new("spin"), move |_ctx: &mut Context| {
                let (s, d) = (s.clone(), d.clone());
                Box::pin(async move {
                    let _guard = OnDrop(d);
                    s.notify_one();
                    futures::future::pending::<()>().await;
                    Ok(())
                })
            }),
            setter("never", &["spin"]),
        ],
    ));
    let id = r.submit("forever", Context::new()).await.expect("submit");
    started.notified().await;
    let rec = r.cancel(id).await.expect("cancel");
    assert_eq!(rec.status, ExecutionStatus::Cancelled);
    eventually("the running body was stopped", || async {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    let res = r.wait(id, Some(LONG)).await.expect("wait");
    assert_eq!(res.status, ExecutionStatus::Cancelled);
    eventually("the cancelled attempt is recorded", || async {
        task_status(&r, id, "spin").await == TaskStatus::Failed
    })
    .await;
    assert_eq!(task_status(&r, id, "never").await, TaskStatus::Skipped);
    let err = r
        .resume(id)
        .await
        .expect_err("cannot resume a cancelled run");
    assert!(err.to_string().contains("it is Cancelled"), "{err}");
    r.shutdown().await.expect("shutdown");
}

async fn a_pending_retry_never_revives_a_paused_run(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    r.register(wf(
        "retry_later",
        vec![task(
            TaskSpec::new("t").retry(RetryPolicy::fixed(2, Duration::from_millis(200))),
            move |_ctx: &mut Context| {
                let c = c.clone();
                Box::pin(async move {
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(TaskError::transient("first try fails"))
                    } else {
                        Ok(())
                    }
                })
            },
        )],
    ));
    let id = r
        .submit("retry_later", Context::new())
        .await
        .expect("submit");
    eventually("first attempt failed and a retry is pending", || async {
        r.events(id, 0)
            .await
            .expect("events")
            .iter()
            .any(|e| e.kind == event_kind::TASK_RETRY_SCHEDULED)
    })
    .await;
    r.pause(id).await.expect("pause");
    // Well past the retry's due time.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the retry did not run while paused"
    );
    assert_eq!(
        r.status(id).await.expect("status").status,
        ExecutionStatus::Paused
    );
    r.resume(id).await.expect("resume");
    assert_eq!(
        r.wait(id, Some(LONG)).await.expect("wait").status,
        ExecutionStatus::Completed
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    r.shutdown().await.expect("shutdown");
}

/// A task some earlier runner claimed and then died holding (its lease already expired).
async fn orphan(store: &Store, workflow: &Workflow) -> uuid::Uuid {
    let e = store
        .execution_create(NewExecution::for_workflow(workflow, Context::new(), None))
        .await
        .expect("create");
    let claimed = store
        .task_claim(ClaimRequest {
            owner: "dead-runner".into(),
            lease_ms: -1,
            limit: 10,
            workflows: None,
            only: None,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    e.id
}

async fn startup_recovers_expired_leases_at_once(db: &TestDb) {
    let w = wf("orphaned", vec![setter("a", &[]), setter("b", &["a"])]);
    let id = orphan(&db.open().await, &w).await;
    let r = runner(db, event_driven()).await; // recovery timer is an hour away
    r.register(w);
    let res = r.wait(id, Some(LONG)).await.expect("recovered at start-up");
    assert_eq!(res.status, ExecutionStatus::Completed);
    let events = r.events(id, 0).await.expect("events");
    let rec = events
        .iter()
        .find(|e| e.kind == event_kind::TASK_RECOVERED)
        .expect("recovered event");
    assert!(
        rec.message.as_deref().unwrap_or("").contains("dead-runner"),
        "{rec:?}"
    );
    assert_eq!(r.tasks(id).await.expect("tasks")[0].recoveries, 1);
    r.shutdown().await.expect("shutdown");
}

async fn recovery_limit_fails_the_task_with_a_reason(db: &TestDb) {
    let w = wf("doomed", vec![setter("a", &[])]);
    let id = orphan(&db.open().await, &w).await;
    let mut config = event_driven();
    config.max_recoveries = 0;
    let r = runner(db, config).await;
    r.register(w);
    let res = r.wait(id, Some(LONG)).await.expect("wait");
    assert_eq!(res.status, ExecutionStatus::Failed);
    let err = res.error.unwrap_or_default();
    assert!(
        err.contains("held by dead-runner") && err.contains("giving up (max_recoveries = 0)"),
        "{err}"
    );
    r.shutdown().await.expect("shutdown");
}

async fn events_record_every_transition_in_order(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    r.register(wf("two", vec![setter("a", &[]), setter("b", &["a"])]));
    let res = r.execute("two", Context::new()).await.expect("execute");
    let events = r.events(res.id, 0).await.expect("events");
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match &e.task_id {
            Some(t) => format!("{}:{t}", e.kind),
            None => e.kind.clone(),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "execution_created",
            "task_ready:a",
            "execution_started",
            "task_claimed:a",
            "task_completed:a",
            "task_ready:b",
            "task_claimed:b",
            "task_completed:b",
            "execution_completed"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert_eq!(r.events(res.id, 7).await.expect("since").len(), 2);
    r.shutdown().await.expect("shutdown");
}

async fn two_runners_never_run_the_same_attempt(db: &TestDb) {
    let seen = Arc::new(Mutex::new(Vec::<(uuid::Uuid, String)>::new()));
    let make = |seen: Arc<Mutex<Vec<(uuid::Uuid, String)>>>| {
        let tasks = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let seen = seen.clone();
                let deps: Vec<&str> = if i == 0 { vec![] } else { vec!["a"] };
                let name = id.to_string();
                task(
                    TaskSpec::new(*id).depends_on(deps),
                    move |ctx: &mut Context| {
                        let (seen, name) = (seen.clone(), name.clone());
                        Box::pin(async move {
                            let run: String = ctx.get("run")?;
                            seen.lock()
                                .expect("lock")
                                .push((run.parse().unwrap_or_default(), name.clone()));
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            Ok(())
                        })
                    },
                )
            })
            .collect();
        wf("shared", tasks)
    };
    let r1 = runner(db, event_driven()).await;
    let r2 = runner(db, event_driven()).await;
    r1.register(make(seen.clone()));
    r2.register(make(seen.clone()));
    let mut ids = Vec::new();
    for _ in 0..30 {
        let run = uuid::Uuid::new_v4();
        let ctx = Context::from_value(json!({"run": run.to_string()})).expect("ctx");
        ids.push((r1.submit("shared", ctx).await.expect("submit"), run));
    }
    for (id, _) in &ids {
        assert_eq!(
            r1.wait(*id, Some(LONG)).await.expect("wait").status,
            ExecutionStatus::Completed
        );
    }
    let seen = seen.lock().expect("lock").clone();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 90, "every body ran exactly once");
    assert_eq!(unique.len(), 90);
    r1.shutdown().await.expect("shutdown");
    r2.shutdown().await.expect("shutdown");
}

/// A runner that runs nothing still hears, at once, that another runner on the same database
/// finished its execution (same-file bus on SQLite, LISTEN/NOTIFY on PostgreSQL).
async fn waiters_hear_other_runners(db: &TestDb) {
    let watcher = runner(db, event_driven()).await;
    let worker = runner(db, event_driven()).await;
    let w = wf("elsewhere", vec![setter("a", &[]), setter("b", &["a"])]);
    let created = watcher
        .store()
        .execution_create(NewExecution::for_workflow(&w, Context::new(), None))
        .await
        .expect("create");
    worker.register(w);
    // `wait(.., None)` only re-checks on a signal (its safety-net poll is an hour away here).
    let res = tokio::time::timeout(Duration::from_secs(20), watcher.wait(created.id, None))
        .await
        .expect("woken by the other runner's completion, not by a poll")
        .expect("wait");
    assert_eq!(res.status, ExecutionStatus::Completed);
    assert_eq!(
        watcher.stats().claimed.load(Ordering::SeqCst),
        0,
        "the watcher ran nothing"
    );
    watcher.shutdown().await.expect("shutdown");
    worker.shutdown().await.expect("shutdown");
}

async fn unknown_workflows_are_named(db: &TestDb) {
    let r = runner(db, event_driven()).await;
    r.register(wf("ingest", vec![setter("a", &[])]));
    let err = r
        .submit("ingset", Context::new())
        .await
        .expect_err("unknown");
    assert!(matches!(err, EngineError::UnknownWorkflow { .. }));
    assert_eq!(
        err.to_string(),
        "workflow 'ingset' is not registered on this runner (did you mean 'ingest'?)"
    );
    let missing = uuid::Uuid::now_v7();
    assert_eq!(
        r.status(missing).await.expect_err("missing").to_string(),
        format!("execution {missing} not found")
    );
    r.shutdown().await.expect("shutdown");
}

async fn shutdown_drains_then_releases(db: &TestDb) {
    let mut config = event_driven();
    config.shutdown_timeout = Duration::from_millis(300);
    let r = runner(db, config).await;
    let started = Arc::new(Notify::new());
    let s = started.clone();
    r.register(wf(
        "stuck",
        vec![task(TaskSpec::new("hang"), move |_ctx: &mut Context| {
            let s = s.clone();
            Box::pin(async move {
                s.notify_one();
                futures::future::pending::<()>().await;
                Ok(())
            })
        })],
    ));
    let id = r.submit("stuck", Context::new()).await.expect("submit");
    started.notified().await;
    let report = r.shutdown().await.expect("shutdown");
    assert_eq!(report.released, 1);
    assert!(matches!(
        r.submit("stuck", Context::new()).await,
        Err(EngineError::ShuttingDown)
    ));
    let t = &r.tasks(id).await.expect("tasks")[0];
    assert_eq!(
        (t.status, t.lease_owner.as_deref(), t.recoveries),
        (TaskStatus::Ready, None, 0)
    );
}

/// A fault injected in the middle of the completion transaction (the event insert fails)
/// leaves no trace of the completion: not the status, not the output, not the dependents'
/// readiness, not the counters. Once the fault is gone, recovery completes the run.
async fn completion_is_atomic_under_injected_faults(db: &TestDb) {
    let mut config = event_driven();
    config.lease = Duration::from_millis(600);
    config.recovery_interval = Duration::from_millis(200);
    let r = runner(db, config).await;
    inject_fault(db, true).await;
    let b_runs = Arc::new(AtomicUsize::new(0));
    let n = b_runs.clone();
    r.register(wf(
        "faulty",
        vec![
            setter("a", &[]),
            task(
                TaskSpec::new("b").depends_on(["a"]),
                move |ctx: &mut Context| {
                    let n = n.clone();
                    Box::pin(async move {
                        n.fetch_add(1, Ordering::SeqCst);
                        ctx.set("b", true)?;
                        Ok(())
                    })
                },
            ),
            setter("c", &["b"]),
        ],
    ));
    let id = r.submit("faulty", Context::new()).await.expect("submit");
    eventually("b ran and failed to commit", || async {
        b_runs.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = r.store();
    assert_ne!(task_status(&r, id, "b").await, TaskStatus::Completed);
    assert_eq!(
        task_status(&r, id, "c").await,
        TaskStatus::NotStarted,
        "dependent not readied"
    );
    assert!(
        store.context_get(id, "b").await.expect("ctx").is_none(),
        "no output written"
    );
    let rec = store.execution_get(id).await.expect("get").expect("exists");
    assert_eq!(
        (rec.status, rec.remaining_tasks),
        (ExecutionStatus::Running, 2)
    );
    inject_fault(db, false).await;
    let res = r.wait(id, Some(LONG)).await.expect("wait");
    assert_eq!(res.status, ExecutionStatus::Completed);
    assert!(res.context.expect("ctx").get::<bool>("b").expect("b"));
    r.shutdown().await.expect("shutdown");
}

async fn inject_fault(db: &TestDb, on: bool) {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    match db.backend {
        common::Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://").to_string();
            let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                diesel::SqliteConnection,
            >::establish(&path)
            .await
            .expect("connect");
            let sql = if on {
                "PRAGMA busy_timeout = 10000; CREATE TRIGGER IF NOT EXISTS inject_fault BEFORE INSERT ON execution_events \
                 WHEN NEW.kind = 'task_completed' AND NEW.task_id = 'b' BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
            } else {
                "PRAGMA busy_timeout = 10000; DROP TRIGGER IF EXISTS inject_fault;"
            };
            c.batch_execute(sql).await.expect("trigger");
        }
        common::Backend::Postgres => {
            let mut c = diesel_async::AsyncPgConnection::establish(&db.url)
                .await
                .expect("connect");
            let sql = if on {
                format!(
                    "SET search_path TO \"{s}\"; \
                     CREATE OR REPLACE FUNCTION inject_fault() RETURNS trigger AS $$ BEGIN \
                     IF NEW.kind = 'task_completed' AND NEW.task_id = 'b' THEN RAISE EXCEPTION 'injected fault'; END IF; \
                     RETURN NEW; END $$ LANGUAGE plpgsql; \
                     CREATE TRIGGER inject_fault BEFORE INSERT ON execution_events FOR EACH ROW EXECUTE FUNCTION inject_fault();",
                    s = db.schema
                )
            } else {
                format!(
                    "SET search_path TO \"{s}\"; DROP TRIGGER IF EXISTS inject_fault ON execution_events;",
                    s = db.schema
                )
            };
            c.batch_execute(&sql).await.expect("trigger");
        }
    }
}

conformance!(
    chain_completes_by_events_not_polling,
    tasks_run_concurrently_up_to_the_limit,
    retries_follow_the_policy_and_keep_each_error,
    timeouts_and_panics_fail_the_attempt,
    trigger_rules_skip_with_a_reason,
    pause_stops_new_tasks_and_resume_continues,
    pause_hands_back_held_tasks,
    shutdown_hands_back_held_tasks,
    cancel_stops_running_tasks,
    a_pending_retry_never_revives_a_paused_run,
    startup_recovers_expired_leases_at_once,
    recovery_limit_fails_the_task_with_a_reason,
    events_record_every_transition_in_order,
    two_runners_never_run_the_same_attempt,
    waiters_hear_other_runners,
    unknown_workflows_are_named,
    shutdown_drains_then_releases,
    completion_is_atomic_under_injected_faults,
);
