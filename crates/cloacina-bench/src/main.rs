//! `cloacina-bench`: runs workflow shapes on SQLite and PostgreSQL and prints one JSON object
//! per line and scenario. Every run checks every final status and context, like a test would;
//! `failed` counts the workflows that did not end Completed with the expected context.
//!
//! Each (backend, scenario) pair runs in a child process of its own, so `peak_rss_mb` is that
//! scenario's peak and nothing leaks from one measurement into the next.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use cloacina::store::{ExecutionStatus, Store, StoreOptions};
use cloacina::{Runner, RunnerConfig};
use cloacina_workflow::{Context, FnTask, Task, TaskError, TaskSpec, Workflow};
use serde::Serialize;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const SCENARIOS: [&str; 6] = [
    "simple",
    "pipeline",
    "parallel",
    "chain40",
    "fanout1000",
    "history",
];

#[derive(Parser, Debug, Clone)]
#[command(about = "Cloacina benchmarks: one JSON line per backend and scenario")]
struct Args {
    /// sqlite, postgres or all.
    #[arg(long, default_value = "all")]
    backend: String,
    /// simple, pipeline, parallel, chain40, fanout1000, history or all.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Workflows per scenario (default 150; chain40 runs this many chains one after another,
    /// default 20; fanout1000 is always one workflow of 1,000 tasks).
    #[arg(long)]
    workflows: Option<usize>,
    /// The runner's concurrency limit.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// SQLite durability: full (default) or normal.
    #[arg(long, default_value = "full")]
    sync: String,
    /// Finished executions already in the database for the `history` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    history: usize,
    #[arg(long, env = "CLOACINA_TEST_POSTGRES_URL", default_value = DEFAULT_PG)]
    postgres_url: String,
    /// Internal: run exactly one backend and scenario in this process.
    #[arg(long, hide = true)]
    single: bool,
}

#[derive(Serialize, Debug)]
struct Report {
    scenario: String,
    backend: String,
    workflows: usize,
    tasks_per_workflow: usize,
    concurrency: usize,
    elapsed_s: f64,
    workflows_per_s: f64,
    tasks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mb: f64,
    db_txns_per_task: f64,
    db_ops_per_task: f64,
    failed: usize,
    sync: Option<String>,
}

fn main() {
    let args = Args::parse();
    let result = if args.single {
        run_single(&args)
    } else {
        run_all(&args)
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn pick<'a>(value: &'a str, all: &[&'a str], what: &str) -> anyhow::Result<Vec<&'a str>> {
    if value == "all" {
        return Ok(all.to_vec());
    }
    if all.contains(&value) {
        return Ok(vec![value]);
    }
    bail!(
        "unknown {what} '{value}'; expected one of: {}, all",
        all.join(", ")
    )
}

/// Runs every selected pair in its own child process and relays its JSON line.
fn run_all(args: &Args) -> anyhow::Result<()> {
    let backends = pick(&args.backend, &["sqlite", "postgres"], "backend")?;
    let scenarios = pick(&args.scenario, &SCENARIOS, "scenario")?;
    pick(&args.sync, &["full", "normal"], "sync mode")?;
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let mut failures = 0;
    for backend in &backends {
        for scenario in &scenarios {
            let mut cmd = Command::new(&exe);
            cmd.args(["--single", "--backend", backend, "--scenario", scenario])
                .args(["--concurrency", &args.concurrency.to_string()])
                .args(["--sync", &args.sync, "--history", &args.history.to_string()])
                .args(["--postgres-url", &args.postgres_url]);
            if let Some(n) = args.workflows {
                cmd.args(["--workflows", &n.to_string()]);
            }
            let out = cmd
                .output()
                .with_context(|| format!("running {backend}/{scenario}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
                eprintln!("error: {backend}/{scenario} failed ({})", out.status);
                failures += 1;
                continue;
            }
            for line in stdout.lines() {
                println!("{line}");
                let failed = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["failed"].as_u64())
                    .unwrap_or(1);
                if failed > 0 {
                    failures += 1;
                }
            }
        }
    }
    if failures > 0 {
        bail!("{failures} scenario(s) had failed workflows or did not run");
    }
    Ok(())
}

fn run_single(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(scenario(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// A task that reads `n` and inserts `t_<id> = n + 1`: a small context read and write.
fn step(id: &str, deps: &[String]) -> Arc<dyn Task> {
    let key = format!("t_{id}");
    Arc::new(FnTask::new(
        TaskSpec::new(id).depends_on(deps.iter().cloned()),
        move |ctx: &mut Context| {
            let key = key.clone();
            Box::pin(async move {
                let n: i64 = ctx.get("n")?;
                ctx.insert(key, n + 1)?;
                Ok::<(), TaskError>(())
            })
        },
    ))
}

fn shape(scenario: &str) -> anyhow::Result<Workflow> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let tasks: Vec<Arc<dyn Task>> = match scenario {
        "simple" | "history" => vec![step("a", &[])],
        "pipeline" => vec![step("a", &[]), step("b", &s(&["a"])), step("c", &s(&["b"]))],
        "parallel" => vec![
            step("setup", &[]),
            step("p1", &s(&["setup"])),
            step("p2", &s(&["setup"])),
            step("p3", &s(&["setup"])),
            step("merge", &s(&["p1", "p2", "p3"])),
        ],
        "chain40" => (0..40)
            .map(|i| {
                let deps = if i == 0 {
                    vec![]
                } else {
                    vec![format!("c{}", i - 1)]
                };
                step(&format!("c{i}"), &deps)
            })
            .collect(),
        "fanout1000" => (0..1000).map(|i| step(&format!("f{i}"), &[])).collect(),
        other => bail!("unknown scenario '{other}'"),
    };
    Ok(Workflow::new(scenario, None, tasks)?)
}

struct Db {
    url: String,
    schema: String,
    _dir: Option<tempfile::TempDir>,
}

async fn fresh_db(args: &Args) -> anyhow::Result<Db> {
    match args.backend.as_str() {
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?synchronous={}",
                dir.path().join("bench.db").display(),
                args.sync
            );
            Ok(Db {
                url,
                schema: "public".into(),
                _dir: Some(dir),
            })
        }
        "postgres" => Ok(Db {
            url: args.postgres_url.clone(),
            schema: format!("bench_{}", uuid::Uuid::new_v4().simple()),
            _dir: None,
        }),
        other => bail!("unknown backend '{other}'"),
    }
}

async fn scenario(args: &Args) -> anyhow::Result<Report> {
    let name = args.scenario.as_str();
    let db = fresh_db(args).await?;
    let store = Store::open_with(
        &db.url,
        StoreOptions {
            schema: db.schema.clone(),
            max_connections: 8,
        },
    )
    .await
    .with_context(|| format!("opening {}", args.backend))?;
    if name == "history" {
        seed_history(&db, args.backend.as_str(), args.history).await?;
    }
    let wf = shape(name)?;
    let per = wf.len();
    let runner = Runner::start(
        store.clone(),
        RunnerConfig {
            concurrency: args.concurrency,
            ..RunnerConfig::default()
        },
    )
    .await?;
    runner.register(wf);
    let n = match name {
        "fanout1000" => 1,
        "chain40" => args.workflows.unwrap_or(20),
        _ => args.workflows.unwrap_or(150),
    };
    let before = store.stats();
    let start = Instant::now();
    let ids = if name == "chain40" {
        // One at a time: this measures the engine's overhead per sequential step.
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = runner.submit(name, input(i)).await?;
            runner.wait(id, Some(Duration::from_secs(600))).await?;
            ids.push(id);
        }
        ids
    } else {
        let ids: Vec<_> = futures::future::join_all((0..n).map(|i| runner.submit(name, input(i))))
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        futures::future::try_join_all(
            ids.iter()
                .map(|id| runner.wait(*id, Some(Duration::from_secs(600)))),
        )
        .await?;
        ids
    };
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.stats();

    let mut failed = 0;
    let mut latencies = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        let res = runner.status(*id).await?;
        let rec = runner.execution(*id).await?;
        if let (Some(done), Some(_)) = (rec.completed_at, rec.started_at) {
            latencies.push((done - rec.created_at) as f64);
        }
        let ok = res.status == ExecutionStatus::Completed
            && res.context.as_ref().is_some_and(|c| {
                runner
                    .workflow(name)
                    .map(|w| {
                        w.tasks().all(|t| {
                            c.get::<i64>(&format!("t_{}", t.spec().id)).ok() == Some(i as i64 + 1)
                        })
                    })
                    .unwrap_or(false)
            });
        if !ok {
            failed += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let tasks = (n * per) as f64;
    runner.shutdown().await?;
    if args.backend == "postgres" {
        store.schema_drop().await?;
    }
    Ok(Report {
        scenario: name.to_string(),
        backend: args.backend.clone(),
        workflows: n,
        tasks_per_workflow: per,
        concurrency: args.concurrency,
        elapsed_s: round(elapsed, 4),
        workflows_per_s: round(n as f64 / elapsed, 1),
        tasks_per_s: round(tasks / elapsed, 1),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        peak_rss_mb: peak_rss_mb(),
        db_txns_per_task: round((after.commits - before.commits) as f64 / tasks, 3),
        db_ops_per_task: round(
            ((after.write_ops - before.write_ops) + (after.reads - before.reads)) as f64 / tasks,
            3,
        ),
        failed,
        sync: store.synchronous().map(|s| s.as_str().to_lowercase()),
    })
}

fn input(i: usize) -> Context {
    let mut c = Context::new();
    let _ = c.set("n", i as i64);
    c
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Peak resident set size of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| round(kb / 1024.0, 1))
        .unwrap_or(0.0)
}

/// Writes `count` finished one-task executions (with their task rows, contexts and events)
/// straight into the database, as years of history would leave them.
async fn seed_history(db: &Db, backend: &str, count: usize) -> anyhow::Result<()> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let t = 1_600_000_000_000i64;
    let series = match backend {
        "sqlite" => format!(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {count})"
        ),
        _ => format!("WITH seq(i) AS (SELECT generate_series(1, {count}))"),
    };
    let id = match backend {
        "sqlite" => "printf('00000000-0000-7000-8000-%012d', i)",
        _ => "'00000000-0000-7000-8000-' || lpad(i::text, 12, '0')",
    };
    let sql = format!(
        "{series} INSERT INTO workflow_executions (id, workflow_name, workflow_version, status, total_tasks, remaining_tasks, failed_tasks, event_seq, created_at, updated_at, started_at, completed_at) \
           SELECT {id}, 'history', 'v1', 'Completed', 1, 0, 0, 4, {t} + i, {t} + i, {t} + i, {t} + i FROM seq;
         {series} INSERT INTO task_executions (execution_id, task_id, position, dependents, status, remaining_deps, attempt, max_attempts, recoveries, created_at, updated_at, started_at, completed_at) \
           SELECT {id}, 'a', 0, '[]', 'Completed', 0, 1, 1, 0, {t} + i, {t} + i, {t} + i, {t} + i FROM seq;
         {series} INSERT INTO contexts (execution_id, owner, data, created_at) SELECT {id}, '/final', '{{\"n\":1,\"t_a\":2}}', {t} + i FROM seq;
         {series} INSERT INTO execution_events (execution_id, seq, task_id, kind, attempt, created_at) SELECT {id}, 1, NULL, 'execution_created', NULL, {t} + i FROM seq;
         {series} INSERT INTO execution_events (execution_id, seq, task_id, kind, attempt, created_at) SELECT {id}, 4, NULL, 'execution_completed', NULL, {t} + i FROM seq;"
    );
    match backend {
        "sqlite" => {
            let path = db
                .url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                diesel::SqliteConnection,
            >::establish(&path)
            .await?;
            // The checkpoint moves the bulk load out of the WAL before the clock starts: the
            // scenario measures throughput next to a large history, not the load's aftermath.
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = 60000; BEGIN; {sql} COMMIT; ANALYZE; \
                 PRAGMA wal_checkpoint(TRUNCATE);"
            ))
            .await?;
        }
        _ => {
            let mut c = diesel_async::AsyncPgConnection::establish(&db.url).await?;
            c.batch_execute(&format!(
                "SET search_path TO \"{}\"; BEGIN; {sql} COMMIT; ANALYZE;",
                db.schema
            ))
            .await?;
            // As on SQLite: flush the bulk load now rather than in a checkpoint during the
            // measurement. Needs superuser or pg_checkpoint; without, the run goes on.
            if let Err(e) = c.batch_execute("CHECKPOINT").await {
                eprintln!("history: CHECKPOINT after seeding failed ({e}); measuring anyway");
            }
        }
    }
    Ok(())
}
