//! `cloacinactl package ...`: new, build, pack, keygen, verify. All local; none of them
//! contacts a server.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use cloacina::package::archive::{self, HOST_TARGET};
use cloacina::package::manifest::{Manifest, ManifestError};
use cloacina::package::signing::{self, PublicKey};
use serde_json::json;

use super::scaffold;
use crate::cli::{
    BuildArgs, KeygenArgs, NewArgs, OutputFormat, PackArgs, PackageCommand, VerifyArgs,
};
use crate::error::CliError;
use crate::output::{Report, emit, fields, good};
use crate::progress::Spinner;
use crate::settings::{Settings, expand_tilde};

pub fn run(settings: &Settings, command: &PackageCommand) -> Result<(), CliError> {
    match command {
        PackageCommand::New(args) => new(settings, args),
        PackageCommand::Build(args) => build(settings, args),
        PackageCommand::Pack(args) => pack(settings, args),
        PackageCommand::Keygen(args) => keygen(settings, args),
        PackageCommand::Verify(args) => verify(settings, args),
    }
}

// ---------------------------------------------------------------------------------------------
// new

fn new(settings: &Settings, args: &NewArgs) -> Result<(), CliError> {
    let name = args.name.as_str();
    let package_toml = scaffold::package_toml(name);
    match Manifest::parse(&package_toml, "package.toml") {
        Ok(_) => {}
        Err(ManifestError::Invalid { message, .. }) => {
            return Err(CliError::User(format!("invalid package name: {message}")));
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(why) = scaffold::reserved_name(name) {
        return Err(CliError::User(format!(
            "invalid package name: '{name}' cannot be used because {why}; choose another name"
        )));
    }
    let dir = PathBuf::from(name);
    if fs::symlink_metadata(&dir).is_ok() {
        return Err(CliError::User(format!(
            "./{name} already exists; choose another name or remove it first"
        )));
    }
    let (workflow, macros) = scaffold::crate_paths()?;

    fs::create_dir(&dir).map_err(|e| CliError::io("create directory", &dir, &e))?;
    let written = write_scaffold(&dir, name, &package_toml, &workflow, &macros);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }

    let shown = format!("./{name}");
    emit(
        settings,
        &Report {
            id: shown.clone(),
            value: json!({
                "name": name,
                "version": "0.1.0",
                "path": shown,
                "files": ["Cargo.toml", "package.toml", "src/lib.rs", ".gitignore"],
            }),
            text: format!(
                "{} package '{name}' in {shown}\n\nNext:\n  cloacinactl package build {name}\n  cloacinactl package pack {name}\n",
                good(settings, "Created")
            ),
        },
    )
}

fn write_scaffold(
    dir: &Path,
    name: &str,
    package_toml: &str,
    workflow: &Path,
    macros: &Path,
) -> Result<(), CliError> {
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        fs::write(&path, text).map_err(|e| CliError::io("write", &path, &e))
    };
    write("Cargo.toml", &scaffold::cargo_toml(name, workflow, macros))?;
    write("package.toml", package_toml)?;
    write(".gitignore", scaffold::GITIGNORE)?;
    let src = dir.join("src");
    fs::create_dir(&src).map_err(|e| CliError::io("create directory", &src, &e))?;
    write("src/lib.rs", scaffold::LIB_RS)?;
    // Start from the versions this checkout is tested with (and has downloaded): cargo
    // drops the entries the package does not need on its first build.
    let lock = scaffold::workspace_root().join("Cargo.lock");
    if lock.is_file() {
        let target = dir.join("Cargo.lock");
        fs::copy(&lock, &target).map_err(|e| CliError::io("write", &target, &e))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared: package directories, cargo

/// Checks that `dir` is a package directory and returns its manifest.
fn package_dir(dir: &Path) -> Result<Manifest, CliError> {
    if !dir.is_dir() {
        return Err(CliError::User(format!(
            "package directory {} not found; create one with 'cloacinactl package new NAME'",
            dir.display()
        )));
    }
    for file in ["Cargo.toml", "package.toml"] {
        if !dir.join(file).is_file() {
            return Err(CliError::User(format!(
                "{} has no {file}; a package directory needs both Cargo.toml and package.toml (create one with 'cloacinactl package new NAME')",
                dir.display()
            )));
        }
    }
    Ok(Manifest::from_dir(dir)?)
}

/// The cargo to run: the one that is running us (`$CARGO`) or `cargo` from `PATH`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

fn cargo_missing(e: &std::io::Error) -> CliError {
    CliError::User(format!(
        "cannot run cargo: {e}; install Rust (https://rustup.rs) or put cargo on your PATH"
    ))
}

/// Where cargo puts a package's library.
#[derive(Debug)]
struct LibraryTarget {
    package: String,
    target_dir: PathBuf,
    file_name: String,
}

impl LibraryTarget {
    fn path(&self, profile: &str) -> PathBuf {
        self.target_dir.join(profile).join(&self.file_name)
    }

    /// The library of the last build, release preferred over debug.
    fn built(&self) -> Option<(&'static str, PathBuf)> {
        ["release", "debug"]
            .into_iter()
            .map(|p| (p, self.path(p)))
            .find(|(_, path)| path.is_file())
    }
}

/// Asks `cargo metadata` for the target directory and the `cdylib` target of `dir`.
fn library_target(dir: &Path) -> Result<LibraryTarget, CliError> {
    let output = Command::new(cargo())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| cargo_missing(&e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(CliError::User(format!(
            "cannot read the Cargo metadata of {} ({}): {}",
            dir.display(),
            output.status,
            stderr.trim()
        )));
    }
    let bad = |what: &str| {
        CliError::User(format!(
            "unexpected output from 'cargo metadata' in {}: {what}",
            dir.display()
        ))
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
        return Err(CliError::User(format!(
            "package '{name}' in {} does not build a dynamic library; add [lib] crate-type = [\"cdylib\"] to its Cargo.toml",
            dir.display()
        )));
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

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest of the files a build depends on (`src/**`, `Cargo.toml`, `build.rs`).
fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
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

// ---------------------------------------------------------------------------------------------
// build

fn build(settings: &Settings, args: &BuildArgs) -> Result<(), CliError> {
    let manifest = package_dir(&args.dir)?;
    let profile = if args.release { "release" } else { "debug" };
    let dir_shown = args.dir.display().to_string();

    let mut cmd = Command::new(cargo());
    cmd.arg("build").current_dir(&args.dir).stdin(Stdio::null());
    if args.release {
        cmd.arg("--release");
    }
    // Our stdout is for results: cargo's stdout goes to stderr with its diagnostics.
    cmd.stdout(stderr_as_stdio());
    tracing::debug!(?cmd, "running cargo");

    let spinner = Spinner::start(
        settings.progress,
        format!(
            "Building {} {} ({profile})",
            manifest.name(),
            manifest.version()
        ),
    );
    let status = if settings.progress {
        // On a terminal: cargo's lines scroll above the spinner, in colour if allowed.
        cmd.args([
            "--color",
            if settings.color_stderr {
                "always"
            } else {
                "never"
            },
        ]);
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| cargo_missing(&e))?;
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                spinner.println(&line);
                let trimmed = line.trim();
                if !trimmed.is_empty() {
                    spinner.set_message(format!(
                        "Building {} ({profile}): {trimmed}",
                        manifest.name()
                    ));
                }
            }
        }
        child.wait().map_err(|e| cargo_missing(&e))?
    } else {
        cmd.stderr(Stdio::inherit());
        cmd.status().map_err(|e| cargo_missing(&e))?
    };
    spinner.finish();
    if !status.success() {
        return Err(CliError::User(format!(
            "cargo build failed for package '{}' in {dir_shown} ({status}); fix the errors shown above and run 'cloacinactl package build {dir_shown}' again",
            manifest.name()
        )));
    }

    let library = library_target(&args.dir)
        .ok()
        .map(|t| t.path(profile))
        .filter(|p| p.is_file());
    let library_shown = library.as_ref().map(|p| p.display().to_string());
    let mut rows = vec![("profile", profile.to_string())];
    if let Some(lib) = &library_shown {
        rows.push(("library", lib.clone()));
    }
    emit(
        settings,
        &Report {
            id: library_shown
                .clone()
                .unwrap_or_else(|| manifest.name().to_string()),
            value: json!({
                "name": manifest.name(),
                "version": manifest.version(),
                "profile": profile,
                "library": library_shown,
            }),
            text: format!(
                "{} {} {}\n{}\nNext: cloacinactl package pack {dir_shown}\n",
                good(settings, "Built"),
                manifest.name(),
                manifest.version(),
                fields(&rows)
            ),
        },
    )
}

/// A handle on our stderr for a child's stdout (inherit where that is not possible).
fn stderr_as_stdio() -> Stdio {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            return Stdio::from(fd);
        }
    }
    Stdio::inherit()
}

// ---------------------------------------------------------------------------------------------
// pack

fn pack(settings: &Settings, args: &PackArgs) -> Result<(), CliError> {
    if let Some(out) = &args.out
        && let Some(format) = out
            .to_str()
            .filter(|o| <OutputFormat as clap::ValueEnum>::from_str(o, false).is_ok())
    {
        return Err(CliError::Usage(format!(
            "after 'package pack', -o names the archive FILE, not the output format; use --output {format} (or put -o {format} before 'package'), or name the file {format}.cloacina"
        )));
    }
    let manifest = package_dir(&args.dir)?;
    let dir_shown = args.dir.display().to_string();
    let key = match &args.sign {
        Some(k) => Some(signing::load_signing_key(&expand_tilde(k)?)?),
        None => None,
    };

    let spinner = Spinner::start(
        settings.progress,
        format!("Packing {} {}", manifest.name(), manifest.version()),
    );
    let target = library_target(&args.dir)?;
    let Some((profile, library)) = target.built() else {
        return Err(CliError::User(format!(
            "no build of package '{}' found (looked for {} and {}); run 'cloacinactl package build {dir_shown}' first",
            target.package,
            target.path("release").display(),
            target.path("debug").display()
        )));
    };
    if let (Some(built), Some((changed, source))) = (modified(&library), newest_source(&args.dir))
        && changed > built
    {
        spinner.println(&format!(
            "warning: {} is older than {}; run 'cloacinactl package build {dir_shown}{}' to pack your latest changes",
            library.display(),
            source.display(),
            if profile == "release" {
                " --release"
            } else {
                ""
            }
        ));
    }
    tracing::debug!(library = %library.display(), profile, "packing");

    let out = match &args.out {
        Some(o) => expand_tilde(o)?,
        None => PathBuf::from(format!(
            "{}-{}.{}",
            manifest.name(),
            manifest.version(),
            archive::ARCHIVE_EXTENSION
        )),
    };
    let packed = archive::pack(
        &args.dir,
        &[(HOST_TARGET.to_string(), library.clone())],
        &out,
    )?;

    let sig_path = signing::signature_path(&out);
    let signature = match &key {
        Some(key) => Some(signing::sign_archive(&out, key)?),
        None => {
            remove_stale_signature(&sig_path, &packed.sha256, &spinner);
            None
        }
    };
    spinner.finish();

    let path_shown = packed.path.display().to_string();
    let sig_shown = signature.as_ref().map(|s| s.display().to_string());
    let public_key = key.as_ref().map(|k| k.public_key().to_hex());
    let mut rows = vec![
        ("path", path_shown.clone()),
        ("size", format!("{} bytes", packed.size)),
        ("sha256", packed.sha256.clone()),
        ("library", format!("{HOST_TARGET} ({profile} build)")),
    ];
    match (&sig_shown, &public_key) {
        (Some(s), Some(k)) => rows.push(("signature", format!("{s} (key {k})"))),
        _ => rows.push(("signature", "none (sign with --sign KEYFILE)".to_string())),
    }
    emit(
        settings,
        &Report {
            id: path_shown.clone(),
            value: json!({
                "path": path_shown,
                "size": packed.size,
                "sha256": packed.sha256,
                "name": packed.name,
                "version": packed.version,
                "targets": packed.targets,
                "profile": profile,
                "library": library.display().to_string(),
                "signature": sig_shown,
                "public_key": public_key,
            }),
            text: format!(
                "{} {} {}\n{}",
                good(settings, "Packed"),
                packed.name,
                packed.version,
                fields(&rows)
            ),
        },
    )
}

/// Without `--sign`, an old side-car beside the archive no longer matches it: remove it so
/// nobody mistakes it for a signature of the new archive.
fn remove_stale_signature(sig_path: &Path, sha256: &str, spinner: &Spinner) {
    // Bounded: whatever sits at that path (a FIFO, a link to /dev/zero) is never read whole.
    let Ok(Some(text)) = signing::read_sidecar_text(sig_path) else {
        return;
    };
    let still_valid = serde_json::from_str::<signing::Sidecar>(&text)
        .is_ok_and(|s| s.sha256.eq_ignore_ascii_case(sha256));
    if !still_valid && fs::remove_file(sig_path).is_ok() {
        spinner.println(&format!(
            "note: removed {}, which signed an earlier version of the archive",
            sig_path.display()
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// keygen, verify

fn keygen(settings: &Settings, args: &KeygenArgs) -> Result<(), CliError> {
    let keyfile = expand_tilde(&args.keyfile)?;
    let info = signing::generate_keypair(&keyfile)?;
    let private = info.private_key_path.display().to_string();
    let public = info.public_key_path.display().to_string();
    let hex = info.public_key.to_hex();
    emit(
        settings,
        &Report {
            id: hex.clone(),
            value: json!({
                "private_key_file": private,
                "public_key_file": public,
                "public_key": hex,
                "algorithm": signing::ALGORITHM,
            }),
            text: format!(
                "{} an Ed25519 key pair\n{}\nKeep {private} secret; sign with 'cloacinactl package pack DIR --sign {private}'.\nGive {public} to whoever verifies your packages: 'cloacinactl package verify FILE --key {public}'.\n",
                good(settings, "Generated"),
                fields(&[
                    ("private key", format!("{private} (mode 0600)")),
                    ("public key", public.clone()),
                    ("fingerprint", hex.clone()),
                ])
            ),
        },
    )
}

fn verify(settings: &Settings, args: &VerifyArgs) -> Result<(), CliError> {
    let keys = args
        .keys
        .iter()
        .map(|k| signing::load_public_key(&expand_tilde(k)?).map_err(CliError::from))
        .collect::<Result<Vec<PublicKey>, CliError>>()?;
    let verified = signing::verify_archive(&args.file, &keys)?;
    let archive = args.file.display().to_string();
    let sig = verified.signature_path.display().to_string();
    emit(
        settings,
        &Report {
            id: verified.sha256.clone(),
            value: json!({
                "archive": archive,
                "signature": sig,
                "sha256": verified.sha256,
                "public_key": verified.public_key.to_hex(),
                "valid": true,
            }),
            text: format!(
                "{} {archive} is signed by a trusted key\n{}",
                good(settings, "Verified:"),
                fields(&[
                    ("signature", sig.clone()),
                    ("sha256", verified.sha256.clone()),
                    ("key", verified.public_key.to_hex()),
                ])
            ),
        },
    )
}
