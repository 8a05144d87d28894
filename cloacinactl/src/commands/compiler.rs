//! `cloacinactl compiler start|stop|status|health`: the build service managed like the server
//! (spec: CLI reference, "compiler"): `start` execs `cloacina-compiler` in the foreground,
//! `stop` goes through `<home>/compiler.pid`, `status` (`GET /v1/status`) and `health`
//! (`GET /health`) ask the compiler over HTTP, unauthenticated, at `[compiler].local_addr`.

use std::time::Duration;

use cloacina::compiler::SERVICE;
use cloacina::config::{CompilerConfig, Config, Home};
use cloacina::daemon::pidfile;
use serde_json::Value;

use crate::cli::{CompilerCommand, CompilerStartArgs};
use crate::error::CliError;
use crate::http::{Client, HttpError};
use crate::output::{Report, cell, emit, fields};
use crate::settings::Settings;

const COMPILER_BINARY: &str = "cloacina-compiler";
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `stop` waits after SIGTERM: the compiler kills its build and releases the claim.
const STOP_WAIT: Duration = Duration::from_secs(30);

pub fn run(settings: &Settings, command: &CompilerCommand) -> Result<(), CliError> {
    let home = Home::at(settings.home()?);
    match command {
        CompilerCommand::Start(args) => start(settings, &home, args),
        CompilerCommand::Stop(args) => {
            super::stop_service(SERVICE, &home.compiler_pid(), args.force, STOP_WAIT, &[])
        }
        CompilerCommand::Status(_) => show_status(settings, &home),
        CompilerCommand::Health => health(settings, &home),
    }
}

/// The compiler's command line (all but the database URL, which goes in its environment).
fn start_args(home: &Home, args: &CompilerStartArgs) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = vec![
        "--home".into(),
        home.root().into(),
        "--bind".into(),
        args.bind.clone().into(),
    ];
    for (flag, value) in [
        ("--poll-interval-ms", args.poll_interval_ms),
        ("--heartbeat-interval-s", args.heartbeat_interval_s),
        ("--stale-threshold-s", args.stale_threshold_s),
        ("--sweep-interval-s", args.sweep_interval_s),
    ] {
        if let Some(n) = value {
            out.push(flag.into());
            out.push(n.to_string().into());
        }
    }
    if let Some(key) = &args.signing_key {
        out.push("--signing-key".into());
        out.push(key.into());
    }
    out
}

/// Replaces this process with the compiler, in the foreground. The database URL goes in its
/// environment (`DATABASE_URL`), never on its command line, which other local users can read
/// in `/proc`. The compiler itself refuses to start when another holds this home's PID lock.
fn start(settings: &Settings, home: &Home, args: &CompilerStartArgs) -> Result<(), CliError> {
    use std::os::unix::process::CommandExt;
    let url = super::database_url(
        settings,
        args.database_url.as_deref(),
        "the compiler (it uses the servers' database)",
    )?;
    let binary = super::find_binary(COMPILER_BINARY)?;
    let mut cmd = std::process::Command::new(&binary);
    cmd.args(start_args(home, args));
    cmd.env("DATABASE_URL", url);
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

/// Where the compiler is: `[compiler].local_addr` when config.toml sets it, else the address
/// this home's compiler recorded in its PID file, else the default (`127.0.0.1:9000`).
fn compiler_url(home: &Home, config: &Config) -> Result<String, CliError> {
    let configured = &config.compiler.local_addr;
    if *configured != CompilerConfig::default().local_addr {
        return Ok(super::server::local_url(configured));
    }
    let recorded = pidfile::read_record(&home.compiler_pid())
        .map_err(|e| CliError::User(e.to_string()))?
        .and_then(|r| r.addr);
    Ok(super::server::local_url(
        recorded.as_deref().unwrap_or(configured),
    ))
}

/// `GET /health`: exit 0 on 200, else 2, printing nothing (`-v` logs why).
fn health(settings: &Settings, home: &Home) -> Result<(), CliError> {
    let url = compiler_url(home, &settings.config()?)?;
    super::probe_health(&url, PROBE_TIMEOUT)
}

/// `GET /v1/status`: the queue, the build in progress, the heartbeat and the last outcomes.
fn show_status(settings: &Settings, home: &Home) -> Result<(), CliError> {
    let url = compiler_url(home, &settings.config()?)?;
    let client = Client::new(&url, None, PROBE_TIMEOUT)?;
    let value = match client.get_json("/v1/status") {
        Ok(v) => v,
        Err(HttpError::Transport { url, message }) => {
            return Err(CliError::Network(format!(
                "cannot reach the compiler at {url}: {message}; is it running ('cloacinactl compiler start')? Set [compiler].local_addr in {} if it listens elsewhere",
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

fn status_text(base: &str, v: &Value) -> String {
    let heartbeat = v
        .get("seconds_since_heartbeat")
        .and_then(Value::as_u64)
        .map_or_else(
            || "-".to_string(),
            |s| format!("{} ago", super::daemon::human_duration(s)),
        );
    let current = match v.get("current_build") {
        Some(c @ Value::Object(_)) => format!(
            "{} {} (tenant {}, since {})",
            cell(c.get("name")),
            cell(c.get("version")),
            cell(c.get("tenant_id")),
            cell(c.get("started_at"))
        ),
        _ => "none".to_string(),
    };
    let mut rows = vec![
        ("compiler", base.to_string()),
        ("status", cell(v.get("status"))),
        ("pending", cell(v.get("pending"))),
        ("building", cell(v.get("building"))),
        ("failed", cell(v.get("failed"))),
        ("current build", current),
        ("heartbeat", heartbeat),
        ("last success", cell(v.get("last_success_at"))),
        ("last failure", cell(v.get("last_failure_at"))),
        ("worker", cell(v.get("worker_id"))),
        ("backend", cell(v.get("backend"))),
    ];
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        rows.push(("error", cell(Some(e))));
    }
    fields(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_names_the_queue_and_the_build() {
        let v = serde_json::json!({
            "status": "ok", "pending": 2, "building": 1, "failed": 0,
            "seconds_since_heartbeat": 3, "last_success_at": "2026-12-03T12:00:00.000Z",
            "last_failure_at": null,
            "current_build": {"name": "etl", "version": "1.2.0", "tenant_id": "acme", "started_at": "2026-12-03T12:01:00.000Z"},
            "worker_id": "host/1/abc", "backend": "postgres", "error": null,
        });
        let text = status_text("http://127.0.0.1:9000", &v);
        for want in [
            "status         ok",
            "pending        2",
            "building       1",
            "etl 1.2.0 (tenant acme",
            "3s ago",
            "2026-12-03T12:00:00.000Z",
            "last failure   -",
        ] {
            assert!(text.contains(want), "{want}:\n{text}");
        }
        assert!(!text.contains("error"), "{text}");
        let text = status_text(
            "u",
            &serde_json::json!({"status": "degraded", "error": "db down"}),
        );
        assert!(text.contains("current build  none"), "{text}");
        assert!(text.contains("error          db down"), "{text}");
    }

    #[test]
    fn start_passes_only_the_flags_given() {
        let home = Home::at("/h");
        let args = CompilerStartArgs {
            bind: "127.0.0.1:9100".to_string(),
            database_url: Some("postgres://u:secret@h/db".to_string()),
            poll_interval_ms: Some(250),
            heartbeat_interval_s: None,
            stale_threshold_s: Some(30),
            sweep_interval_s: None,
            signing_key: Some("/k/key".into()),
        };
        let line: Vec<String> = start_args(&home, &args)
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            line,
            [
                "--home",
                "/h",
                "--bind",
                "127.0.0.1:9100",
                "--poll-interval-ms",
                "250",
                "--stale-threshold-s",
                "30",
                "--signing-key",
                "/k/key"
            ]
        );
        assert!(!line.iter().any(|a| a.contains("secret")));
    }

    #[test]
    fn the_address_comes_from_the_config_then_the_pid_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let home = Home::at(tmp.path());
        let mut config = Config::default();
        assert_eq!(
            compiler_url(&home, &config).expect("url"),
            "http://127.0.0.1:9000"
        );
        std::fs::write(home.compiler_pid(), "1\naddr=127.0.0.1:9555\n").expect("write");
        assert_eq!(
            compiler_url(&home, &config).expect("url"),
            "http://127.0.0.1:9555"
        );
        config.compiler.local_addr = "0.0.0.0:9777".to_string();
        assert_eq!(
            compiler_url(&home, &config).expect("url"),
            "http://127.0.0.1:9777"
        );
    }
}
