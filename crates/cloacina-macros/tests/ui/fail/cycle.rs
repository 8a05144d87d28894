use cloacina_macros::workflow;

#[workflow(name = "loop")]
mod looping {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task(dependencies = [c])]
    async fn a(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(dependencies = [a])]
    async fn b(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(dependencies = [b])]
    async fn c(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {}
