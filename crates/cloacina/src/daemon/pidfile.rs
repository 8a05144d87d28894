//! `daemon.pid`: written at start, removed at exit. A file whose process is gone (a crash,
//! a reboot) does not stop a new start; a live one does.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::DaemonError;

/// Held for the daemon's lifetime; removes the file when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

/// Whether a process with this id exists (signal 0 probes without sending anything) and has
/// not already exited: a zombie (exited, not yet reaped by its parent) counts as gone, so
/// `daemon stop` returns as soon as the daemon has exited whoever its parent is.
pub fn process_alive(pid: i32) -> bool {
    pid > 0 && !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)) && !is_zombie(pid)
}

/// `/proc/PID/stat` holds `pid (comm) STATE ...`; comm may contain spaces and parentheses,
/// so the state is the first field after the last `)`.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// The pid recorded in `path`, if the file exists and holds a number.
pub fn read_pid(path: &Path) -> Result<Option<i32>, DaemonError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse::<i32>().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DaemonError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

impl PidFile {
    /// Writes our pid to `path`, unless a live process already holds it.
    pub fn acquire(path: &Path) -> Result<PidFile, DaemonError> {
        if let Some(pid) = read_pid(path)?
            && pid != std::process::id() as i32
            && process_alive(pid)
        {
            return Err(DaemonError::AlreadyRunning {
                pid,
                path: path.display().to_string(),
            });
        }
        let io = |e: std::io::Error| DaemonError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        // Write then rename, so a reader never sees a half-written pid.
        let tmp = path.with_extension("pid.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(f, "{}", std::process::id()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only remove it if it is still ours.
        if read_pid(&self.path).ok().flatten() == Some(std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_files_are_replaced_and_live_ones_refuse() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("daemon.pid");
        // A pid that cannot exist (above the kernel's limit) is stale.
        std::fs::write(&path, "99999999\n").expect("write");
        let held = PidFile::acquire(&path).expect("stale file replaced");
        assert_eq!(
            read_pid(&path).expect("read"),
            Some(std::process::id() as i32)
        );
        drop(held);
        assert!(!path.exists(), "removed at exit");
        // Pid 1 is always alive.
        std::fs::write(&path, "1\n").expect("write");
        let err = PidFile::acquire(&path).expect_err("live process");
        assert!(
            err.to_string()
                .contains("already running (pid 1, recorded in"),
            "{err}"
        );
    }
}
