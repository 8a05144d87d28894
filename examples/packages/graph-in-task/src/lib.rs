//! Example package: a trigger-less computation graph, `order_score`, bound to no reactor and
//! invoked in process by the task `score_order` (the host can run it too, through the ABI).
//!
//! ```text
//! scoring:      load_items ──> score_order   (calls order_score)
//! order_score:  subtotal ─┬─> score
//!               discount ─┘
//! ```

use cloacina_macros::{task, workflow};
use cloacina_workflow::{ComputationGraph, Context, GraphNode, NodeInput, TaskError};
use serde_json::{Value, json};

fn subtotal(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let items: Vec<Value> = input.field("items")?;
    let sum: f64 = items
        .iter()
        .map(|i| i["qty"].as_f64().unwrap_or(0.0) * i["price"].as_f64().unwrap_or(0.0))
        .sum();
    Ok(json!(sum))
}

fn discount(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let tier: String = input
        .field_opt("tier")?
        .unwrap_or_else(|| "standard".to_string());
    Ok(json!(match tier.as_str() {
        "gold" => 0.1,
        "silver" => 0.05,
        _ => 0.0,
    }))
}

fn score(input: &NodeInput<'_>) -> Result<Value, TaskError> {
    let subtotal: f64 = input.get("subtotal")?;
    let discount: f64 = input.get("discount")?;
    let total = subtotal * (1.0 - discount);
    Ok(json!({"total": total, "discount": discount, "priority": total >= 100.0}))
}

pub const ORDER_SCORE: ComputationGraph = ComputationGraph::new(
    "order_score",
    &[
        GraphNode::new("subtotal", &[], subtotal),
        GraphNode::new("discount", &[], discount),
        GraphNode::new("score", &["subtotal", "discount"], score),
    ],
);

#[workflow(
    name = "scoring",
    description = "Load an order's items and score them with order_score"
)]
pub mod scoring {
    use super::*;

    #[task]
    pub async fn load_items(ctx: &mut Context) -> Result<(), TaskError> {
        if !ctx.contains_key("items") {
            ctx.set(
                "items",
                json!([{"qty": 3, "price": 20.0}, {"qty": 1, "price": 45.0}]),
            )?;
        }
        Ok(())
    }

    /// Runs the graph in process: no host round trip, same deterministic result.
    #[task(dependencies = [load_items])]
    pub async fn score_order(ctx: &mut Context) -> Result<(), TaskError> {
        let input = json!({
            "items": ctx.get::<Value>("items")?,
            "tier": ctx.get_opt::<String>("tier")?,
        });
        let out = ORDER_SCORE.run(input)?;
        ctx.set("score", out.result().cloned().unwrap_or(Value::Null))?;
        ctx.set("graph_order", &out.order)?;
        Ok(())
    }
}

cloacina_workflow::export_package! {
    workflows: [scoring::workflow],
    graphs: [ORDER_SCORE],
}
