use cloacina_macros::task;
use cloacina_workflow::{Context, TaskError};

#[task(retry_attempt = 3)]
async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
