//! The SQLite backend: one file, WAL, `synchronous=FULL` by default.
//!
//! All writes go through one group-commit [`Writer`] on a thread of its own (`BEGIN
//! IMMEDIATE`). Reads use a small pool of separate connections, which WAL lets run while the
//! writer writes.

use std::path::PathBuf;

use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::error::StoreError;
use super::rows::{EventRow, TaskRow};
use super::stmt::{SqlText, statement};
use super::types::{ClaimRequest, ClaimedRow, Millis};
use super::writer::Writer;
use crate::workflow::BoxFuture;

/// Statements with fixed text, kept prepared (see [`super::stmt`]).
type Stmt<T = &'static str> = super::stmt::Stmt<diesel::sqlite::Sqlite, T>;

pub(crate) type Conn = SyncConnectionWrapper<SqliteConnection, Inline>;

/// Runs diesel's blocking calls right where they are issued instead of hopping to a thread
/// pool for every statement (a context switch each way). Blocking is fine where this is
/// used: the writer owns a thread of its own, and reads in WAL mode take microseconds and never
/// wait for the writer.
pub(crate) struct Inline;

impl diesel_async::sync_connection_wrapper::SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> futures::future::BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        Box::pin(std::future::ready(Ok(task())))
    }

    fn get_runtime() -> Self {
        Inline
    }
}

/// The writer's savepoints as statements prepared once per connection, not parsed per write.
impl super::writer::WriterConn for Conn {
    fn savepoint<'c>(&'c mut self, sql: &'static str) -> BoxFuture<'c, Result<(), StoreError>> {
        Box::pin(async move {
            for statement in sql.split("; ") {
                Stmt::new(statement).execute(self).await?;
            }
            Ok(())
        })
    }
}

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How long a connection waits for another process's write lock before failing.
const BUSY_TIMEOUT_MS: u32 = 15_000;

// The per-write operations, written once for both backends (see ops.rs).
#[allow(clippy::duplicate_mod)]
#[path = "ops.rs"]
pub(crate) mod ops;

// The control plane's operations, written once for both backends (see control_ops.rs).
#[allow(clippy::duplicate_mod)]
#[path = "control_ops.rs"]
pub(crate) mod control_ops;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteTarget {
    /// A private in-memory database, gone when the store closes. Served by the writer's one
    /// connection alone (reads included): every SQLite connection to `:memory:` opens a
    /// database of its own, so a reader pool would read empty databases.
    Memory,
    File(PathBuf),
}

impl SqliteTarget {
    /// How errors and health name this database: the file's absolute path, so a user with
    /// several databases can tell which one failed.
    pub(crate) fn describe(&self) -> String {
        match self {
            SqliteTarget::Memory => "SQLite in-memory database".to_string(),
            SqliteTarget::File(p) => format!("SQLite database {}", absolute(p).display()),
        }
    }
}

/// `path` made absolute against the working directory (no I/O; the file may not exist yet).
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// SQLite's `synchronous` setting. `Full` (the default) survives power loss; `Normal` may lose
/// the last commits on power loss (never on a process crash) and is faster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

impl Synchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

pub(crate) struct SqliteStore {
    writer: Writer<Conn>,
    readers: Option<Pool<Conn>>,
    pub(crate) synchronous: Synchronous,
}

impl SqliteStore {
    pub(crate) async fn open(
        target: SqliteTarget,
        synchronous: Synchronous,
        readers: usize,
        statements: super::counted::StatementCounter,
    ) -> Result<Self, StoreError> {
        let database = target.describe();
        let path = match &target {
            SqliteTarget::Memory => ":memory:".to_string(),
            SqliteTarget::File(p) => {
                if let Some(parent) = p.parent()
                    && !parent.as_os_str().is_empty()
                    && !parent.is_dir()
                {
                    return Err(StoreError::Connect {
                        backend: "sqlite",
                        target: absolute(p).display().to_string(),
                        message: format!(
                            "directory '{}' does not exist; create it first",
                            parent.display()
                        ),
                    });
                }
                p.to_string_lossy().into_owned()
            }
        };
        let setup = pragmas(synchronous);
        let writer_path = path.clone();
        let target_name = match &target {
            SqliteTarget::Memory => ":memory:".to_string(),
            SqliteTarget::File(p) => absolute(p).display().to_string(),
        };
        let connect_error = {
            let target = target_name.clone();
            move |message: String| StoreError::Connect {
                backend: "sqlite",
                target: target.clone(),
                message,
            }
        };
        let open_error = connect_error.clone();
        let writer_hook = statements.hook();
        let writer =
            tokio::task::spawn_blocking(move || -> Result<SqliteConnection, StoreError> {
                let mut conn = SqliteConnection::establish(&writer_path)
                    .map_err(|e| open_error(e.to_string()))?;
                diesel::connection::SimpleConnection::batch_execute(&mut conn, &setup)?;
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    "PRAGMA journal_mode = WAL;",
                )?;
                // BEGIN IMMEDIATE takes the write lock first, so two processes opening the same new
                // file apply the migrations one after the other instead of racing.
                conn.immediate_transaction(|c| {
                    c.run_pending_migrations(MIGRATIONS)
                        .map(|_| ())
                        .map_err(|e| StoreError::Migration(e.to_string()))?;
                    // SQLite opens a file it cannot write read-only without a word, and the
                    // first write fails much later; a write that changes nothing finds out now.
                    diesel::connection::SimpleConnection::batch_execute(
                        c,
                        "UPDATE __diesel_schema_migrations SET version = version WHERE 0",
                    )
                    .map_err(|e| {
                        if e.to_string().contains("readonly") {
                            open_error(format!(
                                "the database file is read-only ({e}); make the file and its \
                                 folder writable for this user"
                            ))
                        } else {
                            StoreError::from(e)
                        }
                    })
                })?;
                conn.set_instrumentation(writer_hook);
                Ok(conn)
            })
            .await
            .map_err(|e| connect_error(format!("opening thread failed: {e}")))??;

        let readers = match target {
            SqliteTarget::Memory => None,
            SqliteTarget::File(_) => Some(reader_pool(&path, synchronous, readers, statements)?),
        };
        let writer = SyncConnectionWrapper::with_runtime(writer, Inline);
        let writer = Writer::spawn_thread(
            writer,
            "BEGIN IMMEDIATE",
            super::writer::NoMerge,
            "cloacina-sqlite-writer",
            database,
        )
        .map_err(|e| connect_error(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer,
            readers,
            synchronous,
        })
    }

    pub(crate) fn commits(&self) -> u64 {
        self.writer.commits()
    }

    pub(crate) fn write_health(&self) -> Option<super::writer::WriteFailure> {
        self.writer.health()
    }

    /// Closes the readers, then the writer once it has committed what is queued. SQLite
    /// checkpoints the WAL and removes the -wal and -shm files when the file's last
    /// connection closes (a reader still lent out closes when it comes back).
    pub(crate) async fn close(&self) {
        if let Some(pool) = &self.readers {
            pool.close();
        }
        self.writer.close().await;
    }

    /// Runs `f` inside the writer's next group-commit transaction; resolves after the commit.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// Runs `f` on a read connection (or, for an in-memory database, through the writer, since
    /// each in-memory connection would be a different database).
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        match &self.readers {
            Some(pool) => {
                let mut conn = pool
                    .get()
                    .await
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                f(&mut conn).await
            }
            None => self.write(f).await,
        }
    }
}

fn pragmas(sync: Synchronous) -> String {
    format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = ON; PRAGMA synchronous = {};",
        sync.as_str()
    )
}

fn reader_pool(
    path: &str,
    sync: Synchronous,
    size: usize,
    statements: super::counted::StatementCounter,
) -> Result<Pool<Conn>, StoreError> {
    let mut config = ManagerConfig::<Conn>::default();
    // A connection to a local file cannot be lost, so a checkout need not run a `SELECT 1`
    // first (the default): that was one more statement for every read.
    config.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
    let setup = pragmas(sync);
    config.custom_setup = Box::new(move |url| {
        let url = url.to_string();
        let setup = setup.clone();
        let statements = statements.clone();
        Box::pin(async move {
            let mut conn = Conn::establish(&url).await?;
            conn.batch_execute(&setup)
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            conn.set_instrumentation(statements.hook());
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

statement! {
    /// The ready tasks of active executions, oldest first. Driven by the partial index over
    /// `Ready` rows (named, so a plan that cannot use it fails loudly instead of scanning), each
    /// row's execution looked up by its key in a correlated subquery: the cost follows the ready
    /// rows, never the history, and a join order chosen from stale statistics (an `ANALYZE` run
    /// when the tables were small) cannot turn the lookup into a scan. The limit is a `CAST`, not
    /// a bare `?`: SQLite plans with the value bound to a bare `LIMIT ?`, so it re-prepares such
    /// a statement whenever it is bound again, i.e. on every call.
    pub(crate) CLAIM_CANDIDATES = "SELECT execution_id, task_id, \
     w_status <> 'Running' AS maybe_pending FROM (SELECT c.execution_id AS execution_id, \
     c.task_id AS task_id, c.ready_at AS ready_at, (SELECT w.status FROM workflow_executions w \
     WHERE w.id = c.execution_id) AS w_status \
     FROM task_executions c INDEXED BY task_executions_ready \
     WHERE c.status = 'Ready' AND c.ready_at <= ?) \
     WHERE w_status IN ('Pending', 'Running') ORDER BY ready_at LIMIT CAST(? AS INTEGER)";
}
statement! {
    /// As [`CLAIM_CANDIDATES`], for the workflows named in a JSON array (the first bind).
    pub(crate) CLAIM_CANDIDATES_OF = "SELECT execution_id, task_id, \
     w_status <> 'Running' AS maybe_pending FROM (SELECT c.execution_id AS execution_id, \
     c.task_id AS task_id, c.ready_at AS ready_at, (SELECT w.status FROM workflow_executions w \
     WHERE w.id = c.execution_id AND w.workflow_name IN (SELECT value FROM json_each(?))) \
     AS w_status FROM task_executions c INDEXED BY task_executions_ready \
     WHERE c.status = 'Ready' AND c.ready_at <= ?) \
     WHERE w_status IN ('Pending', 'Running') ORDER BY ready_at LIMIT CAST(? AS INTEGER)";
}
statement! {
    /// Claims one task: status-checked, and only while its execution is active; bumps the attempt
    /// (the fencing token).
    pub(crate) CLAIM_ONE = "UPDATE task_executions SET status = 'Running', \
     attempt = attempt + 1, lease_owner = ?, lease_expires_at = ?, started_at = ?, updated_at = ? \
     WHERE execution_id = ? AND task_id = ? AND status = 'Ready' \
     AND (ready_at <= ? OR ready_at IS NULL) \
     AND EXISTS (SELECT 1 FROM workflow_executions w WHERE w.id = task_executions.execution_id \
     AND w.status IN ('Pending', 'Running')) \
     RETURNING attempt, recoveries, failed_deps";
}
statement! {
    /// A claimed task's fencing token and counts, read after [`CLAIM_ONE`] (see
    /// [`update_returning`]).
    CLAIMED = "SELECT attempt, recoveries, failed_deps FROM task_executions \
     WHERE execution_id = ? AND task_id = ?";
}

#[derive(diesel::QueryableByName)]
struct Candidate {
    #[diesel(sql_type = diesel::sql_types::Text)]
    execution_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    task_id: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    maybe_pending: bool,
}

#[derive(diesel::QueryableByName)]
struct Claimed {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempt: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    recoveries: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    failed_deps: i32,
}

/// Claims ready tasks of active executions, oldest first (or exactly `req.only`): one
/// status-checked update per task that bumps its attempt. SQLite has one writer, so selecting
/// then updating inside the writer's transaction cannot race.
pub(crate) async fn claim_rows(
    conn: &mut Conn,
    req: &ClaimRequest,
    now: Millis,
) -> Result<Vec<ClaimedRow>, StoreError> {
    use diesel::sql_types::{BigInt, Text};
    let candidates: Vec<Candidate> = match &req.only {
        Some(only) => only
            .iter()
            .map(|(e, t)| Candidate {
                execution_id: e.to_string(),
                task_id: t.clone(),
                maybe_pending: true,
            })
            .collect(),
        None => {
            let limit = req.limit.max(1);
            match &req.workflows {
                Some(names) => {
                    Stmt::new(CLAIM_CANDIDATES_OF)
                        .bind::<Text, _>(serde_json::to_string(names).map_err(|e| {
                            StoreError::InvalidRequest(format!("workflow names: {e}"))
                        })?)
                        .bind::<BigInt, _>(now)
                        .bind::<BigInt, _>(limit)
                        .load(conn)
                        .await?
                }
                None => {
                    Stmt::new(CLAIM_CANDIDATES)
                        .bind::<BigInt, _>(now)
                        .bind::<BigInt, _>(limit)
                        .load(conn)
                        .await?
                }
            }
        }
    };
    let expires = now + req.lease_ms;
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let claim = Stmt::new(CLAIM_ONE)
            .bind::<Text, _>(req.owner.clone())
            .bind::<BigInt, _>(expires)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(c.execution_id.clone())
            .bind::<Text, _>(c.task_id.clone())
            .bind::<BigInt, _>(now);
        let read = Stmt::new(CLAIMED)
            .bind::<Text, _>(c.execution_id.clone())
            .bind::<Text, _>(c.task_id.clone());
        let claimed: Option<Claimed> = update_returning(conn, claim, read).await?;
        if let Some(k) = claimed {
            out.push(ClaimedRow {
                execution_id: c.execution_id,
                task_id: c.task_id,
                attempt: k.attempt,
                recoveries: k.recoveries,
                failed_deps: k.failed_deps,
                maybe_pending: c.maybe_pending,
            });
        }
    }
    Ok(out)
}

/// An `UPDATE ... RETURNING` of one row, run as the update alone and then `read`, the row
/// read by its key: its answer, or `None` when the update matched nothing. SQLite collects a
/// `RETURNING` statement's rows in a temporary b-tree that it creates and frees on every run,
/// which costs more than reading the one row again from the page the update just wrote.
pub(crate) async fn update_returning<U, A: SqlText, B: SqlText>(
    conn: &mut Conn,
    update: Stmt<A>,
    read: Stmt<B>,
) -> Result<Option<U>, StoreError>
where
    U: diesel::QueryableByName<diesel::sqlite::Sqlite> + Send + 'static,
{
    if update.without_returning().execute(conn).await? == 0 {
        return Ok(None);
    }
    Ok(Some(read.get_result(conn).await?))
}

/// At most one row of a query built with diesel's DSL (a lookup by key), run straight on the
/// blocking connection. Through diesel-async's wrapper the query is rendered to SQL and its
/// binds copied on every call (to ship it to the connection), and diesel then finds the
/// prepared statement by hashing that text; run here, diesel finds it by the query's type.
pub(crate) async fn keyed_row<Q, U>(conn: &mut Conn, query: Q) -> Result<Option<U>, StoreError>
where
    Q: diesel::query_dsl::LoadQuery<'static, SqliteConnection, U> + Send + 'static,
    U: Send + 'static,
{
    use diesel::OptionalExtension;
    Ok(conn
        .spawn_blocking(move |c| diesel::RunQueryDsl::get_result(query, c).optional())
        .await?)
}

statement! {
    /// An execution's first claim.
    START_EXECUTION = "UPDATE workflow_executions SET status = 'Running', started_at = ? \
     WHERE id = ? AND status = 'Pending'";
}

/// Moves those of `ids` still Pending to Running (their first claim); returns which. One
/// keyed update each: with an `IN` list, stale statistics can make SQLite scan the table.
pub(crate) async fn start_executions(
    conn: &mut Conn,
    ids: &[String],
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    use diesel::sql_types::{BigInt, Text};
    let mut started = Vec::new();
    for id in ids {
        let n = Stmt::new(START_EXECUTION)
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(id.clone())
            .execute(conn)
            .await?;
        if n == 1 {
            started.push(id.clone());
        }
    }
    Ok(started)
}

/// Counter updates of several executions, one after another.
pub(crate) async fn bump_many(
    conn: &mut Conn,
    bumps: Vec<ops::Bump>,
    now: Millis,
) -> Result<Vec<ops::Counters>, StoreError> {
    let mut out = Vec::with_capacity(bumps.len());
    for b in bumps {
        out.push(
            ops::bump(
                conn,
                &b.execution,
                b.events,
                b.remaining_delta,
                b.failed_delta,
                now,
            )
            .await?,
        );
    }
    Ok(out)
}

statement! {
    /// A finished task's dependent: one dependency fewer (and one more failed one when the task
    /// did not complete).
    RELEASE_DEPENDENT = "UPDATE task_executions SET remaining_deps = remaining_deps - 1, \
     failed_deps = failed_deps + ? WHERE execution_id = ? AND task_id = ?";
}
statement! {
    /// That dependent made ready if it has no dependency left.
    READY_DEPENDENT = "UPDATE task_executions SET status = 'Ready', ready_at = ?, \
     updated_at = ? WHERE execution_id = ? AND task_id = ? \
     AND remaining_deps <= 0 AND status = 'NotStarted'";
}

/// Counts a finished task against its dependents and returns those it made ready: two keyed
/// updates per dependent, the second's row count saying whether it became ready. A set-based
/// form (the names as a JSON list through `json_each`, the ready ones by `RETURNING`) made
/// SQLite build three temporary b-trees per call, which cost more than these statements.
pub(crate) async fn release_dependents(
    conn: &mut Conn,
    execution: &str,
    dependents: &[String],
    failed_dep: i32,
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    use diesel::sql_types::{BigInt, Integer, Text};
    let mut ready = Vec::new();
    for d in dependents {
        Stmt::new(RELEASE_DEPENDENT)
            .bind::<Integer, _>(failed_dep)
            .bind::<Text, _>(execution.to_string())
            .bind::<Text, _>(d.clone())
            .execute(conn)
            .await?;
        let n = Stmt::new(READY_DEPENDENT)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(execution.to_string())
            .bind::<Text, _>(d.clone())
            .execute(conn)
            .await?;
        if n == 1 {
            ready.push(d.clone());
        }
    }
    Ok(ready)
}

statement! {
    /// A new task row (see [`insert_tasks`]).
    INSERT_TASK = "INSERT INTO task_executions (execution_id, task_id, position, \
     dependents, status, remaining_deps, failed_deps, attempt, max_attempts, recoveries, \
     ready_at, lease_owner, lease_expires_at, error, created_at, updated_at, started_at, \
     completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
}
statement! {
    /// A new event row (see [`insert_events`]).
    INSERT_EVENT = "INSERT INTO execution_events (execution_id, seq, task_id, kind, \
     attempt, message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)";
}
statement! {
    /// Two new event rows (see [`insert_events`]).
    INSERT_EVENTS_2 = "INSERT INTO execution_events (execution_id, seq, task_id, kind, \
     attempt, message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?)";
}

/// Inserts task rows one prepared statement each: a multi-row `INSERT` has a text of its own
/// for every row count, so diesel would parse and plan it afresh on every call, which costs
/// far more than stepping a prepared statement per row in process.
pub(crate) async fn insert_tasks(conn: &mut Conn, rows: Vec<TaskRow>) -> Result<(), StoreError> {
    use diesel::sql_types::{BigInt, Integer, Nullable, Text};
    for r in rows {
        Stmt::new(INSERT_TASK)
            .bind::<Text, _>(r.execution_id)
            .bind::<Text, _>(r.task_id)
            .bind::<Integer, _>(r.position)
            .bind::<Text, _>(r.dependents)
            .bind::<Text, _>(r.status)
            .bind::<Integer, _>(r.remaining_deps)
            .bind::<Integer, _>(r.failed_deps)
            .bind::<Integer, _>(r.attempt)
            .bind::<Integer, _>(r.max_attempts)
            .bind::<Integer, _>(r.recoveries)
            .bind::<Nullable<BigInt>, _>(r.ready_at)
            .bind::<Nullable<Text>, _>(r.lease_owner)
            .bind::<Nullable<BigInt>, _>(r.lease_expires_at)
            .bind::<Nullable<Text>, _>(r.error)
            .bind::<BigInt, _>(r.created_at)
            .bind::<BigInt, _>(r.updated_at)
            .bind::<Nullable<BigInt>, _>(r.started_at)
            .bind::<Nullable<BigInt>, _>(r.completed_at)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Inserts event rows, two per statement while two are left: a transition records one to
/// three events, and a statement's own cost (binding, stepping, resetting) is most of what a
/// small insert costs. The statement texts are fixed, so both stay prepared.
pub(crate) async fn insert_events(conn: &mut Conn, rows: Vec<EventRow>) -> Result<(), StoreError> {
    let mut rows = rows.into_iter();
    while let Some(first) = rows.next() {
        match rows.next() {
            Some(second) => {
                bind_event(bind_event(Stmt::new(INSERT_EVENTS_2), first), second)
                    .execute(conn)
                    .await?
            }
            None => {
                bind_event(Stmt::new(INSERT_EVENT), first)
                    .execute(conn)
                    .await?
            }
        };
    }
    Ok(())
}

fn bind_event<T: SqlText>(s: Stmt<T>, r: EventRow) -> Stmt<T> {
    use diesel::sql_types::{BigInt, Integer, Nullable, Text};
    s.bind::<Text, _>(r.execution_id)
        .bind::<BigInt, _>(r.seq)
        .bind::<Nullable<Text>, _>(r.task_id)
        .bind::<Text, _>(r.kind)
        .bind::<Nullable<Integer>, _>(r.attempt)
        .bind::<Nullable<Text>, _>(r.message)
        .bind::<BigInt, _>(r.created_at)
}

#[cfg(test)]
mod plans {
    //! The engine's hot path must cost the same next to a million finished runs as on a new
    //! file: every statement it issues is asked for its plan (`EXPLAIN QUERY PLAN`), and none
    //! may read a whole table or an index whose size follows the history.

    use std::sync::{Arc, Mutex};

    use diesel::connection::InstrumentationEvent;
    use diesel::{Connection, RunQueryDsl as _, SqliteConnection};
    use diesel_async::AsyncConnection as _;
    use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
    use diesel_migrations::MigrationHarness;
    use uuid::Uuid;

    use super::{Conn, Inline, MIGRATIONS, ops};
    use crate::store::types::{
        AttemptOutcome, ClaimRequest, Handoff, NewExecution, NewTask, TaskFinish,
    };
    use crate::workflow::Context;

    /// Indexes that grow with history: fine for listing, never on the hot path.
    const HISTORY_INDEXES: [&str; 3] = [
        "workflow_executions_by_status",
        "workflow_executions_by_workflow",
        "execution_events_by_time",
    ];
    /// Partial indexes over the rows in flight; scanning one is bounded by the work at hand.
    const ACTIVE_INDEXES: [&str; 2] = ["task_executions_ready", "task_executions_leases"];

    #[derive(diesel::QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }

    fn new_execution(name: &str) -> NewExecution {
        let task = |id: &str, dependents: &[&str], dependencies: i32| NewTask {
            task_id: id.to_string(),
            position: 0,
            dependents: dependents.iter().map(|d| d.to_string()).collect(),
            dependencies,
            max_attempts: 3,
        };
        NewExecution {
            id: Uuid::now_v7(),
            workflow_name: name.to_string(),
            workflow_version: "v1".to_string(),
            package_id: None,
            input: Context::new(),
            tasks: vec![task("a", &["b"], 0), task("b", &[], 1)],
            dedup_key: Some(format!("key-{}", Uuid::now_v7())),
            cron: None,
        }
    }

    fn claim(workflows: Option<Vec<String>>, only: Option<Vec<(Uuid, String)>>) -> ClaimRequest {
        ClaimRequest {
            owner: "plans".to_string(),
            lease_ms: 30_000,
            limit: 8,
            workflows,
            only,
        }
    }

    fn finish(id: Uuid, task: &str, attempt: i32, outcome: AttemptOutcome) -> TaskFinish {
        TaskFinish {
            execution_id: id,
            task_id: task.to_string(),
            attempt,
            outcome,
            handoff: Some(Handoff {
                owner: "plans".to_string(),
                lease_ms: 30_000,
                limit: 4,
                refill: Some(vec!["wf".to_string()]),
            }),
        }
    }

    /// A migrated connection to `path` that records the text of every statement it sends.
    fn recording_connection(path: &str) -> (Conn, Arc<Mutex<Vec<String>>>) {
        let mut raw = SqliteConnection::establish(path).expect("open");
        raw.run_pending_migrations(MIGRATIONS).expect("migrate");
        let mut conn = SyncConnectionWrapper::with_runtime(raw, Inline);
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event
                && let Ok(mut s) = sink.lock()
            {
                s.push(query.to_string());
            }
        });
        (conn, seen)
    }

    /// Runs the hot path once (create, claim three ways, retry, finish with hand-off and
    /// refill, finalize, leases, recovery, release, pause, resume, cancel) and returns the text
    /// of every statement issued.
    async fn hot_path_statements(path: &str) -> Vec<String> {
        let (mut conn, seen) = recording_connection(path);
        let now = 1_000;
        let wf = || Some(vec!["wf".to_string()]);
        let run = ops::execution_create(&mut conn, new_execution("wf"), now)
            .await
            .expect("create");
        let other = ops::execution_create(&mut conn, new_execution("wf"), now)
            .await
            .expect("create");
        let claimed = ops::task_claim(&mut conn, claim(wf(), None), now)
            .await
            .expect("claim of workflows");
        assert_eq!(claimed.len(), 2, "both roots are claimed");
        ops::task_claim(&mut conn, claim(None, None), now)
            .await
            .expect("claim of any workflow");
        let retry = AttemptOutcome::Retry {
            error: "boom".into(),
            retry_at: now,
        };
        ops::task_finish(&mut conn, finish(other.id, "a", 1, retry), now)
            .await
            .expect("retry");
        let done = AttemptOutcome::Completed {
            output: Context::new(),
        };
        let first = ops::task_finish(&mut conn, finish(run.id, "a", 1, done.clone()), now)
            .await
            .expect("finish a");
        assert!(!first.claimed.is_empty(), "b is handed off: {first:?}");
        ops::task_finish(&mut conn, finish(run.id, "b", 1, done), now)
            .await
            .expect("finish b");
        let third = ops::execution_create(&mut conn, new_execution("wf"), now)
            .await
            .expect("create");
        let failed = AttemptOutcome::Failed {
            error: "boom".into(),
        };
        let skipped = AttemptOutcome::Skipped {
            reason: "a failed".into(),
        };
        let exact = |id: Uuid| claim(None, Some(vec![(id, "a".to_string())]));
        ops::task_claim(&mut conn, exact(third.id), now)
            .await
            .expect("exact claim");
        ops::task_finish(&mut conn, finish(third.id, "a", 1, failed), now)
            .await
            .expect("fail a");
        let ended = ops::task_finish(&mut conn, finish(third.id, "b", 1, skipped), now)
            .await
            .expect("skip b");
        assert_eq!(
            ended.execution_finished,
            Some(crate::store::types::ExecutionStatus::Failed),
            "the failed run is finalized: {ended:?}"
        );
        ops::task_claim(
            &mut conn,
            claim(None, Some(vec![(other.id, "a".into())])),
            now,
        )
        .await
        .expect("exact claim");
        ops::lease_renew(&mut conn, "plans".into(), now + 60_000, now)
            .await
            .expect("renew");
        ops::lease_recover_expired(&mut conn, 3, now + 120_000)
            .await
            .expect("recover");
        ops::task_claim(&mut conn, claim(wf(), None), now + 120_000)
            .await
            .expect("claim again");
        ops::task_release(&mut conn, other.id, "a".into(), 3, "test".into(), now)
            .await
            .expect("task release");
        ops::lease_release(&mut conn, "plans".into(), now)
            .await
            .expect("lease release");
        ops::execution_pause(&mut conn, other.id, now)
            .await
            .expect("pause");
        ops::execution_resume(&mut conn, other.id, now)
            .await
            .expect("resume");
        ops::execution_cancel(&mut conn, other.id, None, now)
            .await
            .expect("cancel");
        drop(conn);
        seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn hot_path_statements_never_read_the_history() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plans.db").display().to_string();
        let statements = hot_path_statements(&path).await;
        assert!(statements.len() > 20, "instrumentation saw {statements:?}");
        let mut raw = SqliteConnection::establish(&path).expect("open");
        let mut problems = Vec::new();
        for stats in ["without statistics", "with stale statistics"] {
            if stats == "with stale statistics" {
                // What `ANALYZE` (or `PRAGMA optimize`) leaves behind when the tables are
                // small: every table looks tiny, so a scan looks as cheap as a lookup.
                diesel::connection::SimpleConnection::batch_execute(&mut raw, "ANALYZE")
                    .expect("analyze");
            }
            problems.extend(plan_problems(&mut raw, &statements, stats));
        }
        assert!(
            problems.is_empty(),
            "statements whose cost grows with history:\n{}",
            problems.join("\n")
        );
    }

    /// A page of a filtered execution list walks the filter's index in its order and stops at
    /// the page, rather than sorting every matching execution (the `GET .../executions` of
    /// the load test slowed as the history grew).
    #[tokio::test]
    async fn execution_list_pages_are_not_sorted_whole() {
        use crate::store::types::{ExecutionFilter, ExecutionStatus};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lists.db").display().to_string();
        let (mut conn, seen) = recording_connection(&path);
        let filters = [
            (Some("wf"), None),
            (None, Some(ExecutionStatus::Completed)),
            (Some("wf"), Some(ExecutionStatus::Completed)),
        ];
        for (workflow, status) in filters {
            let filter = ExecutionFilter {
                workflow: workflow.map(str::to_string),
                status,
                limit: Some(50),
                offset: Some(50),
                ..ExecutionFilter::default()
            };
            ops::execution_list(&mut conn, filter).await.expect("list");
        }
        drop(conn);
        let statements = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(statements.len(), 3, "{statements:?}");
        let mut raw = SqliteConnection::establish(&path).expect("open");
        for statement in statements {
            let sql = statement.split(" -- binds:").next().unwrap_or(&statement);
            let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load(&mut raw)
                .unwrap_or_else(|e| panic!("explaining {sql}: {e}"));
            let lines: Vec<&str> = plan.iter().map(|l| l.detail.as_str()).collect();
            assert!(
                !lines.contains(&"USE TEMP B-TREE FOR ORDER BY"),
                "every match is sorted: {lines:?}\n    in: {sql}"
            );
        }
    }

    /// The plan lines of `statements` that read a whole table or a history-sized index.
    fn plan_problems(
        raw: &mut SqliteConnection,
        statements: &[String],
        stats: &str,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for statement in statements {
            let sql = statement
                .split(" -- binds:")
                .next()
                .unwrap_or(statement)
                .trim();
            let lowered = sql.to_ascii_lowercase();
            if !["select", "update", "insert", "delete", "with"]
                .iter()
                .any(|k| lowered.starts_with(k))
            {
                continue;
            }
            let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load(raw)
                .unwrap_or_else(|e| panic!("explaining {sql}: {e}"));
            for line in plan.iter().map(|l| l.detail.as_str()) {
                let full_scan = line.starts_with("SCAN ")
                    && !line.starts_with("SCAN json_each")
                    && !line.starts_with("SCAN CONSTANT ROW")
                    && !line.contains("-ROW VALUES CLAUSE")
                    && !ACTIVE_INDEXES.iter().any(|i| line.contains(i));
                let history = HISTORY_INDEXES.iter().any(|i| line.contains(i));
                if full_scan || history {
                    problems.push(format!("{line} ({stats})\n    in: {sql}"));
                }
            }
        }
        problems
    }
}
