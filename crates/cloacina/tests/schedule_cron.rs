//! Cron schedules against real databases (SQLite and PostgreSQL): per-second schedules fire
//! their workflow, two schedulers on one database never fire an instant twice, `run_all`
//! catches up to its cap after a gap (on start-up too), `skip` drops missed instants, writes are
//! idempotent, deletes remove rows, and the sweep repairs lost schedules. Gaps are simulated
//! with a manual clock rather than by sleeping.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloacina::schedule::cron::{CronConfig, CronScheduler};
use cloacina::schedule::{Clock, ManualClock, ScheduleError};
use cloacina::store::{
    CronScheduleRecord, ExecutionFilter, ExecutionStatus, INPUT_CONTEXT, Millis, Store,
};
use cloacina::workflow::package::CronDescription;
use cloacina::workflow::{CatchUp, Context, FnTask, Task, TaskError, TaskSpec, Workflow};
use cloacina::{Runner, RunnerConfig};
use common::TestDb;

const MIN: Millis = 60_000;
/// 2026-01-01T10:00:30Z: thirty seconds past a minute.
const T0: Millis = 1_767_261_630_000;

fn tick_workflow() -> Workflow {
    let task: Arc<dyn Task> = Arc::new(FnTask::new(TaskSpec::new("tock"), |_ctx: &mut Context| {
        Box::pin(async { Ok::<(), TaskError>(()) })
    }));
    Workflow::new("tick", None, vec![task]).expect("valid workflow")
}

async fn runner(store: &Store) -> Runner {
    let r = Runner::start(
        store.clone(),
        RunnerConfig {
            poll_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(5),
            ..RunnerConfig::default()
        },
    )
    .await
    .expect("runner");
    r.register(tick_workflow());
    r
}

fn cron(name: &str, expression: &str, catch_up: CatchUp) -> CronDescription {
    CronDescription {
        name: name.to_string(),
        workflow: "tick".to_string(),
        expression: expression.to_string(),
        timezone: "UTC".to_string(),
        catch_up,
    }
}

fn fast(config: CronConfig) -> CronConfig {
    CronConfig {
        tick: Duration::from_millis(25),
        ..config
    }
}

/// One scheduler with its own store and runner (a "process") on the test database.
struct Node {
    store: Store,
    runner: Runner,
    cron: CronScheduler,
}

async fn node(db: &TestDb, config: CronConfig, clock: Option<Arc<ManualClock>>) -> Node {
    let store = db.open().await;
    let runner = runner(&store).await;
    let cron = match clock {
        Some(c) => CronScheduler::with_clock(
            store.clone(),
            runner.clone(),
            fast(config),
            c as Arc<dyn Clock>,
        ),
        None => CronScheduler::new(store.clone(), runner.clone(), fast(config)),
    };
    Node {
        store,
        runner,
        cron,
    }
}

/// The `cron.instant` of every run of `tick`, with how many runs had it.
async fn runs_per_instant(store: &Store) -> BTreeMap<String, usize> {
    let runs = store
        .execution_list(ExecutionFilter {
            workflow: Some("tick".into()),
            limit: Some(10_000),
            ..ExecutionFilter::default()
        })
        .await
        .expect("list");
    let mut out = BTreeMap::new();
    for r in runs {
        let input = store
            .context_get(r.id, INPUT_CONTEXT)
            .await
            .expect("ctx")
            .expect("input");
        let instant = input
            .get_value("cron")
            .and_then(|c| c.get("instant"))
            .and_then(|i| i.as_str())
            .expect("cron.instant")
            .to_string();
        *out.entry(instant).or_insert(0) += 1;
    }
    out
}

fn rfc(t: Millis) -> String {
    cloacina::schedule::CronExpr::parse("* * * * *", "UTC")
        .expect("expr")
        .rfc3339(t)
        .0
}

async fn schedule(cron: &CronScheduler, name: &str) -> CronScheduleRecord {
    cron.schedules_list()
        .await
        .expect("list")
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("schedule {name} is stored"))
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------

async fn per_second_schedule_fires_its_workflow(db: &TestDb) {
    let n = node(db, CronConfig::default(), None).await;
    n.cron
        .schedules_write(
            "pkg",
            "public",
            &[cron("every_second", "*/1 * * * * *", CatchUp::Skip)],
        )
        .await
        .expect("write");
    n.cron.start();
    n.cron.start(); // a second start is a no-op
    let store = n.store.clone();
    wait_until("three completed runs", Duration::from_secs(20), || {
        let store = store.clone();
        async move {
            store
                .execution_list(ExecutionFilter {
                    workflow: Some("tick".into()),
                    status: Some(ExecutionStatus::Completed),
                    ..ExecutionFilter::default()
                })
                .await
                .expect("list")
                .len()
                >= 3
        }
    })
    .await;
    n.cron.stop().await;
    n.cron.stop().await; // idempotent
    assert!(!n.cron.is_running());
    let runs = runs_per_instant(&n.store).await;
    assert!(runs.values().all(|&c| c == 1), "{runs:?}");
    // The context names the schedule and the instant, a whole second in RFC 3339 UTC.
    let any = n
        .store
        .execution_list(ExecutionFilter::default())
        .await
        .expect("list")
        .remove(0);
    let input = n
        .store
        .context_get(any.id, INPUT_CONTEXT)
        .await
        .expect("ctx")
        .expect("input");
    let c = input.get_value("cron").expect("cron key").clone();
    assert_eq!(c["schedule"], "every_second");
    assert_eq!(c["timezone"], "UTC");
    assert_eq!(c["package_id"], "pkg");
    let instant = c["instant"].as_str().expect("instant");
    assert!(instant.ends_with('Z') && instant.len() == 20, "{instant}");
    // Fire records match the runs.
    let s = schedule(&n.cron, "every_second").await;
    let fires = n
        .store
        .cron_fire_list(Some(s.id), 1000)
        .await
        .expect("fires");
    assert_eq!(fires.len(), runs.len());
    assert!(n.cron.counters().fired as usize >= runs.len());
    n.runner.shutdown().await.expect("shutdown");
}

async fn two_schedulers_never_fire_an_instant_twice(db: &TestDb) {
    let a = node(db, CronConfig::default(), None).await;
    let b = node(db, CronConfig::default(), None).await;
    let decl = [cron("every_second", "* * * * * *", CatchUp::Skip)];
    // Both "replicas" write the same package: one row.
    a.cron
        .schedules_write("pkg", "public", &decl)
        .await
        .expect("write a");
    b.cron
        .schedules_write("pkg", "public", &decl)
        .await
        .expect("write b");
    assert_eq!(a.cron.schedules_list().await.expect("list").len(), 1);
    a.cron.start();
    b.cron.start();
    tokio::time::sleep(Duration::from_millis(4_200)).await;
    a.cron.stop().await;
    b.cron.stop().await;
    let runs = runs_per_instant(&a.store).await;
    assert!(runs.len() >= 3, "at least three instants fired: {runs:?}");
    let doubles: Vec<_> = runs.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        doubles.is_empty(),
        "instants fired more than once: {doubles:?}"
    );
    let (ca, cb) = (a.cron.counters(), b.cron.counters());
    assert_eq!((ca.fired + cb.fired) as usize, runs.len(), "{ca:?} {cb:?}");
    a.runner.shutdown().await.expect("shutdown a");
    b.runner.shutdown().await.expect("shutdown b");
}

async fn racing_catch_up_passes_share_the_instants(db: &TestDb) {
    // Two schedulers see the same backlog at the same moment and both try to fire all of it.
    let clock = ManualClock::new(T0);
    let a = node(db, CronConfig::default(), Some(clock.clone())).await;
    let b = node(db, CronConfig::default(), Some(clock.clone())).await;
    a.cron
        .schedules_write(
            "pkg",
            "public",
            &[cron("minutely", "* * * * *", CatchUp::RunAll { max: 10 })],
        )
        .await
        .expect("write");
    clock.advance(Duration::from_secs(5 * 60)); // 10:01 .. 10:05 are due
    let (ra, rb) = tokio::join!(a.cron.run_once(), b.cron.run_once());
    let (ra, rb) = (ra.expect("pass a"), rb.expect("pass b"));
    let mut fired: Vec<Millis> = ra
        .fired
        .iter()
        .chain(rb.fired.iter())
        .map(|f| f.1)
        .collect();
    fired.sort();
    let start = T0 + 30_000; // 10:01:00
    assert_eq!(fired, (0..5).map(|i| start + i * MIN).collect::<Vec<_>>());
    let runs = runs_per_instant(&a.store).await;
    assert_eq!(runs.len(), 5);
    assert!(runs.values().all(|&c| c == 1), "{runs:?}");
}

async fn run_all_catches_up_to_its_cap_after_a_gap(db: &TestDb) {
    let clock = ManualClock::new(T0);
    let n = node(db, CronConfig::default(), Some(clock.clone())).await;
    n.cron
        .schedules_write(
            "pkg",
            "public",
            &[
                cron("three", "* * * * *", CatchUp::RunAll { max: 3 }),
                cron("fifty", "* * * * *", CatchUp::RunAll { max: 50 }),
            ],
        )
        .await
        .expect("write");
    let first = T0 + 30_000; // 10:01:00
    assert_eq!(schedule(&n.cron, "three").await.next_run_at, first);
    // A gap: ten instants (10:01 .. 10:10) pass with nobody running.
    clock.advance(Duration::from_secs(10 * 60));
    let report = n.cron.run_once().await.expect("pass");
    let three: Vec<Millis> = report
        .fired
        .iter()
        .filter(|f| f.0 == "three")
        .map(|f| f.1)
        .collect();
    assert_eq!(
        three,
        vec![first + 7 * MIN, first + 8 * MIN, first + 9 * MIN],
        "the most recent three, oldest first"
    );
    let fifty = report.fired.iter().filter(|f| f.0 == "fifty").count();
    assert_eq!(fifty, 10, "within its cap everything runs");
    assert_eq!(report.missed, 7);
    let s = schedule(&n.cron, "three").await;
    assert_eq!(
        (s.next_run_at, s.last_run_at, s.missed_count),
        (first + 10 * MIN, Some(first + 9 * MIN), 7)
    );
    // Catch-up runs were created in instant order and say they are catch-up runs.
    let runs = n
        .store
        .execution_list(ExecutionFilter {
            limit: Some(100),
            ..ExecutionFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(runs.len(), 13);
    let latest = n
        .store
        .context_get(runs[0].id, INPUT_CONTEXT)
        .await
        .expect("ctx")
        .expect("input");
    assert_eq!(latest.get_value("cron").expect("cron")["catch_up"], true);
    // Nothing more is due until the next instant; then it fires on time.
    assert!(n.cron.run_once().await.expect("pass").fired.is_empty());
    clock.set(first + 10 * MIN + 200);
    let report = n.cron.run_once().await.expect("pass");
    assert_eq!(report.fired.len(), 2);
    assert_eq!(report.missed, 0);
}

async fn configured_max_catchup_lowers_the_cap(db: &TestDb) {
    let clock = ManualClock::new(T0);
    let config = CronConfig {
        max_catchup: Some(2),
        ..CronConfig::default()
    };
    let n = node(db, config, Some(clock.clone())).await;
    n.cron
        .schedules_write(
            "pkg",
            "public",
            &[cron("five", "* * * * *", CatchUp::RunAll { max: 5 })],
        )
        .await
        .expect("write");
    clock.advance(Duration::from_secs(10 * 60));
    let report = n.cron.run_once().await.expect("pass");
    assert_eq!(report.fired.len(), 2);
    assert_eq!(report.missed, 8);
}

async fn catch_up_happens_on_start_up(db: &TestDb) {
    let clock = ManualClock::new(T0);
    let decl = [cron("three", "* * * * *", CatchUp::RunAll { max: 3 })];
    {
        // First process: writes the schedule, fires nothing, goes away.
        let first = node(db, CronConfig::default(), Some(clock.clone())).await;
        first
            .cron
            .schedules_write("pkg", "public", &decl)
            .await
            .expect("write");
        first.runner.shutdown().await.expect("shutdown");
    }
    clock.advance(Duration::from_secs(60 * 60)); // down for an hour
    // The next process: the reconciler writes the (unchanged) schedule again and starts the
    // scheduler; the missed window is handled by the policy straight away.
    let n = node(db, CronConfig::default(), Some(clock.clone())).await;
    n.cron
        .schedules_write("pkg", "public", &decl)
        .await
        .expect("rewrite keeps the cursor");
    assert_eq!(schedule(&n.cron, "three").await.next_run_at, T0 + 30_000);
    n.cron.start();
    let store = n.store.clone();
    wait_until("the catch-up runs", Duration::from_secs(10), || {
        let store = store.clone();
        async move { runs_per_instant(&store).await.len() == 3 }
    })
    .await;
    n.cron.stop().await;
    let runs = runs_per_instant(&n.store).await;
    let last = T0 + 30_000 + 59 * MIN; // 11:00:00
    let expected: Vec<String> = (0..3).rev().map(|i| rfc(last - i * MIN)).collect();
    assert_eq!(runs.keys().cloned().collect::<Vec<_>>(), expected);
    assert_eq!(schedule(&n.cron, "three").await.missed_count, 57);
    n.runner.shutdown().await.expect("shutdown");
}

async fn skip_drops_missed_instants_after_a_gap(db: &TestDb) {
    let clock = ManualClock::new(T0);
    let n = node(db, CronConfig::default(), Some(clock.clone())).await;
    n.cron
        .schedules_write(
            "pkg",
            "public",
            &[cron("hourly_ish", "* * * * *", CatchUp::Skip)],
        )
        .await
        .expect("write");
    // At 11:01:30, 61 instants (10:01 .. 11:01) were missed; none fires.
    clock.advance(Duration::from_secs(61 * 60));
    let report = n.cron.run_once().await.expect("pass");
    assert!(report.fired.is_empty(), "{report:?}");
    assert_eq!(report.missed, 61);
    let s = schedule(&n.cron, "hourly_ish").await;
    let next = T0 + 30_000 + 61 * MIN; // 11:02:00, the next future instant
    assert_eq!(
        (s.next_run_at, s.last_run_at, s.missed_count),
        (next, None, 61)
    );
    assert!(runs_per_instant(&n.store).await.is_empty());
    // The next instant, on time: it fires, as an ordinary (not catch-up) run.
    clock.set(next + 300);
    let report = n.cron.run_once().await.expect("pass");
    assert_eq!(report.fired.len(), 1);
    assert_eq!(report.fired[0].1, next);
    let input = n
        .store
        .context_get(report.fired[0].2, INPUT_CONTEXT)
        .await
        .expect("ctx")
        .expect("input");
    assert_eq!(input.get_value("cron").expect("cron")["catch_up"], false);
    assert_eq!(input.get_value("cron").expect("cron")["instant"], rfc(next));
}

async fn schedules_write_is_idempotent_and_delete_removes_rows(db: &TestDb) {
    let clock = ManualClock::new(T0);
    let n = node(db, CronConfig::default(), Some(clock.clone())).await;
    let both = [
        cron("a", "0 2 * * *", CatchUp::Skip),
        cron("b", "*/5 * * * *", CatchUp::RunAll { max: 2 }),
    ];
    n.cron
        .schedules_write("pkg", "public", &both)
        .await
        .expect("write");
    let first = n.cron.schedules_list().await.expect("list");
    clock.advance(Duration::from_secs(3));
    n.cron
        .schedules_write("pkg", "public", &both)
        .await
        .expect("write again");
    assert_eq!(
        n.cron.schedules_list().await.expect("list"),
        first,
        "nothing changed"
    );
    // An Amsterdam schedule: 02:00 local on 2 January is 01:00 UTC.
    let mut ams = cron("a", "0 2 * * *", CatchUp::Skip);
    ams.timezone = "Europe/Amsterdam".into();
    n.cron
        .schedules_write("pkg", "public", &[ams])
        .await
        .expect("rewrite");
    let rows = n.cron.schedules_list().await.expect("list");
    assert_eq!(rows.len(), 1, "b is no longer declared");
    assert_eq!(rows[0].timezone, "Europe/Amsterdam");
    assert_eq!(rfc(rows[0].next_run_at), "2026-01-02T01:00:00Z");
    // Invalid declarations are refused whole, with the schedule named.
    let err = n
        .cron
        .schedules_write(
            "pkg",
            "public",
            &[
                cron("ok", "* * * * *", CatchUp::Skip),
                cron("broken", "61 * * * *", CatchUp::Skip),
            ],
        )
        .await
        .expect_err("invalid");
    assert!(
        matches!(err, ScheduleError::InvalidSchedule { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("cron schedule 'broken': expression '61 * * * *' is not valid"),
        "{err}"
    );
    let mut bad_zone = cron("z", "* * * * *", CatchUp::Skip);
    bad_zone.timezone = "Moon/Base".into();
    let err = n
        .cron
        .schedules_write("pkg", "public", &[bad_zone])
        .await
        .expect_err("zone");
    assert!(
        err.to_string()
            .contains("'Moon/Base' is not an IANA time zone name"),
        "{err}"
    );
    let err = n
        .cron
        .schedules_write(
            "pkg",
            "public",
            &[cron("never", "0 0 30 2 *", CatchUp::Skip)],
        )
        .await
        .expect_err("never fires");
    assert!(err.to_string().contains("has no instant"), "{err}");
    let err = n
        .cron
        .schedules_write(
            "pkg",
            "public",
            &[
                cron("d", "* * * * *", CatchUp::Skip),
                cron("d", "* * * * *", CatchUp::Skip),
            ],
        )
        .await
        .expect_err("duplicate");
    assert!(matches!(err, ScheduleError::DuplicateName { .. }), "{err}");
    let err = n
        .cron
        .schedules_write(
            "pkg",
            "public",
            &[cron("zero", "* * * * *", CatchUp::RunAll { max: 0 })],
        )
        .await
        .expect_err("cap 0");
    assert!(err.to_string().contains("cap of at least 1"), "{err}");
    assert_eq!(
        n.cron.schedules_list().await.expect("list").len(),
        1,
        "refused writes changed nothing"
    );
    // Delete: the rows go, a second delete finds nothing, and nothing fires any more.
    assert_eq!(n.cron.schedules_delete("pkg").await.expect("delete"), 1);
    assert_eq!(
        n.cron.schedules_delete("pkg").await.expect("delete again"),
        0
    );
    assert_eq!(
        n.cron
            .schedules_delete("never-loaded")
            .await
            .expect("unknown package"),
        0
    );
    assert!(n.cron.schedules_list().await.expect("list").is_empty());
    clock.advance(Duration::from_secs(2 * 86_400));
    assert!(n.cron.run_once().await.expect("pass").fired.is_empty());
}

async fn sweep_repairs_lost_schedules(db: &TestDb) {
    let clock = ManualClock::new(T0);
    let n = node(db, CronConfig::default(), Some(clock.clone())).await;
    let mut skip = cron("lost_skip", "* * * * *", CatchUp::Skip);
    skip.workflow = "served_elsewhere".into();
    let mut all = cron("lost_all", "* * * * *", CatchUp::RunAll { max: 2 });
    all.workflow = "served_elsewhere".into();
    n.cron
        .schedules_write("pkg", "public", &[skip, all])
        .await
        .expect("write");
    clock.advance(Duration::from_secs(30 * 60));
    // This runner does not serve the workflow: the pass leaves the schedules alone.
    let report = n.cron.run_once().await.expect("pass");
    assert!(report.fired.is_empty());
    assert_eq!(report.waiting.len(), 2);
    // Past the lost threshold (10 min), the sweep repairs them by policy.
    let sweep = n.cron.sweep_once().await.expect("sweep");
    assert_eq!(sweep.repaired.len(), 2, "{sweep:?}");
    let first = T0 + 30_000;
    let s = schedule(&n.cron, "lost_skip").await;
    assert_eq!((s.next_run_at, s.missed_count), (first + 30 * MIN, 30));
    let a = schedule(&n.cron, "lost_all").await;
    assert_eq!(
        (a.next_run_at, a.missed_count),
        (first + 28 * MIN, 28),
        "only the last two instants remain due"
    );
    // Repaired schedules are not lost any more.
    assert!(
        n.cron
            .sweep_once()
            .await
            .expect("sweep")
            .repaired
            .is_empty()
    );
    // Once the workflow is served here, the kept instants of run_all fire.
    let wf = Workflow::new(
        "served_elsewhere",
        None,
        vec![
            Arc::new(FnTask::new(TaskSpec::new("t"), |_c: &mut Context| {
                Box::pin(async { Ok::<(), TaskError>(()) })
            })) as Arc<dyn Task>,
        ],
    )
    .expect("wf");
    n.runner.register(wf);
    let report = n.cron.run_once().await.expect("pass");
    let fired: Vec<&str> = report.fired.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(fired, ["lost_all", "lost_all"]);
}

/// `set_config` (a daemon reload) applies at once: a lower catch-up cap to the next pass, a
/// shorter lost threshold to the next sweep.
async fn new_settings_apply_to_the_next_pass_and_sweep(db: &TestDb) {
    let clock = ManualClock::new(T0);
    let n = node(db, CronConfig::default(), Some(clock.clone())).await;
    let mut lost = cron("lost_soon", "* * * * *", CatchUp::Skip);
    lost.workflow = "served_elsewhere".into();
    n.cron
        .schedules_write(
            "pkg",
            "public",
            &[cron("five", "* * * * *", CatchUp::RunAll { max: 5 }), lost],
        )
        .await
        .expect("write");
    clock.advance(Duration::from_secs(7 * 60));
    // Seven minutes behind: not lost under the default 10 min threshold.
    assert!(
        n.cron
            .sweep_once()
            .await
            .expect("sweep")
            .repaired
            .is_empty()
    );
    n.cron.set_config(fast(CronConfig {
        max_catchup: Some(2),
        lost_threshold: Duration::from_secs(5 * 60),
        ..CronConfig::default()
    }));
    assert_eq!(n.cron.config().max_catchup, Some(2));
    let sweep = n.cron.sweep_once().await.expect("sweep");
    let mut repaired: Vec<&str> = sweep.repaired.iter().map(|r| r.0.as_str()).collect();
    repaired.sort();
    assert_eq!(repaired, ["five", "lost_soon"], "the new threshold applies");
    let report = n.cron.run_once().await.expect("pass");
    assert_eq!(
        report.fired.len(),
        2,
        "the new cap (2, not the schedule's 5) applies: {report:?}"
    );
}

conformance!(
    per_second_schedule_fires_its_workflow,
    new_settings_apply_to_the_next_pass_and_sweep,
    two_schedulers_never_fire_an_instant_twice,
    racing_catch_up_passes_share_the_instants,
    run_all_catches_up_to_its_cap_after_a_gap,
    configured_max_catchup_lowers_the_cap,
    catch_up_happens_on_start_up,
    skip_drops_missed_instants_after_a_gap,
    schedules_write_is_idempotent_and_delete_removes_rows,
    sweep_repairs_lost_schedules,
);
