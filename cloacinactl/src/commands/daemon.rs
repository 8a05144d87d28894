//! `cloacinactl daemon start|stop|status|health`: local service management through the PID
//! file and the health socket (spec: CLI reference, "daemon").

use std::time::Duration;

use cloacina::config::{Config, DaemonConfig, Home, bounds};
use cloacina::daemon::pidfile;
use cloacina::daemon::status::{self, DaemonStatus};
use serde_json::json;

use crate::cli::{DaemonCommand, DaemonStartArgs, DaemonStopArgs};
use crate::error::CliError;
use crate::output::{Report, emit, fields};
use crate::settings::Settings;

const DAEMON_BINARY: &str = "cloacina-daemon";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(settings: &Settings, command: &DaemonCommand) -> Result<(), CliError> {
    let home = Home::at(settings.home()?);
    match command {
        DaemonCommand::Start(args) => start(settings, &home, args),
        DaemonCommand::Stop(args) => stop(&home, args),
        DaemonCommand::Status(_) => show_status(settings, &home),
        DaemonCommand::Health => match probe(&home) {
            Ok(_) => Ok(()),
            Err(_) => Err(CliError::Silent(2)),
        },
    }
}

/// Replaces this process with the daemon, in the foreground. The daemon itself refuses to
/// start when another holds this home's PID lock.
fn start(settings: &Settings, home: &Home, args: &DaemonStartArgs) -> Result<(), CliError> {
    use std::os::unix::process::CommandExt;
    if let Some(ms) = args.poll_interval {
        bounds::POLL_INTERVAL_MS
            .check_as("--poll-interval", ms)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let binary = super::find_binary(DAEMON_BINARY)?;
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("--home").arg(home.root());
    for dir in &args.watch_dirs {
        cmd.arg("--watch-dir").arg(dir);
    }
    if let Some(ms) = args.poll_interval {
        cmd.arg("--poll-interval").arg(ms.to_string());
    }
    if settings.verbose {
        cmd.arg("--verbose");
    }
    if settings.no_color {
        cmd.arg("--no-color");
    }
    let err = cmd.exec();
    Err(CliError::User(format!(
        "cannot start {}: {err}",
        binary.display()
    )))
}

/// SIGTERM (or SIGKILL) to this home's daemon, then waits for it to drain: the configured
/// shutdown timeout, plus a margin. A config that no longer validates (edited since the
/// start) falls back to the default.
fn stop(home: &Home, args: &DaemonStopArgs) -> Result<(), CliError> {
    let drain = Config::load(&home.config())
        .map(|c| c.daemon.shutdown_timeout())
        .unwrap_or_else(|_| DaemonConfig::default().shutdown_timeout());
    super::stop_service(
        pidfile::DAEMON,
        &home.daemon_pid(),
        args.force,
        drain.saturating_add(Duration::from_secs(10)),
        &[home.daemon_socket()],
    )
}

fn probe(home: &Home) -> Result<DaemonStatus, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::User(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(status::probe(&home.daemon_socket(), PROBE_TIMEOUT))
        .map_err(|e| CliError::Network(e.to_string()))
}

fn show_status(settings: &Settings, home: &Home) -> Result<(), CliError> {
    let s = probe(home)?;
    let value = serde_json::to_value(&s).unwrap_or_else(|_| json!({}));
    let mut text = fields(&[
        ("health", s.health.clone()),
        ("pid", s.pid.to_string()),
        ("uptime", human_duration(s.uptime_s)),
        ("packages loaded", s.packages_loaded.to_string()),
        ("last reconciliation", last_pass(s.last_reconciliation)),
        ("active workflows", s.active_workflows.to_string()),
        ("watch folders", s.watch_dirs.join(", ")),
    ]);
    for e in &s.folder_errors {
        text.push_str(&wrap(
            &format!("folder error: {e}"),
            DETAIL_WIDTH,
            "  ",
            "    ",
        ));
    }
    if let Some(w) = &s.write_failure {
        text.push_str(&wrap(
            &format!(
                "database error: commits failing ({} failed, the first {}): {}",
                w.failures,
                last_pass(Some(w.since)),
                w.message
            ),
            DETAIL_WIDTH,
            "  ",
            "    ",
        ));
    }
    if !s.packages.is_empty() {
        text.push('\n');
        text.push_str(&package_table(&s, settings.color));
    }
    emit(
        settings,
        &Report {
            id: s.pid.to_string(),
            value,
            text,
        },
    )
}

/// Width the detail lines (path, error) are wrapped to.
const DETAIL_WIDTH: usize = 100;

/// One row per package (name, version, state, id), then its path and its whole error or note,
/// wrapped, on indented lines below it.
fn package_table(s: &DaemonStatus, color: bool) -> String {
    let rows: Vec<[String; 4]> = s
        .packages
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.version.clone(),
                p.state.clone(),
                p.id.clone(),
            ]
        })
        .collect();
    let head = ["NAME", "VERSION", "STATE", "ID"];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 4]| {
        let mut out = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            out.push_str(&format!("{c:<w$}  ", w = widths[i]));
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    for (r, p) in rows.iter().zip(&s.packages) {
        let state = if color && r[2] != "loaded" {
            format!("\x1b[1;33m{}\x1b[0m", r[2])
        } else {
            r[2].clone()
        };
        let mut l = line([&r[0], &r[1], &r[2], &r[3]]);
        if state != r[2] {
            l = l.replacen(&r[2], &state, 1);
        }
        out.push_str(&l);
        for (label, value) in detail_lines(p) {
            out.push_str(&wrap(
                &format!("{label}: {value}"),
                DETAIL_WIDTH,
                "      ",
                "        ",
            ));
        }
    }
    out
}

/// What is worth saying under a package's row, in full.
fn detail_lines(p: &status::PackageLine) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(path) = &p.path {
        let mark = if p.path_missing { " (removed)" } else { "" };
        out.push(("path", format!("{path}{mark}")));
    }
    if let Some(by) = &p.superseded_by {
        out.push(("superseded by", by.clone()));
    }
    if let Some(e) = p.last_error.as_deref().filter(|e| !e.is_empty()) {
        let label = if p.state == "waiting" {
            "waiting for"
        } else {
            "error"
        };
        out.push((label, e.to_string()));
    }
    out
}

/// Wraps `text` at word boundaries to `width` characters (a longer word gets a line of its
/// own), the first line indented by `first`, the rest by `rest`; nothing is cut.
fn wrap(text: &str, width: usize, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = line.chars().count() + word.chars().count() + usize::from(!empty);
        if !empty && len > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    if !empty {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn last_pass(ms: Option<i64>) -> String {
    match ms {
        None => "never".to_string(),
        Some(at) => {
            let ago = (cloacina::store::now_ms() - at).max(0) / 1000;
            format!("{} ago", human_duration(ago as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_ids_paths_and_whole_errors() {
        let long = format!("load failed: {}END", "word ".repeat(60));
        let mut s = DaemonStatus::starting();
        s.packages = vec![status::PackageLine {
            id: "0b8e0e65-4f3c-8a8a-9d2b-0f6a1c2b3d4e".into(),
            name: "broken".into(),
            version: "1.2.3".into(),
            state: "unload_refused".into(),
            last_error: Some(long.clone()),
            path: Some("/w/broken-1.2.3.cloacina".into()),
            path_missing: true,
            superseded_by: None,
        }];
        let table = package_table(&s, false);
        assert!(
            table.contains("0b8e0e65-4f3c-8a8a-9d2b-0f6a1c2b3d4e"),
            "{table}"
        );
        assert!(
            table.contains("/w/broken-1.2.3.cloacina (removed)"),
            "{table}"
        );
        assert!(table.contains("END"), "the whole error: {table}");
        assert!(
            table.lines().all(|l| l.chars().count() <= DETAIL_WIDTH),
            "{table}"
        );
        let words: usize = table.matches("word").count();
        assert_eq!(words, 60, "{table}");
    }
}
