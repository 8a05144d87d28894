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
use cloacina::{EngineError, ExecutionResult, Runner, RunnerConfig};
use common::{Backend, TestDb};
use futures::StreamExt;

/// Body runs per input `n`.
type Runs = Arc<Mutex<HashMap<i64, usize>>>;

/// Runs workflow `simple` with input `n`.
async fn execute(runner: &Runner, n: i64) -> (i64, Result<ExecutionResult, EngineError>) {
    let input = Context::from_value(serde_json::json!({ "n": n })).expect("ctx");
    (n, runner.execute("simple", input).await)
}

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
    disturb: impl std::future::Future<Output = Vec<(i64, Result<ExecutionResult, EngineError>)>>,
) -> Vec<(uuid::Uuid, i64)> {
    let runs = futures::stream::iter(0..count as i64)
        .map(|n| {
            let runner = runner.clone();
            async move { execute(&runner, n).await }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>();
    let (mut results, extra) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(runs, disturb)
    })
    .await
    .expect("the run did not finish within 120 s");
    results.extend(extra);
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
        assert_eq!(
            count(event_kind::EXECUTION_COMPLETED),
            1,
            "{id}: {events:?}"
        );
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

/// An outage of `length`: every connection of `app` is terminated as soon as it appears.
/// Returns how many were terminated.
async fn outage(app: &str, length: Duration) -> i64 {
    let end = tokio::time::Instant::now() + length;
    let mut n = 0;
    while tokio::time::Instant::now() < end {
        n += terminate(app).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

/// A store on the test's schema whose connections carry an `application_name` of their own,
/// so the test terminates them and nobody else's. Returns the store and that name.
async fn named_store(db: &TestDb) -> (Store, String) {
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
    (store, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rides_through_terminated_connections() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (store, app) = named_store(&db).await;
    let runs: Runs = Arc::default();
    let runner = Runner::start(store.clone(), config())
        .await
        .expect("runner");
    runner.register(simple(runs.clone()));

    // Twice every connection at once, then an outage of a second (every reconnect is cut).
    let disturb = async {
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let n = if i < 2 {
                terminate(&app).await
            } else {
                outage(&app, Duration::from_secs(1)).await
            };
            println!("terminated {n} connections");
            assert!(n > 0, "the store's connections are named {app}");
        }
        Vec::new()
    };
    let ids = run_all(&runner, PG_RUNS, disturb).await;
    assert_exactly_once(&store, &ids, &runs).await;
    runner.shutdown().await.expect("shutdown");
    store.close().await;
    db.cleanup().await;
}

const SQLITE_RUNS: usize = 1000;
/// Runs submitted while the database is locked.
const EXTRA_RUNS: usize = 20;

/// SQLite's busy timeout in the store (a BEGIN waits this long for another process's lock).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rides_through_a_write_lock_held_past_the_busy_timeout() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let store = db.open().await;
    let runs: Runs = Arc::default();
    let runner = Runner::start(store.clone(), config())
        .await
        .expect("runner");
    runner.register(simple(runs.clone()));
    let path = db
        .url
        .strip_prefix("sqlite://")
        .expect("a file URL")
        .to_string();

    // Another connection (as another process would) takes the write lock mid-run and keeps
    // it past the store's busy timeout, so the writer's BEGIN fails with SQLITE_BUSY.
    let started = runs.clone();
    let disturb = async {
        while started.lock().unwrap_or_else(|p| p.into_inner()).len() < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (locked, is_locked) = tokio::sync::oneshot::channel();
        let held = tokio::task::spawn_blocking(move || {
            use diesel::Connection;
            use diesel::connection::SimpleConnection;
            let mut conn = diesel::SqliteConnection::establish(&path).expect("second connection");
            // The busy writer leaves the lock free only between its commits: keep trying.
            conn.batch_execute("PRAGMA busy_timeout = 50")
                .expect("pragma");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while let Err(e) = conn.batch_execute("BEGIN EXCLUSIVE") {
                assert!(std::time::Instant::now() < deadline, "write lock: {e}");
            }
            let since = std::time::Instant::now();
            let _ = locked.send(());
            std::thread::sleep(SQLITE_BUSY_TIMEOUT + Duration::from_millis(1500));
            conn.batch_execute("COMMIT").expect("release");
            since.elapsed()
        });
        is_locked.await.expect("locked");
        // Submitted while the lock is held: their creations wait it out.
        let extra = futures::future::join_all(
            (0..EXTRA_RUNS).map(|i| execute(&runner, (SQLITE_RUNS + i) as i64)),
        )
        .await;
        let held = held.await.expect("lock holder");
        let ran = started.lock().unwrap_or_else(|p| p.into_inner()).len();
        println!("held the write lock for {held:?}; {ran} bodies had run by then");
        assert!(ran < SQLITE_RUNS, "the lock was taken mid-run");
        extra
    };
    let ids = run_all(&runner, SQLITE_RUNS, disturb).await;
    let health = store.write_health();
    assert!(health.is_none(), "commits succeed again: {health:?}");
    assert_exactly_once(&store, &ids, &runs).await;
    runner.shutdown().await.expect("shutdown");
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cron_keeps_firing_each_instant_once_through_outages() {
    use cloacina::schedule::cron::{CronConfig, CronScheduler};
    use cloacina::store::{ExecutionFilter, INPUT_CONTEXT};
    use cloacina::workflow::CatchUp;
    use cloacina::workflow::package::CronDescription;

    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (store, app) = named_store(&db).await;
    let runner = Runner::start(store.clone(), config())
        .await
        .expect("runner");
    let tock: Arc<dyn Task> = Arc::new(FnTask::new(TaskSpec::new("tock"), |_: &mut Context| {
        Box::pin(async { Ok(()) })
    }));
    runner.register(Workflow::new("tick", None, vec![tock]).expect("valid"));
    let cron = CronScheduler::new(
        store.clone(),
        runner.clone(),
        CronConfig {
            tick: Duration::from_millis(25),
            ..CronConfig::default()
        },
    );
    cron.schedules_write(
        "pkg",
        "public",
        &[CronDescription {
            name: "every_second".to_string(),
            workflow: "tick".to_string(),
            expression: "*/1 * * * * *".to_string(),
            timezone: "UTC".to_string(),
            // No instant may be dropped, even one that falls into an outage.
            catch_up: CatchUp::RunAll { max: 100 },
        }],
    )
    .await
    .expect("schedule");
    cron.start();
    let mut terminated_at = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let n = outage(&app, Duration::from_millis(1500)).await;
        assert!(n > 0, "the store's connections are named {app}");
        terminated_at = cloacina::store::now_ms();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cron.stop().await;

    // Each instant fired once, one execution each, without a gap, and after the last outage.
    let fires = store.cron_fire_list(None, 1000).await.expect("fires");
    let mut instants: Vec<i64> = fires.iter().map(|f| f.instant).collect();
    instants.sort();
    let before = instants.len();
    instants.dedup();
    assert_eq!(before, instants.len(), "an instant fired twice: {fires:?}");
    assert!(instants.len() >= 5, "fired {} instants", instants.len());
    for w in instants.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "an instant was lost: {instants:?}");
    }
    let last = instants.last().copied().unwrap_or_default();
    assert!(last > terminated_at, "cron fired after the last outage");
    let executions = store
        .execution_list(ExecutionFilter {
            limit: Some(10_000),
            ..ExecutionFilter::default()
        })
        .await
        .expect("executions");
    assert_eq!(executions.len(), fires.len(), "one execution per fire");
    for f in &fires {
        let input = store
            .context_get(f.execution_id, INPUT_CONTEXT)
            .await
            .expect("input")
            .expect("the fired execution exists");
        assert!(input.get_value("cron").is_some());
    }
    runner.shutdown().await.expect("shutdown");
    store.close().await;
    db.cleanup().await;
}

/// Transient errors are retried, others fail fast: the classification callers rely on.
#[test]
fn transient_errors_are_told_apart() {
    use cloacina::StoreError;
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    let db = |kind, message: &str| {
        StoreError::from(E::DatabaseError(kind, Box::new(message.to_string())))
    };
    for transient in [
        db(K::Unknown, "database is locked"),
        db(K::Unknown, "database table is locked"),
        db(
            K::Unknown,
            "terminating connection due to administrator command",
        ),
        db(K::Unknown, "the database system is starting up"),
        db(K::Unknown, "deadlock detected"),
        db(K::UnableToSendCommand, "connection closed"),
        db(
            K::ClosedConnection,
            "server closed the connection unexpectedly",
        ),
        db(K::SerializationFailure, "could not serialize access"),
        StoreError::Commit("connection reset by peer".into()),
    ] {
        assert!(transient.is_transient(), "{transient} is transient");
    }
    for lasting in [
        db(K::Unknown, "database or disk is full"),
        db(K::Unknown, "database disk image is malformed"),
        db(K::Unknown, "syntax error at or near \"SELEC\""),
        db(K::UniqueViolation, "duplicate key value"),
        db(
            K::ReadOnlyTransaction,
            "attempt to write a readonly database",
        ),
        StoreError::Commit("database error: database or disk is full".into()),
        StoreError::ExecutionNotFound(uuid::Uuid::nil()),
    ] {
        assert!(!lasting.is_transient(), "{lasting} is not transient");
    }
}
