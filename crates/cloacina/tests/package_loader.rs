//! The package loader against the real example packages of `examples/packages/` (built once
//! per test run): descriptions, execution through a real runner on SQLite, triggers, graphs,
//! panics, load-once, and every hostile input with its error text.

mod common_packages;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use cloacina::package::archive::{self, HOST_TARGET};
use cloacina::package::loader::{self, LoadError, LoadedPackage};
use cloacina::package::manifest::Manifest;
use cloacina::package::signing;
use cloacina::store::{ExecutionStatus, TaskStatus};
use cloacina::workflow::{
    AccumulatorKind, CatchUp, Context, Criterion, PollOutcome, RetryCondition, TaskError,
};
use cloacina::{Runner, RunnerConfig};
use common_packages::{Example, example};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

fn ctx(v: Value) -> Context {
    Context::from_value(v).expect("a JSON object")
}

fn manifest_of(ex: &Example) -> Manifest {
    Manifest::from_dir(&ex.dir).expect("the example's package.toml")
}

/// A fresh cache directory for content-addressed copies.
fn new_cache() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn load(name: &'static str, cache: &Path) -> Arc<LoadedPackage> {
    let ex = example(name);
    loader::load(&ex.library, &manifest_of(&ex), cache)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A runner on a fresh SQLite file with every workflow of `packages` registered.
async fn runner(dir: &Path, packages: &[&Arc<LoadedPackage>]) -> Runner {
    let url = format!("sqlite://{}", dir.join("loader.db").display());
    let config = RunnerConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        ..RunnerConfig::default()
    };
    let r = Runner::open(&url, config).await.expect("runner");
    for p in packages {
        for wf in p.workflows() {
            r.register(wf);
        }
    }
    r
}

async fn execute(r: &Runner, workflow: &str, input: Value) -> cloacina::ExecutionResult {
    let id = r.submit(workflow, ctx(input)).await.expect("submit");
    r.wait(id, Some(LONG)).await.expect("the run ends")
}

fn load_err(library: &Path, manifest: &Manifest, cache: &Path) -> LoadError {
    loader::load(library, manifest, cache).expect_err("the load must fail")
}

// ---------------------------------------------------------------------------------------------
// 1. A plain workflow package: fan-out, retry, async code in the plugin, panics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_package_describes_itself_and_runs_on_sqlite() {
    let cache = new_cache();
    let pkg = load("hello-orders", cache.path());
    assert_eq!((pkg.name(), pkg.version()), ("hello-orders", "1.0.0"));
    let d = pkg.description();
    assert_eq!(d.abi_version, cloacina::workflow::abi::ABI_VERSION);
    assert_eq!(d.panic, "unwind");
    assert_eq!(d.workflow_names(), ["hello", "orders"]);
    let orders = d.workflow("orders").expect("orders");
    assert_eq!(
        orders.description.as_deref(),
        Some("Fetch orders, price them and check stock in parallel, then ship")
    );
    let deps: Vec<(&str, Vec<&str>)> = orders
        .tasks
        .iter()
        .map(|t| {
            (
                t.id.as_str(),
                t.dependencies.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        deps,
        [
            ("fetch_orders", vec![]),
            ("price_orders", vec!["fetch_orders"]),
            ("check_stock", vec!["fetch_orders"]),
            ("ship", vec!["price_orders", "check_stock"]),
        ]
    );
    let stock = &orders.tasks[2];
    assert_eq!(stock.retry.max_attempts, 3);
    assert_eq!(stock.retry.conditions, [RetryCondition::TransientOnly]);
    assert_eq!(orders.tasks[0].timeout_ms, Some(120_000));
    // Opened from a content-addressed copy `<cache>/<sha256>/<file>` (the cache of whichever
    // test loaded this version first: the registry is process-wide).
    assert!(
        pkg.library_path().ends_with(
            Path::new(pkg.sha256()).join(common_packages::library_file_name("hello-orders"))
        ),
        "{}",
        pkg.library_path().display()
    );

    let wfs = pkg.workflows();
    assert_eq!(wfs.len(), 2);
    assert_eq!(
        wfs[1].topological_order(),
        ["fetch_orders", "price_orders", "check_stock", "ship"]
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let r = runner(dir.path(), &[&pkg]).await;

    let hello = execute(&r, "hello", json!({"name": "cloacina"})).await;
    assert_eq!(
        hello.status,
        ExecutionStatus::Completed,
        "{:?}",
        hello.error
    );
    assert_eq!(
        hello
            .context
            .expect("final context")
            .get::<String>("greeting")
            .expect("greeting"),
        "hello, cloacina"
    );
    let hello = execute(&r, "hello", json!({})).await;
    assert_eq!(
        hello.context.expect("final context").get_value("greeting"),
        Some(&json!("hello, world"))
    );

    let run = execute(&r, "orders", json!({"run_id": "plain-1"})).await;
    assert_eq!(run.status, ExecutionStatus::Completed, "{:?}", run.error);
    let out = run.context.expect("final context");
    assert_eq!(out.get_value("total"), Some(&json!(50.5)));
    assert_eq!(out.get_value("in_stock"), Some(&json!(true)));
    assert_eq!(
        out.get_value("stock_attempts"),
        Some(&json!(2)),
        "retried once"
    );
    assert_eq!(
        out.get_value("shipment"),
        Some(&json!("shipped orders worth 50.50"))
    );
    let tasks = r.tasks(run.id).await.expect("tasks");
    let stock = tasks
        .iter()
        .find(|t| t.task_id == "check_stock")
        .expect("check_stock");
    assert_eq!((stock.status, stock.attempt), (TaskStatus::Completed, 2));
    assert_eq!(pkg.running_calls(), 0);
    r.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_in_a_package_is_a_failed_attempt_not_a_crashed_host() {
    let cache = new_cache();
    let pkg = load("hello-orders", cache.path());
    let dir = tempfile::tempdir().expect("temp dir");
    let r = runner(dir.path(), &[&pkg]).await;

    let run = execute(&r, "orders", json!({"explode": true, "run_id": "boom"})).await;
    assert_eq!(run.status, ExecutionStatus::Failed);
    let tasks = r.tasks(run.id).await.expect("tasks");
    let fetch = tasks
        .iter()
        .find(|t| t.task_id == "fetch_orders")
        .expect("fetch_orders");
    assert_eq!(fetch.status, TaskStatus::Failed);
    assert_eq!(
        fetch.error.as_deref(),
        Some("panicked: fetch_orders exploded on purpose")
    );

    // The same call directly: the panic comes back as a typed error.
    let e = pkg
        .run_task_blocking(
            "orders",
            "fetch_orders",
            ctx(json!({"explode": true, "delay_ms": 0})),
            &AtomicU32::new(0),
        )
        .expect_err("panics");
    assert_eq!(
        e,
        TaskError::Panicked("fetch_orders exploded on purpose".into())
    );

    // The host and the library are fine.
    let again = execute(&r, "hello", json!({"name": "still here"})).await;
    assert_eq!(again.status, ExecutionStatus::Completed);
    r.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tasks_and_bad_contexts_are_typed_errors() {
    let cache = new_cache();
    let pkg = load("hello-orders", cache.path());
    let flag = AtomicU32::new(0);
    let e = pkg
        .run_task_blocking("orders", "nope", Context::new(), &flag)
        .expect_err("unknown task");
    assert_eq!(
        e.to_string(),
        "permanent: package unknown_task: workflow 'orders' has no task 'nope'"
    );
    let e = pkg
        .run_task_blocking("hello", "greet", ctx(json!({"name": 42})), &flag)
        .expect_err("wrong type");
    assert!(
        e.to_string()
            .starts_with("context key 'name' holds a number"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_stops_the_task_inside_the_library() {
    let cache = new_cache();
    let pkg = load("hello-orders", cache.path());
    let dir = tempfile::tempdir().expect("temp dir");
    let r = runner(dir.path(), &[&pkg]).await;
    let id = r
        .submit(
            "orders",
            ctx(json!({"delay_ms": 60_000, "run_id": "cancel"})),
        )
        .await
        .expect("submit");
    let started = tokio::time::Instant::now();
    while pkg.running_calls() == 0 {
        assert!(started.elapsed() < LONG, "the task never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.cancel(id).await.expect("cancel");
    let result = r.wait(id, Some(LONG)).await.expect("ends");
    assert_eq!(result.status, ExecutionStatus::Cancelled);
    let stopped = tokio::time::Instant::now();
    while pkg.running_calls() > 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the task kept running inside the library after the run was cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------
// 2. Cron schedule and custom-poll trigger
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_and_trigger_package() {
    let cache = new_cache();
    let pkg = load("scheduled-reports", cache.path());
    let d = pkg.description();
    assert_eq!(d.workflow_names(), ["report"]);
    assert_eq!(d.cron.len(), 1);
    let cron = &d.cron[0];
    assert_eq!(
        (
            cron.name.as_str(),
            cron.workflow.as_str(),
            cron.expression.as_str(),
            cron.timezone.as_str(),
            cron.catch_up
        ),
        (
            "nightly_report",
            "report",
            "0 2 * * *",
            "Europe/Amsterdam",
            CatchUp::RunAll { max: 3 }
        )
    );
    let trigger = d.trigger("inbox_watch").expect("inbox_watch");
    assert_eq!(trigger.workflow, "report");
    assert_eq!(trigger.poll_interval(), Duration::from_secs(5));
    assert!(!trigger.allow_concurrent);

    // The poll function (async, inside the plugin) fires every other time.
    let first = pkg.poll_trigger("inbox_watch").await.expect("poll");
    let second = pkg.poll_trigger("inbox_watch").await.expect("poll");
    let fired: Vec<&PollOutcome> = [&first, &second]
        .into_iter()
        .filter(|o| o.is_fire())
        .collect();
    assert_eq!(fired.len(), 1, "{first:?} {second:?}");
    assert!([&first, &second].contains(&&PollOutcome::NotNow));
    let PollOutcome::Fire { context } = fired[0].clone() else {
        unreachable!()
    };
    assert_eq!(context.get_value("source"), Some(&json!("inbox")));
    let batch: u64 = context.get("batch").expect("batch");

    let e = pkg.poll_trigger("nope").await.expect_err("unknown trigger");
    assert_eq!(
        e.to_string(),
        "package 'scheduled-reports' 0.3.1 has no trigger 'nope' (it has: inbox_watch)"
    );

    // What the trigger fired starts the workflow.
    let dir = tempfile::tempdir().expect("temp dir");
    let r = runner(dir.path(), &[&pkg]).await;
    let run = execute(&r, &trigger.workflow, context.into_value()).await;
    assert_eq!(run.status, ExecutionStatus::Completed, "{:?}", run.error);
    assert_eq!(
        run.context.expect("final").get_value("report"),
        Some(&json!(format!("{} rows from inbox", 10 * (batch + 1))))
    );
    r.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------
// 3-5. Reactors and computation graphs
// ---------------------------------------------------------------------------------------------

fn snapshot() -> Value {
    json!({
        "spot": {"price": 98.5},
        "trades": [{"qty": 3}, {"qty": 4.5}, {"qty": 2.5}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_owns_a_reactor_and_a_bound_graph() {
    let cache = new_cache();
    let pkg = load("price-publisher", cache.path());
    let d = pkg.description();
    assert_eq!(d.reactor_names(), ["price_reactor"]);
    let reactor = d.reactor("price_reactor").expect("reactor");
    let accumulators: Vec<(&str, AccumulatorKind)> = reactor
        .accumulators
        .iter()
        .map(|a| (a.name.as_str(), a.kind))
        .collect();
    assert_eq!(
        accumulators,
        [
            ("spot", AccumulatorKind::Passthrough),
            (
                "trades",
                AccumulatorKind::Batch {
                    max_items: 50,
                    flush_interval_ms: 2000
                }
            ),
        ]
    );
    assert_eq!(reactor.criterion, Criterion::WhenAny);
    assert_eq!(reactor.workflows, ["record_prices"]);

    let graph = d.graph("price_summary").expect("graph");
    assert_eq!(graph.reactor.as_deref(), Some("price_reactor"));
    let nodes: Vec<(&str, Vec<&str>)> = graph
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.inputs.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("latest_spot", vec![]),
            ("volume", vec![]),
            ("summary", vec!["latest_spot", "volume"]),
        ]
    );

    let out = pkg
        .run_graph("price_summary", snapshot())
        .await
        .expect("graph runs");
    assert_eq!(out.order, ["latest_spot", "volume", "summary"]);
    assert_eq!(
        out.result(),
        Some(&json!({"spot": 98.5, "volume": 10.0, "notional": 985.0}))
    );
    // Deterministic: same input, same output.
    assert_eq!(
        pkg.run_graph("price_summary", snapshot())
            .await
            .expect("again"),
        out
    );

    let e = pkg
        .run_graph("price_summary", json!({"trades": "not a list"}))
        .await
        .expect_err("bad input");
    assert!(
        e.to_string().starts_with(
            "package 'price-publisher' 2.0.0: running graph 'price_summary' failed: failed: graph 'price_summary', node 'volume': graph input field 'trades': invalid type"
        ),
        "{e}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let r = runner(dir.path(), &[&pkg]).await;
    let run = execute(&r, "record_prices", snapshot()).await;
    assert_eq!(run.status, ExecutionStatus::Completed, "{:?}", run.error);
    assert_eq!(
        run.context.expect("final").get_value("recorded_trades"),
        Some(&json!(3))
    );
    r.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_graphs_bind_to_the_publishers_reactor_by_name() {
    let cache = new_cache();
    let publisher = load("price-publisher", cache.path());
    let subscriber = load("price-subscriber", cache.path());
    let d = subscriber.description();
    assert!(d.workflows.is_empty() && d.reactors.is_empty());
    assert_eq!(d.graph_names(), ["analyzer_v1", "aggregator"]);
    for g in &d.graphs {
        let r = g.reactor_ref().expect("bound");
        assert_eq!((r.tenant, r.name), (None, "price_reactor"), "{}", g.name);
        assert!(
            publisher.description().reactor(r.name).is_some(),
            "the publisher owns the reactor {} binds to",
            g.name
        );
    }
    assert!(subscriber.workflows().is_empty());

    let analyzer = subscriber
        .run_graph("analyzer_v1", snapshot())
        .await
        .expect("runs");
    assert_eq!(analyzer.result(), Some(&json!("buy")));
    let aggregator = subscriber
        .run_graph("aggregator", snapshot())
        .await
        .expect("runs");
    assert_eq!(
        aggregator.output("stats"),
        Some(&json!({"trades": 3, "avg_qty": 10.0 / 3.0}))
    );
    let e = subscriber
        .run_graph("price_summary", snapshot())
        .await
        .expect_err("that graph is the publisher's");
    assert_eq!(
        e.to_string(),
        "package 'price-subscriber' 1.4.0 has no graph 'price_summary' (it has: analyzer_v1, aggregator)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_invokes_a_trigger_less_graph_in_process() {
    let cache = new_cache();
    let pkg = load("graph-in-task", cache.path());
    let graph = pkg.description().graph("order_score").expect("graph");
    assert!(graph.is_trigger_less());
    assert_eq!(graph.sinks(), ["score"]);

    let dir = tempfile::tempdir().expect("temp dir");
    let r = runner(dir.path(), &[&pkg]).await;
    for (tier, total, priority) in [
        ("gold", 94.5, false),
        ("silver", 99.75, false),
        ("standard", 105.0, true),
    ] {
        let run = execute(&r, "scoring", json!({"tier": tier})).await;
        assert_eq!(run.status, ExecutionStatus::Completed, "{:?}", run.error);
        let out = run.context.expect("final");
        assert_eq!(
            out.get_value("score").and_then(|s| s.get("total")),
            Some(&json!(total)),
            "{tier}"
        );
        assert_eq!(
            out.get_value("score").and_then(|s| s.get("priority")),
            Some(&json!(priority))
        );
        assert_eq!(
            out.get_value("graph_order"),
            Some(&json!(["subtotal", "discount", "score"]))
        );
        // The host gets the same answer through the ABI.
        let direct = pkg
            .run_graph(
                "order_score",
                json!({"items": out.get_value("items"), "tier": tier}),
            )
            .await
            .expect("runs");
        assert_eq!(direct.result(), out.get_value("score"));
    }
    r.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------
// Load once, content-addressed copies, lifetime
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_version_is_opened_once() {
    let cache = new_cache();
    let ex = example("hello-orders");
    let manifest = manifest_of(&ex);
    let a = loader::load(&ex.library, &manifest, cache.path()).expect("load");
    let b = loader::load(&ex.library, &manifest, cache.path()).expect("load again");
    assert!(Arc::ptr_eq(&a, &b), "one LoadedPackage per version");

    // The same bytes under another path (a re-download, another archive) are the same version.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let copy = elsewhere.path().join("renamed.so");
    std::fs::copy(&ex.library, &copy).expect("copy");
    let c = loader::load(&copy, &manifest, cache.path()).expect("load the copy");
    assert!(Arc::ptr_eq(&a, &c));
    assert_eq!(loader::open_count(a.sha256()), 1);

    // Workflows handed out keep the package alive after every other Arc is gone.
    let sha = a.sha256().to_string();
    let wf = a.workflow("hello").expect("hello");
    drop((a, b, c));
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("once.db").display());
    let r = Runner::open(&url, RunnerConfig::default())
        .await
        .expect("runner");
    r.register(wf);
    let run = execute(&r, "hello", json!({"name": "kept alive"})).await;
    assert_eq!(run.status, ExecutionStatus::Completed, "{:?}", run.error);
    r.shutdown().await.expect("shutdown");
    drop(r);

    // Loading it again, even from another cache directory, never reopens the library.
    let other_cache = new_cache();
    let again = loader::load(&ex.library, &manifest, other_cache.path()).expect("reload");
    assert_eq!(again.sha256(), sha);
    assert_eq!(loader::open_count(&sha), 1);
    assert!(loader::opened_libraries().contains(&sha));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_versions_are_opened_from_two_paths_and_keep_their_own_workflow_versions() {
    let cache = new_cache();
    let orders = load("hello-orders", cache.path());
    let graph = load("graph-in-task", cache.path());
    assert_ne!(orders.sha256(), graph.sha256());
    assert_ne!(orders.library_path(), graph.library_path());
    // Task fingerprints carry the library's hash: a rebuilt package is a new workflow version.
    let wf = orders.workflow("hello").expect("hello");
    let task = wf.task("greet").expect("greet");
    let declared = &orders.description().workflow("hello").expect("hello").tasks[0];
    assert_ne!(task.spec().code_fingerprint, declared.code_fingerprint);
    assert_eq!(
        orders.workflow("hello").expect("again").version(),
        wf.version()
    );
}

// ---------------------------------------------------------------------------------------------
// Archives: pack, sign, verify, load
// ---------------------------------------------------------------------------------------------

fn pack(ex: &Example, libraries: &[(String, PathBuf)], out: &Path) -> PathBuf {
    archive::pack(&ex.dir, libraries, out).expect("pack");
    out.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_signed_archives_load_and_run() {
    let ex = example("scheduled-reports");
    let work = tempfile::tempdir().expect("temp dir");
    let archive_path = pack(
        &ex,
        &[(HOST_TARGET.to_string(), ex.library.clone())],
        &work.path().join("scheduled-reports-0.3.1.cloacina"),
    );
    let key = work.path().join("signing.key");
    signing::generate_keypair(&key).expect("keygen");
    let private = signing::load_signing_key(&key).expect("private key");
    signing::sign_archive(&archive_path, &private).expect("sign");
    let public = signing::load_public_key(&signing::public_key_path(&key)).expect("public key");
    signing::verify_archive(&archive_path, &[public]).expect("the signature verifies");

    let cache = new_cache();
    let pkg = loader::load_archive(&archive_path, cache.path()).expect("load the archive");
    assert_eq!((pkg.name(), pkg.version()), ("scheduled-reports", "0.3.1"));
    let direct = loader::load(&ex.library, &manifest_of(&ex), cache.path()).expect("direct");
    assert!(
        Arc::ptr_eq(&pkg, &direct),
        "same library bytes, same package"
    );
    assert!(
        !cache.path().join("unpack").exists()
            || std::fs::read_dir(cache.path().join("unpack"))
                .expect("read")
                .next()
                .is_none(),
        "scratch directories are removed"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let r = runner(dir.path(), &[&pkg]).await;
    let run = execute(&r, "report", json!({"source": "archive"})).await;
    assert_eq!(run.status, ExecutionStatus::Completed, "{:?}", run.error);
    assert_eq!(
        run.context.expect("final").get_value("report"),
        Some(&json!("10 rows from archive"))
    );
    r.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_wrong_abi_version() {
    let ex = example("hostile/wrong-abi");
    let cache = new_cache();
    let e = load_err(&ex.library, &manifest_of(&ex), cache.path());
    assert!(
        matches!(e, LoadError::AbiMismatch { found: 999, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "package 'wrong-abi': {} was built for Cloacina plugin ABI version 999, but this host speaks ABI version 1; rebuild the package against this Cloacina (cloacina-workflow {}) and pack it again",
            ex.library.display(),
            cloacina::workflow::abi::SDK_VERSION
        )
    );

    // Through an archive, the message names the archive and the entry.
    let work = tempfile::tempdir().expect("temp dir");
    let archive_path = pack(
        &ex,
        &[(HOST_TARGET.to_string(), ex.library.clone())],
        &work.path().join("wrong-abi.cloacina"),
    );
    let e = loader::load_archive(&archive_path, cache.path()).expect_err("wrong ABI");
    assert!(
        e.to_string().starts_with(&format!(
            "package 'wrong-abi': {} (lib/{HOST_TARGET}/{}) was built for Cloacina plugin ABI version 999",
            archive_path.display(),
            common_packages::library_file_name("wrong-abi")
        )),
        "{e}"
    );
}

#[test]
fn hostile_not_a_package() {
    let ex = example("hostile/not-a-package");
    let cache = new_cache();
    let e = load_err(&ex.library, &manifest_of(&ex), cache.path());
    assert_eq!(
        e.to_string(),
        format!(
            "package 'not-a-package': {} is not a Cloacina package library (it does not export 'cloacina_plugin_abi_version'); a package crate has crate-type = [\"cdylib\"] and calls cloacina_workflow::export_package!",
            ex.library.display()
        )
    );
}

#[test]
fn hostile_missing_symbols() {
    let ex = example("hostile/missing-symbols");
    let cache = new_cache();
    let e = load_err(&ex.library, &manifest_of(&ex), cache.path());
    assert_eq!(
        e.to_string(),
        format!(
            "package 'missing-symbols': {} does not export 'cloacina_plugin_run_task', 'cloacina_plugin_poll_trigger', 'cloacina_plugin_run_graph'; it was not built with this Cloacina's export_package! — rebuild the package against this Cloacina (cloacina-workflow {})",
            ex.library.display(),
            cloacina::workflow::abi::SDK_VERSION
        )
    );
}

#[test]
fn hostile_invalid_description() {
    let ex = example("hostile/bad-description");
    let cache = new_cache();
    let e = load_err(&ex.library, &manifest_of(&ex), cache.path());
    let LoadError::InvalidDescription { problems, .. } = &e else {
        panic!("expected InvalidDescription, got {e:?}");
    };
    let expected_prefix = format!(
        "package 'bad-description': {} describes an invalid package (5 problem(s)): ",
        ex.library.display()
    );
    let text = e.to_string();
    assert!(text.starts_with(&expected_prefix), "{text}");
    assert!(
        text.ends_with("; fix the package code and rebuild it"),
        "{text}"
    );
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(
        problems[0]
            .starts_with("cron schedule 'bad_cron': expression 'every tuesday-ish' is not valid: "),
        "{problems:#?}"
    );
    assert_eq!(
        problems[1..],
        [
            "cron schedule 'bad_cron': time zone 'Mars/Olympus' is not an IANA time zone name (like 'UTC' or 'Europe/Amsterdam')",
            "trigger 'orphan' starts workflow 'missing_workflow', which this package does not export",
            "reactor 'empty_reactor' has no accumulators; give it at least one",
            "graph 'loopy' has a cycle among nodes [a, b]; a graph's edges must form a DAG",
        ]
    );
}

#[test]
fn hostile_description_disagrees_with_package_toml() {
    let ex = example("hello-orders");
    let cache = new_cache();
    let manifest = Manifest::parse(
        "[package]\nname = \"hello-orders\"\nversion = \"1.0.1\"\n\n[declares]\nworkflows = [\"hello\", \"refunds\"]\ngraphs = []\n",
        "package.toml",
    )
    .expect("manifest");
    let e = load_err(&ex.library, &manifest, cache.path());
    assert_eq!(
        e.to_string(),
        format!(
            "package 'hello-orders': {} does not match its package.toml: package.toml says version 1.0.1, the library says 1.0.0 (its crate version); declares.workflows lists workflow(s) the library does not export: 'refunds'; the library exports workflow(s) declares.workflows does not list: 'orders'; make package.toml and the crate agree, then rebuild and pack again",
            ex.library.display()
        )
    );
    // Also when the version is already loaded under its right manifest.
    let good = loader::load(&ex.library, &manifest_of(&ex), cache.path()).expect("load");
    let renamed = Manifest::parse(
        "[package]\nname = \"hello_orders\"\nversion = \"1.0.0\"\n",
        "package.toml",
    )
    .expect("manifest");
    let e = load_err(&ex.library, &renamed, cache.path());
    assert_eq!(
        e.to_string(),
        format!(
            "package 'hello_orders': {} does not match its package.toml: package.toml names the package 'hello_orders', the library says 'hello-orders' (its crate name); make package.toml and the crate agree, then rebuild and pack again",
            ex.library.display()
        )
    );
    drop(good);
}

#[test]
fn hostile_missing_and_malformed_manifests() {
    let ex = example("hello-orders");
    let cache = new_cache();
    let dir = tempfile::tempdir().expect("temp dir");
    let e = loader::load_dir(dir.path(), &ex.library, cache.path()).expect_err("no manifest");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot load the package in {0}: package manifest {0}/package.toml is missing; a package directory needs a package.toml beside its Cargo.toml; fix package.toml (see docs/packages.md) and try again",
            dir.path().display()
        )
    );
    std::fs::write(dir.path().join("package.toml"), "[package\nname = 1\n").expect("write");
    let e = loader::load_dir(dir.path(), &ex.library, cache.path()).expect_err("malformed");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot load the package in {0}: package manifest {0}/package.toml is malformed: ",
            dir.path().display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("; fix package.toml (see docs/packages.md) and try again"),
        "{text}"
    );

    // The good directory loads.
    loader::load_dir(&ex.dir, &ex.library, cache.path()).expect("the example loads");
}

#[test]
fn hostile_library_for_another_target() {
    let ex = example("hello-orders");
    let manifest = manifest_of(&ex);
    let cache = new_cache();
    let work = tempfile::tempdir().expect("temp dir");

    // An archive that only carries a library for another platform.
    let other = if HOST_TARGET == "aarch64-apple-darwin" {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-apple-darwin"
    };
    let archive_path = pack(
        &ex,
        &[(other.to_string(), ex.library.clone())],
        &work.path().join("foreign.cloacina"),
    );
    let e = loader::load_archive(&archive_path, cache.path()).expect_err("no host library");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot load package archive {}: package 'hello-orders' 1.0.0 has no library for {HOST_TARGET} (it has: {other}); build it on this platform with 'cloacinactl package build' and pack again",
            archive_path.display()
        )
    );
    // A source-only archive.
    let source_only = pack(&ex, &[], &work.path().join("source.cloacina"));
    let e = loader::load_archive(&source_only, cache.path()).expect_err("source only");
    assert!(
        e.to_string()
            .contains("package 'hello-orders' 1.0.0 is source-only"),
        "{e}"
    );

    // A library file whose header says another architecture.
    let mut bytes = std::fs::read(&ex.library).expect("read");
    if bytes.starts_with(b"\x7fELF") {
        let foreign: u16 = if std::env::consts::ARCH == "aarch64" {
            62
        } else {
            183
        };
        let arch = if foreign == 62 { "x86_64" } else { "aarch64" };
        bytes[18..20].copy_from_slice(&foreign.to_le_bytes());
        let patched = work.path().join("libforeign.so");
        std::fs::write(&patched, &bytes).expect("write");
        let e = load_err(&patched, &manifest, cache.path());
        assert_eq!(
            e.to_string(),
            format!(
                "package 'hello-orders': {} is an ELF shared library for {arch} (64-bit, little-endian; a Linux/Unix binary), but this host is {HOST_TARGET}; build the package on (or for) {HOST_TARGET} with 'cloacinactl package build' and pack it again",
                patched.display()
            )
        );
    }
    // Something that is no library at all.
    let e = load_err(&ex.dir.join("package.toml"), &manifest, cache.path());
    assert!(
        e.to_string().contains(
            "package.toml is not a shared library (unrecognized file format), but this host is"
        ),
        "{e}"
    );
    // A missing file.
    let e = load_err(&work.path().join("nope.so"), &manifest, cache.path());
    assert!(
        e.to_string().starts_with(&format!(
            "package 'hello-orders': cannot read {}/nope.so: ",
            work.path().display()
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Libraries that would crash the process
// ---------------------------------------------------------------------------------------------

#[test]
fn a_truncated_library_is_refused_before_it_is_mapped() {
    // Mapped as it is, this library's segments lie past the end of the file: touching them is
    // SIGBUS, which kills this test process on a loader that does not check first.
    let ex = example("hello-orders");
    let manifest = manifest_of(&ex);
    let cache = new_cache();
    let work = tempfile::tempdir().expect("temp dir");
    let mut bytes = std::fs::read(&ex.library).expect("read");
    if !bytes.starts_with(b"\x7fELF") {
        return;
    }
    // An eighth: cut inside the loadable segments (a dynamic loader maps them, then faults).
    bytes.truncate(bytes.len() / 8);
    let truncated = work.path().join("libhello_orders.so");
    std::fs::write(&truncated, &bytes).expect("write");
    let e = load_err(&truncated, &manifest, cache.path());
    assert!(matches!(e, LoadError::Malformed { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "package 'hello-orders': {} cannot be loaded: it is truncated or corrupt: its ",
            truncated.display()
        )) && text.ends_with(&format!(
            "lies past the end of the file ({} bytes); it was not opened. Build the package again with 'cloacinactl package build' and pack the new library",
            bytes.len()
        )),
        "{text}"
    );
    assert!(
        std::fs::read_dir(cache.path())
            .expect("cache")
            .next()
            .is_none(),
        "nothing cached for a refused library"
    );
}

#[test]
fn a_library_whose_load_crashed_is_quarantined_until_its_marker_is_deleted() {
    // heartbeat: no other test of this process loads it (a live version would be returned
    // from the registry without a look at the markers).
    let ex = example("heartbeat");
    let manifest = manifest_of(&ex);
    let cache = new_cache();
    let sha = archive::sha256_file(&ex.library).expect("sha");
    let dir = cache.path().join(&sha);
    std::fs::create_dir_all(&dir).expect("mkdir");
    // What a process that died while loading the library leaves behind (pid 4000000000 cannot
    // be running: it is above any pid_max).
    let marker = dir.join(format!(
        "{}4000000000-00000000000000ff",
        loader::LOAD_MARKER_PREFIX
    ));
    std::fs::write(&marker, "pid 4000000000\n").expect("marker");

    let e = load_err(&ex.library, &manifest, cache.path());
    assert!(matches!(e, LoadError::Quarantined { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "package 'heartbeat': {} is quarantined: an earlier process (pid 4000000000) died while loading it (the library crashed it, or it was killed), so it is not loaded again. Replace the archive with a fixed build, or delete {} to retry this one",
            ex.library.display(),
            marker.display()
        )
    );
    assert_eq!(loader::open_count(&sha), 0, "never opened");

    // Deleting the marker lifts the quarantine; a load that returns leaves no marker.
    std::fs::remove_file(&marker).expect("rm");
    let pkg = loader::load(&ex.library, &manifest, cache.path()).expect("loads");
    assert_eq!(pkg.name(), "heartbeat");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(loader::LOAD_MARKER_PREFIX))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A marker of another process that is still running is a load under way there, not a
    // crash.
    drop(pkg);
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("a live process");
    let live = dir.join(format!(
        "{}{}-00000000000000ff",
        loader::LOAD_MARKER_PREFIX,
        other.id()
    ));
    std::fs::write(&live, "").expect("marker");
    let loaded = loader::load(&ex.library, &manifest, cache.path());
    let _ = other.kill();
    let _ = other.wait();
    loaded.expect("a live process's marker is no quarantine");
    std::fs::remove_file(&live).expect("rm");

    // This pid with another process token: a pid reused after a crash.
    let reused = dir.join(format!(
        "{}{}-00000000000000ff",
        loader::LOAD_MARKER_PREFIX,
        std::process::id()
    ));
    std::fs::write(&reused, "").expect("marker");
    let e = load_err(&ex.library, &manifest, cache.path());
    assert!(matches!(e, LoadError::Quarantined { .. }), "{e}");
    std::fs::remove_file(&reused).expect("rm");
}

#[test]
fn archives_are_checked_against_the_signature_policy() {
    use cloacina::package::signing::SignaturePolicy;
    let ex = example("price-publisher");
    let cache = new_cache();
    let work = tempfile::tempdir().expect("temp dir");
    let archive_path = pack(
        &ex,
        &[(HOST_TARGET.to_string(), ex.library.clone())],
        &work.path().join("price-publisher.cloacina"),
    );
    let sig = signing::signature_path(&archive_path);
    std::fs::write(&sig, "{\"forged\": true}\n").expect("forged side-car");
    let e =
        loader::load_archive_checked(&archive_path, cache.path(), &SignaturePolicy::permissive())
            .expect_err("a forged side-car is never ignored");
    assert!(matches!(e, LoadError::Signature { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "cannot load package archive {}: signature file {} is malformed",
            archive_path.display(),
            sig.display()
        )),
        "{e}"
    );
    std::fs::remove_file(&sig).expect("rm");
    let pkg =
        loader::load_archive_checked(&archive_path, cache.path(), &SignaturePolicy::permissive())
            .expect("unsigned archives load when signatures are optional");
    assert_eq!(pkg.name(), "price-publisher");
}
