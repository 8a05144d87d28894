//! The reconciler's pipeline: six load steps and the same six, reversed, for unload (see
//! docs/reconciler.md). Every step is idempotent — a step that finds
//! nothing to do succeeds — so rerunning an unload picks up where a failed one stopped.
//!
//! | load | unload |
//! |---|---|
//! | 1. cron schedules written | 1. workflows + tasks unregistered |
//! | 2. custom-poll triggers registered | 2. reactor-bound CGs unbound |
//! | 3. reactors started | 3. trigger-less CGs unregistered |
//! | 4. trigger-less CGs registered | 4. reactors torn down |
//! | 5. reactor-bound CGs bound | 5. custom-poll triggers unregistered |
//! | 6. workflows + tasks registered | 6. cron schedules deleted from the database |

use std::sync::Arc;

use tracing::Instrument;

use cloacina_workflow::package::GraphDescription;

use super::Runtime;
use crate::error::ErrorCode;
use crate::package::loader::LoadedPackage;
use crate::registry::{BindOutcome, Owner, RegistryError};
use crate::schedule::ScheduleError;

/// Why a load or unload step failed: the error of the scheduler or registry the step drives,
/// with its message and code unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ErrorCode for StepError {
    fn code(&self) -> &'static str {
        match self {
            StepError::Schedule(e) => e.code(),
            StepError::Registry(e) => e.code(),
        }
    }
}

/// The package a step acts on.
pub(crate) struct Target<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub package: &'a Arc<LoadedPackage>,
}

impl Target<'_> {
    fn owner(&self) -> Owner {
        Owner {
            package_id: self.id.to_string(),
            package: self.package.name().to_string(),
            version: self.package.version().to_string(),
        }
    }

    fn graphs(&self, bound: bool) -> Vec<GraphDescription> {
        self.package
            .description()
            .graphs
            .iter()
            .filter(|g| g.reactor.is_some() == bound)
            .cloned()
            .collect()
    }
}

/// The step names, in pipeline order, as shown by `package inspect` and the logs.
pub const LOAD_STEPS: [&str; 6] = [
    "cron schedules written",
    "custom-poll triggers registered",
    "reactors started",
    "trigger-less CGs registered",
    "reactor-bound CGs bound",
    "workflows + tasks registered",
];

pub const UNLOAD_STEPS: [&str; 6] = [
    "workflows + tasks unregistered",
    "reactor-bound CGs unbound",
    "trigger-less CGs unregistered",
    "reactors torn down",
    "custom-poll triggers unregistered",
    "cron schedules deleted",
];

/// What a load step reports besides success: step 5 may have to wait for a publisher.
pub(crate) enum LoadStep {
    Done,
    Waiting(String),
}

// ---- load --------------------------------------------------------------------------------

pub(crate) async fn load_1_write_cron_schedules(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<LoadStep, StepError> {
    rt.cron
        .schedules_write(t.id, t.tenant, &t.package.description().cron)
        .await?;
    Ok(LoadStep::Done)
}

pub(crate) async fn load_2_register_triggers(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<LoadStep, StepError> {
    rt.triggers
        .triggers_register(
            t.id,
            t.tenant,
            t.package.clone(),
            &t.package.description().triggers,
        )
        .await?;
    Ok(LoadStep::Done)
}

pub(crate) async fn load_3_start_reactors(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<LoadStep, StepError> {
    rt.reactors
        .reactors_start(t.tenant, &t.owner(), &t.package.description().reactors)?;
    Ok(LoadStep::Done)
}

pub(crate) async fn load_4_register_trigger_less_graphs(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<LoadStep, StepError> {
    rt.reactors
        .graphs_register(t.tenant, &t.owner(), t.package.clone(), &t.graphs(false))?;
    Ok(LoadStep::Done)
}

pub(crate) async fn load_5_bind_reactor_graphs(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<LoadStep, StepError> {
    match rt
        .reactors
        .graphs_bind(t.tenant, &t.owner(), t.package.clone(), &t.graphs(true))?
    {
        BindOutcome::Bound => Ok(LoadStep::Done),
        BindOutcome::Waiting { reason } => Ok(LoadStep::Waiting(reason)),
    }
}

pub(crate) async fn load_6_register_workflows(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<LoadStep, StepError> {
    for workflow in t.package.workflows() {
        rt.runner.register_packaged(workflow, t.id);
    }
    Ok(LoadStep::Done)
}

// ---- unload ------------------------------------------------------------------------------

pub(crate) async fn unload_1_unregister_workflows(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<(), StepError> {
    // Only the names this package still serves: after an upgrade the new version keeps its own.
    rt.runner.unregister_package(t.id);
    Ok(())
}

pub(crate) async fn unload_2_unbind_reactor_graphs(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<(), StepError> {
    rt.reactors
        .graphs_unbind(t.tenant, t.id)
        .map(|_| ())
        .map_err(StepError::from)
}

pub(crate) async fn unload_3_unregister_trigger_less_graphs(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<(), StepError> {
    rt.reactors
        .graphs_unregister(t.tenant, t.id)
        .map(|_| ())
        .map_err(StepError::from)
}

pub(crate) async fn unload_4_tear_down_reactors(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<(), StepError> {
    if t.package.description().reactors.is_empty() {
        return Ok(());
    }
    // A reactor already gone (or taken over by a newer version) is a no-op with a warning.
    let warnings = rt.reactors.reactors_stop(t.tenant, t.id)?;
    for w in warnings {
        // The step's span carries the package's fields.
        tracing::info!("{w}");
    }
    Ok(())
}

pub(crate) async fn unload_5_unregister_triggers(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<(), StepError> {
    rt.triggers
        .triggers_unregister(t.id)
        .await
        .map(|_| ())
        .map_err(StepError::from)
}

pub(crate) async fn unload_6_delete_cron_schedules(
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<(), StepError> {
    rt.cron
        .schedules_delete(t.id)
        .await
        .map(|_| ())
        .map_err(StepError::from)
}

/// The span every step runs in: the lines the registries and schedulers write during a step
/// (a graph unbound, a reactor taken over, schedules written) carry the package's
/// `package_id`, `package` and `version` through it, on stderr and in the JSON log.
fn step_span(t: &Target<'_>) -> tracing::Span {
    tracing::info_span!(
        "package",
        package_id = %t.id,
        package = %t.package.name(),
        version = %t.package.version()
    )
}

/// Runs load step `n` (0-based).
pub(crate) async fn load_step(
    n: usize,
    rt: &Runtime,
    t: &Target<'_>,
) -> Result<LoadStep, StepError> {
    let step = async {
        match n {
            0 => load_1_write_cron_schedules(rt, t).await,
            1 => load_2_register_triggers(rt, t).await,
            2 => load_3_start_reactors(rt, t).await,
            3 => load_4_register_trigger_less_graphs(rt, t).await,
            4 => load_5_bind_reactor_graphs(rt, t).await,
            _ => load_6_register_workflows(rt, t).await,
        }
    };
    step.instrument(step_span(t)).await
}

/// Runs unload step `n` (0-based).
pub(crate) async fn unload_step(n: usize, rt: &Runtime, t: &Target<'_>) -> Result<(), StepError> {
    let step = async {
        match n {
            0 => unload_1_unregister_workflows(rt, t).await,
            1 => unload_2_unbind_reactor_graphs(rt, t).await,
            2 => unload_3_unregister_trigger_less_graphs(rt, t).await,
            3 => unload_4_tear_down_reactors(rt, t).await,
            4 => unload_5_unregister_triggers(rt, t).await,
            _ => unload_6_delete_cron_schedules(rt, t).await,
        }
    };
    step.instrument(step_span(t)).await
}

/// The unload step that undoes load step `n` (load 1 ↔ unload 6, ..., load 6 ↔ unload 1).
pub(crate) fn undo_of(load_step: usize) -> usize {
    5 - load_step
}
