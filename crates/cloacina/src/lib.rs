//! Cloacina: a durable workflow orchestration engine whose only hard dependency is a
//! database — SQLite embedded by default, PostgreSQL in production.
//!
//! Modules follow the concepts of the design: [`workflow`] (authoring types, re-exported from
//! `cloacina-workflow`), [`store`] (storage on both backends), [`engine`] (the durable runner).
//! Every public error has a stable machine code: see [`error`].

pub mod auth;
pub mod compiler;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod engine;
pub mod error;
pub mod host;
pub mod package;
pub mod reconciler;
pub mod registry;
pub mod schedule;
pub mod store;
pub mod sync;
pub mod tenant;

/// The authoring types (`Context`, `Task`, `Workflow`, ...), shared with packages.
pub mod workflow {
    pub use cloacina_workflow::*;
}

pub use cloacina_macros::{task, workflow};
pub use cloacina_workflow;
pub use engine::{EngineError, ExecutionResult, Runner, RunnerConfig};
pub use error::{ErrorCode, ErrorKind};
pub use host::{Host, HostConfig};
pub use store::{Store, StoreError};
