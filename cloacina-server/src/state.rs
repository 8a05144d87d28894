//! What every handler shares.

use std::sync::Arc;
use std::time::Instant;

use cloacina::package::signing::SignaturePolicy;
use cloacina::store::Store;
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::tenants::Tenants;

/// The server's state: the control store (keys, tenants, package rows, audit log: the
/// `public` tenant's store), the tenants' runtimes, metrics.
pub struct AppState {
    pub config: ServerConfig,
    pub control: Store,
    pub tenants: Tenants,
    pub started: Instant,
    pub metrics: Metrics,
    pub signatures: SignaturePolicy,
    /// Wakes the package sync loop (an upload or delete on this replica).
    pub sync_wake: Notify,
    /// Unix ms of the last completed sync pass.
    pub last_sync: std::sync::atomic::AtomicI64,
    /// Turns true when the server begins to stop: `/ready` answers 503 (the drain grace
    /// starts), and long-lived answers (event streams) end, so the graceful stop does not wait
    /// for them.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

pub type SharedState = Arc<AppState>;
