//! The `server` scenario: the real `cloacina-server` binary, driven over loopback HTTP as a
//! user's clients would drive it.
//!
//! The bench starts the binary found beside its own (same target directory) on a temp home, a
//! free port and a fresh database (a SQLite file, or a PostgreSQL database created here and
//! dropped afterwards), with a bootstrap key it generated, uploads the `hello-orders` example
//! (its `hello` workflow is one trivial task) and then, per round, has `clients` threads run
//! `workflows` executions between them: each thread submits one (`POST .../execute`), asks
//! `GET .../executions/{id}?wait=30s` (a long poll, answered when the run has ended; or, with
//! `--poll-ms N`, plain requests every N ms) until the run has ended, checks the result and
//! takes the next. Everything the server does is counted: authentication of every request,
//! the submit, the run and every poll.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::rounds::{median, percentile};
use crate::{Args, Report, round};

/// The workflow run, from the `hello-orders` example: one task that reads `name` and writes
/// `greeting`.
pub(crate) const WORKFLOW: &str = "hello";
pub(crate) const TENANT: &str = "public";
/// Clients by default: as many runs in flight as the in-process scenarios' default
/// `--concurrency` (32), so the end-to-end figure compares like for like with `simple`.
const CLIENTS: usize = 32;
/// How long the server may take to start, and a run to end, before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(120);
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Linux reports process CPU time in clock ticks of `USER_HZ`, which the kernel's ABI fixes at
/// 100 on every architecture this runs on.
const TICKS_PER_S: f64 = 100.0;

/// The scenario's knobs, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub executions: usize,
    pub clients: usize,
    pub rounds: u32,
    pub poll: Duration,
}

/// One execution as a client saw it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    submitted: Instant,
    accept_ms: f64,
    done: Instant,
    polls: u32,
    ok: bool,
}

/// What one round measured.
#[derive(Debug)]
struct RoundOut {
    elapsed_s: f64,
    samples: Vec<Sample>,
}

/// The database a benchmarked server runs on: a SQLite file in `work` (with `--sync`), or a
/// fresh PostgreSQL database, dropped with the returned guard.
pub async fn database_for(
    args: &Args,
    work: &std::path::Path,
) -> anyhow::Result<(String, Option<PgDatabase>)> {
    Ok(match args.backend.as_str() {
        "sqlite" => (
            format!(
                "sqlite://{}?synchronous={}",
                work.join("server.db").display(),
                args.sync
            ),
            None,
        ),
        "postgres" => {
            let db = PgDatabase::create(&args.postgres_url).await?;
            (db.url.clone(), Some(db))
        }
        other => bail!("unknown backend '{other}'"),
    })
}

pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let settings = Settings {
        executions: args.workflows.unwrap_or(300),
        clients: args.clients.unwrap_or(CLIENTS),
        rounds: args.rounds,
        poll: Duration::from_millis(args.poll_ms),
    };
    let binary = server_binary()?;
    let work = tempfile::tempdir()?;
    let archive = crate::reconcile::example_archive(work.path())?;
    let (url, database) = database_for(args, work.path()).await?;
    let home = work.path().join("home");
    let backend = args.backend.clone();
    let sync = (backend == "sqlite").then(|| args.sync.clone());
    let result = tokio::task::spawn_blocking(move || {
        let mut server = Server::start(&binary, &home, &url)?;
        let result = measure(&mut server, &archive, &settings).map(|m| (m, settings));
        let stopped = server.stop();
        let (m, settings) = result.map_err(|e| e.context(server.log_tail()))?;
        stopped?;
        Ok::<_, anyhow::Error>((m, settings))
    })
    .await
    .context("the server scenario's client threads")?;
    if let Some(db) = database {
        db.drop().await?;
    }
    let (m, settings) = result?;
    Ok(report(&backend, sync, &settings, &m))
}

/// `cloacina-server` in the bench binary's own directory (`target/<profile>/`).
pub(crate) fn server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let dir = exe
        .parent()
        .context("the benchmark binary has no parent directory")?;
    let path = dir.join("cloacina-server");
    if !path.is_file() {
        bail!(
            "the server scenario runs the real server binary, but {} does not exist: build it \
             with 'cargo build --release -p cloacina-server' (the same profile as the bench)",
            path.display()
        );
    }
    Ok(path)
}

/// A PostgreSQL database of its own for one run (the server creates a schema per tenant, so a
/// schema is not enough), dropped by [`PgDatabase::drop`].
pub(crate) struct PgDatabase {
    pub(crate) url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<PgDatabase> {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        let name = format!("cloacina_bench_{}", uuid::Uuid::new_v4().simple());
        let mut c = diesel_async::AsyncPgConnection::establish(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name} (the role needs CREATEDB)"))?;
        Ok(PgDatabase {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name)?,
            name,
        })
    }

    pub(crate) async fn drop(self) -> anyhow::Result<()> {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        let mut c = diesel_async::AsyncPgConnection::establish(&self.admin_url).await?;
        c.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .await
        .with_context(|| format!("dropping database {}", self.name))?;
        Ok(())
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    if root.len() <= after_scheme {
        bail!("'{url}' is not a postgres://USER@HOST/DB URL");
    }
    Ok(match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    })
}

/// The running server process.
pub(crate) struct Server {
    child: Child,
    home: PathBuf,
    pub(crate) base: String,
    pub(crate) key: String,
}

impl Server {
    pub(crate) fn start(binary: &Path, home: &Path, url: &str) -> anyhow::Result<Server> {
        std::fs::create_dir_all(home)?;
        let key = cloacina::auth::key_generate().plaintext;
        let stderr = std::fs::File::create(home.join("stderr.log"))?;
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1:0", "--no-color"])
            .arg("--home")
            .arg(home)
            .args(["--database-url", url])
            .args(["--bootstrap-key", &key])
            .env_remove("DATABASE_URL")
            .env_remove("CLOACINA_BOOTSTRAP_KEY")
            .env_remove("CLOACINA_REQUIRE_SIGNATURES")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Server {
            child,
            home: home.to_path_buf(),
            base: String::new(),
            key,
        };
        match server.wait_ready() {
            Ok(()) => Ok(server),
            Err(e) => {
                let tail = server.log_tail();
                let _ = server.stop();
                Err(e.context(tail))
            }
        }
    }

    /// Waits for the address in the PID file, then for `/ready`.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        let pid_file = self.home.join("server.pid");
        let agent = agent();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited during start-up ({status})");
            }
            if start.elapsed() > START_LIMIT {
                bail!("the server was not ready within {START_LIMIT:?}");
            }
            if self.base.is_empty() {
                let addr = std::fs::read_to_string(&pid_file).ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("addr=").map(str::to_string))
                });
                if let Some(addr) = addr {
                    self.base = format!("http://{}", addr.trim());
                }
            } else if let Ok(r) = agent.get(format!("{}/ready", self.base)).call()
                && r.status() == 200
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a graceful stop), then SIGKILL if it has not exited within a minute.
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(i32::try_from(self.pid()).context("server pid out of range")?);
        kill(pid, Signal::SIGTERM).context("signalling the server to stop")?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the server exited with {status} on SIGTERM");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("the server did not stop within 60 s of SIGTERM (killed)")
    }

    /// The last lines of the server's stderr, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.home.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "server stderr ({}), last lines:\n{}",
            self.home.join("stderr.log").display(),
            lines[from..].join("\n")
        )
    }
}

/// A client with one keep-alive connection, as each bench thread has.
///
/// Its time limits are per phase, not global: with a global limit ureq resolves every
/// request's host on a thread of its own (to time the lookup out), and creating a thread per
/// request cost the clients more CPU than their sockets, on the two cores the server
/// measured runs on. The host is an address literal, so there is nothing to time out.
pub(crate) fn agent() -> ureq::Agent {
    let limit = Some(Duration::from_secs(60));
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(limit)
        .timeout_send_request(limit)
        .timeout_send_body(limit)
        .timeout_recv_response(limit)
        .timeout_recv_body(limit)
        .build();
    ureq::Agent::new_with_config(config)
}

pub(crate) fn json(mut r: ureq::http::Response<ureq::Body>) -> anyhow::Result<(u16, Value)> {
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string()?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// What the whole run measured.
#[derive(Debug)]
struct Measured {
    rounds: Vec<RoundOut>,
    /// Server CPU time (user + system) over the measured rounds, in ms.
    server_cpu_ms: f64,
    /// This process's CPU time over the measured rounds (the clients), in ms.
    client_cpu_ms: f64,
    server_peak_rss_mb: f64,
    /// The server's own mean time to answer a submit and a status poll (its
    /// `http_request_duration_seconds` histogram, warm-up included), in ms.
    server_execute_ms: Option<f64>,
    server_poll_ms: Option<f64>,
}

fn measure(server: &mut Server, archive: &Path, s: &Settings) -> anyhow::Result<Measured> {
    let auth = format!("Bearer {}", server.key);
    let bytes = std::fs::read(archive)?;
    let (status, body) = json(
        agent()
            .post(format!("{}/v1/tenants/{TENANT}/workflows", server.base))
            .header("Authorization", &auth)
            .content_type("application/octet-stream")
            .send(&bytes[..])?,
    )?;
    if status != 201 || body["state"] != "loaded" {
        bail!("uploading {} answered {status}: {body}", archive.display());
    }
    // Untimed: one execution per client, so every client holds a connection and the server's
    // pools are warm before the clock starts, as they are for the in-process rounds.
    let warm = round_run(server, s.clients, s.clients, s.poll)?;
    if let Some(bad) = warm.samples.iter().find(|x| !x.ok) {
        bail!("a warm-up execution did not complete as expected: {bad:?}");
    }
    let pid = server.pid();
    let (server_before, client_before) = (cpu_ms(pid)?, self_cpu_ms()?);
    let mut rounds = Vec::new();
    for _ in 0..s.rounds {
        rounds.push(round_run(server, s.executions, s.clients, s.poll)?);
    }
    let (server_after, client_after) = (cpu_ms(pid)?, self_cpu_ms()?);
    let metrics = agent()
        .get(format!("{}/metrics", server.base))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    Ok(Measured {
        server_execute_ms: route_mean_ms(&metrics, "/v1/tenants/{tenant}/workflows/{name}/execute"),
        server_poll_ms: route_mean_ms(&metrics, "/v1/tenants/{tenant}/executions/{id}"),
        rounds,
        server_cpu_ms: server_after - server_before,
        client_cpu_ms: client_after - client_before,
        server_peak_rss_mb: peak_rss_mb_of(pid)?,
    })
}

/// `n` executions run by `clients` threads, each submitting one and polling it to its end
/// before taking the next.
fn round_run(
    server: &Server,
    n: usize,
    clients: usize,
    poll: Duration,
) -> anyhow::Result<RoundOut> {
    let next = AtomicUsize::new(0);
    let samples = Mutex::new(Vec::with_capacity(n));
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..clients.min(n) {
            scope.spawn(|| {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    match one(&agent, server, i, poll) {
                        Ok(x) => samples.lock().unwrap_or_else(|e| e.into_inner()).push(x),
                        Err(e) => {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap_or_else(|e| e.into_inner()).pop() {
        return Err(e);
    }
    let samples = samples.into_inner().unwrap_or_else(|e| e.into_inner());
    let first = samples.iter().map(|x| x.submitted).min();
    let last = samples.iter().map(|x| x.done).max();
    let elapsed_s = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(RoundOut { elapsed_s, samples })
}

/// Submits execution `i` and polls it until it has ended.
fn one(agent: &ureq::Agent, server: &Server, i: usize, poll: Duration) -> anyhow::Result<Sample> {
    let auth = format!("Bearer {}", server.key);
    let name = format!("b{i}");
    let body = serde_json::json!({ "context": { "name": name } }).to_string();
    let submitted = Instant::now();
    let (status, accepted) = json(
        agent
            .post(format!(
                "{}/v1/tenants/{TENANT}/workflows/{WORKFLOW}/execute",
                server.base
            ))
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(body.as_str())?,
    )?;
    let accept_ms = submitted.elapsed().as_secs_f64() * 1e3;
    if status != 202 {
        bail!("POST .../execute answered {status}: {accepted}");
    }
    let id = accepted["execution_id"]
        .as_str()
        .with_context(|| format!("no execution_id in {accepted}"))?
        .to_string();
    let url = status_url(&server.base, &id, poll);
    let mut polls = 0;
    loop {
        std::thread::sleep(poll);
        polls += 1;
        let (status, rec) = json(agent.get(&url).header("Authorization", &auth).call()?)?;
        if status != 200 {
            bail!("GET {url} answered {status}: {rec}");
        }
        let state = rec["status"].as_str().unwrap_or_default();
        if matches!(state, "Completed" | "Failed" | "Cancelled") {
            let ok = state == "Completed"
                && rec["result"]["greeting"].as_str() == Some(&format!("hello, {name}"));
            return Ok(Sample {
                submitted,
                accept_ms,
                done: Instant::now(),
                polls,
                ok,
            });
        }
        if submitted.elapsed() > RUN_LIMIT {
            return Ok(Sample {
                submitted,
                accept_ms,
                done: Instant::now(),
                polls,
                ok: false,
            });
        }
    }
}

/// Where a client asks after execution `id`: a long poll when `poll` is zero, otherwise the
/// plain status (asked again every `poll`).
pub(crate) fn status_url(base: &str, id: &str, poll: Duration) -> String {
    let url = format!("{base}/v1/tenants/{TENANT}/executions/{id}");
    if poll.is_zero() {
        format!("{url}?wait=30s")
    } else {
        url
    }
}

/// The mean of the `http_request_duration_seconds` histogram for `route` (a route template)
/// in a Prometheus text exposition, in ms.
fn route_mean_ms(metrics: &str, route: &str) -> Option<f64> {
    let label = format!("{{route=\"{route}\"}}");
    let value = |suffix: &str| {
        let prefix = format!("cloacina_http_request_duration_seconds_{suffix}{label} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let (sum, count) = (value("sum")?, value("count")?);
    (count > 0.0).then(|| round(sum / count * 1e3, 3))
}

/// User + system CPU time of process `pid` so far, in ms (`/proc/<pid>/stat` fields 14, 15).
pub(crate) fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    stat_cpu_ms(&format!("/proc/{pid}/stat"))
}

fn self_cpu_ms() -> anyhow::Result<f64> {
    stat_cpu_ms("/proc/self/stat")
}

fn stat_cpu_ms(path: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected {path}: {text}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("unexpected {path}: {text}"))
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_S * 1e3)
}

/// Peak resident set size (VmHWM) of process `pid`, in MB.
pub(crate) fn peak_rss_mb_of(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no VmHWM in {path}"))?;
    Ok(round(kb / 1024.0, 1))
}

fn report(backend: &str, sync: Option<String>, s: &Settings, m: &Measured) -> Report {
    let n = s.executions;
    let rates: Vec<f64> = m
        .rounds
        .iter()
        .map(|r| n as f64 / r.elapsed_s.max(1e-9))
        .collect();
    let rate = median(&rates);
    let all: Vec<&Sample> = m.rounds.iter().flat_map(|r| &r.samples).collect();
    let e2e: Vec<f64> = all
        .iter()
        .map(|x| (x.done - x.submitted).as_secs_f64() * 1e3)
        .collect();
    let accept: Vec<f64> = all.iter().map(|x| x.accept_ms).collect();
    let total = all.len().max(1) as f64;
    let polls: u64 = all.iter().map(|x| u64::from(x.polls)).sum();
    Report {
        scenario: "server".into(),
        backend: backend.to_string(),
        workflows: n,
        tasks_per_workflow: 1,
        concurrency: cloacina::RunnerConfig::default().concurrency,
        elapsed_s: round(n as f64 / rate.max(1e-9), 4),
        workflows_per_s: round(rate, 1),
        tasks_per_s: round(rate, 1),
        p50_ms: round(percentile(&e2e, 0.50), 2),
        p99_ms: round(percentile(&e2e, 0.99), 2),
        peak_rss_mb: m.server_peak_rss_mb,
        db_txns_per_task: None,
        db_ops_per_task: None,
        failed: all.iter().filter(|x| !x.ok).count() + (n * m.rounds.len() - all.len()),
        sync,
        rounds: m.rounds.len() as u32,
        workflows_per_s_min: round(rates.iter().copied().fold(f64::INFINITY, f64::min), 1),
        workflows_per_s_max: round(rates.iter().copied().fold(0.0, f64::max), 1),
        clients: Some(s.clients),
        accept_p50_ms: Some(round(percentile(&accept, 0.50), 2)),
        accept_p99_ms: Some(round(percentile(&accept, 0.99), 2)),
        polls_per_workflow: Some(round(polls as f64 / total, 2)),
        poll_ms: Some(s.poll.as_millis() as u64),
        cpu_ms_per_workflow: Some(round(m.server_cpu_ms / total, 3)),
        client_cpu_ms_per_workflow: Some(round(m.client_cpu_ms / total, 3)),
        server_execute_ms: m.server_execute_ms,
        server_poll_ms: m.server_poll_ms,
        ..Report::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x").expect("url"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x").expect("url"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x").expect("url"),
            "postgres://h:5432/x"
        );
        assert!(with_database("postgres://", "x").is_err());
    }

    #[test]
    fn route_means_read_from_metrics() {
        let text = "cloacina_http_request_duration_seconds_sum{route=\"/a\"} 0.5\n\
                    cloacina_http_request_duration_seconds_count{route=\"/a\"} 250\n";
        assert_eq!(route_mean_ms(text, "/a"), Some(2.0));
        assert_eq!(route_mean_ms(text, "/b"), None);
    }

    #[test]
    fn cpu_time_of_this_process_reads() {
        assert!(self_cpu_ms().expect("stat") >= 0.0);
        assert!(peak_rss_mb_of(std::process::id()).expect("status") > 0.0);
    }
}
