//! The reactor registry against the real example packages of `examples/packages/`
//! (`price-publisher`, `price-subscriber`, `graph-in-task`, built once per test run): the
//! bound-subscriber guard and its exact text, waiting subscribers, reactor-name resolution
//! across tenants, accumulator kinds and criteria, pause/resume, graph runs on firings,
//! workflow starts (through a recording starter and through a real runner), trigger-less graph
//! invocation, idempotency, conflicts and upgrades.

mod common_packages;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloacina::package::loader::{self, LoadedPackage};
use cloacina::registry::{
    BindOutcome, Health, Owner, PushOutcome, ReactorRegistry, RegistryError, StartOutcome,
    StartRequest, WorkflowStarter,
};
use cloacina::schedule::ManualClock;
use cloacina::store::ExecutionStatus;
use cloacina::workflow::package::{
    AccumulatorDescription, AccumulatorKind, Criterion, GraphDescription, ReactorDescription,
};
use cloacina::workflow::{BoxFuture, Context};
use cloacina::{Runner, RunnerConfig};
use common_packages::example;
use serde_json::{Value, json};
use uuid::Uuid;

const GUARD_TEXT: &str = "reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first";
const WAITING_TEXT: &str =
    "reactor 'price_reactor' is not loaded (its publisher package may not be loaded yet)";

fn new_cache() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn load(name: &'static str, cache: &Path) -> Arc<LoadedPackage> {
    let ex = example(name);
    loader::load_dir(&ex.dir, &ex.library, cache).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A loaded example with the owner identity the reconciler would give it.
struct Pkg {
    pkg: Arc<LoadedPackage>,
    owner: Owner,
}

impl Pkg {
    fn new(name: &'static str, cache: &Path, id: &str) -> Self {
        let pkg = load(name, cache);
        let owner = Owner::of(id, &pkg);
        Self { pkg, owner }
    }
    fn reactors(&self) -> &[ReactorDescription] {
        &self.pkg.description().reactors
    }
    fn graphs(&self) -> &[GraphDescription] {
        &self.pkg.description().graphs
    }
    fn id(&self) -> &str {
        &self.owner.package_id
    }
}

/// Runs the load steps 3-5 for `p` in `tenant`.
fn load_steps(reg: &ReactorRegistry, tenant: &str, p: &Pkg) -> BindOutcome {
    reg.reactors_start(tenant, &p.owner, p.reactors())
        .expect("reactors start");
    reg.graphs_register(tenant, &p.owner, p.pkg.clone(), p.graphs())
        .expect("graphs register");
    reg.graphs_bind(tenant, &p.owner, p.pkg.clone(), p.graphs())
        .expect("graphs bind")
}

type Started = Arc<Mutex<Vec<(String, Context)>>>;

/// A starter that records what it is asked to start.
fn recording_starter() -> (WorkflowStarter, Started) {
    let started: Started = Arc::default();
    let log = started.clone();
    let starter: WorkflowStarter = Arc::new(move |workflow: String, ctx: Context| {
        let log = log.clone();
        Box::pin(async move {
            log.lock().expect("log").push((workflow, ctx));
            Ok(Uuid::new_v4())
        }) as BoxFuture<'static, Result<Uuid, String>>
    });
    (starter, started)
}

fn started_workflows(started: &Started) -> Vec<String> {
    started
        .lock()
        .expect("log")
        .iter()
        .map(|(w, _)| w.clone())
        .collect()
}

/// Waits until `check` holds (or panics after 10 s).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fires(reg: &ReactorRegistry, tenant: &str, reactor: &str) -> u64 {
    reg.reactors_list(Some(tenant))
        .into_iter()
        .find(|r| r.name == reactor)
        .map_or(0, |r| r.fires)
}

fn graph_result<'a>(out: &'a PushOutcome, graph: &str) -> &'a Value {
    let run = out
        .graph(graph)
        .unwrap_or_else(|| panic!("graph {graph} ran: {out:#?}"));
    assert_eq!(run.error, None, "{graph}");
    run.result.as_ref().expect("a result")
}

// ---------------------------------------------------------------------------------------------
// The bound-subscriber guard (the spec's cross-package recipe)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_refuses_the_publisher_while_the_subscriber_is_bound() {
    let cache = new_cache();
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let subscriber = Pkg::new("price-subscriber", cache.path(), "sub-1");
    let (starter, started) = recording_starter();
    let reg = ReactorRegistry::new(Some(starter));
    let t = "acme";

    assert_eq!(load_steps(&reg, t, &publisher), BindOutcome::Bound);
    assert_eq!(load_steps(&reg, t, &subscriber), BindOutcome::Bound);

    // The guard names the foreign subscribers, in binding order, with the exact text.
    let e = reg.guard_check(t, publisher.id()).expect_err("guarded");
    assert_eq!(e.to_string(), GUARD_TEXT);
    assert_eq!(e.refusals[0].subscribers, ["analyzer_v1", "aggregator"]);
    reg.guard_check(t, subscriber.id())
        .expect("the subscriber owns no reactor");
    reg.guard_check("other-tenant", publisher.id())
        .expect("nothing of it in another tenant");

    // Step 4 re-checks the guard and changes nothing.
    let e = reg.reactors_stop(t, publisher.id()).expect_err("refused");
    assert!(matches!(e, RegistryError::Guard(_)), "{e:?}");
    assert_eq!(e.to_string(), GUARD_TEXT);
    let reactors = reg.reactors_list(Some(t));
    assert_eq!(reactors.len(), 1);
    let r = &reactors[0];
    assert_eq!(
        (r.name.as_str(), r.package.as_str(), r.package_id.as_str()),
        ("price_reactor", "price-publisher", "pub-1")
    );
    assert_eq!(r.subscribers, ["analyzer_v1", "aggregator"]);
    assert_eq!(
        r.bound_graphs,
        ["price_summary", "analyzer_v1", "aggregator"]
    );
    let status = reg.graph_status(t, "price_reactor").expect("status");
    assert_eq!(status.subscribers, 2);
    assert_eq!(reg.accumulators_list(Some(t)).len(), 2);

    // Still serving: a push fires every bound graph, in binding order, and the workflow.
    let out = reg
        .accumulator_push(t, "price_reactor", "spot", json!({"price": 98.5}))
        .await
        .expect("push");
    assert!(out.fired, "{out:#?}");
    let firing = out.firing.as_ref().expect("firing");
    assert_eq!(firing.fire, 1);
    assert_eq!(firing.snapshot, json!({"spot": {"price": 98.5}}));
    let order: Vec<&str> = firing.graphs.iter().map(|g| g.graph.as_str()).collect();
    assert_eq!(order, ["price_summary", "analyzer_v1", "aggregator"]);
    assert_eq!(
        graph_result(&out, "price_summary"),
        &json!({"spot": 98.5, "volume": 0.0, "notional": 0.0})
    );
    assert_eq!(graph_result(&out, "analyzer_v1"), &json!("buy"));
    assert_eq!(
        graph_result(&out, "aggregator"),
        &json!({"trades": 0, "avg_qty": 0.0})
    );
    assert_eq!(firing.workflows.len(), 1);
    assert_eq!(firing.workflows[0].workflow, "record_prices");
    assert!(matches!(
        firing.workflows[0].outcome,
        StartOutcome::Started { .. }
    ));
    assert!(firing.is_clean());
    {
        let log = started.lock().expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].0, "record_prices");
        assert_eq!(log[0].1.get_value("spot"), Some(&json!({"price": 98.5})));
    }

    // Unload the subscriber (its step 2), then the publisher goes.
    assert_eq!(reg.graphs_unbind(t, subscriber.id()).expect("unbind"), 2);
    assert_eq!(reg.graphs_unbind(t, subscriber.id()).expect("again"), 0);
    assert_eq!(reg.graphs_unregister(t, subscriber.id()).expect("none"), 0);
    assert!(
        reg.reactors_stop(t, subscriber.id())
            .expect("nothing to stop")
            .iter()
            .any(|w| w.contains("nothing to tear down"))
    );
    let status = reg.graph_status(t, "price_reactor").expect("status");
    assert_eq!(status.subscribers, 0, "the spec's 'subscribers: 0'");
    assert_eq!(status.bound_graphs, ["price_summary"]);
    assert_eq!(fires(&reg, t, "price_reactor"), 1, "the reactor still runs");

    reg.guard_check(t, publisher.id())
        .expect("no foreign subscriber");
    assert_eq!(reg.graphs_unbind(t, publisher.id()).expect("step 2"), 1);
    assert_eq!(reg.graphs_unregister(t, publisher.id()).expect("step 3"), 0);
    let warnings = reg.reactors_stop(t, publisher.id()).expect("step 4");
    assert_eq!(warnings, Vec::<String>::new());
    assert!(reg.accumulators_list(Some(t)).is_empty());
    assert!(reg.accumulators_list(None).is_empty());
    assert!(reg.reactors_list(None).is_empty());
    assert!(reg.graphs_list(None).is_empty());
    assert!(reg.graph_status(t, "price_reactor").is_none());

    // A reactor that is not there: a clean no-op with an informational warning.
    let warnings = reg.reactors_stop(t, publisher.id()).expect("no-op");
    assert_eq!(
        warnings,
        ["no reactor of package pub-1 is in the scheduler for tenant 'acme'; nothing to tear down"]
    );
    let e = reg
        .accumulator_push(t, "price_reactor", "spot", json!({"price": 1}))
        .await
        .expect_err("gone");
    assert_eq!(
        e.to_string(),
        "reactor 'price_reactor' is not loaded in tenant 'acme' (the tenant has no reactors); check 'cloacinactl graph accumulators' and that its package is loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_graphs_never_block_and_are_unbound_with_the_reactor() {
    let cache = new_cache();
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let reg = ReactorRegistry::new(None);
    assert_eq!(load_steps(&reg, "t", &publisher), BindOutcome::Bound);
    reg.guard_check("t", publisher.id())
        .expect("its own price_summary does not block it");

    // One trade waits in the batch buffer when the reactor is torn down (step 2 skipped).
    let out = reg
        .accumulator_push("t", "price_reactor", "trades", json!({"qty": 1}))
        .await
        .expect("push");
    assert!(!out.fired);
    let warnings = reg.reactors_stop("t", publisher.id()).expect("stops");
    assert_eq!(
        warnings,
        [
            "reactor 'price_reactor': 1 buffered event(s) of batch accumulator 'trades' were discarded",
            "graph 'price_summary' of package 'price-publisher' was still bound to reactor 'price_reactor'; it was unbound with the reactor",
        ]
    );
    assert!(reg.graphs_list(None).is_empty());
    assert_eq!(reg.graphs_unbind("t", publisher.id()).expect("nothing"), 0);
    // The batch's flush timer died with the reactor.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(reg.reactors_list(None).is_empty());
}

/// A host's shutdown: `stop` waits for the firing in progress (its workflow start included),
/// then nothing fires any more, neither by a push nor by a batch's flush timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_the_firing_in_progress_then_nothing_fires() {
    let cache = new_cache();
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let started: Started = Arc::default();
    let log = started.clone();
    let slow: WorkflowStarter = Arc::new(move |workflow: String, ctx: Context| {
        let log = log.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            log.lock().expect("log").push((workflow, ctx));
            Ok(Uuid::new_v4())
        }) as BoxFuture<'static, Result<Uuid, String>>
    });
    let reg = ReactorRegistry::new(Some(slow));
    assert_eq!(load_steps(&reg, "t", &publisher), BindOutcome::Bound);
    let out = reg
        .accumulator_push("t", "price_reactor", "trades", json!({"qty": 1}))
        .await
        .expect("push");
    assert!(!out.fired, "the trade waits for its 2 s window");
    let firing = {
        let reg = reg.clone();
        tokio::spawn(async move {
            reg.accumulator_push("t", "price_reactor", "spot", json!({"price": 1}))
                .await
        })
    };
    eventually("the firing to start", || {
        fires(&reg, "t", "price_reactor") == 1
    })
    .await;

    let report = reg.stop().await;
    assert_eq!(
        started_workflows(&started),
        ["record_prices"],
        "the firing's workflow start finished before stop returned"
    );
    assert!(firing.await.expect("join").expect("fired").fired);
    assert_eq!((report.reactors, report.graphs), (1, 1));
    assert_eq!(report.discarded_events, 1);
    assert!(reg.is_stopped());
    assert_eq!(
        reg.accumulator_push("t", "price_reactor", "spot", json!({"price": 2}))
            .await
            .expect_err("stopped"),
        RegistryError::Stopped
    );
    assert_eq!(
        reg.graph_invoke("t", "price_summary", json!({}))
            .await
            .expect_err("stopped"),
        RegistryError::Stopped
    );
    // The batch's flush timer was stopped: no second firing.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(fires(&reg, "t", "price_reactor"), 1);
    assert_eq!(started_workflows(&started).len(), 1);
    assert_eq!(reg.stop().await, report, "idempotent");
}

// ---------------------------------------------------------------------------------------------
// Waiting subscribers and reactor-name resolution
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_waits_for_its_publisher() {
    let cache = new_cache();
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let subscriber = Pkg::new("price-subscriber", cache.path(), "sub-1");
    let reg = ReactorRegistry::new(None);

    for _ in 0..2 {
        assert_eq!(
            load_steps(&reg, "acme", &subscriber),
            BindOutcome::Waiting {
                reason: WAITING_TEXT.to_string()
            }
        );
    }
    assert!(reg.graphs_list(None).is_empty(), "nothing bound");

    assert_eq!(load_steps(&reg, "acme", &publisher), BindOutcome::Bound);
    assert_eq!(load_steps(&reg, "acme", &subscriber), BindOutcome::Bound);
    assert_eq!(
        load_steps(&reg, "acme", &subscriber),
        BindOutcome::Bound,
        "idempotent"
    );
    let graphs = reg.graphs_list(Some("acme"));
    let names: Vec<(&str, &str, bool)> = graphs
        .iter()
        .map(|g| (g.name.as_str(), g.package.as_str(), g.bound))
        .collect();
    assert_eq!(
        names,
        [
            ("aggregator", "price-subscriber", true),
            ("analyzer_v1", "price-subscriber", true),
            ("price_summary", "price-publisher", true),
        ]
    );
    assert_eq!(
        reg.guard_check("acme", publisher.id())
            .expect_err("bound")
            .to_string(),
        GUARD_TEXT
    );
}

/// The subscriber's graphs with their binding replaced.
fn rebound(p: &Pkg, reactor: &str) -> Vec<GraphDescription> {
    p.graphs()
        .iter()
        .cloned()
        .map(|mut g| {
            g.reactor = Some(reactor.to_string());
            g
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_names_resolve_in_the_own_tenant_then_public_and_tenant_slash_name_is_explicit() {
    let cache = new_cache();
    let public_pub = Pkg::new("price-publisher", cache.path(), "pub-public");
    let acme_pub = Pkg::new("price-publisher", cache.path(), "pub-acme");
    let subscriber = Pkg::new("price-subscriber", cache.path(), "sub-acme");
    let beta_sub = Pkg::new("price-subscriber", cache.path(), "sub-beta");
    let reg = ReactorRegistry::new(None);

    // Only public has the reactor: a bare name in acme falls back to public.
    assert_eq!(load_steps(&reg, "public", &public_pub), BindOutcome::Bound);
    assert_eq!(load_steps(&reg, "acme", &subscriber), BindOutcome::Bound);
    for g in reg.graphs_list(Some("acme")) {
        assert_eq!(g.reactor.as_deref(), Some("price_reactor"));
        assert_eq!(g.reactor_tenant.as_deref(), Some("public"), "{}", g.name);
    }
    assert_eq!(
        reg.guard_check("public", public_pub.id())
            .expect_err("foreign subscribers from acme")
            .to_string(),
        "reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first"
    );

    // Explicit tenant: beta reaches acme's reactor, which is not loaded yet.
    let to_acme = rebound(&beta_sub, "acme/price_reactor");
    assert_eq!(
        reg.graphs_bind("beta", &beta_sub.owner, beta_sub.pkg.clone(), &to_acme)
            .expect("bind"),
        BindOutcome::Waiting {
            reason: "reactor 'acme/price_reactor' is not loaded (its publisher package may not be loaded yet)".to_string()
        }
    );
    assert_eq!(load_steps(&reg, "acme", &acme_pub), BindOutcome::Bound);
    assert_eq!(
        reg.graphs_bind("beta", &beta_sub.owner, beta_sub.pkg.clone(), &to_acme)
            .expect("bind"),
        BindOutcome::Bound
    );
    for g in reg.graphs_list(Some("beta")) {
        assert_eq!(g.reactor_tenant.as_deref(), Some("acme"), "{}", g.name);
    }

    // Rebinding acme's subscriber now finds its own tenant's reactor first.
    assert_eq!(
        reg.graphs_unbind("acme", subscriber.id()).expect("unbind"),
        2
    );
    reg.guard_check("public", public_pub.id())
        .expect("public is free");
    assert_eq!(load_steps(&reg, "acme", &subscriber), BindOutcome::Bound);
    for g in reg
        .graphs_list(Some("acme"))
        .into_iter()
        .filter(|g| g.package == "price-subscriber")
    {
        assert_eq!(g.reactor_tenant.as_deref(), Some("acme"), "{}", g.name);
    }
    assert_eq!(
        reg.guard_check("acme", acme_pub.id())
            .expect_err("acme's and beta's subscribers")
            .to_string(),
        "reactor 'price_reactor' has 4 bound subscriber(s): ['analyzer_v1', 'aggregator', 'analyzer_v1', 'aggregator']; unbind them first"
    );

    // A push to public runs only what is bound there; acme/... reaches acme's reactor.
    let out = reg
        .accumulator_push("public", "price_reactor", "spot", json!({"price": 120}))
        .await
        .expect("push");
    let ran: Vec<&str> = out
        .firing
        .as_ref()
        .expect("fired")
        .graphs
        .iter()
        .map(|g| g.graph.as_str())
        .collect();
    assert_eq!(ran, ["price_summary"]);
    let out = reg
        .accumulator_push("beta", "acme/price_reactor", "spot", json!({"price": 120}))
        .await
        .expect("push");
    let ran: Vec<(&str, &str)> = out
        .firing
        .as_ref()
        .expect("fired")
        .graphs
        .iter()
        .map(|g| (g.tenant.as_str(), g.graph.as_str()))
        .collect();
    assert_eq!(
        ran,
        [
            ("acme", "price_summary"),
            ("beta", "analyzer_v1"),
            ("beta", "aggregator"),
            ("acme", "analyzer_v1"),
            ("acme", "aggregator"),
        ]
    );
    assert_eq!(graph_result(&out, "analyzer_v1"), &json!("hold"));
}

// ---------------------------------------------------------------------------------------------
// Accumulators, criteria, pause/resume, workflow starts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_by_size_and_passthrough_feed_the_bound_graphs() {
    let cache = new_cache();
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let subscriber = Pkg::new("price-subscriber", cache.path(), "sub-1");
    let (starter, started) = recording_starter();
    // Fire times come from the injected clock, as the schedulers' do.
    let clock = ManualClock::new(1_700_000_000_000);
    let reg = ReactorRegistry::with_clock(Some(starter), clock.clone());
    load_steps(&reg, "t", &publisher);
    load_steps(&reg, "t", &subscriber);

    // 49 trades buffer (the batch holds up to 50); the 50th releases them and fires.
    for i in 0..49 {
        let out = reg
            .accumulator_push("t", "price_reactor", "trades", json!({"qty": 2}))
            .await
            .expect("push");
        assert!(!out.fired, "trade {i}");
        assert_eq!(
            out.note.as_deref(),
            Some(
                format!(
                    "accumulator 'trades' buffered the event ({} of 50); the batch is released when it is full or its flush interval ends",
                    i + 1
                )
                .as_str()
            )
        );
    }
    let trades = reg
        .accumulators_list(Some("t"))
        .into_iter()
        .find(|a| a.name == "trades")
        .expect("trades");
    assert_eq!((trades.depth, trades.pending), (49, false));
    assert_eq!(trades.last_event, Some(json!({"qty": 2})));
    let out = reg
        .accumulator_push("t", "price_reactor", "trades", json!({"qty": 2}))
        .await
        .expect("push");
    assert!(out.fired);
    let snapshot = &out.firing.as_ref().expect("firing").snapshot;
    assert_eq!(snapshot["trades"].as_array().map(Vec::len), Some(50));
    assert!(snapshot.get("spot").is_none(), "no spot price yet");
    assert_eq!(
        graph_result(&out, "price_summary"),
        &json!({"spot": null, "volume": 100.0, "notional": null})
    );
    assert_eq!(
        graph_result(&out, "aggregator"),
        &json!({"trades": 50, "avg_qty": 2.0})
    );
    assert_eq!(graph_result(&out, "analyzer_v1"), &json!("no data"));
    assert_eq!(started_workflows(&started), ["record_prices"]);
    assert_eq!(
        started.lock().expect("log")[0]
            .1
            .get_value("trades")
            .and_then(Value::as_array)
            .map(Vec::len),
        Some(50)
    );

    // The firing consumed the batch; passthrough keeps the latest spot price.
    for (price, signal) in [(101.0, "hold"), (99.0, "buy")] {
        let out = reg
            .accumulator_push("t", "price_reactor", "spot", json!({"price": price}))
            .await
            .expect("push");
        assert_eq!(
            out.firing.as_ref().expect("fired").snapshot,
            json!({"spot": {"price": price}})
        );
        assert_eq!(graph_result(&out, "analyzer_v1"), &json!(signal));
        assert_eq!(
            graph_result(&out, "aggregator"),
            &json!({"trades": 0, "avg_qty": 0.0})
        );
    }
    let accs = reg.accumulators_list(Some("t"));
    let depths: Vec<(&str, usize, u64)> = accs
        .iter()
        .map(|a| (a.name.as_str(), a.depth, a.events))
        .collect();
    assert_eq!(depths, [("spot", 1, 2), ("trades", 0, 50)]);
    let reactor = &reg.reactors_list(Some("t"))[0];
    assert_eq!(reactor.fires, 3);
    assert_eq!(reactor.health, Health::Healthy);
    assert_eq!(reactor.last_fired_at, Some(1_700_000_000_000));
    let graphs = reg.graphs_list(Some("t"));
    assert!(
        graphs
            .iter()
            .all(|g| g.fires == 3 && g.last_fired_at == Some(1_700_000_000_000)),
        "{graphs:?}"
    );
    assert_eq!(
        started_workflows(&started),
        ["record_prices", "record_prices", "record_prices"]
    );
    let e = reg
        .accumulator_push("t", "price_reactor", "bids", json!(1))
        .await
        .expect_err("unknown accumulator");
    assert_eq!(
        e.to_string(),
        "reactor 'price_reactor' in tenant 't' has no accumulator 'bids' (it has: spot, trades)"
    );
}

/// A starter wired to `Runner::submit`, as the reconciler wires it; it also records the ids.
fn runner_starter(runner: &Runner, ids: Arc<Mutex<Vec<Uuid>>>) -> WorkflowStarter {
    let runner = runner.clone();
    Arc::new(move |workflow: String, ctx: Context| {
        let runner = runner.clone();
        let ids = ids.clone();
        Box::pin(async move {
            let id = runner
                .submit(&workflow, ctx)
                .await
                .map_err(|e| e.to_string())?;
            ids.lock().expect("ids").push(id);
            Ok(id)
        }) as BoxFuture<'static, Result<Uuid, String>>
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_flushes_on_its_interval_and_starts_the_workflow_on_a_real_runner() {
    let cache = new_cache();
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    let config = RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        ..RunnerConfig::default()
    };
    let runner = Runner::open(&url, config).await.expect("runner");
    for wf in publisher.pkg.workflows() {
        runner.register(wf);
    }
    let ids: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let reg = ReactorRegistry::new(Some(runner_starter(&runner, ids.clone())));
    load_steps(&reg, "t", &publisher);

    let pushed_at = Instant::now();
    for qty in [1.5, 2.5, 4.0] {
        let out = reg
            .accumulator_push("t", "price_reactor", "trades", json!({"qty": qty}))
            .await
            .expect("push");
        assert!(!out.fired);
    }
    assert_eq!(fires(&reg, "t", "price_reactor"), 0);
    // The 2 s flush interval runs from the first buffered trade.
    eventually("the flush timer's firing", || {
        fires(&reg, "t", "price_reactor") == 1
            && reg.graphs_list(Some("t")).iter().all(|g| g.fires == 1)
    })
    .await;
    let waited = pushed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let trades = reg
        .accumulators_list(Some("t"))
        .into_iter()
        .find(|a| a.name == "trades")
        .expect("trades");
    assert_eq!((trades.depth, trades.events), (0, 3));
    let summary = reg.graph_status("t", "price_summary").expect("status");
    assert_eq!(summary.graph.last_error, None);
    assert_eq!(summary.graph.health, Health::Healthy);

    // The firing started record_prices with the snapshot on the real runner.
    let started: Vec<Uuid> = ids.lock().expect("ids").clone();
    assert_eq!(started.len(), 1);
    let run = runner
        .wait(started[0], Some(Duration::from_secs(30)))
        .await
        .expect("the run ends");
    assert_eq!(run.status, ExecutionStatus::Completed, "{:?}", run.error);
    assert_eq!(
        run.context.expect("final").get_value("recorded_trades"),
        Some(&json!(3))
    );
    runner.shutdown().await.expect("shutdown");
}

fn quotes_reactor() -> ReactorDescription {
    ReactorDescription {
        name: "quotes".into(),
        accumulators: vec![
            AccumulatorDescription {
                name: "spot".into(),
                kind: AccumulatorKind::Passthrough,
            },
            AccumulatorDescription {
                name: "history".into(),
                kind: AccumulatorKind::State { capacity: 3 },
            },
        ],
        criterion: Criterion::WhenAll,
        workflows: vec!["rebalance".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_all_state_history_pause_and_resume() {
    let cache = new_cache();
    let subscriber = Pkg::new("price-subscriber", cache.path(), "sub-lab");
    let requests: Arc<Mutex<Vec<StartRequest>>> = Arc::default();
    let log = requests.clone();
    let reg = ReactorRegistry::with_tenant_starter(Arc::new(move |req: StartRequest| {
        let log = log.clone();
        Box::pin(async move {
            let fire = req.fire;
            log.lock().expect("log").push(req);
            if fire == 3 {
                Err("the runner is shutting down".to_string())
            } else {
                Ok(Uuid::new_v4())
            }
        }) as BoxFuture<'static, Result<Uuid, String>>
    }));
    let owner = Owner::new("quote-maker-id", "quote-maker", "0.3.0");
    reg.reactors_start("lab", &owner, &[quotes_reactor()])
        .expect("start");
    let analyzer: Vec<GraphDescription> = rebound(&subscriber, "quotes")
        .into_iter()
        .filter(|g| g.name == "analyzer_v1")
        .collect();
    assert_eq!(
        reg.graphs_bind("lab", &subscriber.owner, subscriber.pkg.clone(), &analyzer)
            .expect("bind"),
        BindOutcome::Bound
    );

    // when_all: spot alone does not fire, however often.
    for price in [100, 90] {
        let out = reg
            .accumulator_push("lab", "quotes", "spot", json!({"price": price}))
            .await
            .expect("push");
        assert!(!out.fired);
        assert_eq!(
            out.note.as_deref(),
            Some("waiting for new input on ['history'] (criterion when_all)")
        );
    }
    let out = reg
        .accumulator_push("lab", "quotes", "history", json!(1))
        .await
        .expect("push");
    assert!(out.fired);
    assert_eq!(
        out.firing.as_ref().expect("firing").snapshot,
        json!({"spot": {"price": 90}, "history": [1]})
    );
    assert_eq!(graph_result(&out, "analyzer_v1"), &json!("buy"));
    for h in 2..=4 {
        let out = reg
            .accumulator_push("lab", "quotes", "history", json!(h))
            .await
            .expect("push");
        assert!(!out.fired, "waits for spot again");
    }
    let out = reg
        .accumulator_push("lab", "quotes", "spot", json!({"price": 150}))
        .await
        .expect("push");
    assert_eq!(
        out.firing.as_ref().expect("firing").snapshot,
        json!({"spot": {"price": 150}, "history": [2, 3, 4]}),
        "state keeps the last 3, newest last"
    );
    assert_eq!(graph_result(&out, "analyzer_v1"), &json!("hold"));
    {
        let log = requests.lock().expect("log");
        assert_eq!(log.len(), 2);
        assert_eq!(
            (
                log[1].tenant.as_str(),
                log[1].reactor.as_str(),
                log[1].workflow.as_str(),
                log[1].fire
            ),
            ("lab", "quotes", "rebalance", 2)
        );
        assert_eq!(log[1].owner, owner);
        assert_eq!(log[1].context.get_value("history"), Some(&json!([2, 3, 4])));
    }
    let last_fired = reg.reactors_list(Some("lab"))[0].last_fired_at;

    // Paused: events accumulate, nothing fires.
    reg.reactor_pause("lab", "quotes").expect("pause");
    reg.reactor_pause("lab", "quotes").expect("idempotent");
    for (acc, event) in [("spot", json!({"price": 80})), ("history", json!(5))] {
        let out = reg
            .accumulator_push("lab", "quotes", acc, event)
            .await
            .expect("push");
        assert!(!out.fired);
        assert_eq!(
            out.note.as_deref(),
            Some("reactor 'quotes' is paused; events accumulate and count when it resumes")
        );
    }
    let graph = &reg.graphs_list(Some("lab"))[0];
    assert!(graph.reactor_paused);
    assert_eq!(graph.health, Health::Paused);
    let reactor = &reg.reactors_list(Some("lab"))[0];
    assert_eq!((reactor.paused, reactor.fires), (true, 2));
    assert_eq!(reactor.health, Health::Paused);
    let accs = reg.accumulators_list(Some("lab"));
    assert!(accs.iter().all(|a| a.pending));
    assert_eq!(accs[1].depth, 3);
    assert_eq!(accs[1].last_event, Some(json!(5)));

    // Resuming fires at once: the criterion holds. That firing's workflow start fails.
    reg.reactor_resume("lab", "quotes").expect("resume");
    eventually("the firing on resume", || {
        fires(&reg, "lab", "quotes") == 3 && requests.lock().expect("log").len() == 3
    })
    .await;
    eventually("the failure recorded", || {
        reg.reactors_list(Some("lab"))[0].health == Health::Degraded
    })
    .await;
    let reactor = &reg.reactors_list(Some("lab"))[0];
    assert_eq!(
        reactor.last_error.as_deref(),
        Some("starting workflow 'rebalance': the runner is shutting down")
    );
    assert!(reactor.last_fired_at >= last_fired);
    assert_eq!(
        requests.lock().expect("log")[2]
            .context
            .get_value("history"),
        Some(&json!([3, 4, 5]))
    );
    let graph = reg.graph_status("lab", "analyzer_v1").expect("status");
    assert_eq!(
        (graph.graph.fires, graph.graph.health, graph.subscribers),
        (3, Health::Healthy, 1)
    );
    assert_eq!(graph.accumulators.len(), 2);

    // Resuming again with nothing new does not fire; the next clean firing clears the error.
    reg.reactor_resume("lab", "quotes").expect("idempotent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fires(&reg, "lab", "quotes"), 3);
    reg.accumulator_push("lab", "quotes", "spot", json!({"price": 1}))
        .await
        .expect("push");
    let out = reg
        .accumulator_push("lab", "quotes", "history", json!(6))
        .await
        .expect("push");
    assert!(out.fired && out.firing.as_ref().is_some_and(|f| f.is_clean()));
    assert_eq!(reg.reactors_list(Some("lab"))[0].health, Health::Healthy);

    let e = reg.reactor_pause("lab", "nope").expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "reactor 'nope' is not loaded in tenant 'lab' (its reactors: quotes); check 'cloacinactl graph accumulators' and that its package is loaded"
    );
    // The subscriber's graph is foreign to quote-maker.
    assert_eq!(
        reg.reactors_stop("lab", "quote-maker-id")
            .expect_err("guarded")
            .to_string(),
        "reactor 'quotes' has 1 bound subscriber(s): ['analyzer_v1']; unbind them first"
    );
}

// ---------------------------------------------------------------------------------------------
// Trigger-less graphs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_less_graph_is_invoked() {
    let cache = new_cache();
    let p = Pkg::new("graph-in-task", cache.path(), "git-1");
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let reg = ReactorRegistry::new(None);
    assert_eq!(
        load_steps(&reg, "t", &p),
        BindOutcome::Bound,
        "nothing to bind"
    );
    assert_eq!(load_steps(&reg, "t", &p), BindOutcome::Bound, "idempotent");
    load_steps(&reg, "t", &publisher);

    let items = json!([{"qty": 3, "price": 20.0}, {"qty": 1, "price": 45.0}]);
    let out = reg
        .graph_invoke("t", "order_score", json!({"items": items, "tier": "gold"}))
        .await
        .expect("runs");
    assert_eq!(
        out,
        json!({"total": 94.5, "discount": 0.1, "priority": false})
    );
    let full = reg
        .graph_invoke_output("t", "order_score", json!({"items": items}))
        .await
        .expect("runs");
    assert_eq!(full.order, ["subtotal", "discount", "score"]);
    assert_eq!(full.output("subtotal"), Some(&json!(105.0)));

    let info = reg
        .graphs_list(Some("t"))
        .into_iter()
        .find(|g| g.name == "order_score")
        .expect("listed");
    assert_eq!(
        (info.bound, info.reactor.as_deref(), info.fires, info.health),
        (false, None, 2, Health::Healthy)
    );
    assert_eq!(info.package, "graph-in-task");
    let status = reg.graph_status("t", "order_score").expect("status");
    assert_eq!((status.subscribers, status.accumulators.len()), (0, 0));

    let e = reg
        .graph_invoke("t", "order_score", json!({"tier": "gold"}))
        .await
        .expect_err("no items");
    assert!(matches!(e, RegistryError::GraphFailed { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("node 'subtotal': the graph input has no field 'items'"),
        "{e}"
    );
    let info = reg.graph_status("t", "order_score").expect("status").graph;
    assert_eq!((info.fires, info.health), (3, Health::Degraded));
    assert!(info.last_error.is_some());

    let e = reg
        .graph_invoke("t", "price_summary", json!({}))
        .await
        .expect_err("bound");
    assert_eq!(
        e.to_string(),
        "graph 'price_summary' in tenant 't' is bound to reactor 'price_reactor': it runs when that reactor fires (push events to its accumulators); only trigger-less graphs are invoked directly"
    );
    let e = reg
        .graph_invoke("other", "order_score", json!({}))
        .await
        .expect_err("another tenant");
    assert_eq!(
        e.to_string(),
        "graph 'order_score' is not loaded in tenant 'other' (the tenant has no trigger-less graphs); check 'cloacinactl graph list'"
    );

    assert_eq!(reg.graphs_unbind("t", p.id()).expect("none bound"), 0);
    assert_eq!(reg.graphs_unregister("t", p.id()).expect("step 3"), 1);
    assert_eq!(reg.graphs_unregister("t", p.id()).expect("again"), 0);
    assert!(matches!(
        reg.graph_invoke("t", "order_score", json!({})).await,
        Err(RegistryError::UnknownGraph { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Idempotency, conflicts, upgrades
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_are_idempotent_and_names_of_other_packages_conflict() {
    let cache = new_cache();
    let publisher = Pkg::new("price-publisher", cache.path(), "pub-1");
    let subscriber = Pkg::new("price-subscriber", cache.path(), "sub-1");
    let reg = ReactorRegistry::new(None);
    load_steps(&reg, "t", &publisher);
    reg.accumulator_push("t", "price_reactor", "spot", json!({"price": 5}))
        .await
        .expect("push");
    // Running the load steps again keeps the running state.
    for _ in 0..2 {
        assert_eq!(load_steps(&reg, "t", &publisher), BindOutcome::Bound);
        assert_eq!(load_steps(&reg, "t", &subscriber), BindOutcome::Bound);
    }
    let r = &reg.reactors_list(Some("t"))[0];
    assert_eq!(r.fires, 1);
    assert_eq!(
        r.bound_graphs,
        ["price_summary", "analyzer_v1", "aggregator"]
    );
    assert_eq!(
        reg.graphs_list(Some("t"))[2].fires,
        1,
        "price_summary kept its count"
    );

    // Another package may not start a reactor or load a graph under a taken name.
    let intruder = Owner::new("x-1", "intruder", "1.0.0");
    let e = reg
        .reactors_start("t", &intruder, publisher.reactors())
        .expect_err("taken");
    assert_eq!(
        e.to_string(),
        "reactor 'price_reactor' in tenant 't' is owned by package 'price-publisher' (id pub-1); package 'intruder' cannot start a reactor with the same name — rename one of them, or unload 'price-publisher' first"
    );
    let e = reg
        .graphs_bind("t", &intruder, subscriber.pkg.clone(), subscriber.graphs())
        .expect_err("taken");
    assert!(matches!(e, RegistryError::GraphConflict { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(
            "graph 'analyzer_v1' in tenant 't' belongs to package 'price-subscriber' (id sub-1)"
        ),
        "{e}"
    );
    // ... but it may elsewhere.
    reg.reactors_start("u", &intruder, publisher.reactors())
        .expect("another tenant");
    assert_eq!(reg.reactors_list(None).len(), 2);

    // An invalid reactor description is refused with the reason.
    let mut bad = quotes_reactor();
    bad.accumulators.clear();
    assert_eq!(
        reg.reactors_start("t", &intruder, &[bad])
            .expect_err("invalid")
            .to_string(),
        "reactor 'quotes' of package 'intruder' is not valid: it has no accumulators; fix the package and rebuild it"
    );

    // Unload steps twice over.
    for _ in 0..2 {
        reg.graphs_unbind("t", subscriber.id()).expect("unbind");
        reg.graphs_unregister("t", subscriber.id())
            .expect("unregister");
        reg.reactors_stop("t", subscriber.id())
            .expect("no reactors");
    }
    for round in 0..2 {
        reg.guard_check("t", publisher.id()).expect("free");
        reg.graphs_unbind("t", publisher.id()).expect("unbind");
        reg.graphs_unregister("t", publisher.id())
            .expect("unregister");
        let warnings = reg.reactors_stop("t", publisher.id()).expect("stop");
        assert_eq!(
            warnings.len(),
            round,
            "a warning only when nothing was there"
        );
    }
    assert!(reg.graphs_list(Some("t")).is_empty());
    assert_eq!(reg.reactors_list(None).len(), 1, "u's reactor untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_takes_the_reactor_over_and_keeps_its_subscribers() {
    let cache = new_cache();
    let v1 = Pkg::new("price-publisher", cache.path(), "pub-v1");
    let v2 = Pkg::new("price-publisher", cache.path(), "pub-v2");
    let subscriber = Pkg::new("price-subscriber", cache.path(), "sub-1");
    let reg = ReactorRegistry::new(None);
    load_steps(&reg, "t", &v1);
    load_steps(&reg, "t", &subscriber);
    reg.accumulator_push("t", "price_reactor", "spot", json!({"price": 5}))
        .await
        .expect("push");

    // Upgrade: load the new version, then unload the old one.
    assert_eq!(load_steps(&reg, "t", &v2), BindOutcome::Bound);
    let r = &reg.reactors_list(Some("t"))[0];
    assert_eq!(r.package_id, "pub-v2");
    assert_eq!(r.subscribers, ["analyzer_v1", "aggregator"]);
    reg.guard_check("t", v1.id()).expect("v1 owns nothing now");
    assert_eq!(
        reg.graphs_unbind("t", v1.id()).expect("v2 took its graph"),
        0
    );
    assert_eq!(reg.reactors_stop("t", v1.id()).expect("no-op").len(), 1);
    let summary = reg.graph_status("t", "price_summary").expect("status");
    assert_eq!(summary.graph.package_id, "pub-v2");
    assert_eq!(
        reg.guard_check("t", v2.id())
            .expect_err("guarded")
            .to_string(),
        GUARD_TEXT
    );
    let out = reg
        .accumulator_push("t", "price_reactor", "spot", json!({"price": 99}))
        .await
        .expect("push");
    assert_eq!(out.firing.as_ref().expect("fired").graphs.len(), 3);
    assert_eq!(graph_result(&out, "analyzer_v1"), &json!("buy"));
}
