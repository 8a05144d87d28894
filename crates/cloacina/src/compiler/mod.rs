//! The compiler service's rules: pending source packages in the database become loadable,
//! signed archives.
//!
//! A worker claims the oldest pending package ([`Store::package_build_claim`]: one package per
//! worker; concurrent claimers never get the same one), builds it ([`job`]) while stamping a
//! heartbeat on its claim every `heartbeat_interval`, and records the outcome with the log's
//! tail ([`Store::package_build_finish`]): `success` with the built archive (every server
//! replica then loads it), or `failed` with the reason (a previously uploaded version of the
//! package keeps serving). Every compiler also sweeps, every `sweep_interval`, for claims
//! whose heartbeat is older than `stale_threshold` — a compiler killed mid-build — and hands
//! them back to `pending` (or fails the package once it has had `max_attempts` claims). A
//! compiler that stops releases its in-flight build to `pending` at once. Each step after the
//! claim is fenced by the worker's id: a worker whose claim was swept stops building and
//! records nothing.
//!
//! The `cloacina-compiler` binary only parses flags, wires this to the database, serves
//! `/health`, `/v1/status` and `/metrics`, and handles signals.

pub mod abi;
pub mod job;
pub mod log;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

pub use abi::{AbiCrate, AbiSources};
pub use job::{JobContext, JobError, JobInput, JobOutput, cargo_environment};
pub use log::{BuildLog, DEFAULT_LOG_LIMIT, tail_lines};

use crate::daemon::pidfile::Service;
use crate::package::signing::PrivateKey;
use crate::store::{
    BuildClaim, BuildCounts, BuildFinish, BuildOutcome, Millis, Store, StoreError, SweptBuild,
    now_ms,
};
use crate::sync::lock;

/// The compiler service (`<home>/compiler.pid`, verified as `cloacina-compiler`).
pub const SERVICE: Service = Service {
    noun: "compiler",
    binary: "cloacina-compiler",
};

/// How a compiler works. [`CompilerOptions::new`] gives the defaults for a home.
#[derive(Debug, Clone)]
pub struct CompilerOptions {
    /// This worker's id, recorded in its claims (`host/pid/random`).
    pub worker_id: String,
    /// How often an idle worker looks for pending packages.
    pub poll_interval: Duration,
    /// How often a building worker stamps its claim.
    pub heartbeat_interval: Duration,
    /// A claim whose heartbeat is older than this is reclaimed by a sweep.
    pub stale_threshold: Duration,
    /// How often stale claims are swept.
    pub sweep_interval: Duration,
    /// The longest a build may take.
    pub build_timeout: Duration,
    /// Claims a package may have before a sweep fails it instead of requeueing it.
    pub max_attempts: i32,
    /// Scratch directories of builds.
    pub work_dir: PathBuf,
    /// Where the ABI crates are written.
    pub abi_dir: PathBuf,
    /// The shared `CARGO_TARGET_DIR` (dependencies compiled once for every build).
    pub target_dir: PathBuf,
    pub cargo: OsString,
    /// Cargo's whole environment (see [`cargo_environment`]).
    pub cargo_env: Vec<(OsString, OsString)>,
    /// Built archives are signed with this key when given.
    pub signing_key: Option<Arc<PrivateKey>>,
    /// Bytes of each build's log kept.
    pub log_limit: usize,
}

impl CompilerOptions {
    /// The defaults, with the compiler's directories under `<home>/compiler/` and cargo from
    /// `$CARGO` (else `cargo` on `PATH`) in an environment without secrets.
    pub fn new(home: &std::path::Path) -> CompilerOptions {
        let root = home.join("compiler");
        CompilerOptions {
            worker_id: worker_id(),
            poll_interval: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_secs(10),
            stale_threshold: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(30),
            build_timeout: Duration::from_secs(1800),
            max_attempts: 3,
            work_dir: root.join("builds"),
            abi_dir: root.join("abi"),
            target_dir: root.join("target"),
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")),
            cargo_env: cargo_environment(std::env::vars_os(), &[]).unwrap_or_default(),
            signing_key: None,
            log_limit: DEFAULT_LOG_LIMIT,
        }
    }

    /// Refuses settings under which claims would be reclaimed while their worker is alive.
    pub fn validate(&self) -> Result<(), CompilerError> {
        let bad = |m: String| Err(CompilerError::Options(m));
        if self.heartbeat_interval.is_zero() || self.sweep_interval.is_zero() {
            return bad("--heartbeat-interval-s and --sweep-interval-s must be at least 1".into());
        }
        if self.stale_threshold <= self.heartbeat_interval {
            return bad(format!(
                "--stale-threshold-s ({}s) must be longer than --heartbeat-interval-s ({}s), or live builds would be reclaimed; make it at least 3 heartbeats",
                self.stale_threshold.as_secs(),
                self.heartbeat_interval.as_secs()
            ));
        }
        if self.poll_interval.is_zero() {
            return bad("--poll-interval-ms must be at least 1".into());
        }
        if self.max_attempts < 1 {
            return bad("--max-attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// `host/pid/random`: unique per compiler process, readable in `package inspect`.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!(
        "{host}/{}/{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// A compiler that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CompilerError {
    #[error("{0}")]
    Options(String),
    #[error("cannot prepare {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
}

/// How one claimed build ended for this compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Built and stored: replicas load it.
    Success,
    /// Did not build: marked failed with the reason.
    Failed,
    /// Handed back to pending unbuilt (the compiler is stopping).
    Released,
    /// The claim was swept from under this worker; nothing recorded.
    Lost,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Released => "released",
            Outcome::Lost => "lost",
        }
    }
}

/// One build as this compiler saw it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub package_id: Uuid,
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub outcome: Outcome,
    /// The failure's reason.
    pub error: Option<String>,
    pub duration: Duration,
}

/// What a compiler tells its observer (metrics).
#[derive(Debug, Clone)]
pub enum CompilerEvent {
    Finished(BuildReport),
    Reclaimed(SweptBuild),
}

/// The build in progress.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentBuild {
    pub package_id: Uuid,
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub started_at: Millis,
}

/// A compiler's own state (no database read): for `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct CompilerState {
    pub worker_id: String,
    /// The last time the worker reached the database (poll, claim or heartbeat).
    pub last_contact: Option<Millis>,
    /// The last database failure since that contact, if any.
    pub last_error: Option<String>,
    pub current: Option<CurrentBuild>,
    pub last_success_at: Option<Millis>,
    pub last_failure_at: Option<Millis>,
    pub builds_succeeded: u64,
    pub builds_failed: u64,
    pub stopping: bool,
}

type Observer = Arc<dyn Fn(&CompilerEvent) + Send + Sync>;

/// A compiler: one worker and one sweeper over a store.
#[derive(Clone)]
pub struct Compiler {
    store: Store,
    options: Arc<CompilerOptions>,
    ctx: Arc<JobContext>,
    state: Arc<Mutex<CompilerState>>,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("worker_id", &self.options.worker_id)
            .finish()
    }
}

/// Waits for `stop` to turn true (a dropped sender counts as a stop).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Compiler {
    /// Checks the options, writes the ABI crates (`sources`) and clears scratch directories a
    /// killed run left behind.
    pub fn new(
        store: Store,
        options: CompilerOptions,
        sources: &AbiSources,
    ) -> Result<Compiler, CompilerError> {
        options.validate()?;
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |cause| CompilerError::Io { path, cause }
        };
        let abi_crates = sources
            .install(&options.abi_dir)
            .map_err(io(&options.abi_dir))?;
        // One compiler per home (its PID file): whatever is in its work directory is left
        // over from a run that was killed.
        if options.work_dir.exists() {
            std::fs::remove_dir_all(&options.work_dir).map_err(io(&options.work_dir))?;
        }
        std::fs::create_dir_all(&options.work_dir).map_err(io(&options.work_dir))?;
        std::fs::create_dir_all(&options.target_dir).map_err(io(&options.target_dir))?;
        let ctx = JobContext {
            work_dir: options.work_dir.clone(),
            target_dir: options.target_dir.clone(),
            abi_crates,
            cargo: options.cargo.clone(),
            cargo_env: options.cargo_env.clone(),
            timeout: options.build_timeout,
            signing_key: options.signing_key.clone(),
        };
        let state = CompilerState {
            worker_id: options.worker_id.clone(),
            last_contact: None,
            last_error: None,
            current: None,
            last_success_at: None,
            last_failure_at: None,
            builds_succeeded: 0,
            builds_failed: 0,
            stopping: false,
        };
        Ok(Compiler {
            store,
            options: Arc::new(options),
            ctx: Arc::new(ctx),
            state: Arc::new(Mutex::new(state)),
            observer: None,
        })
    }

    /// Calls `f` on every finished build and every reclaimed claim.
    pub fn with_observer(mut self, f: impl Fn(&CompilerEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }

    pub fn options(&self) -> &CompilerOptions {
        &self.options
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This compiler's own state.
    pub fn state(&self) -> CompilerState {
        lock(&self.state).clone()
    }

    /// The build queue, read from the database.
    pub async fn counts(&self) -> Result<BuildCounts, StoreError> {
        self.store.package_build_counts().await
    }

    fn emit(&self, event: CompilerEvent) {
        if let Some(f) = &self.observer {
            f(&event);
        }
    }

    fn contact(&self, result: Result<(), &StoreError>) {
        let mut s = lock(&self.state);
        match result {
            Ok(()) => {
                s.last_contact = Some(now_ms());
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }

    /// Works until `stop` turns true: the worker claims and builds, the sweeper reclaims
    /// stale claims. On stop an in-flight build is stopped and released to pending.
    pub async fn run(&self, stop: watch::Receiver<bool>) {
        tracing::info!(
            worker = %self.options.worker_id,
            poll_interval_ms = self.options.poll_interval.as_millis() as u64,
            heartbeat_interval_s = self.options.heartbeat_interval.as_secs(),
            stale_threshold_s = self.options.stale_threshold.as_secs(),
            sweep_interval_s = self.options.sweep_interval.as_secs(),
            target_dir = %self.options.target_dir.display(),
            signing = self.options.signing_key.is_some(),
            "compiler working"
        );
        tokio::join!(self.work(stop.clone()), self.sweeper(stop.clone()));
        lock(&self.state).stopping = true;
    }

    async fn work(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            match self.build_next(&mut stop).await {
                // Straight on to the next pending package.
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot claim a pending package: {e}"),
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    async fn sweeper(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sweep().await {
                tracing::warn!("cannot sweep stale build claims: {e}");
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(self.options.sweep_interval) => {}
            }
        }
    }

    /// Reclaims the claims whose heartbeat is older than the stale threshold.
    pub async fn sweep(&self) -> Result<Vec<SweptBuild>, StoreError> {
        let stale_before = now_ms() - self.options.stale_threshold.as_millis() as i64;
        let swept = self
            .store
            .package_build_sweep(stale_before, self.options.max_attempts)
            .await?;
        for s in &swept {
            if s.requeued {
                tracing::warn!(
                    package_id = %s.id, package = %s.name, version = %s.version, tenant = %s.tenant,
                    claimed_by = s.claimed_by.as_deref().unwrap_or("-"), attempts = s.attempts,
                    "reclaimed a stale build claim (its compiler stopped heartbeating for {}s); the package is pending again",
                    self.options.stale_threshold.as_secs()
                );
            } else {
                tracing::error!(
                    package_id = %s.id, package = %s.name, version = %s.version, tenant = %s.tenant,
                    claimed_by = s.claimed_by.as_deref().unwrap_or("-"), attempts = s.attempts,
                    "a stale build claim used up the package's attempts; the package is marked failed"
                );
            }
            self.emit(CompilerEvent::Reclaimed(s.clone()));
        }
        Ok(swept)
    }

    /// Claims one pending package and builds it, unless `stop` turns true first (then the
    /// build is released). `None` when nothing was pending.
    pub async fn build_next(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<BuildReport>, StoreError> {
        let claim = self
            .store
            .package_build_claim(&self.options.worker_id)
            .await;
        self.contact(claim.as_ref().map(|_| ()));
        let Some(claim) = claim? else {
            return Ok(None);
        };
        Ok(Some(self.build(claim, stop).await))
    }

    async fn build(&self, claim: BuildClaim, stop: &mut watch::Receiver<bool>) -> BuildReport {
        let p = claim.package;
        let worker = claim.worker;
        let started = Instant::now();
        tracing::info!(
            package_id = %p.id, package = %p.name, version = %p.version, tenant = %p.tenant,
            attempt = p.build_attempts, worker = %worker,
            "build claimed"
        );
        lock(&self.state).current = Some(CurrentBuild {
            package_id: p.id,
            tenant: p.tenant.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            started_at: p.build_started_at.unwrap_or_else(now_ms),
        });
        let report = |outcome, error: Option<String>| BuildReport {
            package_id: p.id,
            tenant: p.tenant.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            outcome,
            error,
            duration: started.elapsed(),
        };
        let result = self.build_claimed(&p, &worker, stop).await;
        let (outcome, error) = match result {
            BuildEnd::Finish(finish) => {
                let error = match &finish.outcome {
                    BuildOutcome::Failed { error } => Some(error.clone()),
                    BuildOutcome::Built { .. } => None,
                };
                let built = error.is_none();
                match self.finish(p.id, &worker, finish, stop).await {
                    Some(true) if built => (Outcome::Success, None),
                    Some(true) => (Outcome::Failed, error),
                    Some(false) => (Outcome::Lost, None),
                    // The database stayed out of reach: the claim goes stale and a sweep
                    // hands it to the next compiler.
                    None => (Outcome::Lost, None),
                }
            }
            BuildEnd::Release => {
                match self.store.package_build_release(p.id, &worker).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(package_id = %p.id, "the build claim was already gone when releasing it")
                    }
                    Err(e) => tracing::error!(
                        package_id = %p.id,
                        "cannot release the build claim ({e}); a compiler's sweep hands it back after --stale-threshold-s"
                    ),
                }
                (Outcome::Released, None)
            }
            BuildEnd::Lost => (Outcome::Lost, None),
        };
        let report = report(outcome, error);
        {
            let mut s = lock(&self.state);
            s.current = None;
            match outcome {
                Outcome::Success => {
                    s.last_success_at = Some(now_ms());
                    s.builds_succeeded += 1;
                }
                Outcome::Failed => {
                    s.last_failure_at = Some(now_ms());
                    s.builds_failed += 1;
                }
                Outcome::Released | Outcome::Lost => {}
            }
        }
        let secs = report.duration.as_secs_f64();
        match outcome {
            Outcome::Success => tracing::info!(
                package_id = %p.id, package = %p.name, version = %p.version, tenant = %p.tenant,
                duration_s = secs, "package built; servers load it now"
            ),
            Outcome::Failed => tracing::warn!(
                package_id = %p.id, package = %p.name, version = %p.version, tenant = %p.tenant,
                duration_s = secs, error = report.error.as_deref().unwrap_or(""),
                "package build failed"
            ),
            Outcome::Released => tracing::info!(
                package_id = %p.id, package = %p.name, version = %p.version, tenant = %p.tenant,
                "build interrupted by the stop; released back to pending"
            ),
            Outcome::Lost => tracing::warn!(
                package_id = %p.id, package = %p.name, version = %p.version, tenant = %p.tenant,
                "this compiler no longer holds the build claim; its result was discarded"
            ),
        }
        self.emit(CompilerEvent::Finished(report.clone()));
        report
    }

    /// Runs the job with heartbeats; says what to record.
    async fn build_claimed(
        &self,
        p: &crate::store::PackageRecord,
        worker: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> BuildEnd {
        let archive = match self.store.package_archive(p.id).await {
            Ok(Some((archive, _))) => archive,
            Ok(None) => return BuildEnd::Lost,
            Err(e) => {
                tracing::error!(package_id = %p.id, "cannot read the package's archive: {e}");
                return BuildEnd::Release;
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let input = JobInput {
            id: p.id,
            name: p.name.clone(),
            version: p.version.clone(),
            archive,
        };
        let ctx = self.ctx.clone();
        let limit = self.options.log_limit;
        let job_cancel = cancel.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut log = BuildLog::new(limit);
            let result = job::run(&ctx, &input, &job_cancel, &mut log);
            (result, log)
        });
        tokio::pin!(job);
        let mut heartbeat = tokio::time::interval(self.options.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut lost = false;
        let mut stopping = false;
        let joined = loop {
            tokio::select! {
                joined = &mut job => break joined,
                _ = heartbeat.tick() => {
                    let beat = self.store.package_build_heartbeat(p.id, worker).await;
                    self.contact(beat.as_ref().map(|_| ()));
                    match beat {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(package_id = %p.id, "the build claim was taken back (swept as stale, or the package deleted); stopping the build");
                            lost = true;
                            cancel.store(true, Ordering::SeqCst);
                        }
                        Err(e) => tracing::warn!(package_id = %p.id, "cannot stamp the build's heartbeat: {e}"),
                    }
                }
                _ = stopped(stop), if !stopping => {
                    stopping = true;
                    cancel.store(true, Ordering::SeqCst);
                }
            }
        };
        if lost {
            return BuildEnd::Lost;
        }
        let (result, log) = match joined {
            Ok(r) => r,
            Err(e) => {
                let mut log = BuildLog::new(limit);
                let message = format!("the build crashed inside the compiler: {e}");
                log.push(&message);
                (Err(JobError::Failed(message)), log)
            }
        };
        let outcome = match result {
            Ok(out) => BuildOutcome::Built {
                archive: out.archive,
                signature: out.signature,
            },
            Err(JobError::Failed(error)) => BuildOutcome::Failed { error },
            Err(JobError::Stopped) => return BuildEnd::Release,
        };
        BuildEnd::Finish(BuildFinish {
            outcome,
            log: log.text(),
        })
    }

    /// Records the outcome, retrying while the database is out of reach (until the claim
    /// would be stale anyway, or a stop): `None` when it could not be recorded.
    async fn finish(
        &self,
        id: Uuid,
        worker: &str,
        finish: BuildFinish,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<bool> {
        let deadline = Instant::now() + self.options.stale_threshold;
        let mut delay = Duration::from_millis(250);
        loop {
            let result = self
                .store
                .package_build_finish(id, worker, finish.clone())
                .await;
            self.contact(result.as_ref().map(|_| ()));
            match result {
                Ok(held) => return Some(held),
                Err(e) if Instant::now() + delay < deadline && !*stop.borrow() => {
                    tracing::warn!(package_id = %id, "cannot record the build's outcome ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(package_id = %id, "cannot record the build's outcome: {e}; the claim will be swept and the package built again");
                    return None;
                }
            }
        }
    }
}

/// What a claimed build comes to.
enum BuildEnd {
    Finish(BuildFinish),
    Release,
    Lost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_refuse_a_threshold_within_one_heartbeat() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut o = CompilerOptions::new(tmp.path());
        o.validate().expect("defaults are valid");
        o.stale_threshold = o.heartbeat_interval;
        let e = o.validate().expect_err("refused");
        assert!(e.to_string().contains("--stale-threshold-s"), "{e}");
        let mut o = CompilerOptions::new(tmp.path());
        o.max_attempts = 0;
        assert!(o.validate().is_err());
    }

    #[test]
    fn worker_ids_differ() {
        assert_ne!(worker_id(), worker_id());
    }

    static NO_SOURCES: AbiSources = AbiSources {
        workspace_manifest: "[workspace]\n",
        crates: &[],
    };

    /// A source-only archive of a tiny package.
    fn source_only(dir: &std::path::Path) -> Vec<u8> {
        let src = dir.join("pkg");
        std::fs::create_dir_all(src.join("src")).expect("mkdir");
        let manifest = "[package]\nname = \"tiny\"\nversion = \"1.0.0\"\n";
        std::fs::write(src.join("package.toml"), manifest).expect("write");
        std::fs::write(
            src.join("Cargo.toml"),
            format!("{manifest}\n[lib]\ncrate-type = [\"cdylib\"]\n"),
        )
        .expect("write");
        std::fs::write(src.join("src/lib.rs"), "").expect("write");
        let out = dir.join("tiny.cloacina");
        crate::package::archive::pack(&src, &[], &out).expect("pack");
        std::fs::read(out).expect("read")
    }

    /// The whole loop in process, with a "cargo" that always fails: claimed, built, recorded
    /// as failed with the reason and the log; nothing left to claim or in the work directory.
    #[tokio::test]
    async fn a_failing_build_is_recorded_with_its_reason_and_log() {
        let tmp = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", tmp.path().join("c.db").display());
        let store = Store::open(&url).await.expect("open");
        let p = store
            .package_create(crate::store::NewPackage {
                tenant: "public".to_string(),
                name: "tiny".to_string(),
                version: "1.0.0".to_string(),
                archive: source_only(tmp.path()),
                signature: None,
                has_library: false,
                build_status: crate::store::BuildStatus::Pending,
            })
            .await
            .expect("create");
        let mut options = CompilerOptions::new(tmp.path());
        options.cargo = OsString::from("false");
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let compiler = Compiler::new(store.clone(), options.clone(), &NO_SOURCES)
            .expect("compiler")
            .with_observer(move |e| lock(&seen).push(format!("{e:?}")));
        let (_tx, mut rx) = watch::channel(false);
        let report = compiler
            .build_next(&mut rx)
            .await
            .expect("claim")
            .expect("a package was pending");
        assert_eq!((report.package_id, report.outcome), (p.id, Outcome::Failed));
        let error = report.error.expect("reason");
        assert!(error.contains("cargo build --release failed"), "{error}");
        let row = store.package_get(p.id).await.expect("get").expect("row");
        assert_eq!(row.build_status, crate::store::BuildStatus::Failed);
        assert_eq!(row.build_error.as_deref(), Some(error.as_str()));
        assert_eq!(row.build_claimed_by, None);
        let log = store
            .package_build_log(p.id)
            .await
            .expect("log")
            .expect("a log");
        assert!(log.contains("running: cargo build --release"), "{log}");
        assert!(
            log.contains("neither cloacina-workflow nor cloacina-macros"),
            "{log}"
        );
        assert!(
            log.contains("build failed: cargo build --release failed"),
            "{log}"
        );
        let state = compiler.state();
        assert_eq!((state.builds_failed, state.builds_succeeded), (1, 0));
        assert!(state.last_failure_at.is_some() && state.current.is_none());
        assert_eq!(lock(&events).len(), 1);
        assert!(compiler.build_next(&mut rx).await.expect("claim").is_none());
        let left: Vec<_> = std::fs::read_dir(&options.work_dir)
            .expect("work dir")
            .collect();
        assert!(left.is_empty(), "scratch directories are removed: {left:?}");
        store.close().await;
    }
}
