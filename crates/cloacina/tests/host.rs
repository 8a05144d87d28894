//! The host: built from a store and a configuration, reconfigured while it runs, and stopped
//! in its defined order (reconciler, cron, triggers, reactors, the runner's drain, the store),
//! with the real example packages loaded, on SQLite and PostgreSQL.

mod common;
mod common_packages;

use std::time::Duration;

use cloacina::host::{Host, HostConfig, HostSettings, StopStep};
use cloacina::package::loader;
use cloacina::package::signing::SignaturePolicy;
use cloacina::reconciler::{DesiredPackage, PackageSource, ReconcileError};
use cloacina::registry::RegistryError;
use cloacina::schedule::cron::CronConfig;
use cloacina::schedule::trigger::TriggerConfig;
use cloacina::store::{ExecutionFilter, ExecutionStatus, Store, TaskStatus};
use cloacina::{RunnerConfig, StoreError};
use common::TestDb;
use common_packages::example;
use serde_json::json;

fn package(name: &'static str, id: &str) -> DesiredPackage {
    let ex = example(name);
    let cache = common_packages::target_dir().join("loader-cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let loaded = loader::load_dir(&ex.dir, &ex.library, &cache).expect("example loads");
    DesiredPackage {
        id: id.to_string(),
        tenant: "public".to_string(),
        source: PackageSource::Loaded(loaded),
    }
}

async fn host(db: &TestDb, cache: &std::path::Path) -> Host {
    let mut config = HostConfig::new(cache);
    config.runner = RunnerConfig {
        poll_interval: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(10),
        ..RunnerConfig::default()
    };
    config.cron = CronConfig {
        tick: Duration::from_millis(25),
        ..CronConfig::default()
    };
    config.triggers = TriggerConfig {
        base_interval: Duration::from_millis(100),
        ..TriggerConfig::default()
    };
    Host::start(db.open().await, config).await.expect("host")
}

async fn executions(store: &Store) -> Vec<cloacina::store::ExecutionRecord> {
    store
        .execution_list(ExecutionFilter {
            limit: Some(10_000),
            ..ExecutionFilter::default()
        })
        .await
        .expect("list")
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything runs (a per-second cron whose task takes 1.5 s, a polled trigger, a reactor with
/// a batch window open); after the shutdown nothing fires, polls or loads any more, the task
/// in flight was drained, and the store is closed.
async fn shutdown_stops_everything_in_order(db: &TestDb) {
    let cache = tempfile::tempdir().expect("cache");
    let host = host(db, cache.path()).await;
    let report = host
        .reconciler()
        .reconcile(vec![
            package("heartbeat", "beat"),
            package("scheduled-reports", "sched"),
            package("price-publisher", "pub"),
        ])
        .await;
    assert_eq!(report.loaded.len(), 3, "{report:?}");

    // The trigger polled, the reactor fired, a beat task in flight.
    let store = host.store().clone();
    let triggers = host.triggers().clone();
    wait_until("the trigger polled", || {
        let t = triggers.clone();
        async move { t.triggers_list().iter().any(|t| t.polls > 0) }
    })
    .await;
    let reactors = host.reactors();
    let buffered = reactors
        .accumulator_push("public", "price_reactor", "trades", json!({"qty": 1}))
        .await
        .expect("push a trade");
    assert!(!buffered.fired, "a batch event waits for its window");
    let fired = reactors
        .accumulator_push("public", "price_reactor", "spot", json!({"price": 10}))
        .await
        .expect("push a spot price");
    assert!(fired.fired, "{fired:?}");

    // A task is `Running` in the store from its claim, a moment before its body starts. One
    // claimed 250-900 ms ago (of its 1.5 s) has started and is still running, so the drain
    // must wait for it rather than hand it back.
    wait_until("a beat task running for 250 ms", || {
        let store = store.clone();
        async move {
            let now = cloacina::store::now_ms();
            for e in executions(&store).await {
                if e.workflow_name == "beat"
                    && e.status == ExecutionStatus::Running
                    && store.task_list(e.id).await.expect("tasks").iter().any(|t| {
                        t.status == TaskStatus::Running
                            && t.started_at
                                .is_some_and(|at| (250..900).contains(&(now - at)))
                    })
                {
                    return true;
                }
            }
            false
        }
    })
    .await;

    let reconciler = host.reconciler().clone();
    let cron = host.cron().clone();
    let reactors = host.reactors().clone();
    let report = host
        .shutdown_within(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert_eq!(
        report.steps,
        [
            StopStep::Reconciler,
            StopStep::Cron,
            StopStep::Triggers,
            StopStep::Reactors,
            StopStep::Runner,
            StopStep::Store,
        ]
    );
    assert!(
        report.drained >= 1,
        "the beat task in flight drained: {report:?}"
    );
    assert_eq!(report.reactors.reactors, 1, "{report:?}");
    assert_eq!(report.reactors.discarded_events, 1, "{report:?}");

    // Nothing is scheduled, polled, fired or loaded any more, and the store is closed.
    assert!(!cron.is_running());
    assert!(triggers.triggers_list().is_empty());
    assert!(matches!(
        reactors
            .accumulator_push("public", "price_reactor", "spot", json!({"price": 11}))
            .await,
        Err(RegistryError::Stopped)
    ));
    assert!(reactors.is_stopped());
    let after = reconciler
        .reconcile(vec![package("hello-orders", "hello")])
        .await;
    assert!(after.loaded.is_empty(), "{after:?}");
    assert!(matches!(
        reconciler.unload("beat").await,
        Err(ReconcileError::Closed)
    ));
    assert!(
        matches!(
            store.execution_list(ExecutionFilter::default()).await,
            Err(StoreError::Closed)
        ),
        "store calls fail once it is closed"
    );

    // Seen from a fresh store: no task left running, and nothing new starts (the cron fires
    // every second and the batch window would have closed after 2 s).
    let fresh = db.open().await;
    let before = executions(&fresh).await;
    assert!(before.iter().any(|e| e.workflow_name == "record_prices"));
    let running = fresh
        .task_list(
            before
                .iter()
                .find(|e| e.workflow_name == "beat")
                .expect("a beat run")
                .id,
        )
        .await
        .expect("tasks");
    assert!(
        running.iter().all(|t| t.status != TaskStatus::Running),
        "{running:?}"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(executions(&fresh).await.len(), before.len());
    fresh.close().await;
}

/// A reload's settings reach the schedulers, the reconciler and the drain.
async fn apply_changes_the_running_settings(db: &TestDb) {
    let cache = tempfile::tempdir().expect("cache");
    let host = host(db, cache.path()).await;
    assert_eq!(host.shutdown_timeout(), Duration::from_secs(10));
    assert!(host.cron().is_running());
    let cron = CronConfig {
        max_catchup: Some(2),
        ..CronConfig::default()
    };
    let triggers = TriggerConfig {
        base_interval: Duration::from_millis(1500),
        ..TriggerConfig::default()
    };
    host.apply(HostSettings {
        cron: cron.clone(),
        triggers: triggers.clone(),
        shutdown_timeout: Duration::from_secs(3),
        signatures: SignaturePolicy::permissive(),
    });
    assert_eq!(host.cron().config(), cron);
    assert_eq!(host.triggers().config(), triggers);
    assert_eq!(host.shutdown_timeout(), Duration::from_secs(3));
    let report = host.shutdown().await.expect("shutdown");
    assert_eq!(report.steps.last(), Some(&StopStep::Store));
}

conformance!(
    shutdown_stops_everything_in_order,
    apply_changes_the_running_settings,
);
