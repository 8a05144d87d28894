//! The SQLite backend: one file, WAL, `synchronous=FULL` by default.
//!
//! All writes go through one group-commit [`Writer`] on a thread of its own (`BEGIN
//! IMMEDIATE`). Reads use a small pool of separate connections, which WAL lets run while the
//! writer writes.

use std::path::PathBuf;

use diesel::{
    BoolExpressionMethods, Connection, ExpressionMethods, OptionalExtension, QueryDsl,
    SqliteConnection,
};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::error::StoreError;
use super::rows::{EventRow, TaskRow};
use super::schema::{execution_events, task_executions as te, workflow_executions as we};
use super::types::{ClaimRequest, ClaimedRow, Millis};
use super::writer::Writer;
use crate::workflow::BoxFuture;

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

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How long a connection waits for another process's write lock before failing.
const BUSY_TIMEOUT_MS: u32 = 15_000;

#[allow(clippy::duplicate_mod)]
pub(crate) mod ops {
    use super::{Conn, bump_many, claim_rows, insert_events, insert_tasks};
    include!("ops.rs");
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteTarget {
    Memory,
    File(PathBuf),
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
    ) -> Result<Self, StoreError> {
        let path = match &target {
            SqliteTarget::Memory => ":memory:".to_string(),
            SqliteTarget::File(p) => {
                if let Some(parent) = p.parent()
                    && !parent.as_os_str().is_empty()
                    && !parent.is_dir()
                {
                    return Err(StoreError::Connect {
                        backend: "sqlite",
                        target: p.display().to_string(),
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
        let writer =
            tokio::task::spawn_blocking(move || -> Result<SqliteConnection, StoreError> {
                let mut conn =
                    SqliteConnection::establish(&writer_path).map_err(|e| StoreError::Connect {
                        backend: "sqlite",
                        target: writer_path.clone(),
                        message: e.to_string(),
                    })?;
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
                        .map_err(|e| StoreError::Migration(e.to_string()))
                })?;
                Ok(conn)
            })
            .await
            .map_err(|e| StoreError::Connect {
                backend: "sqlite",
                target: path.clone(),
                message: format!("opening thread failed: {e}"),
            })??;

        let readers = match target {
            SqliteTarget::Memory => None,
            SqliteTarget::File(_) => Some(reader_pool(&path, synchronous, readers)?),
        };
        let writer = SyncConnectionWrapper::with_runtime(writer, Inline);
        let writer = Writer::spawn_thread(
            writer,
            "BEGIN IMMEDIATE",
            super::writer::NoMerge,
            "cloacina-sqlite-writer",
        )
        .map_err(|e| StoreError::Connect {
            backend: "sqlite",
            target: path.clone(),
            message: format!("cannot start the writer thread: {e}"),
        })?;
        Ok(SqliteStore {
            writer,
            readers,
            synchronous,
        })
    }

    pub(crate) fn commits(&self) -> u64 {
        self.writer.commits()
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

fn reader_pool(path: &str, sync: Synchronous, size: usize) -> Result<Pool<Conn>, StoreError> {
    let mut config = ManagerConfig::<Conn>::default();
    let setup = pragmas(sync);
    config.custom_setup = Box::new(move |url| {
        let url = url.to_string();
        let setup = setup.clone();
        Box::pin(async move {
            let mut conn = Conn::establish(&url).await?;
            conn.batch_execute(&setup)
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// Claims ready tasks of active executions, oldest first (or exactly `req.only`): one
/// status-checked update per task that bumps its attempt. SQLite has one writer, so selecting
/// then updating inside the writer's transaction cannot race.
pub(crate) async fn claim_rows(
    conn: &mut Conn,
    req: &ClaimRequest,
    now: Millis,
) -> Result<Vec<ClaimedRow>, StoreError> {
    let candidates: Vec<(String, String)> = match &req.only {
        Some(only) => only
            .iter()
            .map(|(e, t)| (e.to_string(), t.clone()))
            .collect(),
        None => {
            let base = te::table
                .filter(te::status.eq("Ready"))
                .filter(te::ready_at.le(now))
                .order(te::ready_at.asc())
                .limit(req.limit.max(1))
                .select((te::execution_id, te::task_id));
            match &req.workflows {
                Some(names) => {
                    let active = we::table
                        .filter(we::status.eq_any(["Pending", "Running"]))
                        .filter(we::workflow_name.eq_any(names))
                        .select(we::id);
                    base.filter(te::execution_id.eq_any(active))
                        .load(conn)
                        .await?
                }
                None => {
                    let active = we::table
                        .filter(we::status.eq_any(["Pending", "Running"]))
                        .select(we::id);
                    base.filter(te::execution_id.eq_any(active))
                        .load(conn)
                        .await?
                }
            }
        }
    };
    let expires = now + req.lease_ms;
    let mut out = Vec::with_capacity(candidates.len());
    for (e, t) in candidates {
        let active = we::table
            .filter(we::status.eq_any(["Pending", "Running"]))
            .select(we::id);
        let claimed: Option<(i32, i32, i32)> = diesel::update(
            te::table
                .filter(te::execution_id.eq(&e))
                .filter(te::task_id.eq(&t))
                .filter(te::status.eq("Ready"))
                .filter(te::ready_at.le(now).or(te::ready_at.is_null()))
                .filter(te::execution_id.eq_any(active)),
        )
        .set((
            te::status.eq("Running"),
            te::attempt.eq(te::attempt + 1),
            te::lease_owner.eq(Some(req.owner.as_str())),
            te::lease_expires_at.eq(Some(expires)),
            te::started_at.eq(Some(now)),
            te::updated_at.eq(now),
        ))
        .returning((te::attempt, te::recoveries, te::failed_deps))
        .get_result(conn)
        .await
        .optional()?;
        if let Some((attempt, recoveries, failed_deps)) = claimed {
            out.push(ClaimedRow {
                execution_id: e,
                task_id: t,
                attempt,
                recoveries,
                failed_deps,
                maybe_pending: true,
            });
        }
    }
    Ok(out)
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

/// Multi-row inserts run on the underlying connection in one blocking hop.
pub(crate) async fn insert_tasks(conn: &mut Conn, rows: Vec<TaskRow>) -> Result<(), StoreError> {
    conn.spawn_blocking(move |c| {
        diesel::RunQueryDsl::execute(diesel::insert_into(te::table).values(&rows), c)
    })
    .await?;
    Ok(())
}

pub(crate) async fn insert_events(conn: &mut Conn, rows: Vec<EventRow>) -> Result<(), StoreError> {
    conn.spawn_blocking(move |c| {
        diesel::RunQueryDsl::execute(
            diesel::insert_into(execution_events::table).values(&rows),
            c,
        )
    })
    .await?;
    Ok(())
}
