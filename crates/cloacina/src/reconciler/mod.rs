//! The reconciler: makes the set of loaded packages match a desired set (files in watched
//! folders for the daemon; rows in the database for the server), through the six ordered steps
//! of [`steps`] (DESIGN §7).
//!
//! Rules it keeps:
//! - The bound-subscriber guard is checked before unload step 1: a refused unload changes
//!   nothing, and nothing cascades to other packages.
//! - Each step is idempotent; per-package progress (steps done, last error) is recorded, so a
//!   rerun of a failed unload picks up where it stopped.
//! - A failed load rolls back what it did and is retried with backoff, not every pass.
//! - A subscriber whose publisher is missing waits (with that reason) and is retried each pass.
//! - An upgrade (same name, same tenant, new package) stops the old version's cron, triggers,
//!   reactors and graphs, loads the new version — whose workflows take the names over in one
//!   step — and only then unregisters the old version's remaining workflow names. There is no
//!   window where a workflow name is missing; in-flight runs finish on the old code.
//! - Every log line carries `package_id`, `package` and `version`; each load and unload ends
//!   with one completion line or one error line naming the failed step.

pub mod steps;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Runner;
use crate::package::loader::{self, LoadedPackage};
use crate::package::signing::SignaturePolicy;
use crate::registry::ReactorRegistry;
use crate::schedule::cron::CronScheduler;
use crate::schedule::trigger::TriggerScheduler;
use steps::{LOAD_STEPS, LoadStep, Target, UNLOAD_STEPS};

/// The components the pipeline drives.
#[derive(Clone)]
pub struct Runtime {
    pub runner: Runner,
    pub reactors: ReactorRegistry,
    pub cron: CronScheduler,
    pub triggers: TriggerScheduler,
}

/// Where a desired package comes from.
#[derive(Clone)]
pub enum PackageSource {
    /// A `.cloacina` archive to unpack and load.
    Archive(PathBuf),
    /// A package already opened by the caller.
    Loaded(Arc<LoadedPackage>),
}

/// One package the caller wants loaded.
#[derive(Clone)]
pub struct DesiredPackage {
    /// Stable identity: the upload's UUID (server) or the archive's SHA-256 (daemon).
    pub id: String,
    pub tenant: String,
    pub source: PackageSource,
}

/// Where a package stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageState {
    /// All six load steps done.
    Loaded,
    /// Steps 1-4 done; step 5 waits for a reactor that is not loaded yet.
    Waiting,
    /// The load failed (and was rolled back); it is retried with backoff.
    Failed,
    /// An unload stopped part-way; the next pass (or a rerun) continues it.
    PartiallyUnloaded,
}

/// Per-package progress, as `package inspect` and `daemon status` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageStatus {
    pub id: String,
    pub tenant: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub state: PackageState,
    /// Names of the load steps done, in order.
    pub load_steps_done: Vec<&'static str>,
    /// Names of the unload steps done, in order (during or after a partial unload).
    pub unload_steps_done: Vec<&'static str>,
    pub last_error: Option<String>,
    pub waiting_for: Option<String>,
    pub attempts: u32,
    /// Milliseconds until the next retry of a failed load.
    pub retry_in_ms: Option<u64>,
    pub source: Option<String>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReconcileReport {
    pub loaded: Vec<String>,
    pub upgraded: Vec<(String, String)>,
    pub unloaded: Vec<String>,
    pub waiting: Vec<String>,
    pub failed: Vec<String>,
    /// Unloads refused by the guard, with its text.
    pub refused: Vec<(String, String)>,
}

/// Why an explicit unload did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Refused(String),
    #[error("package {0} is not loaded")]
    NotLoaded(String),
    #[error(
        "unload of package '{package}' ({id}) stopped at step {step} ({step_name}): {message}; rerun the unload to continue"
    )]
    StepFailed {
        id: String,
        package: String,
        step: usize,
        step_name: &'static str,
        message: String,
    },
    #[error("cannot read or delete cron schedules: {0}; the next start tries again")]
    Storage(String),
}

/// The unload plan for `package delete --dry-run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnloadPlan {
    pub id: String,
    pub package: String,
    pub version: String,
    pub steps: Vec<String>,
    /// `None` when the guard allows the unload; else its refusal text.
    pub refused: Option<String>,
}

struct Entry {
    id: String,
    tenant: String,
    package: Option<Arc<LoadedPackage>>,
    source: Option<String>,
    state: PackageState,
    load_done: [bool; 6],
    unload_done: [bool; 6],
    last_error: Option<String>,
    waiting_for: Option<String>,
    attempts: u32,
    retry_at: Option<Instant>,
}

impl Entry {
    fn new(d: &DesiredPackage) -> Self {
        Entry {
            id: d.id.clone(),
            tenant: d.tenant.clone(),
            package: None,
            source: match &d.source {
                PackageSource::Archive(p) => Some(p.display().to_string()),
                PackageSource::Loaded(p) => Some(p.source_path().display().to_string()),
            },
            state: PackageState::Failed,
            load_done: [false; 6],
            unload_done: [false; 6],
            last_error: None,
            waiting_for: None,
            attempts: 0,
            retry_at: None,
        }
    }

    fn status(&self) -> PackageStatus {
        PackageStatus {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            name: self.package.as_ref().map(|p| p.name().to_string()),
            version: self.package.as_ref().map(|p| p.version().to_string()),
            state: self.state,
            load_steps_done: (0..6)
                .filter(|&i| self.load_done[i])
                .map(|i| LOAD_STEPS[i])
                .collect(),
            unload_steps_done: (0..6)
                .filter(|&i| self.unload_done[i])
                .map(|i| UNLOAD_STEPS[i])
                .collect(),
            last_error: self.last_error.clone(),
            waiting_for: self.waiting_for.clone(),
            attempts: self.attempts,
            retry_in_ms: self
                .retry_at
                .map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64),
            source: self.source.clone(),
        }
    }
}

/// Drives packages through the pipeline. One pass at a time.
pub struct Reconciler {
    rt: Runtime,
    cache_dir: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    pass: tokio::sync::Mutex<()>,
    /// First retry delay of a failed load; doubles per attempt up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// What an archive's signature must be before it is loaded (see `with_signature_policy`).
    signatures: Mutex<SignaturePolicy>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reconciler {
    /// `cache_dir` holds the content-addressed copies of package libraries.
    pub fn new(rt: Runtime, cache_dir: PathBuf) -> Self {
        Reconciler {
            rt,
            cache_dir,
            entries: Mutex::new(BTreeMap::new()),
            pass: tokio::sync::Mutex::new(()),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            signatures: Mutex::new(SignaturePolicy::permissive()),
        }
    }

    /// Archives are checked against `policy` before they are loaded (the default accepts
    /// unsigned archives but refuses an invalid side-car).
    pub fn with_signature_policy(self, policy: SignaturePolicy) -> Self {
        self.set_signature_policy(policy);
        self
    }

    /// Replaces the signature policy (a configuration reload); it applies to the loads that
    /// follow, not to packages already loaded.
    pub fn set_signature_policy(&self, policy: SignaturePolicy) {
        *lock(&self.signatures) = policy;
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Every package the reconciler knows, with its progress.
    pub fn statuses(&self) -> Vec<PackageStatus> {
        lock(&self.entries).values().map(Entry::status).collect()
    }

    pub fn status(&self, id: &str) -> Option<PackageStatus> {
        lock(&self.entries).get(id).map(Entry::status)
    }

    /// The loaded package behind `id`, if any.
    pub fn package(&self, id: &str) -> Option<Arc<LoadedPackage>> {
        lock(&self.entries).get(id).and_then(|e| e.package.clone())
    }

    /// One reconciliation pass: unload what is no longer desired, upgrade what changed, load
    /// what is new, retry what waits or failed (when its backoff is due).
    pub async fn reconcile(&self, desired: Vec<DesiredPackage>) -> ReconcileReport {
        let _pass = self.pass.lock().await;
        let mut report = ReconcileReport::default();
        let wanted: HashSet<String> = desired.iter().map(|d| d.id.clone()).collect();

        // Open every desired package that is not loaded yet, to learn its name and version.
        let mut opened: Vec<(DesiredPackage, Arc<LoadedPackage>)> = Vec::new();
        for d in &desired {
            let (known, due) = {
                let entries = lock(&self.entries);
                match entries.get(&d.id) {
                    Some(e) if matches!(e.state, PackageState::Loaded | PackageState::Waiting) => {
                        (true, false)
                    }
                    Some(e) => (true, e.retry_at.is_none_or(|at| at <= Instant::now())),
                    None => (false, true),
                }
            };
            if known && !due {
                continue;
            }
            if known
                && lock(&self.entries)
                    .get(&d.id)
                    .is_some_and(|e| e.state == PackageState::PartiallyUnloaded)
            {
                // Wanted again after a partial unload: finish the unload first, then load anew.
                self.continue_unload(&d.id, &mut report).await;
            }
            match self.open(d).await {
                Ok(pkg) => opened.push((d.clone(), pkg)),
                Err(message) => self.record_failure(d, None, message, &mut report),
            }
        }

        // Upgrades: a new package whose name a loaded, no-longer-desired package serves.
        let mut plain = Vec::new();
        for (d, pkg) in opened {
            let old = {
                let entries = lock(&self.entries);
                entries
                    .values()
                    .find(|e| {
                        !wanted.contains(&e.id)
                            && e.tenant == d.tenant
                            && e.state != PackageState::Failed
                            && e.package.as_ref().is_some_and(|p| p.name() == pkg.name())
                    })
                    .map(|e| e.id.clone())
            };
            match old {
                Some(old_id) => self.upgrade(&old_id, &d, pkg, &mut report).await,
                None => plain.push((d, pkg)),
            }
        }

        // Unloads of everything no longer desired.
        let stale: Vec<String> = lock(&self.entries)
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        // A publisher refused only because its subscriber is leaving in this same pass gets a
        // second try once the others are gone (ordering, not a cascade: nothing is unloaded
        // that the caller did not ask to unload).
        let mut refused = Vec::new();
        for id in stale {
            let failed_only = lock(&self.entries)
                .get(&id)
                .is_some_and(|e| e.state == PackageState::Failed);
            if failed_only {
                // Its failed load was already rolled back: nothing is loaded to take down.
                lock(&self.entries).remove(&id);
                continue;
            }
            match self.unload_entry(&id).await {
                Ok(()) => report.unloaded.push(id),
                Err(ReconcileError::Refused(text)) => refused.push((id, text)),
                Err(_) => {}
            }
        }
        if !report.unloaded.is_empty() {
            let mut still = Vec::new();
            for (id, text) in refused {
                match self.unload_entry(&id).await {
                    Ok(()) => report.unloaded.push(id),
                    Err(ReconcileError::Refused(t)) => still.push((id, t)),
                    Err(_) => still.push((id, text)),
                }
            }
            refused = still;
        }
        report.refused.extend(refused);

        // New packages.
        for (d, pkg) in plain {
            self.load(&d, pkg, &mut report).await;
        }

        // Waiting packages: retry from step 5. One that already waited in this pass is retried
        // only if something loaded since (its publisher may be among them); it is reported once.
        let loaded_this_pass = !report.loaded.is_empty();
        let waiting: Vec<String> = lock(&self.entries)
            .values()
            .filter(|e| e.state == PackageState::Waiting && wanted.contains(&e.id))
            .filter(|e| loaded_this_pass || !report.waiting.contains(&e.id))
            .map(|e| e.id.clone())
            .collect();
        for id in waiting {
            report.waiting.retain(|w| w != &id);
            self.resume_load(&id, &mut report).await;
        }
        report
    }

    /// Deletes the cron schedules of packages this reconciler does not know: rows left behind
    /// by packages whose files went away while the process was down. Run it after the first
    /// pass of a process that owns its database alone (the daemon); the folders are the
    /// desired set, so such rows would otherwise fire workflows that nothing serves.
    pub async fn cron_orphans_delete(&self) -> Result<Vec<String>, ReconcileError> {
        let _pass = self.pass.lock().await;
        let rows = self
            .rt
            .cron
            .schedules_list()
            .await
            .map_err(|e| ReconcileError::Storage(e.to_string()))?;
        let known: HashSet<String> = lock(&self.entries).keys().cloned().collect();
        let orphans: std::collections::BTreeSet<String> = rows
            .into_iter()
            .map(|r| r.package_id)
            .filter(|id| !known.contains(id))
            .collect();
        for id in &orphans {
            self.rt
                .cron
                .schedules_delete(id)
                .await
                .map_err(|e| ReconcileError::Storage(e.to_string()))?;
            tracing::info!(
                package_id = %id,
                "deleted the cron schedules of a package that is no longer present"
            );
        }
        Ok(orphans.into_iter().collect())
    }

    /// Unloads one package now (the server's delete). A guard refusal changes nothing and
    /// returns the guard's text.
    pub async fn unload(&self, id: &str) -> Result<(), ReconcileError> {
        let _pass = self.pass.lock().await;
        if !lock(&self.entries).contains_key(id) {
            return Err(ReconcileError::NotLoaded(id.to_string()));
        }
        self.unload_entry(id).await
    }

    /// What an unload of `id` would do, and whether the guard would allow it.
    pub fn plan_unload(&self, id: &str) -> Result<UnloadPlan, ReconcileError> {
        let entries = lock(&self.entries);
        let e = entries
            .get(id)
            .ok_or_else(|| ReconcileError::NotLoaded(id.to_string()))?;
        let pkg = e
            .package
            .as_ref()
            .ok_or_else(|| ReconcileError::NotLoaded(id.to_string()))?;
        let refused = self
            .rt
            .reactors
            .guard_check(&e.tenant, id)
            .err()
            .map(|g| g.to_string());
        Ok(UnloadPlan {
            id: id.to_string(),
            package: pkg.name().to_string(),
            version: pkg.version().to_string(),
            steps: (0..6)
                .filter(|&i| !e.unload_done[i])
                .map(|i| format!("{}. {}", i + 1, UNLOAD_STEPS[i]))
                .collect(),
            refused,
        })
    }

    async fn open(&self, d: &DesiredPackage) -> Result<Arc<LoadedPackage>, String> {
        match &d.source {
            PackageSource::Loaded(p) => Ok(p.clone()),
            PackageSource::Archive(path) => {
                let (path, cache) = (path.clone(), self.cache_dir.clone());
                let policy = lock(&self.signatures).clone();
                tokio::task::spawn_blocking(move || {
                    loader::load_archive_checked(&path, &cache, &policy)
                })
                .await
                .map_err(|e| format!("opening the package failed: {e}"))?
                .map_err(|e| e.to_string())
            }
        }
    }

    fn record_failure(
        &self,
        d: &DesiredPackage,
        pkg: Option<Arc<LoadedPackage>>,
        message: String,
        report: &mut ReconcileReport,
    ) {
        let mut entries = lock(&self.entries);
        let e = entries.entry(d.id.clone()).or_insert_with(|| Entry::new(d));
        e.attempts += 1;
        let delay = self
            .backoff
            .saturating_mul(1u32 << (e.attempts - 1).min(16))
            .min(self.max_backoff);
        e.retry_at = Some(Instant::now() + delay);
        e.state = PackageState::Failed;
        e.package = pkg.or(e.package.take());
        e.load_done = [false; 6];
        e.last_error = Some(message.clone());
        let (name, version) = names(e.package.as_ref());
        tracing::error!(
            package_id = %d.id, package = %name, version = %version, attempts = e.attempts,
            retry_in_ms = delay.as_millis() as u64, "package load failed: {message}"
        );
        report.failed.push(d.id.clone());
    }

    /// Load steps 1-6 for a new package; rolls back on failure; stops at step 5 to wait.
    async fn load(
        &self,
        d: &DesiredPackage,
        pkg: Arc<LoadedPackage>,
        report: &mut ReconcileReport,
    ) {
        {
            let mut entries = lock(&self.entries);
            let e = entries.entry(d.id.clone()).or_insert_with(|| Entry::new(d));
            e.package = Some(pkg.clone());
            e.load_done = [false; 6];
            e.unload_done = [false; 6];
        }
        self.run_load_steps(&d.id, &d.tenant, &pkg, 0, report).await;
    }

    async fn resume_load(&self, id: &str, report: &mut ReconcileReport) {
        let (tenant, pkg, from) = {
            let entries = lock(&self.entries);
            let Some(e) = entries.get(id) else { return };
            let Some(pkg) = e.package.clone() else { return };
            let from = (0..6).find(|&i| !e.load_done[i]).unwrap_or(6);
            (e.tenant.clone(), pkg, from)
        };
        self.run_load_steps(id, &tenant, &pkg, from, report).await;
    }

    async fn run_load_steps(
        &self,
        id: &str,
        tenant: &str,
        pkg: &Arc<LoadedPackage>,
        from: usize,
        report: &mut ReconcileReport,
    ) {
        let t = Target {
            id,
            tenant,
            package: pkg,
        };
        for (n, step_name) in LOAD_STEPS.iter().enumerate().skip(from) {
            match steps::load_step(n, &self.rt, &t).await {
                Ok(LoadStep::Done) => {
                    if let Some(e) = lock(&self.entries).get_mut(id) {
                        e.load_done[n] = true;
                    }
                }
                Ok(LoadStep::Waiting(reason)) => {
                    let first_time = {
                        let mut entries = lock(&self.entries);
                        let Some(e) = entries.get_mut(id) else { return };
                        let first = e.waiting_for.as_deref() != Some(reason.as_str());
                        e.state = PackageState::Waiting;
                        e.waiting_for = Some(reason.clone());
                        first
                    };
                    // Logged when the reason changes, not on every pass.
                    if first_time {
                        tracing::warn!(
                            package_id = id,
                            package = pkg.name(),
                            version = pkg.version(),
                            "package waiting: {reason}"
                        );
                    }
                    report.waiting.push(id.to_string());
                    return;
                }
                Err(message) => {
                    let message = format!("load step {} ({step_name}) failed: {message}", n + 1);
                    self.roll_back(id, &t).await;
                    let d = DesiredPackage {
                        id: id.to_string(),
                        tenant: tenant.to_string(),
                        source: PackageSource::Loaded(pkg.clone()),
                    };
                    self.record_failure(&d, Some(pkg.clone()), message, report);
                    return;
                }
            }
        }
        if let Some(e) = lock(&self.entries).get_mut(id) {
            e.state = PackageState::Loaded;
            e.waiting_for = None;
            e.last_error = None;
            e.attempts = 0;
            e.retry_at = None;
        }
        tracing::info!(
            package_id = id,
            package = pkg.name(),
            version = pkg.version(),
            "package loaded"
        );
        report.loaded.push(id.to_string());
    }

    /// Undoes the load steps done so far, in reverse (best effort; each undo is idempotent).
    async fn roll_back(&self, id: &str, t: &Target<'_>) {
        let done = lock(&self.entries)
            .get(id)
            .map(|e| e.load_done)
            .unwrap_or([false; 6]);
        for n in (0..6).rev().filter(|&n| done[n]) {
            if let Err(e) = steps::unload_step(steps::undo_of(n), &self.rt, t).await {
                tracing::warn!(
                    package_id = t.id,
                    package = t.package.name(),
                    version = t.package.version(),
                    "rolling back load step {}: {e}",
                    n + 1
                );
            }
        }
    }

    /// Guard first, then unload steps 1-6 (skipping those already done).
    async fn unload_entry(&self, id: &str) -> Result<(), ReconcileError> {
        let (tenant, pkg) = {
            let entries = lock(&self.entries);
            let e = entries
                .get(id)
                .ok_or_else(|| ReconcileError::NotLoaded(id.to_string()))?;
            (e.tenant.clone(), e.package.clone())
        };
        let Some(pkg) = pkg else {
            lock(&self.entries).remove(id);
            return Ok(());
        };
        if let Err(refusal) = self.rt.reactors.guard_check(&tenant, id) {
            let text = refusal.to_string();
            let repeated = {
                let mut entries = lock(&self.entries);
                match entries.get_mut(id) {
                    Some(e) => e.last_error.replace(text.clone()).as_deref() == Some(text.as_str()),
                    None => false,
                }
            };
            // The daemon retries every pass: say it once, not every half second.
            if !repeated {
                tracing::error!(
                    package_id = id,
                    package = pkg.name(),
                    version = pkg.version(),
                    "unload refused: {text}"
                );
            }
            return Err(ReconcileError::Refused(text));
        }
        let t = Target {
            id,
            tenant: &tenant,
            package: &pkg,
        };
        for (n, &step_name) in UNLOAD_STEPS.iter().enumerate() {
            if lock(&self.entries)
                .get(id)
                .is_some_and(|e| e.unload_done[n])
            {
                continue;
            }
            if let Err(message) = steps::unload_step(n, &self.rt, &t).await {
                if let Some(e) = lock(&self.entries).get_mut(id) {
                    e.state = PackageState::PartiallyUnloaded;
                    e.last_error = Some(format!(
                        "unload step {} ({}) failed: {message}",
                        n + 1,
                        step_name
                    ));
                }
                tracing::error!(
                    package_id = id,
                    package = pkg.name(),
                    version = pkg.version(),
                    "unload stopped at step {} ({}): {message}",
                    n + 1,
                    step_name
                );
                return Err(ReconcileError::StepFailed {
                    id: id.to_string(),
                    package: pkg.name().to_string(),
                    step: n + 1,
                    step_name,
                    message,
                });
            }
            if let Some(e) = lock(&self.entries).get_mut(id) {
                e.unload_done[n] = true;
                e.load_done[steps::undo_of(n)] = false;
            }
        }
        lock(&self.entries).remove(id);
        tracing::info!(
            package_id = id,
            package = pkg.name(),
            version = pkg.version(),
            "package unloaded"
        );
        Ok(())
    }

    async fn continue_unload(&self, id: &str, report: &mut ReconcileReport) {
        if self.unload_entry(id).await.is_ok() {
            report.unloaded.push(id.to_string());
        }
    }

    /// Old version out, new version in, with no moment where a workflow name is unserved:
    /// 1. the old version's graphs, triggers and cron stop (unload steps 2, 3, 5, 6); its
    ///    workflows keep serving;
    /// 2. the new version loads: its reactors take the old ones over (bound subscribers stay
    ///    bound), and its workflows take the names over in one step;
    /// 3. the old version's leftovers go: reactors the new version dropped (guarded), and
    ///    workflow names it no longer serves.
    async fn upgrade(
        &self,
        old_id: &str,
        d: &DesiredPackage,
        pkg: Arc<LoadedPackage>,
        report: &mut ReconcileReport,
    ) {
        let (tenant, old_pkg) = {
            let entries = lock(&self.entries);
            let Some(e) = entries.get(old_id) else { return };
            (e.tenant.clone(), e.package.clone())
        };
        let Some(old_pkg) = old_pkg else { return };
        let old = Target {
            id: old_id,
            tenant: &tenant,
            package: &old_pkg,
        };
        for n in [1, 2, 4, 5] {
            if let Err(message) = steps::unload_step(n, &self.rt, &old).await {
                let message = format!(
                    "upgrade to {}: unload step {} ({}) of the old version failed: {message}",
                    pkg.version(),
                    n + 1,
                    UNLOAD_STEPS[n]
                );
                if let Some(e) = lock(&self.entries).get_mut(old_id) {
                    e.last_error = Some(message.clone());
                }
                // Put back what already stopped, so the old version keeps serving as before.
                let mut restore = ReconcileReport::default();
                self.run_load_steps(old_id, &tenant, &old_pkg, 0, &mut restore)
                    .await;
                self.record_failure(d, Some(pkg), message, report);
                return;
            }
        }
        self.load(d, pkg.clone(), report).await;
        let loaded = lock(&self.entries)
            .get(&d.id)
            .is_some_and(|e| e.state != PackageState::Failed);
        if !loaded {
            let mut restore = ReconcileReport::default();
            self.run_load_steps(old_id, &tenant, &old_pkg, 0, &mut restore)
                .await;
            return;
        }
        for n in [3, 0] {
            if let Err(message) = steps::unload_step(n, &self.rt, &old).await {
                if let Some(e) = lock(&self.entries).get_mut(old_id) {
                    e.state = PackageState::PartiallyUnloaded;
                    e.unload_done = [false, true, true, n == 0, true, true];
                    e.last_error = Some(format!(
                        "upgrade: unload step {} ({}) of the old version failed: {message}",
                        n + 1,
                        UNLOAD_STEPS[n]
                    ));
                }
                tracing::error!(
                    package_id = old_id,
                    package = old_pkg.name(),
                    version = old_pkg.version(),
                    "upgrade left the old version partly loaded: {message}"
                );
                report.upgraded.push((old_id.to_string(), d.id.clone()));
                return;
            }
        }
        lock(&self.entries).remove(old_id);
        tracing::info!(
            package_id = old_id, package = old_pkg.name(), version = old_pkg.version(),
            new_package_id = %d.id, new_version = pkg.version(), "package upgraded"
        );
        report.upgraded.push((old_id.to_string(), d.id.clone()));
    }
}

fn names(pkg: Option<&Arc<LoadedPackage>>) -> (String, String) {
    match pkg {
        Some(p) => (p.name().to_string(), p.version().to_string()),
        None => ("unknown".to_string(), "unknown".to_string()),
    }
}
