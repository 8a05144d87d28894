//! Packages: `.cloacina` archives (a Rust `cdylib` plus its source and manifest), their
//! signatures, and loading their libraries through Cloacina's versioned C ABI.
//!
//! - `manifest`: `package.toml`.
//! - `build`: building a package's source directory with cargo, and packing (and signing)
//!   the result.
//! - `archive`: packing and defensive unpacking of `.cloacina` archives, SHA-256 identity.
//! - `signing`: Ed25519 keys and detached signature side-cars (`<archive>.sig`).
//! - `loader`: opening a package's library once per version, ABI check, description
//!   validation, calls into the plugin.

pub mod archive;
pub mod build;
pub mod loader;
pub mod manifest;
pub mod probe;
pub mod signing;

use crate::error::ErrorCode;

/// Any package failure; each variant's message names the package or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Signature(#[from] signing::SignatureError),
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error(transparent)]
    Build(#[from] build::BuildError),
}

/// `s` with control characters escaped, cut to at most `max` characters (marked with `…`),
/// so that text from a hostile archive or library cannot drive the terminal or log viewer it
/// is printed on.
pub(crate) fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes that should be a name, shown safely: [`printable`] when they are UTF-8, else with
/// every byte that is not printable ASCII escaped (`\xff`).
pub(crate) fn printable_bytes(bytes: &[u8], max: usize) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => printable(s, max),
        Err(_) => printable(&bytes.escape_ascii().to_string(), max),
    }
}

/// A path for a message: control characters in its names escaped (a file dropped in a watched
/// folder may be named to drive a terminal), invalid UTF-8 shown lossily.
pub(crate) fn shown_path(path: &std::path::Path) -> String {
    printable(&path.display().to_string(), 4096)
}

impl ErrorCode for PackageError {
    fn code(&self) -> &'static str {
        match self {
            PackageError::Manifest(e) => e.code(),
            PackageError::Archive(e) => e.code(),
            PackageError::Signature(e) => e.code(),
            PackageError::Load(e) => e.code(),
            PackageError::Build(e) => e.code(),
        }
    }
}

impl ErrorCode for build::BuildError {
    fn code(&self) -> &'static str {
        use build::BuildError as E;
        match self {
            E::NoDirectory { .. } | E::MissingFile { .. } | E::NotADynamicLibrary { .. } => {
                "package_source_invalid"
            }
            E::Manifest(e) => e.code(),
            E::CargoMissing { .. } => "cargo_unavailable",
            E::Metadata { .. }
            | E::MetadataOutput { .. }
            | E::CargoFailed { .. }
            | E::TimedOut { .. }
            | E::Stopped { .. } => "build_failed",
            E::NoBuild { .. } => "package_not_built",
            E::Archive(e) => e.code(),
            E::Signature(e) => e.code(),
        }
    }
}

impl ErrorCode for manifest::ManifestError {
    fn code(&self) -> &'static str {
        use manifest::ManifestError as E;
        match self {
            E::Missing { .. } => "manifest_missing",
            E::Read { .. } | E::Malformed { .. } | E::Invalid { .. } => "manifest_invalid",
        }
    }
}

impl ErrorCode for archive::ArchiveError {
    fn code(&self) -> &'static str {
        use archive::ArchiveError as E;
        match self {
            E::Manifest(e) | E::InvalidManifest { cause: e, .. } => e.code(),
            E::MissingSource { .. } | E::UnpackableFile { .. } => "package_source_invalid",
            E::BadLibrary { .. } => "library_invalid",
            E::Io { .. } => "io_failed",
            E::Corrupt { .. } | E::UnsafeEntry { .. } | E::MissingManifest { .. } => {
                "archive_invalid"
            }
            E::RecordTooLarge { .. }
            | E::TooManyEntries { .. }
            | E::EntryTooLarge { .. }
            | E::TooLarge { .. }
            | E::FileTooLarge { .. } => "archive_too_large",
            E::DestinationExists { .. } => "destination_exists",
            E::NoLibraryForTarget { .. } | E::SourceOnly { .. } => "no_library_for_target",
        }
    }
}

impl ErrorCode for signing::SignatureError {
    fn code(&self) -> &'static str {
        use signing::SignatureError as E;
        match self {
            E::Io { .. } => "io_failed",
            E::Archive(e) => e.code(),
            E::Sign { .. } => "signing_failed",
            E::KeyExists { .. } => "key_exists",
            E::KeyNotFound { .. }
            | E::MalformedKey { .. }
            | E::PrivateKeyGiven { .. }
            | E::KeyTooOpen { .. }
            | E::TrustedKey { .. } => "key_invalid",
            E::ArchiveNotFound { .. } | E::NotAFile { .. } | E::FileTooLarge { .. } => {
                "file_invalid"
            }
            E::Required { .. } => "signature_required",
            E::RequiredWithoutKeys => "config_invalid",
            E::Missing { .. }
            | E::Malformed { .. }
            | E::UnsupportedAlgorithm { .. }
            | E::Tampered { .. }
            | E::BadSignature { .. } => "signature_invalid",
            E::UntrustedKey { .. } | E::NoTrustedKeys { .. } => "signature_untrusted",
        }
    }
}

impl ErrorCode for loader::LoadError {
    fn code(&self) -> &'static str {
        use loader::LoadError as E;
        match self {
            E::Manifest { cause, .. } => cause.code(),
            E::Archive { cause, .. } => cause.code(),
            E::Signature { cause, .. } => cause.code(),
            E::Io { .. } => "io_failed",
            E::WrongTarget { .. } | E::Malformed { .. } | E::Open { .. } => "library_invalid",
            E::Quarantined { .. } => "library_quarantined",
            E::CrashedProbe { .. } => "library_crashed",
            E::NotAPackage { .. } => "not_a_package",
            E::AbiMismatch { .. } | E::MissingSymbol { .. } => "abi_mismatch",
            E::Describe { .. } | E::InvalidDescription { .. } | E::ManifestMismatch { .. } => {
                "package_invalid"
            }
            E::Unknown {
                what: "trigger", ..
            } => "trigger_not_found",
            E::Unknown { .. } => "graph_not_found",
            E::Call { .. } => "package_call_failed",
        }
    }
}
