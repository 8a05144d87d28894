//! Database faults, end to end, with the real binaries as processes: the SQLite disk fills up,
//! the SQLite database file turns read-only, PostgreSQL restarts or drops every connection
//! mid-run. What a user relies on: a clear error (status, HTTP answer, one line at start), no
//! crash or hang, recovery on its own once the fault is gone, and nothing committed lost or
//! damaged (`PRAGMA integrity_check` says `ok`; every run reported completed is still there).
//!
//! The SQLite tests mount a tmpfs of their own over the home (root only; skipped otherwise,
//! except under `CI=true`) or make the database file immutable (`chattr +i`: root ignores file
//! modes). The PostgreSQL restart test starts a private cluster (its own data directory and
//! port): the shared server is never stopped.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use cloacina::store::{ExecutionRecord, ExecutionStatus};
use cloacina_e2e::Home;
use cloacina_e2e::faults::{self, Immutable, PgCluster, Tmpfs};
use cloacina_e2e::home::pack_example;
use cloacina_e2e::server::{ServerHome, ServerProcess, Start};
use serde_json::{Value, json};

/// One test at a time: each runs a daemon or server with a cron schedule on a 2-core machine,
/// and their waits are about the process recovering, not about the machine keeping up.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ids of `workflow`'s completed runs in `runs`.
fn completed(runs: &[ExecutionRecord], workflow: &str) -> BTreeSet<String> {
    runs.iter()
        .filter(|e| e.workflow_name == workflow && e.status == ExecutionStatus::Completed)
        .map(|e| e.id.to_string())
        .collect()
}

/// Every run in `before` is still in `after`, still completed.
fn assert_kept(before: &BTreeSet<String>, after: &[ExecutionRecord], context: &str) {
    let now: BTreeSet<String> = after
        .iter()
        .filter(|e| e.status == ExecutionStatus::Completed)
        .map(|e| e.id.to_string())
        .collect();
    let lost: Vec<&String> = before.difference(&now).collect();
    assert!(
        lost.is_empty(),
        "runs reported completed before the fault are gone or changed: {lost:?}\n{context}"
    );
}

fn daemon_alive(home: &mut Home) -> bool {
    home.daemon
        .as_mut()
        .is_some_and(|c| c.try_wait().ok().flatten().is_none())
}

/// The daemon's `write_failure` message while its status says degraded, else `None`.
fn write_failure(home: &Home) -> Option<String> {
    let s = home.status();
    if s["health"] != "degraded" {
        return None;
    }
    s["write_failure"]["message"].as_str().map(str::to_string)
}

/// Daemon on a full disk: the heartbeat cron keeps writing; with the disk full, `daemon status`
/// says degraded with a `write_failure` naming the database and the full disk, the daemon keeps
/// running and answering; once space is freed it is healthy again without a restart and the
/// heartbeats complete again; after a clean stop the file is intact and no completed run is
/// lost.
#[test]
fn daemon_full_disk_is_reported_and_recovered_from_without_loss() {
    let _s = serial();
    let mut home = Home::new();
    // 96 MiB: the packed heartbeat and its unpacked debug library fit with room to spare.
    let Some(disk) = Tmpfs::mount(home.path(), 96 * 1024) else {
        return;
    };
    std::fs::create_dir_all(home.packages_dir()).expect("packages dir");
    pack_example("heartbeat", &home.packages_dir());
    home.start(&[]);
    home.wait_for("two heartbeats completed", |h| {
        completed(&h.executions(), "beat").len() >= 2
    });
    let before = completed(&home.executions(), "beat");

    let filled = disk.fill();
    eprintln!("filled the disk with {filled} bytes");
    home.wait_for("status degraded: the database is full", |h| {
        write_failure(h).is_some_and(|m| m.contains("full"))
    });
    let message = write_failure(&home).unwrap_or_default();
    assert!(
        message.contains(&home.path().join("cloacina.db").display().to_string()),
        "the failure names the database file: {message}"
    );
    // It keeps trying (the heartbeat fires every second) and failing, and keeps running. A
    // commit that fits in the WAL's pages already on disk may still go through in between,
    // which ends a failure streak (`since` moves on), so later failures are compared by time.
    let first = home.status()["write_failure"]["last"].as_i64().unwrap_or(0);
    home.wait_for("later failed commits while full", |h| {
        h.status()["write_failure"]["last"].as_i64() > Some(first + 2_000)
    });
    assert!(daemon_alive(&mut home), "the daemon died\n{}", home.logs());

    disk.free();
    home.wait_for("healthy again once space is freed", |h| {
        let s = h.status();
        s["health"] == "healthy" && s["write_failure"].is_null()
    });
    let at_recovery = completed(&home.executions(), "beat").len();
    home.wait_for("heartbeats complete again", |h| {
        completed(&h.executions(), "beat").len() >= at_recovery + 2
    });
    let out = home.ctl(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", home.context(&out));
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());

    let db = home.path().join("cloacina.db");
    assert_eq!(faults::sqlite_integrity(&db), "ok", "{}", home.logs());
    assert_kept(&before, &home.executions(), &home.logs());
    drop(disk);
}

/// Daemon with its database file made read-only while it runs (immutable: writes through the
/// open file fail too): degraded with the failure named, still running; writable again, it is
/// healthy again on its own. Started on a read-only database file, it refuses with one line
/// naming the file, exit 1. Nothing is damaged or lost.
#[test]
fn daemon_read_only_database_is_reported_at_start_and_mid_run() {
    let _s = serial();
    let mut home = Home::new();
    std::fs::create_dir_all(home.packages_dir()).expect("packages dir");
    pack_example("heartbeat", &home.packages_dir());
    home.start(&[]);
    home.wait_for("two heartbeats completed", |h| {
        completed(&h.executions(), "beat").len() >= 2
    });
    let before = completed(&home.executions(), "beat");
    let db = home.path().join("cloacina.db");
    let files: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect();

    let Some(frozen) = Immutable::set(&files) else {
        return;
    };
    home.wait_for("status degraded: the database cannot be written", |h| {
        write_failure(h).is_some()
    });
    let message = write_failure(&home).unwrap_or_default();
    assert!(
        message.contains(&db.display().to_string()),
        "the failure names the database file: {message}"
    );
    assert!(daemon_alive(&mut home), "the daemon died\n{}", home.logs());
    drop(frozen);
    home.wait_for("healthy again once the file is writable", |h| {
        let s = h.status();
        s["health"] == "healthy" && s["write_failure"].is_null()
    });
    let at_recovery = completed(&home.executions(), "beat").len();
    home.wait_for("heartbeats complete again", |h| {
        completed(&h.executions(), "beat").len() >= at_recovery + 2
    });
    let out = home.ctl(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", home.context(&out));
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());
    assert_eq!(faults::sqlite_integrity(&db), "ok", "{}", home.logs());
    assert_kept(&before, &home.executions(), &home.logs());

    // Started on a read-only database file.
    let Some(_frozen) = Immutable::set(&files) else {
        return;
    };
    home.spawn(&[]);
    let code = home.exit_code();
    let stderr = std::fs::read_to_string(home.path().join("daemon.stderr")).unwrap_or_default();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(code, Some(1), "{stderr}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.contains(&db.display().to_string()) && last.contains("read"),
        "one line naming the file and saying read-only:\n{stderr}"
    );
    drop(_frozen);
    assert_eq!(faults::sqlite_integrity(&db), "ok");
    assert_kept(&before, &home.executions(), &stderr);
}

/// Uploads example `name` to `public` (201).
fn upload(server: &ServerProcess<'_>, name: &'static str, scratch: &std::path::Path) {
    let archive = pack_example(name, scratch);
    let bytes = std::fs::read(&archive).expect("read archive");
    let r = server.upload_raw("public", &bytes);
    assert_eq!(r.status, 201, "upload {name}: {r}\n{}", server.logs());
}

/// The server's executions of `public`, by id, with their status.
fn server_runs(server: &ServerProcess<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let page = server.get_ok(&format!(
            "/v1/tenants/public/executions?limit=1000&offset={}",
            out.len()
        ));
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for e in &items {
            out.push((
                e["id"].as_str().unwrap_or_default().to_string(),
                e["status"].as_str().unwrap_or_default().to_string(),
            ));
        }
        if items.is_empty() || out.len() as u64 >= page["total"].as_u64().unwrap_or(0) {
            return out;
        }
    }
}

fn completed_ids(runs: &[(String, String)]) -> BTreeSet<String> {
    runs.iter()
        .filter(|(_, s)| s == "Completed")
        .map(|(id, _)| id.clone())
        .collect()
}

/// Server on SQLite on a full disk: a new run is refused with a JSON 5xx that names the full
/// database, the server keeps answering; once space is freed runs are accepted and complete
/// again without a restart; the file is intact and no completed run is lost.
#[test]
fn server_sqlite_full_disk_answers_a_clear_error_and_recovers() {
    let _s = serial();
    let home = ServerHome::sqlite();
    let scratch = tempfile::tempdir().expect("scratch");
    let Some(disk) = Tmpfs::mount(home.path(), 96 * 1024) else {
        return;
    };
    let server = home.start(Start::direct());
    upload(&server, "hello-orders", scratch.path());
    for _ in 0..3 {
        let id = server.execute("public", "hello", &json!({}));
        server.wait_execution("public", &id);
    }
    let before = completed_ids(&server_runs(&server));
    assert_eq!(before.len(), 3);

    disk.fill();
    let r = server.post(
        "/v1/tenants/public/workflows/hello/execute",
        &json!({ "context": {} }),
    );
    eprintln!("a run on a full disk: {r}");
    assert!(
        r.status >= 500,
        "a run on a full disk is refused: {r}\n{}",
        server.logs()
    );
    assert!(
        !r.code().is_empty() && r.error().contains("full"),
        "the JSON error says the database is full: {r}"
    );
    assert_eq!(server.get_anon("/health").status, 200);

    disk.free();
    let id = server.execute("public", "hello", &json!({}));
    let done = server.wait_execution("public", &id);
    assert_eq!(done["status"], "Completed", "{done}");
    assert_kept_ids(&before, &server_runs(&server), &server.logs());
    drop(server);
    assert_eq!(
        faults::sqlite_integrity(&home.path().join("cloacina.db")),
        "ok"
    );
    drop(disk);
}

fn assert_kept_ids(before: &BTreeSet<String>, after: &[(String, String)], context: &str) {
    let now = completed_ids(after);
    let lost: Vec<&String> = before.difference(&now).collect();
    assert!(
        lost.is_empty(),
        "runs reported completed before the fault are gone: {lost:?}\n{context}"
    );
}

/// Polls `/ready` until its status is `want`; the last answer.
fn wait_ready_status(server: &ServerProcess<'_>, want: u16, context: impl Fn() -> String) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    cloacina_e2e::wait_for(
        &format!("/ready answers {want}"),
        || {
            let r = server.get_anon("/ready");
            *last.borrow_mut() = r.json();
            r.status == want
        },
        || {
            format!(
                "last /ready: {}\n{}\n{}",
                last.borrow(),
                server.logs(),
                context()
            )
        },
    );
    last.into_inner()
}

/// Server on PostgreSQL whose database restarts mid-run (a private cluster, stopped and
/// started again): while it is down `/ready` answers 503 not ready and `/health` 200; when it
/// is back the same process is ready again, the runs in flight finish, new runs complete, and
/// every run completed before the restart is still there.
#[test]
fn server_rides_through_a_postgres_restart() {
    let _s = serial();
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let url = pg.create_database("cloacina_restart");
    let mut home = ServerHome::sqlite();
    home.database_url = url.clone();
    let scratch = tempfile::tempdir().expect("scratch");
    let server = home.start(Start::direct());
    upload(&server, "hello-orders", scratch.path());
    for _ in 0..3 {
        let id = server.execute("public", "hello", &json!({}));
        server.wait_execution("public", &id);
    }
    let before = completed_ids(&server_runs(&server));
    // Runs in flight across the restart: each takes 3 s in its first task.
    let in_flight: Vec<String> = (0..3)
        .map(|i| {
            server.execute(
                "public",
                "orders",
                &json!({ "delay_ms": 3000, "run_id": format!("r{i}") }),
            )
        })
        .collect();

    pg.stop_server("fast");
    let down = wait_ready_status(&server, 503, || pg.log());
    assert_eq!(down["status"], "not ready", "{down}");
    assert!(
        down["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "/ready says why: {down}"
    );
    assert_eq!(
        server.get_anon("/health").status,
        200,
        "liveness does not need the database"
    );
    let r = server.post(
        "/v1/tenants/public/workflows/hello/execute",
        &json!({ "context": {} }),
    );
    eprintln!("a run while PostgreSQL is down: {r}; /ready: {down}");
    assert!(
        r.status == 503 && !r.code().is_empty(),
        "a run while the database is down: a JSON 503: {r}"
    );

    pg.start_server();
    wait_ready_status(&server, 200, || pg.log());
    for id in &in_flight {
        let done = server.wait_execution("public", id);
        assert_eq!(done["status"], "Completed", "{done}\n{}", server.logs());
    }
    let id = server.execute("public", "hello", &json!({}));
    let done = server.wait_execution("public", &id);
    assert_eq!(done["status"], "Completed", "{done}");
    assert_kept_ids(&before, &server_runs(&server), &server.logs());
}

/// Server on the shared PostgreSQL whose connections are all terminated mid-run (as an
/// administrator or a failover does): it reconnects on its own, runs in flight finish, new
/// runs complete, nothing completed is lost.
#[test]
fn server_rides_through_terminated_postgres_connections() {
    let _s = serial();
    let Some(mut home) = ServerHome::postgres() else {
        return;
    };
    let app = format!("e2e_dbfaults_{}", std::process::id());
    home.database_url = format!("{}?application_name={app}", home.database_url);
    let scratch = tempfile::tempdir().expect("scratch");
    let server = home.start(Start::direct());
    upload(&server, "hello-orders", scratch.path());
    let id = server.execute("public", "hello", &json!({}));
    server.wait_execution("public", &id);
    let before = completed_ids(&server_runs(&server));
    let in_flight: Vec<String> = (0..3)
        .map(|i| {
            server.execute(
                "public",
                "orders",
                &json!({ "delay_ms": 2000, "run_id": format!("r{i}") }),
            )
        })
        .collect();
    let base = cloacina_e2e::server::postgres_base_url();
    let ended = faults::postgres_terminate(&base, &app);
    assert!(ended >= 1, "the server's connections were ended: {ended}");
    let again = faults::postgres_terminate(&base, &app);
    eprintln!("terminated {ended} then {again} connections");
    wait_ready_status(&server, 200, String::new);
    for id in &in_flight {
        let done = server.wait_execution("public", id);
        assert_eq!(done["status"], "Completed", "{done}\n{}", server.logs());
    }
    let id = server.execute("public", "hello", &json!({}));
    let done = server.wait_execution("public", &id);
    assert_eq!(done["status"], "Completed", "{done}");
    assert_kept_ids(&before, &server_runs(&server), &server.logs());
}
