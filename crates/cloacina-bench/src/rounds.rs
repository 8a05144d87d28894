//! One measured round of a workflow scenario, and how rounds add up to one report.
//!
//! A round starts a fresh runner on a store, submits the scenario's workflows, waits for them
//! and checks every final status and context. Several rounds are run and the median is
//! reported: a single 0.1 s round on a shared machine says more about the machine than about
//! the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cloacina::store::{ExecutionStatus, Store, StoreStats};
use cloacina::{Runner, RunnerConfig};
use cloacina_workflow::{Context, FnTask, Task, TaskError, TaskSpec, Workflow};

/// What one round measured.
#[derive(Debug, Default)]
pub struct Round {
    pub elapsed_s: f64,
    /// Per-workflow latency, creation to completion (database timestamps), in ms.
    pub latencies_ms: Vec<f64>,
    pub failed: usize,
    pub commits: u64,
    pub ops: u64,
    /// SQL statements sent, `BEGIN`/`COMMIT` included.
    pub statements: u64,
    /// CPU time (user + system) of this whole process over the timed part of the round, in
    /// ms: the runner's threads, the store's writer and the bench's own submits and waits.
    pub cpu_ms: f64,
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

fn chain(len: usize) -> Vec<Arc<dyn Task>> {
    (0..len)
        .map(|i| {
            let deps = if i == 0 {
                vec![]
            } else {
                vec![format!("c{}", i - 1)]
            };
            step(&format!("c{i}"), &deps)
        })
        .collect()
}

/// The workflow of a scenario, named after it.
pub fn shape(scenario: &str) -> anyhow::Result<Workflow> {
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
        "chain10" => chain(10),
        "chain40" => chain(40),
        "fanout1000" => (0..1000).map(|i| step(&format!("f{i}"), &[])).collect(),
        other => bail!("unknown scenario '{other}'"),
    };
    Ok(Workflow::new(scenario, None, tasks)?)
}

/// Chains measure the engine's overhead per sequential step, so they run one at a time.
pub fn is_sequential(scenario: &str) -> bool {
    scenario.starts_with("chain")
}

/// How many workflows a round of `scenario` runs.
pub fn workflows_per_round(scenario: &str, requested: Option<usize>) -> usize {
    match scenario {
        "fanout1000" => 1,
        "chain10" => requested.unwrap_or(50),
        "chain40" => requested.unwrap_or(20),
        _ => requested.unwrap_or(150),
    }
}

fn input(i: usize) -> Context {
    let mut c = Context::new();
    let _ = c.set("n", i as i64);
    c
}

/// Runs `n` workflows of `scenario` on a fresh runner over `store`, checks every result and
/// shuts the runner down.
pub async fn round(
    store: &Store,
    scenario: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Round> {
    let wf = shape(scenario)?;
    let runner = Runner::start(
        store.clone(),
        RunnerConfig {
            concurrency,
            ..RunnerConfig::default()
        },
    )
    .await?;
    runner.register(wf);
    let limit = Some(Duration::from_secs(600));
    let before = store.stats();
    let cpu_before = cpu_ms()?;
    timed_part_starts(n);
    let start = Instant::now();
    let ids = if is_sequential(scenario) {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = runner.submit(scenario, input(i)).await?;
            runner.wait(id, limit).await?;
            ids.push(id);
        }
        ids
    } else {
        let ids: Vec<_> =
            futures::future::join_all((0..n).map(|i| runner.submit(scenario, input(i))))
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
        futures::future::try_join_all(ids.iter().map(|id| runner.wait(*id, limit))).await?;
        ids
    };
    let elapsed_s = start.elapsed().as_secs_f64();
    timed_part_ends(n);
    let cpu_ms = cpu_ms()? - cpu_before;

    let after = store.stats();
    let (commits, ops) = counted(&before, &after);
    let mut out = Round {
        elapsed_s,
        latencies_ms: Vec::with_capacity(n),
        commits,
        ops,
        statements: after.statements - before.statements,
        cpu_ms,
        ..Round::default()
    };
    let task_ids: Vec<String> = runner
        .workflow(scenario)
        .map(|w| w.tasks().map(|t| t.spec().id.clone()).collect())
        .unwrap_or_default();
    for (i, id) in ids.iter().enumerate() {
        let res = runner.status(*id).await?;
        let rec = runner.execution(*id).await?;
        if let (Some(done), Some(_)) = (rec.completed_at, rec.started_at) {
            out.latencies_ms.push((done - rec.created_at) as f64);
        }
        let ok = res.status == ExecutionStatus::Completed
            && !task_ids.is_empty()
            && res.context.as_ref().is_some_and(|c| {
                task_ids
                    .iter()
                    .all(|t| c.get::<i64>(&format!("t_{t}")).ok() == Some(i as i64 + 1))
            });
        if !ok {
            out.failed += 1;
        }
    }
    runner.shutdown().await?;
    Ok(out)
}

/// Commits, and storage operations (writes and reads), between two readings of the counters.
pub fn counted(before: &StoreStats, after: &StoreStats) -> (u64, u64) {
    (
        after.commits - before.commits,
        (after.write_ops - before.write_ops) + (after.reads - before.reads),
    )
}

/// Called as a round's timed part starts, so callgrind can count instructions of that part
/// alone (`--dump-before=*timed_part_starts*`, see docs/performance.md). Never inlined, and
/// distinct from [`timed_part_ends`], so both symbols exist.
#[inline(never)]
pub fn timed_part_starts(workflows: usize) {
    std::hint::black_box(workflows);
}

/// Called as a round's timed part ends (`--dump-before=*timed_part_ends*`).
#[inline(never)]
pub fn timed_part_ends(workflows: usize) {
    std::hint::black_box(workflows.wrapping_add(1));
}

/// CPU time (user + system) this process has used so far, in ms. `getrusage` rather than
/// `/proc/self/stat`, whose 10 ms ticks are too coarse for a 50 ms round.
pub fn cpu_ms() -> anyhow::Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
    Ok(ms(usage.user_time()) + ms(usage.system_time()))
}

/// The median of `values` (the lower middle one for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// The `q` quantile of `values` (nearest rank).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let idx = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[idx.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn every_scenario_has_a_valid_shape() {
        for (name, len) in [
            ("simple", 1),
            ("pipeline", 3),
            ("parallel", 5),
            ("chain10", 10),
            ("chain40", 40),
            ("fanout1000", 1000),
            ("history", 1),
        ] {
            assert_eq!(shape(name).expect(name).len(), len, "{name}");
        }
        assert!(shape("nope").is_err());
    }
}
