//! How a task reports failure.

use std::time::Duration;

use crate::context::ContextError;

/// A failed task attempt. The variant decides how retry conditions treat it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// An ordinary failure: retried when the policy retries all errors.
    #[error("{0}")]
    Failed(String),
    /// A failure worth retrying (network blip, lock timeout); retried under `TransientOnly` too.
    #[error("transient: {0}")]
    Transient(String),
    /// A failure no retry can fix (bad input); never retried.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The attempt ran past the task's timeout.
    #[error("timed out after {}", humanize(*.0))]
    Timeout(Duration),
    /// The task body panicked; the panic was caught and did not reach the engine.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The task read or wrote its context wrongly.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The run was cancelled while the task was running.
    #[error("cancelled")]
    Cancelled,
}

impl TaskError {
    pub fn failed(msg: impl Into<String>) -> Self {
        Self::Failed(msg.into())
    }
    pub fn transient(msg: impl Into<String>) -> Self {
        Self::Transient(msg.into())
    }
    pub fn permanent(msg: impl Into<String>) -> Self {
        Self::Permanent(msg.into())
    }

    /// A short stable name for the kind of failure, recorded in events.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskError::Failed(_) => "failed",
            TaskError::Transient(_) => "transient",
            TaskError::Permanent(_) => "permanent",
            TaskError::Timeout(_) => "timeout",
            TaskError::Panicked(_) => "panicked",
            TaskError::Context(_) => "context",
            TaskError::Cancelled => "cancelled",
        }
    }

    /// The stable machine code (documented in the host's docs/errors.md); [`TaskError::kind`]
    /// is the finer name recorded in events.
    pub fn code(&self) -> &'static str {
        match self {
            TaskError::Failed(_)
            | TaskError::Transient(_)
            | TaskError::Permanent(_)
            | TaskError::Panicked(_) => "task_failed",
            TaskError::Timeout(_) => "task_timeout",
            TaskError::Cancelled => "task_cancelled",
            TaskError::Context(e) => e.code(),
        }
    }

    /// Turns a caught panic payload into a task error with the panic's message.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        TaskError::Panicked(msg)
    }
}

impl From<serde_json::Error> for TaskError {
    fn from(e: serde_json::Error) -> Self {
        TaskError::Failed(format!("JSON error: {e}"))
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
