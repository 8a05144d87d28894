//! Example package: the smallest workflow there is (`hello`), and an order pipeline
//! (`orders`) whose first task fans out to two, one of which is retried.
//!
//! ```text
//! orders:   fetch_orders ─┬─> price_orders ─┬─> ship
//!                         └─> check_stock  ─┘      (check_stock: 3 attempts, fixed 50 ms)
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cloacina_macros::{task, workflow};
use cloacina_workflow::{Context, TaskError};

#[workflow(name = "hello", description = "Says hello")]
pub mod hello {
    use super::*;
    #[task]
    pub async fn greet(ctx: &mut Context) -> Result<(), TaskError> {
        let who: String = ctx.get_opt("name")?.unwrap_or_else(|| "world".to_string());
        ctx.set("greeting", format!("hello, {who}"))?;
        Ok(())
    }
}

/// Attempts of `check_stock` per run (keyed by the input's `run_id`), so the first attempt of
/// each run can fail and the retry be seen.
static STOCK_ATTEMPTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

#[workflow(
    name = "orders",
    description = "Fetch orders, price them and check stock in parallel, then ship"
)]
pub mod orders {
    use super::*;

    /// Reads `orders` from the input (or uses three sample orders). Awaits a timer inside
    /// the plugin to show async code runs there: 20 ms, or `delay_ms` from the input (for
    /// tests that need a long-running task). Panics when the input says `explode: true`.
    #[task(timeout_ms = 120_000, description = "load the orders to process")]
    pub async fn fetch_orders(ctx: &mut Context) -> Result<(), TaskError> {
        let delay: u64 = ctx.get_opt("delay_ms")?.unwrap_or(20);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if ctx.get_opt::<bool>("explode")?.unwrap_or(false) {
            panic!("fetch_orders exploded on purpose");
        }
        if !ctx.contains_key("orders") {
            ctx.set(
                "orders",
                serde_json::json!([
                    {"id": 1, "qty": 2, "price": 10.0},
                    {"id": 2, "qty": 1, "price": 25.5},
                    {"id": 3, "qty": 4, "price": 1.25},
                ]),
            )?;
        }
        Ok(())
    }

    #[task(dependencies = [fetch_orders])]
    pub async fn price_orders(ctx: &mut Context) -> Result<(), TaskError> {
        let orders: Vec<serde_json::Value> = ctx.get("orders")?;
        let total: f64 = orders
            .iter()
            .map(|o| o["qty"].as_f64().unwrap_or(0.0) * o["price"].as_f64().unwrap_or(0.0))
            .sum();
        ctx.set("total", total)?;
        Ok(())
    }

    /// Fails its first attempt of every run with a transient error; the retry succeeds.
    #[task(
        dependencies = [fetch_orders],
        retry_attempts = 3,
        retry_backoff = "fixed",
        retry_delay_ms = 50,
        retry_on = "transient",
    )]
    pub async fn check_stock(ctx: &mut Context) -> Result<(), TaskError> {
        let run: String = ctx
            .get_opt("run_id")?
            .unwrap_or_else(|| "default".to_string());
        let attempt = {
            let mut guard = STOCK_ATTEMPTS
                .lock()
                .map_err(|_| TaskError::failed("attempt counter poisoned"))?;
            let n = guard
                .get_or_insert_with(HashMap::new)
                .entry(run)
                .or_insert(0);
            *n += 1;
            *n
        };
        if attempt == 1 {
            return Err(TaskError::transient("warehouse busy, try again"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        ctx.set("in_stock", true)?;
        ctx.set("stock_attempts", attempt)?;
        Ok(())
    }

    #[task(dependencies = [price_orders, check_stock])]
    pub async fn ship(ctx: &mut Context) -> Result<(), TaskError> {
        let total: f64 = ctx.get("total")?;
        let in_stock: bool = ctx.get("in_stock")?;
        ctx.set(
            "shipment",
            if in_stock {
                format!("shipped orders worth {total:.2}")
            } else {
                "held: out of stock".to_string()
            },
        )?;
        Ok(())
    }
}

cloacina_workflow::export_package! {
    workflows: [hello::workflow, orders::workflow],
}
