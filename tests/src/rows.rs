//! A factory for database rows in a given state, written through the store as a runner would
//! write them, so a test starts from the state it needs: a run left half-done by a process
//! that died, a task whose lease ran out, and so on.

use cloacina::Store;
use cloacina::store::{ClaimRequest, ClaimedTask, ExecutionRecord, NewExecution};
use cloacina::workflow::{Context, Workflow};

/// A new run of `workflow` with `input`: its root tasks `Ready`, the rest waiting on them.
pub async fn execution_ready(
    store: &Store,
    workflow: &Workflow,
    input: Context,
    package_id: Option<String>,
) -> ExecutionRecord {
    store
        .execution_create(NewExecution::for_workflow(workflow, input, package_id))
        .await
        .expect("create the execution")
}

/// A new run of `workflow` whose ready tasks were claimed by `owner`, a runner that then
/// died: they are `Running`, and their leases expire `lease_ms` from now (0: already expired,
/// as after a crash that outlived the lease).
pub async fn execution_abandoned(
    store: &Store,
    workflow: &Workflow,
    input: Context,
    package_id: Option<String>,
    owner: &str,
    lease_ms: i64,
) -> (ExecutionRecord, Vec<ClaimedTask>) {
    let execution = execution_ready(store, workflow, input, package_id).await;
    let claimed = store
        .task_claim(ClaimRequest {
            owner: owner.to_string(),
            lease_ms,
            limit: 1_000,
            workflows: None,
            only: None,
        })
        .await
        .expect("claim the ready tasks")
        .into_iter()
        .filter(|c| c.execution_id == execution.id)
        .collect();
    (execution, claimed)
}
