//! The `reconciler` scenario: how long a package takes from landing in a watched folder to its
//! workflow being executable, and from leaving the folder to being gone.
//!
//! It uses the daemon's own folder pass (`cloacina::daemon::discovery`) over a real
//! `.cloacina` archive of the `hello-orders` example, built with cargo and packed here. Each
//! cycle moves the archive into the folder (write elsewhere, then rename, as users are told
//! to), runs one pass, checks the workflow is served and runs it to completion (untimed), then
//! removes the file and runs one pass more. The daemon adds its file-watcher debounce
//! (`watcher_debounce_ms`, 500 ms by default) in front of each pass; that wait is
//! configuration, not work, and is not part of these numbers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloacina::daemon::discovery::{self, Scanner};
use cloacina::package::archive;
use cloacina::reconciler::{Reconciler, Runtime};
use cloacina::registry::ReactorRegistry;
use cloacina::schedule::cron::{CronConfig, CronScheduler};
use cloacina::schedule::trigger::{TriggerConfig, TriggerScheduler};
use cloacina::store::{ExecutionStatus, Store};
use cloacina::{Runner, RunnerConfig};
use cloacina_workflow::Context;

/// The example package this scenario loads, and the workflow it checks.
const EXAMPLE: &str = "hello-orders";
const WORKFLOW: &str = "hello";

/// What the cycles measured, in ms.
#[derive(Debug, Default)]
pub struct Cycles {
    pub load_ms: Vec<f64>,
    pub unload_ms: Vec<f64>,
    pub failed: usize,
    pub commits: u64,
    pub ops: u64,
}

/// The workspace root: the first ancestor of this crate holding the example packages.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("examples/packages/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "the reconciler scenario needs the source tree: no examples/packages above {}",
                here.display()
            )
        })
}

/// Builds the example with cargo (into `target/packages`, the directory the tests use, so a
/// test run has usually built it already) and packs it into `out_dir`.
pub fn example_archive(out_dir: &Path) -> anyhow::Result<PathBuf> {
    let root = workspace_root()?;
    let examples = root.join("examples/packages");
    let target = root.join("target/packages");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(examples.join("Cargo.toml"))
        .args(["-p", EXAMPLE])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .with_context(|| format!("running {cargo} to build the {EXAMPLE} example"))?;
    if !output.status.success() {
        bail!(
            "building the {EXAMPLE} example failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let library = target
        .join("debug")
        .join(archive::library_file_name(EXAMPLE));
    let out = out_dir.join(format!("{EXAMPLE}.cloacina"));
    archive::pack(
        &examples.join(EXAMPLE),
        &[(archive::HOST_TARGET.to_string(), library)],
        &out,
    )
    .with_context(|| format!("packing the {EXAMPLE} example"))?;
    Ok(out)
}

/// Runs `cycles` load/unload cycles of `archive_file` through the daemon's folder pass.
pub async fn cycles(store: &Store, archive_file: &Path, cycles: usize) -> anyhow::Result<Cycles> {
    let runner = Runner::start(store.clone(), RunnerConfig::default()).await?;
    let rt = Runtime {
        reactors: ReactorRegistry::new(None),
        cron: CronScheduler::new(store.clone(), runner.clone(), CronConfig::default()),
        triggers: TriggerScheduler::new(store.clone(), runner.clone(), TriggerConfig::default()),
        runner: runner.clone(),
    };
    let work = tempfile::tempdir()?;
    let folder = work.path().join("packages");
    std::fs::create_dir_all(&folder)?;
    let dirs = vec![folder.clone()];
    let staged = work.path().join("staged.cloacina");
    let landed = folder.join(
        archive_file
            .file_name()
            .context("the archive path has no file name")?,
    );
    let before = store.stats();
    let mut out = Cycles::default();
    for i in 0..cycles {
        // A fresh library cache per cycle: each load copies and opens the library anew, as
        // the first load of a new package does.
        let reconciler = Reconciler::new(rt.clone(), work.path().join(format!("cache-{i}")));
        let mut scanner = Scanner::default();
        std::fs::copy(archive_file, &staged)?;

        let start = Instant::now();
        std::fs::rename(&staged, &landed)?;
        let report = discovery::folders_reconcile(&reconciler, &mut scanner, &dirs).await;
        let served = runner.workflow(WORKFLOW).is_some();
        out.load_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let mut ok = served && report.loaded.len() == 1 && report.failed.is_empty();
        if served {
            let id = runner.submit(WORKFLOW, Context::new()).await?;
            let result = runner.wait(id, Some(Duration::from_secs(60))).await?;
            ok &= result.status == ExecutionStatus::Completed
                && result
                    .context
                    .as_ref()
                    .and_then(|c| c.get::<String>("greeting").ok())
                    .as_deref()
                    == Some("hello, world");
        }

        let start = Instant::now();
        std::fs::remove_file(&landed)?;
        let report = discovery::folders_reconcile(&reconciler, &mut scanner, &dirs).await;
        let gone = runner.workflow(WORKFLOW).is_none();
        out.unload_ms.push(start.elapsed().as_secs_f64() * 1e3);
        ok &= gone && report.unloaded.len() == 1;
        if !ok {
            out.failed += 1;
        }
    }
    (out.commits, out.ops) = crate::rounds::counted(&before, &store.stats());
    runner.shutdown().await?;
    Ok(out)
}
