//! `cloacinactl status`: the daemon, the server and the compiler probed at once and
//! independently, each with a short timeout, one row per service (spec: CLI reference,
//! "status"). A probe that fails is shown as `down` with its reason; it never hides the others.
//!
//! - daemon: its health socket, `<home>/daemon.sock` (as `daemon status`);
//! - server: `GET /health`, then `GET /v1/health/status` when an API key is configured, at
//!   `--server`, else the profile's server, else the address in `<home>/server.pid`, else
//!   127.0.0.1:8080 (as `server status`);
//! - compiler: `GET /v1/status` (else `GET /health`) at `[compiler].local_addr` (default
//!   127.0.0.1:9000).
//!
//! Exit code: 0 when at least one service is up; 2 (network failure) when none is, after the
//! table is printed. A bad flag, an unknown `--profile` or a config file that does not parse
//! is a user error (1) and nothing is probed.

use std::time::Duration;

use cloacina::config::Home;
use cloacina::daemon::status;
use serde_json::{Value, json};

use super::daemon::human_duration;
use crate::error::CliError;
use crate::http::{Client, HttpError};
use crate::output::{Report, emit, good};
use crate::settings::Settings;

/// How long each probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One service's row.
#[derive(Debug, Clone)]
struct Probe {
    service: &'static str,
    up: bool,
    address: String,
    detail: String,
    /// The service's own status document, when it gave one.
    report: Value,
}

impl Probe {
    fn down(service: &'static str, address: String, detail: String) -> Probe {
        Probe {
            service,
            up: false,
            address,
            detail,
            report: Value::Null,
        }
    }

    fn word(&self) -> &'static str {
        if self.up { "up" } else { "down" }
    }
}

pub fn run(settings: &Settings) -> Result<(), CliError> {
    let home = Home::at(settings.home()?);
    let config = settings.config()?;
    let server_url = super::server::server_url(settings, &home, &config)?;
    // A key that cannot be decoded only costs the server row its details.
    let key = settings.api_key(&config).map_err(|e| e.to_string());
    let compiler_url = super::server::local_url(&config.compiler.local_addr);
    let probes = std::thread::scope(|s| {
        let daemon = s.spawn(|| probe_daemon(&home));
        let server = s.spawn(|| probe_server(&server_url, key));
        let compiler = s.spawn(|| probe_compiler(&compiler_url));
        let joined = |h: std::thread::ScopedJoinHandle<'_, Probe>, name: &'static str| {
            h.join().unwrap_or_else(|_| {
                Probe::down(name, "-".to_string(), "the probe failed".to_string())
            })
        };
        [
            joined(daemon, "daemon"),
            joined(server, "server"),
            joined(compiler, "compiler"),
        ]
    });
    emit(settings, &report(settings, &probes))?;
    if probes.iter().any(|p| p.up) {
        Ok(())
    } else {
        Err(CliError::Network(
            "no service is up: the daemon, the server and the compiler are all down".to_string(),
        ))
    }
}

fn report(settings: &Settings, probes: &[Probe]) -> Report {
    let mut value = serde_json::Map::new();
    for p in probes {
        value.insert(
            p.service.to_string(),
            json!({
                "status": p.word(),
                "address": p.address,
                "detail": p.detail,
                "report": p.report,
            }),
        );
    }
    let head = ["SERVICE", "STATUS", "ADDRESS", "DETAIL"];
    let rows: Vec<[String; 4]> = probes
        .iter()
        .map(|p| {
            [
                p.service.to_string(),
                p.word().to_string(),
                p.address.clone(),
                p.detail.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 4], up: bool| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(c.chars().count()) + 2);
            if i == 1 && up {
                out.push_str(&good(settings, c));
            } else {
                out.push_str(c);
            }
            out.push_str(&pad);
        }
        out.trim_end().to_string() + "\n"
    };
    let mut text = line(head, false);
    for r in &rows {
        text.push_str(&line([&r[0], &r[1], &r[2], &r[3]], r[1] == "up"));
    }
    Report {
        id: probes
            .iter()
            .filter(|p| p.up)
            .map(|p| p.service)
            .collect::<Vec<_>>()
            .join("\n"),
        value: Value::Object(value),
        text,
    }
}

fn probe_daemon(home: &Home) -> Probe {
    let socket = home.daemon_socket();
    let address = socket.display().to_string();
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(status::probe(&socket, PROBE_TIMEOUT))
                .map_err(|e| e.to_string())
        });
    match answer {
        Ok(s) => Probe {
            service: "daemon",
            up: true,
            address,
            detail: format!(
                "{}, pid {}, up {}, {} packages loaded, {} active workflows",
                s.health,
                s.pid,
                human_duration(s.uptime_s),
                s.packages_loaded,
                s.active_workflows
            ),
            report: serde_json::to_value(&s).unwrap_or(Value::Null),
        },
        Err(e) => Probe::down("daemon", address, e),
    }
}

fn probe_server(url: &str, key: Result<Option<String>, String>) -> Probe {
    let (key, key_problem) = match key {
        Ok(k) => (k, None),
        Err(e) => (None, Some(e)),
    };
    let has_key = key.is_some();
    let client = match Client::new(url, key, PROBE_TIMEOUT) {
        Ok(c) => c,
        Err(e) => return Probe::down("server", url.to_string(), e.to_string()),
    };
    let address = client.base().to_string();
    if let Err(e) = client.get_status("/health") {
        return Probe::down("server", address, e.to_string());
    }
    let (detail, report) = if let Some(problem) = key_problem {
        (
            format!("answers /health; no details: {problem}"),
            Value::Null,
        )
    } else if !has_key {
        (
            "answers /health; pass --api-key or use a profile for its status".to_string(),
            Value::Null,
        )
    } else {
        match client.get_json("/v1/health/status") {
            Ok(v) => (server_detail(&v), v),
            Err(e) => (
                format!("answers /health; /v1/health/status: {e}"),
                Value::Null,
            ),
        }
    };
    Probe {
        service: "server",
        up: true,
        address,
        detail,
        report,
    }
}

/// `version 0.1.0, up 5m3s, sqlite, 2 packages, 1 running`.
fn server_detail(v: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(s) = v.get("version").and_then(Value::as_str) {
        parts.push(format!("version {s}"));
    }
    if let Some(s) = v.get("uptime_s").and_then(Value::as_u64) {
        parts.push(format!("up {}", human_duration(s)));
    }
    if let Some(s) = v.get("backend").and_then(Value::as_str) {
        parts.push(s.to_string());
    }
    if let Some(p) = v.get("packages").and_then(Value::as_array) {
        parts.push(format!("{} packages", p.len()));
    }
    if let Some(n) = v
        .get("executions")
        .and_then(|e| e.get("Running").or_else(|| e.get("running")))
        .and_then(Value::as_i64)
    {
        parts.push(format!("{n} running"));
    }
    if parts.is_empty() {
        "up".to_string()
    } else {
        parts.join(", ")
    }
}

fn probe_compiler(url: &str) -> Probe {
    let client = match Client::new(url, None, PROBE_TIMEOUT) {
        Ok(c) => c,
        Err(e) => return Probe::down("compiler", url.to_string(), e.to_string()),
    };
    let address = client.base().to_string();
    match client.get_json("/v1/status") {
        Ok(v) => Probe {
            service: "compiler",
            up: true,
            address,
            detail: compiler_detail(&v),
            report: v,
        },
        Err(HttpError::Transport { url, message }) => Probe::down(
            "compiler",
            address,
            format!("cannot reach the compiler at {url}: {message}"),
        ),
        Err(e) => match client.get_status("/health") {
            Ok(_) => Probe {
                service: "compiler",
                up: true,
                address,
                detail: format!("answers /health; /v1/status: {e}"),
                report: Value::Null,
            },
            Err(h) => Probe::down(
                "compiler",
                address,
                format!("/v1/status: {e}; /health: {h}"),
            ),
        },
    }
}

/// `ok, 1 pending, 0 building, heartbeat 3s ago`.
fn compiler_detail(v: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(s) = v.get("status").and_then(Value::as_str) {
        parts.push(s.to_string());
    }
    for key in ["pending", "building"] {
        if let Some(n) = v.get(key).and_then(Value::as_i64) {
            parts.push(format!("{n} {key}"));
        }
    }
    if let Some(s) = v.get("seconds_since_heartbeat").and_then(Value::as_u64) {
        parts.push(format!("heartbeat {} ago", human_duration(s)));
    }
    if parts.is_empty() {
        "up".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_every_service_and_details() {
        let probes = [
            Probe::down("daemon", "/h/daemon.sock".into(), "not running".into()),
            Probe {
                service: "server",
                up: true,
                address: "http://127.0.0.1:8080".into(),
                detail: server_detail(&json!({
                    "version": "0.1.0", "uptime_s": 75, "backend": "sqlite",
                    "packages": [{}], "executions": {"Running": 2}
                })),
                report: json!({"version": "0.1.0"}),
            },
            Probe::down("compiler", "http://127.0.0.1:9000".into(), "refused".into()),
        ];
        let r = report(&Settings::for_tests(), &probes);
        let lines: Vec<&str> = r.text.lines().collect();
        assert_eq!(lines.len(), 4, "{}", r.text);
        assert!(lines[0].starts_with("SERVICE"), "{}", r.text);
        assert!(lines[1].starts_with("daemon    down"), "{}", r.text);
        assert!(
            lines[2].contains("up      http://127.0.0.1:8080")
                && lines[2].ends_with("version 0.1.0, up 1m15s, sqlite, 1 packages, 2 running"),
            "{}",
            r.text
        );
        assert_eq!(r.id, "server");
        assert_eq!(r.value["compiler"]["status"], "down");
        assert_eq!(r.value["server"]["report"]["version"], "0.1.0");
        assert_eq!(
            compiler_detail(
                &json!({"status": "ok", "pending": 1, "building": 0, "seconds_since_heartbeat": 3})
            ),
            "ok, 1 pending, 0 building, heartbeat 3s ago"
        );
    }
}
