//! The workstation daemon's rules (DESIGN §8): its PID file, its watch folders and the package
//! archives in them (the reconciler's desired set), and its health socket. The
//! `cloacina-daemon` binary wires these to the runner and the reconciler and handles signals.

pub mod discovery;
pub mod pidfile;
pub mod status;

/// Why the daemon could not start, or a client could not reach it.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "the daemon is already running (pid {pid}, recorded in {path}); stop it with 'cloacinactl daemon stop'"
    )]
    AlreadyRunning { pid: i32, path: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot reach the daemon at {path}: {message}; is it running? start it with 'cloacinactl daemon start'"
    )]
    Unreachable { path: String, message: String },
}
