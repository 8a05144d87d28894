//! A real HAProxy in front of [`Replica`](crate::replicas::Replica)s: its own process, with its
//! own configuration in a temporary directory, on a free loopback port (the system service,
//! if any, is never used). `scripts/haproxy.sh` installs it; without it the tests that need it
//! skip, except under `CI=true`, where they fail.
//!
//! The configuration is what the tests rely on, and what `docs/reliability.md` ("Behind a load
//! balancer") recommends:
//!
//! - Health checks on `GET /ready` every 200 ms, 2 failures to take a replica out, 2 successes
//!   to put it back: a killed replica is out within about half a second, and a stopping one
//!   (whose `/ready` answers 503 through its drain grace) before its listener closes. A check
//!   may take 2 s (`timeout check`): a `/ready` slowed by a busy database must not take
//!   healthy replicas out (all out, haproxy answers 503 itself).
//! - `option http-server-close`: one server connection per request. A request is then never
//!   sent on a kept-alive connection the server is closing at that moment, the one failure a
//!   balancer cannot tell apart from "the server got the request and died".
//! - `retry-on conn-failure` with `retries 3` and `option redispatch 1`: a request is retried,
//!   on another replica, only when the connection to the server could not be made, that is,
//!   when the request certainly never reached it. Nothing else is retried: an
//!   `empty-response` or `response-timeout` retry of a `POST .../execute` that the replica did
//!   receive (and committed before it died) would start the execution twice. Such a request
//!   fails instead (502), and the client decides.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::replicas::{Http, free_port, wait_ok};

/// The `haproxy` binary: on `PATH`, or in the `sbin` directories a non-root `PATH` may lack.
/// `None` (with a SKIPPED line) when it is missing, except under `CI=true`, where that fails
/// the test.
pub fn haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir: PathBuf| dir.join("haproxy"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "haproxy must be installed under CI=true: run scripts/haproxy.sh"
        );
        eprintln!("SKIPPED: haproxy is not installed (scripts/haproxy.sh installs it)");
    }
    found
}

/// One HAProxy process balancing over some replicas. Stopped on drop.
pub struct Balancer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`: the frontend clients use.
    pub base: String,
    stats_base: String,
    servers: Vec<String>,
}

impl Balancer {
    /// Writes the configuration for `servers` (name, `HOST:PORT`), starts haproxy (from
    /// [`haproxy`]) in the foreground, and waits until it answers and sees every server up.
    pub fn start(haproxy: &std::path::Path, servers: &[(String, String)]) -> Balancer {
        let dir = tempfile::tempdir().expect("balancer dir");
        let port = free_port();
        let stats_port = free_port();
        let config = config(port, stats_port, servers);
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, &config).expect("write haproxy.cfg");
        let out = std::fs::File::create(dir.path().join("haproxy.log")).expect("haproxy log");
        let child = Command::new(haproxy)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("haproxy log"))
            .stderr(out)
            .spawn()
            .expect("start haproxy");
        let mut balancer = Balancer {
            dir,
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            stats_base: format!("http://127.0.0.1:{stats_port}"),
            servers: servers.iter().map(|(n, _)| n.clone()).collect(),
        };
        for name in balancer.servers.clone() {
            balancer.wait_status(&name, "UP");
        }
        balancer
    }

    /// A client of the frontend (each client thread takes its own: its own connections).
    pub fn http(&self) -> Http {
        Http::new(self.base.clone())
    }

    /// The configuration haproxy runs with.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap_or_default()
    }

    /// Fails at once (with the log) if haproxy has exited.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("haproxy exited ({status})\n{}", self.logs());
        }
    }

    /// haproxy's output (its request log lines included), the last 60 lines.
    pub fn logs(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- haproxy ({}) output, last 60 lines ---\n{}",
            self.base,
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// The whole request log.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// haproxy's output but its normal request lines (termination state `----`): servers
    /// going down and up, requests aborted or cut by a dying server, for reports.
    pub fn notable_lines(&self) -> Vec<String> {
        self.full_log()
            .lines()
            .filter(|l| !l.contains(" ---- "))
            .map(str::to_string)
            .collect()
    }

    /// The statistics page as CSV rows keyed by column (`pxname`, `svname`, `status`,
    /// `wretr` retries, `wredis` redispatches, `hrsp_5xx`, ...); empty if it does not answer.
    pub fn stats(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build(),
        );
        let text = agent
            .get(format!("{}/stats;csv", self.stats_base))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .map(str::to_string)
            .collect();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(l.split(',').map(str::to_string))
                    .collect()
            })
            .collect()
    }

    /// The check status haproxy shows for server `name` (`UP`, `DOWN`, `UP 1/2`, ...).
    pub fn status(&self, name: &str) -> String {
        self.stats()
            .into_iter()
            .find(|r| {
                r.get("pxname").map(String::as_str) == Some("replicas")
                    && r.get("svname").map(String::as_str) == Some(name)
            })
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
    }

    /// Waits until haproxy shows server `name` with status `status` exactly.
    pub fn wait_status(&mut self, name: &str, status: &str) {
        let what = format!("haproxy sees replica {name} {status}");
        wait_ok(&what, || {
            self.assert_running();
            let now = self.status(name);
            if now == status {
                Ok(())
            } else {
                Err(format!("status now: {now:?}\n{}", self.logs()))
            }
        });
    }

    /// The backend's totals: retries (`wretr`), redispatches (`wredis`), 5xx answers
    /// (`hrsp_5xx`), connection errors (`econ`), response errors (`eresp`), for reports.
    pub fn summary(&self) -> String {
        let stats = self.stats();
        let Some(backend) = stats.iter().find(|r| {
            r.get("pxname").map(String::as_str) == Some("replicas")
                && r.get("svname").map(String::as_str) == Some("BACKEND")
        }) else {
            return "no statistics".to_string();
        };
        let field = |k: &str| backend.get(k).cloned().unwrap_or_default();
        format!(
            "haproxy backend: {} requests, {} retries, {} redispatches, {} connection errors, \
             {} response errors, {} 5xx answers",
            field("stot"),
            field("wretr"),
            field("wredis"),
            field("econ"),
            field("eresp"),
            field("hrsp_5xx")
        )
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The configuration (see the module's documentation for why each setting).
fn config(port: u16, stats_port: u16, servers: &[(String, String)]) -> String {
    let mut cfg = format!(
        "global
    maxconn 2000
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 30s
    timeout queue 10s
    # A slow /ready (a busy database) is not a failed check; a dead replica fails at connect.
    timeout check 2s
    # One server connection per request: never a request on a connection the server closes.
    option http-server-close
    # Retry (on another replica) only what never reached a server: safe for POST.
    retries 3
    option redispatch 1
    retry-on conn-failure

frontend api
    bind 127.0.0.1:{port}
    default_backend replicas

listen stats
    bind 127.0.0.1:{stats_port}
    no log
    stats enable
    stats uri /stats
    stats refresh 1s

backend replicas
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 200ms fastinter 100ms downinter 200ms fall 2 rise 2
"
    );
    for (name, addr) in servers {
        cfg.push_str(&format!("    server {name} {addr} check\n"));
    }
    cfg
}
