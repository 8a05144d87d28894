//! `cloacinactl server start|stop|status|health`: the HTTP server managed like the daemon
//! (spec: CLI reference, "server"): `start` execs `cloacina-server` in the foreground, `stop`
//! goes through `<home>/server.pid`, `status` and `health` ask the server over HTTP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use cloacina::config::{Config, Home};
use cloacina::daemon::pidfile;
use serde_json::Value;

use crate::cli::{ServerCommand, ServerStartArgs};
use crate::error::CliError;
use crate::http::{Client, HttpError};
use crate::output::{Report, emit, fields};
use crate::settings::Settings;

const SERVER_BINARY: &str = "cloacina-server";
/// Where a server listens when nothing says otherwise (`--bind`'s default).
const DEFAULT_URL: &str = "http://127.0.0.1:8080";
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `stop` waits for the server to drain after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(40);

pub fn run(settings: &Settings, command: &ServerCommand) -> Result<(), CliError> {
    let home = Home::at(settings.home()?);
    match command {
        ServerCommand::Start(args) => start(settings, &home, args),
        ServerCommand::Stop(args) => super::stop_service(
            pidfile::SERVER,
            &home.server_pid(),
            args.force,
            STOP_WAIT,
            &[],
        ),
        ServerCommand::Status(_) => show_status(settings, &home),
        ServerCommand::Health => health(settings, &home),
    }
}

/// Replaces this process with the server, in the foreground. The database URL and the
/// bootstrap key go in the server's environment (`DATABASE_URL`, `CLOACINA_BOOTSTRAP_KEY`),
/// never on its command line, which other local users can read in `/proc`. The server
/// itself refuses to start when another holds this home's PID lock.
fn start(settings: &Settings, home: &Home, args: &ServerStartArgs) -> Result<(), CliError> {
    use std::os::unix::process::CommandExt;
    let url = super::database_url(settings, args.database_url.as_deref(), "the server")?;
    let binary = super::find_binary(SERVER_BINARY)?;
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("--home").arg(home.root());
    cmd.arg("--bind").arg(&args.bind);
    if args.require_signatures {
        cmd.arg("--require-signatures");
    }
    for key in &args.trusted_keys {
        cmd.arg("--trusted-key").arg(key);
    }
    if let Some(n) = args.reconcile_interval_s {
        cmd.arg("--reconcile-interval-s").arg(n.to_string());
    }
    cmd.env("DATABASE_URL", url);
    if let Some(key) = &args.bootstrap_key {
        cmd.env("CLOACINA_BOOTSTRAP_KEY", key);
    }
    if settings.verbose {
        cmd.env("RUST_LOG", "debug");
    }
    if settings.no_color {
        cmd.env("NO_COLOR", "1");
    }
    let err = cmd.exec();
    Err(CliError::User(format!(
        "cannot start {}: {err}",
        binary.display()
    )))
}

/// Where the server is: `--server`, else the profile's server, else the address this home's
/// server recorded in its PID file, else the default bind address.
pub(crate) fn server_url(
    settings: &Settings,
    home: &Home,
    config: &Config,
) -> Result<String, CliError> {
    if let Some(url) = settings.server_url(config)? {
        return Ok(url);
    }
    let recorded = pidfile::read_record(&home.server_pid())
        .map_err(|e| CliError::User(e.to_string()))?
        .and_then(|r| r.addr);
    Ok(recorded.map_or_else(|| DEFAULT_URL.to_string(), |addr| local_url(&addr)))
}

/// A URL to reach a bind address from this machine: a wildcard address (`0.0.0.0`, `[::]`)
/// is reached on the loopback address of its family.
pub(crate) fn local_url(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(mut sa) => {
            if sa.ip().is_unspecified() {
                sa.set_ip(match sa.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            format!("http://{sa}")
        }
        Err(_) if addr.contains("://") => addr.to_string(),
        Err(_) => format!("http://{addr}"),
    }
}

/// `GET /health`: exit 0 on 200, else 2, printing nothing (`-v` logs why).
fn health(settings: &Settings, home: &Home) -> Result<(), CliError> {
    let url = server_url(settings, home, &settings.config()?)?;
    super::probe_health(&url, PROBE_TIMEOUT)
}

/// `GET /v1/health/status` with the resolved API key. Without a key the request is still
/// made: an unreachable server is reported as such (exit 2), and the server's 401 (exit 4)
/// comes with a hint on how to give one.
fn show_status(settings: &Settings, home: &Home) -> Result<(), CliError> {
    let config = settings.config()?;
    let url = server_url(settings, home, &config)?;
    let key = settings.api_key(&config)?;
    let has_key = key.is_some();
    let client = Client::new(&url, key, crate::http::DEFAULT_TIMEOUT)?;
    let value = match client.get_json("/v1/health/status") {
        Ok(v) => v,
        Err(e @ HttpError::Status { status: 401, .. }) if !has_key => {
            return Err(CliError::Auth(format!(
                "{e}; no API key was given: pass --api-key KEY (raw, env:VAR or file:PATH) or set api_key in a profile of {}",
                home.config().display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let text = status_text(client.base(), &value);
    emit(
        settings,
        &Report {
            id: client.base().to_string(),
            value,
            text,
        },
    )
}

/// A scalar JSON value as text (`-` for a missing or null one).
fn scalar(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `k v, k v` for an object's scalar members, in the server's order.
fn inline(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(map)) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) | Value::Array(_) => format!("{k} {}", v),
                _ => format!("{k} {}", scalar(Some(v))),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::Object(_)) => "none".to_string(),
        other => scalar(other),
    }
}

/// The status as aligned fields, then one row per package.
fn status_text(base: &str, v: &Value) -> String {
    let packages = v.get("packages").and_then(Value::as_array);
    let uptime = v
        .get("uptime_s")
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_string(), super::daemon::human_duration);
    let mut text = fields(&[
        ("server", base.to_string()),
        ("version", scalar(v.get("version"))),
        ("uptime", uptime),
        ("backend", scalar(v.get("backend"))),
        (
            "packages",
            packages.map_or_else(|| "-".to_string(), |p| p.len().to_string()),
        ),
        ("executions", inline(v.get("executions"))),
        ("last pass", scalar(v.get("last_reconcile_at"))),
    ]);
    if let Some(items) = packages.filter(|p| !p.is_empty()) {
        text.push('\n');
        text.push_str(&package_table(items));
    }
    text
}

fn package_table(items: &[Value]) -> String {
    let mut cols: Vec<&str> = vec!["name", "version", "state"];
    for extra in ["tenant", "id"] {
        if items.iter().any(|p| p.get(extra).is_some()) {
            cols.push(extra);
        }
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| cols.iter().map(|c| scalar(p.get(*c))).collect())
        .collect();
    let head: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut out = String::from("  ");
        for (c, w) in cells.iter().zip(&widths) {
            out.push_str(&format!("{c:<w$}  "));
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&head);
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_bind_addresses_are_reached_on_loopback() {
        assert_eq!(local_url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(local_url("[::]:9"), "http://[::1]:9");
        assert_eq!(local_url("10.0.0.5:80"), "http://10.0.0.5:80");
        assert_eq!(local_url("localhost:8080"), "http://localhost:8080");
    }

    #[test]
    fn the_status_table_names_every_section() {
        let v = serde_json::json!({
            "version": "0.1.0",
            "uptime_s": 75,
            "backend": "sqlite",
            "packages": [{"name": "etl", "version": "1.0.0", "state": "loaded", "tenant": "public"}],
            "executions": {"running": 1, "completed": 4},
            "last_reconcile_at": "2026-12-03T12:00:00Z",
        });
        let text = status_text("http://127.0.0.1:8080", &v);
        for want in [
            "0.1.0",
            "1m15s",
            "sqlite",
            "completed 4",
            "2026-12-03T12:00:00Z",
            "TENANT",
            "etl",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        // Missing sections are shown as such, not as an error.
        let text = status_text("u", &serde_json::json!({}));
        assert!(text.contains("version     -"), "{text}");
    }
}
