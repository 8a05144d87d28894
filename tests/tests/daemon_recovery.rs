//! End-to-end: work left behind by a process that died is finished by the daemon that starts
//! next, and nothing is run twice.

use cloacina::daemon::discovery;
use cloacina::package::{archive, loader};
use cloacina::store::{ExecutionStatus, Store, TaskStatus};
use cloacina::workflow::Context;
use cloacina_e2e::Home;
use cloacina_e2e::home::pack_example;
use cloacina_e2e::rows;

/// A run of `hello` whose task a runner claimed and then died with (its lease expired) is
/// recovered when the daemon starts: the task runs again, counted as a recovery, and the run
/// completes once.
#[test]
fn a_run_abandoned_by_a_dead_runner_completes_after_the_daemon_starts() {
    let mut home = Home::new();
    std::fs::create_dir_all(home.packages_dir()).expect("packages dir");
    let archive_path = pack_example("hello-orders", &home.packages_dir());
    let sha = archive::sha256_file(&archive_path).expect("hash");
    let cache = home.path().join("test-cache");
    let package = loader::load_archive(&archive_path, &cache).expect("load hello-orders");
    let workflow = package.workflow("hello").expect("the hello workflow");
    let mut input = Context::new();
    input.set("who", "world").expect("input");
    let (execution, claimed) = home.with_store(async |s: &Store| {
        let made = rows::execution_abandoned(
            s,
            &workflow,
            input,
            Some(discovery::package_id(&sha)),
            "a-runner-that-died",
            0,
        )
        .await;
        s.close().await;
        made
    });
    assert_eq!(claimed.len(), 1, "the one task was claimed: {claimed:?}");
    assert_eq!(execution.status, ExecutionStatus::Pending);

    home.start(&[]);
    home.wait_for("the abandoned run completed", |h| {
        h.executions()
            .iter()
            .any(|e| e.id == execution.id && e.status == ExecutionStatus::Completed)
    });
    let (tasks, runs) = home.with_store(async |s: &Store| {
        let tasks = s.task_list(execution.id).await.expect("tasks");
        let runs = s
            .execution_list(cloacina::store::ExecutionFilter::default())
            .await
            .expect("executions");
        s.close().await;
        (tasks, runs)
    });
    assert_eq!(runs.len(), 1, "no second run was started: {runs:?}");
    let greet = tasks.iter().find(|t| t.task_id == "greet").expect("greet");
    assert_eq!(greet.status, TaskStatus::Completed, "{greet:?}");
    assert_eq!(
        (greet.attempt, greet.recoveries),
        (2, 1),
        "claimed once by the dead runner, recovered once: {greet:?}"
    );
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}
