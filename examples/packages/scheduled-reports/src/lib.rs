//! Example package: one workflow, `report`, started two ways:
//!
//! - the cron schedule `nightly_report`: 02:00 every day, Amsterdam time; after downtime, the
//!   missed nights run (at most the last 3);
//! - the custom-poll trigger `inbox_watch`, polled every 5 s. Its poll function stands in for
//!   "look at an inbox": every other poll finds a batch and fires with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloacina_macros::{task, workflow};
use cloacina_workflow::{
    CatchUp, Context, CronSchedule, PollFuture, PollOutcome, PollTrigger, TaskError,
};

#[workflow(
    name = "report",
    description = "Gather the numbers and render a report"
)]
pub mod report {
    use super::*;

    #[task(retry_attempts = 2, retry_delay_ms = 100)]
    pub async fn gather(ctx: &mut Context) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let batch: u64 = ctx.get_opt("batch")?.unwrap_or(0);
        ctx.set("rows", 10 * (batch + 1))?;
        Ok(())
    }

    #[task(dependencies = [gather])]
    pub async fn render(ctx: &mut Context) -> Result<(), TaskError> {
        let rows: u64 = ctx.get("rows")?;
        let source: String = ctx.get_opt("source")?.unwrap_or_else(|| "cron".to_string());
        ctx.set("report", format!("{rows} rows from {source}"))?;
        Ok(())
    }
}

pub const NIGHTLY_REPORT: CronSchedule =
    CronSchedule::new("nightly_report", report::WORKFLOW_NAME, "0 2 * * *")
        .timezone("Europe/Amsterdam")
        .catch_up(CatchUp::RunAll { max: 3 });

static POLLS: AtomicU64 = AtomicU64::new(0);

/// Every odd poll finds batch number `n` and fires; every even poll finds nothing.
fn check_inbox() -> PollFuture {
    Box::pin(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let n = POLLS.fetch_add(1, Ordering::SeqCst) + 1;
        if n % 2 == 1 {
            let mut ctx = Context::new();
            ctx.set("source", "inbox")?;
            ctx.set("batch", n)?;
            Ok(PollOutcome::fire(ctx))
        } else {
            Ok(PollOutcome::NotNow)
        }
    })
}

pub const INBOX_WATCH: PollTrigger =
    PollTrigger::new("inbox_watch", report::WORKFLOW_NAME, check_inbox)
        .every(Duration::from_secs(5))
        .allow_concurrent(false);

cloacina_workflow::export_package! {
    workflows: [report::workflow],
    cron: [NIGHTLY_REPORT],
    triggers: [INBOX_WATCH],
}
