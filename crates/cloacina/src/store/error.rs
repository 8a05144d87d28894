//! Storage errors, each with a message an operator can act on.

use uuid::Uuid;

use super::types::{ExecutionStatus, Millis};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "invalid database URL '{url}': {reason} (expected sqlite://PATH, sqlite:///ABSOLUTE/PATH, sqlite::memory: or postgres://USER@HOST/DB)"
    )]
    InvalidUrl { url: String, reason: String },
    #[error("cannot open {backend} database at {target}: {message}")]
    Connect {
        backend: &'static str,
        target: String,
        message: String,
    },
    #[error("applying database migrations failed: {0}")]
    Migration(String),
    #[error(
        "invalid schema name '{0}': use 1-48 lowercase letters, digits and underscores, starting with a letter"
    )]
    InvalidSchema(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database connection pool error: {0}")]
    Pool(String),
    #[error("execution {0} not found")]
    ExecutionNotFound(Uuid),
    #[error("execution {id} already exists")]
    ExecutionExists { id: Uuid },
    #[error("cannot {action} execution {id}: it is {status}")]
    InvalidTransition {
        id: Uuid,
        action: &'static str,
        status: ExecutionStatus,
    },
    #[error(
        "an unfinished execution{} already has de-duplication key '{dedup_key}'; nothing was started",
        existing.map(|id| format!(" ({id})")).unwrap_or_default()
    )]
    DuplicateExecution {
        dedup_key: String,
        existing: Option<Uuid>,
    },
    #[error(
        "instant {instant} of cron schedule {schedule_id} was already {}; nothing was started",
        existing.map(|id| format!("fired (execution {id})")).unwrap_or_else(|| "fired or skipped, or the schedule was deleted".to_string())
    )]
    CronInstantTaken {
        schedule_id: Uuid,
        instant: Millis,
        existing: Option<Uuid>,
    },
    #[error("invalid storage request: {0}")]
    InvalidRequest(String),
    #[error("stored data is not readable ({0}); the database may have been edited by hand")]
    Corrupt(String),
    #[error("committing to the database failed: {0}")]
    Commit(String),
    #[error("the database writer stopped; reopen the store")]
    WriterGone,
}

impl StoreError {
    /// True when retrying the same operation later may succeed (lost connection, busy database).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_)
            | StoreError::Connect { .. }
            | StoreError::WriterGone
            | StoreError::Commit(_) => true,
            StoreError::Query(e) => matches!(
                e,
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ClosedConnection
                        | diesel::result::DatabaseErrorKind::SerializationFailure
                        | diesel::result::DatabaseErrorKind::Unknown,
                    _
                ) | diesel::result::Error::BrokenTransactionManager
            ),
            _ => false,
        }
    }
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
