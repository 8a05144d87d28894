//! Loading package libraries through Cloacina's versioned plugin ABI
//! ([`cloacina_workflow::abi`]).
//!
//! [`load`] opens a package library and returns a [`LoadedPackage`]:
//!
//! 1. The library's bytes are checked to be a shared library for this host's platform whose
//!    structure lies within the file ([`check_library_structure`]: a truncated library would
//!    be mapped past its end, and touching those pages is SIGBUS), and hashed (SHA-256).
//! 2. Each version is opened **exactly once per process**: a process-wide registry keyed by
//!    that hash hands out the same `Arc<LoadedPackage>` while one is alive, and remembers every
//!    library it ever opened.
//! 3. **Crash quarantine.** Before the library's code can run (initializers, the ABI calls,
//!    `describe`), a marker `<cache dir>/<sha256>/loading-<pid>-<token>` is written; it is
//!    removed when the load returns. A marker left by a process that is gone means that load
//!    crashed it: the library is refused ([`LoadError::Quarantined`]) until the marker is
//!    deleted, rather than crashing every process that tries again.
//!    In a host that enabled probing ([`super::probe`]), the library is first opened in a
//!    throwaway child process; one that ends that process is refused
//!    ([`LoadError::CrashedProbe`]) without ever running in this one.
//! 4. It is opened from a **content-addressed copy**, `<cache dir>/<sha256>/<file name>`, so
//!    two versions never share a path (the dynamic loader caches by path) and replacing the
//!    original file never changes code that is already mapped.
//! 5. `cloacina_plugin_abi_version` is looked up and called **before anything else**; a
//!    library without it is not a package, one with another version is refused.
//! 6. The other symbols are looked up (all missing ones are named), then `describe` is
//!    called, its document validated ([`PackageDescription::problems`]) and compared with
//!    `package.toml` (name, version, and the `[declares]` lists that are present).
//!
//! **Lifetime.** A library is never `dlclose`d. Its code can run on threads the host does not
//! control (the tokio runtime each package starts for its async code, thread-local
//! destructors), so there is no point at which unmapping it is provably safe. What the
//! reference count tells instead is whether a version is still *in use*: every task handed
//! out by [`LoadedPackage::workflows`] holds an `Arc<LoadedPackage>`, so an engine that still
//! has a workflow of an old version registered, or a task of it running, keeps that version
//! alive, and dropping the last `Arc` releases the description and the registry entry. The
//! cost is the mapped code of each version loaded during the process's life.
//!
//! [`load_archive_checked`] checks the archive's signature side-car against a
//! [`SignaturePolicy`] before anything else.
//!
//! Every failure is a typed [`LoadError`] whose message names the package, the file and what
//! to do; text that comes from the library is shown with control characters escaped.

// Opening libraries and calling through their C ABI is inherently unsafe; every unsafe block
// below says why it is sound.
#![allow(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use cloacina_workflow::abi::{
    self, ABI_VERSION, AbiVersionFn, CANCEL_REQUESTED, DescribeFn, ErrorDoc, FreeFn, PluginBuffer,
    PollTriggerFn, PollTriggerRequest, Response, RunGraphFn, RunGraphRequest, RunTaskFn,
    RunTaskOutput, RunTaskRequest, symbols,
};
use cloacina_workflow::package::PackageDescription;
use cloacina_workflow::{
    BoxFuture, Context, GraphOutput, PollOutcome, Task, TaskError, TaskSpec, Workflow,
    WorkflowDescription,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::archive::{self, ArchiveError, HOST_TARGET, UnpackLimits};
use super::manifest::{Manifest, ManifestError};
use super::signing::{SignatureError, SignaturePolicy, VerifiedSignature};
use super::{printable, shown_path};

/// Why a package library could not be loaded or called. Every message names the package and
/// the file (or archive) and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The package directory's `package.toml` is missing or malformed.
    #[error(
        "cannot load the package in {dir}: {cause}; fix package.toml (see docs/packages.md) and try again"
    )]
    Manifest { dir: String, cause: ManifestError },

    /// The archive could not be unpacked, or holds no library for this host.
    #[error("cannot load package archive {archive}: {cause}")]
    Archive {
        archive: String,
        cause: ArchiveError,
    },

    /// Reading the library or writing its cached copy failed. The I/O error is kept typed
    /// (its text is part of the message).
    #[error("package '{package}': cannot {action} {file}: {cause}")]
    Io {
        package: String,
        file: String,
        action: &'static str,
        cause: std::io::Error,
    },

    /// The file is not a shared library for this host's platform.
    #[error(
        "package '{package}': {file} is {found}, but this host is {expected}; build the package on (or for) {expected} with 'cloacinactl package build' and pack it again"
    )]
    WrongTarget {
        package: String,
        file: String,
        found: String,
        expected: String,
    },

    /// The file's structure does not lie within its bytes (truncated or corrupt): mapping it
    /// would crash the process, so it is never opened.
    #[error(
        "package '{package}': {file} cannot be loaded: {problem}; it was not opened. Build the package again with 'cloacinactl package build' and pack the new library"
    )]
    Malformed {
        package: String,
        file: String,
        problem: String,
    },

    /// An earlier load of this very library crashed the process that ran it.
    #[error(
        "package '{package}': {file} is quarantined: an earlier process (pid {pid}) died while loading it (the library crashed it, or it was killed), so it is not loaded again. Replace the archive with a fixed build, or delete {marker} to retry this one"
    )]
    Quarantined {
        package: String,
        file: String,
        pid: String,
        marker: String,
    },

    /// Opening the library in a probe process ended that process (see [`super::probe`]): it
    /// would have ended the host the same way, so it is not opened here.
    #[error(
        "package '{package}': {file} cannot be loaded: {failure}. It was opened in a separate test process first, so this process is unharmed; fix the library's initializers and publish a new build"
    )]
    CrashedProbe {
        package: String,
        file: String,
        failure: super::probe::ProbeFailure,
    },

    /// The archive's signature side-car is missing (when required), invalid or untrusted.
    #[error("cannot load package archive {archive}: {cause}")]
    Signature {
        archive: String,
        cause: SignatureError,
    },

    /// The dynamic loader refused the file.
    #[error(
        "package '{package}': the dynamic loader cannot open {file}: {message}; rebuild the package for {target} with 'cloacinactl package build'"
    )]
    Open {
        package: String,
        file: String,
        target: String,
        message: String,
    },

    /// The library has no ABI version symbol: it is not a package library.
    #[error(
        "package '{package}': {file} is not a Cloacina package library (it does not export '{symbol}'); a package crate has crate-type = [\"cdylib\"] and calls cloacina_workflow::export_package!"
    )]
    NotAPackage {
        package: String,
        file: String,
        symbol: &'static str,
    },

    /// The library speaks another ABI version.
    #[error(
        "package '{package}': {file} was built for Cloacina plugin ABI version {found}, but this host speaks ABI version {expected}; rebuild the package against this Cloacina (cloacina-workflow {sdk}) and pack it again"
    )]
    AbiMismatch {
        package: String,
        file: String,
        found: u32,
        expected: u32,
        sdk: &'static str,
    },

    /// The library lacks ABI symbols.
    #[error(
        "package '{package}': {file} does not export {}; it was not built with this Cloacina's export_package! — rebuild the package against this Cloacina (cloacina-workflow {sdk})",
        symbols.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
    )]
    MissingSymbol {
        package: String,
        file: String,
        symbols: Vec<String>,
        sdk: &'static str,
    },

    /// `describe` failed or answered something unreadable.
    #[error(
        "package '{package}': {file} could not describe itself: {message}; fix the package code and rebuild it"
    )]
    Describe {
        package: String,
        file: String,
        message: String,
    },

    /// The description is invalid.
    #[error(
        "package '{package}': {file} describes an invalid package ({} problem(s)): {}; fix the package code and rebuild it",
        problems.len(), problems.join("; ")
    )]
    InvalidDescription {
        package: String,
        file: String,
        problems: Vec<String>,
    },

    /// The description disagrees with `package.toml`.
    #[error(
        "package '{package}': {file} does not match its package.toml: {}; make package.toml and the crate agree, then rebuild and pack again",
        differences.join("; ")
    )]
    ManifestMismatch {
        package: String,
        file: String,
        differences: Vec<String>,
    },

    /// A call named a trigger or graph the package does not have.
    #[error(
        "package '{package}' {version} has no {what} '{name}'{}",
        if available.is_empty() { " (it has none)".to_string() } else { format!(" (it has: {})", available.join(", ")) }
    )]
    Unknown {
        package: String,
        version: String,
        what: &'static str,
        name: String,
        available: Vec<String>,
    },

    /// A call into the package failed (the package's own error, or a caught panic).
    #[error("package '{package}' {version}: {call} failed: {error}")]
    Call {
        package: String,
        version: String,
        call: String,
        error: Box<ErrorDoc>,
    },
}

// ---------------------------------------------------------------------------------------------
// The process-wide registry
// ---------------------------------------------------------------------------------------------

/// A library opened by this process. Never closed (see the module documentation).
struct Opened {
    library: &'static libloading::Library,
    path: PathBuf,
    opens: usize,
}

#[derive(Default)]
struct Registry {
    /// Every library opened, by SHA-256.
    opened: HashMap<String, Opened>,
    /// Live packages, by SHA-256.
    loaded: HashMap<String, Weak<LoadedPackage>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    crate::sync::lock(&REGISTRY)
}

/// How many times this process has asked the dynamic loader to open the library with this
/// SHA-256: 0 or 1, however often it is loaded.
pub fn open_count(sha256: &str) -> usize {
    registry().opened.get(sha256).map_or(0, |o| o.opens)
}

/// SHA-256 (lowercase hex) of the libraries this process has opened.
pub fn opened_libraries() -> Vec<String> {
    let mut v: Vec<String> = registry().opened.keys().cloned().collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// LoadedPackage
// ---------------------------------------------------------------------------------------------

/// The ABI's call entry points, resolved from a library that is never closed.
#[derive(Clone, Copy)]
struct Api {
    describe: DescribeFn,
    run_task: RunTaskFn,
    poll_trigger: PollTriggerFn,
    run_graph: RunGraphFn,
    free: FreeFn,
}

/// A loaded, validated package version. Share it as `Arc<LoadedPackage>`; the tasks it hands
/// out hold one, so it stays alive while any of its code can be called.
pub struct LoadedPackage {
    description: PackageDescription,
    manifest: Manifest,
    sha256: String,
    source: PathBuf,
    library_path: PathBuf,
    api: Api,
    running: AtomicUsize,
}

impl std::fmt::Debug for LoadedPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPackage")
            .field("name", &self.name())
            .field("version", &self.version())
            .field("sha256", &self.sha256)
            .field("library_path", &self.library_path)
            .finish()
    }
}

impl Drop for LoadedPackage {
    fn drop(&mut self) {
        let mut reg = registry();
        if reg
            .loaded
            .get(&self.sha256)
            .is_some_and(|w| w.strong_count() == 0)
        {
            reg.loaded.remove(&self.sha256);
        }
    }
}

/// Counts a call in flight for [`LoadedPackage::running_calls`].
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LoadedPackage {
    pub fn name(&self) -> &str {
        &self.description.name
    }

    pub fn version(&self) -> &str {
        &self.description.version
    }

    /// SHA-256 of the library file, lowercase hex: this version's identity in the registry.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The validated description document.
    pub fn description(&self) -> &PackageDescription {
        &self.description
    }

    /// The `package.toml` it was first loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The content-addressed copy the library was opened from.
    pub fn library_path(&self) -> &Path {
        &self.library_path
    }

    /// Where it was first loaded from: the library file, or the archive for
    /// [`load_archive`].
    pub fn source_path(&self) -> &Path {
        &self.source
    }

    /// Calls into the library running right now (tasks, polls, graph runs).
    pub fn running_calls(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    fn enter(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(&self.running)
    }

    /// The package's workflows, ready for `Runner::register`. Each task calls into the library
    /// on a blocking thread and holds an `Arc` to this package.
    ///
    /// Task fingerprints are salted with the library's SHA-256, so every build of a package
    /// has its own workflow versions: an engine that registers a new build keeps running its
    /// in-flight executions on the old one, even where the task source did not change.
    pub fn workflows(self: &Arc<Self>) -> Vec<Workflow> {
        self.description
            .workflows
            .iter()
            .filter_map(|wd| self.build_workflow(wd))
            .collect()
    }

    /// One workflow of the package, by name.
    pub fn workflow(self: &Arc<Self>, name: &str) -> Option<Workflow> {
        self.description
            .workflow(name)
            .and_then(|wd| self.build_workflow(wd))
    }

    fn build_workflow(self: &Arc<Self>, wd: &WorkflowDescription) -> Option<Workflow> {
        let tasks = wd
            .tasks
            .iter()
            .map(|spec| {
                let mut spec = spec.clone();
                let salt = format!(
                    "{}|package:{}@{}#{}",
                    spec.code_fingerprint.as_deref().unwrap_or(""),
                    self.name(),
                    self.version(),
                    self.sha256
                );
                spec.code_fingerprint = Some(hex::encode(Sha256::digest(salt.as_bytes())));
                Arc::new(PluginTask {
                    package: self.clone(),
                    workflow: wd.name.clone(),
                    spec,
                }) as Arc<dyn Task>
            })
            .collect();
        match Workflow::new(wd.name.clone(), wd.description.clone(), tasks) {
            Ok(wf) => Some(wf),
            Err(e) => {
                // Unreachable: the same declarations were validated when the package loaded.
                tracing::error!(package = %self.name(), version = %self.version(), error = %e, "workflow of a loaded package does not build");
                None
            }
        }
    }

    /// Reads and frees a buffer returned by the library.
    fn read<T: DeserializeOwned>(&self, buffer: PluginBuffer) -> Result<Response<T>, String> {
        read_buffer(&self.api, buffer)
    }

    fn call_error(&self, call: String, error: ErrorDoc) -> LoadError {
        LoadError::Call {
            package: self.name().to_string(),
            version: self.version().to_string(),
            call,
            error: Box::new(error),
        }
    }

    /// Runs one task of the package on the calling thread, which blocks until it ends. Call it
    /// from a blocking thread (the tasks of [`LoadedPackage::workflows`] do). Setting `cancel`
    /// to [`CANCEL_REQUESTED`] while it runs asks the task to stop.
    pub fn run_task_blocking(
        &self,
        workflow: &str,
        task: &str,
        context: Context,
        cancel: &AtomicU32,
    ) -> Result<Context, TaskError> {
        let request = serde_json::to_vec(&RunTaskRequest {
            workflow: workflow.to_string(),
            task: task.to_string(),
            context,
        })
        .map_err(|e| TaskError::Failed(format!("cannot encode the task's context: {e}")))?;
        let _running = self.enter();
        // SAFETY: run_task is the ABI's entry point of a library that is never closed; the
        // request and the flag outlive the call, and the flag is only accessed atomically.
        let buffer = unsafe {
            (self.api.run_task)(request.as_ptr(), request.len(), std::ptr::from_ref(cancel))
        };
        match self.read::<RunTaskOutput>(buffer) {
            Ok(Response::Ok(out)) => Ok(out.context),
            Ok(Response::Error(e)) => Err(e.into_task_error()),
            Err(message) => Err(TaskError::Failed(format!(
                "package '{}' {} task '{task}': {message}",
                self.name(),
                self.version()
            ))),
        }
    }

    /// Polls custom-poll trigger `name` on the calling thread (blocking).
    pub fn poll_trigger_blocking(&self, name: &str) -> Result<PollOutcome, LoadError> {
        if self.description.trigger(name).is_none() {
            return Err(self.unknown("trigger", name, self.description.trigger_names()));
        }
        let request = json_request(&PollTriggerRequest {
            trigger: name.to_string(),
        });
        let _running = self.enter();
        // SAFETY: as in run_task_blocking; the request outlives the call.
        let buffer = unsafe { (self.api.poll_trigger)(request.as_ptr(), request.len()) };
        let call = format!("polling trigger '{name}'");
        match self.read::<PollOutcome>(buffer) {
            Ok(Response::Ok(outcome)) => Ok(outcome),
            Ok(Response::Error(e)) => Err(self.call_error(call, e)),
            Err(message) => Err(self.call_error(call, ErrorDoc::new("internal", message))),
        }
    }

    /// Polls custom-poll trigger `name` on a blocking thread.
    pub async fn poll_trigger(self: &Arc<Self>, name: &str) -> Result<PollOutcome, LoadError> {
        let this = self.clone();
        let name = name.to_string();
        let call = format!("polling trigger '{name}'");
        off_async(move || this.poll_trigger_blocking(&name))
            .await
            .unwrap_or_else(|e| Err(self.call_error(call, e)))
    }

    /// Runs computation graph `name` with `input` on the calling thread (blocking).
    pub fn run_graph_blocking(&self, name: &str, input: Value) -> Result<GraphOutput, LoadError> {
        if self.description.graph(name).is_none() {
            return Err(self.unknown("graph", name, self.description.graph_names()));
        }
        let request = json_request(&RunGraphRequest {
            graph: name.to_string(),
            input,
        });
        let _running = self.enter();
        // SAFETY: as in run_task_blocking; the request outlives the call.
        let buffer = unsafe { (self.api.run_graph)(request.as_ptr(), request.len()) };
        let call = format!("running graph '{name}'");
        match self.read::<GraphOutput>(buffer) {
            Ok(Response::Ok(out)) => Ok(out),
            Ok(Response::Error(e)) => Err(self.call_error(call, e)),
            Err(message) => Err(self.call_error(call, ErrorDoc::new("internal", message))),
        }
    }

    /// Runs computation graph `name` with `input` on a blocking thread.
    pub async fn run_graph(
        self: &Arc<Self>,
        name: &str,
        input: Value,
    ) -> Result<GraphOutput, LoadError> {
        let this = self.clone();
        let name = name.to_string();
        let call = format!("running graph '{name}'");
        off_async(move || this.run_graph_blocking(&name, input))
            .await
            .unwrap_or_else(|e| Err(self.call_error(call, e)))
    }

    fn unknown(&self, what: &'static str, name: &str, available: Vec<&str>) -> LoadError {
        LoadError::Unknown {
            package: self.name().to_string(),
            version: self.version().to_string(),
            what,
            name: name.to_string(),
            available: available.into_iter().map(str::to_string).collect(),
        }
    }

    /// What differs between this package's description and `manifest`.
    fn check_manifest(&self, manifest: &Manifest, file: &str) -> Result<(), LoadError> {
        let differences = manifest_differences(&self.description, manifest);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(LoadError::ManifestMismatch {
                package: manifest.name().to_string(),
                file: file.to_string(),
                differences,
            })
        }
    }
}

/// Runs `f` on a blocking thread when inside a tokio runtime, else right here.
async fn off_async<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorDoc> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.map_err(|e| {
            ErrorDoc::new(
                if e.is_panic() { "panicked" } else { "internal" },
                format!("the blocking thread calling the package failed: {e}"),
            )
        }),
        Err(_) => Ok(f()),
    }
}

fn json_request<T: serde::Serialize>(request: &T) -> Vec<u8> {
    // Request types are plain strings and JSON values: encoding cannot fail.
    serde_json::to_vec(request).unwrap_or_default()
}

/// Reads a buffer returned by a call and gives it back to the library.
fn read_buffer<T: DeserializeOwned>(
    api: &Api,
    buffer: PluginBuffer,
) -> Result<Response<T>, String> {
    if buffer.ptr.is_null() {
        return Err("the library returned a null buffer".to_string());
    }
    // SAFETY: the buffer was just returned by one of the library's calls and is not freed yet.
    let parsed = serde_json::from_slice::<Response<T>>(unsafe { buffer.bytes() });
    // SAFETY: each buffer is given back to the library's own free function exactly once.
    unsafe { (api.free)(buffer) };
    parsed.map_err(|e| format!("the library's answer is not valid: {e}"))
}

/// A task of a loaded package: its declaration, and a body that calls the library's
/// `run_task` on a blocking thread. It holds the package, so the package outlives the run.
struct PluginTask {
    package: Arc<LoadedPackage>,
    workflow: String,
    spec: TaskSpec,
}

/// Asks a task still running in the library to stop when its host future is dropped
/// (cancelled run, engine-side timeout, shutdown). Harmless after the call returned.
struct CancelOnDrop(Arc<AtomicU32>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(CANCEL_REQUESTED, Ordering::Release);
    }
}

impl Task for PluginTask {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async move {
            let package = self.package.clone();
            let workflow = self.workflow.clone();
            let task = self.spec.id.clone();
            let input = ctx.clone();
            let cancel = Arc::new(AtomicU32::new(0));
            let _guard = CancelOnDrop(cancel.clone());
            let output =
                off_async(move || package.run_task_blocking(&workflow, &task, input, &cancel))
                    .await
                    .unwrap_or_else(|e| Err(e.into_task_error()))?;
            *ctx = output;
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Loads the package library `library`, whose `package.toml` is `manifest`, opening it from
/// a content-addressed copy under `cache_dir`. Loading the same library bytes again returns the
/// same `Arc` while one is alive, and never opens the library a second time.
///
/// Blocking (file I/O, the dynamic loader, a call into the library): from async code, call it
/// on a blocking thread.
pub fn load(
    library: &Path,
    manifest: &Manifest,
    cache_dir: &Path,
) -> Result<Arc<LoadedPackage>, LoadError> {
    load_as(library, shown_path(library), library, manifest, cache_dir)
}

/// [`load`], with `file` naming the library in messages and `source` recorded as where it
/// came from (an archive, for [`load_archive`]).
fn load_as(
    library: &Path,
    file: String,
    source: &Path,
    manifest: &Manifest,
    cache_dir: &Path,
) -> Result<Arc<LoadedPackage>, LoadError> {
    let package = manifest.name().to_string();
    let io = |action: &'static str, path: &Path, e: std::io::Error| LoadError::Io {
        package: package.clone(),
        file: shown_path(path),
        action,
        cause: e,
    };
    let bytes = std::fs::read(library).map_err(|e| io("read", library, e))?;
    if let Err(found) = check_target(&bytes) {
        return Err(LoadError::WrongTarget {
            package,
            file,
            found,
            expected: HOST_TARGET.to_string(),
        });
    }
    if let Err(problem) = check_library_structure(&bytes) {
        return Err(LoadError::Malformed {
            package,
            file,
            problem,
        });
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));

    // One load at a time per process: this is what makes "opened exactly once" hold.
    let mut reg = registry();
    if let Some(existing) = reg.loaded.get(&sha256).and_then(Weak::upgrade) {
        // Release the registry first: if this turns out to be the last Arc, its Drop takes
        // the registry lock.
        drop(reg);
        existing.check_manifest(manifest, &file)?;
        return Ok(existing);
    }

    // From here on the library's code may run (initializers, the ABI calls, describe): a
    // marker records that, and stays behind if the process dies before the load returns.
    let marker_dir = cache_dir.join(&sha256);
    std::fs::create_dir_all(&marker_dir).map_err(|e| io("create", &marker_dir, e))?;
    if let Some((marker, pid)) = crashed_load(&marker_dir) {
        return Err(LoadError::Quarantined {
            package,
            file,
            pid,
            marker: shown_path(&marker),
        });
    }
    let _marker =
        LoadMarker::write(&marker_dir, &file).map_err(|(path, e)| io("write", &path, e))?;

    let (lib, library_path) = match reg.opened.get(&sha256) {
        Some(o) => (o.library, o.path.clone()),
        None => {
            let file_name = library
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "library".to_string());
            let copy = cache_copy(cache_dir, &sha256, &file_name, &bytes)
                .map_err(|(path, e)| io("write the cached copy", &path, e))?;
            // Its initializers run first in a throwaway process, where a crash harms nothing.
            if let Err(failure) = super::probe::check(&copy) {
                return Err(LoadError::CrashedProbe {
                    package,
                    file,
                    failure,
                });
            }
            // The last line a crash in the library's initializers leaves behind.
            tracing::info!(package = %package, file = %file, sha256 = %sha256, "opening package library");
            // SAFETY: opening a library runs its initializers. A package library is trusted
            // code by design (signatures are how a host decides what to trust); the copy is
            // content-addressed and never rewritten while mapped.
            let opened =
                unsafe { libloading::Library::new(&copy) }.map_err(|e| LoadError::Open {
                    package: package.clone(),
                    file: file.clone(),
                    target: HOST_TARGET.to_string(),
                    message: e.to_string(),
                })?;
            // Never closed: see the module documentation.
            let lib: &'static libloading::Library = Box::leak(Box::new(opened));
            reg.opened.insert(
                sha256.clone(),
                Opened {
                    library: lib,
                    path: copy.clone(),
                    opens: 1,
                },
            );
            (lib, copy)
        }
    };

    // The ABI version first, before any other symbol is touched.
    // SAFETY: the symbol's type is the ABI's `extern "C" fn() -> u32`, the signature every
    // Cloacina package library has exported under this name since ABI version 1.
    let abi_version = unsafe { lib.get::<AbiVersionFn>(symbols::ABI_VERSION) }
        .map(|s| *s)
        .map_err(|_| LoadError::NotAPackage {
            package: package.clone(),
            file: file.clone(),
            symbol: symbols::ABI_VERSION,
        })?;
    let found = abi_version();
    if found != ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            package,
            file,
            found,
            expected: ABI_VERSION,
            sdk: abi::SDK_VERSION,
        });
    }

    let missing: Vec<String> = symbols::CALLS
        .iter()
        // SAFETY: only the presence of the symbol is checked; nothing is called.
        .filter(|s| unsafe { lib.get::<*const ()>(**s) }.is_err())
        .map(|s| s.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::MissingSymbol {
            package,
            file,
            symbols: missing,
            sdk: abi::SDK_VERSION,
        });
    }
    // SAFETY: the library speaks this ABI version (checked above), whose symbols have exactly
    // these types; the library is never closed, so the pointers stay valid.
    let api = unsafe {
        Api {
            describe: *lib
                .get::<DescribeFn>(symbols::DESCRIBE)
                .map_err(|e| symbol_error(&package, &file, e))?,
            run_task: *lib
                .get::<RunTaskFn>(symbols::RUN_TASK)
                .map_err(|e| symbol_error(&package, &file, e))?,
            poll_trigger: *lib
                .get::<PollTriggerFn>(symbols::POLL_TRIGGER)
                .map_err(|e| symbol_error(&package, &file, e))?,
            run_graph: *lib
                .get::<RunGraphFn>(symbols::RUN_GRAPH)
                .map_err(|e| symbol_error(&package, &file, e))?,
            free: *lib
                .get::<FreeFn>(symbols::FREE)
                .map_err(|e| symbol_error(&package, &file, e))?,
        }
    };

    // SAFETY: describe takes no arguments; its buffer is read and freed by read_buffer.
    let buffer = unsafe { (api.describe)() };
    // What the library says is shown escaped: it may hold any bytes.
    let description = match read_buffer::<PackageDescription>(&api, buffer) {
        Ok(Response::Ok(d)) => d,
        Ok(Response::Error(e)) => {
            return Err(LoadError::Describe {
                package,
                file,
                message: printable(&e.to_string(), 2000),
            });
        }
        Err(message) => {
            return Err(LoadError::Describe {
                package,
                file,
                message: printable(&message, 2000),
            });
        }
    };
    if let Err(problems) = description.validate() {
        return Err(LoadError::InvalidDescription {
            package,
            file,
            problems: problems.iter().map(|p| printable(p, 500)).collect(),
        });
    }
    let differences = manifest_differences(&description, manifest);
    if !differences.is_empty() {
        return Err(LoadError::ManifestMismatch {
            package,
            file,
            differences: differences.iter().map(|d| printable(d, 500)).collect(),
        });
    }

    let loaded = Arc::new(LoadedPackage {
        description,
        manifest: manifest.clone(),
        sha256: sha256.clone(),
        source: source.to_path_buf(),
        library_path,
        api,
        running: AtomicUsize::new(0),
    });
    reg.loaded.insert(sha256, Arc::downgrade(&loaded));
    drop(reg);
    tracing::info!(package = %loaded.name(), version = %loaded.version(), sha256 = %loaded.sha256(), "package library loaded");
    Ok(loaded)
}

fn symbol_error(package: &str, file: &str, e: libloading::Error) -> LoadError {
    LoadError::MissingSymbol {
        package: package.to_string(),
        file: file.to_string(),
        symbols: vec![e.to_string()],
        sdk: abi::SDK_VERSION,
    }
}

/// Loads a package directory's library: reads `package.toml` from `package_dir`, then
/// [`load`]s `library`.
pub fn load_dir(
    package_dir: &Path,
    library: &Path,
    cache_dir: &Path,
) -> Result<Arc<LoadedPackage>, LoadError> {
    let manifest = Manifest::from_dir(package_dir).map_err(|cause| LoadError::Manifest {
        dir: shown_path(package_dir),
        cause,
    })?;
    load(library, &manifest, cache_dir)
}

/// Unpacks a `.cloacina` archive (defensively, see [`archive::unpack`]) into a scratch
/// directory under `cache_dir`, picks its library for this host ([`HOST_TARGET`]) and
/// [`load`]s it. The scratch directory is removed afterwards; the library lives on as its
/// content-addressed copy.
pub fn load_archive(
    archive_path: &Path,
    cache_dir: &Path,
) -> Result<Arc<LoadedPackage>, LoadError> {
    load_archive_expecting(archive_path, cache_dir, None)
}

/// [`load_archive`] after checking the archive's signature against `policy`
/// ([`SignaturePolicy::check`]); a signed archive is loaded only if the bytes unpacked are
/// the bytes that were verified (a file replaced between the two is refused).
pub fn load_archive_checked(
    archive_path: &Path,
    cache_dir: &Path,
    policy: &SignaturePolicy,
) -> Result<Arc<LoadedPackage>, LoadError> {
    let verified = policy
        .check(archive_path)
        .map_err(|cause| LoadError::Signature {
            archive: shown_path(archive_path),
            cause,
        })?;
    load_archive_expecting(archive_path, cache_dir, verified.as_ref())
}

fn load_archive_expecting(
    archive_path: &Path,
    cache_dir: &Path,
    verified: Option<&VerifiedSignature>,
) -> Result<Arc<LoadedPackage>, LoadError> {
    let shown = shown_path(archive_path);
    let archive_error = |cause| LoadError::Archive {
        archive: shown.clone(),
        cause,
    };
    let scratch = cache_dir.join("unpack").join(format!(
        "{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = archive::unpack(archive_path, &scratch, &UnpackLimits::default())
        .map_err(archive_error)
        .and_then(|unpacked| {
            if let Some(v) = verified
                && v.sha256 != unpacked.sha256
            {
                return Err(LoadError::Signature {
                    archive: shown.clone(),
                    cause: SignatureError::Tampered {
                        archive: shown.clone(),
                        sig: shown_path(&v.signature_path),
                        actual: unpacked.sha256.clone(),
                        signed: v.sha256.clone(),
                    },
                });
            }
            let library = archive::library_for(&unpacked, HOST_TARGET).map_err(archive_error)?;
            let file = format!(
                "{shown} (lib/{HOST_TARGET}/{})",
                library
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            load_as(&library, file, archive_path, &unpacked.manifest, cache_dir)
        });
    if scratch.exists()
        && let Err(e) = std::fs::remove_dir_all(&scratch)
    {
        tracing::warn!(dir = %scratch.display(), error = %e, "cannot remove a scratch directory");
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Crash quarantine
// ---------------------------------------------------------------------------------------------

/// File-name prefix of load markers in a library's cache directory:
/// `loading-<pid>-<process token>`.
pub const LOAD_MARKER_PREFIX: &str = "loading-";

/// Tells this process's markers from those of an earlier process that had the same pid.
static PROCESS_TOKEN: LazyLock<u64> = LazyLock::new(rand::random);

/// A marker that a load of a library is under way in this process, removed when dropped (when
/// the load returns, however it returns). A marker that outlives its process means that
/// process died while the library's code ran during the load.
struct LoadMarker(PathBuf);

impl LoadMarker {
    fn write(dir: &Path, file: &str) -> Result<LoadMarker, (PathBuf, std::io::Error)> {
        let pid = std::process::id();
        let path = dir.join(format!("{LOAD_MARKER_PREFIX}{pid}-{:016x}", *PROCESS_TOKEN));
        let text = format!(
            "pid {pid}\nstarted {}\nlibrary {file}\n",
            chrono::Utc::now().to_rfc3339()
        );
        std::fs::write(&path, text).map_err(|e| (path.clone(), e))?;
        Ok(LoadMarker(path))
    }
}

impl Drop for LoadMarker {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(marker = %self.0.display(), error = %e, "cannot remove a load marker; the next process will take it for a crashed load");
        }
    }
}

/// A marker in `dir` left by a load that crashed: one written by another process (another
/// pid, or this pid with another token: a pid reused after a crash) that is no longer running.
/// A marker of a live process is a load under way there, not a crash. Returns the marker and
/// the pid that wrote it.
fn crashed_load(dir: &Path) -> Option<(PathBuf, String)> {
    let own_pid = std::process::id();
    let own_token = format!("{:016x}", *PROCESS_TOKEN);
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(LOAD_MARKER_PREFIX))
        else {
            continue;
        };
        let (pid_text, token) = rest.split_once('-').unwrap_or((rest, ""));
        let pid = pid_text.parse::<u32>().ok();
        if pid == Some(own_pid) && token == own_token {
            continue; // Ours: a load of this process that could not remove its marker.
        }
        if let Some(pid) = pid
            && pid != own_pid
            && i32::try_from(pid).is_ok_and(crate::daemon::pidfile::process_alive)
        {
            continue;
        }
        return Some((entry.path(), printable(pid_text, 20)));
    }
    None
}

/// Writes `bytes` to `<cache_dir>/<sha256>/<file_name>` unless an intact copy is there,
/// through a temporary file and a rename, so a reader never sees a partial file.
fn cache_copy(
    cache_dir: &Path,
    sha256: &str,
    file_name: &str,
    bytes: &[u8],
) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let dir = cache_dir.join(sha256);
    std::fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
    let dest = dir.join(file_name);
    if let Ok(existing) = std::fs::read(&dest)
        && hex::encode(Sha256::digest(&existing)) == sha256
    {
        return Ok(dest);
    }
    let tmp = dir.join(format!(
        ".{file_name}.{}-{:016x}.partial",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &dest));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err((dest, e));
    }
    Ok(dest)
}

/// What differs between a description and the manifest: name, version, and each
/// `[declares]` list that is present.
fn manifest_differences(description: &PackageDescription, manifest: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    if description.name != manifest.name() {
        out.push(format!(
            "package.toml names the package '{}', the library says '{}' (its crate name)",
            manifest.name(),
            description.name
        ));
    }
    if description.version != manifest.version() {
        out.push(format!(
            "package.toml says version {}, the library says {} (its crate version)",
            manifest.version(),
            description.version
        ));
    }
    let d = &manifest.declares;
    let lists = [
        (
            "workflows",
            "workflow",
            &d.workflows,
            description.workflow_names(),
        ),
        ("cron", "cron schedule", &d.cron, description.cron_names()),
        (
            "triggers",
            "trigger",
            &d.triggers,
            description.trigger_names(),
        ),
        (
            "reactors",
            "reactor",
            &d.reactors,
            description.reactor_names(),
        ),
        ("graphs", "graph", &d.graphs, description.graph_names()),
    ];
    for (key, what, declared, actual) in lists {
        let Some(declared) = declared else { continue };
        let declared: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
        let actual: BTreeSet<&str> = actual.into_iter().collect();
        let missing: Vec<&str> = declared.difference(&actual).copied().collect();
        let extra: Vec<&str> = actual.difference(&declared).copied().collect();
        if !missing.is_empty() {
            out.push(format!(
                "declares.{key} lists {what}(s) the library does not export: {}",
                quoted(&missing)
            ));
        }
        if !extra.is_empty() {
            out.push(format!(
                "the library exports {what}(s) declares.{key} does not list: {}",
                quoted(&extra)
            ));
        }
    }
    out
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Is the file whole?
// ---------------------------------------------------------------------------------------------

/// Checks that a library's structure lies within its bytes, so the dynamic loader never maps
/// a page past the end of the file: touching such a page kills the process with SIGBUS, before
/// anything can be logged. For ELF files, the file header, the program header table, every
/// segment's file bytes, the section header table and every section's file bytes must all lie
/// within the file. Other formats are not inspected (they are refused by the target check on
/// hosts that load ELF). `Err` says what is wrong, in words fit for a message.
pub fn check_library_structure(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(());
    }
    match bytes.get(4) {
        Some(1) => check_elf::<object::elf::FileHeader32<object::Endianness>>(bytes),
        Some(2) => check_elf::<object::elf::FileHeader64<object::Endianness>>(bytes),
        _ => Err("it is a corrupt ELF file (its class is neither 32- nor 64-bit)".to_string()),
    }
}

fn check_elf<Elf>(data: &[u8]) -> Result<(), String>
where
    Elf: object::read::elf::FileHeader<Endian = object::Endianness>,
{
    use object::read::elf::{ProgramHeader as _, SectionHeader as _};
    let len = data.len() as u64;
    let past_end = |what: String, start: u64, size: u64| {
        format!(
            "it is truncated or corrupt: its {what} (file bytes {start}..{}) lies past the end of the file ({len} bytes)",
            start.saturating_add(size)
        )
    };
    let within = |start: u64, size: u64| start.checked_add(size).is_some_and(|end| end <= len);
    let corrupt = |e: object::read::Error| format!("it is a corrupt ELF file ({e})");

    let header_size = std::mem::size_of::<Elf>() as u64;
    if len < header_size {
        return Err(past_end("ELF file header".to_string(), 0, header_size));
    }
    let header = Elf::parse(data).map_err(corrupt)?;
    let endian = header.endian().map_err(corrupt)?;

    let phoff: u64 = header.e_phoff(endian).into();
    let phnum = header.phnum(endian, data).map_err(corrupt)?;
    if phoff != 0 && phnum != 0 {
        let table = u64::from(phnum).saturating_mul(u64::from(header.e_phentsize(endian)));
        if !within(phoff, table) {
            return Err(past_end("program header table".to_string(), phoff, table));
        }
    }
    for (i, ph) in header
        .program_headers(endian, data)
        .map_err(corrupt)?
        .iter()
        .enumerate()
    {
        let (start, size) = ph.file_range(endian);
        if size != 0 && !within(start, size) {
            return Err(past_end(format!("segment {i}"), start, size));
        }
    }

    let shoff: u64 = header.e_shoff(endian).into();
    let shnum = header.shnum(endian, data).map_err(corrupt)?;
    if shoff != 0 && shnum != 0 {
        let table = u64::from(shnum).saturating_mul(u64::from(header.e_shentsize(endian)));
        if !within(shoff, table) {
            return Err(past_end("section header table".to_string(), shoff, table));
        }
    }
    for (i, sh) in header
        .section_headers(endian, data)
        .map_err(corrupt)?
        .iter()
        .enumerate()
    {
        if let Some((start, size)) = sh.file_range(endian)
            && size != 0
            && !within(start, size)
        {
            return Err(past_end(format!("section {i}"), start, size));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Is this a library for this host?
// ---------------------------------------------------------------------------------------------

/// `Ok` when `bytes` look like a shared library this host can load; otherwise what they are.
fn check_target(bytes: &[u8]) -> Result<(), String> {
    let found = BinaryKind::of(bytes);
    if found.loadable_here() {
        Ok(())
    } else {
        Err(found.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BinaryKind {
    Elf {
        bits64: bool,
        little_endian: bool,
        shared: bool,
        machine: u16,
    },
    MachO {
        cpu: u32,
    },
    MachOUniversal,
    Pe {
        machine: u16,
    },
    Unknown,
}

fn elf_arch(machine: u16) -> &'static str {
    match machine {
        3 => "x86",
        8 => "mips",
        20 => "powerpc",
        21 => "powerpc64",
        22 => "s390x",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv",
        258 => "loongarch64",
        _ => "an unknown architecture",
    }
}

fn macho_arch(cpu: u32) -> &'static str {
    match cpu {
        0x0100_0007 => "x86_64",
        0x0100_000c => "aarch64",
        7 => "x86",
        12 => "arm",
        _ => "an unknown architecture",
    }
}

fn pe_arch(machine: u16) -> &'static str {
    match machine {
        0x8664 => "x86_64",
        0xaa64 => "aarch64",
        0x014c => "x86",
        _ => "an unknown architecture",
    }
}

impl BinaryKind {
    fn of(b: &[u8]) -> BinaryKind {
        let u16_at = |at: usize, le: bool| -> Option<u16> {
            let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
            Some(if le {
                u16::from_le_bytes(s)
            } else {
                u16::from_be_bytes(s)
            })
        };
        let u32_le_at = |at: usize| -> Option<u32> {
            let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(s))
        };
        if b.starts_with(b"\x7fELF") {
            let little_endian = b.get(5) == Some(&1);
            let (Some(e_type), Some(machine)) =
                (u16_at(16, little_endian), u16_at(18, little_endian))
            else {
                return BinaryKind::Unknown;
            };
            return BinaryKind::Elf {
                bits64: b.get(4) == Some(&2),
                little_endian,
                shared: e_type == 3,
                machine,
            };
        }
        if b.starts_with(&[0xcf, 0xfa, 0xed, 0xfe]) || b.starts_with(&[0xce, 0xfa, 0xed, 0xfe]) {
            return match u32_le_at(4) {
                Some(cpu) => BinaryKind::MachO { cpu },
                None => BinaryKind::Unknown,
            };
        }
        if b.starts_with(&[0xca, 0xfe, 0xba, 0xbe]) {
            return BinaryKind::MachOUniversal;
        }
        if b.starts_with(b"MZ") {
            let machine = u32_le_at(0x3c)
                .and_then(|off| usize::try_from(off).ok())
                .filter(|&off| b.get(off..off + 4) == Some(b"PE\0\0"))
                .and_then(|off| u16_at(off + 4, true));
            return BinaryKind::Pe {
                machine: machine.unwrap_or(0),
            };
        }
        BinaryKind::Unknown
    }

    fn loadable_here(&self) -> bool {
        let host_arch = std::env::consts::ARCH;
        match self {
            BinaryKind::Elf {
                bits64,
                little_endian,
                shared,
                machine,
            } => {
                cfg!(not(any(target_os = "macos", target_os = "ios", windows)))
                    && *shared
                    && *bits64 == cfg!(target_pointer_width = "64")
                    && *little_endian == cfg!(target_endian = "little")
                    && (elf_arch(*machine) == host_arch
                        || (elf_arch(*machine) == "riscv" && host_arch.starts_with("riscv")))
            }
            BinaryKind::MachO { cpu } => {
                cfg!(any(target_os = "macos", target_os = "ios")) && macho_arch(*cpu) == host_arch
            }
            BinaryKind::MachOUniversal => cfg!(any(target_os = "macos", target_os = "ios")),
            BinaryKind::Pe { machine } => cfg!(windows) && pe_arch(*machine) == host_arch,
            BinaryKind::Unknown => false,
        }
    }
}

impl std::fmt::Display for BinaryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BinaryKind::Elf {
                bits64,
                little_endian,
                shared,
                machine,
            } => write!(
                f,
                "an ELF {} for {} ({}-bit, {}-endian; a Linux/Unix binary)",
                if *shared {
                    "shared library"
                } else {
                    "file that is not a shared library"
                },
                elf_arch(*machine),
                if *bits64 { 64 } else { 32 },
                if *little_endian { "little" } else { "big" }
            ),
            BinaryKind::MachO { cpu } => {
                write!(f, "a Mach-O library for {} (macOS)", macho_arch(*cpu))
            }
            BinaryKind::MachOUniversal => write!(f, "a universal Mach-O library (macOS)"),
            BinaryKind::Pe { machine } => {
                write!(f, "a Windows DLL for {}", pe_arch(*machine))
            }
            BinaryKind::Unknown => write!(f, "not a shared library (unrecognized file format)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16, e_type: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    #[test]
    fn structure_checks_name_what_lies_past_the_end() {
        assert_eq!(check_library_structure(b"not elf at all"), Ok(()));
        let mut bad_class = elf(62, 3);
        bad_class[4] = 3;
        assert_eq!(
            check_library_structure(&bad_class),
            Err("it is a corrupt ELF file (its class is neither 32- nor 64-bit)".to_string())
        );
        let mut short32 = elf(3, 3);
        short32[4] = 1;
        short32.truncate(40);
        assert_eq!(
            check_library_structure(&short32),
            Err("it is truncated or corrupt: its ELF file header (file bytes 0..52) lies past the end of the file (40 bytes)".to_string())
        );
        let mut table = elf(62, 3);
        table[6] = 1;
        table[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff
        table[54..56].copy_from_slice(&56u16.to_le_bytes());
        table[56..58].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            check_library_structure(&table),
            Err(format!(
                "it is truncated or corrupt: its program header table (file bytes {}..{}) lies past the end of the file (64 bytes)",
                u64::MAX,
                u64::MAX
            ))
        );
    }

    #[test]
    fn recognizes_binary_formats() {
        assert_eq!(
            BinaryKind::of(&elf(183, 3)).to_string(),
            "an ELF shared library for aarch64 (64-bit, little-endian; a Linux/Unix binary)"
        );
        let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe];
        macho.extend_from_slice(&0x0100_000cu32.to_le_bytes());
        assert_eq!(
            BinaryKind::of(&macho).to_string(),
            "a Mach-O library for aarch64 (macOS)"
        );
        assert_eq!(
            BinaryKind::of(b"#!/bin/sh\n").to_string(),
            "not a shared library (unrecognized file format)"
        );
        assert!(check_target(b"MZ").is_err() || cfg!(windows));
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn linux_x86_64_accepts_only_its_own_libraries() {
        assert!(check_target(&elf(62, 3)).is_ok());
        assert!(check_target(&elf(62, 1)).is_err(), "relocatable object");
        let e = check_target(&elf(183, 3)).expect_err("aarch64");
        assert!(e.contains("for aarch64"), "{e}");
    }

    #[test]
    fn manifest_differences_are_specific() {
        let manifest = Manifest::parse(
            "[package]\nname = \"p\"\nversion = \"1.0.0\"\n[declares]\nworkflows = [\"a\", \"b\"]\n",
            "package.toml",
        )
        .expect("manifest");
        let description = PackageDescription {
            name: "q".into(),
            version: "1.0.1".into(),
            abi_version: ABI_VERSION,
            sdk_version: String::new(),
            panic: "unwind".into(),
            workflows: vec![
                WorkflowDescription {
                    name: "a".into(),
                    description: None,
                    tasks: vec![TaskSpec::new("t")],
                },
                WorkflowDescription {
                    name: "c".into(),
                    description: None,
                    tasks: vec![TaskSpec::new("t")],
                },
            ],
            cron: vec![],
            triggers: vec![],
            reactors: vec![],
            graphs: vec![],
        };
        assert_eq!(
            manifest_differences(&description, &manifest),
            [
                "package.toml names the package 'p', the library says 'q' (its crate name)",
                "package.toml says version 1.0.0, the library says 1.0.1 (its crate version)",
                "declares.workflows lists workflow(s) the library does not export: 'b'",
                "the library exports workflow(s) declares.workflows does not list: 'c'",
            ]
        );
    }
}
