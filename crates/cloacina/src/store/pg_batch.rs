//! Set-based statements for PostgreSQL: one statement for many rows, with the rows passed as
//! arrays and spread out by `unnest`. The writer connection is bound by round trips and by the
//! server's per-statement work (parse, plan, execute), so writing a group commit's rows in a
//! handful of statements, each kept prepared, is what makes PostgreSQL fast here.
//!
//! [`write_many`] is the merged write: the writer hands it every creation (without a cron
//! claim), claim and terminal task finish of its batch, and it records them in a fixed number
//! of statements whatever their count, in named steps run in this order:
//!
//! 1. [`executions_create`]: the creations (rows, tasks, input contexts, first events);
//! 2. [`claims_take`]: the claims, one status-checked statement each, before any finish;
//! 3. [`FinishSet::check`]: refuses a task finished twice in one batch, and a retry;
//! 4. [`FinishSet::finishes_fence`]: every finish's status, fenced by attempt, and the
//!    completed ones' outputs;
//! 5. [`FinishSet::dependents_countdown`] and 6. [`FinishSet::dependents_ready`]: dependents
//!    counted down once per finish, then readied once, owned by the last finish that counted
//!    them down;
//! 7. [`FinishSet::handoffs_claim`]: readied dependents claimed for the finishing runners;
//! 8. [`FinishSet::refills_claim`]: other ready work claimed for freed slots;
//! 9. [`executions_start`]: executions whose first task a claim took, Pending to Running once;
//! 10. [`events_collect`] and [`bump_many`]: every event and counter change, one statement;
//! 11. [`executions_end`]: executions whose last task finished, finalized;
//! 12. [`results_assemble`]: each item's answer.
//!
//! Each result is what the write alone (`ops::execution_create`, `ops::task_claim`,
//! `ops::task_finish`, the per-write path SQLite always takes) would return had the batch's
//! writes run one after another: creations, claims, finishes in batch order with their
//! hand-offs, then the refills; the events follow that same order. Everything commits in the writer's one transaction, so a
//! finish's output, status, dependents' readiness, hand-off claims, counters and events are
//! atomic as they are alone. When any step fails (a conflict, a task finished twice, a row the
//! database refuses), the writer rolls the merged write back and writes each item alone
//! through that per-write path, in a savepoint of its own, so each gets its own answer.

use std::collections::{BTreeMap, HashMap, HashSet};

use diesel::pg::Pg;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::error::StoreError;
use super::postgres::Conn;
use super::postgres::ops::{self, Bump, Counters};
use super::rows::{EventRow, PendingEvent, TaskRow, parse_list};
use super::types::{
    AttemptOutcome, ClaimRequest, ClaimedTask, ExecutionRecord, ExecutionStatus, FINAL_CONTEXT,
    FinishResult, INPUT_CONTEXT, Millis, NewExecution, TaskFinish, TaskStatus, event_kind,
};

/// Statements with fixed text, kept prepared (see [`super::stmt`]).
pub(crate) type Stmt<T = &'static str> = super::stmt::Stmt<Pg, T>;
use super::stmt::SqlText;

// ---- inserts ------------------------------------------------------------------------------

/// An `UPDATE ... RETURNING` of one row: its answer, or `None` when nothing matched. `_read`
/// (the row read by key) is SQLite's way to the same answer; here `RETURNING` saves a round
/// trip.
pub(crate) async fn update_returning<U, A: SqlText, B: SqlText>(
    conn: &mut Conn,
    update: Stmt<A>,
    _read: Stmt<B>,
) -> Result<Option<U>, StoreError>
where
    U: diesel::QueryableByName<Pg> + Send + 'static,
{
    use diesel::OptionalExtension;
    Ok(update.get_result(conn).await.optional()?)
}

/// Counts a finished task against its dependents and returns those it made ready (the
/// per-write path; merged finishes do this set-based). PostgreSQL keeps one plan for `= ANY`
/// of an array, so the names are bound as one.
pub(crate) async fn release_dependents(
    conn: &mut Conn,
    execution: &str,
    dependents: &[String],
    failed_dep: i32,
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    use crate::store::schema::task_executions as te;
    use crate::store::stmt::Lit;
    use diesel::{ExpressionMethods, QueryDsl};
    diesel::update(
        te::table
            .filter(te::execution_id.eq(execution))
            .filter(te::task_id.eq_any(dependents)),
    )
    .set((
        te::remaining_deps.eq(te::remaining_deps - 1),
        te::failed_deps.eq(te::failed_deps + failed_dep),
    ))
    .execute(conn)
    .await?;
    Ok(diesel::update(
        te::table
            .filter(te::execution_id.eq(execution))
            .filter(te::task_id.eq_any(dependents))
            .filter(te::remaining_deps.le(0))
            .filter(te::status.eq(Lit("NotStarted"))),
    )
    .set((
        te::status.eq(TaskStatus::Ready.as_str()),
        te::ready_at.eq(Some(now)),
        te::updated_at.eq(now),
    ))
    .returning(te::task_id)
    .load::<String>(conn)
    .await?)
}

pub(crate) async fn insert_tasks(conn: &mut Conn, rows: Vec<TaskRow>) -> Result<(), StoreError> {
    let n = rows.len();
    let (mut e, mut t, mut pos, mut deps, mut status) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut rem, mut fail, mut att, mut max, mut rec) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut ready, mut owner, mut lease, mut err) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut created, mut updated, mut started, mut completed) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in rows {
        e.push(r.execution_id);
        t.push(r.task_id);
        pos.push(r.position);
        deps.push(r.dependents);
        status.push(r.status);
        rem.push(r.remaining_deps);
        fail.push(r.failed_deps);
        att.push(r.attempt);
        max.push(r.max_attempts);
        rec.push(r.recoveries);
        ready.push(r.ready_at);
        owner.push(r.lease_owner);
        lease.push(r.lease_expires_at);
        err.push(r.error);
        created.push(r.created_at);
        updated.push(r.updated_at);
        started.push(r.started_at);
        completed.push(r.completed_at);
    }
    Stmt::new(
        "INSERT INTO task_executions (execution_id, task_id, position, dependents, status, \
         remaining_deps, failed_deps, attempt, max_attempts, recoveries, ready_at, lease_owner, \
         lease_expires_at, error, created_at, updated_at, started_at, completed_at) \
         SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind::<Array<Text>, _>(e)
    .bind::<Array<Text>, _>(t)
    .bind::<Array<Integer>, _>(pos)
    .bind::<Array<Text>, _>(deps)
    .bind::<Array<Text>, _>(status)
    .bind::<Array<Integer>, _>(rem)
    .bind::<Array<Integer>, _>(fail)
    .bind::<Array<Integer>, _>(att)
    .bind::<Array<Integer>, _>(max)
    .bind::<Array<Integer>, _>(rec)
    .bind::<Array<Nullable<BigInt>>, _>(ready)
    .bind::<Array<Nullable<Text>>, _>(owner)
    .bind::<Array<Nullable<BigInt>>, _>(lease)
    .bind::<Array<Nullable<Text>>, _>(err)
    .bind::<Array<BigInt>, _>(created)
    .bind::<Array<BigInt>, _>(updated)
    .bind::<Array<Nullable<BigInt>>, _>(started)
    .bind::<Array<Nullable<BigInt>>, _>(completed)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn insert_events(conn: &mut Conn, rows: Vec<EventRow>) -> Result<(), StoreError> {
    let n = rows.len();
    let (mut e, mut seq, mut t, mut kind, mut att, mut msg, mut at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in rows {
        e.push(r.execution_id);
        seq.push(r.seq);
        t.push(r.task_id);
        kind.push(r.kind);
        att.push(r.attempt);
        msg.push(r.message);
        at.push(r.created_at);
    }
    Stmt::new(
        "INSERT INTO execution_events (execution_id, seq, task_id, kind, attempt, message, created_at) \
         SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?)",
    )
    .bind::<Array<Text>, _>(e)
    .bind::<Array<BigInt>, _>(seq)
    .bind::<Array<Nullable<Text>>, _>(t)
    .bind::<Array<Text>, _>(kind)
    .bind::<Array<Nullable<Integer>>, _>(att)
    .bind::<Array<Nullable<Text>>, _>(msg)
    .bind::<Array<BigInt>, _>(at)
    .execute(conn)
    .await?;
    Ok(())
}

// ---- counters -----------------------------------------------------------------------------

#[derive(diesel::QueryableByName)]
struct CounterRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    event_seq: i64,
    #[diesel(sql_type = Integer)]
    remaining_tasks: i32,
    #[diesel(sql_type = Integer)]
    failed_tasks: i32,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    workflow_name: String,
    #[diesel(sql_type = Text)]
    workflow_version: String,
}

/// Adjusts the counters of several executions (distinct ids) and appends their events: one
/// statement whatever the count. Each event's sequence number comes from its execution's
/// bumped `event_seq` inside the statement, so no round trip sits between the two writes.
pub(crate) async fn bump_many(
    conn: &mut Conn,
    mut bumps: Vec<Bump>,
    now: Millis,
) -> Result<Vec<Counters>, StoreError> {
    if bumps.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = bumps.iter().map(|b| b.execution.clone()).collect();
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        return Err(StoreError::InvalidRequest(
            "one counter update per execution".to_string(),
        ));
    }
    let ns: Vec<i64> = bumps.iter().map(|b| b.events.len() as i64).collect();
    let rs: Vec<i32> = bumps.iter().map(|b| b.remaining_delta).collect();
    let fs: Vec<i32> = bumps.iter().map(|b| b.failed_delta).collect();
    // Events as columns; `i` is the event's 1-based place among its execution's new events.
    let total: usize = bumps.iter().map(|b| b.events.len()).sum();
    let mut ev = EventColumns::with_capacity(total);
    for b in &mut bumps {
        for (i, e) in b.events.drain(..).enumerate() {
            ev.push(&b.execution, i as i64 + 1, e);
        }
    }
    let rows: Vec<CounterRow> = Stmt::new(
        "WITH b AS (UPDATE workflow_executions we SET event_seq = we.event_seq + u.n, \
         remaining_tasks = we.remaining_tasks + u.r, failed_tasks = we.failed_tasks + u.f, \
         updated_at = ? FROM unnest(?, ?, ?, ?) AS u(id, n, r, f) WHERE we.id = u.id \
         RETURNING we.id, we.event_seq, we.remaining_tasks, we.failed_tasks, we.status, \
         we.workflow_name, we.workflow_version, u.n), \
         ev AS (INSERT INTO execution_events (execution_id, seq, task_id, kind, attempt, message, created_at) \
         SELECT x.e, b.event_seq - b.n + x.i, x.t, x.k, x.a, x.m, ? \
         FROM unnest(?, ?, ?, ?, ?, ?) AS x(e, i, t, k, a, m) JOIN b ON b.id = x.e) \
         SELECT id, event_seq, remaining_tasks, failed_tasks, status, workflow_name, workflow_version FROM b",
    )
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(ids)
    .bind::<Array<BigInt>, _>(ns)
    .bind::<Array<Integer>, _>(rs)
    .bind::<Array<Integer>, _>(fs)
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(ev.execution)
    .bind::<Array<BigInt>, _>(ev.index)
    .bind::<Array<Nullable<Text>>, _>(ev.task)
    .bind::<Array<Text>, _>(ev.kind)
    .bind::<Array<Nullable<Integer>>, _>(ev.attempt)
    .bind::<Array<Nullable<Text>>, _>(ev.message)
    .load(conn)
    .await?;
    let mut by_id: HashMap<String, CounterRow> =
        rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    bumps
        .iter()
        .map(|b| {
            let row = by_id.remove(&b.execution).ok_or_else(|| {
                StoreError::ExecutionNotFound(
                    super::rows::parse_uuid(&b.execution).unwrap_or_default(),
                )
            })?;
            Ok(Counters {
                event_seq: row.event_seq,
                remaining_tasks: row.remaining_tasks,
                failed_tasks: row.failed_tasks,
                status: row.status,
                workflow_name: row.workflow_name,
                workflow_version: row.workflow_version,
            })
        })
        .collect()
}

/// New events as the column arrays [`bump_many`] binds.
struct EventColumns {
    execution: Vec<String>,
    index: Vec<i64>,
    task: Vec<Option<String>>,
    kind: Vec<String>,
    attempt: Vec<Option<i32>>,
    message: Vec<Option<String>>,
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        EventColumns {
            execution: Vec::with_capacity(n),
            index: Vec::with_capacity(n),
            task: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            attempt: Vec::with_capacity(n),
            message: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, execution: &str, index: i64, e: PendingEvent) {
        self.execution.push(execution.to_string());
        self.index.push(index);
        self.task.push(e.task_id);
        self.kind.push(e.kind.to_string());
        self.attempt.push(e.attempt);
        self.message.push(e.message);
    }
}

// ---- claims -------------------------------------------------------------------------------

#[derive(diesel::QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = Text)]
    execution_id: String,
    #[diesel(sql_type = Text)]
    task_id: String,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Integer)]
    recoveries: i32,
    #[diesel(sql_type = Integer)]
    failed_deps: i32,
    #[diesel(sql_type = BigInt)]
    ord: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pending: bool,
}

impl ClaimRow {
    fn claimed(self) -> Claimed {
        Claimed {
            execution_id: self.execution_id,
            task_id: self.task_id,
            attempt: self.attempt,
            recoveries: self.recoveries,
            failed_deps: self.failed_deps,
            maybe_pending: self.pending,
        }
    }
}

pub(crate) use super::types::ClaimedRow as Claimed;

/// Moves those of `ids` still Pending to Running (their first claim); returns which.
pub(crate) async fn start_executions(
    conn: &mut Conn,
    ids: &[String],
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    Ok(Stmt::new(
        "UPDATE workflow_executions SET status = 'Running', started_at = ? \
         WHERE id = ANY(?) AND status = 'Pending' RETURNING id",
    )
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(ids.to_vec())
    .load::<IdRow>(conn)
    .await?
    .into_iter()
    .map(|r| r.id)
    .collect())
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Claims tasks in one status-checked statement that bumps each attempt (the fencing token):
/// the oldest ready tasks of active executions, row-locked and skipping rows another runner is
/// claiming right now, or exactly `req.only`. In claim order.
pub(crate) async fn claim_rows(
    conn: &mut Conn,
    req: &ClaimRequest,
    now: Millis,
) -> Result<Vec<Claimed>, StoreError> {
    let expires = now + req.lease_ms;
    if let Some(only) = &req.only {
        let wanted = only
            .iter()
            .map(|(e, t)| (e.to_string(), t.clone(), req.owner.clone(), expires))
            .collect();
        return Ok(claim_exact(conn, wanted, now)
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect());
    }
    // With a workflow filter and without: two fixed texts, so each keeps its own plan. The
    // execution's status (as of the statement's snapshot) comes back so the caller need not
    // look for a Pending -> Running transition when every execution was Running already.
    // Written so that the plan cannot go wrong without statistics (a fresh schema, before
    // autovacuum analyzed it): walk the ready index in order, look each candidate's execution
    // up by primary key (the `OFFSET 0` keeps that a per-row lookup), and update each picked
    // row by its physical address, which the row lock keeps valid within the statement.
    // Otherwise the planner, guessing one row everywhere, joined by execution id alone or by
    // workflow name and filtered, which is quadratic in the rows claimed.
    const PICK: &str = "WITH pick AS (SELECT c.ctid AS tid, c.ready_at, w.status AS w_status \
         FROM task_executions c CROSS JOIN LATERAL (SELECT x.status FROM workflow_executions x \
         WHERE x.id = c.execution_id AND x.workflow_name = ANY(?) OFFSET 0) w \
         WHERE c.status = 'Ready' AND c.ready_at <= ? AND w.status IN ('Pending', 'Running') \
         ORDER BY c.ready_at LIMIT ? FOR UPDATE OF c SKIP LOCKED) \
         UPDATE task_executions te SET status = 'Running', attempt = te.attempt + 1, \
         lease_owner = ?, lease_expires_at = ?, started_at = ?, updated_at = ? \
         FROM pick WHERE te.ctid = pick.tid AND te.status = 'Ready' \
         RETURNING te.execution_id, te.task_id, te.attempt, te.recoveries, te.failed_deps, \
         pick.ready_at AS ord, pick.w_status <> 'Running' AS pending";
    const PICK_ANY: &str = "WITH pick AS (SELECT c.ctid AS tid, c.ready_at, w.status AS w_status \
         FROM task_executions c CROSS JOIN LATERAL (SELECT x.status FROM workflow_executions x \
         WHERE x.id = c.execution_id OFFSET 0) w \
         WHERE c.status = 'Ready' AND c.ready_at <= ? AND w.status IN ('Pending', 'Running') \
         ORDER BY c.ready_at LIMIT ? FOR UPDATE OF c SKIP LOCKED) \
         UPDATE task_executions te SET status = 'Running', attempt = te.attempt + 1, \
         lease_owner = ?, lease_expires_at = ?, started_at = ?, updated_at = ? \
         FROM pick WHERE te.ctid = pick.tid AND te.status = 'Ready' \
         RETURNING te.execution_id, te.task_id, te.attempt, te.recoveries, te.failed_deps, \
         pick.ready_at AS ord, pick.w_status <> 'Running' AS pending";
    let stmt = match &req.workflows {
        Some(names) => Stmt::new(PICK)
            .bind::<Array<Text>, _>(names.clone())
            .bind::<BigInt, _>(now),
        None => Stmt::new(PICK_ANY).bind::<BigInt, _>(now),
    };
    let mut rows: Vec<ClaimRow> = stmt
        .bind::<BigInt, _>(req.limit.max(1))
        .bind::<Text, _>(req.owner.clone())
        .bind::<BigInt, _>(expires)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .load(conn)
        .await?;
    rows.sort_by(|a, b| {
        (a.ord, &a.execution_id, &a.task_id).cmp(&(b.ord, &b.execution_id, &b.task_id))
    });
    Ok(rows.into_iter().map(ClaimRow::claimed).collect())
}

/// Claims exactly the given (execution, task, owner, lease expiry) rows that are still ready
/// in an active execution. Returns, in input order, each claimed row's input index.
async fn claim_exact(
    conn: &mut Conn,
    wanted: Vec<(String, String, String, Millis)>,
    now: Millis,
) -> Result<Vec<(usize, Claimed)>, StoreError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut e = Vec::with_capacity(wanted.len());
    let mut t = Vec::with_capacity(wanted.len());
    let mut o = Vec::with_capacity(wanted.len());
    let mut x = Vec::with_capacity(wanted.len());
    for (ei, ti, oi, xi) in wanted {
        e.push(ei);
        t.push(ti);
        o.push(oi);
        x.push(xi);
    }
    let mut rows: Vec<ClaimRow> = Stmt::new(
        "UPDATE task_executions te SET status = 'Running', attempt = te.attempt + 1, \
         lease_owner = u.o, lease_expires_at = u.x, started_at = ?, updated_at = ? \
         FROM unnest(?, ?, ?, ?) WITH ORDINALITY AS u(e, t, o, x, ord) \
         JOIN workflow_executions w ON w.id = u.e \
         WHERE te.execution_id = u.e AND te.task_id = u.t AND te.status = 'Ready' \
         AND (te.ready_at <= ? OR te.ready_at IS NULL) AND w.status IN ('Pending', 'Running') \
         RETURNING te.execution_id, te.task_id, te.attempt, te.recoveries, te.failed_deps, u.ord, \
         w.status <> 'Running' AS pending",
    )
    .bind::<BigInt, _>(now)
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(e)
    .bind::<Array<Text>, _>(t)
    .bind::<Array<Text>, _>(o)
    .bind::<Array<BigInt>, _>(x)
    .bind::<BigInt, _>(now)
    .load(conn)
    .await?;
    rows.sort_by_key(|r| r.ord);
    Ok(rows
        .into_iter()
        .map(|r| ((r.ord - 1) as usize, r.claimed()))
        .collect())
}

// ---- merged writes ------------------------------------------------------------------------

/// A write the PostgreSQL writer merges with the others of its batch.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// A new execution without a cron claim (those take the ordinary path).
    Create(Box<NewExecution>),
    Claim(ClaimRequest),
    /// A terminal finish (never a retry).
    Finish(TaskFinish),
}

/// What a merged write did.
#[derive(Debug)]
pub(crate) enum Written {
    Created(Box<ExecutionRecord>),
    Claimed(Vec<ClaimedTask>),
    Finished(Uuid, FinishResult),
}

#[derive(diesel::QueryableByName)]
struct FinishedRow {
    #[diesel(sql_type = BigInt)]
    ord: i64,
    #[diesel(sql_type = Text)]
    dependents: String,
}

#[derive(diesel::QueryableByName)]
struct ReadyRow {
    #[diesel(sql_type = Text)]
    execution_id: String,
    #[diesel(sql_type = Text)]
    task_id: String,
}

/// Refill claims are grouped by owner, workflows served and lease length.
type RefillKey = (String, Vec<String>, i64);

/// Counter updates and events, one per execution, in the order executions first appear.
#[derive(Default)]
struct Bumps {
    order: Vec<String>,
    by_execution: HashMap<String, Bump>,
}

impl Bumps {
    fn of(&mut self, e: &str) -> &mut Bump {
        if !self.by_execution.contains_key(e) {
            self.order.push(e.to_string());
        }
        self.by_execution
            .entry(e.to_string())
            .or_insert_with(|| Bump {
                execution: e.to_string(),
                events: Vec::new(),
                remaining_delta: 0,
                failed_delta: 0,
            })
    }

    fn into_vec(mut self) -> (Vec<String>, Vec<Bump>) {
        let bumps = self
            .order
            .iter()
            .filter_map(|e| self.by_execution.remove(e))
            .collect();
        (self.order, bumps)
    }
}

/// Records a batch of creations, claims and terminal task finishes (each task finished at most
/// once) in a fixed number of statements, whatever the batch size. Each result is what
/// `execution_create`, `task_claim` or `task_finish` alone would have returned had the writes
/// run one after another in this order: creations, claims, then finishes in batch order (each
/// with its hand-off), then the finishes' refills. `Err` leaves the caller to roll back and
/// write the items one by one.
///
/// The steps, in order, each at most one statement (none when it has nothing to do):
/// [`executions_create`] (four), [`claims_take`] (one per claim), [`FinishSet::check`] (none),
/// [`FinishSet::finishes_fence`], [`FinishSet::dependents_countdown`],
/// [`FinishSet::dependents_ready`], [`FinishSet::handoffs_claim`], [`FinishSet::refills_claim`]
/// (one per owner and workflow set), [`executions_start`], [`events_collect`] (none),
/// [`bump_many`] (counters and events), [`executions_end`] (two), [`results_assemble`] (none).
pub(crate) async fn write_many(
    conn: &mut Conn,
    items: &[(Write, Millis)],
) -> Result<Vec<Written>, StoreError> {
    let now = items.iter().map(|(_, n)| *n).max().unwrap_or_default();
    let created = executions_create(conn, items, now).await?;
    let claims = claims_take(conn, items, now).await?;
    let mut set = FinishSet::check(items)?;
    set.finishes_fence(conn, now).await?;
    let down = set.dependents_countdown(conn).await?;
    set.dependents_ready(conn, &down, now).await?;
    set.handoffs_claim(conn, now).await?;
    let refills = set.refills_claim(conn, now).await?;
    let started = executions_start(conn, &claims, &refills, now).await?;
    let (order, bumps, last_of) = events_collect(&set, &claims, &refills, &started);
    let counters = bump_many(conn, bumps, now).await?;
    let finished = executions_end(conn, &order, &counters, &last_of, now).await?;
    results_assemble(
        items.len(),
        created,
        claims,
        set,
        &order,
        &counters,
        &last_of,
        &finished,
    )
}

/// A claim of the batch: its item's index, the rows it took, for whom and until when.
type ClaimTaken = (usize, Vec<Claimed>, String, Millis);

/// A refill claim: the rows it took (shared out among its finishes), for whom, until when.
type RefillTaken = (Vec<Claimed>, String, Millis);

/// Creations come first, so a claim in the same batch may take their root tasks. Guarantees:
/// all of the batch's creations or none (any conflict fails the step, and with it the merged
/// write, so that each creation gets its own answer one by one).
async fn executions_create(
    conn: &mut Conn,
    items: &[(Write, Millis)],
    now: Millis,
) -> Result<Vec<(usize, ExecutionRecord)>, StoreError> {
    let (at, news): (Vec<usize>, Vec<NewExecution>) = items
        .iter()
        .enumerate()
        .filter_map(|(i, (w, _))| match w {
            Write::Create(new) => Some((i, (**new).clone())),
            _ => None,
        })
        .unzip();
    if news.is_empty() {
        return Ok(Vec::new());
    }
    Ok(at
        .into_iter()
        .zip(create_many(conn, news, now).await?)
        .collect())
}

/// The batch's claims, in batch order, before any finish: each is one status-checked statement
/// that bumps the claimed tasks' attempts (fencing tokens), so a claim never takes a task that
/// is not Ready, and two claims never take the same task.
async fn claims_take(
    conn: &mut Conn,
    items: &[(Write, Millis)],
    now: Millis,
) -> Result<Vec<ClaimTaken>, StoreError> {
    let mut claims = Vec::new();
    for (i, (w, _)) in items.iter().enumerate() {
        if let Write::Claim(req) = w {
            let rows = claim_rows(conn, req, now).await?;
            claims.push((i, rows, req.owner.clone(), now + req.lease_ms));
        }
    }
    Ok(claims)
}

/// The batch's terminal finishes and what each step learned of them; index `k` is a finish's
/// place among the finishes, in batch order.
struct FinishSet<'a> {
    /// Each finish and its item's index in the batch.
    fin: Vec<(usize, &'a TaskFinish)>,
    /// Each finish's execution id, as stored.
    execs: Vec<String>,
    /// The status each finish records, and its error or skip reason.
    statuses: Vec<(TaskStatus, Option<String>)>,
    /// The dependents of each finish that still held its attempt; `None`: fenced.
    dependents: Vec<Option<Vec<String>>>,
    /// The dependents each finish made ready, in the order its task lists them.
    newly_ready: Vec<Vec<String>>,
    /// Dependents handed off to each finish's runner: row, owner, lease expiry.
    handed: Vec<Vec<(Claimed, String, Millis)>>,
    /// Other ready tasks claimed for each finish's freed slots, with their lease expiry.
    refilled: Vec<Vec<(Claimed, Millis)>>,
}

/// Per dependent (execution, task): how many of the batch's finishes count it down, how many
/// of those did not complete, and the last of them (which readies it).
type Countdown = BTreeMap<(String, String), (i32, i32, usize)>;

impl<'a> FinishSet<'a> {
    /// Refuses what the merged statements cannot express: a task finished twice in one batch
    /// (the writer then writes the items one by one, where the second finish is fenced like
    /// any stale one) and a retry (never merged). No statement.
    fn check(items: &'a [(Write, Millis)]) -> Result<Self, StoreError> {
        let fin: Vec<(usize, &TaskFinish)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, (w, _))| match w {
                Write::Finish(f) => Some((i, f)),
                Write::Claim(_) | Write::Create(_) => None,
            })
            .collect();
        let mut keys = HashSet::with_capacity(fin.len());
        let mut statuses = Vec::with_capacity(fin.len());
        for (_, f) in &fin {
            if !keys.insert((f.execution_id, f.task_id.as_str())) {
                return Err(StoreError::InvalidRequest(format!(
                    "task '{}' of {} finishes twice in one batch",
                    f.task_id, f.execution_id
                )));
            }
            statuses.push(match &f.outcome {
                AttemptOutcome::Completed { .. } => (TaskStatus::Completed, None),
                AttemptOutcome::Failed { error } => (TaskStatus::Failed, Some(error.clone())),
                AttemptOutcome::Skipped { reason } => (TaskStatus::Skipped, Some(reason.clone())),
                AttemptOutcome::Retry { .. } => {
                    return Err(StoreError::InvalidRequest(
                        "a retry is not a terminal finish".to_string(),
                    ));
                }
            });
        }
        let n = fin.len();
        Ok(FinishSet {
            execs: fin
                .iter()
                .map(|(_, f)| f.execution_id.to_string())
                .collect(),
            fin,
            statuses,
            dependents: vec![None; n],
            newly_ready: vec![Vec::new(); n],
            handed: vec![Vec::new(); n],
            refilled: vec![Vec::new(); n],
        })
    }

    /// Fencing and outputs, one statement: each finish's status is written only while its
    /// attempt still holds the task (`attempt` matches, status `Running`); the rows not
    /// returned lost their lease to a newer attempt and are fenced (nothing of theirs is
    /// written in any later step). The completed ones' outputs are inserted in the same
    /// statement, only for rows that passed the fence.
    async fn finishes_fence(&mut self, conn: &mut Conn, now: Millis) -> Result<(), StoreError> {
        if self.fin.is_empty() {
            return Ok(());
        }
        let (mut out_ord, mut out_data) = (Vec::new(), Vec::new());
        for (k, (_, f)) in self.fin.iter().enumerate() {
            if let AttemptOutcome::Completed { output } = &f.outcome {
                out_ord.push(k as i64 + 1);
                out_data.push(output.to_json());
            }
        }
        let finished: Vec<FinishedRow> = Stmt::new(
            "WITH fin AS (UPDATE task_executions te SET status = u.s, error = u.m, lease_owner = NULL, \
             lease_expires_at = NULL, completed_at = ?, updated_at = ? \
             FROM unnest(?, ?, ?, ?, ?) WITH ORDINALITY AS u(e, t, a, s, m, ord) \
             WHERE te.execution_id = u.e AND te.task_id = u.t AND te.attempt = u.a AND te.status = 'Running' \
             RETURNING u.ord, te.execution_id, te.task_id, te.dependents), \
             out AS (INSERT INTO contexts (execution_id, owner, data, created_at) \
             SELECT fin.execution_id, fin.task_id, d.d, ? FROM fin JOIN unnest(?, ?) AS d(ord, d) \
             ON d.ord = fin.ord \
             ON CONFLICT (execution_id, owner) DO UPDATE SET data = excluded.data) \
             SELECT ord, dependents FROM fin",
        )
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<Array<Text>, _>(self.execs.clone())
        .bind::<Array<Text>, _>(
            self.fin
                .iter()
                .map(|(_, f)| f.task_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(self.fin.iter().map(|(_, f)| f.attempt).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            self.statuses
                .iter()
                .map(|(s, _)| s.as_str().to_string())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            self.statuses
                .iter()
                .map(|(_, m)| m.clone())
                .collect::<Vec<_>>(),
        )
        .bind::<BigInt, _>(now)
        .bind::<Array<BigInt>, _>(out_ord)
        .bind::<Array<Text>, _>(out_data)
        .load(conn)
        .await?;
        for row in finished {
            self.dependents[(row.ord - 1) as usize] = Some(parse_list(&row.dependents)?);
        }
        Ok(())
    }

    /// Counts down the dependents of every unfenced finish, one statement: a dependent of
    /// several finishes of the batch (a join) is counted down once per finish, as if they ran
    /// one after another, and its failed-dependency count grows by those that did not complete.
    async fn dependents_countdown(&self, conn: &mut Conn) -> Result<Countdown, StoreError> {
        let mut down = Countdown::new();
        for (k, deps) in self.dependents.iter().enumerate() {
            let Some(deps) = deps else { continue };
            let failed = i32::from(self.statuses[k].0 != TaskStatus::Completed);
            for d in deps {
                let entry = down
                    .entry((self.execs[k].clone(), d.clone()))
                    .or_insert((0, 0, k));
                entry.0 += 1;
                entry.1 += failed;
                entry.2 = k;
            }
        }
        if down.is_empty() {
            return Ok(down);
        }
        let (mut e, mut t, mut n, mut fl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((ei, ti), (count, failed, _)) in &down {
            e.push(ei.clone());
            t.push(ti.clone());
            n.push(*count);
            fl.push(*failed);
        }
        Stmt::new(
            "UPDATE task_executions te SET remaining_deps = te.remaining_deps - u.n, \
             failed_deps = te.failed_deps + u.f FROM unnest(?, ?, ?, ?) AS u(e, t, n, f) \
             WHERE te.execution_id = u.e AND te.task_id = u.t",
        )
        .bind::<Array<Text>, _>(e)
        .bind::<Array<Text>, _>(t)
        .bind::<Array<Integer>, _>(n)
        .bind::<Array<Integer>, _>(fl)
        .execute(conn)
        .await?;
        Ok(down)
    }

    /// Readies the counted-down dependents with nothing left to wait for, one statement; each
    /// becomes Ready at most once (only from NotStarted), and belongs to the last finish of the
    /// batch that counted it down, as if run one by one. Each finish's list is in the order
    /// its task lists its dependents.
    async fn dependents_ready(
        &mut self,
        conn: &mut Conn,
        down: &Countdown,
        now: Millis,
    ) -> Result<(), StoreError> {
        if down.is_empty() {
            return Ok(());
        }
        let (e, t): (Vec<String>, Vec<String>) = down.keys().cloned().unzip();
        let ready: Vec<ReadyRow> = Stmt::new(
            "UPDATE task_executions te SET status = 'Ready', ready_at = ?, updated_at = ? \
             FROM unnest(?, ?) AS u(e, t) WHERE te.execution_id = u.e AND te.task_id = u.t \
             AND te.remaining_deps <= 0 AND te.status = 'NotStarted' \
             RETURNING te.execution_id, te.task_id",
        )
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<Array<Text>, _>(e)
        .bind::<Array<Text>, _>(t)
        .load(conn)
        .await?;
        for r in ready {
            if let Some((_, _, owner)) = down.get(&(r.execution_id, r.task_id.clone())) {
                self.newly_ready[*owner].push(r.task_id);
            }
        }
        for (k, list) in self.newly_ready.iter_mut().enumerate() {
            if let Some(deps) = &self.dependents[k] {
                list.sort_by_key(|r| deps.iter().position(|d| d == r));
            }
        }
        Ok(())
    }

    /// Hand-off, one statement: claims up to each finish's limit of the dependents it readied
    /// for its runner, status-checked and attempt-bumped like any claim (their executions are
    /// Running already: the finishing task's claim started them).
    async fn handoffs_claim(&mut self, conn: &mut Conn, now: Millis) -> Result<(), StoreError> {
        let mut wanted = Vec::new();
        let mut wanted_by = Vec::new();
        for (k, (_, f)) in self.fin.iter().enumerate() {
            if let Some(h) = &f.handoff
                && h.limit > 0
            {
                for t in self.newly_ready[k].iter().take(h.limit as usize) {
                    wanted.push((
                        self.execs[k].clone(),
                        t.clone(),
                        h.owner.clone(),
                        now + h.lease_ms,
                    ));
                    wanted_by.push(k);
                }
            }
        }
        let leases: Vec<(String, Millis)> = wanted.iter().map(|w| (w.2.clone(), w.3)).collect();
        for (j, row) in claim_exact(conn, wanted, now).await? {
            let (owner, expires) = leases[j].clone();
            self.handed[wanted_by[j]].push((row, owner, expires));
        }
        Ok(())
    }

    /// Refills, after every hand-off: the slots a hand-off left free take other ready tasks
    /// of the workflows the runner serves, one claim statement per owner, workflow set and
    /// lease length, shared out in batch order. Fenced finishes refill nothing.
    async fn refills_claim(
        &mut self,
        conn: &mut Conn,
        now: Millis,
    ) -> Result<Vec<RefillTaken>, StoreError> {
        let mut refills: BTreeMap<RefillKey, Vec<(usize, usize)>> = BTreeMap::new();
        for (k, (_, f)) in self.fin.iter().enumerate() {
            if let Some(h) = &f.handoff
                && let Some(workflows) = &h.refill
                && self.dependents[k].is_some()
            {
                let left = (h.limit.max(0) as usize).saturating_sub(self.handed[k].len());
                if left > 0 {
                    refills
                        .entry((h.owner.clone(), workflows.clone(), h.lease_ms))
                        .or_default()
                        .push((k, left));
                }
            }
        }
        let mut taken = Vec::with_capacity(refills.len());
        for ((owner, workflows, lease_ms), wants) in refills {
            let req = ClaimRequest {
                owner,
                lease_ms,
                limit: wants.iter().map(|(_, n)| *n as i64).sum(),
                workflows: Some(workflows),
                only: None,
            };
            let rows = claim_rows(conn, &req, now).await?;
            taken.push((rows.clone(), req.owner.clone(), now + lease_ms));
            let mut rows = rows.into_iter();
            'share: for (k, n) in wants {
                for _ in 0..n {
                    match rows.next() {
                        Some(c) => self.refilled[k].push((c, now + lease_ms)),
                        None => break 'share,
                    }
                }
            }
        }
        Ok(taken)
    }
}

/// Starts the executions the batch's claims and refills took their first task from, one
/// statement: Pending to Running exactly once (the status check), so each gets one started
/// event whichever claim got there first.
async fn executions_start(
    conn: &mut Conn,
    claims: &[ClaimTaken],
    refills: &[RefillTaken],
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    let maybe_pending: Vec<String> = claims
        .iter()
        .map(|(_, rows, _, _)| rows)
        .chain(refills.iter().map(|(rows, _, _)| rows))
        .flat_map(|rows| rows.iter())
        .filter(|c| c.maybe_pending)
        .map(|c| c.execution_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if maybe_pending.is_empty() {
        return Ok(Vec::new());
    }
    start_executions(conn, &maybe_pending, now).await
}

/// Every event of the batch, with each execution's counter deltas, one bump per execution (no
/// statement; [`bump_many`] writes them), in the order the writes took effect: the claims'
/// events (an execution's started event before its first claimed task), then per unfenced
/// finish in batch order its own event, its dependents' ready events and its hand-offs'
/// claimed events, then the refills' events. Fenced finishes have none. Also returns the
/// executions in bump order and, per execution, its last unfenced finish.
fn events_collect(
    set: &FinishSet<'_>,
    claims: &[ClaimTaken],
    refills: &[RefillTaken],
    started: &[String],
) -> (Vec<String>, Vec<Bump>, HashMap<String, usize>) {
    let mut bumps = Bumps::default();
    let mut unannounced: HashSet<&str> = started.iter().map(String::as_str).collect();
    let mut claimed = |bumps: &mut Bumps, rows: &[Claimed], owner: &str, expires: Millis| {
        for c in rows {
            let b = bumps.of(&c.execution_id);
            if unannounced.remove(c.execution_id.as_str()) {
                b.events
                    .push(PendingEvent::execution(event_kind::EXECUTION_STARTED, None));
            }
            b.events.push(PendingEvent::task(
                event_kind::TASK_CLAIMED,
                &c.task_id,
                Some(c.attempt),
                Some(format!("leased to {owner} until {expires}")),
            ));
        }
    };
    for (_, rows, owner, expires) in claims {
        claimed(&mut bumps, rows, owner, *expires);
    }
    let mut last_of: HashMap<String, usize> = HashMap::new();
    for (k, (_, f)) in set.fin.iter().enumerate() {
        if set.dependents[k].is_none() {
            continue;
        }
        let e = &set.execs[k];
        last_of.insert(e.clone(), k);
        let b = bumps.of(e);
        let (status, message) = &set.statuses[k];
        let kind = match status {
            TaskStatus::Completed => event_kind::TASK_COMPLETED,
            TaskStatus::Skipped => event_kind::TASK_SKIPPED,
            _ => event_kind::TASK_FAILED,
        };
        b.events.push(PendingEvent::task(
            kind,
            &f.task_id,
            Some(f.attempt),
            message.clone(),
        ));
        b.events.extend(
            set.newly_ready[k]
                .iter()
                .map(|r| PendingEvent::task(event_kind::TASK_READY, r, None, None)),
        );
        for (c, owner, expires) in &set.handed[k] {
            b.events.push(PendingEvent::task(
                event_kind::TASK_CLAIMED,
                &c.task_id,
                Some(c.attempt),
                Some(format!("leased to {owner} until {expires}")),
            ));
        }
        b.remaining_delta -= 1;
        b.failed_delta += i32::from(*status == TaskStatus::Failed);
    }
    for (rows, owner, expires) in refills {
        claimed(&mut bumps, rows, owner, *expires);
    }
    let (order, bumps) = bumps.into_vec();
    (order, bumps, last_of)
}

/// Ends the executions whose last task finished in this batch (two statements for all): the
/// bumped counters say none is left, and the execution is not terminal already. Returns each
/// ended execution's final status.
async fn executions_end(
    conn: &mut Conn,
    order: &[String],
    counters: &[Counters],
    last_of: &HashMap<String, usize>,
    now: Millis,
) -> Result<HashMap<String, ExecutionStatus>, StoreError> {
    let ending: Vec<(String, i32)> = order
        .iter()
        .zip(counters)
        .filter(|(e, c)| {
            last_of.contains_key(*e)
                && c.remaining_tasks <= 0
                && !ops::TERMINAL.contains(&c.status.as_str())
        })
        .map(|(e, c)| (e.clone(), c.failed_tasks))
        .collect();
    let statuses = finalize_many(conn, &ending, now).await?;
    Ok(ending.into_iter().map(|(e, _)| e).zip(statuses).collect())
}

/// Each item's answer, in batch order (no statement): a creation its record; a claim its
/// tasks; a finish what it did (its hand-offs first, then its refills), the execution's end
/// reported by its last finish only, and a fenced finish nothing but `fenced`.
#[allow(clippy::too_many_arguments)]
fn results_assemble(
    n: usize,
    created: Vec<(usize, ExecutionRecord)>,
    claims: Vec<ClaimTaken>,
    mut set: FinishSet<'_>,
    order: &[String],
    counters: &[Counters],
    last_of: &HashMap<String, usize>,
    finished: &HashMap<String, ExecutionStatus>,
) -> Result<Vec<Written>, StoreError> {
    let names: HashMap<&str, &Counters> = order.iter().map(String::as_str).zip(counters).collect();
    let task = |c: Claimed, expires: Millis| -> Result<ClaimedTask, StoreError> {
        let counters = names
            .get(c.execution_id.as_str())
            .ok_or_else(|| StoreError::Corrupt(format!("no counters for {}", c.execution_id)))?;
        Ok(ClaimedTask {
            execution_id: super::rows::parse_uuid(&c.execution_id)?,
            task_id: c.task_id,
            attempt: c.attempt,
            recoveries: c.recoveries,
            failed_deps: c.failed_deps,
            workflow_name: counters.workflow_name.clone(),
            workflow_version: counters.workflow_version.clone(),
            lease_expires_at: expires,
        })
    };

    let mut out: Vec<Option<Written>> = (0..n).map(|_| None).collect();
    for (i, rec) in created {
        out[i] = Some(Written::Created(Box::new(rec)));
    }
    for (i, rows, _, expires) in claims {
        let tasks = rows
            .into_iter()
            .map(|c| task(c, expires))
            .collect::<Result<Vec<_>, _>>()?;
        out[i] = Some(Written::Claimed(tasks));
    }
    for (k, (i, f)) in set.fin.iter().enumerate() {
        let result = if set.dependents[k].is_none() {
            FinishResult {
                fenced: true,
                ..FinishResult::default()
            }
        } else {
            let e = &set.execs[k];
            let execution_finished = (last_of.get(e) == Some(&k))
                .then(|| finished.get(e).copied())
                .flatten();
            let handed_off = set.handed[k].len();
            let claimed = std::mem::take(&mut set.handed[k])
                .into_iter()
                .map(|(c, _, expires)| (c, expires))
                .chain(std::mem::take(&mut set.refilled[k]))
                .map(|(c, expires)| task(c, expires))
                .collect::<Result<Vec<_>, _>>()?;
            FinishResult {
                fenced: false,
                newly_ready: std::mem::take(&mut set.newly_ready[k]),
                execution_finished,
                claimed,
                handed_off,
            }
        };
        out[*i] = Some(Written::Finished(f.execution_id, result));
    }
    out.into_iter()
        .map(|w| w.ok_or_else(|| StoreError::Corrupt("a merged write has no result".to_string())))
        .collect()
}

#[derive(diesel::QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Creates several executions (none with a cron claim) in four statements whatever the count.
/// Any conflict (an id taken, or a de-duplication key held by an unfinished run) fails the
/// whole call, so that the writer records each creation alone and each gets its own answer
/// (a lone creation gets it here).
async fn create_many(
    conn: &mut Conn,
    news: Vec<NewExecution>,
    now: Millis,
) -> Result<Vec<ExecutionRecord>, StoreError> {
    let n = news.len();
    let rows: Vec<ops::NewRows> = news
        .into_iter()
        .map(|new| ops::execution_rows(new, now, None))
        .collect();
    let x = rows.iter().map(|r| &r.execution);
    let conflict = (n == 1).then(|| {
        (
            rows[0].execution.id.clone(),
            rows[0].execution.dedup_key.clone(),
        )
    });
    let inserted: Vec<CountRow> = Stmt::new(
        "WITH ins AS (INSERT INTO workflow_executions (id, workflow_name, workflow_version, package_id, status, \
         total_tasks, remaining_tasks, failed_tasks, event_seq, error, created_at, updated_at, \
         started_at, completed_at, dedup_key) \
         SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) AS n FROM ins",
    )
    .bind::<Array<Text>, _>(x.clone().map(|r| r.id.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(x.clone().map(|r| r.workflow_name.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(x.clone().map(|r| r.workflow_version.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(x.clone().map(|r| r.package_id.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(x.clone().map(|r| r.status.clone()).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(x.clone().map(|r| r.total_tasks).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(x.clone().map(|r| r.remaining_tasks).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(x.clone().map(|r| r.failed_tasks).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(x.clone().map(|r| r.event_seq).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(x.clone().map(|r| r.error.clone()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(x.clone().map(|r| r.created_at).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(x.clone().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<BigInt>>, _>(x.clone().map(|r| r.started_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<BigInt>>, _>(x.clone().map(|r| r.completed_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(x.map(|r| r.dedup_key.clone()).collect::<Vec<_>>())
    .load(conn)
    .await?;
    let inserted = inserted.as_slice().first().map_or(0, |r| r.n) as usize;
    if inserted != n {
        if let Some((id, key)) = conflict {
            return Err(ops::creation_conflict(conn, super::rows::parse_uuid(&id)?, key).await);
        }
        return Err(StoreError::InvalidRequest(format!(
            "{} of {n} new executions conflict with existing ones",
            n - inserted
        )));
    }
    let mut tasks = Vec::new();
    let mut events = Vec::new();
    let (mut ctx_e, mut ctx_d) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut executions = Vec::with_capacity(n);
    for r in rows {
        tasks.extend(r.tasks);
        events.extend(r.events);
        ctx_e.push(r.input.execution_id);
        ctx_d.push(r.input.data);
        executions.push(r.execution);
    }
    if !tasks.is_empty() {
        insert_tasks(conn, tasks).await?;
    }
    Stmt::new(
        "INSERT INTO contexts (execution_id, owner, data, created_at) \
         SELECT u.e, ?, u.d, ? FROM unnest(?, ?) AS u(e, d)",
    )
    .bind::<Text, _>(INPUT_CONTEXT)
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(ctx_e)
    .bind::<Array<Text>, _>(ctx_d)
    .execute(conn)
    .await?;
    insert_events(conn, events).await?;
    executions.into_iter().map(TryInto::try_into).collect()
}

#[derive(diesel::QueryableByName)]
struct EndingRow {
    #[diesel(sql_type = Text)]
    e: String,
    /// 0: a context document (input or a leaf's output); 1: a failed task and its error.
    #[diesel(sql_type = Integer)]
    k: i32,
    #[diesel(sql_type = Text)]
    o: String,
    #[diesel(sql_type = Nullable<Text>)]
    d: Option<String>,
}

/// Ends several executions whose last task just finished (each with its failed-task count):
/// final context, status, error summary and event, as `finalize` does for one, in two
/// statements whatever the count.
pub(crate) async fn finalize_many(
    conn: &mut Conn,
    ending: &[(String, i32)],
    now: Millis,
) -> Result<Vec<ExecutionStatus>, StoreError> {
    if ending.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ending.iter().map(|(e, _)| e.clone()).collect();
    let rows: Vec<EndingRow> = Stmt::new(
        "SELECT c.execution_id AS e, 0 AS k, -1 AS pos, c.owner AS o, c.data AS d FROM contexts c \
         WHERE c.execution_id = ANY(?) AND c.owner = ? \
         UNION ALL SELECT te.execution_id, 0, te.position, te.task_id, c.data FROM task_executions te \
         JOIN contexts c ON c.execution_id = te.execution_id AND c.owner = te.task_id \
         WHERE te.execution_id = ANY(?) AND te.dependents = '[]' \
         UNION ALL SELECT te.execution_id, 1, te.position, te.task_id, te.error FROM task_executions te \
         WHERE te.execution_id = ANY(?) AND te.status = 'Failed' \
         ORDER BY 1, 2, 3",
    )
    .bind::<Array<Text>, _>(ids.clone())
    .bind::<Text, _>(INPUT_CONTEXT)
    .bind::<Array<Text>, _>(ids.clone())
    .bind::<Array<Text>, _>(ids.clone())
    .load(conn)
    .await?;
    let mut docs: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    let mut failed: HashMap<&str, Vec<(String, Option<String>)>> = HashMap::new();
    for r in &rows {
        match (r.k, &r.d) {
            (0, Some(d)) => docs.entry(&r.e).or_default().push((&r.o, d)),
            (0, None) => {}
            _ => failed
                .entry(&r.e)
                .or_default()
                .push((r.o.clone(), r.d.clone())),
        }
    }
    let (mut finals, mut statuses, mut errors, mut kinds) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(ending.len());
    for (e, failed_tasks) in ending {
        let parts = docs.remove(e.as_str()).unwrap_or_default();
        finals.push(ops::final_context(e, parts.into_iter())?.to_json());
        let (status, error, kind) = if *failed_tasks > 0 {
            let list = failed.remove(e.as_str()).unwrap_or_default();
            (
                ExecutionStatus::Failed,
                Some(ops::failure_summary(&list)),
                event_kind::EXECUTION_FAILED,
            )
        } else {
            (
                ExecutionStatus::Completed,
                None,
                event_kind::EXECUTION_COMPLETED,
            )
        };
        statuses.push(status.as_str().to_string());
        errors.push(error);
        kinds.push(kind.to_string());
        out.push(status);
    }
    Stmt::new(
        "WITH f AS (INSERT INTO contexts (execution_id, owner, data, created_at) \
         SELECT u.e, ?, u.d, ? FROM unnest(?, ?) AS u(e, d) \
         ON CONFLICT (execution_id, owner) DO NOTHING), \
         w AS (UPDATE workflow_executions we SET status = u.s, error = u.m, completed_at = ?, \
         updated_at = ?, event_seq = we.event_seq + 1 FROM unnest(?, ?, ?, ?) AS u(e, s, m, k) \
         WHERE we.id = u.e RETURNING we.id, we.event_seq, u.m, u.k) \
         INSERT INTO execution_events (execution_id, seq, task_id, kind, attempt, message, created_at) \
         SELECT w.id, w.event_seq, NULL, w.k, NULL, w.m, ? FROM w",
    )
    .bind::<Text, _>(FINAL_CONTEXT)
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(ids.clone())
    .bind::<Array<Text>, _>(finals)
    .bind::<BigInt, _>(now)
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(ids)
    .bind::<Array<Text>, _>(statuses)
    .bind::<Array<Nullable<Text>>, _>(errors)
    .bind::<Array<Text>, _>(kinds)
    .bind::<BigInt, _>(now)
    .execute(conn)
    .await?;
    Ok(out)
}

/// Sends a batch's notifications in one statement; PostgreSQL delivers them on commit.
pub(crate) async fn notify(
    conn: &mut Conn,
    channel: &str,
    payloads: Vec<String>,
) -> Result<(), StoreError> {
    Stmt::new("SELECT pg_notify(?, p) FROM unnest(?) AS p")
        .bind::<Text, _>(channel.to_string())
        .bind::<Array<Text>, _>(payloads)
        .execute(conn)
        .await?;
    Ok(())
}
