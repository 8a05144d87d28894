//! The `history` scenario's seed: a million finished executions written straight into the
//! database, as years of use would leave them.

use crate::Db;

/// Writes `count` finished one-task executions (with their task rows, contexts and events)
/// straight into the database, as years of history would leave them.
pub async fn seed_history(db: &Db, backend: &str, count: usize) -> anyhow::Result<()> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let t = 1_600_000_000_000i64;
    let series = match backend {
        "sqlite" => format!(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {count})"
        ),
        _ => format!("WITH seq(i) AS (SELECT generate_series(1, {count}))"),
    };
    let id = match backend {
        "sqlite" => "printf('00000000-0000-7000-8000-%012d', i)",
        _ => "'00000000-0000-7000-8000-' || lpad(i::text, 12, '0')",
    };
    let sql = format!(
        "{series} INSERT INTO workflow_executions (id, workflow_name, workflow_version, status, total_tasks, remaining_tasks, failed_tasks, event_seq, created_at, updated_at, started_at, completed_at) \
           SELECT {id}, 'history', 'v1', 'Completed', 1, 0, 0, 4, {t} + i, {t} + i, {t} + i, {t} + i FROM seq;
         {series} INSERT INTO task_executions (execution_id, task_id, position, dependents, status, remaining_deps, attempt, max_attempts, recoveries, ready_at, created_at, updated_at, started_at, completed_at) \
           SELECT {id}, 'a', 0, '[]', 'Completed', 0, 1, 1, 0, {t} + i, {t} + i, {t} + i, {t} + i, {t} + i FROM seq;
         {series} INSERT INTO contexts (execution_id, owner, data, created_at) SELECT {id}, '/final', '{{\"n\":1,\"t_a\":2}}', {t} + i FROM seq;
         {series} INSERT INTO execution_events (execution_id, seq, task_id, kind, attempt, created_at) SELECT {id}, 1, NULL, 'execution_created', NULL, {t} + i FROM seq;
         {series} INSERT INTO execution_events (execution_id, seq, task_id, kind, attempt, created_at) SELECT {id}, 4, NULL, 'execution_completed', NULL, {t} + i FROM seq;"
    );
    match backend {
        "sqlite" => {
            let path = db
                .url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                diesel::SqliteConnection,
            >::establish(&path)
            .await?;
            // The checkpoint moves the bulk load out of the WAL before the clock starts: the
            // scenario measures throughput next to a large history, not the load's aftermath.
            // No ANALYZE: the store never runs it, so a real database has no statistics.
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = 60000; BEGIN; {sql} COMMIT; \
                 PRAGMA wal_checkpoint(TRUNCATE);"
            ))
            .await?;
        }
        _ => {
            // ANALYZE, as autovacuum would soon after a bulk load.
            let mut c = diesel_async::AsyncPgConnection::establish(&db.url).await?;
            c.batch_execute(&format!(
                "SET search_path TO \"{}\"; BEGIN; {sql} COMMIT; ANALYZE;",
                db.schema
            ))
            .await?;
            // As on SQLite: flush the bulk load now rather than in a checkpoint during the
            // measurement. Needs superuser or pg_checkpoint; without, the run goes on.
            if let Err(e) = c.batch_execute("CHECKPOINT").await {
                eprintln!("history: CHECKPOINT after seeding failed ({e}); measuring anyway");
            }
        }
    }
    Ok(())
}
