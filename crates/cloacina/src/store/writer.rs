//! Group commit: one writer connection that takes every write waiting, runs them in one
//! transaction (each inside its own savepoint, so one failing write cannot take the others
//! down) and commits once. Concurrent state changes share a commit (one fsync) instead of
//! paying one each, and writers never wait on each other's row locks. Used by both backends.
//!
//! A backend may also *merge* writes of hot kinds (on PostgreSQL: terminal task finishes,
//! claims and creations without a cron claim; see `pg_batch`): the writer runs a batch's
//! ordinary writes first, in arrival order, then hands all of its merged items to
//! [`Merge::many`], which writes them with a handful of set-based statements instead of
//! several statements each. If that fails, it is rolled back (to a savepoint, or the whole
//! transaction when nothing else is in it) and every item runs alone through [`Merge::one`]
//! (the per-write path every backend has) in a savepoint of its own, so each item gets the
//! answer it gets as a separate write. Either way every write of the batch is answered only
//! after the one commit. SQLite merges nothing ([`NoMerge`]): each write runs alone.
//!
//! Tests force several writes into one batch by holding the writer with a write that waits
//! (`Store::hold_writer`) while they queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::types::{Millis, now_ms};
use crate::workflow::BoxFuture;

/// Most writes one transaction takes; bounds commit latency under heavy load.
const MAX_BATCH: usize = 512;

/// How long the writer keeps retrying a batch whose transaction cannot begin for a transient
/// reason (lost connection, restarting server, database locked by another process) before it
/// answers the batch's writes with the error.
const BEGIN_RETRY_FOR: Duration = Duration::from_secs(30);
/// The first and the longest wait between those retries (doubling in between).
const BEGIN_RETRY_FIRST: Duration = Duration::from_millis(50);
const BEGIN_RETRY_MAX: Duration = Duration::from_secs(2);

type Deliver = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

struct JobDone {
    ok: bool,
    /// The write failed because the database did (full, read-only, unreachable): the batch
    /// counts as failed for the writer's health even if its COMMIT goes through.
    db_failure: Option<String>,
    /// Notifications to send with the commit (PostgreSQL `NOTIFY` payloads).
    notes: Vec<String>,
    deliver: Deliver,
}

type Run<C> = Box<dyn for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, JobDone> + Send>;

/// A queued write: `run` executes it inside the batch; `fail` answers it without running when
/// its batch could not be started.
struct Job<C> {
    run: Run<C>,
    fail: Box<dyn FnOnce(&StoreError) + Send>,
}

/// A queued mergeable write and where its answer goes.
struct Merged<M: Merge<C>, C> {
    item: M::Item,
    reply: oneshot::Sender<Result<M::Output, StoreError>>,
}

enum Queued<M: Merge<C>, C> {
    Job(Job<C>),
    Merged(Merged<M, C>),
    /// Commit what is queued before this, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// Commits are failing: what the last failed batch said, and since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteFailure {
    /// The last failure, naming the database (`SQLite database /path/x.db: ...`).
    pub message: String,
    /// When the first failure of this streak happened (Unix milliseconds).
    pub since: Millis,
    /// When the last one happened (Unix milliseconds).
    pub last: Millis,
    /// Failed batches in this streak (each batch is one transaction of one or more writes).
    pub failures: u64,
}

/// The outcome of the writer's batches, read by health checks. The writer touches it once per
/// batch: on success one atomic load (and a lock only when ending a failure streak).
pub(crate) struct WriteHealth {
    failing: AtomicBool,
    last: Mutex<Option<WriteFailure>>,
    /// Names the database in the recorded messages.
    database: String,
}

impl WriteHealth {
    fn new(database: String) -> Self {
        WriteHealth {
            failing: AtomicBool::new(false),
            last: Mutex::new(None),
            database,
        }
    }

    fn succeeded(&self) {
        if self.failing.load(Ordering::Acquire) {
            *crate::sync::lock(&self.last) = None;
            self.failing.store(false, Ordering::Release);
        }
    }

    fn failed(&self, error: &str) {
        let now = now_ms();
        let message = format!("{}: {error}", self.database);
        let mut last = crate::sync::lock(&self.last);
        match last.as_mut() {
            Some(f) => {
                f.message = message;
                f.last = now;
                f.failures += 1;
            }
            None => {
                *last = Some(WriteFailure {
                    message,
                    since: now,
                    last: now,
                    failures: 1,
                })
            }
        }
        self.failing.store(true, Ordering::Release);
    }

    /// The current failure streak, or `None` when the last batch committed. No I/O.
    pub(crate) fn get(&self) -> Option<WriteFailure> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        crate::sync::lock(&self.last).clone()
    }

    /// The writer is gone (closed, or its thread or task ended): nothing can commit any more.
    fn stopped(&self) -> WriteFailure {
        let now = now_ms();
        let mut last = crate::sync::lock(&self.last);
        let since = last.as_ref().map_or(now, |f| f.since);
        let failure = WriteFailure {
            message: format!("{}: {}", self.database, StoreError::WriterGone),
            since,
            last: now,
            failures: last.as_ref().map_or(0, |f| f.failures),
        };
        *last = Some(failure.clone());
        self.failing.store(true, Ordering::Release);
        failure
    }
}

/// Writes of one kind that a backend can run together, and how to send notifications.
pub(crate) trait Merge<C>: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Output: Send + 'static;
    /// Writes every item; one output per item, in order. On error the writer rolls back
    /// whatever it wrote and runs the items one by one.
    fn many<'c>(
        &'c self,
        conn: &'c mut C,
        items: &'c [Self::Item],
    ) -> BoxFuture<'c, Result<Vec<Self::Output>, StoreError>>;
    /// Writes one item alone (the fallback after `many` failed).
    fn one<'c>(
        &'c self,
        conn: &'c mut C,
        item: &'c Self::Item,
    ) -> BoxFuture<'c, Result<Self::Output, StoreError>>;
    /// Notifications an item's output implies.
    fn notes(&self, output: &Self::Output) -> Vec<String>;
    /// Sends a batch's notifications inside its transaction (delivered on commit).
    fn notify<'c>(
        &'c self,
        conn: &'c mut C,
        notes: Vec<String>,
    ) -> BoxFuture<'c, Result<(), StoreError>>;
}

/// A connection the writer drives. Its savepoint statements (several per group commit, one
/// pair per write) go through [`WriterConn::savepoint`]: sent as one text by default (one
/// round trip on PostgreSQL); SQLite runs each statement of the text prepared and kept, where
/// `batch_execute` would parse them on every write.
pub(crate) trait WriterConn: SimpleAsyncConnection + Send {
    /// Runs `sql`, statements separated by `"; "`.
    fn savepoint<'c>(&'c mut self, sql: &'static str) -> BoxFuture<'c, Result<(), StoreError>> {
        Box::pin(async move { self.batch_execute(sql).await.map_err(StoreError::from) })
    }
}

/// For a backend that merges nothing and sends no notifications (SQLite).
pub(crate) struct NoMerge;

impl<C: Send + 'static> Merge<C> for NoMerge {
    type Item = std::convert::Infallible;
    type Output = ();
    fn many<'c>(
        &'c self,
        _: &'c mut C,
        items: &'c [Self::Item],
    ) -> BoxFuture<'c, Result<Vec<()>, StoreError>> {
        let out = match items.first() {
            Some(never) => match *never {},
            None => Vec::new(),
        };
        Box::pin(std::future::ready(Ok(out)))
    }
    fn one<'c>(
        &'c self,
        _: &'c mut C,
        item: &'c Self::Item,
    ) -> BoxFuture<'c, Result<(), StoreError>> {
        match *item {}
    }
    fn notes(&self, _: &()) -> Vec<String> {
        Vec::new()
    }
    fn notify<'c>(&'c self, _: &'c mut C, _: Vec<String>) -> BoxFuture<'c, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Opens a fresh connection after the old one was lost (PostgreSQL restarts, network blips).
pub(crate) type Reconnect<C> =
    Box<dyn Fn() -> BoxFuture<'static, Result<C, StoreError>> + Send + Sync>;

pub(crate) struct Writer<C, M: Merge<C> = NoMerge> {
    jobs: mpsc::UnboundedSender<Queued<M, C>>,
    commits: Arc<AtomicU64>,
    health: Arc<WriteHealth>,
}

impl<C, M> Writer<C, M>
where
    C: WriterConn + 'static,
    M: Merge<C>,
{
    /// Starts the writer as a task on the current runtime (for connections that do async I/O).
    /// `database` names the database in health messages.
    pub(crate) fn spawn(
        conn: C,
        begin: &'static str,
        merge: M,
        reconnect: Option<Reconnect<C>>,
        database: String,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        let health = Arc::new(WriteHealth::new(database));
        let state = LoopState {
            commits: commits.clone(),
            health: health.clone(),
            begin,
        };
        tokio::spawn(writer_loop(conn, rx, state, merge, reconnect));
        Writer {
            jobs: tx,
            commits,
            health,
        }
    }

    /// Starts the writer on a thread of its own (for connections whose calls block).
    pub(crate) fn spawn_thread(
        conn: C,
        begin: &'static str,
        merge: M,
        name: &str,
        database: String,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        let health = Arc::new(WriteHealth::new(database));
        let state = LoopState {
            commits: commits.clone(),
            health: health.clone(),
            begin,
        };
        std::thread::Builder::new().name(name.to_string()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(writer_loop(conn, rx, state, merge, None)),
                Err(e) => tracing::error!(error = %e, "cannot start the database writer thread's runtime"),
            }
        })?;
        Ok(Writer {
            jobs: tx,
            commits,
            health,
        })
    }

    /// Transactions committed so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The current commit failure streak, or `None` when the last batch committed; a
    /// failure too once the writer has stopped, since nothing can commit then.
    pub(crate) fn health(&self) -> Option<WriteFailure> {
        if self.jobs.is_closed() {
            return Some(self.health.stopped());
        }
        self.health.get()
    }

    /// Commits every write queued so far, then closes the connection; resolves once it is
    /// closed. Writes queued afterwards fail with [`StoreError::WriterGone`]. Idempotent.
    pub(crate) async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.jobs.send(Queued::Close(ack)).is_ok() {
            // An error means the writer already stopped, its connection with it.
            let _ = done.await;
        }
    }

    /// Runs `f` inside the writer's next transaction; resolves after the commit.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        self.write_noting(f, |_: &T| Vec::new()).await
    }

    /// Like [`write`](Self::write), and sends the notifications `notes` derives from a
    /// successful result with the commit.
    pub(crate) async fn write_noting<T, F, N>(&self, f: F, notes: N) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
        N: FnOnce(&T) -> Vec<String> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(std::sync::Mutex::new(Some(tx)));
        let fail_slot = slot.clone();
        let run: Run<C> = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let db_failure = match &result {
                    Err(e) if e.is_database_failure() => Some(e.to_string()),
                    _ => None,
                };
                let notes = result.as_ref().map(notes).unwrap_or_default();
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
                JobDone {
                    ok,
                    db_failure,
                    notes,
                    deliver,
                }
            })
        });
        let fail = Box::new(move |e: &StoreError| {
            if let Some(tx) = fail_slot.lock().ok().and_then(|mut s| s.take()) {
                let _ = tx.send(Err(StoreError::Commit(e.to_string())));
            }
        });
        self.jobs
            .send(Queued::Job(Job { run, fail }))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues a mergeable write; resolves after the commit.
    pub(crate) async fn merged(&self, item: M::Item) -> Result<M::Output, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Queued::Merged(Merged { item, reply }))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// What the writer loop shares with its [`Writer`].
struct LoopState {
    commits: Arc<AtomicU64>,
    health: Arc<WriteHealth>,
    begin: &'static str,
}

async fn writer_loop<C: WriterConn, M: Merge<C>>(
    mut conn: C,
    mut rx: mpsc::UnboundedReceiver<Queued<M, C>>,
    state: LoopState,
    merge: M,
    reconnect: Option<Reconnect<C>>,
) {
    let mut jobs: Vec<Job<C>> = Vec::new();
    let mut merged: Vec<Merged<M, C>> = Vec::new();
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(q) = next.take() {
            match q {
                Queued::Job(j) => jobs.push(j),
                Queued::Merged(m) => merged.push(m),
                Queued::Close(ack) => {
                    closing.push(ack);
                    break;
                }
            }
            if jobs.len() + merged.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if jobs.is_empty() && merged.is_empty() {
            if closing.is_empty() {
                continue;
            }
            break;
        }
        let outcome = run_batch(
            &mut conn,
            &mut jobs,
            &mut merged,
            state.begin,
            &merge,
            &state.health,
            reconnect.as_ref(),
        )
        .await;
        match outcome {
            Ok(()) => {
                state.commits.fetch_add(1, Ordering::Relaxed);
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
        if !closing.is_empty() {
            break;
        }
    }
    // Close the connection (SQLite: the last one checkpoints the WAL and removes the -wal and
    // -shm files) before answering, so a caller that exits next leaves a clean database.
    drop(conn);
    // Writes queued after the close are dropped unanswered (their callers get `WriterGone`);
    // later closes are answered now that the connection is closed.
    rx.close();
    while let Ok(q) = rx.try_recv() {
        if let Queued::Close(ack) = q {
            closing.push(ack);
        }
    }
    for ack in closing {
        let _ = ack.send(());
    }
}

/// Runs one write with the savepoint named `job` around it, already set by the caller.
/// Afterwards the savepoint is set again (moved past this write, or rolled back to) when
/// `more` writes follow, in the same round trip as the release or rollback.
async fn after_savepoint<C: WriterConn>(
    conn: &mut C,
    ok: bool,
    more: bool,
) -> Result<(), StoreError> {
    let sql = match (ok, more) {
        (true, true) => "RELEASE SAVEPOINT job; SAVEPOINT job",
        (true, false) => "RELEASE SAVEPOINT job",
        // ROLLBACK TO keeps the savepoint, ready for the next write.
        (false, true) => "ROLLBACK TO SAVEPOINT job",
        (false, false) => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job",
    };
    conn.savepoint(sql).await
}

type Answer<M, C> = (
    oneshot::Sender<Result<<M as Merge<C>>::Output, StoreError>>,
    Result<<M as Merge<C>>::Output, StoreError>,
);

/// One group commit: every job in its own savepoint (skipped for a lone job, where the
/// transaction itself is the unit), the merged items together, one COMMIT for all.
async fn run_batch<C: WriterConn, M: Merge<C>>(
    conn: &mut C,
    jobs: &mut Vec<Job<C>>,
    merged: &mut Vec<Merged<M, C>>,
    begin: &'static str,
    merge: &M,
    health: &WriteHealth,
    reconnect: Option<&Reconnect<C>>,
) -> Result<(), StoreError> {
    let single = jobs.len() + merged.len() == 1;
    // Health is recorded before any caller hears back, so a caller that saw its write fail
    // (or succeed) reads a health that already says so.
    if let Err(err) = begin_retrying(conn, begin, health, reconnect).await {
        health.failed(&err.to_string());
        for job in jobs.drain(..) {
            (job.fail)(&err);
        }
        for m in merged.drain(..) {
            let _ = m.reply.send(Err(StoreError::Commit(err.to_string())));
        }
        return Err(err);
    }
    let mut delivers: Vec<Deliver> = Vec::with_capacity(jobs.len());
    let mut notes: Vec<String> = Vec::new();
    let mut failure: Option<StoreError> = None;
    let mut failed_write: Option<String> = None;
    let mut lone_failed = false;
    let total = jobs.len();
    for (i, job) in jobs.drain(..).enumerate() {
        if let Some(err) = &failure {
            (job.fail)(err);
            continue;
        }
        if !single
            && i == 0
            && let Err(err) = conn.savepoint("SAVEPOINT job").await
        {
            (job.fail)(&err);
            failure = Some(err);
            continue;
        }
        let done = (job.run)(conn).await;
        if single {
            lone_failed = !done.ok;
        } else if let Err(e) = after_savepoint(conn, done.ok, i + 1 < total).await {
            failure = Some(e);
        }
        if done.ok {
            notes.extend(done.notes);
        }
        if done.db_failure.is_some() {
            failed_write = done.db_failure;
        }
        delivers.push(done.deliver);
    }

    let mut answers: Vec<Answer<M, C>> = Vec::with_capacity(merged.len());
    if !merged.is_empty() {
        let (items, replies): (Vec<M::Item>, Vec<_>) =
            merged.drain(..).map(|m| (m.item, m.reply)).unzip();
        match &failure {
            Some(err) => {
                for r in replies {
                    let _ = r.send(Err(StoreError::Commit(err.to_string())));
                }
            }
            None => match run_merged(conn, &items, merge, total == 0).await {
                Ok(outs) => {
                    for (out, reply) in outs.into_iter().zip(replies) {
                        match &out {
                            Ok(o) => notes.extend(merge.notes(o)),
                            Err(e) => {
                                if e.is_database_failure() {
                                    failed_write = Some(e.to_string());
                                }
                                lone_failed |= single;
                            }
                        }
                        answers.push((reply, out));
                    }
                }
                Err(e) => {
                    for r in replies {
                        let _ = r.send(Err(StoreError::Commit(e.to_string())));
                    }
                    failure = Some(e);
                }
            },
        }
    }

    if failure.is_none() && !lone_failed && !notes.is_empty() {
        notes.sort();
        notes.dedup();
        if let Err(e) = merge.notify(conn, notes).await {
            failure = Some(e);
        }
    }
    let outcome = match failure {
        // The transaction never committed: a retry cannot apply anything twice.
        Some(e) if e.is_transient() => Err(StoreError::Commit(format!(
            "{e} (before the commit: nothing was committed, so the writes can be retried)"
        ))),
        Some(e) => Err(e),
        None if lone_failed => conn
            .batch_execute("ROLLBACK")
            .await
            .map_err(StoreError::from),
        None => conn.batch_execute("COMMIT").await.map_err(|e| {
            // The acknowledgement of a COMMIT that was sent may be what got lost: the writes
            // may have been applied. Fenced and status-checked writes are safe to retry (a
            // retry finds them done); see the storage documentation.
            let e = StoreError::from(e);
            if e.is_transient() {
                StoreError::Commit(format!(
                    "{e} (during the commit: the writes may or may not have been applied)"
                ))
            } else {
                e
            }
        }),
    };
    if outcome.is_err() {
        let _ = conn.batch_execute("ROLLBACK").await;
    }
    match (&outcome, failed_write) {
        (Ok(()), None) => health.succeeded(),
        (Ok(()), Some(failure)) => health.failed(&failure),
        (Err(e), _) => health.failed(&e.to_string()),
    }
    for deliver in delivers {
        deliver(outcome.as_ref().map(|_| ()));
    }
    for (reply, out) in answers {
        let out = match (&outcome, out) {
            (Ok(()), r) => r,
            (Err(_), Err(own)) => Err(own),
            (Err(e), Ok(_)) => Err(StoreError::Commit(e.to_string())),
        };
        let _ = reply.send(out);
    }
    outcome
}

/// Opens the batch's transaction. A transient failure (lost connection, restarting server,
/// database locked by another process) is retried with bounded exponential backoff,
/// reconnecting first when the connection is gone: nothing of the batch has run yet, so a
/// retry cannot apply anything twice, and the batch's callers only wait.
async fn begin_retrying<C: SimpleAsyncConnection + Send>(
    conn: &mut C,
    begin: &'static str,
    health: &WriteHealth,
    reconnect: Option<&Reconnect<C>>,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut delay = BEGIN_RETRY_FIRST;
    let mut tries: u32 = 0;
    loop {
        let err = match conn.batch_execute(begin).await {
            Ok(()) => return Ok(()),
            Err(e) => StoreError::from(e),
        };
        if !err.is_transient() || started.elapsed() + delay > BEGIN_RETRY_FOR {
            return Err(if tries > 0 {
                StoreError::Commit(format!(
                    "{err} (still failing after {tries} retries over {} s; nothing was committed, so the writes can be retried)",
                    started.elapsed().as_secs()
                ))
            } else {
                err
            });
        }
        tries += 1;
        health.failed(&err.to_string());
        tracing::warn!(
            error = %err, tries, retry_in_ms = delay.as_millis() as u64,
            "the database writer cannot begin a transaction; retrying the batch (none of its writes has run)"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BEGIN_RETRY_MAX);
        if let Some(reconnect) = reconnect
            && conn.batch_execute("SELECT 1").await.is_err()
        {
            match reconnect().await {
                Ok(fresh) => {
                    tracing::info!("database writer reconnected");
                    *conn = fresh;
                }
                Err(e) => tracing::warn!(error = %e, "database writer cannot reconnect yet"),
            }
        }
    }
}

/// Writes the merged items together; if that fails, undoes it and writes each alone, each in
/// a savepoint. `alone` means nothing else is in the transaction: a failure of `many` then
/// rolls back the whole transaction instead of a savepoint (one round trip fewer per batch).
/// The outer error is for the batch (the connection failed); the inner ones are per item.
async fn run_merged<C: WriterConn, M: Merge<C>>(
    conn: &mut C,
    items: &[M::Item],
    merge: &M,
    alone: bool,
) -> Result<Vec<Result<M::Output, StoreError>>, StoreError> {
    if !alone {
        conn.batch_execute("SAVEPOINT merged").await?;
    }
    let first_error = match merge.many(conn, items).await {
        Ok(outs) => return Ok(outs.into_iter().map(Ok).collect()),
        Err(e) => e,
    };
    if alone {
        conn.batch_execute("ROLLBACK").await?;
        if items.len() == 1 {
            // The lone item's own error; the caller rolls back (nothing is left to undo).
            conn.batch_execute("BEGIN").await?;
            return Ok(vec![Err(first_error)]);
        }
        conn.batch_execute("BEGIN").await?;
    } else {
        conn.batch_execute("ROLLBACK TO SAVEPOINT merged").await?;
    }
    tracing::debug!(error = %first_error, items = items.len(), "merged write failed; writing items one by one");
    let mut outs = Vec::with_capacity(items.len());
    conn.batch_execute("SAVEPOINT job").await?;
    for (i, item) in items.iter().enumerate() {
        let out = merge.one(conn, item).await;
        after_savepoint(conn, out.is_ok(), i + 1 < items.len()).await?;
        outs.push(out);
    }
    Ok(outs)
}
