//! What Cloacina's long-running binaries (the daemon, the server, the compiler) share, so they
//! log alike: human lines on stderr and JSON lines in a file under `<home>/logs/` rotated
//! daily, with one filter for both that a reload can change.

use std::path::Path;
use std::sync::{Arc, Mutex};

use cloacina::sync::lock;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt, reload};

/// How a service logs.
#[derive(Debug, Clone)]
pub struct LogSettings<'a> {
    /// The JSON log file, e.g. `<home>/logs/cloacina.log`.
    pub file: &'a Path,
    /// The configured level (`info`, `debug`, ...), used unless `-v` or `RUST_LOG` say otherwise.
    pub level: &'a str,
    /// `-v`: debug on both outputs.
    pub verbose: bool,
    /// `--no-color` given.
    pub no_color: bool,
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up logging: {0}")]
pub struct LogError(String);

/// The log filter, and what fixes it when a configuration reload cannot change it.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// `-v` or `RUST_LOG` set the filter at start; a reload leaves it alone.
    fixed_by: Option<&'static str>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("fixed_by", &self.fixed_by)
            .finish()
    }
}

impl LogControl {
    /// Applies `level` (a reload); returns what overrides it instead, if anything does.
    pub fn set_level(&self, level: &str) -> Option<&'static str> {
        if let Some(by) = self.fixed_by {
            return Some(by);
        }
        if let Err(e) = self.handle.reload(EnvFilter::new(level.to_lowercase())) {
            tracing::error!("cannot change the log level: {e}");
        }
        None
    }
}

/// Installs the global subscriber: human-readable logs on stderr (coloured only on a terminal,
/// never with `--no-color` or NO_COLOR), JSON lines in `settings.file` (rotated daily, 14 kept).
pub fn init(settings: &LogSettings<'_>) -> Result<LogControl, LogError> {
    use std::io::IsTerminal;
    let (filter, fixed_by) = if settings.verbose {
        (EnvFilter::new("debug"), Some("log_level (-v given)"))
    } else {
        match EnvFilter::try_from_default_env() {
            Ok(f) => (f, Some("log_level (RUST_LOG set)")),
            Err(_) => (EnvFilter::new(settings.level.to_lowercase()), None),
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    let color = cloacina::daemon::stderr_color(
        settings.no_color,
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    );
    let file = file_rotate::FileRotate::new(
        settings.file,
        file_rotate::suffix::AppendTimestamp::default(file_rotate::suffix::FileLimit::MaxFiles(14)),
        file_rotate::ContentLimit::Time(file_rotate::TimeFrequency::Daily),
        file_rotate::compression::Compression::None,
        None,
    );
    let file = Arc::new(Mutex::new(file));
    let writer = move || LockedWriter(file.clone());
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_ansi(color).with_writer(std::io::stderr))
        .with(fmt::layer().json().with_ansi(false).with_writer(writer))
        .try_init()
        .map_err(|e| LogError(e.to_string()))?;
    Ok(LogControl { handle, fixed_by })
}

type RotatingFile = file_rotate::FileRotate<file_rotate::suffix::AppendTimestamp>;

/// A `Write` that locks the shared rotating file for each write.
struct LockedWriter(Arc<Mutex<RotatingFile>>);

impl std::io::Write for LockedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        lock(&self.0).flush()
    }
}
