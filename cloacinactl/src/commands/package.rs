//! `cloacinactl package ...`: new, build, pack, keygen, verify. All local; none of them
//! contacts a server. The build and pack rules live in `cloacina::package::build`; this
//! module parses, shows progress and prints.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cloacina::package::archive::HOST_TARGET;
use cloacina::package::build::{self, Cargo, CargoLog, Profile};
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
        PackageCommand::Upload(_)
        | PackageCommand::Publish(_)
        | PackageCommand::List(_)
        | PackageCommand::Inspect(_)
        | PackageCommand::Delete(_) => super::package_server::run(settings, command),
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
// build

fn build(settings: &Settings, args: &BuildArgs) -> Result<(), CliError> {
    let manifest = build::package_dir(&args.dir)?;
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Debug
    };
    let profile_name = profile.as_str();
    let dir_shown = args.dir.display().to_string();
    let built = cargo_build(settings, &args.dir, &manifest, profile)?;

    let library_shown = built.library.as_ref().map(|p| p.display().to_string());
    let mut rows = vec![("profile", profile_name.to_string())];
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
                "profile": profile_name,
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

/// `cargo build` of a package directory with a spinner on a terminal; cargo's output goes to
/// stderr (our stdout is for results). Shared by `build` and `publish`.
pub(super) fn cargo_build(
    settings: &Settings,
    dir: &Path,
    manifest: &Manifest,
    profile: Profile,
) -> Result<build::Built, CliError> {
    let profile_name = profile.as_str();
    let spinner = Spinner::start(
        settings.progress,
        format!(
            "Building {} {} ({profile_name})",
            manifest.name(),
            manifest.version()
        ),
    );
    let built = if settings.progress {
        // On a terminal: cargo's lines scroll above the spinner, in colour if allowed.
        let cargo = Cargo {
            color: Some(settings.color_stderr),
            ..Cargo::default()
        };
        let mut each = |line: &str| {
            spinner.println(line);
            let trimmed = line.trim();
            if !trimmed.is_empty() {
                spinner.set_message(format!(
                    "Building {} ({profile_name}): {trimmed}",
                    manifest.name()
                ));
            }
        };
        build::build(
            dir,
            profile,
            &cargo,
            stderr_as_stdio(),
            CargoLog::Lines(&mut each),
        )
    } else {
        build::build(
            dir,
            profile,
            &Cargo::default(),
            stderr_as_stdio(),
            CargoLog::To(Stdio::inherit()),
        )
    };
    spinner.finish();
    Ok(built?)
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
    let manifest = build::package_dir(&args.dir)?;
    let key = match &args.sign {
        Some(k) => Some(signing::load_signing_key(&expand_tilde(k)?)?),
        None => None,
    };
    let out = match &args.out {
        Some(o) => expand_tilde(o)?,
        None => PathBuf::from(build::archive_file_name(&manifest)),
    };

    let spinner = Spinner::start(
        settings.progress,
        format!("Packing {} {}", manifest.name(), manifest.version()),
    );
    let packed = build::pack(
        &args.dir,
        &out,
        key.as_ref(),
        &Cargo::default(),
        &mut |note| spinner.println(&note.to_string()),
    );
    spinner.finish();
    let build::Packed {
        archive: packed,
        profile,
        library,
        signature,
    } = packed?;
    let profile = profile.as_str();

    let path_shown = packed.path.display().to_string();
    let sig_shown = signature.as_ref().map(|(s, _)| s.display().to_string());
    let public_key = signature.as_ref().map(|(_, k)| k.to_hex());
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
