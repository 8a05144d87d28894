//! One build: a stored archive in, a loadable (and signed) archive out.
//!
//! In a scratch directory of its own: the archive is unpacked twice (defensively, as any
//! load would) — once as the pristine source that is packed again, once as the build copy,
//! whose `Cargo.toml` has its dependencies on the ABI crates pointed at the compiler's copies
//! ([`super::abi::rewrite_manifest`]). `cargo build --release` runs in the build copy with the
//! library's build step (`package::build::build_until`: a time limit, a stop flag, the
//! environment it is given and nothing else, a shared target directory), its output kept in a
//! bounded [`BuildLog`]. The library is packed with the pristine source (and with any library
//! the upload carried for other targets) and signed when a key is configured. The scratch
//! directory is removed whatever happens.
//!
//! A shared target directory serves one build at a time: a lock file in it is held from the
//! build until the library is packed, so compilers sharing it never pack each other's output.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::log::BuildLog;
use crate::package::archive::{self, HOST_TARGET, UnpackLimits};
use crate::package::build::{self, BuildError, BuildLimit, Cargo, CargoLog, Profile};
use crate::package::signing::{self, PrivateKey};

/// What every build of one compiler shares.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Scratch directories are made (and removed) here.
    pub work_dir: PathBuf,
    /// The shared `CARGO_TARGET_DIR`.
    pub target_dir: PathBuf,
    /// The ABI crates' directories by crate name.
    pub abi_crates: BTreeMap<String, PathBuf>,
    /// The cargo program.
    pub cargo: OsString,
    /// The whole environment cargo gets (nothing else is inherited).
    pub cargo_env: Vec<(OsString, OsString)>,
    pub timeout: Duration,
    pub signing_key: Option<Arc<PrivateKey>>,
}

/// A package to build.
#[derive(Debug, Clone)]
pub struct JobInput {
    pub id: uuid::Uuid,
    pub name: String,
    pub version: String,
    pub archive: Vec<u8>,
}

/// A built archive, ready to store.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub archive: Vec<u8>,
    /// The detached signature's text (the `.sig` side-car), when a key is configured.
    pub signature: Option<Vec<u8>>,
    pub sha256: String,
}

/// Why a build produced nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The package did not build (or pack): the reason, for `package inspect`.
    Failed(String),
    /// The stop flag was set (the compiler is stopping, or lost its claim).
    Stopped,
}

/// The scratch directory of one build, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Builds `input`; every step is written to `log`. Blocking: run it off the async threads.
pub fn run(
    ctx: &JobContext,
    input: &JobInput,
    stop: &Arc<AtomicBool>,
    log: &mut BuildLog,
) -> Result<JobOutput, JobError> {
    let started = Instant::now();
    let fail = |log: &mut BuildLog, message: String| {
        log.push(&format!("build failed: {message}"));
        JobError::Failed(message)
    };
    log.push(&format!(
        "cloacina-compiler {}: building {} {} (package {}) for {HOST_TARGET}",
        env!("CARGO_PKG_VERSION"),
        input.name,
        input.version,
        input.id
    ));
    fs::create_dir_all(&ctx.work_dir).map_err(|e| {
        fail(
            log,
            format!(
                "cannot create the compiler's work directory {}: {e}",
                ctx.work_dir.display()
            ),
        )
    })?;
    let scratch = Scratch(
        ctx.work_dir
            .join(format!("{}-{:08x}", input.id, rand::random::<u32>())),
    );
    fs::create_dir(&scratch.0)
        .map_err(|e| fail(log, format!("cannot create {}: {e}", scratch.0.display())))?;
    let upload = scratch.0.join("upload.cloacina");
    fs::write(&upload, &input.archive)
        .map_err(|e| fail(log, format!("cannot write {}: {e}", upload.display())))?;
    let limits = UnpackLimits::default();
    let shown_upload = upload.display().to_string();
    let unpack_error =
        |e: archive::ArchiveError| e.to_string().replace(&shown_upload, "the stored archive");
    let source_dir = scratch.0.join("source");
    let source = archive::unpack(&upload, &source_dir, &limits).map_err(|e| {
        fail(
            log,
            format!("the package cannot be unpacked: {}", unpack_error(e)),
        )
    })?;
    let build_dir = scratch.0.join("build");
    archive::unpack(&upload, &build_dir, &limits).map_err(|e| {
        fail(
            log,
            format!("the package cannot be unpacked: {}", unpack_error(e)),
        )
    })?;
    let _ = fs::remove_dir_all(build_dir.join("lib"));

    let manifest_path = build_dir.join("Cargo.toml");
    let manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| fail(log, format!("the package has no readable Cargo.toml: {e}")))?;
    let (rewritten, names) =
        super::abi::rewrite_manifest(&manifest, &ctx.abi_crates).map_err(|e| fail(log, e))?;
    fs::write(&manifest_path, rewritten).map_err(|e| {
        fail(
            log,
            format!("cannot write {}: {e}", manifest_path.display()),
        )
    })?;
    if names.is_empty() {
        log.push("note: the package depends on neither cloacina-workflow nor cloacina-macros");
    } else {
        log.push(&format!(
            "dependencies built against the compiler's ABI crates: {}",
            names.join(", ")
        ));
    }

    let cargo = Cargo {
        program: ctx.cargo.clone(),
        clear_env: true,
        env: ctx.cargo_env.clone(),
        target_dir: Some(ctx.target_dir.clone()),
        color: Some(false),
    };
    fs::create_dir_all(&ctx.target_dir).map_err(|e| {
        fail(
            log,
            format!("cannot create {}: {e}", ctx.target_dir.display()),
        )
    })?;
    let _target_lock = lock_target(ctx, stop, started, log)?;
    log.push("running: cargo build --release");
    let limit = BuildLimit {
        timeout: Some(ctx.timeout.saturating_sub(started.elapsed())),
        stop: Some(stop.clone()),
    };
    let id = input.id;
    let mut each = |line: &str| {
        tracing::debug!(package_id = %id, "cargo: {line}");
        log.push(line);
    };
    let built = build::build_until(
        &build_dir,
        Profile::Release,
        &cargo,
        Stdio::null(),
        CargoLog::Lines(&mut each),
        &limit,
    );
    let built = match built {
        Ok(b) => b,
        Err(BuildError::Stopped { .. }) => {
            log.push("build stopped");
            return Err(JobError::Stopped);
        }
        Err(BuildError::TimedOut { after, .. }) => {
            return Err(fail(
                log,
                format!(
                    "the build took longer than {}s and was stopped (the compiler's --build-timeout-s)",
                    after.as_secs()
                ),
            ));
        }
        Err(BuildError::CargoFailed { status, .. }) => {
            let reason = match log.first_error() {
                Some(first) => format!("cargo build --release failed ({status}): {first}"),
                None => format!("cargo build --release failed ({status}); see the build log"),
            };
            return Err(fail(log, reason));
        }
        Err(BuildError::CargoMissing { cause }) => {
            return Err(fail(
                log,
                format!(
                    "the compiler cannot run cargo ({}): {cause}; install Rust on the compiler's host or pass --cargo",
                    ctx.cargo.to_string_lossy()
                ),
            ));
        }
        Err(e) => {
            let text = e
                .to_string()
                .replace(&build_dir.display().to_string(), "the package");
            return Err(fail(log, text));
        }
    };
    let Some(library) = built.library else {
        return Err(fail(
            log,
            "cargo built the package but its cdylib was not found in the target directory"
                .to_string(),
        ));
    };
    log.push(&format!("built {}", library.display()));

    let mut libraries: Vec<(String, PathBuf)> = source
        .libraries
        .iter()
        .filter(|(t, _)| t != HOST_TARGET)
        .cloned()
        .collect();
    libraries.push((HOST_TARGET.to_string(), library));
    let out = scratch.0.join(format!(
        "{}-{}.{}",
        input.name,
        input.version,
        archive::ARCHIVE_EXTENSION
    ));
    let packed = archive::pack(&source_dir, &libraries, &out)
        .map_err(|e| fail(log, format!("packing the built archive failed: {e}")))?;
    drop(_target_lock);
    log.push(&format!(
        "packed {} bytes, sha256 {}, targets {}",
        packed.size,
        packed.sha256,
        packed.targets.join(", ")
    ));
    let signature = match &ctx.signing_key {
        Some(key) => {
            let sig = signing::sign_archive(&out, key)
                .map_err(|e| fail(log, format!("signing the built archive failed: {e}")))?;
            log.push(&format!("signed with key {}", key.public_key().to_hex()));
            Some(
                fs::read(&sig)
                    .map_err(|e| fail(log, format!("cannot read {}: {e}", sig.display())))?,
            )
        }
        None => None,
    };
    let bytes =
        fs::read(&out).map_err(|e| fail(log, format!("cannot read {}: {e}", out.display())))?;
    log.push(&format!("done in {:.1}s", started.elapsed().as_secs_f64()));
    Ok(JobOutput {
        archive: bytes,
        signature,
        sha256: packed.sha256,
    })
}

/// Takes the shared target directory's lock, waiting (while not stopped and within the
/// build's time) for a compiler that holds it.
fn lock_target(
    ctx: &JobContext,
    stop: &AtomicBool,
    started: Instant,
    log: &mut BuildLog,
) -> Result<fs::File, JobError> {
    let path = ctx.target_dir.join(".cloacina-compiler.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            let message = format!("cannot open {}: {e}", path.display());
            log.push(&format!("build failed: {message}"));
            JobError::Failed(message)
        })?;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => {
                let message = format!("cannot lock {}: {e}", path.display());
                log.push(&format!("build failed: {message}"));
                return Err(JobError::Failed(message));
            }
        }
        if !said {
            log.push("waiting for another build in the shared target directory");
            said = true;
        }
        if stop.load(Ordering::SeqCst) {
            return Err(JobError::Stopped);
        }
        if started.elapsed() >= ctx.timeout {
            let message = format!(
                "the build waited {}s for the shared target directory {} and was stopped (the compiler's --build-timeout-s)",
                ctx.timeout.as_secs(),
                ctx.target_dir.display()
            );
            log.push(&format!("build failed: {message}"));
            return Err(JobError::Failed(message));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The environment cargo runs with: only `PATH`, `HOME`, the Rust toolchain's own variables
/// and `TMPDIR` from `vars` (the compiler's environment), plus the `extra` names an operator
/// allows; never a database URL or a Cloacina setting (`DATABASE_URL`, `CLOACINA_*`, which
/// are refused by name). Package build scripts and proc macros run arbitrary code: nothing
/// they could read from their environment may be a secret of the compiler's.
pub fn cargo_environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[String],
) -> Result<Vec<(OsString, OsString)>, String> {
    const ALLOWED: [&str; 6] = [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
    ];
    for name in extra {
        let upper = name.to_ascii_uppercase();
        if upper == "DATABASE_URL" || upper.starts_with("CLOACINA_") {
            return Err(format!(
                "--pass-env {name}: the compiler never passes its database URL or Cloacina settings to builds"
            ));
        }
        if name.is_empty() || name.contains('=') {
            return Err(format!("--pass-env '{name}' is not a variable name"));
        }
    }
    let mut out: Vec<(OsString, OsString)> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| ALLOWED.contains(&k) || extra.iter().any(|e| e == k))
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn cargo_gets_no_secret() {
        let vars = os(&[
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("DATABASE_URL", "postgres://u:secret@h/db"),
            ("CLOACINA_BOOTSTRAP_KEY", "clk_x"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("RUSTUP_TOOLCHAIN", "stable"),
            ("HTTPS_PROXY", "http://p"),
        ]);
        let env = cargo_environment(vars.clone(), &[]).expect("env");
        assert_eq!(
            env,
            os(&[
                ("HOME", "/root"),
                ("PATH", "/bin"),
                ("RUSTUP_TOOLCHAIN", "stable")
            ])
        );
        let env = cargo_environment(vars.clone(), &["HTTPS_PROXY".to_string()]).expect("env");
        assert!(env.contains(&(OsString::from("HTTPS_PROXY"), OsString::from("http://p"))));
        for refused in [
            "DATABASE_URL",
            "database_url",
            "CLOACINA_BOOTSTRAP_KEY",
            "A=B",
            "",
        ] {
            assert!(
                cargo_environment(vars.clone(), &[refused.to_string()]).is_err(),
                "{refused}"
            );
        }
    }
}
