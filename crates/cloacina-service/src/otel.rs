//! The OTLP/gRPC trace exporter behind [`crate::init_with_otel`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloacina::sync::lock;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

use crate::{LogError, OTEL_ENDPOINT_VAR, OtelSettings};

/// One export attempt gives up after this, so a silent collector never holds spans for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a shutdown waits for the last spans to go out.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Repeated export failures are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the trace layer sees: Cloacina's own spans, and its warnings and errors as span events
/// (other crates' spans, e.g. the exporter's own HTTP/2 client, would only be noise).
pub(crate) fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("cloacina")
        && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
}

/// Checks the collector URL early, so a typo is a startup error naming the variable rather
/// than spans silently lost.
pub(crate) fn check_endpoint(raw: &str) -> Result<String, LogError> {
    let bad = |why: &str| {
        LogError::Otel(format!(
            "{OTEL_ENDPOINT_VAR}={raw:?} is not a usable collector URL: {why} \
             (expected http://HOST:PORT of an OTLP/gRPC collector, e.g. http://127.0.0.1:4317)"
        ))
    };
    let rest = match raw.strip_prefix("http://") {
        Some(rest) => rest,
        None if raw.starts_with("https://") => {
            return Err(bad(
                "https is not supported (this build has no TLS); reach the collector over http, e.g. through a local agent",
            ));
        }
        None => return Err(bad("it must start with http://")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_ok = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    let ok = authority.parse::<std::net::SocketAddr>().is_ok()
        || match authority.rsplit_once(':') {
            Some((host, port)) => host_ok(host) && port.parse::<u16>().is_ok(),
            None => host_ok(authority),
        };
    if !ok {
        return Err(bad("no valid HOST[:PORT] after http://"));
    }
    Ok(raw.to_string())
}

/// The tracer provider: a batch processor (its own thread) feeding the OTLP/gRPC exporter.
/// Needs a Tokio runtime (the gRPC channel's connection task runs on it).
pub(crate) fn provider(settings: &OtelSettings) -> Result<SdkTracerProvider, LogError> {
    use opentelemetry_otlp::WithExportConfig as _;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(LogError::Otel(
            "trace export must be set up inside the Tokio runtime".to_string(),
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| {
            LogError::Otel(format!(
                "{OTEL_ENDPOINT_VAR}={:?}: cannot create the trace exporter: {e}",
                settings.endpoint
            ))
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(WarnOnFailure {
            inner: exporter,
            failures: Mutex::new(Failures::default()),
        })
        .build())
}

/// Logs failed exports at warn, at most once per [`WARN_EVERY`], and the recovery at info: an
/// unreachable collector costs spans, never the server's log or its work.
#[derive(Debug)]
struct WarnOnFailure<E> {
    inner: E,
    failures: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    unreported: u64,
    failing: bool,
    last_warn: Option<Instant>,
}

impl<E: SpanExporter> WarnOnFailure<E> {
    fn note(&self, result: &OTelSdkResult) {
        let mut f = lock(&self.failures);
        match result {
            Ok(()) => {
                if f.failing {
                    tracing::info!("trace export: the collector accepts spans again");
                }
                *f = Failures::default();
            }
            Err(e) => {
                f.failing = true;
                f.unreported += 1;
                if f.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        failed_exports = f.unreported,
                        "trace export failed, spans dropped (the server carries on): {e}"
                    );
                    f.unreported = 0;
                    f.last_warn = Some(Instant::now());
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for WarnOnFailure<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "http://127.0.0.1:4317",
            "http://collector:4317/",
            "http://[::1]:4317",
            "http://otel.example.com",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1:4317",
            "https://collector:4317",
            "http://",
            "http://host:port",
            "http://a b:1",
        ] {
            let e = check_endpoint(bad).expect_err(bad).to_string();
            assert!(e.contains(OTEL_ENDPOINT_VAR), "{e}");
        }
    }
}
