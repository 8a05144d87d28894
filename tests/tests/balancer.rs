//! Behind a load balancer: a real HAProxy (see `cloacina_e2e::balancer` for its configuration
//! and why) in front of two or three real `cloacina-server` replicas on one PostgreSQL database.
//! What an operator of such a deployment relies on, seen through the balancer as a client sees
//! it: executions submitted while a replica is killed (SIGKILL) and restarted, again and again,
//! all complete, none twice; a cron instant fires once across replicas and across a replica's
//! death; an upload through the balancer is served by every replica; a rolling restart (each
//! replica drained with SIGTERM and restarted in turn) fails no request; and neither does the
//! upload of a new version of a package while runs of the old one are in flight.
//!
//! Short by default (CI). `CLOACINA_LB_ROUNDS=N` repeats each test's disturbance N times
//! (kills, deaths during cron, rolling passes, upgrades; default 2, 1, 1 and 1): the long
//! versions and their latest figures are in `docs/reliability.md`, "Behind a load balancer".
//! Each test prints its figures (`--nocapture` shows them).
//!
//! Needs PostgreSQL (`CLOACINA_TEST_POSTGRES_URL`) and `haproxy` (`scripts/haproxy.sh`); the
//! tests skip without either, except under `CI=true`, where they fail. One at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloacina_e2e::balancer::{Balancer, haproxy};
use cloacina_e2e::home::{pack_example, pack_to};
use cloacina_e2e::packages;
use cloacina_e2e::replicas::{Database, Http, Replica, wait_ok, workflows};
use serde_json::{Value, json};

/// One test at a time (up to three servers, PostgreSQL and haproxy on a two-core machine).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a stopping replica keeps serving after its `/ready` turns 503: longer than haproxy
/// takes to mark it down (two failed checks, 100 to 200 ms apart).
const DRAIN_GRACE_MS: &str = "1000";

/// Concurrent clients submitting through the balancer.
const CLIENTS: usize = 4;

/// `CLOACINA_LB_ROUNDS`, else `short`.
fn rounds(short: usize) -> usize {
    std::env::var("CLOACINA_LB_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}

/// The balancer, the replicas behind it, their database and shared key, and a scratch
/// directory. Fields drop in order: haproxy, then the servers, then the database.
struct Lb {
    balancer: Balancer,
    replicas: Vec<Replica>,
    db: Database,
    key: String,
    scratch: tempfile::TempDir,
}

impl Lb {
    /// `n` replicas on a fresh database (started one after the other), behind a new haproxy
    /// that sees them all up. `None`: skipped (no PostgreSQL or no haproxy, outside CI).
    fn start(test: &str, n: usize) -> Option<Lb> {
        let haproxy = haproxy()?;
        let db = Database::create(test)?;
        let key = cloacina::auth::key_generate().plaintext;
        let replicas: Vec<Replica> = ["A", "B", "C"][..n]
            .iter()
            .map(|name| {
                let mut r =
                    Replica::spawn_with(name, &db, &key, &["--drain-grace-ms", DRAIN_GRACE_MS]);
                r.wait_ready();
                r
            })
            .collect();
        let servers: Vec<(String, String)> = replicas
            .iter()
            .map(|r| (r.name.clone(), r.addr()))
            .collect();
        let balancer = Balancer::start(&haproxy, &servers);
        Some(Lb {
            balancer,
            replicas,
            db,
            key,
            scratch: tempfile::tempdir().expect("scratch dir"),
        })
    }

    /// Every replica's recent logs and haproxy's.
    fn logs(&self) -> String {
        let mut out: Vec<String> = self.replicas.iter().map(Replica::logs).collect();
        out.push(self.balancer.logs());
        out.push(format!(
            "--- haproxy's notable lines ---\n{}",
            self.balancer.notable_lines().join("\n")
        ));
        out.push(self.balancer.summary());
        out.join("\n")
    }

    /// Uploads `archive` to `public` through the balancer, which must accept it.
    fn upload(&self, archive: &std::path::Path) -> Value {
        let (status, body) = self
            .balancer
            .http()
            .try_upload("public", archive, &self.key)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        assert_eq!(
            status,
            201,
            "upload through the balancer: {body}\n{}",
            self.logs()
        );
        body
    }

    /// Uploads example `name` through the balancer and waits until every replica serves
    /// `workflow`.
    fn upload_example(&self, name: &'static str, workflow: &str) -> String {
        let up = self.upload(&pack_example(name, self.scratch.path()));
        self.wait_served_everywhere(workflow);
        up["package_id"]
            .as_str()
            .expect("the package id")
            .to_string()
    }

    fn wait_served_everywhere(&self, workflow: &str) {
        for r in &self.replicas {
            cloacina_e2e::wait_for(
                &format!("replica {} serves workflow {workflow}", r.name),
                || r.workflows("public", &self.key).contains(workflow),
                || self.logs(),
            );
        }
    }

    /// Kills replica `i` with SIGKILL, waits until haproxy takes it out, restarts it on the
    /// same home and port, and waits until haproxy puts it back.
    fn kill_and_restart(&mut self, i: usize) {
        self.replicas[i].kill9();
        let name = self.replicas[i].name.clone();
        self.balancer.wait_status(&name, "DOWN");
        self.replicas[i].restart();
        self.balancer.wait_status(&name, "UP");
    }

    /// Stops replica `i` gracefully (SIGTERM: it drains), restarts it, and waits until haproxy
    /// puts it back.
    fn drain_and_restart(&mut self, i: usize) {
        self.replicas[i].signal("TERM");
        let code = self.replicas[i].wait_exit(Duration::from_secs(60));
        assert_eq!(
            code,
            Some(0),
            "replica {} stops cleanly on SIGTERM\n{}",
            self.replicas[i].name,
            self.logs()
        );
        self.replicas[i].restart();
        let name = self.replicas[i].name.clone();
        self.balancer.wait_status(&name, "UP");
    }

    /// Waits until every execution of `ids` is finished (recovered tasks of a killed replica
    /// included: their leases expire first); their statuses.
    fn wait_finished(&self, ids: &[String]) -> BTreeMap<String, String> {
        let mut statuses = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let list = sql_list(chunk);
            let sql = format!("SELECT id, status FROM workflow_executions WHERE id IN ({list})");
            let got = wait_ok(&format!("{} executions finish", chunk.len()), || {
                let statuses: BTreeMap<String, String> = self
                    .db
                    .rows(&sql)
                    .into_iter()
                    .map(|r| (r[0].clone(), r[1].clone()))
                    .collect();
                let finished = statuses.len() == chunk.len()
                    && statuses
                        .values()
                        .all(|s| matches!(s.as_str(), "Completed" | "Failed" | "Cancelled"));
                if finished {
                    Ok(statuses)
                } else {
                    let open: Vec<_> = statuses
                        .iter()
                        .filter(|(_, s)| {
                            !matches!(s.as_str(), "Completed" | "Failed" | "Cancelled")
                        })
                        .take(10)
                        .collect();
                    Err(format!(
                        "{} of {} known; unfinished (first 10): {open:?}\n{}",
                        statuses.len(),
                        chunk.len(),
                        self.logs()
                    ))
                }
            });
            statuses.extend(got);
        }
        statuses
    }

    /// Asserts every execution of `ids` completed and ran each of its tasks to completion
    /// exactly once (one `task_completed` event per task, one `execution_completed` per
    /// execution); how many task attempts were recovered from a dead replica (attempt > 1).
    fn assert_completed_once(&self, ids: &[String]) -> usize {
        let statuses = self.wait_finished(ids);
        let not_completed: Vec<_> = statuses.iter().filter(|(_, s)| *s != "Completed").collect();
        assert!(
            not_completed.is_empty(),
            "every accepted execution completed: {not_completed:?}\n{}",
            self.logs()
        );
        let mut recovered = 0;
        for chunk in ids.chunks(500) {
            let list = sql_list(chunk);
            let tasks = self.db.rows(&format!(
                "SELECT t.execution_id, t.task_id, t.status, t.attempt, \
                 (SELECT count(*) FROM execution_events e WHERE e.execution_id = t.execution_id \
                  AND e.task_id = t.task_id AND e.kind = 'task_completed') \
                 FROM task_executions t WHERE t.execution_id IN ({list})"
            ));
            let with_tasks: BTreeSet<&String> = tasks.iter().map(|t| &t[0]).collect();
            assert_eq!(
                with_tasks.len(),
                chunk.len(),
                "every execution has its tasks recorded"
            );
            for t in &tasks {
                assert_eq!(t[2], "Completed", "task {}/{}: {t:?}", t[0], t[1]);
                assert_eq!(
                    t[4],
                    "1",
                    "task {}/{} completed exactly once (attempt {}): {t:?}\n{}",
                    t[0],
                    t[1],
                    t[3],
                    self.logs()
                );
                if t[3] != "1" {
                    recovered += 1;
                }
            }
            let twice = self.db.rows(&format!(
                "SELECT execution_id, count(*) FROM execution_events \
                 WHERE kind = 'execution_completed' AND execution_id IN ({list}) \
                 GROUP BY execution_id HAVING count(*) <> 1"
            ));
            assert!(
                twice.is_empty(),
                "executions completed more than once: {twice:?}"
            );
        }
        recovered
    }
}

fn sql_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",")
}

macro_rules! lb {
    ($test:expr, $n:expr) => {
        match Lb::start($test, $n) {
            Some(lb) => lb,
            None => return,
        }
    };
}

/// What one submission through the balancer got.
#[derive(Debug, Clone)]
enum Outcome {
    /// 202 with this execution id.
    Accepted(String),
    /// Another status (a 502 or 503 from haproxy while a replica dies, for instance).
    Refused(u16, String),
    /// No answer at all (connection reset, timeout).
    Failed(String),
}

/// The submissions of [`CLIENTS`] client threads, each with its own connections to the
/// balancer, submitting `workflow` with `context` (the client and its counter filled in) one
/// after the other until `stop`. `accepted` counts the 202s as they come.
struct Load<'a> {
    stop: &'a AtomicBool,
    accepted: &'a AtomicUsize,
}

impl Load<'_> {
    fn run(&self, http: Http, key: &str, workflow: &str, client: usize) -> Vec<Outcome> {
        let mut out = Vec::new();
        let mut n = 0;
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            let context =
                json!({ "name": format!("client {client} #{n}"), "client": client, "n": n });
            let outcome = match http.try_execute("public", workflow, key, context) {
                Ok((202, body)) => match body["execution_id"].as_str() {
                    Some(id) => {
                        self.accepted.fetch_add(1, Ordering::SeqCst);
                        Outcome::Accepted(id.to_string())
                    }
                    None => Outcome::Refused(202, body.to_string()),
                },
                Ok((status, body)) => Outcome::Refused(status, body.to_string()),
                Err(e) => Outcome::Failed(e),
            };
            out.push(outcome);
            // A short pause: bounded load, leaving the two cores to the servers.
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    }
}

/// Runs [`CLIENTS`] clients submitting `workflow` through `lb`'s balancer while `during`
/// runs (with `lb` to disturb), then stops them; every outcome.
fn under_load(
    lb: &mut Lb,
    workflow: &str,
    during: impl FnOnce(&mut Lb, &AtomicUsize),
) -> Vec<Outcome> {
    let stop = AtomicBool::new(false);
    let accepted = AtomicUsize::new(0);
    let load = Load {
        stop: &stop,
        accepted: &accepted,
    };
    let key = lb.key.clone();
    let https: Vec<Http> = (0..CLIENTS).map(|_| lb.balancer.http()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = https
            .into_iter()
            .enumerate()
            .map(|(i, http)| {
                let (load, key) = (&load, key.as_str());
                s.spawn(move || load.run(http, key, workflow, i))
            })
            .collect();
        // Whatever `during` does, the clients stop (a panic in it fails the test after).
        let disturbed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_accepted(&accepted, 10, lb);
            during(lb, &accepted);
            let now = accepted.load(Ordering::SeqCst);
            wait_accepted(&accepted, now + 10, lb);
        }));
        stop.store(true, Ordering::SeqCst);
        let outcomes: Vec<Outcome> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread"))
            .collect();
        if let Err(panic) = disturbed {
            std::panic::resume_unwind(panic);
        }
        outcomes
    })
}

/// Waits until the clients have had `n` submissions accepted in all.
fn wait_accepted(accepted: &AtomicUsize, n: usize, lb: &Lb) {
    cloacina_e2e::wait_for(
        &format!("{n} submissions accepted through the balancer"),
        || accepted.load(Ordering::SeqCst) >= n,
        || lb.logs(),
    );
}

/// The failed submissions by kind (`HTTP 502`, `no answer`) with a sample of each.
fn tally(failed: &[&Outcome]) -> BTreeMap<String, (usize, String)> {
    let mut out: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for o in failed {
        let (kind, sample) = match o {
            Outcome::Accepted(id) => ("accepted".to_string(), id.clone()),
            Outcome::Refused(status, body) => (format!("HTTP {status}"), body.clone()),
            Outcome::Failed(e) => ("no answer".to_string(), e.clone()),
        };
        let entry = out.entry(kind).or_insert((0, sample));
        entry.0 += 1;
    }
    out
}

/// The accepted ids, and the submissions that were not (refused or failed).
fn split(outcomes: &[Outcome]) -> (Vec<String>, Vec<&Outcome>) {
    let ids = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Accepted(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let failed = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Accepted(_)))
        .collect();
    (ids, failed)
}

/// Executions submitted through the balancer by [`CLIENTS`] clients while replicas are killed
/// with SIGKILL and restarted (in turn, `CLOACINA_LB_ROUNDS` kills, 2 by default): every
/// submission answered 202 completes, each of its tasks completed exactly once (a task
/// claimed by a killed replica is recovered once its lease expires, and completes once).
/// Submissions in flight on a replica as it dies may fail (haproxy answers 502, or the
/// connection is cut); they are counted and reported, not required to be zero.
#[test]
fn executions_through_the_balancer_survive_replica_kills() {
    let _serial = serial();
    let started = Instant::now();
    let mut lb = lb!("lb_kills", 2);
    lb.upload_example("hello-orders", "hello");
    let kills = rounds(2);
    let outcomes = under_load(&mut lb, "hello", |lb, accepted| {
        for k in 0..kills {
            let before = accepted.load(Ordering::SeqCst);
            wait_accepted(accepted, before + 20, lb);
            let victim = k % lb.replicas.len();
            lb.kill_and_restart(victim);
        }
    });
    let (ids, failed) = split(&outcomes);
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "every 202 names its own execution"
    );
    let recovered = lb.assert_completed_once(&ids);
    let all = lb
        .db
        .count("SELECT count(*) FROM workflow_executions WHERE workflow_name = 'hello'");
    let unanswered = all - ids.len() as i64;
    eprintln!(
        "FIGURES kills: {} submissions, {} accepted and completed once, {} failed \
         ({} started without an answer reaching the client), {kills} SIGKILLs, {recovered} \
         task attempts recovered from a killed replica, {:.0} s; {}\nfailed by kind: {:?}\nhaproxy's notable lines: {:#?}",
        outcomes.len(),
        ids.len(),
        failed.len(),
        unanswered,
        started.elapsed().as_secs_f64(),
        lb.balancer.summary(),
        tally(&failed),
        lb.balancer.notable_lines()
    );
    assert!(
        unanswered >= 0 && unanswered as usize <= failed.len(),
        "only a submission without a 202 may have started an execution the client does not \
         know of: {all} executions, {} accepted, {} failed",
        ids.len(),
        failed.len()
    );
}

/// With `heartbeat` (cron every second) served by both replicas behind the balancer, each
/// instant fires exactly once, while both run and across a replica's death (SIGKILL; it is
/// restarted after a few instants): one `cron_fires` row and one `beat` execution per instant,
/// the execution's input naming it, and every second between the first and last fire either
/// fired once or counted missed.
#[test]
fn a_cron_instant_fires_once_across_replicas_and_a_replica_death() {
    let _serial = serial();
    let started = Instant::now();
    let mut lb = lb!("lb_cron", 2);
    lb.upload_example("heartbeat", "beat");
    let fires = |lb: &Lb| lb.db.count("SELECT count(*) FROM cron_fires");
    let wait_fires = |lb: &Lb, n: i64, what: &str| {
        cloacina_e2e::wait_for(what, || fires(lb) >= n, || lb.logs());
    };
    wait_fires(&lb, 3, "three instants fire with both replicas up");
    for k in 0..rounds(1) {
        let victim = k % lb.replicas.len();
        lb.replicas[victim].kill9();
        let now = fires(&lb);
        wait_fires(&lb, now + 3, "three instants fire while a replica is dead");
        lb.replicas[victim].restart();
        let name = lb.replicas[victim].name.clone();
        lb.balancer.wait_status(&name, "UP");
        let now = fires(&lb);
        wait_fires(&lb, now + 3, "three instants fire after its restart");
    }
    let instants = lb.db.beat_instants(&lb.logs());
    let span = (instants[instants.len() - 1] - instants[0]) / 1000 + 1;
    let missed = lb
        .db
        .count("SELECT COALESCE(SUM(missed_count), 0) FROM cron_schedules");
    assert!(
        instants.len() as i64 + missed >= span,
        "every second between the first and last fire fired once or was counted missed: \
         {} fires over {span} s, {missed} missed: {instants:?}",
        instants.len()
    );
    eprintln!(
        "FIGURES cron: {} instants over {span} s, none twice, {missed} counted missed, {} \
         replica deaths, {:.0} s",
        instants.len(),
        rounds(1),
        started.elapsed().as_secs_f64()
    );
}

/// A package uploaded through the balancer (which sends it to one replica) is served by every
/// replica: each lists its workflows and runs one, asked directly.
#[test]
fn an_upload_through_the_balancer_is_served_by_every_replica() {
    let _serial = serial();
    let lb = lb!("lb_upload", 2);
    let up = lb.upload(&pack_example("hello-orders", lb.scratch.path()));
    assert_eq!(up["name"], "hello-orders", "{up}");
    lb.wait_served_everywhere("hello");
    for r in &lb.replicas {
        assert_eq!(
            r.workflows("public", &lb.key),
            BTreeSet::from(["hello".to_string(), "orders".to_string()]),
            "replica {} serves the package's workflows",
            r.name
        );
        let id = r.execute("public", "hello", &lb.key, json!({ "name": r.name }));
        let detail = wait_ok(&format!("replica {}'s run completes", r.name), || {
            let (status, body) = r.get(&format!("/v1/tenants/public/executions/{id}"), &lb.key);
            if status == 200 && body["status"] == "Completed" {
                Ok(body)
            } else {
                Err(format!("last answer: {status} {body}\n{}", lb.logs()))
            }
        });
        assert_eq!(
            detail["result"]["greeting"],
            format!("hello, {}", r.name),
            "{detail}"
        );
    }
    assert_eq!(
        workflows(&lb.balancer.http(), "public", &lb.key).len(),
        2,
        "the balancer's answer lists them too"
    );
}

/// A rolling restart of three replicas (each in turn: SIGTERM, which drains it, then a restart
/// on the same home and port, then back in haproxy) under a steady stream of submissions
/// through the balancer: not one request fails, and every accepted execution completes once.
/// What makes it so: `/ready` answers 503 as soon as a replica is told to stop, and it keeps
/// serving for `--drain-grace-ms` before it closes its listener, long enough for haproxy's
/// checks to take it out.
#[test]
fn a_rolling_restart_behind_the_balancer_fails_no_request() {
    let _serial = serial();
    let started = Instant::now();
    let mut lb = lb!("lb_rolling", 3);
    lb.upload_example("hello-orders", "hello");
    let passes = rounds(1);
    let outcomes = under_load(&mut lb, "hello", |lb, accepted| {
        for _ in 0..passes {
            for i in 0..lb.replicas.len() {
                let before = accepted.load(Ordering::SeqCst);
                wait_accepted(accepted, before + 10, lb);
                lb.drain_and_restart(i);
            }
        }
    });
    let (ids, failed) = split(&outcomes);
    assert!(
        failed.is_empty(),
        "no request failed during the rolling restart: {} of {}: {:?}\n{}",
        failed.len(),
        outcomes.len(),
        tally(&failed),
        lb.logs()
    );
    lb.assert_completed_once(&ids);
    eprintln!(
        "FIGURES rolling: {} submissions, all accepted and completed once, 0 failed, {} \
         replicas restarted {passes} time(s) each, {:.0} s; {}",
        outcomes.len(),
        lb.replicas.len(),
        started.elapsed().as_secs_f64(),
        lb.balancer.summary()
    );
}

/// A new version of `hello-orders` uploaded through the balancer while slow runs of the old
/// version are in flight and clients keep submitting: every submission is accepted, every run
/// completes (the slow ones on the old version), and every replica ends up serving the new
/// version. `CLOACINA_LB_ROUNDS=N` uploads N successive versions.
#[test]
fn a_package_upgrade_under_load_fails_no_request() {
    let _serial = serial();
    let started = Instant::now();
    let mut lb = lb!("lb_upgrade", 2);
    let v1 = lb.upload_example("hello-orders", "hello");
    let upgrades = rounds(1);
    // Built before the load starts: building a version takes a while.
    let archives: Vec<(String, std::path::PathBuf)> = (1..=upgrades)
        .map(|n| {
            let version = format!("1.0.{n}");
            let (dir, library) = packages::example_as_version("hello-orders", &version);
            let archive = lb
                .scratch
                .path()
                .join(format!("hello-orders-{version}.cloacina"));
            pack_to(&dir, &library, &archive);
            (version, archive)
        })
        .collect();
    let mut slow: Vec<String> = Vec::new();
    let outcomes = under_load(&mut lb, "hello", |lb, accepted| {
        let http = lb.balancer.http();
        for (version, archive) in &archives {
            // Slow runs of the version served now, in flight across the upload.
            for _ in 0..2 {
                let (status, body) = http
                    .try_execute("public", "orders", &lb.key, json!({ "delay_ms": 3000 }))
                    .unwrap_or_else(|e| panic!("{e}\n{}", lb.logs()));
                assert_eq!(status, 202, "a slow run: {body}\n{}", lb.logs());
                slow.push(body["execution_id"].as_str().expect("an id").to_string());
            }
            let up = lb.upload(archive);
            assert_eq!(up["version"], version.as_str(), "{up}");
            for r in &lb.replicas {
                cloacina_e2e::wait_for(
                    &format!("replica {} serves hello {version}", r.name),
                    || served_version(r.http(), &lb.key, "hello").as_deref() == Some(version),
                    || lb.logs(),
                );
            }
            let now = accepted.load(Ordering::SeqCst);
            wait_accepted(accepted, now + 10, lb);
        }
    });
    let (ids, failed) = split(&outcomes);
    assert!(
        failed.is_empty(),
        "no request failed during the upgrade: {} of {}: {:?}\n{}",
        failed.len(),
        outcomes.len(),
        tally(&failed),
        lb.logs()
    );
    lb.assert_completed_once(&ids);
    lb.assert_completed_once(&slow);
    // By package (a version's workflow_version is a digest of its code, not its number).
    let slow_by_package = lb.db.rows(&format!(
        "SELECT package_id, count(*) FROM workflow_executions WHERE id IN ({}) \
         GROUP BY package_id ORDER BY count(*) DESC",
        sql_list(&slow)
    ));
    let hello_by_package = lb.db.rows(
        "SELECT package_id, count(*) FROM workflow_executions \
         WHERE workflow_name = 'hello' GROUP BY package_id ORDER BY count(*) DESC",
    );
    eprintln!(
        "FIGURES upgrade: {} submissions, all accepted and completed once, 0 failed, \
         {upgrades} upgrade(s), {} slow runs in flight across them, hello runs by package \
         {hello_by_package:?} (first {v1}), {:.0} s",
        outcomes.len(),
        slow.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        slow_by_package.iter().any(|p| p[0] == v1),
        "the first slow runs ran on the old version ({v1}): {slow_by_package:?}"
    );
    assert!(
        hello_by_package.len() > upgrades,
        "runs were started on the old and on the new version(s): {hello_by_package:?}"
    );
}

/// The version of `workflow` that `http` serves in `public`.
fn served_version(http: &Http, key: &str, workflow: &str) -> Option<String> {
    let (status, list) = http
        .try_call("GET", "/v1/tenants/public/workflows", Some(key), None)
        .ok()?;
    if status != 200 {
        return None;
    }
    list["items"]
        .as_array()?
        .iter()
        .find(|w| w["workflow_name"] == workflow)?["version"]
        .as_str()
        .map(str::to_string)
}

/// A replica told to stop (SIGTERM) with a drain grace answers `/ready` with 503 (`stopping`)
/// at once, still answers every other request through the grace (so a balancer takes it out
/// before its listener closes), then stops and exits 0.
#[test]
fn a_stopping_replica_is_unready_but_serves_through_its_drain_grace() {
    let _serial = serial();
    let Some(db) = Database::create("lb_drain") else {
        return;
    };
    let key = cloacina::auth::key_generate().plaintext;
    let mut r = Replica::spawn_with("A", &db, &key, &["--drain-grace-ms", "5000"]);
    r.wait_ready();
    r.signal("TERM");
    let (_, body) = wait_ok(
        "/ready answers 503 once the replica is told to stop",
        || match r.try_call("GET", "/ready", None, None) {
            Ok((503, body)) => Ok((503, body)),
            other => Err(format!("/ready: {other:?}\n{}", r.logs())),
        },
    );
    assert_eq!(body["reason"], "stopping", "{body}");
    let (status, who) = r.get("/v1/auth/whoami", &key);
    assert_eq!(
        status,
        200,
        "still serving while draining: {who}\n{}",
        r.logs()
    );
    assert_eq!(r.get("/v1/tenants/public/workflows", &key).0, 200);
    assert_eq!(
        r.wait_exit(Duration::from_secs(60)),
        Some(0),
        "the replica stops after its grace and exits 0\n{}",
        r.logs()
    );
    assert!(
        r.logs().contains("draining"),
        "the log says it drained\n{}",
        r.logs()
    );
    assert!(
        r.try_call("GET", "/health", None, None).is_err(),
        "nothing listens once it has stopped"
    );
}
