//! Building and packing a package from its source directory: `cargo build`, finding the
//! `cdylib` through `cargo metadata`, noticing a build older than its sources, and packing (and
//! signing) the archive. `cloacinactl package build|pack` and the compiler service share these
//! rules; they only choose how cargo runs ([`Cargo`]: program, environment, target directory)
//! and where its output goes.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::archive::{self, ArchiveError, HOST_TARGET, PackedArchive};
use super::manifest::{Manifest, ManifestError};
use super::signing::{self, PrivateKey, PublicKey, SignatureError};

/// Why a package could not be built or packed. Messages name the directory and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("package directory {dir} not found; create one with 'cloacinactl package new NAME'")]
    NoDirectory { dir: String },
    #[error(
        "{dir} has no {file}; a package directory needs both Cargo.toml and package.toml (create one with 'cloacinactl package new NAME')"
    )]
    MissingFile { dir: String, file: &'static str },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "cannot run cargo: {cause}; install Rust (https://rustup.rs) or put cargo on your PATH"
    )]
    CargoMissing { cause: std::io::Error },
    #[error("cannot read the Cargo metadata of {dir} ({status}): {stderr}")]
    Metadata {
        dir: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("unexpected output from 'cargo metadata' in {dir}: {problem}")]
    MetadataOutput { dir: String, problem: String },
    #[error(
        "package '{package}' in {dir} does not build a dynamic library; add [lib] crate-type = [\"cdylib\"] to its Cargo.toml"
    )]
    NotADynamicLibrary { package: String, dir: String },
    #[error(
        "cargo build failed for package '{package}' in {dir} ({status}); fix the errors shown above and run 'cloacinactl package build {dir}' again"
    )]
    CargoFailed {
        package: String,
        dir: String,
        status: ExitStatus,
    },
    #[error(
        "no build of package '{package}' found (looked for {} and {}); run 'cloacinactl package build {dir}' first",
        release.display(), debug.display()
    )]
    NoBuild {
        package: String,
        dir: String,
        release: PathBuf,
        debug: PathBuf,
    },
    #[error(
        "cargo build of package '{package}' in {dir} took longer than {}s and was stopped",
        after.as_secs()
    )]
    TimedOut {
        package: String,
        dir: String,
        after: Duration,
    },
    #[error("cargo build of package '{package}' in {dir} was stopped before it finished")]
    Stopped { package: String, dir: String },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// How cargo is run. The default is the caller's own environment and `$CARGO` (or `cargo`
/// from `PATH`); a build service clears the environment so its secrets never reach a build
/// script, and gives each build its own target directory.
#[derive(Debug, Clone)]
pub struct Cargo {
    pub program: OsString,
    /// Start cargo with an empty environment (then give it at least `PATH`, and `HOME` or
    /// `RUSTUP_HOME`/`CARGO_HOME`, through `env`).
    pub clear_env: bool,
    /// Variables set for cargo, after clearing when `clear_env`.
    pub env: Vec<(OsString, OsString)>,
    /// Where cargo builds (`CARGO_TARGET_DIR`); `None`: the package's own setting.
    pub target_dir: Option<PathBuf>,
    /// `--color always|never` for `cargo build`; `None`: cargo decides.
    pub color: Option<bool>,
}

impl Default for Cargo {
    fn default() -> Self {
        Cargo {
            program: std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")),
            clear_env: false,
            env: Vec::new(),
            target_dir: None,
            color: None,
        }
    }
}

impl Cargo {
    /// `cargo` in `dir` with this environment, stdin closed.
    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(dir).stdin(Stdio::null());
        if self.clear_env {
            cmd.env_clear();
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(t) = &self.target_dir {
            cmd.env("CARGO_TARGET_DIR", t);
        }
        cmd
    }
}

/// The cargo profile of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    /// The profile's directory under the target directory (`debug`, `release`).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// Checks that `dir` is a package directory (`Cargo.toml` and a valid `package.toml`) and
/// returns its manifest.
pub fn package_dir(dir: &Path) -> Result<Manifest, BuildError> {
    if !dir.is_dir() {
        return Err(BuildError::NoDirectory {
            dir: dir.display().to_string(),
        });
    }
    for file in ["Cargo.toml", "package.toml"] {
        if !dir.join(file).is_file() {
            return Err(BuildError::MissingFile {
                dir: dir.display().to_string(),
                file,
            });
        }
    }
    Ok(Manifest::from_dir(dir)?)
}

/// Where cargo puts a package's library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryTarget {
    /// The Cargo package name.
    pub package: String,
    pub target_dir: PathBuf,
    /// `lib<crate>.so` (or the platform's equivalent).
    pub file_name: String,
}

impl LibraryTarget {
    pub fn path(&self, profile: Profile) -> PathBuf {
        self.target_dir.join(profile.as_str()).join(&self.file_name)
    }

    /// The library of the last build, release preferred over debug.
    pub fn built(&self) -> Option<(Profile, PathBuf)> {
        [Profile::Release, Profile::Debug]
            .into_iter()
            .map(|p| (p, self.path(p)))
            .find(|(_, path)| path.is_file())
    }
}

/// Asks `cargo metadata` for the target directory and the `cdylib` target of `dir`.
pub fn library_target(dir: &Path, cargo: &Cargo) -> Result<LibraryTarget, BuildError> {
    let shown = dir.display().to_string();
    let output = cargo
        .command(dir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|cause| BuildError::CargoMissing { cause })?;
    if !output.status.success() {
        return Err(BuildError::Metadata {
            dir: shown,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let bad = |problem: &str| BuildError::MetadataOutput {
        dir: shown.clone(),
        problem: problem.to_string(),
    };
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| bad(&e.to_string()))?;
    let target_dir = meta["target_directory"]
        .as_str()
        .ok_or_else(|| bad("no target_directory"))?;
    let packages = meta["packages"]
        .as_array()
        .ok_or_else(|| bad("no packages"))?;
    let manifest = fs::canonicalize(dir.join("Cargo.toml")).ok();
    let package = packages
        .iter()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| fs::canonicalize(m).ok())
                == manifest
        })
        .or(if packages.len() == 1 {
            packages.first()
        } else {
            None
        })
        .ok_or_else(|| bad("the package itself is not listed"))?;
    let name = package["name"].as_str().unwrap_or_default().to_string();
    let lib = package["targets"].as_array().and_then(|targets| {
        targets.iter().find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == "cdylib"))
        })
    });
    let Some(lib) = lib else {
        return Err(BuildError::NotADynamicLibrary {
            package: name,
            dir: shown,
        });
    };
    let file_name = archive::library_file_name(lib["name"].as_str().unwrap_or(&name));
    let target = LibraryTarget {
        package: name,
        target_dir: PathBuf::from(target_dir),
        file_name,
    };
    tracing::debug!(?target, "cargo metadata");
    Ok(target)
}

/// Where cargo's diagnostics (its stderr) go during [`build`].
pub enum CargoLog<'a> {
    /// Straight to this handle (e.g. the caller's stderr).
    To(Stdio),
    /// Line by line to this function, as they come (a progress display, a build log).
    Lines(&'a mut dyn FnMut(&str)),
}

/// What [`build`] produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Manifest,
    pub profile: Profile,
    /// The library, when `cargo metadata` could name it after the build.
    pub library: Option<PathBuf>,
}

/// Bounds on a build that a service puts on it ([`build_until`]): a time limit, and a flag
/// another thread sets to stop it. Either kills cargo and everything it started.
#[derive(Debug, Clone, Default)]
pub struct BuildLimit {
    pub timeout: Option<Duration>,
    pub stop: Option<Arc<AtomicBool>>,
}

impl BuildLimit {
    fn is_set(&self) -> bool {
        self.timeout.is_some() || self.stop.is_some()
    }
}

/// Why a watched build was ended early.
enum Ended {
    TimedOut(Duration),
    Stopped,
}

/// Runs `cargo build` (`--release` for [`Profile::Release`]) in the package directory `dir`.
/// Cargo's stdout goes to `stdout`, its diagnostics to `log`.
pub fn build(
    dir: &Path,
    profile: Profile,
    cargo: &Cargo,
    stdout: Stdio,
    log: CargoLog<'_>,
) -> Result<Built, BuildError> {
    build_until(dir, profile, cargo, stdout, log, &BuildLimit::default())
}

/// [`build`] within `limit`: past its timeout, or once its stop flag is set, cargo and every
/// process it started (compilers, build scripts, in a process group of their own) are killed
/// and the build ends with [`BuildError::TimedOut`] or [`BuildError::Stopped`]. Without a
/// limit cargo stays in the caller's process group, so a terminal's Ctrl-C reaches it.
pub fn build_until(
    dir: &Path,
    profile: Profile,
    cargo: &Cargo,
    stdout: Stdio,
    log: CargoLog<'_>,
    limit: &BuildLimit,
) -> Result<Built, BuildError> {
    use std::os::unix::process::CommandExt;
    let manifest = package_dir(dir)?;
    let mut cmd = cargo.command(dir);
    if limit.is_set() {
        cmd.process_group(0);
    }
    cmd.arg("build");
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    if let Some(color) = cargo.color {
        cmd.args(["--color", if color { "always" } else { "never" }]);
    }
    cmd.stdout(stdout);
    tracing::debug!(?cmd, "running cargo");
    let missing = |cause| BuildError::CargoMissing { cause };
    let (status, ended) = match log {
        CargoLog::To(stderr) => {
            cmd.stderr(stderr);
            let mut child = cmd.spawn().map_err(missing)?;
            watched(&mut child, limit, |_| {}).map_err(missing)?
        }
        CargoLog::Lines(each) => {
            cmd.stderr(Stdio::piped());
            let mut child = cmd.spawn().map_err(missing)?;
            watched(&mut child, limit, |child| {
                if let Some(stderr) = child.stderr.take() {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        each(&line);
                    }
                }
            })
            .map_err(missing)?
        }
    };
    match ended {
        Some(Ended::TimedOut(after)) => {
            return Err(BuildError::TimedOut {
                package: manifest.name().to_string(),
                dir: dir.display().to_string(),
                after,
            });
        }
        Some(Ended::Stopped) => {
            return Err(BuildError::Stopped {
                package: manifest.name().to_string(),
                dir: dir.display().to_string(),
            });
        }
        None => {}
    }
    if !status.success() {
        return Err(BuildError::CargoFailed {
            package: manifest.name().to_string(),
            dir: dir.display().to_string(),
            status,
        });
    }
    // The build succeeded: a library that cannot be named is reported as absent, not an error.
    let library = library_target(dir, cargo)
        .ok()
        .map(|t| t.path(profile))
        .filter(|p| p.is_file());
    Ok(Built {
        manifest,
        profile,
        library,
    })
}

/// Runs `read` on the started `child` (reading its output until it closes), then waits for
/// it; with a `limit`, a watchdog thread meanwhile kills the child's process group once the
/// time is up or the stop flag is set, and says so.
fn watched(
    child: &mut Child,
    limit: &BuildLimit,
    read: impl FnOnce(&mut Child),
) -> std::io::Result<(ExitStatus, Option<Ended>)> {
    if !limit.is_set() {
        read(child);
        return child.wait().map(|s| (s, None));
    }
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let started = Instant::now();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let watchdog = scope.spawn(move || {
            loop {
                match finished.recv_timeout(Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return None,
                }
                let ended = match (&limit.timeout, &limit.stop) {
                    (Some(t), _) if started.elapsed() >= *t => Some(Ended::TimedOut(*t)),
                    (_, Some(stop)) if stop.load(Ordering::SeqCst) => Some(Ended::Stopped),
                    _ => None,
                };
                if ended.is_some() {
                    // The whole group: rustc, build scripts and linkers die with cargo, and
                    // the output pipe closes.
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                    return ended;
                }
            }
        });
        read(child);
        let status = child.wait();
        drop(done);
        let ended = watchdog.join().unwrap_or(None);
        status.map(|s| (s, ended))
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest of the files a build depends on (`src/**`, `Cargo.toml`, `build.rs`).
pub fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    fn walk(dir: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, best);
            } else if let Some(t) = modified(&path)
                && best.as_ref().is_none_or(|(b, _)| t > *b)
            {
                *best = Some((t, path));
            }
        }
    }
    let mut best = None;
    walk(&dir.join("src"), &mut best);
    for file in ["Cargo.toml", "build.rs"] {
        let path = dir.join(file);
        if let Some(t) = modified(&path)
            && best.as_ref().is_none_or(|(b, _)| t > *b)
        {
            best = Some((t, path));
        }
    }
    best
}

/// The source file changed after `library` was built, if any: packing it would not pack the
/// latest changes.
pub fn stale_source(dir: &Path, library: &Path) -> Option<PathBuf> {
    match (modified(library), newest_source(dir)) {
        (Some(built), Some((changed, source))) if changed > built => Some(source),
        _ => None,
    }
}

/// `<name>-<version>.cloacina`, the archive's default file name.
pub fn archive_file_name(manifest: &Manifest) -> String {
    format!(
        "{}-{}.{}",
        manifest.name(),
        manifest.version(),
        archive::ARCHIVE_EXTENSION
    )
}

/// Something [`pack`] noticed that does not stop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackNote {
    /// The library packed is older than this source file.
    Stale {
        library: PathBuf,
        source: PathBuf,
        profile: Profile,
        dir: String,
    },
    /// A side-car that signed an earlier version of the archive was removed.
    RemovedStaleSignature(PathBuf),
}

impl std::fmt::Display for PackNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackNote::Stale {
                library,
                source,
                profile,
                dir,
            } => write!(
                f,
                "warning: {} is older than {}; run 'cloacinactl package build {dir}{}' to pack your latest changes",
                library.display(),
                source.display(),
                if *profile == Profile::Release {
                    " --release"
                } else {
                    ""
                }
            ),
            PackNote::RemovedStaleSignature(sig) => write!(
                f,
                "note: removed {}, which signed an earlier version of the archive",
                sig.display()
            ),
        }
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone)]
pub struct Packed {
    pub archive: PackedArchive,
    pub profile: Profile,
    /// The library packed for the host target.
    pub library: PathBuf,
    /// The side-car written, with the key's public half, when a key was given.
    pub signature: Option<(PathBuf, PublicKey)>,
}

/// Packs the last build of the package in `dir` (release preferred) for the host target into
/// `out`, signed with `key` when given; without a key, a side-car left beside `out` that does
/// not sign the new archive is removed. `notes` hears what does not stop the pack.
pub fn pack(
    dir: &Path,
    out: &Path,
    key: Option<&PrivateKey>,
    cargo: &Cargo,
    notes: &mut dyn FnMut(PackNote),
) -> Result<Packed, BuildError> {
    package_dir(dir)?;
    let shown = dir.display().to_string();
    let target = library_target(dir, cargo)?;
    let Some((profile, library)) = target.built() else {
        return Err(BuildError::NoBuild {
            package: target.package.clone(),
            dir: shown,
            release: target.path(Profile::Release),
            debug: target.path(Profile::Debug),
        });
    };
    if let Some(source) = stale_source(dir, &library) {
        notes(PackNote::Stale {
            library: library.clone(),
            source,
            profile,
            dir: shown.clone(),
        });
    }
    tracing::debug!(library = %library.display(), profile = profile.as_str(), "packing");
    let packed = archive::pack(dir, &[(HOST_TARGET.to_string(), library.clone())], out)?;
    let signature = match key {
        Some(key) => Some((signing::sign_archive(out, key)?, key.public_key())),
        None => {
            let sig = signing::signature_path(out);
            if remove_stale_signature(&sig, &packed.sha256) {
                notes(PackNote::RemovedStaleSignature(sig));
            }
            None
        }
    };
    Ok(Packed {
        archive: packed,
        profile,
        library,
        signature,
    })
}

/// An old side-car beside a new unsigned archive no longer matches it: removed so nobody
/// mistakes it for a signature of the new archive. Returns whether one was removed.
fn remove_stale_signature(sig_path: &Path, sha256: &str) -> bool {
    // Bounded: whatever sits at that path (a FIFO, a link to /dev/zero) is never read whole.
    let Ok(Some(text)) = signing::read_sidecar_text(sig_path) else {
        return false;
    };
    let still_valid = serde_json::from_str::<signing::Sidecar>(&text)
        .is_ok_and(|s| s.sha256.eq_ignore_ascii_case(sha256));
    !still_valid && fs::remove_file(sig_path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_dir_names_what_is_missing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let missing = tmp.path().join("nowhere");
        assert!(matches!(
            package_dir(&missing),
            Err(BuildError::NoDirectory { .. })
        ));
        fs::write(tmp.path().join("package.toml"), "").expect("write");
        let err = package_dir(tmp.path()).expect_err("no Cargo.toml");
        assert!(
            matches!(
                err,
                BuildError::MissingFile {
                    file: "Cargo.toml",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_source_newer_than_the_library_is_stale() {
        let tmp = tempfile::tempdir().expect("tmp");
        let lib = tmp.path().join("lib.so");
        fs::create_dir(tmp.path().join("src")).expect("mkdir");
        fs::write(tmp.path().join("src/lib.rs"), "").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&lib, "").expect("write");
        assert_eq!(stale_source(tmp.path(), &lib), None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(tmp.path().join("src/lib.rs"), "// changed").expect("write");
        assert_eq!(
            stale_source(tmp.path(), &lib),
            Some(tmp.path().join("src/lib.rs"))
        );
    }

    /// A package directory whose "cargo" is `sh` running the script `build` in it (the build
    /// step runs `<program> build --release`), which starts a long sleep in the background.
    fn sleeping_package() -> (tempfile::TempDir, Cargo) {
        let tmp = tempfile::tempdir().expect("tmp");
        fs::write(
            tmp.path().join("Cargo.toml"),
            "[package]\nname = \"p\"\nversion = \"1.0.0\"\n",
        )
        .expect("write");
        fs::write(
            tmp.path().join("package.toml"),
            "[package]\nname = \"p\"\nversion = \"1.0.0\"\n",
        )
        .expect("write");
        fs::write(
            tmp.path().join("build"),
            "sleep 30 &\necho started >&2\nwait\n",
        )
        .expect("write");
        let cargo = Cargo {
            program: OsString::from("sh"),
            ..Cargo::default()
        };
        (tmp, cargo)
    }

    #[test]
    fn a_limited_build_is_killed_with_everything_it_started() {
        let (tmp, cargo) = sleeping_package();
        let started = Instant::now();
        let mut lines = Vec::new();
        let e = build_until(
            tmp.path(),
            Profile::Release,
            &cargo,
            Stdio::null(),
            CargoLog::Lines(&mut |l: &str| lines.push(l.to_string())),
            &BuildLimit {
                timeout: Some(Duration::from_millis(300)),
                stop: None,
            },
        )
        .expect_err("timed out");
        assert!(matches!(e, BuildError::TimedOut { .. }), "{e}");
        assert!(e.to_string().contains("took longer than 0s"), "{e}");
        // The background sleep held the output pipe: it was killed too.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(lines, ["started"]);

        let stop = Arc::new(AtomicBool::new(false));
        let setter = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            setter.store(true, Ordering::SeqCst);
        });
        let e = build_until(
            tmp.path(),
            Profile::Release,
            &cargo,
            Stdio::null(),
            CargoLog::To(Stdio::null()),
            &BuildLimit {
                timeout: Some(Duration::from_secs(60)),
                stop: Some(stop),
            },
        )
        .expect_err("stopped");
        t.join().expect("setter");
        assert!(matches!(e, BuildError::Stopped { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn cargo_runs_with_the_environment_it_is_given() {
        let cargo = Cargo {
            program: OsString::from("env"),
            clear_env: true,
            env: vec![(OsString::from("ONLY"), OsString::from("this"))],
            target_dir: Some(PathBuf::from("/t")),
            color: None,
        };
        let out = cargo.command(Path::new("/")).output().expect("run env");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut vars: Vec<&str> = text.lines().collect();
        vars.sort();
        assert_eq!(vars, ["CARGO_TARGET_DIR=/t", "ONLY=this"]);
    }
}
