//! Function shapes `#[task]` cannot call.

use cloacina_macros::task;
use cloacina_workflow::{Context, TaskError};

#[task]
async fn two_params(_ctx: &mut Context, _extra: u32) -> Result<(), TaskError> {
    Ok(())
}

#[task]
async fn no_params() -> Result<(), TaskError> {
    Ok(())
}

#[task]
async fn no_return(_ctx: &mut Context) {}

#[task]
async fn generic<T>(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task]
struct NotAFunction;

fn main() {}
