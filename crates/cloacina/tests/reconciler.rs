//! The reconciler, driven through the spec's recipes with the real example packages, on SQLite
//! and PostgreSQL.

mod common;
mod common_packages;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cloacina::package::loader;
use cloacina::reconciler::{DesiredPackage, PackageSource, PackageState, Reconciler, Runtime};
use cloacina::registry::ReactorRegistry;
use cloacina::schedule::cron::{CronConfig, CronScheduler};
use cloacina::schedule::trigger::{TriggerConfig, TriggerScheduler};
use cloacina::store::ExecutionStatus;
use cloacina::workflow::Context;
use cloacina::{Runner, RunnerConfig};
use common::TestDb;
use common_packages::example;
use serde_json::json;

const GUARD: &str = "reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first";

struct Harness {
    reconciler: Reconciler,
    _cache: tempfile::TempDir,
}

impl Harness {
    fn rt(&self) -> &Runtime {
        self.reconciler.runtime()
    }
}

async fn harness(db: &TestDb) -> Harness {
    let store = db.open().await;
    let runner = Runner::start(
        store.clone(),
        RunnerConfig {
            poll_interval: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(5),
            ..RunnerConfig::default()
        },
    )
    .await
    .expect("runner");
    let rt = Runtime {
        reactors: ReactorRegistry::new(None),
        cron: CronScheduler::new(store.clone(), runner.clone(), CronConfig::default()),
        triggers: TriggerScheduler::new(store.clone(), runner.clone(), TriggerConfig::default()),
        runner,
    };
    let cache = tempfile::tempdir().expect("cache dir");
    Harness {
        reconciler: Reconciler::new(rt, cache.path().to_path_buf()),
        _cache: cache,
    }
}

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

async fn cron_rows(h: &Harness, package_id: &str) -> usize {
    h.rt()
        .cron
        .schedules_list()
        .await
        .expect("schedules")
        .iter()
        .filter(|s| s.package_id == package_id)
        .count()
}

fn graph_names(h: &Harness) -> Vec<String> {
    let mut v: Vec<String> = h
        .rt()
        .reactors
        .graphs_list(None)
        .into_iter()
        .map(|g| g.name)
        .collect();
    v.sort();
    v
}

/// Recipe 1: a standalone package's unload removes its workflows, graphs, reactors,
/// accumulators, triggers and cron rows.
async fn standalone_unload_removes_everything(db: &TestDb) {
    let h = harness(db).await;
    let report = h
        .reconciler
        .reconcile(vec![
            package("scheduled-reports", "sched"),
            package("price-publisher", "pub"),
        ])
        .await;
    assert_eq!(report.loaded.len(), 2, "{report:?}");
    let wfs = h.rt().runner.workflows();
    assert!(
        wfs.contains(&"report".to_string()) && wfs.contains(&"record_prices".to_string()),
        "{wfs:?}"
    );
    assert_eq!(cron_rows(&h, "sched").await, 1);
    assert!(
        h.rt()
            .triggers
            .triggers_list()
            .iter()
            .any(|t| t.name == "inbox_watch")
    );
    assert!(graph_names(&h).contains(&"price_summary".to_string()));
    assert_eq!(h.rt().reactors.accumulators_list(None).len(), 2);
    for s in h.reconciler.statuses() {
        assert_eq!(s.state, PackageState::Loaded);
        assert_eq!(s.load_steps_done.len(), 6);
    }

    let report = h.reconciler.reconcile(vec![]).await;
    assert_eq!(report.unloaded.len(), 2, "{report:?}");
    assert!(h.rt().runner.workflows().is_empty());
    assert_eq!(cron_rows(&h, "sched").await, 0);
    assert!(h.rt().triggers.triggers_list().is_empty());
    assert!(graph_names(&h).is_empty());
    assert!(h.rt().reactors.accumulators_list(None).is_empty());
    assert!(h.rt().reactors.reactors_list(None).is_empty());
    assert!(h.reconciler.statuses().is_empty());
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// Recipe 2: unloading a publisher while another package's graphs are bound to its reactor is
/// refused with the guard's exact text and changes nothing; unloading the subscriber first,
/// then the publisher, succeeds.
async fn guard_refuses_then_subscriber_first_succeeds(db: &TestDb) {
    capture_logs();
    let h = harness(db).await;
    let report = h
        .reconciler
        .reconcile(vec![
            package("price-publisher", "pub"),
            package("price-subscriber", "sub"),
        ])
        .await;
    assert_eq!(report.loaded.len(), 2, "{report:?}");
    let before = graph_names(&h);

    let report = h
        .reconciler
        .reconcile(vec![package("price-subscriber", "sub")])
        .await;
    assert_eq!(report.refused, vec![("pub".to_string(), GUARD.to_string())]);
    assert!(
        captured()
            .iter()
            .any(|(id, m)| id == "pub" && m == &format!("unload refused: {GUARD}")),
        "the refusal is logged with the package's id: {:?}",
        captured()
    );
    let plan = h.reconciler.plan_unload("pub").expect("plan");
    assert_eq!(plan.refused.as_deref(), Some(GUARD));
    let refused = h.reconciler.unload("pub").await.expect_err("refused");
    assert_eq!(refused.to_string(), GUARD);
    // Typed for the edge: the server answers 409 `guard_refused` with the text verbatim.
    {
        use cloacina::{ErrorCode, ErrorKind};
        let cloacina::reconciler::ReconcileError::Refused(refusal) = &refused else {
            panic!("not a guard refusal: {refused:?}");
        };
        assert_eq!(refusal.to_string(), GUARD);
        assert_eq!(refusal.refusals[0].reactor, "price_reactor");
        assert_eq!(
            (refused.code(), refused.kind(), refused.kind().http_status()),
            ("guard_refused", ErrorKind::Conflict, 409)
        );
    }
    // Nothing changed: still loaded, serving and firing, shown as a refused unload of a
    // package that is no longer desired.
    let status = h.reconciler.status("pub").expect("still known");
    assert_eq!(
        (status.state, status.load_steps_done.len(), status.removed),
        (PackageState::UnloadRefused, 6, true)
    );
    assert_eq!(status.last_error.as_deref(), Some(GUARD));
    assert_eq!(graph_names(&h), before);
    assert!(
        h.rt()
            .runner
            .workflows()
            .contains(&"record_prices".to_string())
    );
    assert_eq!(h.rt().reactors.accumulators_list(None).len(), 2);

    // The operator unloads the subscriber first (the publisher is desired again)...
    let report = h
        .reconciler
        .reconcile(vec![package("price-publisher", "pub")])
        .await;
    assert_eq!(report.unloaded, vec!["sub".to_string()]);
    let status = h.reconciler.status("pub").expect("known");
    assert_eq!(
        (status.state, status.removed, status.last_error),
        (PackageState::Loaded, false, None)
    );
    assert!(
        h.reconciler
            .plan_unload("pub")
            .expect("plan")
            .refused
            .is_none()
    );
    // ...then the publisher.
    let report = h.reconciler.reconcile(vec![]).await;
    assert_eq!(report.unloaded, vec!["pub".to_string()]);
    assert!(graph_names(&h).is_empty());
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// Removing publisher and subscriber in one pass unloads both, the subscriber first: no
/// refusal is reported, or even logged (the publisher's id sorts first, so it is tried first).
async fn removing_both_in_one_pass_unloads_both(db: &TestDb) {
    capture_logs();
    let h = harness(db).await;
    h.reconciler
        .reconcile(vec![
            package("price-publisher", "both-pub"),
            package("price-subscriber", "both-sub"),
        ])
        .await;
    let report = h.reconciler.reconcile(vec![]).await;
    assert_eq!(
        report.unloaded,
        vec!["both-sub".to_string(), "both-pub".to_string()],
        "{report:?}"
    );
    assert!(report.refused.is_empty());
    assert!(graph_names(&h).is_empty());
    let refusals: Vec<_> = captured()
        .into_iter()
        .filter(|(id, message)| id == "both-pub" && message.contains("unload refused"))
        .collect();
    assert!(refusals.is_empty(), "{refusals:?}");
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// Warnings and errors logged by this test binary: `(package_id, message)`.
static LOGGED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn captured() -> Vec<(String, String)> {
    LOGGED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Installs (once per process) a subscriber recording warnings and errors into [`LOGGED`].
fn capture_logs() {
    use tracing::field::{Field, Visit};
    #[derive(Default)]
    struct Fields(String, String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            match field.name() {
                "package_id" => self.0 = format!("{value:?}"),
                "message" => self.1 = format!("{value:?}"),
                _ => {}
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "package_id" => self.0 = value.to_string(),
                "message" => self.1 = value.to_string(),
                _ => {}
            }
        }
    }
    struct Capture;
    impl tracing::Subscriber for Capture {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            *metadata.level() <= tracing::Level::WARN
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            LOGGED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((fields.0, fields.1));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
    });
}

/// A subscriber loaded before its publisher waits (steps 1-4 done) with the reason, and binds
/// once the publisher is there.
async fn subscriber_waits_for_its_publisher(db: &TestDb) {
    let h = harness(db).await;
    let report = h
        .reconciler
        .reconcile(vec![package("price-subscriber", "sub")])
        .await;
    assert_eq!(report.waiting, vec!["sub".to_string()]);
    let s = h.reconciler.status("sub").expect("status");
    assert_eq!(s.state, PackageState::Waiting);
    assert_eq!(s.load_steps_done.len(), 4);
    assert!(
        s.waiting_for
            .as_deref()
            .unwrap_or("")
            .contains("price_reactor"),
        "{s:?}"
    );
    let again = h
        .reconciler
        .reconcile(vec![package("price-subscriber", "sub")])
        .await;
    assert_eq!(
        again.waiting,
        vec!["sub".to_string()],
        "still waiting, retried each pass"
    );
    let report = h
        .reconciler
        .reconcile(vec![
            package("price-subscriber", "sub"),
            package("price-publisher", "pub"),
        ])
        .await;
    assert!(report.loaded.contains(&"sub".to_string()), "{report:?}");
    assert_eq!(
        h.reconciler.status("sub").expect("status").state,
        PackageState::Loaded
    );
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// Recipe 4: an unload whose step 6 fails (the database refuses the delete) leaves a recorded
/// partial state; a rerun completes it.
async fn partial_unload_is_recorded_and_a_rerun_completes_it(db: &TestDb) {
    let h = harness(db).await;
    h.reconciler
        .reconcile(vec![package("scheduled-reports", "sched")])
        .await;
    assert_eq!(cron_rows(&h, "sched").await, 1);
    refuse_cron_deletes(db, true).await;
    let report = h.reconciler.reconcile(vec![]).await;
    assert!(report.unloaded.is_empty(), "{report:?}");
    let s = h.reconciler.status("sched").expect("recorded");
    assert_eq!(s.state, PackageState::PartiallyUnloaded);
    assert_eq!(s.unload_steps_done.len(), 5, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .starts_with("unload step 6 (cron schedules deleted) failed"),
        "{s:?}"
    );
    assert!(
        h.rt().runner.workflows().is_empty(),
        "steps 1-5 took effect"
    );
    assert!(h.rt().triggers.triggers_list().is_empty());
    assert_eq!(
        cron_rows(&h, "sched").await,
        1,
        "the row the failed step could not delete"
    );

    refuse_cron_deletes(db, false).await;
    let report = h.reconciler.reconcile(vec![]).await;
    assert_eq!(report.unloaded, vec!["sched".to_string()]);
    assert_eq!(cron_rows(&h, "sched").await, 0);
    assert!(h.reconciler.status("sched").is_none());
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// Recipe 3: an upgrade while a long task of the old version runs. The old run completes on
/// the old code, a new run uses the new version, and no lookup in between finds the workflow
/// missing.
async fn upgrade_keeps_serving_and_in_flight_runs_finish_on_old_code(db: &TestDb) {
    let h = harness(db).await;
    h.reconciler
        .reconcile(vec![package("hello-orders", "v1")])
        .await;
    let runner = h.rt().runner.clone();
    let old_version = runner
        .workflow("orders")
        .expect("served")
        .version()
        .to_string();
    let slow = Context::from_value(json!({"delay_ms": 1500, "run_id": "old"})).expect("ctx");
    let old_run = runner.submit("orders", slow).await.expect("submit");

    let stop = Arc::new(AtomicBool::new(false));
    let misses = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (runner, stop, misses, checks) =
            (runner.clone(), stop.clone(), misses.clone(), checks.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if runner.workflow("orders").is_none() {
                    misses.fetch_add(1, Ordering::SeqCst);
                }
                checks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let v2 = upgraded_hello_orders();
    let report = h.reconciler.reconcile(vec![v2]).await;
    assert_eq!(
        report.upgraded,
        vec![("v1".to_string(), "v2".to_string())],
        "{report:?}"
    );
    let new_run = runner
        .submit(
            "orders",
            Context::from_value(json!({"run_id": "new"})).expect("ctx"),
        )
        .await
        .expect("submit after upgrade");
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("watcher");
    assert_eq!(
        misses.load(Ordering::SeqCst),
        0,
        "the name was never missing"
    );
    assert!(checks.load(Ordering::SeqCst) > 0);

    let old = runner
        .wait(old_run, Some(Duration::from_secs(60)))
        .await
        .expect("old run");
    let new = runner
        .wait(new_run, Some(Duration::from_secs(60)))
        .await
        .expect("new run");
    assert_eq!(
        (old.status, new.status),
        (ExecutionStatus::Completed, ExecutionStatus::Completed)
    );
    let (old_rec, new_rec) = (
        runner.execution(old_run).await.expect("rec"),
        runner.execution(new_run).await.expect("rec"),
    );
    assert_eq!(old_rec.package_id.as_deref(), Some("v1"));
    assert_eq!(old_rec.workflow_version, old_version);
    assert_eq!(new_rec.package_id.as_deref(), Some("v2"));
    assert_ne!(new_rec.workflow_version, old_version);
    assert_eq!(
        runner
            .catalog()
            .iter()
            .find(|c| c.name == "orders")
            .and_then(|c| c.package_id.clone()),
        Some("v2".to_string())
    );
    assert!(h.reconciler.status("v1").is_none());
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// Recipe 5: a restart (new runtime, same database) rebuilds everything from the desired set,
/// without duplicating what the database already holds.
async fn restart_rebuilds_from_the_desired_set(db: &TestDb) {
    let desired = || {
        vec![
            package("scheduled-reports", "sched"),
            package("price-publisher", "pub"),
        ]
    };
    {
        let h = harness(db).await;
        h.reconciler.reconcile(desired()).await;
        h.rt().triggers.stop().await;
        h.rt().cron.stop().await;
        h.rt().runner.shutdown().await.expect("shutdown");
    }
    let h = harness(db).await;
    let report = h.reconciler.reconcile(desired()).await;
    assert_eq!(report.loaded.len(), 2, "{report:?}");
    assert_eq!(
        cron_rows(&h, "sched").await,
        1,
        "schedules are upserted, not duplicated"
    );
    assert!(h.rt().runner.workflows().contains(&"report".to_string()));
    assert!(graph_names(&h).contains(&"price_summary".to_string()));
    assert!(
        h.reconciler
            .cron_orphans_delete()
            .await
            .expect("sweep")
            .is_empty(),
        "nothing to sweep while the package is present"
    );
    h.rt().cron.stop().await;
    h.rt().triggers.stop().await;
    h.rt().runner.shutdown().await.expect("shutdown");
    drop(h);

    // Restarted without the scheduling package (its file went away while down): its cron rows
    // are orphans, and the sweep after the first pass deletes them.
    let h = harness(db).await;
    let report = h
        .reconciler
        .reconcile(vec![package("price-publisher", "pub")])
        .await;
    assert_eq!(report.loaded, vec!["pub".to_string()], "{report:?}");
    assert_eq!(cron_rows(&h, "sched").await, 1, "left behind by the crash");
    assert_eq!(
        h.reconciler.cron_orphans_delete().await.expect("sweep"),
        vec!["sched".to_string()]
    );
    assert_eq!(cron_rows(&h, "sched").await, 0);
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// A load that fails is rolled back, recorded, and retried with backoff rather than every pass.
async fn failed_loads_back_off(db: &TestDb) {
    let h = harness(db).await;
    let dir = tempfile::tempdir().expect("tmp");
    let bogus = dir.path().join("broken-1.0.0.cloacina");
    std::fs::write(&bogus, b"not a gzip tar").expect("write");
    let broken = DesiredPackage {
        id: "broken".into(),
        tenant: "public".into(),
        source: PackageSource::Archive(bogus),
    };
    let report = h.reconciler.reconcile(vec![broken.clone()]).await;
    assert_eq!(report.failed, vec!["broken".to_string()]);
    let s = h.reconciler.status("broken").expect("recorded");
    assert_eq!((s.state, s.attempts), (PackageState::Failed, 1));
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("broken-1.0.0.cloacina"),
        "{s:?}"
    );
    assert!(s.retry_in_ms.unwrap_or(0) > 0);
    let report = h.reconciler.reconcile(vec![broken]).await;
    assert!(
        report.failed.is_empty(),
        "not retried before its backoff: {report:?}"
    );
    assert_eq!(h.reconciler.status("broken").expect("recorded").attempts, 1);
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// hello-orders version 2.0.0, loaded as desired package `v2`.
fn upgraded_hello_orders() -> DesiredPackage {
    let (dir, library) = common_packages::hello_orders_v2();
    let cache = common_packages::target_dir().join("loader-cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    DesiredPackage {
        id: "v2".into(),
        tenant: "public".into(),
        source: PackageSource::Loaded(loader::load_dir(dir, library, &cache).expect("v2 loads")),
    }
}

/// Makes the database refuse deletes of cron schedule rows (an injected fault for step 6).
async fn refuse_cron_deletes(db: &TestDb, on: bool) {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    match db.backend {
        common::Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://").to_string();
            let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                diesel::SqliteConnection,
            >::establish(&path)
            .await
            .expect("connect");
            let sql = if on {
                "PRAGMA busy_timeout = 10000; CREATE TRIGGER IF NOT EXISTS refuse_cron_delete BEFORE DELETE ON cron_schedules \
                 BEGIN SELECT RAISE(ABORT, 'injected fault: database unavailable'); END;"
            } else {
                "PRAGMA busy_timeout = 10000; DROP TRIGGER IF EXISTS refuse_cron_delete;"
            };
            c.batch_execute(sql).await.expect("trigger");
        }
        common::Backend::Postgres => {
            let mut c = diesel_async::AsyncPgConnection::establish(&db.url)
                .await
                .expect("connect");
            let sql = if on {
                format!(
                    "SET search_path TO \"{s}\"; \
                     CREATE OR REPLACE FUNCTION refuse_cron_delete() RETURNS trigger AS $$ BEGIN \
                     RAISE EXCEPTION 'injected fault: database unavailable'; END $$ LANGUAGE plpgsql; \
                     CREATE TRIGGER refuse_cron_delete BEFORE DELETE ON cron_schedules FOR EACH ROW EXECUTE FUNCTION refuse_cron_delete();",
                    s = db.schema
                )
            } else {
                format!(
                    "SET search_path TO \"{s}\"; DROP TRIGGER IF EXISTS refuse_cron_delete ON cron_schedules;",
                    s = db.schema
                )
            };
            c.batch_execute(&sql).await.expect("trigger");
        }
    }
}

/// Workflow names served per package id, from the catalog.
fn served_by(h: &Harness, workflow: &str) -> Option<String> {
    h.rt()
        .runner
        .catalog()
        .iter()
        .find(|c| c.name == workflow)
        .and_then(|c| c.package_id.clone())
}

/// One version per package name: of two desired packages with the same name and version, the
/// first is served and the other is superseded (never loaded: one set of cron rows); removing
/// the served one falls back to the other without a moment where the workflow is unserved, and
/// dropping the first again leaves the one now serving in place (equal versions: the serving
/// one stays).
async fn equal_versions_serve_one_and_fall_back(db: &TestDb) {
    let h = harness(db).await;
    let report = h
        .reconciler
        .reconcile(vec![package("heartbeat", "a"), package("heartbeat", "b")])
        .await;
    assert_eq!(report.loaded, vec!["a".to_string()], "{report:?}");
    assert_eq!((cron_rows(&h, "a").await, cron_rows(&h, "b").await), (1, 0));
    let b = h.reconciler.status("b").expect("reported");
    assert_eq!(b.state, PackageState::Superseded);
    assert_eq!(
        (b.name.as_deref(), b.version.as_deref()),
        (Some("heartbeat"), Some("1.0.0"))
    );
    assert!(
        b.superseded_by.as_deref().unwrap_or("").contains("a"),
        "{b:?}"
    );
    assert_eq!(served_by(&h, "beat").as_deref(), Some("a"));

    // The served one goes: the other takes over through the upgrade path.
    let report = h
        .reconciler
        .reconcile(vec![package("heartbeat", "b")])
        .await;
    assert_eq!(
        report.upgraded,
        vec![("a".to_string(), "b".to_string())],
        "{report:?}"
    );
    assert_eq!((cron_rows(&h, "a").await, cron_rows(&h, "b").await), (0, 1));
    assert_eq!(served_by(&h, "beat").as_deref(), Some("b"));
    assert!(h.reconciler.status("a").is_none());

    // It comes back: equal version, so the serving one stays and it is superseded.
    let report = h
        .reconciler
        .reconcile(vec![package("heartbeat", "a"), package("heartbeat", "b")])
        .await;
    assert!(
        report.loaded.is_empty() && report.upgraded.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        h.reconciler.status("a").map(|s| s.state),
        Some(PackageState::Superseded)
    );
    assert_eq!((cron_rows(&h, "a").await, cron_rows(&h, "b").await), (0, 1));
    h.rt().cron.stop().await;
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// Two copies of a package with a custom-poll trigger and a cron schedule: one trigger
/// registered, one set of cron rows; removing the served copy moves both to the other.
async fn duplicates_register_one_trigger(db: &TestDb) {
    let h = harness(db).await;
    let triggers = |h: &Harness| {
        h.rt()
            .triggers
            .triggers_list()
            .iter()
            .filter(|t| t.name == "inbox_watch")
            .count()
    };
    h.reconciler
        .reconcile(vec![
            package("scheduled-reports", "r1"),
            package("scheduled-reports", "r2"),
        ])
        .await;
    assert_eq!(triggers(&h), 1);
    assert_eq!(
        (cron_rows(&h, "r1").await, cron_rows(&h, "r2").await),
        (1, 0)
    );
    let report = h
        .reconciler
        .reconcile(vec![package("scheduled-reports", "r2")])
        .await;
    assert_eq!(report.upgraded, vec![("r1".to_string(), "r2".to_string())]);
    assert_eq!(triggers(&h), 1);
    assert_eq!(
        (cron_rows(&h, "r1").await, cron_rows(&h, "r2").await),
        (0, 1)
    );
    h.rt().triggers.stop().await;
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// A higher version beside the served one is an upgrade (the lower one is then superseded);
/// removing the higher one falls back to the lower one; neither step leaves the workflow name
/// unserved.
async fn higher_version_upgrades_and_removal_falls_back(db: &TestDb) {
    let h = harness(db).await;
    h.reconciler
        .reconcile(vec![package("hello-orders", "v1")])
        .await;
    let runner = h.rt().runner.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let misses = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (runner, stop, misses) = (runner.clone(), stop.clone(), misses.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if runner.workflow("orders").is_none() {
                    misses.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // Both present: the higher one is served, whatever the order.
    let report = h
        .reconciler
        .reconcile(vec![upgraded_hello_orders(), package("hello-orders", "v1")])
        .await;
    assert_eq!(
        report.upgraded,
        vec![("v1".to_string(), "v2".to_string())],
        "{report:?}"
    );
    assert_eq!(served_by(&h, "orders").as_deref(), Some("v2"));
    let v1 = h.reconciler.status("v1").expect("reported");
    assert_eq!(v1.state, PackageState::Superseded, "{v1:?}");
    assert!(
        v1.superseded_by.as_deref().unwrap_or("").contains("2.0.0"),
        "{v1:?}"
    );
    // The higher one goes: back to the lower one.
    let report = h
        .reconciler
        .reconcile(vec![package("hello-orders", "v1")])
        .await;
    assert_eq!(
        report.upgraded,
        vec![("v2".to_string(), "v1".to_string())],
        "{report:?}"
    );
    assert_eq!(served_by(&h, "orders").as_deref(), Some("v1"));
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("watcher");
    assert_eq!(
        misses.load(Ordering::SeqCst),
        0,
        "the name was never missing"
    );
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// hello-orders' source with `version` in its manifest, packed with a library that is not a
/// library at all: any attempt to open it fails.
fn broken_hello_orders(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let ex = example("hello-orders");
    let src = dir.join(format!("src-{version}"));
    std::fs::create_dir_all(src.join("src")).expect("mkdir");
    for f in ["Cargo.toml", "src/lib.rs"] {
        std::fs::copy(ex.dir.join(f), src.join(f)).expect("copy");
    }
    let manifest = std::fs::read_to_string(ex.dir.join("package.toml"))
        .expect("manifest")
        .replace("version = \"1.0.0\"", &format!("version = \"{version}\""));
    std::fs::write(src.join("package.toml"), manifest).expect("write");
    let lib = dir.join(library_file_name("hello-orders"));
    std::fs::write(&lib, b"not a shared library").expect("write");
    let out = dir.join(format!("hello-orders-{version}.cloacina"));
    cloacina::package::archive::pack(
        &src,
        &[(cloacina::package::archive::HOST_TARGET.to_string(), lib)],
        &out,
    )
    .expect("pack");
    out
}

fn library_file_name(crate_name: &str) -> String {
    cloacina::package::archive::library_file_name(crate_name)
}

/// A lower version is superseded without being opened (its library is broken, and it is not
/// reported as failed); a failed load shows the name and version its manifest states.
async fn superseded_archives_are_never_opened(db: &TestDb) {
    let h = harness(db).await;
    let dir = tempfile::tempdir().expect("tmp");
    let old = DesiredPackage {
        id: "old".into(),
        tenant: "public".into(),
        source: PackageSource::Archive(broken_hello_orders(dir.path(), "0.9.0")),
    };
    let report = h
        .reconciler
        .reconcile(vec![old.clone(), package("hello-orders", "v1")])
        .await;
    assert_eq!(report.loaded, vec!["v1".to_string()], "{report:?}");
    assert!(report.failed.is_empty(), "never opened: {report:?}");
    let s = h.reconciler.status("old").expect("reported");
    assert_eq!(
        (s.state, s.version.as_deref(), s.last_error.as_deref()),
        (PackageState::Superseded, Some("0.9.0"), None)
    );
    // A higher broken version is opened, fails, and the served one stays.
    let new = DesiredPackage {
        id: "new".into(),
        tenant: "public".into(),
        source: PackageSource::Archive(broken_hello_orders(dir.path(), "3.0.0")),
    };
    let report = h
        .reconciler
        .reconcile(vec![new, package("hello-orders", "v1")])
        .await;
    assert_eq!(report.failed, vec!["new".to_string()], "{report:?}");
    let s = h.reconciler.status("new").expect("reported");
    assert_eq!(
        (s.state, s.name.as_deref(), s.version.as_deref()),
        (PackageState::Failed, Some("hello-orders"), Some("3.0.0")),
        "the manifest's name and version: {s:?}"
    );
    assert_eq!(served_by(&h, "orders").as_deref(), Some("v1"));
    assert_eq!(
        h.reconciler.status("v1").map(|s| s.state),
        Some(PackageState::Loaded)
    );
    h.rt().runner.shutdown().await.expect("shutdown");
}

/// A file removed between the scan and its load is not a failure; a file too large to be an
/// archive fails at once with the limit in the message, without being read.
async fn vanished_and_oversized_files(db: &TestDb) {
    let h = harness(db).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gone = DesiredPackage {
        id: "gone".into(),
        tenant: "public".into(),
        source: PackageSource::Archive(dir.path().join("gone-1.0.0.cloacina")),
    };
    let report = h.reconciler.reconcile(vec![gone]).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(h.reconciler.status("gone").is_none());

    let huge_path = dir.path().join("huge.cloacina");
    let f = std::fs::File::create(&huge_path).expect("create");
    f.set_len(cloacina::package::archive::MAX_ARCHIVE_BYTES + 1)
        .expect("sparse file");
    let huge = DesiredPackage {
        id: "huge".into(),
        tenant: "public".into(),
        source: PackageSource::Archive(huge_path),
    };
    let started = std::time::Instant::now();
    let report = h.reconciler.reconcile(vec![huge]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.failed, vec!["huge".to_string()]);
    let error = h
        .reconciler
        .status("huge")
        .and_then(|s| s.last_error)
        .unwrap_or_default();
    assert!(
        error.contains("huge.cloacina") && error.contains("MAX_ARCHIVE_BYTES"),
        "{error}"
    );
    h.rt().runner.shutdown().await.expect("shutdown");
}

conformance!(
    standalone_unload_removes_everything,
    guard_refuses_then_subscriber_first_succeeds,
    removing_both_in_one_pass_unloads_both,
    subscriber_waits_for_its_publisher,
    partial_unload_is_recorded_and_a_rerun_completes_it,
    upgrade_keeps_serving_and_in_flight_runs_finish_on_old_code,
    restart_rebuilds_from_the_desired_set,
    failed_loads_back_off,
    equal_versions_serve_one_and_fall_back,
    duplicates_register_one_trigger,
    higher_version_upgrades_and_removal_falls_back,
    superseded_archives_are_never_opened,
    vanished_and_oversized_files,
);
