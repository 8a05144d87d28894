//! The server's desired set: the package (and tenant) rows in the database. Each replica
//! reconciles its runtimes to them — at once after a change made through it, on a change of the
//! database's package generation (another replica's upload or delete: one small read a second),
//! and on a slower safety-net interval regardless.
//!
//! Archives are written from the database to `<cache>/archives/<sha256>.cloacina` (with the
//! signature side-car beside it when the upload carried one) and handed to the reconciler, so
//! every replica loads the same bytes whatever replica received the upload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloacina::reconciler::{DesiredPackage, PackageSource, ReconcileReport};
use cloacina::store::{BuildStatus, PackageRecord, now_ms};
use cloacina::tenant::ADMIN_TENANT;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::state::SharedState;
use crate::tenants::Tenant;

/// How often the package generation is read.
const GENERATION_POLL: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true.
pub async fn run(state: SharedState, mut stop: watch::Receiver<bool>) {
    let mut seen_generation = None;
    let mut last_full = tokio::time::Instant::now();
    loop {
        let woken = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = state.sync_wake.notified() => true,
            _ = tokio::time::sleep(GENERATION_POLL) => false,
        };
        let generation = state.control.package_generation().await.ok();
        let due = last_full.elapsed() >= state.config.reconcile_interval;
        if woken || due || generation != seen_generation {
            if let Err(e) = pass(&state).await {
                tracing::warn!("package reconciliation pass failed: {}", e.message);
                continue;
            }
            seen_generation = generation;
            last_full = tokio::time::Instant::now();
        }
    }
}

/// One pass over every tenant: tenants created or deleted elsewhere are opened or stopped,
/// then each tenant's packages reconciled.
pub async fn pass(state: &SharedState) -> Result<(), ApiError> {
    let wanted: BTreeSet<String> = state
        .control
        .tenant_list()
        .await?
        .into_iter()
        .map(|t| t.name)
        .chain([ADMIN_TENANT.to_string()])
        .collect();
    let open: BTreeSet<String> = state.tenants.names().into_iter().collect();
    for name in wanted.difference(&open) {
        if let Err(e) = state.tenants.open(name).await {
            tracing::error!(tenant = %name, "cannot open tenant: {}", e.message);
        }
    }
    for name in open.difference(&wanted) {
        // Deleted through another replica, which dropped its data; here only the runtime goes.
        if let Some(tenant) = state.tenants.detach(name) {
            tracing::info!(tenant = %name, "tenant deleted elsewhere; stopping its runtime");
            crate::tenants::stop_detached(tenant, state.config.shutdown_timeout).await;
            state.tenants.reactors().tenant_forget(name);
        }
    }
    let mut by_tenant: BTreeMap<String, Vec<PackageRecord>> = BTreeMap::new();
    for p in state.control.package_list(None).await? {
        by_tenant.entry(p.tenant.clone()).or_default().push(p);
    }
    for tenant in state.tenants.all() {
        let rows = by_tenant.remove(&tenant.name).unwrap_or_default();
        tenant_pass(state, &tenant, rows).await?;
    }
    state.last_sync.store(now_ms(), Ordering::SeqCst);
    Ok(())
}

/// Reconciles one tenant to its rows: the packages with a library for this host that are not
/// being deleted.
pub async fn tenant_pass(
    state: &SharedState,
    tenant: &Tenant,
    rows: Vec<PackageRecord>,
) -> Result<ReconcileReport, ApiError> {
    let _serial = tenant.packages.lock().await;
    let mut desired = Vec::new();
    for row in rows {
        // A package whose delete stopped mid-unload is not desired: passes finish its unload.
        if !(row.desired() && row.has_library && row.build_status == BuildStatus::Success) {
            continue;
        }
        match materialize(state, &row).await {
            Ok(path) => desired.push(DesiredPackage {
                id: row.id.to_string(),
                tenant: tenant.name.clone(),
                source: PackageSource::Archive(path),
            }),
            Err(e) => tracing::error!(
                package_id = %row.id, package = %row.name, version = %row.version,
                "cannot write the archive from the database: {}", e.message
            ),
        }
    }
    let report = tenant.host.reconciler().reconcile(desired).await;
    apply_pauses(state, tenant).await?;
    Ok(report)
}

/// Makes the tenant's runner refuse new runs of exactly the workflows paused in the database
/// (a pause made through any replica).
async fn apply_pauses(state: &SharedState, tenant: &Tenant) -> Result<(), ApiError> {
    let paused: BTreeSet<String> = state
        .control
        .workflow_pause_list(&tenant.name)
        .await?
        .into_iter()
        .collect();
    let runner = tenant.host.runner();
    for entry in runner.catalog() {
        if paused.contains(&entry.name) {
            runner.workflow_pause(&entry.name);
        } else {
            runner.workflow_resume(&entry.name);
        }
    }
    // Paused names not (yet) served are applied too, so a run cannot slip in on a reload.
    for name in &paused {
        runner.workflow_pause(name);
    }
    Ok(())
}

/// Reconciles one tenant now (after an upload through this replica), reading its rows.
pub async fn tenant_now(state: &SharedState, tenant: &Tenant) -> Result<ReconcileReport, ApiError> {
    let rows = state.control.package_list(Some(&tenant.name)).await?;
    tenant_pass(state, tenant, rows).await
}

/// The archive of `row` as a local file (written once per content hash).
async fn materialize(state: &SharedState, row: &PackageRecord) -> Result<PathBuf, ApiError> {
    let dir = state.config.cache_dir().join("archives");
    let path = dir.join(format!("{}.cloacina", row.sha256));
    let sig = dir.join(format!("{}.cloacina.sig", row.sha256));
    if path.is_file() && (!row.signed || sig.is_file()) {
        return Ok(path);
    }
    let (archive, signature) = state
        .control
        .package_archive(row.id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("package {} has no archive", row.id)))?;
    let write = |target: &std::path::Path, bytes: &[u8]| -> Result<(), ApiError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
        let tmp = target.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, target))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                ApiError::internal(format!("writing {}: {e}", target.display()))
            })
    };
    if let Some(signature) = signature {
        write(&sig, &signature)?;
    }
    write(&path, &archive)?;
    Ok(path)
}
