//! The reconciler: makes the set of loaded packages match a desired set (files in watched
//! folders for the daemon; rows in the database for the server), through the six ordered steps
//! of [`steps`] (docs/reconciler.md).
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

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Runner;
use crate::error::ErrorCode;
use crate::package::archive;
use crate::package::loader::{self, LoadedPackage};
use crate::package::signing::SignaturePolicy;
use crate::registry::{GuardRefusal, ReactorRegistry};
use crate::schedule::ScheduleError;
use crate::schedule::cron::CronScheduler;
use crate::schedule::trigger::TriggerScheduler;
pub use steps::StepError;
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
    /// No longer desired, but the bound-subscriber guard refused its unload: it is still fully
    /// loaded and serving (the guard's text is the last error); retried every pass.
    UnloadRefused,
    /// Desired, but another package of the same name (and tenant) with a higher or equal
    /// version is served instead: never loaded, its library never opened.
    Superseded,
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
    /// The package is no longer in the desired set (its file was removed) but is still known,
    /// e.g. because its unload was refused.
    pub removed: bool,
    /// For a superseded package: the id and source of the package served instead.
    pub superseded_by: Option<String>,
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
    /// The bound-subscriber guard refused; the message is the guard text verbatim, and
    /// nothing changed.
    #[error(transparent)]
    Refused(GuardRefusal),
    #[error("package {0} is not loaded")]
    NotLoaded(String),
    /// The message includes the step's error, which is kept typed in `cause`.
    #[error(
        "unload of package '{package}' ({id}) stopped at step {step} ({step_name}): {cause}; rerun the unload to continue"
    )]
    StepFailed {
        id: String,
        package: String,
        step: usize,
        step_name: &'static str,
        /// Boxed: the step errors are large, and every unload returns this type.
        cause: Box<StepError>,
    },
    #[error("cannot read or delete cron schedules: {0}; the next start tries again")]
    Storage(Box<ScheduleError>),
    #[error("the reconciler is closed (its host is shutting down); nothing was loaded or unloaded")]
    Closed,
}

impl ErrorCode for ReconcileError {
    fn code(&self) -> &'static str {
        match self {
            ReconcileError::Refused(g) => g.code(),
            ReconcileError::NotLoaded(_) => "package_not_loaded",
            ReconcileError::StepFailed { .. } => "unload_step_failed",
            ReconcileError::Storage(e) => e.code(),
            ReconcileError::Closed => "shutting_down",
        }
    }
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
    /// Name and version read from the manifest before the library was opened (so a package
    /// whose load failed still shows them).
    identity: Option<Identity>,
    removed: bool,
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
            identity: None,
            removed: false,
            source: Some(source_of(d)),
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
            name: self
                .package
                .as_ref()
                .map(|p| p.name().to_string())
                .or_else(|| self.identity.as_ref().map(|i| i.name.clone())),
            version: self
                .package
                .as_ref()
                .map(|p| p.version().to_string())
                .or_else(|| self.identity.as_ref().map(|i| i.version.clone())),
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
            removed: self.removed,
            superseded_by: None,
        }
    }

    fn identity(&self) -> Option<Identity> {
        match &self.package {
            Some(p) => Some(Identity {
                name: p.name().to_string(),
                version: p.version().to_string(),
            }),
            None => self.identity.clone(),
        }
    }

    /// Loaded code is in the runtime for it (fully, waiting at step 5, or refusing to go).
    fn serving(&self) -> bool {
        self.package.is_some()
            && matches!(
                self.state,
                PackageState::Loaded | PackageState::Waiting | PackageState::UnloadRefused
            )
    }
}

/// A package's name and version, as its manifest states them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    name: String,
    version: String,
}

/// Why a package's identity could not be learnt.
enum PeekError {
    /// The file is gone (removed between the folder scan and now): not a failure.
    Vanished,
    /// Not a readable package archive: a failed load, with this message.
    Failed(String),
}

/// Drives packages through the pipeline. One pass at a time.
pub struct Reconciler {
    rt: Runtime,
    cache_dir: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Identities read from archives' manifests, by package id (ids are content-addressed or
    /// per upload, so an id's identity never changes).
    identities: Mutex<HashMap<String, Identity>>,
    /// Desired packages not served because a higher or equal version is: rebuilt every pass.
    superseded: Mutex<BTreeMap<(String, String), PackageStatus>>,
    /// Problems with the desired set's source (an unreadable watch folder): reported as
    /// degraded health; while any is present no stored row is swept as an orphan.
    source_problems: Mutex<Vec<String>>,
    /// Passes are serialized; `true` once [`Reconciler::close`] ran: no pass starts after it.
    pass: tokio::sync::Mutex<bool>,
    /// First retry delay of a failed load; doubles per attempt up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// What an archive's signature must be before it is loaded (see `with_signature_policy`).
    signatures: Mutex<SignaturePolicy>,
}

use crate::sync::lock;

impl Reconciler {
    /// `cache_dir` holds the content-addressed copies of package libraries.
    pub fn new(rt: Runtime, cache_dir: PathBuf) -> Self {
        Reconciler {
            rt,
            cache_dir,
            entries: Mutex::new(BTreeMap::new()),
            identities: Mutex::new(HashMap::new()),
            superseded: Mutex::new(BTreeMap::new()),
            source_problems: Mutex::new(Vec::new()),
            pass: tokio::sync::Mutex::new(false),
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

    /// Stops reconciling, first thing in a host's shutdown: waits for a pass in progress to end,
    /// then makes every later pass a no-op (and an explicit unload an error), so nothing loads
    /// a package while the components below are being stopped. Packages stay as they are.
    /// Idempotent.
    pub async fn close(&self) {
        *self.pass.lock().await = true;
    }

    /// Every package the reconciler knows, with its progress: the managed ones, then the
    /// superseded duplicates.
    pub fn statuses(&self) -> Vec<PackageStatus> {
        let mut out: Vec<PackageStatus> = lock(&self.entries).values().map(Entry::status).collect();
        out.extend(lock(&self.superseded).values().cloned());
        out
    }

    pub fn status(&self, id: &str) -> Option<PackageStatus> {
        lock(&self.entries).get(id).map(Entry::status).or_else(|| {
            lock(&self.superseded)
                .values()
                .find(|s| s.id == id)
                .cloned()
        })
    }

    /// Records what is wrong with the desired set's source (e.g. a watch folder that cannot be
    /// read), replacing the previous list; an empty list clears it.
    pub fn set_source_problems(&self, problems: Vec<String>) {
        *lock(&self.source_problems) = problems;
    }

    /// The problems last recorded by [`Reconciler::set_source_problems`].
    pub fn source_problems(&self) -> Vec<String> {
        lock(&self.source_problems).clone()
    }

    /// The loaded package behind `id`, if any.
    pub fn package(&self, id: &str) -> Option<Arc<LoadedPackage>> {
        lock(&self.entries).get(id).and_then(|e| e.package.clone())
    }

    /// One reconciliation pass: unload what is no longer desired, upgrade what changed, load
    /// what is new, retry what waits or failed (when its backoff is due).
    ///
    /// One version per package name and tenant is served: the highest version (semantic
    /// versioning) among the desired packages; on equal versions the one already serving
    /// stays, else the first in `desired`. The others are reported as superseded and never
    /// opened (their name and version come from the manifest alone). Dropping a higher version
    /// is an upgrade; removing the served one falls back to the next, through the same
    /// no-gap path.
    pub async fn reconcile(&self, desired: Vec<DesiredPackage>) -> ReconcileReport {
        let pass = self.pass.lock().await;
        let mut report = ReconcileReport::default();
        if *pass {
            tracing::debug!("reconciler closed: pass skipped");
            return report;
        }

        // One desired package per id: a second source with the same id is a copy of it. The
        // source a known package came from stays its source (a copy listed first does not
        // take its place).
        let mut unique: Vec<DesiredPackage> = Vec::new();
        let mut copies: Vec<DesiredPackage> = Vec::new();
        for d in desired {
            match unique.iter_mut().find(|u| u.id == d.id) {
                Some(u) => {
                    let known_source = lock(&self.entries)
                        .get(&d.id)
                        .and_then(|e| e.source.clone());
                    if known_source.is_some() && known_source == Some(source_of(&d)) {
                        copies.push(std::mem::replace(u, d));
                    } else {
                        copies.push(d);
                    }
                }
                None => unique.push(d),
            }
        }

        // Learn every desired package's name and version, from the manifest only.
        let mut wanted: HashSet<String> = HashSet::new();
        let mut candidates: Vec<(DesiredPackage, Identity)> = Vec::new();
        for d in unique {
            let (entry_identity, failed_waiting) = {
                let mut entries = lock(&self.entries);
                match entries.get_mut(&d.id) {
                    Some(e) => {
                        if e.state == PackageState::UnloadRefused {
                            // Desired again: it never stopped serving.
                            e.state = if e.load_done.iter().all(|&x| x) {
                                PackageState::Loaded
                            } else {
                                PackageState::Waiting
                            };
                            e.last_error = None;
                        }
                        e.removed = false;
                        // Its own file is gone but a copy is there: the copy is its source now.
                        e.source = Some(source_of(&d));
                        let waiting = e.state == PackageState::Failed
                            && e.retry_at.is_some_and(|at| at > Instant::now());
                        (e.identity(), waiting)
                    }
                    None => (None, false),
                }
            };
            let identity = match entry_identity {
                Some(i) => Some(i),
                None if failed_waiting => None,
                None => match self.peek(&d).await {
                    Ok(i) => Some(i),
                    Err(PeekError::Vanished) => {
                        vanished(&d);
                        continue;
                    }
                    Err(PeekError::Failed(message)) => {
                        self.record_failure(&d, None, message, &mut report);
                        None
                    }
                },
            };
            wanted.insert(d.id.clone());
            if let Some(i) = identity {
                if let Some(e) = lock(&self.entries).get_mut(&d.id) {
                    e.identity.get_or_insert_with(|| i.clone());
                }
                candidates.push((d, i));
            }
        }

        // Per name: the one to serve, and the superseded rest.
        let mut groups: Vec<((String, String), Vec<usize>)> = Vec::new();
        for (n, (d, i)) in candidates.iter().enumerate() {
            let key = (d.tenant.clone(), i.name.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(n),
                None => groups.push((key, vec![n])),
            }
        }
        let mut to_open: Vec<(usize, Option<String>)> = Vec::new(); // (winner, serving to replace)
        let mut losers: Vec<(usize, usize)> = Vec::new(); // (not chosen, winner)
        for ((tenant, name), members) in &groups {
            let (serving, failed_waiting): (Option<String>, HashSet<String>) = {
                let entries = lock(&self.entries);
                let serving = entries
                    .values()
                    .find(|e| {
                        e.tenant == *tenant
                            && e.serving()
                            && e.identity().is_some_and(|i| i.name == *name)
                    })
                    .map(|e| e.id.clone());
                let waiting = members
                    .iter()
                    .map(|&m| &candidates[m].0.id)
                    .filter(|id| {
                        entries.get(*id).is_some_and(|e| {
                            e.state == PackageState::Failed
                                && e.retry_at.is_some_and(|at| at > Instant::now())
                        })
                    })
                    .cloned()
                    .collect();
                (serving, waiting)
            };
            // A failed load waiting for its retry is not chosen until the retry is due: the
            // next best version serves meanwhile.
            let eligible: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&m| !failed_waiting.contains(&candidates[m].0.id))
                .collect();
            let is_serving = |m: usize| serving.as_deref() == Some(candidates[m].0.id.as_str());
            let Some(winner) = eligible.iter().copied().reduce(|best, c| {
                match version_cmp(&candidates[c].1.version, &candidates[best].1.version) {
                    Ordering::Greater => c,
                    Ordering::Equal if is_serving(c) && !is_serving(best) => c,
                    _ => best,
                }
            }) else {
                continue;
            };
            for &m in &eligible {
                if m != winner {
                    losers.push((m, winner));
                }
            }
            if !is_serving(winner) {
                to_open.push((winner, serving.filter(|s| *s != candidates[winner].0.id)));
            }
        }
        // Open the packages chosen to serve that are not loaded yet.
        let mut upgrades = Vec::new();
        let mut plain = Vec::new();
        for (winner, replaces) in to_open {
            let d = &candidates[winner].0;
            if lock(&self.entries)
                .get(&d.id)
                .is_some_and(|e| e.state == PackageState::PartiallyUnloaded)
            {
                // Wanted again after a partial unload: finish the unload first, then load anew.
                self.continue_unload(&d.id, &mut report).await;
            }
            match self.open(d).await {
                Ok(pkg) => match replaces {
                    Some(old) => upgrades.push((old, d.clone(), pkg)),
                    None => plain.push((d.clone(), pkg)),
                },
                Err(_) if source_vanished(d) => vanished(d),
                Err(message) => self.record_failure(d, None, message, &mut report),
            }
        }
        for (old, d, pkg) in upgrades {
            self.upgrade(&old, &d, pkg, &mut report).await;
        }

        // Superseded: every desired package not chosen, unless it still serves (the upgrade
        // to the chosen one failed). Recorded before any new load, so rows a superseded
        // package left in the database never fire beside the served version's.
        let superseded: Vec<(usize, usize)> = {
            let entries = lock(&self.entries);
            losers
                .into_iter()
                .filter(|&(m, _)| !entries.get(&candidates[m].0.id).is_some_and(Entry::serving))
                .collect()
        };
        let superseded_ids: HashSet<String> = superseded
            .iter()
            .map(|&(m, _)| candidates[m].0.id.clone())
            .collect();
        self.record_superseded(&candidates, &superseded, &copies)
            .await;
        let keep: HashSet<String> = wanted
            .iter()
            .filter(|id| !superseded_ids.contains(*id))
            .cloned()
            .collect();

        // Unloads of everything no longer desired (or superseded), subscribers before their
        // publishers: a refusal is final only once no other unload of this pass can lift it,
        // so removing a publisher and its subscribers together refuses nothing.
        let stale: Vec<String> = lock(&self.entries)
            .keys()
            .filter(|id| !keep.contains(*id))
            .cloned()
            .collect();
        let mut pending = Vec::new();
        for id in stale {
            let failed_only = lock(&self.entries)
                .get(&id)
                .is_some_and(|e| e.state == PackageState::Failed);
            if failed_only {
                // Its failed load was already rolled back: nothing is loaded to take down.
                lock(&self.entries).remove(&id);
            } else {
                pending.push(id);
            }
        }
        let mut refused: Vec<(String, String)> = Vec::new();
        while !pending.is_empty() {
            let mut progress = false;
            refused.clear();
            for id in std::mem::take(&mut pending) {
                match self.unload_entry(&id, false).await {
                    Ok(()) => {
                        progress = true;
                        report.unloaded.push(id);
                    }
                    Err(ReconcileError::Refused(refusal)) => {
                        refused.push((id, refusal.to_string()))
                    }
                    Err(_) => {}
                }
            }
            if !progress {
                break;
            }
            pending = refused.iter().map(|(id, _)| id.clone()).collect();
        }
        for (id, text) in &refused {
            self.note_refusal(id, text, true);
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
            .filter(|e| e.state == PackageState::Waiting && keep.contains(&e.id))
            .filter(|e| loaded_this_pass || !report.waiting.contains(&e.id))
            .map(|e| e.id.clone())
            .collect();
        for id in waiting {
            report.waiting.retain(|w| w != &id);
            self.resume_load(&id, &mut report).await;
        }
        {
            let mut entries = lock(&self.entries);
            for e in entries.values_mut() {
                e.removed = !wanted.contains(&e.id);
            }
            lock(&self.identities).retain(|id, _| wanted.contains(id) || entries.contains_key(id));
        }
        report
    }

    /// Rebuilds the superseded list; says so once per newly superseded file (naming the file
    /// served instead), and deletes cron rows such a package may have left from a time it was
    /// served, so they cannot fire beside the served version's.
    async fn record_superseded(
        &self,
        candidates: &[(DesiredPackage, Identity)],
        superseded: &[(usize, usize)],
        copies: &[DesiredPackage],
    ) {
        let mut now: BTreeMap<(String, String), PackageStatus> = BTreeMap::new();
        let mut rows_to_delete = Vec::new();
        let mut add = |d: &DesiredPackage, i: &Identity, by: &DesiredPackage, by_i: &Identity| {
            let status = PackageStatus {
                id: d.id.clone(),
                tenant: d.tenant.clone(),
                name: Some(i.name.clone()),
                version: Some(i.version.clone()),
                state: PackageState::Superseded,
                load_steps_done: Vec::new(),
                unload_steps_done: Vec::new(),
                last_error: None,
                waiting_for: None,
                attempts: 0,
                retry_in_ms: None,
                source: Some(source_of(d)),
                removed: false,
                superseded_by: Some(format!(
                    "{} {} ({}, {})",
                    by_i.name,
                    by_i.version,
                    source_of(by),
                    by.id
                )),
            };
            now.insert((d.id.clone(), source_of(d)), status);
        };
        for &(m, w) in superseded {
            let ((d, i), (by, by_i)) = (&candidates[m], &candidates[w]);
            add(d, i, by, by_i);
            rows_to_delete.push(d.id.clone());
        }
        for c in copies {
            if let Some((by, by_i)) = candidates.iter().find(|(u, _)| u.id == c.id) {
                add(c, by_i, by, by_i);
            }
        }
        let before = std::mem::replace(&mut *lock(&self.superseded), now.clone());
        for (key, s) in &now {
            if before.contains_key(key) {
                continue;
            }
            tracing::warn!(
                package_id = %s.id,
                package = %s.name.as_deref().unwrap_or("unknown"),
                version = %s.version.as_deref().unwrap_or("unknown"),
                "package superseded: {} is not loaded; {} is served instead",
                key.1,
                s.superseded_by.as_deref().unwrap_or("another version")
            );
            if rows_to_delete.contains(&s.id)
                && !lock(&self.entries).contains_key(&s.id)
                && let Err(e) = self.rt.cron.schedules_delete(&s.id).await
            {
                tracing::warn!(
                    package_id = %s.id,
                    package = %s.name.as_deref().unwrap_or("unknown"),
                    version = %s.version.as_deref().unwrap_or("unknown"),
                    "cannot delete the cron schedules of a superseded package: {e}"
                );
            }
        }
    }

    /// The name and version of a desired package, from its manifest alone (an archive's
    /// library is not opened), cached by id.
    async fn peek(&self, d: &DesiredPackage) -> Result<Identity, PeekError> {
        let path = match &d.source {
            PackageSource::Loaded(p) => {
                return Ok(Identity {
                    name: p.name().to_string(),
                    version: p.version().to_string(),
                });
            }
            PackageSource::Archive(path) => path.clone(),
        };
        if let Some(i) = lock(&self.identities).get(&d.id) {
            return Ok(i.clone());
        }
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || archive::read_manifest(&path))
                .await
                .map_err(|e| PeekError::Failed(format!("reading the manifest failed: {e}")))?
        };
        match read {
            Ok(m) => {
                let i = Identity {
                    name: m.package.name,
                    version: m.package.version,
                };
                lock(&self.identities).insert(d.id.clone(), i.clone());
                Ok(i)
            }
            Err(_) if source_vanished(d) => Err(PeekError::Vanished),
            Err(e) => Err(PeekError::Failed(e.to_string())),
        }
    }

    /// Deletes the cron schedules of packages this reconciler does not know: rows left behind
    /// by packages whose files went away while the process was down. Run it after the first
    /// pass of a process that owns its database alone (the daemon); the folders are the
    /// desired set, so such rows would otherwise fire workflows that nothing serves.
    pub async fn cron_orphans_delete(&self) -> Result<Vec<String>, ReconcileError> {
        self.cron_orphans_delete_keeping(&HashSet::new()).await
    }

    /// [`Reconciler::cron_orphans_delete`], keeping also the rows of the packages in `keep`:
    /// run before a daemon's first pass with the ids now in its folders, it removes rows of
    /// packages that are gone (or that were stored under an older id scheme) before anything
    /// loads, so they never fire beside the rows the first pass writes. Does nothing while the
    /// desired set's source has problems (a folder that cannot be read may hold their
    /// packages).
    pub async fn cron_orphans_delete_keeping(
        &self,
        keep: &HashSet<String>,
    ) -> Result<Vec<String>, ReconcileError> {
        let pass = self.pass.lock().await;
        if *pass {
            return Err(ReconcileError::Closed);
        }
        if !lock(&self.source_problems).is_empty() {
            tracing::info!(
                "not sweeping orphaned cron schedules while a watch folder cannot be read"
            );
            return Ok(Vec::new());
        }
        let rows = self
            .rt
            .cron
            .schedules_list()
            .await
            .map_err(|e| ReconcileError::Storage(Box::new(e)))?;
        let known: HashSet<String> = lock(&self.entries).keys().cloned().collect();
        let orphans: std::collections::BTreeSet<String> = rows
            .into_iter()
            .map(|r| r.package_id)
            .filter(|id| !known.contains(id) && !keep.contains(id))
            .collect();
        for id in &orphans {
            self.rt
                .cron
                .schedules_delete(id)
                .await
                .map_err(|e| ReconcileError::Storage(Box::new(e)))?;
            tracing::info!(
                package_id = %id,
                package = %"unknown",
                version = %"unknown",
                "deleted the cron schedules of a package that is no longer present"
            );
        }
        Ok(orphans.into_iter().collect())
    }

    /// Unloads one package now (the server's delete). A guard refusal changes nothing and
    /// returns the guard's text.
    pub async fn unload(&self, id: &str) -> Result<(), ReconcileError> {
        let pass = self.pass.lock().await;
        if *pass {
            return Err(ReconcileError::Closed);
        }
        if !lock(&self.entries).contains_key(id) {
            return Err(ReconcileError::NotLoaded(id.to_string()));
        }
        self.unload_entry(id, true).await
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
                let i = lock(&self.identities).get(&d.id).cloned();
                let policy = lock(&self.signatures).clone();
                // The loader's own lines ("package library loaded") carry the package's fields
                // through this span, on stderr and in the JSON log alike.
                let span = tracing::info_span!(
                    "package",
                    package_id = %d.id,
                    package = %i.as_ref().map(|i| i.name.as_str()).unwrap_or("unknown"),
                    version = %i.as_ref().map(|i| i.version.as_str()).unwrap_or("unknown"),
                );
                tokio::task::spawn_blocking(move || {
                    let _in = span.enter();
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
        if e.identity.is_none() {
            e.identity = lock(&self.identities).get(&d.id).cloned();
        }
        let (name, version) = e
            .identity()
            .map(|i| (i.name, i.version))
            .unwrap_or_else(|| ("unknown".to_string(), "unknown".to_string()));
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
            e.removed = false;
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
                            package_id = %id,
                            package = %pkg.name(),
                            version = %pkg.version(),
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
            package_id = %id,
            package = %pkg.name(),
            version = %pkg.version(),
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
                    package_id = %t.id,
                    package = %t.package.name(),
                    version = %t.package.version(),
                    "rolling back load step {}: {e}",
                    n + 1
                );
            }
        }
    }

    /// Guard first, then unload steps 1-6 (skipping those already done).
    /// A refusal changes nothing; `say_refusal` records and logs it (once per text), else the
    /// caller decides later whether the refusal is final.
    async fn unload_entry(&self, id: &str, say_refusal: bool) -> Result<(), ReconcileError> {
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
            if say_refusal {
                self.note_refusal(id, &text, false);
            }
            return Err(ReconcileError::Refused(refusal));
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
            if let Err(cause) = steps::unload_step(n, &self.rt, &t).await {
                if let Some(e) = lock(&self.entries).get_mut(id) {
                    e.state = PackageState::PartiallyUnloaded;
                    e.last_error = Some(format!(
                        "unload step {} ({}) failed: {cause}",
                        n + 1,
                        step_name
                    ));
                }
                tracing::error!(
                    package_id = %id,
                    package = %pkg.name(),
                    version = %pkg.version(),
                    "unload stopped at step {} ({}): {cause}",
                    n + 1,
                    step_name
                );
                return Err(ReconcileError::StepFailed {
                    id: id.to_string(),
                    package: pkg.name().to_string(),
                    step: n + 1,
                    step_name,
                    cause: Box::new(cause),
                });
            }
            if let Some(e) = lock(&self.entries).get_mut(id) {
                e.unload_done[n] = true;
                e.load_done[steps::undo_of(n)] = false;
            }
        }
        lock(&self.entries).remove(id);
        tracing::info!(
            package_id = %id,
            package = %pkg.name(),
            version = %pkg.version(),
            "package unloaded"
        );
        Ok(())
    }

    /// Records a guard refusal as the package's last error (and, for a package no longer
    /// desired, as its state) and logs it once per text: the daemon retries every pass.
    fn note_refusal(&self, id: &str, text: &str, removed: bool) {
        let (repeated, pkg) = {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(id) else { return };
            if removed {
                e.state = PackageState::UnloadRefused;
                e.removed = true;
            }
            let repeated = e.last_error.replace(text.to_string()).as_deref() == Some(text);
            (repeated, e.package.clone())
        };
        if !repeated {
            let (name, version) = names(pkg.as_ref());
            tracing::error!(
                package_id = %id,
                package = %name,
                version = %version,
                "unload refused: {text}"
            );
        }
    }

    async fn continue_unload(&self, id: &str, report: &mut ReconcileReport) {
        if self.unload_entry(id, true).await.is_ok() {
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
                    package_id = %old_id,
                    package = %old_pkg.name(),
                    version = %old_pkg.version(),
                    "upgrade left the old version partly loaded: {message}"
                );
                report.upgraded.push((old_id.to_string(), d.id.clone()));
                return;
            }
        }
        lock(&self.entries).remove(old_id);
        if version_cmp(pkg.version(), old_pkg.version()) == Ordering::Less {
            tracing::info!(
                package_id = %old_id, package = %old_pkg.name(), version = %old_pkg.version(),
                new_package_id = %d.id, new_version = %pkg.version(),
                "package fell back to an older version (the served one went away)"
            );
        } else {
            tracing::info!(
                package_id = %old_id, package = %old_pkg.name(), version = %old_pkg.version(),
                new_package_id = %d.id, new_version = %pkg.version(), "package upgraded"
            );
        }
        report.upgraded.push((old_id.to_string(), d.id.clone()));
    }
}

fn names(pkg: Option<&Arc<LoadedPackage>>) -> (String, String) {
    match pkg {
        Some(p) => (p.name().to_string(), p.version().to_string()),
        None => ("unknown".to_string(), "unknown".to_string()),
    }
}

/// Where a desired package comes from, as status and logs show it.
fn source_of(d: &DesiredPackage) -> String {
    match &d.source {
        PackageSource::Archive(p) => p.display().to_string(),
        PackageSource::Loaded(p) => p.source_path().display().to_string(),
    }
}

/// Whether a desired archive's file is gone (removed between the folder scan and now).
fn source_vanished(d: &DesiredPackage) -> bool {
    matches!(&d.source, PackageSource::Archive(p) if !p.exists())
}

/// A file removed between the scan and its load is not a failure: the next pass no longer
/// sees it.
fn vanished(d: &DesiredPackage) {
    if let PackageSource::Archive(p) = &d.source {
        tracing::debug!(
            package_id = %d.id,
            package = %"unknown",
            version = %"unknown",
            "package file vanished before it was loaded: {}",
            p.display()
        );
    }
}

/// Semantic-version precedence (build metadata ignored, pre-releases below their release);
/// a version that does not parse sorts below every one that does, then by its text.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<([u64; 3], Vec<&str>)> {
        let v = v.split('+').next().unwrap_or(v);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, p.split('.').collect()),
            None => (v, Vec::new()),
        };
        let mut nums = [0u64; 3];
        let mut parts = core.split('.');
        for n in &mut nums {
            *n = parts.next()?.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some((nums, pre))
    }
    fn ident_cmp(a: &str, b: &str) -> Ordering {
        match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        }
    }
    match (parse(a), parse(b)) {
        (Some((ca, pa)), Some((cb, pb))) => {
            ca.cmp(&cb)
                .then_with(|| match (pa.is_empty(), pb.is_empty()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => {
                        for (x, y) in pa.iter().zip(pb.iter()) {
                            let o = ident_cmp(x, y);
                            if o != Ordering::Equal {
                                return o;
                            }
                        }
                        pa.len().cmp(&pb.len())
                    }
                })
        }
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::version_cmp;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_compare_as_semver() {
        for (a, b, o) in [
            ("1.0.10", "1.0.9", Greater),
            ("2.0.0", "10.0.0", Less),
            ("1.0.0", "1.0.0+build.5", Equal),
            ("1.0.0-alpha", "1.0.0", Less),
            ("1.0.0-alpha.2", "1.0.0-alpha.10", Less),
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-1", "1.0.0-alpha", Less),
            ("1.0.1", "1.0.0", Greater),
            ("junk", "0.0.1", Less),
        ] {
            assert_eq!(version_cmp(a, b), o, "{a} vs {b}");
        }
    }
}
