//! Hostile test library: a complete, valid package whose one task aborts the process that
//! runs it, as native code with a fatal bug would. A panic can be caught; this cannot: the
//! host must not crash-loop on it, but give up on the task after its recoveries.

use cloacina_macros::{task, workflow};
use cloacina_workflow::{Context, TaskError};

#[workflow(name = "abort_in_task")]
pub mod abort_in_task {
    use super::*;
    #[task]
    pub async fn abort_process(_ctx: &mut Context) -> Result<(), TaskError> {
        std::process::abort();
    }
}

cloacina_workflow::export_package! {
    workflows: [abort_in_task::workflow],
}
