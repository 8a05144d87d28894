//! Opening a package library in a throwaway child process before the host opens it.
//!
//! A library's initializers run inside `dlopen`, and one that aborts (or exits, or faults)
//! takes the whole process with it: a server would die on the upload that brought it, and
//! every replica that learns of the package from the database would die once too. So a host
//! binary starts a copy of itself as a *probe* that opens the library, calls the ABI version
//! and `describe`, and ends with `_exit(0)`. Only when the probe came back with that is the
//! library opened in the host; any other end (a signal, another exit code, no end within
//! [`PROBE_TIMEOUT`]) refuses the library with [`loader::LoadError::CrashedProbe`].
//!
//! Probing is opt-in per process: a host binary calls [`serve_or_enable`] first thing in
//! `main`. Processes that never call it (library tests, the benchmark) open libraries
//! directly; the crash quarantine of [`loader`] still covers them.
//!
//! [`loader`]: super::loader
//! [`loader::LoadError::CrashedProbe`]: super::loader::LoadError::CrashedProbe

// Opening a library and calling through its C ABI is inherently unsafe.
#![allow(unsafe_code)]

use std::io::Read as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloacina_workflow::abi::{ABI_VERSION, AbiVersionFn, DescribeFn, FreeFn, symbols};

/// Environment variable naming the library a probe process opens. Set only on probe
/// children; a host started with it serves the probe and exits.
pub const PROBE_ENV: &str = "CLOACINA_PROBE_LIBRARY";

/// How long a probe may take to open a library before it is killed and the library refused.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The executable that serves probes, once [`serve_or_enable`] has enabled probing.
static PROBE_EXE: OnceLock<PathBuf> = OnceLock::new();

/// First thing in a host binary's `main`: in a probe child, opens the library named by
/// [`PROBE_ENV`] and exits (never returns); otherwise enables probing for this process, with
/// this executable as the probe. If the executable cannot be found, probing stays off (loads
/// are direct, as before).
pub fn serve_or_enable() {
    if let Some(library) = std::env::var_os(PROBE_ENV) {
        serve(Path::new(&library));
    }
    // `/proc/self/exe` still runs this binary after the file was replaced or deleted (an
    // upgrade in place); the path `current_exe` names would then be another binary, or none.
    let proc_exe = Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        Some(proc_exe.to_path_buf())
    } else {
        std::env::current_exe().ok()
    };
    if let Some(exe) = exe {
        let _ = PROBE_EXE.set(exe);
    }
}

/// Whether this process probes libraries before opening them.
pub fn enabled() -> bool {
    PROBE_EXE.get().is_some()
}

/// The probe child: open, check the ABI version, describe, `_exit(0)`. Anything that stops
/// the library being used in-process for an ordinary reason (not loadable, another ABI,
/// missing symbols) also ends with 0: the host then opens it itself and reports that reason
/// with its usual, precise error. Only the library ending the process is a failed probe.
fn serve(library: &Path) -> ! {
    // SAFETY: this process exists only to run the library's initializers and its two
    // argument-free ABI calls; whatever they do cannot harm anything but this child.
    unsafe {
        if let Ok(lib) = libloading::Library::new(library)
            && let Ok(version) = lib.get::<AbiVersionFn>(symbols::ABI_VERSION)
            && (*version)() == ABI_VERSION
            && let Ok(describe) = lib.get::<DescribeFn>(symbols::DESCRIBE)
            && let Ok(free) = lib.get::<FreeFn>(symbols::FREE)
        {
            let buffer = (*describe)();
            (*free)(buffer);
        }
        // No exit handlers: a library's destructors are not what is being probed.
        libc::_exit(0)
    }
}

/// How a probe ended, when it did not end well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The library ended the probe (a signal or a non-zero exit); `how` says which, and
    /// `stderr` holds the end of what the probe printed.
    Ended { how: String, stderr: String },
    /// The probe did not finish within [`PROBE_TIMEOUT`] and was killed.
    TimedOut,
    /// The probe could not be started or waited for.
    Spawn(String),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Ended { how, stderr } if stderr.is_empty() => write!(f, "{how}"),
            ProbeFailure::Ended { how, stderr } => write!(f, "{how}; it printed: {stderr}"),
            ProbeFailure::TimedOut => write!(
                f,
                "opening it did not finish within {} s (an initializer hangs?)",
                PROBE_TIMEOUT.as_secs()
            ),
            ProbeFailure::Spawn(why) => write!(f, "the probe process could not run: {why}"),
        }
    }
}

/// Opens `library` in a probe child when probing is enabled (see [`serve_or_enable`]);
/// `Ok(())` when it is not, or when the probe ended with `_exit(0)`.
pub fn check(library: &Path) -> Result<(), ProbeFailure> {
    let Some(exe) = PROBE_EXE.get() else {
        return Ok(());
    };
    let mut child = Command::new(exe)
        .env(PROBE_ENV, library)
        // The probe needs nothing of the host's secrets.
        .env_remove("DATABASE_URL")
        .env_remove("CLOACINA_BOOTSTRAP_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ProbeFailure::Spawn(format!("{}: {e}", exe.display())))?;
    // Read stderr on a thread so a chatty library cannot block on a full pipe.
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = s.by_ref().take(64 * 1024).read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeFailure::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                return Err(ProbeFailure::Spawn(format!("waiting for it: {e}")));
            }
        }
    };
    let printed = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let how = match (status.signal(), status.code()) {
        (Some(signal), _) => format!(
            "the library killed the process that opened it ({})",
            signal_name(signal)
        ),
        (None, Some(code)) => {
            format!("the library ended the process that opened it with exit code {code}")
        }
        (None, None) => "the process that opened it ended abnormally".to_string(),
    };
    Err(ProbeFailure::Ended {
        how,
        stderr: tail(&printed),
    })
}

/// `SIGABRT (signal 6)`, or just the number for signals without a name here.
fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("{} (signal {signal})", s.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

/// The last non-empty lines of a probe's stderr, shown printable and bounded.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    super::printable(&lines[lines.len().saturating_sub(3)..].join(" / "), 500)
}
