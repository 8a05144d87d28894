//! Hostile test library: compiles and exports the full ABI, but what it describes is invalid
//! (an unparsable cron expression in a made-up time zone, a trigger for a workflow it does not
//! export, a reactor without accumulators, a graph with a cycle). The loader must refuse it and
//! list every problem.

use std::time::Duration;

use cloacina_macros::{task, workflow};
use cloacina_workflow::{
    ComputationGraph, Context, CronSchedule, GraphNode, NodeInput, PollFuture, PollOutcome,
    PollTrigger, Reactor, TaskError,
};
use serde_json::Value;

#[workflow(name = "fine")]
pub mod fine {
    use super::*;
    #[task]
    pub async fn ok(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

pub const BAD_CRON: CronSchedule =
    CronSchedule::new("bad_cron", fine::WORKFLOW_NAME, "every tuesday-ish")
        .timezone("Mars/Olympus");

fn never() -> PollFuture {
    Box::pin(async { Ok(PollOutcome::NotNow) })
}

pub const ORPHAN: PollTrigger =
    PollTrigger::new("orphan", "missing_workflow", never).every(Duration::from_secs(1));

pub const EMPTY: Reactor = Reactor::new("empty_reactor", &[]);

fn node(_: &NodeInput<'_>) -> Result<Value, TaskError> {
    Ok(Value::Null)
}

pub const LOOPY: ComputationGraph = ComputationGraph::new(
    "loopy",
    &[
        GraphNode::new("a", &["b"], node),
        GraphNode::new("b", &["a"], node),
    ],
);

cloacina_workflow::export_package! {
    workflows: [fine::workflow],
    cron: [BAD_CRON],
    triggers: [ORPHAN],
    reactors: [EMPTY],
    graphs: [LOOPY],
}
