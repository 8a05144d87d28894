//! Argument values that are the wrong kind, out of range, repeated, or inconsistent.

use cloacina_macros::task;
use cloacina_workflow::{Context, TaskError};

#[task(id = "a", id = "b")]
async fn duplicate_key(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task(id = fetch, retry_attempts = "3", timeout_ms = 0)]
async fn wrong_kinds(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task(retry_attempts = 3, retry_jitter = 1.5, retry_multiplier = 0.5)]
async fn out_of_range(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task(retry_attempts = 3, retry_backoff = "fixed", retry_increment_ms = 10, retry_multiplier = 2.0)]
async fn inconsistent(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task(dependencies = [a, b, a], retry_on = "transiant")]
async fn repeated_dependency(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task(id = "has space", dependencies = fetch)]
async fn bad_id(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task(retries)]
async fn no_value(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
