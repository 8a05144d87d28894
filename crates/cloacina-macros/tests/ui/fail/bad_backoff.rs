use cloacina_macros::task;
use cloacina_workflow::{Context, TaskError};

#[task(retry_attempts = 3, retry_backoff = "exponentail")]
async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

#[task(retry_attempts = 3, retry_backoff = "random")]
async fn load(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
