//! `export_package!` linked into a test binary: the generated C functions called directly,
//! as a host would after `dlsym` (the real cdylib path is tested by `cloacina`'s
//! `package_loader` tests against the example packages).
#![cfg(feature = "plugin")]
#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloacina_workflow::abi::{
    ABI_VERSION, CANCEL_REQUESTED, PluginBuffer, PollTriggerRequest, Response, RunGraphRequest,
    RunTaskOutput, RunTaskRequest,
};
use cloacina_workflow::{
    Accumulator, ComputationGraph, Context, CronSchedule, FnTask, GraphNode, GraphOutput,
    NodeInput, PackageDescription, PollFuture, PollOutcome, PollTrigger, Reactor, TaskError,
    TaskSpec, Workflow, WorkflowError,
};
use serde_json::{Value, json};

fn flow() -> Result<Workflow, WorkflowError> {
    Workflow::builder("flow")
        .task(FnTask::new(TaskSpec::new("sleepy"), |ctx| {
            Box::pin(async move {
                let ms: u64 = ctx.get_opt("sleep_ms")?.unwrap_or(1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ctx.set("slept", ms)?;
                Ok(())
            })
        }))
        .task(FnTask::new(
            TaskSpec::new("fragile").depends_on(["sleepy"]),
            |ctx| {
                Box::pin(async move {
                    if ctx.get_opt::<bool>("panic")?.unwrap_or(false) {
                        panic!("fragile broke");
                    }
                    Err(TaskError::transient("try later"))
                })
            },
        ))
        .task(FnTask::new(
            TaskSpec::new("slow").timeout(Duration::from_millis(50)),
            |_ctx| {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(())
                })
            },
        ))
        .build()
}

fn poll() -> PollFuture {
    Box::pin(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(PollOutcome::fire(
            Context::from_value(json!({"polled": true})).expect("object"),
        ))
    })
}

fn one(_: &NodeInput<'_>) -> Result<Value, TaskError> {
    Ok(json!(1))
}
fn boom(_: &NodeInput<'_>) -> Result<Value, TaskError> {
    panic!("node exploded")
}

const CRON: CronSchedule = CronSchedule::new("every_minute", "flow", "* * * * *");
const TRIGGER: PollTrigger = PollTrigger::new("poller", "flow", poll);
const REACTOR: Reactor = Reactor::new("r", &[Accumulator::state("history", 10)]);
const GRAPH: ComputationGraph =
    ComputationGraph::new("g", &[GraphNode::new("one", &[], one)]).bound_to("other/r");
const BOOM: ComputationGraph = ComputationGraph::new("boom", &[GraphNode::new("x", &[], boom)]);

// Sections in any order, trailing commas allowed.
cloacina_workflow::export_package! {
    graphs: [GRAPH, BOOM],
    workflows: [flow],
    triggers: [TRIGGER],
    cron: [CRON,],
    reactors: [REACTOR],
}

unsafe extern "C" {
    fn cloacina_plugin_abi_version() -> u32;
    fn cloacina_plugin_describe() -> PluginBuffer;
    fn cloacina_plugin_run_task(
        ptr: *const u8,
        len: usize,
        cancel: *const AtomicU32,
    ) -> PluginBuffer;
    fn cloacina_plugin_poll_trigger(ptr: *const u8, len: usize) -> PluginBuffer;
    fn cloacina_plugin_run_graph(ptr: *const u8, len: usize) -> PluginBuffer;
    fn cloacina_plugin_free(buffer: PluginBuffer);
}

fn read<T: serde::de::DeserializeOwned>(buffer: PluginBuffer) -> Response<T> {
    // SAFETY: the buffer was just returned by this binary's exported function.
    let parsed = serde_json::from_slice(unsafe { buffer.bytes() }).expect("valid JSON answer");
    // SAFETY: freed once, by the function that owns it.
    unsafe { cloacina_plugin_free(buffer) };
    parsed
}

fn run_task(req: &RunTaskRequest, cancel: &AtomicU32) -> Response<RunTaskOutput> {
    let bytes = serde_json::to_vec(req).expect("encode");
    // SAFETY: the request and the flag outlive the call.
    read(unsafe { cloacina_plugin_run_task(bytes.as_ptr(), bytes.len(), cancel) })
}

fn task_request(task: &str, context: Value) -> RunTaskRequest {
    RunTaskRequest {
        workflow: "flow".into(),
        task: task.into(),
        context: Context::from_value(context).expect("object"),
    }
}

#[test]
fn describes_the_package() {
    // SAFETY: no arguments.
    assert_eq!(unsafe { cloacina_plugin_abi_version() }, ABI_VERSION);
    // SAFETY: no arguments; the buffer is freed by `read`.
    let d: PackageDescription = read(unsafe { cloacina_plugin_describe() })
        .into_result()
        .expect("describes");
    assert_eq!(d.name, "cloacina-workflow");
    assert_eq!(d.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(d.abi_version, ABI_VERSION);
    assert_eq!(d.workflow_names(), ["flow"]);
    assert_eq!(d.cron_names(), ["every_minute"]);
    assert_eq!(d.trigger_names(), ["poller"]);
    assert_eq!(d.reactor_names(), ["r"]);
    assert_eq!(d.graph_names(), ["g", "boom"]);
    assert_eq!(
        d.graphs[0].reactor_ref().map(|r| (r.tenant, r.name)),
        Some((Some("other"), "r"))
    );
    assert_eq!(d.problems(), Vec::<String>::new());
}

#[test]
fn runs_tasks_with_async_code_errors_panics_timeouts_and_cancellation() {
    let flag = AtomicU32::new(0);
    let out = run_task(&task_request("sleepy", json!({"sleep_ms": 5})), &flag)
        .into_result()
        .expect("runs");
    assert_eq!(out.context.get_value("slept"), Some(&json!(5)));

    let e = run_task(&task_request("fragile", json!({})), &flag)
        .into_result()
        .expect_err("fails");
    assert_eq!(
        e.clone().into_task_error(),
        TaskError::transient("try later")
    );
    let e = run_task(&task_request("fragile", json!({"panic": true})), &flag)
        .into_result()
        .expect_err("panics");
    assert_eq!(
        e.into_task_error(),
        TaskError::Panicked("fragile broke".into())
    );
    let e = run_task(&task_request("slow", json!({})), &flag)
        .into_result()
        .expect_err("times out");
    assert_eq!(
        e.into_task_error(),
        TaskError::Timeout(Duration::from_millis(50))
    );

    let cancel = Arc::new(AtomicU32::new(0));
    let setter = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            cancel.store(CANCEL_REQUESTED, Ordering::Release);
        })
    };
    let started = std::time::Instant::now();
    let e = run_task(
        &task_request("sleepy", json!({"sleep_ms": 30_000})),
        &cancel,
    )
    .into_result()
    .expect_err("cancelled");
    assert_eq!(e.into_task_error(), TaskError::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
    setter.join().expect("setter");

    let e = run_task(&task_request("missing", json!({})), &flag)
        .into_result()
        .expect_err("unknown");
    assert_eq!(e.kind, "unknown_task");
    let garbage = b"not json";
    // SAFETY: the request outlives the call; a null flag means no cancellation.
    let e: Response<RunTaskOutput> = read(unsafe {
        cloacina_plugin_run_task(garbage.as_ptr(), garbage.len(), std::ptr::null())
    });
    assert_eq!(
        e.into_result().expect_err("bad request").kind,
        "bad_request"
    );
}

#[test]
fn polls_triggers_and_runs_graphs() {
    let req = serde_json::to_vec(&PollTriggerRequest {
        trigger: "poller".into(),
    })
    .expect("encode");
    // SAFETY: the request outlives the call.
    let outcome: PollOutcome =
        read(unsafe { cloacina_plugin_poll_trigger(req.as_ptr(), req.len()) })
            .into_result()
            .expect("polls");
    assert!(outcome.is_fire());

    let graph = |name: &str| {
        let req = serde_json::to_vec(&RunGraphRequest {
            graph: name.into(),
            input: json!({}),
        })
        .expect("encode");
        // SAFETY: the request outlives the call.
        read::<GraphOutput>(unsafe { cloacina_plugin_run_graph(req.as_ptr(), req.len()) })
            .into_result()
    };
    assert_eq!(graph("g").expect("runs").result(), Some(&json!(1)));
    let e = graph("boom").expect_err("the node panics");
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        ("panicked", "node exploded")
    );
    assert_eq!(graph("nope").expect_err("unknown").kind, "unknown_graph");
}
