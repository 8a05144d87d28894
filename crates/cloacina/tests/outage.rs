//! Database outages are weather: a run rides through PostgreSQL connections terminated under
//! it (repeatedly) and through a SQLite database locked by another process for longer than
//! the busy timeout. Every execution must still complete exactly once: one row per submitted
//! run, each task's result committed once (one completion event), no body run twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloacina::store::{ExecutionStatus, Store, StoreOptions, event_kind};
use cloacina::workflow::{Context, FnTask, Task, TaskSpec, Workflow};
use cloacina::{Runner, RunnerConfig};
use common::{Backend, TestDb};
use futures::StreamExt;

/// Body runs per input `n`.
type Runs = Arc<Mutex<HashMap<i64, usize>>>;

/// The `simple` benchmark shape: one task, which records that it ran.
fn simple(runs: Runs) -> Workflow {
    let body = FnTask::new(TaskSpec::new("a"), move |ctx: &mut Context| {
        let runs = runs.clone();
        Box::pin(async move {
            let n: i64 = ctx.get("n")?;
            *runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(n)
                .or_default() += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
            ctx.set("a", n)?;
            Ok(())
        })
    });
    Workflow::new("simple", None, vec![Arc::new(body) as Arc<dyn Task>]).expect("valid")
}

fn config() -> RunnerConfig {
    RunnerConfig {
        concurrency: 16,
        // Long enough that no lease expires during an outage: a re-run would then be a bug.
        lease: Duration::from_secs(30),
        recovery_interval: Duration::from_secs(1),
        poll_interval: Duration::from_millis(200),
        ..RunnerConfig::default()
    }
}

/// Runs `count` workflows through `runner.execute` (many at once) while `disturb` runs; every
/// one must complete. Returns the execution ids.
async fn run_all(
    runner: &Runner,
    count: usize,
    disturb: impl std::future::Future<Output = ()>,
) -> Vec<(uuid::Uuid, i64)> {
    let runs = futures::stream::iter(0..count as i64)
        .map(|n| {
            let runner = runner.clone();
            async move {
                let input = Context::from_value(serde_json::json!({ "n": n })).expect("ctx");
                let result = runner.execute("simple", input).await;
                (n, result)
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>();
    let (results, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(runs, disturb)
    })
    .await
    .expect("the run did not finish within 120 s");
    let mut ids = Vec::with_capacity(count);
    for (n, result) in results {
        let result = result.unwrap_or_else(|e| panic!("execution of n={n} failed: {e}"));
        assert_eq!(
            result.status,
            ExecutionStatus::Completed,
            "n={n}: {:?}",
            result.error
        );
        let fin = result.context.expect("final context");
        assert_eq!(fin.get::<i64>("a").expect("output"), n);
        ids.push((result.id, n));
    }
    ids
}

/// Exactly once: one execution row per submitted run, each with its one task completed at
/// its first attempt, one completion event per task and per execution, each body run once.
async fn assert_exactly_once(store: &Store, ids: &[(uuid::Uuid, i64)], runs: &Runs) {
    let all = store
        .execution_count(ExecutionStatus::ALL)
        .await
        .expect("count");
    assert_eq!(
        all as usize,
        ids.len(),
        "one execution row per submitted run"
    );
    for (id, n) in ids {
        let tasks = store.task_list(*id).await.expect("tasks");
        assert_eq!(tasks.len(), 1);
        let events = store.event_list(*id, 0, 10_000).await.expect("events");
        let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
        assert_eq!(count(event_kind::TASK_COMPLETED), 1, "{id}: {events:?}");
        assert_eq!(count(event_kind::EXECUTION_COMPLETED), 1, "{id}: {events:?}");
        let recovered = count(event_kind::TASK_RECOVERED);
        let ran = runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(n)
            .copied()
            .unwrap_or(0);
        assert_eq!(
            ran,
            1 + recovered,
            "body of n={n} ran {ran} times with {recovered} recoveries"
        );
        assert_eq!(recovered, 0, "{id}: no lease may expire during the outage");
    }
}

/// Terminates every connection whose `application_name` is `app`, from a connection of our own;
/// returns how many were terminated.
async fn terminate(app: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(&common::pg_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    let driver = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&app],
        )
        .await
        .expect("terminate");
    drop(client);
    let _ = driver.await;
    row.get(0)
}

const PG_RUNS: usize = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rides_through_terminated_connections() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    // Name this store's connections so the test terminates them and nobody else's.
    let app = format!("cloacina_outage_{}", &db.schema[2..14]);
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}application_name={app}", db.url);
    let store = Store::open_with(
        &url,
        StoreOptions {
            schema: db.schema.clone(),
            ..StoreOptions::default()
        },
    )
    .await
    .expect("open");
    let runs: Runs = Arc::default();
    let runner = Runner::start(store.clone(), config()).await.expect("runner");
    runner.register(simple(runs.clone()));

    let disturb = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let n = terminate(&app).await;
            println!("terminated {n} connections");
            assert!(n > 0, "the store's connections are named {app}");
        }
    };
    let ids = run_all(&runner, PG_RUNS, disturb).await;
    assert_exactly_once(&store, &ids, &runs).await;
    runner.shutdown().await.expect("shutdown");
    store.close().await;
    db.cleanup().await;
}
