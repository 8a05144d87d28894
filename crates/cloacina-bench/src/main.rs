//! `cloacina-bench`: runs workflow shapes on SQLite and PostgreSQL and prints one JSON object
//! per line and scenario. Every run checks every final status and context, like a test would;
//! `failed` counts the workflows that did not end Completed with the expected context.
//!
//! Each (backend, scenario) pair runs in a child process of its own, so `peak_rss_mb` is that
//! scenario's peak and nothing leaks from one measurement into the next. Within it the scenario
//! runs several rounds, each on a fresh database and a fresh runner, and the median round is
//! reported with the slowest and fastest beside it.

mod load;
mod reconcile;
mod rounds;
mod seed;
mod server;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Parser;
use cloacina::store::{Store, StoreOptions};
use rounds::{Round, median, percentile};
use serde::Serialize;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const SCENARIOS: [&str; 9] = [
    "simple",
    "pipeline",
    "parallel",
    "chain10",
    "chain40",
    "fanout1000",
    "history",
    "reconciler",
    "server",
];

#[derive(Parser, Debug, Clone)]
#[command(about = "Cloacina benchmarks: one JSON line per backend and scenario")]
struct Args {
    /// sqlite, postgres or all.
    #[arg(long, default_value = "all")]
    backend: String,
    /// simple, pipeline, parallel, chain10, chain40, fanout1000, history, reconciler, server,
    /// load or all (every one but `load`). `server` runs the real cloacina-server binary (built
    /// beside this one: `cargo build --release -p cloacina-server`) over loopback HTTP; see
    /// --clients and --poll-ms. `load` is the bounded load test of that binary (see --duration
    /// and docs/reliability.md): it fails on any error, not on speed.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Workflows per round (default 150; chain10 and chain40 run this many chains one after
    /// another, default 50 and 20; fanout1000 is always one workflow of 1,000 tasks; the
    /// reconciler does this many load/unload cycles, default 20; server: executions per round,
    /// default 300).
    #[arg(long)]
    workflows: Option<usize>,
    /// Measured rounds per scenario, each on a fresh database; the median round is reported.
    /// `history` runs three times as many, each paired with a `simple` round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The runner's concurrency limit.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// SQLite durability: full (default) or normal.
    #[arg(long, default_value = "full")]
    sync: String,
    /// Finished executions already in the database for the `history` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    history: usize,
    /// `server` and `load`: HTTP clients, each submitting an execution and polling it to its
    /// end before submitting the next. Default: `server` 32 (as many runs in flight as the
    /// in-process scenarios' `--concurrency`, so the two compare like for like), `load` 16.
    #[arg(long,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    clients: Option<usize>,
    /// `server` and `load`: how often a client asks after its execution's status, in ms; 0
    /// (the default) asks once with a long poll (`?wait=`), answered when the run has ended.
    #[arg(long, default_value_t = 0)]
    poll_ms: u64,
    /// `load` only: how long the clients run, in seconds (fractions allowed).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// PostgreSQL to run on; the `server` scenario creates (and drops) a database of its own
    /// there, so the role needs CREATEDB.
    #[arg(long, env = "CLOACINA_TEST_POSTGRES_URL", default_value = DEFAULT_PG)]
    postgres_url: String,
    /// Internal: run exactly one backend and scenario in this process.
    #[arg(long, hide = true)]
    single: bool,
}

#[derive(Serialize, Debug, Default)]
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
    /// `null` for `server`: the store's counters are inside the server process.
    db_txns_per_task: Option<f64>,
    db_ops_per_task: Option<f64>,
    /// Storage operations and SQL statements (`BEGIN`/`COMMIT` included) per workflow over the
    /// measured rounds; `null` for `server`.
    db_ops_per_workflow: Option<f64>,
    db_statements_per_workflow: Option<f64>,
    /// CPU time (user + system) per workflow over the measured rounds (the timed part of each):
    /// of the bench's process, which runs the engine, or for `server` of the server process.
    /// Unlike the clock, it does not swing with the machine's phases.
    cpu_ms_per_workflow: Option<f64>,
    failed: usize,
    sync: Option<String>,
    rounds: u32,
    /// The slowest and fastest rounds' throughput; `workflows_per_s` is the median round's.
    workflows_per_s_min: f64,
    workflows_per_s_max: f64,
    /// `history` only: the median over pairs of rounds of its throughput over that of a
    /// `simple` round run beside it in the same process (so both see the same machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_simple: Option<f64>,
    /// `reconciler` only: `p50_ms`/`p99_ms` are loads, these are unloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    unload_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unload_p99_ms: Option<f64>,
    /// `server` only: HTTP clients; `p50_ms`/`p99_ms` are submit to seen completed, these the
    /// 202 answer of the submit.
    #[serde(skip_serializing_if = "Option::is_none")]
    clients: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accept_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accept_p99_ms: Option<f64>,
    /// `server` only: status polls per execution, and the interval between them.
    #[serde(skip_serializing_if = "Option::is_none")]
    polls_per_workflow: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    poll_ms: Option<u64>,
    /// `server` only: CPU time (user + system) of the bench's client threads per execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cpu_ms_per_workflow: Option<f64>,
    /// `server` only: the server's own mean time to answer a submit and a status poll (from
    /// its `/metrics`), in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_execute_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_poll_ms: Option<f64>,
}

/// The allocator the server and the daemon use, so the bench measures what they run: glibc's
/// malloc and free were a quarter of the database writer thread's instructions
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // `load` runs for a set time and judges errors, not speed: only when asked for by name.
    let scenarios = if args.scenario == "load" {
        vec!["load"]
    } else {
        pick(&args.scenario, &SCENARIOS, "scenario")?
    };
    pick(&args.sync, &["full", "normal"], "sync mode")?;
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let mut failures = 0;
    for backend in &backends {
        for scenario in &scenarios {
            let mut cmd = Command::new(&exe);
            cmd.args(["--single", "--backend", backend, "--scenario", scenario])
                .args(["--concurrency", &args.concurrency.to_string()])
                .args(["--sync", &args.sync, "--history", &args.history.to_string()])
                .args(["--rounds", &args.rounds.to_string()])
                .args(["--poll-ms", &args.poll_ms.to_string()])
                .args(["--duration", &args.duration.to_string()])
                .args(["--postgres-url", &args.postgres_url]);
            if let Some(n) = args.workflows {
                cmd.args(["--workflows", &n.to_string()]);
            }
            if let Some(n) = args.clients {
                cmd.args(["--clients", &n.to_string()]);
            }
            let out = cmd
                .output()
                .with_context(|| format!("running {backend}/{scenario}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                // A scenario that ran but failed its checks still printed its report.
                print!("{stdout}");
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
    if args.scenario == "load" {
        let (line, ok) = rt.block_on(load::run(args))?;
        println!("{line}");
        if !ok {
            bail!("the load test failed: see `failed`, `errors` and `rss_stable` in its report");
        }
        return Ok(());
    }
    let report = rt.block_on(scenario(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// A database for one round: a SQLite file in a temp directory, or a PostgreSQL schema of its
/// own (dropped by [`Db::close`]).
struct Db {
    url: String,
    schema: String,
    store: Store,
    /// The temp directory of a SQLite file; `None` for a PostgreSQL schema, dropped on close.
    dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn fresh(args: &Args) -> anyhow::Result<Db> {
        let (url, schema, dir) = match args.backend.as_str() {
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!(
                    "sqlite://{}?synchronous={}",
                    dir.path().join("bench.db").display(),
                    args.sync
                );
                (url, "public".to_string(), Some(dir))
            }
            "postgres" => (
                args.postgres_url.clone(),
                format!("bench_{}", uuid::Uuid::new_v4().simple()),
                None,
            ),
            other => bail!("unknown backend '{other}'"),
        };
        let store = open(&url, &schema).await?;
        Ok(Db {
            url,
            schema,
            store,
            dir,
        })
    }

    /// Another store on the same database: new connections, as a new process would have.
    async fn reopen(&self) -> anyhow::Result<Store> {
        open(&self.url, &self.schema).await
    }

    /// SQLite's `synchronous` mode as the report spells it; `None` on PostgreSQL.
    fn sync_name(&self) -> Option<String> {
        self.store.synchronous().map(|s| s.as_str().to_lowercase())
    }

    async fn close(self) -> anyhow::Result<()> {
        if self.dir.is_none() {
            self.store.schema_drop().await?;
        }
        Ok(())
    }
}

async fn open(url: &str, schema: &str) -> anyhow::Result<Store> {
    let options = StoreOptions {
        schema: schema.to_string(),
        max_connections: 8,
    };
    Store::open_with(url, options)
        .await
        .with_context(|| format!("opening {}", url.split('?').next().unwrap_or(url)))
}

async fn scenario(args: &Args) -> anyhow::Result<Report> {
    match args.scenario.as_str() {
        "history" => history(args).await,
        "reconciler" => reconciler(args).await,
        "server" => server::run(args).await,
        name => {
            let n = rounds::workflows_per_round(name, args.workflows);
            let mut done = Vec::new();
            let mut sync = None;
            for _ in 0..args.rounds {
                let db = Db::fresh(args).await?;
                sync = db.sync_name();
                done.push(rounds::round(&db.store, name, n, args.concurrency).await?);
                db.close().await?;
            }
            report(args, name, n, &done, sync)
        }
    }
}

/// `simple` next to a large history: rounds on one seeded database, each paired with a
/// `simple` round on a fresh database (alternating which goes first), so the ratio of the two
/// compares like with like on a machine whose speed drifts. Each history round opens the
/// database anew, as each simple round does, so neither has warmer connections.
async fn history(args: &Args) -> anyhow::Result<Report> {
    let n = rounds::workflows_per_round("history", args.workflows);
    let seeded = Db::fresh(args).await?;
    seed::seed_history(&seeded, args.backend.as_str(), args.history).await?;
    let (mut hist, mut simple) = (Vec::new(), Vec::new());
    // Three times the pairs: the result is a ratio of two noisy numbers, and the seeding, not
    // the rounds, is what takes the time here.
    for i in 0..args.rounds * 3 {
        for history_first in [i % 2 == 0, i % 2 != 0] {
            if history_first {
                let store = seeded.reopen().await?;
                hist.push(rounds::round(&store, "history", n, args.concurrency).await?);
            } else {
                let db = Db::fresh(args).await?;
                simple.push(rounds::round(&db.store, "simple", n, args.concurrency).await?);
                db.close().await?;
            }
        }
    }
    let sync = seeded.sync_name();
    seeded.close().await?;
    let mut out = report(args, "history", n, &hist, sync)?;
    // The median of the pairs' ratios: a drift of the machine's speed between pairs cancels.
    let ratios: Vec<f64> = hist
        .iter()
        .zip(&simple)
        .map(|(h, s)| s.elapsed_s / h.elapsed_s)
        .collect();
    out.vs_simple = Some(round(median(&ratios), 3));
    out.failed += simple.iter().map(|r| r.failed).sum::<usize>();
    Ok(out)
}

async fn reconciler(args: &Args) -> anyhow::Result<Report> {
    let n = args.workflows.unwrap_or(20);
    let dir = tempfile::tempdir()?;
    let archive = reconcile::example_archive(dir.path())?;
    let db = Db::fresh(args).await?;
    let (before, cpu_before) = (db.store.stats(), rounds::cpu_ms()?);
    let c = reconcile::cycles(&db.store, &archive, n).await?;
    let cpu_ms = rounds::cpu_ms()? - cpu_before;
    let statements = db.store.stats().statements - before.statements;
    let sync = db.sync_name();
    db.close().await?;
    let elapsed: f64 = c.load_ms.iter().chain(&c.unload_ms).sum::<f64>() / 1e3;
    let cycles_per_s = round(n as f64 / elapsed.max(1e-9), 1);
    Ok(Report {
        scenario: "reconciler".into(),
        backend: args.backend.clone(),
        workflows: n,
        tasks_per_workflow: 1,
        concurrency: cloacina::RunnerConfig::default().concurrency,
        elapsed_s: round(elapsed, 4),
        workflows_per_s: cycles_per_s,
        tasks_per_s: cycles_per_s,
        p50_ms: round(percentile(&c.load_ms, 0.50), 2),
        p99_ms: round(percentile(&c.load_ms, 0.99), 2),
        peak_rss_mb: peak_rss_mb(),
        db_txns_per_task: Some(round(c.commits as f64 / n as f64, 3)),
        db_ops_per_task: Some(round(c.ops as f64 / n as f64, 3)),
        db_ops_per_workflow: Some(round(c.ops as f64 / n as f64, 3)),
        db_statements_per_workflow: Some(round(statements as f64 / n as f64, 3)),
        cpu_ms_per_workflow: Some(round(cpu_ms / n as f64, 3)),
        failed: c.failed,
        sync,
        rounds: 1,
        workflows_per_s_min: cycles_per_s,
        workflows_per_s_max: cycles_per_s,
        vs_simple: None,
        unload_p50_ms: Some(round(percentile(&c.unload_ms, 0.50), 2)),
        unload_p99_ms: Some(round(percentile(&c.unload_ms, 0.99), 2)),
        ..Report::default()
    })
}

/// One report from the rounds of a workflow scenario: the median round's throughput (and the
/// time that takes), latencies pooled over all rounds, counters summed.
fn report(
    args: &Args,
    name: &str,
    n: usize,
    done: &[Round],
    sync: Option<String>,
) -> anyhow::Result<Report> {
    let per = rounds::shape(name)?.len();
    let rates: Vec<f64> = done.iter().map(|r| n as f64 / r.elapsed_s).collect();
    let rate = median(&rates);
    let latencies: Vec<f64> = done.iter().flat_map(|r| r.latencies_ms.clone()).collect();
    let tasks = (n * per * done.len()) as f64;
    let workflows = (n * done.len()) as f64;
    Ok(Report {
        scenario: name.to_string(),
        backend: args.backend.clone(),
        workflows: n,
        tasks_per_workflow: per,
        concurrency: args.concurrency,
        elapsed_s: round(n as f64 / rate, 4),
        workflows_per_s: round(rate, 1),
        tasks_per_s: round(rate * per as f64, 1),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        peak_rss_mb: peak_rss_mb(),
        db_txns_per_task: Some(round(
            done.iter().map(|r| r.commits).sum::<u64>() as f64 / tasks,
            3,
        )),
        db_ops_per_task: Some(round(
            done.iter().map(|r| r.ops).sum::<u64>() as f64 / tasks,
            3,
        )),
        db_ops_per_workflow: Some(round(
            done.iter().map(|r| r.ops).sum::<u64>() as f64 / workflows,
            3,
        )),
        db_statements_per_workflow: Some(round(
            done.iter().map(|r| r.statements).sum::<u64>() as f64 / workflows,
            3,
        )),
        cpu_ms_per_workflow: Some(round(
            done.iter().map(|r| r.cpu_ms).sum::<f64>() / workflows,
            4,
        )),
        failed: done.iter().map(|r| r.failed).sum(),
        sync,
        rounds: done.len() as u32,
        workflows_per_s_min: round(rates.iter().copied().fold(f64::INFINITY, f64::min), 1),
        workflows_per_s_max: round(rates.iter().copied().fold(0.0, f64::max), 1),
        vs_simple: None,
        ..Report::default()
    })
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
