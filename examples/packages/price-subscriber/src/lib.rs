//! Example package: the subscriber side. It owns no reactor; its two graphs bind to
//! `price_reactor`, owned by `price-publisher`, by bare name (resolved in the package's own
//! tenant, then `public`; write `"tenant/price_reactor"` to reach another tenant's).
//!
//! While this package is loaded, unloading the publisher is refused by the bound-subscriber
//! guard: `reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']`.

use cloacina_workflow::{ComputationGraph, GraphNode, NodeInput, TaskError};
use serde_json::{Value, json};

/// Spot prices under this are a buy signal.
const BUY_BELOW: f64 = 100.0;

fn spot(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let spot: Option<Value> = input.field_opt("spot")?;
    Ok(spot
        .and_then(|s| s.get("price").cloned())
        .unwrap_or(Value::Null))
}

fn signal(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let spot: Option<f64> = input.get("spot")?;
    Ok(json!(match spot {
        Some(p) if p < BUY_BELOW => "buy",
        Some(_) => "hold",
        None => "no data",
    }))
}

pub const ANALYZER_V1: ComputationGraph = ComputationGraph::new(
    "analyzer_v1",
    &[
        GraphNode::new("spot", &[], spot),
        GraphNode::new("signal", &["spot"], signal),
    ],
)
.bound_to("price_reactor");

fn trades(input: &NodeInput<'_>) -> Result<Vec<Value>, TaskError> {
    Ok(input.field_opt("trades")?.unwrap_or_default())
}

fn trade_count(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    Ok(json!(trades(input)?.len()))
}

fn total_qty(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    Ok(json!(
        trades(input)?
            .iter()
            .filter_map(|t| t["qty"].as_f64())
            .sum::<f64>()
    ))
}

fn stats(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let count: u64 = input.get("trade_count")?;
    let qty: f64 = input.get("total_qty")?;
    Ok(json!({
        "trades": count,
        "avg_qty": if count == 0 { 0.0 } else { qty / count as f64 },
    }))
}

pub const AGGREGATOR: ComputationGraph = ComputationGraph::new(
    "aggregator",
    &[
        GraphNode::new("trade_count", &[], trade_count),
        GraphNode::new("total_qty", &[], total_qty),
        GraphNode::new("stats", &["trade_count", "total_qty"], stats),
    ],
)
.bound_to("price_reactor");

cloacina_workflow::export_package! {
    graphs: [ANALYZER_V1, AGGREGATOR],
}
