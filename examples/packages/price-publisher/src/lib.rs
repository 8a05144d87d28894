//! Example package: the publisher side of a reactor.
//!
//! `price_reactor` has two accumulators — `spot` (passthrough: the latest spot price) and
//! `trades` (batch: up to 50 trades or 2 s) — and fires when either has something new. On each
//! firing the bound graph `price_summary` runs over the cache snapshot, and the workflow
//! `record_prices` starts with the snapshot as input. Other packages may bind their own graphs
//! to `price_reactor` (see `price-subscriber`).
//!
//! ```text
//! price_summary:  latest_spot ─┬─> summary
//!                 volume ──────┘
//! ```

use std::time::Duration;

use cloacina_macros::{task, workflow};
use cloacina_workflow::{
    Accumulator, ComputationGraph, Context, Criterion, GraphNode, NodeInput, Reactor, TaskError,
};
use serde_json::{Value, json};

#[workflow(
    name = "record_prices",
    description = "Record a firing of price_reactor"
)]
pub mod record_prices {
    use super::*;

    #[task]
    pub async fn record(ctx: &mut Context) -> Result<(), TaskError> {
        let trades: Vec<Value> = ctx.get_opt("trades")?.unwrap_or_default();
        ctx.set("recorded_trades", trades.len())?;
        Ok(())
    }
}

pub const PRICE_REACTOR: Reactor = Reactor::new(
    "price_reactor",
    &[
        Accumulator::passthrough("spot"),
        Accumulator::batch("trades", 50, Duration::from_secs(2)),
    ],
)
.criterion(Criterion::WhenAny)
.starts(&[record_prices::WORKFLOW_NAME]);

fn latest_spot(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let spot: Option<Value> = input.field_opt("spot")?;
    Ok(spot
        .and_then(|s| s.get("price").cloned())
        .unwrap_or(Value::Null))
}

fn volume(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let trades: Vec<Value> = input.field_opt("trades")?.unwrap_or_default();
    let qty: f64 = trades.iter().filter_map(|t| t["qty"].as_f64()).sum();
    Ok(json!(qty))
}

fn summary(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let spot: Option<f64> = input.get("latest_spot")?;
    let volume: f64 = input.get("volume")?;
    Ok(json!({
        "spot": spot,
        "volume": volume,
        "notional": spot.map(|s| s * volume),
    }))
}

pub const PRICE_SUMMARY: ComputationGraph = ComputationGraph::new(
    "price_summary",
    &[
        GraphNode::new("latest_spot", &[], latest_spot),
        GraphNode::new("volume", &[], volume),
        GraphNode::new("summary", &["latest_spot", "volume"], summary),
    ],
)
.bound_to("price_reactor");

cloacina_workflow::export_package! {
    workflows: [record_prices::workflow],
    reactors: [PRICE_REACTOR],
    graphs: [PRICE_SUMMARY],
}
