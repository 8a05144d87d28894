//! The store's own failure handling, with the database made to fail for real: write health
//! while commits fail, and errors that name the database. Also the merged write's statement
//! count, which must not grow with the batch.

use diesel_async::SimpleAsyncConnection;
use uuid::Uuid;

use super::{Backend, NewExecution, NewTask, Store, StoreError, StoreOptions};
use crate::workflow::Context;

/// A one-task run whose input holds `bytes` of text (so it needs that much new space).
fn run(bytes: usize) -> NewExecution {
    let input =
        Context::from_value(serde_json::json!({"payload": "x".repeat(bytes)})).expect("an object");
    NewExecution {
        id: Uuid::now_v7(),
        workflow_name: "health".to_string(),
        workflow_version: "v1".to_string(),
        package_id: None,
        input,
        tasks: vec![NewTask {
            task_id: "only".to_string(),
            position: 0,
            dependents: Vec::new(),
            dependencies: 0,
            max_attempts: 1,
        }],
        dedup_key: None,
        cron: None,
    }
}

/// Runs `sql` on the SQLite writer's connection, inside its next transaction.
async fn on_sqlite_writer(store: &Store, sql: &'static str) {
    let Backend::Sqlite(s) = &store.inner.backend else {
        panic!("a SQLite store");
    };
    s.write(move |c| Box::pin(async move { c.batch_execute(sql).await.map_err(StoreError::from) }))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs `sql` on a PostgreSQL pool connection (pinned to the store's schema).
async fn on_postgres_pool(store: &Store, sql: &'static str) {
    let Backend::Postgres(p) = &store.inner.backend else {
        panic!("a PostgreSQL store");
    };
    p.read(move |c| Box::pin(async move { c.batch_execute(sql).await.map_err(StoreError::from) }))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_health_follows_a_full_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("full.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    store.execution_create(run(10)).await.expect("fits");
    assert_eq!(store.write_health(), None, "commits succeed");
    let refused = store
        .execution_pause(Uuid::now_v7())
        .await
        .expect_err("no such execution");
    assert!(
        matches!(refused, StoreError::ExecutionNotFound(_)),
        "{refused}"
    );
    assert_eq!(
        store.write_health(),
        None,
        "a write refused on its merits is no database failure"
    );

    // The writer may not grow the file past its current size: every write that needs a new
    // page fails with SQLITE_FULL, as on a full disk.
    on_sqlite_writer(&store, "PRAGMA max_page_count = 1").await;
    let err = store
        .execution_create(run(200_000))
        .await
        .expect_err("the database is full");
    let text = err.to_string();
    let name = path.display().to_string();
    assert!(
        text.contains("full") && text.contains(&name),
        "the error says what and where: {text}"
    );
    assert!(err.is_database_failure(), "{err:?}");
    let failure = store.write_health().expect("commits are failing");
    assert!(
        failure.message.contains("full") && failure.message.contains(&name),
        "{failure:?}"
    );
    assert!(failure.since > 0 && failure.failures == 1, "{failure:?}");
    store
        .execution_create(run(200_000))
        .await
        .expect_err("still full");
    let again = store.write_health().expect("still failing");
    assert_eq!(again.since, failure.since, "the streak keeps its start");
    assert_eq!(again.failures, 2);
    assert!(again.last >= failure.last);

    // Room again: the next commit ends the streak.
    on_sqlite_writer(&store, "PRAGMA max_page_count = 1073741823").await;
    store
        .execution_create(run(200_000))
        .await
        .expect("fits again");
    assert_eq!(store.write_health(), None, "healthy once a commit succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_open_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("damaged.db");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write garbage");
    let err = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect_err("not a database");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("not a database"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_write_health_follows_failing_commits() {
    let url = std::env::var("CLOACINA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let options = StoreOptions {
        schema: format!("t_{}", Uuid::new_v4().simple()),
        ..StoreOptions::default()
    };
    let store = match Store::open_with(&url, options.clone()).await {
        Ok(s) => s,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("PostgreSQL is required under CI=true: {e}")
        }
        Err(e) => {
            eprintln!("*** SKIPPING PostgreSQL test: {e} ***");
            return;
        }
    };
    let first = store.execution_create(run(10)).await.expect("commits");
    assert_eq!(store.write_health(), None);

    // A deferred constraint trigger that raises while `break_commits` has a row: the writes
    // succeed, their COMMIT fails, as a commit fails on a full disk.
    on_postgres_pool(
        &store,
        "CREATE TABLE break_commits (why text); \
         CREATE FUNCTION break_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF EXISTS (SELECT 1 FROM break_commits) THEN \
             RAISE EXCEPTION 'could not extend file: No space left on device'; \
           END IF; RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER break_commit AFTER INSERT OR UPDATE ON workflow_executions \
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION break_commit(); \
         INSERT INTO break_commits VALUES ('test')",
    )
    .await;
    let err = store
        .execution_create(run(10))
        .await
        .expect_err("the commit fails");
    let text = err.to_string();
    assert!(
        text.contains("No space left on device") && text.contains(&options.schema),
        "{text}"
    );
    let failure = store.write_health().expect("commits are failing");
    assert!(
        failure.message.contains("No space left on device"),
        "{failure:?}"
    );
    // A write outside the merged batch statements fails the same way.
    store
        .execution_pause(first.id)
        .await
        .expect_err("still failing");
    assert_eq!(store.write_health().map(|f| f.since), Some(failure.since));

    on_postgres_pool(&store, "DELETE FROM break_commits").await;
    store
        .execution_create(run(10))
        .await
        .expect("commits again");
    assert_eq!(store.write_health(), None, "healthy once a commit succeeds");
    store.schema_drop().await.expect("drop the test schema");
}

/// Another connection holds the write lock (another process, a backup): the writer cannot
/// begin, says which file is locked, and health shows it until the lock is gone. Then the
/// writer's connection is made read-only: the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_and_read_only_databases_are_named() {
    use diesel::Connection;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("locked.db");
    let name = path.display().to_string();
    let store = Store::open(&format!("sqlite://{name}"))
        .await
        .expect("open");
    // Wait 100 ms for a lock instead of 15 s, to keep the test short.
    on_sqlite_writer(&store, "PRAGMA busy_timeout = 100").await;

    let mut other = diesel::SqliteConnection::establish(&name).expect("second connection");
    diesel::connection::SimpleConnection::batch_execute(&mut other, "BEGIN EXCLUSIVE")
        .expect("take the write lock");
    let err = store.execution_create(run(10)).await.expect_err("locked");
    let text = err.to_string();
    assert!(text.contains(&name) && text.contains("locked"), "{text}");
    let failure = store.write_health().expect("degraded while locked");
    assert!(
        failure.message.contains(&name) && failure.message.contains("locked"),
        "{failure:?}"
    );
    diesel::connection::SimpleConnection::batch_execute(&mut other, "ROLLBACK")
        .expect("release the lock");
    drop(other);
    store.execution_create(run(10)).await.expect("unlocked");
    assert_eq!(store.write_health(), None);

    on_sqlite_writer(&store, "PRAGMA query_only = ON").await;
    let err = store
        .execution_create(run(10))
        .await
        .expect_err("read-only");
    let text = err.to_string();
    assert!(text.contains(&name) && text.contains("readonly"), "{text}");
    let failure = store.write_health().expect("degraded while read-only");
    assert!(failure.message.contains(&name), "{failure:?}");
    // (No way back here: a read-only connection cannot even begin the transaction that would
    // turn `query_only` off.)
    store.close().await;
}

/// The merged write's statement count does not grow with the batch: the same for one finish
/// as for many (PostgreSQL). Counted on a connection of the test's own, with the merged write
/// run inside a transaction that is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_merged_finishes_take_a_fixed_number_of_statements() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use diesel::connection::InstrumentationEvent;
    use diesel_async::AsyncConnection;

    use super::pg_batch::{Write, write_many};
    use super::{AttemptOutcome, ClaimRequest, Handoff, TaskFinish, now_ms};

    let url = std::env::var("CLOACINA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let options = StoreOptions {
        schema: format!("t_{}", Uuid::new_v4().simple()),
        ..StoreOptions::default()
    };
    let store = match Store::open_with(&url, options.clone()).await {
        Ok(s) => s,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("PostgreSQL is required under CI=true: {e}")
        }
        Err(e) => {
            eprintln!("*** SKIPPING PostgreSQL test: {e} ***");
            return;
        }
    };
    let claim = |owner: &str| ClaimRequest {
        owner: owner.to_string(),
        lease_ms: 30_000,
        limit: 1000,
        workflows: None,
        only: None,
    };
    // `n` runs of a -> (b, c) -> d with `a` done and `b`, `c` running, or `n` one-task runs
    // with their task running; returns the finishes that would complete the running tasks.
    let prepare = async |n: usize, diamond: bool| -> Vec<(Write, i64)> {
        let mut finishes = Vec::new();
        for _ in 0..n {
            let mut new = run(1);
            if diamond {
                new.tasks = ["a", "b", "c", "d"]
                    .iter()
                    .enumerate()
                    .map(|(i, t)| NewTask {
                        task_id: t.to_string(),
                        position: i as i32,
                        dependents: match *t {
                            "a" => vec!["b".to_string(), "c".to_string()],
                            "b" | "c" => vec!["d".to_string()],
                            _ => Vec::new(),
                        },
                        dependencies: match *t {
                            "a" => 0,
                            "d" => 2,
                            _ => 1,
                        },
                        max_attempts: 1,
                    })
                    .collect();
            }
            store.execution_create(new).await.expect("create");
        }
        let mut running = store.task_claim(claim("r")).await.expect("claim");
        if diamond {
            for a in running {
                store
                    .task_finish(TaskFinish {
                        execution_id: a.execution_id,
                        task_id: a.task_id,
                        attempt: a.attempt,
                        outcome: AttemptOutcome::Completed {
                            output: Context::new(),
                        },
                        handoff: None,
                    })
                    .await
                    .expect("finish a");
            }
            running = store.task_claim(claim("r")).await.expect("claim b, c");
        }
        for t in running {
            finishes.push((
                Write::Finish(TaskFinish {
                    execution_id: t.execution_id,
                    task_id: t.task_id,
                    attempt: t.attempt,
                    outcome: AttemptOutcome::Completed {
                        output: Context::new(),
                    },
                    handoff: Some(Handoff {
                        owner: "r".to_string(),
                        lease_ms: 30_000,
                        limit: 1,
                        refill: None,
                    }),
                }),
                now_ms(),
            ));
        }
        finishes
    };
    let count = async |items: Vec<(Write, i64)>| -> usize {
        let mut conn = super::postgres::connect(&url).await.expect("connect");
        conn.batch_execute(&format!("SET search_path TO \"{}\"; BEGIN", options.schema))
            .await
            .expect("begin");
        let statements = Arc::new(AtomicUsize::new(0));
        let counted = statements.clone();
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if matches!(event, InstrumentationEvent::StartQuery { .. }) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        let written = write_many(&mut conn, &items).await.expect("merged write");
        assert_eq!(written.len(), items.len());
        let n = statements.load(Ordering::Relaxed);
        conn.batch_execute("ROLLBACK").await.expect("rollback");
        n
    };

    // Joins readied and handed off: fence and outputs, countdown, ready, hand-off, counters
    // and events.
    let one = count(prepare(1, true).await).await;
    let many = count(prepare(8, true).await).await;
    assert_eq!((one, many), (5, 5), "statements for 2 and for 16 finishes");
    // Runs ended: fence and outputs, counters and events, two to finalize.
    let one = count(prepare(1, false).await).await;
    let many = count(prepare(20, false).await).await;
    assert_eq!((one, many), (4, 4), "statements for 1 and for 20 finishes");
    store.schema_drop().await.expect("drop the test schema");
}
