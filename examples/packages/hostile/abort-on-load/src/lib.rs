//! Hostile test library: a complete, valid package whose library aborts the process that
//! opens it, from an initializer the dynamic loader runs before `dlopen` returns. Loading it
//! can only crash the host: the host must quarantine it on its next start instead of
//! crashing again.

use cloacina_macros::{task, workflow};
use cloacina_workflow::{Context, TaskError};

#[workflow(name = "never_runs")]
pub mod never_runs {
    use super::*;
    #[task]
    pub async fn unreachable(_ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

extern "C" fn abort_on_load() {
    std::process::abort();
}

/// Run by the dynamic loader when the library is opened.
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "android"))]
#[used]
#[unsafe(link_section = ".init_array")]
static ABORT_ON_LOAD: extern "C" fn() = abort_on_load;

/// Run by the dynamic loader when the library is opened.
#[cfg(target_vendor = "apple")]
#[used]
#[unsafe(link_section = "__DATA,__mod_init_func")]
static ABORT_ON_LOAD: extern "C" fn() = abort_on_load;

cloacina_workflow::export_package! {
    workflows: [never_runs::workflow],
}
