//! One module per noun.

pub mod admin;
pub mod compiler;
pub mod completions;
pub mod config;
pub mod daemon;
pub mod execution;
pub mod graph;
pub mod key;
pub mod package;
pub mod package_server;
pub mod scaffold;
pub mod server;
pub mod status;
pub mod tenant;
pub mod trigger;
pub mod workflow;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloacina::daemon::pidfile::{self, PidState, Probe, Service};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::CliError;

/// The database URL a service or `admin` verb uses: `--database-url` (`flag`), else
/// `DATABASE_URL`, else `database_url` in config.toml (read only when needed, so a flag works
/// beside a broken config). `who` ("the server", ...) names the user in the error.
pub fn database_url(
    settings: &crate::settings::Settings,
    flag: Option<&str>,
    who: &str,
) -> Result<String, CliError> {
    let non_empty = |s: &str| !s.trim().is_empty();
    if let Some(url) = flag {
        if non_empty(url) {
            return Ok(url.to_string());
        }
        return Err(CliError::Usage("--database-url is empty".to_string()));
    }
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| non_empty(u)) {
        return Ok(url);
    }
    if let Some(url) = settings.config()?.database_url.filter(|u| non_empty(u)) {
        return Ok(url);
    }
    let home = cloacina::config::Home::at(settings.home()?);
    Err(CliError::User(format!(
        "{who} needs a database: pass --database-url URL, set DATABASE_URL, or set database_url in {} (e.g. sqlite://{} or postgres://user@host/db)",
        home.config().display(),
        home.database().display()
    )))
}

/// `GET /health` at `url` (a service's probe verb): exit 0 on 200, else 2, printing nothing
/// (`-v` logs why).
pub fn probe_health(url: &str, timeout: Duration) -> Result<(), CliError> {
    let answer = crate::http::Client::new(url, None, timeout).and_then(|c| c.get_status("/health"));
    match answer {
        Ok(200) => Ok(()),
        Ok(status) => {
            tracing::debug!(%url, status, "health probe answered, but not 200");
            Err(CliError::Silent(2))
        }
        Err(e) => {
            tracing::debug!(%url, error = %e, "health probe failed");
            Err(CliError::Silent(2))
        }
    }
}

/// Finds a service binary beside this executable, then on `PATH`.
pub fn find_binary(name: &str) -> Result<PathBuf, CliError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    if let Some(path) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(path.clone());
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }) {
        return Ok(found);
    }
    Err(CliError::User(format!(
        "cannot find {name} beside cloacinactl ({}) or on PATH; build it with 'cargo build -p {name}' or add it to PATH",
        beside
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "unknown".to_string())
    )))
}

/// SIGTERM (or SIGKILL) to the `service` recorded in `pid_file`, then waits up to `limit` for
/// it to exit. Nothing is sent unless the PID file is locked and its pid is verified as the
/// `service` binary holding it (see `cloacina::daemon::pidfile`): a missing, stale or foreign
/// pid is reported, exit 2. After a SIGKILL, which skips the service's own clean-up, the PID
/// file and `leftovers` are removed if no new instance has replaced them.
pub fn stop_service(
    service: Service,
    pid_file: &Path,
    force: bool,
    limit: Duration,
    leftovers: &[PathBuf],
) -> Result<(), CliError> {
    let noun = service.noun;
    let shown = pid_file.display();
    let user = |e: cloacina::daemon::DaemonError| CliError::User(e.to_string());
    let not_running = || {
        CliError::Network(format!(
            "no {noun} PID file at {shown}; the {noun} is not running"
        ))
    };
    let Some(probe) = Probe::open_as(service, pid_file).map_err(user)? else {
        return Err(not_running());
    };
    let pid = match probe.state().map_err(user)? {
        PidState::Running { pid } => pid,
        PidState::Missing => return Err(not_running()),
        PidState::Stale { pid } => {
            let recorded = pid.map_or_else(|| "no pid".to_string(), |p| format!("pid {p}"));
            return Err(CliError::Network(format!(
                "the {noun} is not running: {shown} is stale (it records {recorded}, but no {noun} holds its lock); nothing was signalled. 'cloacinactl {noun} start' replaces it"
            )));
        }
        PidState::Unverified { pid, reason } => {
            let recorded = pid.map_or_else(|| "no pid".to_string(), |p| format!("pid {p}"));
            return Err(CliError::Network(format!(
                "cannot verify the {noun} recorded in {shown} ({recorded}): {reason}; nothing was signalled"
            )));
        }
    };
    let signal = if force {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    kill(Pid::from_raw(pid), signal)
        .map_err(|e| CliError::Network(format!("cannot signal the {noun} (pid {pid}): {e}")))?;
    let deadline = Instant::now().checked_add(limit);
    // The lock is released when the process is gone, however it ends.
    while probe.held().map_err(user)? {
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(CliError::User(format!(
                "the {noun} (pid {pid}) did not stop within {}s; 'cloacinactl {noun} stop --force' kills it",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if force
        && matches!(
            pidfile::inspect_as(service, pid_file),
            Ok(PidState::Stale { .. } | PidState::Missing)
        )
    {
        let _ = std::fs::remove_file(pid_file);
        for path in leftovers {
            let _ = std::fs::remove_file(path);
        }
    }
    println!("stopped the {noun} (pid {pid})");
    Ok(())
}
