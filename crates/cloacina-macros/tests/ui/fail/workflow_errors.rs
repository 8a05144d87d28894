//! Workflow-level mistakes other than the graph's.

use cloacina_macros::workflow;

#[workflow(name = "empty")]
mod empty {
    pub fn helper() {}
}

#[workflow(name = "bad name", descripton = "typo")]
mod typo {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task]
    async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

#[workflow(name = "unknown_reference")]
mod unknown_reference {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task]
    async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(dependencies = [fetch], trigger_rule = task_failed("fetc"))]
    async fn alert(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(dependencies = [alert], trigger_rule = all([task_success("alert"), task_skipped("cleanup")]))]
    async fn cleanup(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

#[workflow(name = "self_dependency")]
mod self_dependency {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    #[task(dependencies = [again])]
    async fn again(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

#[workflow(name = "invalid_task_arguments")]
mod invalid_task_arguments {
    use cloacina_macros::task;
    use cloacina_workflow::{Context, TaskError};

    // Reported once, by the task itself; the workflow adds no errors of its own.
    #[task(dependencies = [missing, missing])]
    async fn fetch(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

#[workflow(name = "not_a_module")]
fn not_a_module() {}

fn main() {}
