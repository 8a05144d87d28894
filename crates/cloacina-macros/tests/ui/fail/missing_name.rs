use cloacina_macros::workflow;

#[workflow(description = "no name")]
mod nameless {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task]
    async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {}
