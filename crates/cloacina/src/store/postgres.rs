//! The PostgreSQL backend: a connection pool whose every connection is pinned to one schema
//! (a tenant; `public` by default), migrations under an advisory lock, `FOR UPDATE SKIP
//! LOCKED` claims, and `LISTEN/NOTIFY` so runners in other processes wake at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::StreamExt;
use tokio::sync::broadcast;

use super::error::StoreError;
use super::pg_batch::{self, Write, Written};
use super::redact_url;
use super::types::{
    ClaimRequest, ClaimedTask, ExecutionRecord, FinishResult, Millis, NewExecution, Signals,
    StoreSignal, TaskFinish,
};
use super::writer::{Merge, Writer};
use crate::workflow::BoxFuture;

/// Statements with fixed text, kept prepared (see [`super::stmt`]).
type Stmt<T = &'static str> = super::stmt::Stmt<diesel::pg::Pg, T>;

pub(crate) type Conn = AsyncPgConnection;

/// Savepoints as one text: one round trip.
impl super::writer::WriterConn for Conn {}

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

// The per-write operations, written once for both backends (see ops.rs).
#[allow(clippy::duplicate_mod)]
#[path = "ops.rs"]
pub(crate) mod ops;

// The control plane's operations, written once for both backends (see control_ops.rs).
#[allow(clippy::duplicate_mod)]
#[path = "control_ops.rs"]
pub(crate) mod control_ops;

pub(crate) struct PgStore {
    pool: Pool<Conn>,
    writer: Writer<Conn, Finishes>,
    listener: tokio::task::JoinHandle<()>,
    counts: Arc<MergeCounts>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A schema name we are willing to interpolate into SQL (see [`super::schema_name_valid`]).
pub(crate) fn validate_schema(schema: &str) -> Result<(), StoreError> {
    if super::schema_name_valid(schema) {
        Ok(())
    } else {
        Err(StoreError::InvalidSchema(schema.to_string()))
    }
}

/// A stable 63-bit key for the schema's migration advisory lock (FNV-1a).
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("cloacina-migrate:{schema}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h >> 1) as i64
}

/// The schema's `LISTEN/NOTIFY` channel: `cloacina_<schema>`, or, when that is longer than
/// PostgreSQL's 63-byte identifier limit (`pg_notify` rejects such a channel, `LISTEN` would
/// truncate it), `cloacina_` and a hash of the schema.
fn channel_name(schema: &str) -> String {
    let channel = format!("cloacina_{schema}");
    if channel.len() <= 63 {
        channel
    } else {
        format!("cloacina_{:016x}", lock_key(schema))
    }
}

/// A connect failure naming the server (password hidden) and the whole cause.
fn connect_error(url: &str, message: String) -> StoreError {
    StoreError::Connect {
        backend: "postgres",
        target: redact_url(url),
        message,
    }
}

/// `error` and every cause under it, `outer: inner: ...`. tokio-postgres shows only its
/// outermost layer ("error connecting to server"); the reason (connection refused, unknown
/// host, no such database) is in the causes.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Opens one connection. Connects through tokio-postgres directly rather than
/// `AsyncPgConnection::establish`, which turns a failure into its outermost message alone.
pub(crate) async fn connect(url: &str) -> Result<Conn, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| connect_error(url, with_causes(&e)))?;
    Conn::try_from_client_and_connection(client, connection)
        .await
        .map_err(|e| connect_error(url, with_causes(&e)))
}

impl PgStore {
    /// `database` names the database in health messages.
    pub(crate) async fn open(
        url: &str,
        schema: &str,
        max_connections: usize,
        signals: broadcast::Sender<StoreSignal>,
        database: &str,
        statements: super::counted::StatementCounter,
    ) -> Result<Self, StoreError> {
        validate_schema(schema)?;
        migrate(url, schema).await?;

        let mut config = ManagerConfig::<Conn>::default();
        let set_path = format!("SET search_path TO \"{schema}\"");
        let pool_statements = statements.clone();
        config.custom_setup = Box::new(move |url| {
            let url = url.to_string();
            let set_path = set_path.clone();
            let statements = pool_statements.clone();
            Box::pin(async move {
                let mut conn = connect(&url)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                conn.batch_execute(&set_path)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                conn.set_instrumentation(statements.hook());
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(2))
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        // Fail now, with a clear message, rather than on first use.
        drop(
            pool.get()
                .await
                .map_err(|e| connect_error(url, with_causes(&e)))?,
        );

        let connect = {
            let (url, set_path) = (url.to_string(), format!("SET search_path TO \"{schema}\""));
            move || -> BoxFuture<'static, Result<Conn, StoreError>> {
                let (url, set_path) = (url.clone(), set_path.clone());
                let statements = statements.clone();
                Box::pin(async move {
                    let mut conn = connect(&url).await?;
                    conn.batch_execute(&set_path).await?;
                    conn.set_instrumentation(statements.hook());
                    Ok(conn)
                })
            }
        };
        let channel = channel_name(schema);
        let counts = Arc::new(MergeCounts::default());
        let finishes = Finishes {
            channel: channel.clone(),
            counts: counts.clone(),
        };
        let writer = Writer::spawn(
            connect().await?,
            "BEGIN",
            finishes,
            Some(Box::new(connect)),
            database.to_string(),
        );
        let listener = tokio::spawn(listen(url.to_string(), channel.clone(), signals));
        Ok(PgStore {
            pool,
            writer,
            listener,
            counts,
        })
    }

    /// Runs `f` in the writer's next group-commit transaction; the writer sends a NOTIFY for
    /// each signal the result implies before the commit (PostgreSQL delivers them only on
    /// commit), one statement for the whole batch.
    pub(crate) async fn write<T, F, S>(&self, f: F, signals: S) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
        S: Fn(&T) -> Vec<StoreSignal> + Send + 'static,
    {
        self.writer
            .write_noting(f, move |out| {
                signals(out).into_iter().map(|s| s.encode()).collect()
            })
            .await
    }

    /// Records a terminal task finish, merged with the other claims and finishes of the
    /// writer's next batch into a few set-based statements.
    pub(crate) async fn finish(
        &self,
        finish: TaskFinish,
        now: Millis,
    ) -> Result<FinishResult, StoreError> {
        match self.writer.merged((Write::Finish(finish), now)).await? {
            Written::Finished(_, result) => Ok(result),
            _ => Err(mismatch()),
        }
    }

    /// Creates an execution (without a cron claim), merged like [`finish`](Self::finish).
    pub(crate) async fn create(
        &self,
        new: NewExecution,
        now: Millis,
    ) -> Result<ExecutionRecord, StoreError> {
        match self
            .writer
            .merged((Write::Create(Box::new(new)), now))
            .await?
        {
            Written::Created(rec) => Ok(*rec),
            _ => Err(mismatch()),
        }
    }

    /// Claims ready tasks, merged like [`finish`](Self::finish).
    pub(crate) async fn claim(
        &self,
        req: ClaimRequest,
        now: Millis,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        match self.writer.merged((Write::Claim(req), now)).await? {
            Written::Claimed(tasks) => Ok(tasks),
            _ => Err(mismatch()),
        }
    }

    pub(crate) fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Writes merged so far, and those of them written again one by one after their merged
    /// statements failed.
    pub(crate) fn merge_counts(&self) -> (u64, u64) {
        (
            self.counts.merged.load(Ordering::Relaxed),
            self.counts.fallbacks.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn write_health(&self) -> Option<super::writer::WriteFailure> {
        self.writer.health()
    }

    /// Closes the pool, stops the listener, and closes the writer once it has committed what
    /// is queued.
    pub(crate) async fn close(&self) {
        self.pool.close();
        self.listener.abort();
        self.writer.close().await;
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        f(&mut conn).await
    }

    /// Drops the schema and everything in it (tenant deletion, test clean-up).
    pub(crate) async fn drop_schema(&self, schema: &str) -> Result<(), StoreError> {
        validate_schema(schema)?;
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        conn.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await?;
        Ok(())
    }
}

/// Applies pending migrations to `schema`, creating it if needed. A session advisory lock per
/// schema makes concurrent starts (two replicas, two tests) apply them once, in turn.
async fn migrate(url: &str, schema: &str) -> Result<(), StoreError> {
    let conn = connect(url).await?;
    let schema = schema.to_string();
    tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        use diesel::connection::SimpleConnection;
        let mut conn = AsyncConnectionWrapper::<Conn>::from(conn);
        let key = lock_key(&schema);
        SimpleConnection::batch_execute(&mut conn, &format!(
            "SELECT pg_advisory_lock({key}); CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\";"
        ))?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| StoreError::Migration(format!("schema '{schema}': {e}")));
        let unlock = SimpleConnection::batch_execute(&mut conn, &format!("SELECT pg_advisory_unlock({key})"));
        result?;
        unlock?;
        Ok(())
    })
    .await
    .map_err(|e| StoreError::Migration(format!("migration thread failed: {e}")))?
}

/// Forwards NOTIFYs on `channel` to in-process subscribers; reconnects with backoff if the
/// connection drops. Missed notifications are covered by the runners' safety-net poll.
async fn listen(url: String, channel: String, signals: broadcast::Sender<StoreSignal>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(&url).await {
            Ok(mut conn) => {
                if conn
                    .batch_execute(&format!("LISTEN \"{channel}\""))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(100);
                    // Notifications sent while the connection was down are lost: every
                    // runner looks for ready work and every waiter re-checks once.
                    let _ = signals.send(StoreSignal::TasksReady);
                    let _ = signals.send(StoreSignal::Resync);
                    let mut stream = std::pin::pin!(conn.notifications_stream());
                    while let Some(Ok(n)) = stream.next().await {
                        if let Some(s) = StoreSignal::decode(&n.payload) {
                            let _ = signals.send(s);
                        }
                    }
                }
                tracing::warn!(
                    channel,
                    "PostgreSQL notification connection lost; reconnecting"
                );
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, "cannot open PostgreSQL notification connection; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn mismatch() -> StoreError {
    StoreError::Corrupt("the writer answered a merged write with another kind's result".to_string())
}

/// How many writes were merged, and how many of them fell back to one by one.
#[derive(Default)]
struct MergeCounts {
    merged: AtomicU64,
    fallbacks: AtomicU64,
}

/// Creations, claims and task finishes, merged per group commit (see
/// [`pg_batch::write_many`]).
pub(crate) struct Finishes {
    channel: String,
    counts: Arc<MergeCounts>,
}

impl Merge<Conn> for Finishes {
    type Item = (Write, Millis);
    type Output = Written;

    fn many<'c>(
        &'c self,
        conn: &'c mut Conn,
        items: &'c [Self::Item],
    ) -> BoxFuture<'c, Result<Vec<Self::Output>, StoreError>> {
        self.counts
            .merged
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        Box::pin(pg_batch::write_many(conn, items))
    }

    fn one<'c>(
        &'c self,
        conn: &'c mut Conn,
        item: &'c Self::Item,
    ) -> BoxFuture<'c, Result<Self::Output, StoreError>> {
        self.counts.fallbacks.fetch_add(1, Ordering::Relaxed);
        let (write, now) = item.clone();
        Box::pin(async move {
            Ok(match write {
                Write::Create(new) => {
                    Written::Created(Box::new(ops::execution_create(conn, *new, now).await?))
                }
                Write::Claim(req) => Written::Claimed(ops::task_claim(conn, req, now).await?),
                Write::Finish(finish) => {
                    let id = finish.execution_id;
                    Written::Finished(id, ops::task_finish(conn, finish, now).await?)
                }
            })
        })
    }

    fn notes(&self, written: &Self::Output) -> Vec<String> {
        match written {
            Written::Finished(id, result) => result
                .signals(Some(*id))
                .into_iter()
                .map(|s| s.encode())
                .collect(),
            Written::Created(_) => vec![StoreSignal::TasksReady.encode()],
            Written::Claimed(_) => Vec::new(),
        }
    }

    fn notify<'c>(
        &'c self,
        conn: &'c mut Conn,
        notes: Vec<String>,
    ) -> BoxFuture<'c, Result<(), StoreError>> {
        Box::pin(pg_batch::notify(conn, &self.channel, notes))
    }
}

/// At most one row of a query built with diesel's DSL (a lookup by key); see the SQLite
/// backend's `keyed_row` for why it is a function of the backend.
pub(crate) async fn keyed_row<'q, Q, U>(conn: &mut Conn, query: Q) -> Result<Option<U>, StoreError>
where
    Q: diesel_async::methods::LoadQuery<'q, Conn, U> + Send + 'q,
    U: Send + 'q,
{
    use diesel::OptionalExtension;
    Ok(diesel_async::RunQueryDsl::get_result(query, conn)
        .await
        .optional()?)
}

pub(crate) use pg_batch::{
    bump_many, claim_rows, insert_events, insert_tasks, release_dependents, start_executions,
    update_returning,
};
