//! One completion rule: several task finishes forced into one group commit must leave exactly
//! the rows those finishes leave when committed one by one, on SQLite (each write alone, in a
//! savepoint) as on PostgreSQL (terminal finishes merged into set-based statements, with a
//! one-by-one fallback when the merged write fails).
//!
//! Each case runs its writes twice on the same store, in fresh executions: once forced into a
//! single group commit (the writer is held while they queue, and the commit counter proves
//! they shared one commit) and once one write per commit. The two snapshots (task rows,
//! outputs, final context, execution row, events per task) must be equal, and each case also
//! checks the expected values explicitly, so both backends are held to the same answers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cloacina::store::*;
use cloacina::workflow::Context;
use common::TestDb;
use futures::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

// ---- building runs ------------------------------------------------------------------------

/// A run of a workflow given as (task, its dependencies) in topological order.
fn new_run(name: &str, tasks: &[(&str, &[&str])], input: serde_json::Value) -> NewExecution {
    let tasks = tasks
        .iter()
        .enumerate()
        .map(|(position, (id, deps))| NewTask {
            task_id: id.to_string(),
            position: position as i32,
            dependents: tasks
                .iter()
                .filter(|(_, d)| d.contains(id))
                .map(|(t, _)| t.to_string())
                .collect(),
            dependencies: deps.len() as i32,
            max_attempts: 3,
        })
        .collect();
    NewExecution {
        id: Uuid::now_v7(),
        workflow_name: name.to_string(),
        workflow_version: "v1".to_string(),
        package_id: None,
        input: ctx(input),
        tasks,
        dedup_key: None,
        cron: None,
    }
}

const DIAMOND: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];

fn ctx(v: serde_json::Value) -> Context {
    Context::from_value(v).expect("an object")
}

async fn create(store: &Store, new: NewExecution) -> Uuid {
    store.execution_create(new).await.expect("create").id
}

/// Claims exactly `tasks` of `execution` for `owner`.
async fn claim(
    store: &Store,
    execution: Uuid,
    tasks: &[&str],
    owner: &str,
    lease_ms: i64,
) -> Vec<ClaimedTask> {
    let claimed = store
        .task_claim(ClaimRequest {
            owner: owner.to_string(),
            lease_ms,
            limit: tasks.len() as i64,
            workflows: None,
            only: Some(tasks.iter().map(|t| (execution, t.to_string())).collect()),
        })
        .await
        .expect("claim");
    let mut got: Vec<&str> = claimed.iter().map(|c| c.task_id.as_str()).collect();
    got.sort();
    let mut want = tasks.to_vec();
    want.sort();
    assert_eq!(got, want, "claimed exactly the tasks asked for");
    claimed
}

fn finish(t: &ClaimedTask, outcome: AttemptOutcome) -> TaskFinish {
    TaskFinish {
        execution_id: t.execution_id,
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        outcome,
        handoff: None,
    }
}

fn completed(t: &ClaimedTask, output: serde_json::Value) -> TaskFinish {
    finish(
        t,
        AttemptOutcome::Completed {
            output: ctx(output),
        },
    )
}

fn with_handoff(mut f: TaskFinish, owner: &str) -> TaskFinish {
    f.handoff = Some(Handoff {
        owner: owner.to_string(),
        lease_ms: 30_000,
        limit: 1,
        refill: None,
    });
    f
}

fn by_task<'a>(claimed: &'a [ClaimedTask], task: &str) -> &'a ClaimedTask {
    claimed
        .iter()
        .find(|c| c.task_id == task)
        .unwrap_or_else(|| panic!("{task} was claimed"))
}

// ---- committing -----------------------------------------------------------------------------

/// How the writes of a case are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// All in one group commit.
    Batched,
    /// One write per commit, in the same order.
    OneByOne,
}

/// Waits (briefly) until the store has committed `n` transactions in all, then checks it is
/// exactly `n`. The writer counts a commit just after answering its writes, so the count may
/// lag the answers by a moment.
async fn commits_reach(store: &Store, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.stats().commits < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(store.stats().commits, n, "commits");
}

/// A write of a batch.
enum Op {
    Claim(ClaimRequest),
    Finish(TaskFinish),
}

/// A write's answer.
#[derive(Debug)]
enum Done {
    Claimed(Result<Vec<ClaimedTask>, StoreError>),
    Finished(Result<FinishResult, StoreError>),
}

impl Op {
    /// Whether a store that merges writes merges this one (a retry takes the ordinary path).
    fn merged(&self) -> bool {
        match self {
            Op::Claim(_) => true,
            Op::Finish(f) => !matches!(f.outcome, AttemptOutcome::Retry { .. }),
        }
    }

    fn run(self, store: &Store) -> BoxFuture<'_, Done> {
        match self {
            Op::Claim(req) => Box::pin(async move { Done::Claimed(store.task_claim(req).await) }),
            Op::Finish(f) => Box::pin(async move { Done::Finished(store.task_finish(f).await) }),
        }
    }
}

/// Runs `ops` in the given mode; answers in order. Batched, it proves they shared one
/// commit, and on a store that merges writes, that the mergeable ones were merged.
async fn run_batch(store: &Store, mode: Mode, ops: Vec<Op>) -> Vec<Done> {
    match mode {
        Mode::OneByOne => {
            let mut out = Vec::new();
            for op in ops {
                out.push(op.run(store).await);
            }
            out
        }
        Mode::Batched => {
            let merged = ops.iter().filter(|op| op.merged()).count() as u64;
            let hold = store.hold_writer().await.expect("hold the writer");
            // Read once the writer is held: every earlier commit is counted by then.
            let before = store.stats();
            let mut writes: Vec<BoxFuture<'_, Done>> =
                ops.into_iter().map(|op| op.run(store)).collect();
            // One poll queues each write (it then waits for its commit).
            for w in &mut writes {
                assert!(
                    futures::poll!(w.as_mut()).is_pending(),
                    "a write cannot commit while the writer is held"
                );
            }
            hold.release().await.expect("release the writer");
            let out = futures::future::join_all(writes).await;
            // The hold's own (empty) commit, then one for all the writes.
            commits_reach(store, before.commits + 2).await;
            let after = store.stats();
            if store.capabilities().merged_writes {
                assert_eq!(
                    after.merged_writes - before.merged_writes,
                    merged,
                    "every mergeable write of the batch was merged"
                );
            } else {
                assert_eq!(after.merged_writes, 0, "this backend merges nothing");
            }
            out
        }
    }
}

/// Runs `finishes` in the given mode; answers in order.
async fn run_finishes(
    store: &Store,
    mode: Mode,
    finishes: Vec<TaskFinish>,
) -> Vec<Result<FinishResult, StoreError>> {
    run_batch(store, mode, finishes.into_iter().map(Op::Finish).collect())
        .await
        .into_iter()
        .map(|d| match d {
            Done::Finished(r) => r,
            Done::Claimed(_) => panic!("a finish answered as a claim"),
        })
        .collect()
}

fn ok(r: &Result<FinishResult, StoreError>) -> &FinishResult {
    r.as_ref().unwrap_or_else(|e| panic!("finish failed: {e}"))
}

// ---- what a run left ----------------------------------------------------------------------

/// Everything a run's rows say, without ids and times.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    status: ExecutionStatus,
    remaining_tasks: i32,
    failed_tasks: i32,
    error: Option<String>,
    /// (task, status, attempt, remaining deps, failed deps, lease owner, error)
    tasks: Vec<TaskRow>,
    /// Context documents by owner (input, outputs, final).
    contexts: BTreeMap<String, serde_json::Value>,
    /// Events of the run itself, in order.
    run_events: Vec<String>,
    /// Each task's events, in order.
    task_events: BTreeMap<String, Vec<String>>,
}

type TaskRow = (
    String,
    TaskStatus,
    i32,
    i32,
    i32,
    Option<String>,
    Option<String>,
);

/// An event without its times: `kind[@attempt][: message]`, the parts of messages that hold
/// times (lease expiry, retry delay) left out, and the creation's (it names the workflow).
fn event_text(e: &EventRecord) -> String {
    let mut s = e.kind.clone();
    if let Some(a) = e.attempt {
        s.push_str(&format!("@{a}"));
    }
    if let Some(m) = e.message.as_ref().filter(|_| e.kind != "execution_created") {
        let m = m.split(" until ").next().unwrap_or(m);
        let m = m.split("; next attempt in").next().unwrap_or(m);
        s.push_str(&format!(": {m}"));
    }
    s
}

async fn snapshot(store: &Store, id: Uuid) -> Snapshot {
    let run = store
        .execution_get(id)
        .await
        .expect("get")
        .expect("the run exists");
    let tasks = store.task_list(id).await.expect("tasks");
    let mut owners = vec![INPUT_CONTEXT.to_string(), FINAL_CONTEXT.to_string()];
    owners.extend(tasks.iter().map(|t| t.task_id.clone()));
    let contexts = store
        .contexts_get(id, owners)
        .await
        .expect("contexts")
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(&v).expect("json")))
        .collect();
    let events = store.event_list(id, 0, 10_000).await.expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "event numbers are contiguous"
    );
    let mut run_events = Vec::new();
    let mut task_events: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        match &e.task_id {
            Some(t) => task_events
                .entry(t.clone())
                .or_default()
                .push(event_text(e)),
            None => run_events.push(event_text(e)),
        }
    }
    Snapshot {
        status: run.status,
        remaining_tasks: run.remaining_tasks,
        failed_tasks: run.failed_tasks,
        error: run.error,
        tasks: tasks
            .into_iter()
            .map(|t| {
                (
                    t.task_id,
                    t.status,
                    t.attempt,
                    t.remaining_deps,
                    t.failed_deps,
                    t.lease_owner,
                    t.error,
                )
            })
            .collect(),
        contexts,
        run_events,
        task_events,
    }
}

fn task<'a>(s: &'a Snapshot, id: &str) -> &'a TaskRow {
    s.tasks
        .iter()
        .find(|t| t.0 == id)
        .unwrap_or_else(|| panic!("task {id}"))
}

fn events_of<'a>(s: &'a Snapshot, id: &str) -> Vec<&'a str> {
    s.task_events
        .get(id)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

fn count(events: &[&str], prefix: &str) -> usize {
    events.iter().filter(|e| e.starts_with(prefix)).count()
}

/// Runs `case` once batched and once one by one, and checks both left the same rows.
async fn same_both_ways<F>(store: &Store, case: F)
where
    F: for<'s> Fn(&'s Store, Mode) -> BoxFuture<'s, Vec<Snapshot>>,
{
    let batched = case(store, Mode::Batched).await;
    let one_by_one = case(store, Mode::OneByOne).await;
    assert_eq!(
        batched, one_by_one,
        "a group commit leaves what the same finishes leave one by one"
    );
}

// ---- cases --------------------------------------------------------------------------------

/// Both branches of a diamond finish in one batch: the join is readied once, by the finish
/// that comes last, with one ready event, and handed off once, to that finish's runner.
async fn diamond_branches_finish_in_one_batch(db: &TestDb) {
    let store = db.open().await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            let id = create(store, new_run("diamond", DIAMOND, json!({"n": 1}))).await;
            let a = claim(store, id, &["a"], "r", 30_000).await;
            let r = ok(&store.task_finish(completed(&a[0], json!({"a": 1}))).await).clone();
            assert_eq!(r.newly_ready, vec!["b", "c"]);
            let bc = claim(store, id, &["b", "c"], "r", 30_000).await;
            let out = run_finishes(
                store,
                mode,
                vec![
                    with_handoff(completed(by_task(&bc, "b"), json!({"b": 2})), "rb"),
                    with_handoff(completed(by_task(&bc, "c"), json!({"c": 3})), "rc"),
                ],
            )
            .await;
            let (b, c) = (ok(&out[0]), ok(&out[1]));
            assert!(!b.fenced && !c.fenced);
            assert!(b.newly_ready.is_empty(), "b leaves d waiting for c: {b:?}");
            assert_eq!(c.newly_ready, vec!["d"], "the last finish readies d");
            assert!(b.claimed.is_empty() && b.handed_off == 0);
            assert_eq!(c.handed_off, 1);
            assert_eq!(
                c.claimed
                    .iter()
                    .map(|t| (t.task_id.as_str(), t.attempt))
                    .collect::<Vec<_>>(),
                vec![("d", 1)]
            );
            assert_eq!(b.execution_finished, None);
            assert_eq!(c.execution_finished, None);
            let mid = snapshot(store, id).await;
            assert_eq!(
                task(&mid, "d"),
                &(
                    "d".to_string(),
                    TaskStatus::Running,
                    1,
                    0,
                    0,
                    Some("rc".to_string()),
                    None
                )
            );
            let d_events = events_of(&mid, "d");
            assert_eq!(count(&d_events, "task_ready"), 1, "{d_events:?}");
            assert_eq!(count(&d_events, "task_claimed"), 1, "{d_events:?}");
            for t in ["b", "c"] {
                assert_eq!(
                    count(&events_of(&mid, t), "task_completed"),
                    1,
                    "{:?}",
                    mid.task_events
                );
            }
            assert_eq!(mid.remaining_tasks, 1);

            let d = &c.claimed[0];
            let last = ok(&store.task_finish(completed(d, json!({"d": 4}))).await).clone();
            assert_eq!(last.execution_finished, Some(ExecutionStatus::Completed));
            let end = snapshot(store, id).await;
            assert_eq!(end.status, ExecutionStatus::Completed);
            assert_eq!(end.contexts[FINAL_CONTEXT], json!({"n": 1, "d": 4}));
            assert_eq!(end.contexts["b"], json!({"b": 2}));
            assert_eq!(end.contexts["c"], json!({"c": 3}));
            assert_eq!(
                count(
                    &end.run_events
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                    "execution_completed"
                ),
                1
            );
            vec![mid, end]
        })
    })
    .await;
}

/// A join whose remaining dependencies all finish in one batch (one completed, one failed, one
/// skipped), in two runs of the same workflow at once (same task ids): each run's join is made
/// ready exactly once, in its own run, counting its two failed dependencies.
async fn a_dependent_made_ready_twice_in_one_batch(db: &TestDb) {
    const FAN_IN: &[(&str, &[&str])] =
        &[("x", &[]), ("y", &[]), ("z", &[]), ("j", &["x", "y", "z"])];
    let store = db.open().await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            let first = create(store, new_run("fan_in", FAN_IN, json!({}))).await;
            let second = create(store, new_run("fan_in", FAN_IN, json!({}))).await;
            let one = claim(store, first, &["x", "y", "z"], "r", 30_000).await;
            let two = claim(store, second, &["x", "y", "z"], "r", 30_000).await;
            let mut finishes = Vec::new();
            for run in [&one, &two] {
                finishes.push(completed(by_task(run, "x"), json!({"x": true})));
                finishes.push(finish(
                    by_task(run, "y"),
                    AttemptOutcome::Failed {
                        error: "y broke".to_string(),
                    },
                ));
                finishes.push(finish(
                    by_task(run, "z"),
                    AttemptOutcome::Skipped {
                        reason: "nothing to do".to_string(),
                    },
                ));
            }
            let out = run_finishes(store, mode, finishes).await;
            let ready: Vec<(Uuid, Vec<String>)> = out
                .iter()
                .map(ok)
                .zip([first, first, first, second, second, second])
                .filter(|(r, _)| !r.newly_ready.is_empty())
                .map(|(r, id)| (id, r.newly_ready.clone()))
                .collect();
            assert_eq!(
                ready,
                vec![
                    (first, vec!["j".to_string()]),
                    (second, vec!["j".to_string()])
                ],
                "each run's join readied once, by its run's last finish"
            );
            assert!(ok(&out[2]).newly_ready == ["j"] && ok(&out[5]).newly_ready == ["j"]);
            let mut snaps = Vec::new();
            for id in [first, second] {
                let s = snapshot(store, id).await;
                assert_eq!(
                    task(&s, "j"),
                    &("j".to_string(), TaskStatus::Ready, 0, 0, 2, None, None)
                );
                assert_eq!(count(&events_of(&s, "j"), "task_ready"), 1);
                assert_eq!((s.remaining_tasks, s.failed_tasks), (1, 1));
                assert_eq!(events_of(&s, "y").last(), Some(&"task_failed@1: y broke"));
                assert_eq!(
                    events_of(&s, "z").last(),
                    Some(&"task_skipped@1: nothing to do")
                );
                snaps.push(s);
            }
            // The join runs (it sees its two failed dependencies) and ends the run Failed.
            for id in [first, second] {
                let j = claim(store, id, &["j"], "r", 30_000).await;
                assert_eq!(j[0].failed_deps, 2);
                let r = ok(&store.task_finish(completed(&j[0], json!({"j": 1}))).await).clone();
                assert_eq!(r.execution_finished, Some(ExecutionStatus::Failed));
                let s = snapshot(store, id).await;
                assert_eq!(s.error.as_deref(), Some("task 'y' failed: y broke"));
                assert_eq!(s.contexts[FINAL_CONTEXT], json!({"j": 1}));
                snaps.push(s);
            }
            snaps
        })
    })
    .await;
}

/// A stale attempt's finish (its lease expired and a newer attempt holds the task) shares a
/// batch with live finishes: it is fenced and writes nothing; the live ones commit.
async fn a_fenced_finish_mixed_with_live_ones(db: &TestDb) {
    let store = db.open().await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            let id = create(store, new_run("diamond", DIAMOND, json!({}))).await;
            let a = claim(store, id, &["a"], "r", 30_000).await;
            ok(&store.task_finish(completed(&a[0], json!({"a": 1}))).await);
            let b = claim(store, id, &["b"], "r", 30_000).await;
            // c's first lease runs out and the task is recovered and claimed again.
            let stale = claim(store, id, &["c"], "old", 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let recovered = store.lease_recover_expired(5).await.expect("recover");
            assert_eq!(recovered.requeued, vec![(id, "c".to_string())]);
            let live = claim(store, id, &["c"], "new", 30_000).await;
            assert_eq!((stale[0].attempt, live[0].attempt), (1, 2));

            let out = run_finishes(
                store,
                mode,
                vec![
                    completed(&stale[0], json!({"stale": true})),
                    completed(&b[0], json!({"b": 2})),
                ],
            )
            .await;
            assert_eq!(
                ok(&out[0]),
                &FinishResult {
                    fenced: true,
                    ..FinishResult::default()
                },
                "the stale attempt is fenced"
            );
            assert!(!ok(&out[1]).fenced && ok(&out[1]).newly_ready.is_empty());
            let mid = snapshot(store, id).await;
            assert_eq!(
                task(&mid, "c"),
                &(
                    "c".to_string(),
                    TaskStatus::Running,
                    2,
                    0,
                    0,
                    Some("new".to_string()),
                    None
                ),
                "the live attempt still holds c"
            );
            assert!(!mid.contexts.contains_key("c"), "no stale output");
            assert_eq!(count(&events_of(&mid, "c"), "task_completed"), 0);
            assert_eq!(task(&mid, "d").1, TaskStatus::NotStarted);
            assert_eq!(task(&mid, "d").3, 1, "only b counted down d");
            assert_eq!(mid.remaining_tasks, 2);

            let r = ok(&store
                .task_finish(completed(&live[0], json!({"c": 3})))
                .await)
            .clone();
            assert_eq!(r.newly_ready, vec!["d"]);
            let end = snapshot(store, id).await;
            assert_eq!(end.contexts["c"], json!({"c": 3}));
            vec![mid, end]
        })
    })
    .await;
}

/// A success, a retry, a failure and a skip in one batch: each is recorded as alone, the retry
/// puts its task back to Ready with its error, and the run's counters count each once.
async fn retries_and_failures_mixed_with_successes(db: &TestDb) {
    const ROOTS: &[(&str, &[&str])] = &[
        ("ok", &[]),
        ("again", &[]),
        ("bad", &[]),
        ("skip", &[]),
        ("join", &["ok", "again"]),
    ];
    let store = db.open().await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            let id = create(store, new_run("mixed", ROOTS, json!({"in": 0}))).await;
            let c = claim(store, id, &["ok", "again", "bad", "skip"], "r", 30_000).await;
            let out = run_finishes(
                store,
                mode,
                vec![
                    completed(by_task(&c, "ok"), json!({"ok": 1})),
                    finish(
                        by_task(&c, "again"),
                        AttemptOutcome::Retry {
                            error: "flaky".to_string(),
                            retry_at: 0,
                        },
                    ),
                    finish(
                        by_task(&c, "bad"),
                        AttemptOutcome::Failed {
                            error: "boom".to_string(),
                        },
                    ),
                    finish(
                        by_task(&c, "skip"),
                        AttemptOutcome::Skipped {
                            reason: "off".to_string(),
                        },
                    ),
                ],
            )
            .await;
            for r in &out {
                let r = ok(r);
                assert!(!r.fenced && r.newly_ready.is_empty() && r.execution_finished.is_none());
            }
            let mid = snapshot(store, id).await;
            assert_eq!(
                mid.tasks,
                vec![
                    ("ok".into(), TaskStatus::Completed, 1, 0, 0, None, None),
                    (
                        "again".into(),
                        TaskStatus::Ready,
                        1,
                        0,
                        0,
                        None,
                        Some("flaky".into())
                    ),
                    (
                        "bad".into(),
                        TaskStatus::Failed,
                        1,
                        0,
                        0,
                        None,
                        Some("boom".into())
                    ),
                    (
                        "skip".into(),
                        TaskStatus::Skipped,
                        1,
                        0,
                        0,
                        None,
                        Some("off".into())
                    ),
                    ("join".into(), TaskStatus::NotStarted, 0, 1, 0, None, None),
                ]
            );
            assert_eq!((mid.remaining_tasks, mid.failed_tasks), (2, 1));
            assert_eq!(
                events_of(&mid, "again").last(),
                Some(&"task_retry_scheduled@1: attempt 1 failed: flaky")
            );
            assert_eq!(mid.contexts["ok"], json!({"ok": 1}));

            let again = claim(store, id, &["again"], "r", 30_000).await;
            assert_eq!(again[0].attempt, 2);
            let r = ok(&store
                .task_finish(completed(&again[0], json!({"again": 2})))
                .await)
            .clone();
            assert_eq!(r.newly_ready, vec!["join"]);
            let join = claim(store, id, &["join"], "r", 30_000).await;
            let r = ok(&store
                .task_finish(completed(&join[0], json!({"join": 3})))
                .await)
            .clone();
            assert_eq!(r.execution_finished, Some(ExecutionStatus::Failed));
            let end = snapshot(store, id).await;
            assert_eq!(end.error.as_deref(), Some("task 'bad' failed: boom"));
            assert_eq!(
                end.contexts[FINAL_CONTEXT],
                json!({"in": 0, "join": 3}),
                "input merged with the leaves' outputs (failed and skipped leaves have none)"
            );
            vec![mid, end]
        })
    })
    .await;
}

/// Many finishes in one batch: one commit for all of them (and on a store that merges, one
/// merged write), each with its own correct answer.
async fn one_commit_holds_every_finish(db: &TestDb) {
    const N: usize = 40;
    let store = db.open().await;
    let mut ids = Vec::new();
    let mut claimed = Vec::new();
    for i in 0..N {
        let id = create(&store, new_run("single", &[("only", &[])], json!({"i": i}))).await;
        claimed.push(claim(&store, id, &["only"], "r", 30_000).await.remove(0));
        ids.push(id);
    }
    let before = store.stats();
    let out = run_finishes(
        &store,
        Mode::Batched,
        claimed
            .iter()
            .enumerate()
            .map(|(i, t)| completed(t, json!({"out": i})))
            .collect(),
    )
    .await;
    let after = store.stats();
    assert_eq!(after.merge_fallbacks, before.merge_fallbacks, "no fallback");
    for (i, (r, id)) in out.iter().zip(&ids).enumerate() {
        assert_eq!(ok(r).execution_finished, Some(ExecutionStatus::Completed));
        let s = snapshot(&store, *id).await;
        assert_eq!(s.contexts[FINAL_CONTEXT], json!({"i": i, "out": i}));
        assert_eq!(
            s.run_events,
            vec![
                "execution_created",
                "execution_started",
                "execution_completed"
            ],
        );
    }
}

/// The same task finished twice in one batch (a stale attempt and the live one): the merged
/// write refuses a batch that finishes a task twice, so PostgreSQL writes the batch again one
/// by one; every finish gets the answer it gets alone.
async fn fallback_when_a_batch_finishes_a_task_twice(db: &TestDb) {
    let store = db.open().await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            let id = create(store, new_run("diamond", DIAMOND, json!({}))).await;
            let a = claim(store, id, &["a"], "r", 30_000).await;
            ok(&store.task_finish(completed(&a[0], json!({"a": 1}))).await);
            let b = claim(store, id, &["b"], "r", 30_000).await;
            let stale = claim(store, id, &["c"], "old", 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.lease_recover_expired(5).await.expect("recover");
            let live = claim(store, id, &["c"], "new", 30_000).await;
            let before = store.stats();
            let out = run_finishes(
                store,
                mode,
                vec![
                    completed(&live[0], json!({"c": "live"})),
                    completed(&b[0], json!({"b": 2})),
                    completed(&stale[0], json!({"c": "stale"})),
                ],
            )
            .await;
            let after = store.stats();
            if mode == Mode::Batched && store.capabilities().merged_writes {
                assert_eq!(
                    after.merge_fallbacks - before.merge_fallbacks,
                    3,
                    "every finish was written again alone"
                );
            } else {
                assert_eq!(after.merge_fallbacks, before.merge_fallbacks);
            }
            assert!(!ok(&out[0]).fenced && ok(&out[0]).newly_ready.is_empty());
            assert_eq!(ok(&out[1]).newly_ready, vec!["d"]);
            assert!(ok(&out[2]).fenced, "the stale attempt is fenced");
            let s = snapshot(store, id).await;
            assert_eq!(s.contexts["c"], json!({"c": "live"}));
            assert_eq!(count(&events_of(&s, "c"), "task_completed"), 1);
            assert_eq!(count(&events_of(&s, "d"), "task_ready"), 1);
            vec![s]
        })
    })
    .await;
}

/// Makes the database refuse any output containing `poison` (a trigger), as a constraint
/// would: a write the database refuses, not one the store refuses.
async fn poison_outputs(db: &TestDb) {
    const MESSAGE: &str = "poisoned output refused";
    match db.backend {
        common::Backend::Sqlite => {
            use diesel::Connection;
            use diesel::connection::SimpleConnection;
            let path = db.url.trim_start_matches("sqlite://");
            let mut conn = diesel::SqliteConnection::establish(path).expect("connect");
            conn.batch_execute(&format!(
                "CREATE TRIGGER poison BEFORE INSERT ON contexts WHEN NEW.data LIKE '%poison%' \
                 BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            ))
            .expect("create the trigger");
        }
        common::Backend::Postgres => {
            let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let driver = tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "SET search_path TO \"{schema}\"; \
                     CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                       IF NEW.data LIKE '%poison%' THEN RAISE EXCEPTION '{MESSAGE}'; END IF; \
                       RETURN NEW; END $$; \
                     CREATE TRIGGER poison BEFORE INSERT ON contexts \
                       FOR EACH ROW EXECUTE FUNCTION poison()",
                    schema = db.schema
                ))
                .await
                .expect("create the trigger");
            drop(client);
            let _ = driver.await;
        }
    }
}

/// One finish of a batch is refused by the database: on PostgreSQL the merged write fails as a
/// whole and every finish is written again alone. The refused finish gets its own error and
/// leaves nothing behind (its attempt still holds the task, to finish again); the others
/// commit, the same as on SQLite.
async fn fallback_when_the_merged_write_fails(db: &TestDb) {
    let store = db.open().await;
    poison_outputs(db).await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            let id = create(store, new_run("diamond", DIAMOND, json!({}))).await;
            let a = claim(store, id, &["a"], "r", 30_000).await;
            ok(&store.task_finish(completed(&a[0], json!({"a": 1}))).await);
            let bc = claim(store, id, &["b", "c"], "r", 30_000).await;
            let before = store.stats();
            let out = run_finishes(
                store,
                mode,
                vec![
                    completed(by_task(&bc, "b"), json!({"b": "poison"})),
                    completed(by_task(&bc, "c"), json!({"c": 3})),
                ],
            )
            .await;
            let after = store.stats();
            if mode == Mode::Batched && store.capabilities().merged_writes {
                assert_eq!(after.merge_fallbacks - before.merge_fallbacks, 2);
            }
            let refused = out[0].as_ref().expect_err("the poisoned output is refused");
            assert!(
                refused.to_string().contains("poisoned output refused"),
                "{refused}"
            );
            let c = ok(&out[1]);
            assert!(!c.fenced && c.newly_ready.is_empty());
            let mid = snapshot(store, id).await;
            assert_eq!(
                task(&mid, "b"),
                &(
                    "b".to_string(),
                    TaskStatus::Running,
                    1,
                    0,
                    0,
                    Some("r".to_string()),
                    None
                ),
                "the refused finish left nothing behind"
            );
            assert!(!mid.contexts.contains_key("b"));
            assert_eq!(count(&events_of(&mid, "b"), "task_completed"), 0);
            assert_eq!(task(&mid, "c").1, TaskStatus::Completed);
            assert_eq!(task(&mid, "d").3, 1);

            // The same attempt finishes again, cleanly.
            let r = ok(&store
                .task_finish(completed(by_task(&bc, "b"), json!({"b": 2})))
                .await)
            .clone();
            assert_eq!(r.newly_ready, vec!["d"]);
            vec![mid, snapshot(store, id).await]
        })
    })
    .await;
}

/// A claim and a finish of the same run share a batch, the claim first: the claim takes what
/// was ready before the batch (not what the finish readies), and the run's events tell the
/// same story in the same order as when the two commit one after the other.
async fn a_claim_and_a_finish_share_a_batch(db: &TestDb) {
    const TWO_ROOTS: &[(&str, &[&str])] = &[("r1", &[]), ("r2", &[]), ("d", &["r1"])];
    let store = db.open().await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            // A workflow name of its own per run, so the claim sees only this run.
            let name = format!("two_roots_{mode:?}");
            let id = create(store, new_run(&name, TWO_ROOTS, json!({}))).await;
            let r1 = claim(store, id, &["r1"], "r", 30_000).await;
            let out = run_batch(
                store,
                mode,
                vec![
                    Op::Claim(ClaimRequest {
                        owner: "other".to_string(),
                        lease_ms: 30_000,
                        limit: 10,
                        workflows: Some(vec![name.clone()]),
                        only: None,
                    }),
                    Op::Finish(completed(&r1[0], json!({"r1": 1}))),
                ],
            )
            .await;
            match &out[0] {
                Done::Claimed(Ok(tasks)) => assert_eq!(
                    tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
                    vec!["r2"],
                    "the claim saw the state before the finish"
                ),
                other => panic!("{other:?}"),
            }
            match &out[1] {
                Done::Finished(Ok(r)) => assert_eq!(r.newly_ready, vec!["d"]),
                other => panic!("{other:?}"),
            }
            let events: Vec<String> = store
                .event_list(id, 0, 1000)
                .await
                .expect("events")
                .iter()
                .map(|e| format!("{}:{}", e.kind, e.task_id.as_deref().unwrap_or("")))
                .collect();
            assert_eq!(
                events,
                vec![
                    "execution_created:",
                    "task_ready:r1",
                    "task_ready:r2",
                    "execution_started:",
                    "task_claimed:r1",
                    "task_claimed:r2",
                    "task_completed:r1",
                    "task_ready:d",
                ],
                "the run's events in the order of what happened"
            );
            vec![snapshot(store, id).await]
        })
    })
    .await;
}

/// Two finishes in one batch each refill their freed slots with other ready work of the
/// workflow: every ready task is claimed once, each finish gets what it asked for, and each
/// claim has one event.
async fn refills_share_out_the_ready_work(db: &TestDb) {
    const POOL: &[(&str, &[&str])] = &[
        ("p1", &[]),
        ("p2", &[]),
        ("p3", &[]),
        ("p4", &[]),
        ("p5", &[]),
        ("p6", &[]),
    ];
    let store = db.open().await;
    same_both_ways(&store, |store, mode| {
        Box::pin(async move {
            let name = format!("pool_{mode:?}");
            let id = create(store, new_run(&name, POOL, json!({}))).await;
            let running = claim(store, id, &["p1", "p2"], "r", 30_000).await;
            let refill = |f: TaskFinish| TaskFinish {
                handoff: Some(Handoff {
                    owner: "r".to_string(),
                    lease_ms: 30_000,
                    limit: 2,
                    refill: Some(vec![name.clone()]),
                }),
                ..f
            };
            let out = run_finishes(
                store,
                mode,
                vec![
                    refill(completed(by_task(&running, "p1"), json!({"p1": 1}))),
                    refill(completed(by_task(&running, "p2"), json!({"p2": 2}))),
                ],
            )
            .await;
            let mut all: Vec<String> = Vec::new();
            for r in &out {
                let r = ok(r);
                assert_eq!(r.handed_off, 0);
                assert_eq!(
                    r.claimed.len(),
                    2,
                    "each finish refilled both its slots: {r:?}"
                );
                all.extend(r.claimed.iter().map(|t| t.task_id.clone()));
            }
            all.sort();
            assert_eq!(
                all,
                vec!["p3", "p4", "p5", "p6"],
                "each ready task claimed once"
            );
            let s = snapshot(store, id).await;
            for t in ["p3", "p4", "p5", "p6"] {
                assert_eq!(count(&events_of(&s, t), "task_claimed"), 1);
                assert_eq!(task(&s, t).1, TaskStatus::Running);
            }
            // Which finish took which task may differ; what the rows say may not.
            vec![s]
        })
    })
    .await;
}

conformance!(
    diamond_branches_finish_in_one_batch,
    a_dependent_made_ready_twice_in_one_batch,
    a_fenced_finish_mixed_with_live_ones,
    retries_and_failures_mixed_with_successes,
    one_commit_holds_every_finish,
    fallback_when_a_batch_finishes_a_task_twice,
    fallback_when_the_merged_write_fails,
    a_claim_and_a_finish_share_a_batch,
    refills_share_out_the_ready_work,
);
