//! Example package: the workflow `beat`, started every second by the cron schedule
//! `every_second`. Its one task takes 1.5 s, so a run is usually in flight: the daemon's tests
//! use it to watch cron fire on schedule and a shutdown drain a running task.

use std::time::Duration;

use cloacina_macros::{task, workflow};
use cloacina_workflow::{CatchUp, Context, CronSchedule, TaskError};

#[workflow(name = "beat", description = "One slow heartbeat")]
pub mod beat {
    use super::*;

    #[task(timeout_ms = 60_000)]
    pub async fn pulse(ctx: &mut Context) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        ctx.set("pulsed", true)?;
        Ok(())
    }
}

/// Six fields: the first is seconds. After downtime, missed beats are skipped.
pub const EVERY_SECOND: CronSchedule =
    CronSchedule::new("every_second", beat::WORKFLOW_NAME, "* * * * * *")
        .timezone("UTC")
        .catch_up(CatchUp::Skip);

cloacina_workflow::export_package! {
    workflows: [beat::workflow],
    cron: [EVERY_SECOND],
}
