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
        "invalid schema name '{0}': use 1-63 lowercase ASCII letters, digits, underscores and hyphens, starting with a letter or an underscore and not with 'pg_'"
    )]
    InvalidSchema(String),
    #[error("database error: {0}")]
    Query(DbError),
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
    #[error("tenant '{0}' already exists (tenant names are unique regardless of case)")]
    TenantExists(String),
    #[error(
        "package {name} {version} already exists in tenant '{tenant}'; upload it with a new version, or delete the existing one first"
    )]
    PackageExists {
        tenant: String,
        name: String,
        version: String,
    },
    #[error("invalid storage request: {0}")]
    InvalidRequest(String),
    #[error("stored data is not readable ({0}); the database may have been edited by hand")]
    Corrupt(String),
    #[error("committing to the database failed: {0}")]
    Commit(String),
    #[error(
        "the database writer stopped (the store was closed, or its writer failed); reopen the store"
    )]
    WriterGone,
    #[error("the store was closed; open it again to use the database")]
    Closed,
    /// A failure of the database itself, naming which database it happened in: a user with
    /// several databases (tenants, test files) must be able to tell which one is full, locked
    /// or damaged.
    ///
    /// The message includes the inner error's, so it is not also the `source()` (see
    /// [`crate::error`]); match on [`StoreError::inner`].
    #[error("{database}: {cause}")]
    InDatabase {
        /// `SQLite database /abs/path.db` or `PostgreSQL database postgres://user:***@host/db`.
        database: String,
        cause: Box<StoreError>,
    },
}

/// A database driver's error, kept opaque so that no driver type is part of the public API.
/// Its message is the driver's.
#[derive(Debug)]
pub struct DbError(diesel::result::Error);

impl DbError {
    /// The driver's error, for classification inside the crate.
    pub(crate) fn as_diesel(&self) -> &diesel::result::Error {
        &self.0
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {}

/// Crate-internal: lets `?` turn a driver error into a [`StoreError::Query`].
#[doc(hidden)]
impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        StoreError::Query(DbError(e))
    }
}

impl crate::error::ErrorCode for StoreError {
    fn code(&self) -> &'static str {
        match self {
            StoreError::InvalidUrl { .. } => "invalid_database_url",
            StoreError::InvalidSchema(_) => "invalid_schema",
            StoreError::InvalidRequest(_) => "invalid_request",
            StoreError::Connect { .. } | StoreError::Pool(_) | StoreError::WriterGone => {
                "store_unavailable"
            }
            StoreError::Query(_) if self.is_transient() => "store_unavailable",
            StoreError::Query(_) => "store_error",
            StoreError::Closed => "store_closed",
            StoreError::Commit(_) => "commit_failed",
            StoreError::Migration(_) => "migration_failed",
            StoreError::Corrupt(_) => "store_corrupt",
            StoreError::ExecutionNotFound(_) => "execution_not_found",
            StoreError::ExecutionExists { .. } => "execution_exists",
            StoreError::InvalidTransition { .. } => "invalid_transition",
            StoreError::DuplicateExecution { .. } => "duplicate_execution",
            StoreError::CronInstantTaken { .. } => "cron_instant_taken",
            StoreError::TenantExists(_) => "tenant_exists",
            StoreError::PackageExists { .. } => "package_exists",
            StoreError::InDatabase { cause, .. } => cause.code(),
        }
    }
}

impl StoreError {
    /// The error itself, without the database it happened in (see [`StoreError::InDatabase`]): match
    /// on this rather than on the error when the variant matters.
    pub fn inner(&self) -> &StoreError {
        match self {
            StoreError::InDatabase { cause, .. } => cause.inner(),
            other => other,
        }
    }

    /// True when the database itself failed (it is full, read-only, damaged, locked or
    /// unreachable, or a commit failed), as opposed to a request it refused on its merits (not
    /// found, duplicate, invalid transition). The writer's health follows these.
    pub fn is_database_failure(&self) -> bool {
        use diesel::result::DatabaseErrorKind as K;
        match self.inner() {
            StoreError::Connect { .. }
            | StoreError::Pool(_)
            | StoreError::Commit(_)
            | StoreError::WriterGone => true,
            StoreError::Query(e) => matches!(
                e.as_diesel(),
                diesel::result::Error::DatabaseError(
                    K::Unknown
                        | K::ClosedConnection
                        | K::UnableToSendCommand
                        | K::ReadOnlyTransaction,
                    _
                ) | diesel::result::Error::BrokenTransactionManager
            ),
            _ => false,
        }
    }

    /// Names the database a database-level failure happened in; other errors (a request the
    /// database refused on its merits) and errors that already name it are returned as they are.
    pub(crate) fn in_database(self, database: &str) -> StoreError {
        match self {
            StoreError::Query(_)
            | StoreError::Commit(_)
            | StoreError::Pool(_)
            | StoreError::WriterGone
            | StoreError::Migration(_)
            | StoreError::Corrupt(_) => StoreError::InDatabase {
                database: database.to_string(),
                cause: Box::new(self),
            },
            other => other,
        }
    }

    /// True when retrying the same operation later may succeed: the connection was lost,
    /// closed, reset or refused, the server is shutting down or restarting, a serialization
    /// failure or deadlock, or SQLite is busy or locked by another connection. A request the
    /// database refused on its merits, a full disk or a damaged file is not transient: retrying
    /// it cannot help.
    pub fn is_transient(&self) -> bool {
        use diesel::result::DatabaseErrorKind as K;
        match self.inner() {
            StoreError::Pool(_) | StoreError::Connect { .. } | StoreError::WriterGone => true,
            // A failed batch carries its cause's text: a lost connection is worth retrying, a
            // full disk or a constraint checked at commit is not.
            StoreError::Commit(message) => transient_message(message),
            StoreError::Query(e) => match e.as_diesel() {
                diesel::result::Error::DatabaseError(
                    K::ClosedConnection | K::UnableToSendCommand | K::SerializationFailure,
                    _,
                )
                | diesel::result::Error::BrokenTransactionManager => true,
                diesel::result::Error::DatabaseError(K::Unknown, info) => {
                    transient_message(info.message())
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// Whether a database error without a specific kind (diesel reports these as `Unknown`) says
/// the connection or the database is temporarily unavailable.
pub(crate) fn transient_message(message: &str) -> bool {
    const TRANSIENT: [&str; 16] = [
        // SQLite: SQLITE_BUSY and SQLITE_LOCKED.
        "database is locked",
        "database table is locked",
        "database schema is locked",
        // PostgreSQL: admin_shutdown, crash_shutdown, cannot_connect_now, idle timeouts.
        "terminating connection",
        "the database system is",
        "server closed the connection",
        "connection closed",
        "connection reset",
        "connection refused",
        "broken pipe",
        "deadlock detected",
        "could not serialize access",
        "canceling statement due to conflict with recovery",
        "no connection to the server",
        "error communicating with the server",
        "unexpected eof",
    ];
    let message = message.to_ascii_lowercase();
    TRANSIENT.iter().any(|t| message.contains(t))
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
