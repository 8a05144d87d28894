//! The accepted spellings: string and identifier dependencies (raw ones too), trailing commas,
//! a bare `#[task]`, the attribute through its path, and non-task items in the module.

use cloacina_macros::workflow;

#[workflow(name = "forms", description = "every accepted spelling")]
pub mod forms {
    use cloacina_workflow::{Context, TaskError};

    pub struct Helper;

    fn helper() -> u32 {
        7
    }

    #[cloacina_macros::task]
    async fn r#type(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set("x", helper())?;
        Ok(())
    }

    #[cloacina_macros::task(id = "second-step", dependencies = [r#type],)]
    pub(crate) async fn second(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[cloacina_macros::task(
        dependencies = ["second-step", "type"],
        trigger_rule = all(vec![task_success("type"), none([task_skipped("second-step")])]),
        retry_attempts = 2, retry_jitter = 1, retry_multiplier = 2,
    )]
    async fn third(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {
    let wf = forms::workflow().expect("valid");
    assert_eq!(wf.topological_order(), ["type", "second-step", "third"]);
    let _: forms::Helper = forms::Helper;
    let _: &str = forms::WORKFLOW_NAME;
}
