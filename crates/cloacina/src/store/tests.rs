//! The store's own failure handling, with the database made to fail for real: write health
//! while commits fail, and errors that name the database.

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
