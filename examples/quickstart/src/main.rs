//! Cloacina quick start: a four-task workflow with a fan-out and a retry, run durably on an
//! embedded SQLite file. Run it with `cargo run -p cloacina-quickstart`; pass a database URL
//! (or set `DATABASE_URL`) to use another file or PostgreSQL.
//!
//! It closes the database before it prints (no `-wal`/`-shm` file is left beside it) and
//! exits quietly when its output is cut short (`cargo run -p cloacina-quickstart | head -1`).

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use cloacina::store::TaskRecord;
use cloacina::{ExecutionResult, Runner, RunnerConfig, task, workflow};
use cloacina_workflow::{Context, TaskError};

/// Counts `check_stock` attempts, so the first one can fail the way a flaky service does.
static STOCK_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

#[workflow(
    name = "order_pipeline",
    description = "Fetch an order, price it and check stock in parallel, then ship it"
)]
mod order_pipeline {
    use super::*;

    #[task(description = "Load the order")]
    pub async fn fetch_order(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set("order_id", "A-1001")?;
        ctx.set("items", serde_json::json!([{"sku": "kettle", "qty": 1, "price": 30.0}, {"sku": "mug", "qty": 4, "price": 6.5}]))?;
        Ok(())
    }

    #[task(dependencies = [fetch_order], description = "Price the items")]
    pub async fn price_items(ctx: &mut Context) -> Result<(), TaskError> {
        let items: Vec<serde_json::Value> = ctx.get("items")?;
        let subtotal: f64 = items
            .iter()
            .map(|i| i["qty"].as_f64().unwrap_or(0.0) * i["price"].as_f64().unwrap_or(0.0))
            .sum();
        ctx.set("subtotal", subtotal)?;
        Ok(())
    }

    #[task(
        dependencies = [fetch_order],
        retry_attempts = 3,
        retry_backoff = "exponential",
        retry_delay_ms = 100,
        description = "Ask the warehouse (fails once, then succeeds on retry)"
    )]
    pub async fn check_stock(ctx: &mut Context) -> Result<(), TaskError> {
        let attempt = STOCK_ATTEMPTS.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt == 1 {
            return Err(TaskError::transient("warehouse service timed out"));
        }
        ctx.set("in_stock", true)?;
        ctx.set("stock_attempts", attempt)?;
        Ok(())
    }

    #[task(dependencies = [price_items, check_stock], description = "Create the shipment")]
    pub async fn ship(ctx: &mut Context) -> Result<(), TaskError> {
        let subtotal: f64 = ctx.get("subtotal")?;
        let shipping = if subtotal >= 50.0 { 0.0 } else { 4.95 };
        ctx.set("total", subtotal + shipping)?;
        ctx.set("label", format!("SHIP-{}", ctx.get::<String>("order_id")?))?;
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let code = match run().await {
        Ok(()) => 0,
        // The reader went away (`... | head -1`): stop quietly and successfully, as ripgrep
        // does. The store is already closed by then.
        Err(e) if is_broken_pipe(e.as_ref()) => 0,
        Err(e) => {
            // stderr may be gone too; there is nobody left to tell then.
            let _ = writeln!(std::io::stderr(), "error: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "sqlite://quickstart.db".to_string());
    let runner = Runner::open(&url, RunnerConfig::default()).await?;
    let outcome = run_workflow(&runner).await;
    // Stop the runner and close the database before printing anything, whatever happened, so
    // even an exit on a closed pipe leaves no -wal or -shm file behind.
    let stopped = runner.shutdown().await;
    runner.store().close().await;
    stopped?;
    let (result, tasks) = outcome?;

    let mut out = std::io::stdout().lock();
    // Never print a password: a PostgreSQL URL is shown as postgres://user:***@host/db.
    writeln!(out, "database:  {}", cloacina::store::redact_url(&url))?;
    writeln!(out, "execution: {}", result.id)?;
    writeln!(out, "status:    {}", result.status)?;
    for t in tasks {
        writeln!(
            out,
            "  task {:<12} {:<10} attempts: {}",
            t.task_id,
            t.status.as_str(),
            t.attempt
        )?;
    }
    let context = result.context.map(|c| c.into_value()).unwrap_or_default();
    writeln!(
        out,
        "final context:\n{}",
        serde_json::to_string_pretty(&context)?
    )?;
    out.flush()?;
    if result.status != cloacina::store::ExecutionStatus::Completed {
        return Err(format!(
            "workflow ended {}: {}",
            result.status,
            result.error.unwrap_or_default()
        )
        .into());
    }
    Ok(())
}

/// Registers the workflow, runs it once and reads its tasks.
async fn run_workflow(
    runner: &Runner,
) -> Result<(ExecutionResult, Vec<TaskRecord>), Box<dyn std::error::Error>> {
    runner.register(order_pipeline::workflow()?);
    let input = Context::from_value(serde_json::json!({"customer": "ada@example.com"}))?;
    let result = runner.execute(order_pipeline::WORKFLOW_NAME, input).await?;
    let tasks = runner.tasks(result.id).await?;
    Ok((result, tasks))
}
