//! Scale-out machinery: real `cloacina-server` processes (replicas) sharing one PostgreSQL
//! database, each with its own home and a port fixed for its whole life.
//!
//! A [`Database`] is a fresh PostgreSQL database for one test (dropped at the end), with
//! `psql` helpers to read rows. A [`Replica`] is one server process on that database: its home
//! and its port outlive the process, so a replica killed with SIGKILL (or stopped with
//! SIGTERM) can be [`Replica::restart`]ed on the same home and the same address, as a
//! supervisor would, and a load balancer's configuration naming that address stays valid.
//! [`Http`] is a small client that reports a transport failure as an error instead of
//! panicking (a balancer's client must count those, not die of them).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{create_database, drop_database};
use crate::wait::WAIT_LIMIT;
use crate::{bins, wait_for};

/// Polls `attempt` every 100 ms until it answers `Ok`; fails after [`WAIT_LIMIT`] with `what`
/// and the last `Err` (which carries whatever explains the wait: answers, logs).
pub fn wait_ok<T>(what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
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

/// A free loopback port: bound on port 0, read, released. Picked up front so a replica keeps
/// its address across restarts (another process could take it meanwhile; on a test machine
/// that is rare, and the restart then fails loudly with the server's bind error).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// A database of its own for one test, dropped (with any connection left) when dropped.
#[derive(Debug)]
pub struct Database {
    pub name: String,
    /// The URL the replicas connect to.
    pub url: String,
}

impl Database {
    /// Creates `cloacina_t_<test>_<pid>_<nanos>` (the test's name in it, to find leftovers);
    /// `None` (test skipped, with a SKIPPED line) when PostgreSQL is not reachable and `CI` is
    /// not `true`, where that is a failure.
    pub fn create(test: &str) -> Option<Database> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("cloacina_t_{test}_{}_{nanos}", std::process::id());
        let url = create_database(&name)?;
        Some(Database { name, url })
    }

    /// Rows of `sql` (run in this database), columns split on `|` (no value here holds one).
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        crate::faults::psql_rows(&self.url, sql)
    }

    /// The instants (ms, ascending) at which the `beat` cron schedule fired, read in one
    /// statement (one snapshot), after checking what a fire must be: every fire has a `beat`
    /// run whose input names that instant, every `beat` run has its fire, no run has two fires
    /// and no instant fired twice. `context` is printed with a failure.
    pub fn beat_instants(&self, context: &str) -> Vec<i64> {
        let rows = self.rows(
            "SELECT COALESCE(f.instant::text, ''), COALESCE(x.id, ''), \
             COALESCE((extract(epoch FROM (x.data::json->'cron'->>'instant')::timestamptz) * 1000)::bigint::text, '') \
             FROM (SELECT e.id, c.data FROM workflow_executions e \
                   JOIN contexts c ON c.execution_id = e.id AND c.owner = '/input' \
                   WHERE e.workflow_name = 'beat') x \
             FULL OUTER JOIN cron_fires f ON f.execution_id = x.id \
             ORDER BY f.instant",
        );
        for r in &rows {
            assert!(
                !r[0].is_empty() && !r[1].is_empty(),
                "every fire has its execution and every beat execution its fire: {r:?}\n{rows:?}\n{context}"
            );
            assert_eq!(
                r[0], r[2],
                "the execution's input names the instant fired: {r:?}\n{context}"
            );
        }
        let instants: Vec<i64> = rows.iter().map(|r| r[0].parse().expect("ms")).collect();
        let distinct: BTreeSet<i64> = instants.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            instants.len(),
            "no instant fired twice: {instants:?}\n{context}"
        );
        let executions: BTreeSet<&String> = rows.iter().map(|r| &r[1]).collect();
        assert_eq!(
            executions.len(),
            rows.len(),
            "one execution per instant: {rows:?}\n{context}"
        );
        instants
    }

    /// The single number `sql` answers.
    pub fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(sql);
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{sql} answered {rows:?}, not a number"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// A request body: JSON, or raw bytes sent as `application/octet-stream`.
#[derive(Debug, Clone)]
pub enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

/// A blocking HTTP client for one base URL (a replica, or a balancer in front of replicas).
/// Statuses are answers, not errors; a transport failure (refused, reset, timeout) is an
/// `Err` with its description.
#[derive(Debug, Clone)]
pub struct Http {
    pub base: String,
    agent: ureq::Agent,
}

impl Http {
    /// A client for `base` (`http://HOST:PORT`), 30 s per request at most.
    pub fn new(base: impl Into<String>) -> Http {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        );
        Http {
            base: base.into(),
            agent,
        }
    }

    /// `METHOD path` with an optional bearer key and body: the status and the JSON answer
    /// (`Null` if not JSON), or what went wrong on the way.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let bytes = match body {
            Some(Body::Json(v)) => {
                req = req.header("content-type", "application/json");
                v.to_string().into_bytes()
            }
            Some(Body::Bytes(b)) => {
                req = req.header("content-type", "application/octet-stream");
                b
            }
            None => Vec::new(),
        };
        let req = req
            .body(bytes)
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let mut response = self
            .agent
            .run(req)
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("reading the answer to {method} {url}: {e}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Uploads the archive at `archive` to `tenant` as a raw body.
    pub fn try_upload(
        &self,
        tenant: &str,
        archive: &Path,
        key: &str,
    ) -> Result<(u16, Value), String> {
        let bytes = std::fs::read(archive)
            .map_err(|e| format!("reading the archive {}: {e}", archive.display()))?;
        self.try_call(
            "POST",
            &format!("/v1/tenants/{tenant}/workflows"),
            Some(key),
            Some(Body::Bytes(bytes)),
        )
    }

    /// Starts `workflow` in `tenant` with `context`: the status and answer (202 and the
    /// execution's id in `execution_id` when accepted).
    pub fn try_execute(
        &self,
        tenant: &str,
        workflow: &str,
        key: &str,
        context: Value,
    ) -> Result<(u16, Value), String> {
        self.try_call(
            "POST",
            &format!("/v1/tenants/{tenant}/workflows/{workflow}/execute"),
            Some(key),
            Some(Body::Json(json!({ "context": context }))),
        )
    }
}

/// One `cloacina-server` process: its home and address (both kept across restarts), its
/// stderr (appended across restarts, in `<home>/server.stderr`).
pub struct Replica {
    /// A short name for messages (`A`, `B`, ...).
    pub name: String,
    home: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    http: Http,
    database_url: String,
    key: String,
    args: Vec<String>,
    /// How many times the process was started.
    pub starts: u32,
}

impl Replica {
    /// Starts a server on `db` with `key` as its bootstrap key, on a free port, and waits until
    /// it answers `/ready`.
    pub fn start(name: &str, db: &Database, key: &str) -> Replica {
        let mut replica = Replica::spawn(name, db, key);
        replica.wait_ready();
        replica
    }

    /// Starts the server process without waiting for it.
    pub fn spawn(name: &str, db: &Database, key: &str) -> Replica {
        Replica::spawn_with(name, db, key, &[])
    }

    /// [`Replica::spawn`] with more server flags (kept for restarts), e.g.
    /// `["--drain-grace-ms", "500"]`.
    pub fn spawn_with(name: &str, db: &Database, key: &str, args: &[&str]) -> Replica {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut replica = Replica {
            name: name.to_string(),
            home: tempfile::tempdir().expect("temp home"),
            child: None,
            port,
            http: Http::new(base.clone()),
            base,
            database_url: db.url.clone(),
            key: key.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            starts: 0,
        };
        replica.launch();
        replica
    }

    /// Starts the process on this replica's home and port.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "replica {} still runs", self.name);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.path().join("server.stderr"))
            .expect("stderr file");
        let child = Command::new(bins::bin("cloacina-server"))
            .arg("--bind")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--no-color")
            .arg("--home")
            .arg(self.home.path())
            .arg("--database-url")
            .arg(&self.database_url)
            .args(["--bootstrap-key", &self.key])
            .args(["--reconcile-interval-s", "1", "--shutdown-timeout-s", "5"])
            .args(&self.args)
            .env_remove("DATABASE_URL")
            .env_remove("CLOACINA_BOOTSTRAP_KEY")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start cloacina-server");
        self.child = Some(child);
        self.starts += 1;
    }

    /// Waits until the server answers `/ready` with 200; fails at once if the process exits.
    pub fn wait_ready(&mut self) {
        let what = format!("replica {} ({}) is ready", self.name, self.base);
        wait_ok(&what, || {
            self.assert_running();
            match self.try_call("GET", "/ready", None, None) {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("/ready: {status} {body}\n{}", self.logs())),
                Err(e) => Err(format!("{e}\n{}", self.logs())),
            }
        });
    }

    /// The server's home directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The port this replica listens on, for all its life.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Fails at once (with the logs) if the process has exited.
    pub fn assert_running(&mut self) {
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

    /// The end of the server's stderr (all its starts), for failure messages.
    pub fn logs(&self) -> String {
        self.logs_tail(40)
    }

    /// The last `lines` lines of the server's stderr.
    pub fn logs_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.home.path().join("server.stderr")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- replica {} ({}, {} starts) stderr, last {lines} lines ---\n{tail}",
            self.name, self.base, self.starts
        )
    }

    /// A client for this replica alone.
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// [`Http::try_call`] on this replica.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
    ) -> Result<(u16, Value), String> {
        self.http.try_call(method, path, key, body)
    }

    /// `METHOD path` with an optional bearer key and body: the status and the JSON answer
    /// (`Null` if not JSON). A transport failure fails the test, with the logs.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
    ) -> (u16, Value) {
        self.try_call(method, path, key, body)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    pub fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call("GET", path, Some(key), None)
    }

    pub fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(key), Some(Body::Json(body)))
    }

    pub fn delete(&self, path: &str, key: &str) -> (u16, Value) {
        self.call("DELETE", path, Some(key), None)
    }

    /// Uploads the archive at `archive` to `tenant` as a raw body.
    pub fn upload(&self, tenant: &str, archive: &Path, key: &str) -> (u16, Value) {
        self.http
            .try_upload(tenant, archive, key)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// The workflow names this replica serves in `tenant` (empty on any error).
    pub fn workflows(&self, tenant: &str, key: &str) -> BTreeSet<String> {
        workflows(&self.http, tenant, key)
    }

    /// Starts `workflow` in `tenant` with `context`, which must be accepted; the new
    /// execution's id.
    pub fn execute(&self, tenant: &str, workflow: &str, key: &str, context: Value) -> String {
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

    /// Sends `signal` (a `kill` name: `TERM`, `INT`, `KILL`) to the running process.
    pub fn signal(&self, signal: &str) {
        crate::faults::send_signal(self.pid(), signal);
    }

    /// SIGKILL (no drain, no cleanup: a crash) and reaps the process; the home is kept.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit (after a signal), killing it if it outlives `limit`; its
    /// exit code (`None` if killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Starts the process again (after [`Replica::kill9`], [`Replica::stop`] or an exit) on
    /// the same home, port, database, key and flags, and waits until it is ready.
    pub fn restart(&mut self) {
        if self.running() {
            panic!("replica {} still runs: stop or kill it first", self.name);
        }
        self.child = None;
        self.launch();
        self.wait_ready();
    }

    /// SIGTERM, then waits (killing the process if it outlives a generous limit).
    pub fn stop(&mut self) {
        if let Some(child) = &self.child {
            // Not `signal`: this runs on drop, maybe while a test is failing.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            self.wait_exit(Duration::from_secs(30));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The workflow names `http` serves in `tenant` (empty on any error).
pub fn workflows(http: &Http, tenant: &str, key: &str) -> BTreeSet<String> {
    match http.try_call(
        "GET",
        &format!("/v1/tenants/{tenant}/workflows"),
        Some(key),
        None,
    ) {
        Ok((200, list)) => list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|w| w["workflow_name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    }
}

/// Waits until `replica` serves `workflow` in `tenant`; `context` explains a timeout.
pub fn wait_served(replica: &Replica, tenant: &str, workflow: &str, key: &str) {
    wait_for(
        &format!("replica {} serves workflow {workflow}", replica.name),
        || replica.workflows(tenant, key).contains(workflow),
        || replica.logs(),
    );
}
