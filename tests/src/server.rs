//! The real `cloacina-server` in a temporary home, on a free port, driven over HTTP.
//!
//! A [`ServerHome`] is a home directory and a database (a SQLite file in the home, or a fresh
//! PostgreSQL database dropped at the end, because tenants create schemas); it outlives the
//! servers started in it, so a test can restart one. A [`ServerProcess`] is one running server
//! (started through `cloacinactl server start`, which execs the server, or directly): its URL
//! comes from the `addr=` line of `<home>/server.pid`, and it is killed on drop. On a failing
//! test (a panic while it is alive) its stderr and JSON log are printed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins;
use crate::wait::WAIT_LIMIT;

pub fn cloacina_server() -> PathBuf {
    bins::bin("cloacina-server")
}

/// The database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `CLOACINA_TEST_POSTGRES_URL`, or the local trust-auth default.
pub fn postgres_base_url() -> String {
    std::env::var("CLOACINA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// `url` with its database name replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let root = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// Creates database `name` on `CLOACINA_TEST_POSTGRES_URL`'s server with `psql`; its URL, or
/// `None` (with a SKIPPED line) when PostgreSQL is unreachable, unless `CI=true`, where that is
/// a failure.
pub fn create_database(name: &str) -> Option<String> {
    let base = postgres_base_url();
    let out = Command::new("psql")
        .arg(&base)
        .args(["-Atq", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output();
    let failure = match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).to_string()),
        Err(e) => Some(format!("cannot run psql: {e}")),
    };
    if let Some(why) = failure {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL must be reachable under CI=true ({base}): {why}"
        );
        eprintln!("SKIPPED: PostgreSQL not reachable at {base}: {why}");
        return None;
    }
    Some(with_database(&base, name))
}

/// Drops database `name` (with any connection left), saying so on stderr if it cannot.
pub fn drop_database(name: &str) {
    let out = Command::new("psql")
        .arg(postgres_base_url())
        .args(["-Atq", "-c"])
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .output();
    if let Ok(o) = out
        && !o.status.success()
    {
        eprintln!(
            "could not drop test database {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A PostgreSQL database of its own, created with `psql` and dropped (forcibly) on drop.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// A fresh database; `None` (with a SKIPPED line) when PostgreSQL is unreachable, unless
    /// `CI=true`, where that is a failure.
    pub fn create() -> Option<PgDatabase> {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "cloacina_t_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let url = create_database(&name)?;
        Some(PgDatabase { name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// A home directory and a database for servers to run in.
#[derive(Debug)]
pub struct ServerHome {
    dir: tempfile::TempDir,
    pub backend: Backend,
    pub database_url: String,
    _pg: Option<PgDatabase>,
}

impl ServerHome {
    /// A home with a SQLite database file in it.
    pub fn sqlite() -> ServerHome {
        let dir = tempfile::tempdir().expect("temp home");
        let database_url = format!("sqlite://{}", dir.path().join("cloacina.db").display());
        ServerHome {
            dir,
            backend: Backend::Sqlite,
            database_url,
            _pg: None,
        }
    }

    /// A home with a fresh PostgreSQL database; `None` when PostgreSQL is unreachable (not
    /// allowed under `CI=true`).
    pub fn postgres() -> Option<ServerHome> {
        let pg = PgDatabase::create()?;
        Some(ServerHome {
            dir: tempfile::tempdir().expect("temp home"),
            backend: Backend::Postgres,
            database_url: pg.url.clone(),
            _pg: Some(pg),
        })
    }

    pub fn new(backend: Backend) -> Option<ServerHome> {
        match backend {
            Backend::Sqlite => Some(ServerHome::sqlite()),
            Backend::Postgres => ServerHome::postgres(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.path().join("server.pid")
    }

    pub fn bootstrap_key_file(&self) -> PathBuf {
        self.path().join("bootstrap-key")
    }

    /// The generated bootstrap key (the file's text, trimmed).
    pub fn bootstrap_key(&self) -> String {
        std::fs::read_to_string(self.bootstrap_key_file())
            .expect("read <home>/bootstrap-key")
            .trim()
            .to_string()
    }

    fn stderr_file(&self) -> PathBuf {
        self.path().join("server.stderr")
    }

    /// `cloacinactl --home <home> ARGS`, waited for.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bins::cloacinactl())
            .arg("--home")
            .arg(self.path())
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("CLOACINA_BOOTSTRAP_KEY")
            .output()
            .expect("run cloacinactl")
    }

    /// The server's stderr (every start in this home, appended) and its JSON log.
    pub fn logs(&self) -> String {
        let stderr = std::fs::read_to_string(self.stderr_file()).unwrap_or_default();
        let log = std::fs::read_to_string(self.path().join("logs/cloacina-server.log"))
            .unwrap_or_default();
        format!("--- server stderr ---\n{stderr}\n--- server log ---\n{log}")
    }

    /// Everything about a finished command, for a failure message.
    pub fn context(&self, out: &Output) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        )
    }

    /// The command that starts a server here: `cloacinactl server start` (which execs the
    /// server, so the child is the server) or the server binary itself. The database URL
    /// goes in `DATABASE_URL`, as an operator would set it.
    pub fn command(&self, how: &Start) -> Command {
        let mut cmd = if how.direct {
            let mut c = Command::new(cloacina_server());
            c.arg("--home").arg(self.path());
            c
        } else {
            let mut c = Command::new(bins::cloacinactl());
            c.arg("--home").arg(self.path()).args(["server", "start"]);
            c
        };
        cmd.args(["--bind", "127.0.0.1:0"])
            .args(&how.args)
            .env_remove("CLOACINA_BOOTSTRAP_KEY")
            .env_remove("CLOACINA_REQUIRE_SIGNATURES")
            .env("PATH", bins::bin_dir());
        match &how.database_url {
            Some(url) => cmd.env("DATABASE_URL", url),
            None if how.no_database => cmd.env_remove("DATABASE_URL"),
            None => cmd.env("DATABASE_URL", &self.database_url),
        };
        if let Some(key) = &how.bootstrap_key {
            if how.direct {
                cmd.env("CLOACINA_BOOTSTRAP_KEY", key);
            } else {
                cmd.args(["--bootstrap-key", key]);
            }
        }
        cmd
    }

    /// Starts a server and returns once it answers `GET /health`.
    pub fn start(&self, how: Start) -> ServerProcess<'_> {
        let _ = std::fs::remove_file(self.pid_file());
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_file())
            .expect("stderr file");
        let child = self
            .command(&how)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the server");
        let mut server = ServerProcess {
            home: self,
            child: Some(child),
            url: String::new(),
            key: how.bootstrap_key.clone().unwrap_or_default(),
            agent: agent(),
        };
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll the server"))
            {
                panic!(
                    "the server exited while starting ({status})\n{}",
                    self.logs()
                );
            }
            let addr = cloacina::daemon::pidfile::read_record(&self.pid_file())
                .ok()
                .flatten()
                .and_then(|r| r.addr);
            if let Some(addr) = addr {
                server.url = format!("http://{addr}");
                if server.get_anon("/health").status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer /health\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if server.key.is_empty() && self.bootstrap_key_file().is_file() {
            server.key = self.bootstrap_key();
        }
        server
    }

    /// Runs a server start that must fail: returns its exit code and stderr. A server that
    /// is still running after the wait limit is killed and the test fails.
    pub fn start_failing(&self, how: Start) -> (Option<i32>, String) {
        let mut child = self
            .command(&how)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let deadline = Instant::now() + WAIT_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server was expected to fail but kept running\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read as _;
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status.code(), stderr)
    }
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Run `cloacina-server` itself instead of `cloacinactl server start`.
    pub direct: bool,
    /// More flags (`--require-signatures`, `--trusted-key F`, ...).
    pub args: Vec<String>,
    /// The bootstrap key to give (`--bootstrap-key` through cloacinactl, the environment
    /// directly); else one is generated on first start.
    pub bootstrap_key: Option<String>,
    /// `DATABASE_URL` other than the home's database.
    pub database_url: Option<String>,
    /// No `DATABASE_URL` at all.
    pub no_database: bool,
}

impl Start {
    pub fn ctl() -> Start {
        Start::default()
    }

    pub fn direct() -> Start {
        Start {
            direct: true,
            ..Start::default()
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Start {
        self.args.push(a.into());
        self
    }
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(WAIT_LIMIT))
        .build();
    ureq::Agent::new_with_config(config)
}

/// An HTTP answer: status, text, and `content-type`.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub text: String,
    pub content_type: String,
}

impl Resp {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    /// `error` of an error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text)
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A running server. Killed on drop (its logs printed if the test is failing).
pub struct ServerProcess<'h> {
    pub home: &'h ServerHome,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin key: the one given, or the generated bootstrap key.
    pub key: String,
    agent: ureq::Agent,
}

impl ServerProcess<'_> {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the server runs")
    }

    /// The server's logs, for failure messages.
    pub fn logs(&self) -> String {
        self.home.logs()
    }

    /// `METHOD path` with `key` (if any), `content_type` and `body`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).expect("a valid request");
        let mut resp = self
            .agent
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}\n{}", self.logs()));
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Resp {
            status: resp.status().as_u16(),
            text: resp
                .body_mut()
                .with_config()
                .limit(64 * 1024 * 1024)
                .read_to_string()
                .unwrap_or_default(),
            content_type,
        }
    }

    pub fn get_anon(&self, path: &str) -> Resp {
        self.request("GET", path, None, &[], Vec::new())
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Some(&self.key), &[], Vec::new())
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, Some(&self.key), &[], Vec::new())
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            Some(&self.key),
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
    }

    /// `GET path` that must answer 200; its JSON.
    pub fn get_ok(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {r}\n{}", self.logs());
        r.json()
    }

    /// Uploads `archive` to `tenant` as a raw `application/octet-stream` body.
    pub fn upload_raw(&self, tenant: &str, archive: &[u8]) -> Resp {
        self.request(
            "POST",
            &format!("/v1/tenants/{tenant}/workflows"),
            Some(&self.key),
            &[("content-type", "application/octet-stream")],
            archive.to_vec(),
        )
    }

    /// Uploads `archive` (and its detached `signature`) to `tenant` as `multipart/form-data`
    /// with the parts `file` and `signature`.
    pub fn upload_multipart(&self, tenant: &str, archive: &[u8], signature: Option<&str>) -> Resp {
        let boundary = "cloacina-e2e-boundary-7d1f0c2a";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.cloacina\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(archive);
        body.extend_from_slice(b"\r\n");
        if let Some(sig) = signature {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"signature\"; filename=\"p.cloacina.sig\"\r\n\r\n{sig}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={boundary}");
        self.request(
            "POST",
            &format!("/v1/tenants/{tenant}/workflows"),
            Some(&self.key),
            &[("content-type", &ct)],
            body,
        )
    }

    /// `POST .../workflows/{workflow}/execute` that must answer 202; the execution id.
    pub fn execute(&self, tenant: &str, workflow: &str, context: &Value) -> String {
        let r = self.post(
            &format!("/v1/tenants/{tenant}/workflows/{workflow}/execute"),
            &serde_json::json!({ "context": context }),
        );
        assert_eq!(r.status, 202, "execute {workflow}: {r}\n{}", self.logs());
        r.json()["execution_id"]
            .as_str()
            .expect("execution_id")
            .to_string()
    }

    /// Polls the execution until its status is terminal; returns the last status document.
    pub fn wait_execution(&self, tenant: &str, id: &str) -> Value {
        let mut last = Value::Null;
        crate::wait_for(
            &format!("execution {id} finishes"),
            || {
                last = self.get_ok(&format!("/v1/tenants/{tenant}/executions/{id}"));
                matches!(
                    last["status"].as_str(),
                    Some("Completed" | "Failed" | "Cancelled")
                )
            },
            || self.logs(),
        );
        last
    }

    /// Reads a Server-Sent Events stream at `path` (optionally resuming after
    /// `last_event_id`) until the server ends it.
    pub fn sse(&self, path: &str, last_event_id: Option<&str>) -> Vec<SseEvent> {
        let mut req = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.key))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = self
            .agent
            .run(req.body(()).expect("a valid request"))
            .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}\n{}", self.logs()));
        assert_eq!(resp.status().as_u16(), 200, "GET {path}\n{}", self.logs());
        let reader = BufReader::new(resp.into_body().into_reader());
        let mut events = Vec::new();
        let mut current = SseEvent::default();
        let mut has_field = false;
        for line in reader.lines() {
            let line = line.unwrap_or_else(|e| panic!("reading {path}: {e}\n{}", self.logs()));
            if line.is_empty() {
                if has_field {
                    events.push(std::mem::take(&mut current));
                }
                has_field = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            has_field = true;
            match field {
                "id" => current.id = Some(value.to_string()),
                "event" => current.event = Some(value.to_string()),
                "data" => {
                    if !current.data.is_empty() {
                        current.data.push('\n');
                    }
                    current.data.push_str(value);
                }
                _ => {}
            }
        }
        if has_field {
            events.push(current);
        }
        events
    }

    /// Sends `signal` (a `kill` name: `TERM`, `INT`, `KILL`) to the server.
    pub fn signal(&self, signal: &str) {
        crate::faults::send_signal(self.pid(), signal);
    }

    /// Waits for the server to exit (after a signal or `server stop`); its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("the server runs");
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(status) = child.try_wait().expect("poll the server") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for ServerProcess<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.home.logs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
