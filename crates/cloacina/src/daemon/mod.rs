//! The workstation daemon's rules (docs/daemon.md): its PID file, its watch folders and the package
//! archives in them (the reconciler's desired set), and its health socket. The
//! `cloacina-daemon` binary wires these to the runner and the reconciler and handles signals.

use std::path::Path;

pub mod discovery;
pub mod pidfile;
pub mod status;

/// Why the daemon could not start, or a client could not reach it.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `service` is the noun of the service holding the PID file ("daemon", "server").
    #[error(
        "the {service} is already running ({}, recorded in {path}); stop it with 'cloacinactl {service} stop'",
        pid.map_or_else(|| "its pid is not written yet".to_string(), |p| format!("pid {p}"))
    )]
    AlreadyRunning {
        service: &'static str,
        pid: Option<i32>,
        path: String,
    },
    /// A file or socket operation failed; the I/O error is kept typed (its text is part of
    /// the message).
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    /// The health socket cannot be listened on.
    #[error("{path}: cannot listen on the health socket: {cause}")]
    Listen { path: String, cause: std::io::Error },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "cannot reach the daemon at {path}: {message}; is it running? start it with 'cloacinactl daemon start'"
    )]
    Unreachable { path: String, message: String },
}

impl crate::error::ErrorCode for DaemonError {
    fn code(&self) -> &'static str {
        match self {
            DaemonError::AlreadyRunning { .. } => "daemon_running",
            DaemonError::Io { .. } | DaemonError::Listen { .. } => "io_failed",
            DaemonError::Config(e) => crate::error::ErrorCode::code(e),
            DaemonError::Unreachable { .. } => "daemon_unreachable",
        }
    }
}

/// Removes the scratch directories (`<library cache>/unpack/*`) that a daemon killed while
/// unpacking an archive left behind. Called at start, under the PID lock: no other daemon of
/// this home runs, so only entries named after a process that is still alive (another program
/// sharing the cache) are kept. Returns how many entries were removed.
pub fn sweep_scratch(library_cache: &Path) -> usize {
    let dir = library_cache.join("unpack");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let me = std::process::id() as i32;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = scratch_owner(&name)
            && pid != me
            && pidfile::process_alive(pid)
        {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale scratch directory")
            }
        }
    }
    removed
}

/// The pid a scratch entry was made by: `<pid>-<random>` or its in-progress form
/// `.<pid>-<random>.partial-<random>`.
fn scratch_owner(name: &str) -> Option<i32> {
    name.trim_start_matches('.').split('-').next()?.parse().ok()
}

/// Whether the daemon's stderr log gets ANSI colours: only on a terminal, and never when
/// `--no-color` was given or `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn stderr_color(
    no_color_flag: bool,
    no_color_env: Option<&std::ffi::OsStr>,
    is_terminal: bool,
) -> bool {
    is_terminal && !no_color_flag && no_color_env.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_of_dead_processes_is_swept_and_live_ones_kept() {
        let cache = tempfile::tempdir().expect("tmp");
        let unpack = cache.path().join("unpack");
        let dead = unpack.join("99999999-00000000deadbeef");
        let partial = unpack.join(".99999999-00000000deadbeef.partial-0123456789abcdef");
        let odd = unpack.join("not-a-pid");
        let live = unpack.join("1-0000000000000001");
        for d in [&dead, &partial, &odd, &live] {
            std::fs::create_dir_all(d.join("lib")).expect("mkdir");
            std::fs::write(d.join("lib/x.so"), b"x").expect("write");
        }
        assert_eq!(sweep_scratch(cache.path()), 3);
        assert!(!dead.exists() && !partial.exists() && !odd.exists());
        assert!(live.exists(), "pid 1 is alive: its entry is kept");
        assert_eq!(sweep_scratch(&cache.path().join("nothing")), 0);
    }

    #[test]
    fn colour_only_on_a_terminal_and_when_allowed() {
        use std::ffi::OsStr;
        assert!(stderr_color(false, None, true));
        assert!(stderr_color(false, Some(OsStr::new("")), true));
        assert!(!stderr_color(false, None, false), "redirected");
        assert!(!stderr_color(true, None, true), "--no-color");
        assert!(
            !stderr_color(false, Some(OsStr::new("1")), true),
            "NO_COLOR"
        );
    }
}
