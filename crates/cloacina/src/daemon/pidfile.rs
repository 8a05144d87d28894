//! `daemon.pid` and `server.pid`: a service's pid (and, for the server, the address it listens
//! on), under an advisory lock (`flock`) held for the service's whole life.
//!
//! The format is the pid on the first line, then optional `key=value` lines (`addr=<ADDR>`);
//! readers take the first line's number, so a file with only the pid (older daemons) reads the
//! same. Each [`Service`] is verified by its own binary name; the daemon's functions without a
//! `service` argument ([`PidFile::acquire`], [`Probe::open`], [`inspect`]) are [`DAEMON`]'s.
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

/// A long-running program that owns a PID file: how messages name it and the binary name a
/// holder is verified by (as `/proc/<pid>/cmdline` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The noun of `cloacinactl <noun> stop` ("daemon", "server").
    pub noun: &'static str,
    /// The executable's file name.
    pub binary: &'static str,
}

/// The workstation daemon (`<home>/daemon.pid`).
pub const DAEMON: Service = Service {
    noun: "daemon",
    binary: "cloacina-daemon",
};

/// The HTTP server (`<home>/server.pid`).
pub const SERVER: Service = Service {
    noun: "server",
    binary: "cloacina-server",
};

/// What a PID file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: i32,
    /// The address the service listens on (`addr=` line), as the service wrote it.
    pub addr: Option<String>,
}

impl PidRecord {
    /// Parses the file's text: the pid on the first line, then `key=value` lines (unknown keys
    /// are ignored so a newer writer does not break an older reader). `None` without a pid.
    pub fn parse(text: &str) -> Option<PidRecord> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse::<i32>().ok()?;
        let addr = lines
            .filter_map(|l| l.trim().strip_prefix("addr="))
            .map(str::to_string)
            .find(|a| !a.is_empty());
        Some(PidRecord { pid, addr })
    }

    fn render(&self) -> String {
        match &self.addr {
            Some(addr) => format!("{}\naddr={addr}\n", self.pid),
            None => format!("{}\n", self.pid),
        }
    }
}
/// How long a start keeps trying a lock that is held: a client probing the lock holds it for
/// a moment, which must not read as a running daemon.
const LOCK_RETRY: Duration = Duration::from_millis(300);
/// How long a reader waits for a locked file's pid to be written (the daemon writes it right
/// after taking the lock).
const PID_WAIT: Duration = Duration::from_secs(2);

/// Held for the service's lifetime: the open, locked file. Dropping it removes the file, then
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
    Ok(read_record(path)?.map(|r| r.pid))
}

/// What `path` records (pid and address), if the file exists and holds a pid. Reads without
/// looking at the lock: the record of a dead service is returned too.
pub fn read_record(path: &Path) -> Result<Option<PidRecord>, DaemonError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(PidRecord::parse(&text)),
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

/// The record written in an open file, if it holds a pid.
fn record_in(mut file: &File) -> Option<PidRecord> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    PidRecord::parse(&text)
}

fn pid_in(file: &File) -> Option<i32> {
    record_in(file).map(|r| r.pid)
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
    /// The daemon's [`PidFile::acquire_as`], recording no address.
    pub fn acquire(path: &Path) -> Result<PidFile, DaemonError> {
        Self::acquire_as(DAEMON, path, None)
    }

    /// Takes the lock on `path` (creating the file) and writes our pid, and `addr` when given,
    /// in it. A file nobody holds (left by a dead service, or naming an unrelated process) is
    /// taken over; a held one means `service` runs: [`DaemonError::AlreadyRunning`].
    pub fn acquire_as(
        service: Service,
        path: &Path,
        addr: Option<&str>,
    ) -> Result<PidFile, DaemonError> {
        let record = PidRecord {
            pid: std::process::id() as i32,
            addr: addr.map(str::to_string),
        };
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
                            service: service.noun,
                            pid: wait_for_pid(&file),
                            path: path.display().to_string(),
                        });
                    }
                    Err(TryLockError::Error(e)) => return Err(io_error(path, e)),
                }
            }
            // We may have locked a file its previous owner removed meanwhile: start over on
            // the file now at `path`, or two services could each hold "the" lock.
            if !same_file(&file, path) {
                continue;
            }
            let mut f = &file;
            f.set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| f.write_all(record.render().as_bytes()))
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

    /// Records the address the service listens on (known only once it has bound, e.g. to
    /// port 0), rewriting the file we hold locked.
    pub fn set_addr(&self, addr: &str) -> Result<(), DaemonError> {
        let record = PidRecord {
            pid: std::process::id() as i32,
            addr: Some(addr.to_string()),
        };
        let mut f = &self.file;
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(record.render().as_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(|e| io_error(&self.path, e))
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
/// whether a service still holds it ([`Probe::held`]), which stays answerable after the
/// service removed the file.
#[derive(Debug)]
pub struct Probe {
    service: Service,
    path: PathBuf,
    file: File,
}

impl Probe {
    /// The daemon's [`Probe::open_as`].
    pub fn open(path: &Path) -> Result<Option<Probe>, DaemonError> {
        Self::open_as(DAEMON, path)
    }

    /// `None` when there is no PID file. [`Probe::state`] verifies the holder as `service`.
    pub fn open_as(service: Service, path: &Path) -> Result<Option<Probe>, DaemonError> {
        match File::open(path) {
            Ok(file) => Ok(Some(Probe {
                service,
                path: path.to_path_buf(),
                file,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// What the file records now (pid and address), if it holds a pid.
    pub fn record(&self) -> Option<PidRecord> {
        record_in(&self.file)
    }

    /// Whether some process holds the lock (a live service). Probing takes a shared lock for an
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

    /// Whether the lock is held, and if so whether the recorded pid is the service holding it.
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
        Ok(match verify_holder(self.service, pid, &self.file) {
            Ok(()) => PidState::Running { pid },
            Err(reason) => PidState::Unverified {
                pid: Some(pid),
                reason,
            },
        })
    }
}

/// The daemon's [`inspect_as`].
pub fn inspect(path: &Path) -> Result<PidState, DaemonError> {
    inspect_as(DAEMON, path)
}

/// What [`Probe::state`] says about `path`; [`PidState::Missing`] without a file.
pub fn inspect_as(service: Service, path: &Path) -> Result<PidState, DaemonError> {
    match Probe::open_as(service, path)? {
        None => Ok(PidState::Missing),
        Some(probe) => probe.state(),
    }
}

/// Checks that process `pid` is `service`'s binary holding `file` open (the PID file of this
/// home, compared by device and inode), so a reused or hand-written pid is never signalled.
#[cfg(target_os = "linux")]
fn verify_holder(service: Service, pid: i32, file: &File) -> Result<(), String> {
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
    if name != service.binary {
        return Err(format!(
            "process {pid} is '{}', not {}",
            String::from_utf8_lossy(argv0),
            service.binary
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
            "process {pid} is a {}, but not the one holding this home's PID file",
            service.binary
        ))
    }
}

/// Without `/proc`, the lock being held and the recorded process being alive is the proof.
#[cfg(not(target_os = "linux"))]
fn verify_holder(_service: Service, pid: i32, _file: &File) -> Result<(), String> {
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

    #[test]
    fn a_server_file_records_its_address_and_is_verified_as_a_server() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("server.pid");
        let me = std::process::id() as i32;
        let held = PidFile::acquire_as(SERVER, &path, Some("127.0.0.1:8080")).expect("first");
        let expected = PidRecord {
            pid: me,
            addr: Some("127.0.0.1:8080".into()),
        };
        assert_eq!(read_record(&path).expect("read"), Some(expected.clone()));
        assert_eq!(
            read_pid(&path).expect("read"),
            Some(me),
            "the pid reads alone"
        );
        let probe = Probe::open_as(SERVER, &path)
            .expect("open")
            .expect("exists");
        assert_eq!(probe.record(), Some(expected));
        let err = PidFile::acquire_as(SERVER, &path, None).expect_err("held");
        assert!(
            err.to_string().contains("the server is already running")
                && err.to_string().contains("'cloacinactl server stop'"),
            "{err}"
        );
        match inspect_as(SERVER, &path).expect("inspect") {
            PidState::Unverified { reason, .. } => {
                assert!(reason.contains("not cloacina-server"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(!path.exists(), "removed at exit");
    }

    #[test]
    fn records_parse_with_or_without_an_address() {
        assert_eq!(
            PidRecord::parse("42\n"),
            Some(PidRecord {
                pid: 42,
                addr: None
            })
        );
        assert_eq!(
            PidRecord::parse("42\nfuture=1\naddr=[::1]:9\n"),
            Some(PidRecord {
                pid: 42,
                addr: Some("[::1]:9".into())
            })
        );
        assert_eq!(PidRecord::parse("addr=x\n42\n"), None);
        assert_eq!(PidRecord::parse(""), None);
    }
}
