//! End-to-end: the real `cloacinactl` and `cloacina-daemon` binaries in temporary homes.

use std::process::Command;

use cloacina::store::ExecutionStatus;
use cloacina_e2e::home::{Home, pack_example, pack_to, package_line, package_names};
use cloacina_e2e::{bins, faults, packages};

#[test]
fn lifecycle_start_health_status_stop_and_stale_pid() {
    let mut home = Home::new();
    let out = home.ctl(&["daemon", "health"]);
    assert_eq!(out.status.code(), Some(2), "not running yet");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "health prints nothing"
    );

    home.start(&[]);
    for dir in ["packages", "logs"] {
        assert!(home.path().join(dir).is_dir(), "{dir} created");
    }
    assert!(home.path().join("cloacina.db").is_file());
    let pid = home.daemon_pid();
    let recorded: u32 = std::fs::read_to_string(home.path().join("daemon.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(recorded, pid);
    let s = home.status();
    assert_eq!(s["health"], "healthy");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["packages_loaded"], 0);
    assert!(s["uptime_s"].is_u64());
    assert!(s["last_reconciliation"].is_i64());
    let table = home.ctl(&["--no-color", "daemon", "status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("health") && text.contains("healthy") && text.contains("packages loaded"),
        "{text}"
    );

    // A second start refuses while the first runs.
    let again = home.ctl(&["daemon", "start"]);
    assert_eq!(again.status.code(), Some(1), "{}", home.context(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already running"),
        "{}",
        home.context(&again)
    );

    // JSON logs are written.
    let log = std::fs::read_to_string(home.path().join("logs/cloacina.log")).expect("log file");
    let first = log.lines().next().expect("a log line");
    serde_json::from_str::<serde_json::Value>(first).expect("JSON log line");

    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
    assert_eq!(
        home.exit_code(),
        Some(0),
        "graceful stop exits 0\n{}",
        home.logs()
    );
    assert!(
        !home.path().join("daemon.pid").exists(),
        "PID file removed at exit"
    );
    // The database is closed at exit: its WAL is checkpointed and no -wal/-shm file is left.
    for leftover in ["cloacina.db-wal", "cloacina.db-shm"] {
        assert!(
            !home.path().join(leftover).exists(),
            "{leftover} left after a clean stop"
        );
    }
    assert_eq!(home.ctl(&["daemon", "health"]).status.code(), Some(2));
    assert_eq!(
        home.ctl(&["daemon", "stop"]).status.code(),
        Some(2),
        "no PID file"
    );

    // A stale PID file (its process is gone) does not stop a new start.
    std::fs::write(home.path().join("daemon.pid"), "99999999\n").expect("stale pid");
    home.start(&[]);
    assert_eq!(home.status()["health"], "healthy");
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

#[test]
fn unknown_config_keys_stop_the_start_with_the_key_named() {
    let home = Home::new();
    std::fs::write(
        home.path().join("config.toml"),
        "[daemon]\npoll_intervall_ms = 100\n",
    )
    .expect("config");
    let out = Command::new(bins::cloacina_daemon())
        .arg("--home")
        .arg(home.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("poll_intervall_ms") && err.contains("config.toml"),
        "{err}"
    );
}

#[test]
fn dropping_and_removing_an_archive_loads_and_unloads_it() {
    let mut home = Home::new();
    home.start(&[]);
    let archive = pack_example("hello-orders", &home.path().join("packages"));
    home.wait_for("hello-orders loaded", |h| {
        package_names(&h.status()).contains(&("hello-orders".to_string(), "loaded".to_string()))
    });
    assert_eq!(home.status()["packages_loaded"], 1);
    std::fs::remove_file(&archive).expect("remove");
    home.wait_for("hello-orders unloaded", |h| {
        h.status()["packages"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    // A broken archive is reported while everything else keeps running.
    std::fs::write(
        home.path().join("packages/broken.cloacina"),
        b"not an archive",
    )
    .expect("write");
    home.wait_for("the broken archive is reported", |h| {
        let s = h.status();
        s["health"] == "degraded" && package_names(&s).iter().any(|(_, state)| state == "failed")
    });
    assert!(home.ctl(&["daemon", "health"]).status.success(), "still up");
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

#[test]
fn replacing_an_archive_with_a_new_version_upgrades_it() {
    let mut home = Home::new();
    home.start(&[]);
    let archive = pack_example("hello-orders", &home.path().join("packages"));
    home.wait_for("hello-orders 1.0.0 loaded", |h| {
        package_line(&h.status(), "hello-orders")
            .is_some_and(|p| p["version"] == "1.0.0" && p["state"] == "loaded")
    });
    let (v2_dir, v2_lib) = packages::example_as_version("hello-orders", "2.0.0");
    pack_to(&v2_dir, &v2_lib, &archive);
    home.wait_for("hello-orders 2.0.0 serving alone", |h| {
        let s = h.status();
        package_line(&s, "hello-orders")
            .is_some_and(|p| p["version"] == "2.0.0" && p["state"] == "loaded")
            && s["packages"].as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(home.status()["health"], "healthy");
    let log = std::fs::read_to_string(home.path().join("logs/cloacina.log")).expect("log");
    assert!(log.contains("package upgraded"), "{log}");
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

#[test]
fn sighup_reloads_the_config_and_watches_a_new_folder() {
    let mut home = Home::new();
    home.start(&[]);
    let extra = home.path().join("more-packages");
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(
        home.path().join("config.toml"),
        format!("[watch]\ndirectories = [\"{}\"]\n", extra.display()),
    )
    .expect("config");
    let pid = home.daemon_pid();
    home.signal("HUP");
    home.wait_for("the new folder is watched", |h| {
        h.status()["watch_dirs"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d == &extra.display().to_string()))
    });
    pack_example("hello-orders", &extra);
    home.wait_for("the package in the new folder loaded", |h| {
        package_line(&h.status(), "hello-orders").is_some_and(|p| p["state"] == "loaded")
    });
    // Still the same process: a reload, not a restart.
    assert_eq!(home.status()["pid"], pid);
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

/// The heartbeat package's cron fires every second; each run's task takes 1.5 s. Runs
/// complete on schedule, and a stop while one is in flight drains it: the daemon exits 0 only
/// after that run has completed.
#[test]
fn cron_fires_on_schedule_and_stop_drains_the_task_in_flight() {
    let mut home = Home::new();
    home.start(&[]);
    pack_example("heartbeat", &home.path().join("packages"));
    home.wait_for("two cron-started runs completed", |h| {
        h.executions()
            .iter()
            .filter(|e| e.workflow_name == "beat" && e.status == ExecutionStatus::Completed)
            .count()
            >= 2
    });
    let mut in_flight = Vec::new();
    home.wait_for("a run in flight", |h| {
        in_flight = h
            .executions()
            .into_iter()
            .filter(|e| e.status == ExecutionStatus::Running)
            .map(|e| e.id)
            .collect();
        !in_flight.is_empty()
    });
    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());
    let after = home.executions();
    for id in &in_flight {
        let e = after.iter().find(|e| e.id == *id).expect("still recorded");
        assert_eq!(
            e.status,
            ExecutionStatus::Completed,
            "the run in flight at stop was drained, not cut off: {e:?}\n{}",
            home.logs()
        );
    }
    assert!(
        after.iter().all(|e| e.status != ExecutionStatus::Running),
        "nothing left running"
    );
    // Cron instants are one second apart and each fired once.
    let mut starts: Vec<i64> = after
        .iter()
        .filter(|e| e.workflow_name == "beat")
        .map(|e| e.created_at)
        .collect();
    starts.sort();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= 500),
        "one run per instant: {starts:?}"
    );
}

/// The unload guide's cross-package recipe in daemon mode: removing the publisher's file while its subscriber is
/// loaded is refused by the guard (publisher stays loaded; status and log say why); removing
/// the subscriber's file too then completes both unloads.
#[test]
fn guard_in_daemon_mode_keeps_the_publisher_until_its_subscriber_goes() {
    let mut home = Home::new();
    home.start(&[]);
    let packages = home.path().join("packages");
    let publisher = pack_example("price-publisher", &packages);
    let subscriber = pack_example("price-subscriber", &packages);
    home.wait_for("both loaded", |h| {
        let s = h.status();
        ["price-publisher", "price-subscriber"]
            .iter()
            .all(|n| package_line(&s, n).is_some_and(|p| p["state"] == "loaded"))
    });
    std::fs::remove_file(&publisher).expect("rm publisher");
    let guard = "reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first";
    home.wait_for("the refusal shown in status", |h| {
        package_line(&h.status(), "price-publisher")
            .is_some_and(|p| p["state"] == "unload_refused" && p["last_error"] == guard)
    });
    let log = std::fs::read_to_string(home.path().join("logs/cloacina.log")).expect("log");
    assert!(log.contains(guard), "{log}");
    assert!(home.ctl(&["daemon", "health"]).status.success());
    std::fs::remove_file(&subscriber).expect("rm subscriber");
    home.wait_for("both unloaded", |h| {
        h.status()["packages"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

/// A second SIGINT while the first one's drain waits for a running task exits 1 at once.
#[test]
fn a_second_interrupt_during_the_drain_exits_1() {
    let mut home = Home::new();
    home.start(&[]);
    pack_example("heartbeat", &home.path().join("packages"));
    home.wait_for("a run in flight", |h| {
        h.executions()
            .iter()
            .any(|e| e.status == ExecutionStatus::Running)
    });
    home.signal("INT");
    home.wait_for("the drain started", |h| h.logs().contains("shutting down"));
    home.signal("INT");
    assert_eq!(home.exit_code(), Some(1), "{}", home.logs());
    assert!(home.logs().contains("second interrupt"), "{}", home.logs());
}

/// Health follows the database: while another process holds SQLite's write lock longer than
/// the busy timeout, commits fail and the daemon says `degraded` with the failure (naming the
/// database file); once the lock is gone, commits succeed and it is `healthy` again.
#[test]
fn health_is_degraded_while_commits_fail_and_recovers() {
    let mut home = Home::new();
    home.start(&[]);
    pack_example("heartbeat", &home.packages_dir());
    home.wait_for("a cron-started run completed", |h| {
        h.executions()
            .iter()
            .any(|e| e.status == ExecutionStatus::Completed)
    });
    let db = home.path().join("cloacina.db");
    // Another process takes the write lock (readers go on: WAL) and holds it until dropped.
    let lock = faults::SqliteLock::hold(&db);
    home.wait_for("health degraded with the database named", |h| {
        let s = h.status();
        s["health"] == "degraded"
            && s["write_failure"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&db.display().to_string()) && m.contains("locked"))
    });
    let table = home.ctl(&["--no-color", "daemon", "status"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("database error: commits failing"),
        "{}",
        home.context(&table)
    );
    drop(lock);
    home.wait_for("healthy again once commits succeed", |h| {
        let s = h.status();
        s["health"] == "healthy" && s["write_failure"].is_null()
    });
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}
