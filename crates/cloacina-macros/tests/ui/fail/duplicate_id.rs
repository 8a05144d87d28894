use cloacina_macros::workflow;

#[workflow(name = "dup")]
mod dup {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task]
    async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(id = "fetch")]
    async fn fetch_again(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {}
