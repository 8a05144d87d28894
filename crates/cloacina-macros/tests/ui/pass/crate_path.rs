//! `crate = path` for code that reaches the workflow API through a re-export; the workflow
//! passes it on to its tasks.

mod api {
    pub use ::cloacina_workflow as wf;
    pub use cloacina_macros::{task, workflow};
}

use api::wf::{Context, TaskError};

#[api::workflow(name = "reexported", crate = crate::api::wf)]
mod reexported {
    use super::*;
    use crate::api::task;

    #[task]
    pub async fn only(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }

    #[task(dependencies = [only], crate = ::cloacina_workflow)]
    pub async fn after(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

#[api::task(crate = crate::api::wf)]
async fn standalone(_ctx: &mut Context) -> Result<(), TaskError> {
    Ok(())
}

fn main() {
    let wf: api::wf::Workflow = reexported::workflow().expect("valid");
    assert_eq!(wf.len(), 2);
    let _: std::sync::Arc<dyn api::wf::Task> = standalone_task();
}
