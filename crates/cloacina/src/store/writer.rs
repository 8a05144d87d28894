//! Group commit: one writer connection that takes every write waiting, runs them in one
//! transaction (each inside its own savepoint, so one failing write cannot take the others
//! down) and commits once. Concurrent state changes share a commit (one fsync) instead of
//! paying one each, and writers never wait on each other's row locks. Used by both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel_async::SimpleAsyncConnection;
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use crate::workflow::BoxFuture;

/// Most writes one transaction takes; bounds commit latency under heavy load.
const MAX_BATCH: usize = 512;

type Deliver = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

struct JobDone {
    ok: bool,
    deliver: Deliver,
}

type Run<C> = Box<dyn for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, JobDone> + Send>;

/// A queued write: `run` executes it inside the batch; `fail` answers it without running when
/// its batch could not be started.
struct Job<C> {
    run: Run<C>,
    fail: Box<dyn FnOnce(&StoreError) + Send>,
}

/// Opens a fresh connection after the old one was lost (PostgreSQL restarts, network blips).
pub(crate) type Reconnect<C> =
    Box<dyn Fn() -> BoxFuture<'static, Result<C, StoreError>> + Send + Sync>;

pub(crate) struct Writer<C> {
    jobs: mpsc::UnboundedSender<Job<C>>,
    commits: Arc<AtomicU64>,
}

impl<C> Writer<C>
where
    C: SimpleAsyncConnection + Send + 'static,
{
    /// Starts the writer as a task on the current runtime (for connections that do async I/O).
    pub(crate) fn spawn(conn: C, begin: &'static str, reconnect: Option<Reconnect<C>>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer_loop(conn, rx, commits.clone(), begin, reconnect));
        Writer { jobs: tx, commits }
    }

    /// Starts the writer on a thread of its own (for connections whose calls block).
    pub(crate) fn spawn_thread(conn: C, begin: &'static str, name: &str) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        std::thread::Builder::new().name(name.to_string()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(writer_loop(conn, rx, counter, begin, None)),
                Err(e) => tracing::error!(error = %e, "cannot start the database writer thread's runtime"),
            }
        })?;
        Ok(Writer { jobs: tx, commits })
    }

    /// Transactions committed so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` inside the writer's next transaction; resolves after the commit.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(std::sync::Mutex::new(Some(tx)));
        let fail_slot = slot.clone();
        let run: Run<C> = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |commit| {
                    let out = match (commit, result) {
                        (Ok(()), r) => r,
                        (Err(_), Err(own)) => Err(own),
                        (Err(e), Ok(_)) => Err(StoreError::Commit(e.to_string())),
                    };
                    if let Some(tx) = slot.lock().ok().and_then(|mut s| s.take()) {
                        let _ = tx.send(out);
                    }
                });
                JobDone { ok, deliver }
            })
        });
        let fail = Box::new(move |e: &StoreError| {
            if let Some(tx) = fail_slot.lock().ok().and_then(|mut s| s.take()) {
                let _ = tx.send(Err(StoreError::Commit(e.to_string())));
            }
        });
        self.jobs
            .send(Job { run, fail })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn writer_loop<C: SimpleAsyncConnection + Send>(
    mut conn: C,
    mut rx: mpsc::UnboundedReceiver<Job<C>>,
    commits: Arc<AtomicU64>,
    begin: &'static str,
    reconnect: Option<Reconnect<C>>,
) {
    let mut batch: Vec<Job<C>> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match run_batch(&mut conn, &mut batch, begin).await {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // A connection that cannot even run a statement is replaced; the next batch
                // goes to the new one. The failed batch's callers already have their error.
                if let Some(reconnect) = &reconnect
                    && conn.batch_execute("SELECT 1").await.is_err()
                {
                    match reconnect().await {
                        Ok(fresh) => {
                            tracing::warn!(error = %e, "database writer connection lost; reconnected");
                            conn = fresh;
                        }
                        Err(re) => {
                            tracing::warn!(error = %re, "database writer cannot reconnect yet")
                        }
                    }
                }
            }
        }
    }
}

/// One group commit: every job in its own savepoint (skipped for a lone job, where the
/// transaction itself is the unit), one COMMIT for all.
async fn run_batch<C: SimpleAsyncConnection + Send>(
    conn: &mut C,
    batch: &mut Vec<Job<C>>,
    begin: &'static str,
) -> Result<(), StoreError> {
    let single = batch.len() == 1;
    if let Err(e) = conn.batch_execute(begin).await {
        let err = StoreError::Query(e);
        for job in batch.drain(..) {
            (job.fail)(&err);
        }
        return Err(err);
    }
    let mut delivers: Vec<Deliver> = Vec::with_capacity(batch.len());
    let mut failure: Option<StoreError> = None;
    let mut lone_failed = false;
    for job in batch.drain(..) {
        if let Some(err) = &failure {
            (job.fail)(err);
            continue;
        }
        if !single && let Err(e) = conn.batch_execute("SAVEPOINT job").await {
            let err = StoreError::Query(e);
            (job.fail)(&err);
            failure = Some(err);
            continue;
        }
        let done = (job.run)(conn).await;
        if single {
            lone_failed = !done.ok;
        } else {
            let sql = if done.ok {
                "RELEASE SAVEPOINT job"
            } else {
                "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"
            };
            if let Err(e) = conn.batch_execute(sql).await {
                failure = Some(StoreError::Query(e));
            }
        }
        delivers.push(done.deliver);
    }
    let outcome = match failure {
        Some(e) => Err(e),
        None if lone_failed => conn
            .batch_execute("ROLLBACK")
            .await
            .map_err(StoreError::Query),
        None => conn
            .batch_execute("COMMIT")
            .await
            .map_err(StoreError::Query),
    };
    if outcome.is_err() {
        let _ = conn.batch_execute("ROLLBACK").await;
    }
    for deliver in delivers {
        deliver(outcome.as_ref().map(|_| ()));
    }
    outcome
}
