//! End-to-end: `cloacinactl`'s workflow, execution, graph and trigger verbs as clients of the
//! real `cloacina-server`, on SQLite and PostgreSQL (a fresh database per test): listing,
//! inspecting and running workflows (a context from a file and from standard input, a bad
//! context refused before anything is sent), executions (filters, status, tasks, events,
//! `--since`, `--follow` until the run ends, cancel, pause, resume), graphs (the
//! `subscribers: N` line of the unload guide), triggers, and the exit codes: 3 for a missing
//! workflow or execution, 4 for a read-only key, 2 for an unreachable server, 5 for a
//! malformed execution id.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloacina_e2e::bins;
use cloacina_e2e::both_backends;
use cloacina_e2e::ctl::{Ctl, CtlOut};
use cloacina_e2e::home::pack_example;
use cloacina_e2e::server::{Backend, ServerHome, ServerProcess, Start};
use cloacina_e2e::wait::WAIT_LIMIT;
use serde_json::{Value, json};

/// Packs and uploads example `name` to `public`, which must answer 201; the answer.
fn upload(server: &ServerProcess<'_>, name: &'static str) -> Value {
    let archive = pack_example(name, server.home.path());
    let bytes = std::fs::read(&archive).expect("read archive");
    let r = server.upload_raw("public", &bytes);
    assert_eq!(r.status, 201, "upload {name}: {r}\n{}", server.logs());
    r.json()
}

/// How many executions `public` has.
fn total_executions(ctl: &Ctl<'_, '_>) -> u64 {
    ctl.json(&["execution", "list"])["total"]
        .as_u64()
        .expect("total")
}

/// The line of `out`'s stdout that contains `needle`.
fn line_with<'o>(out: &'o CtlOut, needle: &str) -> &'o str {
    out.stdout
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with '{needle}':\n{out}"))
}

/// `cloacinactl ARGS` started in the background with its output captured.
fn spawn(ctl: &Ctl<'_, '_>, args: &[&str]) -> Child {
    ctl.command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cloacinactl")
}

/// Waits (at most [`WAIT_LIMIT`]) for a spawned `cloacinactl` to exit.
fn finish(mut child: Child, args: &[&str]) -> CtlOut {
    let deadline = Instant::now() + WAIT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll cloacinactl") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect cloacinactl");
            panic!(
                "cloacinactl {args:?} did not exit\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout).expect("read stdout");
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    CtlOut {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// The `sequence_num` of each NDJSON line of `out`.
fn ndjson_seqs(out: &CtlOut) -> Vec<i64> {
    out.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{out}"));
            v["sequence_num"].as_i64().expect("sequence_num")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workflows and executions

fn workflows_and_executions(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    let ctl = Ctl::new(&server);
    let out = ctl.ok(&["workflow", "list"]);
    assert_eq!(out.stdout, "no workflows in tenant 'public'\n", "{out}");
    upload(&server, "hello-orders");

    // --- workflow list: a table, ids, the --package filter.
    let out = ctl.ok(&["workflow", "list"]);
    let header = out.stdout.lines().next().unwrap_or_default();
    for col in [
        "WORKFLOW_NAME",
        "PACKAGE_NAME",
        "VERSION",
        "TASKS",
        "PAUSED",
    ] {
        assert!(header.contains(col), "{out}");
    }
    let orders = out
        .stdout
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_else(|| panic!("no orders row:\n{out}"));
    assert!(orders.contains("hello-orders  1.0.0"), "{out}");
    assert!(
        orders.contains("fetch_orders") && orders.ends_with("false"),
        "{out}"
    );
    assert_eq!(
        ctl.ok(&["workflow", "list", "-o", "id"]).stdout,
        "hello\norders\n"
    );
    let doc = ctl.json(&["workflow", "list", "--package", "orders"]);
    assert_eq!(
        (&doc["total"], &doc["tenant_id"]),
        (&json!(2), &json!("public"))
    );
    let out = ctl.ok(&["workflow", "list", "--package", "nope"]);
    assert!(out.stdout.contains("whose name contains 'nope'"), "{out}");
    let doc = ctl
        .ok(&["--json", "workflow", "list", "--package", "nope"])
        .json();
    assert_eq!(doc["items"], json!([]), "{doc}");

    // --- workflow inspect: tasks, dependencies, trigger rules, schedules, build state.
    let out = ctl.ok(&["workflow", "inspect", "orders"]);
    for want in [
        "workflow: orders\n",
        "package: hello-orders (",
        "build_status: success\n",
        "build_error: -\n",
        "schedules:\n  none",
    ] {
        assert!(out.stdout.contains(want), "{want}\n{out}");
    }
    let ship = line_with(&out, "  ship ");
    assert!(
        ship.contains("price_orders, check_stock") && ship.contains("always"),
        "{out}"
    );
    assert!(line_with(&out, "  check_stock ").contains(" 3 "), "{out}");
    let doc = ctl.json(&["workflow", "inspect", "orders"]);
    assert_eq!(doc["task_graph"].as_array().map(Vec::len), Some(4), "{doc}");
    let out = ctl.fails(&["workflow", "inspect", "nope"], 3);
    assert!(
        out.stderr
            .starts_with("Error: tenant 'public' serves no workflow named 'nope'"),
        "{out}"
    );
    // A name that needs escaping reaches the server as one name.
    let out = ctl.fails(&["workflow", "inspect", "a b/c?d"], 3);
    assert!(out.stderr.contains("named 'a b/c?d'"), "{out}");

    // --- workflow run: the context from a file, from stdin, the default; the id alone.
    let ctx = home.path().join("ctx.json");
    std::fs::write(&ctx, r#"{"name": "file"}"#).expect("write context");
    let ctx = ctx.to_str().expect("utf-8 path");
    let out = ctl.ok(&["workflow", "run", "hello", "--context", ctx]);
    let from_file = out.stdout.trim().to_string();
    assert_eq!(out.stdout, format!("{from_file}\n"), "only the id: {out}");
    assert_eq!(from_file.len(), 36, "{out}");
    let done = server.wait_execution("public", &from_file);
    assert_eq!(done["result"]["greeting"], "hello, file", "{done}");
    let out = ctl.run_with_stdin(
        &["workflow", "run", "hello", "--context", "-"],
        Some(br#"{"name": "stdin"}"#),
    );
    assert_eq!(out.code, 0, "{out}");
    let from_stdin = out.stdout.trim().to_string();
    let done = server.wait_execution("public", &from_stdin);
    assert_eq!(done["result"]["greeting"], "hello, stdin", "{done}");
    let doc = ctl.json(&["workflow", "run", "hello"]);
    assert_eq!(
        (&doc["status"], &doc["workflow_name"]),
        (&json!("scheduled"), &json!("hello"))
    );
    let plain = doc["execution_id"]
        .as_str()
        .expect("execution_id")
        .to_string();
    let done = server.wait_execution("public", &plain);
    assert_eq!(done["result"]["greeting"], "hello, world", "{done}");

    // --- a bad context: exit 1 naming the source and the position; nothing submitted.
    let before = total_executions(&ctl);
    let bad = home.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"name\": \n}").expect("write bad context");
    let bad = bad.to_str().expect("utf-8 path");
    let out = ctl.fails(&["workflow", "run", "hello", "--context", bad], 1);
    assert!(
        out.stderr.contains(bad)
            && out.stderr.contains("is not valid JSON")
            && out.stderr.contains("line 3 column 1"),
        "{out}"
    );
    let out = ctl.run_with_stdin(
        &["workflow", "run", "hello", "--context", "-"],
        Some(b"[1, 2]"),
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("standard input holds an array"),
        "{out}"
    );
    let missing = home.path().join("missing.json");
    let out = ctl.fails(
        &[
            "workflow",
            "run",
            "hello",
            "--context",
            missing.to_str().expect("utf-8"),
        ],
        1,
    );
    assert!(
        out.stderr.contains("cannot read the --context file"),
        "{out}"
    );
    assert_eq!(total_executions(&ctl), before);
    ctl.fails(&["workflow", "run", "nope"], 3);

    // --- execution list: total, filters, paging, ids.
    let out = ctl.ok(&["execution", "list"]);
    assert!(out.stdout.starts_with("ID "), "{out}");
    assert!(out.stdout.ends_with("\ntotal: 3\n"), "{out}");
    assert_eq!(out.stdout.lines().count(), 5, "{out}");
    let mut ids: Vec<String> = ctl
        .ok(&["execution", "list", "-o", "id"])
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    let mut want = vec![from_file.clone(), from_stdin.clone(), plain.clone()];
    want.sort();
    assert_eq!(ids, want);
    let out = ctl.ok(&["execution", "list", "--limit", "1"]);
    assert_eq!(out.stdout.lines().count(), 3, "{out}");
    assert!(
        out.stdout
            .ends_with("\ntotal: 3 (showing 1-1; --offset 1 shows the next)\n"),
        "{out}"
    );
    let doc = ctl.json(&["execution", "list", "--limit", "1", "--offset", "2"]);
    assert_eq!(
        (doc["items"].as_array().map(Vec::len), &doc["total"]),
        (Some(1), &json!(3))
    );
    let doc = ctl.json(&[
        "execution",
        "list",
        "--workflow",
        "hello",
        "--status",
        "completed",
    ]);
    assert_eq!(doc["total"], 3, "{doc}");
    let out = ctl.ok(&["execution", "list", "--workflow", "orders"]);
    assert!(
        out.stdout
            .contains("no executions in tenant 'public' match"),
        "{out}"
    );
    ctl.fails(&["execution", "list", "--status", "done"], 1);
    ctl.fails(&["execution", "list", "--limit", "0"], 1);

    // --- status, tasks, events.
    let out = ctl.ok(&["execution", "status", &plain]);
    assert!(out.stdout.starts_with("status: Completed\n"), "{out}");
    assert!(out.stdout.contains("workflow: hello\n"), "{out}");
    assert!(
        out.stdout.contains("tasks: 1 total, 0 remaining, 0 failed"),
        "{out}"
    );
    assert_eq!(
        ctl.ok(&["execution", "status", &plain, "-o", "id"]).stdout,
        format!("{plain}\n")
    );
    let out = ctl.fails(
        &[
            "execution",
            "status",
            "00000000-0000-0000-0000-000000000000",
        ],
        3,
    );
    assert!(out.stderr.starts_with("Error: execution "), "{out}");
    let out = ctl.fails(&["execution", "status", "not-a-uuid"], 5);
    assert!(
        out.stderr.contains("'not-a-uuid' is not an execution id"),
        "{out}"
    );
    let out = ctl.ok(&["execution", "tasks", &plain]);
    assert!(out.stdout.starts_with("TASK_ID "), "{out}");
    assert!(line_with(&out, "greet").contains(" 1/1 "), "{out}");
    assert_eq!(
        ctl.ok(&["execution", "tasks", &plain, "-o", "id"]).stdout,
        "greet\n"
    );
    let out = ctl.ok(&["execution", "events", &plain]);
    assert!(out.stdout.starts_with("TIME "), "{out}");
    assert!(line_with(&out, "task_completed").contains("greet"), "{out}");
    assert!(out.stdout.contains("execution_completed"), "{out}");
    let all = ctl.json(&["execution", "events", &plain]);
    let count = all["events"].as_array().map(Vec::len).expect("events");
    assert!(count >= 4, "{all}");
    let recent = ctl.json(&["execution", "events", &plain, "--since", "1h"]);
    assert_eq!(recent["events"], all["events"]);
    let out = ctl.fails(&["execution", "events", &plain, "--since", "soon"], 1);
    assert!(
        out.stderr.contains("--since: invalid duration 'soon'") && out.stderr.contains("e.g. 90d"),
        "{out}"
    );
    let ids = ctl.ok(&["execution", "events", &plain, "-o", "id"]);
    assert_eq!(ids.stdout.lines().count(), count, "{ids}");

    // --- --follow: live until the run ends (a retry on the way), exit 0.
    let slow = home.path().join("slow.json");
    std::fs::write(&slow, r#"{"delay_ms": 1500, "run_id": "follow"}"#).expect("write");
    let slow = slow.to_str().expect("utf-8 path");
    let run = ctl
        .ok(&["workflow", "run", "orders", "--context", slow])
        .stdout;
    let run = run.trim();
    let out = ctl.ok(&["execution", "events", run, "--follow"]);
    assert_eq!(
        ctl.json(&["execution", "status", run])["status"],
        "Completed"
    );
    assert!(out.stdout.starts_with("TIME "), "{out}");
    assert!(
        out.stdout.contains("task_retry_scheduled") && out.stdout.contains("check_stock"),
        "{out}"
    );
    let events = ctl.json(&["execution", "events", run]);
    let events = events["events"].as_array().expect("events").clone();
    assert_eq!(out.stdout.lines().count(), events.len() + 1, "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("execution_completed")),
        "{out}"
    );
    // NDJSON: one event per line, each once, in order; with --since, the window replayed.
    let listed: Vec<i64> = events
        .iter()
        .map(|e| e["sequence_num"].as_i64().expect("seq"))
        .collect();
    let out = ctl.ok(&["execution", "events", run, "--follow", "-o", "json"]);
    assert_eq!(ndjson_seqs(&out), listed, "{out}");
    let out = ctl.ok(&[
        "execution",
        "events",
        run,
        "--follow",
        "--since",
        "1h",
        "--json",
    ]);
    assert_eq!(ndjson_seqs(&out), listed, "{out}");

    // --- cancel.
    let long = home.path().join("long.json");
    std::fs::write(&long, r#"{"delay_ms": 60000, "run_id": "cancel"}"#).expect("write");
    let long = long.to_str().expect("utf-8 path");
    let doomed = ctl
        .ok(&["workflow", "run", "orders", "--context", long])
        .stdout;
    let doomed = doomed.trim();
    let out = ctl.ok(&["execution", "cancel", doomed]);
    assert_eq!(
        out.stdout,
        format!("cancelled execution {doomed}; its status is now Cancelled\n")
    );
    assert_eq!(
        ctl.json(&["execution", "status", doomed])["status"],
        "Cancelled"
    );
    let out = ctl.ok(&["execution", "events", doomed, "--follow"]);
    assert!(out.stdout.contains("execution_cancelled"), "{out}");

    // --- pause, --follow waits through the pause, resume, the run completes.
    let ctx = home.path().join("pause.json");
    std::fs::write(&ctx, r#"{"delay_ms": 1000, "run_id": "pause"}"#).expect("write");
    let ctx = ctx.to_str().expect("utf-8 path");
    let held = ctl
        .ok(&["workflow", "run", "orders", "--context", ctx])
        .stdout;
    let held = held.trim();
    let out = ctl.ok(&["execution", "pause", held]);
    assert!(out.stdout.ends_with("its status is now Paused\n"), "{out}");
    let args = ["execution", "events", held, "--follow"];
    let mut follower = spawn(&ctl, &args);
    // Long enough for the running task to finish; nothing new starts while paused.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        follower.try_wait().expect("poll").is_none(),
        "--follow ended while the run was paused"
    );
    assert_eq!(ctl.json(&["execution", "status", held])["status"], "Paused");
    let out = ctl.ok(&["execution", "resume", held]);
    assert!(out.stdout.starts_with("resumed execution "), "{out}");
    let out = finish(follower, &args);
    assert_eq!(out.code, 0, "{out}\n{}", server.logs());
    for kind in [
        "execution_paused",
        "execution_resumed",
        "execution_completed",
    ] {
        assert!(out.stdout.contains(kind), "{kind}\n{out}");
    }
    assert_eq!(
        ctl.json(&["execution", "status", held])["status"],
        "Completed"
    );

    // --- workflow pause/resume: a paused workflow refuses runs.
    let out = ctl.ok(&["workflow", "pause", "hello"]);
    assert!(out.stdout.starts_with("paused workflow 'hello'"), "{out}");
    let list = ctl.json(&["workflow", "list"]);
    assert_eq!(list["items"][0]["paused"], true, "{list}");
    let before = total_executions(&ctl);
    let out = ctl.fails(&["workflow", "run", "hello"], 5);
    assert!(out.stderr.starts_with("Error: "), "{out}");
    assert_eq!(total_executions(&ctl), before);
    assert_eq!(
        ctl.ok(&["workflow", "resume", "hello", "-o", "id"]).stdout,
        "hello\n"
    );
    let again = ctl.ok(&["workflow", "run", "hello"]).stdout;
    server.wait_execution("public", again.trim());
    ctl.fails(&["workflow", "pause", "nope"], 3);

    // --- a read-only key reads but cannot run (4); a bad key is refused (4).
    let r = server.post("/v1/auth/keys", &json!({"name": "reader", "role": "read"}));
    assert_eq!(r.status, 201, "{r}");
    let reader = Ctl::with_key(&server, r.json()["key"].as_str().expect("key"));
    reader.ok(&["workflow", "list"]);
    reader.ok(&["execution", "status", &plain]);
    let before = total_executions(&ctl);
    let out = reader.fails(&["workflow", "run", "hello"], 4);
    assert!(out.stderr.starts_with("Error: "), "{out}");
    reader.fails(&["execution", "cancel", &plain], 4);
    assert_eq!(total_executions(&ctl), before);
    Ctl::with_key(&server, "clk_not_a_key").fails(&["workflow", "list"], 4);

    // --- no server there: 2, for a plain request and for --follow alike.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["workflow", "list"],
        vec!["execution", "events", &plain, "--follow"],
    ] {
        let out = Command::new(bins::cloacinactl())
            .arg("--home")
            .arg(home.path())
            .args(["--server", &url, "--api-key", "clk_x"])
            .args(&args)
            .env_remove("DATABASE_URL")
            .output()
            .expect("run cloacinactl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("Error: cannot reach the server"),
            "{stderr}"
        );
    }
}
both_backends!(workflows_and_executions);

// ---------------------------------------------------------------------------------------------
// Graphs and triggers

fn graphs_and_triggers(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    let ctl = Ctl::new(&server);
    upload(&server, "price-publisher");
    upload(&server, "scheduled-reports");

    // --- graph list / status / accumulators.
    let out = ctl.ok(&["graph", "list"]);
    assert!(out.stdout.starts_with("NAME "), "{out}");
    let row = line_with(&out, "price_summary");
    assert!(
        row.contains("price_reactor") && row.contains("price-publisher"),
        "{out}"
    );
    assert_eq!(
        ctl.ok(&["graph", "list", "-o", "id"]).stdout,
        "price_summary\n"
    );
    let doc = ctl.json(&["graph", "list"]);
    assert_eq!(doc["total"], 1, "{doc}");
    let out = ctl.ok(&["graph", "status", "price_summary"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for want in [
        "name: price_summary",
        "reactor: price_reactor",
        "subscribers: 0",
    ] {
        assert!(lines.contains(&want), "{want}\n{out}");
    }
    assert!(out.stdout.contains("accumulators:\n  NAME "), "{out}");
    let doc = ctl.json(&["graph", "status", "price_summary"]);
    assert_eq!(doc["subscribers"], 0, "{doc}");
    let out = ctl.fails(&["graph", "status", "nope"], 3);
    assert!(
        out.stderr
            .starts_with("Error: no computation graph named 'nope' is loaded"),
        "{out}"
    );
    let out = ctl.ok(&["graph", "accumulators"]);
    assert!(out.stdout.starts_with("REACTOR "), "{out}");
    assert!(line_with(&out, "price_reactor").contains("idle"), "{out}");
    let doc = ctl.json(&["graph", "accumulators"]);
    let accs = doc["items"].as_array().expect("items").clone();
    assert!(!accs.is_empty(), "{doc}");
    assert!(accs.iter().all(|a| a["tenant_id"] == "public"), "{doc}");

    // The unload guide's recipe: a subscriber bound, then unloaded: `subscribers: 0`.
    let sub = upload(&server, "price-subscriber");
    let out = ctl.ok(&["graph", "status", "price_reactor"]);
    let count = line_with(&out, "subscribers: ");
    assert_ne!(count, "subscribers: 0", "{out}");
    assert!(out.stdout.contains("  - analyzer_v1"), "{out}");
    let r = server.delete(&format!(
        "/v1/packages/{}",
        sub["package_id"].as_str().expect("package_id")
    ));
    assert_eq!(r.status, 200, "{r}\n{}", server.logs());
    let out = ctl.ok(&["graph", "status", "price_reactor"]);
    assert!(out.stdout.lines().any(|l| l == "subscribers: 0"), "{out}");

    // --- --tenant narrows a global admin's view to that tenant.
    let r = server.post("/v1/tenants", &json!({"name": "other"}));
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    for (args, empty) in [
        (
            vec!["graph", "list"],
            "no computation graphs are loaded in tenant 'other'",
        ),
        (
            vec!["graph", "accumulators"],
            "no accumulators in tenant 'other'",
        ),
        (vec!["workflow", "list"], "no workflows in tenant 'other'"),
        (
            vec!["trigger", "list"],
            "no cron schedules or triggers in tenant 'other'",
        ),
    ] {
        let mut all = vec!["--tenant", "other"];
        all.extend(args);
        assert_eq!(ctl.ok(&all).stdout, format!("{empty}\n"));
    }
    ctl.fails(
        &["--tenant", "other", "graph", "status", "price_summary"],
        3,
    );

    // --- trigger list / inspect.
    let out = ctl.ok(&["trigger", "list"]);
    assert!(out.stdout.starts_with("NAME "), "{out}");
    let cron = line_with(&out, "nightly_report");
    assert!(cron.contains("cron") && cron.contains("report"), "{out}");
    let poll = line_with(&out, "inbox_watch");
    assert!(
        poll.contains("trigger") && poll.contains("every 5s"),
        "{out}"
    );
    assert_eq!(
        ctl.ok(&["trigger", "list", "-o", "id"]).stdout,
        "inbox_watch\nnightly_report\n"
    );
    let out = ctl.ok(&["trigger", "inspect", "nightly_report"]);
    for want in [
        "name: nightly_report\n",
        "type: cron\n",
        "workflow: report\n",
        "recent_executions:",
    ] {
        assert!(out.stdout.contains(want), "{want}\n{out}");
    }
    let doc = ctl.json(&["trigger", "inspect", "nightly_report"]);
    assert_eq!(doc["schedule"]["schedule_type"], "cron", "{doc}");
    let by_id = doc["schedule"]["id"].as_str().expect("id").to_string();
    let out = ctl.ok(&["trigger", "inspect", &by_id, "-o", "id"]);
    assert_eq!(out.stdout, "nightly_report\n");
    // A trigger's id holds a '/': it travels as one escaped path segment.
    let list = ctl.json(&["trigger", "list"]);
    let poll_id = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["name"] == "inbox_watch")
        .and_then(|s| s["id"].as_str())
        .expect("inbox_watch's id")
        .to_string();
    assert!(poll_id.contains('/'), "{list}");
    let out = ctl.ok(&["trigger", "inspect", &poll_id]);
    assert!(out.stdout.contains("schedule: every 5s\n"), "{out}");
    ctl.fails(&["trigger", "inspect", "nope"], 3);
    // The workflow's schedules show in its inspect view.
    let out = ctl.ok(&["workflow", "inspect", "report"]);
    assert!(
        line_with(&out, "  nightly_report ").contains("cron"),
        "{out}"
    );
    assert!(
        line_with(&out, "  inbox_watch ").contains("every 5s"),
        "{out}"
    );
}
both_backends!(graphs_and_triggers);
