use cloacina_macros::workflow;

#[workflow(name = "alerts")]
mod alerts {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task]
    async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task]
    async fn audit(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(dependencies = [audit], trigger_rule = any([task_failed("fetch"), task_failed("audit")]))]
    async fn alert(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {}
