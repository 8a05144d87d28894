//! Database rows and their conversion to the store's records.

use diesel::prelude::*;
use uuid::Uuid;

use super::error::{StoreError, corrupt};
use super::schema::{
    contexts, cron_fires, cron_schedules, execution_events, task_executions, workflow_executions,
};
use super::types::{
    CronFireRecord, CronScheduleRecord, EventRecord, ExecutionRecord, Millis, TaskRecord,
};
use crate::workflow::CatchUp;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_executions)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct ExecutionRow {
    pub id: String,
    pub workflow_name: String,
    pub workflow_version: String,
    pub package_id: Option<String>,
    pub status: String,
    pub total_tasks: i32,
    pub remaining_tasks: i32,
    pub failed_tasks: i32,
    pub event_seq: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub dedup_key: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_executions)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct TaskRow {
    pub execution_id: String,
    pub task_id: String,
    pub position: i32,
    pub dependents: String,
    pub status: String,
    pub remaining_deps: i32,
    pub failed_deps: i32,
    pub attempt: i32,
    pub max_attempts: i32,
    pub recoveries: i32,
    pub ready_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = contexts)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct ContextRow {
    pub execution_id: String,
    pub owner: String,
    pub data: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = execution_events)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct EventRow {
    pub execution_id: String,
    pub seq: i64,
    pub task_id: Option<String>,
    pub kind: String,
    pub attempt: Option<i32>,
    pub message: Option<String>,
    pub created_at: i64,
}

pub(crate) fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| corrupt(format!("execution id '{text}': {e}")))
}

impl TryFrom<ExecutionRow> for ExecutionRecord {
    type Error = StoreError;
    fn try_from(r: ExecutionRow) -> Result<Self, StoreError> {
        Ok(ExecutionRecord {
            id: parse_uuid(&r.id)?,
            status: r.status.parse().map_err(corrupt)?,
            workflow_name: r.workflow_name,
            workflow_version: r.workflow_version,
            package_id: r.package_id,
            total_tasks: r.total_tasks,
            remaining_tasks: r.remaining_tasks,
            failed_tasks: r.failed_tasks,
            error: r.error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            dedup_key: r.dedup_key,
        })
    }
}

impl TryFrom<TaskRow> for TaskRecord {
    type Error = StoreError;
    fn try_from(r: TaskRow) -> Result<Self, StoreError> {
        Ok(TaskRecord {
            execution_id: parse_uuid(&r.execution_id)?,
            status: r.status.parse().map_err(corrupt)?,
            dependents: parse_list(&r.dependents)?,
            task_id: r.task_id,
            position: r.position,
            remaining_deps: r.remaining_deps,
            failed_deps: r.failed_deps,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            recoveries: r.recoveries,
            ready_at: r.ready_at,
            lease_owner: r.lease_owner,
            lease_expires_at: r.lease_expires_at,
            error: r.error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
        })
    }
}

impl TryFrom<EventRow> for EventRecord {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(EventRecord {
            execution_id: parse_uuid(&r.execution_id)?,
            seq: r.seq,
            task_id: r.task_id,
            kind: r.kind,
            attempt: r.attempt,
            message: r.message,
            created_at: r.created_at,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = cron_schedules)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct CronScheduleRow {
    pub id: String,
    pub package_id: String,
    pub tenant: String,
    pub name: String,
    pub workflow: String,
    pub expression: String,
    pub timezone: String,
    pub catch_up: String,
    pub catch_up_max: Option<i32>,
    pub next_run_at: i64,
    pub last_run_at: Option<i64>,
    pub missed_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = cron_fires)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct CronFireRow {
    pub schedule_id: String,
    pub instant: i64,
    pub execution_id: String,
    pub fired_at: i64,
}

/// A catch-up policy as its two columns.
pub(crate) fn encode_catch_up(policy: CatchUp) -> (String, Option<i32>) {
    match policy {
        CatchUp::Skip => ("skip".to_string(), None),
        CatchUp::RunAll { max } => ("run_all".to_string(), Some(max.min(i32::MAX as u32) as i32)),
    }
}

pub(crate) fn decode_catch_up(policy: &str, max: Option<i32>) -> Result<CatchUp, StoreError> {
    match (policy, max) {
        ("skip", _) => Ok(CatchUp::Skip),
        ("run_all", Some(max)) if max >= 0 => Ok(CatchUp::RunAll { max: max as u32 }),
        _ => Err(corrupt(format!(
            "cron catch-up policy '{policy}' with cap {max:?} (expected 'skip', or 'run_all' with a cap)"
        ))),
    }
}

impl TryFrom<CronScheduleRow> for CronScheduleRecord {
    type Error = StoreError;
    fn try_from(r: CronScheduleRow) -> Result<Self, StoreError> {
        Ok(CronScheduleRecord {
            id: Uuid::parse_str(&r.id)
                .map_err(|e| corrupt(format!("cron schedule id '{}': {e}", r.id)))?,
            catch_up: decode_catch_up(&r.catch_up, r.catch_up_max)?,
            package_id: r.package_id,
            tenant: r.tenant,
            name: r.name,
            workflow: r.workflow,
            expression: r.expression,
            timezone: r.timezone,
            next_run_at: r.next_run_at,
            last_run_at: r.last_run_at,
            missed_count: r.missed_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

impl TryFrom<CronFireRow> for CronFireRecord {
    type Error = StoreError;
    fn try_from(r: CronFireRow) -> Result<Self, StoreError> {
        Ok(CronFireRecord {
            schedule_id: Uuid::parse_str(&r.schedule_id)
                .map_err(|e| corrupt(format!("cron schedule id '{}': {e}", r.schedule_id)))?,
            execution_id: parse_uuid(&r.execution_id)?,
            instant: r.instant,
            fired_at: r.fired_at,
        })
    }
}

pub(crate) fn parse_list(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("task list '{text}': {e}")))
}

pub(crate) fn encode_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_string())
}

/// An event about to be written; its sequence number is assigned in the transaction.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub task_id: Option<String>,
    pub kind: &'static str,
    pub attempt: Option<i32>,
    pub message: Option<String>,
}

impl PendingEvent {
    pub fn execution(kind: &'static str, message: Option<String>) -> Self {
        Self {
            task_id: None,
            kind,
            attempt: None,
            message,
        }
    }
    pub fn task(
        kind: &'static str,
        task: &str,
        attempt: Option<i32>,
        message: Option<String>,
    ) -> Self {
        Self {
            task_id: Some(task.to_string()),
            kind,
            attempt,
            message,
        }
    }
    pub fn into_row(self, execution_id: &str, seq: i64, now: Millis) -> EventRow {
        EventRow {
            execution_id: execution_id.to_string(),
            seq,
            task_id: self.task_id,
            kind: self.kind.to_string(),
            attempt: self.attempt,
            message: self.message,
            created_at: now,
        }
    }
}
