//! `daemon.pid`: the daemon's pid, under an advisory lock (`flock`) held for the daemon's whole
//! life.
//!
//! The lock, not the number, is the proof that a daemon runs: the kernel drops it when the
//! process dies, however it dies. So a file left by a crash, a reboot or a `kill -9` is stale
//! whatever process now has the recorded pid (pids are reused), and a new start replaces it;
//! two daemons started at the same instant race for the lock and exactly one wins. A client
//! (`cloacinactl daemon stop`) signals the recorded pid only when the lock is held *and* that
//! process is a `cloacina-daemon` holding this very file open, so it never signals a stranger.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::DaemonError;

/// The daemon's binary name, as `/proc/<pid>/cmdline` shows it.
const DAEMON_BINARY: &str = "cloacina-daemon";
/// How long a start keeps trying a lock that is held: a client probing the lock holds it for
/// a moment, which must not read as a running daemon.
const LOCK_RETRY: Duration = Duration::from_millis(300);
/// How long a reader waits for a locked file's pid to be written (the daemon writes it right
/// after taking the lock).
const PID_WAIT: Duration = Duration::from_secs(2);

/// Held for the daemon's lifetime: the open, locked file. Dropping it removes the file, then
/// closing the file releases the lock.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

/// What a home's PID file says about its daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidState {
    /// There is no PID file: no daemon runs (or one is only starting).
    Missing,
    /// The file exists but no process holds its lock: no daemon runs. `pid` is what it records.
    Stale { pid: Option<i32> },
    /// The daemon holding the lock, verified to be `pid`.
    Running { pid: i32 },
    /// The lock is held, but the recorded pid could not be verified as the holder (`reason`
    /// says why); nothing should be signalled.
    Unverified { pid: Option<i32>, reason: String },
}

/// Whether a process with this id exists (signal 0 probes without sending anything) and has
/// not already exited: a zombie (exited, not yet reaped by its parent) counts as gone.
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
        Err(e) => Err(io_error(path, e)),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> DaemonError {
    DaemonError::Io {
        path: path.display().to_string(),
        cause: e,
    }
}

/// The pid written in an open file, if it holds a number.
fn pid_in(mut file: &File) -> Option<i32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Whether `file` (an open handle) is still the file at `path`: the previous owner removes the
/// file at exit, so a handle opened just before that names a deleted file.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl PidFile {
    /// Takes the lock on `path` (creating the file) and writes our pid in it. A file nobody
    /// holds (left by a dead daemon, or naming an unrelated process) is taken over; a held
    /// one means a daemon runs: [`DaemonError::AlreadyRunning`].
    pub fn acquire(path: &Path) -> Result<PidFile, DaemonError> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| io_error(path, e))?;
            let deadline = Instant::now() + LOCK_RETRY;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(TryLockError::WouldBlock) => {
                        return Err(DaemonError::AlreadyRunning {
                            pid: wait_for_pid(&file),
                            path: path.display().to_string(),
                        });
                    }
                    Err(TryLockError::Error(e)) => return Err(io_error(path, e)),
                }
            }
            // We may have locked a file its previous owner removed meanwhile: start over on
            // the file now at `path`, or two daemons could each hold "the" lock.
            if !same_file(&file, path) {
                continue;
            }
            let mut f = &file;
            f.set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| writeln!(f, "{}", std::process::id()))
                .and_then(|()| f.sync_all())
                .map_err(|e| io_error(path, e))?;
            return Ok(PidFile {
                path: path.to_path_buf(),
                file,
            });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // We hold the lock, so the file at `path` is ours (nobody replaces a locked file):
        // remove it while still holding the lock, then closing `file` releases it.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid in a locked file, waiting briefly for a daemon that has just taken the lock to
/// write it.
fn wait_for_pid(file: &File) -> Option<i32> {
    let deadline = Instant::now() + PID_WAIT;
    loop {
        if let Some(pid) = pid_in(file) {
            return Some(pid);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An open handle on a home's PID file, for a client: what it says ([`Probe::state`]) and
/// whether a daemon still holds it ([`Probe::held`]), which stays answerable after the daemon
/// removed the file.
#[derive(Debug)]
pub struct Probe {
    path: PathBuf,
    file: File,
}

impl Probe {
    /// `None` when there is no PID file.
    pub fn open(path: &Path) -> Result<Option<Probe>, DaemonError> {
        match File::open(path) {
            Ok(file) => Ok(Some(Probe {
                path: path.to_path_buf(),
                file,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Whether some process holds the lock (a live daemon). Probing takes a shared lock for an
    /// instant; [`PidFile::acquire`] retries past that.
    pub fn held(&self) -> Result<bool, DaemonError> {
        match self.file.try_lock_shared() {
            Ok(()) => {
                let _ = self.file.unlock();
                Ok(false)
            }
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(io_error(&self.path, e)),
        }
    }

    /// Whether the lock is held, and if so whether the recorded pid is the daemon holding it.
    pub fn state(&self) -> Result<PidState, DaemonError> {
        if !self.held()? {
            return Ok(PidState::Stale {
                pid: pid_in(&self.file),
            });
        }
        let Some(pid) = wait_for_pid(&self.file) else {
            return Ok(PidState::Unverified {
                pid: None,
                reason: format!("{} is locked but holds no pid", self.path.display()),
            });
        };
        Ok(match verify_holder(pid, &self.file) {
            Ok(()) => PidState::Running { pid },
            Err(reason) => PidState::Unverified {
                pid: Some(pid),
                reason,
            },
        })
    }
}

/// What [`Probe::state`] says about `path`; [`PidState::Missing`] without a file.
pub fn inspect(path: &Path) -> Result<PidState, DaemonError> {
    match Probe::open(path)? {
        None => Ok(PidState::Missing),
        Some(probe) => probe.state(),
    }
}

/// Checks that process `pid` is a `cloacina-daemon` holding `file` open (the PID file of this
/// home, compared by device and inode), so a reused or hand-written pid is never signalled.
#[cfg(target_os = "linux")]
fn verify_holder(pid: i32, file: &File) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if pid <= 0 || !process_alive(pid) {
        return Err(format!("process {pid} is not running"));
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| format!("cannot read /proc/{pid}/cmdline: {e}"))?;
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = Path::new(std::ffi::OsStr::new(
        std::str::from_utf8(argv0).unwrap_or_default(),
    ))
    .file_name()
    .map(|n| n.to_string_lossy().into_owned())
    .unwrap_or_default();
    if name != DAEMON_BINARY {
        return Err(format!(
            "process {pid} is '{}', not {DAEMON_BINARY}",
            String::from_utf8_lossy(argv0)
        ));
    }
    let ours = file
        .metadata()
        .map_err(|e| format!("cannot read the PID file's metadata: {e}"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("cannot list the open files of process {pid}: {e}"))?;
    let holds = fds.flatten().any(|fd| {
        std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino())
    });
    if holds {
        Ok(())
    } else {
        Err(format!(
            "process {pid} is a {DAEMON_BINARY}, but not the one holding this home's PID file"
        ))
    }
}

/// Without `/proc`, the lock being held and the recorded process being alive is the proof.
#[cfg(not(target_os = "linux"))]
fn verify_holder(pid: i32, _file: &File) -> Result<(), String> {
    if process_alive(pid) {
        Ok(())
    } else {
        Err(format!("process {pid} is not running"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_nobody_holds_is_replaced_whatever_pid_it_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("daemon.pid");
        // A pid that cannot exist, and pid 1 (alive, not a daemon): both stale, no lock.
        for stale in ["99999999\n", "1\n", "garbage"] {
            std::fs::write(&path, stale).expect("write");
            assert!(matches!(
                inspect(&path).expect("inspect"),
                PidState::Stale { .. }
            ));
            let held = PidFile::acquire(&path).expect("stale file replaced");
            assert_eq!(
                read_pid(&path).expect("read"),
                Some(std::process::id() as i32)
            );
            drop(held);
            assert!(!path.exists(), "removed at exit");
        }
        assert_eq!(inspect(&path).expect("inspect"), PidState::Missing);
    }

    #[test]
    fn a_held_file_refuses_a_second_owner_and_names_the_pid() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("daemon.pid");
        let held = PidFile::acquire(&path).expect("first");
        let err = PidFile::acquire(&path).expect_err("held");
        let me = std::process::id();
        assert!(
            err.to_string()
                .contains(&format!("already running (pid {me}, recorded in")),
            "{err}"
        );
        // Held, but this test binary is not a cloacina-daemon: never reported as one.
        match inspect(&path).expect("inspect") {
            PidState::Unverified { pid, reason } => {
                assert_eq!(pid, Some(me as i32));
                assert!(reason.contains("not cloacina-daemon"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let probe = Probe::open(&path).expect("open").expect("exists");
        assert!(probe.held().expect("held"));
        drop(held);
        assert!(!probe.held().expect("released"), "released with the file");
    }
}
