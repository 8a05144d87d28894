//! What the store reads and writes: statuses, records, requests and outcomes.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::workflow::{CatchUp, Context, Workflow};

/// Unix time in milliseconds (UTC): the store's only time unit, identical on both backends.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Context owner for a workflow's input document.
pub const INPUT_CONTEXT: &str = "/input";
/// Context owner for a workflow's final document.
pub const FINAL_CONTEXT: &str = "/final";

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case(stringify!($variant)) { return Ok($name::$variant); })+
                Err(format!(
                    "unknown {} '{}'; expected one of: {}",
                    stringify!($name), s, [$(stringify!($variant)),+].join(", ")
                ))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// A workflow execution's status.
    ExecutionStatus { Pending, Running, Completed, Failed, Cancelled, Paused }
);

string_enum!(
    /// A task execution's status.
    TaskStatus { NotStarted, Ready, Running, Completed, Failed, Skipped }
);

impl ExecutionStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Skipped)
    }
}

/// Kinds of execution events, one per state transition (docs/concepts.md).
pub mod event_kind {
    pub const EXECUTION_CREATED: &str = "execution_created";
    pub const EXECUTION_STARTED: &str = "execution_started";
    pub const EXECUTION_COMPLETED: &str = "execution_completed";
    pub const EXECUTION_FAILED: &str = "execution_failed";
    pub const EXECUTION_CANCELLED: &str = "execution_cancelled";
    pub const EXECUTION_PAUSED: &str = "execution_paused";
    pub const EXECUTION_RESUMED: &str = "execution_resumed";
    pub const TASK_READY: &str = "task_ready";
    pub const TASK_CLAIMED: &str = "task_claimed";
    pub const TASK_RETRY_SCHEDULED: &str = "task_retry_scheduled";
    pub const TASK_COMPLETED: &str = "task_completed";
    pub const TASK_FAILED: &str = "task_failed";
    pub const TASK_SKIPPED: &str = "task_skipped";
    pub const TASK_RECOVERED: &str = "task_recovered";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: Uuid,
    pub workflow_name: String,
    pub workflow_version: String,
    pub package_id: Option<String>,
    pub status: ExecutionStatus,
    pub total_tasks: i32,
    pub remaining_tasks: i32,
    pub failed_tasks: i32,
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
    /// Set for runs that must not run twice at once (custom-poll trigger fires): no other
    /// unfinished execution has the same key.
    pub dedup_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub execution_id: Uuid,
    pub task_id: String,
    pub position: i32,
    pub dependents: Vec<String>,
    pub status: TaskStatus,
    pub remaining_deps: i32,
    pub failed_deps: i32,
    pub attempt: i32,
    pub max_attempts: i32,
    pub recoveries: i32,
    pub ready_at: Option<Millis>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub execution_id: Uuid,
    pub seq: i64,
    pub task_id: Option<String>,
    pub kind: String,
    pub attempt: Option<i32>,
    pub message: Option<String>,
    pub created_at: Millis,
}

/// A task row to create with its execution.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub task_id: String,
    pub position: i32,
    pub dependents: Vec<String>,
    pub dependencies: i32,
    pub max_attempts: i32,
}

impl NewTask {
    /// A task with no dependencies: created `Ready`, and claimable with its execution's
    /// creation.
    pub fn is_root(&self) -> bool {
        self.dependencies == 0
    }
}

/// An execution to create: the execution row, its task rows (roots start `Ready`), its input
/// context and its first events, all in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    pub id: Uuid,
    pub workflow_name: String,
    pub workflow_version: String,
    pub package_id: Option<String>,
    pub input: Context,
    pub tasks: Vec<NewTask>,
    /// Refuse the creation ([`StoreError::DuplicateExecution`](super::StoreError)) while an
    /// unfinished execution (Pending, Running, Paused) has the same key.
    pub dedup_key: Option<String>,
    /// This execution is the fire of a cron instant: created only in the transaction that moves
    /// the schedule's cursor past the instant and records the fire
    /// ([`StoreError::CronInstantTaken`](super::StoreError) otherwise).
    pub cron: Option<CronClaim>,
}

impl NewExecution {
    /// The rows for a run of `workflow` with `input`, under a fresh time-ordered id.
    pub fn for_workflow(workflow: &Workflow, input: Context, package_id: Option<String>) -> Self {
        let tasks = workflow
            .topological_order()
            .into_iter()
            .enumerate()
            .filter_map(|(position, id)| {
                let task = workflow.task(id)?;
                let spec = task.spec();
                Some(NewTask {
                    task_id: id.to_string(),
                    position: position as i32,
                    dependents: workflow
                        .dependents(id)
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    dependencies: spec.dependencies.len() as i32,
                    max_attempts: spec.retry.max_attempts.min(i32::MAX as u32) as i32,
                })
            })
            .collect();
        NewExecution {
            id: Uuid::now_v7(),
            workflow_name: workflow.name().to_string(),
            workflow_version: workflow.version().to_string(),
            package_id,
            input,
            tasks,
            dedup_key: None,
            cron: None,
        }
    }

    /// Applies what [`SubmitOptions`] asks of the creation.
    pub fn with_options(mut self, options: SubmitOptions) -> Self {
        self.dedup_key = options.dedup_key;
        self.cron = options.cron;
        self
    }
}

/// How a run is started beyond its workflow and input (`Runner::submit_with`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// De-duplication key: while an unfinished execution (Pending, Running, Paused) has the same
    /// key, the submission starts nothing and answers [`SubmitOutcome::Duplicate`]. Holds across
    /// processes (a partial unique index in the database).
    pub dedup_key: Option<String>,
    /// Claim of a cron instant: the run is created only if the instant was neither fired nor
    /// skipped yet, in the same transaction that records it.
    pub cron: Option<CronClaim>,
}

/// What a submission with [`SubmitOptions`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SubmitOutcome {
    /// A new execution was created.
    Started(Uuid),
    /// Nothing was created: an unfinished run has the same de-duplication key, or the cron
    /// instant was already fired or skipped. `existing` is that run, when there is one.
    Duplicate { existing: Option<Uuid> },
}

impl SubmitOutcome {
    /// The new execution's id, or `None` for a duplicate.
    pub fn started(self) -> Option<Uuid> {
        match self {
            SubmitOutcome::Started(id) => Some(id),
            SubmitOutcome::Duplicate { .. } => None,
        }
    }
}

/// Fire instant `instant` of cron schedule `schedule_id`, then move the schedule's cursor
/// (`next_run_at`) to `next_run_at` (which must be later than `instant`), adding `missed` to its
/// count of instants dropped by the catch-up policy on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronClaim {
    pub schedule_id: Uuid,
    pub instant: Millis,
    pub next_run_at: Millis,
    pub missed: i64,
}

/// A cron schedule as a package declares it, with its first instant computed by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCronSchedule {
    pub name: String,
    pub workflow: String,
    pub expression: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    /// Used when the row is new or its expression or time zone changed; an unchanged schedule
    /// keeps its cursor, so instants missed while the process was down are still found.
    pub next_run_at: Millis,
}

/// A stored cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronScheduleRecord {
    pub id: Uuid,
    pub package_id: String,
    pub tenant: String,
    pub name: String,
    pub workflow: String,
    pub expression: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    /// The cursor: the earliest instant neither fired nor skipped yet.
    pub next_run_at: Millis,
    /// The last instant fired.
    pub last_run_at: Option<Millis>,
    /// Instants the catch-up policy dropped so far.
    pub missed_count: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Which cron schedules to list (all of them by default), ordered by `next_run_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CronScheduleFilter {
    pub package_id: Option<String>,
    /// Only schedules whose cursor is at or before this instant (due ones).
    pub due_at: Option<Millis>,
    pub limit: Option<i64>,
}

/// One fired cron instant and the execution it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronFireRecord {
    pub schedule_id: Uuid,
    pub instant: Millis,
    pub execution_id: Uuid,
    pub fired_at: Millis,
}

/// Filters for listing executions, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionFilter {
    pub workflow: Option<String>,
    pub status: Option<ExecutionStatus>,
    pub limit: Option<i64>,
    /// Only executions created strictly before this one (keyset pagination).
    pub before: Option<Uuid>,
    /// Rows to skip (offset pagination, newest first).
    pub offset: Option<i64>,
}

/// Ask for up to `limit` ready tasks, leased to `owner` until `now + lease_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    pub owner: String,
    pub lease_ms: i64,
    pub limit: i64,
    /// Only tasks of executions of these workflows (the ones this runner can run).
    pub workflows: Option<Vec<String>>,
    /// Only these exact tasks (in-process hand-off of tasks this runner just made ready).
    pub only: Option<Vec<(Uuid, String)>>,
}

/// A row a claim statement just took, before it becomes a [`ClaimedTask`].
#[derive(Debug, Clone)]
pub(crate) struct ClaimedRow {
    pub(crate) execution_id: String,
    pub(crate) task_id: String,
    pub(crate) attempt: i32,
    pub(crate) recoveries: i32,
    pub(crate) failed_deps: i32,
    /// The execution was not seen Running, so the claim may have to start it.
    pub(crate) maybe_pending: bool,
}

/// An execution created together with a claim of its first tasks
/// ([`Store::execution_create_claiming`](super::Store::execution_create_claiming)).
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedClaimed {
    pub record: ExecutionRecord,
    /// The root tasks claimed in the creating transaction.
    pub claimed: Vec<ClaimedTask>,
    /// Some root task was left `Ready` for any runner to claim.
    pub left_ready: bool,
}

/// A task this runner now holds. `attempt` is the fencing token for every later write.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub execution_id: Uuid,
    pub task_id: String,
    pub attempt: i32,
    pub recoveries: i32,
    /// Dependencies that ended Failed or Skipped (0 means all completed).
    pub failed_deps: i32,
    pub workflow_name: String,
    pub workflow_version: String,
    pub lease_expires_at: Millis,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Completed {
        output: Context,
    },
    Failed {
        error: String,
    },
    Skipped {
        reason: String,
    },
    /// Failed, with another attempt scheduled at `retry_at`.
    Retry {
        error: String,
        retry_at: Millis,
    },
}

/// Record the end of the attempt `attempt` of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFinish {
    pub execution_id: Uuid,
    pub task_id: String,
    pub attempt: i32,
    pub outcome: AttemptOutcome,
    /// Claim up to this many of the dependents the completion readies, for this owner, in the
    /// same transaction (in-process hand-off: no extra commit, no dispatcher round trip).
    pub handoff: Option<Handoff>,
}

/// Who takes over newly ready dependents, and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub owner: String,
    pub lease_ms: i64,
    pub limit: i64,
    /// Fill the slots the dependents leave free with other ready tasks of these workflows (the
    /// ones the runner serves), as its dispatcher would claim them: a freed slot goes on at once
    /// instead of waiting for a dispatcher claim and a commit of its own.
    pub refill: Option<Vec<String>>,
}

/// What recording an attempt's end changed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FinishResult {
    /// The attempt no longer held the task (lease expired and another attempt took over):
    /// nothing was written.
    pub fenced: bool,
    /// Dependents that became `Ready` in the same transaction.
    pub newly_ready: Vec<String>,
    /// The execution's final status, when this was its last task.
    pub execution_finished: Option<ExecutionStatus>,
    /// Tasks claimed for the hand-off owner in the same transaction: newly ready dependents
    /// first (`handed_off` of them), then any refill.
    pub claimed: Vec<ClaimedTask>,
    /// How many of `claimed` are newly ready dependents.
    pub handed_off: usize,
}

/// What a lease-recovery pass did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecoveryResult {
    /// Tasks put back to `Ready` for another attempt.
    pub requeued: Vec<(Uuid, String)>,
    /// Tasks failed because they exceeded the recovery limit.
    pub failed: Vec<(Uuid, String)>,
    /// Executions that ended because of those failures.
    pub finished: Vec<Uuid>,
}

/// What the store tells runners, in process and (PostgreSQL) across processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSignal {
    /// Some task may have become claimable.
    TasksReady,
    /// An execution reached a terminal status.
    ExecutionFinished(Uuid),
    /// An execution was paused, resumed or cancelled.
    ExecutionChanged(Uuid),
    /// Signals may have been lost (the PostgreSQL notification connection was re-established
    /// after an outage): whoever waits for one should look at the database again.
    Resync,
}

impl StoreSignal {
    pub(crate) fn encode(&self) -> String {
        match self {
            StoreSignal::TasksReady => "ready".to_string(),
            StoreSignal::ExecutionFinished(id) => format!("done:{id}"),
            StoreSignal::ExecutionChanged(id) => format!("changed:{id}"),
            StoreSignal::Resync => "resync".to_string(),
        }
    }

    pub(crate) fn decode(payload: &str) -> Option<Self> {
        match payload {
            "ready" => return Some(StoreSignal::TasksReady),
            "resync" => return Some(StoreSignal::Resync),
            _ => {}
        }
        let (kind, id) = payload.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "done" => Some(StoreSignal::ExecutionFinished(id)),
            "changed" => Some(StoreSignal::ExecutionChanged(id)),
            _ => None,
        }
    }
}

/// Results that imply signals to runners.
pub(crate) trait Signals {
    fn signals(&self, execution: Option<Uuid>) -> Vec<StoreSignal>;
}

impl Signals for () {
    fn signals(&self, _: Option<Uuid>) -> Vec<StoreSignal> {
        Vec::new()
    }
}

impl Signals for FinishResult {
    fn signals(&self, execution: Option<Uuid>) -> Vec<StoreSignal> {
        let mut out = Vec::new();
        // Dependents the completion claimed itself need nobody else to wake up.
        if self.newly_ready.len() > self.handed_off {
            out.push(StoreSignal::TasksReady);
        }
        if let (Some(_), Some(id)) = (self.execution_finished, execution) {
            out.push(StoreSignal::ExecutionFinished(id));
        }
        out
    }
}

impl Signals for RecoveryResult {
    fn signals(&self, _: Option<Uuid>) -> Vec<StoreSignal> {
        let mut out: Vec<StoreSignal> = self
            .finished
            .iter()
            .map(|id| StoreSignal::ExecutionFinished(*id))
            .collect();
        if !self.requeued.is_empty() || !self.failed.is_empty() {
            out.push(StoreSignal::TasksReady);
        }
        out
    }
}
