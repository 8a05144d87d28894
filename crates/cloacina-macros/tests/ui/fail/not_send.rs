use cloacina_macros::task;
use cloacina_workflow::{Context, TaskError};

async fn pause() {}

#[task]
async fn holds_rc(_ctx: &mut Context) -> Result<(), TaskError> {
    let shared = std::rc::Rc::new(1);
    pause().await;
    drop(shared);
    Ok(())
}

fn main() {}
