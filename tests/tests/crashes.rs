//! Crashes, end to end: `kill -9` of the daemon, and of a server replica on PostgreSQL, N times
//! in a row while runs, cron and a custom-poll trigger are active, each time restarted on the
//! same home. After the last restart: every run ends in a terminal state, no cron instant
//! started two runs, no trigger fire ran twice at once (its de-duplication key held), the
//! database is undamaged, and the package set is what the folder (or the database) says.
//!
//! `CLOACINA_CRASH_ROUNDS` sets N (3 by default, the short version CI runs); the long version
//! is documented in `docs/reliability.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use cloacina::daemon::discovery;
use cloacina::package::{archive, loader};
use cloacina::store::{ExecutionRecord, ExecutionStatus, Store};
use cloacina::workflow::Context;
use cloacina_e2e::Home;
use cloacina_e2e::faults;
use cloacina_e2e::home::{pack_example, package_names};
use cloacina_e2e::rows;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// N: how many times in a row the process is killed.
fn rounds() -> usize {
    std::env::var("CLOACINA_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(3)
}

fn terminal(s: ExecutionStatus) -> bool {
    matches!(
        s,
        ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled
    )
}

/// Runs of one de-duplication key never overlap: each starts after the one before finished.
fn assert_no_overlapping_trigger_runs(runs: &[ExecutionRecord], context: &str) {
    let mut by_key: BTreeMap<&str, Vec<&ExecutionRecord>> = BTreeMap::new();
    for r in runs {
        if let Some(k) = r.dedup_key.as_deref() {
            by_key.entry(k).or_default().push(r);
        }
    }
    for (key, mut list) in by_key {
        list.sort_by_key(|r| r.created_at);
        for pair in list.windows(2) {
            let ended = pair[0].completed_at.unwrap_or(i64::MAX);
            assert!(
                pair[1].created_at >= ended,
                "trigger fire {key} ran twice at once: {:?} and {:?}\n{context}",
                pair[0],
                pair[1]
            );
        }
    }
}

/// The daemon killed with SIGKILL `rounds()` times in a row, with the heartbeat cron (every
/// second, 1.5 s runs), the `inbox_watch` trigger (every 5 s) and slow `orders` runs active,
/// restarted on the same home each time.
#[test]
fn daemon_killed_repeatedly_loses_nothing_and_runs_nothing_twice() {
    let _s = serial();
    let n = rounds();
    let mut home = Home::new();
    std::fs::create_dir_all(home.packages_dir()).expect("packages dir");
    for name in ["heartbeat", "scheduled-reports", "hello-orders"] {
        pack_example(name, &home.packages_dir());
    }
    let orders_archive = home.packages_dir().join("hello-orders.cloacina");
    let sha = archive::sha256_file(&orders_archive).expect("hash");
    let package = loader::load_archive(&orders_archive, &home.path().join("test-cache"))
        .expect("load hello-orders");
    let orders = package.workflow("orders").expect("the orders workflow");
    let orders_package = Some(discovery::package_id(&sha));

    let started = Instant::now();
    let mut submitted = 0usize;
    for round in 0..n {
        home.start(&[]);
        // Work in flight when the kill comes: orders runs of 0.3-2 s, beats, trigger fires.
        let made = home.with_store(async |s: &Store| {
            let mut made = 0;
            for i in 0..4u64 {
                let mut input = Context::new();
                input.set("delay_ms", 300 + 500 * i).expect("input");
                input.set("run_id", format!("r{round}-{i}")).expect("input");
                rows::execution_ready(s, &orders, input, orders_package.clone()).await;
                made += 1;
            }
            s.close().await;
            made
        });
        submitted += made;
        let fires = home.cron_fires().len();
        // A varying moment: 2 to 4 more heartbeats.
        home.wait_for("more heartbeats fired", |h| {
            h.cron_fires().len() >= fires + 2 + round % 3
        });
        home.signal("KILL");
        assert_eq!(
            home.exit_code(),
            None,
            "killed by the signal\n{}",
            home.logs()
        );
        eprintln!(
            "round {}/{n}: killed after {:?}",
            round + 1,
            started.elapsed()
        );
    }

    // The last restart: everything created before it must end.
    home.start(&[]);
    let restarted_at = cloacina_now_ms();
    home.wait_for(
        "every run created before the last restart is terminal",
        |h| {
            h.executions()
                .iter()
                .filter(|e| e.created_at < restarted_at)
                .all(|e| terminal(e.status))
        },
    );
    let status = home.status();
    let out = home.ctl(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", home.context(&out));
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());

    let runs = home.executions();
    let logs = home.logs();
    let by = |w: &str| runs.iter().filter(|e| e.workflow_name == w).count();
    eprintln!(
        "{n} kills in {:?}: {} runs ({} orders of {submitted} submitted, {} beats, {} reports); \
         {} failed",
        started.elapsed(),
        runs.len(),
        by("orders"),
        by("beat"),
        by("report"),
        runs.iter()
            .filter(|e| e.status == ExecutionStatus::Failed)
            .count()
    );
    assert_eq!(
        by("orders"),
        submitted,
        "every submitted run is there\n{logs}"
    );
    let stragglers: Vec<&ExecutionRecord> = runs
        .iter()
        .filter(|e| e.created_at < restarted_at && !terminal(e.status))
        .collect();
    assert!(stragglers.is_empty(), "{stragglers:?}\n{logs}");

    // Cron: one run per fired instant, one fired instant per run.
    let fires = home.cron_fires();
    let instants: BTreeSet<(String, i64)> = fires
        .iter()
        .map(|f| (f.schedule_id.to_string(), f.instant))
        .collect();
    assert_eq!(
        instants.len(),
        fires.len(),
        "an instant fired twice: {fires:?}"
    );
    let fired_runs: BTreeSet<String> = fires.iter().map(|f| f.execution_id.to_string()).collect();
    assert_eq!(
        fired_runs.len(),
        fires.len(),
        "one run for two instants: {fires:?}"
    );
    let beats: BTreeSet<String> = runs
        .iter()
        .filter(|e| e.workflow_name == "beat")
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(
        beats, fired_runs,
        "every heartbeat run has exactly one fired instant and the reverse\n{logs}"
    );
    assert!(
        beats.len() >= 2 * n,
        "the heartbeat fired in every round: {}",
        beats.len()
    );

    // Trigger: fires of one key never ran at once.
    assert_no_overlapping_trigger_runs(&runs, &logs);

    // Packages: what the folder holds, all loaded.
    let mut names = package_names(&status);
    names.sort();
    assert_eq!(
        names,
        vec![
            ("heartbeat".to_string(), "loaded".to_string()),
            ("hello-orders".to_string(), "loaded".to_string()),
            ("scheduled-reports".to_string(), "loaded".to_string()),
        ],
        "{status}"
    );
    assert_eq!(
        faults::sqlite_integrity(&home.path().join("cloacina.db")),
        "ok"
    );
}

fn cloacina_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A server replica on PostgreSQL killed with SIGKILL `rounds()` times in a row, restarted on
/// the same home and port each time, while a second replica keeps serving, with the heartbeat
/// cron, the `inbox_watch` trigger and slow `orders` runs active. After the last restart: every
/// run ends in a terminal state, every cron instant has exactly one run (its input names that
/// instant), every trigger run comes from its own claimed poll slot and no de-duplication key
/// ran twice at once, and both replicas serve exactly the packages the database holds.
#[test]
fn server_replica_killed_repeatedly_loses_nothing_and_runs_nothing_twice() {
    use cloacina_e2e::replicas::{Database, Replica, wait_served};
    use serde_json::json;

    let _s = serial();
    let n = rounds();
    let Some(db) = Database::create("crashes") else {
        return;
    };
    let key = cloacina::auth::key_generate().plaintext;
    let mut a = Replica::start("A", &db, &key);
    let b = Replica::start("B", &db, &key);
    let scratch = tempfile::tempdir().expect("scratch");
    for name in ["heartbeat", "scheduled-reports", "hello-orders"] {
        let archive = pack_example(name, scratch.path());
        let (status, body) = a.upload("public", &archive, &key);
        assert_eq!(status, 201, "upload {name}: {body}\n{}", a.logs());
    }
    for w in ["beat", "report", "orders"] {
        wait_served(&b, "public", w, &key);
    }
    let logs = |a: &Replica, b: &Replica| format!("{}\n{}", a.logs(), b.logs());
    let fires = || db.count("SELECT count(*) FROM cron_fires");

    let started = Instant::now();
    let mut submitted = 0;
    for round in 0..n {
        for i in 0..3u64 {
            a.execute(
                "public",
                "orders",
                &key,
                json!({ "delay_ms": 300 + 700 * i, "run_id": format!("r{round}-{i}") }),
            );
            submitted += 1;
        }
        let at = fires();
        let more = 2 + (round % 3) as i64;
        cloacina_e2e::wait_for(
            "more heartbeats fired",
            || fires() >= at + more,
            || logs(&a, &b),
        );
        a.kill9();
        a.restart();
        eprintln!(
            "round {}/{n}: replica A killed and restarted after {:?}",
            round + 1,
            started.elapsed()
        );
    }
    let restarted_at = cloacina_now_ms();
    cloacina_e2e::wait_for(
        "every run created before the last restart is terminal",
        || {
            db.count(&format!(
                "SELECT count(*) FROM workflow_executions WHERE created_at < {restarted_at} \
                 AND status NOT IN ('Completed', 'Failed', 'Cancelled')"
            )) == 0
        },
        || logs(&a, &b),
    );
    let context = logs(&a, &b);
    let count = |w: &str| {
        db.count(&format!(
            "SELECT count(*) FROM workflow_executions WHERE workflow_name = '{w}'"
        ))
    };
    eprintln!(
        "{n} kills of replica A in {:?}: {} orders of {submitted} submitted, {} beats, {} \
         reports; {} failed",
        started.elapsed(),
        count("orders"),
        count("beat"),
        count("report"),
        db.count("SELECT count(*) FROM workflow_executions WHERE status = 'Failed'")
    );
    assert_eq!(
        count("orders"),
        submitted,
        "every accepted run is there\n{context}"
    );

    // Cron: one run per fired instant, and that run's input names the instant.
    let instants = db.beat_instants(&context);
    assert!(
        instants.len() >= 2 * n,
        "the heartbeat fired in every round: {instants:?}"
    );

    // Trigger: each run from its own claimed poll slot; no key ran twice at once.
    let trigger_runs = db.count(
        "SELECT count(*) FROM workflow_executions e \
         JOIN contexts c ON c.execution_id = e.id AND c.owner = '/input' \
         WHERE e.workflow_name = 'report' AND c.data::json->>'source' = 'inbox'",
    );
    let slots = db.count(
        "SELECT count(*) FROM trigger_polls \
         WHERE tenant = 'public' AND trigger_name = 'report:inbox_watch'",
    );
    assert!(
        trigger_runs <= slots,
        "{trigger_runs} trigger runs from {slots} claimed poll slots\n{context}"
    );
    let overlapping = db.count(
        "SELECT count(*) FROM workflow_executions x JOIN workflow_executions y \
         ON x.dedup_key = y.dedup_key AND x.id < y.id \
         WHERE x.created_at < COALESCE(y.completed_at, 9223372036854775807) \
           AND y.created_at < COALESCE(x.completed_at, 9223372036854775807)",
    );
    assert_eq!(overlapping, 0, "a trigger key ran twice at once\n{context}");

    // Packages: what the database holds, served by both replicas.
    let stored: Vec<String> = db
        .rows("SELECT name FROM packages WHERE tenant = 'public' ORDER BY name")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(stored, ["heartbeat", "hello-orders", "scheduled-reports"]);
    let expected: BTreeSet<String> = ["beat", "hello", "orders", "report"]
        .into_iter()
        .map(str::to_string)
        .collect();
    for r in [&a, &b] {
        assert_eq!(r.workflows("public", &key), expected, "replica {}", r.name);
    }
}
