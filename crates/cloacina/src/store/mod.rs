//! Storage: one interface over SQLite and PostgreSQL, chosen at run time by URL.
//!
//! Every method is one transaction's worth of work; one writer per store commits the writes
//! waiting for it together (group commit). The queries live once, in `ops.rs`, and are
//! compiled for each backend; only connection handling and the claim query's locking differ,
//! and PostgreSQL merges the hot writes of a batch (terminal finishes, claims, creations) into
//! set-based statements (`pg_batch.rs`) that give the same answers. What differs by backend
//! is asked through [`Store::capabilities`]. Writes that make work runnable or end an
//! execution also raise a [`StoreSignal`], in process at once and, on PostgreSQL, to other
//! processes through `LISTEN/NOTIFY`.

mod control_rows;
mod control_types;
mod counted;
mod error;
mod hold;
mod pg_batch;
mod postgres;
mod rows;
mod schema;
mod sqlite;
mod stmt;
#[cfg(test)]
mod tests;
mod types;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::broadcast;
use uuid::Uuid;

pub use control_types::*;
pub use error::{DbError, StoreError};
pub use hold::WriterHold;
pub use sqlite::{SqliteTarget, Synchronous};
pub use types::*;
pub use writer::WriteFailure;

use crate::workflow::Context;
use types::Signals;

/// A parsed database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite {
        target: SqliteTarget,
        synchronous: Synchronous,
    },
    Postgres {
        url: String,
    },
}

impl DatabaseUrl {
    /// Accepts `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, `sqlite:path.db`,
    /// `sqlite::memory:` or `sqlite://:memory:` (each optionally with
    /// `?synchronous=normal|full`) and `postgres://...` / `postgresql://...`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: redact_url(url),
            reason: reason.to_string(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres {
                url: url.to_string(),
            });
        }
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(invalid("unknown scheme"));
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut synchronous = Synchronous::Full;
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("synchronous", v)) if v.eq_ignore_ascii_case("full") => {
                    synchronous = Synchronous::Full
                }
                Some(("synchronous", v)) if v.eq_ignore_ascii_case("normal") => {
                    synchronous = Synchronous::Normal
                }
                Some(("synchronous", _)) => {
                    return Err(invalid("synchronous must be 'full' or 'normal'"));
                }
                _ => {
                    return Err(invalid(&format!(
                        "unknown option '{pair}' (supported: synchronous=full|normal)"
                    )));
                }
            }
        }
        // `sqlite::memory:` and `sqlite://:memory:` alike: SQLite opens a private in-memory
        // database for the exact name `:memory:`, whichever way the URL spelled it.
        let path = path.strip_prefix("//").unwrap_or(path);
        let target = if path == ":memory:" {
            SqliteTarget::Memory
        } else if path.starts_with("file:") {
            // SQLite would read this as a URI filename with options of its own (such as
            // `mode=memory`, one private database per connection), bypassing ours.
            return Err(invalid(
                "SQLite URI filenames ('file:...') are not supported; use sqlite://PATH, or sqlite::memory: for an in-memory database",
            ));
        } else if path.is_empty() {
            return Err(invalid("the path is empty"));
        } else {
            SqliteTarget::File(PathBuf::from(path))
        };
        Ok(DatabaseUrl::Sqlite {
            target,
            synchronous,
        })
    }
}

/// `url` with any password replaced by `***` (`postgres://user:***@host/db`, and a
/// `password=` query parameter), for messages and logs. Other text is returned as it is.
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(s) => url.split_at(s + 3),
        None => ("", url),
    };
    let (main, query) = match rest.find('?') {
        Some(q) => rest.split_at(q),
        None => (rest, ""),
    };
    let main = match (head.is_empty(), main.rfind('@')) {
        (false, Some(at)) => {
            let (credentials, host) = main.split_at(at);
            match credentials.find(':') {
                Some(c) => format!("{}:***{host}", &credentials[..c]),
                None => main.to_string(),
            }
        }
        _ => main.to_string(),
    };
    let query = match query.strip_prefix('?') {
        Some(q) => {
            let pairs: Vec<String> = q
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("?{}", pairs.join("&"))
        }
        None => String::new(),
    };
    format!("{head}{main}{query}")
}

/// True for a PostgreSQL schema name the store accepts: `^[a-z_][a-z0-9_-]{0,62}$`, not
/// starting with `pg_` (PostgreSQL's own). Such a name is safe to splice into SQL in double
/// quotes (no quote can occur in it), and is what [`crate::tenant::tenant_schema`] makes of
/// every valid tenant name.
pub fn schema_name_valid(schema: &str) -> bool {
    let bytes = schema.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
        && !schema.starts_with("pg_")
}

/// Database work done through a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Logical write operations (each one transaction's worth of work).
    pub write_ops: u64,
    /// Transactions actually committed: on both backends group commit folds the write
    /// operations waiting for the writer into one.
    pub commits: u64,
    /// Read operations (each one round trip, possibly several statements).
    pub reads: u64,
    /// SQL statements sent on the store's connections (each prepared statement, or string of
    /// statements sent at once, counts one), `BEGIN` and `COMMIT` included.
    pub statements: u64,
    /// Write operations the writer merged with others of their group commit into set-based
    /// statements (PostgreSQL: terminal finishes, claims, creations without a cron claim).
    /// Always 0 on SQLite, which runs every write alone.
    pub merged_writes: u64,
    /// Merged write operations that were written again one by one, each in a savepoint of its
    /// own, because their merged statements failed (so each got its own answer).
    pub merge_fallbacks: u64,
}

/// What a backend does differently, asked by name: callers whose behaviour should differ by
/// backend ask for the capability, never compare backend names, so a new backend (or a
/// changed one) states what it offers in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Terminal finishes, claims and creations (without a cron claim) of one group commit are
    /// merged into a fixed number of set-based statements (PostgreSQL), rather than each run
    /// alone (SQLite). Results are the same either way; only the statement count differs.
    pub merged_writes: bool,
    /// A finish should also claim other ready work for the slot it frees
    /// ([`Handoff::refill`]). It pays where a claim costs a round trip and a commit of its own
    /// (PostgreSQL); on SQLite a claim is cheap, and the extra statement in every finish costs
    /// more than it saves. Both backends carry out a refill that is asked for.
    pub refill_on_finish: bool,
    /// Signals reach stores in other processes at once (PostgreSQL `LISTEN/NOTIFY`). Without
    /// it (SQLite), stores in one process still share signals, but a runner in another process
    /// learns of new work only from its safety-net poll.
    pub cross_process_signals: bool,
}

/// How to open a store beyond its URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL schema (one per tenant); created and migrated on open. Default `public`.
    pub schema: String,
    /// Most pooled connections (PostgreSQL) or read connections (SQLite).
    pub max_connections: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            schema: "public".to_string(),
            max_connections: 8,
        }
    }
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

struct Inner {
    backend: Backend,
    signals: broadcast::Sender<StoreSignal>,
    schema: String,
    /// Names the database in errors (`SQLite database /abs/x.db`, a redacted PostgreSQL URL).
    database: String,
    write_txns: AtomicU64,
    reads: AtomicU64,
    statements: counted::StatementCounter,
    /// Set by [`Store::close`]; read only when an operation failed, to say why.
    closed: AtomicBool,
}

/// The storage interface. Cheap to clone; all clones share connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// Runs one op on the store's backend, through `write` or `read`, with the given signal
/// function for writes. The op's body is expanded once per backend against that backend's
/// `ops` module.
macro_rules! dispatch {
    (write $self:ident, $signals:expr, |$c:ident| $body:expr) => {{
        $self.inner.write_txns.fetch_add(1, Ordering::Relaxed);
        let result = match &$self.inner.backend {
            Backend::Sqlite(s) => {
                s.write(move |$c| {
                    #[allow(unused_imports)]
                        use sqlite::{control_ops, ops};
                    Box::pin(async move { $body.await })
                })
                .await
            }
            Backend::Postgres(p) => {
                p.write(
                    move |$c| {
                        #[allow(unused_imports)]
                        use postgres::{control_ops, ops};
                        Box::pin(async move { $body.await })
                    },
                    $signals,
                )
                .await
            }
        };
        match result {
            Ok(value) => {
                $self.publish(($signals)(&value));
                Ok(value)
            }
            Err(e) => Err($self.failed(e)),
        }
    }};
    (read $self:ident, |$c:ident| $body:expr) => {
        dispatch!(read $self, [], |$c| $body)
    };
    // Reads are idempotent: a transient failure (a pooled connection the server closed, a
    // locked database) is retried a few times with backoff. The listed arguments are cloned
    // for each attempt.
    (read $self:ident, [$($arg:ident),*], |$c:ident| $body:expr) => {{
        let mut retry = ReadRetry::default();
        loop {
            $(let $arg = $arg.clone();)*
            $self.inner.reads.fetch_add(1, Ordering::Relaxed);
            let result = match &$self.inner.backend {
                Backend::Sqlite(s) => {
                    s.read(move |$c| {
                        #[allow(unused_imports)]
                        use sqlite::{control_ops, ops};
                        Box::pin(async move { $body.await })
                    })
                    .await
                }
                Backend::Postgres(p) => {
                    p.read(move |$c| {
                        #[allow(unused_imports)]
                        use postgres::{control_ops, ops};
                        Box::pin(async move { $body.await })
                    })
                    .await
                }
            };
            match result {
                Err(e) if !$self.inner.closed.load(Ordering::Relaxed) && retry.again(&e).await => {}
                other => break other.map_err(|e| $self.failed(e)),
            }
        }
    }};
}

/// Retries of one read: a few, with exponential backoff, only for transient errors.
#[derive(Default)]
struct ReadRetry {
    tries: u32,
}

impl ReadRetry {
    const MAX_TRIES: u32 = 5;

    /// Waits before the next attempt and returns true, or false when `e` is not transient or
    /// the retries are used up.
    async fn again(&mut self, e: &StoreError) -> bool {
        if !e.is_transient() || self.tries >= Self::MAX_TRIES {
            return false;
        }
        self.tries += 1;
        let delay = std::time::Duration::from_millis(50 << (self.tries - 1));
        tracing::warn!(error = %e, tries = self.tries, retry_in_ms = delay.as_millis() as u64, "reading from the database failed transiently; retrying the read");
        tokio::time::sleep(delay).await;
        true
    }
}

/// Stores opened on the same SQLite file in one process share one signal bus, so a runner
/// hears of work committed through another store at once. (Across processes SQLite has no
/// notification channel; runners there rely on their safety-net poll.)
fn shared_sqlite_bus(
    path: &std::path::Path,
    fresh: broadcast::Sender<StoreSignal>,
) -> broadcast::Sender<StoreSignal> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUSES: OnceLock<Mutex<HashMap<PathBuf, broadcast::WeakSender<StoreSignal>>>> =
        OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut buses = crate::sync::lock(BUSES.get_or_init(Default::default));
    buses.retain(|_, weak| weak.upgrade().is_some());
    if let Some(existing) = buses.get(&key).and_then(|w| w.upgrade()) {
        return existing;
    }
    buses.insert(key, fresh.downgrade());
    fresh
}

fn no_signals<T>(_: &T) -> Vec<StoreSignal> {
    Vec::new()
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let (mut signals, _) = broadcast::channel(4096);
        let statements = counted::StatementCounter::default();
        let parsed = DatabaseUrl::parse(url)?;
        let database = match &parsed {
            DatabaseUrl::Sqlite { target, .. } => target.describe(),
            DatabaseUrl::Postgres { url } => format!(
                "PostgreSQL database {} (schema {})",
                redact_url(url),
                options.schema
            ),
        };
        let backend = match parsed {
            DatabaseUrl::Sqlite {
                target,
                synchronous,
            } => {
                let store = sqlite::SqliteStore::open(
                    target.clone(),
                    synchronous,
                    options.max_connections,
                    statements.clone(),
                )
                .await
                .map_err(|e| e.in_database(&database))?;
                if let SqliteTarget::File(path) = &target {
                    signals = shared_sqlite_bus(path, signals);
                }
                Backend::Sqlite(store)
            }
            DatabaseUrl::Postgres { url } => Backend::Postgres(
                postgres::PgStore::open(
                    &url,
                    &options.schema,
                    options.max_connections,
                    signals.clone(),
                    &database,
                    statements.clone(),
                )
                .await
                .map_err(|e| e.in_database(&database))?,
            ),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                backend,
                signals,
                schema: options.schema,
                database,
                write_txns: AtomicU64::new(0),
                reads: AtomicU64::new(0),
                statements,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Closes the store's connections, for every clone: waits for the writes already queued to
    /// commit, then closes the writer and the readers (PostgreSQL: also the pool and the
    /// notification listener). On SQLite the file's last connection to close checkpoints the
    /// WAL and removes the `-wal` and `-shm` files, so a program that closes its store before
    /// exiting leaves only the database file. Operations afterwards fail with
    /// [`StoreError::Closed`]. Idempotent. Call it after stopping whatever uses the store
    /// (`Runner::shutdown`); dropping the last clone also closes the connections, but without
    /// waiting, so a process that exits right after may leave the WAL behind.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        match &self.inner.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }

    /// Whether commits are failing: the writer's current streak of failed batches (the last
    /// message, naming the database, and since when), or `None` once a batch has committed
    /// since. A batch fails when its transaction cannot begin or commit, or when one of its
    /// writes failed because the database did (full disk, read-only or damaged file, lost
    /// connection), not when a write was refused on its merits (not found, duplicate). Reads
    /// memory only (no I/O): cheap enough for every health check.
    pub fn write_health(&self) -> Option<WriteFailure> {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.write_health(),
            Backend::Postgres(p) => p.write_health(),
        }
    }

    /// What an operation's error says to its caller: the store was closed, or the failure
    /// with the database named.
    fn failed(&self, e: StoreError) -> StoreError {
        if self.inner.closed.load(Ordering::Relaxed) && e.is_database_failure() {
            return StoreError::Closed;
        }
        e.in_database(&self.inner.database)
    }

    /// Tells this process's subscribers what a committed write changed.
    /// A write the PostgreSQL writer merges into its batch: counted and its signals published
    /// as `dispatch!` does for every other write.
    async fn merged<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
        signals: impl FnOnce(&T) -> Vec<StoreSignal>,
    ) -> Result<T, StoreError> {
        self.inner.write_txns.fetch_add(1, Ordering::Relaxed);
        match write.await {
            Ok(value) => {
                self.publish(signals(&value));
                Ok(value)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn publish(&self, signals: impl IntoIterator<Item = StoreSignal>) {
        for s in signals {
            // No subscriber is not an error: nobody is waiting.
            let _ = self.inner.signals.send(s);
        }
    }

    /// `"sqlite"` or `"postgres"`, for messages and reports. To change behaviour by backend,
    /// ask [`capabilities`](Self::capabilities) instead.
    pub fn backend_name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// What this store's backend does differently (see [`Capabilities`]).
    pub fn capabilities(&self) -> Capabilities {
        match self.inner.backend {
            Backend::Sqlite(_) => Capabilities {
                merged_writes: false,
                refill_on_finish: false,
                cross_process_signals: false,
            },
            Backend::Postgres(_) => Capabilities {
                merged_writes: true,
                refill_on_finish: true,
                cross_process_signals: true,
            },
        }
    }

    /// SQLite's durability mode, or `None` on PostgreSQL.
    pub fn synchronous(&self) -> Option<Synchronous> {
        match &self.inner.backend {
            Backend::Sqlite(s) => Some(s.synchronous),
            Backend::Postgres(_) => None,
        }
    }

    /// Counters of database work so far, so benchmarks can report round trips per task.
    pub fn stats(&self) -> StoreStats {
        let write_ops = self.inner.write_txns.load(Ordering::Relaxed);
        let (merged_writes, merge_fallbacks) = match &self.inner.backend {
            Backend::Sqlite(_) => (0, 0),
            Backend::Postgres(p) => p.merge_counts(),
        };
        StoreStats {
            write_ops,
            reads: self.inner.reads.load(Ordering::Relaxed),
            statements: self.inner.statements.get(),
            commits: match &self.inner.backend {
                Backend::Sqlite(s) => s.commits(),
                Backend::Postgres(p) => p.commits(),
            },
            merged_writes,
            merge_fallbacks,
        }
    }

    /// Signals from this store: in process at once, and from other processes on PostgreSQL.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreSignal> {
        self.inner.signals.subscribe()
    }

    /// Drops this store's PostgreSQL schema with everything in it (a no-op error on SQLite,
    /// where a tenant is a file to delete).
    pub async fn schema_drop(&self) -> Result<(), StoreError> {
        match &self.inner.backend {
            Backend::Postgres(p) => p
                .drop_schema(&self.inner.schema)
                .await
                .map_err(|e| self.failed(e)),
            Backend::Sqlite(_) => Err(StoreError::InvalidSchema(
                "SQLite has no schemas; delete the database file instead".to_string(),
            )),
        }
    }

    // ---- executions -------------------------------------------------------------------

    /// Creates an execution, its tasks (roots `Ready`), its input context and first events.
    ///
    /// With `new.dedup_key`, fails with [`StoreError::DuplicateExecution`] (creating nothing)
    /// while an unfinished execution has the same key. With `new.cron`, claims the cron instant
    /// in the same transaction and fails with [`StoreError::CronInstantTaken`] (creating nothing)
    /// when it was already fired or skipped.
    pub async fn execution_create(&self, new: NewExecution) -> Result<ExecutionRecord, StoreError> {
        fn sig(_: &ExecutionRecord) -> Vec<StoreSignal> {
            vec![StoreSignal::TasksReady]
        }
        let now = now_ms();
        // On PostgreSQL creations are merged per group commit; a cron fire carries a claim on
        // its schedule and takes the ordinary path.
        if let Backend::Postgres(p) = &self.inner.backend
            && new.cron.is_none()
        {
            return self.merged(p.create(new, now), sig).await;
        }
        dispatch!(write self, sig, |c| ops::execution_create(c, new, now))
    }

    /// [`execution_create`](Self::execution_create), also claiming the new run's root tasks
    /// (at most `claim.limit`) for `claim.owner` in the same transaction: a runner that has
    /// free slots starts the run's first tasks when the creation commits, instead of waking
    /// its dispatcher for a claim that is a transaction of its own. `claim.only` is replaced
    /// by the roots. Where creations are merged per group commit (PostgreSQL), and for a cron
    /// fire, nothing is claimed here: the roots are left to the ordinary claim.
    pub async fn execution_create_claiming(
        &self,
        new: NewExecution,
        claim: ClaimRequest,
    ) -> Result<CreatedClaimed, StoreError> {
        fn sig(c: &CreatedClaimed) -> Vec<StoreSignal> {
            if c.left_ready {
                vec![StoreSignal::TasksReady]
            } else {
                Vec::new()
            }
        }
        if !self.claims_at_creation(&new) || claim.limit < 1 {
            let record = self.execution_create(new).await?;
            return Ok(CreatedClaimed {
                record,
                claimed: Vec::new(),
                left_ready: true,
            });
        }
        let now = now_ms();
        dispatch!(write self, sig, |c| ops::execution_create_claiming(c, new, claim, now))
    }

    /// Whether [`execution_create_claiming`](Self::execution_create_claiming) claims anything
    /// for `new`: not where creations are merged per group commit, nor for a cron fire.
    pub fn claims_at_creation(&self, new: &NewExecution) -> bool {
        !self.capabilities().merged_writes && new.cron.is_none()
    }

    pub async fn execution_get(&self, id: Uuid) -> Result<Option<ExecutionRecord>, StoreError> {
        dispatch!(read self, |c| ops::execution_get(c, id))
    }

    /// An execution with its final context (once it has one), in one read.
    pub async fn execution_get_with_final(
        &self,
        id: Uuid,
    ) -> Result<Option<(ExecutionRecord, Option<Context>)>, StoreError> {
        dispatch!(read self, |c| ops::execution_get_with_final(c, id))
    }

    /// Executions, newest first.
    pub async fn execution_list(
        &self,
        filter: ExecutionFilter,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        dispatch!(read self, [filter], |c| ops::execution_list(c, filter))
    }

    /// How many executions match `filter` (its `limit` and `offset` ignored).
    pub async fn execution_total(&self, filter: &ExecutionFilter) -> Result<i64, StoreError> {
        let filter = filter.clone();
        dispatch!(read self, [filter], |c| ops::execution_total(c, filter))
    }

    /// Tasks per status over every execution (statuses with none are absent).
    pub async fn task_count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>, StoreError> {
        dispatch!(read self, |c| ops::task_count_by_status(c))
    }

    /// How many executions have one of `statuses` (one indexed count, whatever the number).
    pub async fn execution_count(&self, statuses: &[ExecutionStatus]) -> Result<i64, StoreError> {
        let statuses = statuses.to_vec();
        dispatch!(read self, [statuses], |c| ops::execution_count(c, statuses))
    }

    /// Stops new tasks from starting; running ones finish.
    pub async fn execution_pause(&self, id: Uuid) -> Result<ExecutionRecord, StoreError> {
        fn sig(r: &ExecutionRecord) -> Vec<StoreSignal> {
            vec![StoreSignal::ExecutionChanged(r.id)]
        }
        let now = now_ms();
        dispatch!(write self, sig, |c| ops::execution_pause(c, id, now))
    }

    pub async fn execution_resume(&self, id: Uuid) -> Result<ExecutionRecord, StoreError> {
        fn sig(r: &ExecutionRecord) -> Vec<StoreSignal> {
            vec![StoreSignal::ExecutionChanged(r.id), StoreSignal::TasksReady]
        }
        let now = now_ms();
        dispatch!(write self, sig, |c| ops::execution_resume(c, id, now))
    }

    /// Ends the run as Cancelled: unstarted tasks are skipped; running ones finish.
    pub async fn execution_cancel(
        &self,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<ExecutionRecord, StoreError> {
        fn sig(r: &ExecutionRecord) -> Vec<StoreSignal> {
            vec![
                StoreSignal::ExecutionChanged(r.id),
                StoreSignal::ExecutionFinished(r.id),
            ]
        }
        let now = now_ms();
        dispatch!(write self, sig, |c| ops::execution_cancel(c, id, reason, now))
    }

    // ---- tasks ------------------------------------------------------------------------

    /// An execution's tasks in topological order.
    pub async fn task_list(&self, execution: Uuid) -> Result<Vec<TaskRecord>, StoreError> {
        dispatch!(read self, |c| ops::task_list(c, execution))
    }

    pub async fn task_statuses(
        &self,
        execution: Uuid,
        tasks: Vec<String>,
    ) -> Result<Vec<(String, TaskStatus)>, StoreError> {
        dispatch!(read self, [tasks], |c| ops::task_statuses(c, execution, tasks))
    }

    /// Leases ready tasks to `req.owner`; each claim bumps the task's attempt (fencing token).
    pub async fn task_claim(&self, req: ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        let now = now_ms();
        // On PostgreSQL claims are merged per group commit with the batch's finishes.
        if let Backend::Postgres(p) = &self.inner.backend {
            return self.merged(p.claim(req, now), no_signals).await;
        }
        dispatch!(write self, no_signals, |c| ops::task_claim(c, req, now))
    }

    /// Records how an attempt ended, atomically with everything it implies: status (fenced by
    /// attempt), output, dependents' countdown and readiness, hand-off and refill claims,
    /// counters, events and, for the last task, the execution's end. The answer comes after
    /// the commit. Identical on both backends, though PostgreSQL merges terminal finishes with
    /// the rest of their group commit (see `docs/storage.md`, "Completion").
    pub async fn task_finish(&self, finish: TaskFinish) -> Result<FinishResult, StoreError> {
        let now = now_ms();
        let id = finish.execution_id;
        // On PostgreSQL terminal finishes are merged per group commit (set-based statements);
        // a retry is rare and takes the ordinary path.
        if let Backend::Postgres(p) = &self.inner.backend
            && !matches!(finish.outcome, AttemptOutcome::Retry { .. })
        {
            return self
                .merged(p.finish(finish, now), |r: &FinishResult| {
                    r.signals(Some(id))
                })
                .await;
        }
        dispatch!(write self, move |r: &FinishResult| r.signals(Some(id)), |c| ops::task_finish(c, finish, now))
    }

    // ---- leases -----------------------------------------------------------------------

    /// Extends every lease `owner` holds until `until`; returns how many.
    pub async fn lease_renew(&self, owner: &str, until: Millis) -> Result<usize, StoreError> {
        let owner = owner.to_string();
        let now = now_ms();
        dispatch!(write self, no_signals, |c| ops::lease_renew(c, owner, until, now))
    }

    /// Puts tasks whose lease expired back to Ready, or fails them past `max_recoveries`.
    pub async fn lease_recover_expired(
        &self,
        max_recoveries: i32,
    ) -> Result<RecoveryResult, StoreError> {
        fn sig(r: &RecoveryResult) -> Vec<StoreSignal> {
            r.signals(None)
        }
        let now = now_ms();
        dispatch!(write self, sig, |c| ops::lease_recover_expired(c, max_recoveries, now))
    }

    /// Ends now the leases of owners named `prefix…` (but not `except…`): their tasks go back
    /// to `Ready` on the next recovery pass, counted as recoveries. Only for owners known to be
    /// dead (see [`crate::host::HostConfig::instance`]).
    pub async fn lease_expire_owners(
        &self,
        prefix: &str,
        except: &str,
    ) -> Result<usize, StoreError> {
        let (prefix, except) = (prefix.to_string(), except.to_string());
        let now = now_ms();
        dispatch!(write self, no_signals, |c| ops::lease_expire_owners(c, prefix, except, now))
    }

    /// Puts every task `owner` still runs back to `Ready` at once (not counted as a recovery).
    pub async fn lease_release(&self, owner: &str) -> Result<Vec<(Uuid, String)>, StoreError> {
        #[allow(clippy::ptr_arg)] // a signal function takes the op's result type as it is
        fn sig(r: &Vec<(Uuid, String)>) -> Vec<StoreSignal> {
            if r.is_empty() {
                Vec::new()
            } else {
                vec![StoreSignal::TasksReady]
            }
        }
        let owner = owner.to_string();
        let now = now_ms();
        dispatch!(write self, sig, |c| ops::lease_release(c, owner, now))
    }

    /// Hands one claimed attempt back to `Ready` before it ran (the execution was paused
    /// while the task waited for a slot, or the runner is stopping). Not counted as a
    /// recovery; false when the attempt no longer holds the task.
    pub async fn task_release(
        &self,
        execution: Uuid,
        task_id: &str,
        attempt: i32,
        reason: &str,
    ) -> Result<bool, StoreError> {
        fn sig(released: &bool) -> Vec<StoreSignal> {
            if *released {
                vec![StoreSignal::TasksReady]
            } else {
                Vec::new()
            }
        }
        let (task, reason) = (task_id.to_string(), reason.to_string());
        let now = now_ms();
        dispatch!(write self, sig, |c| ops::task_release(c, execution, task, attempt, reason, now))
    }

    // ---- events -----------------------------------------------------------------------

    /// An execution's events with `seq > after_seq`, in order.
    pub async fn event_list(
        &self,
        execution: Uuid,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        dispatch!(read self, |c| ops::event_list(c, execution, after_seq, limit))
    }

    /// Deletes events created before `before` (or only counts them with `dry_run`).
    pub async fn event_cleanup(&self, before: Millis, dry_run: bool) -> Result<i64, StoreError> {
        if dry_run {
            return dispatch!(read self, |c| ops::event_cleanup(c, before, true));
        }
        dispatch!(write self, no_signals, |c| ops::event_cleanup(c, before, false))
    }

    // ---- cron schedules ---------------------------------------------------------------

    /// Makes `package_id`'s stored cron schedules exactly `specs` (one row per name): inserts
    /// new ones, updates changed ones (resetting the cursor only when the expression or time
    /// zone changed), deletes names no longer declared. Idempotent. Returns the package's rows.
    pub async fn cron_schedule_write(
        &self,
        package_id: &str,
        tenant: &str,
        specs: Vec<NewCronSchedule>,
    ) -> Result<Vec<CronScheduleRecord>, StoreError> {
        let (package_id, tenant) = (package_id.to_string(), tenant.to_string());
        let now = now_ms();
        dispatch!(write self, no_signals, |c| ops::cron_schedule_write(c, package_id, tenant, specs, now))
    }

    /// Deletes `package_id`'s cron schedules and their fire history; returns how many
    /// schedules (0 when there were none).
    pub async fn cron_schedule_delete(&self, package_id: &str) -> Result<usize, StoreError> {
        let package_id = package_id.to_string();
        dispatch!(write self, no_signals, |c| ops::cron_schedule_delete(c, package_id))
    }

    /// Cron schedules, earliest cursor first.
    pub async fn cron_schedule_list(
        &self,
        filter: CronScheduleFilter,
    ) -> Result<Vec<CronScheduleRecord>, StoreError> {
        dispatch!(read self, [filter], |c| ops::cron_schedule_list(c, filter))
    }

    /// The earliest cursor of any schedule, or `None` without schedules.
    pub async fn cron_schedule_next(&self) -> Result<Option<Millis>, StoreError> {
        dispatch!(read self, |c| ops::cron_schedule_next(c))
    }

    /// Moves schedule `id`'s cursor from exactly `from` to `to` (later) without firing, adding
    /// `missed` to its dropped-instant count. `false` when someone else moved it first.
    pub async fn cron_schedule_advance(
        &self,
        id: Uuid,
        from: Millis,
        to: Millis,
        missed: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        dispatch!(write self, no_signals, |c| ops::cron_schedule_advance(c, id, from, to, missed, now))
    }

    /// Fired cron instants, newest first (of one schedule, or of all).
    pub async fn cron_fire_list(
        &self,
        schedule: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<CronFireRecord>, StoreError> {
        dispatch!(read self, |c| ops::cron_fire_list(c, schedule, limit))
    }

    /// Keeps the newest `keep` fire records per schedule; returns how many were deleted.
    pub async fn cron_fire_prune(&self, keep: i64) -> Result<usize, StoreError> {
        dispatch!(write self, no_signals, |c| ops::cron_fire_prune(c, keep))
    }

    // ---- contexts ---------------------------------------------------------------------

    /// A context document: [`INPUT_CONTEXT`], [`FINAL_CONTEXT`] or a task id.
    pub async fn context_get(
        &self,
        execution: Uuid,
        owner: &str,
    ) -> Result<Option<Context>, StoreError> {
        let owner = owner.to_string();
        dispatch!(read self, [owner], |c| ops::context_get(c, execution, owner))
    }

    /// The documents of `owners` that exist.
    pub async fn contexts_get(
        &self,
        execution: Uuid,
        owners: Vec<String>,
    ) -> Result<BTreeMap<String, Context>, StoreError> {
        dispatch!(read self, [owners], |c| ops::contexts_get(c, execution, owners))
    }
    // ---- control plane: API keys ------------------------------------------------------
    // Keys, tenants, packages and the audit log live in the admin tenant's store (`public`).

    /// Stores a key (its hash only).
    pub async fn api_key_create(&self, new: NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::api_key_create(c, new, now))
    }

    /// The key with this hash, revoked ones too (the caller tells "revoked" from "unknown").
    pub async fn api_key_find(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = hash.to_string();
        dispatch!(read self, [hash], |c| control_ops::api_key_find(c, hash))
    }

    /// Keys of one tenant (`None`: every key), oldest first.
    pub async fn api_key_list(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let tenant = tenant.map(str::to_string);
        dispatch!(read self, [tenant], |c| control_ops::api_key_list(c, tenant))
    }

    /// Revokes key `id`, only if it belongs to `tenant` when one is given. `None` when there is
    /// no such key (in that tenant); revoking twice keeps the first `revoked_at`.
    pub async fn api_key_revoke(
        &self,
        id: Uuid,
        tenant: Option<&str>,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let tenant = tenant.map(str::to_string);
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::api_key_revoke(c, id, tenant, now))
    }

    /// Revokes every unrevoked key of `tenant` (tenant deletion); returns how many.
    pub async fn api_key_revoke_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let tenant = tenant.to_string();
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::api_key_revoke_tenant(c, tenant, now))
    }

    /// How many keys are not revoked (the server bootstraps an admin key when there are none).
    pub async fn api_key_count(&self) -> Result<i64, StoreError> {
        dispatch!(read self, |c| control_ops::api_key_count(c))
    }

    // ---- control plane: tenants -------------------------------------------------------

    /// Records a tenant. [`StoreError::TenantExists`] (naming the existing tenant) when a
    /// tenant of the same name in any case exists. Check the name with
    /// [`crate::tenant::tenant_name_check`] first.
    pub async fn tenant_create(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<TenantRecord, StoreError> {
        let (name, description) = (name.to_string(), description.map(str::to_string));
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::tenant_create(c, name, description, now))
    }

    /// The tenant named `name`, in any case (the record carries the name as created).
    pub async fn tenant_get(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let name = name.to_string();
        dispatch!(read self, [name], |c| control_ops::tenant_get(c, name))
    }

    /// Every tenant, by name (case-insensitively).
    pub async fn tenant_list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        dispatch!(read self, |c| control_ops::tenant_list(c))
    }

    /// Forgets the tenant named `name` (in any case); false when there is none. Its keys,
    /// packages and store are the caller's to remove.
    pub async fn tenant_delete(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        dispatch!(write self, no_signals, |c| control_ops::tenant_delete(c, name))
    }

    // ---- control plane: packages ------------------------------------------------------

    /// Stores an uploaded package (computing its SHA-256 and size) and bumps the package
    /// generation. [`StoreError::PackageExists`] when the tenant has this name and version.
    pub async fn package_create(&self, new: NewPackage) -> Result<PackageRecord, StoreError> {
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_create(c, new, now))
    }

    pub async fn package_get(&self, id: Uuid) -> Result<Option<PackageRecord>, StoreError> {
        dispatch!(read self, |c| control_ops::package_get(c, id))
    }

    /// Packages of one tenant (`None`: all), by tenant, name, then upload time.
    pub async fn package_list(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<PackageRecord>, StoreError> {
        let tenant = tenant.map(str::to_string);
        dispatch!(read self, [tenant], |c| control_ops::package_list(c, tenant))
    }

    /// A package's archive and signature bytes.
    pub async fn package_archive(
        &self,
        id: Uuid,
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        dispatch!(read self, |c| control_ops::package_archive(c, id))
    }

    /// Deletes a package (bumping the generation); false when there is none.
    pub async fn package_delete(&self, id: Uuid) -> Result<bool, StoreError> {
        dispatch!(write self, no_signals, |c| control_ops::package_delete(c, id))
    }

    /// Marks a package as being unloaded: replicas stop treating it as desired, and it stays
    /// listed until a rerun of its delete finishes the unload (bumping the generation); false
    /// when there is none.
    pub async fn package_set_unloading(&self, id: Uuid) -> Result<bool, StoreError> {
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_set_unloading(c, id, now))
    }

    /// Deletes every package of `tenant` (bumping the generation if any); returns how many.
    pub async fn package_delete_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let tenant = tenant.to_string();
        dispatch!(write self, no_signals, |c| control_ops::package_delete_tenant(c, tenant))
    }

    /// Records a build's outcome (bumping the generation); with `archive`, the built archive
    /// replaces the stored one (with its digest and size). False when there is no such package.
    pub async fn package_set_build(
        &self,
        id: Uuid,
        status: BuildStatus,
        error: Option<&str>,
        archive: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let error = error.map(str::to_string);
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_set_build(c, id, status, error, archive, now))
    }

    // ---- control plane: package builds (the compiler service) -------------------------
    // A claim is fenced by the worker's id: once a sweep hands a stale claim back, its old
    // holder can no longer heartbeat, finish or release it.

    /// Claims the oldest pending package (not being deleted) for `worker`, marking it
    /// `Building` with a fresh heartbeat; `None` when nothing is pending. Concurrent claimers
    /// never get the same package (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one writer
    /// and a status-checked update).
    pub async fn package_build_claim(
        &self,
        worker: &str,
    ) -> Result<Option<BuildClaim>, StoreError> {
        let worker = worker.to_string();
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_build_claim(c, worker, now))
    }

    /// Stamps `worker`'s heartbeat on its claim of package `id`; false when the claim is no
    /// longer its own (swept as stale, or the package deleted): stop building then.
    pub async fn package_build_heartbeat(
        &self,
        id: Uuid,
        worker: &str,
    ) -> Result<bool, StoreError> {
        let worker = worker.to_string();
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_build_heartbeat(c, id, worker, now))
    }

    /// Records how `worker`'s build of package `id` ended, with its log's tail, and bumps the
    /// package generation (a built package is then loaded by every replica: its new archive
    /// replaces the stored one, `has_library` set, the signature replaced by the build's). False,
    /// changing nothing, when `worker` no longer holds the claim.
    pub async fn package_build_finish(
        &self,
        id: Uuid,
        worker: &str,
        finish: BuildFinish,
    ) -> Result<bool, StoreError> {
        let worker = worker.to_string();
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_build_finish(c, id, worker, finish, now))
    }

    /// Hands `worker`'s claim of package `id` back to pending without an outcome (a compiler
    /// stopping mid-build); the attempt is not counted. False when the claim is not its own.
    pub async fn package_build_release(&self, id: Uuid, worker: &str) -> Result<bool, StoreError> {
        let worker = worker.to_string();
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_build_release(c, id, worker, now))
    }

    /// Reclaims builds whose heartbeat is older than `stale_before`: back to pending, or
    /// failed once the package has had `max_attempts` claims. Returns what it reclaimed.
    pub async fn package_build_sweep(
        &self,
        stale_before: Millis,
        max_attempts: i32,
    ) -> Result<Vec<SweptBuild>, StoreError> {
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::package_build_sweep(c, stale_before, max_attempts, now))
    }

    /// Packages not being deleted, per build status (the build queue's depth).
    pub async fn package_build_counts(&self) -> Result<BuildCounts, StoreError> {
        dispatch!(read self, |c| control_ops::package_build_counts(c))
    }

    /// The tail of package `id`'s last build log (`None`: no log, or no such package).
    pub async fn package_build_log(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        dispatch!(read self, |c| control_ops::package_build_log(c, id))
    }

    /// A counter bumped in the same transaction as every package create, delete and build
    /// update, so replicas notice a change with one cheap read.
    /// Bumps the package generation without a package change (a tenant created or removed),
    /// so replicas reconcile at once.
    pub async fn package_generation_bump(&self) -> Result<(), StoreError> {
        dispatch!(write self, no_signals, |c| control_ops::bump_generation(c))
    }

    pub async fn package_generation(&self) -> Result<i64, StoreError> {
        dispatch!(read self, |c| control_ops::package_generation(c))
    }

    // ---- control plane: audit log -----------------------------------------------------

    pub async fn audit_append(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::audit_append(c, entry, now))
    }

    /// The newest `limit` entries (1-100000), newest first.
    pub async fn audit_list(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        dispatch!(read self, |c| control_ops::audit_list(c, limit))
    }

    // ---- trigger polls across replicas ------------------------------------------------

    /// Trigger polls across replicas: true for exactly one caller per (tenant, trigger, slot),
    /// in any process sharing the database.
    pub async fn trigger_poll_claim(
        &self,
        tenant: &str,
        trigger: &str,
        slot: i64,
    ) -> Result<bool, StoreError> {
        let (tenant, trigger) = (tenant.to_string(), trigger.to_string());
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::trigger_poll_claim(c, tenant, trigger, slot, now))
    }

    /// Deletes poll claims made before `before`; returns how many.
    pub async fn trigger_poll_prune(&self, before: Millis) -> Result<usize, StoreError> {
        dispatch!(write self, no_signals, |c| control_ops::trigger_poll_prune(c, before))
    }

    // ---- control plane: paused workflows ----------------------------------------------

    /// Records `workflow` of `tenant` as paused (`true`) or not; `false` when it already was.
    /// Bumps the package generation when something changed, so other replicas follow.
    pub async fn workflow_pause_set(
        &self,
        tenant: &str,
        workflow: &str,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let (tenant, workflow) = (tenant.to_string(), workflow.to_string());
        let now = now_ms();
        dispatch!(write self, no_signals, |c| control_ops::workflow_pause_set(c, tenant, workflow, paused, now))
    }

    /// The paused workflows of `tenant`, by name.
    pub async fn workflow_pause_list(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let tenant = tenant.to_string();
        dispatch!(read self, [tenant], |c| control_ops::workflow_pause_list(c, tenant))
    }

    /// Forgets `tenant`'s paused workflows (a tenant removal); returns how many.
    pub async fn workflow_pause_delete_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let tenant = tenant.to_string();
        dispatch!(write self, no_signals, |c| control_ops::workflow_pause_delete_tenant(c, tenant))
    }
}
