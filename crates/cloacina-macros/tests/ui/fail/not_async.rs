use cloacina_macros::task;
use cloacina_workflow::{Context, TaskError};

#[task]
fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
