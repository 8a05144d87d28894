//! Scale-out: two real `cloacina-server` processes (replicas) sharing ONE PostgreSQL database,
//! each with its own home and port and the same bootstrap key. What a user of a replicated
//! deployment relies on: an upload through one replica is served by every replica, work is done
//! exactly once whichever replica took the request, cron instants and trigger polls happen once
//! per cluster (not once per replica), a revoked key is refused everywhere at once, and a
//! tenant created through one replica is usable through the other.
//!
//! Each test gets a fresh database (created with `psql`, dropped at the end) at
//! `CLOACINA_TEST_POSTGRES_URL`'s server; without PostgreSQL the tests are skipped, except under
//! `CI=true`, where they fail. The tests run one at a time: each starts two servers with their
//! runtimes, and the machine is small.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloacina_e2e::wait::WAIT_LIMIT;
use cloacina_e2e::{bins, home::pack_example, wait_for};
use serde_json::{Value, json};

/// One test at a time (two servers each on a two-core machine).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `attempt` every 100 ms until it answers `Ok`; fails after [`WAIT_LIMIT`] with `what`
/// and the last `Err` (which carries whatever explains the wait: answers, logs).
fn wait_ok<T>(what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(context) => assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n{context}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn postgres_base() -> String {
    std::env::var("CLOACINA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database of its own for one test, dropped (with any connection left) when dropped.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    /// Creates `cloacina_t_<test>_<pid>_<nanos>`; `None` (test skipped) when PostgreSQL is not
    /// reachable and `CI` is not `true`.
    fn create(test: &str) -> Option<Database> {
        let admin_url = postgres_base();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("cloacina_t_{test}_{}_{nanos}", std::process::id());
        let out = Command::new("psql")
            .arg(&admin_url)
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output();
        let failure = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Some(format!("cannot run psql: {e}")),
        };
        if let Some(why) = failure {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL must be reachable under CI=true ({admin_url}): {why}"
            );
            eprintln!("SKIPPED: PostgreSQL not reachable at {admin_url}: {why}");
            return None;
        }
        let url = with_database(&admin_url, &name);
        Some(Database {
            admin_url,
            name,
            url,
        })
    }

    /// Rows of `sql` (run in this database), columns split on `|` (no value here holds one).
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let out = Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c"])
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect()
    }

    /// The single number `sql` answers.
    fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(sql);
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{sql} answered {rows:?}, not a number"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let out = Command::new("psql")
            .arg(&self.admin_url)
            .args(["-At", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
        if let Ok(o) = out
            && !o.status.success()
        {
            eprintln!(
                "could not drop test database {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// `url` with its database (the path) replaced by `name`, query parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// One `cloacina-server` process: its home, its address, its stderr.
struct Replica {
    name: &'static str,
    home: tempfile::TempDir,
    child: Option<Child>,
    base: String,
    agent: ureq::Agent,
}

impl Replica {
    /// Starts a server on `db` with `key` as its bootstrap key, on a free port, and waits until
    /// it answers `/ready`.
    fn start(name: &'static str, db: &Database, key: &str) -> Replica {
        let mut replica = Replica::spawn(name, db, key);
        replica.wait_ready();
        replica
    }

    /// Starts the server process without waiting for it.
    fn spawn(name: &'static str, db: &Database, key: &str) -> Replica {
        let home = tempfile::tempdir().expect("temp home");
        let stderr = std::fs::File::create(home.path().join("server.stderr")).expect("stderr file");
        let child = Command::new(bins::bin("cloacina-server"))
            .args(["--bind", "127.0.0.1:0", "--no-color"])
            .arg("--home")
            .arg(home.path())
            .arg("--database-url")
            .arg(&db.url)
            .args(["--bootstrap-key", key])
            .args(["--reconcile-interval-s", "1", "--shutdown-timeout-s", "5"])
            .env_remove("DATABASE_URL")
            .env_remove("CLOACINA_BOOTSTRAP_KEY")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start cloacina-server");
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        );
        Replica {
            name,
            home,
            child: Some(child),
            base: String::new(),
            agent,
        }
    }

    /// Waits for the address in `server.pid`, then for `/ready`; fails at once if the process
    /// exits.
    fn wait_ready(&mut self) {
        let pid_file = self.home.path().join("server.pid");
        let name = self.name;
        self.base = wait_ok(
            &format!("replica {name} writes its address to server.pid"),
            || {
                self.assert_running();
                let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
                match text.lines().find_map(|l| l.trim().strip_prefix("addr=")) {
                    Some(addr) if !addr.is_empty() => Ok(format!("http://{addr}")),
                    _ => Err(self.logs()),
                }
            },
        );
        wait_for(
            &format!("replica {name} is ready"),
            || self.call("GET", "/ready", None, None).0 == 200,
            || self.logs(),
        );
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Fails at once (with the logs) if the process has exited.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "replica {} exited early ({status})\n{}",
                self.name,
                self.logs()
            );
        }
    }

    /// The end of the server's stderr, for failure messages.
    fn logs(&self) -> String {
        let text =
            std::fs::read_to_string(self.home.path().join("server.stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- replica {} ({}) stderr, last 40 lines ---\n{tail}",
            self.name, self.base
        )
    }

    /// `METHOD path` with an optional bearer key and body (JSON, or raw bytes as
    /// `application/octet-stream`): the status and the JSON answer (`Null` if not JSON).
    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = key.map(|k| format!("Bearer {k}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("POST", body) => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some(Body::Json(v)) => r.content_type("application/json").send(v.to_string()),
                    Some(Body::Bytes(b)) => r.content_type("application/octet-stream").send(&b),
                    None => r.send_empty(),
                }
            }
            (other, _) => panic!("unsupported method {other}"),
        };
        let mut response =
            result.unwrap_or_else(|e| panic!("{method} {url} failed: {e}\n{}", self.logs()));
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("reading the answer to {method} {url}: {e}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call("GET", path, Some(key), None)
    }

    fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(key), Some(Body::Json(body)))
    }

    fn delete(&self, path: &str, key: &str) -> (u16, Value) {
        self.call("DELETE", path, Some(key), None)
    }

    /// Uploads the archive at `archive` to `tenant` as a raw body.
    fn upload(&self, tenant: &str, archive: &Path, key: &str) -> (u16, Value) {
        let bytes = std::fs::read(archive).expect("read the archive");
        self.call(
            "POST",
            &format!("/v1/tenants/{tenant}/workflows"),
            Some(key),
            Some(Body::Bytes(bytes)),
        )
    }

    /// The workflow names this replica serves in `tenant` (empty on any error).
    fn workflows(&self, tenant: &str, key: &str) -> BTreeSet<String> {
        let (status, list) = self.get(&format!("/v1/tenants/{tenant}/workflows"), key);
        if status != 200 {
            return BTreeSet::new();
        }
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|w| w["workflow_name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Starts `workflow` in `tenant` with `context`; the new execution's id.
    fn execute(&self, tenant: &str, workflow: &str, key: &str, context: Value) -> String {
        let (status, body) = self.post(
            &format!("/v1/tenants/{tenant}/workflows/{workflow}/execute"),
            key,
            json!({ "context": context }),
        );
        assert_eq!(
            status,
            202,
            "execute {workflow} on {}: {body}\n{}",
            self.name,
            self.logs()
        );
        body["execution_id"]
            .as_str()
            .expect("an execution id")
            .to_string()
    }

    /// SIGTERM, then waits (killing the process if it outlives a generous limit).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

/// Replicas on one fresh database, the bootstrap key they share, and a scratch directory for
/// archives. Fields drop in order: the servers stop before the database is dropped.
struct Cluster {
    replicas: Vec<Replica>,
    db: Database,
    key: String,
    scratch: tempfile::TempDir,
}

impl Cluster {
    /// `n` replicas on a fresh database, started one after the other (the first migrates the
    /// database and records the bootstrap key; the others find both). `None`: skipped.
    fn start(test: &str, n: usize) -> Option<Cluster> {
        let db = Database::create(test)?;
        let key = cloacina::auth::key_generate().plaintext;
        let names = ["A", "B", "C"];
        let replicas = names[..n]
            .iter()
            .map(|name| Replica::start(name, &db, &key))
            .collect();
        Some(Cluster {
            replicas,
            db,
            key,
            scratch: tempfile::tempdir().expect("scratch dir"),
        })
    }

    fn a(&self) -> &Replica {
        &self.replicas[0]
    }

    fn b(&self) -> &Replica {
        &self.replicas[1]
    }

    /// Every replica's recent logs.
    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(Replica::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Example `name` packed into the scratch directory.
    fn archive(&self, name: &'static str) -> PathBuf {
        pack_example(name, self.scratch.path())
    }

    /// Uploads example `name` to `public` through replica A; the package id.
    fn upload_to_a(&self, name: &'static str) -> String {
        let archive = self.archive(name);
        let (status, body) = self.a().upload("public", &archive, &self.key);
        assert_eq!(status, 201, "upload {name} to A: {body}\n{}", self.logs());
        body["package_id"]
            .as_str()
            .expect("a package id")
            .to_string()
    }

    /// Waits until every replica serves `workflow` in `public`.
    fn wait_served_everywhere(&self, workflow: &str) {
        for r in &self.replicas {
            wait_for(
                &format!("replica {} serves workflow {workflow}", r.name),
                || r.workflows("public", &self.key).contains(workflow),
                || self.logs(),
            );
        }
    }

    /// Waits until none of `ids` is unfinished; their statuses.
    fn wait_finished(&self, ids: &[String]) -> BTreeMap<String, String> {
        let list = ids
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("SELECT id, status FROM workflow_executions WHERE id IN ({list})");
        wait_ok(&format!("{} executions finish", ids.len()), || {
            let statuses: BTreeMap<String, String> = self
                .db
                .rows(&sql)
                .into_iter()
                .map(|r| (r[0].clone(), r[1].clone()))
                .collect();
            let finished = statuses.len() == ids.len()
                && statuses
                    .values()
                    .all(|s| matches!(s.as_str(), "Completed" | "Failed" | "Cancelled"));
            if finished {
                Ok(statuses)
            } else {
                Err(format!("statuses: {statuses:?}\n{}", self.logs()))
            }
        })
    }
}

macro_rules! cluster {
    ($test:expr, $n:expr) => {
        match Cluster::start($test, $n) {
            Some(c) => c,
            None => return,
        }
    };
}

/// An upload through A is served by B and C within a few seconds (they list it; B runs it); a
/// delete through A makes B and C stop serving it.
#[test]
fn an_upload_to_one_replica_is_served_by_every_replica_and_a_delete_everywhere() {
    let _serial = serial();
    let c = cluster!("upload", 3);
    let (a, b) = (c.a(), c.b());
    let package = c.upload_to_a("hello-orders");
    assert!(
        a.workflows("public", &c.key).contains("hello"),
        "A serves its own upload at once"
    );
    c.wait_served_everywhere("hello");
    assert_eq!(
        b.workflows("public", &c.key),
        BTreeSet::from(["hello".to_string(), "orders".to_string()]),
        "B serves the package's workflows"
    );

    let id = b.execute("public", "hello", &c.key, json!({ "name": "replica B" }));
    let statuses = c.wait_finished(std::slice::from_ref(&id));
    assert_eq!(statuses[&id], "Completed", "{}", c.logs());
    let (status, detail) = b.get(&format!("/v1/tenants/public/executions/{id}"), &c.key);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["result"]["greeting"], "hello, replica B",
        "the run's result: {detail}"
    );

    let (status, deleted) = a.delete(&format!("/v1/packages/{package}"), &c.key);
    assert_eq!(status, 200, "delete on A: {deleted}\n{}", c.logs());
    assert_eq!(deleted["status"], "unloaded", "{deleted}");
    for r in &c.replicas[1..] {
        wait_for(
            &format!(
                "replica {} stops serving the deleted package's workflows",
                r.name
            ),
            || r.workflows("public", &c.key).is_empty(),
            || c.logs(),
        );
    }
    let (status, refused) = b.post(
        "/v1/tenants/public/workflows/hello/execute",
        &c.key,
        json!({}),
    );
    assert_eq!(
        status, 404,
        "B refuses to run a deleted workflow: {refused}"
    );
    assert_eq!(refused["code"], "workflow_not_found", "{refused}");
    assert!(a.workflows("public", &c.key).is_empty(), "A stopped too");
}

/// The pid of the runner a `task_claimed` event's message names (`leased to runner-<pid>-…`).
fn claimer_pid(message: &str) -> Option<u32> {
    let rest = message.split("leased to runner-").nth(1)?;
    rest.split('-').next()?.parse().ok()
}

/// Executions submitted alternately to A and B each run exactly once: every one Completed,
/// every task Completed with exactly one `task_completed` event (for its last attempt) and one
/// claim per attempt, and every claim made by one of the two replicas.
#[test]
fn executions_submitted_to_both_replicas_each_run_exactly_once() {
    let _serial = serial();
    let c = cluster!("once", 2);
    c.upload_to_a("hello-orders");
    c.wait_served_everywhere("orders");

    const N: usize = 60;
    let ids: Vec<String> = (0..N)
        .map(|i| {
            let replica = &c.replicas[i % 2];
            replica.execute(
                "public",
                "orders",
                &c.key,
                json!({ "run_id": format!("run-{i}") }),
            )
        })
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "every submission got its own execution");
    let statuses = c.wait_finished(&ids);
    let not_completed: Vec<_> = statuses.iter().filter(|(_, s)| *s != "Completed").collect();
    assert!(
        not_completed.is_empty(),
        "every execution completed: {not_completed:?}\n{}",
        c.logs()
    );

    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let tasks = c.db.rows(&format!(
        "SELECT execution_id, task_id, status, attempt FROM task_executions \
         WHERE execution_id IN ({list})"
    ));
    assert_eq!(tasks.len(), N * 4, "four task rows per run of orders");
    let events = c.db.rows(&format!(
        "SELECT execution_id, COALESCE(task_id, ''), kind, COALESCE(attempt, 0), \
         COALESCE(message, '') FROM execution_events WHERE execution_id IN ({list})"
    ));
    let mut claimers: BTreeMap<u32, usize> = BTreeMap::new();
    for task in &tasks {
        let (exec, task_id, status, attempt) = (&task[0], &task[1], &task[2], &task[3]);
        let attempt: i64 = attempt.parse().expect("attempt");
        assert_eq!(status, "Completed", "task {exec}/{task_id}");
        let mine: Vec<&Vec<String>> = events
            .iter()
            .filter(|e| &e[0] == exec && &e[1] == task_id)
            .collect();
        let of_kind = |kind: &str| -> Vec<i64> {
            mine.iter()
                .filter(|e| e[2] == kind)
                .map(|e| e[3].parse().expect("event attempt"))
                .collect()
        };
        assert_eq!(
            of_kind("task_completed"),
            vec![attempt],
            "task {exec}/{task_id} completed exactly once, at its last attempt {attempt}: {mine:?}"
        );
        let mut claims = of_kind("task_claimed");
        claims.sort_unstable();
        assert_eq!(
            claims,
            (1..=attempt).collect::<Vec<_>>(),
            "task {exec}/{task_id}: one claim per attempt: {mine:?}"
        );
        if task_id != "check_stock" {
            assert!(
                of_kind("task_failed").is_empty(),
                "task {exec}/{task_id} never failed: {mine:?}"
            );
        }
        for e in mine.iter().filter(|e| e[2] == "task_claimed") {
            let pid = claimer_pid(&e[4])
                .unwrap_or_else(|| panic!("a claim names its runner: {:?}", e[4]));
            *claimers.entry(pid).or_default() += 1;
        }
    }
    for exec in &ids {
        let completed = events
            .iter()
            .filter(|e| &e[0] == exec && e[2] == "execution_completed")
            .count();
        assert_eq!(completed, 1, "execution {exec} completed once");
    }
    let replicas: BTreeSet<u32> = c.replicas.iter().map(Replica::pid).collect();
    assert!(
        claimers.keys().all(|p| replicas.contains(p)),
        "every claim was made by a replica ({replicas:?}): {claimers:?}"
    );
    eprintln!("claims per replica pid: {claimers:?} (replicas {replicas:?})");
}

/// With every replica serving `heartbeat` (cron every second), each instant of the schedule
/// is fired exactly once: one `cron_fires` row and one `beat` execution per instant, the
/// execution's input naming that instant, and the instants consecutive seconds (any gap is
/// counted as missed by the schedule).
#[test]
fn a_cron_instant_fires_once_across_replicas() {
    let _serial = serial();
    let c = cluster!("cron", 2);
    c.upload_to_a("heartbeat");
    c.wait_served_everywhere("beat");
    let served_since =
        c.db.count("SELECT COALESCE(MAX(instant), 0) FROM cron_fires");
    wait_for(
        "six cron instants fire while both replicas serve the schedule",
        || {
            c.db.count(&format!(
                "SELECT count(*) FROM cron_fires WHERE instant > {served_since}"
            )) >= 6
        },
        || c.logs(),
    );
    // One statement, one snapshot: every fire joined with its execution and input.
    let rows = c.db.rows(
        "SELECT COALESCE(f.instant::text, ''), COALESCE(x.id, ''), \
         COALESCE((extract(epoch FROM (x.data::json->'cron'->>'instant')::timestamptz) * 1000)::bigint::text, '') \
         FROM (SELECT e.id, c.data FROM workflow_executions e \
               JOIN contexts c ON c.execution_id = e.id AND c.owner = '/input' \
               WHERE e.workflow_name = 'beat') x \
         FULL OUTER JOIN cron_fires f ON f.execution_id = x.id \
         ORDER BY f.instant",
    );
    assert!(rows.len() >= 6, "{rows:?}");
    for r in &rows {
        assert!(
            !r[0].is_empty() && !r[1].is_empty(),
            "every fire has its execution and every beat execution its fire: {r:?}\n{rows:?}"
        );
        assert_eq!(
            r[0], r[2],
            "the execution's input names the instant fired: {r:?}"
        );
    }
    let instants: Vec<i64> = rows.iter().map(|r| r[0].parse().expect("ms")).collect();
    let distinct: BTreeSet<i64> = instants.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        instants.len(),
        "no instant fired twice: {instants:?}"
    );
    let executions: BTreeSet<&String> = rows.iter().map(|r| &r[1]).collect();
    assert_eq!(executions.len(), rows.len(), "one execution per instant");
    assert!(
        instants.iter().all(|i| i % 1000 == 0),
        "instants are whole seconds: {instants:?}"
    );
    let span = (instants[instants.len() - 1] - instants[0]) / 1000 + 1;
    let missed =
        c.db.count("SELECT COALESCE(SUM(missed_count), 0) FROM cron_schedules");
    assert!(
        instants.len() as i64 + missed >= span,
        "every second between the first and last fire fired once or was counted missed: \
         {} fires over {span} s, {missed} missed: {instants:?}",
        instants.len()
    );
}

/// A key created through A works on B; once revoked through A, B refuses it on the very next
/// request.
#[test]
fn a_key_revoked_on_one_replica_is_refused_by_the_other_at_once() {
    let _serial = serial();
    let c = cluster!("revoke", 2);
    let (a, b) = (c.a(), c.b());
    let (status, created) = a.post(
        "/v1/auth/keys",
        &c.key,
        json!({ "name": "ci", "role": "write" }),
    );
    assert_eq!(status, 201, "{created}");
    let key = created["key"]
        .as_str()
        .expect("the plaintext key")
        .to_string();
    let id = created["id"].as_str().expect("the key id").to_string();

    let (status, who) = b.get("/v1/auth/whoami", &key);
    assert_eq!(status, 200, "B accepts a key created on A: {who}");
    assert_eq!(who["tenant_id"], "public", "{who}");
    assert_eq!(b.get("/v1/tenants/public/workflows", &key).0, 200);

    let (status, revoked) = a.delete(&format!("/v1/auth/keys/{id}"), &c.key);
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let (status, refused) = b.get("/v1/tenants/public/workflows", &key);
    assert_eq!(
        status, 401,
        "B's very next request with the revoked key: {refused}"
    );
    assert_eq!(refused["code"], "revoked_api_key", "{refused}");
    let (status, refused) = a.get("/v1/auth/whoami", &key);
    assert_eq!((status, &refused["code"]), (401, &json!("revoked_api_key")));
    assert_eq!(
        b.get("/v1/auth/whoami", &c.key).0,
        200,
        "the bootstrap key still works on B"
    );
}

/// A tenant created through A is usable through B within the reconcile interval: a key made
/// for it on A uploads to it through B, and A lists the upload's workflows.
#[test]
fn a_tenant_created_on_one_replica_is_usable_on_the_other() {
    let _serial = serial();
    let c = cluster!("tenant", 2);
    let (a, b) = (c.a(), c.b());
    let (status, tenant) = a.post(
        "/v1/tenants",
        &c.key,
        json!({ "name": "acme", "description": "made on A" }),
    );
    assert_eq!(status, 201, "{tenant}\n{}", c.logs());
    let (status, created) = a.post(
        "/v1/tenants/acme/keys",
        &c.key,
        json!({ "name": "acme-ci", "role": "write" }),
    );
    assert_eq!(status, 201, "{created}");
    let acme_key = created["key"]
        .as_str()
        .expect("the plaintext key")
        .to_string();
    assert_eq!(created["tenant_id"], "acme", "{created}");

    let archive = c.archive("hello-orders");
    let uploaded = wait_ok("B accepts an upload to tenant acme", || {
        let (status, body) = b.upload("acme", &archive, &acme_key);
        if status == 201 {
            Ok(body)
        } else {
            Err(format!("last answer: {status} {body}\n{}", c.logs()))
        }
    });
    assert_eq!(uploaded["tenant_id"], "acme", "{uploaded}");
    wait_for(
        "A serves acme's workflows",
        || a.workflows("acme", &acme_key).contains("hello"),
        || c.logs(),
    );
    assert!(
        b.workflows("acme", &acme_key).contains("hello"),
        "B serves its own upload"
    );
    assert!(
        a.workflows("public", &c.key).is_empty(),
        "the upload went to acme only"
    );
    let id = a.execute("acme", "hello", &acme_key, json!({ "name": "acme" }));
    let detail = wait_ok("acme's run completes (read through B)", || {
        let (status, body) = b.get(&format!("/v1/tenants/acme/executions/{id}"), &acme_key);
        if status == 200 && body["status"] == "Completed" {
            Ok(body)
        } else {
            Err(format!("last answer: {status} {body}\n{}", c.logs()))
        }
    });
    assert_eq!(detail["result"]["greeting"], "hello, acme", "{detail}");
}

/// The 5 s poll slot of `inbox_watch`'s last poll on `r` (`YYYY-MM-DDTHH:MM/n`, n the
/// minute's fifth), read from its `next_run_at` (last poll + the 5 s interval): slots start at
/// multiples of 5 s since the epoch, so whole seconds decide the slot.
fn trigger_poll_slot(r: &Replica, key: &str) -> Option<String> {
    let (_, list) = r.get("/v1/tenants/public/triggers", key);
    let next = list["items"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == "inbox_watch")?["next_run_at"]
        .as_str()?
        .to_string();
    let minute = next.get(..16)?;
    let second: u32 = next.get(17..19)?.parse().ok()?;
    Some(format!("{minute}/{}", second / 5))
}

/// With every replica serving `scheduled-reports` (trigger `inbox_watch`, polled every 5 s,
/// firing on every other poll of the process that polls), the trigger is polled once per
/// interval by the cluster, not once per replica: no poll slot is ever seen polled by both
/// replicas, and the runs started number at most half the slots claimed, plus one per
/// replica.
#[test]
fn a_trigger_is_polled_once_per_interval_across_replicas() {
    let _serial = serial();
    let c = cluster!("trigger", 2);
    c.upload_to_a("scheduled-reports");
    c.wait_served_everywhere("report");
    for r in &c.replicas {
        wait_for(
            &format!("replica {} polls inbox_watch", r.name),
            || {
                let (_, list) = r.get("/v1/tenants/public/triggers", &c.key);
                list["items"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|t| t["name"] == "inbox_watch" && t["enabled"] == true)
                })
            },
            || c.logs(),
        );
    }
    let slots_sql = "SELECT count(*) FROM trigger_polls \
                     WHERE tenant = 'public' AND trigger_name = 'report:inbox_watch'";
    // Each replica's view shows its own last poll (as `next_run_at`, one interval later):
    // sampled through the window, no slot may ever show up on both replicas.
    let mut seen: Vec<BTreeSet<String>> = vec![BTreeSet::new(); c.replicas.len()];
    wait_ok("six poll slots pass", || {
        for (i, r) in c.replicas.iter().enumerate() {
            if let Some(slot) = trigger_poll_slot(r, &c.key) {
                seen[i].insert(slot);
            }
        }
        let slots = c.db.count(slots_sql);
        if slots >= 6 {
            Ok(())
        } else {
            Err(format!(
                "{slots} slots so far; polled: {seen:?}\n{}",
                c.logs()
            ))
        }
    });
    let shared: BTreeSet<&String> = seen[0].intersection(&seen[1]).collect();
    assert!(
        shared.is_empty(),
        "poll slots polled by both replicas: {shared:?} (A: {:?}, B: {:?})",
        seen[0],
        seen[1]
    );
    eprintln!("poll slots seen: A {:?}, B {:?}", seen[0], seen[1]);
    // Runs first, slots after: a run counted here comes from a slot counted below.
    let fires = c.db.count(
        "SELECT count(*) FROM workflow_executions e \
         JOIN contexts c ON c.execution_id = e.id AND c.owner = '/input' \
         WHERE e.workflow_name = 'report' AND c.data::json->>'source' = 'inbox'",
    );
    let slots = c.db.count(slots_sql);
    let replicas = c.replicas.len() as i64;
    assert!(fires >= 1, "the trigger fired: {fires}\n{}", c.logs());
    assert!(
        2 * fires <= slots + replicas,
        "{fires} runs from {slots} poll slots: some slot was polled by more than one replica\n{}",
        c.logs()
    );
}

/// Replicas started at the same moment on a fresh database all come up: one migrates (the
/// others wait on its lock) and the shared bootstrap key is recorded once, the others
/// accepting it as already there.
#[test]
fn replicas_started_together_on_a_fresh_database_all_come_up() {
    let _serial = serial();
    let Some(db) = Database::create("together") else {
        return;
    };
    let key = cloacina::auth::key_generate().plaintext;
    let mut replicas: Vec<Replica> = ["A", "B", "C"]
        .into_iter()
        .map(|name| Replica::spawn(name, &db, &key))
        .collect();
    for r in &mut replicas {
        r.wait_ready();
    }
    for r in &replicas {
        let (status, who) = r.get("/v1/auth/whoami", &key);
        assert_eq!(
            status, 200,
            "replica {} accepts the bootstrap key: {who}",
            r.name
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM api_keys"),
        1,
        "the bootstrap key is recorded once"
    );
    drop(replicas);
}
