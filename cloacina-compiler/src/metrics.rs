//! `/metrics`: builds by outcome, build duration, the queue's depth, in the Prometheus text
//! format with the `cloacina_` prefix. Outcome and result labels are fixed words.

use std::sync::Mutex;

use cloacina::compiler::CompilerEvent;
use cloacina::store::BuildCounts;
use cloacina::sync::lock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// The compiler's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    builds: Family<OutcomeLabels, Counter>,
    duration: Family<OutcomeLabels, Histogram>,
    reclaimed: Family<ResultLabels, Counter>,
    queue_depth: Gauge,
    in_progress: Gauge,
    failed: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
    ])
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloacina");
        let builds = Family::<OutcomeLabels, Counter>::default();
        let duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> _,
        );
        let reclaimed = Family::<ResultLabels, Counter>::default();
        let queue_depth = Gauge::default();
        let in_progress = Gauge::default();
        let failed = Gauge::default();
        // Every outcome is listed from the start, at 0.
        for outcome in ["success", "failed", "released", "lost"] {
            let _ = builds.get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            });
        }
        registry.register(
            "compiler_builds",
            "Builds this compiler ended, by outcome (success, failed, released on stop, lost to a sweep)",
            builds.clone(),
        );
        registry.register(
            "compiler_build_duration_seconds",
            "Time from claim to outcome of this compiler's builds, by outcome",
            duration.clone(),
        );
        registry.register(
            "compiler_stale_claims_reclaimed",
            "Stale build claims this compiler's sweeps took back (requeued, or failed after the last attempt)",
            reclaimed.clone(),
        );
        registry.register(
            "compiler_queue_depth",
            "Packages waiting for a build (pending), read from the database at scrape",
            queue_depth.clone(),
        );
        registry.register(
            "compiler_builds_in_progress",
            "Packages being built by any compiler, read from the database at scrape",
            in_progress.clone(),
        );
        registry.register(
            "compiler_failed_packages",
            "Packages whose last build failed, read from the database at scrape",
            failed.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            builds,
            duration,
            reclaimed,
            queue_depth,
            in_progress,
            failed,
        }
    }

    /// Counts a finished build or a reclaimed claim.
    pub fn event(&self, event: &CompilerEvent) {
        match event {
            CompilerEvent::Finished(report) => {
                let labels = OutcomeLabels {
                    outcome: report.outcome.as_str().to_string(),
                };
                self.builds.get_or_create(&labels).inc();
                self.duration
                    .get_or_create(&labels)
                    .observe(report.duration.as_secs_f64());
            }
            CompilerEvent::Reclaimed(swept) => {
                self.reclaimed
                    .get_or_create(&ResultLabels {
                        result: if swept.requeued { "requeued" } else { "failed" }.to_string(),
                    })
                    .inc();
            }
        }
    }

    /// The text exposition; the queue gauges from `counts` (left as they were when the
    /// database could not be read).
    pub fn render(&self, counts: Option<&BuildCounts>) -> String {
        if let Some(c) = counts {
            self.queue_depth.set(c.pending);
            self.in_progress.set(c.building);
            self.failed.set(c.failed);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &lock(&self.registry)) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloacina::compiler::{BuildReport, Outcome};
    use std::time::Duration;

    #[test]
    fn builds_are_counted_by_outcome() {
        let m = Metrics::new();
        m.event(&CompilerEvent::Finished(BuildReport {
            package_id: uuid::Uuid::nil(),
            tenant: "public".into(),
            name: "etl".into(),
            version: "1.0.0".into(),
            outcome: Outcome::Failed,
            error: Some("x".into()),
            duration: Duration::from_secs(12),
        }));
        let text = m.render(Some(&BuildCounts {
            pending: 4,
            building: 1,
            failed: 1,
            success: 0,
        }));
        for want in [
            "cloacina_compiler_builds_total{outcome=\"failed\"} 1",
            "cloacina_compiler_builds_total{outcome=\"success\"} 0",
            "cloacina_compiler_build_duration_seconds_count{outcome=\"failed\"} 1",
            "cloacina_compiler_queue_depth 4",
            "cloacina_compiler_builds_in_progress 1",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }
}
