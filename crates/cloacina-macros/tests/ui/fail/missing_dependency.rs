use cloacina_macros::workflow;

#[workflow(name = "etl")]
mod etl {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task]
    async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(dependencies = [fetchh])]
    async fn load(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {}
