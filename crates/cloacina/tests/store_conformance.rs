//! The storage conformance suite: every storage operation, run against SQLite and PostgreSQL
//! with identical expectations.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use cloacina::store::*;
use cloacina::workflow::{Context, FnTask, RetryPolicy, Task, TaskError, TaskSpec, Workflow};
use common::TestDb;
use serde_json::json;
use uuid::Uuid;

fn noop(id: &str, deps: &[&str], attempts: u32) -> Arc<dyn Task> {
    Arc::new(FnTask::new(
        TaskSpec::new(id)
            .depends_on(deps.iter().copied())
            .retry(RetryPolicy::fixed(attempts, std::time::Duration::ZERO)),
        |_ctx: &mut Context| Box::pin(async { Ok::<(), TaskError>(()) }),
    ))
}

/// a -> (b, c) -> d
fn diamond() -> Workflow {
    Workflow::new(
        "diamond",
        None,
        vec![
            noop("a", &[], 3),
            noop("b", &["a"], 1),
            noop("c", &["a"], 1),
            noop("d", &["b", "c"], 1),
        ],
    )
    .expect("valid")
}

fn single() -> Workflow {
    Workflow::new("single", None, vec![noop("only", &[], 1)]).expect("valid")
}

fn ctx(v: serde_json::Value) -> Context {
    Context::from_value(v).expect("object")
}

fn claim_all(owner: &str) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_string(),
        lease_ms: 30_000,
        limit: 100,
        workflows: None,
        only: None,
    }
}

async fn create(store: &Store, wf: &Workflow, input: Context) -> ExecutionRecord {
    store
        .execution_create(NewExecution::for_workflow(wf, input, None))
        .await
        .expect("create")
}

async fn complete(store: &Store, t: &ClaimedTask, output: Context) -> FinishResult {
    store
        .task_finish(TaskFinish {
            handoff: None,
            execution_id: t.execution_id,
            task_id: t.task_id.clone(),
            attempt: t.attempt,
            outcome: AttemptOutcome::Completed { output },
        })
        .await
        .expect("finish")
}

fn ids(claimed: &[ClaimedTask]) -> Vec<&str> {
    let mut v: Vec<&str> = claimed.iter().map(|c| c.task_id.as_str()).collect();
    v.sort();
    v
}

async fn kinds(store: &Store, id: Uuid) -> Vec<String> {
    let events = store.event_list(id, 0, 1000).await.expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(
        seqs, expected,
        "event sequence numbers are contiguous and ordered"
    );
    events
        .into_iter()
        .map(|e| match e.task_id {
            Some(t) => format!("{}:{t}", e.kind),
            None => e.kind,
        })
        .collect()
}

/// A creation that claims its roots: on a store that does not merge creations, the claimed
/// roots are the creating transaction's (leased, attempt 1, the run started, events in
/// order) and only the rest is left for claims; a store that merges creations claims
/// nothing there and leaves every root ready. Either way nobody else can claim a root twice.
async fn creation_claims_its_roots_for_free_slots(db: &TestDb) {
    let store = db.open().await;
    let merged = store.capabilities().merged_writes;
    // Two roots, one slot.
    let wf = Workflow::new(
        "two_roots",
        None,
        vec![
            noop("x", &[], 1),
            noop("y", &[], 1),
            noop("z", &["x", "y"], 1),
        ],
    )
    .expect("valid");
    let mut signals = store.subscribe();
    let claim = ClaimRequest {
        limit: 1,
        ..claim_all("creator")
    };
    let created = store
        .execution_create_claiming(NewExecution::for_workflow(&wf, ctx(json!({})), None), claim)
        .await
        .expect("create");
    let id = created.record.id;
    assert!(created.left_ready, "one root is left for any runner");
    assert_eq!(
        signals.recv().await.expect("signal"),
        StoreSignal::TasksReady,
        "a root left ready is signalled"
    );
    let others = store.task_claim(claim_all("other")).await.expect("claim");
    if merged {
        assert!(created.claimed.is_empty(), "{:?}", created.claimed);
        assert_eq!(ids(&others), vec!["x", "y"]);
        return;
    }
    assert_eq!(ids(&created.claimed), vec!["x"]);
    assert_eq!(created.claimed[0].attempt, 1);
    assert_eq!(created.claimed[0].execution_id, id);
    assert_eq!(ids(&others), vec!["y"], "the claimed root is held");
    let rec = store.execution_get(id).await.expect("get").expect("exists");
    assert_eq!(rec.status, ExecutionStatus::Running);
    assert!(rec.started_at.is_some());
    let tasks = store.task_list(id).await.expect("tasks");
    let x = tasks.iter().find(|t| t.task_id == "x").expect("x");
    assert_eq!(x.status, TaskStatus::Running);
    assert_eq!(x.lease_owner.as_deref(), Some("creator"));
    assert_eq!(x.attempt, 1, "the claim's fencing token");
    assert_eq!(
        x.lease_expires_at,
        Some(created.claimed[0].lease_expires_at)
    );
    assert_eq!(
        created.record.status,
        ExecutionStatus::Running,
        "the creation answers with the run as it committed it"
    );
    assert_eq!(
        kinds(&store, id).await,
        vec![
            "execution_created",
            "task_ready:x",
            "task_ready:y",
            "execution_started",
            "task_claimed:x",
            "task_claimed:y",
        ]
    );

    // All roots claimed: nothing is signalled, nothing is left.
    let created = store
        .execution_create_claiming(
            NewExecution::for_workflow(&single(), ctx(json!({})), None),
            claim_all("creator"),
        )
        .await
        .expect("create");
    assert!(!created.left_ready);
    assert_eq!(ids(&created.claimed), vec!["only"]);
    assert!(
        store
            .task_claim(claim_all("other"))
            .await
            .expect("claim")
            .is_empty(),
        "the single root is held"
    );
    let r = complete(&store, &created.claimed[0], ctx(json!({"done": true}))).await;
    assert_eq!(r.execution_finished, Some(ExecutionStatus::Completed));
}

async fn reopen_is_idempotent(db: &TestDb) {
    let a = db.open().await;
    let e = create(&a, &single(), Context::new()).await;
    drop(a);
    let b = db.open().await;
    assert_eq!(
        b.execution_get(e.id).await.expect("get").map(|r| r.id),
        Some(e.id)
    );
}

async fn concurrent_opens_migrate_once(db: &TestDb) {
    let (a, b, c) = tokio::join!(db.try_open(), db.try_open(), db.try_open());
    let (a, _b, _c) = (a.expect("open a"), b.expect("open b"), c.expect("open c"));
    create(&a, &single(), Context::new()).await;
}

async fn execution_create_writes_rows_context_and_events(db: &TestDb) {
    let store = db.open().await;
    let wf = diamond();
    let e = create(&store, &wf, ctx(json!({"n": 1}))).await;
    assert_eq!(e.status, ExecutionStatus::Pending);
    assert_eq!(
        (e.total_tasks, e.remaining_tasks, e.failed_tasks),
        (4, 4, 0)
    );
    assert_eq!(e.workflow_version, wf.version());
    let tasks = store.task_list(e.id).await.expect("tasks");
    let summary: Vec<(String, TaskStatus, i32, Vec<String>)> = tasks
        .iter()
        .map(|t| {
            (
                t.task_id.clone(),
                t.status,
                t.remaining_deps,
                t.dependents.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "a".into(),
                TaskStatus::Ready,
                0,
                vec!["b".into(), "c".into()]
            ),
            ("b".into(), TaskStatus::NotStarted, 1, vec!["d".into()]),
            ("c".into(), TaskStatus::NotStarted, 1, vec!["d".into()]),
            ("d".into(), TaskStatus::NotStarted, 2, vec![]),
        ]
    );
    assert_eq!(tasks[0].max_attempts, 3);
    assert_eq!(
        store.context_get(e.id, INPUT_CONTEXT).await.expect("ctx"),
        Some(ctx(json!({"n": 1})))
    );
    assert_eq!(
        kinds(&store, e.id).await,
        vec!["execution_created", "task_ready:a"]
    );
    let mut dup = NewExecution::for_workflow(&wf, Context::new(), None);
    dup.id = e.id;
    let err = store.execution_create(dup).await.expect_err("duplicate id");
    assert!(matches!(err, StoreError::ExecutionExists { .. }), "{err}");
    assert!(
        store
            .execution_get(Uuid::now_v7())
            .await
            .expect("get")
            .is_none()
    );
}

async fn completion_cascades_atomically_to_final_context(db: &TestDb) {
    let store = db.open().await;
    let e = create(
        &store,
        &diamond(),
        ctx(json!({"input": true, "shared": {"x": 1}})),
    )
    .await;

    let first = store.task_claim(claim_all("r1")).await.expect("claim");
    assert_eq!(ids(&first), vec!["a"]);
    assert_eq!(first[0].attempt, 1);
    assert_eq!(first[0].workflow_name, "diamond");
    assert!(
        store
            .task_claim(claim_all("r2"))
            .await
            .expect("claim")
            .is_empty(),
        "a is held"
    );
    let running = store
        .execution_get(e.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(running.status, ExecutionStatus::Running);
    assert!(running.started_at.is_some());
    let (with, final_ctx) = store
        .execution_get_with_final(e.id)
        .await
        .expect("get with final")
        .expect("exists");
    assert_eq!(with, running, "the same record as execution_get");
    assert_eq!(final_ctx, None, "no final context while it runs");
    assert!(
        store
            .execution_get_with_final(Uuid::new_v4())
            .await
            .expect("get with final")
            .is_none()
    );

    let r = complete(&store, &first[0], ctx(json!({"input": true, "a": 1}))).await;
    assert!(!r.fenced);
    assert_eq!(r.newly_ready, vec!["b", "c"]);
    assert_eq!(r.execution_finished, None);

    let mid = store.task_claim(claim_all("r1")).await.expect("claim");
    assert_eq!(ids(&mid), vec!["b", "c"]);
    let b = mid.iter().find(|t| t.task_id == "b").expect("b");
    let c = mid.iter().find(|t| t.task_id == "c").expect("c");
    let r = complete(&store, b, ctx(json!({"b": "bee", "shared": {"y": 2}}))).await;
    assert!(r.newly_ready.is_empty(), "d still waits for c");
    let r = complete(&store, c, ctx(json!({"c": "sea"}))).await;
    assert_eq!(r.newly_ready, vec!["d"]);

    let d = store.task_claim(claim_all("r1")).await.expect("claim");
    let r = complete(&store, &d[0], ctx(json!({"d": 4, "shared": {"z": 3}}))).await;
    assert_eq!(r.execution_finished, Some(ExecutionStatus::Completed));

    let done = store
        .execution_get(e.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.remaining_tasks, 0);
    assert!(done.completed_at.is_some());
    // Final context: input merged with the leaf (d) output.
    let expected = ctx(json!({"input": true, "shared": {"x": 1, "z": 3}, "d": 4}));
    assert_eq!(
        store.context_get(e.id, FINAL_CONTEXT).await.expect("final"),
        Some(expected.clone())
    );
    assert_eq!(
        store
            .execution_get_with_final(e.id)
            .await
            .expect("get with final"),
        Some((done.clone(), Some(expected))),
        "the record and its final context in one read"
    );
    let outputs = store
        .contexts_get(e.id, vec!["a".into(), "b".into(), "missing".into()])
        .await
        .expect("contexts");
    assert_eq!(outputs.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(
        kinds(&store, e.id).await,
        vec![
            "execution_created",
            "task_ready:a",
            "execution_started",
            "task_claimed:a",
            "task_completed:a",
            "task_ready:b",
            "task_ready:c",
            "task_claimed:b",
            "task_claimed:c",
            "task_completed:b",
            "task_completed:c",
            "task_ready:d",
            "task_claimed:d",
            "task_completed:d",
            "execution_completed",
        ]
    );
}

async fn stale_attempts_are_fenced(db: &TestDb) {
    let store = db.open().await;
    let e = create(&store, &single(), Context::new()).await;
    let mut req = claim_all("old");
    req.lease_ms = -1; // expires at once
    let old = store.task_claim(req).await.expect("claim").remove(0);
    let rec = store.lease_recover_expired(5).await.expect("recover");
    assert_eq!(rec.requeued, vec![(e.id, "only".to_string())]);
    let new = store
        .task_claim(claim_all("new"))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!((old.attempt, new.attempt, new.recoveries), (1, 2, 1));

    // The old holder wakes up and tries to write: nothing happens.
    let r = complete(&store, &old, ctx(json!({"stale": true}))).await;
    assert!(r.fenced);
    let task = &store.task_list(e.id).await.expect("tasks")[0];
    assert_eq!((task.status, task.attempt), (TaskStatus::Running, 2));
    assert!(
        store
            .context_get(e.id, "only")
            .await
            .expect("ctx")
            .is_none()
    );

    let r = complete(&store, &new, ctx(json!({"fresh": true}))).await;
    assert_eq!(r.execution_finished, Some(ExecutionStatus::Completed));
    let events = kinds(&store, e.id).await;
    assert!(
        events.contains(&"task_recovered:only".to_string()),
        "{events:?}"
    );
}

async fn retries_wait_for_their_time(db: &TestDb) {
    let store = db.open().await;
    let e = create(&store, &diamond(), Context::new()).await;
    let a = store
        .task_claim(claim_all("r"))
        .await
        .expect("claim")
        .remove(0);
    let later = now_ms() + 60_000;
    let r = store
        .task_finish(TaskFinish {
            handoff: None,
            execution_id: e.id,
            task_id: "a".into(),
            attempt: a.attempt,
            outcome: AttemptOutcome::Retry {
                error: "flaky".into(),
                retry_at: later,
            },
        })
        .await
        .expect("retry");
    assert!(!r.fenced);
    let task = &store.task_list(e.id).await.expect("tasks")[0];
    assert_eq!(
        (task.status, task.ready_at, task.error.as_deref()),
        (TaskStatus::Ready, Some(later), Some("flaky"))
    );
    assert!(
        store
            .task_claim(claim_all("r"))
            .await
            .expect("claim")
            .is_empty(),
        "not before its time"
    );

    // A retry due now is claimable, as attempt 2.
    let e2 = create(&store, &single(), Context::new()).await;
    let t = store
        .task_claim(claim_all("r"))
        .await
        .expect("claim")
        .remove(0);
    store
        .task_finish(TaskFinish {
            handoff: None,
            execution_id: e2.id,
            task_id: "only".into(),
            attempt: t.attempt,
            outcome: AttemptOutcome::Retry {
                error: "flaky".into(),
                retry_at: now_ms() - 1,
            },
        })
        .await
        .expect("retry");
    let again = store.task_claim(claim_all("r")).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].execution_id, again[0].attempt), (e2.id, 2));
    let events = kinds(&store, e2.id).await;
    assert!(
        events.contains(&"task_retry_scheduled:only".to_string()),
        "{events:?}"
    );
}

async fn failures_mark_the_execution_failed(db: &TestDb) {
    let store = db.open().await;
    let e = create(&store, &diamond(), Context::new()).await;
    let a = store
        .task_claim(claim_all("r"))
        .await
        .expect("claim")
        .remove(0);
    let r = store
        .task_finish(TaskFinish {
            handoff: None,
            execution_id: e.id,
            task_id: "a".into(),
            attempt: a.attempt,
            outcome: AttemptOutcome::Failed {
                error: "boom".into(),
            },
        })
        .await
        .expect("fail");
    // Dependents become ready so their trigger rules can be evaluated (and skip them).
    assert_eq!(r.newly_ready, vec!["b", "c"]);
    for t in store.task_claim(claim_all("r")).await.expect("claim") {
        store
            .task_finish(TaskFinish {
                handoff: None,
                execution_id: e.id,
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                outcome: AttemptOutcome::Skipped {
                    reason: "dependency 'a' failed".into(),
                },
            })
            .await
            .expect("skip");
    }
    let d = store
        .task_claim(claim_all("r"))
        .await
        .expect("claim")
        .remove(0);
    let r = store
        .task_finish(TaskFinish {
            handoff: None,
            execution_id: e.id,
            task_id: d.task_id.clone(),
            attempt: d.attempt,
            outcome: AttemptOutcome::Skipped {
                reason: "upstream".into(),
            },
        })
        .await
        .expect("skip");
    assert_eq!(r.execution_finished, Some(ExecutionStatus::Failed));
    let rec = store
        .execution_get(e.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(rec.status, ExecutionStatus::Failed);
    assert_eq!(rec.failed_tasks, 1);
    assert_eq!(rec.error.as_deref(), Some("task 'a' failed: boom"));
    let statuses = store
        .task_statuses(e.id, vec!["a".into(), "d".into()])
        .await
        .expect("statuses");
    assert!(statuses.contains(&("a".into(), TaskStatus::Failed)));
    assert!(statuses.contains(&("d".into(), TaskStatus::Skipped)));
}

async fn pause_resume_cancel(db: &TestDb) {
    let store = db.open().await;
    let e = create(&store, &diamond(), Context::new()).await;
    let paused = store.execution_pause(e.id).await.expect("pause");
    assert_eq!(paused.status, ExecutionStatus::Paused);
    assert!(
        store
            .task_claim(claim_all("r"))
            .await
            .expect("claim")
            .is_empty(),
        "paused: no claims"
    );
    let err = store.execution_pause(e.id).await.expect_err("pause twice");
    assert_eq!(
        err.to_string(),
        format!("cannot pause execution {}: it is Paused", e.id)
    );
    let resumed = store.execution_resume(e.id).await.expect("resume");
    assert_eq!(
        resumed.status,
        ExecutionStatus::Pending,
        "never started, so back to Pending"
    );
    let a = store
        .task_claim(claim_all("r"))
        .await
        .expect("claim")
        .remove(0);

    let cancelled = store
        .execution_cancel(e.id, Some("operator said so".into()))
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert_eq!(cancelled.error.as_deref(), Some("operator said so"));
    assert_eq!(
        cancelled.remaining_tasks, 1,
        "only the running task is left"
    );
    // The running task still records its result; the run stays Cancelled and nothing new starts.
    let r = complete(&store, &a, ctx(json!({"late": 1}))).await;
    assert!(!r.fenced);
    assert!(r.newly_ready.is_empty());
    assert_eq!(r.execution_finished, None);
    let rec = store
        .execution_get(e.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (rec.status, rec.remaining_tasks),
        (ExecutionStatus::Cancelled, 0)
    );
    let skipped = store
        .task_list(e.id)
        .await
        .expect("tasks")
        .into_iter()
        .filter(|t| t.status == TaskStatus::Skipped)
        .count();
    assert_eq!(skipped, 3);
    let err = store
        .execution_resume(e.id)
        .await
        .expect_err("resume cancelled");
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                action: "resume",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        store.execution_cancel(Uuid::now_v7(), None).await,
        Err(StoreError::ExecutionNotFound(_))
    ));
    let events = kinds(&store, e.id).await;
    for k in [
        "execution_paused",
        "execution_resumed",
        "execution_cancelled",
    ] {
        assert!(events.iter().any(|e| e == k), "{k} in {events:?}");
    }
}

async fn leases_renew_and_recovery_gives_up(db: &TestDb) {
    let store = db.open().await;
    let e = create(&store, &diamond(), Context::new()).await;
    let mut req = claim_all("w1");
    req.lease_ms = 1_000;
    store.task_claim(req).await.expect("claim");
    let until = now_ms() + 120_000;
    assert_eq!(store.lease_renew("w1", until).await.expect("renew"), 1);
    assert_eq!(store.lease_renew("nobody", until).await.expect("renew"), 0);
    assert_eq!(
        store.task_list(e.id).await.expect("tasks")[0].lease_expires_at,
        Some(until)
    );
    assert!(
        store
            .lease_recover_expired(2)
            .await
            .expect("recover")
            .requeued
            .is_empty()
    );

    // Expire, recover twice, then the third expiry fails the task.
    for round in 0..3 {
        let mut req = claim_all("w1");
        req.lease_ms = -1;
        store.lease_renew("w1", now_ms() - 1).await.expect("expire");
        let claimed = store.task_claim(req).await.expect("claim");
        assert!(round == 0 || claimed.len() == 1);
        let rec = store.lease_recover_expired(2).await.expect("recover");
        if round < 2 {
            assert_eq!(rec.requeued.len(), 1, "round {round}");
        } else {
            assert_eq!(rec.failed, vec![(e.id, "a".to_string())]);
        }
    }
    let a = &store.task_list(e.id).await.expect("tasks")[0];
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(a.recoveries, 2);
    assert!(
        a.error
            .as_deref()
            .unwrap_or("")
            .contains("giving up (max_recoveries = 2)"),
        "{:?}",
        a.error
    );
}

/// The leases of a dead instance's owners end at once (and only theirs): the next recovery
/// pass requeues those tasks, counted as recoveries; this process's own leases, another
/// instance's, and names that only look alike (`%`, `_`) are untouched.
async fn lease_expire_owners_ends_only_a_dead_instances_leases(db: &TestDb) {
    let store = db.open().await;
    let owners = [
        "daemon-a/1-x/r1",  // a dead process of instance daemon-a
        "daemon-a/2-y/r2",  // this process (excepted)
        "daemon-b/3-z/r3",  // another instance
        "daemon-a_/4-w/r4", // `_` is not a wildcard
    ];
    let mut ids = Vec::new();
    for owner in owners {
        let e = create(&store, &single(), Context::new()).await;
        let claimed = store.task_claim(claim_all(owner)).await.expect("claim");
        assert_eq!(claimed.len(), 1, "{owner}");
        ids.push(e.id);
    }
    let ended = store
        .lease_expire_owners("daemon-a/", "daemon-a/2-y/")
        .await
        .expect("expire");
    assert_eq!(ended, 1);
    let rec = store.lease_recover_expired(3).await.expect("recover");
    assert_eq!(rec.requeued.len(), 1, "{rec:?}");
    for (owner, id) in owners.iter().zip(&ids) {
        let t = &store.task_list(*id).await.expect("tasks")[0];
        if *owner == "daemon-a/1-x/r1" {
            assert_eq!((t.status, t.recoveries), (TaskStatus::Ready, 1), "{owner}");
        } else {
            assert_eq!(t.status, TaskStatus::Running, "{owner}");
            assert_eq!(t.lease_owner.as_deref(), Some(*owner));
        }
    }
    assert_eq!(
        store
            .lease_expire_owners("daemon-%", "")
            .await
            .expect("expire"),
        0,
        "% is not a wildcard either"
    );
}

/// A claimed attempt handed back unrun is Ready again with no lease, is not counted as a
/// recovery, leaves an event with the reason, and can be claimed again; a stale attempt
/// cannot hand anything back.
async fn task_release_hands_back_one_unstarted_attempt(db: &TestDb) {
    let store = db.open().await;
    let e = create(&store, &single(), Context::new()).await;
    let held = store
        .task_claim(claim_all("w1"))
        .await
        .expect("claim")
        .remove(0);
    assert!(
        !store
            .task_release(e.id, "only", held.attempt + 1, "wrong attempt")
            .await
            .expect("release")
    );
    assert!(
        store
            .task_release(e.id, "only", held.attempt, "the execution was paused")
            .await
            .expect("release")
    );
    let t = &store.task_list(e.id).await.expect("tasks")[0];
    assert_eq!(
        (t.status, t.lease_owner.as_deref(), t.recoveries),
        (TaskStatus::Ready, None, 0)
    );
    let events = store.event_list(e.id, 0, 1000).await.expect("events");
    let last = events.last().expect("an event");
    assert_eq!(
        (last.kind.as_str(), last.message.as_deref()),
        ("task_recovered", Some("the execution was paused"))
    );
    // Released twice is a no-op; the next claim gets a fresh attempt.
    assert!(
        !store
            .task_release(e.id, "only", held.attempt, "again")
            .await
            .expect("release")
    );
    let again = store
        .task_claim(claim_all("w2"))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(again.attempt, held.attempt + 1);
    let r = complete(&store, &again, Context::new()).await;
    assert_eq!(r.execution_finished, Some(ExecutionStatus::Completed));
}

async fn listing_filters_and_pages(db: &TestDb) {
    let store = db.open().await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(create(&store, &single(), Context::new()).await.id);
    }
    let other = create(&store, &diamond(), Context::new()).await.id;
    store.execution_cancel(other, None).await.expect("cancel");

    let all = store
        .execution_list(ExecutionFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].id, other, "newest first");
    let singles = store
        .execution_list(ExecutionFilter {
            workflow: Some("single".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        singles.iter().map(|r| r.id).collect::<Vec<_>>(),
        made.iter().rev().copied().collect::<Vec<_>>(),
        "a filtered list is newest first too"
    );
    let filtered_page = store
        .execution_list(ExecutionFilter {
            workflow: Some("single".into()),
            limit: Some(2),
            offset: Some(2),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        filtered_page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![made[2], made[1]]
    );
    let cancelled = store
        .execution_list(ExecutionFilter {
            status: Some(ExecutionStatus::Cancelled),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        cancelled.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![other]
    );
    let page1 = store
        .execution_list(ExecutionFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .expect("list");
    let page2 = store
        .execution_list(ExecutionFilter {
            limit: Some(2),
            before: Some(page1[1].id),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page2.len(), 2);
    assert!(page2.iter().all(|r| !page1.iter().any(|p| p.id == r.id)));
    assert_eq!(page2[0].id, made[3]);
}

/// Counting by status agrees with listing, across statuses and as runs move on.
async fn execution_count_by_status(db: &TestDb) {
    let store = db.open().await;
    let unfinished = [
        ExecutionStatus::Pending,
        ExecutionStatus::Running,
        ExecutionStatus::Paused,
    ];
    assert_eq!(store.execution_count(&unfinished).await.expect("count"), 0);
    let a = create(&store, &single(), Context::new()).await;
    let b = create(&store, &single(), Context::new()).await;
    create(&store, &single(), Context::new()).await;
    store.execution_pause(b.id).await.expect("pause");
    assert_eq!(store.execution_count(&unfinished).await.expect("count"), 3);
    assert_eq!(
        store
            .execution_count(&[ExecutionStatus::Paused])
            .await
            .expect("count"),
        1
    );
    store.execution_cancel(a.id, None).await.expect("cancel");
    assert_eq!(store.execution_count(&unfinished).await.expect("count"), 2);
    assert_eq!(
        store
            .execution_count(&[ExecutionStatus::Cancelled, ExecutionStatus::Completed])
            .await
            .expect("count"),
        1
    );
    assert_eq!(store.execution_count(&[]).await.expect("count"), 0);
}

async fn event_cleanup_counts_then_deletes(db: &TestDb) {
    let store = db.open().await;
    let e = create(&store, &single(), Context::new()).await;
    let future = now_ms() + 1_000;
    assert_eq!(
        store
            .event_cleanup(now_ms() - 60_000, false)
            .await
            .expect("none old"),
        0
    );
    assert_eq!(store.event_cleanup(future, true).await.expect("dry run"), 2);
    assert_eq!(
        store.event_list(e.id, 0, 100).await.expect("events").len(),
        2,
        "dry run deletes nothing"
    );
    assert_eq!(store.event_cleanup(future, false).await.expect("delete"), 2);
    assert!(
        store
            .event_list(e.id, 0, 100)
            .await
            .expect("events")
            .is_empty()
    );
    assert_eq!(
        store.event_list(e.id, 1, 100).await.expect("events").len(),
        0
    );
}

async fn signals_reach_subscribers(db: &TestDb) {
    let store = db.open().await;
    let mut rx = store.subscribe();
    let e = create(&store, &single(), Context::new()).await;
    assert_eq!(rx.recv().await.expect("signal"), StoreSignal::TasksReady);
    let t = store
        .task_claim(claim_all("r"))
        .await
        .expect("claim")
        .remove(0);
    complete(&store, &t, Context::new()).await;
    let mut saw_finish = false;
    while let Ok(Ok(s)) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await {
        if s == StoreSignal::ExecutionFinished(e.id) {
            saw_finish = true;
            break;
        }
    }
    assert!(saw_finish, "ExecutionFinished signal");
}

async fn two_claimers_never_share_a_task(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let mut expected = HashSet::new();
    for _ in 0..40 {
        let e = create(&a, &single(), Context::new()).await;
        expected.insert((e.id, "only".to_string()));
    }
    let claim = |store: Store, owner: &'static str| async move {
        let mut got = Vec::new();
        loop {
            let mut req = claim_all(owner);
            req.limit = 3;
            let batch = store.task_claim(req).await.expect("claim");
            if batch.is_empty() {
                break;
            }
            got.extend(batch.into_iter().map(|t| (t.execution_id, t.task_id)));
        }
        got
    };
    let (x, y) = tokio::join!(
        tokio::spawn(claim(a.clone(), "a")),
        tokio::spawn(claim(b.clone(), "b"))
    );
    let (x, y) = (x.expect("join"), y.expect("join"));
    let mut seen = HashSet::new();
    for item in x.iter().chain(y.iter()) {
        assert!(seen.insert(item.clone()), "claimed twice: {item:?}");
    }
    assert_eq!(seen, expected);
}

async fn workflow_filter_limits_claims(db: &TestDb) {
    let store = db.open().await;
    create(&store, &single(), Context::new()).await;
    let d = create(&store, &diamond(), Context::new()).await;
    let mut req = claim_all("r");
    req.workflows = Some(vec!["diamond".into()]);
    let got = store.task_claim(req).await.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].execution_id, d.id);
    let mut req = claim_all("r");
    req.only = Some(vec![(d.id, "b".into())]);
    assert!(
        store.task_claim(req).await.expect("claim").is_empty(),
        "b is not ready"
    );
}

// ---- cron schedules, cron claims, de-duplication -----------------------------------------

fn cron_spec(name: &str, expression: &str, next: Millis) -> NewCronSchedule {
    NewCronSchedule {
        name: name.to_string(),
        workflow: "single".to_string(),
        expression: expression.to_string(),
        timezone: "UTC".to_string(),
        catch_up: cloacina::workflow::CatchUp::Skip,
        next_run_at: next,
    }
}

fn cron_new(schedule: Uuid, instant: Millis, next: Millis, missed: i64) -> NewExecution {
    NewExecution::for_workflow(&single(), Context::new(), None).with_options(SubmitOptions {
        dedup_key: None,
        cron: Some(CronClaim {
            schedule_id: schedule,
            instant,
            next_run_at: next,
            missed,
        }),
    })
}

async fn cron_schedule_write_upserts_prunes_and_deletes(db: &TestDb) {
    use cloacina::workflow::CatchUp;
    let store = db.open().await;
    let rows = store
        .cron_schedule_write(
            "pkg-1",
            "public",
            vec![
                cron_spec("b", "0 * * * *", 2_000),
                cron_spec("a", "0 2 * * *", 1_000),
            ],
        )
        .await
        .expect("write");
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        (
            rows[0].next_run_at,
            rows[0].last_run_at,
            rows[0].missed_count
        ),
        (1_000, None, 0)
    );
    assert_eq!(
        (rows[0].package_id.as_str(), rows[0].tenant.as_str()),
        ("pkg-1", "public")
    );
    // Same declaration again, with later computed cursors: nothing changes (an unchanged
    // schedule keeps its cursor, so missed windows are still found after a restart).
    let again = store
        .cron_schedule_write(
            "pkg-1",
            "public",
            vec![
                cron_spec("a", "0 2 * * *", 9_000),
                cron_spec("b", "0 * * * *", 9_000),
            ],
        )
        .await
        .expect("rewrite");
    assert_eq!(again, rows, "idempotent");
    // Another package's rows are its own.
    store
        .cron_schedule_write("pkg-2", "t2", vec![cron_spec("a", "0 3 * * *", 500)])
        .await
        .expect("other package");
    // Change a's expression (cursor reset), b's policy only (cursor kept), drop nothing yet.
    let mut b = cron_spec("b", "0 * * * *", 9_000);
    b.catch_up = CatchUp::RunAll { max: 4 };
    let changed = store
        .cron_schedule_write(
            "pkg-1",
            "public",
            vec![cron_spec("a", "30 2 * * *", 7_000), b],
        )
        .await
        .expect("change");
    assert_eq!(changed[0].id, rows[0].id, "same row, updated");
    assert_eq!(
        (changed[0].expression.as_str(), changed[0].next_run_at),
        ("30 2 * * *", 7_000)
    );
    assert_eq!(
        (changed[1].catch_up, changed[1].next_run_at),
        (CatchUp::RunAll { max: 4 }, 2_000)
    );
    // A name no longer declared is deleted.
    let pruned = store
        .cron_schedule_write("pkg-1", "public", vec![cron_spec("b", "0 * * * *", 9_000)])
        .await
        .expect("prune");
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].name, "b");
    // Listing: all, by package, due ones; the earliest cursor.
    let all = store
        .cron_schedule_list(CronScheduleFilter::default())
        .await
        .expect("list");
    assert_eq!(
        all.iter()
            .map(|r| (r.package_id.as_str(), r.name.as_str()))
            .collect::<Vec<_>>(),
        [("pkg-2", "a"), ("pkg-1", "b")],
        "earliest cursor first"
    );
    let due = store
        .cron_schedule_list(CronScheduleFilter {
            due_at: Some(1_000),
            ..CronScheduleFilter::default()
        })
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].package_id, "pkg-2");
    let of_pkg1 = store
        .cron_schedule_list(CronScheduleFilter {
            package_id: Some("pkg-1".into()),
            ..CronScheduleFilter::default()
        })
        .await
        .expect("by package");
    assert_eq!(of_pkg1.len(), 1);
    assert_eq!(store.cron_schedule_next().await.expect("next"), Some(500));
    // An empty declaration deletes the package's rows; delete counts; a second delete is 0.
    store
        .cron_schedule_write("pkg-2", "t2", vec![])
        .await
        .expect("empty");
    assert_eq!(
        store.cron_schedule_delete("pkg-1").await.expect("delete"),
        1
    );
    assert_eq!(
        store
            .cron_schedule_delete("pkg-1")
            .await
            .expect("delete again"),
        0
    );
    assert!(
        store
            .cron_schedule_list(CronScheduleFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(store.cron_schedule_next().await.expect("next"), None);
}

async fn cron_instants_are_claimed_once_with_their_execution(db: &TestDb) {
    let store = db.open().await;
    let s = store
        .cron_schedule_write(
            "pkg",
            "public",
            vec![cron_spec("every", "* * * * *", 60_000)],
        )
        .await
        .expect("write")
        .remove(0);
    // Not due yet at 0: the cursor (60 000) is after the instant.
    let err = store
        .execution_create(cron_new(s.id, 0, 60_000, 0))
        .await
        .expect_err("before cursor");
    assert!(
        matches!(err, StoreError::CronInstantTaken { existing: None, .. }),
        "{err}"
    );
    // Fire 60 000 (cursor -> 120 000) and 120 000 (cursor -> 180 000, 0 missed).
    let e1 = store
        .execution_create(cron_new(s.id, 60_000, 120_000, 0))
        .await
        .expect("fire 1");
    // The same instant again is refused and names the run that has it; nothing is created.
    let err = store
        .execution_create(cron_new(s.id, 60_000, 120_000, 0))
        .await
        .expect_err("twice");
    match err {
        StoreError::CronInstantTaken {
            instant, existing, ..
        } => {
            assert_eq!((instant, existing), (60_000, Some(e1.id)))
        }
        other => panic!("expected CronInstantTaken, got {other}"),
    }
    // Skipping 120 000 and firing 180 000: the claim moves the cursor past both, counting one missed.
    let e3 = store
        .execution_create(cron_new(s.id, 180_000, 240_000, 1))
        .await
        .expect("fire 3");
    let err = store
        .execution_create(cron_new(s.id, 120_000, 180_000, 0))
        .await
        .expect_err("skipped instant");
    assert!(
        matches!(err, StoreError::CronInstantTaken { existing: None, .. }),
        "{err}"
    );
    // A claim must move the cursor forward.
    let err = store
        .execution_create(cron_new(s.id, 240_000, 240_000, 0))
        .await
        .expect_err("bad claim");
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
    let row = store
        .cron_schedule_list(CronScheduleFilter::default())
        .await
        .expect("list")
        .remove(0);
    assert_eq!(
        (row.next_run_at, row.last_run_at, row.missed_count),
        (240_000, Some(180_000), 1)
    );
    let fires = store.cron_fire_list(Some(s.id), 10).await.expect("fires");
    assert_eq!(
        fires
            .iter()
            .map(|f| (f.instant, f.execution_id))
            .collect::<Vec<_>>(),
        [(180_000, e3.id), (60_000, e1.id)]
    );
    assert_eq!(
        store
            .cron_fire_list(None, 10)
            .await
            .expect("all fires")
            .len(),
        2
    );
    let executions = store
        .execution_list(ExecutionFilter::default())
        .await
        .expect("executions");
    assert_eq!(executions.len(), 2, "refused claims created nothing");
    // Advance: only from the exact cursor, only forward.
    assert!(
        !store
            .cron_schedule_advance(s.id, 999, 300_000, 1)
            .await
            .expect("stale")
    );
    assert!(
        !store
            .cron_schedule_advance(s.id, 240_000, 240_000, 1)
            .await
            .expect("not forward")
    );
    assert!(
        store
            .cron_schedule_advance(s.id, 240_000, 360_000, 2)
            .await
            .expect("advance")
    );
    let row = store
        .cron_schedule_list(CronScheduleFilter::default())
        .await
        .expect("list")
        .remove(0);
    assert_eq!((row.next_run_at, row.missed_count), (360_000, 3));
    // Pruning keeps the newest fires per schedule.
    assert_eq!(store.cron_fire_prune(1).await.expect("prune"), 1);
    assert_eq!(
        store
            .cron_fire_list(Some(s.id), 10)
            .await
            .expect("fires")
            .len(),
        1
    );
    assert_eq!(store.cron_fire_prune(1).await.expect("prune again"), 0);
    // Deleting the schedule deletes its history; a claim on a deleted schedule is refused.
    store.cron_schedule_delete("pkg").await.expect("delete");
    assert!(
        store
            .cron_fire_list(None, 10)
            .await
            .expect("fires")
            .is_empty()
    );
    let err = store
        .execution_create(cron_new(s.id, 360_000, 420_000, 0))
        .await
        .expect_err("deleted");
    assert!(matches!(err, StoreError::CronInstantTaken { .. }), "{err}");
}

async fn concurrent_cron_claims_fire_each_instant_once(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let s = a
        .cron_schedule_write(
            "pkg",
            "public",
            vec![cron_spec("every", "* * * * *", 60_000)],
        )
        .await
        .expect("write")
        .remove(0);
    // Two stores (two "processes") race to fire the same 10 instants, each claiming every one.
    let claim_all = |store: Store| async move {
        let mut won = Vec::new();
        for i in 1..=10i64 {
            match store
                .execution_create(cron_new(s.id, i * 60_000, (i + 1) * 60_000, 0))
                .await
            {
                Ok(e) => won.push((i, e.id)),
                Err(StoreError::CronInstantTaken { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        won
    };
    let (x, y) = tokio::join!(
        tokio::spawn(claim_all(a.clone())),
        tokio::spawn(claim_all(b.clone()))
    );
    let (x, y) = (x.expect("join"), y.expect("join"));
    let mut instants: Vec<i64> = x.iter().chain(y.iter()).map(|(i, _)| *i).collect();
    instants.sort();
    assert_eq!(
        instants,
        (1..=10).collect::<Vec<_>>(),
        "every instant fired exactly once"
    );
    let executions = a
        .execution_list(ExecutionFilter::default())
        .await
        .expect("executions");
    assert_eq!(executions.len(), 10);
}

/// Creations submitted together (on PostgreSQL, written by one set-based statement per
/// table) each get their own answer: one conflicting creation is refused with its own error
/// and the others are written whole.
async fn concurrent_creations_each_get_their_answer(db: &TestDb) {
    let store = db.open().await;
    let news: Vec<NewExecution> = (0..12)
        .map(|i| {
            let key = (i % 6 == 0).then(|| "same".to_string());
            NewExecution::for_workflow(&diamond(), ctx(json!({ "i": i })), None).with_options(
                SubmitOptions {
                    dedup_key: key,
                    cron: None,
                },
            )
        })
        .collect();
    let results =
        futures::future::join_all(news.iter().cloned().map(|n| store.execution_create(n))).await;
    let refused: Vec<&StoreError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    assert!(
        matches!(refused[0], StoreError::DuplicateExecution { dedup_key, .. } if dedup_key == "same"),
        "{}",
        refused[0]
    );
    for (new, result) in news.iter().zip(&results) {
        let Ok(rec) = result else { continue };
        assert_eq!(rec.id, new.id);
        assert_eq!(store.task_list(rec.id).await.expect("tasks").len(), 4);
        let input = store
            .context_get(rec.id, cloacina::store::INPUT_CONTEXT)
            .await
            .expect("input")
            .expect("has input");
        assert_eq!(input.get::<i64>("i").ok(), new.input.get::<i64>("i").ok());
        assert_eq!(kinds(&store, rec.id).await[0], "execution_created");
    }
    // Re-creating a written id is refused with that id.
    let again = results
        .iter()
        .find_map(|r| r.as_ref().ok())
        .expect("one written");
    let mut dup = news
        .iter()
        .find(|n| n.id == again.id)
        .expect("its request")
        .clone();
    dup.dedup_key = None;
    assert!(matches!(
        store.execution_create(dup).await,
        Err(StoreError::ExecutionExists { id }) if id == again.id
    ));
}

async fn dedup_key_blocks_only_unfinished_runs(db: &TestDb) {
    let store = db.open().await;
    let keyed = |key: &str| {
        NewExecution::for_workflow(&single(), ctx(json!({"k": 1})), None).with_options(
            SubmitOptions {
                dedup_key: Some(key.to_string()),
                cron: None,
            },
        )
    };
    let first = store.execution_create(keyed("K")).await.expect("first");
    assert_eq!(first.dedup_key.as_deref(), Some("K"));
    let err = store
        .execution_create(keyed("K"))
        .await
        .expect_err("duplicate");
    match &err {
        StoreError::DuplicateExecution {
            dedup_key,
            existing,
        } => {
            assert_eq!((dedup_key.as_str(), *existing), ("K", Some(first.id)))
        }
        other => panic!("expected DuplicateExecution, got {other}"),
    }
    assert!(err.to_string().contains(&first.id.to_string()), "{err}");
    // Other keys and unkeyed runs are unaffected.
    store.execution_create(keyed("L")).await.expect("other key");
    create(&store, &single(), Context::new()).await;
    create(&store, &single(), Context::new()).await;
    // Paused is still unfinished.
    store.execution_pause(first.id).await.expect("pause");
    assert!(matches!(
        store.execution_create(keyed("K")).await,
        Err(StoreError::DuplicateExecution { .. })
    ));
    // Once the run ends, the key is free again.
    store
        .execution_cancel(first.id, None)
        .await
        .expect("cancel");
    let second = store
        .execution_create(keyed("K"))
        .await
        .expect("after the first ended");
    assert_ne!(second.id, first.id);
    // Two stores racing with one key: exactly one run.
    let other = db.open().await;
    let (x, y) = tokio::join!(
        store.execution_create(keyed("race")),
        other.execution_create(keyed("race"))
    );
    assert_eq!(
        [x.is_ok(), y.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{x:?} / {y:?}"
    );
    // A duplicate id is still reported as such, not as a key conflict.
    let mut dup = keyed("fresh");
    dup.id = first.id;
    assert!(matches!(
        store.execution_create(dup).await,
        Err(StoreError::ExecutionExists { .. })
    ));
}

/// `close` ends every clone's use of the database at once (later calls say so), lets the data
/// be opened again, and on SQLite leaves only the database file: no `-wal` or `-shm`.
async fn close_releases_the_database(db: &TestDb) {
    let store = db.open().await;
    let clone = store.clone();
    let e = create(&store, &single(), Context::new()).await;
    store
        .execution_list(ExecutionFilter::default())
        .await
        .expect("read");
    store.close().await;
    let read = clone.execution_get(e.id).await.expect_err("closed");
    assert!(matches!(read, StoreError::Closed), "{read:?}");
    let write = clone
        .execution_create(NewExecution::for_workflow(&single(), Context::new(), None))
        .await
        .expect_err("closed");
    assert!(matches!(write, StoreError::Closed), "{write:?}");
    assert!(write.to_string().contains("closed"), "{write}");
    let health = clone
        .write_health()
        .expect("nothing can commit after close");
    assert!(health.message.contains("writer stopped"), "{health:?}");
    clone.close().await;
    if db.backend == common::Backend::Sqlite {
        let file = db.url.trim_start_matches("sqlite://");
        for suffix in ["-wal", "-shm"] {
            assert!(
                !std::path::Path::new(&format!("{file}{suffix}")).exists(),
                "{file}{suffix} is left after close"
            );
        }
    }
    let again = db.open().await;
    assert!(again.execution_get(e.id).await.expect("get").is_some());
}

conformance!(
    close_releases_the_database,
    reopen_is_idempotent,
    concurrent_opens_migrate_once,
    execution_create_writes_rows_context_and_events,
    completion_cascades_atomically_to_final_context,
    stale_attempts_are_fenced,
    retries_wait_for_their_time,
    failures_mark_the_execution_failed,
    pause_resume_cancel,
    leases_renew_and_recovery_gives_up,
    lease_expire_owners_ends_only_a_dead_instances_leases,
    task_release_hands_back_one_unstarted_attempt,
    listing_filters_and_pages,
    execution_count_by_status,
    event_cleanup_counts_then_deletes,
    signals_reach_subscribers,
    two_claimers_never_share_a_task,
    workflow_filter_limits_claims,
    cron_schedule_write_upserts_prunes_and_deletes,
    cron_instants_are_claimed_once_with_their_execution,
    concurrent_cron_claims_fire_each_instant_once,
    dedup_key_blocks_only_unfinished_runs,
    concurrent_creations_each_get_their_answer,
    creation_claims_its_roots_for_free_slots,
);

/// PostgreSQL only: a write in one process-like store wakes a subscriber on another through
/// LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_crosses_stores() {
    let Some(db) = TestDb::new(common::Backend::Postgres).await else {
        return;
    };
    let writer = db.open().await;
    let listener = db.open().await;
    let mut rx = listener.subscribe();
    // Let the LISTEN connection come up (it announces itself with one TasksReady).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
    let e = create(&writer, &single(), Context::new()).await;
    let t = writer
        .task_claim(claim_all("w"))
        .await
        .expect("claim")
        .remove(0);
    complete(&writer, &t, Context::new()).await;
    let mut saw = false;
    while let Ok(Ok(s)) = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await
    {
        if s == StoreSignal::ExecutionFinished(e.id) {
            saw = true;
            break;
        }
    }
    assert!(saw, "the other store heard ExecutionFinished via NOTIFY");
    db.cleanup().await;
}

#[test]
fn database_urls() {
    use std::path::PathBuf;
    assert_eq!(
        DatabaseUrl::parse("sqlite://data/c.db").expect("relative"),
        DatabaseUrl::Sqlite {
            target: SqliteTarget::File(PathBuf::from("data/c.db")),
            synchronous: Synchronous::Full
        }
    );
    assert_eq!(
        DatabaseUrl::parse("sqlite:///abs/c.db?synchronous=normal").expect("absolute"),
        DatabaseUrl::Sqlite {
            target: SqliteTarget::File(PathBuf::from("/abs/c.db")),
            synchronous: Synchronous::Normal
        }
    );
    assert_eq!(
        DatabaseUrl::parse("sqlite::memory:").expect("memory"),
        DatabaseUrl::Sqlite {
            target: SqliteTarget::Memory,
            synchronous: Synchronous::Full
        }
    );
    assert!(matches!(
        DatabaseUrl::parse("postgresql://u@h/db").expect("pg"),
        DatabaseUrl::Postgres { .. }
    ));
    let err = DatabaseUrl::parse("mysql://x").expect_err("scheme");
    assert!(err.to_string().contains("unknown scheme"), "{err}");
    let err = DatabaseUrl::parse("sqlite://x.db?journal=off").expect_err("option");
    assert!(
        err.to_string().contains("unknown option 'journal=off'"),
        "{err}"
    );
    assert_eq!(
        DatabaseUrl::parse("sqlite://:memory:?synchronous=normal").expect("memory"),
        DatabaseUrl::Sqlite {
            target: SqliteTarget::Memory,
            synchronous: Synchronous::Normal
        }
    );
    let err = DatabaseUrl::parse("sqlite://file::memory:?cache=shared").expect_err("URI");
    assert!(err.to_string().contains("sqlite::memory:"), "{err}");
    let err = DatabaseUrl::parse("sqlite:file:x.db").expect_err("URI");
    assert!(err.to_string().contains("'file:...'"), "{err}");
    let err = DatabaseUrl::parse("mysql://root:hunter2@db/app").expect_err("scheme");
    assert!(
        !err.to_string().contains("hunter2") && err.to_string().contains("root:***@db"),
        "{err}"
    );
}

#[test]
fn urls_are_redacted() {
    for (url, shown) in [
        (
            "postgres://app:s3cr%40t@db:5432/prod",
            "postgres://app:***@db:5432/prod",
        ),
        ("postgresql://app@db/prod", "postgresql://app@db/prod"),
        (
            "postgres://db/prod?user=app&password=s3cret&sslmode=require",
            "postgres://db/prod?user=app&password=***&sslmode=require",
        ),
        ("postgres://a:p@ss@db/x", "postgres://a:***@db/x"),
        ("sqlite:///var/lib/c.db", "sqlite:///var/lib/c.db"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

/// A PostgreSQL connection error carries its cause (tokio-postgres alone says only "error
/// connecting to server") and the URL with the password hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connect_errors_give_their_cause() {
    let refused = Store::open("postgres://app:hunter2@127.0.0.1:1/test")
        .await
        .expect_err("nothing listens on port 1");
    let text = refused.to_string();
    assert!(
        text.contains("onnection refused") && text.contains("app:***@127.0.0.1:1/test"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    let unknown_host = Store::open("postgres://app:hunter2@no-such-host.invalid/test")
        .await
        .expect_err("no such host");
    let text = unknown_host.to_string();
    assert!(
        text.contains("no-such-host.invalid") && text.contains("lookup"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    if TestDb::new(common::Backend::Postgres).await.is_some() {
        let base = common::pg_url();
        let Some((server, _)) = base.rsplit_once('/') else {
            panic!("{base} names a database");
        };
        let err = Store::open(&format!("{server}/cloacina_no_such_database"))
            .await
            .expect_err("no such database");
        let text = err.to_string();
        assert!(
            text.contains("\"cloacina_no_such_database\" does not exist"),
            "{text}"
        );
    }
}

/// `sqlite://:memory:` is the same private in-memory database as `sqlite::memory:`: reads see
/// what was written (a reader pool would open empty databases of its own), and each open is a
/// database of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_urls_are_one_database_per_store() {
    for url in ["sqlite://:memory:", "sqlite::memory:"] {
        let store = Store::open(url).await.expect(url);
        let e = create(&store, &diamond(), ctx(json!({"n": 1}))).await;
        assert_eq!(store.task_list(e.id).await.expect(url).len(), 4, "{url}");
        let claimed = store.task_claim(claim_all("m")).await.expect(url);
        assert_eq!(ids(&claimed), vec!["a"], "{url}");
        complete(&store, &claimed[0], ctx(json!({"a": 1}))).await;
        assert_eq!(
            store
                .execution_count(&[ExecutionStatus::Running])
                .await
                .expect(url),
            1,
            "{url}"
        );
        assert_eq!(
            store.context_get(e.id, INPUT_CONTEXT).await.expect(url),
            Some(ctx(json!({"n": 1}))),
            "{url}"
        );
        let other = Store::open(url).await.expect(url);
        assert!(
            other.execution_get(e.id).await.expect(url).is_none(),
            "{url}: another store is another database"
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_and_missing_directory() {
    let store = Store::open("sqlite::memory:").await.expect("memory");
    let e = create(&store, &single(), Context::new()).await;
    assert_eq!(store.task_list(e.id).await.expect("tasks").len(), 1);
    assert_eq!(store.synchronous(), Some(Synchronous::Full));
    let err = Store::open("sqlite:///nonexistent-dir-xyz/c.db")
        .await
        .expect_err("missing dir");
    assert!(
        err.to_string()
            .contains("directory '/nonexistent-dir-xyz' does not exist"),
        "{err}"
    );
}
