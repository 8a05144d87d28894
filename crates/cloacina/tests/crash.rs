//! Crash test with real processes: a child process runs workflows and is killed with SIGKILL
//! at random moments, several times; every workflow must still reach Completed, no committed
//! result may be lost, and re-executed task bodies are counted and bounded by the kills.
//!
//! The child is this same test binary, re-run with `crash_child` selected and its orders in
//! environment variables.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cloacina::store::{ExecutionStatus, NewExecution, Store, event_kind};
use cloacina::workflow::{Context, FnTask, Task, TaskError, TaskSpec, Workflow};
use cloacina::{Runner, RunnerConfig};
use common::{Backend, TestDb};
use rand::RngExt;

const CHILD_URL: &str = "CLOACINA_CRASH_CHILD_URL";
const CHILD_SCHEMA: &str = "CLOACINA_CRASH_CHILD_SCHEMA";
const CHILD_LOG: &str = "CLOACINA_CRASH_CHILD_LOG";
const WORKFLOWS: usize = 40;
const KILLS: usize = 5;
const CONCURRENCY: usize = 4;
/// Tasks held beyond the running ones: waiting for a slot, or run and waiting for the commit
/// of their result.
const PREFETCH: usize = 4;
const TASKS: [&str; 6] = ["start", "w0", "w1", "w2", "w3", "join"];

/// start -> (w0..w3) -> join. Each body logs that it ran, then works for a few milliseconds.
fn crashy(log: Option<std::path::PathBuf>) -> Workflow {
    let log = Arc::new(log);
    let tasks: Vec<Arc<dyn Task>> = TASKS
        .iter()
        .map(|&name| {
            let deps: Vec<&str> = match name {
                "start" => vec![],
                "join" => vec!["w0", "w1", "w2", "w3"],
                _ => vec!["start"],
            };
            let log = log.clone();
            let body = FnTask::new(
                TaskSpec::new(name).depends_on(deps),
                move |ctx: &mut Context| {
                    let log = log.clone();
                    Box::pin(async move {
                        let n: i64 = ctx.get("n")?;
                        if let Some(path) = log.as_ref() {
                            use std::io::Write;
                            let mut f = std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(path)
                                .map_err(|e| TaskError::failed(e.to_string()))?;
                            // One write(2) per line: concurrent bodies append whole lines,
                            // never interleaved fragments.
                            f.write_all(format!("{n} {name}\n").as_bytes())
                                .map_err(|e| TaskError::failed(e.to_string()))?;
                        }
                        let ms = rand::rng().random_range(5..40);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        ctx.set(name, n * 10)?;
                        Ok(())
                    })
                },
            );
            Arc::new(body) as Arc<dyn Task>
        })
        .collect();
    Workflow::new("crashy", None, tasks).expect("valid")
}

/// The child: runs the crash workflow until killed. A no-op when run as a normal test.
#[test]
fn crash_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let schema = std::env::var(CHILD_SCHEMA).unwrap_or_else(|_| "public".into());
    let log = std::env::var(CHILD_LOG).ok().map(std::path::PathBuf::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = Store::open_with(
            &url,
            cloacina::store::StoreOptions {
                schema,
                ..Default::default()
            },
        )
        .await
        .expect("child store");
        let config = RunnerConfig {
            concurrency: CONCURRENCY,
            prefetch: Some(PREFETCH),
            lease: Duration::from_millis(1000),
            recovery_interval: Duration::from_millis(250),
            poll_interval: Duration::from_millis(200),
            ..RunnerConfig::default()
        };
        let runner = Runner::start(store, config).await.expect("child runner");
        runner.register(crashy(log));
        futures::future::pending::<()>().await;
    });
}

fn spawn_child(db: &TestDb, log: &std::path::Path) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_URL, &db.url)
        .env(CHILD_SCHEMA, &db.schema)
        .env(CHILD_LOG, log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

async fn crash_and_recover(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open().await;
    let wf = crashy(None);
    let mut ids = Vec::new();
    for n in 0..WORKFLOWS {
        let input = Context::from_value(serde_json::json!({ "n": n })).expect("ctx");
        let rec = store
            .execution_create(NewExecution::for_workflow(&wf, input, None))
            .await
            .expect("create");
        ids.push((rec.id, n as i64));
    }
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("bodies.log");

    for _ in 0..KILLS {
        let mut child = spawn_child(&db, &log);
        let ms = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    let mut child = spawn_child(&db, &log);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let mut done = 0;
        for (id, _) in &ids {
            let rec = store
                .execution_get(*id)
                .await
                .expect("get")
                .expect("exists");
            if rec.status.is_terminal() {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done}/{} finished",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let mut recoveries = 0usize;
    for (id, n) in &ids {
        let rec = store
            .execution_get(*id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            rec.status,
            ExecutionStatus::Completed,
            "execution {id}: {:?}",
            rec.error
        );
        let fin = store
            .context_get(*id, cloacina::store::FINAL_CONTEXT)
            .await
            .expect("final")
            .expect("has final");
        assert_eq!(fin.get::<i64>("join").expect("join"), n * 10);
        let outputs = store
            .contexts_get(*id, TASKS.iter().map(|t| t.to_string()).collect())
            .await
            .expect("outputs");
        for t in TASKS {
            let out = outputs
                .get(t)
                .unwrap_or_else(|| panic!("committed output of {t} in {id} lost"));
            assert_eq!(out.get::<i64>(t).expect("value"), n * 10);
        }
        recoveries += store
            .event_list(*id, 0, 10_000)
            .await
            .expect("events")
            .iter()
            .filter(|e| e.kind == event_kind::TASK_RECOVERED)
            .count();
    }

    let text = std::fs::read_to_string(&log).expect("body log");
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *runs.entry(line).or_default() += 1;
    }
    assert_eq!(
        runs.len(),
        WORKFLOWS * TASKS.len(),
        "every body ran at least once"
    );
    let reexecuted: usize = runs.values().map(|c| c - 1).sum();
    println!(
        "crash test ({backend:?}): {KILLS} kills, {reexecuted} re-executed task bodies, {recoveries} lease recoveries"
    );
    // A kill loses at most the bodies of the tasks the runner held (running, or run with
    // their result not yet committed), and only a lost lease re-runs a body.
    assert!(
        reexecuted <= KILLS * (CONCURRENCY + PREFETCH),
        "{reexecuted} re-executions for {KILLS} kills"
    );
    assert!(
        reexecuted <= recoveries,
        "{reexecuted} re-executions but only {recoveries} recoveries"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_repeated_sigkill() {
    crash_and_recover(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_repeated_sigkill() {
    crash_and_recover(Backend::Postgres).await;
}
