//! The `load` scenario: a bounded load test of the real `cloacina-server` binary over loopback
//! HTTP for a fixed time, judged on errors and memory, not on speed.
//!
//! The server is started as in the `server` scenario (its binary beside the bench's, a temp
//! home, a fresh SQLite file or PostgreSQL database, `hello-orders` uploaded). Then, until
//! `--duration` has passed, `--clients` threads each repeat one closed loop, so the work in
//! flight stays bounded however fast or slow the server is:
//!
//! 1. `POST /v1/tenants/public/workflows/hello/execute` (202);
//! 2. one of the execution lists: `GET .../executions?workflow=hello&limit=20`, or
//!    `GET .../executions?status=Completed&limit=50&offset=50` every other time;
//! 3. `GET /v1/tenants/public/workflows`, then `GET /v1/packages`;
//! 4. `GET .../executions/{id}?wait=30s` (a long poll; or plain every `--poll-ms`) until the
//!    run has ended, which must be `Completed` with the greeting `hello` writes.
//!
//! Every answer that is not the expected 2xx, every transport error and every run that did not
//! complete as expected is counted; one is a failure (exit 1). A sampler reads the server's
//! `VmRSS` and open file descriptors from `/proc` every second. Memory is *stable* when the
//! mean RSS over the last window is at most [`RSS_BOUND_FRACTION`] above the first window's
//! mean plus [`RSS_BOUND_MB`]; a window is a minute, or a tenth of the run if that is shorter.
//! The judgement is enforced (exit 1 otherwise) only for runs of at least
//! [`RSS_JUDGED_FROM`]: in a short run the first window still holds the server's warm-up
//! (caches, pools and the allocator filling), so there it is reported, not judged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::rounds::percentile;
use crate::server::{self, RUN_LIMIT, Server, TENANT, WORKFLOW};
use crate::{Args, round};

/// Clients by default: a steady load well inside the server's limits.
const CLIENTS: usize = 16;

/// RSS may grow by this fraction of the first window's mean, plus [`RSS_BOUND_MB`], between
/// the first and the last window: room for caches that fill slowly (SQLite's page cache per
/// connection, the allocator's arenas), none for growth in proportion to the work done.
const RSS_BOUND_FRACTION: f64 = 0.10;
const RSS_BOUND_MB: f64 = 8.0;
/// Runs at least this long have their RSS judged.
const RSS_JUDGED_FROM: Duration = Duration::from_secs(300);
/// The comparison window's length, at most.
const WINDOW_MAX: Duration = Duration::from_secs(60);
/// Error messages kept per endpoint for the report.
const ERROR_SAMPLES: usize = 3;

/// The requests a client makes, as the report names them.
const EXECUTE: &str = "POST /v1/tenants/public/workflows/hello/execute";
const LIST_BY_WORKFLOW: &str = "GET /v1/tenants/public/executions?workflow=hello&limit=20";
const LIST_BY_STATUS: &str =
    "GET /v1/tenants/public/executions?status=Completed&limit=50&offset=50";
const WORKFLOWS: &str = "GET /v1/tenants/public/workflows";
const PACKAGES: &str = "GET /v1/packages";
const POLL: &str = "GET /v1/tenants/public/executions/{id}";
const ENDPOINTS: [&str; 6] = [
    EXECUTE,
    LIST_BY_WORKFLOW,
    LIST_BY_STATUS,
    WORKFLOWS,
    PACKAGES,
    POLL,
];

/// One answered request: when it started (s since the run began) and how long it took (ms).
#[derive(Debug, Clone, Copy)]
struct Timed {
    at_s: f32,
    ms: f32,
}

/// What the client threads record, per endpoint.
#[derive(Default)]
struct Book {
    samples: BTreeMap<&'static str, Vec<Timed>>,
    errors: BTreeMap<&'static str, u64>,
    error_samples: BTreeMap<&'static str, Vec<String>>,
    executions: u64,
    executions_failed: u64,
    failed_samples: Vec<String>,
}

/// One `/proc` sample of the server.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    at_s: f64,
    rss_mb: f64,
    fds: usize,
    threads: usize,
}

#[derive(Serialize, Debug)]
struct EndpointReport {
    requests: usize,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// p99 in the first and in the last window: a list that slows as history grows shows here.
    first_window_p99_ms: f64,
    last_window_p99_ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    error_samples: Vec<String>,
}

#[derive(Serialize, Debug)]
struct LoadReport {
    scenario: &'static str,
    backend: String,
    sync: Option<String>,
    duration_s: f64,
    clients: usize,
    poll_ms: u64,
    requests: usize,
    requests_per_s: f64,
    errors: u64,
    executions: u64,
    executions_per_s: f64,
    executions_failed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_samples: Vec<String>,
    endpoints: BTreeMap<&'static str, EndpointReport>,
    window_s: f64,
    rss_first_window_mb: f64,
    rss_last_window_mb: f64,
    rss_growth_mb: f64,
    rss_bound_mb: f64,
    rss_min_mb: f64,
    rss_max_mb: f64,
    /// Whether the RSS bound was enforced (runs of at least five minutes).
    rss_judged: bool,
    rss_stable: bool,
    fds_first: usize,
    fds_last: usize,
    threads_first: usize,
    threads_last: usize,
    server_peak_rss_mb: f64,
    server_cpu_s: f64,
    /// The machine's 1-minute load average at the end, to read the timings against.
    load_average: Option<f64>,
    /// Errors, failed executions, and 1 if the judged RSS was not stable: 0 is a pass.
    failed: u64,
}

pub async fn run(args: &Args) -> anyhow::Result<(String, bool)> {
    let duration = Duration::from_secs_f64(args.duration);
    if duration < Duration::from_secs(1) {
        bail!("--duration must be at least 1 second");
    }
    let binary = server::server_binary()?;
    let work = tempfile::tempdir()?;
    let archive = crate::reconcile::example_archive(work.path())?;
    let (url, database) = server::database_for(args, work.path()).await?;
    let home = work.path().join("home");
    let (clients, poll) = (
        args.clients.unwrap_or(CLIENTS),
        Duration::from_millis(args.poll_ms),
    );
    let result = tokio::task::spawn_blocking(move || {
        let mut server = Server::start(&binary, &home, &url)?;
        let result = drive(&server, &archive, duration, clients, poll);
        let stopped = server.stop();
        let out = result.map_err(|e| e.context(server.log_tail()))?;
        stopped.map_err(|e| e.context(server.log_tail()))?;
        Ok::<_, anyhow::Error>(out)
    })
    .await
    .context("the load scenario's client threads")?;
    if let Some(db) = database {
        db.drop().await?;
    }
    let (book, procs, elapsed, cpu_s, peak) = result?;
    let sync = (args.backend == "sqlite").then(|| args.sync.clone());
    let report = report(
        &args.backend,
        sync,
        (clients, poll),
        duration,
        elapsed,
        book,
        &procs,
        cpu_s,
        peak,
    );
    let ok = report.failed == 0;
    Ok((serde_json::to_string(&report)?, ok))
}

type Driven = (Book, Vec<ProcSample>, f64, f64, f64);

/// Uploads the package, then runs the clients and the sampler until `duration` has passed.
fn drive(
    server: &Server,
    archive: &Path,
    duration: Duration,
    clients: usize,
    poll: Duration,
) -> anyhow::Result<Driven> {
    let auth = format!("Bearer {}", server.key);
    let bytes = std::fs::read(archive)?;
    let (status, body) = server::json(
        server::agent()
            .post(format!("{}/v1/tenants/{TENANT}/workflows", server.base))
            .header("Authorization", &auth)
            .content_type("application/octet-stream")
            .send(&bytes[..])?,
    )?;
    if status != 201 || body["state"] != "loaded" {
        bail!("uploading {} answered {status}: {body}", archive.display());
    }
    let pid = server.pid();
    let cpu_before = server::cpu_ms(pid)?;
    let book = Mutex::new(Book::default());
    let procs = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let died = AtomicBool::new(false);
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // One sample a second until the clients stop; a server that is gone ends the run.
            while !stop.load(Ordering::Relaxed) {
                match proc_sample(pid, start) {
                    Some(s) => procs.lock().unwrap_or_else(|e| e.into_inner()).push(s),
                    None => {
                        died.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                let wait = Duration::from_secs(1);
                let until = Instant::now() + wait;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let agent = server::agent();
                    let mut local = Book::default();
                    let mut turn = 0u64;
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        iteration(&agent, server, &auth, i, turn, poll, start, &mut local);
                        turn += 1;
                    }
                    book.lock().unwrap_or_else(|e| e.into_inner()).merge(local);
                })
            })
            .collect();
        // The clients end on their own at the deadline (or when the server is gone); then the
        // sampler is told to stop.
        for h in handles {
            if h.join().is_err() {
                let mut all = book.lock().unwrap_or_else(|e| e.into_inner());
                all.error("client thread", "a client thread panicked".to_string());
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    if died.load(Ordering::Relaxed) {
        bail!("the server exited during the load test");
    }
    let cpu_s = (server::cpu_ms(pid)? - cpu_before) / 1e3;
    let peak = server::peak_rss_mb_of(pid)?;
    let book = book.into_inner().unwrap_or_else(|e| e.into_inner());
    let procs = procs.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok((book, procs, elapsed, cpu_s, peak))
}

impl Book {
    fn merge(&mut self, other: Book) {
        for (k, v) in other.samples {
            self.samples.entry(k).or_default().extend(v);
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.error_samples {
            let mine = self.error_samples.entry(k).or_default();
            mine.extend(v);
            mine.truncate(ERROR_SAMPLES);
        }
        self.executions += other.executions;
        self.executions_failed += other.executions_failed;
        self.failed_samples.extend(other.failed_samples);
        self.failed_samples.truncate(ERROR_SAMPLES);
    }

    fn error(&mut self, endpoint: &'static str, message: String) {
        *self.errors.entry(endpoint).or_default() += 1;
        let kept = self.error_samples.entry(endpoint).or_default();
        if kept.len() < ERROR_SAMPLES {
            kept.push(message);
        }
    }
}

/// One request: its answer's status and JSON body, timed and recorded; `None` (and an error
/// counted) unless the status is `expect`.
fn call(
    book: &mut Book,
    start: Instant,
    endpoint: &'static str,
    expect: u16,
    send: impl FnOnce() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Option<Value> {
    let at = Instant::now();
    let answer = send().map_err(anyhow::Error::from).and_then(server::json);
    let ms = at.elapsed().as_secs_f64() * 1e3;
    book.samples.entry(endpoint).or_default().push(Timed {
        at_s: (at - start).as_secs_f32(),
        ms: ms as f32,
    });
    match answer {
        Ok((status, body)) if status == expect => Some(body),
        Ok((status, body)) => {
            book.error(endpoint, format!("answered {status}: {body}"));
            None
        }
        Err(e) => {
            book.error(endpoint, format!("{e:#}"));
            // A refused connection fails at once: do not spin on a server that is going away.
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    }
}

/// One closed loop of a client: submit, list, list, list, poll the run to its end.
#[allow(clippy::too_many_arguments)]
fn iteration(
    agent: &ureq::Agent,
    server: &Server,
    auth: &str,
    i: u64,
    turn: u64,
    poll: Duration,
    start: Instant,
    book: &mut Book,
) {
    let base = &server.base;
    let name = format!("l{i}");
    let body = serde_json::json!({ "context": { "name": name } }).to_string();
    let accepted = call(book, start, EXECUTE, 202, || {
        agent
            .post(format!(
                "{base}/v1/tenants/{TENANT}/workflows/{WORKFLOW}/execute"
            ))
            .header("Authorization", auth)
            .content_type("application/json")
            .send(body.as_str())
    });
    let (list, query) = if turn.is_multiple_of(2) {
        (LIST_BY_WORKFLOW, "workflow=hello&limit=20")
    } else {
        (LIST_BY_STATUS, "status=Completed&limit=50&offset=50")
    };
    if let Some(v) = call(book, start, list, 200, || {
        agent
            .get(format!("{base}/v1/tenants/{TENANT}/executions?{query}"))
            .header("Authorization", auth)
            .call()
    }) && (v["items"].as_array().is_none() || v["total"].as_u64().is_none())
    {
        book.error(list, format!("not a list: {v}"));
    }
    if let Some(v) = call(book, start, WORKFLOWS, 200, || {
        agent
            .get(format!("{base}/v1/tenants/{TENANT}/workflows"))
            .header("Authorization", auth)
            .call()
    }) && !v["items"]
        .as_array()
        .is_some_and(|a| a.iter().any(|w| w["workflow_name"] == WORKFLOW))
    {
        book.error(WORKFLOWS, format!("'{WORKFLOW}' not listed: {v}"));
    }
    if let Some(v) = call(book, start, PACKAGES, 200, || {
        agent
            .get(format!("{base}/v1/packages"))
            .header("Authorization", auth)
            .call()
    }) && v["total"].as_u64() != Some(1)
    {
        book.error(PACKAGES, format!("expected the one package: {v}"));
    }
    let Some(id) = accepted.and_then(|a| a["execution_id"].as_str().map(str::to_string)) else {
        return;
    };
    book.executions += 1;
    let url = server::status_url(base, &id, poll);
    let submitted = Instant::now();
    loop {
        std::thread::sleep(poll);
        let Some(rec) = call(book, start, POLL, 200, || {
            agent.get(&url).header("Authorization", auth).call()
        }) else {
            if submitted.elapsed() > RUN_LIMIT {
                break;
            }
            continue;
        };
        let state = rec["status"].as_str().unwrap_or_default();
        if matches!(state, "Completed" | "Failed" | "Cancelled") {
            let expected = format!("hello, {name}");
            if state != "Completed" || rec["result"]["greeting"].as_str() != Some(&expected) {
                book.executions_failed += 1;
                if book.failed_samples.len() < ERROR_SAMPLES {
                    book.failed_samples.push(format!("{id}: {rec}"));
                }
            }
            return;
        }
        if submitted.elapsed() > RUN_LIMIT {
            break;
        }
    }
    book.executions_failed += 1;
    if book.failed_samples.len() < ERROR_SAMPLES {
        book.failed_samples
            .push(format!("{id}: not ended within {RUN_LIMIT:?}"));
    }
}

/// The server's RSS, open descriptors and threads now; `None` once it has exited.
fn proc_sample(pid: u32, start: Instant) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    // A zombie (exited, not yet reaped) has no VmRSS line.
    let rss_kb = field("VmRSS:")?;
    let threads = field("Threads:").unwrap_or(0.0) as usize;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    Some(ProcSample {
        at_s: start.elapsed().as_secs_f64(),
        rss_mb: rss_kb / 1024.0,
        fds,
        threads,
    })
}

/// The comparison window for a run of `duration`: a minute, or a tenth of the run if shorter.
fn window(duration: Duration) -> Duration {
    (duration / 10).min(WINDOW_MAX).max(Duration::from_secs(1))
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Whether a growth from `first` to `last` (MB) is within the bound, and the bound.
fn rss_within_bound(first: f64, last: f64) -> (bool, f64) {
    let bound = first * RSS_BOUND_FRACTION + RSS_BOUND_MB;
    (last - first <= bound, bound)
}

#[allow(clippy::too_many_arguments)]
fn report(
    backend: &str,
    sync: Option<String>,
    (clients, poll): (usize, Duration),
    duration: Duration,
    elapsed: f64,
    book: Book,
    procs: &[ProcSample],
    cpu_s: f64,
    peak: f64,
) -> LoadReport {
    let w = window(duration).as_secs_f64();
    let end = elapsed;
    let first = |at: f64| at < w;
    let last = |at: f64| at >= end - w;
    let mut endpoints = BTreeMap::new();
    let mut requests = 0;
    for name in ENDPOINTS {
        let samples = book.samples.get(name).map(Vec::as_slice).unwrap_or(&[]);
        requests += samples.len();
        let all: Vec<f64> = samples.iter().map(|t| f64::from(t.ms)).collect();
        let pick = |keep: &dyn Fn(f64) -> bool| -> Vec<f64> {
            samples
                .iter()
                .filter(|t| keep(f64::from(t.at_s)))
                .map(|t| f64::from(t.ms))
                .collect()
        };
        endpoints.insert(
            name,
            EndpointReport {
                requests: samples.len(),
                errors: book.errors.get(name).copied().unwrap_or(0),
                p50_ms: round(percentile(&all, 0.50), 2),
                p99_ms: round(percentile(&all, 0.99), 2),
                max_ms: round(all.iter().copied().fold(0.0, f64::max), 2),
                first_window_p99_ms: round(percentile(&pick(&first), 0.99), 2),
                last_window_p99_ms: round(percentile(&pick(&last), 0.99), 2),
                error_samples: book.error_samples.get(name).cloned().unwrap_or_default(),
            },
        );
    }
    let errors: u64 = book.errors.values().sum();
    let rss_first = mean(procs.iter().filter(|p| first(p.at_s)).map(|p| p.rss_mb));
    let rss_last = mean(procs.iter().filter(|p| last(p.at_s)).map(|p| p.rss_mb));
    let (stable, bound) = rss_within_bound(rss_first, rss_last);
    let judged = duration >= RSS_JUDGED_FROM;
    let of = |f: &dyn Fn(&ProcSample) -> usize, from_end: bool| {
        let p = if from_end {
            procs.last()
        } else {
            procs.first()
        };
        p.map(f).unwrap_or(0)
    };
    let failed = errors + book.executions_failed + u64::from(judged && !stable);
    LoadReport {
        scenario: "load",
        backend: backend.to_string(),
        sync,
        duration_s: round(elapsed, 1),
        clients,
        poll_ms: u64::try_from(poll.as_millis()).unwrap_or(u64::MAX),
        requests,
        requests_per_s: round(requests as f64 / elapsed.max(1e-9), 1),
        errors,
        executions: book.executions,
        executions_per_s: round(book.executions as f64 / elapsed.max(1e-9), 1),
        executions_failed: book.executions_failed,
        failed_samples: book.failed_samples,
        endpoints,
        window_s: round(w, 1),
        rss_first_window_mb: round(rss_first, 1),
        rss_last_window_mb: round(rss_last, 1),
        rss_growth_mb: round(rss_last - rss_first, 1),
        rss_bound_mb: round(bound, 1),
        rss_min_mb: round(
            procs.iter().map(|p| p.rss_mb).fold(f64::INFINITY, f64::min),
            1,
        ),
        rss_max_mb: round(procs.iter().map(|p| p.rss_mb).fold(0.0, f64::max), 1),
        rss_judged: judged,
        rss_stable: stable,
        fds_first: of(&|p| p.fds, false),
        fds_last: of(&|p| p.fds, true),
        threads_first: of(&|p| p.threads, false),
        threads_last: of(&|p| p.threads, true),
        server_peak_rss_mb: peak,
        server_cpu_s: round(cpu_s, 1),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok())),
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_a_minute_or_a_tenth() {
        assert_eq!(window(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(window(Duration::from_secs(1200)), Duration::from_secs(60));
        assert_eq!(window(Duration::from_secs(20)), Duration::from_secs(2));
        assert_eq!(window(Duration::from_secs(3)), Duration::from_secs(1));
    }

    #[test]
    fn rss_bound_is_a_tenth_plus_a_margin() {
        assert_eq!(rss_within_bound(100.0, 118.0), (true, 18.0));
        assert_eq!(rss_within_bound(100.0, 118.5), (false, 18.0));
        assert!(rss_within_bound(100.0, 60.0).0);
    }

    #[test]
    fn the_server_sampled_is_this_process() {
        let s = proc_sample(std::process::id(), Instant::now()).expect("own /proc");
        assert!(s.rss_mb > 0.0 && s.fds > 0 && s.threads > 0);
    }
}
