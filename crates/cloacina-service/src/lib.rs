//! What Cloacina's long-running binaries (the daemon, the server, the compiler) share, so they
//! log alike: human lines on stderr and JSON lines in a file under `<home>/logs/` rotated
//! daily, with one filter for both that a reload can change. The server can also export its
//! spans to an OpenTelemetry collector over OTLP/gRPC ([`init_with_otel`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use cloacina::sync::lock;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, filter, fmt, reload};

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

/// Logging (or trace export) could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot set up logging: {0}")]
    Subscriber(String),
    /// The OpenTelemetry settings are unusable; the message names the variable.
    #[error("{0}")]
    Otel(String),
}

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
    init_with_otel(settings, None).map(|(control, _)| control)
}

/// Like [`init`], and with `otel` given also exports spans (of Cloacina's own crates) to that
/// collector. Without it nothing else starts: no exporter, no thread. The guard must be shut
/// down (or dropped) before exit so the last spans are sent.
pub fn init_with_otel(
    settings: &LogSettings<'_>,
    otel: Option<&OtelSettings>,
) -> Result<(LogControl, OtelGuard), LogError> {
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
    let provider = otel.map(otel::provider).transpose()?;
    let otel_layer = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("cloacina"))
            // Only what the span says: no source paths, thread names or busy/idle timings.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter::filter_fn(otel::exported))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_ansi(color)
                .with_writer(std::io::stderr)
                .with_filter(filter::filter_fn(not_export_only)),
        )
        .with(
            fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(writer)
                .with_filter(filter::filter_fn(not_export_only)),
        )
        .with(otel_layer)
        .try_init()
        .map_err(|e| LogError::Subscriber(e.to_string()))?;
    Ok((LogControl { handle, fixed_by }, OtelGuard { provider }))
}

/// Spans with this target (e.g. one per HTTP request) exist for trace export only: the log
/// outputs leave them out, so log lines read the same with tracing on or off.
pub const EXPORT_ONLY_TARGET: &str = "cloacina_otel";

fn not_export_only(meta: &tracing::Metadata<'_>) -> bool {
    !meta.target().starts_with(EXPORT_ONLY_TARGET)
}

/// Where traces go: an OTLP/gRPC collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSettings {
    /// The collector, `http://HOST:PORT` (OTLP/gRPC, usually port 4317).
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

/// The environment variable naming the collector; tracing is off when it is unset or empty.
pub const OTEL_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The environment variable naming the service (default [`DEFAULT_SERVICE_NAME`]).
pub const OTEL_SERVICE_VAR: &str = "OTEL_SERVICE_NAME";
/// `service.name` when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "cloacina";

impl OtelSettings {
    /// Reads `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME`: `None` when tracing is off,
    /// an error naming the variable when the endpoint is not a usable URL.
    pub fn from_env() -> Result<Option<OtelSettings>, LogError> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self::from_values(var(OTEL_ENDPOINT_VAR), var(OTEL_SERVICE_VAR))
    }

    /// [`OtelSettings::from_env`] on given values (tests, other sources).
    pub fn from_values(
        endpoint: Option<String>,
        service_name: Option<String>,
    ) -> Result<Option<OtelSettings>, LogError> {
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let endpoint = otel::check_endpoint(endpoint.trim())?;
        Ok(Some(OtelSettings {
            endpoint,
            service_name: service_name
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string()),
        }))
    }
}

/// Sends the spans still queued when shut down (or dropped); a no-op when tracing is off.
#[derive(Debug)]
pub struct OtelGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl OtelGuard {
    /// Flushes and stops the exporter, waiting at most a few seconds (an unreachable collector
    /// delays exit by that much, never more). Blocking: call it off the async runtime's
    /// workers (e.g. in `spawn_blocking`) while the runtime still runs.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(otel::SHUTDOWN_TIMEOUT)
        {
            tracing::warn!("trace export: the last spans may not have been sent: {e}");
        }
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

mod otel;

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
