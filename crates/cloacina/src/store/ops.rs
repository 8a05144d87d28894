//! Every storage operation, written once. This file is a module of both `sqlite.rs` and
//! `postgres.rs` (`#[path]`), each of which defines `Conn` (its connection type), `claim_rows`
//! (the claim statement, whose locking differs), `start_executions` (an execution's first claim),
//! `bump_many` (counter updates of several executions) and `insert_tasks`/`insert_events`
//! (multi-row inserts); PostgreSQL writes many rows per statement in these, SQLite loops (its
//! statements cost microseconds, not round trips).
//!
//! Statuses in filters are written as literals (`Lit`), not bound: the partial indexes over
//! `Ready` and `Running` rows only serve queries whose text names the status.
//!
//! Each function runs inside a transaction opened by its caller; none commits.
//!
//! This is the per-write path: on SQLite every write of a group commit runs through it, each in
//! a savepoint of its own. On PostgreSQL terminal finishes, claims and creations (without a cron
//! claim) are merged per group commit into the set-based statements of `pg_batch.rs`, which must
//! give the answers and rows these functions give (`tests/completion.rs` holds both to it); these
//! functions remain PostgreSQL's path for every other write, and its fallback, one write at a
//! time, when a merged write fails.

use std::collections::BTreeMap;

use diesel::{
    BoolExpressionMethods, ExpressionMethods, JoinOnDsl, NullableExpressionMethods,
    OptionalExtension, QueryDsl, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use super::{
    Conn, Stmt, bump_many, claim_rows, insert_events, insert_tasks, release_dependents,
    start_executions, update_returning,
};
use uuid::Uuid;

use crate::store::error::StoreError;
use crate::store::rows::{
    ContextRow, CronFireRow, CronScheduleRow, EventRow, ExecutionRow, PendingEvent, TaskRow,
    encode_catch_up, encode_list, parse_list, parse_uuid,
};
use crate::store::schema::{
    contexts, cron_fires as cf, cron_schedules as cs, execution_events, task_executions as te,
    workflow_executions as we,
};
use crate::store::stmt::{Lit, statement};
use crate::store::types::{
    AttemptOutcome, ClaimRequest, ClaimedTask, CreatedClaimed, CronClaim, CronFireRecord,
    CronScheduleFilter, CronScheduleRecord, EventRecord, ExecutionFilter, ExecutionRecord,
    ExecutionStatus, FINAL_CONTEXT, FinishResult, INPUT_CONTEXT, Millis, NewCronSchedule,
    NewExecution, RecoveryResult, TaskFinish, TaskRecord, TaskStatus, event_kind,
};
use crate::workflow::Context;

const ACTIVE: [&str; 2] = ["Pending", "Running"];
pub(crate) const TERMINAL: [&str; 3] = ["Completed", "Failed", "Cancelled"];
/// Statuses covered by the de-duplication index (`workflow_executions_dedup`).
const UNFINISHED: [&str; 3] = ["Pending", "Running", "Paused"];

fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// The row of attempt `$attempt` of a task, only while that attempt still holds it.
macro_rules! fenced {
    ($e:expr, $t:expr, $attempt:expr) => {
        te::table
            .filter(te::execution_id.eq($e))
            .filter(te::task_id.eq($t))
            .filter(te::attempt.eq($attempt))
            .filter(te::status.eq(Lit("Running")))
    };
}

/// The execution row's counters after a bump.
pub(crate) struct Counters {
    pub(crate) event_seq: i64,
    pub(crate) remaining_tasks: i32,
    pub(crate) failed_tasks: i32,
    pub(crate) status: String,
    pub(crate) workflow_name: String,
    pub(crate) workflow_version: String,
}

/// One execution's share of a counter update: its events and counter deltas.
pub(crate) struct Bump {
    pub(crate) execution: String,
    pub(crate) events: Vec<PendingEvent>,
    pub(crate) remaining_delta: i32,
    pub(crate) failed_delta: i32,
}

/// The counters of an execution row after a bump (see [`BUMP`]).
#[derive(diesel::QueryableByName)]
struct Bumped {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    event_seq: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    remaining_tasks: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    failed_tasks: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    workflow_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    workflow_version: String,
}

// The hot path's writes as fixed-text statements ([`Stmt`]), which stay prepared: diesel
// renders and prepares its `UPDATE`s afresh on every call, which was most of the CPU of a
// simple workflow on SQLite (a parse and a plan per statement).

statement! {
    /// An execution's counter bump (every task transition).
    BUMP = "UPDATE workflow_executions SET event_seq = event_seq + ?, \
     remaining_tasks = remaining_tasks + ?, failed_tasks = failed_tasks + ?, updated_at = ? \
     WHERE id = ? \
     RETURNING event_seq, remaining_tasks, failed_tasks, status, workflow_name, workflow_version";
}
statement! {
    /// [`BUMP`]'s answer read by key (the backend's `update_returning` says when).
    BUMPED = "SELECT event_seq, remaining_tasks, failed_tasks, status, workflow_name, \
     workflow_version FROM workflow_executions WHERE id = ?";
}
statement! {
    /// A terminal finish of attempt `attempt`, only while that attempt still holds the task.
    FINISH = "UPDATE task_executions SET status = ?, error = ?, lease_owner = NULL, \
     lease_expires_at = NULL, completed_at = ?, updated_at = ? \
     WHERE execution_id = ? AND task_id = ? AND attempt = ? AND status = 'Running' \
     RETURNING dependents";
}
statement! {
    /// [`FINISH`]'s answer read by key.
    FINISHED = "SELECT dependents FROM task_executions WHERE execution_id = ? AND task_id = ?";
}
statement! {
    /// A task's output (written again by a re-run after a lost commit acknowledgement).
    OUTPUT = "INSERT INTO contexts (execution_id, owner, data, created_at) \
     VALUES (?, ?, ?, ?) ON CONFLICT (execution_id, owner) DO UPDATE SET data = excluded.data";
}
statement! {
    /// An execution's final context (kept if already written).
    FINAL = "INSERT INTO contexts (execution_id, owner, data, created_at) \
     VALUES (?, ?, ?, ?) ON CONFLICT (execution_id, owner) DO NOTHING";
}
statement! {
    /// An execution's end, numbering the one event that records it.
    END = "UPDATE workflow_executions SET status = ?, error = ?, completed_at = ?, \
     updated_at = ?, event_seq = event_seq + 1 WHERE id = ? RETURNING event_seq";
}
statement! {
    /// [`END`]'s answer read by key.
    ENDED = "SELECT event_seq FROM workflow_executions WHERE id = ?";
}
statement! {
    /// The documents a final context merges, in merge order: the input, then each leaf's output
    /// by topological position (a leaf that wrote none has no row). One statement instead of a
    /// read of the leaves and one read per document; both halves are key lookups.
    FINAL_DOCS = "SELECT owner, data, -1 AS position FROM contexts \
     WHERE execution_id = ? AND owner = ? \
     UNION ALL SELECT c.owner, c.data, t.position FROM task_executions t \
     JOIN contexts c ON c.execution_id = t.execution_id AND c.owner = t.task_id \
     WHERE t.execution_id = ? AND t.dependents = '[]' \
     ORDER BY position";
}

#[derive(diesel::QueryableByName)]
struct Doc {
    #[diesel(sql_type = diesel::sql_types::Text)]
    owner: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data: String,
}

#[derive(diesel::QueryableByName)]
struct EventSeq {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    event_seq: i64,
}

#[derive(diesel::QueryableByName)]
struct Dependents {
    #[diesel(sql_type = diesel::sql_types::Text)]
    dependents: String,
}

/// Adjusts an execution's counters and appends its events. Updating the execution row first
/// takes its row lock (PostgreSQL) so sequence numbers follow commit order per execution.
pub(crate) async fn bump(
    conn: &mut Conn,
    execution: &str,
    events: Vec<PendingEvent>,
    remaining_delta: i32,
    failed_delta: i32,
    now: Millis,
) -> Result<Counters, StoreError> {
    use diesel::sql_types::{BigInt, Integer, Text};
    let n = events.len() as i64;
    let Bumped {
        event_seq,
        remaining_tasks,
        failed_tasks,
        status,
        workflow_name,
        workflow_version,
    } = update_returning::<Bumped, _, _>(
        conn,
        Stmt::new(BUMP)
            .bind::<BigInt, _>(n)
            .bind::<Integer, _>(remaining_delta)
            .bind::<Integer, _>(failed_delta)
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(execution.to_string()),
        Stmt::new(BUMPED).bind::<Text, _>(execution.to_string()),
    )
    .await?
    .ok_or_else(|| StoreError::ExecutionNotFound(parse_uuid(execution).unwrap_or_default()))?;
    if n > 0 {
        let first = event_seq - n + 1;
        let rows: Vec<EventRow> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.into_row(execution, first + i as i64, now))
            .collect();
        insert_events(conn, rows).await?;
    }
    Ok(Counters {
        event_seq,
        remaining_tasks,
        failed_tasks,
        status,
        workflow_name,
        workflow_version,
    })
}

async fn append_events(
    conn: &mut Conn,
    execution: &str,
    events: Vec<PendingEvent>,
    now: Millis,
) -> Result<Counters, StoreError> {
    bump(conn, execution, events, 0, 0, now).await
}

/// Root tasks a creation claims for its creator: their rows are inserted already leased and
/// the run already started, with the events a claim right after the creation would have
/// appended (started, then each claimed), instead of that claim's updates and reads.
pub(crate) struct RootClaim<'a> {
    pub(crate) owner: &'a str,
    pub(crate) expires: Millis,
    /// At most this many roots, the first in the order of the new execution's tasks.
    pub(crate) take: usize,
}

/// The event of a claim: the task is leased to `owner` until `expires`.
fn claimed_event(task: &str, attempt: i32, owner: &str, expires: Millis) -> PendingEvent {
    PendingEvent::task(
        event_kind::TASK_CLAIMED,
        task,
        Some(attempt),
        Some(format!("leased to {owner} until {expires}")),
    )
}

/// The rows a new execution writes: its own, its tasks (roots `Ready`, or leased where the
/// creation claims them), its input context and its first events (created, each root ready,
/// and for a claiming creation started and each root claimed).
pub(crate) struct NewRows {
    pub(crate) execution: ExecutionRow,
    pub(crate) tasks: Vec<TaskRow>,
    pub(crate) input: ContextRow,
    pub(crate) events: Vec<EventRow>,
}

pub(crate) fn execution_rows(
    new: NewExecution,
    now: Millis,
    claim: Option<&RootClaim<'_>>,
) -> NewRows {
    let id = new.id.to_string();
    let take = claim.map_or(0, |c| c.take);
    let mut claimed_events = Vec::new();
    let mut events = vec![PendingEvent::execution(
        event_kind::EXECUTION_CREATED,
        Some(format!(
            "workflow '{}' version {}",
            new.workflow_name,
            &new.workflow_version[..new.workflow_version.len().min(12)]
        )),
    )];
    let tasks: Vec<TaskRow> = new
        .tasks
        .iter()
        .map(|t| {
            let ready = t.is_root();
            if ready {
                events.push(PendingEvent::task(
                    event_kind::TASK_READY,
                    &t.task_id,
                    None,
                    None,
                ));
            }
            let lease = match claim {
                Some(c) if ready && claimed_events.len() < take => {
                    claimed_events.push(claimed_event(&t.task_id, 1, c.owner, c.expires));
                    Some((c.owner.to_string(), c.expires))
                }
                _ => None,
            };
            let status = match (&lease, ready) {
                (Some(_), _) => "Running",
                (None, true) => "Ready",
                (None, false) => "NotStarted",
            };
            TaskRow {
                execution_id: id.clone(),
                task_id: t.task_id.clone(),
                position: t.position,
                dependents: encode_list(&t.dependents),
                status: status.to_string(),
                remaining_deps: t.dependencies,
                failed_deps: 0,
                attempt: i32::from(lease.is_some()),
                max_attempts: t.max_attempts,
                recoveries: 0,
                ready_at: ready.then_some(now),
                started_at: lease.as_ref().map(|_| now),
                lease_expires_at: lease.as_ref().map(|l| l.1),
                lease_owner: lease.map(|l| l.0),
                error: None,
                created_at: now,
                updated_at: now,
                completed_at: None,
            }
        })
        .collect();
    let started = !claimed_events.is_empty();
    if started {
        events.push(PendingEvent::execution(event_kind::EXECUTION_STARTED, None));
        events.append(&mut claimed_events);
    }
    let execution = ExecutionRow {
        id: id.clone(),
        workflow_name: new.workflow_name,
        workflow_version: new.workflow_version,
        package_id: new.package_id,
        status: if started {
            ExecutionStatus::Running
        } else {
            ExecutionStatus::Pending
        }
        .as_str()
        .to_string(),
        total_tasks: tasks.len() as i32,
        remaining_tasks: tasks.len() as i32,
        failed_tasks: 0,
        event_seq: events.len() as i64,
        error: None,
        created_at: now,
        updated_at: now,
        started_at: started.then_some(now),
        completed_at: None,
        dedup_key: new.dedup_key,
    };
    let input = ContextRow {
        execution_id: id.clone(),
        owner: INPUT_CONTEXT.to_string(),
        data: new.input.to_json(),
        created_at: now,
    };
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_row(&id, i as i64 + 1, now))
        .collect();
    NewRows {
        execution,
        tasks,
        input,
        events,
    }
}

/// Why a new execution's row was not inserted: its de-duplication key is held by an unfinished
/// run, or its id is taken.
pub(crate) async fn creation_conflict(
    conn: &mut Conn,
    id: Uuid,
    dedup_key: Option<String>,
) -> StoreError {
    if let Some(key) = dedup_key {
        let existing: Result<Option<String>, _> = we::table
            .filter(we::dedup_key.eq(&key))
            .filter(we::status.eq_any(UNFINISHED))
            .select(we::id)
            .first(conn)
            .await
            .optional();
        match existing {
            Ok(Some(existing)) => {
                return match parse_uuid(&existing) {
                    Ok(existing) => StoreError::DuplicateExecution {
                        dedup_key: key,
                        existing: Some(existing),
                    },
                    Err(e) => e,
                };
            }
            Ok(None) => {}
            Err(e) => return e.into(),
        }
    }
    StoreError::ExecutionExists { id }
}

pub(crate) async fn execution_create(
    conn: &mut Conn,
    new: NewExecution,
    now: Millis,
) -> Result<ExecutionRecord, StoreError> {
    Ok(execution_insert(conn, new, now, None).await?.record)
}

/// Inserts a new execution's rows, with `claim`'s roots already leased; answers with the
/// tasks so claimed (as the rows say), and whether any root was left `Ready`.
async fn execution_insert(
    conn: &mut Conn,
    new: NewExecution,
    now: Millis,
    claim: Option<&RootClaim<'_>>,
) -> Result<CreatedClaimed, StoreError> {
    let id = new.id.to_string();
    if let Some(claim) = &new.cron {
        cron_claim(conn, claim, &id, now).await?;
    }
    let (new_id, dedup_key) = (new.id, new.dedup_key.clone());
    let NewRows {
        execution: row,
        tasks,
        input,
        events,
    } = execution_rows(new, now, claim);
    // DO NOTHING rather than failing: a conflict (the id, or the de-duplication key of an
    // unfinished run) must not abort a PostgreSQL transaction that may hold a cron claim.
    let inserted = match insert_execution(conn, &row).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(StoreError::ExecutionExists { id: new_id });
        }
        other => other?,
    };
    if inserted == 0 {
        return Err(creation_conflict(conn, new_id, dedup_key).await);
    }
    let left_ready = tasks.iter().any(|t| t.status == "Ready");
    let claimed = tasks
        .iter()
        .filter_map(|t| {
            Some(ClaimedTask {
                execution_id: new_id,
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                recoveries: t.recoveries,
                failed_deps: t.failed_deps,
                workflow_name: row.workflow_name.clone(),
                workflow_version: row.workflow_version.clone(),
                lease_expires_at: t.lease_expires_at?,
            })
        })
        .collect();
    if !tasks.is_empty() {
        insert_tasks(conn, tasks).await?;
    }
    insert_context(conn, input).await?;
    insert_events(conn, events).await?;
    Ok(CreatedClaimed {
        record: row.try_into()?,
        claimed,
        left_ready,
    })
}

/// [`execution_create`] with the new run's first root tasks (at most `claim.limit`) claimed
/// for `claim.owner`: inserted leased, with the events and counters a claim in the same
/// transaction would have written (a new run is Pending and its roots Ready, so such a claim
/// could not fail; the rows are simply written in their claimed state).
pub(crate) async fn execution_create_claiming(
    conn: &mut Conn,
    new: NewExecution,
    claim: ClaimRequest,
    now: Millis,
) -> Result<CreatedClaimed, StoreError> {
    let root_claim = RootClaim {
        owner: &claim.owner,
        expires: now + claim.lease_ms,
        take: usize::try_from(claim.limit).unwrap_or(0),
    };
    execution_insert(conn, new, now, Some(&root_claim)).await
}

statement! {
    /// A new execution row, unless its id or its de-duplication key is taken (0 rows then).
    INSERT_EXECUTION = "INSERT INTO workflow_executions (id, workflow_name, \
     workflow_version, package_id, status, total_tasks, remaining_tasks, failed_tasks, event_seq, \
     error, created_at, updated_at, started_at, completed_at, dedup_key) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
}
statement! {
    /// A new context document.
    INSERT_CONTEXT = "INSERT INTO contexts (execution_id, owner, data, created_at) VALUES (?, ?, ?, ?)";
}

/// Fixed-text inserts (kept prepared), for the creation of every run.
async fn insert_execution(
    conn: &mut Conn,
    r: &ExecutionRow,
) -> Result<usize, diesel::result::Error> {
    use diesel::sql_types::{BigInt, Integer, Nullable, Text};
    Stmt::new(INSERT_EXECUTION)
        .bind::<Text, _>(r.id.clone())
        .bind::<Text, _>(r.workflow_name.clone())
        .bind::<Text, _>(r.workflow_version.clone())
        .bind::<Nullable<Text>, _>(r.package_id.clone())
        .bind::<Text, _>(r.status.clone())
        .bind::<Integer, _>(r.total_tasks)
        .bind::<Integer, _>(r.remaining_tasks)
        .bind::<Integer, _>(r.failed_tasks)
        .bind::<BigInt, _>(r.event_seq)
        .bind::<Nullable<Text>, _>(r.error.clone())
        .bind::<BigInt, _>(r.created_at)
        .bind::<BigInt, _>(r.updated_at)
        .bind::<Nullable<BigInt>, _>(r.started_at)
        .bind::<Nullable<BigInt>, _>(r.completed_at)
        .bind::<Nullable<Text>, _>(r.dedup_key.clone())
        .execute(conn)
        .await
}

async fn insert_context(conn: &mut Conn, r: ContextRow) -> Result<(), StoreError> {
    use diesel::sql_types::{BigInt, Text};
    Stmt::new(INSERT_CONTEXT)
        .bind::<Text, _>(r.execution_id)
        .bind::<Text, _>(r.owner)
        .bind::<Text, _>(r.data)
        .bind::<BigInt, _>(r.created_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn execution_get(
    conn: &mut Conn,
    id: Uuid,
) -> Result<Option<ExecutionRecord>, StoreError> {
    // Not `first`: a key finds at most one row, and `first` binds a `LIMIT ?`, whose value
    // the bundled SQLite (3.50) plans with, so it re-prepares the statement on every call.
    let query = we::table
        .find(id.to_string())
        .select(ExecutionRow::as_select());
    super::keyed_row::<_, ExecutionRow>(conn, query)
        .await?
        .map(TryInto::try_into)
        .transpose()
}

/// An execution with its final context, if it has one yet, in one read: what a waiter needs
/// once the run has ended (a second read would be a second transaction).
pub(crate) async fn execution_get_with_final(
    conn: &mut Conn,
    id: Uuid,
) -> Result<Option<(ExecutionRecord, Option<Context>)>, StoreError> {
    let query = we::table
        .left_join(
            contexts::table.on(contexts::execution_id
                .eq(we::id)
                .and(contexts::owner.eq(FINAL_CONTEXT.to_string()))),
        )
        .filter(we::id.eq(id.to_string()))
        .select((ExecutionRow::as_select(), contexts::data.nullable()));
    let Some((row, doc)) =
        super::keyed_row::<_, (ExecutionRow, Option<String>)>(conn, query).await?
    else {
        return Ok(None);
    };
    let context = doc
        .map(|d| {
            Context::from_json(&d).map_err(|err| {
                crate::store::error::corrupt(format!("context '{FINAL_CONTEXT}' of {id}: {err}"))
            })
        })
        .transpose()?;
    Ok(Some((row.try_into()?, context)))
}

pub(crate) async fn execution_list(
    conn: &mut Conn,
    filter: ExecutionFilter,
) -> Result<Vec<ExecutionRecord>, StoreError> {
    let mut q = we::table.select(ExecutionRow::as_select()).into_boxed();
    // A keyset page (`before`) keeps the id order its cursor is in.
    let by_index =
        (filter.workflow.is_some() || filter.status.is_some()) && filter.before.is_none();
    if let Some(w) = filter.workflow {
        q = q.filter(we::workflow_name.eq(w));
    }
    if let Some(s) = filter.status {
        q = q.filter(we::status.eq(s.as_str()));
    }
    if let Some(before) = filter.before {
        // Ids are UUIDv7: their text order is creation order.
        q = q.filter(we::id.lt(before.to_string()));
    }
    // Newest first in the order of the index the query walks, so a page reads its own rows:
    // the workflow and status indexes end in `created_at`, the table's key is the id (both
    // creation order). Ordering a filtered list by id alone made every page sort all the
    // matching executions (a load test saw list times grow with the history).
    q = if by_index {
        q.order((we::created_at.desc(), we::id.desc()))
    } else {
        q.order(we::id.desc())
    };
    let rows: Vec<ExecutionRow> = q
        .limit(filter.limit.unwrap_or(50).clamp(1, 10_000))
        .offset(filter.offset.unwrap_or(0).max(0))
        .load(conn)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// How many executions match `filter`'s workflow, status and `before` (its limit and offset
/// ignored): the `total` of a paged list.
pub(crate) async fn execution_total(
    conn: &mut Conn,
    filter: ExecutionFilter,
) -> Result<i64, StoreError> {
    let mut q = we::table.into_boxed();
    if let Some(w) = filter.workflow {
        q = q.filter(we::workflow_name.eq(w));
    }
    if let Some(s) = filter.status {
        q = q.filter(we::status.eq(s.as_str()));
    }
    if let Some(before) = filter.before {
        q = q.filter(we::id.lt(before.to_string()));
    }
    Ok(q.count().get_result(conn).await?)
}

/// Tasks per status, over every execution (statuses with none are absent).
pub(crate) async fn task_count_by_status(
    conn: &mut Conn,
) -> Result<Vec<(TaskStatus, i64)>, StoreError> {
    let rows: Vec<(String, i64)> = te::table
        .group_by(te::status)
        .select((te::status, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|(s, n)| {
            s.parse::<TaskStatus>()
                .map(|s| (s, n))
                .map_err(StoreError::Corrupt)
        })
        .collect()
}

pub(crate) async fn execution_count(
    conn: &mut Conn,
    statuses: Vec<ExecutionStatus>,
) -> Result<i64, StoreError> {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    Ok(we::table
        .filter(we::status.eq_any(names))
        .count()
        .get_result(conn)
        .await?)
}

pub(crate) async fn execution_pause(
    conn: &mut Conn,
    id: Uuid,
    now: Millis,
) -> Result<ExecutionRecord, StoreError> {
    transition(
        conn,
        id,
        "pause",
        &ACTIVE,
        ExecutionStatus::Paused,
        event_kind::EXECUTION_PAUSED,
        now,
    )
    .await
}

pub(crate) async fn execution_resume(
    conn: &mut Conn,
    id: Uuid,
    now: Millis,
) -> Result<ExecutionRecord, StoreError> {
    let current = execution_get(conn, id)
        .await?
        .ok_or(StoreError::ExecutionNotFound(id))?;
    // A run that never started goes back to Pending, so "started" keeps its meaning.
    let to = if current.started_at.is_some() {
        ExecutionStatus::Running
    } else {
        ExecutionStatus::Pending
    };
    transition(
        conn,
        id,
        "resume",
        &["Paused"],
        to,
        event_kind::EXECUTION_RESUMED,
        now,
    )
    .await
}

async fn transition(
    conn: &mut Conn,
    id: Uuid,
    action: &'static str,
    from: &[&str],
    to: ExecutionStatus,
    kind: &'static str,
    now: Millis,
) -> Result<ExecutionRecord, StoreError> {
    let e = id.to_string();
    let n = diesel::update(we::table.find(&e).filter(we::status.eq_any(from)))
        .set((we::status.eq(to.as_str()), we::updated_at.eq(now)))
        .execute(conn)
        .await?;
    if n == 0 {
        let current = execution_get(conn, id)
            .await?
            .ok_or(StoreError::ExecutionNotFound(id))?;
        return Err(StoreError::InvalidTransition {
            id,
            action,
            status: current.status,
        });
    }
    append_events(conn, &e, vec![PendingEvent::execution(kind, None)], now).await?;
    execution_get(conn, id)
        .await?
        .ok_or(StoreError::ExecutionNotFound(id))
}

/// Cancels a run: tasks not yet started are skipped; running ones finish (their results are
/// still recorded) but the run stays Cancelled.
pub(crate) async fn execution_cancel(
    conn: &mut Conn,
    id: Uuid,
    reason: Option<String>,
    now: Millis,
) -> Result<ExecutionRecord, StoreError> {
    let e = id.to_string();
    let message = reason.unwrap_or_else(|| "cancelled by request".to_string());
    let n = diesel::update(we::table.find(&e).filter(we::status.ne_all(TERMINAL)))
        .set((
            we::status.eq(ExecutionStatus::Cancelled.as_str()),
            we::error.eq(Some(message.clone())),
            we::completed_at.eq(Some(now)),
            we::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    if n == 0 {
        let current = execution_get(conn, id)
            .await?
            .ok_or(StoreError::ExecutionNotFound(id))?;
        return Err(StoreError::InvalidTransition {
            id,
            action: "cancel",
            status: current.status,
        });
    }
    let skipped = diesel::update(
        te::table
            .filter(te::execution_id.eq(&e))
            .filter(te::status.eq_any(["NotStarted", "Ready"])),
    )
    .set((
        te::status.eq(TaskStatus::Skipped.as_str()),
        te::error.eq(Some("execution cancelled".to_string())),
        te::completed_at.eq(Some(now)),
        te::updated_at.eq(now),
    ))
    .execute(conn)
    .await?;
    bump(
        conn,
        &e,
        vec![PendingEvent::execution(
            event_kind::EXECUTION_CANCELLED,
            Some(message),
        )],
        -(skipped as i32),
        0,
        now,
    )
    .await?;
    execution_get(conn, id)
        .await?
        .ok_or(StoreError::ExecutionNotFound(id))
}

pub(crate) async fn task_list(
    conn: &mut Conn,
    execution: Uuid,
) -> Result<Vec<TaskRecord>, StoreError> {
    let rows: Vec<TaskRow> = te::table
        .filter(te::execution_id.eq(execution.to_string()))
        .order(te::position.asc())
        .select(TaskRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

pub(crate) async fn task_statuses(
    conn: &mut Conn,
    execution: Uuid,
    tasks: Vec<String>,
) -> Result<Vec<(String, TaskStatus)>, StoreError> {
    let rows: Vec<(String, String)> = te::table
        .filter(te::execution_id.eq(execution.to_string()))
        .filter(te::task_id.eq_any(&tasks))
        .select((te::task_id, te::status))
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|(t, s)| Ok((t, s.parse().map_err(crate::store::error::corrupt)?)))
        .collect()
}

/// Claims ready tasks: each is a single status-checked update that bumps the attempt (the
/// fencing token) and records the lease (the backend's `claim_rows`: one statement for all of
/// them on PostgreSQL); executions that are paused or cancelled are never claimed from.
pub(crate) async fn task_claim(
    conn: &mut Conn,
    req: ClaimRequest,
    now: Millis,
) -> Result<Vec<ClaimedTask>, StoreError> {
    claim_tasks(conn, req, now, false).await
}

/// [`task_claim`]; `started` says every execution claimed from has started already (a
/// hand-off: a task of it just finished, so its first claim set it Running, and a resumed run
/// that had started goes back to Running), so no statement is spent moving it from Pending.
async fn claim_tasks(
    conn: &mut Conn,
    req: ClaimRequest,
    now: Millis,
    started: bool,
) -> Result<Vec<ClaimedTask>, StoreError> {
    let expires = now + req.lease_ms;
    let rows = claim_rows(conn, &req, now).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut order: Vec<String> = Vec::new();
    let mut maybe_pending: Vec<String> = Vec::new();
    let mut per_execution: BTreeMap<String, Vec<(String, i32, i32, i32)>> = BTreeMap::new();
    for c in rows {
        let tasks = per_execution.entry(c.execution_id.clone()).or_default();
        if tasks.is_empty() {
            order.push(c.execution_id.clone());
        }
        if c.maybe_pending && !started && !maybe_pending.contains(&c.execution_id) {
            maybe_pending.push(c.execution_id.clone());
        }
        tasks.push((c.task_id, c.attempt, c.recoveries, c.failed_deps));
    }
    let started = if maybe_pending.is_empty() {
        Vec::new()
    } else {
        start_executions(conn, &maybe_pending, now).await?
    };
    let mut bumps = Vec::with_capacity(order.len());
    for e in &order {
        let mut events = Vec::new();
        if started.contains(e) {
            events.push(PendingEvent::execution(event_kind::EXECUTION_STARTED, None));
        }
        for (t, attempt, _, _) in &per_execution[e] {
            events.push(claimed_event(t, *attempt, &req.owner, expires));
        }
        bumps.push(Bump {
            execution: e.clone(),
            events,
            remaining_delta: 0,
            failed_delta: 0,
        });
    }
    let counters = bump_many(conn, bumps, now).await?;
    let mut out = Vec::new();
    for (e, c) in order.iter().zip(counters) {
        let id = crate::store::rows::parse_uuid(e)?;
        for (task_id, attempt, recoveries, failed_deps) in
            per_execution.remove(e).unwrap_or_default()
        {
            out.push(ClaimedTask {
                execution_id: id,
                task_id,
                attempt,
                recoveries,
                failed_deps,
                workflow_name: c.workflow_name.clone(),
                workflow_version: c.workflow_version.clone(),
                lease_expires_at: expires,
            });
        }
    }
    Ok(out)
}

/// Records how an attempt ended, fenced by its attempt number. A terminal outcome commits the
/// task's output, its status, its dependents' readiness, the execution's counters (and final
/// status when it was the last task) and the events, all in the caller's one transaction.
pub(crate) async fn task_finish(
    conn: &mut Conn,
    f: TaskFinish,
    now: Millis,
) -> Result<FinishResult, StoreError> {
    let e = f.execution_id.to_string();
    let (status, message, output) = match f.outcome {
        AttemptOutcome::Retry { error, retry_at } => {
            return schedule_retry(conn, &e, &f.task_id, f.attempt, error, retry_at, now).await;
        }
        AttemptOutcome::Completed { output } => (TaskStatus::Completed, None, Some(output)),
        AttemptOutcome::Failed { error } => (TaskStatus::Failed, Some(error), None),
        AttemptOutcome::Skipped { reason } => (TaskStatus::Skipped, Some(reason), None),
    };
    let mut result = finish_terminal(
        conn, &e, &f.task_id, f.attempt, status, message, output, now,
    )
    .await?;
    let Some(h) = f.handoff.filter(|h| h.limit > 0 && !result.fenced) else {
        return Ok(result);
    };
    if !result.newly_ready.is_empty() {
        let only = result
            .newly_ready
            .iter()
            .take(h.limit as usize)
            .map(|t| (f.execution_id, t.clone()))
            .collect();
        let req = ClaimRequest {
            owner: h.owner.clone(),
            lease_ms: h.lease_ms,
            limit: h.limit,
            workflows: None,
            only: Some(only),
        };
        result.claimed = claim_tasks(conn, req, now, true).await?;
        result.handed_off = result.claimed.len();
    }
    let left = h.limit - result.claimed.len() as i64;
    if let Some(workflows) = h.refill
        && left > 0
    {
        let req = ClaimRequest {
            owner: h.owner,
            lease_ms: h.lease_ms,
            limit: left,
            workflows: Some(workflows),
            only: None,
        };
        result.claimed.extend(task_claim(conn, req, now).await?);
    }
    Ok(result)
}

/// A failed attempt that will be retried: back to Ready at `retry_at`, with its error kept.
#[allow(clippy::too_many_arguments)]
async fn schedule_retry(
    conn: &mut Conn,
    e: &str,
    task: &str,
    attempt: i32,
    error: String,
    retry_at: Millis,
    now: Millis,
) -> Result<FinishResult, StoreError> {
    let n = diesel::update(fenced!(e, task, attempt))
        .set((
            te::status.eq(TaskStatus::Ready.as_str()),
            te::ready_at.eq(Some(retry_at)),
            te::error.eq(Some(error.clone())),
            te::lease_owner.eq(None::<String>),
            te::lease_expires_at.eq(None::<i64>),
            te::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    if n == 0 {
        return Ok(FinishResult {
            fenced: true,
            ..FinishResult::default()
        });
    }
    let event = PendingEvent::task(
        event_kind::TASK_RETRY_SCHEDULED,
        task,
        Some(attempt),
        Some(format!(
            "attempt {attempt} failed: {error}; next attempt in {} ms",
            (retry_at - now).max(0)
        )),
    );
    append_events(conn, e, vec![event], now).await?;
    Ok(FinishResult::default())
}

#[allow(clippy::too_many_arguments)]
async fn finish_terminal(
    conn: &mut Conn,
    e: &str,
    t: &str,
    attempt: i32,
    status: TaskStatus,
    message: Option<String>,
    output: Option<Context>,
    now: Millis,
) -> Result<FinishResult, StoreError> {
    use diesel::sql_types::{BigInt, Integer, Nullable, Text};
    let finish = Stmt::new(FINISH)
        .bind::<Text, _>(status.as_str())
        .bind::<Nullable<Text>, _>(message.clone())
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<Text, _>(e.to_string())
        .bind::<Text, _>(t.to_string())
        .bind::<Integer, _>(attempt);
    let read = Stmt::new(FINISHED)
        .bind::<Text, _>(e.to_string())
        .bind::<Text, _>(t.to_string());
    let dependents: Option<Dependents> = update_returning(conn, finish, read).await?;
    let Some(Dependents { dependents }) = dependents else {
        return Ok(FinishResult {
            fenced: true,
            ..FinishResult::default()
        });
    };
    if let Some(output) = output {
        Stmt::new(OUTPUT)
            .bind::<Text, _>(e.to_string())
            .bind::<Text, _>(t.to_string())
            .bind::<Text, _>(output.to_json())
            .bind::<BigInt, _>(now)
            .execute(conn)
            .await?;
    }
    let kind = match status {
        TaskStatus::Completed => event_kind::TASK_COMPLETED,
        TaskStatus::Skipped => event_kind::TASK_SKIPPED,
        _ => event_kind::TASK_FAILED,
    };
    let mut events = vec![PendingEvent::task(kind, t, Some(attempt), message)];
    let dependents = parse_list(&dependents)?;
    let mut newly_ready = Vec::new();
    if !dependents.is_empty() {
        let failed_dep = i32::from(status != TaskStatus::Completed);
        newly_ready = release_dependents(conn, e, &dependents, failed_dep, now).await?;
        newly_ready.sort_by_key(|r| dependents.iter().position(|d| d == r));
        events.extend(
            newly_ready
                .iter()
                .map(|r| PendingEvent::task(event_kind::TASK_READY, r, None, None)),
        );
    }
    let failed = i32::from(status == TaskStatus::Failed);
    let c = bump(conn, e, events, -1, failed, now).await?;
    let mut execution_finished = None;
    if c.remaining_tasks <= 0 && !TERMINAL.contains(&c.status.as_str()) {
        execution_finished = Some(finalize(conn, e, c.failed_tasks, now).await?);
    }
    let _ = c.event_seq;
    Ok(FinishResult {
        fenced: false,
        newly_ready,
        execution_finished,
        claimed: Vec::new(),
        handed_off: 0,
    })
}

/// Ends an execution whose tasks are all terminal: final context = input merged with the leaf
/// outputs in topological order; Failed if any task failed.
pub(crate) async fn finalize(
    conn: &mut Conn,
    e: &str,
    failed_tasks: i32,
    now: Millis,
) -> Result<ExecutionStatus, StoreError> {
    use diesel::sql_types::{BigInt, Nullable, Text};
    let docs: Vec<Doc> = Stmt::new(FINAL_DOCS)
        .bind::<Text, _>(e.to_string())
        .bind::<Text, _>(INPUT_CONTEXT)
        .bind::<Text, _>(e.to_string())
        .load(conn)
        .await?;
    let final_ctx = final_context(e, docs.iter().map(|d| (d.owner.as_str(), d.data.as_str())))?;
    Stmt::new(FINAL)
        .bind::<Text, _>(e.to_string())
        .bind::<Text, _>(FINAL_CONTEXT)
        .bind::<Text, _>(final_ctx.to_json())
        .bind::<BigInt, _>(now)
        .execute(conn)
        .await?;
    let (status, error, kind) = if failed_tasks > 0 {
        let failed: Vec<(String, Option<String>)> = te::table
            .filter(te::execution_id.eq(e))
            .filter(te::status.eq(Lit("Failed")))
            .order(te::position.asc())
            .select((te::task_id, te::error))
            .load(conn)
            .await?;
        (
            ExecutionStatus::Failed,
            Some(failure_summary(&failed)),
            event_kind::EXECUTION_FAILED,
        )
    } else {
        (
            ExecutionStatus::Completed,
            None,
            event_kind::EXECUTION_COMPLETED,
        )
    };
    let end = Stmt::new(END)
        .bind::<Text, _>(status.as_str())
        .bind::<Nullable<Text>, _>(error.clone())
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<Text, _>(e.to_string());
    let read = Stmt::new(ENDED).bind::<Text, _>(e.to_string());
    let EventSeq { event_seq } = update_returning(conn, end, read)
        .await?
        .ok_or_else(|| StoreError::ExecutionNotFound(parse_uuid(e).unwrap_or_default()))?;
    let event = PendingEvent::execution(kind, error).into_row(e, event_seq, now);
    insert_events(conn, vec![event]).await?;
    Ok(status)
}

/// The final context: the input, then each leaf's output in topological order, merged.
/// `docs` yields (owner, JSON) in that order.
pub(crate) fn final_context<'a>(
    e: &str,
    docs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Context, StoreError> {
    let mut final_ctx = Context::new();
    for (owner, doc) in docs {
        let part = Context::from_json(doc).map_err(|err| {
            crate::store::error::corrupt(format!("context '{owner}' of {e}: {err}"))
        })?;
        final_ctx.merge(&part);
    }
    Ok(final_ctx)
}

/// A failed run's error: each failed task and its error, in topological order.
pub(crate) fn failure_summary(failed: &[(String, Option<String>)]) -> String {
    failed
        .iter()
        .map(|(t, err)| {
            format!(
                "task '{t}' failed: {}",
                err.as_deref().unwrap_or("no error recorded")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Extends every lease held by `owner` (one statement per heartbeat, whatever the count).
pub(crate) async fn lease_renew(
    conn: &mut Conn,
    owner: String,
    until: Millis,
    now: Millis,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        te::table
            .filter(te::status.eq(Lit("Running")))
            .filter(te::lease_owner.eq(owner)),
    )
    .set((te::lease_expires_at.eq(Some(until)), te::updated_at.eq(now)))
    .execute(conn)
    .await?)
}

/// Ends now the leases held by owners whose names start with `prefix`, except those starting
/// with `except`, so the next recovery pass takes their tasks back (counted as recoveries).
/// For a process that knows its predecessors under `prefix` are dead (it holds their PID
/// lock): their tasks need not wait out the lease.
pub(crate) async fn lease_expire_owners(
    conn: &mut Conn,
    prefix: String,
    except: String,
    now: Millis,
) -> Result<usize, StoreError> {
    use diesel::expression_methods::{EscapeExpressionMethods as _, TextExpressionMethods as _};
    let starts_with = |p: &str| {
        let escaped: String = p
            .chars()
            .flat_map(|c| match c {
                '\\' | '%' | '_' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("{escaped}%")
    };
    Ok(diesel::update(
        te::table
            .filter(te::status.eq(Lit("Running")))
            .filter(te::lease_owner.like(starts_with(&prefix)).escape('\\'))
            .filter(te::lease_owner.not_like(starts_with(&except)).escape('\\')),
    )
    .set((
        te::lease_expires_at.eq(Some(now - 1)),
        te::updated_at.eq(now),
    ))
    .execute(conn)
    .await?)
}

/// Hands back every task `owner` still runs (graceful shutdown past its drain timeout): they go
/// back to `Ready` at once, without waiting for the lease to expire and without counting as a
/// recovery.
pub(crate) async fn lease_release(
    conn: &mut Conn,
    owner: String,
    now: Millis,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    let held: Vec<(String, String, i32)> = te::table
        .filter(te::status.eq(Lit("Running")))
        .filter(te::lease_owner.eq(&owner))
        .select((te::execution_id, te::task_id, te::attempt))
        .load(conn)
        .await?;
    let mut released = Vec::new();
    let message = format!("released by {owner} at shutdown; the task will run again");
    for (e, t, attempt) in held {
        if release(conn, &e, &t, attempt, &message, now).await? {
            released.push((crate::store::rows::parse_uuid(&e)?, t));
        }
    }
    Ok(released)
}

/// Hands one claimed attempt back before it ran: `Ready` again, lease cleared, not counted as
/// a recovery. False when the attempt no longer holds the task (fenced).
pub(crate) async fn task_release(
    conn: &mut Conn,
    execution: Uuid,
    task: String,
    attempt: i32,
    reason: String,
    now: Millis,
) -> Result<bool, StoreError> {
    release(conn, &execution.to_string(), &task, attempt, &reason, now).await
}

async fn release(
    conn: &mut Conn,
    e: &str,
    t: &str,
    attempt: i32,
    message: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    let n = diesel::update(fenced!(e, t, attempt))
        .set((
            te::status.eq(TaskStatus::Ready.as_str()),
            te::ready_at.eq(Some(now)),
            te::lease_owner.eq(None::<String>),
            te::lease_expires_at.eq(None::<i64>),
            te::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    if n == 1 {
        let event = PendingEvent::task(
            event_kind::TASK_RECOVERED,
            t,
            Some(attempt),
            Some(message.to_string()),
        );
        append_events(conn, e, vec![event], now).await?;
    }
    Ok(n == 1)
}

/// Returns tasks whose lease expired to `Ready` (counted, with an event), or fails them once
/// they have been recovered `max_recoveries` times.
pub(crate) async fn lease_recover_expired(
    conn: &mut Conn,
    max_recoveries: i32,
    now: Millis,
) -> Result<RecoveryResult, StoreError> {
    let expired: Vec<(String, String, i32, i32, Option<String>)> = te::table
        .filter(te::status.eq(Lit("Running")))
        .filter(te::lease_expires_at.lt(now))
        .order(te::lease_expires_at.asc())
        .limit(500)
        .select((
            te::execution_id,
            te::task_id,
            te::attempt,
            te::recoveries,
            te::lease_owner,
        ))
        .load(conn)
        .await?;
    let mut result = RecoveryResult::default();
    for (e, t, attempt, recoveries, owner) in expired {
        let id = crate::store::rows::parse_uuid(&e)?;
        let holder = owner.unwrap_or_else(|| "unknown".to_string());
        if recoveries >= max_recoveries {
            let reason = format!(
                "lease of attempt {attempt} (held by {holder}) expired after {recoveries} earlier recoveries; giving up (max_recoveries = {max_recoveries})"
            );
            let r = finish_terminal(
                conn,
                &e,
                &t,
                attempt,
                TaskStatus::Failed,
                Some(reason),
                None,
                now,
            )
            .await?;
            if !r.fenced {
                result.failed.push((id, t));
                if r.execution_finished.is_some() {
                    result.finished.push(id);
                }
            }
            continue;
        }
        let n = diesel::update(fenced!(&e, &t, attempt))
            .set((
                te::status.eq(TaskStatus::Ready.as_str()),
                te::ready_at.eq(Some(now)),
                te::recoveries.eq(te::recoveries + 1),
                te::lease_owner.eq(None::<String>),
                te::lease_expires_at.eq(None::<i64>),
                te::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        if n == 1 {
            let event = PendingEvent::task(
                event_kind::TASK_RECOVERED,
                &t,
                Some(attempt),
                Some(format!(
                    "lease held by {holder} expired; recovery {} of {max_recoveries}",
                    recoveries + 1
                )),
            );
            append_events(conn, &e, vec![event], now).await?;
            result.requeued.push((id, t));
        }
    }
    Ok(result)
}

pub(crate) async fn event_list(
    conn: &mut Conn,
    execution: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<EventRecord>, StoreError> {
    let rows: Vec<EventRow> = execution_events::table
        .filter(execution_events::execution_id.eq(execution.to_string()))
        .filter(execution_events::seq.gt(after_seq))
        .order(execution_events::seq.asc())
        .limit(limit.clamp(1, 100_000))
        .select(EventRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Deletes (or with `dry_run`, counts) events older than `before`.
pub(crate) async fn event_cleanup(
    conn: &mut Conn,
    before: Millis,
    dry_run: bool,
) -> Result<i64, StoreError> {
    if dry_run {
        return Ok(execution_events::table
            .filter(execution_events::created_at.lt(before))
            .count()
            .get_result(conn)
            .await?);
    }
    Ok(
        diesel::delete(execution_events::table.filter(execution_events::created_at.lt(before)))
            .execute(conn)
            .await? as i64,
    )
}

pub(crate) async fn context_get(
    conn: &mut Conn,
    execution: Uuid,
    owner: String,
) -> Result<Option<Context>, StoreError> {
    let doc: Option<String> = contexts::table
        .find((execution.to_string(), &owner))
        .select(contexts::data)
        // Not `first`: its bound `LIMIT ?` makes SQLite re-prepare (see `execution_get`).
        .get_result(conn)
        .await
        .optional()?;
    doc.map(|d| {
        Context::from_json(&d).map_err(|err| {
            crate::store::error::corrupt(format!("context '{owner}' of {execution}: {err}"))
        })
    })
    .transpose()
}

/// The documents of `owners` that exist, keyed by owner.
pub(crate) async fn contexts_get(
    conn: &mut Conn,
    execution: Uuid,
    owners: Vec<String>,
) -> Result<BTreeMap<String, Context>, StoreError> {
    let rows: Vec<(String, String)> = contexts::table
        .filter(contexts::execution_id.eq(execution.to_string()))
        .filter(contexts::owner.eq_any(&owners))
        .select((contexts::owner, contexts::data))
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|(owner, d)| {
            let ctx = Context::from_json(&d).map_err(|err| {
                crate::store::error::corrupt(format!("context '{owner}' of {execution}: {err}"))
            })?;
            Ok((owner, ctx))
        })
        .collect()
}

// ---- cron schedules ---------------------------------------------------------------------

/// Claims a cron instant for execution `execution`: moves the schedule's cursor from at or
/// before the instant to `claim.next_run_at` and records the fire. An instant whose cursor has
/// already passed it (fired or skipped by anyone) or that is already recorded is refused, and
/// nothing is written; the caller's transaction then creates no execution either.
async fn cron_claim(
    conn: &mut Conn,
    claim: &CronClaim,
    execution: &str,
    now: Millis,
) -> Result<(), StoreError> {
    if claim.next_run_at <= claim.instant {
        return Err(StoreError::InvalidRequest(format!(
            "a cron claim must move the cursor past its instant ({} is not after {})",
            claim.next_run_at, claim.instant
        )));
    }
    let sid = claim.schedule_id.to_string();
    let moved = diesel::update(
        cs::table
            .find(&sid)
            .filter(cs::next_run_at.le(claim.instant)),
    )
    .set((
        cs::next_run_at.eq(claim.next_run_at),
        cs::last_run_at.eq(Some(claim.instant)),
        cs::missed_count.eq(cs::missed_count + claim.missed.max(0)),
        cs::updated_at.eq(now),
    ))
    .execute(conn)
    .await?;
    let inserted = if moved == 0 {
        0
    } else {
        diesel::insert_into(cf::table)
            .values(&CronFireRow {
                schedule_id: sid.clone(),
                instant: claim.instant,
                execution_id: execution.to_string(),
                fired_at: now,
            })
            .on_conflict_do_nothing()
            .execute(conn)
            .await?
    };
    if inserted == 0 {
        let existing: Option<String> = cf::table
            .find((&sid, claim.instant))
            .select(cf::execution_id)
            .first(conn)
            .await
            .optional()?;
        return Err(StoreError::CronInstantTaken {
            schedule_id: claim.schedule_id,
            instant: claim.instant,
            existing: existing.map(|e| parse_uuid(&e)).transpose()?,
        });
    }
    Ok(())
}

fn cron_records(rows: Vec<CronScheduleRow>) -> Result<Vec<CronScheduleRecord>, StoreError> {
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Makes a package's stored schedules exactly `specs`: new names are inserted, changed ones
/// updated (the cursor is reset only when the expression or time zone changed), names no
/// longer declared deleted. Returns the package's schedules by name.
pub(crate) async fn cron_schedule_write(
    conn: &mut Conn,
    package_id: String,
    tenant: String,
    specs: Vec<NewCronSchedule>,
    now: Millis,
) -> Result<Vec<CronScheduleRecord>, StoreError> {
    let existing: Vec<CronScheduleRow> = cs::table
        .filter(cs::package_id.eq(&package_id))
        .select(CronScheduleRow::as_select())
        .load(conn)
        .await?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    for spec in specs {
        let (policy, cap) = encode_catch_up(spec.catch_up);
        match existing.iter().find(|r| r.name == spec.name) {
            Some(row) => {
                let timing = row.expression != spec.expression || row.timezone != spec.timezone;
                let changed = timing
                    || row.workflow != spec.workflow
                    || row.catch_up != policy
                    || row.catch_up_max != cap
                    || row.tenant != tenant;
                if !changed {
                    continue;
                }
                let next = if timing {
                    spec.next_run_at
                } else {
                    row.next_run_at
                };
                diesel::update(cs::table.find(&row.id))
                    .set((
                        cs::tenant.eq(&tenant),
                        cs::workflow.eq(&spec.workflow),
                        cs::expression.eq(&spec.expression),
                        cs::timezone.eq(&spec.timezone),
                        cs::catch_up.eq(&policy),
                        cs::catch_up_max.eq(cap),
                        cs::next_run_at.eq(next),
                        cs::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
            }
            None => {
                // Another process writing the same package at once inserts the same row; the
                // second insert is then a no-op.
                diesel::insert_into(cs::table)
                    .values(&CronScheduleRow {
                        id: Uuid::now_v7().to_string(),
                        package_id: package_id.clone(),
                        tenant: tenant.clone(),
                        name: spec.name,
                        workflow: spec.workflow,
                        expression: spec.expression,
                        timezone: spec.timezone,
                        catch_up: policy,
                        catch_up_max: cap,
                        next_run_at: spec.next_run_at,
                        last_run_at: None,
                        missed_count: 0,
                        created_at: now,
                        updated_at: now,
                    })
                    .on_conflict((cs::package_id, cs::name))
                    .do_nothing()
                    .execute(conn)
                    .await?;
            }
        }
    }
    diesel::delete(
        cs::table
            .filter(cs::package_id.eq(&package_id))
            .filter(cs::name.ne_all(&names)),
    )
    .execute(conn)
    .await?;
    let rows: Vec<CronScheduleRow> = cs::table
        .filter(cs::package_id.eq(&package_id))
        .order(cs::name.asc())
        .select(CronScheduleRow::as_select())
        .load(conn)
        .await?;
    cron_records(rows)
}

/// Deletes a package's schedules (and, with them, their fire history). Returns how many.
pub(crate) async fn cron_schedule_delete(
    conn: &mut Conn,
    package_id: String,
) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(cs::table.filter(cs::package_id.eq(package_id)))
            .execute(conn)
            .await?,
    )
}

/// Schedules by cursor (earliest first), then package and name.
pub(crate) async fn cron_schedule_list(
    conn: &mut Conn,
    filter: CronScheduleFilter,
) -> Result<Vec<CronScheduleRecord>, StoreError> {
    let mut q = cs::table.select(CronScheduleRow::as_select()).into_boxed();
    if let Some(p) = filter.package_id {
        q = q.filter(cs::package_id.eq(p));
    }
    if let Some(due) = filter.due_at {
        q = q.filter(cs::next_run_at.le(due));
    }
    let rows: Vec<CronScheduleRow> = q
        .order((cs::next_run_at.asc(), cs::package_id.asc(), cs::name.asc()))
        .limit(filter.limit.unwrap_or(10_000).clamp(1, 100_000))
        .load(conn)
        .await?;
    cron_records(rows)
}

/// The earliest cursor of any schedule: when the scheduler next has something to do.
pub(crate) async fn cron_schedule_next(conn: &mut Conn) -> Result<Option<Millis>, StoreError> {
    Ok(cs::table
        .select(diesel::dsl::min(cs::next_run_at))
        .first::<Option<i64>>(conn)
        .await?)
}

/// Moves a schedule's cursor from exactly `from` to the later `to` without firing, counting
/// `missed` dropped instants. False when the cursor is no longer at `from` (someone else moved
/// it) or the schedule is gone.
pub(crate) async fn cron_schedule_advance(
    conn: &mut Conn,
    id: Uuid,
    from: Millis,
    to: Millis,
    missed: i64,
    now: Millis,
) -> Result<bool, StoreError> {
    if to <= from {
        return Ok(false);
    }
    let n = diesel::update(
        cs::table
            .find(id.to_string())
            .filter(cs::next_run_at.eq(from)),
    )
    .set((
        cs::next_run_at.eq(to),
        cs::missed_count.eq(cs::missed_count + missed.max(0)),
        cs::updated_at.eq(now),
    ))
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// Fired instants, newest first: of one schedule, or of all.
pub(crate) async fn cron_fire_list(
    conn: &mut Conn,
    schedule: Option<Uuid>,
    limit: i64,
) -> Result<Vec<CronFireRecord>, StoreError> {
    let mut q = cf::table.select(CronFireRow::as_select()).into_boxed();
    if let Some(s) = schedule {
        q = q.filter(cf::schedule_id.eq(s.to_string()));
    }
    let rows: Vec<CronFireRow> = q
        .order((cf::instant.desc(), cf::schedule_id.asc()))
        .limit(limit.clamp(1, 100_000))
        .load(conn)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Keeps the newest `keep` fires of every schedule and deletes older ones. The cursor, not this
/// history, is what prevents a second fire, so pruning never weakens exactly-once.
pub(crate) async fn cron_fire_prune(conn: &mut Conn, keep: i64) -> Result<usize, StoreError> {
    let schedules: Vec<String> = cs::table.select(cs::id).load(conn).await?;
    let mut deleted = 0;
    for sid in schedules {
        let cutoff: Option<i64> = cf::table
            .filter(cf::schedule_id.eq(&sid))
            .order(cf::instant.desc())
            .offset(keep.max(0))
            .select(cf::instant)
            .first(conn)
            .await
            .optional()?;
        if let Some(cutoff) = cutoff {
            deleted += diesel::delete(
                cf::table
                    .filter(cf::schedule_id.eq(&sid))
                    .filter(cf::instant.le(cutoff)),
            )
            .execute(conn)
            .await?;
        }
    }
    Ok(deleted)
}
