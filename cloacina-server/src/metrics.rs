//! `/metrics`: what an operator watches, in the Prometheus text format, names prefixed
//! `cloacina_`. Labels are low-cardinality only: route templates (never raw paths), methods,
//! status codes, tenant names, fixed status/state words.

use std::sync::Mutex;

use cloacina::store::ExecutionStatus;
use cloacina::sync::lock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantStatus {
    tenant: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PackageLabels {
    tenant: String,
    package: String,
    state: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    executions: Family<TenantStatus, Gauge>,
    tasks: Family<TenantStatus, Gauge>,
    ready_tasks: Family<TenantLabels, Gauge>,
    packages: Family<PackageLabels, Gauge>,
    task_duration: Family<TenantLabels, Histogram>,
    connections: crate::serve::ConnectionStats,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn task_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloacina");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let executions = Family::<TenantStatus, Gauge>::default();
        let tasks = Family::<TenantStatus, Gauge>::default();
        let ready_tasks = Family::<TenantLabels, Gauge>::default();
        let packages = Family::<PackageLabels, Gauge>::default();
        let task_duration =
            Family::<TenantLabels, Histogram>::new_with_constructor(task_histogram as fn() -> _);
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route template",
            http_duration.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for a missing, malformed, unknown or revoked key, or a missing permission",
            auth_failures.clone(),
        );
        registry.register(
            "executions",
            "Executions by tenant and status",
            executions.clone(),
        );
        registry.register("tasks", "Tasks by tenant and status", tasks.clone());
        registry.register(
            "ready_queue_depth",
            "Tasks ready to run and not yet claimed, by tenant",
            ready_tasks.clone(),
        );
        registry.register(
            "packages",
            "Packages known to this replica's reconciler, by tenant, package and state (1 per package)",
            packages.clone(),
        );
        let connections = crate::serve::ConnectionStats::default();
        registry.register(
            "http_connections_open",
            "HTTP connections being served",
            connections.open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections refused because --max-connections were being served",
            connections.refused.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Duration of task attempts run by this replica, by tenant",
            task_duration.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            auth_failures,
            executions,
            tasks,
            ready_tasks,
            packages,
            task_duration,
            connections,
        }
    }

    /// The connection loop's gauge and counter.
    pub fn connection_stats(&self) -> crate::serve::ConnectionStats {
        self.connections.clone()
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The text exposition, with the database-backed gauges read now.
    pub async fn render(&self, state: &AppState) -> String {
        // Gauges are recomputed on each scrape: a deleted tenant or package disappears.
        self.packages.clear();
        self.executions.clear();
        self.tasks.clear();
        self.ready_tasks.clear();
        for tenant in state.tenants.all() {
            let store = tenant.store();
            for &status in ExecutionStatus::ALL {
                if let Ok(n) = store.execution_count(&[status]).await {
                    self.executions
                        .get_or_create(&TenantStatus {
                            tenant: tenant.name.clone(),
                            status: status.as_str().to_string(),
                        })
                        .set(n);
                }
            }
            if let Ok(counts) = store.task_count_by_status().await {
                // Every status is written, so one that emptied reads 0, not its last count.
                for &status in cloacina::store::TaskStatus::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| *s == status)
                        .map_or(0, |(_, n)| *n);
                    self.tasks
                        .get_or_create(&TenantStatus {
                            tenant: tenant.name.clone(),
                            status: status.as_str().to_string(),
                        })
                        .set(n);
                    if status == cloacina::store::TaskStatus::Ready {
                        self.ready_tasks
                            .get_or_create(&TenantLabels {
                                tenant: tenant.name.clone(),
                            })
                            .set(n);
                    }
                }
            }
            for status in tenant.host.reconciler().statuses() {
                self.packages
                    .get_or_create(&PackageLabels {
                        tenant: tenant.name.clone(),
                        package: status.name.clone().unwrap_or_else(|| status.id.clone()),
                        state: crate::routes::state_word(status.state).to_string(),
                    })
                    .set(1);
            }
            let durations = tenant.host.runner().stats().task_durations();
            let histogram = self.task_duration.get_or_create(&TenantLabels {
                tenant: tenant.name.clone(),
            });
            for seconds in durations {
                histogram.observe(seconds);
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &lock(&self.registry)) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}
